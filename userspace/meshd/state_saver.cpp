// state_saver.cpp — the state file's writer thread; see state_saver.h.
#include "state_saver.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

namespace meshpath {

StateSaver::StateSaver(const StateStore& store, Post post)
    : store_(store), post_(std::move(post)), thread_([this] { run(); }) {}

StateSaver::~StateSaver() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

uint64_t StateSaver::submit(const DesiredState& desired, const IdAssignments& ids) {
  auto state = std::make_unique<SavedState>(SavedState{desired, ids});
  uint64_t seq = 0;
  {
    std::lock_guard lock(mu_);
    pending_ = std::move(state);  // an older pending state is superseded: never written
    seq = ++submitted_;
    pendingSeq_ = seq;
  }
  wake_.notify_one();
  return seq;
}

void StateSaver::whenSaved(uint64_t seq, std::function<void()> done) {
  {
    std::lock_guard lock(mu_);
    if (saved_ < seq) {
      waiting_.emplace(seq, std::move(done));
      return;
    }
  }
  post_(std::move(done));
}

void StateSaver::flush() {
  std::unique_lock lock(mu_);
  const uint64_t target = submitted_;
  ++flushing_;
  if (snapshot_ && saved_ < target && (pending_ == nullptr || pendingSeq_ < target)) {
    // The loop is not running (shutdown) or is this thread (tests): copy the state here.
    lock.unlock();
    takeSnapshot();
    lock.lock();
  }
  wake_.notify_all();
  idle_.wait(lock, [&] { return saved_ >= target; });
  --flushing_;
}

void StateSaver::setSnapshot(Snapshot snapshot) {
  std::lock_guard lock(mu_);
  snapshot_ = std::move(snapshot);
}

void StateSaver::setMinInterval(std::chrono::milliseconds interval) {
  std::lock_guard lock(mu_);
  minInterval_ = interval;
}

uint64_t StateSaver::submitted() const {
  std::lock_guard lock(mu_);
  return submitted_;
}

uint64_t StateSaver::saved() const {
  std::lock_guard lock(mu_);
  return saved_;
}

uint64_t StateSaver::saves() const {
  std::lock_guard lock(mu_);
  return saves_;
}

void StateSaver::run() {
  // The lowest priority: serializing 10,000 services takes ~100 ms of CPU, which on a 2-core node
  // must never delay the event loop that applies changes (it put 17 ms in the p99 of an API
  // change). Linux's nice is per thread; a failure only leaves the default.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] {
      return pending_ != nullptr || stopping_ || (snapshot_ && submitted_ > saved_ && !requested_);
    });
    if (pending_ == nullptr && stopping_) return;  // everything handed over is saved
    if (minInterval_.count() > 0 && lastSave_) {
      // Spaced out: what arrives meanwhile joins this save (flush and stop do not wait).
      wake_.wait_until(lock, *lastSave_ + minInterval_, [&] { return stopping_ || flushing_ > 0; });
    }
    if (pending_ == nullptr) {
      if (stopping_) return;
      // Changes marked, no state copied yet: the loop copies it now, once for all of them.
      requested_ = true;
      post_([this] { takeSnapshot(); });
      continue;
    }
    std::unique_ptr<SavedState> state = std::move(pending_);
    const uint64_t seq = pendingSeq_;
    lock.unlock();
    if (auto r = store_.save(state->desired, state->ids); !r) {
      spdlog::error(
          "state file not saved, a restart would forget the changes since the last "
          "save: {}",
          r.error().toString());
    }
    state.reset();
    lock.lock();
    lastSave_ = std::chrono::steady_clock::now();
    saved_ = std::max(saved_, seq);
    ++saves_;
    // Posted before flush() can see the save done (post only queues: cheap under the lock).
    while (!waiting_.empty() && waiting_.begin()->first <= saved_) {
      post_(std::move(waiting_.begin()->second));
      waiting_.erase(waiting_.begin());
    }
    idle_.notify_all();
  }
}

void StateSaver::takeSnapshot() {
  SavedState state = snapshot_();
  {
    std::lock_guard lock(mu_);
    if (pending_ == nullptr || pendingSeq_ < submitted_) {
      pending_ = std::make_unique<SavedState>(std::move(state));
      pendingSeq_ = submitted_;
    }
    requested_ = false;
  }
  wake_.notify_all();
}

uint64_t StateSaver::markChanged() {
  uint64_t seq = 0;
  {
    std::lock_guard lock(mu_);
    seq = ++submitted_;
  }
  wake_.notify_all();
  return seq;
}

}  // namespace meshpath
