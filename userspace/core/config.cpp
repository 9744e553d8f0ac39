// config.cpp — YAML config parsing (structure) and the validation rules (meaning).
#include "config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "abi.h"
#include "snat.h"

namespace meshpath {
namespace {

constexpr size_t kMaxInterfaceName = 15;    // IFNAMSIZ - 1
constexpr size_t kMaxUnixSocketPath = 107;  // sizeof(sockaddr_un::sun_path) - 1

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += sep;
    out += parts[i];
  }
  return out;
}

// A value as it appears in a message: quoted only when it would otherwise be invisible or
// ambiguous (empty, or with spaces or control characters).
std::string show(const std::string& value) {
  const bool plain = !value.empty() && std::none_of(value.begin(), value.end(), [](char c) {
    return static_cast<unsigned char>(c) <= ' ' || c == '"';
  });
  if (plain) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < ' ') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string rangeProblem(const std::string& path, const std::string& value, uint64_t lo,
                         uint64_t hi) {
  return path + ": " + value + " is out of range " + std::to_string(lo) + ".." + std::to_string(hi);
}

std::string dotted(const std::string& prefix, const std::string& field) {
  return prefix.empty() ? field : prefix + "." + field;
}

std::string indexed(const std::string& prefix, const std::string& field, size_t i) {
  return dotted(prefix, field) + "[" + std::to_string(i) + "]";
}

// The refusal of a TCP-only setting on a UDP service.
std::string tcpOnlyProblem(const std::string& setting, const ServiceSpec& svc) {
  return setting + " applies to TCP services; remove it from UDP service " + show(svc.name);
}

// ---- YAML structure ------------------------------------------------------------------------

std::string lineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || mark.line < 0) return "";
  return " (line " + std::to_string(mark.line + 1) + ")";
}

[[noreturn]] void fail(const std::string& path, const std::string& what, const YAML::Node& at) {
  throw ConfigError(path + ": " + what + lineOf(at));
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return show(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

// Refuses anything but a mapping whose keys are all known and appear once.
void checkKeys(const YAML::Node& map, const std::string& path,
               const std::vector<std::string>& known) {
  if (!map.IsMap()) {
    fail(path.empty() ? "config" : path, describe(map) + " is not a mapping", map);
  }
  std::set<std::string> seen;
  for (const auto& kv : map) {
    if (!kv.first.IsScalar()) fail(path.empty() ? "config" : path, "keys must be names", kv.first);
    const std::string key = kv.first.Scalar();
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      fail(dotted(path, show(key)), "unknown key (known: " + join(known, ", ") + ")", kv.first);
    }
    if (!seen.insert(key).second) fail(dotted(path, key), "key given twice", kv.first);
  }
}

// The field's node, or nullopt when absent or null ("ipv6:" with nothing after it).
std::optional<YAML::Node> field(const YAML::Node& map, const std::string& key) {
  const YAML::Node node = map[key];
  if (!node.IsDefined() || node.IsNull()) return std::nullopt;
  return node;
}

YAML::Node required(const YAML::Node& map, const std::string& key, const std::string& path) {
  auto node = field(map, key);
  if (!node) fail(dotted(path, key), "required field is missing", map);
  return *node;
}

std::string readString(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) fail(path, describe(node) + " is not a single value", node);
  return node.Scalar();
}

// A whole decimal number in lo..hi. Hex, octal, signs, fractions and exponents are refused.
uint64_t readNumber(const YAML::Node& node, const std::string& path, uint64_t lo, uint64_t hi) {
  const std::string text = readString(node, path);
  const bool negative = text.size() > 1 && text[0] == '-';
  const std::string digits = negative ? text.substr(1) : text;
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    fail(path, show(text) + " is not a whole number", node);
  }
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (negative || ec != std::errc() || end != digits.data() + digits.size() || value < lo ||
      value > hi) {
    throw ConfigError(rangeProblem(path, text, lo, hi) + lineOf(node));
  }
  return value;
}

IpAddress readAddress(const YAML::Node& node, const std::string& path, int family = 0) {
  const std::string text = readString(node, path);
  const auto ip = IpAddress::parse(text);
  if (!ip) fail(path, show(text) + " is not an IP address", node);
  if (family == 4 && !ip->isV4()) fail(path, text + " is not an IPv4 address", node);
  if (family == 6 && !ip->isV6()) fail(path, text + " is not an IPv6 address", node);
  return *ip;
}

