"""Balancing through the VIP with real HTTP over real TCP: spread by weight, open connections
that stay on their endpoint when the set changes, and a deleted service that stops. Run for IPv4
and IPv6; each test brings up its own lab."""
import time
import unittest

from e2e_base import SPREAD_SAMPLE, LabTestCase


class BalanceTests:
    """Mixed into one TestCase per address family."""

    def test_weighted_spread_over_new_connections(self):
        self.start([self.service("web", 80, {1: 1, 2: 1, 3: 2})])
        r = self.burst_ok(80, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], {1: 1, 2: 1, 3: 2})
        # meshd counted the same connections the endpoints answered.
        stats = self.stats_by_endpoint("web")
        self.assertGreaterEqual(sum(stats.values()), SPREAD_SAMPLE, stats)
        self.assertSpread(stats, {1: 1, 2: 1, 3: 2}, what="meshd's new_conns")

    def test_weight_change_moves_new_connections(self):
        self.start([self.service("web", 80, {1: 1, 2: 1, 3: 1})])
        r = self.burst_ok(80, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], {1: 1, 2: 1, 3: 1})
        sessions = [self.lab.session(self.vip, 80) for _ in range(8)]
        opened = [s.get() for s in sessions]
        # Weight 0 drains: no new connection goes to ep3 any more, open ones stay.
        self.lab.meshctl("endpoint", "set-weight", "web", self.ep_key(3), "0")
        r = self.burst_ok(80, 300)
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2"}, r)
        for s, first in zip(sessions, opened):
            self.assertTrue(first["ok"], first)
            got = s.get()
            self.assertTrue(got["ok"], f"an open connection broke on the drain: {got}")
            self.assertEqual(got["endpoint"], first["endpoint"])

    def test_added_endpoint_leaves_open_connections_where_they_are(self):
        self.start([self.service("web", 80, {1: 1, 2: 1})])
        sessions = [self.lab.session(self.vip, 80) for _ in range(12)]
        before = []
        for s in sessions:
            got = s.get()
            self.assertTrue(got["ok"], got)
            before.append((got["endpoint"], got["local_port"]))
        self.assertEqual({e for e, _ in before} - {"ep1", "ep2"}, set(), before)

        self.lab.meshctl("endpoint", "add", "web", self.ep_key(3))
        r = self.burst_ok(80, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], {1: 1, 2: 1, 3: 1})

        for s, (endpoint, port) in zip(sessions, before):
            for _ in range(3):
                got = s.get()
                self.assertTrue(got["ok"], f"open connection broke after the add: {got}")
                self.assertEqual((got["endpoint"], got["local_port"]), (endpoint, port),
                                 "an open connection moved to another endpoint")

    def test_open_connections_ride_the_flow_cache_until_their_endpoint_goes(self):
        """Established packets are served from the per-CPU flow cache. Deleting an endpoint must
        stop its open connections' packets at once (meshd bumps the forwarding generation), not
        when a cache slot expires: the endpoint's server still runs, so a stale slot would make
        the next request succeed there."""
        self.start([self.service("web", 80, {1: 1, 2: 1})])
        hits_before = self.lab.meshctl_json("stats")["flow_cache"]["hits"]
        sessions = [self.lab.session(self.vip, 80) for _ in range(12)]
        first = [s.get() for s in sessions]
        for got in first:
            self.assertTrue(got["ok"], got)
        self.assertEqual({g["endpoint"] for g in first}, {"ep1", "ep2"}, first)
        for _ in range(5):
            for s, f in zip(sessions, first):
                got = s.get()
                self.assertTrue(got["ok"], got)
                self.assertEqual(got["endpoint"], f["endpoint"])
        # 72 requests on open connections; each CPU misses a flow's first packet at most once.
        fc = self.lab.meshctl_json("stats")["flow_cache"]
        self.assertGreaterEqual(fc["hits"] - hits_before, 36, fc)
        self.assertIn("flow cache:", self.lab.meshctl("stats").stdout)

        self.lab.meshctl("endpoint", "del", "web", self.ep_key(2))
        for s, f in zip(sessions, first):
            got = s.get()
            if f["endpoint"] == "ep2":
                self.assertFalse(got["ok"] and got["endpoint"] == "ep2",
                                 f"a deleted endpoint still got an open connection's request: {got}")
            else:
                self.assertTrue(got["ok"], got)
                self.assertEqual(got["endpoint"], "ep1")

    def test_deleted_service_stops_its_traffic(self):
        self.start([self.service("web", 80, {1: 1, 2: 1, 3: 1}),
                    self.service("api", 81, {1: 1, 2: 1})])
        self.burst_ok(80, 200)
        self.burst_ok(81, 100)

        self.lab.meshctl("service", "del", "web")
        names = [s["name"] for s in self.lab.meshctl_json("service", "list")]
        self.assertEqual(names, ["api"])
        time.sleep(0.2)
        r = self.lab.burst(self.vip, 80, 30, concurrency=6, timeout=1.5)
        self.assertEqual(r["ok"], 0, f"the deleted service still answered: {r}")
        # The other service on the same VIP is untouched.
        r = self.burst_ok(81, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], {1: 1, 2: 1})


