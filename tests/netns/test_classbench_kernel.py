"""The ClassBench 10k sets (acl1_10k, fw1_10k, ipc1_10k) through the kernel.

Each set is applied to a real interface (the first attaches, the others
are rule-only updates), and 1,000 distinct headers per set, from its trace
or, for acl1_10k which has none here, drawn inside random rules, go
through the attached XDP program with BPF_PROG_TEST_RUN.  The verdict and
the rule counter that moved must be those of a linear first-match scan
over the ClassBench rules (bench.classbench.first_match).
"""

from __future__ import annotations

import collections
import os

import pytest

from bench import classbench as cb
from tests.netns.traffic import quiet_b_plane
from xdpguard.datapath import bpf as B
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text

HEADERS = int(os.environ.get("XDPGUARD_CLASSBENCH_HEADERS", "1000"))


def test_classbench_10k_sets_agree_with_first_match(lab):
    missing = [n for n in cb.SETS_10K if not (cb.DATA_DIR / n).exists()]
    if missing:
        pytest.skip(f"ClassBench data not found at {cb.DATA_DIR} ({', '.join(missing)}); set CLASSBENCH_DIR")
    with quiet_b_plane(lab) as dp:
        for name in cb.SETS_10K:
            rules, headers, source = cb.load_set_headers(name, HEADERS)
            assert len(headers) == HEADERS, (name, source, len(headers))
            dp.apply(compile_ruleset(parse_text(cb.to_yaml(rules, name), f"{name}.yaml")), None)
            before = {r["name"]: r["packets"] for r in dp.stats()["ingress"]["rules"]}
            want: collections.Counter[str] = collections.Counter()
            prog = B.obj_get(dp.iface.pin("prog_ingress"))
            try:
                for h in headers:
                    k = cb.first_match(rules, h)
                    got = B.prog_test_run(prog, cb.frame(h)).retval
                    expect = B.XDP_DROP if k is not None and cb.action(k) == "drop" else B.XDP_PASS
                    assert got == expect, (name, source, h, k, got)
                    if k is not None:
                        want[f"{name}-{k}"] += 1
            finally:
                os.close(prog)
            after = {r["name"]: r["packets"] for r in dp.stats()["ingress"]["rules"]}
            moved = {n: after[n] - before[n] for n in after if after[n] != before[n]}
            assert moved == dict(want), name
            # The headers reach deep into the set, not only its first group.
            assert max(int(n.rsplit("-", 1)[1]) for n in want) >= 4096, name
