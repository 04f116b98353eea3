"""Linking and loading a program with a global function (xdpguard/datapath/loader.py
and the BTF it is loaded with, xdpguard/datapath/btf.py), and ranged
batch reads of array maps.

link_function is pure and always tested.  Loading and map reads need root
and bpf(2); without them those tests are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import random
import struct

import pytest

from xdpguard.datapath import abi, bpf, btf
from xdpguard.datapath import maps as M
from xdpguard.datapath.loader import link_functions
from xdpguard.errors import KernelError


def ins(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


EXIT = ins(0x95)
# main: *(u32 *)(r10 - 4) = 2; r1 = r10 - 4; call <function> (unrelocated, as bcc leaves it); exit
MAIN = (
    ins(0xB7, dst=2, imm=2)
    + ins(0x63, dst=10, src=2, off=-4)
    + ins(0xBF, dst=1, src=10)
    + ins(0x07, dst=1, imm=-4)
    + ins(0x85, src=1, imm=-1)
    + EXIT
)
# function(arg): r0 = 1 (XDP_DROP); if (arg) r0 = *(u32 *)arg; exit
FUNC = ins(0xB7, dst=0, imm=1) + ins(0x15, dst=1, off=1) + ins(0x61, dst=0, src=1) + EXIT


def _needs_bpf() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(2): CAP_BPF)")


# middle of a chain: pass the argument on to the next function
RELAY = ins(0x85, src=1, imm=-1) + EXIT


def _target(code: bytes, at: int) -> int:
    op, regs, _, imm = struct.unpack_from("<BBhi", code, at * 8)
    assert (op, regs >> 4) == (0x85, 1)
    return at + 1 + imm


def test_link_functions_points_each_call_at_the_next_function():
    code, starts = link_functions(MAIN, [FUNC])
    assert starts == [len(MAIN) // 8] and code[len(MAIN) :] == FUNC
    assert _target(code, 4) == starts[0]  # the call's target: the function's first instruction
    code, starts = link_functions(MAIN, [RELAY, FUNC])
    assert starts == [6, 8]
    assert _target(code, 4) == 6 and _target(code, 6) == 8


def test_link_functions_refuses_what_it_cannot_link():
    with pytest.raises(KernelError, match="does not call"):
        link_functions(MAIN[: 4 * 8] + EXIT, [FUNC])
    with pytest.raises(KernelError, match="calls another function"):
        link_functions(MAIN, [RELAY])
    relocated = MAIN[: 4 * 8] + ins(0x85, src=1, imm=3) + EXIT
    with pytest.raises(KernelError, match="already relocated"):
        link_functions(relocated, [FUNC])


def test_program_with_a_global_function_loads_and_runs():
    _needs_bpf()
    code, (relay, start) = link_functions(MAIN, [RELAY, FUNC])
    fd = btf.prog_load_functions(
        bpf.BPF_PROG_TYPE_XDP,
        "xgt_linked",
        code,
        [(0, "xgt_linked", 0), (relay, "xgt_relay", 4), (start, "xgt_func", 4)],
    )
    try:
        # The last function read the 2 (XDP_PASS) main stored: both calls
        # reached their targets, with the argument.
        assert bpf.prog_test_run(fd, bytes(64)).retval == bpf.XDP_PASS
    finally:
        os.close(fd)


def test_global_function_reading_past_its_argument_is_refused_with_the_log():
    _needs_bpf()
    reads_too_far = ins(0xB7, dst=0, imm=1) + ins(0x15, dst=1, off=1) + ins(0x61, dst=0, src=1, off=4) + EXIT
    code, (start,) = link_functions(MAIN, [reads_too_far])
    with pytest.raises(bpf.BpfError) as e:
        btf.prog_load_functions(bpf.BPF_PROG_TYPE_XDP, "xgt_bad", code, [(0, "xgt_bad", 0), (start, "f", 4)])
    assert "processed" in e.value.log  # the verifier's log comes with the error


def test_map_lookup_range_reads_across_batches():
    _needs_bpf()
    n = 20000  # more than one batch of 8192
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 8, n)) as fd:
        keys = [struct.pack("<I", i) for i in range(n)]
        bpf.map_update_batch(fd, keys, [struct.pack("<Q", i * 3) for i in range(n)])
        for start, count in ((0, 5), (0, n), (1, 9000), (8191, 8194), (n - 3, 3)):
            got = bpf.map_lookup_range(fd, start, count, 8)
            assert [struct.unpack("<Q", v)[0] for v in got] == [i * 3 for i in range(start, start + count)]
        with pytest.raises(bpf.BpfError):
            bpf.map_lookup_range(fd, n - 3, 4, 8)  # past the end
        # The same values back to back, as one bytes object.
        for start, count in ((0, n), (8191, 8194), (n - 1, 1)):
            raw = bpf.map_lookup_array(fd, start, count, 8)
            assert raw == b"".join(struct.pack("<Q", i * 3) for i in range(start, start + count))
        with pytest.raises(bpf.BpfError):
            bpf.map_lookup_array(fd, 0, n + 1, 8)


def test_all_slots_reads_every_top_entry_column_by_column():
    rng = random.Random(5)
    entries = []
    for _ in range(500):
        groups = rng.getrandbits(abi.MAX_GROUPS) if rng.random() < 0.8 else 0
        entries.append(M.top_bytes(groups, [rng.randrange(1 << 20) for _ in range(groups.bit_count())]))
    raw = b"".join(entries)
    want = {s for i in range(len(entries)) for s in M._top_slots(raw, i)}
    assert M._all_slots(raw) == want


def test_differing_finds_the_values_a_map_does_not_hold():
    want = [bytes([i]) * 4 for i in range(10)]
    now = b"".join(want) + b"\xff" * 8  # a map may hold more than the plan's values
    assert M._differing(now, want) == []
    changed = now[:8] + b"\x00\x00\x00\x01" + now[12:]
    assert M._differing(changed, want) == [2]
    assert M._differing(b"", want) == list(range(10))


def test_read_rule_slots_gives_each_rule_id_and_slot():
    _needs_bpf()
    size = ctypes.sizeof(abi.RuleEntry)
    n = 3000
    with bpf.Fd(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, size, 2 * abi.MAX_RULES)) as fd:
        entries = [abi.RuleEntry(rule_id=(1 << 63) + i * 7, slot=8 + i, action=1, flags=3) for i in range(n)]
        keys = [struct.pack("=I", abi.MAX_RULES + i) for i in range(n)]
        bpf.map_update_batch(fd, keys, [bytes(e) for e in entries])
        got = M.read_rule_slots({"rules": fd}, 1, n)  # type: ignore[dict-item]
        assert got == [(e.rule_id, e.slot) for e in entries]
        assert got == [(e.rule_id, e.slot) for e in M.read_rules({"rules": fd}, 1, n)]  # type: ignore[dict-item]
