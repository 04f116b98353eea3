"""XDPGUARD_CACHE_DIR, where the SYN-cookie object is built: its faults are said, or mended.

A cache directory that cannot be one is the machine's state (exit 1, the
path named, never an internal error); a cached object libbpf cannot open
is built again once, quietly, instead of failing every apply until someone
deletes it by hand.  Opening an object needs libbpf.so.1, not root; the
rebuild of the real object needs clang.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xdpguard.datapath import libbpf as L
from xdpguard.datapath import syncookie
from xdpguard.errors import KernelError, XdpguardError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("XDPGUARD_CACHE_DIR", str(d))
    return d


def _libbpf():  # type: ignore[no-untyped-def]
    try:
        return L.lib()
    except Exception as e:  # noqa: BLE001 - whatever keeps libbpf.so.1 away
        pytest.skip(f"no libbpf.so.1: {e}")


def test_a_cache_dir_that_is_a_file_is_named(cache: Path) -> None:
    cache.write_text("not a directory")
    with pytest.raises(XdpguardError) as e:
        syncookie.build()
    assert type(e.value) is XdpguardError and e.value.exit_code == 1
    assert f"XDPGUARD_CACHE_DIR ({cache})" in str(e.value) and f"{cache} is not a directory" in str(e.value)
    assert cache.read_text() == "not a directory"


def test_a_cache_dir_under_a_file_is_named(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.write_text("not a directory")
    monkeypatch.setenv("XDPGUARD_CACHE_DIR", str(cache / "sub"))
    with pytest.raises(XdpguardError, match="is not a directory"):
        syncookie.build()


def _fake_build(junk: bytes, calls: list[bool]):  # type: ignore[no-untyped-def]
    def build(rebuild: bool = False) -> Path:
        calls.append(rebuild)
        out = syncookie._object_path()
        out.parent.mkdir(parents=True, exist_ok=True)
        if rebuild or not out.exists():
            out.write_bytes(junk)
        return out

    return build


def test_an_object_that_will_not_open_is_built_once_more_then_said(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A cached object libbpf cannot open: one rebuild; when that one will not
    open either, the error (exit 1) carries libbpf's lines of that attempt only."""
    lib = _libbpf()
    cache.mkdir()
    syncookie._object_path().write_bytes(b"\x7fELF truncated")
    calls: list[bool] = []
    monkeypatch.setattr(syncookie, "build", _fake_build(b"\x7fELF still junk", calls))
    with syncookie._captured(lib), pytest.raises(KernelError) as e:
        syncookie._open(lib)
    assert calls == [False, True]
    msg = str(e.value)
    assert msg.startswith(f"syn_cookies: opening {syncookie._object_path()} failed")
    assert msg.count("libbpf: loading object from") == 1, msg
    assert "libbpf" not in capfd.readouterr().err


def test_an_object_built_just_now_is_not_built_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = _libbpf()
    calls: list[bool] = []
    monkeypatch.setattr(syncookie, "build", _fake_build(b"junk", calls))
    with syncookie._captured(lib), pytest.raises(KernelError):
        syncookie._open(lib)
    assert calls == [False]


@pytest.mark.skipif(shutil.which("clang") is None, reason="building the object needs clang (`make setup`)")
@pytest.mark.skipif(not Path("/usr/include/bpf/bpf_helpers.h").exists(), reason="needs libbpf-dev")
def test_a_truncated_cached_object_is_rebuilt_quietly(cache: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lib = _libbpf()
    path = syncookie.build()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    capfd.readouterr()
    with syncookie._captured(lib):
        obj = syncookie._open(lib)
    lib.bpf_object__close(obj)
    assert path.read_bytes() == whole
    assert sorted(p.name for p in cache.iterdir()) == sorted(["inc", path.name])  # no temporary left
    assert "libbpf" not in capfd.readouterr().err
