// control_plane_rig.h — a ControlPlane over a FakeDataplane with its reconciler and state file,
// started on a node of the tests' usual shape (one interface, 10.0.2.1, auto SNAT ports) and the
// given services: what the tests of the store and of health across nodes build on.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "control_plane.h"
#include "fake_dataplane.h"
#include "reconciler.h"
#include "state_store.h"

namespace meshpath::testing {

struct ControlPlaneRig {
  // `stateFile`: where this rig's state file goes (each rig needs its own).
  explicit ControlPlaneRig(const std::filesystem::path& stateFile,
                           std::vector<ServiceSpec> services = {}) {
    node.interfaces = {"veth0"};
    node.ipv4 = IpAddress::parse("10.0.2.1");
    node.stateFile = stateFile.string();
    node.snatPortMin = 1024;
    node.snatPortMax = 32767;
    state = std::make_unique<StateStore>(node.stateFile);
    reconciler = std::make_unique<Reconciler>(dp);
    reconciler->start({}, std::nullopt);
    started = bool(reconciler->apply(DesiredState{node, std::move(services)}));
    cp = std::make_unique<ControlPlane>(dp, *reconciler, *state, "", false);
  }

  NodeSpec node;
  FakeDataplane dp;
  std::unique_ptr<StateStore> state;
  std::unique_ptr<Reconciler> reconciler;
  std::unique_ptr<ControlPlane> cp;
  bool started = false;  // the initial services were applied
};

}  // namespace meshpath::testing
