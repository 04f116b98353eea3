"""The CLI imports only what a command needs.

`python -X importtime` lists every module a run imports.  `--help` must not
pay for rich, the YAML parser, the compiler, numpy or the datapath; each
command imports its own dependencies when it runs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def imported(*args: str, ok: tuple[int, ...] = (0,)) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "xdpguard", *args], capture_output=True, text=True
    )
    assert r.returncode in ok, r.stderr[-2000:]
    return {
        line.split("|")[-1].strip()
        for line in r.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@pytest.mark.parametrize("args", [("--help",), ()])
def test_help_imports_nothing_heavy(args: tuple[str, ...]) -> None:
    mods = imported(*args, ok=(0, 2))
    assert "xdpguard.cli.main" in mods  # the measurement saw the CLI
    heavy = {"rich", "yaml", "numpy", "bcc", "pyroute2", "xdpguard.rules.compile", "xdpguard.datapath.bpf"}
    assert not heavy & mods, sorted(heavy & mods)
