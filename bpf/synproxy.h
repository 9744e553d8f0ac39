/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* synproxy.h — the TCP side of the SYN proxy, written once for XDP, DPDK and the native tests:
 * reading a segment's options, writing the segments the proxy sends (SYN-ACK with a cookie to
 * the client, SYN to the endpoint, ACK, RST) over a packet it reshaped to their size, and the
 * translation of every later segment between the client's view (the balancer's ISN and
 * timestamps) and the endpoint's. How the handshake runs: bpf/README.md, "SYN protection".
 *
 * Segment layouts are fixed so every length is a constant the verifier can check once:
 *   SYN, SYN-ACK: 40 bytes: MSS(4) SACK-permitted(2)|NOP NOP, TS(10)|10 NOPs, NOP WS(3)|3 NOPs;
 *   ACK: 32 bytes with timestamps (NOP NOP TS), 20 without; RST: 20 bytes.
 */
#ifndef MESHPATH_BPF_SYNPROXY_H
#define MESHPATH_BPF_SYNPROXY_H

#include "compiler.h"
#include "abi.h"
#include "csum.h"
#include "parse.h"
#include "syncookie.h"

#define MP_TCPOPT_EOL 0
#define MP_TCPOPT_NOP 1
#define MP_TCPOPT_MSS 2
#define MP_TCPOPT_WS 3
#define MP_TCPOPT_SACK_PERM 4
#define MP_TCPOPT_SACK 5
#define MP_TCPOPT_TS 8
/* Options a header can hold (40 bytes): a walk of more than this many is malformed. */
#define MP_TCPOPT_WALK_MAX 12

#define MP_TCP_SYN_LEN 40
#define MP_TCP_ACK_TS_LEN 32
#define MP_TCP_BARE_LEN 20

/* The window scale the proxy announces to a client that offered scaling. Linux's own choice for
 * its default buffers (tcp_rmem 6 MiB), so with Linux endpoints windows pass unchanged. */
#define MP_SYN_WSCALE 7
#define MP_SYN_MSS4_DEFAULT 1460
#define MP_SYN_MSS6_DEFAULT 1440

struct mp_tcphdr {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u8 doff_res; /* data offset in the high nibble */
	__u8 flags;    /* MP_TCP_* */
	__u16 window;
	__u16 check;
	__u16 urg_ptr;
};

#define MP_TCP_PSH 0x08

/* What a segment's options say (host order). */
struct mp_tcp_opts {
	__u16 mss;    /* 0: no MSS option */
	__u8 wscale;  /* MP_SYNOPT_WS_NONE: no window scale option */
	__u8 sack_ok; /* SACK-permitted seen */
	__u8 has_ts;
	__u8 pad[3];
	__u32 tsval;
	__u32 tsecr;
};

/* How a proxied segment's options change on the way: tsval_sub from TSval, tsecr_add to TSecr,
 * sack_add to every SACK block edge (all 0: read only). diff accumulates the checksum change. */
struct mp_tcp_opt_edit {
	__u32 tsval_sub;
	__u32 tsecr_add;
	__u32 sack_add;
	__u32 pad;
	__u64 diff;
};

