// config_test — the YAML config: a full good config, a table of bad ones (each refused with a
// message naming the field and the value), and the validation the REST API shares.
#include "config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "abi.h"
#include "snat.h"

namespace meshpath {
namespace {

const char* const kGoodConfig = R"(node:
  interfaces: [veth-c, veth-e]
  ipv4: 10.0.2.1
  ipv6: fd00:2::1
  snat_ports: 61000-65535
  ring_size: 65537
  conn_table_size: 1048576
  xdp_mode: native
  api_socket: /run/meshpath/meshd.sock
  pin_root: /sys/fs/bpf/meshpath
  state_file: /run/meshpath/state.json
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    protocol: tcp
    algorithm: maglev
    forwarding: nat
    endpoints:
      - {address: 10.0.2.11, port: 8080, weight: 1}
      - {address: 10.0.2.12, port: 8080, weight: 3}
  - name: dns
    vip: fd00::53
    port: 53
    protocol: udp
    endpoints:
      - {address: fd00:2::11, port: 5353}
)";

// kGoodConfig with one piece of text replaced (the piece must occur).
std::string goodWith(const std::string& from, const std::string& to) {
  std::string text = kGoodConfig;
  const size_t at = text.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "test setup: " << from << " not in the config";
  } else {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::string refusal(const std::string& yaml) {
  try {
    parseConfigYaml(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(Config, GoodConfigParsesFully) {
  const DesiredState state = parseConfigYaml(kGoodConfig);
  const NodeSpec& node = state.node;
  EXPECT_EQ(node.interfaces, (std::vector<std::string>{"veth-c", "veth-e"}));
  EXPECT_EQ(node.ipv4, IpAddress::parse("10.0.2.1"));
  EXPECT_EQ(node.ipv6, IpAddress::parse("fd00:2::1"));
  EXPECT_EQ(node.snatPortMin, 61000);
  EXPECT_EQ(node.snatPortMax, 65535);
  EXPECT_EQ(node.ringSize, 65537u);
  EXPECT_EQ(node.connTableSize, 1048576u);
  EXPECT_EQ(node.xdpMode, "native");
  EXPECT_EQ(node.apiSocket, "/run/meshpath/meshd.sock");
  EXPECT_EQ(node.pinRoot, "/sys/fs/bpf/meshpath");
  EXPECT_EQ(node.stateFile, "/run/meshpath/state.json");

  ASSERT_EQ(state.services.size(), 2u);
  const ServiceSpec& web = state.services[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.vip, IpAddress::parse("10.0.0.100"));
  EXPECT_EQ(web.port, 80);
  EXPECT_EQ(web.protocol, Protocol::kTcp);
  EXPECT_EQ(web.algorithm, Algorithm::kMaglev);
  EXPECT_EQ(web.forwarding, ForwardingMode::kNat);
  ASSERT_EQ(web.endpoints.size(), 2u);
  EXPECT_EQ(web.endpoints[0].key(), "10.0.2.11:8080");
  EXPECT_EQ(web.endpoints[0].weight, 1u);
  EXPECT_EQ(web.endpoints[1].key(), "10.0.2.12:8080");
  EXPECT_EQ(web.endpoints[1].weight, 3u);

  const ServiceSpec& dns = state.services[1];
  EXPECT_EQ(dns.protocol, Protocol::kUdp);
  EXPECT_EQ(dns.algorithm, Algorithm::kMaglev);     // default
  EXPECT_EQ(dns.forwarding, ForwardingMode::kNat);  // default
  ASSERT_EQ(dns.endpoints.size(), 1u);
  EXPECT_EQ(dns.endpoints[0].key(), "[fd00:2::11]:5353");
  EXPECT_EQ(dns.endpoints[0].weight, 1u);  // default
}

TEST(Config, MinimalConfigTakesDefaults) {
  const DesiredState state = parseConfigYaml("node:\n  interfaces: [eth0]\n");
  const NodeSpec defaults;
  EXPECT_EQ(state.node.interfaces, std::vector<std::string>{"eth0"});
  EXPECT_FALSE(state.node.ipv4);
  EXPECT_EQ(state.node.ringSize, defaults.ringSize);
  EXPECT_EQ(state.node.ringSize, 0u) << "auto: each service's ring sized to its endpoints";
  EXPECT_EQ(parseConfigYaml("node:\n  interfaces: [eth0]\n  ring_size: auto\n").node, state.node);
  EXPECT_EQ(state.node.flowCacheSlots, MP_FLOW_CACHE_SLOTS_DEFAULT);
  // A power of two sizes the flow cache; 0 turns it off.
  for (uint32_t slots : {0u, 2u, 16384u, MP_FLOW_CACHE_SLOTS_MAX}) {
    const std::string yaml =
        "node:\n  interfaces: [eth0]\n  flow_cache_slots: " + std::to_string(slots) + "\n";
    EXPECT_EQ(parseConfigYaml(yaml).node.flowCacheSlots, slots);
  }
  // snat_ports left out is "auto" (0-0): meshd picks the range at start.
  EXPECT_EQ(state.node.snatPortMin, 0);
  EXPECT_EQ(state.node.snatPortMax, 0);
  EXPECT_TRUE(snatPortsAuto(state.node));
  EXPECT_EQ(parseConfigYaml("node:\n  interfaces: [eth0]\n  snat_ports: auto\n").node, state.node);
  EXPECT_TRUE(state.node.snatPool.empty());
  EXPECT_EQ(state.node.connTableSize, 1u << 20);
  EXPECT_EQ(state.node.halfTableSize, 1u << 18);
  EXPECT_TRUE(state.services.empty());
  // Quoted port range, null optional fields and an empty service list are fine too.
  const DesiredState quoted = parseConfigYaml(
      "node:\n  interfaces: [eth0]\n  snat_ports: \"62000-62999\"\n  ipv6:\nservices: []\n");
  EXPECT_EQ(quoted.node.snatPortMin, 62000);
  EXPECT_EQ(quoted.node.snatPortMax, 62999);
  EXPECT_FALSE(quoted.node.ipv6);
}

struct BadConfig {
  const char* what;
  std::string yaml;
  std::string message;  // must appear in the refusal
};

std::vector<BadConfig> badConfigs() {
  std::string many = "node:\n  interfaces: [eth0]\n  ipv4: 10.0.2.1\nservices:\n";
  for (int i = 0; i <= MP_MAX_SERVICES; ++i) {
    many += "  - {name: s" + std::to_string(i) + ", vip: 10." + std::to_string(1 + i / 65536) +
            "." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256) + ", port: 80}\n";
  }
  const std::string v4_only = "node:\n  interfaces: [eth0]\n  ipv4: 10.0.2.1\nservices:\n";
  return {
      {"weight too big", goodWith("port: 5353}", "port: 5353, weight: 20000}"),
       "services[1].endpoints[0].weight: 20000 is out of range 0..10000"},
      {"negative weight", goodWith("weight: 3}", "weight: -1}"),
       "services[0].endpoints[1].weight: -1 is out of range 0..10000"},
      {"fractional weight", goodWith("weight: 3}", "weight: 1.5}"),
       "services[0].endpoints[1].weight: 1.5 is not a whole number"},
      {"unknown top-level key", std::string(kGoodConfig) + "frob: 1\n",
       "frob: unknown key (known: node, services)"},
      {"unknown node key", goodWith("  xdp_mode: native\n", "  xdp_mode: native\n  mtu: 1500\n"),
       "node.mtu: unknown key (known: interfaces, ipv4, ipv6, snat_pool, snat_ports, ring_size, "
       "conn_table_size, half_table_size, flow_cache_slots"},
      {"unknown service key", goodWith("    forwarding: nat\n", "    forwarding: nat\n    x: 1\n"),
       "services[0].x: unknown key (known: name, vip, port, protocol, algorithm, forwarding, "
       "endpoints, health, timeouts, on_eject, syn_protection, connect_retries)"},
      {"unknown endpoint key", goodWith("weight: 1}", "weight: 1, prio: 2}"),
       "services[0].endpoints[0].prio: unknown key (known: address, port, weight)"},
      {"key given twice", goodWith("  ring_size: 65537\n", "  ring_size: 65537\n  ring_size: 7\n"),
       "node.ring_size: key given twice"},
      {"no node section", "services: []\n", "node: required section is missing"},
      {"empty text", "", "node: required section is missing"},
      {"interfaces missing", goodWith("  interfaces: [veth-c, veth-e]\n", ""),
       "node.interfaces: required field is missing"},
      {"interfaces empty", goodWith("[veth-c, veth-e]", "[]"),
       "node.interfaces: at least one interface is required"},
      {"interfaces not a list", goodWith("[veth-c, veth-e]", "veth-c"),
       "node.interfaces: veth-c is not a list"},
      {"interface name too long", goodWith("veth-c,", "averyveryverylongname,"),
       "node.interfaces[0]: averyveryverylongname is not an interface name"},
      {"interface twice", goodWith("veth-e]", "veth-c]"),
       "node.interfaces[1]: veth-c is listed twice"},
      {"bad node ipv4", goodWith("10.0.2.1\n", "10.0.2.300\n"),
       "node.ipv4: 10.0.2.300 is not an IP address"},
      {"node ipv4 of the wrong family", goodWith("10.0.2.1\n", "fd00::1\n"),
       "node.ipv4: fd00::1 is not an IPv4 address"},
      {"node ipv6 of the wrong family", goodWith("fd00:2::1\n", "10.0.2.2\n"),
       "node.ipv6: 10.0.2.2 is not an IPv6 address"},
      {"loopback node address", goodWith("10.0.2.1\n", "127.0.0.1\n"),
       "node.ipv4: 127.0.0.1 is a loopback address"},
      {"snat range reversed", goodWith("61000-65535", "65000-61000"),
       "node.snat_ports: 65000-61000: the first port is greater than the last"},
      {"snat range below 1024", goodWith("61000-65535", "80-1000"),
       "node.snat_ports: 80-1000 is out of range 1024..65535"},
      {"snat range beyond 65535", goodWith("61000-65535", "61000-70000"),
       "node.snat_ports: 61000-70000 is out of range 1024..65535"},
      {"snat not a range", goodWith("61000-65535", "61000"),
       "node.snat_ports: 61000 is not a port range like 61000-65535, or auto"},
      {"snat range of zeroes is not auto", goodWith("61000-65535", "0-0"),
       "node.snat_ports: 0-0 is out of range 1024..65535"},
      {"snat pool not a list", goodWith("  ring_size", "  snat_pool: 10.0.2.5\n  ring_size"),
       "node.snat_pool: 10.0.2.5 is not a list"},
      {"snat pool entry not an address",
       goodWith("  ring_size", "  snat_pool: [10.0.2.5, eth0]\n  ring_size"),
       "node.snat_pool[1]: eth0 is not an IP address or a prefix like 10.0.2.8/29"},
      {"snat pool IPv4 prefix over 8 addresses",
       goodWith("  ring_size", "  snat_pool: [10.0.2.16/28]\n  ring_size"),
       "node.snat_pool[0]: 10.0.2.16/28 holds more than 8 addresses (at most 8 SNAT sources per "
       "family, node.ipv4/ipv6 included)"},
      {"snat pool IPv6 prefix over 8 addresses",
       goodWith("  ring_size", "  snat_pool: [\"fd00:2::/64\"]\n  ring_size"),
       "node.snat_pool[0]: fd00:2::/64 holds more than 8 addresses"},
      {"snat pool prefix with host bits",
       goodWith("  ring_size", "  snat_pool: [10.0.2.9/29]\n  ring_size"),
       "node.snat_pool[0]: 10.0.2.9/29 has host bits set"},
      {"snat pool bad prefix length",
       goodWith("  ring_size", "  snat_pool: [10.0.2.9/33]\n  ring_size"),
       "node.snat_pool[0]: 10.0.2.9/33 has a bad prefix length (0..32 for IPv4)"},
      {"snat pool address twice",
       goodWith("  ring_size", "  snat_pool: [10.0.2.9, 10.0.2.8/30]\n  ring_size"),
       "node.snat_pool: 10.0.2.9 is listed twice"},
      {"snat pool repeats node.ipv4",
       goodWith("  ring_size", "  snat_pool: [10.0.2.1]\n  ring_size"),
       "node.snat_pool: 10.0.2.1 is node.ipv4, always the first SNAT source of its family already"},
      {"snat pool of a family the node has no address of",
       goodWith("  ipv6: fd00:2::1\n", "  snat_pool: [\"fd00:2::5\"]\n"),
       "node.snat_pool: fd00:2::5 is IPv6 but node.ipv6 is not set (the first IPv6 SNAT source)"},
      {"snat pool unusable address",
       goodWith("  ring_size", "  snat_pool: [127.0.0.2]\n  ring_size"),
       "node.snat_pool: 127.0.0.2 is a loopback address"},
      {"snat pool over 8 sources with node.ipv4",
       goodWith("  ring_size", "  snat_pool: [10.0.2.8/29, 10.0.2.20, 10.0.2.21]\n  ring_size"),
       "node.snat_pool: 9 IPv4 SNAT sources (node.ipv4 and 8 in the pool) exceed the maximum of 8"},
      {"ring size not prime", goodWith("ring_size: 65537", "ring_size: 65536"),
       "node.ring_size: 65536 is not prime"},
      {"ring size too big", goodWith("ring_size: 65537", "ring_size: 2000003"),
       "node.ring_size: 2000003 is out of range 2..1048573"},
      {"ring size not a number", goodWith("ring_size: 65537", "ring_size: big"),
       "node.ring_size: big is not a whole number"},
      {"flow cache not a power of two",
       goodWith("ring_size: 65537", "ring_size: 65537\n  flow_cache_slots: 1000"),
       "node.flow_cache_slots: 1000 is not a power of two (slots per CPU, e.g. 4096; 0 turns "
       "the cache off)"},
      {"flow cache of one slot",
       goodWith("ring_size: 65537", "ring_size: 65537\n  flow_cache_slots: 1"),
       "node.flow_cache_slots: 1 is not a power of two"},
      {"flow cache too big",
       goodWith("ring_size: 65537", "ring_size: 65537\n  flow_cache_slots: 8388608"),
       "node.flow_cache_slots: 8388608 is out of range 0..4194304"},
      {"ring size in hex", goodWith("ring_size: 65537", "ring_size: 0x10001"),
       "node.ring_size: 0x10001 is not a whole number"},
      {"ring size under 100 x endpoints", goodWith("ring_size: 65537", "ring_size: 101"),
       "services[0].endpoints: 2 endpoints need node.ring_size >= 100 x 2 = 200, but it is 101"},
      {"conn table size zero", goodWith("conn_table_size: 1048576", "conn_table_size: 0"),
       "node.conn_table_size: 0 is out of range 1024..67108864"},
      {"conn table size over 64M",
       goodWith("conn_table_size: 1048576", "conn_table_size: 67108865"),
       "node.conn_table_size: 67108865 is out of range 1024..67108864"},
      {"half table size under 1024",
       goodWith("conn_table_size: 1048576", "conn_table_size: 1048576\n  half_table_size: 1000"),
       "node.half_table_size: 1000 is out of range 1024..16777216"},
      {"half table size over 16M",
       goodWith("conn_table_size: 1048576",
                "conn_table_size: 1048576\n  half_table_size: 16777217"),
       "node.half_table_size: 16777217 is out of range 1024..16777216"},
      {"xdp mode unknown", goodWith("xdp_mode: native", "xdp_mode: offload"),
       "node.xdp_mode: offload is not one of native, generic"},
      {"relative api socket", goodWith("/run/meshpath/meshd.sock", "meshd.sock"),
       "node.api_socket: meshd.sock is not an absolute path"},
      {"api socket path too long",
       goodWith("/run/meshpath/meshd.sock", "/" + std::string(120, 'a')), "node.api_socket: /aaaa"},
      {"relative pin root", goodWith("/sys/fs/bpf/meshpath", "bpf"),
       "node.pin_root: bpf is not an absolute path"},
      {"services not a list", "node:\n  interfaces: [eth0]\nservices: {web: 1}\n",
       "services: a mapping is not a list"},
      {"service not a mapping", v4_only + "  - web\n", "services[0]: web is not a mapping"},
      {"service name bad", goodWith("name: web", "name: Web"),
       "services[0].name: Web does not match [a-z0-9][a-z0-9-_.]{0,62}"},
      {"service name missing", goodWith("  - name: web\n    vip", "  - vip"),
       "services[0].name: required field is missing"},
      {"vip bad", goodWith("vip: 10.0.0.100", "vip: 10.0.0.1000"),
       "services[0].vip: 10.0.0.1000 is not an IP address"},
      {"vip multicast", goodWith("vip: 10.0.0.100", "vip: 224.0.0.1"),
       "services[0].vip: 224.0.0.1 is a multicast address"},
      {"vip unspecified", goodWith("vip: fd00::53", "vip: \"::\""),
       "services[1].vip: :: is the unspecified address"},
      {"port zero", goodWith("port: 80\n", "port: 0\n"),
       "services[0].port: 0 is out of range 1..65535"},
      {"port too big", goodWith("port: 80\n", "port: 70000\n"),
       "services[0].port: 70000 is out of range 1..65535"},
      {"port not a number", goodWith("port: 80\n", "port: http\n"),
       "services[0].port: http is not a whole number"},
      {"port a list", goodWith("port: 80\n", "port: [80]\n"),
       "services[0].port: a list is not a single value"},
      {"protocol unknown", goodWith("protocol: tcp", "protocol: sctp"),
       "services[0].protocol: sctp is not one of tcp, udp"},
      {"algorithm unknown", goodWith("algorithm: maglev", "algorithm: ring_hash"),
       "services[0].algorithm: ring_hash is not one of maglev, random, round-robin, least-conn, "
       "least-latency"},
      {"least-latency on udp",
       goodWith("protocol: udp\n", "protocol: udp\n    algorithm: least-latency\n"),
       "services[1].algorithm: least-latency needs protocol tcp (it compares SYN -> SYN-ACK "
       "times), not udp"},
      {"passive_fall too big",
       goodWith("forwarding: nat\n", "forwarding: nat\n    health: {passive_fall: 101}\n"),
       "services[0].health.passive_fall: 101 is out of range 0..100"},
      {"passive_fall negative",
       goodWith("forwarding: nat\n", "forwarding: nat\n    health: {passive_fall: -1}\n"),
       "services[0].health.passive_fall: -1 is out of range 0..100"},
      {"forwarding unknown", goodWith("forwarding: nat", "forwarding: dsr"),
       "services[0].forwarding: dsr is not one of nat"},
      {"endpoints not a list",
       goodWith("      - {address: fd00:2::11, port: 5353}\n", "      x: 1\n"),
       "services[1].endpoints: a mapping is not a list"},
      {"endpoint not a mapping",
       goodWith("{address: 10.0.2.11, port: 8080, weight: 1}", "10.0.2.11:8080"),
       "services[0].endpoints[0]: 10.0.2.11:8080 is not a mapping"},
      {"endpoint port missing", goodWith("10.0.2.11, port: 8080,", "10.0.2.11,"),
       "services[0].endpoints[0].port: required field is missing"},
      {"endpoint address bad", goodWith("10.0.2.11,", "10.0.2.x,"),
       "services[0].endpoints[0].address: 10.0.2.x is not an IP address"},
      {"endpoint family differs from the VIP's", goodWith("fd00:2::11", "10.0.2.99"),
       "services[1].endpoints[0].address: 10.0.2.99 is IPv4 but the VIP fd00::53 is IPv6"},
      {"no node address of the VIP's family", goodWith("  ipv6: fd00:2::1\n", ""),
       "services[1].vip: fd00::53 is IPv6 but node.ipv6 is not set"},
      {"endpoint twice", goodWith("10.0.2.12, port: 8080", "10.0.2.11, port: 8080"),
       "services[0].endpoints[1]: 10.0.2.11:8080 is listed twice (also endpoints[0])"},
      {"service name twice", goodWith("name: dns", "name: web"),
       "services[1].name: web is used twice (also services[0])"},
      {"VIP, port and protocol twice",
       v4_only + "  - {name: a, vip: 10.0.0.1, port: 80}\n  - {name: b, vip: 10.0.0.1, port: 80}\n"
                 "  - {name: c, vip: 10.0.0.1, port: 80, protocol: udp}\n",
       "services[1]: 10.0.0.1:80/tcp is used twice (also services[0], a)"},
      {"too many services", many,
       "services: " + std::to_string(MP_MAX_SERVICES + 1) + " services exceed the maximum of " +
           std::to_string(MP_MAX_SERVICES)},
      {"health interval under 100ms",
       goodWith("forwarding: nat\n", "health: {type: tcp, interval: 50ms}\n"),
       "services[0].health.interval: 50ms is out of range 100ms..1h"},
      {"health duration without unit",
       goodWith("forwarding: nat\n", "health: {type: tcp, interval: 100}\n"),
       "services[0].health.interval: 100 is not a duration like 100ms, 2s, 1m or 3h"},
      {"health timeout over interval",
       goodWith("forwarding: nat\n", "health: {type: tcp, interval: 100ms, timeout: 2s}\n"),
       "services[0].health.timeout: 2s is out of range 1ms..100ms"},
      {"health jitter over half the interval",
       goodWith("forwarding: nat\n", "health: {type: tcp, interval: 1s, jitter: 600ms}\n"),
       "services[0].health.jitter: 600ms is out of range 0ms..500ms"},
      {"health rise 0", goodWith("forwarding: nat\n", "health: {type: tcp, rise: 0}\n"),
       "services[0].health.rise: 0 is out of range 1..100"},
      {"health fall too big", goodWith("forwarding: nat\n", "health: {type: tcp, fall: 101}\n"),
       "services[0].health.fall: 101 is out of range 1..100"},
      {"health unknown type", goodWith("forwarding: nat\n", "health: {type: icmp}\n"),
       "services[0].health.type: icmp is not one of none, tcp, http, udp"},
      {"health unknown key", goodWith("forwarding: nat\n", "health: {type: tcp, intervl: 1s}\n"),
       "services[0].health.intervl: unknown key"},
      {"health cap over 100%",
       goodWith("forwarding: nat\n", "health: {type: tcp, max_ejected_percent: 101}\n"),
       "services[0].health.max_ejected_percent: 101 is out of range 0..100"},
      {"health panic threshold over 100%",
       goodWith("forwarding: nat\n", "health: {type: tcp, panic_threshold: 150}\n"),
       "services[0].health.panic_threshold: 150 is out of range 0..100"},
      {"health http statuses reversed",
       goodWith("forwarding: nat\n", "health: {type: http, http_statuses: 399-200}\n"),
       "services[0].health.http_statuses: 399-200: the first status is greater than the last"},
      {"health http statuses not a status",
       goodWith("forwarding: nat\n", "health: {type: http, http_statuses: 2xx}\n"),
       "services[0].health.http_statuses: 2xx is not a status or a range like 200-399"},
      {"health http path without slash",
       goodWith("forwarding: nat\n", "health: {type: http, http_path: healthz}\n"),
       "services[0].health.http_path: healthz is not a path"},
      {"health max ejection under ejection",
       goodWith("forwarding: nat\n",
                "health: {type: tcp, ejection_time: 10s, max_ejection_time: 5s}\n"),
       "services[0].health.max_ejection_time: 5s is out of range 10s..1h"},
      {"timeouts unknown key", goodWith("forwarding: nat\n", "timeouts: {tcp_idle: 1m}\n"),
       "services[0].timeouts.tcp_idle: unknown key (known: tcp_syn, tcp_established, tcp_fin, "
       "tcp_closed, udp, udp_replied)"},
      {"timeouts not a mapping", goodWith("forwarding: nat\n", "timeouts: 3h\n"),
       "services[0].timeouts: 3h is not a mapping"},
      {"timeout under a second", goodWith("forwarding: nat\n", "timeouts: {tcp_syn: 500ms}\n"),
       "services[0].timeouts.tcp_syn: 500ms is out of range 1s..168h"},
      {"timeout over 7 days", goodWith("forwarding: nat\n", "timeouts: {tcp_established: 169h}\n"),
       "services[0].timeouts.tcp_established: 169h is out of range 1s..168h"},
      {"timeout without a unit",
       goodWith("protocol: udp\n", "protocol: udp\n    timeouts: {udp: 30}\n"),
       "services[1].timeouts.udp: 30 is not a duration like 100ms, 2s, 1m or 3h"},
      {"on_eject unknown", goodWith("forwarding: nat\n", "on_eject: drop\n"),
       "services[0].on_eject: drop is not one of keep, reset"},
      {"health udp check on a tcp service",
       goodWith("forwarding: nat\n", "health: {type: udp, udp_send: x}\n"),
       "services[0].health.type: udp checks need a udp service"},
      {"health tcp check on a udp service",
       goodWith("protocol: udp\n", "protocol: udp\n    health: {type: tcp}\n"),
       "services[1].health.type: tcp checks need a tcp service, this one is udp"},
      {"health udp without a request",
       goodWith("protocol: udp\n", "protocol: udp\n    health: {type: udp}\n"),
       "services[1].health.udp_send: required for type udp"},
      {"YAML syntax", "node: [\n", "config: YAML syntax error at line"},
      {"root not a mapping", "- a\n", "config: a list is not a mapping"},
      {"two documents", std::string(kGoodConfig) + "---\nservices: []\n",
       "config: 2 YAML documents (separated by ---); one is expected"},
  };
}

TEST(Config, TimeoutsAndOnEjectParseAndDefault) {
  const DesiredState state = parseConfigYaml(goodWith("forwarding: nat\n", R"(forwarding: nat
    on_eject: reset
    timeouts:
      tcp_syn: 3s
      tcp_established: 2h
      tcp_fin: 1m
      tcp_closed: 1500ms
      udp_replied: 168h
)"));
  const ServiceSpec& web = state.services[0];
  EXPECT_EQ(web.onEject, OnEject::kReset);
  EXPECT_EQ(web.timeouts.tcpSynMs, 3000u);
  EXPECT_EQ(web.timeouts.tcpEstablishedMs, 2u * 3600 * 1000);
  EXPECT_EQ(web.timeouts.tcpFinMs, 60000u);
  EXPECT_EQ(web.timeouts.tcpClosedMs, 1500u);
  EXPECT_EQ(web.timeouts.udpMs, ConnTimeouts{}.udpMs) << "a key left out keeps its default";
  EXPECT_EQ(web.timeouts.udpRepliedMs, kMaxConnTimeoutMs) << "udp keys on a tcp service are kept";

  // The defaults: keep, and the kernel conntrack-like lifetimes.
  const ServiceSpec& dns = state.services[1];
  EXPECT_EQ(dns.onEject, OnEject::kKeep);
  EXPECT_EQ(dns.timeouts, ConnTimeouts{});
  EXPECT_EQ(dns.timeouts.tcpSynMs, 5000u);
  EXPECT_EQ(dns.timeouts.tcpEstablishedMs, 3u * 3600 * 1000);
  EXPECT_EQ(dns.timeouts.tcpFinMs, 60000u);
  EXPECT_EQ(dns.timeouts.tcpClosedMs, 2000u);
  EXPECT_EQ(dns.timeouts.udpMs, 30000u);
  EXPECT_EQ(dns.timeouts.udpRepliedMs, 120000u);
}

TEST(Config, SynProtectionDefaultsToAutoWithTwoRetries) {
  const DesiredState state = parseConfigYaml(kGoodConfig);
  const ServiceSpec& web = state.services[0];
  EXPECT_EQ(web.synProtection, SynProtection::kAuto);
  EXPECT_EQ(web.connectRetries, 2u);
  EXPECT_EQ(effectiveSynProtection(web), SynProtection::kAuto);
  EXPECT_EQ(state.node.synFloodThreshold, 1024u);
  EXPECT_EQ(state.node.synFloodThreshold, uint32_t{MP_SYN_FLOOD_THRESHOLD_DEFAULT});
  // A UDP service has none, whatever its (default) setting says.
  const ServiceSpec& dns = state.services[1];
  EXPECT_EQ(dns.protocol, Protocol::kUdp);
  EXPECT_EQ(effectiveSynProtection(dns), SynProtection::kOff);
}

TEST(Config, SynProtectionEachModeAndRetriesParse) {
  for (const auto& [text, mode] :
       {std::pair{"off", SynProtection::kOff}, std::pair{"auto", SynProtection::kAuto},
        std::pair{"always", SynProtection::kAlways}}) {
    const DesiredState state = parseConfigYaml(
        goodWith("forwarding: nat\n", std::string("forwarding: nat\n    syn_protection: ") + text +
                                          "\n    connect_retries: 7\n"));
    EXPECT_EQ(state.services[0].synProtection, mode) << text;
    EXPECT_EQ(toString(state.services[0].synProtection), text);
    EXPECT_EQ(effectiveSynProtection(state.services[0]), mode) << text;
    EXPECT_EQ(state.services[0].connectRetries, 7u);
  }
  const DesiredState none =
      parseConfigYaml(goodWith("forwarding: nat\n", "forwarding: nat\n    connect_retries: 0\n"));
  EXPECT_EQ(none.services[0].connectRetries, 0u);
  const DesiredState node = parseConfigYaml(
      goodWith("ring_size: 65537\n", "ring_size: 65537\n  syn_flood_threshold: 5000\n"));
  EXPECT_EQ(node.node.synFloodThreshold, 5000u);
  const DesiredState one = parseConfigYaml(
      goodWith("ring_size: 65537\n", "ring_size: 65537\n  syn_flood_threshold: 1\n"));
  EXPECT_EQ(one.node.synFloodThreshold, 1u);
}

TEST(Config, SynProtectionBadValuesSayWhatIsAllowed) {
  EXPECT_EQ(refusal(goodWith("forwarding: nat\n", "forwarding: nat\n    syn_protection: on\n")),
            "services[0].syn_protection: on is not one of off, auto, always (line 19)");
  EXPECT_EQ(refusal(goodWith("forwarding: nat\n", "forwarding: nat\n    connect_retries: 8\n")),
            "services[0].connect_retries: 8 is out of range 0..7 (line 19)");
  EXPECT_EQ(refusal(goodWith("forwarding: nat\n", "forwarding: nat\n    connect_retries: -1\n")),
            "services[0].connect_retries: -1 is out of range 0..7 (line 19)");
  EXPECT_EQ(refusal(goodWith("forwarding: nat\n", "forwarding: nat\n    connect_retries: two\n")),
            "services[0].connect_retries: two is not a whole number (line 19)");
  EXPECT_EQ(refusal(goodWith("ring_size: 65537\n", "ring_size: 65537\n  syn_flood_threshold: 0\n")),
            "node.syn_flood_threshold: 0 is out of range 1..4294967295 (line 7)");
  EXPECT_EQ(refusal(goodWith("ring_size: 65537\n",
                             "ring_size: 65537\n  syn_flood_threshold: 4294967296\n")),
            "node.syn_flood_threshold: 4294967296 is out of range 1..4294967295 (line 7)");
}

TEST(Config, SynProtectionOnAUdpServiceIsRefused) {
  const std::string udp = "protocol: udp\n";
  EXPECT_EQ(refusal(goodWith(udp, "protocol: udp\n    syn_protection: always\n")),
            "services[1].syn_protection: always: syn_protection applies to TCP services; remove "
            "it from UDP service dns");
  EXPECT_EQ(refusal(goodWith(udp, "protocol: udp\n    syn_protection: off\n")),
            "services[1].syn_protection: off: syn_protection applies to TCP services; remove it "
            "from UDP service dns");
  // connect_retries is refused even at its default value: it means nothing there.
  EXPECT_EQ(refusal(goodWith(udp, "protocol: udp\n    connect_retries: 2\n")),
            "services[1].connect_retries: connect_retries applies to TCP services; remove it "
            "from UDP service dns (line 26)");
  // The default, written out, is harmless.
  const DesiredState ok =
      parseConfigYaml(goodWith(udp, "protocol: udp\n    syn_protection: auto\n"));
  EXPECT_EQ(effectiveSynProtection(ok.services[1]), SynProtection::kOff);
}

TEST(Validate, SynProtectionRulesHoldForApiEdits) {
  const DesiredState running = parseConfigYaml(kGoodConfig);
  DesiredState edit = running;
  edit.services[1].connectRetries = 5;  // dns is UDP
  edit.services[1].synProtection = SynProtection::kAlways;
  EXPECT_EQ(validateState(edit),
            (std::vector<std::string>{
                "services[1].syn_protection: always: syn_protection applies to TCP services; "
                "remove it from UDP service dns",
                "services[1].connect_retries: 5: connect_retries applies to TCP services; remove "
                "it from UDP service dns"}));
  edit = running;
  edit.services[0].connectRetries = 9;
  edit.services[0].synProtection = static_cast<SynProtection>(7);
  edit.node.synFloodThreshold = 0;
  const auto problems = validateState(edit);
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0],
            "node.syn_flood_threshold: 0 is out of range 1..4294967295 (unanswered SYNs per "
            "second that turn a service's auto SYN protection on)");
  EXPECT_EQ(problems[1], "services[0].syn_protection: 7 is not one of off, auto, always");
  EXPECT_EQ(problems[2], "services[0].connect_retries: 9 is out of range 0..7");
  // A TCP service turned UDP must give up a non-default setting.
  edit = running;
  edit.services[0].synProtection = SynProtection::kOff;
  edit.services[0].protocol = Protocol::kUdp;
  EXPECT_EQ(validateService(edit.node, edit.services[0]),
            std::vector<std::string>{"syn_protection: off: syn_protection applies to TCP "
                                     "services; remove it from UDP service web"});
}

TEST(Config, SnatPoolExpandsPrefixesInOrder) {
  const DesiredState state = parseConfigYaml(
      goodWith("  ring_size",
               "  snat_pool: [10.0.2.5, 10.0.2.8/30, \"fd00:2::8/126\", 10.0.2.20/31, "
               "10.0.2.30/32]\n  ring_size"));
  auto texts = [](const std::vector<IpAddress>& v) {
    std::vector<std::string> out;
    for (const IpAddress& a : v) out.push_back(a.toString());
    return out;
  };
  // IPv4 prefixes shorter than /31 lose their network and broadcast addresses; /31 and IPv6 keep
  // every address.
  EXPECT_EQ(
      texts(state.node.snatPool),
      (std::vector<std::string>{"10.0.2.5", "10.0.2.9", "10.0.2.10", "fd00:2::8", "fd00:2::9",
                                "fd00:2::a", "fd00:2::b", "10.0.2.20", "10.0.2.21", "10.0.2.30"}));
  EXPECT_EQ(texts(snatSources(state.node, 4)),
            (std::vector<std::string>{"10.0.2.1", "10.0.2.5", "10.0.2.9", "10.0.2.10", "10.0.2.20",
                                      "10.0.2.21", "10.0.2.30"}));
  EXPECT_EQ(
      texts(snatSources(state.node, 6)),
      (std::vector<std::string>{"fd00:2::1", "fd00:2::8", "fd00:2::9", "fd00:2::a", "fd00:2::b"}));
  // Exactly 8 sources per family is the limit, node.ipv4 included.
  EXPECT_NO_THROW(parseConfigYaml(
      goodWith("  ring_size", "  snat_pool: [10.0.2.8/29, 10.0.2.20]\n  ring_size")));
}

TEST(Config, HealthBlockParsesAndDefaults) {
  const DesiredState state = parseConfigYaml(goodWith("forwarding: nat\n", R"(forwarding: nat
    health:
      type: http
      interval: 100ms
      timeout: 50ms
      rise: 1
      fall: 2
      jitter: 10ms
      http_path: /healthz
      http_host: web.example
      http_statuses: 200-299
      ejection_time: 500ms
      max_ejection_time: 1m
      max_ejected_percent: 34
      panic_threshold: 20
      passive_fall: 5
)"));
  const HealthCheckSpec& h = state.services[0].health;
  EXPECT_EQ(h.type, HealthCheckType::kHttp);
  EXPECT_EQ(h.intervalMs, 100u);
  EXPECT_EQ(h.timeoutMs, 50u);
  EXPECT_EQ(h.rise, 1u);
  EXPECT_EQ(h.fall, 2u);
  EXPECT_EQ(h.jitterMs, 10u);
  EXPECT_EQ(h.httpPath, "/healthz");
  EXPECT_EQ(h.httpHost, "web.example");
  EXPECT_EQ(h.httpStatusMin, 200);
  EXPECT_EQ(h.httpStatusMax, 299);
  EXPECT_EQ(h.ejectionTimeMs, 500u);
  EXPECT_EQ(h.maxEjectionTimeMs, 60000u);
  EXPECT_EQ(h.maxEjectedPercent, 34u);
  EXPECT_EQ(h.panicThresholdPercent, 20u);
  EXPECT_EQ(h.passiveFall, 5u);

  // No health block: no checks, and the documented defaults for when they are turned on.
  const HealthCheckSpec& none = state.services[1].health;
  EXPECT_EQ(none.type, HealthCheckType::kNone);
  EXPECT_EQ(none.intervalMs, 2000u);
  EXPECT_EQ(none.timeoutMs, 1000u);
  EXPECT_EQ(none.rise, 2u);
  EXPECT_EQ(none.fall, 3u);
  EXPECT_EQ(none.maxEjectedPercent, 50u);
  EXPECT_EQ(none.passiveFall, 3u);  // passive detection is on by default, checks or not

  const DesiredState off = parseConfigYaml(
      goodWith("forwarding: nat\n", "forwarding: nat\n    health: {passive_fall: 0}\n"));
  EXPECT_EQ(off.services[0].health.passiveFall, 0u);
  EXPECT_EQ(off.services[0].health.type, HealthCheckType::kNone);

  const DesiredState udp = parseConfigYaml(
      goodWith("protocol: udp\n",
               "protocol: udp\n    health: {type: udp, udp_send: ping, udp_expect: pong}\n"));
  EXPECT_EQ(udp.services[1].health.udpSend, "ping");
  EXPECT_EQ(udp.services[1].health.udpExpect, "pong");
}

TEST(Config, EveryAlgorithmParses) {
  for (const char* name : mp_algorithm_names) {
    const DesiredState state =
        parseConfigYaml(goodWith("algorithm: maglev", std::string("algorithm: ") + name));
    EXPECT_EQ(toString(state.services[0].algorithm), name);
  }
  // least-latency is refused on udp by validation, with the field and the value named.
  ServiceSpec udp;
  udp.name = "dns";
  udp.vip = *IpAddress::parse("10.0.0.53");
  udp.port = 53;
  udp.protocol = Protocol::kUdp;
  udp.algorithm = Algorithm::kLeastLatency;
  NodeSpec node;
  node.interfaces = {"eth0"};
  node.ipv4 = IpAddress::parse("10.0.2.1");
  const auto problems = validateService(node, udp);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("algorithm: least-latency needs protocol tcp", 0), 0u) << problems[0];
  udp.algorithm = Algorithm::kLeastConn;
  EXPECT_TRUE(validateService(node, udp).empty());
}

TEST(Config, BadConfigsAreRefusedNamingTheField) {
  for (const BadConfig& bad : badConfigs()) {
    const std::string message = refusal(bad.yaml);
    EXPECT_NE(message.find(bad.message), std::string::npos)
        << bad.what << "\n  expected: " << bad.message << "\n  got:      " << message;
  }
}

TEST(Config, StructuralErrorsSayWhichLine) {
  const std::string message = refusal(goodWith("port: 5353}", "port: 5353, weight: 20000}"));
  EXPECT_EQ(message, "services[1].endpoints[0].weight: 20000 is out of range 0..10000 (line 27)");
}

TEST(Config, ValidationReportsEveryProblem) {
  std::string yaml = goodWith("name: web", "name: Web");
  yaml.replace(yaml.find("ring_size: 65537"), 16, "ring_size: 65536");
  try {
    parseConfigYaml(yaml);
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    ASSERT_EQ(e.problems().size(), 2u) << e.what();
    EXPECT_EQ(e.problems()[0], "node.ring_size: 65536 is not prime");
    EXPECT_EQ(e.problems()[1].rfind("services[0].name: Web", 0), 0u);
    EXPECT_NE(std::string(e.what()).find("; "), std::string::npos);
  }
}

TEST(Config, DocumentMayLeaveOutTheNode) {
  const ConfigDocument doc =
      parseConfigDocument("services:\n  - {name: web, vip: 10.0.0.1, port: 80}\n");
  EXPECT_FALSE(doc.node);
  ASSERT_EQ(doc.services.size(), 1u);
  EXPECT_EQ(doc.services[0].name, "web");
  EXPECT_TRUE(parseConfigDocument(kGoodConfig).node);
}

TEST(Config, FileIsReadAndErrorsNameIt) {
  const std::string path = testing::TempDir() + "/meshpath_config_test.yaml";
  {
    std::ofstream out(path);
    out << kGoodConfig;
  }
  EXPECT_EQ(parseConfigFile(path), parseConfigYaml(kGoodConfig));
  {
    std::ofstream out(path);
    out << goodWith("port: 80\n", "port: 0\n");
  }
  try {
    parseConfigFile(path);
    FAIL() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": services[0].port: 0 is out of range 1..65535 (line 15)");
  }
  std::remove(path.c_str());
  try {
    parseConfigFile(path);
    FAIL() << "a missing file was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot open the config file");
  }
}

// The REST API's path: copy the state, apply the edit, validate, only then commit.
TEST(Validate, ApiEditsGetTheSameChecks) {
  const DesiredState running = parseConfigYaml(kGoodConfig);
  EXPECT_TRUE(validateState(running).empty());

  DesiredState edit = running;
  edit.services[1].endpoints[0].weight = 20000;
  EXPECT_EQ(
      validateState(edit),
      std::vector<std::string>{"services[1].endpoints[0].weight: 20000 is out of range 0..10000"});
  EXPECT_THROW(requireValid(edit), ConfigError);

  edit = running;
  edit.services.push_back(edit.services[0]);  // same name, same VIP:port/tcp
  const auto problems = validateState(edit);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0], "services[2].name: web is used twice (also services[0])");
  EXPECT_EQ(problems[1], "services[2]: 10.0.0.100:80/tcp is used twice (also services[0], web)");

  edit = running;
  edit.services[0].endpoints.push_back(edit.services[0].endpoints[0]);
  EXPECT_EQ(validateState(edit),
            std::vector<std::string>{
                "services[0].endpoints[2]: 10.0.2.11:8080 is listed twice (also endpoints[0])"});

  edit = running;
  edit.services[0].endpoints[0].port = 0;
  edit.services[0].vip = IpAddress();
  EXPECT_EQ(validateState(edit), (std::vector<std::string>{
                                     "services[0].vip: \"\" is not set",
                                     "services[0].endpoints[0].port: 0 is out of range 1..65535"}));
}

