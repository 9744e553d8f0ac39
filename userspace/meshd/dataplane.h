// dataplane.h — what meshd asks of a packet path (XDP today, DPDK later), in terms of realized
// state: the node's own settings, endpoint slots, services with their Maglev rings, counters.
// The reconciler decides the order of operations; a backend only makes each one atomic and
// reports failures as Result values, never exceptions.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model.h"
#include "result.h"

namespace meshpath {

// How packets find a service: (VIP, port, protocol).
struct ServiceKey {
  IpAddress vip;
  uint16_t port = 0;  // host order
  Protocol protocol = Protocol::kTcp;

  bool operator==(const ServiceKey&) const = default;
  auto operator<=>(const ServiceKey&) const = default;
  std::string toString() const;  // "tcp 10.0.0.100:80"
};

// One service as the dataplane holds it.
struct ServiceEntry {
  ServiceKey key;
  uint32_t id = 0;        // 0..MP_MAX_SERVICES-1: ring and counter index
  uint32_t ringSize = 0;  // Maglev M
  Algorithm algorithm = Algorithm::kMaglev;
  ForwardingMode forwarding = ForwardingMode::kNat;
  ConnTimeouts timeouts;
  SynProtection synProtection = SynProtection::kOff;  // effective: off for UDP
  uint32_t connectRetries = 0;                        // 0..7, TCP

  bool operator==(const ServiceEntry&) const = default;
};

// One endpoint slot: where packets of the service svcId go when the ring picks this id.
struct EndpointEntry {
  IpAddress address;
  uint16_t port = 0;  // host order
  uint32_t serviceId = 0;

