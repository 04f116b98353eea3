"""No import cycles among xdpguard's modules (scripts/import_cycles.py, also run by `make lint`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def run(package: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(package)], capture_output=True, text=True)


def test_xdpguard_has_no_import_cycles() -> None:
    r = run(ROOT / "xdpguard")
    assert r.returncode == 0, r.stdout
    assert r.stdout.rstrip().endswith(" 0 cycles"), r.stdout


def test_a_lazy_import_cycle_is_found_and_a_type_only_one_is_not(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n")
    (pkg / "d.py").write_text("from . import c\n")
    r = run(pkg)
    assert r.returncode == 1
    assert "import cycle: pkg.a -> pkg.b; pkg.b -> pkg.a" in r.stdout, r.stdout
    assert "pkg.c" not in r.stdout and r.stdout.rstrip().endswith(" 1 cycles"), r.stdout
