"""bench.translate: nft and iptables-legacy texts for ClassBench rules and blocklists."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench import classbench as cb
from bench import translate as tr

LINES = [
    "@237.73.3.4/32\t67.236.63.210/32\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n",
    "@10.0.0.0/8\t192.168.1.0/24\t1024 : 65535\t53 : 53\t0x11/0xFF\t0x0000/0x0000\t\n",
    "@1.2.3.0/24\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x2f/0xFF\t0x0000/0x0000\t\n",
    "@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n",
]
RULES = [cb.parse_rule_line(x) for x in LINES]
BLOCK = [(0x0A000000, 8), (0xC0000200, 24), (0xC0000201, 32)]  # the /32 lies inside the /24


def test_nft_linear_text():
    assert tr.nft_linear(RULES, "lo") == (
        "table netdev xgbench\n"
        "delete table netdev xgbench\n"
        "table netdev xgbench {\n"
        "\tchain ingress {\n"
        '\t\ttype filter hook ingress device "lo" priority 0; policy accept;\n'
        "\t\tip saddr 237.73.3.4 ip daddr 67.236.63.210 tcp dport 1711 accept\n"
        "\t\tip saddr 10.0.0.0/8 ip daddr 192.168.1.0/24 udp sport 1024-65535 udp dport 53 drop\n"
        "\t\tip saddr 1.2.3.0/24 ip protocol 47 accept\n"
        "\t\tmeta protocol ip drop\n"
        "\t}\n"
        "}\n"
    )


def test_nft_blocklist_text():
    text = tr.nft_blocklist(BLOCK, "lo")
    assert "\t\ttype ipv4_addr; flags interval; auto-merge;\n" in text
    assert "\t\t\t10.0.0.0/8,\n\t\t\t192.0.2.0/24,\n\t\t\t192.0.2.1/32\n" in text
    assert "\t\tip saddr @bl drop\n" in text


def test_iptables_linear_text():
    assert tr.iptables_linear(RULES, "lo") == (
        "*raw\n"
        ":PREROUTING ACCEPT [0:0]\n"
        ":OUTPUT ACCEPT [0:0]\n"
        "-A PREROUTING -i lo -s 237.73.3.4/32 -d 67.236.63.210/32 -p 6 -m tcp --dport 1711 -j ACCEPT\n"
        "-A PREROUTING -i lo -s 10.0.0.0/8 -d 192.168.1.0/24 -p 17 -m udp"
        " --sport 1024:65535 --dport 53 -j DROP\n"
        "-A PREROUTING -i lo -s 1.2.3.0/24 -p 47 -j ACCEPT\n"
        "-A PREROUTING -i lo -j DROP\n"
        "COMMIT\n"
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        print(f"skipping: {name} not installed")
        pytest.skip(f"{name} not installed")
    if os.geteuid() != 0:
        print(f"skipping: {name} needs root to check a ruleset")
        pytest.skip(f"{name} needs root")
    return path


def _accepts(argv: list[str], text: str) -> None:
    r = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr


def test_nft_accepts_texts():
    nft = _tool("nft")
    rules = cb.parse_rules(cb.DATA_DIR / "acl1_1k")[:50] if (cb.DATA_DIR / "acl1_1k").exists() else []
    for text in (tr.nft_linear(RULES + rules, "lo"), tr.nft_blocklist(BLOCK, "lo"), tr.nft_delete()):
        _accepts([nft, "-c", "-f", "-"], text)


def test_iptables_legacy_accepts_text():
    ipt = _tool("iptables-legacy-restore")
    _accepts([ipt, "--test"], tr.iptables_linear(RULES, "lo"))
