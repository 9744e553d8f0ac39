// health_monitor.cpp — the glue between the probes, the state machines, the rings and the API.
#include "health/health_monitor.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include "abi.h"
#include "json.h"

namespace meshpath::health {

namespace {

using nlohmann::json;
constexpr auto kTickEvery = std::chrono::milliseconds(100);
constexpr auto kPanicReminderEvery = std::chrono::seconds(10);
// The connection table is an LRU: it evicts entries without telling anyone, and an evicted open
// connection is never counted closed. A recount every 10 s bounds how long a count stays wrong.
constexpr auto kResyncEvery = std::chrono::seconds(10);
// The datapath's auto switch decides per one-second window; a poll a second sees each decision.
constexpr auto kSynPollEvery = std::chrono::seconds(1);

std::string passiveReason(uint8_t reason) {
  return reason < MP_PASSIVE_MAX ? mp_passive_reason_names[reason]
                                 : "reason " + std::to_string(reason);
}

// Services whose endpoints have a state machine: checked actively, or passively, or both.
bool tracked(const ServiceSpec& s) {
  return s.health.type != HealthCheckType::kNone || s.health.passiveFall > 0;
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
      tick_(io),
      resyncTimer_(io),
      synTimer_(io),
      walker_(io, controlPlane.dataplane()) {}

HealthMonitor::~HealthMonitor() {
  *alive_ = false;
  stop();
}

void HealthMonitor::setMetricsSink(MetricsSink* sink) {
  sink_ = sink;
  checker_.setMetricsSink(sink);
}

void HealthMonitor::start() {
  running_ = true;
  std::weak_ptr<bool> alive = alive_;
  cp_.onCommitted([this, alive] {
    if (auto a = alive.lock(); a && *a && running_) sync();
  });
  sync();
  adoptDatapathMarks();
  recount();
  checkSynProtection();
  armTick();
  armResync();
  armSynPoll();
  if (const int fd = cp_.dataplane().eventsFd(); fd >= 0) {
    // The descriptor closes what it holds: give it a copy of libbpf's epoll fd.
    eventsFd_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, ::dup(fd));
    consumeDatapathEvents();  // what came while meshd was starting
    armEvents();
  }
}

void HealthMonitor::stop() {
  running_ = false;
  tick_.cancel();
  resyncTimer_.cancel();
  synTimer_.cancel();
  walker_.stop();
  if (eventsFd_) {
    boost::system::error_code ec;
    eventsFd_->cancel(ec);
    eventsFd_.reset();
  }
  checker_.setTargets({});
}

void HealthMonitor::armEvents() {
  std::weak_ptr<bool> alive = alive_;
  eventsFd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this, alive](const boost::system::error_code& ec) {
                          auto a = alive.lock();
                          if (ec || !a || !*a || !running_ || !eventsFd_) return;
                          consumeDatapathEvents();
                          armEvents();
                        });
}

void HealthMonitor::consumeDatapathEvents() {
  auto n = cp_.dataplane().consumeEvents([this](const DatapathEvent& e) { onDatapathEvent(e); });
  if (!n) spdlog::error("health: {}", n.error().toString());
}

void HealthMonitor::armResync() {
  resyncTimer_.expires_after(kResyncEvery);
  resyncTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !running_) return;
    recount();
    armResync();
  });
}

void HealthMonitor::armSynPoll() {
  synTimer_.expires_after(kSynPollEvery);
  synTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !running_) return;
    checkSynProtection();
    armSynPoll();
  });
}

