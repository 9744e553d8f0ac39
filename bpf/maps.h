/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* maps.h — the maps of the XDP balancer (BPF build only), laid out as abi.h describes.
 * No pinning attribute: meshd sets each map's pin path before load (bpf_map__set_pin_path), so
 * a restarted daemon adopts the pinned maps and tests run with private ones.
 */
#ifndef MESHPATH_BPF_MAPS_H
#define MESHPATH_BPF_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "flowcache.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, struct mp_svc_key);
	__type(value, struct mp_svc);
} mp_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct mp_endpoint);
} mp_endpoints SEC(".maps");

/* Template only: BPF_F_INNER_MAP lets each service's ring have its own 2 * M entries. */
struct mp_ring_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MP_RING_SIZE_DEFAULT);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct mp_ring_inner);
} mp_rings SEC(".maps");

/* The established tables: plain (preallocated) hashes, so nothing is ever evicted to make room;
 * an insert into a full table fails and the new connection is dropped and counted. Sized by
 * MP_CONN_TABLE_DEFAULT; the loader sets the node's conn_table_size. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MP_CONN_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_conn);
} mp_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MP_CONN_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_rnat);
} mp_rnat SEC(".maps");

/* The half-open tables: LRUs, so a flood of new flows (spoofed SYNs) evicts only its own kind.
 * Sized by MP_HALF_TABLE_DEFAULT; the loader sets the node's half_table_size. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MP_HALF_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_conn);
} mp_half SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MP_HALF_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_rnat);
} mp_hrnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mp_svc_tmo);
} mp_svc_tmo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__type(key, struct mp_ep_key);
	__type(value, struct mp_ep_vip);
} mp_ep_vip SEC(".maps");

/* Not ABI: per CPU and endpoint, the bpf_jiffies64() until which new flows toward the endpoint
 * are dropped without probing for a SNAT port (the last one found every candidate held). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u64);
} mp_snat_full SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_node_cfg);
} mp_node SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mp_counters);
} mp_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct mp_counters);
} mp_ep_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct mp_ep_health);
} mp_ep_health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MP_EVENTS_BYTES);
} mp_events SEC(".maps");

/* Round-robin position of each service, per CPU (MP_ALG_ROUND_ROBIN). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} mp_rr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_EXC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mp_exc SEC(".maps");

/* Not ABI: the program's own cache of bpf_fib_lookup answers toward each endpoint, per CPU (no
 * sharing, no locks). A fib lookup costs as much as the rest of an established packet's path, and
 * an endpoint's next hop changes rarely: an entry serves for MP_NH_CACHE_TTL_NS, and only while
 * the endpoint's address and the ingress device are the ones it was looked up for (counted in
 * jiffies: bpf_jiffies64() is inlined by the verifier, a clock read is not). */
#define MP_NH_CACHE_TTL_NS (50ull * 1000 * 1000)

struct mp_nexthop {
	__u8 addr[16]; /* endpoint address the answer is for */
	__u64 expires; /* bpf_jiffies64() after which it is looked up again */
	__u32 ingress; /* ingress ifindex it was looked up from */
	__u32 ifindex; /* egress */
	__u8 smac[6];
	__u8 dmac[6];
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct mp_nexthop);
} mp_nh_cache SEC(".maps");

/* Not ABI: the same answers toward clients, for replies, per CPU and direct-mapped by the
 * client's address (mp_addr_slot_index): clients are too many to index, and a reply without it
 * pays a full bpf_fib_lookup. An entry holds its address, so two clients sharing a slot only
 * cost each other a lookup. */
#define MP_NH_CLIENT_BITS 12
#define MP_NH_CLIENT_SLOTS (1u << MP_NH_CLIENT_BITS)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_NH_CLIENT_SLOTS);
	__type(key, __u32);
	__type(value, struct mp_nexthop);
} mp_nh_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE); /* meshd adds to it atomically, as the program does */
	__type(key, __u32);
	__type(value, struct mp_fwd_gen);
} mp_fwd_gen SEC(".maps");

/* Not ABI: the flow cache (flowcache.h), per CPU. The loader sets max_entries to the node's
 * flow_cache_slots (1 when the cache is off). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_FLOW_CACHE_SLOTS_DEFAULT);
	__type(key, __u32);
	__type(value, struct mp_flow_slot);
} mp_flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_flow_cache_stats);
} mp_fc_stats SEC(".maps");

/* SYN protection (abi.h, bpf/synproxy.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mp_syn_secret);
} mp_syn_secret SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MP_MAX_SERVICES);
	__uint(map_flags, BPF_F_MMAPABLE); /* meshd ticks it (synguard.h) with atomics */
	__type(key, __u32);
	__type(value, struct mp_syn_guard);
} mp_syn_guard SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mp_syn_counters);
} mp_syn_stats SEC(".maps");

#endif /* MESHPATH_BPF_MAPS_H */
