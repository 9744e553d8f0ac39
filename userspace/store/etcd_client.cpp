#include "etcd_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/rfc2818_verification.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

namespace meshpath::store {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {

// The gateway carries keys and values as base64 (they are bytes in etcd).
std::string base64Encode(const std::string& in) {
  std::string out(beast::detail::base64::encoded_size(in.size()), '\0');
  out.resize(beast::detail::base64::encode(out.data(), in.data(), in.size()));
  return out;
}

std::string base64Decode(const std::string& in) {
  std::string out(beast::detail::base64::decoded_size(in.size()), '\0');
  auto [written, read] = beast::detail::base64::decode(out.data(), in.data(), in.size());
  (void)read;
  out.resize(written);
  return out;
}

// The gateway writes int64 fields as JSON strings ("revision": "42") and leaves out zeros.
int64_t int64Field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  return 0;
}

KeyValue keyValueFrom(const json& kv) {
  KeyValue out;
  out.key = base64Decode(kv.value("key", ""));
  out.value = base64Decode(kv.value("value", ""));
  out.modRevision = int64Field(kv, "mod_revision");
  out.lease = int64Field(kv, "lease");
  return out;
}

Error storeError(const std::string& what, const std::string& hint = {}) {
  return Error{0, what, hint};
}

const char* kUnreachableHint =
    "is etcd running and its client URL the one given to --store? (etcdctl --endpoints=... "
    "endpoint health)";

// One HTTP exchange on a TCP stream, in TLS when the client has a TLS context, each step under
// the deadline (basic_stream's timer).
class Exchange {
 public:
  Exchange(std::chrono::milliseconds timeout, asio::ssl::context* tls) : timeout_(timeout) {
    if (tls != nullptr) {
      tls_.emplace(ioc_, *tls);
    } else {
      plain_.emplace(ioc_);
    }
  }

  beast::error_code connect(const HostPort& to) {
    beast::error_code ec;
    tcp::resolver resolver(ioc_);
    auto found = resolver.resolve(to.host, std::to_string(to.port), ec);
    if (ec) return ec;
    tcp_stream().expires_after(timeout_);
    tcp_stream().async_connect(found, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec || !tls_) return ec;
    // The member's certificate must name the host given to --store (and chain to --store-cacert).
    if (!SSL_set_tlsext_host_name(tls_->native_handle(), to.host.c_str())) {
      return beast::error_code(static_cast<int>(::ERR_get_error()),
                               asio::error::get_ssl_category());
    }
    tls_->set_verify_callback(asio::ssl::rfc2818_verification(to.host));  // DNS or IP SAN
    tcp_stream().expires_after(timeout_);
    tls_->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    run();
    return ec;
  }

  template <typename Request>
  beast::error_code write(Request& req) {
    beast::error_code ec;
    tcp_stream().expires_after(timeout_);
    on([&](auto& s) { http::async_write(s, req, [&](beast::error_code e, size_t) { ec = e; }); });
    run();
    return ec;
  }

  beast::error_code read(http::response<http::string_body>& res) {
    beast::error_code ec;
    tcp_stream().expires_after(timeout_);
    on([&](auto& s) {
      http::async_read(s, buffer_, res, [&](beast::error_code e, size_t) { ec = e; });
    });
    run();
    return ec;
  }

  // Runs `f` with the stream HTTP goes over (TLS or plain).
  template <typename F>
  void on(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(*plain_);
    }
  }

  asio::io_context& ioc() { return ioc_; }
  beast::tcp_stream& tcp_stream() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }
  beast::flat_buffer& buffer() { return buffer_; }

  void run() {
    ioc_.run();
    ioc_.restart();
  }

 private:
  asio::io_context ioc_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
  std::chrono::milliseconds timeout_;
};

std::string describe(const beast::error_code& ec, std::chrono::milliseconds timeout) {
  if (ec == beast::error::timeout)
    return "no answer within " + std::to_string(timeout.count()) + " ms";
  return ec.message();
}

http::request<http::string_body> jsonRequest(const HostPort& to, const std::string& path,
                                             const std::string& body, const std::string& token) {
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, to.toString());
  if (!token.empty()) req.set(http::field::authorization, token);
  req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  return req;
}

}  // namespace

std::string StoreUrl::toString() const {
  std::string out = "etcd://";
  for (size_t i = 0; i < endpoints.size(); ++i) out += (i ? "," : "") + endpoints[i].toString();
  return out + prefix;
}

