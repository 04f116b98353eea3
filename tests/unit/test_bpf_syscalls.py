"""The raw bpf(2) layer against the running kernel: maps of every type xdpguard
uses, batch operations, pins, object info, program load and test runs, and
XDP links on a veth inside a throw-away network namespace.

These need root and a mounted bpffs; without them the module is skipped with
the reason printed in the summary.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import select
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xdpguard import net
from xdpguard.datapath import bpf


def _bpffs_mounted() -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f)


if os.geteuid() != 0:
    pytest.skip("bpf(2) tests need root (CAP_BPF, CAP_NET_ADMIN)", allow_module_level=True)
if not _bpffs_mounted():
    pytest.skip("bpffs is not mounted at /sys/fs/bpf (run `make setup`)", allow_module_level=True)

U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")

# r0 = verdict; exit
XDP_PASS_PROG = bytes.fromhex("b700000002000000") + bytes.fromhex("9500000000000000")
XDP_DROP_PROG = bytes.fromhex("b700000001000000") + bytes.fromhex("9500000000000000")
# exit without setting r0: the verifier must refuse it
BAD_PROG = bytes.fromhex("9500000000000000")

_counter = itertools.count()


def lpm4(prefix: str) -> bytes:
    n = ipaddress.ip_network(prefix)
    return U32.pack(n.prefixlen) + n.network_address.packed


def lpm6(prefix: str) -> bytes:
    n = ipaddress.ip_network(prefix)
    return U32.pack(n.prefixlen) + n.network_address.packed


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A private directory on bpffs; fails the test if a pin is left behind."""
    d = Path(tempfile.mkdtemp(dir="/sys/fs/bpf", prefix=f"xdpguard-unit-{os.getpid()}-"))
    yield d
    left = sorted(p.name for p in d.iterdir())
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    assert not left, f"pins left behind: {left}"


@pytest.fixture
def veth_ns() -> Iterator[str]:
    """A namespace holding veth xv0 <-> xv1, both up.  Always deleted."""
    name = f"xgu{os.getpid()}{next(_counter)}"
    try:
        net.create_netns(name)
    except net.NetError as e:
        pytest.skip(f"network namespaces unavailable: {e}")
    try:
        net.create_veth_pair("xv0", name, "xv1", name)
        yield name
    finally:
        net.delete_netns(name)


def _fds(*fds: int) -> list[bpf.Fd]:
    return [bpf.Fd(fd) for fd in fds]


# --- layout ----------------------------------------------------------------

