"""test_service_caps.py — meshd needs exactly the capabilities deploy/systemd/meshd.service gives it
(CapabilityBoundingSet=): with that set alone (uid 0, as under the unit; setpriv drops the rest
from the bounding set, so nothing else survives the exec) meshd loads and attaches XDP, reserves
an explicit SNAT port range, probes its endpoints and balances traffic; with any one of them left
out it refuses to start. So the unit grants nothing it does not need and misses nothing."""
import os
import re
import shutil
import subprocess
import time
import unittest

import lab as labmod
from e2e_base import LabTestCase

UNIT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    "../../deploy/systemd/meshd.service")


def unit_capabilities():
    with open(UNIT) as f:
        m = re.search(r"^CapabilityBoundingSet=(.*)$", f.read(), re.M)
    return m.group(1).split()


class UnitCapabilities(LabTestCase):
    ENDPOINTS = 2

    def setUp(self):
        for tool in ("setpriv", "nsenter"):
            if shutil.which(tool) is None:
                self.skipTest(f"{tool} not installed (util-linux)")
        super().setUp()
        web = self.service("web", 80, {1: 1, 2: 1})
        web["health"] = {"type": "tcp", "interval": "200ms", "timeout": "100ms"}
        # An explicit range inside the kernel's ephemeral one: meshd must write
        # net.ipv4.ip_local_reserved_ports with these capabilities too.
        self.config = self.lab.write_config([web], node={"snat_ports": "40000-40999"})
        self.addCleanup(self.teardown_pins)

    def teardown_pins(self):
        subprocess.run([labmod.MESHD, "--teardown", "--config", self.config],
                       capture_output=True, timeout=60)

    def start_with(self, caps):
        """meshd in the lb's network namespace (nsenter: the host's mount namespace, as under
        systemd) with only `caps` in its bounding set; (process, log path)."""
        bounding = ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in caps])
        log = os.path.join(self.lab.state_dir, "meshd.log")
        with open(log, "a") as f:
            f.write(f"--- meshd with {' '.join(caps)} ---\n")
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.lab.env['lb']['ns']}", "setpriv",
                 f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs",
                 labmod.MESHD, "--config", self.config, "--detach-on-exit"],
                stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
        self.addCleanup(self.stop, proc)
        return proc

    @staticmethod
    def stop(proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_api(self, proc, limit_s=20):
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if self.lab.meshctl("status", check=False).returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def lb_sysctl(self, key):
        return self.lab.sysctl(self.lab.env["lb"]["ns"], key)

    def test_unit_set_is_enough_and_each_capability_needed(self):
        caps = unit_capabilities()
        self.assertEqual(sorted(caps), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"])

        proc = self.start_with(caps)
        self.assertTrue(self.wait_api(proc), "meshd did not come up with " + " ".join(caps) +
                        "\n" + self.lab.meshd_log())
        self.assertIn("40000-40999", self.lb_sysctl("net.ipv4.ip_local_reserved_ports"))
        self.wait_for(lambda svc, eps: len(eps) == 2 and all(
            e["last_probe"] and e["last_probe"]["ok"] and e["state"] == "healthy"
            for e in eps.values()), 10, "both endpoints passing active TCP probes")
        self.burst_ok(80, 100)
        self.stop(proc)
        self.assertEqual(proc.returncode, 0, self.lab.meshd_log())
        self.teardown_pins()

        for missing in caps:
            fewer = [c for c in caps if c != missing]
            proc = self.start_with(fewer)
            up = self.wait_api(proc)
            self.stop(proc)
            self.assertFalse(up, f"meshd came up without {missing}: the unit grants it needlessly")
            self.assertNotEqual(proc.returncode, 0)
            self.teardown_pins()


if __name__ == "__main__":
    unittest.main()
