// pktgen — a packet generator and sink for meshpath's tests and benchmarks.
//   pktgen send IFACE ...   BPF_PROG_RUN in live-frames mode (AF_PACKET where the kernel lacks it)
//   pktgen sink IFACE ...   count (and capture) what arrives, with an XDP program
//   pktgen fwd IN OUT ...   the benchmarks' floor: a trivial XDP forwarder
// Exit status: 0 done, 1 a runtime failure (message on stderr), 2 bad options.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "generator.h"
#include "libbpf_logger.h"
#include "netdev.h"
#include "pktgen_skel.h"
#include "sink.h"

namespace meshpath::pktgen {
namespace {

std::atomic<bool> gStop{false};
void onSignal(int) { gStop.store(true); }

struct UsageError {
  std::string message;
};

[[noreturn]] void usageError(const std::string& message) { throw UsageError{message}; }

int fail(const std::string& message) {
  std::fprintf(stderr, "pktgen: %s\n", message.c_str());
  return 1;
}

std::array<uint8_t, 16> parseIp(const std::string& text, int& family, const char* option) {
  std::array<uint8_t, 16> out{};
  if (inet_pton(AF_INET, text.c_str(), out.data()) == 1) {
    family = 4;
  } else if (inet_pton(AF_INET6, text.c_str(), out.data()) == 1) {
    family = 6;
  } else {
    usageError(std::string(option) + ": '" + text + "' is not an IPv4 or IPv6 address");
  }
  return out;
}

uint32_t low32(const std::array<uint8_t, 16>& a, int family) {
  uint32_t v;
  std::memcpy(&v, a.data() + (family == 4 ? 0 : 12), 4);
  return ntohl(v);
}

// "A" or "A-B" -> first and count.
std::pair<std::string, std::string> splitRange(const std::string& text) {
  // IPv6 addresses have no '-', so the first '-' separates the two ends.
  auto dash = text.find('-');
  if (dash == std::string::npos) return {text, text};
  return {text.substr(0, dash), text.substr(dash + 1)};
}

uint64_t parseCount(const std::string& text, const char* option) {
  // Accepts 1000, 10k, 2M, 1G.
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  double mult = 1;
  if (end != nullptr && *end != '\0') {
    std::string suffix(end);
    if (suffix == "k" || suffix == "K")
      mult = 1e3;
    else if (suffix == "m" || suffix == "M")
      mult = 1e6;
    else if (suffix == "g" || suffix == "G")
      mult = 1e9;
    else
      usageError(std::string(option) + ": '" + text + "' is not a number (1000, 10k, 2M)");
  }
  if (errno != 0 || end == text.c_str() || !(v >= 0) || v * mult > 1e15 ||
      std::floor(v * mult) != v * mult) {
    usageError(std::string(option) + ": '" + text + "' is not a whole number >= 0");
  }
  return static_cast<uint64_t>(v * mult);
}

std::string rate(double pps) {
  char buf[32];
  if (pps >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.3f Mpps", pps / 1e6);
  else
    std::snprintf(buf, sizeof(buf), "%.1f kpps", pps / 1e3);
  return buf;
}

double seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

struct SendArgs {
  std::string iface, netns, dstMac, srcMac, dstIp, srcIp, srcPort = "1024", proto = "udp";
  std::string count, flows, rateText, mode = "auto";
  uint16_t dport = 9;
  uint32_t size = 0;
  double duration = 0, warmup = 0;
  int threads = 1;
  std::vector<int> cpus;
  uint32_t batch = 64;
  bool stamp = false, json = false, quiet = false, progress = false;
  std::string rxIface, rxNetns;
  bool rxPass = false;
  std::string pcap;
  uint32_t snap = 128;
  bool latency = false;
};

struct SinkArgs {
  std::string iface, netns, pcap, count;
  bool pass = false, json = false, quiet = false, latency = false, progress = false;
  double duration = 0, idle = 0;
  uint32_t snap = 128;
};

nlohmann::json sinkJson(const Sink& sink, const SinkCounts& c, double windowPps) {
  nlohmann::json j = {{"interface", sink.netdev().name},
                      {"packets", c.packets},
                      {"bytes", c.bytes},
                      {"elapsed_s", c.packets > 1 ? seconds(c.lastNs - c.firstNs) : 0.0},
                      {"pps", windowPps}};
  if (c.captureDrops != 0 || sink.captured() != 0) {
    j["captured"] = sink.captured();
    j["capture_drops"] = c.captureDrops;
  }
  return j;
}

nlohmann::json latencyJson(const LatencySummary& l) {
  return {{"samples", l.samples}, {"p50_ns", l.p50Ns},   {"p90_ns", l.p90Ns},
          {"p99_ns", l.p99Ns},    {"p999_ns", l.p999Ns}, {"max_ns", l.maxNs}};
}

// The rate of a sink over its whole life, first frame to last.
double lifetimePps(const SinkCounts& c) {
  if (c.packets < 2 || c.lastNs <= c.firstNs) return 0;
  return static_cast<double>(c.packets - 1) / seconds(c.lastNs - c.firstNs);
}

int runSend(const SendArgs& a) {
  // Everything below (interface lookup, the live frames' device, AF_PACKET) is in --netns.
  auto scope = NetnsScope::enter(a.netns);
  if (!scope) return fail(scope.error().toString());
  auto dev = findNetdev(a.iface);
  if (!dev) {
    return fail(dev.error().context +
                (a.netns.empty() ? "" : " in network namespace '" + a.netns + "'"));
  }

  GeneratorOptions g;
  TrafficSpec& s = g.spec;
  auto dmac = parseMac(a.dstMac);
  if (!dmac) usageError("--dst-mac: '" + a.dstMac + "' is not a MAC address (02:00:00:00:00:01)");
  s.dstMac = *dmac;
  s.srcMac = dev->mac;
  if (!a.srcMac.empty()) {
    auto smac = parseMac(a.srcMac);
    if (!smac) usageError("--src-mac: '" + a.srcMac + "' is not a MAC address");
    s.srcMac = *smac;
  }
  s.dstIp = parseIp(a.dstIp, s.family, "--dst-ip");
  if (a.srcIp.empty()) {
    auto addr = firstAddress(a.iface, s.family == 4 ? AF_INET : AF_INET6);
    if (!addr) {
      usageError("--src-ip is needed: '" + a.iface + "' has no IPv" + std::to_string(s.family) +
                 " address");
    }
    s.srcIp = *addr;
  } else {
    auto [first, last] = splitRange(a.srcIp);
    int f1 = 0, f2 = 0;
    s.srcIp = parseIp(first, f1, "--src-ip");
    auto lastIp = parseIp(last, f2, "--src-ip");
    if (f1 != s.family || f2 != s.family) {
      usageError("--src-ip '" + a.srcIp + "' is not of the family of --dst-ip '" + a.dstIp + "'");
    }
    if (std::memcmp(s.srcIp.data(), lastIp.data(), s.family == 4 ? 0 : 12) != 0 ||
        low32(lastIp, s.family) < low32(s.srcIp, s.family)) {
      usageError("--src-ip '" + a.srcIp + "': the range must go upwards" +
                 (s.family == 6 ? std::string(" within the last 32 bits") : std::string()));
    }
    s.srcIpCount = low32(lastIp, s.family) - low32(s.srcIp, s.family) + 1;
  }
  {
    auto [first, last] = splitRange(a.srcPort);
    uint64_t p1 = parseCount(first, "--src-port"), p2 = parseCount(last, "--src-port");
    if (p1 < 1 || p2 > 65535 || p2 < p1) {
      usageError("--src-port '" + a.srcPort + "' must be PORT or LOW-HIGH within 1..65535");
    }
    s.sportMin = static_cast<uint16_t>(p1);
    s.sportCount = static_cast<uint32_t>(p2 - p1 + 1);
  }
  s.dport = a.dport;
  if (a.proto == "udp")
    s.l4 = L4::kUdp;
  else if (a.proto == "tcp-syn" || a.proto == "syn")
    s.l4 = L4::kTcpSyn;
  else if (a.proto == "tcp-ack" || a.proto == "ack")
    s.l4 = L4::kTcpAck;
  else
    usageError("--proto '" + a.proto + "' must be udp, tcp-syn or tcp-ack");
  uint64_t pairs = static_cast<uint64_t>(s.srcIpCount) * s.sportCount;
  if (a.flows.empty()) {
    s.flows = static_cast<uint32_t>(std::min<uint64_t>(pairs, 0xffffffffULL));
  } else {
    uint64_t f = parseCount(a.flows, "--flows");
    if (f == 0 || f > pairs) {
      usageError("--flows " + a.flows + " must be 1.." + std::to_string(pairs) +
                 " (source addresses x source ports; widen --src-ip or --src-port)");
    }
    s.flows = static_cast<uint32_t>(f);
  }
  s.stamp = a.stamp;
  s.frameSize = a.size != 0 ? a.size : minFrameSize(s);
  if (std::string why = validate(s, dev->mtu); !why.empty()) usageError(why);

  g.ifindex = dev->ifindex;
  if (!a.count.empty()) g.count = parseCount(a.count, "--count");
  if (!a.count.empty() && g.count == 0) usageError("--count must be at least 1");
  if (g.count == 0 && a.duration <= 0) usageError("one of --count or --duration is needed");
  if (!a.rateText.empty()) {
    g.ratePps = static_cast<double>(parseCount(a.rateText, "--rate"));
    if (g.ratePps <= 0) usageError("--rate must be at least 1 pps");
  }
  if (a.batch < 1 || a.batch > 256) usageError("--batch must be 1..256");
  g.batch = a.batch;
  int ncpu = static_cast<int>(std::thread::hardware_concurrency());
  if (!a.cpus.empty()) {
    for (int c : a.cpus) {
      if (c < 0 || c >= ncpu)
        usageError("--cpus: CPU " + std::to_string(c) + " is not 0.." + std::to_string(ncpu - 1));
    }
    g.cpus = a.cpus;
  } else {
    if (a.threads < 1 || a.threads > 64) usageError("--threads must be 1..64");
    for (int i = 0; i < a.threads; i++) g.cpus.push_back(a.threads == 1 ? -1 : i % ncpu);
  }
  if (a.mode == "auto")
    g.backend = Backend::kAuto;
  else if (a.mode == "live")
    g.backend = Backend::kLiveFrames;
  else if (a.mode == "afpacket")
    g.backend = Backend::kAfPacket;
  else
    usageError("--mode '" + a.mode + "' must be auto, live or afpacket");
  if (!a.pcap.empty() && a.rxIface.empty())
    usageError("--pcap needs --rx IFACE (the capture is taken there)");
  if (a.latency && a.rxIface.empty()) usageError("--latency needs --rx IFACE");
  if (a.latency && !a.stamp)
    usageError("--latency needs --stamp (the time is carried in the payload)");

  std::unique_ptr<Sink> sink;
  if (!a.rxIface.empty()) {
    SinkOptions so{.ifname = a.rxIface,
                   .netns = a.rxNetns,
                   .pass = a.rxPass,
                   .pcapPath = a.pcap,
                   .snap = a.snap,
                   .latency = a.latency};
    auto r = Sink::attach(so);
    if (!r) return fail("sink: " + r.error().toString());
    sink = std::move(r.value());
  }

  auto gen = Generator::create(g);
  if (!gen) return fail(gen.error().toString());
  Generator& generator = **gen;

  bool showProgress = !a.quiet && (a.progress || isatty(STDERR_FILENO));
  uint64_t start = monotonicNs();
  BpfStatus status = bpfOk();
  std::thread runner([&] { status = generator.run(); });
  // Progress, duration, warm-up: the main thread watches; the generator threads send.
  uint64_t lastTx = 0, lastRx = 0, lastT = start;
  std::optional<SinkCounts> rxAtWarmup;
  // The sent rate is measured over the same window as the received one: after the warm-up.
  std::optional<std::pair<uint64_t, uint64_t>> txAtWarmup;  // (sent, monotonic ns)
  uint64_t warmupNs = static_cast<uint64_t>(a.warmup * 1e9);
  uint64_t durationNs = static_cast<uint64_t>(a.duration * 1e9);
  bool done = false;
  std::atomic<bool> finished{false};
  std::thread joiner([&] {
    runner.join();
    finished.store(true);
  });
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    uint64_t now = monotonicNs();
    if (finished.load()) done = true;
    if (gStop.load() || (durationNs != 0 && now - start >= durationNs)) generator.stop();
    if (!txAtWarmup && warmupNs != 0 && now - start >= warmupNs) {
      txAtWarmup = {generator.sent(), now};
      if (sink) rxAtWarmup = sink->counts();
    }
    if (showProgress && (now - lastT >= 1000000000ULL || done)) {
      uint64_t tx = generator.sent();
      double dt = seconds(now - lastT);
      std::string line = "pktgen: sent " + rate(static_cast<double>(tx - lastTx) / dt);
      if (sink) {
        uint64_t rx = sink->counts().packets;
        line += ", received " + rate(static_cast<double>(rx - lastRx) / dt);
        lastRx = rx;
      }
      line += ", total " + std::to_string(tx);
      std::fprintf(stderr, "\r%-72s%s", line.c_str(), isatty(STDERR_FILENO) ? "" : "\n");
      lastTx = tx;
      lastT = now;
    }
  }
  joiner.join();
  uint64_t end = monotonicNs();
  if (showProgress && isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  if (generator.fellBack()) {
    std::fprintf(stderr,
                 "pktgen: this kernel refused live frames (%s); fell back to AF_PACKET with "
                 "PACKET_QDISC_BYPASS (slower)\n",
                 generator.fallbackReason().c_str());
  }
  if (!status.ok()) return fail(status.error().toString());

  uint64_t sent = generator.sent();
  double elapsed = seconds(end - start);
  double txPps = elapsed > 0 ? static_cast<double>(sent) / elapsed : 0;
  if (txAtWarmup && end > txAtWarmup->second) {
    txPps = static_cast<double>(sent - txAtWarmup->first) / seconds(end - txAtWarmup->second);
  }

  // Frames still in flight reach the sink a little later: wait until its count settles.
  SinkCounts rx;
  if (sink) {
    uint64_t prev = UINT64_MAX;
    for (int i = 0; i < 40; i++) {
      rx = sink->counts();
      if (rx.packets >= sent || rx.packets == prev) break;
      prev = rx.packets;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    sink->finishCapture();
  }
  double rxPps = lifetimePps(rx);
  if (sink && rxAtWarmup && rx.lastNs > rxAtWarmup->lastNs) {
    rxPps = static_cast<double>(rx.packets - rxAtWarmup->packets) /
            seconds(rx.lastNs - rxAtWarmup->lastNs);
  }

  const TrafficSpec& sp = g.spec;
  if (a.json) {
    nlohmann::json j = {{"interface", a.iface},
                        {"backend", backendName(generator.backend())},
                        {"fell_back", generator.fellBack()},
                        {"proto", a.proto},
                        {"family", sp.family},
                        {"frame_size", sp.frameSize},
                        {"flows", sp.flows},
                        {"threads", g.cpus.size()},
                        {"sent", sent},
                        {"elapsed_s", elapsed},
                        {"pps", txPps},
                        {"bps", txPps * sp.frameSize * 8}};
    if (g.ratePps > 0) j["rate_pps"] = g.ratePps;
    if (sink) {
      j["rx"] = sinkJson(*sink, rx, rxPps);
      if (a.latency) j["rx"]["latency"] = latencyJson(sink->latency());
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("sent %lu packets (%s) in %.3f s: %s, %.2f Gbit/s [%s, %zu thread%s]\n",
                static_cast<unsigned long>(sent), describe(sp).c_str(), elapsed,
                rate(txPps).c_str(), txPps * sp.frameSize * 8 / 1e9,
                backendName(generator.backend()), g.cpus.size(), g.cpus.size() == 1 ? "" : "s");
    if (sink) {
      std::printf("received %lu packets on %s: %s%s\n", static_cast<unsigned long>(rx.packets),
                  a.rxIface.c_str(), rate(rxPps).c_str(), rxAtWarmup ? " (after the warm-up)" : "");
      if (a.latency) {
        LatencySummary l = sink->latency();
        std::printf("latency over %lu packets: p50 %.0f ns, p99 %.0f ns, max %.0f ns\n",
                    static_cast<unsigned long>(l.samples), l.p50Ns, l.p99Ns, l.maxNs);
      }
      if (rx.captureDrops != 0) {
        std::printf("capture: %lu frames did not fit the ring (slow down with --rate)\n",
                    static_cast<unsigned long>(rx.captureDrops));
      }
    }
  }
  return 0;
}

int runSink(const SinkArgs& a) {
  uint64_t want = a.count.empty() ? 0 : parseCount(a.count, "--count");
  if (!a.pcap.empty() && (a.snap < 1 || a.snap > 256)) usageError("--snap must be 1..256");
  SinkOptions so{.ifname = a.iface,
                 .netns = a.netns,
                 .pass = a.pass,
                 .pcapPath = a.pcap,
                 .snap = a.snap,
                 .latency = a.latency};
  auto r = Sink::attach(so);
  if (!r) return fail(r.error().toString());
  Sink& sink = **r;
  // The line scripts wait for before they send.
  std::fprintf(stderr, "pktgen sink: counting on %s (%s)\n", a.iface.c_str(),
               a.pass ? "pass" : "drop");
  std::fflush(stderr);
  bool showProgress = !a.quiet && (a.progress || isatty(STDERR_FILENO));
  uint64_t start = monotonicNs(), lastT = start, lastShown = 0, lastSeen = 0, lastChange = start;
  SinkCounts c;
  while (!gStop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    uint64_t now = monotonicNs();
    c = sink.counts();
    if (c.packets != lastSeen) lastChange = now;
    lastSeen = c.packets;
    if (showProgress && now - lastT >= 1000000000ULL) {
      double pps = static_cast<double>(c.packets - lastShown) / seconds(now - lastT);
      std::string line =
          "pktgen sink: received " + rate(pps) + ", total " + std::to_string(c.packets);
      std::fprintf(stderr, "\r%-60s%s", line.c_str(), isatty(STDERR_FILENO) ? "" : "\n");
      lastT = now;
      lastShown = c.packets;
    }
    if (want != 0 && c.packets >= want) break;
    if (a.duration > 0 && now - start >= static_cast<uint64_t>(a.duration * 1e9)) break;
    if (a.idle > 0 && c.packets > 0 && now - lastChange >= static_cast<uint64_t>(a.idle * 1e9))
      break;
  }
  if (showProgress && isatty(STDERR_FILENO)) std::fprintf(stderr, "\n");
  sink.finishCapture();
  c = sink.counts();
  double pps = lifetimePps(c);
  if (a.json) {
    nlohmann::json j = sinkJson(sink, c, pps);
    if (a.latency) j["latency"] = latencyJson(sink.latency());
    std::printf("%s\n", j.dump(2).c_str());
  } else if (!a.quiet) {
    std::printf("received %lu packets (%lu bytes) on %s: %s\n",
                static_cast<unsigned long>(c.packets), static_cast<unsigned long>(c.bytes),
                a.iface.c_str(), rate(pps).c_str());
    if (a.latency) {
      LatencySummary l = sink.latency();
      std::printf("latency over %lu packets: p50 %.0f ns, p99 %.0f ns, max %.0f ns\n",
                  static_cast<unsigned long>(l.samples), l.p50Ns, l.p99Ns, l.maxNs);
    }
  }
  return 0;
}

int runFwd(const std::string& in, const std::string& out, const std::string& dstMacText,
           const std::string& netns) {
  auto dmac = parseMac(dstMacText);
  if (!dmac) usageError("--dst-mac: '" + dstMacText + "' is not a MAC address");
  auto scope = NetnsScope::enter(netns);
  if (!scope) return fail(scope.error().toString());
  auto inDev = findNetdev(in);
  if (!inDev) return fail(inDev.error().context);
  auto outDev = findNetdev(out);
  if (!outDev) return fail(outDev.error().context);
  mp_pktgen* skel = mp_pktgen__open();
  if (skel == nullptr) return fail("open the pktgen BPF object");
  bpf_program__set_autoload(skel->progs.pg_gen, false);
  bpf_program__set_autoload(skel->progs.pg_sink, false);
  bpf_map__set_max_entries(skel->maps.pg_capture, 4096);
  std::memcpy(skel->bss->pg_fwd_cfg.dst_mac, dmac->data(), 6);
  std::memcpy(skel->bss->pg_fwd_cfg.src_mac, outDev->mac.data(), 6);
  skel->bss->pg_fwd_cfg.out_ifindex = static_cast<uint32_t>(outDev->ifindex);
  int rc = 0;
  bpf_link* link = nullptr;
  if (int err = mp_pktgen__load(skel); err != 0) {
    rc = fail(bpfError(err, "load pg_fwd").toString());
  } else if ((link = bpf_program__attach_xdp(skel->progs.pg_fwd, inDev->ifindex)) == nullptr) {
    rc = fail(bpfError(errno, "attach XDP to '" + in + "'").toString());
  } else {
    std::fprintf(stderr, "pktgen fwd: %s -> %s (dst %s), until SIGINT/SIGTERM\n", in.c_str(),
                 out.c_str(), dstMacText.c_str());
    while (!gStop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    bpf_link__destroy(link);
  }
  mp_pktgen__destroy(skel);
  return rc;
}

int realMain(int argc, char** argv) {
  CLI::App app{"pktgen: packet generator (BPF_PROG_RUN live frames) and XDP sink"};
  app.require_subcommand(1);

  SendArgs s;
  CLI::App* send = app.add_subcommand("send", "send packets out of IFACE");
  send->add_option("iface", s.iface, "interface to send on")->required();
  send->add_option("--netns", s.netns, "network namespace of IFACE (ip netns name)");
  send->add_option("--dst-mac", s.dstMac, "destination MAC")->required();
  send->add_option("--src-mac", s.srcMac, "source MAC (default: IFACE's)");
  send->add_option("--dst-ip", s.dstIp, "destination IPv4 or IPv6 address (sets the family)")
      ->required();
  send->add_option("--dst-port", s.dport, "destination port")->capture_default_str();
  send->add_option("--src-ip", s.srcIp, "source address or range A-B (default: IFACE's)");
  send->add_option("--src-port", s.srcPort, "source port or range LOW-HIGH")->capture_default_str();
  send->add_option("--flows", s.flows,
                   "distinct (source address, port) pairs, cycled (default: all of the ranges)");
  send->add_option("--proto", s.proto, "udp | tcp-syn | tcp-ack")->capture_default_str();
  send->add_option("--size", s.size,
                   "frame size in bytes, without FCS (default: the smallest, >= 60)");
  send->add_option("-n,--count", s.count, "packets to send (10k, 2M)");
  send->add_option("-d,--duration", s.duration, "seconds to send");
  send->add_option("-r,--rate", s.rateText,
                   "packets per second, all threads together (default: no limit)");
  send->add_option("-t,--threads", s.threads, "sending threads, pinned to CPUs 0..N-1")
      ->capture_default_str();
  send->add_option("--cpus", s.cpus, "one thread per CPU listed (instead of --threads)")
      ->delimiter(',');
  send->add_option("--batch", s.batch, "frames per kernel batch (1..256)")->capture_default_str();
  send->add_option("--mode", s.mode, "auto | live | afpacket")->capture_default_str();
  send->add_flag("--stamp", s.stamp, "carry magic, sequence and send time in the payload");
  send->add_option("--rx", s.rxIface,
                   "count at this interface too (XDP sink), for the received rate");
  send->add_option("--rx-netns", s.rxNetns, "network namespace of --rx");
  send->add_flag("--rx-pass", s.rxPass, "the --rx sink passes frames on (default: drops)");
  send->add_option("--pcap", s.pcap, "capture what --rx receives into this pcap file");
  send->add_option("--snap", s.snap, "bytes captured per frame (1..256)")->capture_default_str();
  send->add_flag("--latency", s.latency, "one-way latency percentiles at --rx (needs --stamp)");
  send->add_option("--warmup", s.warmup, "seconds before the sent and received rates are measured");
  send->add_flag("--json", s.json, "summary as JSON on stdout");
  send->add_flag("-q,--quiet", s.quiet, "no progress, no summary");
  send->add_flag("--progress", s.progress, "progress lines even when stderr is not a terminal");

  SinkArgs k;
  CLI::App* sink = app.add_subcommand("sink", "count what arrives on IFACE (XDP)");
  sink->add_option("iface", k.iface, "interface to count on")->required();
  sink->add_option("--netns", k.netns, "network namespace of IFACE");
  sink->add_flag("--pass", k.pass, "pass frames on to the stack (default: drop)");
  sink->add_option("-n,--count", k.count, "stop after this many packets");
  sink->add_option("-d,--duration", k.duration, "stop after this many seconds");
  sink->add_option("--idle", k.idle,
                   "stop after this many seconds without a packet (once one came)");
  sink->add_option("--pcap", k.pcap, "capture into this pcap file");
  sink->add_option("--snap", k.snap, "bytes captured per frame (1..256)")->capture_default_str();
  sink->add_flag("--latency", k.latency, "one-way latency of stamped frames");
  sink->add_flag("--json", k.json, "summary as JSON on stdout");
  sink->add_flag("-q,--quiet", k.quiet, "no progress, no summary");
  sink->add_flag("--progress", k.progress, "progress lines even when stderr is not a terminal");

  std::string fwdIn, fwdOut, fwdMac, fwdNetns;
  CLI::App* fwd =
      app.add_subcommand("fwd", "trivial XDP forwarder IN -> OUT (the benchmarks' floor)");
  fwd->add_option("in", fwdIn, "interface frames arrive on")->required();
  fwd->add_option("out", fwdOut, "interface they are redirected to")->required();
  fwd->add_option("--dst-mac", fwdMac, "destination MAC written into each frame")->required();
  fwd->add_option("--netns", fwdNetns, "network namespace of both interfaces");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  installLibbpfLogger();
  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  try {
    if (*send) return runSend(s);
    if (*sink) return runSink(k);
    return runFwd(fwdIn, fwdOut, fwdMac, fwdNetns);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "pktgen: %s\n", e.message.c_str());
    return 2;
  }
}

}  // namespace
}  // namespace meshpath::pktgen

int main(int argc, char** argv) { return meshpath::pktgen::realMain(argc, argv); }
