/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* csum.h — incremental Internet checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
 * Changes accumulate into a 64-bit difference (mp_csum_diff*) that is applied once per checksum
 * field (mp_csum_apply), so an address change costs one fold however many fields it touches.
 * All values are taken as they sit in memory (network order); one's complement sums do not care
 * about byte order as long as every operand uses the same one.
 */
#ifndef MESHPATH_BPF_CSUM_H
#define MESHPATH_BPF_CSUM_H

#include "compiler.h"
#include "cursor.h"

MP_INLINE __u16 mp_csum_fold(__u64 sum)
{
	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffffu) + (sum >> 16);
	sum = (sum & 0xffffu) + (sum >> 16);
	return (__u16)sum;
}

MP_INLINE __u64 mp_csum_diff16(__u64 acc, __u16 from, __u16 to)
{
	return acc + (__u16)~from + to;
}

MP_INLINE __u64 mp_csum_diff32(__u64 acc, __u32 from, __u32 to)
{
	return acc + (__u32)~from + to;
}

/* from and to point at 16-byte addresses. */
MP_INLINE __u64 mp_csum_diff128(__u64 acc, const void *from, const void *to)
{
	const mp_u32_any *f = (const mp_u32_any *)from;
	const mp_u32_any *t = (const mp_u32_any *)to;

	acc = mp_csum_diff32(acc, f[0], t[0]);
	acc = mp_csum_diff32(acc, f[1], t[1]);
	acc = mp_csum_diff32(acc, f[2], t[2]);
	return mp_csum_diff32(acc, f[3], t[3]);
}

/* The checksum field after the changes summed up in diff. */
MP_INLINE __u16 mp_csum_apply(__u16 check, __u64 diff)
{
	return (__u16)~mp_csum_fold((__u16)~check + diff);
}

MP_INLINE void mp_csum_replace16(__u16 *check, __u16 from, __u16 to)
{
	*check = mp_csum_apply(*check, mp_csum_diff16(0, from, to));
}

MP_INLINE void mp_csum_replace32(__u16 *check, __u32 from, __u32 to)
{
	*check = mp_csum_apply(*check, mp_csum_diff32(0, from, to));
}

MP_INLINE void mp_csum_replace128(__u16 *check, const void *from, const void *to)
{
	*check = mp_csum_apply(*check, mp_csum_diff128(0, from, to));
}

#endif /* MESHPATH_BPF_CSUM_H */
