// The reconciler over a fake dataplane: id stability, which rings get rebuilt, the order of
// operations (nothing names a freed slot), adoption of an earlier run, rollback on failure.
#include <gtest/gtest.h>

#include <algorithm>

#include "fake_dataplane.h"
#include "reconciler.h"

namespace meshpath {
namespace {

using testing::FakeDataplane;

constexpr uint32_t kRing = 1009;  // prime, >= 100 x the endpoints used here

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

ServiceSpec service(const std::string& name, const std::string& vip, uint16_t port,
                    std::vector<std::pair<std::string, uint32_t>> endpoints) {
  ServiceSpec s;
  s.name = name;
  s.vip = ip(vip);
  s.port = port;
  for (const auto& [addr, weight] : endpoints) s.endpoints.push_back({ip(addr), 8080, weight});
  return s;
}

DesiredState state(std::vector<ServiceSpec> services) {
  DesiredState d;
  d.node.interfaces = {"veth0"};
  d.node.ipv4 = ip("10.0.2.1");
  d.node.ringSize = kRing;
  d.services = std::move(services);
  return d;
}

DesiredState twoServices() {
  return state({service("web", "10.0.0.100", 80, {{"10.0.2.11", 1}, {"10.0.2.12", 1}}),
                service("api", "10.0.0.101", 443, {{"10.0.2.21", 1}, {"10.0.2.22", 2}})});
}

size_t indexOf(const std::vector<std::string>& log, const std::string& op) {
  auto it = std::find(log.begin(), log.end(), op);
  EXPECT_NE(it, log.end()) << "missing " << op;
  return static_cast<size_t>(it - log.begin());
}

TEST(Reconciler, FreshApplyRealizesEverything) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  auto report = r.apply(twoServices());
  ASSERT_TRUE(report) << report.error().toString();
  EXPECT_EQ(report->added, (std::vector<std::string>{"web", "api"}));
  EXPECT_EQ(dp.services.size(), 2u);
  EXPECT_EQ(dp.rings.size(), 2u);
  EXPECT_EQ(dp.endpoints.size(), 4u);
  EXPECT_TRUE(dp.consistent());
  EXPECT_EQ(*r.serviceId("web"), 0u);
  EXPECT_EQ(*r.serviceId("api"), 1u);
  EXPECT_EQ(*r.endpointId("api", "10.0.2.22:8080"), 3u);
  EXPECT_EQ(r.ringsBuilt(), 2u);
  // api's endpoint with weight 2 holds about twice the slots of its peer.
  const auto& ring = dp.rings.at(1);
  auto heavy = std::count(ring.begin(), ring.end(), 3u);
  auto light = std::count(ring.begin(), ring.end(), 2u);
  EXPECT_NEAR(static_cast<double>(heavy) / static_cast<double>(light), 2.0, 0.05);
}

TEST(Reconciler, AutoRingSizeFollowsEachServicesEndpointCountNotItsHealth) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  DesiredState d = twoServices();
  d.node.ringSize = 0;  // auto, the default
  d.services[1].endpoints.clear();
  for (int e = 0; e < 10; ++e) {
    d.services[1].endpoints.push_back({ip("10.0.2." + std::to_string(30 + e)), 8080, 1});
  }
  auto sizeOf = [&](uint32_t id) {
    for (const auto& [key, entry] : dp.services) {
      if (entry.id == id) return entry.ringSize;
    }
    return 0u;
  };
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(sizeOf(0), 401u) << "2 endpoints";
  EXPECT_EQ(dp.rings.at(0).size(), 401u);
  EXPECT_EQ(sizeOf(1), 1601u) << "10 endpoints";
  // Ejecting or draining leaves the size alone: only the listed endpoints count.
  ASSERT_TRUE(r.setExcluded({{"api", {"10.0.2.30:8080", "10.0.2.31:8080"}}}));
  d.services[1].endpoints[2].weight = 0;
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(sizeOf(1), 1601u);
  // Growing past a power of two resizes; within one it does not.
  d.services[0].endpoints.push_back({ip("10.0.2.13"), 8080, 1});
  d.services[0].endpoints.push_back({ip("10.0.2.14"), 8080, 1});
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(sizeOf(0), 401u) << "4 endpoints";
  d.services[0].endpoints.push_back({ip("10.0.2.15"), 8080, 1});
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(sizeOf(0), 809u) << "5 endpoints";
  EXPECT_EQ(dp.rings.at(0).size(), 809u);
  EXPECT_TRUE(dp.consistent());
}

