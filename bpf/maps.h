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

/* Sized by MP_CONN_TABLE_DEFAULT; the loader may change it with bpf_map__set_max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MP_CONN_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_conn);
} mp_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MP_CONN_TABLE_DEFAULT);
	__type(key, struct mp_flow);
	__type(value, struct mp_rnat);
} mp_rnat SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MP_EXC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mp_exc SEC(".maps");

#endif /* MESHPATH_BPF_MAPS_H */
