// snat_capacity.cpp — SNAT port use per endpoint, and its warnings with hysteresis.
#include "snat_capacity.h"

#include "snat.h"

namespace meshpath {

std::vector<SnatPortUse> snatPortUse(const DesiredState& desired, const IdAssignments& ids,
                                     const ConnTableStats& stats) {
  std::vector<SnatPortUse> out;
  for (const ServiceSpec& s : desired.services) {
    if (s.forwarding == ForwardingMode::kDnat) continue;  // no SNAT: nothing to run out of
    const auto svcIds = ids.endpoints.find(s.name);
    for (const EndpointSpec& e : s.endpoints) {
      SnatPortUse use{s.name, e.key(), 0, snatCapacity(desired.node, e.address.family())};
      if (svcIds != ids.endpoints.end()) {
        if (auto id = svcIds->second.find(use.endpoint); id != svcIds->second.end()) {
          if (auto n = stats.snatPortsInUse.find(id->second); n != stats.snatPortsInUse.end()) {
            use.used = n->second;
          }
        }
      }
      out.push_back(std::move(use));
    }
  }
  return out;
}

std::vector<SnatCapacityCrossing> SnatCapacityWatch::update(const std::vector<SnatPortUse>& uses) {
  std::vector<SnatCapacityCrossing> out;
  std::set<std::pair<std::string, std::string>> present;
  for (const SnatPortUse& u : uses) {
    const auto key = std::make_pair(u.service, u.endpoint);
    present.insert(key);
    if (u.capacity == 0) continue;
    const bool isHigh = high_.contains(key);
    if (!isHigh && u.used * 100 >= u.capacity * kHighPercent) {
      high_.insert(key);
      out.push_back({u, true});
    } else if (isHigh && u.used * 100 < u.capacity * kClearPercent) {
      high_.erase(key);
      out.push_back({u, false});
    }
  }
  std::erase_if(high_, [&](const auto& key) { return !present.contains(key); });
  return out;
}

}  // namespace meshpath
