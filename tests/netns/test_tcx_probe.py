"""The egress attachment follows the one-time tcx probe.

On a kernel with tcx (this one: the probe itself is checked in
tests/unit/test_probes.py) the egress program gets a pinned tcx
link.  When the probe says the kernel has none, it goes in as a clsact
cls_bpf filter over netlink instead, without trying a tcx link first;
both are removed by detach.  The probe runs once per process, and a tcx
attach that fails on a kernel that has tcx is reported as the error it
is, not taken for a missing feature.
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import probes
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.errors import KernelError
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text

RULES = """\
version: 1
egress:
  default: allow
  rules:
    - {name: no-9999-out, match: {proto: udp, dport: 9999}, action: drop}
"""


def _tc_egress(lab) -> str:
    cmd = ["tc", "-n", lab.b.ns, "filter", "show", "dev", lab.b.ifname, "egress"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("kernel_has_tcx", [True, False], ids=["tcx", "no-tcx"])
def test_egress_attachment_follows_the_probe(lab, monkeypatch, kernel_has_tcx: bool) -> None:
    monkeypatch.delenv("XDPGUARD_FORCE_TC_NETLINK", raising=False)
    if not kernel_has_tcx:
        monkeypatch.setattr(probes, "have_tcx", lambda: False)

        def no_tcx_link(prog_fd: int, ifindex: int, attach_type: int, *args: object, **kw: object) -> int:
            assert attach_type != B.BPF_TCX_EGRESS, "tried a tcx link although the probe said no"
            return real_link_create(prog_fd, ifindex, attach_type, *args, **kw)  # type: ignore[arg-type]

        real_link_create = B.link_create
        monkeypatch.setattr(B, "link_create", no_tcx_link)
    plan = compile_ruleset(parse_text(RULES, "probe.yaml"))
    with net.in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        dp.apply(plan, None)
        try:
            assert dp.egress_mode == ("tcx" if kernel_has_tcx else "netlink")
            assert os.path.exists(dp.iface.pin("link_tcx")) is kernel_has_tcx
            assert ("xg_egress" in _tc_egress(lab)) is not kernel_has_tcx
            assert os.path.exists(dp.iface.pin("link_xdp"))  # XDP always uses a link
        finally:
            dp.detach()
    assert "xg_egress" not in _tc_egress(lab)
    assert not any(lab.bpffs.rglob("*"))


def test_the_probe_runs_once_per_process(lab, monkeypatch) -> None:
    monkeypatch.delenv("XDPGUARD_FORCE_TC_NETLINK", raising=False)
    probe_loads = []
    real_prog_load = B.prog_load

    def counting_prog_load(*args: object, **kw: object) -> int:
        if kw.get("name") == "xg_tcx_probe":
            probe_loads.append(args)
        return real_prog_load(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(B, "prog_load", counting_prog_load)
    probes.have_tcx.cache_clear()  # forget what earlier tests in this process found
    plan = compile_ruleset(parse_text(RULES, "probe.yaml"))
    with net.in_netns(lab.b.ns):
        for _ in range(2):  # two attaches, as a long-running caller would make
            dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
            dp.apply(plan, None)
            try:
                assert dp.egress_mode == "tcx"
            finally:
                dp.detach()
    assert len(probe_loads) == 1


def test_a_failed_tcx_attach_is_an_error_not_a_fallback(lab, monkeypatch) -> None:
    """EINVAL is what a kernel without tcx answers the probe; from the real
    attach on a kernel with tcx it is a failure to report, and nothing is
    left attached (no netlink filter put in its place)."""
    monkeypatch.delenv("XDPGUARD_FORCE_TC_NETLINK", raising=False)
    assert probes.have_tcx()  # asked before link_create is broken below
    real_link_create = B.link_create

    def refuse_tcx(prog_fd: int, ifindex: int, attach_type: int, *args: object, **kw: object) -> int:
        if attach_type == B.BPF_TCX_EGRESS:
            raise B.BpfError(
                errno.EINVAL, f"BPF_LINK_CREATE (attach type {attach_type}) on ifindex {ifindex}"
            )
        return real_link_create(prog_fd, ifindex, attach_type, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(B, "link_create", refuse_tcx)
    plan = compile_ruleset(parse_text(RULES, "probe.yaml"))
    with net.in_netns(lab.b.ns):
        dp = Dataplane(lab.b.ifname, lab.b.ifindex, lab.b.ns)
        try:
            with pytest.raises(KernelError, match=r"attach the egress program \(tcx\) to "):
                dp.apply(plan, None)
            assert not dp.attached
            assert dp.iface.load_applied() is None
        finally:
            if dp.attached:  # the fallback this test forbids happened: leave nothing behind
                dp.detach()
    assert "xg_egress" not in _tc_egress(lab)
    assert not any(lab.bpffs.rglob("*"))
