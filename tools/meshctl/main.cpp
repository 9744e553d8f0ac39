// meshctl — the command line of a meshpath node. A table of subcommands (CLI11), each a thin call
// to meshd's REST API (docs/api.md) over its unix socket. Output is an aligned table by default
// and the daemon's own JSON with -o json. Exit: 0 ok, 1 meshd refused or could not be reached,
// 2 usage error (caught here before anything is sent).
#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "address.h"
#include "api_client.h"
#include "table.h"

namespace meshpath::meshctl {
namespace {

using nlohmann::json;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;
constexpr const char* kDefaultSocket = "/run/meshpath/meshd.sock";

struct Options {
  std::string socket = kDefaultSocket;
  std::string output = "table";
  double timeoutSeconds = 30;
};

// Everything the subcommands take from the command line.
struct Args {
  std::string service;
  std::string vip;
  std::string port;
  std::string protocol;
  std::string algorithm;
  std::string forwarding;
  std::vector<std::string> endpoints;
  std::string endpoint;
  std::string weight;
  std::string file;
  bool follow = false;
  bool wait = false;
  double waitSeconds = 0;  // --wait's limit; 0 = no limit
};

class Context {
 public:
  Context(const Options& options, std::string commandPath)
      : options_(options),
        commandPath_(std::move(commandPath)),
        api_(options.socket,
             std::chrono::milliseconds(static_cast<long>(options.timeoutSeconds * 1000))) {}

  const ApiClient& api() const { return api_; }
  bool json() const { return options_.output == "json"; }

  int usage(const std::string& message, const std::string& hint = "") const {
    std::cerr << "meshctl: " << message << '\n';
    std::cerr << "  hint: " << (hint.empty() ? "see `meshctl " + commandPath_ + " --help`" : hint)
              << '\n';
    return kExitUsage;
  }

  int refused(const std::string& message, const std::string& hint) const {
    std::cerr << "meshctl: " << message << '\n';
    if (!hint.empty()) std::cerr << "  hint: " << hint << '\n';
    return kExitRefused;
  }

  // The daemon could not be reached, or it answered with an error: say which and what to do.
  int failed(const ApiReply& reply) const {
    if (!reply.reached()) {
      std::string hint = "is meshd running? start it with `meshd --config FILE`";
      if (reply.transportError == std::strerror(EACCES)) {
        hint = "run meshctl as root or as a member of the socket's group";
      } else if (reply.transportError.find("answer") != std::string::npos) {
        hint = "meshd accepted the connection but did not answer; check its log";
      }
      std::cerr << "meshctl: cannot reach meshd at " << api_.socketPath() << ": "
                << reply.transportError << " — " << hint << '\n';
      return kExitRefused;
    }
    std::string error, hint;
    if (reply.body.is_object() && reply.body.contains("error")) {
      error = reply.body["error"].is_string() ? reply.body["error"].get<std::string>()
                                              : reply.body["error"].dump();
      if (reply.body.contains("hint") && reply.body["hint"].is_string()) {
        hint = reply.body["hint"].get<std::string>();
      }
    } else {
      error = reply.rawBody.empty() ? "no details given" : reply.rawBody;
    }
    std::cerr << "meshctl: meshd refused (HTTP " << reply.status << "): " << error << '\n';
    if (!hint.empty()) std::cerr << "  hint: " << hint << '\n';
    return kExitRefused;
  }

  // -o json: the daemon's JSON as it came.
  void printJson(const ApiReply& reply) const {
    if (reply.body.is_discarded()) {
      std::cout << reply.rawBody << '\n';
    } else {
      std::cout << reply.body.dump(2) << '\n';
    }
  }

