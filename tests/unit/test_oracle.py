"""The oracle pair agrees: the compiled plan classifies like the reference.

>= 200 random rule sets x 60 random packets (v4, v6, ranges, flags, ICMP,
state, fragments, malformed, non-IP) in each direction.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import packet_stream, random_packet, rulesets
from xdpguard.rules import reference
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import compile_ruleset, plan_from_bytes
from xdpguard.rules.ratesim import LimiterSim

PACKETS_PER_SET = 60
checked = {"sets": 0, "packets": 0}


@settings(max_examples=220, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rs=rulesets(), seed=st.integers(0, 2**32 - 1))
def test_plan_agrees_with_reference(rs, seed):
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


def test_oracle_volume():
    # Runs after the property test in file order: the SPEC's minimum volume was reached.
    assert checked["sets"] >= 200 and checked["packets"] >= 10_000, checked


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
