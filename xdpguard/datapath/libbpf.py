"""libbpf's C interface for ctypes: the process's one handle on libbpf.so.1,
every function xdpguard calls with its prototype, and the structs they take.

xdpguard calls Debian's libbpf (package libbpf1, 1.1.2 on Debian 12)
through ctypes: its bpf(2) wrappers (datapath/bpf.py), its BTF builder
(btf.py), its ring-buffer reader (events.py) and its object loader
(syncookie.py).  Each prototype and struct is stated once, here, as
<bpf/bpf.h>, <bpf/btf.h> and <bpf/libbpf.h> declare it (without a
prototype ctypes would pass every argument as a C int and cut 64-bit
pointers).  tests/unit/test_libbpf.py checks the struct offsets against
the headers.  Functions that return an int follow libbpf 1.0 semantics: a
negative errno on failure.  Nothing here calls them; those modules do.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from typing import Any

from xdpguard.datapath.bpferror import BpfError

_int, _u32, _u64, _size, _ptr, _str = (
    ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p
)  # fmt: skip
_pu32 = ctypes.POINTER(_u32)
BPF_OBJ_NAME_LEN = 16  # name fields, NUL included

# Callbacks: ring_buffer_sample_fn(ctx, data, size) and
# libbpf_print_fn_t(level, format, va_list).
SAMPLE_FN = ctypes.CFUNCTYPE(_int, _ptr, _ptr, _size)
PRINT_FN = ctypes.CFUNCTYPE(_int, _int, _str, _ptr)

# name: (return type, argument types); a `struct x *` is a void pointer.
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    # <bpf/bpf.h>: bpf(2) commands
    "bpf_map_create": (_int, [_int, _str, _u32, _u32, _u32, _ptr]),
    "bpf_map_lookup_elem": (_int, [_int, _ptr, _ptr]),
    "bpf_map_update_elem": (_int, [_int, _ptr, _ptr, _u64]),
    "bpf_map_delete_elem": (_int, [_int, _ptr]),
    "bpf_map_get_next_key": (_int, [_int, _ptr, _ptr]),
    "bpf_map_lookup_batch": (_int, [_int, _ptr, _ptr, _ptr, _ptr, _pu32, _ptr]),
    "bpf_map_update_batch": (_int, [_int, _ptr, _ptr, _pu32, _ptr]),
    "bpf_map_delete_batch": (_int, [_int, _ptr, _pu32, _ptr]),
    "bpf_obj_pin": (_int, [_int, _str]),
    "bpf_obj_get_opts": (_int, [_str, _ptr]),
    "bpf_obj_get_info_by_fd": (_int, [_int, _ptr, _pu32]),
    "bpf_map_get_fd_by_id_opts": (_int, [_u32, _ptr]),
    "bpf_prog_get_fd_by_id": (_int, [_u32]),
    "bpf_link_get_fd_by_id": (_int, [_u32]),
    "bpf_prog_load": (_int, [_int, _str, _str, _ptr, _size, _ptr]),
    "bpf_prog_test_run_opts": (_int, [_int, _ptr]),
    "bpf_enable_stats": (_int, [_int]),
    "bpf_link_create": (_int, [_int, _int, _int, _ptr]),
    "bpf_link_update": (_int, [_int, _int, _ptr]),
    "bpf_link_detach": (_int, [_int]),
    # <bpf/btf.h>: building BTF (a `struct btf *`)
    "btf__new_empty": (_ptr, []),
    "btf__free": (None, [_ptr]),
    "btf__add_int": (_int, [_ptr, _str, _size, _int]),
    "btf__add_ptr": (_int, [_ptr, _int]),
    "btf__add_struct": (_int, [_ptr, _str, _u32]),
    "btf__add_func_proto": (_int, [_ptr, _int]),
    "btf__add_func_param": (_int, [_ptr, _str, _int]),
    "btf__add_func": (_int, [_ptr, _str, _int, _int]),
    "btf__load_into_kernel": (_int, [_ptr]),
    "btf__fd": (_int, [_ptr]),
    # <bpf/libbpf.h>: ring buffers, objects (`struct bpf_object *`, its
    # maps and programs), the log hook and the CPU count
    "ring_buffer__new": (_ptr, [_int, SAMPLE_FN, _ptr, _ptr]),
    "ring_buffer__poll": (_int, [_ptr, _int]),
    "ring_buffer__free": (None, [_ptr]),
    "bpf_object__open_file": (_ptr, [_str, _ptr]),
    "libbpf_get_error": (ctypes.c_long, [_ptr]),
    "bpf_object__find_map_by_name": (_ptr, [_ptr, _str]),
    "bpf_object__find_program_by_name": (_ptr, [_ptr, _str]),
    "bpf_map__reuse_fd": (_int, [_ptr, _int]),
    "bpf_map__fd": (_int, [_ptr]),
    "bpf_program__fd": (_int, [_ptr]),
    "bpf_program__set_expected_attach_type": (_int, [_ptr, _int]),
    "bpf_object__load": (_int, [_ptr]),
    "bpf_object__close": (None, [_ptr]),
    "libbpf_set_print": (_ptr, [_ptr]),  # a PRINT_FN cast to a pointer; returns the previous one
    "libbpf_num_possible_cpus": (_int, []),
}


@functools.cache
def lib() -> ctypes.CDLL:
    """libbpf.so.1 with the prototypes above declared; BpfError (ELIBACC) if it is missing."""
    try:
        handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise BpfError(errno.ELIBACC, f"load libbpf.so.1 ({e})") from e
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(handle, name)
        fn.restype, fn.argtypes = restype, argtypes
    return handle


# --- option structs and info structs --------------------------------------


class Opts(ctypes.Structure):
    """libbpf's option structs start with their own size, so a caller may
    declare a prefix: libbpf reads the fields that fit in `sz` and takes
    zero for the rest.  Each one below stops at the last field we set, and
    fields named `_...` stay zero."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(sz=ctypes.sizeof(self), **fields)


