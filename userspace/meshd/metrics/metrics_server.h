// metrics_server.h — /metrics over HTTP (node.metrics_listen): prometheus-cpp's Exposer runs the
// civetweb server, whose threads answer scrapes, in front of a MetricsCollector that lives on
// meshd's event loop.
//
// Why a scrape posts its collection onto the event loop and waits for it: meshd's state (the
// control plane, the reconciler's ids, the health machines, the dataplane's caches) belongs to
// the io_context thread and has no locks; reading it from a civetweb thread would race every
// commit and health event. The loop runs nothing longer than a step of a table walk (a few ms), so
// the wait is short; if the loop does not answer within the timeout (it is stuck, or stopping)
// the scrape gets a 503 naming the reason instead of hanging, and Prometheus marks the target
// down. The Exposer's own handler cannot answer an error (a Collectable has no way to fail, and
// an exception would unwind through civetweb's C frames and end meshd), and its ostream
// serializer and default-level gzip were most of a scrape's cost at 1,000 endpoints; so the whole
// answer is written in civetweb's begin_request callback: the loop writes the text straight from
// what it reads (MetricsCollector::collectText), then, on the civetweb thread, gzip at zlib's
// fastest level when asked.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "metrics/metrics_collector.h"
#include "result.h"

struct mg_connection;  // civetweb.h

namespace prometheus {
class Exposer;
}

namespace meshpath::metrics {

class MetricsServer {
 public:
  static constexpr std::chrono::milliseconds kCollectTimeout{1000};

  // Whether node.metrics_listen can be bound in this network namespace now. meshd checks this
  // before it touches the datapath, and starts the server itself only after --daemon's fork
  // (civetweb's threads would not survive it).
  static Result<void> checkListen(const std::string& listen);

  // Listens on `listen` ("127.0.0.1:9464", "[::1]:9464"; port 0 picks a free one) and serves
  // GET /metrics from `collector`, collected on `io`'s thread.
  static Result<std::unique_ptr<MetricsServer>> start(
      boost::asio::io_context& io, MetricsCollector& collector, const std::string& listen,
      std::chrono::milliseconds timeout = kCollectTimeout);
  ~MetricsServer();

  uint16_t port() const { return port_; }  // the port bound

 private:
  MetricsServer(boost::asio::io_context& io, MetricsCollector& collector,
                std::chrono::milliseconds timeout);
  Result<std::string> collectOnLoop();
  static int onBeginRequest(::mg_connection* conn);

  boost::asio::io_context& io_;
  MetricsCollector& collector_;
  std::chrono::milliseconds timeout_;
  uint16_t port_ = 0;
  std::atomic<size_t> lastSize_{0};  // the last body's length: the next one's reservation
  std::unique_ptr<prometheus::Exposer> exposer_;  // last: its threads stop before the rest goes
};

// Whether a scrape is answered gzipped: the scraper asks for it (Accept-Encoding: gzip, not q=0)
// and is not on this host's loopback (127.0.0.0/8, ::1), where compressing saves no bytes worth
// its CPU (about half of a scrape's at 1,000 endpoints). Prometheus on another host gets gzip.
bool compressScrape(const char* remoteAddr, const char* acceptEncoding);
// The body gzipped at zlib's fastest level; nullopt when zlib fails.
std::optional<std::string> gzip(const std::string& text);

}  // namespace meshpath::metrics
