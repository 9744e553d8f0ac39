// The XDP balancer run for real with BPF_PROG_RUN, inside a network namespace of the test's own
// (lb_harness.h) so next hops, MACs and verdicts are known. Each table row: a description, an
// input frame, the interface it arrives on, the expected verdict, the expected whole output
// frame, and the mp_exc counter that must go up. Expected frames are built from scratch by the
// packet builder (checksums included), and forwarded frames' checksums are recomputed too.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "hash.h"
#include "lb_harness.h"
#include "libbpf_logger.h"
#include "malformed_cases.h"
#include "nat.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;

struct LbCase {
  std::string description;
  Bytes input;
  std::string ingress;  // interface the frame arrives on
  uint32_t verdict;
  std::optional<Bytes> output;                       // nullopt: the input, untouched
  std::optional<uint32_t> exception = std::nullopt;  // this mp_exc counter goes up by one
  bool anyOutput = false;  // a drop after the rewrite: the bytes do not matter
};

struct EndpointInfo {
  std::string addr;
  uint16_t port;
  std::string mac;
};

// Service ids, one per (family, protocol), plus special-purpose ones.
constexpr uint32_t kSvcTcp4 = 0, kSvcUdp4 = 1, kSvcTcp6 = 2, kSvcUdp6 = 3;
constexpr uint16_t kTcpPort = 80, kUdpPort = 53;

class XdpLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "BPF tests load programs and create namespaces: run as root";
    static const bool logger = (installLibbpfLogger(), true);
    (void)logger;
    const std::string err = enterTestNetwork();
    ASSERT_EQ(err, "") << "test network namespace";
    h_ = std::make_unique<LbHarness>();
    h_->setNode(kNode4, kNode6);
    addEndpoint(1, kEndpoint1v4, 8080, kEndpoint1Mac, kSvcTcp4);
    addEndpoint(2, kEndpoint2v4, 8080, kEndpoint2Mac, kSvcTcp4);
    addEndpoint(3, kEndpoint1v4, 5353, kEndpoint1Mac, kSvcUdp4);
    addEndpoint(4, kEndpoint2v4, 5353, kEndpoint2Mac, kSvcUdp4);
    addEndpoint(5, kEndpoint1v6, 8080, kEndpoint1Mac, kSvcTcp6);
    addEndpoint(6, kEndpoint2v6, 8080, kEndpoint2Mac, kSvcTcp6);
    addEndpoint(7, kEndpoint1v6, 5353, kEndpoint1Mac, kSvcUdp6);
    addEndpoint(8, kEndpoint2v6, 5353, kEndpoint2Mac, kSvcUdp6);
    h_->setService(kSvcTcp4, kVip4, kTcpPort, kTcp, 13, {1, 2});
    h_->setService(kSvcUdp4, kVip4, kUdpPort, kUdp, 13, {3, 4});
    h_->setService(kSvcTcp6, kVip6, kTcpPort, kTcp, 13, {5, 6});
    h_->setService(kSvcUdp6, kVip6, kUdpPort, kUdp, 13, {7, 8});
  }

  void addEndpoint(uint32_t id, const std::string& addr, uint16_t port, const std::string& mac,
                   uint32_t svc) {
    h_->setEndpoint(id, addr, port, svc);
    endpoints_[id] = {addr, port, mac};
  }

  uint64_t totalExceptions() const {
    uint64_t sum = 0;
    for (uint32_t r = 0; r < MP_EXC_MAX; ++r) sum += h_->exceptions(r);
    return sum;
  }

  void runTable(const std::vector<LbCase>& table) {
    for (const LbCase& c : table) {
      SCOPED_TRACE(c.description);
      const uint64_t before = c.exception ? h_->exceptions(*c.exception) : 0;
      const uint64_t totalBefore = totalExceptions();
      const XdpRun run = h_->run(c.input, ifindexOf(c.ingress));
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
        EXPECT_EQ(h_->exceptions(*c.exception), before + 1)
            << "mp_exc[" << mp_exc_names[*c.exception] << "]";
      }
      EXPECT_EQ(totalExceptions(), totalBefore + (c.exception ? 1 : 0))
          << "no other exception counter moves";
    }
  }

  // A client's flow to a service, its second packet, and the endpoint's reply, all checked
  // whole; then the tables and counters the flow left behind.
  void checkFlow(const Shape& shape, const std::string& client, const std::string& vip,
                 const std::string& node, uint32_t svcId, uint16_t vport) {
    const uint16_t cport = 40000;
    const Bytes first = frame(shape, kRouterMac, kClientIfMac, client, vip, cport, vport);
    const auto choice = h_->predict(first);
    ASSERT_NE(choice.epId, MP_RING_EMPTY);
    const EndpointInfo& ep = endpoints_.at(choice.epId);
    const uint16_t snat = ntohs(choice.snatPort);
    ASSERT_GE(snat, 61000);

    Shape later = shape;
    later.tcpFlags = kTcpAck;
    later.payload = "a later packet of the flow";
    Shape reply = shape;
    reply.tcpFlags = kTcpSyn | kTcpAck;
    reply.payload = "the endpoint answers";
    reply.vlan.reset();
    reply.ipv4Options.clear();
    reply.ipv6Ext.clear();

    runTable({
        {"first packet: to the ring's endpoint, from node:snat_port", first, kClientIf,
         XDP_REDIRECT, frame(shape, kEndpointIfMac, ep.mac, node, ep.addr, snat, ep.port)},
        {"later packet: same endpoint, same SNAT port",
         frame(later, kRouterMac, kClientIfMac, client, vip, cport, vport), kClientIf, XDP_REDIRECT,
         frame(later, kEndpointIfMac, ep.mac, node, ep.addr, snat, ep.port)},
        {"endpoint's reply: back to the client from VIP:port",
         frame(reply, ep.mac, kEndpointIfMac, ep.addr, node, ep.port, snat), kEndpointIf,
         XDP_REDIRECT, frame(reply, kClientIfMac, kClientMac, vip, client, vport, cport)},
    });

    const auto conn = h_->conn(choice.flow);
    ASSERT_TRUE(conn.has_value()) << "mp_conns entry";
    EXPECT_EQ(conn->ep_id, choice.epId);
    EXPECT_EQ(conn->snat_port, choice.snatPort);
    EXPECT_NE(conn->created_ns, 0u);
    mp_flow rkey{};
    const AbiAddr epAddr = abiAddr(ep.addr), nodeAddr = abiAddr(node);
    std::memcpy(rkey.src, epAddr.bytes.data(), 16);
    std::memcpy(rkey.dst, nodeAddr.bytes.data(), 16);
    rkey.sport = htons(ep.port);
    rkey.dport = choice.snatPort;
    rkey.proto = shape.proto;
    rkey.family = epAddr.family;
    const auto rnat = h_->rnat(rkey);
    ASSERT_TRUE(rnat.has_value()) << "mp_rnat entry";
    EXPECT_EQ(rnat->ep_id, choice.epId);
    EXPECT_EQ(rnat->client_port, htons(cport));
    EXPECT_EQ(rnat->vip_port, htons(vport));

    const mp_counters svc = h_->svcStats(svcId), epc = h_->epStats(choice.epId);
    EXPECT_EQ(svc.packets, 3u);
    EXPECT_EQ(svc.new_conns, 1u);
    EXPECT_EQ(epc.packets, 3u);
    EXPECT_EQ(epc.new_conns, 1u);
    EXPECT_GT(svc.bytes, 0u);
    EXPECT_EQ(svc.bytes, epc.bytes);
  }

  std::unique_ptr<LbHarness> h_;
  std::map<uint32_t, EndpointInfo> endpoints_;
};

TEST_F(XdpLbTest, Ipv4TcpFlow) { checkFlow(Shape{}, kClient4, kVip4, kNode4, kSvcTcp4, kTcpPort); }

TEST_F(XdpLbTest, Ipv6TcpFlow) { checkFlow(Shape{}, kClient6, kVip6, kNode6, kSvcTcp6, kTcpPort); }

