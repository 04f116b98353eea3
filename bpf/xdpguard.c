// SPDX-License-Identifier: GPL-2.0
/*
 * xdpguard data plane: the fixed ingress (XDP) and egress (tcx) programs.
 *
 * Parse, classify with the bit-vector plan in the maps, count, decide.
 * Nothing here depends on a rule set: `xdpguard apply` only writes maps.
 * The version flag is read once per packet, so every map access of one
 * packet goes to the same half of the double-buffered rule set.
 *
 * One translation unit holds both programs because bcc rewrites map
 * accesses only in the main file; what is specific to each hook lives in
 * xdp/ingress.h and tc/egress.h, the shared pure code in lib/.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "include/xdpguard.h"
#include "lib/bitvec.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "tc/egress.h"
#include "xdp/ingress.h"

/* What a packet gets, independent of the hook's return codes. */
enum xg_verdict {
	XG_PASS = 0,
	XG_DROP = 1,
};

static __always_inline void xg_count2(__u32 dir, __u32 slot, __u64 bytes, int over)
{
	__u32 k = dir * XG_MAX_SLOTS + slot;
	struct xg_counter *c = xg_counters.lookup(&k);

	if (c) {
		c->packets++;
		c->bytes += bytes;
		if (over) {
			c->over++;
			c->over_bytes += bytes;
		}
	}
}

static __always_inline void xg_count(__u32 dir, __u32 slot, __u64 bytes)
{
	xg_count2(dir, slot, bytes, 0);
}

/* CLOCK_MONOTONIC ns; test builds can set it through a map. */
static __always_inline __u64 xg_now(void)
{
#ifdef XG_TEST_CLOCK
	__u32 zero = 0;
	__u64 *c = xg_clock.lookup(&zero);

	if (c && *c)
		return *c;
#endif
	return bpf_ktime_get_ns();
}

/* The packet's source masked to `plen` bits, for per-prefix buckets. */
static __always_inline void xg_mask_addr(__u8 *out, const __u8 *addr, __u32 plen)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		int bits = (int)plen - 8 * i;

		if (bits >= 8)
			out[i] = addr[i];
		else if (bits > 0)
			out[i] = addr[i] & (__u8)(0xff << (8 - bits));
		else
			out[i] = 0;
	}
}

static __always_inline struct xg_bucket *xg_bucket_for(const struct xg_rule *r, const struct xg_pkt *p)
{
	struct xg_bucket fresh = {};

	if (!r->per_source) {
		__u64 id = r->rule_id;
		struct xg_bucket *b = xg_rule_buckets.lookup(&id);

		if (b)
			return b;
		xg_rule_buckets.insert(&id, &fresh);
		return xg_rule_buckets.lookup(&id);
	}
	struct xg_src_bucket_key k = { .rule_id = r->rule_id, .family = p->family };

	k.plen = p->family == 4 ? r->plen4 : r->plen6;
	xg_mask_addr(k.addr, p->src, p->family == 4 ? (__u32)(k.plen < 32 ? k.plen : 32) : k.plen);
	struct xg_bucket *b = xg_src_buckets.lookup(&k);
	if (b)
		return b;
	xg_src_buckets.insert(&k, &fresh);
	return xg_src_buckets.lookup(&k);
}

/* GCRA, lock-free: the bucket is one u64 updated by compare-and-swap, so
 * every CPU draws from the same allowance and none waits for another. */
static __always_inline int xg_within_limit(const struct xg_rule *r, const struct xg_pkt *p, __u64 len, __u64 now)
{
	struct xg_bucket *b = xg_bucket_for(r, p);

	if (!b)
		return 0;
	__u64 cost = r->cost_ns;
	if (r->limit == XG_LIMIT_BPS)
		cost = r->rate ? len * 8 * XG_NSEC_PER_SEC / r->rate : 0;
#pragma unroll
	for (int i = 0; i < XG_LIMIT_TRIES; i++) {
		__u64 old = *(volatile __u64 *)&b->tat;
		__u64 next = (old > now ? old : now) + cost;

		if (next - now > r->burst_ns)
			return 0;
		if (__sync_val_compare_and_swap(&b->tat, old, next) == old)
			return 1;
	}
	return 0;
}

