// state_store.h — the state file (node.state_file): the desired state meshd last realized and the
// ids it handed out, so a restarted meshd (even after kill -9) shows and keeps exactly that.
// Written after every successful change, atomically (temporary file, fsync, rename).
#pragma once

#include <optional>
#include <string>

#include "model.h"
#include "reconciler.h"
#include "result.h"

namespace meshpath {

struct SavedState {
  DesiredState desired;
  IdAssignments ids;
};

class StateStore {
 public:
  explicit StateStore(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  bool exists() const;
  // nullopt when there is no state file; an error when there is one that cannot be read.
  Result<std::optional<SavedState>> load() const;
  Result<void> save(const DesiredState& desired, const IdAssignments& ids) const;
  Result<void> remove() const;

 private:
  std::string path_;
};

// The JSON form of a SavedState (exposed for tests).
std::string serializeState(const DesiredState& desired, const IdAssignments& ids);
SavedState parseState(const std::string& text);  // throws std::exception on a malformed file

}  // namespace meshpath
