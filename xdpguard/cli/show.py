"""The commands that look at a live interface: `status`, `stats`, `events`,
plus `unblock`, which releases one source blocked by a rate limit's
block_for (a map delete; the rule set stays as it is)."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from xdpguard.cli.common import console, print_json, require_root
from xdpguard.errors import KernelError, UsageError, XdpguardError
from xdpguard.state import DamagedState, Iface, known_ifaces

if TYPE_CHECKING:
    from rich.table import Table


def _targets(iface: list[str]) -> list[str]:
    return iface or known_ifaces()


def status(
    iface: list[str] = typer.Option([], "--iface", "-i", help="interface (default: all xdpguard knows)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Interfaces, link ids and modes, program tag, rule-set digest and version, applied-at, file.

    Exits 1 when an interface xdpguard has a record of is not protected as
    recorded (not attached, its links severed or on another interface, a
    pin replaced, the maps not holding the rule set).
    """

    require_root("status")
    rows = [_status_row(n) for n in _targets(iface)]
    unprotected = [s["interface"] for s in rows if s.get("protected") is False]
    if json_out:
        print_json(rows)
    elif not rows:
        console.print("xdpguard is not attached to any interface")
    else:
        for s in rows:
            _print_status(s)
    if unprotected:
        raise typer.Exit(1)


