"""Per-source limits under floods of sources, on the exact test clock.

The programs are built with XG_TEST_CLOCK (XDPGUARD_TEST_CLOCK=1), so the
limiter reads the time from a pinned map the test sets before each
BPF_PROG_TEST_RUN.  What the limiter promises, each checked here:

- a source that keeps within its limit keeps its slot, and so every packet,
  while 100,000 other sources flood the same rule, each over its own limit,
  more sources than the slot table holds;
- with 10,000 sources active at once, collisions cost nobody anything: the
  polite ones lose no packet and the heavy ones are held exactly to their
  own bucket;
- IPv6 sources are bucketed per /64, IPv4 per address; `source/A,B` sets
  both lengths; block_for blocks an IPv6 source's whole /64;
- limiter state of a rule that stays survives an update;
- a bps limit is exact over a long run even when a frame's cost is not a
  whole number of nanoseconds.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.datapath.maps import LIMITER_MAPS
from xdpguard.rules.compile import rule_id
from xdpguard.rules.ratesim import mix

T0 = 10**12  # any non-zero clock value: 0 means "use the real clock"
MS = 1_000_000


@pytest.fixture
def limited(lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Runner]]:
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    runners: list[Runner] = []

    def apply(text: str) -> Runner:
        f = tmp_path / "limits.yaml"
        f.write_text(text)
        xg("--netns", lab.b.ns, "apply", str(f), "--iface", lab.b.ifname)
        if not runners:
            runners.append(Runner(lab))
        return runners[0]

    yield apply
    for r in runners:
        r.close()
    xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname)


class Runner:
    """Frames through the pinned ingress program, each at a clock value the test chooses."""

    def __init__(self, lab) -> None:
        pins = lab.bpffs / lab.b.ifname
        self.prog = B.obj_get(str(pins / "prog_ingress"))
        self.clock = B.obj_get(str(pins / "test_clock"))
        self._zero = struct.pack("<I", 0)

    def at(self, t_ns: int, frame: bytes, repeat: int = 1) -> bool:
        """True when the frame (the last of `repeat` runs) passed."""
        B.map_update(self.clock, self._zero, struct.pack("<Q", t_ns))
        return B.prog_test_run(self.prog, frame, repeat=repeat).retval == B.XDP_PASS

    def close(self) -> None:
        os.close(self.prog)
        os.close(self.clock)


class Frames:
    """UDP frames to port 53 from any source; only the source address changes between them."""

    def __init__(self, size: int = 100) -> None:
        self.size = size
        self._v4 = self._build("192.0.2.1")
        self._v6 = self._build("2001:db8::1")

    def _build(self, src: str) -> bytes:
        ip = IPv6(src=src, dst="fd00:200::2") if ":" in src else IP(src=src, dst="10.200.0.2")
        f = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / UDP(sport=5000, dport=53))
        return f + bytes(max(0, self.size - len(f)))

    def v4(self, addr: int) -> bytes:
        # The program checks no IP checksum: patching the source is enough.
        return self._v4[:26] + addr.to_bytes(4, "big") + self._v4[30:]

    def v6(self, addr: int) -> bytes:
        return self._v6[:22] + addr.to_bytes(16, "big") + self._v6[38:]

    def of(self, src: str) -> bytes:
        a = ipaddress.ip_address(src)
        return self.v4(int(a)) if a.version == 4 else self.v6(int(a))


def rules(rate_limit: str, top: str = "") -> str:
    return f"""version: 1
{top}ingress:
  default: drop
  rules:
    - name: dns
      match: {{proto: udp, dport: 53}}
      rate_limit: {rate_limit}
