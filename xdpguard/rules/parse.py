"""Rule file (YAML, docs/rules.md) -> validated `RuleSet`, or a `file:line:` error.

Every value is checked here, once, and normalised into the frozen model, so
compile.py and reference.py never see user syntax.  Errors are `RuleError`s
that name the line of the offending value and quote the value itself.

Units accepted by the helpers (all case-insensitive):

- durations (`block_for`, `state_timeouts`): a bare number of seconds, or
  numbers followed by `ms`, `s`, `m`, `h` or `d`, also several in a row
  ("30s", "1.5h", "1m30s");
- rates (`bps`): a bare number of bits/s, or `kbit`, `mbit`, `gbit` with
  decimal multiples as in tc (1kbit = 1000 bit/s), decimals allowed
  ("1.5mbit" = 1500000);
- packet rates (`rate`): a number of packets per second, minute, hour or
  day ("5/minute", "0.5/second"); `pps` is the same as a plain number;
- sizes (`burst` with bps): a bare number of bytes, or `b`, `kb`, `mb`, `gb`
  (powers of 1000) or `kib`, `mib`, `gib` (powers of 1024).

Set files can hold a million prefixes, so they are read by a vectorised scan
(numpy over the file's bytes, rules/prefixcol.py) into key columns, and only
fall back to a line-by-line pass, which knows line numbers, when something
in the file is wrong.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml  # type: ignore[import-untyped, unused-ignore]

from xdpguard.errors import RuleError
from xdpguard.rules import inputs, limits
from xdpguard.rules.addrs import (
    MAX_DIGITS,
    BadPrefix,
    parse_address,
    parse_prefix,
    parse_set_file_text,
    prefix_key,
    show,
)
from xdpguard.rules.model import (
    DYNSET_DEFAULT_SIZE,
    DYNSET_MAX_SIZE,
    ICMP_PROTOS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    MAX_CONTINUE,
    MAX_DYNSETS,
    MAX_PREFIXES,
    MAX_RULES,
    PORT_PROTOS,
    TCP_FLAG_BITS,
    Action,
    AddrMatch,
    Direction,
    IcmpMatch,
    Match,
    Mode,
    PortRange,
    Prefix,
    RateLimit,
    Rule,
    RuleSet,
    SetDef,
    State,
    StateTimeouts,
    TcpFlags,
)

__all__ = [
    "ICMP_TYPES",
    "PROTO_NAMES",
    "load",
    "format_packet_rate",
    "parse_address",
    "parse_duration",
    "parse_packet_rate",
    "parse_rate",
    "parse_set_file_text",
    "parse_size",
    "parse_text",
]

PROTO_NAMES: dict[str, int] = {
    "tcp": IPPROTO_TCP,
    "udp": IPPROTO_UDP,
    "icmp": IPPROTO_ICMP,
    "icmpv6": IPPROTO_ICMPV6,
    "sctp": IPPROTO_SCTP,
}

# ICMP type names per protocol.  A name present in both tables (echo-request,
# time-exceeded, redirect, ...) means the matching type of each family the
# rule can match; a name in one table only restricts the rule to that family.
ICMP_TYPES: dict[int, dict[str, int]] = {
    IPPROTO_ICMP: {
        "echo-reply": 0,
        "dest-unreachable": 3,
        "destination-unreachable": 3,
        "source-quench": 4,
        "redirect": 5,
        "echo-request": 8,
        "router-advertisement": 9,
        "router-solicitation": 10,
        "time-exceeded": 11,
        "parameter-problem": 12,
        "timestamp-request": 13,
        "timestamp-reply": 14,
        "info-request": 15,
        "info-reply": 16,
        "address-mask-request": 17,
        "address-mask-reply": 18,
    },
    IPPROTO_ICMPV6: {
        "dest-unreachable": 1,
        "destination-unreachable": 1,
        "packet-too-big": 2,
        "time-exceeded": 3,
        "parameter-problem": 4,
        "echo-request": 128,
        "echo-reply": 129,
        "mld-query": 130,
        "mld-report": 131,
        "mld-done": 132,
        "router-solicitation": 133,
        "router-advertisement": 134,
        "neighbor-solicitation": 135,
        "neighbour-solicitation": 135,
        "neighbor-advertisement": 136,
        "neighbour-advertisement": 136,
        "redirect": 137,
        "mld2-report": 143,
    },
}

TOP_KEYS = (
    "version",
    "mode",
    "non_ip",
    "ndp",
    "sets",
    "ingress",
    "egress",
    "state_timeouts",
    "flow_table_size",
    "limit_table_size",
)
DIRECTION_KEYS = ("default", "rules")
RULE_KEYS = ("name", "match", "action", "rate_limit", "syn_cookies")
MATCH_KEYS = ("src", "dst", "proto", "sport", "dport", "tcp_flags", "icmp_type", "icmp_code", "state")
RATE_LIMIT_KEYS = ("rate", "pps", "bps", "burst", "per", "block_for")
RULE_ACTIONS = ("allow", "drop", "continue")
SET_FILE_KEYS = ("file",)
DYNAMIC_SET_KEYS = ("dynamic", "timeout", "size")
TIMEOUT_KEYS = ("tcp", "udp", "icmp")

TABLE_SIZE_MIN = 1024
TABLE_SIZE_MAX = 16 * 1024 * 1024
# The smallest useful byte burst: one full-size frame as the limiter counts
# it (the whole Ethernet frame: 1500 bytes of IP, 14 of header, two VLAN
# tags).  A smaller bucket would drop every full-size frame even when idle.
MTU_BYTES = 1522
U32_MAX = 2**32 - 1  # rates and bursts live in __u32 map fields
# Periods of a packet rate (`rate: 5/minute`), in seconds.
RATE_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# The slowest packet rate: one a day.  Slower would mean a GCRA tolerance
# (burst x seconds per packet) of years for any useful burst.
MIN_PPS = Fraction(1, RATE_PERIODS["day"])

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SET_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_PER_RE = re.compile(r"source/([0-9]{1,3})(?:\s*,\s*([0-9]{1,3}))?")
_NUMBER = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_DURATION_RE = re.compile(_NUMBER + r"\s*(ms|s|m|h|d)?", re.IGNORECASE)
_DURATION_PART_RE = re.compile(_NUMBER + r"\s*(ms|s|m|h|d)", re.IGNORECASE)
_PLAIN_RE = re.compile(_NUMBER + r"()")  # a number, no unit
_PACKET_RATE_RE = re.compile(_NUMBER + r"\s*/\s*([A-Za-z]*)")
_RATE_RE = re.compile(_NUMBER + r"\s*(kbit|mbit|gbit)?", re.IGNORECASE)
_SIZE_RE = re.compile(_NUMBER + r"\s*(b|kb|mb|gb|kib|mib|gib)?", re.IGNORECASE)
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_RATE_UNITS = {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}

_U128 = (1 << 128) - 1

# No setting takes a number of more digits than a u64 has (MAX_DIGITS, from
# addrs).  Longer ones are refused up front, at their line: Python's int()
# raises on decimal strings of over 4,300 digits, and huge values overflow
# floats further on.


# --------------------------------------------------------------------------
# YAML with line numbers


class YamlMap(dict[Any, Any]):
    """A YAML mapping that remembers the line of itself, its keys and values."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}


