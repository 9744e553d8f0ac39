// maglev.h — the weighted Maglev lookup table ("ring") that the dataplane indexes with a flow hash.
//
// Algorithm (Eisenbud et al., "Maglev", NSDI'16, §3.4, with weighted turns as in Katran):
//
//  1. Permutations. Each endpoint's key (its stable identity, "10.0.2.11:8080") is hashed with two
//     independent seeded 64-bit hashes h1, h2 (see maglevPermutation). offset = h1 mod M,
//     skip = h2 mod (M-1) + 1. The endpoint's preference list is offset, offset+skip, offset+2skip,
//     ... (mod M); with M prime every skip is coprime to M, so the list visits every slot once.
//     Nothing but the key feeds the hash, and endpoints are put in a canonical order (by hash, then
//     key) before anything else happens, so every node builds the same ring from the same endpoint
//     set whatever the ids or the input order.
//  2. Exact quotas. Endpoint i is owed M * w_i / W slots (W = sum of weights). Each gets the floor
//     of that; the few slots left over go to the largest remainders (ties by canonical order). So
//     every endpoint ends with floor or ceil of its ideal share — off by less than one slot, the
//     best any integer table can do. Weight-0 endpoints get no slots and do not influence others.
//  3. Weighted turns. As in the paper, endpoints take turns; a turn claims the next still-empty
//     slot of the endpoint's preference list. The paper's plain round robin is the special case of
//     equal weights. Here an endpoint with quota q takes its k-th turn in round floor(k * R / q),
//     R = the largest quota (Katran's "cumulative weight" schedule, with quotas as the weights;
//     within a round, canonical order), so all endpoints walk their preference lists at speeds
//     proportional to their weights and all finish together in round R. An endpoint stops when it
//     reaches its quota; the table is then exactly full.
//
// Cost. The turn order is computed up front (a round robin, or for mixed weights a counting sort
// of all M turns by round). Positions advance by a running sum mod M (no division); "taken" is a
// byte per slot. Probing costs about M * ln M probes in all (a turn at fill fraction f needs
// 1/(1-f) of them), much of it spent on the last few hundred slots, so once fewer than ~sqrt(M)
// slots are empty the builder stops probing: it keeps the list of free slots and, per turn,
// computes each one's position in the endpoint's preference list (a multiplication by skip^-1
// mod M) and takes the earliest — the same slot probing would find. Mid-fill, where a mispredicted
// loop exit costs most, a step looks at four slots without a branch. Working memory (at most ~9
// bytes per slot) is kept per thread and reused, so rebuilding allocates nothing.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "abi.h"

namespace meshpath {

inline constexpr uint32_t kRingEmpty = MP_RING_EMPTY;

struct MaglevEndpoint {
  uint32_t id = 0;      // what the ring's slots hold (the dataplane's endpoint id)
  std::string key;      // stable identity, e.g. EndpointSpec::key(); unique within one ring
  uint32_t weight = 1;  // relative share; 0 = no slots
};

// An endpoint's preference list in a ring of m slots: slot(j) = (offset + j * skip) mod m.
struct MaglevPermutation {
  uint32_t offset = 0;
  uint32_t skip = 1;  // 1..m-1 and coprime to m (always so when m is prime)
};

// The permutation the builder uses for `key` in a ring of m >= 1 slots. Part of the cross-node
// contract: changing the hashes changes every ring.
MaglevPermutation maglevPermutation(const std::string& key, uint32_t m);

// Builds a ring of m slots (m should be prime; MP_RING_SIZE_MAX at most) holding endpoint ids.
// Every slot is kRingEmpty when no endpoint has weight > 0; an empty vector when m == 0.
std::vector<uint32_t> buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m);

// The same into `ring` (resized to m), reusing its memory: for callers that rebuild often.
void buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m,
                     std::vector<uint32_t>& ring);

namespace detail {
// The key's two hashes (h1, h2); canonical order is by (h1, h2, key). Exposed for tests.
std::pair<uint64_t, uint64_t> maglevKeyHashes(const std::string& key);

// buildMaglevRing with the switch from probing to the free-slot list placed explicitly: the builder
// switches when `free_list_below` slots remain empty (0 = probe to the end). The ring must not
// depend on it; exposed so tests can check exactly that.
std::vector<uint32_t> buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m,
                                      uint32_t free_list_below);
void buildMaglevRing(const std::vector<MaglevEndpoint>& eps, uint32_t m, uint32_t free_list_below,
                     std::vector<uint32_t>& ring);
}  // namespace detail

}  // namespace meshpath