void HealthMonitor::checkSynProtection() {
  std::vector<SynGuardReading> readings;
  for (const ServiceSpec& s : cp_.desired().services) {
    // Every service, whatever its mode now: only auto moves the switch, and a service whose
    // mode changes keeps its counts, so the watch follows it throughout.
    const auto id = cp_.reconciler().serviceId(s.name);
    if (!id) continue;
    auto st = cp_.dataplane().synStats(*id);
    if (!st) {
      spdlog::error("health: {}: SYN protection not read: {}", s.name, st.error().toString());
      return;  // a half read would make the services left out look gone
    }
    readings.push_back(SynGuardReading{s.name, *id, *st});
  }
  const uint32_t threshold = cp_.desired().node.synFloodThreshold;
  std::vector<HealthEvent> events;
  for (const SynProtectionSwitch& sw : synWatch_.update(readings)) {
    HealthEvent e{clock_.now(), sw.service, "", "syn_protection_off", "syn_protection_on", ""};
    const std::string window = std::to_string(sw.unanswered) + " unanswered SYNs/s in the last " +
                               "second (node.syn_flood_threshold " + std::to_string(threshold) +
                               ")";
    if (sw.on) {
      e.reason = window + ": SYNs are answered with SYN cookies";
    } else {
      std::swap(e.from, e.to);
      e.reason = window + ": calm again, SYNs go to the endpoints";
    }
    events.push_back(std::move(e));
  }
  record(std::move(events));
}

void HealthMonitor::recount() {
  const auto start = std::chrono::steady_clock::now();
  // The walker drops its callbacks when stopped (stop(), the destructor): `this` outlives them.
  walker_.resync([this, start](const Result<ConnWalk>& walk) {
    if (!walk) {
      spdlog::error("health: recount of active connections failed: {}", walk.error().toString());
      return;
    }
    spdlog::debug("health: active connections recounted: {} open of {} entries in {} ms",
                  walk->matched, walk->entries,
                  std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count());
    checkSnatCapacity();
  });
}

void HealthMonitor::checkSnatCapacity() {
  auto stats = cp_.dataplane().connTableStats();
  if (!stats) {
    spdlog::error("health: SNAT port use not checked: {}", stats.error().toString());
    return;
  }
  const auto crossings =
      snatWatch_.update(snatPortUse(cp_.desired(), cp_.reconciler().ids(), *stats));
  std::vector<HealthEvent> events;
  for (const SnatCapacityCrossing& c : crossings) {
    const std::string use = std::to_string(c.use.used) + " of " + std::to_string(c.use.capacity) +
                            " in use (" + std::to_string(c.use.used * 100 / c.use.capacity) + "%)";
    HealthEvent e{clock_.now(), c.use.service, c.use.endpoint, "snat_ok", "snat_high", ""};
    if (c.high) {
      e.reason = "SNAT ports: " + use +
                 "; new flows to it are refused once all are held: add node.snat_pool "
                 "addresses or widen node.snat_ports";
    } else {
      std::swap(e.from, e.to);
      e.reason = "SNAT ports: " + use + ", below " +
                 std::to_string(SnatCapacityWatch::kClearPercent) + "% again";
    }
    events.push_back(std::move(e));
  }
  record(std::move(events));
}

std::optional<uint32_t> HealthMonitor::endpointId(const std::string& service,
                                                  const std::string& key) const {
  return cp_.reconciler().endpointId(service, key);
}

void HealthMonitor::onDatapathEvent(const DatapathEvent& ev) {
  auto where = byId_.find(ev.endpointId);
  if (where == byId_.end()) return;  // a slot freed since (its entry was zeroed)
  const auto& [service, key] = where->second;
  auto it = services_.find(service);
  if (it == services_.end()) return;
  const std::string reason = passiveReason(ev.reason);
  if (sink_ != nullptr && (ev.kind == MP_HEV_SUSPECT || ev.kind == MP_HEV_DOWN)) {
    // The event's time is CLOCK_MONOTONIC (bpf_ktime_get_ns); its age carries over to clock_.
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const uint64_t nowNs = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
    TimePoint at = clock_.now();
    if (ev.ns != 0 && ev.ns <= nowNs) at -= std::chrono::nanoseconds(nowNs - ev.ns);
    failureSignals_.try_emplace({service, key}, FailureSignal{FailureSignal::Kind::kPassive, at});
  }
  switch (ev.kind) {
    case MP_HEV_SUSPECT:
      record(it->second.onDatapathSignal(key, clock_.now(), reason));
      break;
    case MP_HEV_DOWN:
      record(it->second.onDatapathDown(
          key, clock_.now(), std::to_string(ev.fails) + " passive failures (" + reason + ")"));
      break;
    case MP_HEV_RECOVERED:
      record(it->second.onDatapathRecovered(key, clock_.now(), "a success after failures"));
      break;
    default:
      break;
  }
}

