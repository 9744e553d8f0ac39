#include "lb_skeleton.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "mp_xdp_lb.skel.h"

namespace meshpath {
namespace {

// The maps that carry state across a restart: every map of abi.h. Not pinned: the program's
// own caches (mp_nh_cache, mp_nh_client, mp_flow_cache and its counters: refilled in
// microseconds, and free to change layout between versions), its per-CPU scratch entries, the
// SYN proxy's program array (it holds this load's program) and libbpf's internal maps.
bool isPinned(const bpf_map* map) {
  const std::string_view name = bpf_map__name(map);
  return !bpf_map__is_internal(map) && name != "mp_nh_cache" && name != "mp_nh_client" &&
         name != "mp_flow_cache" && name != "mp_fc_stats" && name != "mp_snat_full" &&
         name != "mp_promote_tmp" && name != "mp_snat_tmp" && name != "mp_fib_tmp" &&
         name != "mp_syn_tmp" && name != "mp_syn_progs";
}

// The flow cache's settings as the program takes them: log2 of the slots (0: off) and a slot's
// life in ticks. A closed connection never fills a slot, so a slot that outlives a close is one
// filled before it; the config keeps tcp_closed >= 1 s, beyond twice the 250 ms default.
struct FlowCacheParams {
  uint32_t bits = 0;
  uint32_t ttlTicks = 0;
};

BpfResult<FlowCacheParams> flowCacheParams(const LbSkeletonOptions& o, uint64_t tick) {
  const uint32_t slots = o.flowCacheSlots;
  if (slots == 0) return FlowCacheParams{};
  if ((slots & (slots - 1)) != 0 || slots < 2 || slots > MP_FLOW_CACHE_SLOTS_MAX) {
    return bpfError(EINVAL, "flow cache slots " + std::to_string(slots) +
                                " is not a power of two in [2, " +
                                std::to_string(MP_FLOW_CACHE_SLOTS_MAX) + "]");
  }
  const uint64_t ttlTicks = o.flowCacheTtlNs / tick;
  if (ttlTicks == 0) return FlowCacheParams{};
  return FlowCacheParams{.bits = static_cast<uint32_t>(__builtin_ctz(slots)),
                         .ttlTicks = static_cast<uint32_t>(std::min<uint64_t>(ttlTicks, 1u << 30))};
}

// The kernel's tick: the coarse clocks advance once a jiffy, so their resolution is one.
uint64_t kernelTickNs() {
  timespec res{};
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0 || res.tv_sec != 0 || res.tv_nsec <= 0) {
    return 4'000'000;  // HZ=250, the program's default
  }
  return static_cast<uint64_t>(res.tv_nsec);
}

}  // namespace

LbSkeleton::LbSkeleton(mp_xdp_lb* skel, LbSkeletonOptions options)
    : skel_(skel), options_(std::move(options)) {}

LbSkeleton::~LbSkeleton() {
  if (fwdGen_ != nullptr) ::munmap(fwdGen_, static_cast<size_t>(::sysconf(_SC_PAGESIZE)));
  mp_xdp_lb__destroy(skel_);
}

