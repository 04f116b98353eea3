"""Is xdpguard really protecting an interface?  The kernel's answer, not the record's.

The pins and the state directory say what xdpguard did; only the kernel
says what holds now, and the two can part:

- the interface is deleted and created again under the same name (a driver
  reload, a container or bond re-plumbed): the old links are severed
  (their ifindex reads 0) and the new interface has no program at all;
- the interface is renamed and another one takes its name: the links stay
  with the renamed one, and the name now belongs to an unprotected device;
- a pin is replaced by another object of the same shape: the programs keep
  using the maps they were loaded with, so writing the pin changes nothing
  that packets see.

`check` compares, in the interface's network namespace, the ifindex that
carries the name now with the one each link is attached to, the program
behind each link with the pinned one, and the ids of the maps each program
uses (bpf_prog_info map_ids) with the pinned maps.  Commands that change
protection repair what can be repaired (re-attach, re-pin, see
Dataplane.ensure_protected); commands that report it say so and exit
non-zero.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from xdpguard.datapath import bpf as B
from xdpguard.datapath import dynsets
from xdpguard.datapath import maps as M
from xdpguard.datapath.links import LINKS, prog_pin_name
from xdpguard.net import egress_filter_present

# Kinds of trouble, from the most to the least fundamental.
NOT_ATTACHED = "not attached"  # no XDP link pinned
GONE = "interface gone"  # no interface has the name; the links are severed or elsewhere
RECREATED = "interface re-created"  # the name is back, on a new interface with no program
MOVED = "links on another interface"  # renamed: the links follow the old device, not the name
EGRESS = "egress not attached"  # the XDP link is fine, the egress attachment is not
PINS = "pins replaced"  # a pinned program or map is not the one in use


@dataclass
class Protection:
    """The kernel's view of one interface, with what is wrong, if anything."""

    ifname: str
    ifindex: int | None = None  # the interface that has the name now
    xdp_ifindex: int | None = None  # where the XDP link is attached (0: severed)
    xdp_ifname: str | None = None  # that interface's name now, if it is another
    kind: str | None = None  # None when all is well
    problems: list[str] = field(default_factory=list)
    # pin name -> id of the map the programs use, for pins that name another map
    repin: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.kind is None

    @property
    def needs_attach(self) -> bool:
        """The programs must be attached (again) to the interface that has the name."""
        return self.kind in (RECREATED, MOVED, EGRESS)

    def message(self) -> str:
        return "; ".join(self.problems)

    def fix(self) -> str:
        """What the operator can run."""
        name = self.ifname
        if self.kind == GONE:
            return f"`xdpguard detach --iface {name}` frees the pins (and forgets the state)"
        if self.kind in (RECREATED, MOVED, EGRESS):
            return (
                f"`xdpguard apply RULES --iface {name}` or `xdpguard restore --iface {name}` re-attaches it"
            )
        if self.kind == PINS:
            return f"`xdpguard apply RULES --iface {name}` pins the maps the programs use again"
        return f"`xdpguard apply RULES --iface {name}` attaches it"


