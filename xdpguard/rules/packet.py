"""What the classifiers see of a frame, and a frame parser that mirrors the BPF one.

`parse_frame` follows bpf/lib/parse.h (`xg_parse`) step for step (same
bounds, same notion of malformed), so a differential test can hand the
same bytes to the kernel and to the Python classifiers.  (The parser also
notes an SCTP packet's first chunk, which only decides whether egress
records a flow; classification never looks at it, so it has no field here.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from xdpguard.rules.abi_consts import MAX_EXT_HDRS, MAX_VLAN_TAGS, NDP_FIRST, NDP_LAST, TCP_ACK, TCP_SYN
from xdpguard.rules.fields import icmp_key
from xdpguard.rules.model import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
# IPv6 extension headers; AH (51) is walked in IPv4 too.
IPV6_EXT_HOP, IPV6_EXT_ROUTING, IPV6_EXT_FRAG, IPV6_EXT_AH, IPV6_EXT_DSTOPTS = 0, 43, 44, 51, 60
NDP_TYPES = range(NDP_FIRST, NDP_LAST + 1)
ECHO_REPLIES = {(IPPROTO_ICMP, 0), (IPPROTO_ICMPV6, 129)}  # the only ICMP that answers our flows

MALFORMED = "malformed"
NON_IP = "non_ip"
IP = "ip"


@dataclass(frozen=True)
class Packet:
    """A frame as the classifiers see it.  The keys of the match fields
    (rules/fields.py) are None when the packet has none: the parser sets
    sport and dport together, tcp_flags for TCP only, icmp_type and
    icmp_code together."""

    kind: str  # IP | NON_IP | MALFORMED
    length: int = 0
    family: int = 0
    src: int = 0
    dst: int = 0
    proto: int = 0
    later_fragment: bool = False  # a non-first fragment: no L4 header
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    established: bool = False  # a flow of this host's matches it (state: established)

    @property
    def has_l4(self) -> bool:
        return self.sport is not None or self.icmp_type is not None

    @property
    def icmp_key(self) -> int | None:
        """The ICMP field's key (rules/fields.py), or None for a packet without ICMP header."""
        if self.icmp_type is None or self.icmp_code is None:
            return None
        return icmp_key(self.proto == IPPROTO_ICMPV6, self.icmp_type, self.icmp_code)

    @property
    def in_flow(self) -> bool:
        """`established` as the data plane sees it (bpf/lib/flow.h): only a
        packet that can answer a connection this host opened is looked up,
        so a TCP SYN without ACK, ICMP other than an echo reply and a later
        fragment are new whatever flows exist."""
        if not self.established or self.later_fragment:
            return False
        if self.sport is not None:
            syn_only = self.proto == IPPROTO_TCP and (self.tcp_flags or 0) & (TCP_SYN | TCP_ACK) == TCP_SYN
            return not syn_only
        return (self.proto, self.icmp_type) in ECHO_REPLIES

    @property
    def is_ndp(self) -> bool:
        return (
            self.kind == IP
            and self.family == 6
            and self.proto == IPPROTO_ICMPV6
            and self.icmp_type is not None
            and self.icmp_type in NDP_TYPES
        )


def parse_frame(data: bytes) -> Packet:
    n = len(data)
    bad = Packet(MALFORMED, n)
    if n < 14:
        return bad
    off = 12
    (etype,) = struct.unpack_from("!H", data, off)
    off += 2
    for _ in range(MAX_VLAN_TAGS):
        if etype not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        if off + 4 > n:
            return bad
        (etype,) = struct.unpack_from("!H", data, off + 2)
        off += 4
    if etype in (ETH_P_8021Q, ETH_P_8021AD):
        return bad  # a third tag: more than the parser follows
    if etype == ETH_P_IP:
        return _parse_ipv4(data, off)
    if etype == ETH_P_IPV6:
        return _parse_ipv6(data, off)
    return Packet(NON_IP, n)


