// SYN protection in the XDP balancer (bpf/syncookie.h, synproxy.h, synguard.h, the mp_xdp_syn
// program), run for real with BPF_PROG_RUN in the tests' network namespace (lb_harness.h): the
// cookie SYN-ACK, the valid ACK that opens the connection to the endpoint with the client's
// options, the endpoint's SYN-ACK that becomes the client's window update, every later segment
// translated both ways (sequence numbers, timestamps, SACK edges, FIN, RST), cookies that must
// not pass (bad, old, none), connect retries on a refusing endpoint, and the auto switch. IPv4
// and IPv6, both NAT modes. Each output frame is parsed and checked field by field, and its
// checksums recomputed from scratch.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lb_harness.h"
#include "packet.h"
#include "syncookie.h"
#include "synproxy.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint16_t kVipPort = 80, kEpPort = 8080, kClientPort = 40000;
constexpr uint32_t kClientIsn = 0x10000000;
constexpr uint32_t kClientTs = 1000;  // the client's TSval on its SYN
constexpr mp_syn_secret kKey{0x0123456789abcdefull, 0xfedcba9876543210ull};

// A TCP segment of an output frame, as the client or endpoint would read it.
struct Segment {
  Mac ethSrc{}, ethDst{};
  std::string src, dst;
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  std::optional<uint16_t> mss;
  std::optional<uint8_t> wscale;
  bool sackOk = false;
  std::optional<std::pair<uint32_t, uint32_t>> ts;  // TSval, TSecr
  std::vector<std::pair<uint32_t, uint32_t>> sack;
  std::string payload;
};

uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

std::string addrText(int family, const uint8_t* a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, a, buf, sizeof(buf));
  return buf;
}

Segment parse(const Bytes& f) {
  Segment s;
  std::memcpy(s.ethDst.data(), f.data(), 6);
  std::memcpy(s.ethSrc.data(), f.data() + 6, 6);
  const uint16_t type = be16(&f[12]);
  size_t l4 = 0, end = f.size();
  if (type == 0x0800) {
    s.src = addrText(4, &f[14 + 12]);
    s.dst = addrText(4, &f[14 + 16]);
    l4 = 14 + (f[14] & 0xf) * 4u;
    end = 14 + be16(&f[16]);
  } else {
    s.src = addrText(6, &f[14 + 8]);
    s.dst = addrText(6, &f[14 + 24]);
    l4 = 14 + 40;
    end = l4 + be16(&f[18]);
  }
  const uint8_t* t = &f[l4];
  s.sport = be16(t);
  s.dport = be16(t + 2);
  s.seq = be32(t + 4);
  s.ack = be32(t + 8);
  s.flags = t[13];
  s.window = be16(t + 14);
  const size_t hlen = (t[12] >> 4) * 4u;
  for (size_t i = 20; i < hlen;) {
    const uint8_t kind = t[i];
    if (kind == 0) break;
    if (kind == 1) {
      ++i;
      continue;
    }
    const uint8_t len = t[i + 1];
    if (kind == 2) s.mss = be16(t + i + 2);
    if (kind == 3) s.wscale = t[i + 2];
    if (kind == 4) s.sackOk = true;
    if (kind == 8) s.ts = {be32(t + i + 2), be32(t + i + 6)};
    if (kind == 5) {
      for (size_t b = 2; b + 8 <= len; b += 8)
        s.sack.emplace_back(be32(t + i + b), be32(t + i + b + 4));
    }
    i += len;
  }
  s.payload.assign(reinterpret_cast<const char*>(t + hlen), end - l4 - hlen);
  return s;
}

// The options Linux puts on a SYN: MSS, SACK-permitted, timestamps, NOP, window scale.
Bytes synOptions(uint16_t mss, std::optional<uint32_t> tsval, uint8_t wscale = 7,
                 bool sack = true) {
  Bytes o = {2, 4, static_cast<uint8_t>(mss >> 8), static_cast<uint8_t>(mss)};
  if (sack) o.insert(o.end(), {4, 2});
  if (tsval) {
    o.insert(o.end(), {8, 10});
    for (int i = 3; i >= 0; --i) o.push_back(static_cast<uint8_t>(*tsval >> (8 * i)));
    o.insert(o.end(), {0, 0, 0, 0});
  }
  o.insert(o.end(), {1, 3, 3, wscale});
  return o;
}

