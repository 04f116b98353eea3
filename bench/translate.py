"""The same policies for the peers: nftables (netdev ingress) and iptables-legacy (raw PREROUTING).

Input is ClassBench rules (bench.classbench.Rule: file order = first match,
rule i allow when even and drop when odd, default allow, flags ignored) or
a list of IPv4 prefixes to drop (a blocklist).

- `nft_linear`: one nft rule per ClassBench rule, in order, in a netdev
  table's ingress chain on one interface; `accept` ends the chain as
  xdpguard's first match does, the policy is accept.
- `nft_blocklist`: the encoding nft does best for a blocklist, an interval
  set (`flags interval; auto-merge`: overlapping prefixes merge) and one
  rule `ip saddr @bl drop`.
- `nft_blocklist_linear` is the linear alternative, for small inputs only.
- `iptables_linear`: iptables-legacy-restore input for the raw table's
  PREROUTING chain, one rule per ClassBench rule (`-i IFACE`), ACCEPT/DROP.

Every text is self-contained: the nft files delete their own table first
(`table netdev T` + `delete table netdev T` + the table again), so that a
rerun replaces rather than adds; `nft_delete` removes it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from bench.classbench import IPPROTO_TCP, IPPROTO_UDP, PORT_ANY, Rule, action

TABLE = "xgbench"


def _v4(a: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", a))


def _cidr(p: tuple[int, int]) -> str:
    return f"{_v4(p[0])}/{p[1]}" if p[1] < 32 else _v4(p[0])


def _nft_ports(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def nft_rule(r: Rule, verdict: str) -> str:
    parts = []
    if r.src[1]:
        parts.append(f"ip saddr {_cidr(r.src)}")
    if r.dst[1]:
        parts.append(f"ip daddr {_cidr(r.dst)}")
    has_ports = r.sport != PORT_ANY or r.dport != PORT_ANY
    if not r.any_proto:
        if has_ports and r.proto in (IPPROTO_TCP, IPPROTO_UDP):
            l4 = "tcp" if r.proto == IPPROTO_TCP else "udp"
            if r.sport != PORT_ANY:
                parts.append(f"{l4} sport {_nft_ports(r.sport)}")
            if r.dport != PORT_ANY:
                parts.append(f"{l4} dport {_nft_ports(r.dport)}")
            # `tcp dport` implies the protocol; with only wildcard ports say it plainly.
        else:
            parts.append(f"ip protocol {r.proto}")
    elif has_ports:
        raise ValueError("port range on any protocol: not expressible")
    if not parts:
        parts.append("meta protocol ip")
    return " ".join(parts) + " " + verdict


def _nft_verdict(i: int) -> str:
    return "accept" if action(i) == "allow" else "drop"


def _nft_table(iface: str, body: list[str], sets: list[str] | None = None, table: str = TABLE) -> str:
    out = [
        f"table netdev {table}",
        f"delete table netdev {table}",
        f"table netdev {table} {{",
        *(sets or []),
        "\tchain ingress {",
        f'\t\ttype filter hook ingress device "{iface}" priority 0; policy accept;',
        *(f"\t\t{ln}" for ln in body),
        "\t}",
        "}",
    ]
    return "\n".join(out) + "\n"


def nft_linear(rules: Sequence[Rule], iface: str, table: str = TABLE) -> str:
    return _nft_table(iface, [nft_rule(r, _nft_verdict(i)) for i, r in enumerate(rules)], table=table)


def _prefix_text(p: tuple[int, int]) -> str:
    return f"{_v4(p[0])}/{p[1]}"


def nft_blocklist(prefixes: Sequence[tuple[int, int]], iface: str, table: str = TABLE) -> str:
    """An interval set of the prefixes and one `ip saddr @bl drop`."""
    elems = ",\n".join(f"\t\t\t{_prefix_text(p)}" for p in prefixes)
    sets = ["\tset bl {", "\t\ttype ipv4_addr; flags interval; auto-merge;"]
    if prefixes:
        sets.append(f"\t\telements = {{\n{elems}\n\t\t}}")
    sets.append("\t}")
    return _nft_table(iface, ["ip saddr @bl drop"], sets, table=table)


def nft_blocklist_linear(prefixes: Sequence[tuple[int, int]], iface: str, table: str = TABLE) -> str:
    return _nft_table(iface, [f"ip saddr {_prefix_text(p)} drop" for p in prefixes], table=table)


def nft_delete(table: str = TABLE) -> str:
    return f"table netdev {table}\ndelete table netdev {table}\n"


def _ipt_ports(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}:{r[1]}"


def iptables_rule(r: Rule, iface: str, target: str, chain: str = "PREROUTING") -> str:
    parts = [f"-A {chain}", f"-i {iface}"]
    if r.src[1]:
        parts.append(f"-s {_prefix_text(r.src)}")
    if r.dst[1]:
        parts.append(f"-d {_prefix_text(r.dst)}")
    if not r.any_proto:
        parts.append(f"-p {r.proto}")
        if r.sport != PORT_ANY or r.dport != PORT_ANY:
            if r.proto not in (IPPROTO_TCP, IPPROTO_UDP):
                raise ValueError(f"port range on protocol {r.proto}: not expressible")
            parts.append("-m tcp" if r.proto == IPPROTO_TCP else "-m udp")
            if r.sport != PORT_ANY:
                parts.append(f"--sport {_ipt_ports(r.sport)}")
            if r.dport != PORT_ANY:
                parts.append(f"--dport {_ipt_ports(r.dport)}")
    elif r.sport != PORT_ANY or r.dport != PORT_ANY:
        raise ValueError("port range on any protocol: not expressible")
    parts.append(f"-j {target}")
    return " ".join(parts)


def iptables_linear(rules: Sequence[Rule], iface: str) -> str:
    """iptables-legacy-restore input: raw table, PREROUTING policy ACCEPT, one rule per ClassBench rule."""
    out = ["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i, r in enumerate(rules):
        out.append(iptables_rule(r, iface, "ACCEPT" if action(i) == "allow" else "DROP"))
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def iptables_flush() -> str:
    return "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
