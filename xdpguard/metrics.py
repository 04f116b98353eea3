"""Prometheus metrics of the live data plane, read from the pinned maps on each scrape.

`XdpguardCollector` has no state of its own and polls nothing in the
background: every scrape calls `Dataplane.stats()` and `.status()` for each
interface, so a scrape shows the maps as they are at that moment and an
idle exporter costs nothing.  The maps are reached through their bpffs pins,
which are not tied to a network namespace: one exporter on the host's
management network serves interfaces that live in any namespace.

Counters are the kernel's per-CPU counters summed; a rule that is new in an
applied rule set starts from zero (Prometheus sees a counter reset), a rule
that is unchanged keeps counting across applies.  A rule's `action` label
is what happened to the packets counted under it: packets a rate-limited
rule dropped over its limit are not in its `action` series but in
`xdpguard_rule_over_limit_packets_total`, and every drop, whatever its
reason, is in `xdpguard_dropped_packets_total{reason}`.  An interface that cannot
be read (not attached, pins damaged) gets `xdpguard_scrape_error 1` and no
other series; the scrape itself never fails because of one interface.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from xdpguard.datapath.dataplane import Dataplane
from xdpguard.errors import XdpguardError
from xdpguard.state import Iface, known_ifaces

RULE_LABELS = ["interface", "direction", "rule", "action"]
LIMIT_LABELS = ["interface", "direction", "rule"]
DIR_LABELS = ["interface", "direction"]
# Why a packet was dropped: the reasons of the programs' drop events.
DROP_REASONS = ("rule", "rate_limit", "default", "malformed", "non_ip", "blocked")
IF_LABELS = ["interface"]

# Counters every direction has, besides the rules: stats() key -> (metric stem, help).
SPECIAL = {
    "malformed": (
        "malformed",
        "Packets dropped as malformed (truncated or inconsistent headers), whatever the rules say.",
    ),
    "non_ip": ("non_ip", "Frames that are neither IPv4 nor IPv6 (verdict: the rule file's non_ip setting)."),
    "ndp": ("ndp", "IPv6 neighbour-discovery packets passed before any rule (ndp: allow)."),
    "blocked": (
        "blocked_source",
        "Packets dropped because their source is blocked by a rate limit's block_for.",
    ),
    "error": (
        "internal_error",
        "Packets that met an internal inconsistency (a bitmap missing); should stay 0.",
    ),
}


def _packets_and_bytes(
    stem: str, help_: str, labels: list[str]
) -> tuple[CounterMetricFamily, CounterMetricFamily]:
    """The counter pair `xdpguard_<stem>_packets` and `_bytes`, the bytes one described by the packets one."""
    return (
        CounterMetricFamily(f"xdpguard_{stem}_packets", help_, labels=labels),
        CounterMetricFamily(
            f"xdpguard_{stem}_bytes", f"Bytes of xdpguard_{stem}_packets_total.", labels=labels
        ),
    )


class _Families:
    """The metric families of one scrape, created up front so each appears once."""

    def __init__(self) -> None:
        c, g = CounterMetricFamily, GaugeMetricFamily
        self.rule_packets, self.rule_bytes = _packets_and_bytes(
            "rule",
            "Packets the rule matched and gave its action (allow, drop, or continue: passed on to the "
            "next rule); a rate-limited rule's packets over its limit are not here but in "
            "xdpguard_rule_over_limit_packets_total.",
            RULE_LABELS,
        )
        self.rule_over, self.rule_over_bytes = _packets_and_bytes(
            "rule_over_limit",
            "Packets a rate-limited rule matched and dropped because they were over its limit.",
            LIMIT_LABELS,
        )
        self.dropped, self.dropped_bytes = _packets_and_bytes(
            "dropped",
            "Packets dropped, by reason: rule (a drop rule), rate_limit (over a rule's limit), default, "
            "malformed, non_ip (non_ip: drop), blocked (a source under block_for).  In mode audit these "
            "are the packets that would have been dropped; they were passed.",
            [*DIR_LABELS, "reason"],
        )
        # SYN cookies (rules with syn_cookies: true): stats key -> family.
        self.syn = {
            key: c(f"xdpguard_syncookies_{key}", help_, labels=RULE_LABELS)
            for key, help_ in (
                ("sent", "SYNs the data plane answered with a SYN cookie."),
                ("valid", "ACKs whose SYN cookie checked out (handed to the listener)."),
                ("invalid", "ACKs with a bad SYN cookie for no existing connection (dropped)."),
                ("handoff_errors", "Valid cookie ACKs the listener could not take."),
            )
        }
        self.default_packets = c(
            "xdpguard_default_packets", "Packets no rule matched (given the direction's default).",
            labels=[*DIR_LABELS, "action"],
        )  # fmt: skip
        self.default_bytes = c(
            "xdpguard_default_bytes", "Bytes of the packets no rule matched.", labels=[*DIR_LABELS, "action"]
        )
        self.special = {
            key: _packets_and_bytes(stem, help_, DIR_LABELS) for key, (stem, help_) in SPECIAL.items()
        }
        self.flow_entries = g(
            "xdpguard_flow_table_entries", "Entries in the flow table (state: established).", labels=IF_LABELS
        )
        self.flow_size = g("xdpguard_flow_table_size", "Capacity of the flow table.", labels=IF_LABELS)
        self.flows_created = c(
            "xdpguard_flows_created", "Flow-table entries created by egress.", labels=IF_LABELS
        )
        self.flows_evicted = c(
            "xdpguard_flows_evicted", "Flow-table entries the LRU reused for newer flows.", labels=IF_LABELS
        )
        self.limit_overflow = c(
            "xdpguard_limit_overflow_packets",
            "Packets of per-source rate limits judged by the overflow sketch: the table had no slot "
            "for their source (raise limit_table_size).",
            labels=DIR_LABELS,
        )
        self.limit_table_size = g(
            "xdpguard_limit_table_size", "Slots of the per-source rate-limit table.", labels=IF_LABELS
        )
        self.limit_slots_held = g(
            "xdpguard_limit_slots_held",
            "Slots of the per-source rate-limit table held by active sources (keep under a sixth).",
            labels=IF_LABELS,
        )
        self.blocked_sources = g(
            "xdpguard_blocked_sources",
            "Sources currently blocked by a rate limit's block_for.",
            labels=IF_LABELS,
        )
        self.version = g(
            "xdpguard_ruleset_version", "Sequence number of the applied rule set (grows with every apply).",
            labels=IF_LABELS,
        )  # fmt: skip
        self.info = InfoMetricFamily(
            "xdpguard_ruleset",
            "The applied rule set: digest, file, mode, XDP mode, network namespace.",
            labels=["interface", "digest", "file", "mode", "xdp_mode", "netns"],
        )
        self.applied_at = g(
            "xdpguard_ruleset_applied_timestamp_seconds", "When the rule set was applied (Unix time).",
            labels=IF_LABELS,
        )  # fmt: skip
        self.attached = g(
            "xdpguard_attached",
            "1 if xdpguard protects the interface as recorded (programs on it, pins in use), else 0.",
            labels=IF_LABELS,
        )
        self.consistent = g(
            "xdpguard_ruleset_consistent",
            "1 if the kernel maps hold the recorded rule set, 0 if not (run apply again).",
            labels=IF_LABELS,
        )
        self.scrape_error = g(
            "xdpguard_scrape_error",
            "1 if the interface's maps could not be read in this scrape.",
            labels=IF_LABELS,
        )

    def all(self) -> Iterator[Metric]:
        yield from (
            self.rule_packets,
            self.rule_bytes,
            self.rule_over,
            *self.syn.values(),
            self.rule_over_bytes,
            self.dropped,
            self.dropped_bytes,
            self.default_packets,
            self.default_bytes,
        )
        for pk, by in self.special.values():
            yield pk
            yield by
        yield from (
            self.flow_entries,
            self.flow_size,
            self.flows_created,
            self.flows_evicted,
            self.limit_table_size,
            self.limit_slots_held,
            self.limit_overflow,
            self.blocked_sources,
        )
        yield from (
            self.version,
            self.info,
            self.applied_at,
            self.attached,
            self.consistent,
            self.scrape_error,
        )


def _status_of(ifname: str) -> dict[str, Any]:
    """`Dataplane.status()`, unless an apply is in flight on the interface.

    status() repairs an interrupted apply, taking the interface's lock to
    do so; a scrape during an apply would then wait for that apply.  The
    exporter only reads: with a journal present it reports the pins alone.
    """
    dp = Dataplane(ifname, None)
    if dp.iface.journal() is not None:
        return {"interface": ifname, "attached": dp.attached}
    return dp.status()


def _stats_of(ifname: str) -> dict[str, Any]:
    return Dataplane(ifname, None).stats()


class XdpguardCollector(Collector):
    """Reads every interface's maps when Prometheus scrapes, never in between.

    `interfaces` is fixed, or empty for every interface xdpguard knows at
    the time of the scrape (so interfaces attached later show up by
    themselves).  `status` and `stats` are injectable for tests.
    """

    def __init__(
        self,
        interfaces: Iterable[str] = (),
        status: Callable[[str], dict[str, Any]] = _status_of,
        stats: Callable[[str], dict[str, Any]] = _stats_of,
    ) -> None:
        self.interfaces = list(interfaces)
        self._status = status
        self._stats = stats

    def describe(self) -> Iterator[Metric]:
        # Registration must not touch the kernel; the families are enough.
        return _Families().all()

    def collect(self) -> Iterator[Metric]:
        fam = _Families()
        for ifname in self.interfaces or known_ifaces():
            try:
                self._collect_one(fam, ifname)
                fam.scrape_error.add_metric([ifname], 0)
            except (XdpguardError, OSError, ValueError, KeyError) as e:
                # One broken interface must not hide the others.
                print(f"xdpguard exporter: {ifname}: {e}", file=sys.stderr, flush=True)
                fam.scrape_error.add_metric([ifname], 1)
        return fam.all()

    def _collect_one(self, fam: _Families, ifname: str) -> None:
        st = self._status(ifname)
        xdp = st.get("xdp") or {}
        live = (
            bool(st.get("attached"))
            and bool(xdp.get("live", True))
            and st.get("protected", True) is not False
            and "error" not in st
        )
        applied = Iface(ifname).load_applied()
        summary = Iface(ifname).load_summary() or {}
        if applied is not None:
            fam.version.add_metric([ifname], applied.seq)
            fam.applied_at.add_metric([ifname], applied.applied_at)
            mode = str(summary.get("settings", {}).get("mode", ""))
            fam.info.add_metric(
                [ifname],
                {
                    "digest": applied.digest,
                    "file": applied.file,
                    "mode": mode,
                    # What the kernel reports (native, generic), not what was asked (auto).
                    "xdp_mode": str(xdp.get("mode") or applied.xdp_mode),
                    "netns": applied.netns or "",
                },
            )
        if "consistent" in st:
            fam.consistent.add_metric([ifname], 1 if st["consistent"] else 0)
        fam.attached.add_metric([ifname], 1 if live else 0)
        if not st.get("attached"):
            return  # nothing pinned: no counters to read
        non_ip_drop = summary.get("settings", {}).get("non_ip") == "drop"
        _add_stats(fam, ifname, self._stats(ifname), non_ip_drop)


def _add_stats(fam: _Families, ifname: str, s: dict[str, Any], non_ip_drop: bool = False) -> None:
    for direction in ("ingress", "egress"):
        d = s.get(direction)
        if not d:
            continue
        for r in d["rules"]:
            over = r.get("limit", {}).get("over_limit", 0)
            over_bytes = r.get("limit", {}).get("over_limit_bytes", 0)
            labels = [ifname, direction, r["name"], r["action"]]
            fam.rule_packets.add_metric(labels, r["packets"] - over)
            fam.rule_bytes.add_metric(labels, r["bytes"] - over_bytes)
            if "limit" in r:
                fam.rule_over.add_metric([ifname, direction, r["name"]], over)
                fam.rule_over_bytes.add_metric([ifname, direction, r["name"]], over_bytes)
            for key, family in fam.syn.items():
                if "syn_cookies" in r:
                    family.add_metric(labels, r["syn_cookies"][key])
        for reason, (packets, nbytes) in drops_by_reason(d, non_ip_drop).items():
            fam.dropped.add_metric([ifname, direction, reason], packets)
            fam.dropped_bytes.add_metric([ifname, direction, reason], nbytes)
        dflt = d["default"]
        fam.default_packets.add_metric([ifname, direction, dflt["action"]], dflt["packets"])
        fam.default_bytes.add_metric([ifname, direction, dflt["action"]], dflt["bytes"])
        for key, (pk, by) in fam.special.items():
            if key in d:
                pk.add_metric([ifname, direction], d[key]["packets"])
                by.add_metric([ifname, direction], d[key]["bytes"])
    flows = s.get("flows")
    if flows:
        fam.flow_entries.add_metric([ifname], flows["entries"])
        fam.flow_size.add_metric([ifname], flows["size"])
        fam.flows_created.add_metric([ifname], flows["created"])
        fam.flows_evicted.add_metric([ifname], flows["evicted"])
    lim = s.get("limiter")
    if lim:
        fam.limit_table_size.add_metric([ifname], lim["table_size"])
        fam.limit_slots_held.add_metric([ifname], lim["held"])
        for direction, packets in lim["overflow"].items():
            fam.limit_overflow.add_metric([ifname, direction], packets)
    fam.blocked_sources.add_metric([ifname], len(s.get("blocked", [])))


def drops_by_reason(d: dict[str, Any], non_ip_drop: bool) -> dict[str, tuple[int, int]]:
    """(packets, bytes) dropped in one direction of `Dataplane.stats()`, per reason."""
    out = dict.fromkeys(DROP_REASONS, (0, 0))

    def add(reason: str, packets: int, nbytes: int) -> None:
        p, b = out[reason]
        out[reason] = (p + packets, b + nbytes)

    for r in d["rules"]:
        over = r.get("limit", {}).get("over_limit", 0)
        over_bytes = r.get("limit", {}).get("over_limit_bytes", 0)
        add("rate_limit", over, over_bytes)
        if r["action"] == "drop":
            add("rule", r["packets"] - over, r["bytes"] - over_bytes)
    if d["default"]["action"] == "drop":
        add("default", d["default"]["packets"], d["default"]["bytes"])
    for reason in ("malformed", "blocked") + (("non_ip",) if non_ip_drop else ()):
        if reason in d:
            add(reason, d[reason]["packets"], d[reason]["bytes"])
    return out
