// views.cpp — meshd's JSON as meshctl's text.
#include "views.h"

#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "json_fields.h"
#include "table.h"

namespace meshpath::meshctl {

using nlohmann::json;

namespace {

bool flag(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

// "10.0.2.1, fd00:2::1": the node's addresses that are set.
std::string nodeAddresses(const json& node) {
  std::string out;
  for (const char* family : {"ipv4", "ipv6"}) {
    if (node.is_object() && node.contains(family) && node[family].is_string()) {
      out += (out.empty() ? "" : ", ") + node[family].get<std::string>();
    }
  }
  return out.empty() ? "-" : out;
}

// "1024-32767 (auto, outside the kernel's ephemeral range), 31744 ports per source".
std::string snatPortsText(const json& node) {
  const uint64_t lo = u64(node, "snat_port_min"), hi = u64(node, "snat_port_max");
  std::string out = std::to_string(lo) + "-" + std::to_string(hi);
  if (flag(node, "snat_ports_auto")) out += " (auto, outside the kernel's ephemeral range)";
  if (hi >= lo && hi != 0) out += ", " + std::to_string(hi - lo + 1) + " ports per source";
  return out;
}

std::string snatPoolText(const json& node) {
  std::string out;
  for (const auto& a : arr(node, "snat_pool")) {
    out += (out.empty() ? "" : ", ") + (a.is_string() ? a.get<std::string>() : a.dump());
  }
  return out.empty() ? "- (node addresses only)" : out;
}

}  // namespace

std::string synSettingText(const json& svc) {
  if (str(svc, "protocol") == "udp") return "- (tcp only)";
  if (!svc.is_object() || !svc.contains("syn_protection")) return "-";
  std::string mode = str(svc, "syn_protection");
  if (mode == "auto") mode += " (SYN cookies while a flood lasts)";
  if (mode == "always") mode += " (SYN cookies for every connection)";
  return mode + ", connect_retries " + std::to_string(u64(svc, "connect_retries"));
}

std::vector<std::string> storeLines(const json& store) {
  if (!store.is_object() || store.empty()) return {};
  const std::string kind = str(store, "kind");
  if (kind == "file") return {"file (services from the config file and the API)"};
  if (kind != "etcd") return {kind.empty() ? "-" : kind};
  std::string state;
  const bool hasError = store.contains("error") && store["error"].is_string();
  if (flag(store, "connected")) {
    state = flag(store, "synced") ? "connected, revision " + str(store, "revision")
                                  : "connected, reading the services";
  } else if (!hasError) {
    state = "connecting";  // no answer yet, and no failure either
  } else {
    const std::string since = str(store, "since");
    state = "UNREACHABLE" + (since.empty() ? std::string() : " since " + since) + ": " +
            str(store, "error") + "; forwarding with the last known state";
  }
  std::vector<std::string> lines{str(store, "url") + " " + state};
  const json& left = arr(store, "keys_left_out");
  if (!left.empty()) {
    lines.push_back(std::to_string(left.size()) +
                    (left.size() == 1 ? " key left out: " : " keys left out, the first: ") +
                    str(left[0], "key") + ": " + str(left[0], "problem"));
  }
  // Health across nodes (docs/etcd.md): what some node sees failing, one line each.
  for (const json& v : arr(store, "mesh_health")) {
    std::string where = flag(v, "mesh_wide") ? "out here too (most nodes)"
                        : flag(v, "here")    ? "out here only (this node's checks)"
                                             : "still in here (this node's checks pass)";
    lines.push_back("health " + str(v, "service") + " " + str(v, "endpoint") + ": failing on " +
                    str(v, "failing_on") + " of " + str(v, "nodes") + " nodes, " + where);
  }
  if (store.contains("refused") && store["refused"].is_string()) {
    lines.push_back("revision " + str(store, "seen_revision") + " NOT applied: " +
                    str(store, "refused") + "; keeping revision " + str(store, "revision"));
  }
  return lines;
}

std::string connectionTablesText(const json& c) {
  if (!c.is_object()) return "connection tables: not readable (see meshd's log)\n";
  Table t({{"TABLE"},
           {"USED", Align::kRight},
           {"CAPACITY", Align::kRight},
           {"FULL", Align::kRight},
           {"PER ENTRY", Align::kRight},
           {"MEMORY", Align::kRight}});
  auto row = [&](const char* name, const char* used, const char* capacity, const char* bytes) {
    const uint64_t cap = u64(c, capacity), each = u64(c, bytes);
    t.addRow({name, humanCount(u64(c, used)), humanCount(cap), percent(u64(c, used), cap),
              each == 0 ? "-" : humanBytes(each), each == 0 ? "-" : humanBytes(cap * each)});
  };
  row("established", "established", "established_capacity", "bytes_per_connection");
  row("half-open", "half_open", "half_open_capacity", "bytes_per_half_open");
  std::ostringstream out;
  t.print(out);
  out << "kernel memory per connection: " << humanBytes(u64(c, "bytes_per_connection"))
      << " full NAT (nat: connection + reverse entry), "
      << humanBytes(u64(c, "bytes_per_dnat_connection"))
      << " source-preserving (dnat: the connection entry alone); MEMORY assumes nat\n";
  out << "expired entries reaped since start: " << humanCount(u64(c, "expired_reaped")) << '\n';
  return out.str();
}

std::string statusText(const json& s) {
  const json& node = obj(s, "node");
  std::string ifaces;
  for (const auto& i : arr(s, "interfaces")) {
    if (!ifaces.empty()) ifaces += ", ";
    ifaces += str(i, "name") + " (" + str(i, "mode") +
              (flag(i, "attached") ? ", attached" : ", NOT attached") + ")";
  }
  std::vector<std::pair<std::string, std::string>> rows{
      {"meshd", str(s, "version") + " (pid " + str(s, "pid") + ", up " +
                    humanDuration(u64(s, "uptime_s")) + ")"},
      {"state", std::string(flag(s, "adopted") ? "adopted pinned maps" : "started fresh") + " in " +
                    str(s, "pin_root")},
      {"interfaces", ifaces.empty() ? "-" : ifaces},
      {"node address", nodeAddresses(node)},
      {"snat pool", snatPoolText(node)},
      {"snat ports", snatPortsText(node)},
      {"ring size", str(node, "ring_size")},
      {"flow cache", u64(node, "flow_cache_slots") == 0
                         ? std::string("off")
                         : std::to_string(u64(node, "flow_cache_slots")) + " slots per CPU"},
      {"services", std::to_string(u64(s, "services")) + " (" + std::to_string(u64(s, "endpoints")) +
                       " endpoints)"},
  };
  const std::vector<std::string> store = storeLines(obj(s, "store"));
  for (size_t i = 0; i < store.size(); ++i) rows.emplace_back(i == 0 ? "store" : "", store[i]);
  std::string out = keyValues(rows) + "\n";
  if (s.is_object() && s.contains("connections")) {
    out += connectionTablesText(s["connections"]);
  } else {
    // A meshd from before the connection tables had stats: their sizes at least.
    out += "conn table: " + humanCount(u64(node, "conn_table_size")) + " entries\n";
  }
  return out;
}

std::string timeoutsText(const json& svc) {
  const json& t = obj(svc, "timeouts");
  if (t.empty()) return "-";
  const bool udp = str(svc, "protocol") == "udp";
  std::vector<const char*> keys =
      udp ? std::vector<const char*>{"udp", "udp_replied"}
          : std::vector<const char*>{"tcp_syn", "tcp_established", "tcp_fin", "tcp_closed"};
  std::string out;
  for (const char* k : keys) out += (out.empty() ? "" : ", ") + std::string(k) + " " + str(t, k);
  return out;
}

std::string serviceText(const json& svc) {
  const json& st = stats(svc);
  std::string onEject = str(svc, "on_eject");
  if (onEject == "keep") onEject += " (an ejected endpoint's established connections stay)";
  if (onEject == "reset") onEject += " (an ejected endpoint's connections are deleted)";
  std::ostringstream out;
  out << keyValues({
      {"service", str(svc, "name") + " (id " + str(svc, "id") + ")"},
      {"vip", hostPort(str(svc, "vip"), u64(svc, "port")) + "/" + str(svc, "protocol")},
      {"algorithm", str(svc, "algorithm") + " (ring of " + str(svc, "ring_size") + " slots, " +
                        humanBytes(u64(svc, "ring_bytes")) + " of kernel memory)"},
      {"forwarding", str(svc, "forwarding")},
      {"timeouts", timeoutsText(svc)},
      {"on_eject", onEject.empty() ? "-" : onEject},
      {"syn protection", synSettingText(svc)},
      {"traffic", humanCount(u64(st, "new_conns")) + " new connections, " +
                      humanCount(u64(st, "packets")) + " packets, " + humanBytes(u64(st, "bytes"))},
  });
  out << '\n';
  const json& eps = arr(svc, "endpoints");
  if (eps.empty()) {
    out << "no endpoints (add one with `meshctl endpoint add " << str(svc, "name")
        << " ADDR:PORT`)\n";
    return out.str();
  }
  uint64_t weights = 0, conns = 0;
  for (const auto& ep : eps) {
    weights += u64(ep, "weight");
    conns += u64(stats(ep), "new_conns");
  }
  Table t({{"ENDPOINT"},
           {"ID", Align::kRight},
           {"WEIGHT", Align::kRight},
           {"EXPECTED", Align::kRight},
           {"ACTIVE", Align::kRight},
           {"NEW CONNS", Align::kRight},
           {"SHARE", Align::kRight},
           {"PACKETS", Align::kRight},
           {"BYTES", Align::kRight},
           {"DRAIN"}});
  for (const auto& ep : eps) {
    t.addRow({endpointKey(ep), str(ep, "id"), std::to_string(u64(ep, "weight")),
              percent(u64(ep, "weight"), weights), activeConns(ep),
              humanCount(u64(stats(ep), "new_conns")), percent(u64(stats(ep), "new_conns"), conns),
              humanCount(u64(stats(ep), "packets")), humanBytes(u64(stats(ep), "bytes")),
              drainState(ep)});
  }
  t.print(out);
  out << "\nEXPECTED is the endpoint's share of the weights; SHARE its share of the new "
         "connections counted so far.\n";
  return out.str();
}

std::string snatPortsCell(const json& ep) {
  const uint64_t capacity = u64(ep, "snat_capacity");
  if (capacity == 0) return "-";
  const uint64_t used = u64(ep, "snat_ports_used");
  return humanCount(used) + "/" + humanCount(capacity) + " (" + percent(used, capacity) + ")";
}

std::string synProtectionLine(const json& syn) {
  const std::string mode = str(syn, "mode");
  const char* counters[] = {"cookies_sent",   "acks_valid",  "acks_invalid", "retries",
                            "retries_failed", "switched_on", "switched_off"};
  bool counted = false;
  for (const char* c : counters) counted = counted || u64(syn, c) != 0;
  if (mode == "off" && !counted) return "off";
  std::string out = mode;
  if (mode == "auto") out += flag(syn, "active") ? ", on" : ", standing by";
  out += "  cookies " + humanCount(u64(syn, "cookies_sent")) + "  valid " +
         humanCount(u64(syn, "acks_valid")) + "  invalid " + humanCount(u64(syn, "acks_invalid")) +
         "  retries " + humanCount(u64(syn, "retries")) + "  failed " +
         humanCount(u64(syn, "retries_failed"));
  if (mode == "auto" || u64(syn, "switched_on") != 0) {
    out += "  switched on " + std::to_string(u64(syn, "switched_on")) + ", off " +
           std::to_string(u64(syn, "switched_off")) + "  unanswered " +
           humanCount(u64(syn, "unanswered_per_s")) + "/s";
  }
  return out;
}

std::string flowCacheLine(const json& fc) {
  if (!fc.is_object() || u64(fc, "slots_per_cpu") == 0) return "off (node.flow_cache_slots: 0)";
  const uint64_t hits = u64(fc, "hits"), misses = u64(fc, "misses");
  return std::to_string(u64(fc, "slots_per_cpu")) + " slots per CPU; hits " + humanCount(hits) +
         " (" + percent(hits, hits + misses) + "), misses " + humanCount(misses) + " (" +
         humanCount(u64(fc, "conflicts")) + " conflicts), bypassed " +
         humanCount(u64(fc, "bypassed")) + " packets";
}

std::string statsText(const json& body, const json& serviceList, const std::string& only) {
  // Weights come from the services; stats carry only counters.
  std::map<std::pair<std::string, std::string>, uint64_t> weights;
  if (serviceList.is_array()) {
    for (const auto& s : serviceList) {
      for (const auto& ep : arr(s, "endpoints")) {
        weights[{str(s, "name"), endpointKey(ep)}] = u64(ep, "weight");
      }
    }
  }
  std::ostringstream out;
  bool first = true;
  for (const auto& s : arr(body, "services")) {
    if (!only.empty() && str(s, "name") != only) continue;
    if (!first) out << '\n';
    first = false;
    out << str(s, "name") << ": " << humanCount(u64(s, "new_conns")) << " new connections, "
        << humanCount(u64(s, "packets")) << " packets, " << humanBytes(u64(s, "bytes")) << '\n';
    if (s.is_object() && s.contains("syn_protection") && s["syn_protection"].is_object()) {
      out << "  syn protection: " << synProtectionLine(s["syn_protection"]) << '\n';
    }
    const json& eps = arr(s, "endpoints");
    if (eps.empty()) {
      out << "  no endpoints\n";
      continue;
    }
    uint64_t conns = 0, weightSum = 0;
    for (const auto& ep : eps) {
      conns += u64(ep, "new_conns");
      auto w = weights.find({str(s, "name"), endpointKey(ep)});
      if (w != weights.end()) weightSum += w->second;
    }
    Table t({{"ENDPOINT"},
             {"WEIGHT", Align::kRight},
             {"EXPECTED", Align::kRight},
             {"NEW CONNS", Align::kRight},
             {"SHARE", Align::kRight},
             {"PACKETS", Align::kRight},
             {"BYTES", Align::kRight},
             {"SNAT PORTS", Align::kRight}});
    for (const auto& ep : eps) {
      auto w = weights.find({str(s, "name"), endpointKey(ep)});
      bool known = w != weights.end();
      t.addRow({endpointKey(ep), known ? std::to_string(w->second) : "-",
                known ? percent(w->second, weightSum) : "-", humanCount(u64(ep, "new_conns")),
                percent(u64(ep, "new_conns"), conns), humanCount(u64(ep, "packets")),
                humanBytes(u64(ep, "bytes")), snatPortsCell(ep)});
    }
    t.print(out, "  ");
  }
  if (first) out << "no services\n";
  if (!only.empty()) return out.str();
  if (body.is_object() && body.contains("exceptions") && body["exceptions"].is_object()) {
    std::vector<std::pair<std::string, std::string>> nonzero;
    for (const auto& [name, value] : body["exceptions"].items()) {
      if (value.is_number() && value.get<uint64_t>() > 0) {
        nonzero.emplace_back("  " + name, humanCount(value.get<uint64_t>()));
      }
    }
    out << "\ndatapath exceptions:" << (nonzero.empty() ? " none\n" : "\n") << keyValues(nonzero);
  }
  if (body.is_object() && body.contains("flow_cache")) {
    out << "\nflow cache: " << flowCacheLine(body["flow_cache"]) << '\n';
  }
  return out.str();
}

std::string healthText(const json& body) {
  std::ostringstream out;
  const json& services = arr(body, "services");
  if (services.empty()) out << "no services\n";
  bool first = true;
  for (const auto& s : services) {
    if (!first) out << '\n';
    first = false;
    const json& check = obj(s, "check");
    const json& eps = arr(s, "endpoints");
    out << str(s, "name") << ": ";
    std::string passive = u64(check, "passive_fall") == 0
                              ? "passive detection off"
                              : "datapath marks down after " +
                                    std::to_string(u64(check, "passive_fall")) +
                                    " passive failures";
    if (str(check, "type") == "none") {
      out << "no active checks; " << passive << '\n';
    } else {
      out << str(check, "type") << " check every " << str(check, "interval") << ", timeout "
          << str(check, "timeout") << ", rise " << u64(check, "rise") << ", fall "
          << u64(check, "fall") << "; " << u64(s, "healthy") << " of " << eps.size() << " healthy, "
          << u64(s, "out") << " out (cap " << u64(s, "max_out") << "); " << passive << '\n';
    }
    if (flag(s, "panic")) {
      out << "  !!! PANIC: too few healthy endpoints (panic_threshold "
          << u64(check, "panic_threshold")
          << "%): new connections spread over ALL endpoints, failing ones too !!!\n";
    }
    Table t({{"ENDPOINT"},
             {"STATE"},
             {"SINCE", Align::kRight},
             {"RING"},
             {"LAST PROBE"},
             {"LATENCY", Align::kRight},
             {"PASSIVE", Align::kRight},
             {"DATAPATH"},
             {"RTT", Align::kRight},
             {"EJECTIONS", Align::kRight}});
    for (const auto& ep : eps) {
      std::string state = str(ep, "state");
      if (flag(ep, "held_by_cap")) state += " (held by cap)";
      if (ep.contains("ejected_for_s") && ep["ejected_for_s"].is_number()) {
        state += " (" + fixed(num(ep, "ejected_for_s"), 1) + "s left)";
      }
      const json& probe = obj(ep, "last_probe");
      std::string last = "-", latency = "-";
      if (!probe.empty()) {
        last = std::string(flag(probe, "ok") ? "ok" : "FAIL") + " " + str(probe, "detail");
        latency = fixed(num(probe, "latency_ms"), 2) + "ms";
      }
      std::string since = ep.contains("since_s") && ep["since_s"].is_number()
                              ? humanDuration(static_cast<uint64_t>(num(ep, "since_s"))) + " ago"
                              : "-";
      const json& dp = obj(ep, "datapath");
      std::string datapath = "-", rtt = "-";
      if (!dp.empty()) {
        datapath = std::string(flag(dp, "down") ? "DOWN" : "up");
        if (u64(dp, "fall") == 0) {
          datapath += " (passive off)";
        } else {
          datapath +=
              " " + std::to_string(u64(dp, "fails")) + "/" + std::to_string(u64(dp, "fall"));
        }
        if (dp.contains("rtt_us") && dp["rtt_us"].is_number()) {
          rtt = fixed(num(dp, "rtt_us"), 0) + "us";
        }
      }
      t.addRow({endpointKey(ep), state, since, flag(ep, "in_ring") ? "in" : "out", last, latency,
                std::to_string(u64(ep, "passive_failures")), datapath, rtt,
                std::to_string(u64(ep, "ejections"))});
    }
    t.print(out, "  ");
  }
  if (body.is_object() && body.contains("scheduler")) {
    const json& sch = body["scheduler"];
    out << "\nprobe schedule: " << u64(sch, "targets") << " targets, "
        << humanCount(u64(sch, "probes")) << " probes, lag p50 " << fixed(num(sch, "lag_p50_ms"), 2)
        << "ms p99 " << fixed(num(sch, "lag_p99_ms"), 2) << "ms max "
        << fixed(num(sch, "lag_max_ms"), 2) << "ms, " << u64(sch, "skipped") << " slots skipped\n";
  }
  return out.str();
}

std::string eventLine(const json& e) {
  std::string who = str(e, "service");
  if (e.is_object() && e.contains("endpoint") && e["endpoint"].is_string()) {
    who += " " + str(e, "endpoint");
  }
  return str(e, "time") + "  " + who + "  " + str(e, "from") + " -> " + str(e, "to") + "  " +
         str(e, "reason");
}

}  // namespace meshpath::meshctl