Result<StoreUrl> parseStoreUrl(const std::string& text) {
  const std::string form = "expected etcd://HOST:PORT[,HOST:PORT...][/PREFIX]";
  const std::string scheme = "etcd://";
  if (text.rfind(scheme, 0) != 0) {
    return Error{0, "--store " + text + ": not an etcd URL", form};
  }
  std::string rest = text.substr(scheme.size());
  StoreUrl url;
  size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    url.prefix = rest.substr(slash);
    rest.resize(slash);
    while (url.prefix.size() > 1 && url.prefix.back() == '/') url.prefix.pop_back();
    if (url.prefix == "/") return Error{0, "--store " + text + ": the prefix is empty", form};
  }
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string hp =
        rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    HostPort e;
    size_t colon = hp.rfind(':');
    if (hp.empty()) return Error{0, "--store " + text + ": an empty member address", form};
    if (colon == std::string::npos) {
      e.host = hp;
    } else {
      e.host = hp.substr(0, colon);
      std::string port = hp.substr(colon + 1);
      unsigned v = 0;
      auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
      if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
        return Error{0, "--store " + text + ": bad port '" + port + "'", form};
      }
      e.port = static_cast<uint16_t>(v);
    }
    if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') {
      e.host = e.host.substr(1, e.host.size() - 2);
    }
    if (e.host.empty()) return Error{0, "--store " + text + ": a member without a host", form};
    url.endpoints.push_back(e);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return url;
}

Result<StoreSecurity> storeSecurity(const StoreSecurityOptions& options) {
  const auto& [caFile, certFile, keyFile, user, passwordFile] = options;
  StoreSecurity s{caFile, certFile, keyFile, user, ""};
  if (certFile.empty() != keyFile.empty()) {
    return Error{0, "--store-cert and --store-key go together", "give both, or neither"};
  }
  if (!certFile.empty() && caFile.empty()) {
    return Error{0, "--store-cert without --store-cacert",
                 "TLS to etcd needs the CA its members' certificates chain to (--store-cacert)"};
  }
  if (!passwordFile.empty()) {
    if (user.empty()) return Error{0, "--store-password-file without --store-user", ""};
    std::ifstream in(passwordFile);
    if (!in)
      return Error{errno, "--store-password-file " + passwordFile, "check the path and rights"};
    std::getline(in, s.password);
  } else if (!user.empty()) {
    return Error{0, "--store-user without --store-password-file",
                 "put the password in a file only meshd can read"};
  }
  return s;
}

