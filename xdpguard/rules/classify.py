"""Classify a packet with a compiled plan, exactly as the BPF program does.

Same lookups (the address tables' multibit tries, walked node by node as
the program walks them, arrays, elementary intervals), same two-level scan
(the top entries' group words, then the blocks' summary words, then the
words, lowest first, from a starting rule on), same handling of fragments,
malformed frames, non-IP and NDP, and the same OR of a dynamic-set
combination into the src or dst bitmap when the address is in some dynamic
set (`dyn`: set name -> live elements).  Agreement with reference.py
(a property test) proves the compiler; agreement with the kernel
(BPF_PROG_TEST_RUN) proves the program.

`continue` rules: a packet within such a rule's limit (a `LimiterSim`)
goes on to the next matching rule, found by a scan that starts after it,
as the program's loop in xg_process does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

from xdpguard.rules import stride
from xdpguard.rules.abi_consts import F_DST, F_EXTRA, F_SRC, GROUP_RULES, GROUP_WORDS, MAX_RULES
from xdpguard.rules.compile import DirectionPlan, Intervals, Plan, TwoLevel
from xdpguard.rules.fields import ADDR, ADDR_ENTRIES, ARRAY, FIELDS, INTERVALS, Field
from xdpguard.rules.model import Action, Mode
from xdpguard.rules.packet import MALFORMED, NON_IP, Packet
from xdpguard.rules.ratesim import LimiterSim
from xdpguard.rules.reference import DROP, PASS, DynContents, Verdict


class _Iv:
    def __init__(self, iv: Intervals) -> None:
        self.los = [lo for lo, _, _ in iv]
        self.idx = [i for _, _, i in iv]

    def lookup(self, key: int) -> int:
        return self.idx[bisect.bisect_right(self.los, key) - 1]


@dataclass
class _Dir:
    plan: DirectionPlan
    scan: Scanner
    addrs: dict[str, stride.Table]  # the address tables, by plan attribute (src4...)
    ivs: dict[int, _Iv]  # the INTERVALS fields' tables, by field number

    def lookup(self, f: Field, pkt: Packet) -> int | None:
        """Field f's bitmap-table index for the packet (None: the lookup failed)."""
        key = getattr(pkt, f.packet)
        if f.layout == ADDR:
            return self.addrs[f.plan_attr(pkt.family != 4)].lookup(key)
        if f.layout == ARRAY:
            return int(getattr(self.plan, f.pin)[key])
        return self.ivs[f.num].lookup(key)


class PlanClassifier:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.dirs = {d.name: self._prep(d) for d in plan.directions()}

    @staticmethod
    def _prep(d: DirectionPlan) -> _Dir:
        return _Dir(
            d,
            Scanner(d.two_level(), d.ngroups),
            {name: stride.build(getattr(d, name), 128 if v6 else 32) for name, _, v6 in ADDR_ENTRIES},
            {f.num: _Iv(getattr(d, f.pin)) for f in FIELDS if f.layout == INTERVALS},
        )

    def classify(
        self, direction: str, pkt: Packet, limiter: LimiterSim | None = None, dyn: DynContents | None = None
    ) -> Verdict:
        v = self._decide(direction, pkt, limiter, dyn or {})
        if self.plan.mode == Mode.AUDIT and v.action == DROP:
            return replace(v, action=PASS)
        return v

    def _decide(self, direction: str, pkt: Packet, limiter: LimiterSim | None, dyn: DynContents) -> Verdict:
        plan = self.plan
        if pkt.kind == MALFORMED:
            return Verdict(DROP, "malformed")
        if pkt.kind == NON_IP:
            return Verdict(DROP if plan.non_ip == Action.DROP else PASS, "non_ip")
        if plan.ndp == "allow" and pkt.is_ndp:
            return Verdict(PASS, "ndp")
        dd = self.dirs[direction]
        d = dd.plan
        default = DROP if d.default == Action.DROP else PASS
        if direction == "ingress" and limiter is not None and d.uses_block and limiter.blocked_now(pkt):
            return Verdict(DROP, "blocked")
        picked = self._select(dd, pkt, dyn) if d.nwords else None
        if picked is None:
            return Verdict(default, "default")
        # The deciding rule: a `continue` rule within its limit passes the
        # packet on, and the scan starts again after it (xg_process's loop).
        passed: list[int] = []
        idx = dd.scan.first_rule(picked, 0)
        while idx is not None:
            r = d.rules[idx]
            if not self._within(direction, idx, d, pkt, limiter):
                return Verdict(DROP, r.name, idx, tuple(passed), over=True)
            if r.action != Action.CONTINUE:
                return Verdict(DROP if r.action == Action.DROP else PASS, r.name, idx, tuple(passed))
            passed.append(idx)
            idx = dd.scan.first_rule(picked, idx + 1)
        return Verdict(default, "default", None, tuple(passed))

    @staticmethod
    def _within(direction: str, idx: int, d: DirectionPlan, pkt: Packet, limiter: LimiterSim | None) -> bool:
        r = d.rules[idx]
        if r.limit is None or limiter is None:
            return True
        return limiter.admit(direction, r.rule_id, r.limit, pkt)

    def select(self, direction: str, pkt: Packet, dyn: DynContents | None = None) -> list[Pick] | None:
        """The global bitmap indexes the program ANDs for an IP packet (None: a lookup failed);
        an (index, or-index) pair where a dynamic-set combination is ORed into the field."""
        return self._select(self.dirs[direction], pkt, dyn or {})

    def first_rule(self, direction: str, picked: list[Pick], start: int = 0) -> int | None:
        """The first rule at or after `start` in every picked bitmap (the program's xg_first_rule)."""
        dd = self.dirs[direction]
        return dd.scan.first_rule(picked, start) if dd.plan.nwords else None

    def _select(self, dd: _Dir, pkt: Packet, dyn: DynContents) -> list[Pick] | None:
        d = dd.plan
        bases = d.bases
        picked: list[Pick] = []  # global bitmap indexes to AND

        def use(fld: int, local: int | None) -> bool:
            if local is None:
                return False  # the BPF program counts an error and takes the default
            if d.field_mask & (1 << fld):
                combo = self._dyn_combo(d, fld, pkt, dyn) if fld in (F_SRC, F_DST) else None
                picked.append(bases[fld] + local if combo is None else (bases[fld] + local, combo))
            return True

        for f in FIELDS:  # the IP header's fields: a failed lookup takes the default
            if not f.l4 and not use(f.num, dd.lookup(f, pkt)):
                return None
        picked.append(bases[F_EXTRA] + d.ones_idx)  # the program's stand-in for unused fields
        if pkt.later_fragment:
            picked.append(bases[F_EXTRA] + d.l4free_idx)
        else:
            for f in FIELDS:  # the L4 header's: looked up when the packet has the key
                if f.l4 and getattr(pkt, f.packet) is not None:
                    use(f.num, dd.lookup(f, pkt))
            if d.uses_state:
                picked.append(bases[F_EXTRA] + (d.est_idx if pkt.in_flow else d.new_idx))
        return picked

    @staticmethod
    def _dyn_combo(d: DirectionPlan, fld: int, pkt: Packet, dyn: DynContents) -> int | None:
        """Global index of the combination to OR into field fld's bitmap, or None."""
        addr = pkt.src if fld == F_SRC else pkt.dst
        mask = 0
        for ref in d.dyn_refs:
            if ref.field == fld and any(p.contains(pkt.family, addr) for p in dyn.get(ref.set, ())):
                mask |= 1 << ref.group
        if not mask:
            return None
        return d.dyn_base(0 if fld == F_SRC else 1) + mask


