// Connection state of the XDP balancer (bpf/conn.h, xdp_lb.bpf.c), run for real with
// BPF_PROG_RUN in the tests' network namespace (lb_harness.h): a new flow opens in the half-open
// tables (mp_half, mp_hrnat, LRUs), its handshake (TCP: the client's ACK after the endpoint's
// SYN-ACK) or its first answer (UDP) moves it to the established ones (mp_conns, mp_rnat, never
// evicted); each state lives by its service's lifetime, after which its SNAT port is free at
// once; a full established table, a flood of half-open flows, an exhausted SNAT range and a pool
// of SNAT sources. Every packet's verdict, whole output frame and exception counter are checked
// (lb_table.h), and the tables' contents after it.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "conn.h"
#include "lb_harness.h"
#include "lb_table.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;
using namespace fixture;

// Beside the shared fixture's services: one endpoint per protocol and family, for tests that
// give the node a one-port SNAT range (every probe of every new flow toward the endpoint then
// lands on that port).
constexpr char kVipOne4[] = "10.0.0.160";
constexpr char kVipOne6[] = "fd00::160";
constexpr uint32_t kSvcOneTcp4 = 40, kSvcOneUdp4 = 41, kSvcOneTcp6 = 42;
constexpr uint32_t kEpOneTcp4 = 50, kEpOneUdp4 = 51, kEpOneTcp6 = 52;
constexpr uint16_t kOnly = 61500;

struct Ep {
  std::string addr;
  uint16_t port;
  std::string mac;
};

const auto entriesOf = &LbHarness::entriesOf;

class ConnStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prepareBpfTest(), "");
    pin_ = std::make_unique<CpuPin>();  // the SNAT backoff and the flow cache are per CPU
  }

  // A fresh balancer (4096-entry tables unless told), the shared services and the one-port
  // services' endpoints; the node's SNAT range is the default unless a test narrows it.
  void build(LbSkeletonOptions options = small()) {
    h_ = std::make_unique<LbHarness>(options);
    h_->setNode(kNode4, kNode6);
    fixture::install(*h_);
    eps_.clear();
    for (const fixture::Endpoint& e : kEndpoints) eps_[e.id] = {e.addr, e.port, e.mac};
    addEndpoint(kEpOneTcp4, kEndpoint1v4, 8080, kEndpoint1Mac, kSvcOneTcp4);
    addEndpoint(kEpOneUdp4, kEndpoint1v4, 5353, kEndpoint1Mac, kSvcOneUdp4);
    addEndpoint(kEpOneTcp6, kEndpoint1v6, 8080, kEndpoint1Mac, kSvcOneTcp6);
    h_->setService(kSvcOneTcp4, kVipOne4, kTcpPort, IPPROTO_TCP, 7, {kEpOneTcp4});
    h_->setService(kSvcOneUdp4, kVipOne4, kUdpPort, IPPROTO_UDP, 7, {kEpOneUdp4});
    h_->setService(kSvcOneTcp6, kVipOne6, kTcpPort, IPPROTO_TCP, 7, {kEpOneTcp6});
  }
  static LbSkeletonOptions small() {
    LbSkeletonOptions o;
    o.connTableSize = 4096;
    o.halfTableSize = 4096;
    return o;
  }
  void addEndpoint(uint32_t id, const std::string& addr, uint16_t port, const std::string& mac,
                   uint32_t svc) {
    h_->setEndpoint(id, addr, port, svc);
    eps_[id] = {addr, port, mac};
  }
  void oneSnatPort() { h_->setNode(kNode4, kNode6, kOnly, kOnly); }

  static Flow oneTcp4(uint16_t cport) { return tcp4(cport, kVipOne4); }
  // A TCP flow to the shared IPv4 service whose pick is endpoint 2 (10.0.2.12:8080): SNAT ports
  // are held per endpoint address and port, and the one-port services' endpoints share
  // endpoint 1's (10.0.2.11).
  Flow tcp4ToEndpoint2(uint16_t from) const {
    for (uint16_t cport = from; cport < from + 1000; ++cport) {
      if (h_->predict(fromClient(tcp4(cport), kTcpSyn)).epId == 2) return tcp4(cport);
    }
    ADD_FAILURE() << "no client port picks endpoint 2";
    return tcp4(from);
  }
  static Flow oneUdp4(uint16_t cport) {
    Flow f = udp4(cport);
    f.vip = kVipOne4;
    return f;
  }
  static Flow oneTcp6(uint16_t cport) {
    Flow f = tcp6(cport);
    f.vip = kVipOne6;
    return f;
  }

  // Where a new flow goes: Maglev's endpoint, the first probe's port (host order) and source.
  struct Pick {
    mp_flow flow;
    uint32_t ep;
    uint16_t snat;
    std::string node;
  };
  Pick pick(const Flow& f) const {
    const LbHarness::Choice c = h_->predict(fromClient(f, kTcpSyn));
    EXPECT_NE(c.epId, MP_RING_EMPTY);
    const uint8_t family = f.vip.find(':') != std::string::npos ? MP_AF_INET6 : MP_AF_INET;
    return {c.flow, c.epId, ntohs(c.snatPort), h_->nodeAddr(family, c.snatAddr)};
  }

  // The client's packet, as endpoint ep gets it from node:snat.
  LbCase out(const std::string& what, const Flow& f, uint8_t flags, uint32_t ep, uint16_t snat,
             const std::string& node) const {
    const Ep& e = eps_.at(ep);
    return {what, fromClient(f, flags), kClientIf, XDP_REDIRECT,
            frame(shapeOf(f, flags), kEndpointIfMac, e.mac, node, e.addr, snat, e.port)};
  }
  LbCase out(const std::string& what, const Flow& f, uint8_t flags, const Pick& p) const {
    return out(what, f, flags, p.ep, p.snat, p.node);
  }
  // Endpoint ep's packet to node:snat, as the client gets it from VIP:port.
  LbCase back(const std::string& what, const Flow& f, uint8_t flags, uint32_t ep, uint16_t snat,
              const std::string& node) const {
    const Ep& e = eps_.at(ep);
    const Shape s = shapeOf(f, flags);
    return {what, frame(s, e.mac, kEndpointIfMac, e.addr, node, e.port, snat), kEndpointIf,
            XDP_REDIRECT, frame(s, kClientIfMac, kClientMac, f.vip, f.client, f.vport, f.cport)};
  }
  LbCase back(const std::string& what, const Flow& f, uint8_t flags, const Pick& p) const {
    return back(what, f, flags, p.ep, p.snat, p.node);
  }
  // The client's packet dropped untouched, counted under reason.
  static LbCase dropped(const std::string& what, const Flow& f, uint8_t flags, uint32_t reason) {
    return {what, fromClient(f, flags), kClientIf, XDP_DROP, std::nullopt, reason};
  }
  // A TCP flow's handshake through the balancer, or a UDP flow's query and answer.
  std::vector<LbCase> establish(const Flow& f, const Pick& p) const {
    if (f.proto == IPPROTO_UDP) {
      return {out("query", f, 0, p), back("the endpoint's answer (promotes)", f, 0, p)};
    }
    return {out("SYN", f, kTcpSyn, p), back("SYN-ACK", f, kTcpSyn | kTcpAck, p),
            out("the client's ACK (promotes)", f, kTcpAck, p)};
  }

  // The reverse key of pick p: endpoint -> node:snat.
  mp_flow rkey(const Flow& f, const Pick& p) const {
    const Ep& e = eps_.at(p.ep);
    mp_flow k{};
    const AbiAddr ep = abiAddr(e.addr);
    std::memcpy(k.src, ep.bytes.data(), 16);
    std::memcpy(k.dst, abiAddr(p.node).bytes.data(), 16);
    k.sport = htons(e.port);
    k.dport = htons(p.snat);
    k.proto = f.proto;
    k.family = ep.family;
    return k;
  }

  void run(const std::vector<LbCase>& rows) { runTable(*h_, rows); }

  // The jiffies around a step: an expiry written during it lies in [before + tmo, after + tmo].
  struct Window {
    uint64_t before, after;
  };
  template <class Fn>
  Window during(Fn&& fn) {
    Window w{h_->jiffies(), 0};
    fn();
    w.after = h_->jiffies();
    return w;
  }
  void expectExpiry(const mp_conn& c, const Window& w, uint32_t tmo, const std::string& what) {
    const uint64_t life = h_->timeouts().jiffies[tmo];
    EXPECT_GE(c.expires, w.before + life) << what << ": lifetime " << tmo;
    EXPECT_LE(c.expires, w.after + life) << what << ": lifetime " << tmo;
  }

  // No endpoint saw a passive failure: the balancer's own drops are not the endpoints' fault.
  void expectNoPassiveFailures() {
    for (const auto& [id, e] : eps_) {
      const mp_ep_health hl = h_->health(id);
      EXPECT_EQ(hl.fails, 0u) << "endpoint " << id;
      EXPECT_EQ(hl.flags, 0u) << "endpoint " << id;
    }
    EXPECT_TRUE(h_->takeEvents().empty());
  }
  void setFallEverywhere(uint32_t fall) {
    for (const auto& [id, e] : eps_) {
      mp_ep_health hl = h_->health(id);
      hl.fall = fall;
      h_->setHealth(id, hl);
    }
  }

  std::unique_ptr<CpuPin> pin_;
  std::unique_ptr<LbHarness> h_;
  std::map<uint32_t, Ep> eps_;
};

