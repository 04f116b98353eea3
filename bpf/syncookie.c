// SPDX-License-Identifier: GPL-2.0
/*
 * SYN cookies (syn_cookies: true): the two programs that do the work,
 * built with clang and loaded through libbpf once some rule asks for them
 * (xdpguard/datapath/syncookie.py), not with bcc, which can call neither
 * kfuncs nor BPF-to-BPF functions.
 *
 * xg_syn_xdp: the ingress program (bpf/xdpguard.c) tail-calls it for the
 * TCP packets a syn_cookies rule allows, the rule in syn_scratch.  A SYN
 * to a listening port is turned into our SYN-ACK in place, its initial
 * sequence number a cookie (lib/syncookie.h), and sent back the way it
 * came (XDP_TX): the stack never sees it.  An ACK for no existing
 * connection must carry one of our cookies: a good one is noted in
 * syn_pending (by connection, with its rule) and passed, a bad one dropped
 * and counted.  Packets of existing connections pass untouched.
 *
 * xg_syn_handoff: at the tcx ingress hook.  The listener never saw the
 * SYN and, its SYN queue quiet, would refuse a cookie ACK.  For the frames
 * syn_pending names only, the cookie is checked again (the note is a
 * hint, the MAC is the proof) and the kfunc bpf_sk_assign_tcp_reqsk gives
 * the listener a request socket built from the options the cookie
 * carries; the stack then completes the connection as if it had made the
 * cookie itself.  While no cookie ACK has passed for a second (syn_gate),
 * every other frame costs an array read and the coarse clock.
 *
 * The note is a map, not XDP metadata (bpf_xdp_adjust_meta), because some
 * kernels refuse that helper to XDP programs: this one did (6.18,
 * "program of this type cannot use helper bpf_xdp_adjust_meta"), and a
 * map works on every kernel that has the hand-off kfunc.
 *
 * Only simple frames are handled: Ethernet with up to two VLAN tags, IPv4
 * without options or IPv6 without extension headers, not fragmented.
 * Anything else goes to the stack, which has SYN cookies of its own.
 *
 * The maps are the interface's pinned ones (the loader passes them in
 * with bpf_map__reuse_fd); the declarations here only give their shape.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "include/xdpguard.h"
#include "lib/event.h"
#include "lib/parse.h"
#include "lib/syncookie.h"

#define XG_TCX_NEXT (-1)
#define XG_TCX_PASS 0
#define XG_SYN_MAX_L3 (ETH_HLEN + 2 * 4) /* two VLAN tags */

/* libbpf matches the extern against the kernel's BTF and wants the same
 * kinds: defined structs, not forward declarations.  The kernel only looks
 * at what the pointers point to, so their members need not be spelled out,
 * except the attributes, whose layout lib/syncookie.h mirrors. */
struct sock {
};
struct bpf_tcp_req_attrs {
	struct xg_syn_attrs a;
};
_Static_assert(sizeof(struct xg_syn_attrs) == 20, "struct bpf_tcp_req_attrs is 20 bytes");

extern int bpf_sk_assign_tcp_reqsk(struct __sk_buff *skb, struct sock *sk, struct bpf_tcp_req_attrs *attrs,
				   int attrs__sz) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xg_syn_scratch);
} syn_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xg_syn_secret);
} syn_secret SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XG_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct xg_syn_counter);
} syn_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XG_EVENTS_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xg_event_cfg);
} event_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xg_event_rate);
} event_rate SEC(".maps");

/* Valid cookie ACKs on their way from xg_syn_xdp to xg_syn_handoff, by
 * connection: the rule's counter slot.  An ACK the stack never delivers
 * leaves its entry to the LRU. */
struct xg_syn_pending {
	__u32 slot;
	__u32 pad;
};

#define XG_SYN_PENDING 4096
/* How long after a valid cookie ACK the tc program looks for more. */
#define XG_SYN_GATE_NS 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XG_SYN_PENDING);
	__type(key, struct xg_syn_tuple);
	__type(value, struct xg_syn_pending);
} syn_pending SEC(".maps");