_MASK64 = (1 << 64) - 1

# A bitmap the scan ANDs: a global top-entry index, or (index, or-index) when
# a dynamic-set combination is ORed into an address field's bitmap.
Pick = int | tuple[int, int]


def _low(x: int) -> int:
    return (x & -x).bit_length() - 1


class Scanner:
    """The program's scan (xg_scan) over one direction's two-level bitmaps."""

    def __init__(self, tl: TwoLevel, ngroups: int) -> None:
        self.tl = tl
        self.ngroups = ngroups
        self._blocks: dict[int, tuple[int, int]] = {}  # block id -> (bits, summary)

    def _block(self, bid: int) -> tuple[int, int]:
        got = self._blocks.get(bid)
        if got is None:
            bits = int.from_bytes(self.tl.blocks[bid], "little")
            summary = 0
            for w in range(GROUP_WORDS):
                if (bits >> (64 * w)) & _MASK64:
                    summary |= 1 << w
            got = self._blocks[bid] = (bits, summary)
        return got

    def _group_block(self, top: tuple[int, tuple[int, ...]], g: int) -> tuple[int, int]:
        """Bitmap `top`'s block in group g as (bits, summary); empty when it has none there."""
        groups, blk = top
        if not groups >> g & 1:
            return (0, 0)
        return self._block(blk[(groups & ((1 << g) - 1)).bit_count()])

    def first_rule(self, picked: list[Pick], start: int = 0) -> int | None:
        if start >= MAX_RULES:
            return None
        # Each pick is one top entry, or two ORed (a dynamic-set combination
        # added to an address field's bitmap): their groups, blocks, summaries
        # and words are ORed, as the program does.
        tl = self.tl
        tops = [(tl.tops[p],) if isinstance(p, int) else (tl.tops[p[0]], tl.tops[p[1]]) for p in picked]
        groups = ((1 << self.ngroups) - 1) & ~((1 << (start // GROUP_RULES)) - 1)
        for t in tops:
            union = 0
            for tg, _ in t:
                union |= tg
            groups &= union
        while groups:
            g = _low(groups)
            blocks = []
            for t in tops:
                bits = summary = 0
                for top in t:
                    b, sm = self._group_block(top, g)
                    bits, summary = bits | b, summary | sm
                blocks.append((bits, summary))
            base = g * GROUP_RULES
            r = _block_first(blocks, max(0, start - base))
            if r is not None:
                return base + r
            groups &= groups - 1
        return None


def _block_first(blocks: list[tuple[int, int]], lo: int) -> int | None:
    """First rule at or after `lo` set in every block: summaries first, then words."""
    lw = lo // 64
    summary = _MASK64 & ~((1 << lw) - 1)
    for _, sm in blocks:
        summary &= sm
    while summary:
        w = _low(summary)
        word = _MASK64
        for bits, _ in blocks:
            word &= (bits >> (64 * w)) & _MASK64
        if w == lw:
            word &= _MASK64 & ~((1 << (lo % 64)) - 1)
        if word:
            return 64 * w + _low(word)
        summary &= summary - 1
    return None
