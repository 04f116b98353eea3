"""`xdpguard test --kernel` and `--wire`: the example cases through the real programs.

The command runs as a subprocess, as an operator runs it.  --kernel puts
every case through the pinned programs with BPF_PROG_TEST_RUN, --wire sends
it across a veth pair between two throw-away namespaces; either way the
verdict comes from the kernel and the rule name from the per-rule counters.
Every test also checks what the command must leave behind: nothing (no
namespace, no pin directory, no state directory of its process id), and
that it never touched the XDPGUARD_BPFFS / XDPGUARD_STATE_DIR the operator
had set.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from xdpguard import net

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"
EXAMPLES = ["web-edge", "bastion", "dns-server"]
BPFFS_ROOT = Path("/sys/fs/bpf")

_counter = itertools.count()


class Run:
    """One `xdpguard test` process: its result, and its pid for the leftover checks."""

    def __init__(self, tmp_path: Path, *args: str | os.PathLike[str], timeout: float = 300) -> None:
        n = next(_counter)
        # What the operator's environment points at; the command must not touch it.
        self.own_bpffs = BPFFS_ROOT / f"xdpguard-test-{os.getpid()}-9{n}"
        self.own_state = tmp_path / f"state-{n}"
        env = os.environ | {
            "COLUMNS": "250",
            "XDPGUARD_BPFFS": str(self.own_bpffs),
            "XDPGUARD_STATE_DIR": str(self.own_state),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "xdpguard", "test", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.pid = proc.pid
        self.stdout, self.stderr = proc.communicate(timeout=timeout)
        self.returncode = proc.returncode

    def json(self) -> dict:
        return json.loads(self.stdout)

    def assert_clean(self) -> None:
        assert leftovers(self.pid) == []
        assert not self.own_bpffs.exists() and not self.own_state.exists()


def leftovers(pid: int) -> list[str]:
    """Namespaces, pin directories and state directories a run with this pid left."""
    left = [n for n in net.list_netns() if n.startswith(f"xgcase{pid}-")]
    left += [str(d) for d in BPFFS_ROOT.iterdir() if d.name.startswith(f"xdpguard-case-{pid}-")]
    left += [
        str(d) for d in Path(tempfile.gettempdir()).iterdir() if d.name.startswith(f"xdpguard-case-{pid}-")
    ]
    return left


def flipped_example(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A copy of an example whose first `allow` expectation says `drop`: exactly one case must fail."""
    rules = tmp_path / f"{name}.yaml"
    shutil.copy(RULES_DIR / f"{name}.yaml", rules)
    if not (tmp_path / "lists").exists():
        shutil.copytree(RULES_DIR / "lists", tmp_path / "lists")
    text = (RULES_DIR / f"{name}.cases.yaml").read_text()
    marker = "expect: {verdict: allow, rule: "
    assert marker in text
    cases = tmp_path / f"{name}.cases.yaml"
    cases.write_text(text.replace(marker, "expect: {verdict: drop, rule: ", 1))
    return rules, cases


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_cases_pass_in_the_kernel(tmp_path: Path, name: str) -> None:
    r = Run(tmp_path, f"rules/{name}.yaml", f"rules/{name}.cases.yaml", "--kernel", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = r.json()
    assert (doc["mode"], doc["failed"], doc["passed"]) == ("kernel", 0, len(doc["results"]))
    assert len(doc["results"]) >= 8
    # Rule names came from the counters, and they agree with the compiled plan (no note).
    assert all(x["got"]["rule"] == x["expect"]["rule"] for x in doc["results"])
    notes = [x["note"] for x in doc["results"] if x["note"]]
    assert all(n.startswith("no flow:") for n in notes), notes
    r.assert_clean()


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_wrong_expectation_fails_in_the_kernel(tmp_path: Path, name: str) -> None:
    rules, cases = flipped_example(tmp_path, name)
    r = Run(tmp_path, rules, cases, "--kernel")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "checked by the BPF programs (BPF_PROG_TEST_RUN)" in r.stdout
    lines = r.stdout.splitlines()
    [start] = [i for i, line in enumerate(lines) if line.startswith("FAIL ")]
    assert re.fullmatch(rf"FAIL \S+ \({re.escape(str(cases))}:\d+\)", lines[start])
    expected, got = lines[start + 2], lines[start + 3]
    assert expected.startswith("  -  expected: drop by ")
    assert got == "  +  got:      allow by " + expected.removeprefix("  -  expected: drop by ")
    # Not a terminal: plain rows, the result the last word of each.
    assert r.stdout.rstrip().endswith(f"{len(re.findall(r' OK(  |$)', r.stdout, re.M))} passed, 1 failed")
    assert r.stderr == ""
    r.assert_clean()


def test_example_cases_pass_on_the_wire(tmp_path: Path) -> None:
    r = Run(tmp_path, "rules/web-edge.yaml", "rules/web-edge.cases.yaml", "--wire", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = r.json()
    assert (doc["mode"], doc["failed"]) == ("wire", 0)
    assert {x["direction"] for x in doc["results"]} == {"ingress", "egress"}
    r.assert_clean()


WIRE_CASES = """\
cases:
  - name: https-in
    src: 198.51.100.7
    dst: 192.0.2.10
    proto: tcp
    dport: 443
    expect: {verdict: drop, rule: web-syn-guard}      # wrong: it passes
  - name: ssh-in
    src: 198.51.100.7
    dst: 192.0.2.10
    proto: tcp
    dport: 22
    expect: {verdict: drop, rule: default}
  - name: dns-answer
    src: "2001:db8:53::53"
    dst: "2001:db8::10"
    proto: udp
    sport: 53
    dport: 40123
    state: established
    expect: {verdict: allow, rule: allow-replies}
  - name: smtp-out
    direction: egress
    src: 192.0.2.10
    dst: 198.51.100.25
    proto: tcp
    dport: 25
    expect: {verdict: allow, rule: default}           # wrong: no-smtp-out drops it
  - name: https-out
    direction: egress
    src: 192.0.2.10
    dst: 198.51.100.80
    proto: tcp
    dport: 443
    expect: allow
"""


def test_wrong_expectations_fail_on_the_wire(tmp_path: Path) -> None:
    cases = tmp_path / "wire.cases.yaml"
    cases.write_text(WIRE_CASES)
    r = Run(tmp_path, "rules/web-edge.yaml", cases, "--wire", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    doc = r.json()
    got = {x["name"]: (x["got"]["verdict"], x["got"]["rule"], x["ok"]) for x in doc["results"]}
    assert got == {
        "https-in": ("allow", "web-syn-guard", False),
        "ssh-in": ("drop", "default", True),
        "dns-answer": ("allow", "allow-replies", True),
        "smtp-out": ("drop", "no-smtp-out", False),
        "https-out": ("allow", "default", True),
    }
    assert (doc["passed"], doc["failed"]) == (3, 2)
    r.assert_clean()


def test_sigterm_mid_run_still_cleans_up(tmp_path: Path) -> None:
    env = os.environ | {"XDPGUARD_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xdpguard",
            "test",
            "rules/web-edge.yaml",
            "rules/web-edge.cases.yaml",
            "--wire",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not leftovers(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert leftovers(proc.pid), "the run never built its namespaces"
        time.sleep(0.5)  # somewhere inside the set-up (compiling, attaching) or the cases
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (143, 0), err  # 0: it had already finished
    assert "Traceback" not in err
    assert leftovers(proc.pid) == []


def test_established_case_learns_its_flow_from_the_egress_program(tmp_path: Path) -> None:
    # Egress drops the opening packet (default drop), so the kernel never
    # records the flow and the "answer" is new: the note says why.
    rules = tmp_path / "r.yaml"
    rules.write_text(
        textwrap.dedent("""\
        version: 1
        ingress:
          default: drop
          rules:
            - {name: replies, match: {state: established}, action: allow}
        egress:
          default: drop
          rules:
            - {name: dns-out, match: {proto: udp, dport: 53}, action: allow}
        """)
    )
    cases = tmp_path / "c.yaml"
    cases.write_text(
        textwrap.dedent("""\
        cases:
          - {name: dns, src: 192.0.2.53, dst: 192.0.2.10, proto: udp, sport: 53, dport: 40000,
             state: established, expect: {verdict: allow, rule: replies}}
          - {name: ntp, src: 192.0.2.123, dst: 192.0.2.10, proto: udp, sport: 123, dport: 40000,
             state: established, expect: {verdict: drop, rule: default}}
          - {name: dns-new, src: 192.0.2.53, dst: 192.0.2.10, proto: udp, sport: 53, dport: 40000,
             expect: {verdict: drop, rule: default}}
        """)
    )
    r = Run(tmp_path, rules, cases, "--kernel", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    by = {x["name"]: x for x in r.json()["results"]}
    assert by["ntp"]["note"].startswith("no flow: the egress default drops the opening packet")
    assert by["dns"]["note"] is None and by["dns-new"]["note"] is None
    r.assert_clean()