  bool operator==(const EndpointEntry&) const = default;
};

struct Counters {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  uint64_t newConns = 0;
};

// The flow cache's size and counters, summed over CPUs (abi.h, struct mp_flow_cache_stats).
struct FlowCacheStats {
  uint32_t slots = 0;  // per CPU; 0: no cache
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t conflicts = 0;  // of the misses: another live flow held the slot
  uint64_t bypassed = 0;   // packets that skipped the cache while it thrashed
};

// One service's SYN protection as the datapath keeps it (bpf/abi.h, struct mp_syn_counters summed
// over CPUs, and struct mp_syn_guard, the auto switch).
struct SynStats {
  uint64_t cookiesSent = 0;    // SYN-ACKs with a cookie
  uint64_t acksValid = 0;      // ACKs with a valid cookie: connections opened to an endpoint
  uint64_t acksInvalid = 0;    // ACKs with a bad, old or no cookie: dropped
  uint64_t retries = 0;        // endpoint SYNs refused or unanswered, tried on another endpoint
  uint64_t retriesFailed = 0;  // out of retries: the client got a RST
  bool active = false;         // auto: the proxy answers the service's SYNs now
  uint64_t switchedOn = 0;     // times auto turned it on, since the service id was assigned
  uint64_t switchedOff = 0;
  uint32_t lastUnanswered = 0;  // unanswered SYNs in the last full one-second window
};

// The per-CPU counters of some services and endpoints, each read once and summed over CPUs
// (Dataplane::readCounterSnapshot): what a scrape of /metrics and GET /v1/stats show.
struct CounterSnapshot {
  std::vector<Counters> services;    // in the order of the service ids asked
  std::vector<SynStats> syn;         // likewise
  std::vector<Counters> endpoints;   // in the order of the endpoint ids asked
  std::vector<uint64_t> exceptions;  // indexed by enum mp_exc_reason (MP_EXC_MAX of them)
  FlowCacheStats flowCache;
};

// The connection tables: how full they are and what a connection costs (bpf/README.md,
// "Connection state"). Counts are the last recount's (every ~10 s), capacities as loaded.
struct ConnTableStats {
  uint64_t established = 0;  // connections in the established table
  uint64_t halfOpen = 0;     // flows in the half-open table (SYN, or UDP not answered)
  uint64_t establishedCapacity = 0;
  uint64_t halfOpenCapacity = 0;
  uint64_t expiredReaped = 0;  // expired entries the recounts deleted, since start
  // Kernel memory per tracked connection, both its entries (connection + reverse NAT), buckets
  // included: what `conn_table_size` costs per entry.
  uint64_t bytesPerConnection = 0;      // full NAT
  uint64_t bytesPerDnatConnection = 0;  // dnat: the connection entry alone
  uint64_t bytesPerHalfOpen = 0;
  // Endpoint id -> SNAT ports its tracked connections hold (established and half-open).
  std::map<uint32_t, uint64_t> snatPortsInUse;
};

// What a dataplane already holds when meshd starts (pinned maps of an earlier run).
struct RealizedSnapshot {
  std::vector<ServiceEntry> services;  // entries of the service table
  std::vector<uint32_t> ringIds;       // service ids that own a ring (may include stale ones)
  std::vector<std::pair<uint32_t, EndpointEntry>> endpoints;  // slots in use
};

struct InterfaceStatus {
  std::string name;
  int ifindex = 0;
  bool attached = false;  // our program is the one attached right now
  std::string mode;       // "native" | "generic" | "" when not attached
  bool adopted = false;   // an existing pinned link was taken over at start
};

// The packet program a dataplane runs now (metrics' build info, `meshctl status`, upgrades).
struct ProgramInfo {
  std::string name;  // "mp_xdp_lb"
  std::string tag;   // the kernel's program tag: 16 hex digits, a hash of the instructions
  uint32_t id = 0;   // the kernel's program id (bpftool prog show id N)
};

// What an upgrade of the packet program in place did (Dataplane::upgrade).
struct UpgradeReport {
  ProgramInfo from;
  ProgramInfo to;
  struct Interface {
    std::string name;
    bool switched = false;  // runs `to` now
    std::string error;      // why its switch failed
  };
  std::vector<Interface> interfaces;
  // A pinned map whose layout changed between the two programs, converted into a new map.
  struct Migration {
    std::string map;
    uint32_t fromVersion = 0;
    uint32_t toVersion = 0;
    uint64_t copied = 0;   // entries copied before the switch
    uint64_t changed = 0;  // entries the old program added or changed meanwhile, copied after
    double copyMs = 0;
    double deltaMs = 0;
  };
  std::vector<Migration> migrations;
  bool complete = false;  // every interface runs `to`, every migration is pinned
  std::string problem;    // when not complete: what happened, and where the node stands
  double loadMs = 0;      // loading `to` (with the migrations' first copies)
  double switchMs = 0;    // switching every link
  double totalMs = 0;
};

// An endpoint's passive health as the datapath keeps it (bpf/abi.h, struct mp_ep_health).
struct EndpointDatapathHealth {
  uint32_t fails = 0;       // consecutive passive failures
  bool down = false;        // marked down by the datapath: new flows skip it
  uint64_t downNs = 0;      // CLOCK_MONOTONIC ns when it was marked down
  uint32_t fall = 0;        // the threshold meshd set; 0 = passive detection off
  int64_t activeConns = 0;  // TCP connections open toward it (opened - closed + adjust)
  uint64_t rttNs = 0;       // moving average of SYN -> SYN-ACK; 0 = no sample yet
};

// One passive transition reported by the datapath (struct mp_health_event).
struct DatapathEvent {
  uint64_t ns = 0;  // CLOCK_MONOTONIC
  uint32_t endpointId = 0;
  uint8_t kind = 0;    // enum mp_hev_kind
  uint8_t reason = 0;  // enum mp_passive_reason
  uint32_t fails = 0;  // consecutive failures after this event
};

// What a walk of the connection table found.
struct ConnWalk {
  uint64_t entries = 0;  // entries seen
  uint64_t matched = 0;  // flush: entries deleted; resync: open counted connections
  std::map<uint32_t, int64_t> perEndpoint;  // resync: endpoint id -> open counted connections
  uint64_t expired = 0;                     // resync: expired entries deleted
  uint64_t halfOpen = 0;                    // resync: entries of the half-open table
  std::map<uint32_t, uint64_t> snatPorts;   // resync: endpoint id -> SNAT ports held
};

// One walk of the connection table in progress (a flush or a recount).
class ConnTableWalk {
 public:
  virtual ~ConnTableWalk() = default;
  // Walks and acts on the next part of the table (about `budget` of work, at least one batch);
  // returns true when the walk is complete. After an error the walk is over: drop it.
  virtual Result<bool> step(std::chrono::microseconds budget) = 0;
  // What the walk found so far; final once step() returned true.
  virtual const ConnWalk& result() const = 0;
};

// Runs a walk to its end in one call (tools, tests; never on meshd's event loop).
inline Result<ConnWalk> finishWalk(ConnTableWalk& walk) {
  for (;;) {
    auto done = walk.step(std::chrono::microseconds::max());
    if (!done) return done.error();
    if (*done) return walk.result();
  }
}

class Dataplane {
 public:
  virtual ~Dataplane() = default;

