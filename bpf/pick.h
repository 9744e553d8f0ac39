/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pick.h — how a new flow chooses its ring slot under each mp_algorithm, and which slots it
 * tries next when the chosen endpoint is marked down. The program supplies the random numbers,
 * counters and mp_ep_health entries; these functions only compare and index, so they compile
 * natively for the tests.
 */
#ifndef MESHPATH_BPF_PICK_H
#define MESHPATH_BPF_PICK_H

#include "compiler.h"
#include "abi.h"

/* The service's algorithm as the program runs it: an unknown value (a newer meshd) is Maglev,
 * the one that needs no state. */
MP_INLINE __u32 mp_algorithm_of(__u8 algorithm)
{
	return algorithm < MP_ALG_MAX ? (__u32)algorithm : (__u32)MP_ALG_MAGLEV;
}

/* Connections open toward an endpoint (mp_ep_health: opened - closed + adjust), signed: meshd's
 * adjust may briefly overshoot. */
MP_INLINE __s64 mp_ep_active(__u64 opened, __u64 closed, __s64 adjust)
{
	return (__s64)(opened - closed) + adjust;
}

/* Power of two choices: 0 picks the first candidate, 1 the second. A candidate marked down loses
 * to one that is not; otherwise the lower key wins, the first on a tie. */
MP_INLINE int mp_choose_second(int down_a, int down_b, int b_better)
{
	if (down_a != down_b)
		return down_a;
	return b_better;
}

/* LEAST_CONN: fewer active connections. */
MP_INLINE int mp_least_conn_second(__s64 active_a, __s64 active_b, int down_a, int down_b)
{
	return mp_choose_second(!!down_a, !!down_b, active_b < active_a);
}

/* LEAST_LATENCY: the lower SYN -> SYN-ACK average; 0 (not measured yet) is lowest, so a new
 * endpoint gets its first samples. */
MP_INLINE int mp_least_latency_second(__u64 rtt_a, __u64 rtt_b, int down_a, int down_b)
{
	int b_better = rtt_a != 0 && (rtt_b == 0 || rtt_b < rtt_a);

	return mp_choose_second(!!down_a, !!down_b, b_better);
}

/* The index of the probe-th slot after idx inside the active half [base, base + M) of a ring,
 * wrapping at the half's end; idx is an index mp_ring_index gave (inside that half). */
MP_INLINE __u32 mp_ring_next(__u32 idx, __u32 probe, __u32 ring_size, __u32 active_half)
{
	__u32 base = active_half ? ring_size : 0;

	return base + (idx - base + probe) % ring_size;
}

#endif /* MESHPATH_BPF_PICK_H */
