// Versioned map layouts (userspace/bpf/map_layout.h): a pin root left by the release before the
// SYN proxy (mp_conns and mp_half of 24-byte entries, a 264-byte mp_node, 21 exception counters)
// is migrated by the next load, entries converted, versions recorded, and a packet of a migrated
// connection still reaches its endpoint through the real program; so are the services maps of a
// node of 1,024 services (mp_rings, a map of maps, keeping its very ring maps), after which new
// flows are balanced as before and service ids beyond 1,023 work; a layout this build has no
// migration for is refused with what to do, and its pinned map is left untouched.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lb_harness.h"
#include "map_layout.h"
#include "packet.h"

// The core headers, natively: which ring slot the program reads for a flow.
#include "hash.h"
#include "maglev.h"
#include "parse.h"

namespace meshpath::testing {
namespace {

// mp_conn as the previous release laid it out (abi.h at 0d34485).
struct OldConn {
  uint32_t ep_id;
  uint16_t snat_port;
  uint16_t flags;
  uint64_t expires;
  uint32_t syn_ns;
  uint8_t snat_addr;
  uint8_t pad[3];
};
static_assert(sizeof(OldConn) == 24);

constexpr uint32_t kTable = 1024;

class LayoutMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = prepareBpfTest();
    if (!missing.empty()) GTEST_SKIP() << missing;
    root_ = "/sys/fs/bpf/meshpath-layout-test-" + std::to_string(::getpid());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_);
    // The program's clock, from a private load, for the entries' expiry.
    auto probe = LbSkeleton::open({.pinRoot = "", .connTableSize = kTable});
    ASSERT_TRUE(probe) << probe.error().toString();
    auto now = (*probe)->jiffiesNow();
    ASSERT_TRUE(now);
    jiffies_ = *now;
    // meshd's default lifetimes (model.h ConnTimeouts), as a service's mp_svc_tmo holds them.
    const uint64_t ms[MP_TMO_MAX] = {5000, 3ull * 3600 * 1000, 60000, 2000, 30000, 120000};
    for (uint32_t i = 0; i < MP_TMO_MAX; ++i) defaultTmo_.jiffies[i] = (*probe)->msToJiffies(ms[i]);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // Creates and pins <root>/<name>.
  int pinMap(const char* name, bpf_map_type type, uint32_t key, uint32_t value, uint32_t max,
             const bpf_map_create_opts* opts = nullptr) {
    const int fd = bpf_map_create(type, name, key, value, max, opts);
    EXPECT_GE(fd, 0) << name << ": " << std::strerror(errno);
    EXPECT_EQ(bpf_obj_pin(fd, (root_ + "/" + name).c_str()), 0) << name;
    fds_.push_back(UniqueFd(fd));
    return fd;
  }

  static mp_flow flowOf(const fixture::Flow& f) {
    mp_flow k{};
    const AbiAddr c = abiAddr(f.client), v = abiAddr(f.vip);
    std::memcpy(k.src, c.bytes.data(), 16);
    std::memcpy(k.dst, v.bytes.data(), 16);
    k.sport = htons(f.cport);
    k.dport = htons(f.vport);
    k.proto = f.proto;
    k.family = c.family;
    return k;
  }

  OldConn oldConn(uint32_t ep, uint16_t snatPort, uint32_t i) const {
    OldConn c{};
    c.ep_id = ep;
    c.snat_port = htons(snatPort);
    c.flags = MP_CONN_F_COUNTED;
    c.expires = jiffies_ + 1'000'000 + i;
    c.syn_ns = 0x1000 + i;
    c.snat_addr = 0;
    return c;
  }

  std::string root_;
  uint64_t jiffies_ = 0;
  mp_svc_tmo defaultTmo_{};
  std::vector<UniqueFd> fds_;
};

int recordFd(const std::string& root) { return bpf_obj_get((root + "/mp_layout").c_str()); }

void record(int fd, const char* map, uint32_t version) {
  char key[16] = {};
  std::strncpy(key, map, sizeof(key) - 1);
  ASSERT_EQ(bpf_map_update_elem(fd, key, &version, BPF_ANY), 0);
}

uint32_t recorded(const std::string& root, const char* map) {
  UniqueFd fd(recordFd(root));
  char key[16] = {};
  std::strncpy(key, map, sizeof(key) - 1);
  uint32_t version = 0;
  return fd.valid() && bpf_map_lookup_elem(fd.get(), key, &version) == 0 ? version : 0;
}

