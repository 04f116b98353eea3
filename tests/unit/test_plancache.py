"""The compiled-plan cache: reused only while nothing it was built from changed.

No kernel: the cache is files in the state directory.  Each test checks
what the cache returns (the same digest as a fresh compile) and whether it
parsed again (`cached`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xdpguard import plancache
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.fields import FIELDS
from xdpguard.rules.parse import load

RULES = """\
version: 1
sets:
  blk: {file: lists/blk.netset}
  dyn: {dynamic: true}
ingress:
  rules:
    - {name: drop-blk, match: {src: ["@blk", "@dyn"]}, action: drop}
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "blk.netset").write_text("192.0.2.0/24\n198.51.100.7\n")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def fresh_digest(path: Path) -> str:
    return compile_ruleset(load(path)).digest


def test_second_load_comes_from_the_cache(files: Path) -> None:
    first = plancache.load(files)
    assert first.cached is False and first.plan.digest == fresh_digest(files)
    second = plancache.load(files)
    assert second.cached is True
    assert second.plan.digest == first.plan.digest and second.summary == first.summary
    assert second.text == files.read_text()
    # settings come without decoding the directions; the directions when asked
    assert second.plan.dynsets == first.plan.dynsets and "ingress" not in second.plan.__dict__
    assert second.plan.ingress.nrules == 1


def test_a_changed_set_file_is_parsed_again(files: Path) -> None:
    plancache.load(files)
    (files.parent / "lists" / "blk.netset").write_text("192.0.2.0/24\n198.51.100.8\n")
    again = plancache.load(files)
    assert again.cached is False and again.plan.digest == fresh_digest(files)
    assert plancache.load(files).cached is True


def test_a_changed_rule_file_is_parsed_again(files: Path) -> None:
    plancache.load(files)
    files.write_text(RULES.replace("action: drop", "action: allow"))
    again = plancache.load(files)
    assert again.cached is False and again.plan.digest == fresh_digest(files)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "plan.bin").write_bytes((d / "plan.bin").read_bytes()[:-7]),
        lambda d: (d / "plan.bin").write_bytes(b"XGPLAN1\nnot a plan"),
        lambda d: (d / "meta.json").write_text("{not json"),
        lambda d: (d / "meta.json").write_text('{"set_files": 3}'),
        lambda d: (d / "plan.bin").unlink(),
    ],
)
def test_a_damaged_entry_is_ignored_and_rebuilt(files: Path, damage) -> None:  # type: ignore[no-untyped-def]
    plancache.load(files)
    (entry,) = [p for p in plancache.root().iterdir() if not p.name.startswith(".")]
    damage(entry)
    again = plancache.load(files)
    assert again.cached is False and again.plan.digest == fresh_digest(files)
    assert plancache.load(files).cached is True


def test_an_unwritable_cache_still_compiles(files: Path, tmp_path: Path) -> None:
    plancache.root().parent.mkdir(parents=True)
    plancache.root().write_text("a file where the cache directory would be")
    first = plancache.load(files)
    assert first.cached is False and first.plan.digest == fresh_digest(files)


def test_only_the_last_entries_are_kept(files: Path) -> None:
    for i in range(plancache.KEEP + 3):
        files.write_text(RULES + f"# {i}\n")
        plancache.load(files)
    assert len([p for p in plancache.root().iterdir() if not p.name.startswith(".")]) == plancache.KEEP


