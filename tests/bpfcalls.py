"""For unit tests that make bpf(2) calls: skip them without a kernel to call, catch a refusal.

`kernel` skips a test, with the reason, when this process lacks the
capabilities or /sys/fs/bpf is not a bpffs; `refusal` returns the
BpfError a call raises.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xdpguard.datapath.bpferror import BpfError
from xdpguard.datapath.probes import privileged


def _why_no_kernel() -> str | None:
    if not privileged():
        return "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    with open("/proc/self/mounts") as f:
        if not any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f):
            return "bpffs is not mounted at /sys/fs/bpf (run `make setup`)"
    return None


kernel = pytest.mark.skipif(_why_no_kernel() is not None, reason=str(_why_no_kernel()))


def refusal(call: Callable[..., object], *args: object, **kwargs: object) -> BpfError:
    """The BpfError `call` raises; the test fails if it raises none."""
    with pytest.raises(BpfError) as exc:
        call(*args, **kwargs)
    return exc.value
