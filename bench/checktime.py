"""`xdpguard check` on a small and a large rule file: wall time and peak RSS.

Method: `python -m xdpguard check --json FILE` as a subprocess, REPS times
per file; the wall time is the monotonic clock around start and exit, so
it includes interpreter start-up, imports, reading the set file, parsing,
compiling and printing the JSON.  Peak RSS is that process's maximum
resident set size (GNU time %M).  The JSON answer is checked (valid, rule
and prefix counts), so a fast failure cannot pass for a fast check.  Targets for 4,096 rules plus
a 1,000,000-prefix set: <= 10 s and <= 1.5 GB.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import CLI, median, run_measured, summary
from bench.workload import Workload

TARGET_SECONDS = 10.0
TARGET_RSS_BYTES = 1.5e9


def _samples(path: Path, want_rules: int, want_prefixes: int, reps: int) -> tuple[list[float], list[int]]:
    """(wall seconds, peak RSS bytes) of REPS checks of one file."""
    walls: list[float] = []
    rss: list[int] = []
    for _ in range(reps):
        r = run_measured([*CLI, "check", "--json", str(path)]).check()
        data = json.loads(r.stdout)
        nrules = len(data["ingress"]["rules"])
        nprefixes = sum(s["prefixes"] for s in data["sets"])
        if not data["valid"] or nrules != want_rules or nprefixes != want_prefixes:
            raise RuntimeError(f"check {path}: {nrules} rules / {nprefixes} set prefixes, unexpected")
        walls.append(r.wall_s)
        rss.append(r.maxrss_kib * 1024)
    return walls, rss


def _entry(path: Path, rules: int, prefixes: int, walls: list[float], rss: list[int]) -> dict[str, object]:
    return {
        "file": path.name,
        "rules": rules,
        "set_prefixes": prefixes,
        "wall_s": summary(walls),
        "peak_rss_bytes": {"median": int(median(rss)), "max": max(rss), "samples": rss},
    }


def measure(wl: Workload, reps: int, large_rules: int, large_prefixes: int) -> dict[str, object]:
    small_walls, small_rss = _samples(wl.small, 10, 0, reps)
    large_walls, large_rss = _samples(wl.large, large_rules, large_prefixes, reps)
    return {
        "method": "subprocess `python -m xdpguard check --json FILE`; wall = monotonic clock around "
        "start and exit; peak RSS = maximum resident set size of that child (GNU time %M)",
        "reps": reps,
        "small": _entry(wl.small, 10, 0, small_walls, small_rss),
        "large": _entry(wl.large, large_rules, large_prefixes, large_walls, large_rss),
        "targets": {
            "wall_s": TARGET_SECONDS,
            "peak_rss_bytes": TARGET_RSS_BYTES,
            "wall_ok": median(large_walls) <= TARGET_SECONDS,
            "rss_ok": max(large_rss) <= TARGET_RSS_BYTES,
        },
    }
