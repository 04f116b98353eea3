"""How rules are described (`check`, and the signatures `plan` and `status` compare).

A condition naming sets shows them by name, then the prefixes it lists
itself that none of its sets holds; the sets' prefixes are read only to
check those (a rule naming a million-prefix set is described without them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from xdpguard.rules import describe
from xdpguard.rules.describe import describe_rule, set_index, summary_of
from xdpguard.rules.model import AddrMatch, Prefix
from xdpguard.rules.parse import parse_text

RULES = """\
version: 1
sets:
  office: ["192.0.2.0/24", "2001:db8::/48"]
  blocklist: {file: block.netset}
ingress:
  default: drop
  rules:
    - name: blocked
      match: {src: ["@blocklist", "198.51.100.7", "10.0.0.0/8"]}
      action: drop
    - name: office
      match: {src: "@office", dst: ["@office", "203.0.113.0/24"], proto: tcp, dport: 22}
      action: allow
"""


@pytest.fixture
def rules(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "block.netset").write_text("10.0.0.0/8\n172.16.0.0/12\n")
    return parse_text(RULES, str(tmp_path / "rules.yaml"), tmp_path)


def test_sets_by_name_and_only_the_listed_prefixes_no_set_holds(rules) -> None:  # type: ignore[no-untyped-def]
    sets = set_index(rules)
    blocked, office = rules.ingress.rules
    # 10.0.0.0/8 is listed but the blocklist holds it: shown once, as the set
    assert describe_rule(blocked, sets) == "src=@blocklist,198.51.100.7/32 -> drop"
    assert describe_rule(office, sets) == "src=@office dst=@office,203.0.113.0/24 proto=tcp dport=22 -> allow"


def test_a_set_is_read_only_to_check_listed_prefixes(rules, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    read: list[str] = []
    real = describe.SetIndex.holds

    def spy(self: describe.SetIndex, name: str, p: Prefix) -> bool:
        read.append(name)
        return real(self, name, p)

    monkeypatch.setattr(describe.SetIndex, "holds", spy)
    sigs = summary_of(rules)["rules"]["ingress"]
    assert sigs["office"].startswith("src=@office dst=@office,203.0.113.0/24")
    assert "office" in read and read.count("blocklist") == 2  # the two listed prefixes of `blocked`


def test_a_condition_made_without_the_parser_is_described_from_its_prefixes(rules) -> None:  # type: ignore[no-untyped-def]
    blocked = rules.ingress.rules[0]
    assert blocked.match.src is not None
    bare = AddrMatch(blocked.match.src.prefixes, sets=blocked.match.src.sets)  # no `inline`
    assert bare.inline is None
    rule = replace(blocked, match=replace(blocked.match, src=bare))
    assert describe_rule(rule, set_index(rules)) == describe_rule(blocked, set_index(rules))
