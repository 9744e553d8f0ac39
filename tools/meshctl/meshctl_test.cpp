// meshctl_test.cpp — meshctl's own checks (endpoint/port/weight/name parsing), its table and unit
// formatting, and the views of meshd's JSON (status, service, stats). No daemon involved; the e2e
// tests cover meshctl against a real meshd.
#include <gtest/gtest.h>

#include <sstream>

#include "address.h"
#include "apply_view.h"
#include "table.h"
#include "upgrade_view.h"
#include "views.h"

namespace meshpath::meshctl {
namespace {

TEST(ParseEndpoint, Ipv4WithPort) {
  std::string error;
  auto ep = parseEndpoint("10.0.2.11:8080", false, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->address, "10.0.2.11");
  EXPECT_EQ(ep->port, 8080);
  EXPECT_FALSE(ep->v6);
  EXPECT_FALSE(ep->weight);
  EXPECT_EQ(ep->key(), "10.0.2.11:8080");
}

TEST(ParseEndpoint, Ipv6InBracketsIsCanonicalized) {
  std::string error;
  auto ep = parseEndpoint("[fd00:0:0::011]:80", false, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->address, "fd00::11");
  EXPECT_TRUE(ep->v6);
  EXPECT_EQ(ep->key(), "[fd00::11]:80");
}

TEST(ParseEndpoint, WeightSuffix) {
  std::string error;
  auto ep = parseEndpoint("[fd00::1]:80@250", true, &error);
  ASSERT_TRUE(ep) << error;
  EXPECT_EQ(ep->weight, 250u);
  EXPECT_FALSE(parseEndpoint("10.0.0.1:80@250", false, &error));
  EXPECT_NE(error.find("--weight"), std::string::npos);
  EXPECT_FALSE(parseEndpoint("10.0.0.1:80@10001", true, &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
}

TEST(ParseEndpoint, RefusalsSayWhatIsWrong) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"10.0.2.11", "port is missing"},   {"10.0.2.300:80", "bad address"},
      {"fd00::1:80", "brackets"},         {"[10.0.0.1]:80", "IPv6 only"},
      {"[fd00::1]80", "write ADDR:PORT"}, {"10.0.0.1:0", "bad port"},
      {"10.0.0.1:65536", "bad port"},     {"10.0.0.1:8o", "bad port"},
      {"host.example:80", "bad address"}, {"", "port is missing"},
  };
  for (const auto& c : cases) {
    std::string error;
    EXPECT_FALSE(parseEndpoint(c.text, true, &error)) << c.text;
    EXPECT_NE(error.find(c.says), std::string::npos) << c.text << ": " << error;
  }
}

TEST(ParseWeight, Range) {
  std::string error;
  EXPECT_EQ(parseWeight("0", &error), 0u);
  EXPECT_EQ(parseWeight("10000", &error), 10000u);
  EXPECT_FALSE(parseWeight("10001", &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
  EXPECT_FALSE(parseWeight("-1", &error));
  EXPECT_NE(error.find("out of range"), std::string::npos);
  EXPECT_FALSE(parseWeight("two", &error));
  EXPECT_NE(error.find("bad weight"), std::string::npos);
}

TEST(ServiceName, Rules) {
  std::string error;
  EXPECT_TRUE(validServiceName("web", &error));
  EXPECT_TRUE(validServiceName("0web-v2_a.b", &error));
  EXPECT_FALSE(validServiceName("Web", &error));
  EXPECT_FALSE(validServiceName("-web", &error));
  EXPECT_FALSE(validServiceName("", &error));
  EXPECT_FALSE(validServiceName(std::string(64, 'a'), &error));
  EXPECT_FALSE(validServiceName("a/b", &error));
}

TEST(ParseTtl, WholeSecondsOfAtLeastOne) {
  std::string error;
  EXPECT_EQ(parseTtlSeconds("10s", &error), 10);
  EXPECT_EQ(parseTtlSeconds("2m", &error), 120);
  EXPECT_EQ(parseTtlSeconds("2000ms", &error), 2);
  for (const char* text : {"500ms", "1500ms", "0s"}) {
    EXPECT_FALSE(parseTtlSeconds(text, &error)) << text;
    EXPECT_NE(error.find("not whole seconds"), std::string::npos) << text << ": " << error;
  }
  for (const char* text : {"10", "", "s", "-1s", "ten"}) {
    EXPECT_FALSE(parseTtlSeconds(text, &error)) << text;
    EXPECT_NE(error.find("bad ttl"), std::string::npos) << text << ": " << error;
  }
}

TEST(Units, Counts) {
  EXPECT_EQ(humanCount(0), "0");
  EXPECT_EQ(humanCount(999), "999");
  EXPECT_EQ(humanCount(1234), "1.2K");
  EXPECT_EQ(humanCount(3'400'000), "3.4M");
  EXPECT_EQ(humanCount(250'000), "250K");
}

TEST(Units, Bytes) {
  EXPECT_EQ(humanBytes(512), "512 B");
  EXPECT_EQ(humanBytes(1536), "1.5 KiB");
  EXPECT_EQ(humanBytes(5ull << 30), "5.0 GiB");
}

TEST(Units, PercentAndDuration) {
  EXPECT_EQ(percent(1, 3), "33.3%");
  EXPECT_EQ(percent(0, 0), "-");
  EXPECT_EQ(humanDuration(75), "1m15s");
  EXPECT_EQ(humanDuration(90061), "1d1h1m1s");
}

TEST(Table, AlignsColumns) {
  Table t({{"NAME"}, {"COUNT", Align::kRight}});
  t.addRow({"web", "5"});
  t.addRow({"a-longer-name", "1.2K"});
  std::ostringstream out;
  t.print(out);
  EXPECT_EQ(out.str(),
            "NAME           COUNT\n"
            "web                5\n"
            "a-longer-name   1.2K\n");
}

using nlohmann::json;

const json kStatus = json::parse(R"({
  "version": "0.1.0", "pid": 42, "uptime_s": 75, "adopted": false, "pin_root": "/sys/fs/bpf/mp",
  "interfaces": [{"name": "veth0", "ifindex": 3, "attached": true, "mode": "native"}],
  "node": {"ipv4": "10.0.2.1", "ipv6": null, "snat_pool": ["10.0.2.2", "10.0.2.3"],
           "snat_port_min": 1024, "snat_port_max": 32767, "snat_ports_auto": true,
           "ring_size": 65537, "conn_table_size": 1048576, "half_table_size": 262144,
           "flow_cache_slots": 4096},
  "connections": {"established": 52000, "half_open": 300, "established_capacity": 1048576,
                  "half_open_capacity": 262144, "expired_reaped": 1234,
                  "bytes_per_connection": 400, "bytes_per_half_open": 420},
  "services": 2, "endpoints": 5})");

TEST(Views, StatusShowsTheSnatSourcesAndTheConnectionTables) {
  const std::string text = statusText(kStatus);
  EXPECT_NE(text.find("node address  10.0.2.1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("snat pool     10.0.2.2, 10.0.2.3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("snat ports    1024-32767 (auto, outside the kernel's ephemeral range), "
                      "31744 ports per source\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(connectionTablesText(kStatus["connections"])), std::string::npos) << text;
  const std::string tables = connectionTablesText(kStatus["connections"]);
  EXPECT_EQ(tables.rfind("TABLE         USED  CAPACITY  FULL  PER ENTRY   MEMORY\n"
                         "established  52.0K      1.0M  5.0%      400 B  400 MiB\n"
                         "half-open      300      262K  0.1%      420 B  105 MiB\n",
                         0),
            0u)
      << tables;
  EXPECT_NE(tables.find("expired entries reaped since start: 1.2K\n"), std::string::npos) << tables;
  // No pool, an explicit range; a meshd that cannot read its tables says so.
  json plain = kStatus;
  plain["node"]["snat_pool"] = json::array();
  plain["node"]["snat_ports_auto"] = false;
  plain["node"]["snat_port_min"] = 61000;
  plain["node"]["snat_port_max"] = 65535;
  plain["connections"] = nullptr;
  const std::string other = statusText(plain);
  EXPECT_NE(other.find("snat pool     - (node addresses only)\n"), std::string::npos) << other;
  EXPECT_NE(other.find("snat ports    61000-65535, 4536 ports per source\n"), std::string::npos)
      << other;
  EXPECT_NE(other.find("connection tables: not readable"), std::string::npos) << other;
}

TEST(Views, StatusShowsWhereTheServicesComeFrom) {
  // A meshd from before --store sends no "store": no line.
  EXPECT_EQ(statusText(kStatus).find("store"), std::string::npos) << statusText(kStatus);

  json file = kStatus;
  file["store"] = {{"kind", "file"}};
  EXPECT_NE(statusText(file).find("services      2 (5 endpoints)\n"
                                  "store         file (services from the config file and the "
                                  "API)\n\n"),
            std::string::npos)
      << statusText(file);

  json etcd = kStatus;
  etcd["store"] = json::parse(R"({"kind": "etcd", "url": "etcd://127.0.0.1:2379/meshpath",
    "prefix": "/meshpath", "connected": true, "synced": true, "since": "2026-03-01T10:00:00.000Z",
    "error": null, "revision": 42, "seen_revision": 42, "refused": null, "keys_left_out": [],
    "writes": 3, "write_failures": 0, "resyncs": 0})");
  std::string text = statusText(etcd);
  EXPECT_NE(text.find("store         etcd://127.0.0.1:2379/meshpath connected, revision 42\n\n"),
            std::string::npos)
      << text;

  // Cut off, with bad keys and a revision that breaks a rule across services.
  json& st = etcd["store"];
  st["connected"] = false;
  st["error"] = "etcd /v3/kv/range: 127.0.0.1:2379: Connection refused";
  st["since"] = "2026-03-01T10:05:00.000Z";
  st["seen_revision"] = 45;
  st["refused"] = "two services on 10.0.0.100:80/tcp";
  st["keys_left_out"] = json::parse(R"([
    {"key": "/meshpath/endpoints/web/10.0.2.11:8080", "problem": "weight 20000 is out of range"},
    {"key": "/meshpath/endpoints/nope/10.0.2.12:80", "problem": "no service nope"}])");
  text = statusText(etcd);
  EXPECT_NE(text.find("store         etcd://127.0.0.1:2379/meshpath UNREACHABLE since "
                      "2026-03-01T10:05:00.000Z: etcd /v3/kv/range: 127.0.0.1:2379: Connection "
                      "refused; forwarding with the last known state\n"
                      "              2 keys left out, the first: "
                      "/meshpath/endpoints/web/10.0.2.11:8080: weight 20000 is out of range\n"
                      "              revision 45 NOT applied: two services on 10.0.0.100:80/tcp; "
                      "keeping revision 42\n\n"),
            std::string::npos)
      << text;

  // Health across nodes: one line per endpoint some node sees failing.
  json withMesh = json::parse(R"({"kind": "etcd", "url": "etcd://e:2379/mp", "connected": true,
    "synced": true, "revision": 7, "mesh_health": [
      {"service": "web", "endpoint": "10.0.2.13:8080", "failing_on": 1, "nodes": 2, "here": true,
       "mesh_wide": false},
      {"service": "web", "endpoint": "10.0.2.11:8080", "failing_on": 3, "nodes": 5,
       "here": false, "mesh_wide": true}]})");
  EXPECT_EQ(storeLines(withMesh),
            (std::vector<std::string>{
                "etcd://e:2379/mp connected, revision 7",
                "health web 10.0.2.13:8080: failing on 1 of 2 nodes, out here only (this node's "
                "checks)",
                "health web 10.0.2.11:8080: failing on 3 of 5 nodes, out here too (most nodes)"}));

  // Unreachable, from a meshd that gives no "since"; not answered yet; not read yet.
  st = json::parse(R"({"kind": "etcd", "url": "etcd://10.0.0.5:2379/mp", "connected": false,
    "synced": false, "error": "no answer within 2000 ms",
    "revision": 0, "keys_left_out": [{"key": "/mp/services/x", "problem": "not JSON"}]})");
  EXPECT_EQ(storeLines(st), (std::vector<std::string>{
                                "etcd://10.0.0.5:2379/mp UNREACHABLE: no answer within 2000 ms; "
                                "forwarding with the last known state",
                                "1 key left out: /mp/services/x: not JSON"}));
  st["error"] = nullptr;
  st["keys_left_out"] = json::array();
  EXPECT_EQ(storeLines(st), std::vector<std::string>{"etcd://10.0.0.5:2379/mp connecting"});
  st["connected"] = true;
  EXPECT_EQ(storeLines(st),
            std::vector<std::string>{"etcd://10.0.0.5:2379/mp connected, reading the services"});
}

TEST(Views, ServiceShowsTimeoutsOfItsProtocolAndOnEject) {
  json svc = json::parse(R"({"name": "web", "id": 0, "vip": "10.0.0.100", "port": 80,
    "protocol": "tcp", "algorithm": "maglev", "forwarding": "nat", "ring_size": 65537,
    "endpoints": [], "stats": {"packets": 0, "bytes": 0, "new_conns": 0},
    "timeouts": {"tcp_syn": "5s", "tcp_established": "3h", "tcp_fin": "60s", "tcp_closed": "2s",
                 "udp": "30s", "udp_replied": "120s"},
    "on_eject": "keep"})");
  EXPECT_EQ(timeoutsText(svc), "tcp_syn 5s, tcp_established 3h, tcp_fin 60s, tcp_closed 2s");
  const std::string text = serviceText(svc);
  EXPECT_NE(text.find("timeouts        tcp_syn 5s, tcp_established 3h, tcp_fin 60s, tcp_closed "
                      "2s\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find("on_eject        keep (an ejected endpoint's established connections stay)\n"),
      std::string::npos)
      << text;
  svc["protocol"] = "udp";
  svc["on_eject"] = "reset";
  EXPECT_EQ(timeoutsText(svc), "udp 30s, udp_replied 120s");
  EXPECT_NE(serviceText(svc).find("on_eject        reset (an ejected endpoint's connections are "
                                  "deleted)"),
            std::string::npos);
  svc.erase("timeouts");
  EXPECT_EQ(timeoutsText(svc), "-") << "an older meshd";
}

TEST(Views, StatsShowEachEndpointsSnatPortsUsedOfCapacity) {
  const json stats = json::parse(R"({"services": [{"name": "web", "packets": 10, "bytes": 1000,
    "new_conns": 4, "endpoints": [
      {"address": "10.0.2.11", "port": 8080, "packets": 6, "bytes": 600, "new_conns": 3,
       "snat_ports_used": 25400, "snat_capacity": 31744},
      {"address": "10.0.2.12", "port": 8080, "packets": 4, "bytes": 400, "new_conns": 1,
       "snat_ports_used": 0, "snat_capacity": 0}]}],
    "exceptions": {"drop_snat_exhausted": 2}, "flow_cache": {"slots_per_cpu": 0}})");
  const json services = json::parse(R"([{"name": "web", "endpoints": [
      {"address": "10.0.2.11", "port": 8080, "weight": 3},
      {"address": "10.0.2.12", "port": 8080, "weight": 1}]}])");
  EXPECT_EQ(snatPortsCell(stats["services"][0]["endpoints"][0]), "25.4K/31.7K (80.0%)");
  EXPECT_EQ(snatPortsCell(stats["services"][0]["endpoints"][1]), "-");
  EXPECT_EQ(
      statsText(stats, services, "web"),
      "web: 4 new connections, 10 packets, 1000 B\n"
      "  ENDPOINT        WEIGHT  EXPECTED  NEW CONNS  SHARE  PACKETS  BYTES           SNAT PORTS\n"
      "  10.0.2.11:8080       3     75.0%          3  75.0%        6  600 B  25.4K/31.7K (80.0%)\n"
      "  10.0.2.12:8080       1     25.0%          1  25.0%        4  400 B                    "
      "-\n");
  const std::string all = statsText(stats, json::array());
  EXPECT_NE(all.find("datapath exceptions:\n  drop_snat_exhausted  2\n"), std::string::npos) << all;
  EXPECT_NE(all.find("flow cache: off"), std::string::npos) << all;
  EXPECT_EQ(statsText(json::object(), json::array()).rfind("no services\n", 0), 0u);
}

