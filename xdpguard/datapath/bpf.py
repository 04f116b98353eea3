"""Typed ctypes layer over the bpf(2) and membarrier(2) system calls.

bcc 0.26 compiles and loads our programs, but it has no batch map operations,
no bpf_link create/update/detach, no object-info queries and no
BPF_PROG_TEST_RUN with contexts.  This module issues those calls directly so
that paths which only touch maps and links never import bcc (and LLVM, ~70 MB).
File descriptors are plain ints; `Fd` closes one on scope exit.  Every failure
raises `BpfError` naming the command and the object it was applied to.

Attribute layouts are mirrored from include/uapi/linux/bpf.h; the offsets in
the comments were checked with offsetof() against the Debian 6.1 UAPI header
(tests/unit/test_bpf_syscalls.py repeats that check) and, for the fields newer
than 6.1 (tcx), against the upstream header.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

# --- constants -------------------------------------------------------------

# bpf(2) commands
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_GET_FD_BY_ID = 30
BPF_ENABLE_STATS = 32
BPF_LINK_DETACH = 34

# map types
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_RINGBUF = 27

PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)

# program types
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6

# attach types
BPF_XDP = 37
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47

# link types (bpf_link_info.type)
BPF_LINK_TYPE_XDP = 6
BPF_LINK_TYPE_TCX = 11

# XDP attach flags (link_create.flags for BPF_XDP)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_FLAGS_HW_MODE = 8
XDP_FLAGS_REPLACE = 16

# XDP verdicts
XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4

# map_create flags
BPF_F_NO_PREALLOC = 1
BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_F_INNER_MAP = 0x1000

# element update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# link_update flags
BPF_F_REPLACE = 4

# tcx link_create flags: where to insert relative to relative_fd
BPF_F_BEFORE = 1 << 3
BPF_F_AFTER = 1 << 4
BPF_F_ID = 1 << 5
BPF_F_LINK = 1 << 13

# tcx verdicts
TCX_PASS = 0
TCX_DROP = 2

# prog_test_run flags
BPF_F_TEST_RUN_ON_CPU = 1
BPF_F_TEST_XDP_LIVE_FRAMES = 2

BPF_STATS_RUN_TIME = 0
BPF_OBJ_NAME_LEN = 16

# The kernel-internal "not supported" code some commands leak to user space
# (batch ops on map types without them); it has no name in Python's errno.
ENOTSUPP = 524

_SYSCALLS = {"x86_64": (321, 324), "aarch64": (280, 283)}
_NR_BPF, _NR_MEMBARRIER = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])
MEMBARRIER_CMD_GLOBAL = 1

# bpf_attr is 144 bytes on 6.1 and grows with new kernels; the kernel accepts
# a larger buffer as long as the tail it does not know is zero.
_ATTR_SIZE = 160

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


# --- errors ----------------------------------------------------------------


class BpfError(OSError):
    """A bpf(2) call failed.  `op` names the command and its object."""

    def __init__(self, err: int, op: str, log: str = "") -> None:
        super().__init__(err, _strerror(err))
        self.op = op
        self.log = log

    def __str__(self) -> str:
        text = f"{self.op}: {self.strerror}"
        if self.log:
            text += "\n" + self.log.rstrip()
        return text

    @property
    def sentence(self) -> str:
        """What an operator should read: the operation and a plain reason."""
        return errno_sentence(self.errno or 0, self.op)

    @property
    def unsupported(self) -> bool:
        """True when the kernel lacks the feature rather than rejecting our input."""
        return self.errno in (errno.EOPNOTSUPP, ENOTSUPP)


def _strerror(err: int) -> str:
    if err == ENOTSUPP:
        return "Operation not supported"
    return os.strerror(err)


def errno_sentence(err: int, op: str) -> str:
    """Turn an errno from a bpf/netlink operation into a sentence for operators."""
    is_link = "LINK" in op or "attach" in op.lower()
    if err in (errno.EPERM, errno.EACCES):
        if err == errno.EACCES and op.startswith("BPF_PROG_LOAD"):
            reason = "the verifier rejected the program"
        elif err == errno.EPERM and op.startswith("BPF_LINK_UPDATE"):
            reason = "the program to replace is no longer the one attached"
        else:
            reason = "needs root (CAP_BPF and CAP_NET_ADMIN)"
    elif err == errno.EBUSY:
        reason = "another XDP program is attached to this interface" if is_link else "resource busy"
    elif err == errno.EEXIST:
        if is_link:
            reason = "a program in another XDP mode (generic or native) is attached to this interface"
        elif op.startswith("BPF_OBJ_PIN"):
            reason = "something is already pinned at that path"
        else:
            reason = "the entry already exists"
    elif err in (errno.ENOSPC, errno.E2BIG):
        if op.startswith(("BPF_MAP_UPDATE_ELEM", "BPF_MAP_UPDATE_BATCH")):
            reason = "map is full"
        elif op.startswith("BPF_MAP_CREATE"):
            reason = "map too large (key, value or entry count beyond what the kernel allows)"
        elif op.startswith("BPF_PROG_TEST_RUN"):
            reason = "the output buffer is too small for the program's result"
        else:
            reason = "too large for the kernel"
    elif err == errno.ENOENT:
        if op.startswith("BPF_OBJ_GET"):
            reason = "nothing is pinned at that path"
        elif "GET_FD_BY_ID" in op:
            reason = "no such object (it was removed)"
        else:
            reason = "no such entry"
    elif err == errno.EINVAL:
        if op.startswith("BPF_LINK_CREATE"):
            # XDP links answer EINVAL, not ENODEV, for an unknown ifindex.
            reason = "the kernel refused to attach (no interface with that index, or wrong attach type)"
        else:
            reason = "the kernel rejected the arguments (wrong sizes, flags or attach type)"
    elif err == errno.ENODEV:
        reason = "no such interface"
    elif err == errno.ESTALE:
        reason = "the interface's programs changed since they were read (expected_revision)"
    elif err in (errno.EOPNOTSUPP, ENOTSUPP):
        reason = "not supported by this kernel or driver"
    elif err == errno.ENOMEM:
        reason = "out of kernel memory (check the memlock limit and map sizes)"
    elif err == errno.EBADF:
        reason = "bad file descriptor (object already closed)"
    else:
        reason = _strerror(err).lower()
    return f"{op}: {reason}"


# --- attribute layouts -----------------------------------------------------

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64


class _MapCreateAttr(ctypes.Structure):
    _fields_ = [
        ("map_type", _u32),  # @0
        ("key_size", _u32),  # @4
        ("value_size", _u32),  # @8
        ("max_entries", _u32),  # @12
        ("map_flags", _u32),  # @16
        ("inner_map_fd", _u32),  # @20
        ("numa_node", _u32),  # @24
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),  # @28
    ]


class _MapElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", _u32),  # @0
        ("_pad", _u32),
        ("key", _u64),  # @8
        ("value", _u64),  # @16 (next_key for GET_NEXT_KEY)
        ("flags", _u64),  # @24
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [
        ("in_batch", _u64),  # @0
        ("out_batch", _u64),  # @8
        ("keys", _u64),  # @16
        ("values", _u64),  # @24
        ("count", _u32),  # @32
        ("map_fd", _u32),  # @36
        ("elem_flags", _u64),  # @40
        ("flags", _u64),  # @48
    ]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", _u32),  # @0
        ("insn_cnt", _u32),  # @4
        ("insns", _u64),  # @8
        ("license", _u64),  # @16
        ("log_level", _u32),  # @24
        ("log_size", _u32),  # @28
        ("log_buf", _u64),  # @32
        ("kern_version", _u32),  # @40
        ("prog_flags", _u32),  # @44
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),  # @48
        ("prog_ifindex", _u32),  # @64
        ("expected_attach_type", _u32),  # @68
    ]


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", _u64),  # @0
        ("bpf_fd", _u32),  # @8
        ("file_flags", _u32),  # @12
    ]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", _u32),  # @0
        ("retval", _u32),  # @4
        ("data_size_in", _u32),  # @8
        ("data_size_out", _u32),  # @12
        ("data_in", _u64),  # @16
        ("data_out", _u64),  # @24
        ("repeat", _u32),  # @32
        ("duration", _u32),  # @36
        ("ctx_size_in", _u32),  # @40
        ("ctx_size_out", _u32),  # @44
        ("ctx_in", _u64),  # @48
        ("ctx_out", _u64),  # @56
        ("flags", _u32),  # @64
        ("cpu", _u32),  # @68
        ("batch_size", _u32),  # @72
    ]


class _GetIdAttr(ctypes.Structure):
    _fields_ = [
        ("id", _u32),  # @0 (map_id / prog_id / link_id)
        ("next_id", _u32),  # @4
        ("open_flags", _u32),  # @8
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", _u32),  # @0
        ("info_len", _u32),  # @4
        ("info", _u64),  # @8
    ]


class _LinkCreateAttr(ctypes.Structure):
    # The union after flags is, for tcx, {union {relative_fd; relative_id} @16;
    # expected_revision u64 @24}: relative_fd and relative_id share offset 16.
    _fields_ = [
        ("prog_fd", _u32),  # @0
        ("target_ifindex", _u32),  # @4
        ("attach_type", _u32),  # @8
        ("flags", _u32),  # @12
        ("relative_fd", _u32),  # @16
        ("_pad", _u32),
        ("expected_revision", _u64),  # @24
    ]


class _LinkUpdateAttr(ctypes.Structure):
    _fields_ = [
        ("link_fd", _u32),  # @0
        ("new_prog_fd", _u32),  # @4
        ("flags", _u32),  # @8
        ("old_prog_fd", _u32),  # @12
    ]


class _FdOnlyAttr(ctypes.Structure):
    # BPF_LINK_DETACH (link_fd @0) and BPF_ENABLE_STATS (type @0).
    _fields_ = [("value", _u32)]


class _Attr(ctypes.Union):
    _fields_ = [
        ("raw", ctypes.c_uint8 * _ATTR_SIZE),
        ("map_create", _MapCreateAttr),
        ("elem", _MapElemAttr),
        ("batch", _BatchAttr),
        ("prog_load", _ProgLoadAttr),
        ("obj", _ObjAttr),
        ("test", _TestRunAttr),
        ("get_id", _GetIdAttr),
        ("info", _InfoAttr),
        ("link_create", _LinkCreateAttr),
        ("link_update", _LinkUpdateAttr),
        ("single", _FdOnlyAttr),
    ]


class _MapInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32),  # @0
        ("id", _u32),  # @4
        ("key_size", _u32),  # @8
        ("value_size", _u32),  # @12
        ("max_entries", _u32),  # @16
        ("map_flags", _u32),  # @20
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),  # @24
        ("ifindex", _u32),  # @40
        ("_rest", ctypes.c_uint8 * 44),  # up to sizeof == 88
    ]


class _ProgInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32),  # @0
        ("id", _u32),  # @4
        ("tag", ctypes.c_uint8 * 8),  # @8
        ("jited_prog_len", _u32),  # @16
        ("xlated_prog_len", _u32),  # @20
        ("jited_prog_insns", _u64),  # @24
        ("xlated_prog_insns", _u64),  # @32
        ("load_time", _u64),  # @40, ns since boot
        ("created_by_uid", _u32),  # @48
        ("nr_map_ids", _u32),  # @52
        ("map_ids", _u64),  # @56
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),  # @64
        ("ifindex", _u32),  # @80
        ("_gpl_compatible", _u32),  # @84 (bit field)
        ("_mid", ctypes.c_uint8 * 104),  # netns_dev @88 .. prog_tags @184
        ("run_time_ns", _u64),  # @192, counted while BPF stats are enabled
        ("run_cnt", _u64),  # @200
        ("recursion_misses", _u64),  # @208
        ("verified_insns", _u32),  # @216
        ("_tail", ctypes.c_uint8 * 12),  # up to sizeof == 232
    ]


class _LinkInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32),  # @0
        ("id", _u32),  # @4
        ("prog_id", _u32),  # @8
        ("_pad", _u32),
        ("ifindex", _u32),  # @16: xdp.ifindex, tcx.ifindex
        ("attach_type", _u32),  # @20: tcx.attach_type
        ("_rest", ctypes.c_uint8 * 24),  # union is 32 bytes on 6.1
    ]


# --- plumbing --------------------------------------------------------------


def _sys_bpf(cmd: int, attr: _Attr) -> int:
    """Issue bpf(cmd, attr) and return the result, or -errno (never raises)."""
    ret = _syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(_ATTR_SIZE))
    if ret < 0:
        return -ctypes.get_errno()
    return int(ret)


def _bpf(cmd: int, attr: _Attr, op: str | None = None, *, fd_for_label: int | None = None) -> int:
    ret = _sys_bpf(cmd, attr)
    if ret < 0:
        raise BpfError(-ret, _label(op or _CMD_NAMES.get(cmd, f"bpf cmd {cmd}"), fd_for_label))
    return ret


def _label(op: str, map_fd: int | None) -> str:
    # Map names make errors actionable ("on in_src4"); look the name up only
    # on the failure path, where the extra syscall costs nothing that matters.
    if map_fd is None:
        return op
    attr = _Attr()
    info = _MapInfoStruct()
    attr.info.bpf_fd = map_fd
    attr.info.info_len = ctypes.sizeof(info)
    attr.info.info = ctypes.addressof(info)
    if _sys_bpf(BPF_OBJ_GET_INFO_BY_FD, attr) == 0 and info.name:
        return f"{op} on {info.name.decode(errors='replace')}"
    return f"{op} on map fd {map_fd}"


_CMD_NAMES = {
    BPF_MAP_CREATE: "BPF_MAP_CREATE",
    BPF_MAP_LOOKUP_ELEM: "BPF_MAP_LOOKUP_ELEM",
    BPF_MAP_UPDATE_ELEM: "BPF_MAP_UPDATE_ELEM",
    BPF_MAP_DELETE_ELEM: "BPF_MAP_DELETE_ELEM",
    BPF_MAP_GET_NEXT_KEY: "BPF_MAP_GET_NEXT_KEY",
    BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_OBJ_PIN: "BPF_OBJ_PIN",
    BPF_OBJ_GET: "BPF_OBJ_GET",
    BPF_PROG_TEST_RUN: "BPF_PROG_TEST_RUN",
    BPF_PROG_GET_FD_BY_ID: "BPF_PROG_GET_FD_BY_ID",
    BPF_MAP_GET_FD_BY_ID: "BPF_MAP_GET_FD_BY_ID",
    BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD",
    BPF_MAP_LOOKUP_BATCH: "BPF_MAP_LOOKUP_BATCH",
    BPF_MAP_UPDATE_BATCH: "BPF_MAP_UPDATE_BATCH",
    BPF_MAP_DELETE_BATCH: "BPF_MAP_DELETE_BATCH",
    BPF_LINK_CREATE: "BPF_LINK_CREATE",
    BPF_LINK_UPDATE: "BPF_LINK_UPDATE",
    BPF_LINK_GET_FD_BY_ID: "BPF_LINK_GET_FD_BY_ID",
    BPF_ENABLE_STATS: "BPF_ENABLE_STATS",
    BPF_LINK_DETACH: "BPF_LINK_DETACH",
}


def _buf(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data, len(data))


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _name(name: str) -> bytes:
    # The kernel accepts [A-Za-z0-9_.] and at most 15 characters plus NUL.
    encoded = name.encode()
    if len(encoded) >= BPF_OBJ_NAME_LEN:
        raise ValueError(f"BPF object name {name!r} is longer than {BPF_OBJ_NAME_LEN - 1} characters")
    return encoded


class Fd:
    """Owns a file descriptor and closes it on scope exit: `with Fd(map_create(...)) as fd:`."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError("file descriptor already closed")
        return self._fd

    def fileno(self) -> int:
        return self.fd

    def __int__(self) -> int:
        return self.fd

    def release(self) -> int:
        """Stop owning the descriptor and return it (the caller closes it)."""
        fd, self._fd = self._fd, -1
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fd({self._fd})"


