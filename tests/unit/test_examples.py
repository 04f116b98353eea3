"""The example rule files in rules/ parse and say what their comments claim.

Operators copy these files; a broken or misleading example is a bug.  Every
*.yaml in rules/ is parsed, so a new example is checked without a new test.
"""

from __future__ import annotations

import ipaddress
from fractions import Fraction
from pathlib import Path

import pytest

from xdpguard.rules.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Action,
    PortRange,
    Prefix,
    Rule,
    RuleSet,
    State,
)
from xdpguard.rules.parse import load

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
EXAMPLES = sorted(p for p in RULES_DIR.glob("*.yaml") if not p.name.endswith(".cases.yaml"))

DOC_RANGES = [
    Prefix(n.version, int(n.network_address), n.prefixlen)
    for n in map(ipaddress.ip_network, ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
]


def documentation(p: Prefix) -> bool:
    return any(d.plen <= p.plen and d.contains(p.family, p.addr) for d in DOC_RANGES)


def rules_by_name(rules: tuple[Rule, ...]) -> dict[str, Rule]:
    return {r.name: r for r in rules}


def test_the_three_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"web-edge.yaml", "bastion.yaml", "dns-server.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_and_uses_documentation_addresses(path: Path) -> None:
    rs = load(path)
    assert rs.source == str(path)
    assert rs.ingress.rules, "an example without ingress rules teaches nothing"
    # The bogons list is the one place real special-purpose ranges belong;
    # everything else must be documentation space (or "any").
    addresses: list[Prefix] = [p for s in rs.sets if s.name != "bogons" for p in s.prefixes]
    for rule in rs.ingress.rules + rs.egress.rules:
        for addr in (rule.match.src, rule.match.dst):
            if addr is not None and not addr.sets:
                addresses.extend(addr.prefixes)
    assert addresses
    for p in addresses:
        if p.plen == 0:
            continue
        assert documentation(p), f"{path.name}: {p}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_lets_replies_in_first_and_defaults_to_drop(path: Path) -> None:
    rs = load(path)
    first = rs.ingress.rules[0]
    assert first.match.state is State.ESTABLISHED and first.action is Action.ALLOW
    assert rs.ingress.default is Action.DROP


def allows_icmp_errors(rs: RuleSet) -> bool:
    """Path MTU discovery needs ICMP "fragmentation needed" and packet-too-big."""
    for rule in rs.ingress.rules:
        icmp = rule.match.icmp
        if (
            rule.action is Action.ALLOW
            and rule.rate_limit is None
            and icmp is not None
            and icmp.codes is None
        ):
            if {(IPPROTO_ICMP, 3), (IPPROTO_ICMPV6, 2)} <= icmp.types and rule.match.src is None:
                return True
    return False


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_keeps_path_mtu_discovery_working(path: Path) -> None:
    assert allows_icmp_errors(load(path))


def test_web_edge() -> None:
    rs = load(RULES_DIR / "web-edge.yaml")
    sets = {s.name: s for s in rs.sets}
    assert sets["bogons"].file is not None and sets["blocklist"].file is not None
    assert Prefix(4, int(ipaddress.IPv4Address("10.0.0.0")), 8) in sets["bogons"].prefixes
    assert {p.family for p in sets["bogons"].prefixes} == {4, 6}

    ingress = rules_by_name(rs.ingress.rules)
    web = ingress["web"].match
    assert (web.protos, web.dport) == ({IPPROTO_TCP}, (PortRange(80, 80), PortRange(443, 443)))
    assert ingress["http3"].match.protos == {IPPROTO_UDP}

    syn = ingress["web-syn-guard"]
    assert syn.match.protos == {IPPROTO_TCP} and syn.match.tcp_flags is not None
    assert syn.rate_limit is not None and syn.rate_limit.block_for == 300.0
    # The SYN guard must come before the rule that allows the same ports.
    names = [r.name for r in rs.ingress.rules]
    assert names.index("web-syn-guard") < names.index("web")

    ssh = ingress["ssh-office"].match
    assert ssh.src is not None and ssh.src.sets == ("office",)
    assert not any(
        r.match.dport and PortRange(22, 22) in r.match.dport
        for r in rs.ingress.rules
        if r.name != "ssh-office"
    )

    ping = ingress["ping"]
    assert ping.action is Action.ALLOW and ping.rate_limit is not None
    assert ping.match.icmp is not None and ping.match.icmp.types == {(IPPROTO_ICMP, 8), (IPPROTO_ICMPV6, 128)}

    assert rs.egress.default is Action.ALLOW
    assert rules_by_name(rs.egress.rules)["no-smtp-out"].action is Action.DROP


def test_bastion() -> None:
    rs = load(RULES_DIR / "bastion.yaml")
    assert rs.egress.default is Action.DROP
    assert rs.state_timeouts.tcp == 3600

    ingress = rules_by_name(rs.ingress.rules)
    # The SSH guard of docs/rules.md: a limit only, in front of the one rule that allows SSH.
    guard = ingress["ssh-guard"]
    assert guard.action is Action.CONTINUE and guard.match.src is None
    limit = guard.rate_limit
    assert limit is not None and limit.per == "source" and limit.block_for == 600.0
    assert (limit.pps, limit.burst) == (Fraction(5, 60), 5)
    allows_ssh = [
        r for r in rs.ingress.rules if r.action is Action.ALLOW and r.match.dport == (PortRange(22, 22),)
    ]
    assert [r.name for r in allows_ssh] == ["ssh-office"]
    assert allows_ssh[0].match.src is not None and allows_ssh[0].match.src.sets == ("office",)
    names = [r.name for r in rs.ingress.rules]
    assert names.index("ssh-guard") < names.index("ssh-office")

    # With egress default drop, the bastion's own servers need their replies allowed.
    egress = rules_by_name(rs.egress.rules)
    assert egress["ssh-server-replies"].match.sport == (PortRange(22, 22),)
    assert egress["metrics-replies"].match.sport == (PortRange(9100, 9100),)
    assert egress["ssh-internal"].match.dst is not None
    assert egress["ssh-internal"].match.dst.sets == ("internal",)


def test_dns_server() -> None:
    rs = load(RULES_DIR / "dns-server.yaml")
    ingress = rules_by_name(rs.ingress.rules)
    v4 = ingress["dns-udp-v4"]
    v6 = ingress["dns-udp-v6"]
    assert v4.rate_limit is not None and v6.rate_limit is not None
    assert (v4.rate_limit.per_prefix_v4, v6.rate_limit.per_prefix_v6) == (24, 56)
    assert v4.match.src is not None and v4.match.src.families == {4}
    assert v6.match.src is not None and v6.match.src.families == {6}
    assert v4.action is Action.ALLOW and v4.match.protos == {IPPROTO_UDP}

    # The trusted secondaries come before the rate-limited rules.
    names = [r.name for r in rs.ingress.rules]
    assert names.index("secondaries") < names.index("dns-udp-v4")

    syn = ingress["dns-tcp-syn"].rate_limit
    assert syn is not None and syn.block_for == 60.0

    (xfr,) = rs.egress.rules
    assert xfr.rate_limit is not None and xfr.rate_limit.bps == 200_000_000
    assert xfr.rate_limit.burst == 2_000_000
    assert rs.state_timeouts.udp == 10
    assert rs.limit_table_size == 262144
