"""Writing a compiled plan into one half of the pinned maps, and reading counters.

No bcc here: a rule-only apply opens the pinned maps (BPF_OBJ_GET) and
writes only the entries whose value changes between the plan a half holds
and the plan it must hold.  Address tables are inner maps sized to the
plan: a table that changes is written whole into a fresh inner map and
swapped into its outer slot; one that does not change is left as it is.
Its nodes come from runs kept by content (xdpguard/addrcache.py): those
of an earlier apply of the same entries, or those of the table the half
holds, patched where a few prefixes changed.

Rule bitmaps are two inner maps (see TwoLevel in rules/compile.py): each
half's top entries, rewritten in place where they differ, and the blocks,
shared by both halves of a direction.  A new plan's blocks go into slots
no plan a packet may read refers to, and blocks that are already there
are not written again, so a one-rule change writes a few blocks and top
entries, not the whole table.  A rule set of at most 4,096 rules (one
group) also gets a flat table, one block per bitmap in top-entry order, so
that a packet needs one lookup per field, not two; like the address
tables it is built whole per plan and shared by both halves.  A set of at
most 64 rules also has its bitmaps as one word each in the plain array
`words`, which the program reads with inlined loads and no call.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import operator
import os
import struct
import time
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xdpguard.datapath import abi, dynsets
from xdpguard.datapath import bpf as B
from xdpguard.datapath.syncookie import BPF_MAP_TYPE_PROG_ARRAY
from xdpguard.errors import KernelError
from xdpguard.rules import nodes
from xdpguard.rules.abi_consts import F_EXTRA
from xdpguard.rules.compile import (
    DirectionPlan,
    FixSizes,
    Intervals,
    Plan,
    RulePlan,
    fix_sizes,
    fixed_nodes,
    uses_fixed,
    uses_fixed_flat,
)
from xdpguard.rules.fields import ADDR_ENTRIES, ARRAY, KEYED_FIELDS, Field
from xdpguard.rules.model import Action, Mode

if TYPE_CHECKING:
    import numpy as np

DIRECTIONS = ("ingress", "egress")

C_SIZE = {
    "config": ctypes.sizeof(abi.Config),
    "rule": ctypes.sizeof(abi.RuleEntry),
    "counter": ctypes.sizeof(abi.Counter),
    "bitmap": ctypes.sizeof(abi.Bitmap),
    "top": ctypes.sizeof(abi.Top),
    "node": ctypes.sizeof(abi.Node),
    "flow_key": ctypes.sizeof(abi.FlowKey),
    "flow": ctypes.sizeof(abi.Flow),
    "bucket": ctypes.sizeof(abi.Bucket),
    "src_line": ctypes.sizeof(abi.SrcLine),
    "limiter": ctypes.sizeof(abi.Limiter),
    "block_key": ctypes.sizeof(abi.BlockKey),
    "block": ctypes.sizeof(abi.Block),
}

# name -> (type, key size, value size, max entries): what bpf/lib/maps.h declares.
# The flow table's size is the rule file's choice, checked separately.
EXPECTED_MAPS: dict[str, tuple[int, int, int, int]] = {
    "active": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 1),
    "config": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["config"], abi.NHALVES),
    "addrs": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.ADDR_TABLES),
    "addrs_f": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.ADDR_TABLES),
    # the keyed match fields' arrays (rules/fields.py): a bitmap-table index per key and half
    **{f.pin: (B.BPF_MAP_TYPE_ARRAY, 4, 4, abi.NHALVES * f.space) for f in KEYED_FIELDS},
    "rules": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["rule"], abi.NHALVES * abi.MAX_RULES),
    "tops": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "bitmaps": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "tops_f": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "flat_f": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "fixsize": (B.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(abi.FixSize), 1),
    "bitmaps_f": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "flat": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.NHALVES),
    "words": (B.BPF_MAP_TYPE_ARRAY, 4, 8, abi.NHALVES * abi.WORDS_CAP),
    "pflat": (B.BPF_MAP_TYPE_ARRAY, 4, abi.PFLAT_CAP * C_SIZE["bitmap"], abi.NHALVES),
    "counters": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, C_SIZE["counter"], abi.NDIRS * abi.MAX_SLOTS),
    "rule_tat": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["bucket"], abi.NDIRS * abi.MAX_SLOTS),
    "limiter": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["limiter"], 1),
    "block_filter": (B.BPF_MAP_TYPE_ARRAY, 4, 8, abi.BLOCK_FILTER_CELLS),
    "src_debt": (B.BPF_MAP_TYPE_ARRAY, 4, 8, abi.SRC_DEBT_CELLS),
    "events": (B.BPF_MAP_TYPE_RINGBUF, 0, 0, abi.EVENTS_BYTES),
    "event_cfg": (B.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(abi.EventCfg), 1),
    "event_rate": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(abi.EventRate), 1),
    # dynamic sets (xdpguard/datapath/dynsets.py): per half, the sets its plan declares
    "dyn4": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.DYN_SLOTS),
    "dyn6": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.DYN_SLOTS),
    "dynp4": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.DYN_SLOTS),
    "dynp6": (B.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, abi.DYN_SLOTS),
    "dynf": (B.BPF_MAP_TYPE_ARRAY, 4, 8, abi.DYNF_WORDS),
    "dyncfg": (B.BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(abi.DynCfg), abi.NHALVES),
    "syn_prog": (BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1),
    "syn_scratch": (B.BPF_MAP_TYPE_PERCPU_ARRAY, 4, ctypes.sizeof(abi.SynScratch), 1),
}
# The outer maps whose inner maps have the fixed sizes (compile.fix_sizes), by
# the outer map of the sized inner maps they stand in for (compile.uses_fixed,
# uses_fixed_flat and fixed_nodes say which tables go there).
FIXED_OUTER = {"addrs": "addrs_f", "tops": "tops_f", "bitmaps": "bitmaps_f", "flat": "flat_f"}
# Pins a version before dynamic sets did not have: the new programs create them
# (empty), and a plan without dynamic sets never reads them.
DYN_PINS = frozenset({"dyn4", "dyn6", "dynp4", "dynp6", "dynf", "dyncfg"})
# Maps whose size the rule file chooses: name -> (type, key size, value size).
SIZED_MAPS = {
    "flows": (B.BPF_MAP_TYPE_LRU_HASH, C_SIZE["flow_key"], C_SIZE["flow"]),
    "src_slots": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["src_line"]),
    "src_sketch": (B.BPF_MAP_TYPE_ARRAY, 4, C_SIZE["bucket"]),
    "blocked": (B.BPF_MAP_TYPE_LRU_HASH, C_SIZE["block_key"], C_SIZE["block"]),
}
# Rate-limiter state: all zero is a valid start (full buckets, no blocks;
# the hash key is written right after the programs are loaded).
LIMITER_MAPS = ("rule_tat", "limiter", "block_filter", "src_slots", "src_sketch", "src_debt")
# Pinned maps an older xdpguard lacked that a program replacement adds in place.
ADDED_MAPS = frozenset(
    {
        "addrs",
        "syn_prog",
        "syn_scratch",
        "words",
        "pflat",
        "fixsize",
        *FIXED_OUTER.values(),
        *DYN_PINS,
        *LIMITER_MAPS,
    }
)


# Every map pin the programs may use (test_clock only in test builds), and
# the name bcc gives each map: its C variable in bpf/lib/maps.h (the kernel
# keeps 15 characters), "xg_" and the pin name except for the test clock.
PROG_MAP_NAMES = (*EXPECTED_MAPS, *SIZED_MAPS, "test_clock")
PIN_OF_PROG_MAP = {
    ("xg_clock" if pin == "test_clock" else f"xg_{pin}")[: B.BPF_OBJ_NAME_LEN - 1]: pin
    for pin in PROG_MAP_NAMES
}

# Pins of maps earlier xdpguard versions had and this one does not use.
RETIRED_MAPS = (
    "src4",  # LPM tries, before the address tables
    "dst4",
    "src6",
    "dst6",
    "rule_buckets",  # hash and LRU rate-limit buckets, before the fixed arrays
    "src_buckets",
)


def missing_pins(pin_dir: str) -> list[str]:
    """Maps this version's programs declare that an older version did not pin."""
    return [n for n in [*EXPECTED_MAPS, *SIZED_MAPS] if not os.path.exists(os.path.join(pin_dir, n))]


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
        "src_slots": (*SIZED_MAPS["src_slots"], abi.src_lines(plan.limit_table_size)),
        "src_sketch": (*SIZED_MAPS["src_sketch"], plan.limit_table_size),
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
    """Open fds of an interface's pinned maps (and of the dynamic sets opened on the way)."""

    fds: dict[str, int] = field(default_factory=dict)
    pin_dir: str = ""
    sets: dict[str, dynsets.SetMaps] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.fds[name]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        for sm in self.sets.values():
            sm.close()
        self.sets.clear()

    def __enter__(self) -> Maps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_maps(pin_dir: str) -> Maps:
    m = Maps(pin_dir=pin_dir)
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


