"""Dynamic sets in the rule language, the compiler and the two classifiers.

A dynamic set is declared in the file and filled at run time; here its
contents are handed to the classifiers directly.  The property test holds
the compiled plan (the bitmap OR the BPF program does) to the reference
(a plain union of the static prefixes and the set's elements), on random
rule sets that refer to dynamic sets in src and dst, alone and mixed with
static prefixes.
"""

from __future__ import annotations

import ipaddress
import random
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import random_dyn_contents, random_packet, rulesets
from xdpguard.errors import RuleError
from xdpguard.rules import reference
from xdpguard.rules.abi_consts import F_DST, F_SRC
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import DynRef, DynSetPlan, compile_ruleset, plan_from_bytes
from xdpguard.rules.model import DYNSET_DEFAULT_SIZE, MAX_DYNGROUPS, MAX_DYNSETS, Prefix
from xdpguard.rules.packet import IP, Packet
from xdpguard.rules.parse import parse_address, parse_text


def parsed(text: str):  # type: ignore[no-untyped-def]
    return parse_text(textwrap.dedent(text), "rules.yaml")


def error_of(text: str) -> RuleError:
    with pytest.raises(RuleError) as e:
        parsed(text)
    return e.value


def pfx(text: str) -> Prefix:
    net = ipaddress.ip_network(text)
    return Prefix(net.version, int(net.network_address), net.prefixlen)


BASE = """\
    version: 1
    sets:
      crowdsec: {dynamic: true, timeout: 4h, size: 1000000}
      f2b: {dynamic: true}
      office: [10.0.0.0/8]
    ingress:
      default: allow
      rules:
        - name: cs
          match: {src: "@crowdsec"}
          action: drop
        - name: f2b-ssh
          match: {src: ["@f2b", "@office"], proto: tcp, dport: 22}
          action: drop
        - name: to-cs
          match: {dst: "@crowdsec", proto: udp}
          action: drop
"""


# ---------------------------------------------------------------- parsing


def test_dynamic_set_declaration_and_references() -> None:
    rs = parsed(BASE)
    sets = {s.name: s for s in rs.sets}
    cs, f2b = sets["crowdsec"], sets["f2b"]
    assert (cs.dynamic, cs.size, cs.timeout, cs.prefixes) == (True, 1_000_000, 4 * 3600.0, ())
    assert (f2b.dynamic, f2b.size, f2b.timeout) == (True, DYNSET_DEFAULT_SIZE, None)
    assert not sets["office"].dynamic
    r0, r1, r2 = rs.ingress.rules
    assert r0.match.src is not None and r0.match.src.dynamic == ("crowdsec",) and r0.match.src.prefixes == ()
    assert r1.match.src is not None and r1.match.src.dynamic == ("f2b",)
    assert r1.match.src.sets == ("f2b", "office") and r1.match.src.prefixes == (pfx("10.0.0.0/8"),)
    assert r2.match.dst is not None and r2.match.dst.dynamic == ("crowdsec",)
    # A dynamic set can hold either family, so nothing about the rule's family is decided.
    assert r0.match.src.families == frozenset({4, 6})


def test_dynamic_set_allows_family_specific_protocols() -> None:
    rs = parsed(
        """\
        version: 1
        sets: {d: {dynamic: true}}
        ingress:
          rules:
            - name: r
              match: {src: "@d", dst: "2001:db8::1", proto: icmpv6}
              action: drop
        """
    )
    assert rs.ingress.rules[0].match.src is not None


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            "d: {dynamic: true, file: x.netset}",
            3,
            "set d: a dynamic set gets its elements from `xdpguard set add`, not from a file",
        ),
        ("d: {dynamic: false}", 3, "set d: dynamic: false must be true"),
        ("d: {dynamic: yes please}", 3, 'set d: dynamic: "yes please" must be true'),
        ("d: {dynamic: true, size: 0}", 3, "set d: size: 0 is out of range (1-16777216)"),
        ("d: {dynamic: true, size: 16777217}", 3, "out of range (1-16777216)"),
        ("d: {dynamic: true, size: big}", 3, 'set d: size: "big" is not an integer'),
        ("d: {dynamic: true, timeout: 0}", 3, "set d: timeout: 0 must be a positive duration"),
        ("d: {dynamic: true, timeout: soon}", 3, 'set d: timeout: "soon" is not a duration'),
        ("d: {dynamic: true, tmeout: 1h}", 3, 'unknown key "tmeout" in set d (did you mean "timeout"?)'),
        ("d: {file: x.netset, timeout: 1h}", 3, "set d: timeout is for dynamic sets (add dynamic: true"),
        ("d: {size: 10}", 3, "set d: size is for dynamic sets"),
        ("d" * 65 + ": {dynamic: true}", 3, "a dynamic set's name is 1-64 letters"),
    ],
)
def test_dynamic_set_errors(body: str, line: int, message: str) -> None:
    e = error_of(f"version: 1\nsets:\n  {body}\n")
    assert (e.path, e.line) == ("rules.yaml", line)
    assert message in e.message, e.message


