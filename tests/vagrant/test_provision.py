"""test_provision.py — the vagrant lab's provisioning (vagrant/provision/*.sh), checked where no
VM can boot: every step the Vagrantfile gives every VM is run in dry-run mode with lab.json's
addresses, and what it would do is read back from its records (vagrant/provision/lib.sh):
- lab.json itself: each address in its network, none taken twice, none the .1 a provider gives
  the host; and the Vagrantfile's plan (`ruby Vagrantfile`, when ruby is installed) is the one
  run here, so the two cannot drift apart;
- router: forwarding, fib_multipath_hash_policy=1, and one ECMP route to the VIP with every lb
  as a next hop;
- lb: meshd.yaml parses (PyYAML when installed, else its key lines) with the node section of
  that VM's addresses, and meshd's own --check-config accepts it (the built meshd, on lo); the
  unit from deploy/ with a drop-in whose command line has --store etcd:// with all three etcd
  members; the route back to the clients; the service created in etcd only if absent;
- endpoint: the HTTP server and `meshctl register SERVICE ADDR:PORT --ttl 10s --store URL`;
- etcd: --initial-cluster lists all three members, each its own name and addresses;
- client: the route to the VIP via the router; common: the project's install commands;
- every unit and drop-in written passes `systemd-analyze verify` (when installed);
- bad arguments are refused before anything is done.
Environment: MESHPATH_MESHD (the built meshd, optional)."""
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
VAGRANT_DIR = os.path.join(ROOT, "vagrant")
PROVISION = os.path.join(VAGRANT_DIR, "provision")
with open(os.path.join(VAGRANT_DIR, "lab.json"), encoding="utf-8") as f:
    LAB = json.load(f)
NODES = LAB["nodes"]
SERVICE = LAB["service"]
MESHD = os.environ.get("MESHPATH_MESHD", os.path.join(ROOT, "build/userspace/meshd/meshd"))

try:
    import yaml
except ImportError:  # python3-yaml not installed: the key lines are checked instead
    yaml = None


def nodes(role):
    return [n for n, node in NODES.items() if node["role"] == role]


def addr(name, net):
    return NODES[name]["addrs"][net]


ETCD = nodes("etcd")
LBS = nodes("lb")
ROUTER = nodes("router")[0]
STORE_URL = ("etcd://" + ",".join(f"{addr(n, 'etcd')}:{LAB['etcd_client_port']}" for n in ETCD)
             + LAB["store_prefix"])
ETCD_CLUSTER = ",".join(f"{n}=http://{addr(n, 'etcd')}:{LAB['etcd_peer_port']}" for n in ETCD)


def plan(name):
    """The steps the Vagrantfile runs on VM `name` (provisioning_steps there), as
    [(provisioner name, script, args)]."""
    node = NODES[name]
    role = node["role"]
    steps = [("common", "common.sh", [role])]
    if role == "etcd":
        steps.append(("etcd", "etcd.sh", [name, ETCD_CLUSTER, str(LAB["etcd_client_port"])]))
    elif role == "endpoint":
        steps.append(("endpoint", "endpoint.sh",
                      ["--name", name, "--ttl", SERVICE["register_ttl"], SERVICE["name"],
                       addr(name, "back"), str(SERVICE["endpoint_port"]), STORE_URL]))
    elif role == "lb":
        service = ",".join(str(SERVICE[k]) for k in ("name", "vip", "port", "protocol"))
        steps.append(("lb", "lb.sh",
                      ["--front-ip", addr(name, "front"),
                       "--route", f"{LAB['networks']['client']},{addr(ROUTER, 'front')}",
                       "--service", service, "--xdp-mode", LAB["xdp_mode"],
                       addr(name, "back"), STORE_URL]))
    elif role == "router":
        steps.append(("router", "router.sh",
                      [SERVICE["vip"]] + [addr(n, "front") for n in LBS]))
    elif role == "client":
        steps.append(("client", "client.sh",
                      [addr(name, "client"), SERVICE["vip"], addr(ROUTER, "client")]))
    else:
        raise AssertionError(f"lab.json: {name} has an unknown role {role}")
    return steps