  // The node's SNAT addresses and port range.
  virtual Result<void> setNode(const NodeSpec& node) = 0;

  // Fills (or rewrites) endpoint slot id. A slot that was free starts with zeroed counters.
  virtual Result<void> upsertEndpoint(uint32_t id, const EndpointEntry& endpoint) = 0;
  // Frees slot id and zeroes its counters. The caller has already taken it out of every ring.
  virtual Result<void> removeEndpoint(uint32_t id) = 0;

  // Publishes a service. With a ring (exactly ringSize endpoint ids, MP_RING_EMPTY for none),
  // the ring goes into the half packets do not read, then one update of the service entry points
  // packets at it, so no packet sees a half-written ring. Without a ring the service keeps the
  // ring it has (a changed key or mode only); it is an error if it has none.
  virtual Result<void> upsertService(const ServiceEntry& service,
                                     const std::vector<uint32_t>* ring) = 0;
  // Removes the lookup entry: from now on packets to this VIP pass to the kernel untouched.
  virtual Result<void> removeServiceEntry(const ServiceKey& key) = 0;
  // Drops the ring and zeroes the counters (SYN protection's too) of a service id that no entry
  // points at any more.
  virtual Result<void> releaseService(uint32_t id) = 0;
  // Publishes what upsertService held back to do many at once: the XDP backend installs the rings
  // of new services in one batch, since each single update of a map of maps waits for an RCU
  // grace period (9 ms here; 10,000 new services would take 90 s one by one). A new service
  // forwards from here on. The reconciler calls it at the end of every converge.
  virtual Result<void> flush() { return {}; }

  virtual Result<Counters> serviceStats(uint32_t id) = 0;   // summed over CPUs
  virtual Result<Counters> endpointStats(uint32_t id) = 0;  // summed over CPUs
  // Exception counters indexed by enum mp_exc_reason (MP_EXC_MAX of them), summed over CPUs.
  virtual Result<std::vector<uint64_t>> exceptionCounts() = 0;
  virtual Result<FlowCacheStats> flowCacheStats() = 0;
  // The SYN protection counters and auto switch of a service id.
  virtual Result<SynStats> synStats(uint32_t serviceId) = 0;
  virtual Result<ConnTableStats> connTableStats() = 0;
  // The counters of these services (SYN protection's included) and endpoints, the exception
  // counters and the flow cache's, all in one read. A backend that reads a whole map in one call
  // overrides it (BpfDataplane: BPF_MAP_LOOKUP_BATCH); this one asks key by key.
  virtual Result<CounterSnapshot> readCounterSnapshot(const std::vector<uint32_t>& serviceIds,
                                                      const std::vector<uint32_t>& endpointIds) {
    CounterSnapshot out;
    out.services.reserve(serviceIds.size());
    out.syn.reserve(serviceIds.size());
    for (const uint32_t id : serviceIds) {
      auto counters = serviceStats(id);
      if (!counters) return counters.error();
      out.services.push_back(*counters);
      auto syn = synStats(id);
      if (!syn) return syn.error();
      out.syn.push_back(*syn);
    }
    out.endpoints.reserve(endpointIds.size());
    for (const uint32_t id : endpointIds) {
      auto counters = endpointStats(id);
      if (!counters) return counters.error();
      out.endpoints.push_back(*counters);
    }
    auto exc = exceptionCounts();
    if (!exc) return exc.error();
    out.exceptions = std::move(*exc);
    auto fc = flowCacheStats();
    if (!fc) return fc.error();
    out.flowCache = *fc;
    return out;
  }

