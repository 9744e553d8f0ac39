// The API's access control and bounds without a socket: the route table's access column (every
// route read or admin, as docs/api.md lists them; anything else admin), the groups a peer is in,
// the token bucket of the admin rate, and the audit line's format and file.
#include <grp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <tuple>

#include "api_server.h"
#include "audit_log.h"
#include "fake_dataplane.h"

namespace meshpath {
namespace {

using Clock = TokenBucket::Clock;
using std::chrono::milliseconds;

// docs/api.md's table: every route and the access it needs.
const std::set<std::tuple<std::string, std::string, Access>> kDocumented = {
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

std::string concrete(std::string pattern) {
  for (const auto& [from, to] :
       {std::pair{"{service}", "web"}, std::pair{"{name}", "web"},
        std::pair{"{address}", "10.0.2.11"}, std::pair{"{port}", "8080"}}) {
    for (size_t at; (at = pattern.find(from)) != std::string::npos;)
      pattern.replace(at, strlen(from), to);
  }
  return pattern;
}

TEST(RouteAccess, EveryRouteIsReadOrAdminAsDocumented) {
  std::set<std::tuple<std::string, std::string, Access>> table;
  for (const RouteSpec& r : routeTable()) {
    EXPECT_TRUE(r.access == Access::kRead || r.access == Access::kAdmin) << r.pattern;
    // Reads are GETs, and every GET is a read.
    EXPECT_EQ(r.access == Access::kRead, std::string(r.method) == "GET") << r.method << r.pattern;
    table.emplace(r.method, r.pattern, r.access);
  }
  EXPECT_EQ(table, kDocumented);
  for (const auto& [method, pattern, access] : kDocumented) {
    EXPECT_EQ(requiredAccess(method, concrete(pattern)), access) << method << " " << pattern;
    EXPECT_EQ(requiredAccess(method, concrete(pattern) + "?x=1"), access) << pattern;
  }
}

TEST(RouteAccess, AnythingElseNeedsAdmin) {
  EXPECT_EQ(requiredAccess("GET", "/v1/nothing"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("POST", "/v1/status"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("HEAD", "/v1/status"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("GET", "/v1/upgrade"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("PATCH", "/v1/services/web"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("GET", "/v1/services/web/endpoints"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("GET", "/v2/status"), Access::kAdmin);
  EXPECT_EQ(requiredAccess("GET", "/"), Access::kAdmin);
}

// The handler serves every row of the table, and every request the handler serves has a row: a
// route added to the handler without a row would still need admin, but this says so early.
TEST(RouteAccess, TableAndHandlerAgree) {
  testing::FakeDataplane dp;
  Reconciler reconciler(dp);
  reconciler.start({}, std::nullopt);
  NodeSpec node;
  node.interfaces = {"veth0"};
  node.ipv4 = IpAddress::parse("10.0.2.1");
  node.ringSize = 1009;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("meshd_api_access_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  node.stateFile = (dir / "state.json").string();
  ASSERT_TRUE(reconciler.apply(DesiredState{node, {}}));
  StateStore store(node.stateFile);
  ControlPlane cp(dp, reconciler, store, "", false);
  ApiHandler handler(cp);
  const std::vector<std::string> methods = {"GET", "POST", "PUT", "DELETE", "PATCH"};
  const std::vector<std::string> paths = {"/v1/status",
                                          "/v1/stats",
                                          "/v1/health",
                                          "/v1/health/web",
                                          "/v1/events",
                                          "/v1/apply",
                                          "/v1/services",
                                          "/v1/services/web",
                                          "/v1/services/web/endpoints",
                                          "/v1/services/web/endpoints/10.0.2.11/8080",
                                          "/v1/services/web/endpoints/10.0.2.11/8080/drain"};
  for (const std::string& m : methods) {
    for (const std::string& p : paths) {
      ApiAnswer a = handler.handle(m, p, "{}");
      const bool served =
          a.status != 405 && !(a.status == 404 && a.body.find("no such path") != std::string::npos);
      EXPECT_EQ(served, findRoute(m, p) != nullptr) << m << " " << p << " -> " << a.status;
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(TokenBucket, BurstThenRate) {
  const auto t0 = Clock::now();
  TokenBucket b(50, 100, t0);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(b.take(t0)) << i;
  EXPECT_FALSE(b.take(t0));
  EXPECT_EQ(b.retryAfterSeconds(t0), 1);
  // 50 a second: one token every 20 ms.
  EXPECT_FALSE(b.take(t0 + milliseconds(19)));
  EXPECT_TRUE(b.take(t0 + milliseconds(21)));
  EXPECT_FALSE(b.take(t0 + milliseconds(22)));
  EXPECT_TRUE(b.take(t0 + milliseconds(62)));
  // Idle time fills it up to the burst, no further.
  EXPECT_DOUBLE_EQ(b.tokens(t0 + std::chrono::seconds(60)), 100.0);
  // A slow rate: Retry-After rounds up to whole seconds.
  TokenBucket slow(0.25, 1, t0);
  EXPECT_TRUE(slow.take(t0));
  EXPECT_FALSE(slow.take(t0));
  EXPECT_EQ(slow.retryAfterSeconds(t0), 4);
  EXPECT_EQ(slow.retryAfterSeconds(t0 + milliseconds(3500)), 1);
  EXPECT_TRUE(slow.take(t0 + std::chrono::seconds(4)));
}

std::string groupOf(gid_t gid) {
  group* g = ::getgrgid(gid);
  return g ? g->gr_name : "";
}

TEST(ApiGroups, PeersAccessByUidAndGroups) {
  // Groups every Debian system has: root (0) and nogroup (65534); "daemon" (1) for a third.
  const std::string admin = groupOf(1), read = groupOf(65534);
  ASSERT_FALSE(admin.empty());
  ASSERT_FALSE(read.empty());
  ApiGroups groups(admin, read);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 0, 0, {}}), Access::kAdmin);  // root
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, ::geteuid(), 12345, {}}), Access::kAdmin);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 1, {}}), Access::kAdmin);  // primary
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 4001, {4001, 1}}), Access::kAdmin);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 4001, {65534}}), Access::kRead);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 65534, {}}), Access::kRead);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 4001, {4001, 4002}}), Access::kNone);
  // Both: admin wins.
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 65534, {1}}), Access::kAdmin);

  const std::string change = groups.refusedChange(PeerCredentials{1, 4001, 65534, {65534}});
  EXPECT_EQ(change, "changing state needs group " + admin +
                        " (node.api_admin_group); uid 4001 is in " + read);
  EXPECT_NE(groups.hintChange().find("usermod -aG " + admin), std::string::npos);
  const std::string none = groups.refusedAtConnect(PeerCredentials{1, 4001, 4001, {}});
  EXPECT_NE(none.find(admin + " (node.api_admin_group)"), std::string::npos) << none;
  EXPECT_NE(none.find(read + " (node.api_read_group)"), std::string::npos) << none;
  EXPECT_NE(none.find("uid 4001"), std::string::npos) << none;
}

