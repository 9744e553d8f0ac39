// snat.cpp — SNAT sources, port counts, the auto port range and the reserved-ports list.
#include "snat.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <sstream>

#include "abi.h"

namespace meshpath {

#ifdef MP_SNAT_ADDRS_MAX
static_assert(kMaxSnatAddrsPerFamily == MP_SNAT_ADDRS_MAX);
#endif

namespace {

constexpr uint32_t kMaxPort = 65535;

std::optional<uint32_t> parseNumber(const std::string& text, uint32_t max) {
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > max) return std::nullopt;
  return value;
}

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  const size_t first = s.find_first_not_of(space);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

}  // namespace

PortRange autoSnatPortRange(uint16_t ephemeralMin, uint16_t ephemeralMax) {
  if (ephemeralMin > ephemeralMax) std::swap(ephemeralMin, ephemeralMax);
  uint32_t belowSize = 0, aboveSize = 0;
  if (ephemeralMin > kMinSnatPort) belowSize = ephemeralMin - kMinSnatPort;
  if (ephemeralMax < kMaxPort) {
    const uint32_t first = std::max<uint32_t>(ephemeralMax + 1u, kMinSnatPort);
    aboveSize = kMaxPort - first + 1;
  }
  if (belowSize == 0 && aboveSize == 0) return {0, 0};
  if (belowSize > aboveSize) {
    return {kMinSnatPort, static_cast<uint16_t>(ephemeralMin - 1)};
  }
  const uint32_t first = std::max<uint32_t>(ephemeralMax + 1u, kMinSnatPort);
  return {static_cast<uint16_t>(first), static_cast<uint16_t>(kMaxPort)};
}

std::optional<PortRange> parseEphemeralPortRange(const std::string& text) {
  std::istringstream in(text);
  std::string a, b, rest;
  if (!(in >> a >> b) || (in >> rest)) return std::nullopt;
  const auto lo = parseNumber(a, kMaxPort);
  const auto hi = parseNumber(b, kMaxPort);
  if (!lo || !hi || *lo > *hi) return std::nullopt;
  return PortRange{static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi)};
}

bool portRangesOverlap(PortRange a, PortRange b) {
  return a.first <= b.second && b.first <= a.second;
}

std::optional<std::string> reservedPortsWith(const std::string& current, PortRange range) {
  const std::string list = trim(current);
  // The kernel prints ranges as "a-b" and single ports as "a", comma-separated, sorted and merged;
  // an entry we cannot read is kept as it is and simply not counted as covering anything.
  std::vector<PortRange> held;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    item = trim(item);
    const size_t dash = item.find('-');
    const auto lo = parseNumber(item.substr(0, dash), kMaxPort);
    const auto hi = dash == std::string::npos ? lo : parseNumber(item.substr(dash + 1), kMaxPort);
    if (lo && hi && *lo <= *hi) held.emplace_back(*lo, *hi);
  }
  std::sort(held.begin(), held.end());
  uint32_t next = range.first;  // the first port of `range` not yet known to be reserved
  for (const auto& [lo, hi] : held) {
    if (lo > next) break;
    next = std::max<uint32_t>(next, uint32_t{hi} + 1);
    if (next > range.second) return std::nullopt;
  }
  const std::string entry = range.first == range.second
                                ? std::to_string(range.first)
                                : std::to_string(range.first) + "-" + std::to_string(range.second);
  return list.empty() ? entry : list + "," + entry;
}

std::vector<IpAddress> snatSources(const NodeSpec& node, int family) {
  std::vector<IpAddress> out;
  const auto& primary = family == 6 ? node.ipv6 : node.ipv4;
  if (!primary) return out;
  out.push_back(*primary);
  for (const IpAddress& a : node.snatPool) {
    if (a.family() == family && a != *primary) out.push_back(a);
  }
  return out;
}

uint64_t snatPortCount(const NodeSpec& node) {
  if (snatPortsAuto(node) || node.snatPortMin > node.snatPortMax) return 0;
  return uint64_t{node.snatPortMax} - node.snatPortMin + 1;
}

uint64_t snatCapacity(const NodeSpec& node, int family) {
  return snatSources(node, family).size() * snatPortCount(node);
}

std::optional<std::vector<IpAddress>> expandSnatPoolEntry(const std::string& text,
                                                          std::string* why) {
  auto refuse = [&](const std::string& reason) -> std::optional<std::vector<IpAddress>> {
    if (why != nullptr) *why = reason;
    return std::nullopt;
  };
  const size_t slash = text.find('/');
  const auto base = IpAddress::parse(text.substr(0, slash));
  if (!base) return refuse("is not an IP address or a prefix like 10.0.2.8/29");
  if (slash == std::string::npos) return std::vector<IpAddress>{*base};

  const uint32_t bits = base->isV4() ? 32 : 128;
  const auto prefix = parseNumber(text.substr(slash + 1), bits);
  if (!prefix) {
    return refuse("has a bad prefix length (0.." + std::to_string(bits) + " for " +
                  (base->isV4() ? "IPv4" : "IPv6") + ")");
  }
  const uint32_t hostBits = bits - *prefix;
  // More than 8 addresses can never fit (kMaxSnatAddrsPerFamily): refuse before expanding a /8.
  const uint64_t size = hostBits >= 4 ? 16 : (uint64_t{1} << hostBits);
  const bool dropEnds = base->isV4() && *prefix < 31;
  const uint64_t usable = dropEnds ? size - 2 : size;
  if (usable > kMaxSnatAddrsPerFamily) {
    return refuse("holds more than " + std::to_string(kMaxSnatAddrsPerFamily) +
                  " addresses (at most " + std::to_string(kMaxSnatAddrsPerFamily) +
                  " SNAT sources per family, node.ipv4/ipv6 included)");
  }
  // The host bits sit in the last byte: at most 3 of them here.
  const size_t last = base->isV4() ? 3 : 15;
  const uint8_t mask = static_cast<uint8_t>(size - 1);
  const std::array<uint8_t, 16>& bytes = base->bytes();
  if ((bytes[last] & mask) != 0) {
    return refuse("has host bits set (the prefix starts at its network address)");
  }
  std::vector<IpAddress> out;
  for (uint64_t i = dropEnds ? 1 : 0; i < (dropEnds ? size - 1 : size); ++i) {
    std::array<uint8_t, 16> b = bytes;
    b[last] = static_cast<uint8_t>(b[last] | i);
    if (base->isV4()) {
      in_addr a{};
      std::memcpy(&a, b.data(), sizeof(a));
      out.push_back(IpAddress::v4(a));
    } else {
      in6_addr a{};
      std::memcpy(&a, b.data(), sizeof(a));
      out.push_back(IpAddress::v6(a));
    }
  }
  return out;
}

}  // namespace meshpath
