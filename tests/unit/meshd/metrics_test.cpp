// metrics_test — /metrics over a fake dataplane: every family's name, labels and values as the
// text exposition shows them, each per-CPU counter read once a scrape, the histograms fed by the
// health monitor and the control plane, the shared store's state (only with one), and the HTTP
// server's answers (200 with the families; 503 when the event loop does not collect in time; a
// refused port named in the error).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cmath>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "abi.h"
#include "control_plane.h"
#include "fake_dataplane.h"
#include "fake_shared_store.h"
#include "health/health_monitor.h"
#include "metrics/metrics_collector.h"
#include "metrics/metrics_server.h"
#include "metrics/text_exposition.h"
#include "reconciler.h"
#include "state_store.h"

namespace meshpath::metrics {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using Labels = std::map<std::string, std::string>;

// The fake with counters chosen per id, counting its reads of the per-CPU maps.
class CountingDataplane : public meshpath::testing::FakeDataplane {
 public:
  Result<Counters> serviceStats(uint32_t id) override {
    ++serviceReads;
    return svc[id];
  }
  Result<Counters> endpointStats(uint32_t id) override {
    ++endpointReads;
    return ep[id];
  }
  std::map<uint32_t, Counters> svc, ep;
  int serviceReads = 0;
  int endpointReads = 0;
};

// One sample of the text exposition.
struct Sample {
  std::string name;
  Labels labels;
  double value = 0;
};

// The samples of a text exposition, and its "# TYPE name type" lines.
struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;
  std::map<std::string, std::string> helps;

  // The value of the one sample with exactly these labels; NaN (and a test failure) otherwise.
  double value(const std::string& name, const Labels& labels = {}) const {
    const Sample* found = nullptr;
    for (const Sample& s : samples) {
      if (s.name != name || s.labels != labels) continue;
      EXPECT_EQ(found, nullptr) << "two samples of " << name;
      found = &s;
    }
    EXPECT_NE(found, nullptr) << "no sample " << name << " " << describe(labels);
    return found != nullptr ? found->value : std::nan("");
  }
  bool has(const std::string& name, const Labels& labels) const {
    for (const Sample& s : samples) {
      if (s.name == name && s.labels == labels) return true;
    }
    return false;
  }
  size_t count(const std::string& name) const {
    size_t n = 0;
    for (const Sample& s : samples) n += s.name == name;
    return n;
  }
  static std::string describe(const Labels& labels) {
    std::string out = "{";
    for (const auto& [k, v] : labels) out += k + "=" + v + ",";
    return out + "}";
  }
};

Exposition parse(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      const auto sp = line.find(' ', 7);
      e.types[line.substr(7, sp - 7)] = line.substr(sp + 1);
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) {
      const auto sp = line.find(' ', 7);
      e.helps[line.substr(7, sp - 7)] = sp == std::string::npos ? "" : line.substr(sp + 1);
      continue;
    }
    if (line[0] == '#') continue;
    Sample s;
    size_t i = line.find_first_of("{ ");
    s.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        const size_t eq = line.find('=', i);
        const std::string key = line.substr(i, eq - i);
        size_t j = eq + 2;  // past ="
        std::string value;
        while (line[j] != '"') {
          if (line[j] == '\\') ++j;
          value += line[j++];
        }
        s.labels[key] = value;
        i = j + 1;
        if (line[i] == ',') ++i;
      }
      ++i;
    }
    s.value = std::stod(line.substr(i + 1));
    e.samples.push_back(std::move(s));
  }
  return e;
}

std::string serialize(const std::vector<prometheus::MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

template <typename Pred>
void runUntil(asio::io_context& io, Pred done, std::chrono::milliseconds limit = 3000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_for(5ms);
  }
}

class FakeProber : public health::Prober {
 public:
  void probe(const health::ProbeTarget& t, std::function<void(health::ProbeResult)> done) override {
    done(health::ProbeResult{!failing.contains(t.key), clock.now(), 300us, "fake"});
  }
  std::set<std::string> failing;
  health::SteadyClock clock;
};

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_.node.interfaces = {"eth0"};
    state_.node.ipv4 = IpAddress::parse("10.0.2.1");
    state_.node.ipv6 = IpAddress::parse("fd00::1");
    state_.node.ringSize = 1009;
    state_.node.snatPortMin = 1024;
    state_.node.snatPortMax = 32767;
    state_.node.connTableSize = 4096;
    state_.node.halfTableSize = 1024;
    ServiceSpec web;
    web.name = "web";
    web.vip = *IpAddress::parse("10.0.0.100");
    web.port = 80;
    for (int i = 1; i <= 3; ++i) {
      web.endpoints.push_back(
          EndpointSpec{*IpAddress::parse("10.0.2.1" + std::to_string(i)), 8080, 1});
    }
    ServiceSpec dns;
    dns.name = "dns6";
    dns.vip = *IpAddress::parse("fd00::100");
    dns.port = 53;
    dns.protocol = Protocol::kUdp;
    dns.forwarding = ForwardingMode::kDnat;
    dns.endpoints.push_back(EndpointSpec{*IpAddress::parse("fd00::11"), 53, 1});
    state_.services = {web, dns};
    reconciler_.start(RealizedSnapshot{}, std::nullopt);
    ASSERT_TRUE(cp_.commit(state_));
  }

  uint32_t svcId(const std::string& name) { return *reconciler_.serviceId(name); }
  uint32_t epId(const std::string& service, const std::string& key) {
    return *reconciler_.endpointId(service, key);
  }

  CountingDataplane dp_;
  Reconciler reconciler_{dp_};
  StateStore store_{::testing::TempDir() + "/metrics_test_state.json"};
  ControlPlane cp_{dp_, reconciler_, store_, "", false};
  DesiredState state_;
};

