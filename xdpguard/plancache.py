"""A cache of compiled rule files, so applying an unchanged big file is quick.

Parsing and compiling a rule file with a million-prefix set takes seconds;
hashing it takes milliseconds.  An entry in `$XDPGUARD_STATE_DIR/.cache/`
is keyed by the rule file's content and directory and by the sources of
the parser and compiler; it records those inputs of its key (`source` in
`meta.json`), the content hash of every set file the rule file read, the
compiled plan and what `plan`/`status` show about it.  It is used only
when its recorded inputs are this rule file's (an entry copied under
another key is not), every set file still has the recorded content, and
the plan's bytes still hash to the recorded digest: a damaged, stale or
misplaced entry is ignored and built again, never trusted.

The plan comes back undecoded (compile.lazy_plan): an apply that finds
nothing to change never needs more of it than its digest and settings.

A changed rule file is parsed by rules/incremental.py, which takes every
rule whose text did not change from a memo of the file's last parse (kept
per rule file in `.cache/.rules/`, checked against its own hash and read
back only as the rule model's classes), so a one-rule edit of a 10,000-rule
file parses one rule.  It compiles only the fields whose column of
conditions changed, too: each entry records its columns' digests
(`columns.json`), and the fields a cached plan shares are taken from it
(compile.Reuse).  A large set file parsed twice is kept parsed, by the
digest of its bytes (`.cache/.sets/`, see _SetCache), so such an edit
does not parse a million-prefix blocklist again either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, fields, replace
from enum import Enum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xdpguard.errors import XdpguardError
from xdpguard.rules import inputs, model
from xdpguard.rules.compile import Plan, Reuse, column_digests, compile_ruleset, lazy_plan, rule_tokens
from xdpguard.state import prune_cache, secure_state_root

if TYPE_CHECKING:
    from collections.abc import Sequence

    from xdpguard.rules.incremental import Memo
    from xdpguard.rules.prefixcol import PrefixColumn

KEEP = 8  # entries kept; the oldest (by last use) go first
# Rule memos kept (about 450 bytes a rule): this file's and the last few others'.
KEEP_MEMOS = 4
MEMO_DIR = ".rules"  # in the cache directory: one memo of parsed rules per rule file
SETS_DIR = ".sets"  # in the cache directory: large set files, parsed, by the digest of their bytes
KEEP_SETS = 3  # a million IPv4 prefixes take 8 MB
SEEN_DIR = ".seen"  # in the cache directory: a mark per large set file parsed once
KEEP_SEEN = 16
_SETS_MAGIC = b"XGSETS1\n"
COLUMNS = "columns.json"  # in an entry: the digests of the columns its plan was compiled from
# direction -> field number -> digest of the field's column (compile.column_digests)
Columns = dict[str, dict[int, str]]
_MEMO_MAGIC = b"XGMEMO1\n"


@dataclass
class Loaded:
    plan: Plan
    text: str
    summary: dict[str, Any]
    cached: bool  # True when nothing was parsed or compiled


def root() -> Path:
    """The cache directory, under a state directory only root can change: a
    planted entry would be applied.  (An untrusted state directory raises
    StateError here; callers then go without the cache, and the command
    itself refuses that directory with its reason.)"""
    return secure_state_root() / ".cache"


@cache
def _compiler_hash() -> str:
    """The parser's and compiler's sources: a new xdpguard never reuses an old entry."""
    h = hashlib.sha256()
    rules_dir = Path(__file__).parent / "rules"
    for p in sorted(rules_dir.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(path: Path) -> Loaded:
    """The compiled plan of a rule file: from the cache when nothing it reads changed."""
    data = inputs.read_rule_file(path)  # a regular file of bounded size, or exit 2
    made_of = _made_of(path, data)
    hit = _lookup(made_of, str(path))
    if hit is not None:
        plan, summary = hit
        return Loaded(plan, inputs.decode(data, str(path)), summary, True)
    return _build(path, made_of, data)


def _made_of(path: Path, data: bytes) -> dict[str, str]:
    """What an entry is compiled from, apart from set files: its key's inputs,
    recorded in the entry (`source` in meta.json) and checked on every hit."""
    return {"compiler": _compiler_hash(), "directory": str(path.resolve().parent), "rules": _sha(data)}


def _key(made_of: dict[str, str]) -> str:
    return _sha(json.dumps(made_of, sort_keys=True).encode())


def _lookup(made_of: dict[str, str], source: str) -> tuple[Plan, dict[str, Any]] | None:
    try:
        d = root() / _key(made_of)
    except XdpguardError:
        return None
    try:
        meta = json.loads((d / "meta.json").read_text())
        if meta["source"] != made_of:
            return None  # another file's entry (or an older layout's) under this key: rebuilt below
        for fname, digest in meta["set_files"]:
            if _sha(inputs.read_file(Path(fname), "set file")) != digest:
                return None
        raw = (d / "plan.bin").read_bytes()
        if _sha(raw) != meta["digest"]:
            return None  # damaged: rebuilt below
        plan = lazy_plan(raw, source)
        summary = meta["summary"]
        with contextlib.suppress(OSError):
            os.utime(d)  # most recently used
    except (OSError, ValueError, KeyError, TypeError):  # inputs.Refused too: the parse says why
        return None
    return plan, summary


def _build(path: Path, made_of: dict[str, str], data: bytes) -> Loaded:
    # lazy: the parser (and YAML) load only on a cache miss, the reason for the cache
    from xdpguard.rules import incremental
    from xdpguard.rules.describe import summary_of
    from xdpguard.rules.parse import gc_paused, parse_text

    source = inputs.decode(data, str(path))  # not UTF-8: the RuleError says where
    memo_path = _memo_path(path)
    with gc_paused():  # tens of thousands of rule objects live on: collections would find nothing
        sets = _SetCache.here()
        memo = _load_memo(memo_path)
        parsed = incremental.parse(source, str(path), path.parent, memo, sets) if source else None
        columns: Columns | None = None
        if parsed is None:
            rs = parse_text(source, str(path), path.parent, sets)  # and every error, as `check` reports it
            known = None
        else:
            rs, known = parsed.ruleset, parsed.signatures
            if parsed.fresh > 8 + parsed.reused // 64:
                # Only when many rules were parsed again: writing 10,000 rules takes 0.1 s,
                # and a memo missing a few edited rules costs only their parse.
                _store_memo(memo_path, parsed.memo)
            # The memo carries each rule's tokens: the columns cost a few ms, not a digest per condition.
            columns = {}
            for dname, d in (("ingress", rs.ingress), ("egress", rs.egress)):
                toks = parsed.tokens.get(dname)
                if toks is None or len(toks) != len(d.rules):
                    toks = [rule_tokens(r) for r in d.rules]  # rules the ordinary parser read
                columns[dname] = column_digests(toks)
        plan = compile_ruleset(rs, _reuse(columns) if columns else None)
        summary = summary_of(rs, known)
        # The digests of the bytes the parser read (SetDef.digest), not of a second
        # read: a file replaced meanwhile must not be recorded as what was compiled.
        set_files = sorted({(s.file, s.digest or _sha(Path(s.file).read_bytes())) for s in rs.sets if s.file})
        try:
            _store(made_of, plan, summary, set_files, columns)
        except (OSError, XdpguardError):
            pass  # no cache (read-only, full or untrusted state dir): the apply decides what that means
    return Loaded(plan, inputs.decode(data, str(path)), summary, False)


def _store(
    made_of: dict[str, str],
    plan: Plan,
    summary: dict[str, Any],
    set_files: list[tuple[str, str]],
    columns: Columns | None = None,
) -> None:
    base = root()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=base))
    try:
        meta = {"source": made_of, "digest": plan.digest, "set_files": set_files, "summary": summary}
        _write_private(tmp / "plan.bin", plan.to_bytes())
        _write_private(tmp / "meta.json", json.dumps(meta).encode())
        if columns is not None:
            cols = {"compiler": _compiler_hash(), "digest": plan.digest, "columns": columns}
            _write_private(tmp / COLUMNS, json.dumps(cols).encode())
        final = base / _key(made_of)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)  # an entry appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_cache(base, KEEP, spare=frozenset({MEMO_DIR, SETS_DIR, SEEN_DIR}))


def _reuse(columns: Columns) -> Reuse | None:
    """The cached plan that shares the most columns with `columns` (the one
    used last among equals), to compile only the other fields; None: none does.

    Only entries of this compiler count, and an entry's plan must still hash
    to the digest its columns were recorded with: a damaged or half-written
    entry is passed over, never trusted.
    """
    try:
        base = root()
        entries = sorted(((p.stat().st_mtime, p) for p in base.iterdir() if p.name[0] != "."), reverse=True)
    except (OSError, XdpguardError):
        return None
    best: tuple[int, Path, str, dict[str, frozenset[int]]] | None = None
    for _, d in entries:
        try:
            rec = json.loads((d / COLUMNS).read_text())
            if rec["compiler"] != _compiler_hash():
                continue  # another xdpguard's plan: its fields may be laid out otherwise
            digest, theirs = rec["digest"], rec["columns"]
            same = {
                dname: frozenset(f for f, c in cols.items() if theirs[dname].get(str(f)) == c)
                for dname, cols in columns.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        n = sum(len(f) for f in same.values())
        if n and (best is None or n > best[0]):
            best = (n, d, digest, same)
    if best is None:
        return None
    _, d, digest, same = best
    try:
        raw = (d / "plan.bin").read_bytes()
    except OSError:
        return None
    if not isinstance(digest, str) or _sha(raw) != digest:
        return None
    return Reuse(raw, same)


def _memo_path(path: Path) -> Path | None:
    """Where the memo of this rule file's rules is (None: no trusted cache directory)."""
    try:
        base = root()
    except XdpguardError:
        return None
    name = _sha(_compiler_hash().encode() + str(path.resolve()).encode())
    return base / MEMO_DIR / name


