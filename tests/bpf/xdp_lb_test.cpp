// The XDP balancer run for real with BPF_PROG_RUN, inside a network namespace of the test's own
// (lb_harness.h) so next hops, MACs and verdicts are known. The tests are tables of packets
// (lb_table.h): each row's verdict, whole output frame and exception counter are checked.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>

#include "conn.h"
#include "hash.h"
#include "lb_harness.h"
#include "lb_table.h"
#include "libbpf_logger.h"
#include "nat.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;

struct EndpointInfo {
  std::string addr;
  uint16_t port;
  std::string mac;
};

using namespace fixture;

class XdpLbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prepareBpfTest(), "");
    build(2000);
  }

  // A fresh balancer (closed TCP connections live tcpClosedMs, the other lifetimes meshd's
  // defaults) with the services below.
  virtual void build(uint64_t tcpClosedMs) {
    h_ = std::make_unique<LbHarness>(4096, tcpClosedMs);
    endpoints_.clear();
    h_->setNode(kNode4, kNode6);
    fixture::install(*h_);
    for (const fixture::Endpoint& e : kEndpoints) endpoints_[e.id] = {e.addr, e.port, e.mac};
  }

  void addEndpoint(uint32_t id, const std::string& addr, uint16_t port, const std::string& mac,
                   uint32_t svc) {
    h_->setEndpoint(id, addr, port, svc);
    endpoints_[id] = {addr, port, mac};
  }

  void runTable(const std::vector<LbCase>& table) { meshpath::testing::runTable(*h_, table); }

  // A client's flow to a service: its first packet, the endpoint's answer (a SYN-ACK to a TCP
  // flow) and the client's next packet, each checked whole; then the tables and counters the
  // flow left behind. The first packet opens it in the half-open tables; the endpoint's answer
  // (UDP) or the client's ACK after it (TCP) moves it to the established ones.
  void checkFlow(const Shape& shape, const std::string& client, const std::string& vip,
                 const std::string& node, uint32_t svcId, uint16_t vport) {
    const uint16_t cport = 40000;
    const Bytes first = frame(shape, kRouterMac, kClientIfMac, client, vip, cport, vport);
    const auto choice = h_->predict(first);
    ASSERT_NE(choice.epId, MP_RING_EMPTY);
    const EndpointInfo& ep = endpoints_.at(choice.epId);
    const uint16_t snat = ntohs(choice.snatPort);
    ASSERT_GE(snat, 61000);
    const bool tcp = shape.proto == kTcp;

    Shape later = shape;
    later.tcpFlags = kTcpAck;
    later.payload = "a later packet of the flow";
    Shape reply = shape;
    reply.tcpFlags = kTcpSyn | kTcpAck;
    reply.payload = "the endpoint answers";
    reply.vlan.reset();
    reply.ipv4Options.clear();
    reply.ipv6Ext.clear();

    mp_flow rkey{};
    const AbiAddr epAddr = abiAddr(ep.addr), nodeAddr = abiAddr(node);
    std::memcpy(rkey.src, epAddr.bytes.data(), 16);
    std::memcpy(rkey.dst, nodeAddr.bytes.data(), 16);
    rkey.sport = htons(ep.port);
    rkey.dport = choice.snatPort;
    rkey.proto = shape.proto;
    rkey.family = epAddr.family;
    const auto expectRestores = [&](const std::optional<mp_rnat>& r, const char* table) {
      ASSERT_TRUE(r.has_value()) << table << " entry";
      EXPECT_EQ(r->ep_id, choice.epId);
      EXPECT_EQ(r->client_port, htons(cport));
      EXPECT_EQ(r->vip_port, htons(vport));
      EXPECT_EQ(std::memcmp(r->client, abiAddr(client).bytes.data(), 16), 0);
      EXPECT_EQ(std::memcmp(r->vip, abiAddr(vip).bytes.data(), 16), 0);
    };

    runTable({{"first packet: to the ring's endpoint, from node:snat_port", first, kClientIf,
               XDP_REDIRECT, frame(shape, kEndpointIfMac, ep.mac, node, ep.addr, snat, ep.port)}});
    const auto half = h_->half(choice.flow);
    ASSERT_TRUE(half.has_value()) << "mp_half entry";
    EXPECT_EQ(half->ep_id, choice.epId);
    EXPECT_EQ(half->snat_port, choice.snatPort);
    EXPECT_EQ(half->flags, tcp ? MP_CONN_F_SYN_SENT : 0u);
    expectRestores(h_->hrnat(rkey), "mp_hrnat");
    EXPECT_FALSE(h_->conn(choice.flow)) << "not established yet";
    EXPECT_FALSE(h_->rnat(rkey));

    runTable({
        {"endpoint's answer: back to the client from VIP:port",
         frame(reply, ep.mac, kEndpointIfMac, ep.addr, node, ep.port, snat), kEndpointIf,
         XDP_REDIRECT, frame(reply, kClientIfMac, kClientMac, vip, client, vport, cport)},
        {"later packet: same endpoint, same SNAT port",
         frame(later, kRouterMac, kClientIfMac, client, vip, cport, vport), kClientIf, XDP_REDIRECT,
         frame(later, kEndpointIfMac, ep.mac, node, ep.addr, snat, ep.port)},
    });

    const auto conn = h_->conn(choice.flow);
    ASSERT_TRUE(conn.has_value()) << "mp_conns entry";
    EXPECT_EQ(conn->ep_id, choice.epId);
    EXPECT_EQ(conn->snat_port, choice.snatPort);
    EXPECT_EQ(conn->flags, tcp ? MP_CONN_F_COUNTED : 0u);
    EXPECT_EQ(conn->snat_addr, 0);
    expectRestores(h_->rnat(rkey), "mp_rnat");
    EXPECT_FALSE(h_->half(choice.flow)) << "promoted: gone from the half-open tables";
    EXPECT_FALSE(h_->hrnat(rkey));
    EXPECT_EQ(h_->health(choice.epId).opened, tcp ? 1u : 0u);

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
  runTable(malformedTable(*h_));
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
  const Shape syn, synAck{.tcpFlags = kTcpSyn | kTcpAck},
      ack{.tcpFlags = kTcpAck, .payload = "data"};
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
  const auto toEp = [&](const std::string& what, const Shape& s) {
    return LbCase{what, frame(s, kRouterMac, kClientIfMac, kClient4, kVip4, cport, 80), kClientIf,
                  XDP_REDIRECT, frame(s, kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port)};
  };
  runTable({{"the old endpoint's SYN-ACK",
             frame(synAck, ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat), kEndpointIf,
             XDP_REDIRECT, frame(synAck, kClientIfMac, kClientMac, kVip4, kClient4, 80, cport)},
            toEp("the half-open flow's ACK keeps its endpoint and port after the flip", ack),
            toEp("established, it keeps them too", ack)});
  ASSERT_TRUE(h_->conn(choice.flow)) << "the ACK promoted it";
  EXPECT_EQ(h_->conn(choice.flow)->ep_id, before);
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 1u);
}

