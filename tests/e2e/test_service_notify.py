"""test_service_notify.py — meshd speaks systemd's Type=notify protocol (deploy/systemd/meshd.service)
without systemd: the test binds a unix datagram socket, hands it to meshd as $NOTIFY_SOCKET and
reads what meshd sends. READY=1 comes only once the API answers (the first request after it must
succeed, with the services of the config); SIGHUP gives RELOADING=1 and then READY=1 with the
reload already applied (a refused reload too, with STATUS saying so); SIGTERM gives STOPPING=1."""
import os
import signal
import socket
import subprocess
import time
import unittest

import lab as labmod
from e2e_base import LabTestCase, UnixHTTPConnection


class NotifyListener:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def next(self, timeout):
        """The next message as {key: value}, or None after `timeout` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = {}
        for line in data.decode().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
        return fields

    def wait_for(self, key, timeout, proc=None):
        """Messages up to and including the first with `key`; fails on a timeout."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None and key != "STOPPING":
                raise AssertionError(f"meshd exited ({proc.returncode}) before {key}=1: {seen}")
            msg = self.next(max(0.05, min(0.5, deadline - time.monotonic())))
            if msg is None:
                continue
            seen.append(msg)
            if msg.get(key) == "1":
                return seen
        raise AssertionError(f"no {key}=1 within {timeout}s; got {seen}")

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class SdNotify(LabTestCase):
    ENDPOINTS = 2

    def start_with_notify(self, config):
        self.notify = NotifyListener(os.path.join(self.lab.state_dir, "notify.sock"))
        self.addCleanup(self.notify.close)
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        log = open(os.path.join(self.lab.state_dir, "meshd.log"), "a")
        self.addCleanup(log.close)
        # As lab.sh meshd-start does (--netns, not ip netns exec), plus $NOTIFY_SOCKET;
        # --detach-on-exit so the pins go with the test.
        self.proc = subprocess.Popen(
            [labmod.MESHD, "--netns", self.lab.env["lb"]["ns"], "--config", config,
             "--detach-on-exit"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        # lab.down()'s meshd-stop finds it by this pid file if the test fails half-way.
        with open(os.path.join(self.lab.state_dir, "meshd.pid"), "w") as f:
            f.write(str(self.proc.pid))
        self.addCleanup(self.stop_proc)

    def stop_proc(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api_now(self, path):
        """One request, no retry: the API must answer right now."""
        c = UnixHTTPConnection(self.lab.socket)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def service_names(self):
        return sorted(s["name"] for s in self.lab.meshctl_json("service", "list"))

    def test_ready_reload_stop(self):
        web = self.service("web", 80, {1: 1})
        config = self.lab.write_config([web])
        self.start_with_notify(config)

        seen = self.notify.wait_for("READY", 30, self.proc)
        # The moment READY=1 is read, the API answers on the first try.
        status, body = self.api_now("/v1/status")
        self.assertEqual(status, 200, body)
        self.assertEqual(self.service_names(), ["web"])
        ready = seen[-1]
        self.assertIn("1 service", ready.get("STATUS", ""), seen)
        self.assertIn("veth-c", ready.get("STATUS", ""), seen)
        self.assertNotIn("RELOADING", "".join(str(m) for m in seen))
        self.assertEqual(self.proc.poll(), None)

        # A reload that adds a service: RELOADING=1, then READY=1 once it is applied.
        self.lab.write_config([web, self.service("api", 81, {2: 1})])
        os.kill(self.proc.pid, signal.SIGHUP)
        seen = self.notify.wait_for("RELOADING", 10, self.proc)
        self.assertNotIn("READY", seen[-1], seen)
        self.assertTrue(seen[-1].get("MONOTONIC_USEC", "").isdigit(), seen)
        seen = self.notify.wait_for("READY", 20, self.proc)
        self.assertEqual(self.service_names(), ["api", "web"])
        self.assertIn("2 services", seen[-1].get("STATUS", ""), seen)

        # A refused reload: still RELOADING=1 then READY=1 (meshd runs on, unchanged), and
        # STATUS says the reload was refused.
        with open(config, "a") as f:
            f.write("  - {name: bad, vip: 10.0.0.1, port: 0, endpoints: []}\n")
        os.kill(self.proc.pid, signal.SIGHUP)
        self.notify.wait_for("RELOADING", 10, self.proc)
        seen = self.notify.wait_for("READY", 20, self.proc)
        self.assertIn("refused", seen[-1].get("STATUS", ""), seen)
        self.assertEqual(self.service_names(), ["api", "web"])

        self.proc.send_signal(signal.SIGTERM)
        seen = self.notify.wait_for("STOPPING", 20)
        self.assertIn("stopping", seen[-1].get("STATUS", ""), seen)
        self.assertEqual(self.proc.wait(30), 0, self.lab.meshd_log())


if __name__ == "__main__":
    unittest.main()
