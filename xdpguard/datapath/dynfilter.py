"""The filter in front of the dynamic sets' tables: which bits an element sets.

A packet that is in no set costs the data plane a hash lookup and a trie
lookup for each set it is checked against: most of a packet's budget once
a feed of a million addresses is loaded.  So the interface has a filter,
the program map `dynf`: DYNF_WORDS 64-bit words (2^DYNF_LOG2_BITS bits, 2
MiB) in a plain array, whose lookups the verifier inlines.  For a set and
an address the program hashes the set's salt (salt(): from its name, so
both halves and every map object of the set agree) with the address's
family and IPv4 /24 or IPv6 /48 (DYNF_V4_PLEN, DYNF_V6_PLEN), and reads one
bit.  A clear bit proves the set holds nothing that matches, and its
lookups are skipped; a set bit sends the packet on to them, as before.

This module computes the bits (xg_mix of bpf/xdpguard.c) and writes them.
What keeps the filter from ever hiding a member:

- or_in() runs before the elements it stands for are inserted, and only
  sets bits;
- rebuild() writes exactly the bits of every element of every set: each
  word it writes keeps every live element's bit, so it only clears those
  of removed and expired elements and of dropped sets (callers hold the
  interface lock, so nothing is added meanwhile);
- a prefix sets the bit of every /24 (/48) it covers, or, past
  MAX_KEYS_PER_PREFIX of them, every bit of the filter;
- new programs that create the map (an upgrade, a lost pin) get it
  rebuilt before they replace the old ones (dynsets.rebuild_filter).

With n elements in distinct /24s, a non-member finds its bit set with
probability about 1 - exp(-n / 2^24): 6 % at a million.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from xdpguard.datapath import bpf as B
from xdpguard.rules.abi_consts import (
    DYNF_FAMILY_SHIFT,
    DYNF_LOG2_BITS,
    DYNF_V4_PLEN,
    DYNF_V6_PLEN,
    DYNF_WORDS,
)
from xdpguard.rules.model import Prefix
from xdpguard.rules.ratesim import MIX, mix

if TYPE_CHECKING:
    import numpy as np

MASK64 = (1 << 64) - 1
WORD_SHIFT = 64 - (DYNF_LOG2_BITS - 6)  # a hash's top bits pick the word, its low 6 the bit
MAX_KEYS_PER_PREFIX = 1 << 16  # a shorter prefix sets every bit instead
# Up to this many keys are hashed in Python; more go through numpy, whose
# import costs more than hashing a few thousand keys (`set add` of one
# element must stay quick).
NUMPY_FROM = 4096
FPLEN = {4: DYNF_V4_PLEN, 6: DYNF_V6_PLEN}


def salt(name: str) -> int:
    """A set's salt in the filter: from its name, so every half and every map
    object of the set agree (two names that collide only share bits)."""
    return mix(zlib.crc32(name.encode()) | 1 << 32)


def keys(p: Prefix) -> range | None:
    """The filter keys an element covers (its family above each /24 or /48),
    or None when it covers more than MAX_KEYS_PER_PREFIX of them."""
    fplen = FPLEN[p.family]
    n = 1 << max(0, fplen - p.plen)
    if n > MAX_KEYS_PER_PREFIX:
        return None
    first = (p.family << DYNF_FAMILY_SHIFT) | ((p.addr >> (p.bits - fplen)) & ~(n - 1))
    return range(first, first + n)


def raw_keys(v4: Sequence[bytes], v6: Sequence[bytes]) -> list[int]:
    """Keys of exact addresses given as the hashes' keys (network order)."""
    tag4, tag6 = 4 << DYNF_FAMILY_SHIFT, 6 << DYNF_FAMILY_SHIFT
    out = [tag4 | int.from_bytes(k, "big") >> (32 - DYNF_V4_PLEN) for k in v4]
    out += [tag6 | int.from_bytes(k[:8], "big") >> (64 - DYNF_V6_PLEN) for k in v6]
    return out


