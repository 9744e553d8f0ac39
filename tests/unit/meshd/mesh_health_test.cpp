// Health across nodes (control_plane.h setExcluded / setMeshVerdicts; docs/etcd.md): this node's
// own verdicts always take an endpoint out here; the other nodes' take it out only when, with this
// node's, they are a majority of the live nodes (mesh_quorum: majority), and never empty a ring
// this node would keep serving. The store is a fake that records what would be published.
#include <gtest/gtest.h>

#include <filesystem>

#include "control_plane_rig.h"
#include "fake_shared_store.h"

namespace meshpath {
namespace {

using Sets = std::map<std::string, std::set<std::string>>;

class MeshHealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("mesh_health_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::vector<ServiceSpec> services;
    for (const char* name : {"web", "solo"}) {
      ServiceSpec s;
      s.name = name;
      s.vip = *IpAddress::parse(std::string(name) == "web" ? "10.0.0.100" : "10.0.0.101");
      s.port = 80;
      for (int i = 1; i <= 3; ++i) {
        s.endpoints.push_back({*IpAddress::parse("10.0.2.1" + std::to_string(i)), 8080, 1});
      }
      if (std::string(name) == "solo") s.health.meshQuorum = MeshQuorum::kLocal;
      services.push_back(s);
    }
    rig_ = std::make_unique<testing::ControlPlaneRig>(dir_ / "state.json", services);
    ASSERT_TRUE(rig_->started);
    cp_ = rig_->cp.get();
    cp_->setSharedStore(&store_);
    cp_->onConfigEvent([this](const std::string& kind, const std::string&, const nlohmann::json&) {
      events_.push_back(kind);
    });
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::set<std::string> out(const std::string& service) {
    auto it = rig_->reconciler->excluded().find(service);
    return it == rig_->reconciler->excluded().end() ? std::set<std::string>{} : it->second;
  }

  std::filesystem::path dir_;
  testing::FakeSharedStore store_;
  std::unique_ptr<testing::ControlPlaneRig> rig_;
  ControlPlane* cp_ = nullptr;
  std::vector<std::string> events_;
};

const std::string ep1 = "10.0.2.11:8080", ep2 = "10.0.2.12:8080", ep3 = "10.0.2.13:8080";

TEST_F(MeshHealthTest, OwnVerdictsApplyAndArePublished) {
  ASSERT_TRUE(cp_->setExcluded(Sets{{"web", {ep1}}}));
  EXPECT_EQ(out("web"), std::set<std::string>{ep1});
  ASSERT_FALSE(store_.published.empty());
  EXPECT_EQ(store_.published.back().at("web"), std::set<std::string>{ep1});
  // One other node that disagrees changes nothing: this node alone sees ep1 failing, and keeps
  // it out here only.
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{}}}));
  EXPECT_EQ(out("web"), std::set<std::string>{ep1});
  auto verdicts = cp_->meshVerdicts();
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].failing, 1u);
  EXPECT_EQ(verdicts[0].nodes, 2u);
  EXPECT_TRUE(verdicts[0].here);
  EXPECT_FALSE(verdicts[0].meshWide);
}

TEST_F(MeshHealthTest, AMajorityOfOtherNodesTakesAnEndpointOutHereToo) {
  ASSERT_TRUE(cp_->setExcluded(Sets{}));
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{{"web", {ep2}}}}}));
  EXPECT_TRUE(out("web").empty()) << "1 of 2 is no majority";
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{{"web", {ep2}}}}, {"c", Sets{{"web", {ep2}}}}}));
  EXPECT_EQ(out("web"), std::set<std::string>{ep2}) << "2 of 3 nodes see it failing";
  EXPECT_EQ(events_, std::vector<std::string>{"mesh_ejected"});
  // mesh_quorum: local: the others' verdicts never count.
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{{"solo", {ep2}}}}, {"c", Sets{{"solo", {ep2}}}}}));
  EXPECT_TRUE(out("solo").empty());
  EXPECT_TRUE(out("web").empty());
  EXPECT_EQ(events_.back(), "mesh_restored");
  // A node that leaves (its lease lapsed) no longer counts.
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{{"web", {ep2}}}}, {"c", Sets{{"web", {ep2}}}}}));
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", Sets{{"web", {ep2}}}}}));
  EXPECT_TRUE(out("web").empty());
}

TEST_F(MeshHealthTest, OtherNodesNeverEmptyARingThisNodeWouldServe) {
  ASSERT_TRUE(cp_->setExcluded(Sets{}));
  const Sets all{{"web", {ep1, ep2, ep3}}};
  ASSERT_TRUE(cp_->setMeshVerdicts({{"b", all}, {"c", all}}));
  EXPECT_TRUE(out("web").empty()) << "this node's checks pass: it goes on serving";
  // With this node's own verdict on ep1 too, the majority's other two stay in.
  ASSERT_TRUE(cp_->setExcluded(Sets{{"web", {ep1}}}));
  EXPECT_EQ(out("web"), std::set<std::string>{ep1});
  // One endpoint the majority keeps: the majority's view applies.
  ASSERT_TRUE(cp_->setExcluded(Sets{}));
  ASSERT_TRUE(
      cp_->setMeshVerdicts({{"b", Sets{{"web", {ep1, ep2}}}}, {"c", Sets{{"web", {ep1, ep2}}}}}));
  EXPECT_EQ(out("web"), (std::set<std::string>{ep1, ep2}));
}

}  // namespace
}  // namespace meshpath
