// syn_protection.cpp — SYN protection's flags encoding and the auto switch's transition watch.
#include "syn_protection.h"

#include <set>

#include "abi.h"

namespace meshpath {

uint16_t synServiceFlags(SynProtection mode, uint32_t connectRetries) {
  uint16_t flags = 0;
  if (mode == SynProtection::kAuto) flags |= MP_SVC_F_SYN_AUTO;
  if (mode == SynProtection::kAlways) flags |= MP_SVC_F_SYN_ALWAYS;
  flags |= static_cast<uint16_t>((connectRetries & MP_SVC_RETRIES_MASK) << MP_SVC_RETRIES_SHIFT);
  return flags;
}

std::pair<SynProtection, uint32_t> synSettingsFromFlags(uint16_t flags) {
  const SynProtection mode = (flags & MP_SVC_F_SYN_ALWAYS) != 0 ? SynProtection::kAlways
                             : (flags & MP_SVC_F_SYN_AUTO) != 0 ? SynProtection::kAuto
                                                                : SynProtection::kOff;
  return {mode, (flags >> MP_SVC_RETRIES_SHIFT) & MP_SVC_RETRIES_MASK};
}

std::vector<bool> synTransitions(uint64_t ons, uint64_t offs, bool activeNow) {
  std::vector<bool> out;
  bool next = ons > offs ? true : offs > ons ? false : !activeNow;
  while (ons + offs > 0) {
    if ((next && ons == 0) || (!next && offs == 0)) next = !next;
    out.push_back(next);
    (next ? ons : offs)--;
    next = !next;
  }
  return out;
}

std::vector<SynProtectionSwitch> SynGuardWatch::update(
    const std::vector<SynGuardReading>& readings) {
  std::vector<SynProtectionSwitch> out;
  std::set<std::string> present;
  for (const SynGuardReading& r : readings) {
    present.insert(r.service);
    auto it = seen_.find(r.service);
    Seen base{r.id, 0, 0};
    if (it != seen_.end() && it->second.id == r.id) {
      base = it->second;
    } else if (first_) {
      base = Seen{r.id, r.stats.switchedOn, r.stats.switchedOff};
    }
    // Counts below the last seen: the guard was zeroed (the id released and assigned again).
    const uint64_t ons =
        r.stats.switchedOn >= base.on ? r.stats.switchedOn - base.on : r.stats.switchedOn;
    const uint64_t offs =
        r.stats.switchedOff >= base.off ? r.stats.switchedOff - base.off : r.stats.switchedOff;
    for (bool on : synTransitions(ons, offs, r.stats.active)) {
      out.push_back(SynProtectionSwitch{r.service, on, r.stats.lastUnanswered});
    }
    seen_[r.service] = Seen{r.id, r.stats.switchedOn, r.stats.switchedOff};
  }
  std::erase_if(seen_, [&](const auto& kv) { return !present.contains(kv.first); });
  first_ = false;
  return out;
}

}  // namespace meshpath
