"""Dynamic sets on one interface: the maps that hold their elements, and their upkeep.

A dynamic set NAME is five maps pinned in the interface's bpffs dir (bpffs
allows no '.' in a name, so a '.' in NAME is pinned as '~'):

    set_v4_NAME  set_v6_NAME   hash: exact IPv4 / IPv6 address -> struct xg_dyn_elem
    set_p4_NAME  set_p6_NAME   LPM trie: IPv4 / IPv6 prefix -> struct xg_dyn_elem
    set_meta_NAME              array of one: this module's bookkeeping (META)

Elements live outside the double-buffered rule set: `xdpguard set` writes
them straight into these maps, so a change counts for the next packet in
both halves, and an apply only points each half's slots (the dyn4, dyn6,
dynp4 and dynp6 outer maps) at the sets its plan declares.  In front of
the tables, the interface's filter (the program map `dynf`, see
dynfilter.py) holds a bit per set and /24 (/48) that may hold an element.  Pointing a
slot at another map object of the *same* set (after a resize) can happen
in place at any time: membership is not part of a rule-set version.

`size` bounds the elements of all four maps together; every map is created
with `size` entries, so the kernel never refuses what the count admits.
Expiry is checked by the program on lookup (an expired element is not a
member); nothing runs in the background, and expired elements are deleted
by the next `xdpguard set` or `apply` that finds one due (see gc()).

Every function here expects the caller to hold the interface lock.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xdpguard.datapath import abi, dynfilter
from xdpguard.datapath import bpf as B
from xdpguard.datapath.bpferror import errno_sentence
from xdpguard.errors import KernelError, UsageError
from xdpguard.rules.abi_consts import F_DST, F_SRC
from xdpguard.rules.model import Prefix
from xdpguard.state import Iface, known_ifaces

if TYPE_CHECKING:
    from xdpguard.datapath.maps import Maps
    from xdpguard.rules.compile import DirectionPlan, Plan

KINDS = ("v4", "v6", "p4", "p6")
# kind -> (outer map pin, map type, key size, map name)
SPEC = {
    "v4": ("dyn4", B.BPF_MAP_TYPE_HASH, 4, "xg_dyn4"),
    "v6": ("dyn6", B.BPF_MAP_TYPE_HASH, 16, "xg_dyn6"),
    "p4": ("dynp4", B.BPF_MAP_TYPE_LPM_TRIE, 8, "xg_dynp4"),
    "p6": ("dynp6", B.BPF_MAP_TYPE_LPM_TRIE, 20, "xg_dynp6"),
}
OUTER_PINS = tuple(s[0] for s in SPEC.values())
FILTER = "dynf"  # the interface's filter: its pin, and its key in SetMaps.fds
PLACEHOLDER = "xg_dyn_none"  # the empty map released slots point at
ELEM = struct.Struct("<Q")  # struct xg_dyn_elem
# set.NAME.meta: size, default timeout (ns), elements stored (expired ones
# included until collected), earliest expiry among them (0: none known),
# no collection before this time, elements removed since the filter was
# last rebuilt (their bits are still set), 2 spare.
META = struct.Struct("<QQQQQQQQ")
# A collection scans the whole set: never more often than this, nor more
# than about 2 % of the time, unless the set is full.
GC_MIN_INTERVAL_NS = 10 * 10**9
GC_TIME_FACTOR = 50


def pin_name(name: str, kind: str) -> str:
    return f"set_{kind}_{name.replace('.', '~')}"


def now_ns(pin_dir: str) -> int:
    """The clock expiry is measured against: the program's (CLOCK_MONOTONIC, or
    the test clock of a test build once a test has set it)."""
    path = os.path.join(pin_dir, "test_clock")
    if os.path.exists(path):
        with B.Fd(B.obj_get(path)) as fd:
            raw = B.map_lookup(fd, struct.pack("<I", 0), 8)
        if raw and (v := struct.unpack("<Q", raw)[0]):
            return int(v)
    return time.monotonic_ns()


# --------------------------------------------------------------------------
# elements


def encode(p: Prefix) -> tuple[str, bytes]:
    """(kind, key) of an element: exact addresses go to the hashes, prefixes to the tries."""
    if p.family == 4:
        raw = p.addr.to_bytes(4, "big")
        return ("v4", raw) if p.plen == 32 else ("p4", struct.pack("<I", p.plen) + raw)
    raw = p.addr.to_bytes(16, "big")
    return ("v6", raw) if p.plen == 128 else ("p6", struct.pack("<I", p.plen) + raw)


def decode(kind: str, key: bytes) -> Prefix:
    if kind == "v4":
        return Prefix(4, int.from_bytes(key, "big"), 32)
    if kind == "v6":
        return Prefix(6, int.from_bytes(key, "big"), 128)
    plen = struct.unpack_from("<I", key)[0]
    return Prefix(4 if kind == "p4" else 6, int.from_bytes(key[4:], "big"), plen)


def show(p: Prefix) -> str:
    """An element as operators write it: the bare address for /32 and /128."""
    if p.plen == p.bits:
        return str(ipaddress.ip_address(p.addr if p.family == 4 else p.addr.to_bytes(16, "big")))
    return str(p)


# --------------------------------------------------------------------------
# the maps of one set


@dataclass
class Meta:
    size: int
    timeout_ns: int
    count: int = 0
    next_expiry_ns: int = 0
    gc_after_ns: int = 0
    stale: int = 0

    def pack(self) -> bytes:
        return META.pack(
            self.size, self.timeout_ns, self.count, self.next_expiry_ns, self.gc_after_ns, self.stale, 0, 0
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Meta:
        v = META.unpack(raw)
        return cls(v[0], v[1], v[2], v[3], v[4], v[5])


@dataclass
class SetMaps:
    """Open fds of one dynamic set's maps (kinds and "meta", and FILTER, the
    interface's filter, when it has one); the caller closes."""

    name: str
    fds: dict[str, int]
    pin_dir: str

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> SetMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map_id(self, kind: str) -> int:
        return B.map_info(self.fds[kind]).id

    @property
    def size(self) -> int:
        return B.map_info(self.fds["v4"]).max_entries

    def meta(self) -> Meta:
        raw = B.map_lookup(self.fds["meta"], struct.pack("<I", 0), META.size)
        return Meta.unpack(raw or bytes(META.size))

    def write_meta(self, m: Meta) -> None:
        B.map_update(self.fds["meta"], struct.pack("<I", 0), m.pack())

    def items(self, kind: str) -> list[tuple[bytes, int]]:
        """(key, expires_ns) of every element of one kind."""
        ksize = SPEC[kind][2]
        return [(k, ELEM.unpack(v)[0]) for k, v in B.map_lookup_batch(self.fds[kind], ksize, ELEM.size)]


