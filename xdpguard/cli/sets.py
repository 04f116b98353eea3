"""`xdpguard set add|del|list|flush`: the elements of dynamic sets, changed at run time.

A dynamic set is declared in the rule file (`{dynamic: true}`) and filled
here, by hand or by a feed (fail2ban, CrowdSec).  A change reaches the
next packet: no rule-set version, no recompilation.  Without --iface a
command acts on every interface whose applied rule file declares the set.
Every input is checked (the set, each address, the interfaces) before the
first element changes; a bad one exits 2 and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import typer

from xdpguard.errors import UsageError, XdpguardError
from xdpguard.state import Iface

app = typer.Typer(
    help="Add, remove, list and flush the elements of dynamic sets.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

IFACE_HELP = "interface (repeat for several; default: every one whose rules declare the set)"
STDIN_HELP = "`-` alone reads one element per line from stdin"


class SetFull(XdpguardError):
    """Some elements did not fit: exit 1 (the ones before them were added)."""


def _elements(addrs: list[str]) -> list[Any]:
    """The addresses and CIDRs of the command line, or of stdin for `-`."""
    # lazy: only for the commands that read addresses
    from xdpguard.rules.addrs import parse_address, parse_set_file_text

    if not addrs:
        raise UsageError("give at least one address or CIDR (or `-` to read them from stdin)")
    if "-" in addrs:
        if len(addrs) > 1:
            raise UsageError("`-` (read stdin) must be the only address")
        return list(parse_set_file_text(_stdin_text(sys.stdin.buffer), "<stdin>"))
    out = []
    for a in addrs:
        try:
            out.append(parse_address(a))
        except ValueError as e:
            raise UsageError(str(e)) from None
    return out


def _stdin_text(stream: BinaryIO) -> str:
    """The elements `-` reads, as text: bytes, so that what is not UTF-8 is refused at its line
    (a text stdin would smuggle it in as surrogates under a C locale), as in a set file."""
    from xdpguard.rules import inputs  # lazy: as in _elements

    try:
        data = inputs.read_stream(stream, "list of elements")
    except inputs.Refused as e:
        raise UsageError(f"<stdin> {e}") from None
    return inputs.decode(data, "<stdin>")


def _timeout_ns(value: str | None) -> int | None:
    """--timeout: None keeps the set's default; 0 (or never) means no expiry."""
    if value is None:
        return None
    if value.strip().lower() in ("0", "never"):
        return 0
    # lazy: as in _elements
    from xdpguard.rules import limits
    from xdpguard.rules.parse import parse_duration_exact, show

    try:
        seconds = parse_duration_exact(value)
    except ValueError as e:
        raise UsageError(f"--timeout: {e}") from None
    problem = limits.timeout_problem(seconds)
    if problem:
        raise UsageError(f"--timeout: {show(value)} {problem}")
    return limits.timeout_ns(seconds)


@contextlib.contextmanager
def _locked(name: str, iface: list[str]) -> Iterator[list[str]]:
    """The target interfaces, each locked (in name order) against applies."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    names = D.targets(name, iface)
    for n in names:  # an interrupted apply is repaired before anything else
        if Iface(n).journal() is not None:
            from xdpguard.datapath.dataplane import Dataplane  # lazy: only to repair an interrupted apply

            Dataplane(n, None).recover()
    names = D.targets(name, iface)
    with contextlib.ExitStack() as stack:
        for n in sorted(names):
            stack.enter_context(Iface(n).lock())
        yield names


def _open(ifname: str, name: str) -> Any:
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    sm = D.open_set(str(Iface(ifname).pin_dir), name)
    if sm is None:  # dropped by an apply since targets() looked
        raise UsageError(f"the rule file applied to {ifname} declares no dynamic set {name}")
    return sm


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def add(
    name: str = typer.Argument(..., help="dynamic set"),
    addrs: list[str] = typer.Argument(None, metavar="ADDR...", help=f"addresses and CIDRs; {STDIN_HELP}"),
    timeout: str = typer.Option(
        None, "--timeout", metavar="DUR", help="lifetime (30s, 4h, 0 = never; default: the set's timeout)"
    ),
    iface: list[str] = typer.Option([], "--iface", "-i", help=IFACE_HELP),
) -> None:
    """Add elements to a dynamic set (an element already there gets the new expiry)."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    elements = _elements(addrs or [])
    tmo = _timeout_ns(timeout)
    full = []
    with _locked(name, iface) as names:
        for n in names:
            with _open(n, name) as sm:
                res = D.add(sm, elements, tmo, D.now_ns(str(Iface(n).pin_dir)))
                size = sm.meta().size
            msg = f"{n}: {name}: {res.added} added, {res.updated} renewed"
            if res.refused:
                full.append(n)
                print(
                    f"{msg}; the set is full (size {size}): {res.refused} of "
                    f"{res.added + res.refused} new elements were not added",
                    file=sys.stderr,
                )
            else:
                print(msg)
    if full:
        raise SetFull(f"dynamic set {name} is full on {', '.join(full)}")


def delete(
    name: str = typer.Argument(..., help="dynamic set"),
    addrs: list[str] = typer.Argument(None, metavar="ADDR...", help=f"addresses and CIDRs; {STDIN_HELP}"),
    iface: list[str] = typer.Option([], "--iface", "-i", help=IFACE_HELP),
) -> None:
    """Remove elements from a dynamic set (one that is not there is no error)."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    elements = _elements(addrs or [])
    unique = len(dict.fromkeys(elements))
    with _locked(name, iface) as names:
        for n in names:
            with _open(n, name) as sm:
                removed = D.delete(sm, elements, D.now_ns(str(Iface(n).pin_dir)))
            absent = f" ({unique - removed} were not in it)" if removed < unique else ""
            print(f"{n}: {name}: {removed} removed{absent}")


def list_(
    name: str = typer.Argument(..., help="dynamic set"),
    iface: list[str] = typer.Option([], "--iface", "-i", help=IFACE_HELP),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List the elements of a dynamic set and when each expires."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    rows: list[dict[str, Any]] = []
    with _locked(name, iface) as names:
        for n in names:
            pin_dir = str(Iface(n).pin_dir)
            now = D.now_ns(pin_dir)
            with _open(n, name) as sm:
                for p, exp in D.elements(sm, now):
                    left = (exp - now) / 1e9 if exp else None
                    rows.append(
                        {
                            "interface": n,
                            "element": D.show(p),
                            "expires": None if left is None else round(left, 1),
                            "expires_at": None if left is None else round(time.time() + left, 1),
                        }
                    )
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    several = len(names) > 1
    for r in rows:
        when = "" if r["expires"] is None else f" expires {_duration(r['expires'])}"
        print(f"{r['interface'] + ': ' if several else ''}{r['element']}{when}")


def flush(
    name: str = typer.Argument(..., help="dynamic set"),
    iface: list[str] = typer.Option([], "--iface", "-i", help=IFACE_HELP),
) -> None:
    """Remove every element of a dynamic set."""
    # lazy: keeps --help and the other commands' start-up free of the data path
    from xdpguard.datapath import dynsets as D

    with _locked(name, iface) as names:
        for n in names:
            with _open(n, name) as sm:
                removed = D.flush(sm)
            print(f"{n}: {name}: flushed ({_plural(removed, 'element')} removed)")


def _duration(seconds: float) -> str:
    """59m58s, 3h59m, 12.5s: how long an element still counts."""
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


app.command("add")(add)
app.command("del")(delete)
app.command("list")(list_)
app.command("flush")(flush)
