// lb_skeleton.h — the XDP balancer (bpf/xdp_lb.bpf.c) as one RAII object over its bpftool
// skeleton: open, size and pin the maps, load, and hand out the program and map fds. Nothing
// loads a BPF object by file path; the object is embedded in the skeleton.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "abi.h"
#include "bpf_result.h"
#include "map_layout.h"
#include "unique_fd.h"

struct mp_xdp_lb;
struct bpf_program;

namespace meshpath {

struct LbSkeletonOptions {
  // Directory on a bpffs where every map of abi.h is pinned as <pinRoot>/<map name>. A map
  // already pinned there is reused (a restarted meshd adopts it), a missing one is created and
  // pinned. The program's private caches (mp_nh_cache, mp_nh_client, mp_flow_cache,
  // mp_fc_stats) never are.
  // Empty: private maps that live as long as the skeleton (tests, benchmarks).
  std::string pinRoot;
  // max_entries of the established tables (mp_conns, mp_rnat) and of the half-open ones
  // (mp_half, mp_hrnat). Reusing a pinned table of another size fails the load.
  uint32_t connTableSize = MP_CONN_TABLE_DEFAULT;
  uint32_t halfTableSize = MP_HALF_TABLE_DEFAULT;
  // How long a CPU drops new flows toward an endpoint without probing once it found every SNAT
  // candidate held (the cheap drop path), and the least an entry's expiry moves before it is
  // written again (an established flow writes its line about once per this).
  uint64_t snatBackoffNs = MP_SNAT_BACKOFF_NS_DEFAULT;
  uint64_t refreshSlackNs = 1'000'000'000;
  // The flow cache (bpf/flowcache.h): slots per CPU, a power of two up to
  // MP_FLOW_CACHE_SLOTS_MAX, or 0 for none; and how long a slot serves. The program serves a slot
  // (closed flows never fill one; a slot must live less than half of the smallest tcp_closed,
  // 1 s); when that is less than one kernel tick, the cache is off.
  uint32_t flowCacheSlots = MP_FLOW_CACHE_SLOTS_DEFAULT;
  uint64_t flowCacheTtlNs = MP_FLOW_CACHE_TTL_NS_DEFAULT;
  // Send frames back out of their ingress port by redirect, not XDP_TX (xdp_lb.bpf.c,
  // tx_redirect): for veth, whose XDP_TX reaches a peer only if the peer runs XDP too.
  bool txRedirect = false;
};

class LbSkeleton {
 public:
  // Opens the embedded object, applies options and loads it into the kernel (maps included).
  // The program is loaded, not attached: attaching (bpf_link) belongs to the caller.
  // With a pin root, every pinned map's layout version is checked first (map_layout.h): a map
  // of an older layout with a registered migration is copied, converted, into a new map that
  // this program uses (pendingMigrations()); one without is refused, the pins left as they are.
  static BpfResult<std::unique_ptr<LbSkeleton>> open(const LbSkeletonOptions& options);

  // Migrations of this load not yet completed: their new maps are this program's, the pins
  // still the old maps (the old program may run on them). After switching every link to this
  // program, completeMigrations() copies what the old program changed since, pins the new maps
  // in place of the old and records the versions. Never called: the pins stay as they were.
  const std::vector<MapMigration>& pendingMigrations() const { return pending_; }
  BpfResult<std::vector<MapMigration::Stats>> completeMigrations();

  ~LbSkeleton();
  LbSkeleton(const LbSkeleton&) = delete;
  LbSkeleton& operator=(const LbSkeleton&) = delete;

  // Creates a ring for one service, compatible with mp_rings' inner template: an ARRAY of
  // 2 * ringSize u32 endpoint ids with BPF_F_INNER_MAP, both halves holding `fill` (ringSize ids),
  // or every slot MP_RING_EMPTY without one (a fresh array would read as endpoint 0). ringSize in
  // [1, MP_RING_SIZE_MAX].
  static BpfResult<UniqueFd> createRingMap(uint32_t ringSize,
                                           const std::vector<uint32_t>* fill = nullptr);