Bytes tsOption(uint32_t val, uint32_t ecr) {
  Bytes o = {1, 1, 8, 10};
  for (int i = 3; i >= 0; --i) o.push_back(static_cast<uint8_t>(val >> (8 * i)));
  for (int i = 3; i >= 0; --i) o.push_back(static_cast<uint8_t>(ecr >> (8 * i)));
  return o;
}

Bytes sackOption(uint32_t left, uint32_t right) {
  Bytes o = {1, 1, 5, 10};
  for (int i = 3; i >= 0; --i) o.push_back(static_cast<uint8_t>(left >> (8 * i)));
  for (int i = 3; i >= 0; --i) o.push_back(static_cast<uint8_t>(right >> (8 * i)));
  return o;
}

uint32_t taiCount() {
  timespec ts{};
  clock_gettime(CLOCK_TAI, &ts);
  return mp_cookie_count(static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
                         static_cast<uint64_t>(ts.tv_nsec));
}

struct Family {
  const char* name;
  const char* vip;
  const char* client;
  const char* node;
  const char* ep1;
  const char* ep2;
};
const Family kV4{"v4", kVip4, kClient4, kNode4, kEndpoint1v4, kEndpoint2v4};
const Family kV6{"v6", kVip6, kClient6, kNode6, kEndpoint1v6, kEndpoint2v6};

constexpr uint32_t kSvc = 7, kEp1 = 1, kEp2 = 2;

class SynProxyTest : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    ASSERT_EQ(prepareBpfTest(), "");
    pin_ = std::make_unique<CpuPin>();
    h_ = std::make_unique<LbHarness>();
    h_->setNode(kNode4, kNode6);
    h_->setSynSecret(kKey);
  }

  // Service kSvc (TCP, GetParam()'s family) over both endpoints, with these mp_svc.flags.
  void service(uint16_t flags, uint8_t fwdMode = MP_FWD_NAT) {
    const Family& f = GetParam();
    h_->setEndpoint(kEp1, f.ep1, kEpPort, kSvc);
    h_->setEndpoint(kEp2, f.ep2, kEpPort, kSvc);
    h_->setService(kSvc, f.vip, kVipPort, IPPROTO_TCP, 2, {kEp1, kEp2}, MP_ALG_MAGLEV, fwdMode);
    h_->setServiceFlags(kSvc, flags);
  }

  Bytes fromClient(uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& options,
                   const std::string& payload = "", uint16_t sport = kClientPort) const {
    const Family& f = GetParam();
    Packet p;
    p.eth(kClientMac, kClientIfMac);
    if (f.vip == std::string(kVip4)) {
      p.ipv4(f.client, f.vip);
    } else {
      p.ipv6(f.client, f.vip);
    }
    p.tcp(sport, kVipPort, flags, seq, ack).tcpOptions(options).tcpWindow(502);
    if (!payload.empty()) p.payload(payload);
    return p.build();
  }

  // A segment from endpoint epAddr to the node (nat) or the client (dnat) at port dport.
  Bytes fromEndpoint(const std::string& epAddr, const std::string& to, uint16_t dport,
                     uint8_t flags, uint32_t seq, uint32_t ack, const Bytes& options,
                     const std::string& payload = "", uint16_t window = 65160) const {
    Packet p;
    p.eth(kEndpoint1Mac, kEndpointIfMac);
    if (epAddr.find(':') == std::string::npos) {
      p.ipv4(epAddr, to);
    } else {
      p.ipv6(epAddr, to);
    }
    p.tcp(kEpPort, dport, flags, seq, ack).tcpOptions(options).tcpWindow(window);
    if (!payload.empty()) p.payload(payload);
    return p.build();
  }

  mp_flow clientFlow(uint16_t sport = kClientPort) const {
    const Family& f = GetParam();
    mp_flow flow{};
    const AbiAddr c = abiAddr(f.client), v = abiAddr(f.vip);
    std::memcpy(flow.src, c.bytes.data(), 16);
    std::memcpy(flow.dst, v.bytes.data(), 16);
    flow.sport = htons(sport);
    flow.dport = htons(kVipPort);
    flow.proto = IPPROTO_TCP;
    flow.family = c.family;
    return flow;
  }

  XdpRun send(const Bytes& frame, const char* ingress) const {
    return h_->run(frame, ifindexOf(ingress));
  }

  // The handshake up to the client's valid ACK: answers the SYN-ACK it got and the SYN the
  // endpoint got.
  std::pair<Segment, Segment> openToEndpoint(uint16_t sport = kClientPort) {
    const XdpRun synack =
        send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs), "", sport), kClientIf);
    EXPECT_EQ(synack.verdict, XDP_TX);
    const Segment sa = parse(synack.output);
    const XdpRun syn =
        send(fromClient(kTcpAck, kClientIsn + 1, sa.seq + 1,
                        tsOption(kClientTs + 10, sa.ts ? sa.ts->first : 0), "", sport),
             kClientIf);
    EXPECT_EQ(syn.verdict, XDP_REDIRECT) << verdictName(syn.verdict);
    EXPECT_EQ(verifyChecksums(syn.output), "");
    return {sa, parse(syn.output)};
  }

  std::unique_ptr<CpuPin> pin_;
  std::unique_ptr<LbHarness> h_;
};