/* Until when (bpf_ktime_get_coarse_ns) the tc program parses frames to
 * look for them in syn_pending: 0 or past, it passes every frame at once. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} syn_gate SEC(".maps");

enum xg_syn_result {
	XG_SYN_PASS = 0,    /* not ours to judge: the stack sees it */
	XG_SYN_SENT = 1,    /* rewritten into a cookie SYN-ACK: XDP_TX */
	XG_SYN_VALID = 2,   /* an ACK with a good cookie, tagged for the tc hand-off */
	XG_SYN_INVALID = 3, /* an ACK with a bad cookie for no connection: drop */
};

#define XG_SYNACK_OPT_WORDS 5 /* at most 20 bytes of options */
#define XG_SYNACK_TTL 64
#define XG_IPV4_DF 0x4000
#define XG_SYN_WINDOW 65535

/* Offset of the IP header (the TCP header follows it directly), or -1 for
 * a frame this file does not handle. */
static __always_inline int xg_syn_l3_offset(void *data, void *data_end, __u8 family)
{
	struct ethhdr *eth = data;
	__u32 off = sizeof(*eth);

	if ((void *)(eth + 1) > data_end)
		return -1;
	__be16 proto = eth->h_proto;
#pragma unroll
	for (int i = 0; i < XG_MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct xg_vlan *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return -1;
		proto = vh->proto;
		off += sizeof(*vh);
	}
	if (family == 4) {
		struct iphdr *ip = data + off;
		if (proto != bpf_htons(ETH_P_IP) || (void *)(ip + 1) > data_end || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return -1;
		return off;
	}
	struct ipv6hdr *ip6 = data + off;
	if (proto != bpf_htons(ETH_P_IPV6) || (void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
		return -1;
	return off;
}

static __always_inline __u32 xg_syn_iplen(__u8 family)
{
	return family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
}

static __always_inline void xg_syn_tuple_of(const struct xg_pkt *p, struct xg_syn_tuple *t)
{
	__builtin_memcpy(t->src, p->src, 16);
	__builtin_memcpy(t->dst, p->dst, 16);
	t->sport = p->sport;
	t->dport = p->dport;
	t->family = p->family;
}

/* The tuple to look the packet's socket up by; returns its size. */
static __always_inline __u32 xg_syn_sock_tuple(const struct xg_pkt *p, struct bpf_sock_tuple *st)
{
	if (p->family == 4) {
		__builtin_memcpy(&st->ipv4.saddr, p->src, 4);
		__builtin_memcpy(&st->ipv4.daddr, p->dst, 4);
		st->ipv4.sport = bpf_htons(p->sport);
		st->ipv4.dport = bpf_htons(p->dport);
		return sizeof(st->ipv4);
	}
	__builtin_memcpy(st->ipv6.saddr, p->src, 16);
	__builtin_memcpy(st->ipv6.daddr, p->dst, 16);
	st->ipv6.sport = bpf_htons(p->sport);
	st->ipv6.dport = bpf_htons(p->dport);
	return sizeof(st->ipv6);
}

/* The socket this packet would reach: 1 for a listener (or nothing at
 * all), 0 for an existing connection (established, time-wait, or a
 * request the stack itself is handling), which is left alone. */
static __always_inline int xg_syn_no_connection(struct xdp_md *ctx, const struct xg_pkt *p, int *listener)
{
	struct bpf_sock_tuple st = {};
	__u32 size = xg_syn_sock_tuple(p, &st);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &st, size, BPF_F_CURRENT_NETNS, 0);

	*listener = 0;
	if (!sk)
		return 1;
	__u32 state = sk->state;
	bpf_sk_release(sk);
	*listener = state == BPF_TCP_LISTEN;
	return *listener;
}

/* Parsing TCP options.  The options are copied into a buffer on the stack
 * and walked one option per bpf_loop() step: the callback is verified on
 * its own, so the verifier's work does not multiply with the ways options
 * can be laid out (an inline walk needs over a million instructions of
 * verification).  MSS, window scale and SACK count only in a SYN. */
#define XG_SYN_OPT_BUF 64  /* the copy: room for a 10-byte option at any offset below 40 */
#define XG_SYN_OPT_STEPS 40 /* one option per step; 40 one-byte NOPs at most */

struct xg_opt_walk {
	__u8 buf[XG_SYN_OPT_BUF];
	__u32 len;
	__u32 off;
	__u32 syn;
	__u32 pad;
	struct xg_syn_opts o;
};

static __always_inline __u32 xg_opt_byte(const struct xg_opt_walk *w, __u32 i)
{
	return w->buf[i & (XG_SYN_OPT_BUF - 1)];
}

static __always_inline __u32 xg_opt_be32(const struct xg_opt_walk *w, __u32 i)
{
	return (xg_opt_byte(w, i) << 24) | (xg_opt_byte(w, i + 1) << 16) | (xg_opt_byte(w, i + 2) << 8) |
	       xg_opt_byte(w, i + 3);
}

static long xg_opt_step(__u32 step, void *arg)
{
	struct xg_opt_walk *w = arg;
	__u32 off = w->off;

	if (off >= w->len || off >= XG_SYN_OPT_BYTES)
		return 1;
	__u32 kind = xg_opt_byte(w, off);
	if (kind == XG_TCPOPT_EOL)
		return 1;
	if (kind == XG_TCPOPT_NOP) {
		w->off = off + 1;
		return 0;
	}
	__u32 olen = xg_opt_byte(w, off + 1);
	if (olen < 2 || off + olen > w->len)
		return 1;
	if (kind == XG_TCPOPT_MSS && olen == XG_TCPOLEN_MSS && w->syn) {
		w->o.mss = (xg_opt_byte(w, off + 2) << 8) | xg_opt_byte(w, off + 3);
	} else if (kind == XG_TCPOPT_WINDOW && olen == XG_TCPOLEN_WINDOW && w->syn) {
		__u32 ws = xg_opt_byte(w, off + 2);

		w->o.wscale = ws > XG_SYN_WSCALE_MAX ? XG_SYN_WSCALE_MAX : ws;
	} else if (kind == XG_TCPOPT_SACK_PERM && olen == XG_TCPOLEN_SACK_PERM && w->syn) {
		w->o.sack = 1;
	} else if (kind == XG_TCPOPT_TIMESTAMP && olen == XG_TCPOLEN_TIMESTAMP) {
		w->o.ts = 1;
		w->o.tsval = xg_opt_be32(w, off + 2);
		w->o.tsecr = xg_opt_be32(w, off + 6);
	}
	w->off = off + olen;
	return 0;
}

/* The layouts Linux sends, at fixed offsets: a SYN's MSS, SACK-permitted,
 * timestamps, NOP, window scale (20 bytes), and an ACK's NOP, NOP,
 * timestamps (12 bytes).  Most clients are Linux (or send the same); the
 * walk, about 100 ns more, is for the others.  1 when it matched. */
static __always_inline int xg_syn_fast_opts(struct xg_opt_walk *w, int syn)
{
	const __u8 *b = w->buf;

	if (syn && w->len == 20 && b[0] == XG_TCPOPT_MSS && b[1] == XG_TCPOLEN_MSS && b[4] == XG_TCPOPT_SACK_PERM &&
	    b[5] == XG_TCPOLEN_SACK_PERM && b[6] == XG_TCPOPT_TIMESTAMP && b[7] == XG_TCPOLEN_TIMESTAMP &&
	    b[16] == XG_TCPOPT_NOP && b[17] == XG_TCPOPT_WINDOW && b[18] == XG_TCPOLEN_WINDOW) {
		w->o.mss = ((__u16)b[2] << 8) | b[3];
		w->o.sack = 1;
		w->o.ts = 1;
		w->o.tsval = xg_opt_be32(w, 8);
		w->o.tsecr = xg_opt_be32(w, 12);
		w->o.wscale = b[19] > XG_SYN_WSCALE_MAX ? XG_SYN_WSCALE_MAX : b[19];
		return 1;
	}
	if (!syn && w->len == 12 && b[0] == XG_TCPOPT_NOP && b[1] == XG_TCPOPT_NOP && b[2] == XG_TCPOPT_TIMESTAMP &&
	    b[3] == XG_TCPOLEN_TIMESTAMP) {
		w->o.ts = 1;
		w->o.tsval = xg_opt_be32(w, 4);
		w->o.tsecr = xg_opt_be32(w, 8);
		return 1;
	}
	return 0;
}

/* The walk over w->buf[0, w->len), which the caller filled. */
static __always_inline void xg_syn_parse_opts(struct xg_opt_walk *w, int syn)
{
	w->off = 0;
	w->syn = !!syn;
	w->o.mss = 0;
	w->o.wscale = XG_SYN_WSCALE_NONE;
	w->o.sack = 0;
	w->o.ts = 0;
	w->o.tsval = 0;
	w->o.tsecr = 0;
	if (w->len && !xg_syn_fast_opts(w, syn))
		bpf_loop(XG_SYN_OPT_STEPS, xg_opt_step, w, 0);
}

static __always_inline __u32 xg_syn_optlen(__u32 doff)
{
	__u32 optlen = doff * 4;

	optlen = optlen > sizeof(struct tcphdr) ? optlen - sizeof(struct tcphdr) : 0;
	return optlen > XG_SYN_OPT_BYTES ? XG_SYN_OPT_BYTES : optlen;
}

/* Copy the TCP options out of the packet and parse them (XDP, then tc). */
static __always_inline int xg_syn_read_opts_xdp(struct xdp_md *ctx, __u32 l4, __u32 doff, int syn,
						struct xg_syn_opts *o)
{
	struct xg_opt_walk w = {};

	w.len = xg_syn_optlen(doff);
	if (w.len && bpf_xdp_load_bytes(ctx, l4 + sizeof(struct tcphdr), w.buf, w.len))
		return -1;
	xg_syn_parse_opts(&w, syn);
	*o = w.o;
	return 0;
}

static __always_inline int xg_syn_read_opts(struct __sk_buff *skb, __u32 l4, __u32 doff, int syn,
					    struct xg_syn_opts *o)
{
	struct xg_opt_walk w = {};

	w.len = xg_syn_optlen(doff);
	if (w.len && bpf_skb_load_bytes(skb, l4 + sizeof(struct tcphdr), w.buf, w.len))
		return -1;
	xg_syn_parse_opts(&w, syn);
	*o = w.o;
	return 0;
}

static __always_inline __u16 xg_csum_fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~(__u16)s;
}

/* Our SYN-ACK's TCP header and options, in network order. */
struct xg_synack {
	struct tcphdr th;
	__be32 opt[XG_SYNACK_OPT_WORDS];
};

struct xg_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

struct xg_pseudo6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__u8 zero[3];
	__u8 nexthdr;
};

