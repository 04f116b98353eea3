"""Rule-file parsing (docs/rules.md): every field, its normalised value, every error.

Error tests assert the exact `file:line` and that the message quotes the
offending value, because that is what an operator reads.  Expected prefixes
are built with `ipaddress`, independently of the parser's own fast path.
"""

from __future__ import annotations

import ipaddress
import random
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdpguard.errors import KernelError, RuleError, UsageError, XdpguardError
from xdpguard.rules import addrs, parse
from xdpguard.rules.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    TCP_FLAG_BITS,
    Action,
    Match,
    Mode,
    PortRange,
    Prefix,
    RateLimit,
    RuleSet,
    State,
    StateTimeouts,
    TcpFlags,
)
from xdpguard.rules.parse import load, parse_duration, parse_rate, parse_size, parse_text

TCP, UDP, SCTP, ICMP, ICMP6 = IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, IPPROTO_ICMPV6


def pfx(text: str) -> Prefix:
    net = ipaddress.ip_network(text)
    return Prefix(net.version, int(net.network_address), net.prefixlen)


def pfxs(*texts: str) -> tuple[Prefix, ...]:
    return tuple(sorted((pfx(t) for t in texts), key=lambda p: (p.family, p.addr, p.plen)))


# A rule file with four sets and one ingress rule whose `match` is on line 10
# and whose next key (action, rate_limit, ...) is on line 11.
SETS = """\
version: 1
sets:
  v4net: [192.0.2.0/24, 198.51.100.0/24]
  v6net: ["2001:db8::/32"]
  mixed: [203.0.113.0/24, "2001:db8:1::/48"]
  empty: []
"""
MATCH_LINE = 10
REST_LINE = 11


def rule_file(match: str, rest: str = "action: drop", direction: str = "ingress") -> str:
    return SETS + f"{direction}:\n  rules:\n    - name: r\n      match: {match}\n      {rest}\n"


def parsed(text: str) -> RuleSet:
    return parse_text(textwrap.dedent(text), "rules.yaml")


def match_of(match: str, direction: str = "ingress") -> Match:
    rs = parse_text(rule_file(match, direction=direction), "rules.yaml")
    d = rs.ingress if direction == "ingress" else rs.egress
    return d.rules[0].match


def rate_limit_of(rl: str, direction: str = "ingress") -> RateLimit:
    rs = parse_text(rule_file("{}", f"rate_limit: {rl}", direction), "rules.yaml")
    rule = (rs.ingress if direction == "ingress" else rs.egress).rules[0]
    assert rule.rate_limit is not None
    return rule.rate_limit


def error_of(text: str, **kwargs: object) -> RuleError:
    with pytest.raises(RuleError) as info:
        parse_text(text, "rules.yaml", **kwargs)  # type: ignore[arg-type]
    return info.value


def assert_error(err: RuleError, line: int | None, *fragments: str, path: str = "rules.yaml") -> None:
    assert err.path == path, str(err)
    assert err.line == line, str(err)
    assert str(err) == f"{path}:{line}: {err.message}"
    for fragment in fragments:
        assert fragment in err.message, f"{fragment!r} not in {str(err)!r}"
    assert err.exit_code == 2


# --------------------------------------------------------------------------
# errors.py


def test_error_hierarchy_and_exit_codes() -> None:
    e = RuleError("r.yaml", 14, 'src: "10.0.0.1/8" has host bits set')
    assert str(e) == 'r.yaml:14: src: "10.0.0.1/8" has host bits set'
    assert (e.path, e.line, e.message, e.exit_code) == (
        "r.yaml",
        14,
        'src: "10.0.0.1/8" has host bits set',
        2,
    )
    assert str(RuleError("r.yaml", None, "cannot read")) == "r.yaml: cannot read"
    assert isinstance(e, XdpguardError)
    assert UsageError("bad").exit_code == 2
    assert KernelError("map is full").exit_code == 1
    assert XdpguardError("x").exit_code == 1
    assert str(KernelError("map is full")) == "map is full"


# --------------------------------------------------------------------------
# Top level


def test_minimal_file_defaults() -> None:
    rs = parse_text("version: 1\n", "minimal.yaml")
    assert rs.version == 1
    assert rs.mode is Mode.ENFORCE
    assert rs.non_ip is Action.ALLOW
    assert rs.ndp == "allow"
    assert rs.sets == ()
    assert rs.ingress.default is Action.ALLOW and rs.ingress.rules == ()
    assert rs.egress.default is Action.ALLOW and rs.egress.rules == ()
    assert rs.state_timeouts == StateTimeouts(tcp=300, udp=30, icmp=10)
    assert rs.flow_table_size == 65536
    assert rs.limit_table_size == 65536
    assert rs.source == "minimal.yaml"


def test_top_level_settings() -> None:
    rs = parsed(
        """\
        version: 1
        mode: audit
        non_ip: drop
        ndp: rules
        state_timeouts: {tcp: 1h, udp: 45s, icmp: 0.5s}
        flow_table_size: 1024
        limit_table_size: 16777216
        ingress: {default: drop}
        egress: {default: drop, rules: []}
        """
    )
    assert rs.mode is Mode.AUDIT
    assert rs.non_ip is Action.DROP
    assert rs.ndp == "rules"
    assert rs.state_timeouts == StateTimeouts(tcp=3600, udp=45, icmp=1)
    assert rs.flow_table_size == 1024
    assert rs.limit_table_size == 16 * 1024 * 1024
    assert rs.ingress.default is Action.DROP and rs.ingress.rules == ()
    assert rs.egress.default is Action.DROP and rs.egress.rules == ()


def test_partial_state_timeouts_keep_defaults() -> None:
    rs = parsed("version: 1\nstate_timeouts: {udp: 2m}\n")
    assert rs.state_timeouts == StateTimeouts(tcp=300, udp=120, icmp=10)


