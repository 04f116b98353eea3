"""Named network namespaces (the /var/run/netns/NAME files of `ip netns`).

Entering a namespace here switches the NETWORK namespace of the calling
thread only.  `ip netns exec` would also unshare the mount namespace and
remount /sys, which hides /sys/fs/bpf: pins made there would vanish and
the CLI could not find its maps.  Threads started after `enter_netns` inherit
the namespace; threads already running keep theirs.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
# /proc/self names the thread-group leader; setns() acts on the calling thread.
_THREAD_NETNS = "/proc/thread-self/ns/net"


class NetError(Exception):
    """A netlink or namespace operation failed; the message says which and why."""


class NoSuchNetns(NetError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no network namespace named {name} (see `ip netns list`)")
        self.name = name


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise NetError(f"invalid network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def list_netns() -> list[str]:
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import netns as _pyroute2_netns

    return sorted(_pyroute2_netns.listnetns())


def create_netns(name: str) -> None:
    """Create a named namespace, like `ip netns add`, and bring its loopback up."""
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import IPRoute
    from pyroute2 import netns as _pyroute2_netns

    if netns_exists(name):
        raise NetError(f"network namespace {name} already exists")
    try:
        _pyroute2_netns.create(name)
    except OSError as e:
        raise NetError(f"cannot create network namespace {name}: {e.strerror or e}") from e
    # A fresh namespace has lo down; traffic to its own addresses would fail.
    with IPRoute(netns=name, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def delete_netns(name: str, missing_ok: bool = True) -> None:
    """Remove the name.  The namespace itself (and the interfaces in it) goes
    away once no process, socket or fd refers to it any more."""
    if not netns_exists(name):
        if missing_ok:
            return
        raise NoSuchNetns(name)
    # lazy: pyroute2 costs ~100 ms to import (see the package doc)
    from pyroute2 import netns as _pyroute2_netns

    try:
        _pyroute2_netns.remove(name)
    except OSError as e:
        raise NetError(f"cannot delete network namespace {name}: {e.strerror or e}") from e


def _setns(target: str | int) -> None:
    """setns(2) on a namespace file or fd.  Plain libc, not pyroute2: the CLI
    enters a namespace on every --netns call, and importing pyroute2 costs
    ~90 ms of start-up."""
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC) if isinstance(target, str) else target
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        if isinstance(target, str):
            os.close(fd)


def enter_netns(name: str) -> None:
    """Move the calling thread into the namespace for good (CLI --netns)."""
    path = netns_path(name)
    if not os.path.exists(path):
        raise NoSuchNetns(name)
    try:
        _setns(path)
    except OSError as e:
        raise NetError(f"cannot enter network namespace {name}: {e.strerror or e}") from e


@contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block in namespace `name` (None: stay put), then switch back.

    Sockets keep the namespace they were created in, so a socket opened in
    the block can be used after it.
    """
    if name is None:
        yield
        return
    path = netns_path(name)
    if not os.path.exists(path):
        raise NoSuchNetns(name)
    original = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(path)
        except OSError as e:
            raise NetError(f"cannot enter network namespace {name}: {e.strerror or e}") from e
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)
