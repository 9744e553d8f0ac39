// snat.h — the node's SNAT sources and port range: which addresses a family's connections leave
// from (node.ipv4/ipv6, then node.snat_pool), how many ports that gives each endpoint, and the
// "auto" port range meshd picks outside the kernel's ephemeral range. Pure functions: meshd reads
// and writes /proc (local_ports.h), the config and the API only compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model.h"

namespace meshpath {

// SNAT source addresses per family, node.ipv4/ipv6 included (bpf/abi.h MP_SNAT_ADDRS_MAX).
inline constexpr size_t kMaxSnatAddrsPerFamily = 8;
// The lowest SNAT port: below it are the privileged ports services listen on.
inline constexpr uint16_t kMinSnatPort = 1024;

using PortRange = std::pair<uint16_t, uint16_t>;  // first, last (inclusive)

// node.snat_ports 0-0: meshd picks the range at start (autoSnatPortRange).
inline bool snatPortsAuto(const NodeSpec& node) {
  return node.snatPortMin == 0 && node.snatPortMax == 0;
}

// The widest contiguous range within 1024..65535 that does not overlap the kernel's ephemeral
// range [ephemeralMin, ephemeralMax], so the kernel never autobinds a port a SNAT connection holds
// (Linux's default 32768-60999 gives 1024-32767). On a tie the upper range, away from the ports
// services usually listen on. {0, 0} when the ephemeral range leaves nothing.
PortRange autoSnatPortRange(uint16_t ephemeralMin, uint16_t ephemeralMax);

// The text of /proc/sys/net/ipv4/ip_local_port_range ("32768\t60999\n"); nullopt if malformed.
std::optional<PortRange> parseEphemeralPortRange(const std::string& text);

bool portRangesOverlap(PortRange a, PortRange b);

// What to write to /proc/sys/net/ipv4/ip_local_reserved_ports ("8080,9000-9010") so that it keeps
// what it holds and also reserves `range`; nullopt when `current` already covers every port of it.
std::optional<std::string> reservedPortsWith(const std::string& current, PortRange range);

// The SNAT sources of `family` (4 or 6): node.ipv4 (or ipv6) first, then the pool's addresses of
// that family in the order written. Empty when the node has no address of that family.
std::vector<IpAddress> snatSources(const NodeSpec& node, int family);

// Ports per source address: max - min + 1; 0 while the range is "auto" and unresolved.
uint64_t snatPortCount(const NodeSpec& node);

// How many connections one endpoint of `family` can hold at once: every source address has the
// whole port range toward each endpoint address and port.
uint64_t snatCapacity(const NodeSpec& node, int family);

// One entry of node.snat_pool as written: an address ("10.0.2.5") or a prefix ("10.0.2.8/29").
// A prefix gives its addresses, without the network and broadcast addresses for IPv4 prefixes
// shorter than /31. Refused (nullopt, `why` says why): not an address or prefix, host bits set,
// more than kMaxSnatAddrsPerFamily addresses.
std::optional<std::vector<IpAddress>> expandSnatPoolEntry(const std::string& text,
                                                          std::string* why);

}  // namespace meshpath
