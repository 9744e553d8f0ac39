// pktgen_test — pktgen against its own sink on a veth pair between two private namespaces:
// exactly N packets of the requested shape (each captured frame compared field by field with
// the frame tests/bpf/packet.h builds for its flow), rate limiting, the sink's count, refusals.
// Root: namespaces, XDP, BPF_PROG_RUN.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "packet.h"

namespace meshpath::testing {
namespace {

const std::string kPktgen = PKTGEN_BIN;

struct Result {
  int rc = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

Result run(const std::string& cmd) {
  std::string errPath = "/tmp/pktgen_test_err." + std::to_string(getpid());
  Result r;
  FILE* p = popen((cmd + " 2>" + errPath).c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = pclose(p);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = slurp(errPath);
  unlink(errPath.c_str());
  return r;
}

void sh(const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; }

struct Capture {
  uint32_t len = 0;
  Bytes data;
};

std::vector<Capture> readPcap(const std::string& path) {
  std::string d = slurp(path);
  std::vector<Capture> out;
  size_t off = 24;
  while (off + 16 <= d.size()) {
    uint32_t hdr[4];
    std::memcpy(hdr, d.data() + off, 16);
    off += 16;
    Capture c;
    c.len = hdr[3];
    c.data.assign(d.begin() + static_cast<long>(off), d.begin() + static_cast<long>(off + hdr[2]));
    off += hdr[2];
    out.push_back(std::move(c));
  }
  return out;
}

std::string ipv4Plus(const std::string& base, uint32_t add) {
  unsigned a, b, c, d;
  sscanf(base.c_str(), "%u.%u.%u.%u", &a, &b, &c, &d);
  uint32_t v = ((a << 24) | (b << 16) | (c << 8) | d) + add;
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 255) + "." +
         std::to_string((v >> 8) & 255) + "." + std::to_string(v & 255);
}

// fd00:5::<hex> with the last 32 bits given.
std::string ipv6Low(uint32_t low) {
  char buf[64];
  snprintf(buf, sizeof(buf), "fd00:5::%x:%x", low >> 16, low & 0xffff);
  return buf;
}

class PktgenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string id = std::to_string(getpid());
    nsA_ = "pgt" + id + "a";
    nsB_ = "pgt" + id + "b";
    sh("ip netns add " + nsA_);
    sh("ip netns add " + nsB_);
    // No IPv6 on the link: no router/neighbour solicitations to count besides ours.
    for (const auto& ns : {nsA_, nsB_}) {
      sh("ip netns exec " + ns + " sysctl -qw net.ipv6.conf.all.disable_ipv6=1");
      sh("ip netns exec " + ns + " sysctl -qw net.ipv6.conf.default.disable_ipv6=1");
    }
    sh("ip -n " + nsA_ + " link add va address " + kMacA + " type veth peer name vb address " +
       kMacB + " netns " + nsB_);
    sh("ip -n " + nsA_ + " link set va up");
    sh("ip -n " + nsB_ + " link set vb up");
    sh("ip -n " + nsA_ + " addr add 10.77.0.1/24 dev va");
  }
  void TearDown() override {
    std::system(("ip netns del " + nsA_ + " 2>/dev/null").c_str());
    std::system(("ip netns del " + nsB_ + " 2>/dev/null").c_str());
  }

  std::string send(const std::string& args) {
    return kPktgen + " send va --netns " + nsA_ + " --dst-mac " + kMacB + " " + args;
  }