TEST_F(MetricsTest, ExpositionShowsEveryFamilyWithItsLabelsAndValues) {
  const uint32_t web = svcId("web");
  const uint32_t dns = svcId("dns6");
  const uint32_t ep1 = epId("web", "10.0.2.11:8080");
  const uint32_t ep2 = epId("web", "10.0.2.12:8080");
  const uint32_t ep6 = epId("dns6", "[fd00::11]:53");
  dp_.svc[web] = Counters{1000, 64000, 120};
  dp_.svc[dns] = Counters{40, 4000, 20};
  dp_.ep[ep1] = Counters{600, 38000, 70};
  dp_.ep[ep2] = Counters{400, 26000, 50};
  dp_.ep[ep6] = Counters{40, 4000, 20};
  dp_.health[ep1].activeConns = 9;
  dp_.connStats = ConnTableStats{.established = 12,
                                 .halfOpen = 3,
                                 .establishedCapacity = 4096,
                                 .halfOpenCapacity = 1024,
                                 .snatPortsInUse = {{ep1, 25}}};
  dp_.syn[web] = SynStats{.cookiesSent = 500, .acksValid = 30, .acksInvalid = 7, .active = true};

  MetricsCollector collector(cp_, nullptr);
  dp_.serviceReads = dp_.endpointReads = 0;
  auto families = collector.collect();
  ASSERT_TRUE(families) << families.error().toString();
  EXPECT_EQ(dp_.serviceReads, 2) << "each service's per-CPU counters read once a scrape";
  EXPECT_EQ(dp_.endpointReads, 4) << "each endpoint's per-CPU counters read once a scrape";
  const std::string text = serialize(*families);
  const Exposition e = parse(text);

  EXPECT_EQ(e.value("meshpath_build_info", {{"version", MESHPATH_VERSION},
                                            {"program", "mp_xdp_lb"},
                                            {"program_tag", "0123456789abcdef"}}),
            1);
  EXPECT_EQ(e.value("meshpath_service_packets_total", {{"service", "web"}}), 1000);
  EXPECT_EQ(e.value("meshpath_service_bytes_total", {{"service", "web"}}), 64000);
  EXPECT_EQ(e.value("meshpath_service_connections_total", {{"service", "web"}}), 120);
  EXPECT_EQ(e.value("meshpath_service_connections_total", {{"service", "dns6"}}), 20);

  const Labels l1 = {{"service", "web"}, {"endpoint", "10.0.2.11:8080"}};
  const Labels l2 = {{"service", "web"}, {"endpoint", "10.0.2.12:8080"}};
  const Labels l6 = {{"service", "dns6"}, {"endpoint", "[fd00::11]:53"}};
  EXPECT_EQ(e.value("meshpath_endpoint_packets_total", l1), 600);
  EXPECT_EQ(e.value("meshpath_endpoint_bytes_total", l2), 26000);
  EXPECT_EQ(e.value("meshpath_endpoint_connections_total", l1), 70);
  EXPECT_EQ(e.value("meshpath_endpoint_connections_total", l6), 20);
  EXPECT_EQ(e.value("meshpath_endpoint_active_connections", l1), 9);
  EXPECT_EQ(e.value("meshpath_endpoint_active_connections", l2), 0);
  EXPECT_FALSE(e.has("meshpath_endpoint_active_connections", l6)) << "UDP has no connections";
  EXPECT_EQ(e.count("meshpath_endpoint_packets_total"), 4u);

  // No health monitor: every endpoint is in the rings, nobody ejected, no panic.
  EXPECT_EQ(e.value("meshpath_endpoint_up", l1), 1);
  EXPECT_EQ(e.value("meshpath_endpoint_ejections_total", l6), 0);
  EXPECT_EQ(e.value("meshpath_endpoint_transitions_total",
                    {{"service", "web"}, {"endpoint", "10.0.2.11:8080"}, {"to", "down"}}),
            0);
  EXPECT_EQ(e.value("meshpath_service_panic", {{"service", "web"}}), 0);

  // Every exception reason, named as `meshctl stats` names them.
  EXPECT_EQ(e.count("meshpath_drops_total"), size_t{MP_EXC_MAX});
  EXPECT_EQ(e.value("meshpath_drops_total", {{"reason", "drop_no_endpoint"}}), 7);
  EXPECT_EQ(e.value("meshpath_drops_total", {{"reason", "pass_non_ip"}}), 7);

  EXPECT_EQ(e.value("meshpath_flow_cache_lookups_total", {{"result", "hit"}}), 30);
  EXPECT_EQ(e.value("meshpath_flow_cache_lookups_total", {{"result", "miss"}}), 10);
  EXPECT_EQ(e.value("meshpath_flow_cache_lookups_total", {{"result", "bypassed"}}), 5);
  EXPECT_EQ(e.value("meshpath_flow_cache_conflicts_total"), 2);
  EXPECT_EQ(e.value("meshpath_conn_table_entries", {{"table", "established"}}), 12);
  EXPECT_EQ(e.value("meshpath_conn_table_entries", {{"table", "half_open"}}), 3);
  EXPECT_EQ(e.value("meshpath_conn_table_capacity", {{"table", "established"}}), 4096);
  EXPECT_EQ(e.value("meshpath_conn_table_capacity", {{"table", "half_open"}}), 1024);

  // SNAT: one node address x ports 1024-32767 for each nat endpoint; none for dnat.
  EXPECT_EQ(e.value("meshpath_snat_ports_in_use", l1), 25);
  EXPECT_EQ(e.value("meshpath_snat_ports_in_use", l2), 0);
  EXPECT_EQ(e.value("meshpath_snat_ports_capacity", l1), 32767 - 1024 + 1);
  EXPECT_FALSE(e.has("meshpath_snat_ports_in_use", l6));
  EXPECT_FALSE(e.has("meshpath_snat_ports_capacity", l6));

  EXPECT_EQ(e.value("meshpath_syn_cookies_sent_total", {{"service", "web"}}), 500);
  EXPECT_EQ(e.value("meshpath_syn_acks_total", {{"service", "web"}, {"result", "valid"}}), 30);
  EXPECT_EQ(e.value("meshpath_syn_acks_total", {{"service", "web"}, {"result", "invalid"}}), 7);
  EXPECT_EQ(e.value("meshpath_syn_protection_active", {{"service", "web"}}), 1);
  EXPECT_EQ(e.value("meshpath_syn_protection_active", {{"service", "dns6"}}), 0);

  // Types and help for each family; counters end in _total, histograms in _seconds.
  for (const auto& [name, type] : e.types) {
    EXPECT_FALSE(e.helps.at(name).empty()) << name;
    if (type == "counter") {
      EXPECT_TRUE(name.ends_with("_total")) << name;
    } else if (type == "histogram") {
      EXPECT_TRUE(name.ends_with("_seconds")) << name;
    } else if (type == "gauge") {
      EXPECT_FALSE(name.ends_with("_total")) << name;
    }
  }
  for (const char* h : {"meshpath_probe_duration_seconds", "meshpath_probe_schedule_lag_seconds",
                        "meshpath_endpoint_removal_seconds", "meshpath_control_change_seconds"}) {
    EXPECT_EQ(e.types.at(h), "histogram") << h;
  }
  EXPECT_EQ(e.types.at("meshpath_endpoint_up"), "gauge");
  EXPECT_EQ(e.types.at("meshpath_drops_total"), "counter");
  EXPECT_EQ(e.types.size(), 26u) << text;
}