TEST(Views, StatsShowEachServicesSynProtection) {
  const json syn = json::parse(R"({"mode": "auto", "active": true, "cookies_sent": 12300,
    "acks_valid": 4, "acks_invalid": 12200, "retries": 0, "retries_failed": 0, "switched_on": 2,
    "switched_off": 1, "unanswered_per_s": 4100})");
  EXPECT_EQ(synProtectionLine(syn),
            "auto, on  cookies 12.3K  valid 4  invalid 12.2K  retries 0  failed 0  switched on 2, "
            "off 1  unanswered 4.1K/s");
  json idle = syn;
  idle["active"] = false;
  EXPECT_EQ(synProtectionLine(idle).rfind("auto, standing by  cookies 12.3K", 0), 0u);
  json always = json::parse(R"({"mode": "always", "active": false, "cookies_sent": 9,
    "acks_valid": 8, "acks_invalid": 1, "retries": 3, "retries_failed": 1, "switched_on": 0,
    "switched_off": 0, "unanswered_per_s": 0})");
  EXPECT_EQ(synProtectionLine(always),
            "always  cookies 9  valid 8  invalid 1  retries 3  failed 1");
  EXPECT_EQ(synProtectionLine(json::parse(R"({"mode": "off", "cookies_sent": 0})")), "off");

  const json stats = json::parse(R"({"services": [{"name": "web", "packets": 10, "bytes": 1000,
    "new_conns": 4, "endpoints": [], "syn_protection": {"mode": "off"}}]})");
  json withSyn = stats;
  withSyn["services"][0]["syn_protection"] = syn;
  EXPECT_EQ(statsText(withSyn, json::array(), "web"),
            "web: 4 new connections, 10 packets, 1000 B\n"
            "  syn protection: auto, on  cookies 12.3K  valid 4  invalid 12.2K  retries 0  failed 0"
            "  switched on 2, off 1  unanswered 4.1K/s\n"
            "  no endpoints\n");
  EXPECT_EQ(statsText(stats, json::array(), "web"),
            "web: 4 new connections, 10 packets, 1000 B\n"
            "  syn protection: off\n"
            "  no endpoints\n");
  // The datapath's new drop reasons are listed like the others.
  const json exc = json::parse(R"({"services": [], "exceptions": {"drop_syn_cookie": 12200,
    "drop_syn_pending": 0}})");
  const std::string all = statsText(exc, json::array());
  EXPECT_NE(all.find("datapath exceptions:\n  drop_syn_cookie  12.2K\n"), std::string::npos) << all;
  EXPECT_EQ(all.find("drop_syn_pending"), std::string::npos) << all;
}

