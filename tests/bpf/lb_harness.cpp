#include "lb_harness.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "libbpf_logger.h"

// The core headers, natively: predict() runs the same parse and hash code as the program.
#include "hash.h"
#include "maglev.h"
#include "nat.h"
#include "parse.h"

namespace meshpath::testing {
namespace {

std::string writeSysctl(const std::string& path, const std::string& value) {
  std::ofstream file(path);
  file << value;
  file.close();
  return file ? "" : "cannot write " + path;
}

std::string ipCommand() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return "ip";
}

std::string buildTopology() {
  if (::unshare(CLONE_NEWNET) != 0) {
    return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno) + " (root needed)";
  }
  // bpf_fib_lookup answers FWD_DISABLED unless the ingress device forwards.
  for (const auto& [path, value] :
       {std::pair<std::string, std::string>{"/proc/sys/net/ipv4/ip_forward", "1"},
        {"/proc/sys/net/ipv6/conf/all/forwarding", "1"},
        {"/proc/sys/net/ipv6/conf/default/forwarding", "1"}}) {
    if (std::string err = writeSysctl(path, value); !err.empty()) return err;
  }
  using namespace topo;
  const auto neighbour = [](const char* addr, const char* mac, const char* dev) {
    return std::string("neigh replace ") + addr + " lladdr " + mac + " dev " + dev +
           " nud permanent";
  };
  const std::vector<std::string> commands = {
      "link set lo up",
      "link add mpc type veth peer name mpc-p",
      "link add mpe type veth peer name mpe-p",
      std::string("link set mpc address ") + kClientIfMac,
      std::string("link set mpe address ") + kEndpointIfMac,
      "link set mpc up",
      "link set mpc-p up",
      "link set mpe up",
      "link set mpe-p up",
      "addr add 10.0.1.1/24 dev mpc",
      "addr add fd00:1::1/64 dev mpc nodad",
      "addr add 10.0.2.1/24 dev mpe",
      "addr add fd00:2::1/64 dev mpe nodad",
      neighbour(kClient4, kClientMac, kClientIf),
      neighbour(kClient6, kClientMac, kClientIf),
      neighbour(kTxEndpoint4, kTxEndpointMac, kClientIf),
      neighbour(kTxEndpoint6, kTxEndpointMac, kClientIf),
      neighbour(kEndpoint1v4, kEndpoint1Mac, kEndpointIf),
      neighbour(kEndpoint2v4, kEndpoint2Mac, kEndpointIf),
      neighbour(kEndpoint1v6, kEndpoint1Mac, kEndpointIf),
      neighbour(kEndpoint2v6, kEndpoint2Mac, kEndpointIf),
  };
  std::string batch;
  for (const std::string& command : commands) batch += command + "\n";
  FILE* ip = ::popen((ipCommand() + " -batch - 2>&1").c_str(), "w");
  if (ip == nullptr) return "cannot run ip";
  std::fputs(batch.c_str(), ip);
  const int status = ::pclose(ip);
  if (status != 0) return "ip -batch failed with status " + std::to_string(status);
  return "";
}

}  // namespace

std::string enterTestNetwork() {
  static const std::string result = buildTopology();
  return result;
}

std::string prepareBpfTest() {
  if (::geteuid() != 0) return "BPF tests load programs and create namespaces: run as root";
  static const bool logger = (installLibbpfLogger(), true);
  (void)logger;
  if (std::string err = enterTestNetwork(); !err.empty()) return "test network namespace: " + err;
  return "";
}

int ifindexOf(const std::string& name) { return static_cast<int>(if_nametoindex(name.c_str())); }

XdpRun runXdp(int progFd, const Bytes& frame, int ingressIfindex, uint32_t repeat) {
  XdpRun run;
  run.output.resize(frame.size() + 256);
  xdp_md ctx{};
  ctx.data_end = static_cast<uint32_t>(frame.size());
  ctx.ingress_ifindex = static_cast<uint32_t>(ingressIfindex);
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<uint32_t>(frame.size());
  opts.data_out = run.output.data();
  opts.data_size_out = static_cast<uint32_t>(run.output.size());
  if (ingressIfindex != 0) {
    opts.ctx_in = &ctx;
    opts.ctx_size_in = sizeof(ctx);
  }
  opts.repeat = repeat;
  if (bpf_prog_test_run_opts(progFd, &opts) != 0) {
    run.error = errno;
    run.output.clear();
    return run;
  }
  run.verdict = opts.retval;
  run.durationNs = opts.duration;
  run.output.resize(opts.data_size_out);
  return run;
}

