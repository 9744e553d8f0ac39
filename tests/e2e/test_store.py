"""meshd --store etcd://...: a real three-member etcd cluster (etcd-server) in the lab's lb
namespace holds the services and endpoints; meshd watches it and the XDP datapath follows, with
real HTTP clients through the VIP. Endpoints register themselves with a lease from their own
namespaces (`meshctl register`), and leave when it lapses. With every etcd member down the node
keeps forwarding its last known state (across a kill -9 of meshd too) and resyncs without a
change when etcd is back."""
import json
import os
import signal
import subprocess
import time
import unittest

import etcd_cluster
import lab as labmod
from e2e_base import LabTestCase

PREFIX = "/meshpath"


def desired(services):
    """What the services say, without ids and counters."""
    return sorted(
        (s["name"], s["vip"], s["port"], s["protocol"], s["algorithm"], s["forwarding"],
         tuple(sorted((e["address"], e["port"], e["weight"]) for e in s["endpoints"])))
        for s in services)


def service_value(vip, port):
    return json.dumps({"vip": vip, "port": port, "protocol": "tcp"})


class EtcdStore(LabTestCase):
    FAMILY = 4
    LISTEN_ON_LB = False  # etcd also on the lb's endpoint-side address (registration tests)

    def setUp(self):
        if not etcd_cluster.available():
            self.skipTest("etcd-server / etcd-client not installed (apt-get install etcd-server "
                          "etcd-client)")
        super().setUp()
        listen = [self.lab.env["lb"]["ipv4"]] if self.LISTEN_ON_LB else []
        self.etcd = etcd_cluster.EtcdCluster(
            self.lab.env["lb"]["ns"], os.path.join(self.lab.state_dir, "etcd"),
            listen_addrs=listen)
        self.addCleanup(self.etcd.down)
        self.etcd.up()
        self.start_store_meshd()

    def start_store_meshd(self):
        # No services in the config file: they come from etcd.
        self.lab.start_meshd(self.lab.write_config([]), args=("--store", self.etcd.store_url()))

    # --- helpers ---

    def put_service(self, name, port, endpoints):
        """endpoints: {endpoint index: weight}"""
        self.etcd.put(f"{PREFIX}/services/{name}", service_value(self.vip, port))
        for i, w in endpoints.items():
            self.etcd.put(f"{PREFIX}/endpoints/{name}/{self.ep_key(i)}", json.dumps({"weight": w}))

    def endpoints_of(self, name):
        for s in self.lab.meshctl_json("service", "list"):
            if s["name"] == name:
                return {f"{e['address']}:{e['port']}": e["weight"] for e in s["endpoints"]}
        return None

    def wait_endpoints(self, name, want, limit_s=10):
        """Until service `name` has exactly the endpoint indexes of `want` (None: no service)."""
        want_keys = None if want is None else {self.ep_key(i) for i in want}
        start = time.monotonic()
        while True:
            eps = self.endpoints_of(name)
            got = None if eps is None else set(eps)
            if got == want_keys:
                return time.monotonic() - start
            if time.monotonic() - start > limit_s:
                self.fail(f"service {name}: endpoints {got}, want {want_keys} within {limit_s}s\n"
                          f"etcd: {self.etcd.get_prefix(PREFIX)}\n{self.lab.meshd_log()}")
            time.sleep(0.05)

    def store_status(self):
        return self.lab.meshctl_json("status")["store"]

    def wait_store(self, connected, limit_s=10):
        start = time.monotonic()
        while True:
            st = self.store_status()
            if st["connected"] == connected and (not connected or st["synced"]):
                return st
            if time.monotonic() - start > limit_s:
                self.fail(f"store connected={st['connected']}, want {connected}: {st}\n"
                          f"{self.lab.meshd_log()}")
            time.sleep(0.1)

    def event_kinds(self):
        out = self.lab.meshctl("-o", "json", "events").stdout
        return [json.loads(line)["kind"] for line in out.splitlines() if line.strip()]


class StoreIsTheSource(EtcdStore):
    def test_changes_in_etcd_and_through_meshctl(self):
        st = self.wait_store(True)
        self.assertEqual(st["kind"], "etcd")
        self.assertIsNone(self.endpoints_of("web"))

        # Written with etcdctl, as any program could.
        self.put_service("web", 80, {1: 1, 2: 1})
        took = self.wait_endpoints("web", {1, 2})
        print(f"etcdctl put -> service in meshd: {took * 1000:.0f} ms")
        r = self.burst_ok(80, 300)
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2"}, r)

        # Through meshctl: written to etcd, and live here.
        self.lab.meshctl("endpoint", "add", "web", self.ep_key(3), "--weight", "2")
        keys = self.etcd.get_prefix(PREFIX)
        self.assertEqual(json.loads(keys[f"{PREFIX}/endpoints/web/{self.ep_key(3)}"]),
                         {"weight": 2}, keys)
        r = self.burst_ok(80, 400)
        self.assertIn("ep3", r["by_endpoint"], r)
        self.lab.meshctl("service", "add", "api", "--vip", self.vip, "--port", "81",
                         "--endpoint", f"{self.ep_key(2)}@1")
        self.assertIn(f"{PREFIX}/services/api", self.etcd.get_prefix(PREFIX))
        self.assertEqual(self.burst_ok(81, 50)["by_endpoint"], {"ep2": 50})

        # A bad value written by someone else is left out and reported; nothing else changes.
        self.etcd.put(f"{PREFIX}/services/broken", json.dumps({"vip": "not-an-address",
                                                                "port": 82}))
        self.etcd.put(f"{PREFIX}/endpoints/web/nonsense", "{}")
        deadline = time.monotonic() + 10
        while True:
            left_out = {p["key"] for p in self.store_status()["keys_left_out"]}
            if {f"{PREFIX}/services/broken", f"{PREFIX}/endpoints/web/nonsense"} <= left_out:
                break
            self.assertLess(time.monotonic(), deadline, f"bad keys not reported: {left_out}")
            time.sleep(0.1)
        self.assertEqual(set(self.endpoints_of("web")), {self.ep_key(i) for i in (1, 2, 3)})
        self.burst_ok(80, 200)
        self.assertIn("store_refused", self.event_kinds())

        # Deleted in etcd: gone here.
        self.etcd.delete(f"{PREFIX}/endpoints/web/{self.ep_key(1)}")
        self.wait_endpoints("web", {2, 3})
        r = self.burst_ok(80, 300)
        self.assertNotIn("ep1", r["by_endpoint"], r)
        self.lab.meshctl("service", "del", "api")
        self.wait_endpoints("api", None)
        self.assertNotIn(f"{PREFIX}/services/api", self.etcd.get_prefix(PREFIX))


