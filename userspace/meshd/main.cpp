// meshd — loads the XDP balancer, keeps its maps in step with the desired state (config file,
// REST API), and leaves the datapath running when it exits: kill -9 or SIGTERM must not drop a
// packet. One Boost.Asio io_context carries everything: signals, the API, the health probes.
//
//   meshd --config FILE [--store etcd://HOST:PORT[,...]/PREFIX] [--log-level info] [--netns NAME]
//         [--detach-on-exit] [--daemon]
//   meshd --teardown [--config FILE]      detach XDP, remove pinned links and maps, state file
//   meshd --check-config FILE [--netns NAME]  validate FILE as start-up would, touching nothing
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <filesystem>
#include <iostream>

#include "api_server.h"
#include "audit_log.h"
#include "bpf_dataplane.h"
#include "config.h"
#include "config_check.h"
#include "control_plane.h"
#include "health/health_checker.h"
#include "health/health_monitor.h"
#include "host_setup.h"
#include "libbpf_logger.h"
#include "local_ports.h"
#include "metrics/metrics_collector.h"
#include "metrics/metrics_server.h"
#include "netlink.h"
#include "reconciler.h"
#include "service_notify.h"
#include "state_saver.h"
#include "state_store.h"
#include "store_cli.h"
#include "store_sync.h"
#include "teardown.h"

