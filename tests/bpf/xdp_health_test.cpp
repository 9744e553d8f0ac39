// Passive health and the new-flow algorithms of the XDP balancer, run for real with BPF_PROG_RUN
// in the tests' network namespace (lb_harness.h): each signal (a RST answering a SYN, an ICMP
// unreachable, a retransmitted SYN; a SYN-ACK, a UDP reply) is sent as the endpoint or the client
// would, and mp_ep_health, mp_events, the connection tables (half-open or established) and mp_rr
// are read back.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "conn.h"
#include "lb_harness.h"
#include "libbpf_logger.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint8_t kTcp = 6;
using namespace fixture;
constexpr uint32_t kSvcAlg = 4;  // beside the shared fixture's services
constexpr char kVipAlg[] = "10.0.0.150";

struct Ep {
  std::string addr;
  uint16_t port;
  std::string mac;
};

class HealthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prepareBpfTest(), "");
    h_ = std::make_unique<LbHarness>(8192, 0);
    h_->setNode(kNode4, kNode6);
    fixture::install(*h_);
    for (const fixture::Endpoint& e : kEndpoints) eps_[e.id] = {e.addr, e.port, e.mac};
    ASSERT_TRUE(h_->takeEvents().empty());
  }

  void addEndpoint(uint32_t id, const std::string& addr, uint16_t port, const std::string& mac,
                   uint32_t svc) {
    h_->setEndpoint(id, addr, port, svc);
    eps_[id] = {addr, port, mac};
  }

  void setFall(uint32_t ep, uint32_t fall, uint32_t fails = 0) {
    mp_ep_health hl = h_->health(ep);
    hl.fall = fall;
    hl.fails = fails;
    h_->setHealth(ep, hl);
  }
  mp_flow key(const Flow& f) const { return h_->predict(fromClient(f, kTcpSyn)).flow; }
  // The flow's entry, established or half-open.
  std::optional<mp_conn> conn(const Flow& f) const { return h_->anyConn(key(f)); }

  // The client's packet goes out to an endpoint; the entry it left (established or half-open).
  mp_conn send(const Flow& f, uint8_t flags = kTcpSyn) {
    const XdpRun run = h_->run(fromClient(f, flags), ifindexOf(kClientIf));
    EXPECT_EQ(run.error, 0);
    EXPECT_STREQ(verdictName(run.verdict), "XDP_REDIRECT");
    const auto c = conn(f);
    EXPECT_TRUE(c.has_value()) << "connection entry";
    return c.value_or(mp_conn{});
  }
  // The handshake through the balancer: SYN, the endpoint's SYN-ACK, the client's ACK, which
  // promotes the connection (counted open). Its established entry.
  mp_conn establish(const Flow& f) {
    const mp_conn c = send(f);
    EXPECT_EQ(reply(f, c, kTcpSyn | kTcpAck), uint32_t{XDP_REDIRECT});
    send(f, kTcpAck);
    const auto e = h_->conn(key(f));
    EXPECT_TRUE(e.has_value()) << "promoted";
    return e.value_or(mp_conn{});
  }

  // What the endpoint of c sends back on the flow, and the verdict it gets.
  uint32_t reply(const Flow& f, const mp_conn& c, uint8_t flags) {
    const Ep& ep = eps_.at(c.ep_id);
    const Bytes in = frame(shapeOf(f, flags), ep.mac, kEndpointIfMac, ep.addr, f.node, ep.port,
                           ntohs(c.snat_port));
    const XdpRun run = h_->run(in, ifindexOf(kEndpointIf));
    EXPECT_EQ(run.error, 0);
    if (run.verdict == XDP_REDIRECT) {
      const Bytes want = frame(shapeOf(f, flags), kClientIfMac, kClientMac, f.vip, f.client,
                               f.vport, f.cport);
      EXPECT_TRUE(run.output == want) << describeMismatch(want, run.output);
    }
    return run.verdict;
  }

  // The packet the balancer sent to c's endpoint (as the endpoint got it), as an ICMP quote.
  Bytes quoteOf(const Flow& f, const mp_conn& c, uint8_t flags = kTcpSyn) const {
    const Ep& ep = eps_.at(c.ep_id);
    const Bytes sent = frame(shapeOf(f, flags), kEndpointIfMac, ep.mac, f.node, ep.addr,
                             ntohs(c.snat_port), ep.port);
    return Bytes(sent.begin() + 14, sent.end());
  }
  // An ICMP error to the node from `from` (the endpoint or a router) quoting `quote`.
  static Bytes icmpTo(const std::string& node, const std::string& from, uint8_t type,
                      uint8_t code, const Bytes& quote, uint32_t rest = 0) {
    Packet p;
    p.eth(kEndpoint1Mac, kEndpointIfMac);
    if (node.find(':') != std::string::npos) {
      p.ipv6(from, node);
    } else {
      p.ipv4(from, node);
    }
    return p.icmp(type, code, rest).payload(quote).build();
  }
  // The ICMP packet passes to the kernel untouched.
  void passes(const Bytes& in, const std::string& what) {
    const XdpRun run = h_->run(in, ifindexOf(kEndpointIf));
    EXPECT_EQ(run.error, 0) << what;
    EXPECT_STREQ(verdictName(run.verdict), "XDP_PASS") << what;
    EXPECT_TRUE(run.output == in) << what;
  }

  // A client port from `from` on whose flow Maglev picks endpoint ep.
  uint16_t portPicking(uint32_t ep, Flow f, uint16_t from = 40000) const {
    for (f.cport = from; f.cport < from + 2000; ++f.cport) {
      if (h_->predict(fromClient(f, kTcpSyn)).epId == ep) return f.cport;
    }
    ADD_FAILURE() << "no client port picks endpoint " << ep;
    return 0;
  }

  std::unique_ptr<LbHarness> h_;
  std::map<uint32_t, Ep> eps_;
};

