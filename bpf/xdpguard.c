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
#include "lib/event.h"
#include "lib/flow.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/syncookie.h"
#include "tc/egress.h"
#include "xdp/ingress.h"

/* The coarse clock's last value on this CPU, and the jiffies it was read
 * at (see xg_now_tick). */
struct xg_tick {
	__u64 ns;
	__u64 jiffies;
};

/* Per direction and CPU: the parsed packet and the arguments of the global
 * functions (xg_scan_fn and the group scan it calls).  The program and the
 * functions it calls share 512 bytes of stack, so these live here.  XDP and
 * tc programs do not preempt each other on a CPU, and each direction has
 * its own entry.  Scratch only, not pinned. */
struct xg_callbuf {
	struct xg_pkt pkt; /* first: code that holds the packet reaches the rest (xg_pkt_now) */
	struct xg_sel sel; /* what the packet selected, for a scan from a later rule */
	struct xg_call_args call;
	struct xg_group_args group;
	struct xg_tick tick; /* kept across packets: only pkt is cleared for each */
};
BPF_PERCPU_ARRAY(xg_callbuf, struct xg_callbuf, XG_NDIRS);
_Static_assert(__builtin_offsetof(struct xg_callbuf, pkt) == 0, "xg_pkt_now finds the scratch from the packet");


/* What a packet gets, independent of the hook's return codes. */
enum xg_verdict {
	XG_PASS = 0,
	XG_DROP = 1,
	XG_SYNCOOKIE = 2, /* ingress: allowed, and the rule's SYN cookies take it from here */
};

/* Count a packet in the counter at *key (direction x XG_MAX_SLOTS + slot).
 * The key is the caller's: a caller short of stack can lend one it has. */
static __always_inline void xg_count_at(__u32 *key, __u64 bytes, int over)
{
	struct xg_counter *c = xg_counters.lookup(key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
		if (over) {
			c->over++;
			c->over_bytes += bytes;
		}
	}
}

static __always_inline void xg_count2(__u32 dir, __u32 slot, __u64 bytes, int over)
{
	__u32 k = dir * XG_MAX_SLOTS + slot;

	xg_count_at(&k, bytes, over);
}

static __always_inline void xg_count(__u32 dir, __u32 slot, __u64 bytes)
{
	xg_count2(dir, slot, bytes, 0);
}

/* The test clock, when a test build has set it through the map; else 0. */
static __always_inline __u64 xg_test_now(void)
{
#ifdef XG_TEST_CLOCK
	__u32 zero = 0;
	__u64 *c = xg_clock.lookup(&zero);

	if (c)
		return *c;
#endif
	return 0;
}

/* CLOCK_MONOTONIC ns; test builds can set it through a map.  For the rate
 * limiter, whose cells advance by a packet's cost (a microsecond at 10^6
 * packets a second). */
static __always_inline __u64 xg_now(void)
{
	__u64 t = xg_test_now();

	return t ? t : bpf_ktime_get_ns();
}

/* The same clock at tick resolution (it lags by at most a tick, a few ms),
 * for what is timed in seconds: flow timeouts, set-element and block
 * expiry, limits with a long burst.  The precise clock's read in a guest
 * is a serialised TSC read, ~25 ns a packet on our machines; this helper's
 * calls and returns cost ~20 ns there too (each return goes through a
 * mitigation thunk on these CPUs), which is why the paths that read it for
 * every packet (flows, blocks, rate limits) use xg_now_tick. */
static __always_inline __u64 xg_now_coarse(void)
{
	__u64 t = xg_test_now();

	return t ? t : bpf_ktime_get_coarse_ns();
}

/* xg_now_coarse at the cost of a load: the coarse clock only moves at a
 * tick, when jiffies do, and jiffies are one load (the verifier inlines
 * bpf_jiffies64).  So the scratch of each CPU and direction keeps the
 * clock's value with the jiffies it was read at, and the helper is called
 * only once jiffies have moved.  A tick raises jiffies just before it
 * moves the clock: a value that has not moved yet is not kept, and the
 * next read asks again, so this never lags more than the helper does. */
static __always_inline __u64 xg_now_tick(struct xg_tick *c)
{
	__u64 t = xg_test_now();

	if (t)
		return t;
	__u64 j = bpf_jiffies64();

	if (c->jiffies == j)
		return c->ns;
	t = bpf_ktime_get_coarse_ns();
	if (t != c->ns) {
		c->ns = t;
		c->jiffies = j;
	}
	return t;
}

/* The same, for code that holds the packet: p is the scratch's first
 * member, and the scratch is where the clock is kept. */
static __always_inline __u64 xg_pkt_now(const struct xg_pkt *p)
{
	return xg_now_tick(&((struct xg_callbuf *)p)->tick);
}

/* ---- rate limits: fixed arrays only (see "Rate-limit state" in the header) ---- */

#define XG_READ(x) (*(volatile __typeof__(x) *)&(x))
#define XG_WRITE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

/* What one try at a bucket found. */
enum xg_limit_res {
	XG_OVER = 0,
	XG_WITHIN = 1,
	XG_SLOT_LOST = 2, /* the slot changed owner under us: look again */
};

/* Two multiply-xorshift rounds: every input bit reaches every output bit,
 * so the line, the tag and the sketch cells drawn from one hash behave as
 * independent. */
static __always_inline __u64 xg_mix(__u64 x)
{
	x ^= x >> 32;
	x *= 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	x *= 0xd6e8feb86659fd93ULL;
	x ^= x >> 32;
	return x;
}

/* A 32-bit hash onto 0..n-1 by multiply and shift (no division, no modulo bias to speak of). */
static __always_inline __u32 xg_reduce(__u64 h32, __u64 n)
{
	return (__u32)(((h32 & 0xffffffffULL) * n) >> 32);
}

/* A packet's source prefix of `plen` bits as two host-order words (an IPv4
 * address in the high half of hi), the bits past plen zero: the identity
 * of its bucket. */
static __always_inline void xg_src_words(const __u8 *src, __u32 plen, __u64 *hi, __u64 *lo)
{
	__u64 a, b;

	__builtin_memcpy(&a, src, 8);
	__builtin_memcpy(&b, src + 8, 8);
	a = __builtin_bswap64(a);
	b = __builtin_bswap64(b);
	*hi = plen >= 64 ? a : plen ? a & (~0ULL << (64 - plen)) : 0;
	*lo = plen >= 128 ? b : plen > 64 ? b & (~0ULL << (128 - plen)) : 0;
}

/* The least TAT the sketch holds for a source: never below its true TAT. */
static __always_inline __u64 xg_sketch_tat(struct xg_bucket *c1, struct xg_bucket *c2)
{
	__u64 a = XG_READ(c1->tat), b = XG_READ(c2->tat);

	return a < b ? a : b;
}

/* Branch-free tests, as in xg_addr_lookup: clang would turn a compare into
 * a branch, and every branch doubles the paths the verifier walks. */
static __always_inline __u64 xg_is_zero(__u64 x)
{
	__u64 neg = -x;

	/* hide that neg is -x, or clang sees (x | -x) >> 63 as x != 0 */
	asm volatile("" : "+r"(neg));
	return ((x | neg) >> 63) ^ 1;
}

