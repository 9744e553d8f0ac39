/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* parse.h — Ethernet (+ one VLAN tag), IPv4 (options, IHL, total length, fragments), IPv6 (a
 * bounded walk of extension headers), TCP and UDP. Each parser advances a cursor and returns
 * MP_OK, MP_NOT_OURS or the mp_exc_reason that names the packet's fault and its verdict.
 * The result, struct mp_pkt, holds the 5-tuple as the packet carries it (an mp_flow, the key of
 * mp_conns / mp_rnat) and where the headers are, for the rewrite in nat.h.
 * Lengths are checked against what the IP header declares as well as against the frame, so a
 * malformed packet never reaches the rewrite.
 */
#ifndef MESHPATH_BPF_PARSE_H
#define MESHPATH_BPF_PARSE_H

#include "compiler.h"

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "abi.h"
#include "cursor.h"
#include "exc.h"

struct mp_pkt {
	struct mp_flow flow; /* as the packet carries it; unused address bytes and pad are zero */
	__u8 *eth;	     /* Ethernet header (MACs) */
	__u8 *l3;	     /* struct iphdr or struct ipv6hdr */
	__u8 *l4;	     /* struct tcphdr or struct udphdr: the ports */
	__u8 *l4_check;	     /* the TCP or UDP checksum field */
	__u16 ip_len;	     /* L3 length the IP header declares (header included) */
	__u16 l4_len;	     /* bytes from l4 to the end of what the IP header declares */
	__u8 tcp_flags;	     /* TCP: the flags byte (MP_TCP_*); UDP: 0 */
};

/* The TCP flags byte (offset 13 of the header). */
#define MP_TCP_FIN 0x01
#define MP_TCP_SYN 0x02
#define MP_TCP_RST 0x04
#define MP_TCP_ACK 0x10

struct mp_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* Ethernet and at most one 802.1Q / 802.1ad tag; *proto gets the EtherType that follows. */
MP_INLINE int mp_parse_eth(struct mp_cursor *c, struct mp_pkt *p, __u16 *proto)
{
	struct ethhdr *eth = (struct ethhdr *)c->pos;
	struct mp_vlan_hdr *vlan;

	if (MP_CURSOR_LACKS(c, eth, sizeof(*eth)))
		return MP_EXC_DROP_ETH_TRUNC;
	p->eth = c->pos;
	*proto = eth->h_proto;
	c->pos += sizeof(*eth);
	if (*proto == mp_htons(ETH_P_8021Q) || *proto == mp_htons(ETH_P_8021AD)) {
		vlan = (struct mp_vlan_hdr *)c->pos;
		if (MP_CURSOR_LACKS(c, vlan, sizeof(*vlan)))
			return MP_EXC_DROP_ETH_TRUNC;
		*proto = vlan->encap_proto;
		c->pos += sizeof(*vlan);
	}
	return MP_OK;
}

MP_INLINE int mp_parse_ipv4(struct mp_cursor *c, struct mp_pkt *p)
{
	struct iphdr *ip = (struct iphdr *)c->pos;
	__u32 hlen, tot;

	if (MP_CURSOR_LACKS(c, ip, sizeof(*ip)))
		return MP_EXC_DROP_IP4_TRUNC;
	if (ip->version != 4)
		return MP_EXC_PASS_NON_IP; /* the EtherType lied; the kernel drops it */
	if (ip->ihl < 5)
		return MP_EXC_DROP_IP4_BAD_IHL;
	hlen = (__u32)ip->ihl * 4;
	if (MP_CURSOR_LACKS(c, ip, hlen))
		return MP_EXC_DROP_IP4_TRUNC;
	tot = mp_ntohs(ip->tot_len);
	if (tot < hlen || MP_CURSOR_LACKS(c, ip, tot))
		return MP_EXC_DROP_IP4_BAD_LEN;
	if (ip->frag_off & mp_htons(0x3fff)) /* MF flag or a fragment offset */
		return MP_EXC_PASS_IP4_FRAG;

	p->l3 = c->pos;
	p->ip_len = (__u16)tot;
	p->l4_len = (__u16)(tot - hlen);
	p->flow.family = MP_AF_INET;
	p->flow.proto = ip->protocol;
	*(mp_u32_any *)p->flow.src = ip->saddr;
	*(mp_u32_any *)p->flow.dst = ip->daddr;
	c->pos += hlen;
	return MP_OK;
}

MP_INLINE int mp_ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT;
}