TEST_F(LayoutMigrationTest, PreviousReleaseMigratesWithItsConnections) {
  // The pin root as the previous release left it, with a version record (mp_conns 1; mp_half,
  // mp_node and mp_exc have none, as before versioning: told by their shape).
  const int conns = pinMap("mp_conns", BPF_MAP_TYPE_HASH, sizeof(mp_flow), 24, kTable);
  const int half = pinMap("mp_half", BPF_MAP_TYPE_LRU_HASH, sizeof(mp_flow), 24, kTable);
  const int node = pinMap("mp_node", BPF_MAP_TYPE_ARRAY, 4, 264, 1);
  const int exc = pinMap("mp_exc", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 21);
  const int layout = bpf_map_create(BPF_MAP_TYPE_HASH, "mp_layout", 16, 4, 128, nullptr);
  ASSERT_GE(layout, 0);
  ASSERT_EQ(bpf_obj_pin(layout, (root_ + "/mp_layout").c_str()), 0);
  record(layout, "mp_conns", 1);
  ::close(layout);

  // 600 connections toward endpoints 1 and 2 (the TCP service's), 50 half-open ones.
  std::map<std::string, OldConn> before;
  auto keyOf = [](const mp_flow& k) { return std::string(reinterpret_cast<const char*>(&k), 40); };
  for (uint32_t i = 0; i < 600; ++i) {
    const mp_flow k = flowOf(fixture::tcp4(static_cast<uint16_t>(20000 + i)));
    const OldConn c = oldConn(1 + i % 2, static_cast<uint16_t>(62000 + i), i);
    ASSERT_EQ(bpf_map_update_elem(conns, &k, &c, BPF_ANY), 0);
    before[keyOf(k)] = c;
  }
  for (uint32_t i = 0; i < 50; ++i) {
    const mp_flow k = flowOf(fixture::tcp4(static_cast<uint16_t>(30000 + i)));
    OldConn c = oldConn(2, static_cast<uint16_t>(63000 + i), i);
    c.flags = MP_CONN_F_SYN_SENT;
    ASSERT_EQ(bpf_map_update_elem(half, &k, &c, BPF_ANY), 0);
  }
  uint8_t oldNode[264] = {};
  oldNode[0] = 10;
  oldNode[260] = 1;  // n_addr4
  const uint32_t zero = 0;
  ASSERT_EQ(bpf_map_update_elem(node, &zero, oldNode, BPF_ANY), 0);
  const int ncpu = libbpf_num_possible_cpus();
  std::vector<uint64_t> perCpu(static_cast<size_t>(ncpu), 7);
  const uint32_t reason = 3;
  ASSERT_EQ(bpf_map_update_elem(exc, &reason, perCpu.data(), BPF_ANY), 0);

  auto lb = LbSkeleton::open({.pinRoot = root_, .connTableSize = kTable, .halfTableSize = kTable});
  ASSERT_TRUE(lb) << lb.error().toString();
  std::map<std::string, std::pair<uint32_t, uint32_t>> pending;
  for (const MapMigration& m : (*lb)->pendingMigrations()) {
    pending[m.name()] = {m.from(), m.to()};
  }
  EXPECT_EQ(pending.size(), 4u);
  EXPECT_EQ(pending["mp_conns"], std::make_pair(1u, 2u));
  EXPECT_EQ(pending["mp_half"], std::make_pair(1u, 2u));
  EXPECT_EQ(pending["mp_node"], std::make_pair(1u, 2u));
  EXPECT_EQ(pending["mp_exc"], std::make_pair(1u, 2u));

  // The old program runs on until the switch: a connection it opens meanwhile, and one it
  // changes, are copied by the second pass.
  const mp_flow late = flowOf(fixture::tcp4(29999));
  before[keyOf(late)] = oldConn(2, 61999, 999);
  ASSERT_EQ(bpf_map_update_elem(conns, &late, &before[keyOf(late)], BPF_ANY), 0);
  const mp_flow changed = flowOf(fixture::tcp4(20007));
  before[keyOf(changed)].flags |= MP_CONN_F_FIN_CLIENT;
  ASSERT_EQ(bpf_map_update_elem(conns, &changed, &before[keyOf(changed)], BPF_ANY), 0);
  EXPECT_EQ(recorded(root_, "mp_conns"), 1u) << "nothing is recorded before the migrations end";

  auto done = (*lb)->completeMigrations();
  ASSERT_TRUE(done) << done.error().toString();
  ASSERT_EQ(done->size(), 4u);
  EXPECT_TRUE((*lb)->pendingMigrations().empty());
  for (const char* map : {"mp_conns", "mp_half", "mp_node", "mp_exc"}) {
    EXPECT_EQ(recorded(root_, map), 2u) << map;
  }
  EXPECT_EQ(recorded(root_, "mp_rnat"), 1u);

  // The pins are the new maps now, the program's own.
  UniqueFd pinned(bpf_obj_get((root_ + "/mp_conns").c_str()));
  ASSERT_TRUE(pinned.valid());
  auto layoutNow = pinnedLayout(pinned.get());
  ASSERT_TRUE(layoutNow);
  EXPECT_EQ(layoutNow->valueSize, sizeof(mp_conn));
  EXPECT_EQ(layoutNow->maxEntries, kTable);
  EXPECT_EQ(LbHarness::entriesOf(pinned.get()), before.size());
  EXPECT_EQ(LbHarness::entriesOf((*lb)->connsFd()), before.size());
  for (const auto& [key, c] : before) {
    mp_conn now{};
    ASSERT_EQ(bpf_map_lookup_elem(pinned.get(), key.data(), &now), 0);
    EXPECT_EQ(now.ep_id, c.ep_id);
    EXPECT_EQ(now.snat_port, c.snat_port);
    EXPECT_EQ(now.flags, c.flags);
    EXPECT_EQ(now.expires, c.expires);
    EXPECT_EQ(now.syn_ns, c.syn_ns);
    EXPECT_EQ(now.snat_addr, c.snat_addr);
    EXPECT_EQ(now.proxy_opts | now.retries | now.ep_wscale, 0) << "new fields zero";
    EXPECT_EQ(now.seq_off | now.ts_off, 0u);
  }
  EXPECT_EQ(LbHarness::entriesOf((*lb)->halfFd()), 50u);
  mp_node_cfg nodeNow{};
  ASSERT_EQ(bpf_map_lookup_elem((*lb)->nodeFd(), &zero, &nodeNow), 0);
  EXPECT_EQ(nodeNow.addr4[0][0], 10);
  EXPECT_EQ(nodeNow.n_addr4, 1);
  EXPECT_EQ(nodeNow.syn_flood_threshold, 0u);
  std::fill(perCpu.begin(), perCpu.end(), 0);
  ASSERT_EQ(bpf_map_lookup_elem((*lb)->excFd(), &reason, perCpu.data()), 0);
  EXPECT_EQ(perCpu[0], 7u) << "the old reasons' counts kept";

  // Packets of migrated connections go to the endpoint and port their entries hold, through
  // the real program (its ring alone would pick one endpoint for both and other ports).
  LbHarness h(std::move(*lb));
  fixture::install(h);
  h.setNode(topo::kNode4, topo::kNode6);
  const int clientIf = ifindexOf(topo::kClientIf);
  for (uint16_t cport : {uint16_t{20000}, uint16_t{20001}, uint16_t{29999}}) {
    const fixture::Flow f = fixture::tcp4(cport);
    const OldConn& c = before[keyOf(flowOf(f))];
    const fixture::Endpoint& ep = fixture::endpoint(c.ep_id);
    const XdpRun run = h.run(fixture::fromClient(f, kTcpAck), clientIf);
    ASSERT_EQ(run.error, 0);
    EXPECT_EQ(verdictName(run.verdict), std::string("XDP_REDIRECT")) << cport;
    const Bytes want = frame(fixture::shapeOf(f, kTcpAck), topo::kEndpointIfMac, ep.mac,
                             topo::kNode4, ep.addr, ntohs(c.snat_port), ep.port);
    EXPECT_EQ(run.output, want) << "client port " << cport << ": first difference at " << [&] {
      for (size_t i = 0; i < std::min(want.size(), run.output.size()); ++i) {
        if (want[i] != run.output[i]) return fieldAt(want, i);
      }
      return std::string("length");
    }();
  }
  EXPECT_EQ(h.svcStats(fixture::kSvcTcp4).new_conns, 0u) << "no packet was a new connection";
}

