// lb_table.h — the table the XDP tests describe packets with, and its runner (gtest; the
// benchmark shares lb_harness.h, not this). Each row: a description, an input frame, the interface
// it arrives on, the expected verdict, the expected whole output frame, and the mp_exc counter
// that must go up. Expected frames are built from scratch by the packet builder (checksums
// included), and forwarded frames' checksums are recomputed too.
#pragma once

#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "abi.h"
#include "exc.h"
#include "lb_harness.h"
#include "malformed_cases.h"
#include "packet.h"

namespace meshpath::testing {

struct LbCase {
  std::string description;
  Bytes input;
  std::string ingress;  // interface the frame arrives on
  uint32_t verdict;
  std::optional<Bytes> output;                       // nullopt: the input, untouched
  std::optional<uint32_t> exception = std::nullopt;  // this mp_exc counter goes up by one
  bool anyOutput = false;  // a drop after the rewrite: the bytes do not matter
};

inline uint64_t totalExceptions(const LbHarness& h) {
  uint64_t sum = 0;
  for (uint32_t r = 0; r < MP_EXC_MAX; ++r) sum += h.exceptions(r);
  return sum;
}

inline void runTable(const LbHarness& h, const std::vector<LbCase>& table) {
  for (const LbCase& c : table) {
    SCOPED_TRACE(c.description);
    const uint64_t before = c.exception ? h.exceptions(*c.exception) : 0;
    const uint64_t totalBefore = totalExceptions(h);
    const XdpRun run = h.run(c.input, ifindexOf(c.ingress));
    ASSERT_EQ(run.error, 0) << std::strerror(run.error);
    EXPECT_STREQ(verdictName(run.verdict), verdictName(c.verdict));
    if (!c.anyOutput) {
      const Bytes& expected = c.output ? *c.output : c.input;
      EXPECT_TRUE(run.output == expected) << describeMismatch(expected, run.output);
    }
    if (run.verdict == XDP_TX || run.verdict == XDP_REDIRECT) {
      EXPECT_EQ(verifyChecksums(run.output), "");
    }
    if (c.exception) {
      EXPECT_EQ(h.exceptions(*c.exception), before + 1)
          << "mp_exc[" << mp_exc_names[*c.exception] << "]";
    }
    EXPECT_EQ(totalExceptions(h), totalBefore + (c.exception ? 1 : 0))
        << "no other exception counter moves";
  }
}

// malformedCases() as rows arriving on the client link: untouched, with their verdict and
// counter. Frames shorter than Ethernet are checked here instead: BPF_PROG_RUN refuses them
// (EINVAL), as drivers never hand them to XDP; the parser's answer to them is checked natively
// (core_native_test).
inline std::vector<LbCase> malformedTable(const LbHarness& h, uint8_t tcpFlags = kTcpSyn) {
  std::vector<LbCase> table;
  for (const MalformedCase& m : malformedCases(tcpFlags)) {
    if (m.frame.size() < ETH_HLEN) {
      EXPECT_EQ(h.run(m.frame, ifindexOf(topo::kClientIf)).error, EINVAL) << m.description;
      continue;
    }
    table.push_back({m.description, m.frame, topo::kClientIf,
                     mp_exc_passes(m.reason) ? uint32_t{XDP_PASS} : uint32_t{XDP_DROP},
                     std::nullopt, m.reason});
  }
  return table;
}

}  // namespace meshpath::testing