LAYOUT = [
    # (ctypes struct, C type, prefix in C, {ctypes field: C field})
    (
        bpf._MapCreateAttr,
        "union bpf_attr",
        "",
        {f: f for f in ("map_type", "key_size", "value_size", "max_entries", "map_flags")}
        | {"inner_map_fd": "inner_map_fd", "numa_node": "numa_node", "map_name": "map_name"},
    ),
    (
        bpf._MapElemAttr,
        "union bpf_attr",
        "",
        {"map_fd": "map_fd", "key": "key", "value": "value", "flags": "flags"},
    ),
    (
        bpf._BatchAttr,
        "union bpf_attr",
        "batch.",
        {f: f for f in ("in_batch", "out_batch", "keys", "values", "count", "map_fd", "elem_flags", "flags")},
    ),
    (
        bpf._ProgLoadAttr,
        "union bpf_attr",
        "",
        {
            f: f
            for f in (
                "prog_type",
                "insn_cnt",
                "insns",
                "license",
                "log_level",
                "log_size",
                "log_buf",
                "kern_version",
                "prog_flags",
                "prog_name",
                "prog_ifindex",
                "expected_attach_type",
            )
        },
    ),
    (
        bpf._ObjAttr,
        "union bpf_attr",
        "",
        {"pathname": "pathname", "bpf_fd": "bpf_fd", "file_flags": "file_flags"},
    ),
    (
        bpf._TestRunAttr,
        "union bpf_attr",
        "test.",
        {
            f: f
            for f in (
                "prog_fd",
                "retval",
                "data_size_in",
                "data_size_out",
                "data_in",
                "data_out",
                "repeat",
                "duration",
                "ctx_size_in",
                "ctx_size_out",
                "ctx_in",
                "ctx_out",
                "flags",
                "cpu",
                "batch_size",
            )
        },
    ),
    (
        bpf._GetIdAttr,
        "union bpf_attr",
        "",
        {"id": "map_id", "next_id": "next_id", "open_flags": "open_flags"},
    ),
    (bpf._InfoAttr, "union bpf_attr", "info.", {"bpf_fd": "bpf_fd", "info_len": "info_len", "info": "info"}),
    (
        bpf._LinkCreateAttr,
        "union bpf_attr",
        "link_create.",
        {f: f for f in ("prog_fd", "target_ifindex", "attach_type", "flags")},
    ),
    (
        bpf._LinkUpdateAttr,
        "union bpf_attr",
        "link_update.",
        {f: f for f in ("link_fd", "new_prog_fd", "flags", "old_prog_fd")},
    ),
    (
        bpf._MapInfoStruct,
        "struct bpf_map_info",
        "",
        {
            f: f
            for f in ("type", "id", "key_size", "value_size", "max_entries", "map_flags", "name", "ifindex")
        },
    ),
    (
        bpf._ProgInfoStruct,
        "struct bpf_prog_info",
        "",
        {
            f: f
            for f in (
                "type",
                "id",
                "tag",
                "load_time",
                "name",
                "ifindex",
                "run_time_ns",
                "run_cnt",
                "verified_insns",
            )
        },
    ),
    (
        bpf._LinkInfoStruct,
        "struct bpf_link_info",
        "",
        {"type": "type", "id": "id", "prog_id": "prog_id", "ifindex": "xdp.ifindex"},
    ),
]


def test_ctypes_layouts_match_uapi_header(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists("/usr/include/linux/bpf.h"):
        pytest.skip("no C compiler or /usr/include/linux/bpf.h to check the layouts against")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/bpf.h>", "int main(void) {"]
    expected: list[tuple[str, int]] = []
    for struct_cls, ctype, prefix, fields in LAYOUT:
        for py_field, c_field in fields.items():
            label = f"{struct_cls.__name__}.{py_field}"
            lines.append(f'printf("%zu\\n", offsetof({ctype}, {prefix}{c_field}));')
            expected.append((label, getattr(struct_cls, py_field).offset))
        if prefix == "" and ctype.startswith("struct"):
            lines.append(f'printf("%zu\\n", sizeof({ctype}));')
            expected.append((f"sizeof({ctype}) >=", -1 - bpf.ctypes.sizeof(struct_cls)))
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True)
    got = [
        int(x) for x in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    ]
    for (label, want), have in zip(expected, got, strict=True):
        if want < 0:  # our info struct may be shorter than a newer header's
            assert -1 - want <= have, f"{label}: ctypes {-1 - want} > C {have}"
        else:
            assert want == have, f"{label}: ctypes offset {want}, C offset {have}"


# --- maps ------------------------------------------------------------------


def test_array_update_lookup_iterate() -> None:
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 16, name="t_array")) as fd:
        bpf.map_update(fd, U32.pack(3), U64.pack(0xDEADBEEF))
        assert bpf.map_lookup(fd, U32.pack(3), 8) == U64.pack(0xDEADBEEF)
        assert bpf.map_lookup(fd, U32.pack(4), 8) == bytes(8)  # arrays are preallocated, zeroed
        assert bpf.map_lookup(fd, U32.pack(16), 8) is None  # out of range reads as absent
        assert [U32.unpack(k)[0] for k in bpf.map_iter_keys(fd, 4)] == list(range(16))
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_delete(fd, U32.pack(3))  # array slots cannot be deleted
        assert exc.value.errno == errno.EINVAL
        assert "BPF_MAP_DELETE_ELEM on t_array" in str(exc.value)
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(fd, U32.pack(99), U64.pack(1))
        assert exc.value.errno == errno.E2BIG
        assert exc.value.sentence == "BPF_MAP_UPDATE_ELEM on t_array: map is full"


