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
    SetDef,
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
# Dynamic sets the generators may refer to (with dynamic=True), and the
# elements random_dyn_contents() puts in them: exact addresses and prefixes
# of both families, some inside the pools' prefixes.
DYN_SETS = ("dynA", "dynB", "dynC")
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


def gen_match(pk: Picker, dynamic: bool = False) -> Match:
    fam = pk.choice([4, 6, 0])  # 0: no address condition or mixed
    pool = V4_POOL if fam == 4 else V6_POOL if fam == 6 else V4_POOL + V6_POOL

    def addr() -> AddrMatch | None:
        if fam == 0 and pk.boolean():
            return None
        if pk.integer(0, 2) == 0:
            return None
        if dynamic and pk.integer(0, 2) == 0:
            names = tuple(sorted(pk.subset(list(DYN_SETS), 1, 2)))
            static = tuple(sorted(pk.subset(pool, 0, 2)))
            return AddrMatch(static, sets=names, dynamic=names)
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
    v4, v6 = {"rule": (0, 0), "source": (32, 64), "source/24": (24, 24), "source/0": (0, 0)}[per]
    block_for = None
    if direction == "ingress" and v6 and pk.boolean():
        block_for = float(pk.choice([1, 30]))
    if pk.integer(0, 4) == 0:
        bps = pk.choice(BPS_CHOICES)
        return RateLimit(None, bps, pk.choice([1522, 4000]), per, v4, v6, block_for)
    return RateLimit(pk.choice(PPS_CHOICES), None, pk.choice([1, 3, 20]), per, v4, v6, block_for)


def gen_rule(
    pk: Picker, direction: str, name: str, line: int, guards_left: int, dynamic: bool = False
) -> Rule:
    action = pk.choice([Action.ALLOW, Action.DROP, Action.CONTINUE] if guards_left else DEFAULTS)
    limited = action == Action.CONTINUE or pk.integer(0, 2) == 0
    limit = gen_limit(pk, direction) if limited else None
    return Rule(name, gen_match(pk, dynamic), action, limit, line)


# A broad guard in front of the rules: most packets meet it, so its limit
# runs over and it blocks sources (a random set rarely does either).
LEAD_GUARD = Rule(
    "guard",
    Match(),
    Action.CONTINUE,
    RateLimit(Fraction(200), None, 3, "source", 32, 64, 1.0),
    0,
)


def gen_ruleset(pk: Picker, max_rules: int = 12, dynamic: bool = False, lead_guard: bool = False) -> RuleSet:
    def direction(prefix: str) -> Direction:
        dname = "ingress" if prefix == "in" else "egress"
        rules: list[Rule] = [LEAD_GUARD] if lead_guard and dname == "ingress" else []
        for i in range(pk.integer(0, max_rules)):
            left = MAX_CONTINUE - sum(r.action == Action.CONTINUE for r in rules)
            rules.append(gen_rule(pk, dname, f"{prefix}{i}", i + 1, left, dynamic))
        return Direction(pk.choice(DEFAULTS), tuple(rules))

    sets = tuple(SetDef(n, (), None, 1, dynamic=True, size=1024) for n in DYN_SETS) if dynamic else ()
    return RuleSet(
        version=1,
        mode=pk.choice([Mode.ENFORCE, Mode.ENFORCE, Mode.AUDIT]),
        non_ip=pk.choice(DEFAULTS),
        ndp=pk.choice(["allow", "rules"]),
        sets=sets,
        ingress=direction("in"),
        egress=direction("eg"),
    )


@st.composite
def rulesets(draw: st.DrawFn, max_rules: int = 12, dynamic: bool = False) -> RuleSet:
    return gen_ruleset(Picker(draw=draw), max_rules, dynamic)


def random_ruleset(
    rng: random.Random, max_rules: int = 12, dynamic: bool = False, lead_guard: bool = False
) -> RuleSet:
    return gen_ruleset(Picker(rng=rng), max_rules, dynamic, lead_guard)


