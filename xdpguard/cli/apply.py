"""The commands that change (or preview) the rule set on an interface:
`apply`, `plan`, `detach`, `rollback`, `confirm`, and the hidden `watchdog`
that a `--confirm` apply leaves running until it is confirmed."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from xdpguard.cli.common import (
    CONTEXT,
    console,
    err_console,
    print_json,
    resolve_iface,
)
from xdpguard.errors import UsageError
from xdpguard.state import Applied, Iface

if TYPE_CHECKING:
    from xdpguard.rules.compile import Plan

IFACE_HELP = "interface to act on (repeat for several)"


@contextmanager
def _kept_till_exit() -> Iterator[None]:
    """Load a rule set without collections, then keep them off what was loaded.

    A 10,000-rule set is a couple of hundred thousand objects that live
    until this process exits, with no cycle among them to free: every
    collection that walked them (the first one after loading walks them
    all) would be time for nothing, 20 ms of a one-rule change.  Frozen,
    they are left out of collections; whatever the command makes next is
    collected as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _modes() -> tuple[str, ...]:
    return ("auto", "native", "generic")


def _same_namespace(name: str, live: Applied | None) -> None:
    """Refuse to apply to an interface of the name in another namespace than the
    one xdpguard protects it in: pins and state are keyed by name, so the apply
    would take the programs off the recorded interface (reading it as renamed)
    and leave it unfiltered.  A recorded namespace that is gone is no conflict."""
    from xdpguard.net import netns_exists  # lazy: as in resolve_iface

    here = CONTEXT["netns"]
    if live is None or live.netns == here or (live.netns is not None and not netns_exists(live.netns)):
        return

    def where(ns: str | None) -> str:
        return f"network namespace {ns}" if ns else "the host's network namespace"

    run = (
        f"`xdpguard --netns {live.netns} apply ...`" if live.netns else "`xdpguard apply ...` without --netns"
    )
    raise UsageError(
        f"xdpguard protects {name} in {where(live.netns)}, and this apply runs in {where(here)}: pins and "
        f"state are kept by interface name, so it would move the firewall off the protected {name}. Run "
        f"{run}; to protect both, give each namespace its own XDPGUARD_BPFFS and XDPGUARD_STATE_DIR"
    )


