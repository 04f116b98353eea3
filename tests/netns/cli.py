"""Running the real CLI from netns tests: `python -m xdpguard ...` as a subprocess.

The environment (XDPGUARD_BPFFS / XDPGUARD_STATE_DIR, set per test by the
lab fixture) is passed through, so the CLI acts on the test's own pins.
"""

from __future__ import annotations

import os
import subprocess
import sys


def xg(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run xdpguard; with check, a non-zero exit fails the test with the command's output."""
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", *args],
        capture_output=True,
        text=True,
        env=os.environ | (env or {}),
    )
    if check and r.returncode != 0:
        raise AssertionError(f"xdpguard {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r