AbiAddr abiAddr(const std::string& text) {
  AbiAddr a;
  if (inet_pton(AF_INET, text.c_str(), a.bytes.data()) == 1) {
    a.family = MP_AF_INET;
  } else if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) {
    a.family = MP_AF_INET6;
  } else {
    throw std::invalid_argument("bad address " + text);
  }
  return a;
}

const char* verdictName(uint32_t verdict) {
  switch (verdict) {
    case XDP_ABORTED:
      return "XDP_ABORTED";
    case XDP_DROP:
      return "XDP_DROP";
    case XDP_PASS:
      return "XDP_PASS";
    case XDP_TX:
      return "XDP_TX";
    case XDP_REDIRECT:
      return "XDP_REDIRECT";
    default:
      return "XDP_?";
  }
}

CpuPin::CpuPin() {
  if (sched_getaffinity(0, sizeof(previous_), &previous_) != 0) {
    throw std::runtime_error(std::string("sched_getaffinity: ") + std::strerror(errno));
  }
  // The one it is on: test processes running side by side keep to their own CPUs.
  cpu_ = sched_getcpu();
  if (cpu_ < 0 || !CPU_ISSET(cpu_, &previous_)) {
    cpu_ = 0;
    while (cpu_ < CPU_SETSIZE && !CPU_ISSET(cpu_, &previous_)) ++cpu_;
  }
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu_, &one);
  if (sched_setaffinity(0, sizeof(one), &one) != 0) {
    throw std::runtime_error(std::string("sched_setaffinity: ") + std::strerror(errno));
  }
}

CpuPin::~CpuPin() { sched_setaffinity(0, sizeof(previous_), &previous_); }

LbHarness::LbHarness(uint32_t connTableSize, uint64_t tcpClosedMs, uint32_t halfTableSize)
    : LbHarness(LbSkeletonOptions{
          .pinRoot = "", .connTableSize = connTableSize, .halfTableSize = halfTableSize}) {
  timeouts_.jiffies[MP_TMO_TCP_CLOSED] = lb_->msToJiffies(tcpClosedMs);
}

LbHarness::LbHarness(const LbSkeletonOptions& options)
    : LbHarness([&] {
        if (!options.pinRoot.empty()) {
          throw std::invalid_argument("the harness's maps are private");
        }
        auto lb = LbSkeleton::open(options);
        if (!lb) throw std::runtime_error(lb.error().toString());
        return std::move(*lb);
      }()) {}

LbHarness::LbHarness(std::unique_ptr<LbSkeleton> lb) : lb_(std::move(lb)) {
  // meshd's defaults (model.h ConnTimeouts).
  timeouts_.jiffies[MP_TMO_TCP_SYN] = lb_->msToJiffies(5000);
  timeouts_.jiffies[MP_TMO_TCP_EST] = lb_->msToJiffies(3ull * 3600 * 1000);
  timeouts_.jiffies[MP_TMO_TCP_FIN] = lb_->msToJiffies(60000);
  timeouts_.jiffies[MP_TMO_TCP_CLOSED] = lb_->msToJiffies(2000);
  timeouts_.jiffies[MP_TMO_UDP] = lb_->msToJiffies(30000);
  timeouts_.jiffies[MP_TMO_UDP_REPLIED] = lb_->msToJiffies(120000);
}

