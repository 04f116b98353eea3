"""A paced AF_PACKET sender, run as its own process so the test's receiver keeps its CPU.

    python -m tests.netns.pace [--seq] NS IFNAME PPS SECONDS FRAMEHEX [FRAMEHEX ...]

Sends the frames round-robin at PPS for SECONDS (or until SIGTERM) from
inside network namespace NS and prints how many it sent and in how long.
Pacing is by deadline (no drift): frame k leaves at start + k / PPS.
With --seq, the last 8 bytes of each frame are overwritten with k, so a
receiver can tell exactly which frames were lost.
"""

from __future__ import annotations

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
        s.send(f[:-8] + k.to_bytes(8, "big") if seq else f)
        sent += 1
    print(sent, time.perf_counter() - start, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
