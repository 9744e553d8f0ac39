// cmd_apply.cpp — `meshctl apply -f FILE`: the services of a config file replace the running ones.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "address.h"
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
  auto reply = ctx.api().postText("/v1/apply", text, "application/yaml");
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  auto names = [&](const char* key) {
    std::string out;
    if (reply.body.contains(key) && reply.body[key].is_array()) {
      for (const auto& n : reply.body[key]) {
        out += (out.empty() ? "" : ", ") + (n.is_string() ? n.get<std::string>() : n.dump());
      }
    }
    return out.empty() ? std::string("-") : out;
  };
  std::cout << "applied " << (a.file == "-" ? std::string("standard input") : a.file) << '\n';
  std::cout << keyValues({{"  added", names("added")},
                          {"  removed", names("removed")},
                          {"  changed", names("changed")}});
  return kExitOk;
}

}  // namespace meshpath::meshctl
