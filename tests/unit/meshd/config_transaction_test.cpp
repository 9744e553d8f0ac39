// A config reload or POST /v1/apply as one transaction (ControlPlane::applyConfigText over a fake
// dataplane): everything validated first, all or nothing, a dataplane failure part-way rolled
// back, a dry run that changes nothing, one event per apply with the diff or the problems.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api_server.h"
#include "config.h"
#include "fake_dataplane.h"
#include "state_diff.h"

namespace meshpath {
namespace {

using nlohmann::json;

struct Event {
  std::string kind;
  std::string message;
  json detail;
};

class ConfigTransactionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("meshd_config_tx_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    node_.interfaces = {"veth0"};
    node_.ipv4 = IpAddress::parse("10.0.2.1");
    node_.ringSize = 1009;
    node_.stateFile = (dir_ / "state.json").string();
    node_.snatPortMin = 1024;
    node_.snatPortMax = 32767;
    configPath_ = (dir_ / "meshd.yaml").string();
    store_ = std::make_unique<StateStore>(node_.stateFile);
    reconciler_ = std::make_unique<Reconciler>(dp_);
    reconciler_->start({}, std::nullopt);
    ASSERT_TRUE(reconciler_->apply(DesiredState{node_, {}}));
    cp_ = std::make_unique<ControlPlane>(dp_, *reconciler_, *store_, configPath_, false);
    cp_->setAutoSnatPorts(PortRange{1024, 32767});
    handler_ = std::make_unique<ApiHandler>(*cp_);
    writeConfig(services(kWebAndDns));
    auto first = cp_->reloadConfigFile();
    ASSERT_TRUE(first) << first.error().error;
    cp_->onConfigEvent(
        [this](const std::string& kind, const std::string& message, const json& detail) {
          events_.push_back({kind, message, detail});
        });
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string nodeYaml() const {
    return "node:\n  interfaces: [veth0]\n  ipv4: 10.0.2.1\n  ring_size: 1009\n  state_file: " +
           node_.stateFile + "\n";
  }
  std::string services(const std::string& body) const { return nodeYaml() + body; }
  void writeConfig(const std::string& text) {
    std::ofstream out(configPath_, std::ios::trunc);
    out << text;
  }
  std::string stateFile() const {
    std::ifstream in(node_.stateFile);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // What must not move when a change is refused.
  struct Snapshot {
    DesiredState desired;
    IdAssignments ids;
    std::map<ServiceKey, ServiceEntry> services;
    std::map<uint32_t, std::vector<uint32_t>> rings;
    std::map<uint32_t, EndpointEntry> endpoints;
    std::string stateFile;
  };
  Snapshot snapshot() const {
    return {cp_->desired(), reconciler_->ids(), dp_.services,
            dp_.rings,      dp_.endpoints,      stateFile()};
  }
  void expectUnchanged(const Snapshot& before, const std::string& what) const {
    EXPECT_EQ(cp_->desired(), before.desired) << what;
    EXPECT_EQ(reconciler_->ids(), before.ids) << what;
    EXPECT_EQ(dp_.services, before.services) << what;
    EXPECT_EQ(dp_.rings, before.rings) << what;
    EXPECT_EQ(dp_.endpoints, before.endpoints) << what;
    EXPECT_EQ(stateFile(), before.stateFile) << what;
    EXPECT_TRUE(dp_.consistent()) << what;
  }

  static constexpr const char* kWebAndDns = R"(services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080}
      - {address: 10.0.2.12, port: 8080}
  - name: dns
    vip: 10.0.0.53
    port: 53
    protocol: udp
    endpoints:
      - {address: 10.0.2.21, port: 53}
)";
  // web's weights change, api is new, dns goes.
  static constexpr const char* kGoodChange = R"(services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080, weight: 0}
      - {address: 10.0.2.12, port: 8080}
      - {address: 10.0.2.13, port: 8080}
  - name: api
    vip: 10.0.0.101
    port: 443
    endpoints:
      - {address: 10.0.2.31, port: 8443}
)";

