#!/usr/bin/python3
"""bench_change_latency.py — control change -> datapath: how long an endpoint change takes from
the API call until the datapath holds it, and until meshd answers it.

Two figures per change, from the same requests:
  datapath   from sending the request until the service's entry in the pinned mp_services map
             flips to its new ring half (the last step of publishing a ring: from then on every
             new flow is balanced by the new ring). A second process watches the entry through
             the bpf() syscall, so this is seen from outside meshd, not meshd's own clock. The
             watcher spins on the last CPU; meshd and this client share the others (the client
             sleeps while meshd works), so the watcher sees a flip within microseconds instead
             of waiting for the scheduler to wake it (which put ms in the tail on 2 cores).
  API        the round trip: meshd answers once the state file holds the change too (written by
             its saver thread after the datapath has the change; userspace/meshd/state_saver.h).
For a batch the datapath figure is the flip of the last service the change rebuilds.

meshd runs in a lab (tools/lab, real veth links, the XDP program attached) with the default node
config (ring_size auto: each ring sized to its service, 1601 slots for these 10 endpoints) and 100
TCP services of 10 endpoints each (1,000 endpoints; health checks off so no probe competes).
Three sizes, each timed many times:
  1      PUT /v1/services/S/endpoints/A/P {"weight": w}: one endpoint's weight
  100    POST /v1/apply: the config with 100 endpoints' weights changed (10 services' rings)
  1000   POST /v1/apply: every endpoint's weight changed (100 rings)
Each row prints p50/p99 of the whole change and per endpoint changed, beside its peer measured in
the same run: nftables (libnftables in-process, python3-nftables) replacing as many elements of a
map keyed by endpoint in one transaction, the way kube-proxy's nftables mode updates a service.
nftables has no ring to rebuild, so the ratio shows what Maglev's consistency costs per change.

Run as root from the repository after a build (meshd, meshctl):
  bench/control/bench_change_latency.py [--reps 200]
  make -C build bench_change_latency
Not a test: it reports, it never fails on a figure.
"""
import argparse
import ctypes
import http.client
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

SERVICES = 100
ENDPOINTS_PER_SERVICE = 10


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(conn, method, path, body, content_type="application/json"):
    start = time.perf_counter()
    conn.request(method, path, body=body, headers={"Content-Type": content_type})
    res = conn.getresponse()
    data = res.read()
    elapsed = time.perf_counter() - start
    if res.status != 200:
        raise RuntimeError(f"{method} {path} -> {res.status}: {data[:300]!r}")
    return elapsed


def endpoint_address(s, e):
    # The endpoints' subnet of the lab; nothing is sent to them (no traffic, no health checks).
    n = s * ENDPOINTS_PER_SERVICE + e
    return f"10.100.{40 + n // 250}.{1 + n % 250}"


def service_vip(s):
    return f"10.200.0.{1 + s}"


def services_yaml(weights):
    lines = ["services:"]
    for s in range(SERVICES):
        lines += [f"  - name: s{s}", f"    vip: {service_vip(s)}", "    port: 80",
                  "    endpoints:"]
        for e in range(ENDPOINTS_PER_SERVICE):
            lines.append(f"      - {{address: {endpoint_address(s, e)}, port: 8080, "
                         f"weight: {weights[s][e]}}}")
    return "\n".join(lines) + "\n"


def quantiles(samples):
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return statistics.median(samples), p99


# bpf(2) from Python, enough to read one pinned map entry (x86_64 and arm64 syscall numbers).
WATCH_CPU = os.cpu_count() - 1
SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
BPF_MAP_LOOKUP_ELEM, BPF_OBJ_GET = 1, 7
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf_obj_get(path):
    name = ctypes.create_string_buffer(path.encode())
    attr = ctypes.create_string_buffer(struct.pack("=QIIi", ctypes.addressof(name), 0, 0, 0), 128)
    fd = _libc.syscall(SYS_BPF, BPF_OBJ_GET, attr, 128)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"bpf(BPF_OBJ_GET, {path})")
    return fd