class MapCreateOpts(Opts):
    _fields_ = [("sz", _size), ("_btf", _u32 * 4), ("inner_map_fd", _u32), ("map_flags", _u32)]


class BatchOpts(Opts):
    _fields_ = [("sz", _size), ("elem_flags", _u64), ("flags", _u64)]


class FlagsOpts(Opts):
    # bpf_obj_get_opts.file_flags, bpf_get_fd_by_id_opts.open_flags and
    # bpf_link_create_opts.flags: all three a u32 right after the size.
    _fields_ = [("sz", _size), ("flags", _u32)]


class LinkUpdateOpts(Opts):
    _fields_ = [("sz", _size), ("flags", _u32), ("old_prog_fd", _u32)]


class ProgLoadOpts(Opts):
    _fields_ = [
        ("sz", _size), ("attempts", _int), ("expected_attach_type", _u32), ("prog_btf_fd", _u32),
        ("_prog_flags_to_attach_btf_obj_fd", _u32 * 6), ("_fd_array", _ptr), ("func_info", _ptr),
        ("func_info_cnt", _u32), ("func_info_rec_size", _u32), ("_line_info", ctypes.c_uint8 * 16),
        ("log_level", _u32), ("log_size", _u32), ("log_buf", _ptr),
    ]  # fmt: skip


class TestRunOpts(Opts):
    _fields_ = [
        ("sz", _size), ("data_in", _ptr), ("data_out", _ptr), ("data_size_in", _u32), ("data_size_out", _u32),
        ("ctx_in", _ptr), ("ctx_out", _ptr), ("ctx_size_in", _u32), ("ctx_size_out", _u32),
        ("retval", _u32), ("repeat", _int), ("duration", _u32),
    ]  # fmt: skip


# The kernel's info structs (<linux/bpf.h>), which libbpf 1.1's
# bpf_obj_get_info_by_fd passes through as they are.  The kernel fills as
# much as the caller's size asks for, so each stops at the last field read.


class MapInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32),
        ("map_flags", _u32), ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    ]  # fmt: skip


class ProgInfoStruct(ctypes.Structure):
    _fields_ = [
        ("type", _u32), ("id", _u32), ("tag", ctypes.c_uint8 * 8), ("_lens_insns", ctypes.c_uint8 * 24),
        ("load_time", _u64), ("created_by_uid", _u32), ("nr_map_ids", _u32), ("map_ids", _u64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("_ifindex_to_prog_tags", ctypes.c_uint8 * 112), ("run_time_ns", _u64), ("run_cnt", _u64),
        ("recursion_misses", _u64), ("verified_insns", _u32),
    ]  # fmt: skip


class LinkInfoStruct(ctypes.Structure):
    # ifindex is xdp.ifindex and tcx.ifindex; attach_type is tcx's (newer
    # than Debian's 6.1 header, so checked by the tcx test instead).
    _fields_ = [
        ("type", _u32), ("id", _u32), ("prog_id", _u32), ("_pad", _u32),
        ("ifindex", _u32), ("attach_type", _u32),
    ]  # fmt: skip
