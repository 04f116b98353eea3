/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The pinned maps of one interface, as bcc declarations.
 *
 * XG_PIN_DIR (the interface's bpffs dir) and XG_DIR_PFX ("in_" or "eg_")
 * come from the loader's cflags.  BPF_TABLE_PINNED creates and pins a map
 * when absent and reuses the pinned one otherwise, so contents survive a
 * program replacement; the loader checks pinned sizes itself because bcc
 * does not.  Map accesses must stay in the program's main file: bcc only
 * rewrites `map.lookup()` there.
 */
#ifndef XG_MAPS_H
#define XG_MAPS_H

#include "include/xdpguard.h"

#define XG_PIN(name) XG_PIN_DIR "/" name
#define XG_DPIN(name) XG_PIN_DIR "/" XG_DIR_PFX name

/* Which half of every versioned map packets read; shared by both directions
 * so one flip switches the whole rule set. */
BPF_TABLE_PINNED("percpu_array", __u32, __u32, xg_active, 1, XG_PIN("active"));

BPF_TABLE_PINNED("array", __u32, struct xg_config, xg_config, XG_NVERSIONS, XG_DPIN("config"));

BPF_TABLE_PINNED("lpm_trie", struct xg_lpm4_key, __u32, xg_src4, XG_LPM_MAX_ENTRIES, XG_DPIN("src4"),
		 BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct xg_lpm4_key, __u32, xg_dst4, XG_LPM_MAX_ENTRIES, XG_DPIN("dst4"),
		 BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct xg_lpm6_key, __u32, xg_src6, XG_LPM_MAX_ENTRIES, XG_DPIN("src6"),
		 BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct xg_lpm6_key, __u32, xg_dst6, XG_LPM_MAX_ENTRIES, XG_DPIN("dst6"),
		 BPF_F_NO_PREALLOC);

BPF_TABLE_PINNED("array", __u32, __u32, xg_proto, XG_NVERSIONS * XG_PROTO_SIZE, XG_DPIN("proto"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_sport, XG_NVERSIONS * XG_PORT_SIZE, XG_DPIN("sport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_dport, XG_NVERSIONS * XG_PORT_SIZE, XG_DPIN("dport"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_tflags, XG_NVERSIONS * XG_TFLAGS_SIZE, XG_DPIN("tflags"));
BPF_TABLE_PINNED("array", __u32, __u32, xg_icmp, XG_NVERSIONS * XG_ICMP_SIZE, XG_DPIN("icmp"));

BPF_TABLE_PINNED("array", __u32, struct xg_rule, xg_rules, XG_NVERSIONS * XG_MAX_RULES, XG_DPIN("rules"));

/* Bitmap tables are sized per rule set, so each version's is an inner map
 * created by the loader; the template only fixes type and value size. */
BPF_F_TABLE("array", __u32, struct xg_bitmap, xg_bm_tmpl, 1, BPF_F_INNER_MAP);
BPF_TABLE_PINNED("array_of_maps$xg_bm_tmpl", __u32, __u32, xg_bitmaps, XG_NVERSIONS, XG_DPIN("bitmaps"));

BPF_TABLE_PINNED("percpu_array", __u32, struct xg_counter, xg_counters, XG_MAX_SLOTS, XG_DPIN("counters"));

#endif /* XG_MAPS_H */
