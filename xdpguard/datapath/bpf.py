"""Typed calls for the bpf(2) commands xdpguard issues, made through libbpf.

bcc 0.26 compiles and loads our programs, but has no batch map operations,
no bpf_link create/update/detach, no object-info queries and no
BPF_PROG_TEST_RUN with contexts.  Debian's libbpf.so.1 (package libbpf1,
1.1.2 on Debian 12) has them all as C functions taking plain arguments and
small option structs, so this module calls them through ctypes: paths that
only touch maps and links never import bcc (and LLVM, ~70 MB), and the
bpf(2) attribute layouts stay libbpf's business.

What is ours: every failure raises `BpfError`, which names the command and
its object and turns the errno into a sentence an operator can act on;
batch operations fall back to single elements on map types the kernel does
not batch; per-CPU value helpers; a one-time tcx probe; and membarrier(2),
which neither libbpf nor Python wraps.  File descriptors are plain ints;
`Fd` closes one on scope exit.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import platform
import re
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# --- constants (include/uapi/linux/bpf.h, linux/if_link.h) -----------------

BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY = 1, 2
BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY = 5, 6
BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_LPM_TRIE = 9, 10, 11
BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS = 12, 13
BPF_MAP_TYPE_RINGBUF = 27
PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)

BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 3, 6
BPF_XDP, BPF_TCX_INGRESS, BPF_TCX_EGRESS = 37, 46, 47  # attach types
BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX = 6, 11  # bpf_link_info.type
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 2, 4  # XDP link flags (0 = native)
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)

# map_create / obj_get flags; element update flags; link_update flags; tcx
# link_create flags (where to insert relative to another program)
BPF_F_NO_PREALLOC, BPF_F_RDONLY, BPF_F_WRONLY, BPF_F_INNER_MAP = 1, 1 << 3, 1 << 4, 0x1000
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_REPLACE = 4
BPF_F_BEFORE, BPF_F_AFTER, BPF_F_ID = 1 << 3, 1 << 4, 1 << 5
BPF_OBJ_NAME_LEN = 16

# The kernel-internal "not supported" code some commands leak to user space
# (batch ops on map types without them); it has no name in Python's errno.
ENOTSUPP = 524

# membarrier(2) has no wrapper in libc, libbpf or Python.  Its number is
# listed for the architectures whose tables were checked (aarch64 and
# riscv64 share the generic table); elsewhere rcu_barrier() sleeps instead.
MEMBARRIER_CMD_GLOBAL = 1
_NR_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "riscv64": 283}.get(platform.machine())
_syscall = ctypes.CDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


# --- errors ----------------------------------------------------------------


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


# --- libbpf ----------------------------------------------------------------

_int, _u32, _u64, _size, _ptr, _str = (
    ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
)  # fmt: skip
_pu32 = ctypes.POINTER(_u32)

# The libbpf 1.1 functions used here, as <bpf/bpf.h> declares them.  Each
# returns a negative errno on failure (libbpf 1.0 semantics).
_PROTOTYPES: dict[str, list[Any]] = {
    "bpf_map_create": [_int, _str, _u32, _u32, _u32, _ptr],
    "bpf_map_lookup_elem": [_int, _ptr, _ptr],
    "bpf_map_update_elem": [_int, _ptr, _ptr, _u64],
    "bpf_map_delete_elem": [_int, _ptr],
    "bpf_map_get_next_key": [_int, _ptr, _ptr],
    "bpf_map_lookup_batch": [_int, _ptr, _ptr, _ptr, _ptr, _pu32, _ptr],
    "bpf_map_update_batch": [_int, _ptr, _ptr, _pu32, _ptr],
    "bpf_map_delete_batch": [_int, _ptr, _pu32, _ptr],
    "bpf_obj_pin": [_int, _str],
    "bpf_obj_get_opts": [_str, _ptr],
    "bpf_obj_get_info_by_fd": [_int, _ptr, _pu32],
    "bpf_map_get_fd_by_id_opts": [_u32, _ptr],
    "bpf_prog_get_fd_by_id": [_u32],
    "bpf_link_get_fd_by_id": [_u32],
    "bpf_prog_load": [_int, _str, _str, _ptr, _size, _ptr],
    "bpf_prog_test_run_opts": [_int, _ptr],
    "bpf_enable_stats": [_int],
    "bpf_link_create": [_int, _int, _int, _ptr],
    "bpf_link_update": [_int, _int, _ptr],
    "bpf_link_detach": [_int],
    "libbpf_num_possible_cpus": [],
}


@functools.cache
def libbpf() -> ctypes.CDLL:
    """The process's handle on libbpf.so.1, with the prototypes above declared."""
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise BpfError(errno.ELIBACC, f"load libbpf.so.1 ({e})") from e
    for name, argtypes in _PROTOTYPES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = _int
    return lib


