// api_client.h — meshctl's side of the meshd REST contract (docs/api.md): one HTTP/1.1 request
// per call over the daemon's unix socket, answered with a status and the JSON body.
#pragma once

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace meshpath::meshctl {

struct ApiReply {
  // Set when the daemon could not be reached or the exchange broke off; status is 0 then.
  std::string transportError;
  int status = 0;
  std::string rawBody;
  nlohmann::json body;  // discarded() when rawBody is not JSON

  bool reached() const { return transportError.empty(); }
  bool ok() const { return reached() && status >= 200 && status < 300; }
};

class ApiClient {
 public:
  ApiClient(std::string socketPath, std::chrono::milliseconds timeout);

  ApiReply get(const std::string& target) const { return call("GET", target, "", ""); }
  ApiReply del(const std::string& target) const { return call("DELETE", target, "", ""); }
  ApiReply post(const std::string& target, const nlohmann::json& body) const {
    return call("POST", target, body.dump(), "application/json");
  }
  ApiReply put(const std::string& target, const nlohmann::json& body) const {
    return call("PUT", target, body.dump(), "application/json");
  }
  ApiReply postText(const std::string& target, const std::string& body,
                    const std::string& contentType) const {
    return call("POST", target, body, contentType);
  }

  // A long-lived GET whose chunked body is JSON lines (GET /v1/events?follow=1): calls `line`
  // for each line as it arrives, until the daemon ends the stream or `line` returns false. A
  // refusal (non-2xx) comes back as the reply; a stream that ran returns status 200.
  ApiReply follow(const std::string& target,
                  const std::function<bool(const std::string&)>& line) const;

  const std::string& socketPath() const { return socketPath_; }

 private:
  ApiReply call(const std::string& method, const std::string& target, const std::string& body,
                const std::string& contentType) const;

  std::string socketPath_;
  std::chrono::milliseconds timeout_;
};

}  // namespace meshpath::meshctl
