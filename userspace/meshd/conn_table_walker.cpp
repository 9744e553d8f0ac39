// conn_table_walker.cpp — one connection-table walk at a time, a step per loop turn.
#include "conn_table_walker.h"

namespace meshpath {

ConnTableWalker::ConnTableWalker(boost::asio::io_context& io, Dataplane& dataplane,
                                 std::chrono::microseconds budget)
    : dataplane_(dataplane), budget_(budget), stepTimer_(io) {}

void ConnTableWalker::flush(const std::set<uint32_t>& ids, Done done) {
  pendingIds_.insert(ids.begin(), ids.end());
  pendingFlushDone_.push_back(std::move(done));
  // A flush already running has passed part of the table: the new ids wait for the next walk.
  if (flushing()) return;
  startPendingFlush();
  if (current_ && current_->flush && current_->walk) stepCurrent();
}

void ConnTableWalker::resync(Done done) {
  if (current_ && !current_->flush) {
    current_->done.push_back(std::move(done));
    return;
  }
  if (pausedResync_) {
    pausedResync_->done.push_back(std::move(done));
    return;
  }
  if (current_) {  // a flush runs: the recount starts after it, so it does not count the flushed
    pendingResync_.push_back(std::move(done));
    return;
  }
  auto walk = dataplane_.startResync();
  if (!walk) {
    done(walk.error());
    return;
  }
  current_ = std::make_unique<Job>(Job{false, std::move(*walk), {}});
  current_->done.push_back(std::move(done));
  schedule();
}

void ConnTableWalker::stop() {
  alive_ = std::make_shared<bool>(true);  // a step already due finds its walker gone
  stepTimer_.cancel();
  scheduled_ = false;
  current_.reset();
  pausedResync_.reset();
  pendingIds_.clear();
  pendingFlushDone_.clear();
  pendingResync_.clear();
}

void ConnTableWalker::startPendingFlush() {
  if (current_ && !current_->flush) pausedResync_ = std::move(current_);
  std::set<uint32_t> ids = std::move(pendingIds_);
  std::vector<Done> done = std::move(pendingFlushDone_);
  pendingIds_.clear();
  pendingFlushDone_.clear();
  auto walk = dataplane_.startFlush(ids);
  if (!walk) {
    for (Done& d : done) d(walk.error());
    next();
    return;
  }
  current_ = std::make_unique<Job>(Job{true, std::move(*walk), std::move(done)});
}

void ConnTableWalker::stepCurrent() {
  ++steps_;
  auto done = current_->walk->step(budget_);
  if (!done) {
    finish(done.error());
  } else if (*done) {
    finish(current_->walk->result());
  } else {
    schedule();
  }
}

void ConnTableWalker::finish(const Result<ConnWalk>& result) {
  // Out of current_ first: a callback may ask for another walk.
  std::unique_ptr<Job> job = std::move(current_);
  std::weak_ptr<bool> alive = alive_;
  for (Done& d : job->done) {
    d(result);
    if (alive.expired()) return;  // stopped by a callback
  }
  next();
}

void ConnTableWalker::next() {
  if (current_) return;  // a callback started one
  if (flushWanted()) {
    startPendingFlush();
  } else if (pausedResync_) {
    current_ = std::move(pausedResync_);
  } else if (resyncWanted()) {
    std::vector<Done> done = std::move(pendingResync_);
    pendingResync_.clear();
    auto walk = dataplane_.startResync();
    if (!walk) {
      for (Done& d : done) d(walk.error());
      return;
    }
    current_ = std::make_unique<Job>(Job{false, std::move(*walk), std::move(done)});
  }
  if (current_) schedule();
}

void ConnTableWalker::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
  std::weak_ptr<bool> alive = alive_;
  // A timer due now rather than asio::post: a posted step would run again before the reactor
  // hands out the timers and sockets that came due during the last step, so a probe could wait
  // two steps; this step waits in line behind them (measured: conn_walk_measure.cpp).
  stepTimer_.expires_after(std::chrono::microseconds(0));
  stepTimer_.async_wait([this, alive](const boost::system::error_code& ec) {
    if (ec || alive.expired()) return;
    scheduled_ = false;
    if (current_) stepCurrent();
  });
}

}  // namespace meshpath
