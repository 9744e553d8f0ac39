/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pg_frame.h — pktgen's frame writer, one copy for the BPF generator (live frames) and the
 * AF_PACKET fallback (native C++). Userspace builds a template of the headers in which every
 * field that varies per packet is zero (source address low word, source port, checksums, the
 * payload stamp) and the one's complement sums of that template; per packet, pg_write_frame()
 * copies the template over the frame and writes the varying fields and checksums from those
 * sums. Everything in the headers is rewritten each time: live frames are recycled as the last
 * receiver left them (a NAT on the way rewrites them in place).
 *
 * Packet n (0-based, counted over all threads) belongs to flow n % flows; flow f has source
 * port sport_min + f % nports and source address saddr_min + f / nports (IPv6: added to the low
 * 32 bits of the address).
 */
#ifndef MESHPATH_PG_FRAME_H
#define MESHPATH_PG_FRAME_H

#include "compiler.h"

#define PG_HDR_MAX 80		  /* Ethernet + IPv6 + TCP = 74 */
#define PG_STAMP_LEN 16		  /* magic, sequence, time: right after the L4 header */
#define PG_STAMP_MAGIC 0x4d504701 /* "MPG" 1, in network order in the frame */

enum pg_shape {
	PG_IPV4_UDP = 0,
	PG_IPV4_TCP = 1,
	PG_IPV6_UDP = 2,
	PG_IPV6_TCP = 3,
};

struct pg_config {
	__u8 tmpl[PG_HDR_MAX]; /* Ethernet + IP + L4 headers, varying fields zero */
	__u32 shape;	       /* enum pg_shape */
	__u32 flows;	       /* >= 1 */
	__u32 nports;	       /* >= 1 */
	__u16 sport_min;       /* host order */
	__u16 stamp;	       /* 1: write the payload stamp (frame has room for it) */
	__u32 saddr_min;       /* host order: IPv4 address, or the low 32 bits of the IPv6 one */
	__u32 ip_sum;	       /* IPv4 header words, unfolded (0 for IPv6) */
	__u32 l4_sum;	       /* pseudo-header + L4 header + payload words, unfolded */
};

struct pg_stamp {
	__u32 magic; /* network order */
	__u32 seq;   /* network order: packet number, low 32 bits */
	__u64 ns;    /* CLOCK_MONOTONIC at generation, host order */
};

#define PG_L3_OFF 14
#define PG_L4_OFF_V4 34
#define PG_L4_OFF_V6 54

MP_INLINE __u32 pg_hdr_len(__u32 shape)
{
	switch (shape) {
	case PG_IPV4_UDP:
		return PG_L4_OFF_V4 + 8;
	case PG_IPV4_TCP:
		return PG_L4_OFF_V4 + 20;
	case PG_IPV6_UDP:
		return PG_L4_OFF_V6 + 8;
	default:
		return PG_L4_OFF_V6 + 20;
	}
}

/* Sum of a 32-bit word as two 16-bit words, in the frame's byte order. */
MP_INLINE __u32 pg_word_sum(__u32 wire)
{
	return (wire >> 16) + (wire & 0xffff);
}

MP_INLINE __u16 pg_fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Writes packet seq into the frame [pos, end) per cfg. Returns 0, or -1 when the frame is too
 * short for the shape (cannot happen for frames built from the same config). */
MP_INLINE int pg_write_frame(__u8 *pos, __u8 *end, const struct pg_config *cfg, __u64 seq,
			     __u64 now_ns)
{
	__u32 flow = (__u32)(seq % cfg->flows);
	__u16 sport = mp_htons((__u16)(cfg->sport_min + flow % cfg->nports));
	__u32 saddr = mp_htonl(cfg->saddr_min + flow / cfg->nports);
	__u64 l4_sum = (__u64)cfg->l4_sum + pg_word_sum(saddr) + sport;
	__u8 *l4;
	__u32 l4_len;
	int v6 = cfg->shape >= PG_IPV6_UDP;
	int tcp = cfg->shape == PG_IPV4_TCP || cfg->shape == PG_IPV6_TCP;

	/* Constant-size copies per shape: the verifier needs fixed bounds. */
	switch (cfg->shape) {
	case PG_IPV4_UDP:
		if (pos + PG_L4_OFF_V4 + 8 > end)
			return -1;
		mp_memcpy(pos, cfg->tmpl, PG_L4_OFF_V4 + 8);
		break;
	case PG_IPV4_TCP:
		if (pos + PG_L4_OFF_V4 + 20 > end)
			return -1;
		mp_memcpy(pos, cfg->tmpl, PG_L4_OFF_V4 + 20);
		break;
	case PG_IPV6_UDP:
		if (pos + PG_L4_OFF_V6 + 8 > end)
			return -1;
		mp_memcpy(pos, cfg->tmpl, PG_L4_OFF_V6 + 8);
		break;
	default:
		if (pos + PG_L4_OFF_V6 + 20 > end)
			return -1;
		mp_memcpy(pos, cfg->tmpl, PG_L4_OFF_V6 + 20);
		break;
	}

	if (v6) {
		*(__u32 *)(pos + PG_L3_OFF + 8 + 12) = saddr;
		l4 = pos + PG_L4_OFF_V6;
	} else {
		__u8 *ip = pos + PG_L3_OFF;

		*(__u32 *)(ip + 12) = saddr;
		*(__u16 *)(ip + 10) = (__u16)~pg_fold((__u64)cfg->ip_sum + pg_word_sum(saddr));
		l4 = pos + PG_L4_OFF_V4;
	}
	*(__u16 *)l4 = sport;

	l4_len = tcp ? 20 : 8;
	if (cfg->stamp) {
		struct pg_stamp *st = (struct pg_stamp *)(l4 + l4_len);

		if ((__u8 *)(st + 1) > end)
			return -1;
		st->magic = mp_htonl(PG_STAMP_MAGIC);
		st->seq = mp_htonl((__u32)seq);
		st->ns = now_ns;
		l4_sum += pg_word_sum(st->magic) + pg_word_sum(st->seq) +
			  pg_word_sum((__u32)st->ns) + pg_word_sum((__u32)(st->ns >> 32));
	}

	if (tcp) {
		*(__u16 *)(l4 + 16) = (__u16)~pg_fold(l4_sum);
	} else {
		__u16 check = (__u16)~pg_fold(l4_sum);

		*(__u16 *)(l4 + 6) = check ? check : 0xffff;
	}
	return 0;
}

#endif /* MESHPATH_PG_FRAME_H */
