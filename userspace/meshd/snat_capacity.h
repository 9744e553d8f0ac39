// snat_capacity.h — each endpoint's SNAT ports in use against what the node's sources and port
// range give it (core/snat.h: sources x ports), and the watch that turns a recount's numbers into
// warnings: "high" when use reaches 80% of capacity, "ok" again only below 70%, so a count that
// hovers at the line does not warn at every recount. New flows to an endpoint whose ports are all
// held are refused by the datapath (drop_snat_exhausted); the warning comes while there is room.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "dataplane.h"
#include "model.h"
#include "reconciler.h"

namespace meshpath {

struct SnatPortUse {
  std::string service;
  std::string endpoint;   // its key, "10.0.2.11:8080"
  uint64_t used = 0;      // ports its tracked connections hold (ConnTableStats::snatPortsInUse)
  uint64_t capacity = 0;  // SNAT sources of its family x ports per source; 0: not known yet
};

// Every endpoint of `desired`, with its use from `stats` (by the endpoint's id in `ids`).
std::vector<SnatPortUse> snatPortUse(const DesiredState& desired, const IdAssignments& ids,
                                     const ConnTableStats& stats);

struct SnatCapacityCrossing {
  SnatPortUse use;
  bool high = false;  // true: reached kHighPercent; false: fell below kClearPercent
};

class SnatCapacityWatch {
 public:
  static constexpr uint64_t kHighPercent = 80;
  static constexpr uint64_t kClearPercent = 70;

  // The endpoints' use after a recount; returns each crossing once. Endpoints that are gone are
  // forgotten (an endpoint added again starts "ok").
  std::vector<SnatCapacityCrossing> update(const std::vector<SnatPortUse>& uses);
  bool high(const std::string& service, const std::string& endpoint) const {
    return high_.contains({service, endpoint});
  }

 private:
  std::set<std::pair<std::string, std::string>> high_;
};

}  // namespace meshpath
