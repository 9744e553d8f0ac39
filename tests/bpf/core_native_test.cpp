// The restricted-C core headers compiled as plain C++: the same parse, checksum, NAT, hash and
// ring code the XDP program runs, checked against from-scratch computations.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "csum.h"
#include "hash.h"
#include "maglev.h"
#include "malformed_cases.h"
#include "nat.h"
#include "packet.h"
#include "parse.h"

namespace meshpath::testing {
namespace {

using namespace topo;

struct Parsed {
  Bytes frame;  // owns the bytes the pkt points into
  mp_pkt pkt{};
  int rc = 0;
};

std::unique_ptr<Parsed> parse(const Bytes& frame) {
  auto p = std::make_unique<Parsed>();
  p->frame = frame;
  mp_cursor c{p->frame.data(), p->frame.data() + p->frame.size()};
  p->rc = mp_parse(&c, &p->pkt);
  return p;
}

TEST(CoreParse, WellFormedFramesGiveTheirTuple) {
  const auto p = parse(
      Packet().eth(kClientMac, kClientIfMac).vlan(5).ipv4(kClient4, kVip4).tcp(40000, 80).build());
  ASSERT_EQ(p->rc, MP_OK);
  EXPECT_EQ(p->pkt.flow.family, MP_AF_INET);
  EXPECT_EQ(p->pkt.flow.proto, IPPROTO_TCP);
  EXPECT_EQ(p->pkt.flow.sport, htons(40000));
  EXPECT_EQ(p->pkt.flow.dport, htons(80));
  EXPECT_EQ(std::memcmp(p->pkt.flow.src, abiAddr(kClient4).bytes.data(), 16), 0);
  EXPECT_EQ(std::memcmp(p->pkt.flow.dst, abiAddr(kVip4).bytes.data(), 16), 0);
  EXPECT_EQ(p->pkt.l3 - p->frame.data(), 18);
  EXPECT_EQ(p->pkt.l4 - p->frame.data(), 38);
  EXPECT_EQ(p->pkt.ip_len, 40);
  EXPECT_EQ(p->pkt.flow.pad, 0);

  const auto q = parse(Packet()
                           .eth(kClientMac, kClientIfMac)
                           .ipv6(kClient6, kVip6)
                           .ipv6Ext(0)
                           .ipv6Ext(60, 2)
                           .udp(5000, 53)
                           .payload("hello")
                           .build());
  ASSERT_EQ(q->rc, MP_OK);
  EXPECT_EQ(q->pkt.flow.family, MP_AF_INET6);
  EXPECT_EQ(q->pkt.flow.proto, IPPROTO_UDP);
  EXPECT_EQ(q->pkt.l4 - q->frame.data(), 14 + 40 + 8 + 24);
  EXPECT_EQ(q->pkt.l4_len, 8 + 5);
  EXPECT_EQ(q->pkt.l4_check - q->pkt.l4, 6);
  EXPECT_EQ(std::memcmp(q->pkt.flow.src, abiAddr(kClient6).bytes.data(), 16), 0);

  const auto icmp =
      parse(Packet().eth(kClientMac, kClientIfMac).ipv4(kClient4, kVip4).ipv4Protocol(1).build());
  EXPECT_EQ(icmp->rc, MP_NOT_OURS);
}

TEST(CoreParse, MalformedFramesNameTheirReason) {
  for (const MalformedCase& m : malformedCases()) {
    SCOPED_TRACE(m.description);
    EXPECT_STREQ(mp_exc_names[parse(m.frame)->rc], mp_exc_names[m.reason]);
  }
}

TEST(CoreParse, ExceptionVerdictsFollowTheirNames) {
  for (uint32_t r = 0; r < MP_EXC_MAX; ++r) {
    const bool pass = std::strncmp(mp_exc_names[r], "pass_", 5) == 0;
    EXPECT_EQ(mp_exc_passes(r) != 0, pass) << mp_exc_names[r];
  }
  EXPECT_EQ(mp_exc_passes(MP_EXC_MAX), 0);
}

// Every incremental update must leave a checksum that verifies from scratch.
TEST(CoreCsum, IncrementalUpdatesMatchFromScratch) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    Bytes data(64);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    data[0] = data[1] = 0;  // checksum field at offset 0
    uint16_t check = htons(internetChecksum(data.data(), data.size()));
    std::memcpy(data.data(), &check, 2);
    ASSERT_EQ(internetChecksum(data.data(), data.size()), 0);

