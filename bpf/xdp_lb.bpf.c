// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_lb.bpf.c — meshpath's XDP balancer in NAT mode. A packet's whole path is mp_xdp_lb():
 * parse -> a reply to one of the node's SNAT addresses is reverse-translated (mp_rnat, or
 * mp_hrnat while its flow is half-open) -> otherwise a VIP's packet finds its endpoint (mp_conns,
 * mp_half, or the service's algorithm + a reserved SNAT source for a new flow, which starts in
 * the half-open tables and is promoted to the established ones by its handshake) -> DNAT + SNAT
 * rewrite -> bpf_fib_lookup -> XDP_TX / redirect. On the way,
 * SYNs, SYN-ACKs, RSTs, UDP replies and ICMP unreachables feed each endpoint's passive health
 * (mp_ep_health, mp_events). A TCP service under SYN protection hands its stateless segments
 * and its proxied connections' segments to the program mp_xdp_syn (a tail call; the section
 * "SYN protection" below, bpf/README.md). Map lookups live here; the packet logic lives in the
 * core headers, which take their results as arguments.
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
#include "synguard.h"
#include "synproxy.h"

#define MP_KERNEL_AF_INET 2
#define MP_KERNEL_AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* SYN protection runs in a program of its own, reached by tail call (mp_syn_enter, below).
 * mp_syn_screen's answers beside MP_SYN_NOT_MINE: */
#define MP_SYN_ANSWER (-2)
#define MP_SYN_DROP (-3)
#define MP_SYN_OPEN 0
#define MP_SYN_OPEN_PROBE 4 /* + the MSS index: the segment is a zero-window probe (seq = ISN) */
/* What the SYN-protection program is asked to do with the packet (mp_syn_enter). */
enum mp_syn_do {
	MP_SYN_DO_ANSWER = 0, /* a SYN while protection is on: the cookie SYN-ACK */
	MP_SYN_DO_OPEN = 1,   /* an ACK whose cookie validated (arg: its MSS index, plus
			       * MP_SYN_OPEN_PROBE for a zero-window probe) */
	MP_SYN_DO_CLIENT = 2, /* a client's segment of a proxied connection */
	MP_SYN_DO_REPLY = 3,  /* an endpoint's segment of one */
	MP_SYN_DO_RETRY = 4,  /* the SYN to another endpoint (arg: the client's TSval) */
};

static __always_inline int mp_syn_enter(struct xdp_md *ctx, __u32 what, __u8 family, __u32 arg);

/* Jiffies a CPU drops new flows toward an endpoint without probing after it found every SNAT
 * candidate held (MP_SNAT_BACKOFF_NS_DEFAULT), and the least an entry's expiry moves before it
 * is written again (mp_conn_refresh). Set by the loader from tick_ns. */
const volatile __u64 snat_backoff = 25;
const volatile __u64 refresh_slack = 250;

/* bpf_jiffies64() at the last run of mp_xdp_clock: meshd's view of the program's clock, which
 * the entries' expiry is written in. */
__u64 clock_jiffies = 0;

/* The kernel's tick (a jiffy) in ns, set by the loader; the default is HZ=250's. The per-packet
 * path counts time in jiffies: bpf_jiffies64() is inlined, a clock read costs a third of the
 * trivial program. */
const volatile __u64 tick_ns = 1000000000 / 250;

/* Send a frame back out of the port it came in on by bpf_redirect rather than XDP_TX, set by
 * the loader on veth: a veth's XDP_TX reaches its peer only when the peer runs an XDP program
 * of its own (the frame waits in the peer's ring for a NAPI run nothing schedules), where a
 * redirect into the same veth flushes it. Physical NICs keep XDP_TX, the cheaper of the two. */
const volatile __u32 tx_redirect = 0;

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

/* How many SNAT sources the node has for the family (0..MP_SNAT_ADDRS_MAX). */
static __always_inline __u32 mp_node_n_addrs(const struct mp_node_cfg *node, __u8 family)
{
	__u32 n = family == MP_AF_INET ? node->n_addr4 : node->n_addr6;

	return n < MP_SNAT_ADDRS_MAX ? n : MP_SNAT_ADDRS_MAX;
}

/* The node's idx-th SNAT source of the family (idx below mp_node_n_addrs). */
static __always_inline const __u8 *mp_node_addr(const struct mp_node_cfg *node, __u8 family,
						__u32 idx)
{
	/* Verifier: clang proves idx < 8 from how callers compute it and drops the mask; the
	 * verifier cannot follow that proof, so the mask is kept behind an empty asm. */
	asm volatile("" : "+r"(idx));
	idx &= MP_SNAT_ADDRS_MAX - 1;
	return family == MP_AF_INET ? node->addr4[idx] : node->addr6[idx];
}

static __always_inline int mp_addr_eq(const __u8 *a, const __u8 *b, __u8 family)
{
	if (family == MP_AF_INET)
		return *(const mp_u32_any *)a == *(const mp_u32_any *)b;
	return mp_addr16_eq(a, b);
}

/* Is addr one of the node's SNAT sources (so a packet to it is an endpoint's reply)? A pool is a
 * handful of addresses: a bounded compare of each beats a hash lookup on every packet, and the
 * first (the only one on most nodes) is compared inline. */
static __always_inline int mp_node_owns(const struct mp_node_cfg *node, __u8 family,
					const __u8 *addr)
{
	__u32 i, n = mp_node_n_addrs(node, family);

	if (n && mp_addr_eq(addr, mp_node_addr(node, family, 0), family))
		return 1;
#pragma clang loop unroll(disable)
	for (i = 1; i < n; i++) {
		if (mp_addr_eq(addr, mp_node_addr(node, family, i), family))
			return 1;
	}
	return 0;
}

/* The lifetime (jiffies) of state idx (enum mp_tmo) for service svc_id; 0 (expired at once)
 * when there is none. */
static __always_inline __u64 mp_tmo(const struct mp_svc_tmo *t, __u32 idx)
{
	if (!t || idx >= MP_TMO_MAX)
		return 0;
	return t->jiffies[idx];
}

