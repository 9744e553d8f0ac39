// cmd_upgrade.cpp — `meshctl upgrade`: meshd replaces the running XDP program by a fresh load of
// its own build in place (bpf_link_update), keeping every map and migrating changed layouts.
#include <iostream>

#include "cli.h"
#include "commands.h"
#include "upgrade_view.h"

namespace meshpath::meshctl {

int cmdUpgrade(const Context& ctx, const Args&) {
  auto reply = ctx.api().post("/v1/upgrade", nlohmann::json::object());
  // An incomplete upgrade is answered with its report (HTTP 500): show what happened, then fail.
  const bool report = reply.reached() && reply.body.is_object() && reply.body.contains("to");
  if (report && ctx.json()) {
    ctx.printJson(reply);
  } else if (report) {
    std::cout << upgradeText(reply.body);
  }
  if (!reply.ok()) return ctx.failed(reply);
  return kExitOk;
}

}  // namespace meshpath::meshctl
