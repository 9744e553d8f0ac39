#!/usr/bin/python3
"""bench_store_propagation.py — etcd -> datapath: how long a change written to etcd takes to reach
meshd's datapath (meshd --store), beside how long etcd itself takes to deliver the same change to
a bare watcher in the same run (the floor any etcd-driven balancer stands on).

Setup: a lab (tools/lab, real veth links, the XDP program attached) with a real three-member etcd
cluster in the lb namespace and meshd --store on it, default node config. The store holds
10,000 TCP services of 3 endpoints each (30,000 endpoints; --services and --endpoints change
that), written with the etcd v3 JSON API in transactions of at most 128 operations (etcd's default
--max-txn-ops). How long meshd takes to apply that initial state is reported too.

Three sizes, each timed many times; every change is endpoint weights, the first N endpoints in
service order:
  1        one endpoint (one transaction)
  100      34 services' endpoints (one transaction)
  10,000   3,334 services' endpoints (79 transactions, back to back)
  datapath  from sending the (first) transaction until the last changed service's entry in the
            pinned mp_services map flips to its new ring (watched from another process spinning
            on its own CPU, as in bench/control)
  etcd      from the same moment until a bare watcher on the prefix (etcd's JSON gateway, this
            process) receives the revision of the (last) transaction: etcd's own delivery
And one row for a change asked of meshd (PUT through the REST API): its datapath (applied locally
at once) and the API round trip (answered once etcd has the change).

Run as root from the repository after a build (meshd, meshctl):
  bench/store/bench_store_propagation.py [--reps 100] [--services 10000] [--endpoints 3]
  make -C build bench_store_propagation
Not a test: it reports, it never fails on a figure.
"""
import argparse
import base64
import ctypes
import http.client
import json
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "control"))

import bench_change_latency as control  # noqa: E402  (flip watcher, CPU pinning, quantiles)
import etcd_cluster  # noqa: E402

SERVICES = 10000
ENDPOINTS_PER_SERVICE = 3
PREFIX = "/meshpath"
MAX_TXN_OPS = 128


def b64(s):
    return base64.b64encode(s.encode()).decode()


def service_name(s):
    return f"s{s:04d}"  # names sort in number order: the reconciler's order too


def service_vip(s):
    return f"10.200.{s // 250}.{1 + s % 250}"


def endpoint_address(s, e):
    n = s * ENDPOINTS_PER_SERVICE + e  # nothing is sent to them (no traffic, no health checks)
    return f"10.{101 + n // 62500}.{(n // 250) % 250}.{1 + n % 250}"


def endpoint_key(s, e):
    return f"{PREFIX}/endpoints/{service_name(s)}/{endpoint_address(s, e)}:8080"


class Etcd:
    """The etcd v3 JSON gateway, one keep-alive connection."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, path, body):
        self.conn.request("POST", path, body=json.dumps(body),
                          headers={"Content-Type": "application/json"})
        res = self.conn.getresponse()
        data = json.loads(res.read())
        if res.status != 200:
            raise RuntimeError(f"etcd {path}: {res.status} {data}")
        return data

    def txn(self, puts):
        """puts: [(key, value)]; returns the revision."""
        ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in puts]
        return int(self.call("/v3/kv/txn", {"success": ops})["header"]["revision"])


class BareWatcher:
    """A watch on the prefix in a thread: arrival(rev) is when revision >= rev was delivered."""

    def __init__(self, port):
        self.arrivals = []  # (perf_counter, revision)
        self.cv = threading.Condition()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
        self.conn.request("POST", "/v3/watch", body=json.dumps(
            {"create_request": {"key": b64(PREFIX), "range_end": b64(end)}}))
        self.res = self.conn.getresponse()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            line = self.res.readline()
            if not line:
                return
            now = time.perf_counter()
            msg = json.loads(line).get("result", {})
            if msg.get("events"):
                with self.cv:
                    self.arrivals.append((now, int(msg["header"]["revision"])))
                    self.cv.notify_all()

    def arrival(self, revision, timeout=60):
        with self.cv:
            deadline = time.monotonic() + timeout
            while True:
                for t, rev in self.arrivals:
                    if rev >= revision:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"revision {revision} never reached the bare watcher")
                self.cv.wait(left)


def enter_netns(path):
    """Moves this process into the network namespace at `path`; returns an fd of the one it left."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    return own


