// conn_walk_measure — how long meshd's event loop is held by the connection-table walks, on real
// tables shaped like the datapath's: a full 1M-entry hash of established connections (mp_conns)
// with its 1M reverse-NAT entries (mp_rnat), an eighth of them expired, and a full 256k-entry LRU
// of half-open flows (mp_half). Runs a recount (which reaps the expired connections and their
// reverse entries), a flush of one endpoint's connections, and a second recount (nothing left to
// reap) through ConnTableWalker on an io_context, the way meshd does, while a 1 ms timer stands
// in for the probes. Prints the longest turn a walk step took, the timer's worst lateness, and
// each walk's total time. Needs root (BPF); not part of ctest.
#include <bpf/bpf.h>
#include <sys/mman.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "conn_table_walker.h"
#include "conn_walk.h"

namespace {

using namespace meshpath;
using Clock = std::chrono::steady_clock;
constexpr uint32_t kEntries = 1u << 20;      // established connections (conn_table_size)
constexpr uint32_t kHalfEntries = 1u << 18;  // half-open flows (half_table_size)
constexpr uint32_t kExpiredEvery = 8;        // one established connection in 8 has expired
constexpr uint32_t kEndpoints = 64;
constexpr uint64_t kNow = 1'000'000;  // the program's jiffies when a recount begins

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Client tuple n (the forward key) and its reverse key: distinct for every n, and the reverse key
// is a function of the forward one, as the datapath's (endpoint -> node:port) is of the entry.
mp_flow clientKey(uint32_t n) {
  mp_flow k{};
  std::memcpy(k.src, &n, sizeof(n));
  k.proto = 6;
  k.family = MP_AF_INET;
  return k;
}
mp_flow reverseOf(const mp_flow& client) {
  mp_flow k = client;
  k.dst[4] = 1;
  return k;
}

// The walks of the tables and a health array, timed step by step.
class MeasuredDataplane : public Dataplane {
 public:
  MeasuredDataplane(const ConnTables& tables, mp_ep_health* health)
      : tables_(tables), health_(health) {}
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
  Result<ConnTableStats> connTableStats() override { return ConnTableStats{}; }
  Result<SynStats> synStats(uint32_t) override { return SynStats{}; }
  Result<RealizedSnapshot> snapshot() override { return RealizedSnapshot{}; }
  std::vector<InterfaceStatus> interfaces() override { return {}; }
  Result<ProgramInfo> program() override { return ProgramInfo{}; }
  std::string pinRoot() const override { return ""; }
  Result<void> setPassiveFall(uint32_t, uint32_t) override { return {}; }
  Result<void> clearDown(uint32_t) override { return {}; }
  Result<EndpointDatapathHealth> endpointHealth(uint32_t) override {
    return EndpointDatapathHealth{};
  }
  Result<std::unique_ptr<ConnTableWalk>> startFlush(const std::set<uint32_t>& ids) override {
    return wrap(std::make_unique<FlushWalk>(tables_.conns, health_, epochs_, ids));
  }
  Result<std::unique_ptr<ConnTableWalk>> startResync() override {
    const auto t = Clock::now();
    auto w = std::make_unique<ResyncWalk>(tables_, kNow, health_, epochs_);
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
  ConnTables tables_;
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
      "fired %d times, at most %.2f ms late; %lu entries (%lu half-open), %lu matched, %lu "
      "expired reaped\n",
      what, ms(Clock::now() - start), dp.steps, ms(dp.longest), ms(firstCall), ticks, ms(late),
      static_cast<unsigned long>(got.entries), static_cast<unsigned long>(got.halfOpen),
      static_cast<unsigned long>(got.matched), static_cast<unsigned long>(got.expired));
}

// Entries of a table keyed by mp_flow.
size_t entriesOf(int fd) {
  size_t n = 0;
  mp_flow key{}, next{};
  const mp_flow* at = nullptr;
  while (bpf_map_get_next_key(fd, at, &next) == 0) {
    ++n;
    key = next;
    at = &key;
  }
  return n;
}

// Fills fd with count entries in batches: key(n), value(n).
template <class V, class KeyFn, class ValueFn>
bool fill(int fd, uint32_t count, KeyFn key, ValueFn value, const char* what) {
  const uint32_t chunk = 65536;
  std::vector<mp_flow> keys(chunk);
  std::vector<V> values(chunk);
  for (uint32_t base = 0; base < count; base += chunk) {
    const uint32_t n = std::min(chunk, count - base);
    for (uint32_t i = 0; i < n; ++i) {
      keys[i] = key(base + i);
      values[i] = value(base + i);
    }
    uint32_t done = n;
    LIBBPF_OPTS(bpf_map_batch_opts, bopts);
    if (bpf_map_update_batch(fd, keys.data(), values.data(), &done, &bopts) != 0) {
      std::fprintf(stderr, "fill %s: %s\n", what, std::strerror(errno));
      return false;
    }
  }
  return true;
}

}  // namespace