TEST_P(SynProxyTest, SynIsAnsweredWithACookieAndNothingIsKept) {
  service(MP_SVC_F_SYN_ALWAYS);
  const Family& f = GetParam();
  const XdpRun r = send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs)), kClientIf);
  ASSERT_EQ(r.verdict, XDP_TX) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  const Segment s = parse(r.output);
  EXPECT_EQ(s.ethDst, parseMac(kClientMac));  // back to whoever sent it
  EXPECT_EQ(s.ethSrc, parseMac(kClientIfMac));
  EXPECT_EQ(s.src, f.vip);
  EXPECT_EQ(s.dst, f.client);
  EXPECT_EQ(s.sport, kVipPort);
  EXPECT_EQ(s.dport, kClientPort);
  EXPECT_EQ(s.flags, kTcpSyn | kTcpAck);
  EXPECT_EQ(s.ack, kClientIsn + 1);
  EXPECT_EQ(s.window, 0) << "the window stays closed until the endpoint answers";
  EXPECT_EQ(s.mss, f.vip == std::string(kVip4) ? 1460 : 1440);
  EXPECT_EQ(s.wscale, MP_SYN_WSCALE);
  EXPECT_TRUE(s.sackOk);
  ASSERT_TRUE(s.ts.has_value());
  EXPECT_EQ(s.ts->second, kClientTs);
  EXPECT_EQ(s.ts->first & MP_SYNOPT_TSVAL_MASK, 7u | MP_SYNOPT_SACK)
      << "the client's window scale and SACK-permitted ride in the TSval";
  // The cookie is genuine, for this tuple and ISN, and carries the client's MSS (index 3).
  const mp_flow flow = clientFlow(), other = clientFlow(kClientPort + 1);
  EXPECT_EQ(mp_cookie_check(&kKey, &flow, kClientIsn, s.seq, taiCount()), 3);
  EXPECT_EQ(mp_cookie_check(&kKey, &other, kClientIsn, s.seq, taiCount()), -1);
  EXPECT_FALSE(h_->anyConn(clientFlow()).has_value());
  EXPECT_EQ(LbHarness::entriesOf(h_->lb().halfFd()), 0u);
  EXPECT_EQ(LbHarness::entriesOf(h_->lb().hrnatFd()), 0u);
  EXPECT_EQ(h_->synStats(kSvc).cookies_sent, 1u);
}