# --- CPUs and per-CPU values -----------------------------------------------


@functools.cache
def ncpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) if hi else int(lo)) - int(lo) + 1
    return count


def percpu_value_size(value_size: int) -> int:
    """Bytes user space exchanges for one element of a per-CPU map."""
    return ncpus() * ((value_size + 7) // 8 * 8)


def split_percpu(value: bytes, value_size: int) -> list[bytes]:
    """Split a per-CPU value buffer into one value per CPU."""
    stride = (value_size + 7) // 8 * 8
    return [value[i * stride : i * stride + value_size] for i in range(len(value) // stride)]


def join_percpu(values: Sequence[bytes], value_size: int) -> bytes:
    """Build a per-CPU value buffer from one value per possible CPU."""
    stride = (value_size + 7) // 8 * 8
    if len(values) != ncpus():
        raise ValueError(f"need one value per possible CPU ({ncpus()}), got {len(values)}")
    return b"".join(v.ljust(stride, b"\0") for v in values)


# --- maps ------------------------------------------------------------------


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int = 0,
    name: str = "",
    inner_map_fd: int = 0,
) -> int:
    attr = _Attr()
    a = attr.map_create
    a.map_type = map_type
    a.key_size = key_size
    a.value_size = value_size
    a.max_entries = max_entries
    a.map_flags = flags
    a.inner_map_fd = inner_map_fd
    a.map_name = _name(name)
    return _bpf(BPF_MAP_CREATE, attr, f"BPF_MAP_CREATE {name or '(unnamed)'} type {map_type}")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Value stored under key, or None.  Per-CPU maps: pass percpu_value_size()."""
    kbuf, vbuf = _buf(key), ctypes.create_string_buffer(value_size)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = _addr(kbuf)
    attr.elem.value = _addr(vbuf)
    ret = _sys_bpf(BPF_MAP_LOOKUP_ELEM, attr)
    if ret == -errno.ENOENT:
        return None
    if ret < 0:
        raise BpfError(-ret, _label("BPF_MAP_LOOKUP_ELEM", fd))
    return vbuf.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf, vbuf = _buf(key), _buf(value)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = _addr(kbuf)
    attr.elem.value = _addr(vbuf)
    attr.elem.flags = flags
    _bpf(BPF_MAP_UPDATE_ELEM, attr, fd_for_label=fd)


def map_delete(fd: int, key: bytes) -> bool:
    """Delete key; False when it was not there."""
    kbuf = _buf(key)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = _addr(kbuf)
    ret = _sys_bpf(BPF_MAP_DELETE_ELEM, attr)
    if ret == -errno.ENOENT:
        return False
    if ret < 0:
        raise BpfError(-ret, _label("BPF_MAP_DELETE_ELEM", fd))
    return True


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """Key after `key` (the first key when None), or None at the end."""
    kbuf = _buf(key) if key is not None else None
    nbuf = ctypes.create_string_buffer(key_size)
    attr = _Attr()
    attr.elem.map_fd = fd
    attr.elem.key = _addr(kbuf)
    attr.elem.value = _addr(nbuf)
    ret = _sys_bpf(BPF_MAP_GET_NEXT_KEY, attr)
    if ret == -errno.ENOENT:
        return None
    if ret < 0:
        raise BpfError(-ret, _label("BPF_MAP_GET_NEXT_KEY", fd))
    return nbuf.raw


def map_iter_keys(fd: int, key_size: int) -> Iterator[bytes]:
    """Every key, one syscall each.  Hash maps restart from the first key if the
    current one is deleted concurrently, so a key may be seen twice."""
    key = map_get_next_key(fd, None, key_size)
    while key is not None:
        yield key
        key = map_get_next_key(fd, key, key_size)


# Batch operations.  Checked on kernel 6.18 by trying each command on each
# map type (test_bpf_syscalls.py keeps asserting the answers):
#   ARRAY, PERCPU_ARRAY, ARRAY_OF_MAPS: lookup + update; delete -> ENOTSUPP
#                                       (array elements cannot be deleted at all)
#   HASH, PERCPU_HASH, LRU_HASH,
#   HASH_OF_MAPS:                       lookup + update + delete
#   LPM_TRIE:                           lookup + update + delete (generic ops)
# Map-of-maps batches take inner map fds in and give inner map ids out.
# "Not supported" comes back as the kernel-internal ENOTSUPP (524), not
# EOPNOTSUPP, and leaves `count` as we passed it, so it cannot tell how much
# was done; kernels that predate a command answer EINVAL.  On any of the
# three the functions below redo the current chunk element by element.
_BATCH_FALLBACK = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)
_BATCH_CHUNK = 8192


def map_lookup_batch(
    fd: int, key_size: int, value_size: int, chunk: int = _BATCH_CHUNK
) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs.  Per-CPU maps: value_size = percpu_value_size(v)."""
    out: list[tuple[bytes, bytes]] = []
    token_size = max(key_size, 8)  # hash maps use a u32 bucket cursor, others a key
    in_tok = ctypes.create_string_buffer(token_size)
    out_tok = ctypes.create_string_buffer(token_size)
    first = True
    while True:
        keys = ctypes.create_string_buffer(chunk * key_size)
        values = ctypes.create_string_buffer(chunk * value_size)
        attr = _Attr()
        b = attr.batch
        b.in_batch = 0 if first else _addr(in_tok)
        b.out_batch = _addr(out_tok)
        b.keys = _addr(keys)
        b.values = _addr(values)
        b.count = chunk
        b.map_fd = fd
        ret = _sys_bpf(BPF_MAP_LOOKUP_BATCH, attr)
        count = b.count
        if ret < 0 and -ret == errno.ENOSPC and count == 0:
            # A hash bucket holds more elements than `chunk`: retry larger.
            chunk *= 2
            continue
        if ret < 0 and -ret != errno.ENOENT:
            if first and -ret in _BATCH_FALLBACK:
                return _lookup_each(fd, key_size, value_size)
            raise BpfError(-ret, _label("BPF_MAP_LOOKUP_BATCH", fd))
        kraw, vraw = keys.raw, values.raw
        for i in range(count):
            out.append((kraw[i * key_size : (i + 1) * key_size], vraw[i * value_size : (i + 1) * value_size]))
        if ret < 0 or count == 0:  # ENOENT: no more elements after these
            return out
        ctypes.memmove(in_tok, out_tok, token_size)
        first = False


def _lookup_each(fd: int, key_size: int, value_size: int) -> list[tuple[bytes, bytes]]:
    out = []
    for key in map_iter_keys(fd, key_size):
        value = map_lookup(fd, key, value_size)
        if value is not None:
            out.append((key, value))
    return out


def map_update_batch(
    fd: int,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    flags: int = BPF_ANY,
    chunk: int = _BATCH_CHUNK,
) -> int:
    """Write keys[i] -> values[i]; returns how many were written (all, or it raises)."""
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    done = 0
    while done < len(keys):
        part_k = keys[done : done + chunk]
        part_v = values[done : done + chunk]
        kbuf = _buf(b"".join(part_k))
        vbuf = _buf(b"".join(part_v))
        attr = _Attr()
        b = attr.batch
        b.keys = _addr(kbuf)
        b.values = _addr(vbuf)
        b.count = len(part_k)
        b.map_fd = fd
        b.elem_flags = flags
        ret = _sys_bpf(BPF_MAP_UPDATE_BATCH, attr)
        if ret < 0:
            if -ret in _BATCH_FALLBACK:
                # Per element from the start of this chunk: rewriting what the
                # batch may already have written is harmless.
                for k, v in zip(keys[done:], values[done:], strict=True):
                    map_update(fd, k, v, flags)
                return len(keys)
            raise BpfError(-ret, _label(f"BPF_MAP_UPDATE_BATCH (after {done + b.count} of {len(keys)})", fd))
        done += len(part_k)
    return done


def map_delete_batch(fd: int, keys: Sequence[bytes], chunk: int = _BATCH_CHUNK) -> int:
    """Delete keys; missing keys are skipped.  Returns how many were deleted."""
    deleted = 0
    pos = 0
    while pos < len(keys):
        part = keys[pos : pos + chunk]
        kbuf = _buf(b"".join(part))
        attr = _Attr()
        b = attr.batch
        b.keys = _addr(kbuf)
        b.count = len(part)
        b.map_fd = fd
        ret = _sys_bpf(BPF_MAP_DELETE_BATCH, attr)
        if ret == 0:
            deleted += len(part)
            pos += len(part)
        elif -ret == errno.ENOENT:
            # The key at index `count` was missing; the ones before it are gone.
            deleted += b.count
            pos += b.count + 1
        elif -ret in _BATCH_FALLBACK:
            return deleted + sum(map_delete(fd, k) for k in keys[pos:])
        else:
            raise BpfError(-ret, _label(f"BPF_MAP_DELETE_BATCH (after {deleted} of {len(keys)})", fd))
    return deleted


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str


def _get_info(fd: int, info: ctypes.Structure, what: str) -> None:
    attr = _Attr()
    attr.info.bpf_fd = fd
    attr.info.info_len = ctypes.sizeof(info)
    attr.info.info = ctypes.addressof(info)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, f"BPF_OBJ_GET_INFO_BY_FD on {what} fd {fd}")


def map_info(fd: int) -> MapInfo:
    info = _MapInfoStruct()
    _get_info(fd, info, "map")
    return MapInfo(
        type=info.type,
        id=info.id,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
        name=info.name.decode(errors="replace"),
    )


def _get_fd_by_id(cmd: int, obj_id: int, what: str, open_flags: int = 0) -> int:
    attr = _Attr()
    attr.get_id.id = obj_id
    attr.get_id.open_flags = open_flags
    return _bpf(cmd, attr, f"{_CMD_NAMES[cmd]} for {what} id {obj_id}")


def map_get_fd_by_id(map_id: int, flags: int = 0) -> int:
    return _get_fd_by_id(BPF_MAP_GET_FD_BY_ID, map_id, "map", flags)


def prog_get_fd_by_id(prog_id: int) -> int:
    return _get_fd_by_id(BPF_PROG_GET_FD_BY_ID, prog_id, "program")


def link_get_fd_by_id(link_id: int) -> int:
    return _get_fd_by_id(BPF_LINK_GET_FD_BY_ID, link_id, "link")


# --- pinning ---------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    attr = _Attr()
    attr.obj.pathname = _addr(pbuf)
    attr.obj.bpf_fd = fd
    _bpf(BPF_OBJ_PIN, attr, f"BPF_OBJ_PIN at {path}")


def obj_get(path: str, flags: int = 0) -> int:
    """Open a pinned map, program or link; flags BPF_F_RDONLY / BPF_F_WRONLY."""
    pbuf = ctypes.create_string_buffer(os.fsencode(path))
    attr = _Attr()
    attr.obj.pathname = _addr(pbuf)
    attr.obj.file_flags = flags
    return _bpf(BPF_OBJ_GET, attr, f"BPF_OBJ_GET at {path}")


# --- programs --------------------------------------------------------------


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str = "GPL",
    expected_attach_type: int = 0,
    name: str = "",
) -> int:
    """Load raw instructions (8 bytes each).  On rejection the error carries
    the verifier log, fetched by loading a second time with logging on."""
    if len(insns) % 8:
        raise ValueError("BPF instructions are 8 bytes each")
    ibuf = _buf(insns)
    lbuf = ctypes.create_string_buffer(license.encode())

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _Attr()
        a = attr.prog_load
        a.prog_type = prog_type
        a.insn_cnt = len(insns) // 8
        a.insns = _addr(ibuf)
        a.license = _addr(lbuf)
        a.expected_attach_type = expected_attach_type
        a.prog_name = _name(name)
        if log is not None:
            a.log_level = 1
            a.log_size = len(log)
            a.log_buf = _addr(log)
        return _sys_bpf(BPF_PROG_LOAD, attr)

    op = f"BPF_PROG_LOAD {name or '(unnamed)'}"
    ret = attempt(None)
    if ret >= 0:
        return ret
    log = ctypes.create_string_buffer(1 << 20)
    retry = attempt(log)
    if retry >= 0:  # passed with logging on: keep it, the program is fine
        return retry
    raise BpfError(-ret, op, log.value.decode(errors="replace"))


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    tag: str  # hex, as bpftool prints it
    name: str
    load_time_ns: int  # CLOCK_BOOTTIME at load
    loaded_at: float  # the same moment as a Unix time
    run_time_ns: int  # these two only grow while BPF stats are enabled
    run_cnt: int


