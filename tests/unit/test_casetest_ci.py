"""`xdpguard test` for CI: repeated packets with per-packet expectations, JUnit, plain output.

Cases with `repeat` and expectation lists run on a simulated clock in
plan mode (the kernel runs are in tests/netns/test_casetest_kernel.py);
`--junit` writes a report a JUnit parser reads back; without a terminal
every table row is one plain line, whatever the width.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import junitparser
import pytest

from tests.rulesets import ssh_guard
from xdpguard.cases.case import Expect
from xdpguard.cases.parse import parse_cases_text
from xdpguard.cases.plan import run_plan
from xdpguard.errors import RuleError
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text

REPO = Path(__file__).resolve().parents[2]

RULES = (
    ssh_guard("203.0.113.0/24")
    + """\
    - name: dns
      match: {proto: udp, dport: 53}
      action: allow
      rate_limit: {pps: 10, burst: 2}
"""
)
RS = parse_text(RULES, "rules.yaml")
SYN = "src: 203.0.113.7, dst: 192.0.2.1, proto: tcp, dport: 22"


def cases(text: str) -> list:
    return parse_cases_text(textwrap.dedent(text), "cases.yaml", RS)


def results(text: str) -> list:
    return run_plan(compile_ruleset(RS), cases(text))


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "xdpguard", *map(str, args)],
        capture_output=True,
        text=True,
        env=environ | (env or {}),
        cwd=REPO,
        timeout=60,
    )


# ---- repeat and expectation lists


def test_repeat_with_one_expectation_applies_it_to_every_packet() -> None:
    [c] = cases(f"cases: [{{{SYN}, repeat: 3, interval: 1s, expect: {{verdict: allow, rule: ssh-office}}}}]")
    assert c.repeat == 3 and c.expects == (Expect("allow", "ssh-office"),) * 3
    assert c.gaps == (0.0, 1.0, 1.0) and c.offsets_ns() == [0, 10**9, 2 * 10**9]


def test_expectation_list_with_counts_and_waits() -> None:
    [c] = cases(f"cases: [{{{SYN}, expect: [allow x5, drop by ssh-guard, wait 10m, allow by ssh-office]}}]")
    assert c.repeat == 7
    assert [str(e) for e in c.expects] == ["allow"] * 5 + ["drop by ssh-guard", "allow by ssh-office"]
    assert c.gaps == (0.0,) * 6 + (600.0,)
    assert c.expected() == "allow x5, drop by ssh-guard, wait 10m, allow by ssh-office"


def test_the_ssh_guard_sequence_in_plan_mode() -> None:
    [r] = results(
        f"cases: [{{{SYN}, expect: [allow by ssh-office x5, drop by ssh-guard, drop by blocked, "
        "wait 10m, allow by ssh-office]}]"
    )
    assert r.ok, r.diff("cases.yaml")
    assert [g.note for g in r.gots][5] == "over its rate limit"
    assert r.got_text() == (
        "allow by ssh-office x5, drop by ssh-guard, drop by blocked, wait 10m, allow by ssh-office"
    )


def test_interval_lets_the_bucket_refill() -> None:
    # 10 pps, burst 2: 1 ms apart the third is over; 100 ms apart none is.
    [fast, slow] = results("""\
        cases:
          - {name: fast, src: 198.51.100.1, dst: 192.0.2.1, proto: udp, dport: 53, repeat: 4, interval: 1ms,
             expect: [allow by dns x2, drop by dns x2]}
          - {name: slow, src: 198.51.100.1, dst: 192.0.2.1, proto: udp, dport: 53, repeat: 4, interval: 100ms,
             expect: allow}
        """)
    assert fast.ok and slow.ok, (fast.diff("c"), slow.diff("c"))


def test_cases_start_afresh() -> None:
    # Each case its own buckets: the second case's first packet is within the limit again.
    rs = results(f"""\
        cases:
          - {{name: a, {SYN}, repeat: 6, expect: [allow x5, drop]}}
          - {{name: b, {SYN}, repeat: 6, expect: [allow x5, drop]}}
        """)
    assert [r.ok for r in rs] == [True, True]


def test_a_failed_packet_is_reported_with_its_position() -> None:
    [r] = results(f"cases: [{{{SYN}, repeat: 6, expect: allow}}]")
    assert not r.ok and r.first_miss == 5
    diff = r.diff("cases.yaml")
    assert diff[2] == "     packet 6 of 6 is the first that differs"
    assert diff[3] == "  -  expected: allow x6"
    assert diff[4] == "  +  got:      allow by ssh-office x5, drop by ssh-guard"
    doc = r.to_json()
    assert doc["first_failed_packet"] == 6 and doc["got"] == {"verdict": "drop", "rule": "ssh-guard"}
    assert [p["ok"] for p in doc["packets"]] == [True] * 5 + [False]


@pytest.mark.parametrize(
    "case, line, fragments",
    [
        (
            f"{{{SYN}, repeat: 3, expect: [allow, drop]}}",
            2,
            ["repeat: 3, but the expect list names 2 packets"],
        ),
        (f"{{{SYN}, repeat: 0, expect: allow}}", 2, ["repeat: 0 is out of range (1-10000)"]),
        (f"{{{SYN}, repeat: many, expect: allow}}", 2, ['repeat: "many" is not a number of packets']),
        (f"{{{SYN}, expect: [allow, perhaps]}}", 2, ['expect: "perhaps" is not VERDICT [by RULE] [xN]']),
        (f"{{{SYN}, expect: [allow by ssh-ofice]}}", 2, ['rule: "ssh-ofice"', 'did you mean "ssh-office"']),
        (f"{{{SYN}, expect: [allow, wait soon]}}", 2, ['expect: "wait soon": "soon" is not a duration']),
        (f"{{{SYN}, expect: [allow, wait 1m]}}", 2, ["a wait at the end of the list waits for nothing"]),
        (f"{{{SYN}, expect: []}}", 2, ["the list names no packet"]),
        (f"{{{SYN}, expect: [allow x0]}}", 2, ["x0 is out of range"]),
        (f"{{{SYN}, interval: never, repeat: 2, expect: allow}}", 2, ['interval: "never" is not a duration']),
    ],
)
def test_repeat_errors(case: str, line: int, fragments: list[str]) -> None:
    with pytest.raises(RuleError) as e:
        cases(f"cases:\n  - {case}\n")
    msg = str(e.value)
    assert msg.startswith(f"cases.yaml:{line}: "), msg
    for f in fragments:
        assert f in msg, msg


def test_blocked_is_a_reason_a_case_can_expect() -> None:
    [c] = cases(f"cases: [{{{SYN}, expect: {{verdict: drop, rule: blocked}}}}]")
    assert c.expects == (Expect("drop", "blocked"),)


# ---- the command: JUnit and plain output


def write_files(d: Path, cases_text: str) -> tuple[Path, Path]:
    (d / "rules.yaml").write_text(RULES)
    (d / "cases.yaml").write_text(textwrap.dedent(cases_text))
    return d / "rules.yaml", d / "cases.yaml"


MIXED = f"""\
cases:
  - {{name: guard, {SYN}, expect: [allow by ssh-office x5, drop by ssh-guard]}}
  - {{name: wrong, {SYN}, repeat: 6, expect: allow}}
  - {{name: "dns <&>", src: 198.51.100.1, dst: 192.0.2.1, proto: udp, dport: 53, expect: allow}}
