"""etcd_cluster.py — a real etcd cluster (Debian's etcd-server) for the e2e tests of `meshd
--store`: N members inside one network namespace (the lab's lb namespace, where meshd runs), each
with its own client and peer port on loopback and, when asked, on more addresses of that
namespace (so endpoints in their own namespaces reach it to register). Members can be stopped and
started again with their data, as in an outage."""
import json
import os
import shutil
import subprocess
import sys
import time

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
BASE_PORT = 22379


# put_many's writer: [(key, value)] as JSON on stdin, transactions to 127.0.0.1:PORT.
_PUT_MANY = r"""
import base64, http.client, json, sys
port, per = int(sys.argv[1]), int(sys.argv[2])
pairs = json.load(sys.stdin)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
b64 = lambda s: base64.b64encode(s.encode()).decode()
for i in range(0, len(pairs), per):
    ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in pairs[i:i + per]]
    conn.request("POST", "/v3/kv/txn", body=json.dumps({"success": ops}))
    res = conn.getresponse()
    body = res.read()
    if res.status != 200:
        sys.exit(f"txn {i // per}: {res.status} {body[:200]!r}")
"""


def available():
    return os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)


class EtcdCluster:
    def __init__(self, ns, data_root, members=3, listen_addrs=(), log_dir=None):
        self.ns = ns
        self.data_root = data_root
        self.names = [f"m{i + 1}" for i in range(members)]
        self.listen_addrs = list(listen_addrs)
        self.log_dir = log_dir or data_root
        self.procs = {}

    def client_port(self, i):
        return BASE_PORT + 2 * i

    def peer_port(self, i):
        return BASE_PORT + 2 * i + 1

    @property
    def client_urls(self):
        return [f"127.0.0.1:{self.client_port(i)}" for i in range(len(self.names))]

    def store_url(self, prefix="/meshpath", host=None):
        hosts = [f"{host}:{self.client_port(i)}" for i in range(len(self.names))] if host \
            else self.client_urls
        return "etcd://" + ",".join(hosts) + prefix

    def _argv(self, i):
        name = self.names[i]
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer_port(j)}"
                           for j, n in enumerate(self.names))
        clients = [f"http://127.0.0.1:{self.client_port(i)}"] + \
            [f"http://{a}:{self.client_port(i)}" for a in self.listen_addrs]
        return ["ip", "netns", "exec", self.ns, ETCD, "--name", name,
                "--data-dir", os.path.join(self.data_root, name),
                "--listen-client-urls", ",".join(clients),
                "--advertise-client-urls", clients[0],
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port(i)}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port(i)}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", os.path.basename(self.data_root),
                "--heartbeat-interval", "50", "--election-timeout", "500"]

    def start_member(self, i):
        log = open(os.path.join(self.log_dir, f"etcd-{self.names[i]}.log"), "a")
        self.procs[i] = subprocess.Popen(self._argv(i), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        log.close()

    def stop_member(self, i, kill=False):
        p = self.procs.pop(i, None)
        if p is None or p.poll() is not None:
            return
        (p.kill if kill else p.terminate)()
        p.wait(timeout=30)

    def up(self, timeout=30):
        os.makedirs(self.data_root, exist_ok=True)
        for i in range(len(self.names)):
            self.start_member(i)
        self.wait_healthy(timeout)
        return self

    def down(self):
        for i in list(self.procs):
            self.stop_member(i, kill=True)

    def stop_all(self):
        for i in list(self.procs):
            self.stop_member(i)

    def start_all(self, timeout=30):
        for i in range(len(self.names)):
            if i not in self.procs:
                self.start_member(i)
        self.wait_healthy(timeout)

    def ctl(self, *args, check=True, timeout=20):
        argv = ["ip", "netns", "exec", self.ns, ETCDCTL, "--endpoints",
                ",".join(self.client_urls), "--dial-timeout", "2s", "--command-timeout", "5s",
                *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "ETCDCTL_API": "3"})
        if check and res.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {res.stderr.strip()}")
        return res

    def put(self, key, value):
        self.ctl("put", key, value)

    def put_many(self, pairs, ops_per_txn=128):
        """Writes [(key, value)] in transactions of ops_per_txn puts (etcd's default
        --max-txn-ops), through the v3 JSON gateway from a process in the namespace: what an
        operator's tooling does with thousands of keys (one etcdctl per key would take minutes)."""
        res = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", _PUT_MANY,
                              str(self.client_port(0)), str(ops_per_txn)],
                             input=json.dumps(pairs), capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"etcd put_many: {res.stderr.strip()}")

    def delete(self, key):
        self.ctl("del", key)

    def get_prefix(self, prefix):
        """{key: value} under the prefix."""
        out = self.ctl("get", "--prefix", prefix).stdout.splitlines()
        return dict(zip(out[0::2], out[1::2]))

    def wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            res = self.ctl("endpoint", "health", check=False)
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy within {timeout}s: {res.stderr}")
            time.sleep(0.2)
