"""The state directory: trusted only when root alone can change it, never damaged by a fault.

`restore` applies at boot what the state directory says, and apply writes
into it as root, so:

- a directory another user owns, or that group or others can write, is
  refused with the reason (nothing attached, nothing restored);
- a symbolic link planted in it is never followed;
- every file is mode 0600 and every directory 0700 (rule files may be secret);
- a full file system (a small tmpfs) or a read-only one (remounted ro)
  leaves the kernel as the directory records it, with a message that says
  what to do, and no temporary files; `detach` still works;
- a damaged record (applied.json `[]`, wrong types, a plan.bin that is not
  the recorded plan) is reported as "file X is damaged: ...; run ..." by
  every command, never as an internal error, and `restore` goes on with the
  other interfaces;
- `status` and `stats` run by a normal user say they need root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.clihelp import (
    AS_A,
    AS_B,
    REPO,
    RULES_A,
    RULES_B,
    UNFILTERED,
    Guard,
    describe,
    expect_ok,
    guarded,
    lab_env,
    pins,
    run_cli,
    seen,
    write_rules,
)
from tests.netns.traffic import Lab

NOBODY = 65534
AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=+dac_read_search",
    "--",
]


class StateGuard(Guard):
    """The lab's CLI with the state directory somewhere of the test's choosing."""

    def __init__(self, lab: Lab, state_dir: Path) -> None:
        super().__init__(lab)
        self.state_dir = state_dir

    def cli(
        self, *args: str | os.PathLike[str], python_opts: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        env = lab_env(self.lab) | {"XDPGUARD_STATE_DIR": str(self.state_dir)}
        return run_cli(*args, netns=self.ns, env=env, python_opts=python_opts)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs of our own (mode 0700, root's), unmounted at the end."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """Take all but `leave` bytes of fs's free space (a new file each time)."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / f"filler{len(list(fs.glob('filler*')))}"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def no_tmp_files(d: Path) -> list[str]:
    return [str(p) for p in d.rglob("*.tmp")]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned directory every user can traverse (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="xdpguard-failclosed-state-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- trust ------------------------------------------------------------------


def test_state_dir_of_another_user_is_refused(lab: Lab, shared_dir: Path, tmp_path: Path) -> None:
    """Another user's state directory: apply refuses, and restore applies no plan it planted."""
    state = shared_dir / "state"
    with guarded(lab):
        g = StateGuard(lab, state)
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        expect_ok(g.cli("detach", "--iface", lab.b.ifname))
        # The user writes a record of an allow-all rule set into a directory it owns.
        g.apply(write_rules(tmp_path, "version: 1\ningress: {default: allow, rules: []}\n", "open.yaml"))
        subprocess.run(["rm", "-rf", str(lab.bpffs)], check=True)  # a reboot: the pins are gone
        os.chown(state, NOBODY, NOBODY)
        r = g.cli("restore")
        assert r.returncode == 1 and "Traceback" not in r.stderr, describe(r)
        assert f"owned by uid {NOBODY}, not root" in r.stderr, describe(r)
        assert pins(lab) == [], "restore attached a plan from a directory another user owns"
        r = g.cli("apply", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname)
        assert r.returncode == 1 and f"owned by uid {NOBODY}" in r.stderr, describe(r)
        assert pins(lab) == []
        os.chown(state, 0, 0)


def test_state_dir_writable_by_others_is_refused(lab: Lab, shared_dir: Path, tmp_path: Path) -> None:
    state = shared_dir / "state"
    state.mkdir()
    state.chmod(0o777)
    g = StateGuard(lab, state)
    r = g.cli("apply", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname)
    assert r.returncode == 1, describe(r)
    assert "writable by group or others (mode 0777)" in r.stderr and "chmod go-w" in r.stderr, describe(r)
    assert pins(lab) == []
    # A world-writable directory above it is as bad (unless sticky, as /tmp is).
    state.chmod(0o700)
    shared_dir.chmod(0o777)
    r = g.cli("status")
    assert r.returncode == 1 and f"above it, {shared_dir}" in r.stderr, describe(r)
    shared_dir.chmod(0o755)


def test_planted_symlink_is_not_followed(lab: Lab, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        d = lab.state_dir / lab.b.ifname
        # Where the next write of plan.bin would go first.
        os.symlink(victim, d / "plan.bin.tmp")
        g.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
        assert victim.read_bytes() == b"precious"
        assert seen(lab) == AS_B
        # A record that is a link is refused, not read.
        (d / "summary.json").unlink()
        os.symlink(victim, d / "summary.json")
        r = g.cli("plan", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname)
        assert r.returncode == 1 and "symbolic link" in r.stderr, describe(r)
        assert victim.read_bytes() == b"precious"


def test_files_are_private(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        g.apply(write_rules(tmp_path, RULES_B, "b.yaml"), "--confirm", "300s")
        expect_ok(g.cli("confirm", "--iface", lab.b.ifname))
        d = lab.state_dir / lab.b.ifname
        entries = [d, *d.rglob("*")]
        assert len(entries) > 10
        for p in entries:
            mode = stat.S_IMODE(p.lstat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {mode:04o}"
        # The lock, the watchdog's log, and the compiled-plan cache.
        for top in lab.state_dir.glob(".*"):
            for p in [top, *(top.rglob("*") if top.is_dir() else ())]:
                mode = stat.S_IMODE(p.lstat().st_mode)
                assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {mode:04o}"


# ---- faults -----------------------------------------------------------------


def test_full_file_system_leaves_the_kernel_as_recorded(lab: Lab, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs, guarded(lab):
        g = StateGuard(lab, fs / "state")
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        assert seen(lab) == AS_A
        # Room for the journal (it carries the rule text once) but not for the record (twice more).
        big = RULES_B + "# " + "x" * 300_000 + "\n"
        filler = fill(fs, 450_000)
        r = g.cli("apply", write_rules(tmp_path, big, "b.yaml"), "--iface", lab.b.ifname)
        assert r.returncode == 1 and "Traceback" not in r.stderr, describe(r)
        assert "internal error" not in r.stderr, describe(r)
        assert "no space left" in r.stderr and "put back to version 1" in r.stderr, describe(r)
        assert "free space in" in r.stderr, describe(r)
        assert seen(lab) == AS_A
        st = json.loads(expect_ok(g.cli("status", "--json")).stdout)[0]
        assert st["version"] == 1 and st["consistent"] is True and "recovered" not in st, st
        assert no_tmp_files(fs) == [] and not (fs / "state" / lab.b.ifname / "journal.json").exists()
        # Full before the journal: nothing is touched at all.
        fill_more = fill(fs, 0)
        r = g.cli("apply", write_rules(tmp_path, RULES_B, "b2.yaml"), "--iface", lab.b.ifname)
        assert r.returncode == 1 and "no space left" in r.stderr and "Traceback" not in r.stderr, describe(r)
        assert seen(lab) == AS_A
        filler.unlink()
        fill_more.unlink()
        g.apply(write_rules(tmp_path, big, "b.yaml"))
        assert seen(lab) == AS_B
        expect_ok(g.cli("detach", "--iface", lab.b.ifname))


def test_full_file_system_on_first_attach(lab: Lab, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "1m") as fs:
        g = StateGuard(lab, fs / "state")
        (fs / "state").mkdir(mode=0o700)
        filler = fill(fs, 0)
        r = g.cli("apply", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname)
        assert r.returncode == 1 and "no space left" in r.stderr and "Traceback" not in r.stderr, describe(r)
        assert pins(lab) == [] and seen(lab) == UNFILTERED
        filler.unlink()


def test_read_only_file_system(lab: Lab, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "4m") as fs:
        g = StateGuard(lab, fs / "state")
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        try:
            r = g.cli("apply", write_rules(tmp_path, RULES_B, "b.yaml"), "--iface", lab.b.ifname)
            assert r.returncode == 1 and "read-only" in r.stderr and "Traceback" not in r.stderr, describe(r)
            assert seen(lab) == AS_A
            r = expect_ok(g.cli("status"))
            r = expect_ok(g.cli("detach", "--iface", lab.b.ifname))
            assert "detached" in r.stdout and "could not be removed" in r.stderr, describe(r)
            assert pins(lab) == [] and seen(lab) == UNFILTERED
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)


# ---- damage -----------------------------------------------------------------

DAMAGE = {
    "applied-list": ("applied.json", b"[]"),
    "applied-types": ("applied.json", None),  # seq becomes a string, see below
    "plan": ("plan.bin", b"\x00garbage\xff" * 10),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_record_is_reported_by_every_command(lab: Lab, tmp_path: Path, case: str) -> None:
    name, content = DAMAGE[case]
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        g.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
        path = lab.state_dir / lab.b.ifname / name
        if content is None:
            data = json.loads(path.read_text())
            content = json.dumps(data | {"seq": "two"}).encode()
        path.write_bytes(content)
        for args in (
            ["status"],
            ["plan", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname],
            ["apply", write_rules(tmp_path, RULES_A, "a.yaml"), "--iface", lab.b.ifname],
            ["rollback", "--iface", lab.b.ifname],
            ["confirm", "--iface", lab.b.ifname],
            ["stats", "--iface", lab.b.ifname],
            ["restore"],
        ):
            r = g.cli(*args)
            assert r.returncode == 1, describe(r)
            out = r.stdout + r.stderr
            assert "internal error" not in out and "Traceback" not in out, describe(r)
            assert f"file {path} is damaged" in out, describe(r)
            assert f"xdpguard detach --iface {lab.b.ifname}" in out, describe(r)
        assert seen(lab) == AS_B  # the kernel keeps what it had


def test_restore_goes_on_past_a_damaged_interface(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        other = lab.state_dir / "xgdamaged0"
        shutil.copytree(lab.state_dir / lab.b.ifname, other)
        (other / "applied.json").write_text("[]")
        subprocess.run(["rm", "-rf", str(lab.bpffs)], check=True)  # a reboot
        r = g.cli("restore")
        assert r.returncode == 1 and "Traceback" not in r.stderr, describe(r)
        assert f"{lab.b.ifname}: restored" in r.stdout, describe(r)
        assert "xgdamaged0" in r.stderr and "is damaged" in r.stderr, describe(r)
        assert "1 of 2 interfaces not restored" in r.stderr, describe(r)
        assert seen(lab) == AS_A
        shutil.rmtree(other)


def test_damaged_confirm_record_is_dropped_by_confirm(lab: Lab, tmp_path: Path) -> None:
    with guarded(lab) as g:
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        g.apply(write_rules(tmp_path, RULES_B, "b.yaml"), "--confirm", "300s")
        path = lab.state_dir / lab.b.ifname / "confirm.json"
        path.write_text("{")
        r = g.cli("status")
        assert r.returncode == 1 and f"file {path} is damaged" in r.stdout + r.stderr, describe(r)
        assert f"xdpguard confirm --iface {lab.b.ifname}" in r.stdout + r.stderr, describe(r)
        r = expect_ok(g.cli("confirm", "--iface", lab.b.ifname))
        assert "was damaged: removed it" in r.stdout, describe(r)
        expect_ok(g.cli("status"))
        assert seen(lab) == AS_B


# ---- who may ask --------------------------------------------------------------


def test_status_and_stats_need_root(lab: Lab, shared_dir: Path, tmp_path: Path) -> None:
    state = shared_dir / "state"
    g = StateGuard(lab, state)
    with guarded(lab):
        g.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
        env = lab_env(lab) | {"XDPGUARD_STATE_DIR": str(state), "HOME": "/tmp"}
        for cmd in ("status", "stats"):
            # As uid nobody, holding only CAP_DAC_READ_SEARCH: enough to read
            # the checkout and its virtualenv when they sit in a directory only
            # root may enter (a 0700 CI workspace), and nothing that makes the
            # process root or lets it use bpf(2).
            r = subprocess.run(
                [*AS_NOBODY, sys.executable, "-m", "xdpguard", cmd],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                cwd=REPO,
            )
            assert r.returncode == 1, describe(r)
            assert f"`xdpguard {cmd}` needs root" in r.stderr and "Traceback" not in r.stderr, describe(r)
        expect_ok(g.cli("detach", "--iface", lab.b.ifname))
