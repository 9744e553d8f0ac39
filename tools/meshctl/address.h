// address.h — what meshctl checks itself before asking meshd: endpoint addresses written
// ADDR:PORT (IPv6 as [ADDR]:PORT) with an optional @WEIGHT, VIPs, ports, weights, service names,
// lease TTLs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace meshpath::meshctl {

inline constexpr uint32_t kMaxWeight = 10000;  // docs/config.md: weight 0..10000

struct EndpointArg {
  std::string address;  // canonical text form (inet_ntop), as meshd reports it
  bool v6 = false;
  uint16_t port = 0;
  std::optional<uint32_t> weight;
  std::string key() const;  // "10.0.2.11:8080" or "[fd00::11]:8080"
};

// Each parser returns the value or, in `error`, a sentence saying what is wrong and how to write
// it instead.
std::optional<std::string> canonicalAddress(const std::string& text, bool* v6);
std::optional<EndpointArg> parseEndpoint(const std::string& text, bool allowWeight,
                                         std::string* error);
std::optional<uint16_t> parsePort(const std::string& text, std::string* error);
std::optional<uint32_t> parseWeight(const std::string& text, std::string* error);
bool validServiceName(const std::string& name, std::string* error);
// An etcd lease's TTL (register --ttl): "10s", "2m"; whole seconds, at least 1.
std::optional<int64_t> parseTtlSeconds(const std::string& text, std::string* error);

}  // namespace meshpath::meshctl
