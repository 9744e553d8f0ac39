// conn_walk.cpp — the XDP backend's flush and recount, a step at a time.
#include "conn_walk.h"

#include <algorithm>

namespace meshpath {

namespace {

int64_t openCount(const mp_ep_health& e) {
  return static_cast<int64_t>(__atomic_load_n(&e.opened, __ATOMIC_RELAXED) -
                              __atomic_load_n(&e.closed, __ATOMIC_RELAXED));
}

// Runs batches of a walk until `budget` is spent (at least one); `batch` returns the cursor's
// answer: true when past the last bucket.
template <class Batch>
Result<bool> stepFor(std::chrono::microseconds budget, Batch&& batch) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto done = batch();
    if (!done || *done) return done;
    if (std::chrono::steady_clock::now() - start >= budget) return false;
  }
}

}  // namespace

FlushWalk::FlushWalk(int fd, mp_ep_health* health, std::vector<uint32_t>& slotEpoch,
                     const std::set<uint32_t>& ids, std::function<void()> afterDelete,
                     uint32_t batch)
    : fd_(fd),
      health_(health),
      slotEpoch_(slotEpoch),
      cursor_(fd, batch),
      afterDelete_(std::move(afterDelete)) {
  for (uint32_t id : ids) {
    if (id >= MP_MAX_ENDPOINTS) continue;
    // A resync running meanwhile leaves this endpoint's count to us (ResyncWalk).
    ids_[id] = ++slotEpoch_[id];
  }
}

Result<bool> FlushWalk::step(std::chrono::microseconds budget) {
  return stepFor(budget, [&]() -> Result<bool> {
    // A slot freed (and perhaps taken by another endpoint) since the flush began is no longer
    // the ejected endpoint's: leave whatever it has now alone.
    std::erase_if(ids_, [&](const auto& kv) { return slotEpoch_[kv.first] != kv.second; });
    victims_.clear();
    auto done = cursor_.next([&](const mp_flow& key, const mp_conn& value) {
      if (ids_.contains(value.ep_id)) victims_.push_back(key);
    });
    if (!done) return done;
    walk_.entries = cursor_.seen();
    deleteVictims();
    return done;
  });
}

void FlushWalk::deleteVictims() {
  const uint64_t matchedBefore = walk_.matched;
  for (const mp_flow& key : victims_) {
    // Lookup-and-delete answers with the value as it was when it went, so a connection that
    // closed after the batch was read is not subtracted twice (its close was counted in
    // .closed). Deleting behind the cursor is safe: it is a bucket index (conn_walk.h).
    mp_conn gone{};
    if (bpf_map_lookup_and_delete_elem(fd_, &key, &gone) != 0) continue;  // evicted meanwhile
    if (!ids_.contains(gone.ep_id)) {
      // The client reused the 5-tuple toward another endpoint since the read: put it back.
      bpf_map_update_elem(fd_, &key, &gone, BPF_NOEXIST);
      continue;
    }
    ++walk_.matched;
    if (connCountedOpen(gone.flags)) {
      // Never counted closed now: take it off the endpoint's active count.
      if (health_ != nullptr && gone.ep_id < MP_MAX_ENDPOINTS) {
        __atomic_fetch_sub(&health_[gone.ep_id].adjust, int64_t{1}, __ATOMIC_SEQ_CST);
      }
      ++walk_.perEndpoint[gone.ep_id];
    }
  }
  if (walk_.matched != matchedBefore && afterDelete_) afterDelete_();
}

Result<bool> ResyncWalk::step(std::chrono::microseconds budget) {
  auto done = stepFor(budget, [&]() -> Result<bool> {
    if (!cursor_.done()) {
      expired_.clear();
      auto d = cursor_.next([&](const mp_flow& key, const mp_conn& value) {
        if (reap_ && now_ >= value.expires) {
          expired_.emplace_back(key, value);
          return;
        }
        if (value.ep_id >= MP_MAX_ENDPOINTS) return;
        if (value.snat_addr != MP_SNAT_NONE) ++walk_.snatPorts[value.ep_id];
        if (connCountedOpen(value.flags)) {
          ++counted_[value.ep_id];
          ++walk_.matched;
        }
      });
      if (!d) return d;
      reapExpired();
      if (!*d || !halfCursor_) return *d;
    }
    // The half-open table: counted (the ports its flows hold), never reaped here: it is an LRU,
    // and an expired half-open flow's port is taken over by the next flow that wants it.
    return halfCursor_->next([&](const mp_flow&, const mp_conn& value) {
      if (value.ep_id >= MP_MAX_ENDPOINTS) return;
      ++walk_.halfOpen;
      if (now_ < value.expires && value.snat_addr != MP_SNAT_NONE) ++walk_.snatPorts[value.ep_id];
    });
  });
  walk_.entries = cursor_.seen() + (halfCursor_ ? halfCursor_->seen() : 0);
  if (done && *done) apply();
  return done;
}

