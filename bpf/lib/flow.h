/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Which packets belong to a flow (state: established), and their keys.
 *
 * Pure code over a parsed packet; the flow tables themselves are accessed
 * in bpf/xdpguard.c (bcc rewrites map calls only there).  A flow is
 * written by egress and read by ingress with the tuple reversed, so both
 * directions build the same key: "local" is this host's side.
 *
 * Only connections this host opens may create a flow, so that nothing a
 * remote peer starts (a SYN to an open port, a DNS query, a ping) can make
 * its own later packets "established".  What counts as opening is decided
 * from what the host sends first: a TCP SYN without ACK, an SCTP INIT, an
 * ICMP echo request, or a UDP datagram from a socket connected to that
 * very peer (see xg_udp_sock_connected in tc/egress.h).
 */
#ifndef XG_FLOW_H
#define XG_FLOW_H

#include <uapi/linux/in.h>

#include "include/xdpguard.h"
#include "lib/parse.h"

#define XG_ICMP_ECHO_REQUEST 8
#define XG_ICMP_ECHO_REPLY 0
#define XG_ICMPV6_ECHO_REQUEST 128
#define XG_ICMPV6_ECHO_REPLY 129

/* Ports of the flow a packet belongs to, local side first, or -1 when the
 * packet belongs to none: outbound, TCP/UDP/SCTP and ICMP echo requests;
 * inbound, TCP/UDP/SCTP and echo replies.  An inbound TCP SYN without ACK
 * starts a connection and never answers one this host opened (the answer
 * to our SYN carries an ACK), so it is not even looked up. */
static __always_inline int xg_flow_ports(const struct xg_pkt *p, __u32 dir, __u16 *lport, __u16 *rport)
{
	if (p->has_ports) {
		if (dir == XG_DIR_INGRESS && p->proto == IPPROTO_TCP &&
		    (p->tflags & (XG_TCP_SYN | XG_TCP_ACK)) == XG_TCP_SYN)
			return -1;
		*lport = dir == XG_DIR_EGRESS ? p->sport : p->dport;
		*rport = dir == XG_DIR_EGRESS ? p->dport : p->sport;
		return 0;
	}
	if (p->has_icmp) {
		__u8 want;

		if (p->proto == IPPROTO_ICMP)
			want = dir == XG_DIR_EGRESS ? XG_ICMP_ECHO_REQUEST : XG_ICMP_ECHO_REPLY;
		else
			want = dir == XG_DIR_EGRESS ? XG_ICMPV6_ECHO_REQUEST : XG_ICMPV6_ECHO_REPLY;
		if (p->icmp_type != want)
			return -1;
		*lport = p->icmp_id;
		*rport = 0;
		return 0;
	}
	return -1;
}

/* Can an inbound packet belong to a flow this host opened at all? */
static __always_inline int xg_flow_possible(const struct xg_pkt *p)
{
	__u16 lport, rport;

	return xg_flow_ports(p, XG_DIR_INGRESS, &lport, &rport) == 0;
}

/* The key of a packet's flow, or -1 (k zeroed by the caller).  An IPv4
 * packet's addresses fill 4 bytes; the parser leaves the other 12 zero. */
static __always_inline int xg_flow_key(const struct xg_pkt *p, __u32 dir, struct xg_flow_key *k)
{
	if (xg_flow_ports(p, dir, &k->lport, &k->rport) < 0)
		return -1;
	k->family = p->family;
	k->proto = p->proto;
	__builtin_memcpy(k->laddr, dir == XG_DIR_EGRESS ? p->src : p->dst, 16);
	__builtin_memcpy(k->raddr, dir == XG_DIR_EGRESS ? p->dst : p->src, 16);
	return 0;
}

/* May this outbound packet create a flow?  Only the first packet of a
 * connection this host opens: a TCP SYN without ACK (a SYN-ACK answers a
 * remote peer's SYN; a RST answers a probe), an SCTP INIT (not the
 * INIT-ACK of a server), an ICMP echo request (xg_flow_ports takes no
 * other ICMP on egress), and UDP from a connected socket (the caller
 * checks the socket).  Other packets only refresh a flow that exists. */
static __always_inline int xg_opens_flow(const struct xg_pkt *p, int udp_connected)
{
	if (p->proto == IPPROTO_TCP)
		return (p->tflags & (XG_TCP_SYN | XG_TCP_ACK | XG_TCP_RST)) == XG_TCP_SYN;
	if (p->proto == IPPROTO_SCTP)
		return p->sctp_chunk == XG_SCTP_INIT;
	if (p->proto == IPPROTO_UDP)
		return udp_connected;
	return 1;
}

#endif /* XG_FLOW_H */
