// health_checker.cpp — the probes (TCP, HTTP, UDP on Asio sockets) and their schedule.
#include "health/health_checker.h"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

namespace meshpath::health {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;

namespace {

constexpr size_t kLagWindow = 1 << 16;
constexpr size_t kMaxStatusLine = 4096;
constexpr size_t kMaxUdpReply = 2048;

asio::ip::address toAsio(const IpAddress& ip) {
  if (ip.isV6()) {
    asio::ip::address_v6::bytes_type b;
    std::copy(ip.bytes().begin(), ip.bytes().end(), b.begin());
    return asio::ip::address_v6(b);
  }
  asio::ip::address_v4::bytes_type b;
  std::copy(ip.bytes().begin(), ip.bytes().begin() + 4, b.begin());
  return asio::ip::address_v4(b);
}

// One probe in flight: its socket, its deadline, and the promise to answer once.
class ProbeOp : public std::enable_shared_from_this<ProbeOp> {
 public:
  ProbeOp(asio::io_context& io, const Clock& clock, const ProbeTarget& target,
          std::function<void(ProbeResult)> done)
      : clock_(clock),
        target_(target),
        done_(std::move(done)),
        tcp_(io),
        udp_(io),
        deadline_(io),
        started_(clock.now()) {}

  void start() {
    deadline_.expires_after(std::chrono::milliseconds(target_.check.timeoutMs));
    deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) {
        self->finish(false, "timeout after " + formatDurationMs(self->target_.check.timeoutMs));
      }
    });
    switch (target_.check.type) {
      case HealthCheckType::kTcp:
      case HealthCheckType::kHttp:
        startTcp();
        break;
      case HealthCheckType::kUdp:
        startUdp();
        break;
      case HealthCheckType::kNone:
        finish(true, "no check");
        break;
    }
  }

 private:
  void startTcp() {
    tcp::endpoint ep(toAsio(target_.address), target_.port);
    tcp_.async_connect(ep, [self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return self->finish(false, ec.message());
      if (self->target_.check.type == HealthCheckType::kTcp) {
        return self->finish(true, "connected");
      }
      self->sendHttp();
    });
  }

  void sendHttp() {
    const HealthCheckSpec& c = target_.check;
    std::string host = c.httpHost;
    if (host.empty()) {
      host = target_.address.isV6() ? "[" + target_.address.toString() + "]"
                                    : target_.address.toString();
      host += ":" + std::to_string(target_.port);
    }
    request_ = "GET " + c.httpPath + " HTTP/1.1\r\nHost: " + host +
               "\r\nUser-Agent: meshd-health\r\nAccept: */*\r\nConnection: close\r\n\r\n";
    asio::async_write(tcp_, asio::buffer(request_),
                      [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                        if (ec) return self->finish(false, "send: " + ec.message());
                        self->readStatus();
                      });
  }

  void readStatus() {
    asio::async_read_until(
        tcp_, asio::dynamic_buffer(reply_, kMaxStatusLine), "\r\n",
        [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
          if (ec) {
            return self->finish(false, ec == asio::error::eof
                                           ? "connection closed before a status line"
                                           : "read: " + ec.message());
          }
          self->checkStatus(self->reply_.substr(0, n));
        });
  }

  void checkStatus(const std::string& line) {
    // "HTTP/1.1 200 OK\r\n"
    const size_t sp = line.find(' ');
    int status = 0;
    if (line.starts_with("HTTP/") && sp != std::string::npos && line.size() >= sp + 4) {
      const std::string code = line.substr(sp + 1, 3);
      if (std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        status = std::stoi(code);
      }
    }
    if (status == 0) return finish(false, "not an HTTP status line");
    const bool ok = status >= target_.check.httpStatusMin && status <= target_.check.httpStatusMax;
    finish(ok, "HTTP " + std::to_string(status));
  }

  void startUdp() {
    udp::endpoint ep(toAsio(target_.address), target_.port);
    boost::system::error_code ec;
    udp_.open(ep.protocol(), ec);
    // connect(): ICMP port unreachable comes back as ECONNREFUSED instead of a timeout.
    if (!ec) udp_.connect(ep, ec);
    if (ec) return finish(false, ec.message());
    udp_.async_send(
        asio::buffer(target_.check.udpSend),
        [self = shared_from_this()](const boost::system::error_code& e, size_t) {
          if (e) return self->finish(false, "send: " + e.message());
          self->reply_.resize(kMaxUdpReply);
          self->udp_.async_receive(
              asio::buffer(self->reply_), [self](const boost::system::error_code& e2, size_t n) {
                if (e2) return self->finish(false, e2.message());
                const std::string& want = self->target_.check.udpExpect;
                const bool ok = n >= want.size() && self->reply_.compare(0, want.size(), want) == 0;
                self->finish(ok, ok ? "reply" : "unexpected reply");
              });
        });
  }

  void finish(bool ok, std::string detail) {
    if (finished_) return;
    finished_ = true;
    boost::system::error_code ignored;
    deadline_.cancel();
    tcp_.close(ignored);
    udp_.close(ignored);
    ProbeResult r;
    r.ok = ok;
    r.at = clock_.now();
    r.latency = std::chrono::duration_cast<std::chrono::microseconds>(r.at - started_);
    r.detail = std::move(detail);
    auto done = std::move(done_);
    done(r);
  }

  const Clock& clock_;
  ProbeTarget target_;
  std::function<void(ProbeResult)> done_;
  tcp::socket tcp_;
  udp::socket udp_;
  asio::steady_timer deadline_;
  TimePoint started_;
  std::string request_;
  std::string reply_;
  bool finished_ = false;
};

}  // namespace

