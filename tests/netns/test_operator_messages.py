"""What the CLI tells an operator is true: each message the issue found wrong, checked.

`status` shows the XDP mode the kernel reports, `apply --confirm` says what
comes back (or that nothing needed confirming), compound durations work,
`detach` leaves nothing in the state directory, a missing `--netns` is
suggested, and `plan` names the prefixes it adds and removes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.netns.clihelp import REPO, Guard, describe, expect_ok, guarded, lab_env, run_cli, write_rules
from tests.netns.traffic import Lab

RULES = """\
    version: 1
    sets:
      blocked: [192.0.2.0/24]
    ingress:
      default: allow
      rules:
        - {name: drop-blocked, match: {src: "@blocked"}, action: drop}
"""


def _kill_watchdog(lab: Lab) -> None:
    confirm = lab.state_dir / lab.b.ifname / "confirm.json"
    if confirm.exists():
        pid = json.loads(confirm.read_text()).get("pid")
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_status_shows_the_mode_the_kernel_reports(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES))  # --xdp-mode auto: the kernel chooses
        x = g.status()["xdp"]
        # veth has native XDP: that is what the link is, whatever was asked.
        assert (x["mode"], x["requested_mode"]) == ("native", "auto")
        out = expect_ok(g.cli("status", "--iface", lab.b.ifname)).stdout
        assert "mode native (asked: auto)" in out and "mode auto" not in out
        g.detach()
        g.apply(write_rules(tmp_path, RULES), "--xdp-mode", "generic")
        assert g.status()["xdp"]["mode"] == "generic"
        out = expect_ok(g.cli("status", "--iface", lab.b.ifname)).stdout
        assert "mode generic prog" in out and "asked" not in out


def test_confirm_on_a_first_attach_says_it_detaches(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        try:
            r = g.apply(write_rules(tmp_path, RULES), "--confirm", "1m30s")
            out = r.stdout
            assert "confirm within 90 s" in out, out
            assert f"or xdpguard is detached from {lab.b.ifname} at " in out
            assert "(there was no rule set before this one)" in out
            assert "previous rule set comes back" not in out
            pending = g.status()["pending_confirm"]
            assert pending["reverts_to"] == 0 and 80 < pending["seconds_left"] <= 90
        finally:
            _kill_watchdog(lab)


def test_confirm_on_an_update_names_the_version_that_comes_back(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        try:
            g.apply(write_rules(tmp_path, RULES))
            r = g.apply(
                write_rules(tmp_path, RULES.replace("192.0.2.0/24", "198.51.100.0/24")), "--confirm", "1h"
            )
            assert "or version 1 (the last confirmed rule set) comes back at " in r.stdout, r.stdout
        finally:
            _kill_watchdog(lab)


def test_confirm_with_no_changes_starts_no_watchdog(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        rules = write_rules(tmp_path, RULES)
        g.apply(rules)
        r = g.apply(rules, "--confirm", "30s")
        assert "no changes" in r.stdout
        assert "nothing changed, so there is nothing to confirm (no watchdog started)" in r.stdout
        assert "confirm within" not in r.stdout
        assert "pending_confirm" not in g.status()
        assert not (lab.state_dir / lab.b.ifname / "confirm.json").exists()
        assert not (lab.state_dir / f".{lab.b.ifname}.watchdog.log").exists()


def test_detach_removes_the_state_directory_and_the_watchdog_log(lab: Lab, tmp_path: Path) -> None:
    g = Guard(lab)
    rules = write_rules(tmp_path, RULES)
    g.apply(rules)
    try:
        g.apply(write_rules(tmp_path, RULES.replace("192.0.2.0/24", "198.51.100.0/24")), "--confirm", "1h")
        assert (lab.state_dir / f".{lab.b.ifname}.watchdog.log").exists()
    finally:
        r = expect_ok(g.cli("detach", "--iface", lab.b.ifname))
    assert r.stdout.startswith(f"{lab.b.ifname}: detached (")
    # Nothing of xdpguard is left: not the log, not the lock, not the directory.
    assert not lab.state_dir.exists(), sorted(p.name for p in lab.state_dir.iterdir())
    assert not lab.bpffs.exists()
    # A second detach is harmless, and an apply afterwards starts afresh.
    assert expect_ok(g.cli("detach", "--iface", lab.b.ifname)).stdout.strip().endswith("not attached")
    g.apply(rules)
    assert g.status()["version"] == 1
    expect_ok(g.cli("detach", "--all"))
    assert not lab.state_dir.exists() and not lab.bpffs.exists()


def test_apply_suggests_the_namespace_that_has_the_interface(lab: Lab, tmp_path: Path) -> None:
    # A name no other namespace on this (shared) machine has.
    name = f"nub{os.getpid() % 100_000}"
    subprocess.run(
        ["ip", "-n", lab.b.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
    )
    rules = write_rules(tmp_path, RULES)
    r = run_cli("apply", rules, "--iface", name, env=lab_env(lab))
    assert r.returncode == 2, describe(r)
    assert r.stderr.strip() == (
        f"xdpguard: no interface named {name!r}; network namespace {lab.b.ns} has one: use "
        f"`xdpguard --netns {lab.b.ns} apply {rules} --iface {name}`"
    )
    # In the wrong namespace, the right one is named too.
    r = run_cli("apply", rules, "--iface", name, netns=lab.a.ns, env=lab_env(lab))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f"xdpguard: no interface named {name!r} in network namespace {lab.a.ns}; "
        f"network namespace {lab.b.ns} has one: use --netns {lab.b.ns}"
    )
    # No namespace has it: the plain message.
    r = run_cli("apply", rules, "--iface", f"{name}x", env=lab_env(lab))
    assert r.returncode == 2 and r.stderr.strip() == f"xdpguard: no interface named {name + 'x'!r}"


def test_plan_lists_the_prefixes_it_adds_and_removes(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES))
        new = write_rules(
            tmp_path, RULES.replace("[192.0.2.0/24]", "[192.0.2.0/25, 198.51.100.7]"), "new.yaml"
        )
        out = expect_ok(g.cli("plan", new, "--iface", lab.b.ifname)).stdout
        lines = [line.rstrip() for line in out.splitlines()]
        i = lines.index("  ingress src prefixes: 2 added, 1 removed")
        assert lines[i + 1 : i + 4] == ["    + 192.0.2.0/25", "    + 198.51.100.7/32", "    - 192.0.2.0/24"]
        assert "+2 -1" not in out


def test_an_interface_that_went_away_is_gone_not_unknown(lab: Lab, tmp_path: Path) -> None:
    """apply to a protected interface that was deleted: exit 1 (nothing to
    protect), said as such, not "unknown interface" (exit 2); detach forgets it."""
    name = f"gon{os.getpid() % 100_000}"
    subprocess.run(
        ["ip", "-n", lab.b.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True
    )
    rules = write_rules(tmp_path, RULES)
    expect_ok(run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=lab_env(lab)))
    subprocess.run(["ip", "-n", lab.b.ns, "link", "del", name], check=True)
    r = run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=lab_env(lab))
    assert r.returncode == 1, describe(r)
    assert f"{name} is gone (no interface named {name!r} in network namespace {lab.b.ns})" in r.stderr
    assert "Traceback" not in r.stderr, describe(r)
    expect_ok(run_cli("detach", "--iface", name, netns=lab.b.ns, env=lab_env(lab)))
    assert not (lab.state_dir / name).exists() and not (lab.bpffs / name).exists()
    # Forgotten, the name is simply unknown again.
    r = run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=lab_env(lab))
    assert r.returncode == 2, describe(r)


def test_odd_option_values_are_usage_errors(lab: Lab, tmp_path: Path) -> None:
    """A namespace name `ip netns` cannot have, a --confirm window of years and
    a lock timeout that is not a number: exit 2, a sentence, nothing attached."""
    rules = write_rules(tmp_path, RULES)
    cases = [
        (("--netns", "../../etc", "status"), {}, "--netns: invalid network namespace name '../../etc'"),
        (
            ("--netns", lab.b.ns, "apply", rules, "--iface", lab.b.ifname, "--confirm", "99999999999d"),
            {},
            "--confirm: 99999999999d is longer than the longest window, 7 days",
        ),
        (
            ("--netns", lab.b.ns, "apply", rules, "--iface", lab.b.ifname),
            {"XDPGUARD_LOCK_TIMEOUT": "abc"},
            "XDPGUARD_LOCK_TIMEOUT: 'abc' is not a number of seconds",
        ),
    ]
    for args, env, message in cases:
        r = run_cli(*args, env=lab_env(lab) | env)
        assert r.returncode == 2, describe(r)
        assert message in r.stderr and "Traceback" not in r.stderr, describe(r)
    assert not (lab.bpffs / lab.b.ifname).exists()
    assert not (lab.state_dir / lab.b.ifname).exists()


def test_apply_under_ip_netns_exec_refuses_rather_than_attach_for_a_moment(lab: Lab, tmp_path: Path) -> None:
    """`ip netns exec` runs the command in a mount namespace of its own, whose
    /sys has no bpffs: pins made there vanish at exit, and the XDP link with
    them.  apply refuses (exit 2) instead of reporting an attach that lasts
    as long as the command; `--netns` works."""
    rules = write_rules(tmp_path, RULES)
    env = lab_env(lab) | {"XDPGUARD_BPFFS": "/sys/fs/bpf/xgexec" + str(os.getpid())}
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.b.ns,
            sys.executable,
            "-m",
            "xdpguard",
            "apply",
            str(rules),
            "--iface",
            lab.b.ifname,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2, describe(r)
    assert "pins made here would vanish when the command exits" in r.stderr, describe(r)
    assert "Traceback" not in r.stderr, describe(r)
    assert not (lab.state_dir / lab.b.ifname / "applied.json").exists()
    with guarded(lab) as g:
        g.apply(rules)
        assert g.status()["attached"] is True


def test_apply_in_another_namespace_does_not_move_the_firewall(lab: Lab, tmp_path: Path) -> None:
    """An interface of the same name in another namespace: apply refuses
    (exit 2) instead of taking the programs off the protected one."""
    rules = write_rules(tmp_path, RULES)
    with guarded(lab) as g:
        g.apply(rules)
        before = g.status()
        subprocess.run(
            ["ip", "-n", lab.a.ns, "link", "add", lab.b.ifname, "type", "veth", "peer", "name", "xgsame1"],
            check=True,
        )
        try:
            r = run_cli("apply", rules, "--iface", lab.b.ifname, netns=lab.a.ns, env=lab_env(lab))
            assert r.returncode == 2, describe(r)
            assert (
                f"xdpguard protects {lab.b.ifname} in network namespace {lab.b.ns}, and this apply runs in "
                f"network namespace {lab.a.ns}"
            ) in r.stderr, describe(r)
        finally:
            subprocess.run(["ip", "-n", lab.a.ns, "link", "del", lab.b.ifname], check=False)
        after = g.status()
        assert after["protected"] is True and after["version"] == before["version"], after
        assert after["xdp"]["link_id"] == before["xdp"]["link_id"], after


def test_a_refused_reattach_keeps_the_maps_for_the_next_try(lab: Lab, tmp_path: Path) -> None:
    """The interface re-created with another XDP program on it: the re-attach
    is refused (exit 1), but xdpguard stays recorded as attached there with
    its maps, so once the other program goes the next apply re-attaches and
    the dynamic set's elements are still there."""
    from xdpguard.datapath import bpf as B
    from xdpguard.net import ifindex, in_netns

    name = f"rea{os.getpid() % 100_000}"
    rules = write_rules(tmp_path, RULES.replace("blocked: [192.0.2.0/24]", "blocked: {dynamic: true}"))
    env = lab_env(lab)

    def veth() -> None:
        subprocess.run(
            ["ip", "-n", lab.b.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
            check=True,
        )

    veth()
    try:
        expect_ok(run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=env))
        expect_ok(run_cli("set", "add", "blocked", "198.51.100.7", netns=lab.b.ns, env=env))
        subprocess.run(["ip", "-n", lab.b.ns, "link", "del", name], check=True)
        veth()
        pass_prog = bytes.fromhex("b7000000020000009500000000000000")  # r0 = XDP_PASS; exit
        with B.Fd(
            B.prog_load(B.BPF_PROG_TYPE_XDP, pass_prog, expected_attach_type=B.BPF_XDP, name="other")
        ) as p:
            with in_netns(lab.b.ns):
                other = B.link_create(p, ifindex(name), B.BPF_XDP)
        try:
            r = run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=env)
            assert r.returncode == 1 and "Traceback" not in r.stderr, describe(r)
            st = json.loads(run_cli("status", "--iface", name, "--json", netns=lab.b.ns, env=env).stdout)[0]
            assert st["attached"] is True, st
        finally:
            os.close(other)
        out = expect_ok(run_cli("apply", rules, "--iface", name, netns=lab.b.ns, env=env)).stdout
        assert "attached the programs to" in out and "attached, " not in out, out
        listed = expect_ok(run_cli("set", "list", "blocked", "--json", netns=lab.b.ns, env=env)).stdout
        assert "198.51.100.7" in listed, listed
    finally:
        run_cli("detach", "--iface", name, netns=lab.b.ns, env=env)
        subprocess.run(["ip", "-n", lab.b.ns, "link", "del", name], check=False)
