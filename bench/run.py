"""`make bench` / `make bench-quick`: run every benchmark, write the results.

Writes the rule files once into a temp dir (bench.workload), times
`xdpguard check` (bench.checktime), then in a private network namespace
times `xdpguard apply` (bench.applytime), measures the program's cost
per packet (bench.progcost) and compares with xdp-filter, nftables and
iptables-legacy (bench.peers: program cost, receive cost on a veth,
update cost), the cost of a rate limit (bench.limitcost) and of a
`state: established` rule (bench.statecost), the cost of hostile traffic
(bench.hostile: a new source on every packet, and a random-source flood
next to nft's per-source meter); results go to bench/results/latest.json and
the generated section of docs/benchmarks.md (bench.report), and a plot to
docs/img/bench-peers.png (bench.plot, matplotlib).  --quick runs
the same measurements with fewer repetitions and a smaller frame pool
(under three minutes); the rule files are the same size in both modes.
Needs root (namespaces, bpf(2)); the lab is removed whatever happens.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import importlib.metadata
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import (
    applytime,
    checktime,
    common,
    dynsets,
    hostile,
    limitcost,
    peers,
    plot,
    progcost,
    report,
    statecost,
    syncookie,
    updates,
    workload,
)
from xdpguard.datapath import loader

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "img" / "bench-peers.png"


@dataclass(frozen=True)
class Counts:
    check_reps: int
    apply_reps_small: int
    apply_reps_large: int
    pool_frames: int
    repeat: int
    single_repeat: int
    state_frames: int  # distinct sources per case in the state-cost run


FULL = Counts(
    check_reps=5,
    apply_reps_small=5,
    apply_reps_large=3,
    pool_frames=4096,
    repeat=2000,
    single_repeat=1_000_000,
    state_frames=50_000,
)
QUICK = Counts(
    check_reps=1,
    apply_reps_small=3,
    apply_reps_large=1,
    pool_frames=1000,
    repeat=500,
    single_repeat=100_000,
    state_frames=5000,
)


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total() -> str:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    return "unknown RAM"


def _python_source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "xdpguard").rglob("*.py")):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def loadavg() -> float:
    """1-minute load average: other work on the machine skews every timing here."""
    return os.getloadavg()[0]


def _busy_cpu_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat, first line)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and every child it waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


def _meta(quick: bool) -> dict[str, Any]:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    return {
        "mode": "quick" if quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "make_target": "make bench-quick" if quick else "make bench",
        "command": " ".join([python, "-m", "bench.run", *sys.argv[1:]]),
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "mem_total": _mem_total(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "xdpguard_version": importlib.metadata.version("xdpguard"),
        "bpf_source_hash": loader.source_hash(),
        "python_source_hash": _python_source_hash(),
        "loadavg_start": loadavg(),
    }


def _stage(name: str) -> float:
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    return time.monotonic()


def run(quick: bool) -> dict[str, Any]:
    n = QUICK if quick else FULL
    t_all, busy0, own0 = time.monotonic(), _busy_cpu_s(), _own_cpu_s()
    results: dict[str, Any] = {"meta": _meta(quick), "counts": asdict(n)}
    swept = common.sweep_stale()
    if swept:
        print(f"bench: removed leftovers of killed runs: {', '.join(swept)}", file=sys.stderr)
    # Byte-compiled, as `pip install` leaves an installed xdpguard: the CLI
    # timings are an operator's, not those of a checkout whose environment
    # forbids writing bytecode (PYTHONDONTWRITEBYTECODE), where every run
    # compiles the modules it imports again (~40 ms of each apply).
    compileall.compile_dir(str(ROOT / "xdpguard"), quiet=1)
    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=common.tmp_prefix("rules")) as d:
        t = _stage("writing rule files (4,096 rules, 1M-prefix set)")
        wl = workload.write(Path(d))
        stages["workload"] = time.monotonic() - t

        t = _stage("check")
        results["check"] = checktime.measure(wl, n.check_reps, workload.LARGE_RULES, workload.LARGE_PREFIXES)
        stages["check"] = time.monotonic() - t

        with common.lab() as lab:
            t = _stage(f"apply (lab namespace {lab.ns})")
            results["apply"] = applytime.measure(lab, wl, n.apply_reps_small, n.apply_reps_large)
            stages["apply"] = time.monotonic() - t

            t = _stage("program cost (BPF_PROG_TEST_RUN)")
            # applytime left both sets attached (applytime.LEFT_ON): no second compile and load.
            small_if = lab.ifaces[applytime.LEFT_ON["small"]]
            large_if = lab.ifaces[applytime.LEFT_ON["large"]]
            results["progcost"] = progcost.measure(
                lab,
                wl,
                small_if,
                large_if,
                lab.ifaces[2],
                n.pool_frames,
                n.repeat,
                n.single_repeat,
                xl_if=lab.ifaces[3],
            )
            stages["progcost"] = time.monotonic() - t

            t = _stage("peers: xdp-filter, nftables, iptables-legacy (program, receive and update cost)")
            try:
                results["peers"] = peers.measure(lab, wl, quick)
            except Exception as e:  # the other figures are still worth writing
                print(f"bench: peers comparison failed: {e}", file=sys.stderr)
                results["peers"] = {"error": f"{type(e).__name__}: {e}"}
            stages["peers"] = time.monotonic() - t

            t = _stage("rate-limit cost (limited rule against a plain allow rule)")
            results["limitcost"] = limitcost.measure(lab, lab.ifaces[1:], n.pool_frames // 4, n.repeat)
            stages["limitcost"] = time.monotonic() - t

            t = _stage("state cost (a state: established rule in front of a plain rule, cold and hot)")
            results["statecost"] = statecost.measure(lab, lab.ifaces[1:], n.state_frames, n.repeat)
            stages["statecost"] = time.monotonic() - t

            t = _stage("dynamic sets: set add, 100k from stdin, per-packet cost with 1M elements")
            try:
                results["dynsets"] = dynsets.measure(
                    lab, (lab.ifaces[2], lab.ifaces[3]), Path(d), n.apply_reps_small, n.repeat, 64
                )
            except Exception as e:  # the other figures are still worth writing
                print(f"bench: dynamic-set benchmark failed: {e}", file=sys.stderr)
                results["dynsets"] = {"error": f"{type(e).__name__}: {e}"}
            stages["dynsets"] = time.monotonic() - t

            t = _stage("hostile traffic: new sources, cold, and a random-source flood on the veth")
            try:
                results["hostile"] = hostile.measure(lab, quick)
            except Exception as e:  # the other figures are still worth writing
                print(f"bench: hostile-traffic benchmark failed: {e}", file=sys.stderr)
                results["hostile"] = {"error": f"{type(e).__name__}: {e}"}
            stages["hostile"] = time.monotonic() - t
    t = _stage("SYN cookies: cost per SYN in XDP, the stack and nft synproxy")
    try:
        results["syncookies"] = syncookie.measure(quick)
    except Exception as e:  # the other figures are still worth writing
        print(f"bench: SYN-cookie benchmark failed: {e}", file=sys.stderr)
        results["syncookies"] = {"error": f"{type(e).__name__}: {e}"}
    stages["syncookies"] = time.monotonic() - t

    t = _stage("updates under traffic: 100 applies, loss and leak, apply latency")
    try:
        results["updates"] = updates.measure()
    except Exception as e:  # the other figures are still worth writing
        print(f"bench: update benchmark failed: {e}", file=sys.stderr)
        results["updates"] = {"error": f"{type(e).__name__}: {e}"}
    stages["updates"] = time.monotonic() - t
    results["meta"]["stages_s"] = {k: round(v, 1) for k, v in stages.items()}
    elapsed = time.monotonic() - t_all
    results["meta"]["elapsed_s"] = round(elapsed, 1)
    # CPU time spent by everything else (other processes, and kernel threads) while
    # we ran, in CPUs busy on average: the noise every figure here carries.
    others = (_busy_cpu_s() - busy0) - (_own_cpu_s() - own0)
    results["meta"]["other_cpu_load"] = round(max(0.0, others) / elapsed, 2)
    results["meta"]["loadavg_end"] = loadavg()
    # Someone editing the tree mid-run would make the figures a mix of two versions.
    results["meta"]["sources_changed_during_run"] = (
        loader.source_hash() != results["meta"]["bpf_source_hash"]
        or _python_source_hash() != results["meta"]["python_source_hash"]
    )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and frames (< 3 minutes)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, bpf(2)); run `sudo make bench`", file=sys.stderr)
        return 1
    if loadavg() > 0.5:
        print(
            f"bench: warning: load average {loadavg():.2f}: other work will skew the timings", file=sys.stderr
        )
    results = run(args.quick)
    report.write_json(results, RESULTS)
    report.update_markdown(results, DOC)
    if plot.write(results, PLOT):
        print(f"bench: wrote {PLOT.relative_to(ROOT)}", file=sys.stderr)
    print(report.markdown(results))
    print(f"bench: wrote {RESULTS.relative_to(ROOT)} and {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
