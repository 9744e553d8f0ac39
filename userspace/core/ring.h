// ring.h — the one place that builds a service's ring for its algorithm. Every algorithm reads
// the same kind of table (bpf/abi.h, enum mp_algorithm): M slots of endpoint ids in proportion to
// the weights. Maglev, random, least-conn and least-latency use the weighted Maglev ring
// (maglev.h; the last three sample it at random slots, so only the proportions matter to them).
// Round-robin walks the ring slot after slot with a per-CPU counter, so its ring must interleave
// the endpoints: it holds a smooth weighted round-robin sequence instead (Nginx's algorithm,
// ngx_http_upstream_get_peer in ngx_http_upstream_round_robin.c):
//
//   every step, each endpoint's `current` grows by its weight; the one with the largest current
//   (the first in key order on a tie) takes the slot and its current drops by the total weight.
//
// Run with the endpoints' exact quotas of M (floor of M * w / W, the leftover slots to the largest
// remainders, ties in key order — the same quotas as the Maglev builder) as the weights, one
// period of the sequence is exactly M steps, so every endpoint ends with exactly its quota and no
// endpoint ever waits more than ceil(M / quota) slots for its next turn: weights 5:1:1 give
// a a b a c a a, not a a a a a b c. The cost is O(n x M) additions (n endpoints with weight > 0);
// 655 endpoints (the most a 65537-slot ring takes) build in about 30 ms (measured, -O2).
#pragma once

#include <cstdint>
#include <vector>

#include "abi.h"
#include "maglev.h"
#include "model.h"

namespace meshpath {

// Ring sizes (Maglev M). Shares of the ring stay within 1% of the weights when M >= 100 x the
// endpoints, so that is the floor for a fixed node.ring_size, and what `auto` (the default, 0 in
// NodeSpec) gives each service:
//
//   M = the smallest prime >= 100 x (the service's endpoint count rounded up to a power of two,
//       at least 4), at most MP_RING_SIZE_MAX
//
// i.e. 401 slots for up to 4 endpoints, 1601 for 16, 102407 for 1024. The count is every endpoint
// the service lists (drained, ejected and weight 0 included), so health never resizes a ring,
// and M is a pure function of the service's spec: every node sizes it the same. Rounding to a
// power of two means M changes only when the count crosses one: a new M re-hashes the service's
// new flows (established connections keep their endpoint), and replaces its ring map, which waits
// for an RCU grace period; an endpoint added or removed between crossings rewrites only the slots
// that change.
constexpr uint32_t kRingPerEndpoint = 100;
// The most endpoints a service can have: its ring holds 100 slots each at MP_RING_SIZE_MAX.
constexpr size_t kMaxRingEndpoints = MP_RING_SIZE_MAX / kRingPerEndpoint;

// M for a service with `endpoints` endpoints on a node whose ring_size is `nodeRingSize` (0: auto).
uint32_t ringSizeFor(uint32_t nodeRingSize, size_t endpoints);

// Kernel memory of a service's ring map as Linux 6.x accounts it (bpftool's memlock): an array
// stores each u32 slot in 8 bytes (values are rounded up to 8), two halves of M slots, and the
// map's 312-byte header. e2e store_scale checks it against bpftool over 10,000 rings.
constexpr uint64_t kRingMapHeaderBytes = 312;
constexpr uint64_t ringKernelBytes(uint32_t ringSize) {
  return uint64_t{2} * ringSize * 8 + kRingMapHeaderBytes;
}
// The auto size above.
uint32_t autoRingSize(size_t endpoints);

// Deterministic primality by trial division (fine for ring sizes up to MP_RING_SIZE_MAX).
bool isPrime(uint64_t n);

// The ring of m slots a service with `algorithm` reads; endpoint ids as in buildMaglevRing
// (every slot kRingEmpty when no endpoint has weight > 0; empty when m == 0).
std::vector<uint32_t> buildServiceRing(Algorithm algorithm, const std::vector<MaglevEndpoint>& eps,
                                       uint32_t m);

// The smooth weighted round-robin ring of m slots (round-robin services).
std::vector<uint32_t> buildRoundRobinRing(const std::vector<MaglevEndpoint>& eps, uint32_t m);

// Each endpoint's share of m slots (same order as eps): floor(m * w / W), plus one for the
// m - sum(floors) largest remainders (ties: the smaller key). Sums to m when any weight is > 0.
std::vector<uint32_t> ringQuotas(const std::vector<MaglevEndpoint>& eps, uint32_t m);

}  // namespace meshpath
