"""Hostile traffic: what a flood of new, random sources costs xdpguard.

A benchmark that repeats a frame measures warm caches; a spoofed flood is
the opposite, every packet from a source nobody has seen.  Two figures:

1. Cold cost (BPF_PROG_TEST_RUN, one run per frame, repeat=1): over N
   distinct sources (a new IPv4 address, or a new IPv6 /64, on every
   frame; N = 1,000,000 in the full run), each of these rule sets on its
   own interface, the programs taking turns frame by frame (rotating order,
   so drift hits all alike), process pinned to one CPU:
   plain allow (`proto: tcp, dport: 443`), the same rule with a per-source
   limit (`pps: 100, burst: 10, per: source`), with `block_for: 60s` too,
   with a per-prefix limit (`per: "source/24,48"`), a `state: established`
   rule in front of the plain one, and the benchmark's 10-rule edge set.
   The trivial XDP_PASS program is run the same way: its figure is the
   kernel's timer and test-run overhead inside every other one.  A
   reference program that only hashes the source to one line of a 1 MiB
   array and writes there (LINE_REF) shows what any per-source state costs
   a new source: one cache miss, the floor under every per-source design.  Frames are
   TCP SYNs to port 443, so every set allows them.  Reported per family:
   median ns, the median minus the floor, and each case's ratio to the
   plain allow rule (raw medians, as the targets are written).  For the
   per-source cases also that ratio net of the reference row (its distance
   to the floor taken off the case): the limiter's own work, apart from
   the memory system's, which moves by a factor of five on these machines.
2. Receive cost on a veth (bench.peers' method: AF_PACKET sender pinned to
   one CPU, softirq time of that CPU per frame) of a flood of 64-byte SYNs
   to port 443 from 600,000 distinct random IPv4 sources, everything
   dropped: the bare XDP_DROP floor; xdpguard `tcp dport 443` drop, plain
   and with a per-source limit (`pps: 100, per: source`); nftables netdev
   ingress `tcp dport 443 drop`, plain and behind nft's per-source meter
   (`update @m { ip saddr limit rate over 100/second }` on a 65,535-entry
   dynamic set).  All in one run, so the ratios compare like with like.
   Twice, as the frames arrive two ways:
   - from the AF_PACKET sender straight into the veth.  A socket buffer
     comes first, and the veth copies it into a page of its own before its
     XDP program may run (the sender leaves too little headroom): a cost
     XDP pays here and never behind a NIC, and nft never pays;
   - as a NIC delivers them (_nic_like): the sender's frames are redirected
     into the veth by an XDP program on another veth, so they reach the
     receiving veth as XDP frames with no socket buffer, as from a driver:
     XDP runs first, and a socket buffer is built only for what it passes
     (nft's hook sees every frame that way, with GRO on, as a NIC has it).

Targets (issue 13): cold per-source <= 1.3x plain, with block_for <= 1.4x;
on the veth, xdpguard's per-source limit <= nft's per-source meter.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import peers, progcost, workload
from bench.common import Lab, median, percentile, tmp_prefix, trimmed_mean
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text
from xdpguard.state import Iface

TARGETS = {"per-source limit": 1.3, "per-source + block_for": 1.4}
WEB = "match: {proto: tcp, dport: 443}"
LIMIT = "pps: 100, burst: 10"


def _one_rule(body: str, extra: str = "") -> str:
    return (
        "version: 1\ningress:\n  default: drop\n  rules:\n"
        + extra
        + f"    - name: web\n      {WEB}\n      action: allow\n{body}"
    )


# name -> rule file; "plain allow" first: the others are compared with it.
CASES: dict[str, str] = {
    "plain allow": _one_rule(""),
    "per-source limit": _one_rule(f"      rate_limit: {{{LIMIT}, per: source}}\n"),
    "per-source + block_for": _one_rule(f"      rate_limit: {{{LIMIT}, per: source, block_for: 60s}}\n"),
    "per-prefix (source/24,48)": _one_rule(f'      rate_limit: {{{LIMIT}, per: "source/24,48"}}\n'),
    "state: established rule": _one_rule(
        "", "    - name: replies\n      match: {state: established}\n      action: allow\n"
    ),
    "10-rule edge set": workload.SMALL_RULES,
}
FLOOR = "trivial XDP program (floor)"
LINE_REF = "reference: one random line of 1 MiB"

# The least any per-source state costs a new source: a program that does
# nothing but hash the source (IPv4 address or IPv6 /64) to one 64-byte line
# of a 1 MiB array, the size of the limiter's slot table at the default
# limit_table_size (65,536 slots), and compare-and-swap a word there.  In a
# flood that line is never in cache.  Its distance to the floor is the
# memory system's, not xdpguard's: no per-source design can go below it.
LINE_REF_LINES = 16384
LINE_REF_C = """
#define LINES @LINES@
#include <uapi/linux/bpf.h>
struct xgh_line { __u64 w[8]; };
BPF_F_TABLE("array", __u32, struct xgh_line, xgh_lines, LINES, BPF_F_MMAPABLE);
int xgh_line_ref(struct xdp_md *ctx)
{
	void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
	__u64 a = 0;

	if (d + 38 > e)
		return XDP_PASS;
	if (*(__u16 *)(d + 12) == __constant_htons(0x0800))
		a = *(__u32 *)(d + 26);
	else
		__builtin_memcpy(&a, d + 22, 8);
	a *= 0xd6e8feb86659fd93ULL;
	a ^= a >> 32;
	__u32 i = ((a & 0xffffffffULL) * LINES) >> 32;
	struct xgh_line *l = xgh_lines.lookup(&i);
	if (l) {
		__u64 old = l->w[0];
		__sync_val_compare_and_swap(&l->w[0], old, old + 1);
	}
	return XDP_PASS;
}
""".replace("@LINES@", str(LINE_REF_LINES))

RX_SOURCES = 600_000
RX_LIMIT = "pps: 100, per: source"
BPF_FUNC_REDIRECT = 23  # bpf_redirect(ifindex, flags), uapi/linux/bpf.h
NFT_TABLE = "xgbench_hostile"


@dataclass(frozen=True)
class Counts:
    sources: int  # distinct sources per family in the cold runs
    rx_packets: int
    rx_max_s: float
    rx_runs: int


FULL = Counts(sources=1_000_000, rx_packets=2_000_000, rx_max_s=6.0, rx_runs=3)
QUICK = Counts(sources=50_000, rx_packets=600_000, rx_max_s=2.0, rx_runs=2)

# --- frames ---------------------------------------------------------------------

_MIX = 0x9E3779B97F4A7C15  # odd: i -> i * _MIX mod 2^64 is a bijection, so sources never repeat


def source_v4(i: int) -> int:
    return ((i + 1) * _MIX >> 32) & 0xFFFFFFFF


def source_v6(i: int, rng: random.Random) -> int:
    """A new /64 per i (the per-source bucket), a random interface id inside it."""
    return (((i + 1) * _MIX) & 0xFFFFFFFFFFFFFFFF) << 64 | rng.getrandbits(64)


def _csum(data: bytes) -> int:
    s = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _syn(sport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, 443, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


class V4Frames:
    """64-byte TCP SYNs to 198.51.100.1:443; only the source (and the IP checksum) varies."""

    def __init__(self) -> None:
        base = progcost.ipv4_frame(0, progcost.DST_NET | 1, 6, 40000, 443)
        self.head, self.tail = base[:26], base[30:]
        self.hdr = bytearray(base[14:34])

    def frame(self, src: int) -> bytes:
        h = self.hdr
        h[10:12] = b"\0\0"
        h[12:16] = src.to_bytes(4, "big")
        csum = _csum(bytes(h))
        return self.head[:24] + csum.to_bytes(2, "big") + h[12:16] + self.tail


class V6Frames:
    """TCP SYNs to 2001:db8:443::1 port 443 from a given source (the program checks no L4 sum)."""

    def __init__(self) -> None:
        self.eth = progcost.MAC_DST + progcost.MAC_SRC + struct.pack("!H", 0x86DD)
        l4 = _syn(40000)
        self.ip_head = struct.pack("!IHBB", 6 << 28, len(l4), 6, 64)
        self.dst = bytes.fromhex("20010db8044300000000000000000001")
        self.l4 = l4

    def frame(self, src: int) -> bytes:
        return self.eth + self.ip_head + src.to_bytes(16, "big") + self.dst + self.l4


# --- 1. cold cost --------------------------------------------------------------------


@contextmanager
def _extra_ifaces(lab: Lab, n: int) -> Iterator[list[str]]:
    """n more interfaces in the lab (one end of a veth pair each), removed after."""
    names = [f"xgh{i}" for i in range(n)]
    made: list[str] = []
    try:
        for i, name in enumerate(names):
            net.create_veth_pair(name, lab.ns, f"xgh{i}p", lab.ns)
            made.append(name)
        yield names
    finally:
        for name in made:
            net.delete_link(name, lab.ns)


def _apply(lab: Lab, ifname: str, text: str) -> int:
    plan = compile_ruleset(parse_text(text, str(Path(lab.state_dir) / f"{ifname}-hostile.yaml")))
    with net.in_netns(lab.ns):
        Dataplane(ifname, net.ifindex(ifname), lab.ns).apply(plan, None)
    return B.obj_get(Iface(ifname).pin(progcost.PROG_PIN))


def _cold_family(
    progs: dict[str, int], n: int, family: int
) -> tuple[dict[str, array[float]], dict[str, Counter[str]]]:
    rng = random.Random(13 + family)
    v4, v6 = V4Frames(), V6Frames()
    names = list(progs)
    ns: dict[str, array[float]] = {k: array("d") for k in names}
    verdicts: dict[str, Counter[str]] = {k: Counter() for k in names}
    run = B.prog_test_run
    for i in range(n):
        frame = v4.frame(source_v4(i)) if family == 4 else v6.frame(source_v6(i, rng))
        r0 = i % len(names)
        for k in names[r0:] + names[:r0]:
            r = run(progs[k], frame, repeat=1)
            ns[k].append(float(r.duration_ns))
            verdicts[k][progcost.VERDICTS.get(r.retval, str(r.retval))] += 1
    return ns, verdicts


@contextmanager
def _line_ref(lab: Lab, ifname: str) -> Iterator[int]:
    """LINE_REF_C compiled (bcc), loaded and linked to ifname; yields the program fd."""
    from bcc import BPF  # lazy: only this benchmark compiles a program of its own

    b = BPF(text=LINE_REF_C.encode())
    try:
        fd = b.load_func(b"xgh_line_ref", BPF.XDP).fd
        with net.in_netns(lab.ns):
            link = B.link_create(fd, net.ifindex(ifname), B.BPF_XDP)
        try:
            yield fd
        finally:
            os.close(link)
    finally:
        b.cleanup()


# The cases with per-source state, for which the reference row is the floor
# under any design (see net_of_reference).
PER_SOURCE_CASES = ("per-source limit", "per-source + block_for", "per-prefix (source/24,48)")


def net_of_reference(fig: dict[str, float]) -> dict[str, float]:
    """Each per-source case's ratio to the plain rule once the memory system's
    share is taken off: the reference row's distance to the floor (one random
    line of a table the size of the limiter's, which no per-source design
    avoids) subtracted from the case.  What is left is the limiter's own work
    against the plain rule; it does not replace the targets' raw ratios."""
    mem = fig[LINE_REF] - fig[FLOOR]
    return {k: (fig[k] - mem) / fig["plain allow"] for k in PER_SOURCE_CASES if k in fig}


