"""xdpguard next to its peers: xdp-filter, nftables (netdev ingress), iptables-legacy (raw).

Three measurements, all in the lab namespace:

1. Program cost (BPF_PROG_TEST_RUN, bench.progcost's method: every program
   attached while measured so that all sit in the XDP dispatcher, one pool
   of distinct frames, programs taking turns frame by frame, hot = per-frame
   average of `repeat` runs, median over the pool, process pinned to one
   CPU).  Programs: the trivial XDP_PASS program (floor); xdpguard with the
   benchmark's 10-rule set, with xdp-filter's job written as 10 rules, and
   (a round of its own) with the 10 rules behind a `state: established` rule;
   xdp-filter (`xdp-filter load`, then 5 `port` and 5 `ip -m src` entries)
   found by the prog id on its interface; xdpguard with ClassBench acl1_1k,
   fw1_1k and ipc1_1k (bench.classbench), each with its own trace's headers
   as frames.
2. Receive cost on the veth pair xgb0 -> xgb1: the
   sender (bench.sender, plain AF_PACKET send(): linear frames) runs pinned
   to CPU 0, so the receiving veth's work runs as softirq on CPU 0; the
   softirq time of CPU 0 in /proc/stat over the run, divided by the frames
   sent, is the receive cost per packet.  3 runs per configuration, median.
   Configurations: nothing attached; a bare XDP_DROP program (the floor);
   xdpguard, nft linear chain and iptables-legacy raw linear rules for
   acl1_1k (acl1_1k trace frames); xdpguard and an nft interval set for a
   100,000-prefix blocklist (frames half inside the blocklist, half random).
   Frames are sent to xgb1's MAC (a frame for another MAC would be dropped
   by ip_rcv before iptables' PREROUTING hook), and the namespace gets a
   `blackhole` default route for the run, so whatever passes a filter is
   dropped silently at the routing step, the same way for every
   configuration.
3. Update cost: `nft -f` of the acl1_1k chain and of the 100k set, next to
   `xdpguard apply` (rule-only: the program is already attached) of the same.

Everything made here (the nft table, iptables rules, xdp-filter and its
pins under /sys/fs/bpf/xdp-filter, links) is removed on the way out,
whatever happens; the namespace itself is the lab's.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import classbench as cb
from bench import gen, progcost, translate
from bench.applytime import apply_cli
from bench.common import CLI, Lab, median, percentile, run_measured, summary, tmp_prefix
from bench.workload import Workload, behind_state_rule, change_one_port
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import load
from xdpguard.state import Iface

XDP_DROP_PROG = bytes.fromhex("b700000001000000") + bytes.fromhex("9500000000000000")  # r0 = 1; exit
XDP_FILTER_PINS = Path("/sys/fs/bpf/xdp-filter")
LIBXDP_PINS = Path("/sys/fs/bpf/xdp")  # libxdp's own directory, made by xdp-filter's first load
BLOCKLIST_PREFIXES = 100_000
SENDER_CPU = 0
TARGET_SMALL_VS_XDPFILTER = 1.0
TARGET_ACL_VS_XDPFILTER = 1.5  # acl1_1k and acl1_10k alike
TARGET_ALLDROP_VS_FLOOR = 1.3  # acl1_1k, every rule drop: classification alone over XDP_DROP
TARGET_ACL10K_VS_NFT = 20.0  # acl1_10k: at least this many times cheaper than nft's linear chain
# Every ClassBench set in the program-cost round; the 10k ones on the veth too.
PC_SETS = (*cb.SETS, *cb.SETS_10K)
# xdp-filter's job: 5 destination ports (tcp and udp) and 5 source addresses, all denied.
XF_PORTS = (23, 135, 139, 445, 3389)
XF_SRCS = ("198.18.0.1", "198.18.0.2", "203.0.113.7", "192.0.2.99", "100.64.1.1")


@dataclass(frozen=True)
class Counts:
    pool_frames: int
    repeat: int
    rx_packets: int
    rx_max_s: float
    rx_runs: int
    update_reps: int


FULL = Counts(pool_frames=4096, repeat=2000, rx_packets=2_000_000, rx_max_s=6.0, rx_runs=3, update_reps=3)
QUICK = Counts(pool_frames=1000, repeat=500, rx_packets=600_000, rx_max_s=2.0, rx_runs=3, update_reps=1)


def _nsenter(lab: Lab) -> list[str]:
    return ["nsenter", f"--net={net.netns_path(lab.ns)}"]


def _run(
    argv: Sequence[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=300, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {r.returncode}: {r.stderr.strip()[-1000:]}")
    return r


def xf10_yaml() -> str:
    """xdp-filter's 10 entries as xdpguard rules (deny listed, default allow)."""
    out = ["version: 1", "ingress:", "  default: allow", "  rules:"]
    for i, a in enumerate(XF_SRCS):
        out += [f"    - name: src{i}", f"      match: {{src: {a}}}", "      action: drop"]
    for p in XF_PORTS:
        out += [
            f"    - name: port{p}",
            f"      match: {{proto: [tcp, udp], dport: {p}}}",
            "      action: drop",
        ]
    return "\n".join(out) + "\n"


