"""Where xdpguard keeps things: pinned objects, applied rule sets, journal, lock.

Kernel objects live under `$XDPGUARD_BPFFS/<ifname>/` (default
/sys/fs/bpf/xdpguard); what was applied under `$XDPGUARD_STATE_DIR/<ifname>/`
(default /var/lib/xdpguard):

    applied.json plan.bin rules.yaml summary.json   the live rule set
    history/<seq>/...                               the last HISTORY applied sets
    journal.json journal.plan.bin                   an apply in progress
    confirm.json                                    an apply awaiting `confirm`
    egress_attach                                   how the egress program is attached

The pins are the truth about the data plane; the state dir says which
rule file produced it.  The journal is written before the kernel is
touched and removed after the state dir records the result, so a crash at
any point leaves enough to finish or undo the apply (dataplane.recover).

What `restore` applies at boot comes from here, so the directory is
trusted only when no one but root can change it: it and every directory
above it must be owned by root and not writable by group or others (a
sticky directory such as /tmp may be an ancestor).  Files are opened
without following symbolic links, written to a temporary file, synced and
renamed into place, with mode 0600 (rule files and sets may be secret).
A snapshot's files are all written before any is renamed, so a full or
read-only file system leaves the old record whole.  A file that cannot be
read back as what xdpguard wrote is reported as damaged, with what to run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import math
import os
import shutil
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from xdpguard.errors import UsageError, XdpguardError

DEFAULT_BPFFS = "/sys/fs/bpf/xdpguard"
DEFAULT_STATE_DIR = "/var/lib/xdpguard"
HISTORY = 10
# Address-table runs kept by content (xdpguard/addrcache.py), a directory of the state root.
TABLES_DIR = ".tables"


def bpffs_root() -> Path:
    return Path(os.environ.get("XDPGUARD_BPFFS", DEFAULT_BPFFS))


def state_root() -> Path:
    return Path(os.environ.get("XDPGUARD_STATE_DIR", DEFAULT_STATE_DIR))


def lock_timeout() -> float:
    raw = os.environ.get("XDPGUARD_LOCK_TIMEOUT", "30")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise UsageError(f"XDPGUARD_LOCK_TIMEOUT: {raw!r} is not a number of seconds (0 or more)")
    return value


def fault(point: str) -> None:
    """Crash here when a test asks for it (XDPGUARD_FAULT=point): SIGKILL, no clean-up.

    Tests kill an apply at every step this way and check that the data
    plane shows the old or the new rule set, never a mix.
    """
    if os.environ.get("XDPGUARD_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


class LockTimeout(XdpguardError):
    exit_code = 1


class StateError(XdpguardError):
    """The state directory cannot be trusted, read or written (unsafe owner or
    mode, a symbolic link, a full or read-only file system)."""

    exit_code = 1


class DamagedState(StateError):
    """A file in the state directory does not hold what xdpguard wrote."""

    def __init__(self, path: Path, why: str, ifname: str | None = None, fix: str | None = None) -> None:
        if fix is None:
            fix = (
                f"run `xdpguard detach --iface {ifname}` and apply the rule file again "
                "(until then the kernel keeps enforcing what it holds)"
                if ifname
                else "remove it, or run `xdpguard detach` for its interface and apply again"
            )
        super().__init__(f"file {path} is damaged: {why}; {fix}")
        self.path = path
        self.why = why


_trusted: set[str] = set()


def secure_state_root() -> Path:
    """The state directory, once it is known that only root can change it (checked once per process)."""
    root = state_root()
    if str(root) not in _trusted:
        _check_trusted(root)
        _trusted.add(str(root))
    return root


def _check_trusted(root: Path) -> None:
    real = Path(os.path.realpath(root))
    owners = {0, os.geteuid()}
    for d in (real, *real.parents):
        try:
            st = os.stat(d)
        except FileNotFoundError:
            continue  # created later, by root, with mode 0700
        where = "" if d == real else f" (above it, {d})"
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(f"state directory {root}: {d} is not a directory")
        if st.st_uid not in owners:
            raise StateError(
                f"state directory {root}{where} is owned by uid {st.st_uid}, not root: its owner could plant "
                f"a rule set for `restore` or make xdpguard write through symbolic links; make it root's "
                f"(`chown root {d}`) or point XDPGUARD_STATE_DIR elsewhere"
            )
        others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        # A sticky ancestor (/tmp) lets no one else rename or remove what root made in it.
        if others and (d == real or not st.st_mode & stat.S_ISVTX):
            raise StateError(
                f"state directory {root}{where} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): they could plant a rule set for `restore`; "
                f"`chmod go-w {d}` or point XDPGUARD_STATE_DIR elsewhere"
            )


def _write_error(path: Path, e: OSError) -> StateError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the file system"
    elif e.errno == errno.EROFS:
        why = "the file system is read-only"
    elif e.errno == errno.ELOOP:
        why = "it is a symbolic link, which xdpguard does not follow in its state directory"
    else:
        why = e.strerror or str(e)
    return StateError(f"cannot write {path}: {why}")


def _read_bytes(path: Path) -> bytes | None:
    """A file's bytes, None when it does not exist; never through a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StateError(
                f"{path} is a symbolic link: xdpguard does not follow links in its state directory; remove it"
            ) from e
        hint = " (run as root)" if e.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0 else ""
        raise StateError(f"cannot read {path}: {e.strerror}{hint}") from e
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _private_dir(d: Path) -> None:
    """Make d (mode 0700) unless it is there; a symbolic link in its place is refused."""
    try:
        os.mkdir(d, 0o700)
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise _write_error(d, e) from e
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{d} is not a directory (a symbolic link?): remove it")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(path: Path, data: bytes) -> Path:
    """data in path.tmp (mode 0600, synced), for a later rename onto path."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _write_error(path, e) from e
    return tmp


def _atomic_write_many(d: Path, files: list[tuple[str, bytes | None]]) -> None:
    """Write every file first, then rename them into place in order (None removes one).

    A full or read-only file system fails the first phase, which leaves the
    directory as it was (the temporary files are removed).
    """
    tmps: list[tuple[Path, Path | None]] = []
    try:
        for name, data in files:
            tmps.append((d / name, None if data is None else _write_tmp(d / name, data)))
        for path, tmp in tmps:
            if tmp is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            else:
                os.replace(tmp, path)
        _fsync_dir(d)
    except OSError as e:
        raise _write_error(d, e) from e
    finally:
        for _, tmp in tmps:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_write_many(path.parent, [(path.name, data)])


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
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, found {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        for name, value in data.items():
            if name in known and not _APPLIED_TYPES[name](value):
                raise ValueError(f"{name} is {value!r}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# What each field of applied.json must hold.
_APPLIED_TYPES: dict[str, Any] = {
    "ifname": lambda v: isinstance(v, str) and bool(v),
    "ifindex": lambda v: _is_int(v) and v >= 0,
    "netns": lambda v: v is None or isinstance(v, str),
    "file": lambda v: isinstance(v, str),
    "digest": lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
    "applied_at": lambda v: (_is_int(v) or isinstance(v, float)) and v >= 0,
    "seq": lambda v: _is_int(v) and v >= 1,
    "xdp_mode": lambda v: v in ("auto", "native", "generic"),
    "source_hash": lambda v: isinstance(v, str),
    "directions": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "note": lambda v: isinstance(v, str),
}


@dataclass
class Snapshot:
    """One applied rule set as the state dir keeps it."""

    applied: Applied
    plan_bytes: bytes
    rules_text: str | None
    summary: dict[str, Any] | None

    @functools.cached_property
    def summary_json(self) -> bytes | None:
        """The summary as the state dir writes it: encoded once for the journal,
        the history and the live record (a 10,000-rule summary takes ~10 ms)."""
        return None if self.summary is None else json.dumps(self.summary, sort_keys=True).encode()


# The pins of the two links (datapath/links.py): the XDP link's pin is what
# says, cheaply and without the data path's modules, that xdpguard attached.
XDP_LINK_PIN = "link_xdp"
TCX_LINK_PIN = "link_tcx"


@dataclass
class Iface:
    ifname: str

    @property
    def pin_dir(self) -> Path:
        return bpffs_root() / self.ifname

    @property
    def linked(self) -> bool:
        """Whether the interface's XDP link is pinned (xdpguard attached it)."""
        return (self.pin_dir / XDP_LINK_PIN).exists()

    @property
    def state_dir(self) -> Path:
        return secure_state_root() / self.ifname

    @property
    def watchdog_log(self) -> Path:
        """What a --confirm watchdog prints (beside the state dir, which a revert may remove)."""
        return state_root() / f".{self.ifname}.watchdog.log"

    def pin(self, name: str) -> str:
        return str(self.pin_dir / name)

    def _damaged(self, path: Path, why: str) -> DamagedState:
        return DamagedState(path, why, self.ifname)

    def _ensure_dir(self) -> Path:
        root = secure_state_root()
        if not root.is_dir():
            try:
                os.makedirs(root, mode=0o700, exist_ok=True)
            except OSError as e:
                raise _write_error(root, e) from e
        d = root / self.ifname
        _private_dir(d)
        return d

    # ---- the live rule set ------------------------------------------------

    def load_applied(self) -> Applied | None:
        return _read_applied(self.state_dir / "applied.json", self.ifname)

    def load_plan_bytes(self) -> bytes | None:
        return _read_bytes(self.state_dir / "plan.bin")

    def load_plan(self, source: str = "") -> Any:
        """The recorded plan, decoded and checked against applied.json's digest (None: no record)."""
        path = self.state_dir / "plan.bin"
        raw = _read_bytes(path)
        if raw is None:
            return None
        applied = self.load_applied()
        return _decode_plan(path, raw, applied.digest if applied else None, source, self.ifname)

    def check_plan(self, applied: Applied) -> None:
        """plan.bin is the plan applied.json names (its digest), without decoding it."""
        path = self.state_dir / "plan.bin"
        raw = _read_bytes(path)
        if raw is None:
            raise self._damaged(path, "missing next to applied.json")
        if not _digest_is(raw, applied.digest):
            raise self._damaged(path, "its digest is not the one applied.json records")

    def load_summary(self) -> dict[str, Any] | None:
        return _read_json(self.state_dir / "summary.json", self.ifname)

    def load_rules_text(self) -> str | None:
        path = self.state_dir / "rules.yaml"
        raw = _read_bytes(path)
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError as e:
            raise self._damaged(path, f"not UTF-8 ({e})") from e

    def read_note(self, name: str) -> str | None:
        """A small text file of the interface's state (e.g. egress_attach)."""
        raw = _read_bytes(self.state_dir / name)
        return None if raw is None else raw.decode(errors="replace").strip()

    def write_note(self, name: str, text: str) -> None:
        _atomic_write(self._ensure_dir() / name, (text + "\n").encode())

    def remove_note(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            (self.state_dir / name).unlink()

    def commit(self, snap: Snapshot) -> None:
        """Record a rule set as live: into history first, then as the current one.

        Either both are written or, on a full or read-only file system, the
        live record stays as it was (the new history entry is removed) and
        StateError says why.
        """
        d = self._ensure_dir()
        _private_dir(d / "history")
        entry = d / "history" / f"{snap.applied.seq:08d}"
        try:
            _private_dir(entry)
            _write_snapshot(entry, snap)
            _write_snapshot(d, snap)
        except StateError:
            shutil.rmtree(entry, ignore_errors=True)
            raise
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
        """Applied rule sets, oldest first (at most HISTORY); a damaged one is reported."""
        h = self.state_dir / "history"
        out = []
        for p in sorted(h.iterdir()) if h.is_dir() else []:
            snap = _read_snapshot(p, self.ifname)
            if snap is not None:
                out.append(snap)
        return out

    def remove_state(self) -> bool:
        """Forget the interface; False when the directory could not be removed (read-only)."""
        d = self.state_dir
        shutil.rmtree(d, ignore_errors=True)
        return not d.exists()

    # ---- journal ----------------------------------------------------------

    def begin(
        self, kind: str, plan_bytes: bytes, meta: dict[str, Any], summary_json: bytes | None = None
    ) -> None:
        """Write the journal before the kernel is touched; a failure here changed nothing.

        `summary_json` (Snapshot.summary_json) becomes the journal's
        "summary", spliced in as it is encoded rather than encoded again.
        """
        d = self._ensure_dir()
        meta_bytes = json.dumps({"kind": kind, "started": time.time(), **meta}).encode()
        if summary_json is not None:
            meta_bytes = meta_bytes[:-1] + b', "summary": ' + summary_json + b"}"
        _atomic_write_many(d, [("journal.plan.bin", plan_bytes), ("journal.json", meta_bytes)])

    def journal(self) -> tuple[dict[str, Any], bytes] | None:
        path = self.state_dir / "journal.json"
        meta = _read_json(path, self.ifname)
        if meta is None:
            return None
        raw = _read_bytes(self.state_dir / "journal.plan.bin")
        if raw is None:
            return None
        if not isinstance(meta.get("applied"), dict):
            raise self._damaged(path, "no `applied` record in it")
        return meta, raw

    def end(self) -> None:
        # On a read-only file system the journal stays; the next command's
        # recovery finds the kernel as recorded and drops it then.
        for name in ("journal.json", "journal.plan.bin"):
            with contextlib.suppress(OSError):
                (self.state_dir / name).unlink()

    # ---- confirm-or-revert -----------------------------------------------

    def load_confirm(self) -> dict[str, Any] | None:
        path = self.state_dir / "confirm.json"
        fix = (
            f"run `xdpguard confirm --iface {self.ifname}` to keep the live rule set "
            f"(or `xdpguard rollback --iface {self.ifname}`)"
        )
        try:
            data = _read_json(path, self.ifname)
        except DamagedState as e:
            raise DamagedState(path, e.why, fix=fix) from e
        if data is None:
            return None
        if not (_is_int(data.get("target_seq")) and isinstance(data.get("token"), str)):
            raise DamagedState(path, "no revert target or token in it", fix=fix)
        return data

    def save_confirm(self, data: dict[str, Any]) -> None:
        _atomic_write(self._ensure_dir() / "confirm.json", json.dumps(data, indent=2).encode())

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
        path names another inode, or none) and locks afresh.  On a
        read-only state directory where the lock file cannot be made, the
        directory itself is locked (detach must work there).
        """
        timeout = lock_timeout() if timeout is None else timeout
        root = secure_state_root()
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
        except OSError as e:
            if e.errno != errno.EROFS:
                raise _write_error(root, e) from e
        path = root / f".{self.ifname}.lock"
        deadline = time.monotonic() + timeout
        while True:
            fd, is_file = _open_lock(path, root)
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
                    same = not is_file or os.stat(path).st_ino == os.fstat(fd).st_ino
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
            if is_file and not self.pin_dir.exists() and not (root / self.ifname).exists():
                with contextlib.suppress(OSError):
                    path.unlink()
            os.close(fd)


def _open_lock(path: Path, root: Path) -> tuple[int, bool]:
    """The lock file's fd (made if needed), or the state directory's on a read-only file system."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o600), True
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StateError(f"{path} is a symbolic link: remove it") from e
        if e.errno != errno.EROFS:
            raise _write_error(path, e) from e
    try:
        return os.open(path, os.O_RDONLY | flags), True
    except FileNotFoundError:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), False