// A flow whose state went (the half-open LRU forgot it, or meshd reaped its expired established
// entries) starts over with any packet, and asks for the same SNAT port: probe 0 is its own hash.
TEST_F(XdpLbTest, FlowWhoseEntryWentComesBackTheSame) {
  const Shape ack{.tcpFlags = kTcpAck, .payload = "mid-flow"};
  const Bytes in = frame(ack, kRouterMac, kClientIfMac, kClient4, kVip4, 42424, 80);
  const auto choice = h_->predict(in);
  const EndpointInfo& ep = endpoints_.at(choice.epId);
  const uint16_t snat = ntohs(choice.snatPort);
  const Bytes out = frame(ack, kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port);
  // A non-SYN packet of a flow never seen is handled as a new flow, half-open.
  runTable({{"mid-flow packet, tables empty", in, kClientIf, XDP_REDIRECT, out}});
  const auto half = h_->half(choice.flow);
  ASSERT_TRUE(half);
  EXPECT_EQ(half->flags, 0u) << "no SYN seen: nothing to time";
  const mp_flow rkey = h_->replyKey(choice.flow, *half);
  // The LRU evicts the mp_half entry but not yet the mp_hrnat one: the port is found held by
  // this same flow and kept.
  h_->erase(h_->lb().halfFd(), choice.flow);
  runTable({{"mid-flow packet after mp_half eviction", in, kClientIf, XDP_REDIRECT, out}});
  ASSERT_TRUE(h_->half(choice.flow));
  EXPECT_EQ(h_->hrnat(rkey)->client_port, htons(42424));

  // Established (the endpoint answers, the client ACKs), then reaped as meshd's recount does an
  // expired entry: both entries deleted, then the generation bumped.
  const Shape synAck{.tcpFlags = kTcpSyn | kTcpAck};
  runTable({{"the endpoint's SYN-ACK",
             frame(synAck, ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat), kEndpointIf,
             XDP_REDIRECT, frame(synAck, kClientIfMac, kClientMac, kVip4, kClient4, 80, 42424)},
            {"the client's ACK promotes it", in, kClientIf, XDP_REDIRECT, out}});
  ASSERT_TRUE(h_->conn(choice.flow));
  ASSERT_TRUE(h_->rnat(rkey));
  h_->erase(h_->lb().connsFd(), choice.flow);
  h_->erase(h_->lb().rnatFd(), rkey);
  h_->lb().bumpForwardingGeneration();
  runTable({{"mid-flow packet after the reap: a new flow, the same port", in, kClientIf,
             XDP_REDIRECT, out}});
  EXPECT_FALSE(h_->conn(choice.flow));
  ASSERT_TRUE(h_->half(choice.flow));
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 3u);
}