def create(name: str, size: int, timeout_ns: int) -> SetMaps:
    fds: dict[str, int] = {}
    try:
        for kind in KINDS:
            _, mtype, ksize, mname = SPEC[kind]
            fds[kind] = B.map_create(mtype, ksize, ELEM.size, size, B.BPF_F_NO_PREALLOC, name=mname)
        fds["meta"] = B.map_create(B.BPF_MAP_TYPE_ARRAY, 4, META.size, 1, name="xg_dynmeta")
    except B.BpfError as e:
        for fd in fds.values():
            os.close(fd)
        raise KernelError(f"create the maps of dynamic set {name}: {e.sentence}") from e
    sm = SetMaps(name, fds, "")
    sm.write_meta(Meta(size, timeout_ns))
    return sm


def pinned(pin_dir: str) -> list[str]:
    """Names of the dynamic sets pinned on an interface."""
    try:
        names = os.listdir(pin_dir)
    except FileNotFoundError:
        return []
    meta = pin_name("", "meta")
    return sorted(n[len(meta) :].replace("~", ".") for n in names if n.startswith(meta))


def open_set(pin_dir: str, name: str) -> SetMaps | None:
    if not os.path.exists(os.path.join(pin_dir, pin_name(name, "meta"))):
        return None
    fds: dict[str, int] = {}
    try:
        for kind in (*KINDS, "meta"):
            fds[kind] = B.obj_get(os.path.join(pin_dir, pin_name(name, kind)))
        if os.path.exists(path := os.path.join(pin_dir, FILTER)):  # not with an older program
            fds[FILTER] = B.obj_get(path)
    except B.BpfError as e:
        for fd in fds.values():
            os.close(fd)
        raise KernelError(f"open dynamic set {name} in {pin_dir}: {e.sentence}") from e
    return SetMaps(name, fds, pin_dir)


def pin(sm: SetMaps, pin_dir: str) -> None:
    """Pin (or re-pin) the set's maps under its name; meta last: it marks the set complete."""
    for kind in (*KINDS, "meta"):
        path = os.path.join(pin_dir, pin_name(sm.name, kind))
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        B.obj_pin(sm.fds[kind], path)