def keyed_array(f: Field, d: DirectionPlan) -> array[int]:
    """What a keyed field's array map holds for d: the bitmap-table index of every key."""
    kept = getattr(d, f.pin)
    return array("I", kept) if f.layout == ARRAY else expand(kept, f.space)


_WORDS = struct.Struct(f"<{abi.GROUP_WORDS}Q")
_TOP = struct.Struct(f"<{1 + abi.MAX_GROUPS}I")


def block_bytes(block: bytes) -> bytes:
    """struct xg_bitmap for one block (GROUP_RULES bits): the summary word, then the words."""
    summary = 0
    for w, word in enumerate(_WORDS.unpack(block)):
        if word:
            summary |= 1 << w
    return struct.pack("<Q", summary) + block


def top_bytes(groups: int, slots: list[int]) -> bytes:
    """struct xg_top: `slots` are the block slots of the set groups, lowest group first."""
    block = [0] * abi.MAX_GROUPS
    g, k = groups, 0
    while g:
        block[(g & -g).bit_length() - 1] = slots[k]
        k += 1
        g &= g - 1
    return _TOP.pack(groups, *block)


_ZERO_BLOCK = bytes(abi.GROUP_RULES // 8)


def group0_blocks(d: DirectionPlan) -> list[bytes]:
    """A one-group plan's bitmaps as their raw block each (no summary), in
    top-entry order: what the flat table and the words are made of."""
    tl = d.two_level()
    return [tl.blocks[blk[0]] if groups & 1 else _ZERO_BLOCK for groups, blk in tl.tops]


def flat_blocks(d: DirectionPlan) -> list[bytes]:
    """A one-group plan's bitmaps as struct xg_bitmap each, in top-entry order."""
    return [block_bytes(b) for b in group0_blocks(d)]


def uses_words(d: DirectionPlan) -> bool:
    """Whether `d` is small enough for the one-word bitmaps (abi.CFG_WORDS)."""
    return d.nwords == 1 and d.nbitmaps <= abi.WORDS_CAP


def uses_pflat(d: DirectionPlan) -> bool:
    """Whether `d`'s flat blocks also go into the plain `pflat` array (abi.CFG_PFLAT):
    one group, not one word (the words serve those), few enough bitmaps."""
    return d.ngroups == 1 and d.nwords > 0 and not uses_words(d) and d.nbitmaps <= abi.PFLAT_CAP


def bitmap_words(d: DirectionPlan) -> list[int]:
    """A one-word plan's bitmaps as their word each, in top-entry order."""
    return [int.from_bytes(b[:8], "little") for b in group0_blocks(d)]


def _top_slots(raw: bytes, i: int = 0) -> list[int]:
    """The block slots the i-th struct xg_top in `raw` refers to, lowest group first."""
    return _slots_of(_TOP.unpack_from(raw, i * _TOP.size))


def _all_slots(raw: bytes) -> set[int]:
    """Every block slot the struct xg_top entries in `raw` refer to.

    Column by column (a table holds twice a plan's entries: 9,000 for a
    10,000-rule set), only for the groups some entry has.
    """
    words = memoryview(raw).cast("I")  # struct xg_top is u32s (native order, as the kernel wrote them)
    step = _TOP.size // 4
    groups = words[0::step].tolist()
    present = functools.reduce(operator.or_, groups, 0)
    out: set[int] = set()
    for g in range(abi.MAX_GROUPS):
        if present >> g & 1:
            col = words[1 + g :: step].tolist()
            out.update(slot for slot, gw in zip(col, groups, strict=True) if gw >> g & 1)
    return out


def _slots_of(v: tuple[int, ...]) -> list[int]:
    """The block slots of an unpacked struct xg_top, lowest group first."""
    g, out = v[0], []
    while g:
        out.append(v[1 + (g & -g).bit_length() - 1])
        g &= g - 1
    return out


def config_bytes(plan: Plan, d: DirectionPlan, where: int = 0) -> bytes:
    """A half's config for `d`; `where` adds the flags saying which of its
    tables are in the fixed-size outer maps (XG_CFG_FIXED, XG_CFG_FIXA)."""
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
    if d.dyn_refs:
        flags |= abi.CFG_HAS_DYN
    if d.uses_state and d.state_first:
        flags |= abi.CFG_STATE_FIRST
    if uses_words(d):
        flags |= abi.CFG_WORDS
    if uses_pflat(d):
        flags |= abi.CFG_PFLAT
    cfg.flags = flags | where
    cfg.field_mask = d.field_mask
    for i, b in enumerate(d.bases):
        cfg.base[i] = b
    cfg.l4free_idx = d.bases[0] + d.l4free_idx
    cfg.est_idx = d.bases[0] + d.est_idx
    cfg.new_idx = d.bases[0] + d.new_idx
    cfg.ones_idx = d.bases[0] + d.ones_idx
    cfg.tmo_tcp, cfg.tmo_udp, cfg.tmo_icmp = plan.tmo_tcp, plan.tmo_udp, plan.tmo_icmp
    return bytes(cfg)


ACTIONS = {Action.ALLOW: abi.ACT_ALLOW, Action.DROP: abi.ACT_DROP, Action.CONTINUE: abi.ACT_CONTINUE}


def rule_bytes(rp: RulePlan, slot: int, state_flags: int = 0) -> bytes:
    """The rule entry; state_flags: RULE_NOT_EST / RULE_NOT_NEW (see state_flags())."""
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
        r.block_ns = lim.block_ns
        r.grace_log2 = lim.grace_log2
    if rp.syn_cookies:
        r.flags |= abi.RULE_SYNCOOKIE
    r.flags |= state_flags
    return bytes(r)


def state_flags(d: DirectionPlan) -> list[int]:
    """Per rule, which flow states it can never match, from the plan's
    established and new bitmaps: the program asks the flow table only when
    the first candidate rule has one of these flags."""
    if not d.uses_state:
        return [0] * d.nrules
    tl, base = d.two_level(), d.bases[F_EXTRA]
    nbytes = (d.nrules + 7) // 8
    est = tl.bitmap(base + d.est_idx).to_bytes(nbytes, "little")
    new = tl.bitmap(base + d.new_idx).to_bytes(nbytes, "little")
    out = []
    for i in range(d.nrules):
        byte, bit = i >> 3, 1 << (i & 7)
        out.append(
            (0 if est[byte] & bit else abi.RULE_NOT_EST) | (0 if new[byte] & bit else abi.RULE_NOT_NEW)
        )
    return out


# --------------------------------------------------------------------------
# writing a half


@dataclass
class WriteStats:
    addr_tables: int = 0  # address tables built (src/dst, v4/v6)
    addr_nodes: int = 0  # 1 KiB node elements written into them
    addr_reused: int = 0  # of those tables, laid out from runs kept for the same entries
    addr_patched: int = 0  # of those tables, patched from the runs of the table the half held
    array_updates: int = 0
    bitmaps: int = 0  # top entries (one per rule bitmap) written
    blocks: int = 0  # bitmap blocks written

    def add(self, o: WriteStats) -> None:
        self.addr_tables += o.addr_tables
        self.addr_nodes += o.addr_nodes
        self.addr_reused += o.addr_reused
        self.addr_patched += o.addr_patched
        self.array_updates += o.array_updates
        self.bitmaps += o.bitmaps
        self.blocks += o.blocks


@dataclass
class Inner:
    """Inner maps for one direction's plan during one apply; both halves share
    the block table and the address tables.  The caller closes."""

    blocks: int | None = None  # fd of the block table
    slots: list[int] = field(default_factory=list)  # plan block id -> slot in it
    tops: list[bytes] = field(default_factory=list)  # the plan's top entries, for those slots
    addrs: dict[str, int] = field(default_factory=dict)
    addr_fixed: dict[str, bool] = field(default_factory=dict)  # table name -> of the fixed size (addrs_f)
    # The interface's fixed sizes (read_fix_sizes); None: build no fixed-size table.
    sizes: FixSizes | None = None

    def fixed_entries(self, what: str, use: bool) -> int:
        """The fixed size `what` ("tops", "blocks", "nodes") for _inner_map's
        `fixed`, or 0 (a sized map) when the table does not `use` it."""
        return getattr(self.sizes, what) if use and self.sizes is not None else 0

    flat: int | None = None  # fd of the flat table (plans of one group)
    extra: list[int] = field(default_factory=list)  # other fds to close (fresh top tables)
    # The plan's rule entries: both halves get the same counter slots, so the same entries.
    rules: list[bytes] | None = None

    def close(self) -> None:
        for fd in [self.blocks, self.flat, *self.addrs.values(), *self.extra]:
            if fd is not None:
                os.close(fd)
        self.blocks = self.flat = None
        self.addrs.clear()
        self.extra.clear()


@dataclass
class HalfWrite:
    """What commit_halves() still has to do for one half."""

    half: int
    bitmaps: int  # fd for the block table's outer slot
    tops: int | None  # fd for the top entries' outer slot, when the half gets a fresh table
    flat: int | None  # fd for the flat table's outer slot (plans of one group)
    addrs: dict[int, int]  # address outer slot -> fd, only for tables that change
    config: bytes
    dyncfg: bytes = b""  # the half's dynamic-set references
    dyn_slots: dict[str, dict[int, int | None]] = field(default_factory=dict)  # dynsets.slot_writes()
    fixed: bool = False  # tops and bitmaps go to the fixed-size outer maps (tops_f, bitmaps_f)
    addrs_f: dict[int, int] = field(default_factory=dict)  # as addrs, for tables of the fixed size
    flat_fixed: bool = False  # the flat table goes to flat_f


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


def _u32s(values: array[int] | range | list[int]) -> list[bytes]:
    """Many u32 keys or values: one pack, then slices (a struct call each is slow at 10^6)."""
    raw = array("I", values).tobytes()
    return [raw[i : i + 4] for i in range(0, len(raw), 4)]


def _write_array(fd: int, half: int, size: int, new: array[int], old: array[int] | None) -> int:
    """Write the half's entries that differ from `old`, or, with no old plan to go by,
    from what the map holds (read in bulk: a map the programs just created is all
    zero, and most of a port array's 65,536 entries need no write)."""
    base = half * size
    if old is None:
        old = array("I", B.map_lookup_array(fd, base, size, 4))
    idx = _changed(new, old)
    if not idx:
        return 0
    B.map_update_batch(fd, _u32s([base + i for i in idx]), _u32s([new[i] for i in idx]))
    return len(idx)


def _build_addr_table(
    inner: Inner, d: DirectionPlan, name: str, f: Field, v6: bool, old: DirectionPlan | None
) -> tuple[int, str]:
    """Build d's address table `name` into a fresh inner map, kept in inner.addrs:
    (its element count, how its runs were found: addrcache.table's word).

    The table comes from addrcache: from its own kept runs, or patched
    from those of `old`'s table (the one the half holds) when few prefixes
    changed.  It still goes into a fresh inner map, written whole: the map
    a half holds is shared with the other half, which packets are reading.
    """
    from xdpguard import addrcache  # numpy: only when a table is built

    base = getattr(old, name) if old is not None else None
    table, how = addrcache.table(getattr(d, name), 128 if v6 else 32, base)
    fixed = fixed_nodes(d, f.num, table.n_elems, inner.sizes)
    inner.addrs[name] = _inner_map(
        "xg_addr",
        nodes.NODE_BYTES,
        table.elements(),
        fixed=inner.fixed_entries("nodes", fixed),
    )
    inner.addr_fixed[name] = fixed
    return table.n_elems, how


def slot_filled(outer_fd: int, slot: int) -> bool:
    """Does an array-of-maps slot hold an inner map? (lookup gives its id)"""
    return B.map_lookup(outer_fd, _u32(slot), 4) is not None


def _inner_map(name: str, value_size: int, values: list[bytes], capacity: int = 0, fixed: int = 0) -> int:
    """An inner array map holding `values`, with room for `capacity`; or, with
    `fixed`, exactly that many entries and no BPF_F_INNER_MAP (for the
    fixed-size outer maps, whose inner maps must all match their template)."""
    if fixed:
        assert len(values) <= fixed, (name, len(values), fixed)
        entries, flags = fixed, 0
    else:
        entries, flags = max(1, len(values), capacity), B.BPF_F_INNER_MAP
    fd = B.map_create(B.BPF_MAP_TYPE_ARRAY, 4, value_size, entries, flags, name=name)
    try:
        if values:
            B.map_update_batch(fd, [_u32(i) for i in range(len(values))], values)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _outer(name: str, fixed: bool) -> str:
    """The outer map of table kind `name` ("addrs", "tops", "bitmaps", "flat") in one size class."""
    return FIXED_OUTER[name] if fixed else name


def _half_inner(dm: Maps, outer: str, half: int) -> tuple[int, int] | None:
    """(map id, fd) of the inner map in a half's slot of an outer map, or None."""
    raw = B.map_lookup(dm[outer], _u32(half), 4)
    if raw is None:
        return None
    mid = struct.unpack("<I", raw)[0]
    return mid, B.map_get_fd_by_id(mid)


def _differing(now: bytes, want: list[bytes]) -> list[int]:
    """Indexes of the values in `want` (all of one size) that `now`, the
    values a map holds back to back from the same index, does not hold."""
    if not want:
        return []
    size = len(want[0])
    if now[: size * len(want)] == b"".join(want):
        return []  # the usual answer, in one comparison
    return [i for i, v in enumerate(want) if now[i * size : (i + 1) * size] != v]


def _write_differing(fd: int, base: int, values: list[bytes]) -> int:
    """Write the values (all of one size) to array indexes base.. where the map
    does not hold them already; returns the number written."""
    if not values:
        return 0
    idx = _differing(B.map_lookup_array(fd, base, len(values), len(values[0])), values)
    if idx:
        B.map_update_batch(fd, _u32s([base + i for i in idx]), [values[i] for i in idx])
    return len(idx)


def _read_all(fd: int, value_size: int, count: int | None = None) -> bytes | None:
    """The first `count` values of an array map (every value when None), in
    index order, back to back; None when it holds fewer."""
    have = B.map_info(fd).max_entries
    if count is not None and count > have:
        return None
    return B.map_lookup_array(fd, 0, have if count is None else count, value_size)


# A fresh table has room for this many times the plan's entries (plus a
# few), so that the next plans' new blocks and top entries fit beside the
# live ones and an update writes only what changed.
_HEADROOM = 2


def _place_blocks(
    dm: Maps, half: int, d: DirectionPlan, old: DirectionPlan | None, inner: Inner, fixed: bool
) -> int:
    """Decide where d's blocks live (inner.blocks, inner.slots); returns blocks written.

    The half's block table is shared with the other half of the direction,
    which packets may be reading.  It is reused when the half holds `old`
    (so the blocks its top entries point to are old's, known by content)
    and the blocks d lacks fit into slots the other half does not refer
    to; otherwise d gets a fresh table, written whole.
    """
    tl = d.two_level()
    mine = _half_inner(dm, _outer("bitmaps", fixed), half) if old is not None else None
    if mine is not None:
        mid, fd = mine
        try:
            placed = _reuse_blocks(dm, half, fd, mid, tl.blocks, old, fixed)  # type: ignore[arg-type]
        except BaseException:
            os.close(fd)
            raise
        if placed is not None:
            slots, writes = placed
            if writes:
                B.map_update_batch(fd, [_u32(s) for s, _ in writes], [block_bytes(b) for _, b in writes])
            inner.blocks, inner.slots = fd, slots
            return len(writes)
        os.close(fd)
    values = [block_bytes(b) for b in tl.blocks]
    cap = min(abi.MAX_BLOCKS, _HEADROOM * len(values) + 64)
    inner.blocks = _inner_map(
        "xg_blocks",
        C_SIZE["bitmap"],
        values,
        cap,
        fixed=inner.fixed_entries("blocks", fixed),
    )
    inner.slots = list(range(len(values)))
    return len(values)


def _reuse_blocks(
    dm: Maps, half: int, fd: int, mid: int, blocks: tuple[bytes, ...], old: DirectionPlan, fixed: bool
) -> tuple[list[int], list[tuple[int, bytes]]] | None:
    """(slot per block, blocks to write) in the table `fd`, or None when they do not fit."""
    tops = _half_inner(dm, _outer("tops", fixed), half)
    if tops is None:
        return None
    otl = old.two_level()
    with B.Fd(tops[1]):
        now = _read_all(tops[1], C_SIZE["top"], len(otl.tops))  # the entries of `old`'s bitmaps
    if now is None:
        return None
    have: dict[bytes, int] = {}  # content -> slot, for what this half's entries point to
    for i, (_, blk) in enumerate(otl.tops):
        for bid, slot in zip(blk, _top_slots(now, i), strict=True):
            have[otl.blocks[bid]] = slot
    busy: set[int] = set()  # slots the other half may read
    other = _half_inner(dm, _outer("bitmaps", fixed), half ^ 1)
    if other is not None:
        os.close(other[1])
        if other[0] == mid:
            otops = _half_inner(dm, _outer("tops", fixed), half ^ 1)
            if otops is not None:
                with B.Fd(otops[1]):
                    # All of them, not only its plan's: a slot named anywhere is not taken.
                    busy = _all_slots(_read_all(otops[1], C_SIZE["top"]) or b"")
    slots: list[int] = []
    writes: list[tuple[int, bytes]] = []
    kept = {have[b] for b in blocks if b in have}
    cap = B.map_info(fd).max_entries
    free = (s for s in range(cap) if s not in busy and s not in kept)
    for b in blocks:
        at = have.get(b)
        if at is None:
            at = next(free, None)
            if at is None:
                return None
            writes.append((at, b))
        slots.append(at)
    return slots, writes


def _write_tops(
    dm: Maps, half: int, inner: Inner, old: DirectionPlan | None, fixed: bool
) -> tuple[int | None, int]:
    """Make the half's top entries inner.tops: (fd of a fresh table or None, entries written)."""
    new = inner.tops
    cur = _half_inner(dm, _outer("tops", fixed), half) if old is not None else None
    if cur is not None:
        with B.Fd(cur[1]) as fd:
            if B.map_info(fd).max_entries >= len(new):
                return None, _write_differing(fd, 0, new)
    fresh = _inner_map(
        "xg_tops",
        C_SIZE["top"],
        new,
        _HEADROOM * len(new) + 16,
        fixed=inner.fixed_entries("tops", fixed),
    )
    inner.extra.append(fresh)
    return fresh, len(new)


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
    if inner.sizes is None:
        inner.sizes = read_fix_sizes(dm)
    # Until the final config write, this half holds no plan we could name:
    # a crash in between must not leave it looking like `old`.
    cfg = read_config(dm, half)
    # Which size class `old`'s tables are in: its config says (a half written
    # by a version without the fixed-size tables has none there).
    held = cfg.flags if old is not None else 0
    if cfg.plan_hash:
        cfg.plan_hash = 0
        B.map_update(dm["config"], _u32(half), bytes(cfg))

    addrs: dict[int, int] = {}
    addrs_f: dict[int, int] = {}
    where = 0  # where this half's tables are: XG_CFG_FIXA per address table, XG_CFG_FIXED
    for name, f, v6 in ADDR_ENTRIES:
        bit = abi.cfg_fixa(f.num, v6)
        if old is not None and getattr(old, name) == getattr(d, name):
            where |= held & bit
            continue  # the half's table already holds these entries
        if name not in inner.addrs:
            n_elems, how = _build_addr_table(inner, d, name, f, v6, old)
            st.addr_tables += 1
            st.addr_nodes += n_elems
            st.addr_reused += how == "cached"
            st.addr_patched += how == "patched"
        if inner.addr_fixed[name]:
            where |= bit
            addrs_f[abi.addr_table(half, f.num, v6)] = inner.addrs[name]
        else:
            addrs[abi.addr_table(half, f.num, v6)] = inner.addrs[name]

    for f in KEYED_FIELDS:
        if old is not None and getattr(old, f.pin) == getattr(d, f.pin):
            continue  # the half's array already holds these indexes
        st.array_updates += _write_array(
            dm[f.pin], half, f.space, keyed_array(f, d), keyed_array(f, old) if old is not None else None
        )

    # Bitmaps: blocks placed once per plan (shared), top entries per half,
    # in the tables of the plan's size class.  What the half holds is only
    # a base to write differences against when it is in the same class.
    fixed = uses_fixed(d, inner.sizes)
    if fixed:
        where |= abi.CFG_FIXED
    same = old if old is not None and bool(held & abi.CFG_FIXED) == fixed else None
    if inner.blocks is None:
        st.blocks = _place_blocks(dm, half, d, same, inner, fixed)
        inner.tops = [top_bytes(g, [inner.slots[b] for b in blk]) for g, blk in d.two_level().tops]
    tops_fd, st.bitmaps = _write_tops(dm, half, inner, same, fixed)
    # Read once the config below names the plan.
    st.array_updates += write_words(dm, half, d)
    st.blocks += write_pflat(dm, half, d)
    flat_fd = None
    flat_fixed = uses_fixed_flat(d, inner.sizes)
    if flat_fixed:
        where |= abi.CFG_FIXFLAT
    if d.ngroups == 1 and not _flat_holds(
        dm, half, old if bool(held & abi.CFG_FIXFLAT) == flat_fixed else None, d, flat_fixed
    ):
        if inner.flat is None:
            inner.flat = _inner_map(
                "xg_flat",
                C_SIZE["bitmap"],
                flat_blocks(d),
                fixed=inner.fixed_entries("blocks", flat_fixed),
            )
            st.blocks += d.nbitmaps
        flat_fd = inner.flat
    if d.rules:
        if inner.rules is None:
            flags = state_flags(d)
            inner.rules = [rule_bytes(r, slots[r.rule_id], flags[r.index]) for r in d.rules]
        # Compared with what the half holds (a new map holds zeros): only entries that differ are written.
        _write_differing(dm["rules"], half * abi.MAX_RULES, inner.rules)
    assert inner.blocks is not None
    hw = HalfWrite(
        half,
        inner.blocks,
        tops_fd,
        flat_fd,
        addrs,
        config_bytes(plan, d, where),
        dynsets.dyncfg_bytes(plan, d),
        dynsets.slot_writes(dm, half, plan),
        fixed,
        addrs_f,
        flat_fixed,
    )
    if commit:
        commit_halves(dm, [hw])
    return st, hw


def _flat_holds(dm: Maps, half: int, old: DirectionPlan | None, d: DirectionPlan, fixed: bool) -> bool:
    """Does the half's flat table already hold `d`'s blocks?  It holds those
    of `old`, the plan the half holds, and a change that leaves every bitmap
    as it was (an action, a limit) need not build a new one: a new inner
    map costs a grace period to swap in.  `fixed`: the table is in flat_f."""
    return (
        old is not None
        and old.ngroups == 1
        and slot_filled(dm[_outer("flat", fixed)], half)
        and group0_blocks(old) == group0_blocks(d)
    )


def write_words(dm: Maps, half: int, d: DirectionPlan) -> int:
    """Give `half` the `words` entries of `d` (if it uses them); returns the writes.

    Compared with what the map holds, not with the plan the half held
    before: a map that the programs have just created holds zeros.
    """
    if not uses_words(d):
        return 0
    base = half * abi.WORDS_CAP
    return _write_differing(dm["words"], base, [w.to_bytes(8, "little") for w in bitmap_words(d)])


def write_pflat(dm: Maps, half: int, d: DirectionPlan) -> int:
    """Give `half` its blocks in `pflat` (if `d` uses them); returns the blocks written.

    The half's value is written in place, as the words are (packets read
    this half only once its config names the plan), and only when it
    differs from what the map holds (a map the programs just created holds
    zeros).
    """
    if not uses_pflat(d):
        return 0
    size = abi.PFLAT_CAP * C_SIZE["bitmap"]
    blocks = flat_blocks(d)
    value = b"".join(blocks).ljust(size, b"\0")
    now = B.map_lookup(dm["pflat"], _u32(half), size)
    if now == value:
        return 0
    B.map_update(dm["pflat"], _u32(half), value)
    return len(_differing(now or bytes(size), blocks))


def fill_in_place(dm: Maps, plan: Plan) -> int:
    """Give every half that holds `plan` its `words` and `pflat` entries.

    Before new programs replace old ones: if either map is new (pinned by
    a version without it), a half whose config says it uses it must find
    its entries there before any packet reads it.
    """
    n = 0
    for d in plan.directions():
        for ver in range(abi.NVERSIONS):
            half = half_of(d.name, ver)
            if read_config(dm, half).plan_hash == plan.hash64:
                n += write_words(dm, half, d) + write_pflat(dm, half, d)
    return n


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
                for name, f, v6 in ADDR_ENTRIES:
                    slot = abi.addr_table(half_of(d.name, ver), f.num, v6)
                    if slot_filled(dm["addrs"], slot) or slot_filled(dm["addrs_f"], slot):
                        continue
                    if name not in inner[d.name].addrs:
                        _build_addr_table(inner[d.name], d, name, f, v6, None)
                    slots[slot] = inner[d.name].addrs[name]
        if slots:  # one call: each map-in-map update call waits out a grace period
            B.map_update_batch(dm["addrs"], [_u32(s) for s in slots], [_u32(fd) for fd in slots.values()])
    finally:
        for i in inner.values():
            i.close()
    return len(slots)


def _moved_slots(outer_fd: int, new: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (slot, inner fd) pairs whose slot does not hold that inner map
    already (a lookup gives the id of the map a slot holds)."""
    out = []
    for slot, fd in new:
        now = B.map_lookup(outer_fd, _u32(slot), 4)
        if now is None or int.from_bytes(now, "little") != B.map_info(fd).id:
            out.append((slot, fd))
    return out


def commit_halves(dm: Maps, halves: list[HalfWrite]) -> None:
    """Point each half at its inner maps, then write its config (which names its plan).

    The outer-map slots go in one batch per outer map: the kernel waits out
    an RCU grace period after every map-in-map update call, so one call
    instead of one per half saves a grace period (~10 ms) each, and a slot
    that already holds its inner map is not written at all.
    """
    for outer, new in (
        ("addrs", [(s, fd) for hw in halves for s, fd in sorted(hw.addrs.items())]),
        ("addrs_f", [(s, fd) for hw in halves for s, fd in sorted(hw.addrs_f.items())]),
        ("tops", [(hw.half, hw.tops) for hw in halves if hw.tops is not None and not hw.fixed]),
        ("tops_f", [(hw.half, hw.tops) for hw in halves if hw.tops is not None and hw.fixed]),
        ("flat", [(hw.half, hw.flat) for hw in halves if hw.flat is not None and not hw.flat_fixed]),
        ("flat_f", [(hw.half, hw.flat) for hw in halves if hw.flat is not None and hw.flat_fixed]),
        ("bitmaps", [(hw.half, hw.bitmaps) for hw in halves if not hw.fixed]),
        ("bitmaps_f", [(hw.half, hw.bitmaps) for hw in halves if hw.fixed]),
    ):
        new = _moved_slots(dm[outer], new)
        if new:
            B.map_update_batch(dm[outer], [_u32(h) for h, _ in new], [_u32(fd) for _, fd in new])
    # A table that moved to the other size class leaves its old slot: the
    # half no longer reads it (its config, written below, says where), and
    # the slot would keep the old inner map alive.
    for outer, slot in (
        *(
            (_outer("addrs", fixed), s)
            for hw in halves
            for fixed, tbl in ((False, hw.addrs_f), (True, hw.addrs))
            for s in tbl
        ),
        *((_outer(k, not hw.fixed), hw.half) for hw in halves for k in ("tops", "bitmaps")),
        *((_outer("flat", not hw.flat_fixed), hw.half) for hw in halves),
    ):
        if slot_filled(dm[outer], slot):
            B.map_delete(dm[outer], _u32(slot))
    dynsets.commit_slots(dm, [hw.dyn_slots for hw in halves])
    for hw in halves:
        B.map_update(dm["dyncfg"], _u32(hw.half), hw.dyncfg)
    for hw in halves:
        B.map_update(dm["config"], _u32(hw.half), hw.config)


# --------------------------------------------------------------------------
# reading back


def read_config(dm: Maps, half: int) -> abi.Config:
    raw = B.map_lookup(dm["config"], _u32(half), C_SIZE["config"])
    return abi.Config.from_buffer_copy(raw) if raw else abi.Config()


def _recorded_sizes(fd: int) -> FixSizes | None:
    """What the `fixsize` map (fd) holds, or None while it holds no sizes."""
    raw = B.map_lookup(fd, _u32(0), ctypes.sizeof(abi.FixSize))
    fs = abi.FixSize.from_buffer_copy(raw) if raw else abi.FixSize()
    return FixSizes(fs.tops, fs.blocks, fs.nodes) if fs.tops and fs.blocks and fs.nodes else None


def read_fix_sizes(dm: Maps) -> FixSizes | None:
    """The fixed sizes the interface's programs were built with, or None
    when none is recorded (then no table is made in a fixed size)."""
    return _recorded_sizes(dm["fixsize"])


def fix_sizes_for(pin_dir: str, plan: Plan) -> FixSizes:
    """The fixed sizes to build an interface's programs with: those its
    pinned maps were made with (a pinned outer map keeps the inner size it
    was created for), else those `plan` calls for (compile.fix_sizes)."""
    path = os.path.join(pin_dir, "fixsize")
    if os.path.exists(path):
        with B.Fd(B.obj_get(path)) as fd:
            recorded = _recorded_sizes(fd)
        if recorded is not None:
            return recorded
    return fix_sizes(plan)


def record_fix_sizes(pin_dir: str, sizes: FixSizes) -> None:
    """Write the sizes the programs were just built with into `fixsize`, unless it holds some."""
    with B.Fd(B.obj_get(os.path.join(pin_dir, "fixsize"))) as fd:
        if _recorded_sizes(fd) is None:
            B.map_update(fd, _u32(0), bytes(abi.FixSize(sizes.tops, sizes.blocks, sizes.nodes, 0)))


def outgrown_note(dm: Maps, plan: Plan) -> list[str]:
    """A line for each direction whose bitmaps outgrew the fixed-size tables
    the interface's programs were built with (and so are read from tables
    sized to the plan, at a higher cost per packet)."""
    sizes = read_fix_sizes(dm)
    if sizes is None:
        return []
    out = []
    for d in plan.directions():
        if d.ngroups > 1:
            outgrown = not uses_fixed(d, sizes)
        else:  # one group: a flat table of more bitmaps than blocks (fewer go to `pflat` or flat_f)
            outgrown = d.ngroups == 1 and d.nbitmaps > sizes.blocks
        if not outgrown:
            continue
        tl = d.two_level()
        what = (
            f"{len(tl.tops):,} bitmaps in {len(tl.blocks):,} blocks"
            if d.ngroups > 1
            else f"{d.nbitmaps:,} bitmaps"
        )
        out.append(
            f"{d.name}: the rule set's {what} outgrew the fixed-size tables this interface's "
            f"programs were built with ({sizes.tops:,} top entries, {sizes.blocks:,} blocks): "
            "they are read from tables sized to the rule set, at a higher cost per packet; "
            "`xdpguard detach` then `apply` builds the programs for this size"
        )
    return out


def size_classes(dm: Maps, half: int) -> dict[str, bool]:
    """Which of a half's tables its config says are in the fixed-size maps:
    "bitmaps" (its top entries and blocks) and each address table by name."""
    flags = read_config(dm, half).flags
    out = {"bitmaps": bool(flags & abi.CFG_FIXED), "flat": bool(flags & abi.CFG_FIXFLAT)}
    for name, f, v6 in ADDR_ENTRIES:
        out[name] = bool(flags & abi.cfg_fixa(f.num, v6))
    return out


def misplaced_tables(dm: Maps, half: int) -> list[str]:
    """The outer slots of a half that disagree with its config: the slot
    where it says a table is but is empty, or the other size class's slot,
    which it does not read, still holding a map.  [] when all is in place."""
    bad = []
    slots_of = {
        "bitmaps": [("tops", half), ("bitmaps", half)],
        "flat": [("flat", half)],
        **{name: [("addrs", abi.addr_table(half, f.num, v6))] for name, f, v6 in ADDR_ENTRIES},
    }
    for name, fixed in size_classes(dm, half).items():
        for outer, slot in slots_of[name]:
            # (A plan of several groups reads no flat table: the sized one may be empty.)
            if (outer != "flat" or fixed) and not slot_filled(dm[_outer(outer, fixed)], slot):
                bad.append(f"{_outer(outer, fixed)}[{slot}] empty")
            if slot_filled(dm[_outer(outer, not fixed)], slot):
                bad.append(f"{_outer(outer, not fixed)}[{slot}] filled")
    return bad


def read_rules(dm: Maps, half: int, nrules: int) -> list[abi.RuleEntry]:
    if nrules == 0:
        return []
    raw = B.map_lookup_range(dm["rules"], half * abi.MAX_RULES, min(nrules, abi.MAX_RULES), C_SIZE["rule"])
    return [abi.RuleEntry.from_buffer_copy(r) for r in raw]


def read_rule_slots(dm: Maps, half: int, nrules: int) -> list[tuple[int, int]]:
    """(rule id, counter slot) of each of a half's rules: what slot allocation
    needs of them, read column by column rather than as an object per rule."""
    if nrules == 0:
        return []
    size = C_SIZE["rule"]
    raw = B.map_lookup_array(dm["rules"], half * abi.MAX_RULES, min(nrules, abi.MAX_RULES), size)
    # struct xg_rule starts with the u64 rule id and the u32 slot, and is a whole number of u64s.
    words = memoryview(raw).cast("Q")
    step = size // 8
    ids = words[0::step].tolist()
    slots = [w & 0xFFFFFFFF for w in words[1::step].tolist()]
    return list(zip(ids, slots, strict=True))


def _slot_key(direction: str, slot: int) -> bytes:
    return _u32(abi.DIR_INDEX[direction] * abi.MAX_SLOTS + slot)


def read_counters(dm: Maps, direction: str, slots: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """Per slot (packets, bytes, over-limit packets, over-limit bytes) summed over CPUs."""
    vsize = C_SIZE["counter"]
    psize = B.percpu_value_size(vsize)
    out = {}
    span: dict[int, bytes] = {}
    if len(slots) > 64:  # one range of batch reads rather than a syscall per slot
        lo, hi = min(slots), max(slots)
        base = abi.DIR_INDEX[direction] * abi.MAX_SLOTS
        span = dict(
            zip(
                range(lo, hi + 1),
                B.map_lookup_range(dm["counters"], base + lo, hi - lo + 1, psize),
                strict=True,
            )
        )
    for s in slots:
        raw = span[s] if span else B.map_lookup(dm["counters"], _slot_key(direction, s), psize)
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


def zero_counters(dm: Maps, direction: str, slots: list[int]) -> None:
    """Fresh counters for newly taken slots, and a full per-rule bucket (the slot indexes both)."""
    if not slots:
        return
    keys = [_slot_key(direction, s) for s in slots]
    zero = bytes(B.percpu_value_size(C_SIZE["counter"]))
    B.map_update_batch(dm["counters"], keys, [zero] * len(slots))
    B.map_update_batch(dm["rule_tat"], keys, [bytes(C_SIZE["bucket"])] * len(slots))


def _zero_array(fd: int, n: int, value_size: int, chunk: int = 65536) -> None:
    zero = bytes(value_size)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        B.map_update_batch(fd, [_u32(i) for i in range(start, stop)], [zero] * (stop - start))


def ensure_limiter_key(dm: Maps) -> None:
    """Give the per-source hash its random key, once: a new key would orphan every slot."""
    raw = B.map_lookup(dm["limiter"], _u32(0), C_SIZE["limiter"])
    lim = abi.Limiter.from_buffer_copy(raw) if raw else abi.Limiter()
    if lim.key[0] or lim.key[1]:
        return
    k0, k1 = struct.unpack("<QQ", os.urandom(16))
    lim.key[0], lim.key[1] = k0 | 1, k1  # never all zero: zero means "not written yet"
    B.map_update(dm["limiter"], _u32(0), bytes(lim))


def reset_limiter(dm: Maps, limit_table_size: int) -> None:
    """Forget all rate-limit state (full buckets, no blocks); the hash key stays."""
    _zero_array(dm["rule_tat"], abi.NDIRS * abi.MAX_SLOTS, C_SIZE["bucket"])
    _zero_array(dm["src_slots"], abi.src_lines(limit_table_size), C_SIZE["src_line"])
    _zero_array(dm["src_sketch"], limit_table_size, C_SIZE["bucket"])
    _zero_array(dm["block_filter"], abi.BLOCK_FILTER_CELLS, 8)
    _zero_array(dm["src_debt"], abi.SRC_DEBT_CELLS, 8)
    keys = [k for k, _ in B.map_lookup_batch(dm["blocked"], C_SIZE["block_key"], C_SIZE["block"])]
    if keys:
        B.map_delete_batch(dm["blocked"], keys)


def block_prefix_len(family: int) -> int:
    """What block_for blocks: an IPv4 address, or the /64 an IPv6 address is in."""
    return 32 if family == 4 else abi.BLOCK_V6_PLEN


def _block_key(family: int, addr: int) -> bytes:
    k = abi.BlockKey()
    k.family = family
    bits = 32 if family == 4 else 128
    keep = block_prefix_len(family)
    addr &= ((1 << keep) - 1) << (bits - keep)
    raw = addr.to_bytes(bits // 8, "big")
    for i, b in enumerate(raw):
        k.addr[i] = b
    return bytes(k)


def unblock(dm: Maps, family: int, addr: int) -> bool:
    """Lift the block on an address (for IPv6, on the /64 it is in)."""
    return B.map_delete(dm["blocked"], _block_key(family, addr))


def read_blocked(dm: Maps, plan: Plan | None) -> list[dict[str, object]]:
    """Blocked sources still in force, with seconds left and the rule that blocked them."""
    names = {r.rule_id: r.name for d in plan.directions() for r in d.rules} if plan else {}
    now = time.monotonic_ns()
    out: list[dict[str, object]] = []
    for k, v in B.map_lookup_batch(dm["blocked"], C_SIZE["block_key"], C_SIZE["block"]):
        key = abi.BlockKey.from_buffer_copy(k)
        val = abi.Block.from_buffer_copy(v)
        if val.until_ns <= now:
            continue
        raw = bytes(key.addr)
        source = (
            str(ipaddress.ip_address(raw[:4]))
            if key.family == 4
            else str(ipaddress.ip_network((raw, block_prefix_len(6))))
        )
        out.append(
            {
                "source": source,
                "seconds_left": round((val.until_ns - now) / 1e9, 1),
                "rule": names.get(val.rule_id, f"{val.rule_id:016x}"),
            }
        )
    return sorted(out, key=lambda b: str(b["source"]))


def src_slots_held(dm: Maps, now: int) -> int:
    """Slots of the per-source table that hold a source at `now` (the program's
    clock): taken, and their owner not idle for its grace yet.  The rest are
    free for the next new source; this is the negation of xg_slot_free in
    bpf/xdpguard.c.  Reads the table in place (it is BPF_F_MMAPABLE)."""
    import numpy as np  # lazy: only `stats` and the exporter count the slots

    fd = dm["src_slots"]
    nbytes = B.map_info(fd).max_entries * C_SIZE["src_line"]
    try:
        with B.mapped(fd, nbytes) as mm:
            # The view dies with the call: the mapping cannot close while one lives.
            return _count_held(np.frombuffer(mm, dtype=np.uint64, count=nbytes // 8), now)
    except B.BpfError as e:
        raise KernelError(f"cannot read the per-source rate-limit table: {e.sentence}") from e


def _count_held(words: np.ndarray, now: int) -> int:
    """Held slots among the table's 8-byte words (each slot a struct
    xg_src_slot: its tag and TAT words where abi.SrcSlot puts them), in
    pieces of 2 MiB, so that a table of 16M slots never needs more at once."""
    import numpy as np  # lazy: see src_slots_held

    stride = ctypes.sizeof(abi.SrcSlot) // 8
    tag, tat = abi.SrcSlot.tag.offset // 8, abi.SrcSlot.tat.offset // 8
    piece = stride << 17
    held = 0
    for i in range(0, len(words), piece):
        w = words[i : i + piece]
        held += int(np.count_nonzero(slots_held(w[tag::stride], w[tat::stride], now)))
    return held


def slots_held(tag: np.ndarray, tat: np.ndarray, now: int) -> np.ndarray:
    """Which slots (numpy arrays of their tag and TAT words) hold a source at
    `now`: the negation of xg_slot_free in bpf/xdpguard.c, bit for bit.  A
    slot is free when never used (tag 0) or when its owner has been idle
    (TAT in the past) for at least the grace its tag's low bits name."""
    import numpy as np  # lazy: see src_slots_held

    t = np.uint64(now)
    grace = np.left_shift(np.uint64(1), tag & np.uint64((1 << abi.TAG_GRACE_BITS) - 1))
    return (tag != 0) & ((tat > t) | (t - tat < grace))  # t - tat wraps only where tat > t


