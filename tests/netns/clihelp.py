"""Helpers for tests that drive the `xdpguard` CLI against the veth lab.

The CLI always runs as a subprocess (`python -m xdpguard --netns NS ...`),
as an operator would run it, with XDPGUARD_BPFFS / XDPGUARD_STATE_DIR
pointing at the lab's private directories.  Frames are built with scapy by
`Frames` and sent with `send_and_see`, which tags every frame so that the
test can tell exactly which ones crossed the XDP program on the B side.

    g = Guard(lab)
    g.apply(write_rules(tmp_path, RULES))
    arrived, sent = send_and_see(lab, {"ssh": fx.tcp(dport=22), "dns": fx.udp(dport=53)})
    assert arrived == {"dns"}
    assert g.rule("ssh-drop")["packets"] == 1

`quiet_lab` is a module-scoped variant of the `lab` fixture whose sender
side has IPv6 switched off, so that nothing but the test's own frames
reaches B: with it, even the default and NDP counters can be compared
exactly.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6Unknown,
    IPv6,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from tests.netns.traffic import Lab, Side, exchange, new_marker
from xdpguard import net
from xdpguard.datapath import bpf, probes

REPO = Path(__file__).resolve().parents[2]
BPFFS_ROOT = Path("/sys/fs/bpf")
CLI_TIMEOUT = 120

# --------------------------------------------------------------------------
# Running the CLI


def lab_env(lab: Lab) -> dict[str, str]:
    """The environment that isolates the CLI to this lab's bpffs and state dirs."""
    return os.environ | {"XDPGUARD_BPFFS": str(lab.bpffs), "XDPGUARD_STATE_DIR": str(lab.state_dir)}