TEST_F(XdpLbTest, Ipv4UdpFlow) {
  checkFlow(Shape{.proto = kUdp, .payload = "query"}, kClient4, kVip4, kNode4, kSvcUdp4, kUdpPort);
}

TEST_F(XdpLbTest, Ipv6UdpFlow) {
  checkFlow(Shape{.proto = kUdp, .payload = "query"}, kClient6, kVip6, kNode6, kSvcUdp6, kUdpPort);
}

TEST_F(XdpLbTest, Ipv4UdpWithoutChecksumStaysWithout) {
  checkFlow(Shape{.proto = kUdp, .payload = "no checksum", .udpNoChecksum = true}, kClient4, kVip4,
            kNode4, kSvcUdp4, kUdpPort);
}

TEST_F(XdpLbTest, VlanTaggedFlowKeepsItsTag) {
  checkFlow(Shape{.vlan = 42}, kClient4, kVip4, kNode4, kSvcTcp4, kTcpPort);
}

TEST_F(XdpLbTest, Ipv4OptionsAreCarriedThrough) {
  checkFlow(Shape{.ipv4Options = {0x94, 0x04, 0x00, 0x00}}, kClient4, kVip4, kNode4, kSvcTcp4,
            kTcpPort);
}

TEST_F(XdpLbTest, Ipv6AllowedExtensionHeadersAreBalanced) {
  // Hop-by-hop, routing, destination options, destination options: MP_IPV6_EXT_MAX of them.
  static_assert(MP_IPV6_EXT_MAX == 4);
  checkFlow(Shape{.ipv6Ext = {0, 43, 60, 60}}, kClient6, kVip6, kNode6, kSvcTcp6, kTcpPort);
}

TEST_F(XdpLbTest, NotAVipPassesUntouched) {
  const Shape tcp;
  runTable({
      {"IPv4 to another address",
       frame(tcp, kRouterMac, kClientIfMac, kClient4, "10.0.0.200", 40000, 80), kClientIf, XDP_PASS,
       std::nullopt},
      {"IPv4 VIP, other port", frame(tcp, kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 81),
       kClientIf, XDP_PASS, std::nullopt},
      {"IPv4 VIP, TCP port, UDP",
       frame(Shape{.proto = kUdp}, kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 80), kClientIf,
       XDP_PASS, std::nullopt},
      {"IPv6 to another address",
       frame(tcp, kRouterMac, kClientIfMac, kClient6, "fd00::200", 40000, 80), kClientIf, XDP_PASS,
       std::nullopt},
      {"IPv4 to the node, no reverse NAT entry",
       frame(tcp, kEndpoint1Mac, kEndpointIfMac, kEndpoint1v4, kNode4, 8080, 61234), kEndpointIf,
       XDP_PASS, std::nullopt},
      {"IPv6 to the node, no reverse NAT entry",
       frame(tcp, kEndpoint1Mac, kEndpointIfMac, kEndpoint1v6, kNode6, 8080, 61234), kEndpointIf,
       XDP_PASS, std::nullopt},
      {"ICMP to a VIP is the kernel's",
       Packet()
           .eth(kRouterMac, kClientIfMac)
           .ipv4(kClient4, kVip4)
           .ipv4Protocol(1)
           .payload("pingpingping")
           .build(),
       kClientIf, XDP_PASS, std::nullopt},
  });
  EXPECT_EQ(h_->svcStats(kSvcTcp4).packets, 0u);
}

TEST_F(XdpLbTest, MalformedFramesGetTheirVerdictAndCounter) {
  std::vector<LbCase> table;
  for (const MalformedCase& m : malformedCases()) {
    if (m.frame.size() < ETH_HLEN) {
      // BPF_PROG_RUN refuses frames shorter than Ethernet (EINVAL), as drivers never hand
      // them to XDP; the parser's answer to them is checked natively (core_native_test).
      EXPECT_EQ(h_->run(m.frame, ifindexOf(kClientIf)).error, EINVAL) << m.description;
      continue;
    }
    table.push_back({m.description, m.frame, kClientIf,
                     mp_exc_passes(m.reason) ? uint32_t{XDP_PASS} : uint32_t{XDP_DROP},
                     std::nullopt, m.reason});
  }
  runTable(table);
  for (uint32_t svc : {kSvcTcp4, kSvcUdp4, kSvcTcp6, kSvcUdp6}) {
    EXPECT_EQ(h_->svcStats(svc).packets, 0u) << "no malformed frame reached service " << svc;
  }
}

