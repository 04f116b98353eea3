"""SYN cookies in the kernel: build, check, load and attach bpf/syncookie.c.

The two programs of `syn_cookies: true` (an XDP program the ingress
program tail-calls, and a tcx-ingress program that hands verified ACKs to
the listener through the kfunc bpf_sk_assign_tcp_reqsk) cannot be built
by bcc, which calls neither kfuncs nor BPF-to-BPF functions.  They are
compiled once with clang into an object cached by the hash of their
sources, and loaded through libbpf (ctypes over libbpf.so.1) with the
interface's pinned maps passed in (bpf_map__reuse_fd).  No bcc and no
LLVM in this process: a rule-only apply that first enables syn_cookies
loads the object and writes maps, nothing more.

On an interface they leave these pins (see docs/design.md):
  prog_syn_xdp, prog_syn_handoff   the programs
  link_tcx_ingress                 the tcx ingress link of the hand-off program
  syn_secret, syn_counters         the cookie key and per-rule counters
  syn_pending, syn_gate            valid cookie ACKs on their way to the tc program
  syn_object                       (state dir) the hash of the object loaded
and the XDP program's fd goes into slot 0 of syn_prog, the bcc program's
tail-call table.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.datapath import libbpf as L
from xdpguard.errors import KernelError, XdpguardError

SOURCE = "syncookie.c"
PROG_XDP = "xg_syn_xdp"
PROG_TC = "xg_syn_handoff"
PIN_PROG_XDP = "prog_syn_xdp"
PIN_PROG_TC = "prog_syn_handoff"
PIN_LINK = "link_tcx_ingress"
PIN_TAILCALL = "syn_prog"  # created by the bcc ingress program
# Maps the object shares with the bcc programs (reused from their pins) and
# the ones it owns (created by its first load, then pinned).
SHARED_MAPS = ("syn_scratch", "events", "event_cfg", "event_rate")
OWN_MAPS = ("syn_secret", "syn_counters", "syn_pending", "syn_gate")
SYSCTL = "/proc/sys/net/ipv4/tcp_syncookies"
BPF_MAP_TYPE_PROG_ARRAY = 3
KERNEL_NEEDS = "kernel 6.9 or later (the kfunc bpf_sk_assign_tcp_reqsk)"

SYN_COUNTER_SIZE = ctypes.sizeof(abi.SynCounter)
SECRET_SIZE = ctypes.sizeof(abi.SynSecret)


# --- building ----------------------------------------------------------------


def _sources() -> list[Path]:
    """The object's C inputs: its file and every header under bpf/."""
    files = [abi.BPF_DIR / SOURCE]
    for sub in ("include", "lib"):
        files += sorted((abi.BPF_DIR / sub).glob("*.h"))
    return files