/* Gives an entry the lifetime its state (flags now), protocol and table call for. */
static __always_inline void mp_conn_live(struct mp_conn *conn, __u8 proto, int established,
					 const struct mp_svc_tmo *t, __u64 now)
{
	mp_conn_refresh(conn, now, mp_tmo(t, mp_conn_tmo_index(conn->flags, proto, established)),
			refresh_slack);
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

/* After the program itself changed where an existing flow goes: every CPU's slot of it is stale. */
static __always_inline void mp_fwd_gen_bump(void)
{
	__u32 zero = 0;
	struct mp_fwd_gen *g = bpf_map_lookup_elem(&mp_fwd_gen, &zero);

	if (g)
		__sync_fetch_and_add(&g->gen, 1);
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
				/* The flow cache serves established flows without looking at health:
				 * its UDP slots toward this endpoint must come back to the tables,
				 * which move them (mp_conn_endpoint). */
				mp_fwd_gen_bump();
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

/* mp_conn_mark answered rc (nonzero): the connection toward ep_id closed with this packet (the
 * caller shortens its lifetime with mp_conn_live). */
static __always_inline void mp_conn_closed(__u32 ep_id, int rc)
{
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
	if (ifindex == ctx->ingress_ifindex && !tx_redirect)
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

/* Sends the packet through a fresh bpf_fib_lookup (into *fib), which refills the cached next
 * hop nh (this CPU's entry for dst; NULL: none). */
static __always_inline int mp_transmit_fib(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					   struct mp_nexthop *nh, const __u8 *src, const __u8 *dst,
					   __u16 sport, __u16 dport, __u64 jiffies,
					   struct bpf_fib_lookup *fib)
{
	__u32 ingress = ctx->ingress_ifindex;
	int rc;

	rc = mp_fib(ctx, p, family, src, dst, sport, dport, fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return mp_fib_failed(rc);
	if (nh) {
		mp_copy_addr16(nh->addr, dst);
		nh->expires = jiffies + MP_NH_CACHE_TTL_NS / tick_ns + 1;
		nh->ingress = ingress;
		nh->ifindex = fib->ifindex;
		mp_copy_mac(nh->smac, fib->smac);
		mp_copy_mac(nh->dmac, fib->dmac);
	}
	return mp_send(ctx, p, fib->ifindex, fib->smac, fib->dmac);
}

/* Verifier: room for a bpf_fib_lookup outside the stack, which mp_xdp_lb and the calls below
 * it share (512 bytes); per CPU, as XDP does not nest on a CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_fib_lookup);
} mp_fib_tmp SEC(".maps");

/* Sends the rewritten packet (now src:sport -> dst:dport) to its next hop, through a cached
 * next hop nh as mp_transmit_fib does. */
static __always_inline int mp_transmit_via(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					   struct mp_nexthop *nh, const __u8 *src, const __u8 *dst,
					   __u16 sport, __u16 dport, __u64 jiffies)
{
	struct bpf_fib_lookup *fib;
	__u32 zero = 0;

	if (nh && nh->ingress == ctx->ingress_ifindex && jiffies < nh->expires &&
	    mp_addr16_eq(nh->addr, dst))
		return mp_send(ctx, p, nh->ifindex, nh->smac, nh->dmac);
	fib = bpf_map_lookup_elem(&mp_fib_tmp, &zero);
	if (!fib)
		return mp_exception(MP_EXC_DROP_NO_ROUTE); /* not reached: entry 0 exists */
	return mp_transmit_fib(ctx, p, family, nh, src, dst, sport, dport, jiffies, fib);
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
				       __u64 now, __u32 ep_id, __u32 svc_id, __u16 snat_port,
				       __u32 snat_addr)
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
	slot->snat_addr = (__u8)snat_addr;
	mp_fc_account(fc->st, 0, fc->conflict);
}

/* What mp_promote moves, on its caller's stack (a global function takes pointers). */
struct mp_promote_ask {
	struct mp_flow flow; /* the client's tuple: the key in mp_half, then mp_conns */
	struct mp_flow rkey; /* the reply's tuple: the key in mp_hrnat, then mp_rnat */
	struct mp_rnat rval; /* what the reverse entry restores; mp_hrnat's must still say so */
	struct mp_conn conn; /* the established entry */
};

/* Verifier: the stack of mp_xdp_lb plus mp_snat_reserve's must fit 512 bytes; a promotion's
 * 144 bytes of arguments live in this per-CPU scratch entry instead (XDP does not nest on a
 * CPU, so one entry is enough). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_promote_ask);
} mp_promote_tmp SEC(".maps");

static __always_inline struct mp_promote_ask *mp_promote_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mp_promote_tmp, &zero);
}

/* mp_promote's answer when another CPU promoted the same flow first (it counts the open). */
#define MP_PROMOTED_ELSEWHERE (-3)

/* Moves a half-open flow into the established tables: mp_conns first, then mp_rnat, then the
 * half-open entries go. In that order a reply always finds one of the reverse entries, and a new
 * flow reserving the same port cannot slip in (mp_snat_reserve looks at mp_rnat after its
 * mp_hrnat insert). When the half-open reverse entry no longer restores this flow (the port was
 * taken over after the flow expired or the LRU forgot it) the flow is lost: MP_EXC_DROP_HALF_LOST.
 * A full established table: MP_EXC_DROP_CONN_TABLE_FULL, and nothing changes (the flow stays
 * half-open until it expires; a retransmission tries again). A global function: three paths
 * call it and the verifier checks it once. */
__attribute__((noinline)) int mp_promote(struct mp_promote_ask *a)
{
	struct mp_rnat *hr;

	if (!a)
		return MP_EXC_DROP_HALF_LOST;
	if (a->conn.snat_addr == MP_SNAT_NONE) { /* DNAT: no reverse entry, one insert */
		if (bpf_map_update_elem(&mp_conns, &a->flow, &a->conn, BPF_NOEXIST)) {
			if (bpf_map_lookup_elem(&mp_conns, &a->flow))
				return MP_PROMOTED_ELSEWHERE;
			return MP_EXC_DROP_CONN_TABLE_FULL;
		}
		bpf_map_delete_elem(&mp_half, &a->flow);
		return MP_OK;
	}
	hr = bpf_map_lookup_elem(&mp_hrnat, &a->rkey);
	if (!hr || !mp_rnat_eq(hr, &a->rval)) {
		bpf_map_delete_elem(&mp_half, &a->flow);
		return MP_EXC_DROP_HALF_LOST;
	}
	if (bpf_map_update_elem(&mp_conns, &a->flow, &a->conn, BPF_NOEXIST)) {
		if (bpf_map_lookup_elem(&mp_conns, &a->flow))
			return MP_PROMOTED_ELSEWHERE;
		return MP_EXC_DROP_CONN_TABLE_FULL;
	}
	if (bpf_map_update_elem(&mp_rnat, &a->rkey, &a->rval, BPF_ANY)) {
		bpf_map_delete_elem(&mp_conns, &a->flow);
		return MP_EXC_DROP_CONN_TABLE_FULL;
	}
	bpf_map_delete_elem(&mp_hrnat, &a->rkey);
	bpf_map_delete_elem(&mp_half, &a->flow);
	return MP_OK;
}

/* Promotes the half-open flow ask->flow (its entry half, restored by ask->rkey -> ask->rval,
 * both filled by the caller), established from now on with its lifetime from t. A TCP
 * connection is counted open here, once, by the CPU that promoted it. */
static __always_inline int mp_promote_flow(struct mp_promote_ask *ask, const struct mp_conn *half,
					   const struct mp_svc_tmo *t, __u64 now)
{
	__u8 proto = ask->flow.proto;
	int rc;

	mp_memcpy(&ask->conn, half, sizeof(ask->conn));
	if (proto == IPPROTO_TCP)
		ask->conn.flags |= MP_CONN_F_COUNTED;
	ask->conn.flags &= ~MP_CONN_F_SYNACK;
	ask->conn.expires = now + mp_tmo(t, mp_conn_tmo_index(ask->conn.flags, proto, 1));
	rc = mp_promote(ask);
	if (rc == MP_OK && proto == IPPROTO_TCP)
		mp_ep_count_opened(bpf_map_lookup_elem(&mp_ep_health, &ask->conn.ep_id));
	return rc == MP_PROMOTED_ELSEWHERE ? MP_OK : rc;
}

/* A SYN, FIN or RST from the endpoint, on the connection's entry (in mp_half when r came from
 * mp_hrnat, else mp_conns; found by the client tuple r restores, if that entry still uses this
 * port toward this endpoint): a RST answering the client's SYN is a passive failure, a SYN-ACK
 * answering it a success (and a sample of the SYN -> SYN-ACK time, and on a half-open entry the
 * mark that lets the client's ACK promote it); FIN and RST are recorded as the connection's
 * close, which shortens its lifetime. */
static __always_inline void mp_reply_tcp(const struct mp_pkt *p, __u8 family,
					 const struct mp_rnat *r, int half,
					 const struct mp_svc_tmo *t, __u64 now)
{
	union mp_conn_port_flags synack = {.f = {.snat_port = 0, .flags = MP_CONN_F_SYNACK}};
	__u32 ep_id = r->ep_id & MP_RNAT_EP_MASK, bits, answered;
	struct mp_conn *conn;
	struct mp_flow key;
	__u16 flags;
	int rc;

	mp_rnat_client_flow(&key, r, p->flow.proto, family);
	conn = half ? bpf_map_lookup_elem(&mp_half, &key) : bpf_map_lookup_elem(&mp_conns, &key);
	if (!conn || conn->snat_port != p->flow.dport || conn->ep_id != ep_id)
		return;
	flags = conn->flags;
	if ((p->tcp_flags & MP_TCP_RST) && (flags & MP_CONN_F_SYN_SENT) &&
	    !(flags & MP_CONN_F_CLOSING)) {
		mp_health_fail(ep_id, MP_PASSIVE_RST);
	} else if ((p->tcp_flags & (MP_TCP_SYN | MP_TCP_ACK | MP_TCP_RST | MP_TCP_FIN)) ==
		   (MP_TCP_SYN | MP_TCP_ACK)) {
		if (half && !(flags & (MP_CONN_F_SYNACK | MP_CONN_F_CLOSING)))
			__sync_fetch_and_or(mp_conn_word(conn), synack.word);
		answered = mp_conn_answered(conn);
		if (answered)
			mp_health_ok(ep_id,
				     mp_conn_syn_rtt(answered, conn->syn_ns, bpf_ktime_get_ns()));
		mp_conn_live(conn, p->flow.proto, !half, t, now);
		return;
	}
	bits = mp_tcp_close_bits(p->tcp_flags, 0);
	if (bits && (rc = mp_conn_mark(conn, bits)))
		mp_conn_closed(ep_id, rc);
	mp_conn_live(conn, p->flow.proto, !half, t, now);
}

/* The endpoint's first answer to a half-open UDP flow: the flow is established (udp_replied). */
static __always_inline void mp_reply_udp_half(const struct mp_pkt *p, __u8 family,
					      const struct mp_rnat *r, const struct mp_svc_tmo *t,
					      __u64 now)
{
	struct mp_promote_ask *ask = mp_promote_scratch();
	struct mp_conn *conn;

	if (!ask)
		return;
	mp_rnat_client_flow(&ask->flow, r, p->flow.proto, family);
	conn = bpf_map_lookup_elem(&mp_half, &ask->flow);
	if (!conn || conn->snat_port != p->flow.dport || conn->ep_id != r->ep_id)
		return;
	mp_memcpy(&ask->rkey, &p->flow, sizeof(ask->rkey));
	mp_memcpy(&ask->rval, r, sizeof(ask->rval));
	/* A full table leaves the flow half-open: this answer still goes back, and a later one
	 * tries again. */
	mp_promote_flow(ask, conn, t, now);
}

/* An endpoint's reply goes back to the client from VIP:port, as r (a copy: promotion deletes the
 * half-open entry under us) restores it; half: the flow is half-open. */
static __always_inline int mp_reply_to_client(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					      __u64 bytes, struct mp_rnat *r, int half)
{
	const struct mp_svc_tmo *t = NULL;
	const struct mp_endpoint *ep;
	__u32 slot, ep_id = r->ep_id;
	__u64 now;

	if (mp_unlikely(ep_id & MP_RNAT_F_PROXY))
		return mp_syn_enter(ctx, MP_SYN_DO_REPLY, family, 0);
	ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	if (ep) {
		mp_count(&mp_svc_stats, ep->svc_id, bytes, 0);
		mp_count(&mp_ep_stats, ep_id, bytes, 0);
		t = bpf_map_lookup_elem(&mp_svc_tmo, &ep->svc_id);
	}
	now = bpf_jiffies64();
	if (p->flow.proto == IPPROTO_UDP) {
		mp_health_ok(ep_id, 0); /* the endpoint answers: a success */
		if (half)
			mp_reply_udp_half(p, family, r, t, now);
	} else if (mp_unlikely(p->tcp_flags & (MP_TCP_SYN | MP_TCP_FIN | MP_TCP_RST))) {
		mp_reply_tcp(p, family, r, half, t, now);
	}
	mp_nat_reverse(p, family, r);
	slot = mp_addr_slot_index(r->client, MP_NH_CLIENT_BITS);
	return mp_transmit_via(ctx, p, family, bpf_map_lookup_elem(&mp_nh_client, &slot), r->vip,
			       r->client, r->vip_port, r->client_port, now);
}

/* Full NAT: an endpoint's reply to node:snat_port, restored by mp_rnat (or mp_hrnat). */
static __always_inline int mp_reply(struct xdp_md *ctx, struct mp_pkt *p, __u8 family, __u64 bytes)
{
	const struct mp_rnat *found;
	struct mp_rnat r;
	int half = 0;

	found = bpf_map_lookup_elem(&mp_rnat, &p->flow);
	if (!found) {
		found = bpf_map_lookup_elem(&mp_hrnat, &p->flow);
		if (!found)
			return XDP_PASS; /* the node's own traffic */
		half = 1;
	}
	mp_memcpy(&r, found, sizeof(r));
	return mp_reply_to_client(ctx, p, family, bytes, &r, half);
}

/* DNAT: is the packet `reply` (its 5-tuple) from an endpoint of a DNAT service (mp_ep_vip) to a
 * client whose connection on that endpoint exists? Then r is what restores it (the VIP as its
 * source) and the answer is 0 (established) or 1 (half-open); else -1. A global function: its
 * keys live in its own frame (the verifier's 512-byte stack is shared along a call chain). */
__attribute__((noinline)) int mp_dnat_reply_of(const struct mp_flow *reply, struct mp_rnat *r)
{
	const struct mp_ep_vip *v;
	const struct mp_conn *conn;
	struct mp_ep_key key;
	struct mp_flow client;
	int half = 0;

	if (!reply || !r)
		return -1;
	mp_copy_addr16(key.addr, reply->src);
	key.port = reply->sport;
	key.proto = reply->proto;
	key.family = reply->family;
	v = bpf_map_lookup_elem(&mp_ep_vip, &key);
	if (!v)
		return -1;
	mp_copy_addr16(r->client, reply->dst);
	mp_copy_addr16(r->vip, v->vip);
	r->client_port = reply->dport;
	r->vip_port = v->vip_port;
	r->ep_id = v->ep_id;
	mp_rnat_client_flow(&client, r, reply->proto, reply->family);
	conn = bpf_map_lookup_elem(&mp_conns, &client);
	if (!conn) {
		conn = bpf_map_lookup_elem(&mp_half, &client);
		half = 1;
	}
	if (!conn || conn->ep_id != r->ep_id || conn->snat_addr != MP_SNAT_NONE)
		return -1;
	if (conn->flags & MP_CONN_F_PROXY)
		r->ep_id |= MP_RNAT_F_PROXY;
	return half;
}

/* DNAT: a reply (mp_dnat_reply_of) goes back from the VIP; anything else passes untouched. */
static __always_inline int mp_reply_dnat(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 __u64 bytes)
{
	struct mp_rnat r;
	int half = mp_dnat_reply_of(&p->flow, &r);

	if (half < 0)
		return XDP_PASS;
	return mp_reply_to_client(ctx, p, family, bytes, &r, half);
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
	struct mp_flow rkey; /* the reverse key; dst and dport set per probe, the reserved source on
			      * MP_OK */
	struct mp_rnat rval; /* what the entry restores: the client's tuple */
	__u64 now;	     /* bpf_jiffies64() */
	__u32 hash;	     /* mp_snat_hash of the client's flow */
	__u32 addr_idx;	     /* on MP_OK: the index of the reserved source in the node's pool */
};

/* Verifier: as mp_promote_tmp, for a new flow's reservation. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_snat_ask);
} mp_snat_tmp SEC(".maps");

/* Claims the reverse entry r (its tail word seen) for a new flow by compare-and-swap, so two new
 * flows never take the same port; 1 when this caller won. */
static __always_inline int mp_rnat_claim(struct mp_rnat *r, union mp_rnat_tail *seen)
{
	union mp_rnat_tail *tail = (union mp_rnat_tail *)&r->client_port;
	union mp_rnat_tail claimed;

	claimed.word = seen->word;
	claimed.f.ep_id = MP_RNAT_CLAIMED;
	return __sync_val_compare_and_swap(&tail->word, seen->word, claimed.word) == seen->word;
}

/* Takes over the SNAT source ask->rkey names from the half-open reverse entry r holding it, if
 * its flow expired or was forgotten (mp_snat_reusable): claims it, overwrites it and deletes the
 * expired half-open entry. Returns 1 when the source is now ask's. */
static __always_inline int mp_snat_take_half(struct mp_rnat *r, struct mp_snat_ask *ask)
{
	union mp_rnat_tail seen;
	const struct mp_conn *owner;
	struct mp_flow owner_key;
	__u16 port = ask->rkey.dport;
	int own;

	seen.word = ((union mp_rnat_tail *)&r->client_port)->word;
	mp_rnat_client_flow(&owner_key, r, ask->rkey.proto, ask->rkey.family);
	owner = bpf_map_lookup_elem(&mp_half, &owner_key);
	if (!mp_snat_reusable(seen.f.ep_id, owner, port, ask->now))
		return 0;
	own = owner && owner->snat_port == port && owner->ep_id == (seen.f.ep_id & MP_RNAT_EP_MASK);
	if (!mp_rnat_claim(r, &seen))
		return 0; /* another new flow claimed it first */
	if (bpf_map_update_elem(&mp_hrnat, &ask->rkey, &ask->rval, BPF_ANY)) {
		__sync_val_compare_and_swap(&((union mp_rnat_tail *)&r->client_port)->word,
					    seen.word | ((__u64)MP_RNAT_CLAIMED << 32), seen.word);
		return 0;
	}
	if (own)
		bpf_map_delete_elem(&mp_half, &owner_key);
	return 1;
}

/* Takes over the SNAT source ask->rkey names from the established reverse entry r holding it,
 * if its connection expired (closed for tcp_closed, idle beyond its lifetime) or is gone:
 * claims it, deletes both of the old connection's entries (counting its close if it was counted
 * open), and reserves the source in mp_hrnat. Returns 1 when the source is now ask's. */
static __always_inline int mp_snat_take_established(struct mp_rnat *r, struct mp_snat_ask *ask)
{
	union mp_rnat_tail seen;
	struct mp_conn *owner;
	struct mp_flow owner_key;
	__u16 port = ask->rkey.dport;
	__u32 ep_id;

	seen.word = ((union mp_rnat_tail *)&r->client_port)->word;
	ep_id = seen.f.ep_id & MP_RNAT_EP_MASK;
	mp_rnat_client_flow(&owner_key, r, ask->rkey.proto, ask->rkey.family);
	owner = bpf_map_lookup_elem(&mp_conns, &owner_key);
	if (!mp_snat_reusable(seen.f.ep_id, owner, port, ask->now))
		return 0;
	if (!mp_rnat_claim(r, &seen))
		return 0;
	if (owner && owner->snat_port == port && owner->ep_id == ep_id) {
		if (mp_conn_retire(owner))
			mp_ep_count_closed(ep_id);
		bpf_map_delete_elem(&mp_conns, &owner_key);
	}
	bpf_map_delete_elem(&mp_rnat, &ask->rkey);
	/* The port's earlier flow may still have cache slots: they must not send its packets into
	 * the new flow's connection. */
	mp_fwd_gen_bump();
	return bpf_map_update_elem(&mp_hrnat, &ask->rkey, &ask->rval, BPF_NOEXIST) == 0;
}

/* Points ask->rkey at the probe-th SNAT candidate (source address and port); 0 for an empty
 * port range. */
static __always_inline int mp_snat_probe(struct mp_snat_ask *ask, const struct mp_node_cfg *node,
					 __u32 probe)
{
	__u32 n = mp_node_n_addrs(node, ask->rkey.family), idx;
	__u16 port;

	port = mp_snat_candidate(ask->hash, probe, node->snat_port_min, node->snat_port_max, n,
				 &idx);
	if (!port || !n)
		return 0;
	ask->addr_idx = idx & (MP_SNAT_ADDRS_MAX - 1);
	mp_copy_addr16(ask->rkey.dst, mp_node_addr(node, ask->rkey.family, ask->addr_idx));
	ask->rkey.dport = port;
	return 1;
}

/* Reserves a SNAT source (node address of the pool, port) for a half-open flow: the mp_hrnat
 * entry endpoint -> node:port that restores the client's replies. Up to MP_SNAT_PROBES
 * candidates; probe 0 is the flow's own hash, so a forgotten flow asks for the source it had.
 * The first pass takes the first candidate free in both reverse tables (inserted into mp_hrnat
 * with BPF_NOEXIST, then mp_rnat checked, which closes the race with a promotion of the same
 * source), or keeps one that already restores this very flow. When every candidate is held, a
 * second pass takes over the first whose holder expired or is gone. MP_OK with the source in
 * ask->rkey (dst, dport) and ask->addr_idx, or an exception reason. A global function: the
 * verifier checks its loops once, not once per path that leads here. */
__attribute__((noinline)) int mp_snat_reserve(struct mp_snat_ask *ask)
{
	const struct mp_node_cfg *node;
	struct mp_rnat *r;
	__u32 i, zero = 0;

	if (!ask)
		return MP_EXC_DROP_SNAT_EXHAUSTED;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node)
		return MP_EXC_DROP_NO_NODE_ADDR;
#pragma clang loop unroll(disable)
	for (i = 0; i < MP_SNAT_PROBES; i++) {
		if (!mp_snat_probe(ask, node, i))
			return MP_EXC_DROP_SNAT_EXHAUSTED; /* an empty range */
		if (!bpf_map_update_elem(&mp_hrnat, &ask->rkey, &ask->rval, BPF_NOEXIST)) {
			if (!bpf_map_lookup_elem(&mp_rnat, &ask->rkey))
				return MP_OK;
			bpf_map_delete_elem(&mp_hrnat, &ask->rkey); /* an established one's */
			continue;
		}
		r = bpf_map_lookup_elem(&mp_hrnat, &ask->rkey);
		if (r && mp_rnat_eq(r, &ask->rval))
			return MP_OK;
	}
#pragma clang loop unroll(disable)
	for (i = 0; i < MP_SNAT_PROBES; i++) {
		if (!mp_snat_probe(ask, node, i))
			return MP_EXC_DROP_SNAT_EXHAUSTED;
		r = bpf_map_lookup_elem(&mp_hrnat, &ask->rkey);
		if (r) {
			if (mp_snat_take_half(r, ask))
				return MP_OK;
			continue;
		}
		r = bpf_map_lookup_elem(&mp_rnat, &ask->rkey);
		if (r && mp_snat_take_established(r, ask))
			return MP_OK;
	}
	return MP_EXC_DROP_SNAT_EXHAUSTED;
}

/* A pure SYN on an existing entry: the client retransmitting the SYN its endpoint has not
 * answered (a passive failure), or reopening a closed entry (a new connection on the same
 * endpoint and port; counted open at once in the established table, at promotion in the
 * half-open one). Returns 1 when the flow must be re-picked instead: its endpoint is marked
 * down and the connection never got its SYN-ACK, or is closed. */
static __always_inline int mp_conn_syn(struct mp_conn *conn, __u32 ep_id, int established,
				       const struct mp_svc_tmo *t, __u64 now, __u64 *reopened)
{
	__u16 flags = conn->flags;
	__u32 old;

	if (flags & MP_CONN_F_CLOSING) {
		if (mp_ep_down(ep_id))
			return 1;
		conn->expires = now + mp_tmo(t, MP_TMO_TCP_SYN);
		old = mp_conn_reopen(conn, established ? MP_CONN_F_SYN_SENT | MP_CONN_F_COUNTED
						       : MP_CONN_F_SYN_SENT);
		if (!old) /* another CPU reopened it meanwhile */
			return 0;
		conn->syn_ns = (__u32)bpf_ktime_get_ns(); /* for the SYN-ACK's sample */
		if (mp_conn_reopen_closes_counted(old))
			mp_ep_count_closed(ep_id);
		if (established)
			mp_ep_count_opened(bpf_map_lookup_elem(&mp_ep_health, &ep_id));
		*reopened = 1;
		return 0;
	}
	if (flags & MP_CONN_F_SYN_SENT)
		return mp_health_fail(ep_id, MP_PASSIVE_SYN_RETRANS);
	return 0;
}

/* The endpoint of an existing connection (in mp_conns when established, else mp_half), or NULL
 * when the flow starts over: its endpoint left the service, or a pure SYN re-picks it
 * (mp_conn_syn); the entry is deleted then (counted closed if it was open). A FIN or RST from
 * the client is recorded; a pure SYN reopens a closed entry (the client reuses its 5-tuple) and
 * tells *reopened. */
static __always_inline const struct mp_endpoint *
mp_conn_endpoint(struct mp_conn *conn, const struct mp_pkt *p, const struct mp_svc *svc,
		 __u8 family, int established, const struct mp_svc_tmo *t, __u64 now,
		 __u64 *reopened)
{
	__u32 ep_id = conn->ep_id;
	const struct mp_endpoint *ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	__u32 bits;
	int rc;

	if (!ep || !mp_ep_usable(ep, svc->id, family))
		goto retire;
	/* A UDP flow goes elsewhere once its endpoint is marked down (as a TCP SYN the endpoint
	 * never answered does, mp_conn_syn): the client's next datagram is its retry. Answered
	 * flows too: for UDP, down means `fall` ICMP unreachables in a row with no reply between,
	 * so nothing listens there any more, and a client that keeps its source port (a resolver,
	 * syslog, QUIC) would otherwise refresh its flow toward the dead port for ever. */
	if (p->flow.proto == IPPROTO_UDP && mp_unlikely(mp_ep_down(ep_id))) {
		mp_fwd_gen_bump();
		goto retire;
	}
	if (mp_likely(!(p->tcp_flags & (MP_TCP_FIN | MP_TCP_RST | MP_TCP_SYN))))
		return ep;
	bits = mp_tcp_close_bits(p->tcp_flags, 1);
	if (bits) {
		rc = mp_conn_mark(conn, bits);
		if (rc)
			mp_conn_closed(ep_id, rc);
	} else if (mp_tcp_opens(p->tcp_flags) &&
		   mp_conn_syn(conn, ep_id, established, t, now, reopened)) {
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
	/* Its reverse entry stays behind, restoring nothing: a later new flow takes its port over
	 * (its forward entry is gone) and meshd's recount deletes it. */
	if (established)
		bpf_map_delete_elem(&mp_conns, &p->flow);
	else
		bpf_map_delete_elem(&mp_half, &p->flow);
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
 * active half) that is not marked down and is not `avoid` (an endpoint a SYN-proxied connection
 * just failed on; MP_RING_EMPTY: none), or MP_RING_EMPTY when there is none. A global function: its
 * loop is checked once. */
__attribute__((noinline)) __u32 mp_skip_down(__u32 svc_id, __u32 idx, __u32 ring_size,
					     __u32 active_half, __u32 avoid)
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
		if (!slot || *slot == MP_RING_EMPTY || *slot == avoid)
			continue;
		h = bpf_map_lookup_elem(&mp_ep_health, slot);
		if (h && !(h->flags & MP_EPH_F_DOWN))
			return *slot;
	}
	return MP_RING_EMPTY;
}

/* A new flow (or one whose state was deleted, or re-picked): the endpoint the service's algorithm
 * picks (the next slots' when it is marked down), a SNAT source, and a half-open entry in mp_half
 * (BPF_NOEXIST; when another CPU inserted the flow meanwhile, its first packets on two CPUs, the
 * entry is overwritten: both reserved the flow's own source, probe 0). A pure SYN's entry waits
 * for its SYN-ACK (MP_CONN_F_SYN_SENT, the SYN's time in syn_ns). A CPU that just found every
 * SNAT candidate toward the endpoint held drops new flows toward it for snat_backoff without
 * probing again. *snat_port comes back in network order. */
static __always_inline int mp_new_conn(const struct mp_flow *flow, __u8 tcp_flags, __u8 family,
				       const struct mp_svc *svc, const struct mp_svc_tmo *t,
				       __u64 now, const struct mp_endpoint **ep_out, __u32 *ep_id,
				       __u16 *snat_port, __u32 *snat_addr, __u32 avoid,
				       const struct mp_conn *proxy)
{
	const struct mp_endpoint *ep;
	struct mp_ep_health *health;
	struct mp_snat_ask *ask;
	struct mp_conn conn;
	__u32 idx, bits, algorithm, live, zero = 0;
	__u64 *backoff;
	__u32 *slot;
	void *ring;
	int rc;

	ring = bpf_map_lookup_elem(&mp_rings, &svc->id);
	if (!ring)
		return MP_EXC_DROP_NO_ENDPOINT;
	algorithm = mp_algorithm_of(svc->algorithm);
	if (algorithm == MP_ALG_MAGLEV)
		idx = mp_ring_index(mp_flow_hash(flow), svc->ring_size, svc->active_half);
	else
		idx = mp_pick_index(svc->id, algorithm, svc->ring_size, svc->active_half);
	slot = bpf_map_lookup_elem(ring, &idx);
	if (!slot || *slot == MP_RING_EMPTY)
		return MP_EXC_DROP_NO_ENDPOINT;
	*ep_id = *slot;
	health = bpf_map_lookup_elem(&mp_ep_health, ep_id);
	if ((health && mp_unlikely(health->flags & MP_EPH_F_DOWN)) || *ep_id == avoid) {
		/* All candidates down: the first pick stands (better a suspect than nothing), unless
		 * it is the one to avoid. */
		live = mp_skip_down(svc->id, idx, svc->ring_size, svc->active_half, avoid);
		if (live != MP_RING_EMPTY)
			*ep_id = live;
		else if (*ep_id == avoid)
			return MP_EXC_DROP_NO_ENDPOINT;
	}
	ep = bpf_map_lookup_elem(&mp_endpoints, ep_id);
	if (!ep || !mp_ep_usable(ep, svc->id, family))
		return MP_EXC_DROP_NO_ENDPOINT;

	if (svc->fwd_mode == MP_FWD_DNAT) {
		/* No SNAT: the client's own port, and the connection's entry is all its state. */
		*snat_port = flow->sport;
		*snat_addr = MP_SNAT_NONE;
		goto insert;
	}
	backoff = bpf_map_lookup_elem(&mp_snat_full, ep_id);
	if (backoff && mp_unlikely(now < *backoff))
		return MP_EXC_DROP_SNAT_EXHAUSTED;
	ask = bpf_map_lookup_elem(&mp_snat_tmp, &zero);
	if (!ask)
		return MP_EXC_DROP_CONN_INSERT; /* unreachable: entry 0 exists */
	mp_rnat_key(&ask->rkey, flow, ep, flow->dst, 0);
	mp_rnat_value(&ask->rval, flow, *ep_id | (proxy ? MP_RNAT_F_PROXY : 0));
	ask->hash = mp_snat_hash(flow);
	ask->now = now;
	ask->addr_idx = 0;
	rc = mp_snat_reserve(ask);
	if (rc != MP_OK) {
		if (rc == MP_EXC_DROP_SNAT_EXHAUSTED && backoff)
			*backoff = now + snat_backoff;
		return rc;
	}
	*snat_port = ask->rkey.dport;
	*snat_addr = ask->addr_idx;
insert:

	bits = mp_tcp_close_bits(tcp_flags, 1);
	if (proxy) {
		mp_memcpy(&conn, proxy, sizeof(conn));
	} else {
		mp_memset(&conn, 0, sizeof(conn));
		conn.flags = (__u16)bits;
		if (flow->proto == IPPROTO_TCP && !bits && mp_tcp_opens(tcp_flags)) {
			conn.flags |= MP_CONN_F_SYN_SENT;
			conn.syn_ns = (__u32)bpf_ktime_get_ns();
		}
	}
	conn.ep_id = *ep_id;
	conn.snat_port = *snat_port;
	conn.snat_addr = (__u8)*snat_addr;
	conn.expires = now + mp_tmo(t, mp_conn_tmo_index(conn.flags, flow->proto, 0));
	*ep_out = ep;
	if (bpf_map_update_elem(&mp_half, flow, &conn, BPF_NOEXIST) &&
	    bpf_map_update_elem(&mp_half, flow, &conn, BPF_ANY))
		return MP_EXC_DROP_CONN_INSERT;
	return MP_OK;
}

/* mp_new_conn's arguments and answers, for the SYN proxy's calls (mp_new_conn_run). */
struct mp_new_ask {
	struct mp_flow flow; /* the client's tuple */
	struct mp_svc svc;
	struct mp_conn proxy; /* the entry to make (its endpoint and SNAT source filled in) */
	__u32 avoid;	      /* an endpoint not to pick (MP_RING_EMPTY: none) */
	__u32 ep_id;	      /* answers: the endpoint and SNAT source (network order port) */
	__u32 snat_addr;
	__u16 snat_port;
	__u16 pad;
};

/* mp_new_conn for a SYN-proxied connection. A global function, so the proxy's paths share one
 * verified copy of it. */
__attribute__((noinline)) int mp_new_conn_run(struct mp_new_ask *a)
{
	const struct mp_endpoint *ep;
	const struct mp_svc_tmo *t;

	if (!a)
		return MP_EXC_DROP_CONN_INSERT;
	t = bpf_map_lookup_elem(&mp_svc_tmo, &a->svc.id);
	return mp_new_conn(&a->flow, MP_TCP_ACK, a->flow.family, &a->svc, t, bpf_jiffies64(), &ep,
			   &a->ep_id, &a->snat_port, &a->snat_addr, a->avoid, &a->proxy);
}

/* ---- SYN protection: cookies and the SYN proxy (bpf/README.md, "SYN protection") ----
 * The four entries below are global functions: each re-parses its packet (a packet pointer
 * cannot cross into one), so the verifier checks the proxy once, apart from the common path,
 * and only packets of a protected service's stateless segments or of a proxied connection pay.
 * They answer an XDP verdict, or MP_SYN_NOT_MINE for a packet the common path goes on with. */
#define MP_SYN_NOT_MINE (-1)

/* What they work on besides the packet: per CPU, as mp_promote_tmp (the stack is shared). */
/* A segment's options, copied out of the packet to be walked (synproxy.h, mp_tcp_opts_walk). */
struct mp_optwalk {
	__u8 b[MP_TCPOPT_BUF];
	__u32 len;
	__u32 pad;
	struct mp_tcp_opts o;
	struct mp_tcp_opt_edit e;
};

struct mp_syn_scratch {
	__u32 what;   /* enum mp_syn_do */
	__u32 family; /* of the packet */
	__u32 arg;
	__u32 pad;
	struct mp_svc_key key;
	struct mp_tcp_out out; /* the segment being written */
	struct mp_optwalk w;
	struct mp_conn conn;  /* the connection's entry, copied or being made */
	struct mp_rnat r;     /* what restores its replies */
	struct mp_flow flow;  /* the client's tuple */
	struct mp_new_ask na; /* a pick for the connection */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_syn_scratch);
} mp_syn_tmp SEC(".maps");

