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

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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
  // `done` is posted once every change up to `seq` is saved or its save failed (a failure is
  // logged: the change is live, only a restart would forget it). Posted at once when it already is.
  void whenSaved(uint64_t seq, std::function<void()> done);
  // Blocks until everything submitted so far is saved (shutdown, tests).
  void flush();

  uint64_t submitted() const;
  uint64_t saved() const;  // the newest change whose save has finished
  uint64_t saves() const;  // how many times the file was written (fewer than changes in a burst)

 private:
  void run();

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
  std::multimap<uint64_t, std::function<void()>> waiting_;  // by the change they wait for
  std::thread thread_;
};

}  // namespace meshpath
