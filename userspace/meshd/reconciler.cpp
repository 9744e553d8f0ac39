#include "reconciler.h"

#include <algorithm>
#include <cerrno>

#include "abi.h"
#include "ring.h"

namespace meshpath {

std::string ServiceKey::toString() const {
  std::string addr = vip.isV6() ? "[" + vip.toString() + "]" : vip.toString();
  return meshpath::toString(protocol) + " " + addr + ":" + std::to_string(port);
}

ServiceKey serviceKeyOf(const ServiceSpec& service) {
  return ServiceKey{service.vip, service.port, service.protocol};
}

namespace {

// Searches [0, limit) for an id that is not taken(id), starting at cursor, wrapping once.
template <class Taken>
std::optional<uint32_t> findFreeIdWhere(uint32_t cursor, uint32_t limit, Taken&& taken) {
  for (uint32_t i = 0; i < limit; ++i) {
    uint32_t id = (cursor + i) % limit;
    if (!taken(id)) return id;
  }
  return std::nullopt;
}

std::optional<uint32_t> findFreeId(uint32_t cursor, uint32_t limit,
                                   const std::set<uint32_t>& taken) {
  return findFreeIdWhere(cursor, limit, [&](uint32_t id) { return taken.contains(id); });
}

// What setNode writes: the SNAT sources and port range, the SYN flood threshold. The table sizes
// (conn_table_size, half_table_size, flow_cache_slots) are fixed when the maps are created, so they
// are not compared here: a change of them needs a restart (ControlPlane refuses node changes at
// runtime and describeNodeChanges names them; meshd logs them when it adopts an earlier run's
// maps).
bool sameNodeSettings(const NodeSpec& a, const NodeSpec& b) {
  return a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6 && a.snatPool == b.snatPool &&
         a.snatPortMin == b.snatPortMin && a.snatPortMax == b.snatPortMax &&
         a.synFloodThreshold == b.synFloodThreshold;
}

}  // namespace

Reconciler::Reconciler(Dataplane& dataplane, uint32_t maxServices, uint32_t maxEndpoints)
    : dataplane_(dataplane), maxServices_(maxServices), maxEndpoints_(maxEndpoints) {}

Reconciler::Reconciler(Dataplane& dataplane)
    : Reconciler(dataplane, MP_MAX_SERVICES, MP_MAX_ENDPOINTS) {}

void Reconciler::start(const RealizedSnapshot& snapshot, std::optional<IdAssignments> ids) {
  realizedNode_.reset();  // unknown: written again by the first apply
  realizedEntries_.clear();
  realizedRings_.clear();
  realizedEndpoints_.clear();
  realizedFall_.clear();  // unknown: set again by the first apply
  realizedServices_.clear();
  realizedExact_ = false;
  serviceHints_.clear();
  endpointHints_.clear();

  for (const ServiceEntry& entry : snapshot.services) {
    realizedEntries_[entry.key] = entry;
    serviceHints_.emplace(entry.key, entry.id);
  }
  for (uint32_t id : snapshot.ringIds) realizedRings_[id] = RealizedRing{0, std::nullopt};
  for (const auto& [id, endpoint] : snapshot.endpoints) {
    realizedEndpoints_[id] = endpoint;
    endpointHints_.emplace(std::make_tuple(endpoint.serviceId, endpoint.address, endpoint.port),
                           id);
  }
  if (ids) ids_ = std::move(*ids);
}

std::optional<uint32_t> Reconciler::serviceId(const std::string& service) const {
  auto it = ids_.services.find(service);
  if (it == ids_.services.end()) return std::nullopt;
  return it->second;
}

std::optional<uint32_t> Reconciler::endpointId(const std::string& service,
                                               const std::string& key) const {
  auto it = ids_.endpoints.find(service);
  if (it == ids_.endpoints.end()) return std::nullopt;
  auto e = it->second.find(key);
  if (e == it->second.end()) return std::nullopt;
  return e->second;
}

Result<IdAssignments> Reconciler::assignIds(const DesiredState& desired) const {
  IdAssignments next;
  next.nextServiceId = ids_.nextServiceId;
  next.nextEndpointId = ids_.nextEndpointId;

  // Ids in the dataplane right now stay off limits for new things in this round, even when they
  // are about to be freed: a new service must not inherit counters or connections of an old one.
  std::set<uint32_t> takenServices;
  std::set<uint32_t> takenEndpoints;
  for (const auto& [key, entry] : realizedEntries_) takenServices.insert(entry.id);
  for (const auto& [id, ring] : realizedRings_) takenServices.insert(id);
  for (const auto& [id, endpoint] : realizedEndpoints_) takenEndpoints.insert(id);

  // Keep what is known first, so that nothing new can take a kept id.
  std::set<uint32_t> keptServices;
  std::set<uint32_t> keptEndpoints;
  for (const ServiceSpec& service : desired.services) {
    if (auto id = serviceId(service.name)) {
      next.services[service.name] = *id;
      keptServices.insert(*id);
    }
    for (const EndpointSpec& endpoint : service.endpoints) {
      if (auto id = endpointId(service.name, endpoint.key())) {
        next.endpoints[service.name][endpoint.key()] = *id;
        keptEndpoints.insert(*id);
      }
    }
  }

  // Ids the start snapshot suggests (no state file): the same key had this id before.
  std::set<uint32_t> hinted;
  for (const ServiceSpec& service : desired.services) {
    if (next.services.contains(service.name)) continue;
    auto hint = serviceHints_.find(serviceKeyOf(service));
    if (hint == serviceHints_.end() || keptServices.contains(hint->second) ||
        hinted.contains(hint->second)) {
      continue;
    }
    next.services[service.name] = hint->second;
    hinted.insert(hint->second);
  }
  // One set for the whole round, each new id added as it is handed out (a copy per new service
  // made 10,000 new services cost seconds).
  std::set<uint32_t> takenNowServices = takenServices;
  for (const auto& [name, id] : next.services) takenNowServices.insert(id);
  for (const ServiceSpec& service : desired.services) {
    if (next.services.contains(service.name)) continue;
    auto id = findFreeId(next.nextServiceId, maxServices_, takenNowServices);
    if (!id) {
      return Error{ENOSPC, "no free service id for " + service.name,
                   "at most " + std::to_string(maxServices_) + " services"};
    }
    next.services[service.name] = *id;
    takenNowServices.insert(*id);
    next.nextServiceId = (*id + 1) % maxServices_;
  }

  std::set<uint32_t> endpointHinted;
  for (const ServiceSpec& service : desired.services) {
    uint32_t svcId = next.services.at(service.name);
    auto& ids = next.endpoints[service.name];
    for (const EndpointSpec& endpoint : service.endpoints) {
      if (ids.contains(endpoint.key())) continue;
      auto hint = endpointHints_.find(std::make_tuple(svcId, endpoint.address, endpoint.port));
      if (hint == endpointHints_.end() || keptEndpoints.contains(hint->second) ||
          endpointHinted.contains(hint->second)) {
        continue;
      }
      ids[endpoint.key()] = hint->second;
      endpointHinted.insert(hint->second);
    }
  }
  std::set<uint32_t> takenNow = takenEndpoints;
  takenNow.insert(keptEndpoints.begin(), keptEndpoints.end());
  takenNow.insert(endpointHinted.begin(), endpointHinted.end());
  for (const ServiceSpec& service : desired.services) {
    auto& ids = next.endpoints[service.name];
    for (const EndpointSpec& endpoint : service.endpoints) {
      if (ids.contains(endpoint.key())) continue;
      auto id = findFreeId(next.nextEndpointId, maxEndpoints_, takenNow);
      if (!id) {
        return Error{ENOSPC, "no free endpoint id for " + service.name + " " + endpoint.key(),
                     "at most " + std::to_string(maxEndpoints_) + " endpoints in all"};
      }
      ids[endpoint.key()] = *id;
      takenNow.insert(*id);
      next.nextEndpointId = (*id + 1) % maxEndpoints_;
    }
  }
  return next;
}

std::vector<uint32_t> Reconciler::buildRing(Algorithm algorithm,
                                            const std::vector<RingMember>& members,
                                            uint32_t ringSize) {
  ++ringsBuilt_;
  if (members.empty()) return std::vector<uint32_t>(ringSize, MP_RING_EMPTY);
  std::vector<MaglevEndpoint> input;
  input.reserve(members.size());
  for (const RingMember& m : members) input.push_back(MaglevEndpoint{m.id, m.key, m.weight});
  return buildServiceRing(algorithm, input, ringSize);
}

Result<void> Reconciler::convergeService(
    const ServiceSpec& service, const ServiceEntry& entry, const IdAssignments& ids,
    const std::map<uint32_t, std::vector<uint32_t>>& slotsOf) {
  const auto& endpointIds = ids.endpoints.at(service.name);

  // 1. New or moved endpoints get their slot before any ring can name them.
  std::set<uint32_t> wanted;
  std::vector<RingMember> members;
  for (const EndpointSpec& endpoint : service.endpoints) {
    uint32_t id = endpointIds.at(endpoint.key());
    wanted.insert(id);
    EndpointEntry want{endpoint.address, endpoint.port, entry.id};
    auto it = realizedEndpoints_.find(id);
    if (it == realizedEndpoints_.end() || !(it->second == want)) {
      if (auto r = dataplane_.upsertEndpoint(id, want); !r) return r;
      realizedEndpoints_[id] = want;
      realizedFall_.erase(id);  // a slot filled anew starts with a zeroed health entry
    }
    // Before any ring names it, so passive detection covers its first flows.
    const uint32_t fall = service.health.passiveFall;
    if (auto f = realizedFall_.find(id); f == realizedFall_.end() || f->second != fall) {
      if (auto r = dataplane_.setPassiveFall(id, fall); !r) return r;
      realizedFall_[id] = fall;
    }
    // Weight 0 drains: the slot stays (established flows keep going), the ring leaves it out.
    // Health ejections do the same without touching the weight the user gave.
    if (endpoint.weight > 0 && !isExcluded(service.name, endpoint.key()))
      members.push_back(RingMember{endpoint.key(), endpoint.weight, id});
  }
  // Sorted by key, so the ring depends on the endpoint set only, not on the order it was written
  // in: every node builds the same ring from the same set.
  std::sort(members.begin(), members.end(),
            [](const RingMember& a, const RingMember& b) { return a.key < b.key; });

  // 2. The ring, if its inputs changed, then the entry (one update flips to the new ring).
  auto ring = realizedRings_.find(entry.id);
  bool ringCurrent = ring != realizedRings_.end() && ring->second.ringSize == entry.ringSize &&
                     ring->second.members && *ring->second.members == members &&
                     ring->second.algorithm == entry.algorithm;
  auto current = realizedEntries_.find(entry.key);
  bool entryCurrent = current != realizedEntries_.end() && current->second == entry;
  if (!ringCurrent) {
    std::vector<uint32_t> slots = buildRing(entry.algorithm, members, entry.ringSize);
    if (auto r = dataplane_.upsertService(entry, &slots); !r) return r;
    realizedRings_[entry.id] = RealizedRing{entry.ringSize, members, entry.algorithm};
    realizedEntries_[entry.key] = entry;
  } else if (!entryCurrent) {
    if (auto r = dataplane_.upsertService(entry, nullptr); !r) return r;
    realizedEntries_[entry.key] = entry;
  }

  // 3. Endpoints that left the service: no ring names them any more, free their slots.
  // Slots filled during this converge are all in `wanted`, so the ones held at its start are
  // the only candidates.
  std::vector<uint32_t> gone;
  if (auto held = slotsOf.find(entry.id); held != slotsOf.end()) {
    for (uint32_t id : held->second) {
      auto it = realizedEndpoints_.find(id);
      if (it != realizedEndpoints_.end() && it->second.serviceId == entry.id &&
          !wanted.contains(id)) {
        gone.push_back(id);
      }
    }
  }
  for (uint32_t id : gone) {
    if (auto r = dataplane_.removeEndpoint(id); !r) return r;
    realizedEndpoints_.erase(id);
    realizedFall_.erase(id);
  }
  return {};
}

ServiceEntry Reconciler::entryFor(const NodeSpec& node, const ServiceSpec& service,
                                  const IdAssignments& ids) {
  // A change of timeouts or SYN protection alone changes only the entry: convergeService
  // re-publishes it without rebuilding the ring.
  return ServiceEntry{serviceKeyOf(service),
                      ids.services.at(service.name),
                      ringSizeFor(node.ringSize, service.endpoints.size()),
                      service.algorithm,
                      service.forwarding,
                      service.timeouts,
                      effectiveSynProtection(service),
                      service.protocol == Protocol::kTcp ? service.connectRetries : 0};
}

Result<void> Reconciler::converge(const DesiredState& desired, const IdAssignments& ids) {
  // When the last converge left the dataplane exactly as desired_ and `desired` has its shape
  // (same services, keys and endpoints), nothing can be stale: no sweep, and the services the
  // change does not touch are passed over (serviceRealized), so one endpoint's weight costs its
  // own service only.
  const bool sweep = !(realizedExact_ && sameShapeAsApplied(desired));
  realizedExact_ = false;  // until this converge has finished
  if (sweep) {
    if (auto r = sweepStaleEntries(desired); !r) return r;
  }

  if (!realizedNode_ || !sameNodeSettings(*realizedNode_, desired.node)) {
    if (auto r = dataplane_.setNode(desired.node); !r) return r;
    realizedNode_ = desired.node;
  }

  std::map<uint32_t, std::vector<uint32_t>> slotsOf;
  if (sweep) {
    for (const auto& [id, endpoint] : realizedEndpoints_) {
      slotsOf[endpoint.serviceId].push_back(id);
    }
  }
  for (const ServiceSpec& service : desired.services) {
    if (auto r = realizeService(desired.node, service, ids, slotsOf); !r) return r;
  }
  if (auto r = dataplane_.flush(); !r) return r;
  if (sweep) {
    if (auto r = sweepStaleSlots(ids); !r) return r;
    std::erase_if(realizedServices_,
                  [&](const auto& kv) { return !ids.services.contains(kv.first); });
  }
  realizedExact_ = true;
  return {};
}

Result<void> Reconciler::realizeService(const NodeSpec& node, const ServiceSpec& service,
                                        const IdAssignments& ids,
                                        const std::map<uint32_t, std::vector<uint32_t>>& slotsOf) {
  const ServiceEntry entry = entryFor(node, service, ids);
  if (serviceRealized(service, entry, ids)) return {};
  realizedServices_.erase(service.name);  // until it is realized again
  if (auto r = convergeService(service, entry, ids, slotsOf); !r) return r;
  auto excluded = excluded_.find(service.name);
  realizedServices_[service.name] = RealizedService{
      service, entry, excluded != excluded_.end() ? excluded->second : std::set<std::string>{},
      ids.endpoints.at(service.name)};
  return {};
}

Result<void> Reconciler::sweepStaleEntries(const DesiredState& desired) {
  // Removed services stop first: their VIPs go back to the kernel before anything is freed.
  std::set<ServiceKey> keys;
  for (const ServiceSpec& service : desired.services) keys.insert(serviceKeyOf(service));
  std::vector<ServiceKey> staleKeys;
  for (const auto& [key, entry] : realizedEntries_) {
    if (!keys.contains(key)) staleKeys.push_back(key);
  }
  for (const ServiceKey& key : staleKeys) {
    if (auto r = dataplane_.removeServiceEntry(key); !r) return r;
    realizedEntries_.erase(key);
  }
  return {};
}

Result<void> Reconciler::sweepStaleSlots(const IdAssignments& ids) {
  // Rings of ids no service uses now, then endpoint slots no service names.
  std::set<uint32_t> serviceIds;
  std::set<uint32_t> endpointIds;
  for (const auto& [name, id] : ids.services) serviceIds.insert(id);
  for (const auto& [name, endpoints] : ids.endpoints) {
    for (const auto& [key, id] : endpoints) endpointIds.insert(id);
  }
  std::vector<uint32_t> staleRings;
  for (const auto& [id, ring] : realizedRings_) {
    if (!serviceIds.contains(id)) staleRings.push_back(id);
  }
  for (uint32_t id : staleRings) {
    if (auto r = dataplane_.releaseService(id); !r) return r;
    realizedRings_.erase(id);
  }
  std::vector<uint32_t> staleEndpoints;
  for (const auto& [id, endpoint] : realizedEndpoints_) {
    if (!endpointIds.contains(id)) staleEndpoints.push_back(id);
  }
  for (uint32_t id : staleEndpoints) {
    if (auto r = dataplane_.removeEndpoint(id); !r) return r;
    realizedEndpoints_.erase(id);
    realizedFall_.erase(id);
  }
  return {};
}

bool Reconciler::serviceRealized(const ServiceSpec& service, const ServiceEntry& entry,
                                 const IdAssignments& ids) const {
  auto it = realizedServices_.find(service.name);
  if (it == realizedServices_.end()) return false;
  const RealizedService& done = it->second;
  if (!(done.entry == entry) || !(done.spec == service)) return false;
  auto excluded = excluded_.find(service.name);
  if (excluded == excluded_.end() ? !done.excluded.empty() : done.excluded != excluded->second) {
    return false;
  }
  if (done.endpointIds != ids.endpoints.at(service.name)) return false;
  // And the dataplane still holds what it was given (nothing since replaced or released it).
  auto current = realizedEntries_.find(entry.key);
  auto ring = realizedRings_.find(entry.id);
  return current != realizedEntries_.end() && current->second == entry &&
         ring != realizedRings_.end() && ring->second.members &&
         ring->second.ringSize == entry.ringSize;
}

bool Reconciler::sameShapeAsApplied(const DesiredState& desired) const {
  return applied_ &&
         std::equal(desired.services.begin(), desired.services.end(), desired_.services.begin(),
                    desired_.services.end(), [](const ServiceSpec& a, const ServiceSpec& b) {
                      return a.name == b.name && a.vip == b.vip && a.port == b.port &&
                             a.protocol == b.protocol && sameEndpoints(a, b);
                    });
}

bool Reconciler::isExcluded(const std::string& service, const std::string& key) const {
  auto it = excluded_.find(service);
  return it != excluded_.end() && it->second.contains(key);
}

Result<void> Reconciler::setExcluded(std::map<std::string, std::set<std::string>> excluded) {
  std::erase_if(excluded, [](const auto& kv) { return kv.second.empty(); });
  if (excluded == excluded_) return {};
  auto previous = std::move(excluded_);
  excluded_ = std::move(excluded);
  if (!applied_) return {};
  if (auto r = converge(desired_, ids_); !r) {
    excluded_ = std::move(previous);
    if (auto back = converge(desired_, ids_); !back) {
      Error e = r.error();
      e.hint = "putting the rings back failed too (" + back.error().toString() + ")";
      return e;
    }
    return r;
  }
  return {};
}

Result<ApplyReport> Reconciler::apply(const DesiredState& desired) {
  // Weights, health, timeouts and the like leave every id as it is (and cost no id search).
  std::optional<IdAssignments> assigned;
  if (!sameShapeAsApplied(desired)) {
    auto r = assignIds(desired);
    if (!r) return r.error();
    assigned = std::move(*r);
  }
  const IdAssignments& ids = assigned ? *assigned : ids_;

  if (auto r = converge(desired, ids); !r) {
    Error error = r.error();
    if (applied_) {
      // Back to what was realized before; the ids of the old state are all still reserved.
      if (auto back = converge(desired_, ids_); !back) {
        error.hint = "rollback to the previous state failed too (" + back.error().toString() +
                     "); the dataplane may hold part of the change: apply again or restart meshd";
      }
    }
    return error;
  }

  ApplyReport report;
  std::map<std::string, const ServiceSpec*> before;
  for (const ServiceSpec& s : desired_.services) before[s.name] = &s;
  std::set<std::string> names;
  for (const ServiceSpec& s : desired.services) {
    names.insert(s.name);
    auto it = before.find(s.name);
    if (it == before.end()) {
      report.added.push_back(s.name);
    } else if (!(*it->second == s)) {
      report.changed.push_back(s.name);
    }
  }
  for (const ServiceSpec& s : desired_.services) {
    if (!names.contains(s.name)) report.removed.push_back(s.name);
  }

  desired_ = desired;
  if (assigned) ids_ = std::move(*assigned);
  applied_ = true;
  index_.rebuild(desired_.services);
  serviceHints_.clear();
  endpointHints_.clear();
  return report;
}

Result<ApplyReport> Reconciler::applyChanges(const ServiceChanges& changes) {
  if (!applied_ || !realizedExact_) {
    DesiredState next = desired_;
    meshpath::applyChanges(next.services, changes);
    return apply(next);
  }
  uint32_t nextService = ids_.nextServiceId;
  uint32_t nextEndpoint = ids_.nextEndpointId;
  auto touched = assignIdsOf(changes, nextService, nextEndpoint);
  if (!touched) return touched.error();
  realizedExact_ = false;  // until the change has been made
  if (auto r = convergeChanges(changes, *touched); !r) {
    Error error = r.error();
    // Back to desired_ as a whole: the ids handed out for the change are swept.
    if (auto back = converge(desired_, ids_); !back) {
      error.hint = "rollback to the previous state failed too (" + back.error().toString() +
                   "); the dataplane may hold part of the change: apply again or restart meshd";
    }
    return error;
  }
  realizedExact_ = true;
  ids_.nextServiceId = nextService;
  ids_.nextEndpointId = nextEndpoint;
  return commitChanges(changes, std::move(*touched));
}

Result<IdAssignments> Reconciler::assignIdsOf(const ServiceChanges& changes, uint32_t& nextService,
                                              uint32_t& nextEndpoint) const {
  // After a finished converge every id of ids_ has its ring and slots, so "held by the dataplane
  // or handed out in this round" covers every id in use, the ones about to be freed included (a
  // new service must not inherit counters or connections of an old one).
  IdAssignments touched;
  std::set<uint32_t> newServices;
  std::set<uint32_t> newEndpoints;
  for (const ServiceSpec& service : changes.put) {
    uint32_t serviceId = 0;
    if (auto id = this->serviceId(service.name)) {
      serviceId = *id;
    } else {
      auto free = findFreeIdWhere(nextService, maxServices_, [&](uint32_t id) {
        return realizedRings_.contains(id) || newServices.contains(id);
      });
      if (!free) {
        return Error{ENOSPC, "no free service id for " + service.name,
                     "at most " + std::to_string(maxServices_) + " services"};
      }
      serviceId = *free;
      newServices.insert(serviceId);
      nextService = (serviceId + 1) % maxServices_;
    }
    touched.services[service.name] = serviceId;
    auto& ids = touched.endpoints[service.name];
    for (const EndpointSpec& endpoint : service.endpoints) {
      if (auto id = endpointId(service.name, endpoint.key())) {
        ids[endpoint.key()] = *id;
        continue;
      }
      auto free = findFreeIdWhere(nextEndpoint, maxEndpoints_, [&](uint32_t id) {
        return realizedEndpoints_.contains(id) || newEndpoints.contains(id);
      });
      if (!free) {
        return Error{ENOSPC, "no free endpoint id for " + service.name + " " + endpoint.key(),
                     "at most " + std::to_string(maxEndpoints_) + " endpoints in all"};
      }
      ids[endpoint.key()] = *free;
      newEndpoints.insert(*free);
      nextEndpoint = (*free + 1) % maxEndpoints_;
    }
  }
  return touched;
}

Result<void> Reconciler::convergeChanges(const ServiceChanges& changes,
                                         const IdAssignments& touched) {
  // 1. Entries that go first, as sweepStaleEntries does: the VIPs of removed services, and the
  // old key of a service put with another VIP, port or protocol.
  auto dropEntry = [&](const std::string& name, const ServiceKey* keeping) -> Result<void> {
    auto done = realizedServices_.find(name);
    if (done == realizedServices_.end()) return {};
    const ServiceKey key = done->second.entry.key;
    if (keeping != nullptr && *keeping == key) return {};
    if (auto r = dataplane_.removeServiceEntry(key); !r) return r;
    realizedEntries_.erase(key);
    return {};
  };
  for (const std::string& name : changes.removed) {
    if (auto r = dropEntry(name, nullptr); !r) return r;
  }
  for (const ServiceSpec& service : changes.put) {
    const ServiceKey key = serviceKeyOf(service);
    if (auto r = dropEntry(service.name, &key); !r) return r;
  }

  // 2. The services put, each as converge does it; slotsOf: the slots each held before.
  std::map<uint32_t, std::vector<uint32_t>> slotsOf;
  for (const ServiceSpec& service : changes.put) {
    auto held = ids_.endpoints.find(service.name);
    if (held == ids_.endpoints.end()) continue;
    auto& slots = slotsOf[touched.services.at(service.name)];
    for (const auto& [key, id] : held->second) slots.push_back(id);
  }
  for (const ServiceSpec& service : changes.put) {
    if (auto r = realizeService(desired_.node, service, touched, slotsOf); !r) return r;
  }
  if (auto r = dataplane_.flush(); !r) return r;

  // 3. The removed services' rings, then their slots, as sweepStaleSlots does.
  for (const std::string& name : changes.removed) {
    auto id = serviceId(name);
    if (!id) continue;
    if (realizedRings_.contains(*id)) {
      if (auto r = dataplane_.releaseService(*id); !r) return r;
      realizedRings_.erase(*id);
    }
    if (auto held = ids_.endpoints.find(name); held != ids_.endpoints.end()) {
      for (const auto& [key, slot] : held->second) {
        auto it = realizedEndpoints_.find(slot);
        if (it == realizedEndpoints_.end() || it->second.serviceId != *id) continue;
        if (auto r = dataplane_.removeEndpoint(slot); !r) return r;
        realizedEndpoints_.erase(it);
        realizedFall_.erase(slot);
      }
    }
    realizedServices_.erase(name);
  }
  return {};
}

ApplyReport Reconciler::commitChanges(const ServiceChanges& changes, IdAssignments touched) {
  // Every service named leaves the index before any takes its place: a change may hand one
  // service's VIP to another.
  for (const std::string& name : changes.removed) {
    ids_.services.erase(name);
    ids_.endpoints.erase(name);
    index_.remove(name);
  }
  for (const ServiceSpec& service : changes.put) index_.remove(service.name);
  for (const ServiceSpec& service : changes.put) {
    ids_.services[service.name] = touched.services.at(service.name);
    ids_.endpoints[service.name] = std::move(touched.endpoints.at(service.name));
    index_.add(service);
  }
  return meshpath::applyChanges(desired_.services, changes);
}

}  // namespace meshpath