TEST_F(MetricsTest, HistogramsCountWhatTheSinkIsTold) {
  MetricsCollector collector(cp_, nullptr);
  MetricsSink& sink = collector;
  for (int i = 0; i < 3; ++i) sink.probeDone("web", 300us);
  sink.probeDone("web", 20ms);
  sink.probeStarted(40us);
  sink.probeStarted(3ms);
  const auto now = std::chrono::steady_clock::now();
  sink.ringMembership("web", "10.0.2.12:8080", false,
                      FailureSignal{FailureSignal::Kind::kPassive, now - 2ms}, now);
  sink.ringMembership("web", "10.0.2.12:8080", true, std::nullopt, now);
  sink.ringMembership("web", "10.0.2.13:8080", false,
                      FailureSignal{FailureSignal::Kind::kActive, now - 400ms}, now);
  sink.ringMembership("web", "10.0.2.11:8080", false, std::nullopt, now);  // no signal known
  sink.controlChange(ChangeSource::kApi, 400us);
  sink.controlChange(ChangeSource::kReload, 30ms);

  auto families = collector.collect();
  ASSERT_TRUE(families) << families.error().toString();
  const Exposition e = parse(serialize(*families));
  const Labels web = {{"service", "web"}};
  EXPECT_EQ(e.value("meshpath_probe_duration_seconds_count", web), 4);
  EXPECT_NEAR(e.value("meshpath_probe_duration_seconds_sum", web), 0.0209, 1e-9);
  EXPECT_EQ(
      e.value("meshpath_probe_duration_seconds_bucket", {{"service", "web"}, {"le", "0.00025"}}),
      0);
  EXPECT_EQ(
      e.value("meshpath_probe_duration_seconds_bucket", {{"service", "web"}, {"le", "0.0005"}}), 3);
  EXPECT_EQ(
      e.value("meshpath_probe_duration_seconds_bucket", {{"service", "web"}, {"le", "0.025"}}), 4);
  EXPECT_EQ(e.value("meshpath_probe_duration_seconds_bucket", {{"service", "web"}, {"le", "+Inf"}}),
            4);
  EXPECT_FALSE(e.has("meshpath_probe_duration_seconds_count", {{"service", "dns6"}}))
      << "no probes, no series";

  EXPECT_EQ(e.value("meshpath_probe_schedule_lag_seconds_count"), 2);
  EXPECT_EQ(e.value("meshpath_probe_schedule_lag_seconds_bucket", {{"le", "5e-05"}}), 1);
  EXPECT_EQ(e.value("meshpath_probe_schedule_lag_seconds_bucket", {{"le", "0.0025"}}), 1);
  EXPECT_EQ(e.value("meshpath_probe_schedule_lag_seconds_bucket", {{"le", "0.005"}}), 2);

  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_count", {{"signal", "passive"}}), 1);
  EXPECT_EQ(
      e.value("meshpath_endpoint_removal_seconds_bucket", {{"signal", "passive"}, {"le", "0.001"}}),
      0);
  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_bucket",
                    {{"signal", "passive"}, {"le", "0.0025"}}),
            1);
  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_count", {{"signal", "active"}}), 1);
  EXPECT_NEAR(e.value("meshpath_endpoint_removal_seconds_sum", {{"signal", "active"}}), 0.4, 1e-9);

  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "api"}}), 1);
  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "apply"}}), 0);
  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "reload"}}), 1);
  EXPECT_EQ(
      e.value("meshpath_control_change_seconds_bucket", {{"source", "api"}, {"le", "0.0005"}}), 1);

  const auto transitions = [&](const std::string& ep, const std::string& to) {
    return e.value("meshpath_endpoint_transitions_total",
                   {{"service", "web"}, {"endpoint", ep}, {"to", to}});
  };
  EXPECT_EQ(transitions("10.0.2.12:8080", "down"), 1);
  EXPECT_EQ(transitions("10.0.2.12:8080", "up"), 1);
  EXPECT_EQ(transitions("10.0.2.13:8080", "down"), 1);
  EXPECT_EQ(transitions("10.0.2.13:8080", "up"), 0);
  EXPECT_EQ(transitions("10.0.2.11:8080", "down"), 1);

  // A service that leaves the desired state takes its series with it.
  DesiredState next = state_;
  next.services.erase(next.services.begin());
  ASSERT_TRUE(cp_.commit(next));
  families = collector.collect();
  ASSERT_TRUE(families);
  const Exposition after = parse(serialize(*families));
  EXPECT_EQ(after.count("meshpath_probe_duration_seconds_count"), 0u);
  EXPECT_EQ(after.count("meshpath_endpoint_transitions_total"),
            2u);  // dns6's endpoint, up and down
  EXPECT_EQ(after.count("meshpath_service_packets_total"), 1u);
}

