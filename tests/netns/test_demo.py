"""`make demo` works: the README's first command passes and leaves nothing behind.

Runs the demo exactly as `make demo` does, as a separate process, so its
namespaces, bpffs directory and state directory are named after that
process's pid and can be looked for afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from xdpguard import net

ROOT = Path(__file__).resolve().parents[2]


def test_demo_passes_and_cleans_up() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "xdpguard.demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # timed out: SIGTERM makes the demo clean up
            proc.terminate()
            proc.communicate(timeout=60)
    pid = proc.pid

    assert proc.returncode == 0, out
    assert "FAIL" not in out, out
    assert "probes from" in out and "demo OK" in out, out
    left = [ns for ns in net.list_netns() if ns.startswith(f"xgdemo-{pid}-")]
    assert not left, f"namespaces left: {left}"
    assert not Path(f"/sys/fs/bpf/xdpguard-demo-{pid}").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"xgdemo-{pid}-*"))
