// local_ports.h — the host's side of the SNAT port range, settled before the node goes to the
// dataplane: node.snat_ports: auto becomes the widest range outside the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), and an explicit range that overlaps that range is added to
// net.ipv4.ip_local_reserved_ports, so the kernel never autobinds a port a SNAT connection holds
// (a local client's connection from it would meet the balancer's replies, and the reverse).
#pragma once

#include <optional>
#include <string>

#include "model.h"
#include "result.h"
#include "snat.h"

namespace meshpath {

struct LocalPortFiles {
  std::string ephemeral = "/proc/sys/net/ipv4/ip_local_port_range";
  std::string reserved = "/proc/sys/net/ipv4/ip_local_reserved_ports";
};

struct SnatPortsSetup {
  PortRange range{0, 0};               // in force now (node.snat_ports after the call)
  bool automatic = false;              // node.snat_ports was auto
  std::optional<PortRange> ephemeral;  // the kernel's, when it could be read
  bool reserved = false;               // `range` was added to ip_local_reserved_ports
  std::optional<std::string> warning;  // what could not be done (logged as a warning)
};

Result<PortRange> readEphemeralPortRange(const std::string& path);

// Adds `range` to the reserved ports in `path`, keeping what is there. False when the file
// already reserves all of it (nothing written).
Result<bool> reserveLocalPorts(PortRange range, const std::string& path);

// Settles node.snat_ports in place and logs what it chose and why. Fails only when auto finds no
// room outside the ephemeral range; an ephemeral range that cannot be read makes auto assume
// Linux's default (32768-60999), and a reservation that cannot be written is a warning.
Result<SnatPortsSetup> prepareSnatPorts(NodeSpec& node, const LocalPortFiles& files = {});

}  // namespace meshpath