def _raw_keys_np(v4: Sequence[bytes], v6: Sequence[bytes]) -> np.ndarray:
    import numpy as np  # deliberately lazy: only bulk changes pay its import

    a4 = np.frombuffer(b"".join(v4), dtype=">u4").astype(np.uint64)
    a6 = np.frombuffer(b"".join(k[:8] for k in v6), dtype=">u8").astype(np.uint64)
    return np.concatenate(
        [
            (a4 >> np.uint64(32 - DYNF_V4_PLEN)) | np.uint64(4 << DYNF_FAMILY_SHIFT),
            (a6 >> np.uint64(64 - DYNF_V6_PLEN)) | np.uint64(6 << DYNF_FAMILY_SHIFT),
        ]
    )


class Bits:
    """Filter bits: a few words (word -> mask), all words, or every bit."""

    def __init__(self) -> None:
        self.small: dict[int, int] = {}
        self.words: np.ndarray | None = None
        self.full = False

    def add(
        self,
        set_salt: int,
        elements: Iterable[Prefix] = (),
        v4: Sequence[bytes] = (),
        v6: Sequence[bytes] = (),
    ) -> Bits:
        """Add the bits of one set's elements: `elements`, and exact addresses
        given as raw hash keys (v4, v6).  Returns self."""
        ks: list[int] = []
        for p in elements:
            r = keys(p)
            if r is None:
                self.full = True
                return self
            ks.extend(r)
        if self.full:
            return self
        if self.words is None and len(ks) + len(v4) + len(v6) + len(self.small) < NUMPY_FROM:
            for k in [*ks, *raw_keys(v4, v6)]:
                h = mix(k ^ set_salt)
                w = h >> WORD_SHIFT
                self.small[w] = self.small.get(w, 0) | (1 << (h & 63))
            return self
        import numpy as np  # deliberately lazy: only bulk changes pay its import

        if self.words is None:
            self.words = np.zeros(DYNF_WORDS, dtype=np.uint64)
            for w, m in self.small.items():
                self.words[w] |= np.uint64(m)
            self.small = {}
        x = np.concatenate([np.array(ks, dtype=np.uint64), _raw_keys_np(v4, v6)]) ^ np.uint64(set_salt)
        mul, s32 = np.uint64(MIX), np.uint64(32)
        with np.errstate(over="ignore"):
            x ^= x >> s32
            x *= mul
            x ^= x >> s32
            x *= mul
            x ^= x >> s32
        idx = (x >> np.uint64(WORD_SHIFT)).astype(np.intp)
        np.bitwise_or.at(self.words, idx, np.uint64(1) << (x & np.uint64(63)))
        return self


def _words(bits: Bits) -> np.ndarray:
    """All DYNF_WORDS words of `bits` as an array."""
    import numpy as np  # deliberately lazy: only bulk changes pay its import

    if bits.full:
        return np.full(DYNF_WORDS, MASK64, dtype=np.uint64)
    if bits.words is not None:
        return bits.words
    out = np.zeros(DYNF_WORDS, dtype=np.uint64)
    for w, m in bits.small.items():
        out[w] = np.uint64(m)
    return out


def or_in(fd: int, bits: Bits) -> int:
    """Set `bits` in the filter (nothing is cleared); returns the words changed."""
    with B.mapped(fd, DYNF_WORDS * 8, writable=True) as mm:  # the filter's words in place
        if not bits.full and bits.words is None:  # fewer than NUMPY_FROM words
            words = memoryview(mm).cast("Q")
            n = 0
            try:
                for w, m in bits.small.items():
                    if words[w] | m != words[w]:
                        words[w] |= m
                        n += 1
            finally:
                words.release()
            return n
        import numpy as np  # deliberately lazy: only bulk changes pay its import

        arr = np.frombuffer(mm, dtype=np.uint64)
        try:
            add = _words(bits)
            n = int(np.count_nonzero(arr | add != arr))
            arr |= add
        finally:
            del arr
        return n


def rebuild(fd: int, bits: Bits) -> int:
    """Make the filter hold exactly `bits` (those of every element of every
    set); returns the words changed."""
    import numpy as np  # deliberately lazy: only bulk changes pay its import

    with B.mapped(fd, DYNF_WORDS * 8, writable=True) as mm:  # the filter's words in place
        words = np.frombuffer(mm, dtype=np.uint64)
        try:
            want = _words(bits)
            idx = np.flatnonzero(words != want)
            words[idx] = want[idx]  # only words that change are stored
        finally:
            del words
        return len(idx)
