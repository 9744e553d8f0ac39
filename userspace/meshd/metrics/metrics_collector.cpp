// metrics_collector.cpp — the families of /metrics (docs/metrics.md lists them; the Grafana
// dashboard and the alert rules in deploy/ use these names: renaming one breaks them).
#include "metrics/metrics_collector.h"

#include <algorithm>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "abi.h"
#include "datapath_stats.h"
#include "health/health_monitor.h"
#include "metrics/text_exposition.h"

#ifndef MESHPATH_VERSION
#define MESHPATH_VERSION "dev"
#endif

namespace meshpath::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Buckets in seconds. A TCP or HTTP probe on a LAN answers in 0.1-1 ms; a timeout takes up to
// the check's timeout (seconds).
const prometheus::Histogram::BucketBoundaries kProbeBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
// A probe starts tens of microseconds late on an idle loop; milliseconds mean a busy one.
const prometheus::Histogram::BucketBoundaries kLagBuckets = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
// Passive removal takes about a millisecond after the datapath's event; active removal takes
// fall x interval (+ timeout): 0.3 s at the fastest settings, 6 s with the defaults, more when
// max_ejected_percent holds an ejection back.
const prometheus::Histogram::BucketBoundaries kRemovalBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
// A change of one endpoint reaches the datapath in well under a millisecond (issue 12's target:
// p99 <= 1 ms); a whole config of thousands of endpoints takes longer.
const prometheus::Histogram::BucketBoundaries kChangeBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

constexpr std::array<const char*, 2> kSignalNames = {"passive", "active"};  // FailureSignal::Kind
constexpr std::array<const char*, 3> kSourceNames = {"api", "apply", "reload"};  // ChangeSource

// Builds prometheus-cpp families from what MetricsCollector::write says (collect(), tests).
class FamilyBuilder {
 public:
  void family(std::string_view name, std::string_view help, MetricType type) {
    MetricFamily& f = families_.emplace_back();
    f.name = name;
    f.help = help;
    f.type = type;
  }
  void sample(std::initializer_list<LabelRef> labels, double value) {
    ClientMetric& m = families_.back().metric.emplace_back();
    m.label = toLabels(labels);
    if (families_.back().type == MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
  }
  void histogram(std::initializer_list<LabelRef> labels, const ClientMetric::Histogram& h) {
    ClientMetric& m = families_.back().metric.emplace_back();
    m.label = toLabels(labels);
    m.histogram = h;
  }
  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  static std::vector<ClientMetric::Label> toLabels(std::initializer_list<LabelRef> labels) {
    std::vector<ClientMetric::Label> out;
    for (const LabelRef& l : labels) out.push_back({std::string(l.name), std::string(l.value)});
    return out;
  }
  std::vector<MetricFamily> families_;
};

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// The shared store (--store) as /metrics shows it, read from its /v1/status object: SharedStore
// offers nothing narrower, and the object is small. A field missing or of another type reads as
// 0 (or false), so a scrape never fails on the store.
struct StoreMetrics {
  bool connected = false;
  double revision = 0;  // the revision the node last applied
  double behind = 0;    // revisions seen but not applied
  double keysLeftOut = 0;
  bool refused = false;
  double writes = 0;
  double writeFailures = 0;
  double resyncs = 0;
};

StoreMetrics readStore(const SharedStore& store) {
  const nlohmann::json status = store.statusJson();
  auto field = [&](const char* key) -> const nlohmann::json* {
    const auto it = status.find(key);  // end() for an object without it, and for a non-object
    return it != status.end() ? &*it : nullptr;
  };
  auto number = [&](const char* key) {
    const nlohmann::json* v = field(key);
    return v != nullptr && v->is_number() ? v->get<double>() : 0.0;
  };
  StoreMetrics m;
  const nlohmann::json* connected = field("connected");
  m.connected = connected != nullptr && connected->is_boolean() && connected->get<bool>();
  m.revision = number("revision");
  m.behind = std::max(0.0, number("seen_revision") - m.revision);
  const nlohmann::json* left = field("keys_left_out");
  m.keysLeftOut = left != nullptr && left->is_array() ? double(left->size()) : 0;
  const nlohmann::json* refused = field("refused");
  m.refused = refused != nullptr && refused->is_string();
  m.writes = number("writes");
  m.writeFailures = number("write_failures");
  m.resyncs = number("resyncs");
  return m;
}

}  // namespace