def first_endpoints(n):
    """The first n endpoints, (service, endpoint) in service order."""
    return [(s, e) for s in range((n + ENDPOINTS_PER_SERVICE - 1) // ENDPOINTS_PER_SERVICE)
            for e in range(ENDPOINTS_PER_SERVICE)][:n]


def weights_txns(etcd, endpoints, weight):
    """`endpoints` to `weight`, in transactions of <= 128 puts; their revisions."""
    puts = [(endpoint_key(s, e), json.dumps({"weight": weight})) for s, e in endpoints]
    return [etcd.txn(puts[i:i + MAX_TXN_OPS]) for i in range(0, len(puts), MAX_TXN_OPS)]


def run(reps):
    import lab as labmod
    lab = labmod.Lab(3)
    out = {}
    etcd_members = None
    home = None
    try:
        lab.up()
        etcd_members = etcd_cluster.EtcdCluster(lab.env["lb"]["ns"],
                                                os.path.join(lab.state_dir, "etcd"))
        etcd_members.up()
        config = lab.write_config([])
        lab.start_meshd(config, args=("--store", etcd_members.store_url(PREFIX)))
        with open(os.path.join(lab.state_dir, "meshd.pid")) as f:
            control.pin_away_from_watcher(int(f.read()))
        # etcd listens on the lb namespace's loopback. Back out before the lab goes: lab.sh down
        # kills every process left in its namespaces.
        home = enter_netns(f"/run/netns/{lab.env['lb']['ns']}")
        port = etcd_members.client_port(0)
        etcd = Etcd(port)

        # The initial state: 1,000 services, 10,000 endpoints.
        t0 = time.perf_counter()
        puts = []
        for s in range(SERVICES):
            puts.append((f"{PREFIX}/services/{service_name(s)}",
                         json.dumps({"vip": service_vip(s), "port": 80, "protocol": "tcp"})))
            puts += [(endpoint_key(s, e), json.dumps({"weight": 1}))
                     for e in range(ENDPOINTS_PER_SERVICE)]
        for i in range(0, len(puts), MAX_TXN_OPS):
            etcd.txn(puts[i:i + MAX_TXN_OPS])
        written = time.perf_counter() - t0
        while True:
            st = lab.meshctl_json("status")
            if st["endpoints"] == SERVICES * ENDPOINTS_PER_SERVICE:
                break
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"meshd did not take the initial state: {st}")
            time.sleep(0.05)
        out["initial"] = {"services": SERVICES, "endpoints": SERVICES * ENDPOINTS_PER_SERVICE,
                          "written_s": written, "applied_s": time.perf_counter() - t0}

        services_map = os.path.join(lab.env["pin_root"], "mp_services")
        bare = BareWatcher(port)
        time.sleep(0.2)
        for size, n_reps in ((1, reps), (100, max(10, reps // 2)), (10000, max(5, reps // 20))):
            endpoints = first_endpoints(size)
            last = endpoints[-1][0]
            watcher = control.FlipWatcher(services_map, service_vip(last), 80)
            samples = []
            for i in range(n_reps):
                w = 2 if i % 2 == 0 else 1
                t0 = time.perf_counter()
                revs = weights_txns(etcd, endpoints, w)
                datapath = watcher.flip_after(t0)
                delivered = bare.arrival(revs[-1]) - t0
                samples.append((datapath, delivered))
            watcher.close()
            out[size] = samples
            weights_txns(etcd, endpoints, 1)
            time.sleep(0.5)

        # A change asked of meshd itself: applied at once, answered once etcd has it.
        watcher = control.FlipWatcher(services_map, service_vip(1), 80)
        conn = control.UnixHTTPConnection(lab.socket)
        api = []
        for i in range(reps):
            w = 3 if i % 2 == 0 else 1
            api.append(control.timed(conn, watcher, "PUT",
                                     f"/v1/services/{service_name(1)}/endpoints/"
                                     f"{endpoint_address(1, 0)}/8080", json.dumps({"weight": w})))
        watcher.close()
        conn.close()
        out["api"] = api
        out["ring_bytes"] = lab.meshctl_json("service", "show", service_name(0)).get("ring_bytes")
    finally:
        if home is not None:
            enter_netns(f"/proc/self/fd/{home}")
        if etcd_members is not None:
            etcd_members.down()
        lab.down()
    return out


def main():
    global SERVICES, ENDPOINTS_PER_SERVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=100, help="single changes timed (default 100)")
    ap.add_argument("--out", help="directory for results.json")
    ap.add_argument("--services", type=int, default=SERVICES,
                    help=f"services in the store (default {SERVICES}, at most 62,500)")
    ap.add_argument("--endpoints", type=int, default=ENDPOINTS_PER_SERVICE,
                    help=f"endpoints per service (default {ENDPOINTS_PER_SERVICE})")
    args = ap.parse_args()
    SERVICES, ENDPOINTS_PER_SERVICE = args.services, args.endpoints
    if os.geteuid() != 0:
        sys.exit("bench_store_propagation: needs root (network namespaces, XDP)")
    if not etcd_cluster.available():
        sys.exit("bench_store_propagation: needs etcd-server and etcd-client")
    r = run(args.reps)
    init = r["initial"]
    print(f"\ninitial state from etcd: {init['services']} services, {init['endpoints']} endpoints: "
          f"written in {init['written_s']:.2f} s, in meshd's datapath after {init['applied_s']:.2f} s")
    print(f"ring memory per service of {ENDPOINTS_PER_SERVICE} endpoints (ring_size auto): "
          f"{r['ring_bytes']} bytes")
    print("\netcd -> datapath (meshd --store, default config, 3-member etcd): datapath = txn sent "
          "-> the last changed service's entry flips (seen from another process); etcd = txn sent "
          "-> a bare watcher on the prefix has the revision (etcd's own delivery, same run)")
    print(f"{'changes':>8}{'reps':>6}{'datapath p50':>14}{'p99':>9}{'etcd p50':>10}{'p99':>9}"
          f"{'datapath/etcd p99':>19}")
    results = {"initial": init, "ring_bytes": r["ring_bytes"], "rows": []}
    for n in (1, 100, 10000):
        d50, d99 = control.quantiles([d for d, _ in r[n]])
        e50, e99 = control.quantiles([e for _, e in r[n]])
        print(f"{n:>8}{len(r[n]):>6}{d50 * 1e3:>12.2f}ms{d99 * 1e3:>7.2f}ms{e50 * 1e3:>8.2f}ms"
              f"{e99 * 1e3:>7.2f}ms{d99 / e99:>18.2f}x")
        results["rows"].append({"changes": n, "reps": len(r[n]), "datapath_p50_ms": d50 * 1e3,
                                "datapath_p99_ms": d99 * 1e3, "etcd_p50_ms": e50 * 1e3,
                                "etcd_p99_ms": e99 * 1e3, "ratio_p99": d99 / e99})
    d50, d99 = control.quantiles([d for d, _ in r["api"]])
    a50, a99 = control.quantiles([a for _, a in r["api"]])
    print(f"\nPUT through meshd's API with --store ({len(r['api'])} reps): datapath p50 "
          f"{d50 * 1e3:.2f} ms p99 {d99 * 1e3:.2f} ms (applied at once); API round trip p50 "
          f"{a50 * 1e3:.2f} ms p99 {a99 * 1e3:.2f} ms (answered once etcd has it)")
    results["api"] = {"datapath_p50_ms": d50 * 1e3, "datapath_p99_ms": d99 * 1e3,
                      "api_p50_ms": a50 * 1e3, "api_p99_ms": a99 * 1e3}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