void HealthMonitor::adoptDatapathMarks() {
  const TimePoint now = clock_.now();
  std::vector<HealthEvent> events;
  for (const auto& [id, where] : byId_) {
    auto h = cp_.dataplane().endpointHealth(id);
    if (!h || !h->down) continue;
    auto it = services_.find(where.first);
    if (it == services_.end()) {
      cp_.dataplane().clearDown(id).ok();  // passive detection is off for it now
      continue;
    }
    auto e = it->second.onDatapathDown(where.second, now,
                                       "marked down before meshd started (" +
                                           std::to_string(h->fails) + " passive failures)");
    events.insert(events.end(), e.begin(), e.end());
  }
  record(std::move(events));
}

void HealthMonitor::act() {
  for (auto& [name, h] : services_) {
    ServiceHealth::DatapathActions actions = h.takeDatapathActions();
    if (actions.empty()) continue;
    for (const std::string& key : actions.clearDown) {
      if (auto id = endpointId(name, key)) {
        if (auto r = cp_.dataplane().clearDown(*id); !r) {
          spdlog::error("health: {} {}: clear the datapath's down mark: {}", name, key,
                        r.error().toString());
        }
      }
    }
    if (actions.flush.empty()) continue;
    std::string keys;
    for (const std::string& key : actions.flush) keys += (keys.empty() ? "" : ", ") + key;
    // on_eject: keep (the default) leaves established connections where they are: the ejection
    // only takes the endpoint out of the ring (and the datapath's mark keeps new flows off it).
    const ServiceSpec* spec = cp_.findService(name);
    if (spec == nullptr || spec->onEject == OnEject::kKeep) {
      spdlog::info("health: {}: ejected {} keeps its established connections (on_eject: keep)",
                   name, keys);
      continue;
    }
    std::set<uint32_t> flush;
    for (const std::string& key : actions.flush) {
      if (auto id = endpointId(name, key)) flush.insert(*id);
    }
    if (flush.empty()) continue;
    // The first step runs before this returns: a table that fits in it (a few thousand
    // entries) is flushed in this very turn, before /v1/health can show the ejection; a larger
    // one is flushed over the next turns, ahead of any recount.
    const auto start = std::chrono::steady_clock::now();
    walker_.flush(flush, [name, keys, start](const Result<ConnWalk>& walk) {
      if (!walk) {
        spdlog::error("health: {}: flush connections of ejected {}: {}", name, keys,
                      walk.error().toString());
        return;
      }
      spdlog::info("health: {}: {} connections of ejected {} flushed ({} entries walked, {} ms)",
                   name, walk->matched, keys, walk->entries,
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - start)
                       .count());
    });
  }
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

bool HealthMonitor::syncedMatches(const std::vector<ServiceSpec>& services) const {
  return std::equal(services.begin(), services.end(), synced_.begin(), synced_.end(),
                    [](const ServiceSpec& a, const ServiceSpec& b) {
                      return a.name == b.name && a.health == b.health && sameEndpoints(a, b);
                    });
}