def run_cli(
    *args: str | os.PathLike[str],
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
    python_opts: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """`python -m xdpguard [--netns NS] ARGS...`; never raises on a non-zero exit."""
    cmd = [sys.executable, *python_opts, "-m", "xdpguard"]
    if netns is not None:
        cmd += ["--netns", netns]
    cmd += [str(a) for a in args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=dict(env if env is not None else os.environ),
        cwd=REPO,
        timeout=CLI_TIMEOUT,
    )


def describe(r: subprocess.CompletedProcess[str]) -> str:
    """A failed run, for assertion messages."""
    return f"$ {' '.join(r.args)}\nexit {r.returncode}\n--- stdout\n{r.stdout}--- stderr\n{r.stderr}"


def expect_ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, describe(r)
    assert "Traceback" not in r.stderr, describe(r)
    return r


class Guard:
    """The CLI bound to one lab: runs inside the receiving side's namespace."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ns = lab.b.ns
        self.ifname = lab.b.ifname

    def cli(
        self, *args: str | os.PathLike[str], python_opts: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, netns=self.ns, env=lab_env(self.lab), python_opts=python_opts)

    def apply(self, rules: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return expect_ok(self.cli("apply", rules, "--iface", self.ifname, *extra))

    def apply_json(self, rules: Path, *extra: str) -> dict[str, Any]:
        out = json.loads(self.apply(rules, "--json", *extra).stdout)
        assert isinstance(out, list) and len(out) == 1, out
        result: dict[str, Any] = out[0]
        return result

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            expect_ok(self.cli("stats", "--iface", self.ifname, "--json")).stdout
        )
        return data

    def status(self) -> dict[str, Any]:
        rows = json.loads(expect_ok(self.cli("status", "--iface", self.ifname, "--json")).stdout)
        assert isinstance(rows, list) and len(rows) == 1, rows
        row: dict[str, Any] = rows[0]
        return row

    def rule(self, name: str, stats: dict[str, Any] | None = None) -> dict[str, Any]:
        """One ingress rule's counters from `stats --json`."""
        rules = (stats or self.stats())["ingress"]["rules"]
        found = [r for r in rules if r["name"] == name]
        assert len(found) == 1, f"rule {name!r} not exactly once in {rules}"
        return found[0]

    def detach(self) -> subprocess.CompletedProcess[str]:
        return expect_ok(self.cli("detach", "--iface", self.ifname))


def write_rules(
    directory: Path, text: str, name: str = "rules.yaml", files: Mapping[str, str] | None = None
) -> Path:
    """Write a rule file (dedented) and any side files (set lists) next to it."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, content in (files or {}).items():
        p = directory / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content))
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def pins(lab: Lab) -> list[str]:
    """Everything still pinned under the lab's bpffs directory."""
    if not lab.bpffs.exists():
        return []
    return sorted(str(p.relative_to(lab.bpffs)) for p in lab.bpffs.rglob("*") if not p.is_dir())


@contextlib.contextmanager
def guarded(lab: Lab) -> Iterator[Guard]:
    """The CLI for the lab's B side; detaches at the end, however the test
    went, and checks that nothing stays pinned."""
    g = Guard(lab)
    try:
        yield g
    finally:
        r = g.cli("detach", "--iface", lab.b.ifname)
        assert r.returncode == 0, describe(r)
        assert pins(lab) == [], f"pinned after detach: {pins(lab)}"


# Rules several CLI tests share: UDP to mdns (5353) allowed, to discard (9) dropped.
MDNS_DISCARD_RULES = """\
    version: 1
    ingress:
      default: allow
      rules:
        - name: allow-mdns
          match: {proto: udp, dport: 5353}
          action: allow
        - name: drop-discard
          match: {proto: udp, dport: 9}
          action: drop
"""


def ip_link_show(ns: str, ifname: str) -> str:
    r = subprocess.run(["ip", "-n", ns, "link", "show", ifname], capture_output=True, text=True, check=True)
    return r.stdout


# --------------------------------------------------------------------------
# Frames


class Frames:
    """Ethernet frames from `src` to `dst` of the lab, built with scapy.

    Addresses default to the two sides' own; any may be overridden, since
    XDP classifies whatever the frame says.  `vlans` is a list of
    (ethertype, vid) tags, outermost first.
    """

    def __init__(self, src: Side, dst: Side) -> None:
        self.src = src
        self.dst = dst

    def ether(self, vlans: Sequence[tuple[int, int]] = (), dst_mac: str | None = None) -> Packet:
        e: Packet = Ether(src=self.src.mac, dst=dst_mac or self.dst.mac)
        for etype, vid in vlans:
            e = e / (Dot1AD(vlan=vid) if etype == 0x88A8 else Dot1Q(vlan=vid))
        return e

    def ip(
        self,
        l4: Packet,
        *,
        v6: bool = False,
        src: str | None = None,
        dst: str | None = None,
        vlans: Sequence[tuple[int, int]] = (),
        **ip_fields: Any,
    ) -> bytes:
        if v6:
            l3 = IPv6(src=src or self.src.ip6, dst=dst or self.dst.ip6, **ip_fields)
        else:
            l3 = IP(src=src or self.src.ip4, dst=dst or self.dst.ip4, **ip_fields)
        return bytes(self.ether(vlans) / l3 / l4)

    def udp(self, dport: int = 5353, sport: int = 40000, **kw: Any) -> bytes:
        return self.ip(UDP(sport=sport, dport=dport) / Raw(b"udp"), **kw)

    def tcp(self, dport: int = 80, sport: int = 40000, flags: str = "S", **kw: Any) -> bytes:
        # Every segment has the same sequence number: GRO on B never merges two.
        return self.ip(TCP(sport=sport, dport=dport, flags=flags, seq=1000) / Raw(b"tcp"), **kw)

    def sctp(self, dport: int = 5000, sport: int = 40000, **kw: Any) -> bytes:
        return self.ip(SCTP(sport=sport, dport=dport), **kw)

    def icmp(self, type: int = 8, code: int = 0, **kw: Any) -> bytes:
        return self.ip(ICMP(type=type, code=code, id=7, seq=1) / Raw(b"icmp"), **kw)

    def icmp6(self, type: int = 128, code: int = 0, **kw: Any) -> bytes:
        if type == 128 and code == 0:
            l4: Packet = ICMPv6EchoRequest(id=7, seq=1, data=b"icmp6")
        elif type == 129 and code == 0:
            l4 = ICMPv6EchoReply(id=7, seq=1, data=b"icmp6")
        else:
            l4 = ICMPv6Unknown(type=type, code=code, msgbody=b"\0" * 4 + b"icmp6")
        return self.ip(l4, v6=True, **kw)

    def ndp(self, type: int) -> bytes:
        """A neighbour-discovery message (133 RS, 135 NS, 136 NA) from A's IPv6 address."""
        if type == 133:
            l3 = IPv6(src=self.src.ip6, dst="ff02::2", hlim=255)
            l4: Packet = ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=self.src.mac)
            return bytes(self.ether(dst_mac="33:33:00:00:00:02") / l3 / l4)
        if type == 135:
            l4 = ICMPv6ND_NS(tgt=self.dst.ip6) / ICMPv6NDOptSrcLLAddr(lladdr=self.src.mac)
        elif type == 136:
            l4 = ICMPv6ND_NA(tgt=self.src.ip6, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=self.src.mac)
        else:
            raise ValueError(f"no builder for NDP type {type}")
        return bytes(self.ether() / IPv6(src=self.src.ip6, dst=self.dst.ip6, hlim=255) / l4)

    def arp(self, vlans: Sequence[tuple[int, int]] = ()) -> bytes:
        """An ARP who-has for B's address, broadcast."""
        req = ARP(op=1, hwsrc=self.src.mac, psrc=self.src.ip4, pdst=self.dst.ip4)
        return bytes(self.ether(vlans, dst_mac="ff:ff:ff:ff:ff:ff") / req)

    def ethertype(self, etype: int, dst_mac: str | None = None) -> bytes:
        """A frame of any ethertype with an opaque body (LLDP is 0x88cc)."""
        e = self.ether(dst_mac=dst_mac)
        e.type = etype
        return bytes(e / Raw(b"\x02\x07\x04" + b"\0" * 43))

    def proto(self, number: int, **kw: Any) -> bytes:
        """An IP packet of protocol `number` with an opaque payload."""
        if kw.get("v6"):
            return self.ip(Raw(b"\0" * 8 + b"raw"), nh=number, **kw)
        return self.ip(Raw(b"\0" * 8 + b"raw"), proto=number, **kw)


