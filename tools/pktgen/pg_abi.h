/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* pg_abi.h — what pktgen's BPF programs and its userspace share: configurations of the sink and
 * the forwarder, the per-CPU counters, the capture record and the latency histogram's layout.
 */
#ifndef MESHPATH_PG_ABI_H
#define MESHPATH_PG_ABI_H

#include <linux/types.h>

#define PG_SNAP_MAX 256
#define PG_LAT_SHIFT 5	     /* histogram buckets of 32 ns */
#define PG_LAT_BUCKETS 32768 /* up to ~1 ms; the last bucket holds everything slower */

struct pg_sink_config {
	__u32 pass;    /* 1: XDP_PASS, 0: XDP_DROP */
	__u32 snap;    /* bytes captured per frame (<= PG_SNAP_MAX); 0: no capture */
	__u32 latency; /* 1: histogram of stamped frames */
	__u32 pad;
};

struct pg_fwd_config {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 out_ifindex;
};

struct pg_counters {
	__u64 packets;
	__u64 bytes;
	__u64 first_ns;
	__u64 last_ns;
	__u64 stamped;
	__u64 capture_drops;
};

struct pg_capture_rec {
	__u32 len;
	__u32 caplen;
	__u64 ns;
	__u8 data[PG_SNAP_MAX];
};

#endif /* MESHPATH_PG_ABI_H */