void HealthMonitor::sync() {
  const std::vector<ServiceSpec>& desired = cp_.desired().services;
  if (syncedMatches(desired)) return;
  synced_ = desired;
  const TimePoint now = clock_.now();
  std::vector<ProbeTarget> targets;
  std::vector<HealthEvent> events;
  std::set<std::string> checked;
  byId_.clear();
  for (const auto& [service, keys] : cp_.reconciler().ids().endpoints) {
    for (const auto& [key, id] : keys) byId_[id] = {service, key};
  }
  for (const ServiceSpec& s : cp_.desired().services) {
    if (!tracked(s)) continue;
    checked.insert(s.name);
    const HealthPolicy policy = HealthPolicy::from(s.health);
    auto it = services_.find(s.name);
    if (it == services_.end()) {
      it = services_.emplace(s.name, ServiceHealth(s.name, policy)).first;
      if (s.health.type != HealthCheckType::kNone) {
        spdlog::info(
            "health: checking service {} ({} every {}, timeout {}, rise {}, fall {}; passive_fall "
            "{})",
            s.name, toString(s.health.type), formatDurationMs(s.health.intervalMs),
            formatDurationMs(s.health.timeoutMs), s.health.rise, s.health.fall,
            s.health.passiveFall);
      } else {
        spdlog::info("health: service {}: passive checks only (passive_fall {})", s.name,
                     s.health.passiveFall);
      }
    } else {
      auto e = it->second.setPolicy(policy, now);
      events.insert(events.end(), e.begin(), e.end());
    }
    std::vector<std::string> keys;
    for (const EndpointSpec& ep : s.endpoints) {
      keys.push_back(ep.key());
      if (s.health.type != HealthCheckType::kNone) {
        targets.push_back(ProbeTarget{s.name, ep.key(), ep.address, ep.port, s.health});
      }
    }
    auto e = it->second.setEndpoints(keys, now);
    events.insert(events.end(), e.begin(), e.end());
  }
  std::erase_if(services_, [&](const auto& kv) {
    if (checked.contains(kv.first)) return false;
    spdlog::info("health: service {} no longer checked", kv.first);
    // Marks the datapath set before passive detection was turned off would keep it out.
    for (const auto& [key, e] : kv.second.endpoints()) {
      if (auto id = endpointId(kv.first, key)) cp_.dataplane().clearDown(*id).ok();
    }
    return true;
  });
  std::erase_if(failureSignals_, [&](const auto& kv) {
    auto it = services_.find(kv.first.first);
    return it == services_.end() || !it->second.endpoints().contains(kv.first.second);
  });
  checker_.setTargets(targets);
  record(std::move(events));
  pushExclusions();
}

void HealthMonitor::onResult(const ProbeTarget& target, const ProbeResult& result) {
  auto it = services_.find(target.service);
  if (it == services_.end()) return;
  if (sink_ != nullptr && !result.ok) {
    failureSignals_.try_emplace(
        {target.service, target.key},
        FailureSignal{FailureSignal::Kind::kActive, result.at - result.latency});
  }
  record(it->second.onProbe(target.key, result));
}

void HealthMonitor::reportDatapathSignal(const std::string& service, const std::string& key,
                                         const std::string& reason) {
  auto it = services_.find(service);
  if (it == services_.end()) return;
  record(it->second.onDatapathSignal(key, clock_.now(), reason));
}

