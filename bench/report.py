"""Results out: bench/results/latest.json and the generated part of docs/benchmarks.md.

The JSON keeps every sample; the Markdown keeps medians and the few other
figures a reader needs, with the method of each measurement, the machine
and the exact command.  Only the text between `<!-- bench:start -->` and
`<!-- bench:end -->` is rewritten; the rest of docs/benchmarks.md is
hand-written and left alone (the markers are appended if missing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
# CPUs kept busy by other work during the run above which the figures are flagged.
OTHER_LOAD_LIMIT = 0.25


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def _s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.995 else f"{x * 1000:.0f} ms"


def _mb(b: float) -> str:
    return f"{b / 1e6:,.0f} MB"


def _ok(flag: bool) -> str:
    return "met" if flag else "**MISSED**"


def _ns(x: float) -> str:
    return f"{x:,.0f}"


def _check_md(c: dict[str, Any]) -> list[str]:
    t = c["targets"]
    out = [
        "### `xdpguard check`",
        "",
        f"Method: {c['method']}; {c['reps']} runs per file, median wall, largest peak RSS.",
        "",
        "| rule file | wall (median) | wall (min-max) | peak RSS |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("small", "10 rules"), ("large", None)):
        e = c[key]
        name = label or f"{e['rules']:,} rules + {e['set_prefixes']:,}-prefix set"
        w, rss = e["wall_s"], e["peak_rss_bytes"]["max"]
        out.append(f"| {name} | {_s(w['median'])} | {_s(w['min'])}-{_s(w['max'])} | {_mb(rss)} |")
    out += [
        "",
        f"Targets for the large file: wall <= {t['wall_s']:.0f} s ({_ok(t['wall_ok'])}), "
        f"peak RSS <= {t['peak_rss_bytes'] / 1e9:.1f} GB ({_ok(t['rss_ok'])}).",
        "",
    ]
    return out


def _progcost_md(p: dict[str, Any], large_label: str) -> list[str]:
    hot, cold = p["hot_ns"], p["cold_ns"]
    hmf, cmf = p["hot_minus_floor_ns"], p["cold_minus_floor_ns"]
    rows = (("floor", "trivial XDP program (floor)"), ("small", "10 rules"), ("large", large_label))
    if "xl" in hot:
        rows += (("xl", f"{p['xl_rules']:,} rules (bench.gen, no prefix set)"),)
    out = [
        "### Program cost (BPF_PROG_TEST_RUN, ns per packet)",
        "",
        f"Method: {p['method']}. Pool: {p['pool_frames']:,} frames, repeat={p['repeat']:,} per frame "
        f"(hot); kernel.bpf_stats_enabled={p['bpf_stats_enabled']}.",
        "",
        "| program | hot median | hot p90 | hot - floor (median of per-frame differences) "
        "| cold median (repeat=1) | cold p90 | cold - floor (medians) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, label in rows:
        d1 = _ns(hmf[k]["median"]) if k in hmf else "-"
        d2 = _ns(cmf[k]) if k in cmf else "-"
        out.append(
            f"| {label} | {_ns(hot[k]['median'])} | {_ns(hot[k]['p90'])} | {d1} "
            f"| {_ns(cold[k]['median'])} | {_ns(cold[k]['p90'])} | {d2} |"
        )
    by = p["hot_median_by_source_ns"]
    single = p["single_frame_hot_ns"]
    out += [
        "",
        f"Ratio large/small (hot medians): **{p['ratio_large_small_hot']:.2f}** (target <= "
        f"{p['targets']['ratio']:.1f}: {_ok(p['targets']['ratio_ok'])}); with the floor taken off both: "
        f"{p['ratio_large_small_hot_minus_floor']:.2f}; cold medians: {p['ratio_large_small_cold']:.2f}."
        + (
            f" Ratio {p['xl_rules']:,} rules/small: **{p['ratio_xl_small_hot']:.2f}** (target <= "
            f"{p['targets']['ratio']:.1f}: {_ok(p['xl_ratio_ok'])})."
            if "ratio_xl_small_hot" in p
            else ""
        ),
        "",
        f"Hot medians by source address: 10 rules {_ns(by['small']['blocklist'])} ns (blocklist half) / "
        f"{_ns(by['small']['random'])} ns (random half); large set {_ns(by['large']['blocklist'])} / "
        f"{_ns(by['large']['random'])} ns. One blocklisted frame repeated {single['repeat']:,} times "
        f"(the usual, optimistic figure): floor {_ns(single['floor'])}, 10 rules {_ns(single['small'])}, "
        f"large set {_ns(single['large'])} ns.",
        "",
        f"The cold column includes the kernel's timer reads around a single run; the floor row shows that "
        f"overhead. Blocklisted frames dropped by the large set: {p['blocklist_frames_dropped_by_large']}. "
        f"Hot loop: {p['hot_loop']['wall_s']:.1f} s wall, {p['hot_loop']['timed_share']:.0%} of it in timed "
        f"runs, preempted {p['hot_loop']['involuntary_context_switches']:,} times.",
        "",
    ]
    return out


_CASES = (
    ("first_attach_small", "first attach, 10 rules (bcc compiles)"),
    ("one_rule_change_small", "one-rule change, 10 rules"),
    ("no_change_small", "same file again, 10 rules (no changes)"),
    ("rule_only_small_to_large", "rule-only apply: 10 rules -> large set"),
    ("rule_only_large_to_small", "rule-only apply: large set -> 10 rules"),
    ("one_rule_change_large", "one-rule change, large set"),
    ("no_change_large", "same file again, large set (no changes)"),
    ("one_prefix_change_large", "one prefix changed in the large set's 1M-prefix set file"),
)


def _apply_md(a: dict[str, Any]) -> list[str]:
    t = a["targets"]
    bcc = a["bcc_import_lines"]
    prefix_s = a["cases"]["one_prefix_change_large"]["wall_s"]["median"]
    out = [
        "### `xdpguard apply`",
        "",
        f"Method: {a['method']}. Median of {a['reps_small']} (10-rule cases) or {a['reps_large']} "
        "(large-set cases; one-rule changes are twice as many edits in a row, "
        "each a file the plan cache has not seen). "
        '"Large set" = the check benchmark\'s large file.',
        "",
        "| case | CLI wall (median) | internal `seconds` (median) | peak RSS (max) | map entries written |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in _CASES:
        c = a["cases"][key]
        writes = ", ".join(f"{k} {v:,}" for k, v in c["writes_first_sample"].items() if v) or "none"
        out.append(
            f"| {label} | {_s(c['wall_s']['median'])} | {_s(c['internal_s']['median'])} "
            f"| {_mb(c['peak_rss_bytes']['max'])} | {writes} |"
        )
    out += [
        "",
        f"CLI start-up floor (`xdpguard --help`): {_s(a['cli_startup_s']['median'])}. "
        f"Target for a one-rule change on the 10-rule set: <= {t['one_rule_change_small_s']} s: "
        f"CLI wall {_ok(t['wall_ok'])}, internal {_ok(t['internal_ok'])}. "
        f"Target for one prefix changed in the set file: <= {t['one_prefix_change_large_s']} s: "
        f"{_ok(prefix_s <= t['one_prefix_change_large_s'])}.",
        "",
        f"LLVM stays out of rule-only applies: `python -X importtime` lines naming a bcc module: "
        f"{bcc['rule_only_small_change']} (one-rule change, 10 rules), "
        f"{bcc['rule_only_small_to_large']} (10 rules -> large set), against "
        f"{bcc['first_attach_control']} for a first attach (the control). Peak RSS: first attach "
        f"{_mb(a['peak_rss_bytes']['first_attach_small'])}, rule-only one-rule change "
        f"{_mb(a['peak_rss_bytes']['rule_only_one_rule_small'])}, rule-only apply of the large set "
        f"{_mb(a['peak_rss_bytes']['rule_only_small_to_large'])}.",
        "",
    ]
    return out


_SETS_10K = ("acl1_10k", "fw1_10k", "ipc1_10k")
_RX_ROWS = (
    ("none", "nothing attached (stack drops at routing)", "acl1_1k"),
    ("xdp_drop", "bare XDP_DROP program (floor)", "acl1_1k"),
    ("xdpguard_acl1_1k", "xdpguard, acl1_1k", "acl1_1k"),
    ("xdpguard_alldrop_acl1_1k", "xdpguard, acl1_1k, every rule drop", "acl1_1k"),
    ("nft_linear_acl1_1k", "nft netdev ingress, acl1_1k linear chain", "acl1_1k"),
    ("iptables_linear_acl1_1k", "iptables-legacy raw PREROUTING, acl1_1k linear", "acl1_1k"),
    *(
        row
        for name in _SETS_10K
        for row in (
            (f"xdpguard_{name}", f"xdpguard, {name}", name),
            (f"xdpguard_alldrop_{name}", f"xdpguard, {name}, every rule drop", name),
            (f"nft_linear_{name}", f"nft netdev ingress, {name} linear chain", name),
            (f"iptables_linear_{name}", f"iptables-legacy raw PREROUTING, {name} linear", name),
        )
    ),
    ("xdpguard_bl100k", "xdpguard, 100k blocklist (prefix set)", "bl100k"),
    ("nft_set_bl100k", "nft netdev ingress, 100k interval set", "bl100k"),
)
_UPD_ROWS = (
    ("xdpguard_acl1_1k", "xdpguard apply (rule-only), acl1_1k"),
    ("xdpguard_acl1_1k_one_rule", "xdpguard apply (rule-only), acl1_1k, one action changed"),
    ("nft_acl1_1k", "nft -f, acl1_1k linear chain"),
    ("iptables_acl1_1k", "iptables-legacy-restore, acl1_1k"),
    ("check_acl1_10k", "xdpguard check --json, acl1_10k"),
    ("xdpguard_acl1_10k_first", "xdpguard apply, acl1_10k, first attach (compiles)"),
    ("xdpguard_acl1_10k_one_rule", "xdpguard apply (rule-only), acl1_10k, one port moved"),
    *((f"nft_{name}", f"nft -f, {name} linear chain") for name in _SETS_10K),
    *((f"iptables_{name}", f"iptables-legacy-restore, {name}") for name in _SETS_10K),
    ("xdpguard_bl100k", "xdpguard apply (rule-only), 100k blocklist"),
    ("nft_bl100k", "nft -f, 100k interval set"),
)


def _peers_md(p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return ["### Peers", "", f"Not measured: {p['error']}", ""]
    pc, rx, up = p["progcost"], p["receive"], p["update"]
    rules = pc["rules"]
    out = [
        "### Peers: program cost (BPF_PROG_TEST_RUN, ns per packet)",
        "",
        f"Method: {pc['method']}; repeat={pc['repeat']:,}. xdp-filter holds "
        f"{len(pc['xdp_filter_entries']['dst_ports_tcp_udp'])} denied destination ports (tcp, udp) and "
        f"{len(pc['xdp_filter_entries']['src_addrs'])} denied source addresses; \"xdp-filter's job as "
        '10 xdpguard rules" is the same policy written as xdpguard rules.',
        "",
        "| frames (pool) | program | hot median | hot p90 | median - floor | frames dropped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    labels = {
        "floor": "trivial XDP program (floor)",
        "xdp-filter": "xdp-filter, 10 entries",
        "xdpguard-10": "xdpguard, the 10-rule set",
        "xdpguard-xf10": "xdpguard, xdp-filter's job as 10 rules",
        "xdpguard-10-state": "xdpguard, the 10-rule set behind a `state: established` rule",
    }
    for rnd, progs in pc["rounds"].items():
        pool = "acl1_1k" if rnd.startswith("10rules") else rnd
        source = pc.get("pool_source", {}).get(pool, "trace")
        where = f"{pool} {'trace' if source == 'trace' else 'drawn'}, {pc['pool_frames'][pool]:,}"
        if rnd.startswith("10rules"):
            where += " (10-rule round)"
        fl = progs["floor"]["median"]
        for k, v in progs.items():
            label = labels.get(k) or f"xdpguard, {k.removeprefix('xdpguard-')} ({rules.get(rnd, 0):,} rules)"
            diff = _ns(v["median"] - fl) if k != "floor" else "-"
            out.append(
                f"| {where} | {label} | {_ns(v['median'])} "
                f"| {_ns(v['p90'])} | {diff} | {v['drop_share']:.0%} |"
            )
    t = pc["targets"]
    out += [
        "",
        f"xdpguard 10 rules / xdp-filter 10 entries: **{pc['ratio_xdpguard10_vs_xdpfilter']:.2f}** "
        f"(target <= {t['small_vs_xdpfilter']:.1f}: {_ok(t['small_ok'])}); xdp-filter's own job as xdpguard "
        f"rules: {pc['ratio_xdpguard_xf10_vs_xdpfilter']:.2f}"
        + (
            f"; the 10 rules behind a `state: established` rule / xdp-filter: "
            f"**{pc['ratio_xdpguard10_state_vs_xdpfilter']:.2f}** (target <= {t['small_vs_xdpfilter']:.1f}: "
            f"{_ok(t['small_state_ok'])})"
            if "ratio_xdpguard10_state_vs_xdpfilter" in pc
            else ""
        )
        + ". xdpguard acl1_1k / xdp-filter: "
        f"**{pc['ratio_acl1_1k_vs_xdpfilter']:.2f}** (target <= {t['acl_vs_xdpfilter']:.1f}: "
        f"{_ok(t['acl_ok'])})"
        + (
            f"; acl1_10k / xdp-filter: **{pc['ratio_acl1_10k_vs_xdpfilter']:.2f}** (target <= "
            f'{t["acl_vs_xdpfilter"]:.1f}: {_ok(t["acl10k_ok"])}). "drawn" pools: headers drawn inside '
            "random rules of a set that has no trace here."
            if "ratio_acl1_10k_vs_xdpfilter" in pc
            else "."
        ),
        "",
        "### Peers: receive cost on a veth (softirq ns per packet)",
        "",
        f"Method: {rx['method']}. Frames: "
        + "; ".join(f"{k} = {v}" for k, v in rx["frames"].items() if k != "bl100k")
        + f"; bl100k = {rx['frames']['bl100k']} ({p['blocklist_prefixes']:,} prefixes). Rule actions "
        "alternate allow/drop in ClassBench order (flags column ignored), default allow"
        + (f"; {rx['all_drop']}" if "all_drop" in rx else "")
        + ". "
        f"/proc/stat counts in 1/{rx['clk_tck']} s ticks: differences under ~60 ns are noise.",
        "",
        "| configuration | frames | ns/packet (median) | min-max | sent pps (median) "
        "| vs XDP_DROP floor | vs nft's best encoding |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for k, label, frames in _RX_ROWS:
        if k not in rx["configs"]:
            continue
        c, r = rx["configs"][k], rx["ratios"][k]
        out.append(
            f"| {label} | {frames} | {_ns(c['ns_per_pkt'])} | {_ns(c['min'])}-{_ns(c['max'])} "
            f"| {_ns(c['pps_median'])} | {r['vs_xdp_drop']:.2f} | {r['vs_nft_best']:.2f} |"
        )
    if "targets" in rx:
        rt, r = rx["targets"], rx["ratios"]
        out += [
            "",
            f"acl1_1k with every rule drop / bare XDP_DROP: "
            f"**{r['xdpguard_alldrop_acl1_1k']['vs_xdp_drop']:.2f}** "
            f"(target <= {rt['alldrop_acl1_1k_vs_xdp_drop']}: {_ok(rt['alldrop_ok'])}); nft linear chain / "
            f"xdpguard, acl1_10k: **{1 / r['xdpguard_acl1_10k']['vs_nft_best']:.1f}x** "
            f"(target >= {rt['nft_linear_over_xdpguard_acl1_10k']:g}x: {_ok(rt['acl10k_vs_nft_ok'])}).",
        ]
    out += [
        "",
        "nft's best encoding: the linear chain for acl1_1k (nft has no multi-field classifier: a "
        "concatenated-set encoding would need the ranges and first-match order rewritten), the "
        "interval set for the blocklist.",
        "",
        "### Peers: update cost",
        "",
        f"Method: {up['method']}.",
        "",
        "| update | wall (median) | internal (median) | samples |",
        "|---|---:|---:|---:|",
    ]
    for k, label in _UPD_ROWS:
        if k not in up["cases"]:
            continue
        c = up["cases"][k]
        internal = _s(c["internal_s"]["median"]) if "internal_s" in c else "-"
        flag = "" if c.get("rule_only", True) or k.endswith("_first") else " (**program replaced**)"
        out.append(f"| {label}{flag} | {_s(c['wall_s']['median'])} | {internal} | {c['wall_s']['n']} |")
    if "acl1_10k_targets" in up["cases"]:
        t10 = up["cases"]["acl1_10k_targets"]
        rss = {
            k: _mb(up["cases"][k]["peak_rss_bytes"]) for k in ("check_acl1_10k", "xdpguard_acl1_10k_first")
        }
        out += [
            "",
            f"acl1_10k targets: check <= {t10['check_s']} s {_ok(t10['check_ok'])}, first apply <= "
            f"{t10['first_apply_s']} s {_ok(t10['first_apply_ok'])}, one-rule change <= "
            f"{t10['one_rule_change_s']} s CLI wall {_ok(t10['one_rule_change_ok'])}. Peak RSS: check "
            f"{rss['check_acl1_10k']}, first apply {rss['xdpguard_acl1_10k_first']}, one-rule change "
            f"{_mb(up['cases']['xdpguard_acl1_10k_one_rule']['peak_rss_bytes'])}.",
        ]
    out += ["", "![receive and program cost, xdpguard vs peers](img/bench-peers.png)", ""]
    return out


def _limit_md(lc: dict[str, Any]) -> list[str]:
    out = ["### Rate-limit cost (BPF_PROG_TEST_RUN, ns per packet)", "", f"Method: {lc['method']}.", ""]
    out += ["| rule | ns/packet (median) | extra over a plain allow |", "|---|---:|---:|"]
    for k, v in lc["ns"].items():
        out.append(f"| {k} | {_ns(v)} | {_ns(lc['extra_ns'][k])} |")
    return [*out, ""]


def _hostile_md(h: dict[str, Any]) -> list[str]:
    out = ["### Hostile traffic: a new source on every packet", ""]
    if "error" in h:
        return [*out, f"The run failed: {h['error']}", ""]
    c = h["cold"]
    out += [
        f"Method: {c['method']}.",
        "",
        "| rule set | IPv4 median | IPv4 - floor | IPv4 ratio "
        "| IPv6 median | IPv6 - floor | IPv6 ratio | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in c["ipv4"]["median_ns"]:
        row = [case]
        for fam in ("ipv4", "ipv6"):
            f = c[fam]
            row.append(_ns(f["median_ns"][case]))
            if case in f["ratio_to_plain"]:
                row += [_ns(f["minus_floor_ns"][case]), f"{f['ratio_to_plain'][case]:.2f}x"]
            else:
                row += ["-", "-"]
        tgt = c["targets"]["ipv4"].get(case)
        if tgt is not None:
            ok = tgt["ok"] and c["targets"]["ipv6"][case]["ok"]
            row.append(f"<= {tgt['target']}x ({_ok(ok)})")
        else:
            row.append("")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    if "mean98_ns" in c["ipv4"]:
        out += [
            "The kernel times a single run in steps of about 10 ns, so a median moves in such steps. "
            "The mean of the fastest 98 % of the frames, IPv4 / IPv6 (ratio to the plain rule): "
            + "; ".join(_mean98(c, case) for case in c["ipv4"]["mean98_ns"])
            + ".",
            "",
        ]
    if "ratio_net_of_reference" in c["ipv4"]:
        out += [
            "The same ratios net of the reference row (its distance to the floor, the one random memory "
            "read any per-source state costs a new source, taken off the case), IPv4 / IPv6, medians "
            "(mean of the fastest 98 %): "
            + "; ".join(_net_of_ref(c, case) for case in c["ipv4"]["ratio_net_of_reference"])
            + ". These show the limiter's own work; the targets are judged on the raw ratios above.",
            "",
        ]
    rx = h.get("receive")
    if rx is None:
        return out
    out += ["#### Random-source flood on the veth (receive cost, ns per packet)", ""]
    if "error" in rx:
        return [*out, f"The run failed: {rx['error']}", ""]
    out += _rx_md(rx, "Frames from an AF_PACKET sender")
    if "nic_like" in rx:
        out += _rx_md(rx["nic_like"], "Frames delivered as a NIC delivers them (XDP redirect into the veth)")
    return out


def _mean98(c: dict[str, Any], case: str) -> str:
    v4, v6 = c["ipv4"], c["ipv6"]
    text = f"{case} {_ns(v4['mean98_ns'][case])} / {_ns(v6['mean98_ns'][case])} ns"
    if case in v4["mean98_ratio_to_plain"]:
        r4, r6 = v4["mean98_ratio_to_plain"][case], v6["mean98_ratio_to_plain"][case]
        text += f" ({r4:.2f}x / {r6:.2f}x)"
    return text


def _net_of_ref(c: dict[str, Any], case: str) -> str:
    med = [c[f]["ratio_net_of_reference"][case] for f in ("ipv4", "ipv6")]
    mean = [c[f]["mean98_ratio_net_of_reference"][case] for f in ("ipv4", "ipv6")]
    return f"{case} {med[0]:.2f}x / {med[1]:.2f}x ({mean[0]:.2f}x / {mean[1]:.2f}x)"


def _rx_md(rx: dict[str, Any], title: str) -> list[str]:
    labels = {
        "xdp_drop": "bare XDP_DROP (floor)",
        "xdpguard_drop": "xdpguard `tcp dport 443` drop",
        "xdpguard_per_source_drop": "xdpguard, the same with a per-source limit",
        "nft_drop": "nft netdev `tcp dport 443 drop`",
        "nft_meter_drop": "nft, the same behind a per-source meter",
    }
    out = [
        f"{title}. Method: {rx['method']}.",
        "",
        "| configuration | ns/packet | - floor | program, in situ |",
        "|---|---:|---:|---:|",
    ]
    for k, label in labels.items():
        if k in rx["configs"]:
            c = rx["configs"][k]
            prog = _ns(c["program_ns"]) if "program_ns" in c else "-"
            out.append(f"| {label} | {_ns(c['ns_per_pkt'])} | {_ns(rx['minus_floor_ns'][k])} | {prog} |")
    out += [
        "",
        f"xdpguard's per-source limit against nft's meter: {rx['ratio_per_source_vs_nft_meter']:.2f}x "
        f"(target <= 1.0, {_ok(rx['target']['ok'])}).",
        "",
    ]
    if "limiter_in_situ_ns" in rx and "program_ns_method" in rx:
        out += [
            f"Program, in situ: {rx['program_ns_method']}. The per-source limiter's own cost on this "
            f"flood (per-source program minus plain): {_ns(rx['limiter_in_situ_ns'])} ns.",
            "",
        ]
    elif "limiter_in_situ_ns" in rx:
        out += [f"The per-source limiter's own cost in situ: {_ns(rx['limiter_in_situ_ns'])} ns.", ""]
    return out


def _syncookie_md(sc: dict[str, Any]) -> list[str]:
    out = ["### SYN cookies: cost per SYN (`syn_cookies: true` against the stack)", ""]
    if "error" in sc:
        return [*out, f"The run failed: {sc['error']}", ""]
    out += [f"Method: {sc['method']}", "", "| what | ns per SYN (median) |", "|---|---:|"]
    rows = [
        ("xdpguard, plain allow rule (PROG_TEST_RUN: verdict only, the stack's work still to come)",
         "prog_plain_allow"),
        ("xdpguard, syn_cookies: SYN-ACK made in XDP (PROG_TEST_RUN)", "prog_syn_cookies"),
        ("xdpguard, syn_cookies (veth receive softirq)", "rx_xdpguard_syn_cookies"),
        ("stack, tcp_syncookies=1 (veth receive softirq)", "rx_stack_tcp_syncookies_1"),
        ("stack, tcp_syncookies=2 (veth receive softirq)", "rx_stack_tcp_syncookies_2"),
        ("nftables synproxy (veth receive softirq)", "rx_nft_synproxy"),
        ("floor: a bare XDP_DROP program (veth receive softirq)", "rx_floor_xdp_drop"),
        ("floor: a bare XDP_TX program, each SYN sent back as it came (veth receive softirq)",
         "rx_floor_xdp_tx"),
    ]  # fmt: skip
    for label, key in rows:
        v = sc.get(key)
        if isinstance(v, dict) and "ns_per_syn" in v:
            out.append(f"| {label} | {_ns(v['ns_per_syn'])} |")
        elif isinstance(v, dict):
            out.append(f"| {label} | {v.get('error', '-')} |")
    ratio = sc.get("ratio_stack_vs_xdp")
    if ratio:
        out += ["", f"Stack / XDP (receive cost): {ratio:.1f}x; target {sc['target_ratio']:.0f}x "
                f"{_ok(sc['target_ok'])}."]  # fmt: skip
    floor = sc.get("ratio_stack_vs_tx_floor")
    if floor and isinstance(sc.get("rx_floor_xdp_tx"), dict):
        tx = sc["rx_floor_xdp_tx"]["ns_per_syn"]
        ours = sc["rx_xdpguard_syn_cookies"]["ns_per_syn"]
        out += [f"The most any XDP program can reach on this veth: stack / bare XDP_TX = {floor:.1f}x; "
                f"xdpguard's own work over that floor: {_ns(ours - tx)} ns per SYN."]  # fmt: skip
    return [*out, ""]


def _statecost_md(st: dict[str, Any]) -> list[str]:
    out = ["### `state: established` cost (BPF_PROG_TEST_RUN, ns per packet)", ""]
    if "error" in st:
        return [*out, f"The run failed: {st['error']}", ""]
    sets = list(next(iter(st["cold_ns"].values())))
    out += [
        f"Method: {st['method']}.",
        "",
        "| frames | "
        + " | ".join(f"{k} cold" for k in sets)
        + " | state / plain cold | "
        + " | ".join(f"{k} hot" for k in sets)
        + " | state / plain hot |",
        "|---|" + "---:|" * (2 * len(sets) + 2),
    ]
    for case, cold in st["cold_ns"].items():
        hot = st["hot_ns"][case]
        row = [case, *(_ns(cold[k]) for k in sets), f"{st['cold_ratio_to_plain'][case]['state']:.2f}x"]
        row += [*(_ns(hot[k]) for k in sets), f"{st['hot_ratio_to_plain'][case]['state']:.2f}x"]
        out.append("| " + " | ".join(row) + " |")
    return [*out, ""]


def _dynsets_md(d: dict[str, Any]) -> list[str]:
    out = ["### Dynamic sets (`xdpguard set`)", ""]
    if "error" in d:
        return [*out, f"The run failed: {d['error']}", ""]
    t = d["targets"]
    add = d["set_add_one_wall_s"]
    out += [
        "| what | figure | target |",
        "|---|---:|---:|",
        f"| filling a set with 1,000,100 elements (in process) | {_s(d['fill_1m_inprocess_s'])} | |",
        f"| `set add` of one element, CLI wall (median of {add.get('n', '?')}) | {_s(add['median'])} "
        f"| <= {_s(t['set_add_one_s'])} ({_ok(t['set_add_one_ok'])}) |",
        f"| `set add -` of 100,000 elements from stdin, CLI wall | {_s(d['set_add_100k_stdin_wall_s'])} "
        f"| <= {_s(t['stdin_100k_s'])} ({_ok(t['stdin_100k_ok'])}) |",
    ]
    for label in ("member", "non_member"):
        h = d[f"hot_ns_{label}"]
        out.append(
            f"| hot ns/packet, {label.replace('_', '-')} source: the rule on a 1M-element dynamic set "
            f"/ on a static /32 / difference | {_ns(h['with_dynamic_set'])} / {_ns(h['static_32_instead'])} "
            f"/ {_ns(h['difference'])} | difference <= {_ns(t['member_cost_ns'])} "
            f"({_ok(h['difference'] <= t['member_cost_ns'])}) |"
        )
    out += ["", f"An empty XDP program on the same frames: {_ns(d['floor_hot_ns'])} ns.", ""]
    return out


def _updates_md(u: dict[str, Any]) -> list[str]:
    out = ["### Updates under traffic (zero loss, zero leak)", ""]
    if "error" in u:
        return [*out, f"The run failed: {u['error']}", ""]
    out += [
        f"Method: {u['method']}.",
        "",
        "| frames sent | applies | lost | leaked | apply p50 | apply p99 |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {u['frames_sent']:,} | {u['applies']} | {u['lost']} | {u['leaked']} | "
        f"{_s(u['apply_p50_s'])} | {_s(u['apply_p99_s'])} |",
        "",
        "p99 is a program replacement (every 5th apply compiles with bcc); p50 a rule-only update.",
        "",
    ]
    return out


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    c = results["check"]["large"]
    large_label = f"{c['rules']:,} rules + {c['set_prefixes']:,} prefixes"
    lines = [
        START,
        "<!-- Generated by bench/run.py: edits between these markers are overwritten. -->",
        "",
        f"## Results ({m['mode']} run)",
        "",
        f"- Date: {m['date']}",
        f"- Command: `{m['make_target']}` (runs `{m['command']}`), {m['elapsed_s']:.0f} s in all",
        f"- Machine: {m['cpu_model']}, {m['nproc']} CPUs (nproc), {m['mem_total']}, kernel {m['kernel']}",
        f"- Sources: BPF source hash {m['bpf_source_hash']}, Python source hash {m['python_source_hash']} "
        "(working tree as it was at the run"
        + ("; **it changed during the run**" if m["sources_changed_during_run"] else "")
        + ")",
        f"- Other work on the machine during the run: {m['other_cpu_load']:.2f} CPUs busy on average "
        f"(1-minute load average {m['loadavg_start']:.2f} at the start)"
        + (": **timings are skewed**" if m["other_cpu_load"] > OTHER_LOAD_LIMIT else ""),
        "",
        *_check_md(results["check"]),
        *_progcost_md(results["progcost"], large_label),
        *_apply_md(results["apply"]),
        *(_peers_md(results["peers"]) if "peers" in results else []),
        *(_limit_md(results["limitcost"]) if "limitcost" in results else []),
        *(_statecost_md(results["statecost"]) if "statecost" in results else []),
        *(_dynsets_md(results["dynsets"]) if "dynsets" in results else []),
        *(_hostile_md(results["hostile"]) if "hostile" in results else []),
        *(_syncookie_md(results["syncookies"]) if "syncookies" in results else []),
        *(_updates_md(results["updates"]) if "updates" in results else []),
        END,
    ]
    return "\n".join(lines) + "\n"


def update_markdown(results: dict[str, Any], path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    section = markdown(results)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section.rstrip("\n") + tail
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section
    path.write_text(text)  # no temp file: docs/ holds nothing but hand-kept files
