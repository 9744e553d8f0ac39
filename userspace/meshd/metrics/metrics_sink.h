// metrics_sink.h — what the control plane and the health code tell the metrics about as it
// happens: the moments a histogram needs (a probe's latency and schedule lag, an endpoint's
// removal from the rings, a change reaching the datapath) and the ring membership changes the
// transition counters count. Everything else a scrape reads from where it is kept. Calls come
// on the daemon's event loop; a component without a sink (tests, tools) skips them.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace meshpath {

// Where a change to the desired state came from (meshpath_control_change_seconds{source}).
enum class ChangeSource { kApi, kApply, kReload };

// What first said an endpoint was failing, and when (steady clock).
struct FailureSignal {
  enum class Kind { kPassive, kActive };
  Kind kind = Kind::kActive;
  std::chrono::steady_clock::time_point at;
};

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;

  // An active probe of `service` finished after `latency`, whatever its result.
  virtual void probeDone(const std::string& service, std::chrono::microseconds latency) = 0;
  // A probe started `lag` after its place in the schedule.
  virtual void probeStarted(std::chrono::microseconds lag) = 0;
  // Health took an endpoint out of the rings (`in` false) or put it back; `signal`, when known,
  // is the failure that started the run which ended in this removal; `now` is when the rings
  // held the change.
  virtual void ringMembership(const std::string& service, const std::string& endpoint, bool in,
                              const std::optional<FailureSignal>& signal,
                              std::chrono::steady_clock::time_point now) = 0;
  // A commit reached the datapath `took` after it started.
  virtual void controlChange(ChangeSource source, std::chrono::nanoseconds took) = 0;
};

}  // namespace meshpath
