"""Waiting out an RCU grace period (xdpguard/datapath/rcu.py): membarrier(2)
where its number is known and the kernel has it, a sleep elsewhere."""

from __future__ import annotations

import ctypes
import time

import pytest

from tests.bpfcalls import kernel
from xdpguard.datapath import rcu


def test_rcu_barrier_on_an_unknown_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rcu, "_NR_MEMBARRIER", None)
    t0 = time.monotonic()
    rcu.rcu_barrier()  # no membarrier number: sleeps past a grace period instead
    assert time.monotonic() - t0 >= 0.02


@kernel
def test_rcu_barrier_uses_membarrier() -> None:
    # MEMBARRIER_CMD_QUERY lists supported commands; GLOBAL (bit 0) must be one,
    # else rcu_barrier() silently degrades to a sleep.
    args = (ctypes.c_long(rcu._NR_MEMBARRIER), ctypes.c_int(0), ctypes.c_uint(0), ctypes.c_int(0))
    supported = rcu._syscall(*args)
    assert supported > 0 and supported & rcu.MEMBARRIER_CMD_GLOBAL
    t0 = time.monotonic()
    rcu.rcu_barrier()
    assert time.monotonic() - t0 < 1.0