BpfResult<std::unique_ptr<LbSkeleton>> LbSkeleton::open(const LbSkeletonOptions& options) {
  if (options.connTableSize == 0 || options.halfTableSize == 0) {
    return bpfError(EINVAL, "connTableSize and halfTableSize must be > 0");
  }
  mp_xdp_lb* skel = mp_xdp_lb__open();
  if (skel == nullptr) return bpfError(errno, "open mp_xdp_lb skeleton");
  std::unique_ptr<LbSkeleton> lb(new LbSkeleton(skel, options));
  const uint64_t tick = kernelTickNs();
  lb->tickNs_ = tick;
  skel->rodata->tick_ns = tick;  // the program counts its caches' and entries' lives in jiffies
  skel->rodata->snat_backoff = std::max<uint64_t>(1, options.snatBackoffNs / tick);
  skel->rodata->refresh_slack = std::max<uint64_t>(1, options.refreshSlackNs / tick);
  auto fc = flowCacheParams(options, tick);
  if (!fc) return fc.error();
  skel->rodata->flow_cache_bits = fc->bits;
  skel->rodata->flow_cache_ttl = fc->ttlTicks;
  skel->rodata->tx_redirect = options.txRedirect ? 1 : 0;
  lb->flowCacheSlots_ = fc->bits != 0 ? 1u << fc->bits : 0;
  if (int err = bpf_map__set_max_entries(skel->maps.mp_flow_cache,
                                         fc->bits != 0 ? lb->flowCacheSlots_ : 1);
      err != 0) {
    return bpfError(err, "set max_entries of mp_flow_cache");
  }

  for (bpf_map* map :
       {skel->maps.mp_conns, skel->maps.mp_rnat, skel->maps.mp_half, skel->maps.mp_hrnat}) {
    const bool half = map == skel->maps.mp_half || map == skel->maps.mp_hrnat;
    if (int err =
            bpf_map__set_max_entries(map, half ? options.halfTableSize : options.connTableSize);
        err != 0) {
      return bpfError(err, std::string("set max_entries of ") + bpf_map__name(map));
    }
  }

  if (!options.pinRoot.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.pinRoot, ec);
    if (ec) return bpfError(ec.value(), "create pin root " + options.pinRoot);
    if (auto st = lb->checkLayouts(); !st) return st.error();
  }

  // The object's global data (.bss, .data) is this load's alone: a new program starts with its
  // own. Nothing in it outlives a packet: clock_jiffies is only mp_xdp_clock's answer to meshd;
  // state that must survive an upgrade (round-robin positions mp_rr, the SYN guards
  // mp_syn_guard, the cookie key, the forwarding generation) lives in pinned maps. .rodata holds
  // the knobs set above from options, which an upgrade passes again unchanged.
  if (int err = mp_xdp_lb__load(skel); err != 0) return bpfError(err, "load mp_xdp_lb");
  if (auto st = lb->mapForwardingGeneration(); !st) return st.error();
  if (!options.pinRoot.empty() && lb->pending_.empty()) {
    if (auto st = lb->recordLayouts(); !st) return st.error();
  }
  return lb;
}

namespace {

std::string mapKind(uint32_t type) {
  const char* name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
  return name != nullptr ? name : "type " + std::to_string(type);
}

std::string describe(const MapLayout& l) {
  std::string s = mapKind(l.type) + ", key " + std::to_string(l.keySize) + " B, value " +
                  std::to_string(l.valueSize) + " B";
  if (l.flags != 0) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%x", l.flags);
    s += std::string(", flags 0x") + hex;
  }
  if (l.maxEntries != 0) s += ", " + std::to_string(l.maxEntries) + " entries";
  return s;
}

bool sameShape(const MapLayout& a, const MapLayout& b) {
  return a.type == b.type && a.keySize == b.keySize && a.valueSize == b.valueSize &&
         a.flags == b.flags &&
         (a.maxEntries == 0 || b.maxEntries == 0 || a.maxEntries == b.maxEntries);
}

}  // namespace

