#include "api_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <nlohmann/json.hpp>

#include "abi.h"
#include "api_json.h"
#include "health/health_monitor.h"

#ifndef MESHPATH_VERSION
#define MESHPATH_VERSION "dev"
#endif

namespace meshpath {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = asio::local::stream_protocol;
using nlohmann::json;

namespace {

constexpr size_t kBodyLimit = 16 << 20;  // a config of 1024 services fits many times over
constexpr auto kIdleTimeout = std::chrono::seconds(60);

// Input echoed into answers may hold bytes that are not UTF-8; replace them rather than throw.
ApiAnswer answer(int status, const json& body) {
  return ApiAnswer{
      status, body.dump(-1, ' ', false, json::error_handler_t::replace), {}, std::nullopt};
}

ApiAnswer errorAnswer(int status, const std::string& error, const std::string& hint) {
  return answer(status, json{{"error", error}, {"hint", hint}});
}

ApiAnswer errorAnswer(const ApiError& e) { return errorAnswer(e.status, e.error, e.hint); }

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

json countersJson(const Counters& c) {
  return {{"packets", c.packets}, {"bytes", c.bytes}, {"new_conns", c.newConns}};
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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Routes

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
    return apply(body);
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
  const DesiredState& d = cp_.desired();
  json interfaces = json::array();
  for (const InterfaceStatus& i : cp_.dataplane().interfaces()) {
    interfaces.push_back(
        {{"name", i.name}, {"ifindex", i.ifindex}, {"attached", i.attached}, {"mode", i.mode}});
  }
  size_t endpoints = 0;
  for (const ServiceSpec& s : d.services) endpoints += s.endpoints.size();
  auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() -
                                                                 cp_.startedAt());
  json node = {{"ipv4", d.node.ipv4 ? json(d.node.ipv4->toString()) : json(nullptr)},
               {"ipv6", d.node.ipv6 ? json(d.node.ipv6->toString()) : json(nullptr)},
               {"snat_port_min", d.node.snatPortMin},
               {"snat_port_max", d.node.snatPortMax},
               {"ring_size", d.node.ringSize},
               {"conn_table_size", d.node.connTableSize},
               {"flow_cache_slots", d.node.flowCacheSlots}};
  return answer(200, json{{"version", MESHPATH_VERSION},
                          {"pid", ::getpid()},
                          {"uptime_s", uptime.count()},
                          {"adopted", cp_.adopted()},
                          {"pin_root", cp_.dataplane().pinRoot()},
                          {"interfaces", interfaces},
                          {"node", node},
                          {"services", d.services.size()},
                          {"endpoints", endpoints}});
}

namespace {

// An Endpoint's datapath fields: "active_conns" (TCP; null for UDP) and "drain" (weight 0:
// "draining" while connections are open, "drained" when none is; null with weight > 0).
Result<void> addConnectionView(ControlPlane& cp, Protocol protocol, uint32_t id,
                               const EndpointSpec& e, json& j) {
  std::optional<int64_t> active;
  if (protocol == Protocol::kTcp) {
    auto h = cp.dataplane().endpointHealth(id);
    if (!h) return h.error();
    active = h->activeConns;
  }
  j["active_conns"] = active ? json(*active) : json(nullptr);
  if (e.weight > 0) {
    j["drain"] = nullptr;
  } else {
    // UDP has no connection count to wait for: drained as soon as the weight is 0.
    j["drain"] = active.value_or(0) > 0 ? "draining" : "drained";
  }
  return {};
}

// A Service of docs/api.md: the spec plus its id, ring size and counters.
Result<json> serviceView(ControlPlane& cp, const ServiceSpec& s) {
  json j = serviceToApiJson(s);
  uint32_t id = cp.reconciler().serviceId(s.name).value_or(0);
  j["id"] = id;
  j["ring_size"] = cp.desired().node.ringSize;
  auto svcStats = cp.dataplane().serviceStats(id);
  if (!svcStats) return svcStats.error();
  j["stats"] = countersJson(*svcStats);
  for (size_t i = 0; i < s.endpoints.size(); ++i) {
    uint32_t epId = cp.reconciler().endpointId(s.name, s.endpoints[i].key()).value_or(0);
    auto epStats = cp.dataplane().endpointStats(epId);
    if (!epStats) return epStats.error();
    j["endpoints"][i]["id"] = epId;
    j["endpoints"][i]["stats"] = countersJson(*epStats);
    if (auto r = addConnectionView(cp, s.protocol, epId, s.endpoints[i], j["endpoints"][i]); !r) {
      return r.error();
    }
  }
  return j;
}

Result<json> endpointView(ControlPlane& cp, const std::string& service, const EndpointSpec& e) {
  json j = endpointToApiJson(e);
  uint32_t id = cp.reconciler().endpointId(service, e.key()).value_or(0);
  j["id"] = id;
  auto stats = cp.dataplane().endpointStats(id);
  if (!stats) return stats.error();
  j["stats"] = countersJson(*stats);
  const ServiceSpec* spec = cp.findService(service);
  if (auto r = addConnectionView(cp, spec ? spec->protocol : Protocol::kTcp, id, e, j); !r) {
    return r.error();
  }
  return j;
}

// PUT weight and POST drain: the validated, saved weight change, answered with the Endpoint.
ApiAnswer weightAnswer(ControlPlane& cp, const std::string& service, const PathEndpoint& ep,
                       uint32_t weight) {
  auto changed = cp.setEndpointWeight(service, ep.address, ep.port, weight);
  if (!changed) return errorAnswer(changed.error());
  auto view = endpointView(cp, service, *changed);
  if (!view) return dataplaneFailure(view.error());
  return answer(200, *view);
}

}  // namespace

ApiAnswer ApiHandler::listServices() {
  json out = json::array();
  for (const ServiceSpec& s : cp_.desired().services) {
    auto view = serviceView(cp_, s);
    if (!view) return dataplaneFailure(view.error());
    out.push_back(std::move(*view));
  }
  return answer(200, out);
}

ApiAnswer ApiHandler::getService(const std::string& name) {
  const ServiceSpec* s = cp_.findService(name);
  if (s == nullptr) {
    return errorAnswer(404, "service " + name + " not found",
                       "see what exists with `meshctl service list`");
  }
  auto view = serviceView(cp_, *s);
  if (!view) return dataplaneFailure(view.error());
  return answer(200, *view);
}

ApiAnswer ApiHandler::createService(const std::string& body) {
  auto spec = serviceFromApiJson(body);
  if (!spec) return errorAnswer(spec.error());
  auto created = cp_.createService(*spec);
  if (!created) return errorAnswer(created.error());
  auto view = serviceView(cp_, *created);
  if (!view) return dataplaneFailure(view.error());
  return answer(201, *view);
}

ApiAnswer ApiHandler::deleteService(const std::string& name) {
  auto deleted = cp_.deleteService(name);
  if (!deleted) return errorAnswer(deleted.error());
  return answer(200, json{{"deleted", *deleted}});
}

ApiAnswer ApiHandler::addEndpoint(const std::string& service, const std::string& body) {
  auto spec = endpointFromApiJson(body);
  if (!spec) return errorAnswer(spec.error());
  auto added = cp_.addEndpoint(service, *spec);
  if (!added) return errorAnswer(added.error());
  auto view = endpointView(cp_, service, *added);
  if (!view) return dataplaneFailure(view.error());
  return answer(201, *view);
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
    return answer(200, *view);
  }
  return errorAnswer(404,
                     "endpoint " + EndpointSpec{ep->address, ep->port, 1}.key() + " of service " + service +
                         " not found",
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
  return answer(200, json{{"deleted", *removed}});
}

ApiAnswer ApiHandler::stats() {
  json services = json::array();
  for (const ServiceSpec& s : cp_.desired().services) {
    auto svcStats = cp_.dataplane().serviceStats(cp_.reconciler().serviceId(s.name).value_or(0));
    if (!svcStats) return dataplaneFailure(svcStats.error());
    json endpoints = json::array();
    for (const EndpointSpec& e : s.endpoints) {
      auto id = cp_.reconciler().endpointId(s.name, e.key()).value_or(0);
      auto epStats = cp_.dataplane().endpointStats(id);
      if (!epStats) return dataplaneFailure(epStats.error());
      json ej = countersJson(*epStats);
      ej["address"] = e.address.toString();
      ej["port"] = e.port;
      endpoints.push_back(std::move(ej));
    }
    json sj = countersJson(*svcStats);
    sj["name"] = s.name;
    sj["endpoints"] = std::move(endpoints);
    services.push_back(std::move(sj));
  }
  auto exc = cp_.dataplane().exceptionCounts();
  if (!exc) return dataplaneFailure(exc.error());
  json exceptions = json::object();
  for (size_t i = 0; i < MP_EXC_MAX && i < exc->size(); ++i) {
    exceptions[mp_exc_names[i]] = (*exc)[i];
  }
  auto fc = cp_.dataplane().flowCacheStats();
  if (!fc) return dataplaneFailure(fc.error());
  const uint64_t lookups = fc->hits + fc->misses;
  json flowCache = {{"slots_per_cpu", fc->slots},
                    {"hits", fc->hits},
                    {"misses", fc->misses},
                    {"conflicts", fc->conflicts},
                    {"bypassed", fc->bypassed},
                    {"hit_ratio", lookups != 0 ? json(static_cast<double>(fc->hits) /
                                                      static_cast<double>(lookups))
                                               : json(nullptr)}};
  return answer(200, json{{"services", services},
                          {"exceptions", exceptions},
                          {"flow_cache", std::move(flowCache)}});
}

ApiAnswer ApiHandler::apply(const std::string& body) {
  auto report = cp_.applyConfigText(body);
  if (!report) return errorAnswer(report.error());
  return answer(
      200,
      json{{"added", report->added}, {"removed", report->removed}, {"changed", report->changed}});
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
  return answer(200, *view);
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
  return answer(200, health_->eventsJson(since));
}

// ---------------------------------------------------------------------------------------------
// Connections

namespace {

Result<PeerCredentials> peerCredentials(int fd) {
  PeerCredentials peer;
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return errnoError(errno, "SO_PEERCRED");
  }
  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  std::vector<gid_t> groups(64);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (rc != 0 && errno == ERANGE) {
    groups.resize(len / sizeof(gid_t));
    rc = ::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (rc == 0) {
    groups.resize(len / sizeof(gid_t));
    peer.groups = std::move(groups);
  }
  return peer;
}

class ApiSession : public std::enable_shared_from_this<ApiSession> {
 public:
  ApiSession(local::socket socket, ApiServer& server, bool allowed, PeerCredentials peer)
      : socket_(std::move(socket)),
        idle_(socket_.get_executor()),
        server_(server),
        allowed_(allowed),
        peer_(std::move(peer)) {}

