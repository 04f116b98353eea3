"""Writing a compiled plan into one half of the pinned maps, and reading counters.

No bcc here: a rule-only apply opens the pinned maps (BPF_OBJ_GET) and
writes only the entries whose value changes between the plan a half holds
and the plan it must hold.  Bitmap tables and address tables are inner
maps sized to the plan: a table that changes is built whole into a fresh
inner map and swapped into its outer slot; one that does not change is
left as it is (no write at all).
"""

from __future__ import annotations

import ctypes
import os
import struct
from array import array
from dataclasses import dataclass, field

from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.errors import KernelError
from xdpguard.rules import nodes
from xdpguard.rules.compile import F_DST, F_SRC, DirectionPlan, Intervals, Plan, RulePlan
from xdpguard.rules.model import Action, Mode

DIRECTIONS = ("ingress", "egress")

C_SIZE = {
    "config": ctypes.sizeof(abi.Config),
    "rule": ctypes.sizeof(abi.RuleEntry),
    "counter": ctypes.sizeof(abi.Counter),
    "bitmap": ctypes.sizeof(abi.Bitmap),
    "node": ctypes.sizeof(abi.Node),
    "flow_key": ctypes.sizeof(abi.FlowKey),
    "flow": ctypes.sizeof(abi.Flow),
    "bucket": ctypes.sizeof(abi.Bucket),
    "src_bucket_key": ctypes.sizeof(abi.SrcBucketKey),
    "block_key": ctypes.sizeof(abi.BlockKey),
    "block": ctypes.sizeof(abi.Block),
}

# name -> (type, key size, value size, max entries): what bpf/lib/maps.h declares.
# The flow table's size is the rule file's choice, checked separately.
EXPECTED_MAPS: dict[str, tuple[int, int, int, int]] = {
    "active": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 1),
    "config": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["config"], abi.NHALVES),
    "addrs": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.ADDR_TABLES),
    "proto": (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * abi.PROTO_SIZE),
    "sport": (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * abi.PORT_SIZE),
    "dport": (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * abi.PORT_SIZE),
    "tflags": (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * abi.TFLAGS_SIZE),
    "icmp": (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * abi.ICMP_SIZE),
    "rules": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["rule"], abi.NHALVES * abi.MAX_RULES),
    "bitmaps": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "counters": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, C_SIZE["counter"], abi.NDIRS * abi.MAX_SLOTS),
    "rule_buckets": (B.BPF_MAP_TYPE_HASH, 8, C_SIZE["bucket"], abi.RULE_BUCKETS),
    "events": (B.BPF_MAP_TYPE_RINGBUF, 0, 0, abi.EVENTS_BYTES),
    "event_cfg": (B.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(abi.EventCfg), 1),
    "event_rate": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(abi.EventRate), 1),
}
# Maps whose size the rule file chooses: name -> (type, key size, value size).
SIZED_MAPS = {
    "flows": (B.BPF_MAP_TYPE_LRU_HASH, C_SIZE["flow_key"], C_SIZE["flow"]),
    "src_buckets": (B.BPF_MAP_TYPE_LRU_HASH, C_SIZE["src_bucket_key"], C_SIZE["bucket"]),
    "blocked": (B.BPF_MAP_TYPE_LRU_HASH, C_SIZE["block_key"], C_SIZE["block"]),
}


# Pins of maps earlier xdpguard versions had and this one does not use.
RETIRED_MAPS = ("src4", "dst4", "src6", "dst6")  # LPM tries, before the address tables


def missing_pins(pin_dir: str) -> list[str]:
    """Maps this version's programs declare that an older version did not pin."""
    return [n for n in EXPECTED_MAPS if not os.path.exists(os.path.join(pin_dir, n))]


def remove_retired_pins(pin_dir: str) -> list[str]:
    gone = []
    for n in RETIRED_MAPS:
        path = os.path.join(pin_dir, n)
        if os.path.exists(path):
            os.unlink(path)
            gone.append(n)
    return gone