TEST_F(MetricsTest, ScrapeFailsWhenTheDataplaneCannotBeRead) {
  MetricsCollector collector(cp_, nullptr);
  dp_.failSynStats = true;
  auto families = collector.collect();
  ASSERT_FALSE(families);
  EXPECT_NE(families.error().toString().find("mp_syn_guard"), std::string::npos);
}

// The health monitor's state and hooks through a scrape: an endpoint whose probes fail is
// ejected (up 0, an ejection, a transition down, a removal timed from its first failed probe),
// comes back (up 1, a transition up), and a service with every endpoint failing panics.
TEST_F(MetricsTest, HealthStateEjectionsTransitionsAndPanic) {
  DesiredState state = state_;
  ServiceSpec& web = state.services[0];
  web.health.type = HealthCheckType::kTcp;
  web.health.intervalMs = kMinHealthIntervalMs;  // 100 ms, the fastest the config allows
  web.health.timeoutMs = 20;
  web.health.fall = 2;
  web.health.rise = 1;
  web.health.ejectionTimeMs = 200;
  web.health.passiveFall = 0;
  ASSERT_TRUE(cp_.commit(state));

  asio::io_context io;
  health::SteadyClock clock;
  FakeProber prober;
  health::HealthMonitor monitor(io, cp_, clock, prober);
  MetricsCollector collector(cp_, &monitor);
  monitor.setMetricsSink(&collector);
  monitor.start();
  const std::string key = "10.0.2.12:8080";
  const Labels ep = {{"service", "web"}, {"endpoint", key}};
  prober.failing.insert(key);
  runUntil(io, [&] { return reconciler_.isExcluded("web", key); });
  ASSERT_TRUE(reconciler_.isExcluded("web", key));

  auto families = collector.collect();
  ASSERT_TRUE(families);
  Exposition e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_endpoint_up", ep), 0);
  EXPECT_EQ(e.value("meshpath_endpoint_up", {{"service", "web"}, {"endpoint", "10.0.2.11:8080"}}),
            1);
  EXPECT_EQ(e.value("meshpath_endpoint_ejections_total", ep), 1);
  EXPECT_EQ(e.value("meshpath_endpoint_transitions_total",
                    {{"service", "web"}, {"endpoint", key}, {"to", "down"}}),
            1);
  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_count", {{"signal", "active"}}), 1);
  // Two failed probes 100 ms apart: the removal comes about one interval after the first one.
  const double removal = e.value("meshpath_endpoint_removal_seconds_sum", {{"signal", "active"}});
  EXPECT_GT(removal, 0.02);
  EXPECT_LT(removal, 1.0);
  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_count", {{"signal", "passive"}}), 0);
  EXPECT_GE(e.value("meshpath_probe_duration_seconds_count", {{"service", "web"}}), 2);
  EXPECT_GE(e.value("meshpath_probe_schedule_lag_seconds_count"), 2);
  EXPECT_EQ(e.value("meshpath_service_panic", {{"service", "web"}}), 0);

  prober.failing.clear();
  runUntil(io, [&] { return !reconciler_.isExcluded("web", key); });
  families = collector.collect();
  ASSERT_TRUE(families);
  e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_endpoint_up", ep), 1);
  EXPECT_EQ(e.value("meshpath_endpoint_transitions_total",
                    {{"service", "web"}, {"endpoint", key}, {"to", "up"}}),
            1);

  // Every endpoint failing: the service panics (and spreads over all, so all count as up).
  for (int i = 1; i <= 3; ++i) prober.failing.insert("10.0.2.1" + std::to_string(i) + ":8080");
  runUntil(io, [&] { return monitor.service("web")->panic(); });
  families = collector.collect();
  ASSERT_TRUE(families);
  e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_service_panic", {{"service", "web"}}), 1);
  EXPECT_EQ(e.value("meshpath_service_panic", {{"service", "dns6"}}), 0);
  monitor.stop();
}

