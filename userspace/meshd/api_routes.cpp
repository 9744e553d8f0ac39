// api_routes.cpp — the route table of docs/api.md: each route parses its path and body, asks the
// control plane (or the health monitor), and answers with a view (api_views.h).
#include <algorithm>
#include <nlohmann/json.hpp>

#include "api_handler.h"
#include "api_json.h"
#include "api_views.h"
#include "health/health_monitor.h"

namespace meshpath {

using nlohmann::json;

ApiAnswer jsonAnswer(int status, const json& body) {
  // Input echoed into answers may hold bytes that are not UTF-8; replace them rather than throw.
  ApiAnswer a;
  a.status = status;
  a.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return a;
}

ApiAnswer errorAnswer(int status, const std::string& error, const std::string& hint) {
  return jsonAnswer(status, json{{"error", error}, {"hint", hint}});
}

ApiAnswer errorAnswer(const ApiError& e) {
  json body{{"error", e.error}, {"hint", e.hint}};
  if (e.detail.is_object()) {
    for (const auto& [k, v] : e.detail.items()) body[k] = v;
  }
  return jsonAnswer(e.status, body);
}

namespace {

std::string percentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string> pathSegments(const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next > pos) out.push_back(percentDecode(path.substr(pos, next - pos)));
    pos = next + 1;
  }
  return out;
}

ApiAnswer dataplaneFailure(const Error& e) {
  return errorAnswer(500, "dataplane: " + e.toString(), "see meshd's log");
}

// The value of `name` in the target's query ("/v1/events?follow=1&since=3"), or nullopt.
std::optional<std::string> queryParam(const std::string& target, const std::string& name) {
  const size_t q = target.find('?');
  if (q == std::string::npos) return std::nullopt;
  const std::string query = target.substr(q + 1);
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    const std::string part = query.substr(pos, amp - pos);
    const size_t eq = part.find('=');
    if (percentDecode(part.substr(0, eq)) == name) {
      return eq == std::string::npos ? "" : percentDecode(part.substr(eq + 1));
    }
    pos = amp + 1;
  }
  return std::nullopt;
}

std::optional<uint16_t> parsePort(const std::string& text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int v = std::stoi(text);
  if (v < 1 || v > 65535) return std::nullopt;
  return static_cast<uint16_t>(v);
}

std::optional<IpAddress> parsePathAddress(std::string text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  return IpAddress::parse(text);
}

struct PathEndpoint {
  IpAddress address;
  uint16_t port;
};

// The endpoint an .../endpoints/{address}/{port} path names ("10.0.2.11", "fd00::11" or
// "[fd00::11]"), or the 400 that says which part is wrong.
ApiResult<PathEndpoint> endpointInPath(const std::string& address, const std::string& port) {
  auto addr = parsePathAddress(address);
  if (!addr) return ApiError{400, "bad endpoint address in path: " + address, ""};
  auto p = parsePort(port);
  if (!p) return ApiError{400, "bad endpoint port in path: " + port, "a port is 1..65535"};
  return PathEndpoint{*addr, *p};
}

// PUT weight and POST drain: the validated, saved weight change, answered with the Endpoint.
// PUT weight and POST drain: the validated, saved weight change, answered with the Endpoint.
ApiAnswer weightAnswer(ControlPlane& cp, const std::string& service, const PathEndpoint& ep,
                       uint32_t weight) {
  auto changed = cp.setEndpointWeight(service, ep.address, ep.port, weight);
  if (!changed) return errorAnswer(changed.error());
  auto view = endpointView(cp, service, *changed);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(200, *view);
}

}  // namespace

