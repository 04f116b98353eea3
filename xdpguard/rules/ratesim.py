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

The kernel's tables are LRUs of `limit_table_size` entries; the model does
not evict, which is exact as long as a test uses fewer sources than that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdpguard.rules.compile import LIMIT_BPS, NSEC, LimitPlan
from xdpguard.rules.packet import Packet


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
        key = (pkt.family, pkt.src)
        entry = self.blocked.get(key)
        if entry is None:
            return False
        if self.now_ns < entry[0]:
            return True
        del self.blocked[key]
        return False

    def admit(self, direction: str, rule_id: int, lim: LimitPlan, pkt: Packet) -> bool:
        """GCRA for one packet: True within the limit (the bucket moves), False over it.

        Over the limit on ingress, `block_for` blocks the packet's exact
        source from now on.
        """
        key: tuple[int, ...]
        if lim.per_source:
            plen = lim.plen4 if pkt.family == 4 else lim.plen6
            key = (rule_id, pkt.family, plen, _masked(pkt.family, pkt.src, plen))
        else:
            key = (rule_id,)
        cost = lim.cost_ns
        if lim.kind == LIMIT_BPS:
            cost = pkt.length * 8 * NSEC // lim.rate if lim.rate else 0
        now = self.now_ns
        nxt = max(self.buckets.get(key, 0), now) + cost
        if nxt - now > lim.burst_ns:
            if lim.block_s and direction == "ingress":
                self.blocked[(pkt.family, pkt.src)] = (now + lim.block_s * NSEC, rule_id)
            return False
        self.buckets[key] = nxt
        return True
