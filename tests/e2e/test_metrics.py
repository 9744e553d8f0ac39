"""/metrics scraped by a real Prometheus (Debian's /usr/bin/prometheus), run in the lab's lb
namespace beside meshd, which listens on its default node.metrics_listen (127.0.0.1:9464 in that
namespace). Prometheus scrapes every second; the test asks it, through its HTTP API, what it saw:

- N requests on new connections through the VIP show up as exactly N new connections of the
  service (and N over its endpoints together). Health probes are not in that count: meshd sends
  them from the lb's own address straight to each endpoint's address, never to the VIP, so the
  datapath never balances them as a connection of the service;
- an endpoint whose server is killed is ejected by the active HTTP check: Prometheus sees
  meshpath_endpoint_ejections_total >= 1 and meshpath_endpoint_up 0 for it, 1 for the others;
- meshpath_build_info names the XDP program and its kernel tag.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from e2e_base import LabTestCase

PROMETHEUS = os.environ.get("MESHPATH_PROMETHEUS", "/usr/bin/prometheus")
PROM_LISTEN = "127.0.0.1:9090"  # in the lb namespace: each lab has its own
METRICS_TARGET = "127.0.0.1:9464"  # meshd's default node.metrics_listen
REQUESTS = 200
KILLED = 3  # the endpoint whose server is killed


class PrometheusScrape(LabTestCase):
    ENDPOINTS = 3

    def setUp(self):
        if not os.access(PROMETHEUS, os.X_OK):
            self.skipTest(f"{PROMETHEUS} not installed (Debian package prometheus)")
        super().setUp()
        svc = self.service("web", 80, {1: 1, 2: 1, 3: 1})
        # Active checks alone, fast (the datapath's passive detection is test_passive's), and an
        # ejection long enough to outlast the test.
        svc["health"] = {"type": "http", "interval": "100ms", "timeout": "50ms", "rise": 2,
                         "fall": 3, "ejection_time": "60s", "passive_fall": 0}
        self.start([svc])
        self.prom = None
        self.prom_dir = tempfile.mkdtemp(prefix="meshpath-prom-")
        try:
            self.start_prometheus()
        except BaseException:
            self.stop_prometheus()
            raise

    def tearDown(self):
        self.stop_prometheus()

    # --- Prometheus in the lb namespace ---

    def start_prometheus(self):
        config = os.path.join(self.prom_dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: meshpath\n"
                    "    static_configs:\n"
                    f"      - targets: ['{METRICS_TARGET}']\n")
        self.prom_log = open(os.path.join(self.prom_dir, "prometheus.log"), "w")
        self.prom = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.env["lb"]["ns"], PROMETHEUS,
             f"--config.file={config}", f"--storage.tsdb.path={self.prom_dir}/data",
             f"--web.listen-address={PROM_LISTEN}", "--log.level=warn"],
            stdout=self.prom_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            res = self.curl("/-/ready", check=False)
            if res.returncode == 0:
                break
            if self.prom.poll() is not None or time.monotonic() > deadline:
                self.fail(f"Prometheus not ready (exit {self.prom.poll()}):\n{self.prom_tail()}")
            time.sleep(0.2)

    def stop_prometheus(self):
        if self.prom is not None and self.prom.poll() is None:
            self.prom.terminate()
            try:
                self.prom.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        self.prom = None
        if getattr(self, "prom_log", None) is not None:
            self.prom_log.close()
            self.prom_log = None
        if getattr(self, "prom_dir", None):
            shutil.rmtree(self.prom_dir, ignore_errors=True)
            self.prom_dir = None

    def prom_tail(self, lines=30):
        try:
            with open(os.path.join(self.prom_dir, "prometheus.log")) as f:
                return "prometheus log (tail):\n" + "".join(f.readlines()[-lines:])
        except (OSError, TypeError):
            return "(no prometheus log)"

    def curl(self, path, params=(), check=True):
        """GET http://PROM_LISTEN/path from inside the lb namespace (Prometheus listens there)."""
        argv = ["ip", "netns", "exec", self.lab.env["lb"]["ns"], "curl", "-sf", "--max-time", "5",
                "-G", f"http://{PROM_LISTEN}{path}"]
        for k, v in params:
            argv += ["--data-urlencode", f"{k}={v}"]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            self.fail(f"curl {path} {params}: exit {res.returncode} {res.stderr}\n{self.prom_tail()}")
        return res

    def query(self, expr):
        """[(labels, sample time, value)] of an instant query."""
        body = json.loads(self.curl("/api/v1/query", [("query", expr)]).stdout)
        self.assertEqual(body["status"], "success", body)
        return [(r["metric"], float(r["value"][0]), float(r["value"][1]))
                for r in body["data"]["result"]]

    def one(self, expr):
        """(sample time, value) of a query that has exactly one series."""
        rows = self.query(expr)
        self.assertEqual(len(rows), 1, f"{expr}: {rows}")
        return rows[0][1], rows[0][2]

    def scraped_after(self, expr, since, limit_s=20):
        """Waits for a sample of `expr` (one series) scraped after `since` (wall clock); returns
        its value. (An instant query's own time is when it was evaluated; timestamp() gives the
        scrape's. The value asked next is of that scrape or a later one.)"""
        deadline = time.monotonic() + limit_s
        while True:
            rows = self.query(f"timestamp({expr})")
            if len(rows) == 1 and rows[0][2] > since:
                rows = self.query(expr)
                self.assertEqual(len(rows), 1, f"{expr}: {rows}")
                return rows[0][2]
            if time.monotonic() > deadline:
                self.fail(f"{expr}: no sample scraped after {since:.3f} within {limit_s}s: {rows}; "
                          f"targets: {self.curl('/api/v1/targets').stdout}\n{self.prom_tail()}")
            time.sleep(0.25)

    # --- the test ---

    def test_prometheus_sees_connections_ejections_and_build_info(self):
        # Prometheus reaches meshd's default metrics_listen: the target is up.
        started = time.time()
        self.assertEqual(self.scraped_after('up{job="meshpath"}', started), 1)

        # meshd's own account of the service before any traffic: nothing balanced yet.
        web = 'meshpath_service_connections_total{job="meshpath",service="web"}'
        self.assertEqual(self.scraped_after(web, started), 0)

        self.burst_ok(80, REQUESTS)
        sent = time.time()
        # The first scrape that began after the last answer holds every one of the N SYNs. Each
        # request is a new connection to VIP:80 (client.py burst), counted once when the
        # datapath balances its SYN; health probes go to the endpoints' own addresses, never to
        # the VIP, so they are not among them.
        self.assertEqual(self.scraped_after(web, sent), REQUESTS)
        _, per_endpoint = self.one(
            'sum(meshpath_endpoint_connections_total{job="meshpath",service="web"})')
        self.assertEqual(per_endpoint, REQUESTS)
        # The same number meshctl reads (both come from readDatapathStats).
        self.assertEqual(self.lab.meshctl_json("stats", "web")["new_conns"], REQUESTS)

        # The program tag: the kernel's 8-byte tag of the running XDP program, in hex.
        rows = self.query('meshpath_build_info{job="meshpath"}')
        self.assertEqual(len(rows), 1, rows)
        labels, _, value = rows[0]
        self.assertEqual(value, 1)
        self.assertTrue(labels.get("program"), labels)
        self.assertTrue(labels.get("version"), labels)
        self.assertRegex(labels.get("program_tag", ""), r"^[0-9a-f]{16}$", labels)

        # Kill one endpoint's server: its HTTP checks fail (connection refused) and after
        # `fall` of them it is ejected.
        key = self.ep_key(KILLED)
        self.lab.kill_http_server(KILLED)
        ep = f'{{job="meshpath",service="web",endpoint="{key}"}}'
        self.wait_for(lambda s, e: not e[key]["in_ring"], 10, f"{key} ejected")
        ejected = time.time()
        self.assertGreaterEqual(self.scraped_after("meshpath_endpoint_ejections_total" + ep,
                                                   ejected), 1)
        self.assertEqual(self.scraped_after("meshpath_endpoint_up" + ep, ejected), 0)
        self.assertGreaterEqual(
            self.scraped_after(f'meshpath_endpoint_transitions_total{{job="meshpath",service="web",'
                               f'endpoint="{key}",to="down"}}', ejected), 1)
        for i in range(1, self.ENDPOINTS + 1):
            if i == KILLED:
                continue
            other = f'{{job="meshpath",service="web",endpoint="{self.ep_key(i)}"}}'
            self.assertEqual(self.scraped_after("meshpath_endpoint_up" + other, ejected), 1)
            self.assertEqual(self.scraped_after("meshpath_endpoint_ejections_total" + other,
                                                ejected), 0)
        # The active removal was timed (first failed probe -> out of the rings).
        self.assertGreaterEqual(self.scraped_after(
            'meshpath_endpoint_removal_seconds_count{job="meshpath",signal="active"}', ejected), 1)
        self.assertEqual(self.scraped_after('meshpath_service_panic{job="meshpath",service="web"}',
                                            ejected), 0)
        # Connections counted before the kill stay counted: a counter never goes back.
        self.assertEqual(self.scraped_after(web, ejected), REQUESTS)


if __name__ == "__main__":
    unittest.main()
