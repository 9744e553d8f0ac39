// api_views.cpp — the JSON views of the REST API (docs/api.md, "Objects" and the GET answers).
#include "api_views.h"

#include <unistd.h>

#include <chrono>

#include "abi.h"
#include "api_json.h"
#include "datapath_stats.h"
#include "json.h"
#include "ring.h"

#ifndef MESHPATH_VERSION
#define MESHPATH_VERSION "dev"
#endif

namespace meshpath {

namespace {

using nlohmann::json;

json countersJson(const Counters& c) {
  return {{"packets", c.packets}, {"bytes", c.bytes}, {"new_conns", c.newConns}};
}

// A service's "syn_protection" in /v1/stats: its effective mode (off for UDP), whether auto has
// it on now, the counters, and the auto switch's transitions and last window.
json synProtectionJson(const ServiceSpec& s, const SynStats& st) {
  return {{"mode", toString(effectiveSynProtection(s))},
          {"active", st.active},
          {"cookies_sent", st.cookiesSent},
          {"acks_valid", st.acksValid},
          {"acks_invalid", st.acksInvalid},
          {"retries", st.retries},
          {"retries_failed", st.retriesFailed},
          {"switched_on", st.switchedOn},
          {"switched_off", st.switchedOff},
          {"unanswered_per_s", st.lastUnanswered}};
}

json optionalAddress(const std::optional<IpAddress>& ip) {
  return ip ? json(ip->toString()) : json(nullptr);
}

json connectionsJson(const ConnTableStats& c) {
  return {{"established", c.established},
          {"half_open", c.halfOpen},
          {"established_capacity", c.establishedCapacity},
          {"half_open_capacity", c.halfOpenCapacity},
          {"expired_reaped", c.expiredReaped},
          {"bytes_per_connection", c.bytesPerConnection},
          {"bytes_per_dnat_connection", c.bytesPerDnatConnection},
          {"bytes_per_half_open", c.bytesPerHalfOpen}};
}

// An Endpoint's datapath fields: "active_conns" (TCP; null for UDP) and "drain" (weight 0:
// "draining" while connections are open, "drained" when none is; null with weight > 0).
Result<void> addConnectionView(ControlPlane& cp, Protocol protocol, uint32_t id,
                               const EndpointSpec& e, json& j) {
  std::optional<int64_t> active;
  if (protocol == Protocol::kTcp) {
    auto h = cp.dataplane().endpointHealth(id);
    if (!h) return h.error();
    active = h->activeConns;
  }
  j["active_conns"] = active ? json(*active) : json(nullptr);
  if (e.weight > 0) {
    j["drain"] = nullptr;
  } else {
    // UDP has no connection count to wait for: drained as soon as the weight is 0.
    j["drain"] = active.value_or(0) > 0 ? "draining" : "drained";
  }
  return {};
}

}  // namespace

Result<json> statusView(ControlPlane& cp) {
  const DesiredState& d = cp.desired();
  json interfaces = json::array();
  for (const InterfaceStatus& i : cp.dataplane().interfaces()) {
    interfaces.push_back(
        {{"name", i.name}, {"ifindex", i.ifindex}, {"attached", i.attached}, {"mode", i.mode}});
  }
  size_t endpoints = 0;
  for (const ServiceSpec& s : d.services) endpoints += s.endpoints.size();
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                 cp.startedAt());
  json pool = json::array();
  for (const IpAddress& a : d.node.snatPool) pool.push_back(a.toString());
  json node = {{"ipv4", optionalAddress(d.node.ipv4)},
               {"ipv6", optionalAddress(d.node.ipv6)},
               {"snat_pool", std::move(pool)},
               {"snat_port_min", d.node.snatPortMin},
               {"snat_port_max", d.node.snatPortMax},
               {"snat_ports_auto", cp.autoSnatPorts().has_value()},
               {"ring_size", ringSizeJson(d.node.ringSize)},
               {"conn_table_size", d.node.connTableSize},
               {"half_table_size", d.node.halfTableSize},
               {"flow_cache_slots", d.node.flowCacheSlots},
               {"syn_flood_threshold", d.node.synFloodThreshold}};
  // The tables' fill is worth showing even when a read fails; status must answer regardless.
  auto tables = cp.dataplane().connTableStats();
  return json{{"version", MESHPATH_VERSION},
              {"pid", ::getpid()},
              {"uptime_s", uptime.count()},
              {"adopted", cp.adopted()},
              {"pin_root", cp.dataplane().pinRoot()},
              {"interfaces", interfaces},
              {"node", node},
              {"connections", tables ? connectionsJson(*tables) : json(nullptr)},
              {"services", d.services.size()},
              {"endpoints", endpoints},
              {"store", cp.sharedStore() != nullptr ? cp.sharedStore()->statusJson()
                                                    : json{{"kind", "file"}}}};
}

