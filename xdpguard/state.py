"""Where xdpguard keeps things: pinned objects, applied rule sets, journal, lock.

Kernel objects live under `$XDPGUARD_BPFFS/<ifname>/` (default
/sys/fs/bpf/xdpguard); what was applied under `$XDPGUARD_STATE_DIR/<ifname>/`
(default /var/lib/xdpguard):

    applied.json plan.bin rules.yaml summary.json   the live rule set
    history/<seq>/...                               the last HISTORY applied sets
    journal.json journal.plan.bin                   an apply in progress
    confirm.json                                    an apply awaiting `confirm`

The pins are the truth about the data plane; the state dir says which
rule file produced it.  The journal is written before the kernel is
touched and removed after the state dir records the result, so a crash at
any point leaves enough to finish or undo the apply (dataplane.recover).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xdpguard.errors import KernelError, XdpguardError

DEFAULT_BPFFS = "/sys/fs/bpf/xdpguard"
DEFAULT_STATE_DIR = "/var/lib/xdpguard"
HISTORY = 10


def bpffs_root() -> Path:
    return Path(os.environ.get("XDPGUARD_BPFFS", DEFAULT_BPFFS))


def state_root() -> Path:
    return Path(os.environ.get("XDPGUARD_STATE_DIR", DEFAULT_STATE_DIR))


def lock_timeout() -> float:
    return float(os.environ.get("XDPGUARD_LOCK_TIMEOUT", "30"))


def fault(point: str) -> None:
    """Crash here when a test asks for it (XDPGUARD_FAULT=point): SIGKILL, no clean-up.

    Tests kill an apply at every step this way and check that the data
    plane shows the old or the new rule set, never a mix.
    """
    if os.environ.get("XDPGUARD_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class LockTimeout(XdpguardError):
    exit_code = 1


@dataclass
class Applied:
    """Metadata of a rule set applied to one interface."""

    ifname: str
    ifindex: int
    netns: str | None
    file: str
    digest: str
    applied_at: float
    seq: int
    xdp_mode: str
    source_hash: str
    directions: list[str] = field(default_factory=lambda: ["ingress", "egress"])
    note: str = ""  # e.g. "rollback to 3", "confirm timeout"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Applied:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Snapshot:
    """One applied rule set as the state dir keeps it."""

    applied: Applied
    plan_bytes: bytes
    rules_text: str | None
    summary: dict[str, Any] | None


@dataclass
class Iface:
    ifname: str

    @property
    def pin_dir(self) -> Path:
        return bpffs_root() / self.ifname

    @property
    def state_dir(self) -> Path:
        return state_root() / self.ifname

    @property
    def watchdog_log(self) -> Path:
        """What a --confirm watchdog prints (beside the state dir, which a revert may remove)."""
        return state_root() / f".{self.ifname}.watchdog.log"

    def pin(self, name: str) -> str:
        return str(self.pin_dir / name)

    # ---- the live rule set ------------------------------------------------

    def load_applied(self) -> Applied | None:
        return _read_applied(self.state_dir / "applied.json")

    def load_plan_bytes(self) -> bytes | None:
        try:
            return (self.state_dir / "plan.bin").read_bytes()
        except FileNotFoundError:
            return None

    def load_summary(self) -> dict[str, Any] | None:
        return _read_json(self.state_dir / "summary.json")

    def load_rules_text(self) -> str | None:
        try:
            return (self.state_dir / "rules.yaml").read_text()
        except FileNotFoundError:
            return None

    def commit(self, snap: Snapshot) -> None:
        """Record a rule set as live: into history first, then as the current one."""
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        _write_snapshot(d / "history" / f"{snap.applied.seq:08d}", snap)
        _write_snapshot(d, snap)
        self._prune_history()

    def _prune_history(self) -> None:
        h = self.state_dir / "history"
        entries = sorted(p for p in h.iterdir() if p.is_dir()) if h.is_dir() else []
        # The rule set a pending confirm would restore stays, however many applies came since.
        pending = self.load_confirm()
        keep = f"{int(pending['target_seq']):08d}" if pending else None
        for old in entries[:-HISTORY]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    def history(self) -> list[Snapshot]:
        """Applied rule sets, oldest first (at most HISTORY)."""
        h = self.state_dir / "history"
        out = []
        for p in sorted(h.iterdir()) if h.is_dir() else []:
            snap = _read_snapshot(p)
            if snap is not None:
                out.append(snap)
        return out

    def remove_state(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---- journal ----------------------------------------------------------

    def begin(self, kind: str, plan_bytes: bytes, meta: dict[str, Any]) -> None:
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(d / "journal.plan.bin", plan_bytes)
        _atomic_write(d / "journal.json", json.dumps({"kind": kind, "started": time.time(), **meta}).encode())

    def journal(self) -> tuple[dict[str, Any], bytes] | None:
        meta = _read_json(self.state_dir / "journal.json")
        if meta is None:
            return None
        try:
            return meta, (self.state_dir / "journal.plan.bin").read_bytes()
        except FileNotFoundError:
            return None

    def end(self) -> None:
        for name in ("journal.json", "journal.plan.bin"):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()

    # ---- confirm-or-revert -----------------------------------------------

    def load_confirm(self) -> dict[str, Any] | None:
        return _read_json(self.state_dir / "confirm.json")

    def save_confirm(self, data: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.state_dir / "confirm.json", json.dumps(data, indent=2).encode())

    def clear_confirm(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "confirm.json").unlink()

    # ---- lock -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None) -> Iterator[None]:
        """One writer per interface: a second apply waits, then gives up clearly.

        The lock file is removed once the interface has neither pins nor
        state, so a failed attach or a detach leaves nothing behind.  A
        waiter that then wins the lock on the removed file notices (the
        path names another inode, or none) and locks afresh.
        """
        timeout = lock_timeout() if timeout is None else timeout
        root = state_root()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f".{self.ifname}.lock"
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as e:
                        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                            raise
                        if time.monotonic() >= deadline:
                            raise LockTimeout(
                                f"another xdpguard command is changing {self.ifname} "
                                f"(waited {timeout:.0f} s for the lock {path})"
                            ) from None
                        time.sleep(0.05)
                try:
                    same = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            if not self.pin_dir.exists() and not self.state_dir.exists():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise KernelError(f"{path} is damaged ({e}); run `xdpguard detach` and apply again") from e


def _read_applied(path: Path) -> Applied | None:
    data = _read_json(path)
    if data is None:
        return None
    try:
        return Applied.from_json(json.dumps(data))
    except TypeError as e:
        raise KernelError(f"{path} is damaged ({e}); run `xdpguard detach` and apply again") from e


def _write_snapshot(d: Path, snap: Snapshot) -> None:
    d.mkdir(parents=True, exist_ok=True)
    _atomic_write(d / "plan.bin", snap.plan_bytes)
    if snap.rules_text is not None:
        _atomic_write(d / "rules.yaml", snap.rules_text.encode())
    if snap.summary is not None:
        _atomic_write(d / "summary.json", json.dumps(snap.summary, sort_keys=True).encode())
    # Metadata last: it names a plan that is already on disk.
    _atomic_write(d / "applied.json", snap.applied.to_json().encode())


def _read_snapshot(d: Path) -> Snapshot | None:
    applied = _read_applied(d / "applied.json")
    if applied is None:
        return None
    try:
        plan = (d / "plan.bin").read_bytes()
    except FileNotFoundError:
        return None
    try:
        text: str | None = (d / "rules.yaml").read_text()
    except FileNotFoundError:
        text = None
    return Snapshot(applied, plan, text, _read_json(d / "summary.json"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def known_ifaces() -> list[str]:
    """Interfaces with pins or state."""
    names: set[str] = set()
    for root in (bpffs_root(), state_root()):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir())
    return sorted(names)
