"""Address tables by content, so a big set that changed by a few prefixes is not rebuilt whole.

Building the table of a million-prefix field takes about half a second,
nearly all of it finding the runs of equal longest-match value
(stride.intervals).  Those runs are small (a 1M-prefix blocklist makes
about 150,000) and are kept in `$XDPGUARD_STATE_DIR/.tables/`, one file
per field content: the key is the hash of the field's serialised entries
and of the table code.  A table is then made, in this order:

* from its own runs, when this content was seen before (an apply that
  goes back to an earlier file);
* from the runs of the table the interface holds (`base`), when the
  entries differ in a few prefixes: only the address ranges of the
  changed prefixes are painted again (rules/strideedit.py);
* from scratch otherwise.

The nodes are laid out from the runs each time (stride.from_intervals, a
tenth of a second for a million prefixes), so the table is the same
whichever way it came.  Every file carries the hash of its contents: a
damaged one is ignored and its table built again, and one that cannot be
written (read-only, full or untrusted state directory) only costs the
time it would have saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from xdpguard.errors import XdpguardError
from xdpguard.rules import lpmpack, nodes, stride, strideedit
from xdpguard.state import TABLES_DIR, prune_cache, secure_state_root

KEEP = 8  # files kept; the oldest (by last use) go first
_MAGIC = b"XGRUNS1\n"
_HEAD = struct.Struct("<BQ")  # width, number of runs


def root() -> Path:
    """Under a state directory only root can change: planted runs would be applied."""
    return secure_state_root() / TABLES_DIR


@cache
def _code_hash() -> bytes:
    """The sources that decide a table's runs and layout: new code never reads old files."""
    h = hashlib.sha256()
    for mod in (lpmpack, nodes, stride, strideedit):
        h.update(Path(mod.__file__ or "").read_bytes())
    return h.digest()


def _key(rec: strideedit.Records) -> str:
    return hashlib.sha256(_code_hash() + bytes([rec.width]) + rec.raw).hexdigest()


def table(
    entries: stride.Entries, width: int, base: stride.Entries | None = None
) -> tuple[stride.Table, str]:
    """The address table of `entries`, and how it was made: "cached", "patched" or "built".

    `base` is the field the interface's table holds now, if known: the
    table is derived from its runs when the two differ in a few prefixes.
    """
    entries = strideedit.packed(entries, width)  # one conversion of a list, for the key and the runs
    rec = strideedit.Records.of(entries, width)
    key = _key(rec)
    runs = _load(key, width)
    how = "cached"
    if runs is None:
        runs, how = _derive(rec, base), "patched"
        if runs is None:
            runs, how = stride.intervals(entries, width), "built"
        _store(key, width, *runs)
    return stride.from_intervals(*runs, width), how


def _derive(rec: strideedit.Records, base: stride.Entries | None) -> tuple[np.ndarray, np.ndarray] | None:
    if base is None:
        return None
    brec = strideedit.Records.of(base, rec.width)
    runs = _load(_key(brec), rec.width)
    if runs is None:
        return None
    prefixes = strideedit.changed_prefixes(brec, rec)
    if prefixes is None:
        return None
    return strideedit.patch(*runs, rec, prefixes)


def _encode(width: int, starts: np.ndarray, values: np.ndarray) -> bytes:
    if width > 63:
        s = b"".join(int(x).to_bytes(width // 8, "big") for x in starts)
    else:
        s = starts.astype(f"<u{width // 8}").tobytes()
    return _HEAD.pack(width, len(starts)) + s + values.astype("<u4").tobytes()


def _decode(payload: bytes, width: int) -> tuple[np.ndarray, np.ndarray]:
    w, n = _HEAD.unpack_from(payload)
    nb = width // 8
    if w != width or len(payload) != _HEAD.size + n * (nb + 4):
        raise ValueError("runs of another table")
    off = _HEAD.size
    if width > 63:
        halves = np.frombuffer(payload, dtype=">u8", count=2 * n, offset=off).reshape(n, 2)
        starts = (halves[:, 0].astype(object) << 64) | halves[:, 1].astype(object)
    else:
        starts = np.frombuffer(payload, dtype=f"<u{nb}", count=n, offset=off).astype(np.uint64)
    values = np.frombuffer(payload, dtype="<u4", count=n, offset=off + n * nb).astype(np.int64)
    if n == 0 or starts[0] != 0:
        raise ValueError("runs must start at address 0")
    return starts, values


def _load(key: str, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The runs kept under key, or None (none kept, or not intact)."""
    try:
        path = root() / key
        data = path.read_bytes()
        digest, payload = data[len(_MAGIC) : len(_MAGIC) + 32], data[len(_MAGIC) + 32 :]
        if not data.startswith(_MAGIC) or hashlib.sha256(payload).digest() != digest:
            return None  # damaged: built again, and stored over it
        runs = _decode(payload, width)
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used
    except (OSError, ValueError, XdpguardError):
        return None
    return runs


def _store(key: str, width: int, starts: np.ndarray, values: np.ndarray) -> None:
    try:
        base = root()
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = _encode(width, starts, values)
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=base)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
            os.rename(tmp, base / key)  # a file appears whole or not at all
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        prune_cache(base, KEEP)
    except (OSError, XdpguardError):
        pass  # no cache: the next apply builds this table again
