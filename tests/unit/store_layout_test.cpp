// The key layout of the desired state in etcd (userspace/store/store_layout.h): keys round-trip,
// every node that sees the same keys, in whatever order, builds the same services and rings, bad
// keys are left out alone, changes() says what the events changed, older events never overwrite
// newer ones, and a write is guarded by the revisions its node saw (and keeps a registered
// endpoint's lease).
#include "store_layout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "maglev.h"
#include "ring.h"

namespace meshpath::store {
namespace {

const std::string kPrefix = "/meshpath";

EndpointSpec endpoint(const std::string& address, uint16_t port, uint32_t weight = 1) {
  EndpointSpec e;
  e.address = *IpAddress::parse(address);
  e.port = port;
  e.weight = weight;
  return e;
}

ServiceSpec service(const std::string& name, const std::string& vip, uint16_t port,
                    std::vector<EndpointSpec> endpoints) {
  ServiceSpec s;
  s.name = name;
  s.vip = *IpAddress::parse(vip);
  s.port = port;
  s.endpoints = std::move(endpoints);
  return s;
}

NodeSpec node() {
  NodeSpec n;
  n.ipv4 = IpAddress::parse("10.0.0.1");
  n.ipv6 = IpAddress::parse("fd00::1");
  return n;
}

// The events a fresh write of `services` makes, at revisions 1, 2, ...
std::vector<WatchEvent> eventsFor(const std::vector<ServiceSpec>& services) {
  StoreMirror empty(kPrefix);
  StoreWrite w = writeFor(empty, {}, services);
  std::vector<WatchEvent> events;
  int64_t rev = 1;
  for (const TxnOp& op : w.ops) {
    WatchEvent ev;
    ev.deleted = op.kind == TxnOp::Kind::kDelete;
    ev.kv = KeyValue{op.key, op.value, rev++, op.lease};
    events.push_back(ev);
  }
  return events;
}

TEST(StoreLayout, KeysAreTheDocumentedOnes) {
  EXPECT_EQ(serviceKey(kPrefix, "web"), "/meshpath/services/web");
  EXPECT_EQ(endpointKey(kPrefix, "web", endpoint("10.0.2.11", 8080)),
            "/meshpath/endpoints/web/10.0.2.11:8080");
  EXPECT_EQ(endpointKey(kPrefix, "web", endpoint("fd00::11", 8080)),
            "/meshpath/endpoints/web/[fd00::11]:8080");
  EXPECT_EQ(endpointValue(endpoint("10.0.2.11", 8080, 3)), R"({"weight":3})");
  auto value = nlohmann::json::parse(serviceValue(service("web", "10.0.0.10", 80, {})));
  EXPECT_FALSE(value.contains("name"));
  EXPECT_FALSE(value.contains("endpoints"));
  EXPECT_EQ(value["vip"], "10.0.0.10");
}

TEST(StoreLayout, ServicesRoundTripThroughTheKeys) {
  ServiceSpec web = service("web", "10.0.0.10", 80,
                            {endpoint("10.0.2.11", 8080, 2), endpoint("10.0.2.12", 8080, 0),
                             endpoint("fd00::13", 8080, 1)});
  web.algorithm = Algorithm::kLeastConn;
  web.health.type = HealthCheckType::kHttp;
  web.health.httpPath = "/healthz";
  ServiceSpec dns = service("dns", "fd00::53", 53, {endpoint("fd00::2", 53)});
  dns.protocol = Protocol::kUdp;
  StoreMirror mirror(kPrefix);
  mirror.apply(eventsFor({web, dns}));
  std::vector<KeyProblem> problems;
  auto got = mirror.services(node(), &problems);
  EXPECT_TRUE(problems.empty()) << problems.front().key << ": " << problems.front().problem;
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], dns);  // by name
  EXPECT_EQ(got[1], web);
}

