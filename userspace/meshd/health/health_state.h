// health_state.h — the health state machine of one service's endpoints, with no I/O and no clock
// of its own: every input carries the time it happened, so tests drive it with a fake clock.
//
//   healthy --probe fails / datapath signal--> suspect --fall failures--> ejected
//   healthy/suspect --datapath marked it down (passive_fall failures)--> ejected
//   ejected --ejection time over--> probing --rise passes--> healthy
//   probing --probe fails / datapath down--> ejected (for longer: ejection_time x 2^repeats, up
//   to the max)
//   suspect --probe passes--> healthy
// Without active checks (type none) traffic is the probe: probing --at once--> healthy, and a
// suspect goes healthy when the datapath sees a success (onDatapathRecovered).
//
// Ejected and probing endpoints are out of the ring. Two safety rules override the states:
// at most max_ejected_percent of the endpoints are out at once (an endpoint that should go but
// would break the cap stays in, "held by the cap", until room frees up), and when fewer than
// panic_threshold percent (or none) are healthy the service panics: the ring spreads over every
// endpoint, since overloading the few left helps nobody.
//
// The datapath keeps its own down mark per endpoint (bpf/abi.h, mp_ep_health). The machine says
// when meshd must clear it (the endpoint is healthy again, held in by the cap, or the service
// panics: the datapath must obey the same rules) and whose connections to flush (ejected out of
// the ring); takeDatapathActions() hands these over.
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
  bool activeChecks = true;  // probes run (type != none); without them traffic is the probe
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
  // The datapath marked the endpoint down: it has already seen passive_fall failures in a row,
  // so it is ejected at once (within max_ejected_percent; panic keeps it in the ring).
  std::vector<HealthEvent> onDatapathDown(const std::string& key, TimePoint now,
                                          const std::string& reason);
  // The datapath saw a success after failures. Without active checks a suspect is healthy
  // again; with them only probes decide.
  std::vector<HealthEvent> onDatapathRecovered(const std::string& key, TimePoint now,
                                               const std::string& reason);

  // What meshd must do to the datapath after the calls so far (and forget): clear the down mark
  // and failure count of `clearDown`, delete the connections of `flush`.
  struct DatapathActions {
    std::set<std::string> clearDown;
    std::set<std::string> flush;
    bool empty() const { return clearDown.empty() && flush.empty(); }
  };
  DatapathActions takeDatapathActions();
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
  // Endpoint key as of `now` (an ejection whose time is over has become probing first), or
  // nullptr when the service has no such endpoint.
  EndpointHealth* current(const std::string& key, TimePoint now, std::vector<HealthEvent>& events);
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
  DatapathActions actions_;
};

}  // namespace meshpath::health
