/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* hash.h — hashes of a 5-tuple (struct mp_flow): mp_flow_hash picks the Maglev slot, and
 * mp_snat_hash, seeded apart from it, picks the SNAT port. Both are Bob Jenkins' lookup3 (the
 * kernel's jhash) over the tuple's 32-bit words as they sit in memory, so every node, and the
 * BPF, DPDK and native builds, compute the same values for the same packet.
 */
#ifndef MESHPATH_BPF_HASH_H
#define MESHPATH_BPF_HASH_H

#include "compiler.h"
#include "abi.h"
#include "cursor.h"

#define MP_JHASH_INITVAL 0xdeadbeefu
#define MP_HASH_SEED_FLOW 0x6d657368u /* "mesh" */
#define MP_HASH_SEED_SNAT 0x736e6174u /* "snat" */

MP_INLINE __u32 mp_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define MP_JHASH_MIX(a, b, c)                                                                      \
	do {                                                                                       \
		a -= c;                                                                            \
		a ^= mp_rol32(c, 4);                                                               \
		c += b;                                                                            \
		b -= a;                                                                            \
		b ^= mp_rol32(a, 6);                                                               \
		a += c;                                                                            \
		c -= b;                                                                            \
		c ^= mp_rol32(b, 8);                                                               \
		b += a;                                                                            \
		a -= c;                                                                            \
		a ^= mp_rol32(c, 16);                                                              \
		c += b;                                                                            \
		b -= a;                                                                            \
		b ^= mp_rol32(a, 19);                                                              \
		a += c;                                                                            \
		c -= b;                                                                            \
		c ^= mp_rol32(b, 4);                                                               \
		b += a;                                                                            \
	} while (0)

#define MP_JHASH_FINAL(a, b, c)                                                                    \
	do {                                                                                       \
		c ^= b;                                                                            \
		c -= mp_rol32(b, 14);                                                              \
		a ^= c;                                                                            \
		a -= mp_rol32(c, 11);                                                              \
		b ^= a;                                                                            \
		b -= mp_rol32(a, 25);                                                              \
		c ^= b;                                                                            \
		c -= mp_rol32(b, 16);                                                              \
		a ^= c;                                                                            \
		a -= mp_rol32(c, 4);                                                               \
		b ^= a;                                                                            \
		b -= mp_rol32(a, 14);                                                              \
		c ^= b;                                                                            \
		c -= mp_rol32(b, 24);                                                              \
	} while (0)

/* jhash_3words(): the IPv4 tuple fits in three words. */
MP_INLINE __u32 mp_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += MP_JHASH_INITVAL + (3 << 2) + initval;
	b += MP_JHASH_INITVAL + (3 << 2) + initval;
	c += MP_JHASH_INITVAL + (3 << 2) + initval;
	MP_JHASH_FINAL(a, b, c);
	return c;
}

/* jhash2() over nine words: two IPv6 addresses and the ports. */
MP_INLINE __u32 mp_jhash_9words(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = MP_JHASH_INITVAL + (9 << 2) + initval;
	a += k[0];
	b += k[1];
	c += k[2];
	MP_JHASH_MIX(a, b, c);
	a += k[3];
	b += k[4];
	c += k[5];
	MP_JHASH_MIX(a, b, c);
	a += k[6];
	b += k[7];
	c += k[8];
	MP_JHASH_FINAL(a, b, c);
	return c;
}

MP_INLINE __u32 mp_tuple_hash(const struct mp_flow *f, __u32 seed)
{
	const mp_u32_any *src = (const mp_u32_any *)f->src;
	const mp_u32_any *dst = (const mp_u32_any *)f->dst;
	__u32 ports = ((__u32)f->sport << 16) | f->dport;
	__u32 k[9];

	seed ^= f->proto;
	if (f->family == MP_AF_INET)
		return mp_jhash_3words(src[0], dst[0], ports, seed);
	k[0] = src[0];
	k[1] = src[1];
	k[2] = src[2];
	k[3] = src[3];
	k[4] = dst[0];
	k[5] = dst[1];
	k[6] = dst[2];
	k[7] = dst[3];
	k[8] = ports;
	return mp_jhash_9words(k, seed);
}

/* Picks the endpoint: the same flow always lands on the same ring slot. */
MP_INLINE __u32 mp_flow_hash(const struct mp_flow *f)
{
	return mp_tuple_hash(f, MP_HASH_SEED_FLOW);
}

/* Picks the SNAT port; independent of mp_flow_hash so flows sharing an endpoint spread over
 * the whole port range. */
MP_INLINE __u32 mp_snat_hash(const struct mp_flow *f)
{
	return mp_tuple_hash(f, MP_HASH_SEED_SNAT);
}

#endif /* MESHPATH_BPF_HASH_H */
