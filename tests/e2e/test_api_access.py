"""The API's access control, bounds and audit log through the real lab: two throwaway groups and
three users (admin, read, neither), meshd started with node.api_admin_group/api_read_group set to
them, meshctl run as each user (setpriv). Readers read and are refused every change with the group
named; the admin changes; a user in neither group is refused; an oversized body gets 413, a
malformed one 400, a burst beyond the admin rate 429; no refused request changes anything, and the
audit log holds one line per accepted change with the right uid and diff."""
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import unittest
import uuid

import lab as labmod
from e2e_base import LabTestCase

# Runs as the peer under test: raw HTTP/1.1 on meshd's socket, one connection per request.
PROBE = r'''
import json, socket, sys
path, mode = sys.argv[1], sys.argv[2]

def ask(method, target, body=b"", headers=None, length=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    head = f"{method} {target} HTTP/1.1\r\nHost: meshd\r\nConnection: close\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    try:
        s.sendall(head.encode() + b"\r\n" + body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # meshd answered before taking it all (413)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    hdrs = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    try:
        body = json.loads(rest)
    except ValueError:
        body = rest.decode(errors="replace")
    return {"status": status, "retry_after": hdrs.get("retry-after"), "body": body}

if mode == "oversize":
    big = b"x" * (17 << 20)
    print(json.dumps(ask("POST", "/v1/apply", big, {"Content-Type": "application/yaml"})))
elif mode == "malformed":
    print(json.dumps(ask("POST", "/v1/services", b'{"name": "x", "vip": ',
                         {"Content-Type": "application/json"})))
elif mode == "headers":
    print(json.dumps(ask("GET", "/v1/status", b"", {"X-Big": "y" * (32 << 10)})))
elif mode == "burst":
    out = [ask("DELETE", "/v1/services/no-such-service") for _ in range(int(sys.argv[3]))]
    print(json.dumps(out))
'''


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


