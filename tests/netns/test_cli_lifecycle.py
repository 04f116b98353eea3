"""The CLI life cycle inside a network namespace; bad input never changes the kernel.

apply -> status / stats / plan -> apply again (idempotent) -> rule-only
update -> detach, each through `python -m xdpguard --netns NS ...` as a
subprocess, checked against the kernel (link and program ids, `ip link`)
and against real frames crossing the lab's veth pair.  Failures must be
clean: invalid rules, a bad interface or namespace, or an XDP program that
is already there exit with a sentence, no traceback, and leave the kernel
as it was.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns.clihelp import (
    MDNS_DISCARD_RULES,
    Frames,
    Guard,
    describe,
    expect_ok,
    ip_link_show,
    lab_env,
    pins,
    run_cli,
    send_and_see,
    write_rules,
)
from tests.netns.traffic import Lab, capture, new_marker, send_frames
from xdpguard import net
from xdpguard.datapath import bpf

RULES_V1 = MDNS_DISCARD_RULES

# v1 plus one rule at the end: a rule-only change.
RULES_V1_PLUS_SSH = (
    RULES_V1
    + """\
        - name: drop-ssh
          match: {proto: tcp, dport: 22}
          action: drop
"""
)

# v1 with allow-mdns changed, drop-discard removed, drop-ssh added.
RULES_V2 = """\
    version: 1
    ingress:
      default: allow
      rules:
        - name: allow-mdns
          match: {proto: udp, dport: [5353, 5354]}
          action: allow
        - name: drop-ssh
          match: {proto: tcp, dport: 22}
          action: drop
