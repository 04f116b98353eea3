"""ctypes mirrors of bpf/include/xdpguard.h.

tests/unit/test_abi.py compiles the header with the host C compiler and
checks every size and offset here against it; keep the two in step.
"""

from __future__ import annotations

import ctypes as C

from xdpguard import resources
from xdpguard.rules import nodes
from xdpguard.rules.model import MAX_CONTINUE

ABI_VERSION = 3

MAX_RULES = 65536
GROUP_RULES = 4096
GROUP_WORDS = GROUP_RULES // 64
MAX_GROUPS = MAX_RULES // GROUP_RULES
MAX_WORDS = MAX_RULES // 64
NVERSIONS = 2
NDIRS = 2
NHALVES = NDIRS * NVERSIONS
DIR_INGRESS = 0
DIR_EGRESS = 1
DIR_INDEX = {"ingress": DIR_INGRESS, "egress": DIR_EGRESS}
PROTO_SIZE = 256
PORT_SIZE = 65536
TFLAGS_SIZE = 256
ICMP_SIZE = 2 * 65536
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

MAX_DYNSETS = 16
MAX_DYNREFS = 16
MAX_DYNGROUPS = 8
DYN_SLOTS = NHALVES * MAX_DYNSETS

LIMIT_NONE = 0
LIMIT_PPS = 1
LIMIT_BPS = 2
LIMIT_DEFAULT_SIZE = 65536
LIMIT_TRIES = 4
SRC_WAYS = 4
SKETCH_DEPTH = 2
TAG_GRACE_BITS = 6
SLOT_CLAIMING = 2**64 - 1
SKETCH_UNTIL_STEP = 1 << 24
BLOCK_V6_PLEN = 64
BLOCK_FILTER_CELLS = 1024


def src_lines(limit_table_size: int) -> int:
    """Lines of the per-source slot table (XG_SRC_LINES): the size rounded up to whole lines."""
    return (limit_table_size + SRC_WAYS - 1) // SRC_WAYS


ACT_ALLOW = 0
ACT_DROP = 1
ACT_CONTINUE = 2

RULE_SYNCOOKIE = 1 << 0
RULE_NOT_EST = 1 << 1
RULE_NOT_NEW = 1 << 2

FLOW_DEFAULT_SIZE = 65536
FLOW_REFRESH_NS = 1_000_000_000
NSEC_PER_SEC = 1_000_000_000

BPF_DIR = resources.BPF_DIR  # the header this module mirrors lives there


class Config(C.Structure):
    _fields_ = [
        ("plan_hash", C.c_uint64),
        ("nwords", C.c_uint32),
        ("nrules", C.c_uint32),
        ("flags", C.c_uint32),
        ("field_mask", C.c_uint32),
        ("base", C.c_uint32 * NFIELDS),
        ("l4free_idx", C.c_uint32),
        ("est_idx", C.c_uint32),
        ("new_idx", C.c_uint32),
        ("ones_idx", C.c_uint32),
        ("tmo_tcp", C.c_uint32),
        ("tmo_udp", C.c_uint32),
        ("tmo_icmp", C.c_uint32),
    ]


class RuleEntry(C.Structure):
    _fields_ = [
        ("rule_id", C.c_uint64),
        ("slot", C.c_uint32),
        ("action", C.c_uint8),
        ("limit", C.c_uint8),
        ("plen4", C.c_uint8),
        ("plen6", C.c_uint8),
        ("rate", C.c_uint64),
        ("cost_ns", C.c_uint64),
        ("burst_ns", C.c_uint64),
        ("block_ns", C.c_uint64),
        ("per_source", C.c_uint8),
        ("grace_log2", C.c_uint8),
        ("flags", C.c_uint8),
        ("pad", C.c_uint8 * 5),
    ]


class Bitmap(C.Structure):
    """A block: one group of GROUP_RULES rules of a bitmap."""

    _fields_ = [("summary", C.c_uint64), ("w", C.c_uint64 * GROUP_WORDS)]


class Top(C.Structure):
    """A bitmap's top entry: its non-empty groups and their blocks."""

    _fields_ = [("groups", C.c_uint32), ("block", C.c_uint32 * MAX_GROUPS)]


class Sel(C.Structure):
    _fields_ = [("idx", C.c_uint32 * NSEL), ("oridx", C.c_uint32 * NOR)]


class ScanArgs(C.Structure):
    _fields_ = [
        ("sel", Sel),
        ("half", C.c_uint32),
        ("nwords", C.c_uint32),
        ("from", C.c_uint32),  # a Python keyword: getattr(args, "from")
        ("ones", C.c_uint32),
    ]