TEST(Views, ServiceShowsItsSynProtectionSetting) {
  json svc = json::parse(R"({"name": "web", "protocol": "tcp", "syn_protection": "always",
    "connect_retries": 3})");
  EXPECT_EQ(synSettingText(svc), "always (SYN cookies for every connection), connect_retries 3");
  svc["syn_protection"] = "auto";
  EXPECT_EQ(synSettingText(svc), "auto (SYN cookies while a flood lasts), connect_retries 3");
  EXPECT_NE(serviceText(svc).find("\nsyn protection  auto (SYN cookies while a flood lasts), "
                                  "connect_retries 3\n"),
            std::string::npos)
      << serviceText(svc);
  svc["protocol"] = "udp";
  EXPECT_EQ(synSettingText(svc), "- (tcp only)");
  svc["protocol"] = "tcp";
  svc.erase("syn_protection");
  EXPECT_EQ(synSettingText(svc), "-") << "an older meshd";
}

TEST(ApplyView, DiffLinesAlignedForADryRun) {
  nlohmann::json body = {{"dry_run", true},
                         {"lines",
                          {"+ service api (tcp 10.0.0.101:443, 1 endpoint)",
                           "~ services.web.endpoints[10.0.2.11:8080].weight: 1 -> 0",
                           "~ services.web.port: 80 -> 81"}}};
  EXPECT_EQ(applyText(body, "new.yaml"),
            "dry run of new.yaml: 3 changes, nothing applied\n"
            "  + service api (tcp 10.0.0.101:443, 1 endpoint)\n"
            "  ~ services.web.endpoints[10.0.2.11:8080].weight: 1 -> 0\n"
            "  ~ services.web.port:                             80 -> 81\n");
  body["dry_run"] = false;
  body["lines"] = nlohmann::json::array();
  EXPECT_EQ(applyText(body, "standard input"), "applied standard input: no changes\n");
}