// For each map to pin: a missing pin is created at load; a pinned map of this build's layout is
// reused; one of an older layout is migrated (MapMigration) when a migration is registered and
// refused otherwise. Its version comes from the pin root's record, or, for a pin root of the
// release before versioning (no record), from its shape.
BpfStatus LbSkeleton::checkLayouts() {
  auto record = LayoutRecord::open(options_.pinRoot, false);
  if (!record) return record.error();
  bool allPinned = true;
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    if (!isPinned(map)) continue;
    const std::string name = bpf_map__name(map);
    const std::string path = options_.pinRoot + "/" + name;
    const std::vector<MapLayout>* history = layoutHistory(name);
    const MapLayout compiled{.version = 0,
                             .type = bpf_map__type(map),
                             .keySize = bpf_map__key_size(map),
                             .valueSize = bpf_map__value_size(map),
                             .flags = bpf_map__map_flags(map),
                             .maxEntries = bpf_map__max_entries(map)};
    if (history == nullptr || !sameShape(history->back(), compiled)) {
      return bpfError(EPROTO, "map " + name + " is compiled as (" + describe(compiled) +
                                  ") but map_layout.cpp's last layout of it is " +
                                  (history ? "(" + describe(history->back()) + ")" : "missing") +
                                  ": a layout change needs a new version there "
                                  "(docs/operations.md, \"How to change a map's layout\")");
    }
    const MapLayout& current = history->back();
    const int fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
      if (errno != ENOENT) return bpfError(errno, "open pinned map " + path);
      allPinned = false;
      if (record->version(name) != 0) {
        // Recorded, so a meshd pinned it here once: someone removed the pin alone.
        spdlog::warn(
            "{}: pinned map {} is gone (its layout version {} is recorded): created "
            "empty, what it held is lost",
            name, path, record->version(name));
      }
      if (int err = bpf_map__set_pin_path(map, path.c_str()); err != 0) {
        return bpfError(err, "set pin path " + path);
      }
      continue;
    }
    UniqueFd pinned(fd);
    auto actual = pinnedLayout(fd);
    if (!actual) return actual.error();
    const uint32_t recorded = record->version(name);
    const MapLayout* found = nullptr;
    for (auto it = history->rbegin(); it != history->rend(); ++it) {
      if (recorded != 0 ? it->version == recorded : sameShape(*it, *actual)) {
        found = &*it;
        break;
      }
    }
    const std::string what = "pinned map " + path + " (" + describe(*actual) + ")";
    const std::string teardown =
        "or remove the pins with `meshd --teardown` (drops every connection). The pinned map "
        "was left as it is";
    if (found == nullptr || !sameShape(*found, *actual)) {
      const std::string version =
          recorded != 0 ? "has layout version " + std::to_string(recorded) +
                              (found ? " but not its shape" : ", unknown to this build")
                        : "has a layout this build does not know";
      return bpfError(EPROTO, what + " " + version + "; this build needs version " +
                                  std::to_string(current.version) + " (" + describe(compiled) +
                                  ") and has no migration from it. Run the meshd release that "
                                  "pinned it, " +
                                  teardown);
    }
    if (found->version == current.version) {
      if (actual->maxEntries != compiled.maxEntries) {
        return bpfError(EPROTO, what + " has " + std::to_string(actual->maxEntries) +
                                    " entries, this load " + std::to_string(compiled.maxEntries) +
                                    " (conn_table_size or half_table_size changed?). Restore "
                                    "the size, " +
                                    teardown);
      }
      if (int err = bpf_map__set_pin_path(map, path.c_str()); err != 0) {
        return bpfError(err, "set pin path " + path);
      }
      continue;
    }
    const LayoutMigration* migration = findMigration(name, found->version, current.version);
    if (migration == nullptr) {
      return bpfError(EPROTO, what + " has layout version " + std::to_string(found->version) +
                                  ", this build needs version " + std::to_string(current.version) +
                                  " (" + describe(compiled) + ") and registers no migration from " +
                                  std::to_string(found->version) + " to " +
                                  std::to_string(current.version) +
                                  ". Register one (docs/operations.md, \"How to change a map's "
                                  "layout\"), run the meshd release that pinned it, " +
                                  teardown);
    }
    auto m = MapMigration::start(name, *migration, std::move(pinned), map);
    if (!m) return m.error();
    spdlog::info("{}: layout {} -> {}: {} entries copied into a new map in {:.1f} ms", name,
                 m->from(), m->to(), m->stats().copied, m->stats().copyNs / 1e6);
    if (int err = bpf_map__reuse_fd(map, m->newFd()); err != 0) {
      return bpfError(err, "hand the migrated " + name + " to the program");
    }
    pending_.push_back(std::move(*m));
  }
  adopted_ = allPinned;
  return bpfOk();
}

BpfStatus LbSkeleton::recordLayouts() {
  auto record = LayoutRecord::open(options_.pinRoot, true);
  if (!record) return record.error();
  bpf_map* map;
  bpf_object__for_each_map(map, skel_->obj) {
    if (!isPinned(map)) continue;
    const std::vector<MapLayout>* history = layoutHistory(bpf_map__name(map));
    if (history == nullptr) continue;  // checkLayouts refused the load already
    if (record->version(bpf_map__name(map)) == history->back().version) continue;
    if (auto st = record->set(bpf_map__name(map), history->back().version); !st) return st;
  }
  return bpfOk();
}

BpfResult<std::vector<MapMigration::Stats>> LbSkeleton::completeMigrations() {
  std::vector<MapMigration::Stats> out;
  for (MapMigration& m : pending_) {
    if (auto st = m.finish(options_.pinRoot + "/" + m.name()); !st) return st.error();
    spdlog::info(
        "{}: layout {} -> {} complete: {} entries changed meanwhile, copied in {:.1f} ms; "
        "pinned",
        m.name(), m.from(), m.to(), m.stats().changed, m.stats().deltaNs / 1e6);
    out.push_back(m.stats());
  }
  if (auto st = recordLayouts(); !st) return st.error();
  // The old maps go with the last reference to them (the old program's); ours are pinned now.
  pending_.clear();
  return out;
}

