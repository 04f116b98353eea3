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
    """Set the programs' event sampling through the CLI (setting is a command of its own)."""
    args = ["--sample", str(sample), "--max-rate", str(max_rate)]
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


def reader(lab, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "xdpguard", "--netns", lab.b.ns, "events", "--iface", lab.b.ifname, *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)


def set_events(lab, *args: str) -> subprocess.CompletedProcess[str]:
    """`events` with a setting: it must set and exit (a stream would hit the timeout)."""
    cmd = [sys.executable, "-m", "xdpguard", "--netns", lab.b.ns, "events", "--iface", lab.b.ifname, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=20)


def test_setting_the_sampling_returns_at_once(attached):
    lab = attached
    r = set_events(lab, "--sample", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{lab.b.ifname}: events for every drop, at most 1000/s per CPU"
    r = set_events(lab, "--max-rate", "7")
    assert r.stdout.strip() == f"{lab.b.ifname}: events for every drop, at most 7/s per CPU"
    r = set_events(lab, "--sample", "0")
    assert r.stdout.strip() == f"{lab.b.ifname}: no events (--sample 0)"
    r = set_events(lab, "--sample", "20")
    assert r.stdout.strip() == f"{lab.b.ifname}: events for one drop in 20, at most 7/s per CPU"


def test_the_default_shows_every_one_of_a_few_drops(attached):
    # A fresh attach: no sampling below the per-CPU cap, so ten drops make ten events.
    lab = attached
    evs = collect(lab, "--count", "10", "--duration", "8", send=frames(lab, 10, new_marker()))
    assert sorted(e["sport"] for e in evs) == list(range(1000, 1010))


def test_a_new_reader_shows_no_stale_event(attached):
    lab = attached
    # Drops while nobody reads: their events wait in the ring buffer.
    send_frames(lab.a.ns, lab.a.ifname, frames(lab, 5, new_marker()))
    time.sleep(0.5)
    p = reader(lab, "--json", "--duration", "3")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert [line for line in out.splitlines() if line.strip()] == []
    # Asked for, they are there, and marked as older than the reader.
    send_frames(lab.a.ns, lab.a.ifname, frames(lab, 3, new_marker()))
    time.sleep(0.5)
    p = reader(lab, "--json", "--duration", "3", "--backlog")
    out, err = p.communicate(timeout=30)
    evs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(evs) == 3 and all(e["backlog"] for e in evs)
    # A fresh drop during the stream is shown, not marked.
    evs = collect(lab, "--count", "1", "--duration", "8", send=frames(lab, 1, new_marker()))
    assert len(evs) == 1 and evs[0]["backlog"] is False


def test_event_text_lines_read_as_sentences(attached):
    lab = attached
    p = reader(lab, "--count", "1", "--duration", "8")
    time.sleep(1.5)
    send_frames(lab.a.ns, lab.a.ifname, frames(lab, 1, new_marker()))
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    [line] = out.splitlines()
    when, rest = line.split(" ", 1)
    assert len(when) == 12 and when[2] == ":" and when[8] == "."
    head = f"{lab.b.ifname} ingress drop by rule no-9999: udp 198.51.100.3:1000 > {lab.b.ip4}:9999, "
    assert rest.startswith(head), rest
    assert rest.endswith(" bytes") and "rule rule" not in rest and "proto 17" not in rest


def test_events_refuses_an_interface_that_is_not_protected(lab, tmp_path: Path):
    """Deleted after an apply, the interface has no programs to make events:
    `events` says so (exit 1, as `stats` does) at once instead of waiting on a
    ring buffer nothing writes, and sets nothing either."""
    from tests.netns.clihelp import describe, expect_ok, lab_env, run_cli

    name = f"evg{os.getpid() % 100_000}"
    subprocess.run(
        ["ip", "-n", lab.b.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
    )
    try:
        rules = write_rules(tmp_path, RULES, "r.yaml")
        expect_ok(run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=lab_env(lab)))
        subprocess.run(["ip", "-n", lab.b.ns, "link", "del", name], check=True)
        for args in (["--count", "1"], ["--duration", "1"], ["--sample", "3"], []):
            # A stream that waits on the ring buffer would hit the timeout.
            cmd = [sys.executable, "-m", "xdpguard", "--netns", lab.b.ns, "events", "--iface", name, *args]
            r = subprocess.run(cmd, capture_output=True, text=True, env=lab_env(lab), timeout=20)
            assert r.returncode == 1, describe(r)
            assert r.stderr.startswith(f"xdpguard: {name} is not protected: {name} is gone"), describe(r)
            assert f"xdpguard detach --iface {name}" in r.stderr and "Traceback" not in r.stderr, describe(r)
            assert r.stdout == "", describe(r)
    finally:
        subprocess.run(["ip", "-n", lab.b.ns, "link", "del", name], capture_output=True)
        run_cli("detach", "--iface", name, netns=lab.b.ns, env=lab_env(lab))
