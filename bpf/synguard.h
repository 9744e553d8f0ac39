/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* synguard.h — when `syn_protection: auto` turns a service's SYN proxy on and off
 * (struct mp_syn_guard, one per service shared by every CPU). A flood shows as SYNs that no
 * handshake follows: each one-second window counts new SYNs and completed handshakes, and
 * their difference reaching the node's threshold turns the proxy on at once (mid-window, so a
 * flood is met within its first threshold packets); MP_SYN_CALM_WINDOWS windows in a row below
 * half the threshold turn it off (a window with nothing in it is calm too). Under the proxy the
 * same counts are cookies sent and valid ACKs, so a flood that goes on keeps it on. Counters are
 * added atomically; the window's roll is a compare-and-swap on its start, so one CPU (or meshd,
 * which maps the array and ticks it) judges each window.
 */
#ifndef MESHPATH_BPF_SYNGUARD_H
#define MESHPATH_BPF_SYNGUARD_H

#include "compiler.h"
#include "abi.h"

#define MP_SYN_WINDOW_NS (1000ull * 1000 * 1000)

/* Judges the window that just ended (unanswered: its syns - done) and the idle ones after it
 * (windows in which nothing came at all: calm), for a guard that is on or off; the caller has
 * won the roll. */
MP_INLINE void mp_syn_guard_judge(struct mp_syn_guard *g, __u32 unanswered, __u64 idle,
				  __u32 threshold)
{
	g->last_unanswered = idle ? 0 : unanswered;
	if (!g->on)
		return;
	if (unanswered * 2 < threshold)
		g->calm += 1;
	else
		g->calm = 0;
	g->calm += idle < MP_SYN_CALM_WINDOWS ? (__u32)idle : MP_SYN_CALM_WINDOWS;
	if (g->calm >= MP_SYN_CALM_WINDOWS) {
		g->on = 0;
		g->calm = 0;
		__sync_fetch_and_add(&g->switched_off, 1);
	}
}

/* Rolls the guard's window if it ended by now_ns (one caller wins the roll). Run by every count
 * and by meshd about once a second, so a flood that stopped dead, with nothing after it, still
 * lets the guard switch off. */
MP_INLINE void mp_syn_guard_tick(struct mp_syn_guard *g, __u64 now_ns, __u32 threshold)
{
	__u64 start = g->window_ns, elapsed = now_ns - start;
	__u32 syns, done;

	if (!threshold)
		threshold = MP_SYN_FLOOD_THRESHOLD_DEFAULT;
	if (now_ns < start || elapsed < MP_SYN_WINDOW_NS ||
	    __sync_val_compare_and_swap(&g->window_ns, start, now_ns) != start)
		return;
	syns = __sync_lock_test_and_set(&g->syns, 0);
	done = __sync_lock_test_and_set(&g->done, 0);
	mp_syn_guard_judge(g, syns > done ? syns - done : 0, elapsed / MP_SYN_WINDOW_NS - 1,
			   threshold);
}

/* One new SYN (syn = 1) or completed handshake (syn = 0) of the service at now_ns; answers
 * whether the proxy is on for the next SYN. */
MP_INLINE int mp_syn_guard_count(struct mp_syn_guard *g, int syn, __u64 now_ns, __u32 threshold)
{
	__u32 syns, done;

	if (!threshold)
		threshold = MP_SYN_FLOOD_THRESHOLD_DEFAULT;
	mp_syn_guard_tick(g, now_ns, threshold);
	if (!syn) {
		__sync_fetch_and_add(&g->done, 1);
		return g->on;
	}
	syns = __sync_fetch_and_add(&g->syns, 1) + 1;
	done = g->done;
	if (!g->on && syns > done && syns - done >= threshold &&
	    __sync_val_compare_and_swap(&g->on, 0, 1) == 0) {
		g->calm = 0;
		__sync_fetch_and_add(&g->switched_on, 1);
	}
	return g->on;
}

#endif /* MESHPATH_BPF_SYNGUARD_H */
