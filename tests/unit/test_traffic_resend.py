"""The lab's frame senders (tests/netns/pace.py, used by traffic.py and
flood.py): a frame the kernel dropped on the way out (ENOBUFS) is sent
again while the drop is transient, never otherwise."""

from __future__ import annotations

import errno

import pytest

from tests.netns import pace


class FakeSocket:
    """Fails the first `fails` sends with `err`, then takes every frame."""

    def __init__(self, fails: int, err: int = errno.ENOBUFS) -> None:
        self.fails, self.err = fails, err
        self.attempts = 0
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> int:
        self.attempts += 1
        if self.fails:
            self.fails -= 1
            raise OSError(self.err, "fake")
        self.sent.append(frame)
        return len(frame)


def test_a_frame_dropped_by_a_full_ring_is_sent_again() -> None:
    sock = FakeSocket(fails=3)
    pace.send_resending(sock, b"frame", resend_dropped=True)  # type: ignore[arg-type]
    assert sock.sent == [b"frame"]
    assert sock.attempts == 4


def test_without_resend_the_drop_is_reported_at_once() -> None:
    sock = FakeSocket(fails=1)
    with pytest.raises(OSError) as e:
        pace.send_resending(sock, b"frame", resend_dropped=False)  # type: ignore[arg-type]
    assert e.value.errno == errno.ENOBUFS
    assert sock.attempts == 1


def test_other_errors_are_never_retried() -> None:
    sock = FakeSocket(fails=1, err=errno.ENETDOWN)
    with pytest.raises(OSError) as e:
        pace.send_resending(sock, b"frame", resend_dropped=True)  # type: ignore[arg-type]
    assert e.value.errno == errno.ENETDOWN
    assert sock.attempts == 1


def test_a_drop_that_lasts_is_raised_after_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "RESEND_S", 0.02)
    sock = FakeSocket(fails=10**9)
    with pytest.raises(OSError) as e:
        pace.send_resending(sock, b"frame", resend_dropped=True)  # type: ignore[arg-type]
    assert e.value.errno == errno.ENOBUFS
    assert sock.sent == [] and sock.attempts > 1
