"""The two halves of the rule tables: how a plan reaches the maps without a packet seeing a mix.

Every direction has two copies (halves) of its rule tables, and a per-CPU
flag says which one packets read.  An update writes the half packets are
not reading, flips the flag, waits an RCU grace period (after which no
packet still reads the old half), then brings the old half level, so the
next update can again write only what changed.  `holds` says, per
(direction, half), whether that half is known to hold the previous plan:
only such a half may be written as a difference from it.

These functions work on open maps and know nothing of records, journals or
locks; dataplane.py decides when to call them, and the `fault` points let
the crash-safety tests stop between any two steps.
"""

from __future__ import annotations

from xdpguard.datapath import abi, syncookie
from xdpguard.datapath import maps as M
from xdpguard.datapath.rcu import rcu_barrier
from xdpguard.rules.compile import DirectionPlan, Plan
from xdpguard.state import fault

Holds = dict[tuple[str, int], bool]  # (direction, half) -> it holds the previous plan


def dir_plan(plan: Plan, direction: str) -> DirectionPlan:
    return plan.ingress if direction == "ingress" else plan.egress


def holds_all(value: bool) -> Holds:
    return {(d, v): value for d in M.DIRECTIONS for v in (0, 1)}


def holding(m: M.Maps, old: Plan | None) -> Holds:
    """What each half holds, as the kernel says: its config hash is the old plan's or not."""
    old_hash = old.hash64 if old is not None else None
    return {
        (direction, v): M.read_config(m, M.half_of(direction, v)).plan_hash == old_hash
        for direction in M.DIRECTIONS
        for v in (0, 1)
    }


def initialise(pin_dir: str, plan: Plan) -> M.WriteStats:
    """Fresh maps of a first attach: default settings, the plan in both halves, half 0 live.

    The programs were loaded into an empty pin directory (Dataplane._attach
    removes any leftovers first), so every map is new, and the kernel makes
    new arrays, per-CPU ones too, all zero: counters and buckets start at
    zero without a write (which took 0.3 s for the 262,160 slots)."""
    writes = M.WriteStats()
    with M.open_maps(pin_dir) as m:
        M.ensure_limiter_key(m)
        M.write_event_cfg(m, abi.EVENTS_DEFAULT_SAMPLE, abi.EVENTS_DEFAULT_MAX_RATE)
        for direction in M.DIRECTIONS:
            d = dir_plan(plan, direction)
            slots, _ = M.allocate_slots([], [], [r.rule_id for r in d.rules])
            inner = M.Inner()
            try:
                st, _ = M.write_half(m, M.half_of(direction, 0), plan, d, None, slots, inner)
                writes.add(st)
                M.write_half(m, M.half_of(direction, 1), plan, d, None, slots, inner)
            finally:
                inner.close()
    M.write_active(pin_dir, 0)
    return writes


def switch(m: M.Maps, pin_dir: str, plan: Plan, old: Plan | None, holds: Holds) -> M.WriteStats:
    """Write the inactive half, flip, wait out readers, level the other half."""
    writes = M.WriteStats()
    active = M.read_active(pin_dir)
    inactive = 1 - active
    inner = {dn: M.Inner() for dn in M.DIRECTIONS}
    # Per direction, what the second half gets too: counter slots and config.
    slots: dict[str, dict[int, int]] = {}
    try:
        pending: list[M.HalfWrite] = []
        for direction in M.DIRECTIONS:
            d = dir_plan(plan, direction)
            h_act, h_in = M.half_of(direction, active), M.half_of(direction, inactive)
            rules_a = M.read_rule_slots(m, h_act, M.read_config(m, h_act).nrules)
            rules_i = M.read_rule_slots(m, h_in, M.read_config(m, h_in).nrules)
            slots[direction], fresh = M.allocate_slots(rules_a, rules_i, [r.rule_id for r in d.rules])
            M.zero_counters(m, direction, fresh)
            if direction == "ingress":
                syncookie.zero_counters(pin_dir, fresh)
            od = dir_plan(old, direction) if old is not None and holds[(direction, inactive)] else None
            st, hw = M.write_half(m, h_in, plan, d, od, slots[direction], inner[direction], commit=False)
            writes.add(st)
            pending.append(hw)
            fault(f"inactive-{direction}")
        M.commit_halves(m, pending)
        M.write_active(pin_dir, inactive)
        fault("flipped")
        # No packet still reads the old half once a grace period has passed.
        rcu_barrier()
        pending = []
        for direction in M.DIRECTIONS:
            d = dir_plan(plan, direction)
            od = dir_plan(old, direction) if old is not None and holds[(direction, active)] else None
            h_old = M.half_of(direction, active)
            _, hw = M.write_half(m, h_old, plan, d, od, slots[direction], inner[direction], commit=False)
            pending.append(hw)
            fault(f"levelled-{direction}")
        M.commit_halves(m, pending)
    finally:
        for i in inner.values():
            i.close()
    return writes


def level(m: M.Maps, live: Plan, active: int) -> None:
    """Rewrite in full each half beside `active` that does not hold `live`
    (an apply that died may have left it half-written), with the live half's slots."""
    for direction in M.DIRECTIONS:
        h_in = M.half_of(direction, 1 - active)
        if M.read_config(m, h_in).plan_hash != live.hash64:
            d = dir_plan(live, direction)
            h_act = M.half_of(direction, active)
            slots = dict(M.read_rule_slots(m, h_act, d.nrules))
            inner = M.Inner()
            try:
                M.write_half(m, h_in, live, d, None, slots, inner)
            finally:
                inner.close()
