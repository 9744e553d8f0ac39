// health_state.h — the health state machine of one service's endpoints, with no I/O and no clock
// of its own: every input carries the time it happened, so tests drive it with a fake clock.
//
//   healthy --probe fails / datapath signal--> suspect --fall failures--> ejected
//   ejected --ejection time over--> probing --rise passes--> healthy
//   probing --probe fails--> ejected (for longer: ejection_time x 2^repeats, up to the max)
//   suspect --probe passes--> healthy
//
// Ejected and probing endpoints are out of the ring. Two safety rules override the states:
// at most max_ejected_percent of the endpoints are out at once (an endpoint that should go but
// would break the cap stays in, "held by the cap", until room frees up), and when fewer than
// panic_threshold percent (or none) are healthy the service panics: the ring spreads over every
// endpoint, since overloading the few left helps nobody.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model.h"

namespace meshpath::health {

using TimePoint = std::chrono::steady_clock::time_point;
using Duration = std::chrono::steady_clock::duration;

// Where the health code reads the time; a fake one in tests.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

class SteadyClock : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
};

enum class EndpointState : uint8_t { kHealthy, kSuspect, kEjected, kProbing };
std::string toString(EndpointState s);  // "healthy", "suspect", "ejected", "probing"

struct ProbeResult {
  bool ok = false;
  TimePoint at;  // when the result came in
  std::chrono::microseconds latency{0};
  std::string detail;  // "connected", "HTTP 503", "timeout", "connection refused", ...
};

struct HealthPolicy {
  uint32_t rise = 2;
  uint32_t fall = 3;
  Duration ejectionTime = std::chrono::seconds(2);
  Duration maxEjectionTime = std::chrono::minutes(5);
  uint32_t maxEjectedPercent = 50;
  uint32_t panicThresholdPercent = 50;

  static HealthPolicy from(const HealthCheckSpec& spec);
};

struct EndpointHealth {
  EndpointState state = EndpointState::kHealthy;
  TimePoint since;
  uint32_t passes = 0;     // consecutive
  uint32_t failures = 0;   // consecutive
  bool heldByCap = false;  // failed enough to go, kept in by max_ejected_percent
  uint32_t ejections = 0;  // in all
  uint32_t repeats = 0;    // ejections in a row without a long healthy spell between them
  Duration lastEjection{0};
  TimePoint ejectedUntil;
  uint64_t passiveFailures = 0;  // datapath signals
  std::optional<ProbeResult> lastProbe;

  bool outOfRing() const {
    return state == EndpointState::kEjected || state == EndpointState::kProbing;
  }
};

// One transition. `endpoint` is empty for the service's own ones (from/to "normal"/"panic").
struct HealthEvent {
  TimePoint at;
  std::string service;
  std::string endpoint;
  std::string from;
  std::string to;
  std::string reason;
};

class ServiceHealth {
 public:
  ServiceHealth(std::string service, HealthPolicy policy);

  const std::string& service() const { return service_; }
  const HealthPolicy& policy() const { return policy_; }
  std::vector<HealthEvent> setPolicy(const HealthPolicy& policy, TimePoint now);
  // The service's endpoint keys now: those that stay keep their state, new ones start healthy
  // (a restart or an added endpoint must not disturb traffic), gone ones are forgotten.
  std::vector<HealthEvent> setEndpoints(const std::vector<std::string>& keys, TimePoint now);

  std::vector<HealthEvent> onProbe(const std::string& key, const ProbeResult& result);
  // A passive failure seen by the datapath (RST/ICMP answering a SYN, ...): a healthy endpoint
  // becomes suspect; only active probes confirm the ejection.
  std::vector<HealthEvent> onDatapathSignal(const std::string& key, TimePoint now,
                                            const std::string& reason);
  // Time-driven transitions: ejection time over, backoff forgiven, held ejections with room.
  // Call it now and then (meshd: every 100 ms); probes only look at their own endpoint.
  std::vector<HealthEvent> tick(TimePoint now);

  bool panic() const { return panic_; }
  // Endpoints to leave out of the ring: the ejected and probing ones, none in panic.
  std::set<std::string> excluded() const;
  const std::map<std::string, EndpointHealth>& endpoints() const { return endpoints_; }
  size_t healthyCount() const;
  size_t outCount() const;
  size_t maxOut() const;  // what max_ejected_percent allows out at once

 private:
  void move(const std::string& key, EndpointHealth& e, EndpointState to, TimePoint now,
            const std::string& reason, std::vector<HealthEvent>& events);
  // Ejects if the cap allows; otherwise marks it held (once, with an event).
  void tryEject(const std::string& key, EndpointHealth& e, TimePoint now, const std::string& reason,
                std::vector<HealthEvent>& events);
  void eject(const std::string& key, EndpointHealth& e, TimePoint now, const std::string& reason,
             std::vector<HealthEvent>& events);
  void expire(const std::string& key, EndpointHealth& e, TimePoint now,
              std::vector<HealthEvent>& events);                 // ejection over: probing
  void settle(TimePoint now, std::vector<HealthEvent>& events);  // held ejections, panic

  std::string service_;
  HealthPolicy policy_;
  std::map<std::string, EndpointHealth> endpoints_;
  bool panic_ = false;
};

}  // namespace meshpath::health