def _call(name: str, *args: Any, op: str, fd: int | None = None, missing: bool = False) -> int | None:
    """libbpf's `name`(*args); a failure raises BpfError labelled `op` (plus
    the map's name when `fd` is a map).  With `missing`, ENOENT returns None."""
    ret = int(getattr(libbpf(), name)(*args))
    if ret == -errno.ENOENT and missing:
        return None
    if ret < 0:
        raise BpfError(-ret, _label(op, fd))
    return ret


def _fd(name: str, *args: Any, op: str) -> int:
    fd = _call(name, *args, op=op)
    assert fd is not None  # only calls with missing=True answer None
    return fd


def _label(op: str, map_fd: int | None) -> str:
    # Map names make errors actionable ("on in_src4"); look the name up only
    # on the failure path, where the extra call costs nothing that matters.
    if map_fd is None:
        return op
    try:
        return f"{op} on {map_info(map_fd).name or f'map fd {map_fd}'}"
    except BpfError:
        return f"{op} on map fd {map_fd}"


class _Opts(ctypes.Structure):
    """libbpf's option structs start with their own size, so a caller may
    declare a prefix: libbpf reads the fields that fit in `sz` and takes
    zero for the rest.  Each one below stops at the last field we set, and
    fields named `_...` stay zero (offsets checked against <bpf/bpf.h> by
    tests/unit/test_bpf_syscalls.py)."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(sz=ctypes.sizeof(self), **fields)


class _MapCreateOpts(_Opts):
    _fields_ = [("sz", _size), ("_btf", _u32 * 4), ("inner_map_fd", _u32), ("map_flags", _u32)]


class _BatchOpts(_Opts):
    _fields_ = [("sz", _size), ("elem_flags", _u64), ("flags", _u64)]


class _FlagsOpts(_Opts):
    # bpf_obj_get_opts.file_flags, bpf_get_fd_by_id_opts.open_flags and
    # bpf_link_create_opts.flags: all three a u32 right after the size.
    _fields_ = [("sz", _size), ("flags", _u32)]


class _LinkUpdateOpts(_Opts):
    _fields_ = [("sz", _size), ("flags", _u32), ("old_prog_fd", _u32)]


class _ProgLoadOpts(_Opts):
    _fields_ = [
        ("sz", _size), ("attempts", _int), ("expected_attach_type", _u32), ("prog_btf_fd", _u32),
        ("_prog_flags_to_attach_btf_obj_fd", _u32 * 6), ("_fd_array", _ptr), ("func_info", _ptr),
        ("func_info_cnt", _u32), ("func_info_rec_size", _u32), ("_line_info", ctypes.c_uint8 * 16),
        ("log_level", _u32), ("log_size", _u32), ("log_buf", _ptr),
    ]  # fmt: skip


class _TestRunOpts(_Opts):
    _fields_ = [
        ("sz", _size), ("data_in", _ptr), ("data_out", _ptr), ("data_size_in", _u32), ("data_size_out", _u32),
        ("ctx_in", _ptr), ("ctx_out", _ptr), ("ctx_size_in", _u32), ("ctx_size_out", _u32),
        ("retval", _u32), ("repeat", _int), ("duration", _u32),
    ]  # fmt: skip


# The kernel's info structs, which libbpf 1.1 passes through as they are.
# The kernel fills as much as the caller's size asks for, so each stops at
# the last field we read.


class _MapInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32),
        ("map_flags", _u32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]  # fmt: skip


class _ProgInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("tag", ctypes.c_uint8 * 8), ("_lens_insns", ctypes.c_uint8 * 24),
        ("load_time", _u64), ("created_by_uid", _u32), ("nr_map_ids", _u32), ("map_ids", _u64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("_ifindex_to_prog_tags", ctypes.c_uint8 * 112), ("run_time_ns", _u64), ("run_cnt", _u64),
        ("recursion_misses", _u64), ("verified_insns", _u32),
    ]  # fmt: skip


class _LinkInfoStruct(ctypes.Structure):
    # ifindex is xdp.ifindex and tcx.ifindex; attach_type is tcx's (newer
    # than Debian's 6.1 header, so checked by the tcx test instead).
    _fields_ = [
        ("type", _u32), ("id", _u32), ("prog_id", _u32), ("_pad", _u32),
        ("ifindex", _u32), ("attach_type", _u32),
    ]  # fmt: skip


def _get_info(fd: int, info: ctypes.Structure, what: str) -> None:
    size = _u32(ctypes.sizeof(info))
    op = f"BPF_OBJ_GET_INFO_BY_FD on {what} fd {fd}"
    _call("bpf_obj_get_info_by_fd", fd, ctypes.byref(info), ctypes.byref(size), op=op)


def _buf(data: bytes | None) -> ctypes.Array[ctypes.c_char] | None:
    return None if data is None else ctypes.create_string_buffer(data, len(data))


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int | None:
    return ctypes.addressof(buf) if buf is not None else None


def _name(name: str) -> bytes | None:
    # The kernel takes at most 15 characters plus NUL; libbpf would cut a
    # longer name silently.
    if len(name.encode()) >= BPF_OBJ_NAME_LEN:
        raise ValueError(f"BPF object name {name!r} is longer than {BPF_OBJ_NAME_LEN - 1} characters")
    return name.encode() or None


class Fd:
    """Owns a file descriptor and closes it on scope exit: `with Fd(map_create(...)) as fd:`."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __int__(self) -> int:
        if self._fd < 0:
            raise ValueError("file descriptor already closed")
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> int:
        return int(self)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fd({self._fd})"


