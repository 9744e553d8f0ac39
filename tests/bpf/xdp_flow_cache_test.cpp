// The flow cache (bpf/flowcache.h) run for real with BPF_PROG_RUN in the tests' network namespace
// (lb_harness.h). What a slot serves must be exactly what the slow path would have sent: the
// same whole frame, the same counters. And every change of where a flow goes must reach the
// slots: meshd's writes (each followed by its bump of mp_fwd_gen) and the program's own re-pick
// of a SYN away from a down endpoint. The cache is per CPU and BPF_PROG_RUN runs the program on
// the caller's CPU: every test here runs pinned to one CPU (CpuPin), so a flow's second packet
// finds the slot its first one filled, and the counters are that CPU's.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowcache.h"
#include "lb_harness.h"
#include "lb_table.h"
#include "libbpf_logger.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;
using namespace fixture;

// What the flow cache counts for one packet.
enum class Cache {
  kHit,   // looked up and served from its slot
  kMiss,  // looked up and not served: the slow path forwarded it (and filled the slot)
  kNone,  // not counted: a SYN, FIN or RST, a reply, a malformed frame, the cache off (never
          // looked up), or a half-open flow's packet (looked up, but only an established flow
          // fills a slot, and only a filled slot counts its miss)
  kAny,   // not checked
};

// A table row (lb_table.h) and what the cache must count for it.
struct Step {
  LbCase packet;
  Cache cache;
};

// The default options but for the flow cache's slots per CPU, or a slot's life.
LbSkeletonOptions withSlots(uint32_t slots) {
  LbSkeletonOptions o;
  o.flowCacheSlots = slots;
  return o;
}
LbSkeletonOptions withSlotLife(uint64_t flowCacheTtlNs) {
  LbSkeletonOptions o;
  o.flowCacheTtlNs = flowCacheTtlNs;
  return o;
}

// The fixture's service of flow f.
uint32_t serviceOf(const Flow& f) {
  const bool v6 = f.vip.find(':') != std::string::npos;
  if (f.proto == IPPROTO_TCP) return v6 ? kSvcTcp6 : kSvcTcp4;
  return v6 ? kSvcUdp6 : kSvcUdp4;
}

// Each fixture service has two endpoints: the one that is not id.
uint32_t otherEndpoint(uint32_t id) {
  const Endpoint& e = endpoint(id);
  for (const Endpoint& o : kEndpoints) {
    if (o.svc == e.svc && o.id != id) return o.id;
  }
  throw std::out_of_range("no other endpoint beside " + std::to_string(id));
}

// What endpoint epId receives of the client's packet: from node:snatPort (host order).
Bytes atEndpoint(const Flow& f, uint8_t flags, uint32_t epId, uint16_t snatPort) {
  const Endpoint& ep = endpoint(epId);
  return frame(shapeOf(f, flags), kEndpointIfMac, ep.mac, f.node, ep.addr, snatPort, ep.port);
}

// The client's packet, forwarded to epId from node:snatPort.
Step toEndpoint(const std::string& what, const Flow& f, uint8_t flags, uint32_t epId,
                uint16_t snatPort, Cache cache) {
  return {
      {what, fromClient(f, flags), kClientIf, XDP_REDIRECT, atEndpoint(f, flags, epId, snatPort)},
      cache};
}

// The endpoint's packet to node:snatPort, back to the client from VIP:port. Replies never look
// the cache up.
Step toClient(const std::string& what, const Flow& f, uint8_t flags, uint32_t epId,
              uint16_t snatPort) {
  const Endpoint& ep = endpoint(epId);
  const Shape s = shapeOf(f, flags);
  return {{what, frame(s, ep.mac, kEndpointIfMac, ep.addr, f.node, ep.port, snatPort), kEndpointIf,
           XDP_REDIRECT, frame(s, kClientIfMac, kClientMac, f.vip, f.client, f.vport, f.cport)},
          Cache::kNone};
}

class FlowCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(prepareBpfTest(), "");
    pin_ = std::make_unique<CpuPin>();
  }

  // A fresh balancer (fresh caches: every slot empty, generation 0) loaded with options, and
  // the fixture's services. Written before any packet, so no slot predates them. Each test
  // builds its own: a load is most of a test's time.
  void build(const LbSkeletonOptions& options = {}) {
    h_ = std::make_unique<LbHarness>(options);
    h_->setNode(kNode4, kNode6);
    fixture::install(*h_);
  }

  mp_flow_cache_stats stats() const {
    auto s = h_->lb().flowCacheStats();
    if (!s) ADD_FAILURE() << s.error().toString();
    return s ? *s : mp_flow_cache_stats{};
  }

  // Each step as a table of one row (verdict, whole output frame, no exception unless told),
  // then what the cache counted for it.
  void send(const std::vector<Step>& steps) {
    for (const Step& s : steps) {
      SCOPED_TRACE(s.packet.description);
      const mp_flow_cache_stats before = stats();
      runTable(*h_, {s.packet});
      const mp_flow_cache_stats after = stats();
      EXPECT_EQ(after.bypassed, before.bypassed) << "bypassed";
      if (s.cache == Cache::kAny) continue;
      EXPECT_EQ(after.hits - before.hits, s.cache == Cache::kHit ? 1u : 0u) << "hits";
      EXPECT_EQ(after.misses - before.misses, s.cache == Cache::kMiss ? 1u : 0u) << "misses";
    }
  }

  // Where flow f's first packet goes: Maglev's endpoint, the first SNAT port probe (host order).
  struct Pick {
    mp_flow flow;
    uint32_t ep;
    uint16_t snat;
  };
  Pick pick(const Flow& f) const {
    const LbHarness::Choice c = h_->predict(fromClient(f, kTcpSyn));
    if (c.epId == MP_RING_EMPTY) throw std::runtime_error("no endpoint for the flow");
    return {c.flow, c.epId, ntohs(c.snatPort)};
  }

  uint16_t connFlags(const mp_flow& flow) const {
    const auto c = h_->conn(flow);
    EXPECT_TRUE(c) << "mp_conns entry";
    return c ? c->flags : 0;
  }

  // The steps that establish flow f toward epId from node:snatPort: a UDP flow's first packet
  // and the endpoint's answer; a TCP flow's SYN, the SYN-ACK and the client's ACK, which
  // promotes it (a miss: the ACK is looked up, and fills the slot once established).
  static std::vector<Step> establish(const Flow& f, uint32_t epId, uint16_t snatPort) {
    if (f.proto == IPPROTO_UDP) {
      return {toEndpoint("first packet: half-open, not cached", f, 0, epId, snatPort, Cache::kNone),
              toClient("the endpoint's answer: established", f, 0, epId, snatPort)};
    }
    return {toEndpoint("SYN", f, kTcpSyn, epId, snatPort, Cache::kNone),
            toClient("the endpoint's SYN-ACK", f, kTcpSyn | kTcpAck, epId, snatPort),
            toEndpoint("the client's ACK: promoted, and the slot filled", f, kTcpAck, epId,
                       snatPort, Cache::kMiss)};
  }

  // A SNAT port taken over from an established flow whose lifetime ran out (conn.h: nothing may
  // still need it) is the new flow's alone. Without a cache the old flow's next packet is a new
  // flow, which finds the only port held by the new one and is refused; what it gets must not
  // depend on the cache.
  void portTakenOverFromAnExpiredFlow() {
    constexpr uint16_t kOnly = 61500;
    h_->setNode(kNode4, kNode6, kOnly, kOnly);
    h_->setService(kSvcUdp4, kVip4, kUdpPort, IPPROTO_UDP, 13, {3});
    const Flow a = udp4(42001), b = udp4(42002);
    send(establish(a, 3, kOnly));
    send({toEndpoint("A again", a, 0, 3, kOnly, Cache::kAny),
          toEndpoint("A again", a, 0, 3, kOnly, Cache::kAny)});
    ASSERT_TRUE(h_->expire(pick(a).flow));
    send({toEndpoint("B takes A's port: A expired", b, 0, 3, kOnly, Cache::kNone),
          {{"A again: a new flow, and B holds the only port", fromClient(a, 0), kClientIf, XDP_DROP,
            std::nullopt, MP_EXC_DROP_SNAT_EXHAUSTED},
           Cache::kAny}});
    EXPECT_FALSE(h_->conn(pick(a).flow)) << "A's entry went with its port";
  }

  std::unique_ptr<CpuPin> pin_;
  std::unique_ptr<LbHarness> h_;
};

