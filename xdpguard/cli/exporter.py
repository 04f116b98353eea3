"""`exporter`: serve the data plane's counters as Prometheus metrics over HTTP.

Listen on a management address (the default is 127.0.0.1:9877), never on
an address of the interface xdpguard filters: the exporter answers anyone
who reaches it.  It reads maps through their bpffs pins, which need no
network namespace, so it runs on the host even when the filtered
interfaces live in namespaces; the global --netns would move its listening
socket into that namespace, which is rarely what an operator wants.
SIGTERM and Ctrl-C stop it cleanly (exit 0).
"""

from __future__ import annotations

import ipaddress
import signal
import threading
from types import FrameType

import typer

from xdpguard.cli.common import CONTEXT, err_console
from xdpguard.errors import KernelError, UsageError

DEFAULT_LISTEN = "127.0.0.1:9877"


def parse_listen(value: str) -> tuple[str, int]:
    """'ADDR:PORT' or '[V6ADDR]:PORT' -> (address, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host:
        raise UsageError(f"--listen must be ADDR:PORT, e.g. {DEFAULT_LISTEN} or [::1]:9877 (got {value!r})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError as e:
        raise UsageError(f"--listen: {host!r} is not an IP address (got {value!r})") from e
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UsageError(f"--listen: port must be 1-65535 (got {port_s!r})")
    return host, int(port_s)


def exporter(
    listen: str = typer.Option(
        DEFAULT_LISTEN,
        "--listen",
        metavar="ADDR:PORT",
        help="address to serve /metrics on (a management address)",
    ),
    iface: list[str] = typer.Option(
        [],
        "--iface",
        "-i",
        help="interface to export (repeat; default: every interface xdpguard knows, per scrape)",
    ),
) -> None:
    """Serve Prometheus metrics (per-rule counters, drops, flow table, rule set) read on each scrape."""
    # lazy: keeps --help and the other commands' start-up free of prometheus_client and the data path
    from prometheus_client import CollectorRegistry, start_http_server

    from xdpguard.metrics import XdpguardCollector

    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(XdpguardCollector(iface))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise KernelError(f"cannot listen on {listen}: {e.strerror or e}") from e

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    where = f" (in network namespace {CONTEXT['netns']})" if CONTEXT["netns"] else ""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    err_console.print(f"xdpguard exporter: serving http://{shown}/metrics{where}", soft_wrap=True)
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    thread.join(5)
    err_console.print("xdpguard exporter: stopped")