/* MSS, then SACK-permitted and timestamps, then window scale, each only
 * where the client offered it; returns the number of 4-byte option words.
 * Every option we send is one the client sent (MSS aside), in no more
 * room than it took, so the SYN-ACK is never longer than a SYN with an
 * MSS option: the frame only shrinks, which every driver can do. */
static __always_inline __u32 xg_synack_options(struct xg_synack *h, __u16 mss, const struct xg_syn_opts *o,
					       __u32 tsval)
{
	__be32 ws = bpf_htonl((XG_TCPOPT_NOP << 24) | (XG_TCPOPT_WINDOW << 16) | (XG_TCPOLEN_WINDOW << 8) |
			      XG_SYN_RCV_WSCALE);
	int has_ws = o->wscale != XG_SYN_WSCALE_NONE;

	h->opt[0] = bpf_htonl((XG_TCPOPT_MSS << 24) | (XG_TCPOLEN_MSS << 16) | mss);
	if (o->ts) {
		__u32 lead = o->sack ? (XG_TCPOPT_SACK_PERM << 8) | XG_TCPOLEN_SACK_PERM
				     : (XG_TCPOPT_NOP << 8) | XG_TCPOPT_NOP;

		h->opt[1] = bpf_htonl((lead << 16) | (XG_TCPOPT_TIMESTAMP << 8) | XG_TCPOLEN_TIMESTAMP);
		h->opt[2] = bpf_htonl(tsval);
		h->opt[3] = bpf_htonl(o->tsval);
		if (has_ws) {
			h->opt[4] = ws;
			return 5;
		}
		return 4;
	}
	if (o->sack) {
		h->opt[1] = bpf_htonl((XG_TCPOPT_NOP << 24) | (XG_TCPOPT_NOP << 16) | (XG_TCPOPT_SACK_PERM << 8) |
				      XG_TCPOLEN_SACK_PERM);
		if (has_ws) {
			h->opt[2] = ws;
			return 3;
		}
		return 2;
	}
	if (has_ws) {
		h->opt[1] = ws;
		return 2;
	}
	return 1;
}

