"""A paced random-source flood with a few steady sources mixed in, as its own process.

    python -m tests.netns.flood NS IFNAME PPS SECONDS TEMPLATEHEX SOURCES [EVERY:SRC ...]

TEMPLATEHEX is an Ethernet/IPv4/UDP frame; the flood sends copies of it
from SOURCES distinct pseudo-random IPv4 sources in turn, and at every
EVERY-th frame slot sends it from SRC instead (a polite or a heavy source
whose share of the rate the test chooses).  Pacing is by deadline, as in
tests.netns.pace.  Prints how many frames went out in total and per SRC,
and the seconds taken: `TOTAL SECONDS SRC=N ...`.
"""

from __future__ import annotations

import ipaddress
import struct
import sys
import time

from tests.netns.pace import paced, send_resending, sender

_MIX = 0x9E3779B1  # odd: i -> (i + 1) * _MIX mod 2^32 never repeats a source


def _csum(hdr: bytes) -> int:
    s = int(sum(struct.unpack("!10H", hdr)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def with_source(template: bytes, src: int) -> bytes:
    """The template frame from IPv4 source `src`, IP checksum fixed (UDP checksum zero: none)."""
    ip = bytearray(template[14:34])
    ip[12:16] = src.to_bytes(4, "big")
    ip[10:12] = b"\0\0"
    ip[10:12] = _csum(bytes(ip)).to_bytes(2, "big")
    udp = bytearray(template[34:42])
    udp[6:8] = b"\0\0"
    return template[:14] + bytes(ip) + bytes(udp) + template[42:]


def flood_source(i: int) -> int:
    return ((i + 1) * _MIX) & 0xFFFFFFFF


def main(argv: list[str]) -> int:
    ns, ifname, pps, seconds = argv[0], argv[1], float(argv[2]), float(argv[3])
    template, nsrc = bytes.fromhex(argv[4]), int(argv[5])
    special = []
    for spec in argv[6:]:
        every, _, src = spec.partition(":")
        special.append((int(every), src, with_source(template, int(ipaddress.IPv4Address(src)))))
    frames = [with_source(template, flood_source(i)) for i in range(nsrc)]
    sent = {src: 0 for _, src, _ in special}
    s, stop = sender(ns, ifname)
    start = time.perf_counter()
    slots = nf = 0
    for k in paced(pps, int(pps * seconds), start, stop):
        slots += 1
        for every, src, frame in special:
            if k % every == 0:
                send_resending(s, frame)
                sent[src] += 1
                break
        else:
            send_resending(s, frames[nf % nsrc])
            nf += 1
    took = time.perf_counter() - start
    print(slots, took, *(f"{src}={n}" for src, n in sent.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