def sized_maps(plan: Plan) -> dict[str, tuple[int, int, int, int]]:
    return {
        "flows": (*SIZED_MAPS["flows"], plan.flow_table_size),
        "src_buckets": (*SIZED_MAPS["src_buckets"], plan.limit_table_size),
        "blocked": (*SIZED_MAPS["blocked"], plan.limit_table_size),
    }


def check_pinned_sizes(pin_dir: str, plan: Plan | None = None) -> list[str]:
    """Mismatches between pinned maps and what the programs declare (bcc does not check)."""
    problems = []
    want = dict(EXPECTED_MAPS)
    if plan is not None:
        want.update(sized_maps(plan))
    for name, spec in want.items():
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            continue
        with B.Fd(B.obj_get(path)) as fd:
            info = B.map_info(fd)
        got = (info.type, info.key_size, info.value_size, info.max_entries)
        if got != spec:
            problems.append(f"{path}: pinned map has type/key/value/entries {got}, the program needs {spec}")
    return problems


def pinned_size(pin_dir: str, name: str) -> int | None:
    path = os.path.join(pin_dir, name)
    if not os.path.exists(path):
        return None
    with B.Fd(B.obj_get(path)) as fd:
        return B.map_info(fd).max_entries


@dataclass
class Maps:
    """Open fds of an interface's pinned maps."""

    fds: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.fds[name]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def __enter__(self) -> Maps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_maps(pin_dir: str) -> Maps:
    m = Maps()
    try:
        for name in [*EXPECTED_MAPS, *SIZED_MAPS]:
            m.fds[name] = B.obj_get(os.path.join(pin_dir, name))
    except B.BpfError as e:
        m.close()
        raise KernelError(f"cannot open the pinned maps in {pin_dir}: {e.sentence}") from e
    return m


def half_of(direction: str, ver: int) -> int:
    return abi.DIR_INDEX[direction] * abi.NVERSIONS + ver


# --------------------------------------------------------------------------
# encoding


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def expand(iv: Intervals, size: int) -> array[int]:
    out = array("I", bytes(4 * size))
    for lo, hi, idx in iv:
        out[lo : hi + 1] = array("I", [idx]) * (hi - lo + 1)
    return out


def bitmap_bytes(bm: int, nwords: int) -> bytes:
    summary = 0
    for w in range(nwords):
        if (bm >> (64 * w)) & 0xFFFFFFFFFFFFFFFF:
            summary |= 1 << w
    return struct.pack("<Q", summary) + bm.to_bytes(8 * abi.MAX_WORDS, "little")


def config_bytes(plan: Plan, d: DirectionPlan) -> bytes:
    cfg = abi.Config()
    cfg.plan_hash = plan.hash64
    cfg.nwords = d.nwords
    cfg.nrules = d.nrules
    flags = 0
    if plan.mode == Mode.AUDIT:
        flags |= abi.CFG_AUDIT
    if plan.non_ip == Action.DROP:
        flags |= abi.CFG_NON_IP_DROP
    if plan.ndp == "rules":
        flags |= abi.CFG_NDP_RULES
    if d.default == Action.DROP:
        flags |= abi.CFG_DEFAULT_DROP
    if d.uses_state:
        flags |= abi.CFG_HAS_STATE
    if d.uses_block:
        flags |= abi.CFG_HAS_BLOCK
    cfg.flags = flags
    cfg.field_mask = d.field_mask
    for i, b in enumerate(d.bases):
        cfg.base[i] = b
    cfg.l4free_idx = d.bases[0] + d.l4free_idx
    cfg.est_idx = d.bases[0] + d.est_idx
    cfg.new_idx = d.bases[0] + d.new_idx
    cfg.ones_idx = d.bases[0] + d.ones_idx
    cfg.l4free_nc_idx = d.bases[0] + d.l4free_nc_idx
    cfg.est_nc_idx = d.bases[0] + d.est_nc_idx
    cfg.new_nc_idx = d.bases[0] + d.new_nc_idx
    cfg.ones_nc_idx = d.bases[0] + d.ones_nc_idx
    cfg.ncont = len(d.cont)
    for i, bit in enumerate(d.cont):
        cfg.cont[i] = bit
    cfg.tmo_tcp, cfg.tmo_udp, cfg.tmo_icmp = plan.tmo_tcp, plan.tmo_udp, plan.tmo_icmp
    return bytes(cfg)


