/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* compiler.h — the few names that differ between the three builds of the core headers (BPF,
 * native C/C++ for tests and fuzzers, DPDK): inlining, branch hints, byte order, memset/memcpy.
 * Everything else under bpf/ is written once against these names.
 * Headers are read in place through their uapi structs, at whatever alignment the frame gives
 * them (IP sits 2 bytes off a word after Ethernet), as in the kernel: native builds need a CPU
 * that allows it (x86, arm64), and UBSan runs with -fno-sanitize=alignment.
 */
#ifndef MESHPATH_BPF_COMPILER_H
#define MESHPATH_BPF_COMPILER_H

#ifndef __bpf__
/* glibc's netinet/in.h must come before the uapi in6 header the parsers pull in, or the two
 * define struct in6_addr twice; linux/libc-compat.h only handles this order. */
#include <netinet/in.h>
#endif

#include <linux/types.h>

#define MP_INLINE static inline __attribute__((always_inline))
#define mp_likely(x) __builtin_expect(!!(x), 1)
#define mp_unlikely(x) __builtin_expect(!!(x), 0)

/* Byte order without a libc or BPF helper header, so constants fold in every build. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define mp_htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define mp_htonl(x) ((__u32)__builtin_bswap32((__u32)(x)))
#else
#define mp_htons(x) ((__u16)(x))
#define mp_htonl(x) ((__u32)(x))
#endif
#define mp_ntohs(x) mp_htons(x)
#define mp_ntohl(x) mp_htonl(x)

/* The BPF backend has no libc: these lower to inline stores/loads for constant sizes. */
#define mp_memset __builtin_memset
#define mp_memcpy __builtin_memcpy

#endif /* MESHPATH_BPF_COMPILER_H */