// ---- Half-open, then established ------------------------------------------------------------

TEST_F(ConnStateTest, SynOpensAHalfOpenEntryOnly) {
  build();
  for (const Flow& f : {tcp4(40001), tcp6(40001)}) {
    SCOPED_TRACE(f.client);
    const Pick p = pick(f);
    const Window w = during([&] { run({out("SYN", f, kTcpSyn, p)}); });
    const auto half = h_->half(p.flow);
    ASSERT_TRUE(half) << "mp_half entry";
    EXPECT_EQ(half->ep_id, p.ep);
    EXPECT_EQ(half->snat_port, htons(p.snat));
    EXPECT_EQ(half->flags, MP_CONN_F_SYN_SENT);
    EXPECT_NE(half->syn_ns, 0u) << "the SYN's time, for the SYN-ACK's sample";
    EXPECT_EQ(half->snat_addr, 0);
    expectExpiry(*half, w, MP_TMO_TCP_SYN, "half-open SYN");
    const auto r = h_->hrnat(rkey(f, p));
    ASSERT_TRUE(r) << "mp_hrnat entry";
    EXPECT_EQ(r->ep_id, p.ep);
    EXPECT_EQ(r->client_port, htons(f.cport));
    EXPECT_EQ(r->vip_port, htons(f.vport));
    EXPECT_EQ(std::memcmp(r->client, abiAddr(f.client).bytes.data(), 16), 0);
    EXPECT_EQ(std::memcmp(r->vip, abiAddr(f.vip).bytes.data(), 16), 0);
    EXPECT_FALSE(h_->conn(p.flow)) << "nothing established";
    EXPECT_FALSE(h_->rnat(rkey(f, p)));
    EXPECT_EQ(h_->health(p.ep).opened, 0u);
  }
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 0u);
  EXPECT_EQ(entriesOf(h_->lb().rnatFd()), 0u);
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, 1u);
  EXPECT_EQ(h_->svcStats(kSvcTcp6).new_conns, 1u);
}

TEST_F(ConnStateTest, SynAckMarksTheHalfOpenEntry) {
  build();
  for (const Flow& f : {tcp4(40002), tcp6(40002)}) {
    SCOPED_TRACE(f.client);
    const Pick p = pick(f);
    run({out("SYN", f, kTcpSyn, p), back("SYN-ACK", f, kTcpSyn | kTcpAck, p)});
    auto half = h_->half(p.flow);
    ASSERT_TRUE(half);
    EXPECT_EQ(half->flags, MP_CONN_F_SYNACK) << "SYN_SENT cleared, SYNACK set";
    EXPECT_NE(h_->health(p.ep).rtt_ns, 0u) << "the SYN -> SYN-ACK time sampled";
    run({back("the SYN-ACK again", f, kTcpSyn | kTcpAck, p)});
    half = h_->half(p.flow);
    ASSERT_TRUE(half);
    EXPECT_EQ(half->flags, MP_CONN_F_SYNACK);
    EXPECT_TRUE(h_->hrnat(rkey(f, p)));
    EXPECT_FALSE(h_->conn(p.flow)) << "the endpoint's answer alone does not promote TCP";
    EXPECT_EQ(h_->health(p.ep).opened, 0u);
  }
}

TEST_F(ConnStateTest, ClientsAckAfterTheSynAckPromotesOnce) {
  build();
  for (const Flow& f : {tcp4(40003), tcp6(40003)}) {
    SCOPED_TRACE(f.client);
    const Pick p = pick(f);
    run({out("SYN", f, kTcpSyn, p), back("SYN-ACK", f, kTcpSyn | kTcpAck, p)});
    const Window w = during([&] { run({out("the client's ACK", f, kTcpAck, p)}); });
    const auto c = h_->conn(p.flow);
    ASSERT_TRUE(c) << "moved to mp_conns";
    EXPECT_EQ(c->ep_id, p.ep);
    EXPECT_EQ(c->snat_port, htons(p.snat));
    EXPECT_EQ(c->flags, MP_CONN_F_COUNTED) << "counted open; SYNACK is the half-open table's";
    EXPECT_EQ(c->snat_addr, 0);
    expectExpiry(*c, w, MP_TMO_TCP_EST, "established");
    const auto r = h_->rnat(rkey(f, p));
    ASSERT_TRUE(r) << "moved to mp_rnat";
    EXPECT_EQ(r->ep_id, p.ep);
    EXPECT_EQ(r->client_port, htons(f.cport));
    EXPECT_FALSE(h_->half(p.flow)) << "gone from mp_half";
    EXPECT_FALSE(h_->hrnat(rkey(f, p))) << "gone from mp_hrnat";
    EXPECT_EQ(h_->health(p.ep).opened, 1u);

    run({out("the ACK again", f, kTcpAck, p), out("data", f, kTcpAck | kTcpPsh, p),
         back("the endpoint's data", f, kTcpAck | kTcpPsh, p)});
    EXPECT_EQ(h_->health(p.ep).opened, 1u) << "opened once";
    EXPECT_EQ(h_->conn(p.flow)->flags, MP_CONN_F_COUNTED);
    EXPECT_FALSE(h_->half(p.flow));
    EXPECT_EQ(h_->health(p.ep).closed, 0u);
  }
  EXPECT_EQ(entriesOf(h_->lb().halfFd()), 0u);
  EXPECT_EQ(entriesOf(h_->lb().hrnatFd()), 0u);
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 2u);
  EXPECT_EQ(entriesOf(h_->lb().rnatFd()), 2u);
}

