"""One test case: what it sends, what it expects, and the packet and frame it makes.

A case is one packet (or one packet repeated, with gaps) and the outcome
expected for each send; `Case.packet()` is what the classifiers see and
`Case.frame()` the Ethernet frame the programs see.  The package's
docstring describes the cases file.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, replace
from typing import Any

from xdpguard.rules.compile import NSEC
from xdpguard.rules.model import (
    ICMP_PROTOS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_FLAG_BITS,
)
from xdpguard.rules.packet import IP, MALFORMED, NON_IP, Packet
from xdpguard.rules.parse import ICMP_TYPES, PROTO_NAMES

VERDICTS = ("allow", "drop")
# Reasons that are not rule names: what the programs count besides rules.
SPECIAL_REASONS = ("default", "malformed", "non_ip", "ndp", "blocked")
DIRECTIONS = ("ingress", "egress")

TOP_KEYS = ("cases",)
CASE_KEYS = (
    "name",
    "direction",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "icmp_type",
    "icmp_code",
    "state",
    "fragment",
    "length",
    "ethertype",
    "truncate",
    "repeat",
    "interval",
    "expect",
)
EXPECT_KEYS = ("verdict", "rule")
NON_IP_KEYS = frozenset({"name", "direction", "ethertype", "length", "expect", "repeat", "interval"})
# Packets one case may send: enough for any burst a test needs, few enough
# that --wire finishes in seconds.
MAX_REPEAT = 10_000
# The simulated clock's start (ns): the programs' test clock reads 0 as "no
# test clock", so the cases run at an arbitrary later instant.
CLOCK_START_NS = 10**12

# The source port of a case that gives none: an ephemeral port, as a client uses.
DEFAULT_SPORT = 40000
# Identifier of the ICMP echo requests and replies the cases build.
ICMP_ECHO_ID = 0x5847
# Frames are standard Ethernet: what BPF_PROG_TEST_RUN and a 1500-MTU veth carry.
MAX_FRAME = 1514
ETH_HLEN = 14
# The offset of a later fragment: the second 1480-byte piece of a datagram.
LATER_FRAGMENT_OFFSET = 1480 // 8
LATER_FRAGMENT_DATA = 8
IPV6_FRAG_HDR = 44
# IPv6 next-header values the parser walks through: not transport protocols.
IPV6_EXT_PROTOS = frozenset({0, 43, 44, 51, 60})
ETHERTYPES = {"arp": 0x0806, "lldp": 0x88CC}
IP_ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x8100: "an 802.1Q tag", 0x88A8: "an 802.1ad tag"}
L4_HEADER = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_SCTP: 12, IPPROTO_ICMP: 8, IPPROTO_ICMPV6: 8}
ECHO = {IPPROTO_ICMP: (8, 0), IPPROTO_ICMPV6: (128, 129)}  # (request, reply)
DEFAULT_SRC_MAC = "02:00:00:00:00:01"
DEFAULT_DST_MAC = "02:00:00:00:00:02"
_PAYLOAD = b"xdpguard test case "
# An SCTP INIT chunk (RFC 9260 3.3.2): type 1, flags, length 20, initiate tag,
# a_rwnd, outbound and inbound streams, initial TSN.
SCTP_INIT_CHUNK = struct.pack("!BBHIIHHI", 1, 0, 20, 0x58470002, 65536, 1, 1, 1)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Expect:
    """What one packet must get: a verdict, and the deciding rule if given."""

    verdict: str  # "allow" | "drop"
    rule: str | None  # a rule name or a SPECIAL_REASONS entry; None: any

    def __str__(self) -> str:
        return self.verdict + (f" by {self.rule}" if self.rule else "")

    def met_by(self, got: Outcome) -> bool:
        return got.verdict == self.verdict and (self.rule is None or got.rule == self.rule)


@dataclass(frozen=True)
class Case:
    """One sample packet (sent `repeat` times) and what the operator expects for it."""

    name: str
    line: int  # of the case in the cases file
    direction: str  # "ingress" | "egress"
    expects: tuple[Expect, ...]  # one per packet sent
    gaps: tuple[float, ...] = (0.0,)  # seconds before each packet (after the previous one)
    interval: float = 0.0  # the usual gap; a longer one comes from a `wait`
    family: int = 0  # 4, 6, or 0 for a non-IP frame
    src: IPAddress | None = None
    dst: IPAddress | None = None
    proto: int = 0
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    established: bool = False
    fragment: str | None = None  # None | "first" | "later"
    length: int | None = None  # frame bytes before truncation; None: headers only
    ethertype: int | None = None  # a non-IP frame of this type
    truncate: int | None = None  # cut the frame to this many bytes (malformed)
    opening: bool = False  # the opening packet of an established case (SCTP: carries an INIT)

    @property
    def repeat(self) -> int:
        return len(self.expects)

    @property
    def expect_rule(self) -> str | None:
        return self.expects[0].rule

    def offsets_ns(self) -> list[int]:
        """When each packet is sent, in ns after the case starts."""
        out, t = [], 0
        for gap in self.gaps:
            t += round(gap * NSEC)
            out.append(t)
        return out

    # ---- shape of the frame

    @property
    def is_ip(self) -> bool:
        return self.ethertype is None

    @property
    def later_fragment(self) -> bool:
        return self.fragment == "later"

    def header_length(self) -> int:
        """Bytes of the frame's headers (Ethernet, IP, fragment header, L4)."""
        if not self.is_ip:
            return ETH_HLEN
        n = ETH_HLEN + (20 if self.family == 4 else 40)
        if self.family == 6 and self.fragment is not None:
            n += 8
        if not self.later_fragment:
            n += L4_HEADER.get(self.proto, 0)
            if self.opening and self.proto == IPPROTO_SCTP:
                n += len(SCTP_INIT_CHUNK)
        return n

    def frame_length(self) -> int:
        """Length of the whole frame before truncation."""
        if self.length is not None:
            return self.length
        if not self.is_ip:
            return ETH_HLEN + (28 if self.ethertype == ETHERTYPES["arp"] else 46)
        return self.header_length() + (LATER_FRAGMENT_DATA if self.later_fragment else 0)

    # ---- what the classifiers see

    def packet(self, established: bool | None = None) -> Packet:
        """The packet `parse_frame(self.frame())` yields; `established` as the flow table would say."""
        if self.truncate is not None:
            return Packet(MALFORMED, self.truncate)
        n = self.frame_length()
        if not self.is_ip:
            return Packet(NON_IP, n)
        assert self.src is not None and self.dst is not None
        return Packet(
            IP,
            n,
            self.family,
            int(self.src),
            int(self.dst),
            self.proto,
            self.later_fragment,
            sport=self.sport,
            dport=self.dport,
            tcp_flags=self.tcp_flags,
            icmp_type=self.icmp_type,
            icmp_code=self.icmp_code,
            established=self.established if established is None else established,
        )

    def opener(self) -> Case | None:
        """The egress packet that opens this case's flow (state: established), else None."""
        if not self.established:
            return None
        icmp_type = None
        if self.proto in ICMP_PROTOS:
            icmp_type = ECHO[self.proto][0]
        return replace(
            self,
            name=f"{self.name} (opening packet)",
            direction="egress",
            src=self.dst,
            dst=self.src,
            sport=self.dport,
            dport=self.sport,
            tcp_flags=TCP_FLAG_BITS["syn"] if self.proto == IPPROTO_TCP else None,
            icmp_type=icmp_type,
            icmp_code=0 if icmp_type is not None else None,
            established=False,
            length=None,
            truncate=None,
            opening=True,
        )

    def frame(self, src_mac: str = DEFAULT_SRC_MAC, dst_mac: str = DEFAULT_DST_MAC) -> bytes:
        """The raw Ethernet frame of this case (valid checksums, truncated if asked)."""
        return _build_frame(self, src_mac, dst_mac)

    def summary(self) -> str:
        """The packet in one line, e.g. `tcp 198.51.100.7:40000 > 192.0.2.10:443 [syn]`."""
        if not self.is_ip:
            names = {v: k for k, v in ETHERTYPES.items()}
            text = (
                f"{names[self.ethertype]} frame"
                if self.ethertype in names
                else f"ethertype {self.ethertype:#06x}"
            )
            return text + (f", {self.length} bytes" if self.length is not None else "")
        assert self.src is not None and self.dst is not None
        proto = proto_name(self.proto)
        if self.sport is not None and self.dport is not None:
            text = f"{proto} {_hostport(self.src, self.sport)} > {_hostport(self.dst, self.dport)}"
        else:
            text = f"{proto} {self.src} > {self.dst}"
        if self.tcp_flags is not None:
            text += f" [{_flag_names(self.tcp_flags)}]"
        if self.icmp_type is not None:
            text += f" {_icmp_name(self.proto, self.icmp_type)}"
            if self.icmp_code:
                text += f" code {self.icmp_code}"
        extras = []
        if self.fragment is not None:
            extras.append(f"{self.fragment} fragment")
        if self.established:
            extras.append("established")
        if self.length is not None:
            extras.append(f"{self.length} bytes")
        if self.truncate is not None:
            extras.append(f"truncated to {self.truncate} bytes")
        return text + (f" ({', '.join(extras)})" if extras else "")

    def expected(self) -> str:
        """`allow by web`; for several packets the run, e.g. `allow x5, drop by ssh-guard`."""
        return _runs([str(e) for e in self.expects], self.gaps, self.interval)


