// conn_table_walker.h — runs the walks of the connection table (flushes of ejected endpoints,
// the periodic recount of active connections) on meshd's event loop a step at a time: a full
// table (1M entries) takes ~0.35 s to walk, which in one piece would hold back health probes and
// API answers that long. Each step is about `budget` of work (one or a few batches), then the
// walk yields (a timer due at once) and resumes from its cursor on a later turn.
//
// One walk runs at a time. A flush goes first: it preempts a running recount (which resumes
// afterwards, leaving the flushed endpoints' counts to the flush), and its first step runs inside
// flush() itself, so a table of up to a few thousand entries is flushed before flush() returns —
// in the same turn that ejected the endpoint, before anyone can read "ejected" from the API.
// Flushes asked for while another flush runs are merged into one that starts when it ends.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <vector>

#include "dataplane.h"

namespace meshpath {

class ConnTableWalker {
 public:
  using Done = std::function<void(const Result<ConnWalk>&)>;
  static constexpr std::chrono::microseconds kStepBudget{2000};

  ConnTableWalker(boost::asio::io_context& io, Dataplane& dataplane,
                  std::chrono::microseconds budget = kStepBudget);
  ConnTableWalker(const ConnTableWalker&) = delete;
  ConnTableWalker& operator=(const ConnTableWalker&) = delete;

  // Deletes the connections of endpoints `ids`; `done` gets the walk that did it (merged flushes
  // each get the one shared walk). May call `done` before returning.
  void flush(const std::set<uint32_t>& ids, Done done);
  // Recounts the active connections; joins the recount already running or waiting, if any.
  void resync(Done done);
  // Drops every walk, running or waiting, without calling anyone.
  void stop();

  bool idle() const { return !current_ && !pausedResync_ && !flushWanted() && !resyncWanted(); }
  bool flushing() const { return current_ && current_->flush; }
  bool resyncing() const { return (current_ && !current_->flush) || pausedResync_ != nullptr; }
  uint64_t steps() const { return steps_; }  // steps run, over the walker's lifetime

 private:
  struct Job {
    bool flush = false;
    std::unique_ptr<ConnTableWalk> walk;
    std::vector<Done> done;
  };

  bool flushWanted() const { return !pendingIds_.empty(); }
  bool resyncWanted() const { return !pendingResync_.empty(); }
  // Starts the flush of everything pending (pausing a recount) and runs its first step now.
  void startPendingFlush();
  // Runs one step of the current walk; on its end, finishes it and picks the next.
  void stepCurrent();
  void finish(const Result<ConnWalk>& result);
  void next();      // what to run once the current walk is over, flushes first
  void schedule();  // one step on a later turn

  Dataplane& dataplane_;
  std::chrono::microseconds budget_;
  boost::asio::steady_timer stepTimer_;  // due at once: the next step, behind what is ready
  std::unique_ptr<Job> current_;
  std::unique_ptr<Job> pausedResync_;  // preempted by a flush; resumes from its cursor
  std::set<uint32_t> pendingIds_;      // flushes asked for while another flush ran
  std::vector<Done> pendingFlushDone_;
  std::vector<Done> pendingResync_;  // a recount asked for while a flush ran, or none
  bool scheduled_ = false;
  uint64_t steps_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace meshpath