// Only the client's ACK (no SYN, no RST) after the endpoint's SYN-ACK promotes.
TEST_F(ConnStateTest, NoPromotionWithoutTheSynAckOrWithoutAnAck) {
  build();
  const Flow a = tcp4(40010), b = tcp4(40011), c = tcp6(40012);
  const Pick pa = pick(a), pb = pick(b), pc = pick(c);
  run({out("A: SYN", a, kTcpSyn, pa), out("A: an ACK before any SYN-ACK", a, kTcpAck, pa),
       out("A: data before any SYN-ACK", a, kTcpAck | kTcpPsh, pa)});
  ASSERT_TRUE(h_->half(pa.flow));
  EXPECT_EQ(h_->half(pa.flow)->flags, MP_CONN_F_SYN_SENT);
  EXPECT_FALSE(h_->conn(pa.flow));

  run({out("B: SYN", b, kTcpSyn, pb), back("B: SYN-ACK", b, kTcpSyn | kTcpAck, pb),
       out("B: the SYN again", b, kTcpSyn, pb),
       out("B: the client resets instead", b, kTcpRst | kTcpAck, pb)});
  ASSERT_TRUE(h_->half(pb.flow));
  EXPECT_EQ(h_->half(pb.flow)->flags, MP_CONN_F_SYNACK | MP_CONN_F_RST);
  EXPECT_FALSE(h_->conn(pb.flow));

  run({out("C: SYN", c, kTcpSyn, pc), back("C: SYN-ACK", c, kTcpSyn | kTcpAck, pc),
       out("C: a FIN without ACK", c, kTcpFin, pc)});
  ASSERT_TRUE(h_->half(pc.flow));
  EXPECT_FALSE(h_->conn(pc.flow));
  run({out("C: FIN+ACK (carries the handshake's ACK)", c, kTcpFin | kTcpAck, pc)});
  ASSERT_TRUE(h_->conn(pc.flow)) << "promoted, half-closed";
  EXPECT_EQ(h_->conn(pc.flow)->flags, MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT);

  uint64_t opened = 0;
  for (const auto& [id, ep] : eps_) opened += h_->health(id).opened;
  EXPECT_EQ(opened, 1u) << "only C was counted open";
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 1u);
}

TEST_F(ConnStateTest, UdpIsPromotedByTheFirstReply) {
  build();
  for (const Flow& f : {udp4(40020), udp6(40020)}) {
    SCOPED_TRACE(f.client);
    const Pick p = pick(f);
    const Window w = during([&] { run({out("query", f, 0, p)}); });
    auto half = h_->half(p.flow);
    ASSERT_TRUE(half);
    EXPECT_EQ(half->flags, 0u);
    expectExpiry(*half, w, MP_TMO_UDP, "not answered");
    run({out("another query, unanswered", f, 0, p)});
    EXPECT_TRUE(h_->half(p.flow));
    EXPECT_FALSE(h_->conn(p.flow));

    const Window w2 = during([&] { run({back("the endpoint's answer", f, 0, p)}); });
    const auto c = h_->conn(p.flow);
    ASSERT_TRUE(c) << "promoted by the answer";
    EXPECT_EQ(c->flags, 0u) << "UDP is never counted";
    EXPECT_EQ(c->ep_id, p.ep);
    EXPECT_EQ(c->snat_port, htons(p.snat));
    expectExpiry(*c, w2, MP_TMO_UDP_REPLIED, "answered");
    EXPECT_TRUE(h_->rnat(rkey(f, p)));
    EXPECT_FALSE(h_->half(p.flow));
    EXPECT_FALSE(h_->hrnat(rkey(f, p)));
    run({back("a second answer", f, 0, p), out("the client again", f, 0, p)});
    EXPECT_TRUE(h_->conn(p.flow));
    EXPECT_EQ(h_->health(p.ep).opened, 0u);
  }
}

// Each service lives by its own lifetimes (mp_svc_tmo[svc.id]), as meshd writes them.
TEST_F(ConnStateTest, LifetimesAreTheServicesOwn) {
  build();
  mp_svc_tmo t = h_->timeouts();
  t.jiffies[MP_TMO_UDP] = h_->jiffiesOf(7000);
  t.jiffies[MP_TMO_TCP_SYN] = h_->jiffiesOf(3000);
  h_->setTimeouts(kSvcUdp4, t);
  const Flow u4 = udp4(40030), u6 = udp6(40030), t4 = tcp4(40030);
  const Pick p4 = pick(u4), p6 = pick(u6), pt = pick(t4);
  const Window w = during([&] {
    run({out("IPv4 UDP query", u4, 0, p4), out("IPv6 UDP query", u6, 0, p6),
         out("IPv4 TCP SYN", t4, kTcpSyn, pt)});
  });
  const uint64_t udp7s = h_->jiffiesOf(7000), syn = h_->timeouts().jiffies[MP_TMO_TCP_SYN];
  EXPECT_GE(h_->half(p4.flow)->expires, w.before + udp7s);
  EXPECT_LE(h_->half(p4.flow)->expires, w.after + udp7s) << "the service's 7 s";
  expectExpiry(*h_->half(p6.flow), w, MP_TMO_UDP, "another service: its own (the default)");
  EXPECT_GE(h_->half(pt.flow)->expires, w.before + syn) << "not the UDP service's tcp_syn";
  EXPECT_LE(h_->half(pt.flow)->expires, w.after + syn);
}

