// api_server.cpp — the connections that carry the REST API: HTTP/1.1 sessions (Boost.Beast) on the
// unix socket, each peer checked with SO_PEERCRED, each request against its route's access, rate
// and size; the audit line of each accepted change; and the chunked stream of
// GET /v1/events?follow.
#include "api_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>

#include "health/health_monitor.h"
#include "state_diff.h"

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

std::string sizeText(size_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= 1024 && bytes % 1024 == 0) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " bytes";
}

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
  ApiSession(local::socket socket, ApiServer& server, PeerCredentials peer,
             std::shared_ptr<ApiConnections> connections)
      : socket_(std::move(socket)),
        idle_(socket_.get_executor()),
        server_(server),
        access_(server.access(peer)),
        peer_(std::move(peer)),
        connections_(std::move(connections)) {}
  ~ApiSession() {
    if (--connections_->perUid[peer_.uid] == 0) connections_->perUid.erase(peer_.uid);
    if (peer_.uid != 0) --connections_->total;
  }

  void start() { readNext(); }

 private:
  void readNext() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(server_.limits().headerBytes));
    parser_->body_limit(server_.limits().bodyBytes);
    armIdleTimer();
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->onHeader(ec); });
  }

  // One timeout for a whole request (headers and body) and for an idle keep-alive connection.
  void armIdleTimer() {
    idle_.expires_after(server_.limits().readTimeout);
    idle_.async_wait([weak = weak_from_this()](beast::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) {
        beast::error_code ignored;
        self->socket_.close(ignored);
      }
    });
  }

  bool closedByPeer(beast::error_code ec) {
    return ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
           ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::bad_descriptor;
  }

  // A request that cannot be read to its end: answered, then the connection closes (what is
  // left of it on the wire cannot be skipped safely).
  void refuseUnreadable(beast::error_code ec) {
    ApiAnswer a;
    if (ec == http::error::body_limit) {
      a = errorAnswer(
          413,
          "request body larger than the API's limit of " + sizeText(server_.limits().bodyBytes),
          "apply a smaller config, or split the change into several requests");
    } else if (ec == http::error::header_limit) {
      a = errorAnswer(431,
                      "request headers larger than the API's limit of " +
                          sizeText(server_.limits().headerBytes),
                      "send shorter headers and path");
    } else {
      a = errorAnswer(400, "bad HTTP request: " + ec.message(),
                      "speak HTTP/1.1 to meshd's socket, as meshctl does");
    }
    spdlog::warn("api: {} from pid {} uid {}: {}", a.status, peer_.pid, peer_.uid, ec.message());
    respond(a, 11, false);
  }

  void onHeader(beast::error_code ec) {
    if (closedByPeer(ec)) {
      idle_.cancel();
      closeSocket();
      return;
    }
    if (ec) {
      idle_.cancel();
      refuseUnreadable(ec);
      return;
    }
    const auto& head = parser_->get();
    const std::string method(head.method_string());
    const std::string target(head.target());
    const Access need = requiredAccess(method, target);
    std::optional<ApiAnswer> refusal;
    if (access_ == Access::kNone) {
      refusal = errorAnswer(403, server_.groups().refusedAtConnect(peer_),
                            server_.groups().hintAtConnect());
    } else if (need == Access::kAdmin && access_ != Access::kAdmin) {
      refusal =
          errorAnswer(403, server_.groups().refusedChange(peer_), server_.groups().hintChange());
    } else if (need == Access::kAdmin) {
      if (auto wait = server_.throttleAdmin(peer_.uid)) {
        refusal = errorAnswer(
            429,
            "too many changes from uid " + std::to_string(peer_.uid) + ": the API takes " +
                fmtRate() + " admin requests a second per user",
            "retry after " + std::to_string(*wait) +
                " s (Retry-After), or apply many changes at once with `meshctl apply -f FILE`");
        refusal->retryAfter = *wait;
      }
    }
    if (refusal) {
      // Refused before its body is read, so the connection cannot carry another request.
      idle_.cancel();
      std::optional<uint64_t> unlogged = 0;
      if (refusal->status == 429) unlogged = server_.logThrottled(peer_.uid);
      if (unlogged) {
        spdlog::warn("api: refused {} {} from pid {} uid {} ({}): {}{}", method, target, peer_.pid,
                     peer_.uid, refusal->status,
                     json::parse(refusal->body)["error"].get<std::string>(),
                     *unlogged ? " (" + std::to_string(*unlogged) + " more refused, not logged)"
                               : std::string());
      }
      respond(*refusal, head.version(), false);
      return;
    }
    http::async_read(socket_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code e, size_t) { self->onRead(e); });
  }

  std::string fmtRate() const {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%g (bursts of %g)", server_.limits().adminRate,
                  server_.limits().adminBurst);
    return buf;
  }

  void onRead(beast::error_code ec) {
    idle_.cancel();
    if (closedByPeer(ec)) {
      closeSocket();
      return;
    }
    if (ec) {
      refuseUnreadable(ec);
      return;
    }
    http::request<http::string_body> req = parser_->release();
    std::string method(req.method_string());
    std::string target(req.target());
    const bool admin = requiredAccess(method, target) == Access::kAdmin;
    ControlPlane& cp = server_.handler().controlPlane();
    const bool recording = admin && server_.audit() != nullptr;
    if (recording) cp.recordTouched();
    ApiAnswer a;
    try {
      a = server_.handler().handle(method, target, req.body());
    } catch (const std::exception& e) {
      // A bug must cost one request, not the daemon (an exception would unwind io.run()).
      spdlog::error("api: {} {}: unexpected exception: {}", method, target, e.what());
      a = errorAnswer(500, std::string("internal error: ") + e.what(), "see meshd's log");
    }
    if (a.later) {
      // Nothing is read from this connection until the answer is sent (no pipelining past it).
      spdlog::info("api: {} {}: started (pid {} uid {}); the answer follows when it is done",
                   method, target, peer_.pid, peer_.uid);
      a.later([self = shared_from_this(), method, target, admin, recording, version = req.version(),
               keepAlive = req.keep_alive()](ApiAnswer done) {
        self->finish(method, target, admin, recording, std::move(done), version, keepAlive);
      });
      return;
    }
    finish(method, target, admin, recording, std::move(a), req.version(), req.keep_alive());
  }

  // Audits, logs and sends the answer to one request.
  // `recording`: the control plane recorded what the request touched (recordTouched).
  void finish(const std::string& method, const std::string& target, bool admin, bool recording,
              ApiAnswer a, unsigned version, bool keepAlive) {
    ControlPlane& cp = server_.handler().controlPlane();
    const bool audited = recording && a.status >= 200 && a.status < 300 && !a.dryRun;
    if (recording) {
      StateDiff diff = cp.takeTouchedDiff();
      if (audited) audit(method, target, a, diff);
    }
    auto level =
        (admin && !audited) || a.status >= 500 ? spdlog::level::info : spdlog::level::debug;
    spdlog::log(level, "api: {} {} -> {} (pid {} uid {})", method, target, a.status, peer_.pid,
                peer_.uid);
    if (a.followFrom) {
      follow(*a.followFrom);
      return;
    }
    if (admin && a.status >= 200 && a.status < 300 && !a.dryRun) {
      // The datapath has the change; the answer waits until the state file has it too, so an
      // answered change survives kill -9 (state_saver.h), and with --store until etcd has it
      // (store_sync.h: a write etcd refused was undone, and the answer says why).
      cp.afterSaved([self = shared_from_this(), a = std::move(a), version,
                     keepAlive](std::optional<ApiError> refused) {
        self->respond(refused ? errorAnswer(*refused) : a, version, keepAlive);
      });
      return;
    }
    respond(a, version, keepAlive);
  }

  void audit(const std::string& method, const std::string& target, const ApiAnswer& a,
             const StateDiff& diff) {
    AuditEntry entry;
    entry.uid = peer_.uid;
    entry.pid = peer_.pid;
    entry.method = method;
    entry.path = target;
    entry.status = a.status;
    if (!diff.empty()) {
      entry.change = diff.summary() + (a.audit.empty() ? "" : "; " + a.audit);
    } else {
      entry.change = a.audit.empty() ? "no change to the desired state" : a.audit;
    }
    server_.audit()->record(entry);
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
    if (a.retryAfter > 0) res->set(http::field::retry_after, std::to_string(a.retryAfter));
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
  Access access_;
  PeerCredentials peer_;
  std::shared_ptr<ApiConnections> connections_;
  // Following events.
  std::deque<std::string> pending_;
  bool writing_ = false;
  bool following_ = false;
  uint64_t followerId_ = 0;
  std::array<char, 256> discard_{};
};

}  // namespace

