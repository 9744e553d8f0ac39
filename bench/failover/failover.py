#!/usr/bin/python3
"""failover.py — how long a killed endpoint keeps receiving new connections, and how many
requests fail meanwhile, for meshpath's two detectors, beside HAProxy's default as reference.

Each run builds a fresh lab (tools/lab: client -> lb -> 3 endpoints, real veth links, real HTTP
servers), starts meshd with one service, drives steady load (client.py steady: CONCURRENCY
workers opening a new connection per request, back to back), kills one endpoint's server 1.5 s
in (its port then answers SYN with RST), and reads the client's own record: the failover time is
from the kill to the last request that failed (the last connection sent to the dead endpoint).

  passive: active checks off; the XDP program counts RSTs answering SYNs and marks the endpoint
           down after passive_fall (3) of them.
  active:  HTTP checks every 100 ms (timeout 50 ms, fall 3), passive detection off.
The HAProxy line is not run here: its default (inter 2 s, fall 3) detects a dead server 4-6 s
after it dies; its failed requests are this run's request rate to one endpoint times that.

Run as root from the repository after a build: bench/failover/failover.py [--runs 5]
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import lab as labmod  # noqa: E402

CONCURRENCY = 4
LOAD_S = 4.0
KILL_AT_S = 1.5
HAPROXY_INTER_S, HAPROXY_FALL = 2.0, 3

MODES = {
    "passive": {"type": "none", "passive_fall": 3, "ejection_time": "60s"},
    "active": {"type": "http", "interval": "100ms", "timeout": "50ms", "rise": 2, "fall": 3,
               "ejection_time": "60s", "passive_fall": 0},
}


def one_run(mode):
    lab = labmod.Lab(3)
    try:
        lab.up()
        svc = {"name": "web", "vip": lab.vip(4), "port": 80, "health": MODES[mode],
               "endpoints": [(lab.ep_address(i, 4), lab.http_port, 1) for i in (1, 2, 3)]}
        lab.start_meshd(lab.write_config([svc]))
        time.sleep(0.5)  # first probes in
        steady = lab.start_steady(lab.vip(4), 80, LOAD_S, concurrency=CONCURRENCY)
        time.sleep(KILL_AT_S)
        killed_at = lab.kill_http_server(3)
        r = json.loads(steady.communicate(timeout=60)[0])
    finally:
        lab.down()
    fails = [t for t, _ in r["failures"] if t >= killed_at - 0.05]
    rate = (r["ok"] + r["failed"]) / (r["end"] - r["start"])
    return {"failover_ms": (max(fails) - killed_at) * 1000 if fails else 0.0,
            "failed": r["failed"], "rate": rate, "ok": r["ok"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("failover.py: needs root (network namespaces, XDP)")

    results = {}
    for mode in MODES:
        results[mode] = []
        for i in range(args.runs):
            res = one_run(mode)
            results[mode].append(res)
            print(f"  {mode} run {i + 1}/{args.runs}: failover {res['failover_ms']:.0f} ms, "
                  f"{res['failed']} failed of {res['ok'] + res['failed']} requests",
                  file=sys.stderr, flush=True)

    rate = statistics.median(r["rate"] for runs in results.values() for r in runs)
    haproxy_ms = HAPROXY_INTER_S * HAPROXY_FALL * 1000
    summary = {}
    for mode, runs in results.items():
        ms = [r["failover_ms"] for r in runs]
        failed = [r["failed"] for r in runs]
        summary[mode] = {"median_ms": statistics.median(ms), "max_ms": max(ms),
                         "failed_median": statistics.median(failed), "failed_max": max(failed)}
    summary["haproxy_default"] = {"median_ms": haproxy_ms, "max_ms": haproxy_ms,
                                  "failed_median": rate / 3 * haproxy_ms / 1000,
                                  "failed_max": rate / 3 * haproxy_ms / 1000}
    if args.json:
        print(json.dumps({"runs": args.runs, "requests_per_s": rate, "modes": summary}))
        return 0

    print(f"\nfailover after an endpoint's server is killed: 3 endpoints, {CONCURRENCY} clients "
          f"opening connections back to back ({rate:.0f} req/s), {args.runs} runs each")
    print(f"{'detector':<34}{'median':>10}{'max':>10}{'failed/run':>12}{'failed max':>12}"
          f"{'HAProxy/this':>14}")
    labels = {"passive": "passive (datapath, 3 RSTs)", "active": "active (HTTP 100 ms x 3)",
              "haproxy_default": "HAProxy default (2 s x 3), ref."}
    for mode, s in summary.items():
        ratio = haproxy_ms / s["median_ms"] if s["median_ms"] else float("inf")
        print(f"{labels[mode]:<34}{s['median_ms']:>8.0f}ms{s['max_ms']:>8.0f}ms"
              f"{s['failed_median']:>12.0f}{s['failed_max']:>12.0f}{ratio:>13.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
