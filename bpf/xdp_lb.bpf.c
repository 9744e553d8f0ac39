// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_lb.bpf.c — meshpath's XDP balancer in NAT mode. A packet's whole path is mp_xdp_lb():
 * parse -> a reply to the node's own address is reverse-translated (mp_rnat) -> otherwise a
 * VIP's packet finds its endpoint (mp_conns, or Maglev + a reserved SNAT port for a new flow)
 * -> DNAT + SNAT rewrite -> bpf_fib_lookup -> XDP_TX / redirect. Map lookups live here; the
 * packet logic lives in the core headers, which take their results as arguments.
 */
#include "compiler.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "conn.h"
#include "exc.h"
#include "hash.h"
#include "maglev.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"

#define MP_KERNEL_AF_INET 2
#define MP_KERNEL_AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* How long a closed TCP connection keeps its SNAT port from takeover (see conn.h and the
 * README). Read-only, set by the loader before load (LbSkeletonOptions::snatReuseNs). */
const volatile __u64 snat_reuse_ns = MP_SNAT_REUSE_NS_DEFAULT;

/* The kernel's tick (a jiffy) in ns, set by the loader; the default is HZ=250's. The per-packet
 * path counts time in jiffies: bpf_jiffies64() is inlined, a clock read costs a third of the
 * trivial program. */
const volatile __u64 tick_ns = 1000000000 / 250;

static __always_inline int mp_exception(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&mp_exc, &reason);

	if (n)
		*n += 1;
	return mp_exc_passes(reason) ? XDP_PASS : XDP_DROP;
}

static __always_inline void mp_count(void *stats, __u32 idx, __u64 bytes, __u64 new_conn)
{
	struct mp_counters *c = bpf_map_lookup_elem(stats, &idx);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
		c->new_conns += new_conn;
	}
}

static __always_inline int mp_ep_usable(const struct mp_endpoint *ep, const struct mp_svc *svc,
					__u8 family)
{
	return (ep->flags & MP_EP_F_IN_USE) && ep->svc_id == svc->id && ep->family == family;
}

/* The node's address of the packet's family, or NULL when it has none. */
static __always_inline const __u8 *mp_node_addr(const struct mp_node_cfg *node, __u8 family)
{
	if (family == MP_AF_INET)
		return node->has_addr4 ? node->addr4 : NULL;
	return node->has_addr6 ? node->addr6 : NULL;
}

static __always_inline int mp_addr_eq(const __u8 *a, const __u8 *b, __u8 family)
{
	if (family == MP_AF_INET)
		return *(const mp_u32_any *)a == *(const mp_u32_any *)b;
	return mp_addr16_eq(a, b);
}

/* Puts the next hop's MACs on the frame and sends it out of ifindex. */
static __always_inline int mp_send(struct xdp_md *ctx, struct mp_pkt *p, __u32 ifindex,
				   const __u8 *smac, const __u8 *dmac)
{
	struct ethhdr *eth = (struct ethhdr *)p->eth;
	int rc;

	mp_copy_mac(eth->h_dest, dmac);
	mp_copy_mac(eth->h_source, smac);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	rc = bpf_redirect(ifindex, 0);
	return rc == XDP_REDIRECT ? rc : mp_exception(MP_EXC_DROP_REDIRECT);
}