"""


def stats(lab) -> dict:
    return json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)


def rule_stats(lab, name: str = "dns") -> dict:
    return next(r for r in stats(lab)["ingress"]["rules"] if r["name"] == name)


def flooder(i: int) -> int:
    """Distinct IPv4 sources spread over the whole space (198.18/15 style testing is not needed)."""
    return ((i + 1) * 0x9E3779B1) & 0xFFFFFFFF


def test_polite_source_keeps_its_packets_while_100k_sources_flood(lab, limited) -> None:
    # 100 pps per source, burst 50: 10 ms per packet, 500 ms of burst.  Every
    # flooder spends its whole burst in one go each half second (51 packets,
    # the last over its limit), so all 100,000 are over their limit at once:
    # more busy sources than the 65,536 slots, the rest in the sketch.  The
    # polite source sends every 20 ms, half its limit, from before the flood.
    run = limited(rules("{pps: 100, burst: 50, per: source}"))
    fr = Frames()
    polite = fr.of("203.0.113.77")
    n_flood, rounds, round_ns, polite_every = 100_000, 4, 500 * MS, 20 * MS
    step = round_ns // n_flood
    polite_sent = polite_ok = 0
    next_polite = T0
    for r in range(rounds):
        base = T0 + 1000 + r * round_ns
        for i in range(n_flood):
            t = base + i * step
            while next_polite <= t:
                polite_sent += 1
                polite_ok += run.at(next_polite, polite)
                next_polite += polite_every
            run.at(t, fr.v4(flooder(i)), repeat=51)
    assert polite_sent == rounds * round_ns // polite_every
    assert polite_ok >= 0.99 * polite_sent, f"{polite_ok} of {polite_sent}"
    st = rule_stats(lab)
    flood_runs = n_flood * rounds * 51
    assert st["packets"] == flood_runs + polite_sent
    # Every flooder was held to its own bucket or less: 50 in its first
    # round, 50 more per half second after (and the sketch may hold some to
    # less); the polite source is inside the admitted count too.
    admitted = st["limit"]["admitted"]
    assert admitted <= n_flood * 50 * rounds + polite_ok
    assert st["limit"]["over_limit"] >= n_flood * rounds
    # More busy sources than slots: the operator is told the table was full.
    lim = stats(lab)["limiter"]
    assert lim["table_size"] == 65536
    assert lim["overflow"]["ingress"] >= (n_flood - 65536) * 51, lim
    assert lim["overflow"]["egress"] == 0
    # And how full: every flooder is still active, 6.1 of them to a line of
    # 4 slots, so about 94.5 % of the slots are held (lines that drew fewer
    # than 4 flooders keep the rest free).
    assert 0.9 * 65536 <= lim["held"] <= 65536, lim


def test_10k_active_sources_lose_nothing_to_collisions(lab, limited) -> None:
    # 5,000 polite sources use their whole burst and then exactly their rate;
    # 5,000 heavy ones offer three times that.  Within the default table
    # (65,536 slots), nobody's count may depend on anybody else's.
    run = limited(rules("{pps: 100, burst: 4, per: source}"))
    fr = Frames()
    n, steps, cost = 5000, 6, 10 * MS
    polite = [fr.v4(flooder(i)) for i in range(n)]
    heavy = [fr.v4(flooder(n + i)) for i in range(n)]
    polite_ok = 0
    for i in range(n):  # the whole burst, at one instant
        polite_ok += sum(run.at(T0, polite[i]) for _ in range(4))
        run.at(T0, heavy[i], repeat=12)
    for k in range(1, steps + 1):  # then one packet's worth of time, step by step
        t = T0 + k * cost
        for i in range(n):
            polite_ok += run.at(t, polite[i])
            run.at(t, heavy[i], repeat=3)
    assert polite_ok == n * (4 + steps)
    st = rule_stats(lab)
    # Heavy sources: their burst, then one per step, as their own bucket
    # allows.  Never more; the few (about 8 of 10,000) that find their line
    # full are counted in the sketch, which could hold one to less only if
    # it shared both cells with another of those few.
    heavy_admitted = st["limit"]["admitted"] - polite_ok
    assert n * (4 + steps) - 2 * (4 + steps) <= heavy_admitted <= n * (4 + steps)
    assert st["limit"]["admitted"] + st["limit"]["over_limit"] == n * (4 + steps) + n * (12 + 3 * steps)
    # Only those few reached the sketch, and `stats` counts their packets;
    # all the others hold a slot.
    lim = stats(lab)["limiter"]
    assert lim["overflow"]["ingress"] < 0.02 * (n * (4 + steps) + n * (12 + 3 * steps))
    assert 2 * n - 100 <= lim["held"] <= 2 * n, lim


def test_stats_report_a_full_table_and_only_then(lab, limited) -> None:
    """`limiter.held` counts the slots active sources hold, and
    `limiter.overflow` stays 0 while every source finds a slot and counts
    the packets the sketch judged once the table is full (limit_table_size
    1024: 256 lines of 4 slots)."""
    run = limited(rules("{pps: 1, burst: 1, per: source}", top="limit_table_size: 1024\n"))
    fr = Frames()
    # 20 sources, each holding a slot for a second: 20 of 1,024 slots (a
    # line of 4 fills up with odds of about 1 in 100,000 here).
    for i in range(20):
        assert run.at(T0, fr.v4(flooder(i)))
    lim = stats(lab)["limiter"]
    assert lim == {"table_size": 1024, "held": 20, "overflow": {"ingress": 0, "egress": 0}}, lim
    out = xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname).stdout
    assert "per-source table: 20 of 1,024 slots held by active sources" in out
    assert "per-source table full" not in out
    # 3,000 more at the same instant: at most 1,004 more can hold a slot, so
    # at least 1,996 are judged by the sketch, each one packet.  Every source
    # either holds a slot now or had its one packet judged by the sketch.
    for i in range(20, 3020):
        run.at(T0, fr.v4(flooder(i)))
    lim = stats(lab)["limiter"]
    over = lim["overflow"]
    assert 3000 - (1024 - 20) <= over["ingress"] <= 3000, over
    assert over["egress"] == 0
    assert lim["held"] + over["ingress"] == 3020 and lim["held"] <= 1024, lim
    # The text output says so, with what to change.
    out = xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname).stdout
    assert f"per-source table: {lim['held']:,} of 1,024 slots held by active sources" in out
    assert f"per-source table full: {over['ingress']:,} packets judged by the overflow sketch" in out
    assert "raise limit_table_size (now 1,024)" in out
    # Five seconds on, every bucket is full again and its grace (2^31 ns,
    # the power of two above burst + one packet, 2 s) has passed: the slots
    # are free, but for the one a new source takes now.
    assert run.at(T0 + 5 * 10**9, fr.v4(flooder(5000)))
    assert stats(lab)["limiter"]["held"] == 1


def test_ipv6_sources_are_bucketed_per_64_and_ipv4_per_address(lab, limited) -> None:
    run = limited(rules("{pps: 10, burst: 5, per: source}"))
    fr = Frames()

    def burst(*srcs: str, each: int = 6) -> int:
        return sum(run.at(T0, fr.of(s)) for s in srcs for _ in range(each))

    # Two addresses of one /64 share one bucket of 5; another /64 has its own.
    assert burst("2001:db8:1:2::1", "2001:db8:1:2:ffff::9") == 5
    assert burst("2001:db8:1:3::1") == 5
    # IPv4: one bucket per address, neighbours included.
    assert burst("192.0.2.10") == 5
    assert burst("192.0.2.11") == 5


def test_source_a_b_sets_both_lengths(lab, limited) -> None:
    run = limited(rules('{pps: 10, burst: 3, per: "source/24,48"}'))
    fr = Frames()

    def burst(*srcs: str) -> int:
        return sum(run.at(T0, fr.of(s)) for s in srcs for _ in range(3))

    assert burst("198.51.100.1", "198.51.100.200") == 3  # one /24
    assert burst("198.51.101.1") == 3
    assert burst("2001:db8:7::1", "2001:db8:7:ffff::1") == 3  # one /48
    assert burst("2001:db8:8::1") == 3


def test_block_for_blocks_the_whole_ipv6_64(lab, limited) -> None:
    run = limited(rules("{pps: 10, burst: 2, per: source, block_for: 30s}"))
    fr = Frames()
    # `stats` measures what is left of a block against the real clock.
    t0 = time.monotonic_ns()
    tripper, neighbour, stranger = "2001:db8:5:6::1", "2001:db8:5:6::abcd", "2001:db8:5:7::1"
    assert [run.at(t0, fr.of(tripper)) for _ in range(3)] == [True, True, False]  # the 3rd blocks
    t = t0 + 5 * 10**9  # the bucket is full again: only the block can drop now
    assert not run.at(t, fr.of(neighbour))
    assert run.at(t, fr.of(stranger))
    st = json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)
    assert [b["source"] for b in st["blocked"]] == ["2001:db8:5:6::/64"]
    out = xg("--netns", lab.b.ns, "unblock", neighbour, "--iface", lab.b.ifname).stdout
    assert "unblocked" in out
    assert run.at(t, fr.of(tripper))
    assert run.at(t0 + 31 * 10**9, fr.of(neighbour))


def test_limiter_state_of_a_kept_rule_survives_an_update(lab, limited, tmp_path: Path) -> None:
    text = """version: 1
