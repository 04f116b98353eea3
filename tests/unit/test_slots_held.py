"""maps.slots_held: which per-source slots `stats` counts as held, at the edges xg_slot_free draws.

The program takes a slot over when it was never used (tag 0) or when its
owner has been idle (TAT in the past) for at least the grace its tag's
low bits name (2^g ns).  `stats` must count exactly the others, or
`limiter.held` would say the table has room the program does not see.
"""

from __future__ import annotations

import numpy as np

from xdpguard.datapath import abi
from xdpguard.datapath.maps import _count_held, slots_held

NOW = 10**12
G = 20  # grace 2^20 ns


def _held(*slots: tuple[int, int], now: int = NOW) -> list[bool]:
    tag = np.array([t for t, _ in slots], dtype=np.uint64)
    tat = np.array([a for _, a in slots], dtype=np.uint64)
    return [bool(x) for x in slots_held(tag, tat, now)]


def test_the_grace_bits_are_the_programs() -> None:
    assert abi.TAG_GRACE_BITS == 6


def test_a_never_used_slot_is_free_whatever_its_tat() -> None:
    assert _held((0, 0), (0, NOW + 5), (0, abi.SLOT_CLAIMING)) == [False, False, False]


def test_an_owner_holds_its_slot_until_idle_for_its_grace() -> None:
    tag = (0xABCDEF << abi.TAG_GRACE_BITS) | G
    assert _held(
        (tag, NOW + 1),  # bucket not full yet
        (tag, NOW),  # full this instant: the grace starts
        (tag, NOW - (1 << G) + 1),  # idle one ns short of the grace
        (tag, NOW - (1 << G)),  # idle for exactly the grace: free
        (tag, 0),  # idle for ever
    ) == [True, True, True, False, False]


def test_a_slot_being_claimed_is_held() -> None:
    assert _held(((1 << abi.TAG_GRACE_BITS) | G, abi.SLOT_CLAIMING)) == [True]


def test_the_grace_comes_from_each_slots_own_tag() -> None:
    short, long_ = (1 << abi.TAG_GRACE_BITS) | 10, (2 << abi.TAG_GRACE_BITS) | 40
    idle = NOW - 5000  # past 2^10 ns, well inside 2^40 ns
    assert _held((short, idle), (long_, idle)) == [False, True]


def test_a_large_table_is_counted_in_pieces_without_losing_a_slot() -> None:
    # 300,001 slots (three pieces and a bit), every third held.
    n = 300_001
    tag = np.where(np.arange(n) % 3 == 0, np.uint64((5 << abi.TAG_GRACE_BITS) | G), np.uint64(0))
    words = np.empty(2 * n, dtype=np.uint64)
    words[0::2], words[1::2] = tag, NOW + 1
    assert _count_held(words, NOW) == 100_001
