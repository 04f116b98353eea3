"""A cache of compiled rule files, so applying an unchanged big file is quick.

Parsing and compiling a rule file with a million-prefix set takes seconds;
hashing it takes milliseconds.  An entry in `$XDPGUARD_STATE_DIR/.cache/`
is keyed by the rule file's content and directory and by the sources of
the parser and compiler; it records the content hash of every set file
the rule file read, the compiled plan and what `plan`/`status` show about
it.  It is used only when every set file still has the recorded content,
and only if the plan's bytes still hash to the recorded digest: a damaged
or stale entry is ignored and built again, never trusted.

The plan comes back undecoded (compile.lazy_plan): an apply that finds
nothing to change never needs more of it than its digest and settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from xdpguard.errors import RuleError, XdpguardError
from xdpguard.rules.compile import Plan, compile_ruleset, lazy_plan
from xdpguard.state import secure_state_root

KEEP = 8  # entries kept; the oldest (by last use) go first


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
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RuleError(str(path), None, f"cannot read rule file: {e.strerror or e}") from None
    key = _sha(_compiler_hash().encode() + str(path.resolve().parent).encode() + b"\0" + data)
    hit = _lookup(key, str(path))
    if hit is not None:
        plan, summary = hit
        return Loaded(plan, data.decode("utf-8"), summary, True)
    return _build(path, key)


def _lookup(key: str, source: str) -> tuple[Plan, dict[str, Any]] | None:
    try:
        d = root() / key
    except XdpguardError:
        return None
    try:
        meta = json.loads((d / "meta.json").read_text())
        for fname, digest in meta["set_files"]:
            if _sha(Path(fname).read_bytes()) != digest:
                return None
        raw = (d / "plan.bin").read_bytes()
        if _sha(raw) != meta["digest"]:
            return None  # damaged: rebuilt below
        plan = lazy_plan(raw, source)
        summary = meta["summary"]
        with contextlib.suppress(OSError):
            os.utime(d)  # most recently used
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return plan, summary


def _build(path: Path, key: str) -> Loaded:
    # lazy: the parser (and YAML) load only on a cache miss, the reason for the cache
    from xdpguard.rules.describe import summary_of
    from xdpguard.rules.parse import load as parse

    rs = parse(path)
    plan = compile_ruleset(rs)
    text = path.read_text()
    summary = summary_of(rs)
    set_files = sorted({s.file for s in rs.sets if s.file})
    try:
        _store(key, plan, summary, [(f, _sha(Path(f).read_bytes())) for f in set_files])
    except (OSError, XdpguardError):
        pass  # no cache (read-only, full or untrusted state dir): the apply itself decides what that means
    return Loaded(plan, text, summary, False)


def _store(key: str, plan: Plan, summary: dict[str, Any], set_files: list[tuple[str, str]]) -> None:
    base = root()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=base))
    try:
        meta = {"digest": plan.digest, "set_files": set_files, "summary": summary}
        _write_private(tmp / "plan.bin", plan.to_bytes())
        _write_private(tmp / "meta.json", json.dumps(meta).encode())
        final = base / key
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)  # an entry appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(base)


def _write_private(path: Path, data: bytes) -> None:
    """A new file, mode 0600: a compiled rule set may be as secret as its rule file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _prune(base: Path) -> None:
    """Keep the KEEP entries used last, and no leftover of a store that died."""
    now = time.time()
    entries = []
    for p in base.iterdir():
        with contextlib.suppress(OSError):
            mtime = p.stat().st_mtime
            if not p.name.startswith("."):
                entries.append((mtime, p))
            elif now - mtime > 3600:
                shutil.rmtree(p, ignore_errors=True)
    for _, old in sorted(entries)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