def test_percpu_array_values_per_cpu() -> None:
    n = bpf.ncpus()
    assert n >= (os.cpu_count() or 1)  # possible CPUs include every present one
    size = bpf.percpu_value_size(4)
    assert size == n * 8  # each CPU's 4-byte value padded to 8
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 4, name="t_pcpu")) as fd:
        values = [U32.pack(100 + cpu) for cpu in range(n)]
        bpf.map_update(fd, U32.pack(1), bpf.join_percpu(values, 4))
        raw = bpf.map_lookup(fd, U32.pack(1), size)
        assert raw is not None
        assert bpf.split_percpu(raw, 4) == values


def test_hash_update_flags_delete_iterate() -> None:
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 8, name="t_hash")) as fd:
        assert bpf.map_get_next_key(fd, None, 4) is None  # empty
        bpf.map_update(fd, U32.pack(1), U32.pack(10), bpf.BPF_NOEXIST)
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(fd, U32.pack(1), U32.pack(11), bpf.BPF_NOEXIST)
        assert exc.value.errno == errno.EEXIST
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(fd, U32.pack(2), U32.pack(20), bpf.BPF_EXIST)
        assert exc.value.errno == errno.ENOENT
        bpf.map_update(fd, U32.pack(2), U32.pack(20))
        assert sorted(bpf.map_iter_keys(fd, 4)) == [U32.pack(1), U32.pack(2)]
        assert bpf.map_delete(fd, U32.pack(1)) is True
        assert bpf.map_delete(fd, U32.pack(1)) is False
        assert bpf.map_lookup(fd, U32.pack(1), 4) is None
        assert bpf.map_lookup(fd, U32.pack(2), 4) == U32.pack(20)
        for i in range(3, 10):  # 2..9: eight keys, the map is full
            bpf.map_update(fd, U32.pack(i), U32.pack(i))
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(fd, U32.pack(100), U32.pack(0))
        assert exc.value.errno == errno.E2BIG
        assert exc.value.sentence.endswith("map is full")


def test_lpm_trie_longest_prefix_match() -> None:
    with (
        bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 64, bpf.BPF_F_NO_PREALLOC, "t_lpm4")) as v4,
        bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 20, 4, 64, bpf.BPF_F_NO_PREALLOC, "t_lpm6")) as v6,
    ):
        bpf.map_update(v4, lpm4("10.0.0.0/8"), U32.pack(1))
        bpf.map_update(v4, lpm4("10.1.0.0/16"), U32.pack(2))
        assert bpf.map_lookup(v4, lpm4("10.1.2.3/32"), 4) == U32.pack(2)
        assert bpf.map_lookup(v4, lpm4("10.2.0.1/32"), 4) == U32.pack(1)
        assert bpf.map_lookup(v4, lpm4("11.0.0.1/32"), 4) is None
        bpf.map_update(v6, lpm6("2001:db8::/32"), U32.pack(6))
        assert bpf.map_lookup(v6, lpm6("2001:db8:1::1/128"), 4) == U32.pack(6)
        assert bpf.map_lookup(v6, lpm6("2001:db9::1/128"), 4) is None
        assert sorted(bpf.map_iter_keys(v4, 8)) == sorted([lpm4("10.0.0.0/8"), lpm4("10.1.0.0/16")])
        assert bpf.map_delete(v4, lpm4("10.1.0.0/16"))
        assert bpf.map_lookup(v4, lpm4("10.1.2.3/32"), 4) == U32.pack(1)