// An established entry's expiry is written when it moves forward by at least the refresh slack
// (1 s), or back: not on every packet. The cache is off: a slot's packets skip the refresh.
TEST_F(ConnStateTest, RefreshWritesTheExpiryOnlyWhenItMovesEnough) {
  LbSkeletonOptions o = small();
  o.flowCacheSlots = 0;
  build(o);
  const Flow f = tcp4(40040);
  const Pick p = pick(f);
  run(establish(f, p));
  const uint64_t est = h_->timeouts().jiffies[MP_TMO_TCP_EST], slack = h_->jiffiesOf(1000);
  const auto setExpires = [&](uint64_t expires) {
    mp_conn c = *h_->conn(p.flow);
    c.expires = expires;
    h_->put(h_->lb().connsFd(), p.flow, c);
  };

  const uint64_t close = h_->jiffies() + est - slack / 2;
  setExpires(close);
  run({out("data: half a slack to gain", f, kTcpAck, p)});
  EXPECT_EQ(h_->conn(p.flow)->expires, close) << "not written";

  setExpires(h_->jiffies() + est - 2 * slack);
  Window w = during([&] { run({out("data: two slacks to gain", f, kTcpAck, p)}); });
  expectExpiry(*h_->conn(p.flow), w, MP_TMO_TCP_EST, "written");

  setExpires(h_->jiffies() + 10 * est);
  w = during([&] { run({out("data: an expiry beyond its lifetime", f, kTcpAck, p)}); });
  expectExpiry(*h_->conn(p.flow), w, MP_TMO_TCP_EST, "moved back");

  w = during([&] { run({back("the endpoint's FIN", f, kTcpFin | kTcpAck, p)}); });
  expectExpiry(*h_->conn(p.flow), w, MP_TMO_TCP_FIN, "a FIN shortens it at once");
}

// A half-open connection that closed (a RST either way) stays where it is: a late or crossing ACK
// of the client's does not promote it, so it is never counted open (its close never would be).
TEST_F(ConnStateTest, ClosedHalfOpenFlowIsNeverPromoted) {
  build();
  struct Case {
    std::string what;
    Flow flow;
    bool endpointResets;
  };
  for (const Case& k : {Case{"IPv4, the endpoint resets after its SYN-ACK", tcp4(40050), true},
                        Case{"IPv6, the client resets", tcp6(40051), false}}) {
    SCOPED_TRACE(k.what);
    const Flow& f = k.flow;
    const Pick p = pick(f);
    run({out("SYN", f, kTcpSyn, p), back("SYN-ACK", f, kTcpSyn | kTcpAck, p),
         k.endpointResets ? back("the endpoint's RST", f, kTcpRst | kTcpAck, p)
                          : out("the client's RST", f, kTcpRst | kTcpAck, p),
         out("the client's ACK, late", f, kTcpAck, p), out("and data", f, kTcpAck | kTcpPsh, p)});
    const auto half = h_->half(p.flow);
    ASSERT_TRUE(half) << "still half-open";
    EXPECT_EQ(half->flags, MP_CONN_F_SYNACK | MP_CONN_F_RST);
    EXPECT_FALSE(h_->conn(p.flow)) << "a closed connection is not promoted";
    EXPECT_FALSE(h_->rnat(rkey(f, p)));
    EXPECT_EQ(h_->health(p.ep).opened, 0u);
    EXPECT_EQ(h_->health(p.ep).closed, 0u);
  }
}

// ---- Lifetimes and SNAT ports --------------------------------------------------------------

// Every state of a connection lives by its lifetime; once that ran out (its expires written into
// the past, as time would), the next new flow takes its SNAT port at once, and its entries go.
TEST_F(ConnStateTest, EachStateExpiresAndItsPortIsFreeAtOnce) {
  struct State {
    std::string what;
    bool udp;
    // The packets that bring connection A into the state: 0 SYN, 1 +SYN-ACK, 2 +ACK, 3 +FIN
    // from the client, 4 +FIN from the endpoint; 5 SYN and a RST from the endpoint. UDP: 0 a
    // query, 1 +the answer.
    int steps;
    bool established;
    uint32_t tmo;
    bool countedOpen;  // A was counted open and not closed: the takeover counts its close
  };
  const State states[] = {
      {"TCP, SYN sent", false, 0, false, MP_TMO_TCP_SYN, false},
      {"TCP, SYN-ACK seen", false, 1, false, MP_TMO_TCP_SYN, false},
      {"TCP, established", false, 2, true, MP_TMO_TCP_EST, true},
      {"TCP, the client's FIN", false, 3, true, MP_TMO_TCP_FIN, true},
      {"TCP, FIN both ways", false, 4, true, MP_TMO_TCP_CLOSED, false},
      {"TCP, refused by a RST", false, 5, false, MP_TMO_TCP_CLOSED, false},
      {"UDP, not answered", true, 0, false, MP_TMO_UDP, false},
      {"UDP, answered", true, 1, true, MP_TMO_UDP_REPLIED, false},
  };
  for (const State& s : states) {
    SCOPED_TRACE(s.what);
    build();
    oneSnatPort();
    const Flow a = s.udp ? oneUdp4(41001) : oneTcp4(41001);
    const Flow b = s.udp ? oneUdp4(41002) : oneTcp4(41002);
    const uint32_t ep = s.udp ? kEpOneUdp4 : kEpOneTcp4;
    const Pick pa = pick(a), pb = pick(b);
    ASSERT_EQ(pa.snat, kOnly);
    std::vector<LbCase> rows;
    if (s.udp) {
      rows.push_back(out("A's query", a, 0, pa));
      if (s.steps >= 1) rows.push_back(back("A's answer", a, 0, pa));
    } else {
      rows.push_back(out("A's SYN", a, kTcpSyn, pa));
      if (s.steps == 5) rows.push_back(back("A refused", a, kTcpRst | kTcpAck, pa));
      if (s.steps >= 1 && s.steps <= 4) rows.push_back(back("SYN-ACK", a, kTcpSyn | kTcpAck, pa));
      if (s.steps >= 2 && s.steps <= 4) rows.push_back(out("A's ACK", a, kTcpAck, pa));
      if (s.steps >= 3 && s.steps <= 4) rows.push_back(out("A's FIN", a, kTcpFin | kTcpAck, pa));
      if (s.steps == 4) rows.push_back(back("the endpoint's FIN", a, kTcpFin | kTcpAck, pa));
    }
    const Window w = during([&] { run(rows); });
    const auto entry = s.established ? h_->conn(pa.flow) : h_->half(pa.flow);
    ASSERT_TRUE(entry) << (s.established ? "established" : "half-open");
    EXPECT_FALSE(s.established ? h_->half(pa.flow) : h_->conn(pa.flow)) << "in one table";
    const uint64_t life = h_->timeouts().jiffies[s.tmo];
    EXPECT_GE(entry->expires, w.before + life);
    EXPECT_LE(entry->expires, w.after + life);

    run({dropped("B while A lives", b, s.udp ? 0 : kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED)});
    h_->clearSnatBackoff(ep);
    const mp_ep_health before = h_->health(ep);
    ASSERT_TRUE(h_->expire(pa.flow));
    run({out("B once A expired: A's port", b, s.udp ? 0 : kTcpSyn, pb)});
    EXPECT_FALSE(h_->anyConn(pa.flow)) << "A's entry went with its port";
    EXPECT_FALSE(h_->rnat(rkey(a, pa))) << "and its established reverse entry";
    const auto r = h_->hrnat(rkey(b, pb));
    ASSERT_TRUE(r) << "the port restores B";
    EXPECT_EQ(r->client_port, htons(b.cport));
    ASSERT_TRUE(h_->half(pb.flow));
    EXPECT_EQ(h_->health(ep).closed, before.closed + (s.countedOpen ? 1 : 0));
    EXPECT_EQ(h_->health(ep).opened, before.opened);
    run({back("B's answer comes back to B", b, s.udp ? 0 : kTcpSyn | kTcpAck, pb)});
  }
}

