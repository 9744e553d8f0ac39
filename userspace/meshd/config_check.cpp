// config_check.cpp — `meshd --check-config FILE` (config_check.h).
#include "config_check.h"

#include <arpa/inet.h>
#include <grp.h>
#include <ifaddrs.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/vfs.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config.h"
#include "local_ports.h"
#include "snat.h"

namespace meshpath {
namespace {

constexpr const char* kBpffsPrefix = "/sys/fs/bpf/";
// What prepareSnatPorts assumes when the ephemeral range cannot be read (local_ports.cpp).
constexpr PortRange kLinuxDefaultEphemeral{32768, 60999};

bool onBpffs(const std::filesystem::path& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

// The closest existing directory at or above `path` ("/" at worst).
std::filesystem::path existingAncestor(std::filesystem::path path) {
  std::error_code ec;
  while (!path.empty() && path != path.root_path() && !std::filesystem::exists(path, ec)) {
    path = path.parent_path();
  }
  return path.empty() ? std::filesystem::path("/") : path;
}

std::set<IpAddress> localAddresses() {
  std::set<IpAddress> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ifa_addr->sa_family == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                  sizeof(text));
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, text,
                  sizeof(text));
    } else {
      continue;
    }
    if (auto ip = IpAddress::parse(text)) out.insert(*ip);
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace

void checkNodeOnHost(const NodeSpec& node, ConfigCheck& out) {
  for (size_t i = 0; i < node.interfaces.size(); ++i) {
    if (::if_nametoindex(node.interfaces[i].c_str()) == 0) {
      out.problems.push_back("node.interfaces[" + std::to_string(i) + "]: " + node.interfaces[i] +
                             " is not an interface in this network namespace (" +
                             std::strerror(errno) + "; see `ip link`)");
    }
  }

  auto ephemeral = readEphemeralPortRange(LocalPortFiles{}.ephemeral);
  if (snatPortsAuto(node)) {
    PortRange avoided = ephemeral ? *ephemeral : kLinuxDefaultEphemeral;
    if (autoSnatPortRange(avoided.first, avoided.second).first == 0) {
      out.problems.push_back(
          "node.snat_ports: auto finds no port in 1024..65535 outside the "
          "kernel's ephemeral range " +
          std::to_string(avoided.first) + "-" + std::to_string(avoided.second) +
          " (narrow net.ipv4.ip_local_port_range, or set a range)");
    }
  } else if (ephemeral && portRangesOverlap({node.snatPortMin, node.snatPortMax}, *ephemeral)) {
    out.warnings.push_back("node.snat_ports: " + std::to_string(node.snatPortMin) + "-" +
                           std::to_string(node.snatPortMax) +
                           " overlaps the kernel's ephemeral range; meshd will add it to "
                           "net.ipv4.ip_local_reserved_ports");
  }

  // Start-up mounts a bpffs at /sys/fs/bpf when none is there; anywhere else pin_root must
  // already be on one.
  const std::filesystem::path ancestor = existingAncestor(node.pinRoot);
  if (!onBpffs(ancestor) && !node.pinRoot.starts_with(kBpffsPrefix)) {
    out.problems.push_back("node.pin_root: " + node.pinRoot +
                           " is not on a bpf filesystem (mount one with `mount -t bpf bpf DIR`, "
                           "or put pin_root under /sys/fs/bpf)");
  }

  const std::set<IpAddress> local = localAddresses();
  for (const auto& [field, address] :
       {std::pair{"ipv4", node.ipv4}, std::pair{"ipv6", node.ipv6}}) {
    if (address && !local.contains(*address)) {
      out.warnings.push_back(std::string("node.") + field + ": " + address->toString() +
                             " is not an address of any local interface: replies to SNATed "
                             "connections will not find their way back to this node");
    }
  }

  for (const auto& [field, group] : {std::pair{"api_admin_group", node.apiAdminGroup},
                                     std::pair{"api_read_group", node.apiReadGroup}}) {
    if (!group.empty() && ::getgrnam(group.c_str()) == nullptr) {
      out.warnings.push_back(std::string("node.") + field + ": group " + group +
                             " does not exist on this host: it admits nobody but root "
                             "(deploy/sysusers/meshpath.conf creates it)");
    }
  }
}

ConfigCheck checkConfigFile(const std::string& path) {
  ConfigCheck out;
  // parseConfigFile's steps, kept apart so the host checks run beside the validation's problems
  // rather than after them: one pass tells everything.
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    out.problems.push_back(std::string("cannot open the config file: ") + std::strerror(errno));
    return out;
  }
  std::ostringstream text;
  text << in.rdbuf();
  ConfigDocument doc;
  try {
    doc = parseConfigDocument(text.str());
  } catch (const ConfigError& e) {
    out.problems = e.problems();
    return out;
  }
  if (!doc.node) {
    out.problems.push_back("node: required section is missing");
    return out;
  }
  DesiredState state{std::move(*doc.node), std::move(doc.services)};
  out.services = state.services.size();
  out.problems = validateState(state);
  checkNodeOnHost(state.node, out);
  return out;
}

int runConfigCheck(const std::string& path, std::ostream& out, std::ostream& err) {
  const ConfigCheck check = checkConfigFile(path);
  for (const auto& w : check.warnings) err << path << ": warning: " << w << "\n";
  for (const auto& p : check.problems) err << path << ": " << p << "\n";
  if (!check.problems.empty()) {
    err << path << ": " << check.problems.size()
        << (check.problems.size() == 1 ? " problem" : " problems") << "\n";
    return 1;
  }
  out << path << ": OK (" << check.services << (check.services == 1 ? " service" : " services")
      << ")\n";
  return 0;
}

}  // namespace meshpath