// The mp_rnat key of endpoint epId's replies to node:snatPort (host order).
mp_flow rnatKey(const std::string& epAddr, uint16_t epPort, const std::string& node,
                uint16_t snatPort, uint8_t proto) {
  mp_flow key{};
  const AbiAddr ep = abiAddr(epAddr);
  std::memcpy(key.src, ep.bytes.data(), 16);
  std::memcpy(key.dst, abiAddr(node).bytes.data(), 16);
  key.sport = htons(epPort);
  key.dport = htons(snatPort);
  key.proto = proto;
  key.family = ep.family;
  return key;
}

// Another client's (10.0.1.77) connection to kVip4 holding snatPort toward endpoint epId (TCP
// unless told): its reverse entry and, unless forwardEntry is false, its forward entry, in the
// established tables (an open TCP connection, counted) or the half-open ones (a SYN sent), with an
// hour to live, or expired.
struct Holder {
  uint16_t clientPort;
  bool forwardEntry = true;
  bool expired = false;
  bool halfOpen = false;
};
mp_flow holderFlow(uint16_t clientPort, uint8_t proto = kTcp) {
  mp_flow client{};
  std::memcpy(client.src, abiAddr("10.0.1.77").bytes.data(), 16);
  std::memcpy(client.dst, abiAddr(kVip4).bytes.data(), 16);
  client.sport = htons(clientPort);
  client.dport = htons(proto == kTcp ? 80 : 53);
  client.proto = proto;
  client.family = MP_AF_INET;
  return client;
}
void holdPort(LbHarness& h, uint32_t epId, const std::string& epAddr, uint16_t epPort,
              uint16_t snatPort, const Holder& holder, uint8_t proto = kTcp) {
  const mp_flow client = holderFlow(holder.clientPort, proto);
  mp_rnat r{};
  mp_rnat_value(&r, &client, epId);
  const mp_flow key = rnatKey(epAddr, epPort, kNode4, snatPort, proto);
  h.put(holder.halfOpen ? h.lb().hrnatFd() : h.lb().rnatFd(), key, r);
  if (!holder.forwardEntry) return;
  mp_conn c{};
  c.ep_id = epId;
  c.snat_port = htons(snatPort);
  if (proto == kTcp) c.flags = holder.halfOpen ? MP_CONN_F_SYN_SENT : MP_CONN_F_COUNTED;
  const uint64_t now = h.jiffies();
  c.expires = holder.expired ? now : now + h.jiffiesOf(3600 * 1000);
  h.put(holder.halfOpen ? h.lb().halfFd() : h.lb().connsFd(), client, c);
}

TEST_F(XdpLbTest, SnatPortHeldByAnOpenConnectionProbesOn) {
  const Shape syn;
  const Bytes in = frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, 43000, 80);
  const auto choice = h_->predict(in);
  const EndpointInfo& ep = endpoints_.at(choice.epId);
  // An open connection holds the first candidate port toward this endpoint.
  holdPort(*h_, choice.epId, ep.addr, ep.port, ntohs(choice.snatPort), {.clientPort = 1234});
  const uint16_t second = ntohs(mp_snat_port(mp_snat_hash(&choice.flow), 1, 61000, 65535));
  runTable({{"second probe's port", in, kClientIf, XDP_REDIRECT,
             frame(syn, kEndpointIfMac, ep.mac, kNode4, ep.addr, second, ep.port)}});
  EXPECT_EQ(h_->rnat(rnatKey(ep.addr, ep.port, kNode4, ntohs(choice.snatPort), kTcp))->client_port,
            htons(1234))
      << "the holder keeps its port";
  EXPECT_FALSE(h_->hrnat(rnatKey(ep.addr, ep.port, kNode4, ntohs(choice.snatPort), kTcp)))
      << "the probe's reservation of the held port was given back";
  EXPECT_EQ(h_->hrnat(rnatKey(ep.addr, ep.port, kNode4, second, kTcp))->client_port, htons(43000));

  // With a one-port range every probe of a new flow lands on that port; open connections hold
  // it toward both endpoints: every probe, both passes, find it taken.
  const uint16_t only = 61500;
  h_->setNode(kNode4, kNode6, only, only);
  for (uint32_t id : {1u, 2u}) {
    holdPort(*h_, id, endpoints_.at(id).addr, 8080, only,
             {.clientPort = static_cast<uint16_t>(2000 + id)});
  }
  runTable({{"every probe taken", frame(syn, kRouterMac, kClientIfMac, kClient4, kVip4, 43001, 80),
             kClientIf, XDP_DROP, std::nullopt, MP_EXC_DROP_SNAT_EXHAUSTED}});
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 1u);
}

