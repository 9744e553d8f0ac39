/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* syncookie.h — the SYN cookie: the balancer's ISN toward a client whose SYN it answers without
 * keeping state, and its check when the client's ACK comes back. The layout is the kernel's
 * (net/ipv4/syncookies.c): the top 8 bits a coarse clock count, the low 24 a keyed hash of the
 * connection plus the index of the client's MSS in a 4-entry table, so a forged ACK passes with
 * probability 4 / 2^24 per guess and a cookie older than two counts fails.
 *
 * Our own rather than the kernel's bpf_tcp_raw_{gen,check}_syncookie_ipv4/6: those helpers
 * validate a cookie but do not give its MSS back (a proxy must tell the endpoint the client's
 * MSS), use a per-host secret no other node and no restarted meshd can share (a mesh's ECMP may
 * take the ACK to another node than the SYN), and exist only in BPF, while this logic runs in
 * XDP, DPDK and the native tests alike. The key is SipHash-2-4's, as the kernel's is; it lives
 * in mp_syn_secret. The clock is TAI, the same on every synchronized node.
 *
 * The client's window scale and SACK-permitted travel as the kernel's do (cookie_init_timestamp):
 * in the low bits of the TSval the balancer sends, which the client echoes. Without timestamps
 * they are not carried: the connection runs without window scaling and SACK (bpf/README.md).
 */
#ifndef MESHPATH_BPF_SYNCOOKIE_H
#define MESHPATH_BPF_SYNCOOKIE_H

#include "compiler.h"
#include "abi.h"
#include "cursor.h"

/* A count every 2^36 ns (68.7 s); a cookie is valid in its count and the next. */
#define MP_COOKIE_CLOCK_SHIFT 36
#define MP_COOKIE_MAX_AGE 1
#define MP_COOKIE_HASH_BITS 24
#define MP_COOKIE_HASH_MASK ((1u << MP_COOKIE_HASH_BITS) - 1)
#define MP_COOKIE_MSS_COUNT 4

/* The client's options as the proxy keeps them (mp_conn.proxy_opts) and as the low bits of its
 * TSval carry them: window scale (0..14, MP_SYNOPT_WS_NONE without the option) and
 * SACK-permitted; in proxy_opts also whether timestamps are on and the MSS index. */
#define MP_SYNOPT_WS_MASK 0x0fu
#define MP_SYNOPT_WS_NONE 0x0fu
#define MP_SYNOPT_SACK 0x10u
#define MP_SYNOPT_TSVAL_MASK 0x1fu /* the bits of the TSval that carry options */
#define MP_SYNOPT_TS 0x20u
#define MP_SYNOPT_MSS_SHIFT 6

/* The MSS a cookie can say: the largest entry not above the client's MSS. */
MP_INLINE __u16 mp_cookie_mss(__u32 idx)
{
	switch (idx & 3) {
	case 0:
		return 536;
	case 1:
		return 1220;
	case 2:
		return 1440;
	default:
		return 1460;
	}
}

MP_INLINE __u32 mp_cookie_mss_index(__u16 mss)
{
	if (mss >= 1460)
		return 3;
	if (mss >= 1440)
		return 2;
	if (mss >= 1220)
		return 1;
	return 0;
}

/* SipHash-2-4 over whole 64-bit words. */
struct mp_sip {
	__u64 v0, v1, v2, v3;
};

#define MP_ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

MP_INLINE void mp_sip_round(struct mp_sip *s)
{
	s->v0 += s->v1;
	s->v1 = MP_ROTL64(s->v1, 13);
	s->v1 ^= s->v0;
	s->v0 = MP_ROTL64(s->v0, 32);
	s->v2 += s->v3;
	s->v3 = MP_ROTL64(s->v3, 16);
	s->v3 ^= s->v2;
	s->v0 += s->v3;
	s->v3 = MP_ROTL64(s->v3, 21);
	s->v3 ^= s->v0;
	s->v2 += s->v1;
	s->v1 = MP_ROTL64(s->v1, 17);
	s->v1 ^= s->v2;
	s->v2 = MP_ROTL64(s->v2, 32);
}

MP_INLINE void mp_sip_init(struct mp_sip *s, __u64 k0, __u64 k1)
{
	s->v0 = k0 ^ 0x736f6d6570736575ull;
	s->v1 = k1 ^ 0x646f72616e646f6dull;
	s->v2 = k0 ^ 0x6c7967656e657261ull;
	s->v3 = k1 ^ 0x7465646279746573ull;
}

MP_INLINE void mp_sip_word(struct mp_sip *s, __u64 m)
{
	s->v3 ^= m;
	mp_sip_round(s);
	mp_sip_round(s);
	s->v0 ^= m;
}

