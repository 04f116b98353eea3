/* SPDX-License-Identifier: GPL-2.0 */
/*
 * SYN cookies: the arithmetic shared by the XDP program that answers SYNs
 * and checks the client's ACK, and the tc-ingress program that checks the
 * ACK again and gives it to the listener (both in bpf/syncookie.c).
 *
 * Pure functions over values the caller took from the packet: no maps, no
 * packet pointers, no helper calls.  Only bpf/syncookie.c (clang) uses
 * the arithmetic; bpf/xdpguard.c (bcc) includes this file for the meta
 * and flag constants.
 *
 * The cookie is our own keyed MAC, not the kernel's: the kernel's check
 * helper does not give back the options, and the hand-off kfunc needs
 * them.  The 32-bit initial sequence number of our SYN-ACK is
 *
 *   | 31 .. 9           | 8      | 7 6     | 5  | 4    | 3 .. 0         |
 *   | MAC (23 bits)     | parity | MSS idx | TS | SACK | wscale (15: no) |
 *
 * MAC = the top 23 bits of SipHash-2-4(secret; client and server address,
 * ports, client ISN, time counter, the 9 option bits).  The time counter
 * is CLOCK_MONOTONIC >> 36 (about 69 s); its low bit travels in the cookie
 * so the check hashes exactly one counter, this one or the previous:
 * a cookie lives 69 to 137 s.  When the client offered timestamps, the low
 * 32 bits of the same hash are our SYN-ACK's TSval, and the ACK must echo
 * them, so a forged ACK has to guess 23 bits (1 in 8.4 million), or 55
 * with timestamps.
 */
#ifndef XG_SYNCOOKIE_H
#define XG_SYNCOOKIE_H

#include "include/xdpguard.h"


#define XG_TCP_FLAG_SYN 0x02
#define XG_TCP_FLAG_RST 0x04
#define XG_TCP_FLAG_ACK 0x10

#define XG_TCPOPT_EOL 0
#define XG_TCPOPT_NOP 1
#define XG_TCPOPT_MSS 2
#define XG_TCPOPT_WINDOW 3
#define XG_TCPOPT_SACK_PERM 4
#define XG_TCPOPT_TIMESTAMP 8
#define XG_TCPOLEN_MSS 4
#define XG_TCPOLEN_WINDOW 3
#define XG_TCPOLEN_SACK_PERM 2
#define XG_TCPOLEN_TIMESTAMP 10

#define XG_SYN_OPT_BYTES 40 /* TCP options: at most 40 bytes */

#define XG_SYN_WSCALE_NONE 15
#define XG_SYN_WSCALE_MAX 14 /* RFC 7323: larger shifts are treated as 14 */
#define XG_SYN_BIT_SACK (1U << 4)
#define XG_SYN_BIT_TS (1U << 5)
#define XG_SYN_MSS_SHIFT 6
#define XG_SYN_PARITY (1U << 8)
#define XG_SYN_OPT_MASK 0x1ffU
#define XG_SYN_MAC_SHIFT 9
#define XG_SYN_TIME_SHIFT 36    /* ns >> 36: a counter step of about 69 s */
#define XG_SYN_DEFAULT_MSS 536  /* RFC 9293: what a SYN without MSS means */
#define XG_SYN_RCV_WSCALE 7     /* our own window scale, Linux's with default tcp_rmem */

/* The client's MSS, rounded down to one of four values (as the kernel's own
 * cookies do): the index travels in the cookie. */
#define XG_SYN_MSS4_0 536
#define XG_SYN_MSS4_1 1300
#define XG_SYN_MSS4_2 1440
#define XG_SYN_MSS4_3 1460
#define XG_SYN_MSS6_0 1220
#define XG_SYN_MSS6_1 1420
#define XG_SYN_MSS6_2 1440
#define XG_SYN_MSS6_3 8940

/* What the options of a SYN or an ACK say. */
struct xg_syn_opts {
	__u32 tsval;
	__u32 tsecr;
	__u16 mss;
	__u8 wscale; /* XG_SYN_WSCALE_NONE when absent */
	__u8 sack;
	__u8 ts;
	__u8 pad[3];
};

