// api_views.h — the JSON answers of docs/api.md built from the control plane's desired state and
// the dataplane's counters: GET /v1/status, /v1/stats, a Service, an Endpoint. Each fails only
// when the dataplane cannot be read.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "control_plane.h"
#include "dataplane.h"
#include "model.h"
#include "result.h"

namespace meshpath {

// GET /v1/status: the daemon, its interfaces, the node (SNAT sources and port range as in force)
// and the connection tables.
Result<nlohmann::json> statusView(ControlPlane& cp);

// GET /v1/stats: counters per service and endpoint (with each endpoint's SNAT ports used and
// capacity), each service's SYN protection, the datapath's exceptions, the flow cache.
Result<nlohmann::json> statsView(ControlPlane& cp);

// A Service: the spec plus its id, ring size, counters, and each endpoint's Endpoint fields.
Result<nlohmann::json> serviceView(ControlPlane& cp, const ServiceSpec& service);

// An Endpoint of `service`: the spec plus its id, counters, active connections and drain state.
Result<nlohmann::json> endpointView(ControlPlane& cp, const std::string& service,
                                    const EndpointSpec& endpoint);

// POST /v1/upgrade: the programs before and after, each interface's switch, each map migrated.
nlohmann::json upgradeView(const UpgradeReport& report);

}  // namespace meshpath
