"""bench.classbench: ClassBench rules and traces -> xdpguard rule files and frames."""

from __future__ import annotations

import pytest

from bench import classbench as cb
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.packet import parse_frame
from xdpguard.rules.parse import parse_text

ACL_LINE = "@237.73.3.4/32\t67.236.63.210/32\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t\n"
ANY_LINE = "@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n"
RANGE_LINE = "@10.0.0.0/8\t192.168.1.0/24\t1024 : 65535\t53 : 53\t0x11/0xFF\t0x0000/0x0000\t\n"
GRE_LINE = "@1.2.3.0/24\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x2f/0xFF\t0x0000/0x0000\t\n"
TRACE_LINE = "1923697128\t2273746465\t0\t1221\t6\t4294967295\t261\n"


def test_parse_rule_line():
    r = cb.parse_rule_line(ACL_LINE)
    assert r.src == (0xED490304, 32)
    assert r.dst == (0x43EC3FD2, 32)
    assert r.sport == (0, 65535) and r.dport == (1711, 1711)
    assert (r.proto, r.proto_mask) == (6, 0xFF) and not r.any_proto
    assert r.flags == "0x0000/0x0200"
    a = cb.parse_rule_line(ANY_LINE)
    assert a.src == (0, 0) and a.any_proto


def test_parse_rule_line_rejects_garbage():
    with pytest.raises(ValueError):
        cb.parse_rule_line("237.73.3.4/32\t1.2.3.4/32\n")


def test_parse_trace_line():
    h = cb.parse_trace_line(TRACE_LINE)
    assert h == cb.Header(1923697128, 2273746465, 0, 1221, 6)


def test_known_lines_to_match():
    assert cb.rule_match(cb.parse_rule_line(ACL_LINE)) == {
        "src": "237.73.3.4/32",
        "dst": "67.236.63.210/32",
        "proto": "tcp",
        "dport": "1711",
    }
    assert cb.rule_match(cb.parse_rule_line(ANY_LINE)) == {"src": "0.0.0.0/0", "dst": "0.0.0.0/0"}
    assert cb.rule_match(cb.parse_rule_line(RANGE_LINE)) == {
        "src": "10.0.0.0/8",
        "dst": "192.168.1.0/24",
        "proto": "udp",
        "sport": '"1024-65535"',
        "dport": "53",
    }
    assert cb.rule_match(cb.parse_rule_line(GRE_LINE))["proto"] == "47"


def test_ports_on_other_protocol_refused():
    bad = "@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x00/0x00\t0x0000/0x0000\t\n"
    with pytest.raises(ValueError):
        cb.rule_match(cb.parse_rule_line(bad))


def test_yaml_alternates_actions_and_parses():
    rules = [cb.parse_rule_line(x) for x in (ACL_LINE, RANGE_LINE, GRE_LINE, ANY_LINE)]
    text = cb.to_yaml(rules, "t")
    rs = parse_text(text)
    got = [(r.name, r.action.value) for r in rs.ingress.rules]
    assert got == [("t-0", "allow"), ("t-1", "drop"), ("t-2", "allow"), ("t-3", "drop")]
    assert rs.ingress.default.value == "allow"


def test_frames_parse_back():
    for proto in (6, 17, 1, 47, 0, 255):
        h = cb.Header(0x0A000001, 0xC0A80101, 1234, 53, proto)
        f = cb.frame(h)
        assert len(f) == cb.FRAME_LEN
        p = parse_frame(f)
        assert (p.kind, p.src, p.dst, p.proto) == ("ip", h.src, h.dst, proto)
        if proto in (6, 17):
            assert (p.sport, p.dport) == (1234, 53)


@pytest.mark.parametrize("name", cb.SETS)
def test_plan_first_match_equals_linear_scan(name):
    if not (cb.DATA_DIR / name).exists():
        pytest.skip(f"ClassBench data not found at {cb.DATA_DIR}")
    rules = cb.parse_rules(cb.DATA_DIR / name)
    headers = cb.parse_trace(cb.DATA_DIR / f"{name}_trace", limit=500)
    assert len(headers) == 500
    pc = PlanClassifier(compile_ruleset(parse_text(cb.to_yaml(rules, name))))
    for h in headers:
        want = cb.first_match(rules, h)
        v = pc.classify("ingress", parse_frame(cb.frame(h)))
        assert v.rule_index == want, (h, want, v)
        assert v.action == ("drop" if want is not None and want % 2 else "pass")


def test_drawn_headers_fall_inside_their_rules():
    rules = [cb.parse_rule_line(x) for x in (ACL_LINE, RANGE_LINE, GRE_LINE)]
    hs = cb.drawn_headers(rules, 200, seed=3)
    assert len(hs) == 200
    # Every header matches some rule (the one it was drawn in, or an earlier one).
    assert all(cb.first_match(rules, h) is not None for h in hs)
    assert {cb.first_match(rules, h) for h in hs} == {0, 1, 2}
    assert hs == cb.drawn_headers(rules, 200, seed=3)  # deterministic


def test_all_drop_yaml_drops_every_rule_and_by_default():
    rules = [cb.parse_rule_line(x) for x in (ACL_LINE, RANGE_LINE, GRE_LINE)]
    rs = parse_text(cb.to_yaml(rules, "t", all_drop=True))
    assert {r.action.value for r in rs.ingress.rules} == {"drop"}
    assert rs.ingress.default.value == "drop"
