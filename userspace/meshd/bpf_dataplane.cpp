#include "bpf_dataplane.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "conn_walk.h"
#include "netlink.h"
#include "snat.h"
#include "syn_protection.h"

namespace meshpath {

namespace {

Error fromBpf(const BpfError& e, std::string hint = {}) {
  return Error{e.errnum, e.context, std::move(hint), e.where};
}

// Kernel memory of one entry of a preallocated hash (LRU or not) of maxEntries: the element
// (struct htab_elem, 48 bytes on 64-bit kernels 5.x-6.x, then key and value each rounded up to
// 8) and its share of the bucket array (16-byte buckets, a power of two of them, >= maxEntries).
uint64_t connBytes(uint64_t maxEntries, uint64_t keySize, uint64_t valueSize) {
  uint64_t buckets = 1;
  while (buckets < maxEntries) buckets <<= 1;
  const uint64_t element = 48 + ((keySize + 7) & ~7ull) + ((valueSize + 7) & ~7ull);
  return element + (16 * buckets + maxEntries - 1) / maxEntries;
}

mp_svc_key toKey(const ServiceKey& k) {
  mp_svc_key key{};
  std::memcpy(key.addr, k.vip.bytes().data(), sizeof(key.addr));
  key.port = htons(k.port);
  key.proto = static_cast<uint8_t>(k.protocol);
  key.family = static_cast<uint8_t>(k.vip.family());
  return key;
}

IpAddress fromBytes(const uint8_t* bytes, uint8_t family) {
  if (family == MP_AF_INET) {
    in_addr a{};
    std::memcpy(&a, bytes, sizeof(a));
    return IpAddress::v4(a);
  }
  in6_addr a{};
  std::memcpy(&a, bytes, sizeof(a));
  return IpAddress::v6(a);
}

// Calls fn(key, value) for every entry of mp_services; an entry deleted mid-walk is skipped.
template <class Fn>
void forEachService(int servicesFd, Fn&& fn) {
  mp_svc_key key{};
  mp_svc_key next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(servicesFd, prev, &next) == 0) {
    mp_svc svc{};
    if (bpf_map_lookup_elem(servicesFd, &next, &svc) == 0) fn(next, svc);
    key = next;
    prev = &key;
  }
}

}  // namespace

BpfDataplane::BpfDataplane(std::unique_ptr<LbSkeleton> skel, NodeSpec node)
    : skel_(std::move(skel)), walkTables_(walkTablesOf(*skel_)), node_(std::move(node)) {
  int cpus = libbpf_num_possible_cpus();
  cpus_ = cpus > 0 ? cpus : 1;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(skel_->programFd(), &info, &len) == 0) progId_ = info.id;
}

BpfDataplane::WalkTables BpfDataplane::walkTablesOf(const LbSkeleton& skel) {
  auto dup = [](int fd) { return UniqueFd(fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1); };
  return WalkTables{dup(skel.connsFd()), dup(skel.rnatFd()), dup(skel.halfFd())};
}

