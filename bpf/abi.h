/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* abi.h — everything that crosses between the BPF programs, the DPDK forwarder and meshd:
 * map names and sizes, key/value layouts, exception (drop/pass) reasons.
 * Fixed-width fields only, no pointers; every struct has its size asserted here, so the C++
 * side (which includes this same header) and the BPF side cannot drift apart.
 * Addresses and ports are stored in network byte order, exactly as they sit in the packet.
 * An IPv4 address occupies the first 4 bytes of a 16-byte address field; the rest are zero.
 */
#ifndef MESHPATH_BPF_ABI_H
#define MESHPATH_BPF_ABI_H

#include <linux/types.h>

#define MP_MAX_SERVICES 65536
#define MP_MAX_ENDPOINTS 65536
#define MP_RING_SIZE_DEFAULT 65537 /* mp_rings template only: each ring has its own M (ring.h) */
#define MP_RING_SIZE_MAX 1048573   /* largest prime we accept for M */
#define MP_CONN_TABLE_DEFAULT (1 << 20) /* established connections (mp_conns, mp_rnat) */
#define MP_HALF_TABLE_DEFAULT (1 << 18) /* half-open flows (mp_half, mp_hrnat) */
/* Below Linux's default ephemeral range (32768-60999): meshd's "auto" range on such a host. */
#define MP_SNAT_PORT_MIN_DEFAULT 1024
#define MP_SNAT_PORT_MAX_DEFAULT 32767
/* SNAT source addresses per family (the node's pool): each is a port range of its own. */
#define MP_SNAT_ADDRS_MAX 8
/* Ports a new flow tries toward its endpoint before giving up (drop_snat_exhausted). With a
 * fraction f of the range held by open (or just closed) connections, a new flow is refused with
 * probability f^MP_SNAT_PROBES: 16 keeps that below 1e-5 up to f = 0.48. */
#define MP_SNAT_PROBES 16
/* After a new flow found every candidate port toward an endpoint held, this CPU drops the next
 * new flows toward it without probing for this long (the drop path costs about what an
 * established packet does, not 32 probes). */
#define MP_SNAT_BACKOFF_NS_DEFAULT (100ull * 1000 * 1000)
#define MP_IPV6_EXT_MAX 4 /* bounded walk over IPv6 extension headers */

/* Pinned under MP_PIN_ROOT by meshd; names fit the kernel's 15 characters. */
#define MP_PIN_ROOT "/sys/fs/bpf/meshpath"

enum mp_family {
	MP_AF_INET = 4,
	MP_AF_INET6 = 6,
};

/* mp_services: (VIP, port, proto) -> service. */
struct mp_svc_key {
	__u8 addr[16];
	__u16 port;  /* network order */
	__u8 proto;  /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family; /* enum mp_family */
};

enum mp_fwd_mode {
	MP_FWD_NAT = 0,	 /* full NAT: DNAT to the endpoint + SNAT to the node's pool */
	MP_FWD_DSR = 1,	 /* reserved: later issue */
	MP_FWD_DNAT = 2, /* source-preserving: DNAT only; the endpoint sees the client's address and
			  * routes its replies through the node, which matches them by the
			  * connection's own entry (mp_ep_vip names the VIP) */
};

/* How a new flow picks its endpoint. Every algorithm reads the service's ring, which holds
 * endpoint ids in proportion to their weights, so weights mean the same under each; only new
 * flows choose (mp_conns keeps a connection on its endpoint). Per-packet costs: bpf/README.md. */
enum mp_algorithm {
	MP_ALG_MAGLEV = 0,	 /* ring slot = hash of the 5-tuple (consistent) */
	MP_ALG_RANDOM = 1,	 /* ring slot = bpf_get_prandom_u32() */
	MP_ALG_ROUND_ROBIN = 2,	 /* ring slot = this CPU's counter for the service (mp_rr), +1 per
				  * new flow; meshd fills the ring of such a service with an
				  * interleaved (smooth weighted round-robin) sequence */
	MP_ALG_LEAST_CONN = 3,	 /* two random slots; the endpoint with fewer active connections
				  * (power of two choices) */
	MP_ALG_LEAST_LATENCY = 4, /* two random slots; the endpoint with the lower SYN -> SYN-ACK time
				   * (mp_ep_health.rtt_ns; TCP in nat mode) */
	MP_ALG_MAX,
};