/* The hash of words whose total length is len bytes (a multiple of 8). */
MP_INLINE __u64 mp_sip_final(struct mp_sip *s, __u64 len)
{
	mp_sip_word(s, len << 56);
	s->v2 ^= 0xff;
	mp_sip_round(s);
	mp_sip_round(s);
	mp_sip_round(s);
	mp_sip_round(s);
	return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* The connection (the client's tuple toward the VIP and its ISN) in count's keyed hash: three
 * words for IPv4, six for IPv6. */
MP_INLINE __u32 mp_cookie_hash(const struct mp_syn_secret *key, const struct mp_flow *f, __u32 isn,
			       __u32 count)
{
	const mp_u32_any *src = (const mp_u32_any *)f->src, *dst = (const mp_u32_any *)f->dst;
	__u64 ports = (__u64)f->sport | (__u64)f->dport << 16 | (__u64)f->family << 32 |
		      (__u64)f->proto << 40;
	struct mp_sip s;

	/* 32-bit reads: a flow on the BPF stack is only 4-byte aligned. */
	mp_sip_init(&s, key->k0, key->k1);
	mp_sip_word(&s, (__u64)src[0] | (__u64)dst[0] << 32);
	if (f->family != MP_AF_INET) {
		mp_sip_word(&s, (__u64)src[1] | (__u64)src[2] << 32);
		mp_sip_word(&s, (__u64)src[3] | (__u64)dst[1] << 32);
		mp_sip_word(&s, (__u64)dst[2] | (__u64)dst[3] << 32);
	}
	mp_sip_word(&s, ports);
	mp_sip_word(&s, (__u64)isn | (__u64)count << 32);
	return (__u32)mp_sip_final(&s, f->family != MP_AF_INET ? 48 : 24);
}

/* The clock count at TAI time now_ns. */
MP_INLINE __u32 mp_cookie_count(__u64 now_ns)
{
	return (__u32)(now_ns >> MP_COOKIE_CLOCK_SHIFT);
}

/* The cookie of a connection whose mp_cookie_hash at clock count is h, for MSS index mss_idx. */
MP_INLINE __u32 mp_cookie_of(__u32 h, __u32 count, __u32 mss_idx)
{
	return (count << MP_COOKIE_HASH_BITS) | ((h + (mss_idx & 3)) & MP_COOKIE_HASH_MASK);
}

/* How many counts old a cookie says it is at clock count: 0..MP_COOKIE_MAX_AGE, or -1 (too
 * old, or from the future). Its hash is then taken at count - age. */
MP_INLINE int mp_cookie_age(__u32 cookie, __u32 count)
{
	__u32 age = (count - (cookie >> MP_COOKIE_HASH_BITS)) & 0xff;

	return age > MP_COOKIE_MAX_AGE ? -1 : (int)age;
}

/* The MSS index a cookie carries over its hash h (mp_cookie_hash at its count), or -1 when it
 * is not genuine. */
MP_INLINE int mp_cookie_data(__u32 cookie, __u32 h)
{
	__u32 data = (cookie - h) & MP_COOKIE_HASH_MASK;

	return data < MP_COOKIE_MSS_COUNT ? (int)data : -1;
}

/* The cookie for the client's SYN f (its ISN isn, its MSS index mss_idx) at clock count. */
MP_INLINE __u32 mp_cookie_make(const struct mp_syn_secret *key, const struct mp_flow *f, __u32 isn,
			       __u32 count, __u32 mss_idx)
{
	return mp_cookie_of(mp_cookie_hash(key, f, isn, count), count, mss_idx);
}

/* The MSS index (0..3) a cookie of f (ISN isn) carries if it is genuine and at most
 * MP_COOKIE_MAX_AGE counts old at clock count; -1 if not. */
MP_INLINE int mp_cookie_check(const struct mp_syn_secret *key, const struct mp_flow *f, __u32 isn,
			      __u32 cookie, __u32 count)
{
	int age = mp_cookie_age(cookie, count);

	if (age < 0)
		return -1;
	return mp_cookie_data(cookie, mp_cookie_hash(key, f, isn, count - (__u32)age));
}

/* The TSval the balancer answers a SYN with: the client's own TSval (so a SYN the proxy sends
 * to another endpoint later can carry a value the client's clock has passed) with its low bits
 * replaced by the options; opts: MP_SYNOPT_WS_* | MP_SYNOPT_SACK. */
MP_INLINE __u32 mp_cookie_tsval(__u32 client_tsval, __u32 opts)
{
	return (client_tsval & ~MP_SYNOPT_TSVAL_MASK) | (opts & MP_SYNOPT_TSVAL_MASK);
}

#endif /* MESHPATH_BPF_SYNCOOKIE_H */