// "auto" (0-0: meshd picks the range at start) or MIN-MAX.
std::pair<uint16_t, uint16_t> readPortRange(const YAML::Node& node, const std::string& path) {
  const std::string text = readString(node, path);
  if (text == "auto") return {0, 0};
  const size_t dash = text.find('-');
  auto number = [&](const std::string& part, uint32_t& out) {
    if (part.empty() || part.size() > 9 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    out = static_cast<uint32_t>(std::stoul(part));
    return true;
  };
  uint32_t lo = 0, hi = 0;
  if (dash == std::string::npos || !number(text.substr(0, dash), lo) ||
      !number(text.substr(dash + 1), hi)) {
    fail(path, show(text) + " is not a port range like 61000-65535, or auto", node);
  }
  // 0-0 is how the model says "auto"; written out it is more likely a mistake than a wish.
  if (lo > 65535 || hi > 65535 || (lo == 0 && hi == 0)) {
    throw ConfigError(rangeProblem(path, text, kMinSnatPort, 65535) + lineOf(node));
  }
  return {static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
}

template <typename Enum>
Enum readEnum(const YAML::Node& node, const std::string& path,
              std::optional<Enum> (*parse)(const std::string&), const std::string& choices) {
  const std::string text = readString(node, path);
  const auto value = parse(text);
  if (!value) fail(path, show(text) + " is not one of " + choices, node);
  return *value;
}

// node.snat_pool: addresses and prefixes, expanded to addresses in the order written.
std::vector<IpAddress> readSnatPool(const YAML::Node& list, const std::string& path) {
  if (!list.IsSequence()) fail(path, describe(list) + " is not a list", list);
  std::vector<IpAddress> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string entryPath = path + "[" + std::to_string(i) + "]";
    const std::string text = readString(list[i], entryPath);
    std::string why;
    const auto addresses = expandSnatPoolEntry(text, &why);
    if (!addresses) fail(entryPath, show(text) + " " + why, list[i]);
    out.insert(out.end(), addresses->begin(), addresses->end());
  }
  return out;
}

NodeSpec readNode(const YAML::Node& map) {
  const std::string path = "node";
  checkKeys(map, path,
            {"interfaces", "ipv4", "ipv6", "snat_pool", "snat_ports", "ring_size",
             "conn_table_size", "half_table_size", "flow_cache_slots", "syn_flood_threshold",
             "xdp_mode", "api_socket", "pin_root", "state_file", "metrics_listen",
             "api_admin_group", "api_read_group", "audit_log"});
  NodeSpec node;
  const YAML::Node interfaces = required(map, "interfaces", path);
  if (!interfaces.IsSequence()) {
    fail("node.interfaces", describe(interfaces) + " is not a list", interfaces);
  }
  for (size_t i = 0; i < interfaces.size(); ++i) {
    node.interfaces.push_back(readString(interfaces[i], indexed(path, "interfaces", i)));
  }
  if (auto n = field(map, "ipv4")) node.ipv4 = readAddress(*n, "node.ipv4", 4);
  if (auto n = field(map, "ipv6")) node.ipv6 = readAddress(*n, "node.ipv6", 6);
  if (auto n = field(map, "snat_pool")) node.snatPool = readSnatPool(*n, "node.snat_pool");
  if (auto n = field(map, "snat_ports")) {
    std::tie(node.snatPortMin, node.snatPortMax) = readPortRange(*n, "node.snat_ports");
  }
  if (auto n = field(map, "ring_size")) {
    // "auto" (0 in the model): each service's ring sized to its endpoints (ring.h).
    node.ringSize =
        n->IsScalar() && n->Scalar() == "auto"
            ? 0
            : static_cast<uint32_t>(readNumber(*n, "node.ring_size", 2, MP_RING_SIZE_MAX));
  }
  if (auto n = field(map, "conn_table_size")) {
    node.connTableSize = static_cast<uint32_t>(
        readNumber(*n, "node.conn_table_size", kMinConnTableSize, kMaxConnTableSize));
  }
  if (auto n = field(map, "half_table_size")) {
    node.halfTableSize = static_cast<uint32_t>(
        readNumber(*n, "node.half_table_size", kMinConnTableSize, kMaxHalfTableSize));
  }
  if (auto n = field(map, "flow_cache_slots")) {
    node.flowCacheSlots = static_cast<uint32_t>(
        readNumber(*n, "node.flow_cache_slots", 0, MP_FLOW_CACHE_SLOTS_MAX));
  }
  if (auto n = field(map, "syn_flood_threshold")) {
    node.synFloodThreshold = static_cast<uint32_t>(
        readNumber(*n, "node.syn_flood_threshold", kMinSynFloodThreshold, kMaxSynFloodThreshold));
  }
  if (auto n = field(map, "xdp_mode")) node.xdpMode = readString(*n, "node.xdp_mode");
  if (auto n = field(map, "api_socket")) node.apiSocket = readString(*n, "node.api_socket");
  if (auto n = field(map, "pin_root")) node.pinRoot = readString(*n, "node.pin_root");
  if (auto n = field(map, "state_file")) node.stateFile = readString(*n, "node.state_file");
  if (auto n = field(map, "metrics_listen")) {
    node.metricsListen = readString(*n, "node.metrics_listen");
  }
  if (auto n = field(map, "api_admin_group")) {
    node.apiAdminGroup = readString(*n, "node.api_admin_group");
  }
  if (auto n = field(map, "api_read_group")) {
    node.apiReadGroup = readString(*n, "node.api_read_group");
  }
  if (auto n = field(map, "audit_log")) node.auditLog = readString(*n, "node.audit_log");
  return node;
}

uint32_t readDuration(const YAML::Node& node, const std::string& path, uint32_t loMs = 0,
                      uint32_t hiMs = kMaxHealthTimeMs) {
  const std::string text = readString(node, path);
  const auto ms = parseDurationMs(text);
  if (!ms) fail(path, show(text) + " is not a duration like 100ms, 2s, 1m or 3h", node);
  if (*ms < loMs || *ms > hiMs) {
    fail(path,
         show(text) + " is out of range " + formatDurationMs(loMs) + ".." + formatDurationMs(hiMs),
         node);
  }
  return static_cast<uint32_t>(*ms);
}

ConnTimeouts readTimeouts(const YAML::Node& map, const std::string& path) {
  checkKeys(map, path, connTimeoutNames());
  ConnTimeouts t;
  for (const ConnTimeoutField& f : kConnTimeoutFields) {
    if (auto n = field(map, f.name)) {
      t.*f.ms = readDuration(*n, dotted(path, f.name), kMinConnTimeoutMs, kMaxConnTimeoutMs);
    }
  }
  return t;
}

std::pair<uint16_t, uint16_t> readStatusRange(const YAML::Node& node, const std::string& path) {
  const std::string text = readString(node, path);
  const auto range = parseStatusRange(text);
  if (!range) fail(path, show(text) + " is not a status or a range like 200-399", node);
  return *range;
}

HealthCheckSpec readHealth(const YAML::Node& map, const std::string& path) {
  checkKeys(map, path,
            {"type", "interval", "timeout", "rise", "fall", "jitter", "http_path", "http_host",
             "http_statuses", "udp_send", "udp_expect", "ejection_time", "max_ejection_time",
             "max_ejected_percent", "panic_threshold", "passive_fall", "mesh_quorum"});
  HealthCheckSpec h;
  if (auto n = field(map, "type")) {
    h.type = readEnum<HealthCheckType>(*n, dotted(path, "type"), parseHealthCheckType,
                                       "none, tcp, http, udp");
  }
  if (auto n = field(map, "interval")) h.intervalMs = readDuration(*n, dotted(path, "interval"));
  if (auto n = field(map, "timeout")) h.timeoutMs = readDuration(*n, dotted(path, "timeout"));
  if (auto n = field(map, "jitter")) h.jitterMs = readDuration(*n, dotted(path, "jitter"));
  if (auto n = field(map, "rise")) {
    h.rise = static_cast<uint32_t>(readNumber(*n, dotted(path, "rise"), 1, 100));
  }
  if (auto n = field(map, "fall")) {
    h.fall = static_cast<uint32_t>(readNumber(*n, dotted(path, "fall"), 1, 100));
  }
  if (auto n = field(map, "http_path")) h.httpPath = readString(*n, dotted(path, "http_path"));
  if (auto n = field(map, "http_host")) h.httpHost = readString(*n, dotted(path, "http_host"));
  if (auto n = field(map, "http_statuses")) {
    std::tie(h.httpStatusMin, h.httpStatusMax) = readStatusRange(*n, dotted(path, "http_statuses"));
  }
  if (auto n = field(map, "udp_send")) h.udpSend = readString(*n, dotted(path, "udp_send"));
  if (auto n = field(map, "udp_expect")) h.udpExpect = readString(*n, dotted(path, "udp_expect"));
  if (auto n = field(map, "ejection_time")) {
    h.ejectionTimeMs = readDuration(*n, dotted(path, "ejection_time"));
  }
  if (auto n = field(map, "max_ejection_time")) {
    h.maxEjectionTimeMs = readDuration(*n, dotted(path, "max_ejection_time"));
  }
  if (auto n = field(map, "max_ejected_percent")) {
    h.maxEjectedPercent =
        static_cast<uint32_t>(readNumber(*n, dotted(path, "max_ejected_percent"), 0, 100));
  }
  if (auto n = field(map, "panic_threshold")) {
    h.panicThresholdPercent =
        static_cast<uint32_t>(readNumber(*n, dotted(path, "panic_threshold"), 0, 100));
  }
  if (auto n = field(map, "passive_fall")) {
    h.passiveFall = static_cast<uint32_t>(readNumber(*n, dotted(path, "passive_fall"), 0, 100));
  }
  if (auto n = field(map, "mesh_quorum")) {
    h.meshQuorum =
        readEnum<MeshQuorum>(*n, dotted(path, "mesh_quorum"), parseMeshQuorum, "majority, local");
  }
  return h;
}

EndpointSpec readEndpoint(const YAML::Node& map, const std::string& path) {
  checkKeys(map, path, {"address", "port", "weight"});
  EndpointSpec ep;
  ep.address = readAddress(required(map, "address", path), dotted(path, "address"));
  ep.port = static_cast<uint16_t>(
      readNumber(required(map, "port", path), dotted(path, "port"), 1, 65535));
  if (auto n = field(map, "weight")) {
    ep.weight = static_cast<uint32_t>(readNumber(*n, dotted(path, "weight"), 0, kMaxWeight));
  }
  return ep;
}

ServiceSpec readService(const YAML::Node& map, const std::string& path) {
  checkKeys(map, path,
            {"name", "vip", "port", "protocol", "algorithm", "forwarding", "endpoints", "health",
             "timeouts", "on_eject", "syn_protection", "connect_retries"});
  ServiceSpec svc;
  svc.name = readString(required(map, "name", path), dotted(path, "name"));
  svc.vip = readAddress(required(map, "vip", path), dotted(path, "vip"));
  svc.port = static_cast<uint16_t>(
      readNumber(required(map, "port", path), dotted(path, "port"), 1, 65535));
  if (auto n = field(map, "protocol")) {
    svc.protocol = readEnum<Protocol>(*n, dotted(path, "protocol"), parseProtocol, "tcp, udp");
  }
  if (auto n = field(map, "algorithm")) {
    svc.algorithm = readEnum<Algorithm>(*n, dotted(path, "algorithm"), parseAlgorithm,
                                       kAlgorithmNames);
  }
  if (auto n = field(map, "forwarding")) {
    svc.forwarding =
        readEnum<ForwardingMode>(*n, dotted(path, "forwarding"), parseForwardingMode, "nat");
  }
  if (auto n = field(map, "endpoints")) {
    if (!n->IsSequence()) fail(dotted(path, "endpoints"), describe(*n) + " is not a list", *n);
    for (size_t i = 0; i < n->size(); ++i) {
      svc.endpoints.push_back(readEndpoint((*n)[i], indexed(path, "endpoints", i)));
    }
  }
  if (auto n = field(map, "health")) svc.health = readHealth(*n, dotted(path, "health"));
  if (auto n = field(map, "timeouts")) svc.timeouts = readTimeouts(*n, dotted(path, "timeouts"));
  if (auto n = field(map, "on_eject")) {
    svc.onEject = readEnum<OnEject>(*n, dotted(path, "on_eject"), parseOnEject, "keep, reset");
  }
  if (auto n = field(map, "syn_protection")) {
    svc.synProtection = readEnum<SynProtection>(*n, dotted(path, "syn_protection"),
                                                parseSynProtection, kSynProtectionNames);
  }
  if (auto n = field(map, "connect_retries")) {
    svc.connectRetries = static_cast<uint32_t>(
        readNumber(*n, dotted(path, "connect_retries"), 0, kMaxConnectRetries));
    // Even at its default value: on a UDP service the setting means nothing.
    if (svc.protocol != Protocol::kTcp) {
      fail(dotted(path, "connect_retries"), tcpOnlyProblem("connect_retries", svc), *n);
    }
  }
  return svc;
}

// ---- validation ----------------------------------------------------------------------------

bool isAbsolutePath(const std::string& p) { return !p.empty() && p[0] == '/'; }

void checkPath(const std::string& value, const std::string& path, std::vector<std::string>& out) {
  if (!isAbsolutePath(value)) out.push_back(path + ": " + show(value) + " is not an absolute path");
  if (value.find('\0') != std::string::npos) out.push_back(path + ": contains a NUL byte");
}

// node.api_*_group: a POSIX group name as useradd takes it, or "" (nobody but root).
void checkGroupName(const std::string& value, const std::string& path,
                    std::vector<std::string>& out) {
  if (value.empty()) return;
  const bool ok = value.size() <= 32 && (std::islower(static_cast<unsigned char>(value[0])) ||
                                         value[0] == '_') &&
                  std::all_of(value.begin(), value.end(), [](char c) {
                    return std::islower(static_cast<unsigned char>(c)) ||
                           std::isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                  });
  if (!ok) {
    out.push_back(path + ": " + show(value) +
                  " is not a group name ([a-z_][a-z0-9_-]{0,31}; \"\": root only)");
  }
}

const char* familyName(const IpAddress& ip) { return ip.isV6() ? "IPv6" : "IPv4"; }

// Text that goes into an HTTP request line or header: printable ASCII, no spaces.
bool isHeaderToken(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

// node.snat_pool: usable addresses, each once (node.ipv4/ipv6 are the first source of their
// family already), only of a family the node has an address of, and at most
// kMaxSnatAddrsPerFamily sources per family in all.
void validateSnatPool(const NodeSpec& node, std::vector<std::string>& out) {
  const std::string path = "node.snat_pool";
  std::set<IpAddress> seen;
  if (node.ipv4) seen.insert(*node.ipv4);
  if (node.ipv6) seen.insert(*node.ipv6);
  for (const IpAddress& a : node.snatPool) {
    const std::string text = show(a.toString());
    if (auto why = addressProblem(a)) {
      out.push_back(path + ": " + text + " " + *why);
      continue;
    }
    const char* primary = a.isV4() ? "node.ipv4" : "node.ipv6";
    const auto& primaryAddress = a.isV4() ? node.ipv4 : node.ipv6;
    if (!primaryAddress) {
      out.push_back(path + ": " + text + " is " + familyName(a) + " but " + primary +
                    " is not set (the first " + familyName(a) + " SNAT source)");
    } else if (a == *primaryAddress) {
      out.push_back(path + ": " + text + " is " + primary +
                    ", always the first SNAT source of its family already");
    } else if (!seen.insert(a).second) {
      out.push_back(path + ": " + text + " is listed twice");
    }
  }
  for (int family : {4, 6}) {
    const size_t sources = snatSources(node, family).size();
    if (sources > kMaxSnatAddrsPerFamily) {
      out.push_back(path + ": " + std::to_string(sources) + " IPv" + std::to_string(family) +
                    " SNAT sources (node.ipv" + std::to_string(family) + " and " +
                    std::to_string(sources - 1) + " in the pool) exceed the maximum of " +
                    std::to_string(kMaxSnatAddrsPerFamily));
    }
  }
}

void validateTimeouts(const ConnTimeouts& t, const std::string& path,
                      std::vector<std::string>& out) {
  for (const ConnTimeoutField& f : kConnTimeoutFields) {
    const uint32_t ms = t.*f.ms;
    if (ms < kMinConnTimeoutMs || ms > kMaxConnTimeoutMs) {
      out.push_back(dotted(path, f.name) + ": " + formatDurationMs(ms) + " is out of range " +
                    formatDurationMs(kMinConnTimeoutMs) + ".." +
                    formatDurationMs(kMaxConnTimeoutMs));
    }
  }
}

// syn_protection and connect_retries: TCP only; a UDP service keeps the defaults.
void validateSynProtection(const ServiceSpec& svc, const std::string& path,
                           std::vector<std::string>& out) {
  const std::string modePath = dotted(path, "syn_protection");
  const std::string retriesPath = dotted(path, "connect_retries");
  if (toString(svc.synProtection) == "unknown") {
    out.push_back(modePath + ": " + std::to_string(int(svc.synProtection)) + " is not one of " +
                  kSynProtectionNames);
  } else if (svc.protocol != Protocol::kTcp && svc.synProtection != SynProtection::kAuto) {
    out.push_back(modePath + ": " + toString(svc.synProtection) + ": " +
                  tcpOnlyProblem("syn_protection", svc));
  }
  if (svc.connectRetries > kMaxConnectRetries) {
    out.push_back(
        rangeProblem(retriesPath, std::to_string(svc.connectRetries), 0, kMaxConnectRetries));
  } else if (svc.protocol != Protocol::kTcp && svc.connectRetries != kConnectRetriesDefault) {
    out.push_back(retriesPath + ": " + std::to_string(svc.connectRetries) + ": " +
                  tcpOnlyProblem("connect_retries", svc));
  }
}

void validateHealth(const ServiceSpec& svc, const std::string& path,
                    std::vector<std::string>& out) {
  const HealthCheckSpec& h = svc.health;
  auto durationRange = [&](const std::string& field, uint32_t value, uint32_t lo, uint32_t hi) {
    if (value < lo || value > hi) {
      out.push_back(dotted(path, field) + ": " + formatDurationMs(value) + " is out of range " +
                    formatDurationMs(lo) + ".." + formatDurationMs(hi));
    }
  };
  if (toString(h.type) == "unknown") {
    out.push_back(dotted(path, "type") + ": " + std::to_string(int(h.type)) +
                  " is not one of none, tcp, http, udp");
  }
  durationRange("interval", h.intervalMs, kMinHealthIntervalMs, kMaxHealthTimeMs);
  durationRange("timeout", h.timeoutMs, 1, std::max(h.intervalMs, 1u));
  durationRange("jitter", h.jitterMs, 0, h.intervalMs / 2);
  durationRange("ejection_time", h.ejectionTimeMs, kMinHealthIntervalMs, kMaxHealthTimeMs);
  durationRange("max_ejection_time", h.maxEjectionTimeMs, h.ejectionTimeMs, kMaxHealthTimeMs);
  if (h.rise < 1 || h.rise > 100) {
    out.push_back(rangeProblem(dotted(path, "rise"), std::to_string(h.rise), 1, 100));
  }
  if (h.fall < 1 || h.fall > 100) {
    out.push_back(rangeProblem(dotted(path, "fall"), std::to_string(h.fall), 1, 100));
  }
  if (h.maxEjectedPercent > 100) {
    out.push_back(rangeProblem(dotted(path, "max_ejected_percent"),
                               std::to_string(h.maxEjectedPercent), 0, 100));
  }
  if (h.panicThresholdPercent > 100) {
    out.push_back(rangeProblem(dotted(path, "panic_threshold"),
                               std::to_string(h.panicThresholdPercent), 0, 100));
  }
  if (h.passiveFall > 100) {
    out.push_back(
        rangeProblem(dotted(path, "passive_fall"), std::to_string(h.passiveFall), 0, 100));
  }
  const std::string statuses =
      std::to_string(h.httpStatusMin) + "-" + std::to_string(h.httpStatusMax);
  if (h.httpStatusMin < 100 || h.httpStatusMax > 599) {
    out.push_back(rangeProblem(dotted(path, "http_statuses"), statuses, 100, 599));
  } else if (h.httpStatusMin > h.httpStatusMax) {
    out.push_back(dotted(path, "http_statuses") + ": " + statuses +
                  ": the first status is greater than the last");
  }
  if (h.httpPath.empty() || h.httpPath[0] != '/' || !isHeaderToken(h.httpPath) ||
      h.httpPath.size() > 1024) {
    out.push_back(dotted(path, "http_path") + ": " + show(h.httpPath) +
                  " is not a path (starts with /, printable, no spaces, at most 1024 bytes)");
  }
  if (!isHeaderToken(h.httpHost) || h.httpHost.size() > 255) {
    out.push_back(dotted(path, "http_host") + ": " + show(h.httpHost) +
                  " is not a host name (printable, no spaces, at most 255 bytes)");
  }
  if (h.udpSend.size() > 1024 || h.udpExpect.size() > 1024) {
    out.push_back(dotted(path, h.udpSend.size() > 1024 ? "udp_send" : "udp_expect") +
                  ": longer than 1024 bytes");
  }
  const bool streamCheck = h.type == HealthCheckType::kTcp || h.type == HealthCheckType::kHttp;
  if (streamCheck && svc.protocol != Protocol::kTcp) {
    out.push_back(dotted(path, "type") + ": " + toString(h.type) + " checks need a tcp service, " +
                  "this one is " + toString(svc.protocol) + " (use udp)");
  }
  if (h.type == HealthCheckType::kUdp) {
    if (svc.protocol != Protocol::kUdp) {
      out.push_back(dotted(path, "type") +
                    ": udp checks need a udp service, this one is tcp (use tcp or http)");
    }
    if (h.udpSend.empty()) {
      out.push_back(dotted(path, "udp_send") + ": required for type udp (the request to send)");
    }
  }
}

}  // namespace

ConfigError::ConfigError(const std::string& problem)
    : std::runtime_error(problem), problems_{problem} {}

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join(problems, "; ")), problems_(std::move(problems)) {}

