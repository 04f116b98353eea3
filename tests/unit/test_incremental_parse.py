"""Parsing that reuses earlier rules (rules/incremental.py) against a parse from scratch.

A ClassBench-like file is edited at random, one edit after another, the
memo carried along as `apply` carries it.  After every edit the segmented
parse must give exactly what parse_text gives (rules with their lines,
warnings, the signatures `plan` shows), or None when parse_text refuses
the file (the caller then parses it whole, for the message).  The memo
kept on disk by plancache is checked too: a damaged or planted one is
ignored.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path

import pytest

from xdpguard import plancache
from xdpguard.errors import RuleError
from xdpguard.rules import incremental
from xdpguard.rules.compile import compile_ruleset, rule_tokens
from xdpguard.rules.describe import summary_of
from xdpguard.rules.parse import parse_text

HEAD = """\
# a ClassBench-like rule file
version: 1
sets:
  nets: [10.0.0.0/8, "2001:db8::/32"]
ingress:
  default: drop
  rules:
"""
EGRESS = """\
egress:
  default: allow
  rules:
    - name: out-dns
      match: {proto: udp, dport: 53}
      action: allow
"""


def _rule(rng: random.Random, i: int) -> str:
    plen = rng.choice((8, 16, 24, 32))
    octets = [rng.randrange(256) if k < plen // 8 else 0 for k in range(4)]
    src = f"{'.'.join(map(str, octets))}/{plen}"
    kind = rng.randrange(10)
    if kind == 0:
        match = '{src: "@nets", proto: tcp}'
    elif kind == 1:
        # valid, with a warning (per source/16 groups IPv6 sources coarsely)
        return (
            f"    - name: r{i}\n      match: {{proto: tcp, dport: {rng.randrange(1, 65536)}}}\n"
            "      rate_limit: {pps: 100, per: source/16}\n      action: allow\n"
        )
    elif kind == 2:
        return f"    - name: r{i}\n      match:\n        src: {src}\n        proto: udp\n      action: drop\n"
    else:
        match = f"{{src: {src}, proto: tcp, dport: {rng.randrange(1, 65536)}}}"
    return f"    - name: r{i}\n      match: {match}\n      action: {rng.choice(('allow', 'drop'))}\n"


def _file(rng: random.Random, n: int) -> list[str]:
    return [_rule(rng, i) for i in range(n)]


def _edit(rng: random.Random, rules: list[str], serial: int) -> tuple[list[str], str]:
    out = list(rules)
    i = rng.randrange(len(out))
    kinds = "port port action delete insert move comment blank dup bad alias indent"
    kind = rng.choice(kinds.split())
    if kind == "port" and "dport: " in out[i]:
        head, _, tail = out[i].partition("dport: ")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        out[i] = f"{head}dport: {rng.randrange(1, 65536)}{tail[digits:]}"
    elif kind == "action":
        out[i] = out[i].replace("action: allow", "action: DROP").replace("action: drop", "action: allow")
    elif kind == "delete" and len(out) > 1:
        del out[i]
    elif kind == "insert":
        out.insert(i, _rule(rng, 10_000 + serial))
    elif kind == "move":
        out.insert(rng.randrange(len(out)), out.pop(i))
    elif kind == "comment":
        out[i] = out[i] + "    # a comment\n"
    elif kind == "blank":
        out[i] = "\n" + out[i]
    elif kind == "dup":
        out.insert(i, out[i])  # the same name twice: an error
    elif kind == "bad":
        out[i] = out[i].replace("proto: ", "proto: bogus")
    elif kind == "alias":
        out[i] = out[i].replace("action: ", "action: &a ", 1)
        j = rng.randrange(len(out))
        out[j] = out[j].replace("action: allow", "action: *a").replace("action: drop", "action: *a")
    elif kind == "indent":
        out[i] = "  " + out[i]
    return out, kind


def _cold(text: str) -> tuple[object, object] | None:
    try:
        rs = parse_text(text, "rules.yaml", Path("."))
    except RuleError:
        return None
    return rs, summary_of(rs)


@pytest.mark.parametrize("batch", [incremental.YAML_BATCH, 7])  # 7: every edit spans YAML passes
@pytest.mark.parametrize("seed", range(6))
def test_random_edits_parse_as_from_scratch(seed: int, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental, "YAML_BATCH", batch)
    rng = random.Random(seed)
    rules = _file(rng, 150)
    memo: incremental.Memo = {}
    reused = 0
    good = rules
    for serial in range(80):
        text = HEAD + "".join(rules) + EGRESS
        cold = _cold(text)
        got = incremental.parse(text, "rules.yaml", Path("."), memo)
        if cold is None:
            assert got is None, f"edit {serial}: the file is wrong, the ordinary parse must say why"
            rules = good  # the operator fixes it: the next edit starts from the last good file
        elif got is not None:
            rs, summary = cold
            assert got.ruleset == rs
            assert got.ruleset.warnings == rs.warnings  # type: ignore[attr-defined]
            assert [r.line for r in got.ruleset.ingress.rules] == [r.line for r in rs.ingress.rules]  # type: ignore[attr-defined]
            assert summary_of(got.ruleset, got.signatures) == summary
            assert compile_ruleset(got.ruleset).digest == compile_ruleset(rs).digest  # type: ignore[arg-type]
            # The memo's tokens are the rules' own: compiling with reuse relies on them.
            assert got.tokens["ingress"] == [rule_tokens(r) for r in rs.ingress.rules]  # type: ignore[attr-defined]
            memo = got.memo
            reused += got.reused
            good = rules
        rules, _ = _edit(rng, rules, serial)
    assert reused > 0


def test_a_parse_for_check_alone_gives_the_same_rule_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # `check` parses in batches with nothing to reuse and keeps no memo.
    monkeypatch.setattr(incremental, "YAML_BATCH", 16)
    text = HEAD + "".join(_file(random.Random(3), 300)) + EGRESS
    cold = _cold(text)
    got = incremental.parse(text, "rules.yaml", Path("."), {}, memoise=False)
    assert cold is not None and got is not None
    assert got.ruleset == cold[0] and got.ruleset.warnings == cold[0].warnings  # type: ignore[attr-defined]
    assert [r.line for r in got.ruleset.ingress.rules] == [r.line for r in cold[0].ingress.rules]  # type: ignore[attr-defined]
    assert got.memo == {"ingress": {}, "egress": {}} and got.fresh == 301


def test_one_changed_rule_is_the_only_one_parsed() -> None:
    rng = random.Random(7)
    rules = _file(rng, 200)
    first = incremental.parse(HEAD + "".join(rules) + EGRESS, "a.yaml", Path("."), {})
    assert first is not None and first.reused == 0
    rules[57] = rules[57].replace("action: allow", "action: drop").replace("action: drop", "action: allow", 0)
    rules.insert(3, "    # moved everything below down a line\n" + rules.pop(3))
    text = HEAD + "".join(rules) + EGRESS
    again = incremental.parse(text, "a.yaml", Path("."), first.memo)
    assert again is not None
    # the rules naming a set are parsed every time, as are the changed ones
    named = sum('"@nets"' in r for r in rules)
    assert again.fresh <= named + 2 + 1  # + the egress rule's own direction memo is warm too
    assert again.ruleset == parse_text(text, "a.yaml", Path("."))


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\ningress:\n  rules: [{name: a, match: {}, action: drop}]\n",  # flow style: parsed whole
        # items at the key's indentation
        "version: 1\ningress:\n  rules:\n  - name: a\n    match: {}\n    action: drop\n",
        "version: 1\ningress:\n  rules:\n    - name: a\n      match: {}\n      action: drop\n\n# end\n",
        "version: 1\ningress:\n  rules:\n    - {name: a, match: {}, action: drop}",  # no final line break
        "version: 1\nsets:\n  rules: [10.0.0.0/8]\n"
        "ingress:\n  rules:\n    - {name: a, match: {src: '@rules'}, action: drop}\n",
    ],
)
def test_shapes_parse_as_from_scratch(text: str) -> None:
    got = incremental.parse(text, "r.yaml", Path("."), {})
    assert got is not None and got.ruleset == parse_text(text, "r.yaml", Path("."))


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\ningress:\n\trules: []\n",  # a tab
        "version: 1\r\ningress: {}\r\n",  # CR LF
        "version: 1\ningress:\n  rules:\n    - xdpguard-rules-placeholder-0\n",  # the placeholder itself
        "version: 1\nnotes:\n  rules:\n    - x\n",  # a `rules:` that is no direction's
    ],
)
def test_unusual_files_go_to_the_ordinary_parse(text: str) -> None:
    assert incremental.parse(text, "r.yaml", Path("."), {}) is None


# ---- the memo on disk (plancache)

BIG = HEAD + "".join(_file(random.Random(3), 300)) + EGRESS


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "rules.yaml").write_text(BIG)
    return tmp_path / "rules.yaml"


def _memo_file(path: Path) -> Path:
    memo = plancache._memo_path(path)
    assert memo is not None
    return memo


def _fresh(path: Path) -> str:
    return compile_ruleset(parse_text(path.read_text(), str(path), path.parent)).digest


def test_a_copy_with_one_change_reuses_the_memo(state: Path) -> None:
    plancache.load(state)
    assert _memo_file(state).exists()
    other = state.with_name("copy.yaml")
    other.write_text(BIG.replace("action: allow", "action: drop", 1))
    memo = plancache._load_memo(_memo_file(other))
    assert sum(len(m) for m in memo.values()) > 250
    loaded = plancache.load(other)
    assert not loaded.cached and loaded.plan.digest == _fresh(other)
    assert loaded.summary == summary_of(parse_text(other.read_text(), str(other), other.parent))


def test_a_memo_keeps_equal_conditions_once(state: Path) -> None:
    plancache.load(state)
    memo = plancache._read_memo(_memo_file(state))
    fresh = incremental.parse(BIG, str(state), state.parent, {})
    assert fresh is not None and memo == fresh.memo  # the same rules, read back
    rules = [m.rule for m in memo["ingress"].values()]
    for attr in ("protos", "dport", "dst"):
        conds = [getattr(r.match, attr) for r in rules if getattr(r.match, attr) is not None]
        assert len({id(c) for c in conds}) == len(set(conds))  # one object per value
    assert len({r.match.protos for r in rules}) < len(rules) / 10


class _Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("touch /tmp/xdpguard-memo-pwned",))


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-20],
        lambda raw: raw[:200] + bytes([raw[200] ^ 1]) + raw[201:],
        lambda raw: b"garbage",
        lambda raw: b"",
    ],
)
def test_a_damaged_memo_is_ignored_and_rebuilt(state: Path, damage) -> None:  # type: ignore[no-untyped-def]
    plancache.load(state)
    memo = _memo_file(state)
    memo.write_bytes(damage(memo.read_bytes()))
    assert plancache._load_memo(memo) == {}
    state.write_text(BIG.replace("action: allow", "action: drop", 1))
    loaded = plancache.load(state)
    assert not loaded.cached and loaded.plan.digest == _fresh(state)
    assert plancache._load_memo(memo) != {}  # written again whole


def test_a_planted_memo_runs_nothing(state: Path) -> None:
    plancache.load(state)
    memo = _memo_file(state)
    buf = io.BytesIO()
    pickle.Pickler(buf).dump({"ingress": {"x": _Evil()}})
    payload = buf.getvalue()
    head = f"{plancache._compiler_hash()} {plancache._sha(payload)}\n".encode()
    memo.write_bytes(plancache._MEMO_MAGIC + head + payload)
    assert plancache._load_memo(memo) == {}
    assert not Path("/tmp/xdpguard-memo-pwned").exists()
    state.write_text(BIG.replace("action: allow", "action: drop", 1))
    assert plancache.load(state).plan.digest == _fresh(state)


def test_a_memo_of_another_parser_gives_way_to_the_last_good_one(state: Path) -> None:
    plancache.load(state)
    other = state.with_name("other.yaml")
    other.write_text(BIG.replace("action: allow", "action: drop", 1))
    plancache.load(other)
    stale = _memo_file(other)
    raw = stale.read_bytes()
    stale.write_bytes(raw.replace(plancache._compiler_hash().encode(), b"0" * 64, 1))
    os.utime(_memo_file(state))
    memo = plancache._load_memo(stale)
    assert sum(len(m) for m in memo.values()) > 250  # the first file's


def test_errors_after_a_warm_memo_are_the_ordinary_ones(state: Path) -> None:
    plancache.load(state)
    lines = BIG.splitlines(keepends=True)
    lines.insert(9, "    # one line more: every rule below moves\n")
    text = "".join(lines)
    for wrong in (
        text.replace("proto: udp", "proto: udpp", 1),
        text.replace("name: r7\n", "name: r6\n", 1),
        text.replace("action: drop", "action: dorp", 1),
    ):
        state.write_text(wrong)
        with pytest.raises(RuleError) as cold:
            parse_text(wrong, str(state), state.parent)
        with pytest.raises(RuleError) as warm:
            plancache.load(state)
        assert str(warm.value) == str(cold.value) and ":" in str(cold.value)
