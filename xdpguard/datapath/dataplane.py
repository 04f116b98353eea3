"""The life cycle of xdpguard on one interface: attach, update, roll back, repair, detach.

`Dataplane` decides what happens and in which order, under the
interface's lock, and keeps the state directory's record (journal, commit,
history) in step with the kernel.  The kernel work is done elsewhere:
links.py attaches the programs and owns the pins, halves.py writes a plan
into the double-buffered maps (an update never shows a packet a mix of
rule sets), recovery.py finishes an update that died, status.py reads
what `status` and `stats` report.  The programs are compiled (bcc,
loader.py) only when none is attached or their sources changed, or when
asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import confirm, dynsets, loader, probes, syncookie
from xdpguard.datapath import halves as H
from xdpguard.datapath import maps as M
from xdpguard.datapath import protection as P
from xdpguard.datapath import recovery as R
from xdpguard.datapath import status as S
from xdpguard.datapath.links import Links, ensure_bpffs
from xdpguard.datapath.links import prog_pin_name as prog_pin_name  # importers use it from here
from xdpguard.errors import KernelError, UsageError
from xdpguard.net import NetError, NoSuchNetns, in_netns, opened_connections
from xdpguard.net import ifindex as lookup_ifindex
from xdpguard.rules.compile import Plan, plan_digest, plan_from_bytes
from xdpguard.state import (
    TABLES_DIR,
    Applied,
    DamagedState,
    Iface,
    LockTimeout,
    Snapshot,
    StateError,
    fault,
    known_ifaces,
    state_root,
)


@dataclass
class ApplyResult:
    changed: bool
    attached: bool = False  # programs were attached for the first time
    replaced: bool = False  # the programs were recompiled and swapped
    seconds: float = 0.0
    writes: M.WriteStats = field(default_factory=M.WriteStats)
    messages: list[str] = field(default_factory=list)


def _require_root() -> None:
    if not probes.privileged():
        raise KernelError(
            "this command changes the kernel's BPF state: run it as root (CAP_BPF and CAP_NET_ADMIN)"
        )


class Dataplane:
    """xdpguard on one interface.  `ifindex` is None when the caller does not
    know it: it is then looked up (once) if an attach or detach needs it."""

    def __init__(self, ifname: str, ifindex: int | None, netns: str | None = None) -> None:
        self.iface = Iface(ifname)
        self.ifindex = ifindex
        self.netns = netns
        self.warnings: list[str] = []  # said by the CLI after the command (e.g. state left behind)
        self.links = Links(self.iface, self._ifindex)

    @property
    def pin_dir(self) -> str:
        return str(self.iface.pin_dir)

    @property
    def attached(self) -> bool:
        return self.links.attached

    @property
    def egress_mode(self) -> str:
        """How the egress program is attached: "tcx" (a pinned link) or "netlink" (clsact + cls_bpf)."""
        return self.links.egress_mode

    def _ifindex(self) -> int:
        if self.ifindex is None:
            self.ifindex = lookup_ifindex(self.iface.ifname)
        return self.ifindex

    # ------------------------------------------------------------------ apply

    def apply(
        self,
        plan: Plan,
        rules_text: str | None,
        xdp_mode: str = "auto",
        replace_program: bool = False,
        summary: dict[str, Any] | None = None,
        note: str = "",
    ) -> ApplyResult:
        _require_root()
        ensure_bpffs()
        t0 = time.monotonic()
        with self.iface.lock():
            recovered = self._recover() + self._drop_overdue()
            res = self._apply_locked(plan, rules_text, xdp_mode, replace_program, summary, note)
            res.messages[:0] = recovered
        res.seconds = time.monotonic() - t0
        return res

    def _apply_locked(
        self,
        plan: Plan,
        rules_text: str | None,
        xdp_mode: str,
        replace_program: bool,
        summary: dict[str, Any] | None,
        note: str,
    ) -> ApplyResult:
        applied = self.iface.load_applied()
        new = Applied(
            ifname=self.iface.ifname,
            ifindex=self.ifindex or 0,  # 0: not known to the caller and not needed (an update)
            # A rollback or apply run without --netns keeps the recorded namespace.
            netns=self.netns if self.netns is not None else (applied.netns if applied else None),
            file=os.path.abspath(plan.source) if plan.source else "",
            digest=plan.digest,
            applied_at=time.time(),
            seq=(applied.seq + 1) if applied else 1,
            xdp_mode=applied.xdp_mode if (applied and self.attached) else xdp_mode,
            source_hash=loader.source_hash(),
            directions=list(M.DIRECTIONS),
            note=note,
        )
        snap = Snapshot(new, plan.to_bytes(), rules_text, summary)
        syn_due = plan.ingress.uses_syn_cookies and not (
            self.attached and syncookie.current(self.pin_dir, self.iface.state_dir)
        )
        # Refuse before anything changes: the programs' own check only when
        # they are due, the namespace's sysctl on every apply that needs it
        # (it can have changed since the programs were loaded).
        if plan.ingress.uses_syn_cookies:
            syncookie.check_kernel(load_test=syn_due)
        if self.attached:
            dynsets.check_resizes(self.pin_dir, plan)
        if not self.attached:
            self._begin("attach", snap)
            res = self._attach(plan, xdp_mode)
        else:
            # Never "updated" while nothing is attached: the kernel, not the
            # record, says where the programs are.
            repaired = self.ensure_protected(new.xdp_mode)
            res = self._update(plan, applied, replace_program, snap)
            res.messages[:0] = repaired
        if syn_due and syncookie.ensure(
            self.pin_dir, self.iface.state_dir, self._ifindex(), self.iface.ifname
        ):
            res.messages.append("loaded the SYN-cookie programs (XDP, and tcx ingress for the hand-off)")
        if plan.ingress.uses_syn_cookies:
            res.messages += self._syn_answer_path()
        if res.changed or res.attached:
            try:
                self.iface.commit(snap)
            except StateError as e:
                raise StateError(self._undo(res, plan, applied, e)) from e
            fault("committed")
            self.iface.end()
        elif res.replaced and applied is not None:
            applied.source_hash = new.source_hash
            try:
                self.iface.commit(Snapshot(applied, plan.to_bytes(), rules_text, summary))
            except StateError as e:
                # The programs are current and compatible; only the note of their version is stale.
                res.messages.append(f"{e} (the new programs run; the next apply records them)")
        return res

    def _syn_answer_path(self) -> list[str]:
        """On a veth, whether the SYN-ACKs syn_cookies sends back (XDP_TX) can
        reach the other end: a veth delivers them only while its peer runs an
        XDP program (net.veth_peer_receives_xdp_tx).  Any other kind of
        interface sends them out of its own queue."""
        try:
            peer = net.veth_peer_receives_xdp_tx(self._ifindex(), self.recorded_netns())
        except (NetError, OSError):
            return []
        if peer is None or peer[1]:
            return []
        name, known = peer
        if known is None:
            return [
                f"note: {self.iface.ifname} is a veth: the SYN-ACKs syn_cookies sends back reach {name} "
                "only while that end runs an XDP program (one that passes everything will do); "
                "without one no client can connect"
            ]
        return [
            f"warning: {self.iface.ifname} is a veth and its peer {name} runs no XDP program: the SYN-ACKs "
            "syn_cookies sends back do not reach it and no client can connect; attach an XDP program "
            f"to {name} (one that passes everything will do)"
        ]

    def _undo(self, res: ApplyResult, plan: Plan, applied: Applied | None, err: StateError) -> str:
        """The record of an apply could not be written: put the kernel back as recorded.

        The journal was written before the kernel was touched, so the only
        way the two can part is here, after the kernel took the new rule
        set.  Rather than leave a kernel the state directory does not
        describe (and every later command failing while it tries to record
        it), the previous rule set goes back on.
        """
        where = f"free space in (or remount read-write) {state_root()} and apply again"
        if res.attached:
            self._abandon_attach()
            return f"{err}; nothing is attached to {self.iface.ifname}: {where}"
        old = self.iface.load_plan()
        if old is None or applied is None:
            return (
                f"{err}; {self.iface.ifname} runs the new rule set, which is not recorded: {where} "
                "(the journal lets the next command record it)"
            )
        with M.open_maps(self.pin_dir) as m:
            H.switch(m, self.pin_dir, old, plan, H.holds_all(True))
        self.iface.end()
        return (
            f"{err}; the kernel was put back to version {applied.seq}, the rule set the state directory "
            f"records, so nothing changed: {where}"
        )

    def _begin(self, kind: str, snap: Snapshot) -> None:
        old = self.iface.load_applied()
        try:
            self.iface.begin(
                kind,
                snap.plan_bytes,
                {
                    "applied": json.loads(snap.applied.to_json()),
                    "old_digest": old.digest if old else None,
                    "rules_text": snap.rules_text,
                },
                snap.summary_json,
            )
        except StateError as e:
            if old is None and not self.attached:
                self.iface.remove_state()  # a first attach that never started leaves nothing
            raise StateError(
                f"{e}; nothing was changed: free space in (or remount read-write) {state_root()}, apply again"
            ) from e
        fault("journal")

    def _attach(self, plan: Plan, xdp_mode: str) -> ApplyResult:
        if os.path.isdir(self.pin_dir) and os.listdir(self.pin_dir):
            # Leftovers of an attach that died before linking: nothing uses
            # them (no XDP link), so start clean rather than trust them.
            self._remove_pins()
        res = ApplyResult(changed=True, attached=True)
        linked = False
        try:
            loaded = self._load(plan)
            fault("attach-loaded")
            try:
                problems = M.check_pinned_sizes(self.pin_dir, plan)
                if problems:
                    raise KernelError("; ".join(problems))
                res.writes = H.initialise(self.pin_dir, plan)
                fault("attach-maps")
                self.links.pin_programs(loaded.prog_fds)
                # Egress first: the pinned XDP link is what marks xdpguard attached.
                for direction in ("egress", "ingress"):
                    self.links.link(direction, loaded.prog_fds[direction], xdp_mode)
                    fault(f"attach-linked-{direction}")
                    if direction == "egress":
                        res.messages += self._record_open_connections()
                linked = True
            finally:
                loaded.close()
        except BaseException:
            if not linked:
                self._abandon_attach()
            raise
        return res

    def _update(
        self, plan: Plan, applied: Applied | None, replace_program: bool, snap: Snapshot | None
    ) -> ApplyResult:
        raw = self.iface.load_plan_bytes()
        if raw is not None and plan_digest(raw) == plan.digest:
            old: Plan | None = plan  # the same plan: no need to decode the recorded one
        else:
            old = self.iface.load_plan()
        for name, setting, want in (
            ("flows", "flow_table_size", plan.flow_table_size),
            ("src_sketch", "limit_table_size", plan.limit_table_size),
        ):
            have = M.pinned_size(self.pin_dir, name)
            if have is not None and have != want:
                raise UsageError(
                    f"{plan.source}: {setting} {want} differs from the live table's {have}; resizing "
                    "forgets what the table tracks, so it takes `xdpguard detach` then `apply`"
                )
        res = ApplyResult(changed=False)
        self.links.ensure_prog_pins()
        missing = M.missing_pins(self.pin_dir)
        if missing:
            # Pinned by an older xdpguard: the new programs create the maps
            # it lacked, which get the recorded plan before the swap.
            if old is None or not set(missing) <= M.ADDED_MAPS:
                raise KernelError(
                    f"the pinned maps in {self.pin_dir} lack {', '.join(missing)} and cannot be "
                    f"completed in place; run `xdpguard detach --iface {self.iface.ifname}` and apply again"
                )
            self._replace_programs(plan, fill_for=old)
            gone = M.remove_retired_pins(self.pin_dir)
            res.replaced = True
            res.messages.append(
                f"the maps were pinned by an older xdpguard: added {', '.join(sorted(missing))} and "
                "replaced the programs" + (f" (removed the retired {', '.join(gone)} pins)" if gone else "")
            )
        with M.open_maps(self.pin_dir) as m:
            # A half whose config hash is not the recorded plan's is rewritten in full.
            holds = H.holding(m, old)
            program_due = not res.replaced and (replace_program or self._program_outdated(applied))
            if old is not None and all(holds.values()) and old.digest == plan.digest:
                if program_due:
                    self._replace_programs(plan, fill_for=old)
                    res.replaced = True
                dynsets.collect(m, plan)
                dynsets.tidy_filter(m, dropped=False)
                res.messages.append("no changes")
                return res
            if old is not None and not all(holds.values()):
                res.messages.append(
                    "the kernel maps did not hold the recorded rule set: rewrote them in full"
                )
            if snap is not None:
                self._begin("update", snap)
            if program_due:
                self._replace_programs(plan, fill_for=old)
                res.replaced = True
                fault("replaced")
            res.changed = True
            res.writes = H.switch(m, self.pin_dir, plan, old, holds)
            res.messages += M.outgrown_note(m, plan)
            # No half refers to the sets the new plan dropped any more.
            dropped = dynsets.drop_undeclared(m, plan)
            if dropped:
                res.messages.append(
                    f"dropped the dynamic set{'s' if len(dropped) > 1 else ''} {', '.join(dropped)}"
                )
            dynsets.collect(m, plan)
            dynsets.tidy_filter(m, dropped=bool(dropped))
        return res

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> list[str]:
        """Finish or undo an apply that died (recovery.py); bring every half level with the live one.

        Called with the lock held, before anything else changes the interface.
        """
        j = self.iface.journal()
        if j is None:
            return []
        if not self.attached:
            # The attach died before its XDP link was pinned: nothing was live.
            self._abandon_attach()
            return ["an interrupted first attach left objects behind: removed them"]
        return [R.finish(self.iface, self.links, *j)]

    def recover(self, wait: bool = True) -> list[str]:
        """Repair what an interrupted apply left, and revert an unconfirmed rule
        set whose watchdog is gone (status and rollback call this).

        With wait=False (status), an apply that holds the lock is simply in
        progress, not interrupted: report that rather than wait for it.
        """
        if self.iface.journal() is None and self._overdue_confirm() is None:
            return []
        _require_root()
        try:
            with self.iface.lock(timeout=None if wait else 0):
                return self._recover() + self._revert_overdue()
        except LockTimeout:
            return ["an apply is in progress"]

    def _overdue_confirm(self) -> dict[str, Any] | None:
        try:
            pending = self.iface.load_confirm()
        except DamagedState:
            return None  # shown as NOT PROTECTED by status; confirm or detach clears it
        return pending if pending and confirm.overdue(pending) else None

    def _revert_overdue(self) -> list[str]:
        """What the watchdog of an expired --confirm window should have done and
        did not (it died, or the apply that would have started it did): done
        now, by whichever command comes first.  Called with the lock held."""
        pending = self._overdue_confirm()
        if pending is None:
            return []
        late = time.time() - float(pending["deadline"])
        return [
            f"the --confirm deadline passed {late:.0f} s ago and no watchdog was left to act: "
            + self.revert_unconfirmed_locked(pending)
        ]

    def _drop_overdue(self) -> list[str]:
        """An apply replaces the live rule set anyway: an expired --confirm
        window no watchdog acted on is dropped, not reverted first (reverting
        to "no xdpguard" would detach under the apply's feet).  The result is
        what the watchdog and then this apply would have left."""
        pending = self._overdue_confirm()
        if pending is None:
            return []
        self.iface.clear_confirm()
        return [
            "the --confirm window of the unconfirmed rule set ran out with no watchdog left to revert it; "
            "this apply replaces that rule set"
        ]

    def revert_unconfirmed_locked(self, pending: dict[str, Any]) -> str:
        """Put back the rule set a --confirm window guards (or detach, if there
        was none before it); the watchdog's act at the deadline."""
        target = int(pending["target_seq"])
        if target == 0:
            removed = self.detach_locked()
            msg = f"not confirmed in time: detached ({len(removed)} pinned objects removed)"
        else:
            _, snap = self.rollback_locked(target, note="confirm timeout")
            msg = f"not confirmed in time: restored version {snap.applied.seq} ({snap.applied.file})"
        self.iface.clear_confirm()
        return msg

    # ------------------------------------------------------------------ history

    def rollback(self, to_seq: int | None = None) -> tuple[ApplyResult, Snapshot]:
        """Apply an earlier rule set again (the previous distinct one by default)."""
        _require_root()
        with self.iface.lock():
            return self.rollback_locked(to_seq)

    def rollback_locked(self, to_seq: int | None, note: str = "") -> tuple[ApplyResult, Snapshot]:
        msgs = self._recover()
        current = self.iface.load_applied()
        if current is None or not self.attached:
            raise KernelError(f"xdpguard is not attached to {self.iface.ifname}: nothing to roll back")
        target = self._rollback_target(current, to_seq)
        try:
            plan = plan_from_bytes(target.plan_bytes, target.applied.file)
        except Exception as e:  # the digest matched, so this is not expected: say which file
            path = self.iface.state_dir / "history" / f"{target.applied.seq:08d}" / "plan.bin"
            raise DamagedState(path, f"{type(e).__name__}: {e}", self.iface.ifname) from e
        t0 = time.monotonic()
        res = self._apply_locked(
            plan,
            target.rules_text,
            current.xdp_mode,
            False,
            target.summary,
            note or f"rollback to version {target.applied.seq}",
        )
        res.seconds = time.monotonic() - t0
        res.messages[:0] = msgs
        return res, target

    def _rollback_target(self, current: Applied, to_seq: int | None) -> Snapshot:
        hist = self.iface.history()
        if to_seq is not None:
            for s in hist:
                if s.applied.seq == to_seq:
                    return s
            raise UsageError(f"version {to_seq} is not in the history of {self.iface.ifname} (see `status`)")
        for s in reversed(hist):
            if s.applied.seq < current.seq and s.applied.digest != current.digest:
                return s
        raise UsageError(f"{self.iface.ifname} has no earlier rule set to roll back to")

    def _program_outdated(self, applied: Applied | None) -> bool:
        return applied is not None and applied.source_hash != loader.source_hash()

    def _load(self, plan: Plan) -> loader.Loaded:
        """Build and load both programs, their sized maps as `plan` asks and their
        fixed-size tables as the pins were made (or as `plan` asks, if none were)."""
        fix = M.fix_sizes_for(self.pin_dir, plan)
        loaded = loader.load(self.pin_dir, plan.flow_table_size, plan.limit_table_size, fix)
        try:
            M.record_fix_sizes(self.pin_dir, fix)
        except BaseException:
            loaded.close()
            raise
        return loaded

    def _replace_programs(self, plan: Plan, fill_for: Plan | None = None) -> None:
        """Compile, load and swap both programs through their links.

        With fill_for (the plan the halves hold), address-table slots the
        load left empty (a map the old programs did not have) get that
        plan's tables, and new `words` and `pflat` maps their entries, before the swap, so
        no packet meets an empty table; the dynamic-set filter is rebuilt
        from the pinned sets in any case.
        """
        problems = M.check_pinned_sizes(self.pin_dir, plan)
        if problems:
            raise KernelError(
                "the pinned maps do not fit the new programs (" + "; ".join(problems) + "); "
                "run `xdpguard detach` and apply again"
            )
        loaded = self._load(plan)
        try:
            with M.open_maps(self.pin_dir) as m:
                M.ensure_limiter_key(m)  # maps an older xdpguard lacked are new and zero
                if fill_for is not None:
                    M.fill_empty_addr_tables(m, fill_for)
                    M.fill_in_place(m, fill_for)
                # A filter the load created is empty: it would hide every element.
                dynsets.rebuild_filter(self.pin_dir, m[dynsets.FILTER])
            self.links.swap_programs(loaded.prog_fds)
        finally:
            loaded.close()

    # ------------------------------------------------------------------ protection

    def recorded_netns(self) -> str | None:
        """The namespace the interface lives in: the one given, else the recorded one."""
        if self.netns is not None:
            return self.netns
        applied = self.iface.load_applied()
        return applied.netns if applied else None

    def protection(self) -> P.Protection:
        """What the kernel says about this interface (see protection.py)."""
        ns = self.recorded_netns()
        try:
            with in_netns(ns):
                return P.check(self.pin_dir, self.iface.ifname, self.egress_mode == "netlink")
        except NoSuchNetns:
            prot = P.Protection(self.iface.ifname, kind=P.GONE)
            prot.problems.append(f"network namespace {ns} is gone, and {self.iface.ifname} with it")
            return prot

    def ensure_protected(self, xdp_mode: str) -> list[str]:
        """Repair what the kernel check finds, or refuse; returns what was done.

        Called with the lock held by every command that changes protection
        (apply, rollback, the confirm watchdog, restore) before it writes.
        """
        prot = self.protection()
        if prot.ok:
            return []
        if prot.kind == P.GONE:
            raise KernelError(f"{prot.message()}: nothing to protect; {prot.fix()}")
        if prot.kind == P.NOT_ATTACHED:
            raise KernelError(f"{prot.message()}; {prot.fix()}")
        msgs = []
        if prot.needs_attach:
            with in_netns(self.recorded_netns()):
                msgs.append(self._reattach(prot, xdp_mode))
            prot = self.protection()
        if prot.kind == P.PINS:
            msgs.append(self.links.repin(prot))
            prot = self.protection()
        if not prot.ok:
            raise KernelError(f"{self.iface.ifname}: {prot.message()}; {prot.fix()}")
        return msgs

    def _reattach(self, prot: P.Protection, xdp_mode: str) -> str:
        """Attach the pinned programs to the interface that has the name now.

        Egress first, as on a first attach: the pinned XDP link is what marks
        xdpguard attached.  Each new link replaces the old one's pin; the old
        link, if still attached to a renamed interface, is detached from it.
        A crash between unpinning and pinning leaves no XDP link pin, and the
        next apply then attaches from scratch.
        """
        assert prot.ifindex is not None
        self.ifindex = prot.ifindex
        for direction in ("egress", "ingress"):
            self.links.relink(direction, prot, xdp_mode)
            if direction == "egress":
                # Connections opened while the interface had no program.
                self._record_open_connections()
        moved = ""
        if prot.xdp_ifname:
            moved = f"; {prot.xdp_ifname} (ifindex {prot.xdp_ifindex}) had them and no longer has"
        return (
            f"{prot.message()}: attached the programs to {self.iface.ifname} (ifindex {prot.ifindex}){moved}"
        )

    def _record_open_connections(self) -> list[str]:
        """Record the connections this host opened before egress could see them
        (net/sockets.py); call it once the egress program is attached, so
        that what opens after the socket table is read is seen by egress."""
        try:
            conns = opened_connections()
            flows = [M.FlowEntry(c.proto, c.local, c.remote, c.lport, c.rport) for c in conns]
            if flows:
                with M.open_maps(self.pin_dir) as m:
                    M.add_flows(m, flows, time.monotonic_ns())
        except (NetError, B.BpfError, KernelError) as e:
            return [f"could not record the connections opened before the attach ({e}); their replies are new"]
        return []

    # ------------------------------------------------------------------ read

    def status(self) -> dict[str, Any]:
        """The record and the kernel's view (status.py), after repairing an interrupted apply."""
        out: dict[str, Any] = {"interface": self.iface.ifname, "attached": self.attached}
        interrupted = self.iface.journal() is not None
        if interrupted or self._overdue_confirm() is not None:
            if probes.privileged():
                out["recovered"] = self.recover(wait=False)
            elif interrupted:
                out["interrupted_apply"] = "an interrupted apply needs repair: run `xdpguard status` as root"
            else:
                out["overdue_confirm"] = (
                    "an unconfirmed rule set outlived its watchdog: run `xdpguard status` as root"
                )
        applied = self.iface.load_applied()
        if applied:
            self.iface.check_plan(applied)
        out.update(S.recorded(self.iface, applied))
        if self.attached:
            out.update(S.kernel(self.links, self.pin_dir, applied, self.protection(), self.recorded_netns()))
        elif applied is not None:
            out.update(S.not_attached(self.iface.ifname, applied))
        return out

    def stats(self) -> dict[str, Any]:
        if not self.attached:
            raise KernelError(f"xdpguard is not attached to {self.iface.ifname}")
        return S.counters(self.iface.ifname, self.pin_dir, self.iface.load_plan())

    def unblock(self, family: int, addr: int) -> bool:
        _require_root()
        with M.open_maps(self.pin_dir) as m:
            return M.unblock(m, family, addr)

    # ------------------------------------------------------------------ detach

    def detach(self) -> list[str]:
        """Everything of the interface goes: pins, state, the log of a --confirm watchdog.

        (A watchdog that detaches by itself keeps its log, the record of why.)
        """
        _require_root()
        with self.iface.lock():
            removed = self.detach_locked()
            try:
                self.iface.watchdog_log.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:  # a read-only state directory: the interface is detached all the same
                self.warnings.append(f"could not remove {self.iface.watchdog_log}: {e.strerror or e}")
        # The lock file went with the lock; the state directory too, once no interface uses it.
        forget_state_root()
        return removed

    def detach_locked(self) -> list[str]:
        # Detach must work whatever shape the records are in.
        with contextlib.suppress(DamagedState):
            pending = self.iface.load_confirm()
            if pending:
                confirm.stop(pending.get("pid"))  # its revert would attach again
        removed = self._remove_pins()
        if not self.iface.remove_state():
            self.warnings.append(
                f"the kernel objects are gone, but {self.iface.state_dir} could not be removed (read-only?): "
                f"remove it when it can be written, or `xdpguard restore` will attach it again"
            )
        return removed

    def _abandon_attach(self) -> None:
        """A first attach that did not complete leaves nothing behind (the
        journal, and the state directory unless an earlier rule set is recorded)."""
        self._remove_pins()
        self.iface.end()
        if self.iface.load_applied() is None:
            self.iface.remove_state()

    def _remove_pins(self) -> list[str]:
        """Every kernel object of the interface goes (links.py), whatever shape the record is in."""
        try:
            netns = self.recorded_netns()
        except DamagedState:
            netns = self.netns
        return self.links.remove(netns)


def _rmdir_if_empty(path: os.PathLike[str] | str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def forget_state_root() -> None:
    """Remove $XDPGUARD_STATE_DIR once nothing of any interface is in it.

    The caches (compiled plans, address-table runs) alone do not keep it: with
    no interface left, nothing of xdpguard stays behind (a later apply
    compiles again and refills them).
    """
    root = state_root()
    try:
        entries = os.listdir(root)
    except OSError:
        return
    if set(entries) <= {".cache", TABLES_DIR}:
        for name in entries:
            cache = root / name
            if cache.is_dir() and not cache.is_symlink():
                shutil.rmtree(cache, ignore_errors=True)
    _rmdir_if_empty(root)


def detach_all(warnings: list[str] | None = None) -> list[str]:
    removed: list[str] = []
    for name in known_ifaces():
        dp = Dataplane(name, None)
        removed += dp.detach()
        if warnings is not None:
            warnings += [f"{name}: {w}" for w in dp.warnings]
    # Logs of watchdogs that detached by themselves, with nothing else left.
    if state_root().is_dir():
        for log in state_root().glob(".*.watchdog.log"):
            log.unlink(missing_ok=True)
    forget_state_root()
    return removed
