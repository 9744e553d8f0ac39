// The REST routes of docs/api.md through ApiHandler and ControlPlane over a fake dataplane:
// shapes, status codes, and that a refused request changes nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "api_server.h"
#include "fake_dataplane.h"

namespace meshpath {
namespace {

using nlohmann::json;

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("meshd_api_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    node_.interfaces = {"veth0"};
    node_.ipv4 = IpAddress::parse("10.0.2.1");
    node_.ringSize = 1009;
    node_.stateFile = (dir_ / "state.json").string();
    // node.snat_ports: auto, as meshd resolves it at start on a host with Linux's default
    // ephemeral range (local_ports.h).
    node_.snatPortMin = 1024;
    node_.snatPortMax = 32767;
    store_ = std::make_unique<StateStore>(node_.stateFile);
    reconciler_ = std::make_unique<Reconciler>(dp_);
    reconciler_->start({}, std::nullopt);
    ASSERT_TRUE(reconciler_->apply(DesiredState{node_, {}}));
    cp_ = std::make_unique<ControlPlane>(dp_, *reconciler_, *store_, "", false);
    cp_->setAutoSnatPorts(PortRange{1024, 32767});
    handler_ = std::make_unique<ApiHandler>(*cp_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::pair<int, json> call(const std::string& method, const std::string& target,
                            const std::string& body = "") {
    ApiAnswer a = handler_->handle(method, target, body);
    return {a.status, json::parse(a.body)};
  }

  void createWeb() {
    auto [status, body] = call("POST", "/v1/services", R"({"name": "web", "vip": "10.0.0.100",
        "port": 80, "endpoints": [{"address": "10.0.2.11", "port": 8080},
                                  {"address": "10.0.2.12", "port": 8080, "weight": 2}]})");
    ASSERT_EQ(status, 201) << body.dump();
  }

  std::filesystem::path dir_;
  NodeSpec node_;
  testing::FakeDataplane dp_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<ControlPlane> cp_;
  std::unique_ptr<ApiHandler> handler_;
};

TEST_F(ApiTest, Status) {
  createWeb();
  DesiredState withPool = cp_->desired();
  withPool.node.snatPool = {*IpAddress::parse("10.0.2.2"), *IpAddress::parse("10.0.2.3")};
  ASSERT_TRUE(cp_->commit(withPool));
  dp_.connStats = ConnTableStats{.established = 12,
                                 .halfOpen = 3,
                                 .establishedCapacity = 1 << 20,
                                 .halfOpenCapacity = 1 << 18,
                                 .expiredReaped = 40,
                                 .bytesPerConnection = 416,
                                 .bytesPerHalfOpen = 432,
                                 .snatPortsInUse = {}};
  auto [status, body] = call("GET", "/v1/status");
  ASSERT_EQ(status, 200);
  EXPECT_EQ(body["pid"], ::getpid());
  EXPECT_EQ(body["adopted"], false);
  EXPECT_EQ(body["pin_root"], "/sys/fs/bpf/test");
  EXPECT_EQ(body["interfaces"][0],
            (json{{"name", "veth0"}, {"ifindex", 3}, {"attached", true}, {"mode", "native"}}));
  EXPECT_EQ(body["node"]["ipv4"], "10.0.2.1");
  EXPECT_TRUE(body["node"]["ipv6"].is_null());
  EXPECT_EQ(body["node"]["ring_size"], 1009);
  EXPECT_EQ(body["node"]["snat_port_min"], 1024);
  EXPECT_EQ(body["node"]["snat_port_max"], 32767);
  EXPECT_EQ(body["node"]["snat_ports_auto"], true);
  EXPECT_EQ(body["node"]["snat_pool"], json::array({"10.0.2.2", "10.0.2.3"}));
  EXPECT_EQ(body["node"]["half_table_size"], 262144);
  EXPECT_EQ(body["node"]["syn_flood_threshold"], 1024);
  // Field by field: the object may grow (other forwarding modes' costs).
  const json& tables = body["connections"];
  EXPECT_EQ(tables["established"], 12);
  EXPECT_EQ(tables["half_open"], 3);
  EXPECT_EQ(tables["established_capacity"], 1 << 20);
  EXPECT_EQ(tables["half_open_capacity"], 1 << 18);
  EXPECT_EQ(tables["expired_reaped"], 40);
  EXPECT_EQ(tables["bytes_per_connection"], 416);
  EXPECT_EQ(tables["bytes_per_half_open"], 432);
  EXPECT_EQ(body["services"], 1);
  EXPECT_EQ(body["endpoints"], 2);
  EXPECT_TRUE(body.contains("version") && body.contains("uptime_s"));
}

TEST_F(ApiTest, CreateGetListDeleteService) {
  auto [status, created] = call("POST", "/v1/services", R"({"name": "web", "vip": "10.0.0.100",
      "port": 80, "endpoints": [{"address": "10.0.2.11", "port": 8080}]})");
  ASSERT_EQ(status, 201) << created.dump();
  EXPECT_EQ(created["id"], 0);
  EXPECT_EQ(created["ring_size"], 1009);
  EXPECT_EQ(created["ring_bytes"], 2 * 1009 * 8 + 312)
      << "two halves of 1009 endpoint ids, 8 bytes each as the kernel stores them, and the header";
  EXPECT_EQ(created["protocol"], "tcp");
  EXPECT_EQ(created["algorithm"], "maglev");
  EXPECT_EQ(created["forwarding"], "nat");
  EXPECT_EQ(created["stats"], (json{{"packets", 0}, {"bytes", 0}, {"new_conns", 1}}));
  EXPECT_EQ(created["endpoints"][0]["weight"], 1);
  EXPECT_EQ(created["endpoints"][0]["id"], 0);
  EXPECT_TRUE(created["endpoints"][0].contains("stats"));
  EXPECT_EQ(dp_.services.size(), 1u);

