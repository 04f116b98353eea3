"""The confirm watchdog: wait for a --confirm deadline, then revert unless confirmed.

`xdpguard watchdog` (started by confirm.py's `start`, never by hand) runs
this in its own session.  It polls the interface's confirm record and acts
only while the record holds its token: a `confirm`, a re-armed confirm or a
detach makes it leave without touching anything.
"""

from __future__ import annotations

import time

from xdpguard.datapath.dataplane import Dataplane
from xdpguard.state import DamagedState, Iface

POLL = 0.25


def run_watchdog(ifname: str, token: str) -> None:
    """Sleep until the deadline; revert unless confirmed (or re-armed) meanwhile."""
    st = Iface(ifname)
    while True:
        try:
            p = st.load_confirm()
        except DamagedState as e:
            # Without the record there is no target to revert to: say so where `status` shows it.
            print(time.strftime("%Y-%m-%dT%H:%M:%S"), ifname, f"watchdog stopped: {e}", flush=True)
            return
        if p is None or p.get("token") != token:
            return
        left = float(p["deadline"]) - time.time()
        if left <= 0:
            break
        time.sleep(min(left, POLL))
    dp = Dataplane(ifname, None, p.get("netns"))
    with st.lock(timeout=600):
        p = st.load_confirm()
        if p is None or p.get("token") != token:
            return  # confirmed while we waited for the lock
        msg = dp.revert_unconfirmed_locked(p)
    print(time.strftime("%Y-%m-%dT%H:%M:%S"), ifname, msg, flush=True)