struct mp_svc {
	__u32 id;	   /* index into mp_rings, mp_svc_stats, mp_rr */
	__u32 ring_size;   /* M: slots per half of this service's ring */
	__u32 active_half; /* 0 or 1: which half of the ring packets read */
	__u8 fwd_mode;	   /* enum mp_fwd_mode */
	__u8 algorithm;	   /* enum mp_algorithm */
	__u16 flags;	   /* MP_SVC_F_*, and connect_retries (MP_SVC_RETRIES_*) */
};

/* mp_svc.flags. SYN protection (bpf/synproxy.h): off (neither bit), auto (the datapath answers
 * SYNs with cookies while mp_syn_guard says a flood is on) or always. A TCP service only. */
#define MP_SVC_F_SYN_AUTO (1u << 0)
#define MP_SVC_F_SYN_ALWAYS (1u << 1)
/* connect_retries: how many more endpoints a SYN-proxied connection tries when its endpoint
 * refuses (RST) or does not answer its SYN, before the client gets a RST. */
#define MP_SVC_RETRIES_SHIFT 8
#define MP_SVC_RETRIES_MASK 0x7u
#define MP_CONNECT_RETRIES_DEFAULT 2

/* A new flow whose ring pick is marked down (mp_ep_health) tries the next slots of the ring, up
 * to this many in all; when every one is down it takes the first pick (as panic would). */
#define MP_DOWN_PROBES 8

/* mp_endpoints: endpoint id -> where to send. Ring slots hold endpoint ids. */
#define MP_EP_F_IN_USE (1 << 0)
struct mp_endpoint {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 family;
	__u8 flags; /* MP_EP_F_* */
	__u32 svc_id;
};

/* mp_rings: ARRAY_OF_MAPS indexed by service id; each inner map is an ARRAY of 2 * M endpoint ids
 * (half h occupies slots [h*M, h*M + M)). meshd writes the inactive half, then flips
 * mp_svc.active_half with one update of the service entry. MP_RING_EMPTY marks "no endpoint". */
#define MP_RING_EMPTY 0xffffffffu

/* Connection state lives in two pairs of tables (bpf/README.md, "Connection state"):
 * mp_conns (HASH) / mp_rnat (HASH): established connections, never evicted by pressure: a TCP
 *   connection whose handshake completed through the balancer, a UDP flow the endpoint answered.
 *   Entries leave when their lifetime runs out (meshd's recount deletes them; a new flow may
 *   take an expired one's SNAT port at once).
 * mp_half (LRU) / mp_hrnat (LRU): half-open flows (a SYN not yet followed by the client's ACK of
 *   the endpoint's SYN-ACK; a UDP flow not answered yet). A flood of new flows evicts only these.
 * mp_conns / mp_half: the 5-tuple as the client sent it -> the connection's endpoint.
 * mp_rnat / mp_hrnat: the 5-tuple of a reply as the endpoint sends it -> who to restore. */
