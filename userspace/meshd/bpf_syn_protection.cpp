// bpf_syn_protection.cpp — BpfDataplane's part of SYN protection (bpf/abi.h, "SYN protection"):
// the cookie key in mp_syn_secret, each service's auto switch (mp_syn_guard) and counters
// (mp_syn_stats). The mode and connect_retries travel in mp_svc.flags (upsertService).
#include <bpf/bpf.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "bpf_dataplane.h"
#include "synguard.h"

namespace meshpath {

// A key already there stays: replacing it would invalidate every cookie in flight (a restart),
// and nodes of one mesh may have been given the same key so that ECMP can move a flow between
// SYN-ACK and ACK.
Result<void> BpfDataplane::initSynSecret() {
  const uint32_t zero = 0;
  mp_syn_secret secret{};
  if (int rc = bpf_map_lookup_elem(skel_->synSecretFd(), &zero, &secret); rc != 0) {
    return errnoError(rc, "read mp_syn_secret");
  }
  if (secret.k0 != 0 || secret.k1 != 0) {
    spdlog::info("SYN cookie key kept from the pinned mp_syn_secret");
    return {};
  }
  uint8_t bytes[sizeof(secret)];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoError(-errno, "draw the SYN cookie key (getrandom)");
    got += static_cast<size_t>(n);
  }
  std::memcpy(&secret, bytes, sizeof(secret));
  if (int rc = bpf_map_update_elem(skel_->synSecretFd(), &zero, &secret, BPF_ANY); rc != 0) {
    return errnoError(rc, "write mp_syn_secret");
  }
  spdlog::info("SYN cookie key drawn (mp_syn_secret)");
  return {};
}

// Mapped as mp_ep_health is (mapHealth): the datapath and meshd both roll a guard's window with
// atomics (synguard.h), so a flood that stops dead still switches off on time.
Result<void> BpfDataplane::mapSynGuards() {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t bytes = sizeof(mp_syn_guard) * MP_MAX_SERVICES;
  synGuardBytes_ = (bytes + page - 1) / page * page;
  void* p =
      ::mmap(nullptr, synGuardBytes_, PROT_READ | PROT_WRITE, MAP_SHARED, skel_->synGuardFd(), 0);
  if (p == MAP_FAILED) {
    return errnoError(-errno, "mmap mp_syn_guard",
                      "the pinned mp_syn_guard must be BPF_F_MMAPABLE (a map of an older meshd? "
                      "`meshd --teardown` removes the pinned maps)");
  }
  synGuards_ = static_cast<mp_syn_guard*>(p);
  return {};
}

Result<void> BpfDataplane::zeroSynState(uint32_t id) {
  const mp_syn_guard guard{};
  if (int rc = bpf_map_update_elem(skel_->synGuardFd(), &id, &guard, BPF_ANY); rc != 0) {
    return errnoError(rc, "zero mp_syn_guard[" + std::to_string(id) + "]");
  }
  const std::vector<mp_syn_counters> zeros(static_cast<size_t>(cpus_));
  if (int rc = bpf_map_update_elem(skel_->synStatsFd(), &id, zeros.data(), BPF_ANY); rc != 0) {
    return errnoError(rc, "zero mp_syn_stats[" + std::to_string(id) + "]");
  }
  return {};
}

Result<SynStats> BpfDataplane::synStats(uint32_t id) {
  if (id >= MP_MAX_SERVICES) return Error{EINVAL, "service id " + std::to_string(id), {}};
  std::vector<mp_syn_counters> perCpu(static_cast<size_t>(cpus_));
  if (int rc = bpf_map_lookup_elem(skel_->synStatsFd(), &id, perCpu.data()); rc != 0) {
    return errnoError(rc, "read mp_syn_stats[" + std::to_string(id) + "]");
  }
  SynStats s;
  addPerCpu(s, perCpu.data(), perCpu.size());
  readSynGuard(id, s);
  return s;
}

}  // namespace meshpath
