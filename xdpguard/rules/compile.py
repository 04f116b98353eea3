"""Rule set -> map plan: what the fixed BPF programs will find in their maps.

Pure and deterministic: the same RuleSet always yields a byte-identical
plan (`Plan.to_bytes()`) and therefore the same content hash.  No kernel,
no root.  The datapath writes a plan into maps; `classify.py` runs a plan
the way the BPF program does, so the compiler is checked against the
reference semantics without a kernel.

Bit-vector scheme (SPEC §3): rule i is bit i of a bitmap (file order, so
the lowest set bit is the first matching rule).  Each match field maps a
packet value to the bitmap of rules that value satisfies; bitmaps are
deduplicated per field into a sorted table and maps store the table index.
Sorting by value keeps indexes stable when an edit does not touch a field,
so an update rewrites only the entries whose bitmap really changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from xdpguard.errors import RuleError
from xdpguard.rules.model import (
    IPPROTO_ICMPV6,
    Action,
    AddrMatch,
    Direction,
    Mode,
    RateLimit,
    Rule,
    RuleSet,
    State,
)

# Field numbers: keep in step with enum xg_field in bpf/include/xdpguard.h.
F_EXTRA, F_SRC, F_DST, F_PROTO, F_SPORT, F_DPORT, F_TFLAGS, F_ICMP = range(8)
NFIELDS = 8
FIELD_NAMES = ("extra", "src", "dst", "proto", "sport", "dport", "tcp_flags", "icmp")

MAX_WORDS = 64
PORT_SPACE = 65536
ICMP_SPACE = 2 * 65536  # (is_icmpv6 << 16) | (type << 8) | code
ICMP_V6_BASE = 65536

# Limits on the plan itself, beyond the rule language's (SPEC "limits exceeded").
MAX_BITMAPS = 262144

# An interval table: (lo, hi, table index) covering the whole key space in order.
Intervals = tuple[tuple[int, int, int], ...]
# LPM entries: (network address, prefix length, table index), sorted.
LpmEntries = list[tuple[int, int, int]]


def rule_id(direction: str, name: str) -> int:
    """Stable 64-bit id for a rule: counters and limiter state are keyed by it."""
    digest = hashlib.blake2b(f"{direction}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


LIMIT_PPS, LIMIT_BPS = 1, 2  # enum values of xg_rule.limit
NSEC = 1_000_000_000


@dataclass(frozen=True)
class LimitPlan:
    """A rate limit in the units the program uses (GCRA in nanoseconds)."""

    kind: int  # LIMIT_PPS | LIMIT_BPS
    rate: int  # bits per second; packets per second rounded up (pps limits run on cost_ns alone)
    cost_ns: int  # pps: ns per packet (bps: the program derives it from the length)
    burst_ns: int  # tolerance: the burst expressed in ns at the rate
    per_source: bool
    plen4: int
    plen6: int
    block_s: int

    @classmethod
    def from_model(cls, rl: RateLimit) -> LimitPlan:
        per_source = rl.per != "rule"
        block = math.ceil(rl.block_for) if rl.block_for else 0
        if rl.pps is not None:
            cost = max(1, round(NSEC / rl.pps))
            return cls(
                LIMIT_PPS,
                math.ceil(rl.pps),
                cost,
                rl.burst * cost,
                per_source,
                rl.per_prefix_v4,
                rl.per_prefix_v6,
                block,
            )
        assert rl.bps is not None
        return cls(
            LIMIT_BPS,
            rl.bps,
            0,
            rl.burst * 8 * NSEC // rl.bps,
            per_source,
            rl.per_prefix_v4,
            rl.per_prefix_v6,
            block,
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
            self.block_s,
        ]

    @classmethod
    def from_list(cls, v: list[int]) -> LimitPlan:
        return cls(v[0], v[1], v[2], v[3], bool(v[4]), v[5], v[6], v[7])


@dataclass(frozen=True)
class RulePlan:
    index: int
    name: str
    rule_id: int
    action: Action
    line: int
    limit: LimitPlan | None

    @property
    def has_limit(self) -> bool:
        return self.limit is not None


@dataclass
class DirectionPlan:
    name: str  # "ingress" | "egress"
    default: Action
    rules: tuple[RulePlan, ...]
    nwords: int
    tables: tuple[tuple[int, ...], ...]  # per field: distinct bitmaps, ascending
    src4: LpmEntries
    dst4: LpmEntries
    src6: LpmEntries
    dst6: LpmEntries
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
    # The same four without `continue` rules: what the scan ANDs, so that it
    # finds the deciding rule (equal to the above when there are none).
    l4free_nc_idx: int
    est_nc_idx: int
    new_nc_idx: int
    ones_nc_idx: int

    @property
    def cont(self) -> tuple[int, ...]:
        """Bit positions of the continue rules, ascending."""
        return tuple(r.index for r in self.rules if r.action == Action.CONTINUE)

    @property
    def nrules(self) -> int:
        return len(self.rules)

    @property
    def bases(self) -> tuple[int, ...]:
        out, acc = [], 0
        for t in self.tables:
            out.append(acc)
            acc += len(t)
        return tuple(out)

    @property
    def nbitmaps(self) -> int:
        return sum(len(t) for t in self.tables)

    def global_index(self, fld: int, local: int) -> int:
        return self.bases[fld] + local

    def all_bitmaps(self) -> list[int]:
        """Every bitmap in global-index order (what the bitmap map holds)."""
        return [b for t in self.tables for b in t]

    @property
    def uses_block(self) -> bool:
        return any(r.limit is not None and r.limit.block_s for r in self.rules)

    @property
    def uses_state(self) -> bool:
        tbl = self.tables[F_EXTRA]
        return tbl[self.est_idx] != tbl[self.new_idx]


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
    source: str = ""
    _bytes: bytes | None = field(default=None, repr=False, compare=False)

    def directions(self) -> tuple[DirectionPlan, DirectionPlan]:
        return (self.ingress, self.egress)

    def to_bytes(self) -> bytes:
        """Canonical serialisation: the plan's identity (the source path is not part of it)."""
        if self._bytes is None:
            self._bytes = _serialise(self)
        return self._bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def hash64(self) -> int:
        """First 8 bytes of the digest: what the kernel config records."""
        return int.from_bytes(bytes.fromhex(self.digest[:16]), "little")


