// health_state_test — the endpoint health state machine with a fake clock: rise/fall, the
// datapath signal, ejection backoff, the max_ejected_percent cap and panic mode.
#include "health/health_state.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace meshpath::health {
namespace {

using namespace std::chrono_literals;

class FakeClock : public Clock {
 public:
  TimePoint now() const override { return now_; }
  void advance(Duration d) { now_ += d; }

 private:
  TimePoint now_ = TimePoint{} + 1h;
};

class ServiceHealthTest : public ::testing::Test {
 protected:
  ServiceHealthTest() : health_("web", policy()) {}

  static HealthPolicy policy() {
    HealthPolicy p;
    p.rise = 2;
    p.fall = 3;
    p.ejectionTime = 1s;
    p.maxEjectionTime = 5s;
    p.maxEjectedPercent = 50;
    p.panicThresholdPercent = 0;  // off unless a test sets it
    return p;
  }

  void endpoints(int n) {
    std::vector<std::string> keys;
    for (int i = 1; i <= n; ++i) keys.push_back(key(i));
    health_.setEndpoints(keys, clock_.now());
  }
  static std::string key(int i) { return "10.0.2." + std::to_string(10 + i) + ":8080"; }

  std::vector<HealthEvent> probe(int i, bool ok) {
    clock_.advance(100ms);
    return health_.onProbe(key(i),
                           ProbeResult{ok, clock_.now(), 200us, ok ? "connected" : "timeout"});
  }
  EndpointState state(int i) const { return health_.endpoints().at(key(i)).state; }
  const EndpointHealth& ep(int i) const { return health_.endpoints().at(key(i)); }

  FakeClock clock_;
  ServiceHealth health_;
};

TEST_F(ServiceHealthTest, NewEndpointsStartHealthyAndInTheRing) {
  endpoints(3);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(state(i), EndpointState::kHealthy);
  EXPECT_TRUE(health_.excluded().empty());
  EXPECT_FALSE(health_.panic());
}

TEST_F(ServiceHealthTest, FallFailuresEjectThenRisePassesBringBack) {
  endpoints(3);
  auto ev = probe(1, false);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].from, "healthy");
  EXPECT_EQ(ev[0].to, "suspect");
  EXPECT_TRUE(health_.excluded().empty()) << "a suspect stays in the ring";
  probe(1, false);
  EXPECT_EQ(state(1), EndpointState::kSuspect);
  ev = probe(1, false);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].to, "ejected");
  EXPECT_EQ(health_.excluded(), std::set<std::string>{key(1)});
  EXPECT_EQ(ep(1).ejections, 1u);

  // Passes during the ejection time change nothing.
  probe(1, true);
  probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kEjected);
  clock_.advance(1s);
  ev = health_.tick(clock_.now());
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].to, "probing");
  EXPECT_EQ(health_.excluded(), std::set<std::string>{key(1)}) << "probing is still out";
  probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kProbing);
  ev = probe(1, true);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].to, "healthy");
  EXPECT_TRUE(health_.excluded().empty());
}

TEST_F(ServiceHealthTest, OnePassClearsSuspicion) {
  endpoints(3);
  probe(1, false);
  probe(1, false);
  probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kHealthy);
  probe(1, false);
  probe(1, false);
  EXPECT_EQ(state(1), EndpointState::kSuspect) << "the count starts over after a pass";
}

TEST_F(ServiceHealthTest, FallOfOneEjectsAtTheFirstFailure) {
  health_.setPolicy(
      [] {
        HealthPolicy p = policy();
        p.fall = 1;
        return p;
      }(),
      clock_.now());
  endpoints(2);
  probe(1, false);
  EXPECT_EQ(state(1), EndpointState::kEjected);
}

