"""Address tables: the longest-prefix-match entries of a field as a multibit trie.

The kernel's LPM trie walks one node per branching bit, so its depth, and
the cost of every lookup, grows with the number of prefixes (a 1M-prefix
set costs about five times a 10-prefix one).  This table does not: it is
a trie with fixed strides, 16 bits at the root and 8 below, so an IPv4
lookup reads at most 3 nodes and an IPv6 one at most 15, however many
prefixes there are, and stops at the first node whose slot is a leaf.

Layout (bpf/include/xdpguard.h, struct xg_node): one array map per table,
elements of 1,024 bytes.  Elements 0-255 are the root: element = first
address byte, slot = second (256 dense nodes, always present).  Below
the root a node is either

* dense: one element, 256 u32 slots indexed by the address byte;
* sparse: 64 bytes (16 share an element), up to 12 runs: `bound[k]` is
  the first byte of run k (bound[0] is 0), `val[k]` its slot; the run of
  byte b is the number of bounds 1..11 that are <= b (unused runs repeat
  the last one with bound 255, so the count needs no branch).

A slot is a leaf (the field-local bitmap index, below 2**30) or a child
reference: CHILD | index of a dense element, or CHILD | SPARSE | (element
* 16 + position) of a sparse node.

Building works on elementary intervals: the prefixes cut the address
space into runs of equal LPM value; a node exists for every 8-bit-aligned
block with a value change strictly inside it (and all 256 root nodes).  The build is vectorised
with numpy (uint64 for IPv4, Python ints in object arrays for IPv6), so a
million IPv4 prefixes take about a second.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from xdpguard.rules.nodes import (
    CHILD,
    DENSE_SLOTS,
    INDEX,
    NODE_BYTES,
    ROOT_NODES,
    SPARSE,
    SPARSE_BOUND_OFF,
    SPARSE_BYTES,
    SPARSE_PER_NODE,
    SPARSE_RUNS,
)

_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Table:
    """One address table: the bytes of its map elements, in element order."""

    width: int  # 32 or 128
    data: bytes  # n_elems * NODE_BYTES
    n_dense: int
    n_sparse: int

    @property
    def n_elems(self) -> int:
        return len(self.data) // NODE_BYTES

    def elements(self) -> list[bytes]:
        d = self.data
        return [d[i : i + NODE_BYTES] for i in range(0, len(d), NODE_BYTES)]

    def lookup(self, addr: int) -> int | None:
        """The leaf for addr, walking the nodes as the BPF program does."""
        d = self.data
        # The root: element = first byte, slot = second byte.
        b0 = addr >> (self.width - 8)
        ref = CHILD | b0
        for i in range(1, self.width // 8):
            b = (addr >> (self.width - 8 * (i + 1))) & 0xFF
            idx = ref & INDEX
            if ref & SPARSE:
                off = (idx >> 4) * NODE_BYTES + (idx & 15) * SPARSE_BYTES
                bounds = d[off + SPARSE_BOUND_OFF : off + SPARSE_BOUND_OFF + SPARSE_RUNS]
                j = sum(1 for k in range(1, SPARSE_RUNS) if bounds[k] <= b)
                ref = _U32.unpack_from(d, off + 4 * j)[0]
            else:
                ref = _U32.unpack_from(d, idx * NODE_BYTES + 4 * b)[0]
            if not ref & CHILD:
                return ref
        return None


def _arr(values: list[int] | np.ndarray, wide: bool) -> np.ndarray:
    return np.array(values, dtype=object) if wide else np.asarray(values, dtype=np.uint64)


def intervals(entries: list[tuple[int, int, int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, values): where the longest-prefix-match value changes.

    `entries` are (addr, plen, value) with a /0 among them; the result
    starts at address 0 and no two neighbours share a value.
    """
    wide = width > 63
    top = 1 << width
    if wide:
        addrs = _arr([a for a, _, _ in entries], wide)
        plens = np.array([p for _, p, _ in entries], dtype=np.int64)
        vals = np.array([v for _, _, v in entries], dtype=np.int64)
    else:
        cols = np.array(entries, dtype=np.int64).reshape(-1, 3)
        addrs, plens, vals = cols[:, 0].astype(np.uint64), cols[:, 1], cols[:, 2]
    if wide:
        span = np.array([1 << (width - int(p)) for p in plens], dtype=object)
    else:
        span = np.left_shift(np.uint64(1), (width - plens).astype(np.uint64))
    ends = addrs + span  # exclusive
    inside = ends[ends < top] if not wide else np.array([e for e in ends if e < top], dtype=object)
    cuts = np.concatenate([addrs, inside])
    starts = _uniq(cuts)
    if len(starts) == 0 or starts[0] != 0:
        raise ValueError("address table entries need a /0")
    painted = np.full(len(starts), -1, dtype=np.int64)
    # Paint shorter prefixes first: longer ones, painted later, win.  Prefixes
    # of one length are disjoint, so each length is one vectorised pass.
    order = np.argsort(plens, kind="stable")
    plens_sorted = plens[order]
    for plen in _uniq(plens_sorted):
        sel = order[plens_sorted == plen]
        lo = np.searchsorted(starts, addrs[sel], side="left")
        hi = np.searchsorted(starts, ends[sel], side="left")
        n = hi - lo
        total = int(n.sum())
        if total == 0:
            continue
        first = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        painted[first + np.arange(total)] = np.repeat(vals[sel], n)
    keep = np.concatenate([[True], painted[1:] != painted[:-1]])
    return starts[keep], painted[keep]