uint32_t BpfDataplane::mapIdOf(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

BpfDataplane::~BpfDataplane() {
  waitForUpgrade();
  // Every link here came from bpf_link__open on its pin: destroying it closes our fd only, the
  // pin keeps the link (and XDP) in place.
  for (Attachment& a : attachments_) bpf_link__destroy(a.link);
  if (events_ != nullptr) ring_buffer__free(events_);
  if (health_ != nullptr) ::munmap(health_, healthBytes_);
  if (synGuards_ != nullptr) ::munmap(synGuards_, synGuardBytes_);
}

// The rings an earlier run left: each service id's inner map and the half its entry points at.
Result<void> BpfDataplane::loadRings() {
  std::map<uint32_t, uint32_t> activeHalf;
  forEachService(skel_->servicesFd(), [&](const mp_svc_key&, const mp_svc& svc) {
    activeHalf[svc.id] = svc.active_half;
  });
  // (service id, inner map id) of every slot that holds a ring, in one batch read that skips the
  // empty slots in the kernel: 2 ms for the 65,536 slots here, where a lookup per id (a syscall
  // each) took 22 ms idle and 90-100 ms beside a build. A kernel whose batch read stops at an
  // empty slot (older ones answer EINTR) or lacks it for maps of maps gets the lookup per id.
  std::vector<uint32_t> ids(MP_MAX_SERVICES), innerIds(MP_MAX_SERVICES);
  uint32_t count = MP_MAX_SERVICES;
  uint32_t batchEnd = 0;
  LIBBPF_OPTS(bpf_map_batch_opts, batchOpts);
  if (bpf_map_lookup_batch(skel_->ringsFd(), nullptr, &batchEnd, ids.data(), innerIds.data(),
                           &count, &batchOpts) != 0 &&
      errno != ENOENT) {  // ENOENT: the walk reached the end, count holds what it found
    spdlog::debug("batch read of mp_rings: {}; reading it id by id", std::strerror(errno));
    count = 0;
    for (uint32_t id = 0; id < MP_MAX_SERVICES; ++id) {
      if (bpf_map_lookup_elem(skel_->ringsFd(), &id, &innerIds[count]) == 0) ids[count++] = id;
    }
  }
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t id = ids[i];
    const uint32_t innerId = innerIds[i];
    UniqueFd fd(bpf_map_get_fd_by_id(innerId));
    if (!fd.valid()) return errnoError(-errno, "open ring map of service " + std::to_string(id));
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (int rc = bpf_obj_get_info_by_fd(fd.get(), &info, &len); rc != 0) {
      return errnoError(rc, "read ring map info of service " + std::to_string(id));
    }
    Ring& ring = rings_[id];
    ring.mapId = innerId;
    ring.ringSize = info.max_entries / 2;
    ring.activeHalf = activeHalf.contains(id) ? activeHalf[id] : 0;
  }
  if (!rings_.empty()) spdlog::info("found {} service rings from the earlier run", rings_.size());
  return {};
}

Result<void> BpfDataplane::setNode(const NodeSpec& node) {
  mp_node_cfg cfg{};
  // Each family's pool in snatSources' order (config refuses more than MP_SNAT_ADDRS_MAX).
  for (int family : {4, 6}) {
    uint8_t& n = family == 4 ? cfg.n_addr4 : cfg.n_addr6;
    auto& slots = family == 4 ? cfg.addr4 : cfg.addr6;
    for (const IpAddress& a : snatSources(node, family)) {
      if (n < MP_SNAT_ADDRS_MAX) std::memcpy(slots[n++], a.bytes().data(), 16);
    }
  }
  cfg.snat_port_min = node.snatPortMin;
  cfg.snat_port_max = node.snatPortMax;
  cfg.n_dnat = nodeCfg_.n_dnat;
  cfg.syn_flood_threshold = node.synFloodThreshold;
  if (cfg.snat_port_min == 0) {  // "auto" that nobody resolved: the range of Linux's defaults
    cfg.snat_port_min = MP_SNAT_PORT_MIN_DEFAULT;
    cfg.snat_port_max = MP_SNAT_PORT_MAX_DEFAULT;
  }
  nodeCfg_ = cfg;
  return writeNodeCfg();
}

Result<void> BpfDataplane::writeNodeCfg() {
  uint32_t key = 0;
  if (int rc = bpf_map_update_elem(skel_->nodeFd(), &key, &nodeCfg_, BPF_ANY); rc != 0) {
    return errnoError(rc, "update mp_node");
  }
  skel_->bumpForwardingGeneration();
  return {};
}