TEST_F(ServiceHealthTest, DatapathSignalMakesSuspectAndProbesConfirm) {
  endpoints(3);
  auto ev = health_.onDatapathSignal(key(2), clock_.now(), "RST answering a SYN");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].to, "suspect");
  EXPECT_EQ(ep(2).passiveFailures, 1u);
  probe(2, true);
  EXPECT_EQ(state(2), EndpointState::kHealthy) << "a probe that passes clears a passive signal";

  health_.onDatapathSignal(key(2), clock_.now(), "RST answering a SYN");
  for (int i = 0; i < 3; ++i) probe(2, false);
  EXPECT_EQ(state(2), EndpointState::kEjected);
  EXPECT_EQ(ep(2).passiveFailures, 2u);
}

TEST_F(ServiceHealthTest, RepeatedEjectionsLastLongerUpToTheMax) {
  endpoints(2);
  for (int i = 0; i < 3; ++i) probe(1, false);
  EXPECT_EQ(ep(1).lastEjection, Duration(1s));
  std::vector<Duration> seen;
  for (int round = 0; round < 4; ++round) {
    clock_.advance(ep(1).lastEjection);
    health_.tick(clock_.now());
    ASSERT_EQ(state(1), EndpointState::kProbing);
    probe(1, false);  // fails while probing: straight back out, for longer
    ASSERT_EQ(state(1), EndpointState::kEjected);
    seen.push_back(ep(1).lastEjection);
  }
  EXPECT_EQ(seen, (std::vector<Duration>{2s, 4s, 5s, 5s}));
  EXPECT_EQ(ep(1).ejections, 5u);
}

TEST_F(ServiceHealthTest, EjectionsNotYetDueStayEjected) {
  endpoints(2);
  for (int i = 0; i < 3; ++i) probe(1, false);
  clock_.advance(500ms);
  health_.tick(clock_.now());
  EXPECT_EQ(state(1), EndpointState::kEjected);
}

TEST_F(ServiceHealthTest, BackoffIsForgivenAfterALongHealthySpell) {
  endpoints(2);
  for (int i = 0; i < 3; ++i) probe(1, false);
  clock_.advance(1s);
  health_.tick(clock_.now());
  probe(1, false);  // 2s now
  clock_.advance(2s);
  health_.tick(clock_.now());
  probe(1, true);
  probe(1, true);
  ASSERT_EQ(state(1), EndpointState::kHealthy);
  clock_.advance(4s);  // twice the last ejection
  health_.tick(clock_.now());
  for (int i = 0; i < 3; ++i) probe(1, false);
  EXPECT_EQ(ep(1).lastEjection, Duration(1s));
}

TEST_F(ServiceHealthTest, CapHoldsAndReleasesWhenRoomFreesUp) {
  endpoints(4);  // 50% of 4: two out at most
  for (int i = 0; i < 3; ++i) {
    probe(1, false);
    probe(2, false);
    probe(3, false);
  }
  EXPECT_EQ(state(1), EndpointState::kEjected);
  EXPECT_EQ(state(2), EndpointState::kEjected);
  EXPECT_EQ(state(3), EndpointState::kSuspect);
  EXPECT_TRUE(ep(3).heldByCap);
  EXPECT_EQ(health_.outCount(), 2u);
  EXPECT_EQ(health_.excluded(), (std::set<std::string>{key(1), key(2)}));
  probe(3, false);
  EXPECT_EQ(health_.outCount(), 2u) << "more failures do not break the cap";

  // ep1 comes back: room for the held one, which goes at once.
  clock_.advance(1s);
  health_.tick(clock_.now());
  probe(1, true);
  auto ev = probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kHealthy);
  EXPECT_EQ(state(3), EndpointState::kEjected);
  EXPECT_FALSE(ep(3).heldByCap);
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().endpoint, key(3));
  EXPECT_EQ(ev.back().to, "ejected");
}

TEST_F(ServiceHealthTest, CapOfZeroEjectsNothing) {
  health_.setPolicy(
      [] {
        HealthPolicy p = policy();
        p.maxEjectedPercent = 0;
        return p;
      }(),
      clock_.now());
  endpoints(3);
  for (int i = 0; i < 5; ++i) probe(1, false);
  EXPECT_EQ(state(1), EndpointState::kSuspect);
  EXPECT_TRUE(health_.excluded().empty());
}

