"""The ctypes mirrors match bpf/include/xdpguard.h, checked by the C compiler.

A small C program including the header (and bpf/lib/parse.h, for the frame
parser's numbers) prints sizeof/offsetof of every mirrored struct and the
value of every constant; the test compares them with xdpguard/datapath/abi.py,
whose constants are every integer of xdpguard/rules/abi_consts.py.  The
match-field table (xdpguard/rules/fields.py) is checked against the maps
bpf/lib/maps.h pins and the lookups bpf/xdpguard.c makes.  No kernel
needed, only a host compiler and the kernel's UAPI headers.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from xdpguard.datapath import abi
from xdpguard.rules import abi_consts
from xdpguard.rules.compile import DirectionPlan
from xdpguard.rules.fields import ADDR, ADDR_ENTRIES, FIELD_NAMES, FIELDS, KEYED_FIELDS
from xdpguard.rules.model import Match
from xdpguard.rules.packet import Packet

CC = shutil.which("cc") or shutil.which("gcc")


# limit_table_size values whose slot-table line count the header and abi.py must agree on.
LIMIT_SIZES = (1024, 1025, 1027, 1028, 65536, 16 * 1024 * 1024)


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    if CC is None:
        pytest.skip("no host C compiler (cc/gcc) to read the header with")
    d = tmp_path_factory.mktemp("abi")
    # parse.h includes <uapi/linux/...> (bcc's layout) and byte-order helpers
    # of BPF programs: the host's /usr/include and no-ops do for its numbers.
    (d / "uapi").symlink_to("/usr/include")
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#define bpf_ntohs(x) (x)",
        "#define bpf_htons(x) (x)",
        '#include "include/xdpguard.h"',
        '#include "lib/parse.h"',
        "int main(void) {",
    ]
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
    for f in KEYED_FIELDS:
        size = _pinned_array_size(f.pin)
        if size is not None:  # (absent: test_keyed_fields_are_pinned_arrays fails)
            lines.append(f'printf("pin {f.pin} %llu\\n", (unsigned long long)({size}));')
    lines.append("return 0; }")
    src = d / "layout.c"
    src.write_text("\n".join(lines))
    exe = d / "layout"
    subprocess.run([CC, "-I", str(abi.BPF_DIR), "-I", str(d), "-o", str(exe), str(src)], check=True)
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


def test_every_shared_number_is_checked():
    from xdpguard.rules import abi_consts

    ints = {k for k, v in vars(abi_consts).items() if k.isupper() and type(v) is int}
    assert {f"XG_{k}" for k in ints} <= set(abi.CONSTANTS)
    assert {"XG_MAX_RULES", "XG_MAX_CONTINUE", "XG_MAX_EXT_HDRS", "XG_EV_SYNCOOKIE"} <= set(abi.CONSTANTS)


def test_dynamic_set_slots_match_header(c_layout):
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

    from xdpguard.rules import stride

    assert ctypes.sizeof(abi.Node) == stride.NODE_BYTES
    assert ctypes.sizeof(abi.SNode) == stride.SPARSE_BYTES
    assert abi.SNode.bound.offset == stride.SPARSE_BOUND_OFF
    assert stride.SPARSE_PER_NODE * stride.SPARSE_BYTES == stride.NODE_BYTES


@pytest.mark.parametrize("size", LIMIT_SIZES)
def test_src_lines_match_header(c_layout, size):
    assert c_layout[f"lines {size}"] == abi.src_lines(size)


def test_a_slot_line_is_one_cache_line():

    # One line is what a per-source lookup touches: it must not straddle two.
    assert ctypes.sizeof(abi.SrcLine) == 64
    assert abi.SRC_WAYS * ctypes.sizeof(abi.SrcSlot) == 64


# --------------------------------------------------------------------------
# the match-field table (xdpguard/rules/fields.py) against the C side


def _pinned_array_size(pin: str) -> str | None:
    """The entry count bpf/lib/maps.h gives the u32 -> u32 array pinned as `pin`, as C."""
    maps_h = (abi.BPF_DIR / "lib" / "maps.h").read_text()
    m = re.search(rf'BPF_TABLE_PINNED\("array", __u32, __u32, xg_{pin}, ([^,]+), XG_PIN\("{pin}"\)\)', maps_h)
    return m.group(1) if m else None


def _f_const(num: int) -> str:
    """The F_* name of field number num."""
    return next(k for k, v in vars(abi_consts).items() if k.startswith("F_") and v == num)


def test_field_table_is_in_field_number_order():
    assert [f.num for f in FIELDS] == list(range(1, abi.NFIELDS))
    assert len(FIELD_NAMES) == abi.NFIELDS
    assert len({f.name for f in FIELDS}) == len(FIELDS)


@pytest.mark.parametrize("f", KEYED_FIELDS, ids=lambda f: f.name)
def test_keyed_fields_are_pinned_arrays(c_layout, f):
    """maps.h pins the field's array under the table's name, with its key space per half."""
    assert _pinned_array_size(f.pin) is not None, f"bpf/lib/maps.h has no pinned array xg_{f.pin}"
    assert c_layout[f"pin {f.pin}"] == abi.NHALVES * f.space


@pytest.mark.parametrize("f", KEYED_FIELDS, ids=lambda f: f.name)
def test_program_looks_keyed_fields_up_in_their_map(f):
    """bpf/xdpguard.c reads the field's map at half * (its key space) and
    uses the value as the field's bitmap-table index."""
    prog = (abi.BPF_DIR / "xdpguard.c").read_text()
    fc = f"XG_{_f_const(f.num)}"
    m = re.search(
        rf"__u32 k = half \* (XG_\w+)[^;]*;\s*v = xg_{f.pin}\.lookup\(&k\);[^}}]*xg_bm\(cfg, {fc}, \*v\)",
        prog,
    )
    assert m is not None, f"no lookup of xg_{f.pin} for {fc} in bpf/xdpguard.c"
    assert abi.CONSTANTS[m.group(1)] == f.space


def test_address_fields_are_the_address_tables():
    assert {f.pin for f in FIELDS if f.layout == ADDR} == {"addrs"}
    assert 'XG_PIN("addrs")' in (abi.BPF_DIR / "lib" / "maps.h").read_text()
    assert len(ADDR_ENTRIES) * abi.NHALVES == abi.ADDR_TABLES


def test_field_table_names_python_attributes():
    plan_attrs = DirectionPlan.__dataclass_fields__
    for f in FIELDS:
        assert f.match in Match.__dataclass_fields__, f.name
        assert hasattr(Packet(kind="ip"), f.packet), f.name
        assert f.pin in plan_attrs or f.layout == ADDR, f.name
    for name, _, _ in ADDR_ENTRIES:
        assert name in plan_attrs