void expectEvent(const mp_health_event& ev, uint32_t ep, uint8_t kind, uint8_t reason,
                 uint32_t fails) {
  EXPECT_EQ(ev.ep_id, ep);
  EXPECT_EQ(ev.kind, kind);
  EXPECT_EQ(ev.reason, reason);
  EXPECT_EQ(ev.fails, fails);
  EXPECT_NE(ev.ns, 0u);
}

TEST_F(HealthTest, RstAnsweringSynCountsRstOnEstablishedDoesNot) {
  setFall(1, 3);
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  const mp_conn ca = send(a);
  ASSERT_EQ(ca.ep_id, 1u);
  EXPECT_EQ(ca.flags, MP_CONN_F_SYN_SENT) << "half-open: not counted yet";
  EXPECT_STREQ(verdictName(reply(a, ca, kTcpRst | kTcpAck)), "XDP_REDIRECT");
  EXPECT_EQ(h_->health(1).fails, 1u);
  auto events = h_->takeEvents();
  ASSERT_EQ(events.size(), 1u);
  expectEvent(events[0], 1, MP_HEV_SUSPECT, MP_PASSIVE_RST, 1);

  const Flow b = tcp4(portPicking(1, tcp4(0), a.cport + 1));
  const mp_conn cb = send(b);
  reply(b, cb, kTcpSyn | kTcpAck);
  EXPECT_EQ(h_->health(1).fails, 0u) << "the SYN-ACK is a success";
  send(b, kTcpAck);
  reply(b, cb, kTcpRst | kTcpAck);
  EXPECT_EQ(h_->health(1).fails, 0u) << "a RST on an established connection is no failure";
  events = h_->takeEvents();
  ASSERT_EQ(events.size(), 1u);
  expectEvent(events[0], 1, MP_HEV_RECOVERED, MP_PASSIVE_NONE, 0);
  EXPECT_EQ(h_->health(1).flags, 0u);
}

