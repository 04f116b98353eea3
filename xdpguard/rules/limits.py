"""What the data plane's rate limiter can hold, and a limit in its units.

The limiter in bpf/xdpguard.c is GCRA with times in unsigned 64-bit
nanoseconds: a packet costs `cost_ns` of allowance, and a bucket may run
at most `burst_ns` ahead of the clock.  This module is the one place that
turns a rule's rate, burst and block_for into those numbers, and the one
place that says which values they cannot represent: parse.py rejects those
with `file:line` (instead of letting them wrap or round into another
limit), and compile.py computes the map values with the same functions,
so what `check` accepts is exactly what the kernel enforces.

Pure: no I/O, no kernel, importable wherever `rules/` is.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

NSEC = 1_000_000_000

# Bursts, blocks and dynamic-set timeouts are kept as ns added to the
# clock.  2^60 ns (36.5 years) leaves the clock itself 2^62 ns (146 years
# of uptime) before a TAT + cost, now + block_for or now + an element's
# timeout (its expiry, a u64) could wrap.
MAX_WINDOW_NS = 2**60
MAX_WINDOW_TEXT = "2^60 ns, about 36 years"

# Whole nanoseconds per packet round the rate a pps limit enforces, and
# whole nanoseconds round a bps burst.  Within 1 % that is well inside the
# limiter's promise of +-5 % under overload; past it, the rule file is
# refused rather than silently enforcing another limit.
ROUNDING_TOLERANCE = Fraction(1, 100)

# bps rates are kept in a u64 and multiplied by 32-bit numbers in the data
# plane; a petabit per second is far beyond any link and keeps all of that
# (and every frame's cost) well inside 64 bits.
MAX_BPS = 10**15

# The largest frame a bps limit is computed for when it needs one figure
# (the grace period): a full-size frame with the Ethernet header and two
# VLAN tags, as the limiter counts it.
MTU_FRAME = 1522


def pps_cost_ns(pps: int | float | Fraction | Decimal) -> int:
    """Nanoseconds of allowance one packet costs at `pps` packets per second."""
    return max(1, round(Fraction(NSEC) / Fraction(pps)))


def bps_cost_ns(frame_bytes: int, bps: int) -> Fraction:
    """Nanoseconds a frame costs at `bps`; the data plane rounds the fraction at random, unbiased."""
    return Fraction(frame_bytes * 8 * NSEC, bps)


def bps_burst_ns(burst_bytes: int, bps: int) -> int:
    return burst_bytes * 8 * NSEC // bps


def grace_log2(burst_ns: int, cost_ns: int) -> int:
    """log2 of how long a source's slot outlives its TAT: the first power of two >= burst + one packet.

    A source that sends at least one packet in that time keeps its slot:
    any source at more than 1/(burst + 2) of its limit (half of it, say)
    does, whatever floods the table meanwhile.
    """
    return max(0, (burst_ns + cost_ns - 1).bit_length())


def _fmt_rate(cost_ns: int) -> str:
    r = Fraction(NSEC, cost_ns)
    text = f"{r.numerator:,}" if r.denominator == 1 else f"{float(r):,.2f}"
    return f"{text}/s ({cost_ns} ns)"


def pps_problem(pps: int | float | Fraction | Decimal) -> str | None:
    """Why a pps rate cannot be enforced as written, or None."""
    want = Fraction(pps)
    cost = pps_cost_ns(pps)
    if cost > MAX_WINDOW_NS:
        return f"{pps} packets/s is one packet in more than {MAX_WINDOW_TEXT}: the limiter cannot hold it"
    if abs(Fraction(NSEC, cost) - want) <= ROUNDING_TOLERANCE * want:
        return None
    exact = Fraction(NSEC) / want
    near = sorted({max(1, math.floor(exact)), max(1, math.ceil(exact))}, reverse=True)
    return (
        f"{pps} packets/s cannot be enforced within 1 %: the limiter counts whole nanoseconds per "
        f"packet, and the nearest rates it can enforce are {' and '.join(map(_fmt_rate, near))}; "
        f"every rate up to {NSEC // 100:,}/s is within 1 %"
    )


def pps_max_burst(pps: int | float | Fraction | Decimal) -> int:
    """The largest burst (packets) a limit at `pps` can hold: burst x cost within MAX_WINDOW_NS."""
    return MAX_WINDOW_NS // pps_cost_ns(pps)


def pps_burst_problem(burst: int, pps: int | float | Fraction | Decimal, rate: str) -> str | None:
    """Why `burst` packets at `pps` (written `rate`, e.g. "1/day") cannot be held, or None."""
    most = pps_max_burst(pps)
    if burst > most:
        return (
            f"{burst} packets at {rate} last longer than the limiter can hold ({MAX_WINDOW_TEXT}): "
            f"at most {most} at this rate"
        )
    return None


def bps_problem(bps: int) -> str | None:
    if bps > MAX_BPS:
        return f"{bps} bit/s is more than the limiter handles (at most {MAX_BPS} bit/s, 1000000gbit)"
    return None


def bps_burst_problem(burst: int, bps: int) -> str | None:
    ns = Fraction(burst * 8 * NSEC, bps)
    if ns > MAX_WINDOW_NS:
        return (
            f"{burst} bytes at {bps} bit/s take {float(ns) / NSEC / 86400 / 365.25:.3g} years to send; "
            f"the limiter holds at most {MAX_WINDOW_TEXT}"
        )
    # The burst is kept in whole ns: under 100 ns, that rounding is over 1 %.
    if ns < 100:
        return (
            f"{burst} bytes at {bps} bit/s last {float(ns):.3g} ns, too short for the limiter's whole "
            "nanoseconds to hold within 1 %; give a larger burst"
        )
    return None


def block_ns(seconds: float) -> int:
    return round(Fraction(seconds) * NSEC)


def window_problem(seconds: Decimal, what: str) -> str | None:
    """Why a time the data plane adds to its clock (exact seconds; `what`: "block", "timeout")
    cannot be kept as written, or None."""
    ns = seconds * NSEC
    if ns != ns.to_integral_value():
        return "is not a whole number of nanoseconds (the finest time the data plane keeps)"
    if ns > MAX_WINDOW_NS:
        return f"is longer than the longest {what} the data plane keeps ({MAX_WINDOW_TEXT})"
    return None


def block_problem(seconds: Decimal) -> str | None:
    """Why a block_for duration (exact seconds) cannot be kept as written, or None."""
    return window_problem(seconds, "block")


def timeout_problem(seconds: Decimal) -> str | None:
    """Why a dynamic-set element's lifetime (exact seconds) cannot be kept as written, or None."""
    return window_problem(seconds, "timeout")


def timeout_ns(seconds: Decimal) -> int:
    return int(seconds * NSEC)
