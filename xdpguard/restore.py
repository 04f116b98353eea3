"""Re-attach recorded rule sets after a reboot (`xdpguard restore`).

bpffs pins live in memory and are gone after a reboot; the state dir
(applied.json, plan.bin, rules.yaml) is on disk and says what was live.
Restoring attaches that plan again, compiled as it was recorded, so set
files that moved or changed since do not matter, in the network namespace
and XDP mode it was applied with.  An interface that is still attached is
left alone, unless the kernel says otherwise: pins whose interface was
re-created or renamed since are attached again to the interface that has
the name.

An apply awaiting `confirm` when the machine went down was never
confirmed, and its watchdog died with the machine: restore brings back the
rule set the watchdog would have, or leaves the interface detached when
there was none, so a reboot never makes an unconfirmed rule set stick.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdpguard.datapath import confirm
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.datapath.protection import GONE
from xdpguard.errors import XdpguardError
from xdpguard.net import NetError, NoSuchInterface, NoSuchNetns, ifindex, in_netns
from xdpguard.rules.compile import plan_from_bytes
from xdpguard.state import Iface, Snapshot, secure_state_root

RESTORED = "restored"
ATTACHED = "already attached"
FAILED = "failed"
REVERTED = "reverted"  # an unconfirmed apply with nothing to revert to: left detached


@dataclass
class Outcome:
    interface: str
    result: str  # RESTORED, ATTACHED, REVERTED or FAILED
    message: str

    @property
    def failed(self) -> bool:
        return self.result == FAILED


def recorded_ifaces() -> list[str]:
    """Interfaces whose state dir holds an applied rule set (refused if anyone but root could write it)."""
    root = secure_state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "applied.json").is_file())


def restore(names: list[str] | None = None) -> list[Outcome]:
    """Restore each named interface (default: every recorded one); never stops at the first failure."""
    return [restore_one(n) for n in (names or recorded_ifaces())]


def restore_one(ifname: str) -> Outcome:
    try:
        return _restore(ifname)
    except XdpguardError as e:
        return Outcome(ifname, FAILED, str(e))
    except OSError as e:  # bpf(2) and netlink failures not already worded for operators
        return Outcome(ifname, FAILED, str(e))


def _restore(ifname: str) -> Outcome:
    st = Iface(ifname)
    applied = st.load_applied()
    raw = st.load_plan_bytes()
    if applied is None or raw is None:
        return Outcome(ifname, FAILED, f"no recorded rule set in {st.state_dir}")
    st.load_plan()  # a damaged plan.bin is reported before anything is attached
    snap = Snapshot(applied, raw, st.load_rules_text(), st.load_summary())
    note = "restored"
    pending = None
    dp = Dataplane(ifname, None, applied.netns)
    if dp.attached:
        prot = dp.protection()
        if prot.ok:
            return Outcome(
                ifname, ATTACHED, f"{ATTACHED} (version {applied.seq}, digest {applied.digest[:16]})"
            )
        if prot.kind == GONE:
            return Outcome(ifname, FAILED, f"{prot.message()}; {prot.fix()}")
        # Not a reboot (the pins are there): the interface was re-created or
        # renamed, or a pin replaced.  The live rule set goes back on; a
        # pending confirm keeps its watchdog while that runs, and is acted on
        # here, as the watchdog would, when none does.
        note = "re-attached"
        pending = st.load_confirm()
        if pending is not None and confirm.watchdog_alive(pending):
            pending = None
    else:
        pending = st.load_confirm()
    if pending is not None:
        target = int(pending.get("target_seq") or 0)
        if target == 0:
            # What the watchdog would have done: no confirmed rule set, no xdpguard.
            Dataplane(ifname, None, applied.netns).detach()
            return Outcome(
                ifname, REVERTED, "an unconfirmed apply was pending and nothing came before it: left detached"
            )
        found = [s for s in st.history() if s.applied.seq == target]
        if not found:
            return Outcome(
                ifname, FAILED, f"an unconfirmed apply was pending but version {target} is not in the history"
            )
        snap, note = found[0], f"restored version {target}: version {applied.seq} was never confirmed"

    where = f" in network namespace {applied.netns}" if applied.netns else ""
    try:
        with in_netns(applied.netns):
            index = ifindex(ifname)
            plan = plan_from_bytes(snap.plan_bytes, snap.applied.file)  # digest checked by history()
            res = Dataplane(ifname, index, applied.netns).apply(
                plan, snap.rules_text, applied.xdp_mode, summary=snap.summary, note=note
            )
    except NoSuchNetns:
        return Outcome(ifname, FAILED, f"network namespace {applied.netns} does not exist (not created yet?)")
    except NoSuchInterface:
        return Outcome(ifname, FAILED, f"no interface named {ifname}{where} any more")
    except NetError as e:
        return Outcome(ifname, FAILED, str(e))
    if pending is not None:
        st.clear_confirm()
    extra = "".join(f"; {m}" for m in res.messages)
    return Outcome(
        ifname,
        RESTORED,
        f"{note}: version {snap.applied.seq} from {snap.applied.file or 'unknown file'}, digest "
        f"{snap.applied.digest[:16]}, xdp mode {applied.xdp_mode}{where}{extra}",
    )
