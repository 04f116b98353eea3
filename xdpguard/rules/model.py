"""The validated rule set: frozen dataclasses, no I/O, no kernel.

parse.py builds these from YAML; compile.py turns them into a map plan;
reference.py evaluates them directly.  Every value here is already
normalised (protocols are numbers, ports are inclusive ranges, ICMP names
are resolved per family), so consumers never re-interpret user syntax.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction

from xdpguard.rules.abi_consts import MAX_CONTINUE as MAX_CONTINUE
from xdpguard.rules.abi_consts import MAX_DYNGROUPS as MAX_DYNGROUPS
from xdpguard.rules.abi_consts import MAX_DYNREFS as MAX_DYNREFS
from xdpguard.rules.abi_consts import MAX_DYNSETS as MAX_DYNSETS
from xdpguard.rules.abi_consts import MAX_RULES as MAX_RULES

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132

PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP})
ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})

# Bit values of the TCP flags byte (offset 13 of the TCP header).
TCP_FLAG_BITS = {
    "fin": 0x01,
    "syn": 0x02,
    "rst": 0x04,
    "psh": 0x08,
    "ack": 0x10,
    "urg": 0x20,
    "ece": 0x40,
    "cwr": 0x80,
}

# The rule language's limits (docs/rules.md) are mostly the data plane's
# (abi_consts.py): rules per direction, `continue` rules per direction,
# dynamic sets per file, set references and groups per address field.
MAX_PREFIXES = 1_000_000 + 65_536  # across all sets; the contract is 1M, headroom for inline prefixes
DYNSET_DEFAULT_SIZE = 65536
DYNSET_MAX_SIZE = 16 * 1024 * 1024


class Action(StrEnum):
    ALLOW = "allow"
    DROP = "drop"
    # Rules only, with a rate limit: within the limit the packet goes on to
    # the next matching rule; over it, it is dropped.
    CONTINUE = "continue"


class Mode(StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"


class State(StrEnum):
    ESTABLISHED = "established"
    NEW = "new"


@dataclass(frozen=True, order=True)
class Prefix:
    """An IPv4 or IPv6 network: `addr` is the network address as an int."""

    family: int  # 4 or 6
    addr: int
    plen: int

    @property
    def bits(self) -> int:
        return 32 if self.family == 4 else 128

    def contains(self, family: int, addr: int) -> bool:
        if family != self.family:
            return False
        shift = self.bits - self.plen
        return (addr >> shift) == (self.addr >> shift)

    def __str__(self) -> str:
        net = (
            ipaddress.ip_network((self.addr, self.plen))
            if self.family == 4
            else ipaddress.IPv6Network((self.addr, self.plen))
        )
        return str(net)


@dataclass(frozen=True, order=True)
class PortRange:
    lo: int
    hi: int

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclass(frozen=True)
class TcpFlags:
    """Packet flags f match when (f & (set_mask | clear_mask)) == set_mask."""

    set_mask: int
    clear_mask: int

    def matches(self, flags: int) -> bool:
        return (flags & (self.set_mask | self.clear_mask)) == self.set_mask

    def __str__(self) -> str:
        names = [n for n, b in TCP_FLAG_BITS.items() if self.set_mask & b]
        names += ["!" + n for n, b in TCP_FLAG_BITS.items() if self.clear_mask & b]
        return ",".join(names)


@dataclass(frozen=True)
class AddrMatch:
    """A src or dst condition: the union of `prefixes` (static sets already
    expanded) and of the elements the `dynamic` sets hold when a packet arrives.

    `sets` keeps every set name referenced, for display.
    """

    # A tuple, or for a set file's a PrefixColumn (rules/prefixcol.py): the
    # same sorted sequence, kept as keys.
    prefixes: Sequence[Prefix]
    sets: tuple[str, ...] = ()
    dynamic: tuple[str, ...] = ()  # dynamic sets: membership is decided per packet
    # For a condition naming static sets only: a digest of what it stands for
    # (its own prefixes, the sets' names and their content digests), which the
    # parser computes, so that compile.rule_tokens need not read a million
    # prefixes to tell whether the condition changed; "" when unknown.  It
    # follows from the fields above, so it takes no part in equality.
    digest: str = field(default="", compare=False, repr=False)
    # The prefixes written in the condition itself, not taken from a set
    # (sorted), as the parser saw them; None when not known.  Descriptions
    # show the sets by name and only these, without reading the sets.
    inline: tuple[Prefix, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def families(self) -> frozenset[int]:
        if self.dynamic:  # a dynamic set can hold either family at any time
            return frozenset({4, 6})
        fams = getattr(self.prefixes, "families", None)  # a PrefixColumn knows without its objects
        return fams if fams is not None else frozenset(p.family for p in self.prefixes)


@dataclass(frozen=True)
class IcmpMatch:
    """(proto, type) pairs; `codes` None means any code."""

    types: frozenset[tuple[int, int]]
    codes: frozenset[int] | None = None


@dataclass(frozen=True)
class RateLimit:
    """Exactly one of pps/bps is set.  burst: packets for pps, bytes for bps.

    `pps` is exact (`rate: 5/minute` is 1/12 packet per second).
    """

    pps: Fraction | None
    bps: int | None  # bits per second
    burst: int
    per: str  # as written: "rule" | "source" | "source/N" | "source/A,B"
    # Bucket prefix lengths: per source 32 and 64; source/N min(N, 32) and N;
    # source/A,B A and B; 0 and 0 for per rule.
    per_prefix_v4: int
    per_prefix_v6: int
    block_for: float | None  # seconds, a whole number of ns (checked by the parser)


@dataclass(frozen=True)
class Match:
    src: AddrMatch | None = None
    dst: AddrMatch | None = None
    protos: frozenset[int] | None = None  # None: any protocol
    sport: tuple[PortRange, ...] | None = None
    dport: tuple[PortRange, ...] | None = None
    tcp_flags: TcpFlags | None = None
    icmp: IcmpMatch | None = None
    state: State | None = None

    @property
    def has_l4(self) -> bool:
        """True when the rule needs the L4 header (so never matches later fragments)."""
        return (
            self.sport is not None
            or self.dport is not None
            or self.tcp_flags is not None
            or self.icmp is not None
            or self.state is not None
        )


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    action: Action
    rate_limit: RateLimit | None
    line: int  # line of the rule in the rule file, for messages
    syn_cookies: bool = False  # ingress allow on TCP: the data plane answers SYNs with SYN cookies


@dataclass(frozen=True)
class Direction:
    default: Action
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class SetDef:
    name: str
    prefixes: Sequence[Prefix]  # a tuple, or a PrefixColumn for a set file
    file: str | None  # the set file, when loaded from one
    line: int
    # A dynamic set has no prefixes here: `xdpguard set` adds its elements at run time.
    dynamic: bool = False
    size: int = 0  # dynamic: the most elements it holds
    timeout: float | None = None  # dynamic: default lifetime of an element, seconds
    # Static: a digest of its content as parsed (of the file's bytes, for a set
    # file); it follows from the prefixes, so it takes no part in equality.
    digest: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class StateTimeouts:
    tcp: int = 300
    udp: int = 30
    icmp: int = 10


@dataclass(frozen=True)
class RuleSet:
    version: int
    mode: Mode
    non_ip: Action
    ndp: str  # "allow" | "rules"
    sets: tuple[SetDef, ...]
    ingress: Direction
    egress: Direction
    source: str = "<rules>"  # the rule file path
    state_timeouts: StateTimeouts = field(default_factory=StateTimeouts)
    flow_table_size: int = 65536
    limit_table_size: int = 65536
    # "file:line: warning: ..." for valid input that is probably a mistake (`check` prints them).
    warnings: tuple[str, ...] = ()
