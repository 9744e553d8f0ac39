// json.cpp — model <-> JSON in the shapes of docs/api.md, with strict, field-naming input errors.
#include "json.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "abi.h"
#include "snat.h"

namespace meshpath {
namespace {

using nlohmann::json;

std::string dotted(const std::string& prefix, const std::string& field) {
  return prefix.empty() ? field : prefix + "." + field;
}

std::string indexed(const std::string& prefix, const std::string& field, size_t i) {
  return dotted(prefix, field) + "[" + std::to_string(i) + "]";
}

// A value as it appears in a message: its JSON text, cut short if long.
std::string show(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw JsonInputError((path.empty() ? std::string("body") : path) + ": " + what);
}

// Refuses anything but an object whose keys are all known (or ignored, for the output-only fields
// meshd adds, so a GET answer can be sent back).
void checkKeys(const json& j, const std::string& path, const std::vector<std::string>& known,
               const std::vector<std::string>& ignored = {}) {
  if (!j.is_object()) fail(path, show(j) + " is not an object");
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    if (std::find(known.begin(), known.end(), key) == known.end() &&
        std::find(ignored.begin(), ignored.end(), key) == ignored.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail(dotted(path, key), "unknown key (known: " + list + ")");
    }
  }
}

// The member, or nullptr when absent or null.
const json* member(const json& j, const std::string& key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& required(const json& j, const std::string& key, const std::string& path) {
  const json* v = member(j, key);
  if (v == nullptr) fail(dotted(path, key), "required field is missing");
  return *v;
}

std::string readString(const json& v, const std::string& path) {
  if (!v.is_string()) fail(path, show(v) + " is not a string");
  return v.get<std::string>();
}

uint64_t readNumber(const json& v, const std::string& path, uint64_t lo, uint64_t hi) {
  if (v.is_number_unsigned()) {
    const auto n = v.get<uint64_t>();
    if (n < lo || n > hi) {
      fail(path, show(v) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    }
    return n;
  }
  if (v.is_number_integer()) {  // signed, hence negative
    fail(path, show(v) + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi));
  }
  fail(path, show(v) + " is not a whole number");
}

IpAddress readAddress(const json& v, const std::string& path, int family = 0) {
  const std::string text = readString(v, path);
  const auto ip = IpAddress::parse(text);
  if (!ip) fail(path, show(v) + " is not an IP address");
  if (family == 4 && !ip->isV4()) fail(path, text + " is not an IPv4 address");
  if (family == 6 && !ip->isV6()) fail(path, text + " is not an IPv6 address");
  return *ip;
}

template <typename Enum>
Enum readEnum(const json& v, const std::string& path,
              std::optional<Enum> (*parse)(const std::string&), const std::string& choices) {
  const std::string text = readString(v, path);
  const auto value = parse(text);
  if (!value) fail(path, show(v) + " is not one of " + choices);
  return *value;
}

uint32_t readDuration(const json& v, const std::string& path, uint32_t loMs = 0,
                      uint32_t hiMs = kMaxHealthTimeMs) {
  const std::string text = readString(v, path);
  const auto ms = parseDurationMs(text);
  if (!ms) fail(path, show(v) + " is not a duration like \"100ms\", \"2s\", \"1m\" or \"3h\"");
  if (*ms < loMs || *ms > hiMs) {
    fail(path,
         show(v) + " is out of range " + formatDurationMs(loMs) + ".." + formatDurationMs(hiMs));
  }
  return static_cast<uint32_t>(*ms);
}

// node.snat_pool: addresses, or prefixes expanded to theirs (as in the config file).
std::vector<IpAddress> readSnatPool(const json& v, const std::string& path) {
  if (!v.is_array()) fail(path, show(v) + " is not an array");
  std::vector<IpAddress> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string entryPath = path + "[" + std::to_string(i) + "]";
    std::string why;
    const auto addresses = expandSnatPoolEntry(readString(v[i], entryPath), &why);
    if (!addresses) fail(entryPath, show(v[i]) + " " + why);
    out.insert(out.end(), addresses->begin(), addresses->end());
  }
  return out;
}

json optionalAddress(const std::optional<IpAddress>& ip) {
  return ip ? json(ip->toString()) : json(nullptr);
}

}  // namespace

