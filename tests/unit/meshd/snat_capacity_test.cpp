// snat_capacity_test — SNAT port use per endpoint from the table stats, and the watch's
// hysteresis (high at 80%, ok again below 70%).
#include "snat_capacity.h"

#include <gtest/gtest.h>

namespace meshpath {
namespace {

SnatPortUse use(uint64_t used, uint64_t capacity = 1000, const std::string& endpoint = "a:1") {
  return SnatPortUse{"web", endpoint, used, capacity};
}

TEST(SnatCapacityWatch, HighAtEightyPercentOkBelowSeventy) {
  SnatCapacityWatch watch;
  EXPECT_TRUE(watch.update({use(799)}).empty());
  auto up = watch.update({use(800)});
  ASSERT_EQ(up.size(), 1u);
  EXPECT_TRUE(up[0].high);
  EXPECT_EQ(up[0].use.used, 800u);
  EXPECT_TRUE(watch.high("web", "a:1"));
  // Once per crossing: staying up, or falling to exactly 70%, says nothing.
  EXPECT_TRUE(watch.update({use(1000)}).empty());
  EXPECT_TRUE(watch.update({use(700)}).empty());
  EXPECT_TRUE(watch.update({use(790)}).empty());
  auto down = watch.update({use(699)});
  ASSERT_EQ(down.size(), 1u);
  EXPECT_FALSE(down[0].high);
  EXPECT_FALSE(watch.high("web", "a:1"));
  // Back between the lines: nothing until 80% again.
  EXPECT_TRUE(watch.update({use(750)}).empty());
  EXPECT_EQ(watch.update({use(850)}).size(), 1u);
}

TEST(SnatCapacityWatch, UnknownCapacityAndGoneEndpoints) {
  SnatCapacityWatch watch;
  EXPECT_TRUE(watch.update({use(5, 0)}).empty()) << "auto ports not resolved: no capacity yet";
  ASSERT_EQ(watch.update({use(900), use(10, 1000, "b:1")}).size(), 1u);
  // a:1 left its service: forgotten, so when it comes back high it is news again.
  EXPECT_TRUE(watch.update({use(10, 1000, "b:1")}).empty());
  EXPECT_FALSE(watch.high("web", "a:1"));
  EXPECT_EQ(watch.update({use(900)}).size(), 1u);
}

TEST(SnatPortUse, ByEndpointIdWithItsFamilysCapacity) {
  DesiredState state;
  state.node.ipv4 = IpAddress::parse("10.0.2.1");
  state.node.ipv6 = IpAddress::parse("fd00:2::1");
  state.node.snatPool = {*IpAddress::parse("10.0.2.2"), *IpAddress::parse("10.0.2.3")};
  state.node.snatPortMin = 20000;
  state.node.snatPortMax = 20999;
  ServiceSpec web;
  web.name = "web";
  web.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, 1},
                   {*IpAddress::parse("10.0.2.12"), 8080, 1}};
  ServiceSpec dns;
  dns.name = "dns";
  dns.endpoints = {{*IpAddress::parse("fd00:2::11"), 53, 1}};
  state.services = {web, dns};
  IdAssignments ids;
  ids.endpoints["web"] = {{"10.0.2.11:8080", 4}, {"10.0.2.12:8080", 5}};
  ids.endpoints["dns"] = {{"[fd00:2::11]:53", 9}};
  ConnTableStats stats;
  stats.snatPortsInUse = {{4, 120}, {9, 7}};

  const auto uses = snatPortUse(state, ids, stats);
  ASSERT_EQ(uses.size(), 3u);
  EXPECT_EQ(uses[0].endpoint, "10.0.2.11:8080");
  EXPECT_EQ(uses[0].used, 120u);
  EXPECT_EQ(uses[0].capacity, 3000u) << "3 IPv4 sources x 1000 ports";
  EXPECT_EQ(uses[1].used, 0u) << "no entry: no ports held";
  EXPECT_EQ(uses[2].service, "dns");
  EXPECT_EQ(uses[2].used, 7u);
  EXPECT_EQ(uses[2].capacity, 1000u) << "node.ipv6 alone";
}

}  // namespace
}  // namespace meshpath