  // What is in the tables now; used once at start to adopt an earlier run's state.
  virtual Result<RealizedSnapshot> snapshot() = 0;

  virtual std::vector<InterfaceStatus> interfaces() = 0;
  virtual Result<ProgramInfo> program() = 0;
  // Replaces the running packet program by a fresh load of this build's, keeping every map
  // (migrating those whose layout changed) and every attachment, with no packet missed. An error:
  // nothing changed. A report that is not complete says what did.
  virtual Result<UpgradeReport> upgrade() {
    return Error{EOPNOTSUPP, "upgrade the packet program", "this dataplane cannot"};
  }
  // upgrade() without holding the caller's event loop while the new program loads and is
  // verified (1-3 s): that part runs on a thread of its own; the switch, and `done` with the
  // result, run on the caller's loop through `post`. One at a time: EBUSY while one loads.
  using Post = std::function<void(std::function<void()>)>;
  virtual void upgradeInBackground(Post post, std::function<void(Result<UpgradeReport>)> done) {
    post([this, done = std::move(done)] { done(upgrade()); });
  }
  // Joins a background upgrade's thread; before the loop it posts to goes away.
  virtual void waitForUpgrade() {}
  virtual std::string pinRoot() const = 0;

  // ---- passive health (bpf/abi.h, mp_ep_health, mp_events) ----------------------------------
  // Every call below touches single fields with atomic operations, never a whole entry: the
  // datapath counts into the same entries at the same time.

  // The failures that make the datapath mark slot id down (0: passive detection off).
  virtual Result<void> setPassiveFall(uint32_t id, uint32_t fall) = 0;
  // Clears the datapath's down mark of slot id and resets its failure count.
  virtual Result<void> clearDown(uint32_t id) = 0;
  virtual Result<EndpointDatapathHealth> endpointHealth(uint32_t id) = 0;
  // Walks of the connection table, done a step at a time (ConnTableWalk) so that a full table
  // (1M entries, ~0.35 s, conn_walk.h) never holds the caller's event loop in one piece.
  // Deletes every connection-table entry whose endpoint is in `ids` (so a client retrying the
  // same 5-tuple is balanced anew), keeping the active-connection counts right.
  virtual Result<std::unique_ptr<ConnTableWalk>> startFlush(const std::set<uint32_t>& ids) = 0;
  // Recounts the open connections per endpoint from the connection tables, deletes the entries
  // whose lifetime ran out (and their reverse-NAT entries, freeing their SNAT ports), and
  // corrects the counts for entries that left silently (the half-open table's LRU evictions);
  // the counts change when the walk completes. Endpoints flushed, freed or reused while it runs
  // are left as they are.
  virtual Result<std::unique_ptr<ConnTableWalk>> startResync() = 0;
  // Datapath health events: a descriptor that turns readable when events wait (-1: this
  // backend has none), and the call that hands each waiting one to `sink`.
  virtual int eventsFd() = 0;
  virtual Result<size_t> consumeEvents(const std::function<void(const DatapathEvent&)>& sink) = 0;
};

}  // namespace meshpath