ingress:
  default: drop
  rules:
{extra}    - name: per-src
      match: {{proto: udp, dport: 53}}
      rate_limit: {{pps: 10, burst: 4, per: source}}
    - name: per-rule
      match: {{proto: udp, dport: 123}}
      rate_limit: {{pps: 10, burst: 4}}
"""
    run = limited(text.format(extra=""))
    fr = Frames()
    ntp = bytearray(fr.of("192.0.2.50"))
    ntp[36:38] = (123).to_bytes(2, "big")
    src = fr.of("192.0.2.50")
    assert sum(run.at(T0, src) for _ in range(3)) == 3  # 1 of 4 left
    assert sum(run.at(T0, bytes(ntp)) for _ in range(3)) == 3
    # A rule added in front moves both: their slots, buckets and counters stay.
    limited(
        text.format(
            extra="    - name: new-first\n      match: {proto: tcp, dport: 22}\n      action: allow\n"
        )
    )
    assert [run.at(T0, src) for _ in range(2)] == [True, False]
    assert [run.at(T0, bytes(ntp)) for _ in range(2)] == [True, False]
    assert rule_stats(lab, "per-src")["limit"] == {"admitted": 4, "over_limit": 1, "over_limit_bytes": 100}


def test_bps_is_exact_over_a_long_run_when_a_frame_costs_a_fraction_of_a_ns(lab, limited) -> None:
    # 10 Gbit/s and 64-byte frames: 51.2 ns each.  Truncating to 51 ns would
    # admit 0.4 % too many; the fraction is rounded up one time in five.
    run = limited(rules("{bps: 10gbit, burst: 1522}"))
    fr = Frames(size=64)
    frame = fr.of("192.0.2.9")
    offered, step = 100_000, 5  # one frame every 5 ns: 10x the rate
    admitted = sum(run.at(T0 + k * step, frame) for k in range(offered))
    elapsed = (offered - 1) * step
    exact = (elapsed + 1522 * 8 / 10) / 51.2  # the rate over the run, plus the burst
    assert abs(admitted - exact) <= 0.0005 * exact, (admitted, exact)


def test_apply_upgrades_hash_buckets_to_the_fixed_tables(lab, limited, tmp_path: Path) -> None:
    """Maps pinned by an xdpguard that kept buckets in hash tables: the next
    apply loads the programs, which make the fixed tables, gives the hash
    its key, and removes the retired pins; the limit then holds."""
    limited(rules("{pps: 10, burst: 2, per: source}"))
    pins = lab.bpffs / lab.b.ifname
    for name in LIMITER_MAPS:
        (pins / name).unlink()
    with B.Fd(B.map_create(B.BPF_MAP_TYPE_HASH, 8, 8, 16384, 0, "old_rule_bk")) as fd:
        B.obj_pin(fd, str(pins / "rule_buckets"))
    with B.Fd(B.map_create(B.BPF_MAP_TYPE_LRU_HASH, 32, 8, 65536, 0, "old_src_bk")) as fd:
        B.obj_pin(fd, str(pins / "src_buckets"))

    out = xg("--netns", lab.b.ns, "apply", str(tmp_path / "limits.yaml"), "--iface", lab.b.ifname, "--json")
    (res,) = json.loads(out.stdout)
    assert res["replaced_program"] is True, res
    msg = " ".join(res["messages"])
    assert "older xdpguard" in msg and "rule_tat" in msg and "src_buckets" in msg, msg
    names = set(os.listdir(pins))
    assert set(LIMITER_MAPS) <= names, names
    assert not {"rule_buckets", "src_buckets"} & names, names
    with B.Fd(B.obj_get(str(pins / "limiter"))) as fd:
        raw = B.map_lookup(fd, struct.pack("<I", 0), ctypes.sizeof(abi.Limiter))
    assert raw is not None and abi.Limiter.from_buffer_copy(raw).key[0] != 0

    run = Runner(lab)  # the new program
    try:
        src = Frames().of("192.0.2.99")
        assert [run.at(T0, src) for _ in range(3)] == [True, True, False]
    finally:
        run.close()


def _line_of(key: tuple[int, int], lines: int, rule: int, addr: int) -> int:
    """The `src_slots` line of an IPv4 source under `per: source` (xg_src_within's hash)."""
    h = mix(key[0] ^ rule)
    h = mix(h ^ (addr << 32))
    h = mix(h ^ key[1] ^ (4 << 8 | 32))
    return ((h >> 32) * lines) >> 32


def test_a_source_brings_its_sketch_debt_into_a_slot(lab, limited) -> None:
    # Four sources fill one line; a fifth of that line, sending at twice its
    # limit, is counted in the sketch until their slots fall idle, then takes
    # one.  It must bring the debt it ran up in the sketch: over the whole
    # run it gets its burst plus its rate, as its own bucket would give it,
    # not a second burst when it moves (the per-line debt mark, src_debt,
    # is what tells the slot to read the sketch).
    run = limited(rules("{pps: 100, burst: 50, per: source}", top="limit_table_size: 1024\n"))
    with B.Fd(B.obj_get(str(lab.bpffs / lab.b.ifname / "limiter"))) as fd:
        raw = B.map_lookup(fd, struct.pack("<I", 0), ctypes.sizeof(abi.Limiter))
    assert raw is not None
    lim = abi.Limiter.from_buffer_copy(raw)
    key, lines, rule = (lim.key[0], lim.key[1]), abi.src_lines(1024), rule_id("ingress", "dns")
    by_line: dict[int, list[int]] = {}
    for i in range(100_000):
        a = flooder(i)
        same = by_line.setdefault(_line_of(key, lines, rule, a), [])
        same.append(a)
        if len(same) == abi.SRC_WAYS + 1:
            break
    *owners, late = same
    assert len(owners) == abi.SRC_WAYS
    fr = Frames()
    for a in owners:  # one packet each: the line is full, its slots busy for a grace period
        assert run.at(T0, fr.v4(a))
    every, span = 5 * MS, 1500 * MS  # twice the limit, for longer than the owners' grace
    admitted = sum(run.at(T0 + t, fr.v4(late)) for t in range(0, span, every))
    # 50 of burst, then one per 10 ms; the sketch alone could give it one less.
    want = 50 + span // (10 * MS)
    assert want - 2 <= admitted <= want + 1, admitted
    st = rule_stats(lab)
    assert st["limit"]["admitted"] == abi.SRC_WAYS + admitted