@dataclass(frozen=True)
class Outcome:
    """What a case got: the verdict, the rule (or special reason) that decided, and why, if unusual."""

    verdict: str  # "allow" | "drop"
    rule: str
    note: str = ""

    def __str__(self) -> str:
        return f"{self.verdict} by {self.rule}"


@dataclass(frozen=True)
class Result:
    case: Case
    gots: tuple[Outcome, ...]  # one per packet sent

    @property
    def ok(self) -> bool:
        return self.first_miss is None

    @property
    def first_miss(self) -> int | None:
        """Index of the first packet that did not get what was expected."""
        for i, (e, g) in enumerate(zip(self.case.expects, self.gots, strict=True)):
            if not e.met_by(g):
                return i
        return None

    @property
    def got(self) -> Outcome:
        """The outcome to show: the first packet that went wrong, else the first."""
        miss = self.first_miss
        return self.gots[0 if miss is None else miss]

    def got_text(self) -> str:
        return _runs([str(g) for g in self.gots], self.case.gaps, self.case.interval)

    def to_json(self) -> dict[str, Any]:
        c = self.case
        i = self.first_miss or 0
        out: dict[str, Any] = {
            "name": c.name,
            "line": c.line,
            "direction": c.direction,
            "packet": c.summary(),
            "expect": {"verdict": c.expects[i].verdict, "rule": c.expects[i].rule},
            "got": {"verdict": self.gots[i].verdict, "rule": self.gots[i].rule},
            "note": self.gots[i].note or None,
            "ok": self.ok,
        }
        if c.repeat > 1:
            out["repeat"] = c.repeat
            out["first_failed_packet"] = None if self.first_miss is None else self.first_miss + 1
            out["packets"] = [
                {
                    "at": t / NSEC,
                    "expect": {"verdict": e.verdict, "rule": e.rule},
                    "got": {"verdict": g.verdict, "rule": g.rule},
                    "note": g.note or None,
                    "ok": e.met_by(g),
                }
                for t, e, g in zip(c.offsets_ns(), c.expects, self.gots, strict=True)
            ]
        return out

    def diff(self, path: str) -> list[str]:
        """A failed case as a small diff: what was expected, what came."""
        c = self.case
        lines = [f"FAIL {c.name} ({path}:{c.line})", f"     {c.direction} {c.summary()}"]
        if c.repeat > 1:
            lines.append(f"     packet {(self.first_miss or 0) + 1} of {c.repeat} is the first that differs")
            lines += [f"  -  expected: {c.expected()}", f"  +  got:      {self.got_text()}"]
        else:
            lines += [f"  -  expected: {c.expected()}", f"  +  got:      {self.got}"]
        if self.got.note:
            lines.append(f"     note: {self.got.note}")
        return lines


