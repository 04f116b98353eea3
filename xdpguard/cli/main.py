"""The `xdpguard` command: Typer app, global options, error handling.

Every operator-facing failure is an XdpguardError: printed as one line,
exit code 1 (runtime) or 2 (usage, invalid rules).  A traceback appears
only for unexpected errors and only with XDPGUARD_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Literal

import typer

from xdpguard.cli import apply as apply_cmds
from xdpguard.cli import check as check_cmd
from xdpguard.cli import exporter as exporter_cmd
from xdpguard.cli import restore as restore_cmd
from xdpguard.cli import sets as set_cmds
from xdpguard.cli import show, testcmd
from xdpguard.cli.common import CONTEXT
from xdpguard.errors import RuleError, UsageError, XdpguardError


def _root_markup_mode() -> Literal["rich"] | None:
    """Plain text for the bare command list (`xdpguard`, `xdpguard --help`):
    rich's help formatter alone costs more start-up time (~30 ms) than the
    rest of it.  A command's own help keeps rich's layout."""
    return None if sys.argv[1:] in ([], ["--help"]) else "rich"


app = typer.Typer(
    name="xdpguard",
    help="XDP firewall: declarative YAML rules compiled into BPF maps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=_root_markup_mode(),
)


@app.callback()
def root(
    netns: str = typer.Option(
        None, "--netns", help="operate inside this network namespace (like `ip -n`)", metavar="NAME"
    ),
) -> None:
    if netns:
        # lazy: the net package (ctypes, sockets), only with --netns
        from xdpguard.net import NetError, NoSuchNetns, enter_netns

        try:
            enter_netns(netns)
        except NoSuchNetns as e:
            raise UsageError(f"no network namespace named {netns!r} (see `ip netns list`)") from e
        except NetError as e:  # not a name `ip netns` could have made ("../x", "a/b")
            raise UsageError(f"--netns: {e}") from e
        except PermissionError as e:
            raise XdpguardError(f"entering network namespace {netns!r} needs root: {e.strerror}") from e
        CONTEXT["netns"] = netns


app.command("check")(check_cmd.check)
app.command("plan")(apply_cmds.plan)
app.command("apply")(apply_cmds.apply)
app.command("status")(show.status)
app.command("stats")(show.stats)
app.command("detach")(apply_cmds.detach)
app.command("unblock")(show.unblock)
app.command("events")(show.events)
app.command("rollback")(apply_cmds.rollback)
app.command("confirm")(apply_cmds.confirm)
app.command("watchdog", hidden=True)(apply_cmds.watchdog)
app.command("test")(testcmd.test)
app.command("exporter")(exporter_cmd.exporter)
app.command("restore")(restore_cmd.restore)
app.add_typer(set_cmds.app, name="set")


def main(argv: list[str] | None = None) -> None:
    debug = os.environ.get("XDPGUARD_DEBUG") == "1"
    try:
        # Typer handles its own usage errors (exit 2) and exits; ours propagate here.
        app(args=argv, prog_name="xdpguard")
    except RuleError as e:
        if debug:
            traceback.print_exc()
        print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except XdpguardError as e:
        if debug:
            traceback.print_exc()
        print(f"xdpguard: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except PermissionError as e:
        if debug:
            traceback.print_exc()
        where = f" ({e.filename})" if e.filename else ""
        print(f"xdpguard: permission denied{where}: run as root", file=sys.stderr)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:  # a bug: say so plainly, details on request
        if debug:
            traceback.print_exc()
        else:
            hint = "set XDPGUARD_DEBUG=1 for a traceback"
            print(f"xdpguard: internal error: {type(e).__name__}: {e} ({hint})", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
