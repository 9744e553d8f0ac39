// Versioned map layouts (userspace/bpf/map_layout.h): a pin root left by the release before the
// SYN proxy (mp_conns and mp_half of 24-byte entries, a 264-byte mp_node, 21 exception counters)
// is migrated by the next load, entries converted, versions recorded, and a packet of a migrated
// connection still reaches its endpoint through the real program; a layout this build has no
// migration for is refused with what to do, and its pinned map is left untouched.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lb_harness.h"
#include "map_layout.h"
#include "packet.h"

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
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // Creates and pins <root>/<name>.
  int pinMap(const char* name, bpf_map_type type, uint32_t key, uint32_t value, uint32_t max) {
    const int fd = bpf_map_create(type, name, key, value, max, nullptr);
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
