#include "store_layout.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "config.h"
#include "json.h"

namespace meshpath::store {

using json = nlohmann::json;

namespace {

std::string servicesDir(const std::string& prefix) { return prefix + "/services/"; }
std::string endpointsDir(const std::string& prefix) { return prefix + "/endpoints/"; }

// "10.0.2.11:8080" or "[fd00::11]:8080" back into an address and a port.
std::optional<EndpointSpec> parseEndpointKey(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 >= text.size()) return std::nullopt;
  std::string addr = text.substr(0, colon);
  if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') {
    addr = addr.substr(1, addr.size() - 2);
  }
  auto address = IpAddress::parse(addr);
  if (!address) return std::nullopt;
  unsigned port = 0;
  for (char c : text.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return std::nullopt;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port == 0 || port > 65535) return std::nullopt;
  EndpointSpec ep;
  ep.address = *address;
  ep.port = static_cast<uint16_t>(port);
  return ep;
}

}  // namespace

std::string serviceKey(const std::string& prefix, const std::string& service) {
  return servicesDir(prefix) + service;
}

std::string endpointKey(const std::string& prefix, const std::string& service,
                        const EndpointSpec& endpoint) {
  return endpointsDir(prefix) + service + "/" + endpoint.key();
}

std::string healthDir(const std::string& prefix) { return prefix + "/health/"; }

std::string healthKey(const std::string& prefix, const std::string& node) {
  return healthDir(prefix) + node;
}

std::string verdictsValue(const Verdicts& verdicts) {
  json j = json::object();
  for (const auto& [service, keys] : verdicts) {
    if (!keys.empty()) j[service] = keys;
  }
  return j.dump();
}

std::map<std::string, Verdicts> StoreMirror::verdictsOfOthers(const std::string& self) const {
  std::map<std::string, Verdicts> out;
  const std::string dir = healthDir(prefix_);
  for (auto it = keys_.lower_bound(dir); it != keys_.end() && it->first.starts_with(dir); ++it) {
    const std::string node = it->first.substr(dir.size());
    if (node == self || node.empty()) continue;
    json j = json::parse(it->second.value, nullptr, false);
    if (!j.is_object()) continue;
    Verdicts& v = out[node];  // a node that reports nothing failing counts too
    for (const auto& [service, keys] : j.items()) {
      if (!keys.is_array()) continue;
      for (const json& k : keys) {
        if (k.is_string()) v[service].insert(k.get<std::string>());
      }
    }
  }
  return out;
}

std::string serviceValue(const ServiceSpec& service) {
  json j = toJson(service);
  j.erase("name");
  j.erase("endpoints");
  return j.dump();
}

std::string endpointValue(const EndpointSpec& endpoint) {
  return json{{"weight", endpoint.weight}}.dump();
}

void StoreMirror::reset(const std::vector<KeyValue>& kvs) {
  keys_.clear();
  deleted_.clear();
  for (const KeyValue& kv : kvs) keys_[kv.key] = kv;
  allChanged_ = true;
}

std::string StoreMirror::serviceOf(const std::string& key) const {
  for (const std::string& dir : {servicesDir(prefix_), endpointsDir(prefix_)}) {
    if (key.starts_with(dir)) {
      std::string rest = key.substr(dir.size());
      return rest.substr(0, rest.find('/'));
    }
  }
  return "";
}

void StoreMirror::apply(const std::vector<WatchEvent>& events) {
  for (const WatchEvent& ev : events) {
    auto held = keys_.find(ev.kv.key);
    if (held != keys_.end() && held->second.modRevision >= ev.kv.modRevision) continue;
    auto gone = deleted_.find(ev.kv.key);
    if (gone != deleted_.end() && gone->second >= ev.kv.modRevision) continue;
    if (ev.deleted) {
      if (held != keys_.end()) keys_.erase(held);
      deleted_[ev.kv.key] = ev.kv.modRevision;
    } else {
      keys_[ev.kv.key] = ev.kv;
      if (gone != deleted_.end()) deleted_.erase(gone);
    }
    if (ev.kv.key.starts_with(servicesDir(prefix_)) ||
        ev.kv.key.starts_with(endpointsDir(prefix_))) {
      changed_.insert(serviceOf(ev.kv.key));
    }
  }
}

int64_t StoreMirror::modRevision(const std::string& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? 0 : it->second.modRevision;
}

