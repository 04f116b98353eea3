"""`xdpguard test RULES CASES` without root: cases files, packets, frames, the plan check.

The cases-file parser must report every mistake as `file:line: message`
(exit 2, no traceback), like the rule parser.  The frames built for the
kernel must parse (packet.parse_frame, the mirror of the BPF parser) into
exactly the packet the plan check classifies, with checksums a real stack
accepts.  The command's exit codes and its diff of failures are the
contract an operator and CI scripts rely on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unprivileged import without_privileges
from xdpguard.cases.case import Case
from xdpguard.cases.parse import load_cases, parse_cases_text
from xdpguard.cases.plan import plan_outcomes, run_plan
from xdpguard.errors import RuleError
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import MALFORMED, NON_IP, parse_frame
from xdpguard.rules.parse import load, parse_text

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"
EXAMPLES = ["web-edge", "bastion", "dns-server"]

RULES = """\
version: 1
ingress:
  default: drop
  rules:
    - {name: replies, match: {state: established}, action: allow}
    - {name: web, match: {proto: tcp, dport: [80, 443]}, action: allow}
    - {name: ssh, match: {src: 203.0.113.0/24, proto: tcp, dport: 22}, action: allow}
    - {name: pings, match: {icmp_type: echo-request}, action: allow}
egress:
  default: allow
  rules:
    - {name: no-smtp, match: {proto: tcp, dport: 25}, action: drop}
"""
RS = parse_text(RULES, "rules.yaml")


def cases(text: str) -> list[Case]:
    return parse_cases_text(textwrap.dedent(text), "cases.yaml", RS)


def xdpguard(*args: str | os.PathLike[str], unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "xdpguard", *map(str, args)]
    return subprocess.run(
        without_privileges(argv) if unprivileged else argv,
        capture_output=True,
        text=True,
        env=os.environ | {"COLUMNS": "250", "HOME": "/tmp"},
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """Where a test writes its rule and case files."""
    return tmp_path


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(textwrap.dedent(text))
    p.chmod(0o644)
    return p


# --------------------------------------------------------------------------
# The examples: every case passes with the compiled plan


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_cases_pass_with_the_plan(name: str) -> None:
    rs = load(RULES_DIR / f"{name}.yaml")
    cs = load_cases(RULES_DIR / f"{name}.cases.yaml", rs)
    assert 8 <= len(cs) <= 20
    results = run_plan(compile_ruleset(rs), cs)
    assert [r.case.name for r in results if not r.ok] == []
    # Realistic means both verdicts, both directions, and rules named.
    assert {r.got.verdict for r in results} == {"allow", "drop"}
    assert {c.direction for c in cs} == {"ingress", "egress"}
    assert all(c.expect_rule for c in cs)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_frames_parse_into_the_packets_the_plan_classifies(name: str) -> None:
    rs = load(RULES_DIR / f"{name}.yaml")
    for case in load_cases(RULES_DIR / f"{name}.cases.yaml", rs):
        for c in (case, case.opener()):
            if c is not None:
                assert parse_frame(c.frame()) == c.packet(established=False), c.name


# --------------------------------------------------------------------------
# Packets and frames

V4 = "src: 198.51.100.7, dst: 192.0.2.10"
V6 = 'src: "2001:db8::7", dst: "2001:db8::10"'
ALL_SHAPES = f"""\
cases:
  - {{name: tcp4, {V4}, proto: tcp, sport: 1234, dport: 443, tcp_flags: "syn,ack", expect: allow}}
  - {{name: tcp6, {V6}, proto: tcp, dport: 80, tcp_flags: none, expect: allow}}
  - {{name: udp4, {V4}, proto: udp, dport: 53, length: 200, expect: drop}}
  - {{name: udp6, {V6}, proto: udp, dport: 53, expect: drop}}
  - {{name: sctp4, {V4}, proto: sctp, dport: 9899, expect: drop}}
  - {{name: sctp6, {V6}, proto: sctp, dport: 9899, length: 100, expect: drop}}
  - {{name: icmp4, {V4}, icmp_type: dest-unreachable, icmp_code: 4, expect: drop}}
  - {{name: echo4, {V4}, proto: icmp, icmp_type: 8, expect: allow}}
  - {{name: echo6, {V6}, icmp_type: echo-request, expect: allow}}
  - {{name: ns6, src: "fe80::1", dst: "ff02::1:ff00:10", icmp_type: neighbor-solicitation, expect: allow}}
  - {{name: gre4, {V4}, proto: 47, expect: drop}}
  - {{name: first4, {V4}, proto: tcp, dport: 80, fragment: first, expect: allow}}
  - {{name: later4, {V4}, proto: tcp, fragment: later, expect: drop}}
  - {{name: first6, {V6}, proto: udp, dport: 53, fragment: first, expect: drop}}
  - {{name: later6, {V6}, proto: udp, fragment: later, length: 300, expect: drop}}
  - {{name: arp, ethertype: arp, expect: allow}}
  - {{name: lldp, ethertype: 0x88cc, expect: allow}}
  - {{name: cut4, {V4}, proto: tcp, dport: 80, truncate: 40, expect: drop}}
  - {{name: cut6, {V6}, proto: udp, dport: 53, truncate: 61, expect: drop}}
  - {{name: est4, {V4}, proto: tcp, sport: 443, dport: 50000, state: established, expect: allow}}
  - {{name: est6, {V6}, icmp_type: echo-reply, state: established, expect: allow}}