def _parse_ipv4(data: bytes, off: int) -> Packet:
    n = len(data)
    bad = Packet(MALFORMED, n)
    if off + 20 > n:
        return bad
    vihl = data[off]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or off + ihl > n:
        return bad
    (tot_len,) = struct.unpack_from("!H", data, off + 2)
    if tot_len < ihl or off + tot_len > n:
        return bad
    (frag,) = struct.unpack_from("!H", data, off + 6)
    proto = data[off + 9]
    src = int.from_bytes(data[off + 12 : off + 16], "big")
    dst = int.from_bytes(data[off + 16 : off + 20], "big")
    later = (frag & 0x1FFF) != 0
    base = Packet(IP, n, 4, src, dst, proto, later)
    if later:
        return base
    # AH is walked as in IPv6: the rules see the protocol and ports it carries.
    end = off + tot_len
    cur = off + ihl
    for _ in range(MAX_EXT_HDRS):
        if proto != IPV6_EXT_AH:
            break
        if cur + 8 > end:
            return bad
        hlen = (data[cur + 1] + 2) * 4
        if cur + hlen > end:
            return bad
        proto = data[cur]
        cur += hlen
    if proto == IPV6_EXT_AH:
        return bad  # deeper chain than the parser follows
    return _parse_l4(data, cur, end, Packet(IP, n, 4, src, dst, proto, False))


def _parse_ipv6(data: bytes, off: int) -> Packet:
    n = len(data)
    bad = Packet(MALFORMED, n)
    if off + 40 > n:
        return bad
    if data[off] >> 4 != 6:
        return bad
    (plen,) = struct.unpack_from("!H", data, off + 4)
    end = off + 40 + plen
    if end > n:
        return bad
    nh = data[off + 6]
    src = int.from_bytes(data[off + 8 : off + 24], "big")
    dst = int.from_bytes(data[off + 24 : off + 40], "big")
    cur = off + 40
    for _ in range(MAX_EXT_HDRS):
        if nh in (IPV6_EXT_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DSTOPTS, IPV6_EXT_AH):
            if cur + 8 > end:
                return bad
            hlen = (data[cur + 1] + 2) * 4 if nh == IPV6_EXT_AH else (data[cur + 1] + 1) * 8
            if cur + hlen > end:
                return bad
            nh = data[cur]
            cur += hlen
        elif nh == IPV6_EXT_FRAG:
            if cur + 8 > end:
                return bad
            (fo,) = struct.unpack_from("!H", data, cur + 2)
            nh = data[cur]
            cur += 8
            if fo >> 3:
                return Packet(IP, n, 6, src, dst, nh, True)
        else:
            break
    else:
        if nh in (IPV6_EXT_HOP, IPV6_EXT_ROUTING, IPV6_EXT_DSTOPTS, IPV6_EXT_AH, IPV6_EXT_FRAG):
            return bad  # deeper chain than the parser follows
    return _parse_l4(data, cur, end, Packet(IP, n, 6, src, dst, nh, False))


def _parse_l4(data: bytes, off: int, end: int, p: Packet) -> Packet:
    bad = Packet(MALFORMED, p.length)
    proto = p.proto
    if proto == IPPROTO_TCP:
        if off + 20 > end or (data[off + 12] >> 4) < 5:
            return bad
        sport, dport = struct.unpack_from("!HH", data, off)
        return _with(p, sport=sport, dport=dport, tcp_flags=data[off + 13])
    if proto in (IPPROTO_UDP, IPPROTO_SCTP):
        need = 8 if proto == IPPROTO_UDP else 12
        if off + need > end:
            return bad
        sport, dport = struct.unpack_from("!HH", data, off)
        return _with(p, sport=sport, dport=dport)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if off + 8 > end:
            return bad
        return _with(p, icmp_type=data[off], icmp_code=data[off + 1])
    return p


def _with(p: Packet, **kw: int) -> Packet:
    return replace(p, **kw)  # type: ignore[arg-type]
