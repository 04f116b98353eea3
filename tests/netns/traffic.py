"""Real frames through the test lab: send on one veth end, capture on the other.

Sockets are AF_PACKET, opened inside the side's namespace (a socket keeps
the namespace it was created in, so only its creation needs `in_netns`).
Captures see what survived the receiving side's XDP program (taps run after
XDP) and skip our own outgoing frames.  scapy is used only to build frames:
its sniffer tops out near 4 kpps, a plain AF_PACKET loop keeps up with
~350 kpps.

    marker = new_marker()
    frames = [udp_frame(lab.a, lab.b, marker + bytes([i])) for i in range(20)]
    arrived = exchange(lab, frames, marker=marker)
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.netns.pace import send_resending
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.net import in_netns

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33  # not exported by Python's socket module
_RCVBUF = 32 << 20

Direction = Literal["a_to_b", "b_to_a"]


@dataclass(frozen=True)
class Side:
    """One end of the lab's veth pair, as seen from inside its namespace."""

    ns: str
    ifname: str
    ifindex: int
    mac: str
    ip4: str
    ip6: str
    prefix4: int = 24
    prefix6: int = 64


@dataclass(frozen=True)
class Lab:
    """Two namespaces joined by a veth pair; a is the sender side by default.

    `bpffs` and `state_dir` are what XDPGUARD_BPFFS / XDPGUARD_STATE_DIR point
    to for this test.  The B side has GRO on, so frames redirected into the
    veth by XDP (the live-frames generator) are delivered, not dropped.
    """

    a: Side
    b: Side
    bpffs: Path
    state_dir: Path

    def sides(self, direction: Direction = "a_to_b") -> tuple[Side, Side]:
        """(sender, receiver) for a direction."""
        if direction == "a_to_b":
            return self.a, self.b
        if direction == "b_to_a":
            return self.b, self.a
        raise ValueError(f"direction must be 'a_to_b' or 'b_to_a', not {direction!r}")


@contextmanager
def quiet_b_plane(lab: Lab) -> Iterator[Dataplane]:
    """B's data plane, for tests that drive the program with BPF_PROG_TEST_RUN
    and compare its counters exactly: A's end of the veth is down, so no
    frame but the test's own runs reaches B's interface.  The body runs in
    B's namespace; the data plane is detached at the end."""
    subprocess.run(["ip", "-n", lab.a.ns, "link", "set", lab.a.ifname, "down"], check=True)
    with in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        try:
            yield dp
        finally:
            dp.detach()


def new_marker() -> bytes:
    """Payload bytes no other frame on the link will contain."""
    return b"xgmark-" + os.urandom(8).hex().encode() + b"-"


def udp_frame(
    src: Side,
    dst: Side,
    payload: bytes,
    *,
    v6: bool = False,
    sport: int = 40000,
    dport: int = 5353,
) -> bytes:
    """An Ethernet/IP/UDP frame from src to dst with valid checksums."""
    l3 = IPv6(src=src.ip6, dst=dst.ip6) if v6 else IP(src=src.ip4, dst=dst.ip4)
    return bytes(Ether(src=src.mac, dst=dst.mac) / l3 / UDP(sport=sport, dport=dport) / payload)


def _packet_socket(ns: str | None, ifname: str, proto: int) -> socket.socket:
    with in_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    try:
        sock.bind((ifname, proto))
    except OSError:
        sock.close()
        raise
    return sock


def send_frames(ns: str | None, ifname: str, frames: Sequence[bytes], *, resend_dropped: bool = True) -> None:
    """Transmit each frame, unchanged, out of `ifname` in namespace `ns`.

    A frame the kernel dropped on the way out because the veth peer's
    ring was full is sent again (pace.send_resending); a caller that
    expects its own egress program to drop a frame passes
    resend_dropped=False, so that frame reaches the program once.
    """
    # Protocol 0: a send-only socket, nothing is queued to it on receive.
    with _packet_socket(ns, ifname, 0) as sock:
        for frame in frames:
            send_resending(sock, frame, resend_dropped)


class Capture:
    """Frames arriving on an interface, collected by a background thread.

    The socket is bound before start() returns (the `ready` event), so
    frames sent after that are never missed.  Stops after `duration`
    seconds, or once `until_count` matching frames arrived, or on stop().
    """

    def __init__(
        self,
        ns: str | None,
        ifname: str,
        *,
        duration: float | None = None,
        until_count: int | None = None,
        match: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.ns = ns
        self.ifname = ifname
        self.duration = duration
        self.until_count = until_count
        self.match = match
        self.frames: list[bytes] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"capture-{ifname}", daemon=True)

    def start(self) -> Capture:
        self._sock = _packet_socket(self.ns, self.ifname, ETH_P_ALL)
        # Bursts from a fast sender must not overflow the default 200 KB.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
        self._thread.start()
        self.ready.wait()
        return self

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.duration if self.duration is not None else None
        self.ready.set()
        try:
            while not self._full():
                if self._stop.is_set():
                    self._drain(sock)
                    break
                wait = 0.05
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                if select.select([sock], [], [], wait)[0]:
                    self._take(sock)
        except BaseException as e:  # surfaced by wait()
            self._error = e
        finally:
            sock.close()
            self._done.set()

    def _full(self) -> bool:
        return self.until_count is not None and len(self.frames) >= self.until_count

    def _take(self, sock: socket.socket) -> None:
        data, addr = sock.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            return
        if self.match is None or self.match(data):
            self.frames.append(data)

    def _drain(self, sock: socket.socket) -> None:
        # Frames already delivered when stop() was called still count.
        while not self._full() and select.select([sock], [], [], 0)[0]:
            self._take(sock)

    def wait(self, timeout: float | None = None) -> list[bytes]:
        """Block until the capture ends by itself (duration / until_count);
        after `timeout` more seconds, stop it.  Returns the frames."""
        if not self._done.wait(timeout):
            self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.frames

    def stop(self) -> list[bytes]:
        return self.wait(0)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()


def capture(
    ns: str | None,
    ifname: str,
    *,
    duration: float | None = None,
    until_count: int | None = None,
    match: Callable[[bytes], bool] | None = None,
) -> Capture:
    """Start capturing on `ifname` in `ns`; collect with .wait() or .stop()."""
    return Capture(ns, ifname, duration=duration, until_count=until_count, match=match).start()


def exchange(
    lab: Lab,
    frames: Sequence[bytes],
    direction: Direction = "a_to_b",
    *,
    marker: bytes | None = None,
    settle: float = 0.5,
    resend_dropped: bool = True,
) -> list[bytes]:
    """Send frames from one side; return those that arrived on the other.

    Arrivals are told apart from link noise (IPv6 neighbour/router
    solicitations, MLD) by `marker` in their bytes; without a marker, an
    arrival must equal one of the frames sent.  Only the receiving side is
    watched, so the receiver's ICMP errors, which quote the marker, are not
    mistaken for arrivals (they leave that side).  Returns as soon as every
    frame arrived, else `settle` seconds after the last was sent: veth
    delivers synchronously, so this only bounds the wait for frames that
    were dropped.  `resend_dropped` is passed to send_frames.
    """
    src, dst = lab.sides(direction)
    if marker is not None:
        wanted = marker

        def match(frame: bytes) -> bool:
            return wanted in frame

    else:
        sent = set(frames)

        def match(frame: bytes) -> bool:
            return frame in sent

    with capture(dst.ns, dst.ifname, until_count=len(frames), match=match) as cap:
        send_frames(src.ns, src.ifname, frames, resend_dropped=resend_dropped)
        return cap.wait(settle)
