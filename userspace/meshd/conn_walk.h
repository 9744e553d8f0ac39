// conn_walk.h — a walk over the connection table (mp_conns, an LRU hash the datapath changes
// all the time). It reads with BPF_MAP_LOOKUP_BATCH, whose cursor is a bucket index: entries
// added or deleted meanwhile never restart the walk (bpf_map_get_next_key restarts from the first
// key when the key it was given is gone, which a walk that deletes makes the rule) and it visits
// each bucket once. An entry added during the walk may be missed; callers live with that.
//
// Cost, measured on this machine (2 cores, kernel 6.18, an LRU hash of 1,048,576 entries of
// 40-byte keys and 16-byte values, full): a walk in 8192-entry batches takes 340-360 ms, about
// 0.33 us per entry, nearly all of it in the kernel's copy; a flush of one endpoint's 16,384
// entries (walk + lookup-and-delete each) 377 ms. meshd therefore never walks a whole table in one
// go on its event loop: FlushWalk and ResyncWalk below run a step at a time, and
// ConnTableWalker (conn_table_walker.h) runs one step per loop turn. Measured the same way in
// steps of 4096-entry batches and a 2 ms budget (tests/unit/meshd/conn_walk_measure.cpp): a
// recount 336-360 ms in ~129 steps, the longest 3.6 ms; a flush 377-385 ms, the longest step
// 3.8 ms; a 1 ms timer beside them ran at most 2.8 ms late.
#pragma once

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "abi.h"
#include "dataplane.h"
#include "result.h"

namespace meshpath {

// A walk of the connection table fd, a batch at a time: each next() reads one batch from where
// the last one stopped, so a walk can be spread over many turns of the event loop.
class ConnTableCursor {
 public:
  explicit ConnTableCursor(int fd, uint32_t batch = 8192) : fd_(fd), keys_(batch), values_(batch) {}

  // Calls fn(key, value) for each entry of the next batch; returns true once past the last
  // bucket (every later call then returns true at once).
  template <class Fn>
  Result<bool> next(Fn&& fn) {
    if (done_) return true;
    uint32_t count = static_cast<uint32_t>(keys_.size());
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int rc = bpf_map_lookup_batch(fd_, first_ ? nullptr : in_, out_, keys_.data(), values_.data(),
                                  &count, &opts);
    const int err = rc < 0 ? errno : 0;
    if (rc < 0 && err != ENOENT) return errnoError(-err, "walk mp_conns (lookup batch)");
    for (uint32_t i = 0; i < count; ++i) fn(keys_[i], values_[i]);
    seen_ += count;
    if (err == ENOENT) {  // past the last bucket
      done_ = true;
      return true;
    }
    std::copy(std::begin(out_), std::end(out_), std::begin(in_));
    first_ = false;
    return false;
  }

  bool done() const { return done_; }
  uint64_t seen() const { return seen_; }