    const size_t at16 = 2 + 2 * (rng() % 8), at32 = 20 + 4 * (rng() % 4), at128 = 40;
    uint16_t old16, new16 = static_cast<uint16_t>(rng());
    std::memcpy(&old16, &data[at16], 2);
    if (round % 7 == 0) new16 = static_cast<uint16_t>(~old16);  // sums to 0xffff: -0 edge
    mp_csum_replace16(&check, old16, new16);
    std::memcpy(&data[at16], &new16, 2);

    uint32_t old32, new32 = static_cast<uint32_t>(rng());
    std::memcpy(&old32, &data[at32], 4);
    mp_csum_replace32(&check, old32, new32);
    std::memcpy(&data[at32], &new32, 4);

    uint8_t new128[16];
    for (auto& b : new128) b = static_cast<uint8_t>(rng());
    mp_csum_replace128(&check, &data[at128], new128);
    std::memcpy(&data[at128], new128, 16);

    std::memcpy(data.data(), &check, 2);
    ASSERT_EQ(internetChecksum(data.data(), data.size()), 0) << "round " << round;
  }
}

struct NatCase {
  std::string name;
  bool v6;
  bool udp;
  bool noChecksum;
};

// The forward and reverse rewrites give exactly the frame the builder makes from scratch.
TEST(CoreNat, RewritesEqualFramesBuiltFromScratch) {
  for (const NatCase& n : std::vector<NatCase>{{"IPv4 TCP", false, false, false},
                                               {"IPv4 UDP", false, true, false},
                                               {"IPv4 UDP, no checksum", false, true, true},
                                               {"IPv6 TCP", true, false, false},
                                               {"IPv6 UDP", true, true, false}}) {
    SCOPED_TRACE(n.name);
    const auto make = [&](const std::string& src, const std::string& dst, uint16_t sport,
                          uint16_t dport) {
      Packet p;
      p.eth(kClientMac, kClientIfMac);
      if (n.v6) {
        p.ipv6(src, dst);
      } else {
        p.ipv4(src, dst);
      }
      if (n.udp) {
        p.udp(sport, dport);
      } else {
        p.tcp(sport, dport, kTcpAck, 12345, 678);
      }
      if (n.noChecksum) p.udpNoChecksum();
      return p.payload("some payload bytes").build();
    };
    const std::string client = n.v6 ? kClient6 : kClient4, vip = n.v6 ? kVip6 : kVip4;
    const std::string node = n.v6 ? kNode6 : kNode4, epAddr = n.v6 ? kEndpoint1v6 : kEndpoint1v4;

    mp_endpoint ep{};
    std::memcpy(ep.addr, abiAddr(epAddr).bytes.data(), 16);
    ep.port = htons(8080);
    const auto fwd = parse(make(client, vip, 40000, 80));
    ASSERT_EQ(fwd->rc, MP_OK);
    mp_nat_forward(&fwd->pkt, fwd->pkt.flow.family, &ep, abiAddr(node).bytes.data(), htons(61001));
    const Bytes wantFwd = make(node, epAddr, 61001, 8080);
    EXPECT_TRUE(fwd->frame == wantFwd) << describeMismatch(wantFwd, fwd->frame);
    EXPECT_EQ(verifyChecksums(fwd->frame), "");

    mp_rnat r{};
    mp_rnat_value(&r, &parse(make(client, vip, 40000, 80))->pkt.flow, 1);
    const auto rev = parse(make(epAddr, node, 8080, 61001));
    ASSERT_EQ(rev->rc, MP_OK);
    mp_nat_reverse(&rev->pkt, rev->pkt.flow.family, &r);
    const Bytes wantRev = make(vip, client, 80, 40000);
    EXPECT_TRUE(rev->frame == wantRev) << describeMismatch(wantRev, rev->frame);
  }
}

