// lb_harness.h — what the BPF tests and the prog_run benchmark share: a private network
// namespace with a known topology (so bpf_fib_lookup answers the same on every machine), the
// balancer loaded with private maps and set up in domain terms, BPF_PROG_RUN, and what the
// native build of the core headers predicts the program will choose.
#pragma once

#include <netinet/in.h>
#include <sched.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "abi.h"
#include "lb_skeleton.h"
#include "packet.h"

struct ring_buffer;

namespace meshpath::testing {

// The topology enterTestNetwork() builds. Nothing here exists outside the test's namespace.
//   client side: veth "mpc" 10.0.1.1/24 fd00:1::1/64; client 10.0.1.10 / fd00:1::10, and an
//                endpoint reached back through the ingress link, 10.0.1.20 / fd00:1::20
//   endpoint side: veth "mpe" 10.0.2.1/24 fd00:2::1/64 (the node's SNAT address; a pool adds
//                10.0.2.2 / fd00:2::2);
//                endpoints 10.0.2.11-12 / fd00:2::11-12 with static neighbours;
//                10.0.2.99 / fd00:2::99 on-link without a neighbour; 10.9.9.9 / fd00:9::9
//                without a route. VIPs 10.0.0.100 / fd00::100 are not local.
namespace topo {
inline constexpr char kClientIf[] = "mpc";
inline constexpr char kEndpointIf[] = "mpe";
inline constexpr char kClientIfMac[] = "02:00:00:00:01:01";
inline constexpr char kEndpointIfMac[] = "02:00:00:00:02:01";
inline constexpr char kClientMac[] = "02:00:00:00:01:10";
inline constexpr char kTxEndpointMac[] = "02:00:00:00:01:20";
inline constexpr char kEndpoint1Mac[] = "02:00:00:00:02:11";
inline constexpr char kEndpoint2Mac[] = "02:00:00:00:02:12";
inline constexpr char kRouterMac[] = "02:00:00:00:00:fe";  // whoever sent us the frame
inline constexpr char kNode4[] = "10.0.2.1";
inline constexpr char kNode6[] = "fd00:2::1";
inline constexpr char kClient4[] = "10.0.1.10";
inline constexpr char kClient6[] = "fd00:1::10";
inline constexpr char kTxEndpoint4[] = "10.0.1.20";
inline constexpr char kTxEndpoint6[] = "fd00:1::20";
inline constexpr char kEndpoint1v4[] = "10.0.2.11";
inline constexpr char kEndpoint2v4[] = "10.0.2.12";
inline constexpr char kEndpoint1v6[] = "fd00:2::11";
inline constexpr char kEndpoint2v6[] = "fd00:2::12";
inline constexpr char kNoNeigh4[] = "10.0.2.99";
inline constexpr char kNoNeigh6[] = "fd00:2::99";
inline constexpr char kNoRoute4[] = "10.9.9.9";
inline constexpr char kNoRoute6[] = "fd00:9::9";
// A second SNAT source of the node (its pool), in no interface's addresses: the program answers
// for it alone (replies to it are reverse-translated before the kernel sees them).
inline constexpr char kNodePool4[] = "10.0.2.2";
inline constexpr char kNodePool6[] = "fd00:2::2";
inline constexpr char kVip4[] = "10.0.0.100";
inline constexpr char kVip6[] = "fd00::100";
}  // namespace topo

// Moves this process into a new network namespace and builds the topology there, once per
// process (later calls return the first result). "" on success, else what failed.
std::string enterTestNetwork();
// What every BPF fixture needs before it loads a program: root, libbpf's messages through spdlog
// (installed once), and the test network. "" when all is there, else what is missing.
std::string prepareBpfTest();
int ifindexOf(const std::string& name);

struct XdpRun {
  int error = 0;  // errno of BPF_PROG_RUN itself, 0 when it ran
  uint32_t verdict = 0;
  uint32_t durationNs = 0;  // the kernel's figure, averaged over repeat
  Bytes output;
};

// BPF_PROG_RUN of progFd on frame as if received on ingressIfindex (0: the namespace's lo).
XdpRun runXdp(int progFd, const Bytes& frame, int ingressIfindex, uint32_t repeat = 1);

// A 16-byte ABI address (IPv4 in the first 4 bytes) and its mp_family.
struct AbiAddr {
  uint8_t family = 0;
  std::array<uint8_t, 16> bytes{};
};
AbiAddr abiAddr(const std::string& text);

const char* verdictName(uint32_t verdict);

// Pins the calling thread to the CPU it is on while it lives, and gives the thread its CPUs
// back after. BPF_PROG_RUN runs the program on the caller's CPU, and the
// program's per-CPU state (the flow cache, mp_rr) is that CPU's: a test that expects the second
// packet of a flow to find what the first left there must send both from the same CPU.
class CpuPin {
 public:
  CpuPin();
  ~CpuPin();
  CpuPin(const CpuPin&) = delete;
  CpuPin& operator=(const CpuPin&) = delete;

