"""Rate-limit settings: `per` forms, the IPv6 grouping warning, and what the limiter can represent.

`per: source` is one bucket per IPv4 address and per IPv6 /64;
`per: source/A,B` sets both lengths; a single `source/N` keeps its meaning
(IPv4 /min(N, 32), IPv6 /N) and earns a warning when it groups IPv6 more
coarsely than /32.  Values the data plane cannot hold exactly (a burst
that would wrap a u64 of nanoseconds, a block longer than it keeps, a pps
that whole-nanosecond costs would round by more than 1 %) are errors with
file:line, exit 2, never a limit other than the one written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xdpguard.errors import RuleError
from xdpguard.rules import limits
from xdpguard.rules.compile import NSEC, LimitPlan, compile_ruleset, plan_from_bytes
from xdpguard.rules.describe import describe_rule
from xdpguard.rules.model import RateLimit
from xdpguard.rules.parse import parse_text

LINE = 7  # the line of `rate_limit:` (and of flow-style values) in rule()


def rule(rate_limit: str, match: str = "{proto: udp}", top: str = "") -> str:
    return f"""version: 1
{top}ingress:
  rules:
    - name: r
      match: {match}
      action: allow
      rate_limit: {rate_limit}
"""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_text(text, "rules.yaml")


def limit_of(rate_limit: str, match: str = "{proto: udp}") -> RateLimit:
    rl = parse(rule(rate_limit, match)).ingress.rules[0].rate_limit
    assert rl is not None
    return rl


def error_of(text: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        parse(text)
    assert info.value.exit_code == 2
    return info.value


# --------------------------------------------------------------------------
# per


@pytest.mark.parametrize(
    "per, v4, v6",
    [
        ("source", 32, 64),
        ('"source/24,48"', 24, 48),
        ('"source/32,128"', 32, 128),
        ('"source/0,56"', 0, 56),
        ('"source/16, 32"', 16, 32),
        ("source/24", 24, 24),
        ("source/64", 32, 64),
        ("source/128", 32, 128),
        ("rule", 0, 0),
    ],
)
def test_per_gives_both_prefix_lengths(per: str, v4: int, v6: int) -> None:
    rl = limit_of(f"{{pps: 10, per: {per}}}")
    assert (rl.per_prefix_v4, rl.per_prefix_v6) == (v4, v6)


def test_source_a_b_unquoted_in_block_style() -> None:
    text = rule("\n        pps: 10\n        per: source/24,48")
    rl = parse(text).ingress.rules[0].rate_limit
    assert rl is not None and (rl.per, rl.per_prefix_v4, rl.per_prefix_v6) == ("source/24,48", 24, 48)


def test_source_a_b_unquoted_in_flow_style_says_to_quote_it() -> None:
    err = error_of(rule("{pps: 10, per: source/24,48}"))
    assert err.line == LINE
    assert 'must be quoted inside {...} (per: "source/24,48")' in err.message


@pytest.mark.parametrize(
    "per, fragment",
    [
        ('"source/33,64"', "the IPv4 length A must be 0-32"),
        ('"source/24,129"', "the IPv6 length B must be 0-128"),
        ('"source/24,"', "must be rule, source or source/N (or source/A,B"),
        ('"source/,48"', "must be rule, source or source/N"),
        ('"source/1,2,3"', "must be rule, source or source/N"),
        ("source/129", "N must be 0-128"),
    ],
)
def test_per_errors(per: str, fragment: str) -> None:
    err = error_of(rule(f"{{pps: 10, per: {per}}}"))
    assert err.line == LINE and fragment in err.message, str(err)


def test_single_length_coarser_than_32_for_ipv6_warns() -> None:
    rs = parse(rule("{pps: 10, per: source/24}"))
    assert rs.warnings == (
        f"rules.yaml:{LINE}: warning: per: source/24 groups IPv6 sources by /24, coarser than /32 (a whole "
        "provider shares one bucket); for IPv4 /24 and IPv6 /64 write per: source/24,64",
    )


@pytest.mark.parametrize(
    "per, match",
    [
        ("source/24", "{src: 0.0.0.0/0}"),  # the rule never sees IPv6
        ("source/24", "{proto: icmp}"),
        ("source/32", "{}"),
        ("source/48", "{}"),
        ('"source/24,48"', "{}"),
        ("source", "{}"),
        ("rule", "{}"),
    ],
)
def test_no_warning(per: str, match: str) -> None:
    assert parse(rule(f"{{pps: 10, per: {per}}}", match)).warnings == ()


def test_block_for_with_a_whole_family_bucket() -> None:
    # One bucket for all IPv4 sources would block them one by one; fine if the rule is IPv6-only.
    err = error_of(rule('{pps: 10, per: "source/0,64", block_for: 1m}'))
    assert "would block every source (one bucket holds all IPv4 sources)" in err.message
    rl = limit_of('{pps: 10, per: "source/0,64", block_for: 1m}', '{src: "::/0"}')
    assert rl.block_for == 60.0


# --------------------------------------------------------------------------
# representable values (durations, rates and bursts exactly as written, or exit 2)


@pytest.mark.parametrize(
    "rate_limit, fragments",
    [
        # The two of the issue: a block that never happened, a burst that wrapped to 384 ns.
        (
            "{pps: 10, per: source, block_for: 4294967296}",
            ["block_for: 4294967296 is longer than", "2^60 ns"],
        ),
        (
            "{bps: 1mbit, burst: 2305843009213694}",
            ["burst: 2305843009213694 bytes at 1000000 bit/s", "years"],
        ),
        ("{pps: 10, per: source, block_for: 40000d}", ['block_for: "40000d" is longer than']),
        ('{pps: 10, per: source, block_for: "0.0000000001"}', ["whole number of nanoseconds"]),
        (
            "{pps: 1, burst: 4294967295}",
            ["burst: 4294967295 packets at 1 pps", "2^60 ns", "at most 1152921504"],
        ),
        (
            "{pps: 600000000}",
            [
                "pps: 600000000 packets/s cannot be enforced within 1 %",
                "500,000,000/s (2 ns) and 1,000,000,000/s",
            ],
        ),
        ("{pps: 4294967295}", ["pps: 4294967295 packets/s cannot be enforced within 1 %"]),
        ("{bps: 1000gbit, burst: 1522}", ["burst: 1522 bytes at 1000000000000 bit/s last", "too short"]),
        # a rate past a u64 would have wrapped to a small one
        (
            "{bps: 100000000000000gbit}",
            ["bps: 100000000000000000000000 bit/s is more than the limiter handles"],
        ),
    ],
)
def test_unrepresentable_limits_are_errors(rate_limit: str, fragments: list[str]) -> None:
    err = error_of(rule(rate_limit))
    assert err.line == LINE, str(err)
    for f in fragments:
        assert f in err.message, str(err)


def test_unrepresentable_block_for_names_its_own_line() -> None:
    err = error_of(rule("\n        pps: 10\n        per: source\n        block_for: 4294967296"))
    assert err.line == LINE + 3


@pytest.mark.parametrize(
    "rate_limit",
    [
        "{pps: 3000000}",  # 333 ns: 0.1 % off
        "{pps: 10000000}",  # 100 ns exactly
        "{pps: 1, burst: 1000000000}",  # a billion seconds of burst: under 2^60 ns
        "{bps: 100gbit, burst: 1522}",  # 121.76 ns
        "{bps: 1, burst: 1522}",
        '{pps: 10, per: source, block_for: "1152921504.606846976"}',  # exactly 2^60 ns
        "{pps: 10, per: source, block_for: 0.1}",  # a YAML float, as written
        '{pps: 10, per: source, block_for: "250ms"}',
    ],
)
def test_representable_limits_are_accepted(rate_limit: str) -> None:
    limit_of(rate_limit)


def test_one_ns_past_the_longest_block_is_an_error() -> None:
    err = error_of(rule('{pps: 10, per: source, block_for: "1152921504.606846977"}'))
    assert "is longer than" in err.message


def test_state_timeouts_past_u32_seconds_are_errors() -> None:
    with pytest.raises(RuleError) as info:
        parse("version: 1\nstate_timeouts: {tcp: 4294967296}\n")
    assert info.value.line == 2 and "longer than the flow table keeps" in info.value.message
    assert parse("version: 1\nstate_timeouts: {tcp: 4294967295}\n").state_timeouts.tcp == 2**32 - 1


@pytest.mark.parametrize("pps", [1, 3, 7, 999, 123_457, 3_000_000, 10_000_000])
def test_accepted_pps_is_enforced_within_one_percent(pps: int) -> None:
    cost = limits.pps_cost_ns(pps)
    assert limits.pps_problem(pps) is None
    assert abs(NSEC / cost - pps) <= 0.01 * pps


# --------------------------------------------------------------------------
# compiled numbers


def plan_limit(rate_limit: str) -> LimitPlan:
    plan = compile_ruleset(parse(rule(rate_limit)))
    lim = plan.ingress.rules[0].limit
    assert lim is not None
    return lim


def test_compiled_limit_in_nanoseconds() -> None:
    lim = plan_limit("{pps: 100, burst: 10, per: source, block_for: 1.5s}")
    assert (lim.cost_ns, lim.burst_ns, lim.block_ns) == (10_000_000, 100_000_000, 1_500_000_000)
    assert (lim.plen4, lim.plen6, lim.per_source) == (32, 64, True)
    # The slot outlives its TAT by the first power of two >= burst + one packet: 134 ms here.
    assert lim.grace_log2 == 27 and 2**26 < 110_000_000 <= 2**27


def test_bps_grace_counts_a_full_size_frame() -> None:
    lim = plan_limit("{bps: 8mbit, burst: 1522}")
    assert lim.burst_ns == 1_522_000
    assert 2 ** (lim.grace_log2 - 1) < 2 * 1_522_000 <= 2**lim.grace_log2


def test_plans_recorded_before_block_ns_still_load() -> None:
    # Plans in the history, written when block_for was kept in seconds.
    old = LimitPlan.from_list([1, 100, 10_000_000, 100_000_000, 1, 32, 128, 30])
    assert old.block_ns == 30 * NSEC and old.plen6 == 128
    assert old.grace_log2 == limits.grace_log2(100_000_000, 10_000_000)
    new = plan_limit("{pps: 100, per: source, block_for: 30s}")
    assert LimitPlan.from_list(new.to_list()) == new


def test_plan_bytes_round_trip_keeps_the_limit() -> None:
    plan = compile_ruleset(parse(rule('{pps: 100, burst: 10, per: "source/24,48", block_for: 90s}')))
    again = plan_from_bytes(plan.to_bytes())
    assert again.ingress.rules[0].limit == plan.ingress.rules[0].limit


def test_describe_shows_the_enforced_prefix_lengths() -> None:
    r = parse(rule("{pps: 10, per: source, block_for: 30s}")).ingress.rules[0]
    assert "per source/32,64 block_for 30s" in describe_rule(r)


# --------------------------------------------------------------------------
# the CLI


def test_check_prints_the_warning_and_lists_it_in_json(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(rule("{pps: 10, per: source/24}"))
    cmd = [sys.executable, "-m", "xdpguard", "check", str(f)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{f}:{LINE}: warning: per: source/24 groups IPv6 sources by /24" in r.stderr
    r = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert json.loads(r.stdout)["warnings"] == [r.stderr.strip()]


def test_check_refuses_the_wrapping_burst_with_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(rule("{bps: 1mbit, burst: 2305843009213694}"))
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", "check", str(f)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert r.stderr.startswith(f"{f}:{LINE}: burst: 2305843009213694 bytes")
    assert "Traceback" not in r.stderr
