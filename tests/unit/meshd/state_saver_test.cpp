// The state saver (state_saver.h): every submitted change ends up in the file, the newest wins,
// a burst is written in fewer saves than changes, and a waiter runs only once its change is saved.
#include "state_saver.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>
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

// With a minimum interval (meshd --store), saves are spaced out: a stream of changes is written
// in few saves, the newest state always last; flush() does not wait for the interval.
TEST_F(StateSaverTest, AMinimumIntervalSpacesSavesOut) {
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  StateSaver saver(store, loop.post());
  saver.setMinInterval(std::chrono::milliseconds(200));
  saver.submit(withWeight(1), ids());
  const auto start = std::chrono::steady_clock::now();
  while (saver.saved() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (uint32_t w = 2; w <= 50; ++w) {
    saver.submit(withWeight(w), ids());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // 0.5 s of changes
  }
  const auto streamed = std::chrono::steady_clock::now() - start;
  EXPECT_LE(saver.saves(), 1 + streamed / std::chrono::milliseconds(200) + 1);
  const auto flushStart = std::chrono::steady_clock::now();
  saver.flush();
  EXPECT_LT(std::chrono::steady_clock::now() - flushStart, std::chrono::milliseconds(150));
  EXPECT_EQ(savedWeight(store), 50u);
}

// markChanged(): nothing is copied per change; the loop copies the state once when the thread is
// ready to save, and that save answers every change marked before it.
TEST_F(StateSaverTest, MarkedChangesAreCopiedOnTheLoopOncePerSave) {
  StateStore store((dir_ / "state.json").string());
  Loop loop;
  StateSaver saver(store, loop.post());
  uint32_t weight = 0;
  int snapshots = 0;
  saver.setSnapshot([&] {
    ++snapshots;
    return SavedState{withWeight(weight), ids()};
  });
  for (weight = 1; weight <= 20; ++weight) saver.markChanged();
  weight = 20;
  bool answered = false;
  saver.whenSaved(saver.submitted(), [&] { answered = true; });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    loop.run();  // runs the snapshot the saver posted, then its waiter
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(answered);
  EXPECT_EQ(savedWeight(store), 20u);
  EXPECT_LE(snapshots, 2) << "a copy per save, not per change";
  // flush() with the loop not running copies on its own thread.
  weight = 21;
  saver.markChanged();
  saver.flush();
  EXPECT_EQ(savedWeight(store), 21u);
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
