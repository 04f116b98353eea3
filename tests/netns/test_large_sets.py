"""A 10,000-rule set on the wire, through the CLI.

Rule i (0-9,999) matches UDP to port 20000 + i and allows when i is even,
drops when odd; a few rules also name the sender's address.  Frames from
A for rules on either side of every group boundary (4,096 rules to a
group) and for the last rule must arrive on B exactly when their rule
allows, and `stats --json` must count each in its rule.  Then a one-rule
change flips one verdict, and `apply --json` reports that only a few
bitmap blocks and top entries were written, not the whole table.
"""

from __future__ import annotations

from pathlib import Path

from tests.netns.clihelp import Frames, Guard, send_and_see
from tests.netns.traffic import Lab

N = 10_000
BASE_PORT = 20000
PROBES = [0, 1, 4094, 4095, 4096, 4097, 8190, 8191, 8192, 8193, N - 2, N - 1]


def _rules(lab: Lab, flip: int | None = None) -> str:
    lines = ["version: 1", "ingress:", "  default: allow", "  rules:"]
    for i in range(N):
        action = "allow" if i % 2 == 0 else "drop"
        if i == flip:
            action = "drop" if action == "allow" else "allow"
        src = f"src: {lab.a.ip4}/32, " if i % 3 == 0 else ""
        lines.append(
            f"    - {{name: r{i}, match: {{{src}proto: udp, dport: {BASE_PORT + i}}}, action: {action}}}"
        )
    return "\n".join(lines) + "\n"


def _probe(guard: Guard, lab: Lab, flip: int | None) -> None:
    fx = Frames(lab.a, lab.b)
    frames = {f"r{i}": fx.udp(dport=BASE_PORT + i) for i in PROBES}
    # Rule 3 names A's address: the same port from another source matches no rule.
    frames["other-src"] = fx.udp(dport=BASE_PORT + 3, src="10.200.0.77")
    before = guard.stats()
    arrived, _ = send_and_see(lab, frames)
    want = {f"r{i}" for i in PROBES if (i % 2 == 0) != (i == flip)} | {"other-src"}
    assert arrived == want
    after = guard.stats()
    for i in PROBES:
        got = guard.rule(f"r{i}", after)["packets"] - guard.rule(f"r{i}", before)["packets"]
        assert got == 1, (i, got)


def test_ten_thousand_rules_on_the_wire(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(_rules(lab))
    first = guard.apply_json(path)
    assert first["attached"]
    _probe(guard, lab, None)

    # One rule changes verdict: a rule-only update that writes little.
    path.write_text(_rules(lab, flip=8192))
    res = guard.apply_json(path)
    assert res["changed"] and not res["attached"]
    w = res["writes"]
    assert w["blocks"] == 0 and w["bitmaps"] == 0, w  # no match changed: only the rule entry
    _probe(guard, lab, 8192)

    # A one-rule match change (rule 5000 takes rule 5001's port): a new
    # bitmap for that port, a few blocks and top entries, not the table.
    path.write_text(
        _rules(lab, flip=8192).replace(f"dport: {BASE_PORT + 5000}}}", f"dport: {BASE_PORT + 5001}}}")
    )
    res = guard.apply_json(path)
    w = res["writes"]
    assert 0 < w["blocks"] <= 4 and 0 < w["bitmaps"] <= 16 and w["array_updates"] <= 16, w