TEST(ApiGroups, MissingGroupAdmitsNobodyButRoot) {
  ApiGroups groups("meshpath-no-such-group-a", "meshpath-no-such-group-b");
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 0, 0, {}}), Access::kAdmin);
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 0, {1, 65534}}), Access::kNone);
  // Resolved again (a reload): still missing, still nobody.
  groups.resolve("meshpath-no-such-group-a", groupOf(65534));
  EXPECT_EQ(groups.accessOf(PeerCredentials{1, 4001, 65534, {}}), Access::kRead);
}

TEST(AuditLog, OneLinePerEntryInTheFile) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("meshd_audit_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string path = (dir / "sub" / "audit.log").string();
  {
    AuditLog audit;
    ASSERT_TRUE(audit.open(path));
    EXPECT_EQ(std::filesystem::status(dir / "sub").permissions() & std::filesystem::perms::all,
              std::filesystem::perms(0750));
    AuditEntry api;
    api.uid = ::getuid();
    api.pid = ::getpid();
    api.method = "POST";
    api.path = "/v1/apply";
    api.change = "+ service api (tcp 10.0.0.101:443, 1 endpoint); a \"quoted\"\nline";
    audit.record(api);
    AuditEntry hup;
    hup.signal = "SIGHUP";
    hup.method = "reload";
    hup.path = "/etc/meshpath/meshd.yaml";
    hup.status = 400;
    hup.change = "refused: services[2].port: 0";
    audit.record(hup);
  }
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 2u);
  const std::regex apiLine(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z uid=\d+ user=\S+ pid=\d+ comm="[^"]+" )"
      R"(request="POST /v1/apply" status=200 change="\+ service api \(tcp 10\.0\.0\.101:443, )"
      R"(1 endpoint\); a \\"quoted\\"\\x0aline"$)");
  EXPECT_TRUE(std::regex_match(lines[0], apiLine)) << lines[0];
  EXPECT_NE(lines[0].find("uid=" + std::to_string(::getuid()) + " "), std::string::npos);
  const std::regex hupLine(
      R"(^\S+Z signal=SIGHUP request="reload /etc/meshpath/meshd.yaml" status=400 )"
      R"(change="refused: services\[2\].port: 0"$)");
  EXPECT_TRUE(std::regex_match(lines[1], hupLine)) << lines[1];
  std::filesystem::remove_all(dir);
}

TEST(AuditLog, UnopenableFileIsAnErrorNamingTheField) {
  AuditLog audit;
  auto r = audit.open("/proc/self/no-such-dir/audit.log");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().toString().find("node.audit_log"), std::string::npos) << r.error().toString();
  EXPECT_TRUE(audit.open(""));  // meshd's log only
}

}  // namespace
}  // namespace meshpath