TEST_F(ServiceHealthTest, PanicWhenTooFewHealthySpreadsOverAll) {
  health_.setPolicy(
      [] {
        HealthPolicy p = policy();
        p.panicThresholdPercent = 50;
        return p;
      }(),
      clock_.now());
  endpoints(4);
  for (int i = 0; i < 3; ++i) probe(1, false);
  EXPECT_FALSE(health_.panic()) << "3 of 4 healthy";
  for (int i = 0; i < 3; ++i) probe(2, false);
  EXPECT_FALSE(health_.panic()) << "2 of 4 healthy is not below 50%";
  std::vector<HealthEvent> ev;
  for (int i = 0; i < 3; ++i) ev = probe(3, false);
  EXPECT_TRUE(health_.panic()) << "1 of 4 healthy";
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().endpoint, "");
  EXPECT_EQ(ev.back().to, "panic");
  EXPECT_NE(ev.back().reason.find("PANIC"), std::string::npos);
  EXPECT_TRUE(health_.excluded().empty()) << "panic: every endpoint in the ring";

  clock_.advance(1s);
  health_.tick(clock_.now());
  probe(1, true);
  ev = probe(1, true);
  EXPECT_FALSE(health_.panic());
  EXPECT_EQ(ev.back().to, "normal");
  // ep1 back: room under the cap for the held ep3, which goes now.
  EXPECT_EQ(health_.excluded(), (std::set<std::string>{key(2), key(3)})) << ev.back().reason;
}

TEST_F(ServiceHealthTest, AllDownPanicsEvenWithThresholdZero) {
  endpoints(2);
  for (int i = 0; i < 3; ++i) {
    probe(1, false);
    probe(2, false);
  }
  EXPECT_EQ(health_.outCount(), 1u);  // cap: 50% of 2
  EXPECT_TRUE(ep(2).heldByCap);
  EXPECT_TRUE(health_.panic());
  EXPECT_TRUE(health_.excluded().empty());
}

TEST_F(ServiceHealthTest, EndpointSetChangesKeepStates) {
  endpoints(3);
  for (int i = 0; i < 3; ++i) probe(1, false);
  health_.setEndpoints({key(1), key(2), key(3), key(4)}, clock_.now());
  EXPECT_EQ(state(1), EndpointState::kEjected);
  EXPECT_EQ(state(4), EndpointState::kHealthy);
  health_.setEndpoints({key(2), key(3)}, clock_.now());
  EXPECT_EQ(health_.endpoints().size(), 2u);
  EXPECT_TRUE(health_.excluded().empty());
}

// ---- passive health: the datapath's down marks ---------------------------------------------

std::vector<std::string> tos(const std::vector<HealthEvent>& events) {
  std::vector<std::string> out;
  for (const HealthEvent& e : events) out.push_back(e.to);
  return out;
}

TEST_F(ServiceHealthTest, PassiveDownEjectsAtOnceAndFlushes) {
  endpoints(4);
  clock_.advance(10ms);
  auto ev = health_.onDatapathSignal(key(1), clock_.now(), "rst_answering_syn");
  ASSERT_EQ(tos(ev), std::vector<std::string>{"suspect"});
  EXPECT_EQ(ev[0].reason, "datapath: rst_answering_syn; probes to confirm");
  EXPECT_TRUE(health_.takeDatapathActions().empty());
  ev = health_.onDatapathDown(key(1), clock_.now(), "3 passive failures (rst_answering_syn)");
  ASSERT_EQ(tos(ev), std::vector<std::string>{"ejected"});
  EXPECT_EQ(ev[0].reason.rfind("datapath: 3 passive failures (rst_answering_syn); out of the "
                               "ring for 1s",
                               0),
            0u)
      << ev[0].reason;
  EXPECT_EQ(health_.excluded(), std::set<std::string>{key(1)});
  auto actions = health_.takeDatapathActions();
  EXPECT_EQ(actions.flush, std::set<std::string>{key(1)});
  EXPECT_TRUE(actions.clearDown.empty()) << "the mark stays while it is out";
  EXPECT_TRUE(health_.takeDatapathActions().empty()) << "taken once";
  // Straight from healthy too (the datapath counted the failures itself).
  ev = health_.onDatapathDown(key(2), clock_.now(), "3 passive failures (icmp_unreachable)");
  EXPECT_EQ(tos(ev), std::vector<std::string>{"ejected"});
  EXPECT_EQ(ev[0].from, "healthy");
  EXPECT_EQ(ep(2).passiveFailures, 1u);
}