def measure_cold(lab: Lab, n: Counts) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with ExitStack() as st:
        ifaces = st.enter_context(_extra_ifaces(lab, len(CASES) + 2))
        st.callback(lambda: [Dataplane(i, None).detach() for i in ifaces[: len(CASES)]])
        progs: dict[str, int] = {}
        for (name, text), ifname in zip(CASES.items(), ifaces, strict=False):
            progs[name] = _apply(lab, ifname, text)
            st.callback(os.close, progs[name])
        # Attached like the others so that it, too, runs from the XDP dispatcher.
        progs[FLOOR] = st.enter_context(peers._xdp_link(lab, ifaces[-1], progcost.XDP_PASS_PROG, "xgh_floor"))
        progs[LINE_REF] = st.enter_context(_line_ref(lab, ifaces[-2]))
        for family in (4, 6):
            print(
                f"bench:   hostile: cold cost, IPv{family}, {n.sources:,} sources",
                file=sys.stderr,
                flush=True,
            )
            with progcost._pinned_to_one_cpu():
                ns, verdicts = _cold_family(progs, n.sources, family)
            med = {k: median(v) for k, v in ns.items()}
            mean = {k: trimmed_mean(v) for k, v in ns.items()}
            floor, plain = med[FLOOR], med["plain allow"]
            out[f"ipv{family}"] = {
                "median_ns": med,
                "p90_ns": {k: percentile(v, 90) for k, v in ns.items()},
                "mean98_ns": mean,
                "mean98_ratio_to_plain": {k: v / mean["plain allow"] for k, v in mean.items() if k != FLOOR},
                "ratio_net_of_reference": net_of_reference(med),
                "mean98_ratio_net_of_reference": net_of_reference(mean),
                "minus_floor_ns": {k: v - floor for k, v in med.items() if k != FLOOR},
                "ratio_to_plain": {k: v / plain for k, v in med.items() if k != FLOOR},
                "ratio_to_plain_minus_floor": {
                    k: (v - floor) / (plain - floor) for k, v in med.items() if k != FLOOR
                },
                "verdicts": {k: dict(v) for k, v in verdicts.items()},
            }
    targets = {
        f"ipv{f}": {
            k: {"target": t, "ok": out[f"ipv{f}"]["ratio_to_plain"][k] <= t}
            for k, t in TARGETS.items()
            if k in CASES
        }
        for f in (4, 6)
    }
    return {
        "method": "BPF_PROG_TEST_RUN, repeat=1, one frame per run; every frame a new IPv4 source or a new "
        f"IPv6 /64 ({n.sources:,} per family); programs attached (XDP dispatcher) and taking turns frame "
        "by frame; process pinned to one CPU; median over the frames; the floor (trivial program) shows "
        "the timer overhead inside every figure",
        "sources": n.sources,
        "cases": {k: v.strip() for k, v in CASES.items()},
        **out,
        "targets": targets,
    }