def flow_table_fill(dm: Maps) -> int:
    """Entries in the flow table (expired ones included until the LRU reuses them)."""
    return len(B.map_lookup_batch(dm["flows"], C_SIZE["flow_key"], C_SIZE["flow"]))


@dataclass(frozen=True)
class FlowEntry:
    """One flow as this host sees it: `local` is this host's side (addresses packed)."""

    proto: int
    local: bytes  # 4 or 16 bytes
    remote: bytes
    lport: int  # for ICMP echo: the identifier as it is on the wire; rport 0
    rport: int


def flow_key(fl: FlowEntry) -> bytes:
    """The flow table key the egress program builds (xg_flow_key in bpf/lib/flow.h)."""
    k = abi.FlowKey(family=4 if len(fl.local) == 4 else 6, proto=fl.proto, lport=fl.lport, rport=fl.rport)
    k.laddr[: len(fl.local)] = list(fl.local)
    k.raddr[: len(fl.remote)] = list(fl.remote)
    return bytes(k)


def add_flows(dm: Maps, flows: list[FlowEntry], now_ns: int) -> int:
    """Record flows as the egress program would have (last seen now_ns); returns how many.

    Used for connections opened before the programs were attached (their
    first packets went out unseen) and by the test harness.
    """
    if flows:
        keys = [flow_key(fl) for fl in flows]
        B.map_update_batch(dm["flows"], keys, [bytes(abi.Flow(last_seen_ns=now_ns))] * len(keys))
    return len(flows)


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
    rules_now: list[tuple[int, int]], rules_other: list[tuple[int, int]], wanted: list[int]
) -> tuple[dict[int, int], list[int]]:
    """Counter slots for the rule ids in `wanted`: keep the live ones, take free ones for new.

    `rules_now` and `rules_other` are the (rule id, slot) pairs of the live
    half and of the other one (read_rule_slots).  Returns (rule id -> slot,
    slots newly taken, to be zeroed before use).
    """
    live = {rid: slot for rid, slot in rules_now if slot >= abi.SLOT_FIRST_RULE}
    used = set(live.values()) | {slot for _, slot in rules_other if slot >= abi.SLOT_FIRST_RULE}
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
