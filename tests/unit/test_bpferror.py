"""The errno-to-sentence layer (xdpguard/datapath/bpferror.py): what an
operator reads when a bpf(2) call fails.  Pure: no kernel needed."""

from __future__ import annotations

import errno

import pytest

from xdpguard.datapath.bpferror import ENOTSUPP, BpfError, errno_sentence


@pytest.mark.parametrize(
    "err, op, reason",
    [
        (errno.ENOSPC, "BPF_MAP_UPDATE_ELEM on in_src4", "map is full"),
        (errno.E2BIG, "BPF_MAP_UPDATE_BATCH (after 3 of 9) on in_src4", "map is full"),
        (errno.E2BIG, "BPF_MAP_CREATE x type 2", "map too large (key, value or entry count beyond"),
        (errno.EPERM, "BPF_MAP_UPDATE_ELEM on in_src4", "needs root (CAP_BPF and CAP_NET_ADMIN)"),
        (errno.EPERM, "BPF_LINK_UPDATE on link fd 3", "the program to replace is no longer the one attached"),
        (errno.EACCES, "BPF_PROG_LOAD x", "the verifier rejected the program"),
        (errno.EBUSY, "BPF_LINK_CREATE (attach type 37)", "another XDP program is attached"),
        (errno.EEXIST, "BPF_OBJ_PIN at /x", "something is already pinned at that path"),
        (errno.ENOENT, "BPF_PROG_GET_FD_BY_ID for program id 7", "no such object (it was removed)"),
        (errno.ENODEV, "BPF_LINK_CREATE", "no such interface"),
        (ENOTSUPP, "BPF_MAP_DELETE_BATCH", "not supported by this kernel or driver"),
        (errno.EXDEV, "BPF_MAP_CREATE", "invalid cross-device link"),  # no row: strerror
    ],
)
def test_errno_sentences(err: int, op: str, reason: str) -> None:
    assert errno_sentence(err, op).startswith(f"{op}: {reason}")


def test_bpf_error_is_an_oserror() -> None:
    err = BpfError(errno.ENOSPC, "BPF_MAP_UPDATE_ELEM on in_src4", log="line 1\n")
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err) == "BPF_MAP_UPDATE_ELEM on in_src4: No space left on device\nline 1"
    assert err.sentence == "BPF_MAP_UPDATE_ELEM on in_src4: map is full"
