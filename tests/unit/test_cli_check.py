"""`xdpguard check`: validate and compile a rule file, no root, no kernel.

The command runs as a subprocess, as an operator runs it: exit codes,
stdout and stderr are the contract.  Invalid input must be reported as
`path:line: message` with exit code 2 and never with a traceback
(docs/cli.md, "Exit codes"); a traceback is for internal errors only, and
only with XDPGUARD_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unprivileged import without_privileges

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "rules"
EXAMPLES = sorted(p for p in RULES_DIR.glob("*.yaml") if not p.name.endswith(".cases.yaml"))


def xdpguard(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, unprivileged: bool = False
) -> subprocess.CompletedProcess[str]:
    # A wide terminal, so that rich never wraps a rule name across lines.
    full_env = os.environ | {"COLUMNS": "250"} | dict(env or {})
    argv = [sys.executable, "-m", "xdpguard", *map(str, args)]
    return subprocess.run(
        without_privileges(argv) if unprivileged else argv,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=REPO,
        timeout=60,
    )


def check_json(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    r = xdpguard("check", path, "--json", env=env)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def rule_names(doc: dict[str, Any], direction: str) -> list[str]:
    return [r["name"] for r in (doc.get(direction) or {}).get("rules") or []]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_accepts_example_and_prints_its_rules(path: Path) -> None:
    r = xdpguard("check", path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "valid" in r.stdout
    doc = yaml.safe_load(path.read_text())
    names = rule_names(doc, "ingress") + rule_names(doc, "egress")
    assert names, f"{path.name} has no rules to show"
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", r.stdout), f"rule {name} not printed"
    for set_name in doc.get("sets") or {}:
        assert set_name in r.stdout, f"set {set_name} not printed"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_check_json_shape(path: Path) -> None:
    data = check_json(path)
    doc = yaml.safe_load(path.read_text())
    lines = path.read_text().splitlines()

    assert data["valid"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", data["digest"]), data["digest"]
    assert isinstance(data["memory_bytes"], int) and data["memory_bytes"] > 0

    assert [s["name"] for s in data["sets"]] == list(doc.get("sets") or {})
    for s in data["sets"]:
        assert s["ipv4"] + s["ipv6"] == s["prefixes"] > 0, s
        spec = doc["sets"][s["name"]]
        if isinstance(spec, dict):
            assert s["file"] and Path(s["file"]).name == Path(spec["file"]).name, s
        else:
            assert s["file"] is None
            assert s["prefixes"] == len(set(spec)), s

    for direction in ("ingress", "egress"):
        d = data[direction]
        assert d["default"] == (doc.get(direction) or {}).get("default", "allow")
        assert [r["name"] for r in d["rules"]] == rule_names(doc, direction)
        for i, r in enumerate(d["rules"]):
            assert r["index"] == i
            assert r["action"] in ("allow", "drop", "continue")
            assert isinstance(r["match"], str)
            # The line is where the rule starts: its `- name:` line.
            assert re.search(rf"name:\s*{re.escape(r['name'])}\s*$", lines[r["line"] - 1]), (
                r,
                lines[r["line"] - 1],
            )
        entries = d["map_entries"]
        assert entries and all(isinstance(v, int) and v >= 0 for v in entries.values()), entries
        assert entries.get("rules", len(d["rules"])) == len(d["rules"]), entries


def test_digest_is_deterministic_and_follows_the_rules(tmp_path: Path) -> None:
    for path in EXAMPLES:
        # Different hash seeds: set and dict iteration orders must not leak into the digest.
        a = check_json(path, env={"PYTHONHASHSEED": "1"})["digest"]
        b = check_json(path, env={"PYTHONHASHSEED": "2"})["digest"]
        assert a == b, path.name
    base = textwrap.dedent("""\
        version: 1
        ingress:
          default: drop
          rules:
            - name: ssh
              match: {proto: tcp, dport: 22}
              action: allow
    """)
    first = tmp_path / "a.yaml"
    first.write_text(base)
    changed = tmp_path / "b.yaml"
    changed.write_text(base.replace("dport: 22", "dport: 2222"))
    assert check_json(first)["digest"] != check_json(changed)["digest"]


def test_check_needs_no_root() -> None:
    path = RULES_DIR / "web-edge.yaml"
    r = xdpguard("check", path, "--json", env={"HOME": "/tmp"}, unprivileged=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == check_json(path)["digest"]


# --------------------------------------------------------------------------
# Invalid input

HEAD = "version: 1\ningress:\n  rules:\n"

# (id, rule file text, line reported, text the message must quote)
INVALID: list[tuple[str, str, int, str]] = [
    (
        "yaml-syntax",
        HEAD + "    - name: a\n      match: {proto: tcp, dport: 22]\n      action: drop\n",
        5,
        "invalid YAML",
    ),
    ("yaml-tab-indent", "version: 1\ningress:\n\trules: []\n", 3, "invalid YAML"),
    (
        "unknown-key",
        HEAD + "    - name: a\n      match: {proto: tcp, dprot: 22}\n      action: drop\n",
        5,
        "dprot",
    ),
    ("wrong-type", "version: 1\ningress:\n  default: 5\n", 3, "5"),
    (
        "cidr-host-bits",
        HEAD + "    - name: a\n      match:\n        src: 10.1.2.3/8\n      action: drop\n",
        6,
        "10.1.2.3/8",
    ),
    (
        "port-out-of-range",
        HEAD + "    - name: a\n      match: {dport: 70000}\n      action: drop\n",
        5,
        "70000",
    ),
    (
        "unknown-set",
        "version: 1\nsets:\n  good: [10.0.0.0/8]\n"
        + HEAD[len("version: 1\n") :]
        + '    - name: a\n      match: {src: "@nope"}\n      action: drop\n',
        7,
        "@nope",
    ),
    (
        "duplicate-rule-name",
        HEAD + "    - name: a\n      match: {}\n      action: drop\n"
        "    - name: a\n      match: {}\n      action: allow\n",
        7,
        '"a"',
    ),
    (
        "port-with-icmp",
        HEAD + "    - name: a\n      match: {proto: icmp, dport: 1}\n      action: drop\n",
        5,
        "icmp",
    ),
    (
        "tcp-flags-with-udp",
        HEAD + '    - name: a\n      match: {proto: udp, tcp_flags: "syn"}\n      action: drop\n',
        5,
        "udp",
    ),
    ("unreadable-set-file", "version: 1\nsets:\n  s: {file: missing.netset}\n", 3, "missing.netset"),
    ("empty-file", "", 1, "empty"),
]

# Errors inside a set file are reported at that file's own line.
INVALID_SET_FILES: list[tuple[str, bytes, int, str]] = [
    ("host-bits", b"# list\n10.0.0.0/8\n10.0.0.1/8   # oops\n", 3, "10.0.0.1/8"),
    ("not-an-address", b"192.0.2.0/24\n\nbanana\n", 3, "banana"),
    ("not-utf8", b"# ok\n192.0.2.1\n# caf\xe9\n", 3, "UTF-8"),
]


def _assert_clean_error(r: subprocess.CompletedProcess[str], prefix_re: str, fragment: str) -> None:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    assert r.returncode == 2, f"exit {r.returncode}: {out}"
    first = r.stderr.splitlines()[0] if r.stderr else ""
    assert re.match(prefix_re, first), f"{first!r} does not start with {prefix_re!r}"
    assert fragment in r.stderr, f"{fragment!r} not quoted in {r.stderr!r}"


@pytest.mark.parametrize(("text", "line", "fragment"), [p[1:] for p in INVALID], ids=[p[0] for p in INVALID])
def test_invalid_rule_file_is_path_line_message(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    r = xdpguard("check", path)
    _assert_clean_error(r, rf"{re.escape(str(path))}:{line}: ", fragment)
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("content", "line", "fragment"), [p[1:] for p in INVALID_SET_FILES], ids=[p[0] for p in INVALID_SET_FILES]
)
def test_invalid_set_file_is_reported_at_its_own_line(
    tmp_path: Path, content: bytes, line: int, fragment: str
) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "bad.netset").write_bytes(content)
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nsets:\n  bad: {file: lists/bad.netset}\n"
        + HEAD[len("version: 1\n") :]
        + '    - name: a\n      match: {src: "@bad"}\n      action: drop\n'
    )
    r = xdpguard("check", path)
    _assert_clean_error(r, rf"{re.escape(str(tmp_path / 'lists' / 'bad.netset'))}:{line}: ", fragment)


def test_rule_file_that_is_not_utf8_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(HEAD.encode() + b"    - name: caf\xe9\n      match: {}\n      action: allow\n")
    r = xdpguard("check", path)
    # The whole file is at fault, so the line is optional here; the exit code and the clean message are not.
    _assert_clean_error(r, rf"{re.escape(str(path))}:(4:)? ", "UTF-8")


def test_deeply_nested_yaml_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nextra: " + "[" * 500 + "]" * 500 + "\n")
    r = xdpguard("check", path)
    _assert_clean_error(r, rf"{re.escape(str(path))}:\d+: ", "")


def test_missing_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    r = xdpguard("check", path)
    _assert_clean_error(r, rf"{re.escape(str(path))}:(\d+:)? ", "cannot read")


# --------------------------------------------------------------------------
# Tracebacks: internal errors only, and only on request


def _run_main_with_internal_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI in-process with a bug injected into `check`; return stderr."""
    from xdpguard.cli import check as check_cmd
    from xdpguard.cli.main import main

    def broken(path: Path) -> Any:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(check_cmd, "load_rules", broken)
    with pytest.raises(SystemExit) as exc:
        main(["check", str(EXAMPLES[0])])
    assert exc.value.code == 1
    return capsys.readouterr().err


def test_internal_error_without_debug_has_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("XDPGUARD_DEBUG", raising=False)
    err = _run_main_with_internal_error(monkeypatch, capsys)
    assert "Traceback" not in err
    assert "internal error" in err and "injected fault" in err
    assert "XDPGUARD_DEBUG=1" in err


def test_internal_error_with_debug_has_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDPGUARD_DEBUG", "1")
    err = _run_main_with_internal_error(monkeypatch, capsys)
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: injected fault" in err


def test_invalid_rules_with_debug_still_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + "    - name: a\n      match: {dprot: 22}\n      action: drop\n")
    r = xdpguard("check", path, env={"XDPGUARD_DEBUG": "1"})
    assert r.returncode == 2
    assert f"{path}:5: " in r.stderr
