/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The pinned maps of one interface, as bcc declarations.
 *
 * XG_PIN_DIR (the interface's bpffs dir) and XG_FLOW_SIZE come from the
 * loader's cflags.  BPF_TABLE_PINNED creates and pins a map when absent
 * and reuses the pinned one otherwise, so contents survive a program
 * replacement; the loader checks pinned sizes itself because bcc does not.
 * Both directions share these maps: their entries are told apart by the
 * half index (direction * 2 + version).  Map accesses must stay in the
 * program's main file: bcc only rewrites `map.lookup()` there.
 */
#ifndef XG_MAPS_H
#define XG_MAPS_H

#include "include/xdpguard.h"

#define XG_PIN(name) XG_PIN_DIR "/" name

/* Which version of every map packets read; one flip switches both directions. */
BPF_TABLE_PINNED("percpu_array", __u32, __u32, xg_active, 1, XG_PIN("active"));

BPF_TABLE_PINNED("array", __u32, struct xg_config, xg_config, XG_NHALVES, XG_PIN("config"));

/* Address tables (src/dst, v4/v6, per half): inner arrays of trie nodes
 * sized per rule set and created by the loader, like the bitmap tables. */
BPF_F_TABLE("array", __u32, struct xg_node, xg_node_tmpl, 1, BPF_F_INNER_MAP);
BPF_TABLE_PINNED("array_of_maps$xg_node_tmpl", __u32, __u32, xg_addrs, XG_ADDR_TABLES, XG_PIN("addrs"));

BPF_TABLE_PINNED("array", __u32, __u32, xg_proto, XG_NHALVES * XG_PROTO_SIZE, XG_PIN("proto"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_sport, XG_NHALVES * XG_PORT_SIZE, XG_PIN("sport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_dport, XG_NHALVES * XG_PORT_SIZE, XG_PIN("dport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_tflags, XG_NHALVES * XG_TFLAGS_SIZE, XG_PIN("tflags"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_icmp, XG_NHALVES * XG_ICMP_SIZE, XG_PIN("icmp"));

BPF_TABLE_PINNED("array", __u32, struct xg_rule, xg_rules, XG_NHALVES * XG_MAX_RULES, XG_PIN("rules"));

/* Bitmap tables are sized per rule set, so each half's is an inner map
 * created by the loader; the template only fixes type and value size. */
BPF_F_TABLE("array", __u32, struct xg_bitmap, xg_bm_tmpl, 1, BPF_F_INNER_MAP);
BPF_TABLE_PINNED("array_of_maps$xg_bm_tmpl", __u32, __u32, xg_bitmaps, XG_NHALVES, XG_PIN("bitmaps"));

BPF_TABLE_PINNED("percpu_array", __u32, struct xg_counter, xg_counters, XG_NDIRS * XG_MAX_SLOTS,
		 XG_PIN("counters"));

/* Flows this host opened, for `state: established` on ingress.  LRU: a
 * full table forgets the flows idle longest; only egress inserts, and only
 * for connections this host opens (lib/flow.h), so inbound traffic,
 * spoofed or not, cannot fill it. */
BPF_TABLE_PINNED("lru_hash", struct xg_flow_key, struct xg_flow, xg_flows, XG_FLOW_SIZE, XG_PIN("flows"));

/* Rate-limit state, keyed by stable rule id so it survives updates that
 * keep the rule.  XG_LIMIT_SIZE comes from the rule file. */
BPF_TABLE_PINNED("hash", __u64, struct xg_bucket, xg_rule_buckets, XG_RULE_BUCKETS, XG_PIN("rule_buckets"));
BPF_TABLE_PINNED("lru_hash", struct xg_src_bucket_key, struct xg_bucket, xg_src_buckets, XG_LIMIT_SIZE,
		 XG_PIN("src_buckets"));
BPF_TABLE_PINNED("lru_hash", struct xg_block_key, struct xg_block, xg_blocked, XG_LIMIT_SIZE, XG_PIN("blocked"));

/* Drop events: a pinned ring buffer (bcc has no pinned variant of its
 * BPF_RINGBUF_OUTPUT, so the same declaration is spelled out here). */
struct xg_events_table_t {
	int key;
	__u32 leaf;
	int (*ringbuf_output)(void *, __u64, __u64);
	void *(*ringbuf_reserve)(__u64);
	void (*ringbuf_discard)(void *, __u64);
	void (*ringbuf_submit)(void *, __u64);
	__u32 max_entries;
};
__attribute__((section("maps/ringbuf:" XG_PIN("events")))) struct xg_events_table_t xg_events = {
	.max_entries = XG_EVENTS_BYTES
};
BPF_TABLE_PINNED("array", __u32, struct xg_event_cfg, xg_event_cfg, 1, XG_PIN("event_cfg"));
BPF_TABLE_PINNED("percpu_array", __u32, struct xg_event_rate, xg_event_rate, 1, XG_PIN("event_rate"));

#ifdef XG_TEST_CLOCK
/* Test builds only (the loader sets XG_TEST_CLOCK when XDPGUARD_TEST_CLOCK=1):
 * a clock the tests set, so limiter accuracy can be checked exactly. */
BPF_TABLE_PINNED("array", __u32, __u64, xg_clock, 1, XG_PIN("test_clock"));
#endif

#endif /* XG_MAPS_H */
