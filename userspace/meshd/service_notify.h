// service_notify.h — meshd's side of systemd's Type=notify protocol (sd_notify(3)): READY=1 once
// the datapath is attached and the API listens, RELOADING=1 ... READY=1 around a SIGHUP reload,
// STOPPING=1 on the way out, and a one-line STATUS= for `systemctl status`. Without
// $NOTIFY_SOCKET (not started by systemd) every call does nothing.
#pragma once

#include <string>

#include "model.h"

namespace meshpath {

// "3 services, XDP on eth0 eth1 (native), API on /run/meshpath/meshd.sock"
std::string serviceStatusLine(const NodeSpec& node, size_t services);

void notifyReady(const std::string& status);
void notifyReloading();
void notifyStopping(const std::string& status);
void notifyStatus(const std::string& status);

}  // namespace meshpath
