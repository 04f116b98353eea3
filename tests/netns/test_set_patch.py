"""A set file edited by a few prefixes: the patched address tables give exact verdicts on the wire.

A rule drops a 20,000-prefix set (IPv4 and IPv6) by source.  The set file
is edited the way a blocklist feed changes: A's own address comes in as a
host route (a run split in two), then goes, replaced by a short prefix
around it and a neighbouring one (runs merged and split again), then the
file goes back to where it started.  After each apply, frames from A and
from addresses right next to the edited prefixes must arrive on B exactly
when no set prefix holds them, and `apply --json` must say that the
tables were patched from the ones the interface held (or, for the file
seen before, laid out from the runs kept for it), not painted again.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.netns.clihelp import Frames, Guard, send_and_see
from tests.netns.traffic import Lab

RULES = """\
version: 1
sets:
  blk: {file: lists/blk.netset}
ingress:
  default: allow
  rules:
    - name: drop-blk
      match: {src: "@blk"}
      action: drop
"""


def _base_set() -> list[str]:
    """20,000 prefixes away from the lab's addresses (10.200.0.0/16, fd00:200::/32)."""
    rng = random.Random(17)
    v4 = {
        f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(0, 256, 4)}/30"
        for _ in range(15000)
    }
    v6 = {f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/64" for _ in range(5000)}
    return sorted(v4) + sorted(v6)


def _probe(guard: Guard, lab: Lab, dropped: set[str]) -> None:
    fx = Frames(lab.a, lab.b)
    frames = {
        "a4": fx.udp(),
        "a6": fx.udp(v6=True),
        "next4": fx.udp(src="10.200.0.5"),  # outside 10.200.0.0/30
        "near4": fx.udp(src="10.200.0.2"),  # inside 10.200.0.0/30, not A
        "next6": fx.udp(v6=True, src="fd00:200::2"),
    }
    arrived, _ = send_and_see(lab, frames)
    assert arrived == set(frames) - dropped


def test_a_few_prefixes_changed_are_patched_with_exact_verdicts(
    guard: Guard, lab: Lab, tmp_path: Path
) -> None:
    (tmp_path / "lists").mkdir()
    netset = tmp_path / "lists" / "blk.netset"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    base = _base_set()
    netset.write_text("\n".join(base) + "\n")
    assert guard.apply_json(rules)["attached"]
    _probe(guard, lab, set())

    # A's addresses come in as host routes.
    netset.write_text("\n".join([*base, lab.a.ip4, lab.a.ip6]) + "\n")
    w = guard.apply_json(rules)["writes"]
    assert w["addr_tables"] == 2 and w["addr_patched"] == 2, w
    _probe(guard, lab, {"a4", "a6"})

    # The v4 host route widens to a /30 and a base prefix goes (patched); the
    # v6 host route goes, which gives back the first file's v6 entries (kept).
    netset.write_text("\n".join([*base[1:], "10.200.0.0/30"]) + "\n")
    w = guard.apply_json(rules)["writes"]
    assert w["addr_tables"] == 2 and w["addr_patched"] == 1 and w["addr_reused"] == 1, w
    _probe(guard, lab, {"a4", "near4"})

    # Back to the first file: the v4 runs were kept (v6 is already the same).
    netset.write_text("\n".join(base) + "\n")
    w = guard.apply_json(rules)["writes"]
    assert w["addr_tables"] == 1 and w["addr_reused"] == 1, w
    _probe(guard, lab, set())