ApiAnswer ApiHandler::handle(const std::string& method, const std::string& target,
                             const std::string& body) {
  std::vector<std::string> seg = pathSegments(target);
  auto route = [&](std::initializer_list<const char*> allowed) -> std::optional<ApiAnswer> {
    for (const char* m : allowed) {
      if (method == m) return std::nullopt;
    }
    std::string allow;
    for (const char* m : allowed) allow += (allow.empty() ? "" : ", ") + std::string(m);
    ApiAnswer a = errorAnswer(405, "method " + method + " not allowed on " + target,
                              "this path takes " + allow);
    a.allow = allow;
    return a;
  };

  if (seg.size() < 2 || seg[0] != "v1") {
    return errorAnswer(404, "no such path: " + target, "see docs/api.md for the routes");
  }
  const std::string& top = seg[1];
  if (top == "status" && seg.size() == 2) {
    if (auto r = route({"GET"})) return *r;
    return status();
  }
  if (top == "stats" && seg.size() == 2) {
    if (auto r = route({"GET"})) return *r;
    return stats();
  }
  if (top == "health" && (seg.size() == 2 || seg.size() == 3)) {
    if (auto r = route({"GET"})) return *r;
    return healthView(seg.size() == 3 ? seg[2] : "");
  }
  if (top == "events" && seg.size() == 2) {
    if (auto r = route({"GET"})) return *r;
    return events(target);
  }
  if (top == "apply" && seg.size() == 2) {
    if (auto r = route({"POST"})) return *r;
    return apply(target, body);
  }
  if (top == "upgrade" && seg.size() == 2) {
    if (auto r = route({"POST"})) return *r;
    return upgrade();
  }
  if (top == "services") {
    if (seg.size() == 2) {
      if (auto r = route({"GET", "POST"})) return *r;
      return method == "GET" ? listServices() : createService(body);
    }
    if (seg.size() == 3) {
      if (auto r = route({"GET", "DELETE"})) return *r;
      return method == "GET" ? getService(seg[2]) : deleteService(seg[2]);
    }
    if (seg.size() == 4 && seg[3] == "endpoints") {
      if (auto r = route({"POST"})) return *r;
      return addEndpoint(seg[2], body);
    }
    if (seg.size() == 6 && seg[3] == "endpoints") {
      if (auto r = route({"GET", "PUT", "DELETE"})) return *r;
      if (method == "GET") return getEndpoint(seg[2], seg[4], seg[5]);
      return method == "PUT" ? setEndpointWeight(seg[2], seg[4], seg[5], body)
                             : removeEndpoint(seg[2], seg[4], seg[5]);
    }
    if (seg.size() == 7 && seg[3] == "endpoints" && seg[6] == "drain") {
      if (auto r = route({"POST"})) return *r;
      return drainEndpoint(seg[2], seg[4], seg[5]);
    }
  }
  return errorAnswer(404, "no such path: " + target, "see docs/api.md for the routes");
}

ApiAnswer ApiHandler::status() {
  auto view = statusView(cp_);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(200, *view);
}

ApiAnswer ApiHandler::listServices() {
  json out = json::array();
  for (const ServiceSpec& s : cp_.desired().services) {
    auto view = serviceView(cp_, s);
    if (!view) return dataplaneFailure(view.error());
    out.push_back(std::move(*view));
  }
  return jsonAnswer(200, out);
}

ApiAnswer ApiHandler::getService(const std::string& name) {
  const ServiceSpec* s = cp_.findService(name);
  if (s == nullptr) {
    return errorAnswer(404, "service " + name + " not found",
                       "see what exists with `meshctl service list`");
  }
  auto view = serviceView(cp_, *s);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(200, *view);
}

ApiAnswer ApiHandler::createService(const std::string& body) {
  auto spec = serviceFromApiJson(body);
  if (!spec) return errorAnswer(spec.error());
  auto created = cp_.createService(*spec);
  if (!created) return errorAnswer(created.error());
  auto view = serviceView(cp_, *created);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(201, *view);
}

ApiAnswer ApiHandler::deleteService(const std::string& name) {
  auto deleted = cp_.deleteService(name);
  if (!deleted) return errorAnswer(deleted.error());
  return jsonAnswer(200, json{{"deleted", *deleted}});
}

ApiAnswer ApiHandler::addEndpoint(const std::string& service, const std::string& body) {
  auto spec = endpointFromApiJson(body);
  if (!spec) return errorAnswer(spec.error());
  auto added = cp_.addEndpoint(service, *spec);
  if (!added) return errorAnswer(added.error());
  auto view = endpointView(cp_, service, *added);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(201, *view);
}

ApiAnswer ApiHandler::setEndpointWeight(const std::string& service, const std::string& address,
                                        const std::string& port, const std::string& body) {
  auto ep = endpointInPath(address, port);
  if (!ep) return errorAnswer(ep.error());
  auto weight = weightFromApiJson(body);
  if (!weight) return errorAnswer(weight.error());
  return weightAnswer(cp_, service, *ep, *weight);
}

ApiAnswer ApiHandler::getEndpoint(const std::string& service, const std::string& address,
                                  const std::string& port) {
  auto ep = endpointInPath(address, port);
  if (!ep) return errorAnswer(ep.error());
  const ServiceSpec* s = cp_.findService(service);
  if (s == nullptr) {
    return errorAnswer(404, "service " + service + " not found",
                       "see what exists with `meshctl service list`");
  }
  for (const EndpointSpec& e : s->endpoints) {
    if (e.address != ep->address || e.port != ep->port) continue;
    auto view = endpointView(cp_, service, e);
    if (!view) return dataplaneFailure(view.error());
    return jsonAnswer(200, *view);
  }
  return errorAnswer(404,
                     "endpoint " + EndpointSpec{ep->address, ep->port, 1}.key() + " of service " +
                         service + " not found",
                     "see the endpoints with `meshctl service show " + service + "`");
}

