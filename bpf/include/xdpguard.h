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

#define XG_ABI_VERSION 3

/* Rules per direction.  A rule bitmap is two-level: XG_MAX_GROUPS groups of
 * XG_GROUP_RULES rules; each non-empty group is a block (struct xg_bitmap,
 * a summary word over 64 words) in a deduplicated block table, and a top
 * entry (struct xg_top) per distinct bitmap says which groups are non-empty
 * and where their blocks are. */
#define XG_MAX_RULES 65536
#define XG_GROUP_RULES 4096
#define XG_GROUP_WORDS (XG_GROUP_RULES / 64)
#define XG_MAX_GROUPS (XG_MAX_RULES / XG_GROUP_RULES)
#define XG_MAX_WORDS (XG_MAX_RULES / 64)
#define XG_NVERSIONS 2
#define XG_NDIRS 2
#define XG_NHALVES (XG_NDIRS * XG_NVERSIONS)
/* A rule set of at most 64 rules (one bitmap word) whose bitmaps number at
 * most XG_WORDS_CAP also has each bitmap as one word of the plain array
 * xg_words (XG_CFG_WORDS): the scan is then a few loads the verifier
 * inlines, with no call and no map-in-map lookup. */
#define XG_WORDS_CAP 4096
/* A rule set of one group (at most XG_GROUP_RULES rules) whose bitmaps
 * number at most XG_PFLAT_CAP also has its flat blocks (see xg_flat) in
 * xg_pflat, all of a half's in one value (XG_CFG_PFLAT): the scan then
 * makes one lookup, which the verifier inlines, and reaches each block by
 * its index, instead of a helper call per block in an inner map (the
 * verifier never inlines those, not knowing their size).  Fixed, so every
 * interface holds it: XG_NHALVES values of 520 KiB. */
#define XG_PFLAT_CAP 1024

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

/* Bitmap tables, inner arrays sized by the rule set: the top entries (one
 * per distinct bitmap of every field, per half) and the blocks they point
 * to (shared by both halves of a direction, see xdpguard/datapath/maps.py). */
#define XG_MAX_BITMAPS 262144
#define XG_MAX_BLOCKS 1048576

/* The same tables in a fixed size, when they fit: an inner map made
 * exactly this size (no BPF_F_INNER_MAP) in the *_f outer maps, whose
 * lookups the verifier inlines, as it cannot for inner maps of any size.
 * A half whose plan has more than one group and fits XG_FIX_TOPS top
 * entries and XG_FIX_BLOCKS blocks reads them there (XG_CFG_FIXED), a
 * one-group plan's flat table of at most XG_FIX_BLOCKS blocks from
 * xg_flat_f (XG_CFG_FIXFLAT); an address table of at most XG_FIX_NODES
 * elements is read from xg_addrs_f (XG_CFG_FIXA).  The top entries' and
 * blocks' sizes are chosen when the programs are first loaded on an
 * interface, from the plan then applied (the loader passes -DXG_FIX_TOPS
 * and -DXG_FIX_BLOCKS), at least the _MIN sizes, and kept in the pinned
 * xg_fixsize for every later load, since a pinned outer map keeps the
 * inner size it was made with.  Memory is the fixed size for every such
 * map: at the least sizes 2.2 MB of top entries per half, 8.5 MB of
 * blocks per direction; 2.25 MB per address table (the root and 2,048
 * dense nodes: an IPv4 table with longer prefixes in up to 2,048 /16s). */
#define XG_FIX_TOPS_MIN 32768
#define XG_FIX_BLOCKS_MIN 16384
#define XG_FIX_NODES 2304
#ifndef XG_FIX_TOPS
#define XG_FIX_TOPS XG_FIX_TOPS_MIN
#endif
#ifndef XG_FIX_BLOCKS
#define XG_FIX_BLOCKS XG_FIX_BLOCKS_MIN
#endif

