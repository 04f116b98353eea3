"""BpfError, and the errno-to-sentence table every kernel failure is told with.

A failed bpf(2) or libbpf call (datapath/bpf.py, btf.py, events.py,
syncookie.py) raises `BpfError`, labelled with the command and its object;
its `sentence` turns the errno into a reason an operator can act on.  The
same sentences serve callers that hold only an errno, such as a batch write
that stopped part way (`errno_sentence`).  Pure: no libbpf, no kernel.
"""

from __future__ import annotations

import errno
import os
import re

# The kernel-internal "not supported" code some commands leak to user space
# (batch ops on map types without them); it has no name in Python's errno.
ENOTSUPP = 524


class BpfError(OSError):
    """A bpf(2) call failed.  `op` names the command and its object."""

    def __init__(self, err: int, op: str, log: str = "") -> None:
        super().__init__(err, _strerror(err))
        self.op = op
        self.log = log

    def __str__(self) -> str:
        return f"{self.op}: {self.strerror}" + ("\n" + self.log.rstrip() if self.log else "")

    @property
    def sentence(self) -> str:
        """What an operator should read: the operation and a plain reason."""
        return errno_sentence(self.errno or 0, self.op)


def _strerror(err: int) -> str:
    return "Operation not supported" if err == ENOTSUPP else os.strerror(err)


# errno -> [(pattern the operation must match, reason)]: the first row whose
# regular expression is found in the label gives the reason.
_ROOT = "needs root (CAP_BPF and CAP_NET_ADMIN)"
_TOO_LARGE = [
    ("^BPF_MAP_UPDATE_(ELEM|BATCH)", "map is full"),
    ("^BPF_MAP_CREATE", "map too large (key, value or entry count beyond what the kernel allows)"),
    ("^BPF_PROG_TEST_RUN", "the output buffer is too small for the program's result"),
    ("", "too large for the kernel"),
]
_UNSUPPORTED = [("", "not supported by this kernel or driver")]
_REASONS: dict[int, list[tuple[str, str]]] = {
    errno.EACCES: [("^BPF_PROG_LOAD", "the verifier rejected the program"), ("", _ROOT)],
    errno.EPERM: [("^BPF_LINK_UPDATE", "the program to replace is no longer the one attached"), ("", _ROOT)],
    errno.EBUSY: [
        ("LINK|(?i:attach)", "another XDP program is attached to this interface"),
        ("", "resource busy"),
    ],
    errno.EEXIST: [
        (
            "LINK|(?i:attach)",
            "a program in another XDP mode (generic or native) is attached to this interface",
        ),
        ("^BPF_OBJ_PIN", "something is already pinned at that path"),
        ("", "the entry already exists"),
    ],
    errno.ENOSPC: _TOO_LARGE,
    errno.E2BIG: _TOO_LARGE,
    errno.ENOENT: [
        ("^BPF_OBJ_GET", "nothing is pinned at that path"),
        ("GET_FD_BY_ID", "no such object (it was removed)"),
        ("", "no such entry"),
    ],
    # XDP links answer EINVAL, not ENODEV, for an unknown ifindex.
    errno.EINVAL: [
        (
            "^BPF_LINK_CREATE",
            "the kernel refused to attach (no interface with that index, or wrong attach type)",
        ),
        ("", "the kernel rejected the arguments (wrong sizes, flags or attach type)"),
    ],
    errno.ENODEV: [("", "no such interface")],
    errno.EOPNOTSUPP: _UNSUPPORTED,
    ENOTSUPP: _UNSUPPORTED,
    errno.ENOMEM: [("", "out of kernel memory (check the memlock limit and map sizes)")],
    errno.EBADF: [("", "bad file descriptor (object already closed)")],
    errno.ELIBACC: [("", "cannot load libbpf.so.1: install the Debian package libbpf1 (`make setup` does)")],
}


def errno_sentence(err: int, op: str) -> str:
    """Turn an errno from a bpf/netlink operation into a sentence for operators."""
    for pattern, reason in _REASONS.get(err, []):
        if re.search(pattern, op):
            return f"{op}: {reason}"
    return f"{op}: {_strerror(err).lower()}"