  const std::string kMacA = "02:00:00:77:00:01";
  const std::string kMacB = "02:00:00:77:00:02";
  std::string nsA_, nsB_;
};

struct ShapeCase {
  std::string name;
  int family;
  std::string proto;  // udp | tcp-syn | tcp-ack
  uint32_t size;
  std::string mode = "live";
};

void PrintTo(const ShapeCase& c, std::ostream* os) { *os << c.name; }

class PktgenShape : public PktgenTest, public ::testing::WithParamInterface<ShapeCase> {};

// N packets over F flows (3 source addresses x 7 ports, 17 of the 21 pairs used): every frame
// arrives, in order, byte for byte what packet.h builds for flow n % F.
TEST_P(PktgenShape, SendsExactlyWhatWasAsked) {
  const ShapeCase& c = GetParam();
  constexpr uint32_t kCount = 3000, kFlows = 17, kPorts = 7;
  constexpr uint16_t kSport = 40000, kDport = 8080;
  std::string pcap = "/tmp/pktgen_test_" + std::to_string(getpid()) + ".pcap";
  std::string src = c.family == 4 ? "10.77.0.10-10.77.0.12" : ipv6Low(0x10) + "-" + ipv6Low(0x12);
  std::string dst = c.family == 4 ? "10.77.0.2" : "fd00:6::2";
  Result r =
      run(send("--dst-ip " + dst + " --src-ip " + src + " --src-port 40000-40006 --flows 17" +
               " --dst-port 8080 --proto " + c.proto + " --size " + std::to_string(c.size) +
               " --count 3000 --rate 30000 --mode " + c.mode + " --rx vb --rx-netns " + nsB_ +
               " --pcap " + pcap + " --snap 256 --json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["sent"], kCount);
  EXPECT_EQ(j["backend"], c.mode == "live" ? "live-frames" : "af-packet");
  EXPECT_EQ(j["rx"]["packets"], kCount);
  EXPECT_EQ(j["rx"].value("capture_drops", 0), 0);

  std::vector<Capture> frames = readPcap(pcap);
  unlink(pcap.c_str());
  ASSERT_EQ(frames.size(), kCount);
  Shape shape;
  shape.proto = c.proto == "udp" ? 17 : 6;
  shape.tcpFlags = c.proto == "tcp-ack" ? kTcpAck : kTcpSyn;
  size_t hdr = (c.family == 4 ? 34 : 54) + (shape.proto == 17 ? 8 : 20);
  shape.payload.assign(c.size - hdr, '\0');
  std::vector<bool> seen(kFlows, false);
  for (uint32_t i = 0; i < kCount; i++) {
    uint32_t flow = i % kFlows;
    uint16_t sport = static_cast<uint16_t>(kSport + flow % kPorts);
    std::string saddr =
        c.family == 4 ? ipv4Plus("10.77.0.10", flow / kPorts) : ipv6Low(0x10 + flow / kPorts);
    Bytes expected;
    if (shape.proto == 6) {
      Packet p;
      p.eth(kMacA, kMacB);
      if (c.family == 4) {
        p.ipv4(saddr, dst);
      } else {
        p.ipv6(saddr, dst);
      }
      expected = p.tcp(sport, kDport, shape.tcpFlags, 1, shape.tcpFlags == kTcpAck ? 1 : 0)
                     .payload(shape.payload)
                     .build();
    } else {
      expected = frame(shape, kMacA, kMacB, saddr, dst, sport, kDport);
    }
    ASSERT_EQ(expected.size(), c.size);
    ASSERT_EQ(frames[i].len, c.size) << "frame " << i;
    // Frames longer than the capture are checked through the expected frame's checksums.
    if (frames[i].data.size() == c.size) {
      ASSERT_EQ(verifyChecksums(frames[i].data), "") << "frame " << i;
    }
    ASSERT_EQ(describeMismatch(Bytes(expected.begin(),
                                     expected.begin() + static_cast<long>(frames[i].data.size())),
                               frames[i].data),
              "")
        << "frame " << i << " (flow " << flow << ")";
    seen[flow] = true;
  }
  for (uint32_t f = 0; f < kFlows; f++) EXPECT_TRUE(seen[f]) << "flow " << f;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PktgenShape,
    ::testing::Values(
        ShapeCase{"ipv4_udp", 4, "udp", 60}, ShapeCase{"ipv4_udp_1500", 4, "udp", 1500},
        ShapeCase{"ipv4_tcp_syn", 4, "tcp-syn", 64}, ShapeCase{"ipv4_tcp_ack", 4, "tcp-ack", 200},
        ShapeCase{"ipv6_udp", 6, "udp", 62}, ShapeCase{"ipv6_udp_1000", 6, "udp", 1000},
        ShapeCase{"ipv6_tcp_syn", 6, "tcp-syn", 74}, ShapeCase{"ipv6_tcp_ack", 6, "tcp-ack", 128},
        ShapeCase{"ipv4_udp_afpacket", 4, "udp", 60, "afpacket"},
        ShapeCase{"ipv6_tcp_syn_afpacket", 6, "tcp-syn", 90, "afpacket"}),
    [](const auto& info) { return info.param.name; });

// Asked for 100 kpps for 2 s: the sender's and the sink's rates both within 5 %, and the run
// takes the time it should.
TEST_F(PktgenTest, RateLimitWithinFivePercent) {
  for (double rate : {20000.0, 100000.0}) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t count = static_cast<uint64_t>(rate * 2);
    Result r = run(send("--dst-ip 10.77.0.2 --src-port 1000-1999 --count " + std::to_string(count) +
                        " --rate " + std::to_string(static_cast<uint64_t>(rate)) +
                        " --rx vb --rx-netns " + nsB_ + " --json"));
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(r.rc, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["sent"], count);
    EXPECT_EQ(j["rx"]["packets"], count);
    double tx = j["pps"], rx = j["rx"]["pps"];
    EXPECT_NEAR(tx, rate, rate * 0.05) << "sent rate";
    EXPECT_NEAR(rx, rate, rate * 0.05) << "received rate";
    EXPECT_GE(wall, 2 * 0.95) << "finished too early for the rate";
  }
}

// A separate sink process counts exactly what a separate sender sent, at full speed.
TEST_F(PktgenTest, SinkCountsExactlyWhatWasSent) {
  constexpr uint64_t kCount = 2000000;
  std::string errPath = "/tmp/pktgen_test_sink." + std::to_string(getpid());
  std::string cmd = kPktgen + " sink vb --netns " + nsB_ + " --count " + std::to_string(kCount) +
                    " --idle 3 --json 2>" + errPath;
  FILE* sink = popen(cmd.c_str(), "r");
  ASSERT_NE(sink, nullptr);
  for (int i = 0; i < 100 && slurp(errPath).find("counting on vb") == std::string::npos; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_NE(slurp(errPath).find("counting on vb"), std::string::npos) << slurp(errPath);
  Result r = run(send("--dst-ip 10.77.0.2 --src-port 1000-60000 --count " + std::to_string(kCount) +
                      " --json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["sent"], kCount);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), sink)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(sink), 0) << slurp(errPath);
  unlink(errPath.c_str());
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["packets"], kCount);
  EXPECT_EQ(j["bytes"], kCount * 60);
  EXPECT_GT(j["pps"].get<double>(), 100000.0);
}

struct BadCase {
  std::string args;  // after `pktgen send va --netns NS`
  std::string says;  // part of the message
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.args; }

class PktgenRefuses : public PktgenTest, public ::testing::WithParamInterface<BadCase> {};

TEST_P(PktgenRefuses, WithAMessage) {
  const BadCase& c = GetParam();
  std::string cmd = kPktgen + " send va --netns " + nsA_ + " " + c.args;
  if (c.args.rfind("RAW ", 0) == 0) cmd = kPktgen + " " + c.args.substr(4);
  Result r = run(cmd);
  EXPECT_NE(r.rc, 0) << cmd;
  EXPECT_NE(r.err.find(c.says), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(r.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    BadOptions, PktgenRefuses,
    ::testing::Values(
        BadCase{"RAW send nosuchif0 --dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1",
                "no such interface 'nosuchif0'"},
        BadCase{"RAW sink nosuchif0", "no such interface 'nosuchif0'"},
        BadCase{"RAW send va --netns no-such-ns --dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1",
                "network namespace 'no-such-ns'"},
        BadCase{"--dst-mac 02:00:00:00:00 --dst-ip 10.0.0.1 -n 1", "not a MAC address"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.300 -n 1", "not an IPv4 or IPv6"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 --src-ip fd00::1 -n 1",
                "not of the family"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 --src-port 9-8 -n 1",
                "--src-port '9-8'"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 --src-port 1-10 --flows 11 -n 1",
                "--flows 11 must be 1..10"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 --proto icmp -n 1",
                "--proto 'icmp'"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip fd00::1 --src-ip fd00::2 --proto tcp-syn "
                "--size 70 -n 1",
                "smallest frame of this shape (74 bytes)"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 --size 1600 -n 1", "MTU"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1", "--count or --duration"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1x", "not a number"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1 --rate 0", "--rate"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1 --batch 300", "--batch"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1 --mode turbo",
                "--mode 'turbo'"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1 --latency --rx va",
                "--latency needs --stamp"},
        BadCase{"--dst-mac 02:00:00:00:00:01 --dst-ip 10.0.0.1 -n 1 --cpus 99", "--cpus"}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

}  // namespace
}  // namespace meshpath::testing