TEST(Reconciler, SameStateTwiceDoesNothing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  dp.log.clear();
  auto report = r.apply(twoServices());
  ASSERT_TRUE(report);
  EXPECT_TRUE(dp.log.empty());
  EXPECT_TRUE(report->added.empty() && report->removed.empty() && report->changed.empty());
}

TEST(Reconciler, OnlyTheChangedServiceGetsANewRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  auto webRing = dp.rings.at(0);
  DesiredState next = twoServices();
  next.services[1].endpoints[1].weight = 5;
  dp.log.clear();
  auto report = r.apply(next);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->changed, std::vector<std::string>{"api"});
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService 1 ring"});
  EXPECT_EQ(dp.rings.at(0), webRing);
  EXPECT_EQ(r.ringsBuilt(), 3u);
}

TEST(Reconciler, AlgorithmChangeRebuildsTheRingOfItsKind) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[1].algorithm = Algorithm::kRoundRobin;
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService 1 ring"});
  EXPECT_EQ(dp.services.at(serviceKeyOf(next.services[1])).algorithm, Algorithm::kRoundRobin);
  // Interleaved: endpoint 3 (weight 2) and 2 (weight 1) as 3 2 3 3 2 3 ..., never 2 2.
  const auto& ring = dp.rings.at(1);
  for (size_t i = 1; i < ring.size(); ++i) EXPECT_FALSE(ring[i] == 2u && ring[i - 1] == 2u) << i;
  // least-conn samples the Maglev ring: back to the Maglev one.
  next.services[1].algorithm = Algorithm::kLeastConn;
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService 1 ring"});
}

TEST(Reconciler, PassiveFallReachesEveryEndpointSlot) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  DesiredState d = twoServices();
  d.services[1].health.passiveFall = 0;  // api: passive detection off
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(dp.health.at(*r.endpointId("web", "10.0.2.11:8080")).fall, 3u);
  EXPECT_EQ(dp.health.at(*r.endpointId("web", "10.0.2.12:8080")).fall, 3u);
  EXPECT_EQ(dp.health.at(*r.endpointId("api", "10.0.2.21:8080")).fall, 0u);
  // A change of passive_fall alone rewrites the thresholds, not the rings.
  d.services[0].health.passiveFall = 7;
  dp.log.clear();
  ASSERT_TRUE(r.apply(d));
  EXPECT_TRUE(dp.log.empty());
  EXPECT_EQ(dp.health.at(*r.endpointId("web", "10.0.2.11:8080")).fall, 7u);
  // A freed slot's entry goes with it; a new endpoint gets the service's threshold.
  d.services[0].endpoints.push_back({ip("10.0.2.13"), 8080, 1});
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(dp.health.at(*r.endpointId("web", "10.0.2.13:8080")).fall, 7u);
}

TEST(Reconciler, EndpointOrderDoesNotChangeTheRing) {
  FakeDataplane a;
  FakeDataplane b;
  Reconciler ra(a);
  Reconciler rb(b);
  ra.start({}, std::nullopt);
  rb.start({}, std::nullopt);
  DesiredState d = twoServices();
  ASSERT_TRUE(ra.apply(d));
  std::reverse(d.services[0].endpoints.begin(), d.services[0].endpoints.end());
  ASSERT_TRUE(rb.apply(d));
  // Ids differ (given in input order), but every slot picks the same endpoint address.
  const auto& ringA = a.rings.at(0);
  const auto& ringB = b.rings.at(0);
  ASSERT_EQ(ringA.size(), ringB.size());
  for (size_t i = 0; i < ringA.size(); ++i) {
    ASSERT_EQ(a.endpoints.at(ringA[i]).address, b.endpoints.at(ringB[i]).address) << i;
  }
}

