// Reconciler::applyChanges, the path of a change of some services: it must leave the dataplane
// and the desired state exactly as applying the whole changed state would, validateChanges must
// accept exactly what validateState accepts, a failed change must roll back, and a change must
// touch only the services it names.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "config.h"
#include "fake_dataplane.h"
#include "reconciler.h"

namespace meshpath {
namespace {

using testing::FakeDataplane;

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

NodeSpec node() {
  NodeSpec n;
  n.interfaces = {"veth0"};
  n.ipv4 = ip("10.0.2.1");
  return n;  // ring_size auto: each ring sized to its service
}

// What a dataplane forwards, without its ids: per service key, the ring as endpoint keys, and
// every filled slot as (service key, endpoint).
struct Forwarding {
  std::map<ServiceKey, std::vector<std::string>> rings;
  std::set<std::pair<ServiceKey, std::string>> slots;
  bool operator==(const Forwarding&) const = default;
};

Forwarding forwardingOf(const FakeDataplane& dp) {
  Forwarding f;
  std::map<uint32_t, ServiceKey> keyOf;
  for (const auto& [key, entry] : dp.services) keyOf[entry.id] = key;
  auto name = [](const EndpointEntry& e) {
    return e.address.toString() + ":" + std::to_string(e.port);
  };
  for (const auto& [key, entry] : dp.services) {
    std::vector<std::string>& ring = f.rings[key];
    for (uint32_t id : dp.rings.at(entry.id)) {
      ring.push_back(id == MP_RING_EMPTY ? "-" : name(dp.endpoints.at(id)));
    }
  }
  for (const auto& [id, e] : dp.endpoints) {
    auto key = keyOf.find(e.serviceId);
    if (key != keyOf.end()) f.slots.emplace(key->second, name(e));
  }
  return f;
}

// A random change among 10 names, 12 VIPs and 8 endpoint addresses: adds, replacements (weights,
// endpoints, VIP, forwarding mode), removals, and some that break a rule across services.
ServiceChanges randomChange(std::mt19937& rng) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  ServiceChanges c;
  const int ops = 1 + pick(3);
  for (int i = 0; i < ops; ++i) {
    const std::string name = "s" + std::to_string(pick(10));
    if (pick(4) == 0) {
      c.removed.push_back(name);
      continue;
    }
    ServiceSpec s;
    s.name = name;
    s.vip = ip("10.0.0." + std::to_string(100 + pick(12)));
    s.port = 80;
    s.forwarding = pick(5) == 0 ? ForwardingMode::kDnat : ForwardingMode::kNat;
    std::set<int> used;
    for (int e = pick(5); e > 0; --e) {
      const int a = pick(8);
      if (!used.insert(a).second) continue;
      s.endpoints.push_back(
          {ip("10.0.2." + std::to_string(10 + a)), 8080, static_cast<uint32_t>(pick(3))});
    }
    c.put.push_back(s);
  }
  return c;
}

TEST(ReconcilerChanges, RealizeWhatTheWholeStateWouldAndAcceptWhatItAccepts) {
  FakeDataplane deltaDp;
  FakeDataplane wholeDp;
  Reconciler delta(deltaDp);
  Reconciler whole(wholeDp);
  delta.start({}, std::nullopt);
  whole.start({}, std::nullopt);
  DesiredState empty{node(), {}};
  ASSERT_TRUE(delta.apply(empty));
  ASSERT_TRUE(whole.apply(empty));

  std::mt19937 rng(20261203);
  int applied = 0;
  int refused = 0;
  for (int step = 0; step < 600; ++step) {
    const ServiceChanges change = randomChange(rng);
    DesiredState next = whole.desired();
    const ApplyReport expected = applyChanges(next.services, change);
    const bool valid = validateChanges(node(), delta.index(), change).empty();
    // Names put twice or put and removed are refused by validateChanges only (a whole state
    // cannot say that); everything else must get the same answer from both.
    std::set<std::string> names;
    bool ambiguous = false;
    for (const auto& n : change.removed) ambiguous |= !names.insert(n).second;
    for (const auto& s : change.put) ambiguous |= !names.insert(s.name).second;
    if (ambiguous) {
      EXPECT_FALSE(valid) << "step " << step;
      continue;
    }
    ASSERT_EQ(valid, validateState(next).empty())
        << "step " << step << ": "
        << (valid ? "validateState refuses: " : "validateChanges refuses: ")
        << ::testing::PrintToString(valid ? validateState(next)
                                          : validateChanges(node(), delta.index(), change));
    if (!valid) {
      ++refused;
      continue;
    }
    auto d = delta.applyChanges(change);
    ASSERT_TRUE(d) << d.error().toString();
    auto w = whole.apply(next);
    ASSERT_TRUE(w) << w.error().toString();
    ++applied;
    EXPECT_EQ(d->added, expected.added) << "step " << step;
    EXPECT_EQ(d->removed, expected.removed) << "step " << step;
    EXPECT_EQ(d->changed, expected.changed) << "step " << step;
    ASSERT_EQ(delta.desired(), whole.desired()) << "step " << step;
    ASSERT_TRUE(deltaDp.consistent()) << "step " << step;
    ASSERT_EQ(forwardingOf(deltaDp), forwardingOf(wholeDp)) << "step " << step;
    // The ids of every service and endpoint it holds are in the dataplane, and only those.
    EXPECT_EQ(deltaDp.services.size(), delta.desired().services.size());
    EXPECT_EQ(deltaDp.rings.size(), delta.desired().services.size());
  }
  std::printf("  600 random changes: %d applied, %d refused as invalid\n", applied, refused);
  EXPECT_GT(applied, 200);
  EXPECT_GT(refused, 20);  // the walk does reach the rules across services
}

TEST(ReconcilerChanges, OneEndpointsChangeTouchesItsServiceOnly) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  DesiredState state{node(), {}};
  for (int i = 0; i < 1000; ++i) {
    ServiceSpec s;
    s.name = "s" + std::to_string(i);
    s.vip = ip("10.1." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250));
    s.port = 80;
    for (int e = 0; e < 3; ++e) {
      s.endpoints.push_back(
          {ip("10.2." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250)),
           static_cast<uint16_t>(8080 + e), 1});
    }
    state.services.push_back(s);
  }
  ASSERT_TRUE(r.apply(state));
  ServiceSpec changed = state.services[500];
  changed.endpoints[1].weight = 3;
  dp.log.clear();
  auto report = r.applyChanges(ServiceChanges{{changed}, {}});
  ASSERT_TRUE(report) << report.error().toString();
  EXPECT_EQ(report->changed, std::vector<std::string>{"s500"});
  const uint32_t id = *r.serviceId("s500");
  EXPECT_EQ(dp.log, std::vector<std::string>{"upsertService " + std::to_string(id) + " ring"});
  EXPECT_EQ(r.desired().services[500], changed);

  // A service removed: its entry first, then its ring and its three slots; nothing else.
  dp.log.clear();
  ASSERT_TRUE(r.applyChanges(ServiceChanges{{}, {"s7"}}));
  ASSERT_EQ(dp.log.size(), 5u);
  EXPECT_EQ(dp.log[0].rfind("removeServiceEntry", 0), 0u);
  EXPECT_EQ(dp.log[1].rfind("releaseService", 0), 0u);
  EXPECT_EQ(r.desired().services.size(), 999u);
  EXPECT_FALSE(r.serviceId("s7"));
  EXPECT_TRUE(dp.consistent());
}

