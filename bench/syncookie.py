"""What a SYN costs: xdpguard's SYN cookies next to the stack's own.

    python -m bench.syncookie [--quick]       (root; prints JSON)

Two measurements in the benchmark lab (one namespace, veths xgb0 -> xgb1,
a listener on xgb1's address, port PORT):

1. Program cost (BPF_PROG_TEST_RUN, run inside the namespace so the socket
   lookups find the listener): a pool of SYNs from distinct random sources
   (a flood's cold path: every source new), each run once (a repeat would
   run on the SYN-ACK the first run made of it), median over the pool; the
   ~90 ns of the test harness are in every figure.  xdpguard with the port under `syn_cookies`
   (the ingress program, its tail call, the cookie, the SYN-ACK: verdict
   XDP_TX) next to the same rule without it (XDP_PASS: what the packet
   costs xdpguard before the stack's work starts).
2. Receive cost on the veth (bench.peers' method): spoofed SYNs from one
   AF_PACKET sender pinned to CPU SENDER_CPU into xgb0; the softirq time of
   that CPU divided by the frames sent is what each SYN costs the receiver.
   (a) xdpguard with syn_cookies: XDP answers every SYN; (b) no xdpguard,
   net.ipv4.tcp_syncookies=1: the stack answers, with its own cookies once
   the SYN queue overflows (at once, under a flood); (c) the same with
   tcp_syncookies=2 (cookies always); (d) nftables `synproxy` in front of
   the listener (SYNs untracked in raw prerouting, answered by synproxy in
   input), the netfilter way to do it.  The SYN-ACKs come back into xgb0,
   which runs an XDP_DROP program, so the return trip costs the same little
   in every case.  (e) and (f), the floors: a bare program on xgb1 that
   only returns XDP_DROP, and one that only returns XDP_TX (the SYN goes
   back as it came, the return trip that of a SYN-ACK): no XDP program that
   answers SYNs here can cost less than (f).

Target: a SYN answered in XDP at least 10x cheaper than the stack's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import Lab, median
from bench.common import lab as bench_lab
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.net import in_netns

PORT = 8080
SENDER_CPU = 0
TARGET_RATIO = 10.0
FRAME_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
XDP_DROP_PROG = struct.pack("<BBhi", 0xB7, 0, 0, 1) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = XDP_DROP
XDP_TX_PROG = struct.pack("<BBhi", 0xB7, 0, 0, 3) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = XDP_TX
ROOT = Path(__file__).resolve().parent.parent

RULES = """\
version: 1
ingress:
  default: allow
  rules:
    - name: web
      match: {{proto: tcp, dport: {port}}}
      action: allow
{extra}"""


def _syn_frames(n: int, dst_mac: str, dst_ip: str, seed: int = 1) -> list[bytes]:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        src = f"198.18.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        seg = TCP(
            sport=rnd.randrange(1024, 65536),
            dport=PORT,
            flags="S",
            seq=rnd.getrandbits(32),
            options=FRAME_OPTS,
        )
        out.append(bytes(Ether(dst=dst_mac) / IP(src=src, dst=dst_ip) / seg))
    return out


def _xg(lab: Lab, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "xdpguard", "--netns", lab.ns, *args], check=True, cwd=ROOT,
                   capture_output=True, text=True)  # fmt: skip


def _apply(lab: Lab, tmp: Path, syn_cookies: bool) -> None:
    p = tmp / ("syn.yaml" if syn_cookies else "plain.yaml")
    p.write_text(RULES.format(port=PORT, extra="      syn_cookies: true\n" if syn_cookies else ""))
    _xg(lab, "apply", str(p), "--iface", lab.ifaces[1])


@contextmanager
def _listener(lab: Lab, addr: str) -> Any:
    with in_netns(lab.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, PORT))
    s.listen(1024)
    try:
        yield s
    finally:
        s.close()


@contextmanager
def _bare_xdp_on(lab: Lab, iface: str, insns: bytes = XDP_DROP_PROG, name: str = "xg_bench_drop") -> Any:
    """A two-instruction XDP program on `iface`: by default XDP_DROP, where the
    SYN-ACKs coming back end, cheaply (and XDP_TX needs an XDP program on the peer)."""
    with B.Fd(B.prog_load(B.BPF_PROG_TYPE_XDP, insns, name=name, expected_attach_type=B.BPF_XDP)) as prog:
        with in_netns(lab.ns):
            idx = net.ifindex(iface)
            link = B.link_create(prog, idx, B.BPF_XDP, 0)
    try:
        yield
    finally:
        os.close(link)


NFT_SYNPROXY = f"""\
table inet xgbench_synproxy {{
  chain pre {{
    type filter hook prerouting priority raw;
    tcp dport {PORT} tcp flags syn notrack
  }}
  chain in {{
    type filter hook input priority filter;
    tcp dport {PORT} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
  }}
}}
"""


@contextmanager
def _nft_synproxy(lab: Lab) -> Any:
    nft = ["nsenter", f"--net={net.netns_path(lab.ns)}", "nft"]
    subprocess.run([*nft, "-f", "-"], input=NFT_SYNPROXY, text=True, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(
            [*nft, "delete", "table", "inet", "xgbench_synproxy"], check=False, capture_output=True
        )


def _sysctl(lab: Lab, name: str, value: str) -> None:
    subprocess.run(
        ["nsenter", f"--net={net.netns_path(lab.ns)}", "sysctl", "-qw", f"{name}={value}"], check=True
    )


def prog_cost(lab: Lab, frames: list[bytes], repeat: int = 1) -> dict[str, Any]:
    """Per-SYN ns of the ingress program as attached now (median over the pool) and its verdicts."""
    pin = lab.bpffs / lab.ifaces[1] / "prog_ingress"
    per: list[float] = []
    verdicts: dict[int, int] = {}
    with B.Fd(B.obj_get(str(pin))) as fd, in_netns(lab.ns):
        for f in frames:
            r = B.prog_test_run(fd, f, repeat=repeat)
            per.append(r.duration_ns)
            verdicts[r.retval] = verdicts.get(r.retval, 0) + 1
    return {"ns_per_syn": median(per), "frames": len(frames), "repeat": repeat, "verdicts": verdicts}


def _softirq_ticks(cpu: int) -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                return int(line.split()[7])
    raise RuntimeError(f"cpu{cpu} not in /proc/stat")


def rx_cost(
    lab: Lab, frames_file: Path, frame_len: int, packets: int, max_s: float, runs: int
) -> dict[str, Any]:
    """Receive softirq ns per SYN on the veth, median of `runs` sender runs."""
    argv = [
        "taskset", "-c", str(SENDER_CPU), "nsenter", f"--net={net.netns_path(lab.ns)}", sys.executable,
        "-m", "bench.sender", lab.ifaces[0], str(frames_file), str(packets), str(max_s), str(frame_len),
    ]  # fmt: skip
    before = os.sched_getaffinity(0)
    others = before - {SENDER_CPU}
    if others:
        os.sched_setaffinity(0, others)
    out = []
    try:
        for _ in range(runs):
            t0 = _softirq_ticks(SENDER_CPU)
            r = subprocess.run(argv, capture_output=True, text=True, timeout=max_s + 60, check=True, cwd=ROOT)
            t1 = _softirq_ticks(SENDER_CPU)
            sent = int(json.loads(r.stdout)["sent"])
            s = (t1 - t0) / os.sysconf("SC_CLK_TCK")
            out.append({"sent": sent, "softirq_s": s, "ns_per_pkt": s * 1e9 / sent})
    finally:
        os.sched_setaffinity(0, before)
    return {"ns_per_syn": median([r["ns_per_pkt"] for r in out]), "runs": out}


def measure(quick: bool = False) -> dict[str, Any]:
    pool = 500 if quick else 5000
    packets, max_s, runs = (200_000, 10.0, 1) if quick else (2_000_000, 40.0, 3)
    res: dict[str, Any] = {"method": __doc__.split("\n\n")[1].strip() if __doc__ else ""}
    with (
        bench_lab() as lab,
        tempfile.TemporaryDirectory(prefix="xdpguard-bench-syn-") as d,
        ExitStack() as es,
    ):
        tmp = Path(d)
        os.environ.setdefault("XDPGUARD_CACHE_DIR", str(tmp / "cache"))
        dst_ip = "10.201.0.2"
        mac = net.get_mac(lab.ns, lab.ifaces[1])
        frames = _syn_frames(pool, mac, dst_ip)
        flen = len(frames[0])
        ffile = tmp / "syns.bin"
        ffile.write_bytes(b"".join(_syn_frames(4096, mac, dst_ip, seed=2)))
        es.enter_context(_listener(lab, dst_ip))
        es.enter_context(_bare_xdp_on(lab, lab.ifaces[0]))

        _apply(lab, tmp, syn_cookies=False)
        res["prog_plain_allow"] = prog_cost(lab, frames)
        _apply(lab, tmp, syn_cookies=True)
        res["prog_syn_cookies"] = prog_cost(lab, frames)
        res["rx_xdpguard_syn_cookies"] = rx_cost(lab, ffile, flen, packets, max_s, runs)
        _xg(lab, "detach", "--iface", lab.ifaces[1])
        floors = (("drop", XDP_DROP_PROG, "xg_floor_drop"), ("tx", XDP_TX_PROG, "xg_floor_tx"))
        for key, insns, name in floors:
            with _bare_xdp_on(lab, lab.ifaces[1], insns, name):
                res[f"rx_floor_xdp_{key}"] = rx_cost(lab, ffile, flen, packets, max_s, runs)
        for mode in ("1", "2"):
            _sysctl(lab, "net.ipv4.tcp_syncookies", mode)
            res[f"rx_stack_tcp_syncookies_{mode}"] = rx_cost(lab, ffile, flen, packets, max_s, runs)
        _sysctl(lab, "net.ipv4.tcp_syncookies", "1")
        try:
            with _nft_synproxy(lab):
                res["rx_nft_synproxy"] = rx_cost(lab, ffile, flen, packets, max_s, runs)
        except subprocess.CalledProcessError as e:
            res["rx_nft_synproxy"] = {"error": f"nft synproxy could not be set up: {e.stderr or e}"}
    stack = res["rx_stack_tcp_syncookies_1"]["ns_per_syn"]
    ours = res["rx_xdpguard_syn_cookies"]["ns_per_syn"]
    res["ratio_stack_vs_xdp"] = stack / ours if ours else None
    # The most any XDP program can reach on this veth: the stack against the bare XDP_TX.
    tx_floor = res["rx_floor_xdp_tx"]["ns_per_syn"]
    res["ratio_stack_vs_tx_floor"] = stack / tx_floor if tx_floor else None
    res["target_ratio"] = TARGET_RATIO
    res["target_ok"] = bool(ours and stack / ours >= TARGET_RATIO)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.syncookie", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small pool and one short run per configuration")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.syncookie: needs root", file=sys.stderr)
        return 1
    print(json.dumps(measure(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