std::optional<std::pair<uint16_t, uint16_t>> parseStatusRange(const std::string& text) {
  const size_t dash = text.find('-');
  const std::string lo = text.substr(0, dash);
  const std::string hi = dash == std::string::npos ? lo : text.substr(dash + 1);
  auto number = [](const std::string& part) -> std::optional<uint16_t> {
    if (part.size() != 3 ||
        !std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    return static_cast<uint16_t>(std::stoul(part));
  };
  const auto a = number(lo);
  const auto b = number(hi);
  if (!a || !b) return std::nullopt;
  return std::make_pair(*a, *b);
}

std::optional<ListenAddress> parseListenAddress(const std::string& text) {
  ListenAddress out;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    out.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    auto ip = IpAddress::parse(out.host);
    if (!ip || !ip->isV6()) return std::nullopt;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return std::nullopt;
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    auto ip = IpAddress::parse(out.host);
    if (!ip || !ip->isV4()) return std::nullopt;
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const unsigned long n = std::stoul(port);
  if (n == 0 || n > 65535) return std::nullopt;
  out.port = static_cast<uint16_t>(n);
  return out;
}

bool isValidServiceName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}

std::optional<std::string> addressProblem(const IpAddress& ip) {
  const auto& b = ip.bytes();
  if (ip.isV4()) {
    if (b[0] == 0) return "is not a usable address (0.0.0.0/8)";
    if (b[0] == 127) return "is a loopback address";
    if (b[0] >= 224 && b[0] < 240) return "is a multicast address";
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) return "is the broadcast address";
    return std::nullopt;
  }
  if (ip.isV6()) {
    const bool high_zero = std::all_of(b.begin(), b.begin() + 10, [](uint8_t x) { return x == 0; });
    if (high_zero && b[10] == 0 && b[11] == 0 && b[12] == 0 && b[13] == 0 && b[14] == 0) {
      if (b[15] == 0) return "is the unspecified address";
      if (b[15] == 1) return "is a loopback address";
    }
    if (b[0] == 0xff) return "is a multicast address";
    if (high_zero && b[10] == 0xff && b[11] == 0xff) {
      return "is an IPv4-mapped address (write the IPv4 address itself)";
    }
    return std::nullopt;
  }
  return "is not set";
}

