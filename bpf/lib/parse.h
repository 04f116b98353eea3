/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Frame parser shared by the ingress (XDP) and egress (tc) programs.
 *
 * Pure functions over [data, data_end): no maps, so bcc needs no rewriting
 * here.  xdpguard/rules/packet.py mirrors this file step for step; the
 * differential test holds the two to the same verdicts, so change both.
 *
 * Lengths the packet claims are checked against frame_len, the whole
 * frame; reads are bounded by data_end, the part we can see.  They differ
 * for a tc program's non-linear skb, whose headers the caller pulls into
 * the linear area first.
 */
#ifndef XG_PARSE_H
#define XG_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#include "include/xdpguard.h"

#define XG_MAX_VLAN_TAGS 2
#define XG_MAX_EXT_HDRS 6

#define XG_IPV4_HLEN 20
#define XG_IPV6_HLEN 40
#define XG_TCP_HLEN 20
#define XG_UDP_HLEN 8
#define XG_SCTP_HLEN 12
#define XG_ICMP_HLEN 8
#define XG_IPV4_OFFMASK 0x1fff
#define XG_AH_MIN_LEN 8

#define XG_TCP_SYN 0x02
#define XG_TCP_RST 0x04
#define XG_TCP_ACK 0x10
#define XG_SCTP_INIT 1 /* chunk type of an association's first packet */

#define XG_NDP_FIRST 133 /* router solicitation */
#define XG_NDP_LAST 137  /* redirect */

enum xg_kind {
	XG_KIND_IP = 0,
	XG_KIND_NON_IP = 1,
	XG_KIND_MALFORMED = 2,
};

struct xg_vlan {
	__be16 tci;
	__be16 proto;
};

/* What the classifier needs of a packet; addresses in network order. */
struct xg_pkt {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 later_frag; /* non-first fragment: no L4 header */
	__u8 has_ports;
	__u8 has_icmp;
	__u8 tflags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 sport; /* host order */
	__u16 dport;
	__u16 icmp_id; /* echo identifier, network order */
	__u8 sctp_chunk; /* type of the first chunk (flow creation only, not classified) */
	__u8 pad;
	__u8 src[16]; /* IPv4 uses the first 4 bytes */
	__u8 dst[16];
};

static __always_inline int xg_parse_l4(void *l4, void *end, void *data_end, struct xg_pkt *p)
{
	__u8 *h = l4;

	switch (p->proto) {
	case IPPROTO_TCP:
		if (l4 + XG_TCP_HLEN > end || l4 + XG_TCP_HLEN > data_end)
			return XG_KIND_MALFORMED;
		if ((h[12] >> 4) < 5)
			return XG_KIND_MALFORMED;
		p->tflags = h[13];
		break;
	case IPPROTO_UDP:
		if (l4 + XG_UDP_HLEN > end || l4 + XG_UDP_HLEN > data_end)
			return XG_KIND_MALFORMED;
		break;
	case IPPROTO_SCTP:
		if (l4 + XG_SCTP_HLEN > end || l4 + XG_SCTP_HLEN > data_end)
			return XG_KIND_MALFORMED;
		if (l4 + XG_SCTP_HLEN + 1 <= end && l4 + XG_SCTP_HLEN + 1 <= data_end)
			p->sctp_chunk = h[XG_SCTP_HLEN];
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (l4 + XG_ICMP_HLEN > end || l4 + XG_ICMP_HLEN > data_end)
			return XG_KIND_MALFORMED;
		p->has_icmp = 1;
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		p->icmp_id = *(__u16 *)(h + 4);
		return XG_KIND_IP;
	default:
		return XG_KIND_IP;
	}
	p->has_ports = 1;
	p->sport = ((__u16)h[0] << 8) | h[1];
	p->dport = ((__u16)h[2] << 8) | h[3];
	return XG_KIND_IP;
}

static __always_inline int xg_parse_ipv4(void *cur, void *data_end, __u32 room, struct xg_pkt *p)
{
	struct iphdr *ip = cur;

	if ((void *)(ip + 1) > data_end)
		return XG_KIND_MALFORMED;
	__u32 ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < XG_IPV4_HLEN || cur + ihl > data_end)
		return XG_KIND_MALFORMED;
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (tot < ihl || tot > room)
		return XG_KIND_MALFORMED;
	p->family = 4;
	p->proto = ip->protocol;
	__builtin_memcpy(p->src, &ip->saddr, 4);
	__builtin_memcpy(p->dst, &ip->daddr, 4);
	if (bpf_ntohs(ip->frag_off) & XG_IPV4_OFFMASK) {
		p->later_frag = 1;
		return XG_KIND_IP;
	}
	/* AH authenticates what follows without hiding it: walk it as the IPv6
	 * chain is walked, so rules see the real protocol and ports (AH must
	 * not be a way around a port rule). */
	void *l4 = cur + ihl;
	void *end = cur + tot;
	__u8 nh = ip->protocol;
#pragma unroll
	for (int i = 0; i < XG_MAX_EXT_HDRS; i++) {
		if (nh != IPPROTO_AH)
			break;
		__u8 *h = l4;
		if (l4 + XG_AH_MIN_LEN > end || l4 + XG_AH_MIN_LEN > data_end)
			return XG_KIND_MALFORMED;
		__u32 hlen = ((__u32)h[1] + 2) * 4;
		if (l4 + hlen > end)
			return XG_KIND_MALFORMED;
		nh = h[0];
		l4 += hlen;
	}
	if (nh == IPPROTO_AH)
		return XG_KIND_MALFORMED;
	p->proto = nh;
	return xg_parse_l4(l4, end, data_end, p);
}

