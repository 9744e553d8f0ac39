// reconciler.h — turns a DesiredState into dataplane operations: gives services and endpoints
// stable ids, builds rings (ring.h: per algorithm) for the services whose endpoint set changed,
// sets each endpoint's passive-failure threshold (health.passive_fall), and orders the
// operations so traffic is never pointed at something half-made or already freed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "config.h"
#include "dataplane.h"
#include "model.h"
#include "result.h"

namespace meshpath {

// The ids handed out so far; part of the state file so a restarted meshd keeps them.
struct IdAssignments {
  std::map<std::string, uint32_t> services;  // service name -> service id
  // service name -> endpoint key ("10.0.2.11:8080") -> endpoint id
  std::map<std::string, std::map<std::string, uint32_t>> endpoints;
  // Where the next search for a free id starts. Handing ids out round-robin makes a freed id
  // come back as late as possible, so an old connection entry naming it is long gone by then.
  uint32_t nextServiceId = 0;
  uint32_t nextEndpointId = 0;

  bool operator==(const IdAssignments&) const = default;
};

class Reconciler {
 public:
  Reconciler(Dataplane& dataplane, uint32_t maxServices, uint32_t maxEndpoints);
  explicit Reconciler(Dataplane& dataplane);  // the ABI's limits

  // The starting point: what the dataplane holds (empty for a fresh start) and, when a state
  // file was found, the ids of the last run. Ids not given are matched against the snapshot at
  // the first apply (same VIP/port/protocol, same endpoint address/port), so a restart without
  // a state file still keeps established flows on their endpoints.
  void start(const RealizedSnapshot& snapshot, std::optional<IdAssignments> ids);

  // Makes the dataplane hold `desired`. The caller has validated it. On failure the reconciler
  // tries to bring the dataplane back to the previous desired state, and returns the first error
  // (with the rollback's outcome in the hint when the rollback failed too).
  Result<ApplyReport> apply(const DesiredState& desired);
  // The same for a change of some services (validated against index() by the caller), in time
  // proportional to the services it names: their ids, their rings and entries, the rings and
  // slots of the services removed, and desired() edited in place. Before the first apply, or
  // after one that did not finish, it applies the whole state instead.
  Result<ApplyReport> applyChanges(const ServiceChanges& changes);
  // The rules across services of desired() (config.h), for validateChanges.
  const ServiceIndex& index() const { return index_; }

  // Health: endpoints to leave out of the rings (service name -> endpoint keys) whatever their
  // weight; the desired state keeps the user's weights. Converges the last applied state at once
  // (only rings whose members change are rebuilt); later applies keep honouring the set.
  Result<void> setExcluded(std::map<std::string, std::set<std::string>> excluded);
  const std::map<std::string, std::set<std::string>>& excluded() const { return excluded_; }
  // Whether the ring of `service` leaves `key` out because of health (not weight).
  bool isExcluded(const std::string& service, const std::string& key) const;

  const DesiredState& desired() const { return desired_; }
  bool applied() const { return applied_; }  // desired() has been realized (and validated)
  const IdAssignments& ids() const { return ids_; }
  std::optional<uint32_t> serviceId(const std::string& service) const;
  std::optional<uint32_t> endpointId(const std::string& service, const std::string& key) const;

  uint64_t ringsBuilt() const { return ringsBuilt_; }  // how many Maglev rings were computed

 private:
  // One ring's inputs: the endpoints in rotation, sorted by key. The ring is a pure function of
  // these and M, so equal inputs mean an identical ring and no need to rewrite it.
  struct RingMember {
    std::string key;
    uint32_t weight;
    uint32_t id;
    bool operator==(const RingMember&) const = default;
  };
  struct RealizedRing {
    uint32_t ringSize = 0;
    std::optional<std::vector<RingMember>> members;  // nullopt: inherited, contents unknown
    Algorithm algorithm = Algorithm::kMaglev;        // round-robin has a ring of its own kind
  };
  // What convergeService last realized for a service, so a converge passes over the services a
  // change does not touch without formatting a key or building a ring: one endpoint's change on
  // a node of 1,000 endpoints must cost that endpoint's service, not the node.
  struct RealizedService {
    ServiceSpec spec;
    ServiceEntry entry;
    std::set<std::string> excluded;
    std::map<std::string, uint32_t> endpointIds;
    bool operator==(const RealizedService&) const = default;
  };