def unpin(pin_dir: str, name: str) -> None:
    # meta first: without it the set no longer counts as pinned.
    for kind in ("meta", *KINDS):
        try:
            os.unlink(os.path.join(pin_dir, pin_name(name, kind)))
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------
# changing elements


@dataclass
class AddResult:
    added: int = 0  # new elements
    updated: int = 0  # elements that were there: their expiry was set anew
    refused: int = 0  # new elements that did not fit (the set is full)


def _group(elements: Iterable[Prefix]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {k: [] for k in KINDS}
    for p in dict.fromkeys(elements):
        kind, key = encode(p)
        out[kind].append(key)
    return out


def add(sm: SetMaps, elements: Iterable[Prefix], timeout_ns: int | None, now: int) -> AddResult:
    """Add elements (or renew them): expiring after timeout_ns, or the set's
    default when None (0: never).  New elements beyond the set's size are
    refused; elements already there are still renewed."""
    groups = _group(elements)
    need = sum(len(v) for v in groups.values())
    meta = sm.meta()
    if meta.count + need > meta.size:
        meta = gc(sm, now, force=True) or meta
    else:
        meta = maybe_gc(sm, now) or meta
    tmo = meta.timeout_ns if timeout_ns is None else timeout_ns
    expires = now + tmo if tmo else 0
    value = ELEM.pack(expires)
    res = AddResult()
    if FILTER in sm.fds:
        # The filter's bits before the elements: no packet may find an
        # element whose filter bit is clear.
        dynfilter.or_in(
            sm.fds[FILTER],
            dynfilter.Bits().add(dynfilter.salt(sm.name), _prefixes(groups), groups["v4"], groups["v6"]),
        )
    room = meta.size - meta.count
    for kind in KINDS:
        keys = groups[kind]
        fd = sm.fds[kind]
        i = 0
        while i < len(keys):
            if room <= 0:
                # Full: what is left may only renew elements that are there.
                for k in keys[i:]:
                    try:
                        B.map_update(fd, k, value, B.BPF_EXIST)
                        res.updated += 1
                    except B.BpfError as e:
                        if e.errno != errno.ENOENT:
                            raise KernelError(f"dynamic set {sm.name}: {e.sentence}") from e
                        res.refused += 1
                break
            part = keys[i : i + room]
            done, err = B.map_update_batch_partial(fd, part, [value] * len(part), B.BPF_NOEXIST)
            res.added += done
            room -= done
            i += done
            if err == errno.EEXIST:  # there already: renew its expiry
                B.map_update(fd, keys[i], value, B.BPF_EXIST)
                res.updated += 1
                i += 1
            elif err in (errno.E2BIG, errno.ENOSPC):  # the kernel's count says full: trust it
                room = 0
            elif err:
                raise KernelError(
                    f"dynamic set {sm.name}: " + errno_sentence(err, f"BPF_MAP_UPDATE_BATCH {sm.name}.{kind}")
                )
    meta.count += res.added
    if expires and res.added + res.updated:
        meta.next_expiry_ns = min(meta.next_expiry_ns or expires, expires)
    sm.write_meta(meta)
    return res


def delete(sm: SetMaps, elements: Iterable[Prefix], now: int) -> int:
    """Remove elements; those not in the set are ignored.  Returns how many went."""
    groups = _group(elements)
    removed = 0
    for kind in KINDS:
        if groups[kind]:
            removed += B.map_delete_batch(sm.fds[kind], groups[kind])
    meta = sm.meta()
    meta.count = max(0, meta.count - removed)
    meta.stale += removed
    sm.write_meta(meta)
    maybe_gc(sm, now)
    return removed


def flush(sm: SetMaps) -> int:
    """Remove every element; returns how many there were (expired ones included)."""
    removed = 0
    for kind in KINDS:
        keys = [k for k, _ in sm.items(kind)]
        if keys:
            removed += B.map_delete_batch(sm.fds[kind], keys)
    meta = sm.meta()
    meta.count = meta.next_expiry_ns = 0
    meta.stale += removed
    sm.write_meta(meta)
    if removed and FILTER in sm.fds:
        rebuild_filter(sm.pin_dir, sm.fds[FILTER])
    return removed


def elements(sm: SetMaps, now: int) -> list[tuple[Prefix, int]]:
    """(element, expires_ns or 0) of every live element, in address order."""
    out = []
    for kind in KINDS:
        for key, exp in sm.items(kind):
            if not exp or exp > now:
                out.append((decode(kind, key), exp))
    return sorted(out, key=lambda e: (e[0].family, e[0].addr, e[0].plen))


def gc(sm: SetMaps, now: int, force: bool = False) -> Meta | None:
    """Delete expired elements and count the rest exactly.  Returns the new meta,
    or None when there was nothing due (and not forced)."""
    meta = sm.meta()
    if not force and not (meta.next_expiry_ns and meta.next_expiry_ns <= now):
        return None
    t0 = time.monotonic_ns()
    count, nxt, collected = 0, 0, 0
    for kind in KINDS:
        dead = []
        for key, exp in sm.items(kind):
            if exp and exp <= now:
                dead.append(key)
            else:
                count += 1
                if exp:
                    nxt = min(nxt or exp, exp)
        if dead:
            collected += B.map_delete_batch(sm.fds[kind], dead)
    took = time.monotonic_ns() - t0
    meta.count, meta.next_expiry_ns = count, nxt
    meta.stale += collected
    meta.gc_after_ns = now + max(GC_MIN_INTERVAL_NS, GC_TIME_FACTOR * took)
    sm.write_meta(meta)
    return meta


def maybe_gc(sm: SetMaps, now: int) -> Meta | None:
    """gc() when an element is due and the last collection is long enough ago."""
    meta = sm.meta()
    if meta.next_expiry_ns and meta.next_expiry_ns <= now and now >= meta.gc_after_ns:
        return gc(sm, now, force=True)
    return None


def copy(src: SetMaps, dst: SetMaps, now: int) -> int:
    """Copy every live element of src into dst (a fresh set); returns how many."""
    n = 0
    for kind in KINDS:
        items = [(k, e) for k, e in src.items(kind) if not e or e > now]
        if items:
            B.map_update_batch(dst.fds[kind], [k for k, _ in items], [ELEM.pack(e) for _, e in items])
            n += len(items)
    return n


def _prefixes(groups: Mapping[str, list[bytes]]) -> list[Prefix]:
    """The elements of grouped keys (see _group) that are prefixes."""
    return [decode(kind, k) for kind in ("p4", "p6") for k in groups.get(kind, [])]


def rebuild_filter(pin_dir: str, fd: int) -> int:
    """Make the filter hold the bits of exactly the elements of every set
    pinned in pin_dir (expired ones included); returns the words written."""
    names = pinned(pin_dir)
    if not names:
        return 0  # nothing a bit could hide; bits left over only cost lookups
    bits = dynfilter.Bits()
    with ExitStack() as stack:
        sets = [stack.enter_context(sm) for name in names if (sm := open_set(pin_dir, name)) is not None]
        for sm in sets:
            keys = {kind: [k for k, _ in sm.items(kind)] for kind in KINDS}
            bits.add(dynfilter.salt(sm.name), _prefixes(keys), keys["v4"], keys["v6"])
        n = dynfilter.rebuild(fd, bits)
        for sm in sets:  # their removed elements' bits are gone now
            meta = sm.meta()
            if meta.stale:
                meta.stale = 0
                sm.write_meta(meta)
    return n


def tidy_filter(dm: Maps, dropped: bool) -> None:
    """Rebuild the filter when elements were removed since it last was, or
    sets dropped: their bits only cost lookups, but they add up."""
    if dropped or any(sm.meta().stale for sm in dm.sets.values()):
        rebuild_filter(dm.pin_dir, dm[FILTER])


# --------------------------------------------------------------------------
# the sets of a plan, and what each half points at


def ensure(dm: Maps, plan: Plan) -> dict[str, SetMaps]:
    """The maps of every dynamic set `plan` declares, open in dm.sets.

    A set already pinned keeps its elements.  One whose size changed is
    copied into maps of the new size, the slots that pointed at the old
    maps are pointed at the new ones, and the new ones are pinned instead.
    A set not pinned yet is created (empty) and pinned.
    """
    pin_dir = dm.pin_dir
    for ds in plan.dynsets:
        if ds.name in dm.sets:
            continue
        sm = open_set(pin_dir, ds.name)
        if sm is None:
            sm = create(ds.name, ds.size, ds.timeout_ns)
            pin(sm, pin_dir)
        elif sm.size != ds.size:
            sm = _resize(dm, sm, ds.size, ds.timeout_ns)
        sm.pin_dir = pin_dir
        if FILTER not in sm.fds:
            sm.fds[FILTER] = os.dup(dm[FILTER])
        meta = sm.meta()
        if (meta.size, meta.timeout_ns) != (ds.size, ds.timeout_ns):
            meta.size, meta.timeout_ns = ds.size, ds.timeout_ns
            sm.write_meta(meta)
        dm.sets[ds.name] = sm
    return {ds.name: dm.sets[ds.name] for ds in plan.dynsets}


def _refuse_shrink(name: str, live: int, size: int) -> None:
    if live > size:
        raise UsageError(
            f"dynamic set {name} holds {live} elements, more than its new size {size}: "
            f"remove some (`xdpguard set del` or `set flush`) before shrinking it"
        )


def check_resizes(pin_dir: str, plan: Plan) -> None:
    """Refuse, before an apply changes anything (its journal included), a
    size smaller than what a pinned set holds now; ensure() checks again
    under the same lock, so this only moves the refusal earlier."""
    now: int | None = None
    for ds in plan.dynsets:
        sm = open_set(pin_dir, ds.name)
        if sm is None:
            continue
        with sm:
            if sm.size != ds.size:
                now = now_ns(pin_dir) if now is None else now
                _refuse_shrink(ds.name, len(elements(sm, now)), ds.size)


def _resize(dm: Maps, old: SetMaps, size: int, timeout_ns: int) -> SetMaps:
    now = now_ns(dm.pin_dir)
    live = elements(old, now)
    _refuse_shrink(old.name, len(live), size)
    new = create(old.name, size, timeout_ns)
    try:
        copy(old, new, now)
        meta = new.meta()
        meta.count = len(live)
        meta.next_expiry_ns = min((e for _, e in live if e), default=0)
        new.write_meta(meta)
        old_ids = {kind: old.map_id(kind) for kind in KINDS}
        for kind in KINDS:
            outer = dm[SPEC[kind][0]]
            slots = [
                s
                for s in range(abi.DYN_SLOTS)
                if (raw := B.map_lookup(outer, struct.pack("<I", s), 4)) is not None
                and struct.unpack("<I", raw)[0] == old_ids[kind]
            ]
            if slots:
                B.map_update_batch(
                    outer,
                    [struct.pack("<I", s) for s in slots],
                    [struct.pack("<I", new.fds[kind])] * len(slots),
                )
        pin(new, dm.pin_dir)
    except BaseException:
        new.close()
        raise
    old.close()
    return new


def dyncfg_bytes(plan: Plan, d: DirectionPlan) -> bytes:
    """struct xg_dyncfg for one half holding direction plan d."""
    cfg = abi.DynCfg()
    for fi, fld in enumerate((F_SRC, F_DST)):
        refs = [r for r in d.dyn_refs if r.field == fld]
        cfg.nrefs[fi] = len(refs)
        cfg.base[fi] = d.dyn_base(fi)
        for i, r in enumerate(refs):
            cfg.ref[fi][i].field = r.field
            cfg.ref[fi][i].slot = plan.dynset_slot(r.set)
            cfg.ref[fi][i].group = r.group
            cfg.ref[fi][i].salt = dynfilter.salt(r.set)
    return bytes(cfg)


def slot_ids(outer: int, half: int) -> list[int | None]:
    """The map id each of `half`'s slots of an outer map holds (set k at index k), None where empty."""
    out: list[int | None] = []
    for k in range(abi.MAX_DYNSETS):
        raw = B.map_lookup(outer, struct.pack("<I", abi.dyn_slot(half, k)), 4)
        out.append(struct.unpack("<I", raw)[0] if raw is not None else None)
    return out


def slot_writes(dm: Maps, half: int, plan: Plan) -> dict[str, dict[int, int | None]]:
    """Per outer map, the slots of `half` that must change for `plan`: slot ->
    the set map's fd, or None to release a slot the plan does not use."""
    sets = ensure(dm, plan)
    out: dict[str, dict[int, int | None]] = {}
    for kind in KINDS:
        outer_pin = SPEC[kind][0]
        outer = dm[outer_pin]
        changes: dict[int, int | None] = {}
        for k, have in enumerate(slot_ids(outer, half)):
            slot = abi.dyn_slot(half, k)
            if k < len(plan.dynsets):
                sm = sets[plan.dynsets[k].name]
                if have != sm.map_id(kind):
                    changes[slot] = sm.fds[kind]
            elif have is not None and not is_placeholder(have):
                changes[slot] = None  # it would keep a dropped set's maps alive
        if changes:
            out[outer_pin] = changes
    return out


def commit_slots(dm: Maps, writes: Iterable[Mapping[str, Mapping[int, int | None]]]) -> None:
    """Write the slot changes of several halves with one call per outer map:
    every map-in-map update call waits out an RCU grace period."""
    for outer_pin in OUTER_PINS:
        sets: dict[int, int] = {}
        clears: list[int] = []
        for w in writes:
            for slot, fd in w.get(outer_pin, {}).items():
                if fd is None:
                    clears.append(slot)
                else:
                    sets[slot] = fd
        if not clears:
            if sets:
                _update_slots(dm[outer_pin], sets)
            continue
        # Arrays of maps have no batch delete, and each delete waits out a
        # grace period: released slots point at one empty map instead.
        kind = next(k for k, v in SPEC.items() if v[0] == outer_pin)
        _, mtype, ksize, _ = SPEC[kind]
        with B.Fd(B.map_create(mtype, ksize, ELEM.size, 1, B.BPF_F_NO_PREALLOC, name=PLACEHOLDER)) as empty:
            _update_slots(dm[outer_pin], sets | dict.fromkeys(clears, empty))


def _update_slots(outer: int, sets: Mapping[int, int]) -> None:
    B.map_update_batch(
        outer, [struct.pack("<I", s) for s in sets], [struct.pack("<I", fd) for fd in sets.values()]
    )


def is_placeholder(map_id: int) -> bool:
    try:
        with B.Fd(B.map_get_fd_by_id(map_id)) as fd:
            return B.map_info(fd).name == PLACEHOLDER
    except B.BpfError:
        return True  # gone already: nothing to release


def drop_undeclared(dm: Maps, plan: Plan) -> list[str]:
    """Unpin the sets `plan` does not declare (their elements go with them).

    Called once no half refers to them any more; a map still referred to
    by an outer slot would outlive its pin.
    """
    keep = {ds.name for ds in plan.dynsets}
    gone = [n for n in pinned(dm.pin_dir) if n not in keep]
    for name in gone:
        sm = dm.sets.pop(name, None)
        if sm is not None:
            sm.close()
        unpin(dm.pin_dir, name)
    return gone


def collect(dm: Maps, plan: Plan) -> None:
    """Garbage-collect the plan's sets where an element is due (apply calls this)."""
    now = now_ns(dm.pin_dir)
    for sm in ensure(dm, plan).values():
        maybe_gc(sm, now)


def status(pin_dir: str) -> dict[str, dict[str, object]]:
    """Per pinned set: elements stored, size, default timeout."""
    out: dict[str, dict[str, object]] = {}
    for name in pinned(pin_dir):
        sm = open_set(pin_dir, name)
        if sm is None:
            continue
        with sm:
            m = sm.meta()
        out[name] = {
            "elements": m.count,
            "size": m.size,
            "timeout": m.timeout_ns / 1e9 if m.timeout_ns else None,
        }
    return out


# --------------------------------------------------------------------------
# what `xdpguard set` does on each interface


def targets(name: str, ifaces: list[str]) -> list[str]:
    """The interfaces a `set` command acts on: those given, or every interface
    whose applied rule file declares dynamic set `name`.  Everything wrong is
    found here, before any element changes."""

    def static_on(ifname: str) -> bool:
        summary = Iface(ifname).load_summary() or {}
        return name in summary.get("sets", {}) and name not in pinned(str(Iface(ifname).pin_dir))

    if ifaces:
        for ifname in ifaces:
            st = Iface(ifname)
            if not st.linked:
                raise KernelError(f"xdpguard is not attached to {ifname}")
            if name not in pinned(str(st.pin_dir)):
                if static_on(ifname):
                    raise UsageError(
                        f"{name} is a static set on {ifname}: its elements come from the rule file "
                        "(edit it and apply)"
                    )
                raise UsageError(f"the rule file applied to {ifname} declares no dynamic set {name}")
        return list(dict.fromkeys(ifaces))
    found = [n for n in known_ifaces() if name in pinned(str(Iface(n).pin_dir))]
    if found:
        return found
    static = [n for n in known_ifaces() if static_on(n)]
    if static:
        raise UsageError(
            f"{name} is a static set (on {', '.join(static)}): its elements come from the rule file "
            "(edit it and apply)"
        )
    raise UsageError(f"no interface's applied rule file declares a dynamic set {name}")