MP_INLINE int mp_parse_ipv6(struct mp_cursor *c, struct mp_pkt *p)
{
	struct ipv6hdr *ip6 = (struct ipv6hdr *)c->pos;
	__u32 payload, ext_len, i;
	__u8 nexthdr;

	if (MP_CURSOR_LACKS(c, ip6, sizeof(*ip6)))
		return MP_EXC_DROP_IP6_TRUNC;
	if (ip6->version != 6)
		return MP_EXC_PASS_NON_IP;
	payload = mp_ntohs(ip6->payload_len);
	if (payload == 0 || MP_CURSOR_LACKS(c, ip6, sizeof(*ip6) + payload))
		return MP_EXC_DROP_IP6_BAD_LEN;

	p->l3 = c->pos;
	p->ip_len = (__u16)(sizeof(*ip6) + payload);
	p->flow.family = MP_AF_INET6;
	mp_copy_addr16(p->flow.src, &ip6->saddr);
	mp_copy_addr16(p->flow.dst, &ip6->daddr);
	nexthdr = ip6->nexthdr;
	c->pos += sizeof(*ip6);

	/* Hop-by-hop, routing and destination options are skipped; a fragment header hands the
	 * packet to the kernel (no ports in later fragments to balance on). */
	for (i = 0; i < MP_IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *ext = (struct ipv6_opt_hdr *)c->pos;

		if (!mp_ipv6_is_ext(nexthdr))
			break;
		if (nexthdr == IPPROTO_FRAGMENT)
			return MP_EXC_PASS_IP6_FRAG;
		if (MP_CURSOR_LACKS(c, ext, sizeof(*ext)))
			return MP_EXC_DROP_IP6_TRUNC;
		ext_len = ((__u32)ext->hdrlen + 1) * 8;
		if (ext_len > payload || MP_CURSOR_LACKS(c, ext, ext_len))
			return MP_EXC_DROP_IP6_TRUNC;
		payload -= ext_len;
		nexthdr = ext->nexthdr;
		c->pos += ext_len;
	}
	if (mp_ipv6_is_ext(nexthdr))
		return nexthdr == IPPROTO_FRAGMENT ? MP_EXC_PASS_IP6_FRAG
						   : MP_EXC_PASS_IP6_EXT_LIMIT;

	p->flow.proto = nexthdr;
	p->l4_len = (__u16)payload;
	return MP_OK;
}

MP_INLINE int mp_parse_tcp(struct mp_cursor *c, struct mp_pkt *p)
{
	struct tcphdr *tcp = (struct tcphdr *)c->pos;

	if (p->l4_len < sizeof(*tcp) || MP_CURSOR_LACKS(c, tcp, sizeof(*tcp)))
		return MP_EXC_DROP_L4_TRUNC;
	if (tcp->doff < 5 || (__u32)tcp->doff * 4 > p->l4_len)
		return MP_EXC_DROP_L4_BAD_LEN;
	p->l4 = c->pos;
	p->l4_check = (__u8 *)&tcp->check;
	p->tcp_flags = c->pos[13];
	p->flow.sport = tcp->source;
	p->flow.dport = tcp->dest;
	return MP_OK;
}

MP_INLINE int mp_parse_udp(struct mp_cursor *c, struct mp_pkt *p)
{
	struct udphdr *udp = (struct udphdr *)c->pos;
	__u32 len;

	if (p->l4_len < sizeof(*udp) || MP_CURSOR_LACKS(c, udp, sizeof(*udp)))
		return MP_EXC_DROP_L4_TRUNC;
	len = mp_ntohs(udp->len);
	/* Shorter than the IP payload is allowed (the kernel trims the rest), longer is not. */
	if (len < sizeof(*udp) || len > p->l4_len)
		return MP_EXC_DROP_L4_BAD_LEN;
	p->l4 = c->pos;
	p->l4_check = (__u8 *)&udp->check;
	p->tcp_flags = 0;
	p->flow.sport = udp->source;
	p->flow.dport = udp->dest;
	return MP_OK;
}

/* IPv4 or IPv6 (as family says) and then TCP or UDP. A constant family lets the BPF build
 * keep one straight path per family, which is also what lets the verifier see that an IPv6
 * header was bounds-checked for its 40 bytes wherever it is rewritten. */
MP_INLINE int mp_parse_ip(struct mp_cursor *c, struct mp_pkt *p, __u8 family)
{
	int rc;

	rc = family == MP_AF_INET ? mp_parse_ipv4(c, p) : mp_parse_ipv6(c, p);
	if (rc != MP_OK)
		return rc;
	if (p->flow.proto == IPPROTO_TCP)
		return mp_parse_tcp(c, p);
	if (p->flow.proto == IPPROTO_UDP)
		return mp_parse_udp(c, p);
	return MP_NOT_OURS;
}

/* The whole walk: MP_OK with *p filled, MP_NOT_OURS, or an mp_exc_reason. */
MP_INLINE int mp_parse(struct mp_cursor *c, struct mp_pkt *p)
{
	__u16 proto;
	int rc;

	mp_memset(&p->flow, 0, sizeof(p->flow));
	rc = mp_parse_eth(c, p, &proto);
	if (rc != MP_OK)
		return rc;
	if (proto == mp_htons(ETH_P_IP))
		return mp_parse_ip(c, p, MP_AF_INET);
	if (proto == mp_htons(ETH_P_IPV6))
		return mp_parse_ip(c, p, MP_AF_INET6);
	return MP_EXC_PASS_NON_IP;
}

#endif /* MESHPATH_BPF_PARSE_H */
