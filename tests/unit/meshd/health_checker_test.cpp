// health_checker_test — the probe schedule (with a fake prober on a real event loop) and the
// real probes against loopback listeners: TCP connect, HTTP status, UDP request/response.
#include "health/health_checker.h"

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <map>

#include "control_plane.h"
#include "fake_dataplane.h"
#include "health/health_monitor.h"
#include "reconciler.h"
#include "state_store.h"

namespace meshpath::health {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

class FakeProber : public Prober {
 public:
  void probe(const ProbeTarget& t, std::function<void(ProbeResult)> done) override {
    ++calls[t.key];
    done(ProbeResult{!failing.contains(t.key), clock.now(), 10us, "fake"});
  }
  std::map<std::string, int> calls;
  std::set<std::string> failing;
  SteadyClock clock;
};

ProbeTarget target(const std::string& key, uint16_t port, HealthCheckType type,
                   uint32_t intervalMs = 100) {
  ProbeTarget t;
  t.service = "web";
  t.key = key;
  t.address = *IpAddress::parse("127.0.0.1");
  t.port = port;
  t.check.type = type;
  t.check.intervalMs = intervalMs;
  t.check.timeoutMs = 50;
  return t;
}

TEST(HealthChecker, KeepsTheScheduleOfEveryTarget) {
  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  int results = 0;
  HealthChecker checker(io, clock, prober,
                        [&](const ProbeTarget&, const ProbeResult&) { ++results; });
  std::vector<ProbeTarget> targets;
  for (int i = 0; i < 50; ++i) {
    targets.push_back(target("ep" + std::to_string(i), 1, HealthCheckType::kTcp));
  }
  checker.setTargets(targets);
  io.run_for(1050ms);
  // 1 s at 100 ms: 10 or 11 probes each, whatever the first slot's offset.
  for (const auto& [key, n] : prober.calls) {
    EXPECT_GE(n, 10) << key;
    EXPECT_LE(n, 11) << key;
  }
  EXPECT_EQ(prober.calls.size(), 50u);
  const LagStats lag = checker.lag();
  EXPECT_EQ(lag.probes, uint64_t(results));
  EXPECT_LT(lag.p99, 20ms);

  // Unchanged targets keep going; a removed one stops.
  targets.pop_back();
  checker.setTargets(targets);
  prober.calls.clear();
  io.restart();
  io.run_for(500ms);
  EXPECT_FALSE(prober.calls.contains("ep49"));
  EXPECT_EQ(prober.calls.size(), 49u);
}

// Runs the io_context until `done` or the deadline.
template <typename Pred>
void runUntil(asio::io_context& io, Pred done, std::chrono::milliseconds limit = 2000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_for(5ms);
  }
}

ProbeResult probeOnce(asio::io_context& io, Prober& prober, const ProbeTarget& t) {
  std::optional<ProbeResult> got;
  prober.probe(t, [&](ProbeResult r) { got = r; });
  runUntil(io, [&] { return got.has_value(); });
  EXPECT_TRUE(got.has_value());
  return got.value_or(ProbeResult{});
}

TEST(AsioProber, TcpConnectPassesAndRefusedFails) {
  asio::io_context io;
  SteadyClock clock;
  AsioProber prober(io, clock);
  asio::ip::tcp::acceptor listener(io, {asio::ip::make_address("127.0.0.1"), 0});
  const uint16_t port = listener.local_endpoint().port();
  ProbeResult r = probeOnce(io, prober, target("a", port, HealthCheckType::kTcp));
  EXPECT_TRUE(r.ok) << r.detail;
  listener.close();
  r = probeOnce(io, prober, target("a", port, HealthCheckType::kTcp));
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.detail.find("refused"), std::string::npos) << r.detail;
}