static __always_inline int xg_blocked_now(const struct xg_pkt *p, __u64 now)
{
	struct xg_block_key k = { .family = p->family };

	__builtin_memcpy(k.addr, p->src, 16);
	struct xg_block *b = xg_blocked.lookup(&k);
	if (!b)
		return 0;
	if (now < b->until_ns)
		return 1;
	xg_blocked.delete(&k);
	return 0;
}

static __always_inline void xg_block_source(const struct xg_pkt *p, const struct xg_rule *r, __u64 now)
{
	struct xg_block_key k = { .family = p->family };
	struct xg_block v = { .until_ns = now + (__u64)r->block_s * XG_NSEC_PER_SEC, .rule_id = r->rule_id };

	__builtin_memcpy(k.addr, p->src, 16);
	xg_blocked.update(&k, &v);
}

/* A field's bitmap, as its global index in the half's table of top entries. */
static __always_inline __u32 xg_bm(const struct xg_config *cfg, __u32 fld, __u32 local)
{
	return cfg->base[fld & (XG_NFIELDS - 1)] + local;
}

/* The scan as a function of its own, outside the programs: bcc compiles
 * it into a section of its own (it is not static), and the loader appends
 * it to each program, declared global in the program's BTF, so that the
 * verifier checks the scan once, with its argument unknown, instead of
 * once for every path of the program that reaches it (see
 * xdpguard/datapath/loader.py).  bcc refuses a call to a function that is
 * not static, hence the static alias the programs call. */
__attribute__((__noinline__)) int xg_scan_fn(struct xg_scan_args *a);
static int xg_scan_call(struct xg_scan_args *a) __attribute__((alias("xg_scan_fn")));
__attribute__((__noinline__)) int xg_group_fn(struct xg_group_args *a);
static int xg_group_call(struct xg_group_args *a) __attribute__((alias("xg_group_fn")));

/* The scan: the first rule at or after a->from that every selected bitmap
 * holds, XG_RULE_NONE, or XG_RULE_ERROR (a table entry missing).  Groups
 * are visited lowest first; in each, only the words the blocks' summaries
 * allow.  See xg_scan_ingress for how it is called. */
static __always_inline int xg_scan(struct xg_scan_args *a)
{
	if (!a)
		return XG_RULE_ERROR;
	__u32 half = a->half;
	__u32 from = a->from;
	__u32 kones = a->ones;
	__u32 ngroups = (a->nwords + XG_GROUP_WORDS - 1) / XG_GROUP_WORDS;

	if (from >= XG_MAX_RULES || ngroups > XG_MAX_GROUPS)
		return XG_RULE_NONE;
	/* The fields a packet does not test select the all-ones bitmap: it is
	 * looked up once.  (These branches come before any loop, where they
	 * cost the verifier nothing: inside the group loop they would.) */
	if (ngroups <= 1) {
		/* At most 4,096 rules: each bitmap is one block of the flat table. */
		void *flat = xg_flat.lookup(&half);
		const struct xg_bitmap *b[XG_NSEL];

		if (!flat)
			return XG_RULE_ERROR;
		const struct xg_bitmap *bones = bpf_map_lookup_elem(flat, &kones);
		if (!bones)
			return XG_RULE_ERROR;
#pragma unroll
		for (int f = 0; f < XG_NSEL; f++) {
			__u32 k = a->sel.idx[f];

			b[f] = bones;
			if (k == kones)
				continue;
			b[f] = bpf_map_lookup_elem(flat, &k);
			if (!b[f])
				return XG_RULE_ERROR;
		}
		if (from >= XG_GROUP_RULES)
			return XG_RULE_NONE;
		return xg_block_first(b, from);
	}
	void *tops = xg_tops.lookup(&half);
	void *blocks = xg_bitmaps.lookup(&half);
	const struct xg_top *t[XG_NSEL];

	if (!tops || !blocks)
		return XG_RULE_ERROR;
	const struct xg_top *tones = bpf_map_lookup_elem(tops, &kones);
	if (!tones)
		return XG_RULE_ERROR;
	__u64 groups = ((1ULL << ngroups) - 1) & (~0ULL << (from / XG_GROUP_RULES)) & tones->groups;
	struct xg_group_args ga = { .half = half };

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		__u32 k = a->sel.idx[f];

		t[f] = tones;
		if (k == kones)
			continue;
		ga.own |= 1U << f;
		t[f] = bpf_map_lookup_elem(tops, &k);
		if (!t[f])
			return XG_RULE_ERROR;
		groups &= t[f]->groups;
	}
	/* Each group is a call: the block lookups skip the all-ones stand-ins
	 * with a branch per field, which inside this loop would multiply the
	 * verifier's work, and in a function of their own cost it nothing. */
	for (int i = 0; i < XG_MAX_GROUPS; i++) {
		if (!groups)
			return XG_RULE_NONE;
		__u32 g = xg_ctz64(groups) & (XG_MAX_GROUPS - 1);
		__u32 base = g * XG_GROUP_RULES;

#pragma unroll
		for (int f = 0; f < XG_NSEL; f++)
			ga.block[f] = t[f]->block[g];
		ga.ones = tones->block[g];
		ga.lo = from > base ? from - base : 0;
		int r = xg_group_call(&ga);

		if (r >= 0)
			return (int)base + r;
		if (r == XG_RULE_ERROR)
			return r;
		groups &= groups - 1;
	}
	return XG_RULE_NONE;
}