TEST_P(SynProxyTest, ValidAckOpensTheConnectionWithTheClientsOptions) {
  service(MP_SVC_F_SYN_ALWAYS);
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  EXPECT_EQ(syn.flags, kTcpSyn);
  EXPECT_EQ(syn.seq, kClientIsn) << "the endpoint sees the client's own ISN";
  EXPECT_EQ(syn.src, f.node);
  EXPECT_TRUE(syn.dst == f.ep1 || syn.dst == f.ep2) << syn.dst;
  EXPECT_EQ(syn.dport, kEpPort);
  EXPECT_EQ(syn.mss, 1460);
  EXPECT_EQ(syn.wscale, 7);
  EXPECT_TRUE(syn.sackOk);
  ASSERT_TRUE(syn.ts.has_value());
  EXPECT_EQ(syn.ts->first, kClientTs + 10) << "the client's clock, as later segments carry it";
  const auto half = h_->half(clientFlow());
  ASSERT_TRUE(half.has_value());
  EXPECT_EQ(half->flags & (MP_CONN_F_PROXY | MP_CONN_F_SYN_SENT),
            MP_CONN_F_PROXY | MP_CONN_F_SYN_SENT);
  EXPECT_EQ(half->seq_off, sa.seq);
  EXPECT_EQ(htons(half->snat_port), syn.sport);
  EXPECT_FALSE(h_->conn(clientFlow()).has_value());
  EXPECT_EQ(h_->synStats(kSvc).acks_valid, 1u);
}