# --- CPUs and per-CPU values -----------------------------------------------


@functools.cache
def ncpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    return _fd("libbpf_num_possible_cpus", op="count the possible CPUs")


def _stride(value_size: int) -> int:
    return (value_size + 7) // 8 * 8  # each CPU's copy is padded to 8 bytes


def percpu_value_size(value_size: int) -> int:
    """Bytes user space exchanges for one element of a per-CPU map."""
    return ncpus() * _stride(value_size)


def split_percpu(value: bytes, value_size: int) -> list[bytes]:
    """Split a per-CPU value buffer into one value per CPU."""
    stride = _stride(value_size)
    return [value[i * stride : i * stride + value_size] for i in range(len(value) // stride)]


def join_percpu(values: Sequence[bytes], value_size: int) -> bytes:
    """Build a per-CPU value buffer from one value per possible CPU."""
    if len(values) != ncpus():
        raise ValueError(f"need one value per possible CPU ({ncpus()}), got {len(values)}")
    return b"".join(v.ljust(_stride(value_size), b"\0") for v in values)


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
    opts = _MapCreateOpts(inner_map_fd=inner_map_fd, map_flags=flags)
    op = f"BPF_MAP_CREATE {name or '(unnamed)'} type {map_type}"
    args = (map_type, _name(name), key_size, value_size, max_entries, ctypes.byref(opts))
    return _fd("bpf_map_create", *args, op=op)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Value stored under key, or None.  Per-CPU maps: pass percpu_value_size()."""
    value = ctypes.create_string_buffer(value_size)
    found = _call("bpf_map_lookup_elem", fd, key, value, op="BPF_MAP_LOOKUP_ELEM", fd=fd, missing=True)
    return None if found is None else value.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _call("bpf_map_update_elem", fd, key, value, flags, op="BPF_MAP_UPDATE_ELEM", fd=fd)


def map_delete(fd: int, key: bytes) -> bool:
    """Delete key; False when it was not there."""
    return _call("bpf_map_delete_elem", fd, key, op="BPF_MAP_DELETE_ELEM", fd=fd, missing=True) is not None


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """Key after `key` (the first key when None), or None at the end."""
    nxt = ctypes.create_string_buffer(key_size)
    found = _call("bpf_map_get_next_key", fd, key, nxt, op="BPF_MAP_GET_NEXT_KEY", fd=fd, missing=True)
    return None if found is None else nxt.raw


def map_iter_keys(fd: int, key_size: int, after: bytes | None = None) -> Iterator[bytes]:
    """Every key (after `after`), one syscall each.  Hash maps restart from the
    first key if the current one is deleted concurrently, so a key may be seen twice."""
    key = map_get_next_key(fd, after, key_size)
    while key is not None:
        yield key
        key = map_get_next_key(fd, key, key_size)


# Batch operations.  The kernel (6.18, tried on each map type) batches
# lookup and update on arrays (whose slots cannot be deleted) and all three
# on hash, LRU hash and LPM trie maps; map-of-maps batches take inner map
# fds in and give inner map ids out.  A command a type lacks answers the
# kernel's ENOTSUPP (524) and leaves `count` as passed, so it cannot say how
# much was done; kernels that predate a command answer EINVAL.  On any of
# the three the functions below redo the current chunk element by element.
_BATCH_FALLBACK = (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP)
_BATCH_CHUNK = 8192


def map_lookup_batch(
    fd: int,
    key_size: int,
    value_size: int,
    chunk: int = _BATCH_CHUNK,
    after: bytes | None = None,
    limit: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs in the map's order: all of them, or at most `limit`.
    Per-CPU maps: value_size = percpu_value_size(v).  `after` starts after
    that key, in maps whose batch cursor is a key (arrays, LPM tries; a hash
    map's is a bucket number)."""
    out: list[tuple[bytes, bytes]] = []
    token_size = max(key_size, 8)  # room for a key, or a hash map's u32 bucket number
    in_tok = ctypes.create_string_buffer(after or b"", token_size)
    out_tok = ctypes.create_string_buffer(token_size)
    cursor = in_tok if after is not None else None
    opts = ctypes.byref(_BatchOpts())
    while limit is None or len(out) < limit:
        n = _u32(chunk if limit is None else min(chunk, limit - len(out)))
        keys = ctypes.create_string_buffer(n.value * key_size)
        values = ctypes.create_string_buffer(n.value * value_size)
        ret = libbpf().bpf_map_lookup_batch(fd, cursor, out_tok, keys, values, ctypes.byref(n), opts)
        if ret == -errno.ENOSPC and n.value == 0 and limit is None:
            chunk *= 2  # a hash bucket holds more elements than `chunk`: retry larger
            continue
        if ret < 0 and ret != -errno.ENOENT:
            if not out and -ret in _BATCH_FALLBACK:
                keys_left = itertools.islice(map_iter_keys(fd, key_size, after), limit)
                return [(k, v) for k in keys_left if (v := map_lookup(fd, k, value_size)) is not None]
            raise BpfError(-ret, _label("BPF_MAP_LOOKUP_BATCH", fd))
        kraw, vraw = keys.raw, values.raw
        out += [(kraw[i * key_size : (i + 1) * key_size], vraw[i * value_size : (i + 1) * value_size])
                for i in range(n.value)]  # fmt: skip
        if ret < 0 or n.value == 0:  # ENOENT: no more elements after these
            break
        ctypes.memmove(in_tok, out_tok, token_size)
        cursor = in_tok
    return out


def map_lookup_range(fd: int, start: int, count: int, value_size: int) -> list[bytes]:
    """Values of array elements start .. start + count - 1, in a few batch calls."""
    after = struct.pack("=I", start - 1) if start else None
    pairs = map_lookup_batch(fd, 4, value_size, after=after, limit=count)
    if len(pairs) < count:
        raise BpfError(errno.ERANGE, _label(f"BPF_MAP_LOOKUP_BATCH of {count} from {start}", fd))
    return [v for _, v in pairs]


def map_update_batch_partial(
    fd: int, keys: Sequence[bytes], values: Sequence[bytes], flags: int = BPF_ANY, chunk: int = _BATCH_CHUNK
) -> tuple[int, int]:
    """Write keys[i] -> values[i] in order until the kernel refuses one.

    Returns (how many were written, the errno of the refused one or 0).
    With BPF_NOEXIST an existing key stops the batch with EEXIST, and a full
    map with E2BIG, so the caller learns exactly where, and can go on after it.
    """
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    opts = ctypes.byref(_BatchOpts(elem_flags=flags))
    done = 0
    while done < len(keys):
        part_k, part_v = keys[done : done + chunk], values[done : done + chunk]
        n = _u32(len(part_k))
        ret = libbpf().bpf_map_update_batch(fd, b"".join(part_k), b"".join(part_v), ctypes.byref(n), opts)
        if -ret in _BATCH_FALLBACK:
            # Per element from the start of this chunk: rewriting what the
            # batch may already have written is harmless.
            for k, v in zip(keys[done:], values[done:], strict=True):
                try:
                    map_update(fd, k, v, flags)
                except BpfError as e:
                    return done, e.errno or errno.EIO
                done += 1
            return done, 0
        if ret < 0:
            return done + n.value, -ret
        done += len(part_k)
    return done, 0


def map_update_batch(
    fd: int, keys: Sequence[bytes], values: Sequence[bytes], flags: int = BPF_ANY, chunk: int = _BATCH_CHUNK
) -> int:
    """Write keys[i] -> values[i]; returns how many were written (all, or it raises)."""
    done, err = map_update_batch_partial(fd, keys, values, flags, chunk)
    if err:
        raise BpfError(err, _label(f"BPF_MAP_UPDATE_BATCH (after {done} of {len(keys)})", fd))
    return done


def map_delete_batch(fd: int, keys: Sequence[bytes], chunk: int = _BATCH_CHUNK) -> int:
    """Delete keys; missing keys are skipped.  Returns how many were deleted."""
    opts = ctypes.byref(_BatchOpts())
    deleted = pos = 0
    while pos < len(keys):
        part = keys[pos : pos + chunk]
        n = _u32(len(part))
        ret = libbpf().bpf_map_delete_batch(fd, b"".join(part), ctypes.byref(n), opts)
        if ret == 0 or ret == -errno.ENOENT:
            # On ENOENT the key at index n was missing; the ones before it are gone.
            deleted += n.value
            pos += n.value + (ret != 0)
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


def map_info(fd: int) -> MapInfo:
    i = _MapInfoStruct()
    _get_info(fd, i, "map")
    name = i.name.decode(errors="replace")
    return MapInfo(i.type, i.id, i.key_size, i.value_size, i.max_entries, i.map_flags, name)


# --- objects by id and by pin ----------------------------------------------


def map_get_fd_by_id(map_id: int, flags: int = 0) -> int:
    opts = ctypes.byref(_FlagsOpts(flags=flags))
    return _fd("bpf_map_get_fd_by_id_opts", map_id, opts, op=f"BPF_MAP_GET_FD_BY_ID for map id {map_id}")


def prog_get_fd_by_id(prog_id: int) -> int:
    return _fd("bpf_prog_get_fd_by_id", prog_id, op=f"BPF_PROG_GET_FD_BY_ID for program id {prog_id}")


def link_get_fd_by_id(link_id: int) -> int:
    return _fd("bpf_link_get_fd_by_id", link_id, op=f"BPF_LINK_GET_FD_BY_ID for link id {link_id}")


def obj_pin(fd: int, path: str) -> None:
    _call("bpf_obj_pin", fd, os.fsencode(path), op=f"BPF_OBJ_PIN at {path}")


def obj_get(path: str, flags: int = 0) -> int:
    """Open a pinned map, program or link; flags BPF_F_RDONLY / BPF_F_WRONLY."""
    opts = ctypes.byref(_FlagsOpts(flags=flags))
    return _fd("bpf_obj_get_opts", os.fsencode(path), opts, op=f"BPF_OBJ_GET at {path}")


# --- programs --------------------------------------------------------------


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str = "GPL",
    expected_attach_type: int = 0,
    name: str = "",
    btf_fd: int = 0,
    func_info: Sequence[tuple[int, int]] = (),
) -> int:
    """Load raw instructions (8 bytes each).  `func_info` gives each function's
    first instruction and its FUNC type in the BTF object `btf_fd` (datapath/btf.py).

    A rejection raises with the verifier log.  The log is asked for only on
    a second attempt, and the first attempt's errno is kept: a log that
    overflows the buffer would turn the verifier's EACCES into ENOSPC.
    """
    if len(insns) % 8:
        raise ValueError("BPF instructions are 8 bytes each")
    info = (_u32 * (2 * len(func_info)))(*itertools.chain.from_iterable(func_info))

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> int:
        opts = _ProgLoadOpts(
            expected_attach_type=expected_attach_type, prog_btf_fd=btf_fd,
            func_info=ctypes.addressof(info) if func_info else None, func_info_cnt=len(func_info),
            func_info_rec_size=8 if func_info else 0,
            log_level=1 if log else 0, log_size=len(log or b""), log_buf=_addr(log),
        )  # fmt: skip
        args = (prog_type, _name(name), license.encode(), insns, len(insns) // 8, ctypes.byref(opts))
        return int(libbpf().bpf_prog_load(*args))

    fd = attempt(None)
    if fd >= 0:
        return fd
    log = ctypes.create_string_buffer(1 << 22)
    again = attempt(log)
    if again >= 0:  # passed with logging on: keep it, the program is fine
        return again
    raise BpfError(-fd, f"BPF_PROG_LOAD {name or '(unnamed)'}", log.value.decode(errors="replace"))


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
    verified_insns: int = 0  # instructions the verifier processed to accept it


def prog_info(fd: int) -> ProgInfo:
    i = _ProgInfoStruct()
    _get_info(fd, i, "program")
    since_load = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - i.load_time
    name, loaded_at = i.name.decode(errors="replace"), time.time() - since_load / 1e9
    tag = bytes(i.tag).hex()
    return ProgInfo(
        i.type, i.id, tag, name, i.load_time, loaded_at, i.run_time_ns, i.run_cnt, i.verified_insns
    )


def prog_map_ids(fd: int) -> list[int]:
    """Ids of the maps a loaded program uses (bpf_prog_info.map_ids).

    These are the maps it really reads and writes, whatever is pinned under
    their names now; inner maps reached through a map-in-map are not listed.
    """
    info = _ProgInfoStruct()
    _get_info(fd, info, "program")
    ids = (_u32 * info.nr_map_ids)()
    again = _ProgInfoStruct(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
    if ids:
        _get_info(fd, again, "program")
    return list(ids[: min(len(ids), again.nr_map_ids)])


@dataclass(frozen=True)
class TestRunResult:
    __test__ = False  # not a pytest class, despite the name

    retval: int
    duration_ns: int  # average per repetition
    data_out: bytes
    ctx_out: bytes | None = None


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None) -> TestRunResult:
    """Run a program on `data` in the kernel (BPF_PROG_TEST_RUN), with a
    context (xdp_md, __sk_buff) in and out if given.  The output buffer has
    room for the frame plus XDP headroom growth."""
    din, dout, cin, cout = _buf(data), ctypes.create_string_buffer(len(data) + 512), _buf(ctx), _buf(ctx)
    opts = _TestRunOpts(
        data_in=_addr(din), data_size_in=len(data), data_out=_addr(dout), data_size_out=len(dout),
        ctx_in=_addr(cin), ctx_size_in=len(ctx or b""), ctx_out=_addr(cout), ctx_size_out=len(ctx or b""),
        repeat=repeat,
    )  # fmt: skip
    _call(
        "bpf_prog_test_run_opts", prog_fd, ctypes.byref(opts), op=f"BPF_PROG_TEST_RUN on program fd {prog_fd}"
    )
    return TestRunResult(
        retval=opts.retval,
        duration_ns=opts.duration,
        data_out=dout.raw[: opts.data_size_out],
        ctx_out=cout.raw[: opts.ctx_size_out] if cout is not None else None,
    )


def enable_stats() -> int:
    """Turn on run_time_ns/run_cnt accounting while the returned fd stays open
    (like sysctl kernel.bpf_stats_enabled=1, but undone when the fd closes)."""
    return _fd("bpf_enable_stats", 0, op="BPF_ENABLE_STATS")  # 0: BPF_STATS_RUN_TIME


# --- links -----------------------------------------------------------------


def link_create(prog_fd: int, target_ifindex: int, attach_type: int, flags: int = 0) -> int:
    """Attach through a bpf_link: BPF_XDP (flags are XDP_FLAGS_*, 0 = native)
    or BPF_TCX_INGRESS/EGRESS (flags are BPF_F_BEFORE/AFTER...).  libbpf 1.1
    predates tcx but passes its attach types and `flags` through unchanged
    (tests/unit/test_bpf_syscalls.py attaches tcx so); tcx anchors and
    expected_revision came to libbpf's options only in 1.3, and xdpguard
    appends its programs without them."""
    op = f"BPF_LINK_CREATE (attach type {attach_type}) on ifindex {target_ifindex}"
    opts = ctypes.byref(_FlagsOpts(flags=flags))
    return _fd("bpf_link_create", prog_fd, target_ifindex, attach_type, opts, op=op)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0, flags: int = 0) -> None:
    """Swap the program behind a link atomically.  With old_prog_fd, pass
    flags=BPF_F_REPLACE: the kernel then refuses (EPERM) if another program
    replaced ours in the meantime."""
    opts = ctypes.byref(_LinkUpdateOpts(flags=flags, old_prog_fd=old_prog_fd))
    _call("bpf_link_update", link_fd, new_prog_fd, opts, op=f"BPF_LINK_UPDATE on link fd {link_fd}")


def link_detach(link_fd: int) -> None:
    """Detach now, even while pins or other fds still hold the link."""
    _call("bpf_link_detach", link_fd, op=f"BPF_LINK_DETACH on link fd {link_fd}")


@dataclass(frozen=True)
class LinkInfo:
    type: int
    id: int
    prog_id: int
    ifindex: int  # 0 once the link is detached, or for non-netdev links
    attach_type: int


def link_info(fd: int) -> LinkInfo:
    i = _LinkInfoStruct()
    _get_info(fd, i, "link")
    attach_type = {BPF_LINK_TYPE_XDP: BPF_XDP, BPF_LINK_TYPE_TCX: i.attach_type}.get(i.type, 0)
    ifindex = i.ifindex if i.type in (BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX) else 0
    return LinkInfo(type=i.type, id=i.id, prog_id=i.prog_id, ifindex=ifindex, attach_type=attach_type)


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
    with Fd(prog_load(BPF_PROG_TYPE_SCHED_CLS, pass_insns, name="xg_tcx_probe")) as prog:
        try:
            os.close(link_create(prog, 0, BPF_TCX_EGRESS))
        except BpfError as e:
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                return False
            if e.errno != errno.ENODEV:
                raise
        return True


def privileged() -> bool:
    """Whether this process may change the data plane: CAP_SYS_ADMIN (which
    also stands in for CAP_BPF, and enters namespaces and mounts bpffs) and
    CAP_NET_ADMIN in effect.  Root normally holds both; root without
    capabilities (some containers, `setpriv`) does not."""
    need = 1 << 21 | 1 << 12  # CAP_SYS_ADMIN, CAP_NET_ADMIN
    with open("/proc/self/status") as f:
        eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), None)
    return os.geteuid() == 0 if eff is None else eff & need == need


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
