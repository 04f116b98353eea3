"""Operator input that used to pass, hang or crash: each is now `file:line`, exit 2.

Found by an adversarial pass: durations the data plane cannot add to its
u64 clock (a dynamic set's `timeout`, `set add --timeout`, a case's
`wait`), rule and cases files that are devices or FIFOs, stdin that is not
UTF-8, a byte-order mark before a set file's first address.  Each test
runs the input as an operator would (the CLI, in a subprocess, when that
is where the failure showed) and asserts the exit code and the message.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xdpguard.cases.parse import load_cases, parse_cases_text
from xdpguard.cli.sets import _stdin_text, _timeout_ns
from xdpguard.errors import RuleError, UsageError
from xdpguard.rules import inputs, limits
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import load, parse_text

REPO = Path(__file__).resolve().parents[2]
WINDOW = "(2^60 ns, about 36 years)"


def xdpguard(
    *args: str | os.PathLike[str], stdin: bytes = b"", tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "LC_ALL": "C", "PYTHONUTF8": "0"}
    if tmp is not None:  # `set` looks for applied rule files: none here
        env |= {"XDPGUARD_STATE_DIR": str(tmp / "state"), "XDPGUARD_BPFFS": str(tmp / "bpffs")}
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
    )
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def error_of(text: str, path: str = "r.yaml") -> RuleError:
    with pytest.raises(RuleError) as info:
        compile_ruleset(parse_text(text, path))
    assert info.value.exit_code == 2
    return info.value


# --------------------------------------------------------------------------
# 1. Durations the data plane adds to its clock


def dynset(timeout: str) -> str:
    return f"version: 1\nsets:\n  d: {{dynamic: true, timeout: {timeout}}}\n"


def test_dynamic_set_timeout_past_the_window_is_refused_at_its_line() -> None:
    e = error_of(dynset("99999999999d"))
    assert (e.line, e.message) == (
        3,
        f'set d: timeout: "99999999999d" is longer than the longest timeout the data plane keeps {WINDOW}',
    )


def test_dynamic_set_timeout_at_the_window_is_accepted_and_one_ns_more_is_not() -> None:
    # 2^60 ns in seconds, quoted: a YAML float would round it.
    plan = compile_ruleset(parse_text(dynset('"1152921504.606846976"'), "r.yaml"))
    assert abs(plan.dynsets[0].timeout_ns - limits.MAX_WINDOW_NS) < 1000  # the model keeps float seconds
    e = error_of(dynset('"1152921504.606846977"'))
    assert "longer than the longest timeout" in e.message


def test_dynamic_set_timeout_finer_than_a_nanosecond_is_refused() -> None:
    # It used to round to 0 ns: an element that never expires.
    e = error_of(dynset('"0.0000000001"'))
    assert e.line == 3 and "not a whole number of nanoseconds" in e.message


def test_check_refuses_the_timeout_with_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(dynset("99999999999d"))
    r = xdpguard("check", f)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"{f}:3: set d: timeout:") and "Traceback" not in r.stderr


def test_set_add_timeout_past_the_window() -> None:
    with pytest.raises(UsageError) as info:
        _timeout_ns("99999999999d")
    assert info.value.exit_code == 2
    assert str(info.value) == (
        f'--timeout: "99999999999d" is longer than the longest timeout the data plane keeps {WINDOW}'
    )
    assert _timeout_ns("4h") == 4 * 3600 * 10**9
    assert _timeout_ns("never") == 0


def test_set_add_refuses_the_timeout_before_looking_at_any_interface(tmp_path: Path) -> None:
    r = xdpguard("set", "add", "d", "192.0.2.1", "--timeout", "99999999999d", tmp=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--timeout" in r.stderr and "longest timeout" in r.stderr and "internal error" not in r.stderr


RULES = "version: 1\ningress:\n  rules:\n    - {name: ssh, match: {proto: tcp, dport: 22}, action: allow}\n"
CASE = "cases:\n  - src: 192.0.2.1\n    dst: 192.0.2.2\n    proto: tcp\n    dport: 22\n"


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        (
            "    expect: [allow, wait 99999999999d, allow]\n",
            6,
            f'expect: "wait 99999999999d": "99999999999d" is longer than a case may last {WINDOW[:-1]}',
        ),
        (
            "    expect: [allow, wait 10000d, allow, wait 10000d, allow]\n",
            6,
            f"expect: the packets up to this one take longer than a case may last {WINDOW[:-1]}",
        ),
        (
            "    interval: 10000d\n    repeat: 3\n    expect: allow\n",
            6,
            f'interval: 3 packets "10000d" apart take longer than a case may last {WINDOW[:-1]}',
        ),
        ("    interval: 99999999999d\n    expect: allow\n", 6, 'interval: "99999999999d" is longer than'),
    ],
)
def test_case_waits_the_programs_clock_cannot_hold(extra: str, line: int, message: str) -> None:
    rs = parse_text(RULES, "r.yaml")
    with pytest.raises(RuleError) as info:
        parse_cases_text(CASE + extra, "c.yaml", rs)
    assert (info.value.path, info.value.line) == ("c.yaml", line), str(info.value)
    assert info.value.message.startswith(message), str(info.value)


def test_case_waits_within_the_window_still_run() -> None:
    rs = parse_text(RULES, "r.yaml")
    [case] = parse_cases_text(CASE + "    expect: [allow, wait 10000d, allow]\n", "c.yaml", rs)
    assert case.offsets_ns() == [0, 10000 * 86400 * 10**9]


# --------------------------------------------------------------------------
# 2. Files that are not regular files or too big, stdin, byte-order marks


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo"])
def test_check_of_a_device_or_fifo_exits_2_at_once(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # reading it would wait for a writer forever
    r = xdpguard("check", special)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == f"{special}: the rule file is not a regular file (a device, pipe or socket)\n"


def test_load_refuses_a_rule_file_over_the_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(inputs.MAX_INPUT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(RuleError) as info:
        load(big)
    assert info.value.line is None
    assert (
        str(info.value)
        == f"{big}: the rule file is 134,217,729 bytes, more than the 128 MiB a rule file may have"
    )


def test_test_command_refuses_a_fifo_for_cases_and_for_rules(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = xdpguard("test", rules, fifo)
    assert (r.returncode, r.stderr) == (
        2,
        f"{fifo}: the cases file is not a regular file (a device, pipe or socket)\n",
    )
    r = xdpguard("test", fifo, rules)
    assert (r.returncode, r.stderr) == (
        2,
        f"{fifo}: the rule file is not a regular file (a device, pipe or socket)\n",
    )


def test_load_cases_refuses_a_device() -> None:
    with pytest.raises(RuleError, match=r"^/dev/zero: the cases file is not a regular file"):
        load_cases("/dev/zero", parse_text(RULES, "r.yaml"))


def test_a_directory_is_still_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match=r": cannot read rule file: Is a directory$"):
        load(tmp_path)


def test_set_add_stdin_that_is_not_utf8_exits_2_before_the_kernel(tmp_path: Path) -> None:
    r = xdpguard("set", "add", "bad", "-", stdin=b"192.0.2.1\n\xff\n", tmp=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", "<stdin>:2: not UTF-8 text (byte 0xff)\n")


def test_stdin_text_drops_a_bom_and_caps_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _stdin_text(io.BytesIO(b"\xef\xbb\xbf192.0.2.1\n")) == "192.0.2.1\n"
    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 16)
    with pytest.raises(UsageError, match=r"^<stdin> has more than the 128 MiB"):
        _stdin_text(io.BytesIO(b"192.0.2.1\n" * 2))


def test_set_file_with_a_bom_is_read(tmp_path: Path) -> None:
    (tmp_path / "s.netset").write_bytes(b"\xef\xbb\xbf192.0.2.1\n2001:db8::/32\n")
    rs = parse_text("version: 1\nsets:\n  s: {file: s.netset}\n", str(tmp_path / "r.yaml"), tmp_path)
    assert len(rs.sets[0].prefixes) == 2


def test_cases_file_with_a_bom_is_read(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(b"\xef\xbb\xbf" + (CASE + "    expect: allow\n").encode())
    assert len(load_cases(f, parse_text(RULES, "r.yaml"))) == 1


def test_inputs_decode_reports_the_line_of_the_bad_byte() -> None:
    with pytest.raises(RuleError) as info:
        inputs.decode(b"a\nb\n\xc3(\n", "x")
    assert str(info.value) == "x:3: not UTF-8 text (byte 0xc3)"
    assert inputs.decode(b"\xef\xbb\xbfa\n", "x") == "a\n"