// A passive event's timestamp (CLOCK_MONOTONIC, as the datapath writes it) starts the removal
// time: an event 5 ms old removes the endpoint 5 ms after its signal.
TEST_F(MetricsTest, PassiveRemovalTimedFromTheDatapathEvent) {
  asio::io_context io;
  health::SteadyClock clock;
  FakeProber prober;
  health::HealthMonitor monitor(io, cp_, clock, prober);  // web: type none, passive_fall 3
  MetricsCollector collector(cp_, &monitor);
  monitor.setMetricsSink(&collector);
  monitor.start();
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t nowNs = uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  const uint32_t id = epId("web", "10.0.2.13:8080");
  monitor.onDatapathEvent(DatapathEvent{nowNs - 5000000, id, MP_HEV_DOWN, MP_PASSIVE_RST, 3});
  ASSERT_TRUE(reconciler_.isExcluded("web", "10.0.2.13:8080"));
  auto families = collector.collect();
  ASSERT_TRUE(families);
  const Exposition e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_endpoint_removal_seconds_count", {{"signal", "passive"}}), 1);
  const double took = e.value("meshpath_endpoint_removal_seconds_sum", {{"signal", "passive"}});
  EXPECT_GE(took, 0.005);
  EXPECT_LT(took, 0.5);
  monitor.stop();
}

// ControlPlane's commit path times each change by its source.
TEST_F(MetricsTest, ControlChangesAreTimedBySource) {
  MetricsCollector collector(cp_, nullptr);
  cp_.setMetricsSink(&collector);
  ServiceSpec api;
  api.name = "api";
  api.vip = *IpAddress::parse("10.0.0.101");
  api.port = 443;
  api.endpoints.push_back(EndpointSpec{*IpAddress::parse("10.0.2.21"), 8443, 1});
  ASSERT_TRUE(cp_.createService(api));
  ASSERT_TRUE(cp_.setEndpointWeight("api", *IpAddress::parse("10.0.2.21"), 8443, 2));
  auto applied = cp_.applyConfigText(R"(services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080}
)");
  ASSERT_TRUE(applied) << applied.error().error;
  auto families = collector.collect();
  ASSERT_TRUE(families);
  const Exposition e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "api"}}), 2);
  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "apply"}}), 1);
  EXPECT_EQ(e.value("meshpath_control_change_seconds_count", {{"source", "reload"}}), 0);
  EXPECT_GT(e.value("meshpath_control_change_seconds_sum", {{"source", "api"}}), 0);
}

using FakeSharedStore = meshpath::testing::FakeSharedStore;

const char* const kStoreFamilies[] = {"meshpath_store_connected",
                                      "meshpath_store_revision",
                                      "meshpath_store_behind",
                                      "meshpath_store_keys_left_out",
                                      "meshpath_store_refused",
                                      "meshpath_store_writes_total",
                                      "meshpath_store_write_failures_total",
                                      "meshpath_store_resyncs_total"};