# --- 2. receive cost on the veth ----------------------------------------------------


def nft_meter(iface: str, table: str = NFT_TABLE) -> str:
    """nft's per-source limit, as its docs write it, then a drop for everything it lets through."""
    return (
        f"table netdev {table}\ndelete table netdev {table}\n"
        f"table netdev {table} {{\n"
        "  set m { type ipv4_addr; size 65535; flags dynamic; }\n"
        f'  chain ingress {{ type filter hook ingress device "{iface}" priority 0; policy accept;\n'
        "    tcp dport 443 update @m { ip saddr limit rate over 100/second } drop\n"
        "    tcp dport 443 drop\n"
        "  }\n}\n"
    )


def nft_plain(iface: str, table: str = NFT_TABLE) -> str:
    return (
        f"table netdev {table}\ndelete table netdev {table}\n"
        f"table netdev {table} {{\n"
        f'  chain ingress {{ type filter hook ingress device "{iface}" priority 0; policy accept;\n'
        "    tcp dport 443 drop\n  }\n}\n"
    )


def _flood_frames(n: int) -> list[bytes]:
    v4 = V4Frames()
    return [v4.frame(source_v4(i)) for i in range(n)]


@contextmanager
def _nft(lab: Lab, text: str, d: Path) -> Iterator[None]:
    p = d / "hostile.nft"
    p.write_text(text)
    try:
        peers._run([*peers._nsenter(lab), "nft", "-f", str(p)])
        yield
    finally:
        peers._run(
            [*peers._nsenter(lab), "nft", "-f", "-"],
            stdin=f"table netdev {NFT_TABLE}\ndelete table netdev {NFT_TABLE}\n",
            check=False,
        )


