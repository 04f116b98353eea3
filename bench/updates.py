"""Apply latency under traffic, and proof that updates lose and leak nothing.

The scenario is tests/netns/test_zero_loss.py (no loss, no leak): paced,
sequence-numbered UDP to an allowed and a denied port while 100 applies
alternate two rule sets that number their rules differently, every 5th
also swapping both programs.  The benchmark runs that test and reads the
report it writes (frames sent, lost, leaked, apply latency p50/p99), so
the figure and the invariant come from one piece of code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="xgbench-updates-") as d:
        env = os.environ.copy()
        env["XDPGUARD_REPORT_DIR"] = d
        for k in ("XDPGUARD_BPFFS", "XDPGUARD_STATE_DIR"):
            env.pop(k, None)  # the test's lab fixture chooses its own
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/netns/test_zero_loss.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        report_path = Path(d, "zero_loss.json")
        if not report_path.exists():
            raise RuntimeError(
                f"the zero-loss scenario did not report:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            )
        report: dict[str, object] = json.loads(report_path.read_text())
    report["passed"] = r.returncode == 0
    report["method"] = (
        "tests/netns/test_zero_loss.py: 4,000 pps of sequence-numbered UDP (half to an allowed, half to a "
        "denied port) while 100 in-process applies alternate two renumbered rule sets, every 5th with "
        "--replace-program; latency = Dataplane.apply wall time"
    )
    return report
