"""Set files as key columns (rules/prefixcol.py) and address fields walked by columns (rules/lpmwalk.py).

The vectorised scan must accept exactly the files the line-by-line scan
accepts, with the same prefixes, wherever the pieces it works on are cut;
a PrefixColumn must behave as the tuple of its prefixes; and an address
field walked by columns must compile to the same plan, byte for byte, as
the walk one prefix at a time.
"""

from __future__ import annotations

import ipaddress
import pickle
import random
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import large_ruleset, random_ruleset
from xdpguard.errors import RuleError
from xdpguard.rules import addrs, prefixcol
from xdpguard.rules import compile as comp
from xdpguard.rules.model import Action as A
from xdpguard.rules.model import AddrMatch, Direction, Match, Prefix, Rule, RuleSet
from xdpguard.rules.prefixcol import PrefixColumn

# ---------------------------------------------------------------------------
# The scan

_V4 = st.ip_addresses(v=4).map(str)
_V4_CIDR = st.ip_addresses(v=4).flatmap(
    lambda a: st.integers(0, 32).map(lambda n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)))
)
_SPACE = st.sampled_from(["", "", " ", "\t", "\r", "  \t"])
_GOOD = st.one_of(
    _V4,
    _V4_CIDR,
    _V4_CIDR,
    st.tuples(_SPACE, _V4_CIDR, _SPACE).map("".join),
    _V4_CIDR.map(lambda s: s.replace("/", "/0") if "/" in s else s),  # "/024" is /24 to both scans
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["", "# comment", "  ", "192.0.2.0/24 # c", "\t2001:db8::/32\r", "10.0.0.0/8#x:y"]),
)
_BAD_LINES = [
    "1.2.3.04", "01.2.3.4", "1.2.3.4.5", "1.2.3/4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4/",
    "1.2.3.4//8", "1.2.3.4/8/8", "256.1.1.1", "1.2.3.0/033", "1.2.3.4 5", "1.2.3.4/24", "0001.2.3.4",
    "1.2.3", "/8", "1.2.3.4 /8", "::1::2", "1.2.3.4/-1", "1.2.3.4x", "+1.2.3.4", "1.2.3.4/33", "0.0.0.1/0",
]  # fmt: skip
# Non-ASCII too: in a comment the scan blanks it, elsewhere the line scan decides.
_BAD = st.one_of(
    st.sampled_from(_BAD_LINES), st.text(alphabet="0123456789./# \t:\u00e9\u00a0\u2003", max_size=14)
)


def _agree(text: str) -> None:
    fast = addrs.scan_fast(text)
    try:
        slow = addrs.scan_slow(text, "f")
    except RuleError:
        assert fast is None, text
        return
    # Every good ASCII file takes the fast path (or big lists get slow), except
    # for numbers of four digits or more ("/0024"): the line scan reads those,
    # and the Unicode spaces it strips.
    slow_ok = re.search(r"\d{4}", text) or not text.isascii()
    assert fast is not None or slow_ok, f"a good file must take the fast path: {text!r}"
    if fast is None:
        return
    assert (sorted(int(k) for k in fast[0]), sorted(fast[1])) == (sorted(slow[0]), sorted(slow[1]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_GOOD, _GOOD, _GOOD, _BAD), max_size=20), st.integers(1, 40))
def test_the_scan_accepts_what_the_line_scan_accepts_however_cut(lines: list[str], chunk: int) -> None:
    saved = prefixcol.CHUNK_BYTES
    prefixcol.CHUNK_BYTES = chunk  # pieces cut at every place a line can be cut
    try:
        _agree("\n".join(lines))
        _agree("\n".join(lines) + "\n")
    finally:
        prefixcol.CHUNK_BYTES = saved


@pytest.mark.parametrize("bad", _BAD_LINES)
def test_every_bad_line_sends_the_file_to_the_line_scan(bad: str) -> None:
    for text in (bad, f"10.0.0.0/8\n{bad}\n192.0.2.1\n", f"  {bad}\t# c\n"):
        assert addrs.scan_fast(text) is None
        with pytest.raises(RuleError):
            addrs.scan_slow(text, "f")


def test_text_other_than_ascii_in_comments_keeps_the_fast_path() -> None:
    text = "# blocklist \u2013 r\u00e9sum\u00e9\n10.0.0.0/8 # \u00fcber\n192.0.2.1\n2001:db8::/32 # \u00e9\n"
    fast = addrs.scan_fast(text)
    assert fast is not None
    assert (sorted(int(k) for k in fast[0]), fast[1]) == tuple(sorted(k) for k in addrs.scan_slow(text, "f"))
    # Elsewhere the line scan decides: it strips a no-break space, and refuses a letter.
    assert addrs.scan_fast("10.0.0.0/8\u00a0\n") is None
    assert addrs.parse_set_file_text("10.0.0.0/8\u00a0\n", "f") == (Prefix(4, 10 << 24, 8),)
    with pytest.raises(RuleError):
        addrs.parse_set_file_text("10.0.0.\u00e90/8\n", "f")


