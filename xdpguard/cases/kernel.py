"""Test cases through the real BPF programs: BPF_PROG_TEST_RUN, or frames on a veth wire.

`xdpguard test --kernel` and `--wire` build a throw-away data plane, run
every case through it and take it down again, whatever happens:

- a fresh network namespace (two for --wire) with a veth pair, IPv6 off so
  the kernel itself sends nothing on the link, and private XDPGUARD_BPFFS /
  XDPGUARD_STATE_DIR directories, so the operator's own xdpguard state is
  never touched;
- xdpguard attached with `Dataplane.apply`, as `xdpguard apply` does;
- the programs are built with the test clock (a pinned map they read the
  time from), so that rate limits and blocks see the case's simulated
  instants, the same the plan check uses;
- per case: the flow table, rate-limit buckets and blocked sources are
  emptied (cases are independent), an established case first sends its
  opening packet through the egress program (that is how the program learns
  flows; a UDP opening packet stands for a datagram from a connected
  socket, which neither a test run nor a raw frame has, so its flow is
  written into the table once egress lets the packet out), then the
  case's frame goes through `prog_ingress` or `prog_egress`, `repeat`
  times, the clock set before each.  The verdict is the program's return
  code (--kernel) or whether the frame came out on the other side
  (--wire); the deciding rule is the one whose packet counter moved
  (continue rules that passed the packet on count it too, and are told
  apart by the plan).

In --wire mode namespace A and B are joined by a veth pair and xdpguard
runs on B's end.  Ingress cases are sent from A and looked for on B (a
capture sees what XDP let through); egress cases are sent as raw frames out
of B, which puts them through B's tcx egress program like any locally sent
packet, and looked for on A.

A run killed with SIGKILL leaves its namespaces and pins behind; they are
named after the process id, and the next run removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from xdpguard import net
from xdpguard.cases.case import CLOCK_START_NS, DEFAULT_DST_MAC, DEFAULT_SRC_MAC, Case, Outcome
from xdpguard.cases.plan import OVER_NOTE, plan_runs
from xdpguard.datapath import abi, probes
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.datapath.dataplane import Dataplane, prog_pin_name
from xdpguard.errors import KernelError, XdpguardError
from xdpguard.rules.compile import Plan
from xdpguard.rules.model import IPPROTO_UDP, Action
from xdpguard.rules.packet import parse_frame

__all__ = ["Bench", "run_cases"]

BPFFS_BASE = Path("/sys/fs/bpf")
NS_PREFIX = "xgcase"
PIN_PREFIX = "xdpguard-case-"
_STALE_NS = re.compile(rf"^{NS_PREFIX}(\d+)-[0-9a-f]+[ab]$")
_STALE_PINS = re.compile(rf"^{PIN_PREFIX}(\d+)-[0-9a-f]+$")
ENV_KEYS = ("XDPGUARD_BPFFS", "XDPGUARD_STATE_DIR", "XDPGUARD_TEST_CLOCK")

# Interface names inside the private namespaces (no clash with the host's).
GUARD_IF = "xgcase0"  # where xdpguard runs
PEER_IF = "xgcase1"  # the other end: in namespace A for --wire, beside GUARD_IF otherwise

XDP_VERDICTS = {B.XDP_DROP: "drop", B.XDP_PASS: "allow"}
TC_ACT_OK, TC_ACT_SHOT = 0, 2
TC_VERDICTS = {TC_ACT_OK: "allow", TC_ACT_SHOT: "drop"}

# Wire timing: XDP and tcx count a frame before it reaches the capture, so
# once its counter has moved, a frame that passed shows up within
# microseconds; the waits only bound how long a dropped frame is looked for.
COUNTER_WAIT = 2.0
ARRIVAL_WAIT = 0.3
ETH_P_ALL = 0x0003

# Hash maps whose entries carry state from one packet to the next, emptied
# before each case (the rate limiter's state is reset by M.reset_limiter).
_STATE_MAPS = (("flows", M.C_SIZE["flow_key"], M.C_SIZE["flow"]),)

Counts = dict[str, tuple[int, int]]  # reason -> (packets, over-limit packets)


def run_cases(plan: Plan, cases: list[Case], wire: bool = False) -> list[tuple[Outcome, ...]]:
    """Each case's outcomes in the kernel, one per packet; a note says where the compiled plan disagrees."""
    for case in cases:
        for c in (case, case.opener()):
            if c is None:
                continue
            want, parsed = c.packet(established=False), parse_frame(c.frame())
            if parsed != want:
                raise XdpguardError(
                    f"internal error: the frame built for case {c.name!r} parses as {parsed}, not {want}"
                )
    planned = plan_runs(plan, cases)
    with Bench(plan, wire) as bench:
        runs = [bench.run(c) for c in cases]
    out = []
    for run, want_run in zip(runs, planned, strict=True):
        checked = []
        for got, want_out in zip(run, want_run, strict=True):
            if (got.verdict, got.rule) != (want_out.verdict, want_out.rule):
                extra = f"the compiled plan says {want_out}"
                got = Outcome(got.verdict, got.rule, f"{got.note}; {extra}" if got.note else extra)
            checked.append(got)
        out.append(tuple(checked))
    return out


