// bpf_dataplane.h — the XDP backend of Dataplane: the balancer loaded through its skeleton
// (maps pinned under node.pin_root and reused from an earlier run), attached to every configured
// interface with a pinned bpf_link (pin_root/link_<ifname>), and the map operations the
// reconciler asks for.
//
// Start-up never detaches: an interface whose pinned link still exists keeps it, and the link is
// switched to the newly loaded program in one step (bpf_link_update), so packets flow throughout;
// upgrade() does the same while meshd runs (bpf_program.cpp). Exit never detaches either;
// teardown() is the one explicit way to remove links and maps.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "abi.h"
#include "conn_walk.h"
#include "dataplane.h"
#include "lb_skeleton.h"
#include "model.h"
#include "result.h"
#include "unique_fd.h"

struct bpf_link;
struct ring_buffer;

namespace meshpath {

class Netlink;

class BpfDataplane : public Dataplane {
 public:
  // Loads the program (reusing pinned maps), then attaches it to node.interfaces or adopts the
  // pinned links there. Links pinned for interfaces no longer configured are detached.
  static Result<std::unique_ptr<BpfDataplane>> start(const NodeSpec& node, Netlink& netlink);
  // Detaches every pinned link under pinRoot and removes all pins there (maps go with them).
  static Result<void> teardown(const std::string& pinRoot);

  ~BpfDataplane() override;  // closes our fds only: pinned links and maps stay

  // All maps were found pinned at start (an earlier meshd's tables were reused).
  bool mapsAdopted() const { return skel_->adopted(); }

  Result<void> setNode(const NodeSpec& node) override;
  Result<void> upsertEndpoint(uint32_t id, const EndpointEntry& endpoint) override;
  Result<void> removeEndpoint(uint32_t id) override;
  Result<void> upsertService(const ServiceEntry& service,
                             const std::vector<uint32_t>* ring) override;
  Result<void> removeServiceEntry(const ServiceKey& key) override;
  Result<void> releaseService(uint32_t id) override;
  Result<void> flush() override;
  Result<Counters> serviceStats(uint32_t id) override;
  Result<Counters> endpointStats(uint32_t id) override;
  Result<std::vector<uint64_t>> exceptionCounts() override;
  Result<FlowCacheStats> flowCacheStats() override;
  Result<ConnTableStats> connTableStats() override;
  Result<SynStats> synStats(uint32_t serviceId) override;
  // bpf_stats_read.cpp: each per-CPU counter map read with BPF_MAP_LOOKUP_BATCH.
  Result<CounterSnapshot> readCounterSnapshot(const std::vector<uint32_t>& serviceIds,
                                              const std::vector<uint32_t>& endpointIds) override;
  Result<RealizedSnapshot> snapshot() override;
  std::vector<InterfaceStatus> interfaces() override;
  Result<ProgramInfo> program() override;
  Result<UpgradeReport> upgrade() override;
  void upgradeInBackground(Post post, std::function<void(Result<UpgradeReport>)> done) override;
  void waitForUpgrade() override;
  std::string pinRoot() const override { return node_.pinRoot; }

  Result<void> setPassiveFall(uint32_t id, uint32_t fall) override;
  Result<void> clearDown(uint32_t id) override;
  Result<EndpointDatapathHealth> endpointHealth(uint32_t id) override;
  Result<std::unique_ptr<ConnTableWalk>> startFlush(const std::set<uint32_t>& ids) override;
  Result<std::unique_ptr<ConnTableWalk>> startResync() override;
  int eventsFd() override;
  Result<size_t> consumeEvents(const std::function<void(const DatapathEvent&)>& sink) override;

 private:
  struct Attachment {
    std::string ifname;
    bpf_link* link = nullptr;
    bool adopted = false;
  };
  // One service's ring map and which half packets read now. Its map is named by id, not held
  // open: mp_rings holds it, and an fd per ring would need 65,536 open files for as many
  // services (systemd starts services with 1,024). `pending`: the new map until flush() has
  // put it in mp_rings (nothing else holds it yet).
  struct Ring {
    uint32_t mapId = 0;
    UniqueFd pending;
    bool exists() const { return mapId != 0; }
    uint32_t ringSize = 0;
    uint32_t activeHalf = 0;
    // What both halves hold, so a change writes only the slots it changes; empty: not known
    // (a ring an earlier run left), so the next write covers every slot.
    std::vector<uint32_t> slots;
  };

  BpfDataplane(std::unique_ptr<LbSkeleton> skel, NodeSpec node);