// With --store, the store's state from its /v1/status object: connected, the revision applied
// and how far behind what was seen, keys left out, a refused state, and the write and resync
// counters; the text written straight is the families' text here too.
TEST_F(MetricsTest, SharedStoreStateWhenThereIsOne) {
  FakeSharedStore store;
  store.status = {{"kind", "etcd"},
                  {"url", "etcd://127.0.0.1:2379/meshpath"},
                  {"prefix", "/meshpath"},
                  {"connected", true},
                  {"synced", true},
                  {"since", "2026-12-03T10:00:00Z"},
                  {"error", nullptr},
                  {"revision", 42},
                  {"seen_revision", 45},
                  {"refused", "two services on 10.0.0.100:80/tcp"},
                  {"keys_left_out",
                   nlohmann::json::array(
                       {{{"key", "/meshpath/services/x"}, {"problem", "not JSON"}},
                        {{"key", "/meshpath/endpoints/y/z"}, {"problem", "no such service"}}})},
                  {"writes", 3},
                  {"write_failures", 1},
                  {"resyncs", 2}};
  cp_.setSharedStore(&store);
  MetricsCollector collector(cp_, nullptr);
  auto families = collector.collect();
  ASSERT_TRUE(families) << families.error().toString();
  std::string text;
  ASSERT_TRUE(collector.collectText(text));
  EXPECT_EQ(text, serialize(*families));
  Exposition e = parse(text);
  EXPECT_EQ(e.value("meshpath_store_connected"), 1);
  EXPECT_EQ(e.value("meshpath_store_revision"), 42);
  EXPECT_EQ(e.value("meshpath_store_behind"), 3);
  EXPECT_EQ(e.value("meshpath_store_keys_left_out"), 2);
  EXPECT_EQ(e.value("meshpath_store_refused"), 1);
  EXPECT_EQ(e.value("meshpath_store_writes_total"), 3);
  EXPECT_EQ(e.value("meshpath_store_write_failures_total"), 1);
  EXPECT_EQ(e.value("meshpath_store_resyncs_total"), 2);
  for (const char* name : kStoreFamilies) {
    EXPECT_EQ(e.types.at(name), std::string(name).ends_with("_total") ? "counter" : "gauge");
    EXPECT_FALSE(e.helps.at(name).empty()) << name;
  }
  EXPECT_EQ(e.types.size(), 26u + std::size(kStoreFamilies)) << text;

  // etcd unreachable, the state it last had applied, nothing refused or left out.
  store.status["connected"] = false;
  store.status["error"] = "connect: Connection refused";
  store.status["seen_revision"] = 42;
  store.status["refused"] = nullptr;
  store.status["keys_left_out"] = nlohmann::json::array();
  families = collector.collect();
  ASSERT_TRUE(families);
  e = parse(serialize(*families));
  EXPECT_EQ(e.value("meshpath_store_connected"), 0);
  EXPECT_EQ(e.value("meshpath_store_revision"), 42);
  EXPECT_EQ(e.value("meshpath_store_behind"), 0);
  EXPECT_EQ(e.value("meshpath_store_keys_left_out"), 0);
  EXPECT_EQ(e.value("meshpath_store_refused"), 0);

  // A status without these fields (another kind of store) reads as zeros, never a failed scrape.
  store.status = {{"kind", "other"}};
  families = collector.collect();
  ASSERT_TRUE(families);
  e = parse(serialize(*families));
  for (const char* name : kStoreFamilies) EXPECT_EQ(e.value(name), 0) << name;
  cp_.setSharedStore(nullptr);
}

TEST_F(MetricsTest, NoStoreSeriesWithoutAStore) {
  ASSERT_EQ(cp_.sharedStore(), nullptr);
  MetricsCollector collector(cp_, nullptr);
  std::string text;
  ASSERT_TRUE(collector.collectText(text));
  const Exposition e = parse(text);
  for (const char* name : kStoreFamilies) {
    EXPECT_EQ(e.count(name), 0u) << name;
    EXPECT_FALSE(e.types.contains(name)) << name;
  }
  EXPECT_EQ(text.find("meshpath_store_"), std::string::npos) << text;
}

// A blocking HTTP GET; {status, body}.
std::pair<int, std::string> httpGet(uint16_t port, const std::string& path,
                                    const std::string& headers = "",
                                    std::string* replyHeaders = nullptr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return {0, std::string("connect: ") + std::strerror(errno)};
  }
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + headers + "Connection: close\r\n\r\n";
  EXPECT_EQ(::write(fd, req.data(), req.size()), ssize_t(req.size()));
  std::string reply;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) reply.append(buf, size_t(n));
  ::close(fd);
  const auto sp = reply.find(' ');
  const auto body = reply.find("\r\n\r\n");
  if (sp == std::string::npos || body == std::string::npos) return {0, reply};
  if (replyHeaders != nullptr) *replyHeaders = reply.substr(0, body);
  return {std::stoi(reply.substr(sp + 1, 3)), reply.substr(body + 4)};
}

std::string gunzip(const std::string& data) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  std::string out;
  char buf[65536];
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  EXPECT_EQ(rc, Z_STREAM_END) << "not a whole gzip stream";
  inflateEnd(&zs);
  return out;
}

TEST_F(MetricsTest, ServerAnswersFromTheEventLoopAnd503WhenItIsStuck) {
  asio::io_context io;
  MetricsCollector collector(cp_, nullptr);
  auto server = MetricsServer::start(io, collector, "127.0.0.1:0", 300ms);
  ASSERT_TRUE(server) << server.error().toString();
  const uint16_t port = (*server)->port();
  ASSERT_NE(port, 0);

  // The loop runs on its own thread, as meshd's main thread runs it; the scrape comes from
  // civetweb's.
  auto guard = asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });
  auto [status, body] = httpGet(port, "/metrics");
  EXPECT_EQ(status, 200) << body;
  // prometheus-cpp's own exposer_* families (its endpoint's registry, registered before ours)
  // come first; the parser reads them too, and nothing below asks for them.
  const Exposition e = parse(body);
  EXPECT_EQ(e.value("meshpath_service_connections_total", {{"service", "web"}}), 0);
  EXPECT_EQ(e.count("meshpath_endpoint_up"), 4u) << body;
  guard.reset();
  io.stop();
  loop.join();

  // Nobody runs the loop now: the scrape must not hang.
  const auto start = std::chrono::steady_clock::now();
  std::tie(status, body) = httpGet(port, "/metrics");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status, 503) << body;
  EXPECT_NE(body.find("event loop did not answer within 300 ms"), std::string::npos) << body;
  EXPECT_LT(took, 2s);

  // The port is taken now: start refuses, naming the setting and what to do.
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  auto again = MetricsServer::checkListen(listen);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().toString().find("node.metrics_listen " + listen), std::string::npos);
  EXPECT_NE(again.error().toString().find("Address already in use"), std::string::npos);
  EXPECT_NE(again.error().hint.find("\"\" to turn /metrics off"), std::string::npos);
  auto second = MetricsServer::start(io, collector, listen);
  EXPECT_FALSE(second);
}

