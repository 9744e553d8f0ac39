// LbSkeleton: map pinning and adoption across a restart, ring maps that fit mp_rings, and the
// checks writeRing makes before it publishes anything.
#include "lb_skeleton.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>

#include "libbpf_logger.h"

namespace meshpath {
namespace {

class LbSkeletonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "BPF tests load programs: run as root";
    installLibbpfLogger();
  }
};

TEST_F(LbSkeletonTest, PinnedMapsAreAdoptedByTheNextLoad) {
  const std::string root = "/sys/fs/bpf/meshpath-test-" + std::to_string(::getpid());
  std::filesystem::remove_all(root);
  {
    auto first = LbSkeleton::open({.pinRoot = root, .connTableSize = 1024});
    ASSERT_TRUE(first) << first.error().toString();
    EXPECT_FALSE((*first)->adopted());
    for (const char* name :
         {"mp_services", "mp_endpoints", "mp_rings", "mp_conns", "mp_rnat", "mp_half", "mp_hrnat",
          "mp_svc_tmo", "mp_node", "mp_svc_stats", "mp_ep_stats", "mp_exc", "mp_ep_health"}) {
      EXPECT_TRUE(std::filesystem::exists(root + "/" + name)) << name;
    }
    for (const char* name : {"mp_nh_cache", "mp_nh_client", "mp_flow_cache", "mp_snat_full",
                             "mp_snat_tmp", "mp_promote_tmp"}) {
      EXPECT_FALSE(std::filesystem::exists(root + "/" + name)) << name << ": not state";
    }
    mp_node_cfg node{};
    node.n_addr4 = 2;
    node.addr4[0][0] = 10;
    node.addr4[1][0] = 11;
    node.snat_port_min = 61000;
    node.snat_port_max = 61999;
    const uint32_t zero = 0;
    ASSERT_EQ(bpf_map_update_elem((*first)->nodeFd(), &zero, &node, BPF_ANY), 0);
  }  // the daemon goes away; its pinned maps stay

  auto second = LbSkeleton::open({.pinRoot = root, .connTableSize = 1024});
  ASSERT_TRUE(second) << second.error().toString();
  EXPECT_TRUE((*second)->adopted());
  mp_node_cfg node{};
  const uint32_t zero = 0;
  ASSERT_EQ(bpf_map_lookup_elem((*second)->nodeFd(), &zero, &node), 0);
  EXPECT_EQ(node.snat_port_max, 61999);
  EXPECT_EQ(node.n_addr4, 2);
  EXPECT_EQ(node.addr4[1][0], 11);

  auto resized = LbSkeleton::open({.pinRoot = root, .connTableSize = 2048});
  EXPECT_FALSE(resized) << "a pinned conn table of another size is not silently replaced";
  resized = LbSkeleton::open({.pinRoot = root, .connTableSize = 1024, .halfTableSize = 2048});
  EXPECT_FALSE(resized) << "nor a pinned half-open table";

  second = LbSkeleton::open({.pinRoot = "", .connTableSize = 1024});  // drop the pinned one
  std::filesystem::remove_all(root);
}

TEST_F(LbSkeletonTest, RingMapsFitMpRingsAndStartEmpty) {
  auto lb = LbSkeleton::open({.pinRoot = "", .connTableSize = 1024});
  ASSERT_TRUE(lb) << lb.error().toString();
  for (uint32_t size : {7u, 65537u}) {
    auto ring = LbSkeleton::createRingMap(size);
    ASSERT_TRUE(ring) << ring.error().toString();
    const int fd = ring->get();
    // Any service id up to the last one (MP_MAX_SERVICES - 1), none beyond.
    for (uint32_t svc : {3u, uint32_t{MP_MAX_SERVICES - 1}}) {
      EXPECT_EQ(bpf_map_update_elem((*lb)->ringsFd(), &svc, &fd, BPF_ANY), 0) << size;
    }
    const uint32_t beyond = MP_MAX_SERVICES;
    EXPECT_NE(bpf_map_update_elem((*lb)->ringsFd(), &beyond, &fd, BPF_ANY), 0);
    for (uint32_t slot : {0u, size, 2 * size - 1}) {
      uint32_t value = 0;
      ASSERT_EQ(bpf_map_lookup_elem(fd, &slot, &value), 0);
      EXPECT_EQ(value, MP_RING_EMPTY);
    }
  }
  EXPECT_EQ(LbSkeleton::createRingMap(0).error().errnum, EINVAL);
  EXPECT_EQ(LbSkeleton::createRingMap(MP_RING_SIZE_MAX + 1).error().errnum, EINVAL);
}