TEST(CoreNat, SnatPortStaysInRangeAndFirstProbeIsStable) {
  std::mt19937 rng(11);
  for (int i = 0; i < 10000; ++i) {
    const uint32_t h = static_cast<uint32_t>(rng());
    for (uint32_t probe = 0; probe < MP_SNAT_PROBES; ++probe) {
      const uint16_t port = ntohs(mp_snat_port(h, probe, 61000, 65535));
      ASSERT_GE(port, 61000);
      ASSERT_LE(port, 65535);
    }
    ASSERT_EQ(mp_snat_port(h, 0, 61000, 65535), mp_snat_port(h, 0, 61000, 65535));
    ASSERT_EQ(ntohs(mp_snat_port(h, 3, 1024, 1024)), 1024);
  }
  EXPECT_EQ(mp_snat_port(1, 0, 2000, 1000), 0) << "empty range";
  EXPECT_EQ(mp_snat_port(1, 0, 0, 1000), 0) << "port 0 is no port";
  EXPECT_NE(mp_snat_port(99, 0, 61000, 65535), mp_snat_port(99, 1, 61000, 65535));
}

TEST(CoreHash, FlowHashIsStableSpreadsAndIgnoresNothing) {
  const auto flowOf = [](uint16_t sport) {
    return parse(
               Packet().eth(kClientMac, kClientIfMac).ipv4(kClient4, kVip4).tcp(sport, 80).build())
        ->pkt.flow;
  };
  mp_flow a = flowOf(40000);
  EXPECT_EQ(mp_flow_hash(&a), mp_flow_hash(&a));
  EXPECT_NE(mp_flow_hash(&a), mp_snat_hash(&a));
  mp_flow b = a;
  b.proto = IPPROTO_UDP;
  EXPECT_NE(mp_flow_hash(&a), mp_flow_hash(&b)) << "protocol counts";
  b = a;
  b.dport = htons(81);
  EXPECT_NE(mp_flow_hash(&a), mp_flow_hash(&b)) << "destination port counts";

  // 13 slots, 13000 flows: every slot within 25% of its fair share.
  constexpr uint32_t kSlots = 13;
  std::vector<int> hits(kSlots);
  for (uint16_t p = 0; p < 13000; ++p) {
    mp_flow f = flowOf(static_cast<uint16_t>(1024 + p));
    ++hits[mp_ring_index(mp_flow_hash(&f), kSlots, 0)];
  }
  for (int h : hits) {
    EXPECT_GT(h, 750);
    EXPECT_LT(h, 1250);
  }

  mp_flow v6 =
      parse(Packet().eth(kClientMac, kClientIfMac).ipv6(kClient6, kVip6).tcp(40000, 80).build())
          ->pkt.flow;
  mp_flow v6b = v6;
  v6b.src[15] ^= 1;
  EXPECT_NE(mp_flow_hash(&v6), mp_flow_hash(&v6b)) << "every address byte counts";
}

TEST(CoreMaglev, RingIndexStaysInTheActiveHalf) {
  for (uint32_t h : {0u, 1u, 12u, 13u, 0xffffffffu}) {
    EXPECT_LT(mp_ring_index(h, 13, 0), 13u);
    EXPECT_GE(mp_ring_index(h, 13, 1), 13u);
    EXPECT_LT(mp_ring_index(h, 13, 1), 26u);
    EXPECT_EQ(mp_ring_index(h, 13, 1) - 13, mp_ring_index(h, 13, 0));
  }
  EXPECT_EQ(mp_ring_index(5, 0, 0), MP_RING_EMPTY);
  EXPECT_EQ(mp_ring_index(5, MP_RING_SIZE_MAX + 1, 0), MP_RING_EMPTY);
}

}  // namespace
}  // namespace meshpath::testing
