/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What is specific to the egress hook (tcx): reaching the headers of a
 * possibly non-linear skb, the socket that sent a packet, and the tc
 * return codes.  The program itself, xg_egress, is in bpf/xdpguard.c.
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

/* Is the sending socket a UDP socket connected to this packet's peer?
 * A client's resolver, NTP or QUIC socket is; a server answering on its
 * unconnected socket (a DNS server on port 53) is not, so answering a
 * query never makes the client's next query "established".  Forwarded
 * packets have no socket and open no UDP flow either. */
static __always_inline int xg_udp_sock_connected(struct bpf_sock *sk, const struct xg_pkt *p)
{
	if (!sk || p->proto != IPPROTO_UDP || sk->dst_port != bpf_htons(p->dport))
		return 0;
	if (p->family == 4)
		return sk->dst_ip4 == *(const __u32 *)p->dst;
	const __u32 *d = (const __u32 *)p->dst;

	return sk->dst_ip6[0] == d[0] && sk->dst_ip6[1] == d[1] && sk->dst_ip6[2] == d[2] && sk->dst_ip6[3] == d[3];
}

#endif /* XG_EGRESS_H */
