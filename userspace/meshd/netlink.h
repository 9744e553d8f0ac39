// netlink.h — what meshd needs to know about the node's interfaces, asked over rtnetlink
// (libnl-route): names to ifindexes, which addresses are local, what exists (for errors, status).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model.h"
#include "result.h"

struct nl_sock;

namespace meshpath {

struct LinkInfo {
  std::string name;
  int ifindex = 0;
  bool up = false;
};

class Netlink {
 public:
  static Result<std::unique_ptr<Netlink>> open();
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  Result<std::vector<LinkInfo>> links();
  // The ifindex of `name`; the error names the interfaces that do exist.
  Result<int> ifindex(const std::string& name);
  // The interface that carries `address`, if any does.
  Result<std::optional<std::string>> interfaceWithAddress(const IpAddress& address);

 private:
  explicit Netlink(nl_sock* sock) : sock_(sock) {}
  nl_sock* sock_;
};

}  // namespace meshpath