class DryRun:
    """What a script printed in dry-run mode: commands (argv lists), commands with their input,
    files {path: (mode, content)}, in the order they came."""

    def __init__(self, script, args, stdout, stderr):
        self.script, self.args, self.stderr = script, args, stderr
        self.commands, self.inputs, self.files, self.order = [], [], {}, []
        lines = stdout.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        i = 0
        while i < len(lines):
            line = lines[i]
            kind, _, rest = line.partition(" ")
            if kind in ("@@file", "@@run-input"):
                end = lines.index("@@end", i + 1)
                body = "\n".join(lines[i + 1:end])
                if kind == "@@file":
                    path, mode = rest.rsplit(" ", 1)
                    self.files[path] = (mode, body)
                    self.order.append(("file", path))
                else:
                    self.inputs.append((shlex.split(rest), body))
                    self.order.append(("run-input", shlex.split(rest)))
                i = end + 1
                continue
            if kind == "@@run":
                self.commands.append(shlex.split(rest))
                self.order.append(("run", shlex.split(rest)))
            elif kind != "@@note":
                raise AssertionError(f"{script}: stdout line that is no record: {line!r}")
            i += 1

    def where(self):
        return f"{self.script} {' '.join(self.args)}"

    def file(self, path):
        if path not in self.files:
            raise AssertionError(f"{self.where()}: does not write {path}; "
                                 f"writes {sorted(self.files)}")
        return self.files[path][1]

    def ran(self, *prefix):
        """The commands that start with `prefix`."""
        return [c for c in self.commands if c[:len(prefix)] == list(prefix)]

    def unit_execs(self, path):
        """The ExecStart= command lines of a unit file (continuation lines joined)."""
        text = self.file(path).replace("\\\n", " ")
        return [shlex.split(line.split("=", 1)[1]) for line in text.splitlines()
                if line.startswith("ExecStart=") and line.strip() != "ExecStart="]


def dry_run(script, args, expect_ok=True):
    env = {**os.environ, "MESHPATH_PROVISION_DRY_RUN": "1", "MESHPATH_SRC": ROOT,
           "MESHPATH_BUILD_DIR": LAB["build_dir"]}
    res = subprocess.run(["bash", os.path.join(PROVISION, script), "--dry-run", *args],
                         capture_output=True, text=True, env=env, timeout=60)
    if not expect_ok:
        return res
    if res.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)}: exit {res.returncode}\n{res.stderr}")
    return DryRun(script, args, res.stdout, res.stderr)


def step_of(name, script):
    for _, s, args in plan(name):
        if s == script:
            return dry_run(s, args)
    raise AssertionError(f"{name} runs no {script}")


class LabJson(unittest.TestCase):
    def test_addresses_fit_their_networks(self):
        nets = {n: ipaddress.ip_network(c) for n, c in LAB["networks"].items()}
        seen = {}
        for name, node in NODES.items():
            self.assertIn(node["role"], LAB["resources"], name)
            for net, a in node["addrs"].items():
                ip = ipaddress.ip_address(a)
                self.assertIn(net, nets, f"{name}: unknown network {net}")
                self.assertIn(ip, nets[net], f"{name}: {a} is not in {net} {nets[net]}")
                # libvirt and VirtualBox give the host the first address of a private network
                self.assertNotEqual(ip, nets[net].network_address + 1,
                                    f"{name}: {a} is the address the provider gives the host")
                self.assertNotIn(a, seen, f"{a}: {name} and {seen.get(a)}")
                seen[a] = name
        vip = ipaddress.ip_address(SERVICE["vip"])
        for net, cidr in nets.items():
            self.assertNotIn(vip, cidr, f"the VIP must not be on a lab network ({net})")

    def test_topology(self):
        self.assertEqual(len(ETCD), 3, "a three-member etcd cluster")
        self.assertGreaterEqual(len(LBS), 2, "ECMP over at least two lbs")
        self.assertEqual(len(nodes("router")), 1)
        self.assertEqual(len(nodes("client")), 1)
        self.assertGreaterEqual(len(nodes("endpoint")), 2)
        for lb in LBS:
            self.assertEqual(set(NODES[lb]["addrs"]), {"front", "back", "etcd"}, lb)
        for ep in nodes("endpoint"):
            self.assertEqual(set(NODES[ep]["addrs"]), {"back", "etcd"}, ep)
        # etcd first: the cluster forms before the endpoints register and the lbs seed it
        order = [NODES[n]["role"] for n in NODES]
        self.assertEqual(order[:3], ["etcd"] * 3, order)
        self.assertLess(order.index("endpoint"), order.index("lb"), order)

    def test_vagrantfile_plan_is_the_one_tested(self):
        ruby = shutil.which("ruby")
        if not ruby:
            self.skipTest("ruby not installed (it comes with vagrant): the Vagrantfile's plan is "
                          "not compared with this test's")
        env = {k: v for k, v in os.environ.items() if k != "MESHPATH_XDP_MODE"}
        res = subprocess.run([ruby, "Vagrantfile"], cwd=VAGRANT_DIR, capture_output=True,
                             text=True, env=env, timeout=60)
        self.assertEqual(res.returncode, 0, res.stderr)
        out = json.loads(res.stdout)
        self.assertEqual(out["store_url"], STORE_URL)
        self.assertEqual(out["etcd_cluster"], ETCD_CLUSTER)
        self.assertEqual(list(out["plan"]), list(NODES), "VMs and their order")
        for name, steps in out["plan"].items():
            got = [(s["name"], s["script"], s["args"]) for s in steps]
            self.assertEqual(got, plan(name), name)