def object_hash() -> str:
    h = hashlib.sha256()
    for p in _sources():
        h.update(p.relative_to(abi.BPF_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cache_dir() -> Path:
    """Built objects, named by the hash of their sources, so any number of
    interfaces and versions share them (XDPGUARD_CACHE_DIR, for tests)."""
    return Path(os.environ.get("XDPGUARD_CACHE_DIR", "/var/cache/xdpguard"))


def _object_path() -> Path:
    return _cache_dir() / f"syncookie-{object_hash()}.o"


def _cache_fault(path: Path, e: OSError) -> XdpguardError:
    """The cache directory cannot hold the object: the machine's state (exit 1), said as such."""
    if isinstance(e, FileExistsError):
        detail = f"{path} is not a directory"
    elif isinstance(e, NotADirectoryError):
        detail = f"a part of {path} is not a directory"
    else:
        detail = f"{path}: {e.strerror or e}"
    return XdpguardError(
        f"syn_cookies: cannot build its BPF object in XDPGUARD_CACHE_DIR ({_cache_dir()}): {detail}; "
        "nothing was changed: make it a directory root can write, or point XDPGUARD_CACHE_DIR elsewhere"
    )


def build(rebuild: bool = False) -> Path:
    """The compiled object, compiled now if the cache lacks this version
    (or `rebuild`: the cached one cannot be opened).  Written to a temporary
    name and renamed into place, so a reader never sees half an object."""
    out = _object_path()
    if out.is_file() and not rebuild:
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cache_fault(out.parent, e) from e
    clang = shutil.which("clang")
    if clang is None:
        raise KernelError(
            "syn_cookies needs clang to build its BPF programs, and clang is not installed "
            "(Debian: apt install clang libbpf-dev; `make setup` does it)"
        )
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise KernelError(
            "syn_cookies needs libbpf's headers to build its BPF programs (Debian: apt install libbpf-dev)"
        )
    # lib/parse.h is shared with the bcc program, which spells UAPI headers
    # <uapi/linux/...>; clang finds them through this alias of /usr/include.
    inc = out.parent / "inc"
    alias = inc / "uapi"
    try:
        inc.mkdir(exist_ok=True)
        if not alias.is_symlink():
            with contextlib.suppress(FileExistsError):  # another build made it meanwhile
                alias.symlink_to("/usr/include")
    except OSError as e:
        raise _cache_fault(Path(e.filename or inc), e) from e
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o644)  # can the directory take the object (read-only, not root's)?
    except OSError as e:
        raise _cache_fault(tmp, e) from e
    cmd = [
        clang,
        "-g",
        "-O2",
        "-target",
        "bpf",
        "-Wall",
        "-I",
        str(abi.BPF_DIR),
        "-I",
        str(inc),
        "-I",
        "/usr/include/x86_64-linux-gnu",
        "-c",
        str(abi.BPF_DIR / SOURCE),
        "-o",
        str(tmp),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise KernelError(f"building {SOURCE} with clang failed:\n{r.stderr.strip()}")
    try:
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _cache_fault(out, e) from e
    return out


# --- libbpf ------------------------------------------------------------------

_log: list[str] = []
_libc = ctypes.CDLL(None, use_errno=True)  # vsnprintf, for libbpf's log lines
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


def _on_print(level: int, fmt: bytes, args: int) -> int:
    buf = ctypes.create_string_buffer(1024)
    _libc.vsnprintf(buf, ctypes.c_size_t(len(buf)), fmt, ctypes.c_void_p(args))
    _log.append(buf.value.decode(errors="replace").rstrip())
    return 0


_print_cb = L.PRINT_FN(_on_print)  # module-level: libbpf keeps the pointer


def _libbpf() -> ctypes.CDLL:
    try:
        return L.lib()
    except B.BpfError as e:
        raise KernelError(f"syn_cookies needs libbpf.so.1 (Debian package libbpf1): {e}") from e


@dataclass
class Loaded:
    """fds this process owns: the two programs, and maps the load created."""

    progs: dict[str, int] = field(default_factory=dict)  # PROG_XDP / PROG_TC -> fd
    created: dict[str, int] = field(default_factory=dict)  # OWN_MAPS the load made -> fd

    def close(self) -> None:
        for fd in [*self.progs.values(), *self.created.values()]:
            os.close(fd)
        self.progs.clear()
        self.created.clear()


def _explain(step: str, err: int) -> KernelError:
    log = "\n".join(line for line in _log if line)
    if "bpf_sk_assign_tcp_reqsk" in log and "not found in kernel" in log:
        return KernelError(
            f"syn_cookies needs a {KERNEL_NEEDS}; this kernel lacks it, so nothing was changed "
            f"(libbpf: {log.splitlines()[-1] if log else os.strerror(err)})"
        )
    refused = re.search(r"program of this type cannot use helper (\w+)", log)
    if refused:
        return KernelError(
            f"syn_cookies needs a kernel that lets these programs call {refused.group(1)}; this kernel "
            "refuses it, so nothing was changed"
        )
    tail = "\n".join(log.splitlines()[-25:])
    return KernelError(f"syn_cookies: {step} failed: {os.strerror(err)}" + (f"\n{tail}" if tail else ""))


@contextlib.contextmanager
def _captured(lib: ctypes.CDLL) -> Iterator[None]:
    """libbpf's prints go to _log, not to stderr: said only in an error (_explain)."""
    old_print = lib.libbpf_set_print(ctypes.cast(_print_cb, ctypes.c_void_p))
    try:
        yield
    finally:
        lib.libbpf_set_print(old_print)


def _open(lib: ctypes.CDLL) -> int:
    """The object opened by libbpf (call with libbpf's prints _captured).

    A cached object libbpf cannot open (truncated, damaged) is built again
    once, and what libbpf said about it dropped: only the final attempt's
    complaint reaches the operator."""
    cached = _object_path().is_file()
    path = build()
    for last in (not cached, True):
        _log.clear()
        obj = lib.bpf_object__open_file(str(path).encode(), None)
        if obj and not lib.libbpf_get_error(obj):
            return int(obj)
        if last:
            break  # built just now: building again would give the same
        path = build(rebuild=True)
    raise _explain(f"opening {path}", errno.EINVAL)


def load(pin_dir: str | None) -> Loaded:
    """Load both programs.  With pin_dir, maps pinned there are reused and
    the rest created; without, every map is a fresh private one (a probe of
    what the kernel can do that leaves nothing behind)."""
    lib = _libbpf()
    _log.clear()
    obj = None
    with _captured(lib):
        try:
            obj = _open(lib)
            return _load(lib, obj, pin_dir)
        finally:
            if obj:
                lib.bpf_object__close(obj)


def _load(lib: ctypes.CDLL, obj: int, pin_dir: str | None) -> Loaded:
    """The opened object loaded into the kernel: the fds of its programs and of the maps it made."""
    reused: list[int] = []
    try:
        for name in (*SHARED_MAPS, *OWN_MAPS):
            pin = os.path.join(pin_dir, name) if pin_dir else None
            if pin is None or not os.path.exists(pin):
                continue
            fd = B.obj_get(pin)
            reused.append(fd)
            m = lib.bpf_object__find_map_by_name(obj, name.encode())
            if not m or lib.bpf_map__reuse_fd(m, fd) != 0:
                raise KernelError(f"syn_cookies: the pinned map {pin} does not fit {SOURCE}")
        # The bcc ingress program was loaded without an expected attach
        # type; a tail-call target must match it.
        xdp = lib.bpf_object__find_program_by_name(obj, PROG_XDP.encode())
        lib.bpf_program__set_expected_attach_type(xdp, 0)
        rc = lib.bpf_object__load(obj)
        if rc != 0:
            raise _explain("loading the programs", -rc)
    finally:
        for fd in reused:
            os.close(fd)
    out = Loaded()
    for prog in (PROG_XDP, PROG_TC):
        p = lib.bpf_object__find_program_by_name(obj, prog.encode())
        out.progs[prog] = os.dup(lib.bpf_program__fd(p))
    for name in OWN_MAPS:
        if pin_dir and os.path.exists(os.path.join(pin_dir, name)):
            continue
        m = lib.bpf_object__find_map_by_name(obj, name.encode())
        out.created[name] = os.dup(lib.bpf_map__fd(m))
    return out


def sysctl_problem() -> str | None:
    """Why the stack of the current namespace would refuse cookie ACKs, or None."""
    try:
        with open(SYSCTL) as f:
            value = f.read().strip()
    except OSError as e:
        return f"cannot read {SYSCTL}: {e.strerror}"
    if value == "0":
        return (
            "net.ipv4.tcp_syncookies is 0 in this network namespace, and the stack then refuses "
            "every cookie ACK: set it to 1 (sysctl -w net.ipv4.tcp_syncookies=1)"
        )
    return None


def check_kernel(load_test: bool = True) -> None:
    """Refuse, before anything changes, when this kernel (or this namespace's
    sysctl) cannot do SYN cookies; load_test=False skips loading the programs
    (they run already)."""
    problem = sysctl_problem()
    if problem:
        raise KernelError(f"syn_cookies: {problem}")
    if load_test:
        load(None).close()


# --- on an interface ---------------------------------------------------------


def _pin(pin_dir: str, name: str) -> str:
    return os.path.join(pin_dir, name)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def attached(pin_dir: str) -> bool:
    return os.path.exists(_pin(pin_dir, PIN_LINK))


def _hash_file(state_dir: Path) -> Path:
    return state_dir / "syn_object"


def current(pin_dir: str, state_dir: Path) -> bool:
    """The programs of this object version are attached and in the tail-call table."""
    try:
        recorded = _hash_file(state_dir).read_text().strip()
    except FileNotFoundError:
        return False
    if recorded != object_hash() or not attached(pin_dir) or not os.path.exists(_pin(pin_dir, PIN_PROG_XDP)):
        return False
    with B.Fd(B.obj_get(_pin(pin_dir, PIN_TAILCALL))) as table:
        entry = B.map_lookup(table, b"\0\0\0\0", 4)
    with B.Fd(B.obj_get(_pin(pin_dir, PIN_PROG_XDP))) as prog:
        want = B.prog_info(prog).id
    return entry is not None and int.from_bytes(entry, "little") == want


def ensure(pin_dir: str, state_dir: Path, ifindex: int, ifname: str) -> bool:
    """Load and attach the programs unless the current ones are; True if it did.

    Order: maps pinned (a new secret from os.urandom), the tcx link created
    or its program swapped, the XDP program into the tail-call table, the
    programs pinned.  Until the table holds it the ingress program passes
    SYN-cookie candidates to the stack, so no step leaves a gap.
    """
    if current(pin_dir, state_dir):
        return False
    loaded = load(pin_dir)
    try:
        for name, fd in loaded.created.items():
            if name == "syn_secret":
                B.map_update(fd, b"\0\0\0\0", os.urandom(SECRET_SIZE))
            _unlink(_pin(pin_dir, name))
            B.obj_pin(fd, _pin(pin_dir, name))
        xdp, tc = loaded.progs[PROG_XDP], loaded.progs[PROG_TC]
        # The hand-off first: an XDP program answering SYNs without it
        # would admit ACKs that no listener takes.
        old_tc = _pin(pin_dir, PIN_PROG_TC)
        if attached(pin_dir) and os.path.exists(old_tc):
            with B.Fd(B.obj_get(_pin(pin_dir, PIN_LINK))) as link, B.Fd(B.obj_get(old_tc)) as oldp:
                B.link_update(link, tc, oldp, B.BPF_F_REPLACE)
        else:
            try:
                link_fd = B.link_create(tc, ifindex, B.BPF_TCX_INGRESS)
            except B.BpfError as e:
                raise KernelError(
                    f"syn_cookies: attach the tcx ingress program to {ifname}: {e.sentence}"
                ) from e
            try:
                _unlink(_pin(pin_dir, PIN_LINK))
                B.obj_pin(link_fd, _pin(pin_dir, PIN_LINK))
            finally:
                os.close(link_fd)
        with B.Fd(B.obj_get(_pin(pin_dir, PIN_TAILCALL))) as table:
            try:
                B.map_update(table, b"\0\0\0\0", xdp.to_bytes(4, "little"))
            except B.BpfError as e:
                raise KernelError(
                    f"syn_cookies: put the XDP program in the tail-call table: {e.sentence}"
                ) from e
        for prog, pin in ((xdp, PIN_PROG_XDP), (tc, PIN_PROG_TC)):
            _unlink(_pin(pin_dir, pin))
            B.obj_pin(prog, _pin(pin_dir, pin))
    finally:
        loaded.close()
    state_dir.mkdir(parents=True, exist_ok=True)
    _hash_file(state_dir).write_text(object_hash() + "\n")
    return True


def read_counters(pin_dir: str, slots: list[int]) -> dict[int, dict[str, int]]:
    """Per ingress counter slot: cookies sent, valid, invalid, hand-off errors (all CPUs)."""
    out = {s: {"sent": 0, "valid": 0, "invalid": 0, "handoff_errors": 0} for s in slots}
    path = _pin(pin_dir, "syn_counters")
    if not slots or not os.path.exists(path):
        return out
    psize = B.percpu_value_size(SYN_COUNTER_SIZE)
    with B.Fd(B.obj_get(path)) as fd:
        for s in slots:
            raw = B.map_lookup(fd, s.to_bytes(4, "little"), psize)
            if not raw:
                continue
            for v in B.split_percpu(raw, SYN_COUNTER_SIZE):
                c = abi.SynCounter.from_buffer_copy(v)
                row = out[s]
                row["sent"] += c.sent
                row["valid"] += c.valid
                row["invalid"] += c.invalid
                row["handoff_errors"] += c.handoff_err
    return out


def zero_counters(pin_dir: str, slots: list[int]) -> None:
    """Fresh counters for slots that new rule ids take (as for the main counters)."""
    path = _pin(pin_dir, "syn_counters")
    if not slots or not os.path.exists(path):
        return
    zero = bytes(B.percpu_value_size(SYN_COUNTER_SIZE))
    with B.Fd(B.obj_get(path)) as fd:
        for s in slots:
            B.map_update(fd, s.to_bytes(4, "little"), zero)


def status(pin_dir: str) -> dict[str, object] | None:
    """The hand-off link and the tail-called program, for `status`; None when not loaded."""
    if not attached(pin_dir):
        return None
    with B.Fd(B.obj_get(_pin(pin_dir, PIN_LINK))) as lfd:
        li = B.link_info(lfd)
    out: dict[str, object] = {"link_id": li.id, "prog_id": li.prog_id, "attach": "bpf_link (tcx ingress)"}
    if os.path.exists(_pin(pin_dir, PIN_PROG_XDP)):
        with B.Fd(B.obj_get(_pin(pin_dir, PIN_PROG_XDP))) as pfd:
            out["xdp_prog_id"] = B.prog_info(pfd).id
    # The sysctl can change after apply checked it; then every cookie ACK is refused.
    problem = sysctl_problem()
    if problem:
        out["problem"] = problem
    return out
