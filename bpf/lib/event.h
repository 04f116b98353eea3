/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Which drop decisions become events: the sampling and the per-CPU rate
 * cap, shared by xg_event (bpf/xdpguard.c, bcc) and the SYN-cookie program
 * (bpf/syncookie.c, clang).  The callers look the maps up.
 */
#ifndef XG_EVENT_H
#define XG_EVENT_H

#include "include/xdpguard.h"

/* Keep one drop in `sample` (0: none); the caller draws `rnd` only when
 * sample > 1, so the common settings cost no random number. */
static __always_inline __u32 xg_event_sample(const struct xg_event_cfg *cfg)
{
	return cfg ? cfg->sample : XG_EVENTS_DEFAULT_SAMPLE;
}

/* May this drop become an event?  At most max_rate a second on this CPU;
 * counts an admitted one.  The window is read from the coarse clock
 * (bpf_ktime_get_coarse_ns) in both programs, which keep this CPU's window
 * in the one event_rate map, and a one-second window needs no better than
 * a tick.  Past the cap, `count` goes on counting the refused drops, and
 * only every XG_EVENT_CLOCK_EVERY-th of them reads the clock to see
 * whether the window has ended: in a flood of drops the others cost a
 * load and a store, where a clock read costs ~20 ns (measured in situ on
 * our machines).  A window then ends at most XG_EVENT_CLOCK_EVERY refused
 * drops late, which at flood rates is microseconds. */
static __always_inline int xg_event_rate_ok(const struct xg_event_cfg *cfg, struct xg_event_rate *rate)
{
	__u32 max_rate = cfg ? cfg->max_rate : XG_EVENTS_DEFAULT_MAX_RATE;

	if (!rate)
		return 0;
	__u64 c = rate->count;

	if (c >= max_rate) {
		rate->count = c + 1;
		if ((c - max_rate) % XG_EVENT_CLOCK_EVERY)
			return 0;
	}
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - rate->window_ns >= XG_NSEC_PER_SEC) {
		rate->window_ns = now;
		rate->count = 0;
	}
	if (rate->count >= max_rate)
		return 0;
	rate->count++;
	return 1;
}

#endif /* XG_EVENT_H */