class EveryStep(unittest.TestCase):
    def test_every_step_of_every_vm_runs_dry(self):
        used = set()
        for name in NODES:
            for _, script, args in plan(name):
                run = dry_run(script, args)
                self.assertTrue(run.order, f"{name}: {script} would do nothing")
                used.add(script)
        scripts = {f for f in os.listdir(PROVISION) if f.endswith(".sh") and f != "lib.sh"}
        self.assertEqual(scripts, used, "a script in vagrant/provision/ that no VM runs")

    def test_commands_name_files_that_exist(self):
        """The project's own commands the lb and endpoint steps run are real files."""
        for name in LBS + nodes("endpoint"):
            run = step_of(name, "common.sh")
            for cmd in run.commands:
                for word in cmd:
                    if word.startswith(ROOT + "/"):
                        self.assertTrue(os.path.exists(word), f"{name}: {word}")


class Router(unittest.TestCase):
    def setUp(self):
        self.run_ = step_of(ROUTER, "router.sh")

    def test_forwarding_and_l4_hash(self):
        path = "/etc/sysctl.d/60-meshpath-router.conf"
        settings = dict(line.split("=", 1) for line in self.run_.file(path).splitlines()
                        if line and not line.startswith("#"))
        self.assertEqual(settings.get("net.ipv4.fib_multipath_hash_policy"), "1", settings)
        self.assertEqual(settings.get("net.ipv4.ip_forward"), "1", settings)
        self.assertTrue(self.run_.ran("sysctl", "-p", path), "the sysctls are applied now too")

    def test_ecmp_route_has_every_lb(self):
        execs = self.run_.unit_execs("/etc/systemd/system/meshpath-net.service")
        vip_route = ["/sbin/ip", "route", "replace", SERVICE["vip"] + "/32"]
        routes = [c for c in execs if c[:4] == vip_route]
        self.assertEqual(len(routes), 1, execs)
        rest = routes[0][4:]
        hops = [rest[i + 2] for i in range(0, len(rest), 3)]
        self.assertEqual(rest, [w for h in hops for w in ("nexthop", "via", h)], rest)
        self.assertEqual(sorted(hops), sorted(addr(lb, "front") for lb in LBS))
        self.assertTrue(self.run_.ran("systemctl", "enable", "meshpath-net.service"))
        self.assertTrue(self.run_.ran("systemctl", "restart", "meshpath-net.service"))


def parse_node_section(text):
    """meshd.yaml's node section: with PyYAML the whole file, else its `key: value` lines."""
    if yaml is not None:
        doc = yaml.safe_load(text)
        return doc["node"], doc
    node = {}
    for line in text.splitlines():
        m = re.match(r"^  ([a-z0-9_]+): (.*?)\s*(#.*)?$", line)
        if m:
            value = m.group(2)
            if value.startswith("["):
                value = [v.strip() for v in value.strip("[]").split(",")]
            node[m.group(1)] = value
    return node, {"node": node}