TEST_F(XdpLbTest, NoEndpointDropsAndCounts) {
  h_->setService(10, "10.0.0.110", 80, kTcp, 13, {});
  h_->setEndpoint(20, kEndpoint1v4, 8080, 11, /*inUse=*/false);
  h_->setService(11, "10.0.0.111", 80, kTcp, 13, {20});
  const Shape tcp;
  runTable({
      {"empty ring", frame(tcp, kRouterMac, kClientIfMac, kClient4, "10.0.0.110", 40000, 80),
       kClientIf, XDP_DROP, std::nullopt, MP_EXC_DROP_NO_ENDPOINT},
      {"ring's endpoint not in use",
       frame(tcp, kRouterMac, kClientIfMac, kClient4, "10.0.0.111", 40000, 80), kClientIf, XDP_DROP,
       std::nullopt, MP_EXC_DROP_NO_ENDPOINT},
  });
}

TEST_F(XdpLbTest, NoNodeAddressOfTheFamilyDrops) {
  h_->setNode(kNode4, "");
  runTable({{"IPv6 service without an IPv6 node address",
             frame(Shape{}, kRouterMac, kClientIfMac, kClient6, kVip6, 40000, 80), kClientIf,
             XDP_DROP, std::nullopt, MP_EXC_DROP_NO_NODE_ADDR}});
}

// Next hops other than a redirect to a resolved neighbour: XDP_TX back out of the ingress
// link, the kernel for an unresolved neighbour, a drop without a route.
TEST_F(XdpLbTest, NextHopVerdicts) {
  struct Target {
    std::string vip, endpoint;
  };
  h_->setEndpoint(30, kTxEndpoint4, 8080, 20);
  h_->setService(20, "10.0.0.120", 80, kTcp, 7, {30});
  h_->setEndpoint(31, kNoNeigh4, 8080, 21);
  h_->setService(21, "10.0.0.121", 80, kTcp, 7, {31});
  h_->setEndpoint(32, kNoRoute4, 8080, 22);
  h_->setService(22, "10.0.0.122", 80, kTcp, 7, {32});
  h_->setEndpoint(33, kTxEndpoint6, 8080, 23);
  h_->setService(23, "fd00::120", 80, kTcp, 7, {33});
  h_->setEndpoint(34, kNoNeigh6, 8080, 24);
  h_->setService(24, "fd00::121", 80, kTcp, 7, {34});
  h_->setEndpoint(35, kNoRoute6, 8080, 25);
  h_->setService(25, "fd00::122", 80, kTcp, 7, {35});

  const Shape tcp;
  std::vector<LbCase> table;
  const auto add = [&](const std::string& what, const std::string& client, const std::string& vip,
                       const std::string& node, const std::string& endpoint, uint32_t verdict,
                       std::optional<uint32_t> exception, const std::string& outSrcMac,
                       const std::string& outDstMac, bool anyOutput) {
    const Bytes in = frame(tcp, kRouterMac, kClientIfMac, client, vip, 40001, 80);
    const uint16_t snat = ntohs(h_->predict(in).snatPort);
    table.push_back({what, in, kClientIf, verdict,
                     frame(tcp, outSrcMac, outDstMac, node, endpoint, snat, 8080), exception,
                     anyOutput});
  };
  add("IPv4 endpoint behind the ingress link: XDP_TX", kClient4, "10.0.0.120", kNode4, kTxEndpoint4,
      XDP_TX, std::nullopt, kClientIfMac, kTxEndpointMac, false);
  add("IPv6 endpoint behind the ingress link: XDP_TX", kClient6, "fd00::120", kNode6, kTxEndpoint6,
      XDP_TX, std::nullopt, kClientIfMac, kTxEndpointMac, false);
  // The rewritten frame goes to the kernel, MACs as they came: it resolves the neighbour.
  add("IPv4 neighbour unresolved: the rewritten frame to the kernel", kClient4, "10.0.0.121",
      kNode4, kNoNeigh4, XDP_PASS, MP_EXC_PASS_NO_NEIGH, kRouterMac, kClientIfMac, false);
  add("IPv6 neighbour unresolved: the rewritten frame to the kernel", kClient6, "fd00::121", kNode6,
      kNoNeigh6, XDP_PASS, MP_EXC_PASS_NO_NEIGH, kRouterMac, kClientIfMac, false);
  add("IPv4 no route: dropped", kClient4, "10.0.0.122", kNode4, kNoRoute4, XDP_DROP,
      MP_EXC_DROP_NO_ROUTE, kRouterMac, kClientIfMac, true);
  add("IPv6 no route: dropped", kClient6, "fd00::122", kNode6, kNoRoute6, XDP_DROP,
      MP_EXC_DROP_NO_ROUTE, kRouterMac, kClientIfMac, true);
  runTable(table);
}