ACTIONS = {Action.ALLOW: abi.ACT_ALLOW, Action.DROP: abi.ACT_DROP, Action.CONTINUE: abi.ACT_CONTINUE}


def rule_bytes(rp: RulePlan, slot: int) -> bytes:
    r = abi.RuleEntry()
    r.rule_id = rp.rule_id
    r.slot = slot
    r.action = ACTIONS[rp.action]
    lim = rp.limit
    if lim is not None:
        r.limit = lim.kind
        r.rate = lim.rate
        r.cost_ns = lim.cost_ns
        r.burst_ns = lim.burst_ns
        r.per_source = int(lim.per_source)
        r.plen4 = lim.plen4 if lim.per_source else 0
        r.plen6 = lim.plen6 if lim.per_source else 0
        r.block_s = lim.block_s
    return bytes(r)


# --------------------------------------------------------------------------
# writing a half


@dataclass
class WriteStats:
    addr_tables: int = 0  # address tables built (src/dst, v4/v6)
    addr_nodes: int = 0  # 1 KiB node elements written into them
    array_updates: int = 0
    bitmaps: int = 0

    def add(self, o: WriteStats) -> None:
        self.addr_tables += o.addr_tables
        self.addr_nodes += o.addr_nodes
        self.array_updates += o.array_updates
        self.bitmaps += o.bitmaps


# (plan attribute, field, IPv6): the four address tables of a direction.
ADDR_FIELDS = (("src4", F_SRC, False), ("dst4", F_DST, False), ("src6", F_SRC, True), ("dst6", F_DST, True))


@dataclass
class Inner:
    """Inner maps built for one direction's plan; both halves share them.  The caller closes."""

    bitmaps: int | None = None
    addrs: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        for fd in [self.bitmaps, *self.addrs.values()]:
            if fd is not None:
                os.close(fd)
        self.bitmaps = None
        self.addrs.clear()


@dataclass
class HalfWrite:
    """What commit_halves() still has to do for one half."""

    half: int
    bitmaps: int  # fd for the bitmap outer slot
    addrs: dict[int, int]  # address outer slot -> fd, only for tables that change
    config: bytes


def _changed(new: array[int], old: array[int], chunk: int = 1024) -> list[int]:
    """Indexes where two equal-length arrays differ: chunks compared as bytes first (C speed)."""
    nb, ob = new.tobytes(), old.tobytes()
    out: list[int] = []
    step = chunk * new.itemsize
    for start in range(0, len(nb), step):
        if nb[start : start + step] != ob[start : start + step]:
            base = start // new.itemsize
            out.extend(i for i in range(base, min(base + chunk, len(new))) if new[i] != old[i])
    return out


def _write_array(fd: int, half: int, size: int, new: array[int], old: array[int] | None) -> int:
    base = half * size
    idx: range | list[int] = range(size) if old is None else _changed(new, old)
    if not idx:
        return 0
    keys = [_u32(base + i) for i in idx]
    vals = [_u32(new[i]) for i in idx]
    B.map_update_batch(fd, keys, vals)
    return len(keys)


def _build_addr_table(inner: Inner, d: DirectionPlan, name: str, v6: bool) -> int:
    """Build d's address table `name` into a fresh inner map, kept in inner.addrs; its element count."""
    from xdpguard.rules import stride  # numpy: only when a table is built

    table = stride.build(getattr(d, name), 128 if v6 else 32)
    inner.addrs[name] = _inner_map("xg_addr", nodes.NODE_BYTES, table.elements())
    return table.n_elems


def _slot_filled(outer_fd: int, slot: int) -> bool:
    """Does an array-of-maps slot hold an inner map? (lookup gives its id)"""
    return B.map_lookup(outer_fd, _u32(slot), 4) is not None


