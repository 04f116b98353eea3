"""Rate limits on the wire: 10x overload, the received rate within 5 %.

A separate process floods from namespace A at ten times the limit for five
seconds; frames that survive B's XDP program are counted on B.  Per-source
limits keep an abusive source from starving a polite one, and block_for
blocks a source and lets it go again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from tests.netns.traffic import capture, new_marker, send_frames

LIMIT = 2000
SECONDS = 5.0
# The default burst (a tenth of a second at the rate) is 2 % of what five
# seconds admit, and it lets the bucket ride out the sender's scheduling
# gaps on a busy machine: a gap longer than the burst wastes allowance.
BURST = LIMIT // 10


def udp(lab, src: str, marker: bytes) -> bytes:
    return bytes(
        Ether(src=lab.a.mac, dst=lab.b.mac) / IP(src=src, dst=lab.b.ip4) / UDP(sport=4000, dport=53) / marker
    )


def flood(lab, frames: list[bytes], pps: float, seconds: float) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.netns.pace", lab.a.ns, lab.a.ifname, str(pps), str(seconds)]
    return subprocess.Popen(
        cmd + [f.hex() for f in frames], stdout=subprocess.PIPE, text=True, env=os.environ
    )


def count_by_source(frames: list[bytes]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in frames:
        src = ".".join(str(b) for b in f[26:30])
        out[src] = out.get(src, 0) + 1
    return out


def test_rate_within_5_percent_under_10x_overload(lab, apply_rules):
    apply_rules(f"""version: 1
ingress:
  default: allow
  rules:
    - name: dns-limit
      match: {{proto: udp, dport: 53}}
      rate_limit: {{pps: {LIMIT}}}
""")
    marker = new_marker()
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        sender = flood(lab, [udp(lab, lab.a.ip4, marker)], LIMIT * 10, SECONDS)
        out, _ = sender.communicate(timeout=SECONDS + 30)
        sent, took = int(out.split()[0]), float(out.split()[1])
        got = cap.wait(1.0)
    assert sent >= LIMIT * 10 * SECONDS
    rate = len(got) / took
    assert abs(rate - LIMIT) <= 0.05 * LIMIT, f"received {len(got)} in {took:.2f} s = {rate:.0f} pps"
    assert len(got) <= LIMIT * took + BURST + 1  # GCRA's bound, however the sender was scheduled
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    r = st["ingress"]["rules"][0]
    assert r["limit"]["admitted"] == len(got)
    assert r["limit"]["over_limit"] == sent - len(got)


def test_abusive_source_does_not_starve_another(lab, apply_rules):
    apply_rules(f"""version: 1
ingress:
  default: allow
  rules:
    - name: per-source
      match: {{proto: udp, dport: 53}}
      rate_limit: {{pps: {LIMIT}, per: source}}
""")
    marker = new_marker()
    bad, good = "198.51.100.66", "198.51.100.7"
    # Round-robin of 21 frames: 20 from the abuser (10x its limit), 1 from the polite
    # source (half its limit).
    frames = [udp(lab, bad, marker)] * 20 + [udp(lab, good, marker)]
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        sender = flood(lab, frames, LIMIT * 10 * 21 / 20, 3.0)
        out, _ = sender.communicate(timeout=40)
        took = float(out.split()[1])
        got = count_by_source(cap.wait(1.0))
    sent_good = int(out.split()[0]) // 21
    assert got.get(good, 0) >= sent_good - 1, (got, sent_good)
    assert abs(got.get(bad, 0) / took - LIMIT) <= 0.05 * LIMIT, (got, took)


def test_block_for_blocks_then_releases(lab, apply_rules):
    apply_rules("""version: 1
ingress:
  default: allow
  rules:
    - name: guard
      match: {proto: udp, dport: 53}
      rate_limit: {pps: 50, burst: 5, per: source, block_for: 2s}
""")
    marker = new_marker()
    src = "203.0.113.50"
    other_port = bytes(
        Ether(src=lab.a.mac, dst=lab.b.mac)
        / IP(src=src, dst=lab.b.ip4)
        / UDP(sport=4000, dport=9999)
        / marker
    )
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        send_frames(lab.a.ns, lab.a.ifname, [udp(lab, src, marker)] * 20)  # trips the limit
        time.sleep(0.3)
        n_burst = len(cap.wait(0.2))
    assert n_burst == 5
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    blocked = {b["source"]: b for b in st["blocked"]}
    assert src in blocked and 0 < blocked[src]["seconds_left"] <= 2 and blocked[src]["rule"] == "guard"

    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        send_frames(lab.a.ns, lab.a.ifname, [other_port])  # any rule: still blocked
        assert cap.wait(0.5) == []
    time.sleep(2.2)
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        send_frames(lab.a.ns, lab.a.ifname, [other_port])
        assert len(cap.wait(0.5)) == 1

    # Trip it again, then release it by hand.
    send_frames(lab.a.ns, lab.a.ifname, [udp(lab, src, marker)] * 20)
    r = xg("--netns", lab.b.ns, "unblock", src, "--iface", lab.b.ifname)
    assert "unblocked" in r.stdout
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        send_frames(lab.a.ns, lab.a.ifname, [other_port])
        assert len(cap.wait(0.5)) == 1
