// model_test — addresses, enum names, durations, endpoint keys.
#include "model.h"

#include <gtest/gtest.h>

#include "abi.h"

namespace meshpath {
namespace {

TEST(IpAddress, ParsesAndPrintsBothFamilies) {
  const auto v4 = IpAddress::parse("10.0.2.11");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->isV4());
  EXPECT_EQ(v4->family(), 4);
  EXPECT_EQ(v4->toString(), "10.0.2.11");
  EXPECT_EQ(v4->bytes()[0], 10);
  EXPECT_EQ(v4->bytes()[3], 11);
  for (size_t i = 4; i < 16; ++i) EXPECT_EQ(v4->bytes()[i], 0) << "IPv4 sits in the first 4 bytes";
  // Printed by hand (model.cpp): the same text as inet_ntop, edge octets included.
  for (const char* text : {"0.0.0.0", "255.255.255.255", "1.2.3.4", "100.10.1.0", "9.99.199.249"}) {
    EXPECT_EQ(IpAddress::parse(text)->toString(), text);
  }
  EXPECT_EQ((EndpointSpec{*v4, 65535, 1}.key()), "10.0.2.11:65535");
  EXPECT_EQ((EndpointSpec{*IpAddress::parse("fd00::1"), 0, 1}.key()), "[fd00::1]:0");

  const auto v6 = IpAddress::parse("fd00:0:0::11");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->isV6());
  EXPECT_EQ(v6->family(), 6);
  EXPECT_EQ(v6->toString(), "fd00::11");  // canonical form
  EXPECT_EQ(v6->bytes()[0], 0xfd);
  EXPECT_EQ(v6->bytes()[15], 0x11);
}

TEST(IpAddress, RefusesAnythingElse) {
  for (const char* bad : {"", "10.0.0", "10.0.0.256", "10.0.0.1/24", " 10.0.0.1", "10.0.0.1 ",
                          "fd00::1::2", "example.com", "fd00::1%eth0", "0x0a000001", "1.2.3.04"}) {
    EXPECT_FALSE(IpAddress::parse(bad)) << bad;
  }
  EXPECT_FALSE(IpAddress::parse(std::string("10.0.0.1\0junk", 13)));
}

TEST(IpAddress, DefaultIsUnsetAndComparesByValue) {
  IpAddress unset;
  EXPECT_EQ(unset.family(), 0);
  EXPECT_EQ(unset.toString(), "");
  EXPECT_EQ(IpAddress::parse("10.0.0.1"), IpAddress::parse("10.0.0.1"));
  EXPECT_LT(*IpAddress::parse("10.0.0.1"), *IpAddress::parse("10.0.0.2"));
  EXPECT_NE(IpAddress::parse("::a00:1"), IpAddress::parse("10.0.0.1"));
}

TEST(Enums, RoundTrip) {
  EXPECT_EQ(toString(Protocol::kTcp), "tcp");
  EXPECT_EQ(toString(Protocol::kUdp), "udp");
  EXPECT_EQ(toString(Algorithm::kMaglev), "maglev");
  EXPECT_EQ(toString(ForwardingMode::kNat), "nat");
  EXPECT_EQ(parseProtocol("udp"), Protocol::kUdp);
  EXPECT_EQ(parseProtocol("tcp"), Protocol::kTcp);
  EXPECT_EQ(parseAlgorithm("maglev"), Algorithm::kMaglev);
  EXPECT_EQ(parseForwardingMode("nat"), ForwardingMode::kNat);
  EXPECT_FALSE(parseProtocol("TCP"));
  EXPECT_FALSE(parseProtocol("sctp"));
  EXPECT_FALSE(parseAlgorithm("ring"));
  // The names and values are the datapath's (bpf/abi.h).
  for (int i = 0; i < MP_ALG_MAX; ++i) {
    const auto a = parseAlgorithm(mp_algorithm_names[i]);
    ASSERT_TRUE(a) << mp_algorithm_names[i];
    EXPECT_EQ(static_cast<int>(*a), i);
    EXPECT_EQ(toString(*a), mp_algorithm_names[i]);
  }
  EXPECT_EQ(parseAlgorithm("round-robin"), Algorithm::kRoundRobin);
  EXPECT_EQ(parseAlgorithm("least-latency"), Algorithm::kLeastLatency);
  EXPECT_FALSE(parseAlgorithm("round_robin"));
  EXPECT_EQ(toString(static_cast<Algorithm>(9)), "unknown");
  EXPECT_FALSE(parseForwardingMode("dsr"));
  EXPECT_EQ(static_cast<int>(Protocol::kTcp), 6);
  EXPECT_EQ(static_cast<int>(Protocol::kUdp), 17);
}

