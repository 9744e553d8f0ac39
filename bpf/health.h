/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* health.h — passive health detection (nat mode): which packets are an endpoint's failures and
 * successes, what a failure or a success does to its mp_ep_health counters (which transitions
 * are events for meshd), the SYN -> SYN-ACK time's moving average, and the parser of an ICMP /
 * ICMPv6 destination unreachable that quotes one of the node's translated packets.
 * The map updates themselves (atomics, the ring buffer) are the program's; these functions
 * decide, and compile natively for the tests.
 */
#ifndef MESHPATH_BPF_HEALTH_H
#define MESHPATH_BPF_HEALTH_H

#include "compiler.h"
#include "abi.h"
#include "cursor.h"
#include "parse.h"

#define MP_ICMP_DEST_UNREACH 3
#define MP_ICMP_FRAG_NEEDED 4 /* code of MP_ICMP_DEST_UNREACH: a path MTU answer, not a failure */
#define MP_ICMPV6_DEST_UNREACH 1
#define MP_ICMP_HDR_LEN 8 /* type, code, checksum and 4 bytes (unused, or the next-hop MTU) */
#define MP_ICMP_QUOTED_L4 4 /* bytes of the quoted L4 header read: the ports */

/* Which events a failure raises, given `fails` before its atomic add and the endpoint's `fall`
 * (0: passive detection off, nothing is counted). Both when fall is 1. */
#define MP_HEV_F_SUSPECT (1u << MP_HEV_SUSPECT)
#define MP_HEV_F_DOWN (1u << MP_HEV_DOWN)
MP_INLINE __u32 mp_health_fail_events(__u32 old_fails, __u32 fall)
{
	__u32 events = 0;

	if (!fall)
		return 0;
	if (old_fails == 0)
		events |= MP_HEV_F_SUSPECT;
	/* Equality, not >=: fails keeps counting past fall, and only the crossing is an event. */
	if (old_fails + 1 == fall)
		events |= MP_HEV_F_DOWN;
	return events;
}

/* The moving average of the SYN -> SYN-ACK time with weight 1/8 (TCP's SRTT gain); the first
 * sample is taken as it is (avg 0 means "no sample yet"). Never 0 once sampled. */
MP_INLINE __u64 mp_rtt_average(__u64 avg, __u64 sample)
{
	__u64 next;

	if (!avg)
		return sample ? sample : 1;
	next = avg - (avg >> 3) + (sample >> 3);
	return next ? next : 1;
}

/* An ICMP message that says the packet it quotes did not reach its destination: ICMP type 3
 * (any code but "fragmentation needed", which asks for a smaller packet and is the kernel's
 * PMTU business) or ICMPv6 type 1. ICMPv6 "packet too big" is type 2: not counted either. */
MP_INLINE int mp_icmp_is_unreach(__u8 family, __u8 type, __u8 code)
{
	if (family == MP_AF_INET)
		return type == MP_ICMP_DEST_UNREACH && code != MP_ICMP_FRAG_NEEDED;
	return type == MP_ICMPV6_DEST_UNREACH;
}

/* The quoted packet's IP header at q, up to its L4 header: q->pos ends at the L4 header,
 * *proto, *src and *dst (16-byte views in the packet or zero-padded in out4) are filled.
 * Only what is read is bounds-checked: a quote is cut short by its sender (RFC 792: the IP
 * header and 8 bytes), so the inner lengths are not checked against the quote. */
