// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* pktgen.bpf.c — pktgen's three XDP programs.
 *   pg_gen   runs under BPF_PROG_RUN in live-frames mode: writes packet n (pg_frame.h) into the
 *            recycled frame and sends it (XDP_TX: out of the device named as ingress).
 *   pg_sink  attached to an interface: counts packets and bytes per CPU, optionally copies the
 *            first bytes of each frame to a ring buffer (capture) and histograms the one-way
 *            latency of stamped frames; then drops or passes.
 *   pg_fwd   the benchmarks' floor: set both MACs, redirect to another interface.
 * The configuration lives in .bss (written by userspace before load): pg_cfg is too large for
 * comfortable rodata and the frame writer reads it through a plain pointer.
 */
#include "compiler.h"

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "pg_frame.h"
#include "pg_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct pg_config pg_cfg;
__u64 pg_seq;

struct pg_sink_config pg_sink_cfg;
struct pg_fwd_config pg_fwd_cfg;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_counters);
} pg_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PG_LAT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} pg_lat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} pg_capture SEC(".maps");

SEC("xdp")
int pg_gen(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u64 seq = __sync_fetch_and_add(&pg_seq, 1);
	__u64 now = pg_cfg.stamp ? bpf_ktime_get_ns() : 0;

	if (pg_write_frame(data, end, &pg_cfg, seq, now))
		return XDP_ABORTED;
	return XDP_TX;
}

/* The stamp of a frame pktgen wrote, if it is one: after IPv4/IPv6 and UDP/TCP. */
static __always_inline struct pg_stamp *pg_find_stamp(__u8 *data, __u8 *end)
{
	struct ethhdr *eth = (struct ethhdr *)data;
	__u8 *l4;
	__u8 proto;
	__u32 l4_len;

	if ((__u8 *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == mp_htons(ETH_P_IP)) {
		struct iphdr *ip = (struct iphdr *)(eth + 1);

		if ((__u8 *)(ip + 1) > end)
			return 0;
		l4 = (__u8 *)ip + ip->ihl * 4;
		proto = ip->protocol;
	} else if (eth->h_proto == mp_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)(eth + 1);

		if ((__u8 *)(ip6 + 1) > end)
			return 0;
		l4 = (__u8 *)(ip6 + 1);
		proto = ip6->nexthdr;
	} else {
		return 0;
	}
	if (proto == IPPROTO_UDP) {
		l4_len = 8;
	} else if (proto == IPPROTO_TCP) {
		if (l4 + 13 > end)
			return 0;
		l4_len = (l4[12] >> 4) * 4;
	} else {
		return 0;
	}
	l4 += l4_len & 0x3c;
	if (l4 + sizeof(struct pg_stamp) > end)
		return 0;
	return (struct pg_stamp *)l4;
}

SEC("xdp")
int pg_sink(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u32 len = end - data;
	__u32 zero = 0;
	struct pg_counters *c = bpf_map_lookup_elem(&pg_counts, &zero);

	if (!c)
		return XDP_ABORTED;
	if (c->packets == 0)
		c->first_ns = bpf_ktime_get_ns();
	c->packets++;
	c->bytes += len;
	c->last_ns = bpf_ktime_get_ns();

	if (pg_sink_cfg.latency) {
		struct pg_stamp *st = pg_find_stamp(data, end);

		if (st && st->magic == mp_htonl(PG_STAMP_MAGIC)) {
			__u64 delta = c->last_ns - st->ns;
			__u32 bucket = delta >> PG_LAT_SHIFT;
			__u64 *slot;

			if (delta > (1ULL << 62) || bucket >= PG_LAT_BUCKETS)
				bucket = PG_LAT_BUCKETS - 1;
			slot = bpf_map_lookup_elem(&pg_lat, &bucket);
			if (slot)
				*slot += 1;
			c->stamped++;
		}
	}

	if (pg_sink_cfg.snap) {
		struct pg_capture_rec *rec = bpf_ringbuf_reserve(&pg_capture, sizeof(*rec), 0);
		__u32 n = len < pg_sink_cfg.snap ? len : pg_sink_cfg.snap;

		if (!rec) {
			c->capture_drops++;
		} else {
			rec->len = len;
			rec->ns = c->last_ns;
			n &= PG_SNAP_MAX * 2 - 1; /* bounds for the verifier */
			if (n > PG_SNAP_MAX)
				n = PG_SNAP_MAX;
			if (n == 0 || bpf_xdp_load_bytes(ctx, 0, rec->data, n))
				n = 0;
			rec->caplen = n;
			bpf_ringbuf_submit(rec, 0);
		}
	}
	return pg_sink_cfg.pass ? XDP_PASS : XDP_DROP;
}

SEC("xdp")
int pg_fwd(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	struct ethhdr *eth = (struct ethhdr *)data;

	if ((__u8 *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, pg_fwd_cfg.dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, pg_fwd_cfg.src_mac, ETH_ALEN);
	return bpf_redirect(pg_fwd_cfg.out_ifindex, 0);
}