TEST_F(HealthTest, IcmpUnreachableQuotingATranslatedPacketCounts) {
  struct Case {
    std::string what;
    Flow flow;
    uint8_t type, code;
  };
  const Case cases[] = {
      {"IPv4 TCP, port unreachable", tcp4(41001), 3, 3},
      {"IPv4 UDP, host unreachable", udp4(41002), 3, 1},
      {"IPv6 TCP, address unreachable", tcp6(41003), 1, 3},
      {"IPv6 UDP, port unreachable", udp6(41004), 1, 4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const mp_conn conn = send(c.flow);
    setFall(conn.ep_id, 5);
    const Ep& ep = eps_.at(conn.ep_id);
    passes(icmpTo(c.flow.node, ep.addr, c.type, c.code, quoteOf(c.flow, conn)), c.what);
    EXPECT_EQ(h_->health(conn.ep_id).fails, 1u);
    const auto events = h_->takeEvents();
    ASSERT_EQ(events.size(), 1u);
    expectEvent(events[0], conn.ep_id, MP_HEV_SUSPECT, MP_PASSIVE_ICMP_UNREACH, 1);
  }
  // From a router on the way, about a translated packet: its endpoint is unreachable.
  const Flow f = tcp4(41005);
  const mp_conn conn = send(f);
  setFall(conn.ep_id, 5);
  passes(icmpTo(kNode4, "10.0.2.254", 3, 1, quoteOf(f, conn)), "from a router");
  EXPECT_EQ(h_->health(conn.ep_id).fails, 1u);
}

TEST_F(HealthTest, FragNeededPacketTooBigAndOtherIcmpDoNotCount) {
  const Flow f4 = tcp4(41101), f6 = tcp6(41102);
  const mp_conn c4 = send(f4), c6 = send(f6);
  setFall(c4.ep_id, 1);
  setFall(c6.ep_id, 1);
  const Ep &e4 = eps_.at(c4.ep_id), &e6 = eps_.at(c6.ep_id);
  passes(icmpTo(kNode4, e4.addr, 3, 4, quoteOf(f4, c4), 1400), "IPv4 fragmentation needed");
  passes(icmpTo(kNode6, e6.addr, 2, 0, quoteOf(f6, c6), 1280), "ICMPv6 packet too big");
  passes(icmpTo(kNode4, e4.addr, 11, 0, quoteOf(f4, c4)), "IPv4 time exceeded");
  passes(icmpTo(kNode6, e6.addr, 3, 0, quoteOf(f6, c6)), "ICMPv6 time exceeded");
  passes(icmpTo(kNode4, e4.addr, 0, 0, quoteOf(f4, c4)), "IPv4 echo reply");
  EXPECT_EQ(h_->health(c4.ep_id).fails, 0u);
  EXPECT_EQ(h_->health(c6.ep_id).fails, 0u);
  EXPECT_TRUE(h_->takeEvents().empty());
  // The same messages as destination unreachable do count (fall 1: down at once).
  passes(icmpTo(kNode4, e4.addr, 3, 3, quoteOf(f4, c4)), "IPv4 port unreachable");
  EXPECT_EQ(h_->health(c4.ep_id).fails, 1u);
  EXPECT_EQ(h_->health(c4.ep_id).flags, MP_EPH_F_DOWN);
}

TEST_F(HealthTest, MalformedOrForeignIcmpNeitherCountsNorCrashes) {
  const Flow f4 = tcp4(41201), f6 = tcp6(41202);
  const mp_conn c4 = send(f4), c6 = send(f6);
  setFall(c4.ep_id, 10);
  setFall(c6.ep_id, 10);
  const Ep &e4 = eps_.at(c4.ep_id), &e6 = eps_.at(c6.ep_id);
  const Bytes q4 = quoteOf(f4, c4), q6 = quoteOf(f6, c6);

  // Every cut of the ICMP message short of the ports (IP lengths agree with the cut).
  for (const auto& [node, from, type, quote] :
       {std::tuple{std::string(kNode4), e4.addr, uint8_t{3}, q4},
        std::tuple{std::string(kNode6), e6.addr, uint8_t{1}, q6}}) {
    const size_t need = 8 + (node == kNode4 ? 20 : 40) + 4;
    for (size_t keep = 0; keep < need; ++keep) {
      Packet p;
      p.eth(kEndpoint1Mac, kEndpointIfMac);
      if (node == kNode4) {
        p.ipv4(from, node);
      } else {
        p.ipv6(from, node);
      }
      const Bytes in = p.icmp(type, 3).payload(quote).l4Keep(keep).build();
      const XdpRun run = h_->run(in, ifindexOf(kEndpointIf));
      ASSERT_EQ(run.error, 0) << keep;
      // IPv6 with no payload at all is malformed IPv6 (dropped as before); the rest pass.
      if (node == kNode6 && keep == 0) continue;
      EXPECT_STREQ(verdictName(run.verdict), "XDP_PASS") << node << " keeping " << keep;
    }
  }
  // Quotes that are not ours, or make no sense.
  Bytes badVersion = q4, shortIhl = q4, laterFragment = q4, notFromNode = q4, icmpInside = q4,
        v6NotFromNode = q6, v6Fragment = q6;
  badVersion[0] = 0x65;
  shortIhl[0] = 0x44;
  laterFragment[6] = 0x00;
  laterFragment[7] = 0x10;
  notFromNode[15] ^= 1;  // inner saddr
  icmpInside[9] = 1;
  v6NotFromNode[23] ^= 1;  // inner saddr
  v6Fragment[6] = 44;
  const std::pair<std::string, Bytes> bad4[] = {
      {"inner version 6 in IPv4", badVersion}, {"inner IHL 4", shortIhl},
      {"inner later fragment", laterFragment}, {"inner source not the node", notFromNode},
      {"inner protocol ICMP", icmpInside},
  };
  for (const auto& [what, quote] : bad4) passes(icmpTo(kNode4, e4.addr, 3, 3, quote), what);
  passes(icmpTo(kNode6, e6.addr, 1, 4, v6NotFromNode), "IPv6 inner source not the node");
  passes(icmpTo(kNode6, e6.addr, 1, 4, v6Fragment), "IPv6 inner fragment header");
  Flow unknown = f4;
  unknown.cport = 41299;  // never sent: no mp_rnat entry for the quoted tuple
  mp_conn guess = c4;
  guess.snat_port = htons(ntohs(c4.snat_port) == 65535 ? 61000 : ntohs(c4.snat_port) + 1);
  passes(icmpTo(kNode4, e4.addr, 3, 3, quoteOf(unknown, guess)), "a tuple the node never sent");
  passes(icmpTo("10.0.2.77", e4.addr, 3, 3, q4), "to another address than the node's");
  EXPECT_EQ(h_->health(c4.ep_id).fails, 0u);
  EXPECT_EQ(h_->health(c6.ep_id).fails, 0u);
  EXPECT_TRUE(h_->takeEvents().empty());

  // The whole message does count: the cases above were refused for what they lack.
  passes(icmpTo(kNode4, e4.addr, 3, 3, q4), "whole IPv4");
  passes(icmpTo(kNode6, e6.addr, 1, 4, q6), "whole IPv6");
  EXPECT_EQ(h_->health(c4.ep_id).fails, 1u);
  EXPECT_EQ(h_->health(c6.ep_id).fails, 1u);
}

TEST_F(HealthTest, SynRetransmitsMarkDownOnceAndTheFlowMovesToALiveEndpoint) {
  setFall(1, 2);
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  EXPECT_EQ(send(a).ep_id, 1u);
  EXPECT_EQ(send(a).ep_id, 1u) << "first retransmission: suspect, still there";
  EXPECT_EQ(h_->health(1).fails, 1u);
  EXPECT_EQ(h_->health(1).flags, 0u);
  const mp_conn moved = send(a);
  EXPECT_EQ(moved.ep_id, 2u) << "the retransmission that marks it down is re-picked";
  EXPECT_EQ(moved.flags, MP_CONN_F_SYN_SENT);
  EXPECT_TRUE(h_->half(key(a))) << "half-open on its new endpoint";
  const mp_ep_health down = h_->health(1);
  EXPECT_EQ(down.fails, 2u);
  EXPECT_EQ(down.flags, MP_EPH_F_DOWN);
  EXPECT_NE(down.down_ns, 0u);
  EXPECT_EQ(down.opened, 0u) << "a SYN never answered was never counted open";
  EXPECT_EQ(down.closed, 0u) << "so its move counts no close";
  reply(a, moved, kTcpSyn | kTcpAck);
  send(a, kTcpAck);
  EXPECT_EQ(h_->health(2).opened, 1u) << "counted where its handshake completed";

  // More failures of the down endpoint: no second DOWN event.
  const Flow b = tcp4(portPicking(1, tcp4(0), a.cport + 1));
  const mp_conn cb = send(b);
  EXPECT_EQ(cb.ep_id, 2u) << "a new flow skips the down endpoint";
  auto events = h_->takeEvents();
  ASSERT_EQ(events.size(), 2u);
  expectEvent(events[0], 1, MP_HEV_SUSPECT, MP_PASSIVE_SYN_RETRANS, 1);
  expectEvent(events[1], 1, MP_HEV_DOWN, MP_PASSIVE_SYN_RETRANS, 2);
  const Flow c = tcp4(portPicking(1, tcp4(0), b.cport + 1));
  h_->setDown(1, false);
  EXPECT_EQ(send(c).ep_id, 1u);
  h_->setDown(1, true);
  send(c);  // retransmission: fails 3, already down
  EXPECT_EQ(h_->health(1).fails, 3u);
  EXPECT_TRUE(h_->takeEvents().empty()) << "exactly one DOWN event";
  EXPECT_EQ(conn(c)->ep_id, 2u) << "an already-down endpoint's retransmitted SYN moves too";
}

TEST_F(HealthTest, FallOneRaisesSuspectAndDown) {
  setFall(1, 1);
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  const mp_conn ca = send(a);
  const uint64_t gen = h_->lb().forwardingGeneration();
  reply(a, ca, kTcpRst | kTcpAck);
  const auto events = h_->takeEvents();
  ASSERT_EQ(events.size(), 2u);
  expectEvent(events[0], 1, MP_HEV_SUSPECT, MP_PASSIVE_RST, 1);
  expectEvent(events[1], 1, MP_HEV_DOWN, MP_PASSIVE_RST, 1);
  EXPECT_EQ(h_->health(1).flags, MP_EPH_F_DOWN);
  EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 1)
      << "the DOWN crossing hands cached flows back to the tables";
}

