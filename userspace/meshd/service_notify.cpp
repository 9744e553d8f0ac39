// service_notify.cpp — sd_notify(3) messages for systemd's Type=notify (service_notify.h).
#include "service_notify.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstring>
#include <ctime>

namespace meshpath {
namespace {

// A newline in STATUS= would start another assignment of the message.
std::string oneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

void send(const std::string& message) {
  // unset_environment = 0: NOTIFY_SOCKET stays for the messages of later reloads and the stop.
  int rc = sd_notify(0, message.c_str());
  if (rc < 0) spdlog::warn("sd_notify: {}", std::strerror(-rc));
}

}  // namespace

std::string serviceStatusLine(const NodeSpec& node, size_t services) {
  std::string ifaces;
  for (const auto& name : node.interfaces) ifaces += (ifaces.empty() ? "" : " ") + name;
  return std::to_string(services) + (services == 1 ? " service" : " services") + ", XDP on " +
         ifaces + " (" + node.xdpMode + "), API on " + node.apiSocket;
}

void notifyReady(const std::string& status) { send("READY=1\nSTATUS=" + oneLine(status)); }

void notifyReloading() {
  // MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to this message;
  // older ones ignore it.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const uint64_t usec =
      static_cast<uint64_t>(now.tv_sec) * 1000000u + static_cast<uint64_t>(now.tv_nsec) / 1000u;
  send("RELOADING=1\nSTATUS=reloading the config file\nMONOTONIC_USEC=" + std::to_string(usec));
}

void notifyStopping(const std::string& status) { send("STOPPING=1\nSTATUS=" + oneLine(status)); }

void notifyStatus(const std::string& status) { send("STATUS=" + oneLine(status)); }

}  // namespace meshpath