// Prometheus asks for gzip (Accept-Encoding: gzip): a scraper on another host gets it; one on
// loopback (the only kind the default listen address admits) gets the plain text, which costs
// meshd half the CPU. Other methods than GET and HEAD are refused.
TEST(MetricsGzip, OnlyForScrapersBeyondLoopbackThatAskForIt) {
  EXPECT_TRUE(compressScrape("10.0.2.1", "gzip"));
  EXPECT_TRUE(compressScrape("fd00::5", "deflate, gzip;q=0.5"));
  EXPECT_FALSE(compressScrape("10.0.2.1", "identity"));
  EXPECT_FALSE(compressScrape("10.0.2.1", "gzip;q=0"));
  EXPECT_FALSE(compressScrape("10.0.2.1", nullptr));
  EXPECT_FALSE(compressScrape("127.0.0.1", "gzip"));
  EXPECT_FALSE(compressScrape("127.3.2.1", "gzip"));
  EXPECT_FALSE(compressScrape("::1", "gzip"));
  EXPECT_FALSE(compressScrape("::ffff:127.0.0.1", "gzip"));
  EXPECT_TRUE(compressScrape("::ffff:10.0.0.1", "gzip"));
  EXPECT_TRUE(compressScrape("128.0.0.1", "gzip"));
  // What goes out gzipped unpacks to the text, and is much smaller for an exposition's repeats.
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    text += "meshpath_endpoint_packets_total{service=\"web\",endpoint=\"10.0.2." +
            std::to_string(i % 250) + ":8080\"} " + std::to_string(i * 7) + "\n";
  }
  auto gz = gzip(text);
  ASSERT_TRUE(gz);
  EXPECT_EQ(gunzip(*gz), text);
  EXPECT_LT(gz->size() * 5, text.size());
}

