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
"""

from __future__ import annotations

import collections
import os
import random
import struct
import subprocess

import pytest

from tests.frames import random_frame
from tests.strategies import random_ruleset
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules import reference
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.ratesim import LimiterSim

RULE_SETS = int(os.environ.get("XDPGUARD_ORACLE_SETS", "12"))
FRAMES_PER_SET = 2000
VERDICT = {B.XDP_DROP: reference.DROP, B.XDP_PASS: reference.PASS}
T0 = 10**12  # the test clock's start: any non-zero value (0 means the real clock)
STEPS_NS = [0, 0, 1_000, 300_000, 2_000_000, 5 * 10**9]
# Rate-limit state carried from packet to packet: emptied between rule sets,
# where the simulated limiter starts afresh too (names repeat across sets).
LIMIT_MAPS = (
    ("src_buckets", M.C_SIZE["src_bucket_key"], M.C_SIZE["bucket"]),
    ("rule_buckets", 8, M.C_SIZE["bucket"]),
    ("blocked", M.C_SIZE["block_key"], M.C_SIZE["block"]),
)


def _forget_limits(pin_dir: str) -> None:
    with M.open_maps(pin_dir) as m:
        for name, key_size, value_size in LIMIT_MAPS:
            keys = [k for k, _ in B.map_lookup_batch(m[name], key_size, value_size, chunk=256)]
            if keys:
                B.map_delete_batch(m[name], keys)


def test_kernel_verdicts_equal_reference(lab, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261129"))
    rng = random.Random(seed)
    # Nothing may reach the interface but our test runs: the counters are compared exactly.
    subprocess.run(["ip", "-n", lab.a.ns, "link", "set", lab.a.ifname, "down"], check=True)
    seen: collections.Counter[str] = collections.Counter()
    with net.in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        try:
            total = 0
            for n in range(RULE_SETS):
                rs = random_ruleset(rng, max_rules=rng.choice([4, 12, 40, 130]), lead_guard=n % 2 == 1)
                plan = compile_ruleset(rs)
                dp.apply(plan, None)
                _forget_limits(dp.pin_dir)
                prog = B.obj_get(dp.iface.pin("prog_ingress"))
                clock = B.obj_get(dp.iface.pin("test_clock"))
                sim = LimiterSim(now_ns=T0)
                sources: dict[int, list[int]] = {}
                try:
                    before = dp.stats()["ingress"]
                    packets: collections.Counter[str] = collections.Counter()
                    over: collections.Counter[str] = collections.Counter()
                    for i in range(FRAMES_PER_SET):
                        frame = random_frame(rng, rs, sources)
                        sim.now_ns += rng.choice(STEPS_NS)
                        B.map_update(clock, struct.pack("<I", 0), struct.pack("<Q", sim.now_ns))
                        want = reference.classify(rs, "ingress", parse_frame(frame), sim)
                        got = B.prog_test_run(prog, frame).retval
                        assert VERDICT.get(got) == want.action, (
                            f"seed {seed} set {n} frame {i}: kernel {got}, reference {want}; "
                            f"frame {frame.hex()}"
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
        finally:
            dp.detach()