class LimitArgs(C.Structure):
    _fields_ = [
        ("rule_key", C.c_uint32),
        ("dir", C.c_uint32),
        ("len", C.c_uint64),
        ("now", C.c_uint64),
        ("family", C.c_uint32),
        ("pad", C.c_uint32),
        ("src", C.c_uint8 * 16),
    ]


class _CallArgsUnion(C.Union):
    _fields_ = [("scan", ScanArgs), ("limit", LimitArgs)]


class CallArgs(C.Structure):
    _anonymous_ = ("u",)
    _fields_ = [("op", C.c_uint32), ("pad", C.c_uint32), ("u", _CallArgsUnion)]


class GroupArgs(C.Structure):
    _fields_ = [
        ("block", C.c_uint32 * NSEL),
        ("orblock", C.c_uint32 * NOR),
        ("ones", C.c_uint32),
        ("own", C.c_uint32),
        ("hasor", C.c_uint32),
        ("pres", C.c_uint32),
        ("lo", C.c_uint32),
        ("half", C.c_uint32),
    ]


class Counter(C.Structure):
    _fields_ = [
        ("packets", C.c_uint64),
        ("bytes", C.c_uint64),
        ("over", C.c_uint64),
        ("over_bytes", C.c_uint64),
    ]


class Bucket(C.Structure):
    _fields_ = [("tat", C.c_uint64)]


class SrcSlot(C.Structure):
    _fields_ = [("tag", C.c_uint64), ("tat", C.c_uint64)]


class SrcLine(C.Structure):
    _fields_ = [("slot", SrcSlot * SRC_WAYS)]


class Limiter(C.Structure):
    _fields_ = [
        ("key", C.c_uint64 * 2),
        ("pad", C.c_uint64 * 6),
        ("sketch_until", C.c_uint64),
        ("pad2", C.c_uint64 * 7),
    ]


class BlockKey(C.Structure):
    _fields_ = [("family", C.c_uint8), ("pad", C.c_uint8 * 3), ("addr", C.c_uint8 * 16)]


class Block(C.Structure):
    _fields_ = [("until_ns", C.c_uint64), ("rule_id", C.c_uint64)]


class Node(C.Structure):
    _fields_ = [("slot", C.c_uint32 * nodes.DENSE_SLOTS)]


class SNode(C.Structure):
    _fields_ = [
        ("val", C.c_uint32 * nodes.SPARSE_RUNS),
        ("bound", C.c_uint8 * nodes.SPARSE_RUNS),
        ("pad", C.c_uint8 * 4),
    ]


def addr_table(half: int, fld: int, v6: bool) -> int:
    """Slot of the address outer map (XG_ADDR_TABLE): fld is F_SRC or F_DST."""
    return half * 4 + (fld - 1) * 2 + int(v6)


def dyn_slot(half: int, k: int) -> int:
    """Slot of the dynamic-set outer maps (XG_DYN_SLOT): set k of the half's plan."""
    return half * MAX_DYNSETS + k


class DynElem(C.Structure):
    _fields_ = [("expires_ns", C.c_uint64)]


class DynKey6(C.Structure):
    _fields_ = [("addr", C.c_uint8 * 16)]


class LpmKey4(C.Structure):
    _fields_ = [("plen", C.c_uint32), ("addr", C.c_uint8 * 4)]


class LpmKey6(C.Structure):
    _fields_ = [("plen", C.c_uint32), ("addr", C.c_uint8 * 16)]


class DynRef(C.Structure):
    _fields_ = [("field", C.c_uint8), ("slot", C.c_uint8), ("group", C.c_uint8), ("pad", C.c_uint8)]


class DynCfg(C.Structure):
    _fields_ = [
        ("nrefs", C.c_uint32 * 2),
        ("base", C.c_uint32 * 2),
        ("ref", (DynRef * MAX_DYNREFS) * 2),
    ]


class FlowKey(C.Structure):
    _fields_ = [
        ("family", C.c_uint8),
        ("proto", C.c_uint8),
        ("lport", C.c_uint16),
        ("rport", C.c_uint16),
        ("pad", C.c_uint16),
        ("laddr", C.c_uint8 * 16),
        ("raddr", C.c_uint8 * 16),
    ]


class Flow(C.Structure):
    _fields_ = [("last_seen_ns", C.c_uint64)]


class EventCfg(C.Structure):
    _fields_ = [("sample", C.c_uint32), ("max_rate", C.c_uint32)]


class EventRate(C.Structure):
    _fields_ = [("window_ns", C.c_uint64), ("count", C.c_uint64)]


