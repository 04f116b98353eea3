"""The oracle pair agrees: the compiled plan classifies like the reference.

>= 200 random rule sets x 60 random packets (v4, v6, ranges, flags, ICMP,
state, fragments, malformed, non-IP) in each direction; and sets of 4,097
to 20,000 rules, whose packets are drawn to reach every group of 4,096.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import large_ruleset, packet_in_rule, packet_stream, random_packet, rulesets
from xdpguard.rules import reference
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import compile_ruleset, plan_from_bytes
from xdpguard.rules.ratesim import LimiterSim

PACKETS_PER_SET = 60


def test_plan_agrees_with_reference():
    # The volume is counted inside this one test, so it holds whatever runs
    # before it, in whatever order (-k, -p randomly, xdist).
    checked = {"sets": 0, "packets": 0}

    @settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rs=rulesets(), seed=st.integers(0, 2**32 - 1))
    def agrees(rs, seed):
        plan = compile_ruleset(rs)
        pc = PlanClassifier(plan)
        rng = random.Random(seed)
        for _ in range(PACKETS_PER_SET):
            pkt = random_packet(rng, rs)
            for direction in ("ingress", "egress"):
                want = reference.classify(rs, direction, pkt)
                got = pc.classify(direction, pkt)
                assert got == want, (direction, pkt)
        checked["sets"] += 1
        checked["packets"] += PACKETS_PER_SET

    agrees()
    assert checked["sets"] >= 200 and checked["packets"] >= 10_000, checked


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rs=rulesets(), seed=st.integers(0, 2**32 - 1))
def test_plan_agrees_with_reference_over_time(rs, seed):
    """Rate limits, continue rules and block_for: one sequence of packets, one simulated clock each."""
    pc = PlanClassifier(compile_ruleset(rs))
    rng = random.Random(seed)
    ref_clock, plan_clock = LimiterSim(now_ns=10**12), LimiterSim(now_ns=10**12)
    for pkt in packet_stream(rng, rs, PACKETS_PER_SET * 2):
        step = rng.choice([0, 0, 1_000, 2_000_000, 5 * 10**9])
        ref_clock.now_ns += step
        plan_clock.now_ns += step
        for direction in ("ingress", "egress"):
            want = reference.classify(rs, direction, pkt, ref_clock)
            got = pc.classify(direction, pkt, plan_clock)
            assert got == want, (direction, pkt)
    assert ref_clock.buckets == plan_clock.buckets and ref_clock.blocked == plan_clock.blocked


@settings(max_examples=60, deadline=None)
@given(rs=rulesets())
def test_plan_is_deterministic_and_round_trips(rs):
    a, b = compile_ruleset(rs), compile_ruleset(rs)
    assert a.to_bytes() == b.to_bytes()
    assert a.digest == b.digest
    back = plan_from_bytes(a.to_bytes())
    # Re-serialise the loaded plan from its fields, not its cached bytes.
    back._bytes = None
    assert back.to_bytes() == a.to_bytes()


# --------------------------------------------------------------------------
# Rule sets past 4,096 rules: the two-level bitmaps (groups of 4,096 rules)


@pytest.mark.parametrize("n, seed", [(4200, 1), (9000, 2), (20000, 3)])
def test_large_plans_agree_with_reference(n, seed):
    """Packets drawn inside random rules reach every group; the plan's scan
    (group words, block summaries, words) finds the reference's first match."""
    rng = random.Random(seed)
    rs = large_ruleset(rng, n)
    plan = compile_ruleset(rs)
    assert plan.ingress.ngroups == (n + 4095) // 4096
    pc = PlanClassifier(plan)
    groups = set()
    edges = [4095, 4096, 4097, n - 1]  # either side of a group boundary, and the last rule
    for i in range(300):
        if i % 5 == 4:
            pkt = random_packet(rng, rs)
        else:
            k = edges[i % len(edges)] if i < 40 else rng.randrange(n)
            pkt = packet_in_rule(rng, rs.ingress.rules[k])
        want = reference.classify(rs, "ingress", pkt)
        assert pc.classify("ingress", pkt) == want, pkt
        if want.rule_index is not None:
            groups.add(want.rule_index // 4096)
    assert groups == set(range(plan.ingress.ngroups)), groups


def test_large_plan_round_trips():
    plan = compile_ruleset(large_ruleset(random.Random(4), 9000))
    back = plan_from_bytes(plan.to_bytes())
    back._bytes = None
    assert back.to_bytes() == plan.to_bytes()
    assert back.ingress.tables == plan.ingress.tables
    # A block is kept once however many bitmaps and fields share it.
    tl = plan.ingress.two_level()
    assert len(set(tl.blocks)) == len(tl.blocks)
    assert sum(len(blk) for _, blk in tl.tops) > len(tl.blocks)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_first_rule_from_a_start(seed):
    """first_rule(picked, start) is the lowest rule >= start in every picked
    bitmap (what `continue` rules use), checked against the full bitmaps."""
    rng = random.Random(seed)
    plan = compile_ruleset(large_ruleset(rng, rng.choice([300, 5000, 9000])))
    d = plan.ingress
    tl = d.two_level()
    pc = PlanClassifier(plan)
    for _ in range(20):
        picked = rng.sample(range(len(tl.tops)), rng.randint(1, 4))
        both = (1 << d.nrules) - 1
        for i in picked:
            both &= tl.bitmap(i)
        for start in (0, rng.randrange(d.nrules + 1), rng.randrange(0, d.nrules, 4096), d.nrules, 65536):
            rest = both >> start << start
            want = (rest & -rest).bit_length() - 1 if rest else None
            assert pc.first_rule("ingress", picked, start) == want
