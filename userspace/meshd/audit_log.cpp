// audit_log.cpp — the audit lines and the file they go to.
#include "audit_log.h"

#include <pwd.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <vector>

#include "model.h"

namespace meshpath {

namespace {

// A value in double quotes, with quotes, backslashes and control characters escaped, so one
// entry is always one line.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\x%02x", static_cast<unsigned char>(c));
      out += esc;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string userName(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return pw.pw_name;
  }
  return "?";
}

// The peer's command (/proc/PID/comm); "?" once it has gone or is not ours to read.
std::string command(pid_t pid) {
  if (pid <= 0) return "?";
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  if (!in || !std::getline(in, comm) || comm.empty()) return "?";
  return comm;
}

}  // namespace

AuditLog::~AuditLog() {
  if (file_) file_->flush();
}

Result<void> AuditLog::open(const std::string& path) {
  path_ = path;
  file_.reset();
  if (path.empty()) return {};
  std::filesystem::path p(path);
  if (p.has_parent_path() && !std::filesystem::exists(p.parent_path())) {
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    if (ec) {
      return Error{ec.value(), "node.audit_log " + path + ": create " + p.parent_path().string(),
                   "set node.audit_log to a writable path, or \"\" to audit in meshd's log only"};
    }
    ::chmod(p.parent_path().c_str(), 0750);
  }
  try {
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
    file_ = std::make_shared<spdlog::logger>("audit", std::move(sink));
    file_->set_pattern("%v");
    file_->set_level(spdlog::level::info);
    file_->flush_on(spdlog::level::info);
  } catch (const spdlog::spdlog_ex& e) {
    return Error{EACCES, "node.audit_log " + path + ": cannot open: " + e.what(),
                 "set node.audit_log to a writable path, or \"\" to audit in meshd's log only"};
  }
  ::chmod(path.c_str(), 0640);
  return {};
}

std::string AuditLog::format(const AuditEntry& e) {
  std::string who;
  if (!e.signal.empty()) {
    who = "signal=" + e.signal;
  } else {
    who = "uid=" + std::to_string(e.uid) + " user=" + userName(e.uid) +
          " pid=" + std::to_string(e.pid) + " comm=" + quoted(command(e.pid));
  }
  return formatUtcTime(e.time) + " " + who + " request=" + quoted(e.method + " " + e.path) +
         " status=" + std::to_string(e.status) + " change=" + quoted(e.change);
}

void AuditLog::record(const AuditEntry& entry) {
  const std::string line = format(entry);
  if (file_) file_->info(line);
  spdlog::info("audit: {}", line);
}

}  // namespace meshpath
