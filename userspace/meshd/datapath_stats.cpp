// datapath_stats.cpp — one pass over the desired state reading the dataplane's counters.
#include "datapath_stats.h"

#include "snat.h"

namespace meshpath {

Result<DatapathStats> readDatapathStats(ControlPlane& cp) {
  Dataplane& dp = cp.dataplane();
  DatapathStats out;
  auto tables = dp.connTableStats();
  if (!tables) return tables.error();
  out.connTables = std::move(*tables);
  const NodeSpec& node = cp.desired().node;
  // The ids first, then every counter in one read (a batch per map on the XDP dataplane).
  std::vector<uint32_t> serviceIds;
  std::vector<uint32_t> endpointIds;
  out.services.reserve(cp.desired().services.size());
  for (const ServiceSpec& s : cp.desired().services) {
    ServiceStats& ss = out.services.emplace_back();
    ss.spec = &s;
    ss.id = cp.reconciler().serviceId(s.name).value_or(0);
    serviceIds.push_back(ss.id);
    ss.endpoints.reserve(s.endpoints.size());
    for (const EndpointSpec& e : s.endpoints) {
      EndpointStats& es = ss.endpoints.emplace_back();
      es.spec = &e;
      es.key = e.key();
      es.id = cp.reconciler().endpointId(s.name, es.key).value_or(0);
      endpointIds.push_back(es.id);
    }
  }
  auto counters = dp.readCounterSnapshot(serviceIds, endpointIds);
  if (!counters) return counters.error();
  size_t svcAt = 0;
  size_t epAt = 0;
  for (ServiceStats& ss : out.services) {
    const ServiceSpec& s = *ss.spec;
    ss.counters = counters->services[svcAt];
    ss.syn = counters->syn[svcAt];
    ++svcAt;
    for (EndpointStats& es : ss.endpoints) {
      es.counters = counters->endpoints[epAt++];
      if (s.protocol == Protocol::kTcp) {
        auto health = dp.endpointHealth(es.id);
        if (!health) return health.error();
        es.activeConns = health->activeConns;
      }
      if (s.forwarding != ForwardingMode::kDnat) {  // dnat: no SNAT, no port to run out of
        const auto used = out.connTables.snatPortsInUse.find(es.id);
        es.snatPortsUsed = used == out.connTables.snatPortsInUse.end() ? 0 : used->second;
        es.snatCapacity = snatCapacity(node, es.spec->address.family());
      }
    }
  }
  out.exceptions = std::move(counters->exceptions);
  out.flowCache = counters->flowCache;
  return out;
}

}  // namespace meshpath
