"""test_check_config.py — `meshd --check-config FILE` through the built binary (MESHPATH_MESHD):
a good config says "FILE: OK (N services)" and exits 0, a bad one lists every problem with its
field path and exits 1, and neither creates anything: not the pin root, not the API socket's or
state file's directory, not the audit log; under strace (when installed), no bpf(2), no socket
bound, no file opened for writing."""
import os
import shutil
import subprocess
import tempfile
import unittest
import uuid

MESHD = os.environ.get("MESHPATH_MESHD", os.path.join(
    os.path.dirname(__file__), "../../build/userspace/meshd/meshd"))

SERVICES = """\
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080, weight: 1}
      - {address: 10.0.2.12, port: 8080, weight: 2}
  - name: dns
    vip: 10.0.0.100
    port: 53
    protocol: udp
    endpoints:
      - {address: 10.0.2.13, port: 53}
"""

BAD_SERVICES = """\
services:
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.11, port: 8080, weight: 1}
    health: {type: tcp, interval: 2s, timeout: 5s}
  - name: web
    vip: 10.0.0.100
    port: 80
    endpoints:
      - {address: 10.0.2.12, port: 8080}
      - {address: 10.0.2.12, port: 8080}
"""


class CheckConfig(unittest.TestCase):
    def setUp(self):
        if not os.access(MESHD, os.X_OK):
            self.skipTest(f"meshd not built at {MESHD}")
        self.tmp = tempfile.mkdtemp(prefix="meshpath-check-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # Under /sys/fs/bpf, as a real pin root is: start-up would create (and maybe mount) it,
        # the check must not.
        self.pin_root = f"/sys/fs/bpf/meshpath-check-{uuid.uuid4().hex[:8]}"
        self.run_dir = os.path.join(self.tmp, "run")
        self.log_dir = os.path.join(self.tmp, "log")

    def node(self, interfaces="[lo]", extra=""):
        # 192.0.2.10 (TEST-NET-1) is no local address: a warning, not a problem.
        return (f"node:\n  interfaces: {interfaces}\n  ipv4: 192.0.2.10\n"
                f"  api_socket: {self.run_dir}/meshd.sock\n"
                f"  state_file: {self.run_dir}/state.json\n"
                f"  pin_root: {self.pin_root}\n"
                f"  audit_log: {self.log_dir}/audit.log\n"
                f"  metrics_listen: 127.0.0.1:19464\n{extra}")

    def write(self, text, name="meshd.yaml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def check(self, path, *extra):
        res = subprocess.run([MESHD, "--check-config", path, *extra], capture_output=True,
                             text=True, timeout=30)
        print(f"exit {res.returncode}\nstdout: {res.stdout}stderr: {res.stderr}")
        return res

    def assert_nothing_created(self):
        for path in (self.pin_root, self.run_dir, self.log_dir):
            self.assertFalse(os.path.exists(path), f"--check-config created {path}")
        self.assertEqual(sorted(os.listdir(self.tmp)),
                         sorted(f for f in os.listdir(self.tmp) if f.endswith(".yaml")))

    def test_good_config(self):
        path = self.write(self.node() + SERVICES)
        res = self.check(path)
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertEqual(res.stdout, f"{path}: OK (2 services)\n")
        self.assertIn("warning: node.ipv4: 192.0.2.10 is not an address of any local interface",
                      res.stderr)
        self.assert_nothing_created()

    def test_bad_config_lists_every_problem(self):
        path = self.write(self.node(interfaces="[lo, nosuchif0]", extra="  ring_size: 65536\n")
                          + BAD_SERVICES)
        res = self.check(path)
        self.assertEqual(res.returncode, 1)
        self.assertEqual(res.stdout, "")
        # Validation and the host checks report together, each with its field path.
        for needle in (
                f"{path}: node.ring_size: 65536 is not prime",
                f"{path}: services[0].health.timeout: 5s is out of range",
                f"{path}: services[1].endpoints[1]: 10.0.2.12:8080 is listed twice",
                f"{path}: services[1].name: web is used twice",
                f"{path}: services[1]: 10.0.0.100:80/tcp is used twice",
                f"{path}: node.interfaces[1]: nosuchif0 is not an interface",
                f"{path}: 6 problems"):
            self.assertIn(needle, res.stderr)
        self.assertNotIn("node.interfaces[0]", res.stderr)
        self.assert_nothing_created()

    def test_value_out_of_range_names_the_line(self):
        path = self.write(self.node() + SERVICES.replace("weight: 2", "weight: 20000"))
        res = self.check(path)
        self.assertEqual(res.returncode, 1)
        self.assertRegex(res.stderr, rf"{path}: services\[0\]\.endpoints\[1\]\.weight: 20000 is out "
                                     rf"of range 0\.\.10000 \(line \d+\)")
        self.assert_nothing_created()

    def test_syntax_error_names_the_line(self):
        path = self.write(self.node() + "services:\n  - name: [web\n")
        res = self.check(path)
        self.assertEqual(res.returncode, 1)
        self.assertRegex(res.stderr, rf"{path}: config: YAML syntax error at line \d+")
        self.assert_nothing_created()

    def test_unknown_key_and_missing_file(self):
        path = self.write(self.node(extra="  colour: blue\n") + SERVICES)
        res = self.check(path)
        self.assertEqual(res.returncode, 1)
        self.assertIn(f"{path}: node.colour: unknown key", res.stderr)
        missing = os.path.join(self.tmp, "nope.yaml")
        res = self.check(missing)
        self.assertEqual(res.returncode, 1)
        self.assertIn(f"{missing}: cannot open the config file", res.stderr)
        self.assert_nothing_created()

    def test_pin_root_off_bpffs(self):
        self.pin_root = os.path.join(self.tmp, "pins")
        path = self.write(self.node() + SERVICES)
        res = self.check(path)
        self.assertEqual(res.returncode, 1)
        self.assertIn(f"node.pin_root: {self.pin_root} is not on a bpf filesystem", res.stderr)
        self.assertFalse(os.path.exists(self.pin_root))

    def test_no_side_effects_under_strace(self):
        strace = shutil.which("strace")
        if strace is None:
            self.skipTest("strace not installed")
        path = self.write(self.node() + SERVICES)
        trace = os.path.join(self.tmp, "trace.txt")
        res = subprocess.run(
            [strace, "-f", "-qq", "-o", trace,
             "-e", "trace=bpf,bind,listen,connect,mkdir,mkdirat,mount,unlink,unlinkat,rename,"
                   "renameat,renameat2,open,openat,creat,chmod,fchmod,chown,fchown,setns",
             MESHD, "--check-config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(trace) as f:
            calls = [line.strip() for line in f if line.strip()]
        os.unlink(trace)
        bad = [c for c in calls
               if any(c.split(None, 1)[-1].startswith(s) for s in (
                   "bpf(", "bind(", "listen(", "mkdir", "mount(", "unlink", "rename", "creat(",
                   "chmod(", "fchmod(", "chown(", "fchown(", "setns("))
               or (("open(" in c or "openat(" in c)
                   and any(flag in c for flag in ("O_WRONLY", "O_RDWR", "O_CREAT")))]
        # getifaddrs and if_nametoindex talk to the kernel over netlink/inet sockets: reads.
        bad = [c for c in bad if "AF_NETLINK" not in c]
        self.assertEqual(bad, [], "system calls with side effects:\n" + "\n".join(bad))
        self.assert_nothing_created()


if __name__ == "__main__":
    unittest.main()
