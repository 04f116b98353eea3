"""Random raw frames for the differential test: valid, edge-case and malformed.

Built with struct (thousands per second) rather than scapy.  The frames
aim at the parser's edges: VLAN tags (0-3), IPv4 options and fragments,
IPv4 AH and IPv6 extension-header chains around the parser's depth limit, truncation
at every header, lengths that lie, and non-IP ethertypes.
"""

from __future__ import annotations

import random
import struct

from tests.strategies import PORT_EDGES, _addr_near
from xdpguard.rules.abi_consts import MAX_EXT_HDRS
from xdpguard.rules.model import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Prefix,
    RuleSet,
)
from xdpguard.rules.packet import Packet

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
EXT_HDRS = [0, 43, 60, 51]


def _l4(rng: random.Random, proto: int) -> bytes:
    if proto in (IPPROTO_TCP,):
        sport = rng.choice(PORT_EDGES + [rng.randrange(65536)])
        dport = rng.choice(PORT_EDGES + [rng.randrange(65536)])
        doff = 5 if rng.random() < 0.95 else rng.randrange(16)
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, rng.randrange(256), 1024, 0, 0)
    if proto == IPPROTO_UDP:
        return struct.pack(
            "!HHHH",
            rng.choice(PORT_EDGES + [rng.randrange(65536)]),
            rng.choice(PORT_EDGES + [rng.randrange(65536)]),
            8,
            0,
        )
    if proto == IPPROTO_SCTP:
        return struct.pack(
            "!HHII", rng.choice(PORT_EDGES), rng.choice(PORT_EDGES + [rng.randrange(65536)]), 0, 0
        )
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        t = rng.choice([0, 3, 8, 11, 128, 129, 133, 134, 135, 136, 137, rng.randrange(256)])
        return struct.pack("!BBHHH", t, rng.choice([0, 1, 3, rng.randrange(256)]), 0, rng.randrange(65536), 1)
    return bytes(rng.randrange(0, 16))


def _eth(rng: random.Random, etype: int) -> bytes:
    tags = rng.choices([0, 1, 2, 3], weights=[80, 8, 8, 4])[0]
    out = MAC_B + MAC_A
    for _ in range(tags):
        out += struct.pack("!HH", rng.choice([0x8100, 0x88A8]), rng.randrange(4096))
    return out + struct.pack("!H", etype)


