/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xdpguard ABI: everything the BPF programs and the Python side share.
 *
 * Map keys and values, flag bits and limits live here and nowhere else;
 * xdpguard/datapath/abi.py mirrors them with ctypes and a unit test
 * compiles this header with the host compiler to check every size and
 * offset.  Only fixed-width types: the same text builds under bcc and gcc.
 *
 * Classification is the bit-vector scheme: each match field maps a packet
 * value (address prefix, protocol, port, ...) to an index into a table of
 * distinct rule bitmaps; the AND of the field bitmaps, first set bit, is
 * the matching rule.  Every per-rule-set map holds four halves, two
 * versions for each direction: "half" = direction * 2 + version picks the
 * block of arrays and the slots of the address-table and bitmap outer
 * maps.  One per-CPU flag says which version packets read.
 */
#ifndef XDPGUARD_H
#define XDPGUARD_H

#include <linux/types.h>

#define XG_ABI_VERSION 2

#define XG_MAX_RULES 4096
#define XG_MAX_WORDS (XG_MAX_RULES / 64)
#define XG_NVERSIONS 2
#define XG_NDIRS 2
#define XG_NHALVES (XG_NDIRS * XG_NVERSIONS)

enum xg_dir {
	XG_DIR_INGRESS = 0,
	XG_DIR_EGRESS = 1,
};

/* Address tables: per half, field and family, a multibit trie in an inner
 * array map of 1 KiB nodes (xg_addrs slot XG_ADDR_TABLE(half, field,
 * family)).  Elements 0-255 are the root, a 16-bit stride: element = first
 * address byte, slot = second.  Below it the stride is 8 bits, so a lookup
 * reads at most 3 nodes for IPv4 and 15 for IPv6, however many prefixes
 * the table holds; see xdpguard/rules/stride.py for how it is built. */
#define XG_ROOT_NODES 256
#define XG_ADDR_TABLES (XG_NHALVES * 2 * 2)
#define XG_ADDR_TABLE(half, fld, v6) ((half) * 4 + ((fld) - 1) * 2 + (v6)) /* fld: XG_F_SRC or XG_F_DST */
#define XG_NODE_SLOTS 256
#define XG_SPARSE_RUNS 12
#define XG_SPARSE_PER_NODE 16
#define XG_REF_CHILD (1U << 31)  /* else a leaf: the field-local bitmap index */
#define XG_REF_SPARSE (1U << 30) /* child is sparse: index = element * 16 + position */
#define XG_REF_INDEX (XG_REF_SPARSE - 1)

/* A dense node: the slot of each value of the next address byte. */
struct xg_node {
	__u32 slot[XG_NODE_SLOTS];
};

/* A sparse node, 16 to an xg_node: run k covers bytes bound[k].. up to the
 * next run; the run of byte b is the count of bound[1..11] <= b (unused
 * runs repeat the last one with bound 255). */
struct xg_snode {
	__u32 val[XG_SPARSE_RUNS];
	__u8 bound[XG_SPARSE_RUNS];
	__u8 pad[4];
};

/* Array maps indexed by (half * size + value). */
#define XG_PROTO_SIZE 256
#define XG_PORT_SIZE 65536
#define XG_TFLAGS_SIZE 256
#define XG_ICMP_SIZE (2 * 65536) /* (is_icmpv6 << 16) | (type << 8) | code */

/* Bitmap table: an inner array per version, sized by the rule set. */
#define XG_MAX_BITMAPS 262144

/* Counter slots (per-CPU array).  Reserved slots first, then one slot per
 * live rule; old and new rule sets coexist during an update, hence 2x. */