 private:
  const Options& options_;
  std::string commandPath_;  // "endpoint add", for usage hints
  ApiClient api_;
};

// --- reading the daemon's JSON without trusting its shape too much ---

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

uint64_t u64(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<uint64_t>();
}

std::string str(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return "";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

std::string hostPort(const std::string& address, uint64_t port) {
  bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

std::string endpointKey(const json& ep) { return hostPort(str(ep, "address"), u64(ep, "port")); }

const json& stats(const json& j) {
  static const json kEmpty = json::object();
  return j.is_object() && j.contains("stats") ? j["stats"] : kEmpty;
}

std::string serviceTarget(const std::string& name) { return "/v1/services/" + name; }

std::string endpointTarget(const std::string& service, const EndpointArg& ep) {
  return serviceTarget(service) + "/endpoints/" + ep.address + "/" + std::to_string(ep.port);
}

void printKeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [k, v] : rows) width = std::max(width, k.size());
  for (const auto& [k, v] : rows) {
    std::cout << k << std::string(width - k.size() + 2, ' ') << v << '\n';
  }
}

// --- status ---

int cmdStatus(const Context& ctx) {
  auto reply = ctx.api().get("/v1/status");
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  const json& s = reply.body;
  const json& node = s.contains("node") ? s["node"] : json::object();
  std::string ifaces;
  if (s.contains("interfaces") && s["interfaces"].is_array()) {
    for (const auto& i : s["interfaces"]) {
      if (!ifaces.empty()) ifaces += ", ";
      bool attached =
          i.contains("attached") && i["attached"].is_boolean() && i["attached"].get<bool>();
      ifaces += str(i, "name") + " (" + str(i, "mode") +
                (attached ? ", attached" : ", NOT attached") + ")";
    }
  }
  std::string addrs = str(node, "ipv4");
  if (!str(node, "ipv6").empty() && str(node, "ipv6") != "null") {
    addrs += (addrs.empty() || addrs == "null" ? "" : ", ") + str(node, "ipv6");
  }
  bool adopted = s.contains("adopted") && s["adopted"].is_boolean() && s["adopted"].get<bool>();
  printKeyValues({
      {"meshd", str(s, "version") + " (pid " + str(s, "pid") + ", up " +
                    humanDuration(u64(s, "uptime_s")) + ")"},
      {"state", std::string(adopted ? "adopted pinned maps" : "started fresh") + " in " +
                    str(s, "pin_root")},
      {"interfaces", ifaces.empty() ? "-" : ifaces},
      {"node address", addrs},
      {"snat ports", str(node, "snat_port_min") + "-" + str(node, "snat_port_max")},
      {"ring size", str(node, "ring_size")},
      {"conn table", humanCount(u64(node, "conn_table_size")) + " entries"},
      {"flow cache", u64(node, "flow_cache_slots") == 0
                         ? std::string("off")
                         : std::to_string(u64(node, "flow_cache_slots")) + " slots per CPU"},
      {"services", std::to_string(u64(s, "services")) + " (" + std::to_string(u64(s, "endpoints")) +
                       " endpoints)"},
  });
  return kExitOk;
}

// --- services ---

int cmdServiceList(const Context& ctx) {
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
           {"ENDPOINTS", Align::kRight},
           {"NEW CONNS", Align::kRight},
           {"PACKETS", Align::kRight},
           {"BYTES", Align::kRight}});
  for (const auto& svc : reply.body) {
    size_t n =
        svc.contains("endpoints") && svc["endpoints"].is_array() ? svc["endpoints"].size() : 0;
    t.addRow({str(svc, "name"), hostPort(str(svc, "vip"), u64(svc, "port")), str(svc, "protocol"),
              str(svc, "algorithm"), str(svc, "forwarding"), std::to_string(n),
              humanCount(u64(stats(svc), "new_conns")), humanCount(u64(stats(svc), "packets")),
              humanBytes(u64(stats(svc), "bytes"))});
  }
  t.print(std::cout);
  return kExitOk;
}

// An endpoint's open connections as meshd counts them; "-" where it cannot (UDP has no close).
std::string activeConns(const json& ep) {
  if (!ep.is_object() || !ep.contains("active_conns") || !ep["active_conns"].is_number()) return "-";
  return humanCount(ep["active_conns"].get<uint64_t>());
}

// "draining" / "drained" for an endpoint at weight 0, "" otherwise.
std::string drainState(const json& ep) {
  if (!ep.is_object() || !ep.contains("drain") || !ep["drain"].is_string()) return "";
  return ep["drain"].get<std::string>();
}

