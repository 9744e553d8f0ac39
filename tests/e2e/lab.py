"""lab.py — the e2e tests' handle on tools/lab/lab.sh (the one lab topology; nothing here
re-creates it), on meshd running in the lab's lb namespace, on meshctl, and on client traffic
(tests/e2e/client.py run inside the client namespace).

Binaries come from the environment (set by tests/e2e/CMakeLists.txt):
  MESHPATH_MESHD, MESHPATH_MESHCTL   built meshd and meshctl (default: ./build/...)
  MESHPATH_PKTGEN                    built pktgen (the scale tests' floods and UDP flows)
  MESHPATH_LAB_SH                    tools/lab/lab.sh
  MESHPATH_E2E_LOG_DIR               where meshd logs of finished labs are kept
"""
import collections
import itertools
import json
import os
import shutil
import signal
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PYTHON = "/usr/bin/python3"
CLIENT_PY = os.path.join(HERE, "client.py")
KEEPALIVE_PY = os.path.join(HERE, "keepalive_client.py")

MESHD = os.environ.get("MESHPATH_MESHD", os.path.join(ROOT, "build/userspace/meshd/meshd"))
MESHCTL = os.environ.get("MESHPATH_MESHCTL", os.path.join(ROOT, "build/tools/meshctl/meshctl"))
PKTGEN = os.environ.get("MESHPATH_PKTGEN", os.path.join(ROOT, "build/tools/pktgen/pktgen"))
LAB_SH = os.environ.get("MESHPATH_LAB_SH", os.path.join(ROOT, "tools/lab/lab.sh"))
LOG_DIR = os.environ.get("MESHPATH_E2E_LOG_DIR", "/tmp/meshpath-e2e-logs")

_counter = itertools.count()


def unique_prefix():
    """Short and unique per lab, so tests (and leftovers of killed runs) never collide."""
    return "e%x%x" % (os.getpid() % 0xFFFF, next(_counter))


def run(argv, check=True, timeout=120, **kw):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}\n"
                           f"stdout: {res.stdout}\nstderr: {res.stderr}")
    return res


def service_yaml(services):
    """services: [{"name", "vip", "port", "endpoints": [(address, port, weight)], "health": {},
    "algorithm", "forwarding", "on_eject", "syn_protection", "connect_retries", "timeouts": {}}]
    (health: optional, the keys of docs/config.md's health block)"""
    lines = ["services:"] if services else ["services: []"]
    for s in services:
        lines += [f"  - name: {s['name']}", f"    vip: {s['vip']}", f"    port: {s['port']}",
                  f"    protocol: {s.get('protocol', 'tcp')}",
                  f"    algorithm: {s.get('algorithm', 'maglev')}"]
        for key in ("forwarding", "on_eject", "syn_protection", "connect_retries"):
            if s.get(key):
                lines.append(f"    {key}: {s[key]}")
        if s.get("timeouts"):
            lines.append("    timeouts: {" +
                         ", ".join(f"{k}: {v}" for k, v in s["timeouts"].items()) + "}")
        if s.get("health"):
            lines.append("    health: {" + ", ".join(f"{k}: {v}" for k, v in s["health"].items()) + "}")
        eps = s.get("endpoints", [])
        lines.append("    endpoints:" if eps else "    endpoints: []")
        for address, port, weight in eps:
            lines.append(f"      - {{address: \"{address}\", port: {port}, weight: {weight}}}")
    return "\n".join(lines) + "\n"


class Session:
    """One keep-alive HTTP connection held open by client.py in the client namespace."""

    def __init__(self, lab, host, port):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns_client, PYTHON, CLIENT_PY, "session",
             "--host", host, "--port", str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self):
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError("session client ended unexpectedly")
        return json.loads(out)

    def get(self):
        return self._ask("get")

    def start_loop(self, seconds):
        """Requests back to back for `seconds`; collect the summary with read()."""
        self.proc.stdin.write(f"loop {seconds}\n")
        self.proc.stdin.flush()

    def start_stream(self, lines, interval):
        """One slow response of `lines` lines; collect the summary with read()."""
        self.proc.stdin.write(f"stream {lines} {interval}\n")
        self.proc.stdin.flush()

    def close(self):
        quit_process(self.proc, 5)


