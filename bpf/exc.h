/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* exc.h — the fixed verdict of each exception reason (enum mp_exc_reason in abi.h), and the two
 * non-exception results the core returns: MP_OK (go on) and MP_NOT_OURS (pass, not counted).
 */
#ifndef MESHPATH_BPF_EXC_H
#define MESHPATH_BPF_EXC_H

#include "compiler.h"
#include "abi.h"

#define MP_OK (-1)	 /* parsed / done: continue on the packet's path */
#define MP_NOT_OURS (-2) /* well-formed IP but not TCP/UDP: the kernel's, uncounted */

#define MP_EXC_PASS_MASK                                                                           \
	((1u << MP_EXC_PASS_NON_IP) | (1u << MP_EXC_PASS_IP4_FRAG) |                               \
	 (1u << MP_EXC_PASS_IP6_FRAG) | (1u << MP_EXC_PASS_IP6_EXT_LIMIT) |                        \
	 (1u << MP_EXC_PASS_NO_NEIGH))

/* Nonzero when the reason's verdict is pass (XDP_PASS / to the kernel), zero for drop. */
MP_INLINE int mp_exc_passes(__u32 reason)
{
	return reason < MP_EXC_MAX && ((MP_EXC_PASS_MASK >> reason) & 1u);
}

#endif /* MESHPATH_BPF_EXC_H */
