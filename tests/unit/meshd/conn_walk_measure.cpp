// conn_walk_measure — how long meshd's event loop is held by the connection-table walks, on a
// real 1M-entry LRU hash shaped like mp_conns: fills it, then runs a recount and a flush of one
// endpoint's entries through ConnTableWalker on an io_context, the way meshd does, while a 1 ms
// timer stands in for the probes. Prints the longest turn a walk step took, the timer's worst
// lateness, and each walk's total time. Needs root (BPF); not part of ctest.
#include <bpf/bpf.h>
#include <sys/mman.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "conn_table_walker.h"
#include "conn_walk.h"

namespace {

using namespace meshpath;
using Clock = std::chrono::steady_clock;
constexpr uint32_t kEntries = 1u << 20;
constexpr uint32_t kEndpoints = 64;

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The walks of a table and a health array, timed step by step.
class MeasuredDataplane : public Dataplane {
 public:
  MeasuredDataplane(int fd, mp_ep_health* health) : fd_(fd), health_(health) {}
  Result<void> setNode(const NodeSpec&) override { return {}; }
  Result<void> upsertEndpoint(uint32_t, const EndpointEntry&) override { return {}; }
  Result<void> removeEndpoint(uint32_t) override { return {}; }
  Result<void> upsertService(const ServiceEntry&, const std::vector<uint32_t>*) override {
    return {};
  }
  Result<void> removeServiceEntry(const ServiceKey&) override { return {}; }
  Result<void> releaseService(uint32_t) override { return {}; }
  Result<Counters> serviceStats(uint32_t) override { return Counters{}; }
  Result<Counters> endpointStats(uint32_t) override { return Counters{}; }
  Result<std::vector<uint64_t>> exceptionCounts() override { return std::vector<uint64_t>{}; }
  Result<FlowCacheStats> flowCacheStats() override { return FlowCacheStats{}; }
  Result<RealizedSnapshot> snapshot() override { return RealizedSnapshot{}; }
  std::vector<InterfaceStatus> interfaces() override { return {}; }
  std::string pinRoot() const override { return ""; }
  Result<void> setPassiveFall(uint32_t, uint32_t) override { return {}; }
  Result<void> clearDown(uint32_t) override { return {}; }
  Result<EndpointDatapathHealth> endpointHealth(uint32_t) override {
    return EndpointDatapathHealth{};
  }
  Result<std::unique_ptr<ConnTableWalk>> startFlush(const std::set<uint32_t>& ids) override {
    return wrap(std::make_unique<FlushWalk>(fd_, health_, epochs_, ids));
  }
  Result<std::unique_ptr<ConnTableWalk>> startResync() override {
    const auto t = Clock::now();
    auto w = std::make_unique<ResyncWalk>(fd_, health_, epochs_);
    longest = std::max(longest, Clock::now() - t);
    return wrap(std::move(w));
  }
  int eventsFd() override { return -1; }
  Result<size_t> consumeEvents(const std::function<void(const DatapathEvent&)>&) override {
    return size_t{0};
  }

  Clock::duration longest{};  // the longest single step (or start) of any walk
  int steps = 0;

 private:
  class Timed : public ConnTableWalk {
   public:
    Timed(MeasuredDataplane& dp, std::unique_ptr<ConnTableWalk> w) : dp_(dp), w_(std::move(w)) {}
    Result<bool> step(std::chrono::microseconds budget) override {
      const auto t = Clock::now();
      auto r = w_->step(budget);
      dp_.longest = std::max(dp_.longest, Clock::now() - t);
      ++dp_.steps;
      return r;
    }
    const ConnWalk& result() const override { return w_->result(); }