@pytest.mark.parametrize(
    "text, line, fragments",
    [
        ("version: 1\nsets: {a: [1.2.3.4}\nmode: audit\n", 2, ["invalid YAML"]),
        ("version: 1\nmode: enforce\n  non_ip: drop\n", 3, ["invalid YAML"]),
        ("version: 1\ningress:\n\trules: []\n", 3, ["invalid YAML"]),
        ("version: 1\nmode: !!python/object:os.system 1\n", 2, ["invalid YAML"]),
        ("", 1, ["empty"]),
        ("# nothing but a comment\n", 1, ["empty"]),
        ("- version: 1\n", 1, ["must be a mapping", '[{"version": 1}]']),
        ("just text\n", 1, ["must be a mapping", '"just text"']),
        ("version: 1\nmode: enforce\nmode: audit\n", 3, ['duplicate key "mode"', "line 2"]),
        ("version: 1\n[a]: 1\n", 2, ["mapping key"]),
        ("version: 1\nmodee: audit\n", 2, ['unknown key "modee"', 'did you mean "mode"']),
        ("version: 1\nfoo: 1\n", 2, ['unknown key "foo"', "version, mode"]),
        ("mode: audit\n", 1, ['missing "version"']),
        ("version: 2\n", 1, ["version: 2", "not supported"]),
        ('version: "1"\n', 1, ['version: "1"']),
        ("version: true\n", 1, ["version: true"]),
        ("version: 1\nmode: Audit\n", 2, ['mode: "Audit"', "enforce or audit", 'did you mean "audit"']),
        ("version: 1\nmode: 1\n", 2, ["mode: 1", "enforce or audit"]),
        ("version: 1\nnon_ip: pass\n", 2, ['non_ip: "pass"', "allow or drop"]),
        ("version: 1\nnon_ip: no\n", 2, ["non_ip: false"]),
        ("version: 1\nndp: drop\n", 2, ['ndp: "drop"', "allow or rules"]),
        ("version: 1\nstate_timeouts: {tcp: forever}\n", 2, ['state_timeouts.tcp: "forever"', "duration"]),
        ("version: 1\nstate_timeouts: {tcp: 0}\n", 2, ["state_timeouts.tcp: 0", "positive"]),
        ("version: 1\nstate_timeouts:\n  udp: 30s\n  icmpv6: 5s\n", 4, ['"icmpv6"', 'did you mean "icmp"']),
        ("version: 1\nstate_timeouts: 30s\n", 2, ["state_timeouts", '"30s"']),
        ("version: 1\nflow_table_size: 10\n", 2, ["flow_table_size: 10", "1024-16777216"]),
        ("version: 1\nflow_table_size: 99999999\n", 2, ["flow_table_size: 99999999"]),
        ("version: 1\nflow_table_size: 64k\n", 2, ['flow_table_size: "64k"', "integer"]),
        ("version: 1\nlimit_table_size: 1.5\n", 2, ["limit_table_size: 1.5"]),
        ("version: 1\ningress: [1]\n", 2, ["ingress", "[1]"]),
        ("version: 1\ningress:\n", 2, ["ingress", "null"]),
        ("version: 1\ningress:\n  defualt: drop\n", 3, ['"defualt"', 'did you mean "default"']),
        ("version: 1\negress:\n  default: deny\n", 3, ['default: "deny"', "allow or drop"]),
        ("version: 1\ningress:\n  rules: {a: 1}\n", 3, ["ingress.rules", "list"]),
        ("version: 1\ningress:\n  rules:\n    - just-a-string\n", 4, ['"just-a-string"', "mapping"]),
    ],
)
def test_top_level_errors(text: str, line: int, fragments: list[str]) -> None:
    assert_error(error_of(text), line, *fragments)


# --------------------------------------------------------------------------
# Rules: name, match, action


def test_rule_fields_and_lines() -> None:
    rs = parsed(
        """\
        version: 1
        ingress:
          default: drop
          rules:
            - name: first
              match: {}
              action: allow
            - {name: second.rule_2-x, match: {proto: udp}, action: drop}
        egress:
          rules:
            - name: first
              match: {}
              rate_limit: {pps: 5}
        """
    )
    first, second = rs.ingress.rules
    assert (first.name, first.line, first.action, first.match) == ("first", 5, Action.ALLOW, Match())
    assert (second.name, second.line, second.action) == ("second.rule_2-x", 8, Action.DROP)
    assert second.match.protos == {UDP}
    # The same name in another direction is fine; a rate limit defaults the action to allow.
    assert rs.egress.rules[0].name == "first"
    assert rs.egress.rules[0].action is Action.ALLOW


def test_empty_match_matches_every_ip_packet() -> None:
    m = match_of("{}")
    assert m == Match()
    assert not m.has_l4