def test_array_of_maps_with_inner_of_other_size() -> None:
    template = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 8, bpf.BPF_F_INNER_MAP, "t_tmpl"))
    outer = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 2, 0, "t_outer", int(template)))
    big = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1000, bpf.BPF_F_INNER_MAP, "t_inner"))
    plain = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1000, 0, "t_plain"))
    with template, outer, big, plain:
        bpf.map_update(int(big), U32.pack(999), U64.pack(42))
        bpf.map_update(int(outer), U32.pack(1), U32.pack(int(big)))
        # Reading a slot from user space gives the inner map's id, not an fd.
        slot = bpf.map_lookup(int(outer), U32.pack(1), 4)
        assert slot is not None
        inner_id = U32.unpack(slot)[0]
        assert inner_id == bpf.map_info(int(big)).id
        with bpf.Fd(bpf.map_get_fd_by_id(inner_id)) as again:
            info = bpf.map_info(again)
            assert (info.max_entries, info.name) == (1000, "t_inner")
            assert bpf.map_lookup(again, U32.pack(999), 8) == U64.pack(42)
        # Without BPF_F_INNER_MAP an array must match the template's size.
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(int(outer), U32.pack(0), U32.pack(int(plain)))
        assert exc.value.errno == errno.EINVAL


def test_map_info_reports_sizes() -> None:
    with bpf.Fd(
        bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 20, 8, 1234, bpf.BPF_F_NO_PREALLOC, "t_info")
    ) as fd:
        info = bpf.map_info(fd)
        assert info.type == bpf.BPF_MAP_TYPE_LPM_TRIE
        assert (info.key_size, info.value_size, info.max_entries) == (20, 8, 1234)
        assert info.map_flags & bpf.BPF_F_NO_PREALLOC
        assert info.name == "t_info" and info.id > 0


def test_map_create_errors_are_named() -> None:
    with pytest.raises(bpf.BpfError) as exc:
        bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 16, 0, "t_bad")  # LPM needs NO_PREALLOC
    assert exc.value.errno == errno.EINVAL
    assert str(exc.value).startswith("BPF_MAP_CREATE t_bad type 11: ")
    with pytest.raises(ValueError):
        bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="a_name_longer_than_15")


def test_fd_closes_on_exit() -> None:
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1)) as fd:
        os.fstat(fd)
    with pytest.raises(OSError) as exc:
        os.fstat(fd)
    assert exc.value.errno == errno.EBADF


# --- batches ---------------------------------------------------------------

# (name, map type, key size, value size, flags, batch commands the kernel has)
BATCH_SUPPORT = [
    ("array", bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 0, {"lookup", "update"}),
    ("percpu_array", bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 0, {"lookup", "update"}),
    ("hash", bpf.BPF_MAP_TYPE_HASH, 4, 8, 0, {"lookup", "update", "delete"}),
    ("percpu_hash", bpf.BPF_MAP_TYPE_PERCPU_HASH, 4, 8, 0, {"lookup", "update", "delete"}),
    ("lru_hash", bpf.BPF_MAP_TYPE_LRU_HASH, 4, 8, 0, {"lookup", "update", "delete"}),
    ("lpm_trie", bpf.BPF_MAP_TYPE_LPM_TRIE, 8, 8, bpf.BPF_F_NO_PREALLOC, {"lookup", "update", "delete"}),
]