TEST(Reconciler, RemovedEndpointLeavesTheRingBeforeItsSlotIsFreed) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[0].endpoints.erase(next.services[0].endpoints.begin());  // id 0
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_LT(indexOf(dp.log, "upsertService 0 ring"), indexOf(dp.log, "removeEndpoint 0"));
  EXPECT_TRUE(dp.consistent());
  EXPECT_FALSE(r.endpointId("web", "10.0.2.11:8080"));
  EXPECT_EQ(*r.endpointId("web", "10.0.2.12:8080"), 1u);
}

TEST(Reconciler, NewEndpointGetsItsSlotBeforeTheRingNamesIt) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[0].endpoints.push_back({ip("10.0.2.13"), 8080, 1});
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, (std::vector<std::string>{"upsertEndpoint 4", "upsertService 0 ring"}));
}

TEST(Reconciler, RemovedServiceStopsFirstThenIsFreed) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services.pop_back();  // api: id 1, endpoints 2 and 3
  dp.log.clear();
  auto report = r.apply(next);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->removed, std::vector<std::string>{"api"});
  EXPECT_EQ(dp.log,
            (std::vector<std::string>{"removeServiceEntry tcp 10.0.0.101:443", "releaseService 1",
                                      "removeEndpoint 2", "removeEndpoint 3"}));
  EXPECT_TRUE(dp.consistent());
}

TEST(Reconciler, FreedIdsComeBackAsLateAsPossible) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services.pop_back();
  ASSERT_TRUE(r.apply(next));
  next.services.push_back(service("api2", "10.0.0.102", 443, {{"10.0.2.21", 1}}));
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(*r.serviceId("api2"), 2u);
  EXPECT_EQ(*r.endpointId("api2", "10.0.2.21:8080"), 4u);
}

TEST(Reconciler, IdsWrapAroundWithinTheLimits) {
  FakeDataplane dp;
  Reconciler r(dp, 2, 3);
  r.start({}, std::nullopt);
  DesiredState d = state({service("a", "10.0.0.1", 80, {{"10.0.2.1", 1}, {"10.0.2.2", 1}})});
  ASSERT_TRUE(r.apply(d));
  d.services[0].endpoints.erase(d.services[0].endpoints.begin());
  ASSERT_TRUE(r.apply(d));
  d.services[0].endpoints.push_back({ip("10.0.2.3"), 8080, 1});
  d.services[0].endpoints.push_back({ip("10.0.2.4"), 8080, 1});
  ASSERT_TRUE(r.apply(d));
  EXPECT_EQ(*r.endpointId("a", "10.0.2.3:8080"), 2u);
  EXPECT_EQ(*r.endpointId("a", "10.0.2.4:8080"), 0u);
  d.services[0].endpoints.push_back({ip("10.0.2.5"), 8080, 1});
  auto full = r.apply(d);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ENOSPC);
  EXPECT_TRUE(dp.consistent());
}

TEST(Reconciler, DrainedEndpointKeepsItsSlotButLeavesTheRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  DesiredState d = twoServices();
  d.services[0].endpoints[0].weight = 0;
  ASSERT_TRUE(r.apply(d));
  EXPECT_TRUE(dp.endpoints.contains(0));
  const auto& ring = dp.rings.at(0);
  EXPECT_EQ(std::count(ring.begin(), ring.end(), 0u), 0);
  EXPECT_EQ(std::count(ring.begin(), ring.end(), 1u), static_cast<long>(kRing));
}

TEST(Reconciler, ServiceWithoutEndpointsHasAnEmptyRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(state({service("empty", "10.0.0.1", 80, {})})));
  const auto& ring = dp.rings.at(0);
  EXPECT_EQ(std::count(ring.begin(), ring.end(), MP_RING_EMPTY), static_cast<long>(kRing));
}

TEST(Reconciler, ChangedVipMovesTheEntryWithoutANewRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[0].vip = ip("10.0.0.200");
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log,
            (std::vector<std::string>{"removeServiceEntry tcp 10.0.0.100:80", "upsertService 0"}));
  EXPECT_EQ(dp.services.size(), 2u);
}

