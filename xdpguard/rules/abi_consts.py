"""The numbers xdpguard's BPF programs and its Python side share.

bpf/include/xdpguard.h defines each integer here as XG_<NAME>, and
bpf/lib/parse.h the frame parser's few; this module states them for
Python with no kernel dependency, so the compiler and the classifiers in
rules/ use them as they are, and datapath/abi.py re-exports them beside
its ctypes mirrors of the header's structs (the three structs the
compiler sizes its plan with are here).  tests/unit/test_abi.py
compiles the headers with the host C compiler and checks every integer
here against its XG_ twin: change both sides together.
"""

from __future__ import annotations

import ctypes as _C

ABI_VERSION = 3

MAX_RULES = 65536
GROUP_RULES = 4096
GROUP_WORDS = GROUP_RULES // 64
MAX_GROUPS = MAX_RULES // GROUP_RULES
MAX_WORDS = MAX_RULES // 64
NVERSIONS = 2
NDIRS = 2
NHALVES = NDIRS * NVERSIONS
# A rule set of at most 64 rules with at most this many bitmaps also has each
# bitmap as one word of a plain array (the `words` map): its scan is a few
# loads the verifier inlines, no call and no map-in-map lookup.
WORDS_CAP = 4096
# A one-group rule set with at most this many bitmaps also has its flat
# blocks in a plain array (the `pflat` map), whose lookups the verifier
# inlines, as it never does those in an inner map.
PFLAT_CAP = 1024
# The sized tables again in a fixed size, when a plan fits: inner maps of
# exactly so many entries (no BPF_F_INNER_MAP) in the tops_f, bitmaps_f,
# flat_f and addrs_f outer maps, whose lookups the verifier inlines.  The
# top entries' and blocks' sizes are chosen at an interface's first load,
# at least these (see compile.fix_sizes).
FIX_TOPS_MIN = 32768
FIX_BLOCKS_MIN = 16384
FIX_NODES = 2304
DIR_INGRESS = 0
DIR_EGRESS = 1
DIR_INDEX = {"ingress": DIR_INGRESS, "egress": DIR_EGRESS}
PROTO_SIZE = 256
PORT_SIZE = 65536
TFLAGS_SIZE = 256
ICMP_SIZE = 2 * 65536
# Limits on a plan beyond the rule language's: distinct bitmaps (top
# entries) and distinct blocks per direction.
MAX_BITMAPS = 262144
MAX_BLOCKS = 1048576
NSEL = 8
NOR = 2  # XG_NOR: address fields a dynamic-set combination may be ORed into
ADDR_TABLES = NHALVES * 2 * 2

SLOT_DEFAULT = 0
SLOT_MALFORMED = 1
SLOT_NON_IP = 2
SLOT_NDP = 3
SLOT_ERROR = 4
SLOT_FLOW_NEW = 5
SLOT_BLOCKED = 6
SLOT_LIMIT_SKETCH = 7
SLOT_FIRST_RULE = 8
MAX_SLOTS = SLOT_FIRST_RULE + 2 * MAX_RULES
RESERVED_SLOTS = {
    "default": SLOT_DEFAULT,
    "malformed": SLOT_MALFORMED,
    "non_ip": SLOT_NON_IP,
    "ndp": SLOT_NDP,
    "error": SLOT_ERROR,
    "blocked": SLOT_BLOCKED,
}

F_EXTRA, F_SRC, F_DST, F_PROTO, F_SPORT, F_DPORT, F_TFLAGS, F_ICMP = range(8)
NFIELDS = 8

CFG_AUDIT = 1 << 0
CFG_NON_IP_DROP = 1 << 1
CFG_NDP_RULES = 1 << 2
CFG_DEFAULT_DROP = 1 << 3
CFG_HAS_STATE = 1 << 4
CFG_HAS_BLOCK = 1 << 5
CFG_HAS_DYN = 1 << 6
CFG_STATE_FIRST = 1 << 7
CFG_WORDS = 1 << 8
CFG_PFLAT = 1 << 9
CFG_FIXED = 1 << 10
CFG_FIXFLAT = 1 << 15