  int cpu() const { return cpu_; }

 private:
  cpu_set_t previous_{};
  int cpu_ = -1;
};

class LbHarness {
 public:
  // tcpClosedMs: the lifetime of a closed TCP connection (its port's linger) in every service
  // the harness sets; the other lifetimes are meshd's defaults (ConnTimeouts).
  explicit LbHarness(uint32_t connTableSize = 4096, uint64_t tcpClosedMs = 2000,
                     uint32_t halfTableSize = 4096);
  // Any options; pinRoot must stay empty (the harness's maps are its own).
  explicit LbHarness(const LbSkeletonOptions& options);
  // A skeleton loaded elsewhere (a pinned one: the layout migration tests).
  explicit LbHarness(std::unique_ptr<LbSkeleton> lb);

  LbSkeleton& lb() { return *lb_; }

  // The node's SNAT sources: v4 and v6 (either may be empty), then pool's (either family).
  void setNode(const std::string& v4, const std::string& v6, uint16_t portMin = 61000,
               uint16_t portMax = 65535, const std::vector<std::string>& pool = {});
  // The lifetimes (jiffies, mp_svc_tmo) of service svcId; setService writes timeouts().
  void setTimeouts(uint32_t svcId, const mp_svc_tmo& t);
  mp_svc_tmo& timeouts() { return timeouts_; }
  // The program's clock (bpf_jiffies64), and ms in it.
  uint64_t jiffies() const;
  uint64_t jiffiesOf(uint64_t ms) const { return lb_->msToJiffies(ms); }
  void setEndpoint(uint32_t id, const std::string& address, uint16_t port, uint32_t svcId,
                   bool inUse = true);
  // The endpoint leaves: its entry written all-zero, as meshd's removeEndpoint does.
  void removeEndpoint(uint32_t id);
  // Adds or replaces service svcId with a ring of ringSize slots filled round-robin from
  // endpointIds (none: every slot MP_RING_EMPTY), published through LbSkeleton::writeRing.
  // With ringSize == endpointIds.size() the ring is exactly that sequence. A MP_FWD_DNAT service
  // also gets its endpoints (set before it) in mp_ep_vip, and mp_node counts it (n_dnat), as
  // meshd's syncDnat does.
  void setService(uint32_t svcId, const std::string& vip, uint16_t port, uint8_t proto,
                  uint32_t ringSize, const std::vector<uint32_t>& endpointIds,
                  uint8_t algorithm = MP_ALG_MAGLEV, uint8_t fwdMode = MP_FWD_NAT);

  XdpRun run(const Bytes& frame, int ingressIfindex) const;

  // SYN protection: service svcId's mp_svc.flags (MP_SVC_F_SYN_*, connect retries), the node's
  // flood threshold (0: the default), the cookie key (mp_syn_secret, as meshd draws it), each
  // service's counters summed over CPUs and its auto switch (mp_syn_guard).
  void setServiceFlags(uint32_t svcId, uint16_t flags);
  void setSynFloodThreshold(uint32_t unansweredPerSecond);
  void setSynSecret(const mp_syn_secret& key);
  mp_syn_counters synStats(uint32_t svcId) const;
  mp_syn_guard synGuard(uint32_t svcId) const;