// ---- a node of 1,024 services (MP_MAX_SERVICES before 65,536) --------------------------------

constexpr uint32_t kServicesV1 = 1024;
constexpr const char* kServicesMaps[] = {"mp_services",  "mp_rings", "mp_svc_tmo",
                                         "mp_svc_stats", "mp_rr",    "mp_syn_guard",
                                         "mp_syn_stats"};

// A service as the old release held it: its entry and both halves of its ring.
struct OldService {
  uint32_t id = 0;
  fixture::Flow flow;  // its VIP, port and protocol (the client port is any)
  uint32_t half = 0;
  std::vector<uint32_t> ring;  // 2 * M slots: half h is [h*M, h*M + M)

  uint32_t ringSize() const { return static_cast<uint32_t>(ring.size() / 2); }
  mp_svc_key key() const {
    mp_svc_key k{};
    const AbiAddr a = abiAddr(flow.vip);
    std::memcpy(k.addr, a.bytes.data(), 16);
    k.port = htons(flow.vport);
    k.proto = flow.proto;
    k.family = a.family;
    return k;
  }
  mp_svc value() const {
    mp_svc v{};
    v.id = id;
    v.ring_size = ringSize();
    v.active_half = half;
    v.fwd_mode = MP_FWD_NAT;
    v.algorithm = MP_ALG_MAGLEV;
    return v;
  }
};