ApiServer::ApiServer(asio::io_context& io, ControlPlane& controlPlane)
    : io_(io), handler_(controlPlane) {
  handler_.setPost([&io](std::function<void()> f) { asio::post(io, std::move(f)); });
}

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
  // 0666, and the access check is meshd's: two groups (node.api_read_group and
  // node.api_admin_group) must reach the socket, and one file has one group; a third group
  // holding both would be one more thing for operators to keep in step. SO_PEERCRED cannot be
  // forged, and a peer meshd refuses gets a 403 that names the group it lacks instead of EACCES.
  if (::chmod(path.c_str(), 0666) != 0) {
    return errnoError(errno, "chmod 0666 " + path);
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (struct stat d{}; !dir.empty() && ::stat(dir.c_str(), &d) == 0 && (d.st_mode & S_IXOTH) == 0) {
    spdlog::warn(
        "api: {} is mode {:o}: only its owner and group can reach the API socket, not "
        "all members of node.api_admin_group and node.api_read_group",
        dir, d.st_mode & 0777);
  }
  acceptNext();
  return {};
}

std::optional<int> ApiServer::throttleAdmin(uid_t uid) {
  if (uid == 0) return std::nullopt;
  const auto now = TokenBucket::Clock::now();
  auto it = adminBuckets_.find(uid);
  if (it == adminBuckets_.end()) {
    it = adminBuckets_.emplace(uid, TokenBucket(limits_.adminRate, limits_.adminBurst, now)).first;
  }
  if (it->second.take(now)) return std::nullopt;
  return it->second.retryAfterSeconds(now);
}