TEST(ReconcilerChanges, AFailedChangeLeavesTheStateBefore) {
  FakeDataplane dp;
  Reconciler r(dp);
  r.start({}, std::nullopt);
  ServiceSpec web;
  web.name = "web";
  web.vip = ip("10.0.0.100");
  web.port = 80;
  web.endpoints = {{ip("10.0.2.11"), 8080, 1}, {ip("10.0.2.12"), 8080, 1}};
  ServiceSpec api = web;
  api.name = "api";
  api.vip = ip("10.0.0.101");
  ASSERT_TRUE(r.apply(DesiredState{node(), {web, api}}));
  const Forwarding before = forwardingOf(dp);
  const DesiredState desiredBefore = r.desired();

  // web gets a third endpoint, api goes, db comes: fail each operation in turn.
  ServiceSpec web3 = web;
  web3.endpoints.push_back({ip("10.0.2.13"), 8080, 1});
  ServiceSpec db = web;
  db.name = "db";
  db.vip = ip("10.0.0.102");
  const ServiceChanges change{{web3, db}, {"api"}};
  int failures = 0;
  for (int k = 0;; ++k) {
    FakeDataplane trial;
    Reconciler t(trial);
    t.start({}, std::nullopt);
    ASSERT_TRUE(t.apply(desiredBefore));
    trial.log.clear();
    trial.failAt = trial.ops() + k;
    auto result = t.applyChanges(change);
    if (result) break;  // k ran past the change's last operation
    ++failures;
    EXPECT_EQ(t.desired(), desiredBefore) << "failure at operation " << k;
    EXPECT_TRUE(trial.consistent()) << "failure at operation " << k;
    EXPECT_EQ(forwardingOf(trial), before) << "failure at operation " << k;
    // And the next change goes through.
    trial.failAt = -1;
    ASSERT_TRUE(t.applyChanges(change)) << "after a failure at operation " << k;
    EXPECT_TRUE(trial.consistent());
  }
  EXPECT_GE(failures, 5);
}

}  // namespace
}  // namespace meshpath
