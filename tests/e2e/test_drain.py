"""Drain through the real lab: `meshctl endpoint drain` puts an endpoint at weight 0; a
long-lived connection to it keeps streaming to the end while no new connection reaches it, and
`meshctl endpoint drain --wait` reports "drained" once that connection closes (not before)."""
import json
import subprocess
import time
import unittest

import lab as labmod
from e2e_base import LabTestCase


class Drain(LabTestCase):
    ENDPOINTS = 3

    def session_on(self, name, tries=40):
        """A keep-alive session whose connection landed on endpoint `name`."""
        for _ in range(tries):
            s = self.lab.session(self.vip, 80)
            got = s.get()
            self.assertTrue(got["ok"], got)
            if got["endpoint"] == name:
                return s
            s.close()
        self.fail(f"no connection of {tries} landed on {name}")

    def endpoint(self, i):
        """Endpoint i as `meshctl -o json service show` reports it."""
        svc = self.lab.meshctl_json("service", "show", "web")
        return next(e for e in svc["endpoints"] if (e["address"], e["port"]) == self.ep(i))

    def test_drain_keeps_the_open_connection_and_reports_drained_when_it_closes(self):
        self.start([self.service("web", 80, {1: 1, 2: 1, 3: 1})])
        held = self.session_on("ep2")
        self.assertIsNone(self.endpoint(2)["drain"])
        self.assertGreaterEqual(self.endpoint(2)["active_conns"], 1)

        res = self.lab.meshctl("endpoint", "drain", "web", self.ep_key(2))
        self.assertIn("draining", res.stdout)
        ep = self.endpoint(2)
        self.assertEqual(ep["weight"], 0)
        self.assertEqual(ep["drain"], "draining")
        self.assertEqual(ep["active_conns"], 1, "only the held connection is open")
        table = self.lab.meshctl("service", "show", "web").stdout
        self.assertIn("draining", table)

        waiter = subprocess.Popen(
            [labmod.MESHCTL, "--socket", self.lab.socket, "-o", "json", "endpoint", "drain", "web",
             self.ep_key(2), "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(waiter.kill)

        held.start_stream(20, 0.1)  # 2 s of a slow response on the drained endpoint
        r = self.burst_ok(80, 300)
        self.assertNotIn("ep2", r["by_endpoint"], f"a new connection reached the drained one: {r}")
        streamed = held.read()
        self.assertTrue(streamed["ok"], streamed)
        self.assertEqual((streamed["endpoint"], streamed["lines"]), ("ep2", 20))
        got = held.get()
        self.assertTrue(got["ok"] and got["endpoint"] == "ep2", got)
        time.sleep(0.5)
        if waiter.poll() is not None:
            self.fail(f"drain --wait ended while a connection was open: {waiter.communicate()}")

        closed_at = time.monotonic()
        held.close()
        out, err = waiter.communicate(timeout=10)
        took = time.monotonic() - closed_at
        self.assertEqual(waiter.returncode, 0, err)
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(lines[0]["drain"], "draining", lines)
        self.assertEqual(lines[-1]["drain"], "drained", lines)
        self.assertEqual(lines[-1]["active_conns"], 0, lines)
        print(f"\n  drained reported {took * 1000:.0f} ms after the last connection closed")
        self.assertEqual(self.endpoint(2)["drain"], "drained")
        res = self.lab.meshctl("endpoint", "drain", "web", self.ep_key(2))
        self.assertIn("drained", res.stdout)


if __name__ == "__main__":
    unittest.main()
