"""The walk that gives each prefix of an address field its bitmap, one by one or by columns.

A packet address's bitmap is that of its longest matching prefix P: the
rules with no condition on the field, plus those owning P or a prefix
containing P.  Walking the prefixes in (address, length) order, a prefix
comes after everything containing it, so a stack of open prefixes gives
each one its parent.  A prefix's bitmap follows from its parent's and
from the rules owning it, so `Walk` hands out bitmap ids per (parent id,
owner id) pair and makes each distinct bitmap once.

A set file of a million IPv4 prefixes made this walk most of the compile
time (a second here), although nearly all of them are nested in nothing
but the /0 entry: `column_v4` finds those with whole-array operations
(a prefix is nested in another iff its address is at most the last
address of some earlier prefix, for prefixes never partly overlap) and
walks only the others, so it gives the very same entries.  The unit
tests compare the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# A two-level bitmap key, as compile.py's interner makes it (opaque here).
Key = Any


class Walk:
    """Bitmap ids of one field's prefixes: id 0 is the wildcard rules' bitmap."""

    def __init__(self, make_key: Callable[[int], Key], wildcard: int, own_vals: Sequence[int]) -> None:
        self.make_key = make_key
        self.wildcard = wildcard
        self.own_vals = own_vals  # owner id -> the bitmap of the rules owning such a prefix
        wkey = make_key(wildcard)
        self.bitmaps: list[Key] = [wkey]
        self._ids: dict[Key, int] = {wkey: 0}
        self._combo: dict[tuple[int, int], int] = {}

    def known(self, parent: int, oid: int) -> int | None:
        """The id for (parent id, owner id) when already made."""
        return self._combo.get((parent, oid))

    def child(self, parent: int, value: int, oid: int) -> int:
        """The id of the bitmap `value` (the parent's | the owners'): known by
        (parent id, owner id) after the first time."""
        ck = (parent, oid)
        bid = self._combo.get(ck)
        if bid is None:
            key = self.make_key(value)
            bid = self._ids.get(key)
            if bid is None:
                bid = self._ids[key] = len(self.bitmaps)
                self.bitmaps.append(key)
            self._combo[ck] = bid
        return bid

    def walk(
        self,
        keys: Sequence[int],
        oids: Sequence[int],
        width: int,
        stack: tuple[list[int], list[int], list[int]] | None = None,
    ) -> list[int]:
        """Bitmap ids of sorted keys (address << 8 | length) with their owner
        ids, starting from the open prefixes `stack` (last addresses, ids,
        bitmaps), which it updates."""
        ends, bms, vals = stack if stack is not None else ([], [], [])
        own_vals = self.own_vals
        out: list[int] = []
        for k, oid in zip(keys, oids, strict=True):
            a, plen = k >> 8, k & 0xFF
            while ends and a > ends[-1]:
                ends.pop()
                bms.pop()
                vals.pop()
            v = (vals[-1] if vals else self.wildcard) | own_vals[oid]
            bid = self.child(bms[-1] if bms else 0, v, oid)
            ends.append(a | ((1 << (width - plen)) - 1))
            bms.append(bid)
            vals.append(v)
            out.append(bid)
        return out


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, each value's index among them)."""
    import numpy as np  # lazy: only large address fields come here

    order = np.argsort(values, kind="stable")
    s = values[order]
    first = np.concatenate(([True], s[1:] != s[:-1])) if len(s) else np.zeros(0, dtype=bool)
    inv = np.empty(len(values), dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    return s[first], inv


def column_v4(w: Walk, keys: np.ndarray, oids: np.ndarray, value_of: Callable[[int], int]) -> np.ndarray:
    """Bitmap ids of sorted distinct IPv4 keys, the first of them the /0
    entry, with their owner ids: the same as `w.walk(keys, oids, 32)`.
    `value_of(id)` gives back the bitmap of an id.

    A prefix's ancestors (itself included) are the earlier prefixes whose
    last address is at or after its address, so their number, its depth,
    is its position less the prefixes that end before it.  Its parent is
    the last prefix one level up before it.  Level by level, each distinct
    (parent id, owner id) pair then gives one bitmap.
    """
    import numpy as np  # lazy: only large address fields come here

    n = len(keys)
    addr = keys >> np.uint64(8)
    plen = keys & np.uint64(0xFF)
    end = addr | ((np.uint64(1) << (np.uint64(32) - plen)) - np.uint64(1))
    depth = np.arange(1, n + 1) - np.searchsorted(np.sort(end), addr, side="left")
    out = np.empty(n, dtype=np.int64)
    o0 = int(oids[0])
    out[0] = w.child(0, w.wildcard | w.own_vals[o0], o0)  # the /0 entry, alone at depth 1
    by_depth = np.argsort(depth, kind="stable")  # each level in key order
    bounds = np.searchsorted(depth[by_depth], np.arange(1, int(depth.max()) + 2))
    upper = by_depth[bounds[0] : bounds[1]]
    nown = len(w.own_vals)
    for lvl in range(1, len(bounds) - 1):
        idx = by_depth[bounds[lvl] : bounds[lvl + 1]]
        parent = upper[np.searchsorted(upper, idx) - 1]
        pairs, inv = _distinct(out[parent] * nown + oids[idx])
        bids = []
        parent_vals: dict[int, int] = {}  # this level's parents' bitmaps, made once each
        for pair in pairs.tolist():
            p, o = divmod(pair, nown)
            bid = w.known(p, o)
            if bid is None:
                pv = parent_vals.get(p)
                if pv is None:
                    pv = parent_vals[p] = value_of(p)
                bid = w.child(p, pv | w.own_vals[o], o)
            bids.append(bid)
        out[idx] = np.asarray(bids, dtype=np.int64)[inv]
        upper = idx
    return out