class Bench:
    """One throw-away data plane with xdpguard attached; `run` puts a case through it."""

    def __init__(self, plan: Plan, wire: bool = False) -> None:
        self.plan = plan
        self.wire = wire
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.ns_b = f"{NS_PREFIX}{tag}b"
        self.ns_a = f"{NS_PREFIX}{tag}a" if wire else None
        self.bpffs = BPFFS_BASE / f"{PIN_PREFIX}{tag}"
        self.state_dir: Path | None = None
        self.dp: Dataplane | None = None
        self.maps: M.Maps | None = None
        self.progs: dict[str, int] = {}
        self.clock: int | None = None
        self.slots: dict[str, dict[int, str]] = {}
        # Continue rules count every packet they pass on: not the deciding rule.
        self.guards = {
            d.name: frozenset(r.name for r in d.rules if r.action == Action.CONTINUE)
            for d in plan.directions()
        }
        self.macs = {"a": DEFAULT_SRC_MAC, "b": DEFAULT_DST_MAC}
        self.socks: dict[str, socket.socket] = {}
        self._env: dict[str, str | None] = {}
        self._old_sigterm: Any = None  # what signal.signal returned: a handler, SIG_DFL or SIG_IGN
        self._created: list[str] = []

    # ---- life cycle

    def __enter__(self) -> Bench:
        if not probes.privileged():
            raise KernelError(
                "--kernel and --wire run the cases through the real BPF programs: run as root "
                "(CAP_BPF, CAP_NET_ADMIN, network namespaces); without them the compiled plan checks cases"
            )
        self._trap_sigterm()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _trap_sigterm(self) -> None:
        # A plain SIGTERM would skip the clean-up; turn it into an exception that runs it.
        if threading.current_thread() is not threading.main_thread():
            return

        owner = os.getpid()

        def stop(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != owner:
                # A child forked meanwhile (pyroute2 creates namespaces in one)
                # inherits this handler; unwinding our stack there would run
                # our clean-up and delete the namespaces the parent still uses.
                os._exit(128 + signum)
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, stop)

    def _setup(self) -> None:
        sweep_stale()
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"{PIN_PREFIX}{os.getpid()}-"))
        self._env = {k: os.environ.get(k) for k in ENV_KEYS}
        os.environ["XDPGUARD_BPFFS"] = str(self.bpffs)
        os.environ["XDPGUARD_STATE_DIR"] = str(self.state_dir)
        os.environ["XDPGUARD_TEST_CLOCK"] = "1"  # a throw-away data plane: never production
        for ns in (self.ns_a, self.ns_b):
            if ns is not None:
                net.create_netns(ns)
                self._created.append(ns)
                _quiet(ns)
        try:
            _, guard_index = net.create_veth_pair(PEER_IF, self.ns_a or self.ns_b, GUARD_IF, self.ns_b)
        except net.NetError as e:
            raise KernelError(f"cannot create the veth pair for the test (CONFIG_VETH?): {e}") from e
        if self.wire:
            self.macs = {"a": net.get_mac(self.ns_a, PEER_IF), "b": net.get_mac(self.ns_b, GUARD_IF)}
            self.socks = {"a": _packet_socket(self.ns_a, PEER_IF), "b": _packet_socket(self.ns_b, GUARD_IF)}
        with net.in_netns(self.ns_b):
            self.dp = Dataplane(GUARD_IF, guard_index, self.ns_b)
            self.dp.apply(self.plan, None, note="xdpguard test")
        pin_dir = self.dp.pin_dir
        self.maps = M.open_maps(pin_dir)
        for direction in M.DIRECTIONS:
            self.progs[direction] = B.obj_get(self.dp.iface.pin(prog_pin_name(direction)))
        self.clock = B.obj_get(self.dp.iface.pin("test_clock"))
        active = M.read_active(pin_dir)
        for direction, dplan in (("ingress", self.plan.ingress), ("egress", self.plan.egress)):
            half = M.half_of(direction, active)
            entries = M.read_rules(self.maps, half, M.read_config(self.maps, half).nrules)
            names = {r.rule_id: r.name for r in dplan.rules}
            slots = {e.slot: names.get(e.rule_id, f"rule id {e.rule_id:016x}") for e in entries}
            slots.update({slot: reason for reason, slot in abi.RESERVED_SLOTS.items()})
            self.slots[direction] = slots

    def close(self) -> None:
        """Take everything down; each step runs even when an earlier one failed."""
        problems: list[str] = []

        def step(what: str, fn: Callable[..., object], *args: object) -> None:
            try:
                fn(*args)
            except Exception as e:  # clean-up goes on; every problem is reported at the end
                problems.append(f"{what}: {e}")

        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        for fd in self.progs.values():
            os.close(fd)
        self.progs.clear()
        if self.clock is not None:
            os.close(self.clock)
            self.clock = None
        if self.maps is not None:
            self.maps.close()
            self.maps = None
        if self.dp is not None and net.netns_exists(self.ns_b):
            step("detach", self._detach)
        self.dp = None
        for ns in reversed(self._created):
            step(f"delete namespace {ns}", net.delete_netns, ns)
        self._created.clear()
        step(f"remove {self.bpffs}", _remove_pin_dir, self.bpffs)
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = None
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env = {}
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if problems:
            raise KernelError("cleaning up the test data plane: " + "; ".join(problems))

    def _detach(self) -> None:
        assert self.dp is not None
        with net.in_netns(self.ns_b):
            self.dp.detach()

    # ---- one case

    def run(self, case: Case) -> tuple[Outcome, ...]:
        """The case's packets, one outcome each, at the case's instants on the test clock."""
        self._reset_state()
        note = ""
        opener = case.opener()
        self._set_clock(CLOCK_START_NS)
        if opener is not None:
            opened = self._decide(opener)
            if opened.verdict != "allow":
                by = "the egress default" if opened.rule == "default" else f"egress rule {opened.rule}"
                note = f"no flow: {by} drops the opening packet, so the host never sent it"
            elif opener.proto == IPPROTO_UDP:
                # UDP opens a flow only from a socket connected to the peer;
                # a test run (or a packet socket) has none, so the flow that
                # socket's datagram would have recorded is written here.
                self._add_flow(opener)
        run = []
        for t in case.offsets_ns():
            self._set_clock(CLOCK_START_NS + t)
            got = self._decide(case)
            if note and got.note != OVER_NOTE:
                got = Outcome(got.verdict, got.rule, f"{note}; {got.note}" if got.note else note)
            run.append(got)
        return tuple(run)

    def _set_clock(self, t_ns: int) -> None:
        assert self.clock is not None
        B.map_update(self.clock, struct.pack("<I", 0), struct.pack("<Q", t_ns))

    def _add_flow(self, opener: Case) -> None:
        assert self.maps is not None and opener.src is not None and opener.dst is not None
        assert opener.sport is not None and opener.dport is not None
        flow = M.FlowEntry(opener.proto, opener.src.packed, opener.dst.packed, opener.sport, opener.dport)
        # Seen "now" on the clock the case runs on (the programs' test clock).
        M.add_flows(self.maps, [flow], CLOCK_START_NS)

    def _decide(self, case: Case) -> Outcome:
        before = self._counts(case.direction)
        if self.wire:
            verdict, after = self._on_wire(case, before)
        else:
            verdict = self._test_run(case)
            after = self._counts(case.direction)
        rule, note = _reason(before, after, self.guards[case.direction])
        return Outcome(verdict, rule, note)

    def _test_run(self, case: Case) -> str:
        frame = case.frame()
        try:
            ret = B.prog_test_run(self.progs[case.direction], frame).retval
        except B.BpfError as e:
            raise KernelError(f"BPF_PROG_TEST_RUN of case {case.name!r}: {e.sentence}") from e
        table = XDP_VERDICTS if case.direction == "ingress" else TC_VERDICTS
        if ret not in table:
            raise KernelError(f"case {case.name!r}: the {case.direction} program returned {ret}")
        return table[ret]

    def _on_wire(self, case: Case, before: Counts) -> tuple[str, Counts]:
        tx, rx = ("a", "b") if case.direction == "ingress" else ("b", "a")
        frame = case.frame(src_mac=self.macs[tx], dst_mac=self.macs[rx])
        _drain(self.socks[rx])
        try:
            self.socks[tx].send(frame)
        except OSError as e:
            # A packet socket's send reports a drop on the way out (tcx
            # egress: TC_ACT_SHOT) as ENOBUFS; the frame never reaches A.
            if e.errno != errno.ENOBUFS or case.direction != "egress":
                raise KernelError(f"sending case {case.name!r} on the test wire: {e.strerror or e}") from e
        deadline = time.monotonic() + COUNTER_WAIT
        after = self._counts(case.direction)
        while after == before and time.monotonic() < deadline:
            time.sleep(0.001)
            after = self._counts(case.direction)
        return ("allow" if _arrives(self.socks[rx], frame, ARRIVAL_WAIT) else "drop"), after

    def _counts(self, direction: str) -> Counts:
        assert self.maps is not None
        slots = self.slots[direction]
        raw = M.read_counters(self.maps, direction, list(slots))
        return {name: (raw[slot][0], raw[slot][2]) for slot, name in slots.items()}

    def _reset_state(self) -> None:
        assert self.maps is not None
        for name, key_size, value_size in _STATE_MAPS:
            fd = self.maps[name]
            keys = [k for k, _ in B.map_lookup_batch(fd, key_size, value_size, chunk=256)]
            if keys:
                B.map_delete_batch(fd, keys)
        M.reset_limiter(self.maps, self.plan.limit_table_size)