class LoadBalancer(unittest.TestCase):
    CONFIG = "/etc/meshpath/meshd.yaml"

    def test_meshd_config(self):
        for lb in LBS:
            with self.subTest(lb=lb):
                text = step_of(lb, "lb.sh").file(self.CONFIG)
                node, doc = parse_node_section(text)
                self.assertEqual(set(doc), {"node"}, "services come from etcd, not the file")
                self.assertEqual(node["ipv4"], addr(lb, "back"))
                self.assertEqual(node["xdp_mode"], LAB["xdp_mode"])
                # dry run: each interface is named by the address it holds
                self.assertEqual(node["interfaces"],
                                 [f"IFACE-OF-{addr(lb, 'front')}", f"IFACE-OF-{addr(lb, 'back')}"])

    def test_meshd_check_config_accepts_it(self):
        if not os.access(MESHD, os.X_OK):
            self.skipTest(f"no built meshd at {MESHD}")
        run = step_of(LBS[0], "lb.sh")
        # the VM's interfaces are not here: both become this host's lo (listed once)
        text, n = re.subn(r"\[IFACE-OF-[0-9.]+, IFACE-OF-[0-9.]+\]", "[lo]", run.file(self.CONFIG))
        self.assertEqual(n, 1, text)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(text)
            f.flush()
            res = subprocess.run([MESHD, "--check-config", f.name], capture_output=True,
                                 text=True, timeout=60)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn("OK (0 services)", res.stdout)
        self.assertTrue(run.ran("/usr/sbin/meshd", "--check-config", self.CONFIG),
                        "lb.sh has meshd check the file in the VM too")

    def test_meshd_runs_with_the_store(self):
        for lb in LBS:
            with self.subTest(lb=lb):
                run = step_of(lb, "lb.sh")
                self.assertTrue(run.ran("install", "-D", "-m", "0644",
                                        os.path.join(ROOT, "deploy/systemd/meshd.service"),
                                        "/etc/systemd/system/meshd.service"),
                                "the unit from deploy/")
                execs = run.unit_execs("/etc/systemd/system/meshd.service.d/10-store.conf")
                self.assertEqual(len(execs), 1, execs)
                argv = execs[0]
                self.assertEqual(argv[:3], ["/usr/sbin/meshd", "--config", self.CONFIG])
                store = argv[argv.index("--store") + 1]
                self.assertTrue(store.startswith("etcd://"), store)
                self.assertEqual(store, STORE_URL)
                hosts = store[len("etcd://"):].split("/", 1)[0].split(",")
                members = [f"{addr(n, 'etcd')}:{LAB['etcd_client_port']}" for n in ETCD]
                self.assertEqual(sorted(hosts), sorted(members), "all three etcd members")
                self.assertIn("ExecStart=\n", run.file(
                    "/etc/systemd/system/meshd.service.d/10-store.conf"),
                              "the unit's own ExecStart is reset first")
                # started after the drop-in is written and systemd has re-read its units
                order = run.order
                restart = order.index(("run", ["systemctl", "restart", "meshd.service"]))
                reload_ = max(i for i, o in enumerate(order)
                              if o == ("run", ["systemctl", "daemon-reload"]))
                drop_in = order.index(("file", "/etc/systemd/system/meshd.service.d/10-store.conf"))
                self.assertLess(drop_in, reload_)
                self.assertLess(reload_, restart)

    def test_route_back_to_the_clients_and_forwarding(self):
        run = step_of(LBS[0], "lb.sh")
        execs = run.unit_execs("/etc/systemd/system/meshpath-net.service")
        self.assertIn(["/sbin/ip", "route", "replace", LAB["networks"]["client"], "via",
                       addr(ROUTER, "front")], execs)
        self.assertIn("net.ipv4.ip_forward=1", run.file("/etc/sysctl.d/60-meshpath-lb.conf"))

    def test_service_created_in_etcd_if_absent(self):
        run = step_of(LBS[0], "lb.sh")
        self.assertEqual(len(run.inputs), 1, run.inputs)
        argv, text = run.inputs[0]
        self.assertEqual(argv[-1], "txn")
        endpoints = [a for a in argv if a.startswith("--endpoints=")]
        self.assertEqual(endpoints, ["--endpoints=" + ",".join(
            f"{addr(n, 'etcd')}:{LAB['etcd_client_port']}" for n in ETCD)])
        key = f"{LAB['store_prefix']}/services/{SERVICE['name']}"
        lines = text.split("\n")
        # compares, blank, success ops, blank, failure ops (none), blank
        self.assertEqual(lines[0], f'create("{key}") = "0"')
        self.assertEqual(lines[1], "")
        put = shlex.split(lines[2])
        self.assertEqual(put[:2], ["put", key])
        self.assertEqual(json.loads(put[2]), {"vip": SERVICE["vip"], "port": SERVICE["port"],
                                              "protocol": SERVICE["protocol"]})
        self.assertEqual(lines[3:], ["", ""], "etcdctl reads the failure branch up to a blank line")


