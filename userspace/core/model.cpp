// model.cpp — value types of the desired state: address parsing and printing, enum names,
// endpoint keys.
#include "model.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>
#include <unordered_map>

#include "abi.h"

namespace meshpath {

static_assert(static_cast<int>(Algorithm::kMaglev) == MP_ALG_MAGLEV);
static_assert(static_cast<int>(Algorithm::kRandom) == MP_ALG_RANDOM);
static_assert(static_cast<int>(Algorithm::kRoundRobin) == MP_ALG_ROUND_ROBIN);
static_assert(static_cast<int>(Algorithm::kLeastConn) == MP_ALG_LEAST_CONN);
static_assert(static_cast<int>(Algorithm::kLeastLatency) == MP_ALG_LEAST_LATENCY);
static_assert(kConnectRetriesDefault == MP_CONNECT_RETRIES_DEFAULT);
static_assert(kMaxConnectRetries == MP_SVC_RETRIES_MASK);
static_assert(kSynFloodThresholdDefault == MP_SYN_FLOOD_THRESHOLD_DEFAULT);

std::optional<IpAddress> IpAddress::parse(const std::string& text) {
  // inet_pton reads a C string; an embedded NUL would silently cut the text short.
  if (text.empty() || text.find('\0') != std::string::npos) return std::nullopt;
  in_addr a4{};
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1) return v4(a4);
  in6_addr a6{};
  if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) return v6(a6);
  return std::nullopt;
}

IpAddress IpAddress::v4(const in_addr& a) {
  IpAddress ip;
  ip.family_ = 4;
  std::memcpy(ip.bytes_.data(), &a, sizeof(a));
  return ip;
}

IpAddress IpAddress::v6(const in6_addr& a) {
  IpAddress ip;
  ip.family_ = 6;
  std::memcpy(ip.bytes_.data(), &a, sizeof(a));
  return ip;
}

std::string IpAddress::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family_ == 4) {
    // By hand with to_chars, not inet_ntop: glibc formats IPv4 with sprintf, and every change of
    // the desired state formats each endpoint's key several times (ids, rings, health, state
    // file): sprintf was a fifth of a one-endpoint change with 1,000 endpoints.
    char* p = buf;
    for (size_t i = 0; i < 4; ++i) {
      if (i != 0) *p++ = '.';
      p = std::to_chars(p, buf + sizeof(buf), bytes_[i]).ptr;
    }
    return std::string(buf, p);
  }
  if (family_ == 6) {
    in6_addr a{};
    std::memcpy(&a, bytes_.data(), sizeof(a));
    if (inet_ntop(AF_INET6, &a, buf, sizeof(buf)) != nullptr) return buf;
  }
  return "";
}

std::string toString(Protocol p) {
  switch (p) {
    case Protocol::kTcp:
      return "tcp";
    case Protocol::kUdp:
      return "udp";
  }
  return "unknown";
}

std::string toString(Algorithm a) {
  const auto i = static_cast<size_t>(a);
  return i < MP_ALG_MAX ? mp_algorithm_names[i] : "unknown";
}

std::string toString(ForwardingMode f) {
  switch (f) {
    case ForwardingMode::kNat:
      return "nat";
    case ForwardingMode::kDnat:
      return "dnat";
  }
  return "unknown";
}

std::optional<Protocol> parseProtocol(const std::string& s) {
  if (s == "tcp") return Protocol::kTcp;
  if (s == "udp") return Protocol::kUdp;
  return std::nullopt;
}

std::optional<Algorithm> parseAlgorithm(const std::string& s) {
  for (size_t i = 0; i < MP_ALG_MAX; ++i) {
    if (s == mp_algorithm_names[i]) return static_cast<Algorithm>(i);
  }
  return std::nullopt;
}

std::optional<ForwardingMode> parseForwardingMode(const std::string& s) {
  if (s == "nat") return ForwardingMode::kNat;
  if (s == "dnat") return ForwardingMode::kDnat;
  return std::nullopt;
}

std::string toString(HealthCheckType t) {
  switch (t) {
    case HealthCheckType::kNone:
      return "none";
    case HealthCheckType::kTcp:
      return "tcp";
    case HealthCheckType::kHttp:
      return "http";
    case HealthCheckType::kUdp:
      return "udp";
  }
  return "unknown";
}

std::optional<HealthCheckType> parseHealthCheckType(const std::string& s) {
  if (s == "none") return HealthCheckType::kNone;
  if (s == "tcp") return HealthCheckType::kTcp;
  if (s == "http") return HealthCheckType::kHttp;
  if (s == "udp") return HealthCheckType::kUdp;
  return std::nullopt;
}

