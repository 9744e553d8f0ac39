/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* maglev.h — where a flow hash lands in a service's double-buffered Maglev ring: slot
 * hash % M inside the active half (half h holds slots [h*M, h*M + M) of the inner map).
 */
#ifndef MESHPATH_BPF_MAGLEV_H
#define MESHPATH_BPF_MAGLEV_H

#include "compiler.h"
#include "abi.h"

/* Index into the service's inner ring map, or MP_RING_EMPTY when the service's ring is not
 * usable (M of 0 or beyond MP_RING_SIZE_MAX). Any active_half other than 0 reads half 1. */
MP_INLINE __u32 mp_ring_index(__u32 hash, __u32 ring_size, __u32 active_half)
{
	if (ring_size == 0 || ring_size > MP_RING_SIZE_MAX)
		return MP_RING_EMPTY;
	return (active_half ? ring_size : 0) + hash % ring_size;
}

#endif /* MESHPATH_BPF_MAGLEV_H */