/* One group of a two-level scan: the first rule at or after a->lo in all
 * eight blocks (a->own says which fields have blocks of their own; the
 * others take the all-ones block), -1, or XG_RULE_ERROR.  Global, like
 * xg_scan_fn, and called by it (see the loader). */
static __always_inline int xg_group(struct xg_group_args *a)
{
	if (!a)
		return XG_RULE_ERROR;
	__u32 half = a->half;
	__u32 kones = a->ones;
	__u32 own = a->own;
	void *blocks = xg_bitmaps.lookup(&half);
	const struct xg_bitmap *b[XG_NSEL];

	if (!blocks)
		return XG_RULE_ERROR;
	const struct xg_bitmap *bones = bpf_map_lookup_elem(blocks, &kones);
	if (!bones)
		return XG_RULE_ERROR;
#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		__u32 k = a->block[f];

		b[f] = bones;
		if (!(own & (1U << f)))
			continue;
		b[f] = bpf_map_lookup_elem(blocks, &k);
		if (!b[f])
			return XG_RULE_ERROR;
	}
	return xg_block_first(b, a->lo & (XG_GROUP_RULES - 1));
}


/* The first rule at or after `from` that every bitmap in `s` holds (see
 * xg_scan), in the rule set of `half`; `continue` rules scan again from the
 * rule after themselves, with the same selection. */
static __always_inline int xg_first_rule(const struct xg_sel *s, __u32 half, const struct xg_config *cfg,
					 __u32 from)
{
	struct xg_scan_args a = {
		.sel = *s,
		.half = half,
		.nwords = cfg->nwords,
		.from = from,
		.ones = xg_bm(cfg, XG_F_EXTRA, cfg->ones_idx),
	};

	return xg_scan_call(&a);
}

/* The leaf (field-local bitmap index) of an address in one address table:
 * one node read for the first two address bytes (the root is elements
 * 0-255, indexed by the first byte, its slots by the second), then at most
 * one per byte, however many prefixes the table holds.  A dense node is
 * indexed by the byte, a sparse one by counting its run bounds (no branch
 * on the data).  One loop with one exit keeps the verifier's work linear
 * in the address length. */
static __always_inline int xg_addr_lookup(__u32 tbl, const __u8 *addr, __u32 nbytes, __u32 *out)
{
	void *nodes = xg_addrs.lookup(&tbl);
	__u32 key = addr[0];
	__u32 ref;
	int i;

	if (!nodes)
		return -1;
	struct xg_node *root = bpf_map_lookup_elem(nodes, &key);
	if (!root)
		return -1;
	ref = root->slot[addr[1]];
#pragma clang loop unroll(disable)
	for (i = 2; i < 16; i++) {
		if (i >= nbytes || !(ref & XG_REF_CHILD))
			break;
		__u32 b = addr[i & 15];
		__u32 id = ref & XG_REF_INDEX;

		key = (ref & XG_REF_SPARSE) ? id >> 4 : id;
		struct xg_node *n = bpf_map_lookup_elem(nodes, &key);
		if (!n) {
			ref = XG_REF_CHILD;
			break;
		}
		if (ref & XG_REF_SPARSE) {
			const struct xg_snode *sn = (const void *)n + ((id & 15) * sizeof(struct xg_snode));
			__u64 j = 0;
			/* j = how many of bound[1..11] are <= b, without branches:
			 * (b - bound) is negative, its bit 63 set, when bound > b.
			 * The empty asm keeps clang from turning that back into
			 * compares, which it lowers to branches, and each branch
			 * doubles the verifier's states. */
#pragma unroll
			for (int k = 1; k < XG_SPARSE_RUNS; k++) {
				__u64 d = (__u64)b - sn->bound[k];

				asm volatile("" : "+r"(d));
				j += d >> 63;
			}
			j = XG_SPARSE_RUNS - 1 - j;
			asm volatile("" : "+r"(j));
			/* j <= 11; the mask is for the verifier, which cannot see it. */
			ref = ((const __u32 *)sn)[j & 15];
		} else {
			ref = n->slot[b & (XG_NODE_SLOTS - 1)];
		}
	}
	if (ref & XG_REF_CHILD)
		return -1; /* ran out of address bytes or nodes: the table is broken */
	*out = ref;
	return 0;
}