void LbHarness::setTimeouts(uint32_t svcId, const mp_svc_tmo& t) {
  if (bpf_map_update_elem(lb_->svcTmoFd(), &svcId, &t, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_svc_tmo: ") + std::strerror(errno));
  }
}

uint64_t LbHarness::jiffies() const {
  auto now = lb_->jiffiesNow();
  if (!now) throw std::runtime_error(now.error().toString());
  return *now;
}

void LbHarness::setNode(const std::string& v4, const std::string& v6, uint16_t portMin,
                        uint16_t portMax, const std::vector<std::string>& pool) {
  node_ = {};
  std::vector<std::string> all;
  if (!v4.empty()) all.push_back(v4);
  if (!v6.empty()) all.push_back(v6);
  all.insert(all.end(), pool.begin(), pool.end());
  for (const std::string& text : all) {
    const AbiAddr a = abiAddr(text);
    uint8_t& n = a.family == MP_AF_INET ? node_.n_addr4 : node_.n_addr6;
    auto& slots = a.family == MP_AF_INET ? node_.addr4 : node_.addr6;
    if (n < MP_SNAT_ADDRS_MAX) std::memcpy(slots[n++], a.bytes.data(), 16);
  }
  node_.snat_port_min = portMin;
  node_.snat_port_max = portMax;
  node_.n_dnat = 0;
  for (const auto& [id, s] : services_) node_.n_dnat += s.svc.fwd_mode == MP_FWD_DNAT;
  writeNode();
}

void LbHarness::writeNode() {
  const uint32_t zero = 0;
  if (bpf_map_update_elem(lb_->nodeFd(), &zero, &node_, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_node: ") + std::strerror(errno));
  }
}

void LbHarness::setEndpoint(uint32_t id, const std::string& address, uint16_t port, uint32_t svcId,
                            bool inUse) {
  const AbiAddr a = abiAddr(address);
  mp_endpoint ep{};
  std::memcpy(ep.addr, a.bytes.data(), 16);
  ep.port = htons(port);
  ep.family = a.family;
  ep.flags = inUse ? MP_EP_F_IN_USE : 0;
  ep.svc_id = svcId;
  if (bpf_map_update_elem(lb_->endpointsFd(), &id, &ep, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_endpoints: ") + std::strerror(errno));
  }
}

void LbHarness::setService(uint32_t svcId, const std::string& vip, uint16_t port, uint8_t proto,
                           uint32_t ringSize, const std::vector<uint32_t>& endpointIds,
                           uint8_t algorithm, uint8_t fwdMode) {
  Service& s = services_[svcId];
  const AbiAddr a = abiAddr(vip);
  s.key = {};
  std::memcpy(s.key.addr, a.bytes.data(), 16);
  s.key.port = htons(port);
  s.key.proto = proto;
  s.key.family = a.family;
  const uint32_t half = s.ring.valid() && s.svc.ring_size == ringSize ? 1 - s.svc.active_half : 0;
  if (!s.ring.valid() || s.svc.ring_size != ringSize) {
    auto ring = LbSkeleton::createRingMap(ringSize);
    if (!ring) throw std::runtime_error(ring.error().toString());
    s.ring = std::move(*ring);
  }
  s.svc = {};
  s.svc.id = svcId;
  s.svc.ring_size = ringSize;
  s.svc.algorithm = algorithm;
  s.svc.fwd_mode = fwdMode;
  s.slots.assign(ringSize, MP_RING_EMPTY);
  for (uint32_t i = 0; i < ringSize && !endpointIds.empty(); ++i) {
    s.slots[i] = endpointIds[i % endpointIds.size()];
  }
  setTimeouts(svcId, timeouts_);
  if (fwdMode == MP_FWD_DNAT) {
    for (const uint32_t id : endpointIds) {
      mp_endpoint ep{};
      if (bpf_map_lookup_elem(lb_->endpointsFd(), &id, &ep) != 0) {
        throw std::runtime_error(std::string("lookup mp_endpoints: ") + std::strerror(errno));
      }
      mp_ep_key key{};
      std::memcpy(key.addr, ep.addr, 16);
      key.port = ep.port;
      key.proto = proto;
      key.family = ep.family;
      mp_ep_vip value{};
      std::memcpy(value.vip, a.bytes.data(), 16);
      value.vip_port = htons(port);
      value.ep_id = id;
      if (bpf_map_update_elem(lb_->epVipFd(), &key, &value, BPF_ANY) != 0) {
        throw std::runtime_error(std::string("update mp_ep_vip: ") + std::strerror(errno));
      }
    }
  }
  if (auto status = lb_->writeRing(s.key, s.svc, s.ring.get(), half, s.slots); !status) {
    throw std::runtime_error(status.error().toString());
  }
  s.svc.active_half = half;
  const uint16_t dnat = node_.n_dnat;
  node_.n_dnat = 0;
  for (const auto& [sid, other] : services_) node_.n_dnat += other.svc.fwd_mode == MP_FWD_DNAT;
  if (node_.n_dnat != dnat) writeNode();
}

void LbHarness::setServiceFlags(uint32_t svcId, uint16_t flags) {
  Service& s = services_.at(svcId);
  s.svc.flags = flags;
  if (bpf_map_update_elem(lb_->servicesFd(), &s.key, &s.svc, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_services: ") + std::strerror(errno));
  }
}

void LbHarness::setSynFloodThreshold(uint32_t unansweredPerSecond) {
  node_.syn_flood_threshold = unansweredPerSecond;
  writeNode();
}

void LbHarness::setSynSecret(const mp_syn_secret& key) {
  const uint32_t zero = 0;
  if (bpf_map_update_elem(mapFd("mp_syn_secret"), &zero, &key, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_syn_secret: ") + std::strerror(errno));
  }
}

mp_syn_counters LbHarness::synStats(uint32_t svcId) const {
  const int n = libbpf_num_possible_cpus();
  std::vector<mp_syn_counters> per(static_cast<size_t>(n));
  mp_syn_counters sum{};
  if (bpf_map_lookup_elem(mapFd("mp_syn_stats"), &svcId, per.data()) != 0) {
    throw std::runtime_error(std::string("lookup mp_syn_stats: ") + std::strerror(errno));
  }
  for (const auto& c : per) {
    sum.cookies_sent += c.cookies_sent;
    sum.acks_valid += c.acks_valid;
    sum.acks_invalid += c.acks_invalid;
    sum.retries += c.retries;
    sum.retries_failed += c.retries_failed;
  }
  return sum;
}

mp_syn_guard LbHarness::synGuard(uint32_t svcId) const {
  mp_syn_guard g{};
  if (bpf_map_lookup_elem(mapFd("mp_syn_guard"), &svcId, &g) != 0) {
    throw std::runtime_error(std::string("lookup mp_syn_guard: ") + std::strerror(errno));
  }
  return g;
}

void LbHarness::removeEndpoint(uint32_t id) {
  const mp_endpoint empty{};
  if (bpf_map_update_elem(lb_->endpointsFd(), &id, &empty, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("clear mp_endpoints: ") + std::strerror(errno));
  }
}

XdpRun LbHarness::run(const Bytes& frame, int ingressIfindex) const {
  return runXdp(lb_->programFd(), frame, ingressIfindex);
}

uint64_t LbHarness::exceptions(uint32_t reason) const {
  std::vector<uint64_t> values(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (bpf_map_lookup_elem(lb_->excFd(), &reason, values.data()) != 0) return 0;
  uint64_t sum = 0;
  for (uint64_t v : values) sum += v;
  return sum;
}

mp_counters LbHarness::sumCounters(int fd, uint32_t key) const {
  std::vector<mp_counters> values(static_cast<size_t>(libbpf_num_possible_cpus()));
  mp_counters sum{};
  if (bpf_map_lookup_elem(fd, &key, values.data()) != 0) return sum;
  for (const mp_counters& v : values) {
    sum.packets += v.packets;
    sum.bytes += v.bytes;
    sum.new_conns += v.new_conns;
  }
  return sum;
}

mp_counters LbHarness::svcStats(uint32_t svcId) const {
  return sumCounters(lb_->svcStatsFd(), svcId);
}
mp_counters LbHarness::epStats(uint32_t epId) const { return sumCounters(lb_->epStatsFd(), epId); }

std::optional<mp_conn> LbHarness::conn(const mp_flow& flow) const {
  mp_conn value{};
  if (bpf_map_lookup_elem(lb_->connsFd(), &flow, &value) != 0) return std::nullopt;
  return value;
}

std::optional<mp_rnat> LbHarness::rnat(const mp_flow& flow) const {
  mp_rnat value{};
  if (bpf_map_lookup_elem(lb_->rnatFd(), &flow, &value) != 0) return std::nullopt;
  return value;
}

std::optional<mp_conn> LbHarness::half(const mp_flow& flow) const {
  mp_conn value{};
  if (bpf_map_lookup_elem(lb_->halfFd(), &flow, &value) != 0) return std::nullopt;
  return value;
}

std::optional<mp_rnat> LbHarness::hrnat(const mp_flow& flow) const {
  mp_rnat value{};
  if (bpf_map_lookup_elem(lb_->hrnatFd(), &flow, &value) != 0) return std::nullopt;
  return value;
}

std::optional<mp_conn> LbHarness::anyConn(const mp_flow& flow) const {
  if (auto c = conn(flow)) return c;
  return half(flow);
}

std::optional<mp_rnat> LbHarness::anyRnat(const mp_flow& flow) const {
  if (auto r = rnat(flow)) return r;
  return hrnat(flow);
}

void LbHarness::put(int tableFd, const mp_flow& key, const mp_conn& value) {
  if (bpf_map_update_elem(tableFd, &key, &value, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("write a connection entry: ") + std::strerror(errno));
  }
}

void LbHarness::put(int tableFd, const mp_flow& key, const mp_rnat& value) {
  if (bpf_map_update_elem(tableFd, &key, &value, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("write a reverse entry: ") + std::strerror(errno));
  }
}

void LbHarness::erase(int tableFd, const mp_flow& key) {
  if (bpf_map_delete_elem(tableFd, &key) != 0 && errno != ENOENT) {
    throw std::runtime_error(std::string("delete an entry: ") + std::strerror(errno));
  }
}

bool LbHarness::expire(const mp_flow& flow) {
  for (const int fd : {lb_->connsFd(), lb_->halfFd()}) {
    mp_conn c{};
    if (bpf_map_lookup_elem(fd, &flow, &c) != 0) continue;
    c.expires = jiffies();
    put(fd, flow, c);
    return true;
  }
  return false;
}

mp_flow LbHarness::replyKey(const mp_flow& flow, const mp_conn& c) const {
  mp_endpoint ep{};
  if (bpf_map_lookup_elem(lb_->endpointsFd(), &c.ep_id, &ep) != 0) {
    throw std::runtime_error(std::string("lookup mp_endpoints: ") + std::strerror(errno));
  }
  mp_flow key{};
  std::memcpy(key.src, ep.addr, 16);
  const auto& pool = flow.family == MP_AF_INET ? node_.addr4 : node_.addr6;
  std::memcpy(key.dst, pool[c.snat_addr % MP_SNAT_ADDRS_MAX], 16);
  key.sport = ep.port;
  key.dport = c.snat_port;
  key.proto = flow.proto;
  key.family = flow.family;
  return key;
}

std::vector<uint64_t> LbHarness::snatBackoff(uint32_t epId) const {
  std::vector<uint64_t> values(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (bpf_map_lookup_elem(mapFd("mp_snat_full"), &epId, values.data()) != 0) {
    throw std::runtime_error(std::string("lookup mp_snat_full: ") + std::strerror(errno));
  }
  return values;
}

void LbHarness::clearSnatBackoff(uint32_t epId) {
  const std::vector<uint64_t> zeros(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (bpf_map_update_elem(mapFd("mp_snat_full"), &epId, zeros.data(), BPF_ANY) != 0) {
    throw std::runtime_error(std::string("clear mp_snat_full: ") + std::strerror(errno));
  }
}

std::string LbHarness::nodeAddr(uint8_t family, uint32_t idx) const {
  const auto& pool = family == MP_AF_INET ? node_.addr4 : node_.addr6;
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == MP_AF_INET ? AF_INET : AF_INET6, pool[idx % MP_SNAT_ADDRS_MAX], text,
            sizeof(text));
  return text;
}

size_t LbHarness::entriesOf(int fd) {
  size_t n = 0;
  mp_flow key{}, next{};
  const mp_flow* at = nullptr;
  while (bpf_map_get_next_key(fd, at, &next) == 0) {
    ++n;
    key = next;
    at = &key;
  }
  return n;
}

int LbHarness::mapFd(const std::string& name) const {
  if (auto it = mapFds_.find(name); it != mapFds_.end()) return it->second.get();
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(lb_->programFd(), &info, &len) != 0) {
    throw std::runtime_error(std::string("program info: ") + std::strerror(errno));
  }
  std::vector<uint32_t> ids(info.nr_map_ids);
  const uint32_t count = info.nr_map_ids;
  info = {};
  info.nr_map_ids = count;
  info.map_ids = reinterpret_cast<uint64_t>(ids.data());
  len = sizeof(info);
  if (bpf_obj_get_info_by_fd(lb_->programFd(), &info, &len) != 0) {
    throw std::runtime_error(std::string("program map ids: ") + std::strerror(errno));
  }
  for (uint32_t id : ids) {
    UniqueFd fd(bpf_map_get_fd_by_id(id));
    bpf_map_info mapInfo{};
    uint32_t mapLen = sizeof(mapInfo);
    if (!fd.valid() || bpf_obj_get_info_by_fd(fd.get(), &mapInfo, &mapLen) != 0) continue;
    if (name == mapInfo.name) return (mapFds_[name] = std::move(fd)).get();
  }
  throw std::runtime_error("the program uses no map named " + name);
}

mp_ep_health LbHarness::health(uint32_t epId) const {
  mp_ep_health value{};
  if (bpf_map_lookup_elem(mapFd("mp_ep_health"), &epId, &value) != 0) {
    throw std::runtime_error(std::string("lookup mp_ep_health: ") + std::strerror(errno));
  }
  return value;
}

void LbHarness::setHealth(uint32_t epId, const mp_ep_health& health) {
  if (bpf_map_update_elem(mapFd("mp_ep_health"), &epId, &health, BPF_ANY) != 0) {
    throw std::runtime_error(std::string("update mp_ep_health: ") + std::strerror(errno));
  }
}

void LbHarness::setDown(uint32_t epId, bool down) {
  mp_ep_health h = health(epId);
  h.flags = down ? (h.flags | MP_EPH_F_DOWN) : (h.flags & ~MP_EPH_F_DOWN);
  setHealth(epId, h);
}

std::vector<mp_health_event> LbHarness::takeEvents() {
  if (!events_) {
    const auto collect = [](void* ctx, void* data, size_t size) -> int {
      if (size != sizeof(mp_health_event)) return -EINVAL;
      mp_health_event ev{};
      std::memcpy(&ev, data, sizeof(ev));
      static_cast<std::vector<mp_health_event>*>(ctx)->push_back(ev);
      return 0;
    };
    ring_buffer* rb = ring_buffer__new(mapFd("mp_events"), collect, &pending_, nullptr);
    if (rb == nullptr) {
      throw std::runtime_error(std::string("ring_buffer__new: ") + std::strerror(errno));
    }
    events_.reset(rb, ring_buffer__free);
  }
  if (ring_buffer__consume(events_.get()) < 0) {
    throw std::runtime_error(std::string("ring_buffer__consume: ") + std::strerror(errno));
  }
  return std::exchange(pending_, {});
}

std::vector<uint32_t> LbHarness::rrCounters(uint32_t svcId) const {
  // A per-CPU lookup gives each CPU's value in 8 bytes (the kernel rounds value_size up to 8):
  // a u32 is the first 4 of its CPU's 8.
  std::vector<uint64_t> slots(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (bpf_map_lookup_elem(mapFd("mp_rr"), &svcId, slots.data()) != 0) {
    throw std::runtime_error(std::string("lookup mp_rr: ") + std::strerror(errno));
  }
  std::vector<uint32_t> values(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) std::memcpy(&values[i], &slots[i], sizeof(uint32_t));
  return values;
}

LbHarness::Choice LbHarness::predict(const Bytes& frame) const {
  Choice choice;
  Bytes copy = frame;
  mp_cursor cursor{copy.data(), copy.data() + copy.size()};
  mp_pkt pkt{};
  if (mp_parse(&cursor, &pkt) != MP_OK) return choice;
  choice.flow = pkt.flow;
  for (const auto& [id, s] : services_) {
    if (std::memcmp(s.key.addr, pkt.flow.dst, 16) != 0 || s.key.port != pkt.flow.dport ||
        s.key.proto != pkt.flow.proto || s.key.family != pkt.flow.family) {
      continue;
    }
    const uint32_t index =
        mp_ring_index(mp_flow_hash(&pkt.flow), s.svc.ring_size, s.svc.active_half);
    if (index == MP_RING_EMPTY) return choice;
    choice.epId = s.slots[index - s.svc.active_half * s.svc.ring_size];
    const uint32_t nAddrs = pkt.flow.family == MP_AF_INET ? node_.n_addr4 : node_.n_addr6;
    choice.snatPort = mp_snat_candidate(mp_snat_hash(&pkt.flow), 0, node_.snat_port_min,
                                        node_.snat_port_max, nAddrs, &choice.snatAddr);
  }
  return choice;
}

}  // namespace meshpath::testing
