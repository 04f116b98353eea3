"""The semantics: walk the rules of the model in file order (docs/rules.md).

This is deliberately naive (a linear scan over rules and prefixes): it is
the oracle that the compiled plan (classify.py) and the kernel programs are
checked against, so it must be obviously right rather than fast.
Dynamic sets hold what the caller says they hold at the moment the packet
arrives (`dyn`: set name -> live elements).

Rate limits: without a `LimiterSim` every packet is within every limit
(the verdict of a limited rule is its action; a `continue` rule passes the
packet on).  With one, limits and `block_for` are applied on its clock:
a packet over a rule's limit is dropped as that rule's, and a blocked
source is dropped before any rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from xdpguard.rules.compile import LimitPlan, rule_id
from xdpguard.rules.model import Action, AddrMatch, Mode, Prefix, Rule, RuleSet, State
from xdpguard.rules.packet import IP, MALFORMED, NON_IP, Packet
from xdpguard.rules.ratesim import LimiterSim

# Dynamic set name -> the elements it holds (expired ones left out).
DynContents = Mapping[str, Iterable[Prefix]]

PASS = "pass"
DROP = "drop"


@dataclass(frozen=True)
class Verdict:
    action: str  # PASS | DROP
    reason: str  # rule name, or "default" / "malformed" / "non_ip" / "ndp" / "blocked"
    rule_index: int | None = None
    passed: tuple[int, ...] = ()  # continue rules the packet went through, within their limits
    over: bool = False  # dropped over the deciding rule's limit


def _act(a: Action) -> str:
    return DROP if a == Action.DROP else PASS


def _addr_matches(am: AddrMatch, family: int, addr: int, dyn: DynContents) -> bool:
    if any(p.contains(family, addr) for p in am.prefixes):
        return True
    return any(p.contains(family, addr) for name in am.dynamic for p in dyn.get(name, ()))


def rule_matches(rule: Rule, pkt: Packet, dyn: DynContents | None = None) -> bool:
    m = rule.match
    dyn = dyn or {}
    if m.src is not None and not _addr_matches(m.src, pkt.family, pkt.src, dyn):
        return False
    if m.dst is not None and not _addr_matches(m.dst, pkt.family, pkt.dst, dyn):
        return False
    if m.protos is not None and pkt.proto not in m.protos:
        return False
    if m.has_l4 and pkt.later_fragment:
        return False
    if m.sport is not None and not (
        pkt.sport is not None and any(r.lo <= pkt.sport <= r.hi for r in m.sport)
    ):
        return False
    if m.dport is not None and not (
        pkt.dport is not None and any(r.lo <= pkt.dport <= r.hi for r in m.dport)
    ):
        return False
    if m.tcp_flags is not None and not (pkt.tcp_flags is not None and m.tcp_flags.matches(pkt.tcp_flags)):
        return False
    if m.icmp is not None:
        if pkt.icmp_type is None or (pkt.proto, pkt.icmp_type) not in m.icmp.types:
            return False
        if m.icmp.codes is not None and pkt.icmp_code not in m.icmp.codes:
            return False
    if m.state is not None and (m.state == State.ESTABLISHED) != pkt.in_flow:
        return False
    return True


def classify(
    rs: RuleSet,
    direction: str,
    pkt: Packet,
    limiter: LimiterSim | None = None,
    dyn: DynContents | None = None,
) -> Verdict:
    v = _decide(rs, direction, pkt, limiter, dyn or {})
    if rs.mode == Mode.AUDIT and v.action == DROP:
        return replace(v, action=PASS)
    return v


def uses_block(rs: RuleSet) -> bool:
    """Does some ingress rule block sources?  (Only then are blocks looked at.)"""
    return any(r.rate_limit is not None and r.rate_limit.block_for for r in rs.ingress.rules)


def _decide(
    rs: RuleSet, direction: str, pkt: Packet, limiter: LimiterSim | None, dyn: DynContents
) -> Verdict:
    if pkt.kind == MALFORMED:
        return Verdict(DROP, "malformed")
    if pkt.kind == NON_IP:
        return Verdict(_act(rs.non_ip), "non_ip")
    assert pkt.kind == IP
    if rs.ndp == "allow" and pkt.is_ndp:
        return Verdict(PASS, "ndp")
    if direction == "ingress" and limiter is not None and uses_block(rs) and limiter.blocked_now(pkt):
        return Verdict(DROP, "blocked")
    d = rs.ingress if direction == "ingress" else rs.egress
    passed: list[int] = []
    for i, rule in enumerate(d.rules):
        if not rule_matches(rule, pkt, dyn):
            continue
        if not _within(rule, direction, pkt, limiter):
            return Verdict(DROP, rule.name, i, tuple(passed), over=True)
        if rule.action == Action.CONTINUE:
            passed.append(i)  # as if this rule did not exist
            continue
        return Verdict(_act(rule.action), rule.name, i, tuple(passed))
    return Verdict(_act(d.default), "default", None, tuple(passed))


def _within(rule: Rule, direction: str, pkt: Packet, limiter: LimiterSim | None) -> bool:
    if rule.rate_limit is None or limiter is None:
        return True
    return limiter.admit(direction, rule_id(direction, rule.name), LimitPlan.from_model(rule.rate_limit), pkt)