/* Address lookups are the most expensive step: only the fields some rule uses. */
static __always_inline int xg_lookup_addrs(const struct xg_pkt *p, __u32 half, __u32 fm, __u32 *src, __u32 *dst)
{
	__u32 v6 = p->family == 6;
	__u32 nbytes = v6 ? 16 : 4;

	if ((fm & (1U << XG_F_SRC)) && xg_addr_lookup(XG_ADDR_TABLE(half, XG_F_SRC, v6), p->src, nbytes, src) < 0)
		return -1;
	if ((fm & (1U << XG_F_DST)) && xg_addr_lookup(XG_ADDR_TABLE(half, XG_F_DST, v6), p->dst, nbytes, dst) < 0)
		return -1;
	return 0;
}

/* Does a packet arriving from outside belong to a flow this host sent on? */
static __always_inline int xg_established(const struct xg_pkt *p, const struct xg_config *cfg)
{
	struct xg_flow_key k = {};
	__u64 tmo;

	if (xg_flow_key(p, XG_DIR_INGRESS, &k) < 0)
		return 0;
	struct xg_flow *f = xg_flows.lookup(&k);
	if (!f)
		return 0;
	if (p->proto == IPPROTO_TCP)
		tmo = cfg->tmo_tcp;
	else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP)
		tmo = cfg->tmo_udp;
	else
		tmo = cfg->tmo_icmp;
	return xg_now() - f->last_seen_ns <= tmo * XG_NSEC_PER_SEC;
}

/* Record an outbound packet's flow (egress only, so only this host creates flows). */
static __always_inline void xg_record_flow(const struct xg_pkt *p, __u64 bytes)
{
	struct xg_flow_key k = {};

	if (xg_flow_key(p, XG_DIR_EGRESS, &k) < 0)
		return;
	/* A RST answers a packet to a closed port: it must not turn the
	 * sender's next packets into an "established" flow. */
	if (p->proto == IPPROTO_TCP && (p->tflags & XG_TCP_RST))
		return;
	__u64 now = xg_now();
	struct xg_flow *f = xg_flows.lookup(&k);
	if (f) {
		/* Refresh rarely: a busy flow would otherwise write a shared
		 * cache line on every packet. */
		if (now - f->last_seen_ns > XG_FLOW_REFRESH_NS)
			f->last_seen_ns = now;
		return;
	}
	struct xg_flow nf = { .last_seen_ns = now };
	xg_flows.update(&k, &nf);
	xg_count(XG_DIR_EGRESS, XG_SLOT_FLOW_NEW, bytes);
}

/* First matching rule's bit position, XG_RULE_NONE, or XG_RULE_ERROR when
 * the maps are inconsistent (never expected; counted).  *sel gets the
 * bitmaps the packet selected: after a match, xg_first_rule(sel, half,
 * cfg, rule + 1) finds the next matching rule with no new field lookup. */