def apply(
    rules: Path = typer.Argument(..., help="rule file (YAML)"),
    iface: list[str] = typer.Option(..., "--iface", "-i", help=IFACE_HELP),
    xdp_mode: str = typer.Option(
        None, "--xdp-mode", help="auto | native | generic (first attach; default auto)", show_default=False
    ),
    replace_program: bool = typer.Option(
        False, "--replace-program", help="recompile and swap the programs even when they are current"
    ),
    confirm_in: str = typer.Option(
        None,
        "--confirm",
        metavar="DURATION",
        help="revert by itself unless `xdpguard confirm` comes within DURATION",
    ),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Attach xdpguard to each interface, or update it atomically; idempotent."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard import plancache
    from xdpguard.datapath import confirm as C
    from xdpguard.datapath.dataplane import Dataplane

    if xdp_mode is not None and xdp_mode not in _modes():
        raise UsageError(f"--xdp-mode must be one of auto, native, generic (got {xdp_mode!r})")
    window = None
    if confirm_in is not None:
        # lazy: the rule parser loads YAML, which an apply served by the plan cache never needs
        from xdpguard.rules.parse import parse_duration

        try:
            window = parse_duration(confirm_in)
        except ValueError as e:
            raise UsageError(f"--confirm: {e}") from e
        if window > C.MAX_WINDOW_S:
            raise UsageError(
                f"--confirm: {confirm_in} is longer than the longest window, {C.MAX_WINDOW_S // 86400} days"
            )
    # Everything that can be wrong with the input is found before the kernel is touched.
    with _kept_till_exit():
        loaded = plancache.load(rules)  # unchanged files (and set files) are not parsed again
    plan, text = loaded.plan, loaded.text
    targets = [(name, resolve_iface(name)) for name in iface]
    for name, _ in targets:
        live = Iface(name).load_applied()
        _same_namespace(name, live)
        if xdp_mode is not None and live is not None and Iface(name).linked:
            if live.xdp_mode != xdp_mode:
                raise UsageError(
                    f"{name} is attached in XDP mode {live.xdp_mode}; changing it to {xdp_mode} takes "
                    f"`xdpguard detach --iface {name}` first (a mode switch cannot be atomic)"
                )
    results = []
    for name, index in targets:
        before = Iface(name).load_applied()
        armed = None
        if window is not None:
            # The window is recorded first: a state directory that cannot be
            # written stops the apply before the kernel changes.
            armed = C.prepare(name, window, CONTEXT["netns"], before.seq if before else 0)
        try:
            res = Dataplane(name, index, CONTEXT["netns"]).apply(
                plan, text, xdp_mode or "auto", replace_program, loaded.summary
            )
        except BaseException:
            if armed is not None:
                C.abandon(armed)
            raise
        results.append((name, res))
        if armed is not None and not (res.changed or res.attached):
            # The live rule set is this one already: nothing to guard.
            C.abandon(armed)
            armed = None
        pending = Iface(name).load_confirm()
        if armed is not None:
            deadline = C.start(armed)
            when = time.strftime("%H:%M:%S", time.localtime(deadline))
            then = (
                f"version {armed.target} (the last confirmed rule set) comes back at {when}"
                if armed.target
                else f"xdpguard is detached from {name} at {when} (there was no rule set before this one)"
            )
            res.messages.append(f"confirm within {window:g} s (`xdpguard confirm --iface {name}`), or {then}")
        elif pending:
            when = time.strftime("%H:%M:%S", time.localtime(float(pending["deadline"])))
            back = (
                f"version {pending['target_seq']} comes back"
                if pending["target_seq"]
                else f"xdpguard is detached from {name}"
            )
            res.messages.append(
                f"an earlier apply awaits confirmation: {back} at {when} "
                f"unless `xdpguard confirm --iface {name}`"
            )
        elif window is not None:
            # The live rule set is this one already and nothing is pending: no risk to revert.
            res.messages.append("nothing changed, so there is nothing to confirm (no watchdog started)")
    if json_out:
        print_json(
            [
                {
                    "interface": n,
                    "changed": r.changed,
                    "attached": r.attached,
                    "replaced_program": r.replaced,
                    "seconds": round(r.seconds, 4),
                    "digest": plan.digest,
                    "writes": vars(r.writes),
                    "messages": r.messages,
                }
                for n, r in results
            ]
        )
        return
    for name, r in results:
        if r.attached or r.changed:  # (decoding the plan's rules is only worth it then)
            nin, neg = plan.ingress.nrules, plan.egress.nrules
        if r.attached:
            console.print(
                f"{name}: attached, {nin} ingress and {neg} egress rules from {rules} ({r.seconds:.2f} s)"
            )
        elif r.changed:
            w = r.writes
            console.print(
                f"{name}: updated to {rules} ({nin} ingress, {neg} egress rules; "
                f"{w.addr_tables} address table{'' if w.addr_tables == 1 else 's'} ({w.addr_nodes} nodes), "
                f"{w.array_updates} array entries and "
                f"{w.bitmaps} rule bitmaps ({w.blocks} blocks) written, "
                f"{r.seconds:.2f} s)" + (" with a new program" if r.replaced else "")
            )
        else:
            console.print(f"{name}: no changes" + (" (program replaced)" if r.replaced else ""))
        for m in r.messages:
            if m != "no changes":
                console.print(f"{name}: {m}")


def _prefix_diff(old: Plan | None, new: Plan) -> dict[str, Any]:
    from xdpguard.rules.model import Prefix  # lazy: --help starts without the rule model

    out: dict[str, Any] = {}
    for nd in new.directions():
        od = None if old is None else (old.ingress if nd.name == "ingress" else old.egress)
        fields: dict[str, Any] = {}
        for fname, fam in (("src4", "src"), ("dst4", "dst"), ("src6", "src"), ("dst6", "dst")):
            newk = {(a, p) for a, p, _ in getattr(nd, fname)}
            oldk = {(a, p) for a, p, _ in getattr(od, fname)} if od else set()
            added, removed = newk - oldk, oldk - newk
            if not added and not removed:
                continue
            bits = 32 if fname.endswith("4") else 128

            def show(keys: set[tuple[int, int]], bits: int = bits) -> list[str]:
                fam_n = 4 if bits == 32 else 6
                return [str(Prefix(fam_n, a, p)) for a, p in sorted(keys)[:5]]

            f = fields.setdefault(
                fam, {"added": 0, "removed": 0, "examples_added": [], "examples_removed": []}
            )
            f["added"] += len(added)
            f["removed"] += len(removed)
            f["examples_added"] += show(added)
            f["examples_removed"] += show(removed)
        if fields:
            out[nd.name] = fields
    return out


def _dynset_diff(st: Iface, old: Plan | None, new: Plan) -> dict[str, list[dict[str, Any]]]:
    """Dynamic sets the apply would create, drop (with their elements) and keep.

    Element counts come from the pinned maps, so only as root; else None.
    """
    from xdpguard.datapath import dynsets  # lazy: as in apply

    counts: dict[str, dict[str, Any]] | None = None
    if st.pin_dir.exists():
        try:
            counts = dynsets.status(str(st.pin_dir))
        except OSError:  # not root: bpf(2) refuses
            counts = None
    before = {d.name: d for d in old.dynsets} if old is not None else {}
    after = {d.name: d for d in new.dynsets}

    def held(name: str) -> int | None:
        return None if counts is None else int(counts.get(name, {}).get("elements", 0))

    return {
        "added": [{"name": n, "size": d.size} for n, d in after.items() if n not in before],
        "removed": [{"name": n, "elements": held(n)} for n in before if n not in after],
        "kept": [
            {
                "name": n,
                "elements": held(n),
                "size": d.size if before[n].size == d.size else {"from": before[n].size, "to": d.size},
            }
            for n, d in after.items()
            if n in before
        ],
    }


def plan(
    rules: Path = typer.Argument(..., help="rule file (YAML)"),
    iface: str = typer.Option(..., "--iface", "-i", help="interface to compare against"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show what `apply` would change on IFACE: rules and set entries added, removed, changed."""
    # lazy: as in apply
    from xdpguard import plancache
    from xdpguard.datapath.dataplane import Dataplane

    with _kept_till_exit():
        loaded = plancache.load(rules)
    new_plan = loaded.plan
    st = Iface(iface)
    applied = st.load_applied()
    old_plan = st.load_plan()
    old_sum = st.load_summary() or {"rules": {"ingress": {}, "egress": {}}, "order": {}, "settings": {}}
    new_sum = loaded.summary
    attached = st.linked
    problem = None
    if attached:
        prot = Dataplane(iface, None, CONTEXT["netns"]).protection()
        problem = None if prot.ok else prot.message()
    data: dict[str, Any] = {
        "interface": iface,
        "attached": attached,
        # The kernel disagrees with the pins (interface re-created or renamed, pin replaced).
        "protection_problem": problem,
        "current": applied.file if applied else None,
        "current_digest": applied.digest if applied else None,
        "new_digest": new_plan.digest,
        # Would apply change the kernel?  (Not attached: it would attach.)
        "changes": not attached
        or problem is not None
        or applied is None
        or applied.digest != new_plan.digest,
        # Does the rule file differ from the recorded one?  (What CI wants to review.)
        "differs_from_recorded": applied is None or applied.digest != new_plan.digest,
        "rules": {},
        "settings": [],
    }
    for dname in ("ingress", "egress"):
        o, n = old_sum["rules"].get(dname, {}), new_sum["rules"][dname]
        oo, no = old_sum["order"].get(dname, []), new_sum["order"][dname]
        moved = [x for x in n if x in o and oo.index(x) != no.index(x)] if oo else []
        data["rules"][dname] = {
            "added": [{"name": k, "rule": n[k]} for k in n if k not in o],
            "removed": [{"name": k, "rule": o[k]} for k in o if k not in n],
            "changed": [{"name": k, "from": o[k], "to": n[k]} for k in n if k in o and o[k] != n[k]],
            "moved": moved,
        }
    for k, v in new_sum["settings"].items():
        ov = old_sum["settings"].get(k)
        if ov is not None and ov != v:
            data["settings"].append({"setting": k, "from": ov, "to": v})
    data["prefixes"] = _prefix_diff(old_plan, new_plan)
    data["dynamic_sets"] = _dynset_diff(st, old_plan, new_plan)
    if json_out:
        print_json(data)
        return
    if not data["changes"]:
        console.print(f"{iface}: no changes ({rules} is what is applied)")
        return
    if problem is not None:
        console.print(f"{iface}: NOT PROTECTED: {problem}; apply would attach the programs to {iface} again")
        if applied is not None and not data["differs_from_recorded"]:
            console.print(f"{iface}: the rule set is the recorded one (version {applied.seq})")
    elif not attached and applied is not None:
        same = "the same rule set as" if not data["differs_from_recorded"] else "these changes against"
        console.print(
            f"{iface}: not attached here (no pins: after a reboot, or a copied state dir); "
            f"apply would attach {same} the recorded version {applied.seq}:"
        )
    elif not attached:
        console.print(f"{iface}: xdpguard is not attached; apply would attach it with:")
    else:
        console.print(f"{iface}: applying {rules} would change:")
    for dname, d in data["rules"].items():
        for r in d["added"]:
            console.print(f"  [green]+ {dname} {r['name']}[/]: {r['rule']}")
        for r in d["removed"]:
            console.print(f"  [red]- {dname} {r['name']}[/]: {r['rule']}")
        for r in d["changed"]:
            console.print(f"  [yellow]~ {dname} {r['name']}[/]: {r['from']}  =>  {r['to']}")
        for name in d["moved"]:
            console.print(f"  [yellow]~ {dname} {name}[/]: moved")
    for s in data["settings"]:
        console.print(f"  [yellow]~ {s['setting']}[/]: {s['from']} => {s['to']}")
    for dname, fields in data["prefixes"].items():
        for fam, f in fields.items():
            console.print(f"  {dname} {fam} prefixes: {f['added']} added, {f['removed']} removed")
            for sign, style, key, total in (
                ("+", "green", "added", f["added"]),
                ("-", "red", "removed", f["removed"]),
            ):
                shown = f[f"examples_{key}"]
                for p in shown:
                    console.print(f"    [{style}]{sign} {p}[/]")
                if total > len(shown):
                    console.print(f"    ... and {total - len(shown)} more {key}")
    ds = data["dynamic_sets"]
    for d in ds["added"]:
        console.print(f"  [green]+ dynamic set {d['name']}[/] (size {d['size']}, empty)")
    for d in ds["removed"]:
        held = "" if d["elements"] is None else f": its {d['elements']} elements are dropped"
        console.print(f"  [red]- dynamic set {d['name']}[/]{held}")
    for d in ds["kept"]:
        held = "" if d["elements"] is None else f"{d['elements']} elements kept"
        size = f"size {d['size']['from']} => {d['size']['to']}" if isinstance(d["size"], dict) else ""
        extra = "; ".join(x for x in (held, size) if x)
        console.print(f"  dynamic set {d['name']}" + (f": {extra}" if extra else ""))


def detach(
    iface: list[str] = typer.Option([], "--iface", "-i", help=IFACE_HELP),
    all_: bool = typer.Option(False, "--all", help="every interface xdpguard is on"),
) -> None:
    """Remove programs, links, pins and state from IFACE (or from all interfaces)."""
    from xdpguard.datapath.dataplane import Dataplane, detach_all, forget_state_root  # lazy: as in apply

    if all_ == bool(iface):
        raise UsageError("give --iface IF (one or more) or --all")
    if all_:
        warnings: list[str] = []
        removed = detach_all(warnings)
        console.print(f"detached everywhere ({len(removed)} pinned objects removed)")
        for w in warnings:
            err_console.print(f"warning: {w}", markup=False, soft_wrap=True)
        return
    for name in iface:
        st = Iface(name)
        if not st.pin_dir.exists() and not st.state_dir.exists():
            if st.watchdog_log.exists():  # a watchdog detached it by itself: its log is all that is left
                st.watchdog_log.unlink()
                forget_state_root()
            console.print(f"{name}: xdpguard is not attached")
            continue
        dp = Dataplane(name, None)
        removed = dp.detach()
        console.print(f"{name}: detached ({len(removed)} pinned objects removed)")
        for w in dp.warnings:
            err_console.print(f"{name}: warning: {w}", markup=False, soft_wrap=True)


def rollback(
    iface: str = typer.Option(..., "--iface", "-i", help="interface to roll back"),
    to: int = typer.Option(None, "--to", help="version to restore (see `status`); default: the previous one"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Re-apply the previously applied rule set (or version --to) on IFACE."""
    from xdpguard.datapath.dataplane import Dataplane  # lazy: as in apply

    res, target = Dataplane(iface, None, CONTEXT["netns"]).rollback(to)
    if json_out:
        print_json(
            {
                "interface": iface,
                "version": target.applied.seq,
                "digest": target.applied.digest,
                "file": target.applied.file,
                "changed": res.changed,
                "messages": res.messages,
            }
        )
        return
    for m in res.messages:
        console.print(f"{iface}: {m}")
    console.print(
        f"{iface}: rolled back to version {target.applied.seq} ({target.applied.file}, "
        f"digest {target.applied.digest[:16]}, {res.seconds:.2f} s)"
    )


def confirm(
    iface: list[str] = typer.Option(..., "--iface", "-i", help=IFACE_HELP),
) -> None:
    """Keep a rule set applied with --confirm: stop the watchdog that would revert it."""
    from xdpguard.datapath.confirm import confirm as do_confirm  # lazy: as in apply

    late = []
    for name in iface:
        Iface(name).load_plan()  # a damaged record is reported here too, before anything changes
        pending = do_confirm(name)
        if pending is not None and pending.get("damaged"):
            console.print(
                f"{name}: {pending['damaged']} was damaged: removed it; the live rule set stays (no revert)"
            )
            continue
        if pending is None:
            applied = Iface(name).load_applied()
            if applied is not None and applied.note == "confirm timeout":
                when = time.strftime("%H:%M:%S", time.localtime(applied.applied_at))
                err_console.print(
                    f"{name}: too late: the watchdog restored the previous rule set (now version "
                    f"{applied.seq}) at {when}; apply the new rule set again if it is right"
                )
                late.append(name)
            elif not Iface(name).linked and applied is None:
                err_console.print(f"{name}: too late or never applied: xdpguard is not attached")
                late.append(name)
            else:
                console.print(f"{name}: nothing is waiting for confirmation")
        else:
            target = pending["target_seq"]
            console.print(
                f"{name}: confirmed; the rule set stays (the revert to version {target} is cancelled)"
            )
    if late:
        raise typer.Exit(1)


def watchdog(
    iface: str = typer.Option(..., "--iface"),
    token: str = typer.Option(..., "--token"),
) -> None:
    """(internal) Wait for a --confirm deadline and revert unless confirmed."""
    from xdpguard.datapath.watchdog import run_watchdog  # lazy: as in apply

    run_watchdog(iface, token)
