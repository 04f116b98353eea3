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
block with a value change strictly inside it (and all 256 root nodes).
The build is vectorised with numpy: the levels work on the bytes of the
interval starts and on node ranks, so IPv6 needs no 128-bit arithmetic
there.  A million IPv4 prefixes take under a second, 100,000 IPv6 ones
about two (the interval step still uses Python integers for IPv6).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xdpguard.rules.lpmpack import PackedLpm, record_dtype
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


Entries = Sequence[tuple[int, int, int]]


def columns(entries: Entries, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(addrs, plens, values) of LPM entries as arrays: addresses are uint64
    up to 63 bits wide, Python integers (an object array) above."""
    if isinstance(entries, PackedLpm):
        if entries.bits != width:
            raise ValueError(f"{entries.bits}-bit entries for a {width}-bit table")
        return _packed_columns(entries.raw, width)
    if width > 63:  # Python integers: numpy has no 128-bit type
        addrs = np.array([a for a, _, _ in entries], dtype=object)
        plens = np.array([p for _, p, _ in entries], dtype=np.int64)
        vals = np.array([v for _, _, v in entries], dtype=np.int64)
        return addrs, plens, vals
    cols = np.array(entries, dtype=np.int64).reshape(-1, 3)
    return cols[:, 0].astype(np.uint64), cols[:, 1], cols[:, 2]


def _packed_columns(raw: bytes, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The record layout of rules/lpmpack.py (record_dtype).
    if width > 63:
        rec = np.frombuffer(raw, dtype=record_dtype(128))
        addrs = (rec["hi"].astype(object) << 64) | rec["lo"].astype(object)
    else:
        rec = np.frombuffer(raw, dtype=record_dtype(width))
        addrs = rec["a"].astype(np.uint64)
    return addrs, rec["p"].astype(np.int64), rec["v"].astype(np.int64)


def intervals(entries: Entries, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, values): where the longest-prefix-match value changes.

    `entries` are (addr, plen, value) with a /0 among them; the result
    starts at address 0 and no two neighbours share a value.  Starts are
    uint64 up to 63 bits wide, Python integers (an object array) above.
    """
    return intervals_of(*columns(entries, width), width)


def intervals_of(
    addrs: np.ndarray, plens: np.ndarray, vals: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """intervals() of entries given as columns()."""
    top = 1 << width
    if width > 63:
        ends = addrs + np.array([1 << (width - int(p)) for p in plens], dtype=object)  # exclusive
        inside = np.array([e for e in ends if e < top], dtype=object)
    else:
        ends = addrs + np.left_shift(np.uint64(1), (width - plens).astype(np.uint64))  # exclusive
        inside = ends[ends < top]
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
    """The nodes of one depth, by rank (their order in the address space)."""

    dense: np.ndarray  # bool per node
    parent_key: np.ndarray  # per node: its parent's rank * 256 + slot (sorted)
    run_key: np.ndarray  # per run: rank of its node * 256 + first slot, sorted
    run_child: np.ndarray  # per run: bool, the slot holds a child node
    run_leaf: np.ndarray  # per run: leaf value (when not a child)

    @property
    def run_node(self) -> np.ndarray:
        return self.run_key >> 8

    @property
    def run_start(self) -> np.ndarray:
        return self.run_key & 0xFF


def _uniq(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: numpy's hash-based unique is slower here)."""
    a = np.sort(a)
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _byte_matrix(starts: np.ndarray, width: int) -> np.ndarray:
    """The addresses as rows of big-endian bytes (N x width/8 uint8)."""
    n = width // 8
    if width > 63:
        raw = b"".join(int(x).to_bytes(n, "big") for x in starts)
        return np.frombuffer(raw, dtype=np.uint8).reshape(len(starts), n)
    return starts.astype(">u4").view(np.uint8).reshape(len(starts), n)


def _levels(starts: np.ndarray, values: np.ndarray, width: int) -> list[_Level]:
    """Every node below the root, level by level, with its runs.

    Works on the interval starts' bytes and on ranks (a node's position in
    address order), never on node ids: those are wider than 64 bits for
    IPv6, and numpy sorts and searches Python integers slowly.  A node at
    depth d (d address bytes above it) exists for every d-byte prefix with
    a start strictly inside it; the root (d = 1) has all 256.
    """
    nbytes = width // 8
    m = _byte_matrix(starts, width)
    # nz[i, j]: some byte j.. of start i is non-zero (column nbytes: none).
    nz = np.zeros((len(starts), nbytes + 1), dtype=bool)
    nz[:, :nbytes] = np.flip(np.logical_or.accumulate(np.flip(m != 0, axis=1), axis=1), axis=1)
    # Where the value at the start of each of the 256 root nodes comes from:
    # the last start at or before it.
    first = m[:, 0].astype(np.int64)
    below = np.searchsorted(first, np.arange(256), side="left")
    exact = np.zeros(256, dtype=bool)
    ok = below < len(starts)
    exact[ok] = (first[below[ok]] == np.arange(256)[ok]) & ~nz[below[ok], 1]
    root_last = np.where(exact, below, below - 1)

    levels: list[_Level] = []
    prev_child_key = np.zeros(0, dtype=np.int64)  # per start inside this level: parent key
    for depth in range(1, nbytes):
        idx = np.flatnonzero(nz[:, depth])  # starts strictly inside a node of this depth
        slot = m[idx, depth].astype(np.int64)
        unaligned = nz[idx, depth + 1]
        if depth == 1:
            rank = m[idx, 0].astype(np.int64)
            nnodes = ROOT_NODES
            parent_key = np.zeros(0, dtype=np.int64)
        else:
            if len(idx) == 0:
                break
            new = np.ones(len(idx), dtype=bool)
            new[1:] = np.any(m[idx[1:], :depth] != m[idx[:-1], :depth], axis=1)
            rank = np.cumsum(new) - 1
            nnodes = int(rank[-1]) + 1
            parent_key = prev_child_key[new]
        first_of = np.searchsorted(rank, np.arange(nnodes), side="left")
        # Run starts: slot 0 of every node, each slot an aligned start opens,
        # each slot holding a child and the slot after it.
        un_key = rank[unaligned] * 256 + slot[unaligned]
        after = un_key[slot[unaligned] < 255] + 1
        run_key = _uniq(np.concatenate([np.arange(nnodes, dtype=np.int64) * 256, rank * 256 + slot, after]))
        child_keys = _uniq(un_key)
        pos = np.minimum(np.searchsorted(child_keys, run_key), max(len(child_keys) - 1, 0))
        run_child = (child_keys[pos] == run_key) if len(child_keys) else np.zeros(len(run_key), dtype=bool)
        run_node = run_key >> 8
        run_start = run_key & 0xFF
        # Leaf value of a run: that of the last start at or before the run's
        # first address.  In address order, a start at a slot's first address
        # comes before the starts inside that slot: key node*512 + slot*2 + inside.
        order_key = rank * 512 + slot * 2 + unaligned
        last = np.searchsorted(order_key, run_node * 512 + run_start * 2, side="right") - 1
        in_node = last >= 0
        in_node[in_node] = rank[last[in_node]] == run_node[in_node]
        src = np.empty(len(run_key), dtype=np.int64)
        src[in_node] = idx[last[in_node]]
        if depth == 1:
            src[~in_node] = root_last[run_node[~in_node]]
        else:
            src[~in_node] = idx[first_of[run_node[~in_node]]] - 1
        run_leaf = values[src]
        counts = np.bincount(run_node, minlength=nnodes)
        dense = counts > SPARSE_RUNS
        if depth == 1:
            dense[:] = True
        levels.append(_Level(dense, parent_key, run_key, run_child, run_leaf))
        prev_child_key = un_key
    return levels


def _sparse_word(sid: np.ndarray) -> np.ndarray:
    """Index (in u32 words of the element array) of sparse nodes' first word."""
    return (sid >> 4) * (NODE_BYTES // 4) + (sid & 15) * (SPARSE_BYTES // 4)


def build(entries: Entries, width: int) -> Table:
    """The table for LPM entries (addr, plen, leaf value); a /0 must be present."""
    return from_intervals(*intervals(entries, width), width)


def from_intervals(starts: np.ndarray, values: np.ndarray, width: int) -> Table:
    """The table for the runs intervals() gives: the same runs, the same table."""
    if int(values.max(initial=0)) >= SPARSE:
        raise ValueError("leaf values must stay below 2**30")
    levels = _levels(starts, values, width)

    # Number the nodes: dense ones are elements 0.. (level by level: the
    # 256 root nodes first, in first-byte order), sparse ones are packed 16
    # to an element after them.
    n_dense = sum(int(lv.dense.sum()) for lv in levels)
    n_sparse = sum(int((~lv.dense).sum()) for lv in levels)
    refs: list[np.ndarray] = []
    next_dense, next_sparse = 0, n_dense * SPARSE_PER_NODE
    for lv in levels:
        ref = np.zeros(len(lv.dense), dtype=np.int64)
        nd = int(lv.dense.sum())
        ref[lv.dense] = CHILD | (next_dense + np.arange(nd, dtype=np.int64))
        ref[~lv.dense] = CHILD | SPARSE | (next_sparse + np.arange(len(lv.dense) - nd, dtype=np.int64))
        next_dense += nd
        next_sparse += len(lv.dense) - nd
        refs.append(ref)

    n_elems = n_dense + (n_sparse + SPARSE_PER_NODE - 1) // SPARSE_PER_NODE
    out = np.zeros(n_elems * (NODE_BYTES // 4), dtype=np.uint32)
    for depth, lv in enumerate(levels):
        slotval = lv.run_leaf.astype(np.int64)
        if lv.run_child.any():
            nxt = levels[depth + 1]
            pos = np.searchsorted(nxt.parent_key, lv.run_key[lv.run_child])
            slotval[lv.run_child] = refs[depth + 1][pos]
        slotval = slotval.astype(np.uint32)
        ref = refs[depth]
        run_node, run_start = lv.run_node, lv.run_start
        # Runs are sorted by (node, start); a run ends where the next begins.
        nruns = len(lv.run_key)
        last = np.ones(nruns, dtype=bool)
        last[:-1] = run_node[1:] != run_node[:-1]
        end = np.empty(nruns, dtype=np.int64)
        end[:-1] = run_start[1:]
        end[last] = 256
        run_dense = lv.dense[run_node]
        if run_dense.any():
            # Dense: each run fills its slots; nodes are in element order.
            elem = ref[run_node[run_dense]] & INDEX
            lens = (end - run_start)[run_dense]
            first = elem * DENSE_SLOTS + run_start[run_dense]
            total = int(lens.sum())
            rel = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
            out[np.repeat(first, lens) + rel] = np.repeat(slotval[run_dense], lens)
        sp = ~run_dense
        if sp.any():
            base_word = _sparse_word(ref[run_node[sp]] & INDEX)
            # Position of each run inside its node.
            node_first = np.searchsorted(run_node, run_node[sp], side="left")
            k = np.flatnonzero(sp) - node_first
            nodes_sp = np.flatnonzero(~lv.dense)
            # Fill every sparse node's 12 runs with its last run first (padding),
            # then the real runs over it.
            last_run = np.searchsorted(run_node, nodes_sp, side="right") - 1
            pad_word = _sparse_word(ref[nodes_sp] & INDEX)
            for r in range(SPARSE_RUNS):
                out[pad_word + r] = slotval[last_run]
            out[base_word + k] = slotval[sp]
            # bound[] follows val[] (byte 48 of a sparse node): write through a byte view.
            bytes_view = out.view(np.uint8)
            pad_byte = pad_word * 4 + SPARSE_BOUND_OFF
            for r in range(SPARSE_RUNS):
                bytes_view[pad_byte + r] = 255
            bytes_view[base_word * 4 + SPARSE_BOUND_OFF + k] = run_start[sp].astype(np.uint8)
    return Table(width, out.tobytes(), n_dense, n_sparse)