std::string toString(MeshQuorum q) { return q == MeshQuorum::kLocal ? "local" : "majority"; }

std::optional<MeshQuorum> parseMeshQuorum(const std::string& s) {
  if (s == "majority") return MeshQuorum::kMajority;
  if (s == "local") return MeshQuorum::kLocal;
  return std::nullopt;
}

std::optional<uint64_t> parseDurationMs(const std::string& text) {
  const auto unit_at =
      std::find_if(text.begin(), text.end(), [](char c) { return c < '0' || c > '9'; });
  const std::string digits(text.begin(), unit_at);
  const std::string unit(unit_at, text.end());
  if (digits.empty() || digits.size() > 9) return std::nullopt;
  uint64_t value = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (unit == "ms") return value;
  if (unit == "s") return value * 1000;
  if (unit == "m") return value * 60 * 1000;
  if (unit == "h") return value * 3600 * 1000;
  return std::nullopt;
}

std::string formatUtcTime(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

std::string formatDurationMs(uint64_t ms) {
  constexpr uint64_t kHour = 3600 * 1000;
  if (ms != 0 && ms % kHour == 0) return std::to_string(ms / kHour) + "h";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string toString(OnEject e) {
  switch (e) {
    case OnEject::kKeep:
      return "keep";
    case OnEject::kReset:
      return "reset";
  }
  return "unknown";
}

std::optional<OnEject> parseOnEject(const std::string& s) {
  if (s == "keep") return OnEject::kKeep;
  if (s == "reset") return OnEject::kReset;
  return std::nullopt;
}

std::string toString(SynProtection m) {
  switch (m) {
    case SynProtection::kOff:
      return "off";
    case SynProtection::kAuto:
      return "auto";
    case SynProtection::kAlways:
      return "always";
  }
  return "unknown";
}

std::optional<SynProtection> parseSynProtection(const std::string& s) {
  if (s == "off") return SynProtection::kOff;
  if (s == "auto") return SynProtection::kAuto;
  if (s == "always") return SynProtection::kAlways;
  return std::nullopt;
}

bool sameEndpoints(const ServiceSpec& a, const ServiceSpec& b) {
  return std::equal(a.endpoints.begin(), a.endpoints.end(), b.endpoints.begin(), b.endpoints.end(),
                    [](const EndpointSpec& x, const EndpointSpec& y) {
                      return x.address == y.address && x.port == y.port;
                    });
}

std::string EndpointSpec::key() const {
  std::string out = address.isV6() ? "[" + address.toString() + "]:" : address.toString() + ":";
  char port_text[8];
  out.append(port_text, std::to_chars(port_text, port_text + sizeof(port_text), port).ptr);
  return out;
}

ApplyReport applyChanges(std::vector<ServiceSpec>& services, const ServiceChanges& changes) {
  // Where each name stands: a scan per name for a few (one endpoint's change on a node of 10,000
  // services allocates nothing), an index of every name for many.
  const size_t names = changes.put.size() + changes.removed.size();
  std::unordered_map<std::string_view, size_t> index;
  if (names > 8) {
    index.reserve(services.size());
    for (size_t i = 0; i < services.size(); ++i) index.emplace(services[i].name, i);
  }
  auto find = [&](const std::string& name) -> std::optional<size_t> {
    if (names > 8) {
      auto it = index.find(name);
      return it == index.end() ? std::nullopt : std::optional(it->second);
    }
    for (size_t i = 0; i < services.size(); ++i) {
      if (services[i].name == name) return i;
    }
    return std::nullopt;
  };
  ApplyReport report;
  std::vector<size_t> gone;
  for (const std::string& name : changes.removed) {
    if (auto at = find(name)) {
      gone.push_back(*at);
      report.removed.push_back(name);
    }
  }
  std::vector<ServiceSpec> added;
  for (const ServiceSpec& s : changes.put) {
    if (auto at = find(s.name)) {
      if (!(services[*at] == s)) {
        services[*at] = s;
        report.changed.push_back(s.name);
      }
    } else {
      added.push_back(s);
      report.added.push_back(s.name);
    }
  }
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  for (auto it = gone.rbegin(); it != gone.rend(); ++it) {
    services.erase(services.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  services.insert(services.end(), std::make_move_iterator(added.begin()),
                  std::make_move_iterator(added.end()));
  return report;
}

}  // namespace meshpath