TEST_F(LbSkeletonTest, WriteRingPublishesOneHalfThenFlips) {
  auto lb = LbSkeleton::open({.pinRoot = "", .connTableSize = 1024});
  ASSERT_TRUE(lb) << lb.error().toString();
  auto ring = LbSkeleton::createRingMap(5);
  ASSERT_TRUE(ring);
  mp_svc_key key{};
  key.addr[0] = 10;
  key.port = htons(80);
  key.proto = 6;
  key.family = MP_AF_INET;
  mp_svc svc{};
  svc.id = 9;
  svc.ring_size = 5;

  EXPECT_EQ((*lb)->writeRing(key, svc, ring->get(), 2, {1, 2, 3, 4, 5}).error().errnum, EINVAL);
  EXPECT_EQ((*lb)->writeRing(key, svc, ring->get(), 0, {1, 2, 3}).error().errnum, EINVAL);
  mp_svc stored{};
  EXPECT_NE(bpf_map_lookup_elem((*lb)->servicesFd(), &key, &stored), 0)
      << "a refused write publishes nothing";

  auto status = (*lb)->writeRing(key, svc, ring->get(), 1, {1, 2, 3, 4, 5});
  ASSERT_TRUE(status) << status.error().toString();
  ASSERT_EQ(bpf_map_lookup_elem((*lb)->servicesFd(), &key, &stored), 0);
  EXPECT_EQ(stored.active_half, 1u);
  EXPECT_EQ(stored.ring_size, 5u);
  for (uint32_t i = 0; i < 5; ++i) {
    uint32_t lower = 0, upper = 0, index = 5 + i;
    ASSERT_EQ(bpf_map_lookup_elem(ring->get(), &i, &lower), 0);
    ASSERT_EQ(bpf_map_lookup_elem(ring->get(), &index, &upper), 0);
    EXPECT_EQ(lower, MP_RING_EMPTY) << "the other half is untouched";
    EXPECT_EQ(upper, i + 1);
  }
  uint32_t innerId = 0;
  EXPECT_EQ(bpf_map_lookup_elem((*lb)->ringsFd(), &svc.id, &innerId), 0)
      << "mp_rings holds the ring";
}

// A ring created with its slots holds them in both halves; a later write of a half with what it
// holds (`previous`) touches only the slots that differ from it.
TEST_F(LbSkeletonTest, RingMapsStartFilledAndHalfWritesTouchOnlyChangedSlots) {
  const std::vector<uint32_t> fill{1, 2, 3, 4, 5};
  EXPECT_EQ(LbSkeleton::createRingMap(4, &fill).error().errnum, EINVAL);
  auto ring = LbSkeleton::createRingMap(5, &fill);
  ASSERT_TRUE(ring) << ring.error().toString();
  auto slot = [&](uint32_t index) {
    uint32_t value = 0;
    EXPECT_EQ(bpf_map_lookup_elem(ring->get(), &index, &value), 0);
    return value;
  };
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(slot(i), fill[i]);
    EXPECT_EQ(slot(5 + i), fill[i]);
  }
  // Slot 2 of half 0 changed behind the caller's back: a write that says slot 2 holds 3 and
  // wants 3 leaves it alone, and writes the slots whose wanted value differs.
  const uint32_t poked = 2, odd = 42;
  ASSERT_EQ(bpf_map_update_elem(ring->get(), &poked, &odd, BPF_ANY), 0);
  auto status = LbSkeleton::writeRingHalf(ring->get(), 0, {9, 2, 3, 4, 8}, &fill);
  ASSERT_TRUE(status) << status.error().toString();
  EXPECT_EQ(slot(0), 9u);
  EXPECT_EQ(slot(2), odd) << "an unchanged slot is not written";
  EXPECT_EQ(slot(4), 8u);
  EXPECT_EQ(slot(5), 1u) << "the other half is untouched";
  const std::vector<uint32_t> shorter{1, 2};
  EXPECT_EQ(LbSkeleton::writeRingHalf(ring->get(), 0, fill, &shorter).error().errnum, EINVAL);
}