TEST_F(HealthTest, SynAckResetsFailsClearsSynSentAndSamplesTheRtt) {
  setFall(1, 5, 3);
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  const mp_conn ca = send(a);
  EXPECT_EQ(ca.flags, MP_CONN_F_SYN_SENT);
  EXPECT_NE(ca.syn_ns, 0u) << "the SYN's time";
  ::usleep(20'000);
  reply(a, ca, kTcpSyn | kTcpAck);
  const mp_ep_health first = h_->health(1);
  EXPECT_EQ(first.fails, 0u);
  EXPECT_GE(first.rtt_ns, 20'000'000u);
  EXPECT_LT(first.rtt_ns, 2'000'000'000u);
  EXPECT_EQ(conn(a)->flags, MP_CONN_F_SYNACK) << "SYN_SENT cleared, the SYN-ACK marked";
  EXPECT_TRUE(h_->half(key(a))) << "half-open until the client's ACK";
  auto events = h_->takeEvents();
  ASSERT_EQ(events.size(), 1u);
  expectEvent(events[0], 1, MP_HEV_RECOVERED, MP_PASSIVE_NONE, 0);

  reply(a, ca, kTcpSyn | kTcpAck);
  EXPECT_EQ(h_->health(1).rtt_ns, first.rtt_ns) << "a retransmitted SYN-ACK is no sample";

  // A second connection answered at once: the average moves 1/8 of the way toward ~0.
  const Flow b = tcp4(portPicking(1, tcp4(0), a.cport + 1));
  reply(b, send(b), kTcpSyn | kTcpAck);
  const uint64_t second = h_->health(1).rtt_ns;
  EXPECT_LT(second, first.rtt_ns - first.rtt_ns / 8 + 5'000'000);
  EXPECT_GE(second, first.rtt_ns - first.rtt_ns / 8);
  EXPECT_TRUE(h_->takeEvents().empty()) << "no failures, no event";
}

TEST_F(HealthTest, UdpReplyIsASuccess) {
  const Flow f = udp4(41301);
  const mp_conn c = send(f);
  EXPECT_EQ(c.flags, 0u) << "UDP is never counted";
  setFall(c.ep_id, 3, 2);
  reply(f, c, 0);
  EXPECT_EQ(h_->health(c.ep_id).fails, 0u);
  EXPECT_TRUE(h_->conn(key(f))) << "answered: established";
  auto events = h_->takeEvents();
  ASSERT_EQ(events.size(), 1u);
  expectEvent(events[0], c.ep_id, MP_HEV_RECOVERED, MP_PASSIVE_NONE, 0);
  reply(f, c, 0);
  EXPECT_TRUE(h_->takeEvents().empty()) << "a success after a success is no event";
  EXPECT_EQ(h_->health(c.ep_id).opened, 0u);
}

TEST_F(HealthTest, FallZeroNeverCounts) {
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  const mp_conn ca = send(a);
  send(a);
  send(a);
  reply(a, ca, kTcpRst | kTcpAck);
  passes(icmpTo(kNode4, kEndpoint1v4, 3, 3, quoteOf(a, ca)), "ICMP unreachable");
  const mp_ep_health hl = h_->health(1);
  EXPECT_EQ(hl.fails, 0u);
  EXPECT_EQ(hl.flags, 0u);
  EXPECT_TRUE(h_->takeEvents().empty());
  EXPECT_EQ(conn(a)->ep_id, 1u) << "nothing moved";
}

TEST_F(HealthTest, NewFlowsSkipADownEndpointAllDownTakesTheFirstPick) {
  h_->setDown(1, true);
  for (uint16_t from = 42000, n = 0; n < 8; ++n) {
    const Flow picks1 = tcp4(portPicking(1, tcp4(0), from));
    const Flow picks2 = tcp4(portPicking(2, tcp4(0), from));
    from = static_cast<uint16_t>(std::max(picks1.cport, picks2.cport) + 1);
    EXPECT_EQ(send(picks1).ep_id, 2u) << "Maglev's pick is down: the next slot's";
    EXPECT_EQ(send(picks2).ep_id, 2u);
  }
  h_->setDown(2, true);
  const Flow picks1 = tcp4(portPicking(1, tcp4(0), 43000));
  const Flow picks2 = tcp4(portPicking(2, tcp4(0), 43000));
  EXPECT_EQ(send(picks1).ep_id, 1u) << "every candidate down: the first pick";
  EXPECT_EQ(send(picks2).ep_id, 2u);
  const Flow established = tcp4(portPicking(1, tcp4(0), 43100));
  const Flow halfOpen = tcp4(portPicking(1, tcp4(0), established.cport + 1));
  h_->setDown(1, false);
  h_->setDown(2, false);
  EXPECT_EQ(establish(established).ep_id, 1u);
  EXPECT_EQ(send(halfOpen).ep_id, 1u);
  h_->setDown(1, true);
  EXPECT_EQ(send(established, kTcpAck).ep_id, 1u) << "established flows never look at health";
  EXPECT_EQ(send(halfOpen, kTcpAck).ep_id, 1u) << "nor do a half-open flow's later packets";
}

// A UDP flow is re-picked once its endpoint is marked down, answered or not (the client's next
// datagram is its retry; a client that keeps its source port must not refresh a flow toward a
// port that answers ICMP unreachable), and each re-pick bumps the generation.
TEST_F(HealthTest, UdpFlowsLeaveADownEndpointAnsweredOrNot) {
  const Flow a = udp4(portPicking(3, udp4(0))), b = udp4(portPicking(3, udp4(0), a.cport + 1));
  EXPECT_EQ(send(a).ep_id, 3u);
  const mp_conn cb = send(b);
  EXPECT_EQ(cb.ep_id, 3u);
  reply(b, cb, 0);
  ASSERT_TRUE(h_->conn(key(b))) << "answered: established";
  h_->setDown(3, true);
  const uint64_t gen = h_->lb().forwardingGeneration();
  const mp_conn moved = send(a);
  EXPECT_EQ(moved.ep_id, 4u) << "unanswered: re-picked onto the live endpoint";
  EXPECT_TRUE(h_->half(key(a))) << "a new flow, half-open";
  EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 1);
  const mp_conn movedAnswered = send(b);
  EXPECT_EQ(movedAnswered.ep_id, 4u) << "answered: re-picked too";
  EXPECT_TRUE(h_->half(key(b))) << "a new flow again, until the live endpoint answers";
  EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 2);
  EXPECT_EQ(h_->svcStats(kSvcUdp4).new_conns, 4u);
}