/* The fixed sizes the programs of an interface were built with (xg_fixsize). */
struct xg_fixsize {
	__u32 tops;
	__u32 blocks;
	__u32 nodes;
	__u32 pad;
};

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
	XG_SLOT_LIMIT_SKETCH = 7, /* per-source limits: judged by the overflow sketch (the line was full) */
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
#define XG_CFG_HAS_DYN (1U << 6)      /* some rule refers to a dynamic set: see xg_dyncfg */
#define XG_CFG_STATE_FIRST (1U << 7)  /* rule 0 tests state only: ask the flow table before the scan */
#define XG_CFG_WORDS (1U << 8)        /* the half's bitmaps are words of xg_words: see XG_WORDS_CAP */
#define XG_CFG_PFLAT (1U << 9)        /* the half's flat blocks are in xg_pflat: see XG_PFLAT_CAP */
#define XG_CFG_FIXED (1U << 10)       /* the half's top entries and blocks are in xg_tops_f, xg_bitmaps_f */
/* Address table (fld, v6) of the half is in xg_addrs_f: bit XG_CFG_FIXA(fld, v6). */
#define XG_CFG_FIXA(fld, v6) (1U << (11 + ((fld) - 1) * 2 + (v6)))
/* The half's flat blocks (one group) are in xg_flat_f (at most XG_FIX_BLOCKS bitmaps). */
#define XG_CFG_FIXFLAT (1U << 15)

/* xg_rule.action */
#define XG_ACT_ALLOW 0
#define XG_ACT_DROP 1
#define XG_ACT_CONTINUE 2 /* a rate-limit guard: within the limit, on to the next matching rule */

/* Continue rules a direction may hold: a packet passes through at most
 * this many before the rule that decides (a bounded loop of scans, each
 * starting after the last continue rule); the compiler refuses more. */
#define XG_MAX_CONTINUE 8

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
	__u32 slot;      /* counter slot; also indexes the per-rule bucket */
	__u8 action;     /* XG_ACT_* */
	__u8 limit;      /* XG_LIMIT_* */
	__u8 plen4;      /* per source: bucket per IPv4 prefix of this length */
	__u8 plen6;      /*   and per IPv6 prefix of this length */
	__u64 rate;      /* packets or bits per second */
	__u64 cost_ns;   /* pps: ns per packet (bps: computed from the length) */
	__u64 burst_ns;  /* tolerance: the burst, in ns at the rate */
	__u64 block_ns;  /* block_for in ns, 0 for none */
	__u8 per_source; /* buckets keyed by source prefix (else one per rule) */
	__u8 grace_log2; /* a source's slot is kept 2^grace_log2 ns past its TAT */
	__u8 flags;      /* XG_RULE_* */
	__u8 pad[5];
};

/* xg_rule.flags */
#define XG_RULE_SYNCOOKIE (1U << 0) /* ingress allow: answer SYNs with SYN cookies */
#define XG_RULE_NOT_EST (1U << 1)   /* state: new: the rule never matches an established flow */
#define XG_RULE_NOT_NEW (1U << 2)   /* state: established: the rule never matches a new packet */

/* A block: rules g * XG_GROUP_RULES .. + 4095 of a bitmap (group g).  Bit
 * r of word r/64 is the group's rule r; summary bit w is set when word w is
 * non-zero, so the AND of the summaries names the only words worth looking
 * at. */
struct xg_bitmap {
	__u64 summary;
	__u64 w[XG_GROUP_WORDS];
};

/* A half's flat blocks in xg_pflat: block i is the half's bitmap i. */
struct xg_pflat_half {
	struct xg_bitmap blk[XG_PFLAT_CAP];
};
/* The same bytes as the map declares them: bcc compiles a reader and a
 * writer for every map's value, element by element, and 66,560 elements
 * cost it four seconds of LLVM per load; bytes are one string to it. */
struct xg_pflat_bytes {
	__u8 b[sizeof(struct xg_pflat_half)];
};

/* A rule bitmap: bit g of `groups` is set when group g has a rule in it,
 * and block[g] is then that group's block.  The AND of the `groups` of the
 * selected bitmaps names the only groups worth looking at. */
struct xg_top {
	__u32 groups;
	__u32 block[XG_MAX_GROUPS];
};

/* Bitmaps ANDed per packet: src, dst, proto, sport, dport, tcp flags,
 * icmp, and one "extra" (l4-free rules for later fragments, else the
 * established/new bitmap, else all ones). */
#define XG_NSEL 8

