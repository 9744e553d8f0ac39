// maglev.cpp — weighted Maglev ring builder; the algorithm is described in maglev.h.
#include "maglev.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

namespace meshpath {
namespace {

constexpr uint64_t kOffsetSeed = 0x6d61676c65762d31ull;  // "maglev-1"
constexpr uint64_t kSkipSeed = 0x6d61676c65762d32ull;    // "maglev-2"

// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// The two hashes of a key: FNV-1a over its bytes from two seeded starting points, each finalized
// with fmix64. Byte-wise, so the same on every platform and compiler (std::hash is neither); the
// two chains run in one loop so they overlap in the pipeline.
std::pair<uint64_t, uint64_t> hashKey(const std::string& key) {
  constexpr uint64_t kFnvPrime = 0x100000001b3ull;
  uint64_t h1 = 0xcbf29ce484222325ull ^ fmix64(kOffsetSeed);
  uint64_t h2 = 0xcbf29ce484222325ull ^ fmix64(kSkipSeed);
  for (unsigned char c : key) {
    h1 = (h1 ^ c) * kFnvPrime;
    h2 = (h2 ^ c) * kFnvPrime;
  }
  return {fmix64(h1 ^ key.size()), fmix64(h2 ^ key.size())};
}

uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b != 0) {
    const uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// a^-1 mod m for gcd(a, m) == 1, m >= 2.
uint64_t modInverse(uint64_t a, uint64_t m) {
  int64_t old_r = static_cast<int64_t>(a), r = static_cast<int64_t>(m);
  int64_t old_s = 1, s = 0;
  while (r != 0) {
    const int64_t q = old_r / r;
    const int64_t next_r = old_r - q * r;
    old_r = r;
    r = next_r;
    const int64_t next_s = old_s - q * s;
    old_s = s;
    s = next_s;
  }
  int64_t inv = old_s % static_cast<int64_t>(m);
  if (inv < 0) inv += static_cast<int64_t>(m);
  return static_cast<uint64_t>(inv);
}

// x mod m without a division: Barrett reduction with mu = floor(2^64 / m), m >= 2.
struct Barrett {
  uint64_t m;
  uint64_t mu;
  explicit Barrett(uint64_t modulus)
      : m(modulus),
        mu(static_cast<uint64_t>((static_cast<unsigned __int128>(1) << 64) / modulus)) {}
  uint64_t reduce(uint64_t x) const {
    const auto q = static_cast<uint64_t>((static_cast<unsigned __int128>(x) * mu) >> 64);
    const uint64_t r = x - q * m;
    return r >= m ? r - m : r;
  }
};

MaglevPermutation permutationFromHashes(uint64_t h1, uint64_t h2, uint64_t m) {
  MaglevPermutation p;
  if (m < 2) return p;
  p.offset = static_cast<uint32_t>(h1 % m);
  uint64_t skip = h2 % (m - 1) + 1;
  // Only matters when m is not prime: a skip sharing a factor with m would cycle early.
  while (gcd64(skip, m) != 1) skip = skip % (m - 1) + 1;
  p.skip = static_cast<uint32_t>(skip);
  return p;
}

struct Hashed {
  uint64_t h1;
  uint64_t h2;
  const MaglevEndpoint* ep;
};

// One endpoint during the fill: everything a turn touches, in one 16-byte record.
struct Walker {
  uint32_t pos;  // next slot of its preference list to look at
  uint32_t skip;
  uint32_t skip2;  // 2 * skip mod m
  uint32_t id;
};

// Working memory of one build, kept per thread between builds: once a thread has built a ring of
// a given size, building another allocates nothing.
struct Scratch {
  std::vector<Hashed> hashed;
  std::vector<std::pair<uint64_t, uint32_t>> remainders;  // (remainder, canonical index)
  std::vector<uint32_t> quota;                            // per endpoint, canonical order
  std::vector<Walker> walkers;
  std::vector<uint32_t> inverse;   // skip^-1 mod m, computed when first needed (0 = not yet)
  std::vector<uint32_t> schedule;  // per turn: which endpoint takes it
  std::vector<uint32_t> round_start;
  std::vector<uint32_t> seq, seq_at;  // mixed weights: each distinct quota's rounds
  std::vector<uint8_t> taken;         // per slot; bytes, not bits: fewer instructions per probe
  std::vector<uint32_t> free_slots;
};

Scratch& threadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Canonical order and exact quotas; returns the number of endpoints with weight > 0.
size_t prepareEndpoints(const std::vector<MaglevEndpoint>& eps, uint32_t m, Scratch& s) {
  s.hashed.clear();
  uint64_t total_weight = 0;
  for (const MaglevEndpoint& ep : eps) {
    if (ep.weight == 0) continue;
    const auto [h1, h2] = hashKey(ep.key);
    s.hashed.push_back({h1, h2, &ep});
    total_weight += ep.weight;
  }
  const size_t n = s.hashed.size();
  if (n == 0) return 0;
  std::sort(s.hashed.begin(), s.hashed.end(), [](const Hashed& a, const Hashed& b) {
    if (a.h1 != b.h1) return a.h1 < b.h1;
    if (a.h2 != b.h2) return a.h2 < b.h2;
    if (a.ep->key != b.ep->key) return a.ep->key < b.ep->key;
    return a.ep->id < b.ep->id;
  });

  // Largest remainder: everyone gets the floor of m * w / W (m, w < 2^32, so the product fits
  // 64 bits); the leftover slots, fewer than n, go to the largest remainders.
  s.quota.resize(n);
  s.remainders.resize(n);
  uint64_t assigned = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t owed = uint64_t{m} * s.hashed[i].ep->weight;
    s.quota[i] = static_cast<uint32_t>(owed / total_weight);
    s.remainders[i] = {owed % total_weight, i};
    assigned += s.quota[i];
  }
  const auto leftover = static_cast<size_t>(m - assigned);
  if (leftover > 0) {
    auto larger = [](const std::pair<uint64_t, uint32_t>& a,
                     const std::pair<uint64_t, uint32_t>& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    std::nth_element(s.remainders.begin(), s.remainders.begin() + leftover - 1, s.remainders.end(),
                     larger);
    for (size_t k = 0; k < leftover; ++k) ++s.quota[s.remainders[k].second];
  }
  return n;
}

// The order of all m turns: endpoint i's k-th turn is in round floor(k * R / quota_i), R = the
// largest quota; within a round, canonical order. Rounds advance by Bresenham steps, not
// divisions.
void buildSchedule(Scratch& s, size_t n, uint32_t m) {
  const auto [min_quota, max_quota] = std::minmax_element(s.quota.begin(), s.quota.begin() + n);
  const uint32_t rounds = *max_quota;
  s.schedule.resize(m);
  uint32_t* const schedule = s.schedule.data();
  const uint32_t* const quota = s.quota.data();

  if (*max_quota - *min_quota <= 1) {
    // Equal weights (the usual case), quotas Q or Q + 1. With R = Q every endpoint takes a turn in
    // every round. With R = Q + 1, floor(k * R / Q) puts the k-th turn of a Q endpoint in round k
    // for k < Q and its last in round Q + 1: round Q belongs to the Q + 1 endpoints alone.
    const uint32_t q_low = *min_quota;
    std::vector<uint32_t>& all = s.round_start;  // reused: endpoints with a slot, then the Q + 1s
    all.clear();
    for (uint32_t i = 0; i < n; ++i) {
      if (quota[i] > 0) all.push_back(i);
    }
    const size_t n_all = all.size();
    for (uint32_t i = 0; i < n; ++i) {
      if (quota[i] == q_low + 1) all.push_back(i);
    }
    uint32_t* out = schedule;
    for (uint64_t r = 1; r <= rounds; ++r) {
      const bool only_high = rounds == q_low + 1 && r == q_low;
      out = only_high ? std::copy(all.begin() + n_all, all.end(), out)
                      : std::copy(all.begin(), all.begin() + n_all, out);
    }
    return;
  }

  // Mixed weights: a counting sort of all turns by round. Endpoints with the same quota take
  // their turns in the same rounds, so each distinct quota's rounds are worked out once (Bresenham
  // steps) and the per-turn work is a lookup and a write.
  std::vector<uint32_t>& seq_at = s.seq_at;  // per quota value: where its rounds start in `seq`
  std::vector<uint32_t>& seq = s.seq;
  std::vector<uint32_t>& start = s.round_start;  // per round: count, then where its turns go
  seq_at.assign(size_t{rounds} + 1, UINT32_MAX);
  seq.clear();
  start.assign(size_t{rounds} + 2, 0);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t q = quota[i];
    if (q == 0) continue;
    if (seq_at[q] == UINT32_MAX) {
      seq_at[q] = static_cast<uint32_t>(seq.size());
      const uint32_t stride = rounds / q, carry = rounds % q;
      uint32_t round = 0, err = 0;
      for (uint32_t k = 0; k < q; ++k) {
        err += carry;
        const bool over = err >= q;
        err -= over ? q : 0;
        round += stride + over;
        seq.push_back(round);
      }
    }
    for (uint32_t k = 0; k < q; ++k) ++start[seq[seq_at[q] + k] + 1];
  }
  for (uint32_t r = 1; r < rounds + 2; ++r) start[r] += start[r - 1];
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t q = quota[i];
    if (q == 0) continue;
    const uint32_t* const rounds_of = seq.data() + seq_at[q];
    for (uint32_t k = 0; k < q; ++k) schedule[start[rounds_of[k]]++] = i;
  }
}