TEST_P(SynProxyTest, TheConnectionRunsTranslatedBothWays) {
  service(MP_SVC_F_SYN_ALWAYS);
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  const uint32_t cookie = sa.seq, ourTs = sa.ts->first, epIsn = 0x70000000, epTs = 555555;

  // The endpoint's SYN-ACK becomes the client's window update.
  XdpRun r = send(fromEndpoint(syn.dst, f.node, syn.sport, kTcpSyn | kTcpAck, epIsn, kClientIsn + 1,
                               synOptions(1460, epTs)),
                  kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  Segment s = parse(r.output);
  EXPECT_EQ(s.src, f.vip);
  EXPECT_EQ(s.dst, f.client);
  EXPECT_EQ(s.flags, kTcpAck);
  EXPECT_EQ(s.seq, cookie + 1);
  EXPECT_EQ(s.ack, kClientIsn + 1);
  EXPECT_EQ(s.window, 65160 >> 7) << "a SYN's window is unscaled; the client scales by 7";
  ASSERT_TRUE(s.ts.has_value());
  EXPECT_EQ(s.ts->first, ourTs);
  const auto conn = h_->conn(clientFlow());
  ASSERT_TRUE(conn.has_value()) << "established on the endpoint's SYN-ACK";
  EXPECT_EQ(conn->seq_off, epIsn - cookie);
  EXPECT_EQ(conn->ts_off, epTs - ourTs);
  EXPECT_FALSE(h_->half(clientFlow()).has_value());

  // The client's request: its ACK and TSecr move into the endpoint's spaces.
  r = send(fromClient(kTcpAck | kTcpPsh, kClientIsn + 1, cookie + 1,
                      tsOption(kClientTs + 20, ourTs), "GET /"),
           kClientIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  s = parse(r.output);
  EXPECT_EQ(s.dst, syn.dst);
  EXPECT_EQ(s.seq, kClientIsn + 1);
  EXPECT_EQ(s.ack, epIsn + 1);
  EXPECT_EQ(s.ts, std::make_pair(kClientTs + 20, epTs));
  EXPECT_EQ(s.payload, "GET /");

  // The answer: its sequence number and TSval move into the client's view.
  r = send(fromEndpoint(syn.dst, f.node, syn.sport, kTcpAck | kTcpPsh, epIsn + 1, kClientIsn + 6,
                        tsOption(epTs + 3, kClientTs + 20), "200 OK", 500),
           kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  s = parse(r.output);
  EXPECT_EQ(s.src, f.vip);
  EXPECT_EQ(s.seq, cookie + 1);
  EXPECT_EQ(s.ack, kClientIsn + 6);
  EXPECT_EQ(s.ts, std::make_pair(ourTs + 3, kClientTs + 20));
  EXPECT_EQ(s.window, 500) << "both sides scale by 7: unchanged";
  EXPECT_EQ(s.payload, "200 OK");

  // SACK edges from the client are in the endpoint's space once translated.
  Bytes opts = tsOption(kClientTs + 30, ourTs + 3);
  const Bytes sack = sackOption(cookie + 100, cookie + 200);
  opts.insert(opts.end(), sack.begin(), sack.end());
  r = send(fromClient(kTcpAck, kClientIsn + 6, cookie + 7, opts), kClientIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT);
  EXPECT_EQ(verifyChecksums(r.output), "");
  s = parse(r.output);
  ASSERT_EQ(s.sack.size(), 1u);
  EXPECT_EQ(s.sack[0], std::make_pair(epIsn + 100, epIsn + 200));

  // FIN from the client, RST from the endpoint: translated, and the connection closes.
  r = send(fromClient(kTcpFin | kTcpAck, kClientIsn + 6, cookie + 7,
                      tsOption(kClientTs + 40, ourTs + 3)),
           kClientIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT);
  s = parse(r.output);
  EXPECT_EQ(s.ack, epIsn + 7);
  EXPECT_TRUE(h_->conn(clientFlow())->flags & MP_CONN_F_FIN_CLIENT);
  r = send(fromEndpoint(syn.dst, f.node, syn.sport, kTcpRst, epIsn + 7, 0, {}), kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT);
  EXPECT_EQ(verifyChecksums(r.output), "");
  s = parse(r.output);
  EXPECT_EQ(s.flags, kTcpRst);
  EXPECT_EQ(s.seq, cookie + 7);
  EXPECT_TRUE(h_->conn(clientFlow())->flags & MP_CONN_F_RST);
}

TEST_P(SynProxyTest, ServerFirstEndpointGetsItsAckFromTheProxy) {
  service(MP_SVC_F_SYN_ALWAYS);
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  const uint32_t epIsn = 0x70000000;
  const Bytes synack = fromEndpoint(syn.dst, f.node, syn.sport, kTcpSyn | kTcpAck, epIsn,
                                    kClientIsn + 1, synOptions(1460, 4242));
  ASSERT_EQ(send(synack, kEndpointIf).verdict, XDP_REDIRECT);
  // The client had nothing to say, so the endpoint repeats its SYN-ACK: the proxy ACKs it.
  const XdpRun r = send(synack, kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_TX) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  const Segment s = parse(r.output);
  EXPECT_EQ(s.src, f.node);
  EXPECT_EQ(s.dst, syn.dst);
  EXPECT_EQ(s.flags, kTcpAck);
  EXPECT_EQ(s.seq, kClientIsn + 1);
  EXPECT_EQ(s.ack, epIsn + 1);
  EXPECT_EQ(s.ethDst, parseMac(kEndpoint1Mac));
  (void)sa;
}

TEST_P(SynProxyTest, BadOldAndMissingCookiesAreDroppedAndCreateNothing) {
  service(MP_SVC_F_SYN_ALWAYS);
  const XdpRun synack =
      send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs)), kClientIf);
  const Segment sa = parse(synack.output);
  const Bytes ts = tsOption(kClientTs + 10, sa.ts->first);
  const mp_flow flow = clientFlow();
  const uint32_t now = taiCount();
  const uint32_t oldCookie = mp_cookie_make(&kKey, &flow, kClientIsn, now - 2, 3);
  const uint32_t lastCount = mp_cookie_make(&kKey, &flow, kClientIsn, now - 1, 3);
  struct Case {
    const char* what;
    uint32_t seq, ack;
  } cases[] = {
      {"a cookie off by one", kClientIsn + 1, sa.seq + 2},
      {"the cookie for another ISN", kClientIsn + 2, sa.seq + 1},
      {"a cookie two clock counts old (replayed)", kClientIsn + 1, oldCookie + 1},
      {"no cookie at all", kClientIsn + 1, 1},
  };
  for (const Case& c : cases) {
    const XdpRun r = send(fromClient(kTcpAck, c.seq, c.ack, ts), kClientIf);
    EXPECT_EQ(r.verdict, XDP_DROP) << c.what;
  }
  EXPECT_EQ(h_->exceptions(MP_EXC_DROP_SYN_COOKIE), 4u);
  EXPECT_EQ(h_->synStats(kSvc).acks_invalid, 4u);
  EXPECT_EQ(h_->synStats(kSvc).acks_valid, 0u);
  EXPECT_EQ(LbHarness::entriesOf(h_->lb().halfFd()), 0u);
  EXPECT_EQ(LbHarness::entriesOf(h_->lb().connsFd()), 0u);
  // A cookie of the previous count is still good (a SYN-ACK may be up to a count old).
  EXPECT_EQ(send(fromClient(kTcpAck, kClientIsn + 1, lastCount + 1, ts), kClientIf).verdict,
            XDP_REDIRECT);
}

