"""Dynamic sets: what `xdpguard set` costs, and what a set costs per packet.

CLI wall times (subprocess `python -m xdpguard --netns NS set ...`, the
monotonic clock around it, as an operator or a feed runs it): `set add` of
one element into a set that already holds 1,000,000 (median of reps),
and 100,000 elements piped to `set add NAME -`.

Per packet (BPF_PROG_TEST_RUN, hot: one frame repeated `repeat` times,
the kernel's average; median over a pool of frames, process pinned to a
CPU, as bench.progcost does): the same two-rule set attached twice, once
with its first rule `src: "@dyn"` over a dynamic set holding 1,000,000
exact IPv4 addresses (and 100 prefixes, so the prefix table is consulted
too) and once with that rule's source a static /32 instead.  Members:
frames from set members, dropped by the first rule, against frames from
the static /32, which that rule drops the same way (a drop decision costs
more than an allow, whatever the set: the comparison keeps the verdict
and the deciding rule the same).  Non-members: frames from random
addresses in neither, allowed by the second rule in both.  The difference
is what the dynamic set adds.

The set is filled in-process (dynsets.add, batch map updates); that time
is reported as well.  Everything runs in the benchmark lab's namespace.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import CLI, Lab, median, summary
from bench.progcost import XDP_PASS_PROG, _pinned_to_one_cpu, ipv4_frame
from xdpguard import net
from xdpguard.datapath import bpf as B
from xdpguard.datapath import dynsets as D
from xdpguard.datapath.dataplane import Dataplane
from xdpguard.rules.compile import compile_ruleset
from xdpguard.rules.model import Prefix
from xdpguard.rules.parse import load

TARGETS = {"set_add_one_s": 0.120, "stdin_100k_s": 2.0, "member_cost_ns": 25.0}
ELEMENTS = 1_000_000
BULK = 100_000
STATIC_SRC = 0xC6120001  # 198.18.0.1, the static rule's /32 below

WITH_SET = """\
version: 1
sets:
  dyn: {{dynamic: true, size: {size}}}
ingress:
  default: allow
  rules:
    - {{name: drop-dyn, match: {{src: "@dyn"}}, action: drop}}
    - {{name: web, match: {{proto: tcp, dport: 443}}, action: allow}}
"""
WITHOUT_SET = """\
version: 1
ingress:
  default: allow
  rules:
    - {name: drop-one, match: {src: 198.18.0.1/32}, action: drop}
    - {name: web, match: {proto: tcp, dport: 443}, action: allow}
"""


def _cli(lab: Lab, *args: str, stdin: str | None = None) -> float:
    t0 = time.monotonic()
    r = subprocess.run([*CLI, "--netns", lab.ns, *args], input=stdin, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"xdpguard {' '.join(args)}: {r.stderr.strip()[-500:]}")
    return wall


def _members(n: int, seed: int = 11) -> list[int]:
    rng = random.Random(seed)
    # 1M distinct addresses inside 10.0.0.0/8 and 100.64.0.0/10 (well away from the lab's).
    picks = rng.sample(range(1 << 24), n)
    return [(10 << 24) | x for x in picks]


def _hot(prog: int, frames: list[bytes], repeat: int) -> float:
    return median([float(B.prog_test_run(prog, f, repeat=repeat).duration_ns) for f in frames])


def measure(lab: Lab, ifaces: tuple[str, str], d: Path, reps: int, repeat: int, pool: int) -> dict[str, Any]:
    with_if, without_if = ifaces
    p_with = d / "dyn-with.yaml"
    p_with.write_text(WITH_SET.format(size=ELEMENTS + BULK + 1000))
    p_without = d / "dyn-without.yaml"
    p_without.write_text(WITHOUT_SET)
    out: dict[str, Any] = {}
    with net.in_netns(lab.ns):
        dp_with = Dataplane(with_if, net.ifindex(with_if), lab.ns)
        dp_without = Dataplane(without_if, net.ifindex(without_if), lab.ns)
        dp_with.apply(compile_ruleset(load(p_with)), p_with.read_text())
        dp_without.apply(compile_ruleset(load(p_without)), p_without.read_text())
        try:
            members = _members(ELEMENTS)
            sm = D.open_set(dp_with.pin_dir, "dyn")
            assert sm is not None
            with sm:
                t0 = time.monotonic()
                elems = [Prefix(4, a, 32) for a in members]
                elems += [Prefix(4, (100 << 24) | (64 << 16) | (i << 8), 24) for i in range(100)]
                res = D.add(sm, elems, 0, D.now_ns(dp_with.pin_dir))
                out["fill_1m_inprocess_s"] = round(time.monotonic() - t0, 3)
                if res.added != len(elems):
                    raise RuntimeError(f"filling the set added {res.added} of {len(elems)}")

            # CLI: one element into the full-size set, and 100k from stdin.
            rng = random.Random(5)
            adds = []
            for i in range(reps):
                addr = socket.inet_ntoa((0xC6120000 | (i + 2)).to_bytes(4, "big"))  # 198.18.0.x
                adds.append(_cli(lab, "set", "add", "dyn", addr, "--iface", with_if))
            out["set_add_one_wall_s"] = summary(adds)
            bulk = "\n".join(socket.inet_ntoa(rng.getrandbits(32).to_bytes(4, "big")) for _ in range(BULK))
            out["set_add_100k_stdin_wall_s"] = round(
                _cli(lab, "set", "add", "dyn", "-", "--iface", with_if, stdin=bulk + "\n"), 3
            )

            # Per packet, hot: set members (dropped by the dyn rule) and non-members.
            frng = random.Random(9)
            dst = 0xC0000201
            hit = [ipv4_frame(frng.choice(members), dst, 6, 40000, 443) for _ in range(pool)]
            hit_static = [ipv4_frame(STATIC_SRC, dst, 6, 40000 + i, 443) for i in range(pool)]
            miss = [ipv4_frame((172 << 24) | frng.getrandbits(20), dst, 6, 40000, 443) for _ in range(pool)]
            with (
                B.Fd(B.obj_get(dp_with.iface.pin("prog_ingress"))) as pw,
                B.Fd(B.obj_get(dp_without.iface.pin("prog_ingress"))) as po,
                B.Fd(B.prog_load(B.BPF_PROG_TYPE_XDP, XDP_PASS_PROG, name="xgb_pass")) as floor,
                _pinned_to_one_cpu(),
            ):
                for label, frames, static_frames in (("member", hit, hit_static), ("non_member", miss, miss)):
                    w = _hot(pw, frames, repeat)
                    o = _hot(po, static_frames, repeat)
                    out[f"hot_ns_{label}"] = {
                        "with_dynamic_set": round(w, 1),
                        "static_32_instead": round(o, 1),
                        "difference": round(w - o, 1),
                    }
                out["floor_hot_ns"] = round(_hot(floor, hit[:8], repeat), 1)
        finally:
            dp_with.detach()
            dp_without.detach()
    diff = max(out["hot_ns_member"]["difference"], out["hot_ns_non_member"]["difference"])
    out["targets"] = {
        **TARGETS,
        "set_add_one_ok": out["set_add_one_wall_s"]["median"] <= TARGETS["set_add_one_s"],
        "stdin_100k_ok": out["set_add_100k_stdin_wall_s"] <= TARGETS["stdin_100k_s"],
        "member_cost_ok": diff <= TARGETS["member_cost_ns"],
    }
    out["method"] = __doc__.split("\n\n", 1)[1].replace("\n", " ")
    return out
