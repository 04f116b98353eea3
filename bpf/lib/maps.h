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
/* The same, for tables of at most XG_FIX_NODES elements: every inner map
 * exactly that size, so the verifier inlines the node lookups. */
BPF_TABLE("array", __u32, struct xg_node, xg_node_ftmpl, XG_FIX_NODES);
BPF_TABLE_PINNED("array_of_maps$xg_node_ftmpl", __u32, __u32, xg_addrs_f, XG_ADDR_TABLES, XG_PIN("addrs_f"));

BPF_TABLE_PINNED("array", __u32, __u32, xg_proto, XG_NHALVES * XG_PROTO_SIZE, XG_PIN("proto"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_sport, XG_NHALVES * XG_PORT_SIZE, XG_PIN("sport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_dport, XG_NHALVES * XG_PORT_SIZE, XG_PIN("dport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_tflags, XG_NHALVES * XG_TFLAGS_SIZE, XG_PIN("tflags"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_icmp, XG_NHALVES * XG_ICMP_SIZE, XG_PIN("icmp"));

BPF_TABLE_PINNED("array", __u32, struct xg_rule, xg_rules, XG_NHALVES * XG_MAX_RULES, XG_PIN("rules"));

/* Bitmap tables are sized per rule set, so they are inner maps created by
 * the loader; the templates only fix type and value size.  Per half: the
 * top entries (`tops`) and the blocks they point to (`bitmaps`). */
BPF_F_TABLE("array", __u32, struct xg_top, xg_top_tmpl, 1, BPF_F_INNER_MAP);
BPF_TABLE_PINNED("array_of_maps$xg_top_tmpl", __u32, __u32, xg_tops, XG_NHALVES, XG_PIN("tops"));
BPF_F_TABLE("array", __u32, struct xg_bitmap, xg_bm_tmpl, 1, BPF_F_INNER_MAP);
BPF_TABLE_PINNED("array_of_maps$xg_bm_tmpl", __u32, __u32, xg_bitmaps, XG_NHALVES, XG_PIN("bitmaps"));
/* The same two in a fixed size (XG_CFG_FIXED, see XG_FIX_TOPS). */
BPF_TABLE("array", __u32, struct xg_top, xg_top_ftmpl, XG_FIX_TOPS);
BPF_TABLE_PINNED("array_of_maps$xg_top_ftmpl", __u32, __u32, xg_tops_f, XG_NHALVES, XG_PIN("tops_f"));
BPF_TABLE("array", __u32, struct xg_bitmap, xg_bm_ftmpl, XG_FIX_BLOCKS);
BPF_TABLE_PINNED("array_of_maps$xg_bm_ftmpl", __u32, __u32, xg_bitmaps_f, XG_NHALVES, XG_PIN("bitmaps_f"));
/* And the flat table (XG_CFG_FIXFLAT), of the same size as the blocks'. */
BPF_TABLE_PINNED("array_of_maps$xg_bm_ftmpl", __u32, __u32, xg_flat_f, XG_NHALVES, XG_PIN("flat_f"));
/* The sizes above, written from Python after the first load (the programs
 * never read it): what the inner maps must be made with. */
BPF_TABLE_PINNED("array", __u32, struct xg_fixsize, xg_fixsize, 1, XG_PIN("fixsize"));
/* A rule set of at most XG_GROUP_RULES rules also gets its bitmaps as one
 * block each, indexed like the top entries: one lookup per field instead of
 * two.  Per half; both halves share one inner map per plan. */
BPF_TABLE_PINNED("array_of_maps$xg_bm_tmpl", __u32, __u32, xg_flat, XG_NHALVES, XG_PIN("flat"));
/* The flat blocks again, one value per half (see XG_PFLAT_CAP), for the
 * rule sets small enough. */
BPF_TABLE_PINNED("array", __u32, struct xg_pflat_bytes, xg_pflat, XG_NHALVES, XG_PIN("pflat"));
/* A rule set of at most 64 rules: each bitmap as one word, XG_WORDS_CAP per
 * half, at half * XG_WORDS_CAP + its index (see XG_CFG_WORDS).  A plain
 * array, so the verifier inlines the lookups. */
BPF_TABLE_PINNED("array", __u32, __u64, xg_words, XG_NHALVES * XG_WORDS_CAP, XG_PIN("words"));

BPF_TABLE_PINNED("percpu_array", __u32, struct xg_counter, xg_counters, XG_NDIRS * XG_MAX_SLOTS,
		 XG_PIN("counters"));

/* Flows this host opened, for `state: established` on ingress.  LRU: a
 * full table forgets the flows idle longest; only egress inserts, and only
 * for connections this host opens (lib/flow.h), so inbound traffic,
 * spoofed or not, cannot fill it. */
BPF_TABLE_PINNED("lru_hash", struct xg_flow_key, struct xg_flow, xg_flows, XG_FLOW_SIZE, XG_PIN("flows"));

/* Rate-limit state: fixed arrays, so packets never insert (see the header).
 * Per-rule buckets follow the counter slots, which follow stable rule ids,
 * so a rule that keeps its name keeps its bucket across updates; per-source
 * slots are tagged by rule id too.  XG_LIMIT_SIZE comes from the rule file. */
BPF_TABLE_PINNED("array", __u32, struct xg_bucket, xg_rule_tat, XG_NDIRS * XG_MAX_SLOTS, XG_PIN("rule_tat"));
BPF_TABLE_PINNED("array", __u32, struct xg_limiter, xg_limiter, 1, XG_PIN("limiter"));
/* BPF_F_MMAPABLE only for its layout: such an array's values start on a page,
 * so each 64-byte line of slots is one cache line (a plain array's values
 * start 16 bytes into one, and every line would straddle two). */
BPF_TABLE_PINNED("array", __u32, struct xg_src_line, xg_src_slots, XG_SRC_LINES(XG_LIMIT_SIZE), XG_PIN("src_slots"),
		 BPF_F_MMAPABLE);
BPF_TABLE_PINNED("array", __u32, struct xg_bucket, xg_src_sketch, XG_LIMIT_SIZE, XG_PIN("src_sketch"));
BPF_TABLE_PINNED("array", __u32, __u64, xg_src_debt, XG_SRC_DEBT_CELLS, XG_PIN("src_debt"));
/* Blocked sources: inserted only when a source goes over a block_for limit. */
BPF_TABLE_PINNED("lru_hash", struct xg_block_key, struct xg_block, xg_blocked, XG_LIMIT_SIZE, XG_PIN("blocked"));
BPF_TABLE_PINNED("array", __u32, __u64, xg_block_filter, XG_BLOCK_FILTER_CELLS, XG_PIN("block_filter"));

/* Dynamic sets (see xdpguard.h): per half, the set maps its plan declares.
 * The inner maps are created and pinned per set by `xdpguard apply`; the
 * templates fix their type, key and value.  Hash and LPM inner maps may
 * differ from the template in max_entries (the set's size). */
BPF_F_TABLE("hash", __u32, struct xg_dyn_elem, xg_dyn4_tmpl, 1, BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array_of_maps$xg_dyn4_tmpl", __u32, __u32, xg_dyn4, XG_DYN_SLOTS, XG_PIN("dyn4"));
BPF_F_TABLE("hash", struct xg_dyn_key6, struct xg_dyn_elem, xg_dyn6_tmpl, 1, BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array_of_maps$xg_dyn6_tmpl", __u32, __u32, xg_dyn6, XG_DYN_SLOTS, XG_PIN("dyn6"));
BPF_F_TABLE("lpm_trie", struct xg_lpm_key4, struct xg_dyn_elem, xg_dynp4_tmpl, 1, BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array_of_maps$xg_dynp4_tmpl", __u32, __u32, xg_dynp4, XG_DYN_SLOTS, XG_PIN("dynp4"));
BPF_F_TABLE("lpm_trie", struct xg_lpm_key6, struct xg_dyn_elem, xg_dynp6_tmpl, 1, BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array_of_maps$xg_dynp6_tmpl", __u32, __u32, xg_dynp6, XG_DYN_SLOTS, XG_PIN("dynp6"));
BPF_TABLE_PINNED("array", __u32, struct xg_dyncfg, xg_dyncfg, XG_NHALVES, XG_PIN("dyncfg"));
/* Mappable: `xdpguard set` reads and writes the words in place. */
BPF_TABLE_PINNED("array", __u32, __u64, xg_dynf, XG_DYNF_WORDS, XG_PIN("dynf"), BPF_F_MMAPABLE);
/* Per packet and direction: the addresses and the bitmap index each address
 * field's membership mask selects (xg_dyn_members), read by xg_dyn_select.
 * Scratch only, so not pinned. */
struct xg_dynidx {
	__u8 src[16];
	__u8 dst[16];
	__u32 idx[2]; /* src, dst */
	/* Lookup keys live here too, not on the stack: see xg_dyn_members. */
	__u32 slot;
	__u32 pad;
	struct xg_lpm_key4 k4;
	struct xg_lpm_key6 k6;
};
BPF_PERCPU_ARRAY(xg_dynidx, struct xg_dynidx, XG_NDIRS);

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

/* SYN cookies (syn_cookies: true).  For the TCP packets such a rule
 * allows, the ingress program tail-calls the XDP program of
 * bpf/syncookie.c through syn_prog, with the rule in the per-CPU
 * syn_scratch.  That program is built by clang and loaded through libbpf
 * only once some rule asks for SYN cookies; until then syn_prog is empty
 * and the tail call falls through to XDP_PASS. */
BPF_TABLE_PINNED("prog", __u32, __u32, xg_syn_prog, 1, XG_PIN("syn_prog"));
BPF_TABLE_PINNED("percpu_array", __u32, struct xg_syn_scratch, xg_syn_scratch, 1, XG_PIN("syn_scratch"));

#ifdef XG_TEST_CLOCK
/* Test builds only (the loader sets XG_TEST_CLOCK when XDPGUARD_TEST_CLOCK=1):
 * a clock the tests set, so limiter accuracy can be checked exactly. */
BPF_TABLE_PINNED("array", __u32, __u64, xg_clock, 1, XG_PIN("test_clock"));
#endif

#endif /* XG_MAPS_H */