// An established flow's next packet is served from the slot its slow path filled, and leaves
// exactly as the slow path sent it: both are checked against the one frame built from scratch. A
// half-open flow never fills a slot.
TEST_F(FlowCacheTest, EstablishedUdpFlowIsAHitThatLeavesAsTheSlowPathDid) {
  build();
  for (const Flow& f : {udp4(40001), udp6(40001)}) {
    SCOPED_TRACE(f.client);
    const Pick p = pick(f);
    send({toEndpoint("first packet: half-open, the slow path, no slot", f, 0, p.ep, p.snat,
                     Cache::kNone),
          toEndpoint("second packet, still unanswered: the slow path again", f, 0, p.ep, p.snat,
                     Cache::kNone),
          toClient("the endpoint's answer: established", f, 0, p.ep, p.snat),
          toEndpoint("third packet: the slow path, which fills the slot", f, 0, p.ep, p.snat,
                     Cache::kMiss),
          toEndpoint("fourth packet: from the slot, the same frame out", f, 0, p.ep, p.snat,
                     Cache::kHit)});
    const uint64_t size = fromClient(f, 0).size();
    const uint64_t replySize = toClient("", f, 0, p.ep, p.snat).packet.input.size();
    for (const mp_counters& n : {h_->svcStats(serviceOf(f)), h_->epStats(p.ep)}) {
      EXPECT_EQ(n.packets, 5u) << "a packet from the slot is counted";
      EXPECT_EQ(n.bytes, 4 * size + replySize);
      EXPECT_EQ(n.new_conns, 1u) << "and is no new connection";
    }
    const auto conn = h_->conn(p.flow);
    ASSERT_TRUE(conn);
    EXPECT_EQ(conn->ep_id, p.ep);
    EXPECT_EQ(ntohs(conn->snat_port), p.snat);
  }
}

// Only the slow path records a connection's state: a SYN, FIN or RST is never looked up (a hit
// would skip mp_conn_endpoint, and the close with it); the packets between are served.
TEST_F(FlowCacheTest, TcpAcksAreServedSynFinAndRstNeverAndTheCloseIsRecorded) {
  build();
  const Flow f = tcp4(40011);
  const Pick p = pick(f);
  send({toEndpoint("SYN: the slow path, never looked up", f, kTcpSyn, p.ep, p.snat, Cache::kNone),
        toClient("the endpoint's SYN-ACK", f, kTcpSyn | kTcpAck, p.ep, p.snat),
        toEndpoint("first ACK: promotes, a miss, which fills the slot", f, kTcpAck, p.ep, p.snat,
                   Cache::kMiss),
        toEndpoint("data: from the slot", f, kTcpAck | kTcpPsh, p.ep, p.snat, Cache::kHit),
        toEndpoint("a SYN again: not from the slot", f, kTcpSyn, p.ep, p.snat, Cache::kNone),
        toEndpoint("the client's FIN: not from the slot", f, kTcpFin | kTcpAck, p.ep, p.snat,
                   Cache::kNone)});
  EXPECT_EQ(connFlags(p.flow), MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT) << "the FIN is recorded";
  send(
      {toEndpoint("an ACK while half-closed: from the slot", f, kTcpAck, p.ep, p.snat, Cache::kHit),
       toClient("the endpoint's FIN", f, kTcpFin | kTcpAck, p.ep, p.snat)});
  EXPECT_EQ(connFlags(p.flow), MP_CONN_F_COUNTED | MP_CONN_F_FIN_CLIENT | MP_CONN_F_FIN_EP);
  EXPECT_LE(h_->conn(p.flow)->expires, h_->jiffies() + h_->timeouts().jiffies[MP_TMO_TCP_CLOSED])
      << "closed: it lives tcp_closed";
  EXPECT_EQ(h_->health(p.ep).closed, 1u);
  EXPECT_EQ(h_->svcStats(kSvcTcp4).packets, 8u) << "every packet, from the slot or not";

  // IPv6, closed by the client's RST; an ACK before the SYN-ACK is half-open's, not cached.
  const Flow g = tcp6(40012);
  const Pick q = pick(g);
  send({toEndpoint("SYN", g, kTcpSyn, q.ep, q.snat, Cache::kNone),
        toEndpoint("an ACK before the SYN-ACK: half-open, no slot", g, kTcpAck, q.ep, q.snat,
                   Cache::kNone),
        toClient("the endpoint's SYN-ACK", g, kTcpSyn | kTcpAck, q.ep, q.snat),
        toEndpoint("first ACK after it: a miss", g, kTcpAck, q.ep, q.snat, Cache::kMiss),
        toEndpoint("data: from the slot", g, kTcpAck | kTcpPsh, q.ep, q.snat, Cache::kHit),
        toEndpoint("the client's RST: not from the slot", g, kTcpRst | kTcpAck, q.ep, q.snat,
                   Cache::kNone)});
  EXPECT_EQ(connFlags(q.flow), MP_CONN_F_COUNTED | MP_CONN_F_RST);
  EXPECT_EQ(h_->health(q.ep).closed, 1u);
}