class Endpoint(unittest.TestCase):
    def test_register_and_serve(self):
        for ep in nodes("endpoint"):
            with self.subTest(ep=ep):
                run = step_of(ep, "endpoint.sh")
                a, port = addr(ep, "back"), str(SERVICE["endpoint_port"])
                reg = run.unit_execs("/etc/systemd/system/meshpath-register.service")
                self.assertEqual(reg, [["/usr/bin/meshctl", "register", SERVICE["name"],
                                        f"{a}:{port}", "--ttl", "10s", "--store", STORE_URL]])
                http = run.unit_execs("/etc/systemd/system/meshpath-http.service")
                self.assertEqual(http, [["/usr/bin/python3", "-m", "http.server", port, "--bind", a,
                                         "--directory", "/srv/meshpath-endpoint"]])
                self.assertEqual(run.file("/srv/meshpath-endpoint/index.html"), ep)
                self.assertIn("BindsTo=meshpath-http.service",
                              run.file("/etc/systemd/system/meshpath-register.service"))
                self.assertTrue(run.ran("systemctl", "enable", "meshpath-http.service",
                                        "meshpath-register.service"))


class Etcd(unittest.TestCase):
    def test_members(self):
        peers = {n: f"http://{addr(n, 'etcd')}:{LAB['etcd_peer_port']}" for n in ETCD}
        for member in ETCD:
            with self.subTest(member=member):
                run = step_of(member, "etcd.sh")
                drop_in = "/etc/systemd/system/etcd.service.d/meshpath-lab.conf"
                execs = run.unit_execs(drop_in)
                self.assertEqual(len(execs), 1, execs)
                argv = execs[0]
                opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1)
                       if argv[i].startswith("--")}
                cluster = dict(m.split("=", 1) for m in opt["--initial-cluster"].split(","))
                self.assertEqual(cluster, peers, "all three members")
                self.assertEqual(opt["--name"], member)
                self.assertEqual(opt["--listen-peer-urls"], peers[member])
                self.assertEqual(opt["--initial-advertise-peer-urls"], peers[member])
                client = f"http://{addr(member, 'etcd')}:{LAB['etcd_client_port']}"
                self.assertEqual(opt["--advertise-client-urls"], client)
                self.assertIn(client, opt["--listen-client-urls"].split(","))
                self.assertEqual(opt["--initial-cluster-state"], "new")
                self.assertIn("UnsetEnvironment=ETCD_NAME ETCD_DATA_DIR", run.file(drop_in))
                self.assertTrue(run.ran("systemctl", "restart", "--no-block", "etcd.service"),
                                "a first member waits for a quorum: starting it must not block")


class ClientAndCommon(unittest.TestCase):
    def test_client_routes_the_vip_via_the_router(self):
        client = nodes("client")[0]
        run = step_of(client, "client.sh")
        execs = run.unit_execs("/etc/systemd/system/meshpath-net.service")
        self.assertIn(["/sbin/ip", "route", "replace", SERVICE["vip"] + "/32", "via",
                       addr(ROUTER, "client"), "dev", f"IFACE-OF-{addr(client, 'client')}"], execs)
        installs = [c for c in run.commands if "apt-get" in c and "install" in c]
        self.assertTrue(installs and {"curl", "wrk"} <= set(installs[0]), installs)

    def test_common(self):
        lb = step_of(LBS[0], "common.sh")
        self.assertTrue(lb.ran("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-q"))
        self.assertTrue(lb.ran(os.path.join(ROOT, "scripts/install-deps.sh")))
        self.assertTrue(lb.ran("env", f"MESHPATH_BUILD_DIR={LAB['build_dir']}",
                               os.path.join(ROOT, "scripts/build.sh")))
        self.assertTrue(lb.ran("cmake", "--install", LAB["build_dir"]))
        ep = step_of(nodes("endpoint")[0], "common.sh")
        self.assertTrue([c for c in ep.ran("cmake", "--build", LAB["build_dir"])
                         if "meshctl" in c], ep.commands)
        for name in ETCD + [ROUTER]:
            run = step_of(name, "common.sh")
            self.assertEqual(run.commands,
                             [["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-q"]])


