"""`make demo`: xdpguard on a real veth pair, end to end, in a few seconds.

Two network namespaces (A and B) are joined by a veth pair.  The example
rule file rules/web-edge.yaml goes onto B's end with the real CLI; B sends
one UDP query to A from a connected socket (so that A's reply is `state:
established`), A sends one
frame per probe (built with scapy, sent on a raw AF_PACKET socket) and B's
capture shows which survived XDP.  Then `stats`, `status` and `detach` run
as an operator would run them.  The lab uses documentation addresses,
which the example treats as ordinary internet sources, so it applies
unchanged; other sources (office, blocklist, bogon) are simply spoofed.

Nothing outside the lab is touched: the namespaces are xgdemo-<pid>-a/-b,
XDPGUARD_BPFFS is /sys/fs/bpf/xdpguard-demo-<pid> and XDPGUARD_STATE_DIR a
temporary directory, all removed at the end, on Ctrl-C and on SIGTERM too.
Exit status 0 only if every probe got the verdict the rule file promises
and was counted by the rule that should have decided it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from xdpguard import net, resources

RULES = resources.RULES_DIR / "web-edge.yaml"
A_IF, B_IF = "xa0", "xb0"
A4, B4, A6, B6 = "192.0.2.1", "192.0.2.2", "2001:db8:2::1", "2001:db8:2::2"
OFFICE, BLOCKED, BOGON, BLOCKED6 = "203.0.113.9", "192.0.2.66", "10.1.2.3", "2001:db8:bad::1"
ETH_P_ALL = 0x0003
REPLY_PORT = 40053  # B queries A from this port; the reply is `state: established`
NAME_RE = re.compile(r"^xgdemo-(\d+)-[ab]$|^xdpguard-demo-(\d+)$|^xgdemo-(\d+)-")

console = Console(highlight=False, soft_wrap=True)


def probes(mac_a: str, mac_b: str) -> list[tuple[str, bool, str, bytes]]:
    """(what is sent, should it pass, the rule that should decide, the frame)."""
    eth = Ether(src=mac_a, dst=mac_b)

    def ip4(l4: Packet, src: str = A4, **ip: Any) -> bytes:
        return bytes(eth / IP(src=src, dst=B4, **ip) / l4)

    def ip6(l4: Packet, src: str = A6) -> bytes:
        return bytes(eth / IPv6(src=src, dst=B6) / l4)

    syn = {port: TCP(sport=40000, dport=port, flags="S") for port in (22, 443, 3306)}
    arp = Ether(src=mac_a, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=mac_a, psrc=A4, pdst=B4)
    quoted = IP(src=B4, dst=A4) / TCP(sport=443, dport=40000)  # what an ICMP error quotes
    return [
        ("TCP SYN :443", True, "web-syn-guard", ip4(syn[443])),
        ("TCP ACK :80", True, "web", ip4(TCP(dport=80, flags="A"))),
        ("UDP :443 (HTTP/3)", True, "http3", ip4(UDP(sport=40000, dport=443))),
        ("IPv6 TCP SYN :443", True, "web-syn-guard", ip6(syn[443])),
        ("TCP SYN :22, office", True, "ssh-office", ip4(syn[22], OFFICE)),
        ("TCP SYN :22, not office", False, "(default)", ip4(syn[22])),
        ("TCP SYN :3306", False, "(default)", ip4(syn[3306])),
        ("UDP :53", False, "(default)", ip4(UDP(sport=40000, dport=53))),
        ("reply to B's DNS query", True, "allow-replies", ip4(UDP(sport=53, dport=REPLY_PORT))),
        ("TCP SYN :443, blocklist", False, "drop-blocklist", ip4(syn[443], BLOCKED)),
        ("IPv6 SYN :443, blocklist", False, "drop-blocklist", ip6(syn[443], BLOCKED6)),
        ("TCP SYN :443, bogon", False, "drop-bogons", ip4(syn[443], BOGON)),
        ("ICMP echo request", True, "ping", ip4(ICMP(type="echo-request"))),
        ("ICMPv6 echo request", True, "ping", ip6(ICMPv6EchoRequest())),
        ("ICMP frag needed (PMTUD)", True, "icmp-errors", ip4(ICMP(type=3, code=4) / quoted)),
        ("ARP request", True, "(non_ip)", bytes(arp)),
        # No TCP header in it, so only rules without port conditions can match.
        ("later fragment, TCP :443", False, "(default)", ip4(Raw(bytes(16)), proto=6, frag=185)),
        # The IP total length leaves room for 10 of TCP's 20 header bytes.
        ("TCP header cut short", False, "(malformed)", ip4(Raw(bytes(10)), proto=6, len=30)),
    ]


def packet_socket(ns: str, ifname: str, proto: int) -> socket.socket:
    with net.in_netns(ns):  # a socket stays in the namespace it was made in
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    sock.bind((ifname, proto))
    return sock


def send_and_capture(ns_a: str, ns_b: str, frames: list[bytes], settle: float = 0.5) -> list[bytes]:
    """Send frames out of A; return what arrived on B (after B's XDP program)."""
    with packet_socket(ns_b, B_IF, ETH_P_ALL) as rx, packet_socket(ns_a, A_IF, 0) as tx:
        for f in frames:
            tx.send(f)
        got = []
        while select.select([rx], [], [], settle)[0]:  # until quiet for `settle` s
            data, addr = rx.recvfrom(65535)
            if addr[2] != socket.PACKET_OUTGOING:  # B's own answers are not arrivals
                got.append(data)
        return got


def xdpguard(
    env: dict[str, str], ns: str, *args: str, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = ["python", "-m", "xdpguard", "--netns", ns, *args]
    if not capture:
        console.print(f"\n[bold]$ {shlex.join(argv)}[/]")
    sys.stdout.flush()
    return subprocess.run([sys.executable, *argv[1:]], env=env, text=True, capture_output=capture)


def counters(env: dict[str, str], ns: str) -> dict[str, int]:
    """Packets per ingress rule and per special counter, from `stats --json`."""
    res = xdpguard(env, ns, "stats", "--iface", B_IF, "--json", capture=True)
    if res.returncode != 0:
        raise RuntimeError(f"stats --json failed: {res.stderr.strip()}")
    ing = json.loads(res.stdout)["ingress"]
    out = {r["name"]: r["packets"] for r in ing["rules"]}
    out.update({f"({k})": ing[k]["packets"] for k in ("default", "malformed", "non_ip", "ndp")})
    return out


def sweep_stale() -> None:
    """Remove what earlier demos killed with SIGKILL left behind."""

    def dead(name: str) -> bool:
        m = NAME_RE.match(name)
        return m is not None and not Path(f"/proc/{next(g for g in m.groups() if g)}").exists()

    for ns in filter(dead, net.list_netns()):
        net.delete_netns(ns)
    for d in filter(lambda d: dead(d.name), Path("/sys/fs/bpf").iterdir()):
        cleanup_pins(d)
    for d in filter(lambda d: dead(d.name), Path(tempfile.gettempdir()).iterdir()):
        shutil.rmtree(d, ignore_errors=True)


def cleanup_pins(d: Path) -> None:
    if d.is_dir():
        for p in sorted(d.rglob("*"), reverse=True):  # files before their directories
            p.rmdir() if p.is_dir() else p.unlink()
        d.rmdir()


def run(ns_a: str, ns_b: str, env: dict[str, str]) -> bool:
    for ns in (ns_a, ns_b):
        net.create_netns(ns)
    net.create_veth_pair(A_IF, ns_a, B_IF, ns_b, [f"{A4}/24", f"{A6}/64"], [f"{B4}/24", f"{B6}/64"])
    mac_a, mac_b = net.get_mac(ns_a, A_IF), net.get_mac(ns_b, B_IF)
    for ip in (B4, B6):
        net.neigh_add(ns_a, A_IF, ip, mac_b)
    for ip in (A4, A6):
        net.neigh_add(ns_b, B_IF, ip, mac_a)
    net.set_gro(ns_b, B_IF, True)
    console.print(f"lab: A = {ns_a} {A_IF} {A4} {A6}\n     B = {ns_b} {B_IF} {B4} {B6}")

    if xdpguard(env, ns_b, "apply", os.path.relpath(RULES), "--iface", B_IF).returncode != 0:
        console.print("[red]FAIL: apply failed[/]")
        return False

    plist = probes(mac_a, mac_b)
    # Each frame carries a unique tag after its IP packet (as Ethernet padding,
    # which the IP layer ignores), to tell it apart from the lab's own traffic.
    marker = os.urandom(6).hex().encode()
    tags = [b"xgdemo-%s-%02d" % (marker, i) for i in range(len(plist))]
    # B asks A something from a connected socket, as a resolver does: B's
    # egress program records the flow (an unconnected socket would not).
    with net.in_netns(ns_b):
        query = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with query:
        query.bind((B4, REPLY_PORT))
        query.connect((A4, 53))
        query.send(b"query")
    before = counters(env, ns_b)
    arrived = send_and_capture(ns_a, ns_b, [p[3] + tag for p, tag in zip(plist, tags, strict=True)])
    after = counters(env, ns_b)
    # At least: the lab's own IPv6 chatter (MLD reports) is counted too.
    counted = {k: after[k] - before[k] >= n for k, n in Counter(p[2] for p in plist).items()}

    table = Table(
        title=f"probes from A to B ({RULES.name})",
        title_justify="left",
        caption=f"office {OFFICE}, blocklist {BLOCKED} and {BLOCKED6}, bogon {BOGON}",
        caption_justify="left",
    )
    for col in ("sent", "expect", "rule", "on B", "counted", "result"):
        table.add_column(col)
    all_ok = True
    for (what, should_pass, rule, _), tag in zip(plist, tags, strict=True):
        seen = any(tag in f for f in arrived)
        ok = seen == should_pass and counted[rule]
        all_ok &= ok
        verdict, yes_no = "pass" if should_pass else "drop", ("no", "yes")
        result = "[green]OK[/]" if ok else "[red]FAIL[/]"
        table.add_row(what, verdict, rule, yes_no[seen], yes_no[counted[rule]], result)
    console.print()
    console.print(table)

    all_ok &= xdpguard(env, ns_b, "stats", "--iface", B_IF).returncode == 0
    all_ok &= xdpguard(env, ns_b, "status", "--iface", B_IF).returncode == 0
    all_ok &= xdpguard(env, ns_b, "detach", "--iface", B_IF).returncode == 0
    return all_ok


def main() -> int:
    if os.geteuid() != 0:
        console.print("the demo needs root (network namespaces, BPF): run `sudo make demo`")
        return 2
    pid = os.getpid()
    ns_a, ns_b = f"xgdemo-{pid}-a", f"xgdemo-{pid}-b"
    bpffs = Path(f"/sys/fs/bpf/xdpguard-demo-{pid}")
    state = Path(tempfile.mkdtemp(prefix=f"xgdemo-{pid}-"))
    env = dict(os.environ, XDPGUARD_BPFFS=str(bpffs), XDPGUARD_STATE_DIR=str(state))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` runs
    ok = interrupted = False
    try:
        sweep_stale()
        ok = run(ns_a, ns_b, env)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # pyroute2 forks short-lived helpers that inherit our handlers; a
        # signal that reaches one of them must not clean up the lab.
        if os.getpid() != pid:
            os._exit(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for ns in (ns_a, ns_b):  # deleting B's namespace also detaches what is left on xb0
            net.delete_netns(ns)
        cleanup_pins(bpffs)
        shutil.rmtree(state, ignore_errors=True)
        console.print(f"\ncleaned up: namespaces {ns_a} {ns_b}, {bpffs}, {state}")
    if interrupted:
        return 130
    console.print("[green]demo OK: every probe behaved as the rules say[/]" if ok else "[red]demo FAIL[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