# --------------------------------------------------------------------------
# Sending


def send_and_see(
    lab: Lab, frames: Mapping[str, bytes], settle: float = 0.3
) -> tuple[set[str], dict[str, bytes]]:
    """Send every frame from A; return (labels of those that arrived on B,
    the frames exactly as sent).

    Each frame gets a unique tag appended after its last header: Ethernet
    padding beyond what the IP header says the packet is, so it changes no
    header field the parser reads, and survives VLAN untagging on B.
    """
    marker = new_marker()
    tagged = {label: frame + marker + label.encode() + b"." for label, frame in frames.items()}
    arrived = exchange(lab, list(tagged.values()), marker=marker, settle=settle)
    seen: dict[str, int] = {}
    for f in arrived:
        labels = [label for label in tagged if marker + label.encode() + b"." in f]
        assert len(labels) == 1, f"an arrival matches {labels}: {f.hex()}"
        seen[labels[0]] = seen.get(labels[0], 0) + 1
    assert all(n == 1 for n in seen.values()), f"frames arrived more than once: {seen}"
    return set(seen), tagged


# --------------------------------------------------------------------------
# A lab whose sender is silent


@functools.cache
def missing_feature() -> str | None:
    """Why these tests cannot run here, or None (conftest.py skips every netns test then)."""
    if not probes.privileged():
        return "needs root (network namespaces, CAP_BPF, CAP_NET_ADMIN)"
    if not os.path.exists("/proc/self/ns/net"):
        return "kernel has no network namespaces (CONFIG_NET_NS)"
    with open("/proc/self/mounts") as f:
        if not any(line.split()[1:3] == [str(BPFFS_ROOT), "bpf"] for line in f):
            return "bpffs is not mounted at /sys/fs/bpf (run `make setup`)"
    try:
        bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1)).close()
    except OSError as e:
        return f"bpf(2) is unavailable (CONFIG_BPF_SYSCALL): {e}"
    return None


