"""Connections this host opened before xdpguard was attached, from the kernel's socket table.

The egress program records a flow only from the packet that opens a
connection (a TCP SYN, an SCTP INIT, an echo request, a datagram from a
connected UDP socket: see bpf/lib/flow.h).  A connection opened before the
programs were attached sent that packet unseen, so without help its
replies would be `new`, and a `state: established` rule set attached to a
live host would cut its own connections.  At attach, xdpguard therefore
reads the socket table of the network namespace (sock_diag, as `ss` does)
and records, as flows:

- TCP sockets with a connection (SYN_SENT, ESTABLISHED, FIN_WAIT1/2,
  CLOSE_WAIT, CLOSING, LAST_ACK) whose local port no listening socket
  uses: a connection a remote peer opened was accepted from a listener and
  shares its port, so it is left out;
- UDP sockets that are connected (they have a remote port).

IPv4 addresses that a dual-stack IPv6 socket shows as ::ffff:a.b.c.d are
recorded as IPv4, as the packets are.  SCTP associations and ICMP echo
exchanges are not looked for: they are short-lived or rare.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from xdpguard.net.netns import NetError

# sock_diag state numbers (TCP_* in the kernel).
_TCP_ESTABLISHED, _TCP_SYN_SENT, _TCP_FIN_WAIT1, _TCP_FIN_WAIT2 = 1, 2, 4, 5
_TCP_CLOSE_WAIT, _TCP_LAST_ACK, _TCP_LISTEN, _TCP_CLOSING = 8, 9, 10, 11
_CONNECTED_TCP = (
    _TCP_ESTABLISHED,
    _TCP_SYN_SENT,
    _TCP_FIN_WAIT1,
    _TCP_FIN_WAIT2,
    _TCP_CLOSE_WAIT,
    _TCP_LAST_ACK,
    _TCP_CLOSING,
)
_UDP_CONNECTED = _TCP_ESTABLISHED  # a connected UDP socket reports this state


@dataclass(frozen=True)
class Connection:
    """A connection this host opened; addresses packed (4 or 16 bytes)."""

    proto: int
    local: bytes
    remote: bytes
    lport: int
    rport: int


def _packed(text: str) -> bytes:
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


def _dump(family: int, proto: int, states: tuple[int, ...]) -> list[dict[str, object]]:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import DiagSocket

    mask = 0
    for st in states:
        mask |= 1 << st
    with DiagSocket() as ds:
        ds.bind()
        msgs = ds.get_sock_stats(family=family, protocol=proto, states=mask)
    return [
        {
            "state": m["idiag_state"],
            "src": m["idiag_src"],
            "dst": m["idiag_dst"],
            "sport": m["idiag_sport"],
            "dport": m["idiag_dport"],
        }
        for m in msgs
    ]


def opened_connections() -> list[Connection]:
    """TCP and UDP connections this host opened, in the current network namespace."""
    out: list[Connection] = []
    try:
        families = (socket.AF_INET, socket.AF_INET6)
        listening = {
            int(str(s["sport"])) for fam in families for s in _dump(fam, socket.IPPROTO_TCP, (_TCP_LISTEN,))
        }
        for fam in families:
            for s in _dump(fam, socket.IPPROTO_TCP, _CONNECTED_TCP):
                if int(str(s["sport"])) not in listening:
                    out.append(_connection(socket.IPPROTO_TCP, s))
            for s in _dump(fam, socket.IPPROTO_UDP, (_UDP_CONNECTED,)):
                if int(str(s["dport"])):
                    out.append(_connection(socket.IPPROTO_UDP, s))
    except OSError as e:
        raise NetError(f"read the socket table (sock_diag): {e.strerror or e}") from e
    return [c for c in out if len(c.local) == len(c.remote)]


def _connection(proto: int, s: dict[str, object]) -> Connection:
    return Connection(
        proto, _packed(str(s["src"])), _packed(str(s["dst"])), int(str(s["sport"])), int(str(s["dport"]))
    )