# --------------------------------------------------------------------------
# compilation


def compile_ruleset(rs: RuleSet) -> Plan:
    dirs = []
    for dname, d in (("ingress", rs.ingress), ("egress", rs.egress)):
        dp = _compile_direction(dname, d)
        if dp.nbitmaps > MAX_BITMAPS:
            line = d.rules[0].line if d.rules else 1
            raise RuleError(
                rs.source,
                line,
                f"{dname}: the rules need {dp.nbitmaps} distinct rule bitmaps, more than the "
                f"limit of {MAX_BITMAPS}; merge rules that share addresses into sets",
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
        source=rs.source,
    )


def _compile_direction(dname: str, d: Direction) -> DirectionPlan:
    rules = d.rules
    n = len(rules)
    allones = (1 << n) - 1
    nwords = (n + 63) // 64

    rplans = tuple(
        RulePlan(
            i,
            r.name,
            rule_id(dname, r.name),
            r.action,
            r.line,
            LimitPlan.from_model(r.rate_limit) if r.rate_limit is not None else None,
        )
        for i, r in enumerate(rules)
    )

    # Address fields: LPM entries with the bitmap of rules whose prefix contains them.
    src4, src6, src_bms = _lpm_field(rules, lambda r: r.match.src)
    dst4, dst6, dst_bms = _lpm_field(rules, lambda r: r.match.dst)

    proto_bm = []
    for p in range(256):
        bm = 0
        for i, r in enumerate(rules):
            if r.match.protos is None or p in r.match.protos:
                bm |= 1 << i
        proto_bm.append(bm)

    sport_iv = _interval_field(rules, PORT_SPACE, _port_ranges("sport"))
    dport_iv = _interval_field(rules, PORT_SPACE, _port_ranges("dport"))
    icmp_iv = _interval_field(rules, ICMP_SPACE, _icmp_ranges)

    tflags_bm = []
    for f in range(256):
        bm = 0
        for i, r in enumerate(rules):
            tf = r.match.tcp_flags
            if tf is None or tf.matches(f):
                bm |= 1 << i
        tflags_bm.append(bm)

    l4free = est = new = 0
    for i, r in enumerate(rules):
        if not r.match.has_l4:
            l4free |= 1 << i
        if r.match.state in (None, State.ESTABLISHED):
            est |= 1 << i
        if r.match.state in (None, State.NEW):
            new |= 1 << i

    # Deduplicate per field; sorted tables give stable indexes (see module doc).
    def table(values: list[int]) -> tuple[int, ...]:
        return tuple(sorted(set(values)))

    cont = 0
    for i, r in enumerate(rules):
        if r.action == Action.CONTINUE:
            cont |= 1 << i
    nocont = [b & ~cont for b in (l4free, est, new, allones)]
    t_extra = table([l4free, est, new, allones, *nocont])
    t_src = table(src_bms)
    t_dst = table(dst_bms)
    t_proto = table(proto_bm)
    t_sport = table([b for _, _, b in sport_iv])
    t_dport = table([b for _, _, b in dport_iv])
    t_tflags = table(tflags_bm)
    t_icmp = table([b for _, _, b in icmp_iv])
    tables = (t_extra, t_src, t_dst, t_proto, t_sport, t_dport, t_tflags, t_icmp)
    pos = [{b: i for i, b in enumerate(t)} for t in tables]

    def lpm(entries: LpmEntries, bitmaps: list[int], fld: int) -> LpmEntries:
        rank = [pos[fld][b] for b in bitmaps]
        return [(a, plen, rank[i]) for a, plen, i in entries]

    def ivs(entries: list[tuple[int, int, int]], fld: int) -> Intervals:
        p = pos[fld]
        return tuple((lo, hi, p[b]) for lo, hi, b in entries)

    field_mask = 0
    for fld, t in enumerate(tables):
        if fld != F_EXTRA and t != (allones,):
            field_mask |= 1 << fld

    return DirectionPlan(
        name=dname,
        default=d.default,
        rules=rplans,
        nwords=nwords,
        tables=tables,
        src4=lpm(src4, src_bms, F_SRC),
        dst4=lpm(dst4, dst_bms, F_DST),
        src6=lpm(src6, src_bms, F_SRC),
        dst6=lpm(dst6, dst_bms, F_DST),
        proto=tuple(pos[F_PROTO][b] for b in proto_bm),
        sport=ivs(sport_iv, F_SPORT),
        dport=ivs(dport_iv, F_DPORT),
        tflags=tuple(pos[F_TFLAGS][b] for b in tflags_bm),
        icmp=ivs(icmp_iv, F_ICMP),
        l4free_idx=pos[F_EXTRA][l4free],
        est_idx=pos[F_EXTRA][est],
        new_idx=pos[F_EXTRA][new],
        ones_idx=pos[F_EXTRA][allones],
        field_mask=field_mask,
        l4free_nc_idx=pos[F_EXTRA][nocont[0]],
        est_nc_idx=pos[F_EXTRA][nocont[1]],
        new_nc_idx=pos[F_EXTRA][nocont[2]],
        ones_nc_idx=pos[F_EXTRA][nocont[3]],
    )


