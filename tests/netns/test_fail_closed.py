"""xdpguard never reports protection the kernel does not give.

The pins and the state directory say what xdpguard did; these tests change
what the kernel holds behind their back, as a driver reload, a container
re-plumbed or an unlucky operator would, and check that every command that
changes or reports protection notices:

- the interface deleted and created again under the same name: its links
  are severed and the new interface has no program;
- the interface renamed and a new one given its name: the links follow the
  renamed device;
- a pinned map replaced by another of the same shape: the programs keep
  reading the old one.

`apply`, `rollback` and `restore` attach the programs again (or re-pin what
the programs use) and say so; `status` says the interface is not protected
and exits 1, `stats` refuses, `plan` says what apply would do.  Frames
crossing the lab's veth pair show what really holds.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.netns.clihelp import (
    AS_A,
    AS_B,
    RULES_A,
    RULES_B,
    UNFILTERED,
    Guard,
    describe,
    expect_ok,
    ip_link_show,
    lab_env,
    run_cli,
    seen,
    write_rules,
)
from tests.netns.traffic import Lab, Side
from xdpguard import net
from xdpguard.datapath import bpf


def recreate(lab: Lab) -> None:
    """Delete the veth pair and make it again: same names, addresses and MACs, new ifindexes."""
    net.delete_link(lab.b.ifname, lab.b.ns)
    net.create_veth_pair(
        lab.a.ifname, lab.a.ns, lab.b.ifname, lab.b.ns, [f"{lab.a.ip4}/24"], [f"{lab.b.ip4}/24"]
    )
    _wire(lab.a, lab.b, lab.a.ifname, lab.b.ifname)


def _wire(a: Side, b: Side, a_if: str, b_if: str) -> None:
    net.set_mac(a.ns, a_if, a.mac)
    net.set_mac(b.ns, b_if, b.mac)
    net.neigh_add(a.ns, a_if, b.ip4, b.mac)
    net.neigh_add(b.ns, b_if, a.ip4, a.mac)
    net.set_gro(b.ns, b_if, True)


def status(g: Guard) -> tuple[int, dict]:
    r = g.cli("status", "--iface", g.ifname, "--json")
    assert "Traceback" not in r.stderr, describe(r)
    [row] = json.loads(r.stdout)
    return r.returncode, row


def test_recreated_interface_is_attached_again(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    assert seen(lab) == AS_A
    recreate(lab)
    assert seen(lab) == UNFILTERED  # the new interface has no program: all passes

    code, row = status(guard)
    assert code == 1 and row["protected"] is False, row
    assert "deleted and created again" in row["problem"], row

    r = guard.cli("stats", "--iface", lab.b.ifname)
    assert r.returncode == 1 and "not protected" in r.stderr, describe(r)
    r = expect_ok(guard.cli("plan", write_rules(tmp_path, RULES_B, "b.yaml"), "--iface", lab.b.ifname))
    assert "NOT PROTECTED" in r.stdout and "apply would attach" in r.stdout, describe(r)

    r = guard.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
    assert "attached the programs to xb0" in r.stdout, describe(r)
    assert "updated to" in r.stdout, describe(r)
    assert seen(lab) == AS_B
    assert "xdp" in ip_link_show(lab.b.ns, lab.b.ifname)
    code, row = status(guard)
    assert (
        code == 0
        and row["protected"] is True
        and row["xdp"]["ifindex"] == net.ifindex(lab.b.ifname, lab.b.ns)
    ), row
    # Egress came back too: its counters move.
    before = guard.stats()["egress"]["default"]["packets"]
    with net.in_netns(lab.b.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.sendto(b"out", (lab.a.ip4, 9))
    assert guard.stats()["egress"]["default"]["packets"] > before


def test_recreated_interface_same_rules_is_not_no_changes(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, RULES_A, "a.yaml")
    guard.apply(rules)
    recreate(lab)
    r = guard.apply(rules)
    assert "attached the programs to xb0" in r.stdout, describe(r)
    assert seen(lab) == AS_A


def test_renamed_interface_is_never_taken_for_its_old_name(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    # xb0 becomes xb9; a new veth pair (xa1 in A) brings a new xb0 into B.
    subprocess.run(["ip", "-n", lab.b.ns, "link", "set", "xb0", "down"], check=True)
    subprocess.run(["ip", "-n", lab.b.ns, "link", "set", "xb0", "name", "xb9"], check=True)
    subprocess.run(["ip", "-n", lab.b.ns, "link", "set", "xb9", "up"], check=True)
    net.create_veth_pair("xa1", lab.a.ns, "xb0", lab.b.ns, [], [])
    net.set_mac(lab.a.ns, "xa1", lab.a.mac)
    net.set_mac(lab.b.ns, "xb0", lab.b.mac)
    net.set_gro(lab.b.ns, "xb0", True)
    new_a = Side(lab.a.ns, "xa1", net.ifindex("xa1", lab.a.ns), lab.a.mac, lab.a.ip4, lab.a.ip6)
    new_lab = Lab(new_a, lab.b, lab.bpffs, lab.state_dir)
    assert seen(new_lab) == UNFILTERED

    code, row = status(guard)
    assert code == 1 and row["protected"] is False, row
    assert "now named xb9" in row["problem"] and "not to xb0" in row["problem"], row

    r = guard.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
    assert "attached the programs to xb0" in r.stdout and "xb9" in r.stdout, describe(r)
    assert seen(new_lab) == AS_B
    assert "xdp" not in ip_link_show(lab.b.ns, "xb9"), "the renamed interface kept the programs"
    code, row = status(guard)
    assert code == 0 and row["protected"] is True, row


def test_replaced_map_pin_is_pinned_again(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    # Replace the pinned `config` map with an empty one of the same shape.
    pin = lab.bpffs / lab.b.ifname / "config"
    with bpf.Fd(bpf.obj_get(str(pin))) as fd:
        info = bpf.map_info(fd)
    with bpf.Fd(bpf.map_create(info.type, info.key_size, info.value_size, info.max_entries)) as fd:
        pin.unlink()
        bpf.obj_pin(fd, str(pin))
        planted = bpf.map_info(fd).id

    code, row = status(guard)
    assert code == 1 and row["protected"] is False, row
    assert f"the pin config names map id {planted}" in row["problem"], row

    r = guard.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
    assert "pinned the objects in use again (config)" in r.stdout, describe(r)
    assert seen(lab) == AS_B
    with bpf.Fd(bpf.obj_get(str(pin))) as fd:
        assert bpf.map_info(fd).id != planted
    code, row = status(guard)
    assert code == 0 and row["protected"] is True and row["consistent"] is True, row


def test_rollback_attaches_again(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    guard.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
    recreate(lab)
    r = expect_ok(guard.cli("rollback", "--iface", lab.b.ifname))
    assert "attached the programs to xb0" in r.stdout and "rolled back to version 1" in r.stdout, describe(r)
    assert seen(lab) == AS_A


def test_restore_attaches_a_recreated_interface(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    recreate(lab)
    r = expect_ok(run_cli("restore", env=lab_env(lab)))
    assert f"{lab.b.ifname}: re-attached" in r.stdout, describe(r)
    assert seen(lab) == AS_A
    code, _ = status(guard)
    assert code == 0


def test_gone_interface_is_refused(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES_A, "a.yaml"))
    guard.apply(write_rules(tmp_path, RULES_B, "b.yaml"))
    net.delete_link(lab.b.ifname, lab.b.ns)
    code, row = status(guard)
    assert code == 1 and "xb0 is gone" in row["problem"], row
    r = guard.cli("rollback", "--iface", lab.b.ifname)
    assert r.returncode == 1 and "Traceback" not in r.stderr, describe(r)
    assert "gone" in r.stderr and "detach" in r.stderr, describe(r)
    r = run_cli("restore", env=lab_env(lab))
    assert r.returncode == 1 and "xb0 is gone" in r.stderr, describe(r)