/* The bitmaps one packet selected: per field, the global index of a top
 * entry in the half's table.  Only scalars, because it is the argument of
 * the scan function, which the verifier checks on its own (the loader
 * gives the kernel this struct's size).  The caller keeps it, so that a
 * second scan starting after a rule needs no new field lookups. */
/* Dynamic sets: oridx[0] and oridx[1] name the bitmaps ORed into the src
 * and dst bitmaps (the combination of rules the packet's address adds), or
 * equal idx[0] and idx[1] when there is nothing to add. */
#define XG_NOR 2

struct xg_sel {
	__u32 idx[XG_NSEL];
	__u32 oridx[XG_NOR];
};

struct xg_scan_args {
	struct xg_sel sel;
	__u32 half;
	__u32 nwords;
	__u32 from; /* rules below this one do not count */
	__u32 ones; /* index of the all-ones bitmap: the fields that select it cost no lookup */
	__u32 pflat; /* 1: the flat blocks are read from xg_pflat (XG_CFG_PFLAT) */
	__u32 fixed; /* 1: the bitmap tables read are the fixed-size ones (XG_CFG_FIXED, XG_CFG_FIXFLAT) */
};

/* A rate-limit check done in the global function (see struct xg_call_args):
 * the rule entry's key, the packet's family and source, its length, now. */
struct xg_limit_args {
	__u32 rule_key; /* half * XG_MAX_RULES + bit */
	__u32 dir;
	__u64 len;
	__u32 family;
	__u32 pad;
	__u8 src[16];
};

/* The argument of the one global function the programs call (xg_scan_fn):
 * `op` says which job.  Work done there is verified once, on its own, and
 * its locals live in its own stack frame, not in the program's (the two
 * together may hold at most 512 bytes). */
#define XG_CALL_SCAN 0
#define XG_CALL_LIMIT 1

struct xg_call_args {
	__u32 op;
	__u32 pad;
	union {
		struct xg_scan_args scan;
		struct xg_limit_args limit;
	} u;
};

/* One group of a two-level scan, the argument of the group function: the
 * block of each selected bitmap in that group, the all-ones block, which
 * fields have a bitmap of their own (bit f), the first group-local rule. */
struct xg_group_args {
	__u32 block[XG_NSEL];
	__u32 orblock[XG_NOR]; /* the OR operands' blocks (see struct xg_sel) */
	__u32 ones;
	__u32 own;
	__u32 hasor; /* bit f: field f has an OR operand */
	__u32 pres;  /* bit f: field f's bitmap has a block in this group; bit 8 + f: its OR operand has */
	__u32 lo;
	__u32 half;
	__u32 fixed; /* as in struct xg_scan_args */
	__u32 pad;
};

struct xg_counter {
	__u64 packets;   /* every packet the rule matched */
	__u64 bytes;
	__u64 over;      /* of those, dropped over the rate limit */
	__u64 over_bytes;
};

/* Flow table (state: established): written by egress, read by ingress with
 * the tuple reversed.  "local" is this host's side.  Ports in host order;
 * for ICMP echo, lport is the echo identifier and rport 0.  IPv4 addresses
 * take the first 4 bytes of laddr/raddr, the rest is zero. */
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

/* Rate-limit state.  Nothing here is ever inserted by a packet: every
 * table is a fixed array, so a flood of new sources costs array reads and
 * compare-and-swaps, never an allocation or an LRU list operation.
 *
 * Per-rule buckets: one xg_bucket per counter slot (dir * XG_MAX_SLOTS +
 * slot), so a rule keeps its bucket exactly as long as its counters.
 *
 * Per-source buckets: `src_slots` is an array of 64-byte lines of
 * XG_SRC_WAYS exact slots; a source prefix hashes (keyed, per interface)
 * to one line and is told apart there by a 58-bit tag.  A slot is taken
 * over only when its owner has been idle (TAT in the past) for the grace
 * period its tag names, so a source that keeps within its limit never
 * loses its slot.  A source that finds neither its slot nor a free one is
 * counted in `src_sketch`, a count-min sketch of GCRA cells (XG_SKETCH_DEPTH
 * cells per source, the least of them is its TAT, all are raised on
 * admission): it can only over-estimate a source, so it never admits more
 * than the source's own bucket would.  See docs/design.md for the bounds. */
