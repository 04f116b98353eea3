"""libbpf's C interface as xdpguard declares it (xdpguard/datapath/libbpf.py):
the option and info structs against the C headers, and what a missing
libbpf.so.1 tells the operator.  Needs only a C compiler, no root.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xdpguard.datapath import bpf, libbpf
from xdpguard.datapath.bpferror import BpfError

# (ctypes struct, C type, {our field: C field} where the names differ, None
# for fields newer than Debian's 6.1 UAPI header, checked by the kernel tests)
LAYOUTS = [
    (libbpf.MapCreateOpts, "struct bpf_map_create_opts", {}),
    (libbpf.BatchOpts, "struct bpf_map_batch_opts", {}),
    (libbpf.FlagsOpts, "struct bpf_obj_get_opts", {"flags": "file_flags"}),
    (libbpf.FlagsOpts, "struct bpf_get_fd_by_id_opts", {"flags": "open_flags"}),
    (libbpf.FlagsOpts, "struct bpf_link_create_opts", {}),
    (libbpf.LinkUpdateOpts, "struct bpf_link_update_opts", {}),
    (libbpf.ProgLoadOpts, "struct bpf_prog_load_opts", {}),
    (libbpf.TestRunOpts, "struct bpf_test_run_opts", {}),
    (libbpf.MapInfoStruct, "struct bpf_map_info", {}),
    (libbpf.ProgInfoStruct, "struct bpf_prog_info", {}),
    (libbpf.LinkInfoStruct, "struct bpf_link_info", {"ifindex": "xdp.ifindex", "attach_type": None}),
]


def test_structs_match_libbpf_and_uapi_headers(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not os.path.exists("/usr/include/bpf/bpf.h"):
        pytest.skip("needs a C compiler and <bpf/bpf.h> (Debian packages gcc, libbpf-dev)")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <bpf/bpf.h>", "int main(void) {"]
    expected: list[tuple[str, int, str]] = []
    for cls, ctype, renames in LAYOUTS:
        for field, *_ in cls._fields_:
            c_field = renames.get(field, field)
            if field.startswith("_") or c_field is None:
                continue
            lines.append(f'printf("%zu\\n", offsetof({ctype}, {c_field}));')
            expected.append((f"{ctype}.{c_field}", getattr(cls, field).offset, "=="))
        # Our structs are prefixes: never longer than the real one.
        lines.append(f'printf("%zu\\n", sizeof({ctype}));')
        expected.append((f"sizeof({ctype})", ctypes.sizeof(cls), "<="))
    (tmp_path / "layout.c").write_text("\n".join(lines + ["return 0; }"]))
    subprocess.run([cc, "-o", str(tmp_path / "layout"), str(tmp_path / "layout.c")], check=True)
    out = subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout
    for (label, ours, cmp), theirs in zip(expected, map(int, out.split()), strict=True):
        assert ours == theirs if cmp == "==" else ours <= theirs, f"{label}: ours {ours}, C {theirs}"


def test_missing_libbpf_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_library(name: str, **_: object) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    libbpf.lib.cache_clear()
    monkeypatch.setattr(libbpf.ctypes, "CDLL", no_such_library)
    try:
        with pytest.raises(BpfError) as exc:
            bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1)
    finally:
        libbpf.lib.cache_clear()
    assert "install the Debian package libbpf1" in exc.value.sentence
