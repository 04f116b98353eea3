"""Reading a cases file: YAML -> `Case`s, checked against the rule set they test.

Errors are `file:line: message` RuleErrors, with the rule parser's YAML
loader (which remembers lines) and its wording.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

from xdpguard.cases.case import (
    CASE_KEYS,
    DEFAULT_SPORT,
    DIRECTIONS,
    ECHO,
    ETH_HLEN,
    ETHERTYPES,
    EXPECT_KEYS,
    IP_ETHERTYPES,
    IPV6_EXT_PROTOS,
    LATER_FRAGMENT_DATA,
    MAX_FRAME,
    MAX_REPEAT,
    NON_IP_KEYS,
    SPECIAL_REASONS,
    TOP_KEYS,
    VERDICTS,
    Case,
    Expect,
    IPAddress,
    proto_name,
)
from xdpguard.errors import RuleError
from xdpguard.rules import inputs
from xdpguard.rules.limits import MAX_WINDOW_NS, MAX_WINDOW_TEXT, NSEC
from xdpguard.rules.model import (
    ICMP_PROTOS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    PORT_PROTOS,
    TCP_FLAG_BITS,
    RuleSet,
)
from xdpguard.rules.parse import (
    ICMP_TYPES,
    PORT_KEYS,
    PROTO_NAMES,
    YamlMap,
    YamlSeq,
    address_hint,
    based_port,
    did_you_mean,
    is_int,
    load_yaml,
    parse_duration_exact,
    show,
)

_EXPECT_ITEM_RE = re.compile(r"(allow|drop)(?:\s+by\s+(\S+))?(?:\s+x\s*([0-9]+))?")
_WAIT_RE = re.compile(r"wait\s+(\S.*)")


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

    def check_keys(self, mp: YamlMap, allowed: tuple[str, ...], where: str) -> None:
        for key in mp:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.fail(mp.key_lines[key], f"unknown key {show(key)} {where}{hint}")

    def choice(self, mp: YamlMap, key: str, choices: tuple[str, ...], default: str) -> str:
        if key not in mp:
            return default
        value = mp[key]
        if not isinstance(value, str) or value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            self.fail(mp.value_lines[key], f"{key}: {show(value)} must be {' or '.join(choices)}{hint}")
        return value

    def number(self, mp: YamlMap, key: str, lo: int, hi: int, what: str) -> int:
        value = mp[key]
        problem = based_port(value, key) if key in PORT_KEYS else None
        if problem:
            self.fail(mp.value_lines[key], problem)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value)
        if not is_int(value):
            self.fail(mp.value_lines[key], f"{key}: {show(value)} is not {what}")
        if not lo <= value <= hi:
            self.fail(mp.value_lines[key], f"{key}: {value} is out of range ({lo}-{hi})")
        return int(value)

    def name_or_byte(self, mp: YamlMap, key: str, names: dict[str, int], what: str) -> int | None:
        """A name from `names` (any case) or a number 0-255 (`what` says of what); None when it is neither."""
        value = mp[key]
        if isinstance(value, str) and value.strip().lower() in names:
            return names[value.strip().lower()]
        if is_int(value) or (isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()):
            return self.number(mp, key, 0, 255, what)
        return None

    # ---- the file

    def cases(self, doc: Any) -> list[Case]:
        if doc is None:
            self.fail(1, "the cases file is empty (it needs `cases:` with a list of packets)")
        if not isinstance(doc, YamlMap):
            line = doc.line if isinstance(doc, YamlSeq) else 1
            self.fail(line, f"the cases file must be a mapping with `cases:`, got {show(doc)}")
        self.check_keys(doc, TOP_KEYS, "at the top level")
        if "cases" not in doc:
            self.fail(doc.line, 'missing "cases" (a list of packets with the verdict each must get)')
        items = doc["cases"]
        if not isinstance(items, YamlSeq):
            self.fail(doc.value_lines["cases"], f"cases: expected a list of cases, got {show(items)}")
        if not items:
            self.fail(doc.value_lines["cases"], "cases: the list is empty (give at least one case)")
        return [
            self.case(item, line, i) for i, (item, line) in enumerate(zip(items, items.lines, strict=True))
        ]

    def case(self, mp: Any, line: int, index: int) -> Case:
        if not isinstance(mp, YamlMap):
            self.fail(line, f"a case must be a mapping (src, dst, proto, ..., expect), got {show(mp)}")
        self.check_keys(mp, CASE_KEYS, "in case")
        vl = mp.value_lines

        name = f"#{index + 1}"
        if "name" in mp:
            value = mp["name"]
            if not isinstance(value, str) or not value.strip() or len(value) > 80:
                self.fail(
                    vl["name"],
                    f"name: {show(value)} must be a non-empty string of at most 80 characters",
                )
            name = value.strip()
            if name in self.names:
                self.fail(
                    vl["name"],
                    f"name: {show(name)} is already used by the case at line {self.names[name]}",
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

    def expectations(
        self, mp: YamlMap, direction: str
    ) -> tuple[tuple[Expect, ...], tuple[float, ...], float]:
        """Per packet: what it must get and the seconds before it; and the interval."""
        if "expect" not in mp:
            self.fail(mp.line, 'case has no "expect" (e.g. expect: {verdict: drop, rule: default})')
        vl = mp.value_lines
        interval = Decimal(0)
        if "interval" in mp:
            interval = self.duration(mp["interval"], vl["interval"], "interval")
        repeat = None
        if "repeat" in mp:
            repeat = self.number(mp, "repeat", 1, MAX_REPEAT, "a number of packets")
        value, line = mp["expect"], vl["expect"]
        if not isinstance(value, YamlSeq):
            one = self.expect(value, line, direction)
            n = repeat or 1
            if interval * (n - 1) * NSEC > MAX_WINDOW_NS:
                self.fail(
                    vl["interval"],
                    "interval: " + self.too_long(f"{n} packets {show(mp['interval'])} apart take"),
                )
            return (one,) * n, (0.0,) + (float(interval),) * (n - 1), float(interval)
        expects: list[Expect] = []
        gaps: list[float] = []
        pending_wait = Decimal(0)
        span = Decimal(0)
        for item, iline in zip(value, value.lines, strict=True):
            if isinstance(item, str) and (m := _WAIT_RE.fullmatch(item.strip())):
                pending_wait += self.duration(m.group(1), iline, f"expect: {show(item)}")
                continue
            one, times = self.expect_item(item, iline, direction)
            for _ in range(times):
                gap = (interval if expects else 0) + pending_wait
                span += gap
                if span * NSEC > MAX_WINDOW_NS:
                    self.fail(iline, "expect: " + self.too_long("the packets up to this one take"))
                gaps.append(float(gap))
                expects.append(one)
                pending_wait = Decimal(0)
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
        return tuple(expects), tuple(gaps), float(interval)

    def duration(self, value: Any, line: int, field: str) -> Decimal:
        """Seconds of an `interval` or a `wait`, exactly; one alone may last at most MAX_WINDOW_NS."""
        try:
            seconds = parse_duration_exact(value)
        except ValueError as e:
            self.fail(line, f"{field}: {e}")
        if seconds * NSEC > MAX_WINDOW_NS:
            self.fail(line, f"{field}: {self.too_long(f'{show(value)} is')}")
        return seconds

    @staticmethod
    def too_long(what: str) -> str:
        # --kernel and --wire set the programs' u64 clock to each packet's instant, and
        # the limiter and blocks add their own windows to it: a case spans at most one.
        return f"{what} longer than a case may last ({MAX_WINDOW_TEXT}, what the programs' clock holds)"

    def expect_item(self, item: Any, line: int, direction: str) -> tuple[Expect, int]:
        """One entry of an expect list: `allow`, `drop by RULE x3`, or a mapping; with its count."""
        if isinstance(item, str):
            m = _EXPECT_ITEM_RE.fullmatch(item.strip())
            if m is None:
                self.fail(
                    line,
                    f"expect: {show(item)} is not VERDICT [by RULE] [xN] or wait DURATION "
                    '(e.g. "allow x5", "drop by ssh-guard", "wait 10m")',
                )
            verdict, rule, times = m.group(1), m.group(2), int(m.group(3) or 1)
            if not 1 <= times <= MAX_REPEAT:
                self.fail(line, f"expect: {show(item)}: x{times} is out of range (1-{MAX_REPEAT})")
            if rule is not None:
                self.check_rule(rule, line, direction)
            return Expect(verdict, rule), times
        if isinstance(item, YamlMap):
            return self.expect(item, line, direction), 1
        self.fail(line, f"expect: {show(item)} is not an expectation (e.g. allow, drop by ssh-guard x3)")

    def expect(self, value: Any, line: int, direction: str) -> Expect:
        if isinstance(value, str):
            if value not in VERDICTS:
                self.fail(line, f"expect: {show(value)} must be allow or drop{did_you_mean(value, VERDICTS)}")
            return Expect(value, None)
        if not isinstance(value, YamlMap):
            self.fail(
                line,
                f"expect: expected {{verdict: allow|drop, rule: NAME}} or a list of them, got {show(value)}",
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
                    rline,
                    f"rule: {show(rule)} must be a rule name or one of {', '.join(SPECIAL_REASONS)}",
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
                hint = did_you_mean(rule, known) or f" ({direction} rules: {', '.join(known)})"
            self.fail(line, f"rule: {show(rule)} is not an {direction} rule of the rule file{hint}")

    def non_ip(self, mp: YamlMap, base: Case) -> Case:
        for key in mp:
            if key not in NON_IP_KEYS and key != "truncate":
                self.fail(mp.key_lines[key], f"{key}: a non-IP frame (ethertype) has no {key}")
        value = mp["ethertype"]
        line = mp.value_lines["ethertype"]
        if isinstance(value, str) and value.strip().lower() in ETHERTYPES:
            etype = ETHERTYPES[value.strip().lower()]
        else:
            etype = -1
            if is_int(value):
                etype = int(value)
            elif isinstance(value, str):
                try:
                    etype = int(value.strip(), 0)
                except ValueError:
                    etype = -1
            if etype < 0:
                names = ", ".join(ETHERTYPES)
                self.fail(line, f"ethertype: {show(value)} is not {names} or a number (e.g. 0x88b5)")
            if etype in IP_ETHERTYPES:
                self.fail(
                    line,
                    f"ethertype: {etype:#06x} is {IP_ETHERTYPES[etype]}: "
                    "describe IP packets with src and dst instead",
                )
            if not 0x0600 <= etype <= 0xFFFF:
                self.fail(line, f"ethertype: {show(value)} is out of range (0x0600-0xffff)")
        return replace(base, ethertype=etype)

    def address(self, mp: YamlMap, key: str) -> IPAddress:
        if key not in mp:
            self.fail(
                mp.line, f'case has no "{key}" (an IPv4 or IPv6 address; or ethertype for a non-IP frame)'
            )
        value = mp[key]
        line = mp.value_lines[key]
        if not isinstance(value, str):
            self.fail(line, f"{key}: {show(value)} is not an IP address{address_hint(value)}")
        try:
            return ipaddress.ip_address(value.strip())
        except ValueError:
            if "/" in value:
                self.fail(line, f"{key}: {show(value)} is a network: a case is one packet, give one address")
            self.fail(line, f"{key}: {show(value)} is not an IPv4 or IPv6 address")

    def ip(self, mp: YamlMap, base: Case) -> Case:
        vl = mp.value_lines
        src = self.address(mp, "src")
        dst = self.address(mp, "dst")
        if src.version != dst.version:
            self.fail(vl["dst"], f"dst: {show(mp['dst'])} is IPv{dst.version} but src is IPv{src.version}")
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
                    self.fail(vl[key], f"{key}: needs proto icmp or icmpv6, but proto is {proto_name(proto)}")
            if "dport" not in mp:
                self.fail(mp.line, f'case has no "dport" ({proto_name(proto)} needs a destination port)')
            dport = self.number(mp, "dport", 0, 65535, "a port number")
            sport = self.number(mp, "sport", 0, 65535, "a port number") if "sport" in mp else DEFAULT_SPORT
            if proto == IPPROTO_TCP:
                flags = (
                    self.tcp_flags(mp)
                    if "tcp_flags" in mp
                    else TCP_FLAG_BITS["ack" if established else "syn"]
                )
            elif "tcp_flags" in mp:
                self.fail(vl["tcp_flags"], f"tcp_flags: needs proto tcp, but proto is {proto_name(proto)}")
        elif not later:
            for key in ("sport", "dport", "tcp_flags"):
                if key in mp:
                    what = "tcp" if key == "tcp_flags" else "tcp, udp or sctp"
                    self.fail(vl[key], f"{key}: needs proto {what}; {proto_name(proto)} has no ports")
            if proto in ICMP_PROTOS:
                icmp_type, icmp_code = self.icmp(mp, proto)
            elif "icmp_type" in mp or "icmp_code" in mp:
                key = "icmp_type" if "icmp_type" in mp else "icmp_code"
                self.fail(vl[key], f"{key}: needs proto icmp or icmpv6, but proto is {proto_name(proto)}")

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

    def proto(self, mp: YamlMap, family: int) -> int:
        vl = mp.value_lines
        if "proto" not in mp:
            if "tcp_flags" in mp:
                return IPPROTO_TCP
            if "icmp_type" in mp:
                return IPPROTO_ICMP if family == 4 else IPPROTO_ICMPV6
            self.fail(mp.line, 'case has no "proto" (tcp, udp, icmp, icmpv6, sctp or a number)')
        value = mp["proto"]
        line = vl["proto"]
        proto = self.name_or_byte(mp, "proto", PROTO_NAMES, "a protocol number")
        if proto is None:
            hint = did_you_mean(value, list(PROTO_NAMES)) if isinstance(value, str) else ""
            self.fail(
                line,
                f"proto: {show(value)} is not tcp, udp, icmp, icmpv6, sctp or a number 0-255{hint}",
            )
        if proto == IPPROTO_ICMP and family == 6:
            self.fail(line, f"proto: {show(value)} with IPv6 addresses: IPv6 uses icmpv6")
        if proto == IPPROTO_ICMPV6 and family == 4:
            self.fail(line, f"proto: {show(value)} with IPv4 addresses: IPv4 uses icmp")
        if family == 6 and proto in IPV6_EXT_PROTOS:
            self.fail(line, f"proto: {proto} is an IPv6 extension header, not a transport protocol")
        return proto

    def tcp_flags(self, mp: YamlMap) -> int:
        value = mp["tcp_flags"]
        line = mp.value_lines["tcp_flags"]
        if isinstance(value, YamlSeq) and all(isinstance(v, str) for v in value):
            tokens = [t for v in value for t in v.split(",")]
        elif isinstance(value, str):
            tokens = value.split(",")
        else:
            self.fail(line, f'tcp_flags: {show(value)} is not a list of flags (e.g. "syn" or "syn,ack")')
        flags = 0
        for token in tokens:
            flag = token.strip().lower()
            if flag == "none" and len(tokens) == 1:
                return 0
            if flag.startswith("!"):
                self.fail(
                    line,
                    f"tcp_flags: {show(value)}: a packet's flags are set or not; list only the set ones",
                )
            if flag not in TCP_FLAG_BITS:
                what = "an empty flag" if not flag else f"an unknown flag {show(flag)}"
                hint = (
                    did_you_mean(flag, list(TCP_FLAG_BITS))
                    or f" (flags: {', '.join(TCP_FLAG_BITS)}, or none)"
                )
                self.fail(line, f"tcp_flags: {show(value)} has {what}{hint}")
            flags |= TCP_FLAG_BITS[flag]
        return flags

    def icmp(self, mp: YamlMap, proto: int) -> tuple[int, int]:
        vl = mp.value_lines
        pname = proto_name(proto)
        if "icmp_type" not in mp:
            self.fail(
                mp.line, f'case has no "icmp_type" ({pname} needs a type: a number or e.g. echo-request)'
            )
        value = mp["icmp_type"]
        line = vl["icmp_type"]
        names = ICMP_TYPES[proto]
        icmp_type = self.name_or_byte(mp, "icmp_type", names, "an ICMP type")
        if icmp_type is None:
            other = IPPROTO_ICMPV6 if proto == IPPROTO_ICMP else IPPROTO_ICMP
            if isinstance(value, str) and value.strip().lower() in ICMP_TYPES[other]:
                self.fail(line, f"icmp_type: {show(value)} exists only for {proto_name(other)}, not {pname}")
            hint = did_you_mean(value, list(names)) if isinstance(value, str) else ""
            self.fail(line, f"icmp_type: {show(value)} is not an {pname} type number or name{hint}")
        code = self.number(mp, "icmp_code", 0, 255, "an ICMP code") if "icmp_code" in mp else 0
        return icmp_type, code


def parse_cases_text(text: str, path: str, rs: RuleSet) -> list[Case]:
    """Parse and validate cases-file text against the rule set the cases test."""
    return _CaseParser(path, rs).cases(load_yaml(text, path))


def load_cases(path: str | Path, rs: RuleSet) -> list[Case]:
    """Read, parse and validate a cases file; errors are `path:line: message` RuleErrors."""
    name = str(path)
    return parse_cases_text(inputs.decode(inputs.read_input(Path(path), "cases file"), name), name, rs)
