"""Where xdpguard's two programs hang on one interface: links, pins, the tc fallback.

The ingress program is an XDP bpf_link; the egress program a tcx bpf_link
(Linux 6.6+) or, when the one-time probe (`probes.have_tcx`) finds no tcx, a
clsact cls_bpf filter installed over netlink (net/tc.py).  The probe
decides; an attach that then fails is an error, never a reason to try the
other way.  Links and the programs behind them are pinned in the
interface's bpffs directory, so they outlive the command that made them.

`ensure_bpffs` mounts bpffs where the pins go, if nothing is mounted there.
`Links` is the kernel-object side of the life cycle in dataplane.py: it
creates, swaps, repairs, removes and describes these objects, and knows
nothing of plans, halves or records beyond the note of how egress is
attached.  It asks its owner for the ifindex (`ifindex()`) only when an
attach needs one, as the owner may look it up lazily.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xdpguard.datapath import bpf as B
from xdpguard.datapath import probes, syncookie
from xdpguard.errors import KernelError, UsageError
from xdpguard.net import NetError, attach_egress, detach_egress, in_netns
from xdpguard.state import TCX_LINK_PIN, XDP_LINK_PIN, Iface, bpffs_root

if TYPE_CHECKING:  # protection.py reads LINKS from here: only the type goes the other way
    from xdpguard.datapath.protection import Protection

XDP_MODES = {"auto": 0, "native": B.XDP_FLAGS_DRV_MODE, "generic": B.XDP_FLAGS_SKB_MODE}
# direction -> (pin of its link, attach type)
LINKS = {"ingress": (XDP_LINK_PIN, B.BPF_XDP), "egress": (TCX_LINK_PIN, B.BPF_TCX_EGRESS)}
EGRESS_NOTE = "egress_attach"  # the interface's note of how egress is attached


def _private_mount_namespace() -> bool:
    """This process runs in a mount namespace of its own, which ends with it:
    one its parent is not in (`ip netns exec` makes one, with a /sys of its
    own, and then runs the command in it), or, failing that, not init's."""
    try:
        mine = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    for pid in (os.getppid(), 1):
        try:
            return mine != os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
    return False


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf when the pins go there and nothing is mounted yet.

    Not in a mount namespace of its own, though: a bpffs mounted there goes
    when the command exits, and with it every pin and so the XDP link, the
    firewall.  An apply would report success and leave nothing attached."""
    if not str(bpffs_root()).startswith("/sys/fs/bpf") or os.path.ismount("/sys/fs/bpf"):
        return
    if _private_mount_namespace():
        raise UsageError(
            "/sys/fs/bpf has no bpffs in this mount namespace, which is not the host's (`ip netns exec` "
            "makes one, with a /sys of its own): pins made here would vanish when the command exits, and "
            "the firewall with them. Run `xdpguard --netns NAME ...` instead; nothing was changed"
        )
    libc = ctypes.CDLL(None, use_errno=True)
    bpf = ctypes.c_char_p(b"bpf")
    if libc.mount(bpf, ctypes.c_char_p(b"/sys/fs/bpf"), bpf, 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"bpffs is not mounted at /sys/fs/bpf and mounting it failed: {os.strerror(err)}")


def prog_pin_name(direction: str) -> str:
    return f"prog_{direction}"


def egress_uses_tcx() -> bool:
    """Whether egress gets a tcx link: the probe's answer (made once per process),
    unless a test forces the netlink path with XDPGUARD_FORCE_TC_NETLINK=1."""
    return os.environ.get("XDPGUARD_FORCE_TC_NETLINK") != "1" and probes.have_tcx()


def unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def pinned_prog_id(path: str) -> int | None:
    try:
        with B.Fd(B.obj_get(path)) as fd:
            return B.prog_info(fd).id
    except B.BpfError:
        return None


class Links:
    """The attachments of xdpguard's programs to one interface, and their pins."""

    def __init__(self, iface: Iface, ifindex: Callable[[], int]) -> None:
        self.iface = iface
        self.ifindex = ifindex

    @property
    def attached(self) -> bool:
        """The pinned XDP link is what marks xdpguard attached (it is linked last)."""
        return os.path.exists(self.iface.pin(LINKS["ingress"][0]))

    @property
    def egress_mode(self) -> str:
        """How the egress program is attached: "tcx" (a pinned link) or "netlink" (clsact + cls_bpf)."""
        return self.iface.read_note(EGRESS_NOTE) or "tcx"

    # ------------------------------------------------------------------ attach

    def pin_programs(self, prog_fds: dict[str, int]) -> None:
        for direction, fd in prog_fds.items():
            pin = self.iface.pin(prog_pin_name(direction))
            unlink(pin)
            B.obj_pin(fd, pin)

    def link(self, direction: str, prog_fd: int, xdp_mode: str) -> None:
        """Attach one program to the interface and pin its link (egress: or its filter)."""
        pin_name = LINKS[direction][0]
        if direction == "egress" and not egress_uses_tcx():
            self._attach_egress_netlink(prog_fd)
            return
        link = self._new_link(direction, prog_fd, xdp_mode)
        try:
            B.obj_pin(link, self.iface.pin(pin_name))
        finally:
            os.close(link)

    def _new_link(self, direction: str, prog_fd: int, xdp_mode: str) -> int:
        """A bpf_link of the program to the interface, not pinned yet (the caller closes it)."""
        _, attach_type = LINKS[direction]
        if direction == "egress":
            self.iface.write_note(EGRESS_NOTE, "tcx")
        flags = XDP_MODES[xdp_mode] if attach_type == B.BPF_XDP else 0
        try:
            return B.link_create(prog_fd, self.ifindex(), attach_type, flags)
        except B.BpfError as e:
            raise self._attach_error(e, direction, xdp_mode) from e

    def _attach_egress_netlink(self, prog_fd: int) -> None:
        self.iface.write_note(EGRESS_NOTE, "netlink")
        try:
            attach_egress(self.ifindex(), prog_fd)
        except NetError as e:
            raise KernelError(str(e)) from e

    def _attach_error(self, e: B.BpfError, direction: str, xdp_mode: str) -> KernelError:
        name = self.iface.ifname
        if direction == "egress":
            return KernelError(f"attach the egress program (tcx) to {name}: {e.sentence}")
        if e.errno == errno.EBUSY:
            return KernelError(
                f"attach XDP to {name}: another XDP program is attached to this interface "
                "(see `ip link show`; remove it, or `xdpguard detach` if it is ours)"
            )
        if e.errno == errno.EEXIST:
            return KernelError(
                f"attach XDP to {name}: an XDP program in another mode is attached; "
                f"detach it first or pick the same --xdp-mode (asked: {xdp_mode})"
            )
        if e.errno in (errno.EOPNOTSUPP, B.ENOTSUPP) and xdp_mode == "native":
            return KernelError(
                f"attach XDP to {name}: the driver has no native XDP; use --xdp-mode generic or auto"
            )
        return KernelError(f"attach XDP to {name}: {e.sentence}")

    # ------------------------------------------------------------------ swap and repair

    def swap_programs(self, prog_fds: dict[str, int]) -> None:
        """Put new programs behind the attachments, each in one atomic step."""
        for direction, (pin_name, _) in LINKS.items():
            prog_pin = self.iface.pin(prog_pin_name(direction))
            new_fd = prog_fds[direction]
            if direction == "egress" and self.egress_mode == "netlink":
                self._attach_egress_netlink(new_fd)  # replace-filter: one atomic swap
                unlink(prog_pin)
                B.obj_pin(new_fd, prog_pin)
                continue
            with B.Fd(B.obj_get(self.iface.pin(pin_name))) as link, B.Fd(B.obj_get(prog_pin)) as oldp:
                try:
                    B.link_update(link, new_fd, oldp, B.BPF_F_REPLACE)
                except B.BpfError as e:
                    raise KernelError(
                        f"replace the {direction} program on {self.iface.ifname}: {e.sentence}"
                    ) from e
            # bpffs cannot rename: a crash between these two leaves no
            # program pin, which ensure_prog_pins restores from the link.
            unlink(prog_pin)
            B.obj_pin(new_fd, prog_pin)

    def ensure_prog_pins(self) -> None:
        """Every linked program has its pin (a crash while re-pinning can lose one)."""
        for direction, (pin_name, _) in LINKS.items():
            prog_pin = self.iface.pin(prog_pin_name(direction))
            if os.path.exists(prog_pin) or not os.path.exists(self.iface.pin(pin_name)):
                continue
            with B.Fd(B.obj_get(self.iface.pin(pin_name))) as link:
                prog_id = B.link_info(link).prog_id
            with B.Fd(B.prog_get_fd_by_id(prog_id)) as fd:
                B.obj_pin(fd, prog_pin)

    def unlinked(self) -> list[str]:
        """The directions whose program is pinned but not linked, egress first
        (a netlink egress filter has no link to lose)."""
        out = []
        for direction in ("egress", "ingress"):
            if direction == "egress" and self.egress_mode == "netlink":
                continue
            if not os.path.exists(self.iface.pin(LINKS[direction][0])):
                out.append(direction)
        return out

    def link_pinned(self, direction: str, xdp_mode: str) -> None:
        with B.Fd(B.obj_get(self.iface.pin(prog_pin_name(direction)))) as fd:
            self.link(direction, fd, xdp_mode)

    def relink(self, direction: str, prot: Protection, xdp_mode: str) -> None:
        """Attach the pinned program to the interface that has the name now (prot.ifindex).

        The new link replaces the old one's pin; the old link, if still
        attached to a renamed interface, is detached from it.
        """
        with B.Fd(B.obj_get(self.iface.pin(prog_pin_name(direction)))) as prog:
            if direction == "egress" and self.egress_mode == "netlink":
                if prot.xdp_ifindex and prot.xdp_ifname:
                    with contextlib.suppress(NetError):
                        detach_egress(prot.xdp_ifindex)  # off the renamed interface
                self._attach_egress_netlink(prog)
                return
            old = self.iface.pin(LINKS[direction][0])
            if os.path.exists(old):
                with B.Fd(B.obj_get(old)) as lfd:
                    if B.link_info(lfd).ifindex == prot.ifindex:
                        return  # this one is where it belongs
            # The new link first: should the kernel refuse it (another XDP
            # program holds the interface), the old link's pin stays, and with
            # it the record that xdpguard is attached here, so the next apply
            # tries again and keeps the maps (sets, counters, buckets).
            new = self._new_link(direction, prog, xdp_mode)
            try:
                if os.path.exists(old):
                    with B.Fd(B.obj_get(old)) as lfd, contextlib.suppress(B.BpfError):
                        B.link_detach(lfd)
                    unlink(old)
                B.obj_pin(new, old)
            finally:
                os.close(new)

    def repin(self, prot: Protection) -> str:
        """Pin the programs and maps in use again where another object took their place."""
        done = []
        for direction, (pin_name, _) in LINKS.items():
            link_pin = self.iface.pin(pin_name)
            if not os.path.exists(link_pin):
                continue
            with B.Fd(B.obj_get(link_pin)) as lfd:
                prog_id = B.link_info(lfd).prog_id
            prog_pin = self.iface.pin(prog_pin_name(direction))
            with B.Fd(B.prog_get_fd_by_id(prog_id)) as fd:
                if not os.path.exists(prog_pin) or B.prog_info(fd).id != pinned_prog_id(prog_pin):
                    unlink(prog_pin)
                    B.obj_pin(fd, prog_pin)
                    done.append(prog_pin_name(direction))
        for pin, map_id in prot.repin.items():
            with B.Fd(B.map_get_fd_by_id(map_id)) as fd:
                unlink(self.iface.pin(pin))
                B.obj_pin(fd, self.iface.pin(pin))
            done.append(pin)
        return f"{prot.message()}: pinned the objects in use again ({', '.join(done)})"

    # ------------------------------------------------------------------ remove

    def remove(self, netns: str | None) -> list[str]:
        """Unlink every pin; links first, so the programs stop before their maps go.

        `netns` is where the interface lives, for the netlink egress filter.
        """
        pin_dir = self.iface.pin_dir
        removed = []
        if self.egress_mode == "netlink":
            try:
                with in_netns(netns):
                    if detach_egress(self.ifindex()):
                        removed.append("cls_bpf egress filter")
            except (NetError, LookupError):
                pass  # the interface is gone, and the filter with it
            self.iface.remove_note(EGRESS_NOTE)
        for pin_name in [syncookie.PIN_LINK, *(name for name, _ in LINKS.values())]:
            link = pin_dir / pin_name
            if not link.exists():
                continue
            try:
                with B.Fd(B.obj_get(str(link))) as fd:
                    B.link_detach(fd)
            except B.BpfError:
                pass  # already detached (interface gone): unlinking the pin is enough
            link.unlink()
            removed.append(str(link))
        if pin_dir.is_dir():
            for p in sorted(pin_dir.iterdir()):
                p.unlink()
                removed.append(str(p))
            pin_dir.rmdir()
        with contextlib.suppress(OSError):
            os.rmdir(bpffs_root())  # once no interface has pins
        return removed

    # ------------------------------------------------------------------ read

    def link_status(self, direction: str) -> dict[str, Any]:
        pin_name, _ = LINKS[direction]
        with B.Fd(B.obj_get(self.iface.pin(pin_name))) as lfd:
            li = B.link_info(lfd)
        with B.Fd(B.prog_get_fd_by_id(li.prog_id)) as pfd:
            pi = B.prog_info(pfd)
        return {
            "link_id": li.id,
            "prog_id": li.prog_id,
            "ifindex": li.ifindex,
            "tag": pi.tag,
            "attach": "bpf_link (xdp)" if direction == "ingress" else "bpf_link (tcx egress)",
            "live": li.ifindex != 0,
        }

    def egress_status(self) -> dict[str, Any] | None:
        """The egress attachment as the kernel describes it; None when there is none."""
        if self.egress_mode == "netlink":
            with B.Fd(B.obj_get(self.iface.pin(prog_pin_name("egress")))) as pfd:
                pi = B.prog_info(pfd)
            return {
                "attach": "clsact + cls_bpf (netlink; no tcx on this kernel)",
                "prog_id": pi.id,
                "tag": pi.tag,
                "link_id": None,
            }
        if os.path.exists(self.iface.pin(LINKS["egress"][0])):
            return self.link_status("egress")
        return None