class UnitsVerify(unittest.TestCase):
    """Every unit and drop-in the scripts write, through `systemd-analyze verify` (no manager
    needed). The programs the lab installs in the VM (meshd, meshctl) are not on this host: the
    copies run /bin/true instead, which verify finds executable."""

    def verify(self, units, extra=()):
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze not installed")
        with tempfile.TemporaryDirectory() as d:
            written = []
            for path, text in list(units.items()) + list(extra):
                text = text.replace("/usr/sbin/meshd", "/bin/true")
                text = text.replace("/usr/bin/meshctl", "/bin/true")
                # a drop-in sits in NAME.service.d/ beside its unit, as in /etc/systemd/system
                rel = os.path.join(*path.split("/")[-2:]) if ".service.d/" in path \
                    else os.path.basename(path)
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(text)
                if not rel.endswith(".conf"):
                    written.append(os.path.join(d, rel))
            res = subprocess.run([analyze, "verify", *written], capture_output=True, text=True,
                                 timeout=120)
            # verify exits 0 on unknown keys and bad values: any output is a failure here
            self.assertEqual((res.returncode, res.stdout + res.stderr), (0, ""), sorted(units))

    def units_of(self, run):
        return {p: t for p, (_, t) in run.files.items() if p.startswith("/etc/systemd/system/")}

    def test_units(self):
        runs = [step_of(nodes("endpoint")[0], "endpoint.sh"), step_of(ROUTER, "router.sh"),
                step_of(nodes("client")[0], "client.sh")]
        for run in runs:
            with self.subTest(script=run.script):
                self.verify(self.units_of(run))

    def test_meshd_drop_in(self):
        run = step_of(LBS[0], "lb.sh")
        with open(os.path.join(ROOT, "deploy/systemd/meshd.service")) as f:
            unit = f.read()
        self.verify(self.units_of(run), [("/etc/systemd/system/meshd.service", unit)])

    def test_etcd_drop_in(self):
        packaged = "/lib/systemd/system/etcd.service"
        if not os.path.exists(packaged):
            self.skipTest("etcd-server not installed: no etcd.service to put the drop-in on")
        with open(packaged) as f:
            unit = f.read()
        run = step_of(ETCD[0], "etcd.sh")
        self.verify(self.units_of(run), [("/etc/systemd/system/etcd.service", unit)])


class BadInput(unittest.TestCase):
    def assertRefused(self, script, args):
        res = dry_run(script, args, expect_ok=False)
        self.assertEqual(res.returncode, 2, f"{script} {args}: {res.stdout}{res.stderr}")
        self.assertEqual(res.stdout, "", "nothing done before the arguments are checked")

    def test_refused(self):
        self.assertRefused("etcd.sh", ["etcd9", ETCD_CLUSTER])
        self.assertRefused("etcd.sh", ["etcd1"])
        self.assertRefused("lb.sh", ["10.10.3.11", "http://10.10.4.31:2379"])
        self.assertRefused("lb.sh", ["--route", "10.10.1.0/24", "10.10.3.11", STORE_URL])
        self.assertRefused("lb.sh", ["--service", "web,10.10.0.100,80,sctp", "10.10.3.11",
                                     STORE_URL])
        self.assertRefused("router.sh", [SERVICE["vip"], "10.10.2.11"])
        self.assertRefused("router.sh", ["10.10.0", "10.10.2.11", "10.10.2.12"])
        self.assertRefused("endpoint.sh", ["web", "10.10.3.21", "8080", STORE_URL, "--ttl", "10"])
        self.assertRefused("endpoint.sh", ["web", "10.10.3.21", "80800", STORE_URL])
        self.assertRefused("client.sh", ["10.10.1.10", SERVICE["vip"]])
        self.assertRefused("common.sh", ["database"])


if __name__ == "__main__":
    unittest.main()
