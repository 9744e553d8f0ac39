// bench_health_lag — how late meshd's health probes start against their
// schedule with N endpoints at one interval on one event loop (the daemon's
// layout: one thread for everything). The endpoints are loopback TCP listeners
// served by a second thread, so the probing loop pays only for its own side.
// Beside it, the same schedule with a probe that does nothing: the floor of the
// timers themselves.
//
//   bench_health_lag [--endpoints 1000] [--interval-ms 100] [--seconds 10]
//   [--type tcp|http]
#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "health/health_checker.h"

namespace {

namespace asio = boost::asio;
using namespace meshpath;
using namespace meshpath::health;

class NoopProber : public Prober {
public:
  explicit NoopProber(const Clock &clock) : clock_(clock) {}
  void probe(const ProbeTarget &,
             std::function<void(ProbeResult)> done) override {
    done(ProbeResult{true, clock_.now(), std::chrono::microseconds(0), "noop"});
  }

private:
  const Clock &clock_;
};

// Accepts and answers "HTTP/1.1 200" (enough for both tcp and http checks),
// then closes.
void serve(asio::ip::tcp::acceptor &a) {
  a.async_accept([&a](boost::system::error_code ec, asio::ip::tcp::socket s) {
    if (ec)
      return;
    auto sock = std::make_shared<asio::ip::tcp::socket>(std::move(s));
    static const std::string reply =
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    asio::async_write(*sock, asio::buffer(reply),
                      [sock](boost::system::error_code, size_t) {});
    serve(a);
  });
}

double cpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Run {
  LagStats lag;
  uint64_t results = 0, failed = 0;
  double cpu = 0;
};

Run measure(Prober *prober, AsioProber *real, asio::io_context &io,
            const SteadyClock &clock, const std::vector<ProbeTarget> &targets,
            int seconds) {
  Run run;
  Prober &p = prober != nullptr ? *prober : static_cast<Prober &>(*real);
  HealthChecker checker(
      io, clock, p, [&](const ProbeTarget &, const ProbeResult &r) {
        ++run.results;
        if (!r.ok && ++run.failed <= 3)
          std::printf("  (a failed probe: %s)\n", r.detail.c_str());
      });
  checker.setTargets(targets);
  // The first interval only spreads the first slots; measure after it.
  io.restart();
  io.run_for(std::chrono::milliseconds(targets.front().check.intervalMs));
  checker.resetLag();
  run.results = run.failed = 0;
  const double cpu0 = cpuSeconds();
  io.restart();
  io.run_for(std::chrono::seconds(seconds));
  run.cpu = cpuSeconds() - cpu0;
  run.lag = checker.lag();
  checker.setTargets({});
  io.restart();
  io.run_for(std::chrono::milliseconds(200)); // let probes in flight finish
  return run;
}

void print(const char *name, const Run &r, int seconds) {
  std::printf(
      "%-22s probes %7llu (%6.0f/s)  failed %4llu  skipped %4llu  lag p50 "
      "%7.3f ms  "
      "p99 %7.3f ms  max %7.3f ms  loop CPU %4.1f%%\n",
      name, static_cast<unsigned long long>(r.lag.probes),
      double(r.lag.probes) / seconds, static_cast<unsigned long long>(r.failed),
      static_cast<unsigned long long>(r.lag.skipped),
      double(r.lag.p50.count()) / 1000, double(r.lag.p99.count()) / 1000,
      double(r.lag.max.count()) / 1000, 100.0 * r.cpu / seconds);
}

} // namespace

int main(int argc, char **argv) {
  int endpoints = 1000, intervalMs = 100, seconds = 10;
  std::string type = "tcp";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--endpoints")
      endpoints = std::atoi(argv[i + 1]);
    if (k == "--interval-ms")
      intervalMs = std::atoi(argv[i + 1]);
    if (k == "--seconds")
      seconds = std::atoi(argv[i + 1]);
    if (k == "--type")
      type = argv[i + 1];
  }
  rlimit nofile{65536, 65536};
  ::setrlimit(RLIMIT_NOFILE, &nofile);

  asio::io_context servers;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> listeners;
  std::vector<ProbeTarget> targets;
  for (int i = 0; i < endpoints; ++i) {
    auto a = std::make_unique<asio::ip::tcp::acceptor>(
        servers,
        asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    a->listen(4096);
    serve(*a);
    ProbeTarget t;
    t.service = "bench";
    t.address = *IpAddress::parse("127.0.0.1");
    t.port = a->local_endpoint().port();
    t.key = "127.0.0.1:" + std::to_string(t.port);
    t.check.type =
        type == "http" ? HealthCheckType::kHttp : HealthCheckType::kTcp;
    t.check.intervalMs = static_cast<uint32_t>(intervalMs);
    t.check.timeoutMs = static_cast<uint32_t>(intervalMs / 2);
    targets.push_back(t);
    listeners.push_back(std::move(a));
  }
  auto work = asio::make_work_guard(servers);
  std::thread serverThread([&] { servers.run(); });

  std::printf("health probe schedule: %d endpoints every %d ms (%s checks, "
              "timeout %d ms), %d s "
              "each, one event loop\n",
              endpoints, intervalMs, type.c_str(), intervalMs / 2, seconds);
  asio::io_context io;
  SteadyClock clock;
  NoopProber noop(clock);
  AsioProber real(io, clock);
  print("timers only (floor)",
        measure(&noop, nullptr, io, clock, targets, seconds), seconds);
  print(("real " + type + " probes").c_str(),
        measure(nullptr, &real, io, clock, targets, seconds), seconds);

  work.reset();
  servers.stop();
  serverThread.join();
  return 0;
}