def _many_rules(n: int, port_of_first: int = 1000) -> str:
    rules = "".join(
        f"    - {{name: r{i}, match: {{src: 10.{i // 250}.{i % 250}.0/24, proto: tcp, "
        f"dport: {port_of_first if i == 0 else 2000 + i}}}, action: {'drop' if i % 2 else 'allow'}}}\n"
        for i in range(n)
    )
    return f"version: 1\ningress:\n  default: allow\n  rules:\n{rules}"


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The `reuse` argument of every compile the cache makes."""
    seen: list[object] = []

    def compile_spy(rs, reuse=None):  # type: ignore[no-untyped-def]
        seen.append(reuse)
        return compile_ruleset(rs, reuse)

    monkeypatch.setattr(plancache, "compile_ruleset", compile_spy)
    return seen


def test_an_edit_compiles_only_the_changed_fields(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)
    files.write_text(_many_rules(300))
    plancache.load(files)
    files.write_text(_many_rules(300, port_of_first=1001))
    again = plancache.load(files)
    assert again.cached is False and again.plan.digest == fresh_digest(files)
    reuse = seen[-1]
    assert isinstance(reuse, plancache.Reuse)
    dport = next(f.num for f in FIELDS if f.name == "dport")
    assert reuse.fields["ingress"] == {f.num for f in FIELDS} - {dport}


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "plan.bin").write_bytes((d / "plan.bin").read_bytes()[:-7]),
        lambda d: (d / plancache.COLUMNS).write_text("{not json"),
        lambda d: (d / plancache.COLUMNS).write_text('{"compiler": "another", "digest": "x", "columns": {}}'),
        lambda d: (d / plancache.COLUMNS).write_text('{"columns": 3}'),
        lambda d: (d / plancache.COLUMNS).unlink(),
    ],
)
def test_a_damaged_base_is_not_reused(files: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:  # type: ignore[no-untyped-def]
    seen = _spy(monkeypatch)
    files.write_text(_many_rules(200))
    plancache.load(files)
    (entry,) = [p for p in plancache.root().iterdir() if not p.name.startswith(".")]
    damage(entry)
    files.write_text(_many_rules(200, port_of_first=1001))
    again = plancache.load(files)
    assert seen[-1] is None
    assert again.cached is False and again.plan.digest == fresh_digest(files)


def _big_set(path: Path, n: int, offset: int = 0) -> None:
    """A set file of n distinct /32s (enough for the set-file cache)."""
    path.write_text(
        "".join(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n" for i in range(offset, offset + n))
    )


def _count_set_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from xdpguard.rules import parse

    calls: list[int] = []
    real = parse.parse_set_file_text

    def counting(text: str, fname: str):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(text, fname)

    monkeypatch.setattr(parse, "parse_set_file_text", counting)
    return calls


def test_a_big_set_file_parsed_twice_is_then_loaded(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpguard.rules.parse import SET_CACHE_MIN

    _big_set(files.parent / "lists" / "blk.netset", SET_CACHE_MIN)
    calls = _count_set_parses(monkeypatch)
    digests, parses = [], []
    for i in range(4):  # each a rule-file edit: the plan cache misses, the set file is the same
        files.write_text(RULES + f"# edit {i}\n")
        before = len(calls)
        loaded = plancache.load(files)
        parses.append(len(calls) - before)
        assert loaded.cached is False
        digests.append(loaded.plan.digest)
        assert loaded.plan.digest == fresh_digest(files)  # a parse of its own, not counted
    assert parses == [1, 1, 0, 0]  # parsed the first time (marked), the second (kept), then loaded
    assert len(set(digests)) == 1
    kept = list((plancache.root() / plancache.SETS_DIR).iterdir())
    assert len(kept) == 1

    # A changed set file is never answered from the entry of the old one.
    _big_set(files.parent / "lists" / "blk.netset", SET_CACHE_MIN, offset=1)
    files.write_text(RULES + "# edit 5\n")
    changed = plancache.load(files)
    assert changed.plan.digest == fresh_digest(files) and changed.plan.digest != digests[0]


def test_a_damaged_set_entry_is_ignored(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xdpguard.rules.parse import SET_CACHE_MIN

    _big_set(files.parent / "lists" / "blk.netset", SET_CACHE_MIN)
    for i in range(2):
        files.write_text(RULES + f"# edit {i}\n")
        plancache.load(files)
    (entry,) = (plancache.root() / plancache.SETS_DIR).iterdir()
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF  # in the payload: its recorded sha256 no longer matches
    entry.write_bytes(bytes(data))
    calls = _count_set_parses(monkeypatch)
    files.write_text(RULES + "# edit 2\n")
    loaded = plancache.load(files)
    assert calls == [1]  # parsed, not loaded
    assert loaded.plan.digest == fresh_digest(files)


def test_an_entry_planted_under_another_files_key_is_not_used(files: Path) -> None:
    """An entry names the rule file it was compiled from: copied under the key of
    another file, it is a miss (compiled afresh), never that file's plan."""
    other = files.with_name("other.yaml")
    other.write_text(RULES.replace("action: drop", "action: allow"))
    plancache.load(files)
    (mine,) = [p for p in plancache.root().iterdir() if not p.name.startswith(".")]
    plancache.load(other)
    (theirs,) = [p for p in plancache.root().iterdir() if not p.name.startswith(".") and p != mine]
    assert fresh_digest(other) != fresh_digest(files)
    for f in mine.iterdir():
        f.unlink()
    for f in theirs.iterdir():
        (mine / f.name).write_bytes(f.read_bytes())  # other.yaml's entry under rules.yaml's key
    again = plancache.load(files)
    assert again.cached is False and again.plan.digest == fresh_digest(files)
    assert plancache.load(files).cached is True  # the entry was built again, for this file