int main() {
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  ConnTables tables;
  tables.conns = bpf_map_create(BPF_MAP_TYPE_HASH, "mp_conns_meas", sizeof(mp_flow),
                                sizeof(mp_conn), kEntries, &opts);
  tables.rnat = bpf_map_create(BPF_MAP_TYPE_HASH, "mp_rnat_meas", sizeof(mp_flow), sizeof(mp_rnat),
                               kEntries, &opts);
  tables.half = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "mp_half_meas", sizeof(mp_flow),
                               sizeof(mp_conn), kHalfEntries, &opts);
  if (tables.conns < 0 || tables.rnat < 0 || tables.half < 0) {
    std::perror("bpf_map_create (root?)");
    return 1;
  }
  tables.reverseKey = [](const mp_flow& client, const mp_conn&) -> std::optional<mp_flow> {
    return reverseOf(client);
  };
  const size_t healthBytes = sizeof(mp_ep_health) * MP_MAX_ENDPOINTS;
  auto* health = static_cast<mp_ep_health*>(
      mmap(nullptr, healthBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  std::memset(health, 0, healthBytes);
  // Every key distinct, endpoints 0..63 in turn, all counted open; one in kExpiredEvery expired.
  const auto conn = [](uint32_t n) {
    mp_conn v{};
    v.ep_id = n % kEndpoints;
    v.flags = MP_CONN_F_COUNTED;
    v.snat_port = static_cast<uint16_t>(1024 + n % 60000);
    v.expires = n % kExpiredEvery == 0 ? kNow - 1 : kNow + 1'000'000;
    return v;
  };
  const auto rnat = [](uint32_t n) {
    const mp_flow client = clientKey(n);
    mp_rnat r{};
    std::memcpy(r.client, client.src, sizeof(r.client));
    std::memcpy(r.vip, client.dst, sizeof(r.vip));
    r.client_port = client.sport;
    r.vip_port = client.dport;
    r.ep_id = n % kEndpoints;
    return r;
  };
  const auto halfOpen = [](uint32_t n) {
    mp_conn v{};
    v.ep_id = n % kEndpoints;
    v.flags = MP_CONN_F_SYN_SENT;
    v.expires = kNow + 1000;
    return v;
  };
  if (!fill<mp_conn>(tables.conns, kEntries, clientKey, conn, "mp_conns") ||
      !fill<mp_rnat>(
          tables.rnat, kEntries, [](uint32_t n) { return reverseOf(clientKey(n)); }, rnat,
          "mp_rnat") ||
      !fill<mp_conn>(
          tables.half, kHalfEntries, [](uint32_t n) { return clientKey(kEntries + n); }, halfOpen,
          "mp_half")) {
    return 1;
  }
  for (uint32_t id = 0; id < kEndpoints; ++id) health[id].opened = kEntries / kEndpoints;
  MeasuredDataplane dp(tables, health);
  run("resync", dp, false);
  run("flush", dp, true);
  run("resync", dp, false);
  // Endpoint 7 (flushed) had no expired connection; every one of endpoint 8's had expired
  // (8 % kExpiredEvery == 0); endpoint 9's are all alive.
  static_assert(kEndpoints % kExpiredEvery == 0 && 7 % kExpiredEvery != 0);
  for (uint32_t id : {7u, 8u, 9u}) {
    std::printf("endpoint %u: adjust %ld, active %ld\n", id, static_cast<long>(health[id].adjust),
                static_cast<long>(health[id].opened - health[id].closed + health[id].adjust));
  }
  std::printf("left: %zu established, %zu reverse entries, %zu half-open (expected %u, %u, %u)\n",
              entriesOf(tables.conns), entriesOf(tables.rnat), entriesOf(tables.half),
              kEntries - kEntries / kExpiredEvery - kEntries / kEndpoints,
              kEntries - kEntries / kExpiredEvery, kHalfEntries);
  return 0;
}
