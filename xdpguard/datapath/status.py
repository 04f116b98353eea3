"""What `status` and `stats` report about one interface, read from the record and the kernel.

Reading only: nothing here changes the kernel or the state directory.
Dataplane.status and Dataplane.stats (dataplane.py) repair an interrupted
apply first where they may, then hand over to these functions, which put
together the record (version, history, a pending confirm), the kernel's
attachments and maps, and the per-rule counters.
"""

from __future__ import annotations

import time
from typing import Any

from xdpguard.datapath import abi, confirm, dynsets, syncookie
from xdpguard.datapath import bpf as B
from xdpguard.datapath import halves as H
from xdpguard.datapath import maps as M
from xdpguard.datapath import protection as P
from xdpguard.datapath.links import Links
from xdpguard.errors import KernelError
from xdpguard.net import NetError, xdp_mode
from xdpguard.rules.compile import Plan, digest_hash64
from xdpguard.state import Applied, Iface

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def recorded(iface: Iface, applied: Applied | None) -> dict[str, Any]:
    """What the state directory says: the live version, the history, a pending --confirm."""
    out: dict[str, Any] = {}
    if applied:
        out.update(
            file=applied.file,
            digest=applied.digest,
            version=applied.seq,
            applied_at=time.strftime(TIME_FORMAT, time.localtime(applied.applied_at)),
            xdp_mode=applied.xdp_mode,
            netns=applied.netns,
        )
    out["history"] = [
        {
            "version": h.applied.seq,
            "digest": h.applied.digest,
            "file": h.applied.file,
            "applied_at": time.strftime(TIME_FORMAT, time.localtime(h.applied.applied_at)),
            "note": h.applied.note,
        }
        for h in iface.history()
    ]
    pending = iface.load_confirm()
    if pending:
        out["pending_confirm"] = {
            "seconds_left": round(max(0.0, float(pending["deadline"]) - time.time()), 1),
            "reverts_to": pending["target_seq"],
            "watchdog_running": confirm.watchdog_alive(pending),
        }
    return out


def not_attached(ifname: str, applied: Applied) -> dict[str, Any]:
    """A rule set is recorded but nothing is attached."""
    return {
        "protected": False,
        "problem": (
            f"not attached: the recorded rule set (version {applied.seq}) is not in the kernel "
            "(after a reboot, or detached by hand)"
        ),
        "fix": f"`xdpguard restore --iface {ifname}` attaches it again",
    }


def _xdp_mode(index: int, netns: str | None) -> str | None:
    """What the kernel says the XDP attachment is (native or generic), not what was asked
    (`auto` lets the kernel choose); None when it cannot be asked (interface gone)."""
    if not index:
        return None
    try:
        return xdp_mode(index, netns)
    except (NetError, LookupError, OSError):
        return None


def kernel(
    links: Links, pin_dir: str, applied: Applied | None, prot: P.Protection, netns: str | None
) -> dict[str, Any]:
    """What the kernel says about an attached interface: protection, attachments, the live half."""
    ifname = links.iface.ifname
    out: dict[str, Any] = {"protected": prot.ok}
    if not prot.ok:
        out["problem"] = prot.message()
        out["fix"] = prot.fix()
    try:
        x = links.link_status("ingress")
        requested = applied.xdp_mode if applied else "auto"
        out["xdp"] = {
            **x,
            "mode": _xdp_mode(x["ifindex"], netns) or requested,
            "requested_mode": requested,
        }
        tc = links.egress_status()
        if tc is not None:
            out["tc"] = tc
        syn = syncookie.status(pin_dir)
        if syn is not None:
            out["syn_cookies"] = syn
        active = M.read_active(pin_dir)
        with M.open_maps(pin_dir) as m:
            kh = M.read_config(m, M.half_of("ingress", active)).plan_hash
            out["fast_tables"] = fast_tables(m, active)
        out["dynamic_sets"] = dynsets.status(pin_dir)
        out["active_version"] = active
        out["kernel_plan_hash"] = f"{kh:016x}"
        if applied:
            out["consistent"] = kh == digest_hash64(applied.digest)
            if not out["consistent"] and prot.ok:
                out["protected"] = False
                out["problem"] = "the kernel maps do not hold the recorded rule set"
                out["fix"] = f"`xdpguard apply RULES --iface {ifname}` writes it again"
    except (B.BpfError, KernelError) as e:
        out["error"] = e.sentence if isinstance(e, B.BpfError) else str(e)
        out["protected"] = False
        out.setdefault("problem", out["error"])
    return out


