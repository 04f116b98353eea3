"""The match fields: one row per field, which the compiler, the Python
classifier and the data path's writer iterate instead of naming each field.

A row says what a field is called in the rule language, its number (the
F_* constant: its bit in a plan's field mask and the index of its bitmap
table), how a plan keeps it (`layout`), how many keys the data plane looks
it up with (`space`), the pinned map the data path writes it to (`pin`,
also the plan's attribute for it), the rule's condition on it (`match`, an
attribute of rules/model.py's Match) and the packet attribute its key is
(`packet`, of rules/packet.py's Packet).  The BPF program names the same
maps and looks each field up in bpf/xdpguard.c; tests/unit/test_abi.py
checks the pins and key spaces against bpf/lib/maps.h.

Adding a match field is a row here, its keyword in rules/parse.py (and its
Match attribute), how its condition becomes keys (compile.py's
_KEY_RANGES), its key in Packet and its lookup in the BPF program.

A module of its own rather than rows in abi_consts.py: abi_consts.py holds
the integers the C header defines one by one (and its test checks every
integer there against an XG_ twin); the table is made of those integers
plus names only Python has.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdpguard.rules.abi_consts import (
    F_DPORT,
    F_DST,
    F_ICMP,
    F_PROTO,
    F_SPORT,
    F_SRC,
    F_TFLAGS,
    ICMP_SIZE,
    PORT_SIZE,
    PROTO_SIZE,
    TFLAGS_SIZE,
)

# How a plan keeps a field (DirectionPlan in rules/compile.py):
ADDR = "addr"  # longest-prefix entries per family, built into address tables (the outer map `addrs`)
ARRAY = "array"  # the bitmap-table index of every key, as the array map holds it
INTERVALS = "intervals"  # (lo, hi, index) intervals covering the key space, expanded into the array map

# The ICMP key: (is_icmpv6 << 16) | (type << 8) | code.
ICMP_V6_BASE = ICMP_SIZE // 2


@dataclass(frozen=True)
class Field:
    """One match field: see the module's docstring."""

    name: str  # in rule descriptions and messages ("extra" is F_EXTRA's, not a field)
    num: int  # F_*
    layout: str  # ADDR | ARRAY | INTERVALS
    space: int  # keys per half of the array map (0: addresses, looked up in tries)
    pin: str  # the pinned map it is written to; the DirectionPlan attribute (ADDR: src4, src6...)
    match: str  # the Match attribute holding a rule's condition on it
    packet: str  # the Packet attribute that is its key (None: the packet has none)
    l4: bool  # read from the L4 header: a later fragment has none

    def plan_attr(self, v6: bool) -> str:
        """An address field's DirectionPlan attribute for one family."""
        return f"{self.name}{6 if v6 else 4}"


# In F_* order (F_EXTRA, number 0, holds no field).  Aligned as a table:
# fmt: off
FIELDS = (
    #     name         number    layout     space        pin       match        packet       l4
    Field("src",       F_SRC,    ADDR,      0,           "addrs",  "src",       "src",       False),
    Field("dst",       F_DST,    ADDR,      0,           "addrs",  "dst",       "dst",       False),
    Field("proto",     F_PROTO,  ARRAY,     PROTO_SIZE,  "proto",  "protos",    "proto",     False),
    Field("sport",     F_SPORT,  INTERVALS, PORT_SIZE,   "sport",  "sport",     "sport",     True),
    Field("dport",     F_DPORT,  INTERVALS, PORT_SIZE,   "dport",  "dport",     "dport",     True),
    Field("tcp_flags", F_TFLAGS, ARRAY,     TFLAGS_SIZE, "tflags", "tcp_flags", "tcp_flags", True),
    Field("icmp",      F_ICMP,   INTERVALS, ICMP_SIZE,   "icmp",   "icmp",      "icmp_key",  True),
)
# fmt: on
FIELD_NAMES = ("extra", *(f.name for f in FIELDS))  # by F_* number
ADDR_FIELDS = tuple(f for f in FIELDS if f.layout == ADDR)
# Fields with an array map of `space` keys per half.
KEYED_FIELDS = tuple(f for f in FIELDS if f.layout != ADDR)
# A plan's address entries: (DirectionPlan attribute, field, v6), v4 first,
# the order the plan's bytes keep them in.
ADDR_ENTRIES = tuple((f.plan_attr(v6), f, v6) for v6 in (False, True) for f in ADDR_FIELDS)


def icmp_key(v6: bool, icmp_type: int, code: int) -> int:
    """The ICMP field's key for a message of ICMPv6 (v6) or ICMP."""
    return (ICMP_V6_BASE if v6 else 0) + (icmp_type << 8) + code
