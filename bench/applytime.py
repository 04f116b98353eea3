"""`xdpguard apply` timings on a veth in the lab namespace, as an operator runs it.

Method: every apply is `python -m xdpguard --netns NS apply FILE -i IF --json`
run as a subprocess.  Two times are kept per apply: the wall time of the
subprocess (monotonic clock around start and exit: interpreter start-up,
imports, reading and compiling the rule file, the kernel work, the state
dir, printing) and `seconds` from the JSON answer (Dataplane.apply alone:
the kernel work and the state dir, after the rules were compiled).  Peak
RSS is GNU time's %M for the child.  The JSON is checked for what
each case must be (attached / changed / no program replaced), so that a
rule-only apply that silently recompiled would show up, not hide in a median.

Cases, each REPS times (median reported): first attach of the 10-rule set
(detached before each, so bcc compiles every time); a one-rule change on
it (2 x REPS edits in a row, each moving one port of the file applied
before it, so that no edit is a file the plan cache has seen); the same
file again ("no changes"); the 4,096-rule + 1M-prefix set applied onto
the interface holding the small set (and back, reported too); one-rule
edits of the large set, as for the small one; the large set again.  Whether a rule-only apply loads bcc/LLVM
is shown with `python -X importtime`: the lines naming a bcc module are
counted for rule-only applies (must be 0) and for a first attach (the
positive control: must be > 0).  `xdpguard --help` gives the start-up floor.

On return the large set is left on the lab's first interface and the small
set on the second (LEFT_ON), so that bench.progcost can measure the
programs without compiling and loading them again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.common import CLI, Lab, median, run_measured, summary
from bench.workload import Workload, change_one_prefix, edits
from xdpguard.datapath.dataplane import Dataplane

TARGET_SMALL_CHANGE_S = 0.3
TARGET_PREFIX_CHANGE_S = 1.5  # one prefix changed in the 1M-prefix set file
TARGET_NO_CHANGE_LARGE_S = 0.6  # the same large file again
TARGET_HELP_S = 0.1  # `xdpguard --help`
# What measure() leaves attached: rule file attribute of Workload -> index into Lab.ifaces.
LEFT_ON = {"large": 0, "small": 1}


@dataclass(frozen=True)
class ApplySample:
    wall_s: float
    seconds: float  # Dataplane.apply's own time, from the JSON answer
    maxrss_bytes: int
    attached: bool
    changed: bool
    replaced: bool
    messages: tuple[str, ...]
    writes: dict[str, int]  # map entries written, from the JSON answer
    bcc_import_lines: int | None  # only for -X importtime runs


def apply_cli(lab: Lab, iface: str, path: Path, importtime: bool = False) -> ApplySample:
    py, rest = CLI[0], CLI[1:]
    argv = [py, *(["-X", "importtime"] if importtime else []), *rest]
    argv += ["--netns", lab.ns, "apply", str(path), "-i", iface, "--json"]
    r = run_measured(argv).check()
    res = json.loads(r.stdout)[0]
    bcc = None
    if importtime:
        bcc = sum(1 for ln in r.stderr.splitlines() if ln.startswith("import time:") and "bcc" in ln)
    return ApplySample(
        wall_s=r.wall_s,
        seconds=float(res["seconds"]),
        maxrss_bytes=r.maxrss_kib * 1024,
        attached=bool(res["attached"]),
        changed=bool(res["changed"]),
        replaced=bool(res["replaced_program"]),
        messages=tuple(res["messages"]),
        writes={k: int(v) for k, v in res["writes"].items()},
        bcc_import_lines=bcc,
    )


def _edit_files(base: Path, stem: str, n: int) -> list[Path]:
    """n one-rule edits of `base` in a row (bench.workload.edits), written
    beside it (the large set names its set file by a relative path)."""
    paths = []
    for i, text in enumerate(edits(base.read_text(), n)):
        p = base.with_name(f"{stem}-{i}.yaml")
        p.write_text(text)
        paths.append(p)
    return paths


def _prefix_edit_files(wl: Workload, n: int) -> list[Path]:
    """n rule files, each naming a copy of the blocklist with one more prefix
    changed than the one before (bench.workload.change_one_prefix)."""
    text = wl.blocklist.read_text()
    rules = wl.large.read_text()
    paths = []
    for k in range(n):
        text = change_one_prefix(text, k)
        sf = wl.blocklist.with_name(f"blocklist-edit-{k}.netset")
        sf.write_text(text)
        p = wl.large.with_name(f"large-prefix-edit-{k}.yaml")
        p.write_text(rules.replace(f"lists/{wl.blocklist.name}", f"lists/{sf.name}"))
        paths.append(p)
    return paths


def detach(iface: str) -> None:
    """Remove xdpguard from the interface (in-process: only the pins matter)."""
    Dataplane(iface, None).detach()


def _expect(s: ApplySample, case: str, *, attached: bool, changed: bool) -> ApplySample:
    problems = []
    if s.attached != attached:
        problems.append(f"attached={s.attached}")
    if s.changed != changed:
        problems.append(f"changed={s.changed}")
    if s.replaced:
        problems.append("the program was recompiled and replaced")
    if problems:
        raise RuntimeError(f"apply ({case}): unexpected result: {', '.join(problems)}; messages {s.messages}")
    return s


def _case(samples: list[ApplySample]) -> dict[str, object]:
    rss = [s.maxrss_bytes for s in samples]
    return {
        "wall_s": summary([s.wall_s for s in samples]),
        "internal_s": summary([s.seconds for s in samples]),
        "peak_rss_bytes": {"median": int(median(rss)), "max": max(rss)},
        "writes_first_sample": samples[0].writes,
    }


def measure(lab: Lab, wl: Workload, reps_small: int, reps_large: int) -> dict[str, object]:
    ifc = lab.ifaces[0]
    startup = [run_measured([*CLI, "--help"]).check().wall_s for _ in range(reps_small)]

    first: list[ApplySample] = []
    for _ in range(reps_small):
        detach(ifc)
        first.append(_expect(apply_cli(lab, ifc, wl.small), "first attach", attached=True, changed=True))

    small_change = [
        _expect(apply_cli(lab, ifc, p), "small one-rule", attached=False, changed=True)
        for p in _edit_files(wl.small, "small-edit", 2 * reps_small)
    ]
    _expect(apply_cli(lab, ifc, wl.small), "back to the small set", attached=False, changed=True)
    small_same = [
        _expect(apply_cli(lab, ifc, wl.small), "small no change", attached=False, changed=False)
        for _ in range(reps_small)
    ]
    it_small = _expect(
        apply_cli(lab, ifc, wl.small_changed, importtime=True), "importtime", attached=False, changed=True
    )

    to_large: list[ApplySample] = []
    to_small: list[ApplySample] = []
    for _ in range(reps_large):
        to_large.append(_expect(apply_cli(lab, ifc, wl.large), "small->large", attached=False, changed=True))
        to_small.append(_expect(apply_cli(lab, ifc, wl.small), "large->small", attached=False, changed=True))
    it_large = _expect(
        apply_cli(lab, ifc, wl.large, importtime=True), "importtime", attached=False, changed=True
    )

    large_change = [
        _expect(apply_cli(lab, ifc, p), "large one-rule", attached=False, changed=True)
        for p in _edit_files(wl.large, "large-edit", 2 * reps_large)
    ]
    _expect(apply_cli(lab, ifc, wl.large), "back to the large set", attached=False, changed=True)
    large_same = [
        _expect(apply_cli(lab, ifc, wl.large), "large no change", attached=False, changed=False)
        for _ in range(reps_large)
    ]
    # One prefix of the 1M-prefix set file changed, 2 x REPS times in a row, each
    # set file new to the plan cache: the set file is parsed and its column compiled.
    prefix_change = [
        _expect(apply_cli(lab, ifc, p), "large one-prefix", attached=False, changed=True)
        for p in _prefix_edit_files(wl, 2 * reps_large)
    ]

    # The control attaches to the other, still bare, end of the pair.
    it_attach = _expect(
        apply_cli(lab, lab.ifaces[1], wl.small, importtime=True), "importtime", attached=True, changed=True
    )

    small_change_wall = median([s.wall_s for s in small_change])
    small_change_internal = median([s.seconds for s in small_change])
    return {
        "method": "subprocess `python -m xdpguard --netns NS apply FILE -i IF --json`, the package "
        "byte-compiled beforehand as an install is (bench.run); wall = monotonic "
        "clock around start and exit (includes Python start-up and imports); internal = `seconds` "
        "from the JSON (Dataplane.apply only, after parsing and compiling); peak RSS = maximum "
        "resident set size of the child (GNU time %M)",
        "reps_small": reps_small,
        "reps_large": reps_large,
        "cli_startup_s": summary(startup),
        "cases": {
            "first_attach_small": _case(first),
            "one_rule_change_small": _case(small_change),
            "no_change_small": _case(small_same),
            "rule_only_small_to_large": _case(to_large),
            "rule_only_large_to_small": _case(to_small),
            "one_rule_change_large": _case(large_change),
            "no_change_large": _case(large_same),
            "one_prefix_change_large": _case(prefix_change),
        },
        "bcc_import_lines": {
            "rule_only_small_change": it_small.bcc_import_lines,
            "rule_only_small_to_large": it_large.bcc_import_lines,
            "first_attach_control": it_attach.bcc_import_lines,
        },
        "peak_rss_bytes": {
            "first_attach_small": max(s.maxrss_bytes for s in first),
            "rule_only_one_rule_small": max(s.maxrss_bytes for s in small_change),
            "rule_only_small_to_large": max(s.maxrss_bytes for s in to_large),
        },
        "targets": {
            "one_prefix_change_large_s": TARGET_PREFIX_CHANGE_S,
            "no_change_large_s": TARGET_NO_CHANGE_LARGE_S,
            "help_s": TARGET_HELP_S,
            "one_rule_change_small_s": TARGET_SMALL_CHANGE_S,
            "wall_ok": small_change_wall <= TARGET_SMALL_CHANGE_S,
            "internal_ok": small_change_internal <= TARGET_SMALL_CHANGE_S,
            "no_bcc_on_rule_only": it_small.bcc_import_lines == 0 and it_large.bcc_import_lines == 0,
        },
    }