TEST(Enums, OnEject) {
  EXPECT_EQ(toString(OnEject::kKeep), "keep");
  EXPECT_EQ(toString(OnEject::kReset), "reset");
  EXPECT_EQ(parseOnEject("keep"), OnEject::kKeep);
  EXPECT_EQ(parseOnEject("reset"), OnEject::kReset);
  EXPECT_FALSE(parseOnEject("flush"));
  EXPECT_FALSE(parseOnEject("Keep"));
  EXPECT_EQ(toString(static_cast<OnEject>(7)), "unknown");
  EXPECT_EQ(ServiceSpec{}.onEject, OnEject::kKeep) << "HAProxy's and Envoy's default";
}

TEST(Duration, ParsesEveryUnitAndFormatsTheLargestWhole) {
  EXPECT_EQ(parseDurationMs("1500ms"), 1500u);
  EXPECT_EQ(parseDurationMs("2s"), 2000u);
  EXPECT_EQ(parseDurationMs("5m"), 300000u);
  EXPECT_EQ(parseDurationMs("3h"), 3u * 3600 * 1000);
  EXPECT_EQ(parseDurationMs("168h"), uint64_t{kMaxConnTimeoutMs});
  for (const char* bad : {"", "3", "h", "3d", "3 h", "-3h", "3H", "1.5h", "1234567890h"}) {
    EXPECT_FALSE(parseDurationMs(bad)) << bad;
  }
  EXPECT_EQ(formatDurationMs(0), "0ms");
  EXPECT_EQ(formatDurationMs(1500), "1500ms");
  EXPECT_EQ(formatDurationMs(60000), "60s");
  EXPECT_EQ(formatDurationMs(3600 * 1000), "1h");
  EXPECT_EQ(formatDurationMs(3u * 3600 * 1000), "3h");
  EXPECT_EQ(formatDurationMs(5400 * 1000), "5400s");
  // What is formatted parses back to the same value.
  for (uint64_t ms : {1ull, 999ull, 1000ull, 90000ull, 10800000ull, 604800000ull}) {
    EXPECT_EQ(parseDurationMs(formatDurationMs(ms)), ms) << ms;
  }
}

TEST(ConnTimeouts, DefaultsLikeTheKernelConntrack) {
  const ConnTimeouts t;
  EXPECT_EQ(t.tcpSynMs, 5000u);
  EXPECT_EQ(t.tcpEstablishedMs, 3u * 3600 * 1000);
  EXPECT_GT(t.tcpEstablishedMs, 2u * 3600 * 1000) << "beyond Linux's 2 h keepalive";
  EXPECT_EQ(t.tcpFinMs, 60000u);
  EXPECT_EQ(t.tcpClosedMs, 2000u);
  EXPECT_EQ(t.udpMs, 30000u);
  EXPECT_EQ(t.udpRepliedMs, 120000u);
}

TEST(EndpointSpec, KeyBracketsIpv6) {
  EndpointSpec v4{*IpAddress::parse("10.0.2.11"), 8080, 1};
  EndpointSpec v6{*IpAddress::parse("fd00::11"), 8080, 1};
  EXPECT_EQ(v4.key(), "10.0.2.11:8080");
  EXPECT_EQ(v6.key(), "[fd00::11]:8080");
}

TEST(ServiceSpec, SameEndpointsComparesAddressesAndPortsInOrderNotWeights) {
  ServiceSpec a;
  a.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, 1},
                 {*IpAddress::parse("10.0.2.12"), 80, 1}};
  ServiceSpec b = a;
  b.endpoints[1].weight = 0;
  b.health.fall = 9;
  EXPECT_TRUE(sameEndpoints(a, b));
  b.endpoints[1].port = 81;
  EXPECT_FALSE(sameEndpoints(a, b));
  b = a;
  std::swap(b.endpoints[0], b.endpoints[1]);
  EXPECT_FALSE(sameEndpoints(a, b));
  b.endpoints.pop_back();
  EXPECT_FALSE(sameEndpoints(a, b));
}

}  // namespace
}  // namespace meshpath
