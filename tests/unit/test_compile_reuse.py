"""Compiling with fields taken from an earlier plan (compile.Reuse) against a full compile.

A rule set is compiled, then edited (one rule's condition on one field, a
rule's action, a rule added), and compiled again twice: from scratch, and
with every field whose column digest is unchanged taken from the first
plan.  The two plans must be byte for byte the same.  Random sets of a few
rules and of more than 4,096 (two groups), and ClassBench acl1_1k/acl1_10k
when the data is there.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from bench import classbench as cb
from tests.strategies import Picker, gen_match, large_ruleset, random_ruleset
from xdpguard.rules.compile import (
    TOKEN_BYTES,
    Plan,
    Reuse,
    column_digests,
    compile_ruleset,
    rule_tokens,
)
from xdpguard.rules.fields import FIELDS
from xdpguard.rules.model import Action, AddrMatch, Direction, Match, PortRange, Prefix, Rule, RuleSet
from xdpguard.rules.parse import parse_text

MATCH_ATTRS = [f.match for f in FIELDS]


def _columns(rs: RuleSet) -> dict[str, dict[int, str]]:
    return {
        "ingress": column_digests([rule_tokens(r) for r in rs.ingress.rules]),
        "egress": column_digests([rule_tokens(r) for r in rs.egress.rules]),
    }


def _recompile(before: RuleSet, base: Plan, after: RuleSet) -> tuple[Plan, int]:
    """`after` compiled with what it shares with `before` taken from `base`; and how many fields that was."""
    old, new = _columns(before), _columns(after)
    same = {d: frozenset(f for f, c in new[d].items() if old[d].get(f) == c) for d in new}
    return compile_ruleset(after, Reuse(base.to_bytes(), same)), sum(len(f) for f in same.values())


def _with_rules(rs: RuleSet, rules: list[Rule]) -> RuleSet:
    return replace(rs, ingress=Direction(rs.ingress.default, tuple(rules)))


def _edit(rng: random.Random, rs: RuleSet) -> RuleSet:
    rules = list(rs.ingress.rules)
    i = rng.randrange(len(rules))
    kind = rng.choice(["field", "field", "field", "action", "add"])
    if kind == "field":
        attr = rng.choice(MATCH_ATTRS)
        donor = gen_match(Picker(rng=rng))
        rules[i] = replace(rules[i], match=replace(rules[i].match, **{attr: getattr(donor, attr)}))
    elif kind == "action":
        rules[i] = replace(
            rules[i], action=rng.choice([a for a in type(rules[i].action) if a.value != "continue"])
        )
    else:
        rules.insert(i, replace(rules[i], name=f"added{rng.getrandbits(32)}"))
    return _with_rules(rs, rules)


@pytest.mark.parametrize("seed", range(12))
def test_random_edits_compile_as_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    rs = random_ruleset(rng, max_rules=40)
    while not rs.ingress.rules:
        rs = random_ruleset(rng, max_rules=40)
    plan = compile_ruleset(rs)
    total = 0
    for _ in range(15):
        edited = _edit(rng, rs)
        got, reused = _recompile(rs, plan, edited)
        want = compile_ruleset(edited)
        assert got.to_bytes() == want.to_bytes()
        rs, plan = edited, got
        total += reused
    assert total > 0


@pytest.mark.parametrize("seed", range(2))
def test_two_groups_compile_as_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    rs = large_ruleset(rng, 4500, egress=3)
    plan = compile_ruleset(rs)
    rules = list(rs.ingress.rules)
    i = rng.randrange(len(rules))
    for attr in ("dport", "src", "protos"):
        donor = gen_match(Picker(rng=rng))
        edited = list(rules)
        edited[i] = replace(rules[i], match=replace(rules[i].match, **{attr: getattr(donor, attr)}))
        after = _with_rules(rs, edited)
        got, reused = _recompile(rs, plan, after)
        assert reused >= len(FIELDS)  # every egress field and most ingress ones
        assert got.to_bytes() == compile_ruleset(after).to_bytes()


def test_an_unchanged_set_reuses_every_field() -> None:
    rs = random_ruleset(random.Random(7), max_rules=30)
    plan = compile_ruleset(rs)
    got, reused = _recompile(rs, plan, rs)
    assert reused == 2 * len(FIELDS)
    assert got.to_bytes() == plan.to_bytes()


def test_a_condition_naming_a_set_without_a_digest_is_not_digested() -> None:
    src = AddrMatch((Prefix(4, 0x0A000000, 8),), sets=("nets",))
    tok = rule_tokens(Rule("r", Match(src=src, dport=(PortRange(22, 22),)), Action.ALLOW, None, 1))
    assert tok[:TOKEN_BYTES] == bytes(TOKEN_BYTES)  # src (the first field): unknown
    assert set(column_digests([tok])) == {f.num for f in FIELDS} - {FIELDS[0].num}  # never reused


_SETS_RULES = """\
version: 1
sets:
  office: ["192.0.2.0/24", "2001:db8::/48"]
  blocklist: {file: block.netset}
  feed: {dynamic: true}
