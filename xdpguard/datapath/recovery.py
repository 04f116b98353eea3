"""Finishing or undoing an update that died half-way, from its journal.

An apply writes a journal (the new plan and its record) before it touches
the kernel, and removes it once the record is committed; a journal found
later means the process died in between.  The live half's config hash says
how far it got: if packets read the new plan, the journalled record is
committed; if they read the recorded one, the new plan never happened;
anything else (not expected, each half is switched whole) makes the new
plan live from scratch.  Either way the other half is then brought level,
and programs or links lost in a crash while re-pinning are restored.

Dataplane (dataplane.py) calls `finish` with the interface's lock held,
before anything else changes the interface; a first attach that died
(nothing live) is removed there instead.
"""

from __future__ import annotations

import json
from typing import Any

from xdpguard.datapath import dynsets
from xdpguard.datapath import halves as H
from xdpguard.datapath import maps as M
from xdpguard.datapath.links import Links
from xdpguard.rules.compile import Plan, plan_from_bytes
from xdpguard.state import Applied, DamagedState, Iface, Snapshot, StateError, state_root


def _decode(iface: Iface, meta: dict[str, Any], plan_bytes: bytes) -> tuple[Plan, Snapshot]:
    try:
        new = plan_from_bytes(plan_bytes)
        snap = Snapshot(
            Applied.from_json(json.dumps(meta["applied"])),
            plan_bytes,
            meta.get("rules_text"),
            meta.get("summary"),
        )
    except Exception as e:  # not what xdpguard wrote
        path = iface.state_dir / "journal.plan.bin"
        raise DamagedState(path, f"{type(e).__name__}: {e}", iface.ifname) from e
    return new, snap


def finish(iface: Iface, links: Links, meta: dict[str, Any], plan_bytes: bytes) -> str:
    """Bring kernel and record to one rule set after an interrupted update; what was done."""
    pin_dir = str(iface.pin_dir)
    new, journalled = _decode(iface, meta, plan_bytes)
    old = iface.load_plan()
    with M.open_maps(pin_dir) as m:
        active = M.read_active(pin_dir)
        live_hashes = {M.read_config(m, M.half_of(d, active)).plan_hash for d in M.DIRECTIONS}
        if live_hashes == {new.hash64}:
            live, msg = (
                new,
                f"an interrupted apply of {journalled.applied.file} had reached the kernel: recorded it",
            )
            _record(iface, m, journalled, new, old)
        elif old is not None and live_hashes == {old.hash64}:
            live, msg = (
                old,
                "an interrupted apply never reached the packets: the previous rule set stayed live",
            )
        else:
            # Not expected (each half is switched whole); make the new plan live from scratch.
            live, msg = (
                new,
                "an interrupted apply left unknown map contents: rewrote the rule set in full",
            )
            H.switch(m, pin_dir, new, None, H.holds_all(False))
            _record(iface, m, journalled, new, old)
        # The half packets do not read may be half-written: level it.
        H.level(m, live, active)
        dynsets.drop_undeclared(m, live)
    links.ensure_prog_pins()
    missing = links.unlinked()
    if missing:
        applied = iface.load_applied()
        for direction in missing:
            links.link_pinned(direction, applied.xdp_mode if applied else "auto")
            msg += f"; re-attached the {direction} program"
    iface.end()
    return msg


def _record(iface: Iface, m: M.Maps, journalled: Snapshot, new: Plan, old: Plan | None) -> None:
    """Record what an interrupted apply made live, or, if the record cannot be
    written, put the recorded rule set back so that kernel and record agree."""
    try:
        iface.commit(journalled)
    except StateError as e:
        if old is None:
            raise
        H.switch(m, str(iface.pin_dir), old, new, H.holds_all(True))
        iface.end()
        raise StateError(
            f"{e}; an interrupted apply had reached the kernel and could not be recorded: put the "
            f"recorded rule set back; free space in (or remount read-write) {state_root()}, apply again"
        ) from e
