"""The kernel agrees with the oracle, rate limits and continue rules included.

Random rule sets are applied to a real interface (the first one attaches
and compiles, the rest are rule-only updates), then >= 2,000 random raw
frames per set, malformed ones included, go through the pinned XDP
program with BPF_PROG_TEST_RUN.  Some rules carry small rate limits, some
are `continue` guards, some block sources: the programs are built with the
test clock, which the test moves frame by frame, and the reference
classifier replays the same instants on its simulated limiter
(xdpguard.rules.ratesim).  Each verdict must equal the reference's, and
so must the counters the program kept: packets per rule (continue rules
count every packet they pass on), over-limit drops, blocked sources.
Large sets (5,000 to 65,536 rules) get frames drawn inside random rules,
so that every group of 4,096 rules is reached.
"""

from __future__ import annotations

import collections
import os
import random
import struct

import pytest

from tests.frames import frame_of, random_frame
from tests.netns.traffic import quiet_b_plane
from tests.strategies import large_ruleset, packet_in_rule, random_ruleset
from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules import reference
from xdpguard.rules.compile import compile_ruleset, fix_sizes, uses_fixed, uses_fixed_flat
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.ratesim import LimiterSim

RULE_SETS = int(os.environ.get("XDPGUARD_ORACLE_SETS", "12"))
FRAMES_PER_SET = 2000
VERDICT = {B.XDP_DROP: reference.DROP, B.XDP_PASS: reference.PASS}
T0 = 10**12  # the test clock's start: any non-zero value (0 means the real clock)
STEPS_NS = [0, 0, 1_000, 300_000, 2_000_000, 5 * 10**9]


