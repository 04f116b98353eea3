"""Test cases: sample packets with the verdict an operator expects (`xdpguard test`).

`xdpguard test RULES CASES` reads a YAML list of packets, each with the
verdict (and optionally the deciding rule) it must get, and checks them.
case.py holds a case, the `Packet` the classifiers see of it and the raw
Ethernet frame the BPF programs see (the two agree: `parse_frame` of the
frame is the packet); parse.py reads a cases file into `Case`s (with
`file:line` errors, like the rule parser); plan.py checks cases against the
compiled plan with the classifier that mirrors the BPF program, and
reports them (JUnit XML); kernel.py runs the same cases through the real
programs.  Only kernel.py needs root and a kernel.

The file is `cases:` and a list of mappings with `expect: {verdict:
allow|drop, rule: NAME}` (rule optional; besides rule names: default,
malformed, non_ip, ndp, blocked; `expect: drop` is short for a verdict
alone) and:
`name`, `direction` (ingress), `src`, `dst`, `proto` (implied by tcp_flags
or icmp_type), `sport` (40000), `dport`, `tcp_flags` ("syn,ack", "none";
syn, or ack when established), `icmp_type`/`icmp_code` (0), `state` (new),
`fragment` (first|later), `length` (frame bytes, at most 1514); or, for a
non-IP frame, `ethertype` (arp, lldp or a number); `truncate: N` cuts an IP
frame to N bytes, which makes it malformed.

Rate limits and blocks need a packet more than once: `repeat: N` sends
the packet N times, `interval` apart (a duration; default 0, back to
back), and `expect` may then be a list with one expectation per packet:
`[allow x5, drop by ssh-guard, wait 10m, allow]` ("VERDICT [by RULE]
[xN]", or "wait DURATION" to let time pass before the next packet).  The
time is simulated: the plan check runs the limits on a model of the
programs' buckets and blocks (rules/ratesim.py), and --kernel/--wire set
the programs' test clock to the same instants.

A case that says `state: established` means "the host opened this flow":
its opening packet (addresses and ports swapped: a TCP SYN, an SCTP INIT,
an echo request, or a UDP datagram from a connected socket) goes through
the egress rules, and the flow exists only if egress lets it out, exactly
as in the kernel, where only the egress program records flows.  Every case starts from an empty
flow table and full rate-limit buckets, so cases never influence each other.
"""