void AsioProber::probe(const ProbeTarget& target, std::function<void(ProbeResult)> done) {
  std::make_shared<ProbeOp>(io_, clock_, target, std::move(done))->start();
}

struct HealthChecker::Scheduled {
  Scheduled(asio::io_context& io, ProbeTarget t) : target(std::move(t)), timer(io) {}
  ProbeTarget target;
  asio::steady_timer timer;
  TimePoint slot;  // this round's place in the schedule
  TimePoint due;   // slot + jitter
  bool inFlight = false;
  bool stopped = false;
};

HealthChecker::HealthChecker(asio::io_context& io, const Clock& clock, Prober& prober,
                             ResultHandler onResult)
    : io_(io),
      clock_(clock),
      prober_(prober),
      onResult_(std::move(onResult)),
      rng_(std::random_device{}()) {
  lagSamplesUs_.reserve(kLagWindow);
}

HealthChecker::~HealthChecker() {
  for (auto& [key, s] : targets_) {
    s->stopped = true;
    s->timer.cancel();
  }
}

void HealthChecker::setTargets(const std::vector<ProbeTarget>& targets) {
  std::map<std::pair<std::string, std::string>, std::shared_ptr<Scheduled>> next;
  const TimePoint now = clock_.now();
  for (const ProbeTarget& t : targets) {
    auto id = std::make_pair(t.service, t.key);
    auto it = targets_.find(id);
    if (it != targets_.end() && it->second->target == t) {
      next[id] = it->second;
      targets_.erase(it);
      continue;
    }
    auto s = std::make_shared<Scheduled>(io_, t);
    const auto interval = std::chrono::milliseconds(t.check.intervalMs);
    std::uniform_int_distribution<int64_t> spread(0, interval.count() * 1000 - 1);
    s->slot = now + std::chrono::microseconds(spread(rng_));
    s->due = s->slot;
    next[id] = s;
    arm(s);
  }
  for (auto& [id, s] : targets_) {  // left over: no longer wanted
    s->stopped = true;
    s->timer.cancel();
  }
  targets_ = std::move(next);
}

void HealthChecker::arm(const std::shared_ptr<Scheduled>& s) {
  s->timer.expires_at(s->due);
  s->timer.async_wait([this, s](const boost::system::error_code& ec) {
    if (ec || s->stopped) return;
    fire(s);
  });
}

void HealthChecker::fire(const std::shared_ptr<Scheduled>& s) {
  const TimePoint now = clock_.now();
  const auto lag = std::max(std::chrono::microseconds(0),
                            std::chrono::duration_cast<std::chrono::microseconds>(now - s->due));
  const auto us = static_cast<uint32_t>(std::min<int64_t>(lag.count(), UINT32_MAX));
  if (lagSamplesUs_.size() < kLagWindow) {
    lagSamplesUs_.push_back(us);
  } else {
    lagSamplesUs_[lagNext_] = us;
  }
  lagNext_ = (lagNext_ + 1) % kLagWindow;
  lagMax_ = std::max(lagMax_, lag);
  ++probes_;
  if (sink_ != nullptr) sink_->probeStarted(lag);

  if (s->inFlight) {
    ++skipped_;
  } else {
    s->inFlight = true;
    prober_.probe(s->target, [this, s](ProbeResult r) {
      s->inFlight = false;
      if (s->stopped) return;
      if (sink_ != nullptr) sink_->probeDone(s->target.service, r.latency);
      onResult_(s->target, r);
    });
  }

  const auto interval = std::chrono::milliseconds(s->target.check.intervalMs);
  s->slot += interval;
  if (s->slot + interval < now) {  // more than a whole interval behind: skip, do not burst
    const auto behind = (now - s->slot) / interval;
    s->slot += behind * interval;
    skipped_ += static_cast<uint64_t>(behind);
  }
  s->due = s->slot;
  if (s->target.check.jitterMs > 0) {
    std::uniform_int_distribution<int64_t> jitter(0, s->target.check.jitterMs * 1000);
    s->due += std::chrono::microseconds(jitter(rng_));
  }
  arm(s);
}

LagStats HealthChecker::lag() const {
  LagStats out;
  out.probes = probes_;
  out.skipped = skipped_;
  out.max = lagMax_;
  if (lagSamplesUs_.empty()) return out;
  std::vector<uint32_t> sorted = lagSamplesUs_;
  auto at = [&](double q) {
    const size_t i = std::min(sorted.size() - 1, static_cast<size_t>(q * double(sorted.size())));
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(i), sorted.end());
    return std::chrono::microseconds(sorted[i]);
  };
  out.p50 = at(0.50);
  out.p99 = at(0.99);
  return out;
}

void HealthChecker::resetLag() {
  lagSamplesUs_.clear();
  lagNext_ = 0;
  probes_ = 0;
  skipped_ = 0;
  lagMax_ = std::chrono::microseconds(0);
}

}  // namespace meshpath::health