/* Our TCP header and its nw option words, into the packet. */
static __always_inline int xg_synack_write(struct tcphdr *tp, void *data_end, const struct xg_synack *h, __u32 nw)
{
	__be32 *w = (void *)(tp + 1);

	__builtin_memcpy(tp, &h->th, sizeof(*tp));
	for (__u32 i = 0; i < XG_SYNACK_OPT_WORDS; i++) {
		if (i >= nw)
			break;
		if ((void *)(w + i + 1) > data_end)
			return -1;
		w[i] = h->opt[i];
	}
	return 0;
}

/* Turn the SYN into our SYN-ACK in place: same frame, addresses and ports
 * swapped, the cookie as our ISN. */
static __noinline int xg_syn_answer(struct xdp_md *ctx, const struct xg_pkt *p,
					 const struct xg_syn_secret *key)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int off = xg_syn_l3_offset(data, data_end, p->family);
	int listener;

	if (off < 0 || off > XG_SYN_MAX_L3)
		return XG_SYN_PASS;
	__u32 l3 = off;
	__u32 l4 = l3 + xg_syn_iplen(p->family);
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > data_end)
		return XG_SYN_PASS;
	__u32 isn = bpf_ntohl(th->seq);
	struct xg_syn_opts o;
	if (xg_syn_read_opts_xdp(ctx, l4, th->doff, 1, &o) < 0)
		return XG_SYN_PASS;
	/* No listener: the stack answers with a reset; a port must not look
	 * open because we answered for it. */
	if (!xg_syn_no_connection(ctx, p, &listener) || !listener)
		return XG_SYN_PASS;

	struct xg_syn_tuple t = {};
	__u32 tsval;
	xg_syn_tuple_of(p, &t);
	__u32 cookie = xg_syn_cookie_make(key, &t, isn, &o, bpf_ktime_get_ns(), &tsval);

	/* The MSS we announce: what our interface's MTU allows. */
	__u32 mtu = 0;
	__u32 hdrs = p->family == 4 ? sizeof(struct iphdr) + sizeof(struct tcphdr)
				    : sizeof(struct ipv6hdr) + sizeof(struct tcphdr);
	if (bpf_check_mtu(ctx, 0, &mtu, 0, 0) < 0 || mtu <= hdrs + XG_SYN_DEFAULT_MSS)
		mtu = hdrs + XG_SYN_DEFAULT_MSS;
	__u16 mss = mtu - hdrs > 0xffff ? 0xffff : mtu - hdrs;

	struct xg_synack h = {};
	h.th.source = bpf_htons(p->dport);
	h.th.dest = bpf_htons(p->sport);
	h.th.seq = bpf_htonl(cookie);
	h.th.ack_seq = bpf_htonl(isn + 1);

	h.th.syn = 1;
	h.th.ack = 1;
	/* Linux's initial window: 64 KiB less, rounded to whole segments. */
	h.th.window = bpf_htons(XG_SYN_WINDOW - XG_SYN_WINDOW % mss);
	__u32 nw = xg_synack_options(&h, mss, &o, tsval);
	__u32 tlen = sizeof(struct tcphdr) + 4 * nw;
	h.th.doff = tlen / 4;

	__s64 sum;
	if (p->family == 4) {
		struct xg_pseudo4 ph = { .proto = IPPROTO_TCP, .len = bpf_htons(tlen) };
		__builtin_memcpy(&ph.saddr, p->dst, 4);
		__builtin_memcpy(&ph.daddr, p->src, 4);
		sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	} else {
		struct xg_pseudo6 ph = { .len = bpf_htonl(tlen), .nexthdr = IPPROTO_TCP };
		__builtin_memcpy(ph.saddr, p->dst, 16);
		__builtin_memcpy(ph.daddr, p->src, 16);
		sum = bpf_csum_diff(0, 0, (void *)&ph, sizeof(ph), 0);
	}
	if (sum < 0)
		return XG_SYN_PASS;
	sum = bpf_csum_diff(0, 0, (void *)&h, tlen, (__u32)sum);
	if (sum < 0)
		return XG_SYN_PASS;
	h.th.check = xg_csum_fold((__u32)sum);

	/* The frame ends right after our header (a SYN's payload, if any, goes). */
	int delta = (int)(l4 + tlen) - (int)(data_end - data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return XG_SYN_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XG_SYN_PASS;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	if (p->family == 4) {
		struct iphdr *ipp = data + l3;
		struct tcphdr *tp = (void *)(ipp + 1);
		if ((void *)(tp + 1) > data_end)
			return XG_SYN_PASS;
		struct iphdr ip = {
			.version = 4,
			.ihl = 5,
			.tot_len = bpf_htons(sizeof(struct iphdr) + tlen),
			.frag_off = bpf_htons(XG_IPV4_DF),
			.ttl = XG_SYNACK_TTL,
			.protocol = IPPROTO_TCP,
		};
		__builtin_memcpy(&ip.saddr, p->dst, 4);
		__builtin_memcpy(&ip.daddr, p->src, 4);
		sum = bpf_csum_diff(0, 0, (void *)&ip, sizeof(ip), 0);
		ip.check = xg_csum_fold((__u32)sum);
		__builtin_memcpy(ipp, &ip, sizeof(ip));
		if (xg_synack_write(tp, data_end, &h, nw) < 0)
			return XG_SYN_PASS;
	} else {
		struct ipv6hdr *ipp = data + l3;
		struct tcphdr *tp = (void *)(ipp + 1);
		if ((void *)(tp + 1) > data_end)
			return XG_SYN_PASS;
		struct ipv6hdr ip6 = {
			.version = 6,
			.payload_len = bpf_htons(tlen),
			.nexthdr = IPPROTO_TCP,
			.hop_limit = XG_SYNACK_TTL,
		};
		__builtin_memcpy(&ip6.saddr, p->dst, 16);
		__builtin_memcpy(&ip6.daddr, p->src, 16);
		__builtin_memcpy(ipp, &ip6, sizeof(ip6));
		if (xg_synack_write(tp, data_end, &h, nw) < 0)
			return XG_SYN_PASS;
	}
	return XG_SYN_SENT;
}