static __always_inline __u64 xg_below(__u64 a, __u64 b) /* a < b, unsigned: the borrow of a - b */
{
	__u64 diff = a - b;

	asm volatile("" : "+r"(diff));
	return ((~a & b) | (~(a ^ b) & diff)) >> 63;
}

/* What a packet costs in ns of allowance: q, plus one more with
 * probability rem / rate.  For bps, len * 8e9 / rate rarely divides, and
 * truncating would bias the rate up (by 0.4 % for 64-byte frames at 10
 * Gbit/s); rounding up at random makes the long-run rate exact.  The draw
 * comes from the bucket's TAT, not from a fresh random number: a packet
 * over the limit and the next one then see the same draw, so a source
 * cannot retry its way to the cheaper rounding. */
static __always_inline __u64 xg_cost_at(const struct xg_rule *r, __u64 q, __u64 rem, __u64 tat)
{
	__u64 u = xg_mix(tat) & 0xffffffffULL;
	/* rate * u / 2^32 in two halves: neither product overflows */
	__u64 thr = (r->rate >> 32) * u + (((r->rate & 0xffffffffULL) * u) >> 32);

	return q + xg_below(thr, rem);
}

/* Raise a TAT word to at least v (never lowers it, whoever writes at once). */
static __always_inline void xg_raise(__u64 *w, __u64 v)
{
#pragma unroll
	for (int i = 0; i < XG_LIMIT_TRIES; i++) {
		__u64 old = XG_READ(*w);

		if (old >= v || __sync_val_compare_and_swap(w, old, v) == old)
			return;
	}
}

/* GCRA on one bucket, lock-free: every CPU draws from the same allowance
 * and none waits for another; a lost race re-reads and tries again. */
static __always_inline int xg_gcra(__u64 *tat, __u64 now, const struct xg_rule *r, __u64 q, __u64 rem)
{
#pragma unroll
	for (int i = 0; i < XG_LIMIT_TRIES; i++) {
		__u64 old = XG_READ(*tat);
		__u64 next = (old > now ? old : now) + xg_cost_at(r, q, rem, old);

		if (next - now > r->burst_ns)
			return XG_OVER;
		if (__sync_val_compare_and_swap(tat, old, next) == old)
			return XG_WITHIN;
	}
	return XG_OVER;
}

/* GCRA on a source's own slot.  The TAT is read before the tag is checked
 * again: whoever takes a slot over first parks its TAT at XG_SLOT_CLAIMING,
 * then writes its tag, then its TAT, so a TAT that belongs to someone else
 * is seen together with their tag.  (That needs stores, and loads, to stay
 * in program order, as x86 keeps them; the volatile accesses keep the
 * compiler from reordering them.) */
static __always_inline int xg_slot_gcra(struct xg_src_slot *s, __u64 tag, __u64 now, const struct xg_rule *r,
					__u64 q, __u64 rem)
{
#pragma unroll
	for (int i = 0; i < XG_LIMIT_TRIES; i++) {
		__u64 old = XG_READ(s->tat);

		if (old == XG_SLOT_CLAIMING || ((XG_READ(s->tag) ^ tag) >> XG_TAG_GRACE_BITS))
			return XG_SLOT_LOST;
		__u64 next = (old > now ? old : now) + xg_cost_at(r, q, rem, old);

		if (next - now > r->burst_ns)
			return XG_OVER;
		if (__sync_val_compare_and_swap(&s->tat, old, next) == old)
			return XG_WITHIN;
	}
	return XG_OVER;
}

/* May a slot with this tag and TAT be taken over at `now`?  Never used, or
 * its owner idle (TAT in the past) for at least the grace its tag names. */
static __always_inline __u64 xg_slot_free(__u64 tag, __u64 tat, __u64 now)
{
	__u64 grace = 1ULL << (tag & ((1U << XG_TAG_GRACE_BITS) - 1));

	return xg_is_zero(tag) | ((xg_below(now, tat) | xg_below(now - tat, grace)) ^ 1);
}

/* Per-source (and per-prefix) limits.  The source's slot in its line if it
 * has one; else a slot whose owner has been idle past its grace (nothing
 * is lost: an idle owner's bucket is full, the same as a new one); else the
 * count-min sketch, which may over-count a source that shares both its
 * cells with busy ones but never under-counts anyone. */
static __always_inline int xg_src_within(const struct xg_rule *r, const struct xg_limit_args *p, __u64 q, __u64 rem,
					 __u64 now, __u32 dir, __u64 len)
{
	__u32 zero = 0;
	struct xg_limiter *lk = xg_limiter.lookup(&zero);

	if (!lk)
		return XG_OVER;
	__u32 plen = p->family == 4 ? r->plen4 : r->plen6;
	__u64 hi, lo;

	xg_src_words(p->src, plen, &hi, &lo);
	__u64 h = xg_mix(lk->key[0] ^ r->rule_id);
	h = xg_mix(h ^ hi);
	h = xg_mix(h ^ lo ^ lk->key[1] ^ ((__u64)p->family << 8 | plen));
	__u64 tag = xg_mix(h ^ lk->key[0]);
	tag = ((tag | (1ULL << XG_TAG_GRACE_BITS)) & ~((1ULL << XG_TAG_GRACE_BITS) - 1)) |
	      (r->grace_log2 & ((1U << XG_TAG_GRACE_BITS) - 1));

	__u32 li = xg_reduce(h >> 32, XG_SRC_LINES(XG_LIMIT_SIZE));
	__u32 di = li & (XG_SRC_DEBT_CELLS - 1);
	struct xg_src_line *line = xg_src_slots.lookup(&li);
	__u64 *debt = xg_src_debt.lookup(&di);
	if (!line || !debt)
		return XG_OVER;
	__u64 burst = r->burst_ns;
	__u32 mine = XG_SRC_WAYS, spare = XG_SRC_WAYS;

	/* The source's own slot first: for a known source nothing else is read. */
#pragma clang loop unroll(disable)
	for (__u32 w = 0; w < XG_SRC_WAYS; w++) {
		if (!((XG_READ(line->slot[w].tag) ^ tag) >> XG_TAG_GRACE_BITS)) {
			mine = w;
			break;
		}
	}
	if (mine < XG_SRC_WAYS) {
		int res = xg_slot_gcra(&line->slot[mine & (XG_SRC_WAYS - 1)], tag, now, r, q, rem);

		if (res != XG_SLOT_LOST)
			return res;
	}
	/* Else the first slot that is free.  One at a time, stopping at the
	 * first: in a flood of new sources the first slot nearly always is,
	 * and judging all four first cost a new source 10-30 ns more. */
#pragma clang loop unroll(disable)
	for (int w = 0; w < XG_SRC_WAYS; w++) {
		if (xg_slot_free(XG_READ(line->slot[w].tag), XG_READ(line->slot[w].tat), now)) {
			spare = w;
			break;
		}
	}
	__u32 i1 = xg_reduce(h, XG_LIMIT_SIZE), i2 = xg_reduce(tag >> 32, XG_LIMIT_SIZE);
	struct xg_bucket *c1 = xg_src_sketch.lookup(&i1);
	struct xg_bucket *c2 = xg_src_sketch.lookup(&i2);
	if (!c1 || !c2)
		return XG_OVER;

	if (spare < XG_SRC_WAYS) {
		struct xg_src_slot *s = &line->slot[spare & (XG_SRC_WAYS - 1)];
		__u64 idle = XG_READ(s->tat);

		/* Still free (read again: the scan is a moment old), and ours if the
		 * compare-and-swap wins; the sketch decides otherwise. */
		if (xg_slot_free(XG_READ(s->tag), idle, now) &&
		    __sync_val_compare_and_swap(&s->tat, idle, XG_SLOT_CLAIMING) == idle) {
			/* Debt of its own in the sketch, if its lines sent anyone
			 * there lately (else its cells hold only others' debt). */
			__u64 base = now < XG_READ(*debt) ? xg_sketch_tat(c1, c2) : 0;

			base = base > now ? base : now;
			__u64 next = base + xg_cost_at(r, q, rem, base);
			int ok = next - now <= burst;

			XG_WRITE(s->tag, tag);
			XG_WRITE(s->tat, ok ? next : base);
			return ok ? XG_WITHIN : XG_OVER;
		}
	}

	/* No slot: the sketch decides, on its lesser cell, and raises both.
	 * Counted: a packet here means the table was full for its source
	 * (`xdpguard stats`: limiter.overflow).  The counter's key reuses
	 * i1's stack slot: the program and its functions share 512 bytes. */
	i1 = dir * XG_MAX_SLOTS + XG_SLOT_LIMIT_SKETCH;
	xg_count_at(&i1, len, 0);
#pragma clang loop unroll(disable)
	for (int i = 0; i < XG_LIMIT_TRIES; i++) {
		__u64 a = XG_READ(c1->tat), b = XG_READ(c2->tat);
		struct xg_bucket *low = a <= b ? c1 : c2, *high = a <= b ? c2 : c1;
		__u64 old = a <= b ? a : b;
		__u64 next = (old > now ? old : now) + xg_cost_at(r, q, rem, old);

		if (next - now > burst)
			return XG_OVER;
		/* Mark the lines' debt cell first (a slot taken meanwhile must not
		 * miss the debt), rounded up to a step so that a flood rarely
		 * writes it. */
		xg_raise(debt, (next + XG_SKETCH_UNTIL_STEP) & ~(XG_SKETCH_UNTIL_STEP - 1));
		if (__sync_val_compare_and_swap(&low->tat, old, next) == old) {
			xg_raise(&high->tat, next);
			return XG_WITHIN;
		}
	}
	return XG_OVER;
}

