// model.h — the desired state of a meshpath node as users write it (YAML, REST, later etcd):
// the node's own settings, services and their endpoints. Plain values; validation lives in
// config.h, translation into maps in the dataplane.
#pragma once

#include <netinet/in.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace meshpath {

// An IPv4 or IPv6 address. IPv4 sits in the first 4 bytes of bytes_ (the ABI's layout).
class IpAddress {
 public:
  IpAddress() = default;
  // Parses "10.0.0.1" or "fd00::1"; std::nullopt for anything else.
  static std::optional<IpAddress> parse(const std::string& text);
  static IpAddress v4(const in_addr& a);
  static IpAddress v6(const in6_addr& a);

  bool isV4() const { return family_ == 4; }
  bool isV6() const { return family_ == 6; }
  int family() const { return family_; }  // 4 or 6 (mp_family), 0 when unset
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  std::string toString() const;

  bool operator==(const IpAddress&) const = default;
  auto operator<=>(const IpAddress&) const = default;

 private:
  int family_ = 0;
  std::array<uint8_t, 16> bytes_{};
};

enum class Protocol : uint8_t { kTcp = IPPROTO_TCP, kUdp = IPPROTO_UDP };
// How a new flow picks its endpoint; values are bpf/abi.h's enum mp_algorithm, names its
// mp_algorithm_names.
enum class Algorithm : uint8_t {
  kMaglev = 0,
  kRandom = 1,
  kRoundRobin = 2,
  kLeastConn = 3,
  kLeastLatency = 4,  // TCP only: it compares SYN -> SYN-ACK times
};
// How packets reach an endpoint (values: bpf/abi.h enum mp_fwd_mode). nat: full NAT (DNAT + SNAT
// to the node's pool; works with any endpoint; capacity = pool addresses x ports per endpoint).
// dnat: source-preserving (DNAT only, IPVS's NAT mode): the endpoint sees the client's address
// and must route its replies through the node; no SNAT port, no capacity limit but the table's.
enum class ForwardingMode : uint8_t { kNat = 0, kDnat = 2 };

std::string toString(Protocol p);        // "tcp" / "udp"
std::string toString(Algorithm a);  // "maglev", "random", "round-robin", "least-conn", ...
std::string toString(ForwardingMode f);  // "nat" / "dnat"
std::optional<Protocol> parseProtocol(const std::string& s);
std::optional<Algorithm> parseAlgorithm(const std::string& s);
inline constexpr const char* kAlgorithmNames =
    "maglev, random, round-robin, least-conn, least-latency";
std::optional<ForwardingMode> parseForwardingMode(const std::string& s);

inline constexpr uint32_t kMaxWeight = 10000;

struct EndpointSpec {
  IpAddress address;
  uint16_t port = 0;
  uint32_t weight = 1;      // 0 = in the service, but no new connections
  std::string key() const;  // "10.0.2.11:8080" or "[fd00::11]:8080"
  bool operator==(const EndpointSpec&) const = default;
};

// Active health checks of a service's endpoints (docs/config.md, "health"). Times in
// milliseconds. The defaults are HAProxy's: every 2 s, 1 s to answer, 2 passes to come back,
// 3 failures to go.
enum class HealthCheckType : uint8_t { kNone = 0, kTcp, kHttp, kUdp };
std::string toString(HealthCheckType t);  // "none" / "tcp" / "http" / "udp"
std::optional<HealthCheckType> parseHealthCheckType(const std::string& s);

// With meshd --store, what the other nodes' verdicts do here (docs/etcd.md, "Health across
// nodes"). majority: an endpoint that more than half of the live nodes see failing leaves this
// node's rings too, whatever its own probes say; local: only this node's own verdicts count.
// Either way a node takes an endpoint its own checks fail out of its own rings.
enum class MeshQuorum : uint8_t { kMajority = 0, kLocal = 1 };
std::string toString(MeshQuorum q);  // "majority" / "local"
std::optional<MeshQuorum> parseMeshQuorum(const std::string& s);

struct HealthCheckSpec {
  HealthCheckType type = HealthCheckType::kNone;
  uint32_t intervalMs = 2000;
  uint32_t timeoutMs = 1000;
  uint32_t rise = 2;      // consecutive passes that bring an endpoint back
  uint32_t fall = 3;      // consecutive failures that take it out
  uint32_t jitterMs = 0;  // each probe starts up to this much later than its slot
  std::string httpPath = "/";
  std::string httpHost;  // empty: the endpoint's address
  uint16_t httpStatusMin = 200;
  uint16_t httpStatusMax = 399;
  std::string udpSend;                  // the request datagram
  std::string udpExpect;                // the reply must start with this; empty: any reply passes
  uint32_t ejectionTimeMs = 2000;       // first ejection; doubles with each repeated one
  uint32_t maxEjectionTimeMs = 300000;  // ... up to this
  uint32_t maxEjectedPercent = 50;      // never more of the service's endpoints out at once
  uint32_t panicThresholdPercent = 50;  // fewer healthy than this: spread over all (panic)
  // Consecutive passive failures (seen by the datapath on real traffic) that make the datapath
  // mark an endpoint down at once; 0 = passive detection off. Works with any `type`, none too.
  uint32_t passiveFall = 3;
  MeshQuorum meshQuorum = MeshQuorum::kMajority;
  bool operator==(const HealthCheckSpec&) const = default;
};

