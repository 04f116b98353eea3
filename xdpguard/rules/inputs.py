"""Reading what an operator hands xdpguard: rule, set and cases files, and stdin.

One place decides what is read at all and how it is decoded, so every
input gets the same treatment: only regular files (a device or a FIFO such
as /dev/zero or /dev/urandom never ends, or never starts), at most
MAX_INPUT_BYTES of them, and UTF-8 text, whose one leading byte-order mark
is dropped.  The callers word the refusal (a set file's names the rule
file's line; a rule file's names the file).

No YAML and no numpy here: `xdpguard set add -` reads stdin with it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from xdpguard.errors import RuleError

# A set file holds at most MAX_PREFIXES (a million) useful lines; 128 MiB
# leaves over 100 bytes a line for comments and still fits in memory a few
# times over.  Rule files (whose inline prefixes count towards the same
# limit, and whose 65,536 rules a direction take a few MB) and cases files
# are held to the same bound: nothing valid comes near it.
MAX_INPUT_BYTES = 128 * 2**20
MAX_INPUT_TEXT = f"{MAX_INPUT_BYTES // 2**20} MiB"

_BOM = "\ufeff"


class Refused(ValueError):
    """An input that is not read at all; the message is a predicate ("is not a regular file ...")."""


def _too_big(size: int, what: str) -> Refused:
    return Refused(f"is {size:,} bytes, more than the {MAX_INPUT_TEXT} a {what} may have")


def read_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file of at most MAX_INPUT_BYTES (`what`, e.g. "rule file", names it).

    Raises Refused for anything else, and OSError as opening and reading
    raise it (a missing file, a directory: the caller says "cannot read").
    """
    st = os.stat(path)  # before opening: opening a device can have effects of its own
    _check(st, path, what)
    # O_NONBLOCK: should a FIFO have replaced the file meanwhile, opening it
    # does not wait for a writer (the fstat below refuses it).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", closefd=True) as f:
        _check(os.fstat(fd), path, what)
        data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:  # it grew while being read
        raise _too_big(len(data), what)
    return data


def _check(st: os.stat_result, path: Path, what: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        raise Refused("is not a regular file (a device, pipe or socket)")
    if st.st_size > MAX_INPUT_BYTES:
        raise _too_big(st.st_size, what)


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a file given on the command line (`what`: "rule file", "cases file"),
    or the RuleError that says why it is not read (exit 2)."""
    try:
        return read_file(path, what)
    except Refused as e:
        raise RuleError(str(path), None, f"the {what} {e}") from None
    except OSError as e:
        raise RuleError(str(path), None, f"cannot read {what}: {e.strerror or e}") from None


def read_rule_file(path: Path) -> bytes:
    return read_input(path, "rule file")


def read_stream(stream: BinaryIO, what: str) -> bytes:
    """At most MAX_INPUT_BYTES of a stream (stdin); Refused when it has more."""
    data = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise Refused(f"has more than the {MAX_INPUT_TEXT} a {what} may have")
    return data


def decode(data: bytes, name: str) -> str:
    """UTF-8 text without its byte-order mark; RuleError(name, line) at the first byte that is not UTF-8.

    Editors on Windows start files with a BOM; it is no part of the first
    line (an address, a key), so it is dropped rather than reported as an
    invisible character.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RuleError(name, line, f"not UTF-8 text (byte {data[e.start]:#04x})") from None
    return text.removeprefix(_BOM)
