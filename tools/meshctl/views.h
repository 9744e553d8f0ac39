// views.h — meshd's JSON answers as the text meshctl prints: pure functions from the daemon's JSON
// (docs/api.md) to aligned tables and key/value lines, tested without a daemon (meshctl_test).
// Fields the daemon does not send read as empty or zero, so an older meshd still prints.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace meshpath::meshctl {

// GET /v1/status: the daemon, its interfaces, the node's settings, the SNAT sources and port
// range, the store of the services, and the connection tables.
std::string statusText(const nlohmann::json& status);
// The "store" object of /v1/status, the values of statusText's "store" lines: where the services
// come from and, for etcd, whether it answers and the revision applied; then, when there are, the
// keys left out and a revision not applied. None for a meshd that sends no "store".
std::vector<std::string> storeLines(const nlohmann::json& store);
// The "connections" object of /v1/status as a table: used / capacity, bytes per entry, memory.
std::string connectionTablesText(const nlohmann::json& connections);

// GET /v1/services/{name}: the service's settings (timeouts and on_eject included) and a table of
// its endpoints with their shares.
std::string serviceText(const nlohmann::json& service);
// A Service's SYN protection settings: "auto (SYN cookies while a flood lasts), connect_retries
// 2"; "- (tcp only)" for UDP, "-" from a meshd without them.
std::string synSettingText(const nlohmann::json& service);
// The timeouts that apply to the service's protocol: "tcp_syn 5s, tcp_established 3h, ...".
std::string timeoutsText(const nlohmann::json& service);

// GET /v1/stats (one service's, when `only` names one): counters per endpoint with the shares of
// weights from `services` (GET /v1/services; may be empty), SNAT ports used / capacity; then the
// datapath exceptions and the flow cache when showing all.
std::string statsText(const nlohmann::json& stats, const nlohmann::json& services,
                      const std::string& only = "");
// An endpoint's SNAT ports as "250/31.7K (0.8%)"; "-" when the capacity is not known.
std::string snatPortsCell(const nlohmann::json& endpoint);
// A service's "syn_protection" object of /v1/stats: "auto, on  cookies 12.3K  valid 4  invalid
// 12.2K  retries 0  failed 0  switched on 1, off 0  unanswered 4.1K/s"; "off" alone when off
// with nothing counted. statsText prints it under the service's line.
std::string synProtectionLine(const nlohmann::json& syn);
// "hits 1.2M (97.1%), misses 35k, of them 2k conflicts; 0 packets bypassed", or "off".
std::string flowCacheLine(const nlohmann::json& flowCache);

// GET /v1/health: per service its check and a table of its endpoints' states.
std::string healthText(const nlohmann::json& health);
// One Event: "TIME  SERVICE ENDPOINT  FROM -> TO  REASON".
std::string eventLine(const nlohmann::json& event);

}  // namespace meshpath::meshctl
