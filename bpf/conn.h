/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* conn.h — a connection's life as the balancer sees it (mp_conn.flags and expires): its SYN
 * waiting for an answer, the handshake that promotes it from the half-open to the established
 * table, whether it is counted open, its close, the lifetime each state gives it (mp_svc_tmo,
 * in jiffies), and when a new flow may take over the SNAT port a reverse-NAT entry holds. Every
 * change of the flags is an atomic operation on the 32-bit word {snat_port, flags}, as both
 * directions run on any CPU. Only SYN, FIN and RST packets pay for the flags; every other packet
 * tests one byte, and writes `expires` at most once per MP_REFRESH_JIFFIES_MIN-ish interval
 * (mp_conn_refresh). A port is taken over only when nothing can still need it: the entry it
 * restores replies to is gone, belongs to another port or endpoint, or has expired.
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
 * which then shortens its lifetime to tcp_closed; MP_CONN_CLOSED_COUNTED in the answer when the
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
	return MP_CONN_CLOSED_NOW |
	       ((old.f.flags & MP_CONN_F_COUNTED) ? MP_CONN_CLOSED_COUNTED : 0);
}

/* The client opens its 5-tuple again (a SYN on an entry with close bits): the connection is
 * open, its endpoint and port stay, its flags become `flags` (SYN_SENT and COUNTED: a new
 * connection). The caller gives it a fresh lifetime (expires) first, so the port is never up for
 * takeover while the flags change, and stamps the SYN's time after. A compare-and-swap, so of two CPUs reopening
 * the same entry (or one reopening while the other direction's FIN lands) one wins: it gets the
 * flags it replaced (never 0: they had close bits), the other 0. */
MP_INLINE __u32 mp_conn_reopen(struct mp_conn *conn, __u16 flags)
{
	union mp_conn_port_flags seen, next;

	seen.word = *mp_conn_word(conn);
	if (!(seen.f.flags & MP_CONN_F_CLOSING))
		return 0;
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

/* syn_ns holds the low 32 bits of the SYN's send time (bpf_ktime_get_ns) while SYN_SENT is set
 * and no close bit is: the SYN -> SYN-ACK time at now, or 0 when there is no such stamp (a
 * reopen in progress) or it is 2^31 ns (2.1 s) or more: a 32-bit difference that large may
 * have wrapped. */
MP_INLINE __u64 mp_conn_syn_rtt(__u32 old_flags, __u32 syn_ns, __u64 now)
{
	__u32 rtt = (__u32)now - syn_ns;

	if (!(old_flags & MP_CONN_F_SYN_SENT) || (old_flags & MP_CONN_F_CLOSING) || !syn_ns ||
	    rtt > 0x80000000u)
		return 0;
	return rtt ? rtt : 1;
}

/* Which lifetime (enum mp_tmo) an entry with these flags lives by: established says which table
 * it is in (mp_conns, or mp_half). */
MP_INLINE __u32 mp_conn_tmo_index(__u32 flags, __u8 proto, int established)
{
	if (proto != IPPROTO_TCP)
		return established ? MP_TMO_UDP_REPLIED : MP_TMO_UDP;
	if (mp_conn_flags_closed(flags))
		return MP_TMO_TCP_CLOSED;
	if (flags & MP_CONN_F_CLOSING)
		return MP_TMO_TCP_FIN;
	if (!established || (flags & MP_CONN_F_SYN_SENT))
		return MP_TMO_TCP_SYN;
	return MP_TMO_TCP_EST;
}

/* The entry's expiry for a packet seen at now (jiffies) with lifetime tmo. A plain store, and
 * only when the expiry moves back (a shorter state: closing) or forward by at least slack
 * jiffies: an established flow's line is written about once per slack, not per packet. A
 * lifetime under twice the slack moves by half of itself: with a slack as long as the lifetime,
 * an entry under steady traffic would expire before its next write, and its port could be taken
 * while in use. Two CPUs storing at once both store about now + tmo. */
MP_INLINE void mp_conn_refresh(struct mp_conn *conn, __u64 now, __u64 tmo, __u64 slack)
{
	__u64 expires = now + tmo, old = conn->expires;

	if (slack > tmo / 2)
		slack = tmo / 2;
	if (expires < old || expires - old >= slack)
		conn->expires = expires;
}

MP_INLINE int mp_conn_expired(const struct mp_conn *conn, __u64 now)
{
	return now >= conn->expires;
}

/* May a new flow take over the SNAT port `port` of a reverse-NAT entry whose ep_id is
 * rnat_ep_id? owner is the forward entry of the client tuple the reverse entry restores, in the
 * same pair of tables (NULL: there is none). Yes when nothing forwards to the port any more: the
 * client tuple has no entry, or its entry uses another port or endpoint (this one is left over
 * from an earlier incarnation of the flow), or its lifetime ran out (jiffies now; a closed TCP
 * connection's is tcp_closed). Never while another new flow is claiming the entry
 * (MP_RNAT_CLAIMED). */
MP_INLINE int mp_snat_reusable(__u32 rnat_ep_id, const struct mp_conn *owner, __u16 port, __u64 now)
{
	if (rnat_ep_id == MP_RNAT_CLAIMED)
		return 0;
	if (!owner || owner->snat_port != port || owner->ep_id != (rnat_ep_id & MP_RNAT_EP_MASK))
		return 1;
	return mp_conn_expired(owner, now);
}

/* Does this packet of a half-open flow promote it into the established tables? TCP: the client's
 * ACK (no SYN, no RST) after the endpoint's SYN-ACK, unless the connection already closed (a RST
 * either way, or FIN both ways): a late ACK must not count a dead connection open. UDP is
 * promoted by the endpoint's answer, on the reply path. */
MP_INLINE int mp_half_promotes(__u32 flags, __u8 proto, __u8 tcp_flags)
{
	return proto == IPPROTO_TCP && (flags & MP_CONN_F_SYNACK) && !mp_conn_flags_closed(flags) &&
	       (tcp_flags & (MP_TCP_ACK | MP_TCP_SYN | MP_TCP_RST)) == MP_TCP_ACK;
}

#endif /* MESHPATH_BPF_CONN_H */