  auto [gs, got] = call("GET", "/v1/services/web");
  EXPECT_EQ(gs, 200);
  EXPECT_EQ(got, created);
  auto [ls, list] = call("GET", "/v1/services");
  EXPECT_EQ(ls, 200);
  EXPECT_EQ(list, json::array({created}));

  // What GET answers can be sent back (id, ring_size, stats are ignored on input).
  auto [again, conflict] = call("POST", "/v1/services", got.dump());
  EXPECT_EQ(again, 409);

  auto [ds, deleted] = call("DELETE", "/v1/services/web");
  EXPECT_EQ(ds, 200);
  EXPECT_EQ(deleted, (json{{"deleted", "web"}}));
  EXPECT_TRUE(dp_.services.empty());
  EXPECT_TRUE(dp_.endpoints.empty());
  EXPECT_EQ(call("GET", "/v1/services/web").first, 404);
  EXPECT_EQ(call("DELETE", "/v1/services/web").first, 404);
}

TEST_F(ApiTest, RefusedServicesChangeNothing) {
  createWeb();
  auto before = dp_.log.size();
  auto expectRefused = [&](const std::string& body, int code, const std::string& mention) {
    auto [status, answer] = call("POST", "/v1/services", body);
    EXPECT_EQ(status, code) << body;
    EXPECT_NE(answer["error"].get<std::string>().find(mention), std::string::npos) << answer.dump();
    EXPECT_TRUE(answer.contains("hint"));
  };
  expectRefused(R"({"name": "web2", "vip": "10.0.0.100", "port": 80})", 409, "web");
  expectRefused(R"({"name": "x", "vip": "10.0.0.1", "port": 99999})", 400, "port");
  expectRefused(R"({"name": "x", "vip": "10.0.0.1", "port": 80, "colour": 1})", 400, "colour");
  expectRefused(R"({"name": "x", "vip": "10.0.0.1", "port": 80)", 400, "JSON");
  expectRefused(R"({"name": "BAD NAME", "vip": "10.0.0.1", "port": 80})", 400, "name");
  // IPv6 VIP on a node with no IPv6 address: a rule of validateService.
  expectRefused(R"({"name": "v6", "vip": "fd00::1", "port": 80})", 400, "");
  // Paths name fields of the body, not of meshd's whole state.
  {
    auto [status, answer] = call("POST", "/v1/services", R"({"name": "mixed", "vip": "10.0.0.7",
        "port": 80, "endpoints": [{"address": "fd00::7", "port": 80}]})");
    EXPECT_EQ(status, 400);
    EXPECT_EQ(answer["error"].get<std::string>().rfind("endpoints[0].address", 0), 0u)
        << answer.dump();
  }
  EXPECT_EQ(dp_.log.size(), before);
  EXPECT_EQ(cp_->desired().services.size(), 1u);
}