std::string prefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c < 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(std::vector<HostPort> endpoints, std::chrono::milliseconds timeout,
                       StoreSecurity security)
    : endpoints_(std::move(endpoints)), timeout_(timeout), security_(std::move(security)) {
  if (!security_.tls()) return;
  tls_ = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  beast::error_code ec;
  auto check = [&](const std::string& what, const std::string& file) {
    if (ec && setupError_.empty()) {
      setupError_ = what + " " + file + ": " + ec.message();
    }
  };
  tls_->set_verify_mode(asio::ssl::verify_peer, ec);
  tls_->load_verify_file(security_.caFile, ec);
  check("--store-cacert", security_.caFile);
  if (!security_.certFile.empty()) {
    tls_->use_certificate_chain_file(security_.certFile, ec);
    check("--store-cert", security_.certFile);
    tls_->use_private_key_file(security_.keyFile, asio::ssl::context::pem, ec);
    check("--store-key", security_.keyFile);
  }
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::token() const {
  std::lock_guard lock(tokenMu_);
  return token_;
}

Result<void> EtcdClient::authenticate() const {
  json req{{"name", security_.user}, {"password", security_.password}};
  auto body = exchange("/v3/auth/authenticate", req.dump(), /*withToken=*/false);
  if (!body) return body.error();
  json res = json::parse(*body, nullptr, false);
  std::string token = res.is_object() ? res.value("token", "") : "";
  if (token.empty()) return storeError("etcd /v3/auth/authenticate: no token in the answer");
  std::lock_guard lock(tokenMu_);
  token_ = token;
  return {};
}

Result<void> EtcdClient::ready() const {
  if (!setupError_.empty()) return storeError(setupError_, "check the TLS files given to meshd");
  if (!security_.user.empty() && token().empty()) {
    if (auto r = authenticate(); !r) return r.error();
  }
  return {};
}

Result<std::string> EtcdClient::post(const std::string& path, const std::string& body) const {
  if (auto r = ready(); !r) return r.error();
  auto answer = exchange(path, body, true);
  // A token expires (etcd's simple tokens after 5 minutes unused): authenticate again, once.
  if (!answer && !security_.user.empty() &&
      answer.error().context.find("invalid auth token") != std::string::npos) {
    if (auto r = authenticate(); !r) return r.error();
    answer = exchange(path, body, true);
  }
  return answer;
}

Result<std::string> EtcdClient::exchange(const std::string& path, const std::string& body,
                                         bool withToken) const {
  std::string failures;
  const size_t first = preferred_.load();
  for (size_t n = 0; n < endpoints_.size(); ++n) {
    const size_t i = (first + n) % endpoints_.size();
    const HostPort& to = endpoints_[i];
    Exchange x(timeout_, tls_.get());
    beast::error_code ec = x.connect(to);
    auto req = jsonRequest(to, path, body, withToken ? token() : std::string());
    if (!ec) ec = x.write(req);
    http::response<http::string_body> res;
    if (!ec) ec = x.read(res);
    if (ec) {
      failures += (failures.empty() ? "" : "; ") + to.toString() + ": " + describe(ec, timeout_);
      continue;
    }
    if (res.result() != http::status::ok) {
      // The gateway answers a refused call with {"error": ..., "message": ...}.
      json err = json::parse(res.body(), nullptr, false);
      std::string message = err.is_object() ? err.value("message", res.body()) : res.body();
      failures += (failures.empty() ? "" : "; ") + to.toString() + ": HTTP " +
                  std::to_string(res.result_int()) + " " + message;
      // A member that refuses (no leader, too many requests) may be alone: ask the next one.
      continue;
    }
    preferred_.store(i);
    return std::move(res.body());
  }
  return storeError("etcd " + path + ": " + failures, kUnreachableHint);
}

Result<RangeResult> EtcdClient::rangePrefix(const std::string& prefix) const {
  json req{{"key", base64Encode(prefix)}, {"range_end", base64Encode(prefixEnd(prefix))}};
  auto body = post("/v3/kv/range", req.dump());
  if (!body) return body.error();
  json res = json::parse(*body, nullptr, false);
  if (!res.is_object()) return storeError("etcd /v3/kv/range: an answer that is not JSON");
  RangeResult out;
  out.revision = int64Field(res.value("header", json::object()), "revision");
  for (const json& kv : res.value("kvs", json::array())) out.kvs.push_back(keyValueFrom(kv));
  return out;
}

Result<TxnResult> EtcdClient::txn(const std::vector<TxnCompare>& compares,
                                  const std::vector<TxnOp>& ops) const {
  json req = json::object();
  json cmp = json::array();
  for (const TxnCompare& c : compares) {
    cmp.push_back({{"key", base64Encode(c.key)},
                   {"target", "MOD"},
                   {"result", "EQUAL"},
                   {"mod_revision", std::to_string(c.modRevision)}});
  }
  json success = json::array();
  for (const TxnOp& op : ops) {
    if (op.kind == TxnOp::Kind::kPut) {
      json put{{"key", base64Encode(op.key)}, {"value", base64Encode(op.value)}};
      if (op.lease != 0) put["lease"] = std::to_string(op.lease);
      success.push_back({{"request_put", put}});
    } else {
      success.push_back({{"request_delete_range", {{"key", base64Encode(op.key)}}}});
    }
  }
  if (!cmp.empty()) req["compare"] = cmp;
  req["success"] = success;
  auto body = post("/v3/kv/txn", req.dump());
  if (!body) return body.error();
  json res = json::parse(*body, nullptr, false);
  if (!res.is_object()) return storeError("etcd /v3/kv/txn: an answer that is not JSON");
  TxnResult out;
  out.succeeded = res.value("succeeded", false);
  out.revision = int64Field(res.value("header", json::object()), "revision");
  return out;
}

Result<int64_t> EtcdClient::grantLease(int64_t ttlSeconds) const {
  auto body = post("/v3/lease/grant", json{{"TTL", std::to_string(ttlSeconds)}}.dump());
  if (!body) return body.error();
  json res = json::parse(*body, nullptr, false);
  int64_t id = res.is_object() ? int64Field(res, "ID") : 0;
  if (id == 0) return storeError("etcd /v3/lease/grant: no lease in the answer: " + *body);
  return id;
}

Result<int64_t> EtcdClient::keepAlive(int64_t leaseId) const {
  auto body = post("/v3/lease/keepalive", json{{"ID", std::to_string(leaseId)}}.dump());
  if (!body) return body.error();
  // A stream of one answer here: {"result": {"ID": ..., "TTL": ...}}; TTL absent = expired.
  json res = json::parse(body->substr(0, body->find('\n')), nullptr, false);
  if (!res.is_object()) return storeError("etcd /v3/lease/keepalive: an answer that is not JSON");
  return int64Field(res.value("result", json::object()), "TTL");
}

Result<void> EtcdClient::revokeLease(int64_t leaseId) const {
  auto body = post("/v3/lease/revoke", json{{"ID", std::to_string(leaseId)}}.dump());
  if (!body) return body.error();
  return {};
}

Result<int64_t> EtcdClient::ping() const {
  // A count-only range of one key: the header carries the revision, nothing else is read.
  json req{{"key", base64Encode(std::string(1, '\0'))}, {"count_only", true}};
  auto body = post("/v3/kv/range", req.dump());
  if (!body) return body.error();
  json res = json::parse(*body, nullptr, false);
  if (!res.is_object()) return storeError("etcd: an answer that is not JSON");
  return int64Field(res.value("header", json::object()), "revision");
}

Result<void> EtcdClient::watch(
    const std::string& prefix, int64_t fromRevision,
    const std::function<void(int64_t, std::vector<WatchEvent>)>& onEvents) {
  if (auto r = ready(); !r) return r.error();
  const HostPort to = endpoints_[preferred_.load() % endpoints_.size()];
  Exchange x(timeout_, tls_.get());
  {
    std::lock_guard lock(watchMu_);
    if (watchStopped_) {
      watchStopped_ = false;
      return {};
    }
    // stopWatch() closes the socket from the watch's own io_context (thread-safe through post).
    cancelWatch_ = [&x] {
      asio::post(x.ioc(), [&x] {
        beast::error_code ignored;
        x.tcp_stream().socket().close(ignored);
      });
    };
  }
  struct Clear {
    EtcdClient* self;
    ~Clear() {
      std::lock_guard lock(self->watchMu_);
      self->cancelWatch_ = nullptr;
    }
  } clear{this};
  auto stopped = [&] {
    std::lock_guard lock(watchMu_);
    bool s = watchStopped_;
    watchStopped_ = false;
    return s;
  };

  beast::error_code ec = x.connect(to);
  if (ec) {
    if (stopped()) return {};
    return storeError("etcd watch on " + to.toString() + ": " + describe(ec, timeout_),
                      kUnreachableHint);
  }
  json create{{"create_request",
               {{"key", base64Encode(prefix)},
                {"range_end", base64Encode(prefixEnd(prefix))},
                {"start_revision", std::to_string(fromRevision)}}}};
  auto req = jsonRequest(to, "/v3/watch", create.dump(), token());
  ec = x.write(req);
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  if (!ec) {
    x.tcp_stream().expires_after(timeout_);
    x.on([&](auto& s) {
      http::async_read_header(s, x.buffer(), parser, [&](beast::error_code e, size_t) { ec = e; });
    });
    x.run();
  }
  if (ec) {
    if (stopped()) return {};
    return storeError("etcd watch on " + to.toString() + ": " + describe(ec, timeout_),
                      kUnreachableHint);
  }
  if (parser.get().result() != http::status::ok) {
    return storeError("etcd watch on " + to.toString() + ": HTTP " +
                      std::to_string(parser.get().result_int()));
  }

  // The answer is a stream of JSON objects, one per line, for as long as the watch lasts.
  std::string partial;
  Result<void> outcome;
  bool done = false;
  auto onChunk = [&](std::uint64_t, beast::string_view chunk, beast::error_code&) -> size_t {
    partial.append(chunk.data(), chunk.size());
    size_t nl;
    while (!done && (nl = partial.find('\n')) != std::string::npos) {
      json msg = json::parse(partial.substr(0, nl), nullptr, false);
      partial.erase(0, nl + 1);
      if (!msg.is_object()) continue;
      json result = msg.value("result", json::object());
      if (int64_t compacted = int64Field(result, "compact_revision"); compacted != 0) {
        outcome =
            Error{ECANCELED, "etcd watch: revision " + std::to_string(fromRevision) +
                                 " was compacted (oldest kept: " + std::to_string(compacted) + ")"};
        done = true;
        break;
      }
      if (result.value("canceled", false)) {
        outcome = storeError("etcd watch canceled: " + result.value("cancel_reason", ""));
        done = true;
        break;
      }
      auto events = result.find("events");
      if (events == result.end() || events->empty()) continue;
      std::vector<WatchEvent> batch;
      for (const json& ev : *events) {
        WatchEvent w;
        w.deleted = ev.value("type", "") == "DELETE";
        w.kv = keyValueFrom(ev.value("kv", json::object()));
        batch.push_back(std::move(w));
      }
      onEvents(int64Field(result.value("header", json::object()), "revision"), std::move(batch));
    }
    return chunk.size();
  };
  parser.on_chunk_body(onChunk);
  // No deadline on the body: an idle watch is silent. A dead member is found by the owner's pings,
  // which then call stopWatch().
  x.tcp_stream().expires_never();
  while (!done) {
    x.on([&](auto& s) {
      http::async_read_some(s, x.buffer(), parser, [&](beast::error_code e, size_t) { ec = e; });
    });
    x.run();
    if (parser.is_done() && !ec) ec = http::error::end_of_stream;
    if (ec) break;
  }
  if (stopped()) return {};
  if (done) return outcome;
  return storeError("etcd watch on " + to.toString() + " ended: " + ec.message(), kUnreachableHint);
}

void EtcdClient::stopWatch() {
  std::lock_guard lock(watchMu_);
  watchStopped_ = true;
  if (cancelWatch_) cancelWatch_();
}

}  // namespace meshpath::store
