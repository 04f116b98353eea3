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
        f"{p['ratio_large_small_hot_minus_floor']:.2f}; cold medians: {p['ratio_large_small_cold']:.2f}.",
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
)


def _apply_md(a: dict[str, Any]) -> list[str]:
    t = a["targets"]
    bcc = a["bcc_import_lines"]
    out = [
        "### `xdpguard apply`",
        "",
        f"Method: {a['method']}. Median of {a['reps_small']} (10-rule cases) or {a['reps_large']} "
        "(large-set cases; one-rule changes alternate forth and back, so twice as many samples). "
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
        f"CLI wall {_ok(t['wall_ok'])}, internal {_ok(t['internal_ok'])}.",
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