@pytest.mark.parametrize(
    "map_type,key_size,value_size,flags,supported",
    [row[1:] for row in BATCH_SUPPORT],
    ids=[row[0] for row in BATCH_SUPPORT],
)
def test_batch_support_per_map_type(
    map_type: int, key_size: int, value_size: int, flags: int, supported: set[str]
) -> None:
    """Keeps the table in bpf.py honest: which types the kernel batches itself."""
    import ctypes

    vsize = bpf.percpu_value_size(value_size) if map_type in bpf.PERCPU_MAP_TYPES else value_size
    keys = [
        lpm4(f"10.0.{i}.0/24") if map_type == bpf.BPF_MAP_TYPE_LPM_TRIE else U32.pack(i) for i in range(4)
    ]
    with bpf.Fd(bpf.map_create(map_type, key_size, value_size, 16, flags)) as fd:
        seen = set()
        for name, cmd in (
            ("update", bpf.BPF_MAP_UPDATE_BATCH),
            ("lookup", bpf.BPF_MAP_LOOKUP_BATCH),
            ("delete", bpf.BPF_MAP_DELETE_BATCH),
        ):
            kbuf = ctypes.create_string_buffer(b"".join(keys), 4 * key_size)
            vbuf = ctypes.create_string_buffer(4 * vsize)
            token = ctypes.create_string_buffer(64)
            attr = bpf._Attr()
            attr.batch.keys = ctypes.addressof(kbuf)
            attr.batch.values = ctypes.addressof(vbuf)
            attr.batch.out_batch = ctypes.addressof(token)
            attr.batch.count = 4
            attr.batch.map_fd = fd
            ret = bpf._sys_bpf(cmd, attr)
            if ret == 0 or -ret == errno.ENOENT:  # ENOENT: lookup reached the end
                seen.add(name)
            else:
                assert -ret == bpf.ENOTSUPP, f"{name}: unexpected errno {-ret}"
        assert seen == supported


