// cmd_apply.cpp — `meshctl apply -f FILE [--dry-run]`: the services of a config file replace the
// running ones, all or nothing; the answer's diff is shown either way (the dry run changes
// nothing).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "address.h"
#include "apply_view.h"
#include "cli.h"
#include "commands.h"
#include "json_fields.h"
#include "table.h"
#include "views.h"

namespace meshpath::meshctl {

using nlohmann::json;

int cmdApply(const Context& ctx, const Args& a) {
  std::string text;
  if (a.file == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    text = ss.str();
  } else {
    std::ifstream in(a.file);
    if (!in) {
      return ctx.usage("cannot read '" + a.file + "': " + std::strerror(errno),
                       "apply -f takes a meshd config file (YAML), or - for standard input");
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  auto reply =
      ctx.api().postText(a.dryRun ? "/v1/apply?dry_run=1" : "/v1/apply", text, "application/yaml");
  const std::string source = a.file == "-" ? std::string("standard input") : a.file;
  if (!reply.ok()) {
    // A refusal may carry every problem found and the diff it would have made (a node section
    // that differs shows its fields there).
    if (!ctx.json() && reply.reached() && reply.body.is_object()) {
      std::cerr << applyRefusalDetails(reply.body);
    }
    return ctx.failed(reply);
  }
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  std::cout << applyText(reply.body, source);
  return kExitOk;
}

}  // namespace meshpath::meshctl