// A one-shot HTTP server answering every request with `status`.
void serveHttp(asio::ip::tcp::acceptor& listener, int status, std::string& request) {
  listener.async_accept(
      [&listener, status, &request](boost::system::error_code ec, asio::ip::tcp::socket s) {
        if (ec) return;
        auto sock = std::make_shared<asio::ip::tcp::socket>(std::move(s));
        auto buf = std::make_shared<std::string>();
        asio::async_read_until(
            *sock, asio::dynamic_buffer(*buf), "\r\n\r\n",
            [sock, buf, status, &request](boost::system::error_code, size_t) {
              request = *buf;
              auto reply = std::make_shared<std::string>("HTTP/1.1 " + std::to_string(status) +
                                                         " X\r\nContent-Length: 0\r\n\r\n");
              asio::async_write(*sock, asio::buffer(*reply),
                                [sock, reply](boost::system::error_code, size_t) {});
            });
        serveHttp(listener, status, request);
      });
}

TEST(AsioProber, HttpStatusInRangePasses) {
  asio::io_context io;
  SteadyClock clock;
  AsioProber prober(io, clock);
  asio::ip::tcp::acceptor ok(io, {asio::ip::make_address("127.0.0.1"), 0});
  asio::ip::tcp::acceptor bad(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::string seen, ignored;
  serveHttp(ok, 204, seen);
  serveHttp(bad, 503, ignored);
  ProbeTarget t = target("a", ok.local_endpoint().port(), HealthCheckType::kHttp);
  t.check.httpPath = "/healthz";
  t.check.httpHost = "web.example";
  ProbeResult r = probeOnce(io, prober, t);
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_EQ(r.detail, "HTTP 204");
  EXPECT_TRUE(seen.starts_with("GET /healthz HTTP/1.1\r\n")) << seen;
  EXPECT_NE(seen.find("Host: web.example\r\n"), std::string::npos) << seen;
  t.port = bad.local_endpoint().port();
  r = probeOnce(io, prober, t);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "HTTP 503");
}

TEST(AsioProber, SilentPeerTimesOut) {
  asio::io_context io;
  SteadyClock clock;
  AsioProber prober(io, clock);
  // Accepts the connection (backlog) but never answers the HTTP request.
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  ProbeResult r =
      probeOnce(io, prober, target("a", silent.local_endpoint().port(), HealthCheckType::kHttp));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "timeout after 50ms");
  EXPECT_GE(r.latency, 50ms);
}

TEST(AsioProber, UdpExpectsTheReply) {
  asio::io_context io;
  SteadyClock clock;
  AsioProber prober(io, clock);
  asio::ip::udp::socket echo(io, {asio::ip::make_address("127.0.0.1"), 0});
  std::array<char, 64> buf{};
  asio::ip::udp::endpoint from;
  std::function<void()> serve = [&] {
    echo.async_receive_from(asio::buffer(buf), from, [&](boost::system::error_code ec, size_t n) {
      if (ec) return;
      std::string reply = std::string(buf.data(), n) == "ping" ? "pong!" : "what?";
      echo.send_to(asio::buffer(reply), from);
      serve();
    });
  };
  serve();
  ProbeTarget t = target("a", echo.local_endpoint().port(), HealthCheckType::kUdp);
  t.check.udpSend = "ping";
  t.check.udpExpect = "pong";
  ProbeResult r = probeOnce(io, prober, t);
  EXPECT_TRUE(r.ok) << r.detail;
  t.check.udpSend = "hello";
  r = probeOnce(io, prober, t);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.detail, "unexpected reply");
}

// The monitor tests' desired state: service "web" at 10.0.0.100:80 over endpoints
// 10.0.2.11 .. 10.0.2.1<n>, port 8080, weight 1; the caller sets its health block.
DesiredState webState(int endpoints) {
  DesiredState state;
  state.node.interfaces = {"eth0"};
  state.node.ipv4 = IpAddress::parse("10.0.2.1");
  ServiceSpec web;
  web.name = "web";
  web.vip = *IpAddress::parse("10.0.0.100");
  web.port = 80;
  for (int i = 1; i <= endpoints; ++i) {
    web.endpoints.push_back(
        EndpointSpec{*IpAddress::parse("10.0.2.1" + std::to_string(i)), 8080, 1});
  }
  state.services.push_back(web);
  return state;
}