// An open connection's port is never taken while its lifetime runs, whatever else happens: new
// flows are refused, to the last jiffy; a closed one keeps its port as long as its lifetime
// (tcp_closed) says, too.
TEST_F(ConnStateTest, EstablishedPortIsNeverTakenWhileAlive) {
  build();
  oneSnatPort();
  const Flow a = oneTcp4(41001);
  const Pick pa = pick(a);
  run(establish(a, pa));
  for (uint16_t cport = 41100; cport < 41120; ++cport) {
    run({dropped("a new flow while A is open", oneTcp4(cport), kTcpSyn,
                 MP_EXC_DROP_SNAT_EXHAUSTED)});
    h_->clearSnatBackoff(kEpOneTcp4);
  }
  mp_conn c = *h_->conn(pa.flow);
  c.expires = h_->jiffies() + 2;  // still alive for a jiffy or two
  h_->put(h_->lb().connsFd(), pa.flow, c);
  run({dropped("a new flow in A's last jiffy", oneTcp4(41200), kTcpSyn,
               MP_EXC_DROP_SNAT_EXHAUSTED)});
  h_->clearSnatBackoff(kEpOneTcp4);
  c.flags |= MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP;  // closed, lingering an hour
  c.expires = h_->jiffies() + h_->jiffiesOf(3600 * 1000);
  h_->put(h_->lb().connsFd(), pa.flow, c);
  run({dropped("a new flow while A lingers closed", oneTcp4(41201), kTcpSyn,
               MP_EXC_DROP_SNAT_EXHAUSTED)});
  h_->clearSnatBackoff(kEpOneTcp4);
  EXPECT_EQ(h_->rnat(rkey(a, pa))->client_port, htons(41001));
  ASSERT_TRUE(h_->conn(pa.flow));
  c.flags = MP_CONN_F_COUNTED;
  c.expires = h_->jiffies() + h_->jiffiesOf(3600 * 1000);
  h_->put(h_->lb().connsFd(), pa.flow, c);
  run({out("A's data flows on", a, kTcpAck | kTcpPsh, pa),
       back("and its replies", a, kTcpAck | kTcpPsh, pa)});
  EXPECT_EQ(h_->svcStats(kSvcOneTcp4).new_conns, 1u);
}

// The shortest lifetime the config allows (1 s) is no longer than the refresh slack (1 s): a
// flow whose packets keep coming must still never expire, so its port is never taken while it is
// in use. Connection A sends every 100 ms (mostly served by the flow cache) for 2.5 s; just
// before each of its packets a new flow toward the same endpoint asks for the one port.
TEST_F(ConnStateTest, ShortLifetimeNeverLapsesUnderTraffic) {
  build();
  oneSnatPort();
  mp_svc_tmo t = h_->timeouts();
  t.jiffies[MP_TMO_UDP_REPLIED] = h_->jiffiesOf(1000);
  t.jiffies[MP_TMO_TCP_EST] = h_->jiffiesOf(1000);
  h_->setTimeouts(kSvcOneUdp4, t);
  h_->setTimeouts(kSvcOneTcp4, t);
  const Flow u = oneUdp4(41001), c = oneTcp4(41001);
  const Pick pu = pick(u), pc = pick(c);
  run(establish(u, pu));
  run(establish(c, pc));
  const int ingress = ifindexOf(kClientIf);
  uint16_t other = 42000;
  for (int i = 0; i < 25; ++i) {
    ::usleep(100'000);
    for (const Flow& b : {oneUdp4(other), oneTcp4(other)}) {
      const XdpRun r = h_->run(fromClient(b, b.proto == IPPROTO_TCP ? kTcpSyn : 0), ingress);
      ASSERT_EQ(r.error, 0);
      ASSERT_STREQ(verdictName(r.verdict), "XDP_DROP")
          << "a new flow took the port of a connection in use, at " << i * 100 << " ms";
    }
    ++other;
    h_->clearSnatBackoff(kEpOneUdp4);
    h_->clearSnatBackoff(kEpOneTcp4);
    run({out("U's packet", u, 0, pu), out("C's packet", c, kTcpAck | kTcpPsh, pc)});
  }
  EXPECT_EQ(h_->svcStats(kSvcOneUdp4).new_conns, 1u);
  EXPECT_EQ(h_->svcStats(kSvcOneTcp4).new_conns, 1u);
}

// ---- Table limits ----------------------------------------------------------------------------

// An established table of 4: the fifth connection's promoting ACK is dropped (nothing changes:
// it stays half-open and a retransmission may try again), the four go on both ways, and once an
// entry goes (meshd's recount reaps it) the retransmitted ACK gets in.
TEST_F(ConnStateTest, FullEstablishedTableDropsThePromotingPacket) {
  LbSkeletonOptions o = small();
  o.connTableSize = 4;
  build(o);
  setFallEverywhere(1);
  std::vector<Flow> flows = {tcp4(42001), tcp4(42002), tcp6(42003), tcp6(42004)};
  std::vector<Pick> picks;
  for (const Flow& f : flows) {
    picks.push_back(pick(f));
    run(establish(f, picks.back()));
  }
  ASSERT_EQ(entriesOf(h_->lb().connsFd()), 4u);
  const Flow e = tcp4(42005);
  const Pick pe = pick(e);
  run({out("E: SYN", e, kTcpSyn, pe), back("E: SYN-ACK", e, kTcpSyn | kTcpAck, pe),
       dropped("E: the promoting ACK, the table full", e, kTcpAck, MP_EXC_DROP_CONN_TABLE_FULL),
       back("E: the endpoint retransmits its SYN-ACK", e, kTcpSyn | kTcpAck, pe),
       dropped("E: the client's ACK again", e, kTcpAck, MP_EXC_DROP_CONN_TABLE_FULL)});
  ASSERT_TRUE(h_->half(pe.flow)) << "still half-open";
  EXPECT_EQ(h_->half(pe.flow)->flags, MP_CONN_F_SYNACK);
  EXPECT_TRUE(h_->hrnat(rkey(e, pe))) << "its port still reserved";
  EXPECT_FALSE(h_->conn(pe.flow));
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 4u);
  EXPECT_EQ(entriesOf(h_->lb().rnatFd()), 4u) << "no reverse entry without its connection";

  for (size_t i = 0; i < flows.size(); ++i) {
    run({out("an established connection's data", flows[i], kTcpAck | kTcpPsh, picks[i]),
         back("and its reply", flows[i], kTcpAck | kTcpPsh, picks[i])});
  }
  // A UDP answer that finds no room is still sent back; the flow stays half-open.
  const Flow u = udp4(42006);
  const Pick pu = pick(u);
  run({out("UDP query", u, 0, pu), back("its answer, the table full", u, 0, pu)});
  EXPECT_TRUE(h_->half(pu.flow));
  EXPECT_FALSE(h_->conn(pu.flow));

  uint64_t opened = 0;
  for (const auto& [id, ep] : eps_) opened += h_->health(id).opened;
  EXPECT_EQ(opened, 4u) << "E was never counted open";

  // meshd's recount reaps an expired connection (both entries); E's next ACK gets its room.
  const mp_conn gone = *h_->conn(picks[0].flow);
  h_->erase(h_->lb().connsFd(), picks[0].flow);
  h_->erase(h_->lb().rnatFd(), h_->replyKey(picks[0].flow, gone));
  run({out("E: the client's ACK once there is room", e, kTcpAck, pe)});
  ASSERT_TRUE(h_->conn(pe.flow));
  EXPECT_FALSE(h_->half(pe.flow));
  EXPECT_TRUE(h_->rnat(rkey(e, pe)));
  run({back("E's reply", e, kTcpAck | kTcpPsh, pe)});
  expectNoPassiveFailures();
}

