// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_lb.bpf.c — meshpath's XDP balancer in NAT mode. A packet's whole path is mp_xdp_lb():
 * parse -> a reply to the node's own address is reverse-translated (mp_rnat) -> otherwise a
 * VIP's packet finds its endpoint (mp_conns, or the service's algorithm + a reserved SNAT port
 * for a new flow) -> DNAT + SNAT rewrite -> bpf_fib_lookup -> XDP_TX / redirect. On the way,
 * SYNs, SYN-ACKs, RSTs, UDP replies and ICMP unreachables feed each endpoint's passive health
 * (mp_ep_health, mp_events). Map lookups live here; the packet logic lives in the core headers,
 * which take their results as arguments.
 */
#include "compiler.h"

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "conn.h"
#include "exc.h"
#include "hash.h"
#include "health.h"
#include "maglev.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "pick.h"

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

/* The flow cache (flowcache.h): log2 of its slots per CPU (0: off) and how many jiffies a slot
 * serves, set by the loader (LbSkeletonOptions::flowCacheSlots, flowCacheTtlNs). */
const volatile __u32 flow_cache_bits = 16;
const volatile __u32 flow_cache_ttl = 62;

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

/* Is ep in use, for service svc_id, of this family? */
static __always_inline int mp_ep_usable(const struct mp_endpoint *ep, __u32 svc_id, __u8 family)
{
	return (ep->flags & MP_EP_F_IN_USE) && ep->svc_id == svc_id && ep->family == family;
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

/* One passive transition of an endpoint for meshd. A full ring loses the event, not the count:
 * meshd resyncs from mp_ep_health. */
static __always_inline void mp_health_event(__u32 ep_id, __u8 kind, __u8 reason, __u32 fails,
					    __u64 now)
{
	struct mp_health_event ev = {
		.ns = now,
		.ep_id = ep_id,
		.kind = kind,
		.reason = reason,
		.fails = fails,
	};

	bpf_ringbuf_output(&mp_events, &ev, sizeof(ev), 0);
}

/* A passive failure of endpoint ep_id (reason: enum mp_passive_reason), counted when its passive
 * detection is on (fall != 0); the failure that reaches fall marks it down. Returns 1 when the
 * endpoint is marked down, now or before. A global function: five paths reach it, and the
 * verifier checks it once. */
__attribute__((noinline)) int mp_health_fail(__u32 ep_id, __u32 reason)
{
	struct mp_ep_health *h = bpf_map_lookup_elem(&mp_ep_health, &ep_id);
	__u32 fall, old, events;
	__u64 now;

	if (!h)
		return 0;
	fall = h->fall;
	if (fall) {
		old = __sync_fetch_and_add(&h->fails, 1);
		events = mp_health_fail_events(old, fall);
		if (events) {
			now = bpf_ktime_get_ns();
			if (events & MP_HEV_F_DOWN) {
				__sync_fetch_and_or(&h->flags, MP_EPH_F_DOWN);
				h->down_ns = now;
			}
			if (events & MP_HEV_F_SUSPECT)
				mp_health_event(ep_id, MP_HEV_SUSPECT, reason, old + 1, now);
			if (events & MP_HEV_F_DOWN)
				mp_health_event(ep_id, MP_HEV_DOWN, reason, old + 1, now);
		}
	}
	return (h->flags & MP_EPH_F_DOWN) != 0;
}

/* A success of endpoint ep_id (its SYN-ACK, with the SYN -> SYN-ACK time rtt_ns, or 0; a UDP
 * reply): resets its consecutive failures. fails is read first, so a healthy endpoint's entry,
 * shared by all CPUs, is only read. rtt_ns is a plain store: two CPUs sampling the same
 * endpoint at once may lose one sample, which an average does not miss. */
static __always_inline void mp_health_ok(__u32 ep_id, __u64 rtt_ns)
{
	struct mp_ep_health *h = bpf_map_lookup_elem(&mp_ep_health, &ep_id);
	__u32 old;

	if (!h)
		return;
	if (rtt_ns)
		h->rtt_ns = mp_rtt_average(h->rtt_ns, rtt_ns);
	if (mp_likely(!h->fails))
		return;
	old = __sync_lock_test_and_set(&h->fails, 0);
	if (old)
		mp_health_event(ep_id, MP_HEV_RECOVERED, MP_PASSIVE_NONE, 0, bpf_ktime_get_ns());
}

/* Is endpoint ep_id marked down (mp_ep_health)? */
static __always_inline int mp_ep_down(__u32 ep_id)
{
	const struct mp_ep_health *h = bpf_map_lookup_elem(&mp_ep_health, &ep_id);

	return h && (h->flags & MP_EPH_F_DOWN);
}

/* One more TCP connection toward ep_id has closed (its close completed, or its flow moved to
 * another endpoint while open). */
static __always_inline void mp_ep_count_closed(__u32 ep_id)
{
	struct mp_ep_health *h = bpf_map_lookup_elem(&mp_ep_health, &ep_id);

	if (h)
		__sync_fetch_and_add(&h->closed, 1);
}

static __always_inline void mp_ep_count_opened(struct mp_ep_health *h)
{
	if (h)
		__sync_fetch_and_add(&h->opened, 1);
}

/* mp_conn_mark answered rc (nonzero): the connection toward ep_id closed with this packet. */
static __always_inline void mp_conn_closed(struct mp_conn *conn, __u32 ep_id, int rc)
{
	mp_conn_closed_at(conn, bpf_ktime_get_coarse_ns());
	if (rc & MP_CONN_CLOSED_COUNTED)
		mp_ep_count_closed(ep_id);
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

/* mp_transmit through a cached next hop nh (this CPU's entry for dst; NULL: none) while it is
 * fresh and for the same address and ingress device; a fresh answer refills it. */
static __always_inline int mp_transmit_via(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					   struct mp_nexthop *nh, const __u8 *src, const __u8 *dst,
					   __u16 sport, __u16 dport, __u64 jiffies)
{
	__u32 ingress = ctx->ingress_ifindex;
	struct bpf_fib_lookup fib;
	int rc;

	if (!nh)
		return mp_transmit(ctx, p, family, src, dst, sport, dport);
	if (nh->ingress == ingress && jiffies < nh->expires && mp_addr16_eq(nh->addr, dst))
		return mp_send(ctx, p, nh->ifindex, nh->smac, nh->dmac);

	rc = mp_fib(ctx, p, family, src, dst, sport, dport, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return mp_fib_failed(rc);
	mp_copy_addr16(nh->addr, dst);
	nh->expires = jiffies + MP_NH_CACHE_TTL_NS / tick_ns + 1;
	nh->ingress = ingress;
	nh->ifindex = fib.ifindex;
	mp_copy_mac(nh->smac, fib.smac);
	mp_copy_mac(nh->dmac, fib.dmac);
	return mp_send(ctx, p, fib.ifindex, fib.smac, fib.dmac);
}

/* Toward endpoint ep_id, through its entry in mp_nh_cache. */
static __always_inline int mp_transmit_to_ep(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					     __u32 ep_id, const struct mp_endpoint *ep,
					     const __u8 *node_addr, __u16 snat_port, __u64 jiffies)
{
	return mp_transmit_via(ctx, p, family, bpf_map_lookup_elem(&mp_nh_cache, &ep_id), node_addr,
			       ep->addr, snat_port, ep->port, jiffies);
}

/* The forwarding generation (abi.h, mp_fwd_gen). */
static __always_inline __u64 mp_fwd_gen_now(void)
{
	__u32 zero = 0;
	const struct mp_fwd_gen *g = bpf_map_lookup_elem(&mp_fwd_gen, &zero);

	return g ? g->gen : 0;
}

/* After the program itself changed where an existing flow goes: every CPU's slot of it is stale. */
static __always_inline void mp_fwd_gen_bump(void)
{
	__u32 zero = 0;
	struct mp_fwd_gen *g = bpf_map_lookup_elem(&mp_fwd_gen, &zero);

	if (g)
		__sync_fetch_and_add(&g->gen, 1);
}

/* What the flow cache holds for p on this CPU: its slot (NULL when p may not use the cache: it
 * is off, p opens, closes or resets a connection, or this CPU skips the cache while it thrashes),
 * whether the slot serves p, and whether another live flow holds it. mp_fc_account comes later,
 * once the outcome is known. mp_fc_lookup fills a zeroed probe. */
struct mp_fc_probe {
	struct mp_flow_cache_stats *st;
	struct mp_flow_slot *slot;
	int hit;
	int conflict;
};

static __always_inline void mp_fc_lookup(struct mp_fc_probe *fc, const struct mp_pkt *p, __u64 gen,
					 __u64 now)
{
	__u32 zero = 0, idx;
	int live;

	if (!flow_cache_bits || !mp_flow_cacheable(p->tcp_flags))
		return;
	fc->st = bpf_map_lookup_elem(&mp_fc_stats, &zero);
	if (!fc->st || mp_fc_bypass(fc->st))
		return;
	idx = mp_flow_slot_index(&p->flow, flow_cache_bits);
	fc->slot = bpf_map_lookup_elem(&mp_flow_cache, &idx);
	if (!fc->slot)
		return;
	live = mp_flow_slot_live(fc->slot, gen, now);
	fc->hit = live && mp_flow_eq(&fc->slot->flow, &p->flow);
	fc->conflict = live && !fc->hit;
}

/* The slow path's answer for p, into its slot (gen: the generation read before the slow path
 * looked anything up, so a change meshd makes meanwhile leaves the slot stale). */
static __always_inline void mp_fc_fill(struct mp_fc_probe *fc, const struct mp_pkt *p, __u64 gen,
				       __u64 now, __u32 ep_id, __u32 svc_id, __u16 snat_port)
{
	struct mp_flow_slot *slot = fc->slot;

	if (!slot || !fc->st)
		return;
	mp_memcpy(&slot->flow, &p->flow, sizeof(slot->flow));
	slot->expires = now + flow_cache_ttl;
	slot->gen = (__u32)gen;
	slot->ep_id = ep_id;
	slot->svc_id = svc_id;
	slot->snat_port = snat_port;
	mp_fc_account(fc->st, 0, fc->conflict);
}

/* A SYN, FIN or RST from the endpoint, on the connection's mp_conns entry (found by the client
 * tuple r restores, if that entry still uses this port toward this endpoint): a RST answering
 * the client's SYN is a passive failure, a SYN-ACK answering it a success (and a sample of the
 * SYN -> SYN-ACK time); FIN and RST are recorded as the connection's close. */
static __always_inline void mp_reply_tcp(const struct mp_pkt *p, __u8 family,
					 const struct mp_rnat *r)
{
	__u32 ep_id = r->ep_id, bits, answered;
	struct mp_conn *conn;
	struct mp_flow key;
	__u16 flags;
	int rc;

	mp_rnat_client_flow(&key, r, p->flow.proto, family);
	conn = bpf_map_lookup_elem(&mp_conns, &key);
	if (!conn || conn->snat_port != p->flow.dport || conn->ep_id != ep_id)
		return;
	flags = conn->flags;
	if ((p->tcp_flags & MP_TCP_RST) && (flags & MP_CONN_F_SYN_SENT) &&
	    !(flags & MP_CONN_F_CLOSING)) {
		mp_health_fail(ep_id, MP_PASSIVE_RST);
	} else if ((p->tcp_flags & (MP_TCP_SYN | MP_TCP_ACK | MP_TCP_RST | MP_TCP_FIN)) ==
		   (MP_TCP_SYN | MP_TCP_ACK)) {
		answered = mp_conn_answered(conn);
		if (answered)
			mp_health_ok(ep_id, mp_conn_syn_rtt(answered, conn->closed_ns,
							    bpf_ktime_get_ns()));
		return;
	}
	bits = mp_tcp_close_bits(p->tcp_flags, 0);
	if (bits && (rc = mp_conn_mark(conn, bits)))
		mp_conn_closed(conn, ep_id, rc);
}

/* An endpoint's reply to node:snat_port goes back to the client from VIP:port. */
static __always_inline int mp_reply(struct xdp_md *ctx, struct mp_pkt *p, __u8 family, __u64 bytes)
{
	const struct mp_endpoint *ep;
	const struct mp_rnat *r;
	__u32 slot;

	r = bpf_map_lookup_elem(&mp_rnat, &p->flow);
	if (!r)
		return XDP_PASS; /* the node's own traffic */
	ep = bpf_map_lookup_elem(&mp_endpoints, &r->ep_id);
	if (ep) {
		mp_count(&mp_svc_stats, ep->svc_id, bytes, 0);
		mp_count(&mp_ep_stats, r->ep_id, bytes, 0);
	}
	if (p->flow.proto == IPPROTO_UDP)
		mp_health_ok(r->ep_id, 0); /* the endpoint answers: a success */
	else if (mp_unlikely(p->tcp_flags & (MP_TCP_SYN | MP_TCP_FIN | MP_TCP_RST)))
		mp_reply_tcp(p, family, r);
	mp_nat_reverse(p, family, r);
	slot = mp_addr_slot_index(r->client, MP_NH_CLIENT_BITS);
	return mp_transmit_via(ctx, p, family, bpf_map_lookup_elem(&mp_nh_client, &slot), r->vip,
			       r->client, r->vip_port, r->client_port, bpf_jiffies64());
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
	/* The port's earlier flow may still have cache slots (its mp_conns entry was forgotten while
	 * they were live): they must not send its packets into the new flow's connection. */
	mp_fwd_gen_bump();
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

/* A pure SYN on an existing entry: the client retransmitting the SYN its endpoint has not
 * answered (a passive failure), or reopening a closed entry (a new connection on the same
 * endpoint and port, counted open). Returns 1 when the flow must be re-picked instead: its
 * endpoint is marked down and the connection never got its SYN-ACK, or is closed. */
static __always_inline int mp_conn_syn(struct mp_conn *conn, __u32 ep_id, __u64 *reopened)
{
	__u16 flags = conn->flags;
	__u32 old;

	if (flags & MP_CONN_F_CLOSING) {
		if (mp_ep_down(ep_id))
			return 1;
		old = mp_conn_reopen(conn, MP_CONN_F_SYN_SENT | MP_CONN_F_COUNTED);
		if (!old)
			return 0; /* another CPU reopened it meanwhile */
		conn->closed_ns = bpf_ktime_get_ns(); /* the SYN's time, for the SYN-ACK's sample */
		if (mp_conn_reopen_closes_counted(old))
			mp_ep_count_closed(ep_id);
		mp_ep_count_opened(bpf_map_lookup_elem(&mp_ep_health, &ep_id));
		*reopened = 1;
		return 0;
	}
	if (flags & MP_CONN_F_SYN_SENT)
		return mp_health_fail(ep_id, MP_PASSIVE_SYN_RETRANS);
	return 0;
}

/* The endpoint of an existing connection, or NULL when the flow starts over: its endpoint left
 * the service, or a pure SYN re-picks it (mp_conn_syn); the entry is retired then (counted
 * closed if it was open). A FIN or RST from the client is recorded; a pure SYN reopens a closed
 * entry (the client reuses its 5-tuple) and tells *reopened. */
static __always_inline const struct mp_endpoint *mp_conn_endpoint(struct mp_conn *conn,
								  const struct mp_pkt *p,
								  const struct mp_svc *svc,
								  __u8 family, __u64 *reopened)
{
	__u32 ep_id = conn->ep_id;
	const struct mp_endpoint *ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	__u32 bits;
	int rc;

	if (!ep || !mp_ep_usable(ep, svc->id, family))
		goto retire;
	if (mp_likely(!(p->tcp_flags & (MP_TCP_FIN | MP_TCP_RST | MP_TCP_SYN))))
		return ep;
	bits = mp_tcp_close_bits(p->tcp_flags, 1);
	if (bits) {
		rc = mp_conn_mark(conn, bits);
		if (rc)
			mp_conn_closed(conn, ep_id, rc);
	} else if (mp_tcp_opens(p->tcp_flags) && mp_conn_syn(conn, ep_id, reopened)) {
		/* Re-picked away from a down endpoint, which meshd may not know yet: the slots
		 * other CPUs hold for the flow must not outlive this. (An endpoint meshd removed
		 * was followed by meshd's own bump.) */
		mp_fwd_gen_bump();
		goto retire;
	}
	return ep;
retire:
	if (mp_conn_retire(conn))
		mp_ep_count_closed(ep_id);
	return NULL;
}

/* The ring index a new flow of a service whose algorithm is not Maglev picks (enum
 * mp_algorithm), in the active half, or MP_RING_EMPTY for a ring size out of range. The two
 * choices look their candidates' mp_ep_health up: one marked down loses. A global function
 * (checked once), called with scalars; it finds the ring itself. */
__attribute__((noinline)) __u32 mp_pick_index(__u32 svc_id, __u32 algorithm, __u32 ring_size,
					      __u32 active_half)
{
	const struct mp_ep_health *ha, *hb;
	__u32 base, a, b, *count;
	__u32 *ea, *eb;
	void *ring;
	int second;

	if (ring_size == 0 || ring_size > MP_RING_SIZE_MAX)
		return MP_RING_EMPTY;
	base = active_half ? ring_size : 0;
	if (algorithm == MP_ALG_ROUND_ROBIN) {
		count = bpf_map_lookup_elem(&mp_rr, &svc_id);
		if (!count)
			return MP_RING_EMPTY;
		return base + (*count)++ % ring_size; /* per CPU: no other writer */
	}
	a = base + bpf_get_prandom_u32() % ring_size;
	if (algorithm == MP_ALG_RANDOM)
		return a;
	b = base + bpf_get_prandom_u32() % ring_size;
	ring = bpf_map_lookup_elem(&mp_rings, &svc_id);
	if (!ring)
		return a;
	ea = bpf_map_lookup_elem(ring, &a);
	eb = bpf_map_lookup_elem(ring, &b);
	if (!ea || !eb)
		return a;
	/* MP_RING_EMPTY is beyond the array: no entry, and the first candidate stands. */
	ha = bpf_map_lookup_elem(&mp_ep_health, ea);
	hb = bpf_map_lookup_elem(&mp_ep_health, eb);
	if (!ha || !hb)
		return a;
	if (algorithm == MP_ALG_LEAST_CONN)
		second = mp_least_conn_second(mp_ep_active(ha->opened, ha->closed, ha->adjust),
					      mp_ep_active(hb->opened, hb->closed, hb->adjust),
					      ha->flags & MP_EPH_F_DOWN, hb->flags & MP_EPH_F_DOWN);
	else
		second = mp_least_latency_second(ha->rtt_ns, hb->rtt_ns, ha->flags & MP_EPH_F_DOWN,
						 hb->flags & MP_EPH_F_DOWN);
	return second ? b : a;
}

/* The endpoint of the first of the MP_DOWN_PROBES - 1 slots after idx (wrapping inside the
 * active half) that is not marked down, or MP_RING_EMPTY when all are. A global function: its
 * loop is checked once. */
__attribute__((noinline)) __u32 mp_skip_down(__u32 svc_id, __u32 idx, __u32 ring_size,
					     __u32 active_half)
{
	const struct mp_ep_health *h;
	__u32 i, next, *slot;
	void *ring;

	if (ring_size == 0 || ring_size > MP_RING_SIZE_MAX)
		return MP_RING_EMPTY;
	ring = bpf_map_lookup_elem(&mp_rings, &svc_id);
	if (!ring)
		return MP_RING_EMPTY;
#pragma clang loop unroll(disable)
	for (i = 1; i < MP_DOWN_PROBES; i++) {
		next = mp_ring_next(idx, i, ring_size, active_half);
		slot = bpf_map_lookup_elem(ring, &next);
		if (!slot || *slot == MP_RING_EMPTY)
			continue;
		h = bpf_map_lookup_elem(&mp_ep_health, slot);
		if (h && !(h->flags & MP_EPH_F_DOWN))
			return *slot;
	}
	return MP_RING_EMPTY;
}

/* A new flow (or one the LRU forgot, or re-picked: update_flags BPF_ANY then): the endpoint the
 * service's algorithm picks (the next slots' when it is marked down), and a SNAT port, recorded
 * in mp_conns with BPF_NOEXIST. When another CPU inserted the flow meanwhile (its first packets
 * on two CPUs), that entry wins and the port reserved here is given back. A TCP entry is
 * counted open (mp_ep_health.opened) by whoever inserts it; a pure SYN's entry waits for its
 * SYN-ACK (MP_CONN_F_SYN_SENT, the SYN's time in closed_ns). *snat_port comes back in network
 * order; *new_conn is 1 unless an existing open connection was found. */
static __always_inline int mp_new_conn(struct mp_pkt *p, __u8 family, const struct mp_svc *svc,
				       const struct mp_node_cfg *node, const __u8 *node_addr,
				       __u64 update_flags, const struct mp_endpoint **ep_out,
				       __u32 *ep_id, __u16 *snat_port, __u64 *new_conn)
{
	const struct mp_endpoint *ep, *other;
	struct mp_ep_health *health;
	struct mp_snat_ask ask;
	struct mp_conn *existing;
	struct mp_conn conn;
	__u32 idx, bits, algorithm, live;
	__u32 *slot;
	void *ring;
	int rc;

	ring = bpf_map_lookup_elem(&mp_rings, &svc->id);
	if (!ring)
		return MP_EXC_DROP_NO_ENDPOINT;
	algorithm = mp_algorithm_of(svc->algorithm);
	if (algorithm == MP_ALG_MAGLEV)
		idx = mp_ring_index(mp_flow_hash(&p->flow), svc->ring_size, svc->active_half);
	else
		idx = mp_pick_index(svc->id, algorithm, svc->ring_size, svc->active_half);
	slot = bpf_map_lookup_elem(ring, &idx);
	if (!slot || *slot == MP_RING_EMPTY)
		return MP_EXC_DROP_NO_ENDPOINT;
	*ep_id = *slot;
	health = bpf_map_lookup_elem(&mp_ep_health, ep_id);
	if (health && mp_unlikely(health->flags & MP_EPH_F_DOWN)) {
		/* All candidates down: the first pick stands (better a suspect than nothing). */
		live = mp_skip_down(svc->id, idx, svc->ring_size, svc->active_half);
		if (live != MP_RING_EMPTY) {
			*ep_id = live;
			health = bpf_map_lookup_elem(&mp_ep_health, ep_id);
		}
	}
	ep = bpf_map_lookup_elem(&mp_endpoints, ep_id);
	if (!ep || !mp_ep_usable(ep, svc->id, family))
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
	conn.closed_ns = 0;
	if (mp_conn_flags_closed(bits)) {
		conn.closed_ns = bpf_ktime_get_coarse_ns(); /* born closed (a RST): never counted */
	} else if (p->flow.proto == IPPROTO_TCP) {
		conn.flags |= MP_CONN_F_COUNTED;
		if (mp_tcp_opens(p->tcp_flags)) {
			conn.flags |= MP_CONN_F_SYN_SENT;
			conn.closed_ns = bpf_ktime_get_ns();
		}
	}
	*ep_out = ep;
	*new_conn = 1;
	if (bpf_map_update_elem(&mp_conns, &p->flow, &conn, update_flags) == 0)
		goto inserted;
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
			return MP_OK; /* its inserter counted it */
		}
		*new_conn = 1;
	}
	/* Gone meanwhile, or re-picked: this flow's entry replaces it. */
	if (bpf_map_update_elem(&mp_conns, &p->flow, &conn, BPF_ANY))
		return MP_EXC_DROP_CONN_INSERT;
inserted:
	if (conn.flags & MP_CONN_F_COUNTED)
		mp_ep_count_opened(health);
	return MP_OK;
}

/* A packet to a VIP goes to its connection's endpoint, from node:snat_port. */
static __always_inline int mp_to_service(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 const struct mp_node_cfg *node, const __u8 *node_addr,
					 __u64 bytes)
{
	__u64 update_flags = BPF_NOEXIST, new_conn = 0, jiffies, gen = 0;
	const struct mp_endpoint *ep = NULL;
	struct mp_conn *conn = NULL;
	struct mp_fc_probe fc = {};
	const struct mp_svc *svc;
	struct mp_svc_key key;
	__u16 snat_port;
	__u32 ep_id;
	int rc;

	jiffies =
		bpf_jiffies64(); /* inlined, where a clock read costs a third of the trivial program */
	if (node_addr) {
		gen = mp_fwd_gen_now();
		mp_fc_lookup(&fc, p, gen, jiffies);
		if (fc.hit) {
			ep_id = fc.slot->ep_id;
			ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
			if (ep && mp_ep_usable(ep, fc.slot->svc_id, family)) {
				snat_port = fc.slot->snat_port;
				mp_fc_account(fc.st, 1, 0);
				mp_count(&mp_svc_stats, fc.slot->svc_id, bytes, 0);
				goto forward;
			}
			ep = NULL; /* not reached while the generation does its job */
		}
	}

	mp_copy_addr16(key.addr, p->flow.dst);
	key.port = p->flow.dport;
	key.proto = p->flow.proto;
	key.family = family;
	svc = bpf_map_lookup_elem(&mp_services, &key);
	if (!svc)
		return XDP_PASS;
	if (!node_addr)
		return mp_exception(MP_EXC_DROP_NO_NODE_ADDR);

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

	/* A closing connection's packets keep taking the slow path, so no slot outlives its close. */
	if (new_conn || !conn || !(conn->flags & MP_CONN_F_CLOSING))
		mp_fc_fill(&fc, p, gen, jiffies, ep_id, svc->id, snat_port);
	mp_count(&mp_svc_stats, svc->id, bytes, new_conn);
forward:
	mp_count(&mp_ep_stats, ep_id, bytes, new_conn);
	mp_nat_forward(p, family, ep, node_addr, snat_port);
	return mp_transmit_to_ep(ctx, p, family, ep_id, ep, node_addr, snat_port, jiffies);
}

/* Well-formed IP that is neither TCP nor UDP is the kernel's (passed, uncounted). An ICMP /
 * ICMPv6 destination unreachable to the node's address that quotes one of its translated
 * packets is first a passive failure of the endpoint that packet went to (mp_rnat names it).
 * Malformed or cut-short ICMP counts nothing and passes too: the kernel judges it. */
static __always_inline int mp_not_ours(struct mp_cursor *c, const struct mp_pkt *p, __u8 family)
{
	const struct mp_node_cfg *node;
	const struct mp_rnat *r;
	const __u8 *node_addr;
	struct mp_flow rkey;
	__u32 zero = 0;

	if (p->flow.proto != (family == MP_AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6))
		return XDP_PASS;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node)
		return XDP_PASS;
	node_addr = mp_node_addr(node, family);
	if (!node_addr || !mp_addr_eq(p->flow.dst, node_addr, family))
		return XDP_PASS;
	if (mp_parse_icmp_unreach(c, p, family, node_addr, &rkey) != MP_OK)
		return XDP_PASS;
	r = bpf_map_lookup_elem(&mp_rnat, &rkey);
	if (r && r->ep_id != MP_RNAT_CLAIMED)
		mp_health_fail(r->ep_id, MP_PASSIVE_ICMP_UNREACH);
	return XDP_PASS;
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
	if (rc == MP_NOT_OURS)
		return mp_not_ours(c, p, family);
	if (rc != MP_OK)
		return mp_exception(rc);

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
