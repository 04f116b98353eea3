"""Typed calls for the bpf(2) commands xdpguard issues, made through libbpf.

bcc 0.26 compiles and loads our programs, but has no batch map operations,
no bpf_link create/update/detach, no object-info queries and no
BPF_PROG_TEST_RUN with contexts.  libbpf (datapath/libbpf.py) has them all
as C functions taking plain arguments and small option structs, so paths
that only touch maps and links never import bcc (and LLVM, ~70 MB), and the
bpf(2) attribute layouts stay libbpf's business.

What is ours: every failure raises `BpfError` (datapath/bpferror.py;
callers catch it as bpf.BpfError), which names the command and its object;
batch operations fall back to single elements on map types the kernel does
not batch; and per-CPU value helpers.  File descriptors are plain ints;
`Fd` closes one on scope exit.
"""

from __future__ import annotations

import array
import ctypes
import errno
import functools
import itertools
import mmap
import os
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from xdpguard.datapath import libbpf as L
from xdpguard.datapath.bpferror import ENOTSUPP, BpfError

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
BPF_OBJ_NAME_LEN = L.BPF_OBJ_NAME_LEN  # stated with the info structs that use it


# --- calling libbpf --------------------------------------------------------

_u32 = ctypes.c_uint32  # counts and id arrays libbpf reads and writes


def _call(name: str, *args: Any, op: str, fd: int | None = None, missing: bool = False) -> int:
    """libbpf's `name`(*args): its result (a new fd, or 0).  A failure raises
    BpfError labelled `op` (plus the map's name when `fd` is a map); with
    `missing`, ENOENT is no failure and returns -ENOENT."""
    ret = int(getattr(L.lib(), name)(*args))
    if ret < 0 and not (missing and ret == -errno.ENOENT):
        raise BpfError(-ret, _label(op, fd))
    return ret


def _label(op: str, map_fd: int | None) -> str:
    # Map names make errors actionable ("on in_src4"); look the name up only
    # on the failure path, where the extra call costs nothing that matters.
    if map_fd is None:
        return op
    try:
        return f"{op} on {map_info(map_fd).name or f'map fd {map_fd}'}"
    except BpfError:
        return f"{op} on map fd {map_fd}"


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
    return _call("libbpf_num_possible_cpus", op="count the possible CPUs")


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
    opts = L.MapCreateOpts(inner_map_fd=inner_map_fd, map_flags=flags)
    op = f"BPF_MAP_CREATE {name or '(unnamed)'} type {map_type}"
    args = (map_type, _name(name), key_size, value_size, max_entries, ctypes.byref(opts))
    return _call("bpf_map_create", *args, op=op)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """Value stored under key, or None.  Per-CPU maps: pass percpu_value_size()."""
    value = ctypes.create_string_buffer(value_size)
    found = _call("bpf_map_lookup_elem", fd, key, value, op="BPF_MAP_LOOKUP_ELEM", fd=fd, missing=True)
    return value.raw if found == 0 else None


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _call("bpf_map_update_elem", fd, key, value, flags, op="BPF_MAP_UPDATE_ELEM", fd=fd)


def map_delete(fd: int, key: bytes) -> bool:
    """Delete key; False when it was not there."""
    return _call("bpf_map_delete_elem", fd, key, op="BPF_MAP_DELETE_ELEM", fd=fd, missing=True) == 0


def map_get_next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """Key after `key` (the first key when None), or None at the end."""
    nxt = ctypes.create_string_buffer(key_size)
    found = _call("bpf_map_get_next_key", fd, key, nxt, op="BPF_MAP_GET_NEXT_KEY", fd=fd, missing=True)
    return nxt.raw if found == 0 else None


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
    opts = ctypes.byref(L.BatchOpts())
    while limit is None or len(out) < limit:
        n = _u32(chunk if limit is None else min(chunk, limit - len(out)))
        keys = ctypes.create_string_buffer(n.value * key_size)
        values = ctypes.create_string_buffer(n.value * value_size)
        ret = L.lib().bpf_map_lookup_batch(fd, cursor, out_tok, keys, values, ctypes.byref(n), opts)
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
    raw = map_lookup_array(fd, start, count, value_size)
    return [raw[i : i + value_size] for i in range(0, len(raw), value_size)]