void printService(const json& svc) {
  const json& st = stats(svc);
  printKeyValues({
      {"service", str(svc, "name") + " (id " + str(svc, "id") + ")"},
      {"vip", hostPort(str(svc, "vip"), u64(svc, "port")) + "/" + str(svc, "protocol")},
      {"algorithm", str(svc, "algorithm") + " (ring size " + str(svc, "ring_size") + ")"},
      {"forwarding", str(svc, "forwarding")},
      {"traffic", humanCount(u64(st, "new_conns")) + " new connections, " +
                      humanCount(u64(st, "packets")) + " packets, " + humanBytes(u64(st, "bytes"))},
  });
  std::cout << '\n';
  const json& eps =
      svc.contains("endpoints") && svc["endpoints"].is_array() ? svc["endpoints"] : json::array();
  if (eps.empty()) {
    std::cout << "no endpoints (add one with `meshctl endpoint add " << str(svc, "name")
              << " ADDR:PORT`)\n";
    return;
  }
  uint64_t weights = 0, conns = 0;
  for (const auto& ep : eps) {
    weights += u64(ep, "weight");
    conns += u64(stats(ep), "new_conns");
  }
  Table t({{"ENDPOINT"},
           {"ID", Align::kRight},
           {"WEIGHT", Align::kRight},
           {"EXPECTED", Align::kRight},
           {"ACTIVE", Align::kRight},
           {"NEW CONNS", Align::kRight},
           {"SHARE", Align::kRight},
           {"PACKETS", Align::kRight},
           {"BYTES", Align::kRight},
           {"DRAIN"}});
  for (const auto& ep : eps) {
    t.addRow({endpointKey(ep), str(ep, "id"), std::to_string(u64(ep, "weight")),
              percent(u64(ep, "weight"), weights), activeConns(ep),
              humanCount(u64(stats(ep), "new_conns")),
              percent(u64(stats(ep), "new_conns"), conns), humanCount(u64(stats(ep), "packets")),
              humanBytes(u64(stats(ep), "bytes")), drainState(ep)});
  }
  t.print(std::cout);
  std::cout << "\nEXPECTED is the endpoint's share of the weights; SHARE its share of the new "
               "connections counted so far.\n";
}

