// control_plane.h — every change to the desired state goes through here, whatever its source (the
// config file at start or on SIGHUP, POST /v1/apply, the REST edits): copy the state, apply the
// edit, validate, reconcile, save. A change that is refused leaves everything as it was.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dataplane.h"
#include "model.h"
#include "reconciler.h"
#include "result.h"
#include "snat.h"
#include "state_store.h"

namespace meshpath {

// A refused change as the API reports it: an HTTP status and {error, hint}.
struct ApiError {
  int status = 500;
  std::string error;
  std::string hint;
};

template <typename T>
using ApiResult = Result<T, ApiError>;

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

  // Validates `next` (400), realizes it (500 when the dataplane fails), saves the state file.
  ApiResult<ApplyReport> commit(const DesiredState& next);

  ApiResult<ServiceSpec> createService(const ServiceSpec& service);
  ApiResult<std::string> deleteService(const std::string& name);
  ApiResult<EndpointSpec> addEndpoint(const std::string& service, const EndpointSpec& endpoint);
  ApiResult<EndpointSpec> setEndpointWeight(const std::string& service, const IpAddress& address,
                                            uint16_t port, uint32_t weight);
  ApiResult<std::string> removeEndpoint(const std::string& service, const IpAddress& address,
                                        uint16_t port);
  // POST /v1/apply: the services of a config text replace the running ones. A node section, if
  // present, must equal the running node (409 otherwise: node changes need a restart).
  ApiResult<ApplyReport> applyConfigText(const std::string& yamlText);
  // SIGHUP: applyConfigText on the config file meshd was started with.
  ApiResult<ApplyReport> reloadConfigFile();

  // Health: which endpoints of each service the rings leave out right now (ejected, not in
  // panic). Not part of the desired state, so not saved: a restart starts everyone healthy.
  ApiResult<void> setExcluded(std::map<std::string, std::set<std::string>> excluded);
  // Called after every commit that changed the dataplane (the health monitor follows the set of
  // services, endpoints and checks this way).
  void onCommitted(std::function<void()> listener) {
    committedListeners_.push_back(std::move(listener));
  }

 private:
  Dataplane& dataplane_;
  Reconciler& reconciler_;
  StateStore& store_;
  std::string configPath_;
  bool adopted_;
  std::optional<PortRange> autoSnatPorts_;
  std::chrono::steady_clock::time_point startedAt_;
  std::vector<std::function<void()>> committedListeners_;
};

// "ring_size 65537 -> 131071, interfaces [a] -> [a, b]"; empty when equal.
std::string describeNodeChanges(const NodeSpec& from, const NodeSpec& to);

}  // namespace meshpath
