"""A non-editable install (`pip install .`) attaches from any directory.

xdpguard compiles its BPF C when it attaches, so a wheel must carry the C
sources (and the example rules the demo applies) as package data.  This
builds and installs the package from a copy of the checkout into a
directory of its own, then runs `xdpguard apply` elsewhere with nothing
but that install and the dependencies on the path, and checks the program
is attached in the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = """\
version: 1
ingress:
  default: allow
  rules:
    - {name: no-telnet, match: {proto: tcp, dport: 23}, action: drop}
"""


def test_installed_package_attaches_from_another_directory(lab, tmp_path: Path) -> None:
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*cache"),
    )
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile"]
    subprocess.run([*pip, "--target", str(site), str(src)], check=True, cwd=src, capture_output=True)
    shutil.rmtree(src)  # nothing may come from the source tree any more
    elsewhere.mkdir()
    (elsewhere / "rules.yaml").write_text(RULES)
    # The base interpreter (bcc is a system package) with the install first
    # and the dependencies after it; the editable checkout is not on the path.
    python = os.path.realpath(sys.executable)
    env = os.environ | {"PYTHONPATH": f"{site}:{sysconfig.get_paths()['purelib']}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
        )

    where = run("-c", "import xdpguard.resources as r; print(r.__file__, r.BPF_DIR, r.RULES_DIR)")
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout
    assert (site / "xdpguard" / "_data" / "rules" / "web-edge.yaml").is_file()

    xg = ["-m", "xdpguard", "--netns", lab.b.ns]
    r = run(*xg, "apply", "rules.yaml", "--iface", lab.b.ifname)
    assert r.returncode == 0, r.stdout + r.stderr
    status = run(*xg, "status", "--iface", lab.b.ifname, "--json")
    [st] = json.loads(status.stdout)
    assert st["attached"] and st["xdp"]["live"], st
    assert run(*xg, "detach", "--iface", lab.b.ifname).returncode == 0
    assert not any(lab.bpffs.rglob("*"))
