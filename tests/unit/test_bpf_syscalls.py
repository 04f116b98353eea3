"""The bpf(2) calls of xdpguard/datapath/bpf.py, as root against the running
kernel: maps of every type xdpguard uses, batches and their fallback, pins,
program load and test runs, and XDP and tcx links on a veth in a throw-away
network namespace.  Skipped without root or bpffs, with the reason printed.

The structs libbpf takes are checked in test_libbpf.py, the errno sentences
in test_bpferror.py, the tcx probe in test_probes.py.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import select
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bpfcalls import kernel, refusal
from xdpguard import net
from xdpguard.datapath import bpf, libbpf

U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
XDP_PASS_PROG = bytes.fromhex("b7000000020000009500000000000000")  # r0 = XDP_PASS; exit
XDP_DROP_PROG = bytes.fromhex("b7000000010000009500000000000000")
TC_PASS_PROG = bytes.fromhex("b7000000000000009500000000000000")
BAD_PROG = bytes.fromhex("9500000000000000")  # exit with r0 unset: the verifier must refuse it
_counter = itertools.count()


def lpm(prefix: str) -> bytes:
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
    net.create_netns(name)
    try:
        net.create_veth_pair("xv0", name, "xv1", name)
        yield name
    finally:
        net.delete_netns(name)


# --- maps ------------------------------------------------------------------


@kernel
def test_array_percpu_hash_and_lpm_maps() -> None:
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 16, name="t_array")) as fd:
        bpf.map_update(fd, U32.pack(3), U64.pack(0xDEADBEEF))
        assert bpf.map_lookup(fd, U32.pack(3), 8) == U64.pack(0xDEADBEEF)
        assert bpf.map_lookup(fd, U32.pack(4), 8) == bytes(8)  # preallocated, zeroed
        assert bpf.map_lookup(fd, U32.pack(16), 8) is None  # out of range reads as absent
        assert [U32.unpack(k)[0] for k in bpf.map_iter_keys(fd, 4)] == list(range(16))
        e = refusal(bpf.map_delete, fd, U32.pack(3))  # array slots cannot be deleted
        assert e.errno == errno.EINVAL and "BPF_MAP_DELETE_ELEM on t_array" in str(e)
        e = refusal(bpf.map_update, fd, U32.pack(99), U64.pack(1))
        assert e.sentence == "BPF_MAP_UPDATE_ELEM on t_array: map is full"
    n = bpf.ncpus()
    assert n >= (os.cpu_count() or 1) and bpf.percpu_value_size(4) == n * 8  # 4 bytes padded to 8
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 4, name="t_pcpu")) as fd:
        values = [U32.pack(100 + cpu) for cpu in range(n)]
        bpf.map_update(fd, U32.pack(1), bpf.join_percpu(values, 4))
        assert bpf.split_percpu(bpf.map_lookup(fd, U32.pack(1), n * 8) or b"", 4) == values
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 2, name="t_hash")) as fd:
        assert bpf.map_get_next_key(fd, None, 4) is None  # empty
        bpf.map_update(fd, U32.pack(1), U32.pack(10), bpf.BPF_NOEXIST)
        assert refusal(bpf.map_update, fd, U32.pack(1), U32.pack(11), bpf.BPF_NOEXIST).errno == errno.EEXIST
        assert refusal(bpf.map_update, fd, U32.pack(2), U32.pack(20), bpf.BPF_EXIST).errno == errno.ENOENT
        bpf.map_update(fd, U32.pack(2), U32.pack(20))
        assert sorted(bpf.map_iter_keys(fd, 4)) == [U32.pack(1), U32.pack(2)]
        e = refusal(bpf.map_update, fd, U32.pack(3), U32.pack(0))
        assert e.errno == errno.E2BIG and e.sentence.endswith("map is full")
        assert bpf.map_delete(fd, U32.pack(1)) is True and bpf.map_delete(fd, U32.pack(1)) is False
        assert bpf.map_lookup(fd, U32.pack(1), 4) is None
        assert bpf.map_lookup(fd, U32.pack(2), 4) == U32.pack(20)
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 64, bpf.BPF_F_NO_PREALLOC, "t_lpm")) as fd:
        bpf.map_update(fd, lpm("10.0.0.0/8"), U32.pack(1))
        bpf.map_update(fd, lpm("10.1.0.0/16"), U32.pack(2))
        assert bpf.map_lookup(fd, lpm("10.1.2.3/32"), 4) == U32.pack(2)
        assert bpf.map_lookup(fd, lpm("11.0.0.1/32"), 4) is None
        info = bpf.map_info(fd)
        assert (info.type, info.key_size, info.value_size, info.max_entries) == (11, 8, 4, 64)
        assert info.map_flags & bpf.BPF_F_NO_PREALLOC and info.name == "t_lpm" and info.id > 0
    with pytest.raises(OSError) as os_exc:
        os.fstat(fd)  # Fd closed it
    assert os_exc.value.errno == errno.EBADF
    e = refusal(bpf.map_create, bpf.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 16, 0, "t_bad")  # LPM needs NO_PREALLOC
    assert e.errno == errno.EINVAL and str(e).startswith("BPF_MAP_CREATE t_bad type 11: ")
    with pytest.raises(ValueError):
        bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="a_name_longer_than_15")


@kernel
def test_array_of_maps_with_inner_of_other_size() -> None:
    template = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 8, bpf.BPF_F_INNER_MAP, "t_tmpl"))
    outer = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 2, 0, "t_outer", int(template)))
    big = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1000, bpf.BPF_F_INNER_MAP, "t_inner"))
    plain = bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, 1000, 0, "t_plain"))
    with template, outer, big, plain:
        bpf.map_update(int(big), U32.pack(999), U64.pack(42))
        bpf.map_update(int(outer), U32.pack(1), U32.pack(int(big)))
        # Reading a slot from user space gives the inner map's id, not an fd.
        inner_id = U32.unpack(bpf.map_lookup(int(outer), U32.pack(1), 4) or b"")[0]
        assert inner_id == bpf.map_info(int(big)).id
        with bpf.Fd(bpf.map_get_fd_by_id(inner_id, bpf.BPF_F_RDONLY)) as again:
            assert (bpf.map_info(again).max_entries, bpf.map_info(again).name) == (1000, "t_inner")
            assert bpf.map_lookup(again, U32.pack(999), 8) == U64.pack(42)
            assert refusal(bpf.map_update, again, U32.pack(1), U64.pack(1)).errno == errno.EPERM  # read-only
        # Without BPF_F_INNER_MAP the inner map's size must match the template's.
        assert refusal(bpf.map_update, int(outer), U32.pack(0), U32.pack(int(plain))).errno == errno.EINVAL


# --- batches ---------------------------------------------------------------

BATCH_TYPES = {  # name: (map type, key size, flags)
    "array": (bpf.BPF_MAP_TYPE_ARRAY, 4, 0),
    "percpu_array": (bpf.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 0),
    "hash": (bpf.BPF_MAP_TYPE_HASH, 4, 0),
    "lpm_trie": (bpf.BPF_MAP_TYPE_LPM_TRIE, 8, bpf.BPF_F_NO_PREALLOC),
}


@kernel
@pytest.mark.parametrize("force_fallback", [False, True], ids=["kernel-batch", "per-element"])
@pytest.mark.parametrize("name", BATCH_TYPES)
def test_batch_roundtrip(name: str, force_fallback: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if force_fallback:
        for fn in ("bpf_map_lookup_batch", "bpf_map_update_batch", "bpf_map_delete_batch"):
            monkeypatch.setattr(libbpf.lib(), fn, lambda *_: -bpf.ENOTSUPP)
    map_type, key_size, flags = BATCH_TYPES[name]
    n = 20000
    vsize = bpf.percpu_value_size(8) if map_type in bpf.PERCPU_MAP_TYPES else 8
    if key_size == 8:
        keys = [U32.pack(32) + struct.pack("!I", 0x0A000000 + i * 7) for i in range(n)]
    else:
        keys = [U32.pack(i) for i in range(n)]
    values = [U64.pack(i * 3 + 1) * (vsize // 8) for i in range(n)]
    with bpf.Fd(bpf.map_create(map_type, key_size, 8, n, flags, "t_batch")) as fd:
        # chunk smaller than n so the cursor handling is exercised
        assert bpf.map_update_batch(fd, keys, values, chunk=3000) == n
        pairs = bpf.map_lookup_batch(fd, key_size, vsize, chunk=3000)
        assert dict(pairs) == dict(zip(keys, values, strict=True))
        if map_type != bpf.BPF_MAP_TYPE_HASH:  # a key is the cursor (hash maps: a bucket)
            part = bpf.map_lookup_batch(fd, key_size, vsize, chunk=3000, after=pairs[99][0], limit=7000)
            assert part == pairs[100:7100]
        if map_type in (bpf.BPF_MAP_TYPE_ARRAY, bpf.BPF_MAP_TYPE_PERCPU_ARRAY):
            return
        gone = keys[: n // 2]
        missing = [U32.pack(32) + bytes(4)] if key_size == 8 else [U32.pack(n + 5)]
        assert bpf.map_delete_batch(fd, gone[:100] + missing + gone[100:]) == n // 2
        assert sorted(dict(bpf.map_lookup_batch(fd, key_size, vsize))) == sorted(keys[n // 2 :])


@kernel
@pytest.mark.parametrize("force_fallback", [False, True], ids=["kernel-batch", "per-element"])
def test_batch_update_reports_progress_when_full(
    force_fallback: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if force_fallback:
        monkeypatch.setattr(libbpf.lib(), "bpf_map_update_batch", lambda *_: -bpf.ENOTSUPP)
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 10, name="t_small")) as fd:
        keys = [U32.pack(i) for i in range(20)]
        e = refusal(bpf.map_update_batch, fd, keys, keys)
        assert e.errno == errno.E2BIG and "after 10 of 20" in str(e) and "t_small" in str(e)
        assert bpf.map_update_batch_partial(fd, keys, keys, bpf.BPF_NOEXIST) == (0, errno.EEXIST)
        assert bpf.map_update_batch_partial(fd, keys[10:], keys[10:]) == (0, errno.E2BIG)


# --- pins and programs -----------------------------------------------------


@kernel
def test_pin_and_get(pin_dir: Path) -> None:
    path = str(pin_dir / "m")
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_HASH, 4, 4, 4, name="t_pinned")) as fd:
        bpf.map_update(fd, U32.pack(7), U32.pack(70))
        bpf.obj_pin(fd, path)
        e = refusal(bpf.obj_pin, fd, path)
        assert e.errno == errno.EEXIST and "already pinned" in e.sentence
        map_id = bpf.map_info(fd).id
    with bpf.Fd(bpf.obj_get(path)) as again:  # the pin keeps the map alive
        assert bpf.map_info(again).id == map_id and bpf.map_lookup(again, U32.pack(7), 4) == U32.pack(70)
    with bpf.Fd(bpf.obj_get(path, bpf.BPF_F_RDONLY)) as ro:
        assert refusal(bpf.map_update, ro, U32.pack(8), U32.pack(80)).errno == errno.EPERM
    os.unlink(path)
    assert refusal(bpf.obj_get, path).sentence == f"BPF_OBJ_GET at {path}: nothing is pinned at that path"
    assert refusal(bpf.map_get_fd_by_id, map_id).errno == errno.ENOENT  # last reference gone: freed


FRAME = bytes.fromhex("ffffffffffff0200000000010800") + bytes(50)


@kernel
def test_prog_load_test_run_info_and_stats() -> None:
    with (
        bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, name="t_pass")) as passing,
        bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG, name="t_drop")) as dropping,
    ):
        res = bpf.prog_test_run(passing, FRAME)
        assert (res.retval, res.data_out) == (bpf.XDP_PASS, FRAME)
        assert bpf.prog_test_run(dropping, FRAME, repeat=100).retval == bpf.XDP_DROP
        info = bpf.prog_info(passing)
        assert info.type == bpf.BPF_PROG_TYPE_XDP and info.name == "t_pass" and info.id > 0
        assert len(info.tag) == 16 and info.tag != bpf.prog_info(dropping).tag
        assert abs(info.loaded_at - time.time()) < 60 and info.verified_insns == 2
        assert bpf.prog_map_ids(passing) == []
        with bpf.Fd(bpf.prog_get_fd_by_id(info.id)) as again:
            assert bpf.prog_info(again).id == info.id
        with bpf.Fd(bpf.enable_stats()):
            bpf.prog_test_run(passing, FRAME, repeat=1000)
        assert bpf.prog_info(passing).run_cnt - info.run_cnt >= 1000
        # An xdp_md context in and out: the frame's ingress ifindex 1 (lo) is kept.
        ctx = struct.pack("=6I", 0, len(FRAME), 0, 1, 0, 0)
        assert bpf.prog_test_run(passing, FRAME, ctx=ctx).ctx_out == ctx
    e = refusal(bpf.prog_load, bpf.BPF_PROG_TYPE_XDP, BAD_PROG, name="t_bad")
    assert e.errno == errno.EACCES and "R0 !read_ok" in e.log
    assert e.sentence == "BPF_PROG_LOAD t_bad: the verifier rejected the program"


# --- links -----------------------------------------------------------------


def _reaches(ns: str, marker: bytes) -> bool:
    """Send one frame out of xv1; is it seen (after XDP) on xv0?"""
    with net.in_netns(ns):
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    with rx, tx:
        rx.bind(("xv0", 0x88B5))
        tx.bind(("xv1", 0))
        tx.send(bytes.fromhex("ffffffffffff02000000000188b5") + marker)
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0 and select.select([rx], [], [], left)[0]:
            data, addr = rx.recvfrom(2048)
            if marker in data and addr[2] != socket.PACKET_OUTGOING:
                return True
    return False


@kernel
def test_xdp_link_create_update_pin_detach(veth_ns: str, pin_dir: Path) -> None:
    ns = veth_ns
    pass_fd = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, expected_attach_type=bpf.BPF_XDP))
    drop_fd = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG, expected_attach_type=bpf.BPF_XDP))
    plain = bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_XDP, XDP_DROP_PROG))  # expected_attach_type 0
    with pass_fd, drop_fd, plain:
        index = net.ifindex("xv0", ns)
        with net.in_netns(ns):  # target_ifindex is resolved in the caller's namespace
            link = bpf.Fd(bpf.link_create(int(pass_fd), index, bpf.BPF_XDP))
        with link:
            info = bpf.link_info(int(link))
            assert (info.type, info.ifindex, info.attach_type) == (bpf.BPF_LINK_TYPE_XDP, index, bpf.BPF_XDP)
            assert info.prog_id == bpf.prog_info(int(pass_fd)).id and _reaches(ns, b"pass-1")
            with net.in_netns(ns):
                e = refusal(bpf.link_create, int(drop_fd), index, bpf.BPF_XDP)
            assert e.errno == errno.EBUSY and "another XDP program" in e.sentence
            bpf.obj_pin(int(link), str(pin_dir / "link"))
            bpf.link_update(int(link), int(drop_fd), int(pass_fd), bpf.BPF_F_REPLACE)
            assert bpf.link_info(int(link)).prog_id == bpf.prog_info(int(drop_fd)).id
            assert not _reaches(ns, b"drop-1")
            # The program we claim to replace is gone; expected_attach_type 0 next to BPF_XDP.
            e = refusal(bpf.link_update, int(link), int(pass_fd), int(pass_fd), bpf.BPF_F_REPLACE)
            assert e.errno == errno.EPERM
            assert refusal(bpf.link_update, int(link), int(plain)).errno == errno.EINVAL
        # Our fd is closed but the pin holds the link: still attached.
        with bpf.Fd(bpf.link_get_fd_by_id(info.id)) as again:
            assert bpf.link_info(again).prog_id == bpf.prog_info(int(drop_fd)).id
            assert not _reaches(ns, b"drop-2")
            bpf.link_detach(again)  # detaches now, although the pin is still there
            assert bpf.link_info(again).ifindex == 0 and _reaches(ns, b"pass-2")
        os.unlink(pin_dir / "link")
        e = refusal(bpf.link_create, int(pass_fd), 0x7FFFFFF0, bpf.BPF_XDP)
        assert e.errno == errno.EINVAL and "no interface with that index" in e.sentence


@kernel
def test_tcx_links_through_libbpf(veth_ns: str) -> None:
    """libbpf 1.1 predates tcx: attach type 47 and its flags pass through it unchanged."""

    def tc_prog(name: str) -> bpf.Fd:
        return bpf.Fd(bpf.prog_load(bpf.BPF_PROG_TYPE_SCHED_CLS, TC_PASS_PROG, name=name))

    with tc_prog("t_tc1") as p1, tc_prog("t_tc2") as p2, net.in_netns(veth_ns):
        index = net.ifindex("xv0", veth_ns)
        with bpf.Fd(bpf.link_create(p1, index, bpf.BPF_TCX_EGRESS)) as link:
            info = bpf.link_info(link)
            assert (info.type, info.ifindex, info.attach_type, info.prog_id) == (
                bpf.BPF_LINK_TYPE_TCX, index, bpf.BPF_TCX_EGRESS, bpf.prog_info(p1).id,
            )  # fmt: skip
            # The flags reach the kernel: "before the program with id 0" names no program.
            e = refusal(bpf.link_create, p2, index, bpf.BPF_TCX_EGRESS, bpf.BPF_F_BEFORE | bpf.BPF_F_ID)
            assert e.errno == errno.ENOENT
            with bpf.Fd(bpf.link_create(p2, index, bpf.BPF_TCX_EGRESS)) as second:
                assert bpf.link_info(second).prog_id == bpf.prog_info(p2).id
