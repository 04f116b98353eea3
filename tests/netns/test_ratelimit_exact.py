"""Rate limits are exact: admitted == rate x T + burst, on a clock the test sets.

The programs are built with XDG_TEST_CLOCK (only when XDPGUARD_TEST_CLOCK=1,
never in production), which makes them read the time from a pinned map.
Frames go through BPF_PROG_TEST_RUN one at a time, the clock stepping
between them at 10x the limit; the verdicts and the rule's counters must
show exactly the admissions GCRA promises.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from xdpguard.datapath import bpf as B

T0 = 10**12  # any non-zero clock value: 0 means "use the real clock"


@pytest.fixture
def limited(apply_rules: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """apply_rules, with the programs on the test clock (set before anything is applied)."""
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    return apply_rules


class Runner:
    def __init__(self, lab) -> None:
        self.lab = lab
        pins = lab.bpffs / lab.b.ifname
        self.prog = B.obj_get(str(pins / "prog_ingress"))
        self.clock = B.obj_get(str(pins / "test_clock"))

    def at(self, t_ns: int, frame: bytes) -> bool:
        B.map_update(self.clock, struct.pack("<I", 0), struct.pack("<Q", t_ns))
        return B.prog_test_run(self.prog, frame).retval == B.XDP_PASS

    def close(self) -> None:
        os.close(self.prog)
        os.close(self.clock)


def frame(src: str, size: int = 100) -> bytes:
    ip = IPv6(src=src, dst="fd00:200::2") if ":" in src else IP(src=src, dst="10.200.0.2")
    f = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / UDP(sport=5000, dport=53))
    return f + bytes(max(0, size - len(f)))


def rule_stats(lab, name: str) -> dict:
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    return next(r for r in st["ingress"]["rules"] if r["name"] == name)


def test_pps_exact(lab, limited):
    # 1000 pps, burst 50: one packet per ms, 50 ahead.  Offered: 10,000 pps for 1 s.
    limited("""version: 1
ingress:
  default: drop
  rules:
    - name: dns
      match: {proto: udp, dport: 53}
      rate_limit: {pps: 1000, burst: 50}
""")
    run = Runner(lab)
    try:
        step = 100_000  # ns between packets: 10x the rate
        duration = 1_000_000_000
        admitted = sum(run.at(T0 + k * step, frame("192.0.2.7")) for k in range(duration // step + 1))
    finally:
        run.close()
    assert admitted == 1000 * 1 + 50
    st = rule_stats(lab, "dns")
    assert st["limit"]["admitted"] == admitted
    assert st["limit"]["over_limit"] == duration // step + 1 - admitted


def test_bps_exact(lab, limited):
    # 8 Mbit/s = 1,000,000 bytes/s, burst 1,600 bytes; 100-byte frames, offered 10x.
    limited("""version: 1
ingress:
  default: drop
  rules:
    - name: bulk
      match: {proto: udp}
      rate_limit: {bps: 8mbit, burst: 1600}
""")
    run = Runner(lab)
    size = 100
    try:
        step = 10_000  # 100 bytes per 10 us = 10 MB/s offered
        duration = 200_000_000  # 0.2 s
        admitted = sum(run.at(T0 + k * step, frame("192.0.2.8", size)) for k in range(duration // step + 1))
    finally:
        run.close()
    assert admitted * size == 1_000_000 * 0.2 + 1600
    assert rule_stats(lab, "bulk")["limit"]["admitted"] == admitted


def test_per_source_buckets_and_prefixes(lab, limited):
    # One bucket per /24 (v4) and per /64 (v6): sources in one prefix share it.
    limited("""version: 1
ingress:
  default: drop
  rules:
    - name: per-net
      match: {proto: udp}
      rate_limit: {pps: 100, burst: 10, per: source/24}
""")
    run = Runner(lab)
    try:
        t = T0
        # Burst of 30 at one instant from each: 10 admitted per bucket.
        a = sum(run.at(t, frame("198.51.100.1")) for _ in range(15)) + sum(
            run.at(t, frame("198.51.100.2")) for _ in range(15)
        )
        b = sum(run.at(t, frame("203.0.113.9")) for _ in range(30))
        c = sum(run.at(t, frame("2001:db8:1::1")) for _ in range(30))
    finally:
        run.close()
    assert (a, b, c) == (10, 10, 10)


def test_block_for_blocks_every_rule_then_expires(lab, limited):
    limited("""version: 1
ingress:
  default: allow
  rules:
    - name: syn-guard
      match: {proto: udp, dport: 53}
      rate_limit: {pps: 10, burst: 5, per: source, block_for: 30s}
""")
    run = Runner(lab)
    other = bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="192.0.2.66", dst="10.200.0.2")
        / UDP(sport=1, dport=9999)
    ) + bytes(40)
    try:
        t = T0
        assert sum(run.at(t, frame("192.0.2.66")) for _ in range(6)) == 5  # the 6th trips the block
        assert not run.at(t + 10**9, other)  # blocked for every rule, not just the limited one
        assert run.at(t + 10**9, frame("192.0.2.67"))  # other sources are not affected
        assert not run.at(t + 29 * 10**9, frame("192.0.2.66"))
        assert run.at(t + 31 * 10**9, other)  # expired
    finally:
        run.close()
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    assert st["ingress"]["blocked"]["packets"] == 2
