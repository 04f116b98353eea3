"""Hypothesis strategies for random rule sets and packets, shared by the
unit oracle test and the kernel differential test.

Packets are drawn to hit the rules often: addresses are taken from (or
just beside) the rules' prefixes, ports from range boundaries, so the
interesting edges of the compiled plan get exercised.  Some rules carry
rate limits (small, so that a few thousand packets exceed them), and some
are `continue` guards; the differential tests replay them on a simulated
clock (xdpguard.rules.ratesim).
"""

from __future__ import annotations

import random
from fractions import Fraction

from hypothesis import strategies as st

from xdpguard.rules.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MAX_CONTINUE,
    PORT_PROTOS,
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
from xdpguard.rules.packet import IP, MALFORMED, NON_IP, Packet

V4_POOL = [
    Prefix(4, 0x0A000000, 8),
    Prefix(4, 0x0A010000, 16),
    Prefix(4, 0x0A010200, 24),
    Prefix(4, 0xC0000200, 24),
    Prefix(4, 0xC0000201, 32),
    Prefix(4, 0, 0),
    Prefix(4, 0xCB007100, 24),
    Prefix(4, 0x0A800000, 9),
]
V6_POOL = [
    Prefix(6, 0x20010DB8 << 96, 32),
    Prefix(6, (0x20010DB8 << 96) | (1 << 80), 48),
    Prefix(6, 0xFD << 120, 8),
    Prefix(6, (0x20010DB8 << 96) | 5, 128),
    Prefix(6, 0, 0),
]
PROTOS = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, 47, 50]
PORT_EDGES = [0, 1, 22, 53, 80, 443, 1023, 1024, 8080, 65535]


class Picker:
    """The random choices the generators make, from hypothesis or from a seeded Random.

    One set of generators serves the property tests (shrinking, via
    hypothesis) and the kernel differential test (reproducible by seed).
    """

    def __init__(self, draw: st.DrawFn | None = None, rng: random.Random | None = None) -> None:
        self.draw, self.rng = draw, rng

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi)) if self.draw else self.rng.randint(lo, hi)  # type: ignore[union-attr]

    def choice(self, seq: list):  # type: ignore[no-untyped-def, type-arg]
        return self.draw(st.sampled_from(seq)) if self.draw else self.rng.choice(seq)  # type: ignore[union-attr]

    def boolean(self) -> bool:
        return bool(self.integer(0, 1))

    def subset(self, seq: list, lo: int, hi: int) -> list:  # type: ignore[type-arg]
        if self.draw:
            return self.draw(st.lists(st.sampled_from(seq), min_size=lo, max_size=hi, unique=True))
        return self.rng.sample(seq, self.rng.randint(lo, min(hi, len(seq))))  # type: ignore[union-attr]


def gen_port_ranges(pk: Picker) -> tuple[PortRange, ...]:
    out = []
    for _ in range(pk.integer(1, 3)):
        a = pk.choice(PORT_EDGES) if pk.boolean() else pk.integer(0, 65535)
        b = pk.choice([a, a, min(65535, a + 10), 65535])
        out.append((min(a, b), max(a, b)))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(out):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(PortRange(lo, hi) for lo, hi in merged)


def gen_match(pk: Picker) -> Match:
    fam = pk.choice([4, 6, 0])  # 0: no address condition or mixed
    pool = V4_POOL if fam == 4 else V6_POOL if fam == 6 else V4_POOL + V6_POOL

    def addr() -> AddrMatch | None:
        if fam == 0 and pk.boolean():
            return None
        if pk.integer(0, 2) == 0:
            return None
        return AddrMatch(tuple(sorted(pk.subset(pool, 1, 3))))

    src, dst = addr(), addr()
    kind = pk.choice(["none", "proto", "ports", "flags", "icmp", "ports_proto"])
    protos = sport = dport = tflags = icmp = None
    if kind == "proto":
        protos = frozenset(pk.subset(PROTOS, 1, 2))
    elif kind in ("ports", "ports_proto"):
        if pk.boolean():
            sport = gen_port_ranges(pk)
        if sport is None or pk.boolean():
            dport = gen_port_ranges(pk)
        protos = frozenset(pk.subset(sorted(PORT_PROTOS), 1, 2)) if kind == "ports_proto" else PORT_PROTOS
    elif kind == "flags":
        s = pk.integer(0, 255)
        c = pk.integer(0, 255) & ~s
        tflags = TcpFlags(s, c)
        protos = frozenset({IPPROTO_TCP})
    elif kind == "icmp":
        types = set()
        for _ in range(pk.integer(1, 2)):
            types.add((pk.choice([IPPROTO_ICMP, IPPROTO_ICMPV6]), pk.choice([0, 3, 8, 128, 129, 135, 11])))
        codes = frozenset(pk.subset([0, 1, 2, 3], 1, 2)) if pk.boolean() else None
        icmp = IcmpMatch(frozenset(types), codes)
        protos = frozenset(p for p, _ in types)
    state = pk.choice([None, None, None, State.ESTABLISHED, State.NEW])
    return Match(src, dst, protos, sport, dport, tflags, icmp, state)


# Packet rates and bursts small enough that a few thousand packets, a
# fraction of a millisecond apart, run over them.
PPS_CHOICES = [Fraction(1, 12), Fraction(1), Fraction(1, 2), Fraction(200), Fraction(100_000)]
BPS_CHOICES = [64_000, 10_000_000]
DEFAULTS = [Action.ALLOW, Action.DROP]