Result<void> BpfDataplane::upsertEndpoint(uint32_t id, const EndpointEntry& e) {
  if (id >= MP_MAX_ENDPOINTS) return Error{EINVAL, "endpoint id " + std::to_string(id), {}};
  mp_endpoint current{};
  if (int rc = bpf_map_lookup_elem(skel_->endpointsFd(), &id, &current); rc != 0) {
    return errnoError(rc, "read mp_endpoints[" + std::to_string(id) + "]");
  }
  // A slot taken anew starts counting from zero, whatever an earlier owner left.
  if ((current.flags & MP_EP_F_IN_USE) == 0) {
    if (auto r = zeroCounters(skel_->epStatsFd(), id, "mp_ep_stats"); !r) return r;
    zeroHealth(id);
  }
  mp_endpoint value{};
  std::memcpy(value.addr, e.address.bytes().data(), sizeof(value.addr));
  value.port = htons(e.port);
  value.family = static_cast<uint8_t>(e.address.family());
  value.flags = MP_EP_F_IN_USE;
  value.svc_id = e.serviceId;
  if (int rc = bpf_map_update_elem(skel_->endpointsFd(), &id, &value, BPF_ANY); rc != 0) {
    return errnoError(rc, "update mp_endpoints[" + std::to_string(id) + "]");
  }
  skel_->bumpForwardingGeneration();
  recordEndpoint(id, e);
  return syncDnat(id);
}

Result<void> BpfDataplane::removeEndpoint(uint32_t id) {
  if (id >= MP_MAX_ENDPOINTS) return Error{EINVAL, "endpoint id " + std::to_string(id), {}};
  mp_endpoint empty{};
  if (int rc = bpf_map_update_elem(skel_->endpointsFd(), &id, &empty, BPF_ANY); rc != 0) {
    return errnoError(rc, "clear mp_endpoints[" + std::to_string(id) + "]");
  }
  skel_->bumpForwardingGeneration();
  zeroHealth(id);
  forgetEndpoint(id);
  if (auto r = syncDnat(id); !r) return r;
  return zeroCounters(skel_->epStatsFd(), id, "mp_ep_stats");
}