TEST_F(XdpLbTest, EstablishedFlowStaysWhenTheRingChanges) {
  const Shape syn, ack{.tcpFlags = kTcpAck, .payload = "data"};
  // Find a client port whose flow moves to the other endpoint once the ring is reversed.
  uint16_t cport = 0;
  uint32_t before = 0;
  for (uint16_t p = 41000; p < 42000 && cport == 0; ++p) {
    const Bytes f = frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, p, 80);
    const uint32_t now = h_->predict(f).epId;
    h_->setService(kSvcTcp4, kVip4, kTcpPort, kTcp, 13, {2, 1});
    const uint32_t after = h_->predict(f).epId;
    h_->setService(kSvcTcp4, kVip4, kTcpPort, kTcp, 13, {1, 2});
    if (now != after) {
      cport = p;
      before = now;
    }
  }
  ASSERT_NE(cport, 0);
  const Bytes first = frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, cport, 80);
  const auto choice = h_->predict(first);
  const EndpointInfo& ep = endpoints_.at(before);
  const uint16_t snat = ntohs(choice.snatPort);
  runTable({{"first packet on the old ring", first, kClientIf, XDP_REDIRECT,
             frame(syn, kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port)}});

  h_->setService(kSvcTcp4, kVip4, kTcpPort, kTcp, 13, {2, 1});  // writes the other half, flips
  ASSERT_NE(h_->predict(first).epId, before) << "a new flow would now go elsewhere";
  runTable({{"established flow keeps its endpoint and port after the flip",
             frame(ack, kRouterMac, kClientIfMac, kClient4, kVip4, cport, 80), kClientIf,
             XDP_REDIRECT, frame(ack, kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port)}});
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 1u);
}

TEST_F(XdpLbTest, FlowForgottenByTheConnTableComesBackTheSame) {
  const Shape ack{.tcpFlags = kTcpAck, .payload = "mid-flow"};
  const Bytes in = frame(ack, kRouterMac, kClientIfMac, kClient4, kVip4, 42424, 80);
  const auto choice = h_->predict(in);
  const EndpointInfo& ep = endpoints_.at(choice.epId);
  const Bytes out =
      frame(ack, kEndpointIfMac, ep.mac, kNode4, ep.addr, ntohs(choice.snatPort), ep.port);
  // A non-SYN packet of a flow never seen is handled as a new flow.
  runTable({{"mid-flow packet, table empty", in, kClientIf, XDP_REDIRECT, out}});
  // The LRU evicts the mp_conns entry but not yet the mp_rnat one: the port is found taken by
  // this same flow and kept.
  ASSERT_EQ(bpf_map_delete_elem(h_->lb().connsFd(), &choice.flow), 0);
  runTable({{"mid-flow packet after mp_conns eviction", in, kClientIf, XDP_REDIRECT, out}});
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 2u);
}

