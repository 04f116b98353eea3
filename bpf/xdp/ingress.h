/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What is specific to the ingress hook (XDP): its return codes.
 * The program itself, xg_ingress, is in bpf/xdpguard.c (bcc needs every
 * map access in the main translation unit).
 */
#ifndef XG_INGRESS_H
#define XG_INGRESS_H

#include <uapi/linux/bpf.h>

static __always_inline int xg_xdp_action(int drop)
{
	return drop ? XDP_DROP : XDP_PASS;
}

#endif /* XG_INGRESS_H */
