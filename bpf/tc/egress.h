/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What is specific to the egress hook (tcx): reaching the headers of a
 * possibly non-linear skb, the flow key of an outbound packet, and the
 * tc return codes.  The program itself, xg_egress, is in bpf/xdpguard.c.
 */
#ifndef XG_EGRESS_H
#define XG_EGRESS_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "include/xdpguard.h"
#include "lib/parse.h"

/* Headers deeper than this into a frame are not looked at: such a frame
 * is treated as malformed (an IPv6 chain of extension headers that long
 * is an attack, not traffic). */
#define XG_TC_PULL_LEN 512

#define XG_TCP_RST 0x04

#define XG_ICMP_ECHO_REQUEST 8
#define XG_ICMP_ECHO_REPLY 0
#define XG_ICMPV6_ECHO_REQUEST 128
#define XG_ICMPV6_ECHO_REPLY 129

/* Locally generated packets may keep payload, and sometimes headers, in
 * page fragments; the parser reads only the linear part. */
static __always_inline void xg_tc_pull_headers(struct __sk_buff *skb)
{
	__u32 linear = skb->data_end - skb->data;
	__u32 want = skb->len < XG_TC_PULL_LEN ? skb->len : XG_TC_PULL_LEN;

	if (linear < want)
		bpf_skb_pull_data(skb, want);
}

static __always_inline int xg_tc_action(int drop)
{
	return drop ? TC_ACT_SHOT : TC_ACT_OK;
}

/* The flow a packet belongs to, seen from this host ("local" side first).
 * Outbound TCP/UDP/SCTP and ICMP echo requests create flows; inbound
 * packets of those protocols and echo replies look them up. */
static __always_inline int xg_flow_key(const struct xg_pkt *p, __u32 dir, struct xg_flow_key *k)
{
	const __u8 *local = dir == XG_DIR_EGRESS ? p->src : p->dst;
	const __u8 *remote = dir == XG_DIR_EGRESS ? p->dst : p->src;

	k->family = p->family;
	k->proto = p->proto;
	if (p->has_ports) {
		k->lport = dir == XG_DIR_EGRESS ? p->sport : p->dport;
		k->rport = dir == XG_DIR_EGRESS ? p->dport : p->sport;
	} else if (p->has_icmp) {
		__u8 want;

		if (p->proto == IPPROTO_ICMP)
			want = dir == XG_DIR_EGRESS ? XG_ICMP_ECHO_REQUEST : XG_ICMP_ECHO_REPLY;
		else
			want = dir == XG_DIR_EGRESS ? XG_ICMPV6_ECHO_REQUEST : XG_ICMPV6_ECHO_REPLY;
		if (p->icmp_type != want)
			return -1;
		k->lport = p->icmp_id;
	} else {
		return -1;
	}
	if (p->family == 4) {
		__builtin_memcpy(k->laddr, local, 4);
		__builtin_memcpy(k->raddr, remote, 4);
	} else {
		__builtin_memcpy(k->laddr, local, 16);
		__builtin_memcpy(k->raddr, remote, 16);
	}
	return 0;
}

#endif /* XG_EGRESS_H */
