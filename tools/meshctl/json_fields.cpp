// json_fields.cpp — tolerant readers of meshd's JSON, and small text helpers.
#include "json_fields.h"

#include <algorithm>
#include <cstdio>

#include "table.h"

namespace meshpath::meshctl {

using nlohmann::json;

uint64_t u64(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<uint64_t>();
}

double num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<double>();
}

std::string str(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

const json& obj(const json& j, const char* key) {
  static const json kEmpty = json::object();
  return j.is_object() && j.contains(key) && j[key].is_object() ? j[key] : kEmpty;
}

const json& arr(const json& j, const char* key) {
  static const json kEmpty = json::array();
  return j.is_object() && j.contains(key) && j[key].is_array() ? j[key] : kEmpty;
}

const json& stats(const json& j) { return obj(j, "stats"); }

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string hostPort(const std::string& address, uint64_t port) {
  bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::string endpointKey(const json& ep) { return hostPort(str(ep, "address"), u64(ep, "port")); }

std::string activeConns(const json& ep) {
  if (!ep.is_object() || !ep.contains("active_conns") || !ep["active_conns"].is_number())
    return "-";
  return humanCount(ep["active_conns"].get<uint64_t>());
}

std::string drainState(const json& ep) {
  if (!ep.is_object() || !ep.contains("drain") || !ep["drain"].is_string()) return "";
  return ep["drain"].get<std::string>();
}

std::string keyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  std::string out;
  for (const auto& [k, v] : rows) out += k + std::string(width - k.size() + 2, ' ') + v + '\n';
  return out;
}

}  // namespace meshpath::meshctl
