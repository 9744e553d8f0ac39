"""The algorithms beside Maglev, through the real lab: random and round-robin follow the weights;
least-conn steers new connections away from an endpoint that holds many open ones (power of two
choices: it is picked only when both candidates are it, 1/9 of the time with three endpoints);
least-latency measures each endpoint's SYN -> SYN-ACK time in the datapath."""
import time
import unittest

from e2e_base import SPREAD_SAMPLE, LabTestCase


class Algorithms(LabTestCase):
    ENDPOINTS = 3

    def algorithm_service(self, algorithm, weights):
        svc = self.service("web", 80, weights)
        svc["algorithm"] = algorithm
        return svc

    def test_random_follows_the_weights(self):
        weights = {1: 1, 2: 2, 3: 1}
        self.start([self.algorithm_service("random", weights)])
        self.assertEqual(self.lab.meshctl_json("service", "show", "web")["algorithm"], "random")
        r = self.burst_ok(80, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], weights, "random")

    def test_round_robin_follows_the_weights(self):
        weights = {1: 1, 2: 2, 3: 1}
        self.start([self.algorithm_service("round-robin", weights)])
        r = self.burst_ok(80, SPREAD_SAMPLE)
        # Each CPU walks the interleaved ring on its own, so the shares are exact per CPU; the
        # tolerance only absorbs where each CPU's walk stopped.
        self.assertSpread(r["by_endpoint"], weights, "round-robin")

    def active_conns(self, i):
        show = self.lab.meshctl_json("service", "show", "web")
        return next(e for e in show["endpoints"] if (e["address"], e["port"]) == self.ep(i))[
            "active_conns"]

    def test_least_conn_avoids_the_endpoint_holding_connections(self):
        # ep1 alone first, so every held connection lands there; then the others join.
        services = [self.algorithm_service("least-conn", {1: 1, 2: 0, 3: 0})]
        self.start(services)
        held = [self.lab.session(self.vip, 80) for _ in range(6)]
        for s in held:
            got = s.get()
            self.assertEqual(got.get("endpoint"), "ep1", got)
        for i in (2, 3):
            self.lab.meshctl("endpoint", "set-weight", "web", self.ep_key(i), "1")
        self.assertEqual(self.active_conns(1), 6)

        # One connection at a time, so ep2 and ep3 hold none while a new one chooses.
        n = 900
        r = self.burst_ok(80, n, concurrency=1)
        share = r["by_endpoint"].get("ep1", 0) / n
        print(f"\n  least-conn: ep1 (6 open connections) took {share * 100:.1f}% of {n} new ones "
              "(1/9 = 11.1% expected, 33.3% by weight)")
        # sigma = sqrt(p(1-p)/n) = 1.05 pp at p = 1/9: 20% is > 8 sigma above, 33% far below it.
        self.assertLess(share, 0.20, r)
        for s in held:
            got = s.get()
            self.assertEqual(got.get("endpoint"), "ep1", "a held connection moved")
        self.assertEqual([self.active_conns(i) for i in (1, 2, 3)], [6, 0, 0],
                         "the short connections all closed; only the held ones are open")

        # The counts live in a pinned map: a crashed and restarted meshd still sees them (and
        # its start-up recount over the connection table agrees).
        self.lab.kill_meshd()
        self.lab.start_meshd(self.lab.write_config(services))
        self.assertEqual([self.active_conns(i) for i in (1, 2, 3)], [6, 0, 0])
        for s in held[:2]:
            s.close()
        time.sleep(0.2)
        self.assertEqual(self.active_conns(1), 4, "two closed after the restart")

    def test_least_latency_measures_each_endpoint(self):
        self.start([self.algorithm_service("least-latency", {1: 1, 2: 1, 3: 1})])
        r = self.burst_ok(80, 600)
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2", "ep3"}, r)
        svc, eps = self.endpoint_health()
        for key, ep in eps.items():
            rtt = ep["datapath"]["rtt_us"]
            self.assertIsNotNone(rtt, f"{key}: no SYN -> SYN-ACK time measured: {ep}")
            self.assertGreater(rtt, 0, ep)
            self.assertLess(rtt, 100000, ep)


if __name__ == "__main__":
    unittest.main()
