// json.h — the JSON shapes of docs/api.md for the model: used by meshd's REST API and state file
// and by meshctl. Output holds only the spec's fields; meshd adds "id", "ring_size" and "stats",
// which input ignores.
//
//   Endpoint: {"address": "10.0.2.11", "port": 8080, "weight": 1}         (weight defaults to 1)
//   Service:  {"name": "web", "vip": "10.0.0.100", "port": 80, "protocol": "tcp",
//              "algorithm": "maglev", "forwarding": "nat", "endpoints": [Endpoint...]}
//              "health": Health,        (output only when it is not all defaults)
//              "timeouts": Timeouts, "on_eject": "keep|reset",   (output always)
//              "syn_protection": "off|auto|always", "connect_retries": 0..7}
//             (TCP only, output for TCP services: default auto and 2; a UDP service refuses
//              connect_retries and any syn_protection but auto)
//             (protocol, algorithm, forwarding default to tcp, maglev, nat; endpoints to [];
//              algorithm: maglev | random | round-robin | least-conn | least-latency)
//   Health:   {"type": "none|tcp|http|udp", "interval": "2s", "timeout": "1s", "rise": 2,
//              "fall": 3, "jitter": "0ms", "http_path": "/", "http_host": "",
//              "http_statuses": "200-399", "udp_send": "", "udp_expect": "",
//              "ejection_time": "2s", "max_ejection_time": "5m", "max_ejected_percent": 50,
//              "panic_threshold": 50, "passive_fall": 3}   (every field optional)
//   Timeouts: {"tcp_syn": "5s", "tcp_established": "3h", "tcp_fin": "60s", "tcp_closed": "2s",
//              "udp": "30s", "udp_replied": "120s"}      (every field optional)
//   Node:     {"interfaces": [...], "ipv4": "10.0.2.1" | null, "ipv6": ... | null,
//              "snat_pool": ["10.0.2.5", ...] (input: prefixes too), "snat_port_min": 0,
//              "snat_port_max": 0 (0-0: auto), "ring_size": "auto" | 65537, "conn_table_size":
//              1048576, "half_table_size": 262144, "flow_cache_slots": 4096, "syn_flood_threshold":
//              1024, "xdp_mode": "native", "api_socket": "...", "pin_root": "...", "state_file":
//              "...", "metrics_listen": "127.0.0.1:9464", "api_admin_group": "meshpath",
//              "api_read_group": "meshpath-read", "audit_log": "..."} (missing fields take
//              defaults)
//   State:    {"node": Node, "services": [Service...]}
//
// Input is strict: wrong types, unknown keys, missing required fields and values a field cannot
// hold throw JsonInputError naming the field ("endpoints[0].port: \"80\" is not a whole number").
// The rules across fields are validateState's / validateService's (config.h), not these.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "config.h"
#include "model.h"

namespace meshpath {

// Bad JSON input. A ConfigError, so one handler can refuse bad YAML and bad JSON alike.
class JsonInputError : public ConfigError {
 public:
  using ConfigError::ConfigError;
};

nlohmann::json toJson(const EndpointSpec& ep);
nlohmann::json toJson(const HealthCheckSpec& health);
nlohmann::json toJson(const ConnTimeouts& timeouts);
nlohmann::json toJson(const ServiceSpec& svc);  // "health" only when not all defaults
nlohmann::json toJson(const NodeSpec& node);
nlohmann::json ringSizeJson(uint32_t nodeRingSize);  // "auto" (0) or the number
nlohmann::json toJson(const DesiredState& state);

// `path` prefixes field names in messages ("services[2]" -> "services[2].endpoints[0].port").
EndpointSpec endpointFromJson(const nlohmann::json& j, const std::string& path = "");
HealthCheckSpec healthFromJson(const nlohmann::json& j, const std::string& path = "health");
ConnTimeouts timeoutsFromJson(const nlohmann::json& j, const std::string& path = "timeouts");
ServiceSpec serviceFromJson(const nlohmann::json& j, const std::string& path = "");
NodeSpec nodeFromJson(const nlohmann::json& j, const std::string& path = "node");
DesiredState stateFromJson(const nlohmann::json& j);

// The body of PUT /v1/services/{name}/endpoints/{address}/{port}: {"weight": n}, n in 0..10000.
uint32_t weightFromJson(const nlohmann::json& j);

// nlohmann::json::parse, with a syntax error turned into JsonInputError ("<what>: invalid JSON
// at byte 12: ...").
nlohmann::json parseJson(const std::string& text, const std::string& what = "body");

// ADL hooks, so `json j = spec;` and `j.get<ServiceSpec>()` work; get<> throws JsonInputError.
void to_json(nlohmann::json& j, const IpAddress& ip);
void from_json(const nlohmann::json& j, IpAddress& ip);
void to_json(nlohmann::json& j, const EndpointSpec& ep);
void from_json(const nlohmann::json& j, EndpointSpec& ep);
void to_json(nlohmann::json& j, const ServiceSpec& svc);
void from_json(const nlohmann::json& j, ServiceSpec& svc);
void to_json(nlohmann::json& j, const NodeSpec& node);
void from_json(const nlohmann::json& j, NodeSpec& node);
void to_json(nlohmann::json& j, const DesiredState& state);
void from_json(const nlohmann::json& j, DesiredState& state);

}  // namespace meshpath