TEST_F(HealthTest, ReopenOnADownEndpointMovesOtherwiseStays) {
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  mp_conn ca = send(a);
  reply(a, ca, kTcpSyn | kTcpAck);
  send(a, kTcpFin | kTcpAck);  // carries the handshake's ACK: promotes, then half-closes
  EXPECT_TRUE(h_->conn(key(a)));
  reply(a, ca, kTcpFin | kTcpAck);
  EXPECT_EQ(h_->health(1).closed, 1u);
  ca = send(a);
  EXPECT_EQ(ca.ep_id, 1u) << "a reopen stays on a live endpoint";
  EXPECT_EQ(ca.flags, MP_CONN_F_SYN_SENT | MP_CONN_F_COUNTED);
  EXPECT_EQ(h_->health(1).opened, 2u);
  reply(a, ca, kTcpRst | kTcpAck);  // refused: closed (and a failure, fall 0 here)
  h_->setDown(1, true);
  const mp_conn moved = send(a);
  EXPECT_EQ(moved.ep_id, 2u) << "a reopen of a down endpoint's closed entry is re-picked";
  EXPECT_FALSE(h_->conn(key(a))) << "its established entry went";
  EXPECT_TRUE(h_->half(key(a))) << "a new flow, half-open";
  const mp_ep_health h1 = h_->health(1), h2 = h_->health(2);
  EXPECT_EQ(h1.opened, 2u);
  EXPECT_EQ(h1.closed, 2u);
  EXPECT_EQ(h2.opened, 0u) << "counted at its handshake";
  EXPECT_EQ(h2.closed, 0u);
}

