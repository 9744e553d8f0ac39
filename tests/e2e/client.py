#!/usr/bin/python3
"""client.py — HTTP traffic for the e2e tests, run inside the lab's client namespace.

  burst   --host H --port P --count N [--concurrency C] [--timeout S]
          N GET requests, each on a new TCP connection; prints one JSON line:
          {"ok": n, "failed": n, "errors": [first few], "by_endpoint": {"ep1": n, ...}, "elapsed": s,
           and steady's keys below}
  steady  --host H --port P --duration S [--concurrency C] [--timeout S]
          new connections back to back for S seconds (the load a failover is measured under);
          prints one JSON line: {"ok", "failed", "errors", "by_endpoint",
          "failures": [[wall time, error], ...], "last_by_endpoint": {"ep1": wall time, ...},
          "start", "end"}. Wall times (time.time()) so the caller can set them beside its own.
  udp     --host H --port P --count N [--timeout S] [--source-port SP]
          N datagrams, each from a new socket (a new flow; all one flow with --source-port), each
          waiting for its answer; prints
          {"ok", "failed", "errors", "by_endpoint", "failures": [[wall time, error], ...]}
  once    --host H --port P --source-port SP [--timeout S]
          one GET from a fixed source port, then a RST close (SO_LINGER 0: no TIME_WAIT, so the
          same 5-tuple can come again at once); prints {"ok", "endpoint" | "error"}
  session --host H --port P [--timeout S]
          one keep-alive connection driven from stdin, one JSON line answered per command:
            get            -> {"ok": true, "endpoint": "ep2", "local_port": 40123,
                               "peer": "10.100.2.1:1234" (whom the endpoint saw)}
            loop SECONDS   -> requests back to back for SECONDS:
                              {"ok": n, "failed": n, "errors": [...], "endpoints": [...], "local_ports": [...]}
            stream N SECS  -> one slow response of N lines, one every SECS:
                              {"ok": true, "endpoint": "ep1", "lines": N, "local_port": p}
            quit
          The connection is never reopened: once it breaks, every later request fails.

Each connection is closed by the client after its answer, so TIME_WAIT stays on the client side
and endpoints can take the same SNAT port again at once.

--curl (burst, steady): each request is a curl process of its own (a new connection, curl's
own TCP stack settings and timeouts) instead of Python's http.client.
"""
import argparse
import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time


def one_request(conn, seen=None):
    """One GET; the endpoint's name. seen (a dict) gets "peer": the X-Client header, the address
    the endpoint saw the request come from."""
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read().decode().strip()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {body[:80]}")
    if seen is not None:
        seen["peer"] = resp.getheader("X-Client")
    return resp.getheader("X-Endpoint") or body


class Tally:
    """What a run of requests saw, from any number of threads: answers by endpoint (and when the
    last one to each was sent), failures with the wall time (time.time()) their request left."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "failed": 0}
        self.by_endpoint, self.last_by_endpoint = {}, {}
        self.errors, self.failures = [], []
        self.start = time.time()

    def ok(self, name, sent):
        with self.lock:
            self.counts["ok"] += 1
            self.by_endpoint[name] = self.by_endpoint.get(name, 0) + 1
            self.last_by_endpoint[name] = sent

    def failed(self, sent, e):
        with self.lock:
            self.counts["failed"] += 1
            self.failures.append([sent, f"{type(e).__name__}: {e}"])
            if len(self.errors) < 5:
                self.errors.append(f"{type(e).__name__}: {e}")

    def print(self):
        end = time.time()
        print(json.dumps({**self.counts, "errors": self.errors, "by_endpoint": self.by_endpoint,
                          "failures": self.failures, "last_by_endpoint": self.last_by_endpoint,
                          "start": self.start, "end": end,
                          "elapsed": round(end - self.start, 3)}), flush=True)


def curl_request(args):
    """One GET by a curl process; the endpoint's name (its X-Endpoint header)."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    res = subprocess.run(
        ["curl", "-sS", "-g", "-o", "/dev/null", "-D", "-", "--connect-timeout",
         str(args.timeout), "--max-time", str(2 * args.timeout), f"http://{host}:{args.port}/"],
        capture_output=True, text=True, timeout=4 * args.timeout + 5)
    if res.returncode != 0:
        raise RuntimeError(f"curl exit {res.returncode}: {res.stderr.strip()[:120]}")
    status = res.stdout.split(" ", 2)[1] if res.stdout else "?"
    name = "?"
    for line in res.stdout.splitlines():
        if line.lower().startswith("x-endpoint:"):
            name = line.split(":", 1)[1].strip()
    if status != "200":
        raise RuntimeError(f"HTTP {status}")
    return name


