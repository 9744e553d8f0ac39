// control_plane.h — every change to the desired state goes through here, whatever its source (the
// config file at start or on SIGHUP, POST /v1/apply, the REST edits): copy the state, apply the
// edit, validate, reconcile, save. A change that is refused leaves everything as it was.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dataplane.h"
#include "metrics/metrics_sink.h"
#include "model.h"
#include "reconciler.h"
#include "result.h"
#include "snat.h"
#include "state_diff.h"
#include "state_saver.h"
#include "state_store.h"

namespace meshpath {

// A refused change as the API reports it: an HTTP status and {error, hint}, plus `detail`, an
// object whose fields join the answer ("problems": every problem found, "diff": what the change
// would have done).
struct ApiError {
  int status = 500;
  std::string error;
  std::string hint;
  nlohmann::json detail = nullptr;
};

template <typename T>
using ApiResult = Result<T, ApiError>;

// What applying a config text did or, in a dry run, would do.
struct ConfigApplied {
  bool dryRun = false;
  StateDiff diff;      // the desired state before -> after (node fields too, when they differ)
  ApplyReport report;  // empty in a dry run
};

// One config_applied / config_refused event: its kind, a line for people, and the JSON fields
// (source, diff or problems) that go with it.
using ConfigEventSink = std::function<void(const std::string& kind, const std::string& message,
                                           const nlohmann::json& detail)>;

// Where the services are shared with other nodes (store_sync.h: etcd). The control plane applies
// a change asked of this node at once and hands it here to be written; the store brings everyone
// else's changes in through commitFromStore.
class SharedStore {
 public:
  virtual ~SharedStore() = default;
  // Why changes cannot be taken now (503: the store is unreachable), or nullopt.
  virtual std::optional<ApiError> refuseWrites() const = 0;
  // Queues the change `before` -> `after`; a ticket for whenWritten.
  virtual uint64_t publish(const std::vector<ServiceSpec>& before,
                           const std::vector<ServiceSpec>& after) = 0;
  // `done` runs on the event loop once the change is in the store (nullopt) or was refused
  // (the error; the node is back on the store's state by then).
  virtual void whenWritten(uint64_t ticket, std::function<void(std::optional<ApiError>)> done) = 0;
  virtual nlohmann::json statusJson() const = 0;  // /v1/status "store"
  // This node's own health verdicts (service -> endpoint keys its checks take out), for the
  // other nodes to count (docs/etcd.md, "Health across nodes").
  virtual void publishVerdicts(const std::map<std::string, std::set<std::string>>& own) = 0;
};

// How many live nodes (this one included) see an endpoint failing, and what that does here.
struct MeshVerdict {
  std::string service;
  std::string endpoint;
  size_t failing = 0;     // nodes whose own checks take it out
  size_t nodes = 0;       // live nodes
  bool here = false;      // this node's own checks take it out
  bool meshWide = false;  // a majority: out of this node's rings whatever its own checks say
};

class ControlPlane {
 public:
  ControlPlane(Dataplane& dataplane, Reconciler& reconciler, StateStore& store,
               std::string configPath, bool adopted);

  const DesiredState& desired() const { return reconciler_.desired(); }
  const ServiceSpec* findService(const std::string& name) const;
  Reconciler& reconciler() { return reconciler_; }
  Dataplane& dataplane() { return dataplane_; }
  bool adopted() const { return adopted_; }
  // node.snat_ports: auto as meshd resolved it at start (local_ports.h), or nullopt when the
  // config gave a range. The desired node holds the resolved range; a node section applied later
  // that says auto means this same range.
  void setAutoSnatPorts(std::optional<PortRange> range) { autoSnatPorts_ = range; }
  const std::optional<PortRange>& autoSnatPorts() const { return autoSnatPorts_; }
  std::chrono::steady_clock::time_point startedAt() const { return startedAt_; }

  // Validates `next` (400), realizes it (500 when the dataplane fails), saves the state file:
  // at once, or through the saver when there is one (after the datapath has the change).
  ApiResult<ApplyReport> commit(const DesiredState& next);
  // commit() of a change of some services: validated and applied in time proportional to the
  // services it names (Reconciler::applyChanges), so one endpoint's change on a node of 10,000
  // services costs that service.
  ApiResult<ApplyReport> commit(const ServiceChanges& changes);
  // For the API's audit log: from recordTouched() on, every committed change keeps the services it
  // touched as they were before and after; takeTouchedDiff() stops and diffs them (state_diff.h).
  // A change of one service diffs one service, not two copies of the node's state.
  void recordTouched();
  StateDiff takeTouchedDiff();
  // Where changes are saved from now on, off the change's path; null: saved at once, in commit.
  // The saver copies the reconciler's state when it saves (StateSaver::setSnapshot), not per
  // change.
  void setStateSaver(StateSaver* saver);
  // Runs `done` once every change committed so far is in the state file (at once without a saver,
  // else posted to the event loop by the saver); with a shared store instead once the store has
  // the change this event-loop turn committed, or with the store's refusal (the API answers a
  // change this way).
  void afterSaved(std::function<void(std::optional<ApiError>)> done);
  // With a store (--store), changes asked of this node are also written there, and SIGHUP does
  // not reload services from the config file.
  void setSharedStore(SharedStore* store) { shared_ = store; }
  SharedStore* sharedStore() const { return shared_; }
  // The store's view of the services, committed as it is (nothing written back).
  ApiResult<ApplyReport> commitFromStore(const DesiredState& next);
  ApiResult<ApplyReport> commitFromStore(const ServiceChanges& changes);