class Event(C.Structure):
    _fields_ = [
        ("ts_ns", C.c_uint64),
        ("rule_id", C.c_uint64),
        ("ifindex", C.c_uint32),
        ("len", C.c_uint32),
        ("dir", C.c_uint8),
        ("reason", C.c_uint8),
        ("audit", C.c_uint8),
        ("family", C.c_uint8),
        ("proto", C.c_uint8),
        ("pad", C.c_uint8),
        ("sport", C.c_uint16),
        ("dport", C.c_uint16),
        ("pad2", C.c_uint16),
        ("src", C.c_uint8 * 16),
        ("dst", C.c_uint8 * 16),
    ]


EVENTS_BYTES = 256 * 1024
EVENTS_DEFAULT_SAMPLE = 1
EVENTS_DEFAULT_MAX_RATE = 1000
EV_SYNCOOKIE = 7
EVENT_REASONS = {
    1: "rule",
    2: "rate_limit",
    3: "default",
    4: "malformed",
    5: "non_ip",
    6: "blocked",
    EV_SYNCOOKIE: "syn_cookie",
}


class SynCounter(C.Structure):
    _fields_ = [
        ("sent", C.c_uint64),
        ("valid", C.c_uint64),
        ("invalid", C.c_uint64),
        ("handoff_err", C.c_uint64),
    ]


class SynSecret(C.Structure):
    _fields_ = [("k0", C.c_uint64), ("k1", C.c_uint64)]


class SynScratch(C.Structure):
    _fields_ = [("rule_id", C.c_uint64), ("slot", C.c_uint32), ("pad", C.c_uint32)]


# Structures checked against the header: name in C -> ctypes class.
MIRRORS: dict[str, type[C.Structure]] = {
    "xg_config": Config,
    "xg_rule": RuleEntry,
    "xg_bitmap": Bitmap,
    "xg_top": Top,
    "xg_sel": Sel,
    "xg_scan_args": ScanArgs,
    "xg_limit_args": LimitArgs,
    "xg_call_args": CallArgs,
    "xg_group_args": GroupArgs,
    "xg_counter": Counter,
    "xg_node": Node,
    "xg_snode": SNode,
    "xg_flow_key": FlowKey,
    "xg_flow": Flow,
    "xg_bucket": Bucket,
    "xg_src_slot": SrcSlot,
    "xg_src_line": SrcLine,
    "xg_limiter": Limiter,
    "xg_block_key": BlockKey,
    "xg_block": Block,
    "xg_event_cfg": EventCfg,
    "xg_event_rate": EventRate,
    "xg_event": Event,
    "xg_dyn_elem": DynElem,
    "xg_dyn_key6": DynKey6,
    "xg_lpm_key4": LpmKey4,
    "xg_lpm_key6": LpmKey6,
    "xg_dynref": DynRef,
    "xg_dyncfg": DynCfg,
    "xg_syn_counter": SynCounter,
    "xg_syn_secret": SynSecret,
    "xg_syn_scratch": SynScratch,
}