static __always_inline int xg_within_limit(const struct xg_rule *r, const struct xg_limit_args *p, __u32 dir, __u64 len,
					   __u64 now)
{
	__u64 q = r->cost_ns, rem = 0;

	if (r->limit == XG_LIMIT_BPS && r->rate) {
		/* No overflow: a frame or skb is far below 2^31 bytes, so this
		 * stays under 2^64; the parser keeps rate <= 10^15. */
		__u64 num = len * 8 * XG_NSEC_PER_SEC;

		q = num / r->rate;
		rem = num - q * r->rate;
	}
	if (r->per_source)
		return xg_src_within(r, p, q, rem, now, dir, len) == XG_WITHIN;
	__u32 k = dir * XG_MAX_SLOTS + r->slot;
	struct xg_bucket *b = xg_rule_tat.lookup(&k);

	return b && xg_gcra(&b->tat, now, r, q, rem) == XG_WITHIN;
}

/* The blocked-sources key of a packet: IPv4 address or IPv6 /64 (an IPv4
 * source fills only the first 4 of these bytes, the parser zeroes the rest). */
static __always_inline void xg_block_key_of(__u32 family, const __u8 *src, struct xg_block_key *k)
{
	k->family = family;
	__builtin_memcpy(k->addr, src, XG_BLOCK_V6_PLEN / 8);
}

static __always_inline __u64 *xg_block_cell(const struct xg_block_key *k)
{
	__u32 zero = 0;
	struct xg_limiter *lk = xg_limiter.lookup(&zero);
	__u64 a;

	if (!lk)
		return 0;
	__builtin_memcpy(&a, k->addr, 8);
	__u32 idx = xg_mix(lk->key[1] ^ a ^ k->family) & (XG_BLOCK_FILTER_CELLS - 1);

	return xg_block_filter.lookup(&idx);
}

/* Every ingress packet asks this while a rule uses block_for: one read of
 * the filter answers for nearly all of them (not even the clock is read
 * for an empty cell), the exact table only when a block may be in force
 * in the packet's cell.  A cell whose blocks have all expired is emptied
 * by the first packet that finds it so. */
static __always_inline int xg_blocked_now(const struct xg_pkt *p)
{
	struct xg_block_key k = {};

	xg_block_key_of(p->family, p->src, &k);
	__u64 *cell = xg_block_cell(&k);
	__u64 until = cell ? XG_READ(*cell) : 1;

	if (!until)
		return 0;
	__u64 now = xg_pkt_now(p); /* a block may outlast its time by a tick */

	if (cell && now >= until) {
		__sync_val_compare_and_swap(cell, until, 0); /* lost to a new block: it stays */
		return 0;
	}
	struct xg_block *b = xg_blocked.lookup(&k);
	if (!b)
		return 0;
	if (now < b->until_ns)
		return 1;
	xg_blocked.delete(&k);
	return 0;
}

static __always_inline void xg_block_source(const struct xg_limit_args *p, const struct xg_rule *r, __u64 now)
{
	struct xg_block_key k = {};
	struct xg_block v = { .until_ns = now + r->block_ns, .rule_id = r->rule_id };

	xg_block_key_of(p->family, p->src, &k);
	xg_blocked.update(&k, &v);
	/* After the entry: a reader that sees the raised cell finds the entry. */
	__u64 *cell = xg_block_cell(&k);
	if (cell)
		xg_raise(cell, v.until_ns);
}

/* The rate-limit check of a matched rule, run in the global function
 * (xg_scan_fn, op XG_CALL_LIMIT): the limiter's many live values then
 * spill into that function's stack frame, not the program's.  1 within the
 * limit; 0 over it, and then a `block_for` rule has blocked the source. */
static __always_inline int xg_limit(struct xg_limit_args *a)
{
	__u32 k = a->rule_key;
	struct xg_rule *r = xg_rules.lookup(&k);

	if (!r)
		return 0;
	/* The coarse clock lags by at most a tick: that can only make a limit
	 * stricter, by at most a tick's worth of its burst, and only a burst
	 * of many ticks makes that negligible (see XG_COARSE_MIN_BURST_NS). */
	__u32 cbkey = a->dir & 1;
	struct xg_callbuf *cb = xg_callbuf.lookup(&cbkey);

	if (!cb)
		return 0;
	__u64 now = r->burst_ns >= XG_COARSE_MIN_BURST_NS ? xg_now_tick(&cb->tick) : xg_now();

	if (xg_within_limit(r, a, a->dir, a->len, now))
		return 1;
	if (r->block_ns && a->dir == XG_DIR_INGRESS)
		xg_block_source(a, r, now);
	return 0;
}

__attribute__((__noinline__)) int xg_scan_fn(struct xg_call_args *a);
static int xg_call(struct xg_call_args *a) __attribute__((alias("xg_scan_fn")));

