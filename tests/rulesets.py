"""Rule files that more than one test uses, written once.

`ssh_guard` is the SSH brute-force guard that docs/rules.md walks through
(rules/bastion.yaml carries it too): unit tests check it packet by packet
on the plan and through `xdpguard test`, a netns test on the wire.
"""

from __future__ import annotations


def ssh_guard(office: str) -> str:
    """The guard's rule file, with `office` (addresses or CIDRs, YAML flow list items) as the office set."""
    return f"""\
version: 1
sets:
  office: [{office}]
ingress:
  default: drop
  rules:
    - name: ssh-guard
      match: {{proto: tcp, dport: 22, tcp_flags: "syn,!ack"}}
      action: continue
      rate_limit: {{rate: 5/minute, burst: 5, per: source, block_for: 10m}}
    - name: ssh-office
      match: {{src: "@office", proto: tcp, dport: 22}}
      action: allow
"""