json ringSizeJson(uint32_t nodeRingSize) {
  return nodeRingSize == 0 ? json("auto") : json(nodeRingSize);
}

json toJson(const EndpointSpec& ep) {
  return {{"address", ep.address.toString()}, {"port", ep.port}, {"weight", ep.weight}};
}

json toJson(const HealthCheckSpec& h) {
  return {
      {"type", toString(h.type)},
      {"interval", formatDurationMs(h.intervalMs)},
      {"timeout", formatDurationMs(h.timeoutMs)},
      {"rise", h.rise},
      {"fall", h.fall},
      {"jitter", formatDurationMs(h.jitterMs)},
      {"http_path", h.httpPath},
      {"http_host", h.httpHost},
      {"http_statuses", std::to_string(h.httpStatusMin) + "-" + std::to_string(h.httpStatusMax)},
      {"udp_send", h.udpSend},
      {"udp_expect", h.udpExpect},
      {"ejection_time", formatDurationMs(h.ejectionTimeMs)},
      {"max_ejection_time", formatDurationMs(h.maxEjectionTimeMs)},
      {"max_ejected_percent", h.maxEjectedPercent},
      {"panic_threshold", h.panicThresholdPercent},
      {"passive_fall", h.passiveFall},
      {"mesh_quorum", toString(h.meshQuorum)}};
}

json toJson(const ConnTimeouts& t) {
  json out = json::object();
  for (const ConnTimeoutField& f : kConnTimeoutFields) out[f.name] = formatDurationMs(t.*f.ms);
  return out;
}

ConnTimeouts timeoutsFromJson(const json& j, const std::string& path) {
  checkKeys(j, path, connTimeoutNames());
  ConnTimeouts t;
  for (const ConnTimeoutField& f : kConnTimeoutFields) {
    if (const json* v = member(j, f.name)) {
      t.*f.ms = readDuration(*v, dotted(path, f.name), kMinConnTimeoutMs, kMaxConnTimeoutMs);
    }
  }
  return t;
}

json toJson(const ServiceSpec& svc) {
  json endpoints = json::array();
  for (const auto& ep : svc.endpoints) endpoints.push_back(toJson(ep));
  // timeouts and on_eject always: what a connection of the service lives by is worth seeing.
  json j = {{"name", svc.name},
            {"vip", svc.vip.toString()},
            {"port", svc.port},
            {"protocol", toString(svc.protocol)},
            {"algorithm", toString(svc.algorithm)},
            {"forwarding", toString(svc.forwarding)},
            {"endpoints", std::move(endpoints)},
            {"timeouts", toJson(svc.timeouts)},
            {"on_eject", toString(svc.onEject)}};
  // TCP only: a UDP service has no SYN protection, and sending these back would be refused.
  if (svc.protocol == Protocol::kTcp) {
    j["syn_protection"] = toString(svc.synProtection);
    j["connect_retries"] = svc.connectRetries;
  }
  // Services without health checks keep the shape they always had.
  if (!(svc.health == HealthCheckSpec{})) j["health"] = toJson(svc.health);
  return j;
}