TEST_F(ApiTest, Endpoints) {
  createWeb();
  auto [as, added] = call("POST", "/v1/services/web/endpoints",
                          R"({"address": "10.0.2.13", "port": 8080, "weight": 3})");
  ASSERT_EQ(as, 201) << added.dump();
  EXPECT_EQ(added["address"], "10.0.2.13");
  EXPECT_EQ(added["weight"], 3);
  EXPECT_EQ(added["id"], 2);
  EXPECT_TRUE(added.contains("stats"));
  EXPECT_EQ(call("POST", "/v1/services/web/endpoints", added.dump()).first, 409);
  EXPECT_EQ(call("POST", "/v1/services/nope/endpoints", added.dump()).first, 404);

  auto [ps, put] = call("PUT", "/v1/services/web/endpoints/10.0.2.13/8080", R"({"weight": 0})");
  ASSERT_EQ(ps, 200) << put.dump();
  EXPECT_EQ(put["weight"], 0);
  EXPECT_EQ(put["id"], 2);
  EXPECT_EQ(call("PUT", "/v1/services/web/endpoints/10.0.2.13/8080", R"({"weight": 20000})").first,
            400);
  EXPECT_EQ(call("PUT", "/v1/services/web/endpoints/10.0.2.99/8080", R"({"weight": 1})").first,
            404);
  EXPECT_EQ(call("PUT", "/v1/services/web/endpoints/10.0.2.13/x", R"({"weight": 1})").first, 400);
  EXPECT_EQ(call("PUT", "/v1/services/web/endpoints/not-an-ip/80", R"({"weight": 1})").first, 400);

  auto [ds, deleted] = call("DELETE", "/v1/services/web/endpoints/10.0.2.13/8080");
  EXPECT_EQ(ds, 200);
  EXPECT_EQ(deleted, (json{{"deleted", "10.0.2.13:8080"}}));
  EXPECT_FALSE(dp_.endpoints.contains(2));
  EXPECT_EQ(call("DELETE", "/v1/services/web/endpoints/10.0.2.13/8080").first, 404);
}

TEST_F(ApiTest, DrainSetsWeightZeroAndSaysWhenDone) {
  createWeb();
  const uint32_t id = *reconciler_->endpointId("web", "10.0.2.12:8080");
  dp_.health[id].activeConns = 2;
  auto [gs, before] = call("GET", "/v1/services/web");
  ASSERT_EQ(gs, 200);
  EXPECT_EQ(before["endpoints"][1]["active_conns"], 2);
  EXPECT_TRUE(before["endpoints"][1]["drain"].is_null());

  auto [s1, drained] = call("POST", "/v1/services/web/endpoints/10.0.2.12/8080/drain");
  ASSERT_EQ(s1, 200) << drained.dump();
  EXPECT_EQ(drained["weight"], 0);
  EXPECT_EQ(drained["id"], id);
  EXPECT_EQ(drained["active_conns"], 2);
  EXPECT_EQ(drained["drain"], "draining");
  EXPECT_EQ(cp_->findService("web")->endpoints[1].weight, 0u);
  EXPECT_EQ((*store_->load())->desired.services[0].endpoints[1].weight, 0u) << "persisted";

  // Idempotent: draining again answers the same; with no connection left it is drained.
  dp_.health[id].activeConns = 0;
  auto [s2, again] = call("POST", "/v1/services/web/endpoints/10.0.2.12/8080/drain");
  ASSERT_EQ(s2, 200) << again.dump();
  EXPECT_EQ(again["weight"], 0);
  EXPECT_EQ(again["drain"], "drained");
  auto [ls, list] = call("GET", "/v1/services");
  EXPECT_EQ(list[0]["endpoints"][1]["drain"], "drained");
  EXPECT_EQ(list[0]["endpoints"][0]["active_conns"], 0);

  EXPECT_EQ(call("POST", "/v1/services/nope/endpoints/10.0.2.12/8080/drain").first, 404);
  EXPECT_EQ(call("POST", "/v1/services/web/endpoints/10.0.2.99/8080/drain").first, 404);
  EXPECT_EQ(call("POST", "/v1/services/web/endpoints/10.0.2.12/0/drain").first, 400);
  EXPECT_EQ(call("GET", "/v1/services/web/endpoints/10.0.2.12/8080/drain").first, 405);
  // The Endpoint alone (meshctl's drain --wait polls it).
  auto [es, one] = call("GET", "/v1/services/web/endpoints/10.0.2.12/8080");
  ASSERT_EQ(es, 200) << one.dump();
  EXPECT_EQ(one, again);
  EXPECT_EQ(call("GET", "/v1/services/web/endpoints/10.0.2.99/8080").first, 404);
  EXPECT_EQ(call("GET", "/v1/services/nope/endpoints/10.0.2.12/8080").first, 404);
  EXPECT_EQ(call("POST", "/v1/services/web/endpoints/10.0.2.12/8080/undrain").first, 404);
}