def _read_json(path: Path, ifname: str | None = None) -> dict[str, Any] | None:
    raw = _read_bytes(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise DamagedState(path, f"not JSON ({e})", ifname) from e
    if not isinstance(data, dict):
        raise DamagedState(path, f"expected an object, found {type(data).__name__}", ifname)
    return data


def _read_applied(path: Path, ifname: str | None = None) -> Applied | None:
    data = _read_json(path, ifname)
    if data is None:
        return None
    try:
        return Applied.from_json(json.dumps(data))
    except (TypeError, ValueError) as e:
        raise DamagedState(path, str(e), ifname) from e


def _digest_is(raw: bytes, digest: str) -> bool:
    """Whether recorded plan bytes are the plan the recorded digest names."""
    # lazy: every command (`--help` too) imports this module; only those that decode a plan need the compiler
    from xdpguard.rules.compile import plan_digest

    return plan_digest(raw) == digest


def _decode_plan(path: Path, raw: bytes, digest: str | None, source: str, ifname: str | None) -> Any:
    from xdpguard.rules.compile import plan_from_bytes  # lazy: as in _digest_is

    if digest is not None and not _digest_is(raw, digest):
        raise DamagedState(path, "its digest is not the one applied.json records", ifname)
    try:
        return plan_from_bytes(raw, source)
    except Exception as e:  # any decoding failure means the bytes are not a plan we wrote
        raise DamagedState(path, f"not a compiled plan ({type(e).__name__}: {e})", ifname) from e


def _write_snapshot(d: Path, snap: Snapshot) -> None:
    # Metadata last: it names a plan that is already on disk.  A snapshot
    # without rule text or summary removes the stale ones.
    summary = snap.summary_json
    _atomic_write_many(
        d,
        [
            ("plan.bin", snap.plan_bytes),
            ("rules.yaml", None if snap.rules_text is None else snap.rules_text.encode()),
            ("summary.json", summary),
            ("applied.json", snap.applied.to_json().encode()),
        ],
    )


def _read_snapshot(d: Path, ifname: str | None = None) -> Snapshot | None:
    applied = _read_applied(d / "applied.json", ifname)
    if applied is None:
        return None
    plan = _read_bytes(d / "plan.bin")
    if plan is None:
        raise DamagedState(d / "plan.bin", "missing next to applied.json", ifname)
    if not _digest_is(plan, applied.digest):
        raise DamagedState(d / "plan.bin", "its digest is not the one applied.json records", ifname)
    raw = _read_bytes(d / "rules.yaml")
    text = raw.decode(errors="replace") if raw is not None else None
    return Snapshot(applied, plan, text, _read_json(d / "summary.json", ifname))


def known_ifaces() -> list[str]:
    """Interfaces with pins or state (dot-named entries, such as the plan cache, are not)."""
    names: set[str] = set()
    for root in (bpffs_root(), secure_state_root()):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(names)


def prune_cache(base: Path, keep: int, spare: frozenset[str] = frozenset()) -> None:
    """Keep the `keep` entries of a cache directory used last (by mtime), and
    remove what a write that died left behind: entries named with a leading
    '.', once an hour old (except those named in `spare`)."""
    now = time.time()
    entries = []
    for p in base.iterdir():
        with contextlib.suppress(OSError):
            mtime = p.stat().st_mtime
            if not p.name.startswith("."):
                entries.append((mtime, p))
            elif now - mtime > 3600 and p.name not in spare:
                _remove_entry(p)
    for _, old in sorted(entries)[:-keep]:
        _remove_entry(old)


def _remove_entry(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()