void HealthMonitor::record(std::vector<HealthEvent> events) {
  if (events.empty()) {
    act();
    return;
  }
  const TimePoint now = clock_.now();
  const auto wallNow = std::chrono::system_clock::now();
  for (HealthEvent& ev : events) {
    if (ev.to == "healthy") failureSignals_.erase({ev.service, ev.endpoint});  // the run is over
    const std::string what =
        ev.endpoint.empty() ? "service " + ev.service : ev.service + " " + ev.endpoint;
    if (ev.to == "panic") {
      lastPanicReminder_ = now;
      spdlog::error("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    } else if (ev.to == "ejected" || ev.to == "snat_high" || ev.to == "syn_protection_on" ||
               ev.from == ev.to) {
      spdlog::warn("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    } else {
      spdlog::info("health: {}: {} -> {}: {}", what, ev.from, ev.to, ev.reason);
    }
    StoredEvent stored{
        nextSeq_++,
        wallNow - std::chrono::duration_cast<std::chrono::system_clock::duration>(now - ev.at),
        std::move(ev), "", nullptr};
    const json j = eventJson(stored);
    events_.push_back(std::move(stored));
    if (events_.size() > kEventsKept) events_.pop_front();
    // A follower may unsubscribe while being told (its connection broke): iterate a copy.
    auto followers = followers_;
    for (auto& [id, f] : followers) f(j);
  }
  // The rings first (an ejected endpoint leaves them), then its connections: a client's retry
  // of the same 5-tuple then meets the new ring.
  pushExclusions();
  act();
}

void HealthMonitor::pushExclusions() {
  std::map<std::string, std::set<std::string>> excluded;
  for (const auto& [name, h] : services_) excluded[name] = h.excluded();
  if (auto r = cp_.setExcluded(excluded); !r) {
    spdlog::error("health: could not update the rings: {}", r.error().error);
    return;
  }
  noteRingChanges(excluded);
}

void HealthMonitor::noteRingChanges(const std::map<std::string, std::set<std::string>>& excluded) {
  auto in = [](const auto& sets, const std::string& service, const std::string& key) {
    auto it = sets.find(service);
    return it != sets.end() && it->second.contains(key);
  };
  if (sink_ != nullptr) {
    const TimePoint now = clock_.now();
    for (const auto& [service, keys] : excluded) {
      for (const std::string& key : keys) {
        if (in(outOfRings_, service, key)) continue;
        std::optional<FailureSignal> signal;
        if (auto it = failureSignals_.find({service, key}); it != failureSignals_.end()) {
          signal = it->second;
          failureSignals_.erase(it);
        }
        sink_->ringMembership(service, key, false, signal, now);
      }
    }
    for (const auto& [service, keys] : outOfRings_) {
      const ServiceSpec* spec = cp_.findService(service);
      for (const std::string& key : keys) {
        if (in(excluded, service, key) || spec == nullptr ||
            std::none_of(spec->endpoints.begin(), spec->endpoints.end(),
                         [&](const EndpointSpec& e) { return e.key() == key; })) {
          continue;  // still out, or gone from the desired state
        }
        sink_->ringMembership(service, key, true, std::nullopt, now);
      }
    }
  }
  outOfRings_ = excluded;
}

json HealthMonitor::eventJson(const StoredEvent& e) const {
  json j{{"seq", e.seq},
         {"time", formatUtcTime(e.wall)},
         {"service", e.event.service},
         {"endpoint", e.event.endpoint.empty() ? json(nullptr) : json(e.event.endpoint)},
         {"from", e.event.from},
         {"to", e.event.to},
         {"reason", e.event.reason}};
  if (!e.kind.empty()) {
    j["kind"] = e.kind;
    if (e.detail.is_object()) {
      for (const auto& [k, v] : e.detail.items()) j[k] = v;
    }
  }
  return j;
}

void HealthMonitor::recordControlEvent(const std::string& kind, const std::string& reason,
                                       const json& detail) {
  // Logged by the control plane already; here it is kept and streamed like any event.
  StoredEvent stored{nextSeq_++, std::chrono::system_clock::now(),
                     HealthEvent{clock_.now(), "", "", "", kind, reason}, kind, detail};
  const json j = eventJson(stored);
  events_.push_back(std::move(stored));
  if (events_.size() > kEventsKept) events_.pop_front();
  auto followers = followers_;
  for (auto& [id, f] : followers) f(j);
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
          formatUtcTime(wallNow - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                      now - e->since));
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
    j["datapath"] = nullptr;
    if (auto id = endpointId(spec.name, ep.key())) {
      if (auto d = cp_.dataplane().endpointHealth(*id)) {
        j["datapath"] = {
            {"fails", d->fails},
            {"down", d->down},
            {"fall", d->fall},
            {"rtt_us", d->rttNs == 0 ? json(nullptr) : json(double(d->rttNs) / 1000.0)},
            {"active_conns",
             spec.protocol == Protocol::kTcp ? json(d->activeConns) : json(nullptr)}};
      }
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
