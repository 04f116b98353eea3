"""Rule set -> map plan: what the fixed BPF programs will find in their maps.

Pure and deterministic: the same RuleSet always yields a byte-identical
plan (`Plan.to_bytes()`) and therefore the same content hash.  No kernel,
no root.  The datapath writes a plan into maps; `classify.py` runs a plan
the way the BPF program does, so the compiler is checked against the
reference semantics without a kernel.

Bit-vector scheme: rule i is bit i of a bitmap (file order, so the lowest
set bit is the first matching rule).  Each match field maps a packet value
to the bitmap of rules that value satisfies; bitmaps are deduplicated per
field into a sorted table and maps store the table index.  Sorting by value
keeps indexes stable when an edit does not touch a field, so an update
rewrites only the entries whose bitmap really changed.

A bitmap is cut into groups of GROUP_RULES rules (`blocks`): the kernel
keeps each distinct block once and a top entry per bitmap naming its
non-empty groups' blocks (`two_level`); the plan's canonical bytes use the
same form, so a 65,536-rule plan is not a table of 8 KiB bitmaps.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from xdpguard.errors import RuleError
from xdpguard.rules import limits, lpmpack, lpmwalk
from xdpguard.rules.abi_consts import (
    F_EXTRA,
    FIX_BLOCKS_MIN,
    FIX_NODES,
    FIX_TOPS_MIN,
    GROUP_RULES,
    GROUP_WORDS,
    LIMIT_BPS,
    LIMIT_PPS,
    MAX_BITMAPS,
    MAX_BLOCKS,
    MAX_DYNGROUPS,
    MAX_DYNREFS,
    PFLAT_CAP,
    TFLAGS_SIZE,
    Bitmap,
    RuleEntry,
    Top,
)
from xdpguard.rules.fields import (
    ADDR,
    ADDR_ENTRIES,
    ADDR_FIELDS,
    ARRAY,
    FIELD_NAMES,
    FIELDS,
    KEYED_FIELDS,
    Field,
    icmp_key,
)
from xdpguard.rules.model import (
    IPPROTO_ICMPV6,
    Action,
    AddrMatch,
    Direction,
    IcmpMatch,
    Match,
    Mode,
    PortRange,
    Prefix,
    RateLimit,
    Rule,
    RuleSet,
    State,
    TcpFlags,
)

GROUP_BYTES = GROUP_RULES // 8

# An interval table: (lo, hi, table index) covering the whole key space in order.
Intervals = tuple[tuple[int, int, int], ...]
# LPM entries: (network address, prefix length, table index), sorted.
LpmEntries = list[tuple[int, int, int]]


@dataclass(frozen=True)
class LpmArrays:
    """A large IPv4 field's entries as columns: sorted keys (address << 8 |
    length) and bitmap ids (lpmwalk.column_v4)."""

    keys: Any  # numpy uint64
    bids: Any  # numpy int64

    def packed(self, rank: list[int]) -> lpmpack.PackedLpm:
        """The entries with bitmap id i at table index rank[i], serialised."""
        import numpy as np  # lazy: large fields only

        rec = np.empty(len(self.keys), dtype=lpmpack.record_dtype(32))
        rec["a"] = self.keys >> np.uint64(8)
        rec["p"] = self.keys & np.uint64(0xFF)
        rec["v"] = np.asarray(rank, dtype=np.uint32)[self.bids]
        return lpmpack.PackedLpm(rec.tobytes(), 32)


LpmColumn = LpmEntries | LpmArrays


def rule_id(direction: str, name: str) -> int:
    """Stable 64-bit id for a rule: counters and limiter state are keyed by it."""
    digest = hashlib.blake2b(f"{direction}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


NSEC = limits.NSEC


@dataclass(frozen=True)
class LimitPlan:
    """A rate limit in the units the program uses (GCRA in nanoseconds, see rules/limits.py)."""

    kind: int  # LIMIT_PPS | LIMIT_BPS
    rate: int  # bits per second; packets per second rounded up (pps limits run on cost_ns alone)
    cost_ns: int  # pps: ns per packet (bps: the program derives it from the length)
    burst_ns: int  # tolerance: the burst expressed in ns at the rate
    per_source: bool
    plen4: int
    plen6: int
    block_ns: int  # block_for, 0 for none
    grace_log2: int  # a source's slot outlives its TAT by 2^grace_log2 ns

    @classmethod
    def from_model(cls, rl: RateLimit) -> LimitPlan:
        per_source = rl.per != "rule"
        block = limits.block_ns(rl.block_for) if rl.block_for else 0
        if rl.pps is not None:
            cost = limits.pps_cost_ns(rl.pps)
            burst_ns = rl.burst * cost
            return cls(
                LIMIT_PPS,
                math.ceil(rl.pps),
                cost,
                burst_ns,
                per_source,
                rl.per_prefix_v4,
                rl.per_prefix_v6,
                block,
                limits.grace_log2(burst_ns, cost),
            )
        assert rl.bps is not None
        burst_ns = limits.bps_burst_ns(rl.burst, rl.bps)
        return cls(
            LIMIT_BPS,
            rl.bps,
            0,
            burst_ns,
            per_source,
            rl.per_prefix_v4,
            rl.per_prefix_v6,
            block,
            limits.grace_log2(burst_ns, math.ceil(limits.bps_cost_ns(limits.MTU_FRAME, rl.bps))),
        )

    def to_list(self) -> list[int]:
        return [
            self.kind,
            self.rate,
            self.cost_ns,
            self.burst_ns,
            int(self.per_source),
            self.plen4,
            self.plen6,
            self.block_ns,
            self.grace_log2,
        ]

    @classmethod
    def from_list(cls, v: list[int]) -> LimitPlan:
        if len(v) == 8:
            # Recorded by an xdpguard that kept block_for in seconds and had
            # no slot grace (plans in the history outlive an upgrade).
            cost = v[2] or math.ceil(limits.bps_cost_ns(limits.MTU_FRAME, v[1]))
            return cls(
                v[0], v[1], v[2], v[3], bool(v[4]), v[5], v[6], v[7] * NSEC, limits.grace_log2(v[3], cost)
            )
        return cls(v[0], v[1], v[2], v[3], bool(v[4]), v[5], v[6], v[7], v[8])


@dataclass(frozen=True)
class DynSetPlan:
    """A dynamic set the rule file declares; its slot is its position in Plan.dynsets."""

    name: str
    size: int  # the most elements it holds
    timeout_ns: int  # default lifetime of an element (0: none)


@dataclass(frozen=True)
class DynRef:
    """Rules of a direction refer to dynamic set `set` in address field `field`.

    `group` numbers the distinct bitmap of rules doing so in that field: a
    packet whose address is in the set turns that group's bit on, and the
    bitmap for the resulting mask of groups is ORed into the field's.
    """

    field: int  # F_SRC | F_DST
    set: str
    group: int


@dataclass(frozen=True)
class RulePlan:
    index: int
    name: str
    rule_id: int
    action: Action
    line: int
    limit: LimitPlan | None
    syn_cookies: bool = False


# A bitmap in two-level form: (groups, block ids), see TwoLevel.
Key = tuple[int, tuple[int, ...]]


_EMPTY_BLOCK = bytes(GROUP_BYTES)


class _Interner:
    """Turns bitmaps (ints) into two-level keys as they are made, keeping each
    distinct block once: a large rule set has many distinct bitmaps, and
    keeping them as ints (8 KiB each at 65,536 rules) would take gigabytes."""

    def __init__(self, ngroups: int) -> None:
        self.ngroups = ngroups
        self.ids: dict[bytes, int] = {}
        self.blocks: list[bytes] = []

    def key(self, bm: int) -> Key:
        raw = bm.to_bytes(self.ngroups * GROUP_BYTES, "little")
        groups, blk = 0, []
        g = 0
        # Most of a large set's bitmaps are sparse: an empty group is one memcmp.
        while g < self.ngroups:
            chunk = raw[g * GROUP_BYTES : (g + 1) * GROUP_BYTES]
            if chunk != _EMPTY_BLOCK:
                groups |= 1 << g
                bid = self.ids.get(chunk)
                if bid is None:
                    bid = self.ids[chunk] = len(self.blocks)
                    self.blocks.append(chunk)
                blk.append(bid)
            g += 1
        return groups, tuple(blk)

    def intern(self, chunk: bytes) -> int:
        """The id of a block given by its contents."""
        bid = self.ids.get(chunk)
        if bid is None:
            bid = self.ids[chunk] = len(self.blocks)
            self.blocks.append(chunk)
        return bid

    def value(self, k: Key) -> int:
        """The bitmap a key was made from."""
        groups, blk = k
        raw = bytearray(self.ngroups * GROUP_BYTES)
        it = iter(blk)
        for g in range(self.ngroups):
            if groups >> g & 1:
                raw[g * GROUP_BYTES : (g + 1) * GROUP_BYTES] = self.blocks[next(it)]
        return int.from_bytes(raw, "little")

    def order(self, k: Key) -> tuple[int, tuple[bytes, ...]]:
        """A sort key that depends only on the bitmap's contents."""
        return k[0], tuple(self.blocks[b] for b in k[1])


