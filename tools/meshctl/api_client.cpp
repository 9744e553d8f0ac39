#include "api_client.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace meshpath::meshctl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using UnixStream = beast::basic_stream<asio::local::stream_protocol>;

ApiClient::ApiClient(std::string socketPath, std::chrono::milliseconds timeout)
    : socketPath_(std::move(socketPath)), timeout_(timeout) {}

ApiReply ApiClient::call(const std::string& method, const std::string& target,
                         const std::string& body, const std::string& contentType) const {
  ApiReply reply;
  asio::io_context ioc;
  UnixStream stream(ioc);
  beast::error_code ec;
  // Each step runs asynchronously only so that basic_stream's deadline applies to it.
  auto runStep = [&]() {
    ioc.run();
    ioc.restart();
  };

  stream.expires_after(timeout_);
  stream.async_connect(asio::local::stream_protocol::endpoint(socketPath_),
                       [&](beast::error_code e) { ec = e; });
  runStep();
  if (ec) {
    reply.transportError = ec == beast::error::timeout ? "timed out" : ec.message();
    return reply;
  }

  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, "meshd");
  req.set(http::field::user_agent, "meshctl");
  req.set(http::field::accept, "application/json");
  if (!contentType.empty()) req.set(http::field::content_type, contentType);
  req.body() = body;
  req.prepare_payload();

  stream.expires_after(timeout_);
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) { ec = e; });
  runStep();
  // meshd may answer and close before taking the whole request (413 for a body over its limit,
  // 403 before reading the body): read its answer before calling the exchange broken.
  const beast::error_code writeError = ec;
  if (ec && ec != asio::error::broken_pipe && ec != asio::error::connection_reset) {
    reply.transportError = "sending the request failed: " + ec.message();
    return reply;
  }

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u << 20);  // a large /v1/services listing is still fine
  stream.expires_after(timeout_);
  http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) { ec = e; });
  runStep();
  if (ec && writeError) {
    reply.transportError = "sending the request failed: " + writeError.message();
    return reply;
  }
  if (ec) {
    reply.transportError = ec == beast::error::timeout
                               ? "no answer within " + std::to_string(timeout_.count()) + " ms"
                               : "reading the answer failed: " + ec.message();
    return reply;
  }
  auto res = parser.release();
  reply.status = static_cast<int>(res.result_int());
  reply.rawBody = std::move(res.body());
  reply.body = nlohmann::json::parse(reply.rawBody, nullptr, /*allow_exceptions=*/false);
  stream.socket().shutdown(asio::local::stream_protocol::socket::shutdown_both, ec);
  return reply;
}

ApiReply ApiClient::follow(const std::string& target,
                           const std::function<bool(const std::string&)>& line) const {
  ApiReply reply;
  asio::io_context ioc;
  asio::local::stream_protocol::socket socket(ioc);
  beast::error_code ec;
  socket.connect(asio::local::stream_protocol::endpoint(socketPath_), ec);
  if (ec) {
    reply.transportError = ec.message();
    return reply;
  }
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, "meshd");
  req.set(http::field::user_agent, "meshctl");
  http::write(socket, req, ec);
  if (ec) {
    reply.transportError = "send: " + ec.message();
    return reply;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(boost::none);
  bool stop = false;
  std::string partial;
  auto onChunk = [&](std::uint64_t, beast::string_view body, beast::error_code&) -> std::size_t {
    partial.append(body.data(), body.size());
    size_t nl;
    while (!stop && (nl = partial.find('\n')) != std::string::npos) {
      if (!line(partial.substr(0, nl))) stop = true;
      partial.erase(0, nl + 1);
    }
    return body.size();
  };
  http::read_header(socket, buffer, parser, ec);
  if (ec) {
    reply.transportError = "read: " + ec.message();
    return reply;
  }
  reply.status = static_cast<int>(parser.get().result_int());
  if (reply.status < 200 || reply.status >= 300) {
    http::read(socket, buffer, parser, ec);
    reply.rawBody = parser.get().body();
    reply.body = nlohmann::json::parse(reply.rawBody, nullptr, false);
    return reply;
  }
  parser.on_chunk_body(onChunk);
  while (!stop && !parser.is_done()) {
    http::read_some(socket, buffer, parser, ec);
    if (ec) break;
  }
  return reply;
}

}  // namespace meshpath::meshctl
