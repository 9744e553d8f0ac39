// fake_dataplane.h — a Dataplane that keeps its tables in memory, logs every operation, and can be
// told to fail the n-th one; for the reconciler and API tests.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "abi.h"
#include "dataplane.h"

namespace meshpath::testing {

class FakeDataplane : public Dataplane {
 public:
  // One entry of the fake connection table.
  struct Conn {
    uint32_t endpointId = 0;
    bool open = true;  // counted open toward its endpoint
    bool live = true;  // false once flushed
  };
  struct Service {
    ServiceEntry entry;
    uint32_t activeHalf = 0;
  };

  Result<void> setNode(const NodeSpec& node) override {
    if (auto r = step("setNode"); !r) return r;
    node_ = node;
    return {};
  }
  Result<void> upsertEndpoint(uint32_t id, const EndpointEntry& e) override {
    if (auto r = step("upsertEndpoint " + std::to_string(id)); !r) return r;
    if (!endpoints.contains(id)) health[id] = EndpointDatapathHealth{};
    endpoints[id] = e;
    return {};
  }
  Result<void> removeEndpoint(uint32_t id) override {
    if (auto r = step("removeEndpoint " + std::to_string(id)); !r) return r;
    endpoints.erase(id);
    health.erase(id);
    return {};
  }
  Result<void> upsertService(const ServiceEntry& s, const std::vector<uint32_t>* ring) override {
    if (auto r = step("upsertService " + std::to_string(s.id) + (ring ? " ring" : "")); !r) {
      return r;
    }
    if (ring != nullptr) {
      if (ring->size() != s.ringSize) return Error{EINVAL, "ring size", {}};
      // Every id a ring names must be a filled slot of the same service: the ordering contract.
      for (uint32_t id : *ring) {
        if (id == MP_RING_EMPTY) continue;
        auto it = endpoints.find(id);
        if (it == endpoints.end() || it->second.serviceId != s.id) {
          return Error{EINVAL, "ring names endpoint " + std::to_string(id) + " not in service", {}};
        }
      }
      rings[s.id] = *ring;
    } else if (!rings.contains(s.id)) {
      return Error{ENOENT, "no ring for service " + std::to_string(s.id), {}};
    }
    services[s.key] = s;
    return {};
  }
  Result<void> removeServiceEntry(const ServiceKey& key) override {
    if (auto r = step("removeServiceEntry " + key.toString()); !r) return r;
    services.erase(key);
    return {};
  }
  Result<void> releaseService(uint32_t id) override {
    if (auto r = step("releaseService " + std::to_string(id)); !r) return r;
    rings.erase(id);
    return {};
  }
  Result<Counters> serviceStats(uint32_t id) override { return Counters{id, id * 100, 1}; }
  Result<Counters> endpointStats(uint32_t id) override { return Counters{id, id * 10, 0}; }
  Result<std::vector<uint64_t>> exceptionCounts() override {
    return std::vector<uint64_t>(MP_EXC_MAX, 7);
  }
  Result<FlowCacheStats> flowCacheStats() override {
    return FlowCacheStats{.slots = 4, .hits = 30, .misses = 10, .conflicts = 2, .bypassed = 5};
  }
  Result<ConnTableStats> connTableStats() override { return connStats; }
  Result<SynStats> synStats(uint32_t id) override {
    if (failSynStats) return Error{EIO, "read mp_syn_guard", {}};
    auto it = syn.find(id);
    return it == syn.end() ? SynStats{} : it->second;
  }
  Result<RealizedSnapshot> snapshot() override {
    RealizedSnapshot s;
    for (const auto& [k, e] : services) s.services.push_back(e);
    for (const auto& [id, r] : rings) s.ringIds.push_back(id);
    for (const auto& [id, e] : endpoints) s.endpoints.emplace_back(id, e);
    return s;
  }
  std::vector<InterfaceStatus> interfaces() override {
    return {InterfaceStatus{"veth0", 3, true, "native", false}};
  }
  Result<ProgramInfo> program() override { return ProgramInfo{"mp_xdp_lb", "0123456789abcdef", 7}; }
  std::string pinRoot() const override { return "/sys/fs/bpf/test"; }

