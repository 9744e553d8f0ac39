// cmd_service.cpp — `meshctl service add|del|list|show`.
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

int cmdServiceList(const Context& ctx, const Args&) {
  auto reply = ctx.api().get("/v1/services");
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  if (!reply.body.is_array() || reply.body.empty()) {
    std::cout << "no services (add one with `meshctl service add NAME --vip A --port P`)\n";
    return kExitOk;
  }
  Table t({{"NAME"},
           {"VIP"},
           {"PROTO"},
           {"ALGORITHM"},
           {"FORWARDING"},
           {"SYN PROTECTION"},
           {"ENDPOINTS", Align::kRight},
           {"NEW CONNS", Align::kRight},
           {"PACKETS", Align::kRight},
           {"BYTES", Align::kRight}});
  for (const auto& svc : reply.body) {
    size_t n =
        svc.contains("endpoints") && svc["endpoints"].is_array() ? svc["endpoints"].size() : 0;
    t.addRow({str(svc, "name"), hostPort(str(svc, "vip"), u64(svc, "port")), str(svc, "protocol"),
              str(svc, "algorithm"), str(svc, "forwarding"),
              svc.contains("syn_protection") ? str(svc, "syn_protection") : "-", std::to_string(n),
              humanCount(u64(stats(svc), "new_conns")), humanCount(u64(stats(svc), "packets")),
              humanBytes(u64(stats(svc), "bytes"))});
  }
  t.print(std::cout);
  return kExitOk;
}

int cmdServiceShow(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get(serviceTarget(a.service));
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << serviceText(reply.body);
  }
  return kExitOk;
}

int cmdServiceAdd(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  bool vipV6 = false;
  auto vip = canonicalAddress(a.vip, &vipV6);
  if (!vip) {
    return ctx.usage("bad VIP '" + a.vip + "': not an IPv4 or IPv6 address",
                     "e.g. --vip 10.0.0.100 or --vip fd00::100");
  }
  auto port = parsePort(a.port, &error);
  if (!port) return ctx.usage(error);
  json svc = {{"name", a.service}, {"vip", *vip}, {"port", *port}};
  if (!a.protocol.empty()) svc["protocol"] = a.protocol;
  if (!a.algorithm.empty()) svc["algorithm"] = a.algorithm;
  if (!a.forwarding.empty()) svc["forwarding"] = a.forwarding;
  svc["endpoints"] = json::array();
  for (const auto& text : a.endpoints) {
    auto ep = parseEndpoint(text, /*allowWeight=*/true, &error);
    if (!ep) return ctx.usage(error, "--endpoint takes ADDR:PORT[@WEIGHT], e.g. 10.0.2.11:8080@2");
    svc["endpoints"].push_back(
        {{"address", ep->address}, {"port", ep->port}, {"weight", ep->weight.value_or(1)}});
  }
  auto reply = ctx.api().post("/v1/services", svc);
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    const json& s = reply.body;
    size_t n = s.contains("endpoints") && s["endpoints"].is_array() ? s["endpoints"].size() : 0;
    std::cout << "service " << str(s, "name")
              << " added: " << hostPort(str(s, "vip"), u64(s, "port")) << "/" << str(s, "protocol")
              << ", " << str(s, "algorithm") << ", " << str(s, "forwarding") << ", " << n
              << (n == 1 ? " endpoint" : " endpoints") << '\n';
  }
  return kExitOk;
}

int cmdServiceDel(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().del(serviceTarget(a.service));
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << "service " << a.service << " deleted\n";
  }
  return kExitOk;
}

}  // namespace meshpath::meshctl
