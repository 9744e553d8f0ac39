#include "control_plane.h"

#include <spdlog/spdlog.h>

#include <fstream>
#include <sstream>
#include <tuple>

#include "config.h"
#include "json.h"

namespace meshpath {

namespace {

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

std::string listText(const std::vector<std::string>& v) { return "[" + join(v, ", ") + "]"; }

std::string optText(const std::optional<IpAddress>& a) { return a ? a->toString() : "none"; }

ApiError notFound(const std::string& what) {
  return ApiError{404, what + " not found",
                  "see what exists with `meshctl service list` (or `meshctl service show NAME`)"};
}

EndpointSpec* findEndpoint(ServiceSpec& service, const IpAddress& address, uint16_t port) {
  for (EndpointSpec& e : service.endpoints) {
    if (e.address == address && e.port == port) return &e;
  }
  return nullptr;
}

// The rules of one service, with field paths relative to what the client sent ("endpoints[0]
// .weight"), before the whole state is checked (whose paths say "services[3]...").
std::optional<ApiError> checkService(const NodeSpec& node, const ServiceSpec& service) {
  std::vector<std::string> problems = validateService(node, service);
  if (problems.empty()) return std::nullopt;
  return ApiError{400, join(problems, "; "), "fix the fields named and send it again"};
}

}  // namespace

std::string describeNodeChanges(const NodeSpec& from, const NodeSpec& to) {
  std::vector<std::string> changes;
  auto note = [&](const std::string& field, const std::string& a, const std::string& b) {
    if (a != b) changes.push_back(field + " " + a + " -> " + b);
  };
  note("interfaces", listText(from.interfaces), listText(to.interfaces));
  note("ipv4", optText(from.ipv4), optText(to.ipv4));
  note("ipv6", optText(from.ipv6), optText(to.ipv6));
  std::vector<std::string> poolFrom, poolTo;
  for (const IpAddress& a : from.snatPool) poolFrom.push_back(a.toString());
  for (const IpAddress& a : to.snatPool) poolTo.push_back(a.toString());
  note("snat_pool", listText(poolFrom), listText(poolTo));
  note("snat_ports", std::to_string(from.snatPortMin) + "-" + std::to_string(from.snatPortMax),
       std::to_string(to.snatPortMin) + "-" + std::to_string(to.snatPortMax));
  note("ring_size", ringSizeJson(from.ringSize).dump(), ringSizeJson(to.ringSize).dump());
  note("conn_table_size", std::to_string(from.connTableSize), std::to_string(to.connTableSize));
  note("half_table_size", std::to_string(from.halfTableSize), std::to_string(to.halfTableSize));
  note("flow_cache_slots", std::to_string(from.flowCacheSlots), std::to_string(to.flowCacheSlots));
  note("syn_flood_threshold", std::to_string(from.synFloodThreshold),
       std::to_string(to.synFloodThreshold));
  note("xdp_mode", from.xdpMode, to.xdpMode);
  note("api_socket", from.apiSocket, to.apiSocket);
  note("pin_root", from.pinRoot, to.pinRoot);
  note("state_file", from.stateFile, to.stateFile);
  note("metrics_listen", from.metricsListen, to.metricsListen);
  note("api_admin_group", from.apiAdminGroup, to.apiAdminGroup);
  note("api_read_group", from.apiReadGroup, to.apiReadGroup);
  note("audit_log", from.auditLog, to.auditLog);
  return join(changes, ", ");
}

ControlPlane::ControlPlane(Dataplane& dataplane, Reconciler& reconciler, StateStore& store,
                           std::string configPath, bool adopted)
    : dataplane_(dataplane),
      reconciler_(reconciler),
      store_(store),
      configPath_(std::move(configPath)),
      adopted_(adopted),
      startedAt_(std::chrono::steady_clock::now()) {}

const ServiceSpec* ControlPlane::findService(const std::string& name) const {
  for (const ServiceSpec& s : desired().services) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

ApiResult<ApplyReport> ControlPlane::commitWith(
    const std::function<ApiResult<ApplyReport>()>& realizeIt,
    const std::function<std::vector<ServiceSpec>()>& before,
    const std::function<std::vector<ServiceSpec>()>& after) {
  if (shared_ != nullptr) {
    if (auto refused = shared_->refuseWrites()) return *refused;
  }
  const std::vector<ServiceSpec> was = shared_ != nullptr ? before() : std::vector<ServiceSpec>{};
  const auto started = std::chrono::steady_clock::now();
  auto report = realizeIt();
  if (!report) return report.error();
  if (shared_ != nullptr) unansweredTicket_ = shared_->publish(was, after());
  if (metrics_ != nullptr) {
    metrics_->controlChange(ChangeSource::kApi, std::chrono::steady_clock::now() - started);
  }
  logApplied("applied", *report);
  return report;
}

void ControlPlane::logApplied(const char* what, const ApplyReport& r) {
  if (!r.added.empty() || !r.removed.empty() || !r.changed.empty()) {
    spdlog::info("{}: added {} removed {} changed {}", what, listText(r.added), listText(r.removed),
                 listText(r.changed));
  }
}

ApiResult<ApplyReport> ControlPlane::commit(const DesiredState& next) {
  return commitWith([&] { return realize(next); }, [&] { return desired().services; },
                    [&] { return next.services; });
}

ApiResult<ApplyReport> ControlPlane::commit(const ServiceChanges& changes) {
  return commitWith([&] { return realize(changes); },
                    [&] {
                      std::vector<ServiceSpec> touched;
                      for (const std::string& name : changes.removed) {
                        if (const ServiceSpec* s = findService(name)) touched.push_back(*s);
                      }
                      for (const ServiceSpec& put : changes.put) {
                        if (const ServiceSpec* s = findService(put.name)) touched.push_back(*s);
                      }
                      return touched;
                    },
                    [&] { return changes.put; });
}

ApiResult<ApplyReport> ControlPlane::realize(const DesiredState& next) {
  std::vector<std::string> problems =
      validateChange(next, reconciler_.applied() ? &reconciler_.desired() : nullptr);
  if (!problems.empty()) {
    return ApiError{400, join(problems, "; "), "fix the fields named and send it again",
                    nlohmann::json{{"problems", problems}}};
  }
  // The audit's "before" of a whole-state change: the whole state (this path is linear anyway).
  std::optional<std::vector<ServiceSpec>> was;
  if (touched_) was = desired().services;
  auto report = realized(reconciler_.apply(next));
  if (report && touched_) {
    for (const ServiceSpec& s : *was) {
      if (!touched_->before.contains(s.name) && !touched_->after.contains(s.name)) {
        touched_->before.emplace(s.name, s);
      }
    }
    touchAfter(*report);
  }
  return report;
}

ApiResult<ApplyReport> ControlPlane::realize(const ServiceChanges& changes) {
  if (!reconciler_.applied()) {
    DesiredState next = desired();
    applyChanges(next.services, changes);
    return realize(next);
  }
  std::vector<std::string> problems = validateChanges(desired().node, reconciler_.index(), changes);
  if (!problems.empty()) {
    return ApiError{400, join(problems, "; "), "fix the fields named and send it again",
                    nlohmann::json{{"problems", problems}}};
  }
  if (touched_) {
    for (const std::string& name : changes.removed) touchBefore(name);
    for (const ServiceSpec& s : changes.put) touchBefore(s.name);
  }
  auto report = realized(reconciler_.applyChanges(changes));
  if (report && touched_) touchAfter(*report);
  return report;
}

void ControlPlane::recordTouched() { touched_.emplace(); }

void ControlPlane::touchBefore(const std::string& name) {
  if (touched_->before.contains(name) || touched_->after.contains(name)) return;
  if (const ServiceSpec* s = findService(name)) touched_->before.emplace(name, *s);
}

void ControlPlane::touchAfter(const ApplyReport& report) {
  for (const std::string& name : report.removed) touched_->after[name] = std::nullopt;
  for (const auto* names : {&report.added, &report.changed}) {
    for (const std::string& name : *names) {
      const ServiceSpec* s = findService(name);
      touched_->after[name] = s != nullptr ? std::optional(*s) : std::nullopt;
    }
  }
}

StateDiff ControlPlane::takeTouchedDiff() {
  if (!touched_) return {};
  DesiredState before{desired().node, {}};
  DesiredState after{desired().node, {}};
  for (const auto& [name, spec] : touched_->before) {
    before.services.push_back(spec);
    // Touched but left as it was (put unchanged): the same on both sides.
    if (!touched_->after.contains(name)) after.services.push_back(spec);
  }
  for (const auto& [name, spec] : touched_->after) {
    if (spec) after.services.push_back(*spec);
  }
  touched_.reset();
  return diffStates(before, after);
}

ApiResult<ApplyReport> ControlPlane::realized(Result<ApplyReport> report) {
  if (!report) {
    const Error& e = report.error();
    spdlog::error("reconcile failed: {}{}{}", e.toString(),
                  e.where.empty() ? "" : " [" + e.where + "]",
                  e.hint.empty() ? "" : " (" + e.hint + ")");
    return ApiError{500, "dataplane: " + e.toString(),
                    e.hint.empty() ? "nothing was changed; see meshd's log" : e.hint};
  }
  // The change is live; a state file that cannot be written only costs it at the next restart.
  if (saver_ != nullptr) {
    saver_->markChanged();  // copied by the saver's snapshot when it saves (setStateSaver)
  } else if (auto saved = store_.save(reconciler_.desired(), reconciler_.ids()); !saved) {
    spdlog::error("state file not saved, a restart would forget this change: {}",
                  saved.error().toString());
  }
  for (const auto& listener : committedListeners_) listener();
  return report.value();
}

ApiResult<ApplyReport> ControlPlane::commitFromStore(const DesiredState& next) {
  auto report = realize(next);
  if (report) logApplied("applied from the store", *report);
  return report;
}

ApiResult<ApplyReport> ControlPlane::commitFromStore(const ServiceChanges& changes) {
  auto report = realize(changes);
  if (report) logApplied("applied from the store", *report);
  return report;
}

void ControlPlane::setStateSaver(StateSaver* saver) {
  saver_ = saver;
  if (saver_ != nullptr) {
    saver_->setSnapshot([this] { return SavedState{reconciler_.desired(), reconciler_.ids()}; });
  }
}

void ControlPlane::afterSaved(std::function<void(std::optional<ApiError>)> done) {
  const uint64_t ticket = std::exchange(unansweredTicket_, 0);
  auto stored = [this, ticket, done = std::move(done)]() mutable {
    if (shared_ == nullptr || ticket == 0) {
      done(std::nullopt);
      return;
    }
    shared_->whenWritten(ticket, std::move(done));
  };
  // With a store, etcd holds the change durably; the state file (saved at most every second) is
  // only what a restart forwards with while etcd is down.
  if (saver_ == nullptr || shared_ != nullptr) {
    stored();
    return;
  }
  saver_->whenSaved(saver_->submitted(), std::move(stored));
}

ApiResult<ServiceSpec> ControlPlane::createService(const ServiceSpec& service) {
  if (findService(service.name) != nullptr) {
    return ApiError{409, "service " + service.name + " already exists",
                    "delete it first (`meshctl service del " + service.name +
                        "`), or add endpoints with `meshctl endpoint add " + service.name +
                        " ADDR:PORT`"};
  }
  for (const ServiceSpec& s : desired().services) {
    if (s.vip == service.vip && s.port == service.port && s.protocol == service.protocol) {
      return ApiError{409,
                      "service " + s.name + " already uses " + serviceKeyOf(service).toString(),
                      "pick another VIP, port or protocol"};
    }
  }
  if (auto bad = checkService(desired().node, service)) return *bad;
  auto r = commit(ServiceChanges{{service}, {}});
  if (!r) return r.error();
  return *findService(service.name);
}

ApiResult<std::string> ControlPlane::deleteService(const std::string& name) {
  if (findService(name) == nullptr) return notFound("service " + name);
  auto r = commit(ServiceChanges{{}, {name}});
  if (!r) return r.error();
  return name;
}

ApiResult<EndpointSpec> ControlPlane::addEndpoint(const std::string& service,
                                                  const EndpointSpec& endpoint) {
  const ServiceSpec* found = findService(service);
  if (found == nullptr) return notFound("service " + service);
  ServiceSpec s = *found;
  if (findEndpoint(s, endpoint.address, endpoint.port) != nullptr) {
    return ApiError{409, "endpoint " + endpoint.key() + " already in service " + service,
                    "change its weight with PUT /v1/services/" + service + "/endpoints/" +
                        endpoint.address.toString() + "/" + std::to_string(endpoint.port)};
  }
  s.endpoints.push_back(endpoint);
  if (auto bad = checkService(desired().node, s)) return *bad;
  auto r = commit(ServiceChanges{{std::move(s)}, {}});
  if (!r) return r.error();
  return endpoint;
}

ApiResult<EndpointSpec> ControlPlane::setEndpointWeight(const std::string& service,
                                                        const IpAddress& address, uint16_t port,
                                                        uint32_t weight) {
  const ServiceSpec* found = findService(service);
  if (found == nullptr) return notFound("service " + service);
  ServiceSpec s = *found;
  EndpointSpec* e = findEndpoint(s, address, port);
  if (e == nullptr) {
    return notFound("endpoint " + EndpointSpec{address, port, 1}.key() + " of service " + service);
  }
  e->weight = weight;
  const EndpointSpec changed = *e;
  if (auto bad = checkService(desired().node, s)) return *bad;
  auto r = commit(ServiceChanges{{std::move(s)}, {}});
  if (!r) return r.error();
  return changed;
}

ApiResult<std::string> ControlPlane::removeEndpoint(const std::string& service,
                                                    const IpAddress& address, uint16_t port) {
  const ServiceSpec* found = findService(service);
  if (found == nullptr) return notFound("service " + service);
  ServiceSpec s = *found;
  std::string key = EndpointSpec{address, port, 1}.key();
  if (findEndpoint(s, address, port) == nullptr) {
    return notFound("endpoint " + key + " of service " + service);
  }
  std::erase_if(s.endpoints,
                [&](const EndpointSpec& e) { return e.address == address && e.port == port; });
  auto r = commit(ServiceChanges{{std::move(s)}, {}});
  if (!r) return r.error();
  return key;
}

ApiResult<ConfigApplied> ControlPlane::applyConfigText(const std::string& yamlText, bool dryRun,
                                                       const std::string& source) {
  const auto started = std::chrono::steady_clock::now();
  auto refuse = [&](ApiError e) -> ApiError {
    return dryRun ? std::move(e) : refuseConfig(source, std::move(e));
  };
  ConfigDocument doc;
  try {
    doc = parseConfigDocument(yamlText);
  } catch (const ConfigError& e) {
    std::vector<std::string> problems = e.problems();
    if (problems.empty()) problems.push_back(e.what());
    return refuse(ApiError{400, join(problems, "; "),
                           "fix the config text (docs/config.md) and apply it again",
                           nlohmann::json{{"problems", problems}}});
  }
  if (doc.node && snatPortsAuto(*doc.node) && autoSnatPorts_) {
    std::tie(doc.node->snatPortMin, doc.node->snatPortMax) = *autoSnatPorts_;
  }
  const bool nodeDiffers = doc.node && !(*doc.node == desired().node);
  // The diff shows the node fields a different node section would change, so a dry run says
  // what needs a restart; only the services are ever applied.
  DesiredState next{desired().node, std::move(doc.services)};
  ConfigApplied out;
  out.dryRun = dryRun;
  out.diff =
      diffStates(desired(), DesiredState{nodeDiffers ? *doc.node : desired().node, next.services});
  // Every problem of every service at once, with its field path.
  std::vector<std::string> problems = validateState(next);
  if (nodeDiffers) {
    problems.push_back("node: differs from the running node (" +
                       describeNodeChanges(desired().node, *doc.node) +
                       "); node changes need a restart of meshd");
  }
  if (!problems.empty() && !(nodeDiffers && problems.size() == 1)) {
    return refuse(ApiError{400, join(problems, "; "), "fix the fields named and apply it again",
                           nlohmann::json{{"problems", problems}, {"diff", out.diff.toJson()}}});
  }
  if (nodeDiffers) {
    return refuse(ApiError{409,
                           "node settings differ from the running ones: " +
                               describeNodeChanges(desired().node, *doc.node),
                           "node changes need a restart of meshd; or drop the node section to "
                           "apply only the services",
                           nlohmann::json{{"problems", problems}, {"diff", out.diff.toJson()}}});
  }
  if (dryRun) return out;
  // All or nothing: a dataplane failure part-way is rolled back by the reconciler, and the
  // desired state and the state file change only after the whole change is live.
  auto report = realize(next);
  if (!report) {
    ApiError e = report.error();
    if (!e.detail.is_object()) e.detail = nlohmann::json::object();
    e.detail["diff"] = out.diff.toJson();
    return refuseConfig(source, std::move(e));
  }
  out.report = std::move(*report);
  if (metrics_ != nullptr) {
    metrics_->controlChange(source == "SIGHUP" ? ChangeSource::kReload : ChangeSource::kApply,
                            std::chrono::steady_clock::now() - started);
  }
  spdlog::info("config applied ({}): {}", source, out.diff.summary());
  emitConfigEvent("config_applied", source + ": " + out.diff.summary(),
                  nlohmann::json{{"source", source}, {"diff", out.diff.toJson()}});
  return out;
}

ApiError ControlPlane::refuseConfig(const std::string& source, ApiError error) {
  spdlog::error("config refused ({}): {} ({}): {}", source, error.status, error.error, error.hint);
  nlohmann::json detail{{"source", source}, {"status", error.status}, {"error", error.error}};
  if (error.detail.is_object()) {
    for (const auto& [k, v] : error.detail.items()) detail[k] = v;
  }
  emitConfigEvent("config_refused", source + ": " + error.error, detail);
  return error;
}

void ControlPlane::emitConfigEvent(const std::string& kind, const std::string& message,
                                   const nlohmann::json& detail) {
  for (const auto& sink : configEventSinks_) sink(kind, message, detail);
}

ApiResult<void> ControlPlane::setExcluded(std::map<std::string, std::set<std::string>> excluded) {
  ownExcluded_ = std::move(excluded);
  if (shared_ != nullptr) shared_->publishVerdicts(ownExcluded_);
  return applyExclusions();
}

ApiResult<void> ControlPlane::setMeshVerdicts(
    std::map<std::string, std::map<std::string, std::set<std::string>>> others) {
  if (others == othersExcluded_) return {};
  othersExcluded_ = std::move(others);
  return applyExclusions();
}

std::vector<MeshVerdict> ControlPlane::meshVerdicts() const {
  std::map<std::pair<std::string, std::string>, MeshVerdict> seen;
  auto note = [&](const std::map<std::string, std::set<std::string>>& verdicts, bool here) {
    for (const auto& [service, keys] : verdicts) {
      for (const std::string& key : keys) {
        MeshVerdict& v = seen[{service, key}];
        v.service = service;
        v.endpoint = key;
        ++v.failing;
        v.here = v.here || here;
      }
    }
  };
  note(ownExcluded_, true);
  for (const auto& [node, verdicts] : othersExcluded_) note(verdicts, false);
  std::vector<MeshVerdict> out;
  for (auto& [k, v] : seen) {
    v.nodes = othersExcluded_.size() + 1;
    auto m = meshExcluded_.find(v.service);
    v.meshWide = m != meshExcluded_.end() && m->second.contains(v.endpoint);
    out.push_back(v);
  }
  return out;
}

ApiResult<void> ControlPlane::applyExclusions() {
  std::map<std::string, std::set<std::string>> effective = ownExcluded_;
  std::map<std::string, std::set<std::string>> mesh;
  const size_t nodes = othersExcluded_.size() + 1;
  if (nodes > 1) {
    for (const ServiceSpec& s : desired().services) {
      if (s.health.meshQuorum != MeshQuorum::kMajority) continue;
      static const std::set<std::string> kNone;
      auto ownIt = ownExcluded_.find(s.name);
      const std::set<std::string>& own = ownIt == ownExcluded_.end() ? kNone : ownIt->second;
      std::set<std::string> add;
      size_t keptAlone = 0, keptWith = 0;
      for (const EndpointSpec& e : s.endpoints) {
        const std::string key = e.key();
        size_t failing = own.contains(key) ? 1 : 0;
        for (const auto& [node, verdicts] : othersExcluded_) {
          auto it = verdicts.find(s.name);
          failing += it != verdicts.end() && it->second.contains(key);
        }
        const bool majority = 2 * failing > nodes;
        if (majority && !own.contains(key)) add.insert(key);
        if (e.weight > 0 && !own.contains(key)) {
          ++keptAlone;
          keptWith += !majority;
        }
      }
      // Other nodes' verdicts never empty a ring this node would keep serving: then it goes by
      // its own checks (and says so in the status).
      if (!add.empty() && (keptWith > 0 || keptAlone == 0)) {
        mesh[s.name] = add;
        effective[s.name].insert(add.begin(), add.end());
      }
    }
  }
  if (mesh != meshExcluded_) {
    for (const auto& [service, keys] : mesh) {
      for (const std::string& key : keys) {
        if (meshExcluded_[service].contains(key)) continue;
        emitConfigEvent(
            "mesh_ejected",
            service + " " + key + ": out of this node's rings: most nodes see it failing",
            nlohmann::json{{"service", service}, {"endpoint", key}, {"nodes", nodes}});
      }
    }
    for (const auto& [service, keys] : meshExcluded_) {
      for (const std::string& key : keys) {
        auto now = mesh.find(service);
        if (now != mesh.end() && now->second.contains(key)) continue;
        emitConfigEvent("mesh_restored", service + " " + key + ": no longer failing on most nodes",
                        nlohmann::json{{"service", service}, {"endpoint", key}, {"nodes", nodes}});
      }
    }
    meshExcluded_ = std::move(mesh);
  }
  if (auto r = reconciler_.setExcluded(std::move(effective)); !r) {
    const Error& e = r.error();
    spdlog::error("health: rings not updated: {}{}", e.toString(),
                  e.hint.empty() ? "" : " (" + e.hint + ")");
    return ApiError{500, "dataplane: " + e.toString(), "see meshd's log"};
  }
  return {};
}

ApiResult<ConfigApplied> ControlPlane::reloadConfigFile() {
  if (shared_ != nullptr) {
    // The file's services would replace every node's: with a store, they are written on purpose.
    return refuseConfig("SIGHUP",
                        ApiError{409, "services come from the store (--store); SIGHUP reloads none",
                                 "write services with `meshctl apply -f " + configPath_ +
                                     "` (it writes them to the store), or `meshctl service ...`"});
  }
  std::ifstream in(configPath_);
  if (!in) {
    return refuseConfig("SIGHUP", ApiError{400, "cannot read config file " + configPath_,
                                           "check the path and rights"});
  }
  std::stringstream text;
  text << in.rdbuf();
  return applyConfigText(text.str(), /*dryRun=*/false, "SIGHUP");
}

}  // namespace meshpath