static __always_inline int xg_limit_call(const struct xg_pkt *p, __u32 rule_key, __u32 dir, __u64 len)
{
	__u32 key = dir & 1;
	struct xg_callbuf *cb = xg_callbuf.lookup(&key);

	if (!cb)
		return 0;
	cb->call.op = XG_CALL_LIMIT;
	cb->call.u.limit.rule_key = rule_key;
	cb->call.u.limit.dir = dir;
	cb->call.u.limit.len = len;
	cb->call.u.limit.family = p->family;
	__builtin_memcpy(cb->call.u.limit.src, p->src, 16);
	return xg_call(&cb->call) == 1;
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
__attribute__((__noinline__)) int xg_group_fn(struct xg_group_args *a);
static int xg_group_call(struct xg_group_args *a) __attribute__((alias("xg_group_fn")));

/* Block k of a half's xg_pflat value, or 0 when k is outside it.  The mask
 * after the empty asm bounds the offset for the verifier: clang would
 * otherwise compute it before the test, from the unbounded k. */
static __always_inline const struct xg_bitmap *xg_pflat_block(const struct xg_pflat_half *ph, __u32 k)
{
	if (k >= XG_PFLAT_CAP)
		return 0;
	asm volatile("" : "+r"(k));
	return &ph->blk[k & (XG_PFLAT_CAP - 1)];
}

/* The scan: the first rule at or after a->from that every selected bitmap
 * holds, XG_RULE_NONE, or XG_RULE_ERROR (a table entry missing).  Groups
 * are visited lowest first; in each, only the words the blocks' summaries
 * allow.  See xg_scan_ingress for how it is called. */
static __always_inline int xg_scan_groups(struct xg_scan_args *a, __u32 ngroups, const int fix);
static __always_inline int xg_scan_flat(struct xg_scan_args *a, __u32 from, __u32 kones, const int fix);

static __always_inline int xg_scan(struct xg_scan_args *a)
{
	if (!a)
		return XG_RULE_ERROR;
	__u32 from = a->from;
	__u32 kones = a->ones;
	__u32 ngroups = (a->nwords + XG_GROUP_WORDS - 1) / XG_GROUP_WORDS;

	if (from >= XG_MAX_RULES || ngroups > XG_MAX_GROUPS)
		return XG_RULE_NONE;
	/* The fields a packet does not test select the all-ones bitmap: it is
	 * looked up once.  (These branches come before any loop, where they
	 * cost the verifier nothing: inside the group loop they would.) */
	if (ngroups <= 1) {
		/* At most 4,096 rules: each bitmap is one block of the flat table
		 * (of the fixed size, or sized to the plan), or of the half's
		 * xg_pflat value when its blocks are there too.  Two copies, as
		 * below. */
		if (a->fixed)
			return xg_scan_flat(a, from, kones, 1);
		return xg_scan_flat(a, from, kones, 0);
	}
	/* Two copies of the rest, one per kind of table: a lookup whose map
	 * could be either is one the verifier can inline for neither. */
	if (a->fixed)
		return xg_scan_groups(a, ngroups, 1);
	return xg_scan_groups(a, ngroups, 0);
}

/* The one-group part of xg_scan. */
static __always_inline int xg_scan_flat(struct xg_scan_args *a, __u32 from, __u32 kones, const int fix)
{
	__u32 half = a->half;
	const struct xg_pflat_half *ph = (!fix && a->pflat) ? (const void *)xg_pflat.lookup(&half) : 0;
	void *flat = ph ? 0 : fix ? xg_flat_f.lookup(&half) : xg_flat.lookup(&half);
	const struct xg_bitmap *b[XG_NSEL];

	if (!ph && !flat)
		return XG_RULE_ERROR;
	const struct xg_bitmap *o[XG_NOR];
	const struct xg_bitmap *bones = ph ? xg_pflat_block(ph, kones) : bpf_map_lookup_elem(flat, &kones);
	if (!bones)
		return XG_RULE_ERROR;
#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		__u32 k = a->sel.idx[f];

		b[f] = bones;
		if (f < XG_NOR)
			o[f & 1] = bones;
		if (k == kones)
			continue;
		b[f] = ph ? xg_pflat_block(ph, k) : bpf_map_lookup_elem(flat, &k);
		if (!b[f])
			return XG_RULE_ERROR;
		if (f < XG_NOR) {
			__u32 ko = a->sel.oridx[f & 1];

			o[f & 1] = b[f];
			if (ko != k) {
				o[f & 1] = ph ? xg_pflat_block(ph, ko) : bpf_map_lookup_elem(flat, &ko);
				if (!o[f & 1])
					return XG_RULE_ERROR;
			}
		}
	}
	if (from >= XG_GROUP_RULES)
		return XG_RULE_NONE;
	return xg_block_first(b, o, from);
}

/* The two-level part of xg_scan, reading the top entries from the
 * fixed-size tables (fix = 1, XG_CFG_FIXED) or the sized ones. */
static __always_inline int xg_scan_groups(struct xg_scan_args *a, __u32 ngroups, const int fix)
{
	__u32 half = a->half;
	__u32 from = a->from;
	__u32 kones = a->ones;
	void *tops = fix ? xg_tops_f.lookup(&half) : xg_tops.lookup(&half);
	void *blocks = fix ? xg_bitmaps_f.lookup(&half) : xg_bitmaps.lookup(&half);
	const struct xg_top *t[XG_NSEL];
	const struct xg_top *ot[XG_NOR];

	if (!tops || !blocks)
		return XG_RULE_ERROR;
	const struct xg_top *tones = bpf_map_lookup_elem(tops, &kones);
	if (!tones)
		return XG_RULE_ERROR;
	__u64 groups = ((1ULL << ngroups) - 1) & (~0ULL << (from / XG_GROUP_RULES)) & tones->groups;
	/* The group function's argument lives in the per-CPU scratch, not on
	 * the stack (see struct xg_callbuf). */
	__u32 cbkey = (half / XG_NVERSIONS) & 1;
	struct xg_callbuf *cb = xg_callbuf.lookup(&cbkey);

	if (!cb)
		return XG_RULE_ERROR;
	struct xg_group_args *ga = &cb->group;

	ga->half = half;
	ga->fixed = fix;
	ga->own = 0;
	ga->hasor = 0;

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		__u32 k = a->sel.idx[f];

		t[f] = tones;
		if (f < XG_NOR)
			ot[f & 1] = tones;
		if (k == kones)
			continue;
		ga->own |= 1U << f;
		t[f] = bpf_map_lookup_elem(tops, &k);
		if (!t[f])
			return XG_RULE_ERROR;
		__u32 gw = t[f]->groups;

		if (f < XG_NOR) {
			__u32 ko = a->sel.oridx[f & 1];

			ot[f & 1] = t[f];
			if (ko != k) {
				/* A dynamic-set combination ORed in: its groups count too. */
				ot[f & 1] = bpf_map_lookup_elem(tops, &ko);
				if (!ot[f & 1])
					return XG_RULE_ERROR;
				ga->hasor |= 1U << f;
				gw |= ot[f & 1]->groups;
			}
		}
		groups &= gw;
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
			ga->block[f] = t[f]->block[g];
		/* Which of the ORed pair has a block here, computed without a
		 * branch (a branch in this loop multiplies the verifier's work). */
		ga->pres = 0;
#pragma unroll
		for (int f = 0; f < XG_NOR; f++) {
			ga->orblock[f] = ot[f]->block[g];
			ga->pres |= ((t[f]->groups >> g) & 1) << f | ((ot[f]->groups >> g) & 1) << (8 + f);
		}
		ga->ones = tones->block[g];
		ga->lo = from > base ? from - base : 0;
		int r = xg_group_call(ga);

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
static __always_inline int xg_group(struct xg_group_args *a, const int fix)
{
	__u32 half = a->half;
	__u32 kones = a->ones;
	__u32 own = a->own;
	void *blocks = fix ? xg_bitmaps_f.lookup(&half) : xg_bitmaps.lookup(&half);
	const struct xg_bitmap *b[XG_NSEL];

	if (!blocks)
		return XG_RULE_ERROR;
	const struct xg_bitmap *o[XG_NOR];
	const struct xg_bitmap *bones = bpf_map_lookup_elem(blocks, &kones);
	if (!bones)
		return XG_RULE_ERROR;
#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		__u32 k = a->block[f];

		b[f] = bones;
		if (f < XG_NOR)
			o[f & 1] = bones;
		if (!(own & (1U << f)))
			continue;
		if (f < XG_NOR && (a->hasor & (1U << f))) {
			/* A field with a dynamic-set combination ORed in: either of
			 * the pair may lack a block in this group (it is empty there);
			 * the other then stands in for it (x | x = x). */
			__u32 ko = a->orblock[f & 1];
			const struct xg_bitmap *x = 0, *y = 0;

			if (a->pres & (1U << f)) {
				x = bpf_map_lookup_elem(blocks, &k);
				if (!x)
					return XG_RULE_ERROR;
			}
			if (a->pres & (1U << (8 + f))) {
				y = bpf_map_lookup_elem(blocks, &ko);
				if (!y)
					return XG_RULE_ERROR;
			}
			if (!x)
				x = y;
			if (!y)
				y = x;
			if (!x)
				return -1;
			b[f] = x;
			o[f & 1] = y;
			continue;
		}
		b[f] = bpf_map_lookup_elem(blocks, &k);
		if (!b[f])
			return XG_RULE_ERROR;
		if (f < XG_NOR)
			o[f & 1] = b[f];
	}
	return xg_block_first(b, o, a->lo & (XG_GROUP_RULES - 1));
}