TEST(Reconciler, TimeoutsChangeRepublishesTheEntryWithoutANewRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  EXPECT_EQ(dp.services.at(ServiceKey{ip("10.0.0.100"), 80, Protocol::kTcp}).timeouts,
            ConnTimeouts{});
  DesiredState next = twoServices();
  next.services[0].timeouts.tcpEstablishedMs = 7200 * 1000;
  next.services[0].timeouts.udpMs = 10 * 1000;
  dp.log.clear();
  auto report = r.apply(next);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->changed, std::vector<std::string>{"web"});
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService 0"});
  EXPECT_EQ(r.ringsBuilt(), 2u) << "no ring rebuilt";
  EXPECT_EQ(dp.services.at(ServiceKey{ip("10.0.0.100"), 80, Protocol::kTcp}).timeouts,
            next.services[0].timeouts);
}

TEST(Reconciler, SynProtectionReachesTheEntryWithoutANewRing) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  DesiredState desired = twoServices();
  ServiceSpec dns = service("dns", "10.0.0.53", 53, {{"10.0.2.31", 1}});
  dns.protocol = Protocol::kUdp;
  desired.services.push_back(dns);
  ASSERT_TRUE(r.apply(desired));
  const ServiceEntry& web = dp.services.at(ServiceKey{ip("10.0.0.100"), 80, Protocol::kTcp});
  EXPECT_EQ(web.synProtection, SynProtection::kAuto) << "the default";
  EXPECT_EQ(web.connectRetries, 2u);
  const ServiceEntry& udp = dp.services.at(ServiceKey{ip("10.0.0.53"), 53, Protocol::kUdp});
  EXPECT_EQ(udp.synProtection, SynProtection::kOff) << "a UDP service has none";
  EXPECT_EQ(udp.connectRetries, 0u);

  DesiredState next = desired;
  next.services[0].synProtection = SynProtection::kAlways;
  next.services[0].connectRetries = 5;
  dp.log.clear();
  auto report = r.apply(next);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->changed, std::vector<std::string>{"web"});
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService 0"});
  EXPECT_EQ(r.ringsBuilt(), 3u) << "no ring rebuilt";
  const ServiceEntry& after = dp.services.at(ServiceKey{ip("10.0.0.100"), 80, Protocol::kTcp});
  EXPECT_EQ(after.synProtection, SynProtection::kAlways);
  EXPECT_EQ(after.connectRetries, 5u);
}

TEST(Reconciler, OnEjectChangeTouchesNoDatapathState) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[0].onEject = OnEject::kReset;  // meshd's health monitor reads it, not the datapath
  dp.log.clear();
  auto report = r.apply(next);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->changed, std::vector<std::string>{"web"});
  EXPECT_TRUE(dp.log.empty());
}

TEST(Reconciler, VipHandedFromARemovedServiceToANewOneHasNoGap) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  DesiredState next = twoServices();
  next.services[0].name = "web2";  // same VIP:port, new service
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  // The entry is overwritten in place (never deleted), then the old id is freed.
  for (const std::string& op : dp.log) EXPECT_EQ(op.find("removeServiceEntry"), std::string::npos);
  EXPECT_LT(indexOf(dp.log, "upsertService 2 ring"), indexOf(dp.log, "releaseService 0"));
  EXPECT_EQ(dp.services.begin()->second.id, 2u);
  EXPECT_TRUE(dp.consistent());
}

TEST(Reconciler, AdoptionWithIdsRewritesIdenticalRingsAndSweepsStaleEntries) {
  FakeDataplane dp;
  IdAssignments ids;
  {
    Reconciler first(dp);
    first.start({}, std::nullopt);
    ASSERT_TRUE(first.apply(twoServices()));
    ids = first.ids();
  }
  auto rings = dp.rings;
  auto endpoints = dp.endpoints;
  // Leftovers of a change the earlier run made but never saved (killed mid-way).
  ServiceEntry stale{{ip("10.0.0.9"), 9, Protocol::kUdp},
                     7,
                     kRing,
                     Algorithm::kMaglev,
                     ForwardingMode::kNat,
                     ConnTimeouts{}};
  dp.endpoints[40] = EndpointEntry{ip("10.0.2.99"), 80, 7};
  dp.rings[7] = std::vector<uint32_t>(kRing, 40);
  dp.services[stale.key] = stale;

  Reconciler second(dp);
  second.start(*dp.snapshot(), ids);
  dp.log.clear();
  auto report = second.apply(twoServices());
  ASSERT_TRUE(report) << report.error().toString();
  EXPECT_EQ(second.ids(), ids);
  EXPECT_EQ(dp.rings, rings);          // the same rings: no flow moves
  EXPECT_EQ(dp.endpoints, endpoints);  // the stale slot is gone, the others untouched
  EXPECT_EQ(dp.services.size(), 2u);
  for (const std::string& op : dp.log) EXPECT_EQ(op.find("upsertEndpoint"), std::string::npos);
  EXPECT_LT(indexOf(dp.log, "removeServiceEntry udp 10.0.0.9:9"),
            indexOf(dp.log, "releaseService 7"));
  EXPECT_LT(indexOf(dp.log, "releaseService 7"), indexOf(dp.log, "removeEndpoint 40"));
}