Result<void> BpfDataplane::upsertService(const ServiceEntry& s, const std::vector<uint32_t>* ring) {
  if (s.id >= MP_MAX_SERVICES) return Error{EINVAL, "service id " + std::to_string(s.id), {}};
  const mp_svc_key key = toKey(s.key);
  mp_svc value{};
  value.id = s.id;
  value.ring_size = s.ringSize;
  value.fwd_mode = static_cast<uint8_t>(s.forwarding);
  value.algorithm = static_cast<uint8_t>(s.algorithm);
  value.flags = synServiceFlags(s.synProtection, s.connectRetries);
  const std::string what = "service " + std::to_string(s.id) + " (" + s.key.toString() + ")";
  // A service still waiting for flush() is published first: what follows rewrites it in place.
  if (pending_.contains(s.id)) {
    if (auto r = flush(); !r) return r;
  }
  // Lifetimes first: a packet that finds the service entry finds its lifetimes too.
  if (auto r = writeTimeouts(s.id, s.timeouts); !r) return r.error();
  // And a dnat service's endpoints in mp_ep_vip, so its first replies are recognised.
  if (auto displaced = recordService(s)) {
    if (auto r = syncDnatOfService(*displaced); !r) return r.error();
  }
  if (auto r = syncDnatOfService(s.id); !r) return r.error();

  if (ring == nullptr) {
    auto it = rings_.find(s.id);
    if (it == rings_.end() || it->second.ringSize != s.ringSize) {
      return Error{ENOENT, "no ring of size " + std::to_string(s.ringSize) + " for " + what, {}};
    }
    value.active_half = it->second.activeHalf;
    if (int rc = bpf_map_update_elem(skel_->servicesFd(), &key, &value, BPF_ANY); rc != 0) {
      return errnoError(rc, "update mp_services for " + what);
    }
    skel_->bumpForwardingGeneration();
    return {};
  }

  if (ring->size() != s.ringSize) {
    return Error{EINVAL,
                 "ring of " + std::to_string(ring->size()) + " slots for " + what +
                     " of ring_size " + std::to_string(s.ringSize),
                 {}};
  }
  Ring& current = rings_[s.id];
  if (current.exists() && current.ringSize == s.ringSize) {
    auto fd = openRing(current);
    if (!fd) return fd.error();
    const uint32_t half = 1 - current.activeHalf;
    const std::vector<uint32_t>* known = current.slots.empty() ? nullptr : &current.slots;
    if (auto r = skel_->writeRing(key, value, fd->get(), half, *ring, known); !r) {
      current.slots.clear();  // the half may hold part of the write
      return fromBpf(r.error());
    }
    current.activeHalf = half;
    skel_->bumpForwardingGeneration();
    // The half packets just left gets the same ring, so both halves stay equal and the next
    // change writes only the slots it changes (a fraction of the ring for a weight or an
    // endpoint). A packet that read the entry before the flip may still index this half: every
    // slot it finds names an endpoint of the old or of the new ring, both still in their slots.
    if (auto r = LbSkeleton::writeRingHalf(fd->get(), 1 - half, *ring, known); !r) {
      current.slots.clear();
      return fromBpf(r.error());
    }
    current.slots = *ring;
    return {};
  }

  // An id taking its first ring is (re)assigned: its SYN protection starts from zero, whatever
  // an earlier owner's flood left in the pinned maps.
  if (!current.exists()) {
    if (auto r = zeroSynState(s.id); !r) {
      rings_.erase(s.id);
      return r.error();
    }
  }
  // First ring of this id, or M changed: a new map, with the ring in both halves. When it
  // replaces one, a packet still indexing with the old entry (old M, old half) finds an endpoint;
  // and with both halves equal the next change writes only the slots it changes.
  auto fresh = LbSkeleton::createRingMap(s.ringSize, ring);
  if (!fresh) {
    if (!current.exists()) rings_.erase(s.id);
    return fromBpf(fresh.error());
  }
  if (!current.exists()) {
    // A new service: nothing points at this id yet, so its ring and entry can wait for flush()
    // and be installed with the others of this change in one update of mp_rings.
    current.mapId = mapIdOf(fresh->get());
    current.pending = std::move(*fresh);
    current.ringSize = s.ringSize;
    current.activeHalf = 0;
    current.slots = *ring;
    value.active_half = 0;
    pending_[s.id] = PendingService{key, value};
    return {};
  }
  spdlog::info("{}: ring resized {} -> {}", what, current.ringSize, s.ringSize);
  // Both halves hold the ring already: this only publishes it (previous = the ring: no slot to
  // write).
  if (auto r = skel_->writeRing(key, value, fresh->get(), 0, *ring, ring); !r) {
    if (!current.exists()) rings_.erase(s.id);
    return fromBpf(r.error());
  }
  current.mapId = mapIdOf(fresh->get());  // mp_rings holds it now: our fd closes here
  current.ringSize = s.ringSize;
  current.activeHalf = 0;
  current.slots = *ring;
  skel_->bumpForwardingGeneration();
  return {};
}

Result<void> BpfDataplane::removeServiceEntry(const ServiceKey& k) {
  const mp_svc_key key = toKey(k);
  std::erase_if(pending_,
                [&](const auto& p) { return std::memcmp(&p.second.key, &key, sizeof(key)) == 0; });
  if (int rc = bpf_map_delete_elem(skel_->servicesFd(), &key); rc != 0 && errno != ENOENT) {
    return errnoError(rc, "delete mp_services entry " + k.toString());
  }
  skel_->bumpForwardingGeneration();
  if (auto id = forgetService(k)) return syncDnatOfService(*id);
  return {};
}

Result<void> BpfDataplane::releaseService(uint32_t id) {
  if (id >= MP_MAX_SERVICES) return Error{EINVAL, "service id " + std::to_string(id), {}};
  pending_.erase(id);
  if (int rc = bpf_map_delete_elem(skel_->ringsFd(), &id); rc != 0 && errno != ENOENT) {
    return errnoError(rc, "delete mp_rings[" + std::to_string(id) + "]");
  }
  skel_->bumpForwardingGeneration();
  rings_.erase(id);
  if (auto r = zeroSynState(id); !r) return r;
  return zeroCounters(skel_->svcStatsFd(), id, "mp_svc_stats");
}