/* Bitmap i of `half` in xg_words, or 0 when i is outside the half's words. */
static __always_inline const __u64 *xg_word(__u32 half, __u32 i)
{
	__u32 k = half * XG_WORDS_CAP + i;

	return i < XG_WORDS_CAP ? xg_words.lookup(&k) : 0;
}

/* xg_first_rule for a rule set of at most 64 rules (XG_CFG_WORDS): each
 * selected bitmap is one word of xg_words, ANDed. */
static __always_inline int xg_first_rule_words(const struct xg_sel *s, __u32 half, __u32 from)
{
	__u64 word = ~0ULL;

	if (from >= 64 || half >= XG_NHALVES)
		return XG_RULE_NONE;
#pragma unroll
	for (int f = 0; f < XG_NSEL; f++) {
		const __u64 *w = xg_word(half, s->idx[f]);

		if (!w)
			return XG_RULE_ERROR;
		__u64 x = *w;

		if (f < XG_NOR) {
			/* The dynamic-set OR operand (the field's own index again
			 * when there is none: x | x = x). */
			w = xg_word(half, s->oridx[f & 1]);
			if (!w)
				return XG_RULE_ERROR;
			x |= *w;
		}
		word &= x;
	}
	word &= ~0ULL << from;
	return word ? (int)xg_ctz64(word) : XG_RULE_NONE;
}

/* The first rule at or after `from` that every bitmap in `s` holds (see
 * xg_scan), in the rule set of `half`; `continue` rules scan again from the
 * rule after themselves, with the same selection. */
static __always_inline int xg_first_rule(const struct xg_sel *s, __u32 half, const struct xg_config *cfg,
					 __u32 from)
{
	/* At most 64 rules: the bitmaps are words of a plain array, scanned
	 * here with no call (see XG_WORDS_CAP). */
	if (cfg->flags & XG_CFG_WORDS)
		return xg_first_rule_words(s, half, from);
	__u32 key = (half / XG_NVERSIONS) & 1;
	struct xg_callbuf *cb = xg_callbuf.lookup(&key);

	if (!cb)
		return XG_RULE_ERROR;
	cb->call.op = XG_CALL_SCAN;
	cb->call.u.scan.sel = *s;
	cb->call.u.scan.half = half;
	cb->call.u.scan.nwords = cfg->nwords;
	cb->call.u.scan.from = from;
	cb->call.u.scan.ones = xg_bm(cfg, XG_F_EXTRA, cfg->ones_idx);
	cb->call.u.scan.pflat = !!(cfg->flags & XG_CFG_PFLAT);
	cb->call.u.scan.fixed = !!(cfg->flags & (XG_CFG_FIXED | XG_CFG_FIXFLAT));
	return xg_call(&cb->call);
}

/* The leaf (field-local bitmap index) of an address in one address table:
 * one node read for the first two address bytes (the root is elements
 * 0-255, indexed by the first byte, its slots by the second), then at most
 * one per byte, however many prefixes the table holds.  A dense node is
 * indexed by the byte, a sparse one by counting its run bounds (no branch
 * on the data).  One loop with one exit keeps the verifier's work linear
 * in the address length. */