def _program_ns(lab: Lab, tx: str, frames: Path, pn: peers.Counts, prog_fd: int) -> float:
    """The program's own ns per packet over one more send (kernel program
    statistics: precise where the softirq figure has a tick's grain, but
    only for BPF programs, so the comparison with nft stays on softirq time)."""
    stats = B.enable_stats()
    try:
        a = B.prog_info(prog_fd)
        peers._rx(lab, tx, frames, replace(pn, rx_runs=1))
        b = B.prog_info(prog_fd)
    finally:
        os.close(stats)
    return (b.run_time_ns - a.run_time_ns) / max(1, b.run_cnt - a.run_cnt)


# How a round measures one configuration: peers._rx, or _checked_rx.
RxCost = Callable[[Lab, str, Path, peers.Counts], dict[str, Any]]


def _redirect_prog(ifindex: int) -> bytes:
    """XDP: every frame to `ifindex` (r1 = ifindex; r2 = 0; call bpf_redirect; exit)."""
    return (
        bytes.fromhex("b7010000")
        + struct.pack("<i", ifindex)
        + bytes.fromhex("b702000000000000")
        + struct.pack("<BBhi", 0x85, 0, 0, BPF_FUNC_REDIRECT)
        + bytes.fromhex("9500000000000000")
    )


