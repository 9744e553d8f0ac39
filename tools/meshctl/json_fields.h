// json_fields.h — reading meshd's JSON without trusting its shape too much: a missing or mistyped
// field reads as 0, "" or an empty object, so an older or newer daemon still prints.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace meshpath::meshctl {

uint64_t u64(const nlohmann::json& j, const char* key);
double num(const nlohmann::json& j, const char* key);
// A string field as it is; any other value as its JSON text ("null", "3").
std::string str(const nlohmann::json& j, const char* key);
// j[key] when it is an object (an array for arr()), an empty one otherwise.
const nlohmann::json& obj(const nlohmann::json& j, const char* key);
const nlohmann::json& arr(const nlohmann::json& j, const char* key);
const nlohmann::json& stats(const nlohmann::json& j);  // obj(j, "stats")

std::string fixed(double v, int digits);
std::string hostPort(const std::string& address, uint64_t port);  // "[fd00::1]:80"
std::string endpointKey(const nlohmann::json& ep);                // from "address" and "port"

// An endpoint's open connections as meshd counts them; "-" where it cannot (UDP has no close).
std::string activeConns(const nlohmann::json& ep);
// "draining" / "drained" for an endpoint at weight 0, "" otherwise.
std::string drainState(const nlohmann::json& ep);

// "key  value" lines, the values aligned after the longest key.
std::string keyValues(const std::vector<std::pair<std::string, std::string>>& rows);

}  // namespace meshpath::meshctl