"""


def test_every_shape_of_frame_parses_into_its_packet() -> None:
    cs = cases(ALL_SHAPES)
    for case in cs:
        frame = case.frame()
        assert parse_frame(frame) == case.packet(established=False), case.name
        assert len(frame) == (case.truncate or case.frame_length())
    by = {c.name: c for c in cs}
    assert by["cut4"].packet().kind == MALFORMED and by["arp"].packet().kind == NON_IP
    assert len(by["udp4"].frame()) == 200
    assert by["later6"].packet().later_fragment and by["later6"].packet().sport is None
    assert by["first6"].packet().dport == 53 and not by["first6"].packet().later_fragment
    assert by["tcp4"].packet().tcp_flags == 0x12 and by["tcp6"].packet().tcp_flags == 0
    assert by["est4"].packet().established and by["est4"].packet(established=False).established is False


def test_frames_carry_checksums_a_real_stack_accepts() -> None:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.layers.sctp import SCTP

    checked = 0
    for case in cases(ALL_SHAPES):
        if case.truncate is not None or not case.is_ip or case.fragment is not None:
            continue
        frame = case.frame()
        pkt = Ether(frame)
        for layer in (IP, TCP, UDP, SCTP, ICMP):
            if pkt.haslayer(layer):
                del pkt[layer].chksum
        if pkt.haslayer(IPv6) and pkt[IPv6].nh == 58:
            icmp6 = pkt[IPv6].payload
            if not any(f.name == "cksum" for f in icmp6.fields_desc):
                continue  # scapy sees a 4-byte neighbour solicitation as raw bytes
            del icmp6.cksum
        assert bytes(Ether(bytes(pkt))) == frame, case.name
        checked += 1
    assert checked >= 10


def test_established_needs_the_opening_packet_to_get_out() -> None:
    rs = parse_text(RULES.replace("default: allow", "default: drop"), "rules.yaml")
    cs = parse_cases_text(
        textwrap.dedent("""\
        cases:
          - name: answer
            src: 198.51.100.7
            dst: 192.0.2.10
            proto: udp
            sport: 53
            dport: 40000
            state: established
            expect: {verdict: allow, rule: replies}
        """),
        "cases.yaml",
        rs,
    )
    [case] = cs
    opener = case.opener()
    assert opener is not None and opener.direction == "egress"
    assert (opener.src, opener.sport, opener.dst, opener.dport) == (case.dst, 40000, case.src, 53)
    # The egress default now drops the query, so no flow: the answer is new.
    [got] = plan_outcomes(compile_ruleset(rs), cs)
    assert (got.verdict, got.rule) == ("drop", "default")
    assert "no flow" in got.note and "egress default" in got.note
    [got] = plan_outcomes(compile_ruleset(RS), parse_cases_text(textwrap.dedent("""\
        cases:
          - {src: 198.51.100.7, dst: 192.0.2.10, proto: udp, sport: 53, dport: 40000, state: established,
             expect: allow}
        """), "cases.yaml", RS))  # fmt: skip
    assert (got.verdict, got.rule, got.note) == ("allow", "replies", "")


def test_audit_mode_allows_what_a_rule_would_drop() -> None:
    rs = parse_text(RULES.replace("version: 1\n", "version: 1\nmode: audit\n"), "rules.yaml")
    [got] = plan_outcomes(
        compile_ruleset(rs),
        parse_cases_text(
            "cases: [{src: 198.51.100.7, dst: 192.0.2.10, proto: udp, dport: 9, expect: allow}]", "c.yaml", rs
        ),
    )
    assert (got.verdict, got.rule) == ("allow", "default")


def test_defaults_and_summary() -> None:
    [tcp, ping6, later] = cases("""\
        cases:
          - {src: 198.51.100.7, dst: 192.0.2.10, proto: tcp, dport: 443, expect: {verdict: allow, rule: web}}
          - {name: p, src: "2001:db8::7", dst: "2001:db8::10", icmp_type: echo-request, expect: allow}
          - {src: 198.51.100.7, dst: 192.0.2.10, proto: udp, fragment: later, expect: drop}
        """)
    assert tcp.name == "#1" and tcp.direction == "ingress" and tcp.sport == 40000 and tcp.tcp_flags == 0x02
    assert tcp.summary() == "tcp 198.51.100.7:40000 > 192.0.2.10:443 [syn]"
    assert tcp.expected() == "allow by web"
    assert ping6.proto == 58 and ping6.icmp_type == 128 and ping6.icmp_code == 0
    assert ping6.summary() == "icmpv6 2001:db8::7 > 2001:db8::10 echo-request"
    assert later.summary() == "udp 198.51.100.7 > 192.0.2.10 (later fragment)"
    assert later.expected() == "drop"


# --------------------------------------------------------------------------
# Invalid cases files: file:line: message

OK_CASE = f"{{{V4}, proto: tcp, dport: 443, expect: allow}}"


def E(name: str, line: int, message: str, text: str) -> object:
    """One invalid cases file (its text starts on the line after the opening quotes)."""
    return pytest.param(textwrap.dedent(text).lstrip("\n"), line, message, id=name)


ERRORS = [
    E("yaml-syntax", 3, "invalid YAML", """
        cases:
          - {src: [1, 2
        """),
    E("empty-file", 1, "the cases file is empty", ""),
    E("top-level-list", 1, "must be a mapping with `cases:`", """
        - a
        - b
        """),
    E("unknown-top-key", 2, 'unknown key "case" at the top level', f"""
        cases: [{OK_CASE}]
        case: 1
        """),
    E("no-cases-key", 1, 'missing "cases"', "{}\n"),
    E("cases-not-list", 1, "cases: expected a list of cases", "cases: {a: 1}\n"),
    E("cases-empty", 1, "the list is empty", "cases: []\n"),
    E("case-not-mapping", 2, "a case must be a mapping", """
        cases:
          - just a string
        """),
    E("unknown-case-key", 3, 'unknown key "dprot" in case (did you mean "dport"?)', """
        cases:
          - src: 198.51.100.7
            dprot: 443
        """),
    E("duplicate-key", 3, 'duplicate key "src" (first at line 2)', """
        cases:
          - src: 198.51.100.7
            src: 198.51.100.8
        """),
    E("bad-direction", 2, 'direction: "ingres" must be ingress or egress (did you mean "ingress"?)', """
        cases:
          - direction: ingres
        """),
    E("missing-expect", 2, 'case has no "expect"', f"""
        cases:
          - {{{V4}}}
        """),
    E("expect-bad-word", 2, 'expect: "alow" must be allow or drop (did you mean "allow"?)', """
        cases:
          - expect: alow
        """),
    E("expect-no-verdict", 3, 'expect has no "verdict"', """
        cases:
          - expect:
              rule: web
        """),
    E("expect-bad-verdict", 2, 'verdict: "pass" must be allow or drop', """
        cases:
          - expect: {verdict: pass}
        """),
    E("expect-unknown-key", 2, 'unknown key "reason" in expect', """
        cases:
          - expect: {verdict: drop, reason: web}
        """),
    E("expect-unknown-rule", 4, '"wbe" is not an ingress rule of the rule file (did you mean "web"?)', """
        cases:
          - expect:
              verdict: allow
              rule: wbe
        """),
    E("expect-other-direction", 2, "it is an egress rule: add `direction: egress`?", """
        cases:
          - expect: {verdict: drop, rule: no-smtp}
        """),
    E("expect-rule-not-string", 2, "rule: 5 must be a rule name", """
        cases:
          - expect: {verdict: drop, rule: 5}
        """),
    E("duplicate-name", 4, 'name: "a" is already used by the case at line 2', f"""
        cases:
          - {{name: a, {V4}, proto: tcp, dport: 80, expect: allow}}
          - {{name: b, {V4}, proto: tcp, dport: 81, expect: allow}}
          - name: a
        """),
    E("name-not-string", 2, "must be a non-empty string", """
        cases:
          - name: [a]
        """),
    E("missing-src", 2, 'case has no "src"', """
        cases:
          - dst: 192.0.2.10
            expect: drop
        """),
    E("bad-address", 2, 'src: "198.51.100.300" is not an IPv4 or IPv6 address', """
        cases:
          - src: 198.51.100.300
            expect: drop
        """),
    E("cidr-address", 2, "is a network: a case is one packet", """
        cases:
          - src: 198.51.100.0/24
            expect: drop
        """),
    E("number-address", 2, "src: 12 is not an IP address (quote IPv6 addresses)", """
        cases:
          - src: 12
            expect: drop
        """),
    E("family-mismatch", 3, 'dst: "2001:db8::1" is IPv6 but src is IPv4', """
        cases:
          - src: 198.51.100.7
            dst: "2001:db8::1"
            expect: drop
        """),
    E("missing-proto", 2, 'case has no "proto"', f"""
        cases:
          - {{{V4}, expect: drop}}
        """),
    E("unknown-proto", 3, 'is not tcp, udp, icmp, icmpv6, sctp or a number 0-255 (did you mean "tcp"?)', f"""
        cases:
          - {{{V4},
             proto: tpc, expect: drop}}
        """),
    E("proto-range", 2, "proto: 300 is out of range (0-255)", f"""
        cases:
          - {{{V4}, proto: 300, expect: drop}}
        """),
    E("icmp-with-v6", 2, "IPv6 uses icmpv6", f"""
        cases:
          - {{{V6}, proto: icmp, expect: drop}}
        """),
    E("icmpv6-with-v4", 2, "IPv4 uses icmp", f"""
        cases:
          - {{{V4}, proto: icmpv6, expect: drop}}
        """),
    E("v6-extension-header", 2, "proto: 44 is an IPv6 extension header", f"""
        cases:
          - {{{V6}, proto: 44, expect: drop}}
        """),
    E("missing-dport", 2, 'case has no "dport" (udp needs a destination port)', f"""
        cases:
          - {{{V4}, proto: udp, expect: drop}}
        """),
    E("port-range", 2, "dport: 70000 is out of range (0-65535)", f"""
        cases:
          - {{{V4}, proto: udp, dport: 70000, expect: drop}}
        """),
    E("port-not-number", 2, 'sport: "any" is not a port number', f"""
        cases:
          - {{{V4}, proto: udp, dport: 53, sport: any, expect: drop}}
        """),
    E("unknown-flag", 2, 'has an unknown flag "akc" (did you mean "ack"?)', f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, tcp_flags: "syn,akc", expect: drop}}
        """),
    E("negated-flag", 2, "list only the set ones", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, tcp_flags: "!ack", expect: drop}}
        """),
    E("flags-with-udp", 4, "tcp_flags: needs proto tcp, but proto is udp", f"""
        cases:
          - {{{V4}, proto: udp, dport: 53,
             expect: drop,
             tcp_flags: syn}}
        """),
    E("ports-with-icmp", 3, "dport: needs proto tcp, udp or sctp; icmp has no ports", f"""
        cases:
          - {{{V4}, proto: icmp, expect: drop,
             dport: 53}}
        """),
    E("icmp-type-with-tcp", 3, "icmp_type: needs proto icmp or icmpv6, but proto is tcp", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, expect: drop,
             icmp_type: 8}}
        """),
    E("icmp-code-with-gre", 2, "icmp_code: needs proto icmp or icmpv6, but proto is proto 47", f"""
        cases:
          - {{{V4}, proto: 47, icmp_code: 1, expect: drop}}
        """),
    E("unknown-icmp-type", 2, '"echo-requets" is not an icmp type number or name (did you mean "echo-r', f"""
        cases:
          - {{{V4}, icmp_type: echo-requets, expect: drop}}
        """),
    E("icmp-type-other-family", 2, 'icmp_type: "packet-too-big" exists only for icmpv6, not icmp', f"""
        cases:
          - {{{V4}, icmp_type: packet-too-big, expect: drop}}
        """),
    E("missing-icmp-type", 2, 'case has no "icmp_type"', f"""
        cases:
          - {{{V4}, proto: icmp, expect: drop}}
        """),
    E("icmp-code-range", 2, "icmp_code: 256 is out of range (0-255)", f"""
        cases:
          - {{{V4}, icmp_type: 3, icmp_code: 256, expect: drop}}
        """),
    E("bad-state", 2, 'state: "related" must be established or new', f"""
        cases:
          - {{{V4}, proto: udp, dport: 53, state: related, expect: drop}}
        """),
    E("state-on-egress", 5, "state: established is an ingress condition", """
        cases:
          - direction: egress
            src: 192.0.2.10
            dst: 198.51.100.7
            state: established
            proto: udp
            dport: 53
            expect: drop
        """),
    E("state-later-fragment", 3, "a later fragment has no ports, so it belongs to no flow", f"""
        cases:
          - {{{V4}, proto: udp, fragment: later, expect: drop,
             state: established}}
        """),
    E("state-icmp-error", 3, "only TCP, UDP, SCTP and ICMP echo replies belong to flows", f"""
        cases:
          - {{{V4}, icmp_type: dest-unreachable, expect: drop,
             state: established}}
        """),
    E("state-syn", 3, "a SYN without ACK starts a connection, it never answers one", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 443, state: established,
             tcp_flags: "syn", expect: drop}}
        """),
    E("bad-fragment", 2, 'fragment: "middle" must be first or later', f"""
        cases:
          - {{{V4}, proto: udp, dport: 53, fragment: middle, expect: drop}}
        """),
    E("later-fragment-ports", 3, "dport: a later fragment carries no", f"""
        cases:
          - {{{V4}, proto: udp, fragment: later, expect: drop,
             dport: 53}}
        """),
    E("length-too-short", 2, "length: 40 is shorter than this packet's headers (54 bytes", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, length: 40, expect: drop}}
        """),
    E("length-too-long", 2, "length: 9000 is out of range (0-1514)", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, length: 9000, expect: drop}}
        """),
    E("truncate-range", 2, "truncate: 54 must cut the 54-byte frame", f"""
        cases:
          - {{{V4}, proto: tcp, dport: 80, truncate: 54, expect: drop}}
        """),
    E("truncate-non-ip", 3, "truncate: makes an IP packet malformed", """
        cases:
          - ethertype: arp
            truncate: 20
            expect: drop
        """),
    E("unknown-ethertype", 2, 'ethertype: "ipx" is not arp, lldp or a number', """
        cases:
          - {ethertype: ipx, expect: drop}
        """),
    E("ip-ethertype", 2, "ethertype: 0x86dd is IPv6: describe IP packets with src and dst", """
        cases:
          - {ethertype: 0x86dd, expect: drop}
        """),
    E("ethertype-range", 2, "ethertype: 16 is out of range (0x0600-0xffff)", """
        cases:
          - {ethertype: 16, expect: drop}
        """),
    E("non-ip-with-address", 3, "src: a non-IP frame (ethertype) has no src", """
        cases:
          - ethertype: arp
            src: 198.51.100.7
            expect: drop
        """),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_invalid_cases_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RuleError) as exc:
        parse_cases_text(text, "cases.yaml", RS)
    assert exc.value.line == line, str(exc.value)
    assert str(exc.value).startswith(f"cases.yaml:{line}: ")
    assert message in str(exc.value)


def test_not_utf8_and_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"cases:\n  - name: caf\xe9\n")
    with pytest.raises(RuleError, match=r"bad\.yaml:2: not UTF-8 text \(byte 0xe9\)"):
        load_cases(bad, RS)
    with pytest.raises(RuleError, match=r"missing\.yaml: cannot read cases file"):
        load_cases(tmp_path / "missing.yaml", RS)


@pytest.mark.parametrize(
    ("cases_text", "pattern"),
    [
        ("cases:\n  - {src: 198.51.100.7, dst: 192.0.2.10, proto: udp, dport: 99999, expect: drop}\n",
         r"^{cases}:2: dport: 99999 is out of range \(0-65535\)$"),
        ("cases: [\n", r"^{cases}:2: invalid YAML"),
    ],
)  # fmt: skip
def test_cli_reports_invalid_cases_with_exit_2(shared_dir: Path, cases_text: str, pattern: str) -> None:
    rules = write(shared_dir, "rules.yaml", RULES)
    path = write(shared_dir, "cases.yaml", cases_text)
    r = xdpguard("test", rules, path)
    assert r.returncode == 2, r.stderr
    assert re.match(pattern.format(cases=re.escape(str(path))), r.stderr.strip()), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_cli_reports_invalid_rules_and_missing_files_with_exit_2(shared_dir: Path) -> None:
    rules = write(shared_dir, "rules.yaml", RULES.replace("dport: 22", "dport: 99999"))
    path = write(shared_dir, "cases.yaml", f"cases: [{OK_CASE}]\n")
    r = xdpguard("test", rules, path)
    assert r.returncode == 2 and re.match(rf"^{re.escape(str(rules))}:\d+: dport", r.stderr), r.stderr
    r = xdpguard("test", RULES_DIR / "web-edge.yaml", shared_dir / "nope.yaml")
    assert r.returncode == 2 and "nope.yaml: cannot read cases file" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# The command: exit codes, table, diff of failures, JSON, without root

FAILING = """\
cases:
  - name: https
    src: 198.51.100.7
    dst: 192.0.2.10
    proto: tcp
    dport: 443
    expect: {verdict: allow, rule: web}
  - name: ssh-from-anywhere
    src: 198.51.100.7
    dst: 192.0.2.10
    proto: tcp
    dport: 22
    expect: {verdict: allow, rule: ssh}
  - name: smtp-out
    direction: egress
    src: 192.0.2.10
    dst: 198.51.100.25
    proto: tcp
    dport: 25
    expect: allow
