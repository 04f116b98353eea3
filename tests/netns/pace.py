"""A paced AF_PACKET sender, run as its own process so the test's receiver keeps its CPU.

    python -m tests.netns.pace [--seq] NS IFNAME PPS SECONDS FRAMEHEX [FRAMEHEX ...]

Sends the frames round-robin at PPS for SECONDS (or until SIGTERM) from
inside network namespace NS and prints how many it sent and in how long.
Pacing is by deadline (no drift): frame k leaves at start + k / PPS.
With --seq, the last 8 bytes of each frame are overwritten with k, so a
receiver can tell exactly which frames were lost.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

from xdpguard.net import enter_netns


def sender(ns: str, ifname: str) -> tuple[socket.socket, list[bool]]:
    """An AF_PACKET socket on IFNAME inside namespace NS, and a list that SIGTERM appends to."""
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    enter_netns(ns)
    try:
        os.nice(-10)  # keep the offered load steady on a busy machine
    except OSError:
        pass
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    return s, stop


RESEND_S = 5.0  # how long a frame the kernel keeps dropping is sent again


def send_resending(sock: socket.socket, frame: bytes, resend_dropped: bool = True) -> None:
    """Send one frame on an AF_PACKET socket.

    The kernel fails a send with ENOBUFS when it dropped the frame on the
    way out: the veth peer's receive ring was full (a flood outran the
    receiver) or the sender's own egress program dropped it.  The first is
    transient and is no loss of the program under test, so the frame is
    sent again after a short back-off, for up to RESEND_S seconds, and only
    then is the error raised.  resend_dropped=False raises it at once.
    """
    deadline, pause = 0.0, 0.0005
    while True:
        try:
            sock.send(frame)
            return
        except OSError as e:
            if e.errno != errno.ENOBUFS or not resend_dropped:
                raise
            now = time.monotonic()
            deadline = deadline or now + RESEND_S
            if now >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


def paced(pps: float, total: int, start: float, stop: list[bool]) -> Iterator[int]:
    """Frame slots 0 .. total-1, each yielded at its deadline start + k / PPS; ends early on `stop`."""
    for k in range(total):
        if stop:
            return
        due = start + k / pps
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
        yield k


def main(argv: list[str]) -> int:
    seq = argv[0] == "--seq"
    if seq:
        argv = argv[1:]
    ns, ifname, pps, seconds = argv[0], argv[1], float(argv[2]), float(argv[3])
    frames = [bytes.fromhex(h) for h in argv[4:]]
    s, stop = sender(ns, ifname)
    start = time.perf_counter()
    sent = 0
    for k in paced(pps, int(pps * seconds) + 1, start, stop):
        f = frames[k % len(frames)]
        send_resending(s, f[:-8] + k.to_bytes(8, "big") if seq else f)
        sent += 1
    print(sent, time.perf_counter() - start, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