// The flow cache's size: a power of two in [2, MP_FLOW_CACHE_SLOTS_MAX], or 0 for none; any
// other is refused with its number in the message. A slot that would live less than one tick
// (flowCacheTtlNs) turns the cache off.
TEST_F(LbSkeletonTest, FlowCacheSizeIsCheckedAndTooShortALifeTurnsItOff) {
  timespec res{};
  ASSERT_EQ(::clock_getres(CLOCK_MONOTONIC_COARSE, &res), 0);
  const uint64_t tick = static_cast<uint64_t>(res.tv_nsec);  // the loader's tick
  ASSERT_GT(tick, 0u);
  struct Case {
    std::string what;
    uint32_t slots;
    uint64_t ttl = MP_FLOW_CACHE_TTL_NS_DEFAULT;
    uint32_t loaded = 0;  // flowCacheSlots() after the load
    std::string error{};  // "": the load succeeds; else in its message
  };
  // Two loads (a load is half a second of verifier): the errors come before any.
  const Case cases[] = {
      {.what = "one slot", .slots = 1, .error = "flow cache slots 1 "},
      {.what = "not a power of two", .slots = 3, .error = "flow cache slots 3 "},
      {.what = "not a power of two, large", .slots = 65535, .error = "flow cache slots 65535 "},
      {.what = "beyond the largest",
       .slots = MP_FLOW_CACHE_SLOTS_MAX * 2,
       .error = "flow cache slots 8388608 "},
      {.what = "the smallest, living one tick", .slots = 2, .ttl = tick, .loaded = 2},
      {.what = "a slot life under a tick", .slots = 1024, .ttl = tick - 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    LbSkeletonOptions options;
    options.connTableSize = 1024;
    options.halfTableSize = 1024;
    options.flowCacheSlots = c.slots;
    options.flowCacheTtlNs = c.ttl;
    auto lb = LbSkeleton::open(options);
    if (!c.error.empty()) {
      ASSERT_FALSE(lb);
      EXPECT_EQ(lb.error().errnum, EINVAL);
      EXPECT_NE(lb.error().toString().find(c.error), std::string::npos) << lb.error().toString();
      continue;
    }
    ASSERT_TRUE(lb) << lb.error().toString();
    EXPECT_EQ((*lb)->flowCacheSlots(), c.loaded);
    auto stats = (*lb)->flowCacheStats();
    ASSERT_TRUE(stats) << stats.error().toString();
    EXPECT_EQ(stats->hits + stats->misses + stats->conflicts + stats->bypassed, 0u);
  }
}

TEST_F(LbSkeletonTest, TableSizesOfZeroAreRefused) {
  for (const auto& [conn, half] : {std::pair{0u, 1024u}, std::pair{1024u, 0u}}) {
    auto lb = LbSkeleton::open({.pinRoot = "", .connTableSize = conn, .halfTableSize = half});
    ASSERT_FALSE(lb);
    EXPECT_EQ(lb.error().errnum, EINVAL);
  }
}

// The program's clock (mp_xdp_clock) is the kernel's jiffies, and lifetimes convert into it
// rounded up: an entry never lives shorter than its configured time.
TEST_F(LbSkeletonTest, JiffiesAreTheKernelsTickAndLifetimesRoundUp) {
  auto lb = LbSkeleton::open({.pinRoot = "", .connTableSize = 1024, .halfTableSize = 1024});
  ASSERT_TRUE(lb) << lb.error().toString();
  timespec res{};
  ASSERT_EQ(::clock_getres(CLOCK_MONOTONIC_COARSE, &res), 0);
  const uint64_t tick = static_cast<uint64_t>(res.tv_nsec);
  EXPECT_EQ((*lb)->tickNs(), tick);
  const uint64_t tickMs = tick / 1'000'000;
  ASSERT_GE(tickMs, 1u);
  EXPECT_EQ((*lb)->msToJiffies(0), 0u);
  EXPECT_EQ((*lb)->msToJiffies(tickMs), 1u);
  EXPECT_EQ((*lb)->msToJiffies(tickMs + 1), 2u);
  EXPECT_EQ((*lb)->msToJiffies(1000), (1'000'000'000 + tick - 1) / tick);

  auto before = (*lb)->jiffiesNow();
  ASSERT_TRUE(before) << before.error().toString();
  ::usleep(static_cast<useconds_t>(5 * tick / 1000));
  auto after = (*lb)->jiffiesNow();
  ASSERT_TRUE(after) << after.error().toString();
  EXPECT_GE(*after - *before, 4u) << "five ticks slept";
  EXPECT_LE(*after - *before, 200u);
}

}  // namespace
}  // namespace meshpath
