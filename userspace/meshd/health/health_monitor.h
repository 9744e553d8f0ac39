// health_monitor.h — meshd's health: follows the desired state (which services are checked and
// how, which endpoints they have), runs the probes (HealthChecker), reads the datapath's passive
// health events (the mp_events ring buffer, its fd waited on by the event loop), feeds both into
// each service's state machine (ServiceHealth), tells the control plane which endpoints the rings
// leave out, and does what the machines ask of the datapath (clear down marks; flush an ejected
// endpoint's connections when its service says on_eject: reset). Every 10 s it recounts the
// active connections from the connection tables, then warns (an event and the log) when an
// endpoint's SNAT ports run short (SnatCapacityWatch). Every second it polls each service's SYN
// protection switch and records an event per auto transition (SynGuardWatch). Both walks of the
// tables run a step per loop turn (ConnTableWalker). Keeps the last transitions for GET /v1/events
// and streams new ones to followers. Everything runs on the daemon's one event loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "conn_table_walker.h"
#include "control_plane.h"
#include "health/health_checker.h"
#include "health/health_state.h"
#include "metrics/metrics_sink.h"
#include "snat_capacity.h"
#include "syn_protection.h"

namespace meshpath::health {

class HealthMonitor {
 public:
  using Follower = std::function<void(const nlohmann::json& event)>;
  static constexpr size_t kEventsKept = 1024;

  HealthMonitor(boost::asio::io_context& io, ControlPlane& controlPlane, const Clock& clock,
                Prober& prober);
  ~HealthMonitor();

  // Starts following the control plane's commits and the periodic tick.
  void start();
  void stop();
  // Re-reads the desired state: checks, endpoints. Called after every commit.
  void sync();

  // The datapath's passive signal for one endpoint (for the datapath's event reader).
  void reportDatapathSignal(const std::string& service, const std::string& key,
                            const std::string& reason);
  // One event of the datapath (mp_events), by endpoint id.
  void onDatapathEvent(const DatapathEvent& event);
  // Reads every waiting datapath event (the event loop calls it when the fd turns readable).
  void consumeDatapathEvents();
  // Endpoints the pinned maps show marked down (an earlier run's, or while meshd was away): each
  // is taken as a down event. Called by start().
  void adoptDatapathMarks();
  // Recounts the active connections (joining a recount under way), then checks the endpoints'
  // SNAT ports. start() and a timer every 10 s call it.
  void recount();
  // Polls every service's SYN protection switch; an event per transition since the last poll
  // (syn_protection_on / syn_protection_off). start() and a timer every second call it.
  void checkSynProtection();

  // GET /v1/health (all services, or one: nullopt when it does not exist).
  std::optional<nlohmann::json> healthJson(const std::string& service = "") const;
  // An event of the control plane (config_applied, config_refused): kept and streamed with the
  // health transitions; `detail`'s fields (source, diff, problems) join its JSON.
  void recordControlEvent(const std::string& kind, const std::string& reason,
                          const nlohmann::json& detail);
  // GET /v1/events: the kept events with seq > since, oldest first.
  nlohmann::json eventsJson(uint64_t since = 0) const;
  uint64_t subscribe(Follower follower);
  void unsubscribe(uint64_t id);

  // Where probe timings, ring membership changes and removal times go as well (/metrics).
  void setMetricsSink(MetricsSink* sink);

  HealthChecker& checker() { return checker_; }
  const ConnTableWalker& connWalker() const { return walker_; }
  const ServiceHealth* service(const std::string& name) const;

 private:
  struct StoredEvent {
    uint64_t seq;
    std::chrono::system_clock::time_point wall;
    HealthEvent event;
    std::string kind;       // control events only ("config_applied")
    nlohmann::json detail;  // control events only
  };

  void onResult(const ProbeTarget& target, const ProbeResult& result);
  void record(std::vector<HealthEvent> events);
  void act();  // the machines' datapath actions
  void armEvents();
  void armResync();
  void armSynPoll();
  // After each recount: events for endpoints whose SNAT port use crossed the watch's lines.
  void checkSnatCapacity();
  std::optional<uint32_t> endpointId(const std::string& service, const std::string& key) const;
  void pushExclusions();
  // Tells the metrics sink which endpoints left or rejoined the rings since the last push.
  void noteRingChanges(const std::map<std::string, std::set<std::string>>& excluded);
  void armTick();
  nlohmann::json eventJson(const StoredEvent& e) const;
  nlohmann::json serviceJson(const ServiceSpec& spec) const;

  boost::asio::io_context& io_;
  ControlPlane& cp_;
  const Clock& clock_;
  HealthChecker checker_;
  boost::asio::steady_timer tick_;
  boost::asio::steady_timer resyncTimer_;
  boost::asio::steady_timer synTimer_;
  ConnTableWalker walker_;  // flushes and recounts, a step per loop turn
  SnatCapacityWatch snatWatch_;
  SynGuardWatch synWatch_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> eventsFd_;
  // endpoint id -> (service, endpoint key), from the reconciler's ids at the last sync.
  std::map<uint32_t, std::pair<std::string, std::string>> byId_;
  std::map<std::string, ServiceHealth> services_;
  // What the last sync read: each service's name, health block and endpoints (address, port).
  // Nothing else of the desired state reaches the checks (weights do not), so a commit that
  // leaves all of it as it was (a weight, a drain, timeouts) skips the sync.
  std::vector<ServiceSpec> synced_;
  bool syncedMatches(const std::vector<ServiceSpec>& services) const;
  std::deque<StoredEvent> events_;
  uint64_t nextSeq_ = 1;
  std::map<uint64_t, Follower> followers_;
  uint64_t nextFollower_ = 1;
  TimePoint lastPanicReminder_{};
  bool running_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  MetricsSink* sink_ = nullptr;
  // (service, endpoint key) -> the failure that started its current run of failures, until it is
  // healthy again or leaves the rings (meshpath_endpoint_removal_seconds).
  std::map<std::pair<std::string, std::string>, FailureSignal> failureSignals_;
  std::map<std::string, std::set<std::string>> outOfRings_;  // as last pushed
};

}  // namespace meshpath::health