def blocklist_yaml(setfile: str) -> str:
    return (
        "version: 1\nsets:\n"
        f"  bl: {{file: {setfile}}}\n"
        "ingress:\n  default: allow\n  rules:\n"
        '    - name: blocklist\n      match: {src: "@bl"}\n      action: drop\n'
    )


# --- attaching things ---------------------------------------------------------


def _apply_inproc(lab: Lab, ifname: str, path: Path) -> int:
    """Apply a rule file on ifname in the lab (in-process); fd of its pinned program."""
    plan = compile_ruleset(load(path))
    with net.in_netns(lab.ns):
        Dataplane(ifname, net.ifindex(ifname), lab.ns).apply(plan, None)
    return B.obj_get(Iface(ifname).pin(progcost.PROG_PIN))


@contextmanager
def _xdp_link(lab: Lab, ifname: str, insns: bytes, name: str) -> Iterator[int]:
    """Load a trivial XDP program and link it to ifname; yields the program fd."""
    fd = B.prog_load(B.BPF_PROG_TYPE_XDP, insns, expected_attach_type=B.BPF_XDP, name=name)
    try:
        with net.in_netns(lab.ns):
            link = B.link_create(fd, net.ifindex(ifname), B.BPF_XDP)
        try:
            yield fd
        finally:
            os.close(link)  # no pin: closing the link detaches the program
    finally:
        os.close(fd)


@contextmanager
def xdp_filter(lab: Lab, ifname: str) -> Iterator[int]:
    """xdp-filter loaded (native) on ifname with the 10 entries; yields its program fd."""
    if shutil.which("xdp-filter") is None:
        raise RuntimeError("xdp-filter is not installed (Debian package xdp-tools)")
    if XDP_FILTER_PINS.exists():
        raise RuntimeError(f"{XDP_FILTER_PINS} exists: another xdp-filter is in use here; not touching it")
    libxdp_was_there = LIBXDP_PINS.exists()
    ns = _nsenter(lab)
    try:
        _run([*ns, "xdp-filter", "load", "-m", "native", "-f", "tcp,udp,ipv4", ifname])
        for p in XF_PORTS:
            _run([*ns, "xdp-filter", "port", str(p)])
        for a in XF_SRCS:
            _run([*ns, "xdp-filter", "ip", "-m", "src", a])
        info = json.loads(_run([*ns, "bpftool", "-j", "net", "show", "dev", ifname]).stdout)
        progs = [x["id"] for entry in info for x in entry.get("xdp", []) if x.get("devname") == ifname]
        if not progs:
            raise RuntimeError(f"xdp-filter loaded but no XDP program shows on {ifname}")
        fd = B.prog_get_fd_by_id(int(progs[0]))
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        _run([*ns, "xdp-filter", "unload", ifname], check=False)
        shutil.rmtree(XDP_FILTER_PINS, ignore_errors=True)  # absent at the start (checked above)
        if not libxdp_was_there:
            with contextlib.suppress(OSError):  # only if empty: libxdp may have pinned something since
                LIBXDP_PINS.rmdir()


