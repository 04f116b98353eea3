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
from xdpguard.datapath import maps as M

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


# A source list whose address table outgrows the fixed size (FIX_NODES,
# 2,304 elements): 2,200 /16s with 20 separate /24s each, so every /16
# needs a dense node of its own beside the 256 of the root.
FAR_NETS = [f"{a}.{b}.{2 * k}.0/24" for a in range(11, 21) for b in range(220) for k in range(20)]


def _far_rules(lab: Lab, n: int) -> str:
    """The first n rules of _rules, then one dropping sources in FAR_NETS (a set file)."""
    head, _, body = _rules(lab).partition("ingress:\n")
    kept = body.splitlines()[: 2 + n]  # "  default", "  rules:", then the rules
    far = '    - {name: far, match: {src: "@far"}, action: drop}'
    return head + "sets:\n  far: {file: far.netset}\ningress:\n" + "\n".join([*kept, far]) + "\n"


def _where(lab: Lab) -> dict[str, bool]:
    """Which of the live ingress half's tables are in the fixed-size maps, after
    checking that every outer slot agrees with its config."""
    pin_dir = str(lab.bpffs / lab.b.ifname)
    with M.open_maps(pin_dir) as m:
        half = M.half_of("ingress", M.read_active(pin_dir))
        assert M.misplaced_tables(m, half) == []
        return M.size_classes(m, half)


def _probe_far(guard: Guard, lab: Lab, n: int) -> None:
    fx = Frames(lab.a, lab.b)
    probes = [i for i in PROBES if i < n]
    frames = {f"r{i}": fx.udp(dport=BASE_PORT + i) for i in probes}
    frames["far-member"] = fx.udp(dport=9, src="13.7.38.1")  # no rule but `far`
    frames["far-gap"] = fx.udp(dport=9, src="13.7.39.1")  # an odd /24: not in the list
    # r2 allows (and names no source): it comes first.
    frames["far-member-r2"] = fx.udp(dport=BASE_PORT + 2, src="12.100.0.9")
    arrived, _ = send_and_see(lab, frames)
    assert arrived == {f"r{i}" for i in probes if i % 2 == 0} | {"far-gap", "far-member-r2"}


def test_tables_move_between_size_classes(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """10,000 rules read the fixed-size tables (but for the destination
    tables: no rule names a destination, so packets never read them), but
    their source table, grown past FIX_NODES by a long list, moves to a
    sized one; 100 rules (one group) read sized bitmap tables; then back.
    Verdicts hold at every step, and no outer slot keeps a table the half
    no longer reads."""
    (tmp_path / "far.netset").write_text("\n".join(FAR_NETS) + "\n")
    path = tmp_path / "rules.yaml"

    # (No flat table: 10,000 rules are three groups, and 100 rules' bitmaps fit `pflat`.)
    fixed = {"bitmaps": True, "flat": False, "src4": True, "src6": True, "dst4": False, "dst6": False}
    path.write_text(_rules(lab))
    guard.apply_json(path)
    assert _where(lab) == fixed
    assert guard.status()["fast_tables"]["ingress"]["bitmap_tables"] == "fixed"
    assert "ingress bitmap tables: fixed-size" in guard.cli("status", "--iface", lab.b.ifname).stdout
    _probe(guard, lab, None)

    path.write_text(_far_rules(lab, N))
    guard.apply_json(path)
    where = _where(lab)
    assert where == {**fixed, "src4": False}, where
    _probe_far(guard, lab, N)

    path.write_text(_far_rules(lab, 100))
    guard.apply_json(path)
    where = _where(lab)
    assert where == {**fixed, "bitmaps": False, "src4": False}, where
    # 100 rules' bitmaps are in `pflat`: no large bitmap table, and status says nothing of them.
    assert guard.status()["fast_tables"]["ingress"]["bitmap_tables"] == "none"
    assert "bitmap tables" not in guard.cli("status", "--iface", lab.b.ifname).stdout
    _probe_far(guard, lab, 100)

    path.write_text(_rules(lab))
    guard.apply_json(path)
    assert _where(lab) == fixed
    _probe(guard, lab, None)
