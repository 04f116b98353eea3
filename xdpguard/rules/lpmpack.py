"""An address field's LPM entries in their serialised form, decoded only when read.

A plan's address entries are (network address, prefix length, table
index) triples, sorted by address then length.  A million-prefix set
makes a million of them, and turning the plan's bytes back into Python
tuples took about a third of a second per plan; an apply decodes two
plans (the new one and the one the interface holds) and then mostly
only asks whether a field changed and what table it makes.  `PackedLpm`
keeps the bytes: equality of two packed fields is a byte comparison,
the address-table builder (rules/stride.py) reads the columns with
numpy, and the tuples are made only when something iterates them.

The byte layout is the plan's (one record per entry): the address in
big-endian (4 or 16 bytes), the prefix length (1 byte), the table index
(little-endian u32).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any, overload

Entry = tuple[int, int, int]

_PLEN_INDEX = struct.Struct("<BI")


def record_size(bits: int) -> int:
    """Bytes per entry for addresses of `bits` bits."""
    return bits // 8 + _PLEN_INDEX.size


def record_dtype(bits: int) -> Any:
    """The numpy dtype of one entry: address (`a`, or `hi` and `lo` for
    IPv6), prefix length `p`, table index `v`; for readers that take the
    columns whole (rules/stride.py, strideedit.py, compile.LpmArrays)."""
    import numpy as np  # lazy: the plan's own readers and writers need no numpy

    if bits > 64:
        return np.dtype([("hi", ">u8"), ("lo", ">u8"), ("p", "u1"), ("v", "<u4")])
    return np.dtype([("a", f">u{bits // 8}"), ("p", "u1"), ("v", "<u4")])


def pack(entries: Sequence[Entry], bits: int) -> bytes:
    """The serialised form of sorted entries (a PackedLpm's own bytes as they are)."""
    if isinstance(entries, PackedLpm) and entries.bits == bits:
        return entries.raw
    nb = bits // 8
    pk = _PLEN_INDEX.pack
    return b"".join(a.to_bytes(nb, "big") + pk(plen, i) for a, plen, i in entries)


def unpack(raw: bytes, bits: int) -> list[Entry]:
    nb = bits // 8
    step = record_size(bits)
    out: list[Entry] = []
    unpack_from = _PLEN_INDEX.unpack_from
    for off in range(0, len(raw), step):
        plen, i = unpack_from(raw, off + nb)
        out.append((int.from_bytes(raw[off : off + nb], "big"), plen, i))
    return out


class PackedLpm(Sequence[Entry]):
    """A read-only sequence of LPM entries over their serialised bytes."""

    __slots__ = ("raw", "bits", "_list")

    def __init__(self, raw: bytes, bits: int) -> None:
        if len(raw) % record_size(bits):
            raise ValueError(f"LPM entries of {bits}-bit addresses: {len(raw)} bytes is not whole records")
        self.raw = raw
        self.bits = bits
        self._list: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        """The entries as tuples (decoded once, on first use)."""
        if self._list is None:
            self._list = unpack(self.raw, self.bits)
        return self._list

    def __len__(self) -> int:
        return len(self.raw) // record_size(self.bits)

    @overload
    def __getitem__(self, i: int) -> Entry: ...
    @overload
    def __getitem__(self, i: slice) -> list[Entry]: ...
    def __getitem__(self, i: int | slice) -> Entry | list[Entry]:
        return self.entries()[i]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedLpm):
            return self.bits == other.bits and self.raw == other.raw
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and self.entries() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a list, which is unhashable

    def __repr__(self) -> str:
        return f"PackedLpm({len(self)} entries, {self.bits}-bit)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedLpm, (self.raw, self.bits))