HealthCheckSpec healthFromJson(const json& j, const std::string& path) {
  checkKeys(j, path,
            {"type", "interval", "timeout", "rise", "fall", "jitter", "http_path", "http_host",
             "http_statuses", "udp_send", "udp_expect", "ejection_time", "max_ejection_time",
             "max_ejected_percent", "panic_threshold", "passive_fall", "mesh_quorum"});
  HealthCheckSpec h;
  if (const json* v = member(j, "type")) {
    h.type = readEnum<HealthCheckType>(*v, dotted(path, "type"), parseHealthCheckType,
                                       "none, tcp, http, udp");
  }
  if (const json* v = member(j, "interval"))
    h.intervalMs = readDuration(*v, dotted(path, "interval"));
  if (const json* v = member(j, "timeout")) h.timeoutMs = readDuration(*v, dotted(path, "timeout"));
  if (const json* v = member(j, "jitter")) h.jitterMs = readDuration(*v, dotted(path, "jitter"));
  if (const json* v = member(j, "rise")) {
    h.rise = static_cast<uint32_t>(readNumber(*v, dotted(path, "rise"), 1, 100));
  }
  if (const json* v = member(j, "fall")) {
    h.fall = static_cast<uint32_t>(readNumber(*v, dotted(path, "fall"), 1, 100));
  }
  if (const json* v = member(j, "http_path"))
    h.httpPath = readString(*v, dotted(path, "http_path"));
  if (const json* v = member(j, "http_host"))
    h.httpHost = readString(*v, dotted(path, "http_host"));
  if (const json* v = member(j, "http_statuses")) {
    const auto range = parseStatusRange(readString(*v, dotted(path, "http_statuses")));
    if (!range) {
      fail(dotted(path, "http_statuses"), show(*v) + " is not a status or a range like 200-399");
    }
    std::tie(h.httpStatusMin, h.httpStatusMax) = *range;
  }
  if (const json* v = member(j, "udp_send")) h.udpSend = readString(*v, dotted(path, "udp_send"));
  if (const json* v = member(j, "udp_expect")) {
    h.udpExpect = readString(*v, dotted(path, "udp_expect"));
  }
  if (const json* v = member(j, "ejection_time")) {
    h.ejectionTimeMs = readDuration(*v, dotted(path, "ejection_time"));
  }
  if (const json* v = member(j, "max_ejection_time")) {
    h.maxEjectionTimeMs = readDuration(*v, dotted(path, "max_ejection_time"));
  }
  if (const json* v = member(j, "max_ejected_percent")) {
    h.maxEjectedPercent =
        static_cast<uint32_t>(readNumber(*v, dotted(path, "max_ejected_percent"), 0, 100));
  }
  if (const json* v = member(j, "panic_threshold")) {
    h.panicThresholdPercent =
        static_cast<uint32_t>(readNumber(*v, dotted(path, "panic_threshold"), 0, 100));
  }
  if (const json* v = member(j, "passive_fall")) {
    h.passiveFall = static_cast<uint32_t>(readNumber(*v, dotted(path, "passive_fall"), 0, 100));
  }
  if (const json* v = member(j, "mesh_quorum")) {
    h.meshQuorum =
        readEnum<MeshQuorum>(*v, dotted(path, "mesh_quorum"), parseMeshQuorum, "majority, local");
  }
  return h;
}

json toJson(const NodeSpec& node) {
  json pool = json::array();
  for (const IpAddress& a : node.snatPool) pool.push_back(a.toString());
  return {{"interfaces", node.interfaces},
          {"ipv4", optionalAddress(node.ipv4)},
          {"ipv6", optionalAddress(node.ipv6)},
          {"snat_pool", std::move(pool)},
          {"snat_port_min", node.snatPortMin},
          {"snat_port_max", node.snatPortMax},
          {"ring_size", ringSizeJson(node.ringSize)},
          {"conn_table_size", node.connTableSize},
          {"half_table_size", node.halfTableSize},
          {"flow_cache_slots", node.flowCacheSlots},
          {"syn_flood_threshold", node.synFloodThreshold},
          {"xdp_mode", node.xdpMode},
          {"api_socket", node.apiSocket},
          {"pin_root", node.pinRoot},
          {"state_file", node.stateFile},
          {"metrics_listen", node.metricsListen},
          {"api_admin_group", node.apiAdminGroup},
          {"api_read_group", node.apiReadGroup},
          {"audit_log", node.auditLog}};
}

json toJson(const DesiredState& state) {
  json services = json::array();
  for (const auto& svc : state.services) services.push_back(toJson(svc));
  return {{"node", toJson(state.node)}, {"services", std::move(services)}};
}

EndpointSpec endpointFromJson(const json& j, const std::string& path) {
  checkKeys(j, path, {"address", "port", "weight"}, {"id", "stats", "active_conns", "drain"});
  EndpointSpec ep;
  ep.address = readAddress(required(j, "address", path), dotted(path, "address"));
  ep.port =
      static_cast<uint16_t>(readNumber(required(j, "port", path), dotted(path, "port"), 1, 65535));
  if (const json* w = member(j, "weight")) {
    ep.weight = static_cast<uint32_t>(readNumber(*w, dotted(path, "weight"), 0, kMaxWeight));
  }
  return ep;
}