static __always_inline struct mp_syn_counters *mp_syn_counters_of(__u32 svc_id)
{
	return bpf_map_lookup_elem(&mp_syn_stats, &svc_id);
}

/* Counts a new SYN (syn = 1) or a completed handshake toward an auto service's flood guard;
 * answers whether the proxy is on. */
static __always_inline int mp_syn_guard_note(__u32 svc_id, int syn)
{
	struct mp_syn_guard *g = bpf_map_lookup_elem(&mp_syn_guard, &svc_id);
	const struct mp_node_cfg *node;
	__u32 zero = 0;

	if (!g)
		return 0;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	return mp_syn_guard_count(g, syn, bpf_ktime_get_ns(), node ? node->syn_flood_threshold : 0);
}

/* The cookie hash of the client's tuple f, its ISN and a clock count, keyed by mp_syn_secret
 * (syncookie.h). A global function: SipHash is long, and three paths need it. */
__attribute__((noinline)) __u32 mp_syn_cookie_hash(const struct mp_flow *f, __u32 isn, __u32 count)
{
	const struct mp_syn_secret *key;
	__u32 zero = 0;

	key = bpf_map_lookup_elem(&mp_syn_secret, &zero);
	if (!key || !f)
		return 0;
	return mp_cookie_hash(key, f, isn, count);
}