def _reason(before: Counts, after: Counts, guards: frozenset[str] = frozenset()) -> tuple[str, str]:
    """The rule (or special reason) whose counter moved, and a note when that is not one clean step.

    Continue rules (`guards`) that passed the packet on count it as well;
    one that dropped it over its limit moved its over-limit counter too.
    """
    moved = [name for name in after if after[name][0] != before.get(name, (0, 0))[0]]
    over = [name for name in moved if after[name][1] != before.get(name, (0, 0))[1]]
    if "error" in moved:
        return "error", "the program found its maps inconsistent and took the default (counted as error)"
    deciding = [name for name in moved if name not in guards or name in over]
    if len(deciding) == 1:
        return deciding[0], OVER_NOTE if over else ""
    if not moved:
        return "?", "no counter moved: the program did not see the frame"
    return "?", f"several counters moved: {', '.join(moved)}"


def _quiet(ns: str) -> None:
    """No IPv6 in the namespace: its kernel then sends nothing (no DAD, RS, MLD) that counters would see."""
    for conf in ("default", "all"):
        path = f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"
        # /proc/sys/net follows the network namespace of the thread that opens it.
        with net.in_netns(ns), contextlib.suppress(FileNotFoundError), open(path, "w") as f:
            f.write("1")


def _packet_socket(ns: str | None, ifname: str) -> socket.socket:
    with net.in_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, ETH_P_ALL))
    except OSError:
        sock.close()
        raise
    return sock


def _drain(sock: socket.socket) -> None:
    while select.select([sock], [], [], 0)[0]:
        sock.recv(65535)


def _arrives(sock: socket.socket, frame: bytes, timeout: float) -> bool:
    """Whether `frame` comes in on the socket's interface within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return False
        data, addr = sock.recvfrom(65535)
        if addr[2] != socket.PACKET_OUTGOING and data == frame:
            return True
    return False


def _remove_pin_dir(d: Path) -> None:
    if not d.exists():
        return
    for root, dirs, files in os.walk(d, topdown=False):
        for name in files:
            os.unlink(os.path.join(root, name))
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    d.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove namespaces and pin directories left by test runs whose process is gone."""
    removed = []
    for name in net.list_netns():
        m = _STALE_NS.match(name)
        if m and not _pid_alive(int(m.group(1))):
            net.delete_netns(name)
            removed.append(name)
    if BPFFS_BASE.is_dir():
        for d in BPFFS_BASE.iterdir():
            m = _STALE_PINS.match(d.name)
            if m and d.is_dir() and not _pid_alive(int(m.group(1))):
                _remove_pin_dir(d)
                removed.append(str(d))
    return removed