ServiceSpec serviceFromJson(const json& j, const std::string& path) {
  checkKeys(j, path,
            {"name", "vip", "port", "protocol", "algorithm", "forwarding", "endpoints", "health",
             "timeouts", "on_eject", "syn_protection", "connect_retries"},
            {"id", "ring_size", "ring_bytes", "stats"});
  ServiceSpec svc;
  svc.name = readString(required(j, "name", path), dotted(path, "name"));
  svc.vip = readAddress(required(j, "vip", path), dotted(path, "vip"));
  svc.port =
      static_cast<uint16_t>(readNumber(required(j, "port", path), dotted(path, "port"), 1, 65535));
  if (const json* v = member(j, "protocol")) {
    svc.protocol = readEnum<Protocol>(*v, dotted(path, "protocol"), parseProtocol, "tcp, udp");
  }
  if (const json* v = member(j, "algorithm")) {
    svc.algorithm = readEnum<Algorithm>(*v, dotted(path, "algorithm"), parseAlgorithm,
                                       kAlgorithmNames);
  }
  if (const json* v = member(j, "forwarding")) {
    svc.forwarding =
        readEnum<ForwardingMode>(*v, dotted(path, "forwarding"), parseForwardingMode, "nat");
  }
  if (const json* v = member(j, "endpoints")) {
    if (!v->is_array()) fail(dotted(path, "endpoints"), show(*v) + " is not an array");
    for (size_t i = 0; i < v->size(); ++i) {
      svc.endpoints.push_back(endpointFromJson((*v)[i], indexed(path, "endpoints", i)));
    }
  }
  if (const json* v = member(j, "health")) svc.health = healthFromJson(*v, dotted(path, "health"));
  if (const json* v = member(j, "timeouts")) {
    svc.timeouts = timeoutsFromJson(*v, dotted(path, "timeouts"));
  }
  if (const json* v = member(j, "on_eject")) {
    svc.onEject = readEnum<OnEject>(*v, dotted(path, "on_eject"), parseOnEject, "keep, reset");
  }
  if (const json* v = member(j, "syn_protection")) {
    svc.synProtection = readEnum<SynProtection>(*v, dotted(path, "syn_protection"),
                                                parseSynProtection, kSynProtectionNames);
  }
  if (const json* v = member(j, "connect_retries")) {
    svc.connectRetries = static_cast<uint32_t>(
        readNumber(*v, dotted(path, "connect_retries"), 0, kMaxConnectRetries));
    // Even at its default value: on a UDP service the setting means nothing.
    if (svc.protocol != Protocol::kTcp) {
      fail(dotted(path, "connect_retries"),
           "connect_retries applies to TCP services; remove it from UDP service " + svc.name);
    }
  }
  return svc;
}