"""


def test_junit_report_is_read_by_a_junit_parser(tmp_path: Path) -> None:
    rules, cases_file = write_files(tmp_path, MIXED)
    report = tmp_path / "report.xml"
    r = run("test", rules, cases_file, "--junit", report)
    assert r.returncode == 1, r.stderr
    xml = junitparser.JUnitXml.fromfile(str(report))
    [suite] = list(xml)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (3, 1, 0, 0)
    by_name = {tc.name: tc for tc in suite}
    assert set(by_name) == {"guard", "wrong", "dns <&>"}
    assert by_name["guard"].is_passed and by_name["dns <&>"].is_passed
    [failure] = by_name["wrong"].result
    assert isinstance(failure, junitparser.Failure)
    assert failure.message == "packet 6 of 6: expected allow, got drop by ssh-guard (over its rate limit)"
    assert "FAIL wrong" in failure.text and "  +  got:      allow by ssh-office x5, drop by ssh-guard" in (
        failure.text
    )
    assert by_name["wrong"].classname == f"{cases_file}:ingress"
    # The shape CI tools rely on, read with the standard library too.
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites" and root.attrib["tests"] == "3" and root.attrib["failures"] == "1"
    [ts] = root
    assert ts.tag == "testsuite" and float(ts.attrib["time"]) >= 0
    assert all(tc.attrib["line"].isdigit() for tc in ts.iter("testcase"))
    props = {p.attrib["name"]: p.attrib["value"] for p in ts.iter("property")}
    assert props == {"rules": str(rules), "cases": str(cases_file), "mode": "plan"}


def test_junit_report_of_a_passing_run(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    r = run("test", "rules/bastion.yaml", "rules/bastion.cases.yaml", "--junit", report, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert suite.tests == len(doc["results"]) and suite.failures == 0
    assert all(tc.is_passed for tc in suite)


def test_junit_to_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    rules, cases_file = write_files(tmp_path, MIXED)
    r = run("test", rules, cases_file, "--junit", tmp_path / "no" / "such" / "dir" / "r.xml")
    assert r.returncode == 1
    assert r.stderr.startswith("xdpguard: cannot write the JUnit report") and "Traceback" not in r.stderr


def test_piped_output_is_plain_and_never_wrapped(tmp_path: Path) -> None:
    rules, cases_file = write_files(tmp_path, MIXED)
    for env in ({}, {"COLUMNS": "60"}):
        r = run("test", rules, cases_file, env=env)
        assert r.returncode == 1
        out = r.stdout
        assert not re.search(r"[│┃━─┏┗]", out), out
        lines = out.splitlines()
        [row] = [line for line in lines if line.startswith("wrong ")]
        # One line holds the whole row: expected and got in full, then the result.
        assert "allow x6" in row and "allow by ssh-office x5, drop by ssh-guard" in row
        assert re.search(r"\sFAIL(\s|$)", row)
        assert all(line == line.rstrip() for line in lines)
    r = run("check", rules)
    [row] = [line for line in r.stdout.splitlines() if " ssh-guard " in line]
    assert "-> continue (limit 5/minute burst 5 per source/32,64 block_for 600s)" in row


def test_a_terminal_still_gets_the_table(tmp_path: Path) -> None:
    rules, cases_file = write_files(tmp_path, MIXED)
    leader, follower = pty.openpty()
    try:
        p = subprocess.Popen(
            [sys.executable, "-m", "xdpguard", "test", str(rules), str(cases_file)],
            stdout=follower,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env=os.environ | {"COLUMNS": "300"},
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        p.wait(timeout=60)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    out = b"".join(chunks).decode()
    assert "│" in out and "FAIL" in out
