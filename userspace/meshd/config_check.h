// config_check.h — `meshd --check-config FILE`: everything start-up would refuse in a config,
// found without start-up's side effects. The file is parsed and validated as at start (node
// section and every service, all problems with their field paths), then checked against this
// host with reads only: the interfaces exist (in meshd's network namespace, so after --netns),
// node.snat_ports auto finds room outside the kernel's ephemeral range, node.pin_root can be on
// a bpf filesystem. No BPF object, socket, directory or file is created, nothing is written.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "model.h"

namespace meshpath {

struct ConfigCheck {
  size_t services = 0;
  std::vector<std::string> problems;  // "path: what", each makes the check fail
  std::vector<std::string> warnings;  // what start-up would warn about
};

// The host-side checks on a node that passed validateNode (field paths "node.*").
void checkNodeOnHost(const NodeSpec& node, ConfigCheck& out);

ConfigCheck checkConfigFile(const std::string& path);

// Prints "FILE: OK (N services)" to `out`, or each problem as "FILE: path: what" to `err`;
// warnings go to `err` as "FILE: warning: ...". Returns the exit code: 0 valid, 1 not.
int runConfigCheck(const std::string& path, std::ostream& out, std::ostream& err);

}  // namespace meshpath