/* The connection a cookie belongs to, seen from the client.  Addresses in
 * network order (IPv4 in the first 4 bytes, the rest zero), ports in host
 * order. */
struct xg_syn_tuple {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 pad[3];
};

/* What a valid cookie says, in the shape of the hand-off kfunc's
 * struct bpf_tcp_req_attrs (same fields, same order). */
struct xg_syn_attrs {
	__u32 rcv_tsval;
	__u32 rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale;
	__u8 snd_wscale;
	__u8 ecn_ok;
	__u8 wscale_ok;
	__u8 sack_ok;
	__u8 tstamp_ok;
	__u8 usec_ts_ok;
	__u8 reserved[3];
};

#define XG_ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define XG_SIPROUND                                                                                          \
	do {                                                                                                 \
		v0 += v1;                                                                                    \
		v1 = XG_ROTL64(v1, 13);                                                                      \
		v1 ^= v0;                                                                                    \
		v0 = XG_ROTL64(v0, 32);                                                                      \
		v2 += v3;                                                                                    \
		v3 = XG_ROTL64(v3, 16);                                                                      \
		v3 ^= v2;                                                                                    \
		v0 += v3;                                                                                    \
		v3 = XG_ROTL64(v3, 21);                                                                      \
		v3 ^= v0;                                                                                    \
		v2 += v1;                                                                                    \
		v1 = XG_ROTL64(v1, 17);                                                                      \
		v1 ^= v2;                                                                                    \
		v2 = XG_ROTL64(v2, 32);                                                                      \
	} while (0)

#define XG_SIP_WORDS 6

/* SipHash-2-4 of six 64-bit words (a 48-byte message), in registers. */
static __always_inline __u64 xg_siphash6(const struct xg_syn_secret *k, __u64 m0, __u64 m1, __u64 m2, __u64 m3,
					 __u64 m4, __u64 m5)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ k->k0;
	__u64 v1 = 0x646f72616e646f6dULL ^ k->k1;
	__u64 v2 = 0x6c7967656e657261ULL ^ k->k0;
	__u64 v3 = 0x7465646279746573ULL ^ k->k1;
	__u64 b = (__u64)(XG_SIP_WORDS * 8) << 56;

#define XG_SIP_WORD(m)                                                                                       \
	do {                                                                                                 \
		v3 ^= (m);                                                                                   \
		XG_SIPROUND;                                                                                 \
		XG_SIPROUND;                                                                                 \
		v0 ^= (m);                                                                                   \
	} while (0)
	XG_SIP_WORD(m0);
	XG_SIP_WORD(m1);
	XG_SIP_WORD(m2);
	XG_SIP_WORD(m3);
	XG_SIP_WORD(m4);
	XG_SIP_WORD(m5);
	XG_SIP_WORD(b);