def _lpm_field(
    rules: tuple[Rule, ...], get: Callable[[Rule], AddrMatch | None]
) -> tuple[LpmEntries, LpmEntries, list[int]]:
    """(v4 entries, v6 entries, bitmaps) for one address field.

    Entries are (addr, plen, i) with bitmaps[i] the rules matching there.
    The longest matching prefix P of a packet address is in the trie; a rule
    prefix Q contains the address iff Q contains P (nested prefixes), so
    P's bitmap is the OR of the rules owning P or any prefix containing P,
    plus the rules with no condition on this field.  A /0 entry always
    exists, so a lookup never misses.

    Sets can hold a million prefixes, so the walk works on interned ids:
    an entry's bitmap is determined by (parent's id, own id), and the few
    distinct pairs are computed once.
    """
    wildcard = 0
    own_vals: list[int] = [0]  # interned "rules owning exactly this prefix"
    own_ids: dict[int, int] = {0: 0}
    owns: tuple[dict[int, int], dict[int, int]] = ({}, {})  # per family: (addr << 8 | plen) -> own id
    for i, r in enumerate(rules):
        am = get(r)
        if am is None:
            wildcard |= 1 << i
            continue
        bit = 1 << i
        for fi, fam in enumerate((4, 6)):
            keys = [(p.addr << 8) | p.plen for p in am.prefixes if p.family == fam]
            if not keys:
                continue
            d: dict[int, int] = owns[fi]
            if bit not in own_ids:
                own_ids[bit] = len(own_vals)
                own_vals.append(bit)
            if not d:  # common case: the first rule to name these prefixes
                d.update(dict.fromkeys(keys, own_ids[bit]))
                continue
            trans: dict[int, int] = {}  # old own id -> own id with this rule added
            for k in keys:
                old = d.get(k, 0)
                new = trans.get(old)
                if new is None:
                    v = own_vals[old] | bit
                    new = own_ids.get(v)
                    if new is None:
                        new = own_ids[v] = len(own_vals)
                        own_vals.append(v)
                    trans[old] = new
                d[k] = new
    bitmaps: list[int] = [wildcard]  # id 0: the wildcard rules (no parent)
    combo: dict[tuple[int, int], int] = {}
    ids_of: dict[int, int] = {wildcard: 0}
    out: list[LpmEntries] = []
    for fi, bits in enumerate((32, 128)):
        d = owns[fi]
        keys = sorted(d)
        if not keys or keys[0] != 0:
            keys.insert(0, 0)
        entries: LpmEntries = []
        # Walk prefixes in (address, length) order: a containing prefix comes
        # before everything it contains, so a stack of open prefixes suffices.
        ends: list[int] = []  # last address each open prefix covers
        bms: list[int] = []  # bitmap id of each open prefix
        for k in keys:
            a, plen = k >> 8, k & 0xFF
            while ends and a > ends[-1]:
                ends.pop()
                bms.pop()
            parent = bms[-1] if bms else 0
            oid = d.get(k, 0)
            key = (parent, oid)
            bid = combo.get(key)
            if bid is None:
                v = bitmaps[parent] | own_vals[oid]
                bid = ids_of.get(v)
                if bid is None:
                    bid = ids_of[v] = len(bitmaps)
                    bitmaps.append(v)
                combo[key] = bid
            ends.append(a | ((1 << (bits - plen)) - 1))
            bms.append(bid)
            entries.append((a, plen, bid))
        out.append(entries)
    return out[0], out[1], bitmaps