"""

# r0 = XDP_PASS; exit
XDP_PASS_PROG = bytes.fromhex("b700000002000000") + bytes.fromhex("9500000000000000")


def probe(lab: Lab) -> set[str]:
    """Which of three UDP frames cross to B: mdns (5353), discard (9), other (10)."""
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(
        lab, {"mdns": fx.udp(dport=5353), "discard": fx.udp(dport=9), "other": fx.udp(dport=10)}, settle=0.2
    )
    return arrived


V1_VERDICTS = {"mdns", "other"}


def has_xdp(ns: str, ifname: str) -> bool:
    out = ip_link_show(ns, ifname)
    return "prog/xdp" in out or re.search(r"\bxdp(generic|drv|offload)?\b", out) is not None


def state_files(lab: Lab, ifname: str) -> dict[str, tuple[int, bytes]]:
    d = lab.state_dir / ifname
    return {
        str(p.relative_to(d)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(d.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------
# apply, status, stats


def test_apply_attaches_and_status_agrees_with_check_and_kernel(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    path = write_rules(tmp_path, RULES_V1)
    r = guard.apply(path)
    assert "attached" in r.stdout and lab.b.ifname in r.stdout, r.stdout

    digest = json.loads(expect_ok(run_cli("check", path, "--json")).stdout)["digest"]
    st = guard.status()
    assert st["interface"] == lab.b.ifname
    assert st["attached"] is True
    assert st["digest"] == digest
    assert Path(st["file"]).resolve() == path.resolve()
    assert st["version"] >= 1 and st["applied_at"]
    xdp = st["xdp"]
    assert isinstance(xdp["link_id"], int) and xdp["link_id"] > 0
    assert isinstance(xdp["prog_id"], int) and xdp["prog_id"] > 0
    assert re.fullmatch(r"[0-9a-f]{16}", xdp["tag"]), xdp

    # The kernel agrees: the link is an XDP link on xb0 running that program.
    with bpf.Fd(bpf.link_get_fd_by_id(xdp["link_id"])) as lfd:
        li = bpf.link_info(lfd)
    assert (li.type, li.prog_id, li.ifindex) == (bpf.BPF_LINK_TYPE_XDP, xdp["prog_id"], lab.b.ifindex)
    with bpf.Fd(bpf.prog_get_fd_by_id(xdp["prog_id"])) as pfd:
        assert bpf.prog_info(pfd).tag == xdp["tag"]
    assert f"prog/xdp id {xdp['prog_id']} " in ip_link_show(lab.b.ns, lab.b.ifname)

    # `status` without --iface lists every interface xdpguard is on.
    rows = json.loads(expect_ok(guard.cli("status", "--json")).stdout)
    assert [row["interface"] for row in rows] == [lab.b.ifname]
    assert probe(lab) == V1_VERDICTS


def test_stats_json_counts_each_rule(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_V1))
    fx = Frames(lab.a, lab.b)
    frames = {f"mdns{i}": fx.udp(dport=5353, sport=41000 + i) for i in range(3)}
    frames |= {f"discard{i}": fx.udp(dport=9, sport=42000 + i) for i in range(2)}
    arrived, sent = send_and_see(lab, frames)
    assert arrived == {"mdns0", "mdns1", "mdns2"}

    st = guard.stats()
    assert st["interface"] == lab.b.ifname
    ing = st["ingress"]
    assert [(r["name"], r["action"]) for r in ing["rules"]] == [
        ("allow-mdns", "allow"),
        ("drop-discard", "drop"),
    ]
    mdns, discard = ing["rules"]
    assert (mdns["packets"], mdns["bytes"]) == (3, sum(len(sent[f"mdns{i}"]) for i in range(3)))
    assert (discard["packets"], discard["bytes"]) == (2, sum(len(sent[f"discard{i}"]) for i in range(2)))
    assert ing["default"]["action"] == "allow"
    for key in ("default", "malformed", "non_ip", "ndp", "error"):
        assert isinstance(ing[key]["packets"], int) and isinstance(ing[key]["bytes"], int), key
    assert ing["malformed"]["packets"] == ing["error"]["packets"] == 0


# ----------------------------------------------------------------------------
# plan


def test_plan_before_attach_and_for_the_applied_file(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    before = json.loads(expect_ok(guard.cli("plan", path, "--iface", lab.b.ifname, "--json")).stdout)
    assert before["changes"] is True and before["attached"] is False
    assert pins(lab) == [], "plan must not touch the kernel"

    guard.apply(path)
    same = json.loads(expect_ok(guard.cli("plan", path, "--iface", lab.b.ifname, "--json")).stdout)
    assert same["changes"] is False
    assert same["attached"] is True
    assert same["current_digest"] == same["new_digest"] == guard.status()["digest"]
    for d in same["rules"].values():
        assert d["added"] == d["removed"] == d["changed"] == [], d
    text = expect_ok(guard.cli("plan", path, "--iface", lab.b.ifname))
    assert "no changes" in text.stdout


def test_plan_lists_added_removed_and_changed_rules(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    guard.apply(path)
    applied = guard.status()

    write_rules(tmp_path, RULES_V2)  # the operator edits the file in place
    plan = json.loads(expect_ok(guard.cli("plan", path, "--iface", lab.b.ifname, "--json")).stdout)
    assert plan["changes"] is True
    ing = plan["rules"]["ingress"]
    assert [r["name"] for r in ing["added"]] == ["drop-ssh"]
    assert [r["name"] for r in ing["removed"]] == ["drop-discard"]
    assert [r["name"] for r in ing["changed"]] == ["allow-mdns"]
    assert plan["new_digest"] != plan["current_digest"] == applied["digest"]

    text = expect_ok(guard.cli("plan", path, "--iface", lab.b.ifname)).stdout
    assert re.search(r"\+ ingress drop-ssh\b", text), text
    assert re.search(r"- ingress drop-discard\b", text), text
    assert re.search(r"~ ingress allow-mdns\b", text), text

    # A plan is only a preview.
    now = guard.status()
    assert (now["digest"], now["version"], now["applied_at"]) == (
        applied["digest"],
        applied["version"],
        applied["applied_at"],
    )
    assert probe(lab) == V1_VERDICTS


# ----------------------------------------------------------------------------
# idempotence and rule-only updates


def test_applying_the_same_file_twice_changes_nothing(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    guard.apply(path)
    first = guard.status()
    files = state_files(lab, lab.b.ifname)
    pinned = pins(lab)
    time.sleep(1.1)  # a rewrite would show in applied_at, which has one-second resolution

    r = guard.apply(path)
    assert "no changes" in r.stdout, r.stdout
    res = guard.apply_json(path)
    assert res["changed"] is False
    assert res["attached"] is False
    assert res["replaced_program"] is False
    assert res["writes"] and all(v == 0 for v in res["writes"].values()), res["writes"]

    second = guard.status()
    for key in ("digest", "version", "applied_at", "file"):
        assert second[key] == first[key], key
    assert second["xdp"]["link_id"] == first["xdp"]["link_id"]
    assert second["xdp"]["prog_id"] == first["xdp"]["prog_id"]
    assert state_files(lab, lab.b.ifname) == files, "the state dir was rewritten"
    assert pins(lab) == pinned
    assert probe(lab) == V1_VERDICTS


def _stream(lab: Lab, stop: threading.Event, sent: list[bytes], marker: bytes) -> None:
    fx = Frames(lab.a, lab.b)
    i = 0
    while not stop.is_set():
        frame = fx.udp(dport=5353, sport=43000 + i % 1000) + marker + b"%06d." % i
        send_frames(lab.a.ns, lab.a.ifname, [frame])
        sent.append(frame)
        i += 1
        time.sleep(0.002)


def _apply_while_streaming(
    guard: Guard, lab: Lab, path: Path
) -> tuple[dict[str, Any], list[bytes], list[bytes]]:
    """`apply --json` while allowed mdns frames stream from A: (result, sent, seen on B)."""
    marker = new_marker()
    sent: list[bytes] = []
    stop = threading.Event()
    with capture(lab.b.ns, lab.b.ifname, match=lambda f: marker in f) as cap:
        sender = threading.Thread(target=_stream, args=(lab, stop, sent, marker))
        sender.start()
        try:
            time.sleep(0.1)
            res = guard.apply_json(path)
            time.sleep(0.1)
        finally:
            stop.set()
            sender.join()
        streamed = cap.wait(0.3)
    return res, sent, streamed


def test_rule_only_change_keeps_traffic_and_counters(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    guard.apply(path)
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {f"m{i}": fx.udp(dport=5353, sport=44000 + i) for i in range(5)})
    assert len(arrived) == 5
    assert guard.rule("allow-mdns")["packets"] == 5
    ids = guard.status()["xdp"]

    # Update while frames of the first rule keep flowing.
    write_rules(tmp_path, RULES_V1_PLUS_SSH)
    res, sent, streamed = _apply_while_streaming(guard, lab, path)
    assert res["changed"] is True and res["attached"] is False and res["replaced_program"] is False, res
    assert len(sent) > 20
    assert len(streamed) == len(sent), f"{len(sent) - len(streamed)} of {len(sent)} allowed frames lost"

    st = guard.stats()
    assert [r["name"] for r in st["ingress"]["rules"]] == ["allow-mdns", "drop-discard", "drop-ssh"]
    assert guard.rule("allow-mdns", st)["packets"] == 5 + len(sent), "the unchanged rule lost its counter"
    assert guard.rule("drop-ssh", st)["packets"] == 0
    now = guard.status()["xdp"]
    assert (now["link_id"], now["prog_id"]) == (ids["link_id"], ids["prog_id"]), (
        "a rule change replaced the program"
    )

    arrived, _ = send_and_see(lab, {"mdns": fx.udp(dport=5353), "ssh": fx.tcp(dport=22)})
    assert arrived == {"mdns"}
    st = guard.stats()
    assert guard.rule("allow-mdns", st)["packets"] == 6 + len(sent)
    assert guard.rule("drop-ssh", st)["packets"] == 1


def test_rule_only_apply_does_not_import_bcc(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    def bcc_imports(r: Any) -> list[str]:
        return [line for line in r.stderr.splitlines() if line.startswith("import time:") and "bcc" in line]

    path = write_rules(tmp_path, RULES_V1)
    first = expect_ok(guard.cli("apply", path, "--iface", lab.b.ifname, python_opts=["-X", "importtime"]))
    assert bcc_imports(first), "the first attach compiles with bcc: this check would not see it"

    attached = guard.status()
    write_rules(tmp_path, RULES_V2)
    update = expect_ok(guard.cli("apply", path, "--iface", lab.b.ifname, python_opts=["-X", "importtime"]))
    assert bcc_imports(update) == []
    updated = guard.status()
    assert updated["digest"] != attached["digest"], "the rule change was not applied"
    assert updated["xdp"]["prog_id"] == attached["xdp"]["prog_id"]
    again = expect_ok(guard.cli("apply", path, "--iface", lab.b.ifname, python_opts=["-X", "importtime"]))
    assert "no changes" in again.stdout
    assert bcc_imports(again) == []


# ----------------------------------------------------------------------------
# detach


def _assert_gone(guard: Guard, lab: Lab) -> None:
    assert pins(lab) == [], f"still pinned: {pins(lab)}"
    assert not (lab.state_dir / lab.b.ifname).exists(), "state dir left behind"
    assert not has_xdp(lab.b.ns, lab.b.ifname), ip_link_show(lab.b.ns, lab.b.ifname)
    rows = json.loads(expect_ok(guard.cli("status", "--json")).stdout)
    assert all(not row["attached"] for row in rows), rows
    assert probe(lab) == {"mdns", "discard", "other"}


def test_detach_iface_removes_pins_state_and_program(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_V1))
    assert has_xdp(lab.b.ns, lab.b.ifname)
    assert pins(lab)
    r = guard.detach()
    assert "detached" in r.stdout
    _assert_gone(guard, lab)
    again = guard.detach()
    assert "not attached" in again.stdout


def test_detach_all(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_V1))
    assert has_xdp(lab.b.ns, lab.b.ifname)
    expect_ok(guard.cli("detach", "--all"))
    _assert_gone(guard, lab)


# ----------------------------------------------------------------------------
# failures leave the kernel as it was

INVALID = {
    # kind: (rule file, line the error must name)
    "yaml-syntax": (RULES_V1.replace("{proto: udp, dport: 9}", "{proto: udp, dport: 9]"), 9),
    "unknown-key": (RULES_V1.replace("dport: 9}", "dprot: 9}"), 9),
    "cidr-host-bits": (RULES_V1.replace("{proto: udp, dport: 9}", "{src: 10.200.0.1/24}"), 9),
    "unknown-set": (RULES_V1.replace("{proto: udp, dport: 9}", '{src: "@nosuchset"}'), 9),
}


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_invalid_rules_leave_kernel_unchanged(guard: Guard, lab: Lab, tmp_path: Path, kind: str) -> None:
    good = write_rules(tmp_path, RULES_V1)
    guard.apply(good)
    before = guard.status()
    pinned = pins(lab)
    text, line = INVALID[kind]
    bad = write_rules(tmp_path, text, name="bad.yaml")

    r = guard.cli("apply", bad, "--iface", lab.b.ifname)
    assert r.returncode == 2, describe(r)
    assert "Traceback" not in r.stdout + r.stderr, describe(r)
    assert r.stderr.startswith(f"{bad}:{line}: "), describe(r)

    after = guard.status()
    for key in ("digest", "version", "applied_at", "file"):
        assert after[key] == before[key], key
    assert after["xdp"] == before["xdp"]
    assert pins(lab) == pinned
    assert probe(lab) == V1_VERDICTS


def test_bad_interface_name_exits_2(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    r = guard.cli("apply", path, "--iface", "nosuch0")
    assert r.returncode == 2, describe(r)
    assert "Traceback" not in r.stderr
    assert "nosuch0" in r.stderr and lab.b.ns in r.stderr, r.stderr
    # With one good and one bad interface, nothing is attached anywhere.
    r = guard.cli("apply", path, "--iface", lab.b.ifname, "--iface", "nosuch0")
    assert r.returncode == 2, describe(r)
    assert pins(lab) == []
    assert not has_xdp(lab.b.ns, lab.b.ifname)


def test_missing_namespace_exits_2(lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    name = f"{lab.b.ns}-missing"
    for args in (["status"], ["apply", str(path), "--iface", lab.b.ifname]):
        r = run_cli(*args, netns=name, env=lab_env(lab))
        assert r.returncode == 2, describe(r)
        assert "Traceback" not in r.stderr
        assert name in r.stderr and "namespace" in r.stderr, r.stderr
    assert pins(lab) == []


def test_apply_refuses_when_another_xdp_program_is_attached(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    path = write_rules(tmp_path, RULES_V1)
    with bpf.Fd(
        bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, expected_attach_type=bpf.BPF_XDP, name="foreign")
    ) as prog:
        with net.in_netns(lab.b.ns):
            link = bpf.Fd(bpf.link_create(prog, lab.b.ifindex, bpf.BPF_XDP))
        try:
            foreign_id = bpf.prog_info(prog).id
            status_before = expect_ok(guard.cli("status", "--json")).stdout
            r = guard.cli("apply", path, "--iface", lab.b.ifname)
            assert r.returncode == 1, describe(r)
            assert "Traceback" not in r.stderr
            assert "another xdp program is attached" in r.stderr.lower(), r.stderr
            assert pins(lab) == [], f"a failed attach left pins: {pins(lab)}"
            # Nothing was attached, so xdpguard must not start to know the interface.
            status_after = expect_ok(guard.cli("status", "--json")).stdout
            assert json.loads(status_after) == json.loads(status_before), (
                f"state left by the failed attach: {sorted(p.name for p in lab.state_dir.iterdir())}"
            )
            # The program that was there is still there.
            li = bpf.link_info(int(link))
            assert (li.prog_id, li.ifindex) == (foreign_id, lab.b.ifindex)
            assert f"prog/xdp id {foreign_id} " in ip_link_show(lab.b.ns, lab.b.ifname)
        finally:
            link.close()


# ----------------------------------------------------------------------------
# upgrade from maps pinned by an older xdpguard

RULES_BY_SOURCE = """\
    version: 1
    ingress:
      default: allow
      rules:
        - name: drop-discard-from-a
          match: {{src: {a}/32, proto: udp, dport: 9}}
          action: drop
        - name: drop-doc-net
          match: {{src: 192.0.2.0/24}}
          action: drop