  uint64_t exceptions(uint32_t reason) const;  // summed over CPUs
  mp_counters svcStats(uint32_t svcId) const;
  mp_counters epStats(uint32_t epId) const;
  // A flow's state: established (mp_conns / mp_rnat) or half-open (mp_half / mp_hrnat).
  std::optional<mp_conn> conn(const mp_flow& flow) const;
  std::optional<mp_rnat> rnat(const mp_flow& flow) const;
  std::optional<mp_conn> half(const mp_flow& flow) const;
  std::optional<mp_rnat> hrnat(const mp_flow& flow) const;
  // Either table: established first.
  std::optional<mp_conn> anyConn(const mp_flow& flow) const;
  std::optional<mp_rnat> anyRnat(const mp_flow& flow) const;
  // Writes (BPF_ANY) or deletes an entry of a table, as meshd or the LRU would; the table by
  // its map fd (lb().connsFd(), halfFd(), rnatFd(), hrnatFd()). Deleting a missing entry is no
  // error.
  void put(int tableFd, const mp_flow& key, const mp_conn& value);
  void put(int tableFd, const mp_flow& key, const mp_rnat& value);
  void erase(int tableFd, const mp_flow& key);
  // Ends flow's lifetime now (its expires := the program's jiffies), in whichever table holds
  // it (established first); false when neither does.
  bool expire(const mp_flow& flow);
  // The reverse key (endpoint -> node:snat_port) of a connection entry of client tuple flow,
  // from its endpoint as mp_endpoints holds it and its source in the node's pool.
  mp_flow replyKey(const mp_flow& flow, const mp_conn& c) const;

  // The cheap drop path's state (mp_snat_full): per CPU, the jiffies until which new flows
  // toward epId are dropped without probing; and clearing it on every CPU.
  std::vector<uint64_t> snatBackoff(uint32_t epId) const;
  void clearSnatBackoff(uint32_t epId);

  // Passive health: mp_ep_health entries (read, written whole: tests only, nothing races
  // them), the events the program queued in mp_events since the last call, and each CPU's
  // round-robin counter of a service (mp_rr).
  mp_ep_health health(uint32_t epId) const;
  void setHealth(uint32_t epId, const mp_ep_health& health);
  // Sets or clears MP_EPH_F_DOWN (the mark the datapath sets, meshd clears), nothing else.
  void setDown(uint32_t epId, bool down);
  std::vector<mp_health_event> takeEvents();
  std::vector<uint32_t> rrCounters(uint32_t svcId) const;
  // How many entries a table keyed by mp_flow holds (mp_conns, mp_rnat, mp_half, mp_hrnat).
  static size_t entriesOf(int fd);
  // A map of the program's by name (for those LbSkeleton has no accessor of its own for).
  int mapFd(const std::string& name) const;

  // What the program should pick for a new flow, by the native build of the same headers.
  struct Choice {
    mp_flow flow{};  // the frame's 5-tuple
    uint32_t epId = MP_RING_EMPTY;
    uint16_t snatPort = 0;  // network order; first probe
    uint32_t snatAddr = 0;  // first probe's index in the node's pool of the flow's family
  };
  Choice predict(const Bytes& frame) const;
  // The node's idx-th SNAT source of family (as setNode wrote it), as text.
  std::string nodeAddr(uint8_t family, uint32_t idx) const;

 private:
  struct Service {
    mp_svc_key key{};
    mp_svc svc{};
    std::vector<uint32_t> slots;
    UniqueFd ring;
  };
  mp_counters sumCounters(int fd, uint32_t key) const;
  void writeNode();