// The monitor over a fake dataplane: a failing endpoint leaves the ring, the desired state keeps
// its weight, and the events say so.
TEST(HealthMonitor, FailingEndpointLeavesTheRingAndComesBack) {
  meshpath::testing::FakeDataplane dataplane;
  Reconciler reconciler(dataplane);
  reconciler.start(RealizedSnapshot{}, std::nullopt);
  StateStore store(::testing::TempDir() + "/health_monitor_state.json");
  ControlPlane cp(dataplane, reconciler, store, "", false);
  DesiredState state = webState(3);
  ServiceSpec& web = state.services[0];
  web.health.type = HealthCheckType::kTcp;
  web.health.intervalMs = 100;
  web.health.timeoutMs = 50;
  web.health.fall = 2;
  web.health.rise = 2;
  web.health.ejectionTimeMs = 200;
  ASSERT_TRUE(cp.commit(state));

  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  HealthMonitor monitor(io, cp, clock, prober);
  std::vector<nlohmann::json> followed;
  monitor.subscribe([&](const nlohmann::json& e) { followed.push_back(e); });
  monitor.start();
  prober.failing.insert("10.0.2.12:8080");
  runUntil(io, [&] { return reconciler.isExcluded("web", "10.0.2.12:8080"); });
  EXPECT_TRUE(reconciler.isExcluded("web", "10.0.2.12:8080"));
  EXPECT_EQ(cp.desired().services[0].endpoints[1].weight, 1u) << "the user's weight stays";
  const uint32_t id = *reconciler.endpointId("web", "10.0.2.12:8080");
  const auto& ring = dataplane.rings.begin()->second;
  EXPECT_EQ(std::count(ring.begin(), ring.end(), id), 0);
  auto view = *monitor.healthJson("web");
  EXPECT_EQ(view["services"][0]["endpoints"][1]["state"], "ejected");
  EXPECT_EQ(view["services"][0]["endpoints"][1]["in_ring"], false);

  prober.failing.clear();
  runUntil(io, [&] { return !reconciler.isExcluded("web", "10.0.2.12:8080"); });
  EXPECT_FALSE(reconciler.isExcluded("web", "10.0.2.12:8080"));
  std::vector<std::string> path;
  for (const auto& e : followed) path.push_back(e["to"].get<std::string>());
  EXPECT_EQ(path, (std::vector<std::string>{"suspect", "ejected", "probing", "healthy"}));
  EXPECT_EQ(monitor.eventsJson().size(), 4u);
  EXPECT_EQ(monitor.eventsJson(2).size(), 2u);
  monitor.stop();
}