ApiAnswer ApiHandler::drainEndpoint(const std::string& service, const std::string& address,
                                    const std::string& port) {
  auto ep = endpointInPath(address, port);
  if (!ep) return errorAnswer(ep.error());
  return weightAnswer(cp_, service, *ep, 0);  // the same path as PUT {"weight": 0}
}

ApiAnswer ApiHandler::removeEndpoint(const std::string& service, const std::string& address,
                                     const std::string& port) {
  auto ep = endpointInPath(address, port);
  if (!ep) return errorAnswer(ep.error());
  auto removed = cp_.removeEndpoint(service, ep->address, ep->port);
  if (!removed) return errorAnswer(removed.error());
  return jsonAnswer(200, json{{"deleted", *removed}});
}

ApiAnswer ApiHandler::stats() {
  auto view = statsView(cp_);
  if (!view) return dataplaneFailure(view.error());
  return jsonAnswer(200, *view);
}

ApiAnswer ApiHandler::apply(const std::string& target, const std::string& body) {
  bool dryRun = false;
  if (auto v = queryParam(target, "dry_run")) {
    if (*v == "1" || *v == "true" || v->empty()) {
      dryRun = true;
    } else if (*v != "0" && *v != "false") {
      return errorAnswer(400, "dry_run: " + *v + " is not 1 or 0",
                         "POST /v1/apply?dry_run=1 validates and shows the diff only");
    }
  }
  auto applied = cp_.applyConfigText(body, dryRun);
  if (!applied) return errorAnswer(applied.error());
  const ConfigApplied& r = *applied;
  ApiAnswer a = jsonAnswer(200, json{{"dry_run", r.dryRun},
                                     {"added", r.report.added},
                                     {"removed", r.report.removed},
                                     {"changed", r.report.changed},
                                     {"diff", r.diff.toJson()},
                                     {"lines", r.diff.lines()},
                                     {"summary", r.diff.summary()}});
  a.dryRun = r.dryRun;
  return a;
}

ApiAnswer ApiHandler::upgrade() {
  if (!post_) return upgradeAnswer(cp_.dataplane().upgrade());
  ApiAnswer a;
  a.later = [this](std::function<void(ApiAnswer)> deliver) {
    cp_.dataplane().upgradeInBackground(
        post_, [deliver = std::move(deliver)](Result<UpgradeReport> report) {
          deliver(upgradeAnswer(report));
        });
  };
  return a;
}

ApiAnswer upgradeAnswer(const Result<UpgradeReport>& report) {
  if (!report) {
    return errorAnswer(report.error().code == EBUSY ? 409 : 500,
                       "upgrade: " + report.error().toString(),
                       report.error().hint.empty() ? "see meshd's log" : report.error().hint);
  }
  json view = upgradeView(*report);
  if (!report->complete) view["error"] = "upgrade incomplete: " + report->problem;
  ApiAnswer a = jsonAnswer(report->complete ? 200 : 500, view);
  a.audit = "program upgraded: id " + std::to_string(report->from.id) + " (" + report->from.tag +
            ") -> id " + std::to_string(report->to.id) + " (" + report->to.tag + ")" +
            (report->complete ? "" : ", incomplete: " + report->problem);
  return a;
}

ApiAnswer ApiHandler::healthView(const std::string& service) {
  if (health_ == nullptr) {
    return errorAnswer(503, "health checks are not running", "see meshd's log");
  }
  auto view = health_->healthJson(service);
  if (!view) {
    return errorAnswer(404, "service " + service + " not found",
                       "see what exists with `meshctl service list`");
  }
  return jsonAnswer(200, *view);
}

ApiAnswer ApiHandler::events(const std::string& target) {
  if (health_ == nullptr) {
    return errorAnswer(503, "health checks are not running", "see meshd's log");
  }
  uint64_t since = 0;
  if (auto v = queryParam(target, "since")) {
    if (v->empty() || v->size() > 19 ||
        !std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return errorAnswer(400, "since: " + *v + " is not an event number",
                         "give the seq of the last event seen, e.g. ?since=42");
    }
    since = std::stoull(*v);
  }
  const auto follow = queryParam(target, "follow");
  if (follow && (*follow == "1" || *follow == "true" || follow->empty())) {
    ApiAnswer a;
    a.followFrom = since;
    return a;
  }
  return jsonAnswer(200, health_->eventsJson(since));
}

}  // namespace meshpath
