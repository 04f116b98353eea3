"""Dynamic sets on a real interface: `xdpguard set` changes verdicts on the wire.

Each test applies a rule file that declares a dynamic set to the lab's B
side and drives `python -m xdpguard set ...` as an operator (or a feed)
would, then checks which frames from A still cross the veth pair, and the
counters and listings the CLI reports.  No apply happens between a `set`
command and the frames that show its effect.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.netns.clihelp import (
    REPO,
    Frames,
    Guard,
    describe,
    expect_ok,
    lab_env,
    pins,
    send_and_see,
    write_rules,
)
from tests.netns.traffic import Lab, exchange, new_marker, udp_frame

RULES = """\
    version: 1
    sets:
      blk: {{dynamic: true{extra}}}
      office: [192.0.2.0/24]
    ingress:
      default: allow
      rules:
        - name: drop-blk
          match: {{src: "@blk", proto: udp}}
          action: drop
    egress:
      default: allow
      rules:
        - name: no-blk-out
          match: {{dst: "@blk", proto: udp, dport: 7777}}
          action: drop
"""


def rules(tmp_path: Path, extra: str = "", name: str = "rules.yaml") -> Path:
    return write_rules(tmp_path, RULES.format(extra=extra), name)


def probe(lab: Lab) -> set[str]:
    """Which of A's UDP frames (IPv4 and IPv6, A's own addresses) cross to B."""
    fx = Frames(lab.a, lab.b)
    arrived, _ = send_and_see(lab, {"v4": fx.udp(dport=5353), "v6": fx.udp(dport=5353, v6=True)})
    return arrived


def setcmd(g: Guard, *args: str, stdin: str | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "xdpguard", "set", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=lab_env(g.lab),
        cwd=REPO,
        timeout=120,
    )


def set_list(g: Guard, name: str = "blk") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(expect_ok(setcmd(g, "list", name, "--json")).stdout)
    return rows


def elements(g: Guard, name: str = "blk") -> set[str]:
    return {r["element"] for r in set_list(g, name)}


def test_add_del_flush_change_verdicts_on_the_wire(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path))
    assert probe(lab) == {"v4", "v6"}

    r = expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))
    assert "1 added" in r.stdout, describe(r)
    assert probe(lab) == {"v6"}
    assert guard.rule("drop-blk")["packets"] == 1

    # an IPv6 prefix holding A's address
    expect_ok(setcmd(guard, "add", "blk", "fd00:200::/64"))
    assert probe(lab) == set()
    assert elements(guard) == {lab.a.ip4, "fd00:200::/64"}
    assert guard.rule("drop-blk")["packets"] == 3

    r = expect_ok(setcmd(guard, "del", "blk", lab.a.ip4, "198.51.100.1"))
    assert "1 removed" in r.stdout and "1 were not in it" in r.stdout, describe(r)
    assert probe(lab) == {"v4"}

    r = expect_ok(setcmd(guard, "flush", "blk"))
    assert "1 element removed" in r.stdout, describe(r)
    assert probe(lab) == {"v4", "v6"}
    assert elements(guard) == set()
    st = guard.status()
    assert st["dynamic_sets"]["blk"] == {"elements": 0, "size": 65536, "timeout": None}


def test_egress_dst_set(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """The egress program consults the same set, for the destination."""
    guard.apply(rules(tmp_path))

    def out() -> bool:
        marker = new_marker()
        frame = udp_frame(lab.b, lab.a, marker + b"out", dport=7777)
        try:
            return bool(exchange(lab, [frame], "b_to_a", marker=marker, resend_dropped=False))
        except OSError as e:  # a frame the egress program drops fails the send with ENOBUFS
            assert e.errno == errno.ENOBUFS, e
            return False

    assert out()
    expect_ok(setcmd(guard, "add", "blk", "10.200.0.0/24"))
    assert not out()
    st = guard.stats()
    assert [r["packets"] for r in st["egress"]["rules"] if r["name"] == "no-blk-out"] == [1]


def test_timeout_expires_without_a_command_and_is_collected(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path, ", timeout: 5s"))
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip6, "--timeout", "1h"))
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))  # the set's default: 5 s
    rows = {r["element"]: r for r in set_list(guard)}
    deadline = time.monotonic() + rows[lab.a.ip4]["expires"] + 0.2
    assert 0 < rows[lab.a.ip4]["expires"] <= 5.0 and rows[lab.a.ip6]["expires"] > 3500
    assert probe(lab) == set()
    time.sleep(max(0.0, deadline - time.monotonic()))
    # No command ran: the program itself saw the element expire.
    assert probe(lab) == {"v4"}
    assert guard.status()["dynamic_sets"]["blk"]["elements"] == 2  # stored until collected
    assert elements(guard) == {lab.a.ip6}
    expect_ok(setcmd(guard, "add", "blk", "198.51.100.9", "--timeout", "0"))  # 0: never expires
    assert guard.status()["dynamic_sets"]["blk"]["elements"] == 2  # the expired one was collected
    rows = {r["element"]: r for r in set_list(guard)}
    assert rows["198.51.100.9"]["expires"] is None


def test_elements_survive_apply_rollback_and_program_replacement(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    v1 = rules(tmp_path)
    guard.apply(v1)
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))
    assert probe(lab) == {"v6"}

    # A changed rule file (a rule added in front, the set's size changed).
    v2 = write_rules(
        tmp_path,
        RULES.format(extra=", size: 1000").replace(
            "      rules:\n        - name: drop-blk",
            "      rules:\n        - {name: ssh, match: {proto: tcp, dport: 22}, action: drop}\n"
            "        - name: drop-blk",
            1,
        ),
        "v2.yaml",
    )
    res = guard.apply_json(v2)
    assert res["changed"] is True
    assert probe(lab) == {"v6"}
    assert guard.status()["dynamic_sets"]["blk"]["size"] == 1000

    res = guard.apply_json(v2, "--replace-program")
    assert res["replaced_program"] is True
    assert probe(lab) == {"v6"}

    expect_ok(guard.cli("rollback", "--iface", lab.b.ifname))
    assert probe(lab) == {"v6"}
    assert elements(guard) == {lab.a.ip4}

    # A rule file without the set drops it, elements and all.
    none = write_rules(tmp_path, "version: 1\ningress: {default: allow}\n", "none.yaml")
    r = guard.apply(none)
    assert "dropped the dynamic set blk" in r.stdout, describe(r)
    assert not [p for p in pins(lab) if "set_" in p]
    assert probe(lab) == {"v4", "v6"}
    r = setcmd(guard, "add", "blk", lab.a.ip4)
    assert r.returncode == 2 and "declares a dynamic set blk" in r.stderr, describe(r)
    guard.apply(v1)
    assert elements(guard) == set()
    assert probe(lab) == {"v4", "v6"}


def test_bad_input_exits_2_and_changes_nothing(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path))
    expect_ok(setcmd(guard, "add", "blk", "198.51.100.1"))
    cases = [
        (("add", "nope", "1.2.3.4"), None, "no interface's applied rule file declares a dynamic set nope"),
        (("add", "office", "1.2.3.4"), None, "office is a static set"),
        (("add", "blk", "10.200.0.1", "300.1.1.1"), None, '"300.1.1.1" is not a valid IPv4 address'),
        (("add", "blk", "10.200.0.1", "192.0.2.1/24"), None, "has host bits set (network is 192.0.2.0/24)"),
        (("add", "blk", "-"), "10.200.0.1\n# fine\nnot-an-ip\n", '<stdin>:3: "not-an-ip" is not an address'),
        (("add", "blk", "-", "10.200.0.1"), None, "`-` (read stdin) must be the only address"),
        (("add", "blk", "10.200.0.1", "--timeout", "soon"), None, '--timeout: "soon" is not a duration'),
        (("add", "blk", "10.200.0.1", "-i", "xb0", "-i", "nosuch0"), None, "not attached to nosuch0"),
        (("del", "blk", "198.51.100.1", "1.2.3"), None, '"1.2.3" is not a valid IPv4 address'),
        (("flush", "office"), None, "office is a static set"),
        (("add", "blk"), None, "give at least one address"),
    ]
    for args, stdin, message in cases:
        r = setcmd(guard, *args, stdin=stdin)
        want = 1 if "not attached" in message else 2
        assert r.returncode == want, describe(r)
        assert message in r.stderr, describe(r)
        assert "Traceback" not in r.stderr, describe(r)
    assert elements(guard) == {"198.51.100.1"}
    assert probe(lab) == {"v4", "v6"}
    st = guard.status()
    assert st["dynamic_sets"]["blk"]["elements"] == 1


def test_shrinking_below_the_elements_is_refused_before_anything_changes(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    """A new size under what the set holds: exit 2, the old size and elements
    stay, and no journal is left for the next command to call interrupted."""
    guard.apply(rules(tmp_path, ", size: 4"))
    expect_ok(setcmd(guard, "add", "blk", "198.51.100.1", "198.51.100.2", lab.a.ip4))
    before = guard.status()
    r = guard.cli("apply", rules(tmp_path, ", size: 2", name="small.yaml"), "--iface", guard.ifname)
    assert r.returncode == 2, describe(r)
    assert "dynamic set blk holds 3 elements, more than its new size 2" in r.stderr, describe(r)
    assert "Traceback" not in r.stderr, describe(r)
    assert not list((lab.state_dir / guard.ifname).glob("journal*")), describe(r)
    after = guard.status()
    assert after["version"] == before["version"], after
    assert after["dynamic_sets"]["blk"] == {"elements": 3, "size": 4, "timeout": None}, after
    text = expect_ok(guard.cli("status", "--iface", guard.ifname)).stdout
    assert "interrupted" not in text, text
    assert probe(lab) == {"v6"}  # A's IPv4 address is still in the set


def test_a_replaced_set_pin_is_found_and_pinned_again(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """Another map pinned in place of a set's: `set add` would write where no
    packet looks.  status says so (exit 1, NOT PROTECTED), and apply pins the
    map in use again, after which `set add` blocks on the wire."""
    from xdpguard.datapath import bpf as B
    from xdpguard.datapath import dynsets

    guard.apply(rules(tmp_path))
    pin = lab.bpffs / guard.ifname / dynsets.pin_name("blk", "v4")
    decoy = dynsets.create("decoy", 65536, 0)
    try:
        pin.unlink()
        B.obj_pin(decoy.fds["v4"], str(pin))
    finally:
        decoy.close()
    r = guard.cli("status", "--iface", guard.ifname, "--json")
    assert r.returncode == 1, describe(r)
    row = json.loads(r.stdout)[0]
    assert row["protected"] is False and "the pin set_v4_blk names map id" in row["problem"], row
    out = expect_ok(guard.cli("apply", rules(tmp_path), "--iface", guard.ifname)).stdout
    assert "pinned the objects in use again (set_v4_blk)" in out, out
    assert guard.status()["protected"] is True
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))
    assert probe(lab) == {"v6"}


def test_full_set_exits_1_and_says_how_many_were_added(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path, ", size: 3"))
    expect_ok(setcmd(guard, "add", "blk", "198.51.100.1"))
    r = setcmd(guard, "add", "blk", "198.51.100.1", "198.51.100.2", lab.a.ip4, "198.51.100.4", "198.51.100.5")
    assert r.returncode == 1, describe(r)
    assert "xb0: blk: 2 added, 1 renewed" in r.stderr, describe(r)
    assert "the set is full (size 3): 2 of 4 new elements were not added" in r.stderr, describe(r)
    assert elements(guard) == {"198.51.100.1", "198.51.100.2", lab.a.ip4}
    assert probe(lab) == {"v6"}  # what was added before the set filled works
    # Renewing what is there still works on a full set; deleting makes room.
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4, "--timeout", "1h"))
    expect_ok(setcmd(guard, "del", "blk", "198.51.100.1"))
    expect_ok(setcmd(guard, "add", "blk", "198.51.100.4"))


def test_bulk_from_stdin(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path))
    lines = [f"198.18.{i // 256}.{i % 256}" for i in range(5000)] + ["2001:db8:77::/48", lab.a.ip4]
    r = expect_ok(setcmd(guard, "add", "blk", "-", "--timeout", "10m", stdin="\n".join(lines) + "\n"))
    assert "5002 added" in r.stdout, describe(r)
    assert guard.status()["dynamic_sets"]["blk"]["elements"] == 5002
    assert probe(lab) == {"v6"}
    r = expect_ok(setcmd(guard, "del", "blk", "-", stdin="\n".join(lines[:4000]) + "\n"))
    assert "4000 removed" in r.stdout
    assert len(set_list(guard)) == 1002


def test_detach_removes_the_sets(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    guard.apply(rules(tmp_path))
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))
    assert [p for p in pins(lab) if "set_" in p]
    guard.detach()
    assert pins(lab) == []
    r = setcmd(guard, "list", "blk")
    assert r.returncode == 2 and "declares a dynamic set blk" in r.stderr, describe(r)


def _filter_bit(g: Guard, name: str, addr: str) -> bool:
    """Is the filter bit of `addr` in set `name` set on the lab's B side?"""
    from xdpguard.datapath import bpf as B
    from xdpguard.datapath import dynfilter
    from xdpguard.rules.model import Prefix

    ip = ipaddress.ip_address(addr)
    bits = dynfilter.Bits().add(dynfilter.salt(name), [Prefix(ip.version, int(ip), ip.max_prefixlen)])
    ((word, mask),) = bits.small.items()
    with B.Fd(B.obj_get(str(g.lab.bpffs / g.lab.b.ifname / "dynf"))) as fd:
        raw = B.map_lookup(fd, word.to_bytes(4, "little"), 8)
    assert raw is not None
    return bool(int.from_bytes(raw, "little") & mask)