def _port_ranges(attr: str) -> Callable[[Rule], list[tuple[int, int]] | None]:
    def get(r: Rule) -> list[tuple[int, int]] | None:
        pr = getattr(r.match, attr)
        if pr is None:
            return None
        return [(x.lo, x.hi) for x in pr]

    return get


def _icmp_ranges(r: Rule) -> list[tuple[int, int]] | None:
    m = r.match.icmp
    if m is None:
        return None
    keys: list[tuple[int, int]] = []
    for proto, typ in sorted(m.types):
        base = (ICMP_V6_BASE if proto == IPPROTO_ICMPV6 else 0) + (typ << 8)
        if m.codes is None:
            keys.append((base, base + 255))
        else:
            keys.extend((base + c, base + c) for c in sorted(m.codes))
    return _merge(keys)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _interval_field(
    rules: tuple[Rule, ...], space: int, get: Callable[[Rule], list[tuple[int, int]] | None]
) -> list[tuple[int, int, int]]:
    """Elementary intervals over [0, space): (lo, hi, bitmap) in order.

    Each rule's ranges are merged (disjoint), so toggling its bit at lo and
    at hi + 1 with XOR gives the set of rules covering each point.
    """
    wildcard = 0
    toggles: dict[int, int] = {}
    for i, r in enumerate(rules):
        ranges = get(r)
        bit = 1 << i
        if ranges is None:
            wildcard |= bit
            continue
        for lo, hi in _merge(ranges):
            toggles[lo] = toggles.get(lo, 0) ^ bit
            toggles[hi + 1] = toggles.get(hi + 1, 0) ^ bit
    points = sorted(p for p in toggles if p < space)
    if not points or points[0] != 0:
        points.insert(0, 0)
    out: list[tuple[int, int, int]] = []
    cur = 0
    for j, p in enumerate(points):
        cur ^= toggles.get(p, 0)
        hi = (points[j + 1] - 1) if j + 1 < len(points) else space - 1
        bm = cur | wildcard
        if out and out[-1][2] == bm:
            out[-1] = (out[-1][0], hi, bm)
        else:
            out.append((p, hi, bm))
    return out


