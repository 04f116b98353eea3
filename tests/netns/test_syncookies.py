"""SYN cookies (syn_cookies: true) on the wire, both families.

B runs a real TCP server behind xdpguard; A is the client and the
flooder.  What must hold: a SYN to the protected port is answered by the
XDP program (the server's SYN queue stays empty, even under a flood of
spoofed SYNs), the client's ACK becomes a normal connection to the
listener with the options the client offered, a forged ACK is dropped and
counted, and connections that existed before syn_cookies was enabled
carry on.

XDP_TX on a veth delivers to the peer only when the peer runs an XDP
program: the veth driver wakes the peer's receive queue for XDP_TX frames
only then (GRO alone gives it NAPI, but the frames then wait in its ring
until other traffic comes).  A's end therefore gets a pass-everything XDP
program for the test.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.netns.cli import xg
from tests.netns.traffic import Lab, capture, send_frames
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import syncookie
from xdpguard.errors import KernelError
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


XDP_PASS_PROG = struct.pack("<BBhi", 0xB7, 0, 0, 2) + struct.pack(
    "<BBhi", 0x95, 0, 0, 0
)  # r0 = XDP_PASS; exit


@pytest.fixture(autouse=True)
def _kernel_can(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Skip, with the reason, on a kernel without what SYN cookies need;
    give A's veth end the XDP program that XDP_TX on B needs."""
    monkeypatch.setenv("XDPGUARD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "objcache"))
    try:
        syncookie.check_kernel()
    except KernelError as e:
        if "kernel" not in str(e) and "clang" not in str(e):
            raise
        pytest.skip(f"this kernel cannot do syn_cookies: {e}")
    with B.Fd(
        B.prog_load(B.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, name="xg_test_pass", expected_attach_type=B.BPF_XDP)
    ) as prog:
        with in_netns(lab.a.ns):
            link = B.link_create(prog, lab.a.ifindex, B.BPF_XDP, 0)
    try:
        yield
    finally:
        os.close(link)


@pytest.fixture
def cache_dir() -> None:
    """(Kept for readability of the signatures: the cache is set by _kernel_can.)"""


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

    def wait_served(self, n: int, timeout: float = 5.0) -> int:
        """The server counts a connection after its answer went out: the client may see it first."""
        deadline = time.monotonic() + timeout
        while self.served < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.served

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


def client_round(
    lab: Lab,
    family: int,
    n: int,
    port: int = PORT,
    timeout: float = 5.0,
    info: list[bytes] | None = None,
    sport: int = 0,
) -> bytes:
    """One connection from A: connect, send a request, read the answer."""
    with in_netns(lab.a.ns):
        c = socket.socket(_af(family), socket.SOCK_STREAM)
    with c:
        c.settimeout(timeout)
        if sport:
            c.bind((_addr(lab.a, family), sport))
        c.connect((_addr(lab.b, family), port))
        if info is not None:
            info.append(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
        c.sendall(b"req%d" % n)
        return c.recv(100)


def _one(out: object) -> dict:
    return out[0] if isinstance(out, list) else out  # type: ignore[return-value]


def stats_row(lab: Lab, name: str = "web") -> dict:
    out = _one(json.loads(xg("--netns", lab.b.ns, "stats", "--json", "--iface", lab.b.ifname).stdout))
    for row in out["ingress"]["rules"]:
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


def apply(lab: Lab, path: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return xg("--netns", lab.b.ns, "apply", path, "--iface", lab.b.ifname, check=check)


@pytest.fixture
def protected(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """B's port PORT under syn_cookies; detached (and checked clean by the lab) afterwards."""
    path = _write(tmp_path, "r.yaml", RULES)
    apply(lab, path)
    try:
        yield path
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname, check=False)


def syn_flood_frames(lab: Lab, family: int, n: int) -> tuple[bytes, int]:
    """n SYNs from random spoofed sources with Linux's options, back to back."""
    rnd = random.Random(family)
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    frames = []
    for _ in range(n):
        if family == 4:
            src = f"198.18.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
            l3 = IP(src=src, dst=lab.b.ip4)
        else:
            src = f"2001:db8:{rnd.randrange(65536):x}:{rnd.randrange(65536):x}::{rnd.randrange(1, 65536):x}"
            l3 = IPv6(src=src, dst=lab.b.ip6)
        seg = TCP(
            sport=rnd.randrange(1024, 65536), dport=PORT, flags="S", seq=rnd.getrandbits(32), options=opts
        )
        frames.append(bytes(Ether(src=lab.a.mac, dst=lab.b.mac) / l3 / seg))
    size = len(frames[0])
    assert all(len(f) == size for f in frames)
    return b"".join(frames), size


@contextmanager
def flood(lab: Lab, family: int, tmp_path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Spoofed SYNs as fast as one AF_PACKET sender can go, for `seconds`."""
    data, size = syn_flood_frames(lab, family, 4096)
    path = tmp_path / f"synflood{family}.bin"
    path.write_bytes(data)
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{lab.a.ns}",
            sys.executable,
            "-m",
            "bench.sender",
            lab.a.ifname,
            str(path),
            str(10**9),
            str(seconds),
            str(size),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.wait(seconds + 30)


def _tcp_info(raw: bytes) -> dict[str, int]:
    """The fields of struct tcp_info these tests read."""
    opts, wscales = raw[5], raw[6]
    (snd_mss,) = struct.unpack_from("<I", raw, 16)
    return {"options": opts, "snd_wscale": wscales & 15, "rcv_wscale": wscales >> 4, "snd_mss": snd_mss}


@pytest.mark.parametrize("family", FAMILIES)
def test_cookie_handshake_reaches_the_listener(lab: Lab, protected: str, family: int) -> None:
    """A SYN is answered in XDP (the server never sees it), the ACK becomes a connection."""
    client_infos: list[bytes] = []
    with server(lab, family) as srv:
        for i in range(20):
            assert client_round(lab, family, i, info=client_infos) == b"re:req%d" % i
        assert srv.wait_served(20) == 20
        info = _tcp_info(srv.infos[0])
    client = _tcp_info(client_infos[0])
    row = stats_row(lab)
    sc = row["syn_cookies"]
    # valid: each handshake ACK, and a first data segment that came in the same burst (see the flood test).
    assert sc["sent"] == 20 and 20 <= sc["valid"] <= 40, sc
    assert sc["invalid"] == 0 and sc["handoff_errors"] == 0, sc
    # Linux clients offer every option: all of them reach the server's socket,
    # with the client's window scale and ours (7) as the cookie carried them.
    want = TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE
    assert info["options"] & want == want, info
    assert client["options"] & want == want, client
    assert info["snd_wscale"] == client["rcv_wscale"], (info, client)
    assert info["rcv_wscale"] == client["snd_wscale"] == 7, (info, client)
    # The client's MSS (veth MTU 1500), less the 12 bytes of timestamps.
    assert info["snd_mss"] == (1460 if family == 4 else 1440) - 12, info
    st = _one(json.loads(xg("--netns", lab.b.ns, "status", "--json", "--iface", lab.b.ifname).stdout))
    assert st["syn_cookies"]["link_id"] > 0, st
    assert st["syn_cookies"]["xdp_prog_id"] > 0, st


CLIENT_PORT0 = 20000  # below the ephemeral range: no other socket of A's namespace takes these


@pytest.mark.parametrize("family", FAMILIES)
def test_real_clients_get_through_a_spoofed_syn_flood(
    lab: Lab, protected: str, tmp_path: Path, family: int
) -> None:
    """>= 100 request/response connections while spoofed SYNs pour in; no SYN-RECV socket ever."""
    done = 0
    syn_recv: list[int] = []
    with server(lab, family) as srv, flood(lab, family, tmp_path, seconds=60) as proc:
        started = time.monotonic()
        time.sleep(0.5)  # the flood is running before the first client
        deadline = time.monotonic() + 45
        while done < 150 and time.monotonic() < deadline and proc.poll() is None:
            # A port of its own per client: the kernel may hand a later
            # connection an earlier one's port (seen under this flood), and
            # the server still holds that connection in TIME_WAIT, so its
            # SYN would go to the stack (an existing connection is never
            # disturbed), not through a cookie, and not be counted below.
            sport = CLIENT_PORT0 + done
            assert client_round(lab, family, done, timeout=10, sport=sport) == b"re:req%d" % done
            done += 1
            if done % 25 == 0:
                syn_recv.append(syn_recv_count(lab.b.ns))
        assert proc.poll() is None, "the flood ended before the clients were done"
        seconds = time.monotonic() - started
        proc.terminate()
        proc.communicate(30)
    assert done >= 100, f"only {done} connections during the flood"
    assert srv.wait_served(done) == done
    assert syn_recv and max(syn_recv) == 0, syn_recv
    row = stats_row(lab)
    rate = row["syn_cookies"]["sent"] / seconds
    sent = row["syn_cookies"]["sent"]
    print(f"flood: {sent} cookies in {seconds:.1f} s ({rate:,.0f}/s), {done} clients served")
    # Every spoofed SYN got its cookie too (the clients' own are `done` of them).
    assert row["syn_cookies"]["sent"] >= done + 1000, row
    # A client's first data segment may arrive in the same burst as its ACK,
    # before the stack made the connection: it carries the cookie too and is
    # counted (the tc program then finds the connection and leaves it be).
    assert done <= row["syn_cookies"]["valid"] <= 2 * done, row["syn_cookies"]
    assert row["syn_cookies"]["invalid"] == 0, row["syn_cookies"]
    assert row["syn_cookies"]["handoff_errors"] == 0, row["syn_cookies"]


def ack_frame(lab: Lab, family: int, sport: int, seq: int, ack: int) -> bytes:
    l3 = IP(src=lab.a.ip4, dst=lab.b.ip4) if family == 4 else IPv6(src=lab.a.ip6, dst=lab.b.ip6)
    return bytes(
        Ether(src=lab.a.mac, dst=lab.b.mac) / l3 / TCP(sport=sport, dport=PORT, flags="A", seq=seq, ack=ack)
    )


def _is_rst_to(sport: int) -> Callable[[bytes], bool]:
    def match(frame: bytes) -> bool:
        e = Ether(frame)
        return TCP in e and e[TCP].dport == sport and bool(e[TCP].flags & 0x04)

    return match


@pytest.mark.parametrize("family", FAMILIES)
def test_forged_ack_is_dropped_and_counted(lab: Lab, protected: str, family: int) -> None:
    """An ACK with a made-up cookie, for no connection, never reaches the stack (no reset comes back)."""
    xg("--netns", lab.b.ns, "events", "--iface", lab.b.ifname, "--sample", "1", "--duration", "0.1")
    with server(lab, family):
        frames = [ack_frame(lab, family, 40000 + i, 1000 + i, 0x12345678 + i) for i in range(10)]
        with capture(lab.a.ns, lab.a.ifname, duration=1.5, match=_is_rst_to(40000)) as cap:
            send_frames(lab.a.ns, lab.a.ifname, frames)
            resets = cap.wait()
        assert resets == [], "the stack saw a forged ACK and answered it"
        row = stats_row(lab)
        assert row["syn_cookies"]["invalid"] == 10, row
        assert row["syn_cookies"]["valid"] == 0, row
        ev = xg(
            "--netns",
            lab.b.ns,
            "events",
            "--iface",
            lab.b.ifname,
            "--json",
            "--backlog",
            "--count",
            "1",
            "--duration",
            "5",
        )
        first = json.loads(ev.stdout.splitlines()[0])
        assert first["reason"] == "syn_cookie" and first["rule"] == "web", first
        assert first["dport"] == PORT and first["sport"] == 40000, first
        # Real clients still get in.
        assert client_round(lab, family, 1) == b"re:req1"


@pytest.mark.parametrize("family", FAMILIES)
def test_ack_for_unprotected_port_is_left_to_the_stack(lab: Lab, protected: str, family: int) -> None:
    """The same forged ACK to a port without syn_cookies reaches the stack, which resets it."""
    with server(lab, family, OTHER_PORT):
        l3 = IP(src=lab.a.ip4, dst=lab.b.ip4) if family == 4 else IPv6(src=lab.a.ip6, dst=lab.b.ip6)
        frame = bytes(
            Ether(src=lab.a.mac, dst=lab.b.mac) / l3 / TCP(sport=40100, dport=OTHER_PORT, flags="A")
        )
        with capture(lab.a.ns, lab.a.ifname, duration=3, until_count=1, match=_is_rst_to(40100)) as cap:
            send_frames(lab.a.ns, lab.a.ifname, [frame])
            resets = cap.wait()
        assert len(resets) == 1
    assert stats_row(lab)["syn_cookies"]["invalid"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_syn_to_a_closed_port_gets_the_stacks_reset(lab: Lab, protected: str, family: int) -> None:
    """No listener: no cookie (the port must not look open), the stack answers with a reset."""
    l3 = IP(src=lab.a.ip4, dst=lab.b.ip4) if family == 4 else IPv6(src=lab.a.ip6, dst=lab.b.ip6)
    frame = bytes(Ether(src=lab.a.mac, dst=lab.b.mac) / l3 / TCP(sport=40200, dport=PORT, flags="S"))
    with capture(lab.a.ns, lab.a.ifname, duration=3, until_count=1, match=_is_rst_to(40200)) as cap:
        send_frames(lab.a.ns, lab.a.ifname, [frame])
        resets = cap.wait()
    assert len(resets) == 1
    assert stats_row(lab)["syn_cookies"]["sent"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_established_connections_survive_enabling(lab: Lab, tmp_path: Path, family: int) -> None:
    """Connections made before syn_cookies carry on across the apply that enables it."""
    apply(lab, _write(tmp_path, "plain.yaml", PLAIN))
    try:
        with server(lab, family) as srv:
            srv.hold = True
            conns = []
            for _ in range(5):
                with in_netns(lab.a.ns):
                    c = socket.socket(_af(family), socket.SOCK_STREAM)
                c.settimeout(5)
                c.connect((_addr(lab.b, family), PORT))
                conns.append(c)
            deadline = time.monotonic() + 5
            while len(srv.held) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(srv.held) == 5
            out = apply(lab, _write(tmp_path, "r.yaml", RULES))
            assert "SYN-cookie" in out.stdout + out.stderr
            for rnd in range(3):
                for i, (c, s) in enumerate(zip(conns, srv.held, strict=True)):
                    msg = b"%d-%d" % (rnd, i) * 500  # more than one segment
                    c.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += s.recv(65536)
                    assert got == msg
                    s.sendall(msg[::-1])
                    back = b""
                    while len(back) < len(msg):
                        back += c.recv(65536)
                    assert back == msg[::-1]
            for c in conns:
                c.close()
            srv.hold = False
            assert client_round(lab, family, 7) == b"re:req7"
        row = stats_row(lab)
        assert row["syn_cookies"]["invalid"] == 0, row
        assert 1 <= row["syn_cookies"]["valid"] <= 2, row
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname, check=False)


def _sysctl(ns: str, name: str, value: str) -> None:
    subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", "sysctl", "-qw", f"{name}={value}"], check=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_client_without_options_gets_none(lab: Lab, protected: str, family: int) -> None:
    """Window scaling, SACK and timestamps only where the client offered them."""
    for name in ("net.ipv4.tcp_timestamps", "net.ipv4.tcp_sack", "net.ipv4.tcp_window_scaling"):
        _sysctl(lab.a.ns, name, "0")
    with server(lab, family) as srv:
        for i in range(3):
            assert client_round(lab, family, i, sport=41000 + i) == b"re:req%d" % i
        info = _tcp_info(srv.infos[0])
    assert info["options"] & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE) == 0, info
    assert info["snd_mss"] == (1460 if family == 4 else 1440), info
    row = stats_row(lab)
    assert row["syn_cookies"]["sent"] == 3 and 3 <= row["syn_cookies"]["valid"] <= 6, row["syn_cookies"]


def test_apply_refuses_when_the_stack_would_refuse_cookies(lab: Lab, tmp_path: Path) -> None:
    """net.ipv4.tcp_syncookies=0: apply says why, exits 1, and attaches nothing."""
    _sysctl(lab.b.ns, "net.ipv4.tcp_syncookies", "0")
    r = apply(lab, _write(tmp_path, "r.yaml", RULES), check=False)
    assert r.returncode == 1, r
    assert "tcp_syncookies" in r.stderr and "Traceback" not in r.stderr, r.stderr
    st = _one(json.loads(xg("--netns", lab.b.ns, "status", "--json", "--iface", lab.b.ifname).stdout))
    assert st["attached"] is False, st
    assert not (lab.bpffs / lab.b.ifname).exists()


def test_apply_and_status_see_the_sysctl_turned_off_later(lab: Lab, protected: str, tmp_path: Path) -> None:
    """tcp_syncookies set to 0 after the programs were loaded: every cookie ACK
    would be refused, so `status` says so and the next apply refuses (exit 1)
    and changes nothing, as the first apply would have."""
    before = _one(json.loads(xg("--netns", lab.b.ns, "status", "--json", "--iface", lab.b.ifname).stdout))
    assert "problem" not in before["syn_cookies"], before
    _sysctl(lab.b.ns, "net.ipv4.tcp_syncookies", "0")
    try:
        st = _one(json.loads(xg("--netns", lab.b.ns, "status", "--json", "--iface", lab.b.ifname).stdout))
        assert "tcp_syncookies is 0" in st["syn_cookies"]["problem"], st
        text = xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname).stdout
        assert "syn cookies cannot complete a connection" in text, text
        changed = _write(tmp_path, "r2.yaml", RULES.replace("default: allow", "default: drop"))
        for args in ((changed,), (protected, "--replace-program")):
            r = xg("--netns", lab.b.ns, "apply", *args, "--iface", lab.b.ifname, check=False)
            assert r.returncode == 1, r
            assert "tcp_syncookies" in r.stderr and "Traceback" not in r.stderr, r.stderr
        after = _one(json.loads(xg("--netns", lab.b.ns, "status", "--json", "--iface", lab.b.ifname).stdout))
        assert after["version"] == before["version"] and after["digest"] == before["digest"], after
    finally:
        _sysctl(lab.b.ns, "net.ipv4.tcp_syncookies", "1")


def test_apply_says_when_a_veth_peer_cannot_receive_the_syn_acks(lab: Lab, tmp_path: Path) -> None:
    """XDP_TX on a veth reaches the peer only while the peer runs an XDP
    program: apply warns when it can see the peer has none, and notes the
    need when the peer is in another namespace."""
    path = _write(tmp_path, "r.yaml", RULES)
    out = apply(lab, path)
    try:
        assert f"note: {lab.b.ifname} is a veth" in out.stdout, out.stdout
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname, check=False)
    # Both ends in B's namespace, the peer without an XDP program.
    here, peer = "xgsv0", "xgsv1"
    net.create_veth_pair(here, lab.b.ns, peer, lab.b.ns)
    try:
        out = xg("--netns", lab.b.ns, "apply", path, "--iface", here)
        try:
            assert f"warning: {here} is a veth and its peer {peer} runs no XDP program" in out.stdout, out
        finally:
            xg("--netns", lab.b.ns, "detach", "--iface", here, check=False)
    finally:
        net.delete_link(here, lab.b.ns)


def test_detach_removes_the_syncookie_objects(lab: Lab, protected: str) -> None:
    """The tcx ingress link goes with detach: nothing of it is left on the interface."""
    pins = set(os.listdir(lab.bpffs / lab.b.ifname))
    assert {"link_tcx_ingress", "prog_syn_xdp", "prog_syn_handoff", "syn_secret", "syn_counters"} <= pins
    xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname)
    assert not (lab.bpffs / lab.b.ifname).exists()
    # No tcx program is left on B's ingress: a forged ACK reaches the stack (reset).
    with server(lab, 4):
        frame = ack_frame(lab, 4, 40300, 1, 1)
        with capture(lab.a.ns, lab.a.ifname, duration=3, until_count=1, match=_is_rst_to(40300)) as cap:
            send_frames(lab.a.ns, lab.a.ifname, [frame])
            assert len(cap.wait()) == 1


def test_apply_completes_pins_of_an_xdpguard_without_syn_cookies(lab: Lab, tmp_path: Path) -> None:
    """An interface attached by a version without SYN cookies (no syn_prog, no
    syn_scratch pins): the apply that enables them replaces the programs,
    which add the maps, and the cookies work."""
    apply(lab, _write(tmp_path, "plain.yaml", PLAIN))
    try:
        for name in ("syn_prog", "syn_scratch"):
            (lab.bpffs / lab.b.ifname / name).unlink()
        out = apply(lab, _write(tmp_path, "r.yaml", RULES))
        assert "older xdpguard" in out.stdout and "syn_prog" in out.stdout, out.stdout
        with server(lab, 4) as srv:
            assert client_round(lab, 4, 1) == b"re:req1"
            assert srv.wait_served(1) == 1
        assert stats_row(lab)["syn_cookies"]["sent"] == 1
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname, check=False)


def test_a_cache_dir_that_is_a_file_is_refused_with_its_path(lab: Lab, tmp_path: Path) -> None:
    """XDPGUARD_CACHE_DIR a regular file: apply names it (exit 1, the machine's
    state, not the input), with no internal error, and attaches nothing."""
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    r = xg(
        "--netns", lab.b.ns, "apply", _write(tmp_path, "r.yaml", RULES), "--iface", lab.b.ifname,
        check=False, env={"XDPGUARD_CACHE_DIR": str(bad)},
    )  # fmt: skip
    assert r.returncode == 1, r
    assert f"XDPGUARD_CACHE_DIR ({bad}): {bad} is not a directory" in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (lab.bpffs / lab.b.ifname).exists()


def test_a_corrupt_cached_object_is_rebuilt_and_the_apply_proceeds(lab: Lab, tmp_path: Path) -> None:
    """A truncated syncookie-*.o in the cache: built again once, the apply
    succeeds, and libbpf's complaints about the old file stay off stderr."""
    obj = Path(os.environ["XDPGUARD_CACHE_DIR"]) / f"syncookie-{syncookie.object_hash()}.o"
    whole = obj.read_bytes()  # built by _kernel_can
    obj.write_bytes(whole[: len(whole) // 3])
    try:
        r = apply(lab, _write(tmp_path, "r.yaml", RULES))
        assert "libbpf" not in r.stderr and "Invalid argument" not in r.stderr, r.stderr
        assert "loaded the SYN-cookie programs" in r.stdout, r.stdout
        assert obj.read_bytes() == whole
        with server(lab, 4) as srv:
            assert client_round(lab, 4, 1) == b"re:req1"
            assert srv.wait_served(1) == 1
    finally:
        xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname, check=False)
