"""Reading drop events from the pinned ring buffer (libbpf via ctypes, no bcc).

The programs emit an event for every drop decision (or one in `sample`),
at most `max_rate` per second per CPU, so a few drops all show and a
flood shows up as a steady trickle, not as a flood of log lines.  The
ring buffer keeps what nobody has read yet; a new reader skips those
events (older than itself) unless asked for them.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from xdpguard.datapath import abi
from xdpguard.datapath import bpf as B
from xdpguard.datapath import libbpf as L
from xdpguard.errors import KernelError
from xdpguard.rules.describe import PROTO_NAMES


def _libbpf() -> ctypes.CDLL:
    try:
        return L.lib()
    except B.BpfError as e:
        raise KernelError(f"reading events: {e.sentence}") from e


@dataclass(frozen=True)
class Event:
    time: float  # Unix time
    interface: str
    direction: str
    reason: str
    rule: str | None
    verdict: str  # "drop", or "pass (audit)"
    family: int
    proto: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    length: int
    backlog: bool = False  # made before the reader started (shown only when asked for)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        """One line: `12:04:05.123 eth0 ingress drop by rule no-smtp: tcp 192.0.2.7:4000 > ..., 60 bytes`."""
        when = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time % 1 * 1000):03d}"
        verdict = "would drop (audit)" if self.verdict != "drop" else "drop"
        why = {
            "rule": f"by rule {self.rule}",
            "rate_limit": f"over the limit of rule {self.rule}",
            "default": "by the default",
            "malformed": "as malformed",
            "non_ip": "as non-IP (non_ip: drop)",
            "blocked": "from a blocked source (block_for)",
        }.get(self.reason, self.reason)
        line = (
            f"{when} {self.interface} {self.direction} {verdict} {why}: {self.packet()}, {self.length} bytes"
        )
        return line + (" (before this reader started)" if self.backlog else "")

    def packet(self) -> str:
        if self.family not in (4, 6):
            return "non-IP frame" if self.reason == "non_ip" else "frame"
        proto = PROTO_NAMES.get(self.proto, f"proto {self.proto}")
        if self.sport is None or self.dport is None:
            return f"{proto} {self.src} > {self.dst}"
        return f"{proto} {_hostport(self.src, self.sport)} > {_hostport(self.dst, self.dport)}"


def _hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw)) if family in (4, 6) else ""


def decode(raw: bytes, iface: str, names: dict[int, str], since_ns: int = 0) -> Event:
    ev = abi.Event.from_buffer_copy(raw[: ctypes.sizeof(abi.Event)])
    # Event timestamps are CLOCK_MONOTONIC; place them on the wall clock.
    wall = time.time() - (time.monotonic_ns() - ev.ts_ns) / 1e9
    has_ports = ev.proto in (6, 17, 132) and ev.family in (4, 6)
    return Event(
        time=round(wall, 6),
        interface=iface,
        direction="ingress" if ev.dir == abi.DIR_INGRESS else "egress",
        reason=abi.EVENT_REASONS.get(ev.reason, str(ev.reason)),
        rule=names.get(ev.rule_id) if ev.rule_id else None,
        verdict="pass (audit)" if ev.audit else "drop",
        family=ev.family,
        proto=ev.proto,
        src=_addr(bytes(ev.src), ev.family),
        dst=_addr(bytes(ev.dst), ev.family),
        sport=ev.sport if has_ports else None,
        dport=ev.dport if has_ports else None,
        length=ev.len,
        backlog=ev.ts_ns < since_ns,
    )


def stream(
    pin: str,
    iface: str,
    names: dict[int, str],
    stop: Callable[[], bool],
    poll_ms: int = 200,
    backlog: bool = False,
) -> Iterator[Event]:
    """Events from the ring buffer pinned at `pin`, until stop() says so.

    Events made before this call (what the buffer kept while nobody read
    it) are skipped, or with `backlog` marked as such.  Both sides use
    CLOCK_MONOTONIC: the programs' bpf_ktime_get_ns and time.monotonic_ns.
    """
    since = time.monotonic_ns()
    lib = _libbpf()
    fd = B.obj_get(pin)
    pending: list[Event] = []

    def on_sample(_ctx: int | None, data: int, size: int) -> int:
        ev = decode(ctypes.string_at(data, size), iface, names, since)
        if backlog or not ev.backlog:
            pending.append(ev)
        return 0

    cb = L.SAMPLE_FN(on_sample)  # keep a reference for as long as libbpf may call it
    rb = lib.ring_buffer__new(fd, cb, None, None)
    if not rb:
        B_err = ctypes.get_errno()
        raise KernelError(f"cannot open the event ring buffer {pin}: errno {B_err}")
    try:
        while not stop():
            n = lib.ring_buffer__poll(rb, poll_ms)
            if n < 0 and n != -4:  # -EINTR: a signal, poll again
                raise KernelError(f"reading events failed: errno {-n}")
            while pending:
                yield pending.pop(0)
    finally:
        lib.ring_buffer__free(rb)
        os.close(fd)