class Registration(EtcdStore):
    LISTEN_ON_LB = True

    def register(self, i, ttl="2s"):
        """meshctl register from endpoint i's own namespace; returns (process, first JSON line)."""
        url = self.etcd.store_url(host=self.lab.env["lb"]["ipv4"])
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ep_ns(i), labmod.MESHCTL, "-o", "json", "register",
             "web", self.ep_key(i), "--ttl", ttl, "--store", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait()))
        line = p.stdout.readline()
        self.assertTrue(line, f"meshctl register said nothing: {p.stderr.read() if p.poll() is not None else ''}")
        first = json.loads(line)
        self.assertEqual(first["event"], "registered", first)
        return p, first

    def test_lease_brings_and_takes_the_endpoint(self):
        self.wait_store(True)
        self.put_service("web", 80, {1: 1})
        self.wait_endpoints("web", {1})

        reg, first = self.register(2, ttl="2s")
        took = self.wait_endpoints("web", {1, 2})
        print(f"register -> endpoint in meshd: {took * 1000:.0f} ms (lease {first['lease']})")
        r = self.burst_ok(80, 300)
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2"}, r)
        time.sleep(3)  # longer than the TTL: the keepalives hold it
        self.assertEqual(set(self.endpoints_of("web")), {self.ep_key(1), self.ep_key(2)})

        # The endpoint's host dies: no revoke, the lease lapses.
        reg.kill()
        reg.wait()
        took = self.wait_endpoints("web", {1}, limit_s=8)
        print(f"registrant killed -> endpoint out of meshd: {took * 1000:.0f} ms (ttl 2 s)")
        self.assertNotIn("ep2", self.burst_ok(80, 200)["by_endpoint"])

        # A clean stop revokes the lease: out at once.
        reg, _ = self.register(2, ttl="10s")
        self.wait_endpoints("web", {1, 2})
        reg.send_signal(signal.SIGINT)
        out, err = reg.communicate(timeout=10)
        self.assertEqual(reg.returncode, 0, err)
        self.assertIn("deregistered", out)
        took = self.wait_endpoints("web", {1}, limit_s=2)
        print(f"registrant stopped -> endpoint out of meshd: {took * 1000:.0f} ms (ttl 10 s)")


class Outage(EtcdStore):
    def test_etcd_down_keeps_forwarding_and_resyncs_without_a_change(self):
        self.wait_store(True)
        self.put_service("web", 80, {1: 1, 2: 1, 3: 1})
        self.wait_endpoints("web", {1, 2, 3})
        before = desired(self.lab.meshctl_json("service", "list"))

        sessions = [self.lab.session(self.vip, 80) for _ in range(3)]
        first = [s.get() for s in sessions]
        for s in sessions:
            s.start_loop(12)

        self.etcd.stop_all()
        st = self.wait_store(False, limit_s=5)
        self.assertTrue(st["error"], st)
        self.assertIn("store_disconnected", self.event_kinds())
        # Changes are refused, clearly; forwarding goes on.
        res = self.lab.meshctl("endpoint", "set-weight", "web", self.ep_key(1), "5", check=False)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("unreachable", res.stderr + res.stdout)
        r = self.burst_ok(80, 300)
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2", "ep3"}, r)

        # meshd itself restarts while etcd is down: the state file is the last known state.
        self.lab.kill_meshd()
        self.start_store_meshd()
        self.assertEqual(desired(self.lab.meshctl_json("service", "list")), before)
        self.assertFalse(self.store_status()["connected"])
        self.burst_ok(80, 300)

        log = os.path.join(self.lab.state_dir, "meshd.log")
        log_mark = os.path.getsize(log)
        self.etcd.start_all()
        st = self.wait_store(True, limit_s=15)
        time.sleep(0.5)
        with open(log) as f:
            f.seek(log_mark)
            after_log = f.read()
        self.assertNotIn("applied from the store", after_log,
                         "the resync changed the datapath although etcd held the same state")
        self.assertEqual(desired(self.lab.meshctl_json("service", "list")), before)

        for s, got in zip(sessions, first):
            loop = s.read()
            self.assertEqual(loop["failed"], 0, f"an open connection broke: {loop}")
            self.assertEqual(loop["endpoints"], [got["endpoint"]], "a connection moved")

        # And the watch goes on: a change in etcd arrives.
        self.etcd.put(f"{PREFIX}/endpoints/web/{self.ep_key(3)}", json.dumps({"weight": 0}))
        deadline = time.monotonic() + 10
        while self.endpoints_of("web")[self.ep_key(3)] != 0:
            self.assertLess(time.monotonic(), deadline, self.lab.meshd_log())
            time.sleep(0.05)
        self.assertNotIn("ep3", self.burst_ok(80, 300)["by_endpoint"])


if __name__ == "__main__":
    unittest.main()