def _inner_map(name: str, value_size: int, values: list[bytes]) -> int:
    fd = B.map_create(B.BPF_MAP_TYPE_ARRAY, 4, value_size, max(1, len(values)), B.BPF_F_INNER_MAP, name=name)
    try:
        if values:
            B.map_update_batch(fd, [_u32(i) for i in range(len(values))], values)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_half(
    dm: Maps,
    half: int,
    plan: Plan,
    d: DirectionPlan,
    old: DirectionPlan | None,
    slots: dict[int, int],
    inner: Inner,
    commit: bool = True,
) -> tuple[WriteStats, HalfWrite]:
    """Make `half` (direction * 2 + version) hold direction plan `d`.

    `old` is what the half holds now (None: unknown, write everything);
    `slots` maps rule id -> counter slot.  Inner maps come from `inner`
    when an earlier half of the same plan built them, else are built and
    added to it.  With commit=False the half is left dirty and the
    returned HalfWrite goes to commit_halves(), which finishes it.
    """
    st = WriteStats()
    # Until the final config write, this half holds no plan we could name:
    # a crash in between must not leave it looking like `old`.
    cfg = read_config(dm, half)
    if cfg.plan_hash:
        cfg.plan_hash = 0
        B.map_update(dm["config"], _u32(half), bytes(cfg))

    addrs: dict[int, int] = {}
    for name, fld, v6 in ADDR_FIELDS:
        if old is not None and getattr(old, name) == getattr(d, name):
            continue  # the half's table already holds these entries
        if name not in inner.addrs:
            n_elems = _build_addr_table(inner, d, name, v6)
            st.addr_tables += 1
            st.addr_nodes += n_elems
        addrs[abi.addr_table(half, fld, v6)] = inner.addrs[name]

    st.array_updates += _write_array(
        dm["proto"], half, abi.PROTO_SIZE, array("I", d.proto), array("I", old.proto) if old else None
    )
    st.array_updates += _write_array(
        dm["tflags"], half, abi.TFLAGS_SIZE, array("I", d.tflags), array("I", old.tflags) if old else None
    )
    for name, size, new_iv, old_iv in (
        ("sport", abi.PORT_SIZE, d.sport, old.sport if old else None),
        ("dport", abi.PORT_SIZE, d.dport, old.dport if old else None),
        ("icmp", abi.ICMP_SIZE, d.icmp, old.icmp if old else None),
    ):
        if old_iv is not None and new_iv == old_iv:
            continue
        st.array_updates += _write_array(
            dm[name], half, size, expand(new_iv, size), expand(old_iv, size) if old_iv is not None else None
        )

    # Bitmaps: a new inner map per plan, shared by both halves once synced.
    if inner.bitmaps is None:
        bms = d.all_bitmaps()
        inner.bitmaps = _inner_map("xg_bitmap", C_SIZE["bitmap"], [bitmap_bytes(b, d.nwords) for b in bms])
        st.bitmaps = len(bms)
    if d.rules:
        base = half * abi.MAX_RULES
        B.map_update_batch(
            dm["rules"],
            [_u32(base + r.index) for r in d.rules],
            [rule_bytes(r, slots[r.rule_id]) for r in d.rules],
        )
    hw = HalfWrite(half, inner.bitmaps, addrs, config_bytes(plan, d))
    if commit:
        commit_halves(dm, [hw])
    return st, hw