void fillRing(Scratch& s, size_t n, uint32_t m, uint32_t free_list_below, uint32_t* ring) {
  s.walkers.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    const MaglevPermutation perm = permutationFromHashes(s.hashed[i].h1, s.hashed[i].h2, m);
    s.walkers[i] = {perm.offset, perm.skip, static_cast<uint32_t>((2 * uint64_t{perm.skip}) % m),
                    s.hashed[i].ep->id};
  }
  s.taken.assign(size_t{m} + 8, 0);  // padded so the free-slot scan can read 8 bytes at a time

  const uint64_t slots = m;
  uint8_t* const taken = s.taken.data();
  Walker* const walkers = s.walkers.data();
  const uint32_t* const schedule = s.schedule.data();

  // Probing, in three stretches by how full the ring is (turn t fills slot number t). Early, the
  // first slot looked at is usually free. In the middle, the number of probes a turn needs is
  // unpredictable and each wrong guess of the loop's exit costs a pipeline flush after a chain of
  // dependent loads; there, each step looks at four slots at once without a branch and takes the
  // first free one, so the exit is nearly always guessed right (measured: ~15% off the whole
  // build). Late, probes dominate; two interleaved chains (even and odd steps, each advancing by 2
  // * skip) halve the dependency chain of "next position".
  const uint32_t probe_turns = m < 64 || free_list_below >= m ? m : m - free_list_below;
  const auto blocks_from = static_cast<uint32_t>(uint64_t{m} * 3 / 10);
  const auto blocks_until = std::min(probe_turns, static_cast<uint32_t>(uint64_t{m} * 3 / 4));
  auto claim = [&](Walker& w, uint64_t p) {
    taken[p] = 1;
    ring[p] = w.id;
    p += w.skip;
    w.pos = static_cast<uint32_t>(p >= slots ? p - slots : p);
  };
  uint32_t t = 0;
  for (; t < std::min(blocks_from, probe_turns); ++t) {
    Walker& w = walkers[schedule[t]];
    uint64_t p = w.pos;
    while (taken[p]) {
      p += w.skip;
      if (p >= slots) p -= slots;
    }
    claim(w, p);
  }
  for (; t < blocks_until; ++t) {
    Walker& w = walkers[schedule[t]];
    const uint64_t step = w.skip;
    uint64_t p = w.pos;
    for (;;) {
      constexpr int kBlock = 4;
      uint64_t candidate[kBlock];
      uint32_t free_mask = 0;
#pragma GCC unroll 4
      for (int k = 0; k < kBlock; ++k) {
        candidate[k] = p;
        free_mask |= static_cast<uint32_t>(taken[p] == 0) << k;
        p += step;
        p = p >= slots ? p - slots : p;
      }
      if (free_mask != 0) {
        p = candidate[__builtin_ctz(free_mask)];
        break;
      }
    }
    claim(w, p);
  }
  for (; t < probe_turns; ++t) {
    Walker& w = walkers[schedule[t]];
    uint64_t p = w.pos;
    if (taken[p]) {
      const uint64_t step = w.skip, step2 = w.skip2;
      uint64_t q = p + step;
      if (q >= slots) q -= slots;
      for (;;) {
        if (!taken[q]) {
          p = q;
          break;
        }
        p += step2;
        if (p >= slots) p -= slots;
        if (!taken[p]) break;
        q += step2;
        if (q >= slots) q -= slots;
      }
    }
    claim(w, p);
  }
  if (probe_turns == m) return;

  // The free-slot list: for each turn, the free slot that comes first in the endpoint's
  // preference list from its position on — the slot probing would reach, since every slot the
  // list passed before that position is already taken. steps(slot) = (slot - pos) / skip mod m.
  s.free_slots.clear();
  constexpr uint64_t kAllTaken = 0x0101010101010101ull;
  for (uint64_t base = 0; base < m; base += 8) {
    uint64_t word;
    std::memcpy(&word, taken + base, sizeof(word));
    if (word == kAllTaken) continue;
    for (uint64_t slot = base; slot < base + 8 && slot < m; ++slot) {
      if (!taken[slot]) s.free_slots.push_back(static_cast<uint32_t>(slot));
    }
  }
  s.inverse.assign(n, 0);
  const Barrett mod(m);
  for (uint32_t t = probe_turns; t < m; ++t) {
    const uint32_t i = schedule[t];
    Walker& w = walkers[i];
    if (s.inverse[i] == 0) s.inverse[i] = static_cast<uint32_t>(modInverse(w.skip, m));
    const uint64_t inverse = s.inverse[i], p = w.pos;
    size_t best = 0;
    uint64_t best_steps = UINT64_MAX;
    for (size_t k = 0; k < s.free_slots.size(); ++k) {
      const uint64_t slot = s.free_slots[k];
      const uint64_t diff = slot >= p ? slot - p : slot + slots - p;
      const uint64_t steps = mod.reduce(diff * inverse);
      if (steps < best_steps) {
        best_steps = steps;
        best = k;
      }
    }
    const uint64_t slot = s.free_slots[best];
    s.free_slots[best] = s.free_slots.back();
    s.free_slots.pop_back();
    taken[slot] = 1;
    ring[slot] = w.id;
    const uint64_t next = slot + w.skip;
    w.pos = static_cast<uint32_t>(next >= slots ? next - slots : next);
  }
}

