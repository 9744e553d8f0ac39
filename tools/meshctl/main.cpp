// meshctl — the command line of a meshpath node. A table of subcommands (CLI11), each a thin call
// to meshd's REST API (docs/api.md) over its unix socket. Output is an aligned table by default
// and the daemon's own JSON with -o json. Exit: 0 ok, 1 meshd refused or could not be reached,
// 2 usage error (caught here before anything is sent).
#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "store_cli.h"

namespace meshpath::meshctl {
namespace {

using Action = std::function<int(const Context&, const Args&)>;

struct Subcommand {
  std::vector<const char*> path;  // e.g. {"endpoint", "add"}
  const char* help;
  std::function<void(CLI::App*, Args&)> options;
  Action action;
};

std::vector<Subcommand> subcommands() {
  return {
      {{"status"}, "Show the daemon, its interfaces and node settings", nullptr, cmdStatus},
      {{"service", "add"},
       "Add a service (VIP:port) with optional endpoints",
       [](CLI::App* s, Args& a) {
         s->add_option("NAME", a.service, "service name")->required();
         s->add_option("--vip", a.vip, "virtual IP (IPv4 or IPv6)")->required();
         s->add_option("--port", a.port, "service port (1-65535)")->required();
         s->add_option("--protocol", a.protocol, "tcp (default) or udp")
             ->check(CLI::IsMember({"tcp", "udp"}));
         s->add_option("--algorithm", a.algorithm,
                       "maglev (default), random, round-robin, least-conn, least-latency");
         s->add_option("--forwarding", a.forwarding, "forwarding mode (default nat)");
         s->add_option("--endpoint", a.endpoints, "ADDR:PORT[@WEIGHT], repeatable")
             ->allow_extra_args(false);
       },
       cmdServiceAdd},
      {{"service", "del"},
       "Delete a service and its endpoints",
       [](CLI::App* s, Args& a) { s->add_option("NAME", a.service, "service name")->required(); },
       cmdServiceDel},
      {{"service", "list"}, "List services with their traffic", nullptr, cmdServiceList},
      {{"service", "show"},
       "Show one service, its endpoints and their shares",
       [](CLI::App* s, Args& a) { s->add_option("NAME", a.service, "service name")->required(); },
       cmdServiceShow},
      {{"endpoint", "add"},
       "Add an endpoint to a service",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_option("--weight", a.weight, "0-10000 (default 1; 0 admits no new connections)");
       },
       cmdEndpointAdd},
      {{"endpoint", "del"},
       "Remove an endpoint from a service",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
       },
       cmdEndpointDel},
      {{"endpoint", "set-weight"},
       "Change an endpoint's weight (0 drains it)",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_option("WEIGHT", a.weight, "0-10000")->required();
       },
       cmdEndpointSetWeight},
      {{"endpoint", "drain"},
       "Drain an endpoint: weight 0, open connections stay; --wait reports when none is left",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_flag("-w,--wait", a.wait, "follow the open connections until the drain completes");
         s->add_option("--wait-limit", a.waitSeconds,
                       "give up waiting after this many seconds (exit 1; default: no limit)");
       },
       cmdEndpointDrain},
      {{"register"},
       "Register this endpoint in a service of the shared store (etcd) until Ctrl-C or SIGTERM",
       [](CLI::App* s, Args& a) {
         s->add_option("SERVICE", a.service, "service name")->required();
         s->add_option("ADDR:PORT", a.endpoint, "e.g. 10.0.2.11:8080 or [fd00::11]:8080")
             ->required();
         s->add_option("--weight", a.weight, "0-10000 (default 1; 0 admits no new connections)");
         s->add_option("--ttl", a.ttl,
                       "lease time in whole seconds, e.g. 10s: how long the endpoint stays "
                       "listed once meshctl stops renewing it (killed, or cut off from etcd)")
             ->required();
         s->add_option("--store", a.store,
                       "etcd://HOST:PORT[,HOST:PORT...]/PREFIX (default: the local meshd's store)");
         store::addStoreSecurityOptions(*s, a.storeSecurity);
       },
       cmdRegister},
      {{"stats"},
       "Counters per service and endpoint, with each endpoint's share",
       [](CLI::App* s, Args& a) { s->add_option("SERVICE", a.service, "only this service"); },
       cmdStats},
      {{"health"},
       "Health of each endpoint: state, since, last probe, passive failures, ejections",
       [](CLI::App* s, Args& a) { s->add_option("SERVICE", a.service, "only this service"); },
       cmdHealth},
      {{"events"},
       "Health transitions (the last ones kept by meshd); --follow streams new ones",
       [](CLI::App* s, Args& a) {
         s->add_flag("-f,--follow", a.follow, "keep following transitions as they happen");
       },
       cmdEvents},
      {{"apply"},
       "Replace all services with those of a config file (YAML); --dry-run shows the diff only",
       [](CLI::App* s, Args& a) {
         s->add_option("-f,--file", a.file, "config file, - for standard input")->required();
         s->add_flag("--dry-run", a.dryRun,
                     "validate and show what would change, changing nothing");
       },
       cmdApply},
      {{"upgrade"},
       "Replace the running XDP program in place by meshd's own build, keeping every map",
       [](CLI::App*, Args&) {},
       cmdUpgrade},
  };
}

int run(int argc, char** argv) {
  CLI::App app{"meshctl — control a meshpath node through its daemon, meshd", "meshctl"};
  app.set_version_flag("--version", "meshctl 0.1.0");
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand: `meshctl stats -o json`
  Options options;
  app.add_option("--socket", options.socket, "meshd's API socket")
      ->envname("MESHPATH_SOCKET")
      ->capture_default_str();
  app.add_option("-o,--output", options.output, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", options.timeoutSeconds, "seconds to wait for meshd")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  Args args;
  Action chosen;
  std::string chosenPath;
  std::map<std::string, CLI::App*> groups;
  auto table = subcommands();
  for (auto& cmd : table) {
    CLI::App* parent = &app;
    if (cmd.path.size() == 2) {
      auto& group = groups[cmd.path[0]];
      if (group == nullptr) {
        group = app.add_subcommand(cmd.path[0], std::string("Manage ") + cmd.path[0] + "s");
        group->require_subcommand(1);
      }
      parent = group;
    }
    CLI::App* sub = parent->add_subcommand(cmd.path.back(), cmd.help);
    if (cmd.options) cmd.options(sub, args);
    sub->callback([&chosen, &chosenPath, &cmd] {
      chosen = cmd.action;
      for (const char* part : cmd.path)
        chosenPath += (chosenPath.empty() ? "" : " ") + std::string(part);
    });
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // The deepest subcommand reached names the help page to read.
    std::string path;
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      path += " " + sub->get_name();
    }
    auto extra = app.remaining();
    std::string message = e.what();
    if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr && !extra.empty() &&
        message.find("subcommand") != std::string::npos) {
      message = "unknown command '" + extra.front() + "'";
    }
    std::cerr << "meshctl: " << message << "\n  hint: see `meshctl" << path << " --help`\n";
    return kExitUsage;
  }
  Context ctx(options, chosenPath);
  return chosen ? chosen(ctx, args) : kExitUsage;
}

}  // namespace
}  // namespace meshpath::meshctl

int main(int argc, char** argv) { return meshpath::meshctl::run(argc, argv); }
