"""The kernel agrees with the reference when rules refer to dynamic sets.

Random rule sets whose src/dst conditions mix dynamic sets with static
prefixes are applied to a real interface; the sets are then filled and
refilled at run time (exact addresses and prefixes of both families, no
apply in between), and random raw frames, many with addresses in or next
to the sets' elements, go through the pinned XDP program with
BPF_PROG_TEST_RUN.  Every verdict must equal the reference classifier's
given what the sets hold at that moment.
"""

from __future__ import annotations

import os
import random
import subprocess

from tests.frames import random_frame
from tests.strategies import DYN_SETS, random_dyn_contents, random_ruleset
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import dynsets
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules import reference
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import parse_frame

RULE_SETS = int(os.environ.get("XDPGUARD_ORACLE_SETS", "6"))
CONTENTS_PER_SET = 3
FRAMES = 400
VERDICT = {B.XDP_DROP: reference.DROP, B.XDP_PASS: reference.PASS}


def test_kernel_verdicts_with_dynamic_sets_equal_reference(lab):
    seed = int(os.environ.get("XDPGUARD_ORACLE_SEED", "20261205"))
    rng = random.Random(seed)
    subprocess.run(["ip", "-n", lab.a.ns, "link", "set", lab.a.ifname, "down"], check=True)
    with net.in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        try:
            checked = hits = 0
            for n in range(RULE_SETS):
                rs = random_ruleset(rng, max_rules=rng.choice([4, 12, 40]), dynamic=True)
                dp.apply(compile_ruleset(rs), None)
                prog = B.obj_get(dp.iface.pin("prog_ingress"))
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
                            want = reference.classify(rs, "ingress", pkt, dyn=contents)
                            got = B.prog_test_run(prog, frame).retval
                            assert VERDICT.get(got) == want.action, (
                                f"seed {seed} set {n} contents {c} frame {i}: kernel {got}, "
                                f"reference {want}; contents {contents}; frame {frame.hex()}"
                            )
                            checked += 1
                            hits += want != reference.classify(rs, "ingress", pkt, dyn={})
                finally:
                    os.close(prog)
            assert checked == RULE_SETS * CONTENTS_PER_SET * FRAMES
            # The sets decided a fair share of the verdicts, or the test proves little.
            assert hits >= checked // 50, (hits, checked)
        finally:
            dp.detach()
