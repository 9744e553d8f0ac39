// Tests of diffStates: services by name, endpoints by ADDRESS:PORT, fields by their config names.
#include "state_diff.h"

#include <gtest/gtest.h>

namespace meshpath {
namespace {

ServiceSpec web() {
  ServiceSpec s;
  s.name = "web";
  s.vip = *IpAddress::parse("10.0.0.100");
  s.port = 80;
  s.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, 1}, {*IpAddress::parse("10.0.2.12"), 8080, 1}};
  return s;
}

DesiredState stateWith(std::vector<ServiceSpec> services) {
  DesiredState d;
  d.node.interfaces = {"eth0"};
  d.services = std::move(services);
  return d;
}

TEST(StateDiff, EqualStatesAreNoChange) {
  const StateDiff d = diffStates(stateWith({web()}), stateWith({web()}));
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.summary(), "no changes");
}

TEST(StateDiff, ReorderedEndpointsAreNoChange) {
  ServiceSpec reordered = web();
  std::swap(reordered.endpoints[0], reordered.endpoints[1]);
  const StateDiff d = diffStates(stateWith({web()}), stateWith({reordered}));
  EXPECT_TRUE(d.empty()) << d.summary();
  EXPECT_TRUE(d.servicesChanged.empty());
}

TEST(StateDiff, WeightChangeIsOneField) {
  ServiceSpec changed = web();
  changed.endpoints[0].weight = 0;
  const StateDiff d = diffStates(stateWith({web()}), stateWith({changed}));
  ASSERT_EQ(d.changes.size(), 1u);
  EXPECT_EQ(d.changes[0].path, "services.web.endpoints[10.0.2.11:8080].weight");
  EXPECT_EQ(d.changes[0].from, 1);
  EXPECT_EQ(d.changes[0].to, 0);
  EXPECT_EQ(d.servicesChanged, std::vector<std::string>{"web"});
  EXPECT_EQ(d.lines(),
            std::vector<std::string>{"~ services.web.endpoints[10.0.2.11:8080].weight: 1 -> 0"});
}

TEST(StateDiff, EndpointAddedAndRemoved) {
  ServiceSpec changed = web();
  changed.endpoints.erase(changed.endpoints.begin());
  changed.endpoints.push_back({*IpAddress::parse("fd00::13"), 8080, 2});
  const StateDiff d = diffStates(stateWith({web()}), stateWith({changed}));
  ASSERT_EQ(d.changes.size(), 2u);
  EXPECT_EQ(d.changes[0].path, "services.web.endpoints[10.0.2.11:8080]");
  EXPECT_TRUE(d.changes[0].to.is_null());
  EXPECT_EQ(d.changes[1].path, "services.web.endpoints[[fd00::13]:8080]");
  EXPECT_TRUE(d.changes[1].from.is_null());
  EXPECT_EQ(d.changes[1].to["weight"], 2);
}

TEST(StateDiff, ServicesAddedRemovedAndFieldsChanged) {
  ServiceSpec api = web();
  api.name = "api";
  api.port = 81;
  ServiceSpec changed = web();
  changed.algorithm = Algorithm::kRoundRobin;
  changed.timeouts.udpMs = 10000;
  DesiredState to = stateWith({changed, api});
  to.node.ringSize = 131071;
  ServiceSpec old = web();
  old.name = "old";
  old.port = 82;
  const StateDiff d = diffStates(stateWith({web(), old}), to);
  EXPECT_EQ(d.servicesAdded, std::vector<std::string>{"api"});
  EXPECT_EQ(d.servicesRemoved, std::vector<std::string>{"old"});
  ASSERT_EQ(d.changes.size(), 3u);
  EXPECT_EQ(d.changes[0].path, "node.ring_size");
  EXPECT_EQ(d.changes[1].path, "services.web.algorithm");
  EXPECT_EQ(d.changes[1].to, "round-robin");
  EXPECT_EQ(d.changes[2].path, "services.web.timeouts.udp");
  const std::vector<std::string> lines = d.lines();
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0], "+ service api (tcp 10.0.0.100:81, 2 endpoints)");
  EXPECT_EQ(lines[1], "- service old");
  EXPECT_EQ(lines[2], "~ node.ring_size: auto -> 131071");
  const nlohmann::json j = d.toJson();
  EXPECT_EQ(j["services_added"][0], "api");
  EXPECT_EQ(j["changes"][1]["from"], "maglev");
}

}  // namespace
}  // namespace meshpath
