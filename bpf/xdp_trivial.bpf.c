// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* xdp_trivial.bpf.c — the benchmarks' peer: swap the MACs and send the frame back (XDP_TX).
 * It is the floor a per-packet cost is measured against, in the same run.
 */
#include "compiler.h"

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "cursor.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int mp_xdp_trivial(struct xdp_md *ctx)
{
	struct mp_cursor c = {
		.pos = (__u8 *)(long)ctx->data,
		.end = (__u8 *)(long)ctx->data_end,
	};
	struct ethhdr *eth = (struct ethhdr *)c.pos;
	__u8 mac[ETH_ALEN];

	if (MP_CURSOR_LACKS(&c, eth, sizeof(*eth)))
		return XDP_DROP;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return XDP_TX;
}