ingress:
  default: drop
  rules:
    - name: blocked
      match: {src: ["@blocklist", "198.51.100.7"]}
      action: drop
    - name: office-ssh
      match: {src: "@office", proto: tcp, dport: 22}
      action: allow
    - name: fed
      match: {dst: "@feed"}
      action: drop
    - name: web
      match: {proto: tcp, dport: 443}
      action: allow
"""


def _sets_ruleset(tmp_path: Path, text: str, prefixes: list[str]) -> RuleSet:
    (tmp_path / "block.netset").write_text("\n".join(prefixes) + "\n")
    return parse_text(text, str(tmp_path / "rules.yaml"), tmp_path)


def test_a_column_naming_static_sets_is_reused_while_they_are_unchanged(tmp_path: Path) -> None:
    blocked = [f"10.{i}.{j}.0/24" for i in range(8) for j in range(0, 256, 3)]
    before = _sets_ruleset(tmp_path, _SETS_RULES, blocked)
    plan = compile_ruleset(before)
    src = next(f.num for f in FIELDS if f.match == "src")
    dst = next(f.num for f in FIELDS if f.match == "dst")
    cols = _columns(before)["ingress"]
    assert src in cols  # the static sets' column has a digest
    assert dst not in cols  # a dynamic set's never does: its slot follows from the other sets

    # An edit elsewhere: the set column is taken from the first plan.
    after = _sets_ruleset(tmp_path, _SETS_RULES.replace("dport: 443", "dport: 8443"), blocked)
    assert _columns(after)["ingress"][src] == cols[src]
    got, _ = _recompile(before, plan, after)
    assert got.to_bytes() == compile_ruleset(after).to_bytes()

    # One prefix of the set file changed, or the inline set: the column is compiled again.
    for text, pfx in (
        (_SETS_RULES, [*blocked[:-1], "172.16.0.0/12"]),
        (_SETS_RULES.replace("192.0.2.0/24", "192.0.2.0/25"), blocked),
    ):
        changed = _sets_ruleset(tmp_path, text, pfx)
        assert _columns(changed)["ingress"][src] != cols[src]
        got, _ = _recompile(before, plan, changed)
        assert got.to_bytes() == compile_ruleset(changed).to_bytes()
        assert got.to_bytes() != plan.to_bytes()


def _change_one_port(rules: list[cb.Rule], rng: random.Random) -> list[cb.Rule]:
    out = list(rules)
    singles = [i for i, r in enumerate(out) if r.dport[0] == r.dport[1] and r.dport[0] < 65535]
    i = rng.choice(singles)
    out[i] = replace(out[i], dport=(out[i].dport[0] + 1, out[i].dport[0] + 1))
    return out


@pytest.mark.parametrize("name", ["acl1_1k", "acl1_10k"])
def test_classbench_one_port_compiles_as_from_scratch(name: str) -> None:
    path = cb.DATA_DIR / name
    if not path.exists():
        pytest.skip(f"ClassBench data not found at {cb.DATA_DIR}; set CLASSBENCH_DIR")
    rules = cb.parse_rules(path)
    before = parse_text(cb.to_yaml(rules, name), "a.yaml", Path("."))
    plan = compile_ruleset(before)
    after = parse_text(cb.to_yaml(_change_one_port(rules, random.Random(3)), name), "b.yaml", Path("."))
    got, reused = _recompile(before, plan, after)
    assert reused >= 2 * len(FIELDS) - 1  # all but dport
    assert got.to_bytes() == compile_ruleset(after).to_bytes()