  // Publishes one service's ring: writes slots (svc.ring_size endpoint ids, MP_RING_EMPTY for
  // none) into half `half` (0 or 1) of ringFd, stores ringFd at mp_rings[svc.id], then writes
  // mp_services[key] = svc with active_half = half, the single update that flips packets over.
  // Call it with the half packets do not read (1 - the active one) for an existing service; a
  // packet never sees a half-written ring. The one place meshd and tests publish rings.
  // `previous`: what that half holds now, so only the slots that differ are written (one batch
  // update); nullptr: unknown, every slot is written.
  BpfStatus writeRing(const mp_svc_key& key, mp_svc svc, int ringFd, uint32_t half,
                      const std::vector<uint32_t>& slots,
                      const std::vector<uint32_t>* previous = nullptr);
  // Stores ringFds[i] at mp_rings[ids[i]] in one batch: one RCU grace period for all of them
  // (each single update of a map of maps waits for one). Publishes nothing by itself.
  BpfStatus installRings(const std::vector<uint32_t>& ids, const std::vector<int>& ringFds);
  // Writes slots into half `half` of ringFd where they differ from `previous` (nullptr: all),
  // without publishing anything.
  static BpfStatus writeRingHalf(int ringFd, uint32_t half, const std::vector<uint32_t>& slots,
                                 const std::vector<uint32_t>* previous);

  int programFd() const;
  bpf_program* program() const;  // for bpf_program__attach_xdp() / link updates

  int servicesFd() const;
  int endpointsFd() const;
  int ringsFd() const;
  int connsFd() const;
  int rnatFd() const;
  int halfFd() const;
  int hrnatFd() const;
  int svcTmoFd() const;  // mp_svc_tmo: per service id, its lifetimes in jiffies
  int epVipFd() const;   // mp_ep_vip: a dnat endpoint -> its VIP
  int nodeFd() const;
  int svcStatsFd() const;
  int epStatsFd() const;
  int excFd() const;
  int epHealthFd() const;  // BPF_F_MMAPABLE: meshd maps it (bpf_dataplane.cpp)
  int eventsFd() const;    // the mp_events ring buffer
  // SYN protection (abi.h): the cookie key (1 entry), each service's auto switch, and its per-CPU
  // counters. Pinned like every map of abi.h: a restart keeps the key, so cookies stay valid.
  int synSecretFd() const;
  int synGuardFd() const;
  int synStatsFd() const;

  // After a change of where existing flows go (a service, endpoint, ring or node written, or
  // connections deleted): every CPU's flow cache slots from before are stale (abi.h, mp_fwd_gen).
  // An atomic add on the mapped entry, so a bump the program makes at the same moment is kept.
  void bumpForwardingGeneration();
  uint64_t forwardingGeneration() const;
  // Slots per CPU of the flow cache as loaded (0: off), and its counters summed over CPUs.
  uint32_t flowCacheSlots() const { return flowCacheSlots_; }
  BpfResult<mp_flow_cache_stats> flowCacheStats() const;

  // The program's clock (bpf_jiffies64()), read by running mp_xdp_clock: entries' expiry is in
  // it. And the conversion of a lifetime into it, rounded up.
  BpfResult<uint64_t> jiffiesNow() const;
  uint64_t msToJiffies(uint64_t ms) const;
  uint64_t tickNs() const { return tickNs_; }

  // True when every pinned map (those of abi.h) was found under pinRoot before load and reused.
  bool adopted() const { return adopted_; }
  const LbSkeletonOptions& options() const { return options_; }

 private:
  LbSkeleton(mp_xdp_lb* skel, LbSkeletonOptions options);

  BpfStatus mapForwardingGeneration();
  BpfStatus checkLayouts();  // before load: pin, migrate or refuse each pinned map
  BpfStatus recordLayouts();

  mp_xdp_lb* skel_;
  LbSkeletonOptions options_;
  bool adopted_ = false;
  uint32_t flowCacheSlots_ = 0;
  uint64_t tickNs_ = 4'000'000;
  mp_fwd_gen* fwdGen_ = nullptr;  // mp_fwd_gen's one entry, mapped (page-sized mapping)
  std::vector<MapMigration> pending_;
};

}  // namespace meshpath
