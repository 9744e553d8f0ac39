// api_server.h — the REST API of docs/api.md on the wire: HTTP/1.1 (Boost.Beast) over the unix
// socket node.api_socket, mode 0660, each peer checked with SO_PEERCRED (root, or a member of the
// socket's group). ApiServer owns the socket and its sessions; ApiHandler (api_handler.h) maps one
// request to one answer.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
#include <optional>
#include <string>

#include "api_handler.h"
#include "control_plane.h"
#include "result.h"

namespace meshpath {

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