def quit_process(proc, timeout):
    """Asks a stdin-driven helper (client.py session, keepalive_client.py) to quit, kills it if it
    does not within `timeout` seconds, and closes its pipes."""
    if proc.poll() is None:
        try:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()
        except OSError:
            pass


class KeepaliveCrowd:
    """Many keep-alive connections held open at once by keepalive_client.py in the client
    namespace (see its docstring): open() opens them, round() sends one more request on each,
    both return the client's JSON summary."""

    def __init__(self, lab, host, port, count, sources=(), concurrency=512, timeout=10.0,
                 give_up=0):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns_client, PYTHON, KEEPALIVE_PY, "--host", host,
             "--port", str(port), "--count", str(count), "--sources", ",".join(sources),
             "--concurrency", str(concurrency), "--timeout", str(timeout),
             "--give-up", str(give_up)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"keepalive client ended during '{command}' "
                               f"(exit {self.proc.wait()})")
        return json.loads(out)

    def open(self):
        return self._ask("open")

    def round(self):
        return self._ask("round")

    def close(self):
        quit_process(self.proc, 30)


class Lab:
    def __init__(self, endpoints=3, prefix=None, client_addrs=0, snat_pool=0, scale=False,
                 async_servers=False):
        """client_addrs, snat_pool, scale: lab.sh up's options of the same names (none by
        default); async_servers: epserver.py --async in the endpoints (lab.sh http-servers
        --async), for tens of thousands of connections."""
        self.prefix = prefix or unique_prefix()
        self.endpoints = endpoints
        self.up_options = []
        if client_addrs:
            self.up_options += ["--client-addrs", str(client_addrs)]
        if snat_pool:
            self.up_options += ["--snat-pool", str(snat_pool)]
        if scale:
            self.up_options.append("--scale")
        self.server_options = ["--async"] if async_servers else []
        self.env = None
        self.sessions = []
        self.background = []  # (name, Popen) killed by down() if still running

    # --- topology ---

    def lab(self, *args, check=True, timeout=120):
        return run(["bash", LAB_SH, args[0], "--prefix", self.prefix, *args[1:]], check=check,
                   timeout=timeout)

    def up(self):
        self.lab("up", "--endpoints", str(self.endpoints), *self.up_options)
        self.env = json.loads(self.lab("env", "--json").stdout)
        self.lab("http-servers", *self.server_options)
        return self

    def down(self):
        for s in self.sessions:
            s.close()
        for _, p in self.background:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        if self.env is not None:
            self._keep_log()
        self.lab("meshd-stop", check=False)
        self.lab("down", check=False)

    def _keep_log(self):
        log = os.path.join(self.state_dir, "meshd.log")
        if os.path.exists(log):
            os.makedirs(LOG_DIR, exist_ok=True)
            shutil.copy(log, os.path.join(LOG_DIR, f"{self.prefix}-meshd.log"))

    @property
    def ns_client(self):
        return self.env["client"]["ns"]

    @property
    def state_dir(self):
        return self.env["state_dir"]

    @property
    def socket(self):
        return os.path.join(self.state_dir, "meshd.sock")

    @property
    def http_port(self):
        return self.env["http_port"]

    def vip(self, family):
        return self.env["vip4"] if family == 4 else self.env["vip6"]

    def ep_address(self, i, family):
        """Address of endpoint i (1-based) in the given family."""
        return self.env["endpoints"][i - 1]["ipv4" if family == 4 else "ipv6"]

    def ep_ns(self, i):
        return self.env["endpoints"][i - 1]["ns"]

    @property
    def client_sources(self):
        """The client's IPv4 source addresses: its own, then lab.sh up --client-addrs's."""
        return [self.env["client"]["ipv4"], *self.env["client"]["extra_ipv4"]]

    @property
    def snat_addresses(self):
        """The lb's SNAT sources toward the endpoints (IPv4): node.ipv4, then node.snat_pool."""
        return [self.env["lb"]["ipv4"], *self.env["lb"]["snat_pool"]]

    def ep_key(self, i, family, port=None):
        a = self.ep_address(i, family)
        p = port or self.http_port
        return f"{a}:{p}" if family == 4 else f"[{a}]:{p}"

    # --- meshd ---

    def write_config(self, services, name="meshd.yaml", node=None):
        """node: more keys of the node section, {key: YAML text}, e.g. {"snat_ports": "1024-2047"}
        (lab.sh meshd-config already lists the lab's snat_pool, if it has one)."""
        path = os.path.join(self.state_dir, name)
        extra = "".join(f"  {k}: {v}\n" for k, v in (node or {}).items())
        with open(path, "w") as f:
            f.write(self.lab("meshd-config").stdout + extra + service_yaml(services))
        return path

    def start_meshd(self, config, args=()):
        """args: more of meshd's options (e.g. --store URL)."""
        self.lab("meshd-start", MESHD, config, *args, timeout=60)
        deadline = time.monotonic() + 20
        while True:
            res = self.meshctl("status", check=False)
            if res.returncode == 0:
                return res
            if time.monotonic() > deadline:
                raise RuntimeError(f"meshd not answering: {res.stderr}\n{self.meshd_log()}")
            time.sleep(0.1)

    def kill_meshd(self):
        """SIGKILL: no chance to clean up, as in a crash."""
        self.lab("meshd-stop", "--kill")

    def stop_meshd(self):
        self.lab("meshd-stop")

    def meshd_log(self, lines=40):
        try:
            with open(os.path.join(self.state_dir, "meshd.log")) as f:
                return "meshd log (tail):\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return "(no meshd log)"

    def meshctl(self, *args, check=True, socket=None):
        argv = [MESHCTL, "--socket", socket or self.socket, *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"meshctl {' '.join(args)} exited {res.returncode}: "
                               f"{res.stderr}\n{self.meshd_log()}")
        return res

    def meshctl_json(self, *args):
        return json.loads(self.meshctl("-o", "json", *args).stdout)

    # --- traffic from the client namespace ---

    def burst(self, host, port, count, concurrency=16, timeout=5.0, curl=False):
        res = run(["ip", "netns", "exec", self.ns_client, PYTHON, CLIENT_PY, "burst",
                   "--host", host, "--port", str(port), "--count", str(count),
                   "--concurrency", str(concurrency), "--timeout", str(timeout)]
                  + (["--curl"] if curl else []),
                  timeout=count * timeout + 60)
        return json.loads(res.stdout)

    def start_steady(self, host, port, duration, concurrency=4, timeout=2.0, curl=False):
        """Starts client.py steady in the background; .communicate() gives its JSON line.
        curl: each request a curl process (client.py --curl)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns_client, PYTHON, CLIENT_PY, "steady", "--host", host,
             "--port", str(port), "--duration", str(duration), "--concurrency", str(concurrency),
             "--timeout", str(timeout)] + (["--curl"] if curl else []),
            stdout=subprocess.PIPE, text=True)

    def udp(self, host, port, count, timeout=0.5, source_port=0):
        """`count` UDP datagrams, each waiting for its answer (client.py udp): each a new flow,
        or all one flow from `source_port`."""
        res = run(["ip", "netns", "exec", self.ns_client, PYTHON, CLIENT_PY, "udp", "--host", host,
                   "--port", str(port), "--count", str(count), "--timeout", str(timeout),
                   "--source-port", str(source_port)],
                  timeout=count * timeout + 60)
        return json.loads(res.stdout)

    def once(self, host, port, source_port, timeout=2.0):
        """One request from a fixed source port, closed with a RST (client.py once)."""
        res = run(["ip", "netns", "exec", self.ns_client, PYTHON, CLIENT_PY, "once", "--host",
                   host, "--port", str(port), "--source-port", str(source_port), "--timeout",
                   str(timeout)], timeout=timeout + 30)
        return json.loads(res.stdout)

    def kill_http_server(self, i):
        """Kills endpoint i's HTTP server: its port now answers a SYN with RST."""
        ns = self.env["endpoints"][i - 1]["ns"]
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=True).stdout.split()
        if not pids:
            raise RuntimeError(f"no process in {ns} to kill")
        subprocess.run(["kill", "-9", *pids], check=True)
        killed = time.time()
        # kill(1) returns before the processes are gone; until then their sockets may still
        # take a datagram in silence (no ICMP, no RST), which no test means to measure.
        deadline = time.monotonic() + 5
        while subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                             text=True).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.005)
        return killed

    def restart_http_servers(self):
        self.lab("http-servers", *self.server_options)

    # --- scale: many connections, pktgen, what endpoints see ---

    def keepalive_crowd(self, host, port, count, **kw):
        """A KeepaliveCrowd of `count` connections (not opened yet), closed by down()."""
        c = KeepaliveCrowd(self, host, port, count, **kw)
        self.sessions.append(c)
        return c

    def pktgen_send(self, dst_ip, dst_port, proto, src_ip, src_port, flows, count, rate=None,
                    stamp=False, timeout=120, duration=None):
        """pktgen send from the client's interface to the lb (its MAC), BPF_PROG_RUN live
        frames; src_ip / src_port: "A" or "A-B"; duration: stop after that many seconds even
        if count is not sent. Returns pktgen's JSON summary."""
        argv = [PKTGEN, "send", self.env["client"]["iface"], "--netns", self.ns_client,
                "--dst-mac", self.env["lb"]["client_mac"], "--dst-ip", dst_ip,
                "--dst-port", str(dst_port), "--proto", proto, "--src-ip", src_ip,
                "--src-port", src_port, "--flows", str(flows), "--count", str(count),
                "--json", "-q"]
        if rate:
            argv += ["--rate", str(rate)]
        if duration:
            argv += ["--duration", str(duration)]
        if stamp:
            argv.append("--stamp")
        return json.loads(run(argv, timeout=timeout).stdout)

    def start_sink(self, i, latency=False):
        """pktgen sink on endpoint i's eth0, passing every frame on to the endpoint's kernel
        (ARP, the servers); stop_sink() returns its JSON summary. With latency, the summary's
        latency.samples counts the frames pktgen --stamp wrote (nothing else the endpoint got)."""
        argv = [PKTGEN, "sink", "eth0", "--netns", self.ep_ns(i), "--pass", "--json", "-q"]
        if latency:
            argv.append("--latency")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.background.append((f"sink ep{i}", p))
        # It says so on stderr once its program is attached.
        line = p.stderr.readline()
        if "counting" not in line:
            p.kill()
            raise RuntimeError(f"pktgen sink in ep{i} did not start: {line}{p.stderr.read()}")
        return p

    @staticmethod
    def stop_sink(p):
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"pktgen sink exited {p.returncode}: {err}")
        return json.loads(out)

    def udp_blackhole(self, i, port):
        """A UDP socket on endpoint i's port that never reads: datagrams reach a listener (so
        the endpoint answers no ICMP port unreachable, a passive health failure) and cost no
        CPU; once its buffer is full the kernel drops the rest silently."""
        code = ("import socket, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"s.bind(('0.0.0.0', {port}))\n"
                "print('bound', flush=True)\n"
                "time.sleep(1e9)\n")
        p = subprocess.Popen(["ip", "netns", "exec", self.ep_ns(i), PYTHON, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.background.append((f"udp blackhole ep{i}", p))
        if p.stdout.readline().strip() != "bound":
            raise RuntimeError(f"UDP listener on ep{i}:{port} did not start")
        return p

    def established_peers(self, i, port=None):
        """Counter of peer addresses of endpoint i's established TCP connections to `port`
        (default: the HTTP port), from ss in its namespace."""
        port = port or self.http_port
        res = run(["ip", "netns", "exec", self.ep_ns(i), "ss", "-Htn", "state", "established",
                   f"( sport = :{port} )"], timeout=60)
        peers = collections.Counter()
        for line in res.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 4:
                addr = fields[-1].rsplit(":", 1)[0].strip("[]")
                if addr.startswith("::ffff:"):
                    addr = addr[len("::ffff:"):]
                peers[addr] += 1
        return peers

    def sysctl(self, node_ns, key):
        return run(["ip", "netns", "exec", node_ns, "sysctl", "-n", key]).stdout.strip()

    def session(self, host, port):
        s = Session(self, host, port)
        self.sessions.append(s)
        return s
