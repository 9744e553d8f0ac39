// upgrade_view.h — POST /v1/upgrade's answer as `meshctl upgrade` prints it: a pure function of
// the daemon's JSON (docs/api.md, "Upgrade"), tested without a daemon (meshctl_test).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace meshpath::meshctl {

// "upgraded mp_xdp_lb: id 41 (tag ...) -> id 57 (tag ...) in 38.2 ms (load 37.9 ms, switch
// 0.05 ms)", then a table of the interfaces and one of the maps migrated (if any).
std::string upgradeText(const nlohmann::json& upgrade);

}  // namespace meshpath::meshctl