"""


def test_apply_completes_maps_pinned_by_an_older_xdpguard(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """Maps pinned before the address tables existed (LPM tries, no `addrs`):
    the next apply loads the new programs, fills the new table for the
    recorded plan before swapping them in, removes the retired pins, and no
    allowed frame is lost on the way."""
    path = write_rules(tmp_path, RULES_BY_SOURCE.format(a=lab.a.ip4))
    guard.apply(path)
    before = guard.status()["xdp"]
    # What an older version left: no `addrs` pin (the running program keeps
    # its map), and a retired LPM trie pin.
    (lab.bpffs / lab.b.ifname / "addrs").unlink()
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 9, 4, 16, bpf.BPF_F_NO_PREALLOC, "old_src4")) as fd:
        bpf.obj_pin(fd, str(lab.bpffs / lab.b.ifname / "src4"))

    res, sent, streamed = _apply_while_streaming(guard, lab, path)
    assert res["replaced_program"] is True, res
    assert any("older xdpguard" in m and "src4" in m for m in res["messages"]), res["messages"]
    assert len(sent) > 20
    assert len(streamed) == len(sent), f"{len(sent) - len(streamed)} of {len(sent)} allowed frames lost"

    names = pins(lab)
    assert f"{lab.b.ifname}/addrs" in names and f"{lab.b.ifname}/src4" not in names, names
    assert guard.status()["xdp"]["prog_id"] != before["prog_id"]
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {"discard": fx.udp(dport=9), "other": fx.udp(dport=10)})
    assert arrived == {"other"}
    st = guard.stats()
    assert guard.rule("drop-discard-from-a", st)["packets"] == 1
    assert guard.rule("drop-doc-net", st)["packets"] == 0
    assert st["ingress"]["error"]["packets"] == 0, st["ingress"]
    # and the next apply finds everything in place
    again = guard.apply_json(path)
    assert again["changed"] is False and again["replaced_program"] is False, again


def _apply_with_a_new_map(guard: Guard, lab: Lab, path: Path, pin: str) -> None:
    """Apply `path`, lose the `pin` map (as with maps an older xdpguard
    pinned), apply again: the programs are replaced and the map is back."""
    guard.apply(path)
    (lab.bpffs / lab.b.ifname / pin).unlink()

    res = guard.apply_json(path)
    assert res["replaced_program"] is True, res
    assert any("older xdpguard" in m and pin in m for m in res["messages"]), res["messages"]
    assert f"{lab.b.ifname}/{pin}" in pins(lab)


def test_a_new_words_map_is_filled_before_the_swap(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """A set of at most 64 rules is scanned from the `words` array.  Pinned
    maps without it (an older xdpguard, or a lost pin) get a new, empty one
    with the new programs: the halves' words must be in it before the swap,
    or every packet would miss every rule (here: the drop rule)."""
    _apply_with_a_new_map(guard, lab, write_rules(tmp_path, RULES_BY_SOURCE.format(a=lab.a.ip4)), "words")
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {"discard": fx.udp(dport=9), "other": fx.udp(dport=10)})
    assert arrived == {"other"}
    st = guard.stats()
    assert guard.rule("drop-discard-from-a", st)["packets"] == 1
    assert st["ingress"]["error"]["packets"] == 0, st["ingress"]


def test_a_new_pflat_map_is_filled_before_the_swap(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """A set of 65 to 4,096 rules with at most 1,024 bitmaps is scanned from
    the `pflat` array.  Pinned maps without it get a new, empty one with the
    new programs: the halves' blocks must be in it before the swap, or the
    scan would find no rule at all (here: every drop rule)."""
    _apply_with_a_new_map(guard, lab, write_rules(tmp_path, _many_rules(120)), "pflat")
    fx = Frames(lab.a, lab.b)
    # r0 and r99 drop from any source (i % 3 == 0); 29999 is no rule's port.
    frames = {"r0": fx.udp(dport=30000), "r99": fx.udp(dport=30099), "none": fx.udp(dport=29999)}
    arrived, _ = send_and_see(lab, frames)
    assert arrived == {"none"}
    st = guard.stats()
    assert guard.rule("r0", st)["packets"] == 1 and guard.rule("r99", st)["packets"] == 1
    assert st["ingress"]["error"]["packets"] == 0, st["ingress"]


def _many_rules(n: int, moved: int | None = None) -> str:
    """n rules dropping UDP to one port each (30000 + i), from their own /24
    sources or any; rule `moved` drops the port after its own instead."""
    lines = ["version: 1", "ingress:", "  default: allow", "  rules:"]
    for i in range(n):
        port = 30000 + i + (1 if i == moved else 0)
        src = "" if i % 3 == 0 else f"src: 10.{i // 250}.{i % 250}.0/24, "
        lines.append(f"    - {{name: r{i}, match: {{{src}proto: udp, dport: {port}}}, action: drop}}")
    return "\n".join(lines) + "\n"


def test_an_edited_copy_compiles_the_changed_fields_only_and_right(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    # The edited copy's plan takes its unchanged fields from the cached plan of the
    # first file (plancache.Reuse): what it applies must be what a full compile gives.
    first = write_rules(tmp_path, _many_rules(600))
    guard.apply(first)
    edited = tmp_path / "edited.yaml"
    edited.write_text(_many_rules(600, moved=300))  # r300: any source, port 30300 -> 30301
    res = guard.apply_json(edited)
    assert res["changed"] and not res["replaced_program"], res
    assert res["digest"] == json.loads(expect_ok(run_cli("check", edited, "--json")).stdout)["digest"]
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {"old": fx.udp(dport=30300), "new": fx.udp(dport=30301)})
    assert arrived == {"old"}  # r300 (any source) drops 30301 now, and no rule 30300