// A flood of new flows (spoofed SYNs) many times the half-open table's size evicts only
// half-open flows: an established connection forwards both ways through it and after it.
TEST_F(ConnStateTest, HalfOpenFloodNeverEvictsAnEstablishedConnection) {
  LbSkeletonOptions o = small();
  o.halfTableSize = 256;
  build(o);
  const Flow a = tcp4(43001), u = udp6(43001);
  const Pick pa = pick(a), pu = pick(u);
  run(establish(a, pa));
  run(establish(u, pu));
  constexpr uint32_t kFlood = 4096;
  const int ingress = ifindexOf(kClientIf);
  for (uint32_t i = 0; i < kFlood; ++i) {
    const std::string client =
        "10.1." + std::to_string((i >> 8) & 0xff) + "." + std::to_string(i & 0xff);
    const Bytes syn = frame(Shape{}, kRouterMac, kClientIfMac, client, kVip4,
                            static_cast<uint16_t>(1024 + i % 60000), kTcpPort);
    const XdpRun r = h_->run(syn, ingress);
    ASSERT_EQ(r.error, 0);
    ASSERT_EQ(r.verdict, uint32_t{XDP_REDIRECT}) << "flood SYN " << i;
    if (i % 1024 == 1023) {
      run({out("the established connection during the flood", a, kTcpAck | kTcpPsh, pa)});
    }
  }
  EXPECT_LE(entriesOf(h_->lb().halfFd()), 256u) << "the flood was evicted from mp_half";
  EXPECT_LE(entriesOf(h_->lb().hrnatFd()), 256u);
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 2u);
  EXPECT_EQ(entriesOf(h_->lb().rnatFd()), 2u);
  run({out("A after the flood", a, kTcpAck | kTcpPsh, pa),
       back("A's reply", a, kTcpAck | kTcpPsh, pa), out("U after the flood", u, 0, pu),
       back("U's reply", u, 0, pu)});
  EXPECT_EQ(h_->conn(pa.flow)->snat_port, htons(pa.snat));
  EXPECT_EQ(h_->svcStats(kSvcTcp4).new_conns, kFlood + 1);
}

// ---- The cheap drop path ---------------------------------------------------------------------

