/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* conn.h — a TCP connection's life as the balancer sees it (mp_conn.flags and closed_ns): its SYN
 * waiting for an answer, whether it is counted open, its close; and when a new flow may take
 * over the SNAT port an mp_rnat entry holds. Every change of the flags is an atomic operation on
 * the 32-bit word {snat_port, flags}, as both directions run on any CPU.
 * Only SYN, FIN and RST packets pay for this; every other packet tests one byte. A port is
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

/* mp_conn_mark's answer: the close completed with this caller's bits, and the connection was
 * counted open (MP_CONN_F_COUNTED), so the caller counts it closed. */
#define MP_CONN_CLOSED_NOW 1
#define MP_CONN_CLOSED_COUNTED 2

/* The connection's {snat_port, flags} word. */
MP_INLINE __u32 *mp_conn_word(struct mp_conn *conn)
{
	return &((union mp_conn_port_flags *)&conn->snat_port)->word;
}

/* Records close bits on a connection both directions may update at once, from different CPUs.
 * Nonzero for exactly one caller: the one whose bits completed the close (the atomic or tells),
 * which then stamps closed_ns (mp_conn_closed_at); MP_CONN_CLOSED_COUNTED in the answer when the
 * word it replaced still had MP_CONN_F_COUNTED (mp_conn_retire may race it: one of the two
 * counts). A retransmitted FIN finds its bit set and writes nothing. */
MP_INLINE int mp_conn_mark(struct mp_conn *conn, __u32 bits)
{
	union mp_conn_port_flags mask = {.f = {.snat_port = 0, .flags = (__u16)bits}}, old;

	if ((conn->flags & bits) == bits)
		return 0;
	old.word = __sync_fetch_and_or(mp_conn_word(conn), mask.word);
	if (mp_conn_flags_closed(old.f.flags) || !mp_conn_flags_closed(old.f.flags | bits))
		return 0;
	return MP_CONN_CLOSED_NOW | ((old.f.flags & MP_CONN_F_COUNTED) ? MP_CONN_CLOSED_COUNTED : 0);
}

/* The time the connection became closed, written by the caller mp_conn_mark answered 1. */
MP_INLINE void mp_conn_closed_at(struct mp_conn *conn, __u64 now)
{
	conn->closed_ns = now;
}

/* The client opens its 5-tuple again (a SYN on an entry with close bits): the connection is
 * open, its endpoint and port stay, its flags become `flags` (SYN_SENT and COUNTED: a new
 * connection). closed_ns goes to 0 first, so the port is never up for takeover while the flags
 * change; the caller stamps the SYN's time after. A compare-and-swap, so of two CPUs reopening
 * the same entry (or one reopening while the other direction's FIN lands) one wins: it gets the
 * flags it replaced (never 0: they had close bits), the other 0. */
MP_INLINE __u32 mp_conn_reopen(struct mp_conn *conn, __u16 flags)
{
	union mp_conn_port_flags seen, next;

	seen.word = *mp_conn_word(conn);
	if (!(seen.f.flags & MP_CONN_F_CLOSING))
		return 0;
	conn->closed_ns = 0;
	next.word = seen.word;
	next.f.flags = flags;
	if (__sync_val_compare_and_swap(mp_conn_word(conn), seen.word, next.word) != seen.word)
		return 0;
	return seen.f.flags;
}

/* Did the incarnation a reopen replaced (its old flags) still count as open? Half-closed ones
 * did: the reopen counts their close. */
MP_INLINE int mp_conn_reopen_closes_counted(__u32 old_flags)
{
	return (old_flags & MP_CONN_F_COUNTED) && !mp_conn_flags_closed(old_flags);
}

/* The entry is about to be replaced (its flow is re-picked onto another endpoint): clears
 * MP_CONN_F_COUNTED. 1 for the caller that must count the connection closed (it was counted
 * open and had not closed), racing mp_conn_mark on the same word: exactly one of them counts. */
MP_INLINE int mp_conn_retire(struct mp_conn *conn)
{
	union mp_conn_port_flags mask = {.f = {.snat_port = 0xffff,
					       .flags = (__u16)~MP_CONN_F_COUNTED}},
				 old;

	if (!(conn->flags & MP_CONN_F_COUNTED))
		return 0;
	old.word = __sync_fetch_and_and(mp_conn_word(conn), mask.word);
	return mp_conn_reopen_closes_counted(old.f.flags);
}

/* The endpoint's SYN-ACK: clears MP_CONN_F_SYN_SENT. Returns the flags it replaced for the one
 * caller that cleared it (a retransmitted SYN-ACK on another CPU gets 0), so the connection's
 * SYN -> SYN-ACK time is sampled once. */
MP_INLINE __u32 mp_conn_answered(struct mp_conn *conn)
{
	union mp_conn_port_flags mask = {.f = {.snat_port = 0xffff,
					       .flags = (__u16)~MP_CONN_F_SYN_SENT}},
				 old;

	if (!(conn->flags & MP_CONN_F_SYN_SENT))
		return 0;
	old.word = __sync_fetch_and_and(mp_conn_word(conn), mask.word);
	return (old.f.flags & MP_CONN_F_SYN_SENT) ? old.f.flags : 0;
}

/* closed_ns holds the SYN's send time (bpf_ktime_get_ns) while SYN_SENT is set and no close bit
 * is: the SYN -> SYN-ACK time at now, or 0 when there is no such stamp (reopen in progress). */
MP_INLINE __u64 mp_conn_syn_rtt(__u32 old_flags, __u64 syn_ns, __u64 now)
{
	if (!(old_flags & MP_CONN_F_SYN_SENT) || (old_flags & MP_CONN_F_CLOSING) || !syn_ns ||
	    now < syn_ns)
		return 0;
	return now - syn_ns;
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