enum xg_slot {
	XG_SLOT_DEFAULT = 0,   /* no rule matched */
	XG_SLOT_MALFORMED = 1, /* dropped as malformed */
	XG_SLOT_NON_IP = 2,    /* neither IPv4 nor IPv6 */
	XG_SLOT_NDP = 3,       /* IPv6 neighbour discovery passed before rules */
	XG_SLOT_ERROR = 4,     /* internal inconsistency: a bitmap missing */
	XG_SLOT_FLOW_NEW = 5,  /* egress: flow-table entries created */
	XG_SLOT_BLOCKED = 6,   /* ingress: dropped, source blocked (block_for) */
	XG_SLOT_FIRST_RULE = 8,
};
/* Slots per direction; the counter map holds XG_NDIRS blocks of them. */
#define XG_MAX_SLOTS (XG_SLOT_FIRST_RULE + 2 * XG_MAX_RULES)

/* Match fields, in the order of their bitmap tables. */
enum xg_field {
	XG_F_EXTRA = 0, /* special bitmaps: l4-free rules, established, new */
	XG_F_SRC = 1,
	XG_F_DST = 2,
	XG_F_PROTO = 3,
	XG_F_SPORT = 4,
	XG_F_DPORT = 5,
	XG_F_TFLAGS = 6,
	XG_F_ICMP = 7,
	XG_NFIELDS = 8,
};

/* xg_config.flags */
#define XG_CFG_AUDIT (1U << 0)        /* count, never drop */
#define XG_CFG_NON_IP_DROP (1U << 1)  /* non_ip: drop */
#define XG_CFG_NDP_RULES (1U << 2)    /* ndp: rules (no bypass) */
#define XG_CFG_DEFAULT_DROP (1U << 3) /* direction default: drop */
#define XG_CFG_HAS_STATE (1U << 4)    /* some rule tests state: look flows up */
#define XG_CFG_HAS_BLOCK (1U << 5)    /* some rule has block_for: check blocked sources */

/* xg_rule.action */
#define XG_ACT_ALLOW 0
#define XG_ACT_DROP 1
#define XG_ACT_CONTINUE 2 /* a rate-limit guard: within the limit, on to the next matching rule */

/* Continue rules a direction may hold.  The program checks those a packet
 * matches before its deciding rule one by one, in a loop the verifier
 * must see bounded; the compiler refuses more. */
#define XG_MAX_CONTINUE 4

/* One direction's settings for one version of the rule set. */
struct xg_config {
	__u64 plan_hash;   /* first 8 bytes of the plan's sha256 */
	__u32 nwords;      /* 64-bit words the rule set uses (0 when no rules) */
	__u32 nrules;
	__u32 flags;       /* XG_CFG_* */
	__u32 field_mask;  /* bit (1 << xg_field) set: field used by some rule */
	__u32 base[XG_NFIELDS]; /* first bitmap of each field's table */
	__u32 l4free_idx;  /* bitmap of rules without L4 conditions */
	__u32 est_idx;     /* rules matching established flows */
	__u32 new_idx;     /* rules matching new flows */
	__u32 ones_idx;    /* every rule: stands in for fields no rule uses */
	__u32 tmo_tcp;     /* flow timeouts, seconds */
	__u32 tmo_udp;
	__u32 tmo_icmp;
	/* The four extra bitmaps above without continue rules: what the scan
	 * ANDs, so that it finds the deciding rule. */
	__u32 l4free_nc_idx;
	__u32 est_nc_idx;
	__u32 new_nc_idx;
	__u32 ones_nc_idx;
	__u32 ncont;       /* continue rules, */
	__u16 cont[XG_MAX_CONTINUE]; /* their bit positions, ascending */
};

/* xg_rule.limit */
#define XG_LIMIT_NONE 0
#define XG_LIMIT_PPS 1
#define XG_LIMIT_BPS 2

/* Rule table entry, indexed by half * XG_MAX_RULES + bit position.
 * Rate limits are GCRA: a bucket holds its theoretical arrival time (TAT);
 * a packet costing c ns is within the limit when max(TAT, now) + c - now
 * <= burst_ns, and then moves TAT there. */