# --------------------------------------------------------------------------
# serialisation (canonical bytes -> content hash; also the state-dir format)

_MAGIC = b"XGPLAN1\n"


def _serialise(plan: Plan) -> bytes:
    head = {
        "mode": plan.mode.value,
        "non_ip": plan.non_ip.value,
        "ndp": plan.ndp,
        "timeouts": [plan.tmo_tcp, plan.tmo_udp, plan.tmo_icmp],
        "flow_table_size": plan.flow_table_size,
        "limit_table_size": plan.limit_table_size,
        "dirs": [_dir_head(d) for d in plan.directions()],
    }
    parts = [_MAGIC, _blob(json.dumps(head, sort_keys=True, separators=(",", ":")).encode())]
    for d in plan.directions():
        nbytes = d.nwords * 8
        for t in d.tables:
            parts.append(_blob(b"".join(b.to_bytes(nbytes, "little") for b in t)))
        for entries, bits in ((d.src4, 32), (d.dst4, 32), (d.src6, 128), (d.dst6, 128)):
            parts.append(_blob(_pack_lpm(entries, bits)))
        parts.append(_blob(array("I", d.proto).tobytes()))
        parts.append(_blob(array("I", d.tflags).tobytes()))
        for iv in (d.sport, d.dport, d.icmp):
            parts.append(_blob(array("I", [x for t in iv for x in t]).tobytes()))
    return b"".join(parts)


def _dir_head(d: DirectionPlan) -> dict[str, object]:
    head: dict[str, object] = {
        "name": d.name,
        "default": d.default.value,
        "nwords": d.nwords,
        # Line numbers are for messages only: moving a rule within the file
        # without changing it is no change to the plan.
        "rules": [[r.name, r.action.value, r.limit.to_list() if r.limit else None] for r in d.rules],
        "l4free": d.l4free_idx,
        "est": d.est_idx,
        "new": d.new_idx,
        "ones": d.ones_idx,
        "field_mask": d.field_mask,
        "table_sizes": [len(t) for t in d.tables],
    }
    if d.cont:
        # Only with continue rules: a plan without them keeps the identity
        # (digest) it had before continue existed.
        head["nc"] = [d.l4free_nc_idx, d.est_nc_idx, d.new_nc_idx, d.ones_nc_idx]
    return head