static __always_inline int xg_addr_lookup(__u32 tbl, const __u8 *addr, __u32 nbytes, __u32 *out, const int fix)
{
	void *nodes = fix ? xg_addrs_f.lookup(&tbl) : xg_addrs.lookup(&tbl);
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

/* One address field's leaf, from the half's table of the fixed size
 * (XG_CFG_FIXA) or the sized one: each read by a copy of the lookup of
 * its own (see xg_scan). */
static __always_inline int xg_addr_field(__u32 half, __u32 fld, __u32 v6, __u32 flags, const __u8 *addr,
					 __u32 nbytes, __u32 *out)
{
	__u32 t = XG_ADDR_TABLE(half, fld, v6);

	if (flags & XG_CFG_FIXA(fld, v6))
		return xg_addr_lookup(t, addr, nbytes, out, 1);
	return xg_addr_lookup(t, addr, nbytes, out, 0);
}

/* Address lookups are the most expensive step: only the fields some rule uses. */
static __always_inline int xg_lookup_addrs(const struct xg_pkt *p, __u32 half, __u32 fm, __u32 flags, __u32 *src,
					   __u32 *dst)
{
	__u32 v6 = p->family == 6;
	__u32 nbytes = v6 ? 16 : 4;

	if ((fm & (1U << XG_F_SRC)) && xg_addr_field(half, XG_F_SRC, v6, flags, p->src, nbytes, src) < 0)
		return -1;
	if ((fm & (1U << XG_F_DST)) && xg_addr_field(half, XG_F_DST, v6, flags, p->dst, nbytes, dst) < 0)
		return -1;
	return 0;
}

/* A dynamic-set element found by a lookup: a member unless it has expired.
 * Expired elements stay until `xdpguard set`/`apply` collects them; the
 * clock is read only for elements that have a timeout. */
static __always_inline int xg_dyn_live(const struct xg_dyn_elem *e)
{
	return e && (!e->expires_ns || xg_now_coarse() < e->expires_ns);
}

/* Is addr (in di) in the set at outer slot di->slot?  Exact addresses first
 * (a hash); the prefix trie only when that misses, and an empty trie
 * answers at once.  The keys are built in the per-CPU scratch, not on the
 * stack (see xg_dyn_members). */
static __always_inline __u32 xg_dyn_member4(struct xg_dynidx *di, const __u8 *addr)
{
	void *h = xg_dyn4.lookup(&di->slot);
	if (h && xg_dyn_live(bpf_map_lookup_elem(h, (void *)addr)))
		return 1;
	void *t = xg_dynp4.lookup(&di->slot);
	if (!t)
		return 0;
	di->k4.plen = 32;
	__builtin_memcpy(di->k4.addr, addr, 4);
	return xg_dyn_live(bpf_map_lookup_elem(t, &di->k4));
}

static __always_inline __u32 xg_dyn_member6(struct xg_dynidx *di, const __u8 *addr)
{
	void *h = xg_dyn6.lookup(&di->slot);
	if (h && xg_dyn_live(bpf_map_lookup_elem(h, (void *)addr)))
		return 1;
	void *t = xg_dynp6.lookup(&di->slot);
	if (!t)
		return 0;
	di->k6.plen = 128;
	__builtin_memcpy(di->k6.addr, addr, 16);
	return xg_dyn_live(bpf_map_lookup_elem(t, &di->k6));
}

/* An address's key in the dynamic-set filter: its family above its first
 * XG_DYNF_V4_PLEN (24) or XG_DYNF_V6_PLEN (48) bits. */
static __always_inline __u64 xg_dynf_key(__u32 v6, const __u8 *addr)
{
	__u64 top;

	__builtin_memcpy(&top, addr, 8); /* IPv4: only its first 3 bytes count below */
	top = __builtin_bswap64(top);
	return v6 ? (6ULL << XG_DYNF_FAMILY_SHIFT) | (top >> (64 - XG_DYNF_V6_PLEN))
		  : (4ULL << XG_DYNF_FAMILY_SHIFT) | (top >> (64 - XG_DYNF_V4_PLEN));
}

/* Is the filter bit of (salt, key) set?  Clear: the set holds nothing that
 * could match (see XG_DYNF_LOG2_BITS). */
static __always_inline __u32 xg_dynf_maybe(__u64 salt, __u64 key)
{
	__u64 h = xg_mix(key ^ salt);
	__u32 wi = h >> (64 - (XG_DYNF_LOG2_BITS - 6));
	__u64 *w = xg_dynf.lookup(&wi);

	return !w || ((*w >> (h & 63)) & 1);
}

/* The membership mask of one address field (fi: 0 src, 1 dst): bit `group`
 * of every reference whose set holds addr.  No branch on the outcome. */
static __always_inline __u32 xg_dyn_mask(const struct xg_dyncfg *dc, struct xg_dynidx *di, __u32 fi,
					 __u32 half, __u32 v6, const __u8 *addr)
{
	__u32 m = 0;
	__u64 fkey = xg_dynf_key(v6, addr);

	/* A constant bound and a 64-bit counter: clang then keeps a counter the
	 * verifier can follow to the end, instead of a count-down whose range
	 * it loses.  Only the counter indexes the array. */
#pragma clang loop unroll(disable)
	for (__u64 i = 0; i < XG_MAX_DYNREFS; i++) {
		if (i >= *(volatile __u32 *)&dc->nrefs[fi & 1])
			break;
		/* The empty asm keeps clang from turning the index into a
		 * running pointer the verifier cannot bound. */
		__u64 j = i;

		asm volatile("" : "+r"(j));
		const struct xg_dynref *r = &dc->ref[fi & 1][j & (XG_MAX_DYNREFS - 1)];
		di->slot = XG_DYN_SLOT(half, r->slot & (XG_MAX_DYNSETS - 1));
		__u32 hit = !xg_dynf_maybe(r->salt, fkey) ? 0 : v6 ? xg_dyn_member6(di, addr) : xg_dyn_member4(di, addr);

		m |= (1U << (r->group & (XG_MAX_DYNGROUPS - 1))) & -hit;
	}
	return m;
}

/* Dynamic sets, step 1, first thing for a frame when the rule set refers to
 * dynamic sets: which bitmap each address field's membership mask selects,
 * into the per-CPU scratch `xg_dynidx`.  It runs before the full parse on
 * purpose: the parse and the checks after it leave the verifier hundreds of
 * distinct states, and code placed after them is verified once per state;
 * here there are only a handful (VLAN tags, family), and since the results
 * go to memory the verifier does not track, they all meet again after. */
static __always_inline void xg_dyn_members(void *data, void *data_end, __u32 half, __u32 dir)
{
	struct xg_dyncfg *dc = xg_dyncfg.lookup(&half);
	__u32 key = dir & 1;
	struct xg_dynidx *di = xg_dynidx.lookup(&key);

	if (!dc || !di)
		return;
	di->idx[0] = dc->base[0];
	di->idx[1] = dc->base[1];
	/* nrefs[0] >> 31 is 0 (at most XG_MAX_DYNREFS), but the verifier cannot
	 * tell: the pointer it gives is tracked apart from `data`, so the
	 * bounds checks below leave what the verifier knows of `data` as it
	 * was, and the paths meet again. */
	void *pkt = data + (dc->nrefs[0] >> 31);
	__u32 family = xg_parse_addrs(pkt, data_end, di->src, di->dst);
	if (!family)
		return;
	di->idx[0] += xg_dyn_mask(dc, di, 0, half, family == 6, di->src);
	di->idx[1] += xg_dyn_mask(dc, di, 1, half, family == 6, di->dst);
}

/* Step 2, with the field bitmaps chosen: the combinations the membership
 * masks selected become s->oridx[] for the fields rules refer to sets in.
 * The caller has set oridx to the fields' own bitmaps (nothing to add),
 * which is right for the others. */
static __always_inline int xg_dyn_select(__u32 half, __u32 dir, struct xg_sel *s)
{
	struct xg_dyncfg *dc = xg_dyncfg.lookup(&half);
	__u32 key = dir & 1;
	struct xg_dynidx *di = xg_dynidx.lookup(&key);

	if (!dc || !di)
		return -1;
	if (dc->nrefs[0])
		s->oridx[0] = di->idx[0];
	if (dc->nrefs[1])
		s->oridx[1] = di->idx[1];
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
	/* Signed: the coarse clock may lag a last_seen written from user space
	 * with the precise one (connections recorded at apply). */
	return (__s64)(xg_pkt_now(p) - f->last_seen_ns) <= (__s64)(tmo * XG_NSEC_PER_SEC);
}

/* Record an outbound packet's flow (egress only, so only this host creates
 * flows, and only with what opens a connection: see lib/flow.h).  Any
 * outbound packet of a flow refreshes it. */
static __always_inline void xg_record_flow(const struct xg_pkt *p, __u64 bytes, int udp_connected)
{
	struct xg_flow_key k = {};

	if (xg_flow_key(p, XG_DIR_EGRESS, &k) < 0)
		return;
	__u64 now = xg_pkt_now(p);
	struct xg_flow *f = xg_flows.lookup(&k);
	if (f) {
		/* Refresh rarely: a busy flow would otherwise write a shared
		 * cache line on every packet. */
		if ((__s64)(now - f->last_seen_ns) > (__s64)XG_FLOW_REFRESH_NS)
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
 * the maps are inconsistent (never expected; counted).  *sel gets the
 * bitmaps the packet selected: after a match, xg_first_rule(sel, half,
 * cfg, rule + 1) finds the next matching rule with no new field lookup. */
static __always_inline int xg_classify(const struct xg_pkt *p, __u32 half, const struct xg_config *cfg,
				       __u32 dir, struct xg_sel *sel)
{
	struct xg_sel *s = sel; /* in the per-CPU scratch: no copy on the stack */

#pragma unroll
	for (int f = 0; f < XG_NSEL; f++)
		s->idx[f] = xg_bm(cfg, XG_F_EXTRA, cfg->ones_idx);
	s->oridx[0] = s->idx[0];
	s->oridx[1] = s->idx[1];
	if (cfg->nwords == 0)
		return XG_RULE_NONE;

	__u32 fm = cfg->field_mask;
	__u32 *v;

	if (fm & ((1U << XG_F_SRC) | (1U << XG_F_DST))) {
		__u32 src = 0, dst = 0;

		if (xg_lookup_addrs(p, half, fm, cfg->flags, &src, &dst) < 0)
			return XG_RULE_ERROR;
		if (fm & (1U << XG_F_SRC))
			s->idx[0] = xg_bm(cfg, XG_F_SRC, src);
		if (fm & (1U << XG_F_DST))
			s->idx[1] = xg_bm(cfg, XG_F_DST, dst);
	}
	s->oridx[0] = s->idx[0];
	s->oridx[1] = s->idx[1];
	if ((cfg->flags & XG_CFG_HAS_DYN) && xg_dyn_select(half, dir, s) < 0)
		return XG_RULE_ERROR;
	if (fm & (1U << XG_F_PROTO)) {
		__u32 k = half * XG_PROTO_SIZE + p->proto;

		v = xg_proto.lookup(&k);
		if (!v)
			return XG_RULE_ERROR;
		s->idx[2] = xg_bm(cfg, XG_F_PROTO, *v);
	}
	/* A later fragment has no L4 header (has_ports and has_icmp are 0, so
	 * the L4 lookups below are skipped): only rules without L4 conditions. */
	if (p->later_frag) {
		s->idx[7] = xg_bm(cfg, XG_F_EXTRA, cfg->l4free_idx);
	}
	if (p->has_ports) {
		if (fm & (1U << XG_F_SPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->sport;

			v = xg_sport.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s->idx[3] = xg_bm(cfg, XG_F_SPORT, *v);
		}
		if (fm & (1U << XG_F_DPORT)) {
			__u32 k = half * XG_PORT_SIZE + p->dport;

			v = xg_dport.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s->idx[4] = xg_bm(cfg, XG_F_DPORT, *v);
		}
		if (p->proto == IPPROTO_TCP && (fm & (1U << XG_F_TFLAGS))) {
			__u32 k = half * XG_TFLAGS_SIZE + p->tflags;

			v = xg_tflags.lookup(&k);
			if (!v)
				return XG_RULE_ERROR;
			s->idx[5] = xg_bm(cfg, XG_F_TFLAGS, *v);
		}
	}
	if (p->has_icmp && (fm & (1U << XG_F_ICMP))) {
		__u32 k = half * XG_ICMP_SIZE + (p->proto == IPPROTO_ICMPV6 ? 65536 : 0) +
			  ((__u32)p->icmp_type << 8) + p->icmp_code;

		v = xg_icmp.lookup(&k);
		if (!v)
			return XG_RULE_ERROR;
		s->idx[6] = xg_bm(cfg, XG_F_ICMP, *v);
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

	if (has_state && !stateful)
		s->idx[7] = xg_bm(cfg, XG_F_EXTRA, cfg->new_idx);
	if (!stateful || !(cfg->flags & XG_CFG_STATE_FIRST)) {
		rule = xg_first_rule(s, half, cfg, 0);
		if (!stateful || rule < 0)
			return rule;
		/* Does the candidate test state?  Its rule entry says so (a bit
		 * test in two-level bitmaps would cost two lookups). */
		__u32 rk = half * XG_MAX_RULES + ((__u32)rule & (XG_MAX_RULES - 1));
		const struct xg_rule *cr = xg_rules.lookup(&rk);

		if (!cr)
			return XG_RULE_ERROR;
		in_est = !(cr->flags & XG_RULE_NOT_EST);
		in_new = !(cr->flags & XG_RULE_NOT_NEW);
		/* The first candidate ignores state: no lookup, unless it is a
		 * `continue` rule, whose next scan needs the state's bitmap. */
		if (in_est && in_new && cr->action != XG_ACT_CONTINUE)
			return rule;
	}
	int est_now = xg_established(p, cfg);

	s->idx[7] = xg_bm(cfg, XG_F_EXTRA, est_now ? cfg->est_idx : cfg->new_idx);
	if (rule >= 0 && (est_now ? in_est : in_new))
		return rule; /* the first candidate fits the packet's state */
	/* Rules before the candidate did not match even ignoring state. */
	return xg_first_rule(s, half, cfg, rule >= 0 ? (__u32)rule + 1 : 0);
}

/* A sampled, rate-capped event for a drop decision: a flood must not flood the log. */
static __always_inline void xg_event(__u32 dir, __u32 reason, int audit, const struct xg_pkt *p, __u64 rule_id,
				     __u32 len, __u32 ifindex)
{
	__u32 zero = 0;
	struct xg_event_cfg *cfg = xg_event_cfg.lookup(&zero);
	__u32 sample = xg_event_sample(cfg);

	if (!sample || (sample > 1 && bpf_get_prandom_u32() % sample))
		return;
	struct xg_event_rate *rate = xg_event_rate.lookup(&zero);
	/* In a flood of drops nearly every packet stops here, most of them
	 * without reading a clock (see lib/event.h). */
	if (!xg_event_rate_ok(cfg, rate))
		return;
	__u64 now = bpf_ktime_get_ns();

	/* Written in place in the ring buffer: no copy on the stack, whose 512
	 * bytes the program shares with the functions it calls. */
	struct xg_event *ev = xg_events.ringbuf_reserve(sizeof(*ev));
	if (!ev)
		return; /* the buffer is full: the event is lost, the counters are not */
	ev->ts_ns = now;
	ev->rule_id = rule_id;
	ev->ifindex = ifindex;
	ev->len = len;
	ev->dir = dir;
	ev->reason = reason;
	ev->audit = audit;
	ev->family = p->family;
	ev->proto = p->proto;
	ev->pad = 0;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->pad2 = 0;
	__builtin_memcpy(ev->src, p->src, 16);
	__builtin_memcpy(ev->dst, p->dst, 16);
	xg_events.ringbuf_submit(ev, 0);
}

/* A SYN, or an ACK that may complete a handshake: what SYN cookies look at. */
static __always_inline int xg_syn_candidate(const struct xg_pkt *p)
{
	__u8 f = p->tflags & (XG_TCP_FLAG_SYN | XG_TCP_FLAG_RST | XG_TCP_FLAG_ACK);

	return p->proto == IPPROTO_TCP && p->has_ports && !p->later_frag &&
	       (f == XG_TCP_FLAG_SYN || f == XG_TCP_FLAG_ACK);
}

/* Hand the rule to the SYN-cookie program, which the caller tail-calls.
 * An ACK of a flow this host has sent on (the flow table, written by
 * egress) belongs to an existing connection: it skips the tail call and
 * its socket lookup, so the steady traffic of a protected port costs one
 * hash lookup.  A cookie handshake's ACK never has a flow yet: our SYN-ACK
 * left by XDP_TX, not through egress. */
static __always_inline int xg_syn_stage(const struct xg_rule *r, const struct xg_pkt *p,
					const struct xg_config *cfg)
{
	__u32 zero = 0;

	if ((p->tflags & XG_TCP_FLAG_ACK) && xg_established(p, cfg))
		return XG_PASS;
	struct xg_syn_scratch *sc = xg_syn_scratch.lookup(&zero);
	if (!sc)
		return XG_PASS;
	sc->rule_id = r->rule_id;
	sc->slot = r->slot;
	return XG_SYNCOOKIE;
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

	if (cfg->flags & XG_CFG_HAS_DYN)
		xg_dyn_members(data, data_end, half, dir);
	/* The parsed packet lives in the per-CPU scratch: the program and the
	 * functions it calls share 512 bytes of stack. */
	__u32 cbkey = dir & 1;
	struct xg_callbuf *cb = xg_callbuf.lookup(&cbkey);

	if (!cb)
		return XG_PASS;
	struct xg_pkt *p = &cb->pkt;

	__builtin_memset(p, 0, sizeof(*p));
	int kind = xg_parse(data, data_end, frame_len, p);

	if (kind == XG_KIND_MALFORMED) {
		xg_count(dir, XG_SLOT_MALFORMED, frame_len);
		xg_event(dir, XG_EV_MALFORMED, !drop_ok, p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}
	if (kind == XG_KIND_NON_IP) {
		xg_count(dir, XG_SLOT_NON_IP, frame_len);
		if (!(cfg->flags & XG_CFG_NON_IP_DROP))
			return XG_PASS;
		xg_event(dir, XG_EV_NON_IP, !drop_ok, p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}
	if (!(cfg->flags & XG_CFG_NDP_RULES) && xg_is_ndp(p)) {
		xg_count(dir, XG_SLOT_NDP, frame_len);
		return XG_PASS;
	}
	if (dir == XG_DIR_INGRESS && (cfg->flags & XG_CFG_HAS_BLOCK) && xg_blocked_now(p)) {
		xg_count(dir, XG_SLOT_BLOCKED, frame_len);
		xg_event(dir, XG_EV_BLOCKED, !drop_ok, p, 0, frame_len, ifindex);
		return drop_ok ? XG_DROP : XG_PASS;
	}

	int verdict;
	/* What the packet selected, kept for a second scan from a later rule
	 * (xg_first_rule(&sel, half, cfg, from)). */
	struct xg_sel *sel = &cb->sel;
	int rule = xg_classify(p, half, cfg, dir, sel);
	struct xg_rule *r = 0;
	int over = 0;

	/* The deciding rule.  A `continue` rule within its limit passes the
	 * packet on to the next matching rule: a scan from the rule after it,
	 * with the same selection (no field is looked up again).  A direction
	 * holds at most XG_MAX_CONTINUE of them (the compiler refuses more),
	 * so the hops are bounded. */
#pragma clang loop unroll(disable)
	for (int hop = 0; hop <= XG_MAX_CONTINUE; hop++) {
		if (rule < 0)
			break;
		__u32 k = half * XG_MAX_RULES + ((__u32)rule & (XG_MAX_RULES - 1));

		r = xg_rules.lookup(&k);
		if (!r) {
			rule = XG_RULE_ERROR;
			break;
		}
		if (r->limit != XG_LIMIT_NONE && !xg_limit_call(p, k, dir, frame_len)) {
			over = 1;
			break;
		}
		if (r->action != XG_ACT_CONTINUE)
			break;
		xg_count(dir, r->slot, frame_len);
		r = 0;
		rule = xg_first_rule(sel, half, cfg, (__u32)rule + 1);
	}
	if (rule >= 0 && !r)
		rule = XG_RULE_ERROR; /* more continue hops than a rule set may hold: never expected */
	if (rule >= 0 && r) {
		if (over) {
			/* Over the limit: dropped (passed in audit mode), counted as
			 * over; with block_for the limiter has blocked the source. */
			xg_count2(dir, r->slot, frame_len, 1);
			xg_event(dir, XG_EV_LIMIT, !drop_ok, p, r->rule_id, frame_len, ifindex);
			verdict = drop_ok ? XG_DROP : XG_PASS;
			goto out;
		}
		xg_count(dir, r->slot, frame_len);
		if (r->action == XG_ACT_DROP)
			xg_event(dir, XG_EV_RULE, !drop_ok, p, r->rule_id, frame_len, ifindex);
		verdict = (drop_ok && r->action == XG_ACT_DROP) ? XG_DROP : XG_PASS;
		if (dir == XG_DIR_INGRESS && (r->flags & XG_RULE_SYNCOOKIE) && drop_ok && xg_syn_candidate(p))
			verdict = xg_syn_stage(r, p, cfg);
		goto out;
	}
	if (rule == XG_RULE_ERROR)
		xg_count(dir, XG_SLOT_ERROR, frame_len);
	xg_count(dir, XG_SLOT_DEFAULT, frame_len);
	if (cfg->flags & XG_CFG_DEFAULT_DROP)
		xg_event(dir, XG_EV_DEFAULT, !drop_ok, p, 0, frame_len, ifindex);
	verdict = (drop_ok && (cfg->flags & XG_CFG_DEFAULT_DROP)) ? XG_DROP : XG_PASS;
out:
	if (dir == XG_DIR_EGRESS && verdict == XG_PASS)
		xg_record_flow(p, frame_len, xg_udp_sock_connected(sk, p));
	return verdict;
}

int xg_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int v = xg_process(data, data_end, (__u32)(data_end - data), XG_DIR_INGRESS, ctx->ingress_ifindex, 0);

	if (v == XG_SYNCOOKIE) {
		xg_syn_prog.call(ctx, 0);
		v = XG_PASS; /* no SYN-cookie program loaded (yet): the stack answers */
	}
	return xg_xdp_action(v);
}

int xg_egress(struct __sk_buff *skb)
{
	xg_tc_pull_headers(skb);
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	return xg_tc_action(xg_process(data, data_end, skb->len, XG_DIR_EGRESS, skb->ifindex, skb->sk));
}

__attribute__((__noinline__)) int xg_scan_fn(struct xg_call_args *a)
{
	if (!a)
		return XG_RULE_ERROR;
	if (a->op == XG_CALL_LIMIT)
		return xg_limit(&a->u.limit);
	return xg_scan(&a->u.scan);
}

__attribute__((__noinline__)) int xg_group_fn(struct xg_group_args *a)
{
	if (!a)
		return XG_RULE_ERROR;
	/* One copy per kind of block table (see xg_scan). */
	if (a->fixed)
		return xg_group(a, 1);
	return xg_group(a, 0);
}
