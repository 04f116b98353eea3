"""Compiling and loading the fixed BPF programs with bcc.

The only module that imports bcc (and with it LLVM, ~70 MB and ~0.5 s):
it is imported lazily, only when a program must be (re)loaded: first
attach, a new xdpguard version, or `--replace-program`.  Rule-only applies
never reach this file.  cflags come from a fixed allow-list; nothing is
pasted into the C text.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.errors import KernelError

PROGRAMS = {
    # direction -> (source, function, bcc program type name, map prefix)
    "ingress": ("xdp/ingress.c", "xg_ingress", "XDP", "in_"),
}

_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@:+-]+$")


@dataclass
class Loaded:
    direction: str
    prog_fd: int  # owned by the caller: close it once pinned and linked
    source_hash: str


def source_hash() -> str:
    """Identity of the C sources: a program older than the package's gets replaced."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(abi.BPF_DIR)):
        for f in sorted(files):
            if f.endswith((".c", ".h")):
                p = os.path.join(root, f)
                h.update(os.path.relpath(p, abi.BPF_DIR).encode())
                with open(p, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:16]


def load(direction: str, pin_dir: str) -> Loaded:
    """Compile and load one program; its maps are created or reused under pin_dir."""
    if not _SAFE_PATH.match(pin_dir):
        raise KernelError(f"refusing bpffs path with unusual characters: {pin_dir!r}")
    src, func, ptype, prefix = PROGRAMS[direction]
    os.makedirs(pin_dir, exist_ok=True)
    try:
        from bcc import BPF  # noqa: PLC0415 - deliberately lazy, see module doc
    except ImportError as e:
        raise KernelError(
            "bcc is not importable (install python3-bpfcc; run `make setup`): " + str(e)
        ) from e
    cflags = [
        f'-DXG_PIN_DIR="{pin_dir}"',
        f'-DXG_DIR_PFX="{prefix}"',
        f"-I{abi.BPF_DIR}",
        "-Wno-macro-redefined",
    ]
    try:
        b = BPF(src_file=str(abi.BPF_DIR / src).encode(), cflags=cflags)
        fn = b.load_func(func.encode(), getattr(BPF, ptype))
    except Exception as e:  # bcc raises bare Exception for compile and verifier errors
        msg = str(e)
        if "headers" in msg.lower() or "linux/" in msg:
            msg += " (kernel headers missing? run `make setup`, it links Debian's headers)"
        raise KernelError(f"loading the {direction} program failed: {msg}") from e
    fd = os.dup(fn.fd)
    # bcc's BPF object owns its fds; drop it now that we hold our own.
    b.cleanup()
    return Loaded(direction, fd, source_hash())


def prog_pin_name(direction: str) -> str:
    return f"prog_{direction}"


def tag_of(fd: int) -> str:
    return B.prog_info(fd).tag