TEST_F(ApiTest, UdpEndpointsHaveNoConnectionCount) {
  auto [status, body] = call("POST", "/v1/services", R"({"name": "dns", "vip": "10.0.0.53",
      "port": 53, "protocol": "udp", "algorithm": "round-robin",
      "endpoints": [{"address": "10.0.2.11", "port": 5353, "weight": 0}]})");
  ASSERT_EQ(status, 201) << body.dump();
  EXPECT_EQ(body["algorithm"], "round-robin");
  EXPECT_TRUE(body["endpoints"][0]["active_conns"].is_null());
  EXPECT_EQ(body["endpoints"][0]["drain"], "drained");
  auto [bad, refused] = call("POST", "/v1/services", R"({"name": "dns2", "vip": "10.0.0.54",
      "port": 53, "protocol": "udp", "algorithm": "least-latency"})");
  EXPECT_EQ(bad, 400);
  EXPECT_NE(refused["error"].get<std::string>().find("least-latency needs protocol tcp"),
            std::string::npos)
      << refused.dump();
}

TEST_F(ApiTest, Ipv6EndpointInThePath) {
  node_.ipv6 = IpAddress::parse("fd00:2::1");
  ASSERT_TRUE(reconciler_->apply(DesiredState{node_, {}}));
  auto [cs, created] = call("POST", "/v1/services", R"({"name": "v6", "vip": "fd00::100",
      "port": 80, "endpoints": [{"address": "fd00:2::11", "port": 8080}]})");
  ASSERT_EQ(cs, 201) << created.dump();
  EXPECT_EQ(call("PUT", "/v1/services/v6/endpoints/fd00:2::11/8080", R"({"weight": 2})").first,
            200);
  EXPECT_EQ(call("PUT", "/v1/services/v6/endpoints/%5Bfd00%3A2%3A%3A11%5D/8080", R"({"weight": 3})")
                .first,
            200);
  auto [ds, deleted] = call("DELETE", "/v1/services/v6/endpoints/[fd00:2::11]/8080");
  EXPECT_EQ(ds, 200);
  EXPECT_EQ(deleted["deleted"], "[fd00:2::11]:8080");
}

TEST_F(ApiTest, Stats) {
  createWeb();
  const uint32_t ep2 = *reconciler_->endpointId("web", "10.0.2.12:8080");
  dp_.connStats.snatPortsInUse = {{ep2, 250}};
  auto [status, body] = call("GET", "/v1/stats");
  ASSERT_EQ(status, 200);
  ASSERT_EQ(body["services"].size(), 1u);
  const json& web = body["services"][0];
  EXPECT_EQ(web["name"], "web");
  EXPECT_EQ(web["bytes"], 0);
  EXPECT_EQ(web["endpoints"][1], (json{{"address", "10.0.2.12"},
                                       {"port", 8080},
                                       {"packets", 1},
                                       {"bytes", 10},
                                       {"new_conns", 0},
                                       {"snat_ports_used", 250},
                                       {"snat_capacity", 31744}}));
  EXPECT_EQ(web["endpoints"][0]["snat_ports_used"], 0);
  EXPECT_EQ(web["syn_protection"], (json{{"mode", "auto"},
                                         {"active", false},
                                         {"cookies_sent", 0},
                                         {"acks_valid", 0},
                                         {"acks_invalid", 0},
                                         {"retries", 0},
                                         {"retries_failed", 0},
                                         {"switched_on", 0},
                                         {"switched_off", 0},
                                         {"unanswered_per_s", 0}}));
  // Every SNAT source of the family multiplies the capacity.
  DesiredState withPool = cp_->desired();
  withPool.node.snatPool = {*IpAddress::parse("10.0.2.2"), *IpAddress::parse("fd00::2")};
  withPool.node.ipv6 = IpAddress::parse("fd00::1");
  ASSERT_TRUE(cp_->commit(withPool));
  EXPECT_EQ(call("GET", "/v1/stats").second["services"][0]["endpoints"][1]["snat_capacity"],
            2 * 31744);
  EXPECT_EQ(body["exceptions"].size(), static_cast<size_t>(MP_EXC_MAX));
  EXPECT_EQ(body["exceptions"]["drop_ip4_trunc"], 7);
  EXPECT_EQ(body["flow_cache"], (json{{"slots_per_cpu", 4},
                                      {"hits", 30},
                                      {"misses", 10},
                                      {"conflicts", 2},
                                      {"bypassed", 5},
                                      {"hit_ratio", 0.75}}));
}