  void start() { readNext(); }

 private:
  void readNext() {
    parser_.emplace();
    parser_->body_limit(kBodyLimit);
    armIdleTimer();
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->onRead(ec); });
  }

  void armIdleTimer() {
    idle_.expires_after(kIdleTimeout);
    idle_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        beast::error_code ignored;
        self->socket_.close(ignored);
      }
    });
  }

  void onRead(beast::error_code ec) {
    idle_.cancel();
    if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
        ec == asio::error::eof || ec == asio::error::connection_reset) {
      closeSocket();
      return;
    }
    http::request<http::string_body> req;
    ApiAnswer a;
    if (ec) {
      a = errorAnswer(ec == http::error::body_limit ? 413 : 400,
                      "bad HTTP request: " + ec.message(), "");
      respond(a, 11, false);
      return;
    }
    req = parser_->release();
    std::string method(req.method_string());
    std::string target(req.target());
    if (!allowed_) {
      a = errorAnswer(403, "uid " + std::to_string(peer_.uid) + " may not use meshd's API",
                      "run as root or as a member of the API socket's group");
      spdlog::warn("api: refused {} {} from pid {} uid {} gid {}", method, target, peer_.pid,
                   peer_.uid, peer_.gid);
    } else {
      try {
        a = server_.handler().handle(method, target, req.body());
      } catch (const std::exception& e) {
        // A bug must cost one request, not the daemon (an exception would unwind io.run()).
        spdlog::error("api: {} {}: unexpected exception: {}", method, target, e.what());
        a = errorAnswer(500, std::string("internal error: ") + e.what(), "see meshd's log");
      }
      bool mutating = method != "GET";
      auto level = mutating || a.status >= 500 ? spdlog::level::info : spdlog::level::debug;
      spdlog::log(level, "api: {} {} -> {} (pid {} uid {})", method, target, a.status, peer_.pid,
                  peer_.uid);
    }
    if (a.followFrom) {
      follow(*a.followFrom);
      return;
    }
    respond(a, req.version(), req.keep_alive());
  }

  // GET /v1/events?follow=1: a chunked response that never ends by itself, one JSON line per
  // event, until the client goes away or meshd stops.
  void follow(uint64_t since) {
    health::HealthMonitor* monitor = server_.handler().health();
    pending_.push_back("HTTP/1.1 200 OK\r\nServer: meshd/" MESHPATH_VERSION
                       "\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
                       "Cache-Control: no-cache\r\n\r\n");
    for (const auto& e : monitor->eventsJson(since)) queueChunk(e);
    std::weak_ptr<ApiSession> weak = weak_from_this();
    followerId_ = monitor->subscribe([weak](const json& e) {
      if (auto self = weak.lock()) self->queueChunk(e);
    });
    following_ = true;
    writeNext();
    // Anything the client sends, or its going away, ends the stream.
    socket_.async_read_some(
        asio::buffer(discard_),
        [self = shared_from_this()](beast::error_code, size_t) { self->endFollow(); });
  }

  void queueChunk(const json& e) {
    std::string line = e.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    char size[16];
    std::snprintf(size, sizeof(size), "%zx\r\n", line.size());
    pending_.push_back(size + line + "\r\n");
    if (!writing_ && following_) writeNext();
  }

  void writeNext() {
    if (writing_ || pending_.empty() || !following_) return;
    writing_ = true;
    asio::async_write(socket_, asio::buffer(pending_.front()),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) return self->endFollow();
                        self->pending_.pop_front();
                        self->writeNext();
                      });
  }

  void endFollow() {
    if (!following_) return;
    following_ = false;
    if (auto* monitor = server_.handler().health()) monitor->unsubscribe(followerId_);
    closeSocket();
  }

  void respond(const ApiAnswer& a, unsigned version, bool keepAlive) {
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(version);
    res->result(static_cast<http::status>(a.status));
    res->set(http::field::server, "meshd/" MESHPATH_VERSION);
    res->set(http::field::content_type, "application/json");
    if (!a.allow.empty()) res->set(http::field::allow, a.allow);
    res->body() = a.body + "\n";
    res->keep_alive(keepAlive);
    res->prepare_payload();
    http::async_write(socket_, *res,
                      [self = shared_from_this(), res, keepAlive](beast::error_code ec, size_t) {
                        if (ec || !keepAlive) {
                          self->closeSocket();
                          return;
                        }
                        self->readNext();
                      });
  }

  void closeSocket() {
    beast::error_code ignored;
    socket_.shutdown(local::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  local::socket socket_;
  asio::steady_timer idle_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  ApiServer& server_;
  bool allowed_;
  PeerCredentials peer_;
  // Following events.
  std::deque<std::string> pending_;
  bool writing_ = false;
  bool following_ = false;
  uint64_t followerId_ = 0;
  std::array<char, 256> discard_{};
};

}  // namespace

