"""meshctl against a real meshd: errors give a message and a non-zero exit (1 refused or
unreachable, 2 usage) and change nothing; the table views and apply work."""
import json
import os
import subprocess
import unittest

import lab as labmod
from e2e_base import LabTestCase, require_prerequisites


def meshctl(*args, socket="/nonexistent/meshd.sock"):
    return subprocess.run([labmod.MESHCTL, "--socket", socket, *args], capture_output=True,
                          text=True, timeout=30)


class MeshctlWithoutDaemon(unittest.TestCase):
    def setUp(self):
        require_prerequisites()

    def test_daemon_not_running(self):
        r = meshctl("status", socket="/run/meshpath-e2e-none/meshd.sock")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("cannot reach meshd at /run/meshpath-e2e-none/meshd.sock", r.stderr)
        self.assertIn("No such file or directory", r.stderr)
        self.assertIn("meshd --config", r.stderr)

    def test_socket_from_environment(self):
        env = dict(os.environ, MESHPATH_SOCKET="/run/meshpath-e2e-env/meshd.sock")
        r = subprocess.run([labmod.MESHCTL, "service", "list"], capture_output=True, text=True,
                           env=env, timeout=30)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("/run/meshpath-e2e-env/meshd.sock", r.stderr)

    def test_usage_errors_exit_2_before_asking(self):
        cases = [
            (["endpoint", "add", "web", "10.100.2.300:8080"], "bad address"),
            (["endpoint", "add", "web", "fd00::1:8080"], "brackets"),
            (["endpoint", "add", "web", "10.100.2.11"], "port is missing"),
            (["endpoint", "add", "web", "10.100.2.11:70000"], "bad port"),
            (["endpoint", "add", "web", "10.100.2.11:80", "--weight", "10001"], "out of range"),
            (["endpoint", "set-weight", "web", "10.100.2.11:80", "20000"], "out of range"),
            (["service", "add", "web", "--vip", "10.0.0", "--port", "80"], "bad VIP"),
            (["service", "add", "web", "--vip", "10.0.0.1", "--port", "0"], "bad port"),
            (["service", "add", "web", "--vip", "10.0.0.1", "--port", "80",
              "--endpoint", "10.0.0.2:80@-1"], "weight"),
            (["service", "add", "Web!", "--vip", "10.0.0.1", "--port", "80"], "bad service name"),
            (["service"], "subcommand"),
            (["frobnicate"], "unknown command"),
            (["-o", "yaml", "status"], "yaml"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = meshctl(*args)  # the socket does not exist: nothing may be sent
                self.assertEqual(r.returncode, 2, r)
                self.assertIn(message, r.stderr)
                self.assertNotIn("cannot reach", r.stderr)


class MeshctlWithDaemon(LabTestCase):
    def setUp(self):
        super().setUp()
        self.start([self.service("web", 80, {1: 1, 2: 1})])

    def services(self):
        return self.lab.meshctl_json("service", "list")

    def assertRefused(self, args, *messages, code=1):
        before = self.services()
        r = self.lab.meshctl(*args, check=False)
        self.assertEqual(r.returncode, code, r)
        for m in messages:
            self.assertIn(m, r.stderr)
        self.assertEqual(self.services(), before, "a refused command changed the state")
        return r

    def test_unknown_service(self):
        self.assertRefused(["service", "show", "nope"], "nope")
        self.assertRefused(["service", "del", "nope"], "nope")
        self.assertRefused(["endpoint", "add", "nope", self.ep_key(3)], "nope")
        self.assertRefused(["endpoint", "set-weight", "nope", self.ep_key(1), "2"], "nope")
        self.assertRefused(["stats", "nope"], "unknown service 'nope'")

    def test_unknown_endpoint(self):
        self.assertRefused(["endpoint", "del", "web", self.ep_key(3)], "meshd refused (HTTP 404)")
        self.assertRefused(["endpoint", "set-weight", "web", self.ep_key(3), "2"],
                           "meshd refused (HTTP 404)")

    def test_daemon_side_validation(self):
        self.assertRefused(["service", "add", "web", "--vip", self.vip, "--port", "90"],
                           "meshd refused (HTTP 409)")
        self.assertRefused(["service", "add", "web2", "--vip", self.vip, "--port", "80"],
                           "meshd refused (HTTP 409)")
        # An IPv6 endpoint in an IPv4 service: the address parses, the daemon says no.
        self.assertRefused(["endpoint", "add", "web", self.lab.ep_key(3, 6)], "meshd refused")
        self.assertRefused(["endpoint", "add", "web", self.ep_key(1)], "meshd refused (HTTP 409)")

    def test_weight_out_of_range(self):
        self.assertRefused(["endpoint", "set-weight", "web", self.ep_key(1), "10001"],
                           "out of range", code=2)
        self.assertRefused(["endpoint", "add", "web", self.ep_key(3), "--weight", "99999"],
                           "out of range", code=2)
        r = self.lab.meshctl("endpoint", "set-weight", "web", self.ep_key(1), "10000")
        self.assertIn("weight 10000", r.stdout)

    def test_tables(self):
        self.burst_ok(80, 100)
        for args, words in [
            (["status"], ["meshd", "veth-c", "veth-e", "10.100.2.1"]),
            (["service", "list"], ["NAME", "web", "10.100.0.100:80", "maglev", "nat"]),
            (["service", "show", "web"], ["ENDPOINT", "SHARE", self.ep_key(1), self.ep_key(2)]),
            (["stats"], ["web", "NEW CONNS", self.ep_key(1), "%"]),
            (["stats", "web"], ["web", self.ep_key(2)]),
        ]:
            with self.subTest(args=args):
                out = self.lab.meshctl(*args).stdout
                for w in words:
                    self.assertIn(w, out)
        stats = self.lab.meshctl_json("stats")
        self.assertIn("exceptions", stats)
        self.assertEqual([s["name"] for s in stats["services"]], ["web"])

    def test_apply(self):
        path = self.lab.write_config(
            [self.service("web", 80, {1: 1, 2: 1, 3: 4}), self.service("api", 81, {3: 1})],
            name="apply.yaml")
        r = self.lab.meshctl("-o", "json", "apply", "-f", path)
        report = json.loads(r.stdout)
        self.assertEqual(report["added"], ["api"])
        self.assertEqual(report["changed"], ["web"])
        weights = {(e["address"], e["weight"]) for e in self.lab.meshctl_json(
            "service", "show", "web")["endpoints"]}
        self.assertIn((self.ep(3)[0], 4), weights)
        r = self.burst_ok(81, 50)
        self.assertEqual(r["by_endpoint"], {"ep3": 50})

        bad = os.path.join(self.lab.state_dir, "bad.yaml")
        with open(path) as good, open(bad, "w") as f:
            f.write(good.read().replace("port: 81", "port: 99999"))
        self.assertRefused(["apply", "-f", bad], "meshd refused (HTTP 400)", "99999")
        self.assertRefused(["apply", "-f", "/nonexistent.yaml"], "cannot read", code=2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
