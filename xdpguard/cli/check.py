"""`xdpguard check RULES`: validate and compile, no root, no kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from xdpguard.cli.common import console, human_bytes, load_rules, print_json

# A rule table longer than this shows its head and tail only: ten thousand
# rows help nobody on a terminal (and take rich seconds to lay out); --json
# lists every rule.
TABLE_HEAD, TABLE_TAIL = 100, 20


def check(
    rules: Path = typer.Argument(..., help="rule file (YAML)"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Validate and compile RULES without root or kernel; print rules, sets and map sizes."""
    # lazy: keeps --help and the other commands' start-up free of rich and the compiler
    from rich.table import Table

    from xdpguard.rules.addrs import family_count
    from xdpguard.rules.compile import map_entries, memory_estimate
    from xdpguard.rules.describe import describe_rule, set_index

    rs, plan, _ = load_rules(rules)
    sets = set_index(rs)
    data: dict[str, Any] = {
        "file": str(rules),
        "valid": True,
        "digest": plan.digest,
        "mode": rs.mode.value,
        "non_ip": rs.non_ip.value,
        "ndp": rs.ndp,
        "sets": [
            {
                "name": s.name,
                "prefixes": len(s.prefixes),
                "ipv4": family_count(s.prefixes, 4),
                "ipv6": family_count(s.prefixes, 6),
                "file": s.file,
            }
            for s in rs.sets
        ],
        "memory_bytes": memory_estimate(plan),
        "warnings": list(rs.warnings),
    }
    for dname, d, dp in (("ingress", rs.ingress, plan.ingress), ("egress", rs.egress, plan.egress)):
        data[dname] = {
            "default": d.default.value,
            "rules": [
                {
                    "index": i,
                    "name": r.name,
                    "line": r.line,
                    "action": r.action.value,
                    "match": describe_rule(r, sets),
                    "syn_cookies": r.syn_cookies,
                }
                for i, r in enumerate(d.rules)
            ],
            "map_entries": map_entries(dp),
        }
    if json_out:
        print_json(data)
        return
    console.print(f"[bold]{rules}[/]: valid, mode {rs.mode.value}, digest {plan.digest[:16]}")
    for dname in ("ingress", "egress"):
        dd = data[dname]
        t = Table(title=f"{dname} (default {dd['default']})", title_justify="left")
        for col in ("#", "name", "line", "rule"):
            t.add_column(col)
        rows = dd["rules"]
        if len(rows) > TABLE_HEAD + TABLE_TAIL:
            hidden = len(rows) - TABLE_HEAD - TABLE_TAIL
            rows = [*rows[:TABLE_HEAD], None, *rows[-TABLE_TAIL:]]
        for r in rows:
            if r is None:
                t.add_row("...", f"{hidden:,} more rules", "", "(`check --json` lists them all)")
            else:
                t.add_row(str(r["index"]), r["name"], str(r["line"]), r["match"])
        console.print(t)
    if data["sets"]:
        t = Table(title="sets", title_justify="left")
        for col in ("name", "prefixes", "IPv4", "IPv6", "file"):
            t.add_column(col)
        for s in data["sets"]:
            t.add_row(s["name"], str(s["prefixes"]), str(s["ipv4"]), str(s["ipv6"]), s["file"] or "")
        console.print(t)
    t = Table(title="map entries", title_justify="left")
    t.add_column("map")
    t.add_column("ingress", justify="right")
    t.add_column("egress", justify="right")
    for k in data["ingress"]["map_entries"]:
        t.add_row(k, str(data["ingress"]["map_entries"][k]), str(data["egress"]["map_entries"][k]))
    console.print(t)
    console.print(f"kernel memory (both halves, estimate): {human_bytes(data['memory_bytes'])}")