TEST_F(ApiTest, SynProtectionInServicesAndStats) {
  auto [status, created] = call("POST", "/v1/services", R"({"name": "web", "vip": "10.0.0.100",
      "port": 80, "syn_protection": "always", "connect_retries": 4})");
  ASSERT_EQ(status, 201) << created.dump();
  EXPECT_EQ(created["syn_protection"], "always");
  EXPECT_EQ(created["connect_retries"], 4);
  const uint32_t id = *reconciler_->serviceId("web");
  EXPECT_EQ(dp_.services.at(ServiceKey{*IpAddress::parse("10.0.0.100"), 80, Protocol::kTcp})
                .synProtection,
            SynProtection::kAlways);
  dp_.syn[id] = SynStats{.cookiesSent = 12300,
                         .acksValid = 4,
                         .acksInvalid = 12200,
                         .retries = 3,
                         .retriesFailed = 1,
                         .active = true,
                         .switchedOn = 2,
                         .switchedOff = 1,
                         .lastUnanswered = 4100};
  const json syn = call("GET", "/v1/stats").second["services"][0]["syn_protection"];
  EXPECT_EQ(syn, (json{{"mode", "always"},
                       {"active", true},
                       {"cookies_sent", 12300},
                       {"acks_valid", 4},
                       {"acks_invalid", 12200},
                       {"retries", 3},
                       {"retries_failed", 1},
                       {"switched_on", 2},
                       {"switched_off", 1},
                       {"unanswered_per_s", 4100}}));

  // A UDP service: refused with a setting, shown without one, its mode off in the stats.
  auto [bad, refusal] = call("POST", "/v1/services", R"({"name": "dns", "vip": "10.0.0.53",
      "port": 53, "protocol": "udp", "syn_protection": "always"})");
  EXPECT_EQ(bad, 400);
  EXPECT_NE(refusal.dump().find("syn_protection applies to TCP services; remove it from UDP "
                                "service dns"),
            std::string::npos)
      << refusal.dump();
  auto [ok, dns] = call("POST", "/v1/services", R"({"name": "dns", "vip": "10.0.0.53",
      "port": 53, "protocol": "udp"})");
  ASSERT_EQ(ok, 201) << dns.dump();
  EXPECT_FALSE(dns.contains("syn_protection"));
  EXPECT_EQ(call("GET", "/v1/stats").second["services"][1]["syn_protection"]["mode"], "off");

  // A dataplane that cannot be read fails the stats, not meshd.
  dp_.failSynStats = true;
  EXPECT_EQ(call("GET", "/v1/stats").first, 500);
}