def _status_row(name: str) -> dict[str, Any]:
    """One interface's status; a damaged record is reported on its row, the others still shown."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath.dataplane import Dataplane

    try:
        return Dataplane(name, None).status()
    except DamagedState as e:
        return {
            "interface": name,
            "attached": Iface(name).linked,
            "protected": False,
            "problem": str(e),
            "fix": "",
        }


def _print_status(s: dict[str, Any]) -> None:
    from rich.markup import escape  # lazy: rich costs every command tens of ms; only printing needs it

    for m in s.get("recovered", []):
        console.print(f"[yellow]{s['interface']}: {m}[/]")
    problem = s.get("problem")
    if not s["attached"]:
        console.print(f"[bold]{s['interface']}[/]: not attached")
        if problem:
            fix = s.get("fix") or ""
            console.print(f"  [red]NOT PROTECTED: {escape(problem)}[/]" + (f"; {escape(fix)}" if fix else ""))
        return
    x: dict[str, Any] = s.get("xdp", {})
    if problem and not x:
        console.print(f"[bold red]{s['interface']}[/]: NOT PROTECTED: {escape(problem)}")
        return
    if problem:
        console.print(f"[bold red]{s['interface']}[/]: NOT PROTECTED: {escape(problem)}")
        if s.get("fix"):
            console.print(f"  {escape(s['fix'])}")
    asked = x.get("requested_mode")
    mode = f"{x.get('mode')}" + (f" (asked: {asked})" if asked and asked != x.get("mode") else "")
    console.print(
        f"[bold]{s['interface']}[/]: xdp {x.get('attach', '?')} id {x.get('link_id')} "
        f"mode {mode} prog {x.get('prog_id')} tag {x.get('tag')}"
    )
    tc: dict[str, Any] | None = s.get("tc")
    if tc:
        console.print(
            f"  tc egress {tc.get('attach')} id {tc.get('link_id')} "
            f"prog {tc.get('prog_id')} tag {tc.get('tag')}"
        )
    else:
        console.print("  [red]no egress program attached[/]")
    sc: dict[str, Any] | None = s.get("syn_cookies")
    if sc:
        console.print(
            f"  syn cookies: tc ingress {sc.get('attach')} id {sc.get('link_id')} "
            f"prog {sc.get('prog_id')}, xdp prog {sc.get('xdp_prog_id')}"
        )
        if sc.get("problem"):
            console.print(f"  [bold red]syn cookies cannot complete a connection:[/] {escape(sc['problem'])}")
    console.print(
        f"  rules {s.get('file')} version {s.get('version')} digest {str(s.get('digest', ''))[:16]} "
        f"applied {s.get('applied_at')}"
    )
    ft: dict[str, Any] = s.get("fast_tables") or {}
    for d in ("ingress", "egress"):
        # Only for rule sets that read the large bitmap tables: "sized" means
        # the rule set outgrew the fixed sizes (see `xdpguard apply`'s note).
        kind = ft.get(d, {}).get("bitmap_tables", "none")
        if kind != "none" and ft.get("sizes"):
            sz = ft["sizes"]
            where = (
                "fixed-size"
                if kind == "fixed"
                else "[yellow]sized to the rule set (outgrew the fixed sizes)[/]"
            )
            sizes = f"{sz['tops']:,} top entries, {sz['blocks']:,} blocks"
            console.print(f"  {d} bitmap tables: {where}; fixed sizes {sizes}")
    for name, ds in s.get("dynamic_sets", {}).items():
        tmo = f", timeout {ds['timeout']:g}s" if ds["timeout"] else ""
        count = f"{ds['elements']:,} element" + ("" if ds["elements"] == 1 else "s")
        console.print(f"  dynamic set {name}: {count} (size {ds['size']:,}{tmo})")
    pc = s.get("pending_confirm")
    if pc:
        target = f"version {pc['reverts_to']}" if pc["reverts_to"] else "no xdpguard (detach)"
        console.print(
            f"  [yellow]unconfirmed: reverts to {target} in {pc['seconds_left']} s unless confirmed[/]"
        )
        if not pc.get("watchdog_running", True):
            console.print(
                "  [bold red]no watchdog is running for it[/]: the first xdpguard command on "
                f"{s['interface']} after the deadline reverts it (status, apply, rollback, restore)"
            )
    hist = s.get("history", [])
    if len(hist) > 1:
        console.print(
            "  history: "
            + ", ".join(
                f"v{h['version']} {h['digest'][:8]}" + (f" ({h['note']})" if h["note"] else "")
                for h in hist[-5:]
            )
        )
    if "error" in s and s["error"] != problem:
        console.print(f"  [red]{s['error']}[/]")


def _table(st: dict[str, Any], rates: dict[tuple[str, str], float] | None = None) -> Table:
    from rich.table import Table  # lazy: as in _print_status

    t = Table(title=f"{st['interface']}", title_justify="left")
    for col in ("direction", "rule", "action", "packets", "bytes", "over limit"):
        t.add_column(col, justify="left" if col in ("direction", "rule", "action") else "right")
    if rates is not None:
        t.add_column("pkt/s", justify="right")
    for dname in ("ingress", "egress"):
        d = st.get(dname)
        if not d:
            continue
        rows = [
            (
                r["name"],
                r["action"],
                r["packets"],
                r["bytes"],
                f"{r['limit']['over_limit']:,}" if "limit" in r else "",
            )
            for r in d["rules"]
        ]
        rows.append(("(default)", d["default"]["action"], d["default"]["packets"], d["default"]["bytes"], ""))
        for k in ("malformed", "non_ip", "ndp", "blocked"):
            if k in d and (k != "blocked" or dname == "ingress"):
                rows.append(
                    (
                        f"({k})",
                        "drop" if k in ("malformed", "blocked") else "",
                        d[k]["packets"],
                        d[k]["bytes"],
                        "",
                    )
                )
        for name, action, pk, by, over in rows:
            cells = [dname, name, action, f"{pk:,}", f"{by:,}", over]
            if rates is not None:
                cells.append(f"{rates.get((dname, name), 0.0):,.0f}")
            t.add_row(*cells)
    return t


def stats(
    iface: list[str] = typer.Option([], "--iface", "-i", help="interface (default: all xdpguard knows)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
    watch: bool = typer.Option(False, "--watch", help="refresh every second with rates"),
) -> None:
    """Per-rule packets and bytes, defaults, malformed and non-IP counts."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath.dataplane import Dataplane

    require_root("stats")
    names = _targets(iface)
    if not names:
        raise XdpguardError("xdpguard is not attached to any interface")
    if watch and json_out:
        raise UsageError("--watch and --json do not go together")
    for n in names:
        dp = Dataplane(n, None)
        if dp.attached:
            prot = dp.protection()
            if not prot.ok:
                raise XdpguardError(f"{n} is not protected: {prot.message()}; {prot.fix()}")
    if not watch:
        data = [Dataplane(n, None).stats() for n in names]
        if json_out:
            print_json(data if len(data) > 1 else data[0])
            return
        for st in data:
            console.print(_table(st))
            for b in st.get("blocked", []):
                console.print(f"blocked: {b['source']} for {b['seconds_left']} s more (rule {b['rule']})")
            for r in st.get("ingress", {}).get("rules", []):
                sc = r.get("syn_cookies")
                if sc is not None:
                    console.print(
                        f"syn cookies (rule {r['name']}): {sc['sent']:,} sent, {sc['valid']:,} valid, "
                        f"{sc['invalid']:,} invalid (dropped)"
                        + (
                            f", {sc['handoff_errors']:,} not taken by the listener"
                            if sc["handoff_errors"]
                            else ""
                        )
                    )
            lim = st.get("limiter")
            if lim and lim.get("held"):
                console.print(
                    f"per-source table: {lim['held']:,} of {lim['table_size']:,} slots held by active sources"
                )
            if lim and any(lim["overflow"].values()):
                # Only when it happened: then the per-source table was full.
                console.print(
                    f"per-source table full: {sum(lim['overflow'].values()):,} packets judged by the "
                    f"overflow sketch; raise limit_table_size (now {lim['table_size']:,})"
                )
            fl = st.get("flows")
            if fl:
                console.print(
                    f"flow table: {fl['entries']:,} of {fl['size']:,} entries, "
                    f"{fl['created']:,} created, {fl['evicted']:,} evicted"
                )
        return
    prev: dict[tuple[str, str, str], tuple[float, int]] = {}

    # lazy: rich's live display, for --watch only
    from rich.live import Live
    from rich.table import Table

    def tables() -> list[Table]:
        out = []
        now = time.monotonic()
        for n in names:
            st = Dataplane(n, None).stats()
            rates = {}
            for dname in ("ingress", "egress"):
                d = st.get(dname)
                if not d:
                    continue
                for r in d["rules"] + [{"name": "(default)", **d["default"]}]:
                    key = (n, dname, r["name"])
                    if key in prev:
                        t0, p0 = prev[key]
                        rates[(dname, r["name"])] = (r["packets"] - p0) / max(now - t0, 1e-6)
                    prev[key] = (now, r["packets"])
            out.append(_table(st, rates))
        return out

    def render() -> Table:
        outer = Table.grid()
        for t in tables():
            outer.add_row(t)
        return outer

    if not console.is_terminal:
        # A log or a pipe: a plain snapshot every second, not a redrawn screen.
        try:
            while True:
                for t in tables():
                    console.print(t)
                sys.stdout.write("\n")
                sys.stdout.flush()
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        return
    with Live(render(), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1)
                live.update(render())
        except KeyboardInterrupt:
            pass


