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

#define XG_RULE_NONE (-1)
#define XG_RULE_ERROR (-2)
#define XG_RULE_EMPTY (-3) /* the direction has no rules */

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

static __always_inline const struct xg_bitmap *xg_bm(void *bms, const struct xg_config *cfg, __u32 fld,
						       __u32 local)
{
	__u32 idx = cfg->base[fld & (XG_NFIELDS - 1)] + local;

	return bpf_map_lookup_elem(bms, &idx);
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

/* Bit i of the result: the packet matches continue rule cfg->cont[i] on
 * every field.  Continue rules never decide (the scan leaves them out);
 * the few there are get tested one bit each. */
static __always_inline __u64 xg_continue_rules(const struct xg_sel *s, const struct xg_config *cfg)
{
	__u64 cand = 0;
	__u64 n = cfg->ncont;

	/* Without a branch, so that every path out of here is one verifier
	 * state: the empty asm keeps clang from turning the sign test back
	 * into a compare. */
	asm volatile("" : "+r"(n));
#pragma unroll
	for (int i = 0; i < XG_MAX_CONTINUE; i++) {
		__u64 used = ((__u64)i - n) >> 63; /* i < ncont */

		cand |= ((__u64)xg_sel_has(s, cfg->cont[i]) & used) << i;
	}
	return cand;
}

/* First matching rule's bit position (continue rules left out),
 * XG_RULE_NONE, XG_RULE_EMPTY when the direction has no rules, or
 * XG_RULE_ERROR when the maps are inconsistent (never expected; counted).
 * *cand: the continue rules the packet matches (xg_continue_rules). */
static __always_inline int xg_classify(const struct xg_pkt *p, __u32 half, const struct xg_config *cfg,
				       __u32 dir, volatile __u64 *cand)
{
	if (cfg->nwords == 0)
		return XG_RULE_EMPTY;
	void *bms = xg_bitmaps.lookup(&half);
	if (!bms)
		return XG_RULE_ERROR;

	const struct xg_bitmap *ones = xg_bm(bms, cfg, XG_F_EXTRA, cfg->ones_idx);
	if (!ones)
		return XG_RULE_ERROR;
	struct xg_sel s;
#pragma unroll
	for (int f = 0; f < XG_NSEL; f++)
		s.bm[f] = ones;
	s.extra = ones;
	s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, cfg->ones_nc_idx);
	if (!s.bm[7])
		return XG_RULE_ERROR;

	__u32 fm = cfg->field_mask;
	__u32 *v;

	if (fm & ((1U << XG_F_SRC) | (1U << XG_F_DST))) {
		__u32 src = 0, dst = 0;

		if (xg_lookup_addrs(p, half, fm, &src, &dst) < 0)
			return XG_RULE_ERROR;
		if (fm & (1U << XG_F_SRC)) {
			s.bm[0] = xg_bm(bms, cfg, XG_F_SRC, src);
			if (!s.bm[0])
				return XG_RULE_ERROR;
		}
		if (fm & (1U << XG_F_DST)) {
			s.bm[1] = xg_bm(bms, cfg, XG_F_DST, dst);
			if (!s.bm[1])
				return XG_RULE_ERROR;
		}
	}
	if (fm & (1U << XG_F_PROTO)) {
		__u32 k = half * XG_PROTO_SIZE + p->proto;

		v = xg_proto.lookup(&k);
		if (!v || !(s.bm[2] = xg_bm(bms, cfg, XG_F_PROTO, *v)))
			return XG_RULE_ERROR;
	}
	if (p->later_frag) {
		s.extra = xg_bm(bms, cfg, XG_F_EXTRA, cfg->l4free_idx);
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, cfg->l4free_nc_idx);
		if (!s.bm[7] || !s.extra)
			return XG_RULE_ERROR;
		*cand = xg_continue_rules(&s, cfg);
		return xg_first_rule(&s, cfg->nwords);
	}
	if (p->has_ports) {
		if (fm & (1U << XG_F_SPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->sport;

			v = xg_sport.lookup(&k);
			if (!v || !(s.bm[3] = xg_bm(bms, cfg, XG_F_SPORT, *v)))
				return XG_RULE_ERROR;
		}
		if (fm & (1U << XG_F_DPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->dport;

			v = xg_dport.lookup(&k);
			if (!v || !(s.bm[4] = xg_bm(bms, cfg, XG_F_DPORT, *v)))
				return XG_RULE_ERROR;
		}
		if (p->proto == IPPROTO_TCP && (fm & (1U << XG_F_TFLAGS))) {
			__u32 k = half * XG_TFLAGS_SIZE + p->tflags;

			v = xg_tflags.lookup(&k);
			if (!v || !(s.bm[5] = xg_bm(bms, cfg, XG_F_TFLAGS, *v)))
				return XG_RULE_ERROR;
		}
	}
	if (p->has_icmp && (fm & (1U << XG_F_ICMP))) {
		__u32 k = half * XG_ICMP_SIZE + (p->proto == IPPROTO_ICMPV6 ? 65536 : 0) +
			  ((__u32)p->icmp_type << 8) + p->icmp_code;

		v = xg_icmp.lookup(&k);
		if (!v || !(s.bm[6] = xg_bm(bms, cfg, XG_F_ICMP, *v)))
			return XG_RULE_ERROR;
	}
	if (dir == XG_DIR_INGRESS && (cfg->flags & XG_CFG_HAS_STATE)) {
		int est = xg_established(p, cfg);

		s.extra = xg_bm(bms, cfg, XG_F_EXTRA, est ? cfg->est_idx : cfg->new_idx);
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, est ? cfg->est_nc_idx : cfg->new_nc_idx);
		if (!s.bm[7] || !s.extra)
			return XG_RULE_ERROR;
	}
	*cand = xg_continue_rules(&s, cfg);
	return xg_first_rule(&s, cfg->nwords);
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

/* A packet over rule r's limit: dropped (in audit mode passed), counted
 * as over, and with block_for its source is blocked from now on. */
static __always_inline int xg_over_limit(const struct xg_rule *r, const struct xg_pkt *p, __u32 dir,
					 __u32 frame_len, __u32 ifindex, int drop_ok, __u64 now)
{
	xg_count2(dir, r->slot, frame_len, 1);
	if (r->block_s && dir == XG_DIR_INGRESS)
		xg_block_source(p, r, now);
	xg_event(dir, XG_EV_LIMIT, !drop_ok, p, r->rule_id, frame_len, ifindex);
	return drop_ok ? XG_DROP : XG_PASS;
}

/* The deciding rule's action, for a packet within its limit. */
static __always_inline int xg_rule_action(const struct xg_rule *r, const struct xg_pkt *p, __u32 dir,
					  __u32 frame_len, __u32 ifindex, int drop_ok)
{
	xg_count(dir, r->slot, frame_len);
	if (r->action == XG_ACT_DROP)
		xg_event(dir, XG_EV_RULE, !drop_ok, p, r->rule_id, frame_len, ifindex);
	return (drop_ok && r->action == XG_ACT_DROP) ? XG_DROP : XG_PASS;
}

/* What xg_continue_path works on, in a per-CPU buffer. */
struct xg_cont_scratch {
	struct xg_pkt p;
	__u64 cand;
	__s32 rule;
	__u32 half;
	__u32 frame_len;
	__u32 ifindex;
	__u32 drop_ok;
	__u32 pad;
};
BPF_PERCPU_ARRAY(xg_scratch, struct xg_cont_scratch, 1);

/* The decision for a packet that matches continue rules (bit i of `cand`:
 * cfg->cont[i]).  Those before the deciding rule `rule` apply in order,
 * then `rule` (or the default).  Everything the loop needs is first copied
 * to a per-CPU buffer and read back: the verifier then sees plain values
 * instead of the constants each parsing path left, and checks the loop
 * for a few states instead of once per kind of packet. */
static __always_inline int xg_continue_path(const struct xg_pkt *pkt, __u32 half, const struct xg_config *cfg,
					    __u32 dir, int rule, __u64 cand, __u32 frame_len, __u32 ifindex,
					    int drop_ok)
{
	__u32 zero = 0;
	struct xg_cont_scratch *x = xg_scratch.lookup(&zero);

	if (!x)
		return XG_PASS;
	x->p = *pkt;
	x->cand = cand;
	x->rule = rule;
	x->half = half;
	x->frame_len = frame_len;
	x->ifindex = ifindex;
	x->drop_ok = drop_ok;
	asm volatile("" ::: "memory"); /* read everything back from x */

	const struct xg_pkt *p = &x->p;
	struct xg_rule *r = 0;
	int over = 0;
	int verdict;

	/* Find the rule that decides, passing through the continue rules
	 * within their limits; the decision itself comes after the loop. */
#pragma clang loop unroll(disable)
	for (int hop = 0; hop <= XG_MAX_CONTINUE; hop++) {
		int cur = x->rule;
		__u64 c = x->cand;

		if (c) {
			__u32 bit = cfg->cont[xg_ctz64(c) & (XG_MAX_CONTINUE - 1)];

			x->cand = c & (c - 1);
			if (x->rule < 0 || bit < (__u32)x->rule)
				cur = bit;
			else
				x->cand = 0;
		}
		r = 0;
		if (cur < 0)
			break;
		__u32 k = x->half * XG_MAX_RULES + ((__u32)cur & (XG_MAX_RULES - 1));
		r = xg_rules.lookup(&k);
		if (!r)
			break;
		if (r->limit != XG_LIMIT_NONE && !xg_within_limit(r, p, x->frame_len, xg_now())) {
			over = 1;
			break;
		}
		if (r->action != XG_ACT_CONTINUE)
			break;
		xg_count(dir, r->slot, x->frame_len);
		r = 0;
	}
	if (r && over)
		verdict = xg_over_limit(r, p, dir, x->frame_len, x->ifindex, x->drop_ok, xg_now());
	else if (r)
		verdict = xg_rule_action(r, p, dir, x->frame_len, x->ifindex, x->drop_ok);
	else {
		if (x->rule != XG_RULE_NONE)
			xg_count(dir, XG_SLOT_ERROR, x->frame_len);
		xg_count(dir, XG_SLOT_DEFAULT, x->frame_len);
		if (cfg->flags & XG_CFG_DEFAULT_DROP)
			xg_event(dir, XG_EV_DEFAULT, !x->drop_ok, p, 0, x->frame_len, x->ifindex);
		verdict = (x->drop_ok && (cfg->flags & XG_CFG_DEFAULT_DROP)) ? XG_DROP : XG_PASS;
	}
	if (dir == XG_DIR_EGRESS && verdict == XG_PASS)
		xg_record_flow(p, x->frame_len);
	return verdict;
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
	volatile __u64 cand = 0;
	int rule = xg_classify(&p, half, cfg, dir, &cand);

	if (cand)
		return xg_continue_path(&p, half, cfg, dir, rule, cand, frame_len, ifindex, drop_ok);
	if (rule >= 0) {
		__u32 k = half * XG_MAX_RULES + ((__u32)rule & (XG_MAX_RULES - 1));
		struct xg_rule *r = xg_rules.lookup(&k);

		if (r) {
			if (r->limit != XG_LIMIT_NONE) {
				__u64 now = xg_now();

				if (!xg_within_limit(r, &p, frame_len, now)) {
					verdict = xg_over_limit(r, &p, dir, frame_len, ifindex, drop_ok, now);
					goto out;
				}
			}
			verdict = xg_rule_action(r, &p, dir, frame_len, ifindex, drop_ok);
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
