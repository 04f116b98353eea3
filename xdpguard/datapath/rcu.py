"""Waiting out an RCU grace period from user space (membarrier(2)).

The update protocol (datapath/halves.py) flips which half of the rule
tables packets read, then must know that no packet still reads the old
half before rewriting it.  libbpf has no call for that, and neither libc
nor Python wraps membarrier(2), so this module makes the system call itself.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import time

# membarrier(2)'s number is listed for the architectures whose tables were
# checked (aarch64 and riscv64 share the generic table); elsewhere
# rcu_barrier() sleeps instead.
MEMBARRIER_CMD_GLOBAL = 1
_NR_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "riscv64": 283}.get(platform.machine())
_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


def rcu_barrier() -> None:
    """Wait for an RCU grace period.

    XDP and tc programs run inside RCU read-side sections (softirq with
    bottom halves off), and since kernel 4.20 one grace period covers all
    of them.  After a flip of the version flag, returning from here means no
    program invocation that could have read the old flag is still running,
    so the half we switched away from may be rewritten.  membarrier
    GLOBAL is the one plain syscall that performs synchronize_rcu() (it skips
    it with a single online CPU, where no reader can be mid-flight while we
    run).  It answers EINVAL on nohz_full systems, and its number is unknown
    on architectures not in _NR_MEMBARRIER: then sleep well past a grace
    period instead (they take ~8 ms here).
    """
    if _NR_MEMBARRIER is not None:
        args = (ctypes.c_int(MEMBARRIER_CMD_GLOBAL), ctypes.c_uint(0), ctypes.c_int(0))
        if _syscall(ctypes.c_long(_NR_MEMBARRIER), *args) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, f"membarrier(MEMBARRIER_CMD_GLOBAL): {os.strerror(err)}")
    time.sleep(0.02)
