// state_saver.cpp — the state file's writer thread; see state_saver.h.
#include "state_saver.h"

#include <spdlog/spdlog.h>

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
  idle_.wait(lock, [&] { return saved_ >= target; });
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
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return pending_ != nullptr || stopping_; });
    if (pending_ == nullptr) return;  // stopping, everything saved
    std::unique_ptr<SavedState> state = std::move(pending_);
    const uint64_t seq = submitted_;  // pending_ is always the newest submitted state
    lock.unlock();
    if (auto r = store_.save(state->desired, state->ids); !r) {
      spdlog::error(
          "state file not saved, a restart would forget the changes since the last "
          "save: {}",
          r.error().toString());
    }
    state.reset();
    lock.lock();
    saved_ = seq;
    ++saves_;
    // Posted before flush() can see the save done (post only queues: cheap under the lock).
    while (!waiting_.empty() && waiting_.begin()->first <= saved_) {
      post_(std::move(waiting_.begin()->second));
      waiting_.erase(waiting_.begin());
    }
    idle_.notify_all();
  }
}

}  // namespace meshpath