/* An ACK for no existing connection: does it carry one of our cookies? */
static __noinline int xg_syn_judge_ack(struct xdp_md *ctx, const struct xg_pkt *p,
					    const struct xg_syn_secret *key, __u32 slot)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int off = xg_syn_l3_offset(data, data_end, p->family);
	int listener;

	if (off < 0 || off > XG_SYN_MAX_L3)
		return XG_SYN_PASS;
	__u32 l3 = off;
	__u32 l4 = l3 + xg_syn_iplen(p->family);
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > data_end)
		return XG_SYN_PASS;
	if (!xg_syn_no_connection(ctx, p, &listener))
		return XG_SYN_PASS; /* an existing connection: never disturbed */
	__u32 seq = bpf_ntohl(th->seq);
	__u32 ack_seq = bpf_ntohl(th->ack_seq);
	struct xg_syn_opts o;
	if (xg_syn_read_opts_xdp(ctx, l4, th->doff, 0, &o) < 0)
		return XG_SYN_PASS;

	struct xg_syn_tuple t = {};
	struct xg_syn_attrs a;
	xg_syn_tuple_of(p, &t);
	if (xg_syn_cookie_check(key, &t, seq, ack_seq, &o, bpf_ktime_get_ns(), &a) == 0) {
		/* Note it for the tc program, which hands it to the listener,
		 * and keep that program looking for a second. */
		struct xg_syn_pending v = {.slot = slot};
		__u32 zero = 0;

		bpf_map_update_elem(&syn_pending, &t, &v, BPF_ANY);
		__u64 *gate = bpf_map_lookup_elem(&syn_gate, &zero);
		if (gate) {
			__u64 until = bpf_ktime_get_coarse_ns() + XG_SYN_GATE_NS;

			if (*gate < until - XG_SYN_GATE_NS / 2) /* a write per half second at most */
				*gate = until;
		}
		return XG_SYN_VALID;
	}
	/* A cookie of the stack's own (sent before syn_cookies was enabled,
	 * or for a SYN this file let through) is the stack's business. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (p->family == 4) {
		struct iphdr *ip = data + l3;
		struct tcphdr *tcp = (void *)(ip + 1);
		if ((void *)(tcp + 1) > data_end)
			return XG_SYN_PASS;
		if (bpf_tcp_raw_check_syncookie_ipv4(ip, tcp) == 0)
			return XG_SYN_PASS;
	} else {
		struct ipv6hdr *ip6 = data + l3;
		struct tcphdr *tcp = (void *)(ip6 + 1);
		if ((void *)(tcp + 1) > data_end)
			return XG_SYN_PASS;
		if (bpf_tcp_raw_check_syncookie_ipv6(ip6, tcp) == 0)
			return XG_SYN_PASS;
	}
	return XG_SYN_INVALID;
}

/* An event for an ACK dropped for its bad cookie, sampled like every drop
 * (a function of its own: its 72-byte event must not share a stack frame
 * with the SYN-ACK path). */
