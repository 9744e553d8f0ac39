// local_ports_test — node.snat_ports settled against stand-ins for /proc's ephemeral and reserved
// port files: auto resolves outside the ephemeral range, an overlapping explicit range is
// reserved (keeping what the file held), and what cannot be done is a warning, not a failure.
#include "local_ports.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace meshpath {
namespace {

class LocalPortsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("meshd_local_ports_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    files_.ephemeral = (dir_ / "ip_local_port_range").string();
    files_.reserved = (dir_ / "ip_local_reserved_ports").string();
    write(files_.ephemeral, "32768\t60999\n");
    write(files_.reserved, "\n");
    node_.ipv4 = IpAddress::parse("10.0.2.1");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static void write(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  }
  static std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::filesystem::path dir_;
  LocalPortFiles files_;
  NodeSpec node_;
};

TEST_F(LocalPortsTest, AutoTakesTheRangeOutsideTheEphemeralOne) {
  ASSERT_TRUE(snatPortsAuto(node_));
  auto setup = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(setup) << setup.error().toString();
  EXPECT_TRUE(setup->automatic);
  EXPECT_EQ(setup->range, PortRange(1024, 32767));
  EXPECT_EQ(setup->ephemeral, PortRange(32768, 60999));
  EXPECT_EQ(node_.snatPortMin, 1024);
  EXPECT_EQ(node_.snatPortMax, 32767);
  EXPECT_FALSE(setup->reserved);
  EXPECT_EQ(read(files_.reserved), "\n") << "nothing to reserve";

  NodeSpec other;
  write(files_.ephemeral, "1024 40000\n");
  ASSERT_TRUE(prepareSnatPorts(other, files_));
  EXPECT_EQ(other.snatPortMin, 40001);
  EXPECT_EQ(other.snatPortMax, 65535);
}

TEST_F(LocalPortsTest, AutoWithoutRoomFailsAndUnknownRangeAssumesLinuxDefault) {
  write(files_.ephemeral, "1024\t65535\n");
  auto none = prepareSnatPorts(node_, files_);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().context.find("leaves no port"), std::string::npos);
  EXPECT_TRUE(snatPortsAuto(node_)) << "the node is left as it was";

  std::filesystem::remove(files_.ephemeral);
  auto assumed = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(assumed);
  EXPECT_EQ(assumed->range, PortRange(1024, 32767));
  ASSERT_TRUE(assumed->warning);
  EXPECT_NE(assumed->warning->find("assuming Linux's default 32768-60999"), std::string::npos);
}

TEST_F(LocalPortsTest, ExplicitRangeOverlappingTheEphemeralOneIsReserved) {
  node_.snatPortMin = 50000;
  node_.snatPortMax = 59999;
  write(files_.reserved, "8080,9000-9010\n");
  auto setup = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(setup);
  EXPECT_FALSE(setup->automatic);
  EXPECT_TRUE(setup->reserved);
  EXPECT_EQ(read(files_.reserved), "8080,9000-9010,50000-59999\n");
  EXPECT_EQ(node_.snatPortMin, 50000) << "an explicit range is kept";

  // Already reserved: nothing written the second time.
  auto again = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->reserved);
  EXPECT_EQ(read(files_.reserved), "8080,9000-9010,50000-59999\n");
}

TEST_F(LocalPortsTest, ExplicitRangeOutsideIsLeftAloneAndFailuresAreWarnings) {
  node_.snatPortMin = 61000;
  node_.snatPortMax = 65535;
  auto outside = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(outside);
  EXPECT_FALSE(outside->reserved);
  EXPECT_FALSE(outside->warning);
  EXPECT_EQ(read(files_.reserved), "\n");

  // A reservation that cannot be made (no such file here; /proc read-only in a container).
  node_.snatPortMin = 40000;
  node_.snatPortMax = 40999;
  std::filesystem::remove(files_.reserved);
  auto unreserved = prepareSnatPorts(node_, files_);
  ASSERT_TRUE(unreserved);
  EXPECT_FALSE(unreserved->reserved);
  ASSERT_TRUE(unreserved->warning);
  EXPECT_NE(unreserved->warning->find("could not be reserved"), std::string::npos);
}

}  // namespace
}  // namespace meshpath