TEST_P(SynProxyTest, ARefusingEndpointIsRetriedOnTheNextBeforeTheClientSeesARst) {
  service(MP_SVC_F_SYN_ALWAYS | (1u << MP_SVC_RETRIES_SHIFT));
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  const uint32_t first = syn.dst == f.ep1 ? kEp1 : kEp2;
  // The endpoint's kernel refuses (no server): RST|ACK answering the SYN.
  XdpRun r =
      send(fromEndpoint(syn.dst, f.node, syn.sport, kTcpRst | kTcpAck, 0, kClientIsn + 1, {}),
           kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_TX) << "back out of the endpoints' side: " << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  Segment s = parse(r.output);
  EXPECT_EQ(s.flags, kTcpSyn);
  EXPECT_EQ(s.seq, kClientIsn);
  EXPECT_NE(s.dst, syn.dst) << "the retry goes to the other endpoint";
  EXPECT_EQ(s.mss, 1460);
  EXPECT_EQ(h_->synStats(kSvc).retries, 1u);
  EXPECT_EQ(h_->health(first).fails, 0u) << "passive detection is off (fall 0) in this test";
  auto half = h_->half(clientFlow());
  ASSERT_TRUE(half.has_value());
  EXPECT_EQ(half->retries, 1);
  EXPECT_NE(half->ep_id, first);

  // The second refuses too, and the retries are spent: the client gets a RST.
  r = send(fromEndpoint(s.dst, f.node, s.sport, kTcpRst | kTcpAck, 0, kClientIsn + 1, {}),
           kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  EXPECT_EQ(verifyChecksums(r.output), "");
  s = parse(r.output);
  EXPECT_EQ(s.flags, kTcpRst);
  EXPECT_EQ(s.src, f.vip);
  EXPECT_EQ(s.dst, f.client);
  EXPECT_EQ(s.seq, sa.seq + 1);
  EXPECT_EQ(h_->synStats(kSvc).retries_failed, 1u);
  EXPECT_FALSE(h_->half(clientFlow()).has_value());
}

TEST_P(SynProxyTest, AZeroWindowProbeOpensWhenTheAckWasLost) {
  service(MP_SVC_F_SYN_ALWAYS);
  const XdpRun synack =
      send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs)), kClientIf);
  const Segment sa = parse(synack.output);
  // The client's ACK never arrived; its persist timer probes the closed window with
  // snd_una - 1, the ISN itself.
  const XdpRun r =
      send(fromClient(kTcpAck, kClientIsn, sa.seq + 1, tsOption(kClientTs + 200, sa.ts->first)),
           kClientIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  const Segment syn = parse(r.output);
  EXPECT_EQ(syn.flags, kTcpSyn);
  EXPECT_EQ(syn.seq, kClientIsn);
  EXPECT_EQ(h_->synStats(kSvc).acks_valid, 1u);
  // With a payload it is no probe, and seq - 1 is no ISN the cookie was made for.
  const XdpRun data =
      send(fromClient(kTcpAck, kClientIsn, sa.seq + 1, tsOption(kClientTs + 200, sa.ts->first), "x",
                      kClientPort + 1),
           kClientIf);
  EXPECT_EQ(data.verdict, XDP_DROP);
}

