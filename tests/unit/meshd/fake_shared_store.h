// fake_shared_store.h — a SharedStore (control_plane.h) for tests below the store: it takes every
// write, reports a fixed status, and keeps the health verdicts it was handed.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "control_plane.h"

namespace meshpath::testing {

class FakeSharedStore : public SharedStore {
 public:
  std::optional<ApiError> refuseWrites() const override { return std::nullopt; }
  uint64_t publish(const std::vector<ServiceSpec>&, const std::vector<ServiceSpec>&) override {
    return 0;
  }
  void whenWritten(uint64_t, std::function<void(std::optional<ApiError>)> done) override {
    done(std::nullopt);
  }
  nlohmann::json statusJson() const override { return status; }
  void publishVerdicts(const std::map<std::string, std::set<std::string>>& own) override {
    published.push_back(own);
  }

  nlohmann::json status;
  std::vector<std::map<std::string, std::set<std::string>>> published;
};

}  // namespace meshpath::testing