def test_a_new_filter_is_filled_before_the_swap(guard: Guard, lab: Lab, tmp_path: Path) -> None:
    """The filter in front of the sets says which addresses may be members;
    new programs that create it (an older xdpguard's pins, a lost pin) find
    it empty, and an empty filter hides every element.  It is rebuilt from
    the pinned sets before the programs are swapped."""
    path = rules(tmp_path)
    guard.apply(path)
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4, "fd00:200::/64"))
    assert probe(lab) == set()
    assert _filter_bit(guard, "blk", lab.a.ip4)

    (lab.bpffs / lab.b.ifname / "dynf").unlink()
    res = guard.apply_json(path)
    assert res["replaced_program"] is True, res
    assert any("older xdpguard" in m and "dynf" in m for m in res["messages"]), res["messages"]
    assert _filter_bit(guard, "blk", lab.a.ip4)
    assert probe(lab) == set()
    assert guard.rule("drop-blk")["packets"] == 4


def test_the_filter_forgets_removed_elements_at_the_next_apply(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    """A removed element's bit stays set (it costs lookups, never a verdict)
    until the next apply rebuilds the filter; a flush rebuilds it at once."""
    path = rules(tmp_path)
    guard.apply(path)
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4, "198.51.100.7"))
    expect_ok(setcmd(guard, "del", "blk", lab.a.ip4))
    assert _filter_bit(guard, "blk", lab.a.ip4)  # stale, harmless
    assert probe(lab) == {"v4", "v6"}

    guard.apply(path)
    assert not _filter_bit(guard, "blk", lab.a.ip4)
    assert _filter_bit(guard, "blk", "198.51.100.7")
    expect_ok(setcmd(guard, "add", "blk", lab.a.ip4))
    assert probe(lab) == {"v6"}
    expect_ok(setcmd(guard, "flush", "blk"))
    assert not _filter_bit(guard, "blk", lab.a.ip4)
    assert not _filter_bit(guard, "blk", "198.51.100.7")
    assert probe(lab) == {"v4", "v6"}