Result<json> statsView(ControlPlane& cp) {
  auto stats = readDatapathStats(cp);
  if (!stats) return stats.error();
  json services = json::array();
  for (const ServiceStats& s : stats->services) {
    json endpoints = json::array();
    for (const EndpointStats& e : s.endpoints) {
      json ej = countersJson(e.counters);
      ej["address"] = e.spec->address.toString();
      ej["port"] = e.spec->port;
      ej["snat_ports_used"] = e.snatPortsUsed ? json(*e.snatPortsUsed) : json(nullptr);
      ej["snat_capacity"] = e.snatCapacity ? json(*e.snatCapacity) : json(nullptr);
      endpoints.push_back(std::move(ej));
    }
    json sj = countersJson(s.counters);
    sj["name"] = s.spec->name;
    sj["syn_protection"] = synProtectionJson(*s.spec, s.syn);
    sj["endpoints"] = std::move(endpoints);
    services.push_back(std::move(sj));
  }
  json exceptions = json::object();
  for (size_t i = 0; i < MP_EXC_MAX && i < stats->exceptions.size(); ++i) {
    exceptions[mp_exc_names[i]] = stats->exceptions[i];
  }
  const FlowCacheStats& fc = stats->flowCache;
  const uint64_t lookups = fc.hits + fc.misses;
  json flowCache = {
      {"slots_per_cpu", fc.slots},
      {"hits", fc.hits},
      {"misses", fc.misses},
      {"conflicts", fc.conflicts},
      {"bypassed", fc.bypassed},
      {"hit_ratio", lookups != 0 ? json(static_cast<double>(fc.hits) / static_cast<double>(lookups))
                                 : json(nullptr)}};
  return json{
      {"services", services}, {"exceptions", exceptions}, {"flow_cache", std::move(flowCache)}};
}

Result<json> serviceView(ControlPlane& cp, const ServiceSpec& s) {
  json j = serviceToApiJson(s);
  uint32_t id = cp.reconciler().serviceId(s.name).value_or(0);
  j["id"] = id;
  const uint32_t ringSize = ringSizeFor(cp.desired().node.ringSize, s.endpoints.size());
  j["ring_size"] = ringSize;
  j["ring_bytes"] = ringKernelBytes(ringSize);
  auto svcStats = cp.dataplane().serviceStats(id);
  if (!svcStats) return svcStats.error();
  j["stats"] = countersJson(*svcStats);
  for (size_t i = 0; i < s.endpoints.size(); ++i) {
    uint32_t epId = cp.reconciler().endpointId(s.name, s.endpoints[i].key()).value_or(0);
    auto epStats = cp.dataplane().endpointStats(epId);
    if (!epStats) return epStats.error();
    j["endpoints"][i]["id"] = epId;
    j["endpoints"][i]["stats"] = countersJson(*epStats);
    if (auto r = addConnectionView(cp, s.protocol, epId, s.endpoints[i], j["endpoints"][i]); !r) {
      return r.error();
    }
  }
  return j;
}

Result<json> endpointView(ControlPlane& cp, const std::string& service, const EndpointSpec& e) {
  json j = endpointToApiJson(e);
  uint32_t id = cp.reconciler().endpointId(service, e.key()).value_or(0);
  j["id"] = id;
  auto stats = cp.dataplane().endpointStats(id);
  if (!stats) return stats.error();
  j["stats"] = countersJson(*stats);
  const ServiceSpec* spec = cp.findService(service);
  if (auto r = addConnectionView(cp, spec ? spec->protocol : Protocol::kTcp, id, e, j); !r) {
    return r.error();
  }
  return j;
}

json upgradeView(const UpgradeReport& r) {
  auto program = [](const ProgramInfo& p) {
    return json{{"name", p.name}, {"tag", p.tag}, {"id", p.id}};
  };
  json interfaces = json::array();
  for (const UpgradeReport::Interface& i : r.interfaces) {
    interfaces.push_back({{"name", i.name},
                          {"switched", i.switched},
                          {"error", i.error.empty() ? json(nullptr) : json(i.error)}});
  }
  json migrations = json::array();
  for (const UpgradeReport::Migration& m : r.migrations) {
    migrations.push_back({{"map", m.map},
                          {"from_version", m.fromVersion},
                          {"to_version", m.toVersion},
                          {"copied", m.copied},
                          {"changed", m.changed},
                          {"copy_ms", m.copyMs},
                          {"delta_ms", m.deltaMs}});
  }
  return json{{"complete", r.complete},
              {"from", program(r.from)},
              {"to", program(r.to)},
              {"interfaces", std::move(interfaces)},
              {"migrations", std::move(migrations)},
              {"problem", r.problem.empty() ? json(nullptr) : json(r.problem)},
              {"load_ms", r.loadMs},
              {"switch_ms", r.switchMs},
              {"total_ms", r.totalMs}};
}

}  // namespace meshpath