std::vector<std::string> validateNode(const NodeSpec& node) {
  std::vector<std::string> out;
  if (node.interfaces.empty()) out.push_back("node.interfaces: at least one interface is required");
  std::set<std::string> seen_ifs;
  for (size_t i = 0; i < node.interfaces.size(); ++i) {
    const std::string& name = node.interfaces[i];
    const std::string path = indexed("node", "interfaces", i);
    const bool bad_char = std::any_of(name.begin(), name.end(), [](char c) {
      return c == '/' || c == ':' || static_cast<unsigned char>(c) <= ' ';
    });
    if (name.empty() || name.size() > kMaxInterfaceName || bad_char || name == "." ||
        name == "..") {
      out.push_back(path + ": " + show(name) +
                    " is not an interface name (1-15 characters, no '/', ':' or spaces)");
    } else if (!seen_ifs.insert(name).second) {
      out.push_back(path + ": " + name + " is listed twice");
    }
  }
  if (node.ipv4) {
    if (!node.ipv4->isV4()) {
      out.push_back("node.ipv4: " + node.ipv4->toString() + " is not an IPv4 address");
    } else if (auto why = addressProblem(*node.ipv4)) {
      out.push_back("node.ipv4: " + node.ipv4->toString() + " " + *why);
    }
  }
  if (node.ipv6) {
    if (!node.ipv6->isV6()) {
      out.push_back("node.ipv6: " + node.ipv6->toString() + " is not an IPv6 address");
    } else if (auto why = addressProblem(*node.ipv6)) {
      out.push_back("node.ipv6: " + node.ipv6->toString() + " " + *why);
    }
  }
  validateSnatPool(node, out);
  const std::string range =
      std::to_string(node.snatPortMin) + "-" + std::to_string(node.snatPortMax);
  if (snatPortsAuto(node)) {
    // auto: meshd resolves it at start, outside the kernel's ephemeral range.
  } else if (node.snatPortMin < kMinSnatPort) {
    out.push_back(rangeProblem("node.snat_ports", range, kMinSnatPort, 65535));
  } else if (node.snatPortMin > node.snatPortMax) {
    out.push_back("node.snat_ports: " + range + ": the first port is greater than the last");
  }
  if (node.ringSize == 0) {
    // auto
  } else if (node.ringSize < 2 || node.ringSize > MP_RING_SIZE_MAX) {
    out.push_back(
        rangeProblem("node.ring_size", std::to_string(node.ringSize), 2, MP_RING_SIZE_MAX));
  } else if (!isPrime(node.ringSize)) {
    out.push_back("node.ring_size: " + std::to_string(node.ringSize) + " is not prime");
  }
  if (node.connTableSize < kMinConnTableSize || node.connTableSize > kMaxConnTableSize) {
    out.push_back(rangeProblem("node.conn_table_size", std::to_string(node.connTableSize),
                               kMinConnTableSize, kMaxConnTableSize));
  }
  if (node.halfTableSize < kMinConnTableSize || node.halfTableSize > kMaxHalfTableSize) {
    out.push_back(rangeProblem("node.half_table_size", std::to_string(node.halfTableSize),
                               kMinConnTableSize, kMaxHalfTableSize));
  }
  if (const uint32_t s = node.flowCacheSlots; s > MP_FLOW_CACHE_SLOTS_MAX) {
    out.push_back(rangeProblem("node.flow_cache_slots", std::to_string(s), 0,
                               MP_FLOW_CACHE_SLOTS_MAX));
  } else if (s == 1 || (s & (s - 1)) != 0) {
    out.push_back("node.flow_cache_slots: " + std::to_string(s) +
                  " is not a power of two (slots per CPU, e.g. 4096; 0 turns the cache off)");
  }
  if (node.synFloodThreshold < kMinSynFloodThreshold) {
    out.push_back(rangeProblem("node.syn_flood_threshold", std::to_string(node.synFloodThreshold),
                               kMinSynFloodThreshold, kMaxSynFloodThreshold) +
                  " (unanswered SYNs per second that turn a service's auto SYN protection on)");
  }
  if (node.xdpMode != "native" && node.xdpMode != "generic") {
    out.push_back("node.xdp_mode: " + show(node.xdpMode) + " is not one of native, generic");
  }
  checkPath(node.apiSocket, "node.api_socket", out);
  if (node.apiSocket.size() > kMaxUnixSocketPath) {
    out.push_back("node.api_socket: " + node.apiSocket + " is longer than " +
                  std::to_string(kMaxUnixSocketPath) + " bytes (a unix socket path's limit)");
  }
  checkPath(node.pinRoot, "node.pin_root", out);
  checkPath(node.stateFile, "node.state_file", out);
  if (!node.metricsListen.empty() && !parseListenAddress(node.metricsListen)) {
    out.push_back("node.metrics_listen: " + show(node.metricsListen) +
                  " is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464; \"\" turns metrics off)");
  }
  checkGroupName(node.apiAdminGroup, "node.api_admin_group", out);
  checkGroupName(node.apiReadGroup, "node.api_read_group", out);
  if (!node.auditLog.empty()) checkPath(node.auditLog, "node.audit_log", out);
  return out;
}