def drive(args, more):
    """args.concurrency workers, each sending one GET per new connection while more() says so."""
    tally = Tally()

    def worker():
        while more():
            sent = time.time()
            if args.curl:
                try:
                    tally.ok(curl_request(args), sent)
                except Exception as e:  # noqa: BLE001 — every failure is counted and reported
                    tally.failed(sent, e)
                continue
            conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
            try:
                tally.ok(one_request(conn), sent)
            except Exception as e:  # noqa: BLE001 — every failure is counted and reported
                tally.failed(sent, e)
            finally:
                conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.print()
    return 0


def burst(args):
    lock = threading.Lock()
    left = iter(range(args.count))

    def more():
        with lock:
            return next(left, None) is not None

    return drive(args, more)


def steady(args):
    deadline = time.monotonic() + args.duration
    return drive(args, lambda: time.monotonic() < deadline)


def udp(args):
    tally = Tally()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    for _ in range(args.count):
        sent = time.time()
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(args.timeout)
            try:
                if args.source_port:  # one flow for every datagram, as a resolver or syslog
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("", args.source_port))
                s.connect((args.host, args.port))
                s.send(b"ping")
                tally.ok(s.recv(2048).decode(), sent)
            except OSError as e:
                tally.failed(sent, e)
    tally.print()
    return 0


def once(args):
    conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout,
                                      source_address=("", args.source_port))
    try:
        conn.connect()
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        out = {"ok": True, "endpoint": one_request(conn)}
    except Exception as e:  # noqa: BLE001
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()
    print(json.dumps(out), flush=True)
    return 0


def session(args):
    conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
    try:
        conn.connect()
    except OSError as e:
        print(json.dumps({"ok": False, "error": f"connect: {e}"}), flush=True)
    conn.auto_open = 0  # a broken connection must show, not be silently replaced

    seen = {}

    def get():
        port = conn.sock.getsockname()[1] if conn.sock else None
        return one_request(conn, seen), port

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "get":
            try:
                name, port = get()
                print(json.dumps({"ok": True, "endpoint": name, "local_port": port,
                                  "peer": seen.get("peer")}), flush=True)
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        elif cmd[0] == "stream":
            try:
                port = conn.sock.getsockname()[1] if conn.sock else None
                conn.request("GET", f"/stream?chunks={int(cmd[1])}&interval={float(cmd[2])}")
                resp = conn.getresponse()
                lines = resp.read().decode().splitlines()
                print(json.dumps({"ok": resp.status == 200 and len(lines) == int(cmd[1]),
                                  "endpoint": resp.getheader("X-Endpoint"), "lines": len(lines),
                                  "local_port": port}), flush=True)
            except Exception as e:  # noqa: BLE001
                print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        elif cmd[0] == "loop":
            deadline = time.monotonic() + float(cmd[1])
            ok, failed, errors, endpoints, ports = 0, 0, [], set(), set()
            while time.monotonic() < deadline:
                try:
                    name, port = get()
                    ok += 1
                    endpoints.add(name)
                    ports.add(port)
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    if len(errors) < 5:
                        errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.1)
                time.sleep(0.01)
            print(json.dumps({"ok": ok, "failed": failed, "errors": errors,
                              "endpoints": sorted(endpoints), "local_ports": sorted(ports)}),
                  flush=True)
        else:
            print(json.dumps({"ok": False, "error": f"unknown command {cmd[0]}"}), flush=True)
    conn.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["burst", "steady", "udp", "once", "session"])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--source-port", type=int, default=0)
    ap.add_argument("--curl", action="store_true", help="burst, steady: a curl process a request")
    args = ap.parse_args()
    modes = {"burst": burst, "steady": steady, "udp": udp, "once": once, "session": session}
    return modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