class _ModelUnpickler(pickle.Unpickler):
    """Reads back only the rule model's classes: a memo is data, never code to run."""

    ALLOWED = {
        ("xdpguard.rules.incremental", "MemoRule"),
        ("fractions", "Fraction"),
        ("builtins", "frozenset"),
        ("xdpguard.rules.prefixcol", "PrefixColumn"),  # a set file's keys: bytes and integers
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "xdpguard.rules.model" or (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a rule memo")


def _load_memo(path: Path | None) -> Memo:
    """The memo of this rule file, else the one used last (an edited copy of a
    file shares nearly all its rules, and memos are keyed by each rule's text);
    an empty one when neither is there, whole and of this parser."""
    if path is None:
        return {}
    candidates = [path]
    with contextlib.suppress(OSError, ValueError):
        others = [(p.stat().st_mtime, p) for p in path.parent.iterdir() if p.name[0] != "." and p != path]
        candidates.append(max(others)[1])
    for c in candidates:
        memo = _read_memo(c)
        if memo:
            with contextlib.suppress(OSError):
                os.utime(c)  # most recently used
            return memo
    return {}


def _read_memo(path: Path) -> Memo:
    # lazy: as in _build (the memo is read only on a cache miss; its module loads YAML)
    from xdpguard.rules.incremental import MemoRule

    try:
        with path.open("rb") as f:
            head = f.readline(len(_MEMO_MAGIC) + 200)
            if head != _MEMO_MAGIC:
                return {}
            parser, _, digest = f.readline(200).decode().rstrip("\n").partition(" ")
            if parser != _compiler_hash():
                return {}  # written by another xdpguard
            payload = f.read()
        if digest != _sha(payload):
            return {}  # damaged
        memo = _ModelUnpickler(io.BytesIO(payload)).load()
    except Exception:  # noqa: BLE001 - any damage at all: parse from scratch, as without a memo
        return {}
    # Of our own making once the hash matches; still, never trust a shape blindly.
    if not isinstance(memo, dict) or not all(
        isinstance(d, dict) and all(isinstance(m, MemoRule) for m in d.values()) for d in memo.values()
    ):
        return {}
    return memo


def _enum_by_value(member: Enum) -> tuple[Any, ...]:
    return type(member), (member.value,)


# The model's enums pickled by value (Action("drop")): the default,
# getattr(Action, "DROP"), would need builtins.getattr, which _ModelUnpickler
# must never hand out.  A dispatch table by type, not a reducer_override: that
# one is called back for every object pickled.
_BY_VALUE = {
    cls: _enum_by_value
    for cls in vars(model).values()
    if isinstance(cls, type) and issubclass(cls, Enum) and cls.__module__ == model.__name__
}


_MATCH_FIELDS = tuple(f.name for f in fields(model.Match))


def _shared(memo: Memo) -> Memo:
    """The memo with equal conditions made one object.

    Pickle writes an object it has seen as a reference, and loading then
    builds it once: ClassBench acl1_10k's 9,761 rules have 126 distinct
    destination and 106 port conditions, and sharing them makes a memo
    load in about half the time.  Rules loaded from a memo share them
    already; only those parsed since are rebuilt.
    """
    pool: dict[tuple[type, object], object] = {}
    out: Memo = {}
    for direction, rules in memo.items():
        mine = out[direction] = {}
        for text, m in rules.items():
            match = m.rule.match
            conds = {}
            for name in _MATCH_FIELDS:
                v = getattr(match, name)
                if v is not None:
                    v = pool.setdefault((type(v), v), v)
                conds[name] = v
            if all(conds[n] is getattr(match, n) for n in _MATCH_FIELDS):
                mine[text] = m
                continue
            mine[text] = replace(m, rule=replace(m.rule, match=model.Match(**conds)))
    return out


def _store_memo(path: Path | None, memo: Memo) -> None:
    if path is None:
        return
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _BY_VALUE
    pickler.dump(_shared(memo))
    payload = buf.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".new-{os.getpid()}-{path.name}")
        tmp.unlink(missing_ok=True)
        head = f"{_compiler_hash()} {_sha(payload)}\n".encode()
        _write_private(tmp, _MEMO_MAGIC + head + payload)
        os.rename(tmp, path)  # whole or not at all
    except OSError:
        return  # no memo: the next parse is a full one, nothing worse
    with contextlib.suppress(OSError):
        prune_cache(path.parent, KEEP_MEMOS)


class _SetCache:
    """Large set files as parsed, by the digest of their bytes (rules.parse.SetCache).

    A rule file that names a blocklist of a million prefixes is edited far
    more often than the blocklist: the edit then loads the parsed prefixes
    (20 ms) instead of parsing the file again (a quarter of a second).
    Only a set file parsed a second time is kept (the first parse leaves a
    mark): a list replaced on every apply (a feed) would otherwise write
    an entry of 8 MB per apply for nothing.  An entry is keyed by the
    parser's sources too, written whole (a temporary file renamed), with
    the sha256 of its payload, and read back only as the rule model's
    classes; one that fails any check is ignored.
    """

    def __init__(self, base: Path, seen: Path) -> None:
        self.base = base
        self.seen = seen

    @classmethod
    def here(cls) -> _SetCache | None:
        try:
            base = root()
        except XdpguardError:
            return None  # no trusted cache directory: every set file is parsed
        return cls(base / SETS_DIR, base / SEEN_DIR)

    def _path(self, digest: str) -> Path:
        return self.base / _sha(_compiler_hash().encode() + digest.encode())

    def get(self, digest: str) -> PrefixColumn | None:
        from xdpguard.rules.prefixcol import PrefixColumn  # lazy: numpy, only where set files are

        path = self._path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        head, _, payload = data[len(_SETS_MAGIC) :].partition(b"\n")
        if not data.startswith(_SETS_MAGIC) or head != f"{digest} {_sha(payload)}".encode():
            return None
        try:
            got = _ModelUnpickler(io.BytesIO(payload)).load()
        except Exception:  # a damaged entry may fail in any way: it is only a cache
            return None
        if type(got) is not PrefixColumn:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
        return got

    def put(self, digest: str, prefixes: Sequence[model.Prefix]) -> None:
        path = self._path(digest)
        mark = self.seen / path.name
        if not mark.exists():
            with contextlib.suppress(OSError):
                self.seen.mkdir(parents=True, exist_ok=True, mode=0o700)
                _write_private(mark, b"")
                prune_cache(self.seen, KEEP_SEEN)
            return
        payload = pickle.dumps(prefixes, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".new-{os.getpid()}-{path.name}")
            tmp.unlink(missing_ok=True)
            _write_private(tmp, _SETS_MAGIC + f"{digest} {_sha(payload)}\n".encode() + payload)
            os.rename(tmp, path)  # whole or not at all
        except OSError:
            return  # no entry: the next apply parses the file again, nothing worse
        with contextlib.suppress(OSError):
            prune_cache(self.base, KEEP_SETS)


def _write_private(path: Path, data: bytes) -> None:
    """A new file, mode 0600: a compiled rule set may be as secret as its rule file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