ApiServer::ApiServer(asio::io_context& io, ControlPlane& controlPlane)
    : io_(io), handler_(controlPlane) {}

ApiServer::~ApiServer() { close(); }

Result<void> ApiServer::listen(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Error{EEXIST, "api socket path " + path + " exists and is not a socket",
                   "remove it or set node.api_socket elsewhere"};
    }
    // A socket file that still answers belongs to a running meshd; one that does not is stale.
    local::socket probe(io_);
    beast::error_code ec;
    probe.connect(local::endpoint(path), ec);
    if (!ec) {
      return Error{EADDRINUSE, "another process is serving " + path,
                   "is another meshd running? stop it first"};
    }
    ::unlink(path.c_str());
  }
  try {
    acceptor_ = std::make_unique<local::acceptor>(io_);
    acceptor_->open();
    acceptor_->bind(local::endpoint(path));
    acceptor_->listen();
  } catch (const boost::system::system_error& e) {
    acceptor_.reset();
    return Error{e.code().value(), "listen on " + path, "check node.api_socket's directory"};
  }
  path_ = path;
  if (::chmod(path.c_str(), 0660) != 0) {
    return errnoError(errno, "chmod 0660 " + path);
  }
  acceptNext();
  return {};
}

bool ApiServer::allowed(const PeerCredentials& peer) const {
  if (peer.uid == 0 || peer.uid == ::geteuid()) return true;
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return false;
  if (peer.gid == st.st_gid) return true;
  for (gid_t g : peer.groups) {
    if (g == st.st_gid) return true;
  }
  return false;
}

void ApiServer::acceptNext() {
  if (!acceptor_) return;
  acceptor_->async_accept([this](beast::error_code ec, local::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      auto peer = peerCredentials(socket.native_handle());
      if (!peer) {
        spdlog::warn("api: {}; closing the connection", peer.error().toString());
      } else {
        bool ok = allowed(*peer);
        std::make_shared<ApiSession>(std::move(socket), *this, ok, *peer)->start();
      }
    } else {
      spdlog::warn("api: accept: {}", ec.message());
    }
    acceptNext();
  });
}

void ApiServer::close() {
  if (!acceptor_) return;
  beast::error_code ignored;
  acceptor_->close(ignored);
  acceptor_.reset();
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace meshpath