BpfStatus LbSkeleton::mapForwardingGeneration() {
  void* p = ::mmap(nullptr, static_cast<size_t>(::sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE,
                   MAP_SHARED, bpf_map__fd(skel_->maps.mp_fwd_gen), 0);
  if (p == MAP_FAILED) return bpfError(errno, "mmap mp_fwd_gen");
  fwdGen_ = static_cast<mp_fwd_gen*>(p);
  return bpfOk();
}

void LbSkeleton::bumpForwardingGeneration() {
  __atomic_fetch_add(&fwdGen_->gen, 1, __ATOMIC_SEQ_CST);
}

uint64_t LbSkeleton::forwardingGeneration() const {
  return __atomic_load_n(&fwdGen_->gen, __ATOMIC_SEQ_CST);
}

BpfResult<mp_flow_cache_stats> LbSkeleton::flowCacheStats() const {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return bpfError(-ncpu, "count possible CPUs");
  std::vector<mp_flow_cache_stats> perCpu(static_cast<size_t>(ncpu));
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.mp_fc_stats), &zero, perCpu.data()) != 0) {
    return bpfError(errno, "read mp_fc_stats");
  }
  mp_flow_cache_stats sum{};
  for (const auto& c : perCpu) {
    sum.hits += c.hits;
    sum.misses += c.misses;
    sum.conflicts += c.conflicts;
    sum.bypassed += c.bypassed;
  }
  return sum;
}

BpfResult<uint64_t> LbSkeleton::jiffiesNow() const {
  // Any frame will do: the clock program reads nothing of it.
  unsigned char frame[64] = {};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = sizeof(frame),
              .repeat = 1);
  if (bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.mp_xdp_clock), &opts) != 0) {
    return bpfError(errno, "run mp_xdp_clock");
  }
  return __atomic_load_n(&skel_->bss->clock_jiffies, __ATOMIC_RELAXED);
}

uint64_t LbSkeleton::msToJiffies(uint64_t ms) const {
  return (ms * 1'000'000 + tickNs_ - 1) / tickNs_;
}

BpfResult<UniqueFd> LbSkeleton::createRingMap(uint32_t ringSize,
                                              const std::vector<uint32_t>* fill) {
  if (ringSize == 0 || ringSize > MP_RING_SIZE_MAX) {
    return bpfError(EINVAL, "ring size " + std::to_string(ringSize) + " outside [1, " +
                                std::to_string(MP_RING_SIZE_MAX) + "]");
  }
  if (fill != nullptr && fill->size() != ringSize) {
    return bpfError(EINVAL, "a ring of " + std::to_string(fill->size()) + " slots for a map of " +
                                std::to_string(ringSize));
  }
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
  const int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "mp_ring", sizeof(uint32_t), sizeof(uint32_t),
                                2 * ringSize, &opts);
  if (fd < 0) return bpfError(errno, "create ring map of " + std::to_string(ringSize) + " slots");
  UniqueFd ring(fd);
  const std::vector<uint32_t> empty(fill != nullptr ? 0 : ringSize, MP_RING_EMPTY);
  const std::vector<uint32_t>& slots = fill != nullptr ? *fill : empty;
  for (uint32_t half = 0; half < 2; ++half) {
    if (auto r = writeRingHalf(ring.get(), half, slots, nullptr); !r) {
      return bpfError(r.error().errnum, "fill a new ring: " + r.error().context);
    }
  }
  return ring;
}

BpfStatus LbSkeleton::writeRingHalf(int ringFd, uint32_t half, const std::vector<uint32_t>& slots,
                                    const std::vector<uint32_t>* previous) {
  if (half > 1) return bpfError(EINVAL, "ring half " + std::to_string(half));
  if (previous != nullptr && previous->size() != slots.size()) {
    return bpfError(EINVAL, "previous ring of " + std::to_string(previous->size()) +
                                " slots for a ring of " + std::to_string(slots.size()));
  }
  const uint32_t ringSize = static_cast<uint32_t>(slots.size());
  std::vector<uint32_t> keys;
  std::vector<uint32_t> values;
  keys.reserve(previous == nullptr ? slots.size() : 64);
  values.reserve(keys.capacity());
  for (uint32_t i = 0; i < ringSize; ++i) {
    if (previous != nullptr && (*previous)[i] == slots[i]) continue;
    keys.push_back(half * ringSize + i);
    values.push_back(slots[i]);
  }
  if (keys.empty()) return bpfOk();
  uint32_t count = static_cast<uint32_t>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, batchOpts);
  if (bpf_map_update_batch(ringFd, keys.data(), values.data(), &count, &batchOpts) != 0) {
    return bpfError(errno, "write " + std::to_string(keys.size()) + " slots of ring half " +
                               std::to_string(half));
  }
  return bpfOk();
}

