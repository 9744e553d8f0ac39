#include "state_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "json.h"

namespace meshpath {

namespace {

using nlohmann::json;

constexpr int kFormatVersion = 1;

}  // namespace

std::string serializeState(const DesiredState& desired, const IdAssignments& ids) {
  json j = {{"format", kFormatVersion},
            {"desired", toJson(desired)},
            {"ids",
             {{"services", ids.services},
              {"endpoints", ids.endpoints},
              {"next_service_id", ids.nextServiceId},
              {"next_endpoint_id", ids.nextEndpointId}}}};
  return j.dump(2) + "\n";
}

SavedState parseState(const std::string& text) {
  json j = json::parse(text);
  if (j.at("format").get<int>() != kFormatVersion) {
    throw std::runtime_error("unknown format " + j.at("format").dump());
  }
  SavedState out;
  out.desired = stateFromJson(j.at("desired"));
  const json& ids = j.at("ids");
  out.ids.services = ids.at("services").get<std::map<std::string, uint32_t>>();
  out.ids.endpoints =
      ids.at("endpoints").get<std::map<std::string, std::map<std::string, uint32_t>>>();
  out.ids.nextServiceId = ids.at("next_service_id").get<uint32_t>();
  out.ids.nextEndpointId = ids.at("next_endpoint_id").get<uint32_t>();
  // Every service and endpoint must have an id, or the file is not one meshd wrote.
  for (const ServiceSpec& s : out.desired.services) {
    if (!out.ids.services.contains(s.name)) {
      throw std::runtime_error("no id for service " + s.name);
    }
    for (const EndpointSpec& e : s.endpoints) {
      auto it = out.ids.endpoints.find(s.name);
      if (it == out.ids.endpoints.end() || !it->second.contains(e.key())) {
        throw std::runtime_error("no id for endpoint " + e.key() + " of " + s.name);
      }
    }
  }
  return out;
}

bool StateStore::exists() const {
  std::error_code ec;
  return std::filesystem::exists(path_, ec);
}

Result<std::optional<SavedState>> StateStore::load() const {
  std::ifstream in(path_);
  if (!in) {
    if (errno == ENOENT) return std::optional<SavedState>();
    return errnoError(errno, "read state file " + path_);
  }
  std::stringstream buf;
  buf << in.rdbuf();
  try {
    return std::optional<SavedState>(parseState(buf.str()));
  } catch (const std::exception& e) {
    return Error{EINVAL, "state file " + path_ + " is not usable: " + e.what(),
                 "move it away to start from the config file"};
  }
}

Result<void> StateStore::save(const DesiredState& desired, const IdAssignments& ids) const {
  std::filesystem::path target(path_);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  std::string tmp = path_ + ".tmp";
  std::string text = serializeState(desired, ids);

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errnoError(errno, "create " + tmp);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return errnoError(err, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  // The rename must not become visible before the data: a crash would leave an empty file.
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    return errnoError(err, "fsync " + tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errnoError(err, "rename " + tmp + " to " + path_);
  }
  return {};
}

Result<void> StateStore::remove() const {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
    return errnoError(errno, "remove state file " + path_);
  }
  return {};
}

}  // namespace meshpath
