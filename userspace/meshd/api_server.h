// api_server.h — the REST API of docs/api.md on the wire: HTTP/1.1 (Boost.Beast) over the unix
// socket node.api_socket. Each peer is checked with SO_PEERCRED/SO_PEERGROUPS against
// node.api_admin_group and node.api_read_group (api_access.h), each request against the access its
// route needs; admin requests are rate-limited per uid, connections bounded per uid, requests
// bounded in size and time; every accepted change leaves an audit line (audit_log.h). ApiServer
// owns the socket and its sessions; ApiHandler (api_handler.h) maps one request to one answer.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "api_access.h"
#include "api_handler.h"
#include "audit_log.h"
#include "control_plane.h"
#include "result.h"

namespace meshpath {

// The bounds of docs/api.md, "Limits".
struct ApiLimits {
  // A config of 1024 services with their endpoints fits many times over.
  size_t bodyBytes = 16u << 20;
  // Request line and headers: meshctl sends ~200 bytes.
  size_t headerBytes = 16u << 10;
  // A whole request (headers and body) must arrive within this, and an idle keep-alive
  // connection is closed after it: a local client sends its request at once, so a slow one is
  // holding a descriptor, not working.
  std::chrono::milliseconds readTimeout{10000};
  // Admin requests per uid (root is not limited: it can change the node by other means anyway).
  // Each change is a validation and a reconcile on the event loop (~0.5 ms with 1,000 endpoints;
  // the state file is written by the saver thread): 50/s keeps one client to a small share of
  // the loop that also runs the probes, and a burst of 100 lets a script add a hundred endpoints
  // one by one without waiting.
  double adminRate = 50;
  double adminBurst = 100;
  // Connections open at once per uid (a follower of events holds one), and in all for uids other
  // than root: meshd keeps its descriptors for probes and maps.
  size_t connectionsPerUid = 32;
  size_t connections = 256;
};

// Open connections per uid, shared by the server and its sessions (which may outlive it while
// the event loop winds down).
struct ApiConnections {
  std::map<uid_t, size_t> perUid;
  size_t total = 0;
};

class ApiServer {
 public:
  ApiServer(boost::asio::io_context& io, ControlPlane& controlPlane);
  ~ApiServer();

  // Binds node.api_socket: removes a stale socket file (refuses if a live meshd answers on it),
  // sets mode 0666 (the groups are checked here, see listen()), starts accepting.
  Result<void> listen(const std::string& path);
  // Stops accepting and removes the socket file.
  void close();

  ApiHandler& handler() { return handler_; }
  ApiGroups& groups() { return groups_; }
  const ApiLimits& limits() const { return limits_; }
  void setLimits(const ApiLimits& limits) { limits_ = limits; }
  // Where accepted changes are recorded; none: no audit lines (tests).
  void setAudit(AuditLog* audit) { audit_ = audit; }
  AuditLog* audit() const { return audit_; }

  // Root and our own user: admin; members (primary or supplementary gid) of
  // node.api_admin_group: admin; of node.api_read_group: read; anyone else: none.
  Access access(const PeerCredentials& peer) const { return groups_.accessOf(peer); }
  // An admin request of `uid` may go ahead (a token of its bucket taken), or the seconds to wait.
  std::optional<int> throttleAdmin(uid_t uid);
  // Whether a throttled request of `uid` is logged: the first of each second is, with the number
  // left unlogged since the last one; the rest are only counted, so a client that hammers the
  // API cannot flood meshd's log (and push the audit lines out of an operator's tail).
  std::optional<uint64_t> logThrottled(uid_t uid);

 private:
  void acceptNext();

  boost::asio::io_context& io_;
  ApiHandler handler_;
  ApiGroups groups_;
  ApiLimits limits_;
  AuditLog* audit_ = nullptr;
  std::map<uid_t, TokenBucket> adminBuckets_;
  struct ThrottleLog {
    TokenBucket::Clock::time_point lastLogged{};
    uint64_t unlogged = 0;
  };
  std::map<uid_t, ThrottleLog> throttleLogs_;
  std::shared_ptr<ApiConnections> connections_ = std::make_shared<ApiConnections>();
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> acceptor_;
  std::string path_;
};

}  // namespace meshpath