TEST_P(SynProxyTest, AClosedTupleReusedOpensAFreshConnection) {
  service(MP_SVC_F_SYN_ALWAYS);
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  ASSERT_EQ(send(fromEndpoint(syn.dst, f.node, syn.sport, kTcpSyn | kTcpAck, 0x70000000,
                              kClientIsn + 1, synOptions(1460, 4242)),
                 kEndpointIf)
                .verdict,
            XDP_REDIRECT);
  ASSERT_EQ(send(fromClient(kTcpRst, kClientIsn + 1, 0, {}), kClientIf).verdict, XDP_REDIRECT);
  ASSERT_TRUE(h_->conn(clientFlow())->flags & MP_CONN_F_RST);
  // The same tuple again, with a new ISN: the SYN is answered by a cookie, the ACK retires the
  // closed entry and opens anew.
  const uint32_t isn2 = kClientIsn + 0x01000000;
  const XdpRun synack2 =
      send(fromClient(kTcpSyn, isn2, 0, synOptions(1460, kClientTs + 500)), kClientIf);
  ASSERT_EQ(synack2.verdict, XDP_TX);
  const Segment sa2 = parse(synack2.output);
  const XdpRun r =
      send(fromClient(kTcpAck, isn2 + 1, sa2.seq + 1, tsOption(kClientTs + 510, sa2.ts->first)),
           kClientIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  const Segment s = parse(r.output);
  EXPECT_EQ(s.flags, kTcpSyn);
  EXPECT_EQ(s.seq, isn2);
  EXPECT_FALSE(h_->conn(clientFlow()).has_value()) << "the closed entry is gone";
  ASSERT_TRUE(h_->half(clientFlow()).has_value());
  EXPECT_EQ(h_->half(clientFlow())->seq_off, sa2.seq);
}

TEST_P(SynProxyTest, DnatKeepsTheClientsAddress) {
  service(MP_SVC_F_SYN_ALWAYS, MP_FWD_DNAT);
  const Family& f = GetParam();
  const auto [sa, syn] = openToEndpoint();
  EXPECT_EQ(syn.src, f.client);
  EXPECT_EQ(syn.sport, kClientPort);
  const XdpRun r = send(fromEndpoint(syn.dst, f.client, kClientPort, kTcpSyn | kTcpAck, 0x70000000,
                                     kClientIsn + 1, synOptions(1460, 9)),
                        kEndpointIf);
  ASSERT_EQ(r.verdict, XDP_REDIRECT) << verdictName(r.verdict);
  const Segment s = parse(r.output);
  EXPECT_EQ(s.src, f.vip);
  EXPECT_EQ(s.seq, sa.seq + 1);
  EXPECT_TRUE(h_->conn(clientFlow()).has_value());
}

TEST_P(SynProxyTest, AutoTurnsOnWhenSynsGoUnanswered) {
  service(MP_SVC_F_SYN_AUTO);
  h_->setSynFloodThreshold(4);
  for (uint16_t i = 0; i < 4; ++i) {
    const XdpRun r = send(
        fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs), "", 30000 + i), kClientIf);
    EXPECT_EQ(r.verdict, XDP_REDIRECT) << "protection off: the SYN goes to its endpoint";
  }
  EXPECT_EQ(h_->synGuard(kSvc).on, 1u);
  EXPECT_EQ(h_->synGuard(kSvc).switched_on, 1u);
  const XdpRun r =
      send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1460, kClientTs), "", 31000), kClientIf);
  EXPECT_EQ(r.verdict, XDP_TX) << "protection on: a cookie answers";
  EXPECT_EQ(h_->synStats(kSvc).cookies_sent, 1u);
}

TEST_P(SynProxyTest, WithoutTimestampsNoScalingNoSack) {
  service(MP_SVC_F_SYN_ALWAYS);
  const XdpRun r =
      send(fromClient(kTcpSyn, kClientIsn, 0, synOptions(1300, std::nullopt)), kClientIf);
  ASSERT_EQ(r.verdict, XDP_TX);
  const Segment sa = parse(r.output);
  EXPECT_FALSE(sa.ts.has_value());
  EXPECT_FALSE(sa.wscale.has_value());
  EXPECT_FALSE(sa.sackOk);
  const XdpRun syn = send(fromClient(kTcpAck, kClientIsn + 1, sa.seq + 1, {}), kClientIf);
  ASSERT_EQ(syn.verdict, XDP_REDIRECT);
  const Segment s = parse(syn.output);
  EXPECT_EQ(s.mss, 1220) << "1300 rounds down to the cookie's table";
  EXPECT_FALSE(s.wscale.has_value());
  EXPECT_FALSE(s.ts.has_value());
}

INSTANTIATE_TEST_SUITE_P(Families, SynProxyTest, ::testing::Values(kV4, kV6),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace meshpath::testing