@contextmanager
def _nic_like(lab: Lab) -> Iterator[str]:
    """Deliver to lab.ifaces[1] as a NIC does; yields the interface to send on.

    Frames sent on xgb2 reach xgb3, whose XDP program redirects them to
    xgb0; a veth hands redirected frames to its peer, xgb1, as XDP frames,
    with no socket buffer: xgb1's XDP program sees them first, and only what
    it passes gets one, as from a NIC's driver.  A veth takes redirected
    frames only while its NAPI runs, which an XDP program or GRO turns on:
    GRO is switched on for the configurations with no XDP program (nft),
    and back as it was after.
    """
    fwd_to, rx, tx, fwd = lab.ifaces
    with net.in_netns(lab.ns):
        to = net.ifindex(fwd_to)
    was = net.get_gro(lab.ns, rx)
    net.set_gro(lab.ns, rx, True)
    try:
        with peers._xdp_link(lab, fwd, _redirect_prog(to), "xgh_fwd"):
            yield tx
    finally:
        net.set_gro(lab.ns, rx, was)


def _rx_round(
    lab: Lab, tx: str, frames: Path, pn: peers.Counts, d: Path, via: str, rx_cost: RxCost = peers._rx
) -> dict[str, Any]:
    """The floor, xdpguard and nft configurations on lab.ifaces[1], fed from
    tx, each measured by rx_cost."""
    rx = lab.ifaces[1]
    rxc: dict[str, Any] = {}

    def stage(msg: str) -> None:
        print(f"bench:   hostile: receive cost ({via}): {msg}", file=sys.stderr, flush=True)

    stage("XDP_DROP floor")
    with peers._xdp_link(lab, rx, peers.XDP_DROP_PROG, "xgh_drop"):
        rxc["xdp_drop"] = rx_cost(lab, tx, frames, pn)
    rule = f"    - name: web\n      {WEB}\n      action: drop\n"
    for label, body in (
        ("xdpguard_drop", ""),
        ("xdpguard_per_source_drop", f"      rate_limit: {{{RX_LIMIT}}}\n"),
    ):
        stage(label)
        text = "version: 1\ningress:\n  default: allow\n  rules:\n" + rule + body
        try:
            fd = _apply(lab, rx, text)
            try:
                rxc[label] = rx_cost(lab, tx, frames, pn)
                rxc[label]["program_ns"] = _program_ns(lab, tx, frames, pn, fd)
            finally:
                os.close(fd)
        finally:
            Dataplane(rx, None).detach()
    for label, text in (("nft_drop", nft_plain(rx)), ("nft_meter_drop", nft_meter(rx))):
        stage(label)
        with _nft(lab, text, d):
            rxc[label] = rx_cost(lab, tx, frames, pn)
    return rxc


