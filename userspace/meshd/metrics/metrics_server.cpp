// metrics_server.cpp — the Exposer, the begin_request gate that collects on the event loop and
// answers the scrape, and the check of node.metrics_listen at start.
#include "metrics/metrics_server.h"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <prometheus/exposer.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <boost/asio/post.hpp>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>

#include "config.h"

namespace meshpath::metrics {

namespace {

// civetweb's begin_request has no user pointer of ours (CivetServer keeps the context's for
// itself): the gate finds its server by the port the request came in on.
std::mutex gServersMutex;
std::map<int, MetricsServer*> gServers;

std::string listenHint(const std::string& listen) {
  return "another process may hold it (`ss -ltnp` shows which), or the address is not on this "
         "host; set node.metrics_listen to a free HOST:PORT, or to \"\" to turn /metrics off "
         "(it was " +
         (listen.empty() ? std::string("\"\"") : listen) + ")";
}

// HOST:PORT as node.metrics_listen is written, and also HOST:0 (any free port, for tests and
// benchmarks), which the config refuses since Prometheus has to know the port it scrapes.
std::optional<ListenAddress> parseListen(const std::string& listen) {
  if (listen.ends_with(":0")) {
    auto addr = parseListenAddress(listen.substr(0, listen.size() - 1) + "1");
    if (addr) addr->port = 0;
    return addr;
  }
  return parseListenAddress(listen);
}

bool isMetricsUri(const char* uri) {
  return uri != nullptr && std::strncmp(uri, "/metrics", 8) == 0 &&
         (uri[8] == '\0' || uri[8] == '/');
}

int logCivetweb(const ::mg_connection*, const char* message) {
  spdlog::warn("metrics: civetweb: {}", message);
  return 1;
}

}  // namespace

Result<void> MetricsServer::checkListen(const std::string& listen) {
  const auto addr = parseListen(listen);
  if (!addr) {
    return Error{EINVAL, "node.metrics_listen " + listen + " is not HOST:PORT",
                 "write it as 127.0.0.1:9464 or [::1]:9464, or \"\" to turn /metrics off"};
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, addr->host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(addr->port);
    len = sizeof(*v4);
  } else if (::inet_pton(AF_INET6, addr->host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(addr->port);
    len = sizeof(*v6);
  } else {
    return Error{EINVAL, "node.metrics_listen " + listen + ": not an IP address",
                 "write a literal address: 127.0.0.1:9464 or [::1]:9464"};
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoError(-1, "node.metrics_listen " + listen + ": socket");
  const int one = 1;
  // As civetweb binds (SO_REUSEADDR), so a port in TIME_WAIT passes here as it would there.
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    return Error{err, "node.metrics_listen " + listen + ": cannot listen for Prometheus scrapes",
                 listenHint(listen)};
  }
  return {};
}

MetricsServer::MetricsServer(boost::asio::io_context& io, MetricsCollector& collector,
                             std::chrono::milliseconds timeout)
    : io_(io), collector_(collector), timeout_(timeout) {}

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(boost::asio::io_context& io,
                                                            MetricsCollector& collector,
                                                            const std::string& listen,
                                                            std::chrono::milliseconds timeout) {
  if (auto r = checkListen(listen); !r) return r.error();
  std::unique_ptr<MetricsServer> server(new MetricsServer(io, collector, timeout));
  CivetCallbacks callbacks;
  callbacks.begin_request = &MetricsServer::onBeginRequest;
  callbacks.log_message = &logCivetweb;
  try {
    // Two threads: a scrape waits on the loop, so a second one (a curl beside Prometheus) is not
    // queued behind it.
    server->exposer_ = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", listen, "num_threads", "2"}, &callbacks);
  } catch (const std::exception& e) {
    return Error{EADDRINUSE,
                 "node.metrics_listen " + listen + ": cannot listen for Prometheus scrapes (" +
                     e.what() + ")",
                 listenHint(listen)};
  }
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
  {
    std::lock_guard lock(gServersMutex);
    gServers[server->port_] = server.get();
  }
  return server;
}

MetricsServer::~MetricsServer() {
  {
    std::lock_guard lock(gServersMutex);
    if (auto it = gServers.find(port_); it != gServers.end() && it->second == this) {
      gServers.erase(it);
    }
  }
  exposer_.reset();  // stops civetweb: a scrape still waiting answers 503 when its wait ends
}

Result<std::string> MetricsServer::collectOnLoop() {
  using Answer = Result<std::string>;
  // Shared with the posted handler: a collection the scrape stopped waiting for still has a
  // promise to fulfil.
  auto promise = std::make_shared<std::promise<Answer>>();
  std::future<Answer> answer = promise->get_future();
  const size_t reserve = lastSize_.load(std::memory_order_relaxed) + 4096;
  boost::asio::post(io_, [&collector = collector_, promise, reserve] {
    std::string text;
    text.reserve(reserve);
    auto r = collector.collectText(text);
    promise->set_value(r ? Answer(std::move(text)) : Answer(r.error()));
  });
  if (answer.wait_for(timeout_) != std::future_status::ready) {
    return Error{
        ETIMEDOUT,
        "meshd's event loop did not answer within " + std::to_string(timeout_.count()) + " ms",
        "meshd is busy or stopping; see its log"};
  }
  return answer.get();
}

namespace {

// Whether the scraper takes a gzip body (Prometheus asks for one: "gzip" in Accept-Encoding).
bool acceptsGzip(const char* header) {
  if (header == nullptr) return false;
  const std::string_view h(header);
  const size_t at = h.find("gzip");
  if (at == std::string_view::npos) return false;
  const std::string_view rest = h.substr(at + 4);
  return !(rest.starts_with(";q=0") && !rest.starts_with(";q=0."));  // q=0: "not acceptable"
}

bool isLoopbackPeer(const char* remoteAddr) {
  if (remoteAddr == nullptr) return false;
  const std::string_view a(remoteAddr);
  return a.starts_with("127.") || a == "::1" || a.starts_with("::ffff:127.");
}

}  // namespace

// The body gzipped at zlib's fastest level: the text repeats its names and labels on every line,
// so even that shrinks it about 30 times (860 kB -> 45 kB at 1,000 endpoints) in a couple of ms;
// the default level takes four times as long for 15 % less. nullopt when zlib fails (the body
// then goes out as it is).
std::optional<std::string> gzip(const std::string& text) {
  z_stream zs{};
  // windowBits 15 + 16: a gzip header and trailer around the deflate stream.
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return std::nullopt;
  }
  std::string out(deflateBound(&zs, text.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const size_t written = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) return std::nullopt;
  out.resize(written);
  return out;
}

bool compressScrape(const char* remoteAddr, const char* acceptEncoding) {
  return acceptsGzip(acceptEncoding) && !isLoopbackPeer(remoteAddr);
}

int MetricsServer::onBeginRequest(::mg_connection* conn) {
  const mg_request_info* ri = mg_get_request_info(conn);
  if (ri == nullptr || !isMetricsUri(ri->local_uri)) {
    return 0;  // civetweb goes on as usual (404 from the Exposer's server)
  }
  const bool head = std::strcmp(ri->request_method, "HEAD") == 0;
  if (!head && std::strcmp(ri->request_method, "GET") != 0) {
    mg_send_http_error(conn, 405, "GET /metrics\n");
    return 405;
  }
  MetricsServer* self = nullptr;
  {
    std::lock_guard lock(gServersMutex);
    if (auto it = gServers.find(ri->server_port); it != gServers.end()) self = it->second;
  }
  if (self == nullptr) {
    mg_send_http_error(conn, 503, "meshd's metrics are starting or stopping\n");
    return 503;
  }
  auto text = self->collectOnLoop();
  if (!text) {
    spdlog::warn("metrics: scrape refused: {}", text.error().toString());
    mg_send_http_error(conn, 503, "metrics not collected: %s\n", text.error().toString().c_str());
    return 503;
  }
  // Compressing happens here, on civetweb's thread: the event loop only reads and writes text.
  // Not for a scraper on this host (the default listen address admits no other): over loopback
  // the bytes cost nothing and zlib would be about half of the scrape's CPU.
  std::string body = std::move(*text);
  self->lastSize_.store(body.size(), std::memory_order_relaxed);
  const char* encoding = "";
  if (compressScrape(ri->remote_addr, mg_get_header(conn, "Accept-Encoding"))) {
    if (auto gz = gzip(body)) {
      body = std::move(*gz);
      encoding = "Content-Encoding: gzip\r\n";
    }
  }
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "%s"
            "Content-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            encoding, body.size());
  if (!head) mg_write(conn, body.data(), body.size());
  return 200;
}

}  // namespace meshpath::metrics
