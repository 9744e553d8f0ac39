// json_test — the docs/api.md shapes: exact output, round trips, defaults, and bad input refused
// with the field named.
#include "json.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace meshpath {
namespace {

using nlohmann::json;

ServiceSpec webService() {
  ServiceSpec svc;
  svc.name = "web";
  svc.vip = *IpAddress::parse("10.0.0.100");
  svc.port = 80;
  svc.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, 1},
                   {*IpAddress::parse("10.0.2.12"), 8080, 0}};
  return svc;
}

DesiredState sampleState() {
  DesiredState state;
  state.node.interfaces = {"veth-c", "veth-e"};
  state.node.ipv4 = IpAddress::parse("10.0.2.1");
  state.node.snatPortMin = 62000;
  state.node.ringSize = 100003;
  state.services.push_back(webService());
  ServiceSpec dns;
  dns.name = "dns";
  dns.vip = *IpAddress::parse("fd00::53");
  dns.port = 53;
  dns.protocol = Protocol::kUdp;
  dns.endpoints = {{*IpAddress::parse("fd00:2::11"), 5353, 10000}};
  state.services.push_back(dns);
  return state;
}

TEST(Json, ServiceHasTheApiShape) {
  const json expected = json::parse(R"({
    "name": "web", "vip": "10.0.0.100", "port": 80, "protocol": "tcp", "algorithm": "maglev",
    "forwarding": "nat", "endpoints": [
      {"address": "10.0.2.11", "port": 8080, "weight": 1},
      {"address": "10.0.2.12", "port": 8080, "weight": 0}],
    "timeouts": {"tcp_syn": "5s", "tcp_established": "3h", "tcp_fin": "60s", "tcp_closed": "2s",
                 "udp": "30s", "udp_replied": "120s"},
    "on_eject": "keep", "syn_protection": "auto", "connect_retries": 2})");
  EXPECT_EQ(toJson(webService()), expected);
  const json adl = webService();
  EXPECT_EQ(adl, expected);
}

TEST(Json, NodeHasTheStatusFieldNames) {
  NodeSpec node;
  node.interfaces = {"eth0"};
  node.ipv4 = IpAddress::parse("10.0.2.1");
  const json j = toJson(node);
  EXPECT_EQ(j.at("ipv4"), "10.0.2.1");
  EXPECT_TRUE(j.at("ipv6").is_null());
  EXPECT_EQ(j.at("snat_port_min"), 0) << "auto";
  EXPECT_EQ(j.at("snat_port_max"), 0);
  EXPECT_EQ(j.at("snat_pool"), json::array());
  EXPECT_EQ(j.at("ring_size"), "auto");  // each service's ring sized to it (ring.h)
  node.ringSize = 65537;
  EXPECT_EQ(toJson(node).at("ring_size"), 65537);
  EXPECT_EQ(nodeFromJson(toJson(node)).ringSize, 65537u);
  EXPECT_EQ(nodeFromJson(json{{"ring_size", "auto"}}).ringSize, 0u);
  EXPECT_THROW(nodeFromJson(json{{"ring_size", "big"}}), JsonInputError);
  EXPECT_EQ(j.at("conn_table_size"), 1048576);
  EXPECT_EQ(j.at("half_table_size"), 262144);
  EXPECT_EQ(j.at("interfaces"), json::array({"eth0"}));
  EXPECT_EQ(j.at("xdp_mode"), "native");
  EXPECT_EQ(j.at("syn_flood_threshold"), 1024);
}

