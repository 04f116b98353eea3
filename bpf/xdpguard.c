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
#include "lib/flow.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "tc/egress.h"
#include "xdp/ingress.h"

#define XG_RULE_NONE (-1)
#define XG_RULE_ERROR (-2)

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

/* Does a packet arriving from outside belong to a flow this host opened? */
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

/* Record an outbound packet's flow (egress only, so only this host creates
 * flows, and only with what opens a connection: see lib/flow.h).  Any
 * outbound packet of a flow refreshes it. */
static __always_inline void xg_record_flow(const struct xg_pkt *p, __u64 bytes, int udp_connected)
{
	struct xg_flow_key k = {};

	if (xg_flow_key(p, XG_DIR_EGRESS, &k) < 0)
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
	if (!xg_opens_flow(p, udp_connected))
		return;
	struct xg_flow nf = { .last_seen_ns = now };
	xg_flows.update(&k, &nf);
	xg_count(XG_DIR_EGRESS, XG_SLOT_FLOW_NEW, bytes);
}

/* First matching rule's bit position, XG_RULE_NONE, or XG_RULE_ERROR when
 * the maps are inconsistent (never expected; counted). */
static __always_inline int xg_classify(const struct xg_pkt *p, __u32 half, const struct xg_config *cfg,
				       __u32 dir)
{
	if (cfg->nwords == 0)
		return XG_RULE_NONE;
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
	/* A later fragment has no L4 header (has_ports and has_icmp are 0, so
	 * the L4 lookups below are skipped): only rules without L4 conditions. */
	if (p->later_frag) {
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, cfg->l4free_idx);
		if (!s.bm[7])
			return XG_RULE_ERROR;
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
	/* State: the flow lookup is the costly part, so it is made only when
	 * its answer can change the first matching rule.  A packet that cannot
	 * belong to a flow (an inbound SYN without ACK, a later fragment, ICMP
	 * other than an echo reply) is new without asking.  Otherwise the first
	 * candidate is found ignoring state; only if that rule tests state is
	 * the flow table asked, and only if the rule then does not fit the
	 * packet's state is the scan made again with the state's bitmap.  When
	 * rule 0 tests state alone (XG_CFG_STATE_FIRST) it is every packet's
	 * first candidate: the table is asked first and the scan made once.
	 * Two scan sites, one lookup site: each extra copy costs the verifier
	 * far more than the branches do. */
	int has_state = dir == XG_DIR_INGRESS && (cfg->flags & XG_CFG_HAS_STATE) && !p->later_frag;
	int stateful = has_state && xg_flow_possible(p);
	int rule = XG_RULE_NONE, in_est = 0, in_new = 0;

	if (has_state && !stateful) {
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, cfg->new_idx);
		if (!s.bm[7])
			return XG_RULE_ERROR;
	}
	if (!stateful || !(cfg->flags & XG_CFG_STATE_FIRST)) {
		rule = xg_first_rule(&s, cfg->nwords);
		if (!stateful || rule < 0)
			return rule;
		const struct xg_bitmap *est = xg_bm(bms, cfg, XG_F_EXTRA, cfg->est_idx);
		const struct xg_bitmap *nw = xg_bm(bms, cfg, XG_F_EXTRA, cfg->new_idx);
		if (!est || !nw)
			return XG_RULE_ERROR;
		in_est = xg_bitmap_has(est, rule);
		in_new = xg_bitmap_has(nw, rule);
		if (in_est && in_new)
			return rule; /* the first candidate ignores state: no lookup */
	}
	int est_now = xg_established(p, cfg);
	if (rule >= 0 && (est_now ? in_est : in_new))
		return rule; /* the first candidate fits the packet's state */
	s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, est_now ? cfg->est_idx : cfg->new_idx);
	if (!s.bm[7])
		return XG_RULE_ERROR;
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

/* The whole decision for one frame in one direction. */
static __always_inline int xg_process(void *data, void *data_end, __u32 frame_len, __u32 dir, __u32 ifindex,
				      struct bpf_sock *sk)
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
	int rule = xg_classify(&p, half, cfg, dir);

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
		xg_record_flow(&p, frame_len, xg_udp_sock_connected(sk, &p));
	return verdict;
}

int xg_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return xg_xdp_action(
		xg_process(data, data_end, (__u32)(data_end - data), XG_DIR_INGRESS, ctx->ingress_ifindex, 0));
}

int xg_egress(struct __sk_buff *skb)
{
	xg_tc_pull_headers(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	return xg_tc_action(xg_process(data, data_end, skb->len, XG_DIR_EGRESS, skb->ifindex, skb->sk));
}