TEST_F(FlowCacheTest, GenerationBumpMakesTheNextPacketAMissThatRefills) {
  build();
  const Flow f = udp4(40021);
  const Pick p = pick(f);
  send(establish(f, p.ep, p.snat));
  send({toEndpoint("a packet: fills the slot", f, 0, p.ep, p.snat, Cache::kMiss),
        toEndpoint("the next: from the slot", f, 0, p.ep, p.snat, Cache::kHit)});
  const uint64_t gen = h_->lb().forwardingGeneration();
  const uint64_t conflicts = stats().conflicts;
  h_->lb().bumpForwardingGeneration();
  EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 1);
  send({toEndpoint("after the bump: the slot is stale, the slow path", f, 0, p.ep, p.snat,
                   Cache::kMiss),
        toEndpoint("the slot refilled under the new generation", f, 0, p.ep, p.snat, Cache::kHit)});
  EXPECT_EQ(stats().conflicts, conflicts) << "a stale slot is no other flow's";
}

// meshd takes an endpoint out as BpfDataplane does: the service's ring without it (the half
// packets do not read, then the flip), its mp_endpoints entry cleared, then the bump. The flow's
// next packet goes to the other endpoint. Without the bump too: a slot serves only while its
// endpoint is in use by the slot's service, so a missed bump never sends a packet to an
// endpoint that left.
TEST_F(FlowCacheTest, FlowOfARemovedEndpointMovesWithOrWithoutTheBump) {
  for (const bool bump : {true, false}) {
    SCOPED_TRACE(bump ? "meshd bumps the generation" : "no bump");
    build();
    const Flow f = udp4(40031);
    const Pick p = pick(f);
    const uint32_t removed = p.ep, other = otherEndpoint(removed);
    send(establish(f, removed, p.snat));
    send({toEndpoint("a packet: fills the slot", f, 0, removed, p.snat, Cache::kMiss),
          toEndpoint("the next: from the slot", f, 0, removed, p.snat, Cache::kHit)});
    h_->setService(kSvcUdp4, kVip4, kUdpPort, IPPROTO_UDP, 13, {other});
    h_->removeEndpoint(removed);
    if (bump) h_->lb().bumpForwardingGeneration();
    const Pick moved = pick(f);
    ASSERT_EQ(moved.ep, other);
    // Without the bump the slot matches (counted as a hit) and its endpoint check sends the
    // packet down the slow path; what is counted is not the point, where it goes is. The flow
    // starts over, half-open: no slot until the other endpoint answers.
    send({toEndpoint("next packet: the other endpoint", f, 0, other, moved.snat,
                     bump ? Cache::kNone : Cache::kAny),
          toClient("the other endpoint answers", f, 0, other, moved.snat),
          toEndpoint("established again: fills the slot", f, 0, other, moved.snat, Cache::kMiss),
          toEndpoint("then from the slot refilled for it", f, 0, other, moved.snat, Cache::kHit)});
    EXPECT_EQ(h_->epStats(removed).packets, 4u) << "nothing more reached the removed endpoint";
    EXPECT_EQ(h_->epStats(other).packets, 4u);
    EXPECT_EQ(h_->svcStats(kSvcUdp4).new_conns, 2u) << "the flow started over";
    const auto conn = h_->conn(p.flow);
    ASSERT_TRUE(conn);
    EXPECT_EQ(conn->ep_id, other);
  }
}

