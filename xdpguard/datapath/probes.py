"""What this process and the running kernel can do, asked before relying on it.

`privileged()` says whether the process holds the capabilities a change to
the data plane needs, so callers can say "run as root" instead of failing
half way.  `have_tcx()` asks the kernel once whether it attaches tc
programs through tcx links, so the egress attachment is chosen up front
(datapath/links.py), not guessed from the error of the real attach.
"""

from __future__ import annotations

import errno
import functools
import os

from xdpguard.datapath import bpf as B


def privileged() -> bool:
    """Whether this process may change the data plane: CAP_SYS_ADMIN (which
    also stands in for CAP_BPF, and enters namespaces and mounts bpffs) and
    CAP_NET_ADMIN in effect.  Root normally holds both; root without
    capabilities (some containers, `setpriv`) does not."""
    need = 1 << 21 | 1 << 12  # CAP_SYS_ADMIN, CAP_NET_ADMIN
    with open("/proc/self/status") as f:
        eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), None)
    return os.geteuid() == 0 if eff is None else eff & need == need


@functools.cache
def have_tcx() -> bool:
    """Whether the kernel attaches tc programs through tcx links (Linux 6.6+).

    Probed once per process, as cilium/ebpf does: a tcx link for a trivial
    program on ifindex 0.  A kernel with tcx looks the device up and answers
    ENODEV; an older one rejects the attach type first (EINVAL, or a "not
    supported" code).  Nothing is attached either way.  Any other answer (no
    privileges, no memory) says nothing about tcx and is raised.
    """
    pass_insns = bytes.fromhex("b7000000000000009500000000000000")  # r0 = TCX_PASS; exit
    with B.Fd(B.prog_load(B.BPF_PROG_TYPE_SCHED_CLS, pass_insns, name="xg_tcx_probe")) as prog:
        try:
            os.close(B.link_create(prog, 0, B.BPF_TCX_EGRESS))
        except B.BpfError as e:
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, B.ENOTSUPP):
                return False
            if e.errno != errno.ENODEV:
                raise
        return True
