"""The dynamic-set filter's bits (xdpguard/datapath/dynfilter.py), without a kernel.

Whether the program computes the same bits is checked by the kernel tests
(tests/netns/test_dynsets_kernel.py compares verdicts with the reference on
random set contents; a bit the program reads but user space never set
would hide a member there).
"""

from __future__ import annotations

import random

import pytest

from xdpguard.datapath import dynfilter as F
from xdpguard.rules.abi_consts import DYNF_FAMILY_SHIFT, DYNF_WORDS
from xdpguard.rules.model import Prefix

V4 = 4 << DYNF_FAMILY_SHIFT
V6 = 6 << DYNF_FAMILY_SHIFT


def test_mix_is_xg_mix() -> None:
    # xg_mix of bpf/xdpguard.c, step by step, for one input
    x = 0x0123456789ABCDEF
    x ^= x >> 32
    x = (x * 0xD6E8FEB86659FD93) % 2**64
    x ^= x >> 32
    x = (x * 0xD6E8FEB86659FD93) % 2**64
    x ^= x >> 32
    assert F.mix(0x0123456789ABCDEF) == x


def test_an_address_is_keyed_by_its_24_or_48() -> None:
    assert list(F.keys(Prefix(4, 0xC0000201, 32)) or []) == [V4 | 0xC00002]
    assert list(F.keys(Prefix(4, 0xC0000200, 24)) or []) == [V4 | 0xC00002]
    a6 = 0x20010DB8_1234_5678_0000_0000_0000_0001
    assert list(F.keys(Prefix(6, a6, 128)) or []) == [V6 | 0x20010DB81234]
    assert F.raw_keys([(0xC0000201).to_bytes(4, "big")], [a6.to_bytes(16, "big")]) == [
        V4 | 0xC00002,
        V6 | 0x20010DB81234,
    ]


def test_a_shorter_prefix_covers_every_24_it_holds_or_all_bits() -> None:
    assert list(F.keys(Prefix(4, 0x0A000000, 16)) or []) == [V4 | (0x0A0000 + i) for i in range(256)]
    assert len(F.keys(Prefix(4, 0x0A000000, 8)) or []) == 1 << 16
    assert F.keys(Prefix(4, 0x0A000000, 7)) is None
    assert F.keys(Prefix(6, 0x20010DB8 << 96, 32)) is not None
    assert F.keys(Prefix(6, 0x2000 << 112, 31)) is None
    bits = F.Bits().add(1, [Prefix(4, 0, 0)])
    assert bits.full


@pytest.mark.parametrize("n", [10, 5000])
def test_the_python_and_numpy_paths_set_the_same_bits(n: int) -> None:
    rng = random.Random(n)
    v4 = [rng.getrandbits(32).to_bytes(4, "big") for _ in range(n)]
    v6 = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(n // 2)]
    prefixes = [Prefix(4, 0x0A000000, 20), Prefix(6, 0x20010DB8 << 96, 44)]
    salt = F.salt("blk")
    got = F._words(F.Bits().add(salt, prefixes, v4, v6))
    want = [0] * DYNF_WORDS
    for k in [k for p in prefixes for k in (F.keys(p) or [])] + F.raw_keys(v4, v6):
        h = F.mix(k ^ salt)
        want[h >> F.WORD_SHIFT] |= 1 << (h & 63)
    assert [int(w) for w in got.tolist()] == want


def test_sets_have_their_own_bits() -> None:
    a = F.Bits().add(F.salt("a"), [Prefix(4, 0xC0000201, 32)])
    b = F.Bits().add(F.salt("b"), [Prefix(4, 0xC0000201, 32)])
    assert a.small != b.small