def service_key(vip, port):
    """struct mp_svc_key (bpf/abi.h): addr[16], port (network order), proto, family."""
    addr = socket.inet_aton(vip) + bytes(12)
    return addr + struct.pack("!H", port) + bytes([socket.IPPROTO_TCP, 4])


def watch_flips(map_path, key, out_fd):
    """Child process: writes the CLOCK_MONOTONIC time of every change of the entry's active_half
    (struct mp_svc: id, ring_size, active_half, ...) to out_fd, until killed."""
    fd = bpf_obj_get(map_path)
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(16)
    attr = ctypes.create_string_buffer(
        struct.pack("=IIQQQ", fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0), 128)
    os.sched_setaffinity(0, {WATCH_CPU})
    last = None
    while True:
        if _libc.syscall(SYS_BPF, BPF_MAP_LOOKUP_ELEM, attr, 128) == 0:
            half = struct.unpack_from("=I", v.raw, 8)[0]
            if last is not None and half != last:
                os.write(out_fd, struct.pack("=d", time.perf_counter()))
            last = half


class FlipWatcher:
    """Watches one service's entry from a child process; flip_after(t0) is the delay from t0 to
    the next flip the child saw."""

    def __init__(self, map_path, vip, port):
        self.read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.read_fd)
            try:
                watch_flips(map_path, service_key(vip, port), write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        time.sleep(0.2)  # its first read done

    def flip_after(self, t0):
        data = os.read(self.read_fd, 8)
        if len(data) != 8:
            raise RuntimeError("the flip watcher stopped")
        return struct.unpack("=d", data)[0] - t0

    def close(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.read_fd)


def pin_away_from_watcher(pid):
    """meshd (every thread) and this process onto the CPUs the watcher does not spin on."""
    others = set(range(os.cpu_count())) - {WATCH_CPU}
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), others)
    os.sched_setaffinity(0, others)


def timed(conn, watcher, method, path, body, content_type="application/json"):
    """(datapath, API round trip) of one change that flips the watched service once."""
    t0 = time.perf_counter()
    api = call(conn, method, path, body, content_type)
    return watcher.flip_after(t0), api


