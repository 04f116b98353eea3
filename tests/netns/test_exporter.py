"""`xdpguard exporter`: Prometheus metrics equal what crossed the wire.

A rule file is applied in the lab's B namespace through the CLI, a known
number of real frames is sent from A, and the exporter, started as an
operator would (on the host, no --netns: it reads maps through their pins),
is scraped over HTTP.  The per-rule counters, rule-set metadata and the
attachment gauge must match; the exporter must stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.netns.clihelp import (
    MDNS_DISCARD_RULES,
    REPO,
    Frames,
    Guard,
    describe,
    lab_env,
    send_and_see,
    write_rules,
)
from tests.netns.traffic import Lab

RULES = (
    MDNS_DISCARD_RULES
    + """\
        - name: limit-echo
          match: {proto: udp, dport: 7}
          action: allow
          rate_limit: {pps: 1, burst: 2, per: rule}
    egress:
      default: allow
      rules:
        - name: no-smtp-out
          match: {proto: tcp, dport: 25}
          action: drop
"""
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Exporter:
    def __init__(self, lab: Lab, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        cmd = [sys.executable, "-m", "xdpguard", "exporter", "--listen", f"127.0.0.1:{self.port}", *args]
        self.proc = subprocess.Popen(
            cmd, env=lab_env(lab), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.text()
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    out, err = self.proc.communicate()
                    raise AssertionError(
                        f"exporter did not come up (exit {self.proc.returncode}):\n{out}\n{err}"
                    ) from None
                time.sleep(0.1)

    def text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            body: bytes = r.read()
            return body.decode()

    def samples(self) -> Samples:
        out: Samples = {}
        for fam in text_string_to_metric_families(self.text()):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"exporter ignored SIGTERM:\n{err}") from None
        return self.proc.returncode, err


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have: {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


def test_metrics_match_the_wire(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, RULES)
    guard.apply(rules)
    fx = Frames(lab.a, lab.b)
    frames = {f"mdns{i}": fx.udp(dport=5353, sport=41000 + i) for i in range(7)}
    frames |= {f"discard{i}": fx.udp(dport=9, sport=42000 + i) for i in range(5)}
    frames |= {f"echo{i}": fx.udp(dport=7, sport=43000 + i) for i in range(6)}
    arrived, sent = send_and_see(lab, frames)
    assert {k for k in arrived if not k.startswith("echo")} == {f"mdns{i}" for i in range(7)}
    echo_passed = len([k for k in arrived if k.startswith("echo")])
    assert 2 <= echo_passed < 6, f"the rate limit (burst 2) let {echo_passed} of 6 through"
    size = {k: len(v) for k, v in sent.items()}

    exp = Exporter(lab)
    try:
        s = exp.samples()
        iface = lab.b.ifname

        def rule(metric: str, name: str, action: str, direction: str = "ingress") -> float:
            return value(s, metric, interface=iface, direction=direction, rule=name, action=action)

        assert rule("xdpguard_rule_packets_total", "allow-mdns", "allow") == 7
        assert rule("xdpguard_rule_bytes_total", "allow-mdns", "allow") == sum(
            size[f"mdns{i}"] for i in range(7)
        )
        assert rule("xdpguard_rule_packets_total", "drop-discard", "drop") == 5
        assert rule("xdpguard_rule_bytes_total", "drop-discard", "drop") == sum(
            size[f"discard{i}"] for i in range(5)
        )
        # What a label says happened did happen: the rate-limited rule allowed the packets
        # within its limit; the others were dropped over it, and are counted as such.
        assert rule("xdpguard_rule_packets_total", "limit-echo", "allow") == echo_passed
        echo_bytes = {k: size[k] for k in size if k.startswith("echo")}
        passed_bytes = sum(echo_bytes[k] for k in arrived if k.startswith("echo"))
        assert rule("xdpguard_rule_bytes_total", "limit-echo", "allow") == passed_bytes
        over = value(
            s,
            "xdpguard_rule_over_limit_packets_total",
            interface=iface,
            direction="ingress",
            rule="limit-echo",
        )
        assert over == 6 - echo_passed
        assert (
            value(
                s,
                "xdpguard_rule_over_limit_bytes_total",
                interface=iface,
                direction="ingress",
                rule="limit-echo",
            )
            == sum(echo_bytes.values()) - passed_bytes
        )
        assert rule("xdpguard_rule_packets_total", "no-smtp-out", "drop", "egress") == 0
        # Only rate-limited rules have an over-limit series.
        assert ("xdpguard_rule_over_limit_packets_total", frozenset(
            {"interface": iface, "direction": "ingress", "rule": "allow-mdns"}.items()
        )) not in s  # fmt: skip

        # One metric for every drop, by reason.
        def dropped(reason: str, direction: str = "ingress") -> float:
            return value(
                s, "xdpguard_dropped_packets_total", interface=iface, direction=direction, reason=reason
            )

        assert dropped("rule") == 5 and dropped("rate_limit") == 6 - echo_passed
        assert dropped("default") == 0 and dropped("malformed") == 0 and dropped("blocked") == 0
        assert dropped("rule", "egress") == 0
        assert value(
            s, "xdpguard_dropped_bytes_total", interface=iface, direction="ingress", reason="rule"
        ) == sum(size[f"discard{i}"] for i in range(5))

        for d in ("ingress", "egress"):
            for stem in ("malformed", "non_ip", "ndp", "blocked_source"):
                assert f"xdpguard_{stem}_packets_total" in {k[0] for k in s}
            value(s, "xdpguard_default_packets_total", interface=iface, direction=d, action="allow")
        assert value(s, "xdpguard_malformed_packets_total", interface=iface, direction="ingress") == 0
        assert value(s, "xdpguard_blocked_source_packets_total", interface=iface, direction="ingress") == 0
        assert value(s, "xdpguard_blocked_sources", interface=iface) == 0
        assert value(s, "xdpguard_flow_table_size", interface=iface) > 0
        value(s, "xdpguard_flow_table_entries", interface=iface)
        value(s, "xdpguard_flows_created_total", interface=iface)
        value(s, "xdpguard_flows_evicted_total", interface=iface)
        table = guard.stats()["limiter"]["table_size"]
        assert value(s, "xdpguard_limit_table_size", interface=iface) == table
        assert value(s, "xdpguard_limit_slots_held", interface=iface) == guard.stats()["limiter"]["held"] == 0
        for d in ("ingress", "egress"):  # the set's per-rule limits never reach the per-source table
            assert value(s, "xdpguard_limit_overflow_packets_total", interface=iface, direction=d) == 0

        status = guard.status()
        assert value(s, "xdpguard_attached", interface=iface) == 1
        assert value(s, "xdpguard_ruleset_version", interface=iface) == status["version"]
        assert value(s, "xdpguard_ruleset_consistent", interface=iface) == 1
        assert value(s, "xdpguard_scrape_error", interface=iface) == 0
        applied = json.loads((lab.state_dir / iface / "applied.json").read_text())
        assert value(s, "xdpguard_ruleset_applied_timestamp_seconds", interface=iface) == pytest.approx(
            applied["applied_at"]
        )
        info = [k for k in s if k[0] == "xdpguard_ruleset_info"]
        assert len(info) == 1
        labels = dict(info[0][1])
        assert labels["digest"] == status["digest"]
        assert labels["file"] == str(rules.resolve())
        assert labels["netns"] == lab.b.ns
        assert labels["mode"] == "enforce"

        # Each scrape reads the maps afresh: more frames, higher counters.
        send_and_see(lab, {f"more{i}": fx.udp(dport=9, sport=44000 + i) for i in range(3)})
        s = exp.samples()
        assert rule("xdpguard_rule_packets_total", "drop-discard", "drop") == 8
    finally:
        code, err = exp.stop()
    assert code == 0, err
    assert "Traceback" not in err, err


def test_unattached_interface_is_reported_not_fatal(lab: Lab, guard: Guard, tmp_path: Path) -> None:
    guard.apply(write_rules(tmp_path, RULES))
    exp = Exporter(lab, "--iface", lab.b.ifname, "--iface", "nosuch0")
    try:
        s = exp.samples()
        assert value(s, "xdpguard_attached", interface=lab.b.ifname) == 1
        assert value(s, "xdpguard_scrape_error", interface=lab.b.ifname) == 0
        assert value(s, "xdpguard_attached", interface="nosuch0") == 0
        assert not [
            k for k in s if k[0] == "xdpguard_rule_packets_total" and ("interface", "nosuch0") in k[1]
        ]
    finally:
        code, err = exp.stop()
    assert code == 0, err


def test_listen_errors_are_usage_errors(lab: Lab) -> None:
    for bad in ("9877", "localhost:9877", "127.0.0.1:0", "127.0.0.1:http"):
        r = subprocess.run(
            [sys.executable, "-m", "xdpguard", "exporter", "--listen", bad],
            env=lab_env(lab), cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, describe(r)
        assert "--listen" in r.stderr and "Traceback" not in r.stderr, describe(r)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "xdpguard", "exporter", "--listen", f"127.0.0.1:{port}"],
            env=lab_env(lab), cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 1, describe(r)
    assert "cannot listen" in r.stderr and "Traceback" not in r.stderr, describe(r)
