"""syn_cookies in the rule language: what parses, what is refused (file:line,
exit 2), and how the flag travels through the plan into the rule table.

No kernel: the wire behaviour is in tests/netns/test_syncookies.py.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xdpguard.datapath import abi
from xdpguard.datapath.maps import rule_bytes
from xdpguard.errors import RuleError
from xdpguard.rules.compile import compile_ruleset, plan_from_bytes
from xdpguard.rules.describe import describe_rule
from xdpguard.rules.parse import parse_text


def rules(rule: str, direction: str = "ingress") -> str:
    return "version: 1\n" + f"{direction}:\n  rules:\n" + textwrap.indent(textwrap.dedent(rule), "    ")


WEB = """\
- name: web
  match: {proto: tcp, dport: [80, 443]}
  action: allow
  syn_cookies: true
"""


def test_syn_cookies_parses_and_reaches_the_rule_table() -> None:
    rs = parse_text(rules(WEB), "r.yaml")
    rule = rs.ingress.rules[0]
    assert rule.syn_cookies is True
    assert describe_rule(rule).endswith("-> allow syn_cookies")
    plan = compile_ruleset(rs)
    rp = plan.ingress.rules[0]
    assert rp.syn_cookies and plan.ingress.uses_syn_cookies
    entry = abi.RuleEntry.from_buffer_copy(rule_bytes(rp, 9))
    assert entry.flags & abi.RULE_SYNCOOKIE
    assert ctypes.sizeof(entry) == 56


def test_the_flag_is_part_of_the_plan_and_survives_a_round_trip() -> None:
    on = compile_ruleset(parse_text(rules(WEB), "r.yaml"))
    off = compile_ruleset(parse_text(rules(WEB.replace("syn_cookies: true", "syn_cookies: false")), "r.yaml"))
    none = compile_ruleset(parse_text(rules(WEB.replace("  syn_cookies: true\n", "")), "r.yaml"))
    assert on.digest != off.digest
    # false is the same plan as leaving the key out: the identity of rule sets
    # written before syn_cookies existed does not change.
    assert off.digest == none.digest
    back = plan_from_bytes(on.to_bytes())
    assert back.ingress.rules[0].syn_cookies is True
    assert back.digest == on.digest
    assert plan_from_bytes(off.to_bytes()).ingress.rules[0].syn_cookies is False


def test_tcp_flags_counts_as_a_tcp_match() -> None:
    rs = parse_text(
        rules(
            """\
            - name: syn
              match: {tcp_flags: "syn,!ack", dport: 22}
              action: allow
              syn_cookies: true
            """
        ),
        "r.yaml",
    )
    assert rs.ingress.rules[0].syn_cookies


@pytest.mark.parametrize(
    ("rule", "direction", "fragments"),
    [
        (WEB.replace("syn_cookies: true", "syn_cookies: 1"), "ingress", ["expected true or false", "1"]),
        (WEB.replace("syn_cookies: true", 'syn_cookies: "on"'), "ingress", ["expected true or false"]),
        (WEB, "egress", ["egress rule", "ingress rules only"]),
        (WEB.replace("action: allow", "action: drop"), "ingress", ["action drop", "action: allow"]),
        (WEB.replace("proto: tcp, ", ""), "ingress", ["tcp, udp, sctp", "TCP only"]),
        (WEB.replace("proto: tcp", "proto: [tcp, udp]"), "ingress", ["TCP only"]),
        (WEB.replace("{proto: tcp, dport: [80, 443]}", "{}"), "ingress", ["any protocol", "TCP only"]),
    ],
)
def test_refused_where_it_cannot_work(rule: str, direction: str, fragments: list[str]) -> None:
    with pytest.raises(RuleError) as info:
        parse_text(rules(rule, direction), "r.yaml")
    err = info.value
    assert err.line == 7, str(err)  # the syn_cookies line
    assert str(err).startswith("r.yaml:7: syn_cookies: ")
    assert err.exit_code == 2
    for f in fragments:
        assert f in err.message, (f, err.message)


def test_check_shows_the_flag_and_refuses_bad_input(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(rules(WEB))
    r = subprocess.run(
        [sys.executable, "-m", "xdpguard", "check", "--json", str(good)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert '"syn_cookies": true' in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(rules(WEB, "egress"))
    r = subprocess.run([sys.executable, "-m", "xdpguard", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{bad}:7: syn_cookies:" in r.stderr and "Traceback" not in r.stderr


def test_a_kernel_without_the_kfunc_gets_a_sentence() -> None:
    """What libbpf says when the kernel lacks bpf_sk_assign_tcp_reqsk becomes an operator's sentence."""
    from xdpguard.datapath import syncookie

    syncookie._log[:] = [
        "libbpf: extern (func ksym) 'bpf_sk_assign_tcp_reqsk': not found in kernel or module BTFs",
        "libbpf: failed to load object 'syncookie.o'",
    ]
    err = syncookie._explain("loading the programs", 22)
    assert "kernel 6.9 or later" in str(err) and "nothing was changed" in str(err), str(err)
    syncookie._log[:] = ["libbpf: prog 'xg_syn_xdp': BPF program load failed: Permission denied"]
    err = syncookie._explain("loading the programs", 13)
    assert "Permission denied" in str(err) and "6.9" not in str(err), str(err)


def test_metrics_carry_the_cookie_counters() -> None:
    from xdpguard import metrics

    fam = metrics._Families()
    stats = {
        "ingress": {
            "rules": [
                {"name": "web", "action": "allow", "packets": 9, "bytes": 900,
                 "syn_cookies": {"sent": 5, "valid": 3, "invalid": 2, "handoff_errors": 0}},
                {"name": "ssh", "action": "allow", "packets": 1, "bytes": 60},
            ],
            "default": {"action": "allow", "packets": 0, "bytes": 0},
        }
    }  # fmt: skip
    metrics._add_stats(fam, "eth0", stats)
    got = {
        (f.name, s.labels["rule"]): s.value
        for f in fam.syn.values()
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert got == {
        ("xdpguard_syncookies_sent", "web"): 5,
        ("xdpguard_syncookies_valid", "web"): 3,
        ("xdpguard_syncookies_invalid", "web"): 2,
        ("xdpguard_syncookies_handoff_errors", "web"): 0,
    }