def unblock(
    address: str = typer.Argument(..., help="source address to release"),
    iface: list[str] = typer.Option([], "--iface", "-i", help="interface (default: all xdpguard knows)"),
) -> None:
    """Release a source blocked by a rate limit's block_for before its time is up."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath.dataplane import Dataplane

    try:
        ip = ipaddress.ip_address(address)
    except ValueError as e:
        raise UsageError(f"not an IP address: {address!r}") from e
    names = _targets(iface)
    if not names:
        raise XdpguardError("xdpguard is not attached to any interface")
    for n in names:
        if not Iface(n).linked:
            raise XdpguardError(f"xdpguard is not attached to {n}")
    released = [n for n in names if Dataplane(n, None).unblock(ip.version, int(ip))]
    if released:
        console.print(f"{ip}: unblocked on {', '.join(released)}")
    else:
        console.print(f"{ip}: was not blocked")


def events(
    iface: str = typer.Option(..., "--iface", "-i", help="interface to watch"),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per line"),
    count: int = typer.Option(0, "--count", help="stop after this many events (0: no limit)"),
    duration: float = typer.Option(0.0, "--duration", help="stop after this many seconds (0: until Ctrl-C)"),
    sample: int = typer.Option(
        None,
        "--sample",
        min=0,
        help="set: one drop in N becomes an event (1: every drop, 0: none), then exit",
    ),
    max_rate: int = typer.Option(
        None, "--max-rate", min=0, help="set: at most N events per second per CPU, then exit"
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="with --sample/--max-rate: go on streaming after setting"
    ),
    backlog: bool = typer.Option(
        False, "--backlog", help="also show the events made before this reader started (marked as such)"
    ),
) -> None:
    """Stream drop events (time, rule, verdict, addresses, ports); --sample/--max-rate set and exit."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import maps as M
    from xdpguard.datapath.dataplane import Dataplane
    from xdpguard.datapath.events import stream

    require_root("events")
    st = Iface(iface)
    if not st.linked:
        raise KernelError(f"xdpguard is not attached to {iface}")
    # Programs severed from the interface make no events: a stream would wait
    # for nothing, and a setting would change nothing that runs.  As in `stats`.
    prot = Dataplane(iface, None).protection()
    if not prot.ok:
        raise KernelError(f"{iface} is not protected: {prot.message()}; {prot.fix()}")
    if sample is not None or max_rate is not None:
        with M.open_maps(str(st.pin_dir)) as m:
            cur = M.read_event_cfg(m)
            M.write_event_cfg(
                m, cur.sample if sample is None else sample, cur.max_rate if max_rate is None else max_rate
            )
            cur = M.read_event_cfg(m)
        console.print(f"{iface}: {_event_setting(cur.sample, cur.max_rate)}", style="dim")
        # Setting is a command of its own; streaming afterwards only when asked to.
        if not (follow or count or duration):
            return
    plan = st.load_plan()
    names = {r.rule_id: r.name for d in plan.directions() for r in d.rules} if plan else {}
    end = time.monotonic() + duration if duration else None
    seen = 0

    def stop() -> bool:
        return (end is not None and time.monotonic() >= end) or (count > 0 and seen >= count)

    try:
        for ev in stream(str(st.pin_dir / "events"), iface, names, stop, backlog=backlog):
            seen += 1
            if json_out:
                sys.stdout.write(json.dumps(ev.as_dict()) + "\n")
            else:
                sys.stdout.write(ev.text() + "\n")
            sys.stdout.flush()
            if count and seen >= count:
                break
    except KeyboardInterrupt:
        pass


def _event_setting(sample: int, max_rate: int) -> str:
    if sample == 0:
        return "no events (--sample 0)"
    which = "every drop" if sample == 1 else f"one drop in {sample}"
    return f"events for {which}, at most {max_rate}/s per CPU"
