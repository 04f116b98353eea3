// SPDX-License-Identifier: GPL-2.0
/*
 * xdpguard ingress: the fixed XDP program.
 *
 * Parse, classify with the bit-vector plan in the maps, count, decide.
 * Nothing here depends on a rule set: `xdpguard apply` only writes maps.
 * The version flag is read once per packet, so every map access of one
 * packet goes to the same half of the double-buffered rule set.
 */
#include <uapi/linux/bpf.h>

#include "include/xdpguard.h"
#include "lib/bitvec.h"
#include "lib/maps.h"
#include "lib/parse.h"

#define XG_RULE_NONE (-1)
#define XG_RULE_ERROR (-2)

static __always_inline void xg_count(__u32 slot, __u64 bytes)
{
	struct xg_counter *c = xg_counters.lookup(&slot);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline const struct xg_bitmap *xg_bm(void *bms, const struct xg_config *cfg, __u32 fld,
						       __u32 local)
{
	__u32 idx = cfg->base[fld & (XG_NFIELDS - 1)] + local;

	return bpf_map_lookup_elem(bms, &idx);
}

static __always_inline int xg_lookup_addrs(const struct xg_pkt *p, __u32 ver, const struct xg_config *cfg,
					   __u32 *src, __u32 *dst)
{
	__u32 *v;

	if (p->family == 4) {
		struct xg_lpm4_key k = { .prefixlen = XG_LPM_VER_BITS + 32, .ver = ver };

		__builtin_memcpy(k.addr, p->src, 4);
		v = xg_src4.lookup(&k);
		if (!v)
			return -1;
		*src = *v;
		__builtin_memcpy(k.addr, p->dst, 4);
		v = xg_dst4.lookup(&k);
		if (!v)
			return -1;
		*dst = *v;
		return 0;
	}
	struct xg_lpm6_key k6 = { .prefixlen = XG_LPM_VER_BITS + 128, .ver = ver };

	__builtin_memcpy(k6.addr, p->src, 16);
	v = xg_src6.lookup(&k6);
	if (!v)
		return -1;
	*src = *v;
	__builtin_memcpy(k6.addr, p->dst, 16);
	v = xg_dst6.lookup(&k6);
	if (!v)
		return -1;
	*dst = *v;
	return 0;
}

/* First matching rule's bit position, XG_RULE_NONE, or XG_RULE_ERROR when
 * the maps are inconsistent (never expected; counted). */
static __always_inline int xg_classify(const struct xg_pkt *p, __u32 ver, const struct xg_config *cfg,
				       int established)
{
	if (cfg->nwords == 0)
		return XG_RULE_NONE;
	void *bms = xg_bitmaps.lookup(&ver);
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
		__u32 src, dst;

		if (xg_lookup_addrs(p, ver, cfg, &src, &dst) < 0)
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
		__u32 k = ver * XG_PROTO_SIZE + p->proto;

		v = xg_proto.lookup(&k);
		if (!v || !(s.bm[2] = xg_bm(bms, cfg, XG_F_PROTO, *v)))
			return XG_RULE_ERROR;
	}
	if (p->later_frag) {
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, cfg->l4free_idx);
		if (!s.bm[7])
			return XG_RULE_ERROR;
		return xg_first_rule(&s, cfg->nwords);
	}
	if (p->has_ports) {
		if (fm & (1U << XG_F_SPORT)) {
			__u32 k = ver * XG_PORT_SIZE + p->sport;

			v = xg_sport.lookup(&k);
			if (!v || !(s.bm[3] = xg_bm(bms, cfg, XG_F_SPORT, *v)))
				return XG_RULE_ERROR;
		}
		if (fm & (1U << XG_F_DPORT)) {
			__u32 k = ver * XG_PORT_SIZE + p->dport;

			v = xg_dport.lookup(&k);
			if (!v || !(s.bm[4] = xg_bm(bms, cfg, XG_F_DPORT, *v)))
				return XG_RULE_ERROR;
		}
		if (p->proto == IPPROTO_TCP && (fm & (1U << XG_F_TFLAGS))) {
			__u32 k = ver * XG_TFLAGS_SIZE + p->tflags;

			v = xg_tflags.lookup(&k);
			if (!v || !(s.bm[5] = xg_bm(bms, cfg, XG_F_TFLAGS, *v)))
				return XG_RULE_ERROR;
		}
	}
	if (p->has_icmp && (fm & (1U << XG_F_ICMP))) {
		__u32 k = ver * XG_ICMP_SIZE + (p->proto == IPPROTO_ICMPV6 ? 65536 : 0) +
			  ((__u32)p->icmp_type << 8) + p->icmp_code;

		v = xg_icmp.lookup(&k);
		if (!v || !(s.bm[6] = xg_bm(bms, cfg, XG_F_ICMP, *v)))
			return XG_RULE_ERROR;
	}
	if (cfg->flags & XG_CFG_HAS_STATE) {
		s.bm[7] = xg_bm(bms, cfg, XG_F_EXTRA, established ? cfg->est_idx : cfg->new_idx);
		if (!s.bm[7])
			return XG_RULE_ERROR;
	}
	return xg_first_rule(&s, cfg->nwords);
}

int xg_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u32 zero = 0;

	__u32 *active = xg_active.lookup(&zero);
	if (!active)
		return XDP_PASS;
	__u32 ver = *active & 1;
	struct xg_config *cfg = xg_config.lookup(&ver);
	if (!cfg)
		return XDP_PASS;
	int drop_ok = !(cfg->flags & XG_CFG_AUDIT);

	struct xg_pkt p = {};
	int kind = xg_parse(data, data_end, &p);

	if (kind == XG_KIND_MALFORMED) {
		xg_count(XG_SLOT_MALFORMED, len);
		return drop_ok ? XDP_DROP : XDP_PASS;
	}
	if (kind == XG_KIND_NON_IP) {
		xg_count(XG_SLOT_NON_IP, len);
		return (drop_ok && (cfg->flags & XG_CFG_NON_IP_DROP)) ? XDP_DROP : XDP_PASS;
	}
	if (!(cfg->flags & XG_CFG_NDP_RULES) && xg_is_ndp(&p)) {
		xg_count(XG_SLOT_NDP, len);
		return XDP_PASS;
	}

	int rule = xg_classify(&p, ver, cfg, 0);

	if (rule >= 0) {
		__u32 k = ver * XG_MAX_RULES + ((__u32)rule & (XG_MAX_RULES - 1));
		struct xg_rule *r = xg_rules.lookup(&k);

		if (r) {
			xg_count(r->slot, len);
			return (drop_ok && r->action == XG_ACT_DROP) ? XDP_DROP : XDP_PASS;
		}
		rule = XG_RULE_ERROR;
	}
	if (rule == XG_RULE_ERROR)
		xg_count(XG_SLOT_ERROR, len);
	xg_count(XG_SLOT_DEFAULT, len);
	return (drop_ok && (cfg->flags & XG_CFG_DEFAULT_DROP)) ? XDP_DROP : XDP_PASS;
}
