"""A changed address table's runs, derived from the old table's runs and the entries that differ.

Building a table from a million entries spends most of its time on
intervals() (rules/stride.py): sorting two million cut points and
painting the prefixes.  When a set file changed by a few prefixes, the
runs outside those prefixes are the old ones, so only the address
ranges the changed entries cover are painted again and spliced into the
old runs; stride.from_intervals() then lays out the nodes.  The result
is the same runs, and so the same table, as a build from scratch: the
unit tests compare the two over random edits.

Why a range can be painted on its own: the longest-prefix-match value of
an address depends only on the entries containing it.  Take the changed
entries (added, removed, or with a new table index) and keep the maximal
ones (those inside no other changed entry).  Outside them no containing
entry changed, so the old runs hold there.  Inside a maximal prefix R,
the value comes from the new entries inside R or, where none covers,
from the longest entry that strictly contains R, which did not change
(it would be a changed entry containing R).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xdpguard.rules import lpmpack, stride

# Beyond this many changed entries, a build from scratch is as quick.
MAX_CHANGED = 4096


def packed(entries: stride.Entries, width: int) -> lpmpack.PackedLpm:
    """The entries in their serialised form, as a plan keeps them."""
    if isinstance(entries, lpmpack.PackedLpm):
        return entries
    return lpmpack.PackedLpm(lpmpack.pack(entries, width), width)


@dataclass(frozen=True)
class Records:
    """Serialised entries with a sortable key per entry: a key orders as
    (address, prefix length), the order the entries are in."""

    raw: bytes
    keys: np.ndarray  # uint64 address << 8 | length for IPv4; the 17 key bytes for IPv6
    vals: np.ndarray  # table index per entry
    width: int

    @classmethod
    def of(cls, entries: stride.Entries, width: int) -> Records:
        raw = packed(entries, width).raw
        if width > 63:
            # Fixed-width bytes compare in byte order, which is numeric order here.
            rec = np.frombuffer(raw, dtype=np.dtype([("k", "S17"), ("v", "<u4")]))
            return cls(raw, rec["k"], rec["v"], width)
        rec = np.frombuffer(raw, dtype=lpmpack.record_dtype(width))
        keys = (rec["a"].astype(np.uint64) << np.uint64(8)) | rec["p"].astype(np.uint64)
        return cls(raw, keys, rec["v"], width)

    def key(self, addrs: list[int], plens: list[int]) -> np.ndarray:
        """Keys of (address, length) pairs, comparable with self.keys."""
        if self.width > 63:
            return np.array(
                [a.to_bytes(16, "big") + bytes([p]) for a, p in zip(addrs, plens, strict=True)], dtype="S17"
            )
        return np.array([(a << 8) | p for a, p in zip(addrs, plens, strict=True)], dtype=np.uint64)

    def prefix(self, i: int) -> tuple[int, int]:
        """(address, prefix length) of entry i (read from the bytes: a key
        taken out of a numpy bytes array loses its trailing zero bytes)."""
        nb = self.width // 8
        off = i * lpmpack.record_size(self.width)
        return int.from_bytes(self.raw[off : off + nb], "big"), self.raw[off + nb]

    def find(self, addrs: list[int], plens: list[int]) -> np.ndarray:
        """Per pair, the index of its entry, or -1."""
        q = self.key(addrs, plens)
        if len(self.keys) == 0:
            return np.full(len(q), -1)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return np.where(self.keys[pos] == q, pos, -1)

    def columns(self, i0: int, i1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """stride.columns() of entries i0..i1-1."""
        step = lpmpack.record_size(self.width)
        return stride.columns(lpmpack.PackedLpm(self.raw[i0 * step : i1 * step], self.width), self.width)


def changed_prefixes(old: Records, new: Records) -> list[tuple[int, int]] | None:
    """The maximal prefixes (address, length) whose entries differ between
    old and new, in address order; None when there are more than
    MAX_CHANGED changed entries or the /0 changed (nothing to gain)."""
    ok, nk = old.keys, new.keys
    if len(ok) == 0 or len(nk) == 0:
        return None
    pos = np.minimum(np.searchsorted(ok, nk), len(ok) - 1)
    added = np.flatnonzero((ok[pos] != nk) | (old.vals[pos] != new.vals))  # a new key, or a new index
    pos = np.minimum(np.searchsorted(nk, ok), len(nk) - 1)
    removed = np.flatnonzero(nk[pos] != ok)
    if len(added) + len(removed) > MAX_CHANGED:
        return None
    found = [new.prefix(int(i)) for i in added] + [old.prefix(int(i)) for i in removed]
    out: list[tuple[int, int]] = []
    end = -1  # last address of the maximal prefix before
    for addr, plen in sorted(found):  # a containing prefix sorts before what it contains
        if plen == 0:
            return None
        if addr <= end:
            continue
        out.append((addr, plen))
        end = addr + (1 << (new.width - plen)) - 1
    return out


def patch(
    starts: np.ndarray, values: np.ndarray, new: Records, prefixes: list[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """The runs (as intervals() gives them) of `new`, from the runs of entries
    that differ from `new` only inside `prefixes` (changed_prefixes())."""
    width = new.width
    top = 1 << width
    wide = width > 63
    s_parts: list[np.ndarray] = []
    v_parts: list[np.ndarray] = []
    at = 0  # next old run not yet copied
    resume: tuple[int, np.ndarray] | None = None  # (address, value) of a run that goes on after a prefix
    for lo, plen in prefixes:
        hi = lo + (1 << (width - plen))
        # The new entries inside [lo, hi), and the value around them.
        i0, i1 = (int(x) for x in np.searchsorted(new.keys, new.key([lo, hi % top], [plen, 0])))
        if hi == top:
            i1 = len(new.keys)
        addrs, plens, vals = new.columns(i0, i1)
        if not (i1 > i0 and plens[0] == plen and addrs[0] == lo):
            addrs = np.concatenate([np.array([lo], dtype=addrs.dtype), addrs])
            plens = np.concatenate([[plen], plens]).astype(np.int64)
            vals = np.concatenate([[_containing(new, lo, plen)], vals]).astype(np.int64)
        sub = width - plen  # painted as a table of its own, the prefix being its /0
        rel = addrs - (lo if wide else np.uint64(lo))
        if wide and sub <= 63:
            rel = rel.astype(np.uint64)
        ls, lv = stride.intervals_of(rel, plens - plen, vals, sub)
        ls = ls.astype(object) + lo if wide else ls + np.uint64(lo)
        j0 = int(np.searchsorted(starts, lo, side="left"))
        j1 = int(np.searchsorted(starts, hi, side="left")) if hi < top else len(starts)
        if resume is not None and resume[0] < lo:
            s_parts.append(np.array([resume[0]], dtype=starts.dtype))
            v_parts.append(resume[1])
        s_parts += [starts[at:j0], ls]
        v_parts += [values[at:j0], lv]
        resume = None
        if hi < top and (j1 == len(starts) or starts[j1] != hi):
            # The old run that covers hi began inside the prefix: it resumes at
            # hi, unless the next prefix starts there.
            resume = (hi, values[j1 - 1 : j1])
        at = j1
    if resume is not None:
        s_parts.append(np.array([resume[0]], dtype=starts.dtype))
        v_parts.append(resume[1])
    s_parts.append(starts[at:])
    v_parts.append(values[at:])
    s = np.concatenate(s_parts)
    v = np.concatenate(v_parts).astype(values.dtype)
    keep = np.ones(len(v), dtype=bool)
    keep[1:] = v[1:] != v[:-1]
    return s[keep], v[keep]


def _containing(new: Records, lo: int, plen: int) -> int:
    """The table index of the longest entry strictly containing prefix (lo, plen)."""
    w = new.width
    found = new.find([(lo >> (w - p)) << (w - p) for p in range(plen)], list(range(plen)))
    hit = np.flatnonzero(found >= 0)
    if len(hit) == 0:
        raise ValueError("address table entries need a /0")
    return int(new.vals[found[hit[-1]]])
