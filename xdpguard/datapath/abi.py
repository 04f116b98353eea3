"""ctypes mirrors of bpf/include/xdpguard.h.

tests/unit/test_abi.py compiles the header with the host C compiler and
checks every size and offset here against it; keep the two in step.
"""

from __future__ import annotations

import ctypes as C
from pathlib import Path

from xdpguard.rules import nodes
from xdpguard.rules.model import MAX_CONTINUE

ABI_VERSION = 2

MAX_RULES = 4096
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

LIMIT_NONE = 0
LIMIT_PPS = 1
LIMIT_BPS = 2
RULE_BUCKETS = NDIRS * 2 * MAX_RULES
LIMIT_DEFAULT_SIZE = 65536
LIMIT_TRIES = 4

ACT_ALLOW = 0
ACT_DROP = 1
ACT_CONTINUE = 2

FLOW_DEFAULT_SIZE = 65536
FLOW_REFRESH_NS = 1_000_000_000
NSEC_PER_SEC = 1_000_000_000

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"


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
        ("l4free_nc_idx", C.c_uint32),
        ("est_nc_idx", C.c_uint32),
        ("new_nc_idx", C.c_uint32),
        ("ones_nc_idx", C.c_uint32),
        ("ncont", C.c_uint32),
        ("cont", C.c_uint16 * MAX_CONTINUE),
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
        ("block_s", C.c_uint32),
        ("per_source", C.c_uint32),
    ]


class Bitmap(C.Structure):
    _fields_ = [("summary", C.c_uint64), ("w", C.c_uint64 * MAX_WORDS)]


class Counter(C.Structure):
    _fields_ = [
        ("packets", C.c_uint64),
        ("bytes", C.c_uint64),
        ("over", C.c_uint64),
        ("over_bytes", C.c_uint64),
    ]


class Bucket(C.Structure):
    _fields_ = [("tat", C.c_uint64)]


class SrcBucketKey(C.Structure):
    _fields_ = [
        ("rule_id", C.c_uint64),
        ("family", C.c_uint8),
        ("plen", C.c_uint8),
        ("pad", C.c_uint8 * 6),
        ("addr", C.c_uint8 * 16),
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
EVENT_REASONS = {1: "rule", 2: "rate_limit", 3: "default", 4: "malformed", 5: "non_ip", 6: "blocked"}

# Structures checked against the header: name in C -> ctypes class.
MIRRORS: dict[str, type[C.Structure]] = {
    "xg_config": Config,
    "xg_rule": RuleEntry,
    "xg_bitmap": Bitmap,
    "xg_counter": Counter,
    "xg_node": Node,
    "xg_snode": SNode,
    "xg_flow_key": FlowKey,
    "xg_flow": Flow,
    "xg_bucket": Bucket,
    "xg_src_bucket_key": SrcBucketKey,
    "xg_block_key": BlockKey,
    "xg_block": Block,
    "xg_event_cfg": EventCfg,
    "xg_event_rate": EventRate,
    "xg_event": Event,
}

# Constants checked against the header: name in C -> value here.
CONSTANTS: dict[str, int] = {
    "XG_ABI_VERSION": ABI_VERSION,
    "XG_MAX_RULES": MAX_RULES,
    "XG_MAX_WORDS": MAX_WORDS,
    "XG_NVERSIONS": NVERSIONS,
    "XG_NDIRS": NDIRS,
    "XG_NHALVES": NHALVES,
    "XG_DIR_INGRESS": DIR_INGRESS,
    "XG_DIR_EGRESS": DIR_EGRESS,
    "XG_SLOT_FLOW_NEW": SLOT_FLOW_NEW,
    "XG_SLOT_BLOCKED": SLOT_BLOCKED,
    "XG_CFG_HAS_BLOCK": CFG_HAS_BLOCK,
    "XG_LIMIT_NONE": LIMIT_NONE,
    "XG_LIMIT_PPS": LIMIT_PPS,
    "XG_LIMIT_BPS": LIMIT_BPS,
    "XG_RULE_BUCKETS": RULE_BUCKETS,
    "XG_LIMIT_DEFAULT_SIZE": LIMIT_DEFAULT_SIZE,
    "XG_LIMIT_TRIES": LIMIT_TRIES,
    "XG_EVENTS_BYTES": EVENTS_BYTES,
    "XG_EVENTS_DEFAULT_SAMPLE": EVENTS_DEFAULT_SAMPLE,
    "XG_EVENTS_DEFAULT_MAX_RATE": EVENTS_DEFAULT_MAX_RATE,
    "XG_EV_RULE": 1,
    "XG_EV_LIMIT": 2,
    "XG_EV_DEFAULT": 3,
    "XG_EV_MALFORMED": 4,
    "XG_EV_NON_IP": 5,
    "XG_EV_BLOCKED": 6,
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
    "XG_ACT_ALLOW": ACT_ALLOW,
    "XG_ACT_DROP": ACT_DROP,
    "XG_ACT_CONTINUE": ACT_CONTINUE,
    "XG_MAX_CONTINUE": MAX_CONTINUE,
}


def header_text() -> str:
    return (BPF_DIR / "include" / "xdpguard.h").read_text()