// After one new flow toward an endpoint found every SNAT candidate held, this CPU drops the next
// new flows toward it for snat_backoff without probing: even a port freed meanwhile is not
// seen until the backoff ends. Other endpoints are not affected.
TEST_F(ConnStateTest, ExhaustedDropsTheNextNewFlowWithoutProbing) {
  build();
  oneSnatPort();
  setFallEverywhere(1);
  const Flow a = oneTcp4(41001), b = oneTcp4(41002), c = oneTcp4(41003);
  const Pick pa = pick(a), pc = pick(c);
  run(establish(a, pa));
  const Window w = during(
      [&] { run({dropped("B: every candidate held", b, kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED)}); });
  const uint64_t backoff = std::max<uint64_t>(1, MP_SNAT_BACKOFF_NS_DEFAULT / h_->lb().tickNs());
  const std::vector<uint64_t> until = h_->snatBackoff(kEpOneTcp4);
  const uint64_t mine = until.at(static_cast<size_t>(pin_->cpu()));
  EXPECT_GE(mine, w.before + backoff);
  EXPECT_LE(mine, w.after + backoff);
  for (size_t cpu = 0; cpu < until.size(); ++cpu) {
    if (static_cast<int>(cpu) != pin_->cpu()) {
      EXPECT_EQ(until[cpu], 0u) << "CPU " << cpu;
    }
  }

  // The port comes free (meshd reaps A); a probe would find it. None is made.
  const mp_conn gone = *h_->conn(pa.flow);
  h_->erase(h_->lb().connsFd(), pa.flow);
  h_->erase(h_->lb().rnatFd(), h_->replyKey(pa.flow, gone));
  run({dropped("C: dropped without a probe", c, kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED),
       dropped("B retransmits: the same", b, kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED)});
  EXPECT_FALSE(h_->hrnat(rkey(c, pc))) << "no reservation was tried";
  EXPECT_EQ(entriesOf(h_->lb().hrnatFd()), 0u);
  EXPECT_EQ(entriesOf(h_->lb().halfFd()), 0u);
  EXPECT_EQ(h_->snatBackoff(kEpOneTcp4).at(static_cast<size_t>(pin_->cpu())), mine)
      << "a drop without a probe does not push the backoff on";

  // Another endpoint's new flows probe as usual.
  const Flow other = tcp4ToEndpoint2(41004);
  const Pick po = pick(other);
  run({out("a new flow toward another endpoint", other, kTcpSyn, po)});

  while (h_->jiffies() < mine) ::usleep(5'000);
  run({out("C once the backoff ended: the free port", c, kTcpSyn, pc)});
  EXPECT_EQ(h_->hrnat(rkey(c, pc))->client_port, htons(c.cport));
  expectNoPassiveFailures();
}

// ---- A pool of SNAT sources -------------------------------------------------------------------

// Two SNAT addresses per family: new flows use both (the flow's hash picks one with its port),
// the endpoint sees the chosen one, and replies to either are recognised and restored, through
// the half-open and established tables and from the flow cache.
TEST_F(ConnStateTest, PoolOfTwoAddressesSpreadsFlowsAndRepliesComeBack) {
  build();
  h_->setNode(kNode4, kNode6, 61000, 65535, {kNodePool4, kNodePool6});
  for (const bool v6 : {false, true}) {
    for (const bool udp : {false, true}) {
      SCOPED_TRACE(std::string(v6 ? "IPv6" : "IPv4") + (udp ? " UDP" : " TCP"));
      const std::string second = v6 ? kNodePool6 : kNodePool4;
      std::map<uint32_t, int> perAddr;
      for (uint16_t cport = 44000; cport < 44064; ++cport) {
        const Flow f = udp ? (v6 ? udp6(cport) : udp4(cport)) : (v6 ? tcp6(cport) : tcp4(cport));
        const Pick p = pick(f);
        ++perAddr[p.node == second ? 1 : 0];
        if (cport >= 44008) continue;  // the whole path for a few; the pick for all
        run(establish(f, p));
        const auto c = h_->conn(p.flow);
        ASSERT_TRUE(c);
        EXPECT_EQ(c->snat_addr, p.node == second ? 1 : 0);
        EXPECT_EQ(h_->rnat(rkey(f, p))->client_port, htons(cport));
        run({out("from the slot, the same source", f, udp ? 0 : kTcpAck | kTcpPsh, p),
             out("and again", f, udp ? 0 : kTcpAck | kTcpPsh, p),
             back("a reply to the source it used", f, udp ? 0 : kTcpAck | kTcpPsh, p)});
      }
      EXPECT_GT(perAddr[0], 10) << "the first address";
      EXPECT_GT(perAddr[1], 10) << "the second address";
    }
  }
  const auto fc = h_->lb().flowCacheStats();
  ASSERT_TRUE(fc);
  EXPECT_GE(fc->hits, 4u * 8) << "the second of each pair served from a slot";
  // A packet to the second address that restores nothing is the node's own: passed untouched.
  const Bytes stray = frame(Shape{.tcpFlags = kTcpAck}, kEndpoint1Mac, kEndpointIfMac, kEndpoint1v4,
                            kNodePool4, 8080, 61234);
  run({{"to the second address, no reverse entry", stray, kEndpointIf, XDP_PASS, std::nullopt}});
}

// ---- Half-open flows that lose their port ------------------------------------------------------

// A half-open flow whose reverse entry went (the LRU evicted it) and whose port another flow
// then took cannot be promoted: its ACK is dropped (drop_half_lost) and its entry goes, so its
// next packet starts over as a new flow.
TEST_F(ConnStateTest, HalfOpenFlowWhoseReverseEntryWasTakenOverIsLost) {
  build();
  oneSnatPort();
  setFallEverywhere(1);
  const Flow a = oneTcp4(41001), b = oneTcp4(41002);
  const Pick pa = pick(a), pb = pick(b);
  run({out("A: SYN", a, kTcpSyn, pa), back("A: SYN-ACK", a, kTcpSyn | kTcpAck, pa)});
  h_->erase(h_->lb().hrnatFd(), rkey(a, pa));  // the LRU evicts A's reverse entry
  run({out("B: the port looks free", b, kTcpSyn, pb),
       dropped("A: its ACK, its port B's now", a, kTcpAck, MP_EXC_DROP_HALF_LOST)});
  EXPECT_FALSE(h_->half(pa.flow)) << "A's entry went";
  EXPECT_FALSE(h_->conn(pa.flow));
  EXPECT_EQ(h_->hrnat(rkey(b, pb))->client_port, htons(b.cport)) << "B keeps the port";
  run({dropped("A's ACK again: a new flow, and B holds the port", a, kTcpAck,
               MP_EXC_DROP_SNAT_EXHAUSTED)});
  h_->clearSnatBackoff(kEpOneTcp4);
  run({back("B: SYN-ACK", b, kTcpSyn | kTcpAck, pb), out("B: ACK (promotes)", b, kTcpAck, pb)});
  ASSERT_TRUE(h_->conn(pb.flow));

  // IPv6, no one took the port: the reverse entry is simply gone, and so is the flow.
  const Flow c = oneTcp6(41003);
  const Pick pc = pick(c);
  run({out("C: SYN", c, kTcpSyn, pc), back("C: SYN-ACK", c, kTcpSyn | kTcpAck, pc)});
  h_->erase(h_->lb().hrnatFd(), rkey(c, pc));
  run({dropped("C: its ACK, its reverse entry gone", c, kTcpAck, MP_EXC_DROP_HALF_LOST)});
  EXPECT_FALSE(h_->half(pc.flow));
  run({out("C's next packet: a new flow, the port free", c, kTcpAck, pc)});
  expectNoPassiveFailures();
}

// The balancer's own refusals (an exhausted range, its backoff, a full table, a lost half-open
// flow) are no passive failures of the endpoint, whatever the client retransmits after them.
TEST_F(ConnStateTest, BalancersOwnDropsAreNoPassiveFailures) {
  LbSkeletonOptions o = small();
  o.connTableSize = 1;
  build(o);
  oneSnatPort();
  setFallEverywhere(1);
  const Flow a = oneTcp4(41001), b = oneTcp4(41002);
  const Pick pa = pick(a), pb = pick(b);
  run(establish(a, pa));
  for (int i = 0; i < 3; ++i) {
    run({dropped("B's SYN, and its retransmissions", b, kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED)});
  }
  h_->clearSnatBackoff(kEpOneTcp4);
  run({dropped("B once more, probing", b, kTcpSyn, MP_EXC_DROP_SNAT_EXHAUSTED)});
  h_->clearSnatBackoff(kEpOneTcp4);
  // The table (one entry) is full: C toward another endpoint completes its handshake in vain.
  const Flow c = tcp4ToEndpoint2(41003);
  const Pick pc = pick(c);
  run({out("C: SYN", c, kTcpSyn, pc), back("C: SYN-ACK", c, kTcpSyn | kTcpAck, pc)});
  for (int i = 0; i < 3; ++i) {
    run({dropped("C's ACK, the table full", c, kTcpAck, MP_EXC_DROP_CONN_TABLE_FULL),
         back("the endpoint retransmits its SYN-ACK", c, kTcpSyn | kTcpAck, pc)});
  }
  expectNoPassiveFailures();
  EXPECT_TRUE(h_->half(pc.flow));
  EXPECT_FALSE(h_->anyConn(pb.flow)) << "B never got an entry";
}

// ---- Source-preserving forwarding (dnat) ------------------------------------------------------

// A dnat service on its own VIP per family and protocol, one endpoint each on endpoint 2's host
// (ports of their own); the node has no SNAT source of its own to offer such a flow.
class DnatTest : public ConnStateTest {
 protected:
  static constexpr char kVipD4[] = "10.0.0.170";
  static constexpr char kVipD6[] = "fd00::170";
  static constexpr uint32_t kSvcD4 = 60, kSvcD6 = 61, kSvcDUdp4 = 62;
  static constexpr uint32_t kEpD4 = 60, kEpD6 = 61, kEpDUdp4 = 62;

  void buildDnat(LbSkeletonOptions o = small()) {
    build(o);
    addEndpoint(kEpD4, kEndpoint2v4, 9090, kEndpoint2Mac, kSvcD4);
    addEndpoint(kEpD6, kEndpoint2v6, 9090, kEndpoint2Mac, kSvcD6);
    addEndpoint(kEpDUdp4, kEndpoint2v4, 9053, kEndpoint2Mac, kSvcDUdp4);
    h_->setService(kSvcD4, kVipD4, kTcpPort, IPPROTO_TCP, 7, {kEpD4}, MP_ALG_MAGLEV, MP_FWD_DNAT);
    h_->setService(kSvcD6, kVipD6, kTcpPort, IPPROTO_TCP, 7, {kEpD6}, MP_ALG_MAGLEV, MP_FWD_DNAT);
    h_->setService(kSvcDUdp4, kVipD4, kUdpPort, IPPROTO_UDP, 7, {kEpDUdp4}, MP_ALG_MAGLEV,
                   MP_FWD_DNAT);
  }
  static Flow dnat(Flow f, const std::string& vip) {
    f.vip = vip;
    return f;
  }
  // The client's packet as the endpoint gets it: from the client itself.
  LbCase toEp(const std::string& what, const Flow& f, uint8_t flags, uint32_t ep) const {
    const Ep& e = eps_.at(ep);
    return {what, fromClient(f, flags), kClientIf, XDP_REDIRECT,
            frame(shapeOf(f, flags), kEndpointIfMac, e.mac, f.client, e.addr, f.cport, e.port)};
  }
  // The endpoint's reply to the client (routed back through the node), as the client gets it:
  // from the VIP.
  LbCase fromEp(const std::string& what, const Flow& f, uint8_t flags, uint32_t ep) const {
    const Ep& e = eps_.at(ep);
    const Shape s = shapeOf(f, flags);
    return {what, frame(s, e.mac, kEndpointIfMac, e.addr, f.client, e.port, f.cport), kEndpointIf,
            XDP_REDIRECT, frame(s, kClientIfMac, kClientMac, f.vip, f.client, f.vport, f.cport)};
  }
};

TEST_F(DnatTest, TcpKeepsTheClientAsSourceOneEntryPerConnection) {
  buildDnat();
  struct Case {
    Flow flow;
    uint32_t ep;
  };
  for (const Case& k :
       {Case{dnat(tcp4(45001), kVipD4), kEpD4}, Case{dnat(tcp6(45001), kVipD6), kEpD6}}) {
    const Flow& f = k.flow;
    SCOPED_TRACE(f.client);
    const mp_flow key = h_->predict(fromClient(f, kTcpSyn)).flow;
    run({toEp("SYN, from the client itself", f, kTcpSyn, k.ep)});
    auto half = h_->half(key);
    ASSERT_TRUE(half);
    EXPECT_EQ(half->ep_id, k.ep);
    EXPECT_EQ(half->snat_port, htons(f.cport)) << "the client's own port";
    EXPECT_EQ(half->snat_addr, MP_SNAT_NONE);
    EXPECT_EQ(half->flags, MP_CONN_F_SYN_SENT);
    run({fromEp("SYN-ACK, back from the VIP", f, kTcpSyn | kTcpAck, k.ep)});
    half = h_->half(key);
    ASSERT_TRUE(half);
    EXPECT_EQ(half->flags, MP_CONN_F_SYNACK);
    run({toEp("the client's ACK (promotes)", f, kTcpAck, k.ep)});
    const auto c = h_->conn(key);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->flags, MP_CONN_F_COUNTED);
    EXPECT_EQ(c->snat_addr, MP_SNAT_NONE);
    EXPECT_FALSE(h_->half(key));
    EXPECT_EQ(h_->health(k.ep).opened, 1u);
    run({toEp("data", f, kTcpAck | kTcpPsh, k.ep), toEp("data from the slot", f, kTcpAck, k.ep),
         fromEp("the endpoint's data", f, kTcpAck | kTcpPsh, k.ep),
         toEp("the client's FIN", f, kTcpFin | kTcpAck, k.ep),
         fromEp("the endpoint's FIN", f, kTcpFin | kTcpAck, k.ep)});
    EXPECT_EQ(h_->conn(key)->flags, MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
    EXPECT_EQ(h_->health(k.ep).closed, 1u);
  }
  EXPECT_EQ(entriesOf(h_->lb().hrnatFd()), 0u) << "no reverse entries: no SNAT";
  EXPECT_EQ(entriesOf(h_->lb().rnatFd()), 0u);
  EXPECT_EQ(entriesOf(h_->lb().connsFd()), 2u);
  EXPECT_EQ(h_->svcStats(kSvcD4).packets, 8u) << "replies included";
  EXPECT_EQ(h_->svcStats(kSvcD4).new_conns, 1u);
}

TEST_F(DnatTest, UdpIsPromotedByItsAnswerAndStrangersPass) {
  buildDnat();
  const Flow u = dnat(udp4(45002), kVipD4);
  const mp_flow key = h_->predict(fromClient(u, 0)).flow;
  run({toEp("query", u, 0, kEpDUdp4)});
  EXPECT_TRUE(h_->half(key));
  run({fromEp("answer, from the VIP", u, 0, kEpDUdp4), toEp("the next query", u, 0, kEpDUdp4)});
  ASSERT_TRUE(h_->conn(key)) << "promoted by the answer";
  EXPECT_EQ(h_->conn(key)->snat_addr, MP_SNAT_NONE);
  EXPECT_FALSE(h_->half(key));

  // The endpoint's packets to a client it has no connection with, or from a port that is not
  // the service's, are not replies: passed untouched.
  Flow stranger = u;
  stranger.cport = 45003;
  const Ep& e = eps_.at(kEpDUdp4);
  const Shape s = shapeOf(u, 0);
  run({{"to a client without a connection",
        frame(s, e.mac, kEndpointIfMac, e.addr, u.client, e.port, stranger.cport), kEndpointIf,
        XDP_PASS, std::nullopt},
       {"from another port of the endpoint",
        frame(s, e.mac, kEndpointIfMac, e.addr, u.client, 7777, u.cport), kEndpointIf, XDP_PASS,
        std::nullopt}});
}

// A dnat service needs no SNAT source: with none configured its flows go on while a full-NAT
// service's are refused (drop_no_node_addr).
TEST_F(DnatTest, NeedsNoNodeAddress) {
  buildDnat();
  h_->setNode("", "");
  const Flow d = dnat(tcp4(45004), kVipD4), n = tcp4(45004);
  run({toEp("dnat SYN", d, kTcpSyn, kEpD4), fromEp("its SYN-ACK", d, kTcpSyn | kTcpAck, kEpD4),
       toEp("its ACK", d, kTcpAck, kEpD4),
       dropped("a full-NAT service's SYN", n, kTcpSyn, MP_EXC_DROP_NO_NODE_ADDR)});
  EXPECT_TRUE(h_->conn(h_->predict(fromClient(d, kTcpSyn)).flow));
}

}  // namespace
}  // namespace meshpath::testing
