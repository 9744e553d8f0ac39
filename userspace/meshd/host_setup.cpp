// host_setup.cpp — see host_setup.h.
#include "host_setup.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "abi.h"

namespace meshpath {

namespace {

constexpr const char* kBpffs = "/sys/fs/bpf";

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

}  // namespace

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

void raiseOpenFileLimit(uint64_t want) {
  rlimit now{};
  if (::getrlimit(RLIMIT_NOFILE, &now) != 0 || now.rlim_cur >= want) return;
  rlimit next = now;
  next.rlim_cur = want;
  next.rlim_max = std::max<rlim_t>(now.rlim_max, want);
  if (::setrlimit(RLIMIT_NOFILE, &next) != 0) {  // no CAP_SYS_RESOURCE: up to the hard limit
    next.rlim_cur = next.rlim_max = now.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &next);
  }
  rlimit got{};
  ::getrlimit(RLIMIT_NOFILE, &got);
  if (got.rlim_cur < want) {
    spdlog::warn(
        "open files are limited to {} (RLIMIT_NOFILE, hard limit {}): meshd holds each service's "
        "ring map open, so fewer services than the {} allowed may fit (EMFILE); raise it "
        "(LimitNOFILE= of the unit, ulimit -n)",
        got.rlim_cur, got.rlim_max, MP_MAX_SERVICES);
  } else if (got.rlim_cur != now.rlim_cur) {
    spdlog::debug("open files limit raised from {} to {}", now.rlim_cur, got.rlim_cur);
  }
}

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

}  // namespace meshpath