Result<UniqueFd> BpfDataplane::openRing(const Ring& ring) const {
  UniqueFd fd(bpf_map_get_fd_by_id(ring.mapId));
  if (!fd.valid()) {
    return errnoError(-errno, "open ring map id " + std::to_string(ring.mapId),
                      "the ring map left mp_rings (was the pin root removed under meshd?)");
  }
  return fd;
}

Result<void> BpfDataplane::flush() {
  if (pending_.empty()) return {};
  std::vector<uint32_t> ids;
  std::vector<int> fds;
  ids.reserve(pending_.size());
  fds.reserve(pending_.size());
  for (const auto& [id, p] : pending_) {
    ids.push_back(id);
    fds.push_back(rings_.at(id).pending.get());
  }
  auto pending = std::move(pending_);
  pending_.clear();
  // The rings first, then the entries that point packets at them.
  if (auto r = skel_->installRings(ids, fds); !r) return fromBpf(r.error());
  // mp_rings holds each of them now.
  for (uint32_t id : ids) rings_.at(id).pending.reset();
  for (const auto& [id, p] : pending) {
    if (int rc = bpf_map_update_elem(skel_->servicesFd(), &p.key, &p.value, BPF_ANY); rc != 0) {
      return errnoError(rc, "update mp_services for service " + std::to_string(id));
    }
  }
  skel_->bumpForwardingGeneration();
  return {};
}

Result<Counters> BpfDataplane::readCounters(int fd, uint32_t id, const char* map) {
  std::vector<mp_counters> perCpu(static_cast<size_t>(cpus_));
  if (int rc = bpf_map_lookup_elem(fd, &id, perCpu.data()); rc != 0) {
    return errnoError(rc, std::string("read ") + map + "[" + std::to_string(id) + "]");
  }
  return sumPerCpu(perCpu.data(), perCpu.size());
}

Result<void> BpfDataplane::zeroCounters(int fd, uint32_t id, const char* map) {
  std::vector<mp_counters> zeros(static_cast<size_t>(cpus_));
  if (int rc = bpf_map_update_elem(fd, &id, zeros.data(), BPF_ANY); rc != 0) {
    return errnoError(rc, std::string("zero ") + map + "[" + std::to_string(id) + "]");
  }
  return {};
}

Result<Counters> BpfDataplane::serviceStats(uint32_t id) {
  return readCounters(skel_->svcStatsFd(), id, "mp_svc_stats");
}

Result<Counters> BpfDataplane::endpointStats(uint32_t id) {
  return readCounters(skel_->epStatsFd(), id, "mp_ep_stats");
}

Result<std::vector<uint64_t>> BpfDataplane::exceptionCounts() {
  std::vector<uint64_t> out(MP_EXC_MAX, 0);
  std::vector<uint64_t> perCpu(static_cast<size_t>(cpus_));
  for (uint32_t reason = 0; reason < MP_EXC_MAX; ++reason) {
    if (int rc = bpf_map_lookup_elem(skel_->excFd(), &reason, perCpu.data()); rc != 0) {
      return errnoError(rc, "read mp_exc[" + std::to_string(reason) + "]");
    }
    for (uint64_t v : perCpu) out[reason] += v;
  }
  return out;
}

Result<FlowCacheStats> BpfDataplane::flowCacheStats() {
  auto c = skel_->flowCacheStats();
  if (!c) return fromBpf(c.error());
  return FlowCacheStats{.slots = skel_->flowCacheSlots(),
                        .hits = c->hits,
                        .misses = c->misses,
                        .conflicts = c->conflicts,
                        .bypassed = c->bypassed};
}

