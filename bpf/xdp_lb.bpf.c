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
#include "exc.h"
#include "hash.h"
#include "maglev.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"

#define MP_KERNEL_AF_INET 2
#define MP_KERNEL_AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

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
					     const __u8 *node_addr, __u16 snat_port)
{
	struct mp_nexthop *nh = bpf_map_lookup_elem(&mp_nh_cache, &ep_id);
	__u32 ingress = ctx->ingress_ifindex;
	struct bpf_fib_lookup fib;
	__u64 now;
	int rc;

	if (!nh)
		return mp_transmit(ctx, p, family, node_addr, ep->addr, snat_port, ep->port);
	now = bpf_ktime_get_coarse_ns();
	if (nh->ingress == ingress && now < nh->expires_ns && mp_addr16_eq(nh->addr, ep->addr))
		return mp_send(ctx, p, nh->ifindex, nh->smac, nh->dmac);

	rc = mp_fib(ctx, p, family, node_addr, ep->addr, snat_port, ep->port, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return mp_fib_failed(rc);
	mp_copy_addr16(nh->addr, ep->addr);
	nh->expires_ns = now + MP_NH_CACHE_TTL_NS;
	nh->ingress = ingress;
	nh->ifindex = fib.ifindex;
	mp_copy_mac(nh->smac, fib.smac);
	mp_copy_mac(nh->dmac, fib.dmac);
	return mp_send(ctx, p, fib.ifindex, fib.smac, fib.dmac);
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
	mp_nat_reverse(p, family, r);
	return mp_transmit(ctx, p, family, r->vip, r->client, r->vip_port, r->client_port);
}

/* A new flow (or one the LRU forgot): the Maglev slot's endpoint and a free SNAT port, both
 * recorded. *snat_port comes back in network order. */
static __always_inline int mp_new_conn(struct mp_pkt *p, __u8 family, const struct mp_svc *svc,
				       const struct mp_node_cfg *node, const __u8 *node_addr,
				       const struct mp_endpoint **ep_out, __u32 *ep_id,
				       __u16 *snat_port)
{
	const struct mp_endpoint *ep;
	const struct mp_rnat *taken;
	struct mp_conn conn;
	struct mp_flow rkey;
	struct mp_rnat rval;
	__u32 idx, hash, i;
	__u32 *slot;
	void *ring;

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

	hash = mp_snat_hash(&p->flow);
	mp_rnat_value(&rval, &p->flow, *ep_id);
	for (i = 0; i < MP_SNAT_PROBES; i++) {
		*snat_port = mp_snat_port(hash, i, node->snat_port_min, node->snat_port_max);
		if (!*snat_port)
			break;
		mp_rnat_key(&rkey, &p->flow, ep, node_addr, *snat_port);
		if (bpf_map_update_elem(&mp_rnat, &rkey, &rval, BPF_NOEXIST) == 0)
			goto reserved;
		/* Taken: by this very flow when only its mp_conns entry was evicted, or when
		 * another CPU won the race for its first packet; then the port is ours. */
		taken = bpf_map_lookup_elem(&mp_rnat, &rkey);
		if (taken && mp_rnat_eq(taken, &rval))
			goto reserved;
	}
	return MP_EXC_DROP_SNAT_EXHAUSTED;

reserved:
	conn.ep_id = *ep_id;
	conn.snat_port = *snat_port;
	conn.flags = 0;
	conn.created_ns = bpf_ktime_get_coarse_ns(); /* a TSC read costs more than the rest */
	if (bpf_map_update_elem(&mp_conns, &p->flow, &conn, BPF_ANY))
		return MP_EXC_DROP_CONN_INSERT;
	*ep_out = ep;
	return MP_OK;
}

/* A packet to a VIP goes to its connection's endpoint, from node:snat_port. */
static __always_inline int mp_to_service(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 const struct mp_node_cfg *node, const __u8 *node_addr,
					 __u64 bytes)
{
	const struct mp_endpoint *ep = NULL;
	const struct mp_conn *conn;
	const struct mp_svc *svc;
	struct mp_svc_key key;
	__u64 new_conn = 0;
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

	conn = bpf_map_lookup_elem(&mp_conns, &p->flow);
	if (conn) {
		ep_id = conn->ep_id;
		snat_port = conn->snat_port;
		ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
		if (ep && !mp_ep_usable(ep, svc, family))
			ep = NULL; /* its endpoint left: the flow starts over */
	}
	if (!ep) {
		rc = mp_new_conn(p, family, svc, node, node_addr, &ep, &ep_id, &snat_port);
		if (rc != MP_OK)
			return mp_exception(rc);
		new_conn = 1;
	}

	mp_count(&mp_svc_stats, svc->id, bytes, new_conn);
	mp_count(&mp_ep_stats, ep_id, bytes, new_conn);
	mp_nat_forward(p, family, ep, node_addr, snat_port);
	return mp_transmit_to_ep(ctx, p, family, ep_id, ep, node_addr, snat_port);
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
