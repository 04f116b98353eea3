"""The egress program over netlink (clsact + cls_bpf), for kernels without tcx links.

A direct-action bpf filter at the clsact egress hook, installed and
replaced in one netlink request each: `replace` swaps the program
atomically, as BPF_LINK_UPDATE does for tcx.  Used only when the one-time
probe finds no tcx links in the kernel (datapath/links.py), or a test forces
it with XDPGUARD_FORCE_TC_NETLINK=1.
"""

from __future__ import annotations

import errno
from typing import Any

from xdpguard.net.netns import NetError

CLSACT_EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
PRIO = 49152  # out of the way of filters an operator numbers by hand
HANDLE = 0x1
ETH_P_ALL = 0x0003


def _filter_args(prog_fd: int, name: str) -> dict[str, Any]:
    return {
        "fd": prog_fd,
        "name": name,
        "parent": CLSACT_EGRESS,
        "handle": HANDLE,
        "prio": PRIO,
        "protocol": ETH_P_ALL,
        "classid": 1,
        "direct_action": True,
    }


def attach_egress(ifindex: int, prog_fd: int, name: str = "xg_egress") -> None:
    """Install (or atomically replace) our filter at the egress hook."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise NetError(f"add clsact qdisc on ifindex {ifindex}: {e}") from e
        try:
            ipr.tc("replace-filter", "bpf", ifindex, **_filter_args(prog_fd, name))
        except NetlinkError as e:
            raise NetError(f"attach the egress program (cls_bpf) on ifindex {ifindex}: {e}") from e


def detach_egress(ifindex: int) -> bool:
    """Remove our filter; False when it was not there.  The clsact qdisc stays (others may use it)."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.tc(
                "del-filter",
                "bpf",
                ifindex,
                parent=CLSACT_EGRESS,
                handle=HANDLE,
                prio=PRIO,
                protocol=ETH_P_ALL,
            )
        except NetlinkError as e:
            if e.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return False
            raise NetError(f"remove the egress filter on ifindex {ifindex}: {e}") from e
    return True


def egress_filter_present(ifindex: int) -> bool:
    """Is a cls_bpf filter at our egress hook?  (The protection check asks;
    pyroute2 does not decode the filter's program id, so only its presence.)"""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            filters = ipr.get_filters(ifindex, parent=CLSACT_EGRESS)
        except NetlinkError:
            return False
    return any(f.get_attr("TCA_KIND") == "bpf" for f in filters)
