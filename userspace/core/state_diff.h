// state_diff.h — what a change does to the desired state, field by field: the one description
// that `meshctl apply --dry-run` shows, a reload logs and emits as its event, and the audit log
// records. Services are matched by name and endpoints by ADDRESS:PORT, so a reordered list is no
// change and a changed weight reads as one field, not as a removed and an added endpoint.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model.h"

namespace meshpath {

// One field that differs. `path` names it as the config does, with services and endpoints by
// name: "node.ring_size", "services.web.algorithm", "services.web.endpoints[10.0.2.11:8080].weight",
// "services.web.endpoints[10.0.2.13:8080]" (an endpoint added: `from` null; removed: `to` null).
struct FieldChange {
  std::string path;
  nlohmann::json from;  // null: not there before
  nlohmann::json to;    // null: not there after
  bool operator==(const FieldChange&) const = default;
};

struct StateDiff {
  std::vector<std::string> servicesAdded;    // names, in the order of the new state
  std::vector<std::string> servicesRemoved;  // names, in the order of the old state
  std::vector<std::string> servicesChanged;  // names of services in both whose fields differ
  std::vector<FieldChange> changes;          // node fields, then changed services' fields

  bool empty() const { return servicesAdded.empty() && servicesRemoved.empty() && changes.empty(); }
  // {"services_added": [...], "services_removed": [...], "services_changed": [...],
  //  "changes": [{"path": ..., "from": ..., "to": ...}]}
  nlohmann::json toJson() const;
  // One line per entry, for people: "+ service api (tcp 10.0.0.101:80, 3 endpoints)",
  // "- service old", "~ services.web.endpoints[10.0.2.11:8080].weight: 1 -> 0".
  std::vector<std::string> lines() const;
  // lines() joined with "; ", or "no changes": for a log line or an event.
  std::string summary() const;

  // Filled by diffStates for lines(): a short description of each added service.
  std::vector<std::string> addedDescriptions;
};

StateDiff diffStates(const DesiredState& from, const DesiredState& to);

}  // namespace meshpath
