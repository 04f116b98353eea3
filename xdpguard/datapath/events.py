"""Reading sampled drop events from the pinned ring buffer (libbpf via ctypes, no bcc).

The programs emit one event for one drop decision in `sample` (and at most
`max_rate` per second per CPU), so a flood shows up as a trickle of
representative events, not as a flood of log lines.
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
from xdpguard.errors import KernelError

_SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def _libbpf() -> ctypes.CDLL:
    try:
        lib = B.libbpf()
    except B.BpfError as e:
        raise KernelError(f"reading events: {e.sentence}") from e
    lib.ring_buffer__new.restype = ctypes.c_void_p
    lib.ring_buffer__new.argtypes = [ctypes.c_int, _SAMPLE_FN, ctypes.c_void_p, ctypes.c_void_p]
    lib.ring_buffer__poll.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.ring_buffer__poll.restype = ctypes.c_int
    lib.ring_buffer__free.argtypes = [ctypes.c_void_p]
    return lib


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _addr(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw)) if family in (4, 6) else ""


def decode(raw: bytes, iface: str, names: dict[int, str]) -> Event:
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
    )


def stream(
    pin: str, iface: str, names: dict[int, str], stop: Callable[[], bool], poll_ms: int = 200
) -> Iterator[Event]:
    """Events from the ring buffer pinned at `pin`, until stop() says so."""
    lib = _libbpf()
    fd = B.obj_get(pin)
    pending: list[Event] = []

    def on_sample(_ctx: int | None, data: int, size: int) -> int:
        pending.append(decode(ctypes.string_at(data, size), iface, names))
        return 0

    cb = _SAMPLE_FN(on_sample)  # keep a reference for as long as libbpf may call it
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
