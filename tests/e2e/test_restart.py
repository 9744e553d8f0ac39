"""kill -9 of meshd while a client streams over an open connection: the connection survives,
new connections keep balancing (also while no daemon runs), and the restarted meshd shows the
same services, endpoints and weights, including those changed through the API before the kill."""
import time
import unittest

from e2e_base import SPREAD_SAMPLE, LabTestCase


def desired(services):
    """What a user set, without ids and counters."""
    return sorted(
        (s["name"], s["vip"], s["port"], s["protocol"], s["algorithm"], s["forwarding"],
         tuple(sorted((e["address"], e["port"], e["weight"]) for e in s["endpoints"])))
        for s in services)


class RestartTests(LabTestCase):
    FAMILY = 4

    def test_kill_9_keeps_connections_and_state(self):
        self.start([self.service("web", 80, {1: 1, 2: 1})])
        # Changes made through the API only; the config file still says ep1, ep2 at weight 1.
        self.lab.meshctl("endpoint", "add", "web", self.ep_key(3), "--weight", "2")
        self.lab.meshctl("endpoint", "set-weight", "web", self.ep_key(1), "3")
        self.lab.meshctl("service", "add", "api", "--vip", self.vip, "--port", "81",
                         "--endpoint", f"{self.ep_key(2)}@5")
        before = desired(self.lab.meshctl_json("service", "list"))
        weights = {1: 3, 2: 1, 3: 2}

        sessions = [self.lab.session(self.vip, 80) for _ in range(4)]
        first = [s.get() for s in sessions]
        for got in first:
            self.assertTrue(got["ok"], got)
        for s in sessions:
            s.start_loop(6)
        # And one slow response, 50 lines over 5 s, in flight across the kill and the restart.
        streaming = self.lab.session(self.vip, 80)
        streaming.start_stream(50, 0.1)

        time.sleep(1)
        self.lab.kill_meshd()
        # No daemon at all: the pinned datapath goes on alone.
        r = self.burst_ok(80, 300)  # too few to judge the spread; all answer and all share
        self.assertEqual(set(r["by_endpoint"]), {"ep1", "ep2", "ep3"}, r)
        self.lab.start_meshd(self.lab.write_config([self.service("web", 80, {1: 1, 2: 1})]))

        for s, got in zip(sessions, first):
            loop = s.read()
            self.assertEqual(loop["failed"], 0, f"open connection broke: {loop}\n"
                             f"{self.lab.meshd_log()}")
            self.assertGreater(loop["ok"], 50, loop)
            self.assertEqual(loop["endpoints"], [got["endpoint"]], "connection moved endpoint")
            self.assertEqual(loop["local_ports"], [got["local_port"]], "connection was reopened")

        streamed = streaming.read()
        self.assertTrue(streamed["ok"], f"the slow response broke off: {streamed}")

        self.assertEqual(desired(self.lab.meshctl_json("service", "list")), before,
                         "the restarted meshd lost state set through the API")
        status = self.lab.meshctl_json("status")
        self.assertTrue(status.get("adopted"), f"restarted meshd did not adopt pinned state: "
                        f"{status}")

        r = self.burst_ok(80, SPREAD_SAMPLE)
        self.assertSpread(r["by_endpoint"], weights)
        r = self.burst_ok(81, 100)
        self.assertEqual(r["by_endpoint"], {"ep2": 100})
        for s, got in zip(sessions, first):
            again = s.get()
            self.assertTrue(again["ok"], again)
            self.assertEqual(again["endpoint"], got["endpoint"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
