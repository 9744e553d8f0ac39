#include "netdev.h"

#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace meshpath::pktgen {

std::optional<Mac> parseMac(const std::string& text) {
  Mac mac{};
  unsigned v[6];
  char extra;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                  &v[5], &extra) != 6) {
    return std::nullopt;
  }
  for (int i = 0; i < 6; i++) mac[i] = static_cast<uint8_t>(v[i]);
  return mac;
}

std::string formatMac(const Mac& mac) {
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return buf;
}

BpfResult<std::unique_ptr<NetnsScope>> NetnsScope::enter(const std::string& name) {
  UniqueFd original(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original.valid()) return bpfError(errno, "open /proc/thread-self/ns/net");
  if (name.empty()) return std::unique_ptr<NetnsScope>(new NetnsScope(UniqueFd()));
  std::string path = "/run/netns/" + name;
  UniqueFd target(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target.valid()) {
    return bpfError(errno, "network namespace '" + name + "' (" + path + ")");
  }
  if (::setns(target.get(), CLONE_NEWNET) != 0) {
    return bpfError(errno, "enter network namespace '" + name + "'");
  }
  return std::unique_ptr<NetnsScope>(new NetnsScope(std::move(original)));
}

NetnsScope::~NetnsScope() {
  if (original_.valid() && ::setns(original_.get(), CLONE_NEWNET) != 0) {
    std::perror("pktgen: return to the original network namespace");
  }
}

BpfResult<Netdev> findNetdev(const std::string& name) {
  Netdev dev;
  dev.name = name;
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return bpfError(EINVAL, "interface name '" + name + "'");
  }
  dev.ifindex = static_cast<int>(if_nametoindex(name.c_str()));
  if (dev.ifindex == 0) return bpfError(ENODEV, "no such interface '" + name + "'");
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return bpfError(errno, "socket");
  ifreq req{};
  std::strncpy(req.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFHWADDR, &req) != 0) {
    return bpfError(errno, "MAC address of '" + name + "'");
  }
  std::memcpy(dev.mac.data(), req.ifr_hwaddr.sa_data, 6);
  if (::ioctl(sock.get(), SIOCGIFMTU, &req) == 0) dev.mtu = req.ifr_mtu;
  return dev;
}

std::optional<std::array<uint8_t, 16>> firstAddress(const std::string& ifname, int family) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::array<uint8_t, 16>> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != family || ifname != a->ifa_name) {
      continue;
    }
    std::array<uint8_t, 16> out{};
    if (family == AF_INET) {
      std::memcpy(out.data(), &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, 4);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;
      std::memcpy(out.data(), &in6->sin6_addr, 16);
    }
    found = out;
  }
  ::freeifaddrs(list);
  return found;
}

}  // namespace meshpath::pktgen