TEST(Validate, SingleServiceMessagesAreRelativeToIt) {
  const DesiredState running = parseConfigYaml(kGoodConfig);
  ServiceSpec svc = running.services[0];
  EXPECT_TRUE(validateService(running.node, svc).empty());
  svc.endpoints[1].weight = 10001;
  svc.endpoints[0].address = *IpAddress::parse("fd00::1");
  EXPECT_EQ(validateService(running.node, svc),
            (std::vector<std::string>{
                "endpoints[0].address: fd00::1 is IPv6 but the VIP 10.0.0.100 is IPv4",
                "endpoints[1].weight: 10001 is out of range 0..10000"}));
  EXPECT_EQ(validateService(running.node, svc, "services[7]")[1],
            "services[7].endpoints[1].weight: 10001 is out of range 0..10000");
}

TEST(Validate, AutoRingSizeTakesUpToItsLimitOfEndpoints) {
  DesiredState state;
  state.node.interfaces = {"eth0"};
  state.node.ipv4 = IpAddress::parse("10.0.2.1");
  ASSERT_EQ(state.node.ringSize, 0u);  // auto
  ServiceSpec svc;
  svc.name = "big";
  svc.vip = *IpAddress::parse("10.0.0.1");
  svc.port = 80;
  for (size_t e = 0; e < kMaxRingEndpoints; ++e) {
    svc.endpoints.push_back(
        {*IpAddress::parse("10.2." + std::to_string(e / 250) + "." + std::to_string(1 + e % 250)),
         8080, 1});
  }
  state.services.push_back(svc);
  EXPECT_TRUE(validateState(state).empty()) << validateState(state)[0];
  state.services[0].endpoints.push_back({*IpAddress::parse("10.3.0.1"), 8080, 1});
  EXPECT_EQ(validateState(state),
            std::vector<std::string>{
                "services[0].endpoints: 10486 endpoints exceed the most a service can have, 10485 "
                "(100 ring slots each in a ring of at most 1048573); split it into several "
                "services"});
  // A fixed node.ring_size still asks for 100 slots per endpoint.
  state.node.ringSize = 1009;
  state.services[0].endpoints.resize(11);
  EXPECT_EQ(validateState(state),
            std::vector<std::string>{"services[0].endpoints: 11 endpoints need node.ring_size >= "
                                     "100 x 11 = 1100, but it is 1009"});
}

