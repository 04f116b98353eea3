"""Interfaces over netlink: lookups, veth pairs, addresses, MACs, neighbours, GRO.

Every function takes the namespace to act in (None = the caller's) and
opens a short-lived IPRoute socket there.  Lookups go through netlink, never
/sys/class/net, because after setns() /sys still shows the namespace it was
mounted from.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

from xdpguard.net.netns import NetError, NoSuchNetns, in_netns, list_netns, netns_exists

IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80

# Legacy ethtool ioctls: simple, and served by every kernel we run on.
SIOCETHTOOL = 0x8946
ETHTOOL_GGRO = 0x2B
ETHTOOL_SGRO = 0x2C


class NoSuchInterface(NetError, LookupError):
    def __init__(self, name: str | int, ns: str | None = None) -> None:
        where = f"network namespace {ns}" if ns else "this network namespace"
        what = f"named {name}" if isinstance(name, str) else f"with index {name}"
        super().__init__(f"no interface {what} in {where}")
        self.name = name
        self.ns = ns


def _ipr(ns: str | None) -> Any:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import IPRoute

    if ns is None:
        return IPRoute()
    if not netns_exists(ns):
        raise NoSuchNetns(ns)
    # flags=0: do not create the namespace if it vanished meanwhile.
    return IPRoute(netns=ns, flags=0)


def _fail(what: str, e: NetlinkError) -> NetError:
    code = int(e.code)
    return NetError(f"{what}: {os.strerror(code) if code > 0 else e}")


def _index(ipr: Any, name: str, ns: str | None) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise NoSuchInterface(name, ns)
    return int(found[0])


def ifindex(name: str, ns: str | None = None) -> int:
    # if_nametoindex asks a socket of the current namespace: right after
    # setns, and far cheaper than netlink (no pyroute2 import on the CLI path).
    with in_netns(ns):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            raise NoSuchInterface(name, ns) from None


def ifname(index: int, ns: str | None = None) -> str:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        try:
            links = ipr.get_links(index)
        except NetlinkError as e:
            raise NoSuchInterface(index, ns) from e
        return str(links[0].get_attr("IFLA_IFNAME"))


def link_exists(name: str, ns: str | None = None) -> bool:
    with _ipr(ns) as ipr:
        return bool(ipr.link_lookup(ifname=name))


def set_up(ns: str | None, name: str, mtu: int | None = None) -> None:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        kwargs: dict[str, Any] = {"state": "up"}
        if mtu is not None:
            kwargs["mtu"] = mtu
        try:
            ipr.link("set", index=_index(ipr, name, ns), **kwargs)
        except NetlinkError as e:
            raise _fail(f"cannot bring {name} up", e) from e


def add_address(ns: str | None, name: str, cidr: str) -> None:
    """Add an address such as "10.0.0.1/24" or "fd00::1/64".  IPv6 addresses
    skip duplicate address detection so they are usable at once."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    iface = ipaddress.ip_interface(cidr)
    with _ipr(ns) as ipr:
        idx = _index(ipr, name, ns)
        flags = IFA_F_NODAD if iface.version == 6 else 0
        try:
            ipr.addr(
                "add",
                index=idx,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                flags=flags,
            )
        except NetlinkError as e:
            raise _fail(f"cannot add {cidr} to {name}", e) from e


def delete_link(name: str, ns: str | None = None, missing_ok: bool = True) -> None:
    """Delete an interface (for a veth, both ends go)."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            if missing_ok:
                return
            raise NoSuchInterface(name, ns)
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as e:
            raise _fail(f"cannot delete {name}", e) from e


def create_veth_pair(
    name_a: str,
    ns_a: str | None,
    name_b: str,
    ns_b: str | None,
    addrs_a: Sequence[str] = (),
    addrs_b: Sequence[str] = (),
    mtu: int = 1500,
) -> tuple[int, int]:
    """Create veth A<->B with each end born in its namespace (None = ours), so
    the names never clash with interfaces elsewhere; assign addresses, bring
    both ends up.  Returns (ifindex of A in ns_a, ifindex of B in ns_b)."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    own_ns_fd = -1
    try:
        if ns_b is None and ns_a is not None:
            # The peer must land in the caller's namespace, named by an fd.
            own_ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        peer: dict[str, Any] = {"ifname": name_b}
        if ns_b is not None:
            if not netns_exists(ns_b):
                raise NoSuchNetns(ns_b)
            peer["net_ns_fd"] = ns_b
        elif own_ns_fd >= 0:
            peer["net_ns_fd"] = own_ns_fd
        with _ipr(ns_a) as ipr:
            try:
                ipr.link("add", ifname=name_a, kind="veth", peer=peer)
            except NetlinkError as e:
                raise _fail(f"cannot create veth pair {name_a}/{name_b}", e) from e
    finally:
        if own_ns_fd >= 0:
            os.close(own_ns_fd)
    for ns, name, addrs in ((ns_a, name_a, addrs_a), (ns_b, name_b, addrs_b)):
        for cidr in addrs:
            add_address(ns, name, cidr)
        set_up(ns, name, mtu)
    return ifindex(name_a, ns_a), ifindex(name_b, ns_b)


