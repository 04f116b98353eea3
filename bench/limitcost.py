"""What a rate limit costs per packet: a limited rule against a plain allow rule.

Two one-rule sets differ only in `rate_limit`; each is applied to its own
interface and its pinned ingress program is test-run on the same frames,
attached (as progcost explains, so both sit in the XDP dispatcher).
`per: rule` shares one bucket (a CAS on one cache line); `per: source`
adds a keyed hash of the source and a read of its line of slots.  The
limit (10 Mpps, a 100 s burst) is far above what the test runs send, so
every packet takes the admit path.  These are hot figures, one frame
repeated; bench.hostile measures the cold cost, a new source per packet.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from bench.common import Lab, median
from bench.progcost import ipv4_frame
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text
from xdpguard.state import Iface

RULES = {
    "plain allow": "{name: dns, match: {proto: udp, dport: 53}, action: allow}",
    "limited, per rule": (
        "{name: dns, match: {proto: udp, dport: 53}, rate_limit: {pps: 10000000, burst: 1000000000}}"
    ),
    "limited, per source": (
        "{name: dns, match: {proto: udp, dport: 53}, "
        "rate_limit: {pps: 10000000, burst: 1000000000, per: source}}"
    ),
}


def _rules(rule: str) -> str:
    return f"version: 1\ningress:\n  default: drop\n  rules:\n    - {rule}\n"


def measure(lab: Lab, ifnames: tuple[str, ...], pool_size: int, repeat: int) -> dict[str, object]:
    rng = random.Random(11)
    pool = [
        ipv4_frame(rng.getrandbits(32), 0xC6336401, 17, rng.randrange(1024, 65536), 53)
        for _ in range(pool_size)
    ]
    fds: dict[str, int] = {}
    try:
        with net.in_netns(lab.ns):
            for (name, rule), ifname in zip(RULES.items(), ifnames, strict=False):
                plan = compile_ruleset(parse_text(_rules(rule), str(Path(lab.state_dir) / f"{ifname}.yaml")))
                Dataplane(ifname, net.ifindex(ifname), lab.ns).apply(plan, None)
                fds[name] = B.obj_get(Iface(ifname).pin("prog_ingress"))
        ns: dict[str, list[float]] = {k: [] for k in fds}
        for i, frame in enumerate(pool):
            names = list(fds)
            for k in names[i % len(names) :] + names[: i % len(names)]:
                r = B.prog_test_run(fds[k], frame, repeat=repeat)
                assert r.retval == B.XDP_PASS, (k, r.retval)
                ns[k].append(float(r.duration_ns))
    finally:
        for fd in fds.values():
            os.close(fd)
        for ifname in ifnames[: len(RULES)]:
            Dataplane(ifname, None).detach()
    med = {k: median(v) for k, v in ns.items()}
    base = med["plain allow"]
    return {
        "method": "BPF_PROG_TEST_RUN of one-rule sets that differ only in rate_limit (limit far above the "
        f"offered rate, so every packet is admitted), {pool_size} frames with random sources, "
        f"repeat={repeat} each, median of per-frame averages",
        "ns": med,
        "extra_ns": {k: v - base for k, v in med.items()},
    }