// Two nodes that see the same keys written in different orders (and one that sees them as one
// range) build the same services, so the same rings: a flow ECMP moves between them keeps its
// endpoint.
TEST(StoreLayout, SameServicesAndRingsWhateverTheOrder) {
  std::vector<EndpointSpec> eps;
  for (int i = 0; i < 40; ++i) {
    eps.push_back(
        endpoint("10.0." + std::to_string(i / 10) + "." + std::to_string(10 + i), 80, 1 + i % 3));
  }
  auto events = eventsFor({service("web", "10.0.0.10", 80, eps)});
  StoreMirror a(kPrefix);
  a.apply(events);
  const auto reference = a.services(node(), nullptr);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 5; ++trial) {
    auto shuffled = events;
    std::shuffle(shuffled.begin() + 1, shuffled.end(), rng);  // the service key first or not
    if (trial % 2 == 1) std::rotate(shuffled.begin(), shuffled.begin() + 1, shuffled.end());
    StoreMirror b(kPrefix);
    b.apply(shuffled);
    EXPECT_EQ(b.services(node(), nullptr), reference);
  }
  std::vector<KeyValue> kvs;
  for (const WatchEvent& ev : events) kvs.push_back(ev.kv);
  std::reverse(kvs.begin(), kvs.end());
  StoreMirror c(kPrefix);
  c.reset(kvs);
  auto viaRange = c.services(node(), nullptr);
  ASSERT_EQ(viaRange, reference);

  // The rings, as keys per slot, with each node's own ids.
  auto ringKeys = [](const ServiceSpec& s, uint32_t firstId) {
    std::vector<MaglevEndpoint> in;
    for (const EndpointSpec& e : s.endpoints) in.push_back({firstId++, e.key(), e.weight});
    std::reverse(in.begin(), in.end());
    const uint32_t m = ringSizeFor(0, static_cast<uint32_t>(in.size()));
    std::map<uint32_t, std::string> keyOf;
    for (const auto& e : in) keyOf[e.id] = e.key;
    std::vector<std::string> out;
    for (uint32_t id : buildServiceRing(Algorithm::kMaglev, in, m)) out.push_back(keyOf.at(id));
    return out;
  };
  EXPECT_EQ(ringKeys(reference[0], 1), ringKeys(viaRange[0], 5000));
}

TEST(StoreLayout, BadKeysAreLeftOutAlone) {
  auto events = eventsFor({service("web", "10.0.0.10", 80, {endpoint("10.0.2.11", 80)})});
  int64_t rev = 100;
  auto put = [&](const std::string& key, const std::string& value) {
    events.push_back(WatchEvent{false, KeyValue{kPrefix + key, value, rev++, 0}});
  };
  put("/services/broken", R"({"vip": "not-an-address", "port": 80})");
  put("/services/notjson", "{");
  put("/services/listed", R"({"vip": "10.0.0.11", "port": 80, "endpoints": []})");
  put("/endpoints/web/nonsense", R"({"weight": 1})");
  put("/endpoints/web/10.0.2.12:80", R"({"weight": 99999})");
  put("/endpoints/ghost/10.0.2.13:80", "");
  put("/endpoints/web", "");
  put("/endpoints/web/10.0.2.14:80", "");  // empty: weight 1
  StoreMirror mirror(kPrefix);
  mirror.apply(events);
  std::vector<KeyProblem> problems;
  auto got = mirror.services(node(), &problems);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].name, "web");
  EXPECT_EQ(got[0].endpoints,
            (std::vector<EndpointSpec>{endpoint("10.0.2.11", 80), endpoint("10.0.2.14", 80)}));
  std::set<std::string> bad;
  for (const KeyProblem& p : problems) bad.insert(p.key.substr(kPrefix.size()));
  EXPECT_EQ(bad, (std::set<std::string>{"/services/broken", "/services/notjson", "/services/listed",
                                        "/endpoints/web/nonsense", "/endpoints/web/10.0.2.12:80",
                                        "/endpoints/ghost/10.0.2.13:80", "/endpoints/web"}));
}

// services() rebuilds only what changed since its last call; what it returns must always be what
// a fresh mirror of the same keys returns.
TEST(StoreLayout, IncrementalBuildsMatchAFreshOne) {
  StoreMirror m(kPrefix);
  auto events = eventsFor({service("web", "10.0.0.10", 80, {endpoint("10.0.2.11", 80)}),
                           service("api", "10.0.0.11", 81, {endpoint("10.0.2.12", 80)})});
  m.apply(events);
  auto fresh = [&] {
    std::vector<KeyValue> kvs;
    for (const auto& [key, kv] : m.keys()) kvs.push_back(kv);
    StoreMirror f(kPrefix);
    f.reset(kvs);
    std::vector<KeyProblem> problems;
    auto services = f.services(node(), &problems);
    return std::make_pair(services, problems.size());
  };
  auto check = [&](const char* step) {
    std::vector<KeyProblem> problems;
    auto services = m.services(node(), &problems);
    auto [want, wantProblems] = fresh();
    EXPECT_EQ(services, want) << step;
    EXPECT_EQ(problems.size(), wantProblems) << step;
    return services;
  };
  ASSERT_EQ(check("start").size(), 2u);
  int64_t rev = 100;
  const std::string webKey = serviceKey(kPrefix, "web");
  const std::string webValue = m.keys().at(webKey).value;
  m.apply({WatchEvent{false, KeyValue{endpointKey(kPrefix, "web", endpoint("10.0.2.13", 80)),
                                      R"({"weight":4})", rev++, 0}}});
  EXPECT_EQ(check("endpoint added")[1].endpoints.size(), 2u);
  m.apply({WatchEvent{true, KeyValue{webKey, "", rev++, 0}}});
  EXPECT_EQ(check("service deleted, its endpoints wait").size(), 1u);
  m.apply({WatchEvent{false, KeyValue{webKey, webValue, rev++, 0}}});
  EXPECT_EQ(check("service back").size(), 2u);
  NodeSpec v4only = node();
  v4only.ipv6.reset();
  EXPECT_EQ(m.services(v4only, nullptr).size(), 2u);  // a new node: everything checked again
}

