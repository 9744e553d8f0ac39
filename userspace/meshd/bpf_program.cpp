// bpf_program.cpp — BpfDataplane's program lifecycle: loading the balancer against the pinned
// maps (their layouts checked and migrated by LbSkeleton), attaching it to the interfaces or
// adopting their pinned links, switching those links to a new program in place (upgrade(), and
// meshd's start over a running node), detaching links no longer configured, and teardown.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/ethtool.h>
#include <linux/if_link.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "bpf_dataplane.h"
#include "netlink.h"

namespace meshpath {

namespace {

Error fromBpf(const BpfError& e, std::string hint = {}) {
  return Error{e.errnum, e.context, std::move(hint), e.where};
}

constexpr const char* kLinkPrefix = "link_";

std::string linkPinPath(const std::string& pinRoot, const std::string& ifname) {
  return pinRoot + "/" + kLinkPrefix + ifname;
}

uint32_t xdpModeFlag(const std::string& mode) {
  return mode == "generic" ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
}

struct LinkInfo {
  uint32_t progId = 0;
  uint32_t ifindex = 0;
  uint32_t type = 0;
};

Result<LinkInfo> linkInfo(int fd) {
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  if (int rc = bpf_obj_get_info_by_fd(fd, &info, &len); rc != 0) {
    return errnoError(rc, "read link info");
  }
  return LinkInfo{info.prog_id, info.xdp.ifindex, info.type};
}

// Which program runs on ifindex, and in which mode.
struct XdpState {
  uint32_t driverProg = 0;
  uint32_t genericProg = 0;
};

// An IPv4 packet toward an endpoint whose neighbour is unresolved goes to the kernel already
// rewritten, from the node's own address (pass_no_neigh); Linux drops it as a martian unless
// accept_local is on for the interface it came in on (bpf/README.md). Set in meshd's own network
// namespace; a failure is logged, not fatal: only those first packets suffer.
// The interface's driver as ethtool names it ("veth", "mlx5_core", ...); "" when unknown.
std::string driverOf(const std::string& ifname) {
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&info);
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  const int rc = ::ioctl(fd, SIOCETHTOOL, &ifr);
  ::close(fd);
  return rc == 0 ? std::string(info.driver) : "";
}

void enableAcceptLocal(const std::string& ifname) {
  const std::string path = "/proc/sys/net/ipv4/conf/" + ifname + "/accept_local";
  std::string was;
  std::getline(std::ifstream(path), was);
  if (was == "1") {
    spdlog::info("{}: net.ipv4.conf.{}.accept_local is 1", ifname, ifname);
    return;
  }
  std::ofstream out(path);
  out << "1\n";
  out.close();
  if (!out) {
    spdlog::warn(
        "{}: cannot set {} to 1 ({}): packets toward an endpoint whose neighbour is unresolved "
        "will be dropped by the kernel as martians",
        ifname, path, std::strerror(errno));
    return;
  }
  spdlog::info(
      "{}: net.ipv4.conf.{}.accept_local set to 1 (was {}): the kernel takes the packets meshd "
      "hands it for unresolved neighbours",
      ifname, ifname, was.empty() ? "unknown" : was);
}

XdpState queryXdp(int ifindex) {
  LIBBPF_OPTS(bpf_xdp_query_opts, opts);
  XdpState s;
  if (bpf_xdp_query(ifindex, 0, &opts) == 0) {
    s.driverProg = opts.drv_prog_id;
    s.genericProg = opts.skb_prog_id;
  }
  return s;
}

ProgramInfo programInfoOfFd(int fd) {
  ProgramInfo out;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return out;
  out.name = info.name;
  out.id = info.id;
  static const char kHex[] = "0123456789abcdef";
  for (uint8_t b : info.tag) {
    out.tag.push_back(kHex[b >> 4]);
    out.tag.push_back(kHex[b & 15]);
  }
  return out;
}

// A program known by id only: its tag needs an fd, and opening one by id takes CAP_SYS_ADMIN;
// without it, the tag stays empty.
ProgramInfo programInfoOfId(uint32_t id) {
  const int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return ProgramInfo{.name = "", .tag = "", .id = id};
  ProgramInfo out = programInfoOfFd(fd);
  ::close(fd);
  return out;
}

std::string describeProgram(const ProgramInfo& p) {
  return "id " + std::to_string(p.id) + " (" + (p.tag.empty() ? "tag unknown" : p.tag) + ")";
}

// Switches an XDP link to newProgFd in one step: each packet meets the old program or the new,
// never neither. With oldProgFd >= 0, only if the link still runs that program (BPF_F_REPLACE):
// a link another process switched meanwhile is left alone (EPERM).
Result<void> switchLinkProgram(int linkFd, int newProgFd, int oldProgFd) {
  LIBBPF_OPTS(bpf_link_update_opts, opts);
  if (oldProgFd >= 0) {
    opts.flags = BPF_F_REPLACE;
    opts.old_prog_fd = static_cast<uint32_t>(oldProgFd);
  }
  if (bpf_link_update(linkFd, newProgFd, &opts) != 0) {
    const int err = errno;
    return Error{err, "bpf_link_update",
                 err == EPERM && oldProgFd >= 0
                     ? "the link no longer runs the program this meshd loaded (another meshd?)"
                     : ""};
  }
  return {};
}

double msSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Result<std::unique_ptr<BpfDataplane>> BpfDataplane::start(const NodeSpec& node, Netlink& netlink) {
  // Resolve every interface first: a typo must not leave half the interfaces attached.
  std::vector<std::pair<std::string, int>> interfaces;
  for (const std::string& name : node.interfaces) {
    auto index = netlink.ifindex(name);
    if (!index) return index.error();
    interfaces.emplace_back(name, *index);
  }

  LbSkeletonOptions options;
  options.pinRoot = node.pinRoot;
  options.connTableSize = node.connTableSize;
  options.halfTableSize = node.halfTableSize;
  options.flowCacheSlots = node.flowCacheSlots;
  for (const auto& [name, index] : interfaces) {
    if (driverOf(name) != "veth") continue;
    options.txRedirect = true;
    spdlog::info(
        "{} is a veth: frames back out of their ingress port go by redirect, not "
        "XDP_TX (a veth's XDP_TX needs XDP on its peer too)",
        name);
  }
  auto skel = LbSkeleton::open(options);
  if (!skel) {
    bool pinned = std::filesystem::exists(node.pinRoot + "/mp_services");
    return fromBpf(skel.error(),
                   pinned ? "maps pinned under " + node.pinRoot +
                                " may not fit this meshd; see the error and the libbpf lines "
                                "above. `meshd --teardown` removes them, dropping all connections"
                          : "see the libbpf lines above");
  }
  std::unique_ptr<BpfDataplane> dp(new BpfDataplane(std::move(*skel), node));
  spdlog::info("XDP program loaded (prog id {}); maps under {} {}", dp->progId_, node.pinRoot,
               dp->mapsAdopted() ? "reused from the earlier run" : "created");

  if (auto r = dp->loadRings(); !r) return r.error();
  if (auto r = dp->initSynSecret(); !r) return r.error();
  if (auto r = dp->mapSynGuards(); !r) return r.error();
  if (auto r = dp->mapHealth(); !r) return r.error();
  for (const auto& [name, index] : interfaces) {
    if (auto r = dp->attach(name, index); !r) return r.error();
    enableAcceptLocal(name);
  }
  if (auto r = dp->detachStaleLinks(); !r) return r.error();
  // Every link runs the new program now: the migrated maps can take the old ones' pins.
  if (auto done = dp->skel_->completeMigrations(); !done) {
    return fromBpf(done.error(),
                   "the program runs on the migrated maps, but they are not pinned: "
                   "the next start migrates the old pinned maps again");
  }
  return dp;
}

Result<void> BpfDataplane::attach(const std::string& ifname, int ifindex) {
  const std::string pin = linkPinPath(node_.pinRoot, ifname);
  const std::string want = node_.xdpMode == "generic" ? "generic" : "native";

  if (std::filesystem::exists(pin)) {
    bpf_link* link = bpf_link__open(pin.c_str());
    if (link == nullptr) {
      return errnoError(-errno, "open pinned link " + pin,
                        "remove the stale pin (`meshd --teardown` removes all)");
    }
    auto info = linkInfo(bpf_link__fd(link));
    if (info && info->type == BPF_LINK_TYPE_XDP && static_cast<int>(info->ifindex) == ifindex) {
      XdpState xdp = queryXdp(ifindex);
      std::string mode = xdp.driverProg == info->progId    ? "native"
                         : xdp.genericProg == info->progId ? "generic"
                                                           : "?";
      // No fd of the running program here (opening one by id takes CAP_SYS_ADMIN): the switch
      // is unconditional, as any start after a crash must be.
      if (auto r = switchLinkProgram(bpf_link__fd(link), skel_->programFd(), -1); !r) {
        bpf_link__destroy(link);
        return Error{r.error().code, "switch the XDP link on " + ifname + " to the new program",
                     r.error().hint};
      }
      if (mode != want) {
        // Native and generic XDP cannot be active at once, so a switch needs a gap in which
        // packets bypass the balancer. That is the operator's call, not a restart's.
        spdlog::warn(
            "{}: the adopted link runs in {} mode, xdp_mode says {}; kept {} (switching "
            "drops packets: `meshd --teardown`, then start meshd again)",
            ifname, mode, want, mode);
      }
      if (info->progId != progId_) {
        auto now = program();
        spdlog::info(
            "{}: upgraded program {} -> {}", ifname, describeProgram(programInfoOfId(info->progId)),
            describeProgram(now ? *now : ProgramInfo{.name = "", .tag = "", .id = progId_}));
      }
      spdlog::info("{}: adopted pinned XDP link ({} mode), no packet missed", ifname, mode);
      attachments_.push_back(Attachment{ifname, link, true});
      return {};
    }
    // The interface this link served is gone (or was recreated): the link is dead weight.
    spdlog::warn(
        "{}: pinned link {} no longer serves this interface (ifindex {} now, link's {}); "
        "replacing it",
        ifname, pin, ifindex, info ? info->ifindex : 0);
    bpf_link__detach(link);
    bpf_link__destroy(link);
    ::unlink(pin.c_str());
  }

  LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = xdpModeFlag(node_.xdpMode));
  int fd = bpf_link_create(skel_->programFd(), ifindex, BPF_XDP, &opts);
  if (fd < 0) {
    int err = errno;
    std::string hint;
    XdpState xdp = queryXdp(ifindex);
    if (err == EBUSY || err == EEXIST) {
      hint = "another XDP program is attached to " + ifname + " (prog id " +
             std::to_string(xdp.driverProg ? xdp.driverProg : xdp.genericProg) +
             "): if another meshd's (other pin_root), stop it and run `meshd --teardown` with "
             "its config; if attached without a link, `ip link set dev " +
             ifname + " xdp off`; or leave " + ifname + " out of node.interfaces";
    } else if (err == EOPNOTSUPP || err == EINVAL) {
      hint = "if " + ifname + "'s driver has no native XDP, set node.xdp_mode: generic";
    }
    return Error{err, "attach XDP (" + want + ") to " + ifname, hint};
  }
  if (bpf_obj_pin(fd, pin.c_str()) != 0) {
    int err = errno;
    ::close(fd);  // the last reference: the link goes, and the program with it
    return Error{err, "pin the XDP link of " + ifname + " at " + pin, {}};
  }
  ::close(fd);
  bpf_link* link = bpf_link__open(pin.c_str());
  if (link == nullptr) return errnoError(-errno, "open pinned link " + pin);
  spdlog::info("{}: XDP attached ({} mode), link pinned at {}", ifname, want, pin);
  attachments_.push_back(Attachment{ifname, link, false});
  return {};
}

