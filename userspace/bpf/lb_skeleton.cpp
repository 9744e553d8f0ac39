#include "lb_skeleton.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <string_view>
#include <system_error>

#include "mp_xdp_lb.skel.h"

namespace meshpath {
namespace {

// The maps that carry state across a restart: every map of abi.h. Not pinned: the program's
// own caches (mp_nh_cache, refilled in microseconds, and free to change layout between
// versions) and libbpf's internal .rodata/.bss maps.
bool isPinned(const bpf_map* map) {
  return !bpf_map__is_internal(map) && std::string_view(bpf_map__name(map)) != "mp_nh_cache";
}

// The kernel's tick: the coarse clocks advance once a jiffy, so their resolution is one.
uint64_t tickNs() {
  timespec res{};
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0 || res.tv_sec != 0 || res.tv_nsec <= 0) {
    return 4'000'000;  // HZ=250, the program's default
  }
  return static_cast<uint64_t>(res.tv_nsec);
}

}  // namespace

LbSkeleton::LbSkeleton(mp_xdp_lb* skel, LbSkeletonOptions options)
    : skel_(skel), options_(std::move(options)) {}

LbSkeleton::~LbSkeleton() { mp_xdp_lb__destroy(skel_); }

BpfResult<std::unique_ptr<LbSkeleton>> LbSkeleton::open(const LbSkeletonOptions& options) {
  if (options.connTableSize == 0) return bpfError(EINVAL, "connTableSize must be > 0");
  mp_xdp_lb* skel = mp_xdp_lb__open();
  if (skel == nullptr) return bpfError(errno, "open mp_xdp_lb skeleton");
  std::unique_ptr<LbSkeleton> lb(new LbSkeleton(skel, options));
  skel->rodata->snat_reuse_ns = options.snatReuseNs;
  skel->rodata->tick_ns = tickNs();  // the program counts its next-hop cache's life in jiffies

  for (bpf_map* map : {skel->maps.mp_conns, skel->maps.mp_rnat}) {
    if (int err = bpf_map__set_max_entries(map, options.connTableSize); err != 0) {
      return bpfError(err, std::string("set max_entries of ") + bpf_map__name(map));
    }
  }

  if (!options.pinRoot.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(options.pinRoot, ec);
    if (ec) return bpfError(ec.value(), "create pin root " + options.pinRoot);
    bool allPinned = true;
    bpf_map* map;
    bpf_object__for_each_map(map, skel->obj) {
      if (!isPinned(map)) continue;
      const std::string path = options.pinRoot + "/" + bpf_map__name(map);
      allPinned = allPinned && ::access(path.c_str(), F_OK) == 0;
      if (int err = bpf_map__set_pin_path(map, path.c_str()); err != 0) {
        return bpfError(err, "set pin path " + path);
      }
    }
    lb->adopted_ = allPinned;
  }

  if (int err = mp_xdp_lb__load(skel); err != 0) return bpfError(err, "load mp_xdp_lb");
  return lb;
}

BpfResult<UniqueFd> LbSkeleton::createRingMap(uint32_t ringSize) {
  if (ringSize == 0 || ringSize > MP_RING_SIZE_MAX) {
    return bpfError(EINVAL, "ring size " + std::to_string(ringSize) + " outside [1, " +
                                std::to_string(MP_RING_SIZE_MAX) + "]");
  }
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
  const int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "mp_ring", sizeof(uint32_t), sizeof(uint32_t),
                                2 * ringSize, &opts);
  if (fd < 0) return bpfError(errno, "create ring map of " + std::to_string(ringSize) + " slots");
  UniqueFd ring(fd);
  std::vector<uint32_t> keys(2 * ringSize);
  for (uint32_t i = 0; i < keys.size(); ++i) keys[i] = i;
  const std::vector<uint32_t> empty(keys.size(), MP_RING_EMPTY);
  uint32_t count = static_cast<uint32_t>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, batchOpts);
  if (bpf_map_update_batch(ring.get(), keys.data(), empty.data(), &count, &batchOpts) != 0) {
    return bpfError(errno, "mark a new ring empty");
  }
  return ring;
}

BpfStatus LbSkeleton::writeRing(const mp_svc_key& key, mp_svc svc, int ringFd, uint32_t half,
                                const std::vector<uint32_t>& slots) {
  if (half > 1) return bpfError(EINVAL, "ring half " + std::to_string(half));
  if (svc.ring_size == 0 || slots.size() != svc.ring_size) {
    return bpfError(EINVAL, "ring of " + std::to_string(slots.size()) + " slots for ring_size " +
                                std::to_string(svc.ring_size));
  }
  std::vector<uint32_t> keys(slots.size());
  for (uint32_t i = 0; i < keys.size(); ++i) keys[i] = half * svc.ring_size + i;
  uint32_t count = static_cast<uint32_t>(keys.size());
  LIBBPF_OPTS(bpf_map_batch_opts, batchOpts);
  if (bpf_map_update_batch(ringFd, keys.data(), slots.data(), &count, &batchOpts) != 0) {
    return bpfError(
        errno, "write ring half " + std::to_string(half) + " of service " + std::to_string(svc.id));
  }
  if (bpf_map_update_elem(ringsFd(), &svc.id, &ringFd, BPF_ANY) != 0) {
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
int LbSkeleton::nodeFd() const { return bpf_map__fd(skel_->maps.mp_node); }
int LbSkeleton::svcStatsFd() const { return bpf_map__fd(skel_->maps.mp_svc_stats); }
int LbSkeleton::epStatsFd() const { return bpf_map__fd(skel_->maps.mp_ep_stats); }
int LbSkeleton::excFd() const { return bpf_map__fd(skel_->maps.mp_exc); }
int LbSkeleton::epHealthFd() const { return bpf_map__fd(skel_->maps.mp_ep_health); }
int LbSkeleton::eventsFd() const { return bpf_map__fd(skel_->maps.mp_events); }

}  // namespace meshpath