std::vector<std::string> validateService(const NodeSpec& node, const ServiceSpec& svc,
                                         const std::string& path) {
  std::vector<std::string> out;
  if (!isValidServiceName(svc.name)) {
    out.push_back(dotted(path, "name") + ": " + show(svc.name) +
                  " does not match [a-z0-9][a-z0-9-_.]{0,62}");
  }
  bool vip_ok = false;
  if (auto why = addressProblem(svc.vip)) {
    out.push_back(dotted(path, "vip") + ": " + show(svc.vip.toString()) + " " + *why);
  } else {
    vip_ok = true;
    const auto& node_addr = svc.vip.isV4() ? node.ipv4 : node.ipv6;
    if (!node_addr && svc.forwarding != ForwardingMode::kDnat) {
      out.push_back(dotted(path, "vip") + ": " + svc.vip.toString() + " is " + familyName(svc.vip) +
                    " but node." + (svc.vip.isV4() ? "ipv4" : "ipv6") +
                    " is not set (the SNAT source for " + familyName(svc.vip) + " services)");
    }
  }
  if (svc.port == 0) out.push_back(rangeProblem(dotted(path, "port"), "0", 1, 65535));
  if (toString(svc.protocol) == "unknown") {
    out.push_back(dotted(path, "protocol") + ": " + std::to_string(int(svc.protocol)) +
                  " is not one of tcp, udp");
  }
  if (toString(svc.algorithm) == "unknown") {
    out.push_back(dotted(path, "algorithm") + ": " + std::to_string(int(svc.algorithm)) +
                  " is not one of " + kAlgorithmNames);
  } else if (svc.algorithm == Algorithm::kLeastLatency && svc.protocol != Protocol::kTcp) {
    out.push_back(dotted(path, "algorithm") +
                  ": least-latency needs protocol tcp (it compares SYN -> SYN-ACK times), not " +
                  toString(svc.protocol));
  }
  if (toString(svc.forwarding) == "unknown") {
    out.push_back(dotted(path, "forwarding") + ": " + std::to_string(int(svc.forwarding)) +
                  " is not one of nat, dnat");
  }

  std::map<std::pair<IpAddress, uint16_t>, size_t> seen;
  for (size_t i = 0; i < svc.endpoints.size(); ++i) {
    const EndpointSpec& ep = svc.endpoints[i];
    const std::string ep_path = indexed(path, "endpoints", i);
    if (auto why = addressProblem(ep.address)) {
      out.push_back(ep_path + ".address: " + show(ep.address.toString()) + " " + *why);
    } else if (vip_ok && ep.address.family() != svc.vip.family()) {
      out.push_back(ep_path + ".address: " + ep.address.toString() + " is " +
                    familyName(ep.address) + " but the VIP " + svc.vip.toString() + " is " +
                    familyName(svc.vip));
    }
    if (ep.port == 0) out.push_back(rangeProblem(ep_path + ".port", "0", 1, 65535));
    if (ep.weight > kMaxWeight) {
      out.push_back(rangeProblem(ep_path + ".weight", std::to_string(ep.weight), 0, kMaxWeight));
    }
    const auto [it, inserted] = seen.emplace(std::make_pair(ep.address, ep.port), i);
    if (!inserted) {
      out.push_back(ep_path + ": " + ep.key() + " is listed twice (also endpoints[" +
                    std::to_string(it->second) + "])");
    }
  }
  validateHealth(svc, dotted(path, "health"), out);
  validateTimeouts(svc.timeouts, dotted(path, "timeouts"), out);
  if (toString(svc.onEject) == "unknown") {
    out.push_back(dotted(path, "on_eject") + ": " + std::to_string(int(svc.onEject)) +
                  " is not one of keep, reset");
  }
  validateSynProtection(svc, path, out);
  const uint64_t needed = uint64_t{kRingPerEndpoint} * svc.endpoints.size();
  if (node.ringSize == 0 && svc.endpoints.size() > kMaxRingEndpoints) {
    out.push_back(dotted(path, "endpoints") + ": " + std::to_string(svc.endpoints.size()) +
                  " endpoints exceed the most a service can have, " +
                  std::to_string(kMaxRingEndpoints) + " (" + std::to_string(kRingPerEndpoint) +
                  " ring slots each in a ring of at most " + std::to_string(MP_RING_SIZE_MAX) +
                  "); split it into several services");
  } else if (node.ringSize != 0 && needed > node.ringSize) {
    out.push_back(dotted(path, "endpoints") + ": " + std::to_string(svc.endpoints.size()) +
                  " endpoints need node.ring_size >= " + std::to_string(kRingPerEndpoint) + " x " +
                  std::to_string(svc.endpoints.size()) + " = " + std::to_string(needed) +
                  ", but it is " + std::to_string(node.ringSize));
  }
  return out;
}

