"""SYN cookies (syn_cookies: true) on the wire, both families.

B runs a real TCP server behind xdpguard; A is the client and the
flooder.  What must hold: a SYN to the protected port is answered by the
XDP program (the server's SYN queue stays empty, even under a flood of
spoofed SYNs), the client's ACK becomes a normal connection to the
listener with the options the client offered, a forged ACK is dropped and
counted, and connections that existed before syn_cookies was enabled
carry on.  XDP_TX on a veth needs NAPI on the peer, so A's end gets GRO.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from tests.netns.traffic import Capture, Lab, send_frames
from xdpguard import net
from xdpguard.datapath import syncookie
from xdpguard.net import in_netns

PORT = 8080
OTHER_PORT = 8081  # listening, but no syn_cookies rule
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]

RULES = f"""\
version: 1
ingress:
  default: allow
  rules:
    - name: web
      match: {{proto: tcp, dport: {PORT}}}
      action: allow
      syn_cookies: true
"""
PLAIN = f"""\
version: 1
ingress:
  default: allow
  rules:
    - name: web
      match: {{proto: tcp, dport: {PORT}}}
      action: allow
"""

TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4


@pytest.fixture(autouse=True)
def _kernel_can(lab: Lab) -> None:
    """Skip, with the reason, on a kernel without what SYN cookies need."""
    try:
        syncookie.check_kernel()
    except Exception as e:  # noqa: BLE001  (any refusal is a reason to skip, printed)
        pytest.skip(f"this kernel cannot do syn_cookies: {e}")
    net.set_gro(lab.a.ns, lab.a.ifname, True)  # XDP_TX from B's veth lands on A's end


@pytest.fixture
def cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDPGUARD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "objcache"))


def _write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


def _addr(side: object, family: int) -> str:
    return side.ip4 if family == 4 else side.ip6  # type: ignore[attr-defined]


def _af(family: int) -> socket.AddressFamily:
    return socket.AF_INET if family == 4 else socket.AF_INET6


class Server:
    """An echo-once TCP server in B: reads a request line, answers, closes."""

    def __init__(self, ns: str, family: int, addr: str, port: int) -> None:
        with in_netns(ns):
            self.sock = socket.socket(_af(family), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(4096)
        self.infos: list[bytes] = []
        self.served = 0
        self.held: list[socket.socket] = []
        self.hold = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            c.settimeout(5)
            self.infos.append(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
            if self.hold:
                self.held.append(c)
                continue
            try:
                req = c.recv(100)
                c.sendall(b"re:" + req)
                self.served += 1
            except OSError:
                pass
            finally:
                c.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._t.join(2)
        for c in self.held:
            c.close()


@contextmanager
def server(lab: Lab, family: int, port: int = PORT) -> Iterator[Server]:
    s = Server(lab.b.ns, family, _addr(lab.b, family), port)
    try:
        yield s
    finally:
        s.close()


def client_round(lab: Lab, family: int, n: int, port: int = PORT, timeout: float = 5.0) -> bytes:
    with in_netns(lab.a.ns):
        c = socket.socket(_af(family), socket.SOCK_STREAM)
    with c:
        c.settimeout(timeout)
        c.connect((_addr(lab.b, family), port))
        c.sendall(b"req%d" % n)
        return c.recv(100)


def stats_row(name: str = "web") -> dict:
    out = json.loads(xg("stats", "--json").stdout)
    for iface in out if isinstance(out, list) else [out]:
        for row in iface["ingress"]["rules"]:
            if row["name"] == name:
                return row
    raise AssertionError(f"no rule {name} in stats: {out}")


def syn_recv_count(ns: str) -> int:
    r = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{ns}", "ss", "-Htn", "state", "syn-recv"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len([line for line in r.stdout.splitlines() if line.strip()])


def apply(lab: Lab, path: str) -> subprocess.CompletedProcess[str]:
    return xg("--netns", lab.b.ns, "apply", path, "--iface", lab.b.ifname)


@pytest.mark.parametrize("family", FAMILIES)
def test_cookie_handshake_reaches_the_listener(lab: Lab, tmp_path: Path, cache_dir: None, family: int) -> None:
    """A SYN is answered in XDP (the server never sees it), the ACK becomes a connection."""
    apply(lab, _write(tmp_path, "r.yaml", RULES))
    with server(lab, family) as srv:
        for i in range(20):
            assert client_round(lab, family, i) == b"re:req%d" % i
        assert srv.served == 20
    row = stats_row()
    assert row["syn_cookies"]["sent"] == 20, row
    assert row["syn_cookies"]["valid"] == 20, row
    assert row["syn_cookies"]["invalid"] == 0, row
    assert row["syn_cookies"]["handoff_errors"] == 0, row
    st = json.loads(xg("status", "--json", "--iface", lab.b.ifname).stdout)
    assert st["syn_cookies"]["link_id"] > 0, st
    xg("detach", "--iface", lab.b.ifname)