static __noinline void xg_syn_event(struct xdp_md *ctx, const struct xg_pkt *p, __u64 rule_id, __u32 len)
{
	__u32 zero = 0;
	struct xg_event_cfg *cfg = bpf_map_lookup_elem(&event_cfg, &zero);
	__u32 sample = xg_event_sample(cfg);

	if (!sample || (sample > 1 && bpf_get_prandom_u32() % sample))
		return;
	if (!xg_event_rate_ok(cfg, bpf_map_lookup_elem(&event_rate, &zero)))
		return;
	__u64 now = bpf_ktime_get_ns();
	struct xg_event ev = {
		.ts_ns = now,
		.rule_id = rule_id,
		.ifindex = ctx->ingress_ifindex,
		.len = len,
		.dir = XG_DIR_INGRESS,
		.reason = XG_EV_SYNCOOKIE,
		.family = p->family,
		.proto = p->proto,
		.sport = p->sport,
		.dport = p->dport,
	};
	__builtin_memcpy(ev.src, p->src, 16);
	__builtin_memcpy(ev.dst, p->dst, 16);
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
}

SEC("xdp")
int xg_syn_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 len = data_end - data;
	__u32 zero = 0;
	struct xg_syn_scratch *sc = bpf_map_lookup_elem(&syn_scratch, &zero);
	struct xg_syn_secret *key = bpf_map_lookup_elem(&syn_secret, &zero);
	struct xg_pkt p = {};

	if (!sc || !key || xg_parse(data, data_end, len, &p) != XG_KIND_IP || p.proto != IPPROTO_TCP ||
	    !p.has_ports)
		return XDP_PASS;
	__u32 slot = sc->slot;
	__u64 rule_id = sc->rule_id;
	__u8 f = p.tflags & (XG_TCP_FLAG_SYN | XG_TCP_FLAG_RST | XG_TCP_FLAG_ACK);
	int res;

	if (f == XG_TCP_FLAG_SYN)
		res = xg_syn_answer(ctx, &p, key);
	else if (f == XG_TCP_FLAG_ACK)
		res = xg_syn_judge_ack(ctx, &p, key, slot);
	else
		return XDP_PASS;
	if (res == XG_SYN_PASS)
		return XDP_PASS;
	struct xg_syn_counter *c = bpf_map_lookup_elem(&syn_counters, &slot);
	if (res == XG_SYN_SENT) {
		if (c)
			c->sent++;
		return XDP_TX;
	}
	if (res == XG_SYN_VALID) {
		if (c)
			c->valid++;
		return XDP_PASS;
	}
	if (c)
		c->invalid++;
	xg_syn_event(ctx, &p, rule_id, len);
	return XDP_DROP;
}