def _runs(items: list[str], gaps: tuple[float, ...], interval: float) -> str:
    """`allow by web x5, drop by guard, wait 10m, allow by web`: equal neighbours
    counted, a gap longer than the interval shown as the wait it came from."""
    parts: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        extra = gaps[i] - interval if i else 0.0
        if extra > 1e-9:
            parts.append((f"wait {_duration(extra)}", 1))
        elif parts and parts[-1][0] == item:
            parts[-1] = (item, parts[-1][1] + 1)
            continue
        parts.append((item, 1))
    return ", ".join(text if n == 1 else f"{text} x{n}" for text, n in parts)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --------------------------------------------------------------------------
# Frames


def _build_frame(case: Case, src_mac: str, dst_mac: str) -> bytes:
    macs = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    total = case.frame_length()
    if not case.is_ip:
        assert case.ethertype is not None
        body = b""
        if case.ethertype == ETHERTYPES["arp"]:
            # who-has 0.0.0.0, from the sender's MAC: an ARP probe.
            body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + macs[6:] + bytes(4) + bytes(6) + bytes(4)
        frame = macs + struct.pack("!H", case.ethertype) + body
        frame = (frame + bytes(max(0, total - len(frame))))[:total]
        return frame[: case.truncate] if case.truncate is not None else frame

    assert case.src is not None and case.dst is not None
    src, dst = case.src.packed, case.dst.packed
    payload = _fill(total - case.header_length())
    if case.later_fragment:
        datagram = payload
    else:
        datagram = _l4(case, src, dst, payload)
    if case.family == 4:
        frag = 0
        if case.fragment == "first":
            frag = 0x2000  # more fragments, offset 0
        elif case.later_fragment:
            frag = LATER_FRAGMENT_OFFSET
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(datagram), ICMP_ECHO_ID, frag, 64, case.proto, 0,
                          src, dst)  # fmt: skip
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        frame = macs + b"\x08\x00" + hdr + datagram
    else:
        nh = case.proto
        if case.fragment is not None:
            offset, more = (0, 1) if case.fragment == "first" else (LATER_FRAGMENT_OFFSET, 0)
            datagram = struct.pack("!BBHI", case.proto, 0, (offset << 3) | more, ICMP_ECHO_ID) + datagram
            nh = IPV6_FRAG_HDR
        hdr = struct.pack("!IHBB16s16s", 0x60000000, len(datagram), nh, 64, src, dst)
        frame = macs + b"\x86\xdd" + hdr + datagram
    assert len(frame) == total, (len(frame), total)
    return frame[: case.truncate] if case.truncate is not None else frame