void StoreMirror::rebuild(const std::string& name, const NodeSpec& node) {
  built_.erase(name);
  std::vector<KeyProblem> problems;
  auto problem = [&](const std::string& key, const std::string& what) {
    problems.push_back(KeyProblem{key, what});
  };
  const std::string sdir = servicesDir(prefix_);
  const std::string edir = endpointsDir(prefix_);
  std::optional<ServiceSpec> service;
  if (name.empty()) {
    if (auto it = keys_.find(sdir); it != keys_.end()) problem(it->first, "a service without a name");
  } else if (auto it = keys_.find(sdir + name); it != keys_.end()) {
    try {
      json j = parseJson(it->second.value, "value");
      if (!j.is_object()) throw ConfigError("the value is not a JSON object");
      if (j.contains("endpoints")) {
        throw ConfigError("endpoints: not here; each endpoint is a key of its own under " + edir +
                          name + "/");
      }
      j["name"] = name;
      j["endpoints"] = json::array();
      ServiceSpec s = serviceFromJson(j);
      if (auto bad = validateService(node, s); !bad.empty()) throw ConfigError(bad);
      service = std::move(s);
    } catch (const std::exception& e) {
      problem(it->first, e.what());
    }
  }
  // The service's endpoint keys (endpoints/NAME/...), and a key endpoints/NAME itself.
  const std::string mine = edir + name;
  for (auto it = keys_.lower_bound(mine); it != keys_.end() && it->first.starts_with(mine); ++it) {
    const std::string rest = it->first.substr(mine.size());
    if (!rest.empty() && rest[0] != '/') continue;  // another service whose name starts alike
    if (name.empty() || rest.size() <= 1) {
      problem(it->first, "not PREFIX/endpoints/SERVICE/ADDR:PORT");
      continue;
    }
    auto ep = parseEndpointKey(rest.substr(1));
    if (!ep) {
      problem(it->first, "'" + rest.substr(1) + "' is not ADDR:PORT ([ADDR]:PORT for IPv6)");
      continue;
    }
    if (!service) {
      problem(it->first, "no service " + name + " (the endpoint waits for it)");
      continue;
    }
    try {
      if (!it->second.value.empty()) {
        ep->weight = weightFromJson(parseJson(it->second.value, "value"));
      }
      service->endpoints.push_back(*ep);
    } catch (const std::exception& e) {
      problem(it->first, e.what());
    }
  }
  if (problems.empty()) {
    problems_.erase(name);
  } else {
    problems_[name] = std::move(problems);
  }
  if (!service) return;
  std::sort(service->endpoints.begin(), service->endpoints.end(),
            [](const EndpointSpec& a, const EndpointSpec& b) {
              return std::tie(a.address, a.port) < std::tie(b.address, b.port);
            });
  built_[name] = std::move(*service);
}

std::set<std::string> StoreMirror::rebuildChanged(const NodeSpec& node,
                                                  std::vector<KeyProblem>* problems) {
  if (!builtFor_ || !(*builtFor_ == node)) allChanged_ = true;
  if (allChanged_) {
    built_.clear();
    problems_.clear();
    changed_.clear();
    for (const auto& [key, kv] : keys_) {
      if (key.starts_with(servicesDir(prefix_)) || key.starts_with(endpointsDir(prefix_))) {
        changed_.insert(serviceOf(key));
      }
    }
    allChanged_ = false;
    builtFor_ = node;
  }
  for (const std::string& name : changed_) rebuild(name, node);
  if (problems != nullptr) {
    for (const auto& [name, list] : problems_) {
      problems->insert(problems->end(), list.begin(), list.end());
    }
  }
  return std::exchange(changed_, {});
}

std::optional<ServiceChanges> StoreMirror::changes(const NodeSpec& node,
                                                   std::vector<KeyProblem>* problems) {
  if (allChanged_ || !builtFor_ || !(*builtFor_ == node)) return std::nullopt;
  ServiceChanges out;
  for (const std::string& name : rebuildChanged(node, problems)) {
    if (name.empty()) continue;  // keys of no service: problems only
    if (auto it = built_.find(name); it != built_.end()) {
      out.put.push_back(it->second);
    } else {
      out.removed.push_back(name);
    }
  }
  return out;
}

std::vector<ServiceSpec> StoreMirror::services(const NodeSpec& node,
                                               std::vector<KeyProblem>* problems) {
  rebuildChanged(node, problems);
  std::vector<ServiceSpec> out;
  out.reserve(built_.size());
  for (const auto& [name, s] : built_) out.push_back(s);
  return out;
}

StoreWrite writeFor(const StoreMirror& mirror, const std::vector<ServiceSpec>& before,
                    const std::vector<ServiceSpec>& after) {
  const std::string& prefix = mirror.prefix();
  StoreWrite w;
  auto guard = [&](const std::string& key) {
    w.compares.push_back(TxnCompare{key, mirror.modRevision(key)});
  };
  auto put = [&](const std::string& key, const std::string& value) {
    guard(key);
    // A registered endpoint keeps its lease when its weight is changed here.
    auto held = mirror.keys().find(key);
    int64_t lease = held == mirror.keys().end() ? 0 : held->second.lease;
    w.ops.push_back(TxnOp{TxnOp::Kind::kPut, key, value, lease});
  };
  auto del = [&](const std::string& key) {
    guard(key);
    w.ops.push_back(TxnOp{TxnOp::Kind::kDelete, key, "", 0});
  };
  std::map<std::string, const ServiceSpec*> old, now;
  for (const ServiceSpec& s : before) old[s.name] = &s;
  for (const ServiceSpec& s : after) now[s.name] = &s;
  auto endpointsOf = [](const ServiceSpec* s) {
    std::map<std::string, const EndpointSpec*> m;
    if (s != nullptr) {
      for (const EndpointSpec& e : s->endpoints) m[e.key()] = &e;
    }
    return m;
  };
  for (const auto& [name, s] : old) {
    if (now.count(name) != 0) continue;
    del(serviceKey(prefix, name));
    for (const auto& [key, e] : endpointsOf(s)) del(endpointKey(prefix, name, *e));
  }
  for (const auto& [name, s] : now) {
    auto was = old.find(name);
    const ServiceSpec* prev = was == old.end() ? nullptr : was->second;
    if (prev != nullptr && *prev == *s) continue;  // most services of a change: cheap to skip
    if (prev == nullptr || serviceValue(*prev) != serviceValue(*s)) {
      put(serviceKey(prefix, name), serviceValue(*s));
    }
    auto eBefore = endpointsOf(prev);
    auto eAfter = endpointsOf(s);
    for (const auto& [key, e] : eBefore) {
      if (eAfter.count(key) == 0) del(endpointKey(prefix, name, *e));
    }
    for (const auto& [key, e] : eAfter) {
      auto p = eBefore.find(key);
      if (p == eBefore.end() || p->second->weight != e->weight) {
        put(endpointKey(prefix, name, *e), endpointValue(*e));
      }
    }
  }
  return w;
}

}  // namespace meshpath::store