def fill_empty_addr_tables(dm: Maps, plan: Plan) -> int:
    """Give every half an address table for `plan` where its slot is empty.

    For maps pinned by an older xdpguard (no address tables yet): before
    the new programs replace the old ones, every half must already answer
    address lookups for the plan it holds.  Returns the slots filled.
    """
    inner = {d.name: Inner() for d in plan.directions()}
    slots: dict[int, int] = {}  # outer slot -> fd
    try:
        for d in plan.directions():
            for ver in range(abi.NVERSIONS):
                for name, fld, v6 in ADDR_FIELDS:
                    slot = abi.addr_table(half_of(d.name, ver), fld, v6)
                    if _slot_filled(dm["addrs"], slot):
                        continue
                    if name not in inner[d.name].addrs:
                        _build_addr_table(inner[d.name], d, name, v6)
                    slots[slot] = inner[d.name].addrs[name]
        if slots:  # one call: each map-in-map update call waits out a grace period
            B.map_update_batch(dm["addrs"], [_u32(s) for s in slots], [_u32(fd) for fd in slots.values()])
    finally:
        for i in inner.values():
            i.close()
    return len(slots)


def commit_halves(dm: Maps, halves: list[HalfWrite]) -> None:
    """Point each half at its inner maps, then write its config (which names its plan).

    The outer-map slots go in one batch per outer map: the kernel waits out
    an RCU grace period after every map-in-map update call, so one call
    instead of one per half saves a grace period (~10 ms) each.
    """
    slots = [(s, fd) for hw in halves for s, fd in sorted(hw.addrs.items())]
    if slots:
        B.map_update_batch(dm["addrs"], [_u32(s) for s, _ in slots], [_u32(fd) for _, fd in slots])
    B.map_update_batch(dm["bitmaps"], [_u32(hw.half) for hw in halves], [_u32(hw.bitmaps) for hw in halves])
    for hw in halves:
        B.map_update(dm["config"], _u32(hw.half), hw.config)


# --------------------------------------------------------------------------
# reading back


def read_config(dm: Maps, half: int) -> abi.Config:
    raw = B.map_lookup(dm["config"], _u32(half), C_SIZE["config"])
    return abi.Config.from_buffer_copy(raw) if raw else abi.Config()


def read_rules(dm: Maps, half: int, nrules: int) -> list[abi.RuleEntry]:
    if nrules == 0:
        return []
    base = half * abi.MAX_RULES
    out = []
    for i in range(nrules):
        raw = B.map_lookup(dm["rules"], _u32(base + i), C_SIZE["rule"])
        out.append(abi.RuleEntry.from_buffer_copy(raw) if raw else abi.RuleEntry())
    return out


def _slot_key(direction: str, slot: int) -> bytes:
    return _u32(abi.DIR_INDEX[direction] * abi.MAX_SLOTS + slot)


