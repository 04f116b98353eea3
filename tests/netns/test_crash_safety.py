"""Transactional apply: a kill -9 at any step leaves old or new, never a mix.

Two rule sets that number their rules differently are applied in turn;
an apply is killed (XDPGUARD_FAULT, honoured only to let tests crash it)
at each step.  Right after the kill, the verdicts of both programs on a
set of probes equal those of one rule set or the other, whole.  The next
`status` repairs what the kill left, says so, and all four map halves
then hold the recorded rule set.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.netns.abtest import WANT, apply, halves_level, verdicts, xg

UPDATE_POINTS = [
    "journal", "replaced", "inactive-ingress", "inactive-egress", "flipped",
    "levelled-ingress", "levelled-egress", "committed",
]  # fmt: skip
AFTER_FLIP = {"flipped", "levelled-ingress", "levelled-egress", "committed"}
ATTACH_POINTS = [
    "journal",
    "attach-loaded",
    "attach-maps",
    "attach-linked-egress",
    "attach-linked-ingress",
    "committed",
]
ATTACHED_AFTER = {"attach-linked-ingress", "committed"}


def test_kill_at_every_update_step(lab, files):
    assert apply(lab, files["A"]).returncode == 0
    cur = "A"
    for point in UPDATE_POINTS:
        new = "B" if cur == "A" else "A"
        extra = ("--replace-program",) if point == "replaced" else ()
        r = apply(lab, files[new], *extra, env={"XDPGUARD_FAULT": point})
        assert r.returncode == -9, f"{point}: the fault point was not reached\n{r.stdout}{r.stderr}"
        live = verdicts(lab)
        want_now = new if point in AFTER_FLIP else cur
        assert live == WANT[want_now], f"killed at {point}: verdicts are not rule set {want_now} whole"
        st = json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]
        assert st["recovered"], f"{point}: status did not report a repair"
        assert st["digest"] == json.loads(xg("check", files[want_now], "--json").stdout)["digest"]
        assert st["consistent"] is True
        assert halves_level(lab, st["digest"]), f"{point}: halves not level after repair"
        assert verdicts(lab) == WANT[want_now]
        # The interrupted apply, run again, completes.
        assert apply(lab, files[new]).returncode == 0
        assert verdicts(lab) == WANT[new]
        cur = new


def test_kill_at_every_attach_step(lab, files):
    for point in ATTACH_POINTS:
        r = apply(lab, files["A"], env={"XDPGUARD_FAULT": point})
        assert r.returncode == -9, f"{point}: the fault point was not reached\n{r.stdout}{r.stderr}"
        live = verdicts(lab)
        if point in ATTACHED_AFTER:
            assert live == WANT["A"], point
        else:
            assert live is None, f"killed at {point}: half-attached"
            link = subprocess.run(
                ["ip", "-n", lab.b.ns, "link", "show", lab.b.ifname], capture_output=True, text=True
            )
            assert "xdp" not in link.stdout
        r = apply(lab, files["A"])
        assert r.returncode == 0, r.stderr
        assert verdicts(lab) == WANT["A"]
        st = json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]
        assert st["consistent"] is True and halves_level(lab, st["digest"])
        assert xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname).returncode == 0
        assert not any(lab.bpffs.rglob("*"))


def test_concurrent_apply_waits_then_gives_up(lab, files):
    import fcntl

    assert apply(lab, files["A"]).returncode == 0
    lock = Path(os.environ["XDPGUARD_STATE_DIR"]) / f".{lab.b.ifname}.lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = apply(lab, files["B"], env={"XDPGUARD_LOCK_TIMEOUT": "1"})
        assert r.returncode == 1
        assert "another xdpguard command is changing" in r.stderr and "Traceback" not in r.stderr
        assert verdicts(lab) == WANT["A"]
    finally:
        os.close(fd)
    assert apply(lab, files["B"]).returncode == 0
    assert verdicts(lab) == WANT["B"]


def test_rollback_and_history(lab, files):
    assert apply(lab, files["A"]).returncode == 0
    assert apply(lab, files["B"]).returncode == 0
    r = xg("--netns", lab.b.ns, "rollback", "--iface", lab.b.ifname)
    assert r.returncode == 0 and "rolled back to version 1" in r.stdout, r.stdout + r.stderr
    assert verdicts(lab) == WANT["A"]
    st = json.loads(xg("--netns", lab.b.ns, "status", "--iface", lab.b.ifname, "--json").stdout)[0]
    assert [h["version"] for h in st["history"]] == [1, 2, 3]
    assert st["history"][-1]["note"] == "rollback to version 1"
    r = xg("--netns", lab.b.ns, "rollback", "--iface", lab.b.ifname, "--to", "2")
    assert r.returncode == 0 and verdicts(lab) == WANT["B"]
    r = xg("--netns", lab.b.ns, "rollback", "--iface", lab.b.ifname, "--to", "99")
    assert r.returncode == 2 and "not in the history" in r.stderr