/* Walks w's options (w->e applied). A global function: the walk's loop is verified once. */
__attribute__((noinline)) int mp_optwalk_run(struct mp_optwalk *w)
{
	if (!w)
		return -1;
	return mp_tcp_opts_walk(w->b, w->len, &w->o, &w->e);
}

/* The options of p's TCP header walked (with w->e, which edit: written back into the packet).
 * -1 for options that cannot be read or walked. */
static __always_inline int mp_syn_opts(struct xdp_md *ctx, const struct mp_pkt *p,
				       struct mp_optwalk *w, int edit)
{
	__u32 off = (__u32)(p->l4 - (__u8 *)(long)ctx->data) + MP_TCP_BARE_LEN;
	__u32 len = (__u32)(p->l4[12] >> 4) * 4;

	if (!edit)
		mp_memset(&w->e, 0, sizeof(w->e));
	len = len > MP_TCP_BARE_LEN ? len - MP_TCP_BARE_LEN : 0;
	w->len = len;
	if (len) {
		len &= 63;
		if (len < 1 || len > 40 || bpf_xdp_load_bytes(ctx, off, w->b, len))
			return -1;
	}
	if (mp_optwalk_run(w))
		return -1;
	if (edit && len >= 1 && len <= 40 && bpf_xdp_store_bytes(ctx, off, w->b, len))
		return -1;
	return 0;
}

/* The packet again, inside a SYN-protection function: MP_OK for TCP of this family. */
static __always_inline int mp_syn_parse(struct xdp_md *ctx, struct mp_pkt *p, __u8 family)
{
	struct mp_cursor c = {
		.pos = (__u8 *)(long)ctx->data,
		.end = (__u8 *)(long)ctx->data_end,
	};
	__u16 proto;

	mp_memset(&p->flow, 0, sizeof(p->flow));
	if (mp_parse_eth(&c, p, &proto) != MP_OK)
		return MP_EXC_DROP_ETH_TRUNC;
	if (mp_parse_ip(&c, p, family) != MP_OK || p->flow.proto != IPPROTO_TCP)
		return MP_EXC_DROP_L4_TRUNC;
	return MP_OK;
}

