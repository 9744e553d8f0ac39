// syn_protection.h — a service's SYN protection in the datapath's terms and back (mp_svc.flags:
// the mode bit and connect_retries, bpf/abi.h MP_SVC_F_SYN_*, MP_SVC_RETRIES_*), and the watch
// that turns the auto switch's counts (mp_syn_guard.switched_on / switched_off, polled about once
// a second) into one event per transition, those that came and went between two polls included.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dataplane.h"
#include "model.h"

namespace meshpath {

// mp_svc.flags for a service entry: its mode bit | connect_retries << MP_SVC_RETRIES_SHIFT.
uint16_t synServiceFlags(SynProtection mode, uint32_t connectRetries);
// The mode and connect_retries mp_svc.flags holds (a pinned entry read back at start).
std::pair<SynProtection, uint32_t> synSettingsFromFlags(uint16_t flags);

// One poll of a service's auto switch.
struct SynGuardReading {
  std::string service;
  uint32_t id = 0;  // its service id: a new id is a new switch, counting from zero
  SynStats stats;
};

struct SynProtectionSwitch {
  std::string service;
  bool on = false;          // true: auto turned the proxy on; false: off
  uint32_t unanswered = 0;  // mp_syn_guard.last_unanswered at the poll (SYNs/s)
};

class SynGuardWatch {
 public:
  // The services' switches now; returns every transition since the last poll, oldest first, per
  // service. The first poll only learns where the counts stand (what happened while meshd was
  // away is not replayed); a service seen for the first time later, or under a new id, counts
  // from zero (its guard was zeroed when the id was assigned). Services gone are forgotten.
  std::vector<SynProtectionSwitch> update(const std::vector<SynGuardReading>& readings);

 private:
  struct Seen {
    uint32_t id = 0;
    uint64_t on = 0;
    uint64_t off = 0;
  };
  std::map<std::string, Seen> seen_;
  bool first_ = true;
};

// The order of `ons` switches on and `offs` switches off that ends in `activeNow`: they alternate,
// so the more numerous kind comes first (with as many of each, the one that leaves the switch
// where it is now comes last). true = on.
std::vector<bool> synTransitions(uint64_t ons, uint64_t offs, bool activeNow);

}  // namespace meshpath
