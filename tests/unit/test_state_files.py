"""The state directory's rules, without a kernel: trust, private atomic files, damage.

The netns tests (tests/netns/test_state_dir.py) drive the same code through
the CLI with real file-system faults; these pin the rules themselves down.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from xdpguard import state as S
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import IP, MALFORMED, parse_frame
from xdpguard.rules.parse import parse_text

RULES = (
    "version: 1\ningress:\n  default: allow\n  rules:\n"
    "    - {name: a, match: {proto: udp, dport: 9}, action: drop}\n"
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("XDPGUARD_STATE_DIR", str(d))
    S._trusted.clear()
    return d


def snapshot(seq: int = 1) -> S.Snapshot:
    plan = compile_ruleset(parse_text(RULES, "r.yaml"))
    applied = S.Applied("eth0", 2, None, "/r.yaml", plan.digest, 1.0, seq, "auto", "x")
    return S.Snapshot(applied, plan.to_bytes(), RULES, {"rules": {}})


def test_commit_writes_private_files_and_reads_back(root: Path) -> None:
    st = S.Iface("eth0")
    st.commit(snapshot())
    for p in [root / "eth0", *(root / "eth0").rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    assert st.load_applied() == snapshot().applied
    assert st.load_plan().digest == snapshot().applied.digest
    assert [h.applied.seq for h in st.history()] == [1]
    assert not list(root.rglob("*.tmp"))


@pytest.mark.parametrize(
    "content, why",
    [
        (b"[]", "expected an object, found list"),
        (b"{", "not JSON"),
        (None, "seq is 'two'"),
        (b'{"ifname": "eth0"}', "missing"),
    ],
)
def test_damaged_applied_json(root: Path, content: bytes | None, why: str) -> None:
    st = S.Iface("eth0")
    st.commit(snapshot())
    path = root / "eth0" / "applied.json"
    if content is None:
        content = json.dumps(json.loads(path.read_text()) | {"seq": "two"}).encode()
    path.write_bytes(content)
    with pytest.raises(S.DamagedState) as e:
        st.load_applied()
    assert f"file {path} is damaged" in str(e.value) and why in str(e.value)
    assert "xdpguard detach --iface eth0" in str(e.value)


def test_plan_that_is_not_the_recorded_one_is_damaged(root: Path) -> None:
    st = S.Iface("eth0")
    st.commit(snapshot())
    (root / "eth0" / "plan.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(S.DamagedState, match="digest is not the one applied.json records"):
        st.load_plan()
    with pytest.raises(S.DamagedState):
        st.check_plan(st.load_applied())  # type: ignore[arg-type]


def test_symlinked_record_is_refused(root: Path, tmp_path: Path) -> None:
    st = S.Iface("eth0")
    st.commit(snapshot())
    victim = tmp_path / "victim"
    victim.write_text("{}")
    (root / "eth0" / "summary.json").unlink()
    os.symlink(victim, root / "eth0" / "summary.json")
    with pytest.raises(S.StateError, match="symbolic link"):
        st.load_summary()


def test_planted_tmp_symlink_is_replaced_not_followed(root: Path, tmp_path: Path) -> None:
    st = S.Iface("eth0")
    st.commit(snapshot())
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.symlink(victim, root / "eth0" / "plan.bin.tmp")
    st.commit(snapshot(2))
    assert victim.read_bytes() == b"precious"
    assert st.load_applied().seq == 2  # type: ignore[union-attr]


def test_untrusted_directories_are_refused(root: Path, tmp_path: Path) -> None:
    root.mkdir()
    os.chown(root, 65534, 65534)
    with pytest.raises(S.StateError, match="owned by uid 65534, not root"):
        S.secure_state_root()
    os.chown(root, 0, 0)
    root.chmod(0o770)
    with pytest.raises(S.StateError, match="writable by group or others"):
        S.secure_state_root()
    root.chmod(0o700)
    tmp_path.chmod(0o777)  # an ancestor anyone can write, and not sticky
    try:
        with pytest.raises(S.StateError, match="above it"):
            S.secure_state_root()
        tmp_path.chmod(0o1777)  # sticky, like /tmp: fine
        assert S.secure_state_root() == root
    finally:
        tmp_path.chmod(0o700)


def _ipv4_ah(inner_proto: int, inner: bytes, n_ah: int = 1) -> bytes:
    payload = inner
    nh = inner_proto
    for _ in range(n_ah):
        payload = bytes([nh, 1]) + bytes(10) + payload  # (1 + 2) * 4 = 12 bytes
        nh = 51
    tot = 20 + len(payload)
    ip = (
        bytes([0x45, 0])
        + tot.to_bytes(2, "big")
        + bytes(4)
        + bytes([64, nh, 0, 0])
        + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    )
    return bytes(12) + b"\x08\x00" + ip + payload


def test_ipv4_ah_is_walked() -> None:
    tcp = (40000).to_bytes(2, "big") + (22).to_bytes(2, "big") + bytes(8) + bytes([0x50, 0x02]) + bytes(6)
    p = parse_frame(_ipv4_ah(6, tcp))
    assert (p.kind, p.proto, p.sport, p.dport, p.tcp_flags) == (IP, 6, 40000, 22, 0x02)
    assert parse_frame(_ipv4_ah(6, tcp, n_ah=6)).dport == 22
    assert parse_frame(_ipv4_ah(6, tcp, n_ah=7)).kind == MALFORMED  # deeper than the parser follows
    assert parse_frame(_ipv4_ah(6, tcp)[:-4]).kind == MALFORMED  # the TCP header cut short