  ApiResult<ServiceSpec> createService(const ServiceSpec& service);
  ApiResult<std::string> deleteService(const std::string& name);
  ApiResult<EndpointSpec> addEndpoint(const std::string& service, const EndpointSpec& endpoint);
  ApiResult<EndpointSpec> setEndpointWeight(const std::string& service, const IpAddress& address,
                                            uint16_t port, uint32_t weight);
  ApiResult<std::string> removeEndpoint(const std::string& service, const IpAddress& address,
                                        uint16_t port);
  // POST /v1/apply: the services of a config text replace the running ones, as one transaction:
  // everything is validated first (400 with every problem and its field path), a node section
  // that differs from the running node is refused (409, the diff naming the node fields), then
  // the whole change is reconciled or, if the dataplane fails part-way, rolled back (500). A dry
  // run stops after the checks and changes nothing. Every apply that is not a dry run logs one
  // line and emits one event (config_applied with the diff, or config_refused with the problems);
  // `source` says who asked ("POST /v1/apply", "SIGHUP").
  ApiResult<ConfigApplied> applyConfigText(const std::string& yamlText, bool dryRun = false,
                                           const std::string& source = "POST /v1/apply");
  // SIGHUP: applyConfigText on the config file meshd was started with.
  ApiResult<ConfigApplied> reloadConfigFile();
  const std::string& configPath() const { return configPath_; }
  // Where the time each change took to reach the datapath goes (/metrics); null: nowhere.
  void setMetricsSink(MetricsSink* sink) { metrics_ = sink; }
  // Where config_applied / config_refused events go (the health monitor's event list).
  void onConfigEvent(ConfigEventSink sink) { configEventSinks_.push_back(std::move(sink)); }

  // Health: which endpoints of each service the rings leave out right now (ejected, not in
  // panic). Not part of the desired state, so not saved: a restart starts everyone healthy.
  // With a store, the verdicts are also published, and an endpoint a majority of the live nodes
  // take out (mesh_quorum: majority) leaves this node's rings too (setMeshVerdicts).
  ApiResult<void> setExcluded(std::map<std::string, std::set<std::string>> excluded);
  // The other live nodes' own verdicts, from the store: node -> service -> endpoint keys.
  ApiResult<void> setMeshVerdicts(
      std::map<std::string, std::map<std::string, std::set<std::string>>> others);
  // Every endpoint at least one live node sees failing (/v1/status "store.mesh_health").
  std::vector<MeshVerdict> meshVerdicts() const;
  // Called after every commit that changed the dataplane (the health monitor follows the set of
  // services, endpoints and checks this way).
  void onCommitted(std::function<void()> listener) {
    committedListeners_.push_back(std::move(listener));
  }

 private:
  Dataplane& dataplane_;
  Reconciler& reconciler_;
  StateStore& store_;
  StateSaver* saver_ = nullptr;
  SharedStore* shared_ = nullptr;
  uint64_t unansweredTicket_ = 0;  // the store write of this turn's change, until afterSaved
  std::map<std::string, std::set<std::string>> ownExcluded_;  // this node's health verdicts
  std::map<std::string, std::map<std::string, std::set<std::string>>> othersExcluded_;
  std::map<std::string, std::set<std::string>> meshExcluded_;  // what a majority adds here
  // own + a majority's, with every service keeping at least one endpoint it would keep alone.
  ApiResult<void> applyExclusions();
  std::string configPath_;
  bool adopted_;
  std::optional<PortRange> autoSnatPorts_;
  std::chrono::steady_clock::time_point startedAt_;
  std::vector<std::function<void()>> committedListeners_;
  struct TouchedServices {
    std::map<std::string, ServiceSpec> before;                // as the first change found them
    std::map<std::string, std::optional<ServiceSpec>> after;  // nullopt: removed
  };
  std::optional<TouchedServices> touched_;  // while recordTouched is on
  // The services about to be replaced (their specs now, the first time each is touched), then
  // what replaced them.
  void touchBefore(const std::string& name);
  void touchAfter(const ApplyReport& report);
  std::vector<ConfigEventSink> configEventSinks_;
  MetricsSink* metrics_ = nullptr;

  // commit() without its log line (applyConfigText logs its own, with the diff).
  ApiResult<ApplyReport> realize(const DesiredState& next);
  ApiResult<ApplyReport> realize(const ServiceChanges& changes);
  // realize's tail: the reconciler's outcome logged or the change saved and announced.
  ApiResult<ApplyReport> realized(Result<ApplyReport> report);
  // commit's around the realize: the store's refusal, the write to the store, the metric and the
  // log line; `before` and `after` are the services the change touches, as writeFor takes them.
  ApiResult<ApplyReport> commitWith(const std::function<ApiResult<ApplyReport>()>& realizeIt,
                                    const std::function<std::vector<ServiceSpec>()>& before,
                                    const std::function<std::vector<ServiceSpec>()>& after);
  // The log line of a change that changed something.
  static void logApplied(const char* what, const ApplyReport& report);
  ApiError refuseConfig(const std::string& source, ApiError error);
  void emitConfigEvent(const std::string& kind, const std::string& message,
                       const nlohmann::json& detail);
};

// "ring_size 65537 -> 131071, interfaces [a] -> [a, b]"; empty when equal.
std::string describeNodeChanges(const NodeSpec& from, const NodeSpec& to);

}  // namespace meshpath