/* The service of a client packet p. */
static __always_inline const struct mp_svc *mp_syn_service(const struct mp_flow *f,
							   struct mp_syn_scratch *s)
{
	mp_copy_addr16(s->key.addr, f->dst);
	s->key.port = f->dport;
	s->key.proto = IPPROTO_TCP;
	s->key.family = f->family;
	return bpf_map_lookup_elem(&mp_services, &s->key);
}

/* Reshapes the frame to its L2 header, an IP header of the family and tcp_len (a constant)
 * bytes of TCP; p's pointers follow. -1 when the frame cannot be resized. */
static __always_inline int mp_syn_reshape(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					  __u32 tcp_len)
{
	__u32 iphl = family == MP_AF_INET ? 20 : 40;
	__u32 l2 = (__u32)(p->l3 - p->eth);
	__u8 *data, *end;
	int delta;

	__u8 *l3;

	if (l2 != 14 && l2 != 18)
		return -1;
	delta = (int)(l2 + iphl + tcp_len) - (int)(ctx->data_end - ctx->data);
	if (delta && bpf_xdp_adjust_tail(ctx, delta))
		return -1;
	data = (__u8 *)(long)ctx->data;
	end = (__u8 *)(long)ctx->data_end;
	l2 &= 31; /* Verifier: a bounded offset (14 or 18) */
	l3 = data + l2;
	if (data + sizeof(struct ethhdr) > end || l3 + iphl + tcp_len > end)
		return -1;
	p->eth = data;
	p->l3 = l3;
	p->l4 = l3 + iphl;
	p->l4_check = p->l4 + 16;
	p->ip_len = (__u16)(iphl + tcp_len);
	p->l4_len = (__u16)tcp_len;
	return 0;
}

/* Writes o (tcp_len bytes of TCP) over the frame. -1 when it cannot be resized. */
static __always_inline int mp_syn_emit(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
				       const struct mp_tcp_out *o, __u32 tcp_len)
{
	if (mp_syn_reshape(ctx, p, family, tcp_len))
		return -1;
	mp_tcp_write(p->l3, family, o, tcp_len);
	return 0;
}

/* Writes the ACK o over the frame: with its timestamps, or bare when it has none. */
static __always_inline int mp_syn_emit_ack(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					   const struct mp_tcp_out *o)
{
	if (o->has_ts)
		return mp_syn_emit(ctx, p, family, o, MP_TCP_ACK_TS_LEN);
	return mp_syn_emit(ctx, p, family, o, MP_TCP_BARE_LEN);
}

/* Sends the segment o, written over the frame, to its client through mp_nh_client. */
static __always_inline int mp_syn_to_client(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					    const struct mp_tcp_out *o)
{
	__u32 slot = mp_addr_slot_index(o->dst, MP_NH_CLIENT_BITS);

	return mp_transmit_via(ctx, p, family, bpf_map_lookup_elem(&mp_nh_client, &slot), o->src,
			       o->dst, o->sport, o->dport, bpf_jiffies64());
}

/* Sends the frame back out of the port it came in on, to whoever sent it. */
static __always_inline int mp_syn_bounce(struct xdp_md *ctx, struct mp_pkt *p)
{
	struct ethhdr *eth = (struct ethhdr *)p->eth;
	__u8 smac[6], dmac[6];

	mp_copy_mac(dmac, eth->h_source);
	mp_copy_mac(smac, eth->h_dest);
	return mp_send(ctx, p, ctx->ingress_ifindex, smac, dmac);
}

/* The SYN-ACK with a cookie for a client's SYN: sent back, nothing kept. The window is closed
 * (0) until the endpoint answers, so the client sends nothing the proxy would have to hold. */
static __always_inline int mp_syn_answer(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 const struct mp_svc *svc, struct mp_syn_scratch *s)
{
	struct mp_tcphdr *th = (struct mp_tcphdr *)p->l4;
	const struct mp_node_cfg *node;
	struct mp_syn_counters *st;
	struct mp_tcp_out *o = &s->out;
	__u32 zero = 0, isn, opts, mss, count;
	__u8 *end = (__u8 *)(long)ctx->data_end;

	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node || (__u8 *)th + MP_TCP_BARE_LEN > end)
		return XDP_DROP;
	if (!(th->doff_res >> 4 == MP_TCP_SYN_LEN / 4 && (__u8 *)th + MP_TCP_SYN_LEN <= end &&
	      mp_tcp_opts_linux_syn((__u8 *)th + MP_TCP_BARE_LEN, &s->w.o)) &&
	    mp_syn_opts(ctx, p, &s->w, 0))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	isn = mp_ntohl(th->seq);
	opts = mp_syn_tsval_opts(&s->w.o);
	mss = family == MP_AF_INET ? (node->syn_mss4 ? node->syn_mss4 : MP_SYN_MSS4_DEFAULT)
				   : (node->syn_mss6 ? node->syn_mss6 : MP_SYN_MSS6_DEFAULT);

	mp_copy_addr16(o->src, p->flow.dst);
	mp_copy_addr16(o->dst, p->flow.src);
	o->sport = p->flow.dport;
	o->dport = p->flow.sport;
	count = mp_cookie_count(bpf_ktime_get_tai_ns());
	o->seq = mp_cookie_of(mp_syn_cookie_hash(&p->flow, isn, count), count,
			      mp_cookie_mss_index(s->w.o.mss ? s->w.o.mss : 536));
	o->ack = isn + 1;
	o->window = 0;
	o->flags = MP_TCP_SYN | MP_TCP_ACK;
	o->mss = (__u16)mss;
	o->has_ts = s->w.o.has_ts;
	o->sack_ok = s->w.o.has_ts && s->w.o.sack_ok;
	o->wscale =
		(opts & MP_SYNOPT_WS_MASK) == MP_SYNOPT_WS_NONE ? MP_SYNOPT_WS_NONE : MP_SYN_WSCALE;
	o->tsval = mp_cookie_tsval(s->w.o.tsval, opts);
	o->tsecr = s->w.o.tsval;
	if (mp_syn_emit(ctx, p, family, o, MP_TCP_SYN_LEN))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	st = mp_syn_counters_of(svc->id);
	if (st)
		st->cookies_sent += 1;
	if (svc->flags & MP_SVC_F_SYN_AUTO)
		mp_syn_guard_note(svc->id, 1);
	return mp_syn_bounce(ctx, p);
}

/* The SYN to endpoint ep (the connection's entry c, in s->conn) for the client's ISN and
 * TSval: the client's MSS (the cookie's), window scale, SACK-permitted and timestamps. */
static __always_inline int mp_syn_to_ep(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					const struct mp_node_cfg *node, __u32 ep_id,
					const struct mp_endpoint *ep, struct mp_syn_scratch *s,
					__u32 client_tsval, __u16 window)
{
	const struct mp_conn *c = &s->conn;
	struct mp_tcp_out *o = &s->out;
	const __u8 *src;
	__u32 po = c->proxy_opts;

	src = c->snat_addr == MP_SNAT_NONE ? s->flow.src : mp_node_addr(node, family, c->snat_addr);
	mp_copy_addr16(o->src, src);
	mp_copy_addr16(o->dst, ep->addr);
	o->sport = c->snat_port;
	o->dport = ep->port;
	o->seq = c->syn_ns; /* the client's ISN while the SYN is out */
	o->ack = 0;
	o->window = window;
	o->flags = MP_TCP_SYN;
	o->mss = mp_cookie_mss(po >> MP_SYNOPT_MSS_SHIFT);
	o->has_ts = (po & MP_SYNOPT_TS) != 0;
	o->sack_ok = (po & MP_SYNOPT_SACK) != 0;
	o->wscale = o->has_ts ? (po & MP_SYNOPT_WS_MASK) : MP_SYNOPT_WS_NONE;
	o->tsval = client_tsval;
	o->tsecr = 0;
	if (mp_syn_emit(ctx, p, family, o, MP_TCP_SYN_LEN))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	return mp_transmit_via(ctx, p, family, bpf_map_lookup_elem(&mp_nh_cache, &ep_id), o->src,
			       ep->addr, o->sport, ep->port, bpf_jiffies64());
}

/* A RST to the client of a proxied connection whose endpoints all refused: from the VIP, at the
 * sequence number the client expects. */
static __always_inline int mp_syn_reset_client(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					       struct mp_syn_scratch *s, __u32 cookie)
{
	struct mp_tcp_out *o = &s->out;

	mp_memset(o, 0, sizeof(*o));
	mp_copy_addr16(o->src, s->flow.dst);
	mp_copy_addr16(o->dst, s->flow.src);
	o->sport = s->flow.dport;
	o->dport = s->flow.sport;
	o->seq = cookie + 1;
	o->flags = MP_TCP_RST;
	o->wscale = MP_SYNOPT_WS_NONE;
	if (mp_syn_emit(ctx, p, family, o, MP_TCP_BARE_LEN))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	return mp_syn_to_client(ctx, p, family, o);
}

/* A proxied connection in the scratch entry (s->conn, client tuple s->flow) whose endpoint
 * refused or did not answer its SYN: the SYN goes to another endpoint while the service's
 * connect_retries last, else the client gets a RST and the entry goes. The packet at hand
 * becomes that SYN or RST. client_tsval: a TSval the client's clock has passed. */
static __always_inline int mp_syn_retry_family(struct xdp_md *ctx, __u8 family, __u32 client_tsval)
{
	const struct mp_node_cfg *node;
	const struct mp_endpoint *ep;
	const struct mp_svc *svc;
	struct mp_syn_counters *st;
	struct mp_syn_scratch *s;
	struct mp_pkt p;
	__u32 zero = 0, failed, ep_id;
	int rc;

	node = bpf_map_lookup_elem(&mp_node, &zero);
	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!node || !s || mp_syn_parse(ctx, &p, family) != MP_OK)
		return XDP_DROP;
	svc = mp_syn_service(&s->flow, s);
	if (!svc)
		return XDP_DROP;
	st = mp_syn_counters_of(svc->id);
	failed = s->conn.ep_id;
	/* The refused endpoint's reverse entry goes, whatever comes next. */
	ep = bpf_map_lookup_elem(&mp_endpoints, &failed);
	if (ep && s->conn.snat_addr != MP_SNAT_NONE) {
		mp_rnat_key(&s->na.flow, &s->flow, ep,
			    mp_node_addr(node, family, s->conn.snat_addr), s->conn.snat_port);
		bpf_map_delete_elem(&mp_hrnat, &s->na.flow);
	}
	if (s->conn.retries >= ((svc->flags >> MP_SVC_RETRIES_SHIFT) & MP_SVC_RETRIES_MASK))
		goto give_up;
	s->conn.retries += 1;
	mp_memcpy(&s->na.flow, &s->flow, sizeof(s->na.flow));
	mp_memcpy(&s->na.svc, svc, sizeof(s->na.svc));
	mp_memcpy(&s->na.proxy, &s->conn, sizeof(s->na.proxy));
	s->na.avoid = failed;
	rc = mp_new_conn_run(&s->na);
	if (rc != MP_OK)
		goto give_up;
	ep_id = s->na.ep_id;
	ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	if (!ep)
		goto give_up;
	if (st)
		st->retries += 1;
	s->conn.ep_id = ep_id;
	s->conn.snat_port = s->na.snat_port;
	s->conn.snat_addr = (__u8)s->na.snat_addr;
	mp_count(&mp_ep_stats, ep_id, 0, 1);
	return mp_syn_to_ep(ctx, &p, family, node, ep_id, ep, s, client_tsval, 0xffff);