std::optional<uint64_t> ApiServer::logThrottled(uid_t uid) {
  const auto now = TokenBucket::Clock::now();
  ThrottleLog& t = throttleLogs_[uid];
  if (t.lastLogged != TokenBucket::Clock::time_point{} &&
      now - t.lastLogged < std::chrono::seconds(1)) {
    ++t.unlogged;
    return std::nullopt;
  }
  t.lastLogged = now;
  return std::exchange(t.unlogged, 0);
}

namespace {

// An answer written straight onto a connection meshd will not serve (too many connections), then
// the connection closed.
void refuseConnection(local::socket socket, int status, const std::string& error,
                      const std::string& hint) {
  auto s = std::make_shared<local::socket>(std::move(socket));
  const std::string body =
      json{{"error", error}, {"hint", hint}}.dump(-1, ' ', false, json::error_handler_t::replace) +
      "\n";
  auto text = std::make_shared<std::string>(
      "HTTP/1.1 " + std::to_string(status) +
      " Too Many Requests\r\nServer: meshd/" MESHPATH_VERSION
      "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body);
  asio::async_write(*s, asio::buffer(*text), [s, text](beast::error_code, size_t) {
    beast::error_code ignored;
    s->shutdown(local::socket::shutdown_both, ignored);
    s->close(ignored);
  });
}

}  // namespace

void ApiServer::acceptNext() {
  if (!acceptor_) return;
  acceptor_->async_accept([this](beast::error_code ec, local::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      auto peer = peerCredentials(socket.native_handle());
      if (!peer) {
        spdlog::warn("api: {}; closing the connection", peer.error().toString());
      } else {
        ApiConnections& c = *connections_;
        const size_t mine = c.perUid.contains(peer->uid) ? c.perUid[peer->uid] : 0;
        if (mine >= limits_.connectionsPerUid ||
            (peer->uid != 0 && c.total >= limits_.connections)) {
          const bool perUid = mine >= limits_.connectionsPerUid;
          spdlog::warn("api: refused a connection from pid {} uid {}: {} connections open",
                       peer->pid, peer->uid, perUid ? mine : c.total);
          refuseConnection(
              std::move(socket), 429,
              perUid ? "too many connections from uid " + std::to_string(peer->uid) + " (" +
                           std::to_string(mine) + " open, the limit is " +
                           std::to_string(limits_.connectionsPerUid) + ")"
                     : "too many connections to meshd's API (" + std::to_string(c.total) + " open)",
              "close idle connections (each `meshctl events --follow` holds one) and retry");
        } else {
          ++c.perUid[peer->uid];
          if (peer->uid != 0) ++c.total;
          std::make_shared<ApiSession>(std::move(socket), *this, *peer, connections_)->start();
        }
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
