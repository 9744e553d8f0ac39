// bpf_passive_health.cpp — BpfDataplane's part of passive health (bpf/abi.h, mp_ep_health): the
// entries meshd shares with the datapath through an mmap of the map, each field read and written
// with one __atomic builtin, since packets update them at the same moment.
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "bpf_dataplane.h"

namespace meshpath {

Result<void> BpfDataplane::mapHealth() {
  // An array map's mmap covers its values back to back (value size rounded up to 8: 64 here),
  // from offset 0; the same for a map adopted from the pin, which is the point: the counts of
  // the earlier run stay.
  const long page = ::sysconf(_SC_PAGESIZE);
  const size_t bytes = sizeof(mp_ep_health) * MP_MAX_ENDPOINTS;
  healthBytes_ = (bytes + static_cast<size_t>(page) - 1) / static_cast<size_t>(page) *
                 static_cast<size_t>(page);
  void* p =
      ::mmap(nullptr, healthBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, skel_->epHealthFd(), 0);
  if (p == MAP_FAILED) {
    return errnoError(-errno, "mmap mp_ep_health",
                      "the pinned mp_ep_health must be BPF_F_MMAPABLE (a map of an older meshd? "
                      "`meshd --teardown` removes the pins, dropping all connections)");
  }
  health_ = static_cast<mp_ep_health*>(p);
  events_ = ring_buffer__new(skel_->eventsFd(), &BpfDataplane::onEvent, this, nullptr);
  if (events_ == nullptr) return errnoError(-errno, "open the mp_events ring buffer");
  return {};
}

mp_ep_health* BpfDataplane::healthEntry(uint32_t id) const {
  return health_ != nullptr && id < MP_MAX_ENDPOINTS ? &health_[id] : nullptr;
}

void BpfDataplane::zeroHealth(uint32_t id) {
  mp_ep_health* e = healthEntry(id);
  if (e == nullptr) return;
  ++slotEpoch_[id];  // a walk in progress must not count this slot's past into its present
  // Field by field: a packet of a connection the slot's earlier owner left may still count.
  __atomic_store_n(&e->fall, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&e->fails, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&e->flags, 0u, __ATOMIC_RELAXED);
  __atomic_store_n(&e->opened, uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&e->closed, uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&e->adjust, int64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&e->rtt_ns, uint64_t{0}, __ATOMIC_RELAXED);
  __atomic_store_n(&e->down_ns, uint64_t{0}, __ATOMIC_SEQ_CST);
}

Result<void> BpfDataplane::setPassiveFall(uint32_t id, uint32_t fall) {
  mp_ep_health* e = healthEntry(id);
  if (e == nullptr) return Error{EINVAL, "endpoint id " + std::to_string(id), {}};
  __atomic_store_n(&e->fall, fall, __ATOMIC_SEQ_CST);
  return {};
}

Result<void> BpfDataplane::clearDown(uint32_t id) {
  mp_ep_health* e = healthEntry(id);
  if (e == nullptr) return Error{EINVAL, "endpoint id " + std::to_string(id), {}};
  // The count first: were the mark cleared first, failures still arriving could run the old
  // count past `fall` without marking it again. The other way round, a new mark could only be
  // lost to `fall` failures within these two instructions.
  __atomic_store_n(&e->fails, 0u, __ATOMIC_SEQ_CST);
  __atomic_fetch_and(&e->flags, ~MP_EPH_F_DOWN, __ATOMIC_SEQ_CST);
  return {};
}

Result<EndpointDatapathHealth> BpfDataplane::endpointHealth(uint32_t id) {
  const mp_ep_health* e = healthEntry(id);
  if (e == nullptr) return Error{EINVAL, "endpoint id " + std::to_string(id), {}};
  EndpointDatapathHealth h;
  h.fails = __atomic_load_n(&e->fails, __ATOMIC_RELAXED);
  h.down = (__atomic_load_n(&e->flags, __ATOMIC_RELAXED) & MP_EPH_F_DOWN) != 0;
  h.downNs = __atomic_load_n(&e->down_ns, __ATOMIC_RELAXED);
  h.fall = __atomic_load_n(&e->fall, __ATOMIC_RELAXED);
  const uint64_t opened = __atomic_load_n(&e->opened, __ATOMIC_RELAXED);
  const uint64_t closed = __atomic_load_n(&e->closed, __ATOMIC_RELAXED);
  const int64_t adjust = __atomic_load_n(&e->adjust, __ATOMIC_RELAXED);
  h.activeConns = std::max<int64_t>(0, static_cast<int64_t>(opened - closed) + adjust);
  h.rttNs = __atomic_load_n(&e->rtt_ns, __ATOMIC_RELAXED);
  return h;
}

}  // namespace meshpath
