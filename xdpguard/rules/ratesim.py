"""Rate limits and `block_for` on a simulated clock, exactly as the programs keep them.

The programs hold one GCRA bucket per rule (`per: rule`) or per masked
source address, a theoretical arrival time (TAT) in nanoseconds, and a
table of blocked sources with their expiry.  `LimiterSim` keeps the same
state in dictionaries, on a clock the caller moves (`now_ns`), so that the
Python classifiers (reference.py, classify.py) can say what a *sequence*
of packets gets: `xdpguard test` cases with `repeat`, and the kernel
differential tests, which run the programs on a test clock set to the same
instants.  It is the specification the BPF code (xg_within_limit,
xg_blocked_now, xg_block_source in bpf/xdpguard.c) is held to, not a
second implementation with its own ideas: the arithmetic is the
programs', integer for integer.

The kernel keeps per-source buckets in a table of `limit_table_size` slots
(and an overflow sketch beyond it); the model keeps one bucket per source,
which is exact as long as a test uses far fewer sources than that.  An
IPv6 source is blocked per /64, as the programs block it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdpguard.rules.abi_consts import LIMIT_BPS
from xdpguard.rules.compile import NSEC, LimitPlan
from xdpguard.rules.packet import Packet

_M64 = (1 << 64) - 1
MIX = 0xD6E8FEB86659FD93  # xg_mix's multiplier
BLOCK_V6_PLEN = 64  # XG_BLOCK_V6_PLEN: a block holds an IPv6 source's whole /64


def mix(x: int) -> int:
    """xg_mix of bpf/xdpguard.c: two multiply-xorshift rounds on a u64
    (the limiter's draws here; the dynamic-set filter's bits in
    datapath/dynfilter.py)."""
    x ^= x >> 32
    x = (x * MIX) & _M64
    x ^= x >> 32
    x = (x * MIX) & _M64
    return x ^ (x >> 32)


def _cost_at(rate: int, q: int, rem: int, tat: int) -> int:
    """xg_cost_at: q ns, plus one with probability rem / rate, drawn from the TAT."""
    u = mix(tat) & 0xFFFFFFFF
    thr = (rate >> 32) * u + (((rate & 0xFFFFFFFF) * u) >> 32)
    return q + (1 if thr < rem else 0)


def _block_key(family: int, addr: int) -> tuple[int, int]:
    return (family, _masked(family, addr, 32 if family == 4 else BLOCK_V6_PLEN))


def _masked(family: int, addr: int, plen: int) -> int:
    bits = 32 if family == 4 else 128
    plen = min(plen, bits)
    return (addr >> (bits - plen) << (bits - plen)) if plen else 0


@dataclass
class LimiterSim:
    """Buckets and blocks of one interface; every bucket starts full, nothing blocked."""

    now_ns: int = 0
    buckets: dict[tuple[int, ...], int] = field(default_factory=dict)  # key -> TAT
    blocked: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # -> (until, rule id)

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * NSEC)

    def blocked_now(self, pkt: Packet) -> bool:
        """Is the packet's source blocked?  An expired block is forgotten, as the program does."""
        key = _block_key(pkt.family, pkt.src)
        entry = self.blocked.get(key)
        if entry is None:
            return False
        if self.now_ns < entry[0]:
            return True
        del self.blocked[key]
        return False

    def admit(self, direction: str, rule_id: int, lim: LimitPlan, pkt: Packet) -> bool:
        """GCRA for one packet: True within the limit (the bucket moves), False over it.

        Over the limit on ingress, `block_for` blocks the packet's source (an
        IPv6 source's /64) from now on.
        """
        key: tuple[int, ...]
        if lim.per_source:
            plen = lim.plen4 if pkt.family == 4 else lim.plen6
            key = (rule_id, pkt.family, plen, _masked(pkt.family, pkt.src, plen))
        else:
            key = (rule_id,)
        q, rem = lim.cost_ns, 0
        if lim.kind == LIMIT_BPS and lim.rate:
            num = pkt.length * 8 * NSEC
            q, rem = num // lim.rate, num % lim.rate
        now = self.now_ns
        if lim.per_source and key not in self.buckets:
            # A source without a slot takes a free one: its bucket starts at
            # now, and the cost is drawn from that (xg_src_within).
            base = now
            nxt = base + _cost_at(lim.rate, q, rem, base)
            within = nxt - now <= lim.burst_ns
            self.buckets[key] = nxt if within else base
        else:
            old = self.buckets.get(key, 0)
            nxt = max(old, now) + _cost_at(lim.rate, q, rem, old)
            within = nxt - now <= lim.burst_ns
            if within:
                self.buckets[key] = nxt
        if not within and lim.block_ns and direction == "ingress":
            self.blocked[_block_key(pkt.family, pkt.src)] = (now + lim.block_ns, rule_id)
        return within