// The program's own change of where a flow goes: the client's SYN on an established connection
// whose endpoint is marked down is re-picked onto a live endpoint (mp_conn_endpoint) when the
// connection is closed (a reopen) or its reopening SYN was never answered. meshd may not know
// yet, so only the program's bump of the generation stales the slot the flow's ACKs filled: the
// next ACK must go to the new endpoint, not the slot's.
TEST_F(FlowCacheTest, SynRepickedOffADownEndpointBumpsAndTheNextAckFollows) {
  struct Case {
    std::string what;
    Flow flow;
    bool reopenedFirst;  // reopened while its endpoint was live, that SYN never answered, then
                         // retransmitted; else closed, then reopened once its endpoint is down
  };
  for (const Case& k : {Case{"IPv4, its reopening SYN never answered", tcp4(40041), true},
                        Case{"IPv6, closed both ways, then reopened", tcp6(40042), false}}) {
    SCOPED_TRACE(k.what);
    build();
    const Flow& f = k.flow;
    const Pick p = pick(f);
    const uint32_t down = p.ep, live = otherEndpoint(down);
    std::vector<Step> steps = establish(f, down, p.snat);
    steps.push_back(toEndpoint("an ACK from the slot", f, kTcpAck, down, p.snat, Cache::kHit));
    steps.push_back(
        toEndpoint("the client's FIN", f, kTcpFin | kTcpAck, down, p.snat, Cache::kNone));
    steps.push_back(toClient("the endpoint's FIN", f, kTcpFin | kTcpAck, down, p.snat));
    steps.push_back(
        toEndpoint("the last ACK, from the slot", f, kTcpAck, down, p.snat, Cache::kHit));
    if (k.reopenedFirst) {
      steps.push_back(
          toEndpoint("the client reopens its 5-tuple", f, kTcpSyn, down, p.snat, Cache::kNone));
    }
    send(steps);
    if (k.reopenedFirst) {
      EXPECT_EQ(connFlags(p.flow), MP_CONN_F_SYN_SENT | MP_CONN_F_COUNTED);
    }

    h_->setDown(down, true);
    const uint64_t gen = h_->lb().forwardingGeneration();
    const uint64_t downPackets = h_->epStats(down).packets;
    // The first port probe again: the reverse key names the endpoint, and toward the live one
    // the port is free.
    send({toEndpoint("the client's SYN: re-picked onto the live endpoint", f, kTcpSyn, live, p.snat,
                     Cache::kNone)});
    EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 1) << "the program bumped the generation";
    EXPECT_FALSE(h_->conn(p.flow)) << "the old connection's entry went";
    const auto moved = h_->half(p.flow);
    ASSERT_TRUE(moved) << "a new flow, half-open";
    EXPECT_EQ(moved->ep_id, live);
    send({toEndpoint("the next ACK: the new endpoint, not the slot's", f, kTcpAck, live, p.snat,
                     Cache::kNone),
          toClient("the live endpoint's SYN-ACK", f, kTcpSyn | kTcpAck, live, p.snat),
          toEndpoint("the ACK that promotes it: fills the slot", f, kTcpAck, live, p.snat,
                     Cache::kMiss),
          toEndpoint("then from the slot refilled for it", f, kTcpAck, live, p.snat, Cache::kHit)});
    EXPECT_EQ(h_->epStats(down).packets, downPackets) << "nothing more to the down endpoint";
  }
}