// Both halves of a ring of M slots: `pattern` cycled in half `half`, `other` in the other one.
std::vector<uint32_t> ringOf(uint32_t m, uint32_t half, const std::vector<uint32_t>& pattern,
                             uint32_t other) {
  std::vector<uint32_t> ring(2 * m, other);
  for (uint32_t i = 0; i < m; ++i) ring[half * m + i] = pattern[i % pattern.size()];
  return ring;
}

fixture::Flow withPort(fixture::Flow f, uint16_t vport) {
  f.vport = vport;
  return f;
}

// The services packets are sent to: ids 0-2 and 1023 (the last id of the old layout), on the
// fixture's endpoints (9 and 10 are service 1023's, port 9090), rings of 13, 31, 7 and 5 slots.
// The inactive halves hold endpoints too: a lost active_half would pick from the wrong one.
std::vector<OldService> oldServices() {
  return {
      {0, fixture::tcp4(0), 1, ringOf(13, 1, {1, 2, 2}, 2)},
      {1, fixture::udp4(0), 0, ringOf(31, 0, {3, 4}, 3)},
      {2, fixture::tcp6(0), 0, ringOf(7, 0, {6, 5, 6}, 5)},
      {kServicesV1 - 1, withPort(fixture::tcp4(0), 8080), 1, ringOf(5, 1, {9, 10}, 9)},
  };
}

// Where endpoint id goes: the fixture's, or service 1023's 9 and 10.
struct EndpointAt {
  std::string addr;
  const char* mac;
  uint16_t port;
};
EndpointAt endpointAt(uint32_t id) {
  if (id == 9 || id == 10) {
    return {id == 9 ? topo::kEndpoint1v4 : topo::kEndpoint2v4,
            id == 9 ? topo::kEndpoint1Mac : topo::kEndpoint2Mac, 9090};
  }
  const fixture::Endpoint& e = fixture::endpoint(id);
  return {e.addr, e.mac, e.port};
}

mp_flow parsedFlow(const Bytes& frame) {
  Bytes copy = frame;
  mp_cursor cursor{copy.data(), copy.data() + copy.size()};
  mp_pkt pkt{};
  EXPECT_EQ(mp_parse(&cursor, &pkt), MP_OK);
  return pkt.flow;
}

uint32_t mapIdOf(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
  return info.id;
}

// A ring map as meshd creates one (LbSkeleton::createRingMap): BPF_F_INNER_MAP, 2 * M slots.
UniqueFd ringMap(const std::vector<uint32_t>& slots) {
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
  UniqueFd fd(bpf_map_create(BPF_MAP_TYPE_ARRAY, "mp_ring", 4, 4,
                             static_cast<uint32_t>(slots.size()), &opts));
  EXPECT_TRUE(fd.valid()) << std::strerror(errno);
  for (uint32_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(bpf_map_update_elem(fd.get(), &i, &slots[i], BPF_ANY), 0);
  }
  return fd;
}

// An array entry's bytes (every CPU's, for a per-CPU map).
std::vector<uint8_t> entryOf(int fd, uint32_t index) {
  auto layout = pinnedLayout(fd);
  EXPECT_TRUE(layout);
  const bool perCpu = layout->type == BPF_MAP_TYPE_PERCPU_ARRAY;
  const size_t size =
      perCpu ? (layout->valueSize + 7) / 8 * 8 * libbpf_num_possible_cpus() : layout->valueSize;
  std::vector<uint8_t> value(size);
  EXPECT_EQ(bpf_map_lookup_elem(fd, &index, value.data()), 0) << index;
  return value;
}