#define XG_LIMIT_DEFAULT_SIZE 65536
#define XG_LIMIT_TRIES 4 /* compare-and-swap attempts before calling it over */
/* A limit whose burst spans at least this many ns reads the coarse clock
 * (a fraction of the precise clock's cost; it lags by at most a tick, 4 ms
 * at HZ=250, 10 ms at HZ=100, so such a limit may turn away at most a
 * tick's worth of its burst); a shorter burst needs the precise clock. */
#define XG_COARSE_MIN_BURST_NS 50000000ULL
#define XG_SRC_WAYS 4
#define XG_SRC_LINES(size) (((size) + XG_SRC_WAYS - 1) / XG_SRC_WAYS)
#define XG_SKETCH_DEPTH 2
#define XG_TAG_GRACE_BITS 6 /* low bits of a slot's tag: log2 of its grace period */
#define XG_SLOT_CLAIMING 0xffffffffffffffffULL /* a slot's TAT while it changes owner */
/* Which sources may have debt in the sketch: `src_debt` holds, per group of
 * lines (line index modulo XG_SRC_DEBT_CELLS), the time (ns, rounded up to
 * a step so that a flood rarely writes it) until which a source of those
 * lines counted in the sketch may still owe.  Only such a source can have
 * debt of its own there (it went to the sketch because its line was full),
 * so a source taking a slot reads its two sketch cells only when its cell
 * says so: in a flood that spares most new sources two cache misses.
 * 8 KiB, so it stays in cache. */
#define XG_SKETCH_UNTIL_STEP (1ULL << 24)
#define XG_SRC_DEBT_CELLS 1024

struct xg_bucket {
	__u64 tat; /* theoretical arrival time, ns */
};

struct xg_src_slot {
	__u64 tag; /* 0: never used; else hash tag | grace_log2 */
	__u64 tat;
};

struct xg_src_line {
	struct xg_src_slot slot[XG_SRC_WAYS];
};

/* One per interface (map `limiter`).  The hash key is random, written once
 * at the first attach, so nobody outside can aim sources at one line. */
struct xg_limiter {
	__u64 key[2];
	__u64 pad[14]; /* was sketch_until and its cache line; the size stays for pinned maps */
};

/* Sources blocked by block_for, until a CLOCK_MONOTONIC time.  An IPv4
 * source is its address, an IPv6 source its /64 (the rest is zero): the
 * host that owns a /64 can use any address in it.  In front of the exact
 * LRU table, `block_filter` holds per hash cell the latest expiry of any
 * block in that cell, so the check every ingress packet makes is one read
 * of a small array (8 KiB, so it stays in cache; with B blocks in force,
 * about B / 1024 of the packets go on to the exact table). */
#define XG_BLOCK_V6_PLEN 64
#define XG_BLOCK_FILTER_CELLS 1024

struct xg_block_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

struct xg_block {
	__u64 until_ns;
	__u64 rule_id; /* the limit that was exceeded */
};

/* Dynamic sets: elements added and removed at run time (`xdpguard set`),
 * outside the double-buffered rule set, so a change applies to the next
 * packet.  Each set is a hash per family for exact addresses (the key is
 * the address in network order) and an LPM trie per family for prefixes,
 * pinned under the set's name.  A half's slots in the dyn4/dyn6/dynp4/
 * dynp6 outer maps (XG_DYN_SLOT) point at the sets its plan declares, in
 * the plan's order.  Rules that refer to dynamic sets in one address field
 * form groups (the rules referring to the same sets share one); a packet's
 * address sets the bit of each group whose set holds it, and the bitmap
 * precompiled for that mask is ORed into the field's bitmap. */
#define XG_MAX_DYNSETS 16   /* dynamic sets per rule file (slots per half) */
#define XG_MAX_DYNREFS 16   /* references to sets per direction and address field */
#define XG_MAX_DYNGROUPS 8  /* groups per direction and address field */
#define XG_DYN_SLOTS (XG_NHALVES * XG_MAX_DYNSETS)
#define XG_DYN_SLOT(half, k) ((half) * XG_MAX_DYNSETS + (k))