BpfStatus LbSkeleton::installRings(const std::vector<uint32_t>& ids,
                                   const std::vector<int>& ringFds) {
  if (ids.size() != ringFds.size()) {
    return bpfError(EINVAL, std::to_string(ids.size()) + " service ids for " +
                                std::to_string(ringFds.size()) + " rings");
  }
  if (ids.empty()) return bpfOk();
  uint32_t count = static_cast<uint32_t>(ids.size());
  LIBBPF_OPTS(bpf_map_batch_opts, batchOpts);
  if (bpf_map_update_batch(ringsFd(), ids.data(), ringFds.data(), &count, &batchOpts) != 0) {
    return bpfError(errno, "set " + std::to_string(ids.size()) + " entries of mp_rings (" +
                               std::to_string(count) + " done)");
  }
  return bpfOk();
}

BpfStatus LbSkeleton::writeRing(const mp_svc_key& key, mp_svc svc, int ringFd, uint32_t half,
                                const std::vector<uint32_t>& slots,
                                const std::vector<uint32_t>* previous) {
  if (half > 1) return bpfError(EINVAL, "ring half " + std::to_string(half));
  if (svc.ring_size == 0 || slots.size() != svc.ring_size) {
    return bpfError(EINVAL, "ring of " + std::to_string(slots.size()) + " slots for ring_size " +
                                std::to_string(svc.ring_size));
  }
  if (auto r = writeRingHalf(ringFd, half, slots, previous); !r) {
    return bpfError(r.error().errnum, r.error().context + " of service " + std::to_string(svc.id));
  }
  // An update of a map-of-maps waits for an RCU grace period (the kernel makes sure no program
  // still reads the inner map it replaces): milliseconds. A ring rewritten in place is already
  // the service's inner map, so only a new ring map is installed.
  uint32_t installedId = 0;
  bpf_map_info info{};
  uint32_t infoLen = sizeof(info);
  const bool installed = bpf_map_lookup_elem(ringsFd(), &svc.id, &installedId) == 0 &&
                         bpf_obj_get_info_by_fd(ringFd, &info, &infoLen) == 0 &&
                         info.id == installedId;
  if (!installed && bpf_map_update_elem(ringsFd(), &svc.id, &ringFd, BPF_ANY) != 0) {
    return bpfError(errno, "set mp_rings[" + std::to_string(svc.id) + "]");
  }
  svc.active_half = half;
  if (bpf_map_update_elem(servicesFd(), &key, &svc, BPF_ANY) != 0) {
    return bpfError(errno, "update mp_services for service " + std::to_string(svc.id));
  }
  return bpfOk();
}

int LbSkeleton::programFd() const { return bpf_program__fd(skel_->progs.mp_xdp_lb); }
bpf_program* LbSkeleton::program() const { return skel_->progs.mp_xdp_lb; }
int LbSkeleton::servicesFd() const { return bpf_map__fd(skel_->maps.mp_services); }
int LbSkeleton::endpointsFd() const { return bpf_map__fd(skel_->maps.mp_endpoints); }
int LbSkeleton::ringsFd() const { return bpf_map__fd(skel_->maps.mp_rings); }
int LbSkeleton::connsFd() const { return bpf_map__fd(skel_->maps.mp_conns); }
int LbSkeleton::rnatFd() const { return bpf_map__fd(skel_->maps.mp_rnat); }
int LbSkeleton::halfFd() const { return bpf_map__fd(skel_->maps.mp_half); }
int LbSkeleton::hrnatFd() const { return bpf_map__fd(skel_->maps.mp_hrnat); }
int LbSkeleton::svcTmoFd() const { return bpf_map__fd(skel_->maps.mp_svc_tmo); }
int LbSkeleton::epVipFd() const { return bpf_map__fd(skel_->maps.mp_ep_vip); }
int LbSkeleton::nodeFd() const { return bpf_map__fd(skel_->maps.mp_node); }
int LbSkeleton::svcStatsFd() const { return bpf_map__fd(skel_->maps.mp_svc_stats); }
int LbSkeleton::epStatsFd() const { return bpf_map__fd(skel_->maps.mp_ep_stats); }
int LbSkeleton::excFd() const { return bpf_map__fd(skel_->maps.mp_exc); }
int LbSkeleton::epHealthFd() const { return bpf_map__fd(skel_->maps.mp_ep_health); }
int LbSkeleton::eventsFd() const { return bpf_map__fd(skel_->maps.mp_events); }
int LbSkeleton::synSecretFd() const { return bpf_map__fd(skel_->maps.mp_syn_secret); }
int LbSkeleton::synGuardFd() const { return bpf_map__fd(skel_->maps.mp_syn_guard); }
int LbSkeleton::synStatsFd() const { return bpf_map__fd(skel_->maps.mp_syn_stats); }

}  // namespace meshpath