struct xg_rule {
	__u64 rule_id;   /* stable id derived from direction and name */
	__u32 slot;      /* counter slot */
	__u8 action;     /* XG_ACT_* */
	__u8 limit;      /* XG_LIMIT_* */
	__u8 plen4;      /* per source/N: bucket per IPv4 prefix of this length; */
	__u8 plen6;      /*   both 0: one bucket for the rule */
	__u64 rate;      /* packets or bits per second */
	__u64 cost_ns;   /* pps: ns per packet (bps: computed from the length) */
	__u64 burst_ns;  /* tolerance: the burst, in ns at the rate */
	__u32 block_s;   /* block_for in seconds, 0 for none */
	__u32 per_source; /* buckets keyed by source (else one per rule) */
};

/* A rule bitmap: bit r of word r/64 is rule r.  summary bit w is set when
 * word w is non-zero, so the AND of the summaries names the only words
 * worth looking at. */
struct xg_bitmap {
	__u64 summary;
	__u64 w[XG_MAX_WORDS];
};

struct xg_counter {
	__u64 packets;   /* every packet the rule matched */
	__u64 bytes;
	__u64 over;      /* of those, dropped over the rate limit */
	__u64 over_bytes;
};

/* Flow table (state: established): written by egress, read by ingress with
 * the tuple reversed.  "local" is this host's side.  Ports in host order;
 * for ICMP echo, lport is the echo identifier and rport 0. */
struct xg_flow_key {
	__u8 family;
	__u8 proto;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

struct xg_flow {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last outbound packet */
};

#define XG_FLOW_DEFAULT_SIZE 65536
/* Egress refreshes a flow's timestamp at most this often (ns): fewer writes
 * to a shared hash on busy flows. */
#define XG_FLOW_REFRESH_NS 1000000000ULL
#define XG_NSEC_PER_SEC 1000000000ULL

/* Rate-limit buckets.  Per-rule ones in a hash keyed by rule id (room for
 * two full rule sets per direction); per-source ones in an LRU keyed by
 * rule id and masked source, sized by the rule file. */
#define XG_RULE_BUCKETS (XG_NDIRS * 2 * XG_MAX_RULES)
#define XG_LIMIT_DEFAULT_SIZE 65536
#define XG_LIMIT_TRIES 4 /* compare-and-swap attempts before calling it over */

struct xg_bucket {
	__u64 tat; /* theoretical arrival time, ns */
};

struct xg_src_bucket_key {
	__u64 rule_id;
	__u8 family;
	__u8 plen;
	__u8 pad[6];
	__u8 addr[16]; /* masked to plen */
};

/* Sources blocked by block_for, until a CLOCK_MONOTONIC time. */
struct xg_block_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct xg_block {
	__u64 until_ns;
	__u64 rule_id; /* the limit that was exceeded */
};

/* Sampled drop events, through a ring buffer (xdpguard events). */
#define XG_EVENTS_BYTES (256 * 1024)
#define XG_EVENTS_DEFAULT_SAMPLE 1      /* one drop in N becomes an event: every one */
#define XG_EVENTS_DEFAULT_MAX_RATE 1000 /* events per second per CPU, at most */

enum xg_event_reason {
	XG_EV_RULE = 1,      /* a drop rule matched */
	XG_EV_LIMIT = 2,     /* over a rate limit */
	XG_EV_DEFAULT = 3,   /* the direction's default: drop */
	XG_EV_MALFORMED = 4,
	XG_EV_NON_IP = 5,
	XG_EV_BLOCKED = 6,   /* source blocked by block_for */
};

struct xg_event_cfg {
	__u32 sample;   /* 0: no events; N: one drop in N */
	__u32 max_rate; /* per CPU per second */
};

struct xg_event_rate {
	__u64 window_ns; /* start of the current one-second window */
	__u64 count;
};

struct xg_event {
	__u64 ts_ns;   /* CLOCK_MONOTONIC */
	__u64 rule_id; /* 0 when no rule decided */
	__u32 ifindex;
	__u32 len;
	__u8 dir;
	__u8 reason;   /* enum xg_event_reason */
	__u8 audit;    /* mode audit: the packet was passed */
	__u8 family;
	__u8 proto;
	__u8 pad;
	__u16 sport;
	__u16 dport;
	__u16 pad2;
	__u8 src[16];
	__u8 dst[16];
};

#endif /* XDPGUARD_H */
