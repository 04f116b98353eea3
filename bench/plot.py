"""docs/img/bench-peers.png: the peer comparison of bench.peers as bar charts (matplotlib).

Left: receive cost on the veth (softirq ns per packet, log scale), per
configuration; right: program cost (BPF_PROG_TEST_RUN hot medians).  If
matplotlib is missing (`pip install '.[bench]'`), nothing is written and
write() says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

RX_LABELS = {
    "none": "nothing attached",
    "xdp_drop": "bare XDP_DROP (floor)",
    "xdpguard_acl1_1k": "xdpguard acl1_1k",
    "nft_linear_acl1_1k": "nft linear acl1_1k",
    "iptables_linear_acl1_1k": "iptables-legacy raw acl1_1k",
    "xdpguard_acl1_10k": "xdpguard acl1_10k",
    "nft_linear_acl1_10k": "nft linear acl1_10k",
    "iptables_linear_acl1_10k": "iptables-legacy raw acl1_10k",
    "xdpguard_bl100k": "xdpguard 100k blocklist",
    "nft_set_bl100k": "nft interval set 100k",
}


def _color(name: str) -> str:
    if name.startswith("xdpguard"):
        return "tab:blue"
    if name.startswith(("nft", "iptables", "xdp-filter")):
        return "tab:orange"
    return "tab:gray"


def write(results: dict[str, Any], path: Path) -> bool:
    p = results.get("peers", {})
    if "receive" not in p or "progcost" not in p:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed (pip install '.[bench]'): no plot written", file=sys.stderr)
        return False
    rx = p["receive"]["configs"]
    rx_names = [k for k in RX_LABELS if k in rx]
    pc: dict[str, float] = {}
    for rnd in p["progcost"]["rounds"].values():
        for k, v in rnd.items():
            pc.setdefault(k, v["median"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    vals = [rx[k]["ns_per_pkt"] for k in rx_names]
    a1.barh([RX_LABELS[k] for k in rx_names], vals, color=[_color(k) for k in rx_names])
    a1.set_xscale("log")
    a1.set_xlim(min(vals) / 1.5, max(vals) * 2.5)
    a1.invert_yaxis()
    a1.set_xlabel("receive softirq ns per packet (log scale)")
    a1.set_title("Receive cost on a veth (one sending CPU)")
    for i, v in enumerate(vals):
        a1.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    names = list(pc)
    pv = [pc[k] for k in names]
    a2.barh(names, pv, color=[_color(k) for k in names])
    a2.set_xlim(0, max(pv) * 1.15)
    a2.invert_yaxis()
    a2.set_xlabel("ns per packet (BPF_PROG_TEST_RUN, hot median)")
    a2.set_title("Program cost")
    for i, v in enumerate(pv):
        a2.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    m = results["meta"]
    fig.suptitle(f"xdpguard vs peers ({m['mode']} run, {m['date']}, kernel {m['kernel']})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
