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
from xdpguard.errors import KernelError

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


def load(pin_dir: str, flow_size: int, limit_size: int) -> Loaded:
    """Compile once and load both programs; their maps are created or reused under pin_dir."""
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
        f"-I{abi.BPF_DIR}",
        "-Wno-macro-redefined",
    ]
    if test_clock_enabled():
        cflags.append("-DXG_TEST_CLOCK=1")
    fds: dict[str, int] = {}
    try:
        b = BPF(src_file=str(abi.BPF_DIR / SOURCE).encode(), cflags=cflags)
        for direction, (func, ptype) in PROGRAMS.items():
            fn = b.load_func(func.encode(), getattr(BPF, ptype))
            fds[direction] = os.dup(fn.fd)
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
