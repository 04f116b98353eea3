"""The Ansible role rolls a rule set out in batches, and stops at a batch that locks itself out.

Each "host" of the fleet is a network namespace with a veth pair: xdpguard
guards the host end (xb0), the other end (xa0, in a namespace of its own)
is the management network the health check comes from, and a listening
socket on port 22 stands in for sshd.  Every host has its own bpffs and
state directories, handed to the role through the inventory
(xdpguard_environment), and `ansible_connection=local` runs the tasks here.
The playbook is deploy/ansible/rollout.yml, run with .venv's
ansible-playbook, as an operator would.

Batches are two hosts.  The second rollout narrows the management
allowlist (a set file) so that edge2 (second batch) and edge4 (third) can
no longer be reached on port 22: edge2's health check fails, so its whole
batch (edge3 too, whose own check passes) is never confirmed and the
watchdogs restore the previous rule set, and the third batch is never
touched.  A third rollout with an invalid file stops at the first `check`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns.clihelp import describe, run_cli
from xdpguard import net

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "deploy" / "ansible" / "rollout.yml"
BPFFS_ROOT = Path("/sys/fs/bpf")
N_HOSTS, BATCH = 5, 2
# From the watchdog's arming to the start of `confirm`, Ansible takes 0.7-2.4 s
# here (apply's exit, health check, batch gate, skipped tasks), and confirm's
# own start-up adds ~0.3 s; with other test suites loading the machine, a
# 4 s window ran out once. 6 s costs the revert wait 2 s more.
WINDOW = "6s"
SSH_PORT = 22

RULES = """\
version: 1
sets:
  mgmt: {file: lists/mgmt.netset}
ingress:
  default: drop
  rules:
    - {name: replies, match: {state: established}, action: allow}
    - {name: ssh-mgmt, match: {src: "@mgmt", proto: tcp, dport: 22}, action: allow}
    - {name: web, match: {proto: tcp, dport: [80, 443]}, action: allow}