TEST_F(ServiceHealthTest, ActiveChecksDecideTheReturnAndClearTheMark) {
  endpoints(4);
  health_.onDatapathDown(key(1), clock_.now(), "3 passive failures (syn_retransmitted)");
  health_.takeDatapathActions();
  clock_.advance(1s);
  EXPECT_TRUE(tos(health_.onDatapathRecovered(key(1), clock_.now(), "a success")).empty())
      << "with active checks only probes decide";
  probe(1, true);  // ejection over: probing, 1/2
  EXPECT_EQ(state(1), EndpointState::kProbing);
  EXPECT_TRUE(health_.takeDatapathActions().clearDown.empty());
  probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kHealthy);
  EXPECT_EQ(health_.takeDatapathActions().clearDown, std::set<std::string>{key(1)});
  // A down mark while probing ejects again, for longer (2 s, then 4 s).
  health_.onDatapathDown(key(1), clock_.now(), "x");
  EXPECT_EQ(ep(1).lastEjection, Duration(2s));
  clock_.advance(2100ms);
  probe(1, true);
  EXPECT_EQ(state(1), EndpointState::kProbing);
  auto ev = health_.onDatapathDown(key(1), clock_.now(), "3 passive failures (x)");
  ASSERT_EQ(tos(ev), std::vector<std::string>{"ejected"});
  EXPECT_NE(ev[0].reason.find("while probing"), std::string::npos) << ev[0].reason;
  EXPECT_EQ(ep(1).lastEjection, Duration(4s));
}

TEST_F(ServiceHealthTest, CapVetoClearsTheDatapathMark) {
  endpoints(4);  // 50%: two may be out
  health_.onDatapathDown(key(1), clock_.now(), "a");
  health_.onDatapathDown(key(2), clock_.now(), "b");
  health_.takeDatapathActions();
  auto ev = health_.onDatapathDown(key(3), clock_.now(), "3 passive failures (c)");
  EXPECT_EQ(state(3), EndpointState::kSuspect);
  EXPECT_TRUE(ep(3).heldByCap);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].from, ev[1].to) << "the held-by-cap event";
  EXPECT_NE(ev[1].reason.find("ejection held"), std::string::npos);
  auto actions = health_.takeDatapathActions();
  EXPECT_EQ(actions.clearDown, std::set<std::string>{key(3)}) << "the datapath obeys the cap";
  EXPECT_TRUE(actions.flush.empty());
  // Marked down again while held: cleared again, no second event.
  ev = health_.onDatapathDown(key(3), clock_.now(), "3 passive failures (c)");
  EXPECT_TRUE(ev.empty());
  EXPECT_EQ(health_.takeDatapathActions().clearDown, std::set<std::string>{key(3)});
}