int cmdServiceShow(const Context& ctx, const Args& a) {
  std::string error;
  if (!validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get(serviceTarget(a.service));
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
  } else {
    printService(reply.body);
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

// --- endpoints ---

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

// --- stats ---

// "hits 1.2M (97.1%), misses 35k, of them 2k conflicts; 0 packets bypassed", or "off".
std::string flowCacheLine(const json& fc) {
  if (!fc.is_object() || u64(fc, "slots_per_cpu") == 0) return "off (node.flow_cache_slots: 0)";
  const uint64_t hits = u64(fc, "hits"), misses = u64(fc, "misses");
  return std::to_string(u64(fc, "slots_per_cpu")) + " slots per CPU; hits " + humanCount(hits) +
         " (" + percent(hits, hits + misses) + "), misses " + humanCount(misses) + " (" +
         humanCount(u64(fc, "conflicts")) + " conflicts), bypassed " +
         humanCount(u64(fc, "bypassed")) + " packets";
}

int cmdStats(const Context& ctx, const Args& a) {
  std::string error;
  if (!a.service.empty() && !validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get("/v1/stats");
  if (!reply.ok()) return ctx.failed(reply);
  json services =
      reply.body.is_object() && reply.body.contains("services") && reply.body["services"].is_array()
          ? reply.body["services"]
          : json::array();
  if (!a.service.empty()) {
    json picked = json::array();
    for (const auto& s : services) {
      if (str(s, "name") == a.service) picked.push_back(s);
    }
    if (picked.empty()) {
      return ctx.refused("unknown service '" + a.service + "'",
                         "list services with `meshctl service list`");
    }
    services = picked;
  }
  if (ctx.json()) {
    if (a.service.empty()) {
      ctx.printJson(reply);
    } else {
      std::cout << services[0].dump(2) << '\n';
    }
    return kExitOk;
  }

  // Weights come from the services; stats carry only counters.
  std::map<std::pair<std::string, std::string>, uint64_t> weights;
  auto svcReply = ctx.api().get("/v1/services");
  if (svcReply.ok() && svcReply.body.is_array()) {
    for (const auto& s : svcReply.body) {
      if (!s.contains("endpoints") || !s["endpoints"].is_array()) continue;
      for (const auto& ep : s["endpoints"]) {
        weights[{str(s, "name"), endpointKey(ep)}] = u64(ep, "weight");
      }
    }
  }
  if (services.empty()) std::cout << "no services\n";
  bool first = true;
  for (const auto& s : services) {
    if (!first) std::cout << '\n';
    first = false;
    std::cout << str(s, "name") << ": " << humanCount(u64(s, "new_conns")) << " new connections, "
              << humanCount(u64(s, "packets")) << " packets, " << humanBytes(u64(s, "bytes"))
              << '\n';
    const json& eps =
        s.contains("endpoints") && s["endpoints"].is_array() ? s["endpoints"] : json::array();
    if (eps.empty()) {
      std::cout << "  no endpoints\n";
      continue;
    }
    uint64_t conns = 0, weightSum = 0;
    for (const auto& ep : eps) {
      conns += u64(ep, "new_conns");
      auto w = weights.find({str(s, "name"), endpointKey(ep)});
      if (w != weights.end()) weightSum += w->second;
    }
    Table t({{"ENDPOINT"},
             {"WEIGHT", Align::kRight},
             {"EXPECTED", Align::kRight},
             {"NEW CONNS", Align::kRight},
             {"SHARE", Align::kRight},
             {"PACKETS", Align::kRight},
             {"BYTES", Align::kRight}});
    for (const auto& ep : eps) {
      auto w = weights.find({str(s, "name"), endpointKey(ep)});
      bool known = w != weights.end();
      t.addRow({endpointKey(ep), known ? std::to_string(w->second) : "-",
                known ? percent(w->second, weightSum) : "-", humanCount(u64(ep, "new_conns")),
                percent(u64(ep, "new_conns"), conns), humanCount(u64(ep, "packets")),
                humanBytes(u64(ep, "bytes"))});
    }
    t.print(std::cout, "  ");
  }
  if (a.service.empty() && reply.body.is_object() && reply.body.contains("exceptions") &&
      reply.body["exceptions"].is_object()) {
    std::vector<std::pair<std::string, std::string>> nonzero;
    for (const auto& [name, value] : reply.body["exceptions"].items()) {
      if (value.is_number() && value.get<uint64_t>() > 0) {
        nonzero.emplace_back("  " + name, humanCount(value.get<uint64_t>()));
      }
    }
    std::cout << "\ndatapath exceptions:" << (nonzero.empty() ? " none\n" : "\n");
    printKeyValues(nonzero);
  }
  if (a.service.empty() && reply.body.is_object() && reply.body.contains("flow_cache")) {
    std::cout << "\nflow cache: " << flowCacheLine(reply.body["flow_cache"]) << '\n';
  }
  return kExitOk;
}

// --- health ---

double num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return 0;
  return j[key].get<double>();
}

int cmdHealth(const Context& ctx, const Args& a) {
  std::string error;
  if (!a.service.empty() && !validServiceName(a.service, &error)) return ctx.usage(error);
  auto reply = ctx.api().get(a.service.empty() ? "/v1/health" : "/v1/health/" + a.service);
  if (!reply.ok()) return ctx.failed(reply);
  if (ctx.json()) {
    ctx.printJson(reply);
    return kExitOk;
  }
  const json& services = reply.body.is_object() && reply.body.contains("services")
                             ? reply.body["services"]
                             : json::array();
  if (services.empty()) std::cout << "no services\n";
  bool first = true;
  for (const auto& s : services) {
    if (!first) std::cout << '\n';
    first = false;
    const json& check = s.contains("check") ? s["check"] : json::object();
    std::cout << str(s, "name") << ": ";
    std::string passive = u64(check, "passive_fall") == 0
                              ? "passive detection off"
                              : "datapath marks down after " +
                                    std::to_string(u64(check, "passive_fall")) +
                                    " passive failures";
    if (str(check, "type") == "none") {
      std::cout << "no active checks; " << passive << '\n';
    } else {
      std::cout << str(check, "type") << " check every " << str(check, "interval") << ", timeout "
                << str(check, "timeout") << ", rise " << u64(check, "rise") << ", fall "
                << u64(check, "fall") << "; " << u64(s, "healthy") << " of "
                << s["endpoints"].size() << " healthy, " << u64(s, "out") << " out (cap "
                << u64(s, "max_out") << "); " << passive << '\n';
    }
    if (s.value("panic", false)) {
      std::cout << "  !!! PANIC: too few healthy endpoints (panic_threshold "
                << u64(check, "panic_threshold")
                << "%): new connections spread over ALL endpoints, failing ones too !!!\n";
    }
    Table t({{"ENDPOINT"},
             {"STATE"},
             {"SINCE", Align::kRight},
             {"RING"},
             {"LAST PROBE"},
             {"LATENCY", Align::kRight},
             {"PASSIVE", Align::kRight},
             {"DATAPATH"},
             {"RTT", Align::kRight},
             {"EJECTIONS", Align::kRight}});
    for (const auto& ep : s["endpoints"]) {
      std::string state = str(ep, "state");
      if (ep.value("held_by_cap", false)) state += " (held by cap)";
      if (ep.contains("ejected_for_s") && ep["ejected_for_s"].is_number()) {
        state += " (" + fixed(num(ep, "ejected_for_s"), 1) + "s left)";
      }
      const json& probe = ep.contains("last_probe") ? ep["last_probe"] : json(nullptr);
      std::string last = "-", latency = "-";
      if (probe.is_object()) {
        last = std::string(probe.value("ok", false) ? "ok" : "FAIL") + " " + str(probe, "detail");
        latency = fixed(num(probe, "latency_ms"), 2) + "ms";
      }
      std::string since = ep.contains("since_s") && ep["since_s"].is_number()
                              ? humanDuration(static_cast<uint64_t>(num(ep, "since_s"))) + " ago"
                              : "-";
      const json& dp = ep.contains("datapath") ? ep["datapath"] : json(nullptr);
      std::string datapath = "-", rtt = "-";
      if (dp.is_object()) {
        datapath = std::string(dp.value("down", false) ? "DOWN" : "up");
        if (u64(dp, "fall") == 0) {
          datapath += " (passive off)";
        } else {
          datapath += " " + std::to_string(u64(dp, "fails")) + "/" + std::to_string(u64(dp, "fall"));
        }
        if (dp.contains("rtt_us") && dp["rtt_us"].is_number()) rtt = fixed(num(dp, "rtt_us"), 0) + "us";
      }
      t.addRow({endpointKey(ep), state, since, ep.value("in_ring", false) ? "in" : "out", last,
                latency, std::to_string(u64(ep, "passive_failures")), datapath, rtt,
                std::to_string(u64(ep, "ejections"))});
    }
    t.print(std::cout, "  ");
  }
  if (reply.body.contains("scheduler")) {
    const json& sch = reply.body["scheduler"];
    std::cout << "\nprobe schedule: " << u64(sch, "targets") << " targets, "
              << humanCount(u64(sch, "probes")) << " probes, lag p50 "
              << fixed(num(sch, "lag_p50_ms"), 2) << "ms p99 " << fixed(num(sch, "lag_p99_ms"), 2)
              << "ms max " << fixed(num(sch, "lag_max_ms"), 2) << "ms, " << u64(sch, "skipped")
              << " slots skipped\n";
  }
  return kExitOk;
}

std::string eventLine(const json& e) {
  std::string who = str(e, "service");
  if (e.contains("endpoint") && e["endpoint"].is_string()) who += " " + str(e, "endpoint");
  return str(e, "time") + "  " + who + "  " + str(e, "from") + " -> " + str(e, "to") + "  " +
         str(e, "reason");
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

// --- apply ---

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
  printKeyValues({{"  added", names("added")},
                  {"  removed", names("removed")},
                  {"  changed", names("changed")}});
  return kExitOk;
}

// --- the table of subcommands ---

using Action = std::function<int(const Context&, const Args&)>;

struct Subcommand {
  std::vector<const char*> path;  // e.g. {"endpoint", "add"}
  const char* help;
  std::function<void(CLI::App*, Args&)> options;
  Action action;
};

std::vector<Subcommand> subcommands() {
  return {
      {{"status"},
       "Show the daemon, its interfaces and node settings",
       nullptr,
       [](const Context& c, const Args&) { return cmdStatus(c); }},
      {{"service", "add"},
       "Add a service (VIP:port) with optional endpoints",
       [](CLI::App* s, Args& a) {
         s->add_option("NAME", a.service, "service name")->required();
         s->add_option("--vip", a.vip, "virtual IP (IPv4 or IPv6)")->required();
         s->add_option("--port", a.port, "service port (1-65535)")->required();
         s->add_option("--protocol", a.protocol, "tcp (default) or udp")
             ->check(CLI::IsMember({"tcp", "udp"}));
         s->add_option("--algorithm", a.algorithm,
                       "maglev (default), random, round-robin, least-conn, least-latency");
         s->add_option("--forwarding", a.forwarding, "forwarding mode (default nat)");
         s->add_option("--endpoint", a.endpoints, "ADDR:PORT[@WEIGHT], repeatable")
             ->allow_extra_args(false);
       },
       cmdServiceAdd},
      {{"service", "del"},
       "Delete a service and its endpoints",
       [](CLI::App* s, Args& a) { s->add_option("NAME", a.service, "service name")->required(); },
       cmdServiceDel},
      {{"service", "list"},
       "List services with their traffic",
       nullptr,
       [](const Context& c, const Args&) { return cmdServiceList(c); }},
      {{"service", "show"},
       "Show one service, its endpoints and their shares",
       [](CLI::App* s, Args& a) { s->add_option("NAME", a.service, "service name")->required(); },
       cmdServiceShow},
      {{"endpoint", "add"},
       "Add an endpoint to a service",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_option("--weight", a.weight, "0-10000 (default 1; 0 admits no new connections)");
       },
       cmdEndpointAdd},
      {{"endpoint", "del"},
       "Remove an endpoint from a service",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
       },
       cmdEndpointDel},
      {{"endpoint", "set-weight"},
       "Change an endpoint's weight (0 drains it)",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_option("WEIGHT", a.weight, "0-10000")->required();
       },
       cmdEndpointSetWeight},
      {{"endpoint", "drain"},
       "Drain an endpoint: weight 0, open connections stay; --wait reports when none is left",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_flag("-w,--wait", a.wait, "follow the open connections until the drain completes");
         s->add_option("--wait-limit", a.waitSeconds,
                       "give up waiting after this many seconds (exit 1; default: no limit)");
       },
       cmdEndpointDrain},
      {{"stats"},
       "Counters per service and endpoint, with each endpoint's share",
       [](CLI::App* s, Args& a) { s->add_option("SERVICE", a.service, "only this service"); },
       cmdStats},
      {{"health"},
       "Health of each endpoint: state, since, last probe, passive failures, ejections",
       [](CLI::App* s, Args& a) { s->add_option("SERVICE", a.service, "only this service"); },
       cmdHealth},
      {{"events"},
       "Health transitions (the last ones kept by meshd); --follow streams new ones",
       [](CLI::App* s, Args& a) {
         s->add_flag("-f,--follow", a.follow, "keep following transitions as they happen");
       },
       cmdEvents},
      {{"apply"},
       "Replace all services with those of a config file (YAML)",
       [](CLI::App* s, Args& a) {
         s->add_option("-f,--file", a.file, "config file, - for standard input")->required();
       },
       cmdApply},
  };
}