@pytest.mark.parametrize("force_fallback", [False, True], ids=["kernel-batch", "per-element"])
@pytest.mark.parametrize(
    "map_type,key_size,flags",
    [
        (bpf.BPF_MAP_TYPE_ARRAY, 4, 0),
        (bpf.BPF_MAP_TYPE_HASH, 4, 0),
        (bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 0),
        (bpf.BPF_MAP_TYPE_LPM_TRIE, 8, bpf.BPF_F_NO_PREALLOC),
    ],
    ids=["array", "hash", "percpu_array", "lpm_trie"],
)
def test_batch_roundtrip(
    map_type: int, key_size: int, flags: int, force_fallback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if force_fallback:
        real = bpf._sys_bpf
        batch_cmds = (bpf.BPF_MAP_LOOKUP_BATCH, bpf.BPF_MAP_UPDATE_BATCH, bpf.BPF_MAP_DELETE_BATCH)

        def no_batches(cmd: int, attr: bpf._Attr) -> int:
            return -bpf.ENOTSUPP if cmd in batch_cmds else real(cmd, attr)

        monkeypatch.setattr(bpf, "_sys_bpf", no_batches)
    n = 20000
    percpu = map_type in bpf.PERCPU_MAP_TYPES
    vsize = bpf.percpu_value_size(8) if percpu else 8
    if map_type == bpf.BPF_MAP_TYPE_LPM_TRIE:
        keys = [U32.pack(32) + struct.pack("!I", 0x0A000000 + i * 7) for i in range(n)]
    else:
        keys = [U32.pack(i) for i in range(n)]
    values = [U64.pack(i * 3 + 1) * (vsize // 8) for i in range(n)]
    with bpf.Fd(bpf.map_create(map_type, key_size, 8, n, flags, "t_batch")) as fd:
        # chunk smaller than n so the cursor handling is exercised
        assert bpf.map_update_batch(fd, keys, values, chunk=3000) == n
        got = dict(bpf.map_lookup_batch(fd, key_size, vsize, chunk=3000))
        assert got == dict(zip(keys, values, strict=True))
        if map_type in (bpf.BPF_MAP_TYPE_ARRAY, bpf.BPF_MAP_TYPE_PERCPU_ARRAY):
            return
        gone = keys[: n // 2]
        missing = [U32.pack(32) + bytes(4)] if key_size == 8 else [U32.pack(n + 5)]
        assert bpf.map_delete_batch(fd, gone[:100] + missing + gone[100:]) == n // 2
        left = dict(bpf.map_lookup_batch(fd, key_size, vsize))
        assert sorted(left) == sorted(keys[n // 2 :])


def test_batch_update_reports_progress_when_full() -> None:
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 10, name="t_small")) as fd:
        keys = [U32.pack(i) for i in range(20)]
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update_batch(fd, keys, keys)
        assert exc.value.errno == errno.E2BIG
        assert "after 10 of 20" in str(exc.value) and "t_small" in str(exc.value)


# --- pins ------------------------------------------------------------------


def test_pin_and_get(pin_dir: Path) -> None:
    path = str(pin_dir / "m")
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 4, name="t_pinned")) as fd:
        bpf.map_update(fd, U32.pack(7), U32.pack(70))
        bpf.obj_pin(fd, path)
        with pytest.raises(bpf.BpfError) as exc:
            bpf.obj_pin(fd, path)
        assert exc.value.errno == errno.EEXIST
        assert "already pinned" in exc.value.sentence
        map_id = bpf.map_info(fd).id
    # The pin keeps the map alive after our fd is gone.
    with bpf.Fd(bpf.obj_get(path)) as again:
        assert bpf.map_info(again).id == map_id
        assert bpf.map_lookup(again, U32.pack(7), 4) == U32.pack(70)
    with bpf.Fd(bpf.obj_get(path, bpf.BPF_F_RDONLY)) as ro:
        with pytest.raises(bpf.BpfError) as exc:
            bpf.map_update(ro, U32.pack(8), U32.pack(80))
        assert exc.value.errno == errno.EPERM
    os.unlink(path)
    with pytest.raises(bpf.BpfError) as exc:
        bpf.obj_get(path)
    assert exc.value.errno == errno.ENOENT
    assert exc.value.sentence == f"BPF_OBJ_GET at {path}: nothing is pinned at that path"
    with pytest.raises(bpf.BpfError) as exc:
        bpf.map_get_fd_by_id(map_id)  # last reference gone: the map is freed
    assert exc.value.errno == errno.ENOENT


# --- programs --------------------------------------------------------------


def _frame() -> bytes:
    return bytes.fromhex("ffffffffffff0200000000010800") + bytes(50)


def test_prog_load_test_run_and_info() -> None:
    with (
        bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, name="t_pass")) as passing,
        bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG, name="t_drop")) as dropping,
    ):
        frame = _frame()
        res = bpf.prog_test_run(passing, frame)
        assert res.retval == bpf.XDP_PASS
        assert res.data_out == frame
        assert bpf.prog_test_run(dropping, frame, repeat=100).retval == bpf.XDP_DROP
        info = bpf.prog_info(passing)
        assert info.type == bpf.BPF_PROG_TYPE_XDP and info.name == "t_pass" and info.id > 0
        assert len(info.tag) == 16 and info.tag != bpf.prog_info(dropping).tag
        assert abs(info.loaded_at - time.time()) < 60
        with bpf.Fd(bpf.prog_get_fd_by_id(info.id)) as again:
            assert bpf.prog_info(again).id == info.id


def test_prog_test_run_counts_with_stats_enabled() -> None:
    with bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, name="t_stats")) as fd:
        before = bpf.prog_info(fd).run_cnt
        with bpf.Fd(bpf.enable_stats()):
            bpf.prog_test_run(fd, _frame(), repeat=1000)
        assert bpf.prog_info(fd).run_cnt - before >= 1000


def test_prog_load_rejection_carries_verifier_log() -> None:
    with pytest.raises(bpf.BpfError) as exc:
        bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, BAD_PROG, name="t_bad")
    assert exc.value.errno == errno.EACCES
    assert "R0 !read_ok" in exc.value.log
    assert exc.value.sentence == "BPF_PROG_LOAD t_bad: the verifier rejected the program"


def test_rcu_barrier_uses_membarrier() -> None:
    # MEMBARRIER_CMD_QUERY lists supported commands; GLOBAL (bit 0) must be one,
    # else rcu_barrier() silently degrades to a sleep.
    supported = bpf._syscall(
        bpf.ctypes.c_long(bpf._NR_MEMBARRIER), bpf.ctypes.c_int(0), bpf.ctypes.c_uint(0), bpf.ctypes.c_int(0)
    )
    assert supported > 0 and supported & bpf.MEMBARRIER_CMD_GLOBAL
    t0 = time.monotonic()
    bpf.rcu_barrier()
    assert time.monotonic() - t0 < 1.0