// One endpoint behind a one-port SNAT range: every probe of every new flow lands on that port,
// so a second connection to the endpoint can only have the first one's, once the first one's
// lifetime ran out (or its entry went).
class SnatReuseTest : public XdpLbTest {
 protected:
  static constexpr uint16_t kOnly = 61500;
  static constexpr char kVip[] = "10.0.0.140";
  static constexpr uint32_t kEp = 50, kUdpEp = 51;

  void build(uint64_t tcpClosedMs) override {
    XdpLbTest::build(tcpClosedMs);
    h_->setNode(kNode4, kNode6, kOnly, kOnly);
    addEndpoint(kEp, kEndpoint1v4, 8080, kEndpoint1Mac, 40);
    addEndpoint(kUdpEp, kEndpoint1v4, 5353, kEndpoint1Mac, 41);
    h_->setService(40, kVip, 80, kTcp, 7, {kEp});
    h_->setService(41, kVip, 53, kUdp, 7, {kUdpEp});
  }

  // Each refusal here is a full probe of the one port: the cheap drop path's backoff, which would
  // refuse the next new flow toward the endpoint without looking (xdp_conn_state_test), is
  // cleared after every packet.
  void runTable(const std::vector<LbCase>& table) {
    for (const LbCase& c : table) {
      XdpLbTest::runTable({c});
      for (const auto& [id, ep] : endpoints_) h_->clearSnatBackoff(id);
    }
  }

  static Shape tcp(uint8_t flags) { return Shape{.tcpFlags = flags}; }

  // The client's packet of connection cport, and what the endpoint must get.
  static LbCase toEndpoint(const std::string& what, uint16_t cport, uint8_t flags) {
    return {what, frame(tcp(flags), kRouterMac, kClientIfMac, kClient4, kVip, cport, 80), kClientIf,
            XDP_REDIRECT,
            frame(tcp(flags), kEndpointIfMac, kEndpoint1Mac, kNode4, kEndpoint1v4, kOnly, 8080)};
  }
  // The endpoint's packet to node:kOnly, and what client port cport must get.
  static LbCase toClient(const std::string& what, uint16_t cport, uint8_t flags) {
    return {what,
            frame(tcp(flags), kEndpoint1Mac, kEndpointIfMac, kEndpoint1v4, kNode4, 8080, kOnly),
            kEndpointIf, XDP_REDIRECT,
            frame(tcp(flags), kClientIfMac, kClientMac, kVip, kClient4, 80, cport)};
  }
  static LbCase refused(const std::string& what, uint16_t cport, uint8_t flags = kTcpSyn) {
    return {what,         frame(tcp(flags), kRouterMac, kClientIfMac, kClient4, kVip, cport, 80),
            kClientIf,    XDP_DROP,
            std::nullopt, MP_EXC_DROP_SNAT_EXHAUSTED};
  }
  // The three packets of a handshake through the balancer: SYN, SYN-ACK, ACK.
  static std::vector<LbCase> handshake(uint16_t cport) {
    return {toEndpoint("SYN of " + std::to_string(cport), cport, kTcpSyn),
            toClient("SYN-ACK to " + std::to_string(cport), cport, kTcpSyn | kTcpAck),
            toEndpoint("ACK of " + std::to_string(cport) + " (promotes)", cport, kTcpAck)};
  }

  static mp_flow clientFlow(uint16_t cport, uint8_t proto = kTcp) {
    mp_flow f{};
    std::memcpy(f.src, abiAddr(kClient4).bytes.data(), 16);
    std::memcpy(f.dst, abiAddr(kVip).bytes.data(), 16);
    f.sport = htons(cport);
    f.dport = htons(proto == kTcp ? 80 : 53);
    f.proto = proto;
    f.family = MP_AF_INET;
    return f;
  }
  static mp_flow onlyKey(uint8_t proto = kTcp) {
    return rnatKey(kEndpoint1v4, proto == kTcp ? 8080 : 5353, kNode4, kOnly, proto);
  }
  // Which client port the one SNAT port restores replies to (0: none), from either table.
  uint16_t portOwner(uint8_t proto = kTcp) const {
    const auto r = h_->anyRnat(onlyKey(proto));
    return r ? ntohs(r->client_port) : 0;
  }
};

