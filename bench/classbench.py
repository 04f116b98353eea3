"""ClassBench filter sets and header traces as xdpguard rule files and frames.

Rule files (Taylor & Turner's ClassBench format, see
bench/data/README.md): one rule per line, first line =
highest priority, so file order is xdpguard's first-match order.  Fields:
source and destination prefix, source and destination port range
(`lo : hi`), protocol `0xVV/0xMM` (mask 0x00 = any protocol, 0xFF = exact)
and a flags value/mask.  **The flags column is ignored** (as PartitionSort,
TupleMerge, CutSplit and NeuroCuts do): ClassBench does not say which header
bits it is, and xdpguard's `tcp_flags` is not the same thing.  Classification
is therefore on the 5-tuple only.

ClassBench rules carry no verdict: rule i gets `allow` when i is even and
`drop` when odd (deterministic), and the default is `allow`.  In the three
1k sets every rule with a non-wildcard port range has protocol TCP or UDP
exactly, so the xdpguard rule (`proto: tcp|udp` plus ports) means the same
as the ClassBench one; a port range on any other protocol is refused.

Trace lines (`src dst sport dport proto flags rule_id`) become 64-byte
Ethernet + IPv4 frames with a TCP or UDP header for protocols 6 and 17 and
zero bytes after the IPv4 header for every other protocol (ports are then
meaningless, and no rule can look at them).  The trace's flags and rule id
columns are ignored; the oracle is a linear scan (`first_match`).

Protocol 51 (AH) is read as 253, a number reserved for experiments, in
rules and traces alike: xdpguard (like ip6tables for IPv6) classifies an AH
packet by the protocol AH carries, while ClassBench's AH packets carry no AH
header at all.  Renumbered, they keep ClassBench's meaning: an opaque
protocol matched by number (ipc1_1k has 2 such rules and 16 trace lines).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Where the ClassBench files are (bench/data/README.md lists them): $CLASSBENCH_DIR,
# else bench/data/classbench in the checkout (a copy, or a symlink to one).
DATA_DIR = Path(os.environ.get("CLASSBENCH_DIR") or Path(__file__).resolve().parent / "data" / "classbench")
SETS = ("acl1_1k", "fw1_1k", "ipc1_1k")
# The 10k sets; acl1_10k has no trace here, so its headers are drawn inside its rules.
SETS_10K = ("acl1_10k", "fw1_10k", "ipc1_10k")
FRAME_LEN = 64
MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")
IPPROTO_TCP = 6
IPPROTO_UDP = 17
PORT_ANY = (0, 65535)
IPPROTO_AH = 51
AH_STANDIN = 253  # see the module doc


def _proto(n: int) -> int:
    return AH_STANDIN if n == IPPROTO_AH else n


@dataclass(frozen=True)
class Rule:
    src: tuple[int, int]  # (address, prefix length)
    dst: tuple[int, int]
    sport: tuple[int, int]  # inclusive range
    dport: tuple[int, int]
    proto: int
    proto_mask: int  # 0x00 = any, 0xFF = exact
    flags: str  # kept verbatim, never used

    @property
    def any_proto(self) -> bool:
        return self.proto_mask == 0


@dataclass(frozen=True)
class Header:
    src: int
    dst: int
    sport: int
    dport: int
    proto: int


def _prefix(text: str) -> tuple[int, int]:
    a, _, plen = text.partition("/")
    n = int(plen)
    mask = (0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF
    return struct.unpack("!I", socket.inet_aton(a))[0] & mask, n


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    r = (int(lo), int(hi))
    if not 0 <= r[0] <= r[1] <= 65535:
        raise ValueError(f"bad port range {text!r}")
    return r


def parse_rule_line(line: str) -> Rule:
    f = line.rstrip("\n").rstrip("\t").split("\t")
    if len(f) < 6 or not f[0].startswith("@"):
        raise ValueError(f"not a ClassBench rule line: {line!r}")
    pv, _, pm = f[4].partition("/")
    return Rule(
        src=_prefix(f[0][1:]),
        dst=_prefix(f[1]),
        sport=_range(f[2]),
        dport=_range(f[3]),
        proto=_proto(int(pv, 16)),
        proto_mask=int(pm, 16),
        flags=f[5],
    )


def parse_rules(path: Path) -> list[Rule]:
    with path.open() as fh:
        return [parse_rule_line(ln) for ln in fh if ln.strip()]


def parse_trace_line(line: str) -> Header:
    f = line.split()
    if len(f) < 5:
        raise ValueError(f"not a ClassBench trace line: {line!r}")
    return Header(int(f[0]), int(f[1]), int(f[2]), int(f[3]), _proto(int(f[4])))


def parse_trace(path: Path, limit: int | None = None) -> list[Header]:
    out = []
    with path.open() as fh:
        for ln in fh:
            if not ln.strip():
                continue
            out.append(parse_trace_line(ln))
            if limit is not None and len(out) >= limit:
                break
    return out


def _in_prefix(addr: int, p: tuple[int, int]) -> bool:
    a, n = p
    return n == 0 or (addr >> (32 - n)) == (a >> (32 - n))


def matches(r: Rule, h: Header) -> bool:
    """ClassBench's 5-tuple match (flags ignored)."""
    return (
        _in_prefix(h.src, r.src)
        and _in_prefix(h.dst, r.dst)
        and r.sport[0] <= h.sport <= r.sport[1]
        and r.dport[0] <= h.dport <= r.dport[1]
        and (h.proto & r.proto_mask) == (r.proto & r.proto_mask)
    )


def first_match(rules: Sequence[Rule], h: Header) -> int | None:
    """Index of the first rule matching h (a linear scan: the oracle)."""
    for i, r in enumerate(rules):
        if matches(r, h):
            return i
    return None