give_up:
	if (st)
		st->retries_failed += 1;
	bpf_map_delete_elem(&mp_half, &s->flow);
	return mp_syn_reset_client(ctx, &p, family, s, s->conn.seq_off);
}

/* A stateless ACK to a protected service whose cookie validated (its MSS index mss_idx) opens
 * the connection: pick, SNAT, a half-open entry, the SYN to the endpoint. */
static __always_inline int mp_syn_open(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
				       const struct mp_svc *svc, int mss_idx,
				       struct mp_syn_scratch *s)
{
	struct mp_tcphdr *th = (struct mp_tcphdr *)p->l4;
	const struct mp_node_cfg *node;
	const struct mp_endpoint *ep;
	struct mp_syn_counters *st = mp_syn_counters_of(svc->id);
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 zero = 0, isn, cookie, ep_id;
	__u16 window;
	int rc;

	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node || (__u8 *)th + MP_TCP_BARE_LEN > end)
		return XDP_DROP;
	isn = mp_ntohl(th->seq) - (mss_idx & MP_SYN_OPEN_PROBE ? 0 : 1);
	cookie = mp_ntohl(th->ack_seq) - 1;
	mss_idx &= 3;
	if (mp_syn_opts(ctx, p, &s->w, 0))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	if (st)
		st->acks_valid += 1;
	if (svc->flags & MP_SVC_F_SYN_AUTO)
		mp_syn_guard_note(svc->id, 0);

	mp_memset(&s->conn, 0, sizeof(s->conn));
	s->conn.flags = MP_CONN_F_PROXY | MP_CONN_F_SYN_SENT;
	s->conn.seq_off = cookie;
	s->conn.ts_off = s->w.o.has_ts ? s->w.o.tsecr : 0;
	s->conn.syn_ns = isn;
	s->conn.proxy_opts = mp_proxy_opts(s->w.o.tsecr, s->w.o.has_ts, (__u32)mss_idx);
	s->conn.ep_wscale = MP_SYNOPT_WS_NONE;
	mp_memcpy(&s->flow, &p->flow, sizeof(s->flow));
	window = mp_window_rescale(mp_ntohs(th->window),
				   s->w.o.has_ts && (s->w.o.tsecr & MP_SYNOPT_WS_MASK) !=
							    MP_SYNOPT_WS_NONE
					   ? s->w.o.tsecr & MP_SYNOPT_WS_MASK
					   : 0,
				   0);
	mp_memcpy(&s->na.flow, &p->flow, sizeof(s->na.flow));
	mp_memcpy(&s->na.svc, svc, sizeof(s->na.svc));
	mp_memcpy(&s->na.proxy, &s->conn, sizeof(s->na.proxy));
	s->na.avoid = MP_RING_EMPTY;
	rc = mp_new_conn_run(&s->na);
	if (rc != MP_OK)
		return mp_exception(rc);
	ep_id = s->na.ep_id;
	ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	if (!ep)
		return XDP_DROP;
	s->conn.ep_id = ep_id;
	s->conn.snat_port = s->na.snat_port;
	s->conn.snat_addr = (__u8)s->na.snat_addr;
	mp_count(&mp_svc_stats, svc->id, 0, 1);
	mp_count(&mp_ep_stats, ep_id, 0, 1);
	return mp_syn_to_ep(ctx, p, family, node, ep_id, ep, s, s->w.o.tsval, window);
}

/* What a protected service's TCP segment with no connection (p) is to the SYN proxy: a SYN to
 * answer with a cookie (MP_SYN_ANSWER, while protection is on), an ACK whose cookie validates
 * (MP_SYN_OPEN + its MSS index), a segment to drop (MP_SYN_DROP: protection is on, and it is
 * neither) or MP_SYN_NOT_MINE. Inline, before any call that may change the packet: the common
 * path goes on with its packet pointers when the answer is MP_SYN_NOT_MINE. */
/* Is the SYN proxy answering svc's SYNs now? */
static __always_inline int mp_syn_protecting(const struct mp_svc *svc)
{
	const struct mp_syn_guard *g;

	if (svc->flags & MP_SVC_F_SYN_ALWAYS)
		return 1;
	if (!(svc->flags & MP_SVC_F_SYN_AUTO))
		return 0;
	g = bpf_map_lookup_elem(&mp_syn_guard, &svc->id);
	return g && g->on;
}

/* Does the ACK p carry a valid cookie? MP_SYN_OPEN + its MSS index (+ MP_SYN_OPEN_PROBE for a
 * zero-window probe), or MP_SYN_NOT_MINE. A cookie of another clock count costs no hash. */
static __always_inline int mp_syn_cookie_open(const struct mp_pkt *p)
{
	const struct mp_tcphdr *th = (const struct mp_tcphdr *)p->l4;
	__u32 cookie = mp_ntohl(th->ack_seq) - 1, count, isn;
	int age, mss_idx;

	count = mp_cookie_count(bpf_ktime_get_tai_ns());
	age = mp_cookie_age(cookie, count);
	if (age < 0)
		return MP_SYN_NOT_MINE;
	isn = mp_ntohl(th->seq) - 1;
	mss_idx = mp_cookie_data(cookie, mp_syn_cookie_hash(&p->flow, isn, count - age));
	if (mss_idx >= 0)
		return MP_SYN_OPEN + mss_idx;
	/* The client's ACK was lost and this is its zero-window probe, which carries snd_una - 1:
	 * the ISN itself. */
	if (p->l4_len != (__u32)(th->doff_res >> 4) * 4)
		return MP_SYN_NOT_MINE;
	mss_idx = mp_cookie_data(cookie, mp_syn_cookie_hash(&p->flow, isn + 1, count - age));
	return mss_idx >= 0 ? MP_SYN_OPEN + MP_SYN_OPEN_PROBE + mss_idx : MP_SYN_NOT_MINE;
}

/* What a protected service's TCP segment with no connection (p) is to the SYN proxy: a SYN to
 * answer with a cookie (MP_SYN_ANSWER, while protection is on), an ACK whose cookie validates
 * (mp_syn_cookie_open's answer), a segment to drop (MP_SYN_DROP: protection is on, and it is
 * neither) or MP_SYN_NOT_MINE. Inline, before any call that may change the packet: the common
 * path goes on with its packet pointers when the answer is MP_SYN_NOT_MINE. */
static __always_inline int mp_syn_screen(const struct mp_pkt *p, const struct mp_svc *svc)
{
	struct mp_syn_counters *st;
	int protecting = mp_syn_protecting(svc), rc;

	if (mp_tcp_opens(p->tcp_flags)) {
		if (protecting)
			return MP_SYN_ANSWER;
		if (svc->flags & MP_SVC_F_SYN_AUTO)
			mp_syn_guard_note(svc->id, 1);
		return MP_SYN_NOT_MINE;
	}
	if ((p->tcp_flags & (MP_TCP_SYN | MP_TCP_RST | MP_TCP_ACK)) != MP_TCP_ACK)
		return protecting ? MP_SYN_DROP : MP_SYN_NOT_MINE;
	rc = mp_syn_cookie_open(p);
	if (rc != MP_SYN_NOT_MINE || !protecting)
		return rc;
	st = mp_syn_counters_of(svc->id);
	if (st)
		st->acks_invalid += 1;
	return MP_SYN_DROP;
}

/* A client's ACK with a valid cookie on a tuple whose entry is left over from a connection
 * that closed, or never got its SYN-ACK (its SYN came before protection switched on): the
 * client started over with the proxy, whose SYN-ACK it took. Answers whether the entry (in
 * mp_conns when established) is retired for a new proxied connection (the ACK's cookie check,
 * mp_syn_cookie_open's answer, in *open). */
static __always_inline int mp_syn_replaces(struct mp_conn *conn, const struct mp_pkt *p,
					   int established, int *open)
{
	__u16 flags = conn->flags;

	if ((p->tcp_flags & (MP_TCP_SYN | MP_TCP_RST | MP_TCP_ACK | MP_TCP_FIN)) != MP_TCP_ACK)
		return 0;
	if (!(flags & MP_CONN_F_CLOSING) &&
	    (established || (flags & (MP_CONN_F_SYNACK | MP_CONN_F_PROXY))))
		return 0;
	*open = mp_syn_cookie_open(p);
	if (*open == MP_SYN_NOT_MINE)
		return 0;
	if (mp_conn_retire(conn))
		mp_ep_count_closed(conn->ep_id);
	if (established)
		bpf_map_delete_elem(&mp_conns, &p->flow);
	else
		bpf_map_delete_elem(&mp_half, &p->flow);
	mp_fwd_gen_bump(); /* no cache slot may go on serving the old connection */
	return 1;
}

static __always_inline int mp_syn_stateless_family(struct xdp_md *ctx, __u8 family, int mss_idx)
{
	struct mp_syn_scratch *s;
	const struct mp_svc *svc;
	struct mp_pkt p;
	__u32 zero = 0;

	if (mp_syn_parse(ctx, &p, family) != MP_OK)
		return XDP_DROP;
	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!s)
		return XDP_DROP;
	svc = mp_syn_service(&p.flow, s);
	if (!svc)
		return XDP_DROP;
	if (mss_idx < 0)
		return mp_syn_answer(ctx, &p, family, svc, s);
	return mp_syn_open(ctx, &p, family, svc, mss_idx, s);
}

/* A proxied connection's segment in either direction (to_ep: from the client) once the endpoint
 * has answered: its close recorded, its entry's life refreshed, the segment translated
 * (synproxy.h) and counted. MP_OK, or the verdict of a segment that cannot be translated. */
static __always_inline int mp_syn_pass(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
				       struct mp_conn *conn, __u32 svc_id,
				       const struct mp_svc_tmo *t, int established, int to_ep,
				       struct mp_syn_scratch *s)
{
	__u32 ep_id = conn->ep_id, bits;
	int rc;

	bits = mp_tcp_close_bits(p->tcp_flags, to_ep);
	if (bits && (rc = mp_conn_mark(conn, bits)))
		mp_conn_closed(ep_id, rc);
	mp_conn_live(conn, IPPROTO_TCP, established, t, bpf_jiffies64());
	if (p->l4 + MP_TCP_BARE_LEN > (__u8 *)(long)ctx->data_end)
		return XDP_DROP;
	if (mp_proxy_translate_hdr((struct mp_tcphdr *)p->l4, conn, to_ep, &s->w.e) &&
	    mp_syn_opts(ctx, p, &s->w, 1))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	if (mp_syn_parse(ctx, p, family) != MP_OK) /* the store may have moved the frame */
		return XDP_DROP;
	if (p->l4 + MP_TCP_BARE_LEN > (__u8 *)(long)ctx->data_end)
		return XDP_DROP;
	mp_proxy_translate_done((struct mp_tcphdr *)p->l4, &s->w.e);
	mp_count(&mp_svc_stats, svc_id, p->ip_len, 0);
	mp_count(&mp_ep_stats, ep_id, p->ip_len, 0);
	return MP_OK;
}