TEST(Reconciler, AdoptionWithoutIdsMatchesThePinnedTables) {
  FakeDataplane dp;
  {
    Reconciler first(dp);
    first.start({}, std::nullopt);
    // Ids the fresh start below would not hand out on its own: services in the other order.
    DesiredState d = twoServices();
    std::swap(d.services[0], d.services[1]);
    ASSERT_TRUE(first.apply(d));
  }
  auto rings = dp.rings;
  auto endpoints = dp.endpoints;
  Reconciler second(dp);
  second.start(*dp.snapshot(), std::nullopt);
  ASSERT_TRUE(second.apply(twoServices()));
  EXPECT_EQ(*second.serviceId("api"), 0u);
  EXPECT_EQ(*second.serviceId("web"), 1u);
  EXPECT_EQ(dp.rings, rings);
  EXPECT_EQ(dp.endpoints, endpoints);
}

TEST(Reconciler, FailedApplyRollsBack) {
  for (int failAt = 0; failAt < 6; ++failAt) {
    FakeDataplane dp;
    Reconciler r(dp);
    r.start({}, std::nullopt);
    ASSERT_TRUE(r.apply(twoServices()));
    auto services = dp.services;
    auto rings = dp.rings;
    auto endpoints = dp.endpoints;

    DesiredState next = twoServices();
    next.services.erase(next.services.begin());
    next.services[0].endpoints.push_back({ip("10.0.2.23"), 8080, 1});
    next.services.push_back(service("db", "10.0.0.102", 5432, {{"10.0.2.31", 1}}));
    dp.failAt = static_cast<int>(dp.log.size()) + failAt;
    auto report = r.apply(next);
    ASSERT_FALSE(report) << failAt;
    EXPECT_EQ(report.error().code, EIO);
    EXPECT_EQ(dp.services, services) << failAt;
    EXPECT_EQ(dp.rings, rings) << failAt;
    EXPECT_EQ(dp.endpoints, endpoints) << failAt;
    EXPECT_EQ(r.desired(), twoServices());
    EXPECT_FALSE(r.serviceId("db"));
    // And the next apply goes through.
    dp.failAt = -1;
    ASSERT_TRUE(r.apply(next));
    EXPECT_TRUE(dp.consistent());
  }
}

TEST(Reconciler, NodeIsWrittenOnceAndOnChange) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ASSERT_TRUE(r.apply(twoServices()));
  EXPECT_EQ(std::count(dp.log.begin(), dp.log.end(), "setNode"), 1);
  DesiredState next = twoServices();
  next.node.snatPortMin = 62000;
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, std::vector<std::string>{"setNode"});

  // The SNAT pool is part of what setNode writes.
  next.node.snatPool = {ip("10.0.2.5"), ip("10.0.2.6")};
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, std::vector<std::string>{"setNode"});
  EXPECT_EQ(dp.node_->snatPool, next.node.snatPool);

  // So is the SYN flood threshold (mp_node).
  next.node.synFloodThreshold = 50;
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_EQ(dp.log, std::vector<std::string>{"setNode"});
  EXPECT_EQ(dp.node_->synFloodThreshold, 50u);

  // Table sizes are fixed when the maps are made: nothing setNode could change (a restart does).
  next.node.halfTableSize *= 2;
  next.node.connTableSize *= 2;
  dp.log.clear();
  ASSERT_TRUE(r.apply(next));
  EXPECT_TRUE(dp.log.empty());
}

}  // namespace
}  // namespace meshpath