static __always_inline int xg_classify(const struct xg_pkt *p, __u32 half, const struct xg_config *cfg,
				       __u32 dir, struct xg_sel *sel)
{
	struct xg_sel s;

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++)
		s.idx[f] = xg_bm(cfg, XG_F_EXTRA, cfg->ones_idx);
	*sel = s;
	if (cfg->nwords == 0)
		return XG_RULE_NONE;

	__u32 fm = cfg->field_mask;
	__u32 *v;

	if (fm & ((1U << XG_F_SRC) | (1U << XG_F_DST))) {
		__u32 src = 0, dst = 0;

		if (xg_lookup_addrs(p, half, fm, &src, &dst) < 0)
			return XG_RULE_ERROR;
		if (fm & (1U << XG_F_SRC))
			s.idx[0] = xg_bm(cfg, XG_F_SRC, src);
		if (fm & (1U << XG_F_DST))
			s.idx[1] = xg_bm(cfg, XG_F_DST, dst);
	}
	if (fm & (1U << XG_F_PROTO)) {
		__u32 k = half * XG_PROTO_SIZE + p->proto;

		v = xg_proto.lookup(&k);
		if (!v)
			return XG_RULE_ERROR;
		s.idx[2] = xg_bm(cfg, XG_F_PROTO, *v);
	}
	if (p->later_frag) {
		s.idx[7] = xg_bm(cfg, XG_F_EXTRA, cfg->l4free_idx);
		*sel = s;
		return xg_first_rule(&s, half, cfg, 0);
	}
	if (p->has_ports) {
		if (fm & (1U << XG_F_SPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->sport;

			v = xg_sport.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s.idx[3] = xg_bm(cfg, XG_F_SPORT, *v);
		}
		if (fm & (1U << XG_F_DPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->dport;

			v = xg_dport.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s.idx[4] = xg_bm(cfg, XG_F_DPORT, *v);
		}
		if (p->proto == IPPROTO_TCP && (fm & (1U << XG_F_TFLAGS))) {
			__u32 k = half * XG_TFLAGS_SIZE + p->tflags;

			v = xg_tflags.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s.idx[5] = xg_bm(cfg, XG_F_TFLAGS, *v);
		}
	}
	if (p->has_icmp && (fm & (1U << XG_F_ICMP))) {
		__u32 k = half * XG_ICMP_SIZE + (p->proto == IPPROTO_ICMPV6 ? 65536 : 0) +
			  ((__u32)p->icmp_type << 8) + p->icmp_code;

		v = xg_icmp.lookup(&k);
		if (!v)
				return XG_RULE_ERROR;
			s.idx[6] = xg_bm(cfg, XG_F_ICMP, *v);
	}
	if (dir == XG_DIR_INGRESS && (cfg->flags & XG_CFG_HAS_STATE)) {
		int est = xg_established(p, cfg);

		s.idx[7] = xg_bm(cfg, XG_F_EXTRA, est ? cfg->est_idx : cfg->new_idx);
	}
	*sel = s;
	return xg_first_rule(&s, half, cfg, 0);
}

/* A sampled, rate-capped event for a drop decision: a flood must not flood the log. */
static __always_inline void xg_event(__u32 dir, __u32 reason, int audit, const struct xg_pkt *p, __u64 rule_id,
				     __u32 len, __u32 ifindex)
{
	__u32 zero = 0;
	struct xg_event_cfg *cfg = xg_event_cfg.lookup(&zero);
	__u32 sample = cfg ? cfg->sample : XG_EVENTS_DEFAULT_SAMPLE;
	__u32 max_rate = cfg ? cfg->max_rate : XG_EVENTS_DEFAULT_MAX_RATE;

	if (!sample || (sample > 1 && bpf_get_prandom_u32() % sample))
		return;
	struct xg_event_rate *rate = xg_event_rate.lookup(&zero);
	if (!rate)
		return;
	__u64 now = bpf_ktime_get_ns();
	if (now - rate->window_ns >= XG_NSEC_PER_SEC) {
		rate->window_ns = now;
		rate->count = 0;
	}
	if (rate->count >= max_rate)
		return;
	rate->count++;

	struct xg_event ev = {
		.ts_ns = now,
		.rule_id = rule_id,
		.ifindex = ifindex,
		.len = len,
		.dir = dir,
		.reason = reason,
		.audit = audit,
		.family = p->family,
		.proto = p->proto,
		.sport = p->sport,
		.dport = p->dport,
	};
	__builtin_memcpy(ev.src, p->src, 16);
	__builtin_memcpy(ev.dst, p->dst, 16);
	xg_events.ringbuf_output(&ev, sizeof(ev), 0);
}

/* The whole decision for one frame in one direction. */
static __always_inline int xg_process(void *data, void *data_end, __u32 frame_len, __u32 dir, __u32 ifindex)
{
	__u32 zero = 0;
	__u32 *active = xg_active.lookup(&zero);

	if (!active)
		return XG_PASS;
	__u32 half = dir * XG_NVERSIONS + (*active & 1);
	struct xg_config *cfg = xg_config.lookup(&half);
	if (!cfg)
		return XG_PASS;
	int drop_ok = !(cfg->flags & XG_CFG_AUDIT);

	struct xg_pkt p = {};
	int kind = xg_parse(data, data_end, frame_len, &p);

	if (kind == XG_KIND_MALFORMED) {
		xg_count(dir, XG_SLOT_MALFORMED, frame_len);
		xg_event(dir, XG_EV_MALFORMED, !drop_ok, &p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}
	if (kind == XG_KIND_NON_IP) {
		xg_count(dir, XG_SLOT_NON_IP, frame_len);
		if (!(cfg->flags & XG_CFG_NON_IP_DROP))
			return XG_PASS;
		xg_event(dir, XG_EV_NON_IP, !drop_ok, &p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}
	if (!(cfg->flags & XG_CFG_NDP_RULES) && xg_is_ndp(&p)) {
		xg_count(dir, XG_SLOT_NDP, frame_len);
		return XG_PASS;
	}
	if (dir == XG_DIR_INGRESS && (cfg->flags & XG_CFG_HAS_BLOCK) && xg_blocked_now(&p, xg_now())) {
		xg_count(dir, XG_SLOT_BLOCKED, frame_len);
		xg_event(dir, XG_EV_BLOCKED, !drop_ok, &p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}

	int verdict;
	/* What the packet selected, kept for a second scan from a later rule
	 * (xg_first_rule(&sel, half, cfg, from)). */
	struct xg_sel sel;
	int rule = xg_classify(&p, half, cfg, dir, &sel);

	if (rule >= 0) {
		__u32 k = half * XG_MAX_RULES + ((__u32)rule & (XG_MAX_RULES - 1));
		struct xg_rule *r = xg_rules.lookup(&k);

		if (r) {
			if (r->limit != XG_LIMIT_NONE) {
				__u64 now = xg_now();

				if (!xg_within_limit(r, &p, frame_len, now)) {
					xg_count2(dir, r->slot, frame_len, 1);
					if (r->block_s && dir == XG_DIR_INGRESS)
						xg_block_source(&p, r, now);
					xg_event(dir, XG_EV_LIMIT, !drop_ok, &p, r->rule_id, frame_len, ifindex);
					verdict = drop_ok ? XG_DROP : XG_PASS;
					goto out;
				}
			}
			xg_count(dir, r->slot, frame_len);
			if (r->action == XG_ACT_DROP)
				xg_event(dir, XG_EV_RULE, !drop_ok, &p, r->rule_id, frame_len, ifindex);
			verdict = (drop_ok && r->action == XG_ACT_DROP) ? XG_DROP : XG_PASS;
			goto out;
		}
		rule = XG_RULE_ERROR;
	}
	if (rule == XG_RULE_ERROR)
		xg_count(dir, XG_SLOT_ERROR, frame_len);
	xg_count(dir, XG_SLOT_DEFAULT, frame_len);
	if (cfg->flags & XG_CFG_DEFAULT_DROP)
		xg_event(dir, XG_EV_DEFAULT, !drop_ok, &p, 0, frame_len, ifindex);
	verdict = (drop_ok && (cfg->flags & XG_CFG_DEFAULT_DROP)) ? XG_DROP : XG_PASS;
out:
	if (dir == XG_DIR_EGRESS && verdict == XG_PASS)
		xg_record_flow(&p, frame_len);
	return verdict;
}

int xg_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return xg_xdp_action(xg_process(data, data_end, (__u32)(data_end - data), XG_DIR_INGRESS, ctx->ingress_ifindex));
}

int xg_egress(struct __sk_buff *skb)
{
	xg_tc_pull_headers(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	return xg_tc_action(xg_process(data, data_end, skb->len, XG_DIR_EGRESS, skb->ifindex));
}

__attribute__((__noinline__)) int xg_scan_fn(struct xg_scan_args *a)
{
	return xg_scan(a);
}

__attribute__((__noinline__)) int xg_group_fn(struct xg_group_args *a)
{
	return xg_group(a);
}