/* A client's segment of a proxied connection: translated and forwarded once the endpoint has
 * answered; before that, dropped, unless the endpoint has been silent past
 * MP_SYN_CONNECT_TIMEOUT_NS, when the segment (the client's zero-window probe) becomes the SYN
 * to another endpoint. A pure SYN starts the tuple over: the entry goes and a cookie answers. */
static __always_inline int mp_syn_client_family(struct xdp_md *ctx, __u8 family)
{
	const struct mp_node_cfg *node;
	const struct mp_endpoint *ep;
	const struct mp_svc_tmo *t;
	const struct mp_svc *svc;
	struct mp_syn_scratch *s;
	struct mp_conn *conn;
	struct mp_pkt p;
	__u32 zero = 0, ep_id;
	__u64 now, sent, tmo;
	int established = 1, rc;

	if (mp_syn_parse(ctx, &p, family) != MP_OK)
		return XDP_DROP;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!node || !s)
		return XDP_DROP;
	svc = mp_syn_service(&p.flow, s);
	if (!svc)
		return XDP_DROP;
	conn = bpf_map_lookup_elem(&mp_conns, &p.flow);
	if (!conn) {
		conn = bpf_map_lookup_elem(&mp_half, &p.flow);
		established = 0;
	}
	if (!conn || !(conn->flags & MP_CONN_F_PROXY))
		return XDP_DROP;
	ep_id = conn->ep_id;
	ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	t = bpf_map_lookup_elem(&mp_svc_tmo, &svc->id);
	now = bpf_jiffies64();
	if (mp_tcp_opens(p.tcp_flags) || !ep || !mp_ep_usable(ep, svc->id, family)) {
		if (mp_conn_retire(conn))
			mp_ep_count_closed(ep_id);
		if (established)
			bpf_map_delete_elem(&mp_conns, &p.flow);
		else
			bpf_map_delete_elem(&mp_half, &p.flow);
		if (mp_tcp_opens(p.tcp_flags))
			return mp_syn_answer(ctx, &p, family, svc, s);
		return XDP_DROP;
	}
	if (conn->flags & MP_CONN_F_SYN_SENT) {
		tmo = mp_tmo(t, MP_TMO_TCP_SYN);
		sent = conn->expires - tmo;
		if ((now - sent) * tick_ns < MP_SYN_CONNECT_TIMEOUT_NS)
			return mp_exception(MP_EXC_DROP_SYN_PENDING);
		mp_health_fail(ep_id, MP_PASSIVE_SYN_RETRANS);
		mp_memcpy(&s->conn, conn, sizeof(s->conn));
		mp_memcpy(&s->flow, &p.flow, sizeof(s->flow));
		rc = mp_syn_opts(ctx, &p, &s->w, 0);
		return mp_syn_enter(ctx, MP_SYN_DO_RETRY, family,
				    !rc && s->w.o.has_ts ? s->w.o.tsval : conn->ts_off - 32);
	}
	rc = mp_syn_pass(ctx, &p, family, conn, svc->id, t, established, 1, s);
	if (rc != MP_OK)
		return rc;
	if (conn->snat_addr == MP_SNAT_NONE) {
		mp_nat_rewrite(&p, family, p.flow.src, ep->addr, p.flow.sport, ep->port);
		return mp_transmit_via(ctx, &p, family, bpf_map_lookup_elem(&mp_nh_cache, &ep_id),
				       p.flow.src, ep->addr, p.flow.sport, ep->port, now);
	}
	mp_nat_forward(&p, family, ep, mp_node_addr(node, family, conn->snat_addr),
		       conn->snat_port);
	return mp_transmit_via(ctx, &p, family, bpf_map_lookup_elem(&mp_nh_cache, &ep_id),
			       mp_node_addr(node, family, conn->snat_addr), ep->addr,
			       conn->snat_port, ep->port, now);
}

/* The endpoint's SYN-ACK to a proxied connection's SYN: the connection is established (the
 * offsets now known) and the SYN-ACK becomes the client's window update, an ACK carrying the
 * endpoint's window. The endpoint's own handshake completes with the client's first segment;
 * should the client have none to send, the endpoint's repeated SYN-ACK is answered below. */
static __always_inline int mp_syn_established(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					      struct mp_conn *conn, struct mp_syn_scratch *s,
					      int half)
{
	struct mp_tcphdr *th = (struct mp_tcphdr *)p->l4;
	struct mp_promote_ask *pa = mp_promote_scratch();
	const struct mp_svc_tmo *t;
	const struct mp_endpoint *ep;
	struct mp_tcp_out *o = &s->out;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 ep_id = conn->ep_id, our_tsval = conn->ts_off;
	__u16 window;
	int rc;

	if ((__u8 *)th + MP_TCP_BARE_LEN > end || !pa)
		return XDP_DROP;
	if (mp_ntohl(th->ack_seq) != conn->syn_ns + 1)
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	if (mp_syn_opts(ctx, p, &s->w, 0))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	window = mp_ntohs(th->window);
	mp_memcpy(&s->conn, conn, sizeof(s->conn));
	s->conn.flags &= ~MP_CONN_F_SYN_SENT;
	s->conn.seq_off = mp_ntohl(th->seq) - conn->seq_off;
	s->conn.ts_off = s->w.o.has_ts ? s->w.o.tsval - our_tsval : 0;
	s->conn.ep_wscale = s->w.o.wscale;
	s->conn.syn_ns = 0;
	mp_health_ok(ep_id, 0);
	if (half) {
		mp_memcpy(&pa->flow, &s->flow, sizeof(pa->flow));
		mp_memcpy(&pa->rkey, &p->flow, sizeof(pa->rkey));
		mp_memcpy(&pa->rval, &s->r, sizeof(pa->rval));
		pa->rval.ep_id |= MP_RNAT_F_PROXY; /* as mp_hrnat holds it */
		ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
		t = ep ? bpf_map_lookup_elem(&mp_svc_tmo, &ep->svc_id) : NULL;
		rc = mp_promote_flow(pa, &s->conn, t, bpf_jiffies64());
		if (rc != MP_OK)
			return mp_exception(rc);
	}

	mp_memset(o, 0, sizeof(*o));
	mp_copy_addr16(o->src, s->r.vip);
	mp_copy_addr16(o->dst, s->r.client);
	o->sport = s->r.vip_port;
	o->dport = s->r.client_port;
	o->seq = conn->seq_off + 1; /* the cookie + 1: conn still holds the half-open values */
	o->ack = conn->syn_ns + 1;
	o->flags = MP_TCP_ACK;
	o->window = mp_window_rescale(window, 0,
				      s->conn.proxy_opts & MP_SYNOPT_TS &&
						      (s->conn.proxy_opts & MP_SYNOPT_WS_MASK) !=
							      MP_SYNOPT_WS_NONE
					      ? MP_SYN_WSCALE
					      : 0);
	o->wscale = MP_SYNOPT_WS_NONE;
	o->has_ts = s->w.o.has_ts;
	o->tsval = our_tsval;
	o->tsecr = s->w.o.tsecr;
	if (mp_syn_emit_ack(ctx, p, family, o))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	return mp_syn_to_client(ctx, p, family, o);
}

/* The endpoint repeats its SYN-ACK: the client has not sent anything yet (a protocol where the
 * server speaks first), so the proxy completes the endpoint's handshake itself. */
static __always_inline int mp_syn_ack_endpoint(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					       const struct mp_conn *conn, struct mp_syn_scratch *s)
{
	struct mp_tcphdr *th = (struct mp_tcphdr *)p->l4;
	struct mp_tcp_out *o = &s->out;
	struct mp_proxy_shifts sh;
	__u8 *end = (__u8 *)(long)ctx->data_end;

	if ((__u8 *)th + MP_TCP_BARE_LEN > end)
		return XDP_DROP;
	if (mp_syn_opts(ctx, p, &s->w, 0))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	mp_proxy_shifts_of(conn, &sh);
	mp_memset(o, 0, sizeof(*o));
	mp_copy_addr16(o->src, p->flow.dst);
	mp_copy_addr16(o->dst, p->flow.src);
	o->sport = p->flow.dport;
	o->dport = p->flow.sport;
	o->seq = mp_ntohl(th->ack_seq);
	o->ack = mp_ntohl(th->seq) + 1;
	o->flags = MP_TCP_ACK;
	o->window = (__u16)(0xffff >> (sh.ep_reads_client & 15));
	o->wscale = MP_SYNOPT_WS_NONE;
	o->has_ts = s->w.o.has_ts;
	o->tsval = s->w.o.tsecr; /* the client's TSval the endpoint saw last */
	o->tsecr = s->w.o.tsval;
	if (mp_syn_emit_ack(ctx, p, family, o))
		return mp_exception(MP_EXC_DROP_SYN_MALFORMED);
	return mp_syn_bounce(ctx, p);
}

/* An endpoint's segment of a proxied connection (its reverse entry carries MP_RNAT_F_PROXY). */
static __always_inline int mp_syn_reply_family(struct xdp_md *ctx, __u8 family)
{
	const struct mp_node_cfg *node;
	const struct mp_rnat *found;
	const struct mp_endpoint *ep;
	const struct mp_svc *svc;
	const struct mp_svc_tmo *t;
	struct mp_syn_scratch *s;
	struct mp_conn *conn;
	struct mp_pkt p;
	__u32 zero = 0, ep_id, slot;
	__u64 now;
	int half = 0, rc;

	if (mp_syn_parse(ctx, &p, family) != MP_OK)
		return XDP_DROP;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!node || !s)
		return XDP_DROP;
	if (mp_node_owns(node, family, p.flow.dst)) {
		found = bpf_map_lookup_elem(&mp_rnat, &p.flow);
		if (!found) {
			found = bpf_map_lookup_elem(&mp_hrnat, &p.flow);
			half = 1;
		}
		if (!found)
			return XDP_DROP;
		mp_memcpy(&s->r, found, sizeof(s->r));
	} else {
		half = mp_dnat_reply_of(&p.flow, &s->r);
		if (half < 0)
			return XDP_DROP;
	}
	ep_id = s->r.ep_id & MP_RNAT_EP_MASK;
	s->r.ep_id = ep_id;
	mp_rnat_client_flow(&s->flow, &s->r, IPPROTO_TCP, family);
	conn = half ? bpf_map_lookup_elem(&mp_half, &s->flow)
		    : bpf_map_lookup_elem(&mp_conns, &s->flow);
	if (!conn || conn->ep_id != ep_id || !(conn->flags & MP_CONN_F_PROXY))
		return XDP_DROP;
	if (conn->snat_addr != MP_SNAT_NONE && conn->snat_port != p.flow.dport)
		return XDP_DROP;
	ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
	if (!ep)
		return XDP_DROP;
	svc = mp_syn_service(&s->flow, s);
	if (!svc)
		return XDP_DROP;

	if ((p.tcp_flags & (MP_TCP_SYN | MP_TCP_ACK | MP_TCP_RST)) == (MP_TCP_SYN | MP_TCP_ACK)) {
		if (conn->flags & MP_CONN_F_SYN_SENT)
			return mp_syn_established(ctx, &p, family, conn, s, half);
		return mp_syn_ack_endpoint(ctx, &p, family, conn, s);
	}
	if (conn->flags & MP_CONN_F_SYN_SENT) {
		if (!(p.tcp_flags & MP_TCP_RST))
			return XDP_DROP;
		mp_health_fail(ep_id, MP_PASSIVE_RST);
		mp_memcpy(&s->conn, conn, sizeof(s->conn));
		return mp_syn_enter(ctx, MP_SYN_DO_RETRY, family, conn->ts_off - 32);
	}
	now = bpf_jiffies64();
	t = bpf_map_lookup_elem(&mp_svc_tmo, &svc->id);
	rc = mp_syn_pass(ctx, &p, family, conn, svc->id, t, !half, 0, s);
	if (rc != MP_OK)
		return rc;
	mp_nat_reverse(&p, family, &s->r);
	slot = mp_addr_slot_index(s->r.client, MP_NH_CLIENT_BITS);
	return mp_transmit_via(ctx, &p, family, bpf_map_lookup_elem(&mp_nh_client, &slot), s->r.vip,
			       s->r.client, s->r.vip_port, s->r.client_port, now);
}

