"""The lab itself: frames cross the veth pair intact in both directions,
reach sockets in the other namespace, and the environment is isolated."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.netns.traffic import Direction, Lab, capture, exchange, new_marker, send_frames, udp_frame
from xdpguard import net


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("direction", ["a_to_b", "b_to_a"])
def test_udp_frames_cross_intact(lab: Lab, v6: bool, direction: Direction) -> None:
    src, dst = lab.sides(direction)
    marker = new_marker()
    frames = [udp_frame(src, dst, marker + b"%02d" % i, v6=v6) for i in range(20)]
    arrived = exchange(lab, frames, direction, marker=marker)
    assert sorted(arrived) == sorted(frames)


def test_exchange_without_marker_matches_sent_frames(lab: Lab) -> None:
    frames = [udp_frame(lab.a, lab.b, b"no-marker-%d" % i) for i in range(5)]
    assert sorted(exchange(lab, frames)) == sorted(frames)


def test_capture_sees_only_its_side(lab: Lab) -> None:
    marker = new_marker()
    frame = udp_frame(lab.a, lab.b, marker)
    # Exact match: B answers with an ICMP port unreachable that quotes the
    # marker, and that one does arrive on A.
    with capture(lab.a.ns, lab.a.ifname, duration=0.3, match=lambda f: f == frame) as on_a:
        send_frames(lab.a.ns, lab.a.ifname, [frame])
        # The sender's own outgoing copy is not an arrival.
        assert on_a.wait() == []


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_frames_reach_a_socket_in_the_other_namespace(lab: Lab, v6: bool) -> None:
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with net.in_netns(lab.b.ns):
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.bind((lab.b.ip6 if v6 else lab.b.ip4, 5353))
        sock.settimeout(2)
        payloads = [new_marker() for _ in range(3)]
        send_frames(lab.a.ns, lab.a.ifname, [udp_frame(lab.a, lab.b, p, v6=v6) for p in payloads])
        got = [sock.recvfrom(2048) for _ in payloads]
    assert sorted(data for data, _ in got) == sorted(payloads)
    assert {addr[0] for _, addr in got} == {lab.a.ip6 if v6 else lab.a.ip4}


def test_lab_is_isolated(lab: Lab) -> None:
    assert os.environ["XDPGUARD_BPFFS"] == str(lab.bpffs)
    assert lab.bpffs.parent == Path("/sys/fs/bpf")
    assert os.environ["XDPGUARD_STATE_DIR"] == str(lab.state_dir)
    assert lab.state_dir.is_dir()
    assert net.ifindex(lab.a.ifname, lab.a.ns) == lab.a.ifindex
    assert net.ifindex(lab.b.ifname, lab.b.ns) == lab.b.ifindex
    assert not net.link_exists(lab.a.ifname)  # nothing leaks into our namespace
    assert net.get_gro(lab.b.ns, lab.b.ifname)