class YamlSeq(list[Any]):
    """A YAML sequence that remembers the line of itself and of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.lines: list[int] = []


# libyaml's parser when present: the rule file can carry large inline sets.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    path = "<string>"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.resolved: dict[tuple[str, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # The tag of a plain scalar depends on its text alone (no path resolvers
        # here): rule files repeat a few words (keys, actions, protocols) thousands
        # of times, and each would be matched against the resolvers' patterns again.
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self.resolved.get(key)
        if tag is None:
            tag = self.resolved[key] = super().resolve(kind, value, implicit)
        return tag


_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct(loader: _Loader, node: Any) -> Any:
    """construct_object, with plain strings (most of a rule file) taken straight from the node."""
    if node.tag == _STR_TAG and type(node) is yaml.ScalarNode:
        return node.value  # what construct_yaml_str returns, without its dispatch
    return loader.construct_object(node, deep=True)


def _construct_map(loader: _Loader, node: Any) -> YamlMap:
    # PyYAML silently keeps the last of duplicate keys; in a firewall rule
    # that hides a mistake, so they are rejected (merge keys `<<` excepted).
    # Every key is checked before any value is made, so a bad key is the
    # error reported even when a value after it is bad too.
    seen: dict[Any, int] = {}
    keys: list[Any] = []
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            keys.append(None)
            continue
        key = _construct(loader, key_node)
        keys.append(key)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise RuleError(
                loader.path, line, "a mapping key must be a plain value, not a list or mapping"
            ) from None
        if key in seen:
            raise RuleError(loader.path, line, f"duplicate key {show(key)} (first at line {seen[key]})")
        seen[key] = line
    result = YamlMap(node.start_mark.line + 1)
    if None in keys and any(k.tag == _MERGE_TAG for k, _ in node.value):
        loader.flatten_mapping(node)  # merged pairs come first: make the keys again
        keys = [_construct(loader, k) for k, _ in node.value]
    for key, (key_node, value_node) in zip(keys, node.value, strict=True):
        try:
            result[key] = _construct(loader, value_node)
        except _MisreadNumber as e:
            e.keys.append(key)  # on its way out: the path to the number, innermost key first
            raise
        result.key_lines[key] = key_node.start_mark.line + 1
        result.value_lines[key] = value_node.start_mark.line + 1
    return result


# YAML 1.1 reads some plain scalars as numbers in a form nobody writes in a
# firewall rule on purpose: `20:21` (an iptables port range, an unquoted
# IPv6 address) is the base-60 number 1221, `022` is octal 18.  A port or
# a duration read that way would be enforced as another value, silently,
# so these forms are refused wherever they appear, saying what was
# probably meant.  Hexadecimal and binary (`0x88b5`, `0b101`) say their
# base and are read as written, except where a port is expected.
_OCTAL_RE = re.compile(r"[-+]?0[0-7_]+")
PORT_KEYS = ("sport", "dport")
ADDRESS_KEYS = ("src", "dst")
DURATION_KEYS = ("block_for", "timeout", "interval")
QUOTE_IPV6 = "quote IPv6 addresses"
_READINGS = {
    "sexagesimal": "the base-60 number",
    "octal": "octal,",
    "hex": "hexadecimal,",
    "binary": "binary,",
}


def _int_form(text: str) -> str | None:
    """How YAML read an integer when not as plain decimal: "sexagesimal", "octal", "hex", "binary"."""
    if ":" in text:
        return "sexagesimal"
    if _OCTAL_RE.fullmatch(text):
        return "octal"
    bare = text.lstrip("+-")
    if bare.startswith("0x"):
        return "hex"
    if bare.startswith("0b"):
        return "binary"
    return None


class BasedInt(int):
    """An integer written with its base (`0x88b5`, `0b101`): fine, but not for a port."""

    text: str
    form: str

    def __new__(cls, value: int, text: str, form: str) -> BasedInt:
        self = super().__new__(cls, value)
        self.text, self.form = text, form
        return self


def misread(text: str, value: float, form: str, label: Any, kind: str | None) -> str:
    """The message for a number YAML read in `form`; `kind` is "port", "address", "duration" or None."""
    if form == "sexagesimal":
        groups = text.split(":")
        if kind == "port" and len(groups) == 2:
            advice = f'a range is written "{groups[0]}-{groups[1]}"'
        elif kind == "port":
            advice = 'write ports in decimal, and a range as "1024-65535"'
        elif kind == "address":
            advice = QUOTE_IPV6
        elif kind == "duration":
            advice = "write a duration with units, such as 1m30s or 1h30m"
        else:
            advice = "write numbers in decimal"
    elif form == "octal":
        advice = f"write {'ports' if kind == 'port' else 'numbers'} in decimal, without a leading zero"
    else:
        advice = f"write {'ports' if kind == 'port' else 'numbers'} in decimal"
    where = f"{label}: " if label is not None else ""
    return f"{where}{text}: {advice} (YAML reads {text} as {_READINGS[form]} {value})"


def based_port(value: Any, field: str) -> str | None:
    """The message for a port written in hexadecimal or binary, or None."""
    if isinstance(value, BasedInt):
        return misread(value.text, int(value), value.form, field, "port")
    return None


class _MisreadNumber(Exception):
    """A number in a form YAML 1.1 reads differently from how it looks; load_yaml words it."""

    def __init__(self, text: str, value: float, form: str, line: int) -> None:
        super().__init__(text)
        self.text, self.value, self.form, self.line = text, value, form, line
        self.keys: list[Any] = []  # the mapping keys above it, innermost first

    def message(self) -> str:
        keys = self.keys[::-1]
        last = keys[-1] if keys else None
        in_set = len(keys) >= 2 and keys[0] == "sets"
        timeout = len(keys) >= 2 and keys[-2] == "state_timeouts"
        label = f"state_timeouts.{last}" if timeout else last
        if in_set:
            label = f"set {keys[1]}" + (f": {last}" if len(keys) > 2 else "")
        kind = None
        if last in PORT_KEYS:
            kind = "port"
        elif last in ADDRESS_KEYS or (in_set and len(keys) == 2):
            kind = "address"
        elif last in DURATION_KEYS or timeout:
            kind = "duration"
        return misread(self.text, self.value, self.form, label, kind)


def _construct_int(loader: _Loader, node: Any) -> int:
    text = node.value
    digits = text.lstrip("+-").replace("_", "").lstrip("0") or "0"
    if len(digits) > MAX_DIGITS:
        line = node.start_mark.line + 1
        raise RuleError(loader.path, line, f"a number of {len(digits)} digits is too large for any setting")
    value = int(loader.construct_yaml_int(node))
    form = _int_form(text)
    if form in ("hex", "binary"):
        return BasedInt(value, text, form)
    if form is not None:
        raise _MisreadNumber(text, value, form, node.start_mark.line + 1)
    return value


def _construct_float(loader: _Loader, node: Any) -> float:
    value = float(loader.construct_yaml_float(node))
    if ":" in node.value:
        raise _MisreadNumber(node.value, value, "sexagesimal", node.start_mark.line + 1)
    return value


def _construct_seq(loader: _Loader, node: Any) -> YamlSeq:
    result = YamlSeq(node.start_mark.line + 1)
    for child in node.value:
        result.append(_construct(loader, child))
        result.lines.append(child.start_mark.line + 1)
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(text: str, path: str) -> Any:
    loader = _Loader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except _MisreadNumber as e:
        raise RuleError(path, e.line, e.message()) from None
    except yaml.reader.ReaderError as e:
        raise RuleError(path, _reader_error_line(text, e.position), _reader_error(e)) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        reserved = _reserved_start(text, e.problem_mark)
        if reserved is not None:
            raise RuleError(path, line, reserved) from None
        problem = e.problem or e.context or "invalid YAML"
        context = f" ({e.context})" if e.context and e.problem else ""
        raise RuleError(path, line, f"invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as e:
        raise RuleError(path, 1, f"invalid YAML: {e}") from None
    except RecursionError:
        # PyYAML recurses per nesting level; a rule file never nests this deep.
        mark = loader.get_mark() if hasattr(loader, "get_mark") else None
        line = mark.line + 1 if mark is not None else 1
        raise RuleError(path, line, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _reader_error_line(text: str, position: int) -> int:
    # libyaml counts the position in UTF-8 bytes, PyYAML's own reader in characters.
    if _BaseLoader is yaml.SafeLoader:
        return text.count("\n", 0, position) + 1
    return text.encode("utf-8", "surrogatepass").count(b"\n", 0, position) + 1


def _reader_error(e: Any) -> str:
    """A character YAML refuses anywhere (NUL, other control characters), on one line."""
    if isinstance(e.character, int):
        name = " (NUL)" if e.character == 0 else ""
        return f"invalid YAML: character #x{e.character:04x}{name} is not allowed in YAML text"
    return f"invalid YAML: {e.reason}"


# YAML reserves these to start a plain value; "@set" references trip over it.
_RESERVED_STARTS = "@`"


def _reserved_start(text: str, mark: Any) -> str | None:
    """The message for an unquoted value that starts with @ or `, or None."""
    if mark is None:
        return None
    lines = text.split("\n")
    if mark.line >= len(lines) or mark.column >= len(lines[mark.line]):
        return None
    rest = lines[mark.line][mark.column :]
    if rest[0] not in _RESERVED_STARTS:
        return None
    word = re.split(r"[\s,\]}]", rest, maxsplit=1)[0]
    return f'{word} must be quoted: YAML cannot start a plain value with {rest[0]!r} (write "{word}")'


# --------------------------------------------------------------------------
# Message helpers


def did_you_mean(word: Any, choices: Sequence[str]) -> str:
    """` (did you mean "x"?)` for the closest choice, or "" when none is close."""
    text = str(word)
    # difflib scores "dprot" closer to "proto" than to "dport"; a wrong case
    # or swapped letters is the likelier typo, so those win first.
    close = [c for c in choices if c.lower() == text.lower()]
    close = close or [c for c in choices if sorted(c) == sorted(text.lower())]
    close = close or difflib.get_close_matches(text, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _suggest(word: Any, choices: Sequence[str]) -> str:
    """Like did_you_mean, but lists every choice when none is close."""
    return did_you_mean(word, choices) or f" (expected one of: {', '.join(choices)})"


def is_int(value: Any) -> bool:
    # YAML `true` is an int to Python; a port or a count is never a boolean.
    return isinstance(value, int) and not isinstance(value, bool)


def address_hint(value: Any) -> str:
    """Where an address is expected: a number is most likely an unquoted IPv6 address."""
    return f" ({QUOTE_IPV6})" if is_int(value) else ""


def _proto_name(proto: int) -> str:
    for name, number in PROTO_NAMES.items():
        if number == proto:
            return name
    return str(proto)


def _proto_list(protos: frozenset[int] | set[int]) -> str:
    return ", ".join(_proto_name(p) for p in sorted(protos))


# --------------------------------------------------------------------------
# Addresses


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Set files this large are worth keeping parsed (plancache's SetCache): a
# million prefixes take a quarter of a second to parse, 20 ms to load.
SET_CACHE_MIN = 10_000


class SetCache(Protocol):
    """Parsed set files by the digest of their bytes (see plancache)."""

    def get(self, digest: str) -> Sequence[Prefix] | None: ...

    def put(self, digest: str, prefixes: Sequence[Prefix]) -> None: ...


# --------------------------------------------------------------------------
# Units


def _number(value: Any, pattern: re.Pattern[str], what: str, example: str) -> tuple[Decimal, str]:
    if is_int(value) or isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{show(value)} is not a {what} (e.g. {example})")
        # A YAML float as written (0.1, not the binary 0.1000000000000000055...).
        return _bounded(Decimal(str(value)), value), ""
    if isinstance(value, str):
        m = pattern.fullmatch(value.strip())
        if m:
            try:
                return _bounded(Decimal(m.group(1)), value), (m.group(2) or "").lower()
            except InvalidOperation:
                pass
    raise ValueError(f"{show(value)} is not a {what} (e.g. {example})")


def _bounded(number: Decimal, value: Any) -> Decimal:
    if number.adjusted() >= MAX_DIGITS:
        raise ValueError(f"{show(value)} is too large")
    return number


def parse_duration_exact(value: Any) -> Decimal:
    """Seconds in a duration, exactly as written: 30, "30s", "5m", "1h", "1d", "250ms",
    "1m30s"; must be > 0."""
    example = "30s, 5m, 1h, 1m30s"
    if isinstance(value, str) and len(parts := _duration_parts(value)) > 1:
        seconds = sum((_bounded(n, value) * _DURATION_UNITS[u.lower()] for n, u in parts), Decimal(0))
    else:
        number, unit = _number(value, _DURATION_RE, "duration", example)
        seconds = number * _DURATION_UNITS[unit or "s"]
    if seconds <= 0:
        raise ValueError(f"{show(value)} must be a positive duration")
    return seconds


def parse_duration(value: Any) -> float:
    """Seconds in a duration: 30, "30s", "5m", "1h", "1d", "250ms"; must be > 0."""
    return float(parse_duration_exact(value))


def _duration_parts(text: str) -> list[tuple[Decimal, str]]:
    """ "1h30m" -> [(1, "h"), (30, "m")]; [] unless the whole text is such parts."""
    compact = text.strip()
    parts = []
    pos = 0
    while pos < len(compact):
        m = _DURATION_PART_RE.match(compact, pos)
        if m is None:
            return []
        try:
            parts.append((Decimal(m.group(1)), m.group(2)))
        except InvalidOperation:
            return []
        pos = m.end()
        while pos < len(compact) and compact[pos] == " ":
            pos += 1
    return parts


def parse_packet_rate(value: Any) -> Fraction:
    """Packets per second in a `rate`: "5/minute", "100/second", "0.5/hour", "2/day"."""
    periods = list(RATE_PERIODS)
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(
            f"{show(value)} is not a packet rate: write N/second, N/minute, N/hour or N/day "
            "(e.g. 5/minute), or use pps for packets per second"
        )
    m = _PACKET_RATE_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{show(value)} is not a packet rate (e.g. 5/minute, 100/second, 2/day)")
    period = m.group(2).lower()
    if period not in RATE_PERIODS:
        raise ValueError(
            f"{show(value)}: the period must be {', '.join(periods)}{did_you_mean(period, periods)}"
        )
    try:
        count = Fraction(Decimal(m.group(1)))
    except InvalidOperation:
        raise ValueError(f"{show(value)} is not a packet rate (e.g. 5/minute)") from None
    return _check_pps(count / RATE_PERIODS[period], value)


def _parse_pps(value: Any) -> Fraction:
    """Packets per second in `pps`: a positive number, fractions allowed (0.5)."""
    number, _ = _number(value, _PLAIN_RE, "number of packets per second", "50, 0.5")
    return _check_pps(Fraction(number), value)


def _check_pps(pps: Fraction, value: Any) -> Fraction:
    if pps <= 0:
        raise ValueError(f"{show(value)} must be a positive number of packets")
    if pps < MIN_PPS:
        raise ValueError(f"{show(value)} is slower than the slowest rate, 1/day")
    if pps > U32_MAX:
        raise ValueError(f"{show(value)} is too large (at most {U32_MAX} packets per second)")
    return pps


def format_packet_rate(pps: Fraction) -> str:
    """A packet rate as people write it: "50 pps", "5/minute", "0.5 pps"."""
    if pps.denominator == 1:
        return f"{pps.numerator} pps"
    for period, seconds in list(RATE_PERIODS.items())[1:]:
        n = pps * seconds
        if n.denominator == 1:
            return f"{n.numerator}/{period}"
    return f"{float(pps):.6g} pps"


def parse_rate(value: Any) -> int:
    """Bits per second in a rate: 1000000, "100mbit", "1.5gbit"; must be >= 1."""
    return _whole_amount(
        value, _RATE_RE, _RATE_UNITS, "rate", "100mbit, 1.5gbit, 500kbit", "a rate of at least 1 bit/s"
    )


def parse_size(value: Any) -> int:
    """Bytes in a size: 1500, "64kb", "1mb" (powers of 1000), "1mib" (1024); >= 1."""
    return _whole_amount(
        value, _SIZE_RE, _SIZE_UNITS, "size in bytes", "1500, 64kb, 1mb, 1mib", "a size of at least 1 byte"
    )


def _whole_amount(
    value: Any, pattern: re.Pattern[str], units: dict[str, int], what: str, example: str, least: str
) -> int:
    """A number with an optional unit, scaled and rounded down; below 1 it is refused (`least`)."""
    number, unit = _number(value, pattern, what, example)
    amount = int(number * units.get(unit, 1))
    if amount < 1:
        raise ValueError(f"{show(value)} must be {least}")
    return amount


# --------------------------------------------------------------------------
# The parser


@contextmanager
def gc_paused() -> Iterator[None]:
    # A big set file makes millions of objects that live on; every automatic
    # collection would walk all of them again for nothing to free.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _items(value: Any, line: int) -> list[tuple[Any, int]]:
    """A scalar or a list of them, each with its line."""
    if isinstance(value, YamlSeq):
        return list(zip(value, value.lines, strict=True))
    return [(value, line)]


def _match_families(m: Match) -> frozenset[int]:
    """The address families a rule's match leaves possible (4, 6 or both)."""
    fams = frozenset({4, 6})
    for am in (m.src, m.dst):
        if am is not None and am.prefixes:
            fams &= am.families
    if m.protos is not None:
        by_proto: set[int] = set()
        for proto in m.protos:
            by_proto |= {4} if proto == IPPROTO_ICMP else {6} if proto == IPPROTO_ICMPV6 else {4, 6}
        fams &= by_proto
    if m.icmp is not None:
        fams &= {4 if proto == IPPROTO_ICMP else 6 for proto, _ in m.icmp.types}
    return fams


def _family_names(families: frozenset[int]) -> str:
    return " and ".join(f"IPv{f}" for f in sorted(families))


class Parser:
    """One rule file: sets first (rules refer to them), then both directions."""

    def __init__(self, path: str, base_dir: Path, set_cache: SetCache | None = None) -> None:
        self.path = path
        self.base_dir = base_dir
        self.set_cache = set_cache
        self.sets: dict[str, SetDef] = {}
        self.prefix_count = 0
        # (line, message): rendered as `file:line: warning: ...` once the file is read
        # (rules/incremental.py keeps a rule's warnings with it, relative to the rule).
        self.warnings: list[tuple[int, str]] = []

    def fail(self, line: int | None, message: str) -> NoReturn:
        raise RuleError(self.path, line, message)

    def warn(self, line: int, message: str) -> None:
        """Valid, but probably not what was meant: `check` prints it, nothing refuses it."""
        self.warnings.append((line, message))

    # ---- generic field readers

    def check_keys(self, mp: YamlMap, allowed: Sequence[str], where: str) -> None:
        for key in mp:
            if key not in allowed:
                self.fail(mp.key_lines[key], f"unknown key {show(key)} {where}{_suggest(key, allowed)}")

    def mapping(self, value: Any, line: int, field: str, hint: str = "") -> YamlMap:
        if not isinstance(value, YamlMap):
            self.fail(line, f"{field}: expected a mapping{hint}, got {show(value)}")
        return value

    def choice(self, mp: YamlMap, key: str, choices: Sequence[str], default: str) -> str:
        if key not in mp:
            return default
        value = mp[key]
        if not isinstance(value, str) or value not in choices:
            alts = " or ".join(choices)
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            self.fail(mp.value_lines[key], f"{key}: {show(value)} must be {alts}{hint}")
        return value

    def integer(self, value: Any, line: int, field: str, lo: int, hi: int) -> int:
        if not is_int(value):
            self.fail(line, f"{field}: {show(value)} is not an integer")
        if not lo <= value <= hi:
            self.fail(line, f"{field}: {value} is out of range ({lo}-{hi})")
        return int(value)

    def integer_or_text(self, value: int | str, line: int, field: str, lo: int, hi: int) -> int:
        """integer(), also for a number written as a string of digits ("22")."""
        if isinstance(value, str):
            if len(value.strip()) > MAX_DIGITS:
                self.fail(line, f"{field}: {show(value)} is out of range ({lo}-{hi})")
            value = int(value)
        return self.integer(value, line, field, lo, hi)

    def positive(self, value: Any, line: int, field: str, unit: str) -> int:
        if not is_int(value) or value < 1:
            self.fail(line, f"{field}: {show(value)} must be a positive integer ({unit})")
        if value > U32_MAX:
            self.fail(line, f"{field}: {value} is too large (at most {U32_MAX})")
        return int(value)

    def count_prefixes(self, n: int, line: int) -> None:
        self.prefix_count += n
        if self.prefix_count > MAX_PREFIXES:
            self.fail(
                line,
                f"{self.prefix_count} prefixes across all sets and rules exceed the limit of {MAX_PREFIXES}",
            )

    # ---- top level

    def ruleset(self, doc: Any) -> RuleSet:
        if doc is None:
            self.fail(1, "the rule file is empty (it needs at least version: 1)")
        if not isinstance(doc, YamlMap):
            line = doc.line if isinstance(doc, YamlSeq) else 1
            self.fail(
                line,
                f"the rule file must be a mapping (version, sets, ingress, egress, ...), got {show(doc)}",
            )
        self.check_keys(doc, TOP_KEYS, "at the top level")

        if "version" not in doc:
            self.fail(doc.line, 'missing "version" (this xdpguard reads version: 1)')
        version = doc["version"]
        if not is_int(version) or version != 1:
            self.fail(
                doc.value_lines["version"],
                f"version: {show(version)} is not supported (this xdpguard reads version: 1)",
            )

        mode = self.choice(doc, "mode", ("enforce", "audit"), "enforce")
        non_ip = self.choice(doc, "non_ip", ("allow", "drop"), "allow")
        ndp = self.choice(doc, "ndp", ("allow", "rules"), "allow")
        if "sets" in doc:
            self.parse_sets(self.mapping(doc["sets"], doc.value_lines["sets"], "sets", " of set names"))
        ingress = self.direction(doc, "ingress")
        egress = self.direction(doc, "egress")
        timeouts = self.state_timeouts(doc)
        flow_size = self.table_size(doc, "flow_table_size", 65536)
        limit_size = self.table_size(doc, "limit_table_size", 65536)
        return RuleSet(
            version=1,
            mode=Mode(mode),
            non_ip=Action(non_ip),
            ndp=ndp,
            sets=tuple(self.sets.values()),
            ingress=ingress,
            egress=egress,
            source=self.path,
            state_timeouts=timeouts,
            flow_table_size=flow_size,
            limit_table_size=limit_size,
            warnings=tuple(f"{self.path}:{line}: warning: {message}" for line, message in self.warnings),
        )

    def state_timeouts(self, doc: YamlMap) -> StateTimeouts:
        if "state_timeouts" not in doc:
            return StateTimeouts()
        mp = self.mapping(doc["state_timeouts"], doc.value_lines["state_timeouts"], "state_timeouts")
        self.check_keys(mp, TIMEOUT_KEYS, "in state_timeouts")
        values: dict[str, int] = {}
        for key in TIMEOUT_KEYS:
            if key in mp:
                try:
                    seconds = parse_duration(mp[key])
                except ValueError as e:
                    self.fail(mp.value_lines[key], f"state_timeouts.{key}: {e}")
                # Flow entries are aged in whole seconds; round up so "0.5s" is not 0.
                values[key] = max(1, math.ceil(seconds))
                if values[key] > U32_MAX:
                    # xg_config keeps timeouts as u32 seconds: more would wrap to a short one.
                    self.fail(
                        mp.value_lines[key],
                        f"state_timeouts.{key}: {show(mp[key])} is longer than the flow table keeps "
                        f"({U32_MAX} s, about 136 years)",
                    )
        return StateTimeouts(**values)

    def table_size(self, doc: YamlMap, key: str, default: int) -> int:
        if key not in doc:
            return default
        return self.integer(doc[key], doc.value_lines[key], key, TABLE_SIZE_MIN, TABLE_SIZE_MAX)

    # ---- sets

    def parse_sets(self, sets: YamlMap) -> None:
        for name, value in sets.items():
            line = sets.key_lines[name]
            if not isinstance(name, str) or not _SET_NAME_RE.fullmatch(name):
                self.fail(line, f"set name {show(name)} may only use letters, digits, '_', '.' and '-'")
            vline = sets.value_lines[name]
            if isinstance(value, YamlSeq):
                prefixes: list[Prefix] = []
                for item, iline in zip(value, value.lines, strict=True):
                    if not isinstance(item, str):
                        self.fail(
                            iline, f"set {name}: {show(item)} is not an address or CIDR{address_hint(item)}"
                        )
                    if item.strip().startswith("@"):
                        self.fail(iline, f"set {name}: {show(item)}: a set cannot refer to another set")
                    try:
                        prefixes.append(parse_prefix(item.strip()))
                    except BadPrefix as e:
                        self.fail(iline, f"set {name}: {e}")
                unique = tuple(sorted(set(prefixes), key=prefix_key))
                self.count_prefixes(len(unique), vline)
                self.sets[name] = SetDef(
                    name=name, prefixes=unique, file=None, line=line, digest=_digest(repr(unique).encode())
                )
            elif isinstance(value, YamlMap) and "dynamic" in value:
                self.sets[name] = self.dynamic_set(name, value, line)
            elif isinstance(value, YamlMap):
                for key in DYNAMIC_SET_KEYS:
                    if key in value:
                        self.fail(
                            value.key_lines[key],
                            f"set {name}: {key} is for dynamic sets (add dynamic: true, and no file)",
                        )
                self.check_keys(value, SET_FILE_KEYS, f"in set {name}")
                if "file" not in value:
                    self.fail(
                        vline, f'set {name}: missing "file" (give {{file: path}} or a list of addresses)'
                    )
                self.sets[name] = self.set_file(name, value["file"], value.value_lines["file"], line)
            else:
                self.fail(
                    vline,
                    f"set {name}: {show(value)} must be a list of addresses/CIDRs or {{file: path}}",
                )

    def dynamic_set(self, name: str, mp: YamlMap, line: int) -> SetDef:
        """`{dynamic: true, timeout: DUR, size: N}`: elements come from `xdpguard set` at run time."""
        vl = mp.value_lines
        if "file" in mp:
            self.fail(
                mp.key_lines["file"],
                f"set {name}: a dynamic set gets its elements from `xdpguard set add`, not from a file",
            )
        self.check_keys(mp, DYNAMIC_SET_KEYS, f"in set {name}")
        if mp["dynamic"] is not True:
            self.fail(
                vl["dynamic"],
                f"set {name}: dynamic: {show(mp['dynamic'])} must be true "
                "(a static set is a list of addresses or {file: path})",
            )
        # The name becomes part of pinned map names: keep it as short as a rule name.
        if not _NAME_RE.fullmatch(name):
            self.fail(line, f"set {name}: a dynamic set's name is 1-64 letters, digits, '_', '.' or '-'")
        if sum(1 for s in self.sets.values() if s.dynamic) >= MAX_DYNSETS:
            self.fail(line, f"set {name}: more than {MAX_DYNSETS} dynamic sets in one rule file")
        size = DYNSET_DEFAULT_SIZE
        if "size" in mp:
            size = self.integer(mp["size"], vl["size"], f"set {name}: size", 1, DYNSET_MAX_SIZE)
        timeout = None
        if "timeout" in mp:
            try:
                exact = parse_duration_exact(mp["timeout"])
            except ValueError as e:
                self.fail(vl["timeout"], f"set {name}: timeout: {e}")
            problem = limits.timeout_problem(exact)
            if problem:
                self.fail(vl["timeout"], f"set {name}: timeout: {show(mp['timeout'])} {problem}")
            timeout = float(exact)
        return SetDef(name=name, prefixes=(), file=None, line=line, dynamic=True, size=size, timeout=timeout)

    def set_file(self, name: str, rel: Any, line: int, set_line: int) -> SetDef:
        if not isinstance(rel, str) or not rel.strip():
            self.fail(line, f"set {name}: file: {show(rel)} is not a file path")
        path = self.base_dir / rel
        fname = str(path)
        try:
            data = inputs.read_file(path, "set file")
        except inputs.Refused as e:
            self.fail(line, f"set {name}: {show(fname)} {e}")
        except OSError as e:
            self.fail(line, f"set {name}: cannot read {show(fname)}: {e.strerror or e}")
        digest = _digest(data)
        prefixes = self.set_cache.get(digest) if self.set_cache is not None else None
        if prefixes is None:
            prefixes = parse_set_file_text(inputs.decode(data, fname), fname)
            if self.set_cache is not None and len(prefixes) >= SET_CACHE_MIN:
                self.set_cache.put(digest, prefixes)
        self.count_prefixes(len(prefixes), line)
        return SetDef(name=name, prefixes=prefixes, file=fname, line=set_line, digest=digest)

    # ---- directions and rules

    def direction(self, doc: YamlMap, key: str) -> Direction:
        if key not in doc:
            return Direction(default=Action.ALLOW, rules=())
        mp = self.mapping(doc[key], doc.value_lines[key], key, " with default and rules")
        self.check_keys(mp, DIRECTION_KEYS, f"in {key}")
        default = self.choice(mp, "default", ("allow", "drop"), "allow")
        if "rules" not in mp:
            return Direction(default=Action(default), rules=())
        rules = mp["rules"]
        if not isinstance(rules, YamlSeq):
            self.fail(mp.value_lines["rules"], f"{key}.rules: expected a list of rules, got {show(rules)}")
        parsed = self.rule_list(rules, mp.value_lines["rules"], key)
        guards = [r for r in parsed if r.action == Action.CONTINUE]
        if len(guards) > MAX_CONTINUE:
            extra = guards[MAX_CONTINUE]
            self.fail(
                extra.line,
                f"rule {show(extra.name)}: {key} has {len(guards)} rules with action continue; "
                f"at most {MAX_CONTINUE} per direction (merge guards that share a limit)",
            )
        return Direction(default=Action(default), rules=parsed)

    def rule_list(self, rules: YamlSeq, line: int, direction: str) -> tuple[Rule, ...]:
        """A direction's rules (rules/incremental.py supplies them from earlier parses)."""
        if len(rules) > MAX_RULES:
            self.fail(
                line, f"{direction}.rules: {len(rules)} rules exceed the limit of {MAX_RULES} per direction"
            )
        names: dict[str, int] = {}
        return tuple(
            self.rule(item, ln, direction, names) for item, ln in zip(rules, rules.lines, strict=True)
        )

    def rule(self, r: Any, line: int, direction: str, names: dict[str, int]) -> Rule:
        if not isinstance(r, YamlMap):
            self.fail(
                line, f"{direction} rule: expected a mapping with name, match and action, got {show(r)}"
            )
        label = f"rule {show(r['name'])}" if isinstance(r.get("name"), str) else f"{direction} rule"
        self.check_keys(r, RULE_KEYS, f"in {label}")
        if "name" not in r:
            self.fail(r.line, f'{direction} rule has no "name"')
        name = r["name"]
        name_line = r.value_lines["name"]
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            self.fail(name_line, f"name: {show(name)} must be 1-64 letters, digits, '_', '.' or '-'")
        if name in names:
            self.fail(
                name_line,
                f"name: {show(name)} is already used by the {direction} rule at line {names[name]}",
            )
        names[name] = name_line

        if "match" not in r:
            self.fail(r.line, f'rule {show(name)} has no "match" (use match: {{}} to match every IP packet)')
        match = self.match(
            self.mapping(r["match"], r.value_lines["match"], "match", " (use {} to match every IP packet)"),
            direction,
        )

        rate_limit = None
        if "rate_limit" in r:
            rl = self.mapping(
                r["rate_limit"], r.value_lines["rate_limit"], "rate_limit", " with rate, pps or bps"
            )
            rate_limit = self.rate_limit(rl, direction, _match_families(match))
        if "action" in r:
            action = Action(self.choice(r, "action", RULE_ACTIONS, "allow"))
            if action == Action.CONTINUE and rate_limit is None:
                self.fail(
                    r.value_lines["action"],
                    f'rule {show(name)}: action "continue" needs a rate_limit (packets within the '
                    "limit go on to the next rule, packets over it are dropped)",
                )
        elif rate_limit is not None:
            action = Action.ALLOW
        else:
            self.fail(
                r.line, f'rule {show(name)} has no "action" (allow, drop, or continue with a rate_limit)'
            )
        syn_cookies = self.syn_cookies(r, name, direction, action, match) if "syn_cookies" in r else False
        return Rule(
            name=name, match=match, action=action, rate_limit=rate_limit, line=r.line, syn_cookies=syn_cookies
        )

    def syn_cookies(self, r: YamlMap, name: str, direction: str, action: Action, match: Match) -> bool:
        """syn_cookies: true answers SYNs in the data plane: ingress, allow, TCP only."""
        line = r.value_lines["syn_cookies"]
        value = r["syn_cookies"]
        if not isinstance(value, bool):
            self.fail(line, f"syn_cookies: expected true or false, got {show(value)}")
        if not value:
            return False
        if direction != "ingress":
            self.fail(
                line,
                f"syn_cookies: rule {show(name)} is an {direction} rule; SYN cookies answer "
                "SYNs that arrive, so they are for ingress rules only",
            )
        if action != Action.ALLOW:
            self.fail(
                line,
                f"syn_cookies: rule {show(name)} has action {action.value}; SYN cookies "
                "admit connections, so they need action: allow",
            )
        if match.protos != frozenset({IPPROTO_TCP}):
            got = "any protocol" if match.protos is None else f"proto {_proto_list(match.protos)}"
            self.fail(
                line,
                f"syn_cookies: rule {show(name)} matches {got}; SYN cookies need a match "
                "on TCP only (proto: tcp, or tcp_flags)",
            )
        return True

    # ---- match

    def match(self, mp: YamlMap, direction: str) -> Match:
        self.check_keys(mp, MATCH_KEYS, "in match")
        vl = mp.value_lines

        src = self.addr(mp, "src") if "src" in mp else None
        dst = self.addr(mp, "dst") if "dst" in mp else None
        # Empty sets say nothing about the family; they just never match.
        src_fams = src.families if src is not None and (src.prefixes or src.dynamic) else None
        dst_fams = dst.families if dst is not None and (dst.prefixes or dst.dynamic) else None
        if src_fams is not None and dst_fams is not None and not src_fams & dst_fams:
            self.fail(
                vl["dst"],
                f"dst: {show(mp['dst'])} is {_family_names(dst_fams)} only but src is "
                f"{_family_names(src_fams)} only: the rule can never match",
            )
        addr_fams = src_fams if dst_fams is None else dst_fams if src_fams is None else src_fams & dst_fams

        protos: frozenset[int] | None = None
        proto_line = 0
        if "proto" in mp:
            protos = self.protos(mp["proto"], vl["proto"])
            proto_line = vl["proto"]

        tcp_flags = None
        if "tcp_flags" in mp:
            tcp_flags = self.tcp_flags(mp["tcp_flags"], vl["tcp_flags"])
            if protos is not None and protos != {IPPROTO_TCP}:
                self.fail(
                    vl["tcp_flags"],
                    f"tcp_flags: {show(mp['tcp_flags'])} needs proto tcp, but proto is {_proto_list(protos)}",
                )
            protos = frozenset({IPPROTO_TCP})
            proto_line = proto_line or vl["tcp_flags"]

        icmp = None
        if "icmp_code" in mp and "icmp_type" not in mp:
            self.fail(vl["icmp_code"], f"icmp_code: {show(mp['icmp_code'])} needs an icmp_type")
        if "icmp_type" in mp:
            if tcp_flags is not None:
                self.fail(
                    vl["icmp_type"], f"icmp_type: {show(mp['icmp_type'])} cannot be combined with tcp_flags"
                )
            icmp = self.icmp(mp, protos, addr_fams)
            protos = frozenset(p for p, _ in icmp.types)
            proto_line = proto_line or vl["icmp_type"]

        sport = dport = None
        for key in ("sport", "dport"):
            if key not in mp:
                continue
            ranges = self.ports(mp[key], vl[key], key)
            if protos is None:
                protos = PORT_PROTOS
            elif not protos <= PORT_PROTOS:
                no_ports = protos - PORT_PROTOS
                verb = "has" if len(no_ports) == 1 else "have"
                self.fail(
                    vl[key],
                    f"{key}: {show(mp[key])} needs proto tcp, udp or sctp; "
                    f"{_proto_list(no_ports)} {verb} no ports",
                )
            if key == "sport":
                sport = ranges
            else:
                dport = ranges

        if protos is not None and addr_fams is not None:
            proto_fams: set[int] = set()
            for p in protos:
                proto_fams |= {4} if p == IPPROTO_ICMP else {6} if p == IPPROTO_ICMPV6 else {4, 6}
            if not proto_fams & addr_fams:
                self.fail(
                    proto_line,
                    f"the rule matches only {_proto_list(protos)} but its addresses are "
                    f"{_family_names(addr_fams)} only: it can never match",
                )

        state = None
        if "state" in mp:
            if direction != "ingress":
                self.fail(
                    vl["state"],
                    f"state: {show(mp['state'])}: state is an ingress condition (egress rules cannot use it)",
                )
            state = State(self.choice(mp, "state", ("established", "new"), "new"))

        return Match(
            src=src,
            dst=dst,
            protos=protos,
            sport=sport,
            dport=dport,
            tcp_flags=tcp_flags,
            icmp=icmp,
            state=state,
        )

    def addr(self, mp: YamlMap, key: str) -> AddrMatch:
        value = mp[key]
        line = mp.value_lines[key]
        if isinstance(value, YamlSeq) and not value:
            self.fail(line, f"{key}: empty list (give an address, a CIDR, @set or a list of these)")
        inline: list[Prefix] = []
        set_names: list[str] = []
        dynamic: list[str] = []
        for item, iline in _items(value, line):
            if not isinstance(item, str):
                self.fail(iline, f"{key}: {show(item)} is not an address, CIDR or @set{address_hint(item)}")
            text = item.strip()
            if text.startswith("@"):
                set_name = text[1:]
                if set_name not in self.sets:
                    known = [f"@{n}" for n in self.sets]
                    hint = did_you_mean(text, known) or (
                        f" (defined sets: {', '.join(known)})" if known else " (no sets are defined)"
                    )
                    self.fail(iline, f"{key}: unknown set {show(text)}{hint}")
                if set_name not in set_names:
                    set_names.append(set_name)
                    if self.sets[set_name].dynamic:
                        dynamic.append(set_name)
                continue
            try:
                inline.append(parse_prefix(text))
            except BadPrefix as e:
                self.fail(iline, f"{key}: {e}")
        self.count_prefixes(len(inline), line)

        named = [self.sets[n].prefixes for n in set_names]
        if not inline and len(named) == 1:
            # The common `src: "@blocklist"`: share the set's prefixes, no copy.
            prefixes: Sequence[Prefix] = named[0]
        elif any(not isinstance(p, tuple) for p in named):
            # A set file's prefixes (a PrefixColumn): joined as keys, making no objects.
            from xdpguard.rules.prefixcol import PrefixColumn  # lazy: numpy, loaded by the set file's scan

            prefixes = PrefixColumn.union([*named, inline])
        else:
            union = set(inline)
            for part in named:
                union.update(part)
            prefixes = tuple(sorted(union, key=prefix_key))
        own = tuple(sorted(inline, key=prefix_key))
        digest = ""
        if set_names and not dynamic:
            # What the condition stands for, from the sets' digests: hashing their
            # prefixes again would cost as much as reading them did.
            parts = [repr(own), *(f"{n}={self.sets[n].digest}" for n in set_names)]
            digest = _digest("\n".join(parts).encode())
        return AddrMatch(
            prefixes=prefixes, sets=tuple(set_names), dynamic=tuple(dynamic), digest=digest, inline=own
        )

    def protos(self, value: Any, line: int) -> frozenset[int]:
        if isinstance(value, YamlSeq) and not value:
            self.fail(line, "proto: empty list (give a protocol or a list of them)")
        result: set[int] = set()
        for item, iline in _items(value, line):
            if is_int(item):
                result.add(self.integer(item, iline, "proto", 0, 255))
            elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit():
                result.add(self.integer_or_text(item, iline, "proto", 0, 255))
            elif isinstance(item, str) and item.strip().lower() in PROTO_NAMES:
                result.add(PROTO_NAMES[item.strip().lower()])
            else:
                hint = did_you_mean(item, list(PROTO_NAMES)) if isinstance(item, str) else ""
                self.fail(
                    iline, f"proto: {show(item)} is not tcp, udp, icmp, icmpv6, sctp or a number 0-255{hint}"
                )
        return frozenset(result)

    def ports(self, value: Any, line: int, key: str) -> tuple[PortRange, ...]:
        if isinstance(value, YamlSeq) and not value:
            self.fail(line, f"{key}: empty list (give a port, a range or a list of them)")
        ranges: list[PortRange] = []
        for item, iline in _items(value, line):
            if is_int(item):
                problem = based_port(item, key)
                if problem:
                    self.fail(iline, problem)
                if not 0 <= item <= 65535:
                    self.fail(iline, f"{key}: {item} is out of range (ports are 0-65535)")
                ranges.append(PortRange(item, item))
                continue
            text = item.strip() if isinstance(item, str) else ""
            lo_text, dash, hi_text = text.partition("-")
            lo_text = lo_text.strip()
            hi_text = hi_text.strip() if dash else lo_text
            if not all(t.isascii() and t.isdigit() for t in (lo_text, hi_text)):
                lo_part, colon, hi_part = text.partition(":")
                if colon and not dash:  # iptables writes a range 20:21
                    self.fail(
                        iline, f'{key}: {show(item)} is not a port: a range is written "{lo_part}-{hi_part}"'
                    )
                self.fail(iline, f'{key}: {show(item)} is not a port or a range (e.g. 443 or "1024-65535")')
            if max(len(lo_text), len(hi_text)) > MAX_DIGITS:
                self.fail(iline, f"{key}: {show(item)} is out of range (ports are 0-65535)")
            lo, hi = int(lo_text), int(hi_text)
            for port in (lo, hi):
                if port > 65535:
                    self.fail(iline, f"{key}: {show(item)}: {port} is out of range (ports are 0-65535)")
            if lo > hi:
                self.fail(iline, f"{key}: {show(item)} is an empty range ({lo} > {hi})")
            ranges.append(PortRange(lo, hi))
        ranges.sort()
        merged: list[PortRange] = []
        for r in ranges:
            if merged and r.lo <= merged[-1].hi + 1:
                merged[-1] = PortRange(merged[-1].lo, max(merged[-1].hi, r.hi))
            else:
                merged.append(r)
        return tuple(merged)

    def tcp_flags(self, value: Any, line: int) -> TcpFlags:
        if isinstance(value, YamlSeq) and value and all(isinstance(v, str) for v in value):
            tokens = [t for v in value for t in v.split(",")]
        elif isinstance(value, str):
            tokens = value.split(",")
        else:
            self.fail(line, f'tcp_flags: {show(value)} is not a list of flags (e.g. "syn,!ack")')
        set_mask = clear_mask = 0
        for token in tokens:
            token = token.strip()
            negate = token.startswith("!")
            flag = token[1:].strip().lower() if negate else token.lower()
            if flag not in TCP_FLAG_BITS:
                what = "has an empty flag" if not flag else f"has an unknown flag {show(flag)}"
                hint = (
                    _suggest(flag, list(TCP_FLAG_BITS)) if flag else f" (flags: {', '.join(TCP_FLAG_BITS)})"
                )
                self.fail(line, f"tcp_flags: {show(value)} {what}{hint}")
            if negate:
                clear_mask |= TCP_FLAG_BITS[flag]
            else:
                set_mask |= TCP_FLAG_BITS[flag]
        both = set_mask & clear_mask
        if both:
            names = ", ".join(n for n, b in TCP_FLAG_BITS.items() if both & b)
            self.fail(line, f"tcp_flags: {show(value)} both sets and clears {names}")
        return TcpFlags(set_mask=set_mask, clear_mask=clear_mask)

    def icmp(self, mp: YamlMap, protos: frozenset[int] | None, addr_fams: frozenset[int] | None) -> IcmpMatch:
        value = mp["icmp_type"]
        line = mp.value_lines["icmp_type"]
        if protos is not None:
            if not protos <= ICMP_PROTOS:
                self.fail(
                    line,
                    f"icmp_type: {show(value)} needs proto icmp or icmpv6, "
                    f"but proto is {_proto_list(protos)}",
                )
            allowed = protos
            why = f"proto is {_proto_list(protos)}"
        elif addr_fams == {4}:
            allowed, why = frozenset({IPPROTO_ICMP}), "its addresses are IPv4 only"
        elif addr_fams == {6}:
            allowed, why = frozenset({IPPROTO_ICMPV6}), "its addresses are IPv6 only"
        else:
            allowed, why = ICMP_PROTOS, ""
        if isinstance(value, YamlSeq) and not value:
            self.fail(line, "icmp_type: empty list (give a type, a name or a list of them)")

        all_names = sorted(set(ICMP_TYPES[IPPROTO_ICMP]) | set(ICMP_TYPES[IPPROTO_ICMPV6]))
        types: set[tuple[int, int]] = set()
        for item, iline in _items(value, line):
            if is_int(item) or (isinstance(item, str) and item.strip().isascii() and item.strip().isdigit()):
                number = self.integer_or_text(item, iline, "icmp_type", 0, 255)
                types.update((p, number) for p in allowed)
                continue
            name = item.strip().lower() if isinstance(item, str) else None
            if name is None or name not in all_names:
                hint = did_you_mean(name, all_names) if name else ""
                self.fail(iline, f"icmp_type: {show(item)} is not an ICMP type number or name{hint}")
            hits = [(p, ICMP_TYPES[p][name]) for p in sorted(allowed) if name in ICMP_TYPES[p]]
            if not hits:
                only = "icmpv6" if name in ICMP_TYPES[IPPROTO_ICMPV6] else "icmp"
                self.fail(
                    iline, f"icmp_type: {show(item)} exists only for {only}, but {why}: it can never match"
                )
            types.update(hits)

        codes = None
        if "icmp_code" in mp:
            code_value = mp["icmp_code"]
            code_line = mp.value_lines["icmp_code"]
            if isinstance(code_value, YamlSeq) and not code_value:
                self.fail(code_line, "icmp_code: empty list (give a code or a list of them)")
            codes = frozenset(
                self.integer(c, cl, "icmp_code", 0, 255) for c, cl in _items(code_value, code_line)
            )
        return IcmpMatch(types=frozenset(types), codes=codes)

    # ---- rate limits

    def unquoted_per(self, mp: YamlMap) -> None:
        """`{per: source/24,48}` in flow style: YAML ends the value at the comma."""
        per = mp.get("per")
        if isinstance(per, str) and _PER_RE.fullmatch(per):
            for key in mp:
                if is_int(key) and mp[key] is None:
                    self.fail(
                        mp.key_lines[key],
                        f'per: {per},{key} must be quoted inside {{...}} (per: "{per},{key}"): '
                        "YAML ends a value at a comma there",
                    )

    def per(self, mp: YamlMap, families: frozenset[int]) -> tuple[str, int, int]:
        """(per as written, IPv4 prefix length, IPv6 prefix length); both 0 for per: rule."""
        if "per" not in mp:
            return "rule", 0, 0
        value, line = mp["per"], mp.value_lines["per"]
        if value == "rule":
            return "rule", 0, 0
        if value == "source":
            # IPv6: one subscriber's /64, not one address: the owner of a /64
            # can send from 2^64 of them.
            return "source", 32, 64
        m = _PER_RE.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            self.fail(
                line,
                f"per: {show(value)} must be rule, source or source/N "
                "(or source/A,B: A for IPv4, 0-32; B for IPv6, 0-128)",
            )
        if m.group(2) is None:
            n = int(m.group(1))
            if n > 128:
                self.fail(line, f"per: {show(value)}: N must be 0-128")
            if n < 32 and 6 in families:
                self.warn(
                    line,
                    f"per: {value} groups IPv6 sources by /{n}, coarser than /32 (a whole provider "
                    f"shares one bucket); for IPv4 /{n} and IPv6 /64 write per: source/{n},64",
                )
            # An IPv4 source has only 32 bits: /33../128 is the whole address.
            return value, min(n, 32), n
        a, b = int(m.group(1)), int(m.group(2))
        if a > 32:
            self.fail(line, f"per: {show(value)}: the IPv4 length A must be 0-32")
        if b > 128:
            self.fail(line, f"per: {show(value)}: the IPv6 length B must be 0-128")
        return f"source/{a},{b}", a, b

    def representable(self, mp: YamlMap, pps: Any, bps: int | None, burst: int) -> None:
        """Refuse what the limiter's nanosecond arithmetic cannot hold (xdpguard/rules/limits.py)."""
        vl = mp.value_lines
        if pps is not None:
            key = "rate" if "rate" in mp else "pps"
            problem = limits.pps_problem(pps)
            if problem:
                self.fail(vl[key], f"{key}: {problem}")
            problem = limits.pps_burst_problem(burst, pps, format_packet_rate(Fraction(pps)))
        else:
            assert bps is not None
            problem = limits.bps_problem(bps)
            if problem:
                self.fail(vl["bps"], f"bps: {problem}")
            problem = limits.bps_burst_problem(burst, bps)
        if problem:
            self.fail(
                vl.get("burst", vl.get("bps", vl.get("pps", vl.get("rate", mp.line)))), f"burst: {problem}"
            )

    def rate_limit(self, mp: YamlMap, direction: str, families: frozenset[int]) -> RateLimit:
        self.unquoted_per(mp)
        self.check_keys(mp, RATE_LIMIT_KEYS, "in rate_limit")
        vl = mp.value_lines
        given = [k for k in ("rate", "pps", "bps") if k in mp]
        if len(given) != 1:
            line = vl[given[1]] if len(given) > 1 else mp.line
            self.fail(
                line,
                "rate_limit needs exactly one of pps (packets/s), rate (e.g. 5/minute) or bps (bits/s)",
            )

        pps: Fraction | None = None
        bps: int | None = None
        if "rate" in mp or "pps" in mp:
            key = given[0]
            try:
                pps = parse_packet_rate(mp[key]) if key == "rate" else _parse_pps(mp[key])
            except ValueError as e:
                self.fail(vl[key], f"{key}: {e}")
            # A tenth of a second at the rate, at least one packet.
            default_burst = max(1, math.ceil(pps / 10))
        else:
            try:
                bps = parse_rate(mp["bps"])
            except ValueError as e:
                self.fail(vl["bps"], f"bps: {e}")
            # One tenth of a second of bytes at the rate, at least one packet.
            default_burst = max(MTU_BYTES, math.ceil(bps / 80))

        burst = default_burst
        if "burst" in mp:
            value = mp["burst"]
            if pps is not None:
                burst = self.positive(value, vl["burst"], "burst", "packets")
            else:
                try:
                    burst = parse_size(value)
                except ValueError as e:
                    self.fail(vl["burst"], f"burst: {e}")
                if burst < MTU_BYTES:
                    # A bucket smaller than a packet would drop every full-size packet.
                    self.fail(
                        vl["burst"],
                        f"burst: {show(value)} is less than one full-size frame ({MTU_BYTES} bytes "
                        "with the Ethernet header and VLAN tags)",
                    )

        per, v4, v6 = self.per(mp, families)
        self.representable(mp, pps, bps, burst)

        block_for = None
        if "block_for" in mp:
            if direction != "ingress":
                self.fail(
                    vl["block_for"], f"block_for: {show(mp['block_for'])}: blocking sources is ingress-only"
                )
            if per == "rule":
                self.fail(
                    vl["block_for"],
                    f"block_for: {show(mp['block_for'])} needs per: source or source/N "
                    "(a per-rule bucket has no source to block)",
                )
            # A family whose bucket is the whole family (length 0) would block
            # each of its sources in turn, the first time anyone is over.
            whole = [f for f, n in ((4, v4), (6, v6)) if n == 0 and f in families]
            if whole:
                self.fail(
                    vl["block_for"],
                    f"block_for: {show(mp['block_for'])} with per: {per} would block every source "
                    f"(one bucket holds all {_family_names(frozenset(whole))} sources)",
                )
            try:
                exact = parse_duration_exact(mp["block_for"])
            except ValueError as e:
                self.fail(vl["block_for"], f"block_for: {e}")
            problem = limits.block_problem(exact)
            if problem:
                self.fail(vl["block_for"], f"block_for: {show(mp['block_for'])} {problem}")
            block_for = float(exact)

        return RateLimit(
            pps=pps,
            bps=bps,
            burst=burst,
            per=per,
            per_prefix_v4=v4,
            per_prefix_v6=v6,
            block_for=block_for,
        )


# --------------------------------------------------------------------------
# Entry points


def parse_text(
    text: str, path: str = "<string>", base_dir: Path | None = None, set_cache: SetCache | None = None
) -> RuleSet:
    """Parse and validate rule-file text.

    `path` is used in messages and as `RuleSet.source`; set files are
    resolved against `base_dir`, by default the directory of `path` (the
    current directory for a pseudo path such as "<string>").
    """
    if base_dir is None:
        base_dir = Path(".") if path.startswith("<") else Path(path).parent
    with gc_paused():
        doc = load_yaml(text, path)
        return Parser(path, base_dir, set_cache).ruleset(doc)


def load(path: str | Path, set_cache: SetCache | None = None) -> RuleSet:
    """Read, parse and validate a rule file; set files resolve next to it."""
    p = Path(path)
    return parse_text(inputs.decode(inputs.read_rule_file(p), str(p)), str(p), p.parent, set_cache)