Result<RealizedSnapshot> BpfDataplane::snapshot() {
  RealizedSnapshot snap;
  forEachService(skel_->servicesFd(), [&](const mp_svc_key& key, const mp_svc& svc) {
    ServiceEntry e;
    e.key = ServiceKey{fromBytes(key.addr, key.family), ntohs(key.port),
                       static_cast<Protocol>(key.proto)};
    e.id = svc.id;
    e.ringSize = svc.ring_size;
    e.algorithm = static_cast<Algorithm>(svc.algorithm);
    e.forwarding = static_cast<ForwardingMode>(svc.fwd_mode);
    std::tie(e.synProtection, e.connectRetries) = synSettingsFromFlags(svc.flags);
    snap.services.push_back(e);
    recordService(e);  // what the dnat bookkeeping works from after an adoption
  });
  for (const auto& [id, ring] : rings_) snap.ringIds.push_back(id);
  for (uint32_t id = 0; id < MP_MAX_ENDPOINTS; ++id) {
    mp_endpoint ep{};
    if (int rc = bpf_map_lookup_elem(skel_->endpointsFd(), &id, &ep); rc != 0) {
      return errnoError(rc, "read mp_endpoints[" + std::to_string(id) + "]");
    }
    if ((ep.flags & MP_EP_F_IN_USE) == 0) continue;
    snap.endpoints.emplace_back(
        id, EndpointEntry{fromBytes(ep.addr, ep.family), ntohs(ep.port), ep.svc_id});
    recordEndpoint(id, snap.endpoints.back().second);
  }
  mp_node_cfg cfg{};
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(skel_->nodeFd(), &zero, &cfg) == 0) nodeCfg_.n_dnat = cfg.n_dnat;
  return snap;
}

Result<void> BpfDataplane::writeTimeouts(uint32_t id, const ConnTimeouts& t) {
  mp_svc_tmo value{};
  value.jiffies[MP_TMO_TCP_SYN] = skel_->msToJiffies(t.tcpSynMs);
  value.jiffies[MP_TMO_TCP_EST] = skel_->msToJiffies(t.tcpEstablishedMs);
  value.jiffies[MP_TMO_TCP_FIN] = skel_->msToJiffies(t.tcpFinMs);
  value.jiffies[MP_TMO_TCP_CLOSED] = skel_->msToJiffies(t.tcpClosedMs);
  value.jiffies[MP_TMO_UDP] = skel_->msToJiffies(t.udpMs);
  value.jiffies[MP_TMO_UDP_REPLIED] = skel_->msToJiffies(t.udpRepliedMs);
  if (int rc = bpf_map_update_elem(skel_->svcTmoFd(), &id, &value, BPF_ANY); rc != 0) {
    return errnoError(rc, "update mp_svc_tmo[" + std::to_string(id) + "]");
  }
  return {};
}

Result<ConnTableStats> BpfDataplane::connTableStats() {
  ConnTableStats s = lastConnStats_;
  s.establishedCapacity = skel_->options().connTableSize;
  s.halfOpenCapacity = skel_->options().halfTableSize;
  s.expiredReaped = expiredReaped_;
  s.bytesPerConnection =
      connBytes(skel_->options().connTableSize, sizeof(mp_flow), sizeof(mp_conn)) +
      connBytes(skel_->options().connTableSize, sizeof(mp_flow), sizeof(mp_rnat));
  s.bytesPerDnatConnection =
      connBytes(skel_->options().connTableSize, sizeof(mp_flow), sizeof(mp_conn));
  s.bytesPerHalfOpen = connBytes(skel_->options().halfTableSize, sizeof(mp_flow), sizeof(mp_conn)) +
                       connBytes(skel_->options().halfTableSize, sizeof(mp_flow), sizeof(mp_rnat));
  return s;
}

namespace {

// Nothing to walk for: no endpoints to flush, or no health map to count toward.
class NoWalk : public ConnTableWalk {
 public:
  Result<bool> step(std::chrono::microseconds) override { return true; }
  const ConnWalk& result() const override { return walk_; }

 private:
  ConnWalk walk_;
};

}  // namespace

