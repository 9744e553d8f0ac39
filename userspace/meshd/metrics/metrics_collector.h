// metrics_collector.h — everything one scrape of /metrics shows (docs/metrics.md), written as
// Prometheus' text: the datapath's counters (read once through readDatapathStats),
// the health state (HealthMonitor: in the rings or not, ejections, panic), the shared store's
// state with --store (ControlPlane::sharedStore()'s status), and the histograms and transition
// counters fed as things happen (MetricsSink). Lives on the daemon's event loop:
// collectText(), collect() and the sink's calls must come from that one thread (metrics_server.h
// brings scrapes there).
#pragma once

#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "control_plane.h"
#include "datapath_stats.h"
#include "metrics/metrics_sink.h"
#include "result.h"

namespace meshpath::health {
class HealthMonitor;
}

namespace meshpath::metrics {

class MetricsCollector : public MetricsSink {
 public:
  // `health` may be null (no health state shown: every endpoint up, no panic).
  MetricsCollector(ControlPlane& cp, const health::HealthMonitor* health);

  // One scrape's text (Prometheus' text format 0.0.4), appended to `out`: what /metrics serves.
  // Fails when the dataplane cannot be read: a scrape that shows only some counters would look
  // to Prometheus like counters that went away.
  Result<void> collectText(std::string& out);
  // The same scrape as prometheus-cpp families (tests; the text is these families' text, byte
  // for byte).
  Result<std::vector<prometheus::MetricFamily>> collect();

  void probeDone(const std::string& service, std::chrono::microseconds latency) override;
  void probeStarted(std::chrono::microseconds lag) override;
  void ringMembership(const std::string& service, const std::string& endpoint, bool in,
                      const std::optional<FailureSignal>& signal,
                      std::chrono::steady_clock::time_point now) override;
  void controlChange(ChangeSource source, std::chrono::nanoseconds took) override;

 private:
  struct Transitions {
    uint64_t up = 0;
    uint64_t down = 0;
  };
  using EndpointRef = std::pair<std::string, std::string>;  // service, endpoint key

  // Forgets the services and endpoints that left the desired state (those `stats` does not
  // list), so their series go too.
  void prune(const DatapathStats& stats);
  // Writes every family through `out` (TextWriter or the families' builder): one list of the
  // names, help texts, labels and values for both.
  template <typename Writer>
  void write(Writer& out, const ProgramInfo& program, const DatapathStats& stats);

  ControlPlane& cp_;
  const health::HealthMonitor* health_;
  std::map<std::string, std::unique_ptr<prometheus::Histogram>> probeDuration_;  // by service
  prometheus::Histogram probeLag_;
  std::array<std::unique_ptr<prometheus::Histogram>, 2> removal_;        // by FailureSignal::Kind
  std::array<std::unique_ptr<prometheus::Histogram>, 3> controlChange_;  // by ChangeSource
  std::map<EndpointRef, Transitions> transitions_;
};

}  // namespace meshpath::metrics
