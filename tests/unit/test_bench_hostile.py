"""bench.hostile: the frames of the new-source benchmark and the peers' rules, without a kernel."""

from __future__ import annotations

import random
import struct

import pytest

from bench import hostile, report
from tests.netns.flood import flood_source, with_source
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.parse import parse_text


def _ipv4_checksum_ok(frame: bytes) -> bool:
    words = struct.unpack("!10H", frame[14:34])
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def test_v4_frames_are_syns_to_443_from_the_source_asked_for() -> None:
    fr = hostile.V4Frames()
    for i in (0, 1, 12345, 999_999):
        src = hostile.source_v4(i)
        f = fr.frame(src)
        p = parse_frame(f)
        assert (p.kind, p.family, p.src, p.proto, p.dport, p.tcp_flags) == ("ip", 4, src, 6, 443, 0x02)
        assert len(f) == 64 and _ipv4_checksum_ok(f)


def test_v6_frames_are_syns_to_443_from_the_source_asked_for() -> None:
    fr = hostile.V6Frames()
    rng = random.Random(1)
    src = hostile.source_v6(7, rng)
    p = parse_frame(fr.frame(src))
    assert (p.kind, p.family, p.src, p.proto, p.dport, p.tcp_flags) == ("ip", 6, src, 6, 443, 0x02)


def test_every_frame_is_a_new_source() -> None:
    n = 200_000
    assert len({hostile.source_v4(i) for i in range(n)}) == n
    rng = random.Random(2)
    assert len({hostile.source_v6(i, rng) >> 64 for i in range(n)}) == n  # a new /64 each


def test_every_case_is_a_valid_rule_file_that_allows_the_frames() -> None:
    for name, text in hostile.CASES.items():
        plan = compile_ruleset(parse_text(text, f"<{name}>"))
        assert plan.ingress.nrules >= 1, name


def test_nft_meter_is_nfts_per_source_limit_then_a_drop() -> None:
    text = hostile.nft_meter("xgb1")
    assert 'device "xgb1"' in text
    assert "set m { type ipv4_addr; size 65535; flags dynamic; }" in text
    assert "tcp dport 443 update @m { ip saddr limit rate over 100/second } drop" in text
    assert text.rstrip().endswith("}") and "tcp dport 443 drop" in hostile.nft_plain("xgb1")


def test_wire_flood_frames_keep_a_valid_ipv4_header() -> None:
    template = hostile.V4Frames().frame(1)[:42] + bytes(22)
    template = template[:12] + b"\x08\x00" + template[14:23] + b"\x11" + template[24:]  # UDP
    for i in (0, 99_999):
        f = with_source(template, flood_source(i))
        assert _ipv4_checksum_ok(f) and parse_frame(f).src == flood_source(i)


def test_the_forwarding_program_redirects_to_the_given_interface() -> None:
    insns = hostile._redirect_prog(7)
    assert len(insns) == 4 * 8
    op = [insns[i] for i in range(0, len(insns), 8)]
    assert op == [0xB7, 0xB7, 0x85, 0x95]  # r1 = imm; r2 = imm; call; exit
    assert insns[1] == 0x01 and struct.unpack_from("<i", insns, 4)[0] == 7  # r1 = 7
    assert insns[9] == 0x02 and struct.unpack_from("<i", insns, 12)[0] == 0  # r2 = 0: no flags
    assert struct.unpack_from("<i", insns, 20)[0] == hostile.BPF_FUNC_REDIRECT == 23


def test_net_of_reference_takes_the_reference_rows_memory_cost_off_the_per_source_cases() -> None:
    fig = {
        hostile.FLOOR: 90.0,
        hostile.LINE_REF: 190.0,  # 100 ns of memory over the floor
        "plain allow": 140.0,
        "per-source limit": 282.0,
        "per-source + block_for": 290.0,
        "state: established rule": 141.0,
    }
    net = hostile.net_of_reference(fig)
    assert set(net) == {"per-source limit", "per-source + block_for"}  # only the cases given, with state
    assert net["per-source limit"] == pytest.approx(182.0 / 140.0)
    assert net["per-source + block_for"] == pytest.approx(190.0 / 140.0)


def test_the_report_prints_the_net_ratios_beside_the_raw_ones() -> None:
    def fam(ref: float) -> dict[str, object]:
        med = {hostile.FLOOR: 90.0, hostile.LINE_REF: ref, "plain allow": 140.0, "per-source limit": 280.0}
        ratio = {k: v / 140.0 for k, v in med.items() if k != hostile.FLOOR}
        return {
            "median_ns": med,
            "minus_floor_ns": {k: v - 90.0 for k, v in med.items() if k != hostile.FLOOR},
            "ratio_to_plain": ratio,
            "ratio_net_of_reference": hostile.net_of_reference(med),
            "mean98_ratio_net_of_reference": hostile.net_of_reference(med),
        }

    cold = {
        "method": "m",
        "ipv4": fam(190.0),
        "ipv6": fam(150.0),
        "targets": {f: {"per-source limit": {"target": 1.3, "ok": False}} for f in ("ipv4", "ipv6")},
    }
    text = "\n".join(report._hostile_md({"cold": cold}))
    assert "| per-source limit | 280 | 190 | 2.00x | 280 | 190 | 2.00x | <= 1.3x (**MISSED**) |" in text
    assert "per-source limit 1.29x / 1.57x (1.29x / 1.57x)" in text  # (280 - 100) / 140, (280 - 60) / 140
