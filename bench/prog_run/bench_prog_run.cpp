// bench_prog_run — per-packet cost of the XDP balancer under BPF_PROG_RUN, each path beside the
// trivial XDP program (swap MACs, XDP_TX) measured in the same run, interleaved in blocks.
//
// Every figure is the kernel's own duration of single runs (repeat=1) averaged: with repeat=N the
// kernel would run the program again on the frame it already rewrote, so no rewriting path is
// timed that way. Every timed run's verdict is checked, and its output bytes too (all runs, or
// every 64th where the expected frame differs per run). Runs inside a private network namespace
// (the tests' topology) so bpf_fib_lookup succeeds, pinned to one CPU (the program's per-CPU
// state, the flow cache and the SNAT backoff, is that CPU's).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lb_harness.h"
#include "mp_xdp_trivial.skel.h"
#include "nat.h"
#include "packet.h"
#include "ring.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint8_t kTcp = 6;
constexpr uint16_t kEndpointBasePort = 8080;
constexpr int kEndpointPorts =
    32;  // x 2 addresses: 64 endpoints, room for 100k new flows' SNAT ports

struct Case {
  std::string name;
  int ingress;  // ifindex the frames arrive on
  // Returns the frame of run i and checks the output of that run (empty string: fine).
  std::function<const Bytes&(size_t i)> input;
  std::function<std::string(size_t i, const XdpRun& run)> check;
};

struct Figure {
  double ns = 0;
  double trivialNs = 0;
  size_t runs = 0;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_prog_run: %s\n", what.c_str());
  std::exit(1);
}

// The frame most cases time: TCP with a 16-byte payload.
Bytes tcpFrame(const std::string& smac, const std::string& dmac, const std::string& src,
               const std::string& dst, uint16_t sport, uint16_t dport, uint8_t flags) {
  return frame(Shape{.tcpFlags = flags, .payload = "0123456789abcdef"}, smac, dmac, src, dst, sport,
               dport);
}