def _xdp_rx_packets(lab: Lab, ifname: str) -> int:
    """Frames a veth took in through its NAPI (ethtool -S: rx_queue_N_xdp_packets, summed)."""
    out = peers._run([*peers._nsenter(lab), "ethtool", "-S", ifname]).stdout
    return sum(int(v) for k, v in (ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
               if k.strip().startswith("rx_queue_") and k.strip().endswith("_xdp_packets"))  # fmt: skip


def _checked_rx(lab: Lab, tx: str, frames: Path, pn: peers.Counts) -> dict[str, Any]:
    """peers._rx, failing unless the receiving veth took in every frame sent (a
    forwarding stage that lost frames would make the receiver look cheap)."""
    before = _xdp_rx_packets(lab, lab.ifaces[1])
    res = peers._rx(lab, tx, frames, pn)
    got, sent = _xdp_rx_packets(lab, lab.ifaces[1]) - before, sum(r["sent"] for r in res["runs"])
    if got < sent:
        raise RuntimeError(f"{lab.ifaces[1]} took in {got:,} of {sent:,} frames sent")
    return res


def _rx_summary(rxc: dict[str, Any]) -> dict[str, Any]:
    floor = rxc["xdp_drop"]["ns_per_pkt"]
    per_src = rxc["xdpguard_per_source_drop"]["ns_per_pkt"]
    meter = rxc["nft_meter_drop"]["ns_per_pkt"]
    prog = {k: rxc[k]["program_ns"] for k in ("xdpguard_drop", "xdpguard_per_source_drop")}
    return {
        "configs": rxc,
        "minus_floor_ns": {k: v["ns_per_pkt"] - floor for k, v in rxc.items()},
        "limiter_in_situ_ns": prog["xdpguard_per_source_drop"] - prog["xdpguard_drop"],
        "ratio_per_source_vs_nft_meter": per_src / meter,
        "target": {"per_source_vs_nft_meter": 1.0, "ok": per_src <= meter},
    }


def measure_rx(lab: Lab, n: Counts, d: Path) -> dict[str, Any]:
    tx, rx = lab.ifaces[0], lab.ifaces[1]
    mac = bytes.fromhex(net.get_mac(lab.ns, rx).replace(":", ""))
    frames = peers._frames_file(d, "hostile", _flood_frames(RX_SOURCES), mac)
    pn = peers.Counts(0, 0, n.rx_packets, n.rx_max_s, n.rx_runs, 0)
    flood = (
        f"round-robin over {RX_SOURCES:,} SYNs to port 443 from distinct random IPv4 sources; softirq time "
        f"of CPU {peers.SENDER_CPU} / frames sent; {n.rx_runs} runs, median; every frame dropped; a "
        "blackhole default route in the namespace"
    )
    with peers._blackhole_default(lab):
        sent = _rx_round(lab, tx, frames, pn, d, "AF_PACKET")
        with _nic_like(lab) as fed:
            nic = _rx_round(lab, fed, frames, pn, d, "NIC-like", _checked_rx)
    return {
        "method": f"veth {tx} -> {rx}; bench.sender (AF_PACKET send(), linear 64-byte frames) pinned to CPU "
        f"{peers.SENDER_CPU}, {flood}",
        **_rx_summary(sent),
        "program_ns_method": "the xdpguard program's own time per packet on the same flood, from the "
        "kernel's program statistics (BPF_ENABLE_STATS: run_time_ns / run_cnt, timer reads included) "
        "over one more send of the same frames",
        "nic_like": {
            "method": f"the same frames sent on {fed}, redirected by an XDP program on its peer to "
            f"{tx}, whose peer {rx} receives them as XDP frames, no socket buffer before its XDP "
            f"program (as from a NIC's driver; GRO on {rx} for nft); the sender's CPU does all of it, "
            f"the forwarding stage included, which every configuration pays alike; {flood}",
            **_rx_summary(nic),
        },
    }


def measure(lab: Lab, quick: bool, rx: bool = True, sources: int = 0) -> dict[str, Any]:
    n = QUICK if quick else FULL
    if sources:
        n = replace(n, sources=sources)
    res: dict[str, Any] = {"counts": asdict(n), "cold": measure_cold(lab, n)}
    if rx:
        with tempfile.TemporaryDirectory(prefix=tmp_prefix("hostile")) as td:
            try:
                res["receive"] = measure_rx(lab, n, Path(td))
            except Exception as e:  # the cold figures are still worth writing
                print(f"bench: hostile receive cost failed: {e}", file=sys.stderr)
                res["receive"] = {"error": f"{type(e).__name__}: {e}"}
    return res


def main(argv: Sequence[str]) -> int:
    """`python -m bench.hostile [--quick] [--sources N] [--no-rx]`: this benchmark alone, JSON on stdout."""
    import argparse
    import json

    from bench import common

    ap = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sources and frames")
    ap.add_argument("--sources", type=int, default=0, help="distinct sources per family (cold cost)")
    ap.add_argument("--no-rx", action="store_true", help="skip the veth receive cost")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.hostile: needs root (network namespaces, bpf(2))", file=sys.stderr)
        return 1
    with common.lab() as lab:
        res = measure(lab, args.quick, rx=not args.no_rx, sources=args.sources)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
