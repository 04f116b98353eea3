"""A large set's prefixes as key columns, and the vectorised scan that reads them.

A set file of a million prefixes used to become a million `Prefix`
objects: 0.8 s to make them, more to pickle them, and the compiler then
turned each back into an integer key.  `PrefixColumn` keeps what the
compiler needs, the sorted keys `address << 8 | length` of each family
(IPv4 in a numpy array, IPv6 as Python integers, which numpy cannot
hold), and is still the sequence of `Prefix` that every other reader
expects: the objects are made on first iteration, and only by readers
that need them (`describe`, the reference evaluator, `check --json`).

The IPv4 scan works on the file's bytes with whole-array operations
(`scan_v4`).  It accepts exactly what the line-by-line scan accepts and
returns None for anything else, so that scan (rules/addrs.py) can report
the first bad line; the unit tests hold the two to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from xdpguard.rules.model import Prefix

# Key of an IPv4 prefix: address << 8 | length, as the compiler and the
# line scan (rules/addrs.py) make it.
_EIGHT = np.uint64(8)

# What str.strip() removes from an ASCII line.
_SPACES = b" \t\r\x0b\x0c\x1c\x1d\x1e\x1f"
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(_SPACES)] = True
_DOT, _SLASH, _NL = (ord(c) for c in "./\n")


class PrefixColumn(Sequence[Prefix]):
    """Sorted, distinct prefixes (IPv4 first) kept as keys; a read-only
    sequence of Prefix, equal to the tuple of the same prefixes."""

    __slots__ = ("v4", "v6", "_items", "_hash")

    def __init__(self, v4: np.ndarray | bytes, v6: Iterable[int] = ()) -> None:
        # From a pickle the IPv4 keys come as bytes (see __reduce__).
        keys = np.frombuffer(v4, dtype="<u8") if isinstance(v4, bytes) else np.asarray(v4, dtype=np.uint64)
        keys.flags.writeable = False
        self.v4: np.ndarray = keys  # sorted distinct keys
        self.v6: tuple[int, ...] = tuple(v6)  # sorted distinct keys
        self._items: tuple[Prefix, ...] | None = None
        self._hash: int | None = None

    @classmethod
    def of_keys(cls, v4: np.ndarray | Sequence[int], v6: Iterable[int]) -> PrefixColumn:
        """From keys in any order, duplicates allowed."""
        return cls(_sorted_distinct(np.asarray(v4, dtype=np.uint64)), sorted(set(v6)))

    @classmethod
    def union(cls, parts: Iterable[Sequence[Prefix]]) -> PrefixColumn:
        """The prefixes of all the parts (columns or any sequence of Prefix)."""
        v4: list[np.ndarray] = []
        v6: set[int] = set()
        loose: list[int] = []
        for part in parts:
            if isinstance(part, PrefixColumn):
                v4.append(part.v4)
                v6.update(part.v6)
                continue
            for p in part:
                if p.family == 4:
                    loose.append((p.addr << 8) | p.plen)
                else:
                    v6.add((p.addr << 8) | p.plen)
        v4.append(np.array(loose, dtype=np.uint64))
        return cls.of_keys(np.concatenate(v4), v6)

    def keys(self, family: int) -> np.ndarray | tuple[int, ...]:
        """The sorted keys (address << 8 | length) of one family."""
        return self.v4 if family == 4 else self.v6

    @property
    def families(self) -> frozenset[int]:
        return frozenset(f for f, n in ((4, len(self.v4)), (6, len(self.v6))) if n)

    def family_size(self, family: int) -> int:
        """How many prefixes of one family."""
        return len(self.v4) if family == 4 else len(self.v6)

    def items(self) -> tuple[Prefix, ...]:
        """The prefixes as objects (made once, on first use)."""
        if self._items is None:
            v4 = self.v4.tolist()
            self._items = tuple(Prefix(4, k >> 8, k & 0xFF) for k in v4) + tuple(
                Prefix(6, k >> 8, k & 0xFF) for k in self.v6
            )
        return self._items

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def __bool__(self) -> bool:
        return len(self) > 0

    @overload
    def __getitem__(self, i: int) -> Prefix: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Prefix, ...]: ...
    def __getitem__(self, i: int | slice) -> Prefix | tuple[Prefix, ...]:
        return self.items()[i]

    def __iter__(self) -> Iterator[Prefix]:
        return iter(self.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PrefixColumn):
            return self.v6 == other.v6 and bool(np.array_equal(self.v4, other.v4))
        if isinstance(other, tuple):
            return len(self) == len(other) and self.items() == other
        return NotImplemented

    def __hash__(self) -> int:
        # Equal to the tuple of its prefixes, so hashed as that tuple is.
        if self._hash is None:
            self._hash = hash(self.items())
        return self._hash

    def __repr__(self) -> str:
        return f"PrefixColumn({len(self.v4)} IPv4, {len(self.v6)} IPv6)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PrefixColumn, (self.v4.astype("<u8").tobytes(), self.v6))


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    # np.unique takes ten times as long here (numpy 2.4, a million keys).
    s = np.sort(keys)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


# Bytes per piece of a set file the scan works on at a time: its arrays then
# stay in the cache (a whole 15 MB file makes arrays of 100 MB, and the scan
# three times slower).
CHUNK_BYTES = 1 << 18


def scan_v4(data: bytes) -> tuple[np.ndarray, list[bytes]] | None:
    """(IPv4 keys in file order, IPv6 lines) of a set file's UTF-8 bytes,
    or None if some IPv4 line is not a well-formed address or CIDR.

    A line is set aside as IPv6 when it holds a colon before any `#`; the
    caller reads those lines one by one, comments and all.
    """
    v6_lines: list[bytes] = []
    if b":" in data:
        v4_lines = []
        for line in data.split(b"\n"):
            if b":" in line and b":" in line.partition(b"#")[0]:
                v6_lines.append(line)
            else:
                v4_lines.append(line)
        data = b"\n".join(v4_lines)
    keys: list[np.ndarray] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start + CHUNK_BYTES) + 1 or len(data)
        got = _scan_piece(data[start:end])
        if got is None:
            return None
        keys.append(got)
        start = end
    return (np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)), v6_lines


_COMMENT = re.compile(rb"#[^\n]*")


def _blank(m: re.Match[bytes]) -> bytes:
    return b" " * len(m.group())


def _scan_piece(data: bytes) -> np.ndarray | None:
    """The keys of whole IPv4 lines, or None."""
    if b"#" in data:  # comments become spaces: every byte keeps its place
        data = _COMMENT.sub(_blank, data)
    b = np.frombuffer(data, dtype=np.uint8)
    nl = b == _NL
    # Spaces are rare in set files: the bytes are searched for them before
    # each byte is classified.
    spaced = any(ch in data for ch in _SPACES)
    keep = ~(nl | _SPACE[b]) if spaced else ~nl
    pos = np.flatnonzero(keep)
    c = b[pos]
    n = len(c)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    digit = (c - np.uint8(ord("0"))) < 10
    dot = c == _DOT
    slash = c == _SLASH
    sep = dot | slash
    if not (digit | sep).all():
        return None
    adjacent = pos[1:] == pos[:-1] + 1
    if spaced:
        line = np.cumsum(nl, dtype=np.int32)  # every byte's line (a newline starts the next)
        same = line[pos[1:]] == line[pos[:-1]]  # character i+1 is on character i's line
        # What is left of a line is one word: nothing but spaces was dropped inside it.
        if (same & ~adjacent).any():
            return None
    else:
        same = adjacent  # only newlines were dropped
    first = np.concatenate(([True], ~same))
    last = np.concatenate((~same, [True]))
    # Separators stand between digits: none at a line's ends, no two together.
    if (sep & (first | last)).any() or (sep[1:] & sep[:-1]).any():
        return None
    # Runs of digits, each from a line's start or a separator to a line's end or a separator.
    starts = np.flatnonzero(first | np.concatenate(([False], sep[:-1])))
    ends = np.flatnonzero(last | np.concatenate((sep[1:], [False])))
    length = ends - starts + 1
    if (length > 3).any():  # "0001" and the like: the line scan says what is wrong
        return None
    # Four runs to a line, or five; dots before the second to fourth, a slash before the fifth.
    base = np.flatnonzero(first[starts])  # each line's first run
    nruns = np.diff(np.append(base, len(starts)))
    if not ((nruns == 4) | (nruns == 5)).all():
        return None
    is_len = np.zeros(len(starts), dtype=bool)
    is_len[base[nruns == 5] + 4] = True
    inner = np.ones(len(starts), dtype=bool)
    inner[base] = False
    if (slash[starts[inner] - 1] != is_len[inner]).any():
        return None
    zero = np.uint8(ord("0"))
    d0 = (c[starts] - zero).astype(np.int32)
    d1 = (c[np.minimum(starts + 1, n - 1)] - zero).astype(np.int32)
    d2 = (c[np.minimum(starts + 2, n - 1)] - zero).astype(np.int32)
    value = np.where(length == 1, d0, np.where(length == 2, d0 * 10 + d1, d0 * 100 + d1 * 10 + d2))
    # inet_pton refuses an octet above 255 or with a leading zero ("01").
    bad_octet = ~is_len & ((value > 255) | ((length > 1) & (d0 == 0)))
    if bad_octet.any() or (is_len & (value > 32)).any():
        return None
    o = [value[base + k].astype(np.uint64) for k in range(4)]
    addr = (o[0] << np.uint64(24)) | (o[1] << np.uint64(16)) | (o[2] << _EIGHT) | o[3]
    plen = np.full(len(base), 32, dtype=np.uint64)
    has_len = nruns == 5
    plen[has_len] = value[base[has_len] + 4].astype(np.uint64)
    host = (np.uint64(1) << (np.uint64(32) - plen)) - np.uint64(1)
    if (addr & host).any():
        return None
    return (addr << _EIGHT) | plen
