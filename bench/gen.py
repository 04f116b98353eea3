"""Deterministic synthetic rule files for benchmarks: N rules plus a big prefix set.

`write_large(dir, rules=4096, prefixes=1_000_000)` writes large.yaml and
lists/blocklist.netset; the same seed always gives the same files.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path


def _v4(a: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", a))


def write_blocklist(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    seen: set[tuple[int, int]] = set()
    lines = ["# synthetic blocklist for benchmarks"]
    while len(seen) < n:
        plen = rng.choice((32, 32, 32, 24, 28, 20, 16))
        a = rng.getrandbits(32) & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        if (a, plen) in seen:
            continue
        seen.add((a, plen))
        lines.append(f"{_v4(a)}/{plen}")
    path.write_text("\n".join(lines) + "\n")


def rules_yaml(nrules: int, seed: int = 2, set_file: str | None = "lists/blocklist.netset") -> str:
    rng = random.Random(seed)
    out = ["version: 1"]
    if set_file:
        out += ["sets:", f"  blocklist: {{file: {set_file}}}"]
    out += ["ingress:", "  default: allow", "  rules:"]
    start = 0
    if set_file:
        out += ["    - name: blocklist", '      match: {src: "@blocklist"}', "      action: drop"]
        start = 1
    for i in range(start, nrules):
        m = []
        if rng.random() < 0.7:
            plen = rng.choice((8, 16, 24, 32))
            a = rng.getrandbits(32) & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            m.append(f"src: {_v4(a)}/{plen}")
        if rng.random() < 0.5:
            plen = rng.choice((16, 24, 32))
            a = (0xC6336400 | rng.getrandbits(8)) & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            m.append(f"dst: {_v4(a)}/{plen}")
        proto = rng.choice(("tcp", "udp", None))
        if proto:
            m.append(f"proto: {proto}")
            if rng.random() < 0.8:
                lo = rng.randrange(1, 60000)
                m.append(
                    f"dport: {lo}" if rng.random() < 0.7 else f'dport: "{lo}-{lo + rng.randrange(1, 5000)}"'
                )
        action = rng.choice(("allow", "drop"))
        out += [f"    - name: r{i}", f"      match: {{{', '.join(m)}}}", f"      action: {action}"]
    return "\n".join(out) + "\n"


def write_large(d: Path, rules: int = 4096, prefixes: int = 1_000_000) -> Path:
    (d / "lists").mkdir(parents=True, exist_ok=True)
    if prefixes:
        write_blocklist(d / "lists" / "blocklist.netset", prefixes)
    p = d / "large.yaml"
    p.write_text(rules_yaml(rules, set_file="lists/blocklist.netset" if prefixes else None))
    return p