  Result<void> loadRings();
  // The ring's map, opened by id for one write (a new ring's `pending` fd keeps it alive until
  // mp_rings holds it).
  Result<UniqueFd> openRing(const Ring& ring) const;
  Result<void> attach(const std::string& ifname, int ifindex);
  Result<void> detachStaleLinks();
  Result<Counters> readCounters(int fd, uint32_t id, const char* map);
  Result<void> zeroCounters(int fd, uint32_t id, const char* map);
  Result<void> mapHealth();
  Result<void> writeTimeouts(uint32_t id, const ConnTimeouts& timeouts);
  Result<void> writeNodeCfg();
  // SYN protection (bpf_syn_protection.cpp): draws the cookie key when the pinned one is unset,
  // and zeroes a service id's auto switch and counters when the id is (re)assigned.
  Result<void> initSynSecret();
  Result<void> mapSynGuards();
  Result<void> zeroSynState(uint32_t serviceId);
  // The auto switch of a service id as of now (rolled as the datapath would): part of SynStats.
  void readSynGuard(uint32_t serviceId, SynStats& into);
  // One id's per-CPU values (ncpu of them, as a lookup returns them) summed: the one place the
  // one-key reads and readCounterSnapshot's batches both add up (bpf_stats_read.cpp).
  static Counters sumPerCpu(const mp_counters* perCpu, size_t ncpu);
  static void addPerCpu(SynStats& into, const mp_syn_counters* perCpu, size_t ncpu);
  // dnat bookkeeping (bpf_dnat.cpp): what was written, recorded before each sync.
  // The id of another service whose entry this one's key overwrote, if any.
  std::optional<uint32_t> recordService(const ServiceEntry& service);
  std::optional<uint32_t> forgetService(const ServiceKey& key);  // the id it had
  void recordEndpoint(uint32_t id, const EndpointEntry& endpoint);
  void forgetEndpoint(uint32_t id);
  void eraseEndpointOf(uint32_t serviceId, uint32_t endpointId);
  Result<void> syncDnat(uint32_t endpointId);
  Result<void> syncDnatOfService(uint32_t serviceId);
  std::optional<mp_flow> reverseKey(const mp_flow& client, const mp_conn& c);
  mp_ep_health* healthEntry(uint32_t id) const;
  void zeroHealth(uint32_t id);
  static int onEvent(void* ctx, void* data, size_t size);

  // The connection tables' fds the walks (startFlush, startResync) read: our own dups, so a walk
  // that spans any number of upgrades keeping the maps reads the same maps throughout. An upgrade
  // that migrates one of them takes new dups and keeps the previous ones until the next.
  struct WalkTables {
    UniqueFd conns;
    UniqueFd rnat;
    UniqueFd half;
  };
  static WalkTables walkTablesOf(const LbSkeleton& skel);
  static uint32_t mapIdOf(int fd);

  std::unique_ptr<LbSkeleton> skel_;
  // upgrade() in two: the load (any thread: nothing of ours is touched), then the switch (the
  // loop's thread).
  static Result<std::unique_ptr<LbSkeleton>> loadUpgrade(const LbSkeletonOptions& options);
  Result<UpgradeReport> switchUpgrade(std::unique_ptr<LbSkeleton> next, const ProgramInfo& from,
                                      std::chrono::steady_clock::time_point t0);
  std::thread upgradeThread_;            // the last background upgrade's load
  bool upgrading_ = false;               // one is loading (read and written on the loop only)
  std::unique_ptr<LbSkeleton> retired_;  // the program before the last upgrade (upgrade())
  WalkTables walkTables_;
  WalkTables retiredWalkTables_;
  NodeSpec node_;
  int cpus_ = 1;
  uint32_t progId_ = 0;
  std::vector<Attachment> attachments_;
  std::map<uint32_t, Ring> rings_;
  // New services whose ring (already in rings_) and entry flush() publishes: by service id.
  struct PendingService {
    mp_svc_key key;
    mp_svc value;
  };
  std::map<uint32_t, PendingService> pending_;
  ConnTableStats lastConnStats_;  // the last recount's
  // What the dnat bookkeeping works from: the service entries (and the id of each key) and
  // endpoint slots written, each service's slots, the mp_ep_vip key written for each endpoint,
  // how many entries are dnat, and the node entry as last written.
  std::map<uint32_t, ServiceEntry> services_;
  std::map<ServiceKey, uint32_t> serviceIds_;
  std::map<uint32_t, EndpointEntry> endpoints_;
  std::map<uint32_t, std::set<uint32_t>> endpointsOf_;
  std::map<uint32_t, mp_ep_key> dnatKeys_;
  uint32_t dnatServices_ = 0;
  mp_node_cfg nodeCfg_{};
  uint64_t expiredReaped_ = 0;
  // mp_ep_health, mapped (BPF_F_MMAPABLE): meshd and the datapath share these entries, so every
  // access is one __atomic builtin on one field.
  mp_ep_health* health_ = nullptr;
  size_t healthBytes_ = 0;
  mp_syn_guard* synGuards_ = nullptr;  // mp_syn_guard, mapped: meshd ticks the auto switches
  size_t synGuardBytes_ = 0;
  // endpoint id -> bumped whenever its health entry is zeroed or a flush of it begins: a walk
  // that spans many loop turns (ConnTableWalk) tells by it which counts changed hands meanwhile.
  // A walk must not outlive this dataplane.
  std::vector<uint32_t> slotEpoch_ = std::vector<uint32_t>(MP_MAX_ENDPOINTS, 0);
  ring_buffer* events_ = nullptr;
  const std::function<void(const DatapathEvent&)>* sink_ = nullptr;  // during consumeEvents
};

}  // namespace meshpath