def test_too_many_dynamic_sets() -> None:
    sets = "".join(f"  s{i}: {{dynamic: true}}\n" for i in range(MAX_DYNSETS + 1))
    e = error_of(f"version: 1\nsets:\n{sets}")
    assert e.line == 3 + MAX_DYNSETS
    assert f"more than {MAX_DYNSETS} dynamic sets" in e.message


def test_parse_address() -> None:
    assert parse_address(" 192.0.2.1 ") == pfx("192.0.2.1/32")
    assert parse_address("2001:db8::/32") == pfx("2001:db8::/32")
    with pytest.raises(ValueError, match="host bits set"):
        parse_address("192.0.2.1/24")
    with pytest.raises(ValueError, match="is not a valid IPv4 address"):
        parse_address("300.1.1.1")
    with pytest.raises(ValueError, match="is not an address or CIDR"):
        parse_address("example.com")


# ---------------------------------------------------------------- compiling


def test_compile_refs_groups_and_combinations() -> None:
    plan = compile_ruleset(parsed(BASE))
    assert plan.dynsets == (DynSetPlan("crowdsec", 1_000_000, 4 * 3600 * 10**9), DynSetPlan("f2b", 65536, 0))
    d = plan.ingress
    assert d.dyn_refs == (
        DynRef(F_SRC, "crowdsec", 0),
        DynRef(F_SRC, "f2b", 1),
        DynRef(F_DST, "crowdsec", 0),
    )
    # src: crowdsec is rule 0's, f2b rule 1's; dst: crowdsec is rule 2's.
    assert d.dyn_groups == ((0b001, 0b010), (0b100,))
    assert d.dyn_combos(0) == [0, 0b001, 0b010, 0b011] and d.dyn_combos(1) == [0, 0b100]
    # The combinations follow every field table in the bitmap table; mask m is base + m.
    bms = d.all_bitmaps()
    assert bms[d.dyn_base(0) : d.dyn_base(0) + 4] == [0, 1, 2, 3] and bms[d.dyn_base(1) + 1] == 4
    assert d.nbitmaps == len(bms) == sum(len(t) for t in d.tables) + 6
    # Statically, a rule that names only a dynamic set matches nothing.
    assert all(not (bms[d.bases[F_SRC] + i] & 1) for i in range(len(d.tables[F_SRC])))


def test_sets_shared_by_the_same_rules_share_a_group() -> None:
    plan = compile_ruleset(
        parsed(
            """\
            version: 1
            sets: {a: {dynamic: true}, b: {dynamic: true}}
            ingress:
              rules:
                - {name: r, match: {src: ["@a", "@b"]}, action: drop}
            """
        )
    )
    assert plan.ingress.dyn_refs == (DynRef(F_SRC, "a", 0), DynRef(F_SRC, "b", 0))
    assert plan.ingress.dyn_groups == ((1,), ())


def test_too_many_groups_points_at_the_rule() -> None:
    n = MAX_DYNGROUPS + 1
    sets = "".join(f"  s{i}: {{dynamic: true}}\n" for i in range(n))
    rules = "".join(f'    - {{name: r{i}, match: {{src: "@s{i}"}}, action: drop}}\n' for i in range(n))
    text = f"version: 1\nsets:\n{sets}ingress:\n  rules:\n{rules}"
    with pytest.raises(RuleError) as e:
        compile_ruleset(parse_text(text, "rules.yaml"))
    assert e.value.line == 2 + n + 2 + MAX_DYNGROUPS + 1
    assert f"more than the limit of {MAX_DYNGROUPS}" in e.value.message


