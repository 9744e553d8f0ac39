// cmd_endpoint.cpp — `meshctl endpoint add|del|set-weight|drain` (drain --wait follows the open
// connections until none is left).
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "address.h"
#include "cli.h"
#include "commands.h"
#include "json_fields.h"
#include "table.h"
#include "views.h"

namespace meshpath::meshctl {

using nlohmann::json;

namespace {

// Follows a draining endpoint until meshd reports it drained (or --wait's limit passes):
// one line per change, or one line rewritten in place on a terminal.
int waitForDrain(const Context& ctx, const Args& a, const EndpointArg& arg) {
  const std::string key = arg.key();
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const bool tty = !ctx.json() && isatty(STDOUT_FILENO);
  std::string lastLine;
  for (;;) {
    auto reply = ctx.api().get(serviceTarget(a.service));
    if (!reply.ok()) return ctx.failed(reply);
    const json* found = nullptr;
    if (reply.body.contains("endpoints") && reply.body["endpoints"].is_array()) {
      for (const auto& e : reply.body["endpoints"]) {
        if (str(e, "address") == arg.address && u64(e, "port") == arg.port) found = &e;
      }
    }
    if (found == nullptr) {
      return ctx.refused("endpoint " + key + " left service " + a.service + " while draining",
                         "nothing more to wait for");
    }
    const json& ep = *found;
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    std::string state = drainState(ep);
    if (state != "draining" && state != "drained") {
      return ctx.refused("endpoint " + key + " is no longer draining (weight " +
                             std::to_string(u64(ep, "weight")) + ")",
                         "someone changed its weight meanwhile; drain it again to go on");
    }
    if (state == "draining" && !(ep.contains("active_conns") && ep["active_conns"].is_number())) {
      return ctx.refused("meshd cannot count the open flows of " + key +
                             ": UDP has no close, so a UDP drain never completes by itself",
                         "no new flows reach it; remove it once your clients' idle timeout has "
                         "passed");
    }
    if (ctx.json()) {
      json progress = {{"endpoint", key},
                       {"drain", state},
                       {"active_conns", ep.value("active_conns", json(nullptr))},
                       {"elapsed_s", elapsed}};
      std::cout << progress.dump() << std::endl;
    }
    if (state == "drained") {
      if (!ctx.json()) {
        std::cout << (tty ? "\r\033[K" : "") << "endpoint " << key << " drained after "
                  << fixed(elapsed, 1) << "s: no open connections; safe to remove it\n";
      }
      return kExitOk;
    }
    if (!ctx.json()) {
      std::string line = "draining " + key + ": " + activeConns(ep) + " open connections";
      if (tty) {
        std::cout << "\r\033[K" << line << " (" << fixed(elapsed, 0) << "s)" << std::flush;
      } else if (line != lastLine) {
        std::cout << line << std::endl;
      }
      lastLine = line;
    }
    if (a.waitSeconds > 0 && elapsed >= a.waitSeconds) {
      if (tty) std::cout << '\n';
      return ctx.refused("endpoint " + key + " still has " + activeConns(ep) +
                             " open connections after " + fixed(a.waitSeconds, 0) + "s",
                         "it stays drained of new connections; wait longer, or remove it with "
                         "`meshctl endpoint del` (open connections then break)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

int cmdEndpointAdd(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto ep = parseEndpoint(a.endpoint, /*allowWeight=*/false, &error);
  if (!ep) return ctx.usage(error);
  uint32_t weight = 1;
  if (!a.weight.empty()) {
    auto w = parseWeight(a.weight, &error);
    if (!w) return ctx.usage(error);
    weight = *w;
  }
  auto reply = ctx.api().post(serviceTarget(a.service) + "/endpoints",
                              {{"address", ep->address}, {"port", ep->port}, {"weight", weight}});
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << "endpoint " << endpointKey(reply.body) << " added to " << a.service << " (weight "
              << u64(reply.body, "weight") << ")\n";
  }
  return kExitOk;
}

int cmdEndpointDel(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto ep = parseEndpoint(a.endpoint, /*allowWeight=*/false, &error);
  if (!ep) return ctx.usage(error);
  auto reply = ctx.api().del(endpointTarget(a.service, *ep));
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << "endpoint " << ep->key() << " deleted from " << a.service << '\n';
  }
  return kExitOk;
}

int cmdEndpointSetWeight(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto ep = parseEndpoint(a.endpoint, /*allowWeight=*/false, &error);
  if (!ep) return ctx.usage(error);
  auto weight = parseWeight(a.weight, &error);
  if (!weight) return ctx.usage(error);
  auto reply = ctx.api().put(endpointTarget(a.service, *ep), {{"weight", *weight}});
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    std::cout << "endpoint " << ep->key() << " of " << a.service << " now has weight " << *weight
              << (*weight == 0 ? " (draining: open connections stay, no new ones)" : "") << '\n';
  }
  return kExitOk;
}

int cmdEndpointDrain(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto ep = parseEndpoint(a.endpoint, /*allowWeight=*/false, &error);
  if (!ep) return ctx.usage(error);
  if (a.waitSeconds < 0) return ctx.usage("--wait-limit must be >= 0 seconds");
  auto reply = ctx.api().post(endpointTarget(a.service, *ep) + "/drain", json::object());
  if (!reply.ok()) return ctx.failed(reply);
  const json& body = reply.body;
  if (a.wait) return waitForDrain(ctx, a, *ep);
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  if (drainState(body) == "drained") {
    std::cout << "endpoint " << ep->key() << " of " << a.service
              << " drained: weight 0 and no open connections; safe to remove it\n";
  } else {
    std::cout << "endpoint " << ep->key() << " of " << a.service << " is draining: weight 0, "
              << activeConns(body) << " open connections stay, no new ones\n"
              << "  follow it with `meshctl endpoint drain " << a.service << " " << ep->key()
              << " --wait`\n";
  }
  return kExitOk;
}

}  // namespace meshpath::meshctl