@dataclass(frozen=True)
class TwoLevel:
    """Bitmaps cut into groups of GROUP_RULES rules, each distinct block kept once.

    `tops[i]` is bitmap i's (groups, block ids): bit g of groups is set when
    group g has a rule, and the ids (one per set bit, lowest group first)
    index `blocks`, each GROUP_BYTES of little-endian words.  Blocks are
    numbered in order of first use, so the form is canonical.
    """

    tops: tuple[tuple[int, tuple[int, ...]], ...]
    blocks: tuple[bytes, ...]

    @classmethod
    def from_keys(cls, keys: list[Key], blocks: list[bytes]) -> TwoLevel:
        """Renumber an interner's keys canonically: blocks in order of first use."""
        ids: dict[int, int] = {}
        tops = []
        for groups, blk in keys:
            out = []
            for b in blk:
                c = ids.get(b)
                if c is None:
                    c = ids[b] = len(ids)
                out.append(c)
            tops.append((groups, tuple(out)))
        return cls(tuple(tops), tuple(blocks[b] for b in ids))

    def bitmap(self, i: int) -> int:
        groups, blk = self.tops[i]
        out, k = 0, 0
        while groups:
            g = (groups & -groups).bit_length() - 1
            out |= int.from_bytes(self.blocks[blk[k]], "little") << (g * GROUP_RULES)
            k += 1
            groups &= groups - 1
        return out


@dataclass
class DirectionPlan:
    name: str  # "ingress" | "egress"
    default: Action
    rules: tuple[RulePlan, ...]
    nwords: int
    tables: tuple[tuple[Key, ...], ...]  # per field: distinct bitmaps (two-level keys), in content order
    # Each match field's entries (rules/fields.py), named by Field.plan_attr or Field.pin.
    # Address entries: a list when compiled, a PackedLpm when decoded from a plan's bytes.
    src4: Sequence[tuple[int, int, int]]
    dst4: Sequence[tuple[int, int, int]]
    src6: Sequence[tuple[int, int, int]]
    dst6: Sequence[tuple[int, int, int]]
    proto: tuple[int, ...]  # 256 table indexes
    sport: Intervals
    dport: Intervals
    tflags: tuple[int, ...]  # 256 table indexes
    icmp: Intervals
    l4free_idx: int  # indexes into the EXTRA table
    est_idx: int
    new_idx: int
    ones_idx: int
    field_mask: int
    # Dynamic sets: which (field, set) pairs rules refer to, and per address
    # field (src, dst) the distinct rule bitmaps of those references.
    dyn_refs: tuple[DynRef, ...] = ()
    dyn_groups: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    # Rule 0 tests state and nothing else (`{state: established}` first, as
    # most edge rule files start): it is every packet's first candidate, so
    # the data plane asks the flow table before the scan instead of after.
    state_first: bool = False
    _two_level: TwoLevel | None = field(default=None, repr=False, compare=False)

    @property
    def cont(self) -> tuple[int, ...]:
        """Bit positions of the continue rules, ascending."""
        return tuple(r.index for r in self.rules if r.action == Action.CONTINUE)

    @property
    def nrules(self) -> int:
        return len(self.rules)

    def dyn_combos(self, fi: int) -> list[int]:
        """For address field fi (0 src, 1 dst): the OR of the groups in every
        membership mask, mask 0 (nothing to add) first; none when no rule
        refers to a dynamic set in the field."""
        return _dyn_combos(self.dyn_groups[fi])

    def dyn_base(self, fi: int) -> int:
        """Global bitmap index of field fi's mask-0 combination (they follow every table)."""
        base = sum(len(t) for t in self.tables)
        if fi == 1 and self.dyn_groups[0]:
            base += 1 << len(self.dyn_groups[0])
        return base

    @property
    def bases(self) -> tuple[int, ...]:
        out, acc = [], 0
        for t in self.tables:
            out.append(acc)
            acc += len(t)
        return tuple(out)

    @property
    def nbitmaps(self) -> int:
        return sum(len(t) for t in self.tables) + sum(1 << len(g) for g in self.dyn_groups if g)

    def all_bitmaps(self) -> list[int]:
        """Every bitmap in global-index order (the order of the top entries),
        the dynamic-set combinations last, as ints."""
        tl = self.two_level()
        return [tl.bitmap(i) for i in range(len(tl.tops))]

    @property
    def ngroups(self) -> int:
        return (self.nwords + GROUP_WORDS - 1) // GROUP_WORDS

    def two_level(self) -> TwoLevel:
        """The bitmaps as the kernel holds them: distinct blocks and a top entry per bitmap."""
        assert self._two_level is not None, "set when compiled or loaded"
        return self._two_level

    @property
    def uses_block(self) -> bool:
        return any(r.limit is not None and r.limit.block_ns for r in self.rules)

    @property
    def uses_state(self) -> bool:
        tbl = self.tables[F_EXTRA]
        return tbl[self.est_idx] != tbl[self.new_idx]

    @property
    def uses_syn_cookies(self) -> bool:
        return any(r.syn_cookies for r in self.rules)