def map_lookup_array(fd: int, start: int, count: int, value_size: int) -> bytes:
    """Values of array elements start .. start + count - 1, back to back in one
    bytes object: comparing a whole table with what it should hold is then a
    few slices, not an object per element (a 10,000-rule table has tens of
    thousands).  Raises ERANGE when the array ends before start + count."""
    parts: list[bytes] = []
    token = ctypes.create_string_buffer(struct.pack("=I", start - 1) if start else b"", 4)
    out_tok = ctypes.create_string_buffer(4)
    cursor = token if start else None
    opts = ctypes.byref(L.BatchOpts())
    done = 0
    while done < count:
        n = _u32(min(_BATCH_CHUNK, count - done))
        keys = ctypes.create_string_buffer(n.value * 4)
        values = ctypes.create_string_buffer(n.value * value_size)
        ret = L.lib().bpf_map_lookup_batch(fd, cursor, out_tok, keys, values, ctypes.byref(n), opts)
        if ret < 0 and ret != -errno.ENOENT:
            if done == 0 and -ret in _BATCH_FALLBACK:
                return _lookup_array_each(fd, start, count, value_size)
            raise BpfError(-ret, _label("BPF_MAP_LOOKUP_BATCH", fd))
        # An array answers its indexes in order; anything else is not the range asked for.
        if keys.raw[: n.value * 4] != array.array("I", range(start + done, start + done + n.value)).tobytes():
            raise BpfError(errno.ERANGE, _label(f"BPF_MAP_LOOKUP_BATCH of {count} from {start}", fd))
        parts.append(values.raw[: n.value * value_size])
        done += n.value
        if ret < 0 or n.value == 0:  # ENOENT: the array ends here
            break
        ctypes.memmove(token, out_tok, 4)
        cursor = token
    if done < count:
        raise BpfError(errno.ERANGE, _label(f"BPF_MAP_LOOKUP_BATCH of {count} from {start}", fd))
    return b"".join(parts)


def _lookup_array_each(fd: int, start: int, count: int, value_size: int) -> bytes:
    """map_lookup_array() one element at a time, for kernels without batch lookups."""
    out = []
    for i in range(start, start + count):
        v = map_lookup(fd, struct.pack("=I", i), value_size)
        if v is None:
            raise BpfError(errno.ERANGE, _label(f"BPF_MAP_LOOKUP_ELEM of {count} from {start}", fd))
        out.append(v)
    return b"".join(out)


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
    opts = ctypes.byref(L.BatchOpts(elem_flags=flags))
    done = 0
    while done < len(keys):
        part_k, part_v = keys[done : done + chunk], values[done : done + chunk]
        n = _u32(len(part_k))
        ret = L.lib().bpf_map_update_batch(fd, b"".join(part_k), b"".join(part_v), ctypes.byref(n), opts)
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
    opts = ctypes.byref(L.BatchOpts())
    deleted = pos = 0
    while pos < len(keys):
        part = keys[pos : pos + chunk]
        n = _u32(len(part))
        ret = L.lib().bpf_map_delete_batch(fd, b"".join(part), ctypes.byref(n), opts)
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
    i = L.MapInfoStruct()
    _get_info(fd, i, "map")
    name = i.name.decode(errors="replace")
    return MapInfo(i.type, i.id, i.key_size, i.value_size, i.max_entries, i.map_flags, name)


# --- objects by id and by pin ----------------------------------------------


def map_get_fd_by_id(map_id: int, flags: int = 0) -> int:
    opts = ctypes.byref(L.FlagsOpts(flags=flags))
    return _call("bpf_map_get_fd_by_id_opts", map_id, opts, op=f"BPF_MAP_GET_FD_BY_ID for map id {map_id}")


def prog_get_fd_by_id(prog_id: int) -> int:
    return _call("bpf_prog_get_fd_by_id", prog_id, op=f"BPF_PROG_GET_FD_BY_ID for program id {prog_id}")


