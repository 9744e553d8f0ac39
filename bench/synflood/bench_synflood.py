#!/usr/bin/python3
"""bench_synflood.py — the SYN flood rate absorbed: spoofed SYNs a second the balancer answers
while real clients are served, with syn_protection: always beside the same flood and clients with
syn_protection: off, measured in the same run.

Each mode gets a fresh lab (tools/lab: client -> lb -> 3 endpoints, real veth links, real HTTP
servers) and meshd with one TCP service of 3 endpoints. For SECONDS, pktgen floods the VIP with
spoofed SYNs at its full rate (one sender thread, from lab.sh's spoofed range 10.100.64.0/18,
which the lb routes back to the client, whose kernel drops the answers as a spoofed source's
network would), every SYN a flow of its own, while curl processes open new
connections to the VIP back to back (client.py steady --curl). From the /v1/stats counters read
before and after:

  offered      pktgen's sent / its elapsed time: what reached the lb's link (the machine's
               cores are shared by pktgen, the lb, the endpoints and the clients; offered
               varies between modes and is printed, not held fixed)
  handled      SYNs the XDP program took a decision on a second:
                 always  cookies_sent: SYN-ACKs with a cookie
                 off     new flows sent to an endpoint (the endpoints' new_conns) plus new flows
                         dropped and counted (drop_snat_exhausted, drop_conn_insert,
                         drop_no_endpoint: no SNAT port, table or endpoint left for them)
               The rest of what was offered was lost before the program (the link's ring).
               Both include the real clients' few hundred SYNs.
  answered     SYNs that got a SYN-ACK a second: always, the cookies; off, the new flows sent
               on to an endpoint, whose kernel answers each (with its own SYN cookies once its
               backlog is full). What off drops for want of a SNAT port is handled, not answered.
  to endpts    new connections handed to endpoints a second (endpoints' new_conns): with always
               only the proxied real clients, with off every flood SYN that got through
  real         the curl clients' new connections: how many succeeded, and a second

The ratios always/off of handled, answered and the real clients' success rate compare figures
taken a minute apart on the same machine in one run; --rounds N repeats the modes in turn
(medians). pktgen shares the 2 cores with the lb's XDP program, so an expensive answer (a
cookie SYN-ACK sent back) slows what is offered: offered and its ratio are printed beside.

Run as root from the repository after a build (meshd, meshctl, pktgen):
  bench/synflood/bench_synflood.py [--seconds 5] [--modes always,off[,auto]] [--rounds 1]
  make -C build bench_synflood   (the same, building the binaries first)
Not a test: it reports, it never fails on a figure.
"""
import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

SPOOF_SRC_IP = "10.100.64.1-10.100.65.255"  # 511 addresses in lab.sh's spoofed range
SPOOF_SRC_PORT = "1024-65023"               # 64000 ports
SPOOF_FLOWS = 511 * 64000  # every pair once: no flood SYN repeats a tuple within a run
CURL_CONCURRENCY = 4
CURL_TIMEOUT_S = 3.0
# The drops a new flow's SYN meets in mp_new_conn when protection is off (bpf/abi.h).
NEW_FLOW_DROPS = ("drop_snat_exhausted", "drop_conn_insert", "drop_no_endpoint")


def counters(lab):
    """The counters this bench reads from /v1/stats, for service "web"."""
    stats = lab.meshctl_json("stats")
    svc = next(s for s in stats["services"] if s["name"] == "web")
    exc = stats["exceptions"]
    return {"cookies_sent": svc["syn_protection"]["cookies_sent"],
            "acks_valid": svc["syn_protection"]["acks_valid"],
            "to_endpoints": sum(e["new_conns"] for e in svc["endpoints"]),
            "new_flow_drops": sum(exc.get(k, 0) for k in NEW_FLOW_DROPS),
            "drops": {k: v for k, v in exc.items() if k.startswith("drop_")},
            "switched_on": svc["syn_protection"]["switched_on"]}