/* bpf_fib_lookup for the rewritten packet (now src:sport -> dst:dport). */
static __always_inline int mp_fib(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
				  const __u8 *src, const __u8 *dst, __u16 sport, __u16 dport,
				  struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->l4_protocol = p->flow.proto;
	fib->sport = sport;
	fib->dport = dport;
	fib->tot_len = p->ip_len;
	fib->ifindex = ctx->ingress_ifindex;
	if (family == MP_AF_INET) {
		fib->family = MP_KERNEL_AF_INET;
		fib->tos = ((struct iphdr *)p->l3)->tos;
		fib->ipv4_src = *(const mp_u32_any *)src;
		fib->ipv4_dst = *(const mp_u32_any *)dst;
	} else {
		fib->family = MP_KERNEL_AF_INET6;
		mp_copy_addr16(fib->ipv6_src, src);
		mp_copy_addr16(fib->ipv6_dst, dst);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

/* The verdict for a fib answer that is not SUCCESS. */
static __always_inline int mp_fib_failed(int rc)
{
	/* The kernel forwards the rewritten packet itself and resolves the neighbour on the way;
	 * the next packet of the flow finds it here. */
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return mp_exception(MP_EXC_PASS_NO_NEIGH);
	return mp_exception(MP_EXC_DROP_NO_ROUTE);
}

/* Sends the rewritten packet (now src:sport -> dst:dport) to its next hop. */
static __always_inline int mp_transmit(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
				       const __u8 *src, const __u8 *dst, __u16 sport, __u16 dport)
{
	struct bpf_fib_lookup fib;
	int rc;

	rc = mp_fib(ctx, p, family, src, dst, sport, dport, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return mp_fib_failed(rc);
	return mp_send(ctx, p, fib.ifindex, fib.smac, fib.dmac);
}

/* mp_transmit toward endpoint ep_id, through this CPU's cached next hop while it is fresh. */
static __always_inline int mp_transmit_to_ep(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					     __u32 ep_id, const struct mp_endpoint *ep,
					     const __u8 *node_addr, __u16 snat_port, __u64 jiffies)
{
	struct mp_nexthop *nh = bpf_map_lookup_elem(&mp_nh_cache, &ep_id);
	__u32 ingress = ctx->ingress_ifindex;
	struct bpf_fib_lookup fib;
	int rc;

	if (!nh)
		return mp_transmit(ctx, p, family, node_addr, ep->addr, snat_port, ep->port);
	if (nh->ingress == ingress && jiffies < nh->expires && mp_addr16_eq(nh->addr, ep->addr))
		return mp_send(ctx, p, nh->ifindex, nh->smac, nh->dmac);

	rc = mp_fib(ctx, p, family, node_addr, ep->addr, snat_port, ep->port, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return mp_fib_failed(rc);
	mp_copy_addr16(nh->addr, ep->addr);
	nh->expires = jiffies + MP_NH_CACHE_TTL_NS / tick_ns + 1;
	nh->ingress = ingress;
	nh->ifindex = fib.ifindex;
	mp_copy_mac(nh->smac, fib.smac);
	mp_copy_mac(nh->dmac, fib.dmac);
	return mp_send(ctx, p, fib.ifindex, fib.smac, fib.dmac);
}

/* A FIN or RST from the endpoint: recorded on the connection's mp_conns entry, found by the
 * client tuple r restores (if that entry still uses this port toward this endpoint). */
static __always_inline void mp_reply_closes(const struct mp_pkt *p, __u8 family,
					    const struct mp_rnat *r)
{
	struct mp_conn *conn;
	struct mp_flow key;

	mp_rnat_client_flow(&key, r, p->flow.proto, family);
	conn = bpf_map_lookup_elem(&mp_conns, &key);
	if (conn && conn->snat_port == p->flow.dport && conn->ep_id == r->ep_id &&
	    mp_conn_mark(conn, mp_tcp_close_bits(p->tcp_flags, 0)))
		mp_conn_closed_at(conn, bpf_ktime_get_coarse_ns());
}

/* An endpoint's reply to node:snat_port goes back to the client from VIP:port. */
static __always_inline int mp_reply(struct xdp_md *ctx, struct mp_pkt *p, __u8 family, __u64 bytes)
{
	const struct mp_endpoint *ep;
	const struct mp_rnat *r;

	r = bpf_map_lookup_elem(&mp_rnat, &p->flow);
	if (!r)
		return XDP_PASS; /* the node's own traffic */
	ep = bpf_map_lookup_elem(&mp_endpoints, &r->ep_id);
	if (ep) {
		mp_count(&mp_svc_stats, ep->svc_id, bytes, 0);
		mp_count(&mp_ep_stats, r->ep_id, bytes, 0);
	}
	if (mp_unlikely(p->tcp_flags & (MP_TCP_FIN | MP_TCP_RST)))
		mp_reply_closes(p, family, r);
	mp_nat_reverse(p, family, r);
	return mp_transmit(ctx, p, family, r->vip, r->client, r->vip_port, r->client_port);
}

/* The 8 bytes of an mp_rnat entry from client_port on, as one word: what a takeover claims. */
union __attribute__((may_alias)) mp_rnat_tail {
	struct {
		__u16 client_port;
		__u16 vip_port;
		__u32 ep_id;
	} f;
	__u64 word;
};

/* What mp_snat_reserve works from, on its caller's stack (a global function takes pointers). */
struct mp_snat_ask {
	struct mp_flow
		rkey; /* the mp_rnat key; dport is set per probe, the reserved port on MP_OK */
	struct mp_rnat rval; /* what the entry restores: the client's tuple */
	__u32 hash;	     /* mp_snat_hash of the client's flow */
	__u16 port_min;	     /* the node's SNAT range, host order */
	__u16 port_max;
};

/* Takes over the SNAT port ask->rkey names from the mp_rnat entry r holding it, if its holder
 * may give it up (mp_snat_reusable): claims it by compare-and-swap, so two new flows never
 * take the same port, then overwrites it and deletes the closed connection's mp_conns entry.
 * Returns 1 when the port is now ask's. */
static __always_inline int mp_snat_take_over(struct mp_rnat *r, struct mp_snat_ask *ask)
{
	union mp_rnat_tail *tail = (union mp_rnat_tail *)&r->client_port;
	union mp_rnat_tail seen, claimed;
	const struct mp_conn *owner;
	struct mp_flow owner_key;
	__u16 port = ask->rkey.dport;
	int closed;

	seen.word = tail->word;
	mp_rnat_client_flow(&owner_key, r, ask->rkey.proto, ask->rkey.family);
	owner = bpf_map_lookup_elem(&mp_conns, &owner_key);
	if (!mp_snat_reusable(seen.f.ep_id, owner, port, ask->rkey.proto, bpf_ktime_get_coarse_ns(),
			      snat_reuse_ns))
		return 0;
	/* The holder's own connection, closed (not a flow that has moved on): its entry goes. */
	closed = owner && owner->snat_port == port && owner->ep_id == seen.f.ep_id;
	claimed.word = seen.word;
	claimed.f.ep_id = MP_RNAT_CLAIMED;
	if (__sync_val_compare_and_swap(&tail->word, seen.word, claimed.word) != seen.word)
		return 0; /* another new flow claimed it first */
	if (bpf_map_update_elem(&mp_rnat, &ask->rkey, &ask->rval, BPF_ANY)) {
		__sync_val_compare_and_swap(&tail->word, claimed.word, seen.word);
		return 0;
	}
	if (closed)
		bpf_map_delete_elem(&mp_conns, &owner_key);
	return 1;
}

/* Reserves a SNAT port: the mp_rnat entry endpoint -> node:port that restores the client's
 * replies. Up to MP_SNAT_PROBES candidates; probe 0 is the flow's own hash, so a forgotten flow
 * asks for the port it had. The first pass takes the first free candidate (BPF_NOEXIST), or
 * keeps one that already restores this very flow (only mp_conns forgot it, or another CPU won
 * the race for its first packet). When every candidate is held, a second pass takes over the
 * first whose holder may give it up: closed for snat_reuse_ns, or its client tuple's forward
 * entry gone. MP_OK with the port (network order) in ask->rkey.dport, or an exception reason.
 * A global function: the verifier checks it once, not once per path that leads here. */
__attribute__((noinline)) int mp_snat_reserve(struct mp_snat_ask *ask)
{
	struct mp_rnat *r;
	__u16 port;
	__u32 i;

	if (!ask)
		return MP_EXC_DROP_SNAT_EXHAUSTED;
#pragma clang loop unroll(disable)
	for (i = 0; i < MP_SNAT_PROBES; i++) {
		port = mp_snat_port(ask->hash, i, ask->port_min, ask->port_max);
		if (!port)
			return MP_EXC_DROP_SNAT_EXHAUSTED; /* an empty range */
		ask->rkey.dport = port;
		/* Probe 0 inserts at once: in a range with room it is free. Later probes look
		 * first: the range is busy, and a failed LRU insert costs more than a lookup. */
		r = i ? bpf_map_lookup_elem(&mp_rnat, &ask->rkey) : NULL;
		if (!r) {
			if (!bpf_map_update_elem(&mp_rnat, &ask->rkey, &ask->rval, BPF_NOEXIST))
				return MP_OK;
			r = bpf_map_lookup_elem(&mp_rnat, &ask->rkey);
		}
		if (r && mp_rnat_eq(r, &ask->rval))
			return MP_OK;
	}
#pragma clang loop unroll(disable)
	for (i = 0; i < MP_SNAT_PROBES; i++) {
		ask->rkey.dport = mp_snat_port(ask->hash, i, ask->port_min, ask->port_max);
		r = bpf_map_lookup_elem(&mp_rnat, &ask->rkey);
		if (r && mp_snat_take_over(r, ask))
			return MP_OK;
	}
	return MP_EXC_DROP_SNAT_EXHAUSTED;
}

/* The endpoint of an existing connection, or NULL when it left the service (the flow starts
 * over). A FIN or RST from the client is recorded; a pure SYN reopens a closed entry (the
 * client reuses its 5-tuple) and tells *reopened. */
static __always_inline const struct mp_endpoint *mp_conn_endpoint(struct mp_conn *conn,
								  const struct mp_pkt *p,
								  const struct mp_svc *svc,
								  __u8 family, __u64 *reopened)
{
	__u32 ep_id = conn->ep_id;
	const struct mp_endpoint *ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	__u32 bits;

	if (!ep || !mp_ep_usable(ep, svc, family))
		return NULL;
	if (mp_likely(!(p->tcp_flags & (MP_TCP_FIN | MP_TCP_RST | MP_TCP_SYN))))
		return ep;
	bits = mp_tcp_close_bits(p->tcp_flags, 1);
	if (bits) {
		if (mp_conn_mark(conn, bits))
			mp_conn_closed_at(conn, bpf_ktime_get_coarse_ns());
	} else if (mp_tcp_opens(p->tcp_flags) && (conn->flags & MP_CONN_F_CLOSING)) {
		mp_conn_reopen(conn);
		*reopened = 1;
	}
	return ep;
}

/* A new flow (or one the LRU forgot, or whose endpoint left: update_flags BPF_ANY then): the
 * Maglev slot's endpoint and a SNAT port, recorded in mp_conns with BPF_NOEXIST. When another
 * CPU inserted the flow meanwhile (its first packets on two CPUs), that entry wins and the port
 * reserved here is given back. *snat_port comes back in network order; *new_conn is 1 unless
 * an existing open connection was found. */
static __always_inline int mp_new_conn(struct mp_pkt *p, __u8 family, const struct mp_svc *svc,
				       const struct mp_node_cfg *node, const __u8 *node_addr,
				       __u64 update_flags, const struct mp_endpoint **ep_out,
				       __u32 *ep_id, __u16 *snat_port, __u64 *new_conn)
{
	const struct mp_endpoint *ep, *other;
	struct mp_snat_ask ask;
	struct mp_conn *existing;
	struct mp_conn conn;
	__u32 idx, bits;
	__u32 *slot;
	void *ring;
	int rc;

	ring = bpf_map_lookup_elem(&mp_rings, &svc->id);
	if (!ring)
		return MP_EXC_DROP_NO_ENDPOINT;
	idx = mp_ring_index(mp_flow_hash(&p->flow), svc->ring_size, svc->active_half);
	slot = bpf_map_lookup_elem(ring, &idx);
	if (!slot || *slot == MP_RING_EMPTY)
		return MP_EXC_DROP_NO_ENDPOINT;
	*ep_id = *slot;
	ep = bpf_map_lookup_elem(&mp_endpoints, ep_id);
	if (!ep || !mp_ep_usable(ep, svc, family))
		return MP_EXC_DROP_NO_ENDPOINT;

	mp_rnat_key(&ask.rkey, &p->flow, ep, node_addr, 0);
	mp_rnat_value(&ask.rval, &p->flow, *ep_id);
	ask.hash = mp_snat_hash(&p->flow);
	ask.port_min = node->snat_port_min;
	ask.port_max = node->snat_port_max;
	rc = mp_snat_reserve(&ask);
	if (rc != MP_OK)
		return rc;
	*snat_port = ask.rkey.dport;

	bits = mp_tcp_close_bits(p->tcp_flags, 1);
	conn.ep_id = *ep_id;
	conn.snat_port = *snat_port;
	conn.flags = (__u16)bits;
	conn.closed_ns = mp_conn_flags_closed(bits) ? bpf_ktime_get_coarse_ns() : 0;
	*ep_out = ep;
	*new_conn = 1;
	if (bpf_map_update_elem(&mp_conns, &p->flow, &conn, update_flags) == 0)
		return MP_OK;
	if (update_flags != BPF_NOEXIST)
		return MP_EXC_DROP_CONN_INSERT;

	existing = bpf_map_lookup_elem(&mp_conns, &p->flow);
	if (existing) {
		*new_conn = 0;
		other = mp_conn_endpoint(existing, p, svc, family, new_conn);
		if (other) {
			if (existing->ep_id != *ep_id || existing->snat_port != *snat_port)
				bpf_map_delete_elem(&mp_rnat, &ask.rkey); /* reserved for nothing */
			*ep_id = existing->ep_id;
			*snat_port = existing->snat_port;
			*ep_out = other;
			return MP_OK;
		}
		*new_conn = 1;
	}
	/* Gone meanwhile, or its endpoint left the service: this flow's entry replaces it. */
	if (bpf_map_update_elem(&mp_conns, &p->flow, &conn, BPF_ANY))
		return MP_EXC_DROP_CONN_INSERT;
	return MP_OK;
}

/* A packet to a VIP goes to its connection's endpoint, from node:snat_port. */
static __always_inline int mp_to_service(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 const struct mp_node_cfg *node, const __u8 *node_addr,
					 __u64 bytes)
{
	__u64 update_flags = BPF_NOEXIST, new_conn = 0, jiffies;
	const struct mp_endpoint *ep = NULL;
	const struct mp_svc *svc;
	struct mp_svc_key key;
	struct mp_conn *conn;
	__u16 snat_port;
	__u32 ep_id;
	int rc;

	mp_copy_addr16(key.addr, p->flow.dst);
	key.port = p->flow.dport;
	key.proto = p->flow.proto;
	key.family = family;
	svc = bpf_map_lookup_elem(&mp_services, &key);
	if (!svc)
		return XDP_PASS;
	if (!node_addr)
		return mp_exception(MP_EXC_DROP_NO_NODE_ADDR);

	jiffies =
		bpf_jiffies64(); /* inlined, where a clock read costs a third of the trivial program */
	/* Looked up for a SYN too: skipping it (the insert would tell) measured no faster. */
	conn = bpf_map_lookup_elem(&mp_conns, &p->flow);
	if (conn) {
		ep_id = conn->ep_id;
		snat_port = conn->snat_port;
		ep = mp_conn_endpoint(conn, p, svc, family, &new_conn);
		update_flags = BPF_ANY; /* if its endpoint left, the flow starts over */
	}
	if (!ep) {
		rc = mp_new_conn(p, family, svc, node, node_addr, update_flags, &ep, &ep_id,
				 &snat_port, &new_conn);
		if (rc != MP_OK)
			return mp_exception(rc);
	}

	mp_count(&mp_svc_stats, svc->id, bytes, new_conn);
	mp_count(&mp_ep_stats, ep_id, bytes, new_conn);
	mp_nat_forward(p, family, ep, node_addr, snat_port);
	return mp_transmit_to_ep(ctx, p, family, ep_id, ep, node_addr, snat_port, jiffies);
}

/* Everything after Ethernet, for one family (a constant: each family is its own path). */
static __always_inline int mp_process(struct xdp_md *ctx, struct mp_cursor *c, struct mp_pkt *p,
				      __u8 family, __u64 bytes)
{
	const struct mp_node_cfg *node;
	const __u8 *node_addr;
	__u32 zero = 0;
	int rc;

	rc = mp_parse_ip(c, p, family);
	if (rc != MP_OK)
		return rc == MP_NOT_OURS ? XDP_PASS : mp_exception(rc);

	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node)
		return XDP_PASS; /* unreachable: an ARRAY always has entry 0 */
	node_addr = mp_node_addr(node, family);
	if (node_addr && mp_addr_eq(p->flow.dst, node_addr, family))
		return mp_reply(ctx, p, family, bytes);
	return mp_to_service(ctx, p, family, node, node_addr, bytes);
}

SEC("xdp")
int mp_xdp_lb(struct xdp_md *ctx)
{
	struct mp_cursor c = {
		.pos = (__u8 *)(long)ctx->data,
		.end = (__u8 *)(long)ctx->data_end,
	};
	__u64 bytes = c.end - c.pos;
	struct mp_pkt p;
	__u16 proto;
	int rc;

	mp_memset(&p.flow, 0, sizeof(p.flow));
	rc = mp_parse_eth(&c, &p, &proto);
	if (rc != MP_OK)
		return mp_exception(rc);
	if (proto == mp_htons(ETH_P_IP))
		return mp_process(ctx, &c, &p, MP_AF_INET, bytes);
	if (proto == mp_htons(ETH_P_IPV6))
		return mp_process(ctx, &c, &p, MP_AF_INET6, bytes);
	return mp_exception(MP_EXC_PASS_NON_IP);
}
