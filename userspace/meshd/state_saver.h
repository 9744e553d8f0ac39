// state_saver.h — writes the state file off the change's path. A change reaches the datapath
// first; its state is then handed here, and a thread of its own serializes and writes it
// (StateStore::save: temporary file, fsync, rename). Changes that arrive while a save runs are
// written together by the next one (only the newest state matters), so a burst of changes costs
// one or two saves, and the event loop never waits for the disk.
//
// What a client is told stays durable: the API answers a change only once a save that holds it
// has finished (whenSaved), so an answered change survives kill -9; a change whose answer has not
// been sent yet may not.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "reconciler.h"
#include "state_store.h"

namespace meshpath {

class StateSaver {
 public:
  // Runs a callback on the owner's event loop (asio::post); the saver's thread never runs one.
  using Post = std::function<void(std::function<void()>)>;

  StateSaver(const StateStore& store, Post post);
  ~StateSaver();  // saves what was submitted, then stops
  StateSaver(const StateSaver&) = delete;
  StateSaver& operator=(const StateSaver&) = delete;

  // Queues `desired` and `ids` (copied) to be saved; returns the change's number (1, 2, ...).
  uint64_t submit(const DesiredState& desired, const IdAssignments& ids);
  // The other way to hand changes over, for large states: markChanged() copies nothing; when the
  // thread is ready to save, it posts to the loop, which copies the state once (snapshot) for
  // every change marked so far. A change costs a counter, not a copy of 10,000 endpoints.
  // flush() calls the snapshot on its own thread: call it only when the loop is not running.
  using Snapshot = std::function<SavedState()>;
  void setSnapshot(Snapshot snapshot);
  uint64_t markChanged();
  // `done` is posted once every change up to `seq` is saved or its save failed (a failure is
  // logged: the change is live, only a restart would forget it). Posted at once when it already is.
  void whenSaved(uint64_t seq, std::function<void()> done);
  // Blocks until everything submitted so far is saved (shutdown, tests); skips the interval.
  void flush();
  // Saves no more often than this (0, the default: as soon as a change comes). With --store the
  // state file is only the last known state for a start while etcd is down (etcd holds every
  // change durably), so meshd spaces saves 1 s apart there: a save of 10,000 endpoints costs
  // ~20 ms of CPU, which a stream of changes would otherwise pay each time.
  void setMinInterval(std::chrono::milliseconds interval);

  uint64_t submitted() const;
  uint64_t saved() const;  // the newest change whose save has finished
  uint64_t saves() const;  // how many times the file was written (fewer than changes in a burst)

 private:
  void run();
  void takeSnapshot();  // on the loop, or in flush()

  const StateStore& store_;
  Post post_;
  mutable std::mutex mu_;
  std::condition_variable wake_;         // the thread: something to save, or stop
  std::condition_variable idle_;         // flush(): a save finished
  std::unique_ptr<SavedState> pending_;  // the newest state not yet being written
  uint64_t submitted_ = 0;
  uint64_t saved_ = 0;
  uint64_t saves_ = 0;
  bool stopping_ = false;
  int flushing_ = 0;  // flush() calls waiting: save at once
  Snapshot snapshot_;
  uint64_t pendingSeq_ = 0;  // the newest change pending_ holds
  bool requested_ = false;   // a snapshot was posted to the loop and has not run yet
  std::chrono::milliseconds minInterval_{0};
  std::optional<std::chrono::steady_clock::time_point> lastSave_;
  std::multimap<uint64_t, std::function<void()>> waiting_;  // by the change they wait for
  std::thread thread_;
};

}  // namespace meshpath