def one_mode(labmod, mode, seconds):
    lab = labmod.Lab(3)
    try:
        lab.up()
        vip = lab.vip(4)
        svc = {"name": "web", "vip": vip, "port": 80, "syn_protection": mode,
               "endpoints": [(lab.ep_address(i, 4), lab.http_port, 1) for i in (1, 2, 3)]}
        lab.start_meshd(lab.write_config([svc]))
        warm = lab.burst(vip, 80, 20, concurrency=CURL_CONCURRENCY, timeout=CURL_TIMEOUT_S,
                         curl=True)
        if warm["failed"]:
            raise RuntimeError(f"{mode}: real clients fail before any flood: {warm['errors']}")
        before = counters(lab)
        steady = lab.start_steady(vip, 80, duration=seconds, concurrency=CURL_CONCURRENCY,
                                  timeout=CURL_TIMEOUT_S, curl=True)
        lab.background.append(("steady clients", steady))
        sent = lab.pktgen_send(vip, 80, "tcp-syn", SPOOF_SRC_IP, SPOOF_SRC_PORT,
                               flows=SPOOF_FLOWS, count="1G", duration=seconds,
                               timeout=seconds + 60)
        real = json.loads(steady.communicate(timeout=4 * CURL_TIMEOUT_S + seconds + 60)[0])
        after = counters(lab)
    finally:
        lab.down()

    flood_s = sent["elapsed_s"]
    real_s = real["end"] - real["start"]
    delta = {k: after[k] - before[k] for k in after if k != "drops"}
    drops = {k: v - before["drops"].get(k, 0) for k, v in after["drops"].items()
             if v - before["drops"].get(k, 0)}
    handled = delta["cookies_sent"] if mode == "always" else \
        delta["to_endpoints"] + delta["new_flow_drops"]
    if mode == "auto":  # the proxy answers once the guard switches it on; before that, off's way
        handled = delta["cookies_sent"] + delta["to_endpoints"] + delta["new_flow_drops"]
    answered = delta["cookies_sent"] + (delta["to_endpoints"] if mode != "always" else 0)
    attempts = real["ok"] + real["failed"]
    return {"mode": mode,
            "offered_pps": sent["sent"] / flood_s, "sent": sent["sent"], "flood_s": flood_s,
            "backend": sent["backend"],
            "handled_pps": handled / flood_s, "answered_pps": answered / flood_s,
            "cookies_pps": delta["cookies_sent"] / flood_s,
            "to_endpoints_pps": delta["to_endpoints"] / flood_s,
            "dropped_pps": delta["new_flow_drops"] / flood_s,
            "drops": drops, "switched_on": delta["switched_on"],
            "real_ok": real["ok"], "real_attempts": attempts,
            "real_success": real["ok"] / attempts if attempts else 0.0,
            "real_ok_per_s": real["ok"] / real_s, "real_attempts_per_s": attempts / real_s,
            "real_errors": [e[:100] for e in real["errors"][:2]]}


def median_row(runs):
    row = dict(runs[-1])
    for k, v in runs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            row[k] = statistics.median(r[k] for r in runs)
    return row


def ratio(a, b):
    return a / b if b else float("inf")


