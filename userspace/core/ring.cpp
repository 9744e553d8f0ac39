// ring.cpp — rings per algorithm; see ring.h.
#include "ring.h"

#include <algorithm>
#include <numeric>

namespace meshpath {

bool isPrime(uint64_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  if (n % 3 == 0) return n == 3;
  for (uint64_t d = 5; d * d <= n; d += 6) {
    if (n % d == 0 || n % (d + 2) == 0) return false;
  }
  return true;
}

uint32_t autoRingSize(size_t endpoints) {
  uint64_t rounded = 4;
  while (rounded < endpoints) rounded *= 2;
  uint64_t m = kRingPerEndpoint * rounded;
  if (m >= MP_RING_SIZE_MAX) return MP_RING_SIZE_MAX;
  while (!isPrime(m)) ++m;  // a prime gap below 10^6 is under 120: a few hundred divisions
  return static_cast<uint32_t>(m);
}

uint32_t ringSizeFor(uint32_t nodeRingSize, size_t endpoints) {
  return nodeRingSize != 0 ? nodeRingSize : autoRingSize(endpoints);
}

std::vector<uint32_t> ringQuotas(const std::vector<MaglevEndpoint>& eps, uint32_t m) {
  std::vector<uint32_t> quota(eps.size(), 0);
  uint64_t total = 0;
  for (const MaglevEndpoint& e : eps) total += e.weight;
  if (total == 0 || m == 0) return quota;
  std::vector<uint64_t> remainder(eps.size(), 0);
  uint64_t given = 0;
  for (size_t i = 0; i < eps.size(); ++i) {
    const uint64_t owed = uint64_t{m} * eps[i].weight;
    quota[i] = static_cast<uint32_t>(owed / total);
    remainder[i] = owed % total;
    given += quota[i];
  }
  std::vector<size_t> order(eps.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (remainder[a] != remainder[b]) return remainder[a] > remainder[b];
    return eps[a].key < eps[b].key;
  });
  for (size_t k = 0; given < m; ++k, ++given) ++quota[order[k]];
  return quota;
}

std::vector<uint32_t> buildRoundRobinRing(const std::vector<MaglevEndpoint>& eps, uint32_t m) {
  std::vector<uint32_t> ring(m, kRingEmpty);
  // Key order, so every node builds the same sequence whatever order the endpoints came in.
  std::vector<MaglevEndpoint> sorted;
  for (const MaglevEndpoint& e : eps) {
    if (e.weight > 0) sorted.push_back(e);
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const MaglevEndpoint& a, const MaglevEndpoint& b) { return a.key < b.key; });
  const std::vector<uint32_t> quota = ringQuotas(sorted, m);
  if (sorted.empty() || m == 0) return ring;

  const size_t n = sorted.size();
  std::vector<int64_t> current(n, 0);
  const int64_t total = m;  // the quotas sum to m
  for (uint32_t slot = 0; slot < m; ++slot) {
    size_t best = 0;
    int64_t bestValue = INT64_MIN;
    for (size_t i = 0; i < n; ++i) {
      current[i] += quota[i];
      if (current[i] > bestValue) {
        bestValue = current[i];
        best = i;
      }
    }
    current[best] -= total;
    ring[slot] = sorted[best].id;
  }
  return ring;
}

std::vector<uint32_t> buildServiceRing(Algorithm algorithm, const std::vector<MaglevEndpoint>& eps,
                                       uint32_t m) {
  if (algorithm == Algorithm::kRoundRobin) return buildRoundRobinRing(eps, m);
  return buildMaglevRing(eps, m);
}

}  // namespace meshpath
