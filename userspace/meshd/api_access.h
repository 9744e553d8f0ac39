// api_access.h — who may do what through the API (docs/api.md, "Access"): the access each route
// needs (the route table's access column), the access a peer has (root and meshd's own user:
// admin; members of node.api_admin_group: admin; of node.api_read_group: read; anyone else:
// none), and the per-uid token bucket that bounds the rate of admin requests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace meshpath {

// Who is on the other end of a connection (SO_PEERCRED, SO_PEERGROUPS).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

enum class Access { kNone = 0, kRead = 1, kAdmin = 2 };
const char* accessName(Access a);  // "none", "read", "admin"

// One row of the route table: method, path pattern ("{name}" matches one segment) and the
// access it needs.
struct RouteSpec {
  const char* method;
  const char* pattern;
  Access access;
};

// Every route of docs/api.md with the access it needs: reads are kRead, everything that changes
// state is kAdmin.
const std::vector<RouteSpec>& routeTable();

// The route table's row for a request (the query ignored), or nullptr.
const RouteSpec* findRoute(const std::string& method, const std::string& target);

// The access a request needs: the route table's row for it; a request no row matches (an unknown
// path, a method the path does not take, a route added without a row) needs kAdmin, so a route
// nobody classified is never open to readers.
Access requiredAccess(const std::string& method, const std::string& target);

// node.api_admin_group and node.api_read_group, resolved to gids by name (getgrnam_r) at start
// and on each reload. A group that does not exist admits nobody (root still gets in); meshd warns
// once per name.
class ApiGroups {
 public:
  ApiGroups() = default;
  ApiGroups(std::string adminGroup, std::string readGroup) {
    resolve(std::move(adminGroup), std::move(readGroup));
  }
  void resolve(std::string adminGroup, std::string readGroup);

  Access accessOf(const PeerCredentials& peer) const;
  // The 403 answers: for a peer in neither group, and for a reader asking for an admin route.
  std::string refusedAtConnect(const PeerCredentials& peer) const;
  std::string refusedChange(const PeerCredentials& peer) const;
  std::string hintAtConnect() const;
  std::string hintChange() const;

  const std::string& adminGroup() const { return adminName_; }
  const std::string& readGroup() const { return readName_; }

 private:
  static bool member(const PeerCredentials& peer, const std::optional<gid_t>& gid);

  std::string adminName_;
  std::string readName_;
  std::optional<gid_t> adminGid_;
  std::optional<gid_t> readGid_;
  std::set<std::string> warned_;  // missing group names already warned about
};

// A token bucket: `rate` tokens a second, at most `burst` held; a request takes one.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate, double burst, Clock::time_point now)
      : rate_(rate), burst_(burst), tokens_(burst), last_(now) {}

  // Takes a token if there is one.
  bool take(Clock::time_point now);
  // Whole seconds until a token is there (at least 1), for Retry-After.
  int retryAfterSeconds(Clock::time_point now);
  double tokens(Clock::time_point now);

 private:
  void refill(Clock::time_point now);

  double rate_;
  double burst_;
  double tokens_;
  Clock::time_point last_;
};

}  // namespace meshpath