class ServicesMigrationTest : public LayoutMigrationTest {
 protected:
  // Pins the seven maps sized by MP_MAX_SERVICES as the old release laid them out (1,024
  // entries; mp_rings with the inner template libbpf made of mp_ring_inner), every service id
  // in use: oldServices() and 1,020 others of 3-slot rings. The per-service arrays hold
  // something at the ids of oldServices(), to be found at the same ids after.
  void pinOldServices() {
    const int ncpu = libbpf_num_possible_cpus();
    LIBBPF_OPTS(bpf_map_create_opts, innerOpts, .map_flags = BPF_F_INNER_MAP);
    UniqueFd inner(bpf_map_create(BPF_MAP_TYPE_ARRAY, "mp_ring_inner", 4, 4,
                                  2 * MP_RING_SIZE_DEFAULT, &innerOpts));
    ASSERT_TRUE(inner.valid()) << std::strerror(errno);
    LIBBPF_OPTS(bpf_map_create_opts, ringsOpts, .inner_map_fd = static_cast<uint32_t>(inner.get()));
    LIBBPF_OPTS(bpf_map_create_opts, mmapable, .map_flags = BPF_F_MMAPABLE);
    old_["mp_services"] =
        pinMap("mp_services", BPF_MAP_TYPE_HASH, sizeof(mp_svc_key), sizeof(mp_svc), kServicesV1);
    old_["mp_rings"] =
        pinMap("mp_rings", BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, kServicesV1, &ringsOpts);
    old_["mp_svc_tmo"] =
        pinMap("mp_svc_tmo", BPF_MAP_TYPE_ARRAY, 4, sizeof(mp_svc_tmo), kServicesV1);
    old_["mp_svc_stats"] =
        pinMap("mp_svc_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(mp_counters), kServicesV1);
    old_["mp_rr"] = pinMap("mp_rr", BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, kServicesV1);
    old_["mp_syn_guard"] =
        pinMap("mp_syn_guard", BPF_MAP_TYPE_ARRAY, 4, sizeof(mp_syn_guard), kServicesV1, &mmapable);
    old_["mp_syn_stats"] =
        pinMap("mp_syn_stats", BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(mp_syn_counters), kServicesV1);
    ASSERT_FALSE(HasFailure());
    // The version record names two of them; the others are told by their shape.
    const int layout = bpf_map_create(BPF_MAP_TYPE_HASH, "mp_layout", 16, 4, 128, nullptr);
    ASSERT_GE(layout, 0);
    ASSERT_EQ(bpf_obj_pin(layout, (root_ + "/mp_layout").c_str()), 0);
    record(layout, "mp_services", 1);
    record(layout, "mp_rings", 1);
    ::close(layout);

    std::map<uint32_t, OldService> all;
    for (const OldService& s : oldServices()) all[s.id] = s;
    for (uint32_t id = 0; id < kServicesV1; ++id) {
      if (all.contains(id)) continue;
      all[id] = OldService{id, fixture::tcp4(0, "10.0.0.200"), 0, ringOf(3, 0, {1}, 1)};
      all[id].flow.vport = static_cast<uint16_t>(10000 + id);
    }
    // The rings go in 256 at a time, one batch update each: every update of a map of maps
    // waits for an RCU grace period, and 1,024 of them one by one take seconds.
    std::vector<uint32_t> keys;
    std::vector<int> fds;
    std::vector<UniqueFd> open;
    for (const auto& [id, s] : all) {
      const mp_svc_key k = s.key();
      const mp_svc v = s.value();
      ASSERT_EQ(bpf_map_update_elem(old_["mp_services"], &k, &v, BPF_NOEXIST), 0) << id;
      UniqueFd ring = ringMap(s.ring);
      ringIds_[id] = mapIdOf(ring.get());
      keys.push_back(id);
      fds.push_back(ring.get());
      open.push_back(std::move(ring));
      if (keys.size() == 256) {
        uint32_t count = static_cast<uint32_t>(keys.size());
        ASSERT_EQ(bpf_map_update_batch(old_["mp_rings"], keys.data(), fds.data(), &count, nullptr),
                  0)
            << std::strerror(errno);
        keys.clear();
        fds.clear();
        open.clear();
      }
      mp_svc_tmo t{};
      for (uint32_t i = 0; i < MP_TMO_MAX; ++i) t.jiffies[i] = defaultTmo_.jiffies[i] + id;
      ASSERT_EQ(bpf_map_update_elem(old_["mp_svc_tmo"], &id, &t, BPF_ANY), 0);
    }
    for (const OldService& s : oldServices()) {
      std::vector<mp_counters> counters(static_cast<size_t>(ncpu));
      std::vector<uint32_t> rr(static_cast<size_t>(ncpu) * 2);  // per CPU: 8 bytes apart
      std::vector<mp_syn_counters> syn(static_cast<size_t>(ncpu));
      for (size_t cpu = 0; cpu < counters.size(); ++cpu) {
        counters[cpu].packets = 1000u * s.id + cpu;
        counters[cpu].bytes = 64000u + cpu;
        counters[cpu].new_conns = 10u + cpu;
        rr[2 * cpu] = static_cast<uint32_t>(5 + s.id + cpu);
        syn[cpu].cookies_sent = 40 + s.id + cpu;
        syn[cpu].acks_valid = 7;
      }
      ASSERT_EQ(bpf_map_update_elem(old_["mp_svc_stats"], &s.id, counters.data(), BPF_ANY), 0);
      ASSERT_EQ(bpf_map_update_elem(old_["mp_rr"], &s.id, rr.data(), BPF_ANY), 0);
      ASSERT_EQ(bpf_map_update_elem(old_["mp_syn_stats"], &s.id, syn.data(), BPF_ANY), 0);
      mp_syn_guard g{};
      g.window_ns = 123456 + s.id;
      g.syns = 5;
      g.done = 4;
      g.switched_on = g.switched_off = 3;
      ASSERT_EQ(bpf_map_update_elem(old_["mp_syn_guard"], &s.id, &g, BPF_ANY), 0);
    }
  }

  // The new-connection count every service of oldServices() had before the migration.
  static uint64_t oldNewConns() {
    const uint64_t n = static_cast<uint64_t>(libbpf_num_possible_cpus());
    return 10 * n + n * (n - 1) / 2;
  }

  // Loads against the old pins (the seven maps migrate: every entry copied), runs `meanwhile`
  // (what the old program does until the switch) and completes the migrations. The harness on
  // the result, with the fixture's endpoints and service 1023's and the node's addresses set.
  std::unique_ptr<LbHarness> migrate(const std::function<void()>& meanwhile = [] {}) {
    auto lb =
        LbSkeleton::open({.pinRoot = root_, .connTableSize = kTable, .halfTableSize = kTable});
    EXPECT_TRUE(lb) << lb.error().toString();
    if (!lb) return nullptr;
    std::map<std::string, std::pair<uint32_t, uint32_t>> pending;
    for (const MapMigration& m : (*lb)->pendingMigrations()) {
      pending[m.name()] = {m.from(), m.to()};
      if (m.name() == "mp_rings") {
        EXPECT_EQ(m.stats().copied, kServicesV1) << "every ring";
      }
    }
    EXPECT_EQ(pending.size(), std::size(kServicesMaps));
    for (const char* map : kServicesMaps) {
      EXPECT_EQ(pending[map], std::make_pair(1u, 2u)) << map;
    }
    meanwhile();
    auto done = (*lb)->completeMigrations();
    EXPECT_TRUE(done) << done.error().toString();
    auto h = std::make_unique<LbHarness>(std::move(*lb));
    for (const fixture::Endpoint& e : fixture::kEndpoints) {
      h->setEndpoint(e.id, e.addr, e.port, e.svc);
    }
    h->setEndpoint(9, topo::kEndpoint1v4, 9090, kServicesV1 - 1);
    h->setEndpoint(10, topo::kEndpoint2v4, 9090, kServicesV1 - 1);
    h->setNode(topo::kNode4, topo::kNode6);
    return h;
  }

  std::map<std::string, int> old_;        // the old pinned maps by name (fds_ holds them)
  std::map<uint32_t, uint32_t> ringIds_;  // service id -> its ring's map id
};

// A new flow's first packet through the real program goes to endpoint `want`, its address and
// port, with the SNAT port of the entry it opened.
void expectBalancedTo(LbHarness& h, const fixture::Flow& f, uint32_t want) {
  const Bytes in = fixture::fromClient(f, kTcpSyn);
  const XdpRun run = h.run(in, ifindexOf(topo::kClientIf));
  ASSERT_EQ(run.error, 0);
  ASSERT_EQ(verdictName(run.verdict), std::string("XDP_REDIRECT"));
  const std::optional<mp_conn> c = h.anyConn(parsedFlow(in));
  ASSERT_TRUE(c) << "an entry for the new flow";
  EXPECT_EQ(c->ep_id, want);
  const EndpointAt ep = endpointAt(want);
  const Bytes expected = frame(fixture::shapeOf(f, kTcpSyn), topo::kEndpointIfMac, ep.mac, f.node,
                               ep.addr, ntohs(c->snat_port), ep.port);
  EXPECT_TRUE(run.output == expected) << describeMismatch(expected, run.output);
}

TEST_F(ServicesMigrationTest, ServicesMapsOf1024MigrateKeepingRingsAndPicks) {
  pinOldServices();
  ASSERT_FALSE(HasFailure());
  std::vector<OldService> services = oldServices();
  const int ncpu = libbpf_num_possible_cpus();

  // Meanwhile service 2 gets a new ring of another size (the second copy installs that ring
  // map) and service 0's counters go on.
  UniqueFd newRing;
  auto h = migrate([&] {
    OldService& s2 = services[2];
    s2.ring = ringOf(11, 1, {5, 6}, 6);
    s2.half = 1;
    newRing = ringMap(s2.ring);
    const int fd = newRing.get();
    ASSERT_EQ(bpf_map_update_elem(old_["mp_rings"], &s2.id, &fd, BPF_ANY), 0);
    ringIds_[s2.id] = mapIdOf(fd);
    const mp_svc_key k = s2.key();
    const mp_svc v = s2.value();
    ASSERT_EQ(bpf_map_update_elem(old_["mp_services"], &k, &v, BPF_ANY), 0);
    std::vector<mp_counters> counters(static_cast<size_t>(ncpu));
    const uint32_t zero = 0;
    ASSERT_EQ(bpf_map_lookup_elem(old_["mp_svc_stats"], &zero, counters.data()), 0);
    for (mp_counters& c : counters) c.packets += 100;
    ASSERT_EQ(bpf_map_update_elem(old_["mp_svc_stats"], &zero, counters.data(), BPF_ANY), 0);
  });
  ASSERT_TRUE(h);
  for (const char* map : kServicesMaps) {
    EXPECT_EQ(recorded(root_, map), 2u) << map;
    UniqueFd pinned(bpf_obj_get((root_ + "/" + map).c_str()));
    ASSERT_TRUE(pinned.valid()) << map;
    EXPECT_EQ(pinnedLayout(pinned.get())->maxEntries, uint32_t{MP_MAX_SERVICES}) << map;
    EXPECT_EQ(mapIdOf(pinned.get()), mapIdOf(h->mapFd(map))) << map << ": the program's own";
  }

  // Every entry arrived: the service entries as they were, each id's very ring map (service
  // 2's new one), the per-service arrays at the same index; nothing at the new ids.
  size_t entries = 0;
  mp_svc_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(h->lb().servicesFd(), prev, &next) == 0) {
    key = next;
    prev = &key;
    mp_svc was{}, now{};
    ASSERT_EQ(bpf_map_lookup_elem(old_["mp_services"], &key, &was), 0);
    ASSERT_EQ(bpf_map_lookup_elem(h->lb().servicesFd(), &key, &now), 0);
    EXPECT_EQ(std::memcmp(&was, &now, sizeof(mp_svc)), 0) << "service " << was.id;
    ++entries;
  }
  EXPECT_EQ(entries, kServicesV1);
  for (uint32_t id = 0; id < kServicesV1; ++id) {
    uint32_t inner = 0;
    ASSERT_EQ(bpf_map_lookup_elem(h->lb().ringsFd(), &id, &inner), 0) << id;
    EXPECT_EQ(inner, ringIds_[id]) << "service " << id << ": the same ring map";
    for (const char* map :
         {"mp_svc_tmo", "mp_svc_stats", "mp_rr", "mp_syn_guard", "mp_syn_stats"}) {
      EXPECT_EQ(entryOf(h->mapFd(map), id), entryOf(old_[map], id)) << map << "[" << id << "]";
    }
  }
  for (uint32_t id : {kServicesV1, uint32_t{MP_MAX_SERVICES - 1}}) {
    uint32_t inner = 0;
    EXPECT_NE(bpf_map_lookup_elem(h->lb().ringsFd(), &id, &inner), 0) << id << ": no ring";
    const std::vector<uint8_t> stats = entryOf(h->lb().svcStatsFd(), id);
    EXPECT_EQ(stats, std::vector<uint8_t>(stats.size(), 0)) << id;
  }

