/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Bit-vector matching: AND the per-field rule bitmaps, first set bit wins.
 *
 * Pure code over pointers the caller looked up.  A bitmap is two-level
 * (see struct xg_top): the AND of the top entries' group words names the
 * groups of 4,096 rules worth visiting; in each, the AND of the blocks'
 * summary words names the words worth ANDing.  Groups are visited lowest
 * first and the scan stops at the first non-zero word, so a packet that
 * matches early, or matches nothing, costs a few summary ANDs, not
 * rules/64 words.  The scan and each group's part of it are global
 * functions in xdpguard.c (xg_scan_fn, xg_group_fn), so the verifier checks
 * them once, not once per path that reaches them.
 * xdpguard/rules/classify.py mirrors this.
 */
#ifndef XG_BITVEC_H
#define XG_BITVEC_H

#include "include/xdpguard.h"

#define XG_RULE_NONE (-1)
#define XG_RULE_ERROR (-2)

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

/* First rule at or after `lo` (group-local) set in all eight blocks, or -1.
 * o[0] and o[1] are ORed into b[0] (src) and b[1] (dst): the block of the
 * rules a dynamic set adds for this packet's address, or the field's own
 * block again when there is nothing to add (x | x = x). */
static __always_inline int xg_block_first(const struct xg_bitmap *const b[XG_NSEL],
					  const struct xg_bitmap *const o[XG_NOR], __u32 lo)
{
	__u32 lw = (lo / 64) & (XG_GROUP_WORDS - 1);
	__u64 lbits = lo & 63;
	__u64 summary = ~0ULL << lw;

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++)
		summary &= b[f]->summary | (f < XG_NOR ? o[f & 1]->summary : 0);

	for (int i = 0; i < XG_GROUP_WORDS; i++) {
		if (!summary)
			return -1;
		__u32 w = xg_ctz64(summary) & (XG_GROUP_WORDS - 1);
		__u64 word = ~0ULL;
#pragma unroll
		for (int f = 0; f < XG_NSEL; f++)
			word &= b[f]->w[w] | (f < XG_NOR ? o[f & 1]->w[w] : 0);
		/* Only word lw can hold rules below lo: first is 1 there, else 0
		 * (computed, not branched on: a branch doubles verifier states). */
		__u64 first = ((__u64)(w ^ lw) - 1) >> 63;
		asm volatile("" : "+r"(first));
		word &= ~0ULL << (lbits * first);
		if (word)
			return (int)(w * 64 + xg_ctz64(word));
		summary &= summary - 1;
	}
	return -1;
}

#endif /* XG_BITVEC_H */
