"""Rates people write (`rate: 5/minute`, fractional `pps`) and `action: continue`.

The parser's answers, what the compiler makes of them, and what both
Python classifiers do with a continue guard on a simulated clock: the SSH
guard of docs/rules.md, packet by packet.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from tests.rulesets import ssh_guard
from xdpguard.errors import RuleError
from xdpguard.rules import reference
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import NSEC, LimitPlan, compile_ruleset, plan_from_bytes
from xdpguard.rules.describe import describe_rule
from xdpguard.rules.model import IPPROTO_TCP, MAX_CONTINUE, Action
from xdpguard.rules.packet import IP, Packet
from xdpguard.rules.parse import format_packet_rate, parse_text
from xdpguard.rules.ratesim import LimiterSim


def rules(rate_limit: str, action: str = "", extra: str = "") -> str:
    act = f"\n      action: {action}" if action else ""
    return f"""version: 1
ingress:
  rules:
    - name: r
      match: {{proto: tcp, dport: 22}}{act}
      rate_limit: {rate_limit}
{extra}"""


def limit_of(rate_limit: str) -> LimitPlan:
    rs = parse_text(rules(rate_limit), "r.yaml")
    rl = rs.ingress.rules[0].rate_limit
    assert rl is not None
    return LimitPlan.from_model(rl)


def error(text: str) -> str:
    with pytest.raises(RuleError) as e:
        parse_text(text, "r.yaml")
    assert e.value.exit_code == 2
    return str(e.value)


@pytest.mark.parametrize(
    "rate, pps",
    [
        ("5/minute", Fraction(1, 12)),
        ("5/second", Fraction(5)),
        ("100/hour", Fraction(1, 36)),
        ("2/day", Fraction(1, 43200)),
        ("0.5/second", Fraction(1, 2)),
        ("5 / Minute", Fraction(1, 12)),
    ],
)
def test_rate_is_a_packet_rate(rate: str, pps: Fraction) -> None:
    rs = parse_text(rules(f'{{rate: "{rate}"}}'), "r.yaml")
    rl = rs.ingress.rules[0].rate_limit
    assert rl is not None and rl.pps == pps and rl.bps is None
    assert rl.burst == 1  # a tenth of a second at the rate, at least one packet


def test_ssh_guard_limit_in_program_units() -> None:
    lim = limit_of("{rate: 5/minute, burst: 5, per: source, block_for: 10m}")
    # One packet per 12 s; five of them back to back; ten minutes of block.
    assert (lim.cost_ns, lim.burst_ns, lim.block_ns) == (12 * NSEC, 60 * NSEC, 600 * NSEC)
    assert (lim.per_source, lim.plen4) == (True, 32)


def test_fractional_pps() -> None:
    assert limit_of("{pps: 0.5}").cost_ns == 2 * NSEC
    assert limit_of("{pps: 2.5, burst: 3}").burst_ns == 3 * 400_000_000
    assert limit_of('{pps: "0.25"}').cost_ns == 4 * NSEC
    # Whole numbers keep their old meaning (and their plan identity).
    assert limit_of("{pps: 50}") == limit_of("{rate: 50/second}")


def test_default_burst_for_fast_rates() -> None:
    rs = parse_text(rules("{rate: 600/second}"), "r.yaml")
    assert rs.ingress.rules[0].rate_limit.burst == 60  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "rate_limit, fragments",
    [
        ("{rate: 5/min}", ['rate: "5/min": the period must be second, minute, hour, day', '"minute"']),
        ("{rate: 5}", ["rate: 5 is not a packet rate", "5/minute", "pps"]),
        ("{rate: fast/second}", ['rate: "fast/second" is not a packet rate']),
        ("{rate: 0/minute}", ['rate: "0/minute" must be a positive number']),
        ("{rate: 1/week}", ['rate: "1/week"', "second, minute, hour, day"]),
        ("{rate: 1/month}", ['"1/month"']),
        ("{rate: 0.5/day}", ['"0.5/day" is slower than the slowest rate, 1/day']),
        ("{rate: 5/minute, pps: 5}", ["exactly one of pps", "rate (e.g. 5/minute)", "bps"]),
        ("{rate: 5/minute, bps: 1mbit}", ["exactly one of"]),
        ("{pps: -0.5}", ["pps: -0.5"]),
        ("{pps: 0}", ["pps: 0 must be a positive number"]),
        ("{pps: 0.000001}", ["slower than the slowest rate, 1/day"]),
        (
            "{rate: 1/day, burst: 60000}",
            ["burst: 60000 packets at 1/day last longer than the limiter can hold"],
        ),
        ("{rate: 5/minute, burst: 0.5}", ["burst: 0.5 must be a positive integer"]),
    ],
)
def test_rate_errors(rate_limit: str, fragments: list[str]) -> None:
    msg = error(rules(rate_limit))
    assert msg.startswith("r.yaml:6: "), msg
    for f in fragments:
        assert f in msg


@pytest.mark.parametrize(
    ("rate", "most"),
    [("1/day", 13343), ("1/hour", 320255), ("1/minute", 19215358), ("1/second", 1152921504)],
)
def test_the_largest_burst_named_by_the_message_is_the_largest_accepted(rate: str, most: int) -> None:
    # The one bound (burst x ns per packet <= 2^60 ns) says both what is refused and
    # what the message offers: the figure it names passes, one more does not.
    parse_text(rules(f"{{rate: {rate}, burst: {most}}}"), "r.yaml")
    msg = error(rules(f"{{rate: {rate}, burst: {most + 1}}}"))
    assert msg.startswith(f"r.yaml:6: burst: {most + 1} packets at "), msg
    assert msg.endswith(f"(2^60 ns, about 36 years): at most {most} at this rate"), msg


def test_format_packet_rate() -> None:
    assert format_packet_rate(Fraction(50)) == "50 pps"
    assert format_packet_rate(Fraction(1, 12)) == "5/minute"
    assert format_packet_rate(Fraction(1, 3600)) == "1/hour"
    assert format_packet_rate(Fraction(1, 86400)) == "1/day"


def test_describe_shows_the_rate_as_written() -> None:
    rs = parse_text(rules("{rate: 5/minute, burst: 5, per: source}", "continue"), "r.yaml")
    text = describe_rule(rs.ingress.rules[0])
    assert "-> continue" in text and "limit 5/minute burst 5 per source" in text


# ---- action: continue


def test_continue_needs_a_rate_limit() -> None:
    text = """version: 1