@dataclass
class Plan:
    mode: Mode
    non_ip: Action
    ndp: str
    ingress: DirectionPlan
    egress: DirectionPlan
    tmo_tcp: int
    tmo_udp: int
    tmo_icmp: int
    flow_table_size: int
    limit_table_size: int
    dynsets: tuple[DynSetPlan, ...] = ()  # sorted by name: a set's slot is its index
    source: str = ""
    _bytes: bytes | None = field(default=None, repr=False, compare=False)

    def directions(self) -> tuple[DirectionPlan, DirectionPlan]:
        return (self.ingress, self.egress)

    def dynset_slot(self, name: str) -> int:
        return [s.name for s in self.dynsets].index(name)

    def to_bytes(self) -> bytes:
        """Canonical serialisation: the plan's identity (the source path is not part of it)."""
        if self._bytes is None:
            self._bytes = _serialise(self)
        return self._bytes

    @property
    def digest(self) -> str:
        # Kept once made: an apply asks a dozen times, and hashing a big plan takes milliseconds.
        d: str | None = self.__dict__.get("_digest")
        if d is None:
            d = self.__dict__["_digest"] = plan_digest(self.to_bytes())
        return d

    @property
    def hash64(self) -> int:
        """What the kernel config records of the plan (see digest_hash64)."""
        return digest_hash64(self.digest)


def plan_digest(raw: bytes) -> str:
    """The content hash of a plan's canonical bytes (`Plan.digest`): checks a
    recorded plan.bin against the digest recorded with it, without decoding it."""
    return hashlib.sha256(raw).hexdigest()


def digest_hash64(digest: str) -> int:
    """First 8 bytes of a plan digest, as a little-endian u64: the plan hash
    the kernel config holds.  Works from a recorded digest, no plan needed."""
    return int.from_bytes(bytes.fromhex(digest[:16]), "little")


# --------------------------------------------------------------------------
# compilation


def compile_ruleset(rs: RuleSet, reuse: Reuse | None = None) -> Plan:
    """The plan of a rule set.  With `reuse`, the fields it names are taken
    from the earlier plan instead of compiled again (see Reuse): the result
    is byte for byte the same."""
    base = _base_fields(reuse)
    dirs = []
    for dname, d in (("ingress", rs.ingress), ("egress", rs.egress)):
        dp = _compile_direction(dname, d, rs.source, base.get(dname))
        line = d.rules[0].line if d.rules else 1
        if dp.nbitmaps > MAX_BITMAPS:
            raise RuleError(
                rs.source,
                line,
                f"{dname}: the rules need {dp.nbitmaps} distinct rule bitmaps, more than the "
                f"limit of {MAX_BITMAPS}; merge rules that share addresses into sets",
            )
        nblocks = len(dp.two_level().blocks)
        if nblocks > MAX_BLOCKS:
            raise RuleError(
                rs.source,
                line,
                f"{dname}: the rules need {nblocks} distinct bitmap blocks, more than the "
                f"limit of {MAX_BLOCKS}; merge rules that share addresses into sets",
            )
        dirs.append(dp)
    return Plan(
        mode=rs.mode,
        non_ip=rs.non_ip,
        ndp=rs.ndp,
        ingress=dirs[0],
        egress=dirs[1],
        tmo_tcp=rs.state_timeouts.tcp,
        tmo_udp=rs.state_timeouts.udp,
        tmo_icmp=rs.state_timeouts.icmp,
        flow_table_size=rs.flow_table_size,
        limit_table_size=rs.limit_table_size,
        dynsets=tuple(
            DynSetPlan(s.name, s.size, round(s.timeout * NSEC) if s.timeout else 0)
            for s in sorted((s for s in rs.sets if s.dynamic), key=lambda s: s.name)
        ),
        source=rs.source,
    )