static __always_inline int xg_is_ext_hdr(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS || nh == IPPROTO_AH ||
	       nh == IPPROTO_FRAGMENT;
}

static __always_inline int xg_parse_ipv6(void *cur, void *data_end, __u32 room, struct xg_pkt *p)
{
	struct ipv6hdr *ip6 = cur;

	if ((void *)(ip6 + 1) > data_end)
		return XG_KIND_MALFORMED;
	if (ip6->version != 6)
		return XG_KIND_MALFORMED;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (XG_IPV6_HLEN + plen > room)
		return XG_KIND_MALFORMED;
	void *end = cur + XG_IPV6_HLEN + plen;
	p->family = 6;
	__builtin_memcpy(p->src, &ip6->saddr, 16);
	__builtin_memcpy(p->dst, &ip6->daddr, 16);
	__u8 nh = ip6->nexthdr;
	cur += XG_IPV6_HLEN;

	/* A bounded walk: chains longer than this are dropped as malformed
	 * rather than passed unclassified. */
#pragma unroll
	for (int i = 0; i < XG_MAX_EXT_HDRS; i++) {
		if (!xg_is_ext_hdr(nh))
			break;
		__u8 *h = cur;
		if (cur + 8 > end || cur + 8 > data_end)
			return XG_KIND_MALFORMED;
		if (nh == IPPROTO_FRAGMENT) {
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			nh = h[0];
			cur += 8;
			if (fo >> 3) {
				p->proto = nh;
				p->later_frag = 1;
				return XG_KIND_IP;
			}
			continue;
		}
		__u32 hlen = nh == IPPROTO_AH ? ((__u32)h[1] + 2) * 4 : ((__u32)h[1] + 1) * 8;
		if (cur + hlen > end)
			return XG_KIND_MALFORMED;
		nh = h[0];
		cur += hlen;
	}
	if (xg_is_ext_hdr(nh))
		return XG_KIND_MALFORMED;
	p->proto = nh;
	return xg_parse_l4(cur, end, data_end, p);
}

/* The ethertype after the Ethernet header and up to two VLAN tags into
 * *etype, and in *l3 where that protocol's header starts; -1 when the frame
 * is cut short or has a third tag (we cannot see what it carries).  Any
 * ethertype, 0 included, is a valid answer, so failure is not an ethertype. */
static __always_inline int xg_parse_l2(void *data, void *data_end, void **l3, __be16 *etype_out)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	void *cur = eth + 1;
	__be16 etype = eth->h_proto;

#pragma unroll
	for (int i = 0; i < XG_MAX_VLAN_TAGS; i++) {
		if (etype != bpf_htons(ETH_P_8021Q) && etype != bpf_htons(ETH_P_8021AD))
			break;
		struct xg_vlan *vh = cur;
		if ((void *)(vh + 1) > data_end)
			return -1;
		etype = vh->proto;
		cur = vh + 1;
	}
	if (etype == bpf_htons(ETH_P_8021Q) || etype == bpf_htons(ETH_P_8021AD))
		return -1;
	*l3 = cur;
	*etype_out = etype;
	return 0;
}

/* Parse a frame of frame_len bytes; on XG_KIND_IP `p` holds its fields. */
static __always_inline int xg_parse(void *data, void *data_end, __u32 frame_len, struct xg_pkt *p)
{
	void *cur = data;
	__be16 etype = 0;

	if (xg_parse_l2(data, data_end, &cur, &etype) < 0)
		return XG_KIND_MALFORMED;
	/* Bytes the frame holds from the network header on. */
	__u32 hdr = cur - data;
	__u32 room = frame_len > hdr ? frame_len - hdr : 0;

	if (etype == bpf_htons(ETH_P_IP))
		return xg_parse_ipv4(cur, data_end, room, p);
	if (etype == bpf_htons(ETH_P_IPV6))
		return xg_parse_ipv6(cur, data_end, room, p);
	return XG_KIND_NON_IP;
}

/* Only the addresses (for dynamic sets, see xdpguard.c): into src/dst, the
 * family as the return value (0 when not IPv4/IPv6 or cut short).  A frame
 * the full parser calls malformed never reaches the rules, whatever this
 * read from it. */
static __always_inline __u32 xg_parse_addrs(void *data, void *data_end, __u8 *src, __u8 *dst)
{
	void *l3 = data;
	__be16 etype = 0;

	if (xg_parse_l2(data, data_end, &l3, &etype) < 0)
		return 0;

	if (etype == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;

		if ((void *)(ip + 1) > data_end)
			return 0;
		__builtin_memcpy(src, &ip->saddr, 4);
		__builtin_memcpy(dst, &ip->daddr, 4);
		return 4;
	}
	if (etype == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;

		if ((void *)(ip6 + 1) > data_end)
			return 0;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		return 6;
	}
	return 0;
}

static __always_inline int xg_is_ndp(const struct xg_pkt *p)
{
	return p->family == 6 && p->proto == IPPROTO_ICMPV6 && p->has_icmp && p->icmp_type >= XG_NDP_FIRST &&
	       p->icmp_type <= XG_NDP_LAST;
}

#endif /* XG_PARSE_H */
