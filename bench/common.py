"""Shared plumbing of the benchmarks: statistics, measured subprocesses, the lab.

`run_measured` runs a command to completion and keeps its wall time (the
monotonic clock around start and end) and its peak RSS, as GNU time's
%M ("Maximum resident set size" of `/usr/bin/time -v`) reports it.

`Lab` is a private network namespace holding two veth pairs, with
XDPGUARD_BPFFS and XDPGUARD_STATE_DIR pointed at private places for its
lifetime; leaving it removes every pin, the veth pair and the namespace,
whatever happened inside.  Namespaces, bpffs and temp dirs left by a
benchmark that was killed are swept on the next start (their names carry
the pid).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xdpguard import net

BPFFS_ROOT = Path("/sys/fs/bpf")
NS_PREFIX = "xgbench"
BPFFS_PREFIX = "xdpguard-bench-"
TMP_PREFIX = "xdpguard-bench-"  # + "<pid>-<kind>-" under the temp dir
# The CLI exactly as an operator runs it, with the interpreter the benchmark runs under.
CLI: tuple[str, ...] = (sys.executable, "-m", "xdpguard")
GNU_TIME = "/usr/bin/time"


# --- statistics ------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): a value that was really measured."""
    s = sorted(xs)
    rank = max(1, math.ceil(q / 100 * len(s)))
    return float(s[rank - 1])


def trimmed_mean(xs: Sequence[float], keep: float = 0.98) -> float:
    """The mean of the fastest `keep` share of xs: finer than a median when
    the timer counts in coarse steps, and free of the rare long outlier
    (an interrupt inside a timed run)."""
    s = sorted(xs)[: max(1, int(len(xs) * keep))]
    return sum(s) / len(s)


def summary(xs: Sequence[float], digits: int = 4) -> dict[str, object]:
    """Median, min, max and every sample, rounded: what latest.json keeps per timing."""
    return {
        "median": round(median(xs), digits),
        "min": round(min(xs), digits),
        "max": round(max(xs), digits),
        "n": len(xs),
        "samples": [round(x, digits) for x in xs],
    }


# --- measured subprocesses -------------------------------------------------


@dataclass(frozen=True)
class ProcResult:
    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    maxrss_kib: int  # ru_maxrss of this child (KiB on Linux)
    stdout: str
    stderr: str

    def check(self) -> ProcResult:
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.argv)} exited with {self.returncode}:\n{self.stderr.strip()[-2000:]}"
            )
        return self


def run_measured(argv: Sequence[str], cwd: Path | None = None) -> ProcResult:
    """Run argv to completion; wall time and peak RSS of that process alone.

    The command runs under GNU time (`/usr/bin/time -f %M`), which reports
    the peak RSS of its own child.  Reaping our child directly would not do:
    exec() folds the pre-exec high-water mark into ru_maxrss, and a child
    forked (or vforked) from this process starts with the benchmark's own,
    much larger, resident set.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.NamedTemporaryFile("r", prefix=tmp_prefix("rss")) as rss,
    ):
        full = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv]
        t0 = time.monotonic()
        proc = subprocess.run(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, check=False)
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        # GNU time writes "Command exited with non-zero status N" before %M on failure.
        lines = rss.read().split()
        maxrss = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        return ProcResult(tuple(argv), proc.returncode, wall, maxrss, out.read(), err.read())


# --- the lab ---------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    ns: str
    ifaces: tuple[str, ...]  # xgb0..xgb3: two veth pairs (xgb0-xgb1, xgb2-xgb3), all inside ns
    bpffs: Path
    state_dir: Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(d: Path) -> None:
    """Unpin everything under a bpffs dir (a plain rmtree works there too)."""
    shutil.rmtree(d, ignore_errors=True)


def tmp_prefix(kind: str) -> str:
    """Prefix for temp files and dirs, carrying our pid so sweep_stale can find leftovers."""
    return f"{TMP_PREFIX}{os.getpid()}-{kind}-"


def sweep_stale() -> list[str]:
    """Remove namespaces, bpffs and temp dirs of benchmark runs whose process is gone."""
    removed = []
    tpat = re.compile(rf"^{TMP_PREFIX}(\d+)-")
    tmp = Path(tempfile.gettempdir())
    for p in tmp.iterdir():
        m = tpat.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(str(p))
    pat = re.compile(rf"^{NS_PREFIX}(\d+)$")
    for name in net.list_netns():
        m = pat.match(name)
        if m and not _pid_alive(int(m.group(1))):
            net.delete_netns(name)
            removed.append(name)
    bpat = re.compile(rf"^{BPFFS_PREFIX}(\d+)$")
    for d in BPFFS_ROOT.iterdir() if BPFFS_ROOT.is_dir() else ():
        m = bpat.match(d.name)
        if m and not _pid_alive(int(m.group(1))):
            _remove_tree(d)
            removed.append(str(d))
    return removed


@contextmanager
def lab() -> Iterator[Lab]:
    """A namespace with veths xgb0 <-> xgb1 and xgb2 <-> xgb3, private bpffs and
    state dirs; always torn down."""
    pid = os.getpid()
    ns = f"{NS_PREFIX}{pid}"
    bpffs = BPFFS_ROOT / f"{BPFFS_PREFIX}{pid}"
    state_dir = Path(tempfile.mkdtemp(prefix=tmp_prefix("state")))
    saved = {k: os.environ.get(k) for k in ("XDPGUARD_BPFFS", "XDPGUARD_STATE_DIR")}
    os.environ["XDPGUARD_BPFFS"] = str(bpffs)
    os.environ["XDPGUARD_STATE_DIR"] = str(state_dir)
    ifaces = ("xgb0", "xgb1", "xgb2", "xgb3")
    try:
        net.create_netns(ns)
        net.create_veth_pair(ifaces[0], ns, ifaces[1], ns, ["10.201.0.1/24"], ["10.201.0.2/24"])
        net.create_veth_pair(ifaces[2], ns, ifaces[3], ns, ["10.201.1.1/24"], ["10.201.1.2/24"])
        yield Lab(ns, ifaces, bpffs, state_dir)
    finally:
        # Pins first (removing a link pin with no fd open detaches the program),
        # then the veth pair, then the namespace itself.
        if bpffs.exists():
            _remove_tree(bpffs)
        try:
            if net.netns_exists(ns):
                net.delete_link(ifaces[0], ns)
                net.delete_link(ifaces[2], ns)
        finally:
            net.delete_netns(ns)
            shutil.rmtree(state_dir, ignore_errors=True)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