TEST_F(HealthTest, OpenedAndClosedAreCountedOnceEach) {
  const Flow a = tcp4(portPicking(1, tcp4(0)));
  const mp_conn ca = send(a);
  send(a);  // a retransmitted SYN is the same connection
  reply(a, ca, kTcpSyn | kTcpAck);
  reply(a, ca, kTcpSyn | kTcpAck);  // a retransmitted SYN-ACK
  EXPECT_EQ(h_->health(1).opened, 0u) << "open once the client's ACK completes the handshake";
  send(a, kTcpAck);
  EXPECT_EQ(h_->health(1).opened, 1u);
  send(a, kTcpAck);
  EXPECT_EQ(h_->health(1).opened, 1u) << "promoted once";
  send(a, kTcpFin | kTcpAck);
  send(a, kTcpFin | kTcpAck);  // retransmitted FIN
  EXPECT_EQ(h_->health(1).closed, 0u) << "half-closed is open";
  reply(a, ca, kTcpFin | kTcpAck);
  reply(a, ca, kTcpFin | kTcpAck);
  reply(a, ca, kTcpRst);
  EXPECT_EQ(h_->health(1).closed, 1u);

  // Half-closed, then reopened: the old connection is counted closed by the reopen.
  const Flow b = tcp4(portPicking(1, tcp4(0), a.cport + 1));
  const mp_conn cb = establish(b);
  reply(b, cb, kTcpFin | kTcpAck);
  send(b);
  EXPECT_EQ(h_->health(1).opened, 3u);
  EXPECT_EQ(h_->health(1).closed, 2u);
  send(b, kTcpRst);
  EXPECT_EQ(h_->health(1).closed, 3u);
  send(b, kTcpRst);
  EXPECT_EQ(h_->health(1).closed, 3u);

  // A first packet that is a RST is born closed: never counted.
  const Flow c = tcp4(portPicking(1, tcp4(0), b.cport + 1));
  EXPECT_EQ(send(c, kTcpRst).flags, MP_CONN_F_RST);
  // A mid-flow packet of a flow the balancer never saw opens a half-open flow, uncounted: its
  // endpoint never saw that SYN either.
  const Flow d = tcp4(portPicking(1, tcp4(0), c.cport + 1));
  EXPECT_EQ(send(d, kTcpAck).flags, 0u);
  send(d, kTcpAck);
  EXPECT_TRUE(h_->half(key(d))) << "no SYN-ACK seen: an ACK does not promote";
  // A half-open connection that closes (the endpoint refuses it) was never open.
  const Flow e = tcp4(portPicking(1, tcp4(0), d.cport + 1));
  reply(e, send(e), kTcpRst | kTcpAck);
  const mp_ep_health hl = h_->health(1);
  EXPECT_EQ(hl.opened, 3u);
  EXPECT_EQ(hl.closed, 3u);
  EXPECT_EQ(h_->health(2).opened, 0u);
}

