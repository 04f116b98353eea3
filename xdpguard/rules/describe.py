"""Human-readable text for rules and sets: what `check`, `plan` and `status` print.

`rule_signature` is the canonical form `plan` compares to tell a changed
rule from an unchanged one; set contents are referred to by name, so a
set edit shows as set entries added/removed, not as every rule changed.
"""

from __future__ import annotations

from typing import Any

from xdpguard.rules.addrs import prefix_key
from xdpguard.rules.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    AddrMatch,
    Match,
    Prefix,
    RateLimit,
    Rule,
    RuleSet,
)
from xdpguard.rules.parse import format_packet_rate

# direction -> per rule, its description when already known, else None
Known = dict[str, list[str | None]]

PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_ICMPV6: "icmpv6",
               IPPROTO_SCTP: "sctp"}  # fmt: skip


class SetIndex:
    """Which prefixes each set of a rule set holds, read only when asked: a
    condition naming a million-prefix set shows the set by name, and its
    own prefixes only need checking against the sets when it has any."""

    def __init__(self, rs: RuleSet) -> None:
        self._defs = {s.name: s for s in rs.sets}
        self._members: dict[str, set[tuple[int, int, int]]] = {}

    def holds(self, name: str, p: Prefix) -> bool:
        members = self._members.get(name)
        if members is None:
            sd = self._defs.get(name)
            members = self._members[name] = {prefix_key(q) for q in sd.prefixes} if sd else set()
        return prefix_key(p) in members


def _addr(am: AddrMatch, sets: SetIndex | None) -> str:
    """The sets by name, then the prefixes the condition lists that none of them holds."""
    own = am.prefixes if am.inline is None else am.inline
    if am.sets and sets is not None:
        own = tuple(p for p in own if not any(sets.holds(s, p) for s in am.sets))
    return ",".join([f"@{s}" for s in am.sets] + [str(p) for p in own])


def _protos(ps: frozenset[int]) -> str:
    if ps == PORT_PROTOS:
        return "tcp/udp/sctp"
    return ",".join(PROTO_NAMES.get(p, str(p)) for p in sorted(ps))


def describe_match(m: Match, sets: SetIndex | None = None) -> str:
    parts = []
    if m.src is not None:
        parts.append(f"src={_addr(m.src, sets)}")
    if m.dst is not None:
        parts.append(f"dst={_addr(m.dst, sets)}")
    if m.protos is not None:
        parts.append(f"proto={_protos(m.protos)}")
    if m.sport is not None:
        parts.append("sport=" + ",".join(map(str, m.sport)))
    if m.dport is not None:
        parts.append("dport=" + ",".join(map(str, m.dport)))
    if m.tcp_flags is not None:
        parts.append(f"tcp_flags={m.tcp_flags}")
    if m.icmp is not None:
        types = ",".join(f"{PROTO_NAMES[p]}/{t}" for p, t in sorted(m.icmp.types))
        parts.append(f"icmp_type={types}")
        if m.icmp.codes is not None:
            parts.append("icmp_code=" + ",".join(map(str, sorted(m.icmp.codes))))
    if m.state is not None:
        parts.append(f"state={m.state.value}")
    return " ".join(parts) or "any"


def describe_rule(r: Rule, sets: SetIndex | None = None) -> str:
    text = f"{describe_match(r.match, sets)} -> {r.action.value}"
    rl = r.rate_limit
    if rl is not None:
        rate = format_packet_rate(rl.pps) if rl.pps is not None else f"{rl.bps} bit/s"
        text += f" (limit {rate} burst {rl.burst} per {describe_per(rl)}"
        if rl.block_for:
            text += f" block_for {rl.block_for:g}s"
        text += ")"
    if r.syn_cookies:
        text += " syn_cookies"
    return text


def describe_per(rl: RateLimit) -> str:
    """What a limit's buckets are, as enforced: per source shows both prefix lengths."""
    if rl.per == "rule":
        return "rule"
    return f"source/{rl.per_prefix_v4},{rl.per_prefix_v6}"


def set_index(rs: RuleSet) -> SetIndex:
    return SetIndex(rs)


def rule_signatures(rs: RuleSet, known: Known | None = None) -> dict[str, dict[str, str]]:
    """direction -> rule name -> canonical description (with its position).

    `known`: per direction, each rule's description when already known (the
    rules rules/incremental.py took from its memo), else None.
    """
    sets = set_index(rs)  # reads a set only when a rule's listed prefix is checked against it
    out: dict[str, dict[str, str]] = {}
    for dname, d in (("ingress", rs.ingress), ("egress", rs.egress)):
        given = (known or {}).get(dname) or [None] * len(d.rules)
        sigs = {}
        for r, sig in zip(d.rules, given, strict=True):
            sigs[r.name] = describe_rule(r, sets) if sig is None else sig
        out[dname] = sigs
    return out


def summary_of(rs: RuleSet, known: Known | None = None) -> dict[str, Any]:
    """What the state dir keeps about an applied rule set, for `plan` and `status`."""
    return {
        "rules": rule_signatures(rs, known),
        "order": {
            "ingress": [r.name for r in rs.ingress.rules],
            "egress": [r.name for r in rs.egress.rules],
        },
        "settings": {
            "mode": rs.mode.value,
            "non_ip": rs.non_ip.value,
            "ndp": rs.ndp,
            "ingress.default": rs.ingress.default.value,
            "egress.default": rs.egress.default.value,
        },
        "sets": {s.name: len(s.prefixes) for s in rs.sets},
    }
