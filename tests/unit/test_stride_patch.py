"""Patched address tables equal tables built from scratch, and the kept runs are never trusted blindly.

xdpguard/rules/strideedit.py derives the runs of a changed field from the
runs of the old one; xdpguard/addrcache.py keeps runs by content in the
state directory and picks a kept, patched or fresh table.  Each test here
holds the result to stride.build() of the new entries, byte for byte: the
runs must be the same, so the nodes are.  Edits are random adds, removes
and new table indexes, including prefixes inside or around existing ones
(a run split in two, two runs merged), host routes, the /0, and edits
next to each other, for IPv4 and IPv6.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from xdpguard import addrcache
from xdpguard.rules import lpmpack, stride, strideedit

Pairs = dict[tuple[int, int], int]


def entries_of(pairs: Pairs) -> list[tuple[int, int, int]]:
    return sorted((a, p, v) for (a, p), v in pairs.items())


def packed(pairs: Pairs, width: int) -> lpmpack.PackedLpm:
    return lpmpack.PackedLpm(lpmpack.pack(entries_of(pairs), width), width)


def aligned(a: int, plen: int, width: int) -> int:
    return (a >> (width - plen)) << (width - plen) if plen else 0


def random_set(rng: random.Random, width: int, n: int, nvals: int) -> Pairs:
    base = rng.getrandbits(width)
    pairs: Pairs = {(0, 0): rng.randrange(nvals)}
    for _ in range(n):
        plen = rng.choice([rng.randrange(1, width + 1), width, width - 4, 8, 16, 24, 28])
        near = rng.choice([4, 12, 20, width])
        a = aligned((base ^ rng.getrandbits(near)) & ((1 << width) - 1), plen, width)
        pairs[(a, plen)] = rng.randrange(nvals)
    return pairs


def edit(rng: random.Random, pairs: Pairs, width: int, nvals: int) -> Pairs:
    """A few random edits; never the /0 (that change is refused, tested apart)."""
    out = dict(pairs)
    for _ in range(rng.randrange(1, 6)):
        keys = [k for k in out if k != (0, 0)]
        a, p = rng.choice(keys) if keys else (0, 0)
        op = rng.randrange(6)
        if op == 0 and keys:
            del out[(a, p)]  # runs merge with their neighbours
        elif op == 1 and keys:
            out[(a, p)] = rng.randrange(nvals)  # a new table index
        elif op == 2 and p < width:  # inside an existing prefix: a run split
            q = rng.randrange(p + 1, width + 1)
            out[(aligned(a | (rng.getrandbits(width) & ((1 << (width - p)) - 1)), q, width), q)] = (
                rng.randrange(nvals)
            )
        elif op == 3 and p > 1:  # around an existing prefix
            q = rng.randrange(1, p)
            out[(aligned(a, q, width), q)] = rng.randrange(nvals)
        elif op == 4:  # a host route
            out[(rng.getrandbits(width), width)] = rng.randrange(nvals)
        elif keys:  # the neighbour of an existing prefix, same length
            step = 1 << (width - p)
            out[((a + step) % (1 << width), p)] = rng.randrange(nvals)
    return out


def patched(old: Pairs, new: Pairs, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    po, pn = packed(old, width), packed(new, width)
    prefixes = strideedit.changed_prefixes(strideedit.Records.of(po, width), strideedit.Records.of(pn, width))
    if prefixes is None:
        return None
    starts, values = stride.intervals(po, width)
    return strideedit.patch(starts, values, strideedit.Records.of(pn, width), prefixes)


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("seed", range(60))
def test_patched_runs_and_table_equal_a_fresh_build(width: int, seed: int) -> None:
    rng = random.Random(seed * 2 + (width == 128))
    nvals = rng.choice([2, 3, 50])
    old = random_set(rng, width, rng.choice([3, 40, 400]), nvals)
    new = edit(rng, old, width, nvals)
    runs = patched(old, new, width)
    if old == new:
        assert runs is not None
    assert runs is not None, "a few edits off the /0 are patched"
    fresh = stride.intervals(entries_of(new), width)
    assert [int(x) for x in runs[0]] == [int(x) for x in fresh[0]]
    assert runs[1].tolist() == fresh[1].tolist()
    assert stride.from_intervals(*runs, width) == stride.build(entries_of(new), width)


@pytest.mark.parametrize("width", [32, 128])
def test_a_chain_of_patches_stays_equal(width: int) -> None:
    """Each table patched from the previous patched one, as applies follow each other."""
    rng = random.Random(width)
    cur = random_set(rng, width, 300, 4)
    runs = stride.intervals(entries_of(cur), width)
    for _ in range(30):
        nxt = edit(rng, cur, width, 4)
        prefixes = strideedit.changed_prefixes(
            strideedit.Records.of(entries_of(cur), width), strideedit.Records.of(entries_of(nxt), width)
        )
        assert prefixes is not None
        runs = strideedit.patch(*runs, strideedit.Records.of(entries_of(nxt), width), prefixes)
        assert stride.from_intervals(*runs, width) == stride.build(entries_of(nxt), width)
        cur = nxt


@pytest.mark.parametrize("width", [32, 128])
def test_edge_prefixes(width: int) -> None:
    top = (1 << width) - 1
    old: Pairs = {(0, 0): 1, (aligned(top, 8, width), 8): 2, (0, 1): 3}
    cases: list[Pairs] = [
        {**old, (top, width): 4},  # the last address: no run after it
        {**old, (0, width): 4},  # the first address
        {**old, (aligned(top, 1, width), 1): 5},  # a half of the space
        {k: v for k, v in old.items() if k != (0, 1)},  # a half removed
        {**old, (aligned(top, 8, width), 8): 1},  # becomes the value around it: runs merge
        {**old, (aligned(top, 9, width), 9): 2},  # same value as its parent: no new run
    ]
    for new in cases:
        runs = patched(old, new, width)
        assert runs is not None
        assert stride.from_intervals(*runs, width) == stride.build(entries_of(new), width)


def test_a_changed_default_or_many_changes_are_not_patched() -> None:
    old: Pairs = {(0, 0): 1, (0x0A000000, 8): 2}
    assert patched(old, {**old, (0, 0): 3}, 32) is None
    many = {**old, **{((0xC00000 + i) << 8, 24): 2 for i in range(strideedit.MAX_CHANGED + 1)}}
    assert patched(old, many, 32) is None
    assert patched(old, old, 32) is not None  # nothing changed: the same runs


# --------------------------------------------------------------------------
# packed entries


@pytest.mark.parametrize("width", [32, 128])
def test_packed_entries_read_as_the_list(width: int) -> None:
    ents = entries_of(random_set(random.Random(width), width, 200, 9))
    p = packed({(a, pl): v for a, pl, v in ents}, width)
    assert len(p) == len(ents) and list(p) == ents and p[3] == ents[3] and p[-2:] == ents[-2:]
    assert p == ents and ents == p and p == lpmpack.PackedLpm(lpmpack.pack(ents, width), width)
    assert p != ents[:-1] and lpmpack.pack(p, width) is p.raw
    assert stride.build(p, width) == stride.build(ents, width)
    with pytest.raises(ValueError):
        lpmpack.PackedLpm(p.raw[:-1], width)


# --------------------------------------------------------------------------
# the kept runs (addrcache)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def kept(state: Path) -> list[Path]:
    return sorted(p for p in (state / ".tables").iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("width", [32, 128])
def test_built_then_kept_then_patched(state: Path, width: int) -> None:
    rng = random.Random(7)
    old = random_set(rng, width, 300, 5)
    new = edit(rng, old, width, 5)
    t, how = addrcache.table(packed(old, width), width)
    assert how == "built" and t == stride.build(entries_of(old), width)
    t, how = addrcache.table(entries_of(old), width)  # a list or packed: the same content
    assert how == "cached" and t == stride.build(entries_of(old), width)
    t, how = addrcache.table(packed(new, width), width, base=packed(old, width))
    assert how == "patched" and t == stride.build(entries_of(new), width)
    t, how = addrcache.table(packed(new, width), width, base=packed(old, width))
    assert how == "cached"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept(state))


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[-3] ^= 0x40
    elif how == "truncate":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    else:  # intact hash, wrong contents: runs of a table of another width
        data = bytearray(b"garbage")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "empty", "garbage"])
def test_a_damaged_entry_is_ignored_and_rebuilt(state: Path, how: str) -> None:
    rng = random.Random(11)
    old = random_set(rng, 32, 300, 5)
    new = edit(rng, old, 32, 5)
    addrcache.table(packed(old, 32), 32)
    (only,) = kept(state)
    damage(only, how)
    # The base's runs are damaged: not patched from them, built (and kept again).
    t, how_made = addrcache.table(packed(new, 32), 32, base=packed(old, 32))
    assert how_made == "built" and t == stride.build(entries_of(new), 32)
    t, how_made = addrcache.table(packed(old, 32), 32)
    assert how_made == "built" and t == stride.build(entries_of(old), 32)
    t, how_made = addrcache.table(packed(old, 32), 32)
    assert how_made == "cached" and t == stride.build(entries_of(old), 32)


def test_runs_of_another_width_are_not_used(state: Path) -> None:
    pairs: Pairs = {(0, 0): 1, (0x0A000000, 8): 2}
    addrcache.table(packed(pairs, 32), 32)
    (only,) = kept(state)
    with pytest.raises(ValueError):
        addrcache._decode(only.read_bytes()[len(addrcache._MAGIC) + 32 :], 128)


def test_only_the_last_used_are_kept(state: Path) -> None:
    for i in range(addrcache.KEEP + 3):
        addrcache.table(packed({(0, 0): 1, (i << 24, 8): 2}, 32), 32)
    assert len(kept(state)) == addrcache.KEEP


def test_an_untrusted_state_dir_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # writable by others: no cache is read or written there
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(shared))
    pairs: Pairs = {(0, 0): 1, (0x0A000000, 8): 2}
    for _ in range(2):
        t, how = addrcache.table(packed(pairs, 32), 32)
        assert how == "built" and t == stride.build(entries_of(pairs), 32)
    assert not (shared / ".tables").exists()
