// state_diff.cpp — diffStates over the JSON shapes of json.h, so every field the API and the
// config know is compared and named as they name it, without a comparison per field here.
#include "state_diff.h"

#include <map>

#include "json.h"

namespace meshpath {

using nlohmann::json;

namespace {

// A service's JSON with its endpoint list turned into an object keyed by ADDRESS:PORT.
json keyedService(const ServiceSpec& svc) {
  json j = toJson(svc);
  json endpoints = json::object();
  for (const EndpointSpec& ep : svc.endpoints) {
    json e = toJson(ep);
    e.erase("address");
    e.erase("port");
    endpoints[ep.key()] = std::move(e);
  }
  j["endpoints"] = std::move(endpoints);
  j.erase("name");
  return j;
}

// Appends every difference between `a` and `b` under `path`. Objects are compared key by key
// (keys of both, in order); anything else (arrays included) as a whole value.
void diffJson(const std::string& path, const json& a, const json& b,
              std::vector<FieldChange>& out) {
  if (a.is_object() && b.is_object()) {
    std::map<std::string, std::pair<const json*, const json*>> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys[it.key()].first = &it.value();
    for (auto it = b.begin(); it != b.end(); ++it) keys[it.key()].second = &it.value();
    for (const auto& [key, values] : keys) {
      const bool endpointList = path.size() >= 10 && path.ends_with(".endpoints");
      const std::string sub = endpointList ? path + "[" + key + "]" : path + "." + key;
      if (values.first == nullptr) {
        out.push_back({sub, nullptr, *values.second});
      } else if (values.second == nullptr) {
        out.push_back({sub, *values.first, nullptr});
      } else {
        diffJson(sub, *values.first, *values.second, out);
      }
    }
    return;
  }
  if (a != b) out.push_back({path, a, b});
}

std::string valueText(const json& v) {
  if (v.is_null()) return "(none)";
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

}  // namespace

StateDiff diffStates(const DesiredState& from, const DesiredState& to) {
  StateDiff d;
  diffJson("node", toJson(from.node), toJson(to.node), d.changes);
  std::map<std::string, const ServiceSpec*> before;
  for (const ServiceSpec& s : from.services) before[s.name] = &s;
  std::map<std::string, const ServiceSpec*> after;
  for (const ServiceSpec& s : to.services) after[s.name] = &s;
  for (const ServiceSpec& s : from.services) {
    if (!after.contains(s.name)) d.servicesRemoved.push_back(s.name);
  }
  for (const ServiceSpec& s : to.services) {
    auto it = before.find(s.name);
    if (it == before.end()) {
      d.servicesAdded.push_back(s.name);
      d.addedDescriptions.push_back(toString(s.protocol) + " " +
                                    EndpointSpec{s.vip, s.port, 0}.key() + ", " +
                                    std::to_string(s.endpoints.size()) + " endpoint" +
                                    (s.endpoints.size() == 1 ? "" : "s"));
      continue;
    }
    if (*it->second == s) continue;
    const size_t mark = d.changes.size();
    diffJson("services." + s.name, keyedService(*it->second), keyedService(s), d.changes);
    // Specs that differ only in the order of their endpoints are the same service.
    if (d.changes.size() != mark) d.servicesChanged.push_back(s.name);
  }
  return d;
}

json StateDiff::toJson() const {
  json changesJson = json::array();
  for (const FieldChange& c : changes) {
    changesJson.push_back({{"path", c.path}, {"from", c.from}, {"to", c.to}});
  }
  return {{"services_added", servicesAdded},
          {"services_removed", servicesRemoved},
          {"services_changed", servicesChanged},
          {"changes", std::move(changesJson)}};
}

std::vector<std::string> StateDiff::lines() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < servicesAdded.size(); ++i) {
    std::string line = "+ service " + servicesAdded[i];
    if (i < addedDescriptions.size()) line += " (" + addedDescriptions[i] + ")";
    out.push_back(std::move(line));
  }
  for (const std::string& name : servicesRemoved) out.push_back("- service " + name);
  for (const FieldChange& c : changes) {
    if (c.from.is_null() && !c.to.is_null()) {
      out.push_back("+ " + c.path + " " + valueText(c.to));
    } else if (c.to.is_null() && !c.from.is_null()) {
      out.push_back("- " + c.path);
    } else {
      out.push_back("~ " + c.path + ": " + valueText(c.from) + " -> " + valueText(c.to));
    }
  }
  return out;
}

std::string StateDiff::summary() const {
  if (empty()) return "no changes";
  std::string s;
  for (const std::string& line : lines()) {
    if (!s.empty()) s += "; ";
    s += line;
  }
  return s;
}

}  // namespace meshpath