def random_dyn_contents(rng: random.Random) -> dict[str, list[Prefix]]:
    """Elements for each of DYN_SETS: a few exact addresses and prefixes of both
    families, drawn near the pools' prefixes so that packets hit them."""
    out: dict[str, list[Prefix]] = {}
    for name in DYN_SETS:
        elems: set[Prefix] = set()
        for _ in range(rng.randint(0, 5)):
            fam = rng.choice([4, 6])
            bits = 32 if fam == 4 else 128
            base = rng.choice(V4_POOL if fam == 4 else V6_POOL)
            plen = rng.choice([bits, bits, bits, rng.randint(max(base.plen, 1), bits)])
            host = rng.getrandbits(bits - base.plen) if base.plen < bits else 0
            addr = (base.addr | host) & ~((1 << (bits - plen)) - 1)
            elems.add(Prefix(fam, addr, plen))
        out[name] = sorted(elems)
    return out


def _addr_near(rng: random.Random, rs: RuleSet, fam: int, extra: list[Prefix] | None = None) -> int:
    prefixes = [
        p
        for d in (rs.ingress, rs.egress)
        for r in d.rules
        for am in (r.match.src, r.match.dst)
        if am is not None
        for p in am.prefixes
        if p.family == fam
    ]
    near = [p for p in extra or () if p.family == fam]
    pool = V4_POOL if fam == 4 else V6_POOL
    bits = 32 if fam == 4 else 128
    p = rng.choice(near) if near and rng.random() < 0.5 else rng.choice(prefixes or pool)
    host = rng.getrandbits(bits - p.plen) if p.plen < bits else 0
    a = p.addr | host
    if rng.random() < 0.2:
        a ^= 1 << rng.randrange(bits)  # just outside, sometimes
    return a


def random_packet(rng: random.Random, rs: RuleSet, near: list[Prefix] | None = None) -> Packet:
    """A random packet; addresses are drawn near the rules' prefixes and `near`."""
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
        src=_addr_near(rng, rs, fam, near),
        dst=_addr_near(rng, rs, fam, near),
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


# --------------------------------------------------------------------------
# Large rule sets (thousands to 65,536 rules)
#
# Drawn from a wide value space so that most rules are narrow and a packet
# drawn inside rule k is first matched at or near k: the scan then has to
# reach every group of 4,096 rules, not stop in the first words.


def _large_prefix(rng: random.Random, fam: int, pool: list[int]) -> Prefix:
    bits = 32 if fam == 4 else 128
    plen = rng.choice([16, 24, 24, 28, 32, 32, 32, 32] if fam == 4 else [48, 64, 64, 128])
    # Networks from a pool: sets large enough to need every group, with
    # prefixes that nest and repeat as real ones do.
    base = rng.choice(pool) << (bits - 32)
    addr = (base | rng.getrandbits(bits - 24)) & (((1 << plen) - 1) << (bits - plen))
    return Prefix(fam, addr, plen)


def _large_match(rng: random.Random, pool: list[int]) -> Match:
    fam = rng.choice([4, 4, 4, 6])
    broad = rng.random() < 0.01  # a few rules match much more than the rest
    src = AddrMatch((_large_prefix(rng, fam, pool),)) if not broad and rng.random() < 0.9 else None
    dst = AddrMatch((_large_prefix(rng, fam, pool),)) if not broad and rng.random() < 0.9 else None
    kind = rng.choices(["ports", "proto", "none", "flags", "icmp"], weights=[80, 6, 2, 6, 6])[0]
    if broad or src is None or dst is None:
        kind = "ports"  # an address wildcard with a narrow port: broad, not everything
    protos = sport = dport = tflags = icmp = None
    if kind == "ports":
        protos = frozenset({rng.choice([IPPROTO_TCP, IPPROTO_UDP])})
        if rng.random() < 0.5:
            lo = rng.choice(PORT_EDGES + [1024 * rng.randrange(64)])
            sport = (PortRange(lo, min(65535, lo + rng.choice([0, 0, 10, 1000]))),)
        lo = rng.randrange(0, 65536, 37)
        dport = (PortRange(lo, min(65535, lo + rng.choice([0, 0, 0, 5, 500]))),)
    elif kind == "proto":
        protos = frozenset({rng.choice(PROTOS)})
    elif kind == "flags":
        s = rng.randrange(256)
        tflags = TcpFlags(s, rng.randrange(256) & ~s)
        protos = frozenset({IPPROTO_TCP})
    elif kind == "icmp":
        p = IPPROTO_ICMP if fam == 4 else IPPROTO_ICMPV6
        icmp = IcmpMatch(frozenset({(p, rng.choice([0, 3, 8, 11, 128, 129]))}), None)
        protos = frozenset({p})
    state = rng.choices([None, State.ESTABLISHED, State.NEW], weights=[90, 5, 5])[0]
    return Match(src, dst, protos, sport, dport, tflags, icmp, state)