  // New flows are balanced as before: each to the endpoint in the slot its hash lands on in the
  // service's active half, through the real program; the counters go on from the migrated ones.
  std::map<uint32_t, std::set<uint32_t>> picked;
  for (const OldService& s : services) {
    for (uint16_t cport = 40000; cport < 40012; ++cport) {
      fixture::Flow f = s.flow;
      f.cport = cport;
      const mp_flow flow = parsedFlow(fixture::fromClient(f, kTcpSyn));
      const uint32_t want = s.ring[mp_ring_index(mp_flow_hash(&flow), s.ringSize(), s.half)];
      picked[s.id].insert(want);
      SCOPED_TRACE("service " + std::to_string(s.id) + ", client port " + std::to_string(cport));
      expectBalancedTo(*h, f, want);
    }
    EXPECT_EQ(picked[s.id].size(), 2u) << "service " << s.id << ": both endpoints picked";
    EXPECT_EQ(h->svcStats(s.id).new_conns, oldNewConns() + 12) << "service " << s.id;
  }
}

TEST_F(ServicesMigrationTest, ServiceIdsBeyondTheOldLayoutWorkAfterTheMigration) {
  pinOldServices();
  ASSERT_FALSE(HasFailure());
  auto h = migrate();
  ASSERT_TRUE(h);
  // The first id the old layout did not have (round-robin: mp_rr at it too), one in the middle
  // and the last; each with an endpoint of its own.
  const uint32_t ids[] = {kServicesV1, 40000, MP_MAX_SERVICES - 1};
  for (uint32_t i = 0; i < std::size(ids); ++i) {
    const uint32_t ep = 11 + i;
    h->setEndpoint(ep, topo::kEndpoint1v4, static_cast<uint16_t>(7070 + i), ids[i]);
    h->setService(ids[i], topo::kVip4, static_cast<uint16_t>(8443 + i), IPPROTO_TCP, 17, {ep},
                  i == 0 ? MP_ALG_ROUND_ROBIN : MP_ALG_MAGLEV);
  }
  for (uint32_t i = 0; i < std::size(ids); ++i) {
    SCOPED_TRACE("service " + std::to_string(ids[i]));
    const fixture::Flow f = withPort(fixture::tcp4(41000), static_cast<uint16_t>(8443 + i));
    const Bytes in = fixture::fromClient(f, kTcpSyn);
    const XdpRun run = h->run(in, ifindexOf(topo::kClientIf));
    ASSERT_EQ(run.error, 0);
    ASSERT_EQ(verdictName(run.verdict), std::string("XDP_REDIRECT"));
    const std::optional<mp_conn> c = h->anyConn(parsedFlow(in));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->ep_id, 11 + i);
    const Bytes expected =
        frame(fixture::shapeOf(f, kTcpSyn), topo::kEndpointIfMac, topo::kEndpoint1Mac, topo::kNode4,
              topo::kEndpoint1v4, ntohs(c->snat_port), static_cast<uint16_t>(7070 + i));
    EXPECT_TRUE(run.output == expected) << describeMismatch(expected, run.output);
    EXPECT_EQ(h->svcStats(ids[i]).new_conns, 1u);
  }
  uint32_t rr = 0;
  for (uint32_t v : h->rrCounters(kServicesV1)) rr += v;
  EXPECT_EQ(rr, 1u) << "mp_rr[1024] counted the round-robin pick";

  // The migrated services beside them are as they were.
  const OldService last = oldServices().back();
  fixture::Flow f = last.flow;
  f.cport = 41001;
  const mp_flow flow = parsedFlow(fixture::fromClient(f, kTcpSyn));
  expectBalancedTo(*h, f,
                   last.ring[mp_ring_index(mp_flow_hash(&flow), last.ringSize(), last.half)]);
  EXPECT_EQ(h->svcStats(last.id).new_conns, oldNewConns() + 1);
}