@dataclass
class _Level:
    nodes: np.ndarray  # node ids (the address bits above the node), sorted
    dense: np.ndarray  # bool per node
    run_node: np.ndarray  # per run: position of its node in `nodes`
    run_start: np.ndarray  # per run: first slot (0..255)
    run_child: np.ndarray  # per run: bool, the slot holds a child node
    run_leaf: np.ndarray  # per run: leaf value (when not a child)
    run_key: np.ndarray  # per run: node id * 256 + start (the child's node id)


def _node_slot(nodes: np.ndarray, slots: np.ndarray, wide: bool) -> np.ndarray:
    """node id * 256 + slot, in the node ids' dtype."""
    return nodes * 256 + (_arr(slots.tolist(), True) if wide else slots.astype(np.uint64))


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which keys are in sorted_set (works for object arrays too)."""
    if len(sorted_set) == 0 or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return np.asarray(sorted_set[pos] == keys, dtype=bool)


def _uniq(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: numpy's hash-based unique is slower here)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _ints(a: np.ndarray) -> np.ndarray:
    """Small values (< 2**63) of a uint64 or object array as int64."""
    return a.astype(np.int64)


def build(entries: list[tuple[int, int, int]], width: int) -> Table:
    """The table for LPM entries (addr, plen, leaf value); a /0 must be present."""
    wide = width > 63
    starts, values = intervals(entries, width)
    if int(values.max(initial=0)) >= SPARSE:
        raise ValueError("leaf values must stay below 2**30")
    levels: list[_Level] = []
    for depth in range(1, width // 8):
        s = width - 8 * depth  # bits a node of this level spans
        ss = s - 8  # bits a slot spans
        if wide:
            inside = np.array([int(b) & ((1 << s) - 1) != 0 for b in starts], dtype=bool)
            b = starts[inside]
            node_of = np.array([int(x) >> s for x in b], dtype=object)
            slot = np.array([(int(x) >> ss) & 0xFF for x in b], dtype=np.int64)
            aligned = np.array([int(x) & ((1 << ss) - 1) == 0 for x in b], dtype=bool)
        else:
            inside = (starts & np.uint64((1 << s) - 1)) != 0
            b = starts[inside]
            node_of = b >> np.uint64(s)
            slot = _ints((b >> np.uint64(ss)) & np.uint64(0xFF))
            aligned = (b & np.uint64((1 << ss) - 1)) == 0
        if depth == 1:
            nodes = _arr(list(range(ROOT_NODES)), wide)  # the root: every first byte
        else:
            nodes = _uniq(node_of)
        if len(nodes) == 0:
            break
        # Run starts per node: slot 0, every slot an aligned boundary opens,
        # every slot holding a child and the slot after it.
        un = ~aligned
        cand_node = np.concatenate([nodes, node_of, node_of[un & (slot < 255)]])
        cand_slot = np.concatenate([np.zeros(len(nodes), dtype=np.int64), slot, slot[un & (slot < 255)] + 1])
        run_key = _uniq(_node_slot(cand_node, cand_slot, wide))
        run_child = _member(run_key, _uniq(_node_slot(node_of[un], slot[un], wide)))
        if wide:
            run_node_id = np.array([int(k) >> 8 for k in run_key], dtype=object)
            run_start = np.array([int(k) & 0xFF for k in run_key], dtype=np.int64)
            addr_at = np.array([int(k) << ss for k in run_key], dtype=object)
        else:
            run_node_id = run_key >> np.uint64(8)
            run_start = _ints(run_key & np.uint64(0xFF))
            addr_at = run_key << np.uint64(ss)
        run_leaf = values[np.searchsorted(starts, addr_at, side="right") - 1]
        run_node = np.searchsorted(nodes, run_node_id)
        counts = np.bincount(run_node, minlength=len(nodes))
        dense = counts > SPARSE_RUNS
        if depth == 1:
            dense[:] = True
        levels.append(_Level(nodes, dense, run_node, run_start, run_child, run_leaf, run_key))

    # Number the nodes: dense ones are elements 0.. (level by level: the
    # 256 root nodes first, in first-byte order), sparse ones are packed 16
    # to an element after them.
    n_dense = sum(int(lv.dense.sum()) for lv in levels)
    n_sparse = sum(int((~lv.dense).sum()) for lv in levels)
    refs: list[np.ndarray] = []
    next_dense, next_sparse = 0, n_dense * SPARSE_PER_NODE
    for lv in levels:
        ref = np.zeros(len(lv.nodes), dtype=np.int64)
        nd = int(lv.dense.sum())
        ref[lv.dense] = CHILD | (next_dense + np.arange(nd, dtype=np.int64))
        ref[~lv.dense] = CHILD | SPARSE | (next_sparse + np.arange(len(lv.nodes) - nd, dtype=np.int64))
        next_dense += nd
        next_sparse += len(lv.nodes) - nd
        refs.append(ref)

    n_elems = n_dense + (n_sparse + SPARSE_PER_NODE - 1) // SPARSE_PER_NODE
    out = np.zeros(n_elems * (NODE_BYTES // 4), dtype=np.uint32)
    for depth, lv in enumerate(levels):
        slotval = lv.run_leaf.astype(np.int64)
        if lv.run_child.any():
            nxt = levels[depth + 1]
            pos = np.searchsorted(nxt.nodes, lv.run_key[lv.run_child])
            slotval[lv.run_child] = refs[depth + 1][pos]
        slotval = slotval.astype(np.uint32)
        ref = refs[depth]
        # Runs are sorted by (node, start); a run ends where the next begins.
        nruns = len(lv.run_key)
        last = np.ones(nruns, dtype=bool)
        last[:-1] = lv.run_node[1:] != lv.run_node[:-1]
        end = np.empty(nruns, dtype=np.int64)
        end[:-1] = lv.run_start[1:]
        end[last] = 256
        run_dense = lv.dense[lv.run_node]
        if run_dense.any():
            # Dense: each run fills its slots; nodes are in element order.
            elem = ref[lv.run_node[run_dense]] & INDEX
            lens = (end - lv.run_start)[run_dense]
            first = elem * DENSE_SLOTS + lv.run_start[run_dense]
            total = int(lens.sum())
            rel = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
            out[np.repeat(first, lens) + rel] = np.repeat(slotval[run_dense], lens)
        sp = ~run_dense
        if sp.any():
            sid = ref[lv.run_node[sp]] & INDEX
            base_word = (sid >> 4) * (NODE_BYTES // 4) + (sid & 15) * (SPARSE_BYTES // 4)
            # Position of each run inside its node.
            node_first = np.searchsorted(lv.run_node, lv.run_node[sp], side="left")
            k = np.flatnonzero(sp) - node_first
            nodes_sp = np.flatnonzero(~lv.dense)
            # Fill every sparse node's 12 runs with its last run first (padding),
            # then the real runs over it.
            last_run = np.searchsorted(lv.run_node, nodes_sp, side="right") - 1
            pad_base = refs[depth][nodes_sp] & INDEX
            pad_word = (pad_base >> 4) * (NODE_BYTES // 4) + (pad_base & 15) * (SPARSE_BYTES // 4)
            for r in range(SPARSE_RUNS):
                out[pad_word + r] = slotval[last_run]
            out[base_word + k] = slotval[sp]
            # bound[] follows val[] (byte 48 of a sparse node): write through a byte view.
            bytes_view = out.view(np.uint8)
            pad_byte = pad_word * 4 + SPARSE_BOUND_OFF
            for r in range(SPARSE_RUNS):
                bytes_view[pad_byte + r] = 255
            bytes_view[base_word * 4 + SPARSE_BOUND_OFF + k] = lv.run_start[sp].astype(np.uint8)
    return Table(width, out.tobytes(), n_dense, n_sparse)


def describe(t: Table) -> dict[str, Any]:
    return {"dense_nodes": t.n_dense, "sparse_nodes": t.n_sparse, "bytes": t.n_elems * NODE_BYTES}
