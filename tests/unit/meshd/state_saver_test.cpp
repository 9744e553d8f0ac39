// The state saver (state_saver.h): every submitted change ends up in the file, the newest wins,
// a burst is written in fewer saves than changes, and a waiter runs only once its change is saved.
#include "state_saver.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <vector>

namespace meshpath {
namespace {

DesiredState withWeight(uint32_t weight) {
  DesiredState d;
  d.node.interfaces = {"veth0"};
  d.node.ipv4 = IpAddress::parse("10.0.2.1");
  ServiceSpec web;
  web.name = "web";
  web.vip = *IpAddress::parse("10.0.0.100");
  web.port = 80;
  web.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, weight}};
  d.services = {web};
  return d;
}

IdAssignments ids() {
  IdAssignments i;
  i.services["web"] = 0;
  i.endpoints["web"]["10.0.2.11:8080"] = 0;
  return i;
}

// The event loop's queue, run by hand: callbacks posted by the saver's thread wait here.
struct Loop {
  std::mutex mu;
  std::vector<std::function<void()>> queued;
  StateSaver::Post post() {
    return [this](std::function<void()> f) {
      std::lock_guard lock(mu);
      queued.push_back(std::move(f));
    };
  }
  size_t run() {
    std::vector<std::function<void()>> now;
    {
      std::lock_guard lock(mu);
      now.swap(queued);
    }
    for (auto& f : now) f();
    return now.size();
  }
};

class StateSaverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("meshpath-saver-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  uint32_t savedWeight(const StateStore& store) {
    auto loaded = store.load();
    EXPECT_TRUE(loaded && loaded->has_value());
    return (*loaded)->desired.services.at(0).endpoints.at(0).weight;
  }
  std::filesystem::path dir_;
};

TEST_F(StateSaverTest, TheNewestStateIsSavedAndABurstTakesFewerSaves) {
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  StateSaver saver(store, loop.post());
  for (uint32_t w = 1; w <= 200; ++w) EXPECT_EQ(saver.submit(withWeight(w), ids()), w);
  saver.flush();
  EXPECT_EQ(saver.saved(), 200u);
  EXPECT_EQ(savedWeight(store), 200u);
  EXPECT_GE(saver.saves(), 1u);
  EXPECT_LT(saver.saves(), 200u) << "changes that queued behind a save are written together";
}

TEST_F(StateSaverTest, AWaiterRunsOnTheLoopOnlyOnceItsChangeIsSaved) {
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  StateSaver saver(store, loop.post());
  const uint64_t seq = saver.submit(withWeight(7), ids());
  std::atomic<bool> ran{false};
  uint32_t weightWhenRun = 0;
  saver.whenSaved(seq, [&] {
    ran = true;
    weightWhenRun = savedWeight(store);
  });
  saver.flush();
  EXPECT_FALSE(ran) << "posted to the loop, never run on the saver's thread";
  EXPECT_EQ(loop.run(), 1u);
  EXPECT_TRUE(ran);
  EXPECT_EQ(weightWhenRun, 7u) << "the file held the change when the waiter ran";
  // Asked after the fact: posted at once.
  bool late = false;
  saver.whenSaved(seq, [&] { late = true; });
  EXPECT_EQ(loop.run(), 1u);
  EXPECT_TRUE(late);
}

TEST_F(StateSaverTest, StoppingSavesWhatWasSubmitted) {
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  {
    StateSaver saver(store, loop.post());
    for (uint32_t w = 1; w <= 20; ++w) saver.submit(withWeight(w), ids());
  }
  EXPECT_EQ(savedWeight(store), 20u);
}

TEST_F(StateSaverTest, AFailedSaveStillReleasesItsWaiters) {
  // A directory where the file should be: the rename fails. The change is live; its answer must
  // not hang for ever.
  std::filesystem::create_directories(dir_ / "state.json" / "x");
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  StateSaver saver(store, loop.post());
  bool ran = false;
  saver.whenSaved(saver.submit(withWeight(3), ids()), [&] { ran = true; });
  saver.flush();
  loop.run();
  EXPECT_TRUE(ran);
}

}  // namespace
}  // namespace meshpath
