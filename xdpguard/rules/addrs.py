"""Addresses and CIDRs as operators write them, and how values are quoted in messages.

Apart from the rule parser (rules/parse.py) because `xdpguard set add`
reads addresses and nothing else: this module needs neither YAML nor the
rest of the rule language, which keeps that command's start-up short.
Set files (one address or CIDR per line) are read here too, whole columns
at a time when they are well formed, line by line (to name the first bad
line) when not.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xdpguard.errors import RuleError
from xdpguard.rules.model import Prefix

if TYPE_CHECKING:
    from xdpguard.rules.prefixcol import PrefixColumn

# The most digits a number may have: a u64's (a prefix length here; the rule
# parser holds every number to it).
MAX_DIGITS = 20


def show(value: Any) -> str:
    """The value as the operator wrote it, quoted when it is a string."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


class BadPrefix(ValueError):
    """An address or CIDR that is not one; the message names it."""


def prefix_key(p: Prefix) -> tuple[int, int, int]:
    # Prefix has order=True, but its generated __lt__ is slow on a million.
    return (p.family, p.addr, p.plen)


def family_count(prefixes: Sequence[Prefix], family: int) -> int:
    """How many of the prefixes are of one family (a PrefixColumn knows without its objects)."""
    size = getattr(prefixes, "family_size", None)
    return int(size(family)) if size is not None else sum(1 for p in prefixes if p.family == family)


def _bad_address(text: str, addr: str) -> BadPrefix:
    is_v6 = ":" in addr
    if not is_v6 and not all(c.isdigit() or c == "." for c in addr):
        return BadPrefix(f"{show(text)} is not an address or CIDR (e.g. 192.0.2.0/24, 2001:db8::/32, @set)")
    family = "IPv6" if is_v6 else "IPv4"
    try:
        if is_v6:
            ipaddress.IPv6Address(addr)
        else:
            ipaddress.IPv4Address(addr)
        reason = ""
    except ValueError as e:
        reason = re.sub(r" in '[^']*'$", "", str(e))
        reason = f" ({reason[:1].lower()}{reason[1:]})" if reason else ""
    return BadPrefix(f"{show(text)} is not a valid {family} address{reason}")


def parse_address(text: str) -> Prefix:
    """One address or CIDR as an operator types it; ValueError says what is wrong."""
    try:
        return parse_prefix(text.strip())
    except BadPrefix as e:
        raise ValueError(str(e)) from None


def parse_prefix(text: str) -> Prefix:
    """One address or CIDR; raises BadPrefix with a message naming it."""
    addr, slash, plen_text = text.partition("/")
    family, bits, af = (6, 128, socket.AF_INET6) if ":" in addr else (4, 32, socket.AF_INET)
    try:
        value = int.from_bytes(socket.inet_pton(af, addr), "big")
    except (OSError, ValueError):
        raise _bad_address(text, addr) from None
    plen = bits
    if slash:
        digits = plen_text.isascii() and plen_text.isdigit() and len(plen_text) <= MAX_DIGITS
        if not digits or int(plen_text) > bits:
            raise BadPrefix(f"{show(text)} has an invalid prefix length (IPv{family} allows /0 to /{bits})")
        plen = int(plen_text)
    if value & ((1 << (bits - plen)) - 1):
        network = Prefix(family, value & ~((1 << (bits - plen)) - 1), plen)
        raise BadPrefix(f"{show(text)} has host bits set (network is {network})")
    return Prefix(family, value, plen)


# A set file is read by whole-array operations (rules/prefixcol.py): a
# Python-level loop body per line costs more than everything else together.


def _v6_key(line: bytes) -> int | None:
    """The key of one IPv6 line (a colon before any `#`), or None if it is not one."""
    try:
        p = parse_prefix(line.partition(b"#")[0].decode().strip())
    except BadPrefix:
        return None  # the line scan says what is wrong, and where
    return (p.addr << 8) | p.plen


def scan_fast(text: str) -> tuple[Any, list[int]] | None:
    """Keys (address << 8 | length) of a well-formed set file, IPv4 as a
    numpy array and IPv6 as a list, else None.

    Text other than ASCII is read as UTF-8 bytes: in a comment it is
    blanked with the comment, anywhere else (a no-break space, say, which
    the line scan strips) the scan refuses it and the line scan decides."""
    from xdpguard.rules.prefixcol import scan_v4  # lazy: numpy, for set files only

    got = scan_v4(text.encode("utf-8"))
    if got is None:
        return None
    v4, v6_lines = got
    v6 = [_v6_key(line) for line in v6_lines]
    if None in v6:
        return None
    return v4, v6  # type: ignore[return-value]  # no None left


def scan_slow(text: str, fname: str) -> tuple[list[int], list[int]]:
    """Line by line, so that the first bad entry is reported with its line."""
    v4: list[int] = []
    v6: list[int] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            p = parse_prefix(entry)
        except BadPrefix as e:
            raise RuleError(fname, lineno, str(e)) from None
        (v4 if p.family == 4 else v6).append((p.addr << 8) | p.plen)
    return v4, v6


def parse_set_file_text(text: str, fname: str) -> PrefixColumn:
    """Prefixes of a set file's text, sorted and deduplicated (v4 first).

    One address or CIDR per line; `#` starts a comment; blank lines are
    ignored.  Errors are `RuleError(fname, line, ...)`.
    """
    from xdpguard.rules.prefixcol import PrefixColumn  # lazy: numpy, for set files only

    keys = scan_fast(text)
    v4, v6 = keys if keys is not None else scan_slow(text, fname)
    return PrefixColumn.of_keys(v4, v6)