#undef XG_SIP_WORD
	v2 ^= 0xff;
	XG_SIPROUND;
	XG_SIPROUND;
	XG_SIPROUND;
	XG_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static __always_inline __u64 xg_syn_load64(const __u8 *b)
{
	__u64 v = 0;

#pragma unroll
	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

/* The MAC of addresses, ports, the client's ISN, and `when`: the time
 * counter << 32 | the option bits << 8.  A BPF-to-BPF call rather than
 * inlined code: the hash spills many registers, and a frame of its own
 * keeps the callers under the 512-byte stack limit.  At most five
 * arguments for such a call, and clang may pass the key as its two words. */
static __attribute__((__noinline__)) __u64 xg_syn_hash(const struct xg_syn_secret *k, const struct xg_syn_tuple *t, __u32 isn,
				     __u64 when)
{
	return xg_siphash6(k, xg_syn_load64(t->src), xg_syn_load64(t->src + 8), xg_syn_load64(t->dst),
			   xg_syn_load64(t->dst + 8), ((__u64)isn << 32) | ((__u32)t->sport << 16) | t->dport,
			   when | t->family);
}

static __always_inline __u64 xg_syn_when(__u32 counter, __u32 bits)
{
	return ((__u64)counter << 32) | (bits << 8);
}

static __always_inline __u32 xg_syn_mss_index(__u16 mss, __u8 family)
{
	if (family == 4)
		return mss >= XG_SYN_MSS4_3 ? 3 : mss >= XG_SYN_MSS4_2 ? 2 : mss >= XG_SYN_MSS4_1 ? 1 : 0;
	return mss >= XG_SYN_MSS6_3 ? 3 : mss >= XG_SYN_MSS6_2 ? 2 : mss >= XG_SYN_MSS6_1 ? 1 : 0;
}

static __always_inline __u16 xg_syn_mss_value(__u32 idx, __u8 family)
{
	if (family == 4)
		return idx == 3 ? XG_SYN_MSS4_3 : idx == 2 ? XG_SYN_MSS4_2 : idx == 1 ? XG_SYN_MSS4_1 : XG_SYN_MSS4_0;
	return idx == 3 ? XG_SYN_MSS6_3 : idx == 2 ? XG_SYN_MSS6_2 : idx == 1 ? XG_SYN_MSS6_1 : XG_SYN_MSS6_0;
}

/* The cookie for a SYN; *tsval gets the TSval our SYN-ACK must carry. */
static __always_inline __u32 xg_syn_cookie_make(const struct xg_syn_secret *k, const struct xg_syn_tuple *t,
						__u32 isn, const struct xg_syn_opts *o, __u64 now_ns, __u32 *tsval)
{
	__u32 counter = (__u32)(now_ns >> XG_SYN_TIME_SHIFT);
	__u16 mss = o->mss ? o->mss : XG_SYN_DEFAULT_MSS;
	__u32 bits = o->wscale & 15;

	if (o->sack)
		bits |= XG_SYN_BIT_SACK;
	if (o->ts)
		bits |= XG_SYN_BIT_TS;
	bits |= xg_syn_mss_index(mss, t->family) << XG_SYN_MSS_SHIFT;
	if (counter & 1)
		bits |= XG_SYN_PARITY;
	__u64 h = xg_syn_hash(k, t, isn, xg_syn_when(counter, bits));

	*tsval = (__u32)h;
	return ((__u32)(h >> 41) << XG_SYN_MAC_SHIFT) | bits;
}

/* Check the cookie an ACK returns (ack_seq - 1) against the client's ISN
 * (seq - 1) and the ACK's options; fill the hand-off attributes.  0 when
 * valid. */
static __always_inline int xg_syn_cookie_check(const struct xg_syn_secret *k, const struct xg_syn_tuple *t,
					       __u32 seq, __u32 ack_seq, const struct xg_syn_opts *o, __u64 now_ns,
					       struct xg_syn_attrs *a)
{
	__u32 cookie = ack_seq - 1;
	__u32 bits = cookie & XG_SYN_OPT_MASK;
	__u32 counter = (__u32)(now_ns >> XG_SYN_TIME_SHIFT);

	/* The parity bit says which counter made it: this one or the last. */
	if ((counter & 1) != !!(bits & XG_SYN_PARITY))
		counter--;
	__u64 h = xg_syn_hash(k, t, seq - 1, xg_syn_when(counter, bits));

	if ((__u32)(h >> 41) != cookie >> XG_SYN_MAC_SHIFT)
		return -1;
	if (bits & XG_SYN_BIT_TS) {
		/* Timestamps were agreed: the ACK must echo our TSval. */
		if (!o->ts || o->tsecr != (__u32)h)
			return -1;
	}
	__u32 ws = bits & 15;

	a->mss = xg_syn_mss_value((bits >> XG_SYN_MSS_SHIFT) & 3, t->family);
	a->wscale_ok = ws != XG_SYN_WSCALE_NONE;
	a->snd_wscale = a->wscale_ok ? ws : 0;
	a->rcv_wscale = a->wscale_ok ? XG_SYN_RCV_WSCALE : 0;
	a->sack_ok = !!(bits & XG_SYN_BIT_SACK);
	a->tstamp_ok = !!(bits & XG_SYN_BIT_TS);
	a->rcv_tsval = a->tstamp_ok ? o->tsval : 0;
	a->rcv_tsecr = a->tstamp_ok ? o->tsecr : 0;
	a->ecn_ok = 0;
	a->usec_ts_ok = 0;
	a->reserved[0] = 0;
	a->reserved[1] = 0;
	a->reserved[2] = 0;
	return 0;
}

#endif /* XG_SYNCOOKIE_H */
