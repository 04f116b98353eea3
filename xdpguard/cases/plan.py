"""Checking cases with the compiled plan, and reporting the results.

The plan's classifier mirrors the BPF programs and a simulated limiter
their buckets and blocks, so this needs neither root nor a kernel;
kernel.py holds the programs to the same outcomes.
"""

from __future__ import annotations

from xdpguard.cases.case import CLOCK_START_NS, Case, Outcome, Result
from xdpguard.rules.classify import PlanClassifier
from xdpguard.rules.compile import Plan
from xdpguard.rules.ratesim import LimiterSim
from xdpguard.rules.reference import PASS


def verdict_word(action: str) -> str:
    """reference.PASS / DROP as the cases file spells them."""
    return "allow" if action == PASS else "drop"


def plan_runs(plan: Plan, cases: list[Case]) -> list[tuple[Outcome, ...]]:
    """Each case's packets classified by the compiled plan, the way the BPF programs classify.

    Every case gets a fresh simulated limiter (full buckets, nothing
    blocked) whose clock moves by the case's gaps.
    """
    clf = PlanClassifier(plan)
    out = []
    for case in cases:
        sim = LimiterSim(now_ns=CLOCK_START_NS)
        note = ""
        established = False
        opener = case.opener()
        if opener is not None:
            ov = clf.classify("egress", opener.packet(), sim)
            established = ov.action == PASS
            if not established:
                note = _no_flow_note(ov.reason)
        pkt = case.packet(established)
        run = []
        for t in case.offsets_ns():
            sim.now_ns = CLOCK_START_NS + t
            v = clf.classify(case.direction, pkt, sim)
            run.append(Outcome(verdict_word(v.action), v.reason, OVER_NOTE if v.over else note))
        out.append(tuple(run))
    return out


def plan_outcomes(plan: Plan, cases: list[Case]) -> list[Outcome]:
    """The first packet's outcome of each case (all there is for a single-packet case)."""
    return [run[0] for run in plan_runs(plan, cases)]


OVER_NOTE = "over its rate limit"


def _no_flow_note(reason: str) -> str:
    by = "the egress default" if reason == "default" else f"egress rule {reason}"
    return f"no flow: {by} drops the opening packet, so the host never sent it"


def run_plan(plan: Plan, cases: list[Case]) -> list[Result]:
    return judge(cases, plan_runs(plan, cases))


def judge(cases: list[Case], runs: list[tuple[Outcome, ...]]) -> list[Result]:
    return [Result(c, tuple(r)) for c, r in zip(cases, runs, strict=True)]


def junit_xml(results: list[Result], rules: str, cases: str, mode: str, seconds: float) -> bytes:
    """The results as a JUnit XML report: one testsuite, one testcase per case.

    The shape CI systems read (Jenkins, GitLab, the GitHub actions that
    publish test reports): `<testsuites><testsuite name tests failures
    errors skipped time><properties/><testcase classname name file line
    time>[<failure message type>diff</failure>]</testcase></testsuite>`.
    """
    from xml.etree import ElementTree as ET  # lazy: only --junit writes XML

    _, failed = count(results)
    per_case = f"{seconds / max(1, len(results)):.6f}"
    suites = ET.Element("testsuites", tests=str(len(results)), failures=str(failed), errors="0")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"xdpguard test {cases}",
        tests=str(len(results)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{seconds:.6f}",
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (("rules", rules), ("cases", cases), ("mode", mode)):
        ET.SubElement(props, "property", name=name, value=value)
    for r in results:
        c = r.case
        tc = ET.SubElement(
            suite,
            "testcase",
            classname=f"{cases}:{c.direction}",
            name=c.name,
            file=cases,
            line=str(c.line),
            time=per_case,
        )
        if r.ok:
            ET.SubElement(tc, "system-out").text = f"{c.direction} {c.summary()}: {r.got_text()}\n"
            continue
        i = r.first_miss or 0
        where = f"packet {i + 1} of {c.repeat}: " if c.repeat > 1 else ""
        got = r.gots[i]
        note = f" ({got.note})" if got.note else ""
        failure = ET.SubElement(
            tc, "failure", type="VerdictMismatch", message=f"{where}expected {c.expects[i]}, got {got}{note}"
        )
        failure.text = "\n".join(r.diff(cases)) + "\n"
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


def count(results: list[Result]) -> tuple[int, int]:
    """(passed, failed)."""
    passed = sum(1 for r in results if r.ok)
    return passed, len(results) - passed