std::string ipv4Of(uint32_t hostOrder) {
  in_addr a{htonl(hostOrder)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

class Bench {
 public:
  explicit Bench(size_t runs) : runs_(runs) {
    trivial_ = mp_xdp_trivial__open_and_load();
    if (trivial_ == nullptr) die("load mp_xdp_trivial");
  }
  ~Bench() { mp_xdp_trivial__destroy(trivial_); }

  // Interleaves blocks of the case and of the trivial program on the same frames.
  Figure measure(const Case& c, size_t runs) {
    constexpr size_t kBlock = 1000;
    Figure f;
    double sum = 0, trivialSum = 0;
    const int trivialFd = bpf_program__fd(trivial_->progs.mp_xdp_trivial);
    for (size_t start = 0; start < runs; start += kBlock) {
      const size_t end = std::min(runs, start + kBlock);
      for (size_t i = start; i < end; ++i) {
        const XdpRun run = runXdp(trivialFd, c.input(i), c.ingress);
        if (run.error != 0 || run.verdict != XDP_TX) die(c.name + ": trivial run failed");
        trivialSum += run.durationNs;
      }
      for (size_t i = start; i < end; ++i) {
        const XdpRun run = runXdp(progFd_, c.input(i), c.ingress);
        if (run.error != 0) die(c.name + ": BPF_PROG_RUN: " + std::strerror(run.error));
        if (std::string err = c.check(i, run); !err.empty()) {
          die(c.name + ", run " + std::to_string(i) + ": " + err);
        }
        sum += run.durationNs;
      }
    }
    f.runs = runs;
    f.ns = sum / static_cast<double>(runs);
    f.trivialNs = trivialSum / static_cast<double>(runs);
    return f;
  }

  void setProgram(int fd) { progFd_ = fd; }
  size_t runs() const { return runs_; }

 private:
  size_t runs_;
  int progFd_ = -1;
  mp_xdp_trivial* trivial_ = nullptr;
};

std::string expectExactly(const XdpRun& run, uint32_t verdict, const Bytes& want) {
  if (run.verdict != verdict) {
    return std::string("verdict ") + verdictName(run.verdict) + ", want " + verdictName(verdict);
  }
  if (run.output != want) return describeMismatch(want, run.output);
  return "";
}

// A balancer with one TCP service on kVip4:80 over 64 endpoints (two addresses, 32 ports), the
// default table sizes (1M established, 256k half-open) and meshd's default lifetimes.
std::unique_ptr<LbHarness> makeBalancer(uint8_t algorithm = MP_ALG_MAGLEV,
                                        uint32_t flowCacheSlots = MP_FLOW_CACHE_SLOTS_DEFAULT,
                                        uint8_t fwdMode = MP_FWD_NAT) {
  LbSkeletonOptions options;
  options.flowCacheSlots = flowCacheSlots;
  auto h = std::make_unique<LbHarness>(options);
  h->setNode(kNode4, kNode6, MP_SNAT_PORT_MIN_DEFAULT, MP_SNAT_PORT_MAX_DEFAULT);  // meshd's auto
  std::vector<uint32_t> ids;
  for (int i = 0; i < 2 * kEndpointPorts; ++i) {
    const uint32_t id = 1 + static_cast<uint32_t>(i);
    h->setEndpoint(id, i % 2 ? kEndpoint2v4 : kEndpoint1v4,
                   static_cast<uint16_t>(kEndpointBasePort + i / 2), 0);
    ids.push_back(id);
  }
  // The ring meshd gives such a service by default (node.ring_size auto, ring.h).
  h->setService(0, kVip4, 80, kTcp, autoRingSize(ids.size()), ids, algorithm, fwdMode);
  return h;
}

// The nonzero mp_exc counters, for a failed check.
std::string exceptionsOf(const LbHarness& h) {
  std::string out;
  for (uint32_t r = 0; r < MP_EXC_MAX; ++r) {
    if (uint64_t n = h.exceptions(r))
      out += std::string(" ") + mp_exc_names[r] + "=" + std::to_string(n);
  }
  return out.empty() ? "" : " (mp_exc:" + out + ")";
}

struct EpView {
  std::string addr, mac;
  uint16_t port;
};
EpView endpointView(uint32_t id) {
  const int i = static_cast<int>(id) - 1;
  return {i % 2 ? kEndpoint2v4 : kEndpoint1v4, i % 2 ? kEndpoint2Mac : kEndpoint1Mac,
          static_cast<uint16_t>(kEndpointBasePort + i / 2)};
}

void report(const std::vector<std::pair<Case, Figure>>& figures) {
  // The trailing "|" ends the figures for ../shared/peers/katran/run.sh, which reads each row as
  // "<name> ns trivial-ns ratio |" and matches names by prefix.
  std::printf("\n%-46s %9s %10s %7s\n", "path (BPF_PROG_RUN repeat=1, kernel ns)", "ns/packet",
              "trivial ns", "ratio");
  for (const auto& [c, f] : figures) {
    std::printf("%-46s %9.1f %10.1f %7.2f |\n", c.name.c_str(), f.ns, f.trivialNs,
                f.ns / f.trivialNs);
  }
}

// An established connection of client:cport toward endpoint epId (node:snatPort, host order),
// written as the datapath leaves one: both entries, counted open, an hour to live.
void putEstablished(LbHarness& h, const std::string& client, uint16_t cport, uint32_t epId,
                    uint16_t snatPort) {
  mp_flow key{};
  const AbiAddr c = abiAddr(client), vip = abiAddr(kVip4);
  std::memcpy(key.src, c.bytes.data(), 16);
  std::memcpy(key.dst, vip.bytes.data(), 16);
  key.sport = htons(cport);
  key.dport = htons(80);
  key.proto = kTcp;
  key.family = MP_AF_INET;
  mp_conn conn{};
  conn.ep_id = epId;
  conn.snat_port = htons(snatPort);
  conn.flags = MP_CONN_F_COUNTED;
  conn.expires = h.jiffies() + h.jiffiesOf(3600 * 1000);
  h.put(h.lb().connsFd(), key, conn);
  mp_rnat r{};
  mp_rnat_value(&r, &key, epId);
  h.put(h.lb().rnatFd(), h.replyKey(key, conn), r);
}

// SYN protection: the cookie key of the bench's protected service (any will do; meshd draws one).
constexpr mp_syn_secret kSynKey{0x0123456789abcdefull, 0xfedcba9876543210ull};

void appendBe32(Bytes& b, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
}

// The options Linux puts on a SYN: MSS 1460, SACK-permitted, timestamps, NOP, window scale 7.
Bytes linuxSynOptions(uint32_t tsval) {
  Bytes o = {2, 4, 0x05, 0xb4, 4, 2, 8, 10};
  appendBe32(o, tsval);
  appendBe32(o, 0);
  o.insert(o.end(), {1, 3, 3, 7});
  return o;
}

// NOP, NOP, timestamps: what a Linux segment after the handshake carries.
Bytes tsOption(uint32_t tsval, uint32_t tsecr) {
  Bytes o = {1, 1, 8, 10};
  appendBe32(o, tsval);
  appendBe32(o, tsecr);
  return o;
}

// One side of a TCP segment: its MAC (source or destination), address and port.
struct Hop {
  std::string mac, addr;
  uint16_t port;
};

// An IPv4 TCP segment with options, as the SYN-protection cases send and expect them.
Bytes segment(const Hop& from, const Hop& to, uint8_t flags, uint32_t seq, uint32_t ack,
              const Bytes& options, uint16_t window, const std::string& payload = "") {
  Packet p;
  p.eth(from.mac, to.mac)
      .ipv4(from.addr, to.addr)
      .tcp(from.port, to.port, flags, seq, ack)
      .tcpOptions(options)
      .tcpWindow(window);
  if (!payload.empty()) p.payload(payload);
  return p.build();
}

// The TCP header of an IPv4 frame as its receiver reads it (what the SYN cases check).
struct TcpView {
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  std::optional<std::pair<uint32_t, uint32_t>> ts;  // TSval, TSecr
};

uint32_t be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

std::optional<TcpView> tcpOf(const Bytes& f) {
  if (f.size() < 14 + 20 || f[12] != 0x08 || f[13] != 0x00) return std::nullopt;
  const size_t l4 = 14 + (f[14] & 0xfu) * 4;
  if (f.size() < l4 + 20) return std::nullopt;
  const uint8_t* t = &f[l4];
  const size_t hlen = (t[12] >> 4) * 4u;
  if (hlen < 20 || f.size() < l4 + hlen) return std::nullopt;
  TcpView v;
  v.sport = static_cast<uint16_t>(t[0] << 8 | t[1]);
  v.dport = static_cast<uint16_t>(t[2] << 8 | t[3]);
  v.seq = be32(t + 4);
  v.ack = be32(t + 8);
  v.flags = t[13];
  for (size_t i = 20; i < hlen && t[i] != 0;) {  // kind 0: end of options
    if (t[i] == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= hlen || t[i + 1] < 2 || i + t[i + 1] > hlen) return std::nullopt;
    if (t[i] == 8 && t[i + 1] == 10) v.ts = std::make_pair(be32(t + i + 2), be32(t + i + 6));
    i += t[i + 1];
  }
  return v;
}

// The SYN-protection cases again, each beside the established path of the same run: its
// ns/packet over the established one's, and its ratio to trivial over the established one's
// (the steadier of the two when the machine's speed drifts over the run).
void reportBeside(const std::vector<std::pair<Case, Figure>>& figures, const std::string& base,
                  const std::vector<std::string>& names) {
  const auto find = [&](const std::string& name) -> const Figure* {
    for (const auto& [c, f] : figures) {
      if (c.name == name) return &f;
    }
    return nullptr;
  };
  const Figure* b = find(base);
  if (b == nullptr) return;
  bool any = false;
  for (const std::string& name : names) {
    const Figure* f = find(name);
    if (f == nullptr) continue;
    if (!any) {
      std::printf("\n%-46s %9s %7s %9s %11s\n", ("beside " + base).c_str(), "ns/packet", "ratio",
                  "x est ns", "x est ratio");
      std::printf("%-46s %9.1f %7.2f %9.2f %11.2f\n", base.c_str(), b->ns, b->ns / b->trivialNs,
                  1.0, 1.0);
      any = true;
    }
    std::printf("%-46s %9.1f %7.2f %9.2f %11.2f\n", name.c_str(), f->ns, f->ns / f->trivialNs,
                f->ns / b->ns, (f->ns / f->trivialNs) / (b->ns / b->trivialNs));
  }
}

// One new-flow case per algorithm (and Maglev whose pick is down), each on a fresh balancer;
// ns and ratio to the trivial program are medians over rounds, and each is put beside Maglev's.
struct AlgFigure {
  std::string name;
  std::vector<double> ns, ratios;  // per round: ns/packet, ratio to the trivial program
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void reportAlgorithms(const std::vector<AlgFigure>& figures) {
  if (figures.empty()) return;
  const double maglev = median(figures.front().ratios);
  std::printf("\n%-42s %9s %7s %10s   (medians of %zu rounds)\n",
              "new flow by algorithm (fresh 1M tables)", "ns/packet", "ratio", "vs Maglev",
              figures.front().ratios.size());
  for (const AlgFigure& f : figures) {
    std::printf("%-42s %9.1f %7.2f %10.2f\n", f.name.c_str(), median(f.ns), median(f.ratios),
                median(f.ratios) / maglev);
  }
}

int run(int argc, char** argv) {
  size_t runs = 200000;
  size_t spreadFlows = 1000000;
  size_t newFlows = 100000;
  size_t algRounds = 3;
  std::string only;  // run just the cases whose name starts with this (profiling)
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--runs" && i + 1 < argc) {
      runs = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--flows" && i + 1 < argc) {
      spreadFlows = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--new-flows" && i + 1 < argc) {
      newFlows = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--alg-rounds" && i + 1 < argc) {
      algRounds = std::strtoul(argv[++i], nullptr, 10);
    } else if (arg == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::printf(
          "usage: %s [--runs N (default 200000)] [--flows N (default 1000000)]\n"
          "       [--new-flows N (default 100000)] [--alg-rounds N (default 3)]\n"
          "       [--only NAME-PREFIX (e.g. \"new flow\", \"syn\")]\n",
          argv[0]);
      return arg == "--help" ? 0 : 2;
    }
  }
  if (::geteuid() != 0) die("needs root (BPF programs, a network namespace)");
  if (std::string err = enterTestNetwork(); !err.empty()) die(err);
  const CpuPin pin;
  const int ingress = ifindexOf(kClientIf);
  Bench bench(runs);
  std::vector<std::pair<Case, Figure>> figures;
  const auto wanted = [&](const std::string& name) { return name.rfind(only, 0) == 0; };
  const auto measure = [&](const Case& c, size_t n) {
    if (wanted(c.name)) figures.emplace_back(c, bench.measure(c, n));
  };

  // Established flow, its reply, and a non-VIP frame: one balancer, one flow, its handshake
  // completed (SYN, SYN-ACK, ACK) before anything is timed.
  auto lb = makeBalancer();
  bench.setProgram(lb->lb().programFd());
  const Bytes syn = tcpFrame(kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 80, kTcpSyn);
  const auto choice = lb->predict(syn);
  const EpView ep = endpointView(choice.epId);
  const uint16_t snat = ntohs(choice.snatPort);
  const Bytes ack = tcpFrame(kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 80, kTcpAck);
  const Bytes ackOut = tcpFrame(kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port, kTcpAck);
  const Bytes synAck =
      tcpFrame(ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat, kTcpSyn | kTcpAck);
  const Bytes synAckOut =
      tcpFrame(kClientIfMac, kClientMac, kVip4, kClient4, 80, 40000, kTcpSyn | kTcpAck);
  // The handshake through balancer h; dies unless each step leaves exactly as it should.
  const auto handshake = [&](LbHarness& h, const std::string& what) {
    const std::pair<const char*, std::string> steps[] = {
        {"SYN",
         expectExactly(h.run(syn, ingress), XDP_REDIRECT,
                       tcpFrame(kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port, kTcpSyn))},
        {"SYN-ACK", expectExactly(h.run(synAck, ifindexOf(kEndpointIf)), XDP_REDIRECT, synAckOut)},
        {"ACK", expectExactly(h.run(ack, ingress), XDP_REDIRECT, ackOut)},
    };
    for (const auto& [step, err] : steps) {
      if (!err.empty()) die(what + ", " + step + ": " + err);
    }
    if (!h.conn(choice.flow)) die(what + ": the handshake did not promote the flow");
  };
  handshake(*lb, "established flow");
  Case established{"established flow (flow cache hit)", ingress,
                   [&](size_t) -> const Bytes& { return ack; },
                   [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, ackOut); }};
  // The SYN-protection cases are reported beside this one too, so it runs whenever they do.
  const std::string cookieName = "syn cookie answer";
  const std::string openName = "syn valid ACK (opens to endpoint)";
  const std::string proxiedName = "syn-proxied established (translated)";
  const std::vector<std::string> synNames = {cookieName, openName, proxiedName};
  const bool synWanted = std::any_of(synNames.begin(), synNames.end(), wanted);
  if (wanted(established.name) || synWanted) {
    figures.emplace_back(established, bench.measure(established, runs));
  }
  // Balancers live until the end of the cases that use lb, so no balancer's 1M-entry tables are
  // being freed (kernel work, after the last reference goes) while a case is timed.
  std::vector<std::unique_ptr<LbHarness>> keep;
  if (wanted("established, flow cache off")) {
    // The same flow through a balancer without the flow cache: mp_services + mp_conns lookups.
    auto& uncached = keep.emplace_back(makeBalancer(MP_ALG_MAGLEV, 0));
    bench.setProgram(uncached->lb().programFd());
    handshake(*uncached, "flow cache off");
    Case conns{"established, flow cache off", ingress, [&](size_t) -> const Bytes& { return ack; },
               [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, ackOut); }};
    measure(conns, runs);
    bench.setProgram(lb->lb().programFd());
  }

  const Bytes reply =
      tcpFrame(ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat, kTcpAck | kTcpPsh);
  const Bytes replyOut =
      tcpFrame(kClientIfMac, kClientMac, kVip4, kClient4, 80, 40000, kTcpAck | kTcpPsh);
  Case replyCase{"reply (reverse NAT)", ifindexOf(kEndpointIf),
                 [&](size_t) -> const Bytes& { return reply; },
                 [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, replyOut); }};
  measure(replyCase, runs);

  const Bytes other =
      tcpFrame(kRouterMac, kClientIfMac, kClient4, "10.0.0.200", 40000, 80, kTcpAck);
  Case nonVip{"non-VIP (XDP_PASS untouched)", ingress,
              [&](size_t) -> const Bytes& { return other; },
              [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_PASS, other); }};
  measure(nonVip, runs);

  // The source-preserving mode (dnat): the same flow, its reply, a new flow and a non-VIP frame
  // through a balancer whose service is dnat (no SNAT; replies are told by their source, so
  // every non-VIP frame costs one more lookup, mp_ep_vip, while a dnat service exists).
  if (wanted("dnat")) {
    auto& dn =
        keep.emplace_back(makeBalancer(MP_ALG_MAGLEV, MP_FLOW_CACHE_SLOTS_DEFAULT, MP_FWD_DNAT));
    bench.setProgram(dn->lb().programFd());
    const int epIf = ifindexOf(kEndpointIf);
    const Bytes dAckOut =
        tcpFrame(kEndpointIfMac, ep.mac, kClient4, ep.addr, 40000, ep.port, kTcpAck);
    const std::pair<const char*, std::string> steps[] = {
        {"SYN", expectExactly(
                    dn->run(syn, ingress), XDP_REDIRECT,
                    tcpFrame(kEndpointIfMac, ep.mac, kClient4, ep.addr, 40000, ep.port, kTcpSyn))},
        {"SYN-ACK", expectExactly(dn->run(tcpFrame(ep.mac, kEndpointIfMac, ep.addr, kClient4,
                                                   ep.port, 40000, kTcpSyn | kTcpAck),
                                          epIf),
                                  XDP_REDIRECT, synAckOut)},
        {"ACK", expectExactly(dn->run(ack, ingress), XDP_REDIRECT, dAckOut)},
    };
    for (const auto& [step, err] : steps) {
      if (!err.empty()) die(std::string("dnat handshake, ") + step + ": " + err);
    }
    if (!dn->conn(choice.flow)) die("dnat: the handshake did not promote the flow");
    Case dEst{"dnat: established flow (flow cache hit)", ingress,
              [&](size_t) -> const Bytes& { return ack; },
              [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, dAckOut); }};
    measure(dEst, runs);
    const Bytes dReply =
        tcpFrame(ep.mac, kEndpointIfMac, ep.addr, kClient4, ep.port, 40000, kTcpAck | kTcpPsh);
    Case dRep{"dnat: reply (matched by its connection)", epIf,
              [&](size_t) -> const Bytes& { return dReply; },
              [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, replyOut); }};
    measure(dRep, runs);
    Case dOther{"dnat: non-VIP (+ mp_ep_vip lookup)", ingress,
                [&](size_t) -> const Bytes& { return other; },
                [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_PASS, other); }};
    measure(dOther, runs);
    const size_t n = std::min(runs, newFlows);
    std::vector<Bytes> frames(n);
    for (size_t i = 0; i < n; ++i) {
      frames[i] =
          tcpFrame(kRouterMac, kClientIfMac, ipv4Of(0x0a180000u + static_cast<uint32_t>(i / 8)),
                   kVip4, static_cast<uint16_t>(20000 + i % 8), 80, kTcpSyn);
    }
    Case dNew{"dnat: new flow (Maglev pick, half-open)", ingress,
              [&](size_t i) -> const Bytes& { return frames[i]; },
              [&](size_t, const XdpRun& r) -> std::string {
                return r.verdict == XDP_REDIRECT
                           ? ""
                           : std::string("verdict ") + verdictName(r.verdict) + exceptionsOf(*dn);
              }};
    measure(dNew, n);
    bench.setProgram(lb->lb().programFd());
  }

  // New flows: every run a client address:port never seen before, each left half-open.
  const size_t newRuns = std::min(runs, newFlows);
  const auto newFlowFrames = [&](uint32_t base, uint8_t flags) {
    std::vector<Bytes> frames(newRuns);
    for (size_t i = 0; i < newRuns; ++i) {
      frames[i] = tcpFrame(kRouterMac, kClientIfMac, ipv4Of(base + static_cast<uint32_t>(i / 8)),
                           kVip4, static_cast<uint16_t>(20000 + i % 8), 80, flags);
    }
    return frames;
  };
  const std::string newFlowName = "new flow (Maglev pick, SNAT reserve, half-open)";
  if (wanted(newFlowName)) {
    const std::vector<Bytes> frames = newFlowFrames(0x0a100000u, kTcpSyn);
    Case newFlow{newFlowName, ingress, [&](size_t i) -> const Bytes& { return frames[i]; },
                 [&](size_t i, const XdpRun& r) -> std::string {
                   if (r.verdict != XDP_REDIRECT) {
                     return std::string("verdict ") + verdictName(r.verdict) + exceptionsOf(*lb);
                   }
                   if (i % 64) return "";
                   const auto c = lb->predict(frames[i]);
                   const EpView e = endpointView(c.epId);
                   const auto half = lb->half(c.flow);
                   if (!half) return "no mp_half entry";
                   return expectExactly(r, XDP_REDIRECT,
                                        tcpFrame(kEndpointIfMac, e.mac, kNode4, e.addr,
                                                 ntohs(half->snat_port), e.port, kTcpSyn));
                 }};
    measure(newFlow, newRuns);
  }

  // The client's ACK that completes a handshake: newRuns flows brought to SYN-ACK beforehand
  // (untimed), each promoted once from the half-open tables into the established ones. The
  // SYN-ACKs go back to clients the topology can reach: the two on the client link, any port.
  const std::string promoteName = "handshake completion (ACK promotes)";
  if (wanted(promoteName)) {
    auto& hs = keep.emplace_back(makeBalancer());
    bench.setProgram(hs->lb().programFd());
    const size_t n = std::min<size_t>(newRuns, 2 * (65536 - 1024));
    std::vector<Bytes> acks(n), acksOut(n);
    const int epIf = ifindexOf(kEndpointIf);
    for (size_t i = 0; i < n; ++i) {
      const std::string client = i % 2 ? kTxEndpoint4 : kClient4;
      const std::string clientMac = i % 2 ? kTxEndpointMac : kClientMac;
      const uint16_t cport = static_cast<uint16_t>(1024 + i / 2);
      const Bytes syn1 = tcpFrame(kRouterMac, kClientIfMac, client, kVip4, cport, 80, kTcpSyn);
      const XdpRun r = hs->run(syn1, ingress);
      const auto half = hs->half(hs->predict(syn1).flow);
      if (r.verdict != XDP_REDIRECT || !half) die("handshake completion: SYN " + std::to_string(i));
      const EpView e = endpointView(half->ep_id);
      const uint16_t port = ntohs(half->snat_port);
      const Bytes answer =
          tcpFrame(e.mac, kEndpointIfMac, e.addr, kNode4, e.port, port, kTcpSyn | kTcpAck);
      if (std::string err = expectExactly(
              hs->run(answer, epIf), XDP_REDIRECT,
              tcpFrame(kClientIfMac, clientMac, kVip4, client, 80, cport, kTcpSyn | kTcpAck));
          !err.empty()) {
        die("handshake completion: SYN-ACK " + std::to_string(i) + ": " + err + exceptionsOf(*hs));
      }
      acks[i] = tcpFrame(kRouterMac, kClientIfMac, client, kVip4, cport, 80, kTcpAck);
      acksOut[i] = tcpFrame(kEndpointIfMac, e.mac, kNode4, e.addr, port, e.port, kTcpAck);
    }
    Case promote{promoteName, ingress, [&](size_t i) -> const Bytes& { return acks[i]; },
                 [&](size_t i, const XdpRun& r) -> std::string {
                   if (std::string err = expectExactly(r, XDP_REDIRECT, acksOut[i]); !err.empty()) {
                     return err + exceptionsOf(*hs);
                   }
                   if (i % 64) return "";
                   const mp_flow flow = hs->predict(acks[i]).flow;
                   if (!hs->conn(flow) || hs->half(flow)) return "not promoted";
                   return "";
                 }};
    measure(promote, n);
    bench.setProgram(lb->lb().programFd());
  }

  // SYN protection (MP_SVC_F_SYN_ALWAYS) on a balancer of its own: the cookie SYN-ACK (nothing
  // kept), the client's ACK whose cookie validates (pick, SNAT, half-open entry, the SYN to the
  // endpoint), and a segment of a proxied connection (translated in the tail-called
  // mp_xdp_syn). Clients send Linux's options; each flow has an ISN and a TSval of its own.
  if (synWanted) {
    auto& sp = keep.emplace_back(makeBalancer());
    sp->setSynSecret(kSynKey);
    sp->setServiceFlags(0, MP_SVC_F_SYN_ALWAYS);
    bench.setProgram(sp->lb().programFd());
    const Hop vip{kClientIfMac, kVip4, 80};
    const auto clientPort = [](size_t i) { return static_cast<uint16_t>(20000 + i % 8); };
    const auto clientOf = [&](uint32_t base, size_t i) {
      return Hop{kRouterMac, ipv4Of(base + static_cast<uint32_t>(i / 8)), clientPort(i)};
    };
    std::mt19937 rng(7);
    std::vector<uint32_t> isns(newRuns), tsvals(newRuns);
    for (size_t i = 0; i < newRuns; ++i) {
      isns[i] = static_cast<uint32_t>(rng());
      tsvals[i] = static_cast<uint32_t>(rng());
    }
    const auto synsOf = [&](uint32_t base) {
      std::vector<Bytes> frames(newRuns);
      for (size_t i = 0; i < newRuns; ++i) {
        frames[i] =
            segment(clientOf(base, i), vip, kTcpSyn, isns[i], 0, linuxSynOptions(tsvals[i]), 64240);
      }
      return frames;
    };
    const auto verdictErr = [&](const XdpRun& r, uint32_t want) -> std::string {
      if (r.verdict == want) return "";
      return std::string("verdict ") + verdictName(r.verdict) + ", want " + verdictName(want) +
             exceptionsOf(*sp);
    };

    if (wanted(cookieName)) {
      const std::vector<Bytes> syns = synsOf(0x0a200000u);
      const uint64_t before = sp->synStats(0).cookies_sent;
      Case answer{cookieName, ingress, [&](size_t i) -> const Bytes& { return syns[i]; },
                  [&](size_t i, const XdpRun& r) -> std::string {
                    if (std::string err = verdictErr(r, XDP_TX); !err.empty()) return err;
                    if (i % 64) return "";
                    if (std::string err = verifyChecksums(r.output); !err.empty()) return err;
                    const auto s = tcpOf(r.output);
                    if (!s || s->flags != (kTcpSyn | kTcpAck) || s->ack != isns[i] + 1 ||
                        s->dport != clientPort(i)) {
                      return "not the SYN-ACK answering the SYN:\n" + hexDump(r.output);
                    }
                    return "";
                  }};
      measure(answer, newRuns);
      if (sp->synStats(0).cookies_sent - before != newRuns ||
          LbHarness::entriesOf(sp->lb().halfFd()) != 0) {
        die("syn cookie answer: not every SYN was answered statelessly" + exceptionsOf(*sp));
      }
    }

    // The ACKs of newRuns flows whose SYNs were answered just before (untimed; a cookie stays
    // valid for one to two clock counts of 68.7 s, far longer than the case takes).
    if (wanted(openName)) {
      const std::vector<Bytes> syns = synsOf(0x0a300000u);
      std::vector<Bytes> acks(newRuns);
      for (size_t i = 0; i < newRuns; ++i) {
        const XdpRun r = sp->run(syns[i], ingress);
        const auto sa = tcpOf(r.output);
        if (r.verdict != XDP_TX || !sa || !sa->ts) {
          die("syn valid ACK: SYN " + std::to_string(i) + ": " + verdictErr(r, XDP_TX));
        }
        acks[i] = segment(clientOf(0x0a300000u, i), vip, kTcpAck, isns[i] + 1, sa->seq + 1,
                          tsOption(tsvals[i] + 1, sa->ts->first), 502);
      }
      const uint64_t before = sp->synStats(0).acks_valid;
      Case opens{openName, ingress, [&](size_t i) -> const Bytes& { return acks[i]; },
                 [&](size_t i, const XdpRun& r) -> std::string {
                   // Every endpoint is behind the other link (mpe): redirected, not sent back.
                   if (std::string err = verdictErr(r, XDP_REDIRECT); !err.empty()) return err;
                   if (i % 64) return "";
                   if (std::string err = verifyChecksums(r.output); !err.empty()) return err;
                   const auto s = tcpOf(r.output);
                   if (!s || s->flags != kTcpSyn || s->seq != isns[i] || !s->ts ||
                       s->ts->first != tsvals[i] + 1) {
                     return "not the client's SYN toward an endpoint:\n" + hexDump(r.output);
                   }
                   const auto half = sp->half(sp->predict(acks[i]).flow);
                   if (!half || !(half->flags & MP_CONN_F_PROXY)) return "no proxied mp_half entry";
                   return "";
                 }};
      measure(opens, newRuns);
      if (sp->synStats(0).acks_valid - before != newRuns) {
        die("syn valid ACK: not every cookie validated" + exceptionsOf(*sp));
      }
    }

    // One proxied connection set up (SYN, valid ACK, the endpoint's SYN-ACK), then the client's
    // data segment: its ack and TSecr move into the endpoint's spaces, the same every run.
    if (wanted(proxiedName)) {
      const Hop client{kRouterMac, kClient4, 40000};
      constexpr uint32_t kIsn = 0x10000000, kTs = 1000, kEpIsn = 0x70000000, kEpTs = 555555;
      const XdpRun synAck =
          sp->run(segment(client, vip, kTcpSyn, kIsn, 0, linuxSynOptions(kTs), 64240), ingress);
      const auto sa = tcpOf(synAck.output);
      if (synAck.verdict != XDP_TX || !sa || !sa->ts) {
        die("syn-proxied: SYN: " + verdictErr(synAck, XDP_TX));
      }
      const uint32_t cookie = sa->seq, ourTs = sa->ts->first;
      const Bytes validAck =
          segment(client, vip, kTcpAck, kIsn + 1, cookie + 1, tsOption(kTs + 10, ourTs), 502);
      const mp_flow flow = sp->predict(validAck).flow;
      const XdpRun toEp = sp->run(validAck, ingress);
      const auto half = sp->half(flow);
      if (toEp.verdict != XDP_REDIRECT || !half) {
        die("syn-proxied: ACK: " + verdictErr(toEp, XDP_REDIRECT));
      }
      const EpView e = endpointView(half->ep_id);
      const Hop node{kEndpointIfMac, kNode4, ntohs(half->snat_port)};
      const Hop endpoint{e.mac, e.addr, e.port};
      const XdpRun update = sp->run(segment(endpoint, node, kTcpSyn | kTcpAck, kEpIsn, kIsn + 1,
                                            linuxSynOptions(kEpTs), 65160),
                                    ifindexOf(kEndpointIf));
      if (update.verdict != XDP_REDIRECT || !sp->conn(flow)) {
        die("syn-proxied: endpoint's SYN-ACK: " + verdictErr(update, XDP_REDIRECT) +
            " (or not established)");
      }
      const std::string payload = "0123456789abcdef";
      const Bytes data = segment(client, vip, kTcpAck | kTcpPsh, kIsn + 1, cookie + 1,
                                 tsOption(kTs + 20, ourTs), 502, payload);
      // Both sides scale windows by 7: the window stays as the client sent it.
      const Bytes dataOut = segment(node, endpoint, kTcpAck | kTcpPsh, kIsn + 1, kEpIsn + 1,
                                    tsOption(kTs + 20, kEpTs), 502, payload);
      Case proxied{proxiedName, ingress, [&](size_t) -> const Bytes& { return data; },
                   [&](size_t, const XdpRun& r) -> std::string {
                     if (std::string err = expectExactly(r, XDP_REDIRECT, dataOut); !err.empty()) {
                       return err + exceptionsOf(*sp);
                     }
                     return "";
                   }};
      measure(proxied, runs);
    }
    bench.setProgram(lb->lb().programFd());
  }
  lb.reset();
  keep.clear();
  ::sleep(1);  // the tables' freeing, done by the kernel after the last reference goes

  // New flows refused: every endpoint's one SNAT port (a one-port range) held by an open
  // connection. After a refusal the CPU drops new flows toward that endpoint without probing
  // for snat_backoff (100 ms): the cheap drop path. Beside it, the refusal as it costs without the
  // backoff (cleared before every run, untimed): both passes of MP_SNAT_PROBES probes.
  const std::string backoffName = "exhausted: new flow dropped (backoff)";
  const std::string probedName = "exhausted: new flow refused, every probe made";
  if (wanted(backoffName) || wanted(probedName)) {
    auto ex = makeBalancer();
    bench.setProgram(ex->lb().programFd());
    constexpr uint16_t kOnly = 61000;
    ex->setNode(kNode4, kNode6, kOnly, kOnly);
    for (uint32_t id = 1; id <= 2 * kEndpointPorts; ++id) {
      putEstablished(*ex, "10.14.0.1", static_cast<uint16_t>(1000 + id), id, kOnly);
    }
    const std::vector<Bytes> frames = newFlowFrames(0x0e100000u, kTcpSyn);
    std::vector<uint32_t> epOf(newRuns);
    for (size_t i = 0; i < newRuns; ++i) epOf[i] = ex->predict(frames[i]).epId;
    const auto refused = [&](size_t i, const XdpRun& r) -> std::string {
      if (std::string err = expectExactly(r, XDP_DROP, frames[i]); !err.empty()) {
        return err + exceptionsOf(*ex);
      }
      return "";
    };
    const uint64_t before = ex->exceptions(MP_EXC_DROP_SNAT_EXHAUSTED);
    Case backoff{backoffName, ingress, [&](size_t i) -> const Bytes& { return frames[i]; },
                 refused};
    measure(backoff, newRuns);
    Case probed{probedName, ingress,
                [&](size_t i) -> const Bytes& {
                  ex->clearSnatBackoff(epOf[i]);
                  return frames[i];
                },
                refused};
    measure(probed, newRuns);
    const size_t refusals =
        (wanted(backoffName) ? newRuns : 0) + (wanted(probedName) ? newRuns : 0);
    if (ex->exceptions(MP_EXC_DROP_SNAT_EXHAUSTED) - before != refusals ||
        ex->svcStats(0).new_conns != 0 || LbHarness::entriesOf(ex->lb().halfFd()) != 0) {
      die("exhausted: not every new flow was refused" + exceptionsOf(*ex));
    }
  }

  // New flows under each algorithm, and under Maglev when the pick is marked down (every frame
  // below is one whose Maglev slot holds a down endpoint: even ids are down, and the next slot
  // of an even id's always holds a live odd one, so each flow skips exactly one slot).
  std::vector<AlgFigure> algFigures;
  if (wanted("new flow by algorithm")) {
    struct AlgCase {
      std::string name;
      uint8_t algorithm;
      bool pickDown;
    };
    const std::vector<AlgCase> algCases = {
        {"maglev", MP_ALG_MAGLEV, false},
        {"random", MP_ALG_RANDOM, false},
        {"round-robin", MP_ALG_ROUND_ROBIN, false},
        {"least-conn", MP_ALG_LEAST_CONN, false},
        {"least-latency", MP_ALG_LEAST_LATENCY, false},
        {"maglev, pick down -> next slot", MP_ALG_MAGLEV, true},
    };
    for (const AlgCase& a : algCases) algFigures.push_back({a.name, {}, {}});
    const size_t newRuns = std::min(runs, newFlows);
    for (size_t round = 0; round < algRounds; ++round) {
      for (size_t k = 0; k < algCases.size(); ++k) {
        const AlgCase& a = algCases[k];
        auto h = makeBalancer(a.algorithm);
        bench.setProgram(h->lb().programFd());
        if (a.pickDown) {
          for (uint32_t id = 2; id <= 2 * kEndpointPorts; id += 2) {
            mp_ep_health down{};
            down.flags = MP_EPH_F_DOWN;
            h->setHealth(id, down);
          }
        }
        std::vector<Bytes> frames;
        std::vector<uint32_t> wantEp;
        frames.reserve(newRuns);
        for (uint32_t i = 0; frames.size() < newRuns; ++i) {
          Bytes f = tcpFrame(kRouterMac, kClientIfMac,
                             ipv4Of(0x0c000000u + (static_cast<uint32_t>(round) << 20) + i / 8),
                             kVip4, static_cast<uint16_t>(20000 + i % 8), 80, kTcpSyn);
          const uint32_t pick = h->predict(f).epId;
          if (a.pickDown && pick % 2 != 0) continue;
          wantEp.push_back(a.pickDown ? pick % (2 * kEndpointPorts) + 1 : 0);  // ring: ids in turn
          frames.push_back(std::move(f));
        }
        Case c{"new flow by algorithm: " + a.name, ingress,
               [&](size_t i) -> const Bytes& { return frames[i]; },
               [&](size_t i, const XdpRun& r) -> std::string {
                 if (r.verdict != XDP_REDIRECT) {
                   return std::string("verdict ") + verdictName(r.verdict) + exceptionsOf(*h);
                 }
                 if (i % 64) return "";
                 const auto conn = h->half(h->predict(frames[i]).flow);
                 if (!conn) return "no mp_half entry";
                 if (wantEp[i] && conn->ep_id != wantEp[i]) {
                   return "endpoint " + std::to_string(conn->ep_id) + ", want the next slot's " +
                          std::to_string(wantEp[i]);
                 }
                 const EpView e = endpointView(conn->ep_id);
                 return expectExactly(r, XDP_REDIRECT,
                                      tcpFrame(kEndpointIfMac, e.mac, kNode4, e.addr,
                                               ntohs(conn->snat_port), e.port, kTcpSyn));
               }};
        const Figure f = bench.measure(c, frames.size());
        algFigures[k].ns.push_back(f.ns);
        algFigures[k].ratios.push_back(f.ns / f.trivialNs);
      }
    }
  }

  // Established flows spread over a table of spreadFlows connections, visited in random order.
  if (wanted("established, spread")) {
    auto spread = makeBalancer();
    bench.setProgram(spread->lb().programFd());
    std::printf("populating %zu connections...\n", spreadFlows);
    std::vector<mp_flow> keys(spreadFlows);
    std::vector<mp_conn> values(spreadFlows);
    const AbiAddr vip = abiAddr(kVip4);
    const uint64_t expires = spread->jiffies() + spread->jiffiesOf(3600 * 1000);
    for (size_t i = 0; i < spreadFlows; ++i) {
      mp_flow& k = keys[i];
      k = {};
      const uint32_t src = htonl(0x0b000000u + static_cast<uint32_t>(i));
      std::memcpy(k.src, &src, 4);
      std::memcpy(k.dst, vip.bytes.data(), 4);
      k.sport = htons(40000);
      k.dport = htons(80);
      k.proto = kTcp;
      k.family = MP_AF_INET;
      values[i] = {};
      values[i].ep_id = 1 + static_cast<uint32_t>(i % (2 * kEndpointPorts));
      values[i].snat_port = htons(static_cast<uint16_t>(1024 + i % 64000));
      values[i].flags = MP_CONN_F_COUNTED;
      values[i].expires = expires;
    }
    for (size_t at = 0; at < spreadFlows; at += 10000) {
      uint32_t count = static_cast<uint32_t>(std::min<size_t>(10000, spreadFlows - at));
      LIBBPF_OPTS(bpf_map_batch_opts, opts);
      if (bpf_map_update_batch(spread->lb().connsFd(), &keys[at], &values[at], &count, &opts)) {
        die(std::string("populate mp_conns: ") + std::strerror(errno));
      }
    }
    std::vector<uint32_t> order(spreadFlows);
    for (size_t i = 0; i < spreadFlows; ++i) order[i] = static_cast<uint32_t>(i);
    std::shuffle(order.begin(), order.end(), std::mt19937(1));
    const size_t spreadRuns = std::max(runs, std::min<size_t>(spreadFlows, 1000000));
    // One frame per visited flow, built up front so the loop only runs programs.
    std::vector<Bytes> frames(spreadRuns);
    for (size_t i = 0; i < spreadRuns; ++i) {
      const uint32_t f = order[i % spreadFlows];
      frames[i] =
          tcpFrame(kRouterMac, kClientIfMac, ipv4Of(0x0b000000u + f), kVip4, 40000, 80, kTcpAck);
    }
    Case spreadCase{"established, spread over " + std::to_string(spreadFlows / 1000) + "k flows",
                    ingress, [&](size_t i) -> const Bytes& { return frames[i]; },
                    [&](size_t i, const XdpRun& r) -> std::string {
                      if (r.verdict != XDP_REDIRECT) {
                        return std::string("verdict ") + verdictName(r.verdict) +
                               exceptionsOf(*spread);
                      }
                      if (i % 64) return "";
                      const uint32_t f = order[i % spreadFlows];
                      const EpView e = endpointView(values[f].ep_id);
                      return expectExactly(r, XDP_REDIRECT,
                                           tcpFrame(kEndpointIfMac, e.mac, kNode4, e.addr,
                                                    ntohs(values[f].snat_port), e.port, kTcpAck));
                    }};
    measure(spreadCase, spreadRuns);
    if (spread->exceptions(MP_EXC_DROP_SNAT_EXHAUSTED) != 0 || spread->svcStats(0).new_conns != 0) {
      die("spread flows were not all conn-table hits");
    }
  }

  report(figures);
  reportBeside(figures, established.name, synNames);
  reportAlgorithms(algFigures);
  return 0;
}

}  // namespace
}  // namespace meshpath::testing

int main(int argc, char** argv) { return meshpath::testing::run(argc, argv); }
