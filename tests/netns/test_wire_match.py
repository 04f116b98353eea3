"""Every match field and parser edge case of the rule language, on the wire.

Each case applies its own rule file with `xdpguard --netns B apply`, sends
real frames (built with scapy) from namespace A, and checks three things:
which frames arrived on xb0 in namespace B, which did not, and the exact
packet and byte counts that `xdpguard stats --json` reports for every
rule and for the default, malformed, non_ip, ndp and error counters.

The frames come from a lab whose sender has no IPv6 stack (`quiet_lab`),
so nothing but the test's own frames reaches B and every counter can be
compared exactly.  xdpguard is attached once for the module (the first
attach compiles the program with bcc, ~2 s) and detached at its end, with
a check that nothing stays pinned; each case is a rule-only update.
Rule names are unique across cases, so no counter carries over, and the
counters read after one case are the baseline of the next.

Every frame names the counter that must count it and whether it must
arrive; a frame is counted exactly once, and its bytes are the whole
frame as sent (VLAN tags included: the XDP program sees them inline).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import TCP, UDP, IPOption_EOL, IPOption_NOP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.ipsec import AH
from scapy.packet import Packet, Raw

from tests.netns.clihelp import Frames, Guard, missing_feature, pins, quiet_lab, send_and_see, write_rules
from tests.netns.traffic import Lab

RESERVED = ("default", "malformed", "non_ip", "ndp", "error")
QINQ = [(0x88A8, 100), (0x8100, 200)]
# Bytes at the start of a non-first fragment's payload that read as ports 53/53
# if a parser wrongly took them for a UDP header.
FAKE_PORTS = b"\x00\x35\x00\x35" + b"\0" * 12
# Four option bytes: IHL 6, the TCP header 24 bytes into the IP packet.
IP_OPTIONS = [IPOption_NOP()] * 3 + [IPOption_EOL()]
# The first 10 of a TCP header's 20 bytes.
TCP_HEAD_10 = bytes(TCP(dport=22))[:10]
MANY_RULES = "\n".join(
    f"- {{name: w{i:03d}, match: {{proto: udp, dport: {20000 + i}}}, action: drop}}" for i in range(130)
)

Build = Callable[[Frames], bytes]


@dataclass(frozen=True)
class Send:
    label: str
    build: Build
    counter: str  # the rule name, or one of RESERVED, that must count this frame
    arrives: bool


def passes(label: str, build: Build, counter: str) -> Send:
    return Send(label, build, counter, True)


def drops(label: str, build: Build, counter: str) -> Send:
    return Send(label, build, counter, False)


@dataclass(frozen=True)
class Case:
    id: str
    rules: str
    frames: tuple[Send, ...]
    files: dict[str, str] = field(default_factory=dict)


def ingress(rules: str, default: str = "allow", head: str = "") -> str:
    """A version 1 rule file with these ingress rules (YAML list text)."""
    body = textwrap.indent(textwrap.dedent(rules).strip("\n"), "    ")
    return f"version: 1\n{textwrap.dedent(head)}ingress:\n  default: {default}\n  rules:\n{body}\n"


def case(id: str, rules: str, *frames: Send, files: dict[str, str] | None = None) -> Any:
    return pytest.param(Case(id, rules, frames, files or {}), id=id)


# ----------------------------------------------------------------------------
# The module's one attachment


@dataclass
class Wire:
    lab: Lab
    guard: Guard
    frames: Frames
    # What `stats --json` said after the previous case's frames: the baseline
    # for the next case (nothing else reaches B in between; rule names are
    # fresh, so their counters must start at zero).  None: read it anew.
    last: dict[str, Any] | None = None


@pytest.fixture(scope="module")
def wire(_sweep_stale: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    reason = missing_feature()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("wire")
    with quiet_lab(tmp) as lab, pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDPGUARD_BPFFS", str(lab.bpffs))
        mp.setenv("XDPGUARD_STATE_DIR", str(lab.state_dir))
        guard = Guard(lab)
        try:
            guard.apply(write_rules(tmp, "version: 1\n", name="empty.yaml"))
            yield Wire(lab, guard, Frames(lab.a, lab.b))
        finally:
            r = guard.cli("detach", "--iface", lab.b.ifname)
            assert r.returncode == 0, r.stderr
            assert pins(lab) == [], f"pinned after detach: {pins(lab)}"


def _deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[int, int]]:
    def flat(d: dict[str, Any]) -> dict[str, tuple[int, int]]:
        out = {r["name"]: (r["packets"], r["bytes"]) for r in d["rules"]}
        out.update({k: (d[k]["packets"], d[k]["bytes"]) for k in RESERVED})
        return out

    b, a = flat(before), flat(after)
    return {k: (a[k][0] - b.get(k, (0, 0))[0], a[k][1] - b.get(k, (0, 0))[1]) for k in a}


def run_case(wire: Wire, c: Case, tmp_path: Path) -> None:
    doc = yaml.safe_load(c.rules)
    names = [r["name"] for r in doc["ingress"]["rules"]]
    expected: dict[str, tuple[int, int]] = {k: (0, 0) for k in [*names, *RESERVED]}
    assert {s.counter for s in c.frames} <= expected.keys(), "case names a counter that does not exist"

    wire.guard.apply(write_rules(tmp_path, c.rules, files=c.files))
    before = wire.last if wire.last is not None else wire.guard.stats()["ingress"]
    wire.last = None
    arrived, sent = send_and_see(wire.lab, {s.label: s.build(wire.frames) for s in c.frames}, settle=0.1)
    after = wire.last = wire.guard.stats()["ingress"]

    want = {s.label for s in c.frames if s.arrives}
    assert arrived == want, (
        f"dropped but should pass: {sorted(want - arrived)}; passed but should drop: {sorted(arrived - want)}"
    )
    assert [r["name"] for r in after["rules"]] == names
    assert after["default"]["action"] == doc["ingress"]["default"]
    for s in c.frames:
        pk, by = expected[s.counter]
        expected[s.counter] = (pk + 1, by + len(sent[s.label]))
    got = _deltas(before, after)
    wrong = {k: {"expected": expected[k], "got": got[k]} for k in expected if got[k] != expected[k]}
    assert not wrong, f"(packets, bytes) per counter differ: {wrong}"


# ----------------------------------------------------------------------------
# Addresses


ADDRESS_CASES = [
    case(
        "src-v4-prefix",
        ingress("""
            - name: src4-drop
              match: {src: 198.51.100.0/24}
              action: drop
        """),
        drops("in-prefix", lambda f: f.udp(src="198.51.100.7"), "src4-drop"),
        drops("last-of-prefix", lambda f: f.tcp(src="198.51.100.255"), "src4-drop"),
        passes("next-prefix", lambda f: f.udp(src="198.51.101.0"), "default"),
        passes("prefix-as-dst", lambda f: f.udp(dst="198.51.100.7"), "default"),
        passes("lab-address", lambda f: f.udp(), "default"),
    ),
    case(
        "dst-v4-prefix",
        ingress("""
            - name: dst4-drop
              match: {dst: 10.200.0.0/30}
              action: drop
        """),
        drops("to-b", lambda f: f.udp(), "dst4-drop"),
        drops("to-last-of-prefix", lambda f: f.tcp(dst="10.200.0.3"), "dst4-drop"),
        passes("to-next", lambda f: f.udp(dst="10.200.0.4"), "default"),
        passes("prefix-as-src", lambda f: f.udp(src="10.200.0.2", dst="10.200.0.9"), "default"),
    ),
    case(
        "src-v6-prefix",
        ingress("""
            - name: src6-drop
              match: {src: "2001:db8:1::/48"}
              action: drop
        """),
        drops("in-prefix", lambda f: f.udp(v6=True, src="2001:db8:1::5"), "src6-drop"),
        drops(
            "last-of-prefix", lambda f: f.tcp(v6=True, src="2001:db8:1:ffff:ffff:ffff:ffff:ffff"), "src6-drop"
        ),
        passes("next-prefix", lambda f: f.udp(v6=True, src="2001:db8:2::"), "default"),
        passes("lab-address", lambda f: f.udp(v6=True), "default"),
    ),
    case(
        "dst-v6-prefix",
        ingress("""
            - name: dst6-drop
              match: {dst: "fd00:200::2/128"}
              action: drop
        """),
        drops("to-b", lambda f: f.udp(v6=True), "dst6-drop"),
        passes("to-neighbour", lambda f: f.udp(v6=True, dst="fd00:200::3"), "default"),
        passes("prefix-as-src", lambda f: f.udp(v6=True, src="fd00:200::2", dst="fd00:200::9"), "default"),
    ),
    case(
        "inline-list",
        ingress("""
            - name: list-drop
              match: {src: [198.51.100.0/24, "2001:db8:1::/48", 192.0.2.1]}
              action: drop
        """),
        drops("v4-prefix", lambda f: f.udp(src="198.51.100.9"), "list-drop"),
        drops("v6-prefix", lambda f: f.udp(v6=True, src="2001:db8:1::9"), "list-drop"),
        drops("v4-host", lambda f: f.tcp(src="192.0.2.1"), "list-drop"),
        passes("v4-next-host", lambda f: f.udp(src="192.0.2.2"), "default"),
        passes("v6-outside", lambda f: f.udp(v6=True, src="2001:db8:2::9"), "default"),
    ),
    case(
        "set-inline",
        ingress(
            """
            - name: set-drop
              match: {src: "@bad"}
              action: drop
            """,
            head="""
            sets:
              bad: [198.51.100.0/24, "2001:db8:1::/48"]
              unused: [192.0.2.0/24]
            """,
        ),
        drops("v4-member", lambda f: f.udp(src="198.51.100.9"), "set-drop"),
        drops("v6-member", lambda f: f.udp(v6=True, src="2001:db8:1::9"), "set-drop"),
        passes("other-set-member", lambda f: f.udp(src="192.0.2.9"), "default"),
        passes("no-member", lambda f: f.udp(src="203.0.113.1"), "default"),
    ),
    case(
        "set-file-with-comments",
        ingress(
            """
            - name: setfile-drop
              match: {src: "@block"}
              action: drop
            """,
            head="""
            sets:
              block: {file: lists/block.netset}
            """,
        ),
        drops("network", lambda f: f.udp(src="198.51.100.200"), "setfile-drop"),
        drops("host", lambda f: f.tcp(src="203.0.113.7"), "setfile-drop"),
        drops("v6-network", lambda f: f.udp(v6=True, src="2001:db8:1::1"), "setfile-drop"),
        passes("next-to-host", lambda f: f.udp(src="203.0.113.8"), "default"),
        passes("commented-out", lambda f: f.udp(src="192.0.2.1"), "default"),
        files={
            "lists/block.netset": """\
                # addresses we never want to hear from
                198.51.100.0/24    # a whole network
                203.0.113.7        # one host, no prefix length

                # 192.0.2.0/24 is commented out
                  2001:db8:1::/48
            """
        },
    ),
    case(
        "v4-only-rule-never-matches-v6",
        ingress("""
            - name: any4-drop
              match: {src: 0.0.0.0/0}
              action: drop
        """),
        drops("udp4", lambda f: f.udp(), "any4-drop"),
        drops("tcp4", lambda f: f.tcp(), "any4-drop"),
        passes("udp6", lambda f: f.udp(v6=True), "default"),
        passes("v4-mapped-v6", lambda f: f.udp(v6=True, src="::ffff:10.200.0.1"), "default"),
    ),
    case(
        "v6-only-rule-never-matches-v4",
        ingress("""
            - name: any6-drop
              match: {dst: "::/0"}
              action: drop
        """),
        drops("udp6", lambda f: f.udp(v6=True), "any6-drop"),
        drops("icmp6", lambda f: f.icmp6(128), "any6-drop"),
        passes("udp4", lambda f: f.udp(), "default"),
        passes("tcp4", lambda f: f.tcp(), "default"),
    ),
    case(
        # Every field of a rule must match; a packet inside the narrower
        # prefix that fails another field of its rule still finds the rule
        # of the wider prefix behind it.
        "nested-prefixes-and-all-fields",
        ingress("""
            - name: nest-ssh-allow
              match: {src: [198.51.100.0/24, "2001:db8:1:1::/64"], proto: tcp, dport: 22}
              action: allow
            - name: nest-wide-drop
              match: {src: [198.51.0.0/16, "2001:db8:1::/48"]}
              action: drop
        """),
        passes("narrow-ssh", lambda f: f.tcp(dport=22, src="198.51.100.7"), "nest-ssh-allow"),
        passes("narrow-ssh-v6", lambda f: f.tcp(dport=22, v6=True, src="2001:db8:1:1::7"), "nest-ssh-allow"),
        drops("narrow-udp-22", lambda f: f.udp(dport=22, src="198.51.100.7"), "nest-wide-drop"),
        drops("narrow-tcp-23", lambda f: f.tcp(dport=23, src="198.51.100.7"), "nest-wide-drop"),
        drops(
            "narrow-tcp-23-v6", lambda f: f.tcp(dport=23, v6=True, src="2001:db8:1:1::7"), "nest-wide-drop"
        ),
        drops("wide-ssh", lambda f: f.tcp(dport=22, src="198.51.5.5"), "nest-wide-drop"),
        drops("wide-ssh-v6", lambda f: f.tcp(dport=22, v6=True, src="2001:db8:1:2::7"), "nest-wide-drop"),
        passes("outside-ssh", lambda f: f.tcp(dport=22, src="203.0.113.1"), "default"),
    ),
]


@pytest.mark.parametrize("c", ADDRESS_CASES)
def test_addresses(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# Protocols and ports


PROTO_PORT_CASES = [
    case(
        "proto-by-name",
        ingress("""
            - name: udp-drop
              match: {proto: udp}
              action: drop
        """),
        drops("udp4", lambda f: f.udp(), "udp-drop"),
        drops("udp6", lambda f: f.udp(v6=True), "udp-drop"),
        passes("tcp4", lambda f: f.tcp(), "default"),
        passes("icmp4", lambda f: f.icmp(8), "default"),
        passes("sctp4", lambda f: f.sctp(), "default"),
    ),
    case(
        "proto-by-number",
        ingress("""
            - name: gre-drop
              match: {proto: 47}
              action: drop
        """),
        drops("gre4", lambda f: f.proto(47), "gre-drop"),
        drops("gre6", lambda f: f.proto(47, v6=True), "gre-drop"),
        passes("proto-46", lambda f: f.proto(46), "default"),
        passes("udp4", lambda f: f.udp(), "default"),
    ),
    case(
        "proto-list",
        ingress("""
            - name: plist-drop
              match: {proto: [tcp, icmpv6, 132]}
              action: drop
        """),
        drops("tcp4", lambda f: f.tcp(), "plist-drop"),
        drops("icmp6-echo", lambda f: f.icmp6(128), "plist-drop"),
        drops("sctp4", lambda f: f.sctp(), "plist-drop"),
        passes("udp4", lambda f: f.udp(), "default"),
        passes("icmp4", lambda f: f.icmp(8), "default"),
    ),
    case(
        "sport-single",
        ingress("""
            - name: sport-drop
              match: {proto: udp, sport: 53}
              action: drop
        """),
        drops("sport-53", lambda f: f.udp(sport=53), "sport-drop"),
        drops("sport-53-v6", lambda f: f.udp(sport=53, v6=True), "sport-drop"),
        passes("sport-52", lambda f: f.udp(sport=52), "default"),
        passes("sport-54", lambda f: f.udp(sport=54), "default"),
        passes("dport-53", lambda f: f.udp(sport=40000, dport=53), "default"),
        passes("tcp-sport-53", lambda f: f.tcp(sport=53), "default"),
    ),
    case(
        "dport-single",
        ingress("""
            - name: dport-drop
              match: {proto: tcp, dport: 22}
              action: drop
        """),
        drops("dport-22", lambda f: f.tcp(dport=22), "dport-drop"),
        drops("dport-22-v6", lambda f: f.tcp(dport=22, v6=True), "dport-drop"),
        drops(
            "dport-22-ip-options",
            lambda f: f.tcp(dport=22, options=[IPOption_NOP()] * 3 + [IPOption_EOL()]),
            "dport-drop",
        ),
        passes("dport-21", lambda f: f.tcp(dport=21), "default"),
        passes("dport-23", lambda f: f.tcp(dport=23), "default"),
        passes("udp-dport-22", lambda f: f.udp(dport=22), "default"),
        passes("sport-22", lambda f: f.tcp(sport=22, dport=40000, flags="SA"), "default"),
    ),
    case(
        "dport-range",
        ingress("""
            - name: range-drop
              match: {proto: udp, dport: "1024-65535"}
              action: drop
        """),
        drops("low-edge", lambda f: f.udp(dport=1024), "range-drop"),
        drops("high-edge", lambda f: f.udp(dport=65535), "range-drop"),
        drops("middle-v6", lambda f: f.udp(dport=40000, v6=True), "range-drop"),
        passes("below", lambda f: f.udp(dport=1023), "default"),
        passes("port-0", lambda f: f.udp(dport=0), "default"),
        passes("dns", lambda f: f.udp(dport=53), "default"),
    ),
    case(
        "dport-list",
        ingress("""
            - name: dlist-drop
              match: {proto: tcp, dport: [22, 80, "8000-8080"]}
              action: drop
        """),
        drops("22", lambda f: f.tcp(dport=22), "dlist-drop"),
        drops("80", lambda f: f.tcp(dport=80), "dlist-drop"),
        drops("8000", lambda f: f.tcp(dport=8000), "dlist-drop"),
        drops("8080", lambda f: f.tcp(dport=8080), "dlist-drop"),
        passes("23", lambda f: f.tcp(dport=23), "default"),
        passes("79", lambda f: f.tcp(dport=79), "default"),
        passes("81", lambda f: f.tcp(dport=81), "default"),
        passes("7999", lambda f: f.tcp(dport=7999), "default"),
        passes("8081", lambda f: f.tcp(dport=8081), "default"),
    ),
    case(
        "ports-without-proto",
        ingress("""
            - name: anyport-drop
              match: {dport: 53}
              action: drop
        """),
        drops("tcp", lambda f: f.tcp(dport=53), "anyport-drop"),
        drops("udp", lambda f: f.udp(dport=53), "anyport-drop"),
        drops("udp6", lambda f: f.udp(dport=53, v6=True), "anyport-drop"),
        drops("sctp", lambda f: f.sctp(dport=53), "anyport-drop"),
        passes("icmp", lambda f: f.icmp(8), "default"),
        passes("icmp6", lambda f: f.icmp6(128), "default"),
        passes("gre-with-port-like-bytes", lambda f: f.ip(Raw(FAKE_PORTS), proto=47), "default"),
        passes("udp-54", lambda f: f.udp(dport=54), "default"),
    ),
    case(
        "overlapping-port-ranges",
        ingress("""
            - name: ovl-tcp-allow
              match: {proto: tcp, dport: "1000-2000"}
              action: allow
            - name: ovl-any-drop
              match: {dport: "1500-3000"}
              action: drop
        """),
        passes("tcp-1500", lambda f: f.tcp(dport=1500), "ovl-tcp-allow"),
        passes("tcp-2000", lambda f: f.tcp(dport=2000), "ovl-tcp-allow"),
        drops("tcp-2001", lambda f: f.tcp(dport=2001), "ovl-any-drop"),
        drops("udp-1500", lambda f: f.udp(dport=1500), "ovl-any-drop"),
        drops("udp-3000", lambda f: f.udp(dport=3000), "ovl-any-drop"),
        passes("udp-1499", lambda f: f.udp(dport=1499), "default"),
        passes("tcp-999", lambda f: f.tcp(dport=999), "default"),
        passes("tcp-3001", lambda f: f.tcp(dport=3001), "default"),
    ),
]


@pytest.mark.parametrize("c", PROTO_PORT_CASES)
def test_protocols_and_ports(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# TCP flags and ICMP


FLAG_ICMP_CASES = [
    case(
        "tcp-flags-syn-not-ack",
        ingress("""
            - name: syn-drop
              match: {tcp_flags: "syn,!ack"}
              action: drop
        """),
        drops("syn", lambda f: f.tcp(flags="S"), "syn-drop"),
        drops("syn-v6", lambda f: f.tcp(flags="S", v6=True), "syn-drop"),
        drops("syn-ece-cwr", lambda f: f.tcp(flags="SEC"), "syn-drop"),
        passes("syn-ack", lambda f: f.tcp(flags="SA"), "default"),
        passes("ack-psh", lambda f: f.tcp(flags="PA"), "default"),
        passes("rst", lambda f: f.tcp(flags="R"), "default"),
        passes("udp", lambda f: f.udp(), "default"),
    ),
    case(
        "icmp-echo-request-v4",
        ingress("""
            - name: ping4-drop
              match: {proto: icmp, icmp_type: echo-request}
              action: drop
        """),
        drops("echo-request", lambda f: f.icmp(8), "ping4-drop"),
        passes("echo-reply", lambda f: f.icmp(0), "default"),
        passes("v4-type-128", lambda f: f.icmp(128), "default"),
        passes("icmp6-echo-request", lambda f: f.icmp6(128), "default"),
    ),
    case(
        "icmp-echo-request-v6",
        ingress("""
            - name: ping6-drop
              match: {proto: icmpv6, icmp_type: echo-request}
              action: drop
        """),
        drops("echo-request", lambda f: f.icmp6(128), "ping6-drop"),
        passes("echo-reply", lambda f: f.icmp6(129), "default"),
        passes("v6-type-8", lambda f: f.icmp6(8), "default"),
        passes("icmp4-echo-request", lambda f: f.icmp(8), "default"),
    ),
    case(
        "icmp-echo-request-both-families",
        ingress("""
            - name: ping-drop
              match: {icmp_type: echo-request}
              action: drop
        """),
        drops("v4", lambda f: f.icmp(8), "ping-drop"),
        drops("v6", lambda f: f.icmp6(128), "ping-drop"),
        passes("v4-reply", lambda f: f.icmp(0), "default"),
        passes("v6-reply", lambda f: f.icmp6(129), "default"),
        passes("udp", lambda f: f.udp(), "default"),
    ),
    case(
        "icmp-code",
        ingress("""
            - name: portunreach-drop
              match: {proto: icmp, icmp_type: dest-unreachable, icmp_code: 3}
              action: drop
        """),
        drops("unreachable-port", lambda f: f.icmp(3, 3), "portunreach-drop"),
        passes("unreachable-host", lambda f: f.icmp(3, 1), "default"),
        passes("unreachable-frag-needed", lambda f: f.icmp(3, 4), "default"),
        passes("other-type-same-code", lambda f: f.icmp(11, 3), "default"),
    ),
    case(
        # Names resolve per family: dest-unreachable is 3 for icmp, 1 for
        # icmpv6; time-exceeded is 11 and 3.
        "icmp-type-names-per-family",
        ingress("""
            - name: icmpl-drop
              match: {icmp_type: [dest-unreachable, time-exceeded]}
              action: drop
        """),
        drops("v4-unreachable", lambda f: f.icmp(3, 1), "icmpl-drop"),
        drops("v4-time-exceeded", lambda f: f.icmp(11, 0), "icmpl-drop"),
        drops("v6-unreachable", lambda f: f.icmp6(1, 4), "icmpl-drop"),
        drops("v6-time-exceeded", lambda f: f.icmp6(3, 0), "icmpl-drop"),
        passes("v4-type-1", lambda f: f.icmp(1, 0), "default"),
        passes("v6-type-11", lambda f: f.icmp6(11, 0), "default"),
        passes("v4-echo", lambda f: f.icmp(8), "default"),
    ),
]


@pytest.mark.parametrize("c", FLAG_ICMP_CASES)
def test_tcp_flags_and_icmp(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# Order, defaults, audit mode


ORDER_CASES = [
    case(
        "first-match-allow-before-drop",
        ingress("""
            - name: fm-allow-host
              match: {src: 198.51.100.7}
              action: allow
            - name: fm-drop-net
              match: {src: 198.51.100.0/24}
              action: drop
        """),
        passes("host", lambda f: f.udp(src="198.51.100.7"), "fm-allow-host"),
        passes("host-tcp", lambda f: f.tcp(src="198.51.100.7"), "fm-allow-host"),
        drops("rest-of-net", lambda f: f.udp(src="198.51.100.8"), "fm-drop-net"),
        passes("elsewhere", lambda f: f.udp(src="203.0.113.1"), "default"),
    ),
    case(
        "default-allow",
        ingress(
            """
            - name: da-discard
              match: {proto: udp, dport: 9}
              action: drop
            """,
            default="allow",
        ),
        drops("discard", lambda f: f.udp(dport=9), "da-discard"),
        passes("udp", lambda f: f.udp(dport=10), "default"),
        passes("tcp", lambda f: f.tcp(), "default"),
        passes("icmp", lambda f: f.icmp(8), "default"),
        passes("udp6", lambda f: f.udp(v6=True), "default"),
    ),
    case(
        "default-drop",
        ingress(
            """
            - name: dd-mdns
              match: {proto: udp, dport: 5353}
              action: allow
            """,
            default="drop",
        ),
        passes("mdns", lambda f: f.udp(dport=5353), "dd-mdns"),
        passes("mdns6", lambda f: f.udp(dport=5353, v6=True), "dd-mdns"),
        drops("udp", lambda f: f.udp(dport=5354), "default"),
        drops("tcp", lambda f: f.tcp(dport=5353), "default"),
        drops("icmp", lambda f: f.icmp(8), "default"),
        drops("icmp6", lambda f: f.icmp6(128), "default"),
    ),
    case(
        "audit-mode-counts-but-drops-nothing",
        ingress(
            """
            - name: audit-udp-drop
              match: {proto: udp}
              action: drop
            """,
            default="drop",
            head="mode: audit\n",
        ),
        passes("udp4", lambda f: f.udp(), "audit-udp-drop"),
        passes("udp6", lambda f: f.udp(v6=True), "audit-udp-drop"),
        passes("tcp", lambda f: f.tcp(), "default"),
        passes("icmp", lambda f: f.icmp(8), "default"),
    ),
    case(
        "empty-match-matches-every-ip-packet",
        ingress("""
            - name: e-every-drop
              match: {}
              action: drop
        """),
        drops("udp4", lambda f: f.udp(), "e-every-drop"),
        drops("tcp6", lambda f: f.tcp(v6=True), "e-every-drop"),
        drops("icmp4", lambda f: f.icmp(8), "e-every-drop"),
        drops("gre", lambda f: f.proto(47), "e-every-drop"),
        drops("later-fragment", lambda f: f.ip(Raw(FAKE_PORTS), proto=17, frag=100), "e-every-drop"),
        passes("arp", lambda f: f.arp(), "non_ip"),
        passes("neighbour-solicitation", lambda f: f.ndp(135), "ndp"),
    ),
    case(
        # 130 rules span three 64-bit words of the rule bitmaps.
        "many-rules-across-bitmap-words",
        ingress(
            "\n".join(
                f"- {{name: w{i:03d}, match: {{proto: udp, dport: {20000 + i}}}, action: drop}}"
                for i in range(130)
            )
        ),
        drops("rule-0", lambda f: f.udp(dport=20000), "w000"),
        drops("rule-63", lambda f: f.udp(dport=20063), "w063"),
        drops("rule-64", lambda f: f.udp(dport=20064), "w064"),
        drops("rule-128", lambda f: f.udp(dport=20128), "w128"),
        drops("rule-129-v6", lambda f: f.udp(dport=20129, v6=True), "w129"),
        passes("after-last", lambda f: f.udp(dport=20130), "default"),
        passes("tcp", lambda f: f.tcp(dport=20064), "default"),
    ),
]


@pytest.mark.parametrize("c", ORDER_CASES)
def test_order_defaults_and_mode(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# Non-IP frames and neighbour discovery

LLDP = 0x88CC
LLDP_MAC = "01:80:c2:00:00:0e"

NON_IP_NDP_CASES = [
    case(
        "non-ip-drop",
        ingress(
            """
            - name: ni-discard
              match: {proto: udp, dport: 9}
              action: drop
            """,
            default="allow",
            head="non_ip: drop\n",
        ),
        drops("arp", lambda f: f.arp(), "non_ip"),
        drops("arp-vlan", lambda f: f.arp(vlans=[(0x8100, 5)]), "non_ip"),
        drops("lldp", lambda f: f.ethertype(LLDP, LLDP_MAC), "non_ip"),
        passes("udp", lambda f: f.udp(), "default"),
    ),
    case(
        "non-ip-allow",
        ingress(
            """
            - name: na-discard
              match: {proto: udp, dport: 9}
              action: drop
            """,
            default="drop",
            head="non_ip: allow\n",
        ),
        passes("arp", lambda f: f.arp(), "non_ip"),
        passes("lldp", lambda f: f.ethertype(LLDP, LLDP_MAC), "non_ip"),
        drops("udp", lambda f: f.udp(), "default"),
    ),
    case(
        "ndp-allow-bypasses-default-drop",
        ingress(
            """
            - name: nd-discard
              match: {proto: udp, dport: 9}
              action: drop
            """,
            default="drop",
            head="ndp: allow\n",
        ),
        passes("neighbour-solicitation", lambda f: f.ndp(135), "ndp"),
        passes("neighbour-advertisement", lambda f: f.ndp(136), "ndp"),
        passes("router-solicitation", lambda f: f.ndp(133), "ndp"),
        drops("echo-request", lambda f: f.icmp6(128), "default"),
        drops("type-138-not-ndp", lambda f: f.icmp6(138), "default"),
    ),
    case(
        "ndp-rules",
        ingress(
            """
            - name: nr-allow-ns
              match: {icmp_type: neighbor-solicitation}
              action: allow
            """,
            default="drop",
            head="ndp: rules\n",
        ),
        passes("neighbour-solicitation", lambda f: f.ndp(135), "nr-allow-ns"),
        drops("neighbour-advertisement", lambda f: f.ndp(136), "default"),
        drops("router-solicitation", lambda f: f.ndp(133), "default"),
    ),
]


@pytest.mark.parametrize("c", NON_IP_NDP_CASES)
def test_non_ip_and_ndp(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# Fragments and IPv6 extension headers


def _v6(f: Frames, *layers: Packet) -> bytes:
    """IPv6 from A to B carrying `layers` stacked in order."""
    pkt = IPv6(src=f.src.ip6, dst=f.dst.ip6)
    for layer in layers:
        pkt = pkt / layer
    return bytes(f.ether() / pkt)


def _udp(dport: int) -> Packet:
    return UDP(sport=40000, dport=dport) / Raw(b"udp")


FRAGMENT_CASES = [
    case(
        "ipv4-fragments",
        ingress("""
            - name: f4-dns
              match: {proto: udp, dport: 53}
              action: allow
            - name: f4-udp
              match: {proto: udp}
              action: drop
        """),
        passes("first-fragment-mf", lambda f: f.ip(_udp(53), flags="MF", frag=0, id=11), "f4-dns"),
        drops(
            "later-fragment", lambda f: f.ip(Raw(FAKE_PORTS), proto=17, flags="MF", frag=100, id=11), "f4-udp"
        ),
        drops("last-fragment", lambda f: f.ip(Raw(FAKE_PORTS), proto=17, frag=200, id=11), "f4-udp"),
        passes("later-tcp-fragment", lambda f: f.ip(Raw(FAKE_PORTS), proto=6, frag=100, id=12), "default"),
        passes("whole-dns", lambda f: f.udp(dport=53), "f4-dns"),
        drops("whole-udp", lambda f: f.udp(dport=54), "f4-udp"),
    ),
    case(
        "ipv6-fragment-header",
        ingress("""
            - name: f6-dns
              match: {proto: udp, dport: 53}
              action: allow
            - name: f6-udp
              match: {proto: udp}
              action: drop
        """),
        passes(
            "first-fragment-mf",
            lambda f: _v6(f, IPv6ExtHdrFragment(offset=0, m=1, id=11), _udp(53)),
            "f6-dns",
        ),
        drops(
            "later-fragment",
            lambda f: _v6(f, IPv6ExtHdrFragment(nh=17, offset=100, m=1, id=11), Raw(FAKE_PORTS)),
            "f6-udp",
        ),
        drops(
            "last-fragment",
            lambda f: _v6(f, IPv6ExtHdrFragment(nh=17, offset=200, m=0, id=11), Raw(FAKE_PORTS)),
            "f6-udp",
        ),
        passes(
            "later-tcp-fragment",
            lambda f: _v6(f, IPv6ExtHdrFragment(nh=6, offset=100, m=1, id=12), Raw(FAKE_PORTS)),
            "default",
        ),
        passes(
            "hop-by-hop-then-first-fragment",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(offset=0, m=1, id=13), _udp(53)),
            "f6-dns",
        ),
        drops("whole-udp", lambda f: f.udp(dport=54, v6=True), "f6-udp"),
    ),
    case(
        "ipv6-extension-header-chain",
        ingress("""
            - name: x6-dns-drop
              match: {proto: udp, dport: 53}
              action: drop
        """),
        drops(
            "hbh-dstopts",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), _udp(53)),
            "x6-dns-drop",
        ),
        drops(
            "hbh-routing-long-dstopts",
            lambda f: _v6(
                f,
                IPv6ExtHdrHopByHop(),
                IPv6ExtHdrRouting(type=0, segleft=0),
                IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 12)]),  # 16 bytes: length field 1
                _udp(53),
            ),
            "x6-dns-drop",
        ),
        drops(
            "hbh-ah",
            lambda f: _v6(
                f, IPv6ExtHdrHopByHop(), AH(nh=17, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12), _udp(53)
            ),
            "x6-dns-drop",
        ),
        passes(
            "hbh-dstopts-other-port",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), _udp(54)),
            "default",
        ),
        drops(
            # The parser follows six extension headers (see the 7-header malformed case).
            "six-headers",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), *[IPv6ExtHdrDestOpt() for _ in range(5)], _udp(53)),
            "x6-dns-drop",
        ),
    ),
]


@pytest.mark.parametrize("c", FRAGMENT_CASES)
def test_fragments_and_extension_headers(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# Malformed packets: dropped and counted even where a rule allows everything


def _patched(frame: bytes, offset: int, value: int) -> bytes:
    b = bytearray(frame)
    b[offset] = value
    return bytes(b)


MALFORMED_CASES = [
    case(
        # One rule file for every kind: each frame's label names its defect.
        "malformed-even-where-a-rule-allows-everything",
        ingress("""
            - name: m-everything
              match: {}
              action: allow
        """),
        drops("ipv4-ihl-4", lambda f: _patched(f.udp(), 14, 0x44), "malformed"),
        drops("ipv4-ihl-0", lambda f: _patched(f.tcp(), 14, 0x40), "malformed"),
        drops("ipv4-total-length-beyond-frame", lambda f: f.ip(_udp(53), len=1000), "malformed"),
        drops("ipv6-payload-length-beyond-frame", lambda f: f.ip(_udp(53), v6=True, plen=1000), "malformed"),
        # The IP packet ends 10 bytes into the TCP header.
        drops(
            "ipv4-tcp-truncated", lambda f: f.ip(Raw(bytes(TCP(dport=22))[:10]), proto=6, len=30), "malformed"
        ),
        drops(
            "ipv6-tcp-truncated",
            lambda f: f.ip(Raw(TCP_HEAD_10), v6=True, nh=6, plen=10),
            "malformed",
        ),
        drops("tcp-data-offset-4", lambda f: f.ip(TCP(dport=22, dataofs=4)), "malformed"),
        drops(
            "ipv6-seven-extension-headers",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), *[IPv6ExtHdrDestOpt() for _ in range(6)], _udp(53)),
            "malformed",
        ),
        passes("well-formed-udp", lambda f: f.udp(), "m-everything"),
        passes("well-formed-tcp", lambda f: f.tcp(dport=22), "m-everything"),
        passes(
            "two-extension-headers",
            lambda f: _v6(f, IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), _udp(53)),
            "m-everything",
        ),
    ),
]


@pytest.mark.parametrize("c", MALFORMED_CASES)
def test_malformed(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


# ----------------------------------------------------------------------------
# VLAN tags: veth carries tagged frames as they are, so XDP sees the tags inline
# (the byte counts, which include the tags, show it).

VLAN_CASES = [
    case(
        "vlan-8021q",
        ingress("""
            - name: v1-dns-drop
              match: {proto: udp, dport: 53}
              action: drop
        """),
        drops("tagged-dns", lambda f: f.udp(dport=53, vlans=[(0x8100, 5)]), "v1-dns-drop"),
        drops("tagged-dns6", lambda f: f.udp(dport=53, v6=True, vlans=[(0x8100, 5)]), "v1-dns-drop"),
        passes("tagged-other", lambda f: f.udp(dport=54, vlans=[(0x8100, 5)]), "default"),
        drops("untagged-dns", lambda f: f.udp(dport=53), "v1-dns-drop"),
    ),
    case(
        "vlan-8021ad-8021q",
        ingress("""
            - name: v2-dns-drop
              match: {proto: udp, dport: 53}
              action: drop
        """),
        drops("qinq-dns", lambda f: f.udp(dport=53, vlans=QINQ), "v2-dns-drop"),
        drops("qinq-dns6", lambda f: f.udp(dport=53, v6=True, vlans=QINQ), "v2-dns-drop"),
        passes("qinq-other", lambda f: f.udp(dport=54, vlans=QINQ), "default"),
        passes("double-8021q-other", lambda f: f.udp(dport=54, vlans=[(0x8100, 1), (0x8100, 2)]), "default"),
    ),
    case(
        "vlan-third-tag-is-malformed",
        ingress("""
            - name: v3-dns-drop
              match: {proto: udp, dport: 53}
              action: drop
        """),
        drops("three-tags", lambda f: f.udp(dport=54, vlans=[*QINQ, (0x8100, 300)]), "malformed"),
        drops(
            "three-8021q",
            lambda f: f.udp(dport=54, vlans=[(0x8100, 1), (0x8100, 2), (0x8100, 3)]),
            "malformed",
        ),
        passes("two-tags", lambda f: f.udp(dport=54, vlans=QINQ), "default"),
    ),
]


@pytest.mark.parametrize("c", VLAN_CASES)
def test_vlan(wire: Wire, c: Case, tmp_path: Path) -> None:
    run_case(wire, c, tmp_path)


def test_rule_names_are_unique_across_cases() -> None:
    """A name reused by two cases would carry its counter from one to the other."""
    seen: dict[str, str] = {}
    for group in (
        ADDRESS_CASES,
        PROTO_PORT_CASES,
        FLAG_ICMP_CASES,
        ORDER_CASES,
        NON_IP_NDP_CASES,
        FRAGMENT_CASES,
        MALFORMED_CASES,
        VLAN_CASES,
    ):
        for p in group:
            c: Case = p.values[0]
            for r in yaml.safe_load(c.rules)["ingress"]["rules"]:
                assert r["name"] not in seen, f"{r['name']} in {seen.get(r['name'])} and {c.id}"
                seen[r["name"]] = c.id