ingress:
  rules:
    - name: guard
      match: {proto: tcp}
      action: continue
"""
    msg = error(text)
    assert msg.startswith("r.yaml:6: ") and 'action "continue" needs a rate_limit' in msg


def test_unknown_action_lists_continue() -> None:
    msg = error(rules("{pps: 1}", "contineu"))
    assert 'action: "contineu" must be allow or drop or continue (did you mean "continue"?)' in msg


def test_continue_is_parsed_and_compiled() -> None:
    rs = parse_text(rules("{rate: 5/minute, burst: 5, per: source}", "continue"), "r.yaml")
    assert rs.ingress.rules[0].action is Action.CONTINUE
    plan = compile_ruleset(rs)
    assert plan.ingress.cont == (0,)
    back = plan_from_bytes(plan.to_bytes())
    assert back.ingress.cont == (0,) and back.ingress.rules[0].action is Action.CONTINUE


def test_at_most_max_continue_rules_per_direction() -> None:
    guard = (
        "    - name: g{i}\n      match: {{dport: {port}}}\n"
        "      action: continue\n      rate_limit: {{pps: 1}}\n"
    )
    body = "".join(guard.format(i=i, port=1000 + i) for i in range(MAX_CONTINUE + 1))
    text = f"version: 1\ningress:\n  rules:\n{body}"
    msg = error(text)
    line = 4 + 4 * MAX_CONTINUE
    assert msg.startswith(f"r.yaml:{line}: "), msg
    assert f'rule "g{MAX_CONTINUE}"' in msg and f"at most {MAX_CONTINUE} per direction" in msg
    # As many as allowed is fine.
    fine = "".join(guard.format(i=i, port=1000 + i) for i in range(MAX_CONTINUE))
    parse_text(f"version: 1\ningress:\n  rules:\n{fine}", "r.yaml")


def test_unquoted_set_reference_is_explained() -> None:
    text = (
        "version: 1\nsets: {office: [192.0.2.0/24]}\ningress:\n  rules:\n"
        "    - name: a\n      match: {src: @office}\n      action: allow\n"
    )
    msg = error(text)
    assert (
        msg
        == "r.yaml:6: @office must be quoted: YAML cannot start a plain value with '@' (write \"@office\")"
    )


# ---- the SSH guard, packet by packet

SSH_GUARD = ssh_guard("203.0.113.0/24")


def syn(src: str) -> Packet:
    a, b, c, d = (int(x) for x in src.split("."))
    addr = (a << 24) | (b << 16) | (c << 8) | d
    return Packet(IP, 60, 4, addr, 0xC0000201, IPPROTO_TCP, sport=40000, dport=22, tcp_flags=0x02)


@pytest.mark.parametrize("classifier", ["reference", "plan"])
def test_ssh_guard(classifier: str) -> None:
    rs = parse_text(SSH_GUARD, "r.yaml")
    pc = PlanClassifier(compile_ruleset(rs))
    sim = LimiterSim(now_ns=10**12)

    def send(src: str) -> reference.Verdict:
        if classifier == "reference":
            return reference.classify(rs, "ingress", syn(src), sim)
        return pc.classify("ingress", syn(src), sim)

    office, other = "203.0.113.7", "198.51.100.9"
    got = [send(office) for _ in range(6)]
    # Within the limit the guard passes the SYN on: the office rule allows it.
    assert [(v.action, v.reason, v.passed) for v in got[:5]] == [("pass", "ssh-office", (0,))] * 5
    # The sixth is over the limit: dropped as the guard's, and the source is blocked.
    assert (got[5].action, got[5].reason, got[5].over) == ("drop", "ssh-guard", True)
    sim.advance(60)  # the bucket refilled, but the block holds
    assert (send(office).reason, send(office).action) == ("blocked", "drop")
    sim.advance(540)  # ten minutes after the sixth SYN: released
    assert send(office).reason == "ssh-office"
    # A source outside @office never gets SSH, within the limit or not.
    assert [send(other).reason for _ in range(5)] == ["default"] * 5
    assert send(other).reason == "ssh-guard"


def test_without_a_limiter_continue_passes_everything_on() -> None:
    rs = parse_text(SSH_GUARD, "r.yaml")
    pc = PlanClassifier(compile_ruleset(rs))
    for _ in range(10):
        v = reference.classify(rs, "ingress", syn("203.0.113.7"))
        assert v == pc.classify("ingress", syn("203.0.113.7"))
        assert (v.action, v.reason, v.passed) == ("pass", "ssh-office", (0,))
