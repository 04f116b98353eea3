"""Two rule sets that number the same ports differently, and how to see which is live.

Used by the crash-safety, confirm and zero-loss tests: a packet that read
half of one rule set and half of the other would get a verdict neither
gives, so "verdicts equal A or B, whole" shows an update was atomic.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from tests.netns import cli
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.rules import reference
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.parse import parse_text

# The same ports, numbered differently: a packet that read half of one rule
# set and half of the other would get a verdict neither gives.
RULES_A = """\
version: 1
ingress:
  default: drop
  rules:
    - {name: web, match: {proto: tcp, dport: [80, 443]}, action: allow}
    - {name: ssh, match: {proto: tcp, dport: 22, src: 192.0.2.0/24}, action: allow}
    - {name: dns, match: {proto: udp, dport: 53}, action: allow}
    - {name: junk, match: {proto: udp, dport: 1000-2000}, action: drop}
egress:
  default: allow
  rules:
    - {name: no-smtp, match: {proto: tcp, dport: 25}, action: drop}
"""
RULES_B = """\
version: 1
ingress:
  default: allow
  rules:
    - {name: junk2, match: {proto: udp, dport: 1500-3000}, action: drop}
    - {name: dns2, match: {proto: udp, dport: 53}, action: drop}
    - {name: ssh2, match: {proto: tcp, dport: 22, src: 198.51.100.0/24}, action: drop}
    - {name: web2, match: {proto: tcp, dport: 80}, action: drop}
egress:
  default: drop
  rules:
    - {name: smtp-ok, match: {proto: tcp, dport: 25}, action: allow}
"""


def probes() -> list[bytes]:
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    out = []
    for src in ("192.0.2.9", "198.51.100.9", "203.0.113.9"):
        for l4 in (
            TCP(dport=80),
            TCP(dport=443),
            TCP(dport=22),
            TCP(dport=25),
            UDP(dport=53),
            UDP(dport=1200),
            UDP(dport=2500),
            UDP(dport=9),
        ):
            out.append(bytes(eth / IP(src=src, dst="10.200.0.2") / l4))
    return out


PROBES = probes()


def expected(text: str) -> tuple[list[str], list[str]]:
    rs = parse_text(text)
    return (
        [reference.classify(rs, "ingress", parse_frame(f)).action for f in PROBES],
        [reference.classify(rs, "egress", parse_frame(f)).action for f in PROBES],
    )


WANT = {"A": expected(RULES_A), "B": expected(RULES_B)}


def xg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI without the exit-code check: these tests expect kills (-9) and refusals (1, 2)."""
    return cli.xg(*args, check=False, env=env)


def verdicts(lab) -> tuple[list[str], list[str]] | None:
    """What the attached programs decide for each probe; None when nothing is attached."""
    pins = lab.bpffs / lab.b.ifname
    if not (pins / "link_xdp").exists():
        return None
    out: list[list[str]] = [[], []]
    for i, (name, drop) in enumerate((("prog_ingress", B.XDP_DROP), ("prog_egress", 2))):
        with B.Fd(B.obj_get(str(pins / name))) as fd:
            for f in PROBES:
                out[i].append(reference.DROP if B.prog_test_run(fd, f).retval == drop else reference.PASS)
    return out[0], out[1]


def halves_level(lab, digest: str) -> bool:
    want = int.from_bytes(bytes.fromhex(digest[:16]), "little")
    with M.open_maps(str(lab.bpffs / lab.b.ifname)) as m:
        return all(M.read_config(m, h).plan_hash == want for h in range(4))


@pytest.fixture
def files(lab, tmp_path: Path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(RULES_A)
    b.write_text(RULES_B)
    assert WANT["A"] != WANT["B"]
    yield {"A": str(a), "B": str(b)}
    xg("--netns", lab.b.ns, "detach", "--all")


def apply(lab, path: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return xg("--netns", lab.b.ns, "apply", path, "--iface", lab.b.ifname, *extra, env=env)
