#!/usr/bin/env python3
"""check_dashboard.py DASHBOARD [--rules FILE] [--exporter-dir DIR] — the Grafana dashboard (and
the alert rules' expressions) against what Grafana and meshd's exporter offer:
- the dashboard is JSON with a schemaVersion in the range targeted (Grafana 10.x-11.x: 36..39);
- a datasource template variable, and every panel's (and target's) datasource is it;
- every panel has a unique id, a type, a gridPos inside the 24-column grid, not overlapping
  another; every panel but a row has targets, each with a PromQL expr;
- every metric an expr reads is one meshd exports (metric_names.py), and, when the exporter's
  sources are there, one they name: the dashboard and the exporter stay in step."""
import argparse
import json
import re
import sys

import metric_names as mn

SCHEMA_MIN, SCHEMA_MAX = 36, 39


class Checker:
    def __init__(self, exporter):
        self.problems = []
        self.exporter = exporter
        self.used = set()

    def fail(self, where, what):
        self.problems.append(f"{where}: {what}")

    def check_expr(self, where, expr, allow_scrape_series=False):
        names = mn.metric_names(expr)
        if not names:
            self.fail(where, f"no metric in expr {expr!r}")
        for name in names:
            if name in mn.KNOWN or (allow_scrape_series and name in mn.SCRAPE_SERIES):
                self.used.add(name)
                if (self.exporter is not None and name not in mn.SCRAPE_SERIES
                        and mn.base_name(name) not in self.exporter):
                    self.fail(where, f"{name} is not in the exporter's sources "
                                     f"(userspace/meshd/metrics/)")
            else:
                self.fail(where, f"unknown metric {name!r} in expr {expr!r} (not one meshd "
                                 f"exports; see tests/deploy/metric_names.py)")


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # a collapsed row holds its panels


def check_dashboard(path, checker):
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        checker.fail(path, f"not valid JSON: {e}")
        return
    schema = dash.get("schemaVersion")
    if not isinstance(schema, int) or not SCHEMA_MIN <= schema <= SCHEMA_MAX:
        checker.fail(path, f"schemaVersion {schema!r} is not in {SCHEMA_MIN}..{SCHEMA_MAX}")
    for key in ("title", "uid", "panels", "templating"):
        if key not in dash:
            checker.fail(path, f"no {key}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_vars = [n for n, v in variables.items() if v.get("type") == "datasource"]
    if not ds_vars:
        checker.fail(path, "no datasource template variable")
    elif variables[ds_vars[0]].get("query") != "prometheus":
        checker.fail(path, f"datasource variable {ds_vars[0]} is not of type prometheus")
    ds_refs = {f"${{{n}}}" for n in ds_vars} | {f"${n}" for n in ds_vars}
    for name in ("service", "endpoint"):
        if name not in variables:
            checker.fail(path, f"no {name} template variable")
    for name, v in variables.items():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
            checker.check_expr(f"variable {name}", m.group(1) if m else (q or ""))
            if v.get("datasource", {}).get("uid") not in ds_refs:
                checker.fail(f"variable {name}", "datasource is not the datasource variable")

    ids = {}
    cells = {}
    for p in all_panels(dash.get("panels", [])):
        title = p.get("title", "?")
        where = f"panel {p.get('id')} {title!r}"
        if not isinstance(p.get("id"), int):
            checker.fail(where, "no integer id")
        elif p["id"] in ids:
            checker.fail(where, f"id {p['id']} also used by {ids[p['id']]!r}")
        else:
            ids[p["id"]] = title
        if not p.get("type"):
            checker.fail(where, "no type")
        g = p.get("gridPos")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "xywh"):
            checker.fail(where, f"gridPos {g!r} lacks integer x, y, w, h")
        else:
            if g["x"] < 0 or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > 24:
                checker.fail(where, f"gridPos {g} is outside the 24-column grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        checker.fail(where, f"overlaps {cells[(x, y)]!r} at {(x, y)}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
        ds = p.get("datasource")
        if not isinstance(ds, dict) or ds.get("uid") not in ds_refs:
            checker.fail(where, f"datasource {ds!r} is not the datasource variable")
        if p.get("type") == "row":
            continue
        targets = p.get("targets")
        if not targets:
            checker.fail(where, "no targets")
            continue
        ref_ids = set()
        for t in targets:
            tw = f"{where} target {t.get('refId')}"
            if t.get("refId") in ref_ids or not t.get("refId"):
                checker.fail(tw, "refId missing or repeated")
            ref_ids.add(t.get("refId"))
            tds = t.get("datasource")
            if tds is not None and (not isinstance(tds, dict) or tds.get("uid") not in ds_refs):
                checker.fail(tw, f"datasource {tds!r} is not the datasource variable")
            if not t.get("expr"):
                checker.fail(tw, "no expr")
            else:
                checker.check_expr(tw, t["expr"])
    print(f"{path}: schemaVersion {schema}, {len(ids)} panels")


def check_rules(path, checker):
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
    n = 0
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            n += 1
            name = rule.get("alert") or rule.get("record")
            checker.check_expr(f"{path} rule {name}", rule.get("expr", ""),
                               allow_scrape_series=True)
            if "alert" in rule:
                for key in ("for",):
                    if key not in rule:
                        checker.fail(f"{path} rule {name}", f"no {key}:")
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    checker.fail(f"{path} rule {name}", "no severity label (critical|warning|info)")
                for key in ("summary", "description"):
                    if not rule.get("annotations", {}).get(key):
                        checker.fail(f"{path} rule {name}", f"no {key} annotation")
    print(f"{path}: {n} rules")


def self_test():
    """The name extraction on expressions whose answer is known."""
    cases = {
        'sum by (le, signal) (rate(meshpath_endpoint_removal_seconds_bucket{instance=~"$i"}'
        '[$__rate_interval]))': ["meshpath_endpoint_removal_seconds_bucket"],
        'a_total / b offset 5m > 1e3 and on (x) c{l="d e"}': ["a_total", "b", "c"],
        'count(meshpath_endpoint_up{service=~"$service"} == 0) or vector(0)':
            ["meshpath_endpoint_up"],
        'up{job="meshpath"} == 0': ["up"],
    }
    for expr, want in cases.items():
        got = mn.metric_names(expr)
        if got != want:
            raise SystemExit(f"metric_names({expr!r}) = {got}, want {want}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboard")
    ap.add_argument("--rules", action="append", default=[])
    ap.add_argument("--exporter-dir")
    args = ap.parse_args()
    self_test()
    exporter = mn.exporter_names(args.exporter_dir)
    if exporter is None:
        print(f"exporter sources not found in {args.exporter_dir}: checking against the list "
              f"in metric_names.py only")
    else:
        missing = sorted(n for n in mn.COUNTERS_AND_GAUGES | mn.HISTOGRAMS if n not in exporter)
        if missing:
            print(f"note: the exporter's sources do not name {', '.join(missing)} (yet)")
    checker = Checker(exporter)
    check_dashboard(args.dashboard, checker)
    for r in args.rules:
        check_rules(r, checker)
    unused = sorted(n for n in mn.COUNTERS_AND_GAUGES | mn.HISTOGRAMS
                    if not any(mn.base_name(u) == n for u in checker.used))
    if unused:
        print(f"note: no panel or rule reads {', '.join(unused)}")
    for p in checker.problems:
        print(f"FAIL {p}", file=sys.stderr)
    if checker.problems:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
