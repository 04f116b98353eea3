"""Drop events: sampled, rate-capped, streamed by `xdpguard events` during real traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from tests.netns.clihelp import guarded, write_rules
from tests.netns.traffic import new_marker, send_frames
from xdpguard.datapath import bpf as B

RULES = """\
version: 1
ingress:
  default: allow
  rules:
    - {name: no-9999, match: {proto: udp, dport: 9999}, action: drop}
"""


@pytest.fixture
def attached(lab, tmp_path: Path):
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES, "r.yaml"))
        yield lab


def frames(lab, n: int, marker: bytes) -> list[bytes]:
    return [
        bytes(
            Ether(src=lab.a.mac, dst=lab.b.mac)
            / IP(src="198.51.100.3", dst=lab.b.ip4)
            / UDP(sport=1000 + i, dport=9999)
            / marker
        )  # fmt: skip
        for i in range(n)
    ]


def set_sampling(lab, sample: int, max_rate: int) -> None:
    """Set the programs' event sampling through the CLI (a reader that stops at once)."""
    args = ["--sample", str(sample), "--max-rate", str(max_rate), "--duration", "0.1"]
    xg("--netns", lab.b.ns, "events", "--iface", lab.b.ifname, *args)


def collect(lab, *args: str, send: list[bytes], wait: float = 6.0) -> list[dict]:
    cmd = [
        sys.executable,
        "-m",
        "xdpguard",
        "--netns",
        lab.b.ns,
        "events",
        "--iface",
        lab.b.ifname,
        "--json",
        *args,
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    time.sleep(1.5)  # the consumer is polling
    send_frames(lab.a.ns, lab.a.ifname, send)
    out, err = p.communicate(timeout=wait + 10)
    assert p.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_events_stream_every_drop_when_sampling_one_in_one(attached):
    lab = attached
    set_sampling(lab, 1, 1000)
    evs = collect(lab, "--count", "5", "--duration", "8", send=frames(lab, 5, new_marker()))
    assert len(evs) == 5
    for e in evs:
        assert e["rule"] == "no-9999" and e["reason"] == "rule" and e["verdict"] == "drop"
        assert e["direction"] == "ingress" and e["interface"] == lab.b.ifname
        assert e["src"] == "198.51.100.3" and e["dst"] == lab.b.ip4 and e["dport"] == 9999
        assert abs(e["time"] - time.time()) < 30
    assert sorted(e["sport"] for e in evs) == [1000, 1001, 1002, 1003, 1004]


def test_events_are_capped_per_second(attached):
    lab = attached
    set_sampling(lab, 1, 10)
    evs = collect(lab, "--duration", "4", send=frames(lab, 300, new_marker()))
    # 300 drops within well under a second: at most 10 per CPU get through.
    assert 1 <= len(evs) <= 10 * B.ncpus()
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    assert st["ingress"]["rules"][0]["packets"] == 300


def test_events_sampling_thins_a_flood(attached):
    lab = attached
    set_sampling(lab, 20, 100000)
    evs = collect(lab, "--duration", "4", send=frames(lab, 2000, new_marker()))
    # One in 20 on average: 100 expected; bounds far outside random spread.
    assert 40 <= len(evs) <= 200, len(evs)