struct mp_flow {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport; /* network order */
	__u16 dport; /* network order */
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* mp_conn.flags: how far a TCP connection has closed, seen from either side. Both directions
 * set bits, with an atomic or on the 32-bit word {snat_port, flags} (snat_port never changes);
 * the one that completes the close (RST, or the second FIN) stamps closed_ns. A pure SYN on an
 * entry with close bits (the client reusing its 5-tuple) clears both. */
#define MP_CONN_F_FIN_CLIENT (1u << 0) /* a FIN from the client */
#define MP_CONN_F_FIN_EP (1u << 1)     /* a FIN from the endpoint */
#define MP_CONN_F_RST (1u << 2)	       /* a RST, either way */
/* TCP: the client's SYN went to the endpoint, no SYN-ACK came back yet. closed_ns holds the time
 * the SYN was sent (bpf_ktime_get_ns) while this is set and no close bit is. */
#define MP_CONN_F_SYN_SENT (1u << 3)
/* The connection was counted in its endpoint's mp_ep_health.opened; the packet that completes
 * its close (mp_conn_mark answers 1) counts it in .closed, so each is counted once. A flow
 * re-picked onto another endpoint clears it (atomic and) and counts the close if the
 * connection was open; a reopen sets it again and counts a new open. UDP entries never have it. */
#define MP_CONN_F_COUNTED (1u << 4)
/* TCP, half-open: the endpoint's SYN-ACK came back; the client's ACK now promotes the flow. */
#define MP_CONN_F_SYNACK (1u << 5)
/* SYN-proxied (bpf/synproxy.h): the balancer answered the client's SYN with a cookie and opens
 * the connection to the endpoint itself; every packet is sequence-translated (seq_off, ts_off).
 * Until the endpoint's SYN-ACK (MP_CONN_F_SYN_SENT set), the entry is half-open, seq_off holds
 * the cookie (the balancer's ISN toward the client) and ts_off the TSval the client echoes. */
#define MP_CONN_F_PROXY (1u << 6)

/* Lifetimes (abi.h index into mp_svc_tmo): which one an entry lives by follows from its table,
 * protocol and flags (conn.h, mp_conn_tmo_index). */
enum mp_tmo {
	MP_TMO_TCP_SYN = 0,	/* half-open TCP, or a reopen waiting for its SYN-ACK */
	MP_TMO_TCP_EST = 1,	/* established */
	MP_TMO_TCP_FIN = 2,	/* one side sent FIN */
	MP_TMO_TCP_CLOSED = 3,	/* FIN both ways, or RST: the final ACK's linger */
	MP_TMO_UDP = 4,		/* not answered yet */
	MP_TMO_UDP_REPLIED = 5, /* answered */
	MP_TMO_MAX,
};

struct mp_conn {
	__u32 ep_id;
	__u16 snat_port; /* network order; the node-side source port of this connection */
	__u16 flags;	 /* MP_CONN_F_* */
	__u64 expires;	 /* bpf_jiffies64() from which the entry is expired (its SNAT port free) */
	__u32 syn_ns;	 /* low 32 bits of the SYN's bpf_ktime_get_ns() while MP_CONN_F_SYN_SENT
			  * (a SYN-proxied entry: the client's ISN instead) */
	__u8 snat_addr;	 /* index of its SNAT source in the node's pool of its family */
	/* SYN-proxied connections only (MP_CONN_F_PROXY), else 0: */
	__u8 proxy_opts; /* the client's SYN options (synproxy.h, MP_SYNOPT_*) */
	__u8 retries;	 /* endpoints tried after the first */
	__u8 ep_wscale;	 /* the endpoint's window scale (MP_SYNOPT_WS_NONE: none) */
	__u32 seq_off;	 /* endpoint ISN - balancer ISN: the endpoint's sequence space - the
			  * client's view of it */
	__u32 ts_off;	 /* endpoint TSval - balancer TSval, likewise for timestamps */
};

/* mp_conn.snat_addr of a DNAT connection: no SNAT source (snat_port holds the client's port). */
#define MP_SNAT_NONE 0xff

/* mp_ep_vip (HASH): for an endpoint of a DNAT service, (address, port, proto, family) -> the VIP
 * its replies come back from. meshd refuses one endpoint address:port in two DNAT services of a
 * protocol: the endpoint would see the same tuple for both. */
struct mp_ep_key {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 proto;
	__u8 family;
};
struct mp_ep_vip {
	__u8 vip[16];
	__u16 vip_port; /* network order */
	__u16 pad;
	__u32 ep_id;
};

/* mp_svc_tmo: ARRAY indexed by service id, its lifetimes in jiffies (meshd converts). */
struct mp_svc_tmo {
	__u64 jiffies[MP_TMO_MAX];
};

/* While a new flow takes a SNAT port over from a closed connection, ep_id of the old entry
 * reads MP_RNAT_CLAIMED (an id no endpoint has): the claim is a compare-and-swap of the word
 * {client_port, vip_port, ep_id}, so two new flows never take the same port. */
#define MP_RNAT_CLAIMED 0xffffffffu
/* mp_rnat.ep_id of a SYN-proxied connection carries this bit, so its replies (each of which is
 * translated) look their connection up and the others do not. The endpoint id is the rest. */
#define MP_RNAT_F_PROXY (1u << 30)
#define MP_RNAT_EP_MASK (MP_RNAT_F_PROXY - 1)
struct mp_rnat {
	__u8 client[16];
	__u8 vip[16];
	__u16 client_port; /* network order */
	__u16 vip_port;	   /* network order */
	__u32 ep_id;
};

/* mp_ep_health: ARRAY (BPF_F_MMAPABLE) indexed by endpoint id, one entry shared by all CPUs.
 * The datapath counts an endpoint's passive failures and marks it down; meshd, which maps the
 * array, sets `fall` and clears the mark and the count with atomic operations on single fields
 * (never a whole-entry update, which would lose the datapath's concurrent increments).
 * Passive failures (nat mode): a RST answering a SYN, an ICMP destination unreachable from the
 * endpoint, the client retransmitting a SYN the endpoint has not answered. A SYN-ACK (TCP) or any
 * reply (UDP) is a success and resets `fails`. */
#define MP_EPH_F_DOWN (1u << 0) /* marked down by the datapath: new flows skip it */
struct mp_ep_health {
	__u32 fails; /* consecutive passive failures (atomic add; a success exchanges it to 0) */
	__u32 flags; /* MP_EPH_F_*: the datapath sets DOWN (atomic or), meshd clears it */
	__u32 fall;  /* set by meshd: failures that mark the endpoint down; 0 = passive detection off */
	__u32 pad;
	__u64 opened;  /* TCP connections opened toward it (datapath, atomic add) */
	__u64 closed;  /* of those, closed (datapath, atomic add) */
	__s64 adjust;  /* meshd: correction for connections the LRU evicted or meshd flushed;
			* active connections = opened - closed + adjust */
	__u64 rtt_ns;  /* moving average (1/8 weight) of the SYN -> SYN-ACK time; 0 = no sample */
	__u64 down_ns; /* bpf_ktime_get_ns() when the datapath marked it down */
	__u64 pad2;
};

/* mp_events: BPF_MAP_TYPE_RINGBUF of struct mp_health_event, one per passive transition of an
 * endpoint (not one per failure): its first failure after a success, crossing `fall` (marked
 * down), a success after failures. meshd reads them into its health state machine. */
#define MP_EVENTS_BYTES (256 * 1024)
enum mp_hev_kind {
	MP_HEV_SUSPECT = 1,   /* fails went 0 -> 1 */
	MP_HEV_DOWN = 2,      /* fails reached fall: the datapath marked it down */
	MP_HEV_RECOVERED = 3, /* a success reset fails from >= 1 */
};
enum mp_passive_reason {
	MP_PASSIVE_NONE = 0,	      /* MP_HEV_RECOVERED */
	MP_PASSIVE_RST = 1,	      /* RST answering a SYN */
	MP_PASSIVE_ICMP_UNREACH = 2,  /* ICMP / ICMPv6 destination unreachable from the endpoint */
	MP_PASSIVE_SYN_RETRANS = 3,   /* the client sent its SYN again: no SYN-ACK in time */
	MP_PASSIVE_MAX,
};
struct mp_health_event {
	__u64 ns;    /* bpf_ktime_get_ns() */
	__u32 ep_id;
	__u8 kind;   /* enum mp_hev_kind */
	__u8 reason; /* enum mp_passive_reason */
	__u16 pad;
	__u32 fails; /* the consecutive count after this event */
	__u32 pad2;
};

/* SYN protection (bpf/synproxy.h). mp_syn_secret: one entry, the cookie key meshd draws at its
 * first start (pinned, so a restarted daemon's cookies stay valid; the same on every node of a
 * mesh lets a flow that ECMP moves between SYN-ACK and ACK complete). */
struct mp_syn_secret {
	__u64 k0;
	__u64 k1;
};

/* mp_syn_guard: ARRAY indexed by service id, shared by all CPUs: the auto switch of a service.
 * Counts are per one-second window (approximate: CPUs add atomically, the window's roll is
 * racy by a packet or two). A window's unanswered SYNs = syns - done; reaching the node's
 * syn_flood_threshold turns the proxy on at once; MP_SYN_CALM_WINDOWS windows in a row below
 * half of it turn it off. meshd reads it for stats and events and zeroes it with a service. */
#define MP_SYN_CALM_WINDOWS 5
#define MP_SYN_FLOOD_THRESHOLD_DEFAULT 1024
struct mp_syn_guard {
	__u64 window_ns;    /* bpf_ktime_get_ns() when the current window began */
	__u32 syns;	    /* new SYNs (answered by the endpoint or by a cookie) in the window */
	__u32 done;	    /* handshakes completed (promotions, valid cookie ACKs) in it */
	__u32 on;	    /* 1 while the proxy answers this service's SYNs (auto) */
	__u32 calm;	    /* windows in a row below half the threshold, while on */
	__u64 switched_on;  /* times auto turned the proxy on */
	__u64 switched_off; /* and off */
	__u32 last_unanswered; /* syns - done of the last full window */
	__u32 pad;
};

/* mp_syn_stats: per-CPU, indexed by service id. */
struct mp_syn_counters {
	__u64 cookies_sent;   /* SYN-ACKs with a cookie */
	__u64 acks_valid;     /* ACKs whose cookie validated: connections opened to an endpoint */
	__u64 acks_invalid;   /* stateless ACKs with a bad, old or no cookie: dropped */
	__u64 retries;	      /* endpoint SYNs refused or unanswered, tried on another endpoint */
	__u64 retries_failed; /* out of retries (or endpoints): the client got a RST */
	__u64 pad[3];
};

/* How long a proxied connection waits for its endpoint's SYN-ACK before the client's next
 * packet (its zero-window probe) sends the SYN to another endpoint: the kernel's first SYN
 * retransmission comes after as long (TCP_TIMEOUT_INIT). Shorter would retry, and count a
 * passive failure of, an endpoint that is only busy. */
#define MP_SYN_CONNECT_TIMEOUT_NS (1000ull * 1000 * 1000)

/* mp_node: one entry with the node's own settings. */
struct mp_node_cfg {
	__u8 addr4[MP_SNAT_ADDRS_MAX][16]; /* SNAT sources for IPv4 services (first 4 bytes each) */
	__u8 addr6[MP_SNAT_ADDRS_MAX][16]; /* SNAT sources for IPv6 services */
	__u16 snat_port_min;		   /* host order */
	__u16 snat_port_max;		   /* host order, inclusive */
	__u8 n_addr4;			   /* addresses in addr4 (0: no IPv4 SNAT) */
	__u8 n_addr6;
	__u16 n_dnat; /* DNAT services: while 0, no packet is looked up as a DNAT reply */
	__u32 syn_flood_threshold; /* unanswered SYNs per second that switch a service's auto SYN
				    * protection on (0: MP_SYN_FLOOD_THRESHOLD_DEFAULT) */
	__u16 syn_mss4;		   /* MSS the proxy announces to IPv4 clients (0: 1460) */
	__u16 syn_mss6;		   /* to IPv6 clients (0: 1440) */
};

/* mp_fwd_gen: one entry, the forwarding generation. Whoever changes where an existing flow's
 * packets go adds 1 after the change: meshd after writing mp_node, mp_services, mp_endpoints or a
 * ring, or deleting mp_conns entries; the program after re-picking a flow's endpoint. A flow
 * cache slot (below) serves only while the generation it was filled under is current. */
struct mp_fwd_gen {
	__u64 gen;
};

/* The flow cache: per CPU, a direct-mapped exact-match cache of established flows in front of
 * mp_services and mp_conns (mp_flow_cache, program-private and not pinned; layout in
 * bpf/flowcache.h). A TCP packet with SYN, FIN or RST never uses it, and a closing connection
 * never fills it. A slot lives at most flow_cache_ttl, so an active flow still refreshes its
 * mp_conns entry's LRU mark. When most lookups find a slot held by another live flow (more flows
 * than slots), the CPU skips the cache for a while rather than pay a miss and a fill per packet.
 * Sizes: slots per CPU, a power of two. bpf/README.md, "The flow cache". */
/* 4096 slots are 256 KiB per CPU, which stay in L2. A larger cache holds more flows but serves
 * them from L3 or memory, where a hit saves little: with 65536 slots, 100k flows ran 18% slower
 * than with no cache (bpf/README.md). */
#define MP_FLOW_CACHE_SLOTS_DEFAULT 4096
#define MP_FLOW_CACHE_SLOTS_MAX (1u << 22)
#define MP_FLOW_CACHE_TTL_NS_DEFAULT (250ull * 1000 * 1000)

/* mp_fc_stats: one per-CPU entry, the flow cache's counters (not pinned: they start over with
 * the program, like the cache). */
struct mp_flow_cache_stats {
	__u64 hits;	     /* packets forwarded from a slot */
	__u64 misses;	     /* looked up and not served (the slot is filled after) */
	__u64 conflicts;     /* of the misses: the slot held another live flow */
	__u64 bypassed;	     /* packets that skipped the cache while it was thrashing */
	__u32 window;	     /* lookups in the current sampling window */
	__u32 window_conflicts;
	__u32 bypass_left; /* packets this CPU still skips the cache for */
	__u32 pad;
};

/* mp_svc_stats / mp_ep_stats: per-CPU, indexed by service id / endpoint id. */
struct mp_counters {
	__u64 packets;
	__u64 bytes;
	__u64 new_conns;
	__u64 pad;
};

/* mp_exc: per-CPU u64 counters indexed by reason. The verdict of each reason is fixed and named
 * in its identifier (DROP or PASS); meshd prints them with mp_exc_names below. */
enum mp_exc_reason {
	MP_EXC_PASS_NON_IP = 0,	    /* ARP, LLDP, ...: not ours */
	MP_EXC_DROP_ETH_TRUNC,	    /* frame shorter than Ethernet (+VLAN) header */
	MP_EXC_DROP_IP4_TRUNC,	    /* shorter than a 20-byte IPv4 header, or than IHL says */
	MP_EXC_DROP_IP4_BAD_IHL,    /* IHL < 5 */
	MP_EXC_DROP_IP4_BAD_LEN,    /* total length < IHL*4 or beyond the frame (0 included) */
	MP_EXC_PASS_IP4_FRAG,	    /* fragments: no ports to balance on; the kernel owns them */
	MP_EXC_DROP_IP6_TRUNC,	    /* shorter than a 40-byte IPv6 header or an extension header */
	MP_EXC_DROP_IP6_BAD_LEN,    /* payload length 0 (jumbogram) or beyond the frame */
	MP_EXC_PASS_IP6_FRAG,	    /* fragment header present */
	MP_EXC_PASS_IP6_EXT_LIMIT,  /* more than MP_IPV6_EXT_MAX extension headers */
	MP_EXC_DROP_L4_TRUNC,	    /* TCP/UDP header cut short */
	MP_EXC_DROP_L4_BAD_LEN,	    /* TCP data offset < 5 or beyond the packet; UDP length wrong */
	MP_EXC_DROP_NO_ENDPOINT,    /* service has no endpoint in rotation */
	MP_EXC_DROP_SNAT_EXHAUSTED, /* MP_SNAT_PROBES ports tried, each held by an open connection */
	MP_EXC_DROP_CONN_INSERT,    /* connection table insert failed */
	MP_EXC_DROP_NO_NODE_ADDR,   /* no node address of the service's family to SNAT to */
	MP_EXC_PASS_NO_NEIGH, /* next hop unresolved: the rewritten packet goes to the kernel */
	MP_EXC_DROP_NO_ROUTE, /* bpf_fib_lookup found no route (or it is blackholed) */
	MP_EXC_DROP_REDIRECT, /* bpf_redirect failed */
	MP_EXC_DROP_CONN_TABLE_FULL, /* a flow completing its handshake (or answered, UDP) found no
				      * room in the established tables */
	MP_EXC_DROP_HALF_LOST,	     /* a half-open flow's SNAT port was taken over (it expired, or
				      * the LRU forgot it) before its handshake completed */
	MP_EXC_DROP_SYN_COOKIE,	     /* under SYN protection: an ACK with no connection whose
				      * cookie is bad, old or missing */
	MP_EXC_DROP_SYN_PENDING,     /* a SYN-proxied client's segment before its endpoint answered
				      * (the client's window is closed until then) */
	MP_EXC_DROP_SYN_MALFORMED,   /* a proxied packet whose TCP options or size cannot be
				      * rewritten */
	MP_EXC_MAX,
};

#ifndef __bpf__
static const char *const mp_exc_names[MP_EXC_MAX] = {
	"pass_non_ip",	    "drop_eth_trunc",	   "drop_ip4_trunc",   "drop_ip4_bad_ihl",
	"drop_ip4_bad_len", "pass_ip4_frag",	   "drop_ip6_trunc",   "drop_ip6_bad_len",
	"pass_ip6_frag",    "pass_ip6_ext_limit",  "drop_l4_trunc",    "drop_l4_bad_len",
	"drop_no_endpoint", "drop_snat_exhausted", "drop_conn_insert", "drop_no_node_addr",
	"pass_no_neigh",    "drop_no_route",	   "drop_redirect",    "drop_conn_table_full",
	"drop_half_lost",   "drop_syn_cookie",	   "drop_syn_pending", "drop_syn_malformed",
};
static const char *const mp_passive_reason_names[MP_PASSIVE_MAX] = {
	"none", "rst_answering_syn", "icmp_unreachable", "syn_retransmitted",
};
static const char *const mp_algorithm_names[MP_ALG_MAX] = {
	"maglev", "random", "round-robin", "least-conn", "least-latency",
};
#endif

#define MP_ASSERT_SIZE(t, n) _Static_assert(sizeof(struct t) == (n), #t " size is part of the ABI")
#ifdef __cplusplus
#undef MP_ASSERT_SIZE
#define MP_ASSERT_SIZE(t, n) static_assert(sizeof(struct t) == (n), #t " size is part of the ABI")
#endif
MP_ASSERT_SIZE(mp_svc_key, 20);
MP_ASSERT_SIZE(mp_svc, 16);
MP_ASSERT_SIZE(mp_endpoint, 24);
MP_ASSERT_SIZE(mp_flow, 40);
MP_ASSERT_SIZE(mp_conn, 32);
MP_ASSERT_SIZE(mp_svc_tmo, 48);
MP_ASSERT_SIZE(mp_ep_key, 20);
MP_ASSERT_SIZE(mp_ep_vip, 24);
MP_ASSERT_SIZE(mp_rnat, 40);
MP_ASSERT_SIZE(mp_node_cfg, 272);
MP_ASSERT_SIZE(mp_syn_secret, 16);
MP_ASSERT_SIZE(mp_syn_guard, 48);
MP_ASSERT_SIZE(mp_syn_counters, 64);
MP_ASSERT_SIZE(mp_counters, 32);
MP_ASSERT_SIZE(mp_ep_health, 64);
MP_ASSERT_SIZE(mp_health_event, 24);
MP_ASSERT_SIZE(mp_fwd_gen, 8);
MP_ASSERT_SIZE(mp_flow_cache_stats, 48);

#endif /* MESHPATH_BPF_ABI_H */