class SnatPortReuse(LabTestCase):
    """More new connections to one endpoint than the SNAT range has ports (61000-65535: 4536).
    A port must come back once its connection has closed: the clients here close first, so the
    endpoint keeps no TIME_WAIT and the port is free for the next connection. Bursts are 10 s
    apart, room for a short linger after close."""

    ENDPOINTS = 1

    def test_closed_connections_give_their_snat_port_back(self):
        self.start([self.service("web", 80, {1: 1})])
        for i in range(3):
            if i:
                time.sleep(10)
            r = self.lab.burst(self.vip, 80, 2000)
            self.assertEqual(r["failed"], 0,
                             f"burst {i + 1} ({2000 * i} connections before it): {r['failed']} of "
                             f"2000 failed: {r['errors']}; datapath exceptions: "
                             f"{self.nonzero_exceptions()}")


class BalanceIPv4(BalanceTests, LabTestCase):
    FAMILY = 4


class BalanceIPv6(BalanceTests, LabTestCase):
    FAMILY = 6


if __name__ == "__main__":
    unittest.main(verbosity=2)


class ForwardingModes(LabTestCase):
    """Full NAT (nat, the default) and source-preserving DNAT (dnat) side by side on one node: a
    dnat endpoint sees the client's own address and port and answers through the balancer (the
    lab routes endpoints via the lb); a nat endpoint sees the node's address."""
    ENDPOINTS = 3

    def test_dnat_preserves_the_client_and_nat_does_not(self):
        nat = self.service("web", 80, {1: 1, 2: 1, 3: 1})
        dnat = self.service("direct", 81, {1: 1, 2: 1, 3: 1})
        dnat["forwarding"] = "dnat"
        # epserver listens on one port: the dnat service's VIP port differs, its endpoints don't;
        # one endpoint address:port may be in one dnat service and any nat services.
        self.start([nat, dnat])
        r = self.burst_ok(81, SPREAD_SAMPLE)  # a spread check needs its sample (e2e_base)
        self.assertSpread(r["by_endpoint"], {1: 1, 2: 1, 3: 1})
        self.burst_ok(80, 300)

        client = self.lab.env["client"]["ipv4" if self.FAMILY == 4 else "ipv6"]
        for port, expect_client in ((81, True), (80, False)):
            sessions = [self.lab.session(self.vip, port) for _ in range(6)]
            for s in sessions:
                for _ in range(2):
                    got = s.get()
                    self.assertTrue(got["ok"], got)
                    host, _, peer_port = got["peer"].rpartition(":")
                    host = host.removeprefix("::ffff:")  # a dual-stack server's IPv4 peer
                    if expect_client:
                        self.assertEqual(host, client, got)
                        self.assertEqual(int(peer_port), got["local_port"], got)
                    else:
                        self.assertNotEqual(host, client, got)
        status = self.lab.meshctl_json("status")
        self.assertIn("connections", status)
        self.assertGreater(status["connections"]["bytes_per_connection"], 0, status)


class ForwardingModesIPv6(ForwardingModes):
    FAMILY = 6