// A closed connection keeps its port for its tcp_closed lifetime (here 100 ms, in real time), then
// the next connection takes it.
TEST_F(SnatReuseTest, FinBothWaysGivesThePortBackAfterTcpClosed) {
  build(100);
  runTable(handshake(41001));
  runTable({toEndpoint("A finishes", 41001, kTcpFin | kTcpAck)});
  auto a = h_->conn(clientFlow(41001));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->flags, MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT);
  EXPECT_FALSE(mp_conn_flags_closed(a->flags)) << "half-closed is open";
  runTable({refused("B while A is half-closed", 41002)});
  const uint64_t j0 = h_->jiffies();
  runTable({toClient("the endpoint finishes too", 41001, kTcpFin | kTcpAck)});
  const uint64_t j1 = h_->jiffies();
  a = h_->conn(clientFlow(41001));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->flags, MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
  EXPECT_GE(a->expires, j0 + h_->jiffiesOf(100)) << "closed: it lives tcp_closed";
  EXPECT_LE(a->expires, j1 + h_->jiffiesOf(100));
  runTable({toEndpoint("A's last ACK, within tcp_closed", 41001, kTcpAck),
            refused("B within tcp_closed", 41002)});
  EXPECT_EQ(portOwner(), 41001);
  EXPECT_EQ(h_->conn(clientFlow(41001))->expires, a->expires) << "a closed entry is not refreshed";

  while (h_->jiffies() < a->expires) ::usleep(5'000);
  runTable({toEndpoint("B once A expired: A's port", 41002, kTcpSyn),
            toClient("the endpoint answers B", 41002, kTcpSyn | kTcpAck)});
  EXPECT_EQ(portOwner(), 41002);
  EXPECT_FALSE(h_->conn(clientFlow(41001))) << "A's entry goes with its port";
  EXPECT_FALSE(h_->rnat(onlyKey())) << "and its reverse entry";
  ASSERT_TRUE(h_->half(clientFlow(41002)));
  EXPECT_EQ(h_->half(clientFlow(41002))->flags, MP_CONN_F_SYNACK);
  runTable({refused("a stray packet of A: a new flow, and B holds the port", 41001, kTcpAck)});
  EXPECT_EQ(portOwner(), 41002);
  EXPECT_EQ(h_->svcStats(40).new_conns, 2u);
  EXPECT_EQ(h_->health(kEp).opened, 1u) << "B is not counted before its ACK";
  EXPECT_EQ(h_->health(kEp).closed, 1u);
}

TEST_F(SnatReuseTest, RstFromEitherSideClosesHalfOpenOrEstablished) {
  build(0);  // a closed connection's port is free at once
  runTable({toEndpoint("A opens", 41001, kTcpSyn), refused("B while A is half-open", 41002),
            toEndpoint("A resets", 41001, kTcpRst | kTcpAck)});
  const auto a = h_->half(clientFlow(41001));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->flags, MP_CONN_F_SYN_SENT | MP_CONN_F_RST);
  runTable({toEndpoint("B takes A's port", 41002, kTcpSyn),
            toClient("the endpoint resets B", 41002, kTcpRst | kTcpAck)});
  EXPECT_FALSE(h_->half(clientFlow(41001))) << "the expired half-open entry went";
  const auto b = h_->half(clientFlow(41002));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->flags, MP_CONN_F_SYN_SENT | MP_CONN_F_RST);
  runTable(handshake(41003));
  EXPECT_EQ(portOwner(), 41003);
  runTable({refused("D while C is established", 41004),
            toClient("C's endpoint resets it", 41003, kTcpRst | kTcpAck),
            toEndpoint("D takes C's port", 41004, kTcpSyn)});
  EXPECT_EQ(portOwner(), 41004);
  EXPECT_FALSE(h_->conn(clientFlow(41003)));
  EXPECT_FALSE(h_->rnat(onlyKey()));
  const mp_ep_health hl = h_->health(kEp);
  EXPECT_EQ(hl.opened, 1u) << "only C completed a handshake";
  EXPECT_EQ(hl.closed, 1u);
}

TEST_F(SnatReuseTest, OpenConnectionKeepsItsPort) {
  build(0);
  runTable({toEndpoint("A opens", 41001, kTcpSyn),
            toClient("the endpoint accepts", 41001, kTcpSyn | kTcpAck), refused("B", 41002),
            toEndpoint("A sends (promotes)", 41001, kTcpAck | kTcpPsh),
            toClient("the endpoint sends", 41001, kTcpAck | kTcpPsh), refused("B again", 41002),
            toClient("the endpoint finishes first", 41001, kTcpFin | kTcpAck),
            refused("B while A is half-closed", 41003)});
  EXPECT_EQ(portOwner(), 41001);
  EXPECT_EQ(h_->conn(clientFlow(41001))->flags, MP_CONN_F_COUNTED | MP_CONN_F_FIN_EP);
}