def action(i: int) -> str:
    return "allow" if i % 2 == 0 else "drop"


def _v4(a: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", a))


def _ports(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f'"{r[0]}-{r[1]}"'


def rule_match(r: Rule) -> dict[str, str]:
    """The xdpguard `match` of one rule, as YAML scalars (empty = any IPv4 packet)."""
    m: dict[str, str] = {}
    # Always give both addresses: a /0 keeps the rule IPv4-only, as ClassBench's rules are.
    m["src"] = f"{_v4(r.src[0])}/{r.src[1]}"
    m["dst"] = f"{_v4(r.dst[0])}/{r.dst[1]}"
    has_ports = r.sport != PORT_ANY or r.dport != PORT_ANY
    if not r.any_proto:
        if r.proto_mask != 0xFF:
            raise ValueError(f"protocol mask 0x{r.proto_mask:02x} is neither 0x00 nor 0xFF")
        m["proto"] = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", 1: "icmp"}.get(r.proto, str(r.proto))
    if has_ports:
        if r.any_proto or r.proto not in (IPPROTO_TCP, IPPROTO_UDP):
            raise ValueError(f"port range on protocol {r.proto:#x}/{r.proto_mask:#x}: not expressible")
        if r.sport != PORT_ANY:
            m["sport"] = _ports(r.sport)
        if r.dport != PORT_ANY:
            m["dport"] = _ports(r.dport)
    return m


def to_yaml(rules: Sequence[Rule], name: str = "cb", all_drop: bool = False) -> str:
    """An xdpguard rule file: the rules in file order, alternating allow/drop, default allow.

    all_drop: every rule and the default drop, so that every frame ends in
    XDP_DROP and a receive-cost figure measures classification alone.
    """
    verdicts = "every rule and the default drop" if all_drop else "rule i is allow when even, drop when odd"
    out = [
        f"# Converted from ClassBench {name} by bench/classbench.py: flags column ignored,",
        f"# {verdicts}.",
        "version: 1",
        "ingress:",
        f"  default: {'drop' if all_drop else 'allow'}",
        "  rules:",
    ]
    for i, r in enumerate(rules):
        m = ", ".join(f"{k}: {v}" for k, v in rule_match(r).items())
        act = "drop" if all_drop else action(i)
        out += [f"    - name: {name}-{i}", f"      match: {{{m}}}", f"      action: {act}"]
    return "\n".join(out) + "\n"


def write_yaml(rules: Sequence[Rule], path: Path, name: str = "cb", all_drop: bool = False) -> Path:
    path.write_text(to_yaml(rules, name, all_drop))
    return path


def _csum(hdr: bytes) -> int:
    s = int(sum(struct.unpack(f"!{len(hdr) // 2}H", hdr)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(h: Header, mac_dst: bytes = MAC_DST, mac_src: bytes = MAC_SRC) -> bytes:
    """Ethernet + IPv4 (valid checksum) + TCP (SYN) / UDP / nothing, zero-padded to 64 bytes."""
    if h.proto == IPPROTO_TCP:
        l4 = struct.pack("!HHIIBBHHH", h.sport, h.dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    elif h.proto == IPPROTO_UDP:
        l4 = struct.pack("!HHHH", h.sport, h.dport, FRAME_LEN - 14 - 20, 0)
    else:
        l4 = b""
    payload = bytes(FRAME_LEN - 14 - 20 - len(l4))
    hdr = struct.pack(
        "!BBHHHBBHII", 0x45, 0, 20 + len(l4) + len(payload), 1, 0x4000, 64, h.proto, 0, h.src, h.dst
    )
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return mac_dst + mac_src + struct.pack("!H", 0x0800) + hdr + l4 + payload


def distinct(headers: Iterable[Header], limit: int | None = None) -> list[Header]:
    """Headers in trace order, each 5-tuple once."""
    seen: dict[Header, None] = {}
    for h in headers:
        seen.setdefault(h, None)
        if limit is not None and len(seen) >= limit:
            break
    return list(seen)


def load_set(name: str, data_dir: Path = DATA_DIR) -> tuple[list[Rule], list[Header]]:
    """Rules and trace headers of one set (the trace file is `<name>_trace`)."""
    return parse_rules(data_dir / name), parse_trace(data_dir / f"{name}_trace")


def drawn_headers(rules: Sequence[Rule], n: int, seed: int = 1) -> list[Header]:
    """n headers, each drawn inside a random rule (for sets without a trace).

    Addresses are random within the rule's prefixes and ports within its
    ranges; the protocol is the rule's, or TCP/UDP when it has none.  An
    earlier rule may match the header too: the oracle is first_match.
    """
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rules[rng.randrange(len(rules))]

        def addr(p: tuple[int, int]) -> int:
            a, plen = p
            return a | (rng.getrandbits(32 - plen) if plen < 32 else 0)

        proto = r.proto if not r.any_proto else rng.choice([IPPROTO_TCP, IPPROTO_UDP])
        out.append(
            Header(
                addr(r.src),
                addr(r.dst),
                rng.randint(*r.sport),
                rng.randint(*r.dport),
                proto,
            )
        )
    return out


def load_set_headers(name: str, n: int, data_dir: Path = DATA_DIR) -> tuple[list[Rule], list[Header], str]:
    """Rules, up to n distinct headers, and where the headers come from ("trace" or "drawn")."""
    rules = parse_rules(data_dir / name)
    trace = data_dir / f"{name}_trace"
    if trace.exists():
        return rules, distinct(parse_trace(trace), n), "trace"
    return rules, distinct(drawn_headers(rules, 2 * n), n), "drawn"
