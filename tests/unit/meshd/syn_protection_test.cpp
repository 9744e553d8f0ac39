// syn_protection_test — mp_svc.flags for a service's SYN protection and back, and the watch that
// turns the auto switch's counts into one event per transition.
#include "syn_protection.h"

#include <gtest/gtest.h>

#include "abi.h"

namespace meshpath {
namespace {

TEST(SynFlags, ModeBitAndRetriesInTheirPlaces) {
  EXPECT_EQ(synServiceFlags(SynProtection::kOff, 0), 0u);
  EXPECT_EQ(synServiceFlags(SynProtection::kAuto, 0), MP_SVC_F_SYN_AUTO);
  EXPECT_EQ(synServiceFlags(SynProtection::kAlways, 0), MP_SVC_F_SYN_ALWAYS);
  EXPECT_EQ(synServiceFlags(SynProtection::kAuto, 2), MP_SVC_F_SYN_AUTO | (2u << 8));
  EXPECT_EQ(synServiceFlags(SynProtection::kAlways, 7), MP_SVC_F_SYN_ALWAYS | (7u << 8));
  EXPECT_EQ(synServiceFlags(SynProtection::kOff, 3), 3u << MP_SVC_RETRIES_SHIFT);
  for (SynProtection mode : {SynProtection::kOff, SynProtection::kAuto, SynProtection::kAlways}) {
    for (uint32_t retries = 0; retries <= kMaxConnectRetries; ++retries) {
      const auto [m, r] = synSettingsFromFlags(synServiceFlags(mode, retries));
      EXPECT_EQ(m, mode);
      EXPECT_EQ(r, retries);
    }
  }
}

TEST(SynTransitions, AlternateAndEndWhereTheSwitchIs) {
  using V = std::vector<bool>;
  EXPECT_EQ(synTransitions(0, 0, true), V{});
  EXPECT_EQ(synTransitions(1, 0, true), V{true});
  EXPECT_EQ(synTransitions(0, 1, false), V{false});
  // On and off again between two polls: both told, in order.
  EXPECT_EQ(synTransitions(1, 1, false), (V{true, false}));
  EXPECT_EQ(synTransitions(1, 1, true), (V{false, true}));
  EXPECT_EQ(synTransitions(2, 1, true), (V{true, false, true}));
  EXPECT_EQ(synTransitions(2, 3, false), (V{false, true, false, true, false}));
  // Counts that do not alternate (a torn read): every one is still told.
  EXPECT_EQ(synTransitions(3, 0, true), (V{true, true, true}));
}

SynGuardReading reading(const std::string& service, uint32_t id, uint64_t on, uint64_t off,
                        bool active, uint32_t unanswered = 0) {
  SynStats s;
  s.switchedOn = on;
  s.switchedOff = off;
  s.active = active;
  s.lastUnanswered = unanswered;
  return SynGuardReading{service, id, s};
}

TEST(SynGuardWatch, FirstPollLearnsThenEveryTransitionIsTold) {
  SynGuardWatch watch;
  // What happened before meshd started is not replayed.
  EXPECT_TRUE(
      watch.update({reading("web", 0, 5, 4, true), reading("api", 1, 0, 0, false)}).empty());
  EXPECT_TRUE(
      watch.update({reading("web", 0, 5, 4, true), reading("api", 1, 0, 0, false)}).empty());

  auto out =
      watch.update({reading("web", 0, 5, 5, false, 12), reading("api", 1, 1, 0, true, 5000)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].service, "web");
  EXPECT_FALSE(out[0].on);
  EXPECT_EQ(out[0].unanswered, 12u);
  EXPECT_EQ(out[1].service, "api");
  EXPECT_TRUE(out[1].on);
  EXPECT_EQ(out[1].unanswered, 5000u);

  // On and off within one poll: two events, on first.
  out = watch.update({reading("web", 0, 6, 6, false), reading("api", 1, 1, 0, true)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].on);
  EXPECT_FALSE(out[1].on);
  EXPECT_EQ(out[0].service, "web");
  EXPECT_TRUE(
      watch.update({reading("web", 0, 6, 6, false), reading("api", 1, 1, 0, true)}).empty());
}

TEST(SynGuardWatch, NewServicesAndNewIdsCountFromZero) {
  SynGuardWatch watch;
  EXPECT_TRUE(watch.update({reading("web", 0, 0, 0, false)}).empty());
  // A service added after the first poll: its guard was zeroed with its id.
  auto out = watch.update({reading("web", 0, 0, 0, false), reading("api", 3, 1, 0, true)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].service, "api");
  EXPECT_TRUE(out[0].on);
  // Removed and added again under another id: counts from zero again.
  EXPECT_TRUE(watch.update({reading("web", 0, 0, 0, false)}).empty());
  out = watch.update({reading("web", 0, 0, 0, false), reading("api", 4, 1, 1, false)});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].on);
  EXPECT_FALSE(out[1].on);
  // The same name under a new id without a poll between.
  out = watch.update({reading("web", 0, 0, 0, false), reading("api", 7, 1, 0, true)});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].on);
  // Counts that went back (the guard was zeroed): what is there now is new.
  out = watch.update({reading("web", 0, 0, 0, false), reading("api", 7, 0, 0, false)});
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace meshpath