std::vector<std::string> validateState(const DesiredState& state) {
  return validateChange(state, nullptr);
}

std::vector<std::string> validateChange(const DesiredState& state, const DesiredState* valid) {
  // A service equal to the one at its index in a state already found valid, on the same node,
  // passes validateService again: only the checks across services are made for it.
  const bool sameNode = valid != nullptr && valid->node == state.node;
  auto checked = [&](size_t i) {
    return sameNode && i < valid->services.size() && valid->services[i] == state.services[i];
  };
  std::vector<std::string> out = validateNode(state.node);
  std::map<std::string, size_t> names;
  std::map<std::tuple<IpAddress, uint16_t, Protocol>, size_t> frontends;
  // A dnat endpoint's replies are told apart by (address, port, protocol) alone: it can serve
  // one dnat service only (the endpoint would see the same client tuple from two VIPs).
  std::map<std::tuple<IpAddress, uint16_t, Protocol>, size_t> dnatEndpoints;
  size_t endpoints = 0;
  for (size_t i = 0; i < state.services.size(); ++i) {
    const ServiceSpec& svc = state.services[i];
    const auto path = [i] { return "services[" + std::to_string(i) + "]"; };
    if (svc.forwarding == ForwardingMode::kDnat) {
      for (const EndpointSpec& ep : svc.endpoints) {
        const auto key = std::make_tuple(ep.address, ep.port, svc.protocol);
        if (auto [it, fresh] = dnatEndpoints.emplace(key, i); !fresh && it->second != i) {
          out.push_back(path() + ".endpoints: " + ep.key() + "/" + toString(svc.protocol) +
                        " is in another dnat service too (services[" + std::to_string(it->second) +
                        "], " + state.services[it->second].name +
                        "): a dnat endpoint serves one dnat service, since its replies are "
                        "matched by its address and port");
        }
      }
    }
    if (!checked(i)) {
      auto problems = validateService(state.node, svc, path());
      out.insert(out.end(), problems.begin(), problems.end());
    }
    endpoints += svc.endpoints.size();
    if (auto [it, fresh] = names.emplace(svc.name, i); !fresh) {
      out.push_back(path() + ".name: " + show(svc.name) + " is used twice (also services[" +
                    std::to_string(it->second) + "])");
    }
    const auto frontend = std::make_tuple(svc.vip, svc.port, svc.protocol);
    if (auto [it, fresh] = frontends.emplace(frontend, i); !fresh) {
      const std::string vip = svc.vip.isV6() ? "[" + svc.vip.toString() + "]" : svc.vip.toString();
      out.push_back(path() + ": " + vip + ":" + std::to_string(svc.port) + "/" +
                    toString(svc.protocol) + " is used twice (also services[" +
                    std::to_string(it->second) + "], " + state.services[it->second].name + ")");
    }
  }
  if (state.services.size() > MP_MAX_SERVICES) {
    out.push_back("services: " + std::to_string(state.services.size()) +
                  " services exceed the maximum of " + std::to_string(MP_MAX_SERVICES));
  }
  if (endpoints > MP_MAX_ENDPOINTS) {
    out.push_back("services: " + std::to_string(endpoints) +
                  " endpoints in all exceed the maximum of " + std::to_string(MP_MAX_ENDPOINTS));
  }
  return out;
}