TEST(Json, SynProtectionRoundTripsAndIsTcpOnly) {
  ServiceSpec web = webService();
  web.synProtection = SynProtection::kAlways;
  web.connectRetries = 5;
  const json j = toJson(web);
  EXPECT_EQ(j.at("syn_protection"), "always");
  EXPECT_EQ(j.at("connect_retries"), 5);
  EXPECT_EQ(serviceFromJson(parseJson(j.dump())), web);
  web.synProtection = SynProtection::kOff;
  web.connectRetries = 0;
  EXPECT_EQ(toJson(web).at("syn_protection"), "off");
  EXPECT_EQ(serviceFromJson(toJson(web)), web);

  // A UDP service shows neither (a GET answer sent back must be accepted) ...
  const ServiceSpec dns = sampleState().services[1];
  EXPECT_FALSE(toJson(dns).contains("syn_protection"));
  EXPECT_FALSE(toJson(dns).contains("connect_retries"));
  // ... and refuses connect_retries outright; syn_protection is validateService's (config_test).
  json udp = toJson(dns);
  udp["connect_retries"] = 2u;
  try {
    serviceFromJson(udp);
    ADD_FAILURE() << "connect_retries accepted on a UDP service";
  } catch (const JsonInputError& e) {
    EXPECT_STREQ(e.what(),
                 "connect_retries: connect_retries applies to TCP services; remove it from UDP "
                 "service dns");
  }
  udp.erase("connect_retries");
  udp["syn_protection"] = "always";
  EXPECT_EQ(serviceFromJson(udp).synProtection, SynProtection::kAlways);
  NodeSpec v6 = sampleState().node;
  v6.ipv6 = IpAddress::parse("fd00:2::1");
  EXPECT_EQ(validateService(v6, serviceFromJson(udp)),
            std::vector<std::string>{"syn_protection: always: syn_protection applies to TCP "
                                     "services; remove it from UDP service dns"});

  NodeSpec node;
  node.synFloodThreshold = 77;
  EXPECT_EQ(nodeFromJson(toJson(node)), node);
  EXPECT_EQ(nodeFromJson(json::object()).synFloodThreshold, 1024u) << "the default";
}