// The half-open LRU forgot a flow's forward entry: nothing forwards to its port, which the next
// flow takes over (TCP and UDP alike).
TEST_F(SnatReuseTest, PortOfAHalfOpenFlowTheLruForgotIsTakenOver) {
  runTable({toEndpoint("A opens", 41001, kTcpSyn)});
  h_->erase(h_->lb().halfFd(), clientFlow(41001));
  runTable({toEndpoint("B takes the port of A, whose forward entry is gone", 41002, kTcpSyn)});
  EXPECT_EQ(portOwner(), 41002);

  const Shape udp{.proto = kUdp, .payload = "query"};
  const auto udpTo = [&](uint16_t cport) {
    return frame(udp, kRouterMac, kClientIfMac, kClient4, kVip, cport, 53);
  };
  runTable({{"UDP flow A", udpTo(42001), kClientIf, XDP_REDIRECT,
             frame(udp, kEndpointIfMac, kEndpoint1Mac, kNode4, kEndpoint1v4, kOnly, 5353)},
            {"UDP flow B: A is not answered yet, not expired", udpTo(42002), kClientIf, XDP_DROP,
             std::nullopt, MP_EXC_DROP_SNAT_EXHAUSTED}});
  h_->erase(h_->lb().halfFd(), clientFlow(42001, kUdp));
  runTable({{"UDP flow B once A's forward entry is gone", udpTo(42002), kClientIf, XDP_REDIRECT,
             frame(udp, kEndpointIfMac, kEndpoint1Mac, kNode4, kEndpoint1v4, kOnly, 5353)}});
  EXPECT_EQ(portOwner(kUdp), 42002);
}

TEST_F(SnatReuseTest, PortLeftOverByAFlowThatMovedOnIsTakenItsEntryStays) {
  for (const bool halfOpen : {false, true}) {
    SCOPED_TRACE(halfOpen ? "half-open holder" : "established holder");
    build(2000);
    // The holder's client tuple now goes to endpoint 1 (another service's id will do) from the
    // same port number: this entry toward kEp is a leftover.
    holdPort(*h_, kEp, kEndpoint1v4, 8080, kOnly, {.clientPort = 1000, .halfOpen = halfOpen});
    const mp_flow holder = holderFlow(1000);
    const int table = halfOpen ? h_->lb().halfFd() : h_->lb().connsFd();
    mp_conn moved = *h_->anyConn(holder);
    moved.ep_id = 1;
    h_->put(table, holder, moved);
    runTable({toEndpoint("B takes the leftover port", 41001, kTcpSyn)});
    EXPECT_EQ(portOwner(), 41001);
    const auto kept = h_->anyConn(holder);
    ASSERT_TRUE(kept) << "the moved flow's entry is not the port's to delete";
    EXPECT_EQ(kept->ep_id, 1u);
  }
}

TEST_F(SnatReuseTest, SynOnAClosedEntryReopensIt) {
  build(0);
  runTable({toEndpoint("A opens", 41001, kTcpSyn),
            toEndpoint("A retransmits its SYN: the same connection", 41001, kTcpSyn)});
  EXPECT_EQ(h_->svcStats(40).new_conns, 1u);
  runTable({toClient("the endpoint accepts", 41001, kTcpSyn | kTcpAck),
            toEndpoint("A's ACK (promotes)", 41001, kTcpAck),
            toEndpoint("A finishes", 41001, kTcpFin | kTcpAck),
            toClient("the endpoint finishes", 41001, kTcpFin | kTcpAck)});
  EXPECT_EQ(h_->health(kEp).opened, 1u);
  EXPECT_EQ(h_->health(kEp).closed, 1u);
  const uint64_t j0 = h_->jiffies();
  runTable({toEndpoint("the client opens the same 5-tuple again", 41001, kTcpSyn)});
  const auto a = h_->conn(clientFlow(41001));
  ASSERT_TRUE(a) << "reopened where it was: in the established table";
  EXPECT_EQ(a->flags, MP_CONN_F_SYN_SENT | MP_CONN_F_COUNTED) << "a new connection";
  EXPECT_NE(a->syn_ns, 0u) << "the SYN's time";
  EXPECT_GE(a->expires, j0 + h_->timeouts().jiffies[MP_TMO_TCP_SYN]) << "waiting for a SYN-ACK";
  EXPECT_EQ(h_->svcStats(40).new_conns, 2u);
  EXPECT_EQ(h_->health(kEp).opened, 2u) << "counted open again at once";
  runTable({refused("B: A is open again", 41002)});
}

TEST_F(SnatReuseTest, SynOnAClosedHalfOpenEntryReopensItUncounted) {
  runTable({toEndpoint("A opens", 41001, kTcpSyn),
            toClient("the endpoint refuses", 41001, kTcpRst | kTcpAck),
            toEndpoint("A tries again on the same 5-tuple", 41001, kTcpSyn)});
  const auto a = h_->half(clientFlow(41001));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->flags, MP_CONN_F_SYN_SENT) << "open again, not counted before its handshake";
  EXPECT_FALSE(h_->conn(clientFlow(41001)));
  EXPECT_EQ(h_->svcStats(40).new_conns, 2u);
  EXPECT_EQ(h_->health(kEp).opened, 0u);
  EXPECT_EQ(h_->health(kEp).closed, 0u);
  runTable({refused("B: A is open again", 41002)});
}

