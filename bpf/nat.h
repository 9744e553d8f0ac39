/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* nat.h — the NAT rewrites of a parsed packet (struct mp_pkt) with incremental checksums:
 * forward (DNAT to the endpoint + SNAT to the node), reverse (a reply back to the client from
 * the VIP), and the SNAT port choice. IPv4 and IPv6, TCP and UDP; an IPv4 UDP checksum of 0
 * ("none") stays 0, and a UDP checksum that comes out 0 is sent as 0xffff (RFC 768).
 */
#ifndef MESHPATH_BPF_NAT_H
#define MESHPATH_BPF_NAT_H

#include "compiler.h"
#include "abi.h"
#include "csum.h"
#include "hash.h"
#include "parse.h"

/* The L4 part of a rewrite: ports, and the checksum by diff (the address changes) plus the
 * port changes. */
MP_INLINE void mp_nat_rewrite_l4(struct mp_pkt *p, __u8 family, __u64 diff, __u16 sport,
				 __u16 dport)
{
	mp_u16_any *ports = (mp_u16_any *)p->l4;
	mp_u16_any *check = (mp_u16_any *)p->l4_check;
	__u16 sum;

	diff = mp_csum_diff16(mp_csum_diff16(diff, ports[0], sport), ports[1], dport);
	ports[0] = sport;
	ports[1] = dport;
	if (p->flow.proto == IPPROTO_UDP) {
		if (*check == 0 && family == MP_AF_INET)
			return; /* IPv4 UDP without a checksum stays without */
		sum = mp_csum_apply(*check, diff);
		*check = sum ? sum : 0xffff;
		return;
	}
	*check = mp_csum_apply(*check, diff);
}

/* Rewrites both addresses and both ports of p. src/dst point at 16-byte addresses (an IPv4
 * address in the first 4 bytes); ports are in network order. family is p->flow.family; BPF
 * callers pass it as a constant so each family's code is its own verified path. */
MP_INLINE void mp_nat_rewrite(struct mp_pkt *p, __u8 family, const __u8 *src, const __u8 *dst,
			      __u16 sport, __u16 dport)
{
	__u64 diff;

	if (family == MP_AF_INET) {
		struct iphdr *ip = (struct iphdr *)p->l3;
		__u32 s = *(const mp_u32_any *)src, d = *(const mp_u32_any *)dst;

		/* The pseudo-header's addresses are the L4 checksum's too: one diff for both. */
		diff = mp_csum_diff32(mp_csum_diff32(0, ip->saddr, s), ip->daddr, d);
		ip->check = mp_csum_apply(ip->check, diff);
		ip->saddr = s;
		ip->daddr = d;
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)p->l3;

		diff = mp_csum_diff128(mp_csum_diff128(0, &ip6->saddr, src), &ip6->daddr, dst);
		mp_copy_addr16(&ip6->saddr, src);
		mp_copy_addr16(&ip6->daddr, dst);
	}
	mp_nat_rewrite_l4(p, family, diff, sport, dport);
}

/* Client -> VIP becomes node:snat_port -> endpoint. */
MP_INLINE void mp_nat_forward(struct mp_pkt *p, __u8 family, const struct mp_endpoint *ep,
			      const __u8 *node_addr, __u16 snat_port)
{
	mp_nat_rewrite(p, family, node_addr, ep->addr, snat_port, ep->port);
}

/* Endpoint -> node:snat_port becomes VIP -> client. */
MP_INLINE void mp_nat_reverse(struct mp_pkt *p, __u8 family, const struct mp_rnat *r)
{
	mp_nat_rewrite(p, family, r->vip, r->client, r->vip_port, r->client_port);
}

/* The probe-th SNAT candidate for a flow whose mp_snat_hash is hash: a port (network order) in
 * [min, max] (host order, inclusive) and, in *addr_idx, one of the n_addrs source addresses of
 * the node's pool; probe 0 of a flow is always the same pair. Later probes are rehashed rather
 * than stepped by a fixed stride, which would make flows that collide once collide on every
 * probe. 0 when the range is empty. */
MP_INLINE __u16 mp_snat_candidate(__u32 hash, __u32 probe, __u16 min, __u16 max, __u32 n_addrs,
				  __u32 *addr_idx)
{
	__u32 range;

	*addr_idx = 0;
	if (min == 0 || min > max)
		return 0;
	range = (__u32)max - min + 1;
	if (probe)
		hash = mp_jhash_3words(hash, probe, 0, MP_HASH_SEED_SNAT);
	if (n_addrs > 1)
		*addr_idx = (hash / range) % n_addrs;
	return mp_htons((__u16)(min + hash % range));
}

/* The port alone, for a pool of one address. */
MP_INLINE __u16 mp_snat_port(__u32 hash, __u32 probe, __u16 min, __u16 max)
{
	__u32 idx;

	return mp_snat_candidate(hash, probe, min, max, 1, &idx);
}

/* The mp_rnat key of the endpoint's replies to a connection: endpoint -> node:snat_port. */
MP_INLINE void mp_rnat_key(struct mp_flow *key, const struct mp_flow *client,
			   const struct mp_endpoint *ep, const __u8 *node_addr, __u16 snat_port)
{
	mp_memset(key, 0, sizeof(*key));
	mp_copy_addr16(key->src, ep->addr);
	mp_copy_addr16(key->dst, node_addr);
	key->sport = ep->port;
	key->dport = snat_port;
	key->proto = client->proto;
	key->family = client->family;
}

/* What a reply must be restored to: the client's tuple with the VIP. */
MP_INLINE void mp_rnat_value(struct mp_rnat *r, const struct mp_flow *client, __u32 ep_id)
{
	mp_copy_addr16(r->client, client->src);
	mp_copy_addr16(r->vip, client->dst);
	r->client_port = client->sport;
	r->vip_port = client->dport;
	r->ep_id = ep_id;
}

/* The mp_conns key of the client tuple an mp_rnat entry restores replies to. */
MP_INLINE void mp_rnat_client_flow(struct mp_flow *f, const struct mp_rnat *r, __u8 proto,
				   __u8 family)
{
	mp_copy_addr16(f->src, r->client);
	mp_copy_addr16(f->dst, r->vip);
	f->sport = r->client_port;
	f->dport = r->vip_port;
	f->proto = proto;
	f->family = family;
	f->pad = 0;
}

MP_INLINE int mp_rnat_eq(const struct mp_rnat *a, const struct mp_rnat *b)
{
	return mp_addr16_eq(a->client, b->client) && mp_addr16_eq(a->vip, b->vip) &&
	       a->client_port == b->client_port && a->vip_port == b->vip_port &&
	       a->ep_id == b->ep_id;
}

#endif /* MESHPATH_BPF_NAT_H */
