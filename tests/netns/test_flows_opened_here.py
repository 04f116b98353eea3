"""Flows come only from connections this host opens.

`state: established` lets in what answers this host's own connections.
The egress program records a flow only from the packet that opens one: a
TCP SYN without ACK, an SCTP INIT, an ICMP echo request, a UDP datagram
from a socket connected to that peer.  Whatever a remote peer starts (a
SYN to an open port, a DNS query, a ping) is answered without a flow, so
its next packets are `new`: they meet the rules, rate limits included,
and a flood of them cannot fill the flow table and push out the host's own
connections.  Connections opened before the attach are read from the
socket table.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkInit, SCTPChunkInitAck
from scapy.packet import Raw

from tests.netns.clihelp import REPO, Guard, expect_ok, guarded, write_rules
from tests.netns.traffic import Lab, send_frames
from xdpguard import net
from xdpguard.datapath import abi, bpf
from xdpguard.datapath import maps as M


def _sock(ns: str, family: int, kind: int) -> socket.socket:
    with net.in_netns(ns):
        return socket.socket(family, kind)


def flows4(lab: Lab) -> set[tuple[int, str, int, str, int]]:
    """B's IPv4 flows: (proto, local, lport, remote, rport)."""
    out = set()
    with M.open_maps(str(lab.bpffs / lab.b.ifname)) as m:
        for k, _ in bpf.map_lookup_batch(m["flows"], M.C_SIZE["flow_key"], M.C_SIZE["flow"]):
            key = abi.FlowKey.from_buffer_copy(k)
            if key.family == 4:
                out.add(
                    (
                        key.proto,
                        socket.inet_ntoa(bytes(key.laddr[:4])),
                        key.lport,
                        socket.inet_ntoa(bytes(key.raddr[:4])),
                        key.rport,
                    )
                )
    return out


def route_back(lab: Lab, prefix: str) -> None:
    """B answers sources in `prefix` through A (they are spoofed: A owns none of them)."""
    subprocess.run(["ip", "-n", lab.b.ns, "route", "add", prefix, "via", lab.a.ip4], check=True)


# ---- which outbound packets open a flow ----------------------------------------