TEST_F(ServiceHealthTest, PanicClearsEveryMark) {
  HealthPolicy p = policy();
  p.panicThresholdPercent = 50;
  p.maxEjectedPercent = 100;
  health_.setPolicy(p, clock_.now());
  endpoints(4);
  health_.onDatapathDown(key(1), clock_.now(), "a");
  EXPECT_EQ(health_.takeDatapathActions().flush, std::set<std::string>{key(1)});
  auto ev = health_.onDatapathDown(key(2), clock_.now(), "b");
  EXPECT_FALSE(health_.panic()) << "2 of 4 healthy is not below 50%";
  health_.takeDatapathActions();
  ev = health_.onDatapathDown(key(3), clock_.now(), "c");
  EXPECT_TRUE(health_.panic());
  EXPECT_EQ(ev.back().to, "panic");
  auto actions = health_.takeDatapathActions();
  EXPECT_EQ(actions.clearDown, (std::set<std::string>{key(1), key(2), key(3), key(4)}));
  EXPECT_TRUE(actions.flush.empty()) << "in panic an ejected endpoint keeps its ring share";
  EXPECT_TRUE(health_.excluded().empty());
  // Marked down again during the panic: cleared again.
  health_.onDatapathDown(key(4), clock_.now(), "d");
  EXPECT_EQ(health_.takeDatapathActions().clearDown, std::set<std::string>{key(4)});
}

class PassiveOnlyTest : public ServiceHealthTest {
 protected:
  PassiveOnlyTest() {
    HealthPolicy p = policy();
    p.activeChecks = false;
    health_.setPolicy(p, clock_.now());
  }
};

TEST_F(PassiveOnlyTest, ReturnsWhenTheEjectionTimeIsOverAndBacksOffOnRepeat) {
  endpoints(4);
  auto ev = health_.onDatapathSignal(key(1), clock_.now(), "syn_retransmitted");
  EXPECT_EQ(ev[0].reason, "datapath: syn_retransmitted; passive_fall failures in a row eject it");
  health_.onDatapathDown(key(1), clock_.now(), "3 passive failures (syn_retransmitted)");
  EXPECT_EQ(health_.takeDatapathActions().flush, std::set<std::string>{key(1)});
  clock_.advance(900ms);
  EXPECT_TRUE(health_.tick(clock_.now()).empty());
  clock_.advance(100ms);
  ev = health_.tick(clock_.now());
  EXPECT_EQ(tos(ev), (std::vector<std::string>{"probing", "healthy"}));
  EXPECT_TRUE(health_.excluded().empty());
  EXPECT_EQ(health_.takeDatapathActions().clearDown, std::set<std::string>{key(1)})
      << "back in: the datapath's mark and count go";
  // Still failing: marked down again soon, and the next ejection lasts twice as long.
  clock_.advance(200ms);
  health_.onDatapathDown(key(1), clock_.now(), "3 passive failures (syn_retransmitted)");
  EXPECT_EQ(state(1), EndpointState::kEjected);
  EXPECT_EQ(ep(1).lastEjection, Duration(2s));
  EXPECT_EQ(ep(1).ejections, 2u);
  clock_.advance(2s);
  EXPECT_EQ(tos(health_.tick(clock_.now())), (std::vector<std::string>{"probing", "healthy"}));
  // Healthy for twice the last ejection: forgiven, the next one is short again.
  clock_.advance(4s);
  health_.tick(clock_.now());
  health_.onDatapathDown(key(1), clock_.now(), "x");
  EXPECT_EQ(ep(1).lastEjection, Duration(1s));
}

TEST_F(PassiveOnlyTest, RecoveredMakesASuspectHealthy) {
  endpoints(2);
  health_.onDatapathSignal(key(1), clock_.now(), "rst_answering_syn");
  EXPECT_EQ(state(1), EndpointState::kSuspect);
  auto ev = health_.onDatapathRecovered(key(1), clock_.now(), "a success after failures");
  ASSERT_EQ(tos(ev), std::vector<std::string>{"healthy"});
  EXPECT_EQ(ev[0].reason, "datapath: a success after failures");
  EXPECT_EQ(state(1), EndpointState::kHealthy);
  // Nothing for an endpoint that is not suspect.
  EXPECT_TRUE(health_.onDatapathRecovered(key(2), clock_.now(), "x").empty());
}

}  // namespace
}  // namespace meshpath::health
