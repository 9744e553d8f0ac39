// api_access.cpp — the route table's access column, peers' access from their groups, and the
// token bucket of the admin request rate.
#include "api_access.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <tuple>

namespace meshpath {

const char* accessName(Access a) {
  switch (a) {
    case Access::kNone:
      return "none";
    case Access::kRead:
      return "read";
    case Access::kAdmin:
      return "admin";
  }
  return "none";
}

const std::vector<RouteSpec>& routeTable() {
  static const std::vector<RouteSpec> kRoutes = {
      {"GET", "/v1/status", Access::kRead},
      {"GET", "/v1/stats", Access::kRead},
      {"GET", "/v1/health", Access::kRead},
      {"GET", "/v1/health/{service}", Access::kRead},
      {"GET", "/v1/events", Access::kRead},
      {"GET", "/v1/services", Access::kRead},
      {"GET", "/v1/services/{name}", Access::kRead},
      {"GET", "/v1/services/{name}/endpoints/{address}/{port}", Access::kRead},
      {"POST", "/v1/apply", Access::kAdmin},
      {"POST", "/v1/services", Access::kAdmin},
      {"DELETE", "/v1/services/{name}", Access::kAdmin},
      {"POST", "/v1/services/{name}/endpoints", Access::kAdmin},
      {"PUT", "/v1/services/{name}/endpoints/{address}/{port}", Access::kAdmin},
      {"DELETE", "/v1/services/{name}/endpoints/{address}/{port}", Access::kAdmin},
      {"POST", "/v1/services/{name}/endpoints/{address}/{port}/drain", Access::kAdmin},
      {"POST", "/v1/upgrade", Access::kAdmin},
  };
  return kRoutes;
}

namespace {

std::vector<std::string> segments(const std::string& path) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    if (next > pos) out.push_back(path.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

bool matches(const RouteSpec& route, const std::vector<std::string>& seg) {
  const std::vector<std::string> pattern = segments(route.pattern);
  if (pattern.size() != seg.size()) return false;
  for (size_t i = 0; i < seg.size(); ++i) {
    if (pattern[i].front() == '{') continue;
    if (pattern[i] != seg[i]) return false;
  }
  return true;
}

std::optional<gid_t> lookupGroup(const std::string& name) {
  if (name.empty()) return std::nullopt;
  group grp{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  int rc;
  while ((rc = ::getgrnam_r(name.c_str(), &grp, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (1u << 22)) {
    buf.resize(buf.size() * 2);
  }
  if (rc != 0 || found == nullptr) return std::nullopt;
  return grp.gr_gid;
}

std::string groupName(gid_t gid) {
  group grp{};
  group* found = nullptr;
  std::vector<char> buf(16384);
  if (::getgrgid_r(gid, &grp, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return grp.gr_name;
  }
  return std::to_string(gid);
}

}  // namespace

const RouteSpec* findRoute(const std::string& method, const std::string& target) {
  const std::vector<std::string> seg = segments(target.substr(0, target.find('?')));
  for (const RouteSpec& r : routeTable()) {
    if (method == r.method && matches(r, seg)) return &r;
  }
  return nullptr;
}

Access requiredAccess(const std::string& method, const std::string& target) {
  const RouteSpec* r = findRoute(method, target);
  return r != nullptr ? r->access : Access::kAdmin;
}

void ApiGroups::resolve(std::string adminGroup, std::string readGroup) {
  adminName_ = std::move(adminGroup);
  readName_ = std::move(readGroup);
  adminGid_ = lookupGroup(adminName_);
  readGid_ = lookupGroup(readName_);
  for (const auto& [name, gid, field] : {std::tuple{adminName_, adminGid_, "node.api_admin_group"},
                                         std::tuple{readName_, readGid_, "node.api_read_group"}}) {
    if (gid || name.empty() || warned_.contains(name)) continue;
    warned_.insert(name);
    spdlog::warn("api: group {} ({}) does not exist: it admits nobody (root still gets in)", name,
                 field);
  }
}

bool ApiGroups::member(const PeerCredentials& peer, const std::optional<gid_t>& gid) {
  if (!gid) return false;
  if (peer.gid == *gid) return true;
  return std::find(peer.groups.begin(), peer.groups.end(), *gid) != peer.groups.end();
}

Access ApiGroups::accessOf(const PeerCredentials& peer) const {
  if (peer.uid == 0 || peer.uid == ::geteuid()) return Access::kAdmin;
  if (member(peer, adminGid_)) return Access::kAdmin;
  if (member(peer, readGid_)) return Access::kRead;
  return Access::kNone;
}

namespace {

std::string groupsText(const PeerCredentials& peer) {
  std::vector<gid_t> all = peer.groups;
  if (std::find(all.begin(), all.end(), peer.gid) == all.end()) all.insert(all.begin(), peer.gid);
  std::string out;
  for (gid_t g : all) out += (out.empty() ? "" : ", ") + groupName(g);
  return out.empty() ? "no group" : out;
}

}  // namespace

std::string ApiGroups::refusedAtConnect(const PeerCredentials& peer) const {
  return "the API needs group " + adminName_ + " (node.api_admin_group) or " + readName_ +
         " (node.api_read_group); uid " + std::to_string(peer.uid) + " is in " + groupsText(peer);
}

std::string ApiGroups::refusedChange(const PeerCredentials& peer) const {
  return "changing state needs group " + adminName_ + " (node.api_admin_group); uid " +
         std::to_string(peer.uid) + " is in " + groupsText(peer);
}

std::string ApiGroups::hintAtConnect() const {
  return "run as root, or join " + readName_ + " to read or " + adminName_ +
         " to change (usermod -aG GROUP USER, then log in again)";
}

std::string ApiGroups::hintChange() const {
  return "run as root, or join " + adminName_ + " (usermod -aG " + adminName_ +
         " USER, then log in again)";
}

void TokenBucket::refill(Clock::time_point now) {
  if (now > last_) {
    tokens_ =
        std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
    last_ = now;
  }
}

bool TokenBucket::take(Clock::time_point now) {
  refill(now);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

int TokenBucket::retryAfterSeconds(Clock::time_point now) {
  refill(now);
  if (tokens_ >= 1.0) return 1;
  const double wait = (1.0 - tokens_) / rate_;
  return std::max(1, static_cast<int>(wait + 0.999));
}

double TokenBucket::tokens(Clock::time_point now) {
  refill(now);
  return tokens_;
}

}  // namespace meshpath
