"""BTF for programs made of several functions, built with libbpf's btf__ API.

The verifier checks a *global* function once, on its own, instead of at
every call for every path that reaches it.  Which functions are global, and
where each starts, is said by the program's BTF (func_info); bcc 0.26 only
passes BTF for the program function itself, so datapath/loader.py links the
functions and loads the program here: each function is declared as
`int name(struct name_arg *arg)`, the BTF is loaded into the kernel and
bpf.prog_load() passes it with one func_info record per function.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Sequence

from xdpguard.datapath import bpf as B
from xdpguard.datapath import libbpf as L

BTF_INT_SIGNED = 1
BTF_FUNC_STATIC, BTF_FUNC_GLOBAL = 0, 1


def prog_load_functions(
    prog_type: int,
    name: str,
    insns: bytes,
    funcs: Sequence[tuple[int, str, int]],
    license: str = "GPL",
    expected_attach_type: int = 0,
) -> int:
    """Load a program made of several functions, all but the first global.

    `funcs` gives each function's first instruction, its name and the size
    of the struct its one pointer argument points to (0: the program's
    context, typed `void *`); the first is the program.  A global function's
    argument must point to plain data (the verifier lets it read that many
    bytes, and it must check the pointer for NULL).  On rejection the error
    carries the verifier log.
    """
    lib = L.lib()
    btf = lib.btf__new_empty()
    if not btf:
        raise B.BpfError(ctypes.get_errno() or errno.ENOMEM, "btf__new_empty")

    def add(kind: str, *args: object) -> int:
        ret = int(getattr(lib, f"btf__add_{kind}")(btf, *args))
        if ret < 0:
            raise B.BpfError(-ret, f"btf__add_{kind} for {name}")
        return ret

    try:
        t_int = add("int", b"int", 4, BTF_INT_SIGNED)
        func_info = []
        for k, (start, fname, arg_size) in enumerate(funcs):
            t_arg = add("ptr", add("struct", f"{fname}_arg".encode(), arg_size) if arg_size else 0)
            proto = add("func_proto", t_int)
            add("func_param", b"arg", t_arg)
            linkage = BTF_FUNC_GLOBAL if k else BTF_FUNC_STATIC
            func_info.append((start, add("func", fname.encode(), linkage, proto)))
        ret = lib.btf__load_into_kernel(btf)
        if ret < 0:
            raise B.BpfError(-ret, f"BPF_BTF_LOAD for {name}")
        btf_fd = lib.btf__fd(btf)
        return B.prog_load(prog_type, insns, license, expected_attach_type, name, btf_fd, func_info)
    finally:
        lib.btf__free(btf)  # the loaded program keeps its own reference to the BTF