def fast_tables(m: M.Maps, active: int) -> dict[str, Any]:
    """The fixed-size tables' sizes (None: none recorded) and, per direction of
    the live half, which of its tables are read from them (docs/design.md,
    "Fixed-size tables")."""
    sizes = M.read_fix_sizes(m)
    out: dict[str, Any] = {"sizes": None}
    if sizes is not None:
        out["sizes"] = {"tops": sizes.tops, "blocks": sizes.blocks, "nodes": sizes.nodes}
    for d in M.DIRECTIONS:
        half = M.half_of(d, active)
        classes = M.size_classes(m, half)
        cfg = M.read_config(m, half)
        # Which bitmap tables packets read: none for sets the words or pflat
        # serve (or no rules), else the flat table or the two levels.
        big = cfg.nwords > abi.GROUP_WORDS or (cfg.nwords and not cfg.flags & (abi.CFG_WORDS | abi.CFG_PFLAT))
        fixed = classes["bitmaps"] or classes["flat"]
        out[d] = {**classes, "bitmap_tables": ("fixed" if fixed else "sized") if big else "none"}
    return out


def counters(ifname: str, pin_dir: str, plan: Plan | None) -> dict[str, Any]:
    """Per-rule packet and byte counts of the live half, the flow table, the blocked sources.

    `plan` (the recorded one) names the rules; without it they are numbered.
    """
    active = M.read_active(pin_dir)
    out: dict[str, Any] = {"interface": ifname}
    overflow: dict[str, int] = {}
    with M.open_maps(pin_dir) as m:
        for direction in M.DIRECTIONS:
            half = M.half_of(direction, active)
            cfg = M.read_config(m, half)
            entries = M.read_rules(m, half, cfg.nrules)
            names = {}
            if plan is not None:
                names = {r.rule_id: (r.name, r.action.value) for r in H.dir_plan(plan, direction).rules}
            slots = [e.slot for e in entries] + list(abi.RESERVED_SLOTS.values()) + [abi.SLOT_LIMIT_SKETCH]
            counts = M.read_counters(m, direction, slots)
            overflow[direction] = counts[abi.SLOT_LIMIT_SKETCH][0]
            syn = syncookie.read_counters(pin_dir, [e.slot for e in entries if e.flags & abi.RULE_SYNCOOKIE])
            rules = []
            for i, e in enumerate(entries):
                fallback = (
                    f"#{i}",
                    {abi.ACT_DROP: "drop", abi.ACT_CONTINUE: "continue"}.get(e.action, "allow"),
                )
                name, action = names.get(e.rule_id, fallback)
                pk, by, over, over_by = counts[e.slot]
                row: dict[str, Any] = {"name": name, "action": action, "packets": pk, "bytes": by}
                if e.limit != abi.LIMIT_NONE:
                    row["limit"] = {
                        "admitted": pk - over,
                        "over_limit": over,
                        "over_limit_bytes": over_by,
                    }
                if e.slot in syn:
                    row["syn_cookies"] = syn[e.slot]
                rules.append(row)
            special = {
                k: {"packets": counts[v][0], "bytes": counts[v][1]} for k, v in abi.RESERVED_SLOTS.items()
            }
            default = special.pop("default")
            out[direction] = {
                "rules": rules,
                "default": {"action": "drop" if cfg.flags & abi.CFG_DEFAULT_DROP else "allow", **default},
                **special,
            }
        created = M.read_counters(m, "egress", [abi.SLOT_FLOW_NEW])[abi.SLOT_FLOW_NEW][0]
        fill = M.flow_table_fill(m)
        size = B.map_info(m["flows"]).max_entries
        # Entries are never deleted, only reused by the LRU: what was
        # created and is no longer there was evicted.
        out["flows"] = {
            "entries": fill,
            "size": size,
            "created": created,
            "evicted": max(0, created - fill),
        }
        # The slots held by active sources now (the table's headroom), and
        # the packets of per-source limits whose source found every slot of
        # its line held by another active source: the overflow sketch judged
        # them.  Not 0 means the table was full: see docs/rules.md
        # (limit_table_size).
        out["limiter"] = {
            "table_size": B.map_info(m["src_sketch"]).max_entries,
            "held": M.src_slots_held(m, dynsets.now_ns(pin_dir)),
            "overflow": overflow,
        }
        out["blocked"] = M.read_blocked(m, plan)
    return out
