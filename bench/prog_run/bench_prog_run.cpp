// bench_prog_run — per-packet cost of the XDP balancer under BPF_PROG_RUN, each path beside the
// trivial XDP program (swap MACs, XDP_TX) measured in the same run, interleaved in blocks.
//
// Every figure is the kernel's own duration of single runs (repeat=1) averaged: with repeat=N the
// kernel would run the program again on the frame it already rewrote, so no rewriting path is
// timed that way. Every timed run's verdict is checked, and its output bytes too (all runs, or
// every 64th where the expected frame differs per run). Runs inside a private network namespace
// (the tests' topology) so bpf_fib_lookup succeeds.
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
#include <random>
#include <string>
#include <vector>

#include "lb_harness.h"
#include "mp_xdp_trivial.skel.h"
#include "packet.h"

namespace meshpath::testing {
namespace {

using namespace topo;

constexpr uint8_t kTcp = 6;
constexpr uint16_t kEndpointBasePort = 8080;
constexpr int kEndpointPorts =
    32;  // x 2 addresses: 64 endpoints, room for 100k new flows' SNAT ports

struct Case {
  std::string name;
  double targetNs;  // Katran's figure for the same path; 0: none
  int ingress;      // ifindex the frames arrive on
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

// Every frame the bench times: TCP with a 16-byte payload.
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

// A balancer with one TCP service on kVip4:80 over 64 endpoints (two addresses, 32 ports).
std::unique_ptr<LbHarness> makeBalancer(uint32_t connTableSize,
                                        uint8_t algorithm = MP_ALG_MAGLEV,
                                        uint32_t flowCacheSlots = MP_FLOW_CACHE_SLOTS_DEFAULT) {
  LbSkeletonOptions options;
  options.connTableSize = connTableSize;
  options.flowCacheSlots = flowCacheSlots;
  auto h = std::make_unique<LbHarness>(options);
  h->setNode(kNode4, kNode6, 1024, 65535);
  std::vector<uint32_t> ids;
  for (int i = 0; i < 2 * kEndpointPorts; ++i) {
    const uint32_t id = 1 + static_cast<uint32_t>(i);
    h->setEndpoint(id, i % 2 ? kEndpoint2v4 : kEndpoint1v4,
                   static_cast<uint16_t>(kEndpointBasePort + i / 2), 0);
    ids.push_back(id);
  }
  h->setService(0, kVip4, 80, kTcp, MP_RING_SIZE_DEFAULT, ids, algorithm);
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

// Targets are Katran's figures measured the same way beside a trivial program that took
// kKatranTrivialNs; on a slower or busier machine the ratio to trivial is what compares.
constexpr double kKatranTrivialNs = 84;

void report(const std::vector<std::pair<Case, Figure>>& figures) {
  std::printf("\n%-42s %9s %10s %7s | %9s %12s %s\n", "path (BPF_PROG_RUN repeat=1, kernel ns)",
              "ns/packet", "trivial ns", "ratio", "target ns", "target ratio", "by ratio");
  for (const auto& [c, f] : figures) {
    const double ratio = f.ns / f.trivialNs;
    if (c.targetNs <= 0) {
      std::printf("%-42s %9.1f %10.1f %7.2f | %9s %12s\n", c.name.c_str(), f.ns, f.trivialNs, ratio,
                  "-", "-");
      continue;
    }
    const double targetRatio = c.targetNs / kKatranTrivialNs;
    std::printf("%-42s %9.1f %10.1f %7.2f | %9.0f %12.2f %s\n", c.name.c_str(), f.ns, f.trivialNs,
                ratio, c.targetNs, targetRatio, ratio <= targetRatio ? "ok" : "MISSED");
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
          "       [--only NAME-PREFIX (e.g. \"new flow\")]\n",
          argv[0]);
      return arg == "--help" ? 0 : 2;
    }
  }
  if (::geteuid() != 0) die("needs root (BPF programs, a network namespace)");
  if (std::string err = enterTestNetwork(); !err.empty()) die(err);
  const int ingress = ifindexOf(kClientIf);
  Bench bench(runs);
  std::vector<std::pair<Case, Figure>> figures;
  const auto wanted = [&](const std::string& name) { return name.rfind(only, 0) == 0; };
  const auto measure = [&](const Case& c, size_t n) {
    if (wanted(c.name)) figures.emplace_back(c, bench.measure(c, n));
  };