// Below ~sqrt(M) empty slots, scanning the free list beats probing (see maglev.h).
uint32_t defaultFreeListThreshold(uint32_t m) {
  return static_cast<uint32_t>(std::sqrt(static_cast<double>(m)));
}

}  // namespace

MaglevPermutation maglevPermutation(const std::string& key, uint32_t m) {
  const auto [h1, h2] = hashKey(key);
  return permutationFromHashes(h1, h2, m);
}

void buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m,
                     std::vector<uint32_t>& ring) {
  detail::buildMaglevRing(eps, m, defaultFreeListThreshold(m), ring);
}

std::vector<uint32_t> buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m) {
  std::vector<uint32_t> ring;
  buildMaglevRing(eps, m, ring);
  return ring;
}

namespace detail {
std::pair<uint64_t, uint64_t> maglevKeyHashes(const std::string& key) { return hashKey(key); }

void buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m, uint32_t free_list_below,
                     std::vector<uint32_t>& ring) {
  Scratch& s = threadScratch();
  const size_t n = m == 0 ? 0 : prepareEndpoints(eps, m, s);
  if (n == 0) {
    ring.assign(m, kRingEmpty);
    return;
  }
  ring.resize(m);  // every slot is written below
  buildSchedule(s, n, m);
  fillRing(s, n, m, free_list_below, ring.data());
}

std::vector<uint32_t> buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m,
                                      uint32_t free_list_below) {
  std::vector<uint32_t> ring;
  buildMaglevRing(eps, m, free_list_below, ring);
  return ring;
}
}  // namespace detail

}  // namespace meshpath