MetricsCollector::MetricsCollector(ControlPlane& cp, const health::HealthMonitor* health)
    : cp_(cp), health_(health), probeLag_(kLagBuckets) {
  for (auto& h : removal_) h = std::make_unique<prometheus::Histogram>(kRemovalBuckets);
  for (auto& h : controlChange_) h = std::make_unique<prometheus::Histogram>(kChangeBuckets);
}

void MetricsCollector::probeDone(const std::string& service, std::chrono::microseconds latency) {
  auto it = probeDuration_.find(service);
  if (it == probeDuration_.end()) {
    it = probeDuration_.emplace(service, std::make_unique<prometheus::Histogram>(kProbeBuckets))
             .first;
  }
  it->second->Observe(seconds(latency));
}

void MetricsCollector::probeStarted(std::chrono::microseconds lag) {
  probeLag_.Observe(seconds(lag));
}

void MetricsCollector::ringMembership(const std::string& service, const std::string& endpoint,
                                      bool in, const std::optional<FailureSignal>& signal,
                                      std::chrono::steady_clock::time_point now) {
  Transitions& t = transitions_[{service, endpoint}];
  if (in) {
    ++t.up;
    return;
  }
  ++t.down;
  if (signal) {
    const auto took = std::max(std::chrono::steady_clock::duration::zero(), now - signal->at);
    removal_[static_cast<size_t>(signal->kind)]->Observe(seconds(took));
  }
}

void MetricsCollector::controlChange(ChangeSource source, std::chrono::nanoseconds took) {
  controlChange_[static_cast<size_t>(source)]->Observe(seconds(took));
}

void MetricsCollector::prune(const DatapathStats& stats) {
  if (probeDuration_.empty() && transitions_.empty()) return;
  std::set<std::string> services;
  std::set<EndpointRef> endpoints;
  for (const ServiceStats& s : stats.services) {
    services.insert(s.spec->name);
    for (const EndpointStats& e : s.endpoints) endpoints.insert({s.spec->name, e.key});
  }
  std::erase_if(probeDuration_, [&](const auto& kv) { return !services.contains(kv.first); });
  std::erase_if(transitions_, [&](const auto& kv) { return !endpoints.contains(kv.first); });
}

// Why the scrape writes its text here rather than through prometheus-cpp's families: at 1,000
// endpoints a scrape has about 10,000 samples, and building them as ClientMetrics (a label
// vector and its strings each) before writing them out was most of the collection's cost
// (perf: ~30 % of a scrape's CPU, bench/metrics/bench_scrape.py). prometheus-cpp still keeps
// the histograms, whose buckets and sums it does well; their few series go through
// Histogram::Collect().
Result<void> MetricsCollector::collectText(std::string& out) {
  auto program = cp_.dataplane().program();
  if (!program) return program.error();
  auto stats = readDatapathStats(cp_);
  if (!stats) return stats.error();
  prune(*stats);
  TextWriter writer(out);
  write(writer, *program, *stats);
  return {};
}

Result<std::vector<MetricFamily>> MetricsCollector::collect() {
  auto program = cp_.dataplane().program();
  if (!program) return program.error();
  auto stats = readDatapathStats(cp_);
  if (!stats) return stats.error();
  prune(*stats);
  FamilyBuilder builder;
  write(builder, *program, *stats);
  return builder.take();
}

