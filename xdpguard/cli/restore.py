"""`restore`: re-attach the recorded rule sets after a reboot (run by xdpguard-restore.service).

Each interface is reported on its own line; one that cannot be restored
(gone, its namespace not created yet) does not stop the others, and the
exit code is 1 at the end if any failed.  --netns is not needed: every
rule set is restored in the namespace it was applied in.
"""

from __future__ import annotations

import typer

from xdpguard.cli.common import console, err_console, print_json
from xdpguard.errors import XdpguardError


def restore(
    iface: list[str] = typer.Option(
        [],
        "--iface",
        "-i",
        help="interface to restore (repeat; default: every interface with recorded state)",
    ),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Re-attach recorded rule sets whose pins are gone (after a reboot); skip attached interfaces."""
    # lazy: keeps --help and the other commands' start-up free of rich and the data path
    from rich.markup import escape

    from xdpguard.restore import FAILED
    from xdpguard.restore import restore as do_restore

    outcomes = do_restore(iface or None)
    if json_out:
        print_json([{"interface": o.interface, "result": o.result, "message": o.message} for o in outcomes])
    elif not outcomes:
        console.print("no recorded rule sets to restore")
    for o in outcomes:
        if json_out:
            continue
        if o.result == FAILED:
            err_console.print(
                f"{escape(o.interface)}: [red]restore failed[/]: {escape(o.message)}", soft_wrap=True
            )
        else:
            console.print(f"{o.interface}: {o.message}", markup=False)
    failed = [o.interface for o in outcomes if o.failed]
    if failed:
        raise XdpguardError(f"{len(failed)} of {len(outcomes)} interfaces not restored: {', '.join(failed)}")
