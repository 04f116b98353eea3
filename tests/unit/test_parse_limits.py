"""Rule input at the edges of what Python and the parser can hold.

Numbers too long for Python's int() (over 4,300 digits), values that
overflow a float, and set files that never end or are too big must all be
`file:line:` errors (exit 2), never an internal error or a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xdpguard.errors import RuleError
from xdpguard.rules import inputs
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text

HUGE = "9" * 5000
RULE = "version: 1\ningress:\n  rules:\n    - name: a\n      match: {match}\n      action: drop\n{extra}"
LIMIT = "      rate_limit: {{{limit}}}\n"

# (id, rule file text, line of the error): every numeric setting, written as
# a YAML number or as a string, far too large.
HUGE_VALUES = [
    ("version", f"version: {HUGE}\n", 1),
    ("version-hex", "version: 0x" + "f" * 5000 + "\n", 1),
    ("flow-table-size", f"version: 1\nflow_table_size: {HUGE}\n", 2),
    ("state-timeout", f'version: 1\nstate_timeouts: {{tcp: "{HUGE}s"}}\n', 2),
    ("dport", RULE.format(match=f"{{dport: {HUGE}}}", extra=""), 5),
    ("dport-negative", RULE.format(match=f"{{dport: -{HUGE}}}", extra=""), 5),
    ("sport-range", RULE.format(match=f'{{sport: "1-{HUGE}"}}', extra=""), 5),
    ("proto-text", RULE.format(match=f'{{proto: "{HUGE}"}}', extra=""), 5),
    ("icmp-type-text", RULE.format(match=f'{{icmp_type: "{HUGE}"}}', extra=""), 5),
    ("icmp-code", RULE.format(match=f"{{icmp_type: 8, icmp_code: {HUGE}}}", extra=""), 5),
    ("prefix-length", RULE.format(match=f'{{src: "10.0.0.0/{HUGE}"}}', extra=""), 5),
    ("pps", RULE.format(match="{}", extra=LIMIT.format(limit=f"pps: {HUGE}")), 7),
    ("bps-text", RULE.format(match="{}", extra=LIMIT.format(limit=f'bps: "{HUGE}mbit"')), 7),
    ("bps-float", RULE.format(match="{}", extra=LIMIT.format(limit="bps: 1.0e300")), 7),
    ("burst", RULE.format(match="{}", extra=LIMIT.format(limit=f'pps: 10, burst: "{HUGE}kb"')), 7),
    (
        "block-for",
        RULE.format(match="{}", extra=LIMIT.format(limit=f'pps: 1, per: source, block_for: "{HUGE}s"')),
        7,
    ),
]


@pytest.mark.parametrize(("text", "line"), [v[1:] for v in HUGE_VALUES], ids=[v[0] for v in HUGE_VALUES])
def test_huge_numbers_are_rule_errors_at_their_line(text: str, line: int) -> None:
    with pytest.raises(RuleError) as info:
        compile_ruleset(parse_text(text, "r.yaml"))
    assert (info.value.path, info.value.line) == ("r.yaml", line), str(info.value)
    assert len(str(info.value)) < 5000 + 200  # names the value, once


def test_largest_u64_still_parses_as_a_number() -> None:
    # 20 digits are allowed: the check refuses only what no setting can take.
    with pytest.raises(RuleError, match=r"r.yaml:2: flow_table_size: 18446744073709551615 is out of range"):
        parse_text("version: 1\nflow_table_size: 18446744073709551615\n", "r.yaml")


def test_check_of_a_5000_digit_port_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RULE.format(match=f"{{proto: tcp, dport: {HUGE}}}", extra=""))
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.startswith(f"{path}:5: ") and "too large" in r.stderr and "Traceback" not in r.stderr


SET_RULES = "version: 1\nsets:\n  s: {{file: {file}}}\n"


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_set_file_that_is_not_a_regular_file(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        special = str(tmp_path / "fifo")
        os.mkfifo(special)  # reading it would wait for a writer forever
    with pytest.raises(RuleError) as info:
        parse_text(SET_RULES.format(file=special), str(tmp_path / "r.yaml"), tmp_path)
    assert info.value.line == 3 and "is not a regular file" in str(info.value)


def test_set_file_over_the_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.netset"
    with big.open("wb") as f:
        f.truncate(inputs.MAX_INPUT_BYTES + 1)  # sparse: no disk used
    with pytest.raises(RuleError) as info:
        parse_text(SET_RULES.format(file="big.netset"), str(tmp_path / "r.yaml"), tmp_path)
    assert info.value.line == 3 and "more than the 128 MiB a set file may have" in str(info.value)