"""


def test_passing_examples_exit_0_without_root() -> None:
    for name in EXAMPLES:
        r = xdpguard("test", f"rules/{name}.yaml", f"rules/{name}.cases.yaml", unprivileged=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "FAIL" not in r.stdout
        assert re.search(r"\n\d+ passed, 0 failed$", r.stdout.rstrip())
        assert "checked by the compiled plan" in r.stdout


def test_failures_exit_1_with_a_diff(shared_dir: Path) -> None:
    rules = write(shared_dir, "rules.yaml", RULES)
    path = write(shared_dir, "cases.yaml", FAILING)
    r = xdpguard("test", rules, path, unprivileged=True)
    assert r.returncode == 1, r.stderr
    out = r.stdout
    # Not a terminal: plain rows, one per case.
    assert re.search(r"^https .* OK$", out, re.M) and re.search(r"^ssh-from-anywhere .* FAIL$", out, re.M)
    diff = out[out.index(f"FAIL ssh-from-anywhere ({path}:8)") :]
    assert diff.splitlines()[:4] == [
        f"FAIL ssh-from-anywhere ({path}:8)",
        "     ingress tcp 198.51.100.7:40000 > 192.0.2.10:22 [syn]",
        "  -  expected: allow by ssh",
        "  +  got:      drop by default",
    ]
    assert f"FAIL smtp-out ({path}:14)" in out
    assert "  +  got:      drop by no-smtp" in out
    assert out.rstrip().endswith("1 passed, 2 failed")
    assert r.stderr == ""


def test_failures_only_prints_no_table(shared_dir: Path) -> None:
    rules = write(shared_dir, "rules.yaml", RULES)
    path = write(shared_dir, "cases.yaml", FAILING)
    r = xdpguard("test", rules, path, "-q")
    assert r.returncode == 1
    assert "┃" not in r.stdout and "https" not in r.stdout.replace("ssh-from-anywhere", "")
    assert "FAIL ssh-from-anywhere" in r.stdout and r.stdout.rstrip().endswith("1 passed, 2 failed")


def test_json_output(shared_dir: Path) -> None:
    rules = write(shared_dir, "rules.yaml", RULES)
    path = write(shared_dir, "cases.yaml", FAILING)
    r = xdpguard("test", rules, path, "--json", unprivileged=True)
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert (doc["mode"], doc["passed"], doc["failed"]) == ("plan", 1, 2)
    assert doc["rules"] == str(rules) and doc["cases"] == str(path)
    ssh = doc["results"][1]
    assert ssh == {
        "name": "ssh-from-anywhere",
        "line": 8,
        "direction": "ingress",
        "packet": "tcp 198.51.100.7:40000 > 192.0.2.10:22 [syn]",
        "expect": {"verdict": "allow", "rule": "ssh"},
        "got": {"verdict": "drop", "rule": "default"},
        "note": None,
        "ok": False,
    }
    assert [x["ok"] for x in doc["results"]] == [True, False, False]
    r = xdpguard("test", "rules/bastion.yaml", "rules/bastion.cases.yaml", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["failed"] == 0


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_wrong_expectation_in_an_example_fails(shared_dir: Path, name: str) -> None:
    text = (RULES_DIR / f"{name}.cases.yaml").read_text()
    assert "expect: {verdict: allow, rule: " in text
    flipped = text.replace("expect: {verdict: allow, rule: ", "expect: {verdict: drop, rule: ", 1)
    path = write(shared_dir, "cases.yaml", flipped)
    shutil.copytree(RULES_DIR / "lists", shared_dir / "lists")
    rules = shared_dir / "rules.yaml"
    shutil.copy(RULES_DIR / f"{name}.yaml", rules)
    r = xdpguard("test", rules, path, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["failed"] == 1 and doc["passed"] == len(doc["results"]) - 1
    [bad] = [x for x in doc["results"] if not x["ok"]]
    assert bad["expect"]["verdict"] == "drop"
    assert bad["got"] == {"verdict": "allow", "rule": bad["expect"]["rule"]}


def test_kernel_mode_without_root_is_a_clear_runtime_error() -> None:
    r = xdpguard("test", "rules/web-edge.yaml", "rules/web-edge.cases.yaml", "--kernel", unprivileged=True)
    assert r.returncode == 1
    assert "run as root" in r.stderr and "Traceback" not in r.stderr
    r = xdpguard("test", "rules/web-edge.yaml", "rules/web-edge.cases.yaml", "--wire", unprivileged=True)
    assert r.returncode == 1 and "run as root" in r.stderr


def test_help_documents_the_wire_mode() -> None:
    r = xdpguard("test", "--help")
    assert r.returncode == 0
    assert "--wire" in r.stdout and "throw-away" in r.stdout and "--kernel" in r.stdout
