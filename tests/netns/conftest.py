"""Fixtures for real-traffic tests: a two-namespace veth lab per test.

`lab` gives two fresh network namespaces joined by a veth pair (xa0 in A,
xb0 in B) with IPv4 and IPv6 addresses and static neighbour entries, and
points XDPGUARD_BPFFS / XDPGUARD_STATE_DIR at private locations.  Teardown
always deletes the namespaces, and fails the test if anything is still
pinned under its bpffs directory (every test must clean up after itself,
as `xdpguard detach` must).

Every test here is skipped, with the reason, when the kernel or the
privileges for it are missing: root, network namespaces, veth, bpf(2), bpffs.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.netns.abtest import files  # noqa: F401  (a fixture for the A/B rule-set tests)
from tests.netns.cli import xg
from tests.netns.clihelp import Guard, guarded, missing_feature
from tests.netns.traffic import Lab, Side
from xdpguard import net

BPFFS_ROOT = Path("/sys/fs/bpf")
A_IF, B_IF = "xa0", "xb0"
A4, B4 = "10.200.0.1", "10.200.0.2"
A6, B6 = "fd00:200::1", "fd00:200::2"

_counter = itertools.count()
_NS_RE = re.compile(r"^xgt(\d+)-\d+[ab]$")
_BPFFS_RE = re.compile(r"^xdpguard-test-(\d+)-\d+$")
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.netns)


@pytest.fixture(autouse=True)
def _require_kernel_features() -> None:
    reason = missing_feature()
    if reason:
        pytest.skip(reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_bpffs_dir(d: Path) -> list[str]:
    """Unpin everything under d, remove d; return what was still pinned."""
    left: list[str] = []
    for root, dirs, names in os.walk(d, topdown=False):
        for name in names:
            p = Path(root, name)
            left.append(str(p.relative_to(d)))
            p.unlink()
        for name in dirs:
            Path(root, name).rmdir()
    d.rmdir()
    return sorted(left)


@pytest.fixture(scope="session")
def _sweep_stale() -> None:
    """Remove namespaces and bpffs dirs left by test runs that were killed."""
    for name in net.list_netns():
        m = _NS_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            net.delete_netns(name)
    for d in BPFFS_ROOT.iterdir() if BPFFS_ROOT.is_dir() else ():
        m = _BPFFS_RE.match(d.name)
        if m and d.is_dir() and not _pid_alive(int(m.group(1))):
            _remove_bpffs_dir(d)


@pytest.fixture
def lab(_sweep_stale: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    n = next(_counter)
    pid = os.getpid()
    ns_a, ns_b = f"xgt{pid}-{n}a", f"xgt{pid}-{n}b"
    bpffs = BPFFS_ROOT / f"xdpguard-test-{pid}-{n}"
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    monkeypatch.setenv("XDPGUARD_BPFFS", str(bpffs))
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(state_dir))
    try:
        net.create_netns(ns_a)
        net.create_netns(ns_b)
        try:
            ia, ib = net.create_veth_pair(
                A_IF, ns_a, B_IF, ns_b, [f"{A4}/24", f"{A6}/64"], [f"{B4}/24", f"{B6}/64"]
            )
        except net.NetError as e:
            if "not supported" in str(e).lower():
                pytest.skip(f"kernel has no veth driver (CONFIG_VETH): {e}")
            raise
        mac_a, mac_b = net.get_mac(ns_a, A_IF), net.get_mac(ns_b, B_IF)
        for ip in (B4, B6):
            net.neigh_add(ns_a, A_IF, ip, mac_b)
        for ip in (A4, A6):
            net.neigh_add(ns_b, B_IF, ip, mac_a)
        net.set_gro(ns_b, B_IF, True)
        yield Lab(
            a=Side(ns_a, A_IF, ia, mac_a, A4, A6),
            b=Side(ns_b, B_IF, ib, mac_b, B4, B6),
            bpffs=bpffs,
            state_dir=state_dir,
        )
    finally:
        # Deleting the namespaces destroys the veth pair and detaches any XDP
        # or tcx program still on it; pins would keep maps and links alive.
        net.delete_netns(ns_a)
        net.delete_netns(ns_b)
        left = _remove_bpffs_dir(bpffs) if bpffs.exists() else []
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"still pinned under {bpffs} after the test: {left}"


@pytest.fixture
def guard(lab: Lab) -> Iterator[Guard]:
    """The CLI for the lab's B side; detached at the end, and nothing left pinned (see clihelp.guarded)."""
    with guarded(lab) as g:
        yield g


@pytest.fixture
def apply_rules(lab: Lab, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """apply(text): write a rule file and apply it to the lab's B side; detached at the end."""

    def apply(text: str) -> None:
        f = tmp_path / "limits.yaml"
        f.write_text(text)
        xg("--netns", lab.b.ns, "apply", str(f), "--iface", lab.b.ifname)

    yield apply
    xg("--netns", lab.b.ns, "detach", "--iface", lab.b.ifname)