TEST(Json, BadSynProtectionIsRefusedSayingWhatIsAllowed) {
  auto refusal = [](const std::string& text) -> std::string {
    try {
      serviceFromJson(json::parse(text));
    } catch (const JsonInputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(refusal(R"({"name": "web", "vip": "10.0.0.100", "port": 80, "syn_protection": "on"})"),
            R"(syn_protection: "on" is not one of off, auto, always)");
  EXPECT_EQ(refusal(R"({"name": "web", "vip": "10.0.0.100", "port": 80, "syn_protection": 1})"),
            "syn_protection: 1 is not a string");
  EXPECT_EQ(refusal(R"({"name": "web", "vip": "10.0.0.100", "port": 80, "connect_retries": 8})"),
            "connect_retries: 8 is out of range 0..7");
  EXPECT_EQ(refusal(R"({"name": "web", "vip": "10.0.0.100", "port": 80, "connect_retries": -1})"),
            "connect_retries: -1 is out of range 0..7");
  EXPECT_EQ(refusal(R"({"name": "web", "vip": "10.0.0.100", "port": 80, "connect_retries": "2"})"),
            R"(connect_retries: "2" is not a whole number)");
  try {
    nodeFromJson(json::parse(R"({"syn_flood_threshold": 0})"));
    ADD_FAILURE() << "syn_flood_threshold 0 accepted";
  } catch (const JsonInputError& e) {
    EXPECT_STREQ(e.what(), "node.syn_flood_threshold: 0 is out of range 1..4294967295");
  }
}

TEST(Json, RoundTrips) {
  const DesiredState state = sampleState();
  const std::string text = toJson(state).dump(2);
  EXPECT_EQ(stateFromJson(parseJson(text)), state);
  EXPECT_EQ(parseJson(text).get<DesiredState>(), state);
  for (const auto& svc : state.services) {
    EXPECT_EQ(serviceFromJson(parseJson(toJson(svc).dump())), svc);
    for (const auto& ep : svc.endpoints) EXPECT_EQ(endpointFromJson(toJson(ep)), ep);
  }
  NodeSpec bare;  // no addresses, no interfaces
  EXPECT_EQ(nodeFromJson(toJson(bare)), bare);
  EXPECT_EQ(json(IpAddress::parse("fd00::1").value()).get<IpAddress>(),
            *IpAddress::parse("fd00::1"));
}

TEST(Json, InputDefaultsAndIgnoredFields) {
  const ServiceSpec svc = serviceFromJson(json::parse(R"({
    "name": "web", "vip": "10.0.0.100", "port": 80, "id": 4, "ring_size": 65537,
    "stats": {"packets": 1, "bytes": 2, "new_conns": 3},
    "endpoints": [{"address": "10.0.2.11", "port": 8080, "id": 3,
                   "stats": {"packets": 0, "bytes": 0, "new_conns": 0},
                   "active_conns": null, "drain": null}]})"));
  EXPECT_EQ(svc.protocol, Protocol::kTcp);
  EXPECT_EQ(svc.algorithm, Algorithm::kMaglev);
  EXPECT_EQ(svc.forwarding, ForwardingMode::kNat);
  ASSERT_EQ(svc.endpoints.size(), 1u);
  EXPECT_EQ(svc.endpoints[0].weight, 1u);
  EXPECT_TRUE(
      serviceFromJson(json::parse(R"({"name":"a","vip":"10.0.0.1","port":1})")).endpoints.empty());
  const NodeSpec node = nodeFromJson(json::parse(R"({"interfaces": ["eth0"], "ipv6": null})"));
  EXPECT_FALSE(node.ipv6);
  EXPECT_EQ(node.ringSize, NodeSpec().ringSize);
}

TEST(Json, WeightBody) {
  EXPECT_EQ(weightFromJson(json::parse(R"({"weight": 0})")), 0u);
  EXPECT_EQ(weightFromJson(json::parse(R"({"weight": 10000})")), 10000u);
  EXPECT_THROW(weightFromJson(json::parse(R"({"weight": 20000})")), JsonInputError);
  EXPECT_THROW(weightFromJson(json::parse(R"({"w": 1})")), JsonInputError);
  EXPECT_THROW(weightFromJson(json::parse(R"({})")), JsonInputError);
  EXPECT_THROW(weightFromJson(json::parse(R"(5)")), JsonInputError);
}

struct BadJson {
  const char* text;
  std::string message;  // the whole refusal
};

TEST(Json, BadServicesAreRefusedNamingTheField) {
  const std::vector<BadJson> table = {
      {R"({"name": "web", "vip": "10.0.0.100"})", "port: required field is missing"},
      {R"({"vip": "10.0.0.100", "port": 80})", "name: required field is missing"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": "80"})",
       R"(port: "80" is not a whole number)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 70000})",
       "port: 70000 is out of range 1..65535"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": -1})", "port: -1 is out of range 1..65535"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80.5})", "port: 80.5 is not a whole number"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": true})", "port: true is not a whole number"},
      {R"({"name": "web", "vip": "nope", "port": 80})", R"(vip: "nope" is not an IP address)"},
      {R"({"name": 5, "vip": "10.0.0.100", "port": 80})", "name: 5 is not a string"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "protocol": "sctp"})",
       R"(protocol: "sctp" is not one of tcp, udp)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "algorithm": "rr"})",
       R"(algorithm: "rr" is not one of maglev, random, round-robin, least-conn, least-latency)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "forwarding": "dsr"})",
       R"(forwarding: "dsr" is not one of nat)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "sticky": true})",
       "sticky: unknown key (known: name, vip, port, protocol, algorithm, forwarding, endpoints, "
       "health, timeouts, on_eject, syn_protection, connect_retries)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "endpoints": {}})",
       "endpoints: {} is not an array"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "endpoints": [
          {"address": "10.0.2.11", "port": 8080, "weight": 20000}]})",
       "endpoints[0].weight: 20000 is out of range 0..10000"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "endpoints": [
          {"address": "10.0.2.11", "port": 8080}, {"port": 8080}]})",
       "endpoints[1].address: required field is missing"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "endpoints": [
          {"address": "10.0.2.11", "port": 8080, "prio": 1}]})",
       "endpoints[0].prio: unknown key (known: address, port, weight)"},
      {R"({"name": "web", "vip": "10.0.0.100", "port": 80, "endpoints": ["10.0.2.11:8080"]})",
       R"(endpoints[0]: "10.0.2.11:8080" is not an object)"},
      {R"([])", "body: [] is not an object"},
  };
  for (const BadJson& bad : table) {
    try {
      serviceFromJson(json::parse(bad.text));
      ADD_FAILURE() << "accepted: " << bad.text;
    } catch (const JsonInputError& e) {
      EXPECT_EQ(std::string(e.what()), bad.message) << bad.text;
    }
  }
}

