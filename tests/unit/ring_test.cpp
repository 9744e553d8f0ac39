// ring_test — rings per algorithm (ring.h): round-robin's smooth weighted sequence has exact
// proportions and interleaves; the other algorithms get the Maglev ring.
#include "ring.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace meshpath {
namespace {

std::vector<MaglevEndpoint> endpoints(const std::vector<uint32_t>& weights) {
  std::vector<MaglevEndpoint> eps;
  for (size_t i = 0; i < weights.size(); ++i) {
    eps.push_back(MaglevEndpoint{static_cast<uint32_t>(i), "10.0.2." + std::to_string(10 + i) +
                                                               ":80",
                                 weights[i]});
  }
  return eps;
}

std::map<uint32_t, uint32_t> counts(const std::vector<uint32_t>& ring) {
  std::map<uint32_t, uint32_t> c;
  for (uint32_t id : ring) ++c[id];
  return c;
}

TEST(RingSize, AutoIsThePrimeAbove100TimesTheEndpointsRoundedToAPowerOfTwo) {
  EXPECT_EQ(autoRingSize(0), 401u);
  EXPECT_EQ(autoRingSize(1), 401u);
  EXPECT_EQ(autoRingSize(4), 401u);
  EXPECT_EQ(autoRingSize(5), 809u);
  EXPECT_EQ(autoRingSize(10), 1601u);
  EXPECT_EQ(autoRingSize(16), 1601u);
  EXPECT_EQ(autoRingSize(17), 3203u);
  EXPECT_EQ(autoRingSize(1000), 102407u);
  EXPECT_EQ(autoRingSize(8192), 819229u);
  EXPECT_EQ(autoRingSize(8193), uint32_t{MP_RING_SIZE_MAX});
  EXPECT_EQ(autoRingSize(kMaxRingEndpoints), uint32_t{MP_RING_SIZE_MAX});
  // Every size is prime, at least 100 slots per endpoint, and never shrinks as endpoints grow.
  uint32_t last = 0;
  for (size_t n = 0; n <= kMaxRingEndpoints; n += (n < 64 ? 1 : 97)) {
    const uint32_t m = autoRingSize(n);
    EXPECT_TRUE(isPrime(m)) << n;
    EXPECT_GE(m, kRingPerEndpoint * n) << n;
    EXPECT_LE(m, uint32_t{MP_RING_SIZE_MAX}) << n;
    EXPECT_GE(m, last) << n;
    last = m;
  }
  // A fixed node.ring_size is every service's.
  EXPECT_EQ(ringSizeFor(65537, 3), 65537u);
  EXPECT_EQ(ringSizeFor(0, 3), 401u);
}

TEST(RoundRobinRing, NginxSequenceForSmallWeights) {
  // Nginx's documented example: weights 5, 1, 1 -> a a b a c a a.
  const auto ring = buildRoundRobinRing(endpoints({5, 1, 1}), 7);
  EXPECT_EQ(ring, (std::vector<uint32_t>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(RoundRobinRing, EqualWeightsAlternate) {
  const auto ring = buildRoundRobinRing(endpoints({1, 1, 1}), 9);
  EXPECT_EQ(ring, (std::vector<uint32_t>{0, 1, 2, 0, 1, 2, 0, 1, 2}));
}

TEST(RoundRobinRing, ExactProportions) {
  // Whole shares when M is a multiple of the total weight ...
  auto c = counts(buildRoundRobinRing(endpoints({1, 2, 3}), 600));
  EXPECT_EQ(c[0], 100u);
  EXPECT_EQ(c[1], 200u);
  EXPECT_EQ(c[2], 300u);
  // ... and floor or ceil of the ideal share on a prime M, summing to M.
  const uint32_t m = 65537;
  const std::vector<uint32_t> weights = {1, 2, 3, 7, 0, 10000};
  const auto ring = buildRoundRobinRing(endpoints(weights), m);
  ASSERT_EQ(ring.size(), m);
  c = counts(ring);
  uint64_t total = 0;
  for (uint32_t w : weights) total += w;
  uint64_t sum = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const double ideal = double(m) * weights[i] / double(total);
    EXPECT_LE(std::abs(double(c[static_cast<uint32_t>(i)]) - ideal), 1.0) << i;
    sum += c[static_cast<uint32_t>(i)];
  }
  EXPECT_EQ(sum, m);
  EXPECT_EQ(c[4], 0u) << "weight 0 gets no slot";
  EXPECT_EQ(c.count(kRingEmpty), 0u);
}

TEST(RoundRobinRing, Interleaves) {
  // Every endpoint comes back at least every ceil(M / quota) + 1 slots, including across the
  // wrap from the last slot to the first (the datapath's counter runs on modulo M).
  const uint32_t m = 1009;
  const std::vector<uint32_t> weights = {1, 3, 5, 9};
  const auto ring = buildRoundRobinRing(endpoints(weights), m);
  const auto quotas = ringQuotas(endpoints(weights), m);
  for (uint32_t id = 0; id < weights.size(); ++id) {
    std::vector<uint32_t> at;
    for (uint32_t s = 0; s < m; ++s) {
      if (ring[s] == id) at.push_back(s);
    }
    ASSERT_EQ(at.size(), quotas[id]);
    const uint32_t bound = (m + quotas[id] - 1) / quotas[id] + 1;
    for (size_t k = 0; k < at.size(); ++k) {
      const uint32_t next = k + 1 < at.size() ? at[k + 1] : at[0] + m;
      EXPECT_LE(next - at[k], bound) << "endpoint " << id << " at slot " << at[k];
    }
  }
  // Never a long run of one endpoint while others wait: the heaviest (9 of 18) never takes
  // more than two slots in a row.
  uint32_t run = 1, longest = 1;
  for (uint32_t s = 1; s < m; ++s) {
    run = ring[s] == ring[s - 1] ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  EXPECT_LE(longest, 2u);
}

TEST(RoundRobinRing, IndependentOfInputOrderAndEmptyWithoutWeight) {
  auto eps = endpoints({2, 1, 4});
  const auto a = buildRoundRobinRing(eps, 101);
  std::reverse(eps.begin(), eps.end());
  EXPECT_EQ(buildRoundRobinRing(eps, 101), a);
  EXPECT_EQ(buildRoundRobinRing(endpoints({0, 0}), 5), std::vector<uint32_t>(5, kRingEmpty));
  EXPECT_EQ(buildRoundRobinRing({}, 3), std::vector<uint32_t>(3, kRingEmpty));
  EXPECT_TRUE(buildRoundRobinRing(endpoints({1}), 0).empty());
}

TEST(ServiceRing, AlgorithmPicksTheBuilder) {
  const auto eps = endpoints({1, 2, 3});
  const auto maglev = buildMaglevRing(eps, 1009);
  for (Algorithm a : {Algorithm::kMaglev, Algorithm::kRandom, Algorithm::kLeastConn,
                      Algorithm::kLeastLatency}) {
    EXPECT_EQ(buildServiceRing(a, eps, 1009), maglev) << toString(a);
  }
  EXPECT_EQ(buildServiceRing(Algorithm::kRoundRobin, eps, 1009), buildRoundRobinRing(eps, 1009));
  EXPECT_NE(buildRoundRobinRing(eps, 1009), maglev);
}

TEST(RingQuotas, MatchMaglevShares) {
  // The Maglev builder gives each endpoint the same quota (its counts are the proof).
  const auto eps = endpoints({3, 1, 4, 1, 5});
  const auto maglev = counts(buildMaglevRing(eps, 65537));
  const auto quotas = ringQuotas(eps, 65537);
  for (uint32_t i = 0; i < eps.size(); ++i) EXPECT_EQ(maglev.at(i), quotas[i]) << i;
}

}  // namespace
}  // namespace meshpath