# --- links -----------------------------------------------------------------


def _reaches(ns: str, marker: bytes) -> bool:
    """Send one frame out of xv1; is it seen (after XDP) on xv0?"""
    frame = bytes.fromhex("ffffffffffff02000000000188b5") + marker
    with net.in_netns(ns):
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with rx, tx:
        rx.bind(("xv0", 0x88B5))
        tx.bind(("xv1", 0))
        tx.send(frame)
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([rx], [], [], left)[0]:
                break
            data, addr = rx.recvfrom(2048)
            if marker in data and addr[2] != socket.PACKET_OUTGOING:
                return True
    return False


def test_xdp_link_create_update_pin_detach(veth_ns: str, pin_dir: Path) -> None:
    ns = veth_ns
    pass_fd = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, expected_attach_type=bpf.BPF_XDP))
    drop_fd = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG, expected_attach_type=bpf.BPF_XDP))
    with pass_fd, drop_fd:
        index = net.ifindex("xv0", ns)
        # target_ifindex is resolved in the caller's network namespace.
        with net.in_netns(ns):
            link = bpf.Fd(bpf.link_create(int(pass_fd), index, bpf.BPF_XDP))
        with link:
            info = bpf.link_info(int(link))
            assert info.type == bpf.BPF_LINK_TYPE_XDP
            assert (info.ifindex, info.attach_type) == (index, bpf.BPF_XDP)
            assert info.prog_id == bpf.prog_info(int(pass_fd)).id
            assert _reaches(ns, b"pass-1")

            with net.in_netns(ns), pytest.raises(bpf.BpfError) as exc:
                bpf.link_create(int(drop_fd), index, bpf.BPF_XDP)
            assert exc.value.errno == errno.EBUSY
            assert exc.value.sentence.endswith("another XDP program is attached to this interface")

            path = str(pin_dir / "link")
            bpf.obj_pin(int(link), path)
            bpf.link_update(int(link), int(drop_fd), int(pass_fd), bpf.BPF_F_REPLACE)
            assert bpf.link_info(int(link)).prog_id == bpf.prog_info(int(drop_fd)).id
            assert not _reaches(ns, b"drop-1")
            # The program we claim to replace is no longer attached: refused.
            with pytest.raises(bpf.BpfError) as exc:
                bpf.link_update(int(link), int(pass_fd), int(pass_fd), bpf.BPF_F_REPLACE)
            assert exc.value.errno == errno.EPERM
            link_id = info.id
        # Our fd is closed but the pin holds the link: still attached.
        with bpf.Fd(bpf.link_get_fd_by_id(link_id)) as again:
            assert bpf.link_info(again).prog_id == bpf.prog_info(int(drop_fd)).id
        assert not _reaches(ns, b"drop-2")
        os.unlink(path)
        # Last pin and last fd gone: the link is released and XDP detached.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                bpf.Fd(bpf.link_get_fd_by_id(link_id)).close()
            except bpf.BpfError as e:
                assert e.errno == errno.ENOENT
                break
            time.sleep(0.01)
        else:
            pytest.fail("link still exists after its last pin and fd went away")
        assert _reaches(ns, b"pass-2")
        with net.in_netns(ns), bpf.Fd(bpf.link_create(int(pass_fd), index, bpf.BPF_XDP)):
            pass  # the device is free again