def random_frame(
    rng: random.Random,
    rs: RuleSet,
    near: list[Prefix] | None = None,
    sources: dict[int, list[int]] | None = None,
) -> bytes:
    """One random frame; its addresses are drawn near the rules' prefixes and
    `near`; with `sources` (family -> recent addresses, kept up to date here)
    the source often repeats, which per-source rate limits and block_for
    need to show."""
    r = rng.random()
    if r < 0.04:
        return _eth(rng, rng.choice([0x0806, 0x88CC, 0x1234]))[: 14 + rng.randrange(0, 40)] + bytes(28)
    fam = rng.choice([4, 6])
    proto = rng.choice(
        [
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_TCP,
            IPPROTO_UDP,
            IPPROTO_SCTP,
            IPPROTO_ICMP,
            IPPROTO_ICMPV6,
            47,
            50,
        ]
    )
    payload = _l4(rng, proto) + bytes(rng.randrange(0, 24))
    src, dst = _addr_near(rng, rs, fam, near), _addr_near(rng, rs, fam, near)
    if sources is not None:
        pool = sources.setdefault(fam, [])
        if pool and rng.random() < 0.6:
            src = rng.choice(pool)
        else:
            pool.append(src)
            del pool[:-4]
    if fam == 4:
        ihl = 5 if rng.random() < 0.85 else rng.choice([6, 8, 15, 4, 0])
        opts = bytes(max(0, ihl * 4 - 20))
        frag = 0
        fr = rng.random()
        if fr < 0.06:
            frag = rng.randrange(1, 0x1FFF)  # later fragment
        elif fr < 0.1:
            frag = 0x2000  # first fragment (MF set, offset 0)
        # AH headers in front of the L4 header, around the parser's depth limit.
        n_ah = rng.choices(range(MAX_EXT_HDRS + 2), weights=[80, 8, 2, 1, 1, 1, 3, 4])[0]
        nh_first = proto
        for _ in range(n_ah):
            # AH is (words + 2) * 4 bytes; 60 claims more than the frame holds.
            words = rng.choice([1, 1, 2, 4, 0, 60])
            ah_len = (min(words, 4) + 2) * 4
            payload = struct.pack("!BB", nh_first, words) + bytes(ah_len - 2) + payload
            nh_first = 51
        tot = 20 + len(opts) + len(payload)
        if rng.random() < 0.04:
            tot = rng.choice([tot + rng.randrange(1, 60), rng.randrange(0, 20)])
        ver = 4 if rng.random() < 0.97 else 6
        hdr = struct.pack(
            "!BBHHHBBHII", (ver << 4) | (ihl & 0xF), 0, tot & 0xFFFF, 1, frag, 64, nh_first, 0, src, dst
        )
        frame = _eth(rng, 0x0800) + hdr + opts + payload
    else:
        exts = b""
        nh_first = proto
        n_ext = rng.choices(range(MAX_EXT_HDRS + 3), weights=[60, 10, 6, 4, 3, 3, 3, 6, 5])[0]
        chain = [rng.choice(EXT_HDRS + [44]) for _ in range(n_ext)]
        later = False
        # Build from the inside out so each header names the next.
        nxt = proto
        for h in reversed(chain):
            if h == 44:
                off = rng.choice([0, 0, rng.randrange(1, 8192)])
                later = later or off != 0
                exts = struct.pack("!BBHI", nxt, 0, (off << 3) | rng.randrange(2), 7) + exts
            elif h == 51:
                exts = struct.pack("!BB", nxt, 1) + bytes(10) + exts  # (1 + 2) * 4 = 12 bytes
            else:
                words = rng.choice([0, 0, 1])
                exts = struct.pack("!BB", nxt, words) + bytes(6 + 8 * words) + exts
            nxt = h
        nh_first = nxt
        body = exts + payload
        plen = len(body)
        if rng.random() < 0.04:
            plen = plen + rng.randrange(1, 60)
        ver = 6 if rng.random() < 0.97 else 4
        hdr = (
            struct.pack("!IHBB", ver << 28, plen & 0xFFFF, nh_first, 64)
            + src.to_bytes(16, "big")
            + dst.to_bytes(16, "big")
        )
        frame = _eth(rng, 0x86DD) + hdr + body
    if rng.random() < 0.05:
        # No shorter than an Ethernet header: the wire never carries less,
        # and BPF_PROG_TEST_RUN refuses such input for XDP.
        frame = frame[: rng.randrange(14, len(frame))]
    return frame


def frame_of(pkt: Packet) -> bytes:
    """A well-formed Ethernet frame carrying an IP packet's header fields (no fragments)."""
    if pkt.proto in (IPPROTO_TCP,):
        l4 = struct.pack("!HHIIBBHHH", pkt.sport, pkt.dport, 1, 0, 5 << 4, pkt.tcp_flags or 0, 1024, 0, 0)
    elif pkt.proto in (IPPROTO_UDP,):
        l4 = struct.pack("!HHHH", pkt.sport, pkt.dport, 8, 0)
    elif pkt.proto == IPPROTO_SCTP:
        l4 = struct.pack("!HHII", pkt.sport, pkt.dport, 0, 0)
    elif pkt.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        l4 = struct.pack("!BBHHH", pkt.icmp_type, pkt.icmp_code, 0, 1, 1)
    else:
        l4 = bytes(8)
    if pkt.family == 4:
        hdr = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 1, 0, 64, pkt.proto, 0, pkt.src, pkt.dst)
        return MAC_B + MAC_A + struct.pack("!H", 0x0800) + hdr + l4
    hdr = (
        struct.pack("!IHBB", 6 << 28, len(l4), pkt.proto, 64)
        + pkt.src.to_bytes(16, "big")
        + pkt.dst.to_bytes(16, "big")
    )
    return MAC_B + MAC_A + struct.pack("!H", 0x86DD) + hdr + l4
