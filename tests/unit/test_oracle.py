"""The oracle pair agrees: the compiled plan classifies like the reference.

>= 200 random rule sets x 60 random packets (v4, v6, ranges, flags, ICMP,
state, fragments, malformed, non-IP) in each direction.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import random_packet, rulesets
from xdpguard.rules import reference
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import compile_ruleset, plan_from_bytes

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