// Datapath events through the monitor: ids map to endpoints, a down mark ejects at once and (with
// on_eject: reset) flushes the endpoint's connections, a mark found at start counts as a down
// event, the cap's veto clears the mark, and /v1/health shows the datapath's view.
TEST(HealthMonitor, DatapathEventsEjectFlushOnResetAndClearMarks) {
  meshpath::testing::FakeDataplane dataplane;
  Reconciler reconciler(dataplane);
  reconciler.start(RealizedSnapshot{}, std::nullopt);
  StateStore store(::testing::TempDir() + "/health_monitor_passive_state.json");
  ControlPlane cp(dataplane, reconciler, store, "", false);
  DesiredState state = webState(4);
  ServiceSpec& web = state.services[0];
  web.health.ejectionTimeMs = 60000;  // type none: passive only
  web.health.panicThresholdPercent = 0;  // the cap alone decides
  web.onEject = OnEject::kReset;
  ASSERT_TRUE(cp.commit(state));
  const auto id = [&](int i) {
    return *reconciler.endpointId("web", "10.0.2.1" + std::to_string(i) + ":8080");
  };
  // The pinned maps say endpoint 4 was marked down before this meshd started.
  dataplane.health[id(4)].down = true;
  dataplane.health[id(4)].fails = 3;
  dataplane.health[id(1)].activeConns = 7;
  dataplane.health[id(1)].rttNs = 250000;

  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  HealthMonitor monitor(io, cp, clock, prober);
  monitor.start();
  EXPECT_EQ(dataplane.resyncs, 1) << "active connections recounted at start";
  EXPECT_TRUE(reconciler.isExcluded("web", "10.0.2.14:8080"));
  ASSERT_EQ(dataplane.flushed.size(), 1u);
  EXPECT_EQ(dataplane.flushed[0], std::set<uint32_t>{id(4)});
  EXPECT_EQ(dataplane.health[id(1)].fall, 3u);

  monitor.onDatapathEvent(DatapathEvent{0, id(2), MP_HEV_SUSPECT, MP_PASSIVE_RST, 1});
  monitor.onDatapathEvent(DatapathEvent{0, id(2), MP_HEV_DOWN, MP_PASSIVE_ICMP_UNREACH, 3});
  EXPECT_TRUE(reconciler.isExcluded("web", "10.0.2.12:8080"));
  ASSERT_EQ(dataplane.flushed.size(), 2u);
  EXPECT_EQ(dataplane.flushed[1], std::set<uint32_t>{id(2)});
  auto events = monitor.eventsJson();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[events.size() - 2]["reason"],
            "datapath: rst_answering_syn; passive_fall failures in a row eject it");
  EXPECT_EQ(events.back()["to"], "ejected");
  EXPECT_EQ(events.back()["reason"].get<std::string>().rfind(
                "datapath: 3 passive failures (icmp_unreachable)", 0),
            0u);

  // Two of four are out: the cap (50%) holds the third in, and its mark is cleared.
  dataplane.health[id(3)].down = true;
  dataplane.cleared.clear();
  monitor.onDatapathEvent(DatapathEvent{0, id(3), MP_HEV_DOWN, MP_PASSIVE_SYN_RETRANS, 3});
  EXPECT_FALSE(reconciler.isExcluded("web", "10.0.2.13:8080"));
  EXPECT_EQ(dataplane.cleared, std::vector<uint32_t>{id(3)});
  EXPECT_FALSE(dataplane.health[id(3)].down);

  // Events of ids nobody has are ignored; so are events read through the dataplane's queue.
  monitor.onDatapathEvent(DatapathEvent{0, 999, MP_HEV_DOWN, MP_PASSIVE_RST, 3});
  dataplane.pendingEvents.push_back(DatapathEvent{0, id(3), MP_HEV_RECOVERED, 0, 0});
  monitor.consumeDatapathEvents();
  EXPECT_EQ(monitor.service("web")->endpoints().at("10.0.2.13:8080").state,
            EndpointState::kHealthy);

  auto view = *monitor.healthJson("web");
  const auto& ep1 = view["services"][0]["endpoints"][0];
  EXPECT_EQ(ep1["state"], "healthy");
  EXPECT_EQ(ep1["datapath"], (nlohmann::json{{"fails", 0},
                                             {"down", false},
                                             {"fall", 3},
                                             {"rtt_us", 250.0},
                                             {"active_conns", 7}}));
  EXPECT_TRUE(view["services"][0]["endpoints"][1]["datapath"]["rtt_us"].is_null());
  EXPECT_EQ(view["services"][0]["check"]["passive_fall"], 3);
  monitor.stop();
}