  // Established flow, its reply, and a non-VIP frame: one balancer, one flow.
  auto lb = makeBalancer(MP_CONN_TABLE_DEFAULT);
  bench.setProgram(lb->lb().programFd());
  const Bytes syn = tcpFrame(kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 80, kTcpSyn);
  const auto choice = lb->predict(syn);
  const EpView ep = endpointView(choice.epId);
  const uint16_t snat = ntohs(choice.snatPort);
  const Bytes ack = tcpFrame(kRouterMac, kClientIfMac, kClient4, kVip4, 40000, 80, kTcpAck);
  const Bytes ackOut = tcpFrame(kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port, kTcpAck);
  if (std::string err =
          expectExactly(lb->run(syn, ingress), XDP_REDIRECT,
                        tcpFrame(kEndpointIfMac, ep.mac, kNode4, ep.addr, snat, ep.port, kTcpSyn));
      !err.empty()) {
    die("first packet: " + err);
  }
  Case established{"established flow (flow cache hit)", 235, ingress,
                   [&](size_t) -> const Bytes& { return ack; },
                   [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, ackOut); }};
  measure(established, runs);
  {
    // The same flow through a balancer without the flow cache: mp_services + mp_conns lookups.
    auto uncached = makeBalancer(MP_CONN_TABLE_DEFAULT, MP_ALG_MAGLEV, 0);
    bench.setProgram(uncached->lb().programFd());
    if (std::string err = expectExactly(uncached->run(syn, ingress), XDP_REDIRECT,
                                        tcpFrame(kEndpointIfMac, ep.mac, kNode4, ep.addr, snat,
                                                 ep.port, kTcpSyn));
        !err.empty()) {
      die("first packet, flow cache off: " + err);
    }
    Case conns{"established, flow cache off", 235, ingress,
               [&](size_t) -> const Bytes& { return ack; },
               [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, ackOut); }};
    measure(conns, runs);
    bench.setProgram(lb->lb().programFd());
  }

  const Bytes reply =
      tcpFrame(ep.mac, kEndpointIfMac, ep.addr, kNode4, ep.port, snat, kTcpAck | kTcpPsh);
  const Bytes replyOut =
      tcpFrame(kClientIfMac, kClientMac, kVip4, kClient4, 80, 40000, kTcpAck | kTcpPsh);
  Case replyCase{"reply (reverse NAT; no target)", 0, ifindexOf(kEndpointIf),
                 [&](size_t) -> const Bytes& { return reply; },
                 [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_REDIRECT, replyOut); }};
  measure(replyCase, runs);

  const Bytes other =
      tcpFrame(kRouterMac, kClientIfMac, kClient4, "10.0.0.200", 40000, 80, kTcpAck);
  Case nonVip{"non-VIP (XDP_PASS untouched)", 135, ingress,
              [&](size_t) -> const Bytes& { return other; },
              [&](size_t, const XdpRun& r) { return expectExactly(r, XDP_PASS, other); }};
  measure(nonVip, runs);

  // New flows: every run a client address:port never seen before.
  {
    const size_t newRuns = std::min(runs, newFlows);
    std::vector<Bytes> frames(newRuns);
    for (size_t i = 0; i < newRuns; ++i) {
      frames[i] =
          tcpFrame(kRouterMac, kClientIfMac, ipv4Of(0x0a100000u + static_cast<uint32_t>(i / 8)),
                   kVip4, static_cast<uint16_t>(20000 + i % 8), 80, kTcpSyn);
    }
    Case newFlow{"new flow (Maglev + SNAT reserve + insert)", 460, ingress,
                 [&](size_t i) -> const Bytes& { return frames[i]; },
                 [&](size_t i, const XdpRun& r) -> std::string {
                   if (r.verdict != XDP_REDIRECT) {
                     return std::string("verdict ") + verdictName(r.verdict) + exceptionsOf(*lb);
                   }
                   if (i % 64) return "";
                   const auto c = lb->predict(frames[i]);
                   const EpView e = endpointView(c.epId);
                   const auto conn = lb->conn(c.flow);
                   if (!conn) return "no mp_conns entry";
                   return expectExactly(r, XDP_REDIRECT,
                                        tcpFrame(kEndpointIfMac, e.mac, kNode4, e.addr,
                                                 ntohs(conn->snat_port), e.port, kTcpSyn));
                 }};
    measure(newFlow, newRuns);
  }
  lb.reset();

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
        auto h = makeBalancer(MP_CONN_TABLE_DEFAULT, a.algorithm);
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
        Case c{"new flow by algorithm: " + a.name, 0, ingress,
               [&](size_t i) -> const Bytes& { return frames[i]; },
               [&](size_t i, const XdpRun& r) -> std::string {
                 if (r.verdict != XDP_REDIRECT) {
                   return std::string("verdict ") + verdictName(r.verdict) + exceptionsOf(*h);
                 }
                 if (i % 64) return "";
                 const auto conn = h->conn(h->predict(frames[i]).flow);
                 if (!conn) return "no mp_conns entry";
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
    auto spread = makeBalancer(MP_CONN_TABLE_DEFAULT);
    bench.setProgram(spread->lb().programFd());
    std::printf("populating %zu connections...\n", spreadFlows);
    std::vector<mp_flow> keys(spreadFlows);
    std::vector<mp_conn> values(spreadFlows);
    const AbiAddr vip = abiAddr(kVip4);
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
                    650, ingress, [&](size_t i) -> const Bytes& { return frames[i]; },
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
  reportAlgorithms(algFigures);
  return 0;
}

}  // namespace
}  // namespace meshpath::testing

int main(int argc, char** argv) { return meshpath::testing::run(argc, argv); }