# --- 1. program cost ------------------------------------------------------------


def _pool(headers: Sequence[cb.Header], n: int, kind: str = "trace") -> list[progcost.Frame]:
    hs = cb.distinct(headers)
    random.Random(11).shuffle(hs)
    return [progcost.Frame(cb.frame(h), kind) for h in hs[:n]]


def _headers(name: str, n: int) -> tuple[list[cb.Rule], list[cb.Header], str]:
    """A set's rules and up to n distinct headers: its trace's, or drawn inside its rules."""
    return cb.load_set_headers(name, max(n, 8192))


def _round(progs: dict[str, int], pool: list[progcost.Frame], repeat: int) -> dict[str, dict[str, float]]:
    with progcost._pinned_to_one_cpu():
        hot, verdicts = progcost._run_pool(progs, pool, repeat)
    out = {}
    for k, v in hot.items():
        drops = sum(c for key, c in verdicts[k].items() if key.endswith(":drop"))
        out[k] = {"median": median(v), "p90": percentile(v, 90), "drop_share": drops / len(pool)}
    return out


def measure_progcost(lab: Lab, wl: Workload, d: Path, n: Counts) -> dict[str, Any]:
    x0, x1, x2, x3 = lab.ifaces
    sets = {name: _headers(name, n.pool_frames) for name in PC_SETS}
    yamls = {name: cb.write_yaml(rules, d / f"{name}.yaml", name) for name, (rules, _, _) in sets.items()}
    xf = d / "xf10.yaml"
    xf.write_text(xf10_yaml())
    rounds: dict[str, dict[str, dict[str, float]]] = {}
    with ExitStack() as st:
        st.callback(lambda: [Dataplane(i, None).detach() for i in (x0, x1)])
        floor = st.enter_context(_xdp_link(lab, x2, progcost.XDP_PASS_PROG, "xgb_floor"))
        xdpf = st.enter_context(xdp_filter(lab, x3))
        small = _apply_inproc(lab, x0, wl.small)
        st.callback(os.close, small)
        xg10 = _apply_inproc(lab, x1, xf)
        st.callback(os.close, xg10)
        acl_pool = _pool(sets["acl1_1k"][1], n.pool_frames)
        rounds["10rules"] = _round(
            {"floor": floor, "xdp-filter": xdpf, "xdpguard-10": small, "xdpguard-xf10": xg10},
            acl_pool,
            n.repeat,
        )
        # The same 10 rules behind a `state: established` rule, as most edge
        # rule files start (the flow table is asked for every packet that may
        # belong to a flow): a round of its own, on x1.
        state10 = d / "small-state.yaml"
        state10.write_text(behind_state_rule(wl.small.read_text()))
        xg10s = _apply_inproc(lab, x1, state10)
        st.callback(os.close, xg10s)
        rounds["10rules_state"] = _round(
            {"floor": floor, "xdp-filter": xdpf, "xdpguard-10-state": xg10s}, acl_pool, n.repeat
        )
        for i, name in enumerate(PC_SETS):
            fd = _apply_inproc(lab, (x0, x1)[i % 2], yamls[name])
            try:
                pool = acl_pool if name == "acl1_1k" else _pool(sets[name][1], n.pool_frames, sets[name][2])
                progs = {"floor": floor, "xdp-filter": xdpf, f"xdpguard-{name}": fd}
                rounds[name] = _round(progs, pool, n.repeat)
            finally:
                os.close(fd)
    r10 = rounds["10rules"]
    xf_med = r10["xdp-filter"]["median"]
    ratio_small = r10["xdpguard-10"]["median"] / xf_med
    r10s = rounds["10rules_state"]
    ratio_state10 = r10s["xdpguard-10-state"]["median"] / r10s["xdp-filter"]["median"]
    ratio_acl = rounds["acl1_1k"]["xdpguard-acl1_1k"]["median"] / rounds["acl1_1k"]["xdp-filter"]["median"]
    ratio_acl10k = (
        rounds["acl1_10k"]["xdpguard-acl1_10k"]["median"] / rounds["acl1_10k"]["xdp-filter"]["median"]
    )
    return {
        "method": "BPF_PROG_TEST_RUN as bench.progcost (all programs attached, hot = per-frame average of "
        "`repeat` runs, median/p90 over a pool of distinct frames, programs taking turns); pools: "
        "distinct ClassBench headers of the set, from its trace, or drawn inside random rules of a set "
        "without one (the 10-rule round uses acl1_1k's)",
        "pool_frames": {k: len(_pool(v[1], n.pool_frames)) for k, v in sets.items()},
        "pool_source": {k: v[2] for k, v in sets.items()},
        "repeat": n.repeat,
        "rules": {k: len(v[0]) for k, v in sets.items()},
        "xdp_filter_entries": {"dst_ports_tcp_udp": list(XF_PORTS), "src_addrs": list(XF_SRCS)},
        "rounds": rounds,
        "ratio_xdpguard10_vs_xdpfilter": ratio_small,
        "ratio_xdpguard_xf10_vs_xdpfilter": r10["xdpguard-xf10"]["median"] / xf_med,
        "ratio_xdpguard10_state_vs_xdpfilter": ratio_state10,
        "ratio_acl1_1k_vs_xdpfilter": ratio_acl,
        "ratio_acl1_10k_vs_xdpfilter": ratio_acl10k,
        "targets": {
            "small_vs_xdpfilter": TARGET_SMALL_VS_XDPFILTER,
            "small_ok": ratio_small <= TARGET_SMALL_VS_XDPFILTER,
            "small_state_ok": ratio_state10 <= TARGET_SMALL_VS_XDPFILTER,
            "acl_vs_xdpfilter": TARGET_ACL_VS_XDPFILTER,
            "acl_ok": ratio_acl <= TARGET_ACL_VS_XDPFILTER,
            "acl10k_ok": ratio_acl10k <= TARGET_ACL_VS_XDPFILTER,
        },
    }


