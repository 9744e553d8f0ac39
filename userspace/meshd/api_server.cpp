// api_server.cpp — the connections that carry the REST API: HTTP/1.1 sessions (Boost.Beast) on the
// unix socket, each peer checked with SO_PEERCRED, and the chunked stream of GET /v1/events?follow.
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