 private:
  int fd_;
  std::vector<mp_flow> keys_;
  std::vector<mp_conn> values_;
  // The hash map's batch cursor is a u32 bucket index; room for more, should that ever change.
  alignas(8) unsigned char in_[sizeof(mp_flow)] = {};
  alignas(8) unsigned char out_[sizeof(mp_flow)] = {};
  bool first_ = true;
  bool done_ = false;
  uint64_t seen_ = 0;
};

// Whether a connection counts as open toward its endpoint (mp_ep_health.opened - .closed): it
// was counted when opened and its close has not completed (bpf/conn.h: RST, or FIN both ways).
inline bool connCountedOpen(uint16_t flags) {
  const bool closed =
      (flags & MP_CONN_F_RST) != 0 || (flags & (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP)) ==
                                          (MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
  return (flags & MP_CONN_F_COUNTED) != 0 && !closed;
}

// Entries per BPF_MAP_LOOKUP_BATCH in meshd's walks: ~1.3 ms of kernel copy each, so a step of a
// 2 ms budget stays near 3 ms even when it starts one batch just under budget.
constexpr uint32_t kWalkBatch = 4096;

// The walks behind Dataplane::startFlush / startResync over the XDP backend's tables: the
// connection table fd and the mapped mp_ep_health array (MP_MAX_ENDPOINTS entries, shared with
// the datapath). slotEpoch (one per endpoint id) is bumped whenever an id's health entry is
// zeroed or a flush of it begins; it must outlive the walk.

// Deletes every entry whose endpoint is in `ids`, a batch at a time.
class FlushWalk : public ConnTableWalk {
 public:
  // afterDelete runs after each batch that deleted entries: the flow cache must not go on
  // serving them (LbSkeleton::bumpForwardingGeneration).
  FlushWalk(int fd, mp_ep_health* health, std::vector<uint32_t>& slotEpoch,
            const std::set<uint32_t>& ids, std::function<void()> afterDelete = {},
            uint32_t batch = kWalkBatch);
  Result<bool> step(std::chrono::microseconds budget) override;
  const ConnWalk& result() const override { return walk_; }

 private:
  void deleteVictims();

  int fd_;
  mp_ep_health* health_;
  std::vector<uint32_t>& slotEpoch_;
  ConnTableCursor cursor_;
  std::map<uint32_t, uint32_t> ids_;  // endpoint id -> its slotEpoch when the flush began
  std::vector<mp_flow> victims_;
  std::function<void()> afterDelete_;
  ConnWalk walk_;
};

// The tables a recount walks and reaps: the established pair (mp_conns, mp_rnat) and the
// half-open forward table (mp_half, an LRU that needs no reaping: it is only counted).
struct ConnTables {
  int conns = -1;
  int rnat = -1;
  int half = -1;
  // The reverse-NAT key of an established entry (client tuple, value): endpoint -> node:port.
  // nullopt when it cannot be known (its endpoint slot was freed): the reverse entry is left to
  // a takeover, which finds its forward entry gone.
  std::function<std::optional<mp_flow>(const mp_flow&, const mp_conn&)> reverseKey;
};

// Recounts the open connections per endpoint and sets each adjust when complete. On the way it
// deletes the established entries whose lifetime ran out by `now` (the program's jiffies, taken
// when the walk begins) with their reverse-NAT entries, so their SNAT ports and table room come
// back, and counts the SNAT ports every endpoint's live flows hold, half-open ones included.
class ResyncWalk : public ConnTableWalk {
 public:
  ResyncWalk(ConnTables tables, uint64_t now, mp_ep_health* health,
             std::vector<uint32_t>& slotEpoch, uint32_t batch = kWalkBatch);
  // The recount alone, over one table (tools and tests of the walk's cost).
  ResyncWalk(int fd, mp_ep_health* health, std::vector<uint32_t>& slotEpoch,
             uint32_t batch = kWalkBatch);
  Result<bool> step(std::chrono::microseconds budget) override;
  const ConnWalk& result() const override { return walk_; }
  // Called with the complete walk, once, when the counts are applied.
  void onComplete(std::function<void(const ConnWalk&)> fn) { onComplete_ = std::move(fn); }

 private:
  void apply();
  void reapExpired();

  std::function<void(const ConnWalk&)> onComplete_;

  ConnTables tables_;
  uint64_t now_ = 0;
  bool reap_ = false;
  mp_ep_health* health_;
  std::vector<uint32_t>& slotEpoch_;
  ConnTableCursor cursor_;
  std::optional<ConnTableCursor> halfCursor_;
  std::vector<std::pair<mp_flow, mp_conn>> expired_;
  std::vector<int64_t> counted_;  // endpoint id -> open counted connections seen
  std::vector<int64_t> before_;   // endpoint id -> opened - closed when the walk began
  std::vector<uint32_t> epochs_;  // slotEpoch when the walk began
  ConnWalk walk_;
};

}  // namespace meshpath