NodeSpec nodeFromJson(const json& j, const std::string& path) {
  checkKeys(j, path,
            {"interfaces", "ipv4", "ipv6", "snat_pool", "snat_port_min", "snat_port_max",
             "ring_size", "conn_table_size", "half_table_size", "flow_cache_slots",
             "syn_flood_threshold", "xdp_mode", "api_socket", "pin_root", "state_file",
             "metrics_listen", "api_admin_group", "api_read_group", "audit_log"});
  NodeSpec node;
  if (const json* v = member(j, "interfaces")) {
    if (!v->is_array()) fail(dotted(path, "interfaces"), show(*v) + " is not an array");
    for (size_t i = 0; i < v->size(); ++i) {
      node.interfaces.push_back(readString((*v)[i], indexed(path, "interfaces", i)));
    }
  }
  if (const json* v = member(j, "ipv4")) node.ipv4 = readAddress(*v, dotted(path, "ipv4"), 4);
  if (const json* v = member(j, "ipv6")) node.ipv6 = readAddress(*v, dotted(path, "ipv6"), 6);
  if (const json* v = member(j, "snat_pool")) {
    node.snatPool = readSnatPool(*v, dotted(path, "snat_pool"));
  }
  // 0 and 0: "auto" (validateNode's rules decide the rest).
  if (const json* v = member(j, "snat_port_min")) {
    node.snatPortMin =
        static_cast<uint16_t>(readNumber(*v, dotted(path, "snat_port_min"), 0, 65535));
  }
  if (const json* v = member(j, "snat_port_max")) {
    node.snatPortMax =
        static_cast<uint16_t>(readNumber(*v, dotted(path, "snat_port_max"), 0, 65535));
  }
  if (const json* v = member(j, "ring_size")) {
    node.ringSize =
        *v == "auto"
            ? 0
            : static_cast<uint32_t>(readNumber(*v, dotted(path, "ring_size"), 2, MP_RING_SIZE_MAX));
  }
  if (const json* v = member(j, "conn_table_size")) {
    node.connTableSize = static_cast<uint32_t>(
        readNumber(*v, dotted(path, "conn_table_size"), kMinConnTableSize, kMaxConnTableSize));
  }
  if (const json* v = member(j, "half_table_size")) {
    node.halfTableSize = static_cast<uint32_t>(
        readNumber(*v, dotted(path, "half_table_size"), kMinConnTableSize, kMaxHalfTableSize));
  }
  if (const json* v = member(j, "flow_cache_slots")) {
    node.flowCacheSlots = static_cast<uint32_t>(
        readNumber(*v, dotted(path, "flow_cache_slots"), 0, MP_FLOW_CACHE_SLOTS_MAX));
  }
  if (const json* v = member(j, "syn_flood_threshold")) {
    node.synFloodThreshold = static_cast<uint32_t>(readNumber(
        *v, dotted(path, "syn_flood_threshold"), kMinSynFloodThreshold, kMaxSynFloodThreshold));
  }
  if (const json* v = member(j, "xdp_mode"))
    node.xdpMode = readString(*v, dotted(path, "xdp_mode"));
  if (const json* v = member(j, "api_socket")) {
    node.apiSocket = readString(*v, dotted(path, "api_socket"));
  }
  if (const json* v = member(j, "pin_root"))
    node.pinRoot = readString(*v, dotted(path, "pin_root"));
  if (const json* v = member(j, "state_file")) {
    node.stateFile = readString(*v, dotted(path, "state_file"));
  }
  for (auto [name, field] : {std::pair{"metrics_listen", &NodeSpec::metricsListen},
                             {"api_admin_group", &NodeSpec::apiAdminGroup},
                             {"api_read_group", &NodeSpec::apiReadGroup},
                             {"audit_log", &NodeSpec::auditLog}}) {
    if (const json* v = member(j, name)) node.*field = readString(*v, dotted(path, name));
  }
  return node;
}

DesiredState stateFromJson(const json& j) {
  checkKeys(j, "", {"node", "services"});
  DesiredState state;
  state.node = nodeFromJson(required(j, "node", ""), "node");
  if (const json* v = member(j, "services")) {
    if (!v->is_array()) fail("services", show(*v) + " is not an array");
    for (size_t i = 0; i < v->size(); ++i) {
      state.services.push_back(serviceFromJson((*v)[i], indexed("", "services", i)));
    }
  }
  return state;
}

uint32_t weightFromJson(const json& j) {
  checkKeys(j, "", {"weight"});
  return static_cast<uint32_t>(readNumber(required(j, "weight", ""), "weight", 0, kMaxWeight));
}

json parseJson(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 1, column 5: ...".
    std::string detail = e.what();
    const size_t bracket = detail.find("] ");
    if (bracket != std::string::npos) detail = detail.substr(bracket + 2);
    throw JsonInputError(what + ": invalid JSON: " + detail);
  }
}

void to_json(json& j, const IpAddress& ip) { j = ip.toString(); }
void from_json(const json& j, IpAddress& ip) { ip = readAddress(j, ""); }
void to_json(json& j, const EndpointSpec& ep) { j = toJson(ep); }
void from_json(const json& j, EndpointSpec& ep) { ep = endpointFromJson(j); }
void to_json(json& j, const ServiceSpec& svc) { j = toJson(svc); }
void from_json(const json& j, ServiceSpec& svc) { svc = serviceFromJson(j); }
void to_json(json& j, const NodeSpec& node) { j = toJson(node); }
void from_json(const json& j, NodeSpec& node) { node = nodeFromJson(j); }
void to_json(json& j, const DesiredState& state) { j = toJson(state); }
void from_json(const json& j, DesiredState& state) { state = stateFromJson(j); }

}  // namespace meshpath