namespace meshpath {
namespace {

constexpr const char* kRunDir = "/run/meshpath";

struct Options {
  std::string config;
  std::string store;  // --store: services from etcd instead of the config file
  std::string nodeName;  // --node-name: this node among the store's nodes (default: hostname)
  store::StoreSecurityOptions storeSecurity;  // --store-cacert, ... (store_cli.h)
  std::string checkConfig;
  std::string logLevel = "info";
  std::string netns;
  bool foreground = false;
  bool daemon = false;
  bool teardown = false;
  bool detachOnExit = false;
};

int run(const Options& opt) {
  DesiredState fromConfig;
  try {
    fromConfig = parseConfigFile(opt.config);
  } catch (const ConfigError& e) {
    spdlog::error("config {}: {}", opt.config, e.what());
    return 2;
  }
  // The SNAT port range is settled before anything sees the node (dataplane, state file, API):
  // auto becomes a range outside the kernel's ephemeral one, and an explicit range overlapping
  // it is reserved, so the kernel never autobinds a port a SNAT connection holds.
  auto snatPorts = prepareSnatPorts(fromConfig.node);
  if (!snatPorts) {
    spdlog::error("{} — {}", snatPorts.error().toString(), snatPorts.error().hint);
    return 2;
  }
  std::optional<store::StoreUrl> storeUrl;
  if (!opt.store.empty()) {
    auto url = store::parseStoreUrl(opt.store);
    if (!url) {
      spdlog::error("{} — {}", url.error().toString(), url.error().hint);
      return 2;
    }
    storeUrl = *url;
    auto security = store::storeSecurity(opt.storeSecurity);
    if (!security) {
      spdlog::error("{} — {}", security.error().toString(), security.error().hint);
      return 2;
    }
    storeUrl->security = *security;
    if (!fromConfig.services.empty()) {
      spdlog::warn(
          "--store: the {} services in {} are not applied; services come from {} (write them "
          "there with `meshctl apply -f {}`)",
          fromConfig.services.size(), opt.config, storeUrl->toString(), opt.config);
      fromConfig.services.clear();
    }
  }
  const NodeSpec& node = fromConfig.node;
  // A metrics port that is taken stops meshd before it touches the datapath; the server itself
  // starts after --daemon's fork (civetweb's threads would not survive it).
  if (!node.metricsListen.empty()) {
    if (auto r = metrics::MetricsServer::checkListen(node.metricsListen); !r) {
      spdlog::error("{} — {}", r.error().toString(), r.error().hint);
      return 1;
    }
  }

  if (auto r = ensureBpffs(node.pinRoot); !r) {
    spdlog::error("{}{}", r.error().toString(),
                  r.error().hint.empty() ? "" : " — " + r.error().hint);
    return 1;
  }
  auto lock = lockPinRoot(node.pinRoot);
  if (!lock) {
    spdlog::error("{} — {}", lock.error().toString(), lock.error().hint);
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(kRunDir, ec);
  makeParentDir(node.apiSocket);
  makeParentDir(node.stateFile);
  AuditLog audit;
  if (auto r = audit.open(node.auditLog); !r) {
    spdlog::error("{} — {}", r.error().toString(), r.error().hint);
    return 1;
  }

  auto netlink = Netlink::open();
  if (!netlink) {
    spdlog::error("{}", netlink.error().toString());
    return 1;
  }
  for (const auto& [field, address] :
       {std::pair{"ipv4", node.ipv4}, std::pair{"ipv6", node.ipv6}}) {
    if (!address) continue;
    auto where = (*netlink)->interfaceWithAddress(*address);
    if (where && !where->has_value()) {
      spdlog::warn(
          "node.{} {} is not an address of any local interface: replies to SNATed "
          "connections will not find their way back to this node",
          field, address->toString());
    } else if (where) {
      spdlog::info("node.{} {} is on {}", field, address->toString(), **where);
    }
  }

  // A socket per endpoint's probe, and room for the rest (ring maps are not held open).
  raiseOpenFileLimit(uint64_t{MP_MAX_ENDPOINTS} + 4096);
  auto started = BpfDataplane::start(node, **netlink);
  if (!started) {
    const Error& e = started.error();
    spdlog::error("{}{}", e.toString(), e.hint.empty() ? "" : " — " + e.hint);
    return 1;
  }
  std::unique_ptr<BpfDataplane> dataplane = std::move(*started);

  // Adopt when the earlier run left both its maps and its state file: the services (with any
  // changes made through the API) and ids come from the state file, the node from the config.
  StateStore store(node.stateFile);
  DesiredState initial = fromConfig;
  std::optional<IdAssignments> ids;
  bool adopted = false;
  auto saved = store.load();
  if (!saved) {
    spdlog::error("{} — {}", saved.error().toString(), saved.error().hint);
    return 1;
  }
  if (dataplane->mapsAdopted() && saved->has_value()) {
    adopted = true;
    const SavedState& s = **saved;
    initial.services = s.desired.services;
    ids = s.ids;
    spdlog::info(
        "adopting the earlier run: pinned maps under {} and {} services from {} "
        "(changes made through the API kept; the config's services apply on SIGHUP)",
        node.pinRoot, s.desired.services.size(), node.stateFile);
    if (std::string changes = describeNodeChanges(s.desired.node, node); !changes.empty()) {
      spdlog::info("node settings changed since the earlier run: {}", changes);
    }
  } else if (dataplane->mapsAdopted()) {
    spdlog::info(
        "pinned maps found but no state file {}: starting from the config file, keeping "
        "the ids found in the maps so established flows stay put",
        node.stateFile);
  } else if (saved->has_value() && storeUrl) {
    // With a store, the state file is the last known state: what the node forwards with until
    // etcd answers (it may not, at boot).
    initial.services = (*saved)->desired.services;
    spdlog::info(
        "state file {} found but no pinned maps (reboot?): starting from its {} services "
        "until {} answers",
        node.stateFile, initial.services.size(), storeUrl->toString());
  } else if (saved->has_value()) {
    spdlog::info(
        "state file {} found but no pinned maps (reboot?): starting from the config "
        "file",
        node.stateFile);
  } else if (storeUrl) {
    spdlog::info("fresh start: the node from the config file {}, services from {}", opt.config,
                 storeUrl->toString());
  } else {
    spdlog::info("fresh start from the config file {}", opt.config);
  }

  auto snapshot = dataplane->snapshot();
  if (!snapshot) {
    spdlog::error("read the pinned tables: {}", snapshot.error().toString());
    return 1;
  }
  Reconciler reconciler(*dataplane);
  reconciler.start(*snapshot, ids);
  ControlPlane controlPlane(*dataplane, reconciler, store, opt.config, adopted);
  if (snatPorts->automatic) controlPlane.setAutoSnatPorts(snatPorts->range);
  if (auto r = controlPlane.commit(initial); !r) {
    spdlog::error("initial state not applied: {} — {}", r.error().error,
                  adopted ? "the saved services do not fit this config's node section; fix it, "
                            "or move " +
                                node.stateFile + " away to start from the config"
                          : r.error().hint);
    return 1;
  }

  boost::asio::io_context io;
  health::SteadyClock clock;
  health::AsioProber prober(io, clock);
  health::HealthMonitor healthMonitor(io, controlPlane, clock, prober);
  metrics::MetricsCollector metricsCollector(controlPlane, &healthMonitor);
  healthMonitor.setMetricsSink(&metricsCollector);
  controlPlane.setMetricsSink(&metricsCollector);
  healthMonitor.start();
  ApiServer api(io, controlPlane);
  api.handler().setHealth(&healthMonitor);
  api.groups().resolve(node.apiAdminGroup, node.apiReadGroup);
  api.setAudit(&audit);
  controlPlane.onConfigEvent(
      [&](const std::string& kind, const std::string& message, const nlohmann::json& detail) {
        healthMonitor.recordControlEvent(kind, message, detail);
      });
  if (auto r = api.listen(node.apiSocket); !r) {
    spdlog::error("{}{}", r.error().toString(),
                  r.error().hint.empty() ? "" : " — " + r.error().hint);
    return 1;
  }
  spdlog::info("meshd {} ready: {} services, API on {}", MESHPATH_VERSION,
               controlPlane.desired().services.size(), node.apiSocket);

  boost::asio::signal_set signals(io, SIGHUP, SIGTERM, SIGINT);
  std::function<void(const boost::system::error_code&, int)> onSignal =
      [&](const boost::system::error_code& err, int signo) {
        if (err) return;
        if (signo == SIGHUP) {
          notifyReloading();
          // The control plane logs the one line and emits the one event of the reload.
          auto r = controlPlane.reloadConfigFile();
          api.groups().resolve(node.apiAdminGroup, node.apiReadGroup);  // a group may be new
          AuditEntry entry;
          entry.signal = "SIGHUP";
          entry.method = "reload";
          entry.path = opt.config;
          entry.status = r ? 200 : r.error().status;
          entry.change = r ? r->diff.summary() : "refused: " + r.error().error;
          audit.record(entry);
          const DesiredState& now = controlPlane.desired();
          std::string status = serviceStatusLine(now.node, now.services.size());
          notifyReady(r ? status : status + "; last reload refused: " + r.error().error);
          signals.async_wait(onSignal);
          return;
        }
        spdlog::info("{}: exiting; {}", signo == SIGTERM ? "SIGTERM" : "SIGINT",
                     opt.detachOnExit ? "--detach-on-exit: detaching XDP and removing the pins"
                                      : "XDP stays attached and the maps pinned");
        notifyStopping(signo == SIGTERM ? "stopping (SIGTERM)" : "stopping (SIGINT)");
        api.close();
        healthMonitor.stop();
        io.stop();
      };
  signals.async_wait(onSignal);

  if (opt.daemon) daemonize(io, opt.logLevel);
  // After daemonize: a thread does not survive its fork.
  StateSaver saver(store,
                   [&io](std::function<void()> done) { boost::asio::post(io, std::move(done)); });
  controlPlane.setStateSaver(&saver);
  std::unique_ptr<StoreSync> storeSync;
  if (storeUrl) {
    saver.setMinInterval(std::chrono::seconds(1));  // state_saver.h: why
    storeSync = std::make_unique<StoreSync>(
        *storeUrl, opt.nodeName, controlPlane,
        [&io](std::function<void()> done) { boost::asio::post(io, std::move(done)); });
    storeSync->onEvent(
        [&](const std::string& kind, const std::string& message, const nlohmann::json& detail) {
          healthMonitor.recordControlEvent(kind, message, detail);
        });
    controlPlane.setSharedStore(storeSync.get());
    storeSync->start();
    spdlog::info("services from {}", storeUrl->toString());
  }
  std::unique_ptr<metrics::MetricsServer> metricsServer;
  if (!node.metricsListen.empty()) {
    auto server = metrics::MetricsServer::start(io, metricsCollector, node.metricsListen);
    if (!server) {
      spdlog::error("{} — {}", server.error().toString(), server.error().hint);
      return 1;
    }
    metricsServer = std::move(*server);
    spdlog::info("metrics for Prometheus on http://{}/metrics", node.metricsListen);
  }
  // Signals are handled from here on, so a SIGHUP right after READY=1 is a reload, not a death.
  notifyReady(
      serviceStatusLine(controlPlane.desired().node, controlPlane.desired().services.size()));
  io.run();
  if (storeSync) {
    storeSync->stop();  // its threads post to io
    controlPlane.setSharedStore(nullptr);
  }
  dataplane->waitForUpgrade();  // its thread posts to io: done before io goes
  saver.flush();  // every change made is in the state file (or removed with it just below)
  controlPlane.setStateSaver(nullptr);

  if (opt.detachOnExit) {
    dataplane.reset();  // our fds first; the pins go next
    if (auto r = BpfDataplane::teardown(node.pinRoot); !r) {
      spdlog::error("detach on exit: {}", r.error().toString());
      return 1;
    }
    if (auto r = store.remove(); !r) spdlog::warn("{}", r.error().toString());
  }
  spdlog::info("meshd stopped");
  return 0;
}

}  // namespace
}  // namespace meshpath

int main(int argc, char** argv) {
  using meshpath::Options;
  Options opt;
  CLI::App app{"meshd: the meshpath daemon (XDP L4 load balancer)"};
  app.add_option("-c,--config", opt.config, "config file (YAML, docs/config.md)");
  app.add_option("--store", opt.store,
                 "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: services and endpoints live in etcd "
                 "under PREFIX (default /meshpath), shared by every node watching it; the config "
                 "file gives the node section (docs/etcd.md)");
  meshpath::store::addStoreSecurityOptions(app, opt.storeSecurity);
  app.add_option("--node-name", opt.nodeName,
                 "with --store: this node's name among the nodes of the prefix (its published "
                 "health verdicts); default: the host name");
  app.add_option("--log-level", opt.logLevel, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "err", "error", "critical", "off"}));
  app.add_option("--netns", opt.netns,
                 "join this network namespace (name in /run/netns, or a path) but stay in this "
                 "mount namespace, so the pins outlive meshd");
  app.add_flag("--foreground", opt.foreground, "stay in the foreground (the default)");
  app.add_flag("--daemon", opt.daemon, "fork into the background once up; log to syslog");
  app.add_option("--check-config", opt.checkConfig,
                 "validate FILE as start-up would (node, services, interfaces) without touching "
                 "anything; exit 0 if it is valid, 1 with every problem otherwise");
  app.add_flag("--teardown", opt.teardown,
               "detach XDP and remove the pinned links, maps and state file, then exit");
  app.add_flag("--detach-on-exit", opt.detachOnExit,
               "on SIGTERM/SIGINT, detach XDP and remove the pins (default: keep them)");
  app.set_version_flag("--version", MESHPATH_VERSION);
  CLI11_PARSE(app, argc, argv);
  if (opt.logLevel == "error") opt.logLevel = "err";
  if (opt.nodeName.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    opt.nodeName = host;
  }
  if (opt.daemon && opt.foreground) {
    std::fprintf(stderr, "meshd: --daemon and --foreground exclude each other\n");
    return 2;
  }
  if (!opt.teardown && opt.config.empty() && opt.checkConfig.empty()) {
    std::fprintf(stderr, "meshd: --config FILE is required (or --teardown)\n");
    return 2;
  }

  meshpath::setUpLogging(opt.logLevel, false);
  meshpath::installLibbpfLogger();
  std::signal(SIGPIPE, SIG_IGN);

  if (!opt.netns.empty()) {
    if (auto r = meshpath::joinNetns(opt.netns); !r) {
      spdlog::error("{} — {}", r.error().toString(), r.error().hint);
      return 1;
    }
  }
  if (!opt.checkConfig.empty())
    return meshpath::runConfigCheck(opt.checkConfig, std::cout, std::cerr);
  if (opt.teardown) return meshpath::teardown(opt.config);
  return meshpath::run(opt);
}