Result<void> BpfDataplane::detachStaleLinks() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(node_.pinRoot, ec)) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with(kLinkPrefix)) continue;
    std::string ifname = name.substr(std::strlen(kLinkPrefix));
    bool configured = false;
    for (const std::string& i : node_.interfaces) configured = configured || i == ifname;
    if (configured) continue;
    int fd = bpf_obj_get(entry.path().c_str());
    if (fd >= 0) {
      bpf_link_detach(fd);
      ::close(fd);
    }
    ::unlink(entry.path().c_str());
    spdlog::info("{}: not in node.interfaces any more: XDP detached, link pin removed", ifname);
  }
  return {};
}

Result<void> BpfDataplane::teardown(const std::string& pinRoot) {
  std::error_code ec;
  if (!std::filesystem::exists(pinRoot, ec)) {
    spdlog::info("teardown: nothing pinned under {}", pinRoot);
    return {};
  }
  // Links first, so no packet meets a program whose maps are half gone.
  std::vector<std::filesystem::path> maps;
  for (const auto& entry : std::filesystem::directory_iterator(pinRoot, ec)) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with(kLinkPrefix)) {
      maps.push_back(entry.path());
      continue;
    }
    int fd = bpf_obj_get(entry.path().c_str());
    if (fd >= 0) {
      if (bpf_link_detach(fd) != 0 && errno != EINVAL && errno != ENOLINK) {
        spdlog::warn("teardown: detach {}: {}", name, std::strerror(errno));
      }
      ::close(fd);
    }
    if (::unlink(entry.path().c_str()) != 0) {
      return errnoError(errno, "remove " + entry.path().string());
    }
    spdlog::info("teardown: XDP detached from {}", name.substr(std::strlen(kLinkPrefix)));
  }
  if (ec) return Error{ec.value(), "list " + pinRoot, {}};
  for (const auto& path : maps) {
    if (::unlink(path.c_str()) != 0) return errnoError(errno, "remove " + path.string());
  }
  if (::rmdir(pinRoot.c_str()) != 0 && errno != ENOENT) {
    return errnoError(errno, "remove " + pinRoot);
  }
  spdlog::info("teardown: removed {} pinned maps and {}", maps.size(), pinRoot);
  return {};
}