   private:
    MeasuredDataplane& dp_;
    std::unique_ptr<ConnTableWalk> w_;
  };
  Result<std::unique_ptr<ConnTableWalk>> wrap(std::unique_ptr<ConnTableWalk> w) {
    return std::unique_ptr<ConnTableWalk>(std::make_unique<Timed>(*this, std::move(w)));
  }
  int fd_;
  mp_ep_health* health_;
  std::vector<uint32_t> epochs_ = std::vector<uint32_t>(MP_MAX_ENDPOINTS, 0);
};

// Runs one walk on a fresh loop beside a 1 ms timer; prints what it cost.
void run(const char* what, MeasuredDataplane& dp, bool flush) {
  boost::asio::io_context io;
  ConnTableWalker walker(io, dp);
  boost::asio::steady_timer tick(io);
  Clock::duration late{};
  int ticks = 0;
  bool finished = false;
  std::function<void()> arm = [&] {
    const auto due = Clock::now() + std::chrono::milliseconds(1);
    tick.expires_at(due);
    tick.async_wait([&, due](const boost::system::error_code& ec) {
      if (ec || finished) return;
      late = std::max(late, Clock::now() - due);
      ++ticks;
      arm();
    });
  };
  dp.longest = {};
  dp.steps = 0;
  arm();
  const auto start = Clock::now();
  Clock::duration firstCall{};
  ConnWalk got;
  auto done = [&](const Result<ConnWalk>& w) {
    finished = true;
    tick.cancel();
    if (w) got = *w;
  };
  if (flush) {
    walker.flush({7}, done);
  } else {
    walker.resync(done);
  }
  firstCall = Clock::now() - start;
  io.run();
  std::printf(
      "%-7s total %7.1f ms, %4d steps, longest step %.2f ms, the call itself %.2f ms, 1 ms timer "
      "fired %d times, at most %.2f ms late; %lu entries, %lu matched\n",
      what, ms(Clock::now() - start), dp.steps, ms(dp.longest), ms(firstCall), ticks, ms(late),
      static_cast<unsigned long>(got.entries), static_cast<unsigned long>(got.matched));
}

}  // namespace

int main() {
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "mp_conns_meas", sizeof(mp_flow), sizeof(mp_conn),
                          kEntries, &opts);
  if (fd < 0) {
    std::perror("bpf_map_create (root?)");
    return 1;
  }
  const size_t healthBytes = sizeof(mp_ep_health) * MP_MAX_ENDPOINTS;
  auto* health = static_cast<mp_ep_health*>(
      mmap(nullptr, healthBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::memset(health, 0, healthBytes);
  // Fill in batches: every key distinct, endpoints 0..63 in turn, all counted open.
  const uint32_t chunk = 65536;
  std::vector<mp_flow> keys(chunk);
  std::vector<mp_conn> values(chunk);
  for (uint32_t base = 0; base < kEntries; base += chunk) {
    for (uint32_t i = 0; i < chunk; ++i) {
      mp_flow k{};
      const uint32_t n = base + i;
      std::memcpy(reinterpret_cast<char*>(&k), &n, sizeof(n));
      keys[i] = k;
      mp_conn v{};
      v.ep_id = n % kEndpoints;
      v.flags = MP_CONN_F_COUNTED;
      values[i] = v;
    }
    uint32_t count = chunk;
    LIBBPF_OPTS(bpf_map_batch_opts, bopts);
    if (bpf_map_update_batch(fd, keys.data(), values.data(), &count, &bopts) != 0) {
      std::perror("bpf_map_update_batch");
      return 1;
    }
  }
  for (uint32_t id = 0; id < kEndpoints; ++id) health[id].opened = kEntries / kEndpoints;
  MeasuredDataplane dp(fd, health);
  run("resync", dp, false);
  run("flush", dp, true);
  run("resync", dp, false);
  std::printf("adjust of endpoint 7 after its flush: %ld (active %ld); endpoint 8: %ld\n",
              static_cast<long>(health[7].adjust),
              static_cast<long>(health[7].opened - health[7].closed + health[7].adjust),
              static_cast<long>(health[8].adjust));
  return 0;
}
