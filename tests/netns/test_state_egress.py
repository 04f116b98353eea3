"""Egress rules and stateful return traffic, with real sockets in the lab.

xdpguard runs on B (xb0).  B's ingress drops by default but its first
rule allows `state: established`: flows B opened (recorded by the egress
program) get their replies, anything unsolicited is dropped, and a reply
that comes after the flow's timeout is dropped too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from tests.netns.clihelp import guarded, write_rules
from tests.netns.traffic import exchange, new_marker
from xdpguard.net import in_netns

STATEFUL = """\
version: 1
state_timeouts: {tcp: 300s, udp: 3s, icmp: 3s}
ingress:
  default: drop
  rules:
    - name: replies
      match: {state: established}
      action: allow
egress:
  default: allow
  rules:
    - name: no-9999-out
      match: {proto: udp, dport: 9999}
      action: drop
    - name: no-v6-9998-out
      match: {dst: "fd00:200::/64", proto: udp, dport: 9998}
      action: drop
"""


@pytest.fixture
def stateful(lab, tmp_path: Path):
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, STATEFUL, "stateful.yaml"))
        yield lab
    assert not any(lab.bpffs.rglob("*")), "detach left pins behind"


def stats(lab) -> dict:
    return json.loads(xg("--netns", lab.b.ns, "stats", "--iface", lab.b.ifname, "--json").stdout)


def rule_count(st: dict, direction: str, name: str) -> int:
    return next(r["packets"] for r in st[direction]["rules"] if r["name"] == name)


def _sock(ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    with in_netns(ns):
        return socket.socket(family, kind, proto)


def ping(ns: str, addr: str, count: int, timeout: float = 2.0) -> int:
    """Echo requests from `ns` over a raw socket; returns how many replies came back."""
    v6 = ":" in addr
    s = _sock(
        ns,
        socket.AF_INET6 if v6 else socket.AF_INET,
        socket.SOCK_RAW,
        socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP,
    )
    s.settimeout(timeout)
    ident = os.getpid() & 0xFFFF
    replies = 0
    with s:
        for seq in range(count):
            req = ICMPv6EchoRequest(id=ident, seq=seq) if v6 else ICMP(type=8, id=ident, seq=seq)
            s.sendto(bytes(req), (addr, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data = s.recv(2000)
                except TimeoutError:
                    break
                icmp = data if v6 else data[(data[0] & 0xF) * 4 :]  # raw v4 sockets include the IP header
                if icmp[0] == (129 if v6 else 0) and int.from_bytes(icmp[4:6], "big") == ident:
                    replies += 1
                    break
    return replies


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
def test_tcp_udp_icmp_replies_arrive(stateful, family):
    lab = stateful
    a_addr = lab.a.ip4 if family == socket.AF_INET else lab.a.ip6

    # TCP: B connects to a server in A and they exchange data both ways.
    srv = _sock(lab.a.ns, family, socket.SOCK_STREAM)
    srv.bind((a_addr, 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = conn.recv(100000)
            conn.sendall(data.upper() * 50)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = _sock(lab.b.ns, family, socket.SOCK_STREAM)
    cli.settimeout(5)
    cli.connect((a_addr, port))
    cli.sendall(b"hello xdpguard")
    got = b""
    while len(got) < 14 * 50:
        chunk = cli.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == b"HELLO XDPGUARD" * 50
    cli.close()
    t.join(5)
    srv.close()

    # UDP request/response, from a connected socket (as resolvers and NTP clients use).
    us = _sock(lab.a.ns, family, socket.SOCK_DGRAM)
    us.bind((a_addr, 0))
    uc = _sock(lab.b.ns, family, socket.SOCK_DGRAM)
    uc.settimeout(3)
    uc.connect(us.getsockname()[:2])
    uc.send(b"ping")
    data, peer = us.recvfrom(100)
    us.sendto(b"pong", peer)
    assert uc.recvfrom(100)[0] == b"pong"
    us.close()
    uc.close()

    # ICMP echo: B pings A, the replies come back.
    assert ping(lab.b.ns, a_addr, count=3) == 3

    st = stats(lab)
    assert rule_count(st, "ingress", "replies") > 0
    assert st["flows"]["entries"] >= 3 and st["flows"]["created"] >= 3


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_unsolicited_inbound_dropped(stateful, v6):
    lab = stateful
    marker = new_marker()
    if v6:
        ip = IPv6(src=lab.a.ip6, dst=lab.b.ip6)
        frames = [
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / TCP(sport=40000, dport=22, flags="S") / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / UDP(sport=40000, dport=53) / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / ICMPv6EchoRequest(id=7) / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / ICMPv6EchoReply(id=7) / marker,
        ]
    else:
        ip = IP(src=lab.a.ip4, dst=lab.b.ip4)
        frames = [
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / TCP(sport=40000, dport=22, flags="S") / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / UDP(sport=40000, dport=53) / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / ICMP(type=8, id=7) / marker,
            Ether(src=lab.a.mac, dst=lab.b.mac) / ip / ICMP(type=0, id=7) / marker,
        ]
    before = stats(lab)["ingress"]["default"]["packets"]
    arrived = exchange(lab, [bytes(f) for f in frames], marker=marker)
    assert arrived == []
    assert stats(lab)["ingress"]["default"]["packets"] - before >= len(frames)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_late_reply_dropped_after_timeout(stateful, v6):
    lab = stateful
    a_addr, b_addr = (lab.a.ip6, lab.b.ip6) if v6 else (lab.a.ip4, lab.b.ip4)
    family = socket.AF_INET6 if v6 else socket.AF_INET
    uc = _sock(lab.b.ns, family, socket.SOCK_DGRAM)
    uc.bind((b_addr, 0))
    uc.settimeout(1)
    us = _sock(lab.a.ns, family, socket.SOCK_DGRAM)
    us.bind((a_addr, 0))
    uc.connect(us.getsockname()[:2])
    uc.send(b"request")
    _, peer = us.recvfrom(100)
    us.sendto(b"in time", peer)
    assert uc.recvfrom(100)[0] == b"in time"
    time.sleep(4.5)  # udp timeout in the rule file is 3 s
    us.sendto(b"too late", peer)
    with pytest.raises(socket.timeout):
        uc.recvfrom(100)
    uc.close()
    us.close()


def test_egress_drop_rules(stateful):
    lab = stateful
    for name, a_addr, port in (("no-9999-out", lab.a.ip4, 9999), ("no-v6-9998-out", lab.a.ip6, 9998)):
        family = socket.AF_INET6 if ":" in a_addr else socket.AF_INET
        us = _sock(lab.a.ns, family, socket.SOCK_DGRAM)
        us.bind((a_addr, port))
        us.settimeout(0.5)
        open_port = _sock(lab.a.ns, family, socket.SOCK_DGRAM)
        open_port.bind((a_addr, 0))
        open_port.settimeout(2)
        uc = _sock(lab.b.ns, family, socket.SOCK_DGRAM)
        before = rule_count(stats(lab), "egress", name)
        for _ in range(3):
            uc.sendto(b"blocked", (a_addr, port))
            uc.sendto(b"allowed", open_port.getsockname()[:2])
        with pytest.raises(socket.timeout):
            us.recvfrom(100)
        assert open_port.recvfrom(100)[0] == b"allowed"
        assert rule_count(stats(lab), "egress", name) - before == 3
        for s in (us, open_port, uc):
            s.close()


def test_netlink_fallback_for_egress(lab, tmp_path: Path, monkeypatch):
    """Kernels without tcx get clsact + cls_bpf; forced here, since this kernel has tcx."""
    monkeypatch.setenv("XDPGUARD_FORCE_TC_NETLINK", "1")
    rules = tmp_path / "stateful.yaml"
    rules.write_text(STATEFUL)
    xg("--netns", lab.b.ns, "apply", str(rules), "--iface", lab.b.ifname)
    try:
        st = json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]
        assert "netlink" in st["tc"]["attach"]
        tc = subprocess.run(
            ["tc", "-n", lab.b.ns, "filter", "show", "dev", lab.b.ifname, "egress"],
            capture_output=True,
            text=True,
        ).stdout
        assert "xg_egress" in tc and "direct-action" in tc
        us = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_DGRAM)
        us.bind((lab.a.ip4, 9999))
        us.settimeout(0.5)
        uc = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_DGRAM)
        uc.sendto(b"blocked", (lab.a.ip4, 9999))
        with pytest.raises(socket.timeout):
            us.recvfrom(100)
        assert rule_count(stats(lab), "egress", "no-9999-out") == 1
        # Replacing the programs swaps the filter's program in place.
        xg("--netns", lab.b.ns, "apply", str(rules), "--iface", lab.b.ifname, "--replace-program")
        st2 = json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]
        assert st2["tc"]["prog_id"] != st["tc"]["prog_id"]
        uc.sendto(b"blocked", (lab.a.ip4, 9999))
        with pytest.raises(socket.timeout):
            us.recvfrom(100)
        us.close()
        uc.close()
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname)
    tc = subprocess.run(
        ["tc", "-n", lab.b.ns, "filter", "show", "dev", lab.b.ifname, "egress"],
        capture_output=True,
        text=True,
    ).stdout
    assert "xg_egress" not in tc
    assert not any(lab.bpffs.rglob("*"))


def test_outbound_rst_does_not_open_a_flow(lab, tmp_path: Path):
    """B answers SYNs to a closed port with RSTs; they must not make the sender's next SYN "established"."""
    rules = tmp_path / "rst.yaml"
    rules.write_text(
        "version: 1\n"
        "ingress:\n"
        "  default: drop\n"
        "  rules:\n"
        "    - {name: replies, match: {state: established}, action: allow}\n"
        "    - {name: web, match: {proto: tcp, dport: 443}, action: allow}\n"
    )
    xg("--netns", lab.b.ns, "apply", str(rules), "--iface", lab.b.ifname)
    try:
        marker = new_marker()
        syn = bytes(
            Ether(src=lab.a.mac, dst=lab.b.mac)
            / IP(src=lab.a.ip4, dst=lab.b.ip4)
            / TCP(sport=40001, dport=443, flags="S")
            / marker
        )
        # Nothing listens on 443 in B: each SYN is let in by "web" and answered with a RST.
        assert len(exchange(lab, [syn] * 3, marker=marker)) == 3
        st = stats(lab)
        assert rule_count(st, "ingress", "web") == 3
        assert rule_count(st, "ingress", "replies") == 0
        assert st["egress"]["default"]["packets"] >= 3  # the RSTs went out
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname)
