"""What `state: established` costs per packet: a state rule in front of a plain rule.

Three rule sets share one allow rule (`tcp dport 443`); `state` puts
`{state: established}` in front of it, as most edge rule files do, and
`state behind` after it (the first candidate for these frames then ignores
state, so the flow table is never asked).  Each is applied to its own
interface and its pinned ingress program is test-run on the same frames,
attached (see progcost for why), the programs taking turns frame by frame:

- `ack, new source`: a TCP ACK from a source never seen (a flood of
  spoofed ACKs, or any packet of a connection the host did not open): the
  flow table is asked and misses.
- `syn, new source`: a SYN from a source never seen (a SYN flood): a SYN
  without ACK never answers a connection this host opened, so the flow
  table is not asked at all.
- `ack, established`: a TCP ACK of a flow in the table (the answer to a
  connection this host opened): the lookup hits.

Cold: one run per frame (repeat=1), every frame from another source, so
every flow-table access misses the CPU caches as a flood's would; the
kernel's timer overhead is inside every figure, as in limitcost.  Hot: each
frame repeated `repeat` times.  Reported: medians per case and program,
and the state set's cost as a ratio of the plain set's.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

from bench.common import Lab, median
from bench.progcost import _pinned_to_one_cpu, ipv4_frame
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import maps as M
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.parse import parse_text
from xdpguard.state import Iface

WEB = "{name: web, match: {proto: tcp, dport: 443}, action: allow}"
REPLIES = "{name: replies, match: {state: established}, action: allow}"
RULES = {
    "plain": f"version: 1\ningress:\n  default: drop\n  rules:\n    - {WEB}\n",
    "state": f"version: 1\ningress:\n  default: drop\n  rules:\n    - {REPLIES}\n    - {WEB}\n",
    # The state rule behind one that decides these frames: no lookup at all.
    "state behind": f"version: 1\ningress:\n  default: drop\n  rules:\n    - {WEB}\n    - {REPLIES}\n",
}
HOST = 0xC6336401  # 198.51.100.1: the protected host, destination of every frame
TCP_SYN, TCP_ACK = 0x02, 0x10
CASES = ("ack, new source", "syn, new source", "ack, established")


def _pool(rng: random.Random, n: int, flags: int) -> list[tuple[int, int, bytes]]:
    """n frames to HOST:443 from distinct random sources: (source, source port, frame)."""
    seen: set[int] = set()
    out = []
    while len(out) < n:
        src = rng.getrandbits(32)
        if src in seen:
            continue
        seen.add(src)
        sport = rng.randrange(1024, 65536)
        out.append((src, sport, ipv4_frame(src, HOST, socket.IPPROTO_TCP, sport, 443, flags)))
    return out


def _record_flows(ifname: str, pool: list[tuple[int, int, bytes]]) -> None:
    """The flows this host would have opened to each source of `pool` (local port 443)."""
    flows = [
        M.FlowEntry(socket.IPPROTO_TCP, HOST.to_bytes(4, "big"), src.to_bytes(4, "big"), 443, sport)
        for src, sport, _ in pool
    ]
    with M.open_maps(str(Iface(ifname).pin_dir)) as m:
        M.add_flows(m, flows, time.monotonic_ns())


def _run(fds: dict[str, int], frames: list[bytes], repeat: int) -> dict[str, float]:
    ns: dict[str, list[float]] = {k: [] for k in fds}
    names = list(fds)
    for i, frame in enumerate(frames):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            r = B.prog_test_run(fds[k], frame, repeat=repeat)
            assert r.retval == B.XDP_PASS, (k, r.retval)
            ns[k].append(float(r.duration_ns))
    return {k: median(v) for k, v in ns.items()}


def measure(lab: Lab, ifnames: tuple[str, ...], pool_size: int, repeat: int) -> dict[str, object]:
    """Cold and hot cost of the plain and the state rule set (applied here, detached at the end)."""
    rng = random.Random(13)
    pools = {case: _pool(rng, pool_size, TCP_SYN if case.startswith("syn") else TCP_ACK) for case in CASES}
    hot_frames = max(1, pool_size // 50)
    fds: dict[str, int] = {}
    try:
        with net.in_netns(lab.ns):
            for (name, text), ifname in zip(RULES.items(), ifnames, strict=False):
                plan = compile_ruleset(parse_text(text, str(Path(lab.state_dir) / f"{ifname}.yaml")))
                Dataplane(ifname, net.ifindex(ifname), lab.ns).apply(plan, None)
                fds[name] = B.obj_get(Iface(ifname).pin("prog_ingress"))
        for ifname in ifnames[1 : len(RULES)]:
            _record_flows(ifname, pools["ack, established"])
        cold: dict[str, dict[str, float]] = {}
        hot: dict[str, dict[str, float]] = {}
        with _pinned_to_one_cpu():
            for case in CASES:
                frames = [f for _, _, f in pools[case]]
                cold[case] = _run(fds, frames, 1)
                hot[case] = _run(fds, frames[:hot_frames], repeat)
    finally:
        for fd in fds.values():
            os.close(fd)
        for ifname in ifnames[: len(RULES)]:
            Dataplane(ifname, None).detach()
    return {
        "method": "BPF_PROG_TEST_RUN of a one-rule set (tcp dport 443 allow) and the same set behind a "
        f"`state: established` rule, attached; cold: {pool_size} frames from distinct random sources, "
        f"repeat=1 each (kernel timer overhead included); hot: {hot_frames} of them, repeat={repeat} each; "
        "medians of per-frame figures",
        "cold_ns": cold,
        "hot_ns": hot,
        "cold_ratio_to_plain": {c: {k: cold[c][k] / cold[c]["plain"] for k in RULES} for c in CASES},
        "hot_ratio_to_plain": {c: {k: hot[c][k] / hot[c]["plain"] for k in RULES} for c in CASES},
    }


def main() -> None:
    """`python -m bench.statecost [N]`: this measurement alone, in a lab of its own."""
    import json
    import sys

    from bench import common

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with common.lab() as lab:
        print(json.dumps(measure(lab, lab.ifaces, n, 2000), indent=2))


if __name__ == "__main__":
    main()
