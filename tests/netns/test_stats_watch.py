"""stats --watch: per-rule rates that keep refreshing until interrupted (plain snapshots in a pipe)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.netns.traffic import new_marker, send_frames, udp_frame


def test_watch_shows_rates(lab, tmp_path: Path):
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "version: 1\ningress:\n  default: allow\n  rules:\n"
        "    - {name: counted, match: {proto: udp}, action: allow}\n"
    )
    env = os.environ | {"COLUMNS": "160"}
    base = [sys.executable, "-m", "xdpguard", "--netns", lab.b.ns]
    subprocess.run(
        [*base, "apply", str(rules), "--iface", lab.b.ifname], check=True, env=env, capture_output=True
    )
    try:
        p = subprocess.Popen(
            [*base, "stats", "--iface", lab.b.ifname, "--watch"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        marker = new_marker()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:  # ~100 packets a second while it watches
            send_frames(lab.a.ns, lab.a.ifname, [udp_frame(lab.a, lab.b, marker)] * 10)
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0, err
        assert "pkt/s" in out and "counted" in out
        # Not a terminal: a plain snapshot a second, the rate the last column.
        rates = [float(line.split()[-1].replace(",", "")) for line in out.splitlines() if " counted " in line]
        assert len(rates) >= 2 and "│" not in out
        assert rates and max(rates) > 20, out[-2000:]
    finally:
        subprocess.run([*base, "detach", "--iface", lab.b.ifname], env=env, capture_output=True)
