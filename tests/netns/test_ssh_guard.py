"""The SSH brute-force guard of docs/rules.md, applied in a namespace, with real TCP connections.

An SSH "server" (a listening socket on port 22) runs in the lab's B side,
xdpguard guards it with the worked example (`action: continue`, `rate:
5/minute`, `block_for: 10m`).  Clients in A connect from an office address
and from one outside the office.  The programs run on the test clock,
which the test holds still and then moves, so "ten minutes" takes no time:

- from the office, five connections in a row succeed, the sixth fails,
  and so does every one for ten minutes; then connections succeed again;
- `xdpguard unblock` releases the address before its time is up;
- from outside the office, no connection ever succeeds.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.clihelp import Guard, expect_ok, guarded, write_rules
from tests.netns.traffic import Lab
from tests.rulesets import ssh_guard
from xdpguard.datapath import bpf as B
from xdpguard.net import in_netns

MINUTE = 60 * 10**9
OUTSIDER = "10.200.0.9"  # a second address on A, not in @office
CONNECT_TIMEOUT = 0.6  # below the first SYN retransmit (1 s), so one SYN per attempt

GUARD = ssh_guard("10.200.0.1")  # the lab's A address is the office


class Server:
    """A listener on B:22 that accepts and closes every connection."""

    def __init__(self, lab: Lab) -> None:
        with in_netns(lab.b.ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((lab.b.ip4, 22))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Clock:
    """The programs' test clock, held at a start instant plus what the test adds.

    It starts at the real monotonic time of the test's start, so that
    `stats`, which reads blocks against the real clock, sees a fresh block
    as in force.
    """

    def __init__(self, lab: Lab) -> None:
        self.fd = B.obj_get(str(lab.bpffs / lab.b.ifname / "test_clock"))
        self.t0 = time.monotonic_ns()
        self.at(0)

    def at(self, offset_ns: int) -> None:
        B.map_update(self.fd, struct.pack("<I", 0), struct.pack("<Q", self.t0 + offset_ns))

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def ssh(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Guard, Clock]]:
    monkeypatch.setenv("XDPGUARD_TEST_CLOCK", "1")
    subprocess.run(["ip", "-n", lab.a.ns, "addr", "add", f"{OUTSIDER}/24", "dev", lab.a.ifname], check=True)
    server = Server(lab)
    try:
        with guarded(lab) as g:
            g.apply(write_rules(tmp_path, GUARD))
            clock = Clock(lab)
            try:
                yield g, clock
            finally:
                clock.close()
    finally:
        server.close()


def connects(lab: Lab, src: str) -> bool:
    """One TCP connection attempt from `src` in A to B:22."""
    with in_netns(lab.a.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((src, 0))
        s.settimeout(CONNECT_TIMEOUT)
        s.connect((lab.b.ip4, 22))
        return True
    except (TimeoutError, OSError):
        return False
    finally:
        s.close()


def test_ssh_guard_five_per_minute_then_ten_minutes_blocked(lab: Lab, ssh: tuple[Guard, Clock]) -> None:
    g, clock = ssh
    office = lab.a.ip4
    assert [connects(lab, office) for _ in range(5)] == [True] * 5
    # The sixth new connection is over the limit: dropped, and the source blocked.
    assert connects(lab, office) is False
    st = g.stats()
    guard = g.rule("ssh-guard", st)
    assert (guard["limit"]["admitted"], guard["limit"]["over_limit"]) == (5, 1)
    assert g.rule("ssh-office", st)["packets"] >= 5 * 2  # each connection's SYN and its ACKs
    [blocked] = st["blocked"]
    assert (blocked["source"], blocked["rule"]) == (office, "ssh-guard")
    # For ten minutes every connection fails, although the bucket refills meanwhile.
    for minutes in (1, 5, 9):
        clock.at(minutes * MINUTE)
        assert connects(lab, office) is False, f"connected {minutes} min after the block"
    clock.at(10 * MINUTE - 10**9)
    assert connects(lab, office) is False
    # Then the block is over.
    clock.at(10 * MINUTE + 10**9)
    assert connects(lab, office) is True
    assert g.stats()["ingress"]["blocked"]["packets"] >= 4


def test_unblock_releases_the_source(lab: Lab, ssh: tuple[Guard, Clock]) -> None:
    g, clock = ssh
    office = lab.a.ip4
    assert [connects(lab, office) for _ in range(6)] == [True] * 5 + [False]
    clock.at(MINUTE)  # room in the bucket again, but the block holds
    assert connects(lab, office) is False
    r = expect_ok(g.cli("unblock", office, "--iface", lab.b.ifname))
    assert r.stdout.strip() == f"{office}: unblocked on {lab.b.ifname}"
    assert connects(lab, office) is True
    assert g.stats()["blocked"] == []


def test_outside_the_office_ssh_stays_closed(lab: Lab, ssh: tuple[Guard, Clock]) -> None:
    g, clock = ssh
    # Within the guard's limit the SYNs go on to the rules; none allows them.
    assert [connects(lab, OUTSIDER) for _ in range(5)] == [False] * 5
    st = g.stats()
    assert g.rule("ssh-guard", st)["limit"]["admitted"] == 5
    assert g.rule("ssh-office", st)["packets"] == 0
    assert st["ingress"]["default"]["packets"] >= 5
    # Over the limit it is blocked like anyone; ten minutes later, still no SSH.
    assert connects(lab, OUTSIDER) is False
    assert [b["source"] for b in g.stats()["blocked"]] == [OUTSIDER]
    clock.at(11 * MINUTE)
    assert connects(lab, OUTSIDER) is False
    # The office is not affected by the outsider's block.
    assert connects(lab, lab.a.ip4) is True
