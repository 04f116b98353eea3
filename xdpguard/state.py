"""Where xdpguard keeps things: pinned objects, the applied rule set, the lock.

Kernel objects live under `$XDPGUARD_BPFFS/<ifname>/` (default
/sys/fs/bpf/xdpguard); what was applied (plan, rule file copy, metadata)
under `$XDPGUARD_STATE_DIR/<ifname>/` (default /var/lib/xdpguard).  The
pins are the truth about the data plane; the state dir says which rule
file produced it, for `plan`, `status` and `rollback`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xdpguard.errors import KernelError, XdpguardError

DEFAULT_BPFFS = "/sys/fs/bpf/xdpguard"
DEFAULT_STATE_DIR = "/var/lib/xdpguard"
LOCK_TIMEOUT = float(os.environ.get("XDPGUARD_LOCK_TIMEOUT", "30"))


def bpffs_root() -> Path:
    return Path(os.environ.get("XDPGUARD_BPFFS", DEFAULT_BPFFS))


def state_root() -> Path:
    return Path(os.environ.get("XDPGUARD_STATE_DIR", DEFAULT_STATE_DIR))


class LockTimeout(XdpguardError):
    exit_code = 1


@dataclass
class Applied:
    """Metadata of the rule set live on one interface."""

    ifname: str
    ifindex: int
    netns: str | None
    file: str
    digest: str
    applied_at: float
    seq: int
    xdp_mode: str
    source_hash: str
    directions: list[str] = field(default_factory=lambda: ["ingress"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Applied:
        return cls(**json.loads(text))


@dataclass
class Iface:
    ifname: str

    @property
    def pin_dir(self) -> Path:
        return bpffs_root() / self.ifname

    @property
    def state_dir(self) -> Path:
        return state_root() / self.ifname

    def pin(self, name: str) -> str:
        return str(self.pin_dir / name)

    # ---- applied rule set -------------------------------------------------

    def load_applied(self) -> Applied | None:
        try:
            return Applied.from_json((self.state_dir / "applied.json").read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise KernelError(f"{self.state_dir}/applied.json is damaged ({e}); run `xdpguard detach`") from e

    def load_plan_bytes(self) -> bytes | None:
        try:
            return (self.state_dir / "plan.bin").read_bytes()
        except FileNotFoundError:
            return None

    def load_summary(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "summary.json").read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    def save_applied(
        self, applied: Applied, plan_bytes: bytes, rules_text: str | None, summary: dict[str, Any] | None = None
    ) -> None:
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(d / "plan.bin", plan_bytes)
        if rules_text is not None:
            _atomic_write(d / "rules.yaml", rules_text.encode())
        if summary is not None:
            _atomic_write(d / "summary.json", json.dumps(summary, sort_keys=True).encode())
        # Metadata last: it names the plan that is already on disk.
        _atomic_write(d / "applied.json", applied.to_json().encode())

    def remove_state(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---- lock -------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """One writer per interface: a second apply waits, then gives up clearly."""
        root = state_root()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f".{self.ifname}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
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
                            f"(lock {path} held for more than {timeout:.0f} s)"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)


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