class ApiAccess(LabTestCase):
    ENDPOINTS = 2

    def setUp(self):
        super().setUp()
        tag = uuid.uuid4().hex[:6]
        self.admin_group, self.read_group = f"mpa{tag}", f"mpr{tag}"
        self.users = {"admin": f"mpua{tag}", "read": f"mpur{tag}", "none": f"mpun{tag}"}
        # Removed at the end even when the test fails (cleanups run last-in first-out).
        for g in (self.admin_group, self.read_group):
            self.addCleanup(run, ["groupdel", g])
        for u in self.users.values():
            self.addCleanup(run, ["userdel", u])
        for g in (self.admin_group, self.read_group):
            self.assertEqual(run(["groupadd", g]).returncode, 0)
        for role, u in self.users.items():
            extra = {"admin": ["-G", self.admin_group], "read": ["-G", self.read_group]}
            res = run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/false",
                       *extra.get(role, []), u])
            self.assertEqual(res.returncode, 0, res.stderr)
        self.uid = {role: pwd.getpwnam(u).pw_uid for role, u in self.users.items()}
        # meshctl and the probe where every user can run them.
        self.tools = tempfile.mkdtemp(prefix="meshpath-api-access-")
        self.addCleanup(shutil.rmtree, self.tools, True)
        os.chmod(self.tools, 0o755)
        self.meshctl_bin = os.path.join(self.tools, "meshctl")
        shutil.copy(labmod.MESHCTL, self.meshctl_bin)
        os.chmod(self.meshctl_bin, 0o755)
        self.probe = os.path.join(self.tools, "probe.py")
        with open(self.probe, "w") as f:
            f.write(PROBE)
        os.chmod(self.probe, 0o644)
        self.audit_dir = tempfile.mkdtemp(prefix="meshpath-audit-")
        self.addCleanup(shutil.rmtree, self.audit_dir, True)
        self.audit_log = os.path.join(self.audit_dir, "log", "audit.log")

    def as_user(self, role, argv):
        u = self.users[role]
        return run(["setpriv", f"--reuid={u}", f"--regid={u}", "--init-groups", *argv])

    def meshctl(self, role, *args):
        return self.as_user(role, [self.meshctl_bin, "--socket", self.lab.socket, *args])

    def probe_as(self, role, mode, *args):
        res = self.as_user(role, ["/usr/bin/python3", self.probe, self.lab.socket, mode, *args])
        self.assertEqual(res.returncode, 0, res.stderr)
        return json.loads(res.stdout)

    def config_view(self):
        out = {}
        for s in self.lab.meshctl_json("service", "list"):
            eps = {f"{e['address']}:{e['port']}": e["weight"] for e in s["endpoints"]}
            out[s["name"]] = (s["vip"], s["port"], s.get("algorithm"), eps)
        return out

    def audit_lines(self):
        with open(self.audit_log) as f:
            return f.read().splitlines()

    def test_groups_bounds_and_audit(self):
        node = {"api_admin_group": self.admin_group, "api_read_group": self.read_group,
                "audit_log": self.audit_log}
        config = self.lab.write_config([self.service("web", 80, {1: 1, 2: 1})], node=node)
        self.lab.start_meshd(config)
        self.assertEqual(os.stat(self.lab.socket).st_mode & 0o777, 0o666)
        self.assertEqual(self.audit_lines(), [])
        before = self.config_view()
        ep1, ep2 = self.ep_key(1), self.ep_key(2)
        change = self.lab.write_config([self.service("web", 80, {1: 1})], name="change.yaml",
                                       node=node)
        os.chmod(change, 0o644)

        # The reader reads...
        for args in (["status"], ["service", "list"], ["service", "show", "web"], ["stats"],
                     ["events"], ["health"], ["-o", "json", "status"]):
            res = self.meshctl("read", *args)
            self.assertEqual(res.returncode, 0, f"read user: meshctl {args}: {res.stderr}")
        # ...and every change is refused, naming the group it lacks.
        changes = [
            ["service", "add", "api", "--vip", self.vip, "--port", "81", "--endpoint", ep1],
            ["service", "del", "web"],
            ["endpoint", "add", "web", f"{self.ep(1)[0]}:9999"],
            ["endpoint", "del", "web", ep2],
            ["endpoint", "set-weight", "web", ep2, "5"],
            ["endpoint", "drain", "web", ep2],
            ["apply", "-f", change],
            ["apply", "-f", change, "--dry-run"],
            ["upgrade"],
        ]
        expected = (f"changing state needs group {self.admin_group} (node.api_admin_group); "
                    f"uid {self.uid['read']} is in")
        for args in changes:
            res = self.meshctl("read", *args)
            self.assertNotEqual(res.returncode, 0, f"read user could: meshctl {args}")
            self.assertIn(expected, res.stderr, f"meshctl {args}")
            self.assertIn(self.read_group, res.stderr)
            self.assertIn("hint:", res.stderr)
        # A user in neither group is refused everything.
        for args in (["status"], ["service", "list"], ["service", "del", "web"]):
            res = self.meshctl("none", *args)
            self.assertNotEqual(res.returncode, 0, f"outsider could: meshctl {args}")
            self.assertIn(f"the API needs group {self.admin_group} (node.api_admin_group) or "
                          f"{self.read_group} (node.api_read_group)", res.stderr)
        self.assertEqual(self.config_view(), before, "a refused request changed something")
        self.assertEqual(self.audit_lines(), [], "a refused request left an audit line")

        # The admin changes: three accepted changes (a dry run is not one).
        ok = [["service", "add", "api", "--vip", self.vip, "--port", "81", "--endpoint", ep1],
              ["endpoint", "set-weight", "web", ep2, "3"],
              ["apply", "-f", change, "--dry-run"],
              ["apply", "-f", change]]
        for args in ok:
            res = self.meshctl("admin", *args)
            self.assertEqual(res.returncode, 0, f"admin: meshctl {args}: {res.stderr}")
        after = self.config_view()
        self.assertEqual(set(after), {"web"}, "apply -f replaced the services")
        self.assertEqual(after["web"][3], {ep1: 1})
        lines = self.audit_lines()
        self.assertEqual(len(lines), 3, "\n".join(lines))
        for line in lines:
            self.assertIn(f" uid={self.uid['admin']} user={self.users['admin']} ", line)
            self.assertIn("status=20", line)
        self.assertIn('request="POST /v1/services"', lines[0])
        self.assertIn("+ service api", lines[0])
        self.assertIn(f"services.web.endpoints[{ep2}].weight: 1 -> 3", lines[1])
        self.assertIn('request="POST /v1/apply"', lines[2])
        self.assertIn("- service api", lines[2])
        self.assertIn(f"services.web.endpoints[{ep2}]", lines[2])
        before = self.config_view()

        # Bounds, as the admin (root is not rate-limited): nothing refused changes anything.
        big = self.probe_as("admin", "oversize")
        self.assertEqual(big["status"], 413, big)
        self.assertIn("larger than the API's limit", big["body"]["error"])
        bad = self.probe_as("admin", "malformed")
        self.assertEqual(bad["status"], 400, bad)
        self.assertIn("error", bad["body"])
        headers = self.probe_as("admin", "headers")
        self.assertEqual(headers["status"], 431, headers)
        burst = self.probe_as("admin", "burst", "400")
        statuses = [r["status"] for r in burst]
        self.assertEqual(set(statuses) - {404, 429}, set(), statuses)
        limited = [r for r in burst if r["status"] == 429]
        self.assertTrue(limited, f"400 admin requests at once were not limited: {statuses}")
        self.assertGreaterEqual(statuses.count(404), 99, "the burst allowance is 100")
        self.assertGreaterEqual(int(limited[0]["retry_after"]), 1)
        self.assertIn("too many changes", limited[0]["body"]["error"])
        self.assertIn("Retry-After", limited[0]["body"]["hint"])
        # The reader is not held up by the admin's limit, and reads are never limited.
        self.assertEqual(self.meshctl("read", "status").returncode, 0)
        self.assertEqual(self.config_view(), before)
        self.assertEqual(len(self.audit_lines()), 3, "a refused request left an audit line")
        log = self.lab.meshd_log(400)
        self.assertIn("audit:", log)


if __name__ == "__main__":
    unittest.main()
