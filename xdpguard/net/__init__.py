"""Interfaces and network namespaces, over netlink.

This package is the only place that imports pyroute2: everything else asks
for ifindexes, veth pairs, addresses and namespaces through the typed
functions re-exported here.  pyroute2 is imported inside the functions
that talk netlink, never at module level: it costs ~100 ms, and what the
CLI needs on every run (an ifindex, entering a namespace) goes through
plain sockets and setns(2) instead.
"""

from xdpguard.net.links import (
    NoSuchInterface,
    add_address,
    create_veth_pair,
    delete_link,
    get_gro,
    get_mac,
    ifindex,
    ifname,
    link_exists,
    neigh_add,
    netns_with_interface,
    set_gro,
    set_mac,
    set_up,
    veth_peer_receives_xdp_tx,
    xdp_mode,
)
from xdpguard.net.netns import (
    NetError,
    NoSuchNetns,
    create_netns,
    delete_netns,
    enter_netns,
    in_netns,
    list_netns,
    netns_exists,
    netns_path,
)
from xdpguard.net.sockets import Connection, opened_connections
from xdpguard.net.tc import attach_egress, detach_egress, egress_filter_present

__all__ = [
    "Connection",
    "opened_connections",
    "attach_egress",
    "detach_egress",
    "egress_filter_present",
    "NetError",
    "NoSuchInterface",
    "NoSuchNetns",
    "add_address",
    "create_netns",
    "create_veth_pair",
    "delete_link",
    "delete_netns",
    "enter_netns",
    "get_gro",
    "get_mac",
    "ifindex",
    "ifname",
    "in_netns",
    "link_exists",
    "list_netns",
    "neigh_add",
    "set_mac",
    "netns_exists",
    "netns_path",
    "netns_with_interface",
    "set_gro",
    "set_up",
    "veth_peer_receives_xdp_tx",
    "xdp_mode",
]