def _fill(n: int) -> bytes:
    return (_PAYLOAD * (n // len(_PAYLOAD) + 1))[:n]


def _l4(case: Case, src: bytes, dst: bytes, payload: bytes) -> bytes:
    p = case.proto
    if p == IPPROTO_TCP:
        assert case.sport is not None and case.dport is not None and case.tcp_flags is not None
        ack = 1 if case.tcp_flags & TCP_FLAG_BITS["ack"] else 0
        seg = struct.pack("!HHIIBBHHH", case.sport, case.dport, 1, ack, 5 << 4, case.tcp_flags, 65535, 0, 0)
        seg += payload
        return seg[:16] + struct.pack("!H", _checksum(_pseudo(case, src, dst, len(seg)) + seg)) + seg[18:]
    if p == IPPROTO_UDP:
        assert case.sport is not None and case.dport is not None
        seg = struct.pack("!HHHH", case.sport, case.dport, 8 + len(payload), 0) + payload
        csum = _checksum(_pseudo(case, src, dst, len(seg)) + seg) or 0xFFFF
        return seg[:6] + struct.pack("!H", csum) + seg[8:]
    if p == IPPROTO_SCTP:
        assert case.sport is not None and case.dport is not None
        if case.opening:
            payload = SCTP_INIT_CHUNK + payload  # what opens an association, and with it a flow
        seg = struct.pack("!HHII", case.sport, case.dport, 0x58470001, 0) + payload
        # RFC 9260 appendix A: the CRC32c goes into the packet least significant byte first.
        return seg[:8] + struct.pack("<I", _crc32c(seg)) + seg[12:]
    if p in ICMP_PROTOS:
        assert case.icmp_type is not None and case.icmp_code is not None
        rest = struct.pack("!HH", ICMP_ECHO_ID, 1) if case.icmp_type in ECHO[p] else bytes(4)
        msg = struct.pack("!BBH", case.icmp_type, case.icmp_code, 0) + rest + payload
        covered = msg if p == IPPROTO_ICMP else _pseudo(case, src, dst, len(msg)) + msg
        return msg[:2] + struct.pack("!H", _checksum(covered)) + msg[4:]
    return payload


def _pseudo(case: Case, src: bytes, dst: bytes, length: int) -> bytes:
    if case.family == 4:
        return src + dst + struct.pack("!BBH", 0, case.proto, length)
    return src + dst + struct.pack("!I3xB", length, case.proto)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------
# Display helpers


def proto_name(proto: int) -> str:
    for name, number in PROTO_NAMES.items():
        if number == proto:
            return name
    return f"proto {proto}"


def _hostport(addr: IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _flag_names(flags: int) -> str:
    return ",".join(n for n, b in TCP_FLAG_BITS.items() if flags & b) or "none"


def _icmp_name(proto: int, icmp_type: int) -> str:
    for name, number in ICMP_TYPES.get(proto, {}).items():
        if number == icmp_type:
            return name
    return f"type {icmp_type}"
