"""A paced AF_PACKET sender, run as its own process so the test's receiver keeps its CPU.

    python -m tests.netns.pace NS IFNAME PPS SECONDS FRAMEHEX [FRAMEHEX ...]

Sends the frames round-robin at PPS for SECONDS from inside network
namespace NS and prints how many it sent.  Pacing is by deadline (no
drift): frame k leaves at start + k / PPS.
"""

from __future__ import annotations

import socket
import sys
import time

from xdpguard.net import enter_netns


def main(argv: list[str]) -> int:
    ns, ifname, pps, seconds = argv[0], argv[1], float(argv[2]), float(argv[3])
    frames = [bytes.fromhex(h) for h in argv[4:]]
    enter_netns(ns)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    total = int(pps * seconds) + 1
    start = time.perf_counter()
    for k in range(total):
        due = start + k / pps
        while True:
            now = time.perf_counter()
            if now >= due:
                break
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
        s.send(frames[k % len(frames)])
    print(total, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
