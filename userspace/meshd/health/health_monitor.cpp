// health_monitor.cpp — the glue between the probes, the state machines, the rings and the API.
#include "health/health_monitor.h"

#include <spdlog/spdlog.h>

#include <ctime>

#include "json.h"

namespace meshpath::health {

namespace {

using nlohmann::json;
constexpr auto kTickEvery = std::chrono::milliseconds(100);
constexpr auto kPanicReminderEvery = std::chrono::seconds(10);

std::string isoTime(std::chrono::system_clock::time_point t) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof(out), "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }
double millis(std::chrono::microseconds d) { return double(d.count()) / 1000.0; }

}  // namespace

HealthMonitor::HealthMonitor(boost::asio::io_context& io, ControlPlane& controlPlane,
                             const Clock& clock, Prober& prober)
    : io_(io),
      cp_(controlPlane),
      clock_(clock),
      checker_(io, clock, prober,
               [this](const ProbeTarget& t, const ProbeResult& r) { onResult(t, r); }),
      tick_(io) {}

HealthMonitor::~HealthMonitor() {
  *alive_ = false;
  stop();
}

void HealthMonitor::start() {
  running_ = true;
  std::weak_ptr<bool> alive = alive_;
  cp_.onCommitted([this, alive] {
    if (auto a = alive.lock(); a && *a && running_) sync();
  });
  sync();
  armTick();
}

void HealthMonitor::stop() {
  running_ = false;
  tick_.cancel();
  checker_.setTargets({});
}

void HealthMonitor::armTick() {
  tick_.expires_after(kTickEvery);
  tick_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !running_) return;
    const TimePoint now = clock_.now();
    std::vector<HealthEvent> events;
    bool panic = false;
    for (auto& [name, h] : services_) {
      auto e = h.tick(now);
      events.insert(events.end(), e.begin(), e.end());
      panic |= h.panic();
    }
    record(std::move(events));
    if (panic && now - lastPanicReminder_ >= kPanicReminderEvery) {
      lastPanicReminder_ = now;
      for (const auto& [name, h] : services_) {
        if (!h.panic()) continue;
        spdlog::error(
            "health: service {} is in PANIC: {} of {} endpoints healthy; new connections "
            "spread over all of them, failing ones too",
            name, h.healthyCount(), h.endpoints().size());
      }
    }
    armTick();
  });
}

void HealthMonitor::sync() {
  const TimePoint now = clock_.now();
  std::vector<ProbeTarget> targets;
  std::vector<HealthEvent> events;
  std::set<std::string> checked;
  for (const ServiceSpec& s : cp_.desired().services) {
    if (s.health.type == HealthCheckType::kNone) continue;
    checked.insert(s.name);
    const HealthPolicy policy = HealthPolicy::from(s.health);
    auto it = services_.find(s.name);
    if (it == services_.end()) {
      it = services_.emplace(s.name, ServiceHealth(s.name, policy)).first;
      spdlog::info("health: checking service {} ({} every {}, timeout {}, rise {}, fall {})",
                   s.name, toString(s.health.type), formatDurationMs(s.health.intervalMs),
                   formatDurationMs(s.health.timeoutMs), s.health.rise, s.health.fall);
    } else {
      auto e = it->second.setPolicy(policy, now);
      events.insert(events.end(), e.begin(), e.end());
    }
    std::vector<std::string> keys;
    for (const EndpointSpec& ep : s.endpoints) {
      keys.push_back(ep.key());
      targets.push_back(ProbeTarget{s.name, ep.key(), ep.address, ep.port, s.health});
    }
    auto e = it->second.setEndpoints(keys, now);
    events.insert(events.end(), e.begin(), e.end());
  }
  std::erase_if(services_, [&](const auto& kv) {
    if (checked.contains(kv.first)) return false;
    spdlog::info("health: service {} no longer checked", kv.first);
    return true;
  });
  checker_.setTargets(targets);
  record(std::move(events));
  pushExclusions();
}

void HealthMonitor::onResult(const ProbeTarget& target, const ProbeResult& result) {
  auto it = services_.find(target.service);
  if (it == services_.end()) return;
  record(it->second.onProbe(target.key, result));
}

void HealthMonitor::reportDatapathSignal(const std::string& service, const std::string& key,
                                         const std::string& reason) {
  auto it = services_.find(service);
  if (it == services_.end()) return;
  record(it->second.onDatapathSignal(key, clock_.now(), reason));
}