def gen_limit(pk: Picker, direction: str) -> RateLimit:
    per = pk.choice(["rule", "source", "source/24", "source/0"])
    v4, v6 = {"rule": (0, 0), "source": (32, 128), "source/24": (24, 24), "source/0": (0, 0)}[per]
    block_for = None
    if direction == "ingress" and v6 and pk.boolean():
        block_for = float(pk.choice([1, 30]))
    if pk.integer(0, 4) == 0:
        bps = pk.choice(BPS_CHOICES)
        return RateLimit(None, bps, pk.choice([1522, 4000]), per, v4, v6, block_for)
    return RateLimit(pk.choice(PPS_CHOICES), None, pk.choice([1, 3, 20]), per, v4, v6, block_for)


def gen_rule(pk: Picker, direction: str, name: str, line: int, guards_left: int) -> Rule:
    action = pk.choice([Action.ALLOW, Action.DROP, Action.CONTINUE] if guards_left else DEFAULTS)
    limited = action == Action.CONTINUE or pk.integer(0, 2) == 0
    limit = gen_limit(pk, direction) if limited else None
    return Rule(name, gen_match(pk), action, limit, line)


# A broad guard in front of the rules: most packets meet it, so its limit
# runs over and it blocks sources (a random set rarely does either).
LEAD_GUARD = Rule(
    "guard",
    Match(),
    Action.CONTINUE,
    RateLimit(Fraction(200), None, 3, "source", 32, 128, 1.0),
    0,
)


def gen_ruleset(pk: Picker, max_rules: int = 12, lead_guard: bool = False) -> RuleSet:
    def direction(prefix: str) -> Direction:
        dname = "ingress" if prefix == "in" else "egress"
        rules: list[Rule] = [LEAD_GUARD] if lead_guard and dname == "ingress" else []
        for i in range(pk.integer(0, max_rules)):
            left = MAX_CONTINUE - sum(r.action == Action.CONTINUE for r in rules)
            rules.append(gen_rule(pk, dname, f"{prefix}{i}", i + 1, left))
        return Direction(pk.choice(DEFAULTS), tuple(rules))

    return RuleSet(
        version=1,
        mode=pk.choice([Mode.ENFORCE, Mode.ENFORCE, Mode.AUDIT]),
        non_ip=pk.choice(DEFAULTS),
        ndp=pk.choice(["allow", "rules"]),
        sets=(),
        ingress=direction("in"),
        egress=direction("eg"),
    )


@st.composite
def rulesets(draw: st.DrawFn, max_rules: int = 12) -> RuleSet:
    return gen_ruleset(Picker(draw=draw), max_rules)


def random_ruleset(rng: random.Random, max_rules: int = 12, lead_guard: bool = False) -> RuleSet:
    return gen_ruleset(Picker(rng=rng), max_rules, lead_guard)


def _addr_near(rng: random.Random, rs: RuleSet, fam: int) -> int:
    prefixes = [
        p
        for d in (rs.ingress, rs.egress)
        for r in d.rules
        for am in (r.match.src, r.match.dst)
        if am is not None
        for p in am.prefixes
        if p.family == fam
    ]
    pool = V4_POOL if fam == 4 else V6_POOL
    bits = 32 if fam == 4 else 128
    p = rng.choice(prefixes or pool)
    host = rng.getrandbits(bits - p.plen) if p.plen < bits else 0
    a = p.addr | host
    if rng.random() < 0.2:
        a ^= 1 << rng.randrange(bits)  # just outside, sometimes
    return a


def random_packet(rng: random.Random, rs: RuleSet) -> Packet:
    r = rng.random()
    if r < 0.03:
        return Packet(MALFORMED, 60)
    if r < 0.06:
        return Packet(NON_IP, 60)
    fam = rng.choice([4, 6])
    proto = rng.choice(PROTOS + [IPPROTO_TCP, IPPROTO_UDP])
    later = rng.random() < 0.08
    pkt = dict(
        kind=IP,
        length=rng.randrange(60, 1500),
        family=fam,
        src=_addr_near(rng, rs, fam),
        dst=_addr_near(rng, rs, fam),
        proto=proto,
        later_fragment=later,
        established=rng.random() < 0.3,
    )
    if not later:
        if proto in PORT_PROTOS:
            pkt["sport"] = rng.choice(PORT_EDGES + [rng.randrange(65536)])
            pkt["dport"] = rng.choice(PORT_EDGES + [rng.randrange(65536)])
            if proto == IPPROTO_TCP:
                pkt["tcp_flags"] = rng.randrange(256)
        elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            pkt["icmp_type"] = rng.choice([0, 3, 8, 11, 128, 129, 133, 135, 137, rng.randrange(256)])
            pkt["icmp_code"] = rng.choice([0, 1, 3, rng.randrange(256)])
    return Packet(**pkt)  # type: ignore[arg-type]


def packet_stream(rng: random.Random, rs: RuleSet, n: int) -> list[Packet]:
    """`n` random packets where sources often repeat: limits per source and
    block_for only show when the same source comes back."""
    from dataclasses import replace

    recent: dict[int, list[int]] = {4: [], 6: []}
    out = []
    for _ in range(n):
        pkt = random_packet(rng, rs)
        if pkt.kind == IP:
            pool = recent[pkt.family]
            if pool and rng.random() < 0.6:
                pkt = replace(pkt, src=rng.choice(pool))
            else:
                pool.append(pkt.src)
                del pool[:-4]
        out.append(pkt)
    return out
