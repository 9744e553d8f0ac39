// health_state.cpp — the transitions of health_state.h.
#include "health_state.h"

#include <algorithm>

namespace meshpath::health {

namespace {

constexpr uint32_t kMaxRepeatShift = 20;  // 2^20 x the base is past any max_ejection_time

std::string fraction(uint32_t n, uint32_t of) {
  return std::to_string(n) + "/" + std::to_string(of);
}

std::string probeText(const ProbeResult& r) {
  return r.detail.empty() ? "" : " (" + r.detail + ")";
}

std::string msText(Duration d) {
  return formatDurationMs(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
}

}  // namespace

std::string toString(EndpointState s) {
  switch (s) {
    case EndpointState::kHealthy:
      return "healthy";
    case EndpointState::kSuspect:
      return "suspect";
    case EndpointState::kEjected:
      return "ejected";
    case EndpointState::kProbing:
      return "probing";
  }
  return "unknown";
}

HealthPolicy HealthPolicy::from(const HealthCheckSpec& spec) {
  HealthPolicy p;
  p.activeChecks = spec.type != HealthCheckType::kNone;
  p.rise = std::max(spec.rise, 1u);
  p.fall = std::max(spec.fall, 1u);
  p.ejectionTime = std::chrono::milliseconds(spec.ejectionTimeMs);
  p.maxEjectionTime =
      std::chrono::milliseconds(std::max(spec.maxEjectionTimeMs, spec.ejectionTimeMs));
  p.maxEjectedPercent = spec.maxEjectedPercent;
  p.panicThresholdPercent = spec.panicThresholdPercent;
  return p;
}

ServiceHealth::ServiceHealth(std::string service, HealthPolicy policy)
    : service_(std::move(service)), policy_(policy) {}

std::vector<HealthEvent> ServiceHealth::setPolicy(const HealthPolicy& policy, TimePoint now) {
  std::vector<HealthEvent> events;
  policy_ = policy;
  settle(now, events);
  return events;
}

std::vector<HealthEvent> ServiceHealth::setEndpoints(const std::vector<std::string>& keys,
                                                     TimePoint now) {
  std::vector<HealthEvent> events;
  std::set<std::string> wanted(keys.begin(), keys.end());
  std::erase_if(endpoints_, [&](const auto& kv) { return !wanted.contains(kv.first); });
  for (const std::string& key : keys) {
    if (!endpoints_.contains(key)) {
      EndpointHealth e;
      e.since = now;
      endpoints_.emplace(key, e);
    }
  }
  settle(now, events);
  return events;
}

size_t ServiceHealth::healthyCount() const {
  return static_cast<size_t>(
      std::count_if(endpoints_.begin(), endpoints_.end(), [](const auto& kv) {
        const EndpointHealth& e = kv.second;
        return e.state == EndpointState::kHealthy ||
               (e.state == EndpointState::kSuspect && !e.heldByCap);
      }));
}

size_t ServiceHealth::outCount() const {
  return static_cast<size_t>(std::count_if(endpoints_.begin(), endpoints_.end(),
                                           [](const auto& kv) { return kv.second.outOfRing(); }));
}

size_t ServiceHealth::maxOut() const { return endpoints_.size() * policy_.maxEjectedPercent / 100; }

std::set<std::string> ServiceHealth::excluded() const {
  std::set<std::string> out;
  if (panic_) return out;
  for (const auto& [key, e] : endpoints_) {
    if (e.outOfRing()) out.insert(key);
  }
  return out;
}

void ServiceHealth::move(const std::string& key, EndpointHealth& e, EndpointState to, TimePoint now,
                         const std::string& reason, std::vector<HealthEvent>& events) {
  events.push_back(HealthEvent{now, service_, key, toString(e.state), toString(to), reason});
  e.state = to;
  e.since = now;
  e.heldByCap = false;
  if (to == EndpointState::kHealthy) actions_.clearDown.insert(key);
}

void ServiceHealth::eject(const std::string& key, EndpointHealth& e, TimePoint now,
                          const std::string& reason, std::vector<HealthEvent>& events) {
  Duration d = policy_.ejectionTime * (int64_t{1} << std::min(e.repeats, kMaxRepeatShift));
  d = std::min(d, policy_.maxEjectionTime);
  ++e.ejections;
  ++e.repeats;
  e.lastEjection = d;
  e.ejectedUntil = now + d;
  move(key, e, EndpointState::kEjected, now,
       reason + "; out of the ring for " + msText(d) +
           (e.repeats > 1 ? " (ejection " + std::to_string(e.repeats) + " in a row)" : ""),
       events);
  e.passes = 0;
  e.failures = 0;
  actions_.flush.insert(key);
}

void ServiceHealth::tryEject(const std::string& key, EndpointHealth& e, TimePoint now,
                             const std::string& reason, std::vector<HealthEvent>& events) {
  if (e.state == EndpointState::kProbing || outCount() < maxOut()) {
    eject(key, e, now, reason, events);
    return;
  }
  if (e.state != EndpointState::kSuspect)
    move(key, e, EndpointState::kSuspect, now, reason, events);
  actions_.clearDown.insert(key);  // the datapath must keep it in too
  if (!e.heldByCap) {
    e.heldByCap = true;
    events.push_back(HealthEvent{
        now, service_, key, toString(e.state), toString(e.state),
        reason + "; ejection held: " + std::to_string(outCount()) + " of " +
            std::to_string(endpoints_.size()) + " endpoints are out, max_ejected_percent " +
            std::to_string(policy_.maxEjectedPercent) + "% allows " + std::to_string(maxOut())});
  }
}

EndpointHealth* ServiceHealth::current(const std::string& key, TimePoint now,
                                       std::vector<HealthEvent>& events) {
  auto it = endpoints_.find(key);
  if (it == endpoints_.end()) return nullptr;
  EndpointHealth& e = it->second;
  if (e.state == EndpointState::kEjected && now >= e.ejectedUntil) expire(key, e, now, events);
  return &e;
}

std::vector<HealthEvent> ServiceHealth::onProbe(const std::string& key, const ProbeResult& r) {
  // Only this endpoint's own timeout here: the others' come with their probes or the tick, so a
  // probe costs O(log n), not a walk over the service.
  std::vector<HealthEvent> events;
  EndpointHealth* found = current(key, r.at, events);
  if (found == nullptr) return events;
  EndpointHealth& e = *found;
  if (r.ok && e.state == EndpointState::kHealthy && e.failures == 0) {
    e.lastProbe = r;  // the common case: nothing changes
    ++e.passes;
    return events;
  }
  e.lastProbe = r;
  if (r.ok) {
    ++e.passes;
    e.failures = 0;
  } else {
    ++e.failures;
    e.passes = 0;
  }
  const std::string why = (r.ok ? "probe passed " + fraction(e.passes, policy_.rise)
                                : "probe failed " + fraction(e.failures, policy_.fall)) +
                          probeText(r);
  switch (e.state) {
    case EndpointState::kHealthy:
      if (!r.ok) {
        if (e.failures >= policy_.fall) {
          tryEject(key, e, r.at, why, events);
        } else {
          move(key, e, EndpointState::kSuspect, r.at, why, events);
        }
      }
      break;
    case EndpointState::kSuspect:
      if (r.ok) {
        move(key, e, EndpointState::kHealthy, r.at, why, events);
      } else if (e.failures >= policy_.fall) {
        tryEject(key, e, r.at, why, events);
      }
      break;
    case EndpointState::kEjected:
      break;  // waits out its ejection time whatever the probes say
    case EndpointState::kProbing:
      if (!r.ok) {
        eject(key, e, r.at, why + " while probing", events);
      } else if (e.passes >= policy_.rise) {
        move(key, e, EndpointState::kHealthy, r.at, why, events);
      }
      break;
  }
  settle(r.at, events);
  return events;
}

std::vector<HealthEvent> ServiceHealth::onDatapathSignal(const std::string& key, TimePoint now,
                                                         const std::string& reason) {
  std::vector<HealthEvent> events;
  EndpointHealth* found = current(key, now, events);
  if (found == nullptr) return events;
  EndpointHealth& e = *found;
  ++e.passiveFailures;
  if (e.state == EndpointState::kHealthy) {
    e.passes = 0;
    move(key, e, EndpointState::kSuspect, now,
         "datapath: " + reason +
             (policy_.activeChecks ? "; probes to confirm"
                                   : "; passive_fall failures in a row eject it"),
         events);
  }
  settle(now, events);
  return events;
}

std::vector<HealthEvent> ServiceHealth::onDatapathDown(const std::string& key, TimePoint now,
                                                       const std::string& reason) {
  std::vector<HealthEvent> events;
  EndpointHealth* found = current(key, now, events);
  if (found == nullptr) return events;
  EndpointHealth& e = *found;
  ++e.passiveFailures;
  const std::string why = "datapath: " + reason;
  switch (e.state) {
    case EndpointState::kHealthy:
    case EndpointState::kSuspect:
      e.passes = 0;
      tryEject(key, e, now, why, events);
      break;
    case EndpointState::kProbing:
      eject(key, e, now, why + " while probing", events);
      break;
    case EndpointState::kEjected:
      break;  // out of the ring already; the mark goes when it is healthy again
  }
  settle(now, events);
  if (panic_) actions_.clearDown.insert(key);  // panic spreads over every endpoint
  return events;
}

std::vector<HealthEvent> ServiceHealth::onDatapathRecovered(const std::string& key, TimePoint now,
                                                            const std::string& reason) {
  std::vector<HealthEvent> events;
  auto it = endpoints_.find(key);
  if (it == endpoints_.end()) return events;
  EndpointHealth& e = it->second;
  if (!policy_.activeChecks && e.state == EndpointState::kSuspect) {
    e.failures = 0;
    move(key, e, EndpointState::kHealthy, now, "datapath: " + reason, events);
    settle(now, events);
  }
  return events;
}

ServiceHealth::DatapathActions ServiceHealth::takeDatapathActions() {
  DatapathActions out = std::move(actions_);
  actions_ = {};
  // In panic an ejected endpoint stays in the ring: its connections stay too.
  if (panic_) out.flush.clear();
  return out;
}

void ServiceHealth::expire(const std::string& key, EndpointHealth& e, TimePoint now,
                           std::vector<HealthEvent>& events) {
  e.passes = 0;
  e.failures = 0;
  if (!policy_.activeChecks) {
    // Traffic is the probe (Envoy's outlier detection): back at once; the datapath marks it
    // down again if it still fails, and the next ejection lasts longer.
    move(key, e, EndpointState::kProbing, now,
         "ejection time " + msText(e.lastEjection) + " over; no active checks", events);
    move(key, e, EndpointState::kHealthy, now,
         "back in the ring: traffic is the probe (the datapath marks it down again if it still "
         "fails)",
         events);
    return;
  }
  move(key, e, EndpointState::kProbing, now,
       "ejection time " + msText(e.lastEjection) + " over; " + std::to_string(policy_.rise) +
           " passes bring it back",
       events);
}

std::vector<HealthEvent> ServiceHealth::tick(TimePoint now) {
  std::vector<HealthEvent> events;
  for (auto& [key, e] : endpoints_) {
    if (e.state == EndpointState::kEjected && now >= e.ejectedUntil) {
      expire(key, e, now, events);
    } else if (e.state == EndpointState::kHealthy && e.repeats > 0 &&
               now - e.since >= 2 * e.lastEjection) {
      e.repeats = 0;  // healthy long enough: the next ejection starts short again
    }
  }
  settle(now, events);
  return events;
}

void ServiceHealth::settle(TimePoint now, std::vector<HealthEvent>& events) {
  // Held ejections go as soon as the cap has room, in key order (deterministic on every node).
  for (auto& [key, e] : endpoints_) {
    if (e.heldByCap && outCount() < maxOut()) {
      eject(key, e, now, "ejection no longer held by max_ejected_percent", events);
    }
  }
  // A cap lowered under the number out now releases nothing early: those wait out their time.
  const size_t total = endpoints_.size();
  const size_t healthy = healthyCount();
  const bool panic =
      total > 0 && (healthy == 0 || healthy * 100 < policy_.panicThresholdPercent * total);
  if (panic != panic_) {
    panic_ = panic;
    if (panic) {
      for (const auto& [key, e] : endpoints_) actions_.clearDown.insert(key);
    }
    const std::string counts =
        std::to_string(healthy) + " of " + std::to_string(total) + " endpoints healthy";
    events.push_back(HealthEvent{
        now, service_, "", panic ? "normal" : "panic", panic ? "panic" : "normal",
        panic
            ? counts + ", below panic_threshold " + std::to_string(policy_.panicThresholdPercent) +
                  "%: PANIC, spreading new connections over all endpoints, failing ones too"
            : counts + ": panic over, failing endpoints leave the ring again"});
  }
}

}  // namespace meshpath::health
