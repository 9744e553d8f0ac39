// local_ports.cpp — /proc's ephemeral and reserved port ranges, and node.snat_ports settled by
// them.
#include "local_ports.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <fstream>
#include <sstream>

namespace meshpath {

namespace {

constexpr PortRange kLinuxDefaultEphemeral{32768, 60999};

std::string rangeText(PortRange r) {
  return std::to_string(r.first) + "-" + std::to_string(r.second);
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return errnoError(errno, "read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Result<PortRange> readEphemeralPortRange(const std::string& path) {
  auto text = readFile(path);
  if (!text) return text.error();
  auto range = parseEphemeralPortRange(*text);
  if (!range) return Error{EINVAL, path + " holds no port range: " + *text, {}};
  return *range;
}

Result<bool> reserveLocalPorts(PortRange range, const std::string& path) {
  auto current = readFile(path);
  if (!current) return current.error();
  auto next = reservedPortsWith(*current, range);
  if (!next) return false;
  std::ofstream out(path);
  if (!out) return errnoError(errno, "open " + path + " for writing");
  out << *next << '\n';
  out.flush();
  if (!out) return errnoError(errno, "write " + path);
  return true;
}

Result<SnatPortsSetup> prepareSnatPorts(NodeSpec& node, const LocalPortFiles& files) {
  SnatPortsSetup setup;
  setup.automatic = snatPortsAuto(node);
  auto ephemeral = readEphemeralPortRange(files.ephemeral);
  if (ephemeral) setup.ephemeral = *ephemeral;

  if (setup.automatic) {
    PortRange avoided = setup.ephemeral.value_or(kLinuxDefaultEphemeral);
    if (!ephemeral) {
      setup.warning = "node.snat_ports auto: the kernel's ephemeral range is unknown (" +
                      ephemeral.error().toString() + "); assuming Linux's default " +
                      rangeText(avoided);
      spdlog::warn("{}", *setup.warning);
    }
    setup.range = autoSnatPortRange(avoided.first, avoided.second);
    if (setup.range.first == 0) {
      return Error{ERANGE,
                   "node.snat_ports auto: the kernel's ephemeral range " + rangeText(avoided) +
                       " leaves no port in 1024..65535 for SNAT",
                   "narrow net.ipv4.ip_local_port_range, or set node.snat_ports (meshd then "
                   "reserves it with net.ipv4.ip_local_reserved_ports)"};
    }
    node.snatPortMin = setup.range.first;
    node.snatPortMax = setup.range.second;
    spdlog::info(
        "node.snat_ports auto: {} ({} ports per SNAT source), outside the kernel's ephemeral "
        "range {}",
        rangeText(setup.range), snatPortCount(node), rangeText(avoided));
    return setup;
  }

  setup.range = {node.snatPortMin, node.snatPortMax};
  if (!setup.ephemeral) {
    setup.warning = "node.snat_ports " + rangeText(setup.range) +
                    ": cannot tell whether the kernel's ephemeral range overlaps it (" +
                    ephemeral.error().toString() + ")";
    spdlog::warn("{}", *setup.warning);
    return setup;
  }
  if (!portRangesOverlap(setup.range, *setup.ephemeral)) return setup;
  auto reserved = reserveLocalPorts(setup.range, files.reserved);
  if (!reserved) {
    setup.warning = "node.snat_ports " + rangeText(setup.range) +
                    " overlaps the kernel's ephemeral range " + rangeText(*setup.ephemeral) +
                    " and could not be reserved (" + reserved.error().toString() +
                    "): local sockets may autobind ports SNAT connections hold; reserve it with "
                    "sysctl net.ipv4.ip_local_reserved_ports or pick a range outside";
    spdlog::warn("{}", *setup.warning);
    return setup;
  }
  setup.reserved = *reserved;
  spdlog::info(
      "node.snat_ports {} overlaps the kernel's ephemeral range {}: {} in "
      "net.ipv4.ip_local_reserved_ports, so the kernel does not autobind them",
      rangeText(setup.range), rangeText(*setup.ephemeral), *reserved ? "added" : "already");
  return setup;
}

}  // namespace meshpath
