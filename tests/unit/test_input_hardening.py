"""Operator input that used to pass, hang or crash: each is now `file:line`, exit 2.

Found by an adversarial pass: durations the data plane cannot add to its
u64 clock (a dynamic set's `timeout`, `set add --timeout`, a case's
`wait`), rule and cases files that are devices or FIFOs, numbers YAML 1.1
reads as base 60 or octal (`dport: 20:21` became port 1221), stdin that is
not UTF-8, a byte-order mark before a set file's first address, a NUL byte
in a rule file.  Each test runs the input as an operator would (the CLI,
in a subprocess, when that is where the failure showed) and asserts the
exit code and the message.
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


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_apply_reads_its_rule_file_the_same_way(
    tmp_path: Path, special: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply and plan read the rule file through the plan cache: the same
    refusal, before any kernel object (or the cache) is touched."""
    from xdpguard import plancache

    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(tmp_path / "state"))
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)
    with pytest.raises(RuleError) as info:
        plancache.load(Path(special))
    assert str(info.value) == f"{special}: the rule file is not a regular file (a device, pipe or socket)"
    assert not (tmp_path / "state").exists()


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


# --------------------------------------------------------------------------
# 3. Numbers YAML 1.1 reads in another base, characters YAML refuses

RULE = "version: 1\ningress:\n  rules:\n    - name: a\n      match: {match}\n      action: drop\n{extra}"


def rule(match: str, extra: str = "") -> str:
    return RULE.format(match=match, extra=extra)


MISREAD = [
    (
        "{dport: 20:21}",
        5,
        'dport: 20:21: a range is written "20-21" (YAML reads 20:21 as the base-60 number 1221)',
    ),
    (
        "{dport: 022}",
        5,
        "dport: 022: write ports in decimal, without a leading zero (YAML reads 022 as octal, 18)",
    ),
    ("{sport: [80, 0x16]}", 5, "sport: 0x16: write ports in decimal (YAML reads 0x16 as hexadecimal, 22)"),
    ("{dport: 0b10110}", 5, "dport: 0b10110: write ports in decimal (YAML reads 0b10110 as binary, 22)"),
    ("{dport: 1:2:3}", 5, 'dport: 1:2:3: write ports in decimal, and a range as "1024-65535"'),
    ('{dport: "20:21"}', 5, 'dport: "20:21" is not a port: a range is written "20-21"'),
    ("{icmp_type: 8, icmp_code: 010}", 5, "icmp_code: 010: write numbers in decimal, without a leading zero"),
    (
        "{proto: 06}",
        5,
        "proto: 06: write numbers in decimal, without a leading zero (YAML reads 06 as octal, 6)",
    ),
    ("{src: 1:2:3:4:5:6:7:8}", 5, "src: 1:2:3:4:5:6:7:8: quote IPv6 addresses (YAML reads"),
    ("{}", 7, "pps: 1:30: write numbers in decimal (YAML reads 1:30 as the base-60 number 90)"),
    ("{}", 7, "burst: 010: write numbers in decimal, without a leading zero"),
    ("{}", 7, "block_for: 1:30: write a duration with units, such as 1m30s or 1h30m"),
    ("{}", 7, "block_for: 1:30.5: write a duration with units"),
]
LIMITS = {
    "pps: 1:30": "      rate_limit: {pps: 1:30}\n",
    "burst: 010": "      rate_limit: {pps: 10, burst: 010}\n",
    "block_for: 1:30:": "      rate_limit: {pps: 10, per: source, block_for: 1:30}\n",
    "block_for: 1:30.5": "      rate_limit: {pps: 10, per: source, block_for: 1:30.5}\n",
}


@pytest.mark.parametrize(
    ("match", "line", "message"), MISREAD, ids=[m[2].split(":")[0] + m[0] for m in MISREAD]
)
def test_numbers_yaml_would_misread_are_refused(match: str, line: int, message: str) -> None:
    extra = next((v for k, v in LIMITS.items() if message.startswith(k)), "")
    e = error_of(rule(match, extra))
    assert e.line == line, str(e)
    assert e.message.startswith(message), str(e)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("version: 1\nsets:\n  a: [1:2:3:4:5:6:7:8]\n", 3, "set a: 1:2:3:4:5:6:7:8: quote IPv6 addresses"),
        ("version: 1\nsets:\n  a: [12]\n", 3, "set a: 12 is not an address or CIDR (quote IPv6 addresses)"),
        (
            "version: 1\nsets:\n  d: {dynamic: true, size: 0100}\n",
            3,
            "set d: size: 0100: write numbers in decimal",
        ),
        (
            "version: 1\nsets:\n  d: {dynamic: true, timeout: 4:00}\n",
            3,
            "set d: timeout: 4:00: write a duration",
        ),
        (
            "version: 1\nstate_timeouts: {tcp: 4:00}\n",
            2,
            "state_timeouts.tcp: 4:00: write a duration with units",
        ),
        ("version: 1\nflow_table_size: 0200000\n", 2, "flow_table_size: 0200000: write numbers in decimal"),
        ("version: 01\n", 1, "version: 01: write numbers in decimal, without a leading zero"),
    ],
)
def test_misread_numbers_elsewhere_in_the_file(text: str, line: int, message: str) -> None:
    e = error_of(text)
    assert e.line == line and e.message.startswith(message), str(e)


def test_decimal_and_explicitly_based_numbers_still_parse() -> None:
    rs = parse_text(
        rule('{proto: 0x11, dport: [22, 1_024, 08, "022"]}', "      rate_limit: {pps: 1_000, burst: 0x20}\n"),
        "r.yaml",
    )
    r = rs.ingress.rules[0]
    assert r.match.protos == {17}
    assert [(p.lo, p.hi) for p in r.match.dport or ()] == [(8, 8), (22, 22), (1024, 1024)]
    assert r.rate_limit is not None and (r.rate_limit.pps, r.rate_limit.burst) == (1000, 32)


def test_check_reports_the_port_range_with_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(rule("{proto: tcp, dport: 20:21}"))
    r = xdpguard("check", f)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith(f'{f}:5: dport: 20:21: a range is written "20-21"'), r.stderr


def test_cases_file_ports_and_hex_ethertype() -> None:
    rs = parse_text(RULES, "r.yaml")
    with pytest.raises(RuleError) as info:
        parse_cases_text(CASE.replace("dport: 22", "dport: 022") + "    expect: allow\n", "c.yaml", rs)
    assert (info.value.line, info.value.message) == (
        5,
        "dport: 022: write ports in decimal, without a leading zero (YAML reads 022 as octal, 18)",
    )
    [case] = parse_cases_text("cases:\n  - {ethertype: 0x88b5, expect: allow}\n", "c.yaml", rs)
    assert case.ethertype == 0x88B5 and type(case.ethertype) is int


def test_a_nul_byte_is_one_line_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_bytes(b"version: 1\nmode: e\x00nforce\n")
    r = xdpguard("check", f)
    assert (r.returncode, r.stderr) == (
        2,
        f"{f}:2: invalid YAML: character #x0000 (NUL) is not allowed in YAML text\n",
    )


@pytest.mark.parametrize("text", ["a: x\nb: \x07\n", "a: é\nb: x\x00\n"])
def test_control_characters_name_their_line(text: str) -> None:
    # libyaml counts UTF-8 bytes: the é before the NUL must not shift the line.
    e = error_of(text)
    assert e.line == 2 and "\n" not in e.message, str(e)
