"""The ABI the BPF programs share with Python: ctypes mirrors of the structs
of bpf/include/xdpguard.h, and its numbers (rules/abi_consts.py, re-exported).

tests/unit/test_abi.py compiles the header with the host C compiler and
checks every size, offset and constant here against it; keep them in step.
"""

from __future__ import annotations

import ctypes as C

from xdpguard import resources
from xdpguard.rules import abi_consts, nodes
from xdpguard.rules.abi_consts import *  # noqa: F403 (re-exported: the data path reads abi.NAME)

BPF_DIR = resources.BPF_DIR  # the header this module mirrors lives there


def src_lines(limit_table_size: int) -> int:
    """Lines of the per-source slot table (XG_SRC_LINES): the size rounded up to whole lines."""
    return (limit_table_size + SRC_WAYS - 1) // SRC_WAYS


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


class Sel(C.Structure):
    _fields_ = [("idx", C.c_uint32 * NSEL), ("oridx", C.c_uint32 * NOR)]


class ScanArgs(C.Structure):
    _fields_ = [
        ("sel", Sel),
        ("half", C.c_uint32),
        ("nwords", C.c_uint32),
        ("from", C.c_uint32),  # a Python keyword: getattr(args, "from")
        ("ones", C.c_uint32),
        ("pflat", C.c_uint32),
        ("fixed", C.c_uint32),
    ]


class LimitArgs(C.Structure):
    _fields_ = [
        ("rule_key", C.c_uint32),
        ("dir", C.c_uint32),
        ("len", C.c_uint64),
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
        ("fixed", C.c_uint32),
        ("pad", C.c_uint32),
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


class FixSize(C.Structure):
    _fields_ = [
        ("tops", C.c_uint32),
        ("blocks", C.c_uint32),
        ("nodes", C.c_uint32),
        ("pad", C.c_uint32),
    ]


class Limiter(C.Structure):
    _fields_ = [
        ("key", C.c_uint64 * 2),
        ("pad", C.c_uint64 * 14),
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
    _fields_ = [
        ("field", C.c_uint8),
        ("slot", C.c_uint8),
        ("group", C.c_uint8),
        ("pad", C.c_uint8 * 5),
        ("salt", C.c_uint64),
    ]


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
    "xg_fixsize": FixSize,
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

# Constants checked against the headers: name in C -> value here.  Every
# integer of rules/abi_consts.py is XG_<its name>; the address-table node
# layout lives with its builder (rules/nodes.py) under other names.
CONSTANTS: dict[str, int] = {
    **{f"XG_{k}": v for k, v in vars(abi_consts).items() if k.isupper() and type(v) is int},
    "XG_NODE_SLOTS": nodes.DENSE_SLOTS,
    "XG_ROOT_NODES": nodes.ROOT_NODES,
    "XG_SPARSE_RUNS": nodes.SPARSE_RUNS,
    "XG_SPARSE_PER_NODE": nodes.SPARSE_PER_NODE,
    "XG_REF_CHILD": nodes.CHILD,
    "XG_REF_SPARSE": nodes.SPARSE,
    "XG_REF_INDEX": nodes.INDEX,
}


def header_text() -> str:
    return (BPF_DIR / "include" / "xdpguard.h").read_text()