TEST(ApplyView, RefusalListsProblemsAndNodeFields) {
  nlohmann::json body = {
      {"error", "..."},
      {"problems", {"services[0].port: 0 is out of range", "services[1].vip: missing"}},
      {"diff",
       {{"changes",
         {{{"path", "node.ring_size"}, {"from", 65537}, {"to", 131071}},
          {{"path", "services.web.port"}, {"from", 80}, {"to", 81}}}}}}};
  EXPECT_EQ(applyRefusalDetails(body),
            "2 problems:\n"
            "  services[0].port: 0 is out of range\n"
            "  services[1].vip: missing\n"
            "node fields that differ from the running node (they need a restart):\n"
            "  ~ node.ring_size: 65537 -> 131071\n");
  EXPECT_EQ(applyRefusalDetails(nlohmann::json{{"error", "x"}}), "");
}

TEST(UpgradeView, CompleteUpgradeAlignedWithoutAnErrorColumn) {
  const auto u = nlohmann::json::parse(R"({
    "complete": true, "problem": null, "migrations": [],
    "from": {"name": "mp_xdp_lb", "tag": "9b7e6cd9e2bc5b09", "id": 41},
    "to": {"name": "mp_xdp_lb", "tag": "9b7e6cd9e2bc5b09", "id": 57},
    "interfaces": [{"name": "veth-c", "switched": true, "error": null},
                   {"name": "eth10", "switched": true, "error": null}],
    "load_ms": 37.91, "switch_ms": 0.052, "total_ms": 38.2})");
  EXPECT_EQ(upgradeText(u),
            "upgraded mp_xdp_lb: id 41 (tag 9b7e6cd9e2bc5b09) -> id 57 (tag 9b7e6cd9e2bc5b09) in "
            "38.2 ms (load 37.9 ms, switch 0.052 ms)\n"
            "  INTERFACE  SWITCHED\n"
            "  veth-c     yes\n"
            "  eth10      yes\n"
            "  maps kept as they were (no layout changed)\n");
}

