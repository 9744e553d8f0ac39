// host_setup.h — what meshd needs from the host before the datapath: logging, a bpf filesystem
// that outlives meshd, one meshd per pin root, the network namespace, and --daemon's fork.
#pragma once

#include <boost/asio/io_context.hpp>
#include <string>

#include "result.h"

namespace meshpath {

// spdlog's default logger "meshd": to syslog (after --daemon), else stderr (colour on a tty).
void setUpLogging(const std::string& level, bool toSyslog);

// Mounts a bpffs at /sys/fs/bpf when pinRoot is under it and none is there, creates pinRoot and
// checks that it is on a bpffs (pins elsewhere would not outlive meshd).
Result<void> ensureBpffs(const std::string& pinRoot);

// An exclusive lock on pinRoot, held as long as the returned fd is open.
Result<int> lockPinRoot(const std::string& pinRoot);

// Joins a network namespace by name (/run/netns/NAME) or path, staying in this mount namespace.
Result<void> joinNetns(const std::string& name);

// Creates the directory a file will live in (errors show later, when the file is written).
void makeParentDir(const std::string& file);

// Raises this process's soft limit of open files (RLIMIT_NOFILE) to `want`, and the hard limit
// too where that is lower and meshd may (CAP_SYS_RESOURCE); warns when the soft limit stays
// below `want`. meshd holds a socket per probe in flight (up to one per endpoint); systemd
// starts a service with a soft limit of 1,024 (and a hard one of 524,288, which is enough).
void raiseOpenFileLimit(uint64_t want);

// Forks into the background once everything is up: the parent exits 0, the child carries on
// with the same fds (maps, links, API socket), logging to syslog.
void daemonize(boost::asio::io_context& io, const std::string& logLevel);

}  // namespace meshpath