TEST_F(LayoutMigrationTest, LayoutWithoutMigrationIsRefusedAndLeftAsItIs) {
  // A conn table of a layout no release had (28-byte values), holding connections.
  const int conns = pinMap("mp_conns", BPF_MAP_TYPE_HASH, sizeof(mp_flow), 28, kTable);
  for (uint32_t i = 0; i < 10; ++i) {
    const mp_flow k = flowOf(fixture::tcp4(static_cast<uint16_t>(20000 + i)));
    uint8_t v[28] = {};
    v[0] = static_cast<uint8_t>(i);
    ASSERT_EQ(bpf_map_update_elem(conns, &k, v, BPF_ANY), 0);
  }
  auto idOf = [](int fd) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
    return info.id;
  };
  const uint32_t id = idOf(conns);

  auto lb = LbSkeleton::open({.pinRoot = root_, .connTableSize = kTable});
  ASSERT_FALSE(lb);
  const std::string error = lb.error().toString();
  EXPECT_NE(error.find("mp_conns"), std::string::npos) << error;
  EXPECT_NE(error.find("value 28 B"), std::string::npos) << error;
  EXPECT_NE(error.find("needs version 2"), std::string::npos) << error;
  EXPECT_NE(error.find("meshd --teardown"), std::string::npos) << error;
  EXPECT_NE(error.find("left as it is"), std::string::npos) << error;
  UniqueFd still(bpf_obj_get((root_ + "/mp_conns").c_str()));
  ASSERT_TRUE(still.valid());
  EXPECT_EQ(idOf(still.get()), id) << "the very map, not a new one";
  EXPECT_EQ(LbHarness::entriesOf(still.get()), 10u);
  EXPECT_EQ(recorded(root_, "mp_conns"), 0u) << "nothing recorded";

  // A version recorded by a newer release (a downgrade): refused too, by its version.
  std::filesystem::remove(root_ + "/mp_conns");
  pinMap("mp_conns", BPF_MAP_TYPE_HASH, sizeof(mp_flow), sizeof(mp_conn), kTable);
  const int layout = bpf_map_create(BPF_MAP_TYPE_HASH, "mp_layout", 16, 4, 128, nullptr);
  ASSERT_GE(layout, 0);
  ASSERT_EQ(bpf_obj_pin(layout, (root_ + "/mp_layout").c_str()), 0);
  record(layout, "mp_conns", 3);
  ::close(layout);
  lb = LbSkeleton::open({.pinRoot = root_, .connTableSize = kTable});
  ASSERT_FALSE(lb);
  EXPECT_NE(lb.error().toString().find("layout version 3, unknown to this build"),
            std::string::npos)
      << lb.error().toString();
  EXPECT_EQ(recorded(root_, "mp_conns"), 3u);
}

TEST_F(LayoutMigrationTest, EveryPinnedMapHasAHistoryAndAFreshRootIsRecorded) {
  auto lb = LbSkeleton::open({.pinRoot = root_, .connTableSize = kTable});
  ASSERT_TRUE(lb) << lb.error().toString();
  EXPECT_TRUE((*lb)->pendingMigrations().empty());
  for (std::string_view map : versionedMaps()) {
    const std::string name(map);
    EXPECT_TRUE(std::filesystem::exists(root_ + "/" + name)) << name;
    EXPECT_EQ(recorded(root_, name.c_str()), layoutHistory(map)->back().version) << name;
  }
}

}  // namespace
}  // namespace meshpath::testing