  Result<IdAssignments> assignIds(const DesiredState& desired) const;
  // applyChanges' ids: those of the services put only, new ones searched past every id the
  // dataplane holds now; `next*` are the cursors to keep afterwards.
  Result<IdAssignments> assignIdsOf(const ServiceChanges& changes, uint32_t& nextService,
                                    uint32_t& nextEndpoint) const;
  // applyChanges on the dataplane: entries, services put, flush, then the removed services'
  // rings and slots. Rolled back by the caller (a whole converge) when it fails.
  Result<void> convergeChanges(const ServiceChanges& changes, const IdAssignments& touched);
  // The ApplyReport of a change, and desired_ and ids_ edited to hold it.
  ApplyReport commitChanges(const ServiceChanges& changes, IdAssignments touched);
  // Whether `desired` names the same services (names, VIP, port, protocol) with the same
  // endpoints (address and port), in the same order, as the last applied state: then the ids are
  // the same (no assignIds) and nothing the dataplane holds can have become stale (no sweep).
  bool sameShapeAsApplied(const DesiredState& desired) const;
  static ServiceEntry entryFor(const NodeSpec& node, const ServiceSpec& service,
                               const IdAssignments& ids);
  // Service entries whose key no service has now (before anything is freed).
  Result<void> sweepStaleEntries(const DesiredState& desired);
  // Rings of service ids and endpoint slots that `ids` does not name any more.
  Result<void> sweepStaleSlots(const IdAssignments& ids);
  // Whether convergeService would find nothing to do for `service`.
  bool serviceRealized(const ServiceSpec& service, const ServiceEntry& entry,
                       const IdAssignments& ids) const;
  Result<void> converge(const DesiredState& desired, const IdAssignments& ids);
  // One service of a converge: passed over when serviceRealized, else convergeService and the
  // record of what it realized.
  Result<void> realizeService(const NodeSpec& node, const ServiceSpec& service,
                              const IdAssignments& ids,
                              const std::map<uint32_t, std::vector<uint32_t>>& slotsOf);
  // `slotsOf`: the endpoint ids each service id held when this converge began (so finding the
  // slots a service gave up costs its own endpoints, not every endpoint of the node).
  Result<void> convergeService(const ServiceSpec& service, const ServiceEntry& entry,
                               const IdAssignments& ids,
                               const std::map<uint32_t, std::vector<uint32_t>>& slotsOf);
  std::vector<uint32_t> buildRing(Algorithm algorithm, const std::vector<RingMember>& members,
                                  uint32_t ringSize);

  Dataplane& dataplane_;
  uint32_t maxServices_;
  uint32_t maxEndpoints_;

  DesiredState desired_;
  IdAssignments ids_;
  bool applied_ = false;  // desired_ has been realized once (so a failed apply can roll back)

  // What the dataplane holds, updated after every operation that succeeded.
  std::optional<NodeSpec> realizedNode_;
  std::map<ServiceKey, ServiceEntry> realizedEntries_;
  std::map<uint32_t, RealizedRing> realizedRings_;
  std::map<uint32_t, EndpointEntry> realizedEndpoints_;
  std::map<uint32_t, uint32_t> realizedFall_;  // endpoint id -> passive fall set in the datapath
  std::map<std::string, RealizedService> realizedServices_;  // by service name
  // The last converge finished: the dataplane holds exactly what it was asked for.
  bool realizedExact_ = false;

  // From the start snapshot, for services/endpoints whose ids the state file did not give.
  std::map<ServiceKey, uint32_t> serviceHints_;
  std::map<std::tuple<uint32_t, IpAddress, uint16_t>, uint32_t> endpointHints_;

  std::map<std::string, std::set<std::string>> excluded_;
  ServiceIndex index_;

  uint64_t ringsBuilt_ = 0;
};

ServiceKey serviceKeyOf(const ServiceSpec& service);

}  // namespace meshpath
