// datapath_stats.h — the datapath's counters for the services and endpoints of the desired state,
// each read once: packets, bytes and new connections per service and endpoint, active
// connections, SNAT ports in use against capacity, SYN protection, the exception counters, the
// flow cache and the connection tables. GET /v1/stats (api_views.cpp) and /metrics (metrics/)
// both format what readDatapathStats returns, so the two never disagree on what a number means.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "control_plane.h"
#include "dataplane.h"
#include "model.h"
#include "result.h"

namespace meshpath {

struct EndpointStats {
  const EndpointSpec* spec = nullptr;  // points into ControlPlane::desired(): until the next commit
  std::string key;                     // spec->key(), ADDRESS:PORT, formatted once per read
  uint32_t id = 0;
  Counters counters;
  std::optional<int64_t> activeConns;  // TCP connections open toward it; nullopt for UDP
  // SNAT ports its tracked connections hold, and what the node's sources and port range give it;
  // nullopt when its service does not SNAT (dnat).
  std::optional<uint64_t> snatPortsUsed;
  std::optional<uint64_t> snatCapacity;
};

struct ServiceStats {
  const ServiceSpec* spec = nullptr;  // as EndpointStats::spec
  uint32_t id = 0;
  Counters counters;
  SynStats syn;
  std::vector<EndpointStats> endpoints;  // in the spec's order
};

struct DatapathStats {
  std::vector<ServiceStats> services;  // in the desired state's order
  std::vector<uint64_t> exceptions;    // indexed by enum mp_exc_reason (mp_exc_names)
  FlowCacheStats flowCache;
  ConnTableStats connTables;
};

// Fails when any of the dataplane's reads fails (a partial answer would show counters going down).
Result<DatapathStats> readDatapathStats(ControlPlane& cp);

}  // namespace meshpath