def test_link_detach_and_attach_type_mismatch(veth_ns: str) -> None:
    ns = veth_ns
    pass_fd = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, expected_attach_type=bpf.BPF_XDP))
    drop_plain = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG))  # expected_attach_type 0
    with pass_fd, drop_plain:
        index = net.ifindex("xv0", ns)
        with net.in_netns(ns):
            link = bpf.Fd(bpf.link_create(int(pass_fd), index, bpf.BPF_XDP, bpf.XDP_FLAGS_SKB_MODE))
        with link:
            with pytest.raises(bpf.BpfError) as exc:
                bpf.link_update(int(link), int(drop_plain))
            assert exc.value.errno == errno.EINVAL
            bpf.link_detach(int(link))
            assert bpf.link_info(int(link)).ifindex == 0  # defunct: no device any more
            with net.in_netns(ns), bpf.Fd(bpf.link_create(int(drop_plain), index, bpf.BPF_XDP)):
                assert not _reaches(ns, b"after-detach")


TC_PASS_PROG = bytes.fromhex("b700000000000000") + bytes.fromhex("9500000000000000")


def test_tcx_link_offsets(veth_ns: str) -> None:
    """tcx fields beyond the 6.1 header: relative_fd and expected_revision in
    link_create, attach_type in link_info.  Wrong offsets would make the
    kernel read zeros, and the refused attachments below would succeed."""
    ns = veth_ns

    def tc_prog(name: str) -> bpf.Fd:
        return bpf.Fd(
            bpf.prog_load(
                bpf.BPF_PROG_TYPE_SCHED_CLS, TC_PASS_PROG, expected_attach_type=bpf.BPF_TCX_EGRESS, name=name
            )
        )

    with tc_prog("t_tc1") as p1, tc_prog("t_tc2") as p2, tc_prog("t_tc_spare") as spare:
        index = net.ifindex("xv0", ns)
        with net.in_netns(ns), bpf.Fd(bpf.link_create(p1, index, bpf.BPF_TCX_EGRESS)) as link:
            info = bpf.link_info(link)
            assert info.type == bpf.BPF_LINK_TYPE_TCX
            assert (info.ifindex, info.attach_type, info.prog_id) == (
                index,
                bpf.BPF_TCX_EGRESS,
                bpf.prog_info(p1).id,
            )
            with pytest.raises(bpf.BpfError) as exc:  # anchor program is not attached
                bpf.link_create(p2, index, bpf.BPF_TCX_EGRESS, bpf.BPF_F_BEFORE, relative_fd=spare)
            assert exc.value.errno == errno.ENOENT
            with pytest.raises(bpf.BpfError) as exc:
                bpf.link_create(p2, index, bpf.BPF_TCX_EGRESS, expected_revision=999)
            assert exc.value.errno == errno.ESTALE
            with bpf.Fd(bpf.link_create(p2, index, bpf.BPF_TCX_EGRESS, bpf.BPF_F_BEFORE, relative_fd=p1)):
                pass


def test_link_create_on_missing_ifindex_is_explained() -> None:
    with bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, expected_attach_type=bpf.BPF_XDP)) as fd:
        with pytest.raises(bpf.BpfError) as exc:
            bpf.link_create(fd, 0x7FFFFFF0, bpf.BPF_XDP)
        # XDP links answer EINVAL, not ENODEV, for an unknown ifindex.
        assert exc.value.errno == errno.EINVAL
        assert "no interface with that index" in exc.value.sentence


def test_errno_sentences() -> None:
    op = "BPF_MAP_UPDATE_ELEM on in_src4"
    assert bpf.errno_sentence(errno.ENOSPC, op) == f"{op}: map is full"
    assert bpf.errno_sentence(errno.EPERM, op).endswith("needs root (CAP_BPF and CAP_NET_ADMIN)")
    assert bpf.errno_sentence(errno.ENODEV, "BPF_LINK_CREATE").endswith("no such interface")
    assert bpf.errno_sentence(bpf.ENOTSUPP, "BPF_MAP_DELETE_BATCH").endswith(
        "not supported by this kernel or driver"
    )
    err = bpf.BpfError(errno.ENOSPC, op)
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err) == f"{op}: No space left on device"