// The families in the order /metrics has always shown them; each family is one pass over the
// services (and their endpoints).
template <typename Writer>
void MetricsCollector::write(Writer& out, const ProgramInfo& program, const DatapathStats& stats) {
  const auto& services = stats.services;
  const health::HealthMonitor* hm = health_;
  auto serviceHealth = [hm](const std::string& name) -> const health::ServiceHealth* {
    return hm != nullptr ? hm->service(name) : nullptr;
  };
  // One sample per service (or per endpoint) of a value taken from its stats.
  auto perService = [&](auto value) {
    for (const ServiceStats& s : services) out.sample({{"service", s.spec->name}}, value(s));
  };
  auto perEndpoint = [&](auto value) {
    for (const ServiceStats& s : services) {
      for (const EndpointStats& e : s.endpoints) {
        out.sample({{"service", s.spec->name}, {"endpoint", e.key}}, value(e));
      }
    }
  };
  // Endpoint samples only where the value exists (an optional).
  auto perEndpointIf = [&](auto value) {
    for (const ServiceStats& s : services) {
      for (const EndpointStats& e : s.endpoints) {
        if (const auto v = value(e)) {
          out.sample({{"service", s.spec->name}, {"endpoint", e.key}}, double(*v));
        }
      }
    }
  };

  out.family("meshpath_build_info",
             "meshd's version and the XDP program it runs (name, kernel tag); always 1",
             MetricType::Gauge);
  out.sample(
      {{"version", MESHPATH_VERSION}, {"program", program.name}, {"program_tag", program.tag}}, 1);

  out.family("meshpath_service_packets_total",
             "Packets the datapath forwarded for the service (both directions)",
             MetricType::Counter);
  perService([](const ServiceStats& s) { return double(s.counters.packets); });
  out.family("meshpath_service_bytes_total",
             "Bytes the datapath forwarded for the service (both directions)", MetricType::Counter);
  perService([](const ServiceStats& s) { return double(s.counters.bytes); });
  out.family("meshpath_service_connections_total",
             "New connections (TCP) or flows (UDP) the datapath balanced for the service",
             MetricType::Counter);
  perService([](const ServiceStats& s) { return double(s.counters.newConns); });

  out.family("meshpath_endpoint_packets_total",
             "Packets the datapath forwarded to and from the endpoint", MetricType::Counter);
  perEndpoint([](const EndpointStats& e) { return double(e.counters.packets); });
  out.family("meshpath_endpoint_bytes_total",
             "Bytes the datapath forwarded to and from the endpoint", MetricType::Counter);
  perEndpoint([](const EndpointStats& e) { return double(e.counters.bytes); });
  out.family("meshpath_endpoint_connections_total",
             "New connections (TCP) or flows (UDP) the datapath sent to the endpoint",
             MetricType::Counter);
  perEndpoint([](const EndpointStats& e) { return double(e.counters.newConns); });
  out.family("meshpath_endpoint_active_connections",
             "TCP connections open toward the endpoint now (TCP services only)", MetricType::Gauge);
  perEndpointIf([](const EndpointStats& e) { return e.activeConns; });

  out.family("meshpath_endpoint_up",
             "1 while health checking keeps the endpoint in the service's rings, 0 while "
             "it is ejected (or probing after an ejection)",
             MetricType::Gauge);
  for (const ServiceStats& s : services) {
    const std::string& name = s.spec->name;
    for (const EndpointStats& e : s.endpoints) {
      out.sample({{"service", name}, {"endpoint", e.key}},
                 cp_.reconciler().isExcluded(name, e.key) ? 0 : 1);
    }
  }
  out.family("meshpath_endpoint_ejections_total",
             "Times health checking ejected the endpoint (active or passive), "
             "since it was added or meshd started",
             MetricType::Counter);
  for (const ServiceStats& s : services) {
    const health::ServiceHealth* h = serviceHealth(s.spec->name);
    for (const EndpointStats& e : s.endpoints) {
      uint32_t ejections = 0;
      if (h != nullptr) {
        if (auto it = h->endpoints().find(e.key); it != h->endpoints().end()) {
          ejections = it->second.ejections;
        }
      }
      out.sample({{"service", s.spec->name}, {"endpoint", e.key}}, ejections);
    }
  }
  out.family("meshpath_endpoint_transitions_total",
             "Times the endpoint left (to=\"down\") or rejoined (to=\"up\") the "
             "service's rings by health checking or panic",
             MetricType::Counter);
  for (const ServiceStats& s : services) {
    const std::string& name = s.spec->name;
    for (const EndpointStats& e : s.endpoints) {
      Transitions t;
      if (!transitions_.empty()) {
        if (auto it = transitions_.find({name, e.key}); it != transitions_.end()) t = it->second;
      }
      out.sample({{"service", name}, {"endpoint", e.key}, {"to", "up"}}, double(t.up));
      out.sample({{"service", name}, {"endpoint", e.key}, {"to", "down"}}, double(t.down));
    }
  }
  out.family("meshpath_service_panic",
             "1 while the service is in panic: too few endpoints healthy, so new "
             "connections spread over all of them",
             MetricType::Gauge);
  perService([&](const ServiceStats& s) {
    const health::ServiceHealth* h = serviceHealth(s.spec->name);
    return h != nullptr && h->panic() ? 1.0 : 0.0;
  });

  out.family("meshpath_drops_total",
             "Packets the datapath did not balance, by reason (bpf/abi.h, enum "
             "mp_exc_reason): drop_* were dropped, pass_* went to the kernel untouched",
             MetricType::Counter);
  for (size_t i = 0; i < MP_EXC_MAX && i < stats.exceptions.size(); ++i) {
    out.sample({{"reason", mp_exc_names[i]}}, double(stats.exceptions[i]));
  }

  const FlowCacheStats& fc = stats.flowCache;
  out.family("meshpath_flow_cache_lookups_total",
             "Packets that met the per-CPU flow cache: a hit skipped the connection "
             "table, a miss went on to it, bypassed ones skipped the cache while it "
             "thrashed",
             MetricType::Counter);
  out.sample({{"result", "hit"}}, double(fc.hits));
  out.sample({{"result", "miss"}}, double(fc.misses));
  out.sample({{"result", "bypassed"}}, double(fc.bypassed));
  out.family("meshpath_flow_cache_conflicts_total",
             "Flow cache misses where another live flow held the slot", MetricType::Counter);
  out.sample({}, double(fc.conflicts));

  const ConnTableStats& ct = stats.connTables;
  out.family("meshpath_conn_table_entries",
             "Entries in the connection tables (as of the last recount, every 10 s)",
             MetricType::Gauge);
  out.sample({{"table", "established"}}, double(ct.established));
  out.sample({{"table", "half_open"}}, double(ct.halfOpen));
  out.family("meshpath_conn_table_capacity",
             "Entries the connection tables hold at most (node.conn_table_size, "
             "node.half_table_size)",
             MetricType::Gauge);
  out.sample({{"table", "established"}}, double(ct.establishedCapacity));
  out.sample({{"table", "half_open"}}, double(ct.halfOpenCapacity));

  out.family("meshpath_snat_ports_in_use",
             "SNAT ports the endpoint's tracked connections hold (nat services; as "
             "of the last connection-table recount, every 10 s)",
             MetricType::Gauge);
  perEndpointIf([](const EndpointStats& e) { return e.snatPortsUsed; });
  out.family("meshpath_snat_ports_capacity",
             "SNAT ports the endpoint can have: node SNAT sources of its family x "
             "ports in node.snat_ports (nat services)",
             MetricType::Gauge);
  perEndpointIf([](const EndpointStats& e) { return e.snatCapacity; });

  out.family("meshpath_syn_cookies_sent_total",
             "SYN-ACKs with a SYN cookie the datapath sent for the service", MetricType::Counter);
  perService([](const ServiceStats& s) { return double(s.syn.cookiesSent); });
  out.family("meshpath_syn_acks_total",
             "ACKs answering a SYN cookie: valid ones opened a connection to an "
             "endpoint, invalid ones (bad, old or no cookie) were dropped",
             MetricType::Counter);
  for (const ServiceStats& s : services) {
    out.sample({{"service", s.spec->name}, {"result", "valid"}}, double(s.syn.acksValid));
    out.sample({{"service", s.spec->name}, {"result", "invalid"}}, double(s.syn.acksInvalid));
  }
  out.family("meshpath_syn_protection_active",
             "1 while the datapath answers the service's SYNs with SYN cookies", MetricType::Gauge);
  perService([](const ServiceStats& s) { return s.syn.active ? 1.0 : 0.0; });

  out.family("meshpath_probe_duration_seconds",
             "Time an active health probe took, from its start to its result "
             "(failures and timeouts included)",
             MetricType::Histogram);
  for (const auto& [service, h] : probeDuration_) {
    out.histogram({{"service", service}}, h->Collect().histogram);
  }
  out.family("meshpath_probe_schedule_lag_seconds",
             "How late active health probes started against their schedule", MetricType::Histogram);
  out.histogram({}, probeLag_.Collect().histogram);
  out.family("meshpath_endpoint_removal_seconds",
             "Time from an endpoint's failure signal to its removal from the rings: "
             "the datapath's event (passive) or the start of the first failed probe "
             "of the run that ejected it (active)",
             MetricType::Histogram);
  for (size_t i = 0; i < removal_.size(); ++i) {
    out.histogram({{"signal", kSignalNames[i]}}, removal_[i]->Collect().histogram);
  }
  out.family("meshpath_control_change_seconds",
             "Time from the start of a change to the desired state (REST API edit, "
             "POST /v1/apply, config reload) until the datapath held it",
             MetricType::Histogram);
  for (size_t i = 0; i < controlChange_.size(); ++i) {
    out.histogram({{"source", kSourceNames[i]}}, controlChange_[i]->Collect().histogram);
  }

  // The shared store's families exist only with --store: without one there is nothing to be
  // connected to, and a constant 0 would read as an outage.
  const SharedStore* shared = cp_.sharedStore();
  if (shared == nullptr) return;
  const StoreMetrics store = readStore(*shared);
  out.family("meshpath_store_connected",
             "1 while the shared store (etcd, --store) answers; 0 while it is unreachable: "
             "the node forwards with its last known state and refuses changes",
             MetricType::Gauge);
  out.sample({}, store.connected ? 1 : 0);
  out.family("meshpath_store_revision", "The store's revision whose services the node applied last",
             MetricType::Gauge);
  out.sample({}, store.revision);
  out.family("meshpath_store_behind",
             "Revisions of the store the node has seen but not applied (nonzero for more than "
             "a moment: the store's state was refused)",
             MetricType::Gauge);
  out.sample({}, store.behind);
  out.family("meshpath_store_keys_left_out",
             "Keys of the store left out of the last applied state because they do not parse",
             MetricType::Gauge);
  out.sample({}, store.keysLeftOut);
  out.family("meshpath_store_refused",
             "1 while the node refuses the store's state as a whole (it breaks a rule across "
             "services) and keeps the last state it applied",
             MetricType::Gauge);
  out.sample({}, store.refused ? 1 : 0);
  out.family("meshpath_store_writes_total",
             "Changes asked of this node that the store took (one transaction each)",
             MetricType::Counter);
  out.sample({}, store.writes);
  out.family("meshpath_store_write_failures_total",
             "Changes asked of this node that the store did not take (unreachable, or "
             "another writer changed the same services); each was undone on the node",
             MetricType::Counter);
  out.sample({}, store.writeFailures);
  out.family("meshpath_store_resyncs_total",
             "Times the node read the store's whole prefix again after its first read (its "
             "watch's revision was compacted away)",
             MetricType::Counter);
  out.sample({}, store.resyncs);
}

}  // namespace meshpath::metrics
