"""The program replaced under steady real traffic, 20 times each way, the default config:
- `meshctl upgrade` (bpf_link_update in place while meshd runs, every map kept);
- `kill -9` of meshd and a start (the pinned link keeps the old program attached while no daemon
  runs; the new meshd adopts the pinned maps and switches the link).

The traffic throughout, each checked afterwards:
- one long-lived TCP connection through the VIP to an echo server, data flowing both ways
  (the client checks every byte echoed back and counts them: all sent came back, in order);
- new HTTP connections at a fixed rate (RATE_CPS), each must be answered, none slow enough to
  have needed a SYN retransmission;
- a pktgen UDP stream (stamped frames) to a pktgen sink on the UDP service's endpoint: every
  frame sent must arrive;
- the kernel's TCP counters in the client's and endpoints' namespaces: no connection reset, no
  retransmission but of segments the receiver already had (D-SACK), no timeout.
And each cycle: the program id changes (the pinned link runs the new one), the pinned maps
(mp_conns, mp_services, ...) keep their ids.

Run as a script, this file is also the helpers it starts inside the lab's namespaces
(echo-server, stream-client, paced-client).
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"

ECHO_PORT = 9000  # the echo server's port on the endpoint, and the VIP's
UDP_VIP_PORT = 53
UDP_EP_PORT = 9053
RATE_CPS = 50  # new connections a second
UDP_PPS = 2000
CYCLES = 20
MAPS = ("mp_conns", "mp_half", "mp_rnat", "mp_services", "mp_endpoints", "mp_rings", "mp_node")


# ---- the helpers run in the lab's namespaces ----------------------------------------------------

def pattern_byte_block():
    """The bytes the stream carries: a fixed 64 KiB block, repeated; byte n is block[n % 65536]."""
    return bytes((i * 131 + (i >> 8) * 7 + 11) & 0xFF for i in range(65536))


def echo_server(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    print("listening", flush=True)

    def serve(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def stream_client(host, port, chunk, interval):
    """Sends `chunk` bytes every `interval` s until a line on stdin, then half-closes and reads
    the echo to its end; prints what it saw as one JSON line."""
    block = pattern_byte_block()
    out = {"sent": 0, "received": 0, "errors": [], "mismatch_at": None, "max_stall_ms": 0.0}
    stop = threading.Event()
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    print(json.dumps({"connected": True, "local_port": s.getsockname()[1]}), flush=True)

    def send():
        offset = 0
        try:
            while not stop.is_set():
                start = offset % len(block)
                data = (block[start:] + block)[:chunk]
                s.sendall(data)
                offset += len(data)
                out["sent"] = offset
                time.sleep(interval)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            out["errors"].append(f"send: {type(e).__name__}: {e}")

    def receive():
        offset = 0
        last = time.monotonic()
        try:
            while True:
                data = s.recv(65536)
                now = time.monotonic()
                if not data:
                    break
                if not stop.is_set():
                    out["max_stall_ms"] = max(out["max_stall_ms"], (now - last) * 1000)
                last = now
                if out["mismatch_at"] is None:
                    start = offset % len(block)
                    want = (block[start:] + block * (1 + len(data) // len(block)))[:len(data)]
                    if data != want:
                        out["mismatch_at"] = offset
                offset += len(data)
                out["received"] = offset
        except OSError as e:
            out["errors"].append(f"receive: {type(e).__name__}: {e}")

    sender = threading.Thread(target=send)
    receiver = threading.Thread(target=receive)
    sender.start()
    receiver.start()
    sys.stdin.readline()
    stop.set()
    sender.join()
    receiver.join()
    s.close()
    print(json.dumps(out), flush=True)


def paced_client(host, port, rate, timeout):
    """A new connection and one GET every 1/rate s (each in its own thread, so a slow one does
    not hold the pace) until a line on stdin; prints counts and latencies as one JSON line."""
    import http.client

    lock = threading.Lock()
    out = {"ok": 0, "failed": 0, "errors": [], "latencies_ms": []}
    stop = threading.Event()
    threads = []

    def one():
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            with lock:
                out["ok"] += 1
                out["latencies_ms"].append(round((time.monotonic() - t0) * 1000, 2))
        except Exception as e:  # noqa: BLE001 — every failure is counted and reported
            with lock:
                out["failed"] += 1
                if len(out["errors"]) < 10:
                    out["errors"].append(f"{time.time():.3f} {type(e).__name__}: {e}")
        finally:
            conn.close()

    def pace():
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = threading.Thread(target=one)
            t.start()
            threads.append(t)
            n += 1

    pacer = threading.Thread(target=pace)
    pacer.start()
    print(json.dumps({"started": True}), flush=True)
    sys.stdin.readline()
    stop.set()
    pacer.join()
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)


# ---- the tests ----------------------------------------------------------------------------------

if __name__ != "__main__":
    import lab as labmod
    from e2e_base import LabTestCase, UnixHTTPConnection
else:  # a helper in a namespace: nothing of the test harness needed
    LabTestCase = unittest.TestCase
    labmod = None


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


class ReplaceUnderTraffic(LabTestCase):
    """Both ways of replacing the program, each with its own lab (setUp)."""

    FAMILY = 4

    # --- the lab's pins, read with bpftool (the kernel's view, not meshd's) ---

    def pinned_id(self, kind, name):
        res = subprocess.run(["bpftool", "-j", kind, "show", "pinned",
                              os.path.join(self.lab.env["pin_root"], name)],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(res.returncode, 0, f"bpftool {kind} show pinned {name}: {res.stderr}")
        return json.loads(res.stdout)

    def map_ids(self):
        return {m: self.pinned_id("map", m)["id"] for m in MAPS}

    def link_programs(self):
        """{interface: id of the program its pinned link runs}"""
        return {i: self.pinned_id("link", f"link_{i}")["prog_id"]
                for i in self.lab.env["lb"]["interfaces"]}

    def tcp_counters(self):
        """TCP counters summed over the client's and the endpoints' namespaces (each namespace
        has its own /proc/net/snmp and netstat): a lost segment shows as a retransmission (a
        timeout, a fast retransmit, or a loss probe that recovered it), a reset connection as
        EstabResets."""
        total = {k: 0 for k in ("RetransSegs", "EstabResets", "TCPTimeouts", "TCPSynRetrans",
                                "TCPLossProbes", "TCPLossProbeRecovery", "TCPFastRetrans",
                                "TCPSlowStartRetrans", "TCPLostRetransmit",
                                "TCPSpuriousRtxHostQueues", "TCPDSACKRecv", "TCPDSACKOldSent",
                                "TCPSACKReorder", "TCPTSReorder", "TCPFullUndo", "TCPPartialUndo",
                                "TCPDSACKUndo")}
        for ns in [self.lab.ns_client] + [self.lab.ep_ns(i) for i in range(1, self.ENDPOINTS + 1)]:
            text = labmod.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp",
                               "/proc/net/netstat"]).stdout.splitlines()
            for head, values in zip(text[::2], text[1::2]):
                for k, v in zip(head.split()[1:], values.split()[1:]):
                    # Resets as the client sees them (sent or received on its connections): an
                    # endpoint also counts the resets of meshd's health probes, if any.
                    if k == "EstabResets" and ns != self.lab.ns_client:
                        continue
                    if k in total and head.split()[0] in ("Tcp:", "TcpExt:"):
                        total[k] += int(v)
        return total

    # --- traffic ---

    def helper(self, ns, *args):
        p = subprocess.Popen(["ip", "netns", "exec", ns, PYTHON, "-B", os.path.abspath(__file__),
                              *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lab.background.append((args[0], p))
        self.addCleanup(lambda: p.stdin.closed or p.stdin.close())  # lab.down() closes the rest
        return p

    @staticmethod
    def finish(p, timeout=60):
        p.stdin.write("stop\n")
        p.stdin.flush()
        line = p.stdout.readline()
        p.wait(timeout=timeout)
        p.stdin.close()
        p.stdout.close()
        if not line:
            raise RuntimeError("helper ended without a summary")
        return json.loads(line)

    def start_traffic(self):
        self.lab.udp_blackhole(2, UDP_EP_PORT)  # no port unreachable from ep2 for the stream
        server = self.helper(self.lab.ep_ns(1), "echo-server", str(ECHO_PORT))
        self.assertEqual(server.stdout.readline().strip(), "listening")
        self.start([self.service("web", 80, {1: 1, 2: 1, 3: 1}),
                    {"name": "echo", "vip": self.vip, "port": ECHO_PORT,
                     "endpoints": [(self.lab.ep_address(1, 4), ECHO_PORT, 1)]},
                    {"name": "udp", "vip": self.vip, "port": UDP_VIP_PORT, "protocol": "udp",
                     "endpoints": [(self.lab.ep_address(2, 4), UDP_EP_PORT, 1)]}])
        self.burst_ok(80, 30)  # neighbours resolved, servers warm
        counters = self.tcp_counters()

        stream = self.helper(self.lab.ns_client, "stream-client", self.vip, str(ECHO_PORT),
                             "4096", "0.005")  # ~800 KB/s each way
        hello = json.loads(stream.stdout.readline())
        self.assertTrue(hello.get("connected"), hello)
        paced = self.helper(self.lab.ns_client, "paced-client", self.vip, "80", str(RATE_CPS),
                            "5")
        self.assertTrue(json.loads(paced.stdout.readline()).get("started"))

        self.assertTrue(os.access(labmod.PKTGEN, os.X_OK), f"pktgen not at {labmod.PKTGEN}")
        sink = self.lab.start_sink(2, latency=True)
        env = self.lab.env
        pktgen = subprocess.Popen(
            [labmod.PKTGEN, "send", env["client"]["iface"], "--netns", self.lab.ns_client,
             "--dst-mac", env["lb"]["client_mac"], "--dst-ip", self.vip,
             "--dst-port", str(UDP_VIP_PORT), "--proto", "udp",
             "--src-ip", "10.100.64.1-10.100.64.4", "--src-port", "10000-10003", "--flows", "16",
             "--count", "1000000000", "--rate", str(UDP_PPS), "--stamp", "--json", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lab.background.append(("pktgen send", pktgen))
        time.sleep(1)
        return {"stream": stream, "paced": paced, "sink": sink, "pktgen": pktgen,
                "started": time.monotonic(), "counters": counters}

    def stop_traffic(self, t):
        """Stops everything and checks what it saw; returns a line of figures."""
        t["pktgen"].send_signal(2)  # SIGINT: pktgen stops and prints its summary
        out, err = t["pktgen"].communicate(timeout=30)
        self.assertEqual(t["pktgen"].returncode, 0, err)
        sent = json.loads(out)
        time.sleep(1)  # the last frames on their way
        rx = self.lab.stop_sink(t["sink"])
        streamed = self.finish(t["stream"])
        paced = self.finish(t["paced"])
        elapsed = time.monotonic() - t["started"]
        tcp = {k: v - t["counters"][k] for k, v in self.tcp_counters().items()}

        delivered = rx.get("latency", {}).get("samples", 0)
        lat = paced["latencies_ms"]
        figures = (f"over {elapsed:.1f} s: stream {streamed['sent']} B sent, "
                   f"{streamed['received']} B echoed, longest stall "
                   f"{streamed['max_stall_ms']:.0f} ms; {paced['ok']} new connections answered, "
                   f"{paced['failed']} failed, latency p50 {percentile(lat, 50):.1f} ms, max "
                   f"{max(lat or [0]):.1f} ms; UDP {sent['sent']} frames sent, {delivered} "
                   f"received; TCP in the client and endpoints: {tcp['RetransSegs']} segments "
                   f"retransmitted, {tcp['EstabResets']} client connections reset "
                   f"({', '.join(f'{k} {v}' for k, v in tcp.items() if v) or 'all counters 0'})")
        print("\n  " + figures)
        context = f"{figures}\ndatapath exceptions: {self.nonzero_exceptions()}\n" \
                  f"{self.lab.meshd_log(20)}"
        self.assertEqual(streamed["errors"], [], context)
        self.assertIsNone(streamed["mismatch_at"], context)
        self.assertGreater(streamed["sent"], 0, context)
        self.assertEqual(streamed["received"], streamed["sent"], context)
        self.assertEqual(paced["failed"], 0, f"{paced['errors']}\n{context}")
        self.assertEqual(tcp["EstabResets"], 0, f"connections reset\n{context}")
        # No segment lost either. A retransmission is allowed only when the receiver then said
        # it had the original already (a D-SACK): a tail loss probe sent because an ACK was late
        # (as often without any upgrade on this loaded lab), or a fast retransmit after mere
        # reordering. No SYN may be retransmitted, no timeout fire. (TCPLossProbeRecovery is not
        # asked: the kernel counts it when an ACK passes the probe before the probe's D-SACK
        # arrives, i.e. also for an original that was late, not lost; a run here saw 2 with
        # every one of 36 retransmissions D-SACKed.)
        # A D-SACK counts on whichever side saw it: the receiver's (TCPDSACKOldSent: it had the
        # segment already) or the sender's (TCPDSACKRecv); an ACK carrying one may be folded
        # into the next and the sender never counts it (a run here: 63 retransmitted, 63
        # D-SACKs sent, 62 received).
        dsacked = max(tcp["TCPDSACKRecv"], tcp["TCPDSACKOldSent"])
        self.assertEqual((max(0, tcp["RetransSegs"] - dsacked),
                          tcp["TCPSynRetrans"], tcp["TCPTimeouts"]),
                         (0, 0, 0), f"TCP segments lost\n{context}")
        self.assertGreater(paced["ok"], RATE_CPS * elapsed * 0.8, context)
        # A lost SYN or SYN-ACK costs a 1 s retransmission: none may have been needed.
        self.assertLess(max(lat or [0]), 1000.0, context)
        self.assertGreater(sent["sent"], UDP_PPS * elapsed * 0.5, context)
        self.assertEqual(delivered, sent["sent"], f"UDP frames lost\n{context}")

    # --- the tests ---

    def test_upgrade_20_times_under_traffic(self):
        t = self.start_traffic()
        maps = self.map_ids()
        progs = self.link_programs()
        self.assertEqual(len(set(progs.values())), 1, progs)
        prog = next(iter(progs.values()))
        totals, switches, walls = [], [], []
        for i in range(CYCLES):
            t0 = time.monotonic()
            res = self.lab.meshctl("-o", "json", "upgrade", check=False)
            walls.append((time.monotonic() - t0) * 1000)
            self.assertEqual(res.returncode, 0, f"upgrade {i + 1}: {res.stdout}{res.stderr}\n"
                             f"{self.lab.meshd_log()}")
            report = json.loads(res.stdout)
            self.assertTrue(report["complete"], report)
            self.assertEqual(report["from"]["id"], prog, report)
            self.assertNotEqual(report["to"]["id"], prog, report)
            self.assertEqual(report["migrations"], [], "no layout changed, nothing migrated")
            self.assertTrue(all(x["switched"] for x in report["interfaces"]), report)
            prog = report["to"]["id"]
            self.assertEqual(self.link_programs(), {i: prog for i in progs},
                             "the pinned links run the new program")
            self.assertEqual(self.map_ids(), maps, "the pinned maps are the same maps")
            totals.append(report["total_ms"])
            switches.append(report["switch_ms"])
            time.sleep(0.3)
        print(f"\n  {CYCLES} upgrades: total p50 {statistics.median(totals):.1f} ms, max "
              f"{max(totals):.1f} ms (meshctl round trip p50 {statistics.median(walls):.1f} ms, "
              f"max {max(walls):.1f} ms); link switch p50 {statistics.median(switches):.3f} ms, "
              f"max {max(switches):.3f} ms")
        self.stop_traffic(t)

    def test_kill_9_and_restart_20_times_under_traffic(self):
        t = self.start_traffic()
        config = os.path.join(self.lab.state_dir, "meshd.yaml")
        maps = self.map_ids()
        progs = self.link_programs()
        prog = next(iter(progs.values()))
        starts, gaps = [], []
        for i in range(CYCLES):
            self.lab.kill_meshd()
            killed = time.monotonic()
            # No daemon: the pinned links keep the program attached.
            self.assertEqual(self.link_programs(), {i: prog for i in progs},
                             "the program stays attached while no meshd runs")
            time.sleep(0.2)
            t0 = time.monotonic()
            self.lab.start_meshd(config)
            starts.append((time.monotonic() - t0) * 1000)
            gaps.append((time.monotonic() - killed) * 1000)
            now = self.link_programs()
            self.assertEqual(len(set(now.values())), 1, now)
            new = next(iter(now.values()))
            self.assertNotEqual(new, prog, f"restart {i + 1}: the link still runs the old program")
            prog = new
            self.assertEqual(self.map_ids(), maps, "the pinned maps are the same maps")
            status = self.lab.meshctl_json("status")
            self.assertTrue(status.get("adopted"), status)
            time.sleep(0.3)
        print(f"\n  {CYCLES} kill -9 + start: start until the API answers p50 "
              f"{statistics.median(starts):.0f} ms, max {max(starts):.0f} ms (kill to answering "
              f"p50 {statistics.median(gaps):.0f} ms, max {max(gaps):.0f} ms)")
        self.stop_traffic(t)


class UpgradeKeepsTheLoop(LabTestCase):
    """While `meshctl upgrade` loads and verifies the new program (seconds), meshd's event loop
    goes on: the API answers at once, and a second upgrade meanwhile is refused (409), not
    queued. The default config, one service."""

    def status_ms(self):
        t0 = time.monotonic()
        c = UnixHTTPConnection(self.lab.socket)
        c.request("GET", "/v1/status")
        res = c.getresponse()
        res.read()
        c.close()
        self.assertEqual(res.status, 200)
        return (time.monotonic() - t0) * 1000

    def test_the_api_answers_while_an_upgrade_loads(self):
        self.start([self.service("web", 80, {1: 1, 2: 1})])
        for i in range(3):
            argv = [labmod.MESHCTL, "--socket", self.lab.socket, "-o", "json", "upgrade"]
            upgrade = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            answered, second = [], None
            while upgrade.poll() is None:
                answered.append(self.status_ms())
                if second is None and len(answered) == 3:
                    second = self.lab.meshctl("-o", "json", "upgrade", check=False)
                time.sleep(0.01)
            out, err = upgrade.communicate()
            self.assertEqual(upgrade.returncode, 0, f"upgrade {i + 1}: {out}{err}")
            report = json.loads(out)
            self.assertTrue(report["complete"], report)
            # The load took long enough to have held a blocking loop for all of it...
            self.assertGreater(report["load_ms"], 100, report)
            # ...and yet every status request meanwhile was answered at once.
            self.assertGreaterEqual(len(answered), 3, f"{len(answered)} status requests during "
                                    f"a {report['total_ms']:.0f} ms upgrade")
            self.assertLess(max(answered), 250, f"status took {max(answered):.0f} ms during "
                            f"an upgrade whose load took {report['load_ms']:.0f} ms")
            if second is not None:
                self.assertNotEqual(second.returncode, 0, second.stdout)
                self.assertIn("another upgrade", second.stdout + second.stderr)
            print(f"\n  upgrade {i + 1}: load {report['load_ms']:.0f} ms; {len(answered)} status "
                  f"requests meanwhile, slowest {max(answered):.1f} ms")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "echo-server":
        echo_server(int(args[0]))
    elif mode == "stream-client":
        stream_client(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == "paced-client":
        paced_client(args[0], int(args[1]), float(args[2]), float(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