  // Passive health: kept in `health`, not in `log` (the ring-order tests read the log).
  Result<void> setPassiveFall(uint32_t id, uint32_t fall) override {
    health[id].fall = fall;
    return {};
  }
  Result<void> clearDown(uint32_t id) override {
    cleared.push_back(id);
    health[id].down = false;
    health[id].fails = 0;
    return {};
  }
  Result<EndpointDatapathHealth> endpointHealth(uint32_t id) override { return health[id]; }
  Result<std::unique_ptr<ConnTableWalk>> startFlush(const std::set<uint32_t>& ids) override {
    if (failWalkStart) return Error{EIO, "injected failure starting a flush", {}};
    flushed.push_back(ids);
    return std::unique_ptr<ConnTableWalk>(std::make_unique<Walk>(*this, &flushed.back()));
  }
  Result<std::unique_ptr<ConnTableWalk>> startResync() override {
    if (failWalkStart) return Error{EIO, "injected failure starting a resync", {}};
    ++resyncs;
    return std::unique_ptr<ConnTableWalk>(std::make_unique<Walk>(*this, nullptr));
  }
  int eventsFd() override { return -1; }
  Result<size_t> consumeEvents(const std::function<void(const DatapathEvent&)>& sink) override {
    auto events = std::move(pendingEvents);
    pendingEvents.clear();
    for (const DatapathEvent& e : events) sink(e);
    return events.size();
  }

  // Checks that no ring names a slot that is free or belongs to another service.
  bool consistent() const {
    for (const auto& [key, s] : services) {
      if (!rings.contains(s.id)) return false;
    }
    for (const auto& [svcId, ring] : rings) {
      for (uint32_t id : ring) {
        if (id == MP_RING_EMPTY) continue;
        auto it = endpoints.find(id);
        if (it == endpoints.end() || it->second.serviceId != svcId) return false;
      }
    }
    return true;
  }

  std::map<ServiceKey, ServiceEntry> services;
  std::map<uint32_t, std::vector<uint32_t>> rings;
  std::map<uint32_t, EndpointEntry> endpoints;
  ConnTableStats connStats;
  std::optional<NodeSpec> node_;
  std::vector<std::string> log;
  std::map<uint32_t, EndpointDatapathHealth> health;
  std::map<uint32_t, SynStats> syn;  // service id -> what synStats answers
  bool failSynStats = false;
  std::vector<uint32_t> cleared;              // clearDown calls, in order
  std::vector<std::set<uint32_t>> flushed;    // flushConnections calls
  std::vector<DatapathEvent> pendingEvents;   // handed out by the next consumeEvents
  int resyncs = 0;
  // The connection table the walks go over, `walkBatch` entries a step.
  std::vector<Conn> conns;
  size_t walkBatch = size_t{1} << 20;
  int walkSteps = 0;            // steps taken by all walks
  int failWalkStep = -1;        // fail the walk step with this index (counted over all walks)
  bool failWalkStart = false;   // startFlush / startResync fail
  std::vector<std::string> walkLog;  // "flush 3 4: step", "resync: done", in order
  int failAt = -1;  // fail the operation with this index (counted over the fake's lifetime)
  int ops() const { return ops_; }  // operations so far: the index of the next

 private:
  // A flush (ids != nullptr) or a resync over `conns`, walkBatch entries a step. A resync's
  // counts land in health[id].activeConns when it completes.
  class Walk : public ConnTableWalk {
   public:
    Walk(FakeDataplane& dp, const std::set<uint32_t>* ids)
        : dp_(dp), ids_(ids ? std::optional(*ids) : std::nullopt) {}
    Result<bool> step(std::chrono::microseconds) override {
      if (dp_.walkSteps++ == dp_.failWalkStep) return Error{EIO, "injected walk failure", {}};
      const size_t end = std::min(pos_ + dp_.walkBatch, dp_.conns.size());
      for (; pos_ < end; ++pos_) {
        Conn& c = dp_.conns[pos_];
        if (!c.live) continue;
        ++walk_.entries;
        if (ids_) {
          if (!ids_->contains(c.endpointId)) continue;
          c.live = false;
          ++walk_.matched;
          if (c.open) ++walk_.perEndpoint[c.endpointId];
        } else if (c.open) {
          ++walk_.matched;
          ++walk_.perEndpoint[c.endpointId];
        }
      }
      const bool done = pos_ >= dp_.conns.size();
      dp_.walkLog.push_back(name() + (done ? ": done" : ": step"));
      if (done && !ids_) {
        for (const auto& [id, n] : walk_.perEndpoint) dp_.health[id].activeConns = n;
      }
      return done;
    }
    const ConnWalk& result() const override { return walk_; }

   private:
    std::string name() const {
      if (!ids_) return "resync";
      std::string s = "flush";
      for (uint32_t id : *ids_) s += " " + std::to_string(id);
      return s;
    }
    FakeDataplane& dp_;
    std::optional<std::set<uint32_t>> ids_;
    size_t pos_ = 0;
    ConnWalk walk_;
  };

  Result<void> step(const std::string& what) {
    int index = ops_++;
    if (index == failAt) return Error{EIO, "injected failure at " + what, {}};
    log.push_back(what);
    return {};
  }
  int ops_ = 0;
};

}  // namespace meshpath::testing