inline constexpr uint32_t kMinHealthIntervalMs = 100;
inline constexpr uint32_t kMaxHealthTimeMs = 3600 * 1000;

// "100ms", "2s", "1500ms", "3h"; a whole number with a unit (ms, s, m, h). nullopt otherwise.
std::optional<uint64_t> parseDurationMs(const std::string& text);
// "3h" when whole hours, "2s" when whole seconds, else "1500ms".
std::string formatDurationMs(uint64_t ms);
// "2026-12-03T07:44:15.123Z": a wall-clock time in UTC with milliseconds (events, audit lines).
std::string formatUtcTime(std::chrono::system_clock::time_point t);

// How long a connection's state lives without a packet, per state (docs/config.md, "timeouts"),
// like the kernel conntrack's: a half-open flow (a SYN without its handshake completed, a UDP flow
// not yet answered) goes after seconds, an established TCP connection after hours. An expired
// connection's SNAT port is reusable at once. Milliseconds, each 1 s .. 7 days.
struct ConnTimeouts {
  uint32_t tcpSynMs = 5000;                  // SYN sent, or SYN-ACK seen, handshake not complete
  uint32_t tcpEstablishedMs = 3 * 3600 * 1000;  // beyond Linux's 2 h keepalive
  uint32_t tcpFinMs = 60 * 1000;             // one side has sent FIN (half-closed)
  uint32_t tcpClosedMs = 2000;               // FIN both ways, or RST: the final ACK's linger
  uint32_t udpMs = 30 * 1000;                // UDP flow the endpoint has not answered yet
  uint32_t udpRepliedMs = 120 * 1000;        // UDP flow the endpoint answered
  bool operator==(const ConnTimeouts&) const = default;
};
// Each lifetime's name in the config and the API, in the order they are listed: the one table
// the parsers, the validation and the views go over.
struct ConnTimeoutField {
  const char* name;
  uint32_t ConnTimeouts::*ms;
};
inline constexpr ConnTimeoutField kConnTimeoutFields[] = {
    {"tcp_syn", &ConnTimeouts::tcpSynMs}, {"tcp_established", &ConnTimeouts::tcpEstablishedMs},
    {"tcp_fin", &ConnTimeouts::tcpFinMs}, {"tcp_closed", &ConnTimeouts::tcpClosedMs},
    {"udp", &ConnTimeouts::udpMs},        {"udp_replied", &ConnTimeouts::udpRepliedMs}};
inline std::vector<std::string> connTimeoutNames() {
  std::vector<std::string> names;
  for (const ConnTimeoutField& f : kConnTimeoutFields) names.emplace_back(f.name);
  return names;
}

inline constexpr uint32_t kMinConnTimeoutMs = 1000;
inline constexpr uint32_t kMaxConnTimeoutMs = 7u * 24 * 3600 * 1000;

// What an ejection (active or passive health) does to the endpoint's established connections:
// keep them (HAProxy's and Envoy's default; new flows avoid the endpoint) or delete their state,
// so their next packet is balanced anew (and the new endpoint resets it).
enum class OnEject : uint8_t { kKeep = 0, kReset = 1 };
std::string toString(OnEject e);  // "keep" / "reset"
std::optional<OnEject> parseOnEject(const std::string& s);

// SYN protection of a TCP service (docs/config.md, "syn_protection"; bpf/abi.h MP_SVC_F_SYN_*):
// off; auto: the datapath answers SYNs with SYN cookies (and opens the endpoint connection itself,
// a SYN proxy) while unanswered SYNs reach node.syn_flood_threshold per second; always: on every
// SYN. A UDP service has none (its effective mode is off).
enum class SynProtection : uint8_t { kOff = 0, kAuto = 1, kAlways = 2 };
std::string toString(SynProtection m);  // "off" / "auto" / "always"
std::optional<SynProtection> parseSynProtection(const std::string& s);
inline constexpr const char* kSynProtectionNames = "off, auto, always";
// connect_retries: how many more endpoints a SYN-proxied connection tries when its endpoint
// refuses or does not answer (bpf/abi.h MP_CONNECT_RETRIES_DEFAULT, MP_SVC_RETRIES_MASK).
inline constexpr uint32_t kConnectRetriesDefault = 2;
inline constexpr uint32_t kMaxConnectRetries = 7;
// Unanswered SYNs per second per service that switch `auto` on (MP_SYN_FLOOD_THRESHOLD_DEFAULT).
inline constexpr uint32_t kSynFloodThresholdDefault = 1024;