namespace {
ServiceIndex::Frontend frontendOf(const ServiceSpec& s) { return {s.vip, s.port, s.protocol}; }

std::string showFrontend(const ServiceIndex::Frontend& f) {
  const auto& [vip, port, protocol] = f;
  const std::string addr = vip.isV6() ? "[" + vip.toString() + "]" : vip.toString();
  return addr + ":" + std::to_string(port) + "/" + toString(protocol);
}
}  // namespace

void ServiceIndex::rebuild(const std::vector<ServiceSpec>& services) {
  byName_.clear();
  frontends_.clear();
  dnat_.clear();
  endpoints_ = 0;
  for (const ServiceSpec& s : services) add(s);
}

void ServiceIndex::add(const ServiceSpec& s) {
  remove(s.name);
  Held held{frontendOf(s), s.endpoints.size(), {}};
  if (s.forwarding == ForwardingMode::kDnat) {
    for (const EndpointSpec& e : s.endpoints) {
      held.dnat.emplace_back(e.address, e.port, s.protocol);
      dnat_.emplace(held.dnat.back(), s.name);
    }
  }
  frontends_.emplace(held.frontend, s.name);
  endpoints_ += held.endpoints;
  byName_.emplace(s.name, std::move(held));
}

void ServiceIndex::remove(const std::string& name) {
  auto it = byName_.find(name);
  if (it == byName_.end()) return;
  // Only the entries this service holds: a state that failed validation may map a key to another.
  auto drop = [&](std::map<Frontend, std::string>& m, const Frontend& key) {
    if (auto e = m.find(key); e != m.end() && e->second == name) m.erase(e);
  };
  drop(frontends_, it->second.frontend);
  for (const Frontend& f : it->second.dnat) drop(dnat_, f);
  endpoints_ -= it->second.endpoints;
  byName_.erase(it);
}