def meshpath_rows(labmod, reps):
    lab = labmod.Lab(3)
    rows = {}
    try:
        lab.up()
        weights = [[1] * ENDPOINTS_PER_SERVICE for _ in range(SERVICES)]
        text = lab.lab("meshd-config").stdout + services_yaml(weights)
        config = os.path.join(lab.state_dir, "meshd.yaml")
        with open(config, "w") as f:
            f.write(text)
        lab.start_meshd(config)
        with open(os.path.join(lab.state_dir, "meshd.pid")) as f:
            pin_away_from_watcher(int(f.read()))
        conn = UnixHTTPConnection(lab.socket)
        services_map = os.path.join(lab.env["pin_root"], "mp_services")

        watcher = FlipWatcher(services_map, service_vip(0), 80)
        one = []
        for i in range(reps):
            w = 2 if i % 2 == 0 else 1
            one.append(timed(conn, watcher, "PUT",
                             f"/v1/services/s0/endpoints/{endpoint_address(0, 0)}/8080",
                             json.dumps({"weight": w})))
        watcher.close()
        rows[1] = one

        for n_changed, n_reps in ((100, max(10, reps // 10)), (1000, max(5, reps // 20))):
            # Services are rebuilt in config order: the last changed one flips last.
            watcher = FlipWatcher(services_map, service_vip((n_changed - 1) // ENDPOINTS_PER_SERVICE),
                                  80)
            samples = []
            for i in range(n_reps):
                bump = 3 if i % 2 == 0 else 1
                for k in range(n_changed):
                    weights[k // ENDPOINTS_PER_SERVICE][k % ENDPOINTS_PER_SERVICE] = bump
                samples.append(timed(conn, watcher, "POST", "/v1/apply", services_yaml(weights),
                                     "application/yaml"))
            watcher.close()
            rows[n_changed] = samples
            for k in range(n_changed):  # back to the start for the next size
                weights[k // ENDPOINTS_PER_SERVICE][k % ENDPOINTS_PER_SERVICE] = 1
            call(conn, "POST", "/v1/apply", services_yaml(weights), "application/yaml")
        conn.close()
    finally:
        lab.down()
    return rows


def nft_rows(reps):
    import nftables  # python3-nftables (Debian), libnftables in-process: no nft process per change
    ns = f"mpbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # libnftables talks netlink in the namespace the calling thread is in: enter it (libc's
        # setns: Debian 12's Python 3.11 has no os.setns).
        libc = ctypes.CDLL(None, use_errno=True)
        clone_newnet = 0x40000000

        def setns(fd):
            if libc.setns(fd, clone_newnet) != 0:
                raise OSError(ctypes.get_errno(), "setns")

        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns(fd)
        try:
            nft = nftables.Nftables()
            nft.set_handle_output(False)

            def cmd(text):
                start = time.perf_counter()
                rc, _, err = nft.cmd(text)
                elapsed = time.perf_counter() - start
                if rc != 0:
                    raise RuntimeError(f"nft: {err}")
                return elapsed

            elems = ", ".join(f"{endpoint_address(s, e)} . 8080 : 1"
                              for s in range(SERVICES) for e in range(ENDPOINTS_PER_SERVICE))
            cmd("add table ip bench; add map ip bench eps { type ipv4_addr . inet_service : mark; }; "
                f"add element ip bench eps {{ {elems} }}")
            rows = {}
            for n_changed, n_reps in ((1, reps), (100, max(10, reps // 10)),
                                      (1000, max(5, reps // 20))):
                samples = []
                for i in range(n_reps):
                    w = 2 if i % 2 == 0 else 1
                    keys = [f"{endpoint_address(k // ENDPOINTS_PER_SERVICE, k % ENDPOINTS_PER_SERVICE)}"
                            " . 8080" for k in range(n_changed)]
                    text = (f"delete element ip bench eps {{ {', '.join(keys)} }}; "
                            f"add element ip bench eps {{ {', '.join(k + f' : {w}' for k in keys)} }}")
                    samples.append(cmd(text))
                rows[n_changed] = samples
        finally:
            setns(own)
            os.close(fd)
            os.close(own)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=200, help="single changes timed (default 200)")
    ap.add_argument("--out", help="directory for results.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_change_latency: needs root (network namespaces, XDP)")
    import lab as labmod

    mp = meshpath_rows(labmod, args.reps)
    nf = nft_rows(args.reps)
    print(f"\ncontrol change -> datapath: {SERVICES} services x {ENDPOINTS_PER_SERVICE} endpoints "
          "(default node config: ring_size auto, 1601 slots each); datapath = request sent -> the "
          "service's entry flips to its new ring (seen from another process); API = round trip, "
          "answered once the state file has it too; nftables = one libnftables transaction")
    print(f"{'changes':>8}{'reps':>6}{'datapath p50':>14}{'p99':>9}{'p99/change':>12}"
          f"{'API p50':>10}{'p99':>9}{'nft p50':>10}{'nft p99':>9}{'datapath/nft p99':>18}")
    results = []
    for n in (1, 100, 1000):
        d50, d99 = quantiles([d for d, _ in mp[n]])
        a50, a99 = quantiles([a for _, a in mp[n]])
        n50, n99 = quantiles(nf[n])
        print(f"{n:>8}{len(mp[n]):>6}{d50 * 1e3:>12.2f}ms{d99 * 1e3:>7.2f}ms"
              f"{d99 * 1e3 / n:>10.3f}ms{a50 * 1e3:>8.2f}ms{a99 * 1e3:>7.2f}ms"
              f"{n50 * 1e3:>8.2f}ms{n99 * 1e3:>7.2f}ms{d99 / n99:>17.2f}x")
        results.append({"changes": n, "reps": len(mp[n]),
                        "datapath_p50_ms": d50 * 1e3, "datapath_p99_ms": d99 * 1e3,
                        "datapath_p99_per_change_ms": d99 * 1e3 / n,
                        "api_p50_ms": a50 * 1e3, "api_p99_ms": a99 * 1e3,
                        "nft_p50_ms": n50 * 1e3, "nft_p99_ms": n99 * 1e3,
                        "datapath_p99_ratio": d99 / n99})
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
