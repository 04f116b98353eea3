/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Which drop decisions become events: the sampling and the per-CPU rate
 * cap, shared by xg_event (bpf/xdpguard.c, bcc) and the SYN-cookie program
 * (bpf/syncookie.c, clang).  Pure: the callers look the maps up.
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

/* At most max_rate events a second on this CPU; counts an admitted one.
 * `now` is the coarse clock (bpf_ktime_get_coarse_ns) in every caller: the
 * window is shared by the programs that drop, and a one-second window needs
 * no better than a tick. */
static __always_inline int xg_event_rate_ok(const struct xg_event_cfg *cfg, struct xg_event_rate *rate, __u64 now)
{
	__u32 max_rate = cfg ? cfg->max_rate : XG_EVENTS_DEFAULT_MAX_RATE;

	if (!rate)
		return 0;
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
