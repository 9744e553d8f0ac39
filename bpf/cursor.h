/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cursor.h — a read position in a packet and the one bounds check every parser uses.
 * In BPF the verifier only accepts a header access after a comparison of the packet pointer
 * against the frame's end; MP_CURSOR_LACKS is that comparison, written once.
 */
#ifndef MESHPATH_BPF_CURSOR_H
#define MESHPATH_BPF_CURSOR_H

#include "compiler.h"

struct mp_cursor {
	__u8 *pos; /* first byte not yet parsed */
	__u8 *end; /* one past the frame's last byte (data_end) */
};

/* True when fewer than n bytes are left from p to the frame's end. */
#define MP_CURSOR_LACKS(c, p, n) ((__u8 *)(p) + (n) > (c)->end)

/* Views of packet words at any offset (IP sits 2 bytes off a word after Ethernet); may_alias
 * keeps native builds honest under strict aliasing. */
#ifdef __bpf__
/* Not aligned(1) here: clang would split every access into bytes, and the verifier accepts
 * unaligned packet access on the architectures we run on. */
typedef __u16 __attribute__((may_alias)) mp_u16_any;
typedef __u32 __attribute__((may_alias)) mp_u32_any;
#else
typedef __u16 __attribute__((may_alias, aligned(1))) mp_u16_any;
typedef __u32 __attribute__((may_alias, aligned(1))) mp_u32_any;
#endif

MP_INLINE void mp_copy_addr16(void *dst, const void *src)
{
	mp_u32_any *d = (mp_u32_any *)dst;
	const mp_u32_any *s = (const mp_u32_any *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

/* A MAC address in three 16-bit moves instead of six byte moves and shifts. Not wider: MACs
 * sit 2 bytes off a word in struct bpf_fib_lookup, and BPF stack access must be aligned. */
MP_INLINE void mp_copy_mac(void *dst, const void *src)
{
	mp_u16_any *d = (mp_u16_any *)dst;
	const mp_u16_any *s = (const mp_u16_any *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
}

MP_INLINE int mp_addr16_eq(const void *a, const void *b)
{
	const mp_u32_any *x = (const mp_u32_any *)a;
	const mp_u32_any *y = (const mp_u32_any *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

#endif /* MESHPATH_BPF_CURSOR_H */