# Constants checked against the header: name in C -> value here.
CONSTANTS: dict[str, int] = {
    "XG_ABI_VERSION": ABI_VERSION,
    "XG_MAX_RULES": MAX_RULES,
    "XG_MAX_WORDS": MAX_WORDS,
    "XG_GROUP_RULES": GROUP_RULES,
    "XG_GROUP_WORDS": GROUP_WORDS,
    "XG_MAX_GROUPS": MAX_GROUPS,
    "XG_MAX_BLOCKS": MAX_BLOCKS,
    "XG_NSEL": NSEL,
    "XG_NVERSIONS": NVERSIONS,
    "XG_NDIRS": NDIRS,
    "XG_NHALVES": NHALVES,
    "XG_DIR_INGRESS": DIR_INGRESS,
    "XG_DIR_EGRESS": DIR_EGRESS,
    "XG_SLOT_FLOW_NEW": SLOT_FLOW_NEW,
    "XG_SLOT_BLOCKED": SLOT_BLOCKED,
    "XG_CFG_HAS_BLOCK": CFG_HAS_BLOCK,
    "XG_CFG_STATE_FIRST": CFG_STATE_FIRST,
    "XG_LIMIT_NONE": LIMIT_NONE,
    "XG_LIMIT_PPS": LIMIT_PPS,
    "XG_LIMIT_BPS": LIMIT_BPS,
    "XG_LIMIT_DEFAULT_SIZE": LIMIT_DEFAULT_SIZE,
    "XG_LIMIT_TRIES": LIMIT_TRIES,
    "XG_SRC_WAYS": SRC_WAYS,
    "XG_SKETCH_DEPTH": SKETCH_DEPTH,
    "XG_TAG_GRACE_BITS": TAG_GRACE_BITS,
    "XG_SLOT_CLAIMING": SLOT_CLAIMING,
    "XG_SKETCH_UNTIL_STEP": SKETCH_UNTIL_STEP,
    "XG_BLOCK_V6_PLEN": BLOCK_V6_PLEN,
    "XG_BLOCK_FILTER_CELLS": BLOCK_FILTER_CELLS,
    "XG_EVENTS_BYTES": EVENTS_BYTES,
    "XG_EVENTS_DEFAULT_SAMPLE": EVENTS_DEFAULT_SAMPLE,
    "XG_EVENTS_DEFAULT_MAX_RATE": EVENTS_DEFAULT_MAX_RATE,
    "XG_EV_RULE": 1,
    "XG_EV_LIMIT": 2,
    "XG_EV_DEFAULT": 3,
    "XG_EV_MALFORMED": 4,
    "XG_EV_NON_IP": 5,
    "XG_EV_BLOCKED": 6,
    "XG_EV_SYNCOOKIE": EV_SYNCOOKIE,
    "XG_RULE_SYNCOOKIE": RULE_SYNCOOKIE,
    "XG_RULE_NOT_EST": RULE_NOT_EST,
    "XG_RULE_NOT_NEW": RULE_NOT_NEW,
    "XG_FLOW_DEFAULT_SIZE": FLOW_DEFAULT_SIZE,
    "XG_FLOW_REFRESH_NS": FLOW_REFRESH_NS,
    "XG_NSEC_PER_SEC": NSEC_PER_SEC,
    "XG_ADDR_TABLES": ADDR_TABLES,
    "XG_NODE_SLOTS": nodes.DENSE_SLOTS,
    "XG_ROOT_NODES": nodes.ROOT_NODES,
    "XG_SPARSE_RUNS": nodes.SPARSE_RUNS,
    "XG_SPARSE_PER_NODE": nodes.SPARSE_PER_NODE,
    "XG_REF_CHILD": nodes.CHILD,
    "XG_REF_SPARSE": nodes.SPARSE,
    "XG_REF_INDEX": nodes.INDEX,
    "XG_PROTO_SIZE": PROTO_SIZE,
    "XG_PORT_SIZE": PORT_SIZE,
    "XG_TFLAGS_SIZE": TFLAGS_SIZE,
    "XG_ICMP_SIZE": ICMP_SIZE,
    "XG_MAX_BITMAPS": MAX_BITMAPS,
    "XG_SLOT_DEFAULT": SLOT_DEFAULT,
    "XG_SLOT_MALFORMED": SLOT_MALFORMED,
    "XG_SLOT_NON_IP": SLOT_NON_IP,
    "XG_SLOT_NDP": SLOT_NDP,
    "XG_SLOT_ERROR": SLOT_ERROR,
    "XG_SLOT_FIRST_RULE": SLOT_FIRST_RULE,
    "XG_MAX_SLOTS": MAX_SLOTS,
    "XG_F_EXTRA": F_EXTRA,
    "XG_F_SRC": F_SRC,
    "XG_F_DST": F_DST,
    "XG_F_PROTO": F_PROTO,
    "XG_F_SPORT": F_SPORT,
    "XG_F_DPORT": F_DPORT,
    "XG_F_TFLAGS": F_TFLAGS,
    "XG_F_ICMP": F_ICMP,
    "XG_NFIELDS": NFIELDS,
    "XG_CFG_AUDIT": CFG_AUDIT,
    "XG_CFG_NON_IP_DROP": CFG_NON_IP_DROP,
    "XG_CFG_NDP_RULES": CFG_NDP_RULES,
    "XG_CFG_DEFAULT_DROP": CFG_DEFAULT_DROP,
    "XG_CFG_HAS_STATE": CFG_HAS_STATE,
    "XG_CFG_HAS_DYN": CFG_HAS_DYN,
    "XG_MAX_DYNSETS": MAX_DYNSETS,
    "XG_MAX_DYNREFS": MAX_DYNREFS,
    "XG_MAX_DYNGROUPS": MAX_DYNGROUPS,
    "XG_DYN_SLOTS": DYN_SLOTS,
    "XG_ACT_ALLOW": ACT_ALLOW,
    "XG_ACT_DROP": ACT_DROP,
    "XG_ACT_CONTINUE": ACT_CONTINUE,
    "XG_MAX_CONTINUE": MAX_CONTINUE,
}


def header_text() -> str:
    return (BPF_DIR / "include" / "xdpguard.h").read_text()
