"""The address tables (xdpguard/rules/stride.py) answer longest-prefix match.

Each table is checked against a brute-force LPM over its entries, on random
prefix sets clustered so that nodes fill up (dense and sparse), on every
prefix's first and last address and the addresses just outside, and on the
shapes that stress the node format: exactly SPARSE_RUNS runs, one more,
a boundary at byte 255, a /128 fifteen levels down.  Lookups walk the
nodes the way the BPF program does (Table.lookup), so a wrong layout shows
here before it reaches the kernel (tests/netns/test_oracle_kernel.py).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdpguard.rules import stride


def brute(entries: list[tuple[int, int, int]], width: int, addr: int) -> int | None:
    best, best_len = None, -1
    for a, plen, v in entries:
        shift = width - plen
        if plen > best_len and (addr >> shift) == (a >> shift):
            best, best_len = v, plen
    return best


def table_of(pairs: dict[tuple[int, int], int], width: int, root: int = 0) -> tuple[list, stride.Table]:
    pairs = dict(pairs)
    pairs.setdefault((0, 0), root)
    entries = sorted((a, p, v) for (a, p), v in pairs.items())
    return entries, stride.build(entries, width)


def edges(entries: list[tuple[int, int, int]], width: int) -> list[int]:
    top = (1 << width) - 1
    out = [0, top]
    for a, p, _ in entries:
        last = a + (1 << (width - p)) - 1
        out += [a, last, (a - 1) & top, (last + 1) & top]
    return out


def random_pairs(rng: random.Random, width: int, n: int) -> dict[tuple[int, int], int]:
    base = rng.getrandbits(width)
    pairs = {}
    for _ in range(n):
        plen = rng.choice([rng.randrange(width + 1), width, width - 4, 8, 16, 24, 20, 28])
        near = rng.choice([4, 12, 20, width])
        a = (base ^ rng.getrandbits(near)) & ~((1 << (width - plen)) - 1) & ((1 << width) - 1)
        pairs[(a, plen)] = rng.randrange(1, 9)
    return pairs


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("seed", range(40))
def test_random_sets_match_brute_force(width: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + width)
    entries, t = table_of(random_pairs(rng, width, rng.randrange(60)), width)
    probes = edges(entries, width) + [rng.getrandbits(width) for _ in range(100)]
    for x in probes:
        assert t.lookup(x) == brute(entries, width, x), hex(x)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 5)), min_size=0, max_size=30
    ),
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
)
def test_property_v4(raw: list[tuple[int, int, int]], probes: list[int]) -> None:
    pairs = {(a & ~((1 << (32 - p)) - 1) & 0xFFFFFFFF, p): v for a, p, v in raw}
    entries, t = table_of(pairs, 32)
    for x in probes + edges(entries, 32):
        assert t.lookup(x) == brute(entries, 32, x)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x20010DB8 << 96, 0xFE80 << 112, 0]),
            st.integers(0, 2**96 - 1),
            st.integers(0, 128),
            st.integers(0, 5),
        ),
        min_size=0,
        max_size=25,
    ),
    st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=10),
)
def test_property_v6(raw: list[tuple[int, int, int, int]], probes: list[int]) -> None:
    """Prefixes clustered under a few /32s, so nodes deep in the trie share parents."""
    top = (1 << 128) - 1
    pairs = {((base | low) & ~((1 << (128 - p)) - 1) & top, p): v for base, low, p, v in raw}
    entries, t = table_of(pairs, 128)
    for x in probes + edges(entries, 128):
        assert t.lookup(x) == brute(entries, 128, x)


def test_only_the_default_is_the_bare_root() -> None:
    entries, t = table_of({}, 32, root=7)
    assert (t.n_dense, t.n_sparse, t.n_elems) == (stride.ROOT_NODES, 0, stride.ROOT_NODES)
    assert all(t.lookup(x) == 7 for x in (0, 1, 0x7F000001, 0xFFFFFFFF))


def test_sparse_node_holds_exactly_its_run_limit_then_goes_dense() -> None:
    # Under 10.0.0.0/24: k single /32s at even last bytes give 2k+1 runs in the
    # level-3 node (the /32 itself and the gap after it).
    def build_with(k: int) -> stride.Table:
        pairs = {(0x0A000000, 24): 1}
        for i in range(k):
            pairs[(0x0A000000 + 2 * i + 1, 32)] = 2
        entries, t = table_of(pairs, 32)
        for x in range(0x0A000000, 0x0A000100):
            assert t.lookup(x) == brute(entries, 32, x), hex(x)
        return t

    runs_ok = (stride.SPARSE_RUNS - 1) // 2  # 2k + 1 <= 12
    # The 256 root nodes are always dense; the 10.0/16 and 10.0.0/24 nodes
    # below have 2 and 2k+1 runs.
    t = build_with(runs_ok)
    assert (t.n_dense, t.n_sparse) == (stride.ROOT_NODES, 2)
    t2 = build_with(runs_ok + 1)
    assert (t2.n_dense, t2.n_sparse) == (stride.ROOT_NODES + 1, 1)


def test_run_starting_at_byte_255_and_padding() -> None:
    pairs = {(0x0A0000FF, 32): 3, (0x0A000080, 25): 2}
    entries, t = table_of(pairs, 32, root=1)
    for x in [0x0A000000, 0x0A00007F, 0x0A000080, 0x0A0000FE, 0x0A0000FF, 0x0A000100]:
        assert t.lookup(x) == brute(entries, 32, x), hex(x)


def test_ipv6_host_route_fifteen_levels_down() -> None:
    a = 0x20010DB8_00000000_00000000_00000001
    entries, t = table_of({(a, 128): 5, (a & ~((1 << 64) - 1), 64): 4}, 128, root=1)
    assert t.lookup(a) == 5
    assert t.lookup(a + 1) == 4
    assert t.lookup(a ^ (1 << 100)) == 1
    # below the root (two bytes), one node per address byte at most
    assert t.n_dense + t.n_sparse <= stride.ROOT_NODES + 14


def sparse_nodes(t: stride.Table) -> list[tuple[tuple[int, ...], list[int]]]:
    """(val, bound) of every sparse node the table references."""
    out = []
    for el in range(t.n_dense):
        for s in struct.unpack_from("<256I", t.data, el * stride.NODE_BYTES):
            if s & stride.CHILD and s & stride.SPARSE:
                sid = s & stride.INDEX
                off = (sid >> 4) * stride.NODE_BYTES + (sid & 15) * stride.SPARSE_BYTES
                vals = struct.unpack_from(f"<{stride.SPARSE_RUNS}I", t.data, off)
                bounds = t.data[
                    off + stride.SPARSE_BOUND_OFF : off + stride.SPARSE_BOUND_OFF + stride.SPARSE_RUNS
                ]
                out.append((vals, list(bounds)))
    return out


def test_sparse_node_layout_is_the_headers() -> None:
    # 10.0.0.5/32 under the /0: the root is dense; below it, the 10.0/16 and
    # 10.0.0/24 nodes are sparse.  The last one's runs: [0..4]=1, [5]=9, [6..]=1.
    entries, t = table_of({(0x0A000005, 32): 9}, 32, root=1)
    assert (t.n_dense, t.n_sparse) == (stride.ROOT_NODES, 2)
    pad = [255] * (stride.SPARSE_RUNS - 3)
    ((vals, bounds),) = sparse_nodes(t)  # the root references only the 10.0/16 node
    assert bounds[:2] == [0, 1] and bounds[2:] == [255] * (stride.SPARSE_RUNS - 2)
    # Follow the child reference in run 0 down to the /24 node.
    while vals[0] & stride.CHILD:
        sid = vals[0] & stride.INDEX
        off = (sid >> 4) * stride.NODE_BYTES + (sid & 15) * stride.SPARSE_BYTES
        vals = struct.unpack_from(f"<{stride.SPARSE_RUNS}I", t.data, off)
        bounds = list(
            t.data[off + stride.SPARSE_BOUND_OFF : off + stride.SPARSE_BOUND_OFF + stride.SPARSE_RUNS]
        )
    assert bounds == [0, 5, 6, *pad]
    assert vals == (1, 9, 1, *[1] * len(pad))


def test_entries_without_a_default_are_refused() -> None:
    with pytest.raises(ValueError, match="/0"):
        stride.build([(0x0A000000, 8, 1)], 32)


def test_leaf_values_must_fit_below_the_reference_bits() -> None:
    with pytest.raises(ValueError, match="2\\*\\*30"):
        stride.build([(0, 0, stride.SPARSE)], 32)


def test_a_big_blocklist_stays_small_and_exact() -> None:
    """50,000 prefixes sharing one value (a set behind one rule) inside a few
    shorter rule prefixes: nested prefixes with equal values cost no nodes."""
    rng = random.Random(5)
    pairs: dict[tuple[int, int], int] = {}
    for _ in range(50_000):
        plen = rng.choice((32, 32, 32, 24, 28, 20, 16))
        pairs[(rng.getrandbits(32) & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF, plen)] = 1
    for a, p in [(0x0A000000, 8), (0xC0A80000, 16)]:
        pairs[(a, p)] = 2
    entries, t = table_of(pairs, 32)
    assert t.n_elems * stride.NODE_BYTES < 64 * len(pairs) + 2_000_000
    by = {(a, p): v for a, p, v in entries}
    sample = rng.sample(entries, 2000)
    for x in [rng.getrandbits(32) for _ in range(2000)] + [a for a, _, _ in sample]:
        assert t.lookup(x) == lpm_by_length(by, x)


def lpm_by_length(by: dict[tuple[int, int], int], addr: int) -> int | None:
    for p in range(32, -1, -1):
        v = by.get((addr & ~((1 << (32 - p)) - 1) & 0xFFFFFFFF, p))
        if v is not None:
            return v
    return None