TEST_F(HealthTest, SnatTakeoverCountsNothingTwice) {
  // One port: a second connection can only have the first one's, once it closed; a closed
  // connection's port is free at once (tcp_closed 0 in this fixture).
  h_->setNode(kNode4, kNode6, 61500, 61500);
  const Flow a = tcp4(portPicking(1, tcp4(0))), b = tcp4(portPicking(1, tcp4(0), a.cport + 1));
  const mp_conn ca = establish(a);
  reply(a, ca, kTcpRst);
  EXPECT_EQ(h_->health(1).closed, 1u);
  const mp_conn cb = send(b);
  EXPECT_EQ(cb.snat_port, ca.snat_port) << "taken over";
  EXPECT_FALSE(conn(a)) << "the closed connection's entry went";
  mp_ep_health hl = h_->health(1);
  EXPECT_EQ(hl.opened, 1u);
  EXPECT_EQ(hl.closed, 1u) << "its close was counted by the RST, not again by the takeover";
  reply(b, cb, kTcpSyn | kTcpAck);
  send(b, kTcpAck);
  hl = h_->health(1);
  EXPECT_EQ(hl.opened, 2u);
  EXPECT_EQ(hl.closed, 1u);
}

// ---- Algorithms -------------------------------------------------------------------------

class AlgorithmTest : public HealthTest {
 protected:
  // Service kSvcAlg on kVipAlg:80 over endpoints 11 (endpoint 1's address) and 12, ring as
  // given (its size is the sequence's).
  void service(uint8_t algorithm, const std::vector<uint32_t>& ring) {
    addEndpoint(11, kEndpoint1v4, 8080, kEndpoint1Mac, kSvcAlg);
    addEndpoint(12, kEndpoint2v4, 8080, kEndpoint2Mac, kSvcAlg);
    h_->setService(kSvcAlg, kVipAlg, 80, kTcp, static_cast<uint32_t>(ring.size()), ring,
                   algorithm);
  }
  // n new flows (client ports from `from`); how many went to endpoint 11.
  size_t flowsTo11(size_t n, uint16_t from) {
    size_t count = 0;
    for (size_t i = 0; i < n; ++i) {
      count += send(tcp4(static_cast<uint16_t>(from + i), kVipAlg)).ep_id == 11;
    }
    return count;
  }
  void setActive(uint32_t ep, uint64_t opened, int64_t adjust) {
    mp_ep_health hl = h_->health(ep);
    hl.opened = opened;
    hl.closed = 0;
    hl.adjust = adjust;
    h_->setHealth(ep, hl);
  }
  void setRtt(uint32_t ep, uint64_t rtt) {
    mp_ep_health hl = h_->health(ep);
    hl.rtt_ns = rtt;
    h_->setHealth(ep, hl);
  }
};