# --- 2. receive cost ----------------------------------------------------------


def _softirq_ticks(cpu: int) -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                return int(line.split()[7])  # user nice system idle iowait irq softirq
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def _send_once(lab: Lab, iface: str, frames_file: Path, n: Counts) -> dict[str, float]:
    argv = [
        "taskset", "-c", str(SENDER_CPU), *_nsenter(lab),
        sys.executable, "-m", "bench.sender", iface, str(frames_file), str(n.rx_packets), str(n.rx_max_s),
    ]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    t0 = _softirq_ticks(SENDER_CPU)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=root)
    t1 = _softirq_ticks(SENDER_CPU)
    if r.returncode != 0:
        raise RuntimeError(f"sender failed: {r.stderr.strip()[-1000:]}")
    res = json.loads(r.stdout)
    sent = int(res["sent"])
    softirq_s = (t1 - t0) / os.sysconf("SC_CLK_TCK")
    return {
        "sent": sent,
        "seconds": res["seconds"],
        "softirq_s": softirq_s,
        "ns_per_pkt": softirq_s * 1e9 / sent,
    }


def _rx(lab: Lab, iface: str, frames_file: Path, n: Counts) -> dict[str, Any]:
    # The benchmark itself keeps off the sender's CPU while it waits.
    before = os.sched_getaffinity(0)
    others = before - {SENDER_CPU}
    if others:
        os.sched_setaffinity(0, others)
    try:
        runs = [_send_once(lab, iface, frames_file, n) for _ in range(n.rx_runs)]
    finally:
        os.sched_setaffinity(0, before)
    ns = [r["ns_per_pkt"] for r in runs]
    return {
        "ns_per_pkt": median(ns),
        "runs": runs,
        "pps_median": median([r["sent"] / r["seconds"] for r in runs]),
        "min": min(ns),
        "max": max(ns),
    }


