#include "netlink.h"

#include <net/if.h>
#include <netlink/addr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <sys/socket.h>

#include <cstring>

namespace meshpath {

namespace {

Error nlError(int rc, const std::string& what) {
  return Error{0, what + ": " + nl_geterror(rc), {}};
}

struct CacheDeleter {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
using Cache = std::unique_ptr<nl_cache, CacheDeleter>;

}  // namespace

Result<std::unique_ptr<Netlink>> Netlink::open() {
  nl_sock* sock = nl_socket_alloc();
  if (sock == nullptr) return Error{ENOMEM, "allocate a netlink socket", {}};
  if (int rc = nl_connect(sock, NETLINK_ROUTE); rc < 0) {
    nl_socket_free(sock);
    return nlError(rc, "connect to rtnetlink");
  }
  return std::unique_ptr<Netlink>(new Netlink(sock));
}

Netlink::~Netlink() { nl_socket_free(sock_); }

Result<std::vector<LinkInfo>> Netlink::links() {
  nl_cache* raw = nullptr;
  if (int rc = rtnl_link_alloc_cache(sock_, AF_UNSPEC, &raw); rc < 0) {
    return nlError(rc, "list interfaces");
  }
  Cache cache(raw);
  std::vector<LinkInfo> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* link = reinterpret_cast<rtnl_link*>(o);
    const char* name = rtnl_link_get_name(link);
    out.push_back(LinkInfo{name != nullptr ? name : "", rtnl_link_get_ifindex(link),
                           (rtnl_link_get_flags(link) & IFF_UP) != 0});
  }
  return out;
}

Result<int> Netlink::ifindex(const std::string& name) {
  auto all = links();
  if (!all) return all.error();
  std::string names;
  for (const LinkInfo& l : *all) {
    if (l.name == name) return l.ifindex;
    names += (names.empty() ? "" : ", ") + l.name;
  }
  return Error{ENODEV, "interface " + name + " not found",
               "interfaces here: " + (names.empty() ? std::string("none") : names) +
                   "; fix node.interfaces in the config"};
}

Result<std::optional<std::string>> Netlink::interfaceWithAddress(const IpAddress& address) {
  nl_cache* rawAddrs = nullptr;
  if (int rc = rtnl_addr_alloc_cache(sock_, &rawAddrs); rc < 0) {
    return nlError(rc, "list addresses");
  }
  Cache addrs(rawAddrs);
  int family = address.isV4() ? AF_INET : AF_INET6;
  size_t len = address.isV4() ? 4 : 16;
  for (nl_object* o = nl_cache_get_first(addrs.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* a = reinterpret_cast<rtnl_addr*>(o);
    if (rtnl_addr_get_family(a) != family) continue;
    nl_addr* local = rtnl_addr_get_local(a);
    if (local == nullptr || nl_addr_get_len(local) != len) continue;
    if (std::memcmp(nl_addr_get_binary_addr(local), address.bytes().data(), len) != 0) continue;
    int index = rtnl_addr_get_ifindex(a);
    auto all = links();
    if (all) {
      for (const LinkInfo& l : *all) {
        if (l.ifindex == index) return std::optional<std::string>(l.name);
      }
    }
    return std::optional<std::string>("ifindex " + std::to_string(index));
  }
  return std::optional<std::string>();
}

}  // namespace meshpath