"""
# Rollout 2 adds a rule and narrows the management networks: host i is
# managed from 10.210.i.0/24, so edge2 and edge4 are locked out of port 22.
RULES_V2 = RULES + "    - {name: dns, match: {proto: udp, dport: 53}, action: allow}\n"
MGMT_V1 = "# management networks\n10.210.0.0/16\n"
MGMT_V2 = "# management networks\n10.210.0.0/23\n10.210.3.0/24\n"

# conftest.py's patterns (xgt<pid>-<n>a/b, xdpguard-test-<pid>-<n>), so its
# session sweep removes what a killed run left; numbers far from the others'.
_counter = itertools.count(200_000)
INSTALL_HINT = "ansible-core is in the dev extras: `make setup` installs it"


def ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


@dataclass
class Host:
    name: str
    mgmt_ns: str
    ns: str
    ip: str
    bpffs: Path
    state_dir: Path
    rules_dir: Path
    listener: socket.socket

    @property
    def env(self) -> dict[str, str]:
        return {"XDPGUARD_BPFFS": str(self.bpffs), "XDPGUARD_STATE_DIR": str(self.state_dir)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, netns=self.ns, env=os.environ | self.env)

    def status(self) -> dict[str, Any]:
        r = self.cli("status", "--iface", "xb0", "--json")
        assert r.returncode == 0, describe(r)
        row: dict[str, Any] = json.loads(r.stdout)[0]
        return row

    def ssh_reachable(self) -> bool:
        """A new TCP connection from the management side to port 22, as the health check makes."""
        with net.in_netns(self.mgmt_ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.settimeout(1.0)
            try:
                s.connect((self.ip, SSH_PORT))
            except OSError:
                return False
            return True


def _kill_watchdogs(state_dir: Path) -> None:
    """Stop watchdogs a failed test left armed (only ours: their pid and cmdline say so)."""
    for f in state_dir.glob("*/confirm.json"):
        try:
            pid = int(json.loads(f.read_text()).get("pid") or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as c:
                if b"watchdog" in c.read():
                    os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass


@pytest.fixture
def fleet(_sweep_stale: None, tmp_path: Path) -> Iterator[list[Host]]:
    if ansible_playbook() is None:
        pytest.skip(f"ansible-playbook not found next to {sys.executable} or on PATH ({INSTALL_HINT})")
    pid = os.getpid()
    hosts: list[Host] = []
    try:
        for i in range(N_HOSTS):
            n = next(_counter)
            mgmt_ns, ns = f"xgt{pid}-{n}a", f"xgt{pid}-{n}b"
            mgmt_ip, ip = f"10.210.{i}.1", f"10.210.{i}.2"
            net.create_netns(mgmt_ns)
            net.create_netns(ns)
            net.create_veth_pair("xa0", mgmt_ns, "xb0", ns, [f"{mgmt_ip}/24"], [f"{ip}/24"])
            net.neigh_add(mgmt_ns, "xa0", ip, net.get_mac(ns, "xb0"))
            net.neigh_add(ns, "xb0", mgmt_ip, net.get_mac(mgmt_ns, "xa0"))
            with net.in_netns(ns):
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # The kernel completes handshakes for a listening socket: no accept() needed.
            listener.bind((ip, SSH_PORT))
            listener.listen(128)
            root = tmp_path / f"edge{i}"
            hosts.append(
                Host(
                    name=f"edge{i}",
                    mgmt_ns=mgmt_ns,
                    ns=ns,
                    ip=ip,
                    bpffs=BPFFS_ROOT / f"xdpguard-test-{pid}-{n}",
                    state_dir=root / "state",
                    rules_dir=root / "etc",
                    listener=listener,
                )
            )
        yield hosts
    finally:
        left: list[str] = []
        for h in hosts:
            _kill_watchdogs(h.state_dir)
            h.listener.close()
            if h.bpffs.exists():
                run_cli("detach", "--all", env=os.environ | h.env)
            net.delete_netns(h.mgmt_ns)
            net.delete_netns(h.ns)
            left += _remove_pins(h.bpffs)
        assert not left, f"still pinned after `xdpguard detach --all`: {left}"


def _remove_pins(d: Path) -> list[str]:
    """Unpin whatever is left under d and remove it; return what was there."""
    if not d.exists():
        return []
    left = []
    for root, dirs, files in os.walk(d, topdown=False):
        for name in files:
            left.append(os.path.join(root, name))
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    d.rmdir()
    return left


def write_inventory(path: Path, hosts: list[Host]) -> Path:
    xdpguard = str(Path(sys.executable).parent / "xdpguard")
    inv: dict[str, Any] = {
        "edge": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ansible_become": False,
                "xdpguard_bin": xdpguard,
                "xdpguard_iface": "xb0",
                "xdpguard_set_files": ["lists/mgmt.netset"],
                "xdpguard_confirm_window": WINDOW,
                "xdpguard_health_check_attempts": 1,
                "xdpguard_health_check_timeout": 1,
            },
            "hosts": {
                h.name: {
                    "xdpguard_netns": h.ns,
                    "xdpguard_rules_dir": str(h.rules_dir),
                    "xdpguard_environment": h.env,
                    # The default check (a TCP connect to port 22), from the
                    # host's management network instead of the controller.
                    "xdpguard_health_check_cmd": (
                        f"nsenter --net=/var/run/netns/{h.mgmt_ns} "
                        f"timeout 1 bash -c '</dev/tcp/{h.ip}/{SSH_PORT}'"
                    ),
                }
                for h in hosts
            },
        }
    }
    path.write_text(json.dumps(inv, indent=2))
    return path


def write_rules(directory: Path, rules: str, mgmt: str) -> Path:
    (directory / "lists").mkdir(parents=True, exist_ok=True)
    (directory / "lists" / "mgmt.netset").write_text(mgmt)
    (directory / "rules.yaml").write_text(rules)
    return directory / "rules.yaml"


def digest(rules: Path) -> str:
    r = run_cli("check", rules, "--json")
    assert r.returncode == 0, describe(r)
    d: str = json.loads(r.stdout)["digest"]
    return d


def rollout(
    tmp_path: Path, inventory: Path, rules: Path, batch: int | list[int] = BATCH
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = os.environ | {
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_FORKS": str(N_HOSTS),
    }
    env.pop("ANSIBLE_CONFIG", None)
    extra = json.dumps({"xdpguard_rules_src": str(rules), "xdpguard_batch_size": batch})
    cmd = [str(ansible_playbook()), "-i", str(inventory), str(PLAYBOOK), "-e", extra]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    print(r.stdout, r.stderr, sep="\n")  # pytest shows it when the test fails
    return r, time.monotonic() - t0


def wait_for(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.25)
    return bool(pred())


def test_rollout_in_batches_stops_at_a_batch_that_loses_its_management_path(
    fleet: list[Host], tmp_path: Path
) -> None:
    inventory = write_inventory(tmp_path / "inventory.json", fleet)
    v1 = write_rules(tmp_path / "v1", RULES, MGMT_V1)
    v2 = write_rules(tmp_path / "v2", RULES_V2, MGMT_V2)
    d1, d2 = digest(v1), digest(v2)
    assert d1 != d2
    assert all(h.ssh_reachable() for h in fleet)

    # Rollout 1: every host gets the rule set, confirmed, and stays reachable.
    r, took = rollout(tmp_path, inventory, v1)
    print(f"rollout 1 (first attach on {N_HOSTS} hosts): {took:.1f} s")
    assert r.returncode == 0, describe(r)
    versions = {}
    for h in fleet:
        st = h.status()
        assert st["attached"] and st["consistent"], st
        assert st["digest"] == d1, (h.name, st)
        assert "pending_confirm" not in st, (h.name, st)
        assert (h.rules_dir / "rules.yaml").read_text() == RULES
        assert (h.rules_dir / "lists" / "mgmt.netset").read_text() == MGMT_V1
        versions[h.name] = st["version"]
    # The same files again, in growing batches (a canary, then the rest):
    # nothing changes, and nothing reverts once the window has passed.
    r, took = rollout(tmp_path, inventory, v1, batch=[1, N_HOSTS - 1])
    print(f"rollout 1 again (no changes, batches of 1 and {N_HOSTS - 1}): {took:.1f} s")
    assert r.returncode == 0, describe(r)
    recap = re.findall(r"^(edge\d+)\s+: ok=\d+\s+changed=(\d+)", r.stdout, re.M)
    assert sorted(recap) == [(h.name, "0") for h in fleet], recap
    assert re.search(r"PLAY \[.*\n+TASK .*\n+ok: \[edge0\]\n+TASK", r.stdout), "edge0 is not alone in batch 1"
    time.sleep(float(WINDOW.rstrip("s")) + 1)
    for h in fleet:
        st = h.status()
        assert st["digest"] == d1 and st["version"] == versions[h.name], (h.name, st)
        assert h.ssh_reachable(), h.name

    # Rollout 2 locks edge2 out: batch 2 (edge2, edge3) fails as a whole, and
    # edge4, also locked out by it, is never touched.
    r, took = rollout(tmp_path, inventory, v2)
    print(f"rollout 2 (stops at batch 2, waits for its revert): {took:.1f} s")
    assert r.returncode != 0, describe(r)
    out = r.stdout + r.stderr
    assert 'fatal: [edge2]: FAILED! => {"changed": false, "msg": "the health check failed (exit 124)' in out
    # edge3 passed its own check: it is not confirmed for its batch's sake.
    sibling = 'fatal: [edge3]: FAILED! => {"changed": false, "msg": "the health check failed on edge2, '
    assert sibling + "in the same batch" in out
    first, failing, untouched = fleet[:BATCH], fleet[BATCH : 2 * BATCH], fleet[2 * BATCH :]

    for h in first:
        st = h.status()
        assert st["digest"] == d2 and "pending_confirm" not in st, (h.name, st)
        assert (h.rules_dir / "lists" / "mgmt.netset").read_text() == MGMT_V2
        assert h.ssh_reachable(), h.name

    for h in failing:
        # The role waited for the revert; do not rely on it.
        assert wait_for(lambda h=h: "pending_confirm" not in h.status(), 10), h.name
        st = h.status()
        assert st["digest"] == d1, (h.name, st)
        assert st["history"][-1]["note"] == "confirm timeout", (h.name, st["history"])
        assert st["history"][-2]["digest"] == d2, (h.name, st["history"])
        # Let back in, and the host's rule file is still the confirmed one.
        assert h.ssh_reachable(), h.name
        assert (h.rules_dir / "lists" / "mgmt.netset").read_text() == MGMT_V1
        assert (h.rules_dir / "incoming" / "lists" / "mgmt.netset").read_text() == MGMT_V2

    for h in untouched:
        st = h.status()
        assert st["digest"] == d1 and st["version"] == versions[h.name], (h.name, st)
        assert "pending_confirm" not in st
        assert h.ssh_reachable(), h.name  # the new rule set would lock it out
        assert (h.rules_dir / "incoming" / "lists" / "mgmt.netset").read_text() == MGMT_V1, (
            "staged on an untouched host"
        )
        assert (h.rules_dir / "incoming" / "rules.yaml").read_text() == RULES

    # Rollout 3: an invalid rule file fails `check` on the first batch; nothing changes anywhere.
    bad = write_rules(tmp_path / "bad", RULES_V2.replace("dport: 53", "dport: 70000"), MGMT_V1)
    before = {h.name: h.status() for h in fleet}
    r, took = rollout(tmp_path, inventory, bad)
    print(f"rollout 3 (invalid file, stops at the first check): {took:.1f} s")
    assert r.returncode != 0, describe(r)
    assert "70000" in r.stdout + r.stderr, describe(r)
    for h in fleet:
        st = h.status()
        assert (st["digest"], st["version"]) == (before[h.name]["digest"], before[h.name]["version"]), h.name
        assert "pending_confirm" not in st
    assert "Apply the rule set" not in r.stdout, "apply ran after a failed check"