const std::string* ServiceIndex::frontendOwner(const Frontend& frontend) const {
  auto it = frontends_.find(frontend);
  return it == frontends_.end() ? nullptr : &it->second;
}

const std::string* ServiceIndex::dnatOwner(const Frontend& endpoint) const {
  auto it = dnat_.find(endpoint);
  return it == dnat_.end() ? nullptr : &it->second;
}

size_t ServiceIndex::endpointsOf(const std::string& name) const {
  auto it = byName_.find(name);
  return it == byName_.end() ? 0 : it->second.endpoints;
}

std::vector<std::string> validateChanges(const NodeSpec& node, const ServiceIndex& index,
                                         const ServiceChanges& changes) {
  std::vector<std::string> out;
  // Every service the change names leaves what it holds in the index; the ones put hold anew.
  std::set<std::string> named;
  std::set<std::string> removed;
  for (const std::string& name : changes.removed) {
    if (!named.insert(name).second) out.push_back("services[" + name + "]: removed twice");
    removed.insert(name);
  }
  for (const ServiceSpec& s : changes.put) {
    if (!named.insert(s.name).second) {
      out.push_back("services[" + s.name +
                    "]: " + (removed.contains(s.name) ? "both removed and put" : "put twice"));
    }
  }
  const auto heldByOther = [&](const std::string* owner, const std::string& self) {
    return owner != nullptr && *owner != self && !named.contains(*owner);
  };
  std::map<ServiceIndex::Frontend, std::string> frontends;
  std::map<ServiceIndex::Frontend, std::string> dnat;
  size_t services = index.services();
  size_t endpoints = index.endpoints();
  for (const std::string& name : changes.removed) {
    if (index.contains(name)) {
      --services;
      endpoints -= index.endpointsOf(name);
    }
  }
  for (const ServiceSpec& s : changes.put) {
    const std::string path = "services[" + s.name + "]";
    auto problems = validateService(node, s, path);
    out.insert(out.end(), problems.begin(), problems.end());
    if (index.contains(s.name)) {
      endpoints -= index.endpointsOf(s.name);
    } else {
      ++services;
    }
    endpoints += s.endpoints.size();
    const auto frontend = frontendOf(s);
    const std::string* owner = index.frontendOwner(frontend);
    if (heldByOther(owner, s.name)) {
      out.push_back(path + ": " + showFrontend(frontend) + " is used by service " + *owner);
    } else if (auto [it, fresh] = frontends.emplace(frontend, s.name); !fresh) {
      out.push_back(path + ": " + showFrontend(frontend) + " is used by service " + it->second +
                    " too");
    }
    if (s.forwarding != ForwardingMode::kDnat) continue;
    for (const EndpointSpec& e : s.endpoints) {
      const ServiceIndex::Frontend key{e.address, e.port, s.protocol};
      const std::string* other = index.dnatOwner(key);
      std::string also;
      if (heldByOther(other, s.name)) {
        also = *other;
      } else if (auto [it, fresh] = dnat.emplace(key, s.name); !fresh && it->second != s.name) {
        also = it->second;
      }
      if (!also.empty()) {
        out.push_back(path + ".endpoints: " + e.key() + "/" + toString(s.protocol) +
                      " is in another dnat service too (" + also +
                      "): a dnat endpoint serves one dnat service, since its replies are matched "
                      "by its address and port");
      }
    }
  }
  if (services > MP_MAX_SERVICES) {
    out.push_back("services: " + std::to_string(services) + " services exceed the maximum of " +
                  std::to_string(MP_MAX_SERVICES));
  }
  if (endpoints > MP_MAX_ENDPOINTS) {
    out.push_back("services: " + std::to_string(endpoints) +
                  " endpoints in all exceed the maximum of " + std::to_string(MP_MAX_ENDPOINTS));
  }
  return out;
}

void requireValid(const DesiredState& state) {
  auto problems = validateState(state);
  if (!problems.empty()) throw ConfigError(std::move(problems));
}

ConfigDocument parseConfigDocument(const std::string& yaml_text) {
  YAML::Node root;
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(yaml_text);
    if (documents.size() > 1) {
      throw ConfigError("config: " + std::to_string(documents.size()) +
                        " YAML documents (separated by ---); one is expected");
    }
    if (!documents.empty()) root = documents[0];
  } catch (const YAML::Exception& e) {
    const std::string where = e.mark.is_null()
                                  ? std::string()
                                  : " at line " + std::to_string(e.mark.line + 1) + ", column " +
                                        std::to_string(e.mark.column + 1);
    throw ConfigError("config: YAML syntax error" + where + ": " + e.msg);
  }
  ConfigDocument doc;
  if (!root.IsDefined() || root.IsNull()) return doc;  // an empty text: no node, no services
  try {
    checkKeys(root, "", {"node", "services"});
    if (auto n = field(root, "node")) doc.node = readNode(*n);
    if (auto n = field(root, "services")) {
      if (!n->IsSequence()) fail("services", describe(*n) + " is not a list", *n);
      // Each service is read on its own, so one refusal names every bad service at once
      // rather than the first (an operator fixes a reload in one round).
      std::vector<std::string> problems;
      for (size_t i = 0; i < n->size(); ++i) {
        try {
          doc.services.push_back(readService((*n)[i], indexed("", "services", i)));
        } catch (const ConfigError& e) {
          problems.insert(problems.end(), e.problems().begin(), e.problems().end());
        }
      }
      if (!problems.empty()) throw ConfigError(std::move(problems));
    }
  } catch (const YAML::Exception& e) {
    // yaml-cpp only throws here on misuse of a node; say so rather than crash.
    throw ConfigError(std::string("config: unreadable YAML: ") + e.what());
  }
  return doc;
}

DesiredState parseConfigYaml(const std::string& yaml_text) {
  ConfigDocument doc = parseConfigDocument(yaml_text);
  if (!doc.node) throw ConfigError("node: required section is missing");
  DesiredState state{std::move(*doc.node), std::move(doc.services)};
  requireValid(state);
  return state;
}

DesiredState parseConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the config file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(path + ": cannot read the config file");
  try {
    return parseConfigYaml(text.str());
  } catch (const ConfigError& e) {
    std::vector<std::string> problems;
    for (const auto& p : e.problems()) problems.push_back(path + ": " + p);
    throw ConfigError(std::move(problems));
  }
}

}  // namespace meshpath