  std::unique_ptr<LbSkeleton> lb_;
  mutable std::map<std::string, UniqueFd> mapFds_;
  std::shared_ptr<ring_buffer> events_;
  std::vector<mp_health_event> pending_;
  mp_node_cfg node_{};
  mp_svc_tmo timeouts_{};
  std::map<uint32_t, Service> services_;
};

// The services most fixtures share: TCP and UDP, IPv4 and IPv6, each with two endpoints (ids
// 1-8) on the topology's two endpoint hosts, rings of 13 slots.
namespace fixture {
inline constexpr uint32_t kSvcTcp4 = 0, kSvcUdp4 = 1, kSvcTcp6 = 2, kSvcUdp6 = 3;
inline constexpr uint16_t kTcpPort = 80, kUdpPort = 53;

struct Endpoint {
  uint32_t id;
  const char* addr;
  uint16_t port;
  const char* mac;  // the endpoint host's MAC, as the fib answers it
  uint32_t svc;
};

inline constexpr Endpoint kEndpoints[] = {
    {1, topo::kEndpoint1v4, 8080, topo::kEndpoint1Mac, kSvcTcp4},
    {2, topo::kEndpoint2v4, 8080, topo::kEndpoint2Mac, kSvcTcp4},
    {3, topo::kEndpoint1v4, 5353, topo::kEndpoint1Mac, kSvcUdp4},
    {4, topo::kEndpoint2v4, 5353, topo::kEndpoint2Mac, kSvcUdp4},
    {5, topo::kEndpoint1v6, 8080, topo::kEndpoint1Mac, kSvcTcp6},
    {6, topo::kEndpoint2v6, 8080, topo::kEndpoint2Mac, kSvcTcp6},
    {7, topo::kEndpoint1v6, 5353, topo::kEndpoint1Mac, kSvcUdp6},
    {8, topo::kEndpoint2v6, 5353, topo::kEndpoint2Mac, kSvcUdp6},
};

// Sets every endpoint and service above in h.
inline void install(LbHarness& h) {
  for (const Endpoint& e : kEndpoints) h.setEndpoint(e.id, e.addr, e.port, e.svc);
  h.setService(kSvcTcp4, topo::kVip4, kTcpPort, IPPROTO_TCP, 13, {1, 2});
  h.setService(kSvcUdp4, topo::kVip4, kUdpPort, IPPROTO_UDP, 13, {3, 4});
  h.setService(kSvcTcp6, topo::kVip6, kTcpPort, IPPROTO_TCP, 13, {5, 6});
  h.setService(kSvcUdp6, topo::kVip6, kUdpPort, IPPROTO_UDP, 13, {7, 8});
}

// Endpoint id of kEndpoints (throws for another id).
inline const Endpoint& endpoint(uint32_t id) {
  for (const Endpoint& e : kEndpoints) {
    if (e.id == id) return e;
  }
  throw std::out_of_range("no fixture endpoint " + std::to_string(id));
}

// A client's flow to a service: its packets both ways are built from it.
struct Flow {
  std::string client, vip, node;
  uint16_t cport, vport;
  uint8_t proto;
};

inline Flow tcp4(uint16_t cport, const std::string& vip = topo::kVip4) {
  return {topo::kClient4, vip, topo::kNode4, cport, kTcpPort, IPPROTO_TCP};
}
inline Flow udp4(uint16_t cport) {
  return {topo::kClient4, topo::kVip4, topo::kNode4, cport, kUdpPort, IPPROTO_UDP};
}
inline Flow tcp6(uint16_t cport) {
  return {topo::kClient6, topo::kVip6, topo::kNode6, cport, kTcpPort, IPPROTO_TCP};
}
inline Flow udp6(uint16_t cport) {
  return {topo::kClient6, topo::kVip6, topo::kNode6, cport, kUdpPort, IPPROTO_UDP};
}

// A TCP packet of the flow carries flags and no payload; a UDP one a short query.
inline Shape shapeOf(const Flow& f, uint8_t flags) {
  return f.proto == IPPROTO_TCP ? Shape{.tcpFlags = flags}
                                : Shape{.proto = IPPROTO_UDP, .payload = "query"};
}

// The client's packet of the flow as the node receives it from its router.
inline Bytes fromClient(const Flow& f, uint8_t flags) {
  return frame(shapeOf(f, flags), topo::kRouterMac, topo::kClientIfMac, f.client, f.vip, f.cport,
               f.vport);
}
}  // namespace fixture

}  // namespace meshpath::testing