def _frames_file(d: Path, name: str, frames: Sequence[bytes], mac: bytes) -> Path:
    p = d / f"{name}.frames"
    p.write_bytes(b"".join(mac + f[6:] for f in frames))
    return p


@contextmanager
def _blackhole_default(lab: Lab) -> Iterator[None]:
    _run([*_nsenter(lab), "ip", "route", "add", "blackhole", "default"])
    try:
        yield
    finally:
        _run([*_nsenter(lab), "ip", "route", "del", "blackhole", "default"], check=False)


@contextmanager
def _nft(lab: Lab, text: str, d: Path, name: str) -> Iterator[float]:
    """Load an nft file in the lab; yields the `nft -f` wall time; deletes the table after."""
    p = d / f"{name}.nft"
    p.write_text(text)
    try:
        r = run_measured([*_nsenter(lab), "nft", "-f", str(p)]).check()
        yield r.wall_s
    finally:
        _run([*_nsenter(lab), "nft", "-f", "-"], stdin=translate.nft_delete(), check=False)


@contextmanager
def _iptables(lab: Lab, text: str) -> Iterator[float]:
    try:
        t0 = time.monotonic()
        _run([*_nsenter(lab), "iptables-legacy-restore"], stdin=text)
        yield time.monotonic() - t0
    finally:
        _run([*_nsenter(lab), "iptables-legacy-restore"], stdin=translate.iptables_flush(), check=False)


def _blocklist_frames(prefixes: list[tuple[int, int]], n: int) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        if i % 2 == 0:
            a, plen = rng.choice(prefixes)
            src = a | (rng.getrandbits(32 - plen) if plen < 32 else 0)
        else:
            src = rng.getrandbits(32)
        proto = rng.choice((6, 17))
        out.append(
            cb.frame(cb.Header(src, 0xC6336400 | rng.getrandbits(8), rng.randrange(1024, 65536), 443, proto))
        )
    return out


def _nft_set_load(lab: Lab, d: Path, name: str, text: str, reps: int) -> list[float]:
    walls = []
    for _ in range(reps):
        with _nft(lab, text, d, name) as w:
            walls.append(w)
    return walls


TARGET_ACL10K_CHECK_S = 1.5
TARGET_ACL10K_FIRST_APPLY_S = 5.0
TARGET_ACL10K_ONE_RULE_S = 0.5


def _acl10k_cli(lab: Lab, iface: str, d: Path, rules: list[cb.Rule], n: Counts) -> dict[str, Any]:
    """acl1_10k through the CLI: `check --json`, a first apply (attach, compiles), a one-rule
    change (one port moved: rule-only); wall time and peak RSS of each process.  Each
    repetition changes another rule, so that every change is one the plan cache has not
    seen (applying a file seen before is a cache hit, a case of its own and cheaper)."""
    path = cb.write_yaml(rules, d / "acl1_10k-cli.yaml", "acl1_10k")
    reps = max(1, n.update_reps)
    changed = [d / f"acl1_10k-cli-changed-{i}.yaml" for i in range(reps)]
    for i, f in enumerate(changed):
        f.write_text(change_one_port(path.read_text(), nth=10 * i))
    checks = [run_measured([*CLI, "check", "--json", str(path)]).check() for _ in range(reps)]
    first, one = [], []
    for i in range(reps):
        Dataplane(iface, None).detach()
        try:
            first.append(apply_cli(lab, iface, path))
            one.append(apply_cli(lab, iface, changed[i]))
        finally:
            Dataplane(iface, None).detach()
    if not all(s.attached for s in first) or any(s.attached or s.replaced for s in one):
        raise RuntimeError("acl1_10k: the first apply did not attach, or the change was not rule-only")
    out: dict[str, Any] = {
        "check_acl1_10k": {
            "wall_s": summary([r.wall_s for r in checks]),
            "peak_rss_bytes": max(r.maxrss_kib * 1024 for r in checks),
        }
    }
    for key, samples in (("xdpguard_acl1_10k_first", first), ("xdpguard_acl1_10k_one_rule", one)):
        out[key] = {
            "rule_only": key.endswith("one_rule"),
            "wall_s": summary([s.wall_s for s in samples]),
            "internal_s": summary([s.seconds for s in samples]),
            "peak_rss_bytes": max(s.maxrss_bytes for s in samples),
            "writes_first_sample": samples[0].writes,
        }
    walls = {k: median([x.wall_s for x in v]) for k, v in (("check", checks), ("first", first), ("one", one))}
    out["acl1_10k_targets"] = {
        "check_s": TARGET_ACL10K_CHECK_S,
        "check_ok": walls["check"] <= TARGET_ACL10K_CHECK_S,
        "first_apply_s": TARGET_ACL10K_FIRST_APPLY_S,
        "first_apply_ok": walls["first"] <= TARGET_ACL10K_FIRST_APPLY_S,
        "one_rule_change_s": TARGET_ACL10K_ONE_RULE_S,
        "one_rule_change_ok": walls["one"] <= TARGET_ACL10K_ONE_RULE_S,
    }
    return out


