"""The rule files every benchmark uses, written once per run into a temp dir.

small.yaml is a realistic ten-rule host policy (a drop prefix, a handful of
allowed services, ICMP); large.yaml is bench.gen's 4,096 rules whose first
rule drops a 1,000,000-prefix blocklist.  Each has a "-changed" twin that
differs in exactly one rule's port, for the one-rule-change timings, and
large-prefix-changed.yaml reads a copy of the blocklist with one prefix
replaced (the one-prefix-change timing).
rules65k.yaml is bench.gen's rules at the per-direction limit, 65,536, for
the program cost of the largest rule set against the 10-rule one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench import gen

LARGE_RULES = 4096
LARGE_PREFIXES = 1_000_000
XL_RULES = 65_536

SMALL_RULES = """\
version: 1
mode: enforce
non_ip: allow
ingress:
  default: drop
  rules:
    - name: drop-abusers
      match: {src: 198.18.0.0/15}
      action: drop
    - name: ssh-office
      match: {src: 203.0.113.0/24, proto: tcp, dport: 22}
      action: allow
    - name: web
      match: {proto: tcp, dport: [80, 443]}
      action: allow
    - name: http3
      match: {proto: udp, dport: 443}
      action: allow
    - name: dns
      match: {proto: [udp, tcp], dport: 53}
      action: allow
    - name: ntp
      match: {proto: udp, dport: 123}
      action: allow
    - name: smtp
      match: {proto: tcp, dport: 25}
      action: allow
    - name: metrics
      match: {src: 10.0.0.0/8, proto: tcp, dport: 9100}
      action: allow
    - name: icmp-errors
      match: {icmp_type: [dest-unreachable, time-exceeded]}
      action: allow
    - name: ping
      match: {icmp_type: echo-request}
      action: allow
egress:
  default: allow
"""


@dataclass(frozen=True)
class Workload:
    dir: Path
    small: Path
    small_changed: Path
    large: Path
    blocklist: Path
    xl: Path


def behind_state_rule(text: str) -> str:
    """The same rule file with `state: established` (allow) as its first
    ingress rule, as most edge rule files start."""
    head = "ingress:\n  default: drop\n  rules:\n"
    if head not in text:
        raise ValueError("no ingress rules to put a state rule in front of")
    rule = "    - name: established\n      match: {state: established}\n      action: allow\n"
    return text.replace(head, head + rule, 1)


# A rule's single destination port (not a range, not a quoted form).
_SINGLE_DPORT = re.compile(r"dport: (\d+)\b(?![-\"])")


def change_one_port(text: str, nth: int = 0) -> str:
    """The same rule file with the nth single `dport: N` (first by default) moved to another port."""
    m = next((m for i, m in enumerate(_SINGLE_DPORT.finditer(text)) if i == nth), None)
    if m is None:
        raise ValueError(f"no single-port dport number {nth} to change")
    port = int(m.group(1))
    new = port + 1 if port < 65535 else port - 1
    return text[: m.start(1)] + str(new) + text[m.end(1) :]


def edits(text: str, n: int) -> list[str]:
    """n rule files, each one port away from the one before it (the first
    from `text`): a run of one-rule edits, every file new to the plan
    cache, as an operator's edits are (a file applied before would be a
    cache hit, which an edit never is)."""
    ports = len(_SINGLE_DPORT.findall(text))
    if not ports:
        raise ValueError("no single-port dport to change")
    out = []
    for i in range(n):
        text = change_one_port(text, nth=i % ports)
        out.append(text)
    return out


def write(d: Path, rules: int = LARGE_RULES, prefixes: int = LARGE_PREFIXES) -> Workload:
    d.mkdir(parents=True, exist_ok=True)
    small = d / "small.yaml"
    small.write_text(SMALL_RULES)
    small_changed = d / "small-changed.yaml"
    small_changed.write_text(change_one_port(SMALL_RULES))
    large = gen.write_large(d, rules=rules, prefixes=prefixes)
    blocklist = d / "lists" / "blocklist.netset"
    xl = d / "rules65k.yaml"
    xl.write_text(gen.rules_yaml(XL_RULES, set_file=None))
    return Workload(d, small, small_changed, large, blocklist, xl)


def change_one_prefix(text: str, k: int = 0) -> str:
    """The same set file with its (k+1)th IPv4 prefix from the end replaced
    by an address no other line holds (198.18.255.254 for k=0, then down)."""
    lines = text.rstrip("\n").split("\n")
    seen = 0
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] and not lines[i].startswith("#") and ":" not in lines[i]:
            if seen == k:
                lines[i] = f"198.18.{255 - k // 254}.{254 - k % 254}/32"
                return "\n".join(lines) + "\n"
            seen += 1
    raise ValueError("no IPv4 prefix to change")