TEST_F(ApiTest, Apply) {
  createWeb();
  const std::string yaml = R"(
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080, weight: 1}
  - name: dns
    vip: 10.0.0.53
    port: 53
    protocol: udp
    endpoints:
      - {address: 10.0.2.21, port: 53}
)";
  auto [status, report] = call("POST", "/v1/apply", yaml);
  ASSERT_EQ(status, 200) << report.dump();
  EXPECT_EQ(report["added"], json{"dns"});
  EXPECT_EQ(report["removed"], json::array());
  EXPECT_EQ(report["changed"], json{"web"});
  EXPECT_EQ(report["dry_run"], false);
  EXPECT_EQ(report["diff"]["services_added"], json{"dns"});
  EXPECT_EQ(dp_.services.size(), 2u);

  // A node section equal to the running one is fine; a different one is a conflict.
  std::string sameNode =
      "node:\n  interfaces: [veth0]\n  ipv4: 10.0.2.1\n  ring_size: 1009\n"
      "  state_file: " +
      node_.stateFile + "\n" + yaml;
  auto [ss, same] = call("POST", "/v1/apply", sameNode);
  EXPECT_EQ(ss, 200) << same.dump();
  EXPECT_EQ(same["added"], json::array());
  EXPECT_EQ(same["removed"], json::array());
  EXPECT_EQ(same["changed"], json::array());
  EXPECT_EQ(same["summary"], "no changes");
  std::string otherNode =
      "node:\n  interfaces: [veth0, veth1]\n  ipv4: 10.0.2.1\n"
      "  ring_size: 1009\n" +
      yaml;
  auto [os, other] = call("POST", "/v1/apply", otherNode);
  EXPECT_EQ(os, 409);
  EXPECT_NE(other["error"].get<std::string>().find("interfaces"), std::string::npos);
  // snat_ports: auto means the range meshd resolved at start; written out, it is the same node.
  auto withPorts = [&](const std::string& ports) {
    return "node:\n  interfaces: [veth0]\n  ipv4: 10.0.2.1\n  ring_size: 1009\n  state_file: " +
           node_.stateFile + "\n  snat_ports: " + ports + "\n" + yaml;
  };
  EXPECT_EQ(call("POST", "/v1/apply", withPorts("auto")).first, 200);
  EXPECT_EQ(call("POST", "/v1/apply", withPorts("1024-32767")).first, 200);
  auto [ps, ports] = call("POST", "/v1/apply", withPorts("61000-65535"));
  EXPECT_EQ(ps, 409);
  EXPECT_NE(ports["error"].get<std::string>().find("snat_ports 1024-32767 -> 61000-65535"),
            std::string::npos)
      << ports.dump();

  EXPECT_EQ(call("POST", "/v1/apply", "services: [").first, 400);
  EXPECT_EQ(call("POST", "/v1/apply", "services:\n  - name: x\n    vip: 10.0.0.1\n").first, 400);
  auto [es, emptied] = call("POST", "/v1/apply", "services: []\n");
  EXPECT_EQ(es, 200);
  EXPECT_EQ(emptied["removed"], (json{"web", "dns"}));
  EXPECT_TRUE(dp_.services.empty());
}

TEST_F(ApiTest, DataplaneFailureIs500AndChangesNothing) {
  createWeb();
  dp_.failAt = static_cast<int>(dp_.log.size()) + 1;
  auto [status, body] =
      call("POST", "/v1/services/web/endpoints", R"({"address": "10.0.2.13", "port": 8080})");
  EXPECT_EQ(status, 500);
  EXPECT_NE(body["error"].get<std::string>().find("injected"), std::string::npos);
  EXPECT_EQ(cp_->desired().services[0].endpoints.size(), 2u);
  EXPECT_FALSE(dp_.endpoints.contains(2));
  EXPECT_TRUE(dp_.consistent());
}

TEST_F(ApiTest, ChangesAreSaved) {
  createWeb();
  auto saved = store_->load();
  ASSERT_TRUE(saved && saved->has_value());
  EXPECT_EQ((*saved)->desired, cp_->desired());
  EXPECT_EQ((*saved)->ids, reconciler_->ids());
}

TEST_F(ApiTest, UnknownPathsAndMethods) {
  EXPECT_EQ(call("GET", "/v2/status").first, 404);
  EXPECT_EQ(call("GET", "/v1/nothing").first, 404);
  EXPECT_EQ(call("GET", "/v1/services/web/endpoints/1.2.3.4").first, 404);
  ApiAnswer a = handler_->handle("DELETE", "/v1/status", "");
  EXPECT_EQ(a.status, 405);
  EXPECT_EQ(a.allow, "GET");
  EXPECT_EQ(handler_->handle("PATCH", "/v1/services", "").allow, "GET, POST");
  EXPECT_EQ(call("GET", "/v1/status?verbose=1").first, 200);
  // Bytes that are not UTF-8 in the path come back replaced, not as an exception.
  EXPECT_EQ(call("PUT", "/v1/services/web/endpoints/%ff%fe/80", R"({"weight": 1})").first, 400);
}

}  // namespace
}  // namespace meshpath
