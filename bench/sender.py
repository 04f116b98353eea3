"""A plain AF_PACKET frame sender for the receive-cost benchmark (bench.peers).

    python -m bench.sender IFACE FRAMES_FILE COUNT MAX_SECONDS [FRAME_LEN]

FRAMES_FILE holds FRAME_LEN-byte frames (default 64) back to back; they are sent round-robin with
one send() each (linear skbs: trafgen leaves the IP header outside the
skb's linear part, which makes nftables copy it for every rule) until
COUNT frames went out or MAX_SECONDS passed, whichever comes first.
Prints `{"sent": N, "seconds": S}`.  Run it pinned to one CPU (taskset) and
inside the namespace (nsenter --net): with one sending CPU, the receiving
veth's work runs inline as softirq on that CPU.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import time

FRAME_LEN = 64
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
CHECK_EVERY = 4096


def send(iface: str, frames: list[bytes], count: int, max_s: float) -> tuple[int, float]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        s.bind((iface, 0))
        snd = s.send
        n, nf = 0, len(frames)
        t0 = time.monotonic()
        deadline = t0 + max_s
        while n < count:
            chunk = min(CHECK_EVERY, count - n)
            for i in range(n, n + chunk):
                try:
                    snd(frames[i % nf])
                except BlockingIOError:  # rare: the peer's ring is full
                    pass
                except OSError as e:  # ENOBUFS: the same, seen when a flood outruns the receiver
                    if e.errno != errno.ENOBUFS:
                        raise
            n += chunk
            if time.monotonic() > deadline:
                break
        return n, time.monotonic() - t0
    finally:
        s.close()


def main(argv: list[str]) -> int:
    iface, path, count, max_s = argv[0], argv[1], int(argv[2]), float(argv[3])
    flen = int(argv[4]) if len(argv) > 4 else FRAME_LEN
    with open(path, "rb") as f:
        data = f.read()
    frames = [data[i : i + flen] for i in range(0, len(data), flen)]
    n, secs = send(iface, frames, count, max_s)
    print(json.dumps({"sent": n, "seconds": secs}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
