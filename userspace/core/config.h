// config.h — reading the YAML config (docs/config.md) into the model, and the validation rules
// every source of desired state goes through: the config file at start, POST /v1/apply, and the
// REST edits (the daemon copies its state, applies the edit, validates, and only then commits).
//
// Every refusal names the field path and the offending value, e.g.
//   services[1].endpoints[0].weight: 20000 is out of range 0..10000
// Parsing stops at the first structural problem (syntax, types, unknown keys, missing fields,
// values a field cannot hold) and says on which line; validation reports every rule that fails.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "model.h"
#include "ring.h"  // isPrime, ring sizes

namespace meshpath {

// node.conn_table_size (established connections) and node.half_table_size (half-open flows):
// entries, each with its reverse-NAT entry.
inline constexpr uint32_t kMinConnTableSize = 1024;
inline constexpr uint32_t kMaxConnTableSize = 64u << 20;
inline constexpr uint32_t kMaxHalfTableSize = 16u << 20;
// node.syn_flood_threshold: unanswered SYNs per second per service.
inline constexpr uint32_t kMinSynFloodThreshold = 1;
inline constexpr uint32_t kMaxSynFloodThreshold = 0xffffffffu;

// Refused desired state. what() is the problems joined with "; ".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(const std::string& problem);
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// A config text as written, parsed but not yet validated across fields. `node` is empty when the
// text has no node section (allowed for POST /v1/apply, which keeps the running node's).
struct ConfigDocument {
  std::optional<NodeSpec> node;
  std::vector<ServiceSpec> services;
};

// Parses the YAML text; throws ConfigError for structural problems only.
ConfigDocument parseConfigDocument(const std::string& yaml_text);

// Parses and validates a whole config (node section required); throws ConfigError.
DesiredState parseConfigYaml(const std::string& yaml_text);

// parseConfigYaml on the file's contents; an unreadable file is a ConfigError too.
DesiredState parseConfigFile(const std::string& path);

// The rules of docs/config.md. Each returns the problems found (empty: valid), each a
// "path: value ..." message. validateState checks everything: the node, each service, and the
// rules across services (unique names, unique VIP:port/protocol, limits on totals).
std::vector<std::string> validateState(const DesiredState& state);
// validateState of a change to a state `valid` that passed it (nullptr: none): the same answer,
// without checking again one by one the services the change left as they were (an edit of one
// endpoint on a node of 1,000 checks one service, and the rules across services).
std::vector<std::string> validateChange(const DesiredState& state, const DesiredState* valid);

// The rules across services, kept for a state that passed validateState so that a change of a few
// services is checked without walking the others: who holds each VIP:port/protocol, each dnat
// endpoint, and the totals. The reconciler keeps one beside the state it applied.
class ServiceIndex {
 public:
  using Frontend = std::tuple<IpAddress, uint16_t, Protocol>;
  void rebuild(const std::vector<ServiceSpec>& services);
  void add(const ServiceSpec& service);
  void remove(const std::string& name);
  // The name of the service holding it, or nullptr.
  const std::string* frontendOwner(const Frontend& frontend) const;
  const std::string* dnatOwner(const Frontend& endpoint) const;
  bool contains(const std::string& name) const { return byName_.contains(name); }
  size_t endpointsOf(const std::string& name) const;
  size_t services() const { return byName_.size(); }
  size_t endpoints() const { return endpoints_; }

 private:
  struct Held {
    Frontend frontend;
    size_t endpoints = 0;
    std::vector<Frontend> dnat;  // its endpoints, when it is a dnat service
  };
  std::map<std::string, Held> byName_;
  std::map<Frontend, std::string> frontends_;
  std::map<Frontend, std::string> dnat_;
  size_t endpoints_ = 0;
};

// validateState of `changes` made to a state that passed it, indexed by `index` on `node`: each
// service put is checked on its own (paths "services[NAME]") and against the others through the
// index; the same rules, in time proportional to the change.
std::vector<std::string> validateChanges(const NodeSpec& node, const ServiceIndex& index,
                                         const ServiceChanges& changes);

// The node's own fields (paths "node.*").
std::vector<std::string> validateNode(const NodeSpec& node);

// One service against the node it would run on: its fields, its endpoints, address families,
// node.ring_size against its endpoint count. Paths are prefixed with `path` ("services[3]"); with
// the default empty prefix they are relative to the service object ("endpoints[0].weight").
std::vector<std::string> validateService(const NodeSpec& node, const ServiceSpec& service,
                                         const std::string& path = "");

// validateState, throwing ConfigError with all problems when there are any.
void requireValid(const DesiredState& state);

// node.metrics_listen: "127.0.0.1:9464" or "[::1]:9464" (a literal address, port 1..65535).
struct ListenAddress {
  std::string host;  // the address without brackets
  uint16_t port = 0;
};
std::optional<ListenAddress> parseListenAddress(const std::string& text);

// [a-z0-9][a-z0-9-_.]{0,62}
bool isValidServiceName(const std::string& name);

// An HTTP status or range as written in a health block: "200" or "200-399" (three digits each);
// std::nullopt otherwise. Whether the range makes sense is validateService's call.
std::optional<std::pair<uint16_t, uint16_t>> parseStatusRange(const std::string& text);

// Why `ip` cannot be a VIP, endpoint or node address (unset, unspecified, loopback, multicast,
// broadcast, IPv4-mapped IPv6), or std::nullopt when it can.
std::optional<std::string> addressProblem(const IpAddress& ip);

}  // namespace meshpath