struct ServiceSpec {
  std::string name;  // [a-z0-9][a-z0-9-_.]{0,62}
  IpAddress vip;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;
  Algorithm algorithm = Algorithm::kMaglev;
  ForwardingMode forwarding = ForwardingMode::kNat;
  std::vector<EndpointSpec> endpoints;
  HealthCheckSpec health;
  ConnTimeouts timeouts;
  OnEject onEject = OnEject::kKeep;
  // TCP only: a UDP service keeps the defaults (validateService refuses others).
  SynProtection synProtection = SynProtection::kAuto;
  uint32_t connectRetries = kConnectRetriesDefault;  // 0..kMaxConnectRetries
  bool operator==(const ServiceSpec&) const = default;
};

// Whether a and b list the same endpoints (address and port) in the same order, weights aside:
// then every endpoint keeps its key, its id and its health state across a change from a to b.
bool sameEndpoints(const ServiceSpec& a, const ServiceSpec& b);

// What the datapath runs: the service's mode for TCP, off for UDP.
inline SynProtection effectiveSynProtection(const ServiceSpec& s) {
  return s.protocol == Protocol::kTcp ? s.synProtection : SynProtection::kOff;
}

struct NodeSpec {
  std::vector<std::string> interfaces;  // XDP attaches to each
  std::optional<IpAddress> ipv4;        // SNAT source for IPv4 services
  std::optional<IpAddress> ipv6;        // SNAT source for IPv6 services
  // SNAT source addresses beyond ipv4/ipv6 (the pool: every address of a family is a source of
  // its own full port range; bpf/abi.h MP_SNAT_ADDRS_MAX per family, ipv4/ipv6 included). The
  // node must own them (assigned on an interface) so the endpoints' replies reach it.
  std::vector<IpAddress> snatPool;
  // 0-0: "auto", the widest range in 1024..65535 outside the kernel's ephemeral range
  // (net.ipv4.ip_local_port_range), resolved by meshd at start.
  uint16_t snatPortMin = 0;
  uint16_t snatPortMax = 0;
  uint32_t ringSize =
      0;  // Maglev M, prime, for every service; 0: "auto", sized per service (ring.h)
  uint32_t connTableSize = 1u << 20;  // established connections (never evicted)
  uint32_t halfTableSize = 1u << 18;  // half-open flows (an LRU: a flood evicts only these)
  uint32_t flowCacheSlots = 4096;  // per CPU, a power of two; 0: no flow cache (bpf/flowcache.h)
  // Unanswered SYNs per second that switch a service's `syn_protection: auto` on (>= 1).
  uint32_t synFloodThreshold = kSynFloodThresholdDefault;
  std::string xdpMode = "native";  // native | generic
  std::string apiSocket = "/run/meshpath/meshd.sock";
  std::string pinRoot = "/sys/fs/bpf/meshpath";
  std::string stateFile = "/run/meshpath/state.json";
  // Prometheus text exposition, HOST:PORT ([v6]:PORT for IPv6); "" turns it off.
  std::string metricsListen = "127.0.0.1:9464";
  // The API socket's two groups: members of apiReadGroup may use the read-only routes, members of
  // apiAdminGroup every route (root always may). The socket is owned by apiAdminGroup when it
  // exists; a group that does not exist on the host admits nobody but root.
  std::string apiAdminGroup = "meshpath";
  std::string apiReadGroup = "meshpath-read";
  // One line per accepted change (who, what); "" logs the audit lines only to meshd's log.
  std::string auditLog = "/var/log/meshpath/audit.log";
  bool operator==(const NodeSpec&) const = default;
};

struct DesiredState {
  NodeSpec node;
  std::vector<ServiceSpec> services;
  bool operator==(const DesiredState&) const = default;
};

// A change of some services, the others left as they are: what the control plane hands on when
// it knows what changed (the store's watch, an API call on one service), so that a change costs
// the services it names and not every service of the node.
struct ServiceChanges {
  std::vector<ServiceSpec> put;      // added, or replacing the service of the same name
  std::vector<std::string> removed;  // names of services that go
  bool empty() const { return put.empty() && removed.empty(); }
};

// What a change did, by service name.
struct ApplyReport {
  std::vector<std::string> added;
  std::vector<std::string> removed;
  std::vector<std::string> changed;  // put with a spec that differs from the one it replaced
};

// Makes `changes` in `services`: a service put replaces the one of its name where it stands, a
// new one is appended, removed names go (names not there are ignored).
ApplyReport applyChanges(std::vector<ServiceSpec>& services, const ServiceChanges& changes);

}  // namespace meshpath