  std::filesystem::path dir_;
  std::string configPath_;
  NodeSpec node_;
  testing::FakeDataplane dp_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<ControlPlane> cp_;
  std::unique_ptr<ApiHandler> handler_;
  std::vector<Event> events_;
};

TEST_F(ConfigTransactionTest, ReloadWithOneBadServiceAmongGoodOnesChangesNothing) {
  // Two good changes (web's weights, a new service api) and two bad services: every problem is
  // reported with its field path, and nothing of the good ones is applied.
  writeConfig(services(std::string(kGoodChange) + R"(  - name: bad
    vip: 10.0.0.102
    port: 80
    endpoints:
      - {address: 10.0.2.41, port: 8080, weight: 20000}
  - name: worse
    vip: 10.0.0.103
    port: 0
    endpoints: []
)"));
  const Snapshot before = snapshot();
  const size_t ops = dp_.log.size();
  auto r = cp_->reloadConfigFile();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 400);
  const json problems = r.error().detail["problems"];
  ASSERT_GE(problems.size(), 2u) << r.error().detail.dump();
  EXPECT_NE(r.error().error.find("services[2].endpoints[0].weight"), std::string::npos)
      << r.error().error;
  EXPECT_NE(r.error().error.find("services[3].port"), std::string::npos) << r.error().error;
  EXPECT_EQ(dp_.log.size(), ops) << "the dataplane was touched";
  expectUnchanged(before, "bad reload");
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, "config_refused");
  EXPECT_EQ(events_[0].detail["source"], "SIGHUP");
  EXPECT_EQ(events_[0].detail["status"], 400);
  EXPECT_EQ(events_[0].detail["problems"], problems);

  // A file that does not parse: refused the same way.
  writeConfig(services("services: [\n"));
  auto broken = cp_->reloadConfigFile();
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().status, 400);
  expectUnchanged(before, "unparsable reload");
  EXPECT_EQ(events_.size(), 2u);
}

TEST_F(ConfigTransactionTest, GoodReloadAppliesAllAndEmitsOneEventWithTheDiff) {
  const DesiredState from = cp_->desired();
  writeConfig(services(kGoodChange));
  auto r = cp_->reloadConfigFile();
  ASSERT_TRUE(r) << r.error().error;
  EXPECT_FALSE(r->dryRun);
  EXPECT_EQ(r->report.added, std::vector<std::string>{"api"});
  EXPECT_EQ(r->report.removed, std::vector<std::string>{"dns"});
  EXPECT_EQ(r->report.changed, std::vector<std::string>{"web"});
  const StateDiff expected = diffStates(from, cp_->desired());
  EXPECT_EQ(r->diff.toJson(), expected.toJson());
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, "config_applied");
  EXPECT_EQ(events_[0].detail["diff"], expected.toJson());
  EXPECT_EQ(events_[0].message, "SIGHUP: " + expected.summary());
  EXPECT_NE(events_[0].message.find("services.web.endpoints[10.0.2.11:8080].weight: 1 -> 0"),
            std::string::npos)
      << events_[0].message;
  EXPECT_EQ(dp_.services.size(), 2u);
  auto saved = store_->load();
  ASSERT_TRUE(saved && saved->has_value());
  EXPECT_EQ((*saved)->desired, cp_->desired());
}

TEST_F(ConfigTransactionTest, DataplaneFailureMidApplyRollsBackEverything) {
  // Find how many dataplane operations the change takes, then fail each one in turn.
  size_t steps = 0;
  {
    testing::FakeDataplane probe;
    Reconciler r(probe);
    r.start({}, std::nullopt);
    ASSERT_TRUE(r.apply(cp_->desired()));
    const size_t at = probe.log.size();
    DesiredState next = cp_->desired();
    ConfigDocument doc = parseConfigDocument(kGoodChange);
    next.services = doc.services;
    ASSERT_TRUE(r.apply(next));
    steps = probe.log.size() - at;
  }
  ASSERT_GT(steps, 3u);
  for (size_t failAt = 0; failAt < steps; ++failAt) {
    const Snapshot before = snapshot();
    events_.clear();
    dp_.failAt = static_cast<int>(dp_.log.size() + failAt);
    auto r = cp_->applyConfigText(services(kGoodChange));
    ASSERT_FALSE(r) << failAt;
    EXPECT_EQ(r.error().status, 500) << failAt;
    EXPECT_NE(r.error().error.find("injected"), std::string::npos) << r.error().error;
    expectUnchanged(before, "failure at step " + std::to_string(failAt));
    ASSERT_EQ(events_.size(), 1u);
    EXPECT_EQ(events_[0].kind, "config_refused");
    EXPECT_EQ(events_[0].detail["status"], 500);
  }
  // The same change goes through once the dataplane works.
  dp_.failAt = -1;
  auto r = cp_->applyConfigText(services(kGoodChange));
  ASSERT_TRUE(r) << r.error().error;
  EXPECT_TRUE(dp_.consistent());
  EXPECT_EQ(dp_.services.size(), 2u);
}

