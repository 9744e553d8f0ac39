"""Config reload as a transaction, through the real lab: a config file rewritten with one bad
service among good changes and a SIGHUP change nothing (API and real traffic agree) and an event
says why; then a good change shown by `meshctl apply --dry-run` (nothing changes) and applied by
`meshctl apply` (the event carries the diff)."""
import json
import os
import re
import signal
import time
import unittest

from e2e_base import LabTestCase


class ReloadTransaction(LabTestCase):
    ENDPOINTS = 3

    def config_view(self):
        """The services as configured (no counters): {name: (vip, port, {endpoint: weight})}."""
        out = {}
        for s in self.lab.meshctl_json("service", "list"):
            eps = {f"{e['address']}:{e['port']}": e["weight"] for e in s["endpoints"]}
            out[s["name"]] = (s["vip"], s["port"], eps)
        return out

    def events(self, kind):
        status, body = self.api("/v1/events")
        self.assertEqual(status, 200, body)
        return [e for e in body if e.get("kind") == kind]

    def wait_event(self, kind, count, limit_s=10):
        deadline = time.monotonic() + limit_s
        while True:
            found = self.events(kind)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                self.fail(f"no {kind} event within {limit_s}s\n{self.lab.meshd_log()}")
            time.sleep(0.05)

    def served_by(self, count=300):
        return set(self.burst_ok(80, count)["by_endpoint"])

    def test_bad_reload_changes_nothing_then_dry_run_and_apply(self):
        node = {"audit_log": os.path.join(self.lab.state_dir, "audit.log")}
        web = self.service("web", 80, {1: 1, 2: 1})
        config = self.lab.write_config([web], node=node)
        self.lab.start_meshd(config)
        before = self.config_view()
        self.assertEqual(self.served_by(), {"ep1", "ep2"})

        # Good changes (ep3 joins web, a new service api) beside one bad service.
        bad = {"name": "bad", "vip": self.vip, "port": 82,
               "endpoints": [(*self.ep(3), 20000)]}
        self.lab.write_config([self.service("web", 80, {1: 1, 2: 1, 3: 1}),
                               self.service("api", 81, {3: 1}), bad], node=node)
        with open(os.path.join(self.lab.state_dir, "meshd.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGHUP)
        refused = self.wait_event("config_refused", 1)[-1]
        self.assertEqual(refused["source"], "SIGHUP")
        self.assertEqual(refused["status"], 400)
        self.assertIn("services[2].endpoints[0].weight", refused["reason"])
        self.assertTrue(any("services[2].endpoints[0].weight" in p for p in refused["problems"]),
                        refused)
        self.assertEqual(self.config_view(), before, "a refused reload changed the services")
        self.assertEqual(self.served_by(), {"ep1", "ep2"}, "a refused reload reached the datapath")
        status, _ = self.api("/v1/services/api")
        self.assertEqual(status, 404)
        self.assertEqual(self.events("config_applied"), [])
        events_text = self.lab.meshctl("events").stdout
        self.assertIn("config_refused", events_text)

        # A good change: ep2 drained, ep3 added.
        change = self.lab.write_config([self.service("web", 80, {1: 1, 2: 0, 3: 1})],
                                       name="change.yaml", node=node)
        dry = self.lab.meshctl("apply", "-f", change, "--dry-run").stdout
        self.assertIn("dry run of", dry)
        self.assertIn("nothing applied", dry)
        weight_line = re.compile(
            re.escape(f"~ services.web.endpoints[{self.ep_key(2)}].weight:") + r" +1 -> 0")
        self.assertRegex(dry, weight_line)
        self.assertIn(f"services.web.endpoints[{self.ep_key(3)}]", dry)
        dry_json = self.lab.meshctl_json("apply", "-f", change, "--dry-run")
        self.assertTrue(dry_json["dry_run"])
        paths = [c["path"] for c in dry_json["diff"]["changes"]]
        self.assertIn(f"services.web.endpoints[{self.ep_key(2)}].weight", paths)
        self.assertEqual(self.config_view(), before, "a dry run changed the services")
        self.assertEqual(self.served_by(), {"ep1", "ep2"}, "a dry run reached the datapath")
        self.assertEqual(self.events("config_applied"), [])

        applied = self.lab.meshctl("apply", "-f", change).stdout
        self.assertIn("applied", applied)
        self.assertRegex(applied, weight_line)
        view = self.config_view()
        self.assertEqual(view["web"][2],
                         {self.ep_key(1): 1, self.ep_key(2): 0, self.ep_key(3): 1})
        self.assertEqual(self.served_by(), {"ep1", "ep3"})
        event = self.wait_event("config_applied", 1)[-1]
        self.assertEqual(event["source"], "POST /v1/apply")
        self.assertEqual([c["path"] for c in event["diff"]["changes"]], paths)
        self.assertIn("weight: 1 -> 0", event["reason"])

        # The audit log: the refused SIGHUP and the apply, one line each (the dry runs none).
        with open(node["audit_log"]) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("signal=SIGHUP", lines[0])
        self.assertIn("status=400", lines[0])
        self.assertIn('request="POST /v1/apply" status=200', lines[1])
        self.assertIn("uid=0 ", lines[1])
        self.assertIn("weight: 1 -> 0", lines[1])


if __name__ == "__main__":
    unittest.main()
