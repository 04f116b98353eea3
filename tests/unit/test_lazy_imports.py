"""Function-level imports say why they are lazy (scripts/lazy_imports.py, also run by `make lint`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lazy_imports.py"

SAMPLE = """\
from typing import TYPE_CHECKING

import os

if TYPE_CHECKING:
    from collections import OrderedDict


def bare():
    import json

    return json


def above():
    # lazy: the big dependency, only when asked
    from xml.etree import ElementTree
    from xml.dom import minidom

    return ElementTree, minidom


def same_line():
    import csv  # lazy: csv output is rare

    return csv


def pragma_only():
    import sqlite3  # noqa: F401


def under_someone_elses_comment():
    x = 1  # a comment about x, not about the import
    import zlib

    return x, zlib


def nested():
    def inner():
        if os.environ:
            import shlex

            return shlex
        return None

    return inner


def typing_only():
    if TYPE_CHECKING:
        from decimal import Decimal
    else:
        import fractions
"""


def run(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, paths)], capture_output=True, text=True)


def test_an_uncommented_lazy_import_is_flagged_and_a_commented_one_is_not(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    r = run(sample)
    assert r.returncode == 1, r.stdout
    lines = SAMPLE.splitlines()
    flagged = sorted(int(out.split(":")[1]) for out in r.stdout.splitlines() if out.startswith(str(sample)))
    expected = [lines.index(s) + 1 for s in ("    import json", "    import sqlite3  # noqa: F401")]
    expected += [lines.index("            import shlex") + 1, lines.index("    import zlib") + 1]
    expected.append(lines.index("        import fractions") + 1)
    assert flagged == sorted(expected), r.stdout
    assert r.stdout.rstrip().endswith("1 files, 5 unexplained function-level imports"), r.stdout


def test_a_commented_sample_passes(tmp_path: Path) -> None:
    sample = tmp_path / "ok.py"
    sample.write_text("def f():\n    # lazy: numpy is heavy\n    import numpy\n\n    return numpy\n")
    r = run(sample)
    assert r.returncode == 0, r.stdout
    assert r.stdout.rstrip().endswith("1 files, 0 unexplained function-level imports"), r.stdout