def measure_rx_and_update(lab: Lab, wl: Workload, d: Path, n: Counts) -> dict[str, Any]:
    with _blackhole_default(lab):
        return _rx_and_update(lab, wl, d, n)


def _rx_and_update(lab: Lab, wl: Workload, d: Path, n: Counts) -> dict[str, Any]:
    tx, rx = lab.ifaces[0], lab.ifaces[1]
    rules, headers = cb.load_set("acl1_1k")
    acl_yaml = cb.write_yaml(rules, d / "acl1_1k.yaml", "acl1_1k")
    big = {name: _headers(name, 8192) for name in cb.SETS_10K}
    (d / "lists").mkdir(exist_ok=True)
    gen.write_blocklist(d / "lists" / "bl100k.netset", BLOCKLIST_PREFIXES)
    bl_yaml = d / "bl100k.yaml"
    bl_yaml.write_text(blocklist_yaml("lists/bl100k.netset"))
    prefixes = progcost._blocklist_prefixes(d / "lists" / "bl100k.netset")
    mac = bytes.fromhex(net.get_mac(lab.ns, rx).replace(":", ""))
    acl_frames = _frames_file(d, "acl", [cb.frame(h) for h in cb.distinct(headers)], mac)
    big_frames = {
        name: _frames_file(d, name, [cb.frame(h) for h in hs[:8192]], mac) for name, (_, hs, _) in big.items()
    }
    frames_of: dict[str, str] = {}  # configuration -> the frames it was measured with
    bl_frames = _frames_file(d, "bl", _blocklist_frames(prefixes, 8192), mac)
    nft_acl = translate.nft_linear(rules, rx)
    nft_bl = translate.nft_blocklist(prefixes, rx)
    rxc: dict[str, Any] = {}
    upd: dict[str, Any] = {}

    def stage(msg: str) -> None:
        print(f"bench:   receive cost: {msg}", file=sys.stderr, flush=True)

    stage("nothing attached")
    rxc["none"] = _rx(lab, tx, acl_frames, n)
    stage("XDP_DROP floor")
    with _xdp_link(lab, rx, XDP_DROP_PROG, "xgb_drop"):
        rxc["xdp_drop"] = _rx(lab, tx, acl_frames, n)
    try:
        stage("xdpguard acl1_1k")
        apply_cli(lab, rx, wl.small)  # first attach (compiles); what follows is rule-only
        acl_apply, bl_apply, acl_one_rule = [], [], []
        for _ in range(n.update_reps):
            apply_cli(lab, rx, wl.small)
            acl_apply.append(apply_cli(lab, rx, acl_yaml))
        # One rule of acl1_1k changed (its action): what an operator's edit
        # costs, next to `nft -f` of the same chain.  Each repetition changes
        # another rule, a file the plan cache has not seen, then goes back to
        # the set as it was (a cache hit, not counted).
        text = acl_yaml.read_text()
        acl_one_rule = []
        for i in range(n.update_reps):
            acl_changed = d / f"acl1_1k-changed-{i}.yaml"
            at = [m.start() for m in re.finditer("action: allow", text)][7 * i]
            acl_changed.write_text(text[:at] + "action: drop" + text[at + len("action: allow") :])
            acl_one_rule.append(apply_cli(lab, rx, acl_changed))
            apply_cli(lab, rx, acl_yaml)
        rxc["xdpguard_acl1_1k"] = _rx(lab, tx, acl_frames, n)
        stage("xdpguard acl1_1k, every rule drop")
        apply_cli(lab, rx, cb.write_yaml(rules, d / "acl1_1k-drop.yaml", "acl1_1k", all_drop=True))
        rxc["xdpguard_alldrop_acl1_1k"] = _rx(lab, tx, acl_frames, n)
        for name, (brules, _, _) in big.items():
            stage(f"xdpguard {name}, and every rule drop")
            apply_cli(lab, rx, cb.write_yaml(brules, d / f"{name}.yaml", name))
            rxc[f"xdpguard_{name}"] = _rx(lab, tx, big_frames[name], n)
            apply_cli(lab, rx, cb.write_yaml(brules, d / f"{name}-drop.yaml", name, all_drop=True))
            rxc[f"xdpguard_alldrop_{name}"] = _rx(lab, tx, big_frames[name], n)
            frames_of[f"xdpguard_{name}"] = frames_of[f"xdpguard_alldrop_{name}"] = name
        stage("xdpguard 100k blocklist")
        for _ in range(n.update_reps):
            apply_cli(lab, rx, wl.small)
            bl_apply.append(apply_cli(lab, rx, bl_yaml))
        rxc["xdpguard_bl100k"] = _rx(lab, tx, bl_frames, n)
    finally:
        Dataplane(rx, None).detach()
    stage("xdpguard acl1_10k: check, first apply, one-rule change")
    upd.update(_acl10k_cli(lab, rx, d, big["acl1_10k"][0], n))
    for label, samples in (
        ("xdpguard_acl1_1k", acl_apply),
        ("xdpguard_acl1_1k_one_rule", acl_one_rule),
        ("xdpguard_bl100k", bl_apply),
    ):
        upd[label] = {
            "rule_only": not any(s.replaced for s in samples),
            "wall_s": summary([s.wall_s for s in samples]),
            "internal_s": summary([s.seconds for s in samples]),
        }
    stage("nft linear chain acl1_1k")
    upd["nft_acl1_1k"] = {"wall_s": summary(_nft_set_load(lab, d, "acl", nft_acl, n.update_reps))}
    with _nft(lab, nft_acl, d, "acl"):
        rxc["nft_linear_acl1_1k"] = _rx(lab, tx, acl_frames, n)
    stage("nft interval set 100k")
    upd["nft_bl100k"] = {"wall_s": summary(_nft_set_load(lab, d, "bl", nft_bl, n.update_reps))}
    with _nft(lab, nft_bl, d, "bl"):
        rxc["nft_set_bl100k"] = _rx(lab, tx, bl_frames, n)
    for name, (brules, _, _) in big.items():
        stage(f"nft linear chain {name}")
        nft_big = translate.nft_linear(brules, rx)
        upd[f"nft_{name}"] = {"wall_s": summary(_nft_set_load(lab, d, name, nft_big, 1))}
        with _nft(lab, nft_big, d, name):
            rxc[f"nft_linear_{name}"] = _rx(lab, tx, big_frames[name], n)
        frames_of[f"nft_linear_{name}"] = name
    if shutil.which("iptables-legacy-restore"):
        stage("iptables-legacy raw acl1_1k")
        with _iptables(lab, translate.iptables_linear(rules, rx)) as t:
            upd["iptables_acl1_1k"] = {"wall_s": summary([t])}
            rxc["iptables_linear_acl1_1k"] = _rx(lab, tx, acl_frames, n)
        for name, (brules, _, _) in big.items():
            stage(f"iptables-legacy raw {name}")
            with _iptables(lab, translate.iptables_linear(brules, rx)) as t:
                upd[f"iptables_{name}"] = {"wall_s": summary([t])}
                rxc[f"iptables_linear_{name}"] = _rx(lab, tx, big_frames[name], n)
            frames_of[f"iptables_linear_{name}"] = name
    floor = rxc["xdp_drop"]["ns_per_pkt"]
    nft_best = {
        "acl1_1k": rxc["nft_linear_acl1_1k"]["ns_per_pkt"],
        "bl100k": rxc["nft_set_bl100k"]["ns_per_pkt"],
        **{name: rxc[f"nft_linear_{name}"]["ns_per_pkt"] for name in big},
    }
    for k in rxc:
        frames_of.setdefault(k, "bl100k" if k.endswith("bl100k") else "acl1_1k")
    ratios = {
        k: {
            "vs_xdp_drop": v["ns_per_pkt"] / floor,
            "vs_nft_best": v["ns_per_pkt"] / nft_best[frames_of[k]],
        }
        for k, v in rxc.items()
    }
    alldrop = ratios["xdpguard_alldrop_acl1_1k"]["vs_xdp_drop"]
    nft_over_acl10k = 1 / ratios["xdpguard_acl1_10k"]["vs_nft_best"]
    return {
        "receive": {
            "method": f"veth {tx} -> {rx}; sender bench.sender (AF_PACKET send(), linear 64-byte frames) "
            f"pinned to CPU {SENDER_CPU}; softirq time of CPU {SENDER_CPU} (/proc/stat) / frames sent; "
            f"{n.rx_runs} runs, median; up to {n.rx_packets:,} frames or {n.rx_max_s:g} s per run",
            "frames": {
                "acl1_1k": f"{len(cb.distinct(headers)):,} distinct acl1_1k trace headers, round-robin",
                "bl100k": "8,192 frames, half sourced inside a blocklist prefix, half random",
                **{
                    name: f"{min(len(hs), 8192):,} distinct {name} "
                    + ("trace headers" if src == "trace" else "headers drawn inside random rules")
                    + ", round-robin"
                    for name, (_, hs, src) in big.items()
                },
            },
            "frames_of": frames_of,
            "clk_tck": os.sysconf("SC_CLK_TCK"),
            "configs": rxc,
            "ratios": ratios,
            "all_drop": "xdpguard_alldrop_*: the same rules, every rule and the default drop, so every frame "
            "ends in XDP_DROP: against the bare XDP_DROP program this is classification alone",
            "targets": {
                "alldrop_acl1_1k_vs_xdp_drop": TARGET_ALLDROP_VS_FLOOR,
                "alldrop_ok": alldrop <= TARGET_ALLDROP_VS_FLOOR,
                "nft_linear_over_xdpguard_acl1_10k": TARGET_ACL10K_VS_NFT,
                "acl10k_vs_nft_ok": nft_over_acl10k >= TARGET_ACL10K_VS_NFT,
            },
        },
        "update": {
            "method": "wall time of `nft -f FILE` (table replaced) and of `xdpguard --netns NS apply FILE "
            "--json` (rule-only: the program is already attached, last rules were the 10-rule set); "
            "internal = Dataplane.apply's own `seconds`; each one-rule change is a file the plan cache "
            "has not seen (another rule changed each time)",
            "cases": upd,
        },
        "blocklist_prefixes": len(prefixes),
    }


def measure(lab: Lab, wl: Workload, quick: bool) -> dict[str, Any]:
    n = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("peers")) as td:
        d = Path(td)
        t = time.monotonic()
        pc = measure_progcost(lab, wl, d, n)
        t_pc = time.monotonic() - t
        rx = measure_rx_and_update(lab, wl, d, n)
    return {"counts": asdict(n), "progcost": pc, **rx, "progcost_s": t_pc}