// on_eject: keep (the default): an ejected endpoint leaves the ring and nothing else happens to
// its connections; switching the service to reset makes the next ejection flush.
TEST(HealthMonitor, OnEjectKeepLeavesConnectionsInPlace) {
  meshpath::testing::FakeDataplane dataplane;
  Reconciler reconciler(dataplane);
  reconciler.start(RealizedSnapshot{}, std::nullopt);
  StateStore store(::testing::TempDir() + "/health_monitor_keep_state.json");
  ControlPlane cp(dataplane, reconciler, store, "", false);
  DesiredState state = webState(4);
  state.services[0].health.ejectionTimeMs = 60000;  // passive only
  ASSERT_EQ(state.services[0].onEject, OnEject::kKeep);
  ASSERT_TRUE(cp.commit(state));
  const auto id = [&](int i) {
    return *reconciler.endpointId("web", "10.0.2.1" + std::to_string(i) + ":8080");
  };
  dataplane.conns = {{id(2), true, true}, {id(2), true, true}, {id(1), true, true}};

  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  HealthMonitor monitor(io, cp, clock, prober);
  monitor.start();
  monitor.onDatapathEvent(DatapathEvent{0, id(2), MP_HEV_DOWN, MP_PASSIVE_RST, 3});
  EXPECT_TRUE(reconciler.isExcluded("web", "10.0.2.12:8080")) << "new flows avoid it";
  EXPECT_TRUE(dataplane.flushed.empty()) << "its established connections stay";
  EXPECT_TRUE(dataplane.conns[0].live && dataplane.conns[1].live);
  EXPECT_EQ(monitor.eventsJson().back()["to"], "ejected");

  state.services[0].onEject = OnEject::kReset;
  ASSERT_TRUE(cp.commit(state));
  monitor.onDatapathEvent(DatapathEvent{0, id(3), MP_HEV_DOWN, MP_PASSIVE_RST, 3});
  ASSERT_EQ(dataplane.flushed.size(), 1u);
  EXPECT_EQ(dataplane.flushed[0], std::set<uint32_t>{id(3)});
  EXPECT_TRUE(dataplane.conns[0].live) << "the earlier ejection's connections are not revisited";
  monitor.stop();
}

// After each recount the monitor compares every endpoint's SNAT ports in use with its capacity
// (sources x ports): an event and a warning at 80%, once; "ok" again only below 70%.
TEST(HealthMonitor, SnatPortsRunningShortRaiseAnEventOncePerCrossing) {
  meshpath::testing::FakeDataplane dataplane;
  Reconciler reconciler(dataplane);
  reconciler.start(RealizedSnapshot{}, std::nullopt);
  StateStore store(::testing::TempDir() + "/health_monitor_snat_state.json");
  ControlPlane cp(dataplane, reconciler, store, "", false);
  DesiredState state = webState(2);
  state.node.snatPortMin = 10000;
  state.node.snatPortMax = 10499;                         // 500 ports
  state.node.snatPool = {*IpAddress::parse("10.0.2.2")};  // 2 sources: capacity 1000
  ASSERT_TRUE(cp.commit(state));
  const uint32_t ep1 = *reconciler.endpointId("web", "10.0.2.11:8080");
  const uint32_t ep2 = *reconciler.endpointId("web", "10.0.2.12:8080");
  dataplane.connStats.snatPortsInUse = {{ep1, 800}, {ep2, 799}};

  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  HealthMonitor monitor(io, cp, clock, prober);
  std::vector<nlohmann::json> followed;
  monitor.subscribe([&](const nlohmann::json& e) { followed.push_back(e); });
  monitor.start();  // the first recount
  io.run_for(std::chrono::milliseconds(50));
  ASSERT_EQ(followed.size(), 1u);
  EXPECT_EQ(followed[0]["service"], "web");
  EXPECT_EQ(followed[0]["endpoint"], "10.0.2.11:8080");
  EXPECT_EQ(followed[0]["from"], "snat_ok");
  EXPECT_EQ(followed[0]["to"], "snat_high");
  EXPECT_EQ(
      followed[0]["reason"].get<std::string>().rfind("SNAT ports: 800 of 1000 in use (80%)", 0), 0u)
      << followed[0]["reason"];

  // Still high, or dipping to 70%: no new event. Below 70%: back to ok.
  dataplane.connStats.snatPortsInUse[ep1] = 900;
  monitor.recount();
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  dataplane.connStats.snatPortsInUse[ep1] = 700;
  monitor.recount();
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  EXPECT_EQ(followed.size(), 1u);
  dataplane.connStats.snatPortsInUse[ep1] = 699;
  monitor.recount();
  io.restart();
  io.run_for(std::chrono::milliseconds(50));
  ASSERT_EQ(followed.size(), 2u);
  EXPECT_EQ(followed[1]["from"], "snat_high");
  EXPECT_EQ(followed[1]["to"], "snat_ok");
  EXPECT_EQ(followed[1]["reason"], "SNAT ports: 699 of 1000 in use (69%), below 70% again");
  // Health is untouched by it.
  EXPECT_FALSE(reconciler.isExcluded("web", "10.0.2.11:8080"));
  monitor.stop();
}

