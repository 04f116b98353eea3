"""Sample packets with the verdict an operator expects: reading and checking a cases file.

`xdpguard test RULES CASES` reads a YAML list of packets, each with the
verdict (and optionally the deciding rule) it must get, and checks them.
This module holds the parts that need neither root nor a kernel: parsing
the cases file into `Case`s (with `file:line` errors, like the rule
parser), turning a case into the `Packet` the classifiers see and into the
raw Ethernet frame the BPF programs see (the two agree: `parse_frame` of
the frame is the packet), and checking cases against the compiled plan with
the classifier that mirrors the BPF program.  datapath/casekernel.py runs
the same cases through the real programs.

The file is `cases:` and a list of mappings with `expect: {verdict:
allow|drop, rule: NAME}` (rule optional; besides rule names: default,
malformed, non_ip, ndp, blocked; `expect: drop` is short for a verdict
alone) and:
`name`, `direction` (ingress), `src`, `dst`, `proto` (implied by tcp_flags
or icmp_type), `sport` (40000), `dport`, `tcp_flags` ("syn,ack", "none";
syn, or ack when established), `icmp_type`/`icmp_code` (0), `state` (new),
`fragment` (first|later), `length` (frame bytes, at most 1514); or, for a
non-IP frame, `ethertype` (arp, lldp or a number); `truncate: N` cuts an IP
frame to N bytes, which makes it malformed.

Rate limits and blocks need a packet more than once: `repeat: N` sends
the packet N times, `interval` apart (a duration; default 0, back to
back), and `expect` may then be a list with one expectation per packet:
`[allow x5, drop by ssh-guard, wait 10m, allow]` ("VERDICT [by RULE]
[xN]", or "wait DURATION" to let time pass before the next packet).  The
time is simulated: the plan check runs the limits on a model of the
programs' buckets and blocks (rules/ratesim.py), and --kernel/--wire set
the programs' test clock to the same instants.

A case that says `state: established` means "the host opened this flow":
its opening packet (addresses and ports swapped: a TCP SYN, an SCTP INIT,
an echo request, or a UDP datagram from a connected socket) goes through
the egress rules, and the flow exists only if egress lets it out, exactly
as in the kernel, where only the egress program records flows.  Every case starts from an empty
flow table and full rate-limit buckets, so cases never influence each other.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from xdpguard.errors import RuleError
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import NSEC, Plan
from xdpguard.rules.model import (
    ICMP_PROTOS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PORT_PROTOS,
    TCP_FLAG_BITS,
    RuleSet,
)
from xdpguard.rules.packet import IP, MALFORMED, NON_IP, Packet
from xdpguard.rules.parse import (
    ICMP_TYPES,
    PROTO_NAMES,
    _did_you_mean,
    _is_int,
    _load_yaml,
    _Map,
    _Seq,
    _show,
    parse_duration,
)
from xdpguard.rules.ratesim import LimiterSim
from xdpguard.rules.reference import PASS

__all__ = [
    "Case",
    "Expect",
    "Outcome",
    "Result",
    "count",
    "load_cases",
    "parse_cases_text",
    "run_plan",
    "judge",
    "plan_outcomes",
    "plan_runs",
    "junit_xml",
]

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
_EXPECT_ITEM_RE = re.compile(r"(allow|drop)(?:\s+by\s+(\S+))?(?:\s+x\s*([0-9]+))?")
_WAIT_RE = re.compile(r"wait\s+(\S.*)")

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
        proto = _proto_name(self.proto)
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
# Checking with the compiled plan


def verdict_word(action: str) -> str:
    """reference.PASS / DROP as the cases file spells them."""
    return "allow" if action == PASS else "drop"


def plan_runs(plan: Plan, cases: list[Case]) -> list[tuple[Outcome, ...]]:
    """Each case's packets classified by the compiled plan, the way the BPF programs classify.

    Every case gets a fresh simulated limiter (full buckets, nothing
    blocked) whose clock moves by the case's gaps.
    """
    clf = PlanClassifier(plan)
    out = []
    for case in cases:
        sim = LimiterSim(now_ns=CLOCK_START_NS)
        note = ""
        established = False
        opener = case.opener()
        if opener is not None:
            ov = clf.classify("egress", opener.packet(), sim)
            established = ov.action == PASS
            if not established:
                note = _no_flow_note(ov.reason)
        pkt = case.packet(established)
        run = []
        for t in case.offsets_ns():
            sim.now_ns = CLOCK_START_NS + t
            v = clf.classify(case.direction, pkt, sim)
            run.append(Outcome(verdict_word(v.action), v.reason, OVER_NOTE if v.over else note))
        out.append(tuple(run))
    return out


def plan_outcomes(plan: Plan, cases: list[Case]) -> list[Outcome]:
    """The first packet's outcome of each case (all there is for a single-packet case)."""
    return [run[0] for run in plan_runs(plan, cases)]


