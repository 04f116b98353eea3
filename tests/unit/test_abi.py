"""The ctypes mirrors match bpf/include/xdpguard.h, checked by the C compiler.

A small C program including the header prints sizeof/offsetof of every
mirrored struct and the value of every constant; the test compares them
with xdpguard/datapath/abi.py.  No kernel needed, only a host compiler.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from xdpguard.datapath import abi

CC = shutil.which("cc") or shutil.which("gcc")


# limit_table_size values whose slot-table line count the header and abi.py must agree on.
LIMIT_SIZES = (1024, 1025, 1027, 1028, 65536, 16 * 1024 * 1024)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    if CC is None:
        pytest.skip("no host C compiler (cc/gcc) to read the header with")
    d = tmp_path_factory.mktemp("abi")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "include/xdpguard.h"', "int main(void) {"]
    for cname, cls in abi.MIRRORS.items():
        lines.append(f'printf("size {cname} %zu\\n", sizeof(struct {cname}));')
        for fname, *_ in cls._fields_:
            lines.append(f'printf("off {cname}.{fname} %zu\\n", offsetof(struct {cname}, {fname}));')
    for const in abi.CONSTANTS:
        lines.append(f'printf("const {const} %llu\\n", (unsigned long long)({const}));')
    for size in LIMIT_SIZES:
        lines.append(f'printf("lines {size} %d\\n", (int)XG_SRC_LINES({size}));')
    for half in range(abi.NHALVES):
        for fld in (abi.F_SRC, abi.F_DST):
            for v6 in (0, 1):
                lines.append(f'printf("table {half}.{fld}.{v6} %d\\n", XG_ADDR_TABLE({half}, {fld}, {v6}));')
    for half in range(abi.NHALVES):
        lines.append(f'printf("dynslot {half} %d\\n", XG_DYN_SLOT({half}, 5));')
    lines.append("return 0; }")
    src = d / "layout.c"
    src.write_text("\n".join(lines))
    exe = d / "layout"
    subprocess.run([CC, "-I", str(abi.BPF_DIR), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


@pytest.mark.parametrize("cname", sorted(abi.MIRRORS))
def test_struct_layout(c_layout, cname):
    cls = abi.MIRRORS[cname]
    assert c_layout[f"size {cname}"] == __import__("ctypes").sizeof(cls)
    for fname, *_ in cls._fields_:
        assert c_layout[f"off {cname}.{fname}"] == getattr(cls, fname).offset, fname


@pytest.mark.parametrize("const", sorted(abi.CONSTANTS))
def test_constants(c_layout, const):
    assert c_layout[f"const {const}"] == abi.CONSTANTS[const]


def test_compiler_field_numbers_match_abi():
    from xdpguard.rules import compile as comp

    assert (
        comp.F_EXTRA,
        comp.F_SRC,
        comp.F_DST,
        comp.F_PROTO,
        comp.F_SPORT,
        comp.F_DPORT,
        comp.F_TFLAGS,
        comp.F_ICMP,
    ) == (abi.F_EXTRA, abi.F_SRC, abi.F_DST, abi.F_PROTO, abi.F_SPORT, abi.F_DPORT, abi.F_TFLAGS, abi.F_ICMP)
    assert comp.MAX_WORDS == abi.MAX_WORDS
    assert comp.MAX_BITMAPS == abi.MAX_BITMAPS
    # The rule language's limit is the data plane's: rules, groups, blocks.
    assert comp.MAX_RULES == abi.MAX_RULES
    assert (comp.GROUP_RULES, comp.GROUP_WORDS, comp.MAX_GROUPS) == (
        abi.GROUP_RULES,
        abi.GROUP_WORDS,
        abi.MAX_GROUPS,
    )
    assert comp.MAX_BLOCKS == abi.MAX_BLOCKS
    assert comp.BLOCK_VALUE_SIZE == ctypes.sizeof(abi.Bitmap)
    assert comp.TOP_VALUE_SIZE == ctypes.sizeof(abi.Top)
    assert comp.RULE_VALUE_SIZE == ctypes.sizeof(abi.RuleEntry)


def test_dynamic_set_limits_match_abi(c_layout):
    from xdpguard.rules import model

    assert (model.MAX_DYNSETS, model.MAX_DYNREFS, model.MAX_DYNGROUPS) == (
        abi.MAX_DYNSETS,
        abi.MAX_DYNREFS,
        abi.MAX_DYNGROUPS,
    )
    for half in range(abi.NHALVES):
        assert abi.dyn_slot(half, 5) == c_layout[f"dynslot {half}"]


def test_address_table_slots_match_header(c_layout):
    seen = set()
    for half in range(abi.NHALVES):
        for fld in (abi.F_SRC, abi.F_DST):
            for v6 in (False, True):
                slot = abi.addr_table(half, fld, v6)
                assert c_layout[f"table {half}.{fld}.{int(v6)}"] == slot
                seen.add(slot)
    assert seen == set(range(abi.ADDR_TABLES))


def test_node_layout_is_what_the_table_builder_writes():
    import ctypes

    from xdpguard.rules import stride

    assert ctypes.sizeof(abi.Node) == stride.NODE_BYTES
    assert ctypes.sizeof(abi.SNode) == stride.SPARSE_BYTES
    assert abi.SNode.bound.offset == stride.SPARSE_BOUND_OFF
    assert stride.SPARSE_PER_NODE * stride.SPARSE_BYTES == stride.NODE_BYTES


@pytest.mark.parametrize("size", LIMIT_SIZES)
def test_src_lines_match_header(c_layout, size):
    assert c_layout[f"lines {size}"] == abi.src_lines(size)


def test_a_slot_line_is_one_cache_line():
    import ctypes

    # One line is what a per-source lookup touches: it must not straddle two.
    assert ctypes.sizeof(abi.SrcLine) == 64
    assert abi.SRC_WAYS * ctypes.sizeof(abi.SrcSlot) == 64
