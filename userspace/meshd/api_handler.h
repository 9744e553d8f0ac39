// api_handler.h — the REST API of docs/api.md as a route table: ApiHandler maps one request
// (method, target, body) to one answer. The routes (api_routes.cpp) parse the path and body, call
// the control plane, and answer with a view (api_views.h); the connections that carry requests
// are ApiServer's (api_server.h).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "control_plane.h"
#include "result.h"

namespace meshpath {

namespace health {
class HealthMonitor;
}

struct ApiAnswer {
  int status = 200;
  std::string body;   // JSON
  std::string allow;  // for 405: the methods the path takes
  // GET /v1/events?follow=1: the session streams events (JSON lines, chunked) from seq > this.
  std::optional<uint64_t> followFrom;
  // For the audit log: what an admin route did when it changes no desired state (the diff of the
  // desired state says it otherwise), e.g. "program replaced: tag a -> b".
  std::string audit;
  // The request changed nothing by design (a dry run): no audit line.
  bool dryRun = false;
  // 429: the Retry-After header, in seconds.
  int retryAfter = 0;
  // The answer comes later (POST /v1/upgrade loads a program for seconds): the session calls
  // `later` with where to deliver it, and the event loop serves everyone else meanwhile.
  std::function<void(std::function<void(ApiAnswer)>)> later;
};

// An answer with `body` as its JSON (bytes that are not UTF-8, echoed from input, replaced).
ApiAnswer jsonAnswer(int status, const nlohmann::json& body);
// {"error": ..., "hint": ...} with the status.
ApiAnswer errorAnswer(int status, const std::string& error, const std::string& hint);
ApiAnswer errorAnswer(const ApiError& e);
// POST /v1/upgrade's answer to the upgrade's outcome (an error, or the report; 500 if incomplete).
ApiAnswer upgradeAnswer(const Result<UpgradeReport>& report);

class ApiHandler {
 public:
  explicit ApiHandler(ControlPlane& controlPlane) : cp_(controlPlane) {}
  void setHealth(health::HealthMonitor* monitor) { health_ = monitor; }
  // How work finished off the loop gets back onto it (the server's io_context).
  void setPost(Dataplane::Post post) { post_ = std::move(post); }
  health::HealthMonitor* health() const { return health_; }
  ControlPlane& controlPlane() { return cp_; }
  // `target` is the request target as sent ("/v1/services/web?x=y"); `method` e.g. "GET".
  ApiAnswer handle(const std::string& method, const std::string& target, const std::string& body);

 private:
  ApiAnswer status();
  ApiAnswer listServices();
  ApiAnswer getService(const std::string& name);
  ApiAnswer createService(const std::string& body);
  ApiAnswer deleteService(const std::string& name);
  ApiAnswer addEndpoint(const std::string& service, const std::string& body);
  ApiAnswer setEndpointWeight(const std::string& service, const std::string& address,
                              const std::string& port, const std::string& body);
  ApiAnswer removeEndpoint(const std::string& service, const std::string& address,
                           const std::string& port);
  ApiAnswer getEndpoint(const std::string& service, const std::string& address,
                        const std::string& port);
  // POST .../endpoints/{address}/{port}/drain: weight 0, as PUT would set it.
  ApiAnswer drainEndpoint(const std::string& service, const std::string& address,
                          const std::string& port);
  ApiAnswer stats();
  // POST /v1/apply[?dry_run=1]
  ApiAnswer apply(const std::string& target, const std::string& body);
  // POST /v1/upgrade: the packet program replaced in place (Dataplane::upgrade).
  ApiAnswer upgrade();
  ApiAnswer healthView(const std::string& service);
  ApiAnswer events(const std::string& target);

  Dataplane::Post post_;
  ControlPlane& cp_;
  health::HealthMonitor* health_ = nullptr;
};

}  // namespace meshpath