TEST(Validate, EndpointTotalIsLimited) {
  DesiredState state;
  state.node.interfaces = {"eth0"};
  state.node.ipv4 = IpAddress::parse("10.0.2.1");
  state.node.ringSize = 1048573;
  for (int s = 0; s < 7; ++s) {
    ServiceSpec svc;
    svc.name = "s" + std::to_string(s);
    svc.vip = *IpAddress::parse("10.0.0." + std::to_string(s + 1));
    svc.port = 80;
    for (int e = 0; e < 10000; ++e) {
      svc.endpoints.push_back(
          {*IpAddress::parse("10.2." + std::to_string(e / 256) + "." + std::to_string(e % 256)),
           8080, 1});
    }
    state.services.push_back(svc);
  }
  EXPECT_EQ(
      validateState(state),
      std::vector<std::string>{"services: 70000 endpoints in all exceed the maximum of 65536"});
}

TEST(Validate, Helpers) {
  EXPECT_FALSE(isPrime(0));
  EXPECT_FALSE(isPrime(1));
  EXPECT_TRUE(isPrime(2));
  EXPECT_TRUE(isPrime(3));
  EXPECT_FALSE(isPrime(9));
  EXPECT_FALSE(isPrime(25));
  EXPECT_TRUE(isPrime(65537));
  EXPECT_FALSE(isPrime(65536));
  EXPECT_TRUE(isPrime(1048573));
  EXPECT_FALSE(isPrime(1048575));
  EXPECT_FALSE(isPrime(65537ull * 65537ull));
  EXPECT_TRUE(isValidServiceName("web"));
  EXPECT_TRUE(isValidServiceName("0web-1_a.b"));
  EXPECT_TRUE(isValidServiceName(std::string(63, 'a')));
  EXPECT_FALSE(isValidServiceName(std::string(64, 'a')));
  EXPECT_FALSE(isValidServiceName(""));
  EXPECT_FALSE(isValidServiceName("-web"));
  EXPECT_FALSE(isValidServiceName("web/1"));
  EXPECT_FALSE(isValidServiceName("Web"));
  EXPECT_FALSE(addressProblem(*IpAddress::parse("10.0.0.1")));
  EXPECT_FALSE(addressProblem(*IpAddress::parse("fd00::1")));
  EXPECT_TRUE(addressProblem(*IpAddress::parse("255.255.255.255")));
  EXPECT_TRUE(addressProblem(*IpAddress::parse("0.0.0.0")));
  EXPECT_TRUE(addressProblem(*IpAddress::parse("::1")));
  EXPECT_TRUE(addressProblem(*IpAddress::parse("ff02::1")));
  EXPECT_TRUE(addressProblem(*IpAddress::parse("::ffff:10.0.0.1")));
  EXPECT_TRUE(addressProblem(IpAddress()));
}

}  // namespace
}  // namespace meshpath
