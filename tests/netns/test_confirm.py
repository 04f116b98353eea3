"""apply --confirm: unless `confirm` comes in time, the previous rule set returns by itself.

The watchdog is a detached process: these tests let the CLI exit and
check the data plane (program verdicts) after the deadline.
"""

from __future__ import annotations

import json
import time

from tests.netns.abtest import WANT, apply, verdicts, xg


def status(lab) -> dict:
    return json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]


def wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_unconfirmed_apply_reverts(lab, files):
    assert apply(lab, files["A"]).returncode == 0
    r = apply(lab, files["B"], "--confirm", "2s")
    assert r.returncode == 0 and "confirm within 2 s" in r.stdout, r.stdout + r.stderr
    assert verdicts(lab) == WANT["B"]
    assert status(lab)["pending_confirm"]["reverts_to"] == 1
    assert wait_for(lambda: verdicts(lab) == WANT["A"], 8), "the watchdog did not restore rule set A"
    st = status(lab)
    assert "pending_confirm" not in st and st["history"][-1]["note"] == "confirm timeout"
    # A confirm that comes too late must not look like success to automation.
    r = xg("--netns", lab.b.ns, "confirm", "--iface", lab.b.ifname)
    assert r.returncode == 1 and "too late" in r.stderr, r.stdout + r.stderr


def test_confirmed_apply_stays(lab, files):
    assert apply(lab, files["A"]).returncode == 0
    assert apply(lab, files["B"], "--confirm", "2s").returncode == 0
    r = xg("--netns", lab.b.ns, "confirm", "--iface", lab.b.ifname)
    assert r.returncode == 0 and "confirmed" in r.stdout
    time.sleep(3.5)
    assert verdicts(lab) == WANT["B"]
    assert "pending_confirm" not in status(lab)
    r = xg("--netns", lab.b.ns, "confirm", "--iface", lab.b.ifname)
    assert "nothing is waiting" in r.stdout


def test_watchdog_survives_a_second_apply(lab, files, tmp_path):
    assert apply(lab, files["A"]).returncode == 0
    assert apply(lab, files["B"], "--confirm", "3s").returncode == 0
    # A further change during the window does not cancel the revert, and the
    # revert goes back to the last confirmed rule set, not to B.
    c = tmp_path / "c.yaml"
    c.write_text(open(files["B"]).read().replace("junk2", "junk3"))
    assert apply(lab, str(c)).returncode == 0
    assert wait_for(lambda: verdicts(lab) == WANT["A"], 10)
    assert status(lab)["digest"] == json.loads(xg("check", files["A"], "--json").stdout)["digest"]


def test_unconfirmed_first_attach_detaches(lab, files):
    r = apply(lab, files["A"], "--confirm", "1s")
    assert r.returncode == 0
    assert verdicts(lab) == WANT["A"]
    assert wait_for(lambda: verdicts(lab) is None, 8), "still attached after the confirm window"
    # The watchdog detaches the links first (traffic passes from then on)
    # and unpins the maps after them: give it the moment that takes.
    assert wait_for(lambda: not any(lab.bpffs.rglob("*")), 5), sorted(map(str, lab.bpffs.rglob("*")))


def test_a_dead_watchdog_is_no_safety_net_the_next_command_reverts(lab, files):
    """The watchdog killed (or never started: the CLI died first): status says
    nothing will revert the window, and the first command after the deadline
    does what the watchdog should have (status itself, here)."""
    import os
    import signal

    from xdpguard.datapath.confirm import LATE_S

    assert apply(lab, files["A"]).returncode == 0
    assert apply(lab, files["B"], "--confirm", "2s").returncode == 0
    pid = json.loads((lab.state_dir / lab.b.ifname / "confirm.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(
        lambda: (
            not os.path.exists(f"/proc/{pid}/cmdline") or b"" == open(f"/proc/{pid}/cmdline", "rb").read()
        ),
        5,
    )
    st = status(lab)
    assert st["pending_confirm"]["watchdog_running"] is False, st
    text = xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname).stdout
    assert "no watchdog is running for it" in text, text
    assert verdicts(lab) == WANT["B"]
    time.sleep(2 + LATE_S + 1)
    assert verdicts(lab) == WANT["B"]  # nothing acted by itself
    st = status(lab)
    assert any(
        "no watchdog was left to act: not confirmed in time: restored version 1" in m for m in st["recovered"]
    ), st
    assert "pending_confirm" not in st and st["history"][-1]["note"] == "confirm timeout", st
    assert verdicts(lab) == WANT["A"]


def test_an_apply_after_a_dead_watchdogs_deadline_replaces_the_unconfirmed_set(lab, files):
    import os
    import signal

    from xdpguard.datapath.confirm import LATE_S

    assert apply(lab, files["A"]).returncode == 0
    assert apply(lab, files["B"], "--confirm", "1s").returncode == 0
    pid = json.loads((lab.state_dir / lab.b.ifname / "confirm.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(1 + LATE_S + 1)
    r = apply(lab, files["A"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ran out with no watchdog left to revert it; this apply replaces that rule set" in r.stdout, (
        r.stdout
    )
    assert verdicts(lab) == WANT["A"]
    st = status(lab)
    assert "pending_confirm" not in st and "recovered" not in st, st
