// snat_test — the SNAT sources of a node, the ports they give an endpoint, the auto port range
// and the reserved-ports list meshd writes.
#include "snat.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace meshpath {
namespace {

IpAddress ip(const std::string& s) { return *IpAddress::parse(s); }

std::vector<std::string> texts(const std::vector<IpAddress>& v) {
  std::vector<std::string> out;
  for (const IpAddress& a : v) out.push_back(a.toString());
  return out;
}

TEST(AutoSnatPortRange, TakesTheWidestSideOfTheEphemeralRange) {
  // Linux's default ephemeral range leaves 1024-32767 below it and 61000-65535 above.
  EXPECT_EQ(autoSnatPortRange(32768, 60999), PortRange(1024, 32767));
  EXPECT_EQ(autoSnatPortRange(1024, 40000), PortRange(40001, 65535));
  EXPECT_EQ(autoSnatPortRange(50000, 65535), PortRange(1024, 49999));
  // A tie goes to the upper side, away from the ports services listen on.
  EXPECT_EQ(autoSnatPortRange(2048, 64511), PortRange(64512, 65535));
  // An ephemeral range reaching below 1024 leaves only the upper side; one entirely below
  // leaves everything from 1024.
  EXPECT_EQ(autoSnatPortRange(500, 60999), PortRange(61000, 65535));
  EXPECT_EQ(autoSnatPortRange(100, 200), PortRange(1024, 65535));
  EXPECT_EQ(autoSnatPortRange(1025, 65535), PortRange(1024, 1024));
  // Nothing is left.
  EXPECT_EQ(autoSnatPortRange(1024, 65535), PortRange(0, 0));
  EXPECT_EQ(autoSnatPortRange(1, 65535), PortRange(0, 0));
  // Whatever it picks never overlaps the ephemeral range.
  for (uint32_t lo : {1024u, 5000u, 32768u, 49152u}) {
    for (uint32_t hi : {lo, lo + 100, 60999u, 65534u}) {
      const PortRange r = autoSnatPortRange(uint16_t(lo), uint16_t(hi));
      EXPECT_FALSE(portRangesOverlap(r, {uint16_t(lo), uint16_t(hi)})) << lo << "-" << hi;
      EXPECT_GE(r.first, kMinSnatPort) << lo << "-" << hi;
    }
  }
}

TEST(EphemeralPortRange, ParsesTheProcText) {
  EXPECT_EQ(parseEphemeralPortRange("32768\t60999\n"), PortRange(32768, 60999));
  EXPECT_EQ(parseEphemeralPortRange("1024 65000"), PortRange(1024, 65000));
  for (const char* bad : {"", "32768", "32768 60999 1", "a b", "60999 32768", "1 70000"}) {
    EXPECT_FALSE(parseEphemeralPortRange(bad)) << bad;
  }
}

TEST(ReservedPorts, AppendsAndKeepsWhatIsThere) {
  EXPECT_EQ(reservedPortsWith("", {40000, 49999}), "40000-49999");
  EXPECT_EQ(reservedPortsWith("\n", {40000, 40000}), "40000");
  EXPECT_EQ(reservedPortsWith("8080,9000-9010\n", {40000, 49999}), "8080,9000-9010,40000-49999");
  // Already reserved, by one entry or by several touching ones: nothing to write.
  EXPECT_FALSE(reservedPortsWith("30000-50000\n", {40000, 49999}));
  EXPECT_FALSE(reservedPortsWith("40000-44999,45000-49999", {40000, 49999}));
  EXPECT_FALSE(reservedPortsWith("40000", {40000, 40000}));
  // Partly reserved: the whole range is added (the kernel merges overlaps).
  EXPECT_EQ(reservedPortsWith("40000-44999", {40000, 49999}), "40000-44999,40000-49999");
  EXPECT_EQ(reservedPortsWith("40000-44999,45001-49999", {40000, 49999}),
            "40000-44999,45001-49999,40000-49999");
}

TEST(SnatSources, NodeAddressFirstThenThePoolOfItsFamily) {
  NodeSpec node;
  node.ipv4 = ip("10.0.2.1");
  node.snatPool = {ip("10.0.2.5"), ip("fd00:2::5"), ip("10.0.2.6")};
  EXPECT_EQ(texts(snatSources(node, 4)),
            (std::vector<std::string>{"10.0.2.1", "10.0.2.5", "10.0.2.6"}));
  EXPECT_TRUE(snatSources(node, 6).empty()) << "no node.ipv6: no IPv6 source at all";
  node.ipv6 = ip("fd00:2::1");
  EXPECT_EQ(texts(snatSources(node, 6)), (std::vector<std::string>{"fd00:2::1", "fd00:2::5"}));
}

TEST(SnatCapacity, SourcesTimesPorts) {
  NodeSpec node;
  node.ipv4 = ip("10.0.2.1");
  EXPECT_EQ(snatPortCount(node), 0u) << "auto, not resolved yet";
  EXPECT_EQ(snatCapacity(node, 4), 0u);
  node.snatPortMin = 61000;
  node.snatPortMax = 65535;
  EXPECT_EQ(snatPortCount(node), 4536u);
  EXPECT_EQ(snatCapacity(node, 4), 4536u);
  node.snatPool = {ip("10.0.2.5"), ip("10.0.2.6")};
  EXPECT_EQ(snatCapacity(node, 4), 3u * 4536);
  EXPECT_EQ(snatCapacity(node, 6), 0u);
}

TEST(SnatPoolEntry, AddressesAndPrefixes) {
  std::string why;
  EXPECT_EQ(texts(*expandSnatPoolEntry("10.0.2.5", &why)), std::vector<std::string>{"10.0.2.5"});
  EXPECT_EQ(texts(*expandSnatPoolEntry("10.0.2.8/29", &why)),
            (std::vector<std::string>{"10.0.2.9", "10.0.2.10", "10.0.2.11", "10.0.2.12",
                                      "10.0.2.13", "10.0.2.14"}));
  EXPECT_EQ(texts(*expandSnatPoolEntry("10.0.2.8/31", &why)),
            (std::vector<std::string>{"10.0.2.8", "10.0.2.9"}));
  EXPECT_EQ(texts(*expandSnatPoolEntry("10.0.2.8/32", &why)), std::vector<std::string>{"10.0.2.8"});
  EXPECT_EQ(expandSnatPoolEntry("fd00::8/125", &why)->size(), 8u);
  EXPECT_EQ(texts(*expandSnatPoolEntry("fd00::ff00/127", &why)),
            (std::vector<std::string>{"fd00::ff00", "fd00::ff01"}));

  EXPECT_FALSE(expandSnatPoolEntry("fd00::/124", &why));
  EXPECT_NE(why.find("more than 8 addresses"), std::string::npos) << why;
  EXPECT_FALSE(expandSnatPoolEntry("10.0.0.0/8", &why));
  EXPECT_NE(why.find("more than 8 addresses"), std::string::npos) << why;
  EXPECT_FALSE(expandSnatPoolEntry("10.0.2.12/29", &why));
  EXPECT_NE(why.find("host bits"), std::string::npos) << why;
  EXPECT_FALSE(expandSnatPoolEntry("fd00::1/129", &why));
  EXPECT_NE(why.find("0..128 for IPv6"), std::string::npos) << why;
  for (const char* bad : {"", "/29", "10.0.2.8/", "10.0.2.8/x", "eth0", "10.0.2.8/29/1"}) {
    EXPECT_FALSE(expandSnatPoolEntry(bad, &why)) << bad;
  }
}

}  // namespace
}  // namespace meshpath