def print_table(rows, seconds, rounds):
    print(f"\nSYN flood absorbed: one TCP service, 3 endpoints; {seconds:g} s of spoofed SYNs "
          f"(pktgen, 1 thread, {rows[0]['backend']}, every SYN a new flow) beside "
          f"{CURL_CONCURRENCY} curl clients opening new connections"
          + (f"; medians of {rounds} rounds" if rounds > 1 else ""))
    print(f"{'syn_protection':<16}{'offered':>9}{'handled':>9}{'answered':>10}{'dropped':>9}"
          f"{'to endpts':>11}{'real clients ok':>18}{'real conn/s':>13}")
    print(f"{'':<16}{'Mpps':>9}{'Mpps':>9}{'Mpps':>10}{'Mpps':>9}{'/s':>11}"
          f"{'(new connections)':>18}{'ok (tried)':>13}")
    for r in rows:
        ok = f"{r['real_ok']:.0f}/{r['real_attempts']:.0f} {100 * r['real_success']:.1f}%"
        rate = f"{r['real_ok_per_s']:.1f} ({r['real_attempts_per_s']:.1f})"
        print(f"{r['mode']:<16}{r['offered_pps'] / 1e6:>9.3f}{r['handled_pps'] / 1e6:>9.3f}"
              f"{r['answered_pps'] / 1e6:>10.3f}{r['dropped_pps'] / 1e6:>9.3f}"
              f"{r['to_endpoints_pps']:>11.0f}{ok:>18}{rate:>13}")
    by_mode = {r["mode"]: r for r in rows}
    if "always" in by_mode and "off" in by_mode:
        a, o = by_mode["always"], by_mode["off"]
        print(f"always/off: handled {ratio(a['handled_pps'], o['handled_pps']):.2f}x, "
              f"answered {ratio(a['answered_pps'], o['answered_pps']):.2f}x, "
              f"real clients' success {ratio(a['real_success'], o['real_success']):.2f}x, "
              f"real connections/s {ratio(a['real_ok_per_s'], o['real_ok_per_s']):.2f}x "
              f"(offered {ratio(a['offered_pps'], o['offered_pps']):.2f}x)")
    for r in rows:
        if r["drops"] or r["real_errors"]:
            print(f"  {r['mode']}: drops {r['drops']}; real clients' first errors: "
                  + "; ".join(r["real_errors"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="flood duration (default 5)")
    ap.add_argument("--modes", default="always,off",
                    help="syn_protection values to run, in this order (always,off,auto)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each mode, in turn")
    ap.add_argument("--build", help="build directory (default: $MESHPATH_BUILD_DIR or ./build);"
                    " MESHPATH_MESHD, _MESHCTL, _PKTGEN still win")
    ap.add_argument("--out", help="directory to write results.json into")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_synflood.py: needs root (network namespaces, XDP)")
    modes = args.modes.split(",")
    if not set(modes) <= {"always", "off", "auto"}:
        sys.exit(f"bench_synflood.py: --modes {args.modes}: always, off or auto")
    build = args.build or os.environ.get("MESHPATH_BUILD_DIR")
    if build:
        for var, rel in (("MESHPATH_MESHD", "userspace/meshd/meshd"),
                         ("MESHPATH_MESHCTL", "tools/meshctl/meshctl"),
                         ("MESHPATH_PKTGEN", "tools/pktgen/pktgen")):
            os.environ.setdefault(var, os.path.join(build, rel))
    import lab as labmod  # after --build: lab.py reads the binaries' paths at import
    for path in (labmod.MESHD, labmod.MESHCTL, labmod.PKTGEN):
        if not os.access(path, os.X_OK):
            sys.exit(f"bench_synflood.py: {path} not built (meshd, meshctl and pktgen targets)")

    runs = {m: [] for m in modes}
    for i in range(args.rounds):
        for m in modes:
            r = one_mode(labmod, m, args.seconds)
            runs[m].append(r)
            print(f"  {m} round {i + 1}/{args.rounds}: offered {r['offered_pps'] / 1e6:.3f} Mpps,"
                  f" handled {r['handled_pps'] / 1e6:.3f} Mpps, real clients "
                  f"{r['real_ok']}/{r['real_attempts']} ok", file=sys.stderr, flush=True)
            time.sleep(1)  # the lab's namespaces and links gone before the next one
    rows = [median_row(runs[m]) for m in modes]
    result = {"seconds": args.seconds, "rounds": args.rounds, "rows": rows, "runs": runs}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(result, f, indent=2)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(rows, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
