/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* flowcache.h — the per-CPU flow cache's slot layout and its decisions (abi.h says what the cache
 * is for). Why a cache in front of two hash maps: an established packet otherwise pays for two
 * jhash lookups (mp_services' 20-byte key, mp_conns' 40-byte key) and their key compares, which
 * perf shows as half of the program's cost; a slot is one inlined array lookup, a 40-byte compare
 * and a generation check. The idea is Open vSwitch's exact match cache, down to skipping it when
 * it thrashes.
 */
#ifndef MESHPATH_BPF_FLOWCACHE_H
#define MESHPATH_BPF_FLOWCACHE_H

#include "compiler.h"
#include "abi.h"
#include "cursor.h"
#include "parse.h"

/* One slot: the flow it holds and everything its established packets need, in one cache line. */
struct mp_flow_slot {
	struct mp_flow flow; /* family 0: an empty slot */
	__u64 expires;	     /* bpf_jiffies64() from which it is not served */
	__u32 gen;	     /* low 32 bits of mp_fwd_gen when it was filled */
	__u32 ep_id;
	__u32 svc_id;
	__u16 snat_port; /* network order */
	__u8 snat_addr;	 /* index of the SNAT source in the node's pool */
	__u8 pad;
};

/* Sampling: every MP_FC_WINDOW lookups, a CPU whose lookups found another live flow's slot at
 * least MP_FC_THRASH times skips the cache for the next MP_FC_BYPASS packets (no lookup, no
 * fill), then samples again. Slots stay put meanwhile; those that expired count as plain misses,
 * so a flow set that shrank back under the cache's size brings the cache back within a window. */
#define MP_FC_WINDOW 256
#define MP_FC_THRASH (MP_FC_WINDOW / 2)
#define MP_FC_BYPASS (15 * MP_FC_WINDOW)

/* murmur3's 32-bit finalizer: every input bit reaches every output bit. */
MP_INLINE __u32 mp_fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85EBCA6Bu;
	h ^= h >> 13;
	h *= 0xC2B2AE35u;
	return h ^ (h >> 16);
}

/* The slot of a flow among 2^bits (bits in [1, 22]), spread like a random function. The addresses
 * are mixed before the ports go in, so no client's address bytes can cancel against its port
 * (clients of one /16 once shared 65536 slots whatever the cache's size). Two fmix32 rounds, not
 * jhash: a collision only costs a miss, and this is a few instructions. */
MP_INLINE __u32 mp_flow_slot_index(const struct mp_flow *f, __u32 bits)
{
	const mp_u32_any *s = (const mp_u32_any *)f->src, *d = (const mp_u32_any *)f->dst;
	__u32 a = mp_fmix32(s[0] ^ s[1] ^ s[2] ^ s[3] ^ ((d[0] ^ d[1] ^ d[2] ^ d[3]) * 0x9E3779B1u) ^
			    f->proto);

	return mp_fmix32(a ^ (((__u32)f->sport << 16) | f->dport)) >> (32 - bits);
}

/* The slot of a client address (16 bytes, IPv4 in the first 4) among 2^bits: mp_nh_client. */
MP_INLINE __u32 mp_addr_slot_index(const __u8 *addr, __u32 bits)
{
	const mp_u32_any *a = (const mp_u32_any *)addr;

	return mp_fmix32(a[0] ^ a[1] ^ a[2] ^ a[3]) >> (32 - bits);
}

MP_INLINE int mp_flow_eq(const struct mp_flow *a, const struct mp_flow *b)
{
	const mp_u32_any *x = (const mp_u32_any *)a, *y = (const mp_u32_any *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4]) |
		(x[5] ^ y[5]) | (x[6] ^ y[6]) | (x[7] ^ y[7]) | (x[8] ^ y[8]) | (x[9] ^ y[9])) == 0;
}

/* Is the slot live at jiffies now: filled (an empty slot is all zeros, generation 0 included),
 * under the current generation, not expired? */
MP_INLINE int mp_flow_slot_live(const struct mp_flow_slot *slot, __u64 gen, __u64 now)
{
	return slot->flow.family != 0 && slot->gen == (__u32)gen && now < slot->expires;
}

/* May this packet use the cache? Not a TCP packet opening, closing or resetting: those change
 * the connection's state, which only the slow path records. */
MP_INLINE int mp_flow_cacheable(__u8 tcp_flags)
{
	return !(tcp_flags & (MP_TCP_SYN | MP_TCP_FIN | MP_TCP_RST));
}

/* Before a lookup: 1 when this CPU skips the cache for this packet (and counts it). */
MP_INLINE int mp_fc_bypass(struct mp_flow_cache_stats *st)
{
	if (!st->bypass_left)
		return 0;
	st->bypass_left--;
	st->bypassed++;
	return 1;
}

/* Counts a lookup once its outcome is known (a hit served, or a miss of a flow the slow path found
 * a service for: packets to other addresses do not count) and closes the sampling window when it
 * is full. conflict: another live flow held the slot. */
MP_INLINE void mp_fc_account(struct mp_flow_cache_stats *st, int hit, int conflict)
{
	if (hit) {
		st->hits++;
	} else {
		st->misses++;
		if (conflict) {
			st->conflicts++;
			st->window_conflicts++;
		}
	}
	if (++st->window < MP_FC_WINDOW)
		return;
	if (st->window_conflicts >= MP_FC_THRASH)
		st->bypass_left = MP_FC_BYPASS;
	st->window = 0;
	st->window_conflicts = 0;
}

#endif /* MESHPATH_BPF_FLOWCACHE_H */
