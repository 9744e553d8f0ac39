// cmd_observe.cpp — the commands that only read: `meshctl status`, `stats`, `health`, `events`.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "address.h"
#include "cli.h"
#include "commands.h"
#include "json_fields.h"
#include "table.h"
#include "views.h"

namespace meshpath::meshctl {

using nlohmann::json;

int cmdStatus(const Context& ctx, const Args&) {
  auto reply = ctx.api().get("/v1/status");
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << statusText(reply.body);
  }
  return kExitOk;
}

int cmdStats(const Context& ctx, const Args& a) {
  std::string error;
  if (!a.service.empty() && !validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get("/v1/stats");
  if (!reply.ok()) return ctx.failed(reply);
  const json* picked = nullptr;
  for (const auto& s : arr(reply.body, "services")) {
    if (str(s, "name") == a.service) picked = &s;
  }
  if (!a.service.empty() && picked == nullptr) {
    return ctx.refused("unknown service '" + a.service + "'",
                       "list services with `meshctl service list`");
  }
  if (ctx.json()) {
    if (picked == nullptr) {
      ctx.printJson(reply);
    } else {
      std::cout << picked->dump(2) << '\n';
    }
    return kExitOk;
  }
  // The weights (for each endpoint's expected share) come from the services.
  auto services = ctx.api().get("/v1/services");
  std::cout << statsText(reply.body, services.ok() ? services.body : json::array(), a.service);
  return kExitOk;
}

int cmdHealth(const Context& ctx, const Args& a) {
  std::string error;
  if (!a.service.empty() && !validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get(a.service.empty() ? "/v1/health" : "/v1/health/" + a.service);
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << healthText(reply.body);
  }
  return kExitOk;
}

int cmdEvents(const Context& ctx, const Args& a) {
  if (!a.follow) {
    auto reply = ctx.api().get("/v1/events");
    if (!reply.ok()) return ctx.failed(reply);
    if (ctx.json()) {
      for (const auto& e : reply.body) std::cout << e.dump() << '\n';
      return kExitOk;
    }
    if (reply.body.empty()) std::cout << "no health events yet\n";
    for (const auto& e : reply.body) std::cout << eventLine(e) << '\n';
    return kExitOk;
  }
  auto reply = ctx.api().follow("/v1/events?follow=1", [&](const std::string& line) {
    if (ctx.json()) {
      std::cout << line << std::endl;
    } else {
      json e = json::parse(line, nullptr, false);
      std::cout << (e.is_discarded() ? line : eventLine(e)) << std::endl;
    }
    return true;
  });
  if (!reply.ok()) return ctx.failed(reply);
  return kExitOk;
}

}  // namespace meshpath::meshctl