TEST(UpgradeView, IncompleteUpgradeShowsTheProblemErrorsAndMigrations) {
  const auto u = nlohmann::json::parse(R"({
    "complete": false, "problem": "switching eth1 failed (EPERM); put back",
    "from": {"name": "mp_xdp_lb", "tag": "", "id": 41}, "to": {"name": "mp_xdp_lb", "id": 57},
    "interfaces": [{"name": "eth0", "switched": false, "error": null},
                   {"name": "eth1", "switched": false, "error": "bpf_link_update: EPERM"}],
    "migrations": [{"map": "mp_conns", "from_version": 1, "to_version": 2, "copied": 120000,
                    "changed": 35, "copy_ms": 84.25, "delta_ms": 0.4}],
    "load_ms": 120, "switch_ms": 0.1, "total_ms": 205})");
  EXPECT_EQ(upgradeText(u),
            "upgrade incomplete: mp_xdp_lb: id 41 (tag ?) -> id 57 (tag ?) in 205.0 ms (load "
            "120.0 ms, switch 0.100 ms)\n"
            "  switching eth1 failed (EPERM); put back\n"
            "  INTERFACE  SWITCHED  ERROR\n"
            "  eth0       no\n"
            "  eth1       no        bpf_link_update: EPERM\n"
            "  maps migrated:\n"
            "  MAP       LAYOUT  COPIED  CHANGED     COPY     DELTA\n"
            "  mp_conns  1 -> 2  120000       35  84.2 ms  0.400 ms\n");
}

}  // namespace
}  // namespace meshpath::meshctl