def test_only_opening_packets_create_flows(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """Through B's egress program (BPF_PROG_TEST_RUN): openers make flows, answers do not."""
    guard.apply(write_rules(tmp_path, "version: 1\ningress: {default: allow, rules: []}\n"))
    l4 = {
        "syn": (TCP(sport=41000, dport=443, flags="S"), True),
        "syn-ack": (TCP(sport=22, dport=41001, flags="SA"), False),
        "ack": (TCP(sport=22, dport=41002, flags="A"), False),
        "rst": (TCP(sport=22, dport=41003, flags="R"), False),
        "sctp-init": (SCTP(sport=41004, dport=38412) / SCTPChunkInit(), True),
        "sctp-init-ack": (SCTP(sport=38412, dport=41005) / SCTPChunkInitAck(), False),
        "echo-request": (ICMP(type=8, id=41006), True),
        "echo-reply": (ICMP(type=0, id=41007), False),
        # No socket behind a test run: like the answer of a server on an unconnected socket.
        "udp": (UDP(sport=53, dport=41008) / Raw(b"answer"), False),
    }
    remote = {name: f"198.51.100.{10 + i}" for i, name in enumerate(l4)}
    with bpf.Fd(bpf.obj_get(str(lab.bpffs / lab.b.ifname / "prog_egress"))) as prog:
        for name, (seg, _) in l4.items():
            frame = Ether(src=lab.b.mac, dst=lab.a.mac) / IP(src=lab.b.ip4, dst=remote[name]) / seg
            assert bpf.prog_test_run(prog, bytes(frame)).retval == 0, name  # passed
    table = flows4(lab)
    made = {name for name in l4 if any(f[3] == remote[name] for f in table)}
    assert made == {name for name, (_, opens) in l4.items() if opens}, sorted(table)


def test_udp_flows_only_from_connected_sockets(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    rules = """\
        version: 1
        state_timeouts: {udp: 30s}
        ingress:
          default: drop
          rules:
            - {name: replies, match: {state: established}, action: allow}
    """
    guard.apply(write_rules(tmp_path, rules))
    server = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((lab.a.ip4, 0))
    server.settimeout(2)
    with server:
        for connected in (True, False):
            client = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_DGRAM)
            client.settimeout(1)
            with client:
                if connected:
                    client.connect(server.getsockname())
                    client.send(b"query")
                else:
                    client.sendto(b"query", server.getsockname())
                _, peer = server.recvfrom(100)
                server.sendto(b"answer", peer)
                if connected:
                    assert client.recv(100) == b"answer"
                else:
                    with pytest.raises(TimeoutError):
                        client.recvfrom(100)  # a sendto() client opens no flow: its answer is new


# ---- the DNS server of rules/dns-server.yaml -------------------------------------


def test_dns_answers_never_make_the_next_query_established(guard: Guard, lab: Lab) -> None:
    """rules/dns-server.yaml as shipped: a client at a fixed source port stays
    under the per-network rate limit however many answers the server sent it."""
    guard.apply(REPO / "rules/dns-server.yaml")
    client = "198.51.100.77"  # a public-looking source: no bogon, not a secondary
    route_back(lab, "198.51.100.0/24")
    srv = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("0.0.0.0", 53))  # unconnected, as every DNS server's
    srv.settimeout(0.2)
    answered = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                q, peer = srv.recvfrom(512)
            except TimeoutError:
                continue
            srv.sendto(q + b"-answer", peer)
            answered[0] += 1

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def query(i: int) -> bytes:
        return bytes(
            Ether(src=lab.a.mac, dst=lab.b.mac)
            / IP(src=client, dst=lab.b.ip4)
            / UDP(sport=40000, dport=53)
            / Raw(struct.pack("!H", i) + b"query")
        )

    try:
        # One answered query first: the old behaviour made every later one "established".
        send_frames(lab.a.ns, lab.a.ifname, [query(0)])
        deadline = time.monotonic() + 5
        while answered[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answered[0] == 1
        n = 3000
        t0 = time.monotonic()
        send_frames(lab.a.ns, lab.a.ifname, [query(i) for i in range(1, n + 1)])
        elapsed = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(2)
        srv.close()
    st = guard.stats()
    assert guard.rule("allow-replies", st)["packets"] == 0, "a query was let in as an established flow"
    dns = guard.rule("dns-udp-v4", st)
    assert dns["packets"] == n + 1
    # 500/s with a burst of 1000 per /24: the limit counts every query.
    over = dns["limit"]["over_limit"]
    assert over >= n + 1 - (1000 + 500 * (elapsed + 1)), (dns, elapsed)
    assert over > 0
    assert st["flows"]["created"] == 0, st["flows"]  # answers from an unconnected socket open nothing


# ---- a SYN flood cannot push out the host's own connection -------------------------

FLOOD_RULES = """\
    version: 1
    state_timeouts: {tcp: 300s}
    ingress:
      default: drop
      rules:
        - {name: replies, match: {state: established}, action: allow}
        - {name: web, match: {proto: tcp, dport: 8080}, action: allow}
"""


def _syn_frames(lab: Lab, sources: list[str], per_source: int) -> list[bytes]:
    """SYNs to B:8080 with valid checksums, built fast: only the source port changes."""
    out = []
    for src in sources:
        tmpl = bytes(
            Ether(src=lab.a.mac, dst=lab.b.mac)
            / IP(src=src, dst=lab.b.ip4)
            / TCP(sport=0, dport=8080, flags="S", seq=12345, window=64240)
        )
        l4 = 14 + 20
        (csum0,) = struct.unpack_from("!H", tmpl, l4 + 16)
        base = (~csum0) & 0xFFFF  # the one's-complement sum with sport 0
        for sport in range(1024, 1024 + per_source):
            s = base + sport
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            f = bytearray(tmpl)
            struct.pack_into("!H", f, l4, sport)
            struct.pack_into("!H", f, l4 + 16, (~s) & 0xFFFF)
            out.append(bytes(f))
    return out


def test_syn_flood_does_not_evict_an_outbound_flow(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    # A server in A, and B's own connection to it.
    srv = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((lab.a.ip4, 7000))
    srv.listen(1)
    guard.apply(write_rules(tmp_path, FLOOD_RULES))
    cli = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(5)
    cli.connect((lab.a.ip4, 7000))
    conn, _ = srv.accept()
    conn.sendall(b"hello")
    assert cli.recv(100) == b"hello"
    # B listens on 8080 and answers every SYN (with cookies once its queue is full).
    lst = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("0.0.0.0", 8080))
    lst.listen(4096)
    route_back(lab, "198.51.100.0/24")
    before = guard.stats()
    synack_before = before["egress"]["default"]["packets"]

    frames = _syn_frames(lab, ["198.51.100.1", "198.51.100.2"], 40_000)
    assert len(frames) == 80_000
    send_frames(lab.a.ns, lab.a.ifname, frames)
    # Wait until B has answered (its egress counts the SYN-ACKs).
    deadline, last = time.monotonic() + 60, -1
    while time.monotonic() < deadline:
        now = guard.stats()["egress"]["default"]["packets"]
        if now == last:
            break
        last = now
        time.sleep(1)
    st = guard.stats()
    answered = st["egress"]["default"]["packets"] - synack_before
    assert answered >= 60_000, f"B answered only {answered} SYNs: the flood did not happen"
    assert guard.rule("web", st)["packets"] >= 80_000
    assert st["flows"]["created"] - before["flows"]["created"] == 0, st["flows"]
    assert st["flows"]["evicted"] == 0, st["flows"]

    # The host's own connection still gets its data.
    conn.sendall(b"still here")
    assert cli.recv(100) == b"still here"
    for s in (cli, conn, srv, lst):
        s.close()


# ---- connections opened before the attach -----------------------------------------


def test_connections_opened_before_attach_are_recorded(lab: Lab, tmp_path: Path) -> None:
    """B's own TCP connection and connected UDP socket, opened before xdpguard,
    get their replies; a connection A opened to B's listener does not."""
    srv = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((lab.a.ip4, 7000))
    srv.listen(1)
    out_tcp = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_STREAM)
    out_tcp.settimeout(3)
    out_tcp.connect((lab.a.ip4, 7000))
    peer_tcp, _ = srv.accept()
    usrv = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_DGRAM)
    usrv.bind((lab.a.ip4, 0))
    out_udp = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_DGRAM)
    out_udp.settimeout(2)
    out_udp.connect(usrv.getsockname())
    lst = _sock(lab.b.ns, socket.AF_INET, socket.SOCK_STREAM)
    lst.bind((lab.b.ip4, 9000))
    lst.listen(1)
    in_tcp = _sock(lab.a.ns, socket.AF_INET, socket.SOCK_STREAM)
    in_tcp.connect((lab.b.ip4, 9000))
    accepted, _ = lst.accept()
    accepted.settimeout(1)

    rules = write_rules(
        tmp_path,
        """\
        version: 1
        ingress:
          default: drop
          rules:
            - {name: replies, match: {state: established}, action: allow}
        """,
    )
    with guarded(lab) as g:
        g.apply(rules)
        peer_tcp.sendall(b"tcp reply")
        assert out_tcp.recv(100) == b"tcp reply"
        out_udp.send(b"q")
        _, peer = usrv.recvfrom(10)
        usrv.sendto(b"udp reply", peer)
        assert out_udp.recv(100) == b"udp reply"
        in_tcp.sendall(b"inbound")
        with pytest.raises(TimeoutError):
            accepted.recv(100)  # A opened it: not established
        table = flows4(lab)
        assert (6, lab.b.ip4, out_tcp.getsockname()[1], lab.a.ip4, 7000) in table
        assert not any(f[2] == 9000 for f in table), table
        st = json.loads(expect_ok(g.cli("stats", "--iface", lab.b.ifname, "--json")).stdout)
        assert st["ingress"]["default"]["packets"] >= 1
    for s in (srv, out_tcp, peer_tcp, usrv, out_udp, lst, in_tcp, accepted):
        s.close()