int run(int argc, char** argv) {
  CLI::App app{"meshctl — control a meshpath node through its daemon, meshd", "meshctl"};
  app.set_version_flag("--version", "meshctl 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand: `meshctl stats -o json`
  Options options;
  app.add_option("--socket", options.socket, "meshd's API socket")
      ->envname("MESHPATH_SOCKET")
      ->capture_default_str();
  app.add_option("-o,--output", options.output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", options.timeoutSeconds, "seconds to wait for meshd")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  Args args;
  Action chosen;
  std::string chosenPath;
  std::map<std::string, CLI::App*> groups;
  auto table = subcommands();
  for (auto& cmd : table) {
    CLI::App* parent = &app;
    if (cmd.path.size() == 2) {
      auto& group = groups[cmd.path[0]];
      if (group == nullptr) {
        group = app.add_subcommand(cmd.path[0], std::string("Manage ") + cmd.path[0] + "s");
        group->require_subcommand(1);
      }
      parent = group;
    }
    CLI::App* sub = parent->add_subcommand(cmd.path.back(), cmd.help);
    if (cmd.options) cmd.options(sub, args);
    sub->callback([&chosen, &chosenPath, &cmd] {
      chosen = cmd.action;
      for (const char* part : cmd.path)
        chosenPath += (chosenPath.empty() ? "" : " ") + std::string(part);
    });
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The deepest subcommand reached names the help page to read.
    std::string path;
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      path += " " + sub->get_name();
    }
    auto extra = app.remaining();
    std::string message = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && !extra.empty() &&
        message.find("subcommand") != std::string::npos) {
      message = "unknown command '" + extra.front() + "'";
    }
    std::cerr << "meshctl: " << message << "\n  hint: see `meshctl" << path << " --help`\n";
    return kExitUsage;
  }
  Context ctx(options, chosenPath);
  return chosen ? chosen(ctx, args) : kExitUsage;
}

}  // namespace
}  // namespace meshpath::meshctl

int main(int argc, char** argv) { return meshpath::meshctl::run(argc, argv); }