OVER_NOTE = "over its rate limit"


def _no_flow_note(reason: str) -> str:
    by = "the egress default" if reason == "default" else f"egress rule {reason}"
    return f"no flow: {by} drops the opening packet, so the host never sent it"


def run_plan(plan: Plan, cases: list[Case]) -> list[Result]:
    return judge(cases, plan_runs(plan, cases))


def judge(cases: list[Case], runs: list[tuple[Outcome, ...]]) -> list[Result]:
    return [Result(c, tuple(r)) for c, r in zip(cases, runs, strict=True)]


def junit_xml(results: list[Result], rules: str, cases: str, mode: str, seconds: float) -> bytes:
    """The results as a JUnit XML report: one testsuite, one testcase per case.

    The shape CI systems read (Jenkins, GitLab, the GitHub actions that
    publish test reports): `<testsuites><testsuite name tests failures
    errors skipped time><properties/><testcase classname name file line
    time>[<failure message type>diff</failure>]</testcase></testsuite>`.
    """
    from xml.etree import ElementTree as ET

    _, failed = count(results)
    per_case = f"{seconds / max(1, len(results)):.6f}"
    suites = ET.Element("testsuites", tests=str(len(results)), failures=str(failed), errors="0")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"xdpguard test {cases}",
        tests=str(len(results)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{seconds:.6f}",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("rules", rules), ("cases", cases), ("mode", mode)):
        ET.SubElement(props, "property", name=name, value=value)
    for r in results:
        c = r.case
        tc = ET.SubElement(
            suite,
            "testcase",
            classname=f"{cases}:{c.direction}",
            name=c.name,
            file=cases,
            line=str(c.line),
            time=per_case,
        )
        if r.ok:
            ET.SubElement(tc, "system-out").text = f"{c.direction} {c.summary()}: {r.got_text()}\n"
            continue
        i = r.first_miss or 0
        where = f"packet {i + 1} of {c.repeat}: " if c.repeat > 1 else ""
        got = r.gots[i]
        note = f" ({got.note})" if got.note else ""
        failure = ET.SubElement(
            tc, "failure", type="VerdictMismatch", message=f"{where}expected {c.expects[i]}, got {got}{note}"
        )
        failure.text = "\n".join(r.diff(cases)) + "\n"
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


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


def _proto_name(proto: int) -> str:
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


# --------------------------------------------------------------------------
# Parsing


class _CaseParser:
    """One cases file, checked against the rule set it tests (rule names must exist)."""

    def __init__(self, path: str, rs: RuleSet) -> None:
        self.path = path
        self.rule_names = {
            "ingress": [r.name for r in rs.ingress.rules],
            "egress": [r.name for r in rs.egress.rules],
        }
        self.names: dict[str, int] = {}

    def fail(self, line: int, message: str) -> NoReturn:
        raise RuleError(self.path, line, message)

    def check_keys(self, mp: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in mp:
            if key not in allowed:
                hint = _did_you_mean(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.fail(mp.key_lines[key], f"unknown key {_show(key)} {where}{hint}")

    def choice(self, mp: _Map, key: str, choices: tuple[str, ...], default: str) -> str:
        if key not in mp:
            return default
        value = mp[key]
        if not isinstance(value, str) or value not in choices:
            hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
            self.fail(mp.value_lines[key], f"{key}: {_show(value)} must be {' or '.join(choices)}{hint}")
        return value

    def number(self, mp: _Map, key: str, lo: int, hi: int, what: str) -> int:
        value = mp[key]
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if not _is_int(value):
            self.fail(mp.value_lines[key], f"{key}: {_show(value)} is not {what}")
        if not lo <= value <= hi:
            self.fail(mp.value_lines[key], f"{key}: {value} is out of range ({lo}-{hi})")
        return int(value)

    # ---- the file

    def cases(self, doc: Any) -> list[Case]:
        if doc is None:
            self.fail(1, "the cases file is empty (it needs `cases:` with a list of packets)")
        if not isinstance(doc, _Map):
            line = doc.line if isinstance(doc, _Seq) else 1
            self.fail(line, f"the cases file must be a mapping with `cases:`, got {_show(doc)}")
        self.check_keys(doc, TOP_KEYS, "at the top level")
        if "cases" not in doc:
            self.fail(doc.line, 'missing "cases" (a list of packets with the verdict each must get)')
        items = doc["cases"]
        if not isinstance(items, _Seq):
            self.fail(doc.value_lines["cases"], f"cases: expected a list of cases, got {_show(items)}")
        if not items:
            self.fail(doc.value_lines["cases"], "cases: the list is empty (give at least one case)")
        return [
            self.case(item, line, i) for i, (item, line) in enumerate(zip(items, items.lines, strict=True))
        ]

    def case(self, mp: Any, line: int, index: int) -> Case:
        if not isinstance(mp, _Map):
            self.fail(line, f"a case must be a mapping (src, dst, proto, ..., expect), got {_show(mp)}")
        self.check_keys(mp, CASE_KEYS, "in case")
        vl = mp.value_lines

        name = f"#{index + 1}"
        if "name" in mp:
            value = mp["name"]
            if not isinstance(value, str) or not value.strip() or len(value) > 80:
                self.fail(
                    vl["name"], f"name: {_show(value)} must be a non-empty string of at most 80 characters"
                )
            name = value.strip()
            if name in self.names:
                self.fail(
                    vl["name"], f"name: {_show(name)} is already used by the case at line {self.names[name]}"
                )
            self.names[name] = vl["name"]

        direction = self.choice(mp, "direction", DIRECTIONS, "ingress")
        expects, gaps, interval = self.expectations(mp, direction)
        base = Case(
            name=name, line=mp.line, direction=direction, expects=expects, gaps=gaps, interval=interval
        )

        if "ethertype" in mp:
            case = self.non_ip(mp, base)
        else:
            case = self.ip(mp, base)
        if "length" in mp:
            need = case.header_length() + (LATER_FRAGMENT_DATA if case.later_fragment else 0)
            length = self.number(mp, "length", 0, MAX_FRAME, "a frame length in bytes")
            if length < need:
                self.fail(
                    vl["length"],
                    f"length: {length} is shorter than this packet's headers "
                    f"({need} bytes, Ethernet included)",
                )
            case = replace(case, length=length)
        if "truncate" in mp:
            if not case.is_ip:
                self.fail(
                    vl["truncate"], "truncate: makes an IP packet malformed; a non-IP frame has no IP header"
                )
            full = case.frame_length()
            cut = self.number(mp, "truncate", 0, MAX_FRAME, "a number of bytes")
            if not ETH_HLEN <= cut < full:
                self.fail(
                    vl["truncate"],
                    f"truncate: {cut} must cut the {full}-byte frame and keep the "
                    f"{ETH_HLEN}-byte Ethernet header ({ETH_HLEN}-{full - 1})",
                )
            case = replace(case, truncate=cut)
        return case

    def expectations(self, mp: _Map, direction: str) -> tuple[tuple[Expect, ...], tuple[float, ...], float]:
        """Per packet: what it must get and the seconds before it; and the interval."""
        if "expect" not in mp:
            self.fail(mp.line, 'case has no "expect" (e.g. expect: {verdict: drop, rule: default})')
        vl = mp.value_lines
        interval = 0.0
        if "interval" in mp:
            try:
                interval = parse_duration(mp["interval"])
            except ValueError as e:
                self.fail(vl["interval"], f"interval: {e}")
        repeat = None
        if "repeat" in mp:
            repeat = self.number(mp, "repeat", 1, MAX_REPEAT, "a number of packets")
        value, line = mp["expect"], vl["expect"]
        if not isinstance(value, _Seq):
            one = self.expect(value, line, direction)
            n = repeat or 1
            return (one,) * n, (0.0,) + (interval,) * (n - 1), interval
        expects: list[Expect] = []
        gaps: list[float] = []
        pending_wait = 0.0
        for item, iline in zip(value, value.lines, strict=True):
            if isinstance(item, str) and (m := _WAIT_RE.fullmatch(item.strip())):
                try:
                    pending_wait += parse_duration(m.group(1))
                except ValueError as e:
                    self.fail(iline, f"expect: {_show(item)}: {e}")
                continue
            one, times = self.expect_item(item, iline, direction)
            for _ in range(times):
                gaps.append((interval if expects else 0.0) + pending_wait)
                expects.append(one)
                pending_wait = 0.0
        if not expects:
            self.fail(line, "expect: the list names no packet (e.g. [allow x5, drop])")
        if pending_wait:
            self.fail(value.lines[-1], "expect: a wait at the end of the list waits for nothing")
        if repeat is not None and repeat != len(expects):
            self.fail(
                vl["repeat"],
                f"repeat: {repeat}, but the expect list names {len(expects)} packet"
                f"{'' if len(expects) == 1 else 's'} (give one expectation per packet, or leave repeat out)",
            )
        if len(expects) > MAX_REPEAT:
            self.fail(line, f"expect: {len(expects)} packets are more than {MAX_REPEAT} for one case")
        return tuple(expects), tuple(gaps), interval

    def expect_item(self, item: Any, line: int, direction: str) -> tuple[Expect, int]:
        """One entry of an expect list: `allow`, `drop by RULE x3`, or a mapping; with its count."""
        if isinstance(item, str):
            m = _EXPECT_ITEM_RE.fullmatch(item.strip())
            if m is None:
                self.fail(
                    line,
                    f"expect: {_show(item)} is not VERDICT [by RULE] [xN] or wait DURATION "
                    '(e.g. "allow x5", "drop by ssh-guard", "wait 10m")',
                )
            verdict, rule, times = m.group(1), m.group(2), int(m.group(3) or 1)
            if not 1 <= times <= MAX_REPEAT:
                self.fail(line, f"expect: {_show(item)}: x{times} is out of range (1-{MAX_REPEAT})")
            if rule is not None:
                self.check_rule(rule, line, direction)
            return Expect(verdict, rule), times
        if isinstance(item, _Map):
            return self.expect(item, line, direction), 1
        self.fail(line, f"expect: {_show(item)} is not an expectation (e.g. allow, drop by ssh-guard x3)")

    def expect(self, value: Any, line: int, direction: str) -> Expect:
        if isinstance(value, str):
            if value not in VERDICTS:
                self.fail(
                    line, f"expect: {_show(value)} must be allow or drop{_did_you_mean(value, VERDICTS)}"
                )
            return Expect(value, None)
        if not isinstance(value, _Map):
            self.fail(
                line,
                f"expect: expected {{verdict: allow|drop, rule: NAME}} or a list of them, got {_show(value)}",
            )
        self.check_keys(value, EXPECT_KEYS, "in expect")
        if "verdict" not in value:
            self.fail(value.line, 'expect has no "verdict" (allow or drop)')
        verdict = self.choice(value, "verdict", VERDICTS, "allow")
        rule = None
        if "rule" in value:
            rule = value["rule"]
            rline = value.value_lines["rule"]
            if not isinstance(rule, str):
                self.fail(
                    rline, f"rule: {_show(rule)} must be a rule name or one of {', '.join(SPECIAL_REASONS)}"
                )
            self.check_rule(rule, rline, direction)
        return Expect(verdict, rule)

    def check_rule(self, rule: str, line: int, direction: str) -> None:
        known = [*self.rule_names[direction], *SPECIAL_REASONS]
        if rule not in known:
            other = "egress" if direction == "ingress" else "ingress"
            if rule in self.rule_names[other]:
                hint = f" (it is an {other} rule: add `direction: {other}`?)"
            else:
                hint = _did_you_mean(rule, known) or f" ({direction} rules: {', '.join(known)})"
            self.fail(line, f"rule: {_show(rule)} is not an {direction} rule of the rule file{hint}")

    def non_ip(self, mp: _Map, base: Case) -> Case:
        for key in mp:
            if key not in NON_IP_KEYS and key != "truncate":
                self.fail(mp.key_lines[key], f"{key}: a non-IP frame (ethertype) has no {key}")
        value = mp["ethertype"]
        line = mp.value_lines["ethertype"]
        if isinstance(value, str) and value.strip().lower() in ETHERTYPES:
            etype = ETHERTYPES[value.strip().lower()]
        else:
            etype = -1
            if _is_int(value):
                etype = value
            elif isinstance(value, str):
                try:
                    etype = int(value.strip(), 0)
                except ValueError:
                    etype = -1
            if etype < 0:
                names = ", ".join(ETHERTYPES)
                self.fail(line, f"ethertype: {_show(value)} is not {names} or a number (e.g. 0x88b5)")
            if etype in IP_ETHERTYPES:
                self.fail(
                    line,
                    f"ethertype: {etype:#06x} is {IP_ETHERTYPES[etype]}: "
                    "describe IP packets with src and dst instead",
                )
            if not 0x0600 <= etype <= 0xFFFF:
                self.fail(line, f"ethertype: {_show(value)} is out of range (0x0600-0xffff)")
        return replace(base, ethertype=etype)

    def address(self, mp: _Map, key: str) -> IPAddress:
        if key not in mp:
            self.fail(
                mp.line, f'case has no "{key}" (an IPv4 or IPv6 address; or ethertype for a non-IP frame)'
            )
        value = mp[key]
        line = mp.value_lines[key]
        if not isinstance(value, str):
            hint = " (quote IPv6 addresses)" if _is_int(value) else ""
            self.fail(line, f"{key}: {_show(value)} is not an IP address{hint}")
        try:
            return ipaddress.ip_address(value.strip())
        except ValueError:
            if "/" in value:
                self.fail(line, f"{key}: {_show(value)} is a network: a case is one packet, give one address")
            self.fail(line, f"{key}: {_show(value)} is not an IPv4 or IPv6 address")

    def ip(self, mp: _Map, base: Case) -> Case:
        vl = mp.value_lines
        src = self.address(mp, "src")
        dst = self.address(mp, "dst")
        if src.version != dst.version:
            self.fail(vl["dst"], f"dst: {_show(mp['dst'])} is IPv{dst.version} but src is IPv{src.version}")
        family = src.version

        fragment = None
        if "fragment" in mp:
            fragment = self.choice(mp, "fragment", ("first", "later"), "first")
        later = fragment == "later"

        proto = self.proto(mp, family)
        if later:
            for key in ("sport", "dport", "tcp_flags", "icmp_type", "icmp_code"):
                if key in mp:
                    self.fail(
                        vl[key],
                        f"{key}: a later fragment carries no {'TCP/UDP/SCTP or ICMP'} header "
                        "(drop the field, or use fragment: first)",
                    )

        established = False
        if "state" in mp:
            established = self.choice(mp, "state", ("established", "new"), "new") == "established"
        if established and base.direction != "ingress":
            self.fail(vl["state"], "state: established is an ingress condition (egress rules cannot test it)")
        if established and later:
            self.fail(
                vl["state"], "state: established: a later fragment has no ports, so it belongs to no flow"
            )

        sport = dport = flags = icmp_type = icmp_code = None
        if not later and proto in PORT_PROTOS:
            for key in ("icmp_type", "icmp_code"):
                if key in mp:
                    self.fail(
                        vl[key], f"{key}: needs proto icmp or icmpv6, but proto is {_proto_name(proto)}"
                    )
            if "dport" not in mp:
                self.fail(mp.line, f'case has no "dport" ({_proto_name(proto)} needs a destination port)')
            dport = self.number(mp, "dport", 0, 65535, "a port number")
            sport = self.number(mp, "sport", 0, 65535, "a port number") if "sport" in mp else DEFAULT_SPORT
            if proto == IPPROTO_TCP:
                flags = (
                    self.tcp_flags(mp)
                    if "tcp_flags" in mp
                    else TCP_FLAG_BITS["ack" if established else "syn"]
                )
            elif "tcp_flags" in mp:
                self.fail(vl["tcp_flags"], f"tcp_flags: needs proto tcp, but proto is {_proto_name(proto)}")
        elif not later:
            for key in ("sport", "dport", "tcp_flags"):
                if key in mp:
                    what = "tcp" if key == "tcp_flags" else "tcp, udp or sctp"
                    self.fail(vl[key], f"{key}: needs proto {what}; {_proto_name(proto)} has no ports")
            if proto in ICMP_PROTOS:
                icmp_type, icmp_code = self.icmp(mp, proto)
            elif "icmp_type" in mp or "icmp_code" in mp:
                key = "icmp_type" if "icmp_type" in mp else "icmp_code"
                self.fail(vl[key], f"{key}: needs proto icmp or icmpv6, but proto is {_proto_name(proto)}")

        if established and proto not in PORT_PROTOS and icmp_type != ECHO.get(proto, (-1, -1))[1]:
            self.fail(
                vl["state"],
                "state: established: only TCP, UDP, SCTP and ICMP echo replies belong to flows "
                "(the egress program records only those)",
            )
        syn, ack = TCP_FLAG_BITS["syn"], TCP_FLAG_BITS["ack"]
        if established and flags is not None and flags & (syn | ack) == syn:
            self.fail(
                vl["tcp_flags"],
                "state: established: a SYN without ACK starts a connection, it never answers one "
                "this host opened (the answer to our SYN carries an ACK)",
            )
        return replace(
            base,
            family=family,
            src=src,
            dst=dst,
            proto=proto,
            sport=sport,
            dport=dport,
            tcp_flags=flags,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            established=established,
            fragment=fragment,
        )

    def proto(self, mp: _Map, family: int) -> int:
        vl = mp.value_lines
        if "proto" not in mp:
            if "tcp_flags" in mp:
                return IPPROTO_TCP
            if "icmp_type" in mp:
                return IPPROTO_ICMP if family == 4 else IPPROTO_ICMPV6
            self.fail(mp.line, 'case has no "proto" (tcp, udp, icmp, icmpv6, sctp or a number)')
        value = mp["proto"]
        line = vl["proto"]
        if isinstance(value, str) and value.strip().lower() in PROTO_NAMES:
            proto = PROTO_NAMES[value.strip().lower()]
        elif _is_int(value) or (
            isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
        ):
            proto = self.number(mp, "proto", 0, 255, "a protocol number")
        else:
            hint = _did_you_mean(value, list(PROTO_NAMES)) if isinstance(value, str) else ""
            self.fail(
                line, f"proto: {_show(value)} is not tcp, udp, icmp, icmpv6, sctp or a number 0-255{hint}"
            )
        if proto == IPPROTO_ICMP and family == 6:
            self.fail(line, f"proto: {_show(value)} with IPv6 addresses: IPv6 uses icmpv6")
        if proto == IPPROTO_ICMPV6 and family == 4:
            self.fail(line, f"proto: {_show(value)} with IPv4 addresses: IPv4 uses icmp")
        if family == 6 and proto in IPV6_EXT_PROTOS:
            self.fail(line, f"proto: {proto} is an IPv6 extension header, not a transport protocol")
        return proto

    def tcp_flags(self, mp: _Map) -> int:
        value = mp["tcp_flags"]
        line = mp.value_lines["tcp_flags"]
        if isinstance(value, _Seq) and all(isinstance(v, str) for v in value):
            tokens = [t for v in value for t in v.split(",")]
        elif isinstance(value, str):
            tokens = value.split(",")
        else:
            self.fail(line, f'tcp_flags: {_show(value)} is not a list of flags (e.g. "syn" or "syn,ack")')
        flags = 0
        for token in tokens:
            flag = token.strip().lower()
            if flag == "none" and len(tokens) == 1:
                return 0
            if flag.startswith("!"):
                self.fail(
                    line,
                    f"tcp_flags: {_show(value)}: a packet's flags are set or not; list only the set ones",
                )
            if flag not in TCP_FLAG_BITS:
                what = "an empty flag" if not flag else f"an unknown flag {_show(flag)}"
                hint = (
                    _did_you_mean(flag, list(TCP_FLAG_BITS))
                    or f" (flags: {', '.join(TCP_FLAG_BITS)}, or none)"
                )
                self.fail(line, f"tcp_flags: {_show(value)} has {what}{hint}")
            flags |= TCP_FLAG_BITS[flag]
        return flags

    def icmp(self, mp: _Map, proto: int) -> tuple[int, int]:
        vl = mp.value_lines
        pname = _proto_name(proto)
        if "icmp_type" not in mp:
            self.fail(
                mp.line, f'case has no "icmp_type" ({pname} needs a type: a number or e.g. echo-request)'
            )
        value = mp["icmp_type"]
        line = vl["icmp_type"]
        names = ICMP_TYPES[proto]
        if isinstance(value, str) and value.strip().lower() in names:
            icmp_type = names[value.strip().lower()]
        elif _is_int(value) or (
            isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
        ):
            icmp_type = self.number(mp, "icmp_type", 0, 255, "an ICMP type")
        else:
            other = IPPROTO_ICMPV6 if proto == IPPROTO_ICMP else IPPROTO_ICMP
            if isinstance(value, str) and value.strip().lower() in ICMP_TYPES[other]:
                self.fail(
                    line, f"icmp_type: {_show(value)} exists only for {_proto_name(other)}, not {pname}"
                )
            hint = _did_you_mean(value, list(names)) if isinstance(value, str) else ""
            self.fail(line, f"icmp_type: {_show(value)} is not an {pname} type number or name{hint}")
        code = self.number(mp, "icmp_code", 0, 255, "an ICMP code") if "icmp_code" in mp else 0
        return icmp_type, code


def parse_cases_text(text: str, path: str, rs: RuleSet) -> list[Case]:
    """Parse and validate cases-file text against the rule set the cases test."""
    return _CaseParser(path, rs).cases(_load_yaml(text, path))


def load_cases(path: str | Path, rs: RuleSet) -> list[Case]:
    """Read, parse and validate a cases file; errors are `path:line: message` RuleErrors."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise RuleError(name, None, f"cannot read cases file: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RuleError(name, line, f"not UTF-8 text (byte {data[e.start]:#04x})") from None
    return parse_cases_text(text, name, rs)


def count(results: list[Result]) -> tuple[int, int]:
    """(passed, failed)."""
    passed = sum(1 for r in results if r.ok)
    return passed, len(results) - passed
