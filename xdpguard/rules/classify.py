"""Classify a packet with a compiled plan, exactly as the BPF program does.

Same lookups (the address tables' multibit tries, walked node by node as
the program walks them, arrays, elementary intervals), same
AND of bitmaps word by word guided by the summary word, same handling of
fragments, malformed frames, non-IP and NDP.  Agreement with reference.py
(a property test) proves the compiler; agreement with the kernel
(BPF_PROG_TEST_RUN) proves the program.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from xdpguard.rules import stride
from xdpguard.rules.compile import (
    F_DPORT,
    F_DST,
    F_EXTRA,
    F_ICMP,
    F_PROTO,
    F_SPORT,
    F_SRC,
    F_TFLAGS,
    ICMP_V6_BASE,
    DirectionPlan,
    Intervals,
    Plan,
)
from xdpguard.rules.model import IPPROTO_ICMPV6, IPPROTO_TCP, Action, Mode
from xdpguard.rules.packet import MALFORMED, NON_IP, Packet
from xdpguard.rules.reference import DROP, PASS, Verdict


class _Iv:
    def __init__(self, iv: Intervals) -> None:
        self.los = [lo for lo, _, _ in iv]
        self.idx = [i for _, _, i in iv]

    def lookup(self, key: int) -> int:
        return self.idx[bisect.bisect_right(self.los, key) - 1]


@dataclass
class _Dir:
    plan: DirectionPlan
    bitmaps: list[int]
    src4: stride.Table
    dst4: stride.Table
    src6: stride.Table
    dst6: stride.Table
    sport: _Iv
    dport: _Iv
    icmp: _Iv


class PlanClassifier:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.dirs = {d.name: self._prep(d) for d in plan.directions()}

    @staticmethod
    def _prep(d: DirectionPlan) -> _Dir:
        return _Dir(
            d,
            d.all_bitmaps(),
            stride.build(d.src4, 32),
            stride.build(d.dst4, 32),
            stride.build(d.src6, 128),
            stride.build(d.dst6, 128),
            _Iv(d.sport),
            _Iv(d.dport),
            _Iv(d.icmp),
        )

    def classify(self, direction: str, pkt: Packet) -> Verdict:
        v = self._decide(direction, pkt)
        if self.plan.mode == Mode.AUDIT and v.action == DROP:
            return Verdict(PASS, v.reason, v.rule_index)
        return v

    def _decide(self, direction: str, pkt: Packet) -> Verdict:
        plan = self.plan
        if pkt.kind == MALFORMED:
            return Verdict(DROP, "malformed")
        if pkt.kind == NON_IP:
            return Verdict(DROP if plan.non_ip == Action.DROP else PASS, "non_ip")
        if plan.ndp == "allow" and pkt.is_ndp:
            return Verdict(PASS, "ndp")
        dd = self.dirs[direction]
        d = dd.plan
        idx = self._match(dd, pkt)
        if idx is None:
            return Verdict(DROP if d.default == Action.DROP else PASS, "default")
        r = d.rules[idx]
        return Verdict(DROP if r.action == Action.DROP else PASS, r.name, idx)

    def _match(self, dd: _Dir, pkt: Packet) -> int | None:
        d = dd.plan
        if d.nwords == 0:
            return None
        bases = d.bases
        picked: list[int] = []  # global bitmap indexes to AND

        def use(fld: int, local: int | None) -> bool:
            if local is None:
                return False  # the BPF program counts an error and takes the default
            if d.field_mask & (1 << fld):
                picked.append(bases[fld] + local)
            return True

        v4 = pkt.family == 4
        ok = use(F_SRC, (dd.src4 if v4 else dd.src6).lookup(pkt.src))
        ok = ok and use(F_DST, (dd.dst4 if v4 else dd.dst6).lookup(pkt.dst))
        ok = ok and use(F_PROTO, d.proto[pkt.proto])
        if not ok:
            return None
        if pkt.later_fragment:
            picked.append(bases[F_EXTRA] + d.l4free_idx)
        else:
            if pkt.sport is not None and pkt.dport is not None:
                use(F_SPORT, dd.sport.lookup(pkt.sport))
                use(F_DPORT, dd.dport.lookup(pkt.dport))
            if pkt.proto == IPPROTO_TCP and pkt.tcp_flags is not None:
                use(F_TFLAGS, d.tflags[pkt.tcp_flags])
            if pkt.icmp_type is not None and pkt.icmp_code is not None:
                key = (
                    (ICMP_V6_BASE if pkt.proto == IPPROTO_ICMPV6 else 0)
                    + (pkt.icmp_type << 8)
                    + pkt.icmp_code
                )
                use(F_ICMP, dd.icmp.lookup(key))
            if d.uses_state:
                picked.append(bases[F_EXTRA] + (d.est_idx if pkt.in_flow else d.new_idx))
        return _first_rule(d.nwords, [dd.bitmaps[i] for i in picked])


def _first_rule(nwords: int, bms: list[int]) -> int | None:
    """First set bit of the AND, scanning only words the summaries allow."""
    mask64 = (1 << 64) - 1
    summary = (1 << nwords) - 1
    for bm in bms:
        summary &= _summary(bm, nwords)
    while summary:
        w = (summary & -summary).bit_length() - 1
        word = mask64
        for bm in bms:
            word &= (bm >> (64 * w)) & mask64
        if word:
            return 64 * w + (word & -word).bit_length() - 1
        summary &= summary - 1
    return None


def _summary(bm: int, nwords: int) -> int:
    s = 0
    for w in range(nwords):
        if (bm >> (64 * w)) & ((1 << 64) - 1):
            s |= 1 << w
    return s