# Names follow conftest.py's patterns (xgt<pid>-<n>a, xdpguard-test-<pid>-<n>)
# so that its session sweep removes them if a run is killed; the numbers
# start far above the ones the per-test `lab` fixture uses.
_quiet_counter = itertools.count(100_000)


def _write_sysctl(ns: str, key: str, value: str) -> None:
    # /proc/sys/net follows the network namespace of the opening thread.
    with net.in_netns(ns), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@contextlib.contextmanager
def quiet_lab(tmp_dir: Path) -> Iterator[Lab]:
    """Like the `lab` fixture, but A has no IPv6 stack at all.

    A's kernel would otherwise send router solicitations, MLD reports and
    DAD probes to B for seconds after the link comes up; those land in B's
    default or NDP counters.  The tests send raw frames from A, so A needs
    no IPv6 of its own to send IPv6.  The caller sets the environment
    (XDPGUARD_BPFFS / XDPGUARD_STATE_DIR) from the returned Lab.
    """
    n = next(_quiet_counter)
    pid = os.getpid()
    ns_a, ns_b = f"xgt{pid}-{n}a", f"xgt{pid}-{n}b"
    bpffs = BPFFS_ROOT / f"xdpguard-test-{pid}-{n}"
    state_dir = tmp_dir / "state"
    state_dir.mkdir(parents=True)
    a4, b4, a6, b6 = "10.200.0.1", "10.200.0.2", "fd00:200::1", "fd00:200::2"
    try:
        net.create_netns(ns_a)
        net.create_netns(ns_b)
        _write_sysctl(ns_a, "net.ipv6.conf.default.disable_ipv6", "1")
        ia, ib = net.create_veth_pair("xa0", ns_a, "xb0", ns_b, [f"{a4}/24"], [f"{b4}/24", f"{b6}/64"])
        mac_a, mac_b = net.get_mac(ns_a, "xa0"), net.get_mac(ns_b, "xb0")
        net.neigh_add(ns_a, "xa0", b4, mac_b)
        for ip in (a4, a6):
            net.neigh_add(ns_b, "xb0", ip, mac_a)
        net.set_gro(ns_b, "xb0", True)
        yield Lab(
            a=Side(ns_a, "xa0", ia, mac_a, a4, a6),
            b=Side(ns_b, "xb0", ib, mac_b, b4, b6),
            bpffs=bpffs,
            state_dir=state_dir,
        )
    finally:
        net.delete_netns(ns_a)
        net.delete_netns(ns_b)
        left = []
        if bpffs.exists():
            left = sorted(str(p) for p in bpffs.rglob("*") if not p.is_dir())
            for p in left:
                os.unlink(p)
            for d in sorted((p for p in bpffs.rglob("*") if p.is_dir()), reverse=True):
                d.rmdir()
            bpffs.rmdir()
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"still pinned under {bpffs} after the tests: {left}"


# Two one-rule sets whose verdicts tell them apart on the wire: A lets mdns
# in and drops discard; B the other way round.  `seen` says which of the two
# probes arrived, so a test reads which set (if any) protects the interface.
RULES_A = """\
    version: 1
    ingress:
      default: allow
      rules:
        - {name: drop-discard, match: {proto: udp, dport: 9}, action: drop}
"""
RULES_B = """\
    version: 1
    ingress:
      default: allow
      rules:
        - {name: drop-mdns, match: {proto: udp, dport: 5353}, action: drop}
"""
UNFILTERED = {"mdns", "discard"}
AS_A = {"mdns"}
AS_B = {"discard"}


def seen(lab: Lab, b: Side | None = None) -> set[str]:
    """The probes (mdns, discard) that reach side b (default: the lab's b)."""
    fx = Frames(lab.a, b or lab.b)
    arrived, _ = send_and_see(lab, {"mdns": fx.udp(dport=5353), "discard": fx.udp(dport=9)})
    return arrived