// changes(): what the events since the last build changed, as puts and removals, and the same
// state as services() once applied; nullopt when it cannot tell (nothing built, a reset, another
// node).
TEST(StoreLayout, ChangesAreWhatTheEventsChanged) {
  StoreMirror m(kPrefix);
  EXPECT_FALSE(m.changes(node(), nullptr)) << "nothing built yet";
  m.apply(eventsFor({service("web", "10.0.0.10", 80, {endpoint("10.0.2.11", 80)}),
                     service("api", "10.0.0.11", 81, {endpoint("10.0.2.12", 80)}),
                     service("db", "10.0.0.12", 82, {endpoint("10.0.2.14", 80)})}));
  std::vector<ServiceSpec> state = m.services(node(), nullptr);
  ASSERT_EQ(state.size(), 3u);
  auto none = m.changes(node(), nullptr);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty()) << "no event since the build";

  int64_t rev = 100;
  m.apply(
      {WatchEvent{false, KeyValue{endpointKey(kPrefix, "web", endpoint("10.0.2.13", 80)),
                                  R"({"weight":4})", rev++, 0}},
       WatchEvent{true, KeyValue{serviceKey(kPrefix, "db"), "", rev++, 0}},
       WatchEvent{false, KeyValue{serviceKey(kPrefix, "new"),
                                  R"({"vip":"10.0.0.13","port":83,"protocol":"tcp"})", rev++, 0}}});
  auto c = m.changes(node(), nullptr);
  ASSERT_TRUE(c);
  std::set<std::string> put;
  for (const ServiceSpec& s : c->put) put.insert(s.name);
  EXPECT_EQ(put, (std::set<std::string>{"new", "web"}));
  EXPECT_EQ(c->removed, std::vector<std::string>{"db"});
  applyChanges(state, *c);
  std::sort(state.begin(), state.end(),
            [](const ServiceSpec& a, const ServiceSpec& b) { return a.name < b.name; });
  StoreMirror fresh(kPrefix);
  std::vector<KeyValue> kvs;
  for (const auto& [key, kv] : m.keys()) kvs.push_back(kv);
  fresh.reset(kvs);
  EXPECT_EQ(state, fresh.services(node(), nullptr)) << "the changes lead to the state itself";

  m.reset(kvs);
  EXPECT_FALSE(m.changes(node(), nullptr)) << "after a reset: take services()";
  m.services(node(), nullptr);
  NodeSpec v4only = node();
  v4only.ipv6.reset();
  EXPECT_FALSE(m.changes(v4only, nullptr)) << "another node: every service checked again";
}

TEST(StoreLayout, OlderEventsNeverOverwriteNewerOnes) {
  const std::string key = endpointKey(kPrefix, "web", endpoint("10.0.2.11", 80));
  StoreMirror m(kPrefix);
  m.apply({WatchEvent{false, KeyValue{key, R"({"weight":5})", 5, 0}}});
  m.apply({WatchEvent{false, KeyValue{key, R"({"weight":3})", 3, 0}}});  // late, older
  EXPECT_EQ(m.keys().at(key).value, R"({"weight":5})");
  m.apply({WatchEvent{true, KeyValue{key, "", 6, 0}}});
  EXPECT_EQ(m.modRevision(key), 0);
  m.apply({WatchEvent{false, KeyValue{key, R"({"weight":5})", 5, 0}}});  // replayed, older
  EXPECT_EQ(m.keys().count(key), 0u);
  m.apply({WatchEvent{false, KeyValue{key, R"({"weight":7})", 7, 0}}});
  EXPECT_EQ(m.modRevision(key), 7);
}

