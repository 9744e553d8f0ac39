// The state file: what is saved comes back the same; a damaged file is refused, not guessed at.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "state_store.h"

namespace meshpath {
namespace {

DesiredState sample() {
  DesiredState d;
  d.node.interfaces = {"veth-c", "veth-e"};
  d.node.ipv4 = IpAddress::parse("10.0.2.1");
  d.node.ipv6 = IpAddress::parse("fd00:2::1");
  d.node.ringSize = 1009;
  d.node.snatPool = {*IpAddress::parse("10.0.2.2"), *IpAddress::parse("fd00:2::2")};
  d.node.snatPortMin = 1024;
  d.node.snatPortMax = 32767;
  d.node.halfTableSize = 65536;
  ServiceSpec web;
  web.name = "web";
  web.vip = *IpAddress::parse("10.0.0.100");
  web.port = 80;
  web.endpoints = {{*IpAddress::parse("10.0.2.11"), 8080, 1},
                   {*IpAddress::parse("10.0.2.12"), 8080, 0}};
  web.timeouts.tcpEstablishedMs = 7200 * 1000;
  web.timeouts.tcpClosedMs = 1500;
  web.onEject = OnEject::kReset;
  ServiceSpec dns;
  dns.name = "dns6";
  dns.vip = *IpAddress::parse("fd00::53");
  dns.port = 53;
  dns.protocol = Protocol::kUdp;
  dns.endpoints = {{*IpAddress::parse("fd00:2::11"), 53, 3}};
  d.services = {web, dns};
  return d;
}

IdAssignments sampleIds() {
  IdAssignments ids;
  ids.services = {{"web", 4}, {"dns6", 9}};
  ids.endpoints = {{"web", {{"10.0.2.11:8080", 17}, {"10.0.2.12:8080", 18}}},
                   {"dns6", {{"[fd00:2::11]:53", 3}}}};
  ids.nextServiceId = 10;
  ids.nextEndpointId = 19;
  return ids;
}

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("meshd_state_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(StateStoreTest, RoundTrip) {
  StateStore store((dir_ / "sub" / "state.json").string());
  auto none = store.load();
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store.save(sample(), sampleIds()));  // creates the directory
  auto loaded = store.load();
  ASSERT_TRUE(loaded) << loaded.error().toString();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_EQ((*loaded)->desired, sample());
  EXPECT_EQ((*loaded)->ids, sampleIds());
  EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));
  ASSERT_TRUE(store.remove());
  EXPECT_FALSE(store.exists());
}

TEST_F(StateStoreTest, DamagedFileIsRefused) {
  std::filesystem::create_directories(dir_);
  StateStore store((dir_ / "state.json").string());
  std::string good = serializeState(sample(), sampleIds());
  for (const std::string& text :
       {std::string("{"), good.substr(0, good.size() / 2), std::string("{\"format\": 99}")}) {
    std::ofstream(store.path()) << text;
    auto loaded = store.load();
    ASSERT_FALSE(loaded) << text;
    EXPECT_NE(loaded.error().context.find(store.path()), std::string::npos);
  }
}

TEST_F(StateStoreTest, MissingIdIsRefused) {
  IdAssignments ids = sampleIds();
  ids.endpoints["web"].erase("10.0.2.12:8080");
  EXPECT_THROW(parseState(serializeState(sample(), ids)), std::exception);
}

// A state file written before services had timeouts and on_eject, and the node a SNAT pool and a
// half-open table, still loads: the missing fields take their defaults.
TEST_F(StateStoreTest, OlderFileWithoutTheConnectionFieldsLoadsWithDefaults) {
  const std::string text = R"({"format": 1,
    "desired": {"node": {"interfaces": ["veth0"], "ipv4": "10.0.2.1", "snat_port_min": 61000,
                         "snat_port_max": 65535, "ring_size": 1009},
                "services": [{"name": "web", "vip": "10.0.0.100", "port": 80,
                              "endpoints": [{"address": "10.0.2.11", "port": 8080}]}]},
    "ids": {"services": {"web": 0}, "endpoints": {"web": {"10.0.2.11:8080": 0}},
            "next_service_id": 1, "next_endpoint_id": 1}})";
  const SavedState saved = parseState(text);
  EXPECT_TRUE(saved.desired.node.snatPool.empty());
  EXPECT_EQ(saved.desired.node.halfTableSize, NodeSpec{}.halfTableSize);
  EXPECT_EQ(saved.desired.node.snatPortMin, 61000);
  EXPECT_EQ(saved.desired.services[0].timeouts, ConnTimeouts{});
  EXPECT_EQ(saved.desired.services[0].onEject, OnEject::kKeep);
  EXPECT_EQ(saved.desired.services[0].synProtection, SynProtection::kAuto);
  EXPECT_EQ(saved.desired.services[0].connectRetries, 2u);
  EXPECT_EQ(saved.desired.node.synFloodThreshold, 1024u);
  // And what is saved now carries them.
  const SavedState again = parseState(serializeState(sample(), sampleIds()));
  EXPECT_EQ(again.desired, sample());
  EXPECT_EQ(again.desired.services[0].onEject, OnEject::kReset);
}

}  // namespace
}  // namespace meshpath