def _compile_direction(
    dname: str, d: Direction, source: str = "<rules>", base: _BaseDir | None = None
) -> DirectionPlan:
    rules = d.rules
    n = len(rules)
    allones = (1 << n) - 1
    nwords = (n + 63) // 64
    bits = _Interner((nwords + GROUP_WORDS - 1) // GROUP_WORDS)
    if base is not None and base.nwords != nwords:
        base = None  # a column of another length is not this one (Reuse never says so; still)
    reused = base.fields if base is not None else frozenset()

    rplans = tuple(
        RulePlan(
            i,
            r.name,
            rule_id(dname, r.name),
            r.action,
            r.line,
            LimitPlan.from_model(r.rate_limit) if r.rate_limit is not None else None,
            r.syn_cookies,
        )
        for i, r in enumerate(rules)
    )

    # Per field, the bitmap of every entry the plan keeps of it: each
    # address prefix (with an LPM entry naming its bitmap), each key of an
    # ARRAY field, each elementary interval of an INTERVALS field.
    lpms: dict[int, tuple[LpmColumn, LpmColumn]] = {}
    ivs: dict[int, list[tuple[int, int, Key]]] = {}
    bms: dict[int, list[Key]] = {}
    for f in FIELDS:
        if f.num in reused:
            continue
        if f.layout == ADDR:
            in4, in6, bms[f.num] = _lpm_field(rules, _condition(f), bits)
            lpms[f.num] = (in4, in6)
        elif f.layout == ARRAY:
            bms[f.num] = _array_field(rules, f, bits)
        else:
            ivs[f.num] = _interval_field(rules, f.space, _condition(f), _KEY_RANGES[f.name], bits)
            bms[f.num] = [b for _, _, b in ivs[f.num]]

    l4free = bits.key(_bits([i for i, r in enumerate(rules) if not r.match.has_l4]))
    est = bits.key(_bits([i for i, r in enumerate(rules) if r.match.state in (None, State.ESTABLISHED)]))
    new = bits.key(_bits([i for i, r in enumerate(rules) if r.match.state in (None, State.NEW)]))
    ones = bits.key(allones)

    # Deduplicate per field; each bitmap's index depends on its contents (see _place).
    t_extra = tuple(sorted({l4free, est, new, ones}, key=bits.order))
    tables = [t_extra]
    pos = [{b: i for i, b in enumerate(t_extra)}]  # per field: where each bitmap is
    for f in FIELDS:
        if f.num in reused:
            assert base is not None
            tables.append(base.table(f.num, bits))
            pos.append({})  # not needed: the entries come from the base too
            continue
        t, at = _place(sorted(set(bms[f.num]), key=bits.order), bits)
        tables.append(t)
        pos.append(at)

    field_mask = 0
    for fld, t in enumerate(tables):
        if fld != F_EXTRA and t != (ones,):
            field_mask |= 1 << fld
    # What the plan keeps of each field, by attribute (Field.pin, Field.plan_attr).
    entries: dict[str, Any] = {}
    for f in FIELDS:
        at = pos[f.num]
        if f.num in reused:
            assert base is not None
            entries.update(base.entries(f))
        elif f.layout == ADDR:
            rank = [at[b] for b in bms[f.num]]
            for fam, lpm in enumerate(lpms[f.num]):
                if isinstance(lpm, LpmArrays):
                    entries[f.plan_attr(fam == 1)] = lpm.packed(rank)
                else:
                    entries[f.plan_attr(fam == 1)] = [(a, plen, rank[i]) for a, plen, i in lpm]
        elif f.layout == ARRAY:
            entries[f.pin] = tuple(at[b] for b in bms[f.num])
        else:
            entries[f.pin] = tuple((lo, hi, at[b]) for lo, hi, b in ivs[f.num])
    dyn_refs: list[DynRef] = []
    dyn_groups: list[tuple[int, ...]] = []
    for f in ADDR_FIELDS:
        refs, groups = _dyn_field(rules, _condition(f), f.num, dname, source)
        dyn_refs += refs
        dyn_groups.append(groups)
    # The dynamic-set combinations are top entries after every table's.
    combos = [bits.key(c) for groups in dyn_groups for c in _dyn_combos(groups)]
    two = TwoLevel.from_keys([k for t in tables for k in t] + combos, bits.blocks)
    canon = iter(two.tops)

    return DirectionPlan(
        name=dname,
        default=d.default,
        rules=rplans,
        nwords=nwords,
        tables=tuple(tuple(next(canon) for _ in t) for t in tables),
        **entries,
        l4free_idx=pos[F_EXTRA][l4free],
        est_idx=pos[F_EXTRA][est],
        new_idx=pos[F_EXTRA][new],
        ones_idx=pos[F_EXTRA][ones],
        field_mask=field_mask,
        dyn_refs=tuple(dyn_refs),
        dyn_groups=(dyn_groups[0], dyn_groups[1]),
        state_first=bool(rules)
        and rules[0].match.state is not None
        and rules[0].match == Match(state=rules[0].match.state),
        _two_level=two,
    )


def _dyn_combos(groups: tuple[int, ...]) -> list[int]:
    """The OR of the groups in every membership mask, mask 0 first; [] for no groups."""
    out = []
    for mask in range(1 << len(groups)) if groups else ():
        bm = 0
        for g, v in enumerate(groups):
            if mask >> g & 1:
                bm |= v
        out.append(bm)
    return out


def _condition(f: Field) -> Callable[[Rule], Any]:
    """A rule's condition on field f: None for none (any value)."""
    return attrgetter(f"match.{f.match}")  # in C: called for every rule of every field


def _dyn_field(
    rules: tuple[Rule, ...], get: Callable[[Rule], AddrMatch | None], fld: int, dname: str, source: str
) -> tuple[list[DynRef], tuple[int, ...]]:
    """References to dynamic sets in one address field, and the field's groups.

    The static tables treat a dynamic set as empty; the rules referring to
    set S are then added per packet when the address is in S.  Sets that the
    very same rules refer to share a group, so the number of groups (and of
    precompiled combinations, 2**groups - 1) stays small.
    """
    by_set: dict[str, int] = {}
    for i, r in enumerate(rules):
        am = get(r)
        for name in am.dynamic if am is not None else ():
            by_set[name] = by_set.get(name, 0) | (1 << i)
    groups = tuple(sorted(set(by_set.values())))
    if len(groups) > MAX_DYNGROUPS:
        # Point at the first rule of the first group past the limit, in file order.
        firsts = sorted(min(r.line for i, r in enumerate(rules) if g >> i & 1) for g in groups)
        line = firsts[MAX_DYNGROUPS]
        raise RuleError(
            source,
            line,
            f"{dname}: rules refer to dynamic sets in {FIELD_NAMES[fld]} in {len(groups)} different "
            f"ways, more than the limit of {MAX_DYNGROUPS}; let rules that block the same feed share one set",
        )
    if len(by_set) > MAX_DYNREFS:  # (a rule file declares at most MAX_DYNSETS, the same number)
        first = next(r for r in rules if (am := get(r)) is not None and am.dynamic)
        raise RuleError(
            source,
            first.line,
            f"{dname}: rules refer to {len(by_set)} dynamic sets in {FIELD_NAMES[fld]}, "
            f"more than the limit of {MAX_DYNREFS}",
        )
    gid = {g: i for i, g in enumerate(groups)}
    refs = [DynRef(fld, name, gid[bm]) for name, bm in sorted(by_set.items())]
    return refs, groups


# Tables up to this size are simply sorted; larger ones are hashed (see _place).
_SMALL_TABLE = 8
EMPTY: Key = (0, ())  # an unused slot of a hashed table (reads as the empty bitmap)


def _place(keys: list[Key], bits: _Interner) -> tuple[tuple[Key, ...], dict[Key, int]]:
    """A field's table: each distinct bitmap at an index that depends on its
    contents, so that an edit moves few of them.

    Sorted indexes would shift every bitmap after one that appears or goes,
    and every top entry and map value naming them would be rewritten.
    Instead the table is an open-addressed hash table (linear probing, at
    most 3/4 full, a power of two in size): a bitmap sits at or just after
    the slot its contents hash to, so an edit disturbs only its own probe
    run, and the size changes only when the table doubles or halves.
    Placement goes in (home slot, contents) order, so it depends only on
    the set of bitmaps: the plan stays a pure function of the rules.
    """
    if len(keys) <= _SMALL_TABLE:
        return tuple(keys), {k: i for i, k in enumerate(keys)}
    cap = 16
    while cap * 3 < len(keys) * 4:
        cap *= 2
    home = {}
    for k in keys:
        groups, blocks = bits.order(k)
        digest = hashlib.blake2b(groups.to_bytes(4, "little") + b"".join(blocks), digest_size=8).digest()
        home[k] = int.from_bytes(digest, "little") % cap
    slots: list[Key | None] = [None] * cap
    at: dict[Key, int] = {}
    for k in sorted(keys, key=lambda k: (home[k], bits.order(k))):
        i = home[k]
        while slots[i] is not None:
            i = (i + 1) % cap
        slots[i] = k
        at[k] = i
    return tuple(EMPTY if k is None else k for k in slots), at


def _bits(indexes: list[int]) -> int:
    """The bitmap with these bits set: one big int built once, not one per bit."""
    if not indexes:
        return 0
    raw = bytearray(max(indexes) // 8 + 1)
    for i in indexes:
        raw[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(raw, "little")


# An address field in which one condition (a set file, mostly) names at least
# this many IPv4 prefixes is walked by columns (lpmwalk.column_v4).  Fields of
# many small conditions (ClassBench's) are walked faster one prefix at a time.
COLUMN_MIN = 4096


def _family_keys(prefixes: Sequence[Prefix], fam: int) -> Sequence[int]:
    """Keys (address << 8 | length) of one family, sorted: a set file's
    PrefixColumn has them, other conditions' few prefixes are asked."""
    keys = getattr(prefixes, "keys", None)
    if keys is not None:
        return keys(fam)  # type: ignore[no-any-return]
    return [(p.addr << 8) | p.plen for p in prefixes if p.family == fam]


def _lpm_field(
    rules: tuple[Rule, ...], get: Callable[[Rule], AddrMatch | None], bits: _Interner
) -> tuple[LpmColumn, LpmColumn, list[Key]]:
    """(v4 entries, v6 entries, bitmaps) for one address field.

    Entries are (addr, plen, i) with bitmaps[i] the rules matching there.
    The longest matching prefix P of a packet address is in the trie; a rule
    prefix Q contains the address iff Q contains P (nested prefixes), so
    P's bitmap is the OR of the rules owning P or any prefix containing P,
    plus the rules with no condition on this field (rules/lpmwalk.py).  A
    /0 entry always exists, so a lookup never misses.

    Sets can hold a million prefixes, so the walk works on interned ids:
    an entry's bitmap is determined by (parent's id, own id), and the few
    distinct pairs are computed once; and a large IPv4 field is walked by
    columns, giving an `LpmArrays`.
    """
    # Rules with the same condition are one group: ClassBench's dst has 126
    # distinct conditions over 9,761 rules.  A condition is told apart by its
    # prefixes when they are few, and by identity otherwise (rules naming one
    # set share its prefixes), so a million-prefix set is never hashed whole.
    wild: list[int] = []
    groups: dict[object, list[int]] = {}
    conds: list[AddrMatch] = []
    for i, r in enumerate(rules):
        am = get(r)
        if am is None:
            wild.append(i)
            continue
        gkey = am.prefixes if len(am.prefixes) <= 8 else id(am.prefixes)
        members = groups.get(gkey)
        if members is None:
            members = groups[gkey] = []
            conds.append(am)
        members.append(i)
    members_of = list(groups.values())
    # Interned "groups owning exactly this prefix": a bitmap (an int of up to
    # 8 KiB) is made once per distinct owner set, at the end.
    own_sets: list[tuple[int, ...]] = [()]
    own_ids: dict[tuple[int, ...], int] = {(): 0}

    def own_id(owners: tuple[int, ...]) -> int:
        oid = own_ids.get(owners)
        if oid is None:
            oid = own_ids[owners] = len(own_sets)
            own_sets.append(owners)
        return oid

    fam_keys = [[_family_keys(am.prefixes, fam) for am in conds] for fam in (4, 6)]
    columns = max((len(k) for k in fam_keys[0]), default=0) >= COLUMN_MIN
    if not columns:  # a small set file's numpy keys, as Python integers
        fam_keys[0] = [k.tolist() if hasattr(k, "tolist") else k for k in fam_keys[0]]
    owns: tuple[dict[int, int], dict[int, int]] = ({}, {})  # per family: (addr << 8 | plen) -> own id
    for fi in (1,) if columns else (0, 1):
        d: dict[int, int] = owns[fi]
        for g, keys in enumerate(fam_keys[fi]):
            if not len(keys):
                continue
            if not d:  # common case: the first condition to name these prefixes
                d.update(dict.fromkeys(keys, own_id((g,))))
                continue
            trans: dict[int, int] = {}  # old own id -> own id with this group added
            for k in keys:
                old = d.get(k, 0)
                new = trans.get(old)
                if new is None:
                    new = trans[old] = own_id(own_sets[old] + (g,))
                d[k] = new
    v4 = _owned_columns(fam_keys[0], own_id) if columns else None
    used = set(owns[0].values()) | set(owns[1].values()) | (set(v4[1].tolist()) if v4 is not None else set())
    own_vals = [
        _bits([i for g in t for i in members_of[g]]) if oid in used else 0 for oid, t in enumerate(own_sets)
    ]
    w = lpmwalk.Walk(bits.key, _bits(wild), own_vals)
    out: list[LpmColumn] = []
    for fi, width in enumerate((32, 128)):
        if fi == 0 and v4 is not None:
            value_of = lambda b: bits.value(w.bitmaps[b])  # noqa: E731
            out.append(LpmArrays(v4[0], lpmwalk.column_v4(w, v4[0], v4[1], value_of)))
            continue
        d = owns[fi]
        keys = sorted(d)
        if not keys or keys[0] != 0:
            keys.insert(0, 0)
        bids = w.walk(keys, [d.get(k, 0) for k in keys], width)
        out.append([(k >> 8, k & 0xFF, b) for k, b in zip(keys, bids, strict=True)])
    return out[0], out[1], w.bitmaps


def _owned_columns(per_cond: list[Sequence[int]], own_id: Callable[[tuple[int, ...]], int]) -> Any:
    """(sorted distinct IPv4 keys with the /0 key first, their owner ids) as
    numpy arrays, from each condition's keys."""
    import numpy as np  # lazy: large fields only

    parts = [np.asarray(k, dtype=np.uint64) for k in per_cond]
    allk = np.concatenate([*parts, np.zeros(1, dtype=np.uint64)])  # and the /0 entry, owned by none
    allg = np.concatenate([np.full(len(k), g, dtype=np.int64) for g, k in enumerate(parts)] + [[-1]])
    order = np.argsort(allk, kind="stable")  # owners of one key stay in condition order
    sk, sg = allk[order], allg[order]
    first = np.concatenate(([True], sk[1:] != sk[:-1]))
    keys = sk[first]
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, len(sk)))
    # A key named by one condition: that condition's owner id, looked up per condition.
    single = np.array([own_id((g,)) for g in range(len(parts))] + [0], dtype=np.int64)
    oids = single[sg[starts]]
    # Keys named by several conditions (and /0 besides the added one) are few: one by one.
    for i in np.flatnonzero(counts > 1).tolist():
        owners = tuple(g for g in sg[starts[i] : starts[i] + counts[i]].tolist() if g >= 0)
        oids[i] = own_id(owners) if owners else 0
    return keys, oids


def _proto_ranges(protos: frozenset[int]) -> list[tuple[int, int]]:
    return [(p, p) for p in protos]


def _port_ranges(ports: tuple[PortRange, ...]) -> list[tuple[int, int]]:
    return [(x.lo, x.hi) for x in ports]


def _flag_ranges(tf: TcpFlags) -> list[tuple[int, int]]:
    return [(f, f) for f in range(TFLAGS_SIZE) if tf.matches(f)]


def _icmp_ranges(m: IcmpMatch) -> list[tuple[int, int]]:
    keys: list[tuple[int, int]] = []
    for proto, typ in sorted(m.types):
        base = icmp_key(proto == IPPROTO_ICMPV6, typ, 0)
        if m.codes is None:
            keys.append((base, base + 255))
        else:
            keys.extend((base + c, base + c) for c in sorted(m.codes))
    return _merge(keys)


# Per keyed field (rules/fields.py): the keys a rule's condition on it admits.
_KEY_RANGES: dict[str, Callable[[Any], list[tuple[int, int]]]] = {
    "proto": _proto_ranges,
    "sport": _port_ranges,
    "dport": _port_ranges,
    "tcp_flags": _flag_ranges,
    "icmp": _icmp_ranges,
}


def _by_condition(
    rules: tuple[Rule, ...], get: Callable[[Rule], Any]
) -> tuple[list[int], dict[Any, list[int]]]:
    """The indexes of the rules with no condition on a field, and of those
    with each distinct condition (rules share few: each is worked out once)."""
    wild: list[int] = []
    by_cond: dict[Any, list[int]] = {}
    for i, r in enumerate(rules):
        cond = get(r)
        if cond is None:
            wild.append(i)
        else:
            by_cond.setdefault(cond, []).append(i)
    return wild, by_cond


def _array_field(rules: tuple[Rule, ...], f: Field, bits: _Interner) -> list[Key]:
    """The bitmap of every key of an ARRAY field: the rules whose condition
    admits the key, plus the rules with no condition on the field.

    Rules share few distinct conditions, and keys that the same conditions
    admit share a bitmap: each is made once (one big int, not one per key).
    """
    get = _condition(f)
    to_ranges = _KEY_RANGES[f.name]
    wild, by_cond = _by_condition(rules, get)
    admitted: list[list[int]] = [[] for _ in range(f.space)]  # per key: the conditions admitting it
    cond_bms = []
    for c, (cond, idx) in enumerate(by_cond.items()):
        cond_bms.append(_bits(idx))
        for lo, hi in to_ranges(cond):
            for k in range(lo, hi + 1):
                admitted[k].append(c)
    wild_bm = _bits(wild)
    out: list[Key] = []
    seen: dict[tuple[int, ...], Key] = {}
    for conds in admitted:
        which = tuple(conds)
        key = seen.get(which)
        if key is None:
            bm = wild_bm
            for c in which:
                bm |= cond_bms[c]
            key = seen[which] = bits.key(bm)
        out.append(key)
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _interval_field(
    rules: tuple[Rule, ...],
    space: int,
    get: Callable[[Rule], Any],
    to_ranges: Callable[[Any], list[tuple[int, int]]],
    bits: _Interner,
) -> list[tuple[int, int, Key]]:
    """Elementary intervals over [0, space): (lo, hi, bitmap) in order.

    Each rule's ranges are merged (disjoint), so toggling its bit at lo and
    at hi + 1 with XOR gives the set of rules covering each point.
    """
    # Rules with the same condition toggle the same points: each distinct
    # condition (108 dport conditions over 9,761 ClassBench rules) is turned
    # into ranges once, and toggles the bitmap of all its rules at once.
    wild, by_cond = _by_condition(rules, get)
    at: dict[int, list[int]] = {}  # point -> rules whose coverage starts or ends there
    for cond, members in by_cond.items():
        # Merged ranges are disjoint and not adjacent: a rule toggles a point once.
        for lo, hi in _merge(to_ranges(cond)):
            at.setdefault(lo, []).extend(members)
            at.setdefault(hi + 1, []).extend(members)
    cur = _bits(wild)  # the wildcard rules cover every point
    points = sorted(p for p in at if p < space)
    if not points or points[0] != 0:
        points.insert(0, 0)
    out: list[tuple[int, int, Key]] = []
    for j, p in enumerate(points):
        if p in at:
            cur ^= _bits(at[p])
        hi = (points[j + 1] - 1) if j + 1 < len(points) else space - 1
        bm = bits.key(cur)
        if out and out[-1][2] == bm:
            out[-1] = (out[-1][0], hi, bm)
        else:
            out.append((p, hi, bm))
    return out


# --------------------------------------------------------------------------
# reuse: a field whose conditions did not change compiles to what it did before
#
# A field's table and entries depend only on its column: each rule's
# condition on the field, in rule order.  A one-rule edit of a 10,000-rule
# set changes one or two columns; the address columns, the costly ones
# (thousands of distinct bitmaps), usually stay.  The caller (plancache)
# tells which columns equal those an earlier plan was compiled from, by
# comparing their digests (column_digests), and the fields it names are
# taken from that plan's bytes: its table, with each block interned again,
# and its entries.  A table's slots depend only on its set of bitmaps, and
# blocks are numbered canonically once all tables are made, so the plan is
# byte for byte the one a full compile gives (a unit test holds it to that).

TOKEN_BYTES = 16  # a rule's token: this many bytes per field of FIELDS
_UNKNOWN = bytes(TOKEN_BYTES)  # a condition not digested: its column is never reused
_GETTERS = tuple(attrgetter(f"match.{f.match}") for f in FIELDS)
_NONE_TOKEN = hashlib.blake2b(b"None", digest_size=TOKEN_BYTES).digest()


def rule_tokens(r: Rule) -> bytes:
    """A digest of the rule's condition on each field of FIELDS, in that order.

    A condition naming sets is not digested here (a set can hold a million
    prefixes): its token comes from the digest the parser gave it (of its
    own prefixes and the sets' contents), and is unknown, its column then
    compiled afresh, when it has none (it names a dynamic set, whose slot
    follows from the other sets, or was not made by the parser).
    The repr of the model's frozen dataclasses shows every attribute, so
    two conditions with one digest are equal; equal conditions whose
    frozensets happen to iterate differently only miss a reuse.
    """
    out = []
    for get in _GETTERS:
        cond = get(r)
        if cond is None:
            out.append(_NONE_TOKEN)
        elif isinstance(cond, AddrMatch) and cond.sets:
            if cond.digest and not cond.dynamic:
                out.append(hashlib.blake2b(b"sets:" + cond.digest.encode(), digest_size=TOKEN_BYTES).digest())
            else:
                out.append(_UNKNOWN)
        else:
            out.append(hashlib.blake2b(repr(cond).encode(), digest_size=TOKEN_BYTES).digest())
    return b"".join(out)


def column_digests(tokens: Sequence[bytes]) -> dict[int, str]:
    """Field number -> a digest of its column, from every rule's rule_tokens()
    in rule order; fields with an unknown token are left out."""
    nf = len(FIELDS)
    joined = b"".join(tokens)
    if len(joined) != len(tokens) * nf * TOKEN_BYTES:
        raise ValueError("not one token per rule")
    if not tokens:
        return {f.num: hashlib.sha256(b"no rules").hexdigest() for f in FIELDS}
    words = memoryview(joined).cast("Q")  # a token is two words; a rule's are nf * 2 apart
    step = nf * TOKEN_BYTES // 8
    out = {}
    for k, f in enumerate(FIELDS):
        lo, hi = words[2 * k :: step].tobytes(), words[2 * k + 1 :: step].tobytes()
        if bytes(8) in lo:  # an unknown token (or, harmlessly, zeros across two tokens)
            continue
        out[f.num] = hashlib.sha256(len(tokens).to_bytes(4, "little") + lo + hi).hexdigest()
    return out


@dataclass(frozen=True)
class Reuse:
    """What compile_ruleset may take from an earlier plan instead of compiling it."""

    base: bytes  # the earlier plan's bytes
    # direction -> the numbers of the fields whose column equals the one `base` was compiled from
    fields: dict[str, frozenset[int]]


@dataclass(frozen=True)
class _BaseDir:
    """A direction of the earlier plan, and the fields to take from it."""

    nwords: int
    fields: frozenset[int]
    dd: _DecodedDir

    def table(self, fnum: int, bits: _Interner) -> tuple[Key, ...]:
        """The field's table, its blocks interned in this compile."""
        blocks = self.dd.two.blocks
        return tuple((g, tuple(bits.intern(blocks[b]) for b in blk)) for g, blk in self.dd.tables[fnum])

    def entries(self, f: Field) -> dict[str, Any]:
        """The field's entries (DirectionPlan attribute -> value), as they are."""
        names = (f.plan_attr(False), f.plan_attr(True)) if f.layout == ADDR else (f.pin,)
        return {n: self.dd.entries[n] for n in names}


def _base_fields(reuse: Reuse | None) -> dict[str, _BaseDir]:
    if reuse is None or not any(reuse.fields.values()):
        return {}
    _, decoded = _decode(reuse.base)
    return {
        dd.head["name"]: _BaseDir(dd.head["nwords"], reuse.fields.get(dd.head["name"], frozenset()), dd)
        for dd in decoded
    }


# --------------------------------------------------------------------------
# serialisation (canonical bytes -> content hash; also the state-dir format)

_MAGIC = b"XGPLAN2\n"


def _serialise(plan: Plan) -> bytes:
    head: dict[str, object] = {
        "mode": plan.mode.value,
        "non_ip": plan.non_ip.value,
        "ndp": plan.ndp,
        "timeouts": [plan.tmo_tcp, plan.tmo_udp, plan.tmo_icmp],
        "flow_table_size": plan.flow_table_size,
        "limit_table_size": plan.limit_table_size,
        "dirs": [_dir_head(d) for d in plan.directions()],
    }
    if plan.dynsets:  # only then: a rule set without dynamic sets keeps its digest
        head["dynsets"] = [[s.name, s.size, s.timeout_ns] for s in plan.dynsets]
    parts = [_MAGIC, _blob(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())]
    for d in plan.directions():
        tl = d.two_level()
        parts.append(_blob(b"".join(tl.blocks)))
        parts.append(_blob(array("I", [x for groups, blk in tl.tops for x in (groups, *blk)]).tobytes()))
        for name, _, v6 in ADDR_ENTRIES:
            parts.append(_blob(_pack_lpm(getattr(d, name), _addr_bits(v6))))
        for f in _KEYED_ORDER:
            flat = getattr(d, f.pin) if f.layout == ARRAY else [x for t in getattr(d, f.pin) for x in t]
            parts.append(_blob(array("I", flat).tobytes()))
        if d.dyn_refs:
            for groups in d.dyn_groups:
                parts.append(_blob(b"".join(b.to_bytes(d.nwords * 8, "little") for b in groups)))
    return b"".join(parts)


def _dir_head(d: DirectionPlan) -> dict[str, object]:
    head = _dir_head_static(d)
    if d.state_first:
        head["state_first"] = True
    if d.dyn_refs:
        head["dyn_refs"] = [[r.field, r.set, r.group] for r in d.dyn_refs]
        head["dyn_groups"] = [len(g) for g in d.dyn_groups]
    return head


def _dir_head_static(d: DirectionPlan) -> dict[str, object]:
    return {
        "name": d.name,
        "default": d.default.value,
        "nwords": d.nwords,
        # Line numbers are for messages only: moving a rule within the file
        # without changing it is no change to the plan.
        # Options (a 4th element) only when set: plans without them keep their identity.
        "rules": [
            [r.name, r.action.value, r.limit.to_list() if r.limit else None]
            + ([{"syn_cookies": True}] if r.syn_cookies else [])
            for r in d.rules
        ],
        "l4free": d.l4free_idx,
        "est": d.est_idx,
        "new": d.new_idx,
        "ones": d.ones_idx,
        "field_mask": d.field_mask,
        "table_sizes": [len(t) for t in d.tables],
        "blocks": len(d.two_level().blocks),
    }


# The order the plan's bytes keep the keyed fields in: the ARRAY fields first.
_KEYED_ORDER = tuple(sorted(KEYED_FIELDS, key=lambda f: f.layout != ARRAY))


def _addr_bits(v6: bool) -> int:
    return 128 if v6 else 32


def _blob(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _pack_lpm(entries: Sequence[tuple[int, int, int]], bits: int) -> bytes:
    return lpmpack.pack(entries, bits)


def _unpack_lpm(data: bytes, bits: int) -> lpmpack.PackedLpm:
    # Kept packed: a million entries decode only if something iterates them.
    return lpmpack.PackedLpm(data, bits)


_ACTIONS = {a.value: a for a in Action}  # a dict lookup: Action(value) costs microseconds, per rule


class _LazyPlan(Plan):
    """A plan whose directions are decoded from its bytes on first use.

    The settings come from the header at once; an apply that changes
    nothing needs no more, and decoding a million-prefix plan takes time.
    """

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet
        if name.startswith("__") or "_bytes" not in self.__dict__:
            raise AttributeError(name)
        full = plan_from_bytes(self.__dict__["_bytes"], self.__dict__.get("source", ""))
        for f in fields(Plan):
            self.__dict__.setdefault(f.name, getattr(full, f.name))
        return self.__dict__[name]


def _head_fields(head: dict[str, Any]) -> dict[str, Any]:
    """A plan's settings from its serialised head (everything but the directions)."""
    tmo = head["timeouts"]
    return {
        "mode": Mode(head["mode"]),
        "non_ip": Action(head["non_ip"]),
        "ndp": head["ndp"],
        "tmo_tcp": tmo[0],
        "tmo_udp": tmo[1],
        "tmo_icmp": tmo[2],
        "flow_table_size": head["flow_table_size"],
        "limit_table_size": head["limit_table_size"],
        "dynsets": tuple(DynSetPlan(n, size, t) for n, size, t in head.get("dynsets", ())),
    }


def lazy_plan(data: bytes, source: str = "") -> Plan:
    """Like plan_from_bytes(), but the directions are decoded only when used."""
    if not data.startswith(_MAGIC):
        raise ValueError("not an xdpguard plan")
    (n,) = struct.unpack_from("<Q", data, len(_MAGIC))
    off = len(_MAGIC) + 8
    head = json.loads(data[off : off + n])
    p = _LazyPlan.__new__(_LazyPlan)
    p.__dict__.update(_head_fields(head), source=source, _bytes=data)
    return p


@dataclass(frozen=True)
class _DecodedDir:
    """A direction of a plan's bytes, but for its rules."""

    head: dict[str, Any]
    two: TwoLevel
    tables: tuple[tuple[Key, ...], ...]
    entries: dict[str, Any]  # per DirectionPlan attribute: the field's entries
    dyn_groups: tuple[tuple[int, ...], tuple[int, ...]]


def _decode(data: bytes) -> tuple[dict[str, Any], list[_DecodedDir]]:
    """The head of a plan's bytes and its directions' tables and entries."""
    if not data.startswith(_MAGIC):
        raise ValueError("not an xdpguard plan")
    off = len(_MAGIC)

    def blob() -> bytes:
        nonlocal off
        (n,) = struct.unpack_from("<Q", data, off)
        off += 8
        b = data[off : off + n]
        off += n
        return b

    head = json.loads(blob())
    dirs = []
    for dh in head["dirs"]:
        raw = blob()
        blocks = tuple(raw[i : i + GROUP_BYTES] for i in range(0, len(raw), GROUP_BYTES))
        words = array("I", blob()).tolist()  # a list slices faster than an array
        tops: list[tuple[int, tuple[int, ...]]] = []
        k = 0
        while k < len(words):
            groups = words[k]
            n = groups.bit_count()
            tops.append((groups, tuple(words[k + 1 : k + 1 + n])))
            k += 1 + n
        tl = TwoLevel(tuple(tops), blocks)
        tables = []
        at = 0
        for size in dh["table_sizes"]:
            tables.append(tl.tops[at : at + size])
            at += size
        entries: dict[str, Any] = {name: _unpack_lpm(blob(), _addr_bits(v6)) for name, _, v6 in ADDR_ENTRIES}
        for f in _KEYED_ORDER:
            flat = array("I", blob())
            if f.layout == ARRAY:
                entries[f.pin] = tuple(flat)
            else:
                entries[f.pin] = tuple((flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3))
        dyn_groups: list[tuple[int, ...]] = [(), ()]
        nbytes = dh["nwords"] * 8
        for fi, n in enumerate(dh.get("dyn_groups", ())):
            raw = blob()
            dyn_groups[fi] = tuple(
                int.from_bytes(raw[i * nbytes : (i + 1) * nbytes], "little") for i in range(n)
            )
        dirs.append(_DecodedDir(dh, tl, tuple(tables), entries, (dyn_groups[0], dyn_groups[1])))
    return head, dirs


def plan_from_bytes(data: bytes, source: str = "") -> Plan:
    """Inverse of Plan.to_bytes(): how the state dir keeps the applied plan."""
    head, decoded = _decode(data)
    dirs = []
    for dd in decoded:
        dh = dd.head
        # Every field but the rules, which _LazyRules makes when first asked for.
        d = _LazyRules.__new__(_LazyRules)
        d.__dict__.update(
            name=dh["name"],
            default=Action(dh["default"]),
            nwords=dh["nwords"],
            tables=dd.tables,
            **dd.entries,
            l4free_idx=dh["l4free"],
            est_idx=dh["est"],
            new_idx=dh["new"],
            ones_idx=dh["ones"],
            field_mask=dh["field_mask"],
            dyn_refs=tuple(DynRef(f, name, g) for f, name, g in dh.get("dyn_refs", ())),
            dyn_groups=dd.dyn_groups,
            state_first=dh.get("state_first", False),
            _two_level=dd.two,
            _rules_head=dh,
        )
        dirs.append(d)
    return Plan(ingress=dirs[0], egress=dirs[1], source=source, _bytes=data, **_head_fields(head))


def _decode_rules(dh: dict[str, Any]) -> tuple[RulePlan, ...]:
    return tuple(
        RulePlan(
            i,
            name,
            rule_id(dh["name"], name),
            _ACTIONS[act],
            0,  # not recorded: line numbers are not part of a plan's identity
            LimitPlan.from_list(lim) if lim else None,
            bool(opts and opts[0].get("syn_cookies")),
        )
        for i, (name, act, lim, *opts) in enumerate(dh["rules"])
    )


class _LazyRules(DirectionPlan):
    """A decoded direction whose rules are made on first use.

    An update compares the tables of the plan a half holds with the new
    plan's and never reads its rules, and making them (a rule id digest
    and an object per rule) takes 20 ms for 10,000 rules.
    """

    def __getattr__(self, name: str) -> Any:  # only for attributes not set yet
        if name != "rules" or "_rules_head" not in self.__dict__:
            raise AttributeError(name)
        rules = self.__dict__["rules"] = _decode_rules(self.__dict__["_rules_head"])
        return rules


# --------------------------------------------------------------------------
# figures for `check`

# Value sizes of the plan's maps, from the structs the header checks them against.
BLOCK_VALUE_SIZE = ctypes.sizeof(Bitmap)
TOP_VALUE_SIZE = ctypes.sizeof(Top)
RULE_VALUE_SIZE = ctypes.sizeof(RuleEntry)


def map_entries(d: DirectionPlan) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in FIELDS:
        if f.layout == ADDR:
            out[f"{f.name}_v4"] = len(getattr(d, f.plan_attr(False)))
            out[f"{f.name}_v6"] = len(getattr(d, f.plan_attr(True)))
        elif f.layout == ARRAY:
            out[f.name] = f.space
        else:
            out[f"{f.name}_intervals"] = len(getattr(d, f.pin))
    return {
        **out,
        "bitmaps": d.nbitmaps,
        "bitmap_blocks": len(d.two_level().blocks),
        "rules": d.nrules,
    }


@dataclass(frozen=True)
class FixSizes:
    """The entries of the fixed-size inner maps of one interface's programs
    (struct xg_fixsize): top entries, blocks (and flat blocks), nodes."""

    tops: int
    blocks: int
    nodes: int = FIX_NODES


def _blocks_needed(d: DirectionPlan) -> int:
    """Blocks of d's fixed-size block table, or of its flat table (one group)."""
    return len(d.two_level().blocks) if d.ngroups > 1 else d.nbitmaps


def fix_sizes(plan: Plan) -> FixSizes:
    """The fixed sizes an interface's programs get when `plan` is the first
    applied there: room for its largest direction and a quarter more (so
    that later plans a little larger still fit; the tables are allocated
    whole), in steps of 4,096, and never below FIX_TOPS_MIN and
    FIX_BLOCKS_MIN."""

    def size(need: int, least: int) -> int:
        return max(least, -(-(need * 5 // 4) // 4096) * 4096)

    ds = list(plan.directions())
    tops = max((len(d.two_level().tops) for d in ds if d.ngroups > 1), default=0)
    blocks = max((_blocks_needed(d) for d in ds if d.ngroups >= 1), default=0)
    return FixSizes(min(size(tops, FIX_TOPS_MIN), MAX_BITMAPS), min(size(blocks, FIX_BLOCKS_MIN), MAX_BLOCKS))


def uses_fixed(d: DirectionPlan, sizes: FixSizes | None) -> bool:
    """Do `d`'s top entries and blocks go into the fixed-size tables (the
    tops_f and bitmaps_f outer maps, XG_CFG_FIXED), whose lookups the
    verifier inlines?  Plans of more than one group (one group reads the
    flat table) that fit the interface's sizes (None: it has none)."""
    if d.ngroups <= 1 or sizes is None:
        return False
    return len(d.two_level().tops) <= sizes.tops and len(d.two_level().blocks) <= sizes.blocks


def uses_fixed_flat(d: DirectionPlan, sizes: FixSizes | None) -> bool:
    """Does `d`'s flat table (one group) go into the fixed-size tables (the
    flat_f outer map, XG_CFG_FIXFLAT)?  When it has more bitmaps than
    `pflat` holds (those read `pflat`) and fits the blocks' size."""
    return sizes is not None and d.ngroups == 1 and PFLAT_CAP < d.nbitmaps <= sizes.blocks


def fixed_nodes(d: DirectionPlan, fnum: int, n_elems: int, sizes: FixSizes | None) -> bool:
    """Does `d`'s address table for field number fnum, of n_elems elements,
    go into the fixed-size tables (the addrs_f outer map, XG_CFG_FIXA)?
    Only a table that fits and that packets read: the table of a field no
    rule uses is never looked up, and stays as small as it is."""
    return sizes is not None and bool(d.field_mask >> fnum & 1) and n_elems <= sizes.nodes


def memory_estimate(plan: Plan) -> int:
    """Bytes of kernel memory the plan's maps take while an update replaces it (2 copies).

    The address tables are built here (xdpguard/rules/stride.py), so their
    size is exact; about a second for a million prefixes.  Tables that go
    into the fixed-size maps count at that size, the one a first attach
    of this plan gives them.
    """
    from xdpguard.rules import stride  # numpy: only when asked

    total = 0
    sizes = fix_sizes(plan)
    for d in plan.directions():
        elems = [(f, stride.build(getattr(d, name), _addr_bits(v6)).n_elems) for name, f, v6 in ADDR_ENTRIES]
        addr = (
            sum(sizes.nodes if fixed_nodes(d, f.num, n, sizes) else n for f, n in elems) * stride.NODE_BYTES
        )
        arrays = 4 * sum(f.space for f in KEYED_FIELDS)
        if uses_fixed(d, sizes):
            bitmaps = sizes.tops * TOP_VALUE_SIZE + sizes.blocks * BLOCK_VALUE_SIZE
        else:
            bitmaps = d.nbitmaps * TOP_VALUE_SIZE + len(d.two_level().blocks) * BLOCK_VALUE_SIZE
        if d.ngroups == 1:  # the flat table: one block per bitmap
            bitmaps += (sizes.blocks if uses_fixed_flat(d, sizes) else d.nbitmaps) * BLOCK_VALUE_SIZE
        total += 2 * (addr + arrays + bitmaps + d.nrules * RULE_VALUE_SIZE)
    return total