TEST(StoreLayout, WritesAreGuardedAndKeepLeases) {
  ServiceSpec web = service("web", "10.0.0.10", 80, {endpoint("10.0.2.11", 80)});
  StoreMirror m(kPrefix);
  const std::string sk = serviceKey(kPrefix, "web");
  const std::string ek = endpointKey(kPrefix, "web", web.endpoints[0]);
  m.apply({WatchEvent{false, KeyValue{sk, serviceValue(web), 4, 0}},
           WatchEvent{false, KeyValue{ek, endpointValue(web.endpoints[0]), 9, 42}}});

  ServiceSpec heavier = web;
  heavier.endpoints[0].weight = 7;
  StoreWrite w = writeFor(m, {web}, {heavier});
  ASSERT_EQ(w.ops.size(), 1u);  // the service itself did not change
  EXPECT_EQ(w.ops[0].key, ek);
  EXPECT_EQ(w.ops[0].lease, 42);  // a registered endpoint stays registered
  EXPECT_EQ(w.ops[0].value, R"({"weight":7})");
  ASSERT_EQ(w.compares.size(), 1u);
  EXPECT_EQ(w.compares[0].key, ek);
  EXPECT_EQ(w.compares[0].modRevision, 9);

  StoreWrite del = writeFor(m, {web}, {});
  std::set<std::string> deleted;
  for (const TxnOp& op : del.ops) {
    EXPECT_EQ(op.kind, TxnOp::Kind::kDelete);
    deleted.insert(op.key);
  }
  EXPECT_EQ(deleted, (std::set<std::string>{sk, ek}));

  ServiceSpec api = service("api", "10.0.0.11", 81, {endpoint("10.0.2.12", 80)});
  StoreWrite add = writeFor(m, {web}, {web, api});
  ASSERT_EQ(add.ops.size(), 2u);
  for (const TxnCompare& c : add.compares) EXPECT_EQ(c.modRevision, 0) << c.key;  // must be new
  EXPECT_TRUE(writeFor(m, {web}, {web}).empty());
}

TEST(StoreUrl, ParsesMembersAndPrefix) {
  auto url = parseStoreUrl("etcd://10.0.0.1:2379,etcd-b:12379,[fd00::1]:2379/mesh/prod/");
  ASSERT_TRUE(url) << url.error().toString();
  ASSERT_EQ(url->endpoints.size(), 3u);
  EXPECT_EQ(url->endpoints[0].host, "10.0.0.1");
  EXPECT_EQ(url->endpoints[1].port, 12379);
  EXPECT_EQ(url->endpoints[2].host, "fd00::1");
  EXPECT_EQ(url->prefix, "/mesh/prod");
  auto plain = parseStoreUrl("etcd://127.0.0.1");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->endpoints[0].port, 2379);
  EXPECT_EQ(plain->prefix, "/meshpath");
  for (const char* bad : {"http://127.0.0.1:2379", "etcd://", "etcd://h:0", "etcd://h:99999",
                          "etcd://h:12x", "etcd://a:1,,b:2", "etcd://h:1/"}) {
    EXPECT_FALSE(parseStoreUrl(bad)) << bad;
  }
  EXPECT_EQ(prefixEnd("/meshpath"), "/meshpati");  // the last byte + 1
}

// The command line's TLS and login options: what goes together, and the password from its file.
TEST(StoreUrl, SecurityOptionsGoTogether) {
  EXPECT_FALSE(storeSecurity({"", "", "", "", ""})->tls());
  EXPECT_TRUE(storeSecurity({"ca.crt", "", "", "", ""})->tls());
  EXPECT_FALSE(storeSecurity({"ca.crt", "c.crt", "", "", ""}));  // a certificate without its key
  EXPECT_FALSE(storeSecurity({"", "c.crt", "c.key", "", ""}));   // a client certificate, no CA
  EXPECT_FALSE(storeSecurity({"", "", "", "root", ""}));         // a user without a password file
  EXPECT_FALSE(storeSecurity({"", "", "", "", "/dev/null"}));    // a password file without a user
  auto missing = storeSecurity({"", "", "", "root", "/nonexistent/password"});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().toString().find("/nonexistent/password"), std::string::npos);
  const std::string file = ::testing::TempDir() + "/etcd-password";
  { std::ofstream(file) << "s3cret\nignored second line\n"; }
  auto ok = storeSecurity({"", "", "", "root", file});
  ASSERT_TRUE(ok) << ok.error().toString();
  EXPECT_EQ(ok->user, "root");
  EXPECT_EQ(ok->password, "s3cret");
  std::remove(file.c_str());
}

}  // namespace
}  // namespace meshpath::store