def test_plan_without_dynamic_sets_keeps_its_bytes() -> None:
    """Declaring no dynamic set leaves the plan's bytes (and digest) as before dynamic sets."""
    plan = compile_ruleset(
        parsed("version: 1\ningress:\n  rules:\n    - {name: r, match: {}, action: drop}\n")
    )
    assert b"dyn" not in plan.to_bytes()


def test_plan_round_trips_with_dynamic_sets() -> None:
    plan = compile_ruleset(parsed(BASE))
    back = plan_from_bytes(plan.to_bytes())
    assert back.dynsets == plan.dynsets and back.ingress.dyn_refs == plan.ingress.dyn_refs
    assert back.ingress.dyn_groups == plan.ingress.dyn_groups
    back._bytes = None
    assert back.to_bytes() == plan.to_bytes()


def test_timeout_and_size_are_part_of_the_digest() -> None:
    a = compile_ruleset(parsed(BASE)).digest
    b = compile_ruleset(parsed(BASE.replace("timeout: 4h", "timeout: 5h"))).digest
    c = compile_ruleset(parsed(BASE.replace("size: 1000000", "size: 100"))).digest
    assert len({a, b, c}) == 3


# ---------------------------------------------------------------- classifying


def pkt(src: str, dst: str = "192.0.2.99", proto: int = 17, dport: int = 53) -> Packet:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    return Packet(IP, 80, s.version, int(s), int(d), proto, sport=4000, dport=dport)


@pytest.mark.parametrize(
    ("packet", "contents", "want"),
    [
        (pkt("198.51.100.7"), {}, "default"),
        (pkt("198.51.100.7"), {"crowdsec": [pfx("198.51.100.7/32")]}, "cs"),
        (pkt("198.51.100.7"), {"crowdsec": [pfx("198.51.100.0/24")]}, "cs"),
        (pkt("198.51.100.8"), {"crowdsec": [pfx("198.51.100.7/32")]}, "default"),
        (pkt("2001:db8::7", "2001:db8::99"), {"crowdsec": [pfx("2001:db8::/64")]}, "cs"),
        (pkt("10.1.2.3", proto=6, dport=22), {}, "f2b-ssh"),  # the static part of the list
        (pkt("192.0.2.3", proto=6, dport=22), {"f2b": [pfx("192.0.2.3/32")]}, "f2b-ssh"),
        (pkt("192.0.2.3", proto=6, dport=23), {"f2b": [pfx("192.0.2.3/32")]}, "default"),
        (pkt("192.0.2.3", "203.0.113.5"), {"crowdsec": [pfx("203.0.113.5/32")]}, "to-cs"),
        # in both sets: rule order decides, as for any two matching rules
        (
            pkt("192.0.2.3", proto=6, dport=22),
            {"crowdsec": [pfx("192.0.2.3/32")], "f2b": [pfx("192.0.2.3/32")]},
            "cs",
        ),
    ],
)
def test_examples_agree(packet: Packet, contents: dict[str, list[Prefix]], want: str) -> None:
    rs = parsed(BASE)
    got_ref = reference.classify(rs, "ingress", packet, dyn=contents)
    got_plan = PlanClassifier(compile_ruleset(rs)).classify("ingress", packet, dyn=contents)
    assert got_ref.reason == want
    assert got_plan == got_ref


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rs=rulesets(dynamic=True), seed=st.integers(0, 2**32 - 1))
def test_plan_agrees_with_reference_with_dynamic_sets(rs, seed):  # type: ignore[no-untyped-def]
    plan = compile_ruleset(rs)
    pc = PlanClassifier(plan)
    rng = random.Random(seed)
    for _ in range(4):
        contents = random_dyn_contents(rng)
        near = [p for elems in contents.values() for p in elems]
        for _ in range(15):
            packet = random_packet(rng, rs, near)
            for direction in ("ingress", "egress"):
                want = reference.classify(rs, direction, packet, dyn=contents)
                assert pc.classify(direction, packet, dyn=contents) == want, (direction, packet, contents)