def test_a_large_file_reads_as_the_line_scan_reads_it() -> None:
    rng = random.Random(7)
    lines = []
    for _ in range(20_000):
        plen = rng.choice([8, 16, 24, 32, 32])
        addr = rng.getrandbits(32) & (((1 << plen) - 1) << (32 - plen))
        text = str(ipaddress.ip_network((addr, plen)))
        lines.append(text if plen < 32 and rng.random() < 0.9 else text.split("/")[0])
    lines[100] = "# a comment"
    lines[200] = "2001:db8::/32"
    text = "\n".join(lines) + "\n"
    got = addrs.parse_set_file_text(text, "f")
    v4, v6 = addrs.scan_slow(text, "f")
    assert isinstance(got, PrefixColumn)
    assert got.v4.tolist() == sorted(set(v4)) and list(got.v6) == sorted(set(v6))
    # The first bad line is still named, however far down.
    lines[15_000] = "10.0.0.1/8"
    with pytest.raises(RuleError) as e:
        addrs.parse_set_file_text("\n".join(lines), "blocklist.netset")
    assert e.value.line == 15_001 and "host bits set" in str(e.value)


# ---------------------------------------------------------------------------
# The column as a sequence


def test_a_column_is_the_tuple_of_its_prefixes() -> None:
    items = (Prefix(4, 10 << 24, 8), Prefix(4, (192 << 24) | (2 << 8), 24), Prefix(6, 0x2001_0DB8 << 96, 32))
    v4 = [(p.addr << 8) | p.plen for p in items[:2]]
    col = PrefixColumn.of_keys(v4[::-1] * 2, [(items[2].addr << 8) | 32])  # any order, repeats
    assert col == items and tuple(col) == items and len(col) == 3 and col[1] == items[1]
    assert hash(col) == hash(items)
    assert (
        col.families == frozenset({4, 6})
        and addrs.family_count(col, 4) == 2
        and addrs.family_count(items, 6) == 1
    )
    back = pickle.loads(pickle.dumps(col))
    assert back == col and isinstance(back, PrefixColumn)
    joined = PrefixColumn.union([col, (Prefix(4, 0, 0), items[0])])
    assert tuple(joined) == (Prefix(4, 0, 0), *items)
    assert AddrMatch(col).families == frozenset({4, 6})
    assert not PrefixColumn.of_keys([], [])


# ---------------------------------------------------------------------------
# Walking by columns


def _both_ways(rs: RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(comp, "COLUMN_MIN", 10**9)
        one_by_one = comp.compile_ruleset(rs).to_bytes()
        m.setattr(comp, "COLUMN_MIN", 0)
        by_columns = comp.compile_ruleset(rs).to_bytes()
    assert by_columns == one_by_one


def test_random_rule_sets_compile_the_same_by_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(11)
    for _ in range(150):
        _both_ways(random_ruleset(rng, max_rules=16), monkeypatch)
    _both_ways(large_ruleset(random.Random(3), 5000), monkeypatch)


def _nested_prefixes(rng: random.Random, n: int) -> list[Prefix]:
    """Prefixes that nest deeply and repeat across calls (a small address pool)."""
    out = set()
    for _ in range(n):
        base = rng.choice([10 << 24, 172 << 24 | 16 << 16, 192 << 24 | 168 << 16, rng.getrandbits(8) << 24])
        plen = rng.choice([8, 12, 16, 20, 24, 26, 28, 30, 32])
        addr = (base | rng.getrandbits(24)) & (((1 << plen) - 1) << (32 - plen))
        out.add(Prefix(4, addr, plen))
    return sorted(out, key=addrs.prefix_key)


def test_sets_that_nest_and_overlap_compile_the_same_by_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    empty = random_ruleset(rng, max_rules=1)
    acts = [A.ALLOW, A.DROP]
    for _ in range(6):
        big = _nested_prefixes(rng, 3000)
        other = _nested_prefixes(rng, 1500) + rng.sample(big, 200)
        v6 = [Prefix(6, 0x2001_0DB8 << 96 | rng.getrandbits(32) << 64, 64) for _ in range(50)]
        col_a = PrefixColumn.of_keys([(p.addr << 8) | p.plen for p in big], [(p.addr << 8) | 64 for p in v6])
        col_b = PrefixColumn.of_keys([(p.addr << 8) | p.plen for p in other], [])
        conds = [
            AddrMatch(col_a, sets=("a",)),
            AddrMatch(col_b, sets=("b",)),
            AddrMatch(PrefixColumn.union([col_a, col_b]), sets=("a", "b")),
            AddrMatch((Prefix(4, 0, 0),)),
            AddrMatch(tuple(rng.sample(big, 3))),
            AddrMatch((Prefix(4, 10 << 24, 8), Prefix(4, 10 << 24, 16))),
            None,
        ]
        rules = tuple(
            Rule(f"r{i}", Match(src=rng.choice(conds), dst=rng.choice(conds)), rng.choice(acts), None, i + 1)
            for i in range(rng.randint(1, 70))
        )
        rs = replace(empty, ingress=Direction(A.ALLOW, rules))
        _both_ways(rs, monkeypatch)