@pytest.mark.parametrize(
    "text, line, fragments",
    [
        (
            "version: 1\ningress:\n  rules:\n    - match: {}\n      action: drop\n",
            4,
            ['no "name"'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: bad name\n      match: {}\n      action: drop\n",
            4,
            ['name: "bad name"', "letters, digits"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: "
            + "x" * 65
            + "\n      match: {}\n      action: drop\n",
            4,
            ['"' + "x" * 65 + '"', "1-64"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: 123\n      match: {}\n      action: drop\n",
            4,
            ["name: 123"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: ''\n      match: {}\n      action: drop\n",
            4,
            ['name: ""'],
        ),
        (
            "version: 1\ningress:\n  rules:\n"
            "    - name: dns\n      match: {}\n      action: drop\n"
            "    - name: ssh\n      match: {}\n      action: drop\n"
            "    - name: dns\n      match: {}\n      action: allow\n",
            10,
            ['name: "dns"', "already used", "line 4"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      action: drop\n",
            4,
            ['rule "a" has no "match"'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match:\n      action: drop\n",
            5,
            ["match", "null", "use {}"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: [src]\n      action: drop\n",
            5,
            ["match", '["src"]'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n",
            4,
            ['rule "a" has no "action"'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n      action: Drop\n",
            6,
            ['action: "Drop"', 'did you mean "drop"'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n      action: reject\n",
            6,
            ['action: "reject"', "allow or drop"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n      acton: drop\n",
            6,
            ['unknown key "acton" in rule "a"', 'did you mean "action"'],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n"
            "      action: drop\n      action: allow\n",
            7,
            ['duplicate key "action"', "line 6"],
        ),
        (
            "version: 1\ningress:\n  rules:\n    - nmae: a\n      match: {}\n      action: drop\n",
            4,
            ['unknown key "nmae"', 'did you mean "name"'],
        ),
    ],
)
def test_rule_errors(text: str, line: int, fragments: list[str]) -> None:
    assert_error(error_of(text), line, *fragments)


# --------------------------------------------------------------------------
# src / dst


@pytest.mark.parametrize(
    "value, expected",
    [
        ("192.0.2.1", ["192.0.2.1/32"]),
        ("192.0.2.0/24", ["192.0.2.0/24"]),
        ("0.0.0.0/0", ["0.0.0.0/0"]),
        ('"2001:db8::1"', ["2001:db8::1/128"]),
        ('"2001:db8::/32"', ["2001:db8::/32"]),
        ('"::/0"', ["::/0"]),
        ('"2001:DB8::/32"', ["2001:db8::/32"]),
        # Lists are deduplicated and sorted (v4 before v6, then address, then length).
        (
            '["2001:db8::/32", 198.51.100.0/24, 192.0.2.0/24, 192.0.2.0/24, 192.0.2.0/25]',
            ["192.0.2.0/24", "192.0.2.0/25", "198.51.100.0/24", "2001:db8::/32"],
        ),
    ],
)
@pytest.mark.parametrize("field", ["src", "dst"])
def test_addresses(field: str, value: str, expected: list[str]) -> None:
    m = match_of(f"{{{field}: {value}}}")
    addr = m.src if field == "src" else m.dst
    assert addr is not None
    assert addr.prefixes == pfxs(*expected)
    assert addr.sets == ()
    assert m.protos is None


def test_set_references_expand_and_union() -> None:
    m = match_of('{src: ["@v4net", 10.1.0.0/16, "@mixed", "@v4net"], dst: "@v6net"}')
    assert m.src is not None and m.dst is not None
    assert m.src.sets == ("v4net", "mixed")
    assert m.src.prefixes == pfxs(
        "192.0.2.0/24", "198.51.100.0/24", "10.1.0.0/16", "203.0.113.0/24", "2001:db8:1::/48"
    )
    assert m.src.families == {4, 6}
    assert m.dst.sets == ("v6net",)
    assert m.dst.prefixes == pfxs("2001:db8::/32")


def test_empty_set_is_allowed_and_matches_nothing() -> None:
    m = match_of('{src: "@empty", dst: "@v6net"}')
    assert m.src is not None and m.src.prefixes == () and m.src.sets == ("empty",)


def test_mixed_family_src_with_single_family_dst_is_fine() -> None:
    m = match_of('{src: "@mixed", dst: 192.0.2.1}')
    assert m.src is not None and m.src.families == {4, 6}


def test_block_style_list_reports_the_line_of_the_bad_item() -> None:
    text = SETS + (
        "ingress:\n  rules:\n    - name: r\n      match:\n        src:\n"
        "          - 192.0.2.0/24\n          - 198.51.100.0/24\n          - 203.0.113.1/24\n"
        "      action: drop\n"
    )
    assert_error(error_of(text), 14, 'src: "203.0.113.1/24" has host bits set (network is 203.0.113.0/24)')


# --------------------------------------------------------------------------
# proto, ports, tcp_flags, icmp, state: values


@pytest.mark.parametrize(
    "value, expected",
    [
        ("tcp", {TCP}),
        ("udp", {UDP}),
        ("icmp", {ICMP}),
        ("icmpv6", {ICMP6}),
        ("sctp", {SCTP}),
        ("TCP", {TCP}),
        ("47", {47}),
        ('"47"', {47}),
        ("0", {0}),
        ("255", {255}),
        ("[tcp, udp, 6, 50]", {TCP, UDP, 50}),
    ],
)
def test_proto(value: str, expected: set[int]) -> None:
    assert match_of(f"{{proto: {value}}}").protos == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("22", [(22, 22)]),
        ("0", [(0, 0)]),
        ("65535", [(65535, 65535)]),
        ('"8080"', [(8080, 8080)]),
        ('"1024-65535"', [(1024, 65535)]),
        ("1024-65535", [(1024, 65535)]),
        ('"80 - 90"', [(80, 90)]),
        ('"80-80"', [(80, 80)]),
        ("[443, 80]", [(80, 80), (443, 443)]),
        # Overlapping and adjacent ranges merge.
        ('[80, 81, "82-90", "85-100", 443, 442]', [(80, 100), (442, 443)]),
        ('["1-10", "20-30", "5-25"]', [(1, 30)]),
        ("[53, 53]", [(53, 53)]),
    ],
)
@pytest.mark.parametrize("field", ["sport", "dport"])
def test_ports(field: str, value: str, expected: list[tuple[int, int]]) -> None:
    m = match_of(f"{{proto: tcp, {field}: {value}}}")
    assert getattr(m, field) == tuple(PortRange(lo, hi) for lo, hi in expected)
    assert m.has_l4


@pytest.mark.parametrize(
    "match, protos",
    [
        ("{dport: 53}", PORT_PROTOS),
        ("{sport: 53}", PORT_PROTOS),
        ("{proto: udp, dport: 53}", {UDP}),
        ("{proto: [udp, sctp], dport: 53}", {UDP, SCTP}),
        ('{tcp_flags: "syn"}', {TCP}),
        ('{tcp_flags: "syn", dport: 80}', {TCP}),
        ('{proto: tcp, tcp_flags: "syn"}', {TCP}),
        ("{icmp_type: 8}", {ICMP, ICMP6}),
        ("{icmp_type: packet-too-big}", {ICMP6}),
        ("{icmp_type: source-quench}", {ICMP}),
        ("{state: new}", None),
        ("{src: 192.0.2.1}", None),
    ],
)
def test_implied_protos(match: str, protos: set[int] | None) -> None:
    assert match_of(match).protos == protos


@pytest.mark.parametrize(
    "value, set_names, clear_names",
    [
        ('"syn"', ["syn"], []),
        ('"syn,!ack"', ["syn"], ["ack"]),
        ('"SYN, !ACK"', ["syn"], ["ack"]),
        ('"! rst"', [], ["rst"]),
        ('"fin,syn,rst,psh,ack,urg,ece,cwr"', list(TCP_FLAG_BITS), []),
        ('"!fin,!syn,!rst,!psh,!ack,!urg,!ece,!cwr"', [], list(TCP_FLAG_BITS)),
        ('[syn, "!ack"]', ["syn"], ["ack"]),
        ('"syn,syn"', ["syn"], []),
    ],
)
def test_tcp_flags(value: str, set_names: list[str], clear_names: list[str]) -> None:
    m = match_of(f"{{tcp_flags: {value}}}")
    set_mask = sum(TCP_FLAG_BITS[n] for n in set_names)
    clear_mask = sum(TCP_FLAG_BITS[n] for n in clear_names)
    assert m.tcp_flags == TcpFlags(set_mask=set_mask, clear_mask=clear_mask)
    assert m.protos == {TCP}


def test_tcp_flags_semantics() -> None:
    flags = match_of('{tcp_flags: "syn,!ack"}').tcp_flags
    assert flags is not None
    assert flags.matches(TCP_FLAG_BITS["syn"])
    assert flags.matches(TCP_FLAG_BITS["syn"] | TCP_FLAG_BITS["ece"])
    assert not flags.matches(TCP_FLAG_BITS["syn"] | TCP_FLAG_BITS["ack"])
    assert not flags.matches(0)


# Name -> (ICMPv4 type or None, ICMPv6 type or None).
ICMP_NAMES = {
    "echo-reply": (0, 129),
    "dest-unreachable": (3, 1),
    "destination-unreachable": (3, 1),
    "source-quench": (4, None),
    "redirect": (5, 137),
    "echo-request": (8, 128),
    "router-advertisement": (9, 134),
    "router-solicitation": (10, 133),
    "time-exceeded": (11, 3),
    "parameter-problem": (12, 4),
    "timestamp-request": (13, None),
    "timestamp-reply": (14, None),
    "packet-too-big": (None, 2),
    "mld-query": (None, 130),
    "neighbor-solicitation": (None, 135),
    "neighbour-solicitation": (None, 135),
    "neighbor-advertisement": (None, 136),
    "neighbour-advertisement": (None, 136),
}


@pytest.mark.parametrize("name, types", ICMP_NAMES.items())
def test_icmp_names_resolve_per_family(name: str, types: tuple[int | None, int | None]) -> None:
    v4, v6 = types
    expected = {(p, t) for p, t in ((ICMP, v4), (ICMP6, v6)) if t is not None}
    m = match_of(f"{{icmp_type: {name}}}")
    assert m.icmp is not None
    assert m.icmp.types == expected
    assert m.icmp.codes is None
    assert m.protos == {p for p, _ in expected}
    if v4 is not None:
        assert match_of(f"{{proto: icmp, icmp_type: {name}}}").icmp.types == {(ICMP, v4)}  # type: ignore[union-attr]
    if v6 is not None:
        assert match_of(f"{{proto: icmpv6, icmp_type: {name}}}").icmp.types == {(ICMP6, v6)}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "match, types, codes",
    [
        ("{icmp_type: 8}", {(ICMP, 8), (ICMP6, 8)}, None),
        ('{icmp_type: "8"}', {(ICMP, 8), (ICMP6, 8)}, None),
        ("{icmp_type: Echo-Request}", {(ICMP, 8), (ICMP6, 128)}, None),
        ("{proto: icmp, icmp_type: [0, 8, echo-request]}", {(ICMP, 0), (ICMP, 8)}, None),
        ("{proto: [icmp, icmpv6], icmp_type: 3}", {(ICMP, 3), (ICMP6, 3)}, None),
        ("{icmp_type: [echo-request, packet-too-big]}", {(ICMP, 8), (ICMP6, 128), (ICMP6, 2)}, None),
        # Addresses of one family restrict the families a type applies to.
        ("{src: 192.0.2.0/24, icmp_type: echo-request}", {(ICMP, 8)}, None),
        ('{dst: "2001:db8::/32", icmp_type: 8}', {(ICMP6, 8)}, None),
        ('{src: "@v4net", dst: "@mixed", icmp_type: 8}', {(ICMP, 8)}, None),
        ('{src: "@mixed", icmp_type: echo-request}', {(ICMP, 8), (ICMP6, 128)}, None),
        ("{icmp_type: dest-unreachable, icmp_code: 4}", {(ICMP, 3), (ICMP6, 1)}, {4}),
        ("{icmp_type: 3, icmp_code: [0, 1, 1, 255]}", {(ICMP, 3), (ICMP6, 3)}, {0, 1, 255}),
    ],
)
def test_icmp(match: str, types: set[tuple[int, int]], codes: set[int] | None) -> None:
    m = match_of(match)
    assert m.icmp is not None
    assert m.icmp.types == types
    assert m.icmp.codes == codes
    assert m.protos == {p for p, _ in types}


@pytest.mark.parametrize("value, state", [("established", State.ESTABLISHED), ("new", State.NEW)])
def test_state(value: str, state: State) -> None:
    m = match_of(f"{{state: {value}}}")
    assert m.state is state
    assert m.has_l4


# --------------------------------------------------------------------------
# Match errors: all on the match line, all naming the value


MATCH_ERRORS = [
    # addresses
    ("{src: 10.0.0.1/8}", ['src: "10.0.0.1/8" has host bits set (network is 10.0.0.0/8)']),
    ('{dst: "2001:db8::1/32"}', ['dst: "2001:db8::1/32" has host bits set (network is 2001:db8::/32)']),
    ("{src: 10.0.0.256}", ['"10.0.0.256"', "IPv4", "256"]),
    ("{src: 10.0.0}", ['"10.0.0"', "IPv4"]),
    ("{src: 010.0.0.1}", ['"010.0.0.1"']),
    ("{src: 10.0.0.0/33}", ['"10.0.0.0/33"', "prefix length", "/32"]),
    ('{src: "2001:db8::/129"}', ['"2001:db8::/129"', "prefix length", "/128"]),
    ('{src: "10.0.0.0/"}', ['"10.0.0.0/"', "prefix length"]),
    ('{src: "10.0.0.0/x"}', ['"10.0.0.0/x"', "prefix length"]),
    ('{src: "10.0.0.0/+8"}', ['"10.0.0.0/+8"', "prefix length"]),
    ("{src: hello}", ['src: "hello" is not an address or CIDR']),
    ('{src: "2001:db8::g"}', ['"2001:db8::g"', "IPv6"]),
    ('{src: "fe80::1%eth0"}', ['"fe80::1%eth0"', "IPv6"]),
    ("{src: 12}", ["src: 12 is not an address"]),
    ("{src: 1:2:3:4:5:6:7:8}", ["quote IPv6 addresses"]),
    ("{src: []}", ["src: empty list"]),
    ("{dst: {a: 1}}", ['dst: {"a": 1}']),
    ("{src: [192.0.2.1, null]}", ["src: null"]),
    ('{src: "@nope"}', ['src: unknown set "@nope"']),
    ('{src: "@v4nett"}', ['unknown set "@v4nett"', 'did you mean "@v4net"']),
    ('{dst: ["@v4net", "@zzzzzz"]}', ['unknown set "@zzzzzz"', "@v4net, @v6net"]),
    # families that can never meet
    ('{src: 192.0.2.0/24, dst: "2001:db8::/32"}', ['dst: "2001:db8::/32" is IPv6 only', "never match"]),
    ('{src: "@v4net", dst: "@v6net"}', ['dst: "@v6net"', "never match"]),
    ('{src: "@v6net", proto: icmp}', ["icmp", "IPv6 only", "never match"]),
    ("{dst: 192.0.2.1, proto: icmpv6}", ["icmpv6", "IPv4 only", "never match"]),
    ('{src: "@v6net", icmp_type: source-quench}', ['icmp_type: "source-quench"', "icmp", "never match"]),
    ("{src: 192.0.2.1, icmp_type: neighbor-solicitation}", ['"neighbor-solicitation"', "icmpv6"]),
    # proto
    ("{proto: tpc}", ['proto: "tpc"', 'did you mean "tcp"']),
    ("{proto: 256}", ["proto: 256 is out of range"]),
    ("{proto: -1}", ["proto: -1"]),
    ('{proto: "300"}', ["proto: 300"]),
    ("{proto: []}", ["proto: empty list"]),
    ("{proto: true}", ["proto: true"]),
    ("{proto: 6.0}", ["proto: 6.0"]),
    ("{proto: [tcp, bogus]}", ['proto: "bogus"']),
    # ports
    ("{dport: 70000}", ["dport: 70000 is out of range"]),
    ("{sport: -1}", ["sport: -1"]),
    ('{dport: "100-50"}', ['dport: "100-50" is an empty range']),
    ('{dport: "1-70000"}', ['dport: "1-70000"', "70000"]),
    ("{dport: http}", ['dport: "http" is not a port or a range']),
    ('{dport: "-5"}', ['dport: "-5"']),
    ('{dport: "1-2-3"}', ['dport: "1-2-3"']),
    ("{dport: 80.5}", ["dport: 80.5"]),
    ("{dport: true}", ["dport: true"]),
    ("{dport: []}", ["dport: empty list"]),
    ('{dport: [80, "x"]}', ['dport: "x"']),
    ("{proto: icmp, dport: 22}", ["dport: 22 needs proto tcp, udp or sctp", "icmp has no ports"]),
    ("{proto: [tcp, icmp], sport: 22}", ["sport: 22", "icmp has no ports"]),
    ("{proto: 47, dport: 22}", ["dport: 22", "47 has no ports"]),
    ("{icmp_type: echo-request, dport: 22}", ["dport: 22", "icmp, icmpv6 have no ports"]),
    # tcp_flags
    ('{tcp_flags: "syn,!syn"}', ['tcp_flags: "syn,!syn" both sets and clears syn']),
    ('{tcp_flags: "syn,fin,!fin,!syn"}', ["syn", "fin", "both sets and clears"]),
    ('{tcp_flags: "syn,bogus"}', ['tcp_flags: "syn,bogus" has an unknown flag "bogus"']),
    ('{tcp_flags: "syn,!akc"}', ['"akc"', 'did you mean "ack"']),
    ('{tcp_flags: "syn,,ack"}', ['tcp_flags: "syn,,ack" has an empty flag']),
    ('{tcp_flags: ""}', ["empty flag"]),
    ('{tcp_flags: "!"}', ["empty flag"]),
    ("{tcp_flags: 2}", ["tcp_flags: 2"]),
    ("{proto: udp, tcp_flags: syn}", ['tcp_flags: "syn" needs proto tcp', "udp"]),
    ("{proto: [tcp, udp], tcp_flags: syn}", ["needs proto tcp", "tcp, udp"]),
    ("{tcp_flags: syn, icmp_type: 8}", ["icmp_type: 8", "tcp_flags"]),
    # icmp
    ("{icmp_type: echo-requets}", ['icmp_type: "echo-requets"', 'did you mean "echo-request"']),
    ("{icmp_type: 256}", ["icmp_type: 256 is out of range"]),
    ("{icmp_type: -1}", ["icmp_type: -1"]),
    ("{icmp_type: []}", ["icmp_type: empty list"]),
    ("{icmp_type: [8, null]}", ["icmp_type: null"]),
    ("{proto: tcp, icmp_type: 8}", ["icmp_type: 8 needs proto icmp or icmpv6", "tcp"]),
    ("{proto: [icmp, udp], icmp_type: 8}", ["icmp_type: 8 needs proto icmp or icmpv6", "icmp, udp"]),
    ("{proto: icmp, icmp_type: packet-too-big}", ['icmp_type: "packet-too-big" exists only for icmpv6']),
    ("{proto: icmpv6, icmp_type: source-quench}", ['icmp_type: "source-quench" exists only for icmp']),
    ("{icmp_code: 0}", ["icmp_code: 0 needs an icmp_type"]),
    ("{icmp_type: 3, icmp_code: 256}", ["icmp_code: 256 is out of range"]),
    ('{icmp_type: 3, icmp_code: "x"}', ['icmp_code: "x"']),
    ("{icmp_type: 3, icmp_code: []}", ["icmp_code: empty list"]),
    # state
    ("{state: old}", ['state: "old" must be established or new']),
    ("{state: Established}", ['state: "Established"', 'did you mean "established"']),
    ("{state: 1}", ["state: 1"]),
    # keys
    ("{dprot: 22}", ['unknown key "dprot" in match', 'did you mean "dport"']),
    ("{SRC: 192.0.2.1}", ['unknown key "SRC"', 'did you mean "src"']),
    ("{source: 192.0.2.1}", ['unknown key "source"']),
    ("{src: 192.0.2.1, src: 192.0.2.2}", ['duplicate key "src"']),
]


@pytest.mark.parametrize("match, fragments", MATCH_ERRORS)
def test_match_errors(match: str, fragments: list[str]) -> None:
    assert_error(error_of(rule_file(match)), MATCH_LINE, *fragments)


def test_state_is_ingress_only() -> None:
    assert_error(
        error_of(rule_file("{state: established}", direction="egress")),
        MATCH_LINE,
        'state: "established"',
        "ingress condition",
    )


def test_egress_accepts_every_other_match_field() -> None:
    m = match_of('{src: "@v4net", dst: 192.0.2.1, proto: tcp, sport: 1024-65535, dport: 443}', "egress")
    assert m.protos == {TCP}


# --------------------------------------------------------------------------
# rate_limit


@pytest.mark.parametrize(
    "rl, expected",
    [
        ("{pps: 1000}", dict(pps=1000, bps=None, burst=100, per="rule", v4=0, v6=0, block_for=None)),
        ("{pps: 5}", dict(pps=5, burst=1)),
        ("{pps: 15}", dict(pps=15, burst=2)),
        ("{pps: 1000, burst: 200}", dict(burst=200)),
        ("{pps: 10, per: rule}", dict(per="rule", v4=0, v6=0)),
        # per source: one bucket per IPv4 address and per IPv6 /64 (one subscriber's block)
        ("{pps: 10, per: source}", dict(per="source", v4=32, v6=64)),
        ('{pps: 10, per: "source/24,48"}', dict(per="source/24,48", v4=24, v6=48)),
        ('{pps: 10, per: "source/32, 128"}', dict(per="source/32,128", v4=32, v6=128)),
        ('{pps: 10, per: "source/0,64"}', dict(per="source/0,64", v4=0, v6=64)),
        ("{pps: 10, per: source/24}", dict(per="source/24", v4=24, v6=24)),
        ("{pps: 10, per: source/64}", dict(per="source/64", v4=32, v6=64)),
        ("{pps: 10, per: source/0}", dict(per="source/0", v4=0, v6=0)),
        ("{pps: 10, per: source/128}", dict(per="source/128", v4=32, v6=128)),
        ("{pps: 50, per: source, block_for: 30s}", dict(block_for=30.0)),
        ("{pps: 50, per: source/24, block_for: 5m}", dict(block_for=300.0)),
        ("{pps: 50, per: source, block_for: 1h}", dict(block_for=3600.0)),
        ("{pps: 50, per: source, block_for: 1d}", dict(block_for=86400.0)),
        ("{pps: 50, per: source, block_for: 90}", dict(block_for=90.0)),
        ("{pps: 50, per: source, block_for: 1.5s}", dict(block_for=1.5)),
        ("{bps: 100mbit}", dict(pps=None, bps=100_000_000, burst=1_250_000)),
        ("{bps: 1000000}", dict(bps=1_000_000, burst=12_500)),
        ("{bps: 64kbit}", dict(bps=64_000, burst=1522)),
        ("{bps: 1.5Gbit}", dict(bps=1_500_000_000, burst=18_750_000)),
        ("{bps: 100mbit, burst: 1mb}", dict(burst=1_000_000)),
        ("{bps: 100mbit, burst: 64kb}", dict(burst=64_000)),
        ("{bps: 100mbit, burst: 64KiB}", dict(burst=65_536)),
        ("{bps: 100mbit, burst: 1mib}", dict(burst=1_048_576)),
        ("{bps: 100mbit, burst: 9000}", dict(burst=9000)),
        ("{bps: 100mbit, burst: 1522b}", dict(burst=1522)),
    ],
)
def test_rate_limit(rl: str, expected: dict[str, object]) -> None:
    got = rate_limit_of(rl)
    fields = {
        "pps": got.pps,
        "bps": got.bps,
        "burst": got.burst,
        "per": got.per,
        "v4": got.per_prefix_v4,
        "v6": got.per_prefix_v6,
        "block_for": got.block_for,
    }
    assert {k: fields[k] for k in expected} == expected


def test_rate_limit_with_explicit_drop_action() -> None:
    rs = parse_text(rule_file("{}", "action: drop\n      rate_limit: {pps: 1, per: source, block_for: 1m}"))
    assert rs.ingress.rules[0].action is Action.DROP


RATE_LIMIT_ERRORS = [
    ("{pps: 10, bps: 1000}", ["exactly one of pps"]),
    ("{burst: 10}", ["exactly one of pps"]),
    ("{}", ["exactly one of pps"]),
    ("{pps: 0}", ["pps: 0 must be a positive number"]),
    ("{pps: -3}", ["pps: -3"]),
    ("{pps: fast}", ['pps: "fast"']),
    ("{pps: 0.00001}", ["pps: 1e-05 is slower than the slowest rate, 1/day"]),
    ("{pps: 99999999999}", ["pps: 99999999999 is too large"]),
    ("{pps: 10, burst: 0}", ["burst: 0 must be a positive integer"]),
    ("{pps: 10, burst: 1kb}", ['burst: "1kb"']),
    ("{bps: 100mbps}", ['bps: "100mbps" is not a rate']),
    ("{bps: 100M}", ['bps: "100M"']),
    ("{bps: 0}", ["bps: 0 must be a rate of at least 1 bit/s"]),
    ("{bps: -5}", ["bps: -5"]),
    ("{bps: 0.1}", ["bps: 0.1"]),
    ("{bps: .nan}", ["bps: nan"]),
    ("{bps: 1mbit, burst: 1mbit}", ['burst: "1mbit" is not a size']),
    ("{bps: 1mbit, burst: 100}", ["burst: 100 is less than one full-size frame (1522 bytes"]),
    ("{bps: 1mbit, burst: 0}", ["burst: 0"]),
    ("{pps: 10, per: sources}", ['per: "sources" must be rule, source or source/N']),
    ("{pps: 10, per: source/129}", ['per: "source/129"']),
    ('{pps: 10, per: "source/-1"}', ['per: "source/-1"']),
    ("{pps: 10, per: source/}", ['per: "source/"']),
    ("{pps: 10, per: 24}", ["per: 24"]),
    ("{pps: 10, block_for: 30s}", ['block_for: "30s" needs per: source or source/N']),
    ("{pps: 10, per: rule, block_for: 30s}", ['block_for: "30s" needs per: source']),
    ("{pps: 10, per: source/0, block_for: 30s}", ['block_for: "30s"', "every source"]),
    ("{pps: 10, per: source, block_for: soon}", ['block_for: "soon" is not a duration']),
    ("{pps: 10, per: source, block_for: 0}", ["block_for: 0 must be a positive duration"]),
    ("{pps: 10, per: source, block_for: -1m}", ['block_for: "-1m"']),
    ("{pps: 10, per: source, block_for: 5w}", ['block_for: "5w"']),
    ("{pps: 10, per_source: true}", ['unknown key "per_source" in rate_limit']),
    ("{pps: 10, brust: 5}", ['"brust"', 'did you mean "burst"']),
    ("100", ["rate_limit", "100"]),
]


@pytest.mark.parametrize("rl, fragments", RATE_LIMIT_ERRORS)
def test_rate_limit_errors(rl: str, fragments: list[str]) -> None:
    assert_error(error_of(rule_file("{}", f"rate_limit: {rl}")), REST_LINE, *fragments)


def test_block_for_is_ingress_only() -> None:
    err = error_of(rule_file("{}", "rate_limit: {pps: 10, per: source, block_for: 30s}", "egress"))
    assert_error(err, REST_LINE, 'block_for: "30s"', "ingress-only")


def test_rate_limit_errors_name_the_line_of_the_value_in_block_style() -> None:
    text = rule_file("{}", "rate_limit:\n        pps: 10\n        per: source\n        block_for: never")
    assert_error(error_of(text), REST_LINE + 3, 'block_for: "never"')


# --------------------------------------------------------------------------
# Unit helpers


@pytest.mark.parametrize(
    "value, seconds",
    [
        (30, 30.0),
        (1.5, 1.5),
        ("45", 45.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (" 10 S ", 10.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("2d12h", 216000.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "s", "10x", "1h30x", "30s1", "-1s", "0s", 0, -5, True, None, [1], float("inf"), "ten"]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    "value, bits",
    [
        (1, 1),
        (1000, 1000),
        (2.5e6, 2_500_000),
        ("1000", 1000),
        ("500kbit", 500_000),
        ("100mbit", 100_000_000),
        ("100MBit", 100_000_000),
        ("1.5mbit", 1_500_000),
        ("10gbit", 10_000_000_000),
        ("0.001kbit", 1),
    ],
)
def test_parse_rate(value: object, bits: int) -> None:
    assert parse_rate(value) == bits


@pytest.mark.parametrize(
    "value", ["", "mbit", "100mbps", "100mb", "100bit", "1e6", "0", 0, "-1mbit", False, None]
)
def test_parse_rate_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_rate(value)


@pytest.mark.parametrize(
    "value, size",
    [
        (1500, 1500),
        ("1500", 1500),
        ("1500b", 1500),
        ("64kb", 64_000),
        ("1mb", 1_000_000),
        ("1MB", 1_000_000),
        ("1gb", 1_000_000_000),
        ("64kib", 65_536),
        ("1mib", 1_048_576),
        ("1gib", 1_073_741_824),
        ("1.5kb", 1500),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "kb", "1mbit", "1 k", "0", 0, "-1kb", True, None])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


# --------------------------------------------------------------------------
# Sets: inline and files


def test_inline_sets() -> None:
    rs = parse_text(SETS + "ingress: {}\n", "rules.yaml")
    sets = {s.name: s for s in rs.sets}
    assert [s.name for s in rs.sets] == ["v4net", "v6net", "mixed", "empty"]
    assert sets["v4net"].prefixes == pfxs("192.0.2.0/24", "198.51.100.0/24")
    assert sets["v4net"].file is None
    assert sets["v4net"].line == 3
    assert sets["mixed"].prefixes == pfxs("203.0.113.0/24", "2001:db8:1::/48")
    assert sets["empty"].prefixes == ()


@pytest.mark.parametrize(
    "text, line, fragments",
    [
        ("version: 1\nsets: [a]\n", 2, ["sets", '["a"]']),
        ("version: 1\nsets:\n  bad name: []\n", 3, ['set name "bad name"']),
        ("version: 1\nsets:\n  42: []\n", 3, ["set name 42"]),
        ("version: 1\nsets:\n  x:\n", 3, ["set x", "null"]),
        ("version: 1\nsets:\n  x: 192.0.2.0/24\n", 3, ["set x", '"192.0.2.0/24"', "{file: path}"]),
        (
            "version: 1\nsets:\n  x:\n    - 192.0.2.0/24\n    - 192.0.2.1/24\n",
            5,
            ['set x: "192.0.2.1/24" has host bits set'],
        ),
        ("version: 1\nsets:\n  x: [192.0.2.0/24, 7]\n", 3, ["set x: 7"]),
        ("version: 1\nsets:\n  x: [192.0.2.1]\n  y: ['@x']\n", 4, ['"@x"', "another set"]),
        ("version: 1\nsets:\n  x: {path: a.txt}\n", 3, ['unknown key "path" in set x', "file"]),
        ("version: 1\nsets:\n  x: {}\n", 3, ['set x: missing "file"']),
        ("version: 1\nsets:\n  x: {file: 7}\n", 3, ["set x: file: 7"]),
        ("version: 1\nsets:\n  x: {file: ''}\n", 3, ['set x: file: ""']),
        ("version: 1\nsets:\n  x: []\n  x: []\n", 4, ['duplicate key "x"']),
    ],
)
def test_set_errors(text: str, line: int, fragments: list[str]) -> None:
    assert_error(error_of(text), line, *fragments)


def write_rules(directory: Path, text: str, name: str = "rules.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


SET_FILE_RULES = """\
version: 1
sets:
  block: {file: lists/block.netset}
ingress:
  rules:
    - name: drop-block
      match: {src: "@block"}
      action: drop
"""


def test_set_file_resolves_relative_to_the_rule_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "lists").mkdir(parents=True)
    (conf / "lists" / "block.netset").write_text(
        "# drop list\n"
        "\n"
        "198.51.100.0/24   # trailing comment\n"
        "   192.0.2.7\n"
        "2001:db8:bad::/48\n"
        "2001:DB8::1\n"
        "\t# indented comment\n"
        "192.0.2.7/32\n"
        "10.0.0.0/8\r\n"
        "0.0.0.0/0\n"
        "::/0"
    )
    path = write_rules(conf, SET_FILE_RULES)
    monkeypatch.chdir(tmp_path)  # not the rule file's directory
    rs = load(path)
    (block,) = rs.sets
    assert block.name == "block"
    assert block.file == str(conf / "lists" / "block.netset")
    assert block.line == 3
    assert block.prefixes == pfxs(
        "0.0.0.0/0",
        "10.0.0.0/8",
        "192.0.2.7/32",
        "198.51.100.0/24",
        "::/0",
        "2001:db8::1/128",
        "2001:db8:bad::/48",
    )
    src = rs.ingress.rules[0].match.src
    assert src is not None and src.prefixes == block.prefixes and src.sets == ("block",)
    assert rs.source == str(path)


def test_set_file_with_relative_rule_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf" / "lists").mkdir(parents=True)
    (tmp_path / "conf" / "lists" / "block.netset").write_text("192.0.2.0/24\n")
    write_rules(tmp_path / "conf", SET_FILE_RULES)
    monkeypatch.chdir(tmp_path)
    rs = load("conf/rules.yaml")
    assert rs.sets[0].file == str(Path("conf/lists/block.netset"))
    assert rs.sets[0].prefixes == pfxs("192.0.2.0/24")


def test_parse_text_uses_base_dir(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block.netset").write_text("192.0.2.0/24\n")
    rs = parse_text(SET_FILE_RULES, "<stdin>", base_dir=tmp_path)
    assert rs.sets[0].prefixes == pfxs("192.0.2.0/24")
    assert rs.source == "<stdin>"


def test_absolute_set_file_path(tmp_path: Path) -> None:
    (tmp_path / "abs.netset").write_text("192.0.2.0/24\n")
    rs = parse_text(f"version: 1\nsets:\n  a: {{file: '{tmp_path / 'abs.netset'}'}}\n", "r.yaml")
    assert rs.sets[0].prefixes == pfxs("192.0.2.0/24")


def test_empty_set_file_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block.netset").write_text("# nothing blocked yet\n\n")
    rs = load(write_rules(tmp_path, SET_FILE_RULES))
    assert rs.sets[0].prefixes == ()
    assert rs.ingress.rules[0].match.src.prefixes == ()  # type: ignore[union-attr]


def test_non_ascii_comments_take_the_line_by_line_path(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block.netset").write_text(
        "# réseau bloqué\n192.0.2.0/24  # café\n", encoding="utf-8"
    )
    rs = load(write_rules(tmp_path, SET_FILE_RULES))
    assert rs.sets[0].prefixes == pfxs("192.0.2.0/24")


@pytest.mark.parametrize(
    "content, line, fragments",
    [
        ("192.0.2.0/24\n# fine\n10.0.0.1/8\n", 3, ['"10.0.0.1/8" has host bits set (network is 10.0.0.0/8)']),
        (
            "192.0.2.0/24\n2001:db8::1/32  # no\n",
            2,
            ['"2001:db8::1/32" has host bits set (network is 2001:db8::/32)'],
        ),
        ("192.0.2.0/24\n\n\n192.0.2.300\n", 4, ['"192.0.2.300"', "IPv4"]),
        ("192.0.2.0/24\n192.0.2.0/33\n", 2, ['"192.0.2.0/33"', "prefix length"]),
        ("192.0.2.0/24\n192.0.2.0/ 24\n", 2, ['"192.0.2.0/ 24"']),
        ("192.0.2.0 198.51.100.0\n", 1, ['"192.0.2.0 198.51.100.0"']),
        ("# café\nnot-an-address\n", 2, ['"not-an-address"']),
        ("2001:db8::/32\n2001:db8:::1\n", 2, ['"2001:db8:::1"', "IPv6"]),
        ("192.0.2.0/٢٤\n", 1, ['"192.0.2.0/٢٤"', "prefix length"]),
    ],
)
def test_set_file_errors_name_the_set_file_and_its_line(
    tmp_path: Path, content: str, line: int, fragments: list[str]
) -> None:
    (tmp_path / "lists").mkdir()
    set_file = tmp_path / "lists" / "block.netset"
    set_file.write_text(content, encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load(write_rules(tmp_path, SET_FILE_RULES))
    assert_error(info.value, line, *fragments, path=str(set_file))


def test_set_file_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    set_file = tmp_path / "lists" / "block.netset"
    set_file.write_bytes(b"192.0.2.0/24\n# caf\xe9\n")
    with pytest.raises(RuleError) as info:
        load(write_rules(tmp_path, SET_FILE_RULES))
    assert_error(info.value, 2, "not UTF-8", path=str(set_file))


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unreadable_set_file_is_reported_at_the_rule_line(tmp_path: Path, make: str) -> None:
    if make == "directory":
        (tmp_path / "lists" / "block.netset").mkdir(parents=True)
        reason = "Is a directory"
    else:
        reason = "No such file or directory"
    path = write_rules(tmp_path, SET_FILE_RULES)
    with pytest.raises(RuleError) as info:
        load(path)
    expected_file = str(tmp_path / "lists" / "block.netset")
    assert_error(info.value, 3, f'set block: cannot read "{expected_file}"', reason, path=str(path))


def test_large_set_file(tmp_path: Path) -> None:
    rng = random.Random(1)
    nets = {(rng.randrange(1, 224) << 24) | (rng.randrange(1 << 16) << 8) for _ in range(200_000)}
    lines = [f"{ipaddress.IPv4Address(n)}/24" for n in nets]
    lines[::1000] = [f"# comment {i}" for i in range(len(lines[::1000]))]
    lines.append("2001:db8::/32")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "block.netset").write_text("\n".join(lines) + "\n")
    rs = load(write_rules(tmp_path, SET_FILE_RULES))
    prefixes = rs.sets[0].prefixes
    expected_v4 = sorted(
        int(ipaddress.IPv4Network(s).network_address) for s in lines if not s.startswith(("#", "2001"))
    )
    assert len(prefixes) == len(expected_v4) + 1
    assert [p.addr for p in prefixes[:-1]] == expected_v4
    assert all(p.family == 4 and p.plen == 24 for p in prefixes[:-1])
    assert prefixes[-1] == pfx("2001:db8::/32")


# The fast column-wise scan and the line-by-line scan must accept exactly the
# same files; random mixes of good and broken lines check that they agree.
_GOOD_LINES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)))
    ),
    st.ip_addresses(v=6).flatmap(
        lambda a: st.integers(0, 128).map(lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)))
    ),
    st.sampled_from(["", "# comment", "  ", "192.0.2.0/24 # c", "\t2001:db8::/32\r"]),
)
_BAD_LINES = st.one_of(
    st.sampled_from(
        ["192.0.2.1/24", "1.2.3", "1.2.3.4/33", "::/129", "x", "1.2.3.4/", "/8", "1.2.3.4 /8", "::1::2"]
    ),
    st.text(alphabet="0123456789abcdef.:/# x", max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_GOOD_LINES, _GOOD_LINES, _BAD_LINES), max_size=12))
def test_fast_and_line_by_line_scans_agree(lines: list[str]) -> None:
    text = "\n".join(lines)
    fast = addrs.scan_fast(text)
    try:
        slow = addrs.scan_slow(text, "f")
    except RuleError:
        assert fast is None
        return
    # Every valid ASCII file must take the fast path, or big lists get slow.
    assert fast is not None or not text.isascii()
    if fast is not None:
        assert (sorted(fast[0]), sorted(fast[1])) == (sorted(slow[0]), sorted(slow[1]))


# --------------------------------------------------------------------------
# Limits


def test_too_many_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_RULES", 2)
    rules = "".join(f"    - {{name: r{i}, match: {{}}, action: drop}}\n" for i in range(3))
    err = error_of("version: 1\negress:\n  rules:\n" + rules)
    assert_error(err, 4, "egress.rules: 3 rules exceed the limit of 2")


def test_too_many_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_PREFIXES", 4)
    ok = "version: 1\nsets:\n  a: [192.0.2.0/25, 192.0.2.128/25]\ningress:\n  rules:\n"
    rule = "    - {name: r, match: {src: [198.51.100.0/24, 203.0.113.0/24]}, action: drop}\n"
    parse_text(ok + rule)
    extra = "    - {name: s, match: {dst: 198.51.100.1}, action: drop}\n"
    assert_error(error_of(ok + rule + extra), 7, "5 prefixes", "limit of 4")


# --------------------------------------------------------------------------
# load()


def test_load_missing_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RuleError) as info:
        load(path)
    assert info.value.line is None
    assert str(info.value) == f"{path}: cannot read rule file: No such file or directory"
    assert info.value.exit_code == 2


def test_load_rule_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"version: 1\n# \xff\n")
    with pytest.raises(RuleError) as info:
        load(path)
    assert_error(info.value, 2, "not UTF-8", path=str(path))


def test_errors_name_the_path_given(tmp_path: Path) -> None:
    path = write_rules(tmp_path, "version: 1\nmode: fast\n", "edge.yaml")
    with pytest.raises(RuleError) as info:
        load(str(path))
    assert str(info.value) == f'{path}:2: mode: "fast" must be enforce or audit'


# --------------------------------------------------------------------------
# A rule file that uses every feature of the language (one line continued with a backslash for length)


FULL_EXAMPLE = """\
version: 1
mode: enforce              # enforce | audit (audit: count what would be dropped, drop nothing)
non_ip: allow              # allow | drop: frames that are neither IPv4 nor IPv6 (ARP, LLDP, ...)
ndp: allow                 # allow | rules: IPv6 neighbour discovery (ICMPv6 133-137) passes before any rule
sets:                      # named address sets, used as "@name"
  bogons: [0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, "fc00::/7"]
  blocklist: {file: lists/drop.netset}     # one address/CIDR per line, '#' comments; path \
relative to this file
ingress:
  default: allow           # allow | drop: verdict when no rule matches
  rules:
    - name: allow-replies
      match: {state: established}
      action: allow
    - name: drop-bogons
      match: {src: "@bogons"}
      action: drop
    - name: ssh-office
      match: {src: [203.0.113.0/24, "2001:db8:1::/48"], proto: tcp, dport: 22}
      action: allow
    - name: ssh-rest
      match: {proto: tcp, dport: 22}
      action: drop
    - name: dns
      match: {proto: udp, dport: 53}
      action: allow
      rate_limit: {pps: 1000, burst: 200, per: source}
    - name: syn-guard
      match: {proto: tcp, tcp_flags: "syn,!ack"}
      action: allow
      rate_limit: {pps: 50, per: source, block_for: 30s}
egress:
  default: allow
  rules:
    - name: no-smtp-out
      match: {proto: tcp, dport: 25}
      action: drop
    - name: cap-backups
      match: {dst: 198.51.100.0/24}
      action: allow
      rate_limit: {bps: 100mbit, burst: 1mb}
"""


def test_spec_example(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "drop.netset").write_text("# example list\n192.0.2.0/24\n2001:db8:dead::/48 # v6\n")
    rs = load(write_rules(tmp_path, FULL_EXAMPLE))

    assert (rs.version, rs.mode, rs.non_ip, rs.ndp) == (1, Mode.ENFORCE, Action.ALLOW, "allow")
    bogons, blocklist = rs.sets
    assert bogons.prefixes == pfxs("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "fc00::/7")
    assert blocklist.prefixes == pfxs("192.0.2.0/24", "2001:db8:dead::/48")
    assert blocklist.file == str(tmp_path / "lists" / "drop.netset")

    ing = {r.name: r for r in rs.ingress.rules}
    assert [r.name for r in rs.ingress.rules] == [
        "allow-replies",
        "drop-bogons",
        "ssh-office",
        "ssh-rest",
        "dns",
        "syn-guard",
    ]
    assert [r.line for r in rs.ingress.rules] == [11, 14, 17, 20, 23, 27]
    assert rs.ingress.default is Action.ALLOW
    assert ing["allow-replies"].match == Match(state=State.ESTABLISHED)
    assert ing["drop-bogons"].match.src is not None
    assert ing["drop-bogons"].match.src.prefixes == bogons.prefixes
    assert ing["drop-bogons"].action is Action.DROP
    office = ing["ssh-office"].match
    assert office.src is not None and office.src.prefixes == pfxs("203.0.113.0/24", "2001:db8:1::/48")
    assert (office.protos, office.dport, office.sport) == ({TCP}, (PortRange(22, 22),), None)
    assert ing["ssh-rest"].match == Match(protos=frozenset({TCP}), dport=(PortRange(22, 22),))
    assert ing["dns"].match == Match(protos=frozenset({UDP}), dport=(PortRange(53, 53),))
    assert ing["dns"].rate_limit == RateLimit(
        pps=1000, bps=None, burst=200, per="source", per_prefix_v4=32, per_prefix_v6=64, block_for=None
    )
    syn = ing["syn-guard"]
    assert syn.match.tcp_flags == TcpFlags(set_mask=TCP_FLAG_BITS["syn"], clear_mask=TCP_FLAG_BITS["ack"])
    assert syn.rate_limit == RateLimit(
        pps=50, bps=None, burst=5, per="source", per_prefix_v4=32, per_prefix_v6=64, block_for=30.0
    )

    no_smtp, backups = rs.egress.rules
    assert no_smtp.match == Match(protos=frozenset({TCP}), dport=(PortRange(25, 25),))
    assert no_smtp.action is Action.DROP
    assert backups.match.dst is not None and backups.match.dst.prefixes == pfxs("198.51.100.0/24")
    assert backups.rate_limit == RateLimit(
        pps=None,
        bps=100_000_000,
        burst=1_000_000,
        per="rule",
        per_prefix_v4=0,
        per_prefix_v6=0,
        block_for=None,
    )
