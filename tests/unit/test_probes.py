"""The one-time tcx probe (xdpguard/datapath/probes.py), as root against
the running kernel, and how it reads each answer the kernel may give.
Skipped without root or bpffs, with the reason."""

from __future__ import annotations

import errno
import os

import pytest

from tests.bpfcalls import kernel, refusal
from xdpguard.datapath import bpf, probes
from xdpguard.datapath.bpferror import ENOTSUPP, BpfError


@kernel
@pytest.mark.parametrize(
    "err, answer", [(errno.ENODEV, True), (errno.EINVAL, False), (ENOTSUPP, False), (errno.EPERM, None)]
)
def test_tcx_probe(err: int, answer: bool | None, monkeypatch: pytest.MonkeyPatch) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    assert probes.have_tcx.__wrapped__() is True  # kernel 6.6+; nothing is attached by asking
    assert set(os.listdir("/proc/self/fd")) <= fds_before

    def refuse(*_: object) -> int:
        raise BpfError(err, "BPF_LINK_CREATE")

    monkeypatch.setattr(bpf, "link_create", refuse)
    if answer is None:  # no privileges says nothing about tcx
        refusal(probes.have_tcx.__wrapped__)
    else:
        assert probes.have_tcx.__wrapped__() is answer