def test_kernel_verdicts_equal_reference(lab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261129"))
    rng = random.Random(seed)
    # Nothing may reach the interface but our test runs: the counters are compared exactly.
    seen: collections.Counter[str] = collections.Counter()
    with quiet_b_plane(lab) as dp:
        total = 0
        for n in range(RULE_SETS):
            rs = random_ruleset(rng, max_rules=rng.choice([4, 12, 40, 130]), lead_guard=n % 2 == 1)
            plan = compile_ruleset(rs)
            dp.apply(plan, None)
            # Rate-limit state is emptied between rule sets, where the
            # simulated limiter starts afresh too (names repeat across sets).
            with M.open_maps(dp.pin_dir) as m:
                M.reset_limiter(m, plan.limit_table_size)
            prog = B.obj_get(dp.iface.pin("prog_ingress"))
            clock = B.obj_get(dp.iface.pin("test_clock"))
            sim = LimiterSim(now_ns=T0)
            sources: dict[int, list[int]] = {}
            try:
                before = dp.stats()["ingress"]
                packets: collections.Counter[str] = collections.Counter()
                over: collections.Counter[str] = collections.Counter()
                for i in range(FRAMES_PER_SET):
                    frame = random_frame(rng, rs, sources=sources)
                    sim.now_ns += rng.choice(STEPS_NS)
                    B.map_update(clock, struct.pack("<I", 0), struct.pack("<Q", sim.now_ns))
                    want = reference.classify(rs, "ingress", parse_frame(frame), sim)
                    got = B.prog_test_run(prog, frame).retval
                    assert VERDICT.get(got) == want.action, (
                        f"seed {seed} set {n} frame {i}: kernel {got}, reference {want}; frame {frame.hex()}"
                    )
                    packets[want.reason] += 1
                    over[want.reason] += want.over
                    for j in want.passed:
                        packets[rs.ingress.rules[j].name] += 1
                    seen["over"] += want.over
                    seen["passed"] += len(want.passed)
                    seen["blocked"] += want.reason == "blocked"
                    total += 1
            finally:
                os.close(prog)
                os.close(clock)
            after = dp.stats()["ingress"]
            for r0, r1 in zip(before["rules"], after["rules"], strict=True):
                name = r1["name"]
                assert r1["packets"] - r0["packets"] == packets[name], name
                if "limit" in r1:
                    assert r1["limit"]["over_limit"] - r0["limit"]["over_limit"] == over[name], name
            for k in ("default", "malformed", "non_ip", "ndp", "blocked"):
                assert after[k]["packets"] - before[k]["packets"] == packets[k], k
            assert after["error"]["packets"] == 0
        assert total >= RULE_SETS * FRAMES_PER_SET
        # The sets did exercise what this test is for.
        assert seen["over"] and seen["passed"] and seen["blocked"], seen


# Then one group of rules with more bitmaps than `pflat` holds (the flat blocks are read
# from an inner map), and one with fewer (read from `pflat`: see maps.uses_pflat).
# 5,000 rules read their top entries and blocks from the fixed-size tables
# (compile.uses_fixed), 65,536 and 20,000 from tables sized to the plan;
# 4,000 rules read a flat table of the fixed size (compile.uses_fixed_flat).
LARGE_SIZES = [
    int(x) for x in os.environ.get("XDPGUARD_ORACLE_LARGE", "5000,65536,20000,4000,120").split(",")
]
LARGE_FRAMES = 400


def _agree_on_frames(dp: Dataplane, rs, n: int, rng: random.Random, seed: int) -> None:
    """LARGE_FRAMES frames, most drawn inside random rules of rs, through the
    attached program: verdicts and per-rule counters as the reference says."""
    prog = B.obj_get(dp.iface.pin("prog_ingress"))
    expect: collections.Counter[str] = collections.Counter()
    groups = set()
    try:
        before = dp.stats()["ingress"]
        for i in range(LARGE_FRAMES):
            if i % 8 == 7:
                frame = random_frame(rng, rs)
            else:
                frame = frame_of(packet_in_rule(rng, rs.ingress.rules[rng.randrange(n)]))
            want = reference.classify(rs, "ingress", parse_frame(frame))
            got = B.prog_test_run(prog, frame).retval
            assert VERDICT.get(got) == want.action, (
                f"seed {seed} size {n} frame {i}: kernel {got}, reference {want}; frame {frame.hex()}"
            )
            expect[want.reason] += 1
            if want.rule_index is not None:
                groups.add(want.rule_index // 4096)
    finally:
        os.close(prog)
    after = dp.stats()["ingress"]
    # The counters say which rule decided, not only the verdict.
    for r0, r1 in zip(before["rules"], after["rules"], strict=True):
        assert r1["packets"] - r0["packets"] == expect[r1["name"]], r1["name"]
    assert after["default"]["packets"] - before["default"]["packets"] == expect["default"]
    assert after["error"]["packets"] == 0
    assert len(groups) >= min(8, (n + 4095) // 4096), (n, sorted(groups))


def test_kernel_agrees_on_large_sets(lab):
    """First attach with 5,000 rules, then updates to 65,536, 20,000, 4,000 and 120."""
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261204"))
    rng = random.Random(seed)
    addr_classes: set[bool] = set()
    with quiet_b_plane(lab) as dp:
        for n in LARGE_SIZES:
            rs = large_ruleset(rng, n)
            plan = compile_ruleset(rs)
            dp.apply(plan, None)
            pflat = M.uses_pflat(plan.ingress)
            if n in (4000, 120):
                assert pflat == (n == 120), (n, plan.ingress.nbitmaps)  # both flat paths are taken
            # 5,000 rules fit the fixed-size tables, 65,536 and 20,000 do not
            # (more top entries than FIX_TOPS), fewer are one group: both
            # scans are taken, and a size class changes in each update.
            with M.open_maps(dp.pin_dir) as m:
                # Sized at the first attach, for 5,000 rules.
                sizes = M.read_fix_sizes(m)
                assert sizes is not None
                if n in (5000, 65536, 20000):
                    assert uses_fixed(plan.ingress, sizes) == (n == 5000), n
                for ver in range(2):
                    half = M.half_of("ingress", ver)
                    flags = M.read_config(m, half).flags
                    assert bool(flags & abi.CFG_PFLAT) == pflat, (n, ver)
                    classes = M.size_classes(m, half)
                    assert classes["bitmaps"] == uses_fixed(plan.ingress, sizes), (n, ver)
                    assert classes["flat"] == uses_fixed_flat(plan.ingress, sizes) == (n == 4000), (
                        n,
                        ver,
                    )
                    assert M.misplaced_tables(m, half) == [], (n, ver)
                    addr_classes.update(v for k, v in classes.items() if k != "bitmaps")
            _agree_on_frames(dp, rs, n, rng, seed)
        # Address tables of both sizes were read (65,536 rules make tables
        # of more than FIX_NODES elements).
        assert addr_classes == {True, False} or 65536 not in LARGE_SIZES, addr_classes


def test_fixed_sizes_are_chosen_at_the_first_attach(lab):
    """A first attach with 20,000 rules builds the programs with fixed-size
    tables that hold them (compile.fix_sizes), where the least sizes would
    not; an update to 65,536 rules outgrows them, is read from tables sized
    to it, and says so.  The kernel agrees with the reference throughout."""
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261205"))
    rng = random.Random(seed)
    with quiet_b_plane(lab) as dp:
        for n in (20000, 65536):
            rs = large_ruleset(rng, n)
            plan = compile_ruleset(rs)
            res = dp.apply(plan, None)
            with M.open_maps(dp.pin_dir) as m:
                sizes = M.read_fix_sizes(m)
                assert sizes == fix_sizes(plan) or n != 20000, sizes
                assert sizes is not None and sizes.tops > abi.FIX_TOPS_MIN, sizes
                half = M.half_of("ingress", M.read_active(dp.pin_dir))
                assert M.size_classes(m, half)["bitmaps"] == (n == 20000), n
                assert M.misplaced_tables(m, half) == []
            outgrown = [line for line in res.messages if "outgrew the fixed-size tables" in line]
            assert bool(outgrown) == (n == 65536), res.messages
            kind = dp.status()["fast_tables"]["ingress"]["bitmap_tables"]
            assert kind == ("fixed" if n == 20000 else "sized"), kind
            _agree_on_frames(dp, rs, n, rng, seed)
