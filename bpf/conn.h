/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* conn.h — a TCP connection's close as the balancer sees it (mp_conn.flags and closed_ns), and
 * when a new flow may take over the SNAT port an mp_rnat entry holds.
 * Only FIN and RST packets pay for close tracking; every other packet tests one byte. A port is
 * taken over only when nothing can still need it: its connection closed snat_reuse_ns ago (TCP),
 * or the client tuple it restores replies to has no mp_conns entry for it any more (TCP, UDP).
 */
#ifndef MESHPATH_BPF_CONN_H
#define MESHPATH_BPF_CONN_H

#include "compiler.h"
#include "abi.h"
#include "parse.h"

#define MP_CONN_F_CLOSING (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP | MP_CONN_F_RST)

/* A pure SYN: the client opens a connection (or, on an entry that exists, reopens it). */
MP_INLINE int mp_tcp_opens(__u8 tcp_flags)
{
	return (tcp_flags & (MP_TCP_SYN | MP_TCP_ACK | MP_TCP_RST | MP_TCP_FIN)) == MP_TCP_SYN;
}

/* The MP_CONN_F_* bits a packet with these TCP flags sets, coming from the client or from the
 * endpoint; 0 for a packet that neither finishes nor resets (and for UDP, whose flags read 0). */
MP_INLINE __u32 mp_tcp_close_bits(__u8 tcp_flags, int from_client)
{
	__u32 bits = 0;

	if (tcp_flags & MP_TCP_RST)
		bits |= MP_CONN_F_RST;
	if (tcp_flags & MP_TCP_FIN)
		bits |= from_client ? MP_CONN_F_FIN_CLIENT : MP_CONN_F_FIN_EP;
	return bits;
}

/* Closed: reset, or finished both ways. */
MP_INLINE int mp_conn_flags_closed(__u32 flags)
{
	return (flags & MP_CONN_F_RST) || (flags & (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP)) ==
						  (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
}

/* mp_conn's {snat_port, flags} as one 32-bit word: the smallest an atomic or can work on. */
union __attribute__((may_alias)) mp_conn_port_flags {
	struct {
		__u16 snat_port;
		__u16 flags;
	} f;
	__u32 word;
};

/* Records close bits on a connection both directions may update at once, from different CPUs.
 * Returns 1 for exactly one caller: the one whose bits completed the close (the atomic or tells),
 * which then stamps closed_ns (mp_conn_closed_at). A retransmitted FIN finds its bit set and
 * writes nothing. */
MP_INLINE int mp_conn_mark(struct mp_conn *conn, __u32 bits)
{
	union mp_conn_port_flags mask = {.f = {.snat_port = 0, .flags = (__u16)bits}}, old;

	if ((conn->flags & bits) == bits)
		return 0;
	old.word = __sync_fetch_and_or(&((union mp_conn_port_flags *)&conn->snat_port)->word,
				       mask.word);
	return !mp_conn_flags_closed(old.f.flags) && mp_conn_flags_closed(old.f.flags | bits);
}

/* The time the connection became closed, written by the caller mp_conn_mark answered 1. */
MP_INLINE void mp_conn_closed_at(struct mp_conn *conn, __u64 now)
{
	conn->closed_ns = now;
}

/* The client opens its 5-tuple again (a SYN on an entry with close bits): the connection is
 * open, its endpoint and port stay. closed_ns goes first, so the port is never up for takeover
 * while the flags are being cleared. */
MP_INLINE void mp_conn_reopen(struct mp_conn *conn)
{
	conn->closed_ns = 0;
	conn->flags = 0;
}

/* May a new flow take over the SNAT port `port` of an mp_rnat entry whose ep_id is rnat_ep_id?
 * owner is the mp_conns entry of the client tuple the entry restores (NULL: there is none).
 * Yes when nothing forwards to the port any more: the client tuple has no entry, or its entry
 * uses another port or endpoint (this one is left over from an earlier incarnation of the
 * flow); or, TCP only, when its connection has been closed for at least linger_ns. Never while
 * another new flow is claiming the entry (MP_RNAT_CLAIMED). */
MP_INLINE int mp_snat_reusable(__u32 rnat_ep_id, const struct mp_conn *owner, __u16 port,
			       __u8 proto, __u64 now, __u64 linger_ns)
{
	if (rnat_ep_id == MP_RNAT_CLAIMED)
		return 0;
	if (!owner || owner->snat_port != port || owner->ep_id != rnat_ep_id)
		return 1;
	/* The flags too, not closed_ns alone: an entry a previous version wrote has its created_ns
	 * in that slot (mp_conn kept its size, so a restarted meshd adopts the pinned table). */
	if (proto != IPPROTO_TCP || !mp_conn_flags_closed(owner->flags) || !owner->closed_ns ||
	    now < owner->closed_ns)
		return 0;
	return now - owner->closed_ns >= linger_ns;
}

#endif /* MESHPATH_BPF_CONN_H */
