"""Confirm-or-revert: a rule set applied with --confirm goes away unless confirmed.

The operator who locks themselves out of a remote node cannot type
`confirm`; a detached watchdog process then restores the last confirmed
rule set (or detaches, if there was none).  The watchdog outlives the CLI
and later applies: only `confirm` (or a detach) stops it.  Its state is
confirm.json in the interface's state dir; a token ties it to the one
watchdog allowed to act, so a re-armed confirm retires the previous
watchdog.  This module keeps the record and the watchdog process; what the
watchdog does at the deadline is in watchdog.py, which needs the data plane.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from xdpguard.errors import XdpguardError
from xdpguard.state import DamagedState, Iface, secure_state_root

# The longest --confirm window: a revert days away is no safety net for a
# change made now, and a watchdog's deadline must stay a plain time.
MAX_WINDOW_S = 7 * 86400


def _watchdog_log(ifname: str) -> int:
    """The watchdog's log, opened for appending (mode 0600, never through a symbolic link)."""
    root = secure_state_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    path = root / f".{ifname}.watchdog.log"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except OSError as e:
        # The watchdog matters more than its log.
        print(f"xdpguard: cannot open {path} ({e.strerror}): the watchdog logs nowhere", file=sys.stderr)
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


# A watchdog acts within a poll of its deadline; a record this far past it
# with no watchdog behind it was left by one that died or never started.
LATE_S = 10.0


def watchdog_alive(pending: dict[str, Any]) -> bool:
    """The watchdog of this record is running: its pid is a watchdog holding its token."""
    pid, token = pending.get("pid"), str(pending.get("token") or "")
    if not pid or not token:
        return False
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except (OSError, ValueError):
        return False
    return b"watchdog" in cmd and token.encode() in cmd


def overdue(pending: dict[str, Any], now: float | None = None) -> bool:
    """The deadline has passed and no watchdog will act on it: the next command must."""
    now = time.time() if now is None else now
    return float(pending["deadline"]) + LATE_S < now and not watchdog_alive(pending)


def stop(pid: int | None) -> None:
    """Stop a watchdog, if the pid still is one (and is not this process)."""
    if not pid or pid == os.getpid():
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"watchdog" not in f.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass


@dataclass
class Armed:
    """A confirm window recorded before the apply it guards (see `prepare`)."""

    ifname: str
    token: str
    deadline: float
    target: int
    netns: str | None
    earlier: dict[str, Any] | None  # the pending confirm this one replaces
    window: float = 0.0  # seconds from the end of the apply


def prepare(ifname: str, window: float, netns: str | None, previous_seq: int) -> Armed:
    """Record the confirm window before the apply: if the state directory cannot
    be written, nothing has changed yet, and no unguarded rule set goes live.

    The revert target is the rule set live before the first unconfirmed
    apply: a second apply during the window does not move it.
    """
    st = Iface(ifname)
    earlier = st.load_confirm()
    target = int(earlier["target_seq"]) if earlier else previous_seq
    armed = Armed(ifname, secrets.token_hex(8), time.time() + window, target, netns, earlier, window)
    st.save_confirm(_record(armed, None))
    return armed


def _record(a: Armed, pid: int | None) -> dict[str, Any]:
    return {"token": a.token, "deadline": a.deadline, "target_seq": a.target, "netns": a.netns, "pid": pid}


def start(a: Armed) -> float:
    """Start the watchdog for a prepared window once the apply is done; returns the deadline.

    The window counts from here, the end of the apply (a first attach may
    take seconds to compile); if the record cannot be rewritten, the
    earlier deadline written by `prepare` stands.
    """
    prepared, a.deadline = a.deadline, time.time() + a.window
    if not _spawn(a):
        a.deadline = prepared
    if a.earlier:
        stop(a.earlier.get("pid"))  # its token no longer matches in any case
    return a.deadline


def abandon(a: Armed) -> None:
    """The apply failed: put back the confirm that was pending before, with its watchdog, or none."""
    st = Iface(a.ifname)
    with contextlib.suppress(XdpguardError):
        if a.earlier is None:
            st.clear_confirm()
            return
        st.save_confirm(a.earlier)
        # Its watchdog saw our token and left: start one for its own token again.
        e = a.earlier
        _spawn(Armed(a.ifname, e["token"], float(e["deadline"]), int(e["target_seq"]), e.get("netns"), None))


def _spawn(a: Armed) -> bool:
    """Start a watchdog for `a`; False when its record (pid, deadline) could not be written."""
    cmd = [sys.executable, "-m", "xdpguard"]
    if a.netns:
        cmd += ["--netns", a.netns]
    cmd += ["watchdog", "--iface", a.ifname, "--token", a.token]
    log = _watchdog_log(a.ifname)
    try:
        proc = subprocess.Popen(
            cmd,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )
    finally:
        os.close(log)
    # The pid only lets a later confirm stop the watchdog early and the new
    # deadline is later than the one on disk; the token is what it obeys, so
    # a full disk here costs nothing but those.
    try:
        Iface(a.ifname).save_confirm(_record(a, proc.pid))
    except XdpguardError:
        return False
    return True


def confirm(ifname: str) -> dict[str, Any] | None:
    st = Iface(ifname)
    with st.lock():
        try:
            pending = st.load_confirm()
        except DamagedState as e:
            # Confirming keeps what is live, which needs nothing from the
            # damaged record: drop it (its watchdog then finds it gone).
            st.clear_confirm()
            return {"target_seq": None, "damaged": str(e.path)}
        if pending is None:
            return None
        st.clear_confirm()
    stop(pending.get("pid"))
    return pending
