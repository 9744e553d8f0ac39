// maglev_test — the weighted Maglev ring: balance, disruption, determinism, edge cases.
#include "maglev.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "config.h"

namespace meshpath {
namespace {

uint32_t nextPrime(uint32_t n) {
  while (!isPrime(n)) ++n;
  return n;
}

std::string keyOf(uint32_t i) {
  return "10." + std::to_string(2 + i / 65536) + "." + std::to_string(i / 256 % 256) + "." +
         std::to_string(i % 256) + ":8080";
}

std::vector<MaglevEndpoint> equalEndpoints(uint32_t n) {
  std::vector<MaglevEndpoint> eps;
  for (uint32_t i = 0; i < n; ++i) eps.push_back({i, keyOf(i), 1});
  return eps;
}

std::vector<MaglevEndpoint> weightedEndpoints(const std::vector<uint32_t>& weights) {
  std::vector<MaglevEndpoint> eps;
  for (uint32_t i = 0; i < weights.size(); ++i) eps.push_back({i, keyOf(i), weights[i]});
  return eps;
}

std::map<uint32_t, uint64_t> slotsPerId(const std::vector<uint32_t>& ring) {
  std::map<uint32_t, uint64_t> count;
  for (uint32_t id : ring) ++count[id];
  return count;
}

// Every endpoint's slots against its ideal share m * w / W: always off by less than one slot (the
// exact quota), and within 1% of the ideal whenever the ideal is at least 100 slots — below that,
// 1% is less than one slot, which no integer table can honour.
void expectBalanced(const std::vector<MaglevEndpoint>& eps, uint32_t m, bool require_one_percent) {
  const auto ring = buildMaglevRing(eps, m);
  ASSERT_EQ(ring.size(), m);
  const auto count = slotsPerId(ring);
  EXPECT_EQ(count.count(kRingEmpty), 0u) << "a weighted endpoint exists, so no slot is empty";
  double total_weight = 0;
  for (const auto& ep : eps) total_weight += ep.weight;
  for (const auto& ep : eps) {
    const double ideal = m * ep.weight / total_weight;
    const double got = count.count(ep.id) ? static_cast<double>(count.at(ep.id)) : 0.0;
    EXPECT_LT(std::abs(got - ideal), 1.0) << ep.key << " w=" << ep.weight << " m=" << m;
    if (require_one_percent) {
      ASSERT_GE(ideal, 100.0) << "test setup: the 1% check needs an ideal of >= 100 slots";
      EXPECT_LE(std::abs(got - ideal), 0.01 * ideal) << ep.key << " w=" << ep.weight;
    }
  }
}

TEST(MaglevRing, EmptyInputLeavesEverySlotEmpty) {
  const auto ring = buildMaglevRing({}, 65537);
  ASSERT_EQ(ring.size(), 65537u);
  EXPECT_TRUE(std::all_of(ring.begin(), ring.end(), [](uint32_t v) { return v == kRingEmpty; }));
}

TEST(MaglevRing, AllWeightsZeroLeavesEverySlotEmpty) {
  auto eps = equalEndpoints(5);
  for (auto& ep : eps) ep.weight = 0;
  const auto ring = buildMaglevRing(eps, 1009);
  ASSERT_EQ(ring.size(), 1009u);
  EXPECT_TRUE(std::all_of(ring.begin(), ring.end(), [](uint32_t v) { return v == MP_RING_EMPTY; }));
}

TEST(MaglevRing, ZeroSlotsGivesEmptyVector) {
  EXPECT_TRUE(buildMaglevRing(equalEndpoints(3), 0).empty());
}

TEST(MaglevRing, TinyRingsAreFull) {
  for (uint32_t m : {1u, 2u, 3u, 7u}) {
    const auto ring = buildMaglevRing(equalEndpoints(3), m);
    ASSERT_EQ(ring.size(), m);
    for (uint32_t id : ring) EXPECT_LT(id, 3u) << "m=" << m;
  }
}

TEST(MaglevRing, SingleEndpointOwnsEverySlot) {
  const auto ring = buildMaglevRing({{42, "10.0.2.11:8080", 7}}, 65537);
  EXPECT_TRUE(std::all_of(ring.begin(), ring.end(), [](uint32_t v) { return v == 42; }));
}

TEST(MaglevRing, WeightZeroEndpointsGetNothingAndDisturbNothing) {
  auto eps = equalEndpoints(20);
  const auto without = buildMaglevRing(eps, 65537);
  eps.push_back({100, "10.9.9.9:8080", 0});
  eps.push_back({101, "10.9.9.10:8080", 0});
  const auto with = buildMaglevRing(eps, 65537);
  EXPECT_EQ(with, without);
}

TEST(MaglevRing, EqualWeightsBalance) {
  for (uint32_t n : {1u, 2u, 3u, 10u, 100u, 257u, 655u}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    expectBalanced(equalEndpoints(n), 65537, true);
  }
  for (uint32_t n : {7u, 1000u, 2000u}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    expectBalanced(equalEndpoints(n), nextPrime(100 * n), true);
  }
}

TEST(MaglevRing, WeightedMixesBalance) {
  // 1..10 repeating: the lightest ideal is 65537 / 550 = 119 slots.
  std::vector<uint32_t> cycle;
  for (uint32_t i = 0; i < 100; ++i) cycle.push_back(1 + i % 10);
  expectBalanced(weightedEndpoints(cycle), 65537, true);

  // Canary: 9 endpoints at 100, one at 1 (65537 / 901 = 72.7 slots: only the one-slot bound).
  std::vector<uint32_t> canary(9, 100);
  canary.push_back(1);
  expectBalanced(weightedEndpoints(canary), 65537, false);
  expectBalanced(weightedEndpoints(canary), nextPrime(100 * 901), true);

  // Random weights 100..10000 for 50 endpoints; M large enough that the lightest gets >= 100.
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> weight(100, 10000);
  std::vector<uint32_t> random;
  for (int i = 0; i < 50; ++i) random.push_back(weight(rng));
  uint64_t total = 0;
  for (uint32_t w : random) total += w;
  const uint32_t lightest = *std::min_element(random.begin(), random.end());
  const auto m = nextPrime(static_cast<uint32_t>(100 * total / lightest + 1));
  ASSERT_LE(m, MP_RING_SIZE_MAX);
  expectBalanced(weightedEndpoints(random), m, true);

  // Extreme skew: 10000 against 99 x 1 (each light one is owed 6.5 slots).
  std::vector<uint32_t> skew(99, 1);
  skew.push_back(kMaxWeight);
  expectBalanced(weightedEndpoints(skew), 65537, false);

  // Weight-0 endpoints mixed in: balance among the others.
  std::vector<uint32_t> drained = {3, 0, 1, 0, 2, 5, 0, 4};
  auto eps = weightedEndpoints(drained);
  const auto ring = buildMaglevRing(eps, 65537);
  const auto count = slotsPerId(ring);
  for (const auto& ep : eps) {
    if (ep.weight == 0) {
      EXPECT_EQ(count.count(ep.id), 0u) << ep.key;
    }
  }
  eps.erase(std::remove_if(eps.begin(), eps.end(), [](auto& e) { return e.weight == 0; }),
            eps.end());
  expectBalanced(eps, 65537, true);
}

// The same endpoint set gives the same ring (as keys) whatever the input order and the ids, so
// every node agrees.
TEST(MaglevRing, DeterministicAcrossOrderAndIds) {
  std::vector<uint32_t> weights;
  for (uint32_t i = 0; i < 300; ++i) weights.push_back(1 + i % 7);
  auto eps = weightedEndpoints(weights);
  auto asKeys = [](const std::vector<MaglevEndpoint>& e, const std::vector<uint32_t>& ring) {
    std::map<uint32_t, std::string> key_of;
    for (const auto& ep : e) key_of[ep.id] = ep.key;
    std::vector<std::string> keys;
    for (uint32_t id : ring) keys.push_back(key_of.at(id));
    return keys;
  };
  const auto reference = asKeys(eps, buildMaglevRing(eps, 65537));
  std::mt19937 rng(1);
  for (int trial = 0; trial < 3; ++trial) {
    auto shuffled = eps;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    for (size_t i = 0; i < shuffled.size(); ++i) shuffled[i].id = static_cast<uint32_t>(1000 + i);
    EXPECT_EQ(asKeys(shuffled, buildMaglevRing(shuffled, 65537)), reference);
  }
  EXPECT_EQ(buildMaglevRing(eps, 65537), buildMaglevRing(eps, 65537));
}

// The documented algorithm written plainly: canonical order by (h1, h2, key), largest-remainder
// quotas, the k-th turn of endpoint i in round floor(k * R / q_i) (canonical order within a
// round), each turn probing its preference list one slot at a time with a modulo.
std::vector<uint32_t> plainWeightedMaglev(std::vector<MaglevEndpoint> eps, uint32_t m) {
  std::vector<uint32_t> ring(m, kRingEmpty);
  eps.erase(std::remove_if(eps.begin(), eps.end(), [](auto& e) { return e.weight == 0; }),
            eps.end());
  if (eps.empty()) return ring;
  std::sort(eps.begin(), eps.end(), [](const MaglevEndpoint& a, const MaglevEndpoint& b) {
    const auto ha = detail::maglevKeyHashes(a.key), hb = detail::maglevKeyHashes(b.key);
    return ha != hb ? ha < hb : a.key < b.key;
  });
  uint64_t total = 0;
  for (const auto& e : eps) total += e.weight;
  std::vector<uint64_t> quota(eps.size());
  std::vector<std::pair<uint64_t, size_t>> remainders;  // (-remainder, index): ascending = largest
  uint64_t assigned = 0;
  for (size_t i = 0; i < eps.size(); ++i) {
    quota[i] = uint64_t{m} * eps[i].weight / total;
    assigned += quota[i];
    remainders.push_back({UINT64_MAX - uint64_t{m} * eps[i].weight % total, i});
  }
  std::sort(remainders.begin(), remainders.end());
  for (uint64_t k = 0; k < m - assigned; ++k) ++quota[remainders[k].second];
  const uint64_t rounds = *std::max_element(quota.begin(), quota.end());
  std::vector<std::pair<uint64_t, size_t>> turns;  // (round, endpoint)
  for (size_t i = 0; i < eps.size(); ++i) {
    for (uint64_t k = 1; k <= quota[i]; ++k) turns.push_back({k * rounds / quota[i], i});
  }
  std::sort(turns.begin(), turns.end());
  std::vector<uint64_t> next(eps.size(), 0);
  for (const auto& [round, i] : turns) {
    const auto perm = maglevPermutation(eps[i].key, m);
    uint64_t slot;
    do {
      slot = (perm.offset + next[i]++ * perm.skip) % m;
    } while (ring[slot] != kRingEmpty);
    ring[slot] = eps[i].id;
  }
  return ring;
}

// The fast builder (turn schedule by round robin or counting sort, two-chain probing, free-slot
// list at the end) must produce exactly the plainly written algorithm's ring.
TEST(MaglevRing, MatchesThePlainAlgorithm) {
  std::vector<uint32_t> mixed, skew(30, 1), drained = {3, 0, 1, 0, 2, 5, 0, 4};
  for (uint32_t i = 0; i < 200; ++i) mixed.push_back(1 + (i * 37) % 50);
  skew.push_back(kMaxWeight);
  for (const auto& eps :
       {equalEndpoints(1), equalEndpoints(7), equalEndpoints(1000), weightedEndpoints(mixed),
        weightedEndpoints(skew), weightedEndpoints(drained)}) {
    for (uint32_t m : {1u, 2u, 3u, 1009u, 65537u}) {
      SCOPED_TRACE("n=" + std::to_string(eps.size()) + " m=" + std::to_string(m));
      EXPECT_EQ(buildMaglevRing(eps, m), plainWeightedMaglev(eps, m));
    }
  }
}

// The free-slot list that replaces probing at the end must pick exactly the slots probing would.
TEST(MaglevRing, FreeListPhaseMatchesProbing) {
  std::vector<uint32_t> weights;
  for (uint32_t i = 0; i < 200; ++i) weights.push_back(1 + (i * 37) % 50);
  for (const auto& eps :
       {equalEndpoints(1), equalEndpoints(10), equalEndpoints(1000), weightedEndpoints(weights)}) {
    const auto probed = detail::buildMaglevRing(eps, 65537, 0);
    EXPECT_EQ(detail::buildMaglevRing(eps, 65537, 300), probed);
    EXPECT_EQ(detail::buildMaglevRing(eps, 65537, 3000), probed);
    EXPECT_EQ(buildMaglevRing(eps, 65537), probed);
    // The list from the very first slot on (quadratic: a small ring).
    EXPECT_EQ(detail::buildMaglevRing(eps, 10007, 10007), detail::buildMaglevRing(eps, 10007, 0));
  }
}

// Rebuilding into the same vector reuses it and gives the same ring.
TEST(MaglevRing, RebuildIntoExistingVector) {
  std::vector<uint32_t> ring(5, 7);
  buildMaglevRing(equalEndpoints(10), 1009, ring);
  EXPECT_EQ(ring, buildMaglevRing(equalEndpoints(10), 1009));
  buildMaglevRing({}, 1009, ring);
  EXPECT_EQ(ring, std::vector<uint32_t>(1009, kRingEmpty));
  buildMaglevRing(equalEndpoints(3), 0, ring);
  EXPECT_TRUE(ring.empty());
}

TEST(MaglevRing, PermutationIsValid) {
  for (uint32_t m : {2u, 3u, 65537u, uint32_t{MP_RING_SIZE_MAX}}) {
    const auto p = maglevPermutation("10.0.2.11:8080", m);
    EXPECT_LT(p.offset, m);
    EXPECT_GE(p.skip, 1u);
    EXPECT_LT(p.skip, m);
  }
  // A non-prime m still gets a skip coprime to it, so the list visits every slot.
  for (const char* key : {"a", "b", "c", "d", "e", "f"}) {
    const auto p = maglevPermutation(key, 65536);
    EXPECT_EQ(p.skip % 2, 1u) << key;
  }
  const auto ring = buildMaglevRing(equalEndpoints(10), 65536);
  EXPECT_EQ(slotsPerId(ring).count(kRingEmpty), 0u);
}

// ---- disruption ----------------------------------------------------------------------------
//
// The paper's algorithm (Pseudocode 1: plain round robin, each endpoint takes the next empty slot
// of its preference list), with the same permutations, as the yardstick for churn.
std::vector<uint32_t> paperMaglev(std::vector<MaglevEndpoint> eps, uint32_t m) {
  std::sort(eps.begin(), eps.end(), [](auto& a, auto& b) { return a.key < b.key; });
  std::vector<uint32_t> ring(m, kRingEmpty);
  std::vector<uint64_t> pos(eps.size()), skip(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) {
    const auto p = maglevPermutation(eps[i].key, m);
    pos[i] = p.offset;
    skip[i] = p.skip;
  }
  for (uint32_t filled = 0;;) {
    for (size_t i = 0; i < eps.size(); ++i) {
      while (ring[pos[i]] != kRingEmpty) pos[i] = (pos[i] + skip[i]) % m;
      ring[pos[i]] = eps[i].id;
      if (++filled == m) return ring;
    }
  }
}

struct Churn {
  uint64_t moved = 0;      // slots whose endpoint changed
  uint64_t survivors = 0;  // ... between two endpoints present in both rings
};

Churn churnAfterRemoval(const std::vector<uint32_t>& before, const std::vector<uint32_t>& after,
                        uint32_t removed_id) {
  Churn c;
  for (size_t s = 0; s < before.size(); ++s) {
    if (before[s] == after[s]) continue;
    ++c.moved;
    if (before[s] != removed_id) ++c.survivors;
  }
  return c;
}

// Removing one of N endpoints must move that endpoint's M/N slots; anything more is slots moving
// between survivors, and Maglev does not promise zero of that. Why it happens: without X, a
// survivor meets X's freed slots early in its preference list and takes them, so it reaches its
// quota having walked less far down its list; the slots it would have taken last — the ones taken
// after long probe sequences, when the table is nearly full — are left to whoever probes them
// next, and each such difference shifts a few more. Those late slots are a roughly fixed share of
// M whatever N is, so the churn between survivors is a small fraction of M, not of M/N. The bound
// is measured, not derived: the paper's own algorithm (Pseudocode 1, plain round robin) with the
// same permutations moves between survivors 0.24% (N = 5) .. 0.58% (N = 1000, M = 100 N) of M,
// and this builder 0.24% .. 0.62%. Asserted:
//   survivor-to-survivor moves <= 1% of M, and <= 1.25 x the paper's algorithm + 0.05% of M on the
//   same input.
// Total moved <= 2 x M/N then follows whenever 1% of M <= M/N, i.e. N <= 100, which the test
// asserts for N <= 100 at M = 65537 (measured: 1.01 x at N = 5 .. 1.55 x at N = 100). At N = 1000,
// M = 100 N, the survivor churn alone is ~6 x M/N — for the paper's algorithm too — so there only
// the survivor bound is asserted; a larger M shrinks it (0.33% of M at M = 655373).
TEST(MaglevRing, RemovingOneEndpointMovesLittleMoreThanItsShare) {
  struct Case {
    uint32_t n;
    uint32_t m;
    bool two_times_ideal;
  };
  for (const Case& c : {Case{5, 65537, true}, Case{10, 65537, true}, Case{50, 65537, true},
                        Case{100, 65537, true}, Case{1000, 100003, false}}) {
    const auto eps = equalEndpoints(c.n);
    const auto before = buildMaglevRing(eps, c.m);
    const auto paper_before = paperMaglev(eps, c.m);
    const double ideal = static_cast<double>(c.m) / c.n;
    for (uint32_t removed = 0; removed < c.n; removed += std::max(1u, c.n / 5)) {
      SCOPED_TRACE("n=" + std::to_string(c.n) + " removed=" + std::to_string(removed));
      auto fewer = eps;
      fewer.erase(fewer.begin() + removed);
      const Churn ours = churnAfterRemoval(before, buildMaglevRing(fewer, c.m), removed);
      const Churn paper = churnAfterRemoval(paper_before, paperMaglev(fewer, c.m), removed);
      EXPECT_LE(ours.survivors, 0.01 * c.m);
      EXPECT_LE(ours.survivors, 1.25 * paper.survivors + 0.0005 * c.m)
          << "paper's algorithm: " << paper.survivors;
      EXPECT_GE(ours.moved - ours.survivors, static_cast<uint64_t>(ideal))
          << "every slot of the removed endpoint moves";
      if (c.two_times_ideal) {
        EXPECT_LE(ours.moved, 2 * ideal);
      }
    }
  }
}

// Adding an endpoint is the same change in reverse.
TEST(MaglevRing, AddingOneEndpointMovesLittleMoreThanItsShare) {
  for (uint32_t n : {10u, 100u}) {
    const auto eps = equalEndpoints(n);
    const auto before = buildMaglevRing(eps, 65537);
    auto more = eps;
    more.push_back({n, keyOf(n), 1});
    const auto after = buildMaglevRing(more, 65537);
    const Churn c = churnAfterRemoval(after, before, n);
    EXPECT_LE(c.moved, 2.0 * 65537 / (n + 1)) << "n=" << n;
    EXPECT_LE(c.survivors, 0.01 * 65537) << "n=" << n;
  }
}

// Draining (weight -> 0) moves the endpoint's slots like a removal; halving a weight moves about
// half of them.
TEST(MaglevRing, WeightChangesMoveProportionally) {
  std::vector<uint32_t> weights;
  for (uint32_t i = 0; i < 50; ++i) weights.push_back(10 + i % 5 * 10);
  const auto eps = weightedEndpoints(weights);
  const auto before = buildMaglevRing(eps, 65537);
  const auto count = slotsPerId(before);
  for (uint32_t target : {0u, 17u, 49u}) {
    SCOPED_TRACE("target=" + std::to_string(target));
    auto drained = eps;
    drained[target].weight = 0;
    const Churn d = churnAfterRemoval(before, buildMaglevRing(drained, 65537), target);
    EXPECT_LE(d.survivors, 0.01 * 65537);
    auto halved = eps;
    halved[target].weight /= 2;
    const auto after = buildMaglevRing(halved, 65537);
    uint64_t moved = 0;
    for (size_t s = 0; s < before.size(); ++s) moved += before[s] != after[s];
    EXPECT_LE(moved, count.at(target) / 2 + 0.01 * 65537);
  }
}

}  // namespace
}  // namespace meshpath
