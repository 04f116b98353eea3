"""Boot restore: the recorded rule set comes back when the pins are gone.

A reboot loses everything under bpffs and keeps the state dir.  The test
simulates one by unlinking every pin (the links go with their last
reference, which detaches the programs), checks that traffic is no longer
filtered, then runs the command line of the installed systemd unit
(rendered by `make install-systemd` into a temporary root) and checks the
same verdicts on the wire and the same digest in `status`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from tests.netns.clihelp import (
    MDNS_DISCARD_RULES,
    REPO,
    Frames,
    Guard,
    describe,
    expect_ok,
    lab_env,
    pins,
    run_cli,
    send_and_see,
    write_rules,
)
from tests.netns.traffic import Lab

RULES = MDNS_DISCARD_RULES
FILTERED = {"mdns", "other"}
UNFILTERED = {"mdns", "discard", "other"}
UNIT = "xdpguard-restore.service"


def probe(lab: Lab) -> set[str]:
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(
        lab, {"mdns": fx.udp(dport=5353), "discard": fx.udp(dport=9), "other": fx.udp(dport=10)}, settle=0.2
    )
    return arrived


def reboot_bpffs(lab: Lab) -> None:
    """What a reboot does to bpffs: every pin gone.  The state dir stays."""
    for p in sorted(lab.bpffs.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir():
            p.rmdir()
        else:
            p.unlink()
    lab.bpffs.rmdir()


def wait_unfiltered(lab: Lab) -> set[str]:
    # The links are released when their last reference goes, asynchronously.
    deadline = time.monotonic() + 10
    while True:
        seen = probe(lab)
        if seen == UNFILTERED or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def render_unit(root: Path) -> Path:
    r = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "install-systemd", f"DESTDIR={root}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, describe(r)
    unit = root / "etc/systemd/system" / UNIT
    assert unit.is_file(), r.stdout
    assert "not reloading or enabling" in r.stdout, r.stdout
    return unit


def exec_start(unit: Path) -> list[str]:
    lines = [ln.split("=", 1)[1] for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_rendered_unit(tmp_path: Path) -> None:
    unit = render_unit(tmp_path / "root")
    text = unit.read_text()
    venv_bin = (REPO / ".venv/bin/xdpguard").resolve()
    assert exec_start(unit) == [str(venv_bin), "restore"]
    for line in ("Type=oneshot", "After=network-online.target", "Wants=network-online.target",
                 "WantedBy=multi-user.target"):  # fmt: skip
        assert line in text.splitlines(), text
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    # The template itself stays installable by hand with a system-wide xdpguard.
    assert exec_start(REPO / "deploy/systemd" / UNIT) == ["/usr/local/bin/xdpguard", "restore"]


def test_restore_after_reboot(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules", RULES)
    guard.apply(rules)
    assert probe(lab) == FILTERED
    before = guard.status()
    assert before["attached"] and before["netns"] == lab.b.ns

    reboot_bpffs(lab)
    assert pins(lab) == []
    assert wait_unfiltered(lab) == UNFILTERED, "traffic still filtered with every pin gone"
    # Recorded but not in the kernel: status says so, and exits 1.
    r = guard.cli("status", "--iface", lab.b.ifname, "--json")
    assert r.returncode == 1, describe(r)
    [row] = json.loads(r.stdout)
    assert not row["attached"] and row["protected"] is False and "xdpguard restore" in row["fix"], row

    # The rule file may be gone or changed by boot time: restore uses the recorded plan.
    rules.write_text("this is not a rule file\n")

    cmd = exec_start(render_unit(tmp_path / "root"))
    env = lab_env(lab)
    r = expect_ok(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300))
    assert f"{lab.b.ifname}: restored" in r.stdout, describe(r)

    assert probe(lab) == FILTERED
    after = guard.status()
    assert after["attached"] and after["xdp"]["live"], after
    assert after["digest"] == before["digest"]
    assert after["consistent"] is True
    assert after["xdp_mode"] == before["xdp_mode"]
    assert after["netns"] == lab.b.ns
    assert guard.rule("drop-discard")["packets"] == 1  # counting again, from zero

    # A second run (the unit started again) leaves the live data plane alone.
    link_id = after["xdp"]["link_id"]
    r = expect_ok(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300))
    assert "already attached" in r.stdout, describe(r)
    assert guard.status()["xdp"]["link_id"] == link_id


def test_missing_interface_reported_others_restored(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path / "rules", RULES))
    digest = guard.status()["digest"]
    # The record of an interface that no longer exists (a NIC replaced, a veth gone).
    gone = lab.state_dir / "xgone0"
    shutil.copytree(lab.state_dir / lab.b.ifname, gone)
    applied = json.loads((gone / "applied.json").read_text())
    (gone / "applied.json").write_text(json.dumps(applied | {"ifname": "xgone0"}))
    reboot_bpffs(lab)
    assert wait_unfiltered(lab) == UNFILTERED

    r = run_cli("restore", env=lab_env(lab))
    assert r.returncode == 1, describe(r)
    assert "Traceback" not in r.stderr, describe(r)
    assert f"{lab.b.ifname}: restored" in r.stdout, describe(r)
    assert "xgone0" in r.stderr and "no interface named xgone0" in r.stderr, describe(r)
    assert f"network namespace {lab.b.ns}" in r.stderr, describe(r)
    assert "1 of 2 interfaces not restored: xgone0" in r.stderr, describe(r)
    assert probe(lab) == FILTERED
    assert guard.status()["digest"] == digest
    assert not (lab.bpffs / "xgone0").exists(), "a failed restore left pins behind"
    shutil.rmtree(gone)


def test_unconfirmed_apply_is_not_restored(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    """A reboot during a --confirm window: the watchdog died, restore reverts for it."""
    guard.apply(write_rules(tmp_path / "v1", RULES))
    v1 = guard.status()
    lockout = RULES.replace("default: allow", "default: drop").replace("dport: 5353", "dport: 1")
    guard.apply(write_rules(tmp_path / "v2", lockout), "--confirm", "300s")
    assert probe(lab) == set()
    pending = json.loads((lab.state_dir / lab.b.ifname / "confirm.json").read_text())
    # The reboot kills the watchdog along with the pins.
    subprocess.run(["kill", str(pending["pid"])], check=False)
    reboot_bpffs(lab)

    r = expect_ok(run_cli("restore", "--json", env=lab_env(lab)))
    [out] = json.loads(r.stdout)
    assert out["result"] == "restored" and "never confirmed" in out["message"], out
    assert probe(lab) == FILTERED
    st = guard.status()
    assert st["digest"] == v1["digest"] and "pending_confirm" not in st, st


def test_unconfirmed_first_apply_stays_detached(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    """Nothing was confirmed before: the watchdog would have detached, so restore does."""
    guard.apply(write_rules(tmp_path / "v1", RULES), "--confirm", "300s")
    pending = json.loads((lab.state_dir / lab.b.ifname / "confirm.json").read_text())
    subprocess.run(["kill", str(pending["pid"])], check=False)
    reboot_bpffs(lab)

    r = expect_ok(run_cli("restore", env=lab_env(lab)))
    assert "left detached" in r.stdout, describe(r)
    assert wait_unfiltered(lab) == UNFILTERED
    assert not (lab.state_dir / lab.b.ifname).exists()
    assert pins(lab) == []
