"""Classify a packet with a compiled plan, exactly as the BPF program does.

Same lookups (the address tables' multibit tries, walked node by node as
the program walks them, arrays, elementary intervals), same
AND of bitmaps word by word guided by the summary word, same handling of
fragments, malformed frames, non-IP and NDP.  Agreement with reference.py
(a property test) proves the compiler; agreement with the kernel
(BPF_PROG_TEST_RUN) proves the program.

`continue` rules: the scan ANDs an extra bitmap without them, so it finds
the deciding rule directly; the continue rules the packet matches before
it are then tested bit by bit and applied in order (their limits, with a
`LimiterSim`), as the program's xg_continue_path does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

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
from xdpguard.rules.ratesim import LimiterSim
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

    def classify(self, direction: str, pkt: Packet, limiter: LimiterSim | None = None) -> Verdict:
        v = self._decide(direction, pkt, limiter)
        if self.plan.mode == Mode.AUDIT and v.action == DROP:
            return replace(v, action=PASS)
        return v

    def _decide(self, direction: str, pkt: Packet, limiter: LimiterSim | None) -> Verdict:
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
        found = self._match(dd, pkt)
        if found is None:
            return Verdict(default, "default")
        idx, guards = found
        passed: list[int] = []
        for g in guards:
            if not self._within(direction, g, d, pkt, limiter):
                return Verdict(DROP, d.rules[g].name, g, tuple(passed), over=True)
            passed.append(g)
        if idx is None:
            return Verdict(default, "default", None, tuple(passed))
        r = d.rules[idx]
        if not self._within(direction, idx, d, pkt, limiter):
            return Verdict(DROP, r.name, idx, tuple(passed), over=True)
        return Verdict(DROP if r.action == Action.DROP else PASS, r.name, idx, tuple(passed))

    @staticmethod
    def _within(direction: str, idx: int, d: DirectionPlan, pkt: Packet, limiter: LimiterSim | None) -> bool:
        r = d.rules[idx]
        if r.limit is None or limiter is None:
            return True
        return limiter.admit(direction, r.rule_id, r.limit, pkt)

    def _match(self, dd: _Dir, pkt: Packet) -> tuple[int | None, list[int]] | None:
        """The deciding rule (or None) and the continue rules matched before it.

        None when the direction has no rules or a lookup finds nothing (the
        program counts an error and takes the default).
        """
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
        extra, extra_nc = d.ones_idx, d.ones_nc_idx
        if pkt.later_fragment:
            extra, extra_nc = d.l4free_idx, d.l4free_nc_idx
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
                extra, extra_nc = (d.est_idx, d.est_nc_idx) if pkt.established else (d.new_idx, d.new_nc_idx)
        fields = [dd.bitmaps[i] for i in picked]
        idx = _first_rule(d.nwords, [*fields, dd.bitmaps[bases[F_EXTRA] + extra_nc]])
        matched = dd.bitmaps[bases[F_EXTRA] + extra]
        for bm in fields:
            matched &= bm
        guards = [c for c in d.cont if (idx is None or c < idx) and (matched >> c) & 1]
        return idx, guards


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
