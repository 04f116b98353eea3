"""Shared plumbing of the CLI commands: loading rules, finding interfaces, printing.

Commands stay thin: they call into rules/ and datapath/ and format what
comes back.  Everything that can fail with an operator's mistake raises an
XdpguardError subclass; main.py turns those into messages and exit codes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xdpguard.errors import UsageError, XdpguardError

if TYPE_CHECKING:
    from rich.console import Console

    from xdpguard.rules.compile import Plan
    from xdpguard.rules.model import RuleSet

# Wide enough that no line of a table is ever wrapped in a log.
PLAIN_WIDTH = 100_000


@functools.cache
def _console_class() -> type[Console]:
    """rich's Console, but plain text when the output is not a terminal.

    A CI log or a `| grep` gets tables without box drawing, one row per
    line, never wrapped at 80 columns (rich's guess when it sees no
    terminal) nor at $COLUMNS; colours are off there already.  Every table
    any command prints through this console gets it.  Made on first use:
    importing rich costs every command (`--help` included) tens of
    milliseconds, and most never print through it.
    """
    # lazy: rich, on first use (see above)
    from rich.console import Console
    from rich.table import Table

    class PlainWhenPiped(Console):
        def __init__(self, **kwargs: Any) -> None:
            stream = sys.stderr if kwargs.get("stderr") else sys.stdout
            if not stream.isatty():
                kwargs.setdefault("width", PLAIN_WIDTH)
            super().__init__(**kwargs)

        def print(self, *objects: Any, **kwargs: Any) -> None:
            if self.is_terminal or not any(isinstance(o, Table) for o in objects):
                super().print(*objects, **kwargs)
                return
            for obj in objects:
                if isinstance(obj, Table):
                    plain_table(obj)
            with self.capture() as cap:
                super().print(*objects, **kwargs)
            # rich pads every cell to its column's width: not the last one in a log.
            self.file.write("".join(line.rstrip() + "\n" for line in cap.get().splitlines()))

    return PlainWhenPiped


def plain_table(t: Any) -> None:
    """A table for a log: no box, no padding at the edges (columns still aligned)."""
    t.box = None
    t.show_edge = False
    t.pad_edge = False


class _LazyConsole:
    """The console, made on first use (see _console_class)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: Console | None = None

    def _real(self) -> Console:
        if self._console is None:
            self._console = _console_class()(**self._kwargs)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    # Special methods are looked up on the type, not through __getattr__
    # (rich's Live enters its console as a context manager).
    def __enter__(self) -> Console:
        return self._real().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._real().__exit__(*exc)


console: Console = _LazyConsole(highlight=False, soft_wrap=True)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True, highlight=False)  # type: ignore[assignment]

# The network namespace the global --netns option entered, for messages and state.
CONTEXT: dict[str, str | None] = {"netns": None}


def load_rules(path: Path) -> tuple[RuleSet, Plan, str]:
    """Parse and compile a rule file; returns the model, the plan and the file text."""
    # lazy: the parser and compiler, only for the commands that read a rule file
    from xdpguard.rules import incremental, inputs
    from xdpguard.rules.compile import compile_ruleset
    from xdpguard.rules.parse import parse_text

    # Rule by rule in batches (incremental.parse with nothing to reuse): 65,536
    # rules in one YAML pass took 500 MB.  Anything unusual, every error
    # included, goes to the ordinary parse, which says what and where.
    text = inputs.decode(inputs.read_rule_file(path), str(path))  # or exit 2: a device, a FIFO, not UTF-8
    parsed = incremental.parse(text, str(path), path.parent, {}, memoise=False) if text else None
    rs = (
        parsed.ruleset if parsed is not None else parse_text(text, str(path), path.parent)
    )  # says what and where
    for w in rs.warnings:  # valid but probably unintended: said, never refused
        print(w, file=sys.stderr)
    return rs, compile_ruleset(rs), text


def resolve_iface(name: str) -> int:
    # lazy: the net package (ctypes, sockets), only for the commands that act on an interface
    from xdpguard.net import NoSuchInterface, ifindex

    try:
        return ifindex(name)
    except NoSuchInterface as e:
        here = CONTEXT["netns"]
        where = f" in network namespace {here}" if here else ""
        elsewhere = _elsewhere(name, here)
        if not elsewhere and _recorded(name):
            # Not a typo: the interface xdpguard protected is gone (exit 1, as
            # for every interface the kernel no longer has).
            raise XdpguardError(
                f"{name} is gone (no interface named {name!r}{where}): its XDP link went with it; "
                f"apply again once it is back, or `xdpguard detach --iface {name}` to forget it"
            ) from e
        raise UsageError(f"no interface named {name!r}{where}{elsewhere}") from e


def _recorded(name: str) -> bool:
    """xdpguard has a rule set recorded for an interface of this name."""
    from xdpguard.state import Iface  # lazy: as in resolve_iface

    try:
        return Iface(name).load_applied() is not None
    except (XdpguardError, OSError):
        return True  # a record is there, if a damaged one


def _elsewhere(name: str, here: str | None) -> str:
    """`; network namespace edge has one: ...` when another namespace holds the interface."""
    from xdpguard.net import netns_with_interface  # lazy: as in resolve_iface

    try:
        others = [ns for ns in netns_with_interface(name) if ns != here]
    except OSError:  # not allowed to look (not root): say nothing rather than guess
        return ""
    if not others:
        return ""
    listed = ", ".join(others)
    which = "network namespace " if len(others) == 1 else "network namespaces "
    args = " ".join(sys.argv[1:]) if here is None else ""
    hint = f"`xdpguard --netns {others[0]} {args}`" if args else f"--netns {others[0]}"
    return f"; {which}{listed} {'has' if len(others) == 1 else 'have'} one: use {hint}"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def require_root(command: str) -> None:
    """Commands that read pinned BPF objects and the state directory need root: say so first."""
    if os.geteuid() != 0:
        raise XdpguardError(
            f"`xdpguard {command}` needs root: it reads the pinned BPF objects and the state directory "
            f"(run it with sudo)"
        )