def read_counters(dm: Maps, direction: str, slots: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """Per slot (packets, bytes, over-limit packets, over-limit bytes) summed over CPUs."""
    vsize = C_SIZE["counter"]
    psize = B.percpu_value_size(vsize)
    out = {}
    for s in slots:
        raw = B.map_lookup(dm["counters"], _slot_key(direction, s), psize)
        pk = by = over = over_by = 0
        if raw:
            for v in B.split_percpu(raw, vsize):
                c = abi.Counter.from_buffer_copy(v)
                pk += c.packets
                by += c.bytes
                over += c.over
                over_by += c.over_bytes
        out[s] = (pk, by, over, over_by)
    return out


def read_event_cfg(dm: Maps) -> abi.EventCfg:
    raw = B.map_lookup(dm["event_cfg"], _u32(0), ctypes.sizeof(abi.EventCfg))
    return abi.EventCfg.from_buffer_copy(raw) if raw else abi.EventCfg()


def write_event_cfg(dm: Maps, sample: int, max_rate: int) -> None:
    cfg = abi.EventCfg(sample, max_rate)
    B.map_update(dm["event_cfg"], _u32(0), bytes(cfg))


def zero_counters_all(dm: Maps) -> None:
    n = abi.NDIRS * abi.MAX_SLOTS
    B.map_update_batch(
        dm["counters"], [_u32(i) for i in range(n)], [bytes(B.percpu_value_size(C_SIZE["counter"]))] * n
    )


def zero_counters(dm: Maps, direction: str, slots: list[int]) -> None:
    if not slots:
        return
    zero = bytes(B.percpu_value_size(C_SIZE["counter"]))
    B.map_update_batch(dm["counters"], [_slot_key(direction, s) for s in slots], [zero] * len(slots))


def prune_rule_buckets(dm: Maps, live: set[int]) -> int:
    keys = [k for k, _ in B.map_lookup_batch(dm["rule_buckets"], 8, C_SIZE["bucket"])]
    stale = [k for k in keys if struct.unpack("<Q", k)[0] not in live]
    return B.map_delete_batch(dm["rule_buckets"], stale) if stale else 0


def _block_key(family: int, addr: int) -> bytes:
    k = abi.BlockKey()
    k.family = family
    raw = addr.to_bytes(4 if family == 4 else 16, "big")
    for i, b in enumerate(raw):
        k.addr[i] = b
    return bytes(k)


def unblock(dm: Maps, family: int, addr: int) -> bool:
    return B.map_delete(dm["blocked"], _block_key(family, addr))


def read_blocked(dm: Maps, plan: Plan | None) -> list[dict[str, object]]:
    """Blocked sources still in force, with seconds left and the rule that blocked them."""
    import ipaddress
    import time

    names = {r.rule_id: r.name for d in plan.directions() for r in d.rules} if plan else {}
    now = time.monotonic_ns()
    out: list[dict[str, object]] = []
    for k, v in B.map_lookup_batch(dm["blocked"], C_SIZE["block_key"], C_SIZE["block"]):
        key = abi.BlockKey.from_buffer_copy(k)
        val = abi.Block.from_buffer_copy(v)
        if val.until_ns <= now:
            continue
        raw = bytes(key.addr)
        addr = ipaddress.ip_address(raw[:4] if key.family == 4 else raw)
        out.append(
            {
                "source": str(addr),
                "seconds_left": round((val.until_ns - now) / 1e9, 1),
                "rule": names.get(val.rule_id, f"{val.rule_id:016x}"),
            }
        )
    return sorted(out, key=lambda b: str(b["source"]))


def flow_table_fill(dm: Maps) -> int:
    """Entries in the flow table (expired ones included until the LRU reuses them)."""
    return len(B.map_lookup_batch(dm["flows"], C_SIZE["flow_key"], C_SIZE["flow"]))


def read_active(pin_dir: str) -> int:
    with B.Fd(B.obj_get(os.path.join(pin_dir, "active"))) as fd:
        raw = B.map_lookup(fd, _u32(0), B.percpu_value_size(4))
    vals = {struct.unpack_from("<I", v)[0] & 1 for v in B.split_percpu(raw or b"", 4)}
    if len(vals) != 1:
        # A flip was interrupted between CPUs: report the lowest CPU's view.
        return struct.unpack_from("<I", raw or bytes(8))[0] & 1
    return vals.pop()


def write_active(pin_dir: str, ver: int) -> None:
    with B.Fd(B.obj_get(os.path.join(pin_dir, "active"))) as fd:
        B.map_update(fd, _u32(0), B.join_percpu([_u32(ver)] * B.ncpus(), 4))


def allocate_slots(
    rules_now: list[abi.RuleEntry], rules_other: list[abi.RuleEntry], wanted: list[int]
) -> tuple[dict[int, int], list[int]]:
    """Counter slots for the rule ids in `wanted`: keep the live ones, take free ones for new.

    Returns (rule id -> slot, slots newly taken, to be zeroed before use).
    """
    live = {r.rule_id: r.slot for r in rules_now if r.slot >= abi.SLOT_FIRST_RULE}
    used = set(live.values()) | {r.slot for r in rules_other if r.slot >= abi.SLOT_FIRST_RULE}
    out: dict[int, int] = {}
    fresh: list[int] = []
    nxt = abi.SLOT_FIRST_RULE
    for rid in wanted:
        if rid in live:
            out[rid] = live[rid]
            continue
        while nxt in used:
            nxt += 1
        if nxt >= abi.MAX_SLOTS:
            raise KernelError("no free counter slot (more than two full rule sets live at once)")
        out[rid] = nxt
        used.add(nxt)
        fresh.append(nxt)
    return out, fresh