TEST_F(ConfigTransactionTest, DryRunShowsTheDiffAndChangesNothing) {
  const Snapshot before = snapshot();
  const size_t ops = dp_.log.size();
  auto r = cp_->applyConfigText(services(kGoodChange), /*dryRun=*/true);
  ASSERT_TRUE(r) << r.error().error;
  EXPECT_TRUE(r->dryRun);
  EXPECT_TRUE(r->report.added.empty());
  EXPECT_EQ(r->diff.servicesAdded, std::vector<std::string>{"api"});
  EXPECT_EQ(r->diff.servicesRemoved, std::vector<std::string>{"dns"});
  EXPECT_EQ(dp_.log.size(), ops);
  expectUnchanged(before, "dry run");
  EXPECT_TRUE(events_.empty()) << "a dry run emits no event";

  // Through the route: the diff's lines for people, its JSON for tools.
  ApiAnswer a = handler_->handle("POST", "/v1/apply?dry_run=1", services(kGoodChange));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_TRUE(a.dryRun);
  json body = json::parse(a.body);
  EXPECT_EQ(body["dry_run"], true);
  EXPECT_EQ(body["diff"], r->diff.toJson());
  EXPECT_EQ(body["lines"], json(r->diff.lines()));
  expectUnchanged(before, "dry run through the API");
  EXPECT_EQ(handler_->handle("POST", "/v1/apply?dry_run=maybe", kGoodChange).status, 400);

  // A dry run of a bad config reports every problem, like the real thing, and changes nothing.
  ApiAnswer bad = handler_->handle("POST", "/v1/apply?dry_run=1",
                                   "services:\n  - {name: x, vip: 10.0.0.1, port: 0}\n"
                                   "  - {name: y, vip: nope, port: 80}\n");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_GE(json::parse(bad.body)["problems"].size(), 1u) << bad.body;
  expectUnchanged(before, "bad dry run");
  EXPECT_TRUE(events_.empty());
}

TEST_F(ConfigTransactionTest, DifferentNodeIsRefusedAndTheDryRunNamesItsFields) {
  const Snapshot before = snapshot();
  const std::string other =
      "node:\n  interfaces: [veth0, veth1]\n  ipv4: 10.0.2.1\n  ring_size: 2003\n  state_file: " +
      node_.stateFile + "\n" + kGoodChange;
  for (bool dryRun : {true, false}) {
    auto r = cp_->applyConfigText(other, dryRun);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().status, 409);
    std::vector<std::string> paths;
    for (const auto& c : r.error().detail["diff"]["changes"]) paths.push_back(c["path"]);
    EXPECT_NE(std::find(paths.begin(), paths.end(), "node.interfaces"), paths.end())
        << r.error().detail.dump();
    EXPECT_NE(std::find(paths.begin(), paths.end(), "node.ring_size"), paths.end());
    expectUnchanged(before, dryRun ? "dry run" : "apply");
  }
  ASSERT_EQ(events_.size(), 1u) << "only the real apply emits an event";
  EXPECT_EQ(events_[0].kind, "config_refused");
  EXPECT_EQ(events_[0].detail["status"], 409);
}

TEST_F(ConfigTransactionTest, ApplyAnswerCarriesTheDiff) {
  ApiAnswer a = handler_->handle("POST", "/v1/apply", services(kGoodChange));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_FALSE(a.dryRun);
  json body = json::parse(a.body);
  EXPECT_EQ(body["dry_run"], false);
  EXPECT_EQ(body["added"], json{"api"});
  EXPECT_EQ(body["diff"]["services_added"], json{"api"});
  EXPECT_FALSE(body["lines"].empty());
  ASSERT_EQ(events_.size(), 1u);
  EXPECT_EQ(events_[0].kind, "config_applied");
  EXPECT_EQ(events_[0].detail["source"], "POST /v1/apply");
}

}  // namespace
}  // namespace meshpath
