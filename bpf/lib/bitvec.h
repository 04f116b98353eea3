/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Bit-vector matching: AND the per-field rule bitmaps, first set bit wins.
 *
 * Pure code over bitmap pointers the caller looked up; the summary word of
 * each bitmap limits the scan to words that can be non-zero, so a packet
 * that matches nothing costs a few summary ANDs, not rules/64 words.
 * xdpguard/rules/classify.py mirrors this.
 */
#ifndef XG_BITVEC_H
#define XG_BITVEC_H

#include "include/xdpguard.h"

/* Bitmaps ANDed per packet: src, dst, proto, sport, dport, tcp flags,
 * icmp, and one "extra" (l4-free rules for later fragments, else the
 * established/new bitmap, else all ones).  The extra bitmap the scan ANDs
 * leaves out `continue` rules, which never decide; `extra` is the same
 * bitmap with them, to test the few continue rules one by one
 * (xg_sel_has). */
#define XG_NSEL 8

struct xg_sel {
	const struct xg_bitmap *bm[XG_NSEL];
	const struct xg_bitmap *extra;
};

/* Count trailing zeros of a non-zero word without branches: BPF has no
 * ctz instruction, and a branchy version multiplies verifier states in
 * the word loop.  Popcount (SWAR) of the bits below the lowest set bit. */
static __always_inline __u32 xg_ctz64(__u64 x)
{
	__u64 v = (x & -x) - 1;

	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (__u32)((v * 0x0101010101010101ULL) >> 56);
}

/* Index of the first rule set in every bitmap, or -1. */
static __always_inline int xg_first_rule(const struct xg_sel *s, __u32 nwords)
{
	__u64 summary = nwords >= XG_MAX_WORDS ? ~0ULL : ((1ULL << nwords) - 1);

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++)
		summary &= s->bm[f]->summary;

	for (int i = 0; i < XG_MAX_WORDS; i++) {
		if (!summary)
			return -1;
		__u32 w = xg_ctz64(summary) & (XG_MAX_WORDS - 1);
		__u64 word = ~0ULL;
#pragma unroll
		for (int f = 0; f < XG_NSEL; f++)
			word &= s->bm[f]->w[w];
		if (word)
			return (int)(w * 64 + xg_ctz64(word));
		summary &= summary - 1;
	}
	return -1;
}

/* Does the packet match rule `bit` on every field?  The AND of the field
 * bitmaps at that one bit, with the extra bitmap that keeps continue rules. */
static __always_inline int xg_sel_has(const struct xg_sel *s, __u32 bit)
{
	__u32 w = (bit / 64) & (XG_MAX_WORDS - 1);
	__u64 word = s->extra->w[w];

#pragma unroll
	for (int f = 0; f < XG_NSEL - 1; f++)
		word &= s->bm[f]->w[w];
	return (word >> (bit & 63)) & 1;
}

#endif /* XG_BITVEC_H */
