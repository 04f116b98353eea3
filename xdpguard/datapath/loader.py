"""Compiling and loading the fixed BPF programs with bcc.

The only module that imports bcc (and with it LLVM, ~70 MB and ~0.5 s):
it is imported lazily, only when a program must be (re)loaded: first
attach, a new xdpguard version, or `--replace-program`.  Rule-only applies
never reach this file.  cflags come from a fixed allow-list; nothing is
pasted into the C text.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
from dataclasses import dataclass

from xdpguard.datapath import abi, btf
from xdpguard.datapath import bpf as B
from xdpguard.errors import KernelError
from xdpguard.rules.compile import FixSizes

SOURCE = "xdpguard.c"
# direction -> (function in SOURCE, bcc program type)
PROGRAMS = {"ingress": ("xg_ingress", "XDP"), "egress": ("xg_egress", "SCHED_CLS")}

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@:+-]+$")


@dataclass
class Loaded:
    prog_fds: dict[str, int]  # direction -> fd, owned by the caller: close once pinned and linked
    source_hash: str

    def close(self) -> None:
        for fd in self.prog_fds.values():
            os.close(fd)
        self.prog_fds.clear()


def source_hash() -> str:
    """Identity of the C sources and build flags: a program older than the package's gets replaced."""
    h = hashlib.sha256()
    h.update(b"test-clock" if test_clock_enabled() else b"production")
    for root, _, files in sorted(os.walk(abi.BPF_DIR)):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                p = os.path.join(root, f)
                h.update(os.path.relpath(p, abi.BPF_DIR).encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:16]


def test_clock_enabled() -> bool:
    """Tests may ask for a settable clock (XDPGUARD_TEST_CLOCK=1); production never does."""
    return os.environ.get("XDPGUARD_TEST_CLOCK") == "1"


def load(pin_dir: str, flow_size: int, limit_size: int, fix: FixSizes) -> Loaded:
    """Compile once and load both programs; their maps are created or reused under pin_dir.

    `fix` gives the fixed-size inner maps their sizes (maps.fix_sizes_for):
    the caller records them (maps.record_fix_sizes) once the load is done.
    """
    if not _SAFE_PATH.match(pin_dir):
        raise KernelError(f"refusing bpffs path with unusual characters: {pin_dir!r}")
    os.makedirs(pin_dir, exist_ok=True)
    try:
        from bcc import BPF  # deliberately lazy, see module doc
    except ImportError as e:
        raise KernelError("bcc is not importable (install python3-bpfcc; run `make setup`): " + str(e)) from e
    cflags = [
        f'-DXG_PIN_DIR="{pin_dir}"',
        f"-DXG_FLOW_SIZE={int(flow_size)}",
        f"-DXG_LIMIT_SIZE={int(limit_size)}",
        f"-DXG_FIX_TOPS={int(fix.tops)}",
        f"-DXG_FIX_BLOCKS={int(fix.blocks)}",
        f"-I{abi.BPF_DIR}",
        "-Wno-macro-redefined",
    ]
    if test_clock_enabled():
        cflags.append("-DXG_TEST_CLOCK=1")
    fds: dict[str, int] = {}
    try:
        b = BPF(src_file=str(abi.BPF_DIR / SOURCE).encode(), cflags=cflags)
        for direction, (func, ptype) in PROGRAMS.items():
            fds[direction] = _load_linked(b, func, getattr(BPF, ptype))
    except Exception as e:  # bcc raises bare Exception for compile and verifier errors
        for fd in fds.values():
            os.close(fd)
        msg = str(e)
        if "headers" in msg.lower() or "linux/" in msg:
            msg += " (kernel headers missing? run `make setup`, it links Debian's headers)"
        raise KernelError(f"loading the xdpguard programs failed: {msg}") from e
    # bcc's BPF object owns its fds; drop it now that we hold our own.
    b.cleanup()
    return Loaded(fds, source_hash())


# The functions the programs call, in call order: the program calls the
# first, each function only the next (xg_scan_fn, for a scan or a rate-limit
# check, then xg_group_fn per group of rules), each compiled by bcc into a
# section of its own; with the struct its one argument points to.
FUNCTIONS = (("xg_scan_fn", "CallArgs"), ("xg_group_fn", "GroupArgs"))

_CALL = 0x85
BPF_PSEUDO_CALL = 1


def _insns(b: object, func: str) -> bytes:
    from bcc import lib  # lazy: bcc loads LLVM (see module doc); `b` is a BPF object, so bcc is in already

    module = b.module  # type: ignore[attr-defined]
    start = lib.bpf_function_start(module, func.encode())
    size = lib.bpf_function_size(module, func.encode())
    if not start or not size:
        raise KernelError(f"the compiled program has no function {func}")
    return ctypes.string_at(start, size)


def link_functions(main: bytes, funcs: list[bytes]) -> tuple[bytes, list[int]]:
    """Append a chain of functions to `main` and point each one's calls at the next.

    bcc leaves a call to a function in another section unrelocated: a
    BPF_PSEUDO_CALL with imm -1, which does not say which function it
    meant.  So the functions form a chain: the calls of `main` go to
    funcs[0], those of funcs[0] to funcs[1], and so on; the last calls
    nothing.  A call's imm becomes the distance from the instruction after
    it to its target, which is what the kernel expects.  Returns the linked
    instructions and each function's first instruction.
    """
    parts = [main, *funcs]
    starts: list[int] = []
    at = 0
    for p in parts:
        starts.append(at)
        at += len(p) // 8
    out = bytearray()
    for k, p in enumerate(parts):
        code = bytearray(p)
        calls = 0
        for i in range(len(p) // 8):
            if code[8 * i] != _CALL or code[8 * i + 1] >> 4 != BPF_PSEUDO_CALL:
                continue
            if k + 1 == len(parts):
                raise KernelError(f"function {k} of the chain calls another function; cannot link")
            imm = int.from_bytes(code[8 * i + 4 : 8 * i + 8], "little", signed=True)
            if imm != -1:
                raise KernelError(f"call at instruction {i} is already relocated (imm {imm}); cannot link")
            here = starts[k] + i
            code[8 * i + 4 : 8 * i + 8] = (starts[k + 1] - here - 1).to_bytes(4, "little", signed=True)
            calls += 1
        if k + 1 < len(parts) and not calls:
            raise KernelError(f"function {k} of the chain does not call the next; cannot link")
        out += code
    return bytes(out), starts[1:]


def _load_linked(b: object, func: str, prog_type: int) -> int:
    """Load `func` with the scan functions linked in and declared global.

    A global function is verified once, on its own; a static one again at
    every call, for every path that reaches it.  bcc 0.26 neither links a
    call to another section nor passes BTF for more than the program
    function, so the program is linked and loaded here.
    """
    from bcc import lib  # lazy: bcc loads LLVM (see module doc)

    code, starts = link_functions(_insns(b, func), [_insns(b, name) for name, _ in FUNCTIONS])
    funcs = [(0, func, 0)] + [
        (start, name, ctypes.sizeof(getattr(abi, arg)))
        for start, (name, arg) in zip(starts, FUNCTIONS, strict=True)
    ]
    license = (lib.bpf_module_license(b.module) or b"GPL").decode()  # type: ignore[attr-defined]
    try:
        return btf.prog_load_functions(prog_type, func[:15], code, funcs, license)
    except B.BpfError as e:
        raise KernelError(f"the kernel refused {func}: {e}") from e