TEST_F(MetricsTest, ServerAnswersLoopbackPlainAndRefusesOtherMethods) {
  asio::io_context io;
  MetricsCollector collector(cp_, nullptr);
  auto server = MetricsServer::start(io, collector, "127.0.0.1:0", 1000ms);
  ASSERT_TRUE(server) << server.error().toString();
  const uint16_t port = (*server)->port();
  auto guard = asio::make_work_guard(io);
  std::thread loop([&] { io.run(); });

  dp_.svc[svcId("web")] = Counters{1000, 64000, 120};
  std::string headers;
  auto [status, body] = httpGet(port, "/metrics", "Accept-Encoding: gzip\r\n", &headers);
  EXPECT_EQ(status, 200) << body;
  EXPECT_EQ(headers.find("Content-Encoding"), std::string::npos)
      << "asked for gzip from loopback: " << headers;
  EXPECT_NE(headers.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << headers;
  EXPECT_NE(headers.find("Content-Length: " + std::to_string(body.size())), std::string::npos)
      << headers;
  const Exposition e = parse(body);
  EXPECT_EQ(e.value("meshpath_service_connections_total", {{"service", "web"}}), 120);
  EXPECT_EQ(e.count("meshpath_endpoint_up"), 4u) << body;

  auto [plainStatus, plain] = httpGet(port, "/metrics", "", &headers);
  EXPECT_EQ(plainStatus, 200);
  EXPECT_EQ(headers.find("Content-Encoding"), std::string::npos) << headers;
  EXPECT_EQ(parse(plain).samples.size(), e.samples.size());

  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  const std::string post =
      "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::write(fd, post.data(), post.size()), ssize_t(post.size()));
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  ASSERT_GT(n, 12);
  EXPECT_EQ(std::string(buf, 12), "HTTP/1.1 405");

  guard.reset();
  io.stop();
  loop.join();
}

// What /metrics serves is written straight from the stats (collectText, no families in between):
// the very bytes TextSerializer writes for the same scrape built as families, every family and
// histogram included; and the per-CPU counters are read once for it too.
TEST_F(MetricsTest, TextWrittenStraightIsTheSerializersTextOfTheFamilies) {
  DesiredState state = state_;
  state.services[0].health.type = HealthCheckType::kTcp;
  state.services[0].health.intervalMs = kMinHealthIntervalMs;
  state.services[0].health.timeoutMs = 20;
  state.services[0].health.fall = 1;
  state.services[0].health.passiveFall = 0;
  ASSERT_TRUE(cp_.commit(state));
  asio::io_context io;
  health::SteadyClock clock;
  FakeProber prober;
  health::HealthMonitor monitor(io, cp_, clock, prober);
  MetricsCollector collector(cp_, &monitor);
  monitor.setMetricsSink(&collector);
  monitor.start();
  prober.failing.insert("10.0.2.12:8080");  // ejected: up 0, an ejection, a transition
  runUntil(io, [&] { return reconciler_.isExcluded("web", "10.0.2.12:8080"); });
  ASSERT_TRUE(reconciler_.isExcluded("web", "10.0.2.12:8080"));
  MetricsSink& sink = collector;
  sink.probeDone("web", 300us);
  sink.probeDone("dns6", 12ms);
  sink.probeStarted(70us);
  sink.controlChange(ChangeSource::kApi, 800us);
  sink.ringMembership(
      "web", "10.0.2.12:8080", false,
      FailureSignal{FailureSignal::Kind::kPassive, std::chrono::steady_clock::now()},
      std::chrono::steady_clock::now());
  dp_.svc[svcId("web")] = Counters{(1ull << 53) + 2, 64000, 120};
  dp_.ep[epId("dns6", "[fd00::11]:53")] = Counters{40, 4000, 20};
  dp_.health[epId("web", "10.0.2.11:8080")].activeConns = 9;
  dp_.syn[svcId("web")] = SynStats{.cookiesSent = 5, .acksValid = 3, .acksInvalid = 1};

  auto families = collector.collect();
  ASSERT_TRUE(families) << families.error().toString();
  dp_.serviceReads = dp_.endpointReads = 0;
  std::string text;
  ASSERT_TRUE(collector.collectText(text));
  EXPECT_EQ(dp_.serviceReads, 2) << "each service's per-CPU counters read once a scrape";
  EXPECT_EQ(dp_.endpointReads, 4) << "each endpoint's per-CPU counters read once a scrape";
  EXPECT_EQ(text, serialize(*families));
  const Exposition e = parse(text);
  EXPECT_EQ(e.types.size(), 26u) << text;
  EXPECT_EQ(e.value("meshpath_endpoint_up", {{"service", "web"}, {"endpoint", "10.0.2.12:8080"}}),
            0);
  EXPECT_EQ(e.value("meshpath_endpoint_ejections_total",
                    {{"service", "web"}, {"endpoint", "10.0.2.12:8080"}}),
            1);
  monitor.stop();
}

// The text meshd writes is the one prometheus-cpp's TextSerializer writes, byte for byte:
// the same lines, labels, numbers (a bucket's le too) and escapes.
TEST_F(MetricsTest, TextExpositionMatchesPrometheusCppSerializer) {
  MetricsCollector collector(cp_, nullptr);
  MetricsSink& sink = collector;
  sink.probeDone("web", 300us);
  sink.probeDone("web", 7ms);
  sink.controlChange(ChangeSource::kApply, 1234us);
  dp_.svc[svcId("web")] = Counters{(1ull << 53) + 0, 64000, 120};
  auto families = collector.collect();
  ASSERT_TRUE(families);
  prometheus::MetricFamily odd;
  odd.name = "meshpath_test_escapes";
  odd.help = "escapes in label values";
  odd.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric m;
  m.label = {{"a", "quote \" back \\ nl \n end"}, {"b", ""}};
  m.gauge.value = 0.1 + 0.2;
  odd.metric.push_back(m);
  prometheus::MetricFamily empty;
  empty.name = "meshpath_test_empty";
  empty.help = "no samples";
  empty.type = prometheus::MetricType::Counter;
  families->push_back(odd);
  families->push_back(empty);

  std::string ours;
  appendTextExposition(ours, *families);
  const std::string theirs = serialize(*families);
  const Exposition a = parse(ours);
  const Exposition b = parse(theirs);
  EXPECT_EQ(a.types, b.types);
  ASSERT_EQ(a.samples.size(), b.samples.size()) << ours;
  for (size_t i = 0; i < a.samples.size(); ++i) {
    EXPECT_EQ(a.samples[i].name, b.samples[i].name) << i;
    EXPECT_EQ(a.samples[i].labels, b.samples[i].labels) << a.samples[i].name;
    EXPECT_DOUBLE_EQ(a.samples[i].value, b.samples[i].value) << a.samples[i].name;
  }
  EXPECT_EQ(a.value("meshpath_service_packets_total", {{"service", "web"}}), double(1ull << 53));
  // (parse() reads an escape as the character after its backslash: \n as n.)
  EXPECT_EQ(a.value("meshpath_test_escapes", {{"a", "quote \" back \\ nl n end"}, {"b", ""}}), 0.3)
      << "16 significant digits, as TextSerializer";
  EXPECT_NE(ours.find(R"(meshpath_test_escapes{a="quote \" back \\ nl \n end",b=""} )"),
            std::string::npos)
      << ours;
  EXPECT_NE(ours.find("# TYPE meshpath_test_empty counter\n"), std::string::npos);
  EXPECT_NE(ours.find(R"(meshpath_probe_duration_seconds_bucket{service="web",le="0.0001"} 0)"),
            std::string::npos)
      << ours;
  EXPECT_EQ(ours, theirs);

  // HELP escapes backslash and newline, as the text format says (TextSerializer 1.0.1 does not).
  odd.help = "a \\ and a\nnewline";
  std::string help;
  appendTextExposition(help, {odd});
  EXPECT_EQ(help.substr(0, help.find('\n') + 1),
            "# HELP meshpath_test_escapes a \\\\ and a\\nnewline\n");
}

}  // namespace
}  // namespace meshpath::metrics
