"""A plan's identity (digest) depends on what the rules do, not on where they sit in the file."""

from __future__ import annotations

from xdpguard.rules.compile import compile_ruleset, plan_from_bytes
from xdpguard.rules.parse import parse_text

RULES = """\
version: 1
ingress:
  default: drop
  rules:
    - {name: web, match: {proto: tcp, dport: 443}, action: allow}
    - {name: dns, match: {proto: udp, dport: 53}, action: allow, rate_limit: {pps: 100}}
"""


def test_blank_lines_and_comments_do_not_change_the_digest():
    a = compile_ruleset(parse_text(RULES))
    moved = "# a comment\n\n" + RULES.replace("  rules:\n", "  rules:\n\n    # web\n")
    b = compile_ruleset(parse_text(moved))
    assert a.digest == b.digest


def test_a_real_change_changes_the_digest():
    a = compile_ruleset(parse_text(RULES))
    b = compile_ruleset(parse_text(RULES.replace("443", "8443")))
    assert a.digest != b.digest


def test_round_trip_keeps_limits():
    a = compile_ruleset(parse_text(RULES))
    back = plan_from_bytes(a.to_bytes())
    assert [r.limit for r in back.ingress.rules] == [r.limit for r in a.ingress.rules]
    back._bytes = None
    assert back.to_bytes() == a.to_bytes()