void HealthMonitor::record(std::vector<HealthEvent> events) {
  if (events.empty()) return;
  const TimePoint now = clock_.now();
  const auto wallNow = std::chrono::system_clock::now();
  for (HealthEvent& ev : events) {
    const std::string what =
        ev.endpoint.empty() ? "service " + ev.service : ev.service + " " + ev.endpoint;
    if (ev.to == "panic") {
      lastPanicReminder_ = now;
      spdlog::error("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    } else if (ev.to == "ejected" || ev.from == ev.to) {
      spdlog::warn("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    } else {
      spdlog::info("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    }
    StoredEvent stored{
        nextSeq_++,
        wallNow - std::chrono::duration_cast<std::chrono::system_clock::duration>(now - ev.at),
        std::move(ev)};
    const json j = eventJson(stored);
    events_.push_back(std::move(stored));
    if (events_.size() > kEventsKept) events_.pop_front();
    // A follower may unsubscribe while being told (its connection broke): iterate a copy.
    auto followers = followers_;
    for (auto& [id, f] : followers) f(j);
  }
  pushExclusions();
}

void HealthMonitor::pushExclusions() {
  std::map<std::string, std::set<std::string>> excluded;
  for (const auto& [name, h] : services_) excluded[name] = h.excluded();
  if (auto r = cp_.setExcluded(std::move(excluded)); !r) {
    spdlog::error("health: could not update the rings: {}", r.error().error);
  }
}

json HealthMonitor::eventJson(const StoredEvent& e) const {
  return json{{"seq", e.seq},
              {"time", isoTime(e.wall)},
              {"service", e.event.service},
              {"endpoint", e.event.endpoint.empty() ? json(nullptr) : json(e.event.endpoint)},
              {"from", e.event.from},
              {"to", e.event.to},
              {"reason", e.event.reason}};
}

json HealthMonitor::eventsJson(uint64_t since) const {
  json out = json::array();
  for (const StoredEvent& e : events_) {
    if (e.seq > since) out.push_back(eventJson(e));
  }
  return out;
}

uint64_t HealthMonitor::subscribe(Follower follower) {
  const uint64_t id = nextFollower_++;
  followers_[id] = std::move(follower);
  return id;
}

void HealthMonitor::unsubscribe(uint64_t id) { followers_.erase(id); }

const ServiceHealth* HealthMonitor::service(const std::string& name) const {
  auto it = services_.find(name);
  return it == services_.end() ? nullptr : &it->second;
}

json HealthMonitor::serviceJson(const ServiceSpec& spec) const {
  const TimePoint now = clock_.now();
  const auto wallNow = std::chrono::system_clock::now();
  const ServiceHealth* h = service(spec.name);
  json endpoints = json::array();
  for (const EndpointSpec& ep : spec.endpoints) {
    json j = {{"address", ep.address.toString()},
              {"port", ep.port},
              {"key", ep.key()},
              {"weight", ep.weight},
              {"in_ring", ep.weight > 0 && !cp_.reconciler().isExcluded(spec.name, ep.key())}};
    const EndpointHealth* e = nullptr;
    if (h != nullptr) {
      auto it = h->endpoints().find(ep.key());
      if (it != h->endpoints().end()) e = &it->second;
    }
    if (e == nullptr) {
      j["state"] = "unchecked";
      j["since"] = nullptr;
      j["since_s"] = nullptr;
      j["last_probe"] = nullptr;
      j["passive_failures"] = 0;
      j["ejections"] = 0;
      j["held_by_cap"] = false;
      j["ejected_for_s"] = nullptr;
    } else {
      j["state"] = toString(e->state);
      j["since"] =
          isoTime(wallNow -
                  std::chrono::duration_cast<std::chrono::system_clock::duration>(now - e->since));
      j["since_s"] = seconds(now - e->since);
      if (e->lastProbe) {
        j["last_probe"] = {{"ok", e->lastProbe->ok},
                           {"detail", e->lastProbe->detail},
                           {"latency_ms", millis(e->lastProbe->latency)},
                           {"age_s", seconds(now - e->lastProbe->at)}};
      } else {
        j["last_probe"] = nullptr;
      }
      j["passive_failures"] = e->passiveFailures;
      j["ejections"] = e->ejections;
      j["held_by_cap"] = e->heldByCap;
      j["ejected_for_s"] = e->state == EndpointState::kEjected
                               ? json(seconds(e->ejectedUntil - now))
                               : json(nullptr);
    }
    endpoints.push_back(std::move(j));
  }
  json out = {{"name", spec.name},
              {"check", toJson(spec.health)},
              {"panic", h != nullptr && h->panic()},
              {"endpoints", std::move(endpoints)}};
  out["healthy"] = h != nullptr ? h->healthyCount() : spec.endpoints.size();
  out["out"] = h != nullptr ? h->outCount() : 0;
  out["max_out"] = h != nullptr ? h->maxOut() : 0;
  return out;
}

std::optional<json> HealthMonitor::healthJson(const std::string& name) const {
  json services = json::array();
  bool found = name.empty();
  for (const ServiceSpec& s : cp_.desired().services) {
    if (!name.empty() && s.name != name) continue;
    found = true;
    services.push_back(serviceJson(s));
  }
  if (!found) return std::nullopt;
  const LagStats lag = checker_.lag();
  return json{{"services", std::move(services)},
              {"scheduler",
               {{"targets", checker_.targetCount()},
                {"probes", lag.probes},
                {"skipped", lag.skipped},
                {"lag_p50_ms", millis(lag.p50)},
                {"lag_p99_ms", millis(lag.p99)},
                {"lag_max_ms", millis(lag.max)}}}};
}

}  // namespace meshpath::health
