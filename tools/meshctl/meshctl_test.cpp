// meshctl_test.cpp — meshctl's own checks (endpoint/port/weight/name parsing) and its table and
// unit formatting. No daemon involved; the e2e tests cover meshctl against a real meshd.
#include <gtest/gtest.h>

#include <sstream>

#include "address.h"
#include "table.h"

namespace meshpath::meshctl {
namespace {

TEST(ParseEndpoint, Ipv4WithPort) {
  std::string error;
  auto ep = parseEndpoint("10.0.2.11:8080", false, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->address, "10.0.2.11");
  EXPECT_EQ(ep->port, 8080);
  EXPECT_FALSE(ep->v6);
  EXPECT_FALSE(ep->weight);
  EXPECT_EQ(ep->key(), "10.0.2.11:8080");
}

TEST(ParseEndpoint, Ipv6InBracketsIsCanonicalized) {
  std::string error;
  auto ep = parseEndpoint("[fd00:0:0::011]:80", false, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->address, "fd00::11");
  EXPECT_TRUE(ep->v6);
  EXPECT_EQ(ep->key(), "[fd00::11]:80");
}

TEST(ParseEndpoint, WeightSuffix) {
  std::string error;
  auto ep = parseEndpoint("[fd00::1]:80@250", true, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->weight, 250u);
  EXPECT_FALSE(parseEndpoint("10.0.0.1:80@250", false, &error));
  EXPECT_NE(error.find("--weight"), std::string::npos);
  EXPECT_FALSE(parseEndpoint("10.0.0.1:80@10001", true, &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
}

TEST(ParseEndpoint, RefusalsSayWhatIsWrong) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"10.0.2.11", "port is missing"},   {"10.0.2.300:80", "bad address"},
      {"fd00::1:80", "brackets"},         {"[10.0.0.1]:80", "IPv6 only"},
      {"[fd00::1]80", "write ADDR:PORT"}, {"10.0.0.1:0", "bad port"},
      {"10.0.0.1:65536", "bad port"},     {"10.0.0.1:8o", "bad port"},
      {"host.example:80", "bad address"}, {"", "port is missing"},
  };
  for (const auto& c : cases) {
    std::string error;
    EXPECT_FALSE(parseEndpoint(c.text, true, &error)) << c.text;
    EXPECT_NE(error.find(c.says), std::string::npos) << c.text << ": " << error;
  }
}

TEST(ParseWeight, Range) {
  std::string error;
  EXPECT_EQ(parseWeight("0", &error), 0u);
  EXPECT_EQ(parseWeight("10000", &error), 10000u);
  EXPECT_FALSE(parseWeight("10001", &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
  EXPECT_FALSE(parseWeight("-1", &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
  EXPECT_FALSE(parseWeight("two", &error));
  EXPECT_NE(error.find("bad weight"), std::string::npos);
}

TEST(ServiceName, Rules) {
  std::string error;
  EXPECT_TRUE(validServiceName("web", &error));
  EXPECT_TRUE(validServiceName("0web-v2_a.b", &error));
  EXPECT_FALSE(validServiceName("Web", &error));
  EXPECT_FALSE(validServiceName("-web", &error));
  EXPECT_FALSE(validServiceName("", &error));
  EXPECT_FALSE(validServiceName(std::string(64, 'a'), &error));
  EXPECT_FALSE(validServiceName("a/b", &error));
}

TEST(Units, Counts) {
  EXPECT_EQ(humanCount(0), "0");
  EXPECT_EQ(humanCount(999), "999");
  EXPECT_EQ(humanCount(1234), "1.2K");
  EXPECT_EQ(humanCount(3'400'000), "3.4M");
  EXPECT_EQ(humanCount(250'000), "250K");
}

TEST(Units, Bytes) {
  EXPECT_EQ(humanBytes(512), "512 B");
  EXPECT_EQ(humanBytes(1536), "1.5 KiB");
  EXPECT_EQ(humanBytes(5ull << 30), "5.0 GiB");
}

TEST(Units, PercentAndDuration) {
  EXPECT_EQ(percent(1, 3), "33.3%");
  EXPECT_EQ(percent(0, 0), "-");
  EXPECT_EQ(humanDuration(75), "1m15s");
  EXPECT_EQ(humanDuration(90061), "1d1h1m1s");
}

TEST(Table, AlignsColumns) {
  Table t({{"NAME"}, {"COUNT", Align::kRight}});
  t.addRow({"web", "5"});
  t.addRow({"a-longer-name", "1.2K"});
  std::ostringstream out;
  t.print(out);
  EXPECT_EQ(out.str(),
            "NAME           COUNT\n"
            "web                5\n"
            "a-longer-name   1.2K\n");
}

}  // namespace
}  // namespace meshpath::meshctl
