// cli.cpp — meshctl's Context: how a command talks to meshd and reports what went wrong.
#include "cli.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>

namespace meshpath::meshctl {

Context::Context(const Options& options, std::string commandPath)
    : options_(options),
      commandPath_(std::move(commandPath)),
      api_(options.socket,
           std::chrono::milliseconds(static_cast<long>(options.timeoutSeconds * 1000))) {}

int Context::usage(const std::string& message, const std::string& hint) const {
  std::cerr << "meshctl: " << message << '\n';
  std::cerr << "  hint: " << (hint.empty() ? "see `meshctl " + commandPath_ + " --help`" : hint)
            << '\n';
  return kExitUsage;
}

int Context::refused(const std::string& message, const std::string& hint) const {
  std::cerr << "meshctl: " << message << '\n';
  if (!hint.empty()) std::cerr << "  hint: " << hint << '\n';
  return kExitRefused;
}

int Context::failed(const ApiReply& reply) const {
  if (!reply.reached()) {
    std::string hint = "is meshd running? start it with `meshd --config FILE`";
    if (reply.transportError == std::strerror(EACCES)) {
      hint =
          "run meshctl as root or as a member of node.api_read_group (reads) or "
          "node.api_admin_group (changes); the socket's directory must let you in too";
    } else if (reply.transportError.find("answer") != std::string::npos) {
      hint = "meshd accepted the connection but did not answer; check its log";
    }
    std::cerr << "meshctl: cannot reach meshd at " << api_.socketPath() << ": "
              << reply.transportError << " — " << hint << '\n';
    return kExitRefused;
  }
  std::string error, hint;
  if (reply.body.is_object() && reply.body.contains("error")) {
    error = reply.body["error"].is_string() ? reply.body["error"].get<std::string>()
                                            : reply.body["error"].dump();
    if (reply.body.contains("hint") && reply.body["hint"].is_string()) {
      hint = reply.body["hint"].get<std::string>();
    }
  } else {
    error = reply.rawBody.empty() ? "no details given" : reply.rawBody;
  }
  std::cerr << "meshctl: meshd refused (HTTP " << reply.status << "): " << error << '\n';
  if (!hint.empty()) std::cerr << "  hint: " << hint << '\n';
  return kExitRefused;
}

void Context::printJson(const ApiReply& reply) const {
  if (reply.body.is_discarded()) {
    std::cout << reply.rawBody << '\n';
  } else {
    std::cout << reply.body.dump(2) << '\n';
  }
}

std::string serviceTarget(const std::string& name) { return "/v1/services/" + name; }

std::string endpointTarget(const std::string& service, const EndpointArg& ep) {
  return serviceTarget(service) + "/endpoints/" + ep.address + "/" + std::to_string(ep.port);
}

}  // namespace meshpath::meshctl
