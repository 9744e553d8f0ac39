"""metric_names.py — the metrics meshd exports (issue 12; userspace/meshd/metrics/) and the metric
names a PromQL expression reads, so the dashboard and the alert rules can be held to them."""
import os
import re

COUNTERS_AND_GAUGES = {
    "meshpath_build_info",
    "meshpath_service_packets_total", "meshpath_service_bytes_total",
    "meshpath_service_connections_total",
    "meshpath_endpoint_packets_total", "meshpath_endpoint_bytes_total",
    "meshpath_endpoint_connections_total", "meshpath_endpoint_active_connections",
    "meshpath_endpoint_up", "meshpath_endpoint_ejections_total",
    "meshpath_endpoint_transitions_total", "meshpath_service_panic",
    "meshpath_drops_total",
    "meshpath_flow_cache_lookups_total", "meshpath_flow_cache_conflicts_total",
    "meshpath_conn_table_entries", "meshpath_conn_table_capacity",
    "meshpath_snat_ports_in_use", "meshpath_snat_ports_capacity",
    "meshpath_syn_cookies_sent_total", "meshpath_syn_acks_total",
    "meshpath_syn_protection_active",
    # only with --store (docs/metrics.md, "Shared store")
    "meshpath_store_connected", "meshpath_store_revision", "meshpath_store_behind",
    "meshpath_store_keys_left_out", "meshpath_store_refused",
    "meshpath_store_writes_total", "meshpath_store_write_failures_total",
    "meshpath_store_resyncs_total",
}
HISTOGRAMS = {
    "meshpath_probe_duration_seconds", "meshpath_probe_schedule_lag_seconds",
    "meshpath_endpoint_removal_seconds", "meshpath_control_change_seconds",
}
# Prometheus' own series about a scrape target (the alert rules' MeshdDown).
SCRAPE_SERIES = {"up"}

KNOWN = COUNTERS_AND_GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}


def base_name(name):
    """meshpath_probe_duration_seconds_bucket -> meshpath_probe_duration_seconds."""
    for h in HISTOGRAMS:
        if name.startswith(h) and name[len(h):] in ("_bucket", "_sum", "_count"):
            return h
    return name


def metric_names(expr):
    """The metric names an expression selects: identifiers left once strings, label matchers,
    ranges, grouping clauses, Grafana variables and function calls are taken out."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"`[^`]*`", "``", e)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    names = []
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        tok = m.group(0)
        before = e[m.start() - 1] if m.start() > 0 else " "
        if before.isdigit() or before == ".":
            continue  # a duration or number: 5m, 1e3
        if e[m.end():].lstrip().startswith("("):
            continue  # a function or aggregation
        if tok.lower() in _KEYWORDS:
            continue
        names.append(tok)
    return names


def exporter_names(metrics_dir):
    """The "meshpath_..." names in the exporter's sources, or None when there are none (yet)."""
    if not metrics_dir or not os.path.isdir(metrics_dir):
        return None
    found = set()
    for root, _, files in os.walk(metrics_dir):
        for f in files:
            if f.endswith((".cpp", ".h")):
                with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
                    found |= set(re.findall(r"\bmeshpath_[a-z0-9_]+", fh.read()))
    return found or None