MP_INLINE __u32 mp_load_be32(const __u8 *b)
{
	return (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
}

MP_INLINE void mp_store_be32(__u8 *b, __u32 v)
{
	b[0] = (__u8)(v >> 24);
	b[1] = (__u8)(v >> 16);
	b[2] = (__u8)(v >> 8);
	b[3] = (__u8)v;
}

/* The checksum difference of a 32-bit field at offset `at` of the checksummed span changing
 * from `from` to `to` (host order): a field at an odd offset sums byte-swapped. */
MP_INLINE __u64 mp_csum_diff_be32_at(__u64 acc, __u32 from, __u32 to, __u32 at)
{
	__u64 d = mp_csum_diff32(0, mp_htonl(from), mp_htonl(to));

	if (at & 1) {
		__u16 f = mp_csum_fold(d);

		d = (__u16)((f << 8) | (f >> 8));
	}
	return acc + d;
}

/* Rewrites the 32-bit big-endian field at b (offset `at` in the TCP header) to v. */
MP_INLINE void mp_edit_be32(__u8 *b, __u32 at, __u32 v, __u64 *diff)
{
	*diff = mp_csum_diff_be32_at(*diff, mp_load_be32(b), v, at);
	mp_store_be32(b, v);
}

/* The options of a segment: len bytes (at most 40) at opt, in a buffer of at least
 * MP_TCPOPT_BUF bytes (the BPF build walks a copy; the verifier then needs no bound on an option's
 * offset but the buffer's). Fills o and applies e (NULL: read only); -1 for options that run
 * past their length or never end. */
#define MP_TCPOPT_BUF 112
MP_INLINE int mp_tcp_opts_walk(__u8 *opt, __u32 len, struct mp_tcp_opts *o,
			       struct mp_tcp_opt_edit *e)
{
	__u32 off = 0, i, l, j, at;
	__u8 *k;

	mp_memset(o, 0, sizeof(*o));
	o->wscale = MP_SYNOPT_WS_NONE;
	if (len > 40)
		return -1;
#ifdef __bpf__
#pragma clang loop unroll(disable)
#endif
	for (i = 0; i < MP_TCPOPT_WALK_MAX; i++) {
		if (off >= len)
			return 0;
		k = opt + (off & 63);
		if (k[0] == MP_TCPOPT_EOL)
			return 0;
		if (k[0] == MP_TCPOPT_NOP) {
			off++;
			continue;
		}
		if (off + 2 > len)
			return -1;
		l = k[1];
		if (l < 2 || off + l > len)
			return -1;
		at = MP_TCP_BARE_LEN + off; /* the field's parity in the checksummed header */
		if (k[0] == MP_TCPOPT_MSS && l == 4) {
			o->mss = (__u16)(k[2] << 8 | k[3]);
		} else if (k[0] == MP_TCPOPT_WS && l == 3) {
			o->wscale = k[2] > 14 ? 14 : k[2];
		} else if (k[0] == MP_TCPOPT_SACK_PERM && l == 2) {
			o->sack_ok = 1;
		} else if (k[0] == MP_TCPOPT_TS && l == 10) {
			o->has_ts = 1;
			o->tsval = mp_load_be32(k + 2);
			o->tsecr = mp_load_be32(k + 6);
			if (e && e->tsval_sub)
				mp_edit_be32(k + 2, at + 2, o->tsval - e->tsval_sub, &e->diff);
			if (e && e->tsecr_add)
				mp_edit_be32(k + 6, at + 6, o->tsecr + e->tsecr_add, &e->diff);
		} else if (k[0] == MP_TCPOPT_SACK && e && e->sack_add) {
			/* Up to 4 blocks of two edges; l says how many. */
			for (j = 0; j < 8; j++) {
				if (2 + 4 * j + 4 > l)
					break;
				mp_edit_be32(k + 2 + 4 * j, at + 2 + 4 * j,
					     mp_load_be32(k + 2 + 4 * j) + e->sack_add, &e->diff);
			}
		}
		off += l;
	}
	return off >= len ? 0 : -1;
}

/* The options of a Linux SYN (MSS, SACK-permitted, timestamps, NOP, window scale: 20 bytes at
 * opt, all inside the frame): read without the walk, which costs a copy and a loop. 1 when they
 * are laid out so, with o filled; 0 for anything else (the walk then reads them). */
MP_INLINE int mp_tcp_opts_linux_syn(const __u8 *opt, struct mp_tcp_opts *o)
{
	if (opt[0] != MP_TCPOPT_MSS || opt[1] != 4 || opt[4] != MP_TCPOPT_SACK_PERM ||
	    opt[5] != 2 || opt[6] != MP_TCPOPT_TS || opt[7] != 10 || opt[16] != MP_TCPOPT_NOP ||
	    opt[17] != MP_TCPOPT_WS || opt[18] != 3)
		return 0;
	o->mss = (__u16)(opt[2] << 8 | opt[3]);
	o->sack_ok = 1;
	o->has_ts = 1;
	o->tsval = mp_load_be32(opt + 8);
	o->tsecr = mp_load_be32(opt + 12);
	o->wscale = opt[19] > 14 ? 14 : opt[19];
	return 1;
}

/* The segment the proxy writes. Addresses are 16-byte fields (IPv4 in the first 4 bytes),
 * ports in network order, the rest host order. */
struct mp_tcp_out {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 seq;
	__u32 ack;
	__u16 window;
	__u8 flags;
	__u8 wscale; /* MP_SYNOPT_WS_NONE: no option */
	__u16 mss;   /* 0: no option */
	__u8 sack_ok;
	__u8 has_ts;
	__u32 tsval;
	__u32 tsecr;
};

/* The one's complement sum of n 16-bit words at b (n a constant at every call). */
MP_INLINE __u64 mp_csum_words(const __u8 *b, __u32 n)
{
	const mp_u16_any *w = (const mp_u16_any *)b;
	__u64 sum = 0;
	__u32 i;

#ifdef __bpf__
#pragma unroll
#endif
	for (i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

/* Writes an IP header and the TCP segment o of tcp_len bytes (a constant: 20, 32 or 40) at l3,
 * whose room the caller checked (l3 + IP header + tcp_len <= the frame's end). */
MP_INLINE void mp_tcp_write(__u8 *l3, __u8 family, const struct mp_tcp_out *o, __u32 tcp_len)
{
	struct mp_tcphdr *th;
	__u8 *opt;
	__u64 sum;
	__u32 iphl = family == MP_AF_INET ? 20 : 40;

	if (family == MP_AF_INET) {
		struct iphdr *ip = (struct iphdr *)l3;

		l3[0] = 0x45;
		ip->tos = 0;
		ip->tot_len = mp_htons((__u16)(iphl + tcp_len));
		ip->id = 0;
		ip->frag_off = mp_htons(0x4000); /* DF */
		ip->ttl = 64;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		ip->saddr = *(const mp_u32_any *)o->src;
		ip->daddr = *(const mp_u32_any *)o->dst;
		ip->check = (__u16)~mp_csum_fold(mp_csum_words(l3, 10));
		sum = (__u64)ip->saddr + ip->daddr;
	} else {
		struct ipv6hdr *ip6 = (struct ipv6hdr *)l3;

		*(mp_u32_any *)l3 = mp_htonl(0x60000000);
		ip6->payload_len = mp_htons((__u16)tcp_len);
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = 64;
		mp_copy_addr16(&ip6->saddr, o->src);
		mp_copy_addr16(&ip6->daddr, o->dst);
		sum = mp_csum_words(o->src, 8) + mp_csum_words(o->dst, 8);
	}
	sum += mp_htons(IPPROTO_TCP) + mp_htons((__u16)tcp_len);

	th = (struct mp_tcphdr *)(l3 + iphl);
	th->source = o->sport;
	th->dest = o->dport;
	th->seq = mp_htonl(o->seq);
	th->ack_seq = mp_htonl(o->ack);
	th->doff_res = (__u8)((tcp_len / 4) << 4);
	th->flags = o->flags;
	th->window = mp_htons(o->window);
	th->check = 0;
	th->urg_ptr = 0;
	opt = (__u8 *)th + MP_TCP_BARE_LEN;
	if (tcp_len == MP_TCP_SYN_LEN) {
		opt[0] = MP_TCPOPT_MSS;
		opt[1] = 4;
		opt[2] = (__u8)(o->mss >> 8);
		opt[3] = (__u8)o->mss;
		opt[4] = o->sack_ok ? MP_TCPOPT_SACK_PERM : MP_TCPOPT_NOP;
		opt[5] = o->sack_ok ? 2 : MP_TCPOPT_NOP;
		if (o->has_ts) {
			opt[6] = MP_TCPOPT_TS;
			opt[7] = 10;
			mp_store_be32(opt + 8, o->tsval);
			mp_store_be32(opt + 12, o->tsecr);
		} else {
			mp_memset(opt + 6, MP_TCPOPT_NOP, 10);
		}
		opt[16] = MP_TCPOPT_NOP;
		if (o->wscale != MP_SYNOPT_WS_NONE) {
			opt[17] = MP_TCPOPT_WS;
			opt[18] = 3;
			opt[19] = o->wscale;
		} else {
			opt[17] = MP_TCPOPT_NOP;
			opt[18] = MP_TCPOPT_NOP;
			opt[19] = MP_TCPOPT_NOP;
		}
	} else if (tcp_len == MP_TCP_ACK_TS_LEN) {
		opt[0] = MP_TCPOPT_NOP;
		opt[1] = MP_TCPOPT_NOP;
		opt[2] = MP_TCPOPT_TS;
		opt[3] = 10;
		mp_store_be32(opt + 4, o->tsval);
		mp_store_be32(opt + 8, o->tsecr);
	}
	sum += mp_csum_words((const __u8 *)th, tcp_len / 2);
	th->check = (__u16)~mp_csum_fold(sum);
}

/* The window a proxied segment carries to the other side: value w from a side that scales by
 * from_shift, read by one that scales by to_shift. */
MP_INLINE __u16 mp_window_rescale(__u16 w, __u32 from_shift, __u32 to_shift)
{
	__u32 v = ((__u32)w << (from_shift & 15)) >> (to_shift & 15);

	return v > 0xffff ? 0xffff : (__u16)v;
}

/* The shifts a proxied connection's two sides scale their windows by, from its options. */
struct mp_proxy_shifts {
	__u32 client;	       /* the client scales its own windows by */
	__u32 client_told;     /* the client reads the balancer's windows by (MP_SYN_WSCALE) */
	__u32 ep;	       /* the endpoint scales its own windows by */
	__u32 ep_reads_client; /* the endpoint reads the client's windows by */
};

MP_INLINE void mp_proxy_shifts_of(const struct mp_conn *c, struct mp_proxy_shifts *s)
{
	__u32 cws = c->proxy_opts & MP_SYNOPT_WS_MASK;
	int scaling = cws != MP_SYNOPT_WS_NONE;
	int ep_scaling = scaling && c->ep_wscale != MP_SYNOPT_WS_NONE;

	s->client = scaling ? cws : 0;
	s->client_told = scaling ? MP_SYN_WSCALE : 0;
	s->ep = ep_scaling ? c->ep_wscale : 0;
	s->ep_reads_client = ep_scaling ? cws : 0;
}

/* A proxied connection's segment on its way: from the client (to_ep: its ACK and SACK edges
 * into the endpoint's sequence space, its TSecr into the endpoint's clock) or from the endpoint
 * (its sequence number and TSval into the client's view), the window rescaled when the two
 * sides scale differently. This part edits the fixed header and fills e for the options (the
 * caller walks them with e, then applies e->diff with mp_proxy_translate_done); 1 when the
 * options need the walk. */
MP_INLINE int mp_proxy_translate_hdr(struct mp_tcphdr *th, const struct mp_conn *c, int to_ep,
				     struct mp_tcp_opt_edit *e)
{
	struct mp_proxy_shifts s;
	__u16 win;

	mp_memset(e, 0, sizeof(*e));
	mp_proxy_shifts_of(c, &s);
	if (to_ep) {
		if (th->flags & MP_TCP_ACK)
			mp_edit_be32((__u8 *)&th->ack_seq, 8, mp_ntohl(th->ack_seq) + c->seq_off,
				     &e->diff);
		win = mp_window_rescale(mp_ntohs(th->window), s.client, s.ep_reads_client);
		e->tsecr_add = c->ts_off;
		e->sack_add = c->seq_off;
	} else {
		mp_edit_be32((__u8 *)&th->seq, 4, mp_ntohl(th->seq) - c->seq_off, &e->diff);
		win = mp_window_rescale(mp_ntohs(th->window), s.ep, s.client_told);
		e->tsval_sub = c->ts_off;
	}
	if (win != mp_ntohs(th->window)) {
		e->diff = mp_csum_diff16(e->diff, th->window, mp_htons(win));
		th->window = mp_htons(win);
	}
	return (th->doff_res >> 4) * 4 > MP_TCP_BARE_LEN &&
	       (e->tsval_sub || e->tsecr_add || e->sack_add);
}

MP_INLINE void mp_proxy_translate_done(struct mp_tcphdr *th, const struct mp_tcp_opt_edit *e)
{
	th->check = mp_csum_apply(th->check, e->diff);
}

/* The whole translation where the options can be walked in place (native, DPDK): -1 for
 * options that cannot be walked (the segment is dropped). */
MP_INLINE int mp_proxy_translate(struct mp_pkt *p, const struct mp_conn *c, int to_ep)
{
	struct mp_tcphdr *th = (struct mp_tcphdr *)p->l4;
	struct mp_tcp_opt_edit e;
	struct mp_tcp_opts o;

	if (mp_proxy_translate_hdr(th, c, to_ep, &e) &&
	    mp_tcp_opts_walk((__u8 *)th + MP_TCP_BARE_LEN,
			     (th->doff_res >> 4) * 4 - MP_TCP_BARE_LEN, &o, &e))
		return -1;
	mp_proxy_translate_done(th, &e);
	return 0;
}

/* proxy_opts of a connection: the client's options the cookie and its echoed TSval carried. */
MP_INLINE __u8 mp_proxy_opts(__u32 tsval_opts, int has_ts, __u32 mss_idx)
{
	__u32 o = has_ts ? (tsval_opts & MP_SYNOPT_TSVAL_MASK) | MP_SYNOPT_TS : MP_SYNOPT_WS_NONE;

	return (__u8)(o | (mss_idx & 3) << MP_SYNOPT_MSS_SHIFT);
}

/* The options of a SYN-ACK the client's SYN (its options o) gets: the cookie's TSval carries its
 * window scale and SACK-permitted; without timestamps neither is offered. */
MP_INLINE __u32 mp_syn_tsval_opts(const struct mp_tcp_opts *o)
{
	if (!o->has_ts)
		return MP_SYNOPT_WS_NONE;
	return (o->wscale & MP_SYNOPT_WS_MASK) | (o->sack_ok ? MP_SYNOPT_SACK : 0);
}

#endif /* MESHPATH_BPF_SYNPROXY_H */
