#include "address.h"

#include <arpa/inet.h>

#include <charconv>

#include "model.h"  // parseDurationMs

namespace meshpath::meshctl {
namespace {

std::optional<uint64_t> parseUnsigned(const std::string& text) {
  uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

}  // namespace

std::string EndpointArg::key() const {
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::optional<std::string> canonicalAddress(const std::string& text, bool* v6) {
  char buf[INET6_ADDRSTRLEN];
  in_addr a4;
  in6_addr a6;
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1) {
    *v6 = false;
    return std::string(inet_ntop(AF_INET, &a4, buf, sizeof(buf)));
  }
  if (inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
    *v6 = true;
    return std::string(inet_ntop(AF_INET6, &a6, buf, sizeof(buf)));
  }
  return std::nullopt;
}

std::optional<uint16_t> parsePort(const std::string& text, std::string* error) {
  auto value = parseUnsigned(text);
  if (!value || *value == 0 || *value > 65535) {
    *error = "bad port '" + text + "': a port is a number from 1 to 65535";
    return std::nullopt;
  }
  return static_cast<uint16_t>(*value);
}

std::optional<uint32_t> parseWeight(const std::string& text, std::string* error) {
  auto value = parseUnsigned(text);
  const std::string range = "a weight is a number from 0 to " + std::to_string(kMaxWeight) +
                            " (0 admits no new connections)";
  if (!value) {
    bool negative = !text.empty() && text[0] == '-' && parseUnsigned(text.substr(1));
    *error =
        (negative ? "weight '" + text + "' is out of range: " : "bad weight '" + text + "': ") +
        range;
    return std::nullopt;
  }
  if (*value > kMaxWeight) {
    *error = "weight '" + text + "' is out of range: " + range;
    return std::nullopt;
  }
  return static_cast<uint32_t>(*value);
}

std::optional<EndpointArg> parseEndpoint(const std::string& text, bool allowWeight,
                                         std::string* error) {
  const std::string example = "write ADDR:PORT, e.g. 10.0.2.11:8080 or [fd00::11]:8080";
  std::string rest = text;
  EndpointArg ep;
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    if (!allowWeight) {
      *error = "bad endpoint '" + text + "': give the weight with --weight N, not @N";
      return std::nullopt;
    }
    auto weight = parseWeight(rest.substr(at + 1), error);
    if (!weight) return std::nullopt;
    ep.weight = weight;
    rest.resize(at);
  }
  std::string host, port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      *error = "bad endpoint '" + text + "': " + example;
      return std::nullopt;
    }
    host = rest.substr(1, close - 1);
    port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string::npos) {
      *error = "bad endpoint '" + text + "': the port is missing; " + example;
      return std::nullopt;
    }
    if (rest.find(':') != colon) {
      *error = "bad endpoint '" + text + "': IPv6 addresses go in brackets, e.g. [fd00::11]:8080";
      return std::nullopt;
    }
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  auto address = canonicalAddress(host, &ep.v6);
  if (!address) {
    *error = "bad address '" + host + "' in endpoint '" + text +
             "': not an IPv4 or IPv6 address; " + example;
    return std::nullopt;
  }
  if (!rest.empty() && rest.front() == '[' && !ep.v6) {
    *error = "bad endpoint '" + text + "': brackets are for IPv6 only; " + example;
    return std::nullopt;
  }
  ep.address = *address;
  std::string portError;
  auto p = parsePort(port, &portError);
  if (!p) {
    *error = "bad endpoint '" + text + "': " + portError;
    return std::nullopt;
  }
  ep.port = *p;
  return ep;
}

bool validServiceName(const std::string& name, std::string* error) {
  auto lowerOrDigit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = !name.empty() && name.size() <= 63 && lowerOrDigit(name.front());
  for (char c : name) {
    ok = ok && (lowerOrDigit(c) || c == '-' || c == '_' || c == '.');
  }
  if (!ok) {
    *error = "bad service name '" + name +
             "': 1-63 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit";
  }
  return ok;
}

std::optional<int64_t> parseTtlSeconds(const std::string& text, std::string* error) {
  // etcd's own limit (MaxLeaseTTL); a larger TTL is refused by etcd, not by its clients.
  constexpr uint64_t kMaxLeaseTtlSeconds = 9'000'000'000;
  const std::string form = "write whole seconds of at least 1, e.g. 10s or 2m";
  auto ms = parseDurationMs(text);
  if (!ms) {
    *error = "bad ttl '" + text + "': " + form;
    return std::nullopt;
  }
  if (*ms < 1000 || *ms % 1000 != 0) {
    *error = "ttl '" + text + "' is not whole seconds: an etcd lease lives whole seconds; " + form;
    return std::nullopt;
  }
  if (*ms / 1000 > kMaxLeaseTtlSeconds) {
    *error = "ttl '" + text + "' is longer than etcd's longest lease (" +
             std::to_string(kMaxLeaseTtlSeconds) + "s)";
    return std::nullopt;
  }
  return static_cast<int64_t>(*ms / 1000);
}

}  // namespace meshpath::meshctl
