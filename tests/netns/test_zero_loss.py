"""Updates lose and leak nothing: no allowed packet lost, no denied one passed.

Paced, sequence-numbered UDP flows to an allowed and a denied port while
100 applies alternate two rule sets that number their rules differently;
every 5th apply also recompiles and swaps both programs through their
links.  Every allowed frame must arrive and no denied frame may.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.netns.traffic import capture, new_marker
from xdpguard import net
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text

ALLOWED, DENIED = 7000, 7001
APPLIES = 100
PPS = 4000

# The same two verdicts, reached through different rule numbers, defaults and fillers.
RULES_X = """\
version: 1
ingress:
  default: drop
  rules:
    - {name: deny, match: {proto: udp, dport: 7001}, action: drop}
    - {name: allow, match: {proto: udp, dport: 7000}, action: allow}
    - {name: wide-drop, match: {proto: udp, dport: 5000-8000}, action: drop}
    - {name: ipv6-any, match: {src: "::/0"}, action: allow}
"""
RULES_Y = """\
version: 1
ingress:
  default: allow
  rules:
    - {name: allow-first, match: {proto: udp, dport: 7000}, action: allow}
    - {name: ssh, match: {proto: tcp, dport: 22}, action: drop}
    - {name: filler, match: {src: 192.0.2.0/24}, action: drop}
    - {name: deny-later, match: {proto: udp, dport: 7001}, action: drop}
    - {name: udp-rest, match: {proto: udp}, action: drop}
"""


def test_no_loss_no_leak_across_100_applies(lab, tmp_path: Path):
    plans = [
        compile_ruleset(parse_text(t, str(tmp_path / n)))
        for n, t in (("x.yaml", RULES_X), ("y.yaml", RULES_Y))
    ]
    marker = new_marker()
    eth = Ether(src=lab.a.mac, dst=lab.b.mac)
    frames = [
        bytes(
            eth
            / IP(src=lab.a.ip4, dst=lab.b.ip4)
            / UDP(sport=5555, dport=port, chksum=0)
            / (marker + bytes(8))
        )
        for port in (ALLOWED, DENIED)
    ]
    latencies: list[float] = []
    with net.in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        dp.apply(plans[0], None)
        try:
            with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
                cmd = [
                    sys.executable,
                    "-m",
                    "tests.netns.pace",
                    "--seq",
                    lab.a.ns,
                    lab.a.ifname,
                    str(PPS),
                    "600",
                ]
                sender = subprocess.Popen(cmd + [f.hex() for f in frames], stdout=subprocess.PIPE, text=True)
                time.sleep(0.5)
                for i in range(1, APPLIES + 1):
                    res = dp.apply(plans[i % 2], None, replace_program=(i % 5 == 0))
                    assert res.changed and (res.replaced == (i % 5 == 0))
                    latencies.append(res.seconds)
                time.sleep(0.3)
                sender.send_signal(signal.SIGTERM)
                out, _ = sender.communicate(timeout=30)
                sent = int(out.split()[0])
                got = cap.wait(1.0)
        finally:
            dp.detach()
    seqs = [int.from_bytes(f[-8:], "big") for f in got]
    allowed = {s for s in seqs if s % 2 == 0}
    leaked = [s for s in seqs if s % 2 == 1]
    want = {s for s in range(sent) if s % 2 == 0}
    lost = sorted(want - allowed)
    report = {
        "frames_sent": sent,
        "applies": APPLIES,
        "lost": len(lost),
        "leaked": len(leaked),
        "apply_p50_s": statistics.median(latencies),
        "apply_p99_s": sorted(latencies)[int(0.99 * (len(latencies) - 1))],
    }
    print(json.dumps(report))
    out_dir = os.environ.get("XDPGUARD_REPORT_DIR")
    if out_dir:
        Path(out_dir, "zero_loss.json").write_text(json.dumps(report, indent=2))
    assert sent > PPS * 5
    assert lost == [], f"{len(lost)} allowed frames lost, first {lost[:10]}"
    assert leaked == [], f"{len(leaked)} denied frames leaked"
