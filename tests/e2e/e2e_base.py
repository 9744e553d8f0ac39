"""e2e_base.py — what every e2e test shares: its own lab (unique prefix, torn down however the
test ends), services written for a family, and assertions on how traffic spread."""
import http.client
import json
import os
import socket
import time
import unittest

import lab as labmod

SPREAD_TOLERANCE_PP = 5.0  # percentage points between an endpoint's share and its weight share
# New connections per spread check. Each lands on an endpoint as independently as the flow hash
# makes it, so a share's standard deviation is sqrt(p(1-p)/n): at most 1 pp here (p = 0.5), which
# puts the 5 pp tolerance at >= 5 sigma. Smaller samples (300 .. 1200) sat at 1.7 .. 3.7 sigma
# and failed now and then by chance alone (e.g. 38.7% for a 33.3% share in 900).
SPREAD_SAMPLE = 2500


class UnixHTTPConnection(http.client.HTTPConnection):
    """meshd's REST API over its unix socket."""

    def __init__(self, path):
        super().__init__("meshd", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def require_prerequisites():
    problems = []
    if os.geteuid() != 0:
        problems.append("e2e tests need root (network namespaces, XDP)")
    for what, path in (("meshd", labmod.MESHD), ("meshctl", labmod.MESHCTL)):
        if not os.access(path, os.X_OK):
            problems.append(f"{what} not found at {path} (build first: scripts/build.sh)")
    if problems:
        raise RuntimeError("; ".join(problems))


class LabTestCase(unittest.TestCase):
    ENDPOINTS = 3
    FAMILY = 4
    LAB_OPTIONS = {}  # more keyword arguments of lab.Lab (client_addrs, snat_pool, scale, ...)

    def setUp(self):
        require_prerequisites()
        self.lab = labmod.Lab(self.ENDPOINTS, **self.LAB_OPTIONS)
        self.addCleanup(self.lab.down)
        self.lab.up()

    # --- building services for this test's family ---

    @property
    def vip(self):
        return self.lab.vip(self.FAMILY)

    def ep(self, i):
        """(address, port) of endpoint i (1-based) in this test's family."""
        return self.lab.ep_address(i, self.FAMILY), self.lab.http_port

    def ep_key(self, i):
        return self.lab.ep_key(i, self.FAMILY)

    def service(self, name, port, weights):
        """weights: {endpoint index: weight}"""
        return {"name": name, "vip": self.vip, "port": port,
                "endpoints": [(*self.ep(i), w) for i, w in sorted(weights.items())]}

    def start(self, services, node=None):
        """node: more keys of the config's node section (lab.Lab.write_config)."""
        self.lab.start_meshd(self.lab.write_config(services, node=node))

    # --- meshd's API and health ---

    def api(self, path, method="GET"):
        c = UnixHTTPConnection(self.lab.socket)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def endpoint_health(self, service="web"):
        status, body = self.api(f"/v1/health/{service}")
        self.assertEqual(status, 200, body)
        svc = body["services"][0]
        return svc, {e["key"]: e for e in svc["endpoints"]}

    def wait_for(self, predicate, limit_s, what, service="web"):
        """Polls /v1/health until predicate(service, endpoints) holds; returns seconds taken."""
        start = time.monotonic()
        while True:
            svc, eps = self.endpoint_health(service)
            if predicate(svc, eps):
                return time.monotonic() - start
            if time.monotonic() - start > limit_s:
                self.fail(f"{what}: not within {limit_s:.2f}s; health: "
                          f"{json.dumps(svc, indent=1)}\n{self.lab.meshd_log()}")
            time.sleep(0.01)

    # --- traffic ---

    def burst_ok(self, port, count, **kw):
        """`count` requests on new connections to VIP:port; all must succeed."""
        r = self.lab.burst(self.vip, port, count, **kw)
        self.assertEqual(r["failed"], 0,
                         f"{r['failed']} of {count} requests failed: {r['errors']}; datapath "
                         f"exceptions: {self.nonzero_exceptions()}\n{self.lab.meshd_log()}")
        self.assertEqual(r["ok"], count)
        return r

    def nonzero_exceptions(self):
        try:
            exc = self.lab.meshctl_json("stats")["exceptions"]
        except Exception as e:  # noqa: BLE001 — only for a failure message
            return f"(stats unavailable: {e})"
        return {k: v for k, v in exc.items() if v}

    def assertSpread(self, counts, weights, what="requests"):
        """counts: {"ep1": n, ...}; weights: {1: w, ...}. Each share within the tolerance."""
        total = sum(counts.values())
        wsum = sum(weights.values())
        report = []
        bad = False
        for i, w in sorted(weights.items()):
            got = 100.0 * counts.get(f"ep{i}", 0) / total if total else 0.0
            want = 100.0 * w / wsum
            bad |= abs(got - want) > SPREAD_TOLERANCE_PP
            report.append(f"ep{i}: {got:.1f}% (weight share {want:.1f}%)")
        unexpected = set(counts) - {f"ep{i}" for i in weights}
        self.assertFalse(unexpected, f"{what} reached endpoints outside the service: {counts}")
        self.assertFalse(bad, f"{what} spread beyond ±{SPREAD_TOLERANCE_PP} pp: " + ", ".join(report))

    def stats_by_endpoint(self, service):
        """new_conns per endpoint name from `meshctl stats SERVICE -o json`."""
        s = self.lab.meshctl_json("stats", service)
        names = {}
        for i in range(1, self.ENDPOINTS + 1):
            names[(self.lab.ep_address(i, self.FAMILY), self.lab.http_port)] = f"ep{i}"
        return {names.get((e["address"], e["port"]), e["address"]): e["new_conns"]
                for e in s["endpoints"]}