TEST_F(SnatReuseTest, FreePortBeforeAnExpiredOneAndOnlyAnExpiredOneTaken) {
  // Four ports; the flow's 16 probes, worked out natively, land on all of them.
  h_->setNode(kNode4, kNode6, 61000, 61003);
  const Bytes in = frame(tcp(kTcpSyn), kRouterMac, kClientIfMac, kClient4, kVip, 43000, 80);
  const mp_flow flow = h_->predict(in).flow;
  const uint32_t hash = mp_snat_hash(&flow);
  std::vector<uint16_t> probes;
  for (uint32_t i = 0; i < MP_SNAT_PROBES; ++i) {
    probes.push_back(ntohs(mp_snat_port(hash, i, 61000, 61003)));
  }
  const uint16_t first = probes[0];
  const auto later =
      std::find_if(probes.begin(), probes.end(), [&](uint16_t p) { return p != first; });
  ASSERT_NE(later, probes.end());
  const auto out = [&](uint16_t port) {
    return frame(tcp(kTcpSyn), kEndpointIfMac, kEndpoint1Mac, kNode4, kEndpoint1v4, port, 8080);
  };
  // The flow's half-open state goes, both entries: the next packet is a new flow again.
  const auto dropFlow = [&](uint16_t port) {
    h_->erase(h_->lb().halfFd(), flow);
    h_->erase(h_->lb().hrnatFd(), rnatKey(kEndpoint1v4, 8080, kNode4, port, kTcp));
  };

  // Probe 0's port is held by an expired connection; another candidate is free.
  holdPort(*h_, kEp, kEndpoint1v4, 8080, first, {.clientPort = 1000, .expired = true});
  runTable({{"a free port first", in, kClientIf, XDP_REDIRECT, out(*later)}});
  EXPECT_TRUE(h_->conn(holderFlow(1000))) << "the expired one was left alone";
  dropFlow(*later);

  // Every port held by open connections but one, whose lifetime ran out: that one is taken over.
  for (const bool halfOpen : {false, true}) {
    SCOPED_TRACE(halfOpen ? "the expired one half-open" : "the expired one established");
    for (uint16_t port = 61000; port <= 61003; ++port) {
      const bool expired = port == *later;
      holdPort(*h_, kEp, kEndpoint1v4, 8080, port,
               {.clientPort = port, .expired = expired, .halfOpen = expired && halfOpen});
    }
    const mp_ep_health before = h_->health(kEp);
    runTable({{"the expired connection's port", in, kClientIf, XDP_REDIRECT, out(*later)}});
    for (uint16_t port = 61000; port <= 61003; ++port) {
      const mp_flow key = rnatKey(kEndpoint1v4, 8080, kNode4, port, kTcp);
      if (port == *later) {
        ASSERT_TRUE(h_->hrnat(key));
        EXPECT_EQ(ntohs(h_->hrnat(key)->client_port), 43000);
        EXPECT_FALSE(h_->rnat(key)) << "the expired connection's reverse entry went";
        EXPECT_FALSE(h_->anyConn(holderFlow(port))) << "and its forward entry";
      } else {
        ASSERT_TRUE(h_->rnat(key));
        EXPECT_EQ(ntohs(h_->rnat(key)->client_port), port);
        EXPECT_TRUE(h_->conn(holderFlow(port)));
      }
    }
    // An established connection that expired open was counted open: its takeover counts the
    // close (a half-open one never was).
    EXPECT_EQ(h_->health(kEp).closed, before.closed + (halfOpen ? 0 : 1));
    dropFlow(*later);
  }
}

TEST_F(SnatReuseTest, Ipv6FinBothWaysGivesThePortBack) {
  build(0);
  addEndpoint(52, kEndpoint1v6, 8080, kEndpoint1Mac, 42);
  h_->setService(42, "fd00::140", 80, kTcp, 7, {52});
  const auto fromClient = [](uint16_t cport, uint8_t flags) {
    return frame(tcp(flags), kRouterMac, kClientIfMac, kClient6, "fd00::140", cport, 80);
  };
  const auto toEp = [](uint8_t flags) {
    return frame(tcp(flags), kEndpointIfMac, kEndpoint1Mac, kNode6, kEndpoint1v6, kOnly, 8080);
  };
  const auto fromEp = [](uint8_t flags) {
    return frame(tcp(flags), kEndpoint1Mac, kEndpointIfMac, kEndpoint1v6, kNode6, 8080, kOnly);
  };
  const auto toClient6 = [](uint16_t cport, uint8_t flags) {
    return frame(tcp(flags), kClientIfMac, kClientMac, "fd00::140", kClient6, 80, cport);
  };
  const std::vector<LbCase> table = {
      {"A opens", fromClient(41001, kTcpSyn), kClientIf, XDP_REDIRECT, toEp(kTcpSyn)},
      {"the endpoint accepts", fromEp(kTcpSyn | kTcpAck), kEndpointIf, XDP_REDIRECT,
       toClient6(41001, kTcpSyn | kTcpAck)},
      {"A's ACK (promotes)", fromClient(41001, kTcpAck), kClientIf, XDP_REDIRECT, toEp(kTcpAck)},
      {"B while A is open", fromClient(41002, kTcpSyn), kClientIf, XDP_DROP, std::nullopt,
       MP_EXC_DROP_SNAT_EXHAUSTED},
      {"A finishes", fromClient(41001, kTcpFin | kTcpAck), kClientIf, XDP_REDIRECT,
       toEp(kTcpFin | kTcpAck)},
      {"the endpoint finishes", fromEp(kTcpFin | kTcpAck), kEndpointIf, XDP_REDIRECT,
       toClient6(41001, kTcpFin | kTcpAck)},
      {"B takes A's port", fromClient(41002, kTcpSyn), kClientIf, XDP_REDIRECT, toEp(kTcpSyn)}};
  runTable(table);
  const auto r = h_->hrnat(rnatKey(kEndpoint1v6, 8080, kNode6, kOnly, kTcp));
  ASSERT_TRUE(r);
  EXPECT_EQ(ntohs(r->client_port), 41002);
  EXPECT_FALSE(h_->rnat(rnatKey(kEndpoint1v6, 8080, kNode6, kOnly, kTcp)));
}

