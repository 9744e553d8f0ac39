// ConnTableWalker over the fake dataplane: walks spread over loop turns, flushes ahead of
// recounts, merged flushes, completion callbacks, errors, stop.
#include "conn_table_walker.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "fake_dataplane.h"

namespace meshpath {
namespace {

namespace asio = boost::asio;
using Strings = std::vector<std::string>;

class ConnTableWalkerTest : public ::testing::Test {
 protected:
  // n connections, endpoint ids 1..4 in turn; every third one already closed.
  void fill(int n) {
    for (int i = 0; i < n; ++i) {
      dp_.conns.push_back({static_cast<uint32_t>(1 + i % 4), i % 3 != 2, true});
    }
  }
  // Records each completion as "<tag>: <matched>/<entries>" (or the error).
  ConnTableWalker::Done note(std::string tag) {
    return [this, tag](const Result<ConnWalk>& w) {
      done_.push_back(w ? tag + ": " + std::to_string(w->matched) + "/" + std::to_string(w->entries)
                        : tag + ": " + w.error().toString());
    };
  }
  size_t live(uint32_t id) const {
    return std::count_if(dp_.conns.begin(), dp_.conns.end(),
                         [&](const auto& c) { return c.live && c.endpointId == id; });
  }

  asio::io_context io_;
  testing::FakeDataplane dp_;
  ConnTableWalker walker_{io_, dp_};
  Strings done_;
};

TEST_F(ConnTableWalkerTest, ResyncWalksOneStepPerTurn) {
  fill(10);
  dp_.walkBatch = 3;
  walker_.resync(note("resync"));
  EXPECT_EQ(dp_.walkSteps, 0) << "a recount never steps inside the call that asks for it";
  EXPECT_TRUE(walker_.resyncing());
  for (int turn = 1; turn <= 3; ++turn) {
    ASSERT_EQ(io_.run_one(), 1u);
    EXPECT_EQ(dp_.walkSteps, turn);
    EXPECT_TRUE(done_.empty()) << "after step " << turn;
  }
  ASSERT_EQ(io_.run_one(), 1u);
  EXPECT_EQ(done_, Strings{"resync: 7/10"});
  EXPECT_TRUE(walker_.idle());
  EXPECT_EQ(io_.poll(), 0u) << "nothing left posted";
  EXPECT_EQ(dp_.health[1].activeConns, 2) << "ids 1,5,9 -> 0, 4, 8 open; 8 is closed";
}

TEST_F(ConnTableWalkerTest, SmallFlushCompletesBeforeFlushReturns) {
  fill(100);
  walker_.flush({3}, note("flush"));
  EXPECT_EQ(done_, Strings{"flush: 25/100"});
  EXPECT_EQ(live(3), 0u);
  EXPECT_EQ(live(2), 25u);
  EXPECT_TRUE(walker_.idle());
  EXPECT_EQ(io_.poll(), 0u);
}

TEST_F(ConnTableWalkerTest, FlushPreemptsRecountWhichResumesFromItsCursor) {
  fill(12);
  dp_.walkBatch = 4;
  walker_.resync(note("resync"));
  ASSERT_EQ(io_.run_one(), 1u);  // resync: entries 0..3
  walker_.flush({2}, note("flush"));
  // The flush's first step ran inside flush(), before anything else.
  EXPECT_EQ(dp_.walkLog, (Strings{"resync: step", "flush 2: step"}));
  EXPECT_TRUE(walker_.flushing());
  EXPECT_TRUE(walker_.resyncing()) << "paused, not dropped";
  io_.run();
  EXPECT_EQ(dp_.walkLog, (Strings{"resync: step", "flush 2: step", "flush 2: step", "flush 2: done",
                                  "resync: step", "resync: done"}));
  EXPECT_EQ(dp_.resyncs, 1) << "resumed, not restarted";
  ASSERT_EQ(done_.size(), 2u);
  EXPECT_EQ(done_[0], "flush: 3/12");
  // The recount read entries 0..3 before the flush (ep 2's entry 1 among them, 3 open) and
  // 4..11 after it, ep 2's 5 and 9 gone (4 open of 6).
  EXPECT_EQ(done_[1], "resync: 7/10");
  EXPECT_EQ(live(2), 0u);
}

TEST_F(ConnTableWalkerTest, FlushesAskedForDuringAFlushMergeIntoOneWalk) {
  fill(12);
  dp_.walkBatch = 4;
  walker_.flush({1}, note("first"));
  EXPECT_TRUE(done_.empty()) << "12 entries take 3 steps";
  walker_.flush({2}, note("second"));
  walker_.flush({3, 2}, note("third"));
  EXPECT_EQ(dp_.walkSteps, 1) << "the second and third wait: the first has passed entries 0..3";
  io_.run();
  ASSERT_EQ(dp_.flushed.size(), 2u);
  EXPECT_EQ(dp_.flushed[0], std::set<uint32_t>{1});
  EXPECT_EQ(dp_.flushed[1], (std::set<uint32_t>{2, 3}));
  // Each caller hears once; the merged ones share the walk that did theirs.
  EXPECT_EQ(done_, (Strings{"first: 3/12", "second: 6/9", "third: 6/9"}));
  EXPECT_EQ(live(1) + live(2) + live(3), 0u);
  EXPECT_EQ(live(4), 3u);
}

TEST_F(ConnTableWalkerTest, RecountAskedForDuringAFlushRunsAfterItAndRecountsJoin) {
  fill(8);
  dp_.walkBatch = 4;
  walker_.flush({4}, note("flush"));
  walker_.resync(note("resync a"));
  EXPECT_EQ(dp_.resyncs, 0) << "not started while the flush runs";
  io_.run_one();  // flush done, recount started
  walker_.resync(note("resync b"));
  io_.run();
  EXPECT_EQ(dp_.resyncs, 1) << "the second request joined the running recount";
  EXPECT_EQ(done_, (Strings{"flush: 2/8", "resync a: 4/6", "resync b: 4/6"}));
}

TEST_F(ConnTableWalkerTest, AFailedWalkReportsAndTheNextOneStillRuns) {
  fill(8);
  dp_.walkBatch = 4;
  walker_.resync(note("resync"));
  dp_.failWalkStep = 0;
  walker_.flush({1}, note("flush"));  // its first step fails at once
  EXPECT_EQ(done_, Strings{"flush: injected walk failure: Input/output error"});
  io_.run();
  EXPECT_EQ(done_, (Strings{"flush: injected walk failure: Input/output error", "resync: 6/8"}));

  dp_.failWalkStart = true;
  walker_.flush({1}, note("flush"));
  EXPECT_EQ(done_.back(), "flush: injected failure starting a flush: Input/output error");
  EXPECT_TRUE(walker_.idle());
}

TEST_F(ConnTableWalkerTest, StopDropsEveryWalkSilently) {
  fill(12);
  dp_.walkBatch = 4;
  walker_.resync(note("resync"));
  io_.run_one();
  walker_.flush({1}, note("flush 1"));
  walker_.flush({2}, note("flush 2"));
  walker_.stop();
  EXPECT_TRUE(walker_.idle());
  const int steps = dp_.walkSteps;
  io_.run();
  EXPECT_EQ(dp_.walkSteps, steps) << "a step posted before stop() does nothing";
  EXPECT_TRUE(done_.empty());
}

// A callback may ask for the next walk at once; it starts in the same turn.
TEST_F(ConnTableWalkerTest, ACallbackMayStartAnotherFlush) {
  fill(8);
  walker_.flush({1}, [&](const Result<ConnWalk>&) { walker_.flush({2}, note("inner")); });
  EXPECT_EQ(done_, Strings{"inner: 2/6"});
  EXPECT_EQ(live(1) + live(2), 0u);
  EXPECT_TRUE(walker_.idle());
}

}  // namespace
}  // namespace meshpath