TEST(Json, BadStateNamesTheFullPath) {
  json j = toJson(sampleState());
  j["services"][1]["endpoints"][0]["weight"] = 20000;
  try {
    stateFromJson(j);
    FAIL() << "accepted";
  } catch (const ConfigError& e) {  // JsonInputError is a ConfigError
    EXPECT_EQ(std::string(e.what()),
              "services[1].endpoints[0].weight: 20000 is out of range 0..10000");
  }
  j = toJson(sampleState());
  j["node"]["ipv4"] = "fd00::1";
  EXPECT_THROW(
      {
        try {
          j.get<DesiredState>();
        } catch (const JsonInputError& e) {
          EXPECT_EQ(std::string(e.what()), "node.ipv4: fd00::1 is not an IPv4 address");
          throw;
        }
      },
      JsonInputError);
  j = toJson(sampleState());
  j.erase("node");
  EXPECT_THROW(stateFromJson(j), JsonInputError);
  j = toJson(sampleState());
  j["node"]["ring_size"] = 1;
  EXPECT_THROW(stateFromJson(j), JsonInputError);
}

TEST(Json, SyntaxErrorsAreInputErrors) {
  try {
    parseJson("{\"name\": ", "service");
    FAIL() << "accepted";
  } catch (const JsonInputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("service: invalid JSON: parse error at line 1", 0), 0u)
        << e.what();
  }
  EXPECT_THROW(parseJson(""), JsonInputError);
  EXPECT_EQ(parseJson("{\"weight\": 3}").at("weight"), 3);
}

}  // namespace
}  // namespace meshpath