TEST_F(SnatReuseTest, PortBeingClaimedIsNotTaken) {
  build(0);
  for (const bool halfOpen : {false, true}) {
    SCOPED_TRACE(halfOpen ? "in mp_hrnat" : "in mp_rnat");
    holdPort(*h_, kEp, kEndpoint1v4, 8080, kOnly,
             {.clientPort = 1000, .forwardEntry = false, .halfOpen = halfOpen});
    const int table = halfOpen ? h_->lb().hrnatFd() : h_->lb().rnatFd();
    mp_rnat r = *h_->anyRnat(onlyKey());
    r.ep_id = MP_RNAT_CLAIMED;  // another CPU's new flow is taking it over right now
    h_->put(table, onlyKey(), r);
    runTable({refused("a claimed port", 41001)});
    h_->erase(table, onlyKey());
  }
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

// Replies take their next hop from a per-CPU cache keyed by the client's address
// (mp_nh_client): two clients on the client link, each answered in turn (whether or not they
// share a slot), must each get their own MAC, every time.
TEST_F(XdpLbTest, CachedNextHopOfRepliesIsPerClient) {
  const Shape syn;
  Shape reply = syn;
  reply.tcpFlags = kTcpSyn | kTcpAck;
  std::vector<LbCase> opens, replies;
  for (const auto& [client, mac] :
       {std::pair{kClient4, kClientMac}, {kTxEndpoint4, kTxEndpointMac}}) {
    const Bytes in = frame(syn, kRouterMac, kClientIfMac, client, kVip4, 50100, kTcpPort);
    const auto choice = h_->predict(in);
    const EndpointInfo& ep = endpoints_.at(choice.epId);
    const uint16_t snat = ntohs(choice.snatPort);
    opens.push_back({std::string("open from ") + client, in, kClientIf, XDP_REDIRECT,
                     frame(syn, kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port)});
    replies.push_back({std::string("reply to ") + client,
                       frame(reply, ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat),
                       kEndpointIf, XDP_REDIRECT,
                       frame(reply, kClientIfMac, mac, kVip4, client, kTcpPort, 50100)});
  }
  runTable(opens);
  for (int round = 0; round < 3; ++round)
    runTable({replies[0], replies[1], replies[1], replies[0]});
}

// A cached next hop lives about 50 ms (counted in jiffies; the loader gives the program the
// kernel's tick): a neighbour's new MAC is used once it has expired.
TEST_F(XdpLbTest, CachedNextHopExpires) {
  h_->setEndpoint(41, kEndpoint2v4, 8080, 31);
  h_->setService(31, "10.0.0.131", 80, kTcp, 7, {41});
  const Shape syn;
  const auto toEndpoint = [&](uint16_t cport, const std::string& mac) {
    const Bytes in = frame(syn, kRouterMac, kClientIfMac, kClient4, "10.0.0.131", cport, 80);
    const uint16_t snat = ntohs(h_->predict(in).snatPort);
    return LbCase{"client port " + std::to_string(cport) + " to " + mac, in, kClientIf,
                  XDP_REDIRECT, frame(syn, kEndpointIfMac, mac, kNode4, kEndpoint2v4, snat, 8080)};
  };
  const auto neighbour = [](const std::string& mac) {
    const std::string command = std::string("ip neigh replace ") + kEndpoint2v4 + " lladdr " + mac +
                                " dev " + kEndpointIf + " nud permanent";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  };
  runTable({toEndpoint(51001, kEndpoint2Mac)});
  const std::string moved = "02:00:00:00:02:77";
  neighbour(moved);
  ::usleep(150'000);
  runTable({toEndpoint(51002, moved)});
  neighbour(kEndpoint2Mac);
}

}  // namespace
}  // namespace meshpath::testing