// Binomial(n, p): the count stays within 5 standard deviations but for a chance below 1e-6.
void expectBinomial(size_t count, size_t n, double p, const std::string& what) {
  const double mean = static_cast<double>(n) * p;
  const double tolerance = 5 * std::sqrt(static_cast<double>(n) * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(count), mean, tolerance) << what;
}

TEST_F(AlgorithmTest, RandomSpreadsByWeightAndForgetsTheTuple) {
  service(MP_ALG_RANDOM, {11, 11, 11, 12});
  // 3 of 4 slots: 2000 flows, mean 1500, sigma 19.4; Maglev would hash as well, so the
  // same 5-tuple is asked again below.
  expectBinomial(flowsTo11(2000, 20000), 2000, 0.75, "endpoint 11's share of 2000 new flows");
  const Flow same = tcp4(30000, kVipAlg);
  std::set<uint32_t> seen;
  for (int i = 0; i < 64; ++i) {
    seen.insert(send(same).ep_id);
    const mp_flow k = key(same);
    ASSERT_EQ(bpf_map_delete_elem(h_->lb().halfFd(), &k), 0);  // the half-open LRU forgets it
  }
  // Both: 0.75^64 + 0.25^64 < 1e-7 to fail by chance.
  EXPECT_EQ(seen.size(), 2u) << "one 5-tuple, forgotten 64 times, lands on both endpoints";
}

TEST_F(AlgorithmTest, RoundRobinCyclesThroughTheRingSequence) {
  const CpuPin pin;  // mp_rr is per CPU: stay on one for the sequence to be this CPU's
  const std::vector<uint32_t> ring = {11, 12, 12, 11, 12};
  service(MP_ALG_ROUND_ROBIN, ring);
  for (size_t i = 0; i < 3 * ring.size(); ++i) {
    EXPECT_EQ(send(tcp4(static_cast<uint16_t>(21000 + i), kVipAlg)).ep_id, ring[i % ring.size()])
        << "flow " << i;
  }
  EXPECT_EQ(h_->rrCounters(kSvcAlg).at(static_cast<size_t>(pin.cpu())), 3 * ring.size());
}

TEST_F(AlgorithmTest, LeastConnPicksFewerActiveConnections) {
  service(MP_ALG_LEAST_CONN, {11, 12});
  setActive(11, 1000, 0);
  setActive(12, 0, 0);
  // Two random slots of two: both are 11 a quarter of the time (then 11 it is); otherwise 12.
  // 400 flows: 11 gets Binomial(400, 1/4), mean 100, sigma 8.7 (random choice: 200).
  expectBinomial(flowsTo11(400, 22000), 400, 0.25, "11 has 1000 active, 12 none");
  // meshd's adjust counts: 11 is now the emptier one.
  setActive(11, 1000, -2000);
  expectBinomial(flowsTo11(400, 23000), 400, 0.75, "11 adjusted to -1000 active");
  // A down candidate loses to a live one; both down (both slots 12) skip to the next slot.
  setActive(11, 1000, 0);
  h_->setDown(12, true);
  EXPECT_EQ(flowsTo11(50, 24000), 50u) << "12 has fewer but is down";
}

TEST_F(AlgorithmTest, LeastLatencyPicksTheLowerRttAndSamplesUnmeasured) {
  service(MP_ALG_LEAST_LATENCY, {11, 12});
  setRtt(11, 5'000'000);
  setRtt(12, 1'000'000);
  expectBinomial(flowsTo11(400, 25000), 400, 0.25, "11 slower");
  setRtt(12, 0);
  setRtt(11, 1'000);
  expectBinomial(flowsTo11(400, 26000), 400, 0.25, "12 not measured yet: it is tried");
  setRtt(11, 0);
  setRtt(12, 1'000);
  expectBinomial(flowsTo11(400, 27000), 400, 0.75, "11 not measured yet");
}

TEST_F(AlgorithmTest, UnknownAlgorithmIsMaglev) {
  service(200, {11, 12, 11, 12, 11, 12, 12});
  for (uint16_t port = 28000; port < 28040; ++port) {
    const Flow f = tcp4(port, kVipAlg);
    EXPECT_EQ(send(f).ep_id, h_->predict(fromClient(f, kTcpSyn)).epId) << port;
  }
}

}  // namespace
}  // namespace meshpath::testing