def prog_info(fd: int) -> ProgInfo:
    info = _ProgInfoStruct()
    _get_info(fd, info, "program")
    since_load = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - info.load_time
    return ProgInfo(
        type=info.type,
        id=info.id,
        tag=bytes(info.tag).hex(),
        name=info.name.decode(errors="replace"),
        load_time_ns=info.load_time,
        loaded_at=time.time() - since_load / 1e9,
        run_time_ns=info.run_time_ns,
        run_cnt=info.run_cnt,
    )


@dataclass(frozen=True)
class TestRunResult:
    __test__ = False  # not a pytest class, despite the name

    retval: int
    duration_ns: int  # average per repetition
    data_out: bytes
    ctx_out: bytes | None = None


def prog_test_run(
    prog_fd: int,
    data: bytes,
    repeat: int = 1,
    ctx: bytes | None = None,
    data_out_size: int | None = None,
    flags: int = 0,
    batch_size: int = 0,
    cpu: int = 0,
) -> TestRunResult:
    """Run a program on `data` in the kernel (BPF_PROG_TEST_RUN).

    data_out_size defaults to room for the frame plus XDP headroom growth;
    live-frame runs (BPF_F_TEST_XDP_LIVE_FRAMES) must pass no output buffers,
    so they get none.
    """
    live = bool(flags & BPF_F_TEST_XDP_LIVE_FRAMES)
    if data_out_size is None:
        data_out_size = 0 if live else len(data) + 512
    din = _buf(data)
    dout = ctypes.create_string_buffer(data_out_size) if data_out_size else None
    cin = _buf(ctx) if ctx is not None else None
    cout = ctypes.create_string_buffer(len(ctx)) if ctx is not None and not live else None
    attr = _Attr()
    t = attr.test
    t.prog_fd = prog_fd
    t.data_size_in = len(data)
    t.data_in = _addr(din)
    t.data_size_out = data_out_size
    t.data_out = _addr(dout)
    t.repeat = repeat
    if ctx is not None:
        t.ctx_size_in = len(ctx)
        t.ctx_in = _addr(cin)
        if cout is not None:
            t.ctx_size_out = len(ctx)
            t.ctx_out = _addr(cout)
    t.flags = flags
    t.cpu = cpu
    t.batch_size = batch_size
    _bpf(BPF_PROG_TEST_RUN, attr, f"BPF_PROG_TEST_RUN on program fd {prog_fd}")
    out = dout.raw[: t.data_size_out] if dout is not None else b""
    return TestRunResult(
        retval=t.retval,
        duration_ns=t.duration,
        data_out=out,
        ctx_out=cout.raw[: t.ctx_size_out] if cout is not None else None,
    )


