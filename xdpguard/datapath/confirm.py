"""Confirm-or-revert: a rule set applied with --confirm goes away unless confirmed.

The operator who locks themselves out of a remote node cannot type
`confirm`; a detached watchdog process then restores the last confirmed
rule set (or detaches, if there was none).  The watchdog outlives the CLI
and later applies: only `confirm` stops it.  Its state is confirm.json in
the interface's state dir; a token ties it to the one watchdog allowed to
act, so a re-armed confirm retires the previous watchdog.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from xdpguard.state import Iface, state_root

POLL = 0.25


def _watchdog_log(ifname: str) -> str:
    state_root().mkdir(parents=True, exist_ok=True)
    return str(Iface(ifname).watchdog_log)


def _stop(pid: int | None) -> None:
    """Stop an earlier watchdog, if the pid still is one (and is not this process)."""
    if not pid or pid == os.getpid():
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"watchdog" not in f.read():
                return
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass


def arm(ifname: str, window: float, netns: str | None, previous_seq: int) -> tuple[float, int]:
    """Start (or restart) the countdown; returns the deadline (Unix time) and
    the version that comes back then (0: xdpguard is detached instead).

    The revert target is the rule set live before the first unconfirmed
    apply: a second apply during the window does not move it.
    """
    st = Iface(ifname)
    pending = st.load_confirm()
    target = pending["target_seq"] if pending else previous_seq
    token = secrets.token_hex(8)
    deadline = time.time() + window
    st.save_confirm({"token": token, "deadline": deadline, "target_seq": target, "netns": netns, "pid": None})
    cmd = [sys.executable, "-m", "xdpguard"]
    if netns:
        cmd += ["--netns", netns]
    cmd += ["watchdog", "--iface", ifname, "--token", token]
    with open(_watchdog_log(ifname), "ab") as log:
        proc = subprocess.Popen(
            cmd,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )
    st.save_confirm(
        {"token": token, "deadline": deadline, "target_seq": target, "netns": netns, "pid": proc.pid}
    )
    if pending:
        _stop(pending.get("pid"))
    return deadline, int(target)


def confirm(ifname: str) -> dict[str, Any] | None:
    st = Iface(ifname)
    with st.lock():
        pending = st.load_confirm()
        if pending is None:
            return None
        st.clear_confirm()
    _stop(pending.get("pid"))
    return pending


def pending(ifname: str) -> dict[str, Any] | None:
    return Iface(ifname).load_confirm()


def run_watchdog(ifname: str, token: str) -> None:
    """Sleep until the deadline; revert unless confirmed (or re-armed) meanwhile."""
    from xdpguard.datapath.dataplane import Dataplane

    st = Iface(ifname)
    while True:
        p = st.load_confirm()
        if p is None or p.get("token") != token:
            return
        left = float(p["deadline"]) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, POLL))
    dp = Dataplane(ifname, 0, p.get("netns"))
    with st.lock(timeout=600):
        p = st.load_confirm()
        if p is None or p.get("token") != token:
            return  # confirmed while we waited for the lock
        target = int(p["target_seq"])
        if target == 0:
            removed = dp.detach_locked()
            msg = f"not confirmed in time: detached ({len(removed)} pinned objects removed)"
        else:
            res, snap = dp.rollback_locked(target, note="confirm timeout")
            msg = f"not confirmed in time: restored version {snap.applied.seq} ({snap.applied.file})"
        st.clear_confirm()
    print(time.strftime("%Y-%m-%dT%H:%M:%S"), ifname, msg, flush=True)