static __always_inline void xg_handoff_failed(__u32 slot)
{
	__u32 k = slot;
	struct xg_syn_counter *c = bpf_map_lookup_elem(&syn_counters, &k);

	if (c)
		c->handoff_err++;
}

SEC("tc")
int xg_syn_handoff(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 zero = 0;
	__u64 *gate = bpf_map_lookup_elem(&syn_gate, &zero);

	if (!gate || !*gate || *gate < bpf_ktime_get_coarse_ns())
		return XG_TCX_NEXT; /* no cookie ACK for a second: none is on its way */

	struct xg_pkt p = {};
	if (xg_parse(data, data_end, skb->len, &p) != XG_KIND_IP || p.proto != IPPROTO_TCP || !p.has_ports ||
	    (p.tflags & (XG_TCP_FLAG_SYN | XG_TCP_FLAG_RST | XG_TCP_FLAG_ACK)) != XG_TCP_FLAG_ACK)
		return XG_TCX_NEXT;
	int off = xg_syn_l3_offset(data, data_end, p.family);
	if (off < 0 || off > XG_SYN_MAX_L3)
		return XG_TCX_NEXT;
	__u32 l4 = off + xg_syn_iplen(p.family);
	struct tcphdr *th = data + l4;
	if ((void *)(th + 1) > data_end)
		return XG_TCX_NEXT;
	__u32 seq = bpf_ntohl(th->seq);
	__u32 ack_seq = bpf_ntohl(th->ack_seq);

	struct xg_syn_opts o;
	if (xg_syn_read_opts(skb, l4, th->doff, 0, &o) < 0)
		return XG_TCX_NEXT;
	struct xg_syn_secret *key = bpf_map_lookup_elem(&syn_secret, &zero);
	if (!key)
		return XG_TCX_NEXT;
	struct xg_syn_tuple t = {};
	struct xg_syn_attrs attrs;
	xg_syn_tuple_of(&p, &t);
	/* Only the ACKs the XDP program noted (their headers are simple and
	 * linear: the checks above are for the others, and cost as much). */
	struct xg_syn_pending *pv = bpf_map_lookup_elem(&syn_pending, &t);
	if (!pv)
		return XG_TCX_NEXT;
	__u32 slot = pv->slot;

	bpf_map_delete_elem(&syn_pending, &t);
	if (xg_syn_cookie_check(key, &t, seq, ack_seq, &o, bpf_ktime_get_ns(), &attrs) < 0) {
		xg_handoff_failed(slot);
		return XG_TCX_NEXT;
	}

	struct bpf_sock_tuple st = {};
	__u32 size = xg_syn_sock_tuple(&p, &st);
	struct bpf_sock *skc = bpf_skc_lookup_tcp(skb, &st, size, BPF_F_CURRENT_NETNS, 0);
	if (!skc)
		return XG_TCX_NEXT; /* no listener any more: the stack answers with a reset */
	if (skc->state != BPF_TCP_LISTEN) {
		/* A connection for this tuple exists after all: leave it alone. */
		bpf_sk_release(skc);
		return XG_TCX_NEXT;
	}
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	int err = tp ? bpf_sk_assign_tcp_reqsk(skb, (struct sock *)tp, (struct bpf_tcp_req_attrs *)&attrs,
					       sizeof(attrs))
		     : -1;
	bpf_sk_release(skc);
	if (err) {
		xg_handoff_failed(slot);
		return XG_TCX_NEXT;
	}
	return XG_TCX_PASS;
}

char _license[] SEC("license") = "GPL";