def _blob(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _pack_lpm(entries: LpmEntries, bits: int) -> bytes:
    nb = bits // 8
    return b"".join(a.to_bytes(nb, "big") + struct.pack("<BI", plen, i) for a, plen, i in entries)


def _unpack_lpm(data: bytes, bits: int) -> LpmEntries:
    nb = bits // 8
    step = nb + 5
    out: LpmEntries = []
    for off in range(0, len(data), step):
        a = int.from_bytes(data[off : off + nb], "big")
        plen, i = struct.unpack_from("<BI", data, off + nb)
        out.append((a, plen, i))
    return out


def plan_from_bytes(data: bytes, source: str = "") -> Plan:
    """Inverse of Plan.to_bytes(): how the state dir keeps the applied plan."""
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
        nbytes = dh["nwords"] * 8
        tables = []
        for size in dh["table_sizes"]:
            raw = blob()
            if nbytes == 0:
                tables.append(tuple(0 for _ in range(size)))
            else:
                tables.append(
                    tuple(int.from_bytes(raw[i : i + nbytes], "little") for i in range(0, len(raw), nbytes))
                )
        lpms = [_unpack_lpm(blob(), bits) for bits in (32, 32, 128, 128)]
        proto = tuple(array("I", blob()))
        tflags = tuple(array("I", blob()))
        ivs = []
        for _ in range(3):
            flat = array("I", blob())
            ivs.append(tuple((flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)))
        nc = dh.get("nc", [dh["l4free"], dh["est"], dh["new"], dh["ones"]])
        rules = tuple(
            RulePlan(
                i,
                name,
                rule_id(dh["name"], name),
                Action(act),
                0,  # not recorded: line numbers are not part of a plan's identity
                LimitPlan.from_list(lim) if lim else None,
            )
            for i, (name, act, lim) in enumerate(dh["rules"])
        )
        dirs.append(
            DirectionPlan(
                name=dh["name"],
                default=Action(dh["default"]),
                rules=rules,
                nwords=dh["nwords"],
                tables=tuple(tables),
                src4=lpms[0],
                dst4=lpms[1],
                src6=lpms[2],
                dst6=lpms[3],
                proto=proto,
                sport=ivs[0],
                dport=ivs[1],
                tflags=tflags,
                icmp=ivs[2],
                l4free_idx=dh["l4free"],
                est_idx=dh["est"],
                new_idx=dh["new"],
                ones_idx=dh["ones"],
                field_mask=dh["field_mask"],
                # Absent for plans without continue rules: the scan's bitmaps are the same.
                l4free_nc_idx=nc[0],
                est_nc_idx=nc[1],
                new_nc_idx=nc[2],
                ones_nc_idx=nc[3],
            )
        )
    tmo = head["timeouts"]
    return Plan(
        mode=Mode(head["mode"]),
        non_ip=Action(head["non_ip"]),
        ndp=head["ndp"],
        ingress=dirs[0],
        egress=dirs[1],
        tmo_tcp=tmo[0],
        tmo_udp=tmo[1],
        tmo_icmp=tmo[2],
        flow_table_size=head["flow_table_size"],
        limit_table_size=head["limit_table_size"],
        source=source,
        _bytes=data,
    )


# --------------------------------------------------------------------------
# figures for `check`

BITMAP_VALUE_SIZE = 8 + 8 * MAX_WORDS


def map_entries(d: DirectionPlan) -> dict[str, int]:
    return {
        "src_v4": len(d.src4),
        "src_v6": len(d.src6),
        "dst_v4": len(d.dst4),
        "dst_v6": len(d.dst6),
        "proto": 256,
        "sport_intervals": len(d.sport),
        "dport_intervals": len(d.dport),
        "tcp_flags": 256,
        "icmp_intervals": len(d.icmp),
        "bitmaps": d.nbitmaps,
        "rules": d.nrules,
    }


def memory_estimate(plan: Plan) -> int:
    """Bytes of kernel memory the plan's maps take while an update replaces it (2 copies).

    The address tables are built here (xdpguard/rules/stride.py), so their
    size is exact; about a second for a million prefixes.
    """
    from xdpguard.rules import stride  # numpy: only when asked

    total = 0
    for d in plan.directions():
        addr = sum(
            stride.build(e, bits).n_elems * stride.NODE_BYTES
            for e, bits in ((d.src4, 32), (d.dst4, 32), (d.src6, 128), (d.dst6, 128))
        )
        arrays = 4 * (256 + 2 * PORT_SPACE + 256 + ICMP_SPACE)
        total += 2 * (addr + arrays + d.nbitmaps * BITMAP_VALUE_SIZE + d.nrules * 24)
    return total