TEST_F(XdpLbTest, SnatPortTakenByAnotherFlowProbesOn) {
  const Shape syn;
  const Bytes in = frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, 43000, 80);
  const auto choice = h_->predict(in);
  const EndpointInfo& ep = endpoints_.at(choice.epId);
  // Someone else holds the first candidate port toward this endpoint.
  mp_flow key{};
  std::memcpy(key.src, abiAddr(ep.addr).bytes.data(), 16);
  std::memcpy(key.dst, abiAddr(kNode4).bytes.data(), 16);
  key.sport = htons(ep.port);
  key.dport = choice.snatPort;
  key.proto = kTcp;
  key.family = MP_AF_INET;
  mp_rnat other{};
  std::memcpy(other.client, abiAddr("10.0.1.77").bytes.data(), 16);
  std::memcpy(other.vip, abiAddr(kVip4).bytes.data(), 16);
  other.client_port = htons(1234);
  other.vip_port = htons(80);
  other.ep_id = choice.epId;
  ASSERT_EQ(bpf_map_update_elem(h_->lb().rnatFd(), &key, &other, BPF_NOEXIST), 0);
  const uint16_t second = ntohs(mp_snat_port(mp_snat_hash(&choice.flow), 1, 61000, 65535));
  runTable({{"second probe's port", in, kClientIf, XDP_REDIRECT,
             frame(syn, kEndpointIfMac, ep.mac, kNode4, ep.addr, second, ep.port)}});

  // With a one-port range every probe of a new flow lands on that port; hold it toward both
  // endpoints.
  const uint16_t only = 61500;
  h_->setNode(kNode4, kNode6, only, only);
  for (uint32_t id : {1u, 2u}) {
    std::memcpy(key.src, abiAddr(endpoints_.at(id).addr).bytes.data(), 16);
    key.dport = htons(only);
    other.ep_id = id;
    ASSERT_EQ(bpf_map_update_elem(h_->lb().rnatFd(), &key, &other, BPF_ANY), 0);
  }
  runTable({{"every probe taken", frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, 43001, 80),
             kClientIf, XDP_DROP, std::nullopt, MP_EXC_DROP_SNAT_EXHAUSTED}});
}

// The program caches next hops toward endpoints (mp_nh_cache); an answer is not used once the
// endpoint id names another address. (The cache is also keyed by ingress device, which only
// policy routing could make matter: this topology cannot show it.)
TEST_F(XdpLbTest, CachedNextHopFollowsTheEndpointAddress) {
  h_->setEndpoint(40, kEndpoint1v4, 8080, 30);
  h_->setService(30, "10.0.0.130", 80, kTcp, 7, {40});
  const Shape syn;
  const auto toEndpoint = [&](uint16_t cport, const std::string& ingress, const std::string& ep,
                              const std::string& epMac, const std::string& srcMac,
                              uint32_t verdict) {
    const std::string inMac = ingress == kClientIf ? kClientIfMac : kEndpointIfMac;
    const Bytes in = frame(syn, kRouterMac, inMac, kClient4, "10.0.0.130", cport, 80);
    const uint16_t snat = ntohs(h_->predict(in).snatPort);
    return LbCase{"client port " + std::to_string(cport) + " via " + ingress + " to " + ep, in,
                  ingress, verdict, frame(syn, srcMac, epMac, kNode4, ep, snat, 8080)};
  };
  runTable(
      {toEndpoint(50001, kClientIf, kEndpoint1v4, kEndpoint1Mac, kEndpointIfMac, XDP_REDIRECT),
       toEndpoint(50002, kClientIf, kEndpoint1v4, kEndpoint1Mac, kEndpointIfMac, XDP_REDIRECT)});
  h_->setEndpoint(40, kEndpoint2v4, 8080, 30);  // the id now names another address
  runTable(
      {toEndpoint(50003, kClientIf, kEndpoint2v4, kEndpoint2Mac, kEndpointIfMac, XDP_REDIRECT),
       // Arriving on the endpoint's own link: out the way it came.
       toEndpoint(50004, kEndpointIf, kEndpoint2v4, kEndpoint2Mac, kEndpointIfMac, XDP_TX),
       toEndpoint(50006, kClientIf, kEndpoint2v4, kEndpoint2Mac, kEndpointIfMac, XDP_REDIRECT)});
}

}  // namespace
}  // namespace meshpath::testing