def large_ruleset(rng: random.Random, n: int, egress: int = 0) -> RuleSet:
    """n ingress rules (and `egress` egress rules), mostly narrow, in random order."""

    pool = [rng.getrandbits(24) << 8 for _ in range(max(16, n // 16))]

    def direction(prefix: str, count: int) -> Direction:
        rules = tuple(
            Rule(f"{prefix}{i}", _large_match(rng, pool), rng.choice(DEFAULTS), None, i + 1)
            for i in range(count)
        )
        return Direction(rng.choice(DEFAULTS), rules)

    return RuleSet(
        version=1,
        mode=Mode.ENFORCE,
        non_ip=Action.ALLOW,
        ndp="allow",
        sets=(),
        ingress=direction("in", n),
        egress=direction("eg", egress),
    )


def _inside(rng: random.Random, am: AddrMatch | None, fam: int) -> int:
    bits = 32 if fam == 4 else 128
    if am is None:
        return rng.getrandbits(bits)
    p = rng.choice([p for p in am.prefixes if p.family == fam])
    return p.addr | (rng.getrandbits(bits - p.plen) if p.plen < bits else 0)


def packet_in_rule(rng: random.Random, r: Rule) -> Packet:
    """A packet that rule r matches (an earlier rule may match it too)."""
    m = r.match
    fams = {p.family for am in (m.src, m.dst) if am is not None for p in am.prefixes} or {4, 6}
    if m.src is not None:
        fams &= {p.family for p in m.src.prefixes}
    if m.dst is not None:
        fams &= {p.family for p in m.dst.prefixes}
    if m.icmp is not None:
        fams &= {4 if p == IPPROTO_ICMP else 6 for p, _ in m.icmp.types}
    fam = rng.choice(sorted(fams))
    protos = sorted(m.protos) if m.protos is not None else [IPPROTO_TCP, IPPROTO_UDP, 47]
    if m.icmp is not None:
        protos = [p for p, _ in m.icmp.types if (p == IPPROTO_ICMP) == (fam == 4)]
    proto = rng.choice(protos)
    pkt: dict[str, object] = dict(
        kind=IP,
        length=rng.randrange(60, 200),
        family=fam,
        src=_inside(rng, m.src, fam),
        dst=_inside(rng, m.dst, fam),
        proto=proto,
        later_fragment=False,
        established=m.state == State.ESTABLISHED,
    )
    if proto in PORT_PROTOS:

        def port(pr: tuple[PortRange, ...] | None) -> int:
            if pr is None:
                return rng.randrange(65536)
            x = rng.choice(pr)
            return rng.randint(x.lo, x.hi)

        pkt["sport"], pkt["dport"] = port(m.sport), port(m.dport)
        if proto == IPPROTO_TCP:
            f = rng.randrange(256)
            if m.tcp_flags is not None:
                f = (f | m.tcp_flags.set_mask) & ~m.tcp_flags.clear_mask
            pkt["tcp_flags"] = f
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        types = [t for p, t in m.icmp.types if p == proto] if m.icmp is not None else [8]
        pkt["icmp_type"] = rng.choice(types)
        pkt["icmp_code"] = rng.choice(sorted(m.icmp.codes)) if m.icmp and m.icmp.codes else 0
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