def enable_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting while the returned fd stays open
    (like sysctl kernel.bpf_stats_enabled=1, but undone when the fd closes)."""
    attr = _Attr()
    attr.single.value = BPF_STATS_RUN_TIME
    return _bpf(BPF_ENABLE_STATS, attr, "BPF_ENABLE_STATS")


# --- links -----------------------------------------------------------------


def link_create(
    prog_fd: int,
    target_ifindex: int,
    attach_type: int,
    flags: int = 0,
    relative_fd: int = 0,
    expected_revision: int = 0,
) -> int:
    """Attach through a bpf_link: BPF_XDP (flags are XDP_FLAGS_*, 0 = native)
    or BPF_TCX_INGRESS/EGRESS (flags are BPF_F_BEFORE/AFTER...)."""
    attr = _Attr()
    a = attr.link_create
    a.prog_fd = prog_fd
    a.target_ifindex = target_ifindex
    a.attach_type = attach_type
    a.flags = flags
    a.relative_fd = relative_fd
    a.expected_revision = expected_revision
    return _bpf(
        BPF_LINK_CREATE, attr, f"BPF_LINK_CREATE (attach type {attach_type}) on ifindex {target_ifindex}"
    )


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0, flags: int = 0) -> None:
    """Swap the program behind a link atomically.  With old_prog_fd, pass
    flags=BPF_F_REPLACE: the kernel then refuses (EPERM) if another program
    replaced ours in the meantime."""
    attr = _Attr()
    a = attr.link_update
    a.link_fd = link_fd
    a.new_prog_fd = new_prog_fd
    a.flags = flags
    a.old_prog_fd = old_prog_fd
    _bpf(BPF_LINK_UPDATE, attr, f"BPF_LINK_UPDATE on link fd {link_fd}")


def link_detach(link_fd: int) -> None:
    """Detach now, even while pins or other fds still hold the link."""
    attr = _Attr()
    attr.single.value = link_fd
    _bpf(BPF_LINK_DETACH, attr, f"BPF_LINK_DETACH on link fd {link_fd}")


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    ifindex: int  # 0 once the link is detached, or for non-netdev links
    attach_type: int


def link_info(fd: int) -> LinkInfo:
    info = _LinkInfoStruct()
    _get_info(fd, info, "link")
    if info.type == BPF_LINK_TYPE_XDP:
        attach_type = BPF_XDP
    elif info.type == BPF_LINK_TYPE_TCX:
        attach_type = info.attach_type
    else:
        attach_type = 0
    ifindex = info.ifindex if info.type in (BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX) else 0
    return LinkInfo(
        type=info.type, id=info.id, prog_id=info.prog_id, ifindex=ifindex, attach_type=attach_type
    )


# --- RCU -------------------------------------------------------------------


def rcu_barrier() -> None:
    """Wait for an RCU grace period.

    XDP and tc programs run inside RCU read-side sections (softirq with
    bottom halves off), and since kernel 4.20 one grace period covers all
    of them.  After a flip of the version flag, returning from here means no
    program invocation that could have read the old flag is still running,
    so the half we switched away from may be rewritten.  membarrier
    GLOBAL is the one plain syscall that performs synchronize_rcu() (it skips
    it with a single online CPU, where no reader can be mid-flight while we
    run).  It answers EINVAL on nohz_full systems; then sleep well past a
    grace period instead (they take ~8 ms here).
    """
    ret = _syscall(
        ctypes.c_long(_NR_MEMBARRIER), ctypes.c_int(MEMBARRIER_CMD_GLOBAL), ctypes.c_uint(0), ctypes.c_int(0)
    )
    if ret < 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, f"membarrier(MEMBARRIER_CMD_GLOBAL): {os.strerror(err)}")
        time.sleep(0.02)


# --- what a loaded program uses (added for the protection check) ------------


def prog_map_ids(fd: int) -> list[int]:
    """Ids of the maps a loaded program uses (bpf_prog_info.map_ids).

    These are the maps it really reads and writes, whatever is pinned under
    their names now; inner maps reached through a map-in-map are not listed.
    """
    info = _ProgInfoStruct()
    _get_info(fd, info, "program")
    count = info.nr_map_ids
    if not count:
        return []
    ids = (ctypes.c_uint32 * count)()
    again = _ProgInfoStruct()
    again.nr_map_ids = count
    again.map_ids = ctypes.addressof(ids)
    _get_info(fd, again, "program")
    return list(ids[: min(count, again.nr_map_ids)])