Result<ProgramInfo> BpfDataplane::program() {
  ProgramInfo out = programInfoOfFd(skel_->programFd());
  if (out.id == 0) return errnoError(-errno, "read the XDP program's info");
  return out;
}

std::vector<InterfaceStatus> BpfDataplane::interfaces() {
  std::vector<InterfaceStatus> out;
  for (const Attachment& a : attachments_) {
    InterfaceStatus s;
    s.name = a.ifname;
    s.ifindex = static_cast<int>(if_nametoindex(a.ifname.c_str()));
    s.adopted = a.adopted;
    if (s.ifindex > 0) {
      XdpState xdp = queryXdp(s.ifindex);
      if (progId_ != 0 && xdp.driverProg == progId_) {
        s.attached = true;
        s.mode = "native";
      } else if (progId_ != 0 && xdp.genericProg == progId_) {
        s.attached = true;
        s.mode = "generic";
      }
    }
    out.push_back(s);
  }
  return out;
}

// Load, switch, complete: the new program is loaded against the same pins (its migrations' first
// copies done) while the old one runs on; every link is switched; then the migrations copy what
// the old program changed meanwhile and take the pins. A failure before the first switch changes
// nothing. A failed switch puts the interfaces already switched back on the old program, since
// two programs on two sets of migrated maps would split connections between them.
Result<UpgradeReport> BpfDataplane::upgrade() {
  const auto t0 = std::chrono::steady_clock::now();
  auto from = program();
  if (!from) return from.error();
  auto next = loadUpgrade(skel_->options());
  if (!next) return next.error();
  return switchUpgrade(std::move(*next), *from, t0);
}

