// api_server.h — the REST API of docs/api.md: HTTP/1.1 (Boost.Beast) over the unix socket
// node.api_socket, mode 0660, each peer checked with SO_PEERCRED (root, or a member of the
// socket's group). ApiHandler maps one request to one answer; ApiServer owns the socket.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
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
};

class ApiHandler {
 public:
  explicit ApiHandler(ControlPlane& controlPlane) : cp_(controlPlane) {}
  void setHealth(health::HealthMonitor* monitor) { health_ = monitor; }
  health::HealthMonitor* health() const { return health_; }
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
  ApiAnswer apply(const std::string& body);
  ApiAnswer healthView(const std::string& service);
  ApiAnswer events(const std::string& target);

  ControlPlane& cp_;
  health::HealthMonitor* health_ = nullptr;
};

// Who is on the other end of a connection (SO_PEERCRED, SO_PEERGROUPS).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

class ApiServer {
 public:
  ApiServer(boost::asio::io_context& io, ControlPlane& controlPlane);
  ~ApiServer();

  // Binds node.api_socket: removes a stale socket file (refuses if a live meshd answers on it),
  // sets mode 0660, starts accepting.
  Result<void> listen(const std::string& path);
  // Stops accepting and removes the socket file.
  void close();

  ApiHandler& handler() { return handler_; }
  // Root, our own user, or a member (primary or supplementary) of the socket file's group.
  bool allowed(const PeerCredentials& peer) const;

 private:
  void acceptNext();

  boost::asio::io_context& io_;
  ApiHandler handler_;
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  std::string path_;
};

}  // namespace meshpath
