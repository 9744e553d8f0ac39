// audit_log.h — one line per accepted change (docs/api.md, "Audit log"): when, who (uid, user, pid
// and command of the API peer, or the signal that asked for a reload), the request, its status and
// what it changed (StateDiff::summary() of the desired state before and after). Lines go to
// node.audit_log (spdlog's file sink) and, at info level, to meshd's own log.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "result.h"

namespace spdlog {
class logger;
}

namespace meshpath {

struct AuditEntry {
  std::chrono::system_clock::time_point time = std::chrono::system_clock::now();
  // An API peer (signal empty) or a signal ("SIGHUP").
  std::string signal;
  uid_t uid = 0;
  pid_t pid = 0;
  std::string method;  // "POST", or "reload" for a signal
  std::string path;    // "/v1/apply", or the config file for a reload
  int status = 200;
  std::string change;  // the diff's summary, or what a route that changes no desired state did
};

class AuditLog {
 public:
  AuditLog() = default;
  ~AuditLog();
  // Opens node.audit_log for appending (its parent directory created 0750 if missing); "" keeps
  // the lines in meshd's log only. A file that cannot be opened is an error naming the field.
  Result<void> open(const std::string& path);

  void record(const AuditEntry& entry);
  const std::string& path() const { return path_; }

  // The line as written: `2026-12-02T21:50:01.123Z uid=1001 user=alice pid=4242 comm=meshctl
  // request="POST /v1/apply" status=200 change="+ service api (...)"`, or for a reload
  // `... signal=SIGHUP request="reload /etc/meshpath/meshd.yaml" status=200 change="..."`.
  static std::string format(const AuditEntry& entry);

 private:
  std::string path_;
  std::shared_ptr<spdlog::logger> file_;
};

}  // namespace meshpath