void BpfDataplane::upgradeInBackground(Post post, std::function<void(Result<UpgradeReport>)> done) {
  if (upgrading_) {
    post([done = std::move(done)] {
      done(Error{EBUSY, "upgrade: another upgrade is loading its program",
                 "wait for it to finish (it answers when done), then check `meshctl status`"});
    });
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto from = program();
  if (!from) {
    post([done = std::move(done), e = from.error()] { done(e); });
    return;
  }
  waitForUpgrade();  // the thread of the last one, finished
  upgrading_ = true;
  // Only the load runs on the thread: it opens the pins by path and loads a program of its own,
  // touching nothing the event loop uses (maps the migrations copy are copied again, with what
  // changed meanwhile, when they complete on the loop). The switch, the swap of skeletons and
  // the answer run on the loop.
  upgradeThread_ = std::thread(
      [this, post, done = std::move(done), options = skel_->options(), from = *from, t0]() mutable {
        auto loaded = std::make_shared<Result<std::unique_ptr<LbSkeleton>>>(loadUpgrade(options));
        post([this, loaded, done = std::move(done), from, t0] {
          upgrading_ = false;
          if (!*loaded) {
            done(loaded->error());
            return;
          }
          done(switchUpgrade(std::move(**loaded), from, t0));
        });
      });
}

void BpfDataplane::waitForUpgrade() {
  if (upgradeThread_.joinable()) upgradeThread_.join();
}

Result<std::unique_ptr<LbSkeleton>> BpfDataplane::loadUpgrade(const LbSkeletonOptions& options) {
  auto fresh = LbSkeleton::open(options);
  if (!fresh) {
    return fromBpf(fresh.error(),
                   "nothing changed: the running program and its maps are as "
                   "they were; see the libbpf lines above");
  }
  std::unique_ptr<LbSkeleton> next = std::move(*fresh);
  // meshd holds these maps itself (mapped, or consumed through a ring buffer the event loop
  // polls) for its whole life; a running meshd cannot move over to a migrated copy, a start can.
  for (const MapMigration& m : next->pendingMigrations()) {
    if (m.name() == "mp_ep_health" || m.name() == "mp_syn_guard" || m.name() == "mp_events") {
      return Error{EOPNOTSUPP,
                   "upgrade in place: " + m.name() + " changes layout (" +
                       std::to_string(m.from()) + " -> " + std::to_string(m.to()) + ")",
                   "nothing changed; restart meshd instead (the pinned links keep the running "
                   "program attached meanwhile, and the start migrates the map)"};
    }
  }
  return next;
}

Result<UpgradeReport> BpfDataplane::switchUpgrade(std::unique_ptr<LbSkeleton> next,
                                                  const ProgramInfo& from,
                                                  std::chrono::steady_clock::time_point t0) {
  UpgradeReport report;
  report.from = from;
  report.to = programInfoOfFd(next->programFd());
  report.loadMs = msSince(t0);

  const auto t1 = std::chrono::steady_clock::now();
  const int oldFd = skel_->programFd();
  size_t switched = 0;
  for (const Attachment& a : attachments_) {
    report.interfaces.push_back(
        UpgradeReport::Interface{.name = a.ifname, .switched = false, .error = ""});
    auto r = switchLinkProgram(bpf_link__fd(a.link), next->programFd(), oldFd);
    if (!r) {
      report.interfaces.back().error = r.error().toString();
      break;
    }
    report.interfaces.back().switched = true;
    ++switched;
  }
  report.switchMs = msSince(t1);
  if (switched < attachments_.size()) {
    std::string undone;
    for (size_t i = 0; i < switched; ++i) {
      auto back = switchLinkProgram(bpf_link__fd(attachments_[i].link), oldFd, next->programFd());
      report.interfaces[i].switched = !back;
      if (!back) undone += " " + attachments_[i].ifname;
    }
    report.problem = "switching " + report.interfaces.back().name + " failed (" +
                     report.interfaces.back().error + "); " +
                     (undone.empty() ? "the interfaces switched before were put back: the old "
                                       "program runs everywhere, nothing changed"
                                     : "could not put back" + undone +
                                           ", which run the new program: run the upgrade again");
    report.totalMs = msSince(t0);
    spdlog::error("upgrade of program {}: {}", describeProgram(report.from), report.problem);
    if (!undone.empty()) retired_ = std::move(next);  // it still runs somewhere: keep it loaded
    return report;
  }

  for (const MapMigration& m : next->pendingMigrations()) {
    report.migrations.push_back(UpgradeReport::Migration{.map = m.name(),
                                                         .fromVersion = m.from(),
                                                         .toVersion = m.to(),
                                                         .copied = 0,
                                                         .changed = 0,
                                                         .copyMs = 0,
                                                         .deltaMs = 0});
  }
  auto done = next->completeMigrations();
  for (size_t i = 0; done && i < done->size() && i < report.migrations.size(); ++i) {
    const MapMigration::Stats& s = (*done)[i];
    UpgradeReport::Migration& m = report.migrations[i];
    m.copied = s.copied;
    m.changed = s.changed;
    m.copyMs = s.copyNs / 1e6;
    m.deltaMs = s.deltaNs / 1e6;
  }
  // The old skeleton stays until the next upgrade, so the program just replaced can still be
  // looked at (bpftool prog show). Nothing depends on it: the kernel keeps a program alive while
  // a packet runs it, and connection-table walks read walkTables_, fds of our own.
  retired_ = std::move(skel_);
  skel_ = std::move(next);
  progId_ = report.to.id;
  if (mapIdOf(walkTables_.conns.get()) != mapIdOf(skel_->connsFd()) ||
      mapIdOf(walkTables_.rnat.get()) != mapIdOf(skel_->rnatFd()) ||
      mapIdOf(walkTables_.half.get()) != mapIdOf(skel_->halfFd())) {
    retiredWalkTables_ = std::move(walkTables_);  // a walk begun before may still read them
    walkTables_ = walkTablesOf(*skel_);
  }
  if (!done) {
    report.problem =
        "every interface runs the new program, but completing the map migrations "
        "failed (" +
        done.error().toString() +
        "): the new program's migrated maps "
        "are not pinned, and the next start migrates the old pinned ones again";
  }
  report.complete = done.ok();
  report.totalMs = msSince(t0);
  spdlog::info(
      "upgraded program {} -> {} on {} interfaces in {:.1f} ms (load {:.1f} ms, switch "
      "{:.3f} ms)",
      describeProgram(report.from), describeProgram(report.to), switched, report.totalMs,
      report.loadMs, report.switchMs);
  return report;
}

}  // namespace meshpath
