// meshd — loads the XDP balancer, keeps its maps in step with the desired state (config file,
// REST API), and leaves the datapath running when it exits: kill -9 or SIGTERM must not drop a
// packet. One Boost.Asio io_context carries everything: signals, the API, the health probes.
//
//   meshd --config FILE [--log-level info] [--netns NAME] [--detach-on-exit] [--daemon]
//   meshd --teardown [--config FILE]      detach XDP, remove pinned links and maps, state file
//   meshd --check-config FILE [--netns NAME]  validate FILE as start-up would, touching nothing
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api_server.h"
#include "audit_log.h"
#include "bpf_dataplane.h"
#include "config.h"
#include "config_check.h"
#include "control_plane.h"
#include "health/health_checker.h"
#include "health/health_monitor.h"
#include "libbpf_logger.h"
#include "local_ports.h"
#include "metrics/metrics_collector.h"
#include "metrics/metrics_server.h"
#include "netlink.h"
#include "reconciler.h"
#include "service_notify.h"
#include "state_store.h"

namespace meshpath {
namespace {

constexpr const char* kBpffs = "/sys/fs/bpf";
constexpr const char* kRunDir = "/run/meshpath";

struct Options {
  std::string config;
  std::string checkConfig;
  std::string logLevel = "info";
  std::string netns;
  bool foreground = false;
  bool daemon = false;
  bool teardown = false;
  bool detachOnExit = false;
};

void setUpLogging(const std::string& level, bool toSyslog) {
  spdlog::drop("meshd");  // the registry refuses a second logger of the same name
  std::shared_ptr<spdlog::logger> logger;
  if (toSyslog) {
    logger = spdlog::syslog_logger_mt("meshd", "meshd", LOG_PID, LOG_DAEMON);
  } else if (::isatty(STDERR_FILENO)) {
    logger = spdlog::stderr_color_mt("meshd");
  } else {
    logger = spdlog::stderr_logger_mt("meshd");
  }
  logger->set_pattern(toSyslog ? "%v" : "%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

bool isBpffs(const std::string& path) {
  struct statfs st {};
  return ::statfs(path.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

// No other process shares our mount namespace (`ip netns exec` makes one per command): whatever
// we mount here is unmounted when meshd exits.
bool aloneInMountNamespace() {
  std::error_code ec;
  auto ours = std::filesystem::read_symlink("/proc/self/ns/mnt", ec);
  if (ec) return false;
  std::string self = std::to_string(::getpid());
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::string pid = entry.path().filename().string();
    if (pid == self || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code e;
    if (std::filesystem::read_symlink(entry.path() / "ns" / "mnt", e) == ours && !e) return false;
  }
  return true;
}

// The pins must live on a bpffs that outlives meshd, or kill -9 takes the datapath with it.
Result<void> ensureBpffs(const std::string& pinRoot) {
  if (!isBpffs(kBpffs) && pinRoot.starts_with(std::string(kBpffs) + "/")) {
    std::error_code ec;
    std::filesystem::create_directories(kBpffs, ec);
    if (::mount("bpf", kBpffs, "bpf", 0, "mode=0700") != 0) {
      return errnoError(errno, std::string("mount bpffs at ") + kBpffs);
    }
    spdlog::info("mounted a bpf filesystem at {}", kBpffs);
    if (aloneInMountNamespace()) {
      spdlog::warn(
          "no other process shares this mount namespace (ip netns exec?): the bpffs just mounted "
          "disappears when meshd exits, and the pinned XDP links and maps with it, so a "
          "restart cannot adopt them and drops every connection. Run meshd in the "
          "host's mount namespace instead: `meshd --netns NAME` in place of "
          "`ip netns exec NAME meshd`");
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(pinRoot, ec);
  if (ec) return Error{ec.value(), "create pin root " + pinRoot, {}};
  if (!isBpffs(pinRoot)) {
    return Error{EINVAL, "node.pin_root " + pinRoot + " is not on a bpf filesystem",
                 "mount one (`mount -t bpf bpf DIR`) or put pin_root under /sys/fs/bpf"};
  }
  return {};
}

// One meshd per pin root: a second one would swap the links to its own program and fight over
// the maps. The lock lives as long as the returned fd (so also across --daemon's fork).
Result<int> lockPinRoot(const std::string& pinRoot) {
  int fd = ::open(pinRoot.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errnoError(errno, "open " + pinRoot);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return Error{EBUSY, "another meshd owns " + pinRoot, "stop it first (see its api_socket)"};
    }
    return Error{err, "lock " + pinRoot, {}};
  }
  return fd;
}

Result<void> joinNetns(const std::string& name) {
  std::string path = name.find('/') == std::string::npos ? "/run/netns/" + name : name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errnoError(errno, "open network namespace " + path, "see `ip netns list`");
  int rc = ::setns(fd, CLONE_NEWNET);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error{err, "join network namespace " + path, {}};
  spdlog::info("joined network namespace {}", path);
  return {};
}

void makeParentDir(const std::string& file) {
  std::filesystem::path p(file);
  std::error_code ec;
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
}

// Node settings for --teardown: from the config if one is given (only the node section has to
// make sense), the defaults otherwise.
Result<NodeSpec> teardownNode(const std::string& config) {
  if (config.empty()) return NodeSpec{};
  std::ifstream in(config);
  if (!in) return Error{errno, "read " + config, {}};
  std::stringstream text;
  text << in.rdbuf();
  try {
    ConfigDocument doc = parseConfigDocument(text.str());
    return doc.node.value_or(NodeSpec{});
  } catch (const ConfigError& e) {
    return Error{EINVAL, config + ": " + e.what(), {}};
  }
}

bool socketAnswers(const std::string& path) {
  boost::asio::io_context io;
  boost::asio::local::stream_protocol::socket s(io);
  boost::system::error_code ec;
  s.connect(boost::asio::local::stream_protocol::endpoint(path), ec);
  return !ec;
}

int teardown(const Options& opt) {
  auto node = teardownNode(opt.config);
  if (!node) {
    spdlog::error("{}", node.error().toString());
    return 2;
  }
  std::error_code ec;
  if (socketAnswers(node->apiSocket) ||
      (std::filesystem::exists(node->pinRoot, ec) && !lockPinRoot(node->pinRoot))) {
    spdlog::error(
        "meshd is running (it owns {}); stop it first, or run it with "
        "--detach-on-exit",
        node->pinRoot);
    return 1;
  }
  if (auto r = BpfDataplane::teardown(node->pinRoot); !r) {
    spdlog::error("teardown: {}", r.error().toString());
    return 1;
  }
  if (auto r = StateStore(node->stateFile).remove(); !r) {
    spdlog::error("teardown: {}", r.error().toString());
    return 1;
  }
  spdlog::info("teardown done: XDP detached, pins under {} and {} removed", node->pinRoot,
               node->stateFile);
  return 0;
}

// Forks into the background once everything is up: the parent exits 0, the child carries on
// with the same fds (maps, links, API socket), logging to syslog.
void daemonize(boost::asio::io_context& io, const std::string& logLevel) {
  io.notify_fork(boost::asio::io_context::fork_prepare);
  pid_t pid = ::fork();
  if (pid < 0) {
    spdlog::error("fork: {}; staying in the foreground", std::strerror(errno));
    io.notify_fork(boost::asio::io_context::fork_parent);
    return;
  }
  if (pid > 0) ::_exit(0);
  ::setsid();
  io.notify_fork(boost::asio::io_context::fork_child);
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) ::close(null);
  }
  setUpLogging(logLevel, true);
  spdlog::info("meshd running in the background, pid {}", ::getpid());
}

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
  } else if (saved->has_value()) {
    spdlog::info(
        "state file {} found but no pinned maps (reboot?): starting from the config "
        "file",
        node.stateFile);
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
  if (opt.teardown) return meshpath::teardown(opt);
  return meshpath::run(opt);
}