def link_get_fd_by_id(link_id: int) -> int:
    return _call("bpf_link_get_fd_by_id", link_id, op=f"BPF_LINK_GET_FD_BY_ID for link id {link_id}")


def obj_pin(fd: int, path: str) -> None:
    _call("bpf_obj_pin", fd, os.fsencode(path), op=f"BPF_OBJ_PIN at {path}")


def obj_get(path: str, flags: int = 0) -> int:
    """Open a pinned map, program or link; flags BPF_F_RDONLY / BPF_F_WRONLY."""
    opts = ctypes.byref(L.FlagsOpts(flags=flags))
    return _call("bpf_obj_get_opts", os.fsencode(path), opts, op=f"BPF_OBJ_GET at {path}")


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
        opts = L.ProgLoadOpts(
            expected_attach_type=expected_attach_type, prog_btf_fd=btf_fd,
            func_info=ctypes.addressof(info) if func_info else None, func_info_cnt=len(func_info),
            func_info_rec_size=8 if func_info else 0,
            log_level=1 if log else 0, log_size=len(log or b""), log_buf=_addr(log),
        )  # fmt: skip
        args = (prog_type, _name(name), license.encode(), insns, len(insns) // 8, ctypes.byref(opts))
        return int(L.lib().bpf_prog_load(*args))

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
    i = L.ProgInfoStruct()
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
    info = L.ProgInfoStruct()
    _get_info(fd, info, "program")
    ids = (_u32 * info.nr_map_ids)()
    again = L.ProgInfoStruct(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
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
    opts = L.TestRunOpts(
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
    return _call("bpf_enable_stats", 0, op="BPF_ENABLE_STATS")  # 0: BPF_STATS_RUN_TIME


# --- links -----------------------------------------------------------------


def link_create(prog_fd: int, target_ifindex: int, attach_type: int, flags: int = 0) -> int:
    """Attach through a bpf_link: BPF_XDP (flags are XDP_FLAGS_*, 0 = native)
    or BPF_TCX_INGRESS/EGRESS (flags are BPF_F_BEFORE/AFTER...).  libbpf 1.1
    predates tcx but passes its attach types and `flags` through unchanged
    (tests/unit/test_bpf_syscalls.py attaches tcx so); tcx anchors and
    expected_revision came to libbpf's options only in 1.3, and xdpguard
    appends its programs without them."""
    op = f"BPF_LINK_CREATE (attach type {attach_type}) on ifindex {target_ifindex}"
    opts = ctypes.byref(L.FlagsOpts(flags=flags))
    return _call("bpf_link_create", prog_fd, target_ifindex, attach_type, opts, op=op)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0, flags: int = 0) -> None:
    """Swap the program behind a link atomically.  With old_prog_fd, pass
    flags=BPF_F_REPLACE: the kernel then refuses (EPERM) if another program
    replaced ours in the meantime."""
    opts = ctypes.byref(L.LinkUpdateOpts(flags=flags, old_prog_fd=old_prog_fd))
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
    i = L.LinkInfoStruct()
    _get_info(fd, i, "link")
    attach_type = {BPF_LINK_TYPE_XDP: BPF_XDP, BPF_LINK_TYPE_TCX: i.attach_type}.get(i.type, 0)
    ifindex = i.ifindex if i.type in (BPF_LINK_TYPE_XDP, BPF_LINK_TYPE_TCX) else 0
    return LinkInfo(type=i.type, id=i.id, prog_id=i.prog_id, ifindex=ifindex, attach_type=attach_type)


@contextmanager
def mapped(fd: int, nbytes: int, writable: bool = False) -> Iterator[mmap.mmap]:
    """The values of a BPF_F_MMAPABLE array in place (its first nbytes; the
    mapping is rounded up to whole pages): reads, and when writable aligned
    8-byte stores, which the programs see at once, without a call.  Every
    view of it (a numpy array, a memoryview) must be gone before the block
    ends, or the mapping cannot close."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    try:
        mm = mmap.mmap(fd, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE, mmap.MAP_SHARED, prot)
    except OSError as e:
        raise BpfError(e.errno or errno.EIO, "mmap of a BPF map") from e
    try:
        yield mm
    finally:
        mm.close()