// The auto SYN protection switch: an event per transition, those between two polls included; what
// the maps held when meshd started is not replayed.
TEST(HealthMonitor, SynProtectionSwitchesRaiseAnEventEach) {
  meshpath::testing::FakeDataplane dataplane;
  Reconciler reconciler(dataplane);
  reconciler.start(RealizedSnapshot{}, std::nullopt);
  StateStore store(::testing::TempDir() + "/health_monitor_syn_state.json");
  ControlPlane cp(dataplane, reconciler, store, "", false);
  DesiredState state = webState(2);
  state.node.synFloodThreshold = 500;
  ASSERT_TRUE(cp.commit(state));
  const uint32_t web = *reconciler.serviceId("web");
  dataplane.syn[web] = SynStats{.active = true, .switchedOn = 3, .switchedOff = 2};

  asio::io_context io;
  SteadyClock clock;
  FakeProber prober;
  HealthMonitor monitor(io, cp, clock, prober);
  std::vector<nlohmann::json> followed;
  monitor.subscribe([&](const nlohmann::json& e) { followed.push_back(e); });
  monitor.start();  // the first poll: where the counts stand
  EXPECT_TRUE(followed.empty());

  dataplane.syn[web] =
      SynStats{.active = false, .switchedOn = 3, .switchedOff = 3, .lastUnanswered = 40};
  monitor.checkSynProtection();
  ASSERT_EQ(followed.size(), 1u);
  EXPECT_EQ(followed[0]["service"], "web");
  EXPECT_TRUE(followed[0]["endpoint"].is_null());
  EXPECT_EQ(followed[0]["from"], "syn_protection_on");
  EXPECT_EQ(followed[0]["to"], "syn_protection_off");
  EXPECT_EQ(followed[0]["reason"],
            "40 unanswered SYNs/s in the last second (node.syn_flood_threshold 500): calm again, "
            "SYNs go to the endpoints");

  // On and off again between two polls: both.
  dataplane.syn[web] =
      SynStats{.active = false, .switchedOn = 4, .switchedOff = 4, .lastUnanswered = 7000};
  monitor.checkSynProtection();
  ASSERT_EQ(followed.size(), 3u);
  EXPECT_EQ(followed[1]["to"], "syn_protection_on");
  EXPECT_EQ(followed[1]["reason"].get<std::string>().rfind("7000 unanswered SYNs/s", 0), 0u);
  EXPECT_EQ(followed[2]["to"], "syn_protection_off");
  monitor.checkSynProtection();
  EXPECT_EQ(followed.size(), 3u) << "no change, no event";
  // A read that fails tells nothing and loses nothing.
  dataplane.failSynStats = true;
  dataplane.syn[web].switchedOn = 5;
  dataplane.syn[web].active = true;
  monitor.checkSynProtection();
  EXPECT_EQ(followed.size(), 3u);
  dataplane.failSynStats = false;
  monitor.checkSynProtection();
  ASSERT_EQ(followed.size(), 4u);
  EXPECT_EQ(followed[3]["to"], "syn_protection_on");
  EXPECT_FALSE(reconciler.isExcluded("web", "10.0.2.11:8080")) << "health is untouched";
  monitor.stop();
}

}  // namespace
}  // namespace meshpath::health
