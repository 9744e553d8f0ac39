// bpf_dnat.cpp — BpfDataplane's part of dnat forwarding: a dnat service's endpoints are in
// mp_ep_vip (their replies are told apart by their address and port), and mp_node.n_dnat counts
// dnat services (0: no packet is looked up as a dnat reply).
//
// The bookkeeping is indexed both ways (a service's endpoint slots, a key's service id) and the
// count kept as entries come and go, so a change costs its own service's endpoints: at 10,000
// endpoints, walking them all for each changed service was most of a change's time, and at
// 65,536 services recounting them was.
#include <arpa/inet.h>
#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bpf_dataplane.h"

namespace meshpath {

std::optional<uint32_t> BpfDataplane::recordService(const ServiceEntry& s) {
  // An entry of another id under the same key was overwritten in mp_services: it is gone.
  std::optional<uint32_t> displaced;
  if (auto same = serviceIds_.find(s.key); same != serviceIds_.end() && same->second != s.id) {
    displaced = forgetService(s.key);
  }
  if (auto had = services_.find(s.id); had != services_.end()) {
    dnatServices_ -= had->second.forwarding == ForwardingMode::kDnat;
    if (had->second.key != s.key) serviceIds_.erase(had->second.key);
  }
  services_[s.id] = s;
  serviceIds_[s.key] = s.id;
  dnatServices_ += s.forwarding == ForwardingMode::kDnat;
  return displaced;
}

std::optional<uint32_t> BpfDataplane::forgetService(const ServiceKey& key) {
  auto it = serviceIds_.find(key);
  if (it == serviceIds_.end()) return std::nullopt;
  const uint32_t id = it->second;
  serviceIds_.erase(it);
  if (auto svc = services_.find(id); svc != services_.end()) {
    dnatServices_ -= svc->second.forwarding == ForwardingMode::kDnat;
    services_.erase(svc);
  }
  return id;
}

void BpfDataplane::recordEndpoint(uint32_t id, const EndpointEntry& e) {
  if (auto had = endpoints_.find(id); had != endpoints_.end()) {
    eraseEndpointOf(had->second.serviceId, id);
  }
  endpoints_[id] = e;
  endpointsOf_[e.serviceId].insert(id);
}

void BpfDataplane::forgetEndpoint(uint32_t id) {
  auto had = endpoints_.find(id);
  if (had == endpoints_.end()) return;
  eraseEndpointOf(had->second.serviceId, id);
  endpoints_.erase(had);
}

void BpfDataplane::eraseEndpointOf(uint32_t serviceId, uint32_t endpointId) {
  auto of = endpointsOf_.find(serviceId);
  if (of == endpointsOf_.end()) return;
  of->second.erase(endpointId);
  if (of->second.empty()) endpointsOf_.erase(of);
}

// After any change of an endpoint slot, or of its service's entry.
Result<void> BpfDataplane::syncDnat(uint32_t endpointId) {
  std::optional<mp_ep_key> want;
  mp_ep_vip value{};
  if (auto e = endpoints_.find(endpointId); e != endpoints_.end()) {
    auto found = services_.find(e->second.serviceId);
    if (found != services_.end() && found->second.forwarding == ForwardingMode::kDnat) {
      const ServiceEntry& svc = found->second;
      mp_ep_key key{};
      std::memcpy(key.addr, e->second.address.bytes().data(), sizeof(key.addr));
      key.port = htons(e->second.port);
      key.proto = static_cast<uint8_t>(svc.key.protocol);
      key.family = static_cast<uint8_t>(e->second.address.family());
      want = key;
      std::memcpy(value.vip, svc.key.vip.bytes().data(), sizeof(value.vip));
      value.vip_port = htons(svc.key.port);
      value.ep_id = endpointId;
    }
  }
  const int fd = skel_->epVipFd();
  if (auto had = dnatKeys_.find(endpointId); had != dnatKeys_.end()) {
    const bool same = want && std::memcmp(&*want, &had->second, sizeof(mp_ep_key)) == 0;
    if (!same) {
      if (int rc = bpf_map_delete_elem(fd, &had->second); rc != 0 && errno != ENOENT) {
        return errnoError(rc, "delete mp_ep_vip of endpoint " + std::to_string(endpointId));
      }
      dnatKeys_.erase(had);
    }
  }
  if (want) {
    if (int rc = bpf_map_update_elem(fd, &*want, &value, BPF_ANY); rc != 0) {
      return errnoError(rc, "update mp_ep_vip of endpoint " + std::to_string(endpointId));
    }
    dnatKeys_[endpointId] = *want;
  }
  return {};
}

// After a change of a service entry (recorded or forgotten first): its endpoints' mp_ep_vip
// entries, then the count.
Result<void> BpfDataplane::syncDnatOfService(uint32_t serviceId) {
  if (auto of = endpointsOf_.find(serviceId); of != endpointsOf_.end()) {
    auto svc = services_.find(serviceId);
    const bool dnat = svc != services_.end() && svc->second.forwarding == ForwardingMode::kDnat;
    // Not (or no longer) dnat: only the endpoints that have an mp_ep_vip entry can change.
    for (uint32_t id : std::vector<uint32_t>(of->second.begin(), of->second.end())) {
      if (!dnat && !dnatKeys_.contains(id)) continue;
      if (auto r = syncDnat(id); !r) return r;
    }
  }
  // n_dnat is 16 bits and read as "any?": 65,536 dnat services must not wrap it to 0.
  const auto count = static_cast<uint16_t>(std::min<uint32_t>(dnatServices_, UINT16_MAX));
  if (count == nodeCfg_.n_dnat) return {};
  nodeCfg_.n_dnat = count;
  return writeNodeCfg();
}

}  // namespace meshpath