Result<std::unique_ptr<ConnTableWalk>> BpfDataplane::startFlush(const std::set<uint32_t>& ids) {
  if (ids.empty()) return std::unique_ptr<ConnTableWalk>(std::make_unique<NoWalk>());
  return std::unique_ptr<ConnTableWalk>(
      // skel_ read when the walk bumps, not now: an upgrade meanwhile replaces the skeleton.
      std::make_unique<FlushWalk>(walkTables_.conns.get(), health_, slotEpoch_, ids,
                                  [this] { skel_->bumpForwardingGeneration(); }));
}

Result<std::unique_ptr<ConnTableWalk>> BpfDataplane::startResync() {
  if (health_ == nullptr) return std::unique_ptr<ConnTableWalk>(std::make_unique<NoWalk>());
  auto now = skel_->jiffiesNow();
  if (!now) return fromBpf(now.error());
  ConnTables tables;
  tables.conns = walkTables_.conns.get();
  tables.rnat = walkTables_.rnat.get();
  tables.half = walkTables_.half.get();
  tables.reverseKey = [this](const mp_flow& client, const mp_conn& c) -> std::optional<mp_flow> {
    return reverseKey(client, c);
  };
  auto walk = std::make_unique<ResyncWalk>(std::move(tables), *now, health_, slotEpoch_);
  walk->onComplete([this](const ConnWalk& w) {
    expiredReaped_ += w.expired;
    lastConnStats_.established =
        w.entries >= w.halfOpen + w.expired ? w.entries - w.halfOpen - w.expired : 0;
    lastConnStats_.halfOpen = w.halfOpen;
    lastConnStats_.snatPortsInUse = w.snatPorts;
    if (w.expired != 0) skel_->bumpForwardingGeneration();
  });
  return std::unique_ptr<ConnTableWalk>(std::move(walk));
}

// endpoint -> node:snat_port of an established entry: its endpoint slot as mp_endpoints holds it
// now (a slot freed since has no reverse key to give) and its source in the node's pool.
std::optional<mp_flow> BpfDataplane::reverseKey(const mp_flow& client, const mp_conn& c) {
  mp_endpoint ep{};
  if (bpf_map_lookup_elem(skel_->endpointsFd(), &c.ep_id, &ep) != 0 ||
      (ep.flags & MP_EP_F_IN_USE) == 0 || ep.family != client.family) {
    return std::nullopt;
  }
  mp_node_cfg node{};
  const uint32_t zero = 0;
  if (bpf_map_lookup_elem(skel_->nodeFd(), &zero, &node) != 0) return std::nullopt;
  const uint8_t n = client.family == MP_AF_INET ? node.n_addr4 : node.n_addr6;
  if (c.snat_addr >= n || c.snat_addr >= MP_SNAT_ADDRS_MAX) return std::nullopt;
  mp_flow key{};
  std::memcpy(key.src, ep.addr, sizeof(key.src));
  std::memcpy(key.dst,
              client.family == MP_AF_INET ? node.addr4[c.snat_addr] : node.addr6[c.snat_addr],
              sizeof(key.dst));
  key.sport = ep.port;
  key.dport = c.snat_port;
  key.proto = client.proto;
  key.family = client.family;
  return key;
}

int BpfDataplane::eventsFd() { return events_ != nullptr ? ring_buffer__epoll_fd(events_) : -1; }

int BpfDataplane::onEvent(void* ctx, void* data, size_t size) {
  auto* self = static_cast<BpfDataplane*>(ctx);
  if (size < sizeof(mp_health_event) || self->sink_ == nullptr) return 0;
  mp_health_event raw{};
  std::memcpy(&raw, data, sizeof(raw));
  (*self->sink_)(DatapathEvent{raw.ns, raw.ep_id, raw.kind, raw.reason, raw.fails});
  return 0;
}

Result<size_t> BpfDataplane::consumeEvents(const std::function<void(const DatapathEvent&)>& sink) {
  if (events_ == nullptr) return size_t{0};
  sink_ = &sink;
  const int n = ring_buffer__consume(events_);
  sink_ = nullptr;
  if (n < 0) return errnoError(n, "read the mp_events ring buffer");
  return static_cast<size_t>(n);
}

}  // namespace meshpath