def get_mac(ns: str | None, name: str) -> str:
    with _ipr(ns) as ipr:
        link = ipr.get_links(_index(ipr, name, ns))[0]
        return str(link.get_attr("IFLA_ADDRESS"))


def set_mac(ns: str | None, name: str, mac: str) -> None:
    """Give an interface a MAC address (tests re-create interfaces with their old one)."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        try:
            ipr.link("set", index=_index(ipr, name, ns), address=mac)
        except NetlinkError as e:
            raise _fail(f"cannot set MAC {mac} on {name}", e) from e


def neigh_add(ns: str | None, name: str, ip: str, mac: str) -> None:
    """Permanent neighbour entry, so traffic to `ip` needs no ARP/NDP round."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    with _ipr(ns) as ipr:
        try:
            ipr.neigh(
                "replace",
                dst=ip,
                lladdr=mac,
                ifindex=_index(ipr, name, ns),
                state=NUD_PERMANENT,
                family=family,
            )
        except NetlinkError as e:
            raise _fail(f"cannot add neighbour {ip} -> {mac} on {name}", e) from e


def _ethtool_value(ns: str | None, name: str, cmd: int, data: int = 0) -> int:
    # struct ethtool_value {u32 cmd; u32 data}, pointed to by ifreq.ifr_data
    # (offset 16 after the 16-byte name).  The socket decides the namespace.
    value = (ctypes.c_uint32 * 2)(cmd, data)
    ifreq = bytearray(struct.pack("16sQ16x", name.encode()[:15], ctypes.addressof(value)))
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise NoSuchInterface(name, ns) from e
        raise NetError(f"ethtool request {cmd:#x} on {name}: {e.strerror}") from e
    finally:
        sock.close()
    return int(value[1])


def get_gro(ns: str | None, name: str) -> bool:
    return bool(_ethtool_value(ns, name, ETHTOOL_GGRO))


def set_gro(ns: str | None, name: str, on: bool) -> None:
    """Switch generic receive offload.  Frames that XDP redirects into a veth
    (e.g. the live-frames traffic generator) are dropped unless the receiving
    end runs an XDP program or has GRO on: either gives it a NAPI context."""
    if get_gro(ns, name) != on:
        _ethtool_value(ns, name, ETHTOOL_SGRO, int(on))


# IFLA_XDP_ATTACHED (linux/if_link.h: XDP_ATTACHED_DRV, _SKB, _HW, _MULTI),
# as pyroute2 names the values, in the words `--xdp-mode` uses.
XDP_ATTACHED_MODES = {
    "xdp": "native",
    "xdpgeneric": "generic",
    "xdpoffload": "offload",
    "xdpmulti": "multiple",
}


def xdp_mode(index: int, ns: str | None = None) -> str | None:
    """How XDP is attached to the interface, as the kernel reports it: "native"
    (in the driver), "generic" (in the stack), "offload", "multiple", or None."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        try:
            links = ipr.get_links(index)
        except NetlinkError as e:
            raise NoSuchInterface(index, ns) from e
        xdp = links[0].get_attr("IFLA_XDP")
        attached = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp is not None else None
        return XDP_ATTACHED_MODES.get(str(attached)) if attached else None


def veth_peer_receives_xdp_tx(index: int, ns: str | None = None) -> tuple[str, bool | None] | None:
    """For a veth: its peer's name and whether frames that XDP sends back out
    of this end (XDP_TX) reach the peer, None when that cannot be told from
    here (the peer is in another namespace).  None for any other kind of
    interface.  A veth wakes its peer's receive queue for such frames only
    while the peer runs an XDP program; without one they are dropped, or with
    GRO on they wait there until other traffic comes."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(ns) as ipr:
        try:
            link = ipr.get_links(index)[0]
        except NetlinkError as e:
            raise NoSuchInterface(index, ns) from e
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
            return None
        peer = link.get_attr("IFLA_LINK")
        if not peer or link.get_attr("IFLA_LINK_NETNSID") is not None:
            return ("its peer (in another network namespace)", None)
        try:
            pl = ipr.get_links(int(peer))[0]
        except NetlinkError:
            return ("its peer", None)
        xdp = pl.get_attr("IFLA_XDP")
        return (str(pl.get_attr("IFLA_IFNAME")), bool(xdp is not None and xdp.get_attr("IFLA_XDP_ATTACHED")))


def netns_with_interface(name: str) -> list[str]:
    """The named network namespaces (ip netns) that hold an interface called `name`."""
    found = []
    for ns in list_netns():
        try:
            ifindex(name, ns)
        except (NoSuchInterface, NetError, OSError):
            continue
        found.append(ns)
    return found