/* The SYN-protection program, reached by tail call from mp_xdp_lb with what to do in the
 * per-CPU scratch entry. A program of its own: its stack is its own 512 bytes (the balancer's
 * path already uses most of one), and the verifier checks it apart. */
SEC("xdp")
int mp_xdp_syn(struct xdp_md *ctx);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__array(values, int(void *));
} mp_syn_progs SEC(".maps") = {
	.values = {[0] = (void *)&mp_xdp_syn},
};

static __always_inline int mp_syn_enter(struct xdp_md *ctx, __u32 what, __u8 family, __u32 arg)
{
	struct mp_syn_scratch *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!s)
		return XDP_DROP;
	s->what = what;
	s->family = family;
	s->arg = arg;
	bpf_tail_call(ctx, &mp_syn_progs, 0);
	return mp_exception(MP_EXC_DROP_SYN_MALFORMED); /* not reached while mp_xdp_syn is loaded */
}

static __always_inline int mp_syn_do(struct xdp_md *ctx, __u8 family, __u32 what, __u32 arg)
{
	switch (what) {
	case MP_SYN_DO_ANSWER:
		return mp_syn_stateless_family(ctx, family, -1);
	case MP_SYN_DO_OPEN:
		return mp_syn_stateless_family(ctx, family, (int)(arg & 7));
	case MP_SYN_DO_CLIENT:
		return mp_syn_client_family(ctx, family);
	case MP_SYN_DO_REPLY:
		return mp_syn_reply_family(ctx, family);
	default:
		return mp_syn_retry_family(ctx, family, arg);
	}
}

SEC("xdp")
int mp_xdp_syn(struct xdp_md *ctx)
{
	const struct mp_syn_scratch *s;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&mp_syn_tmp, &zero);
	if (!s)
		return XDP_DROP;
	if (s->family == MP_AF_INET)
		return mp_syn_do(ctx, MP_AF_INET, s->what, s->arg);
	return mp_syn_do(ctx, MP_AF_INET6, s->what, s->arg);
}

/* A packet to a VIP goes to its connection's endpoint, from one of the node's SNAT sources. */
static __always_inline int mp_to_service(struct xdp_md *ctx, struct mp_pkt *p, __u8 family,
					 const struct mp_node_cfg *node, __u64 bytes)
{
	const struct mp_endpoint *ep = NULL;
	const struct mp_svc_tmo *t;
	struct mp_conn *conn = NULL;
	struct mp_fc_probe fc = {};
	const struct mp_svc *svc;
	struct mp_svc_key key;
	__u64 new_conn = 0, now, gen = 0;
	__u32 ep_id, snat_addr = 0, n_addrs;
	int established = 1, cacheable = 0, protected;
	struct mp_promote_ask *pa;
	__u16 snat_port;
	int rc;

	now = bpf_jiffies64(); /* inlined, where a clock read costs a third of the trivial program */
	n_addrs = mp_node_n_addrs(node, family);
	if (n_addrs || node->n_dnat) {
		gen = mp_fwd_gen_now();
		mp_fc_lookup(&fc, p, gen, now);
		if (fc.hit) {
			ep_id = fc.slot->ep_id;
			ep = bpf_map_lookup_elem(&mp_endpoints, &ep_id);
			if (ep && mp_ep_usable(ep, fc.slot->svc_id, family)) {
				snat_port = fc.slot->snat_port;
				snat_addr = fc.slot->snat_addr;
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
		return node->n_dnat ? mp_reply_dnat(ctx, p, family, bytes) : XDP_PASS;
	if (!n_addrs && svc->fwd_mode != MP_FWD_DNAT)
		return mp_exception(MP_EXC_DROP_NO_NODE_ADDR);
	t = bpf_map_lookup_elem(&mp_svc_tmo, &svc->id);

	protected = p->flow.proto == IPPROTO_TCP &&
		    (svc->flags & (MP_SVC_F_SYN_AUTO | MP_SVC_F_SYN_ALWAYS));
	/* While the proxy is on, a SYN is answered without looking for its connection: a flood is
	 * all misses, and two misses in tables of a million entries cost more than the answer. A
	 * client that reused a tuple whose entry is still there has it retired by its valid ACK
	 * (mp_syn_replaces). */
	if (protected && mp_tcp_opens(p->tcp_flags) && mp_syn_protecting(svc))
		return mp_syn_enter(ctx, MP_SYN_DO_ANSWER, family, 0);

	/* Looked up for a SYN too: skipping it (the insert would tell) measured no faster. */
	conn = bpf_map_lookup_elem(&mp_conns, &p->flow);
	if (!conn) {
		conn = bpf_map_lookup_elem(&mp_half, &p->flow);
		established = 0;
	}
	if (conn && protected && mp_unlikely(mp_syn_replaces(conn, p, established, &rc)))
		return mp_syn_enter(ctx, MP_SYN_DO_OPEN, family, rc - MP_SYN_OPEN);
	if (conn && mp_unlikely(conn->flags & MP_CONN_F_PROXY))
		return mp_syn_enter(ctx, MP_SYN_DO_CLIENT, family, 0);
	if (!conn && protected) {
		rc = mp_syn_screen(p, svc);
		if (rc != MP_SYN_NOT_MINE)
			return rc == MP_SYN_ANSWER ? mp_syn_enter(ctx, MP_SYN_DO_ANSWER, family, 0)
			       : rc >= MP_SYN_OPEN
				       ? mp_syn_enter(ctx, MP_SYN_DO_OPEN, family, rc - MP_SYN_OPEN)
				       : mp_exception(MP_EXC_DROP_SYN_COOKIE);
	}
	if (conn) {
		ep_id = conn->ep_id;
		snat_port = conn->snat_port;
		snat_addr = conn->snat_addr;
		ep = mp_conn_endpoint(conn, p, svc, family, established, t, now, &new_conn);
	}
	if (ep && !established && mp_half_promotes(conn->flags, p->flow.proto, p->tcp_flags)) {
		pa = mp_promote_scratch();
		if (!pa) /* unreachable: entry 0 exists */
			return mp_exception(MP_EXC_DROP_CONN_INSERT);
		mp_memcpy(&pa->flow, &p->flow, sizeof(pa->flow));
		mp_rnat_key(&pa->rkey, &p->flow, ep, mp_node_addr(node, family, snat_addr),
			    snat_port);
		mp_rnat_value(&pa->rval, &p->flow, ep_id);
		rc = mp_promote_flow(pa, conn, t, now);
		if (rc != MP_OK)
			return mp_exception(rc);
		if (svc->flags & MP_SVC_F_SYN_AUTO)
			mp_syn_guard_note(svc->id, 0); /* a handshake completed */
		established = 1;
		cacheable = 1;
	} else if (ep) {
		mp_conn_live(conn, p->flow.proto, established, t, now);
		/* A closing connection's packets keep taking the slow path, so no slot outlives its
		 * close. */
		cacheable = established && !(conn->flags & MP_CONN_F_CLOSING);
	}
	if (!ep) {
		rc = mp_new_conn(&p->flow, p->tcp_flags, family, svc, t, now, &ep, &ep_id,
				 &snat_port, &snat_addr, MP_RING_EMPTY, NULL);
		if (rc != MP_OK)
			return mp_exception(rc);
		new_conn = 1;
	}

	if (cacheable && !new_conn)
		mp_fc_fill(&fc, p, gen, now, ep_id, svc->id, snat_port, snat_addr);
	mp_count(&mp_svc_stats, svc->id, bytes, new_conn);
forward:
	mp_count(&mp_ep_stats, ep_id, bytes, new_conn);
	if (snat_addr == MP_SNAT_NONE) { /* DNAT: the client stays the source */
		mp_nat_rewrite(p, family, p->flow.src, ep->addr, p->flow.sport, ep->port);
		return mp_transmit_to_ep(ctx, p, family, ep_id, ep, p->flow.src, p->flow.sport,
					 now);
	}
	mp_nat_forward(p, family, ep, mp_node_addr(node, family, snat_addr), snat_port);
	return mp_transmit_to_ep(ctx, p, family, ep_id, ep, mp_node_addr(node, family, snat_addr),
				 snat_port, now);
}

/* Well-formed IP that is neither TCP nor UDP is the kernel's (passed, uncounted). An ICMP /
 * ICMPv6 destination unreachable to one of the node's SNAT sources that quotes one of its
 * translated packets is first a passive failure of the endpoint that packet went to (mp_rnat or
 * mp_hrnat names it). Malformed or cut-short ICMP counts nothing and passes too: the kernel
 * judges it. */
static __always_inline int mp_not_ours(struct mp_cursor *c, const struct mp_pkt *p, __u8 family)
{
	const struct mp_node_cfg *node;
	const struct mp_rnat *r;
	struct mp_flow rkey;
	__u32 zero = 0;

	if (p->flow.proto != (family == MP_AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6))
		return XDP_PASS;
	node = bpf_map_lookup_elem(&mp_node, &zero);
	if (!node || !mp_node_owns(node, family, p->flow.dst))
		return XDP_PASS;
	if (mp_parse_icmp_unreach(c, p, family, p->flow.dst, &rkey) != MP_OK)
		return XDP_PASS;
	r = bpf_map_lookup_elem(&mp_rnat, &rkey);
	if (!r)
		r = bpf_map_lookup_elem(&mp_hrnat, &rkey);
	if (r && r->ep_id != MP_RNAT_CLAIMED)
		mp_health_fail(r->ep_id & MP_RNAT_EP_MASK, MP_PASSIVE_ICMP_UNREACH);
	return XDP_PASS;
}

/* Everything after Ethernet, for one family (a constant: each family is its own path). */
static __always_inline int mp_process(struct xdp_md *ctx, struct mp_cursor *c, struct mp_pkt *p,
				      __u8 family, __u64 bytes)
{
	const struct mp_node_cfg *node;
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
	if (mp_node_owns(node, family, p->flow.dst))
		return mp_reply(ctx, p, family, bytes);
	return mp_to_service(ctx, p, family, node, bytes);
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

/* meshd's clock: run by BPF_PROG_RUN, it leaves the program's jiffies in clock_jiffies, so a
 * recount in user space can tell which entries have expired in the program's own time. */
SEC("xdp")
int mp_xdp_clock(struct xdp_md *ctx)
{
	clock_jiffies = bpf_jiffies64();
	return XDP_PASS;
}
