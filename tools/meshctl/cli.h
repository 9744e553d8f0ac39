// cli.h — what every meshctl command shares: the global options, the arguments the subcommands
// take, the exit codes, and the Context a command runs in (its API client, -o json, and the way
// it reports a usage error, a refusal or an unreachable daemon).
#pragma once

#include <string>
#include <vector>

#include "address.h"
#include "api_client.h"
#include "etcd_client.h"

namespace meshpath::meshctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRefused = 1;
inline constexpr int kExitUsage = 2;
inline constexpr const char* kDefaultSocket = "/run/meshpath/meshd.sock";

struct Options {
  std::string socket = kDefaultSocket;
  std::string output = "table";
  double timeoutSeconds = 30;
};

// Everything the subcommands take from the command line.
struct Args {
  std::string service;
  std::string vip;
  std::string port;
  std::string protocol;
  std::string algorithm;
  std::string forwarding;
  std::vector<std::string> endpoints;
  std::string endpoint;
  std::string weight;
  std::string file;
  bool follow = false;
  bool wait = false;
  bool dryRun = false;     // apply --dry-run
  double waitSeconds = 0;  // --wait's limit; 0 = no limit
  std::string ttl;         // register --ttl
  std::string store;       // register --store etcd://...
  store::StoreSecurityOptions storeSecurity;  // register --store-cacert, ... (store_cli.h)
};

class Context {
 public:
  Context(const Options& options, std::string commandPath);

  const ApiClient& api() const { return api_; }
  bool json() const { return options_.output == "json"; }

  // A usage error (exit 2), with a hint (by default: this command's --help).
  int usage(const std::string& message, const std::string& hint = "") const;
  // Something meshd's answers make impossible (exit 1).
  int refused(const std::string& message, const std::string& hint) const;
  // The daemon could not be reached, or it answered with an error: say which and what to do.
  int failed(const ApiReply& reply) const;
  // -o json: the daemon's JSON as it came.
  void printJson(const ApiReply& reply) const;

 private:
  const Options& options_;
  std::string commandPath_;  // "endpoint add", for usage hints
  ApiClient api_;
};

std::string serviceTarget(const std::string& name);  // "/v1/services/web"
std::string endpointTarget(const std::string& service, const EndpointArg& ep);

}  // namespace meshpath::meshctl