// Deletes the batch's expired entries. Lookup-and-delete returns the entry as it went: one the
// datapath refreshed since the batch was read goes back (BPF_NOEXIST: unless the client opened it
// anew meanwhile). Its reverse entry goes only while it still restores this client tuple.
void ResyncWalk::reapExpired() {
  for (const auto& [key, seen] : expired_) {
    mp_conn gone{};
    if (bpf_map_lookup_and_delete_elem(tables_.conns, &key, &gone) != 0) continue;
    if (now_ < gone.expires) {
      bpf_map_update_elem(tables_.conns, &key, &gone, BPF_NOEXIST);
      if (gone.ep_id < MP_MAX_ENDPOINTS && gone.snat_addr != MP_SNAT_NONE) {
        ++walk_.snatPorts[gone.ep_id];
      }
      if (gone.ep_id < MP_MAX_ENDPOINTS && connCountedOpen(gone.flags)) ++counted_[gone.ep_id];
      continue;
    }
    ++walk_.expired;
    std::optional<mp_flow> rkey = tables_.reverseKey ? tables_.reverseKey(key, gone) : std::nullopt;
    if (!rkey) continue;
    mp_rnat r{};
    if (bpf_map_lookup_elem(tables_.rnat, &*rkey, &r) != 0) continue;
    const bool restoresIt = std::equal(r.client, r.client + 16, key.src) &&
                            std::equal(r.vip, r.vip + 16, key.dst) && r.client_port == key.sport &&
                            r.vip_port == key.dport && r.ep_id == gone.ep_id;
    if (restoresIt) bpf_map_delete_elem(tables_.rnat, &*rkey);
  }
}

// adjust = what the table holds - what the counters say. The walk sees each bucket at a
// different time, so a connection opened or closed while it runs is in the table count or not
// depending on whether its bucket was passed yet; the counters change all along. meshd walks in
// steps between other work, so the walk lasts at least the 0.35 s of a full table and longer
// when the loop is busy or a flush preempts it (another ~0.4 s). Reading the counters only at
// the end (as the one-piece walk did) misses every change in buckets already passed: a net
// growth of D connections during the walk left the count low by ~D/2 until the next resync.
// So the counters are read at both ends and the walk compared with their mean: with changes
// spread evenly over the buckets (hashing) and over the walk, the passed and unpassed halves
// cancel and the expected error is 0; in the worst case (all changes in one half) it is half
// the endpoint's opens + closes during the walk (against all of them before). Either way it does
// not add up: the next resync (10 s later) computes adjust afresh from the table.
void ResyncWalk::apply() {
  for (uint32_t id = 0; id < MP_MAX_ENDPOINTS; ++id) {
    if (counted_[id] != 0) walk_.perEndpoint[id] = counted_[id];
    // Flushed since the walk began (the flush keeps its count right), or freed and zeroed:
    // what the walk counted for it is stale.
    if (slotEpoch_[id] != epochs_[id]) continue;
    mp_ep_health* e = &health_[id];
    const int64_t want = counted_[id] - (before_[id] + openCount(*e)) / 2;
    if (__atomic_load_n(&e->adjust, __ATOMIC_RELAXED) != want) {
      __atomic_store_n(&e->adjust, want, __ATOMIC_SEQ_CST);
    }
  }
  if (onComplete_) onComplete_(walk_);
}

ResyncWalk::ResyncWalk(ConnTables tables, uint64_t now, mp_ep_health* health,
                       std::vector<uint32_t>& slotEpoch, uint32_t batch)
    : ResyncWalk(tables.conns, health, slotEpoch, batch) {
  tables_ = std::move(tables);
  now_ = now;
  reap_ = true;
  if (tables_.half >= 0) halfCursor_.emplace(tables_.half, batch);
}

ResyncWalk::ResyncWalk(int fd, mp_ep_health* health, std::vector<uint32_t>& slotEpoch,
                       uint32_t batch)
    : health_(health),
      slotEpoch_(slotEpoch),
      cursor_(fd, batch),
      counted_(MP_MAX_ENDPOINTS, 0),
      before_(MP_MAX_ENDPOINTS, 0),
      epochs_(slotEpoch) {
  for (uint32_t id = 0; id < MP_MAX_ENDPOINTS; ++id) before_[id] = openCount(health_[id]);
}

}  // namespace meshpath