// Off (no slots, or a slot that would live less than a tick): every packet takes the slow path,
// forwarded the same, and the cache counts nothing.
TEST_F(FlowCacheTest, CacheOffForwardsAlikeAndCountsNothing) {
  struct Case {
    std::string what;
    LbSkeletonOptions options;
  };
  for (const Case& k :
       {Case{"flowCacheSlots 0", withSlots(0)}, Case{"a slot life of 1 ns", withSlotLife(1)}}) {
    SCOPED_TRACE(k.what);
    build(k.options);
    EXPECT_EQ(h_->lb().flowCacheSlots(), 0u);
    const Flow u = udp4(40051), t = tcp4(40052);
    const Pick pu = pick(u), pt = pick(t);
    send({toEndpoint("UDP", u, 0, pu.ep, pu.snat, Cache::kNone),
          toClient("its answer", u, 0, pu.ep, pu.snat),
          toEndpoint("UDP again", u, 0, pu.ep, pu.snat, Cache::kNone),
          toEndpoint("UDP again", u, 0, pu.ep, pu.snat, Cache::kNone),
          toEndpoint("SYN", t, kTcpSyn, pt.ep, pt.snat, Cache::kNone),
          toClient("SYN-ACK", t, kTcpSyn | kTcpAck, pt.ep, pt.snat),
          toEndpoint("ACK", t, kTcpAck, pt.ep, pt.snat, Cache::kNone),
          toEndpoint("ACK again", t, kTcpAck, pt.ep, pt.snat, Cache::kNone)});
    EXPECT_TRUE(h_->conn(pu.flow) && h_->conn(pt.flow)) << "both established";
    const mp_flow_cache_stats s = stats();
    EXPECT_EQ(s.hits + s.misses + s.conflicts + s.bypassed, 0u);
    EXPECT_EQ(h_->svcStats(kSvcUdp4).packets, 4u);
    EXPECT_EQ(h_->svcStats(kSvcTcp4).packets, 4u);
  }
}

// More live flows than slots: most lookups find another flow's slot, so after a window of
// MP_FC_WINDOW lookups with at least MP_FC_THRASH such conflicts the CPU skips the cache for
// MP_FC_BYPASS packets, then samples again. Whatever serves it, every packet goes where the slow
// path sent the flow's first: the same endpoint, the same SNAT port, in every round.
TEST_F(FlowCacheTest, MoreFlowsThanSlotsBypassTheCacheAndStillForwardAlike) {
  build(withSlots(4));
  ASSERT_EQ(h_->lb().flowCacheSlots(), 4u);
  constexpr size_t kFlows = 64;
  // A window of lookups, the bypass it earns, the next window: the rounds fill them exactly.
  constexpr size_t kRounds = (2 * MP_FC_WINDOW + MP_FC_BYPASS) / kFlows;
  static_assert(kRounds * kFlows == 2 * MP_FC_WINDOW + MP_FC_BYPASS);
  const int ingress = ifindexOf(kClientIf);
  std::vector<Bytes> in, out;
  for (size_t i = 0; i < kFlows; ++i) {
    const Flow f = udp4(static_cast<uint16_t>(45000 + i));
    in.push_back(fromClient(f, 0));
    const XdpRun run = h_->run(in.back(), ingress);
    ASSERT_EQ(run.error, 0);
    ASSERT_STREQ(verdictName(run.verdict), "XDP_REDIRECT") << "flow " << i;
    // Maglev's endpoint; the port from the entry (two flows' first probes may meet).
    const Pick p = pick(f);
    const auto conn = h_->half(p.flow);
    ASSERT_TRUE(conn);
    ASSERT_EQ(conn->ep_id, p.ep);
    const Bytes want = atEndpoint(f, 0, p.ep, ntohs(conn->snat_port));
    ASSERT_TRUE(run.output == want) << describeMismatch(want, run.output);
    out.push_back(run.output);
    // The endpoint answers: established, so its later packets may use the cache.
    const Step answer = toClient("answer", f, 0, p.ep, ntohs(conn->snat_port));
    ASSERT_EQ(h_->run(answer.packet.input, ifindexOf(kEndpointIf)).verdict, uint32_t{XDP_REDIRECT});
    ASSERT_TRUE(h_->conn(p.flow)) << "flow " << i;
  }
  ASSERT_EQ(stats().hits + stats().misses, 0u) << "half-open packets count no lookup";
  for (size_t round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < kFlows; ++i) {
      const XdpRun run = h_->run(in[i], ingress);
      ASSERT_EQ(run.verdict, uint32_t{XDP_REDIRECT}) << "round " << round << ", flow " << i;
      ASSERT_TRUE(run.output == out[i])
          << "round " << round << ", flow " << i << ": " << describeMismatch(out[i], run.output);
    }
  }
  const mp_flow_cache_stats s = stats();
  EXPECT_EQ(s.hits + s.misses, 2 * MP_FC_WINDOW) << "looked up in two windows";
  EXPECT_EQ(s.bypassed, MP_FC_BYPASS) << "and skipped between them";
  EXPECT_GE(s.conflicts, 2 * MP_FC_THRASH) << "each window thrashed";
  EXPECT_EQ(h_->svcStats(kSvcUdp4).packets, (kRounds + 2) * kFlows);
  EXPECT_EQ(h_->svcStats(kSvcUdp4).new_conns, kFlows);

  // The flows dwindle to one, which fits: the second window thrashed too, so this CPU skips
  // another MP_FC_BYPASS packets, then samples again and serves the flow from its slot.
  for (size_t n = 0; n < MP_FC_BYPASS + 8; ++n) {
    const XdpRun run = h_->run(in[0], ingress);
    ASSERT_TRUE(run.output == out[0])
        << "packet " << n << ": " << describeMismatch(out[0], run.output);
  }
  const mp_flow_cache_stats later = stats();
  EXPECT_EQ(later.bypassed, 2 * MP_FC_BYPASS);
  EXPECT_GE(later.hits - s.hits, 7u) << "all but the first lookup after the bypass";
}

