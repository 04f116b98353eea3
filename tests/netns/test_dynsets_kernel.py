"""The kernel agrees with the reference when rules refer to dynamic sets.

Random rule sets whose src/dst conditions mix dynamic sets with static
prefixes are applied to a real interface; the sets are then filled and
refilled at run time (exact addresses and prefixes of both families, no
apply in between), and random raw frames, many with addresses in or next
to the sets' elements, go through the pinned XDP program with
BPF_PROG_TEST_RUN.  Every verdict must equal the reference classifier's
given what the sets hold at that moment.  Rate limits (the rule sets have
`continue` guards and limited rules) run on the programs' test clock, which
the test moves frame by frame; the reference replays the same instants on
its simulated limiter.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from tests.frames import random_frame
from tests.netns.traffic import quiet_b_plane
from tests.strategies import DYN_SETS, random_dyn_contents, random_ruleset
from xdpguard.datapath import bpf as B
from xdpguard.datapath import dynsets
from xdpguard.datapath import maps as M
from xdpguard.rules import reference
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.ratesim import LimiterSim

RULE_SETS = int(os.environ.get("XDPGUARD_ORACLE_SETS", "6"))
CONTENTS_PER_SET = 3
FRAMES = 400
VERDICT = {B.XDP_DROP: reference.DROP, B.XDP_PASS: reference.PASS}
T0 = 10**12  # the test clock's start (0 would mean the real clock)
STEPS_NS = [0, 1_000, 300_000, 2_000_000, 5 * 10**9]


def test_kernel_verdicts_with_dynamic_sets_equal_reference(lab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261205"))
    rng = random.Random(seed)
    with quiet_b_plane(lab) as dp:
        checked = hits = 0
        for n in range(RULE_SETS):
            rs = random_ruleset(rng, max_rules=rng.choice([4, 12, 40]), dynamic=True)
            plan = compile_ruleset(rs)
            dp.apply(plan, None)
            # The limiter starts afresh with each rule set, in the kernel and in the reference.
            with M.open_maps(dp.pin_dir) as m:
                M.reset_limiter(m, plan.limit_table_size)
            sim = LimiterSim(now_ns=T0)
            prog = B.obj_get(dp.iface.pin("prog_ingress"))
            clock = B.obj_get(dp.iface.pin("test_clock"))
            try:
                for c in range(CONTENTS_PER_SET):
                    contents = random_dyn_contents(rng)
                    for name in DYN_SETS:
                        sm = dynsets.open_set(dp.pin_dir, name)
                        assert sm is not None, name
                        with sm:
                            dynsets.flush(sm)
                            dynsets.add(sm, contents[name], 0, dynsets.now_ns(dp.pin_dir))
                    near = [p for elems in contents.values() for p in elems]
                    for i in range(FRAMES):
                        frame = random_frame(rng, rs, near)
                        pkt = parse_frame(frame)
                        sim.now_ns += rng.choice(STEPS_NS)
                        B.map_update(clock, struct.pack("<I", 0), struct.pack("<Q", sim.now_ns))
                        want = reference.classify(rs, "ingress", pkt, sim, dyn=contents)
                        got = B.prog_test_run(prog, frame).retval
                        assert VERDICT.get(got) == want.action, (
                            f"seed {seed} set {n} contents {c} frame {i}: kernel {got}, "
                            f"reference {want}; contents {contents}; frame {frame.hex()}"
                        )
                        checked += 1
                        unlimited = reference.classify(rs, "ingress", pkt, dyn=contents)
                        hits += unlimited != reference.classify(rs, "ingress", pkt, dyn={})
            finally:
                os.close(prog)
                os.close(clock)
        assert checked == RULE_SETS * CONTENTS_PER_SET * FRAMES
        # The sets decided a fair share of the verdicts, or the test proves little.
        assert hits >= checked // 50, (hits, checked)