def _name_of(index: int) -> str | None:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def _index_of(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _pin_id(path: str, info: str) -> int | None:
    """Id of a pinned map or program, None when the pin is absent."""
    if not os.path.exists(path):
        return None
    with B.Fd(B.obj_get(path)) as fd:
        return B.map_info(fd).id if info == "map" else B.prog_info(fd).id


def check(pin_dir: str, ifname: str, egress_netlink: bool) -> Protection:
    """Ask the kernel; call it inside the interface's network namespace."""
    prot = Protection(ifname, ifindex=_index_of(ifname))
    xdp_pin = os.path.join(pin_dir, LINKS["ingress"][0])
    if not os.path.exists(xdp_pin):
        prot.kind = NOT_ATTACHED
        prot.problems.append(f"xdpguard is not attached to {ifname}")
        return prot
    prog_ids: dict[str, int] = {}
    for direction, (pin, _) in LINKS.items():
        path = os.path.join(pin_dir, pin)
        if direction == "egress" and egress_netlink:
            _check_netlink_egress(prot)
            continue
        if not os.path.exists(path):
            prot.kind = prot.kind or EGRESS
            prot.problems.append(f"the egress link of {ifname} is not pinned (no egress program)")
            continue
        with B.Fd(B.obj_get(path)) as fd:
            li = B.link_info(fd)
        prog_ids[direction] = li.prog_id
        _check_link(prot, direction, li.ifindex)
    if prot.kind in (GONE, RECREATED, MOVED):
        return prot  # the rest is moot until the programs are where the name is
    for direction, prog_id in prog_ids.items():
        pinned = _pin_id(os.path.join(pin_dir, prog_pin_name(direction)), "prog")
        if pinned is not None and pinned != prog_id:
            prot.kind = prot.kind or PINS
            prot.problems.append(
                f"the pinned {direction} program (id {pinned}) is not the attached one (id {prog_id})"
            )
    _check_maps(prot, pin_dir, prog_ids)
    return prot


def _check_link(prot: Protection, direction: str, link_ifindex: int) -> None:
    name, now = prot.ifname, prot.ifindex
    if direction == "ingress":
        prot.xdp_ifindex = link_ifindex
    if link_ifindex == now:
        return
    what = "XDP" if direction == "ingress" else "egress"
    if link_ifindex == 0:
        if now is None:
            kind, text = GONE, f"{name} is gone: its {what} link was severed when it was deleted"
        else:
            kind = RECREATED
            text = (
                f"{name} was deleted and created again (ifindex {now}): its {what} link went with the old one"
            )
    else:
        other = _name_of(link_ifindex)
        if direction == "ingress":
            prot.xdp_ifname = other
        where = f"ifindex {link_ifindex}" + (f", now named {other}" if other else "")
        if now is None:
            kind, text = GONE, f"no interface is named {name} now; its {what} link is attached to {where}"
        else:
            kind = MOVED
            text = (
                f"the {what} link recorded for {name} is attached to {where}, not to {name} (ifindex {now})"
            )
    if direction == "egress" and kind in (RECREATED, MOVED) and prot.kind is None:
        kind = EGRESS
    if prot.kind is None or prot.kind == EGRESS:
        prot.kind = kind
    prot.problems.append(text)


def _check_netlink_egress(prot: Protection) -> None:
    if prot.ifindex is None or not egress_filter_present(prot.ifindex):
        prot.kind = prot.kind or EGRESS
        prot.problems.append(f"the egress filter (clsact, cls_bpf) is missing from {prot.ifname}")


def _check_maps(prot: Protection, pin_dir: str, prog_ids: dict[str, int]) -> None:
    """Every map the attached programs use must be the one pinned under its name."""
    pinned: dict[str, int] = {}
    for pin in M.PROG_MAP_NAMES:
        map_id = _pin_id(os.path.join(pin_dir, pin), "map")
        if map_id is not None:
            pinned[pin] = map_id
    used: dict[str, int] = {}
    for prog_id in prog_ids.values():
        with B.Fd(B.prog_get_fd_by_id(prog_id)) as fd:
            ids = B.prog_map_ids(fd)
        for map_id in ids:
            with B.Fd(B.map_get_fd_by_id(map_id)) as mfd:
                c_name = B.map_info(mfd).name
            used_pin = M.PIN_OF_PROG_MAP.get(c_name)
            if used_pin is None:
                continue  # an inner-map template bcc made: never pinned
            if used.setdefault(used_pin, map_id) != map_id:
                prot.kind = prot.kind or PINS
                prot.problems.append(f"the ingress and egress programs use different {used_pin} maps")
    _check_set_pins(prot, pin_dir)
    # A pin that is missing is another matter: maps an older xdpguard did not
    # pin are completed by the update itself (Dataplane._update).
    for pin, map_id in sorted(used.items()):
        have = pinned.get(pin)
        if have is not None and have != map_id:
            prot.kind = prot.kind or PINS
            prot.repin[pin] = map_id
            prot.problems.append(f"the pin {pin} names map id {have}, the programs use map id {map_id}")


def _check_set_pins(prot: Protection, pin_dir: str) -> None:
    """A dynamic set's pinned maps must be the ones the live halves' slots hold:
    `xdpguard set` writes elements through the pins, and a pin another map took
    would take elements no packet is checked against.  When one pin of a kind
    and one map in use are left unmatched, that map is pinned again."""
    names = dynsets.pinned(pin_dir)
    if not names:
        return
    active = M.read_active(pin_dir)
    for kind in dynsets.KINDS:
        outer_pin = dynsets.SPEC[kind][0]
        path = os.path.join(pin_dir, outer_pin)
        if not os.path.exists(path):
            continue
        used: set[int] = set()
        with B.Fd(B.obj_get(path)) as outer:
            for direction in M.DIRECTIONS:
                used.update(i for i in dynsets.slot_ids(outer, M.half_of(direction, active)) if i is not None)
        pinned = {n: _pin_id(os.path.join(pin_dir, dynsets.pin_name(n, kind)), "map") for n in names}
        stray = {n: i for n, i in pinned.items() if i is not None and i not in used}
        if not stray:
            continue
        free = {i for i in used - set(pinned.values()) if not dynsets.is_placeholder(i)}
        prot.kind = prot.kind or PINS
        for n, i in sorted(stray.items()):
            prot.problems.append(
                f"the pin {dynsets.pin_name(n, kind)} names map id {i}, "
                f"which no live slot of {outer_pin} holds"
            )
        if len(stray) == 1 and len(free) == 1:
            prot.repin[dynsets.pin_name(next(iter(stray)), kind)] = next(iter(free))
