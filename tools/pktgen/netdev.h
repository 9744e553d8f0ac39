// netdev.h — the few facts pktgen needs about network devices and namespaces: entering a named
// namespace (ip netns), an interface's index, MAC and first address of a family.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bpf_result.h"
#include "unique_fd.h"

namespace meshpath::pktgen {

using Mac = std::array<uint8_t, 6>;

std::optional<Mac> parseMac(const std::string& text);
std::string formatMac(const Mac& mac);

// Moves the calling thread into network namespace `name` (/run/netns/<name>) and back to the one
// it was in when destroyed. An empty name changes nothing. Call before starting threads: a new
// thread inherits the namespace of the thread that created it.
class NetnsScope {
 public:
  static BpfResult<std::unique_ptr<NetnsScope>> enter(const std::string& name);
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  explicit NetnsScope(UniqueFd original) : original_(std::move(original)) {}
  UniqueFd original_;
};

struct Netdev {
  std::string name;
  int ifindex = 0;
  Mac mac{};
  int mtu = 1500;
};

// The interface in the current namespace; the error names it and says "no such interface".
BpfResult<Netdev> findNetdev(const std::string& name);

// The first address of `family` (AF_INET / AF_INET6, IPv6 link-local skipped) on the interface,
// as network-order bytes (4 or 16).
std::optional<std::array<uint8_t, 16>> firstAddress(const std::string& ifname, int family);

}  // namespace meshpath::pktgen