MP_INLINE int mp_icmp_quote_ip(struct mp_cursor *q, __u8 family, __u8 *proto, const __u8 **src,
			       const __u8 **dst, __u8 *out4)
{
	__u32 hlen, i;

	if (family == MP_AF_INET) {
		struct iphdr *ip = (struct iphdr *)q->pos;

		if (MP_CURSOR_LACKS(q, ip, sizeof(*ip)) || ip->version != 4 || ip->ihl < 5)
			return MP_NOT_OURS;
		hlen = (__u32)ip->ihl * 4;
		/* A later fragment carries no ports. */
		if (MP_CURSOR_LACKS(q, ip, hlen) || (ip->frag_off & mp_htons(0x1fff)))
			return MP_NOT_OURS;
		*proto = ip->protocol;
		mp_memset(out4, 0, 32);
		*(mp_u32_any *)out4 = ip->saddr;
		*(mp_u32_any *)(out4 + 16) = ip->daddr;
		*src = out4;
		*dst = out4 + 16;
		q->pos += hlen;
		return MP_OK;
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)q->pos;
		__u8 nexthdr;

		if (MP_CURSOR_LACKS(q, ip6, sizeof(*ip6)) || ip6->version != 6)
			return MP_NOT_OURS;
		*src = (const __u8 *)&ip6->saddr;
		*dst = (const __u8 *)&ip6->daddr;
		nexthdr = ip6->nexthdr;
		q->pos += sizeof(*ip6);
		/* The balancer forwards a client's extension headers as they came: walk them as
		 * mp_parse_ipv6 does. A fragment header: no ports to trust. */
		for (i = 0; i < MP_IPV6_EXT_MAX; i++) {
			struct ipv6_opt_hdr *ext = (struct ipv6_opt_hdr *)q->pos;

			if (!mp_ipv6_is_ext(nexthdr) || nexthdr == IPPROTO_FRAGMENT)
				break;
			if (MP_CURSOR_LACKS(q, ext, sizeof(*ext)))
				return MP_NOT_OURS;
			hlen = ((__u32)ext->hdrlen + 1) * 8;
			if (MP_CURSOR_LACKS(q, ext, hlen))
				return MP_NOT_OURS;
			nexthdr = ext->nexthdr;
			q->pos += hlen;
		}
		*proto = nexthdr;
		return MP_OK;
	}
}

/* An ICMP / ICMPv6 destination unreachable at c->pos (p parsed up to it, family's node address
 * node_addr) that quotes a TCP or UDP packet sent from node_addr:port to some address:port:
 * *rkey gets the mp_rnat key of replies to that packet (address:port -> node:port), which
 * names the endpoint if the packet was one of ours. MP_OK, or MP_NOT_OURS for anything else,
 * malformed or cut short included (the kernel gets the packet either way). */
MP_INLINE int mp_parse_icmp_unreach(const struct mp_cursor *c, const struct mp_pkt *p, __u8 family,
				    const __u8 *node_addr, struct mp_flow *rkey)
{
	struct mp_cursor q = {.pos = c->pos, .end = c->end};
	const __u8 *src, *dst;
	__u8 addrs4[32];
	__u8 *icmp = c->pos, *ports;
	__u8 proto;

	if (p->l4_len < MP_ICMP_HDR_LEN || MP_CURSOR_LACKS(c, icmp, MP_ICMP_HDR_LEN))
		return MP_NOT_OURS;
	if (!mp_icmp_is_unreach(family, icmp[0], icmp[1]))
		return MP_NOT_OURS;
	q.pos = icmp + MP_ICMP_HDR_LEN;
	if (mp_icmp_quote_ip(&q, family, &proto, &src, &dst, addrs4) != MP_OK)
		return MP_NOT_OURS;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return MP_NOT_OURS;
	ports = q.pos;
	/* Bounds against the frame's end (what the verifier knows), then against the end the
	 * outer IP header declares (the frame may carry padding after it). */
	if (MP_CURSOR_LACKS(&q, ports, MP_ICMP_QUOTED_L4) ||
	    (__u64)(ports + MP_ICMP_QUOTED_L4 - icmp) > p->l4_len)
		return MP_NOT_OURS;
	if (family == MP_AF_INET ? *(const mp_u32_any *)src != *(const mp_u32_any *)node_addr
				 : !mp_addr16_eq(src, node_addr))
		return MP_NOT_OURS; /* not sent from the node's address: not a translated packet */

	mp_memset(rkey, 0, sizeof(*rkey));
	mp_copy_addr16(rkey->src, dst);
	mp_copy_addr16(rkey->dst, node_addr);
	rkey->sport = ((const mp_u16_any *)ports)[1];
	rkey->dport = ((const mp_u16_any *)ports)[0];
	rkey->proto = proto;
	rkey->family = family;
	return MP_OK;
}

#endif /* MESHPATH_BPF_HEALTH_H */
