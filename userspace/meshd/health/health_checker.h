// health_checker.h — active health probes on the daemon's one Asio event loop: no thread per
// endpoint. Each target runs on a fixed-rate schedule (slot k at start + k x interval, plus up to
// `jitter`), so a slow loop shows up as lag instead of a drifting interval; the lag of every
// probe start is recorded. Probes use the kernel's ordinary sockets from meshd's namespace
// straight to the endpoint's address and port, not through the VIP.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "health/health_state.h"
#include "metrics/metrics_sink.h"
#include "model.h"

namespace meshpath::health {

struct ProbeTarget {
  std::string service;
  std::string key;  // the endpoint's key, "10.0.2.11:8080"
  IpAddress address;
  uint16_t port = 0;
  HealthCheckSpec check;
  bool operator==(const ProbeTarget&) const = default;
};

// One probe of one target; `done` is called exactly once, on the event loop.
class Prober {
 public:
  virtual ~Prober() = default;
  virtual void probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) = 0;
};

// TCP connect, HTTP GET (status in range), UDP request/response, each bounded by the check's
// timeout.
class AsioProber : public Prober {
 public:
  AsioProber(boost::asio::io_context& io, const Clock& clock) : io_(io), clock_(clock) {}
  void probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) override;

 private:
  boost::asio::io_context& io_;
  const Clock& clock_;
};

// How late probes start against their schedule.
struct LagStats {
  uint64_t probes = 0;
  uint64_t skipped = 0;  // slots dropped because the previous probe was still running
  std::chrono::microseconds p50{0}, p99{0}, max{0};
};

class HealthChecker {
 public:
  using ResultHandler = std::function<void(const ProbeTarget&, const ProbeResult&)>;

  HealthChecker(boost::asio::io_context& io, const Clock& clock, Prober& prober,
                ResultHandler onResult);
  ~HealthChecker();

  // The targets from now on. Unchanged ones keep their schedule; changed ones start over; the
  // first slot of a new target is spread over its interval so probes do not bunch up.
  void setTargets(const std::vector<ProbeTarget>& targets);
  size_t targetCount() const { return targets_.size(); }

  // Lag over the last probes (a window of 64K samples).
  LagStats lag() const;
  void resetLag();
  // Where each probe's schedule lag and latency go as well (/metrics); null: nowhere.
  void setMetricsSink(MetricsSink* sink) { sink_ = sink; }

 private:
  struct Scheduled;
  void arm(const std::shared_ptr<Scheduled>& s);
  void fire(const std::shared_ptr<Scheduled>& s);

  boost::asio::io_context& io_;
  const Clock& clock_;
  Prober& prober_;
  ResultHandler onResult_;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Scheduled>> targets_;
  std::mt19937_64 rng_;

  std::vector<uint32_t> lagSamplesUs_;  // ring
  size_t lagNext_ = 0;
  uint64_t probes_ = 0;
  uint64_t skipped_ = 0;
  std::chrono::microseconds lagMax_{0};
  MetricsSink* sink_ = nullptr;
};

}  // namespace meshpath::health