def cfg_fixa(fld: int, v6: bool) -> int:
    """The config flag saying a half's address table (fld, v6) is in addrs_f."""
    return 1 << (11 + (fld - 1) * 2 + int(v6))


MAX_DYNSETS = 16
MAX_DYNREFS = 16
MAX_DYNGROUPS = 8
DYN_SLOTS = NHALVES * MAX_DYNSETS
DYNF_LOG2_BITS = 24
DYNF_WORDS = 1 << (DYNF_LOG2_BITS - 6)
DYNF_V4_PLEN = 24
DYNF_V6_PLEN = 48
DYNF_FAMILY_SHIFT = 56

LIMIT_NONE = 0
LIMIT_PPS = 1
LIMIT_BPS = 2
LIMIT_DEFAULT_SIZE = 65536
LIMIT_TRIES = 4
COARSE_MIN_BURST_NS = 50_000_000
SRC_WAYS = 4
SKETCH_DEPTH = 2
TAG_GRACE_BITS = 6
SLOT_CLAIMING = 2**64 - 1
SKETCH_UNTIL_STEP = 1 << 24
BLOCK_V6_PLEN = 64
BLOCK_FILTER_CELLS = 1024
SRC_DEBT_CELLS = 1024


ACT_ALLOW = 0
ACT_DROP = 1
ACT_CONTINUE = 2

RULE_SYNCOOKIE = 1 << 0
RULE_NOT_EST = 1 << 1
RULE_NOT_NEW = 1 << 2

FLOW_DEFAULT_SIZE = 65536
FLOW_REFRESH_NS = 1_000_000_000
NSEC_PER_SEC = 1_000_000_000


# `continue` rules per direction: the data plane tests each one a packet
# meets in a loop the BPF verifier must see bounded.
MAX_CONTINUE = 8

# The frame parser (bpf/lib/parse.h) and its Python twin (rules/packet.py).
MAX_VLAN_TAGS = 2
MAX_EXT_HDRS = 6  # IPv6 extension headers walked before the packet is malformed
TCP_SYN = 0x02
TCP_ACK = 0x10
NDP_FIRST = 133  # router solicitation
NDP_LAST = 137  # redirect

EVENTS_BYTES = 256 * 1024
EVENTS_DEFAULT_SAMPLE = 1
EVENTS_DEFAULT_MAX_RATE = 1000
EV_RULE = 1
EV_LIMIT = 2
EV_DEFAULT = 3
EV_MALFORMED = 4
EV_NON_IP = 5
EV_BLOCKED = 6
EV_SYNCOOKIE = 7
EVENT_REASONS = {
    EV_RULE: "rule",
    EV_LIMIT: "rate_limit",
    EV_DEFAULT: "default",
    EV_MALFORMED: "malformed",
    EV_NON_IP: "non_ip",
    EV_BLOCKED: "blocked",
    EV_SYNCOOKIE: "syn_cookie",
}


# The values of the plan's own maps (struct xg_rule, xg_bitmap, xg_top): the
# compiler's memory figure counts their sizes, the data path writes them.


class RuleEntry(_C.Structure):
    _fields_ = [
        ("rule_id", _C.c_uint64),
        ("slot", _C.c_uint32),
        ("action", _C.c_uint8),
        ("limit", _C.c_uint8),
        ("plen4", _C.c_uint8),
        ("plen6", _C.c_uint8),
        ("rate", _C.c_uint64),
        ("cost_ns", _C.c_uint64),
        ("burst_ns", _C.c_uint64),
        ("block_ns", _C.c_uint64),
        ("per_source", _C.c_uint8),
        ("grace_log2", _C.c_uint8),
        ("flags", _C.c_uint8),
        ("pad", _C.c_uint8 * 5),
    ]


class Bitmap(_C.Structure):
    """A block: one group of GROUP_RULES rules of a bitmap."""

    _fields_ = [("summary", _C.c_uint64), ("w", _C.c_uint64 * GROUP_WORDS)]


class Top(_C.Structure):
    """A bitmap's top entry: its non-empty groups and their blocks."""

    _fields_ = [("groups", _C.c_uint32), ("block", _C.c_uint32 * MAX_GROUPS)]