namespace meshpath {
namespace {

TEST(Json, HealthRoundTripsAndIsLeftOutWhenDefault) {
  ServiceSpec svc;
  svc.name = "web";
  svc.vip = *IpAddress::parse("10.0.0.100");
  svc.port = 80;
  EXPECT_FALSE(toJson(svc).contains("health"));
  svc.health.type = HealthCheckType::kHttp;
  svc.health.intervalMs = 100;
  svc.health.httpPath = "/healthz";
  svc.health.httpStatusMin = 200;
  svc.health.httpStatusMax = 204;
  const nlohmann::json j = toJson(svc);
  EXPECT_EQ(j["health"]["interval"], "100ms");
  EXPECT_EQ(j["health"]["timeout"], "1s");
  EXPECT_EQ(j["health"]["http_statuses"], "200-204");
  EXPECT_EQ(j["health"]["passive_fall"], 3);
  EXPECT_EQ(serviceFromJson(j), svc);

  // passive_fall alone makes the block worth printing; 0 turns passive detection off.
  ServiceSpec passive;
  passive.name = "web";
  passive.vip = *IpAddress::parse("10.0.0.100");
  passive.port = 80;
  passive.algorithm = Algorithm::kLeastConn;
  passive.health.passiveFall = 0;
  const nlohmann::json p = toJson(passive);
  EXPECT_EQ(p["algorithm"], "least-conn");
  EXPECT_EQ(p["health"]["passive_fall"], 0);
  EXPECT_EQ(p["health"]["type"], "none");
  EXPECT_EQ(serviceFromJson(p), passive);
}

TEST(Json, BadHealthIsRefusedNamingTheField) {
  auto refusal = [](const std::string& text) -> std::string {
    try {
      serviceFromJson(parseJson(text));
    } catch (const JsonInputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  const std::string base = R"({"name": "web", "vip": "10.0.0.1", "port": 80, "health": )";
  EXPECT_EQ(refusal(base + R"({"interval": 100}})"), "health.interval: 100 is not a string");
  EXPECT_EQ(refusal(base + R"({"interval": "2h"}})"),
            R"(health.interval: "2h" is out of range 0ms..1h)");
  EXPECT_EQ(refusal(base + R"({"interval": "1d"}})"),
            R"(health.interval: "1d" is not a duration like "100ms", "2s", "1m" or "3h")");
  EXPECT_EQ(refusal(base + R"({"type": "icmp"}})"),
            R"(health.type: "icmp" is not one of none, tcp, http, udp)");
  EXPECT_EQ(refusal(base + R"({"rise": 0}})"), "health.rise: 0 is out of range 1..100");
  EXPECT_EQ(refusal(base + R"({"passive_fall": 101}})"),
            "health.passive_fall: 101 is out of range 0..100");
  EXPECT_EQ(refusal(base + R"({"passive_fall": "3"}})"),
            R"(health.passive_fall: "3" is not a whole number)");
}

TEST(Json, TimeoutsAndOnEjectRoundTrip) {
  ServiceSpec svc = webService();
  svc.onEject = OnEject::kReset;
  svc.timeouts.tcpEstablishedMs = 2 * 3600 * 1000;
  svc.timeouts.tcpClosedMs = 1500;
  const json j = toJson(svc);
  EXPECT_EQ(j.at("on_eject"), "reset");
  EXPECT_EQ(j.at("timeouts").at("tcp_established"), "2h");
  EXPECT_EQ(j.at("timeouts").at("tcp_closed"), "1500ms");
  EXPECT_EQ(serviceFromJson(j), svc);
  // Every timeout is optional on input; left out, the service keeps the defaults.
  const ServiceSpec partial = serviceFromJson(
      json::parse(R"({"name": "web", "vip": "10.0.0.1", "port": 80, "timeouts": {"udp": "45s"}})"));
  EXPECT_EQ(partial.timeouts.udpMs, 45000u);
  EXPECT_EQ(partial.timeouts.tcpSynMs, ConnTimeouts{}.tcpSynMs);
  EXPECT_EQ(partial.onEject, OnEject::kKeep);
}

TEST(Json, BadTimeoutsAreRefusedNamingTheField) {
  auto refusal = [](const std::string& text) -> std::string {
    try {
      serviceFromJson(parseJson(text));
    } catch (const JsonInputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  const std::string base = R"({"name": "web", "vip": "10.0.0.1", "port": 80, )";
  EXPECT_EQ(refusal(base + R"("timeouts": {"tcp_syn": "100ms"}})"),
            R"(timeouts.tcp_syn: "100ms" is out of range 1s..168h)");
  EXPECT_EQ(refusal(base + R"("timeouts": {"tcp_syn": 5}})"),
            "timeouts.tcp_syn: 5 is not a string");
  EXPECT_EQ(refusal(base + R"("timeouts": {"syn": "5s"}})"),
            "timeouts.syn: unknown key (known: tcp_syn, tcp_established, tcp_fin, tcp_closed, udp, "
            "udp_replied)");
  EXPECT_EQ(refusal(base + R"("on_eject": "drop"})"),
            R"(on_eject: "drop" is not one of keep, reset)");
}

TEST(Json, NodeSnatPoolAndTables) {
  NodeSpec node;
  node.interfaces = {"eth0"};
  node.ipv4 = IpAddress::parse("10.0.2.1");
  node.snatPool = {*IpAddress::parse("10.0.2.5"), *IpAddress::parse("10.0.2.6")};
  node.halfTableSize = 4096;
  node.snatPortMin = 20000;
  node.snatPortMax = 29999;
  const json j = toJson(node);
  EXPECT_EQ(j.at("snat_pool"), json::array({"10.0.2.5", "10.0.2.6"}));
  EXPECT_EQ(j.at("half_table_size"), 4096);
  EXPECT_EQ(nodeFromJson(j), node);
  // Prefixes are accepted on input, as in the config file, and expanded.
  const NodeSpec fromPrefix = nodeFromJson(json::parse(R"({"snat_pool": ["10.0.2.4/30"]})"));
  EXPECT_EQ(fromPrefix.snatPool, node.snatPool);
  try {
    nodeFromJson(json::parse(R"({"snat_pool": ["10.0.2.0/24"]})"));
    ADD_FAILURE() << "a /24 was accepted";
  } catch (const JsonInputError& e) {
    EXPECT_EQ(
        std::string(e.what()).rfind(R"(node.snat_pool[0]: "10.0.2.0/24" holds more than 8)", 0), 0u)
        << e.what();
  }
  EXPECT_THROW(nodeFromJson(json::parse(R"({"half_table_size": 100})")), JsonInputError);
}

}  // namespace
}  // namespace meshpath