// The malformed frames of malformed_cases.h carry the 5-tuples of valid flows whose slots are
// live (their TCP ones as plain ACKs, which a slot would serve): refused by the parser, they get
// their verdict and counter, and are never looked up.
TEST_F(FlowCacheTest, MalformedFramesAreNeverServedFromAWarmCache) {
  build();
  for (const Flow& f : {tcp4(40000), tcp6(40000), udp4(5000), udp6(5000)}) {
    SCOPED_TRACE(f.client + (f.proto == IPPROTO_TCP ? " TCP" : " UDP"));
    const Pick p = pick(f);
    send(establish(f, p.ep, p.snat));
    if (f.proto == IPPROTO_UDP) {
      send({toEndpoint("warm: fills the slot", f, 0, p.ep, p.snat, Cache::kMiss)});
    }
    send({toEndpoint("warm: from the slot", f, kTcpAck, p.ep, p.snat, Cache::kHit)});
  }
  const mp_flow_cache_stats before = stats();
  runTable(*h_, malformedTable(*h_, kTcpAck));
  const mp_flow_cache_stats after = stats();
  EXPECT_EQ(after.hits, before.hits);
  EXPECT_EQ(after.misses, before.misses);
  for (uint32_t svc : {kSvcTcp4, kSvcUdp4, kSvcTcp6, kSvcUdp6}) {
    EXPECT_EQ(h_->svcStats(svc).packets, 4u) << "only the warming packets reached service " << svc;
  }
}

// The expectation, as the slow path meets it: the cache off.
TEST_F(FlowCacheTest, PortTakenOverFromAnExpiredFlowCacheOff) {
  build(withSlots(0));
  portTakenOverFromAnExpiredFlow();
}

// The expired flow's slot still names the port and would be live (same generation, within
// flow_cache_ttl), so without a bump its next packet would be served from it, node:port -> the
// endpoint, into the connection that took the port over. A takeover of an established entry
// (mp_snat_take_established) bumps mp_fwd_gen.
TEST_F(FlowCacheTest, PortTakenOverFromAnExpiredFlowIsNotServedFromItsSlot) {
  build();
  const uint64_t gen = h_->lb().forwardingGeneration();
  portTakenOverFromAnExpiredFlow();
  EXPECT_EQ(h_->lb().forwardingGeneration(), gen + 1);
}

}  // namespace
}  // namespace meshpath::testing