/* In front of the sets' tables, one filter per interface (map dynf):
 * 2^XG_DYNF_LOG2_BITS bits, a bit per hash of a set's salt (from its name,
 * the same in both halves) and an address's XG_DYNF_V4_PLEN or
 * XG_DYNF_V6_PLEN prefix with its family.  User space sets the bits of an
 * element before it adds the element (a prefix sets those of every such
 * prefix it covers, or all bits when it covers too many), and writes the
 * filter whole before new programs read a new map; so a clear bit proves
 * the set holds nothing that matches, and most non-members cost one word
 * of a plain array (inlined) instead of a hash and a trie lookup.  Bits of
 * removed and expired elements stay until the filter is rebuilt: they
 * only cost the lookups they would have saved. */
#define XG_DYNF_LOG2_BITS 24
#define XG_DYNF_WORDS (1U << (XG_DYNF_LOG2_BITS - 6))
#define XG_DYNF_V4_PLEN 24
#define XG_DYNF_V6_PLEN 48
#define XG_DYNF_FAMILY_SHIFT 56 /* the family (4 or 6) above the prefix in the hashed key */

/* The value of every element: when it stops counting as a member. */
struct xg_dyn_elem {
	__u64 expires_ns; /* CLOCK_MONOTONIC (the test clock in test builds); 0: never */
};

struct xg_dyn_key6 {
	__u8 addr[16];
};

struct xg_lpm_key4 {
	__u32 plen;
	__u8 addr[4];
};

struct xg_lpm_key6 {
	__u32 plen;
	__u8 addr[16];
};

struct xg_dynref {
	__u8 field; /* XG_F_SRC or XG_F_DST */
	__u8 slot;  /* the set's slot in the half: XG_DYN_SLOT(half, slot) */
	__u8 group; /* bit of the membership mask */
	__u8 pad[5];
	__u64 salt; /* the set's salt in the filter (see XG_DYNF_LOG2_BITS) */
};

/* Per half (array dyncfg, read only when the config has XG_CFG_HAS_DYN).
 * For an address field f that rules refer to sets in, the bitmap of
 * membership mask m is base[f] + m (mask 0's is all zeros, so a packet in
 * no set needs no branch). */
struct xg_dyncfg {
	__u32 nrefs[2]; /* per address field: src, dst */
	__u32 base[2];
	struct xg_dynref ref[2][XG_MAX_DYNREFS];
};

/* Sampled drop events, through a ring buffer (xdpguard events). */
#define XG_EVENTS_BYTES (256 * 1024)
#define XG_EVENTS_DEFAULT_SAMPLE 1      /* one drop in N becomes an event: every one */
#define XG_EVENTS_DEFAULT_MAX_RATE 1000 /* events per second per CPU, at most */
#define XG_EVENT_CLOCK_EVERY 64         /* past the cap, drops per look at the clock (see lib/event.h) */

enum xg_event_reason {
	XG_EV_RULE = 1,      /* a drop rule matched */
	XG_EV_LIMIT = 2,     /* over a rate limit */
	XG_EV_DEFAULT = 3,   /* the direction's default: drop */
	XG_EV_MALFORMED = 4,
	XG_EV_NON_IP = 5,
	XG_EV_BLOCKED = 6,   /* source blocked by block_for */
	XG_EV_SYNCOOKIE = 7, /* an ACK with a bad SYN cookie, for no connection */
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

/* SYN cookies (syn_cookies: true), see bpf/syncookie.c.  Per-rule
 * counters in their own per-CPU array (pin syn_counters), indexed by the
 * rule's ingress counter slot.  The cookie secret (a SipHash key) is made
 * by the loader from the system's random source and kept in a pinned
 * array (syn_secret) that only root can open. */
struct xg_syn_counter {
	__u64 sent;        /* SYNs answered with a cookie SYN-ACK */
	__u64 valid;       /* ACKs whose cookie checked out */
	__u64 invalid;     /* ACKs with a bad cookie for no connection: dropped */
	__u64 handoff_err; /* valid, but the listener could not take the connection */
};

struct xg_syn_secret {
	__u64 k0;
	__u64 k1;
};

/* What the ingress program tells the tail-called SYN-cookie program. */
struct xg_syn_scratch {
	__u64 rule_id;
	__u32 slot;
	__u32 pad;
};

#endif /* XDPGUARD_H */
