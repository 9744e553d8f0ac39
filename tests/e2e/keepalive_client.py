#!/usr/bin/python3
"""keepalive_client.py — tens of thousands of keep-alive HTTP connections held open at once
through one VIP, for the scale tests; run inside the lab's client namespace. An asyncio loop per
process, no thread per connection. A process holds at most PER_PROCESS connections (and fewer if
its RLIMIT_NOFILE, raised to the hard limit, is lower: without CAP_SYS_RESOURCE, as in some
containers, that is where it stops), so larger counts are shared out among worker processes
(connection i to worker i % P), which also puts both CPUs of a small machine to work.

  keepalive_client.py --host H --port P --count N [--sources A,B,...] [--first-port P]
                      [--concurrency C] [--timeout S] [--give-up F] [--processes P]

Connection i leaves from source address sources[i % len(sources)] and port
first_port + i // len(sources), bound explicitly: the kernel's own choice, once most of a source
address's even ports to one destination are taken, scans them all on every connect (milliseconds
each at 40,000), and explicit ports make a run repeatable. Driven from stdin, one JSON line
answered per command:

  open   opens the N connections, at most C handshakes (+ first request) in flight; each sends
         GET / as soon as it is up and stays open.
         -> {"phase": "open", "attempted", "ok", "failed", "errors": [first few], "by_endpoint",
             "open_now", "elapsed", "rate" (connections answered per second), "gave_up"}
         After F failures (--give-up) no further connection is attempted: a datapath that drops
         thousands fails the test in seconds, not after thousands of timeouts.
  round  one more GET / on every connection still open (at most C in flight).
         -> {"phase": "round", "attempted", "ok", "failed", "errors", "by_endpoint",
             "moved" (answered by another endpoint than at open), "open_now", "elapsed", "rate"}
  quit   (or end of input) closes every connection and exits.
With workers, each command goes to all of them and the answer sums theirs (elapsed: the slowest).

A connection that breaks stays broken: it is never reopened, so a later round counts it failed.
Errors name the connection (index and local address:port) and what went wrong.
"""
import argparse
import asyncio
import json
import resource
import math
import socket
import subprocess
import sys
import time

REQUEST_TEMPLATE = "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshpath-keepalive\r\n\r\n"
MAX_ERRORS = 5
PER_PROCESS = 15000  # connections one worker holds at most
FD_RESERVE = 200  # descriptors a worker keeps for everything but its connections


def raise_nofile():
    """RLIMIT_NOFILE as high as this process may set it; returns the soft limit it got."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = int(f.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def processes_for(count, nofile):
    per = max(1, min(PER_PROCESS, nofile - FD_RESERVE))
    return max(1, math.ceil(count / per))


def parse_response(buf):
    """(bytes consumed, status, endpoint) for one complete response at the start of buf, or
    None while it is incomplete. The endpoint is X-Endpoint, else the body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, endpoint = 0, None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "x-endpoint":
            endpoint = value.strip()
    if len(buf) < end + 4 + length:
        return None
    body = bytes(buf[end + 4:end + 4 + length])
    return end + 4 + length, status, endpoint or body.decode().strip()


class Connection(asyncio.Protocol):
    def __init__(self, index, request):
        self.index = index
        self.request = request
        self.transport = None
        self.buf = bytearray()
        self.waiter = None
        self.broken = None  # the exception that ended it
        self.endpoint = None  # who answered the first request
        self.local = "?"

    def connection_made(self, transport):
        self.transport = transport
        self.local = "%s:%d" % transport.get_extra_info("sockname")[:2]

    def data_received(self, data):
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                r = parse_response(self.buf)
            except (ValueError, IndexError) as e:
                self.waiter.set_exception(ValueError(f"bad response {bytes(self.buf[:60])!r}: {e}"))
                return
            if r is not None:
                consumed, status, endpoint = r
                del self.buf[:consumed]
                self.waiter.set_result((status, endpoint))

    def connection_lost(self, exc):
        self.broken = exc or ConnectionError("closed by the peer")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.broken)

    async def get(self, timeout):
        if self.broken is not None:
            raise ConnectionError(f"already broken ({self.broken!r})")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        async with asyncio.timeout(timeout):
            status, endpoint = await self.waiter
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return endpoint


class Tally:
    def __init__(self, phase):
        self.phase = phase
        self.start = time.monotonic()
        self.attempted = self.ok = self.failed = self.moved = 0
        self.by_endpoint = {}
        self.errors = []

    def answered(self, endpoint):
        self.ok += 1
        self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1

    def failure(self, what, e):
        self.failed += 1
        if isinstance(e, OSError) and e.errno == 24:  # EMFILE: this client's limit, not the LB's
            what += " [client out of descriptors]"
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{what}: {type(e).__name__}: {str(e) or 'no answer in time'}")

    def summary(self, open_now, **more):
        elapsed = time.monotonic() - self.start
        return {"phase": self.phase, "attempted": self.attempted, "ok": self.ok,
                "failed": self.failed, "errors": self.errors, "by_endpoint": self.by_endpoint,
                "moved": self.moved, "open_now": open_now, "elapsed": round(elapsed, 3),
                "rate": round(self.ok / elapsed, 1) if elapsed > 0 else None, **more}


class Crowd:
    def __init__(self, args):
        self.args = args
        self.sources = [s for s in args.sources.split(",") if s] or [""]
        self.request = REQUEST_TEMPLATE.format(host=args.host).encode()
        self.conns = []
        self.family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        # This worker's share: connections shard, shard + shards, ... of the N.
        self.indices = range(args.shard, args.count, args.shards)
        last_port = args.first_port + (args.count - 1) // len(self.sources)
        if args.sources and last_port > 65535:
            raise SystemExit(f"{args.count} connections over {len(self.sources)} source "
                             f"address(es) from port {args.first_port} need port {last_port}")

    def open_now(self):
        return sum(1 for c in self.conns if c.broken is None)

    async def _open_one(self, i, tally):
        loop = asyncio.get_running_loop()
        src = self.sources[i % len(self.sources)]
        what = f"connection {i}"
        sock = None
        try:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A port an earlier run left in TIME_WAIT may be bound again (toward another address).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if src:
                port = self.args.first_port + i // len(self.sources)
                what += f" from {src}:{port}"
                sock.bind((src, port))
            async with asyncio.timeout(self.args.timeout):
                await loop.sock_connect(sock, (self.args.host, self.args.port))
            _, conn = await loop.create_connection(
                lambda: Connection(i, self.request), sock=sock)
        except (OSError, asyncio.TimeoutError) as e:
            if sock is not None:
                sock.close()
            tally.failure(what + " (connect)", e)
            return
        self.conns.append(conn)
        try:
            conn.endpoint = await conn.get(self.args.timeout)
            tally.answered(conn.endpoint)
        except Exception as e:  # noqa: BLE001 — every failure is counted and reported
            conn.broken = conn.broken or e
            conn.transport.abort()
            tally.failure(f"connection {i} from {conn.local} (first request)", e)

    async def open(self):
        tally = Tally("open")
        sem = asyncio.Semaphore(self.args.concurrency)
        give_up = self.args.give_up if self.args.give_up > 0 else max(50, self.args.count // 100)
        give_up = max(1, give_up // self.args.shards)
        tasks = set()
        gave_up = False

        async def one(i):
            try:
                await self._open_one(i, tally)
            finally:
                sem.release()

        for i in self.indices:
            await sem.acquire()
            if tally.failed >= give_up:
                sem.release()
                gave_up = True
                break
            tally.attempted += 1
            t = asyncio.ensure_future(one(i))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return tally.summary(self.open_now(), gave_up=gave_up)

    async def round(self):
        tally = Tally("round")
        sem = asyncio.Semaphore(self.args.concurrency)

        async def one(conn):
            async with sem:
                try:
                    endpoint = await conn.get(self.args.timeout)
                    tally.answered(endpoint)
                    if conn.endpoint is not None and endpoint != conn.endpoint:
                        tally.moved += 1
                except Exception as e:  # noqa: BLE001
                    conn.broken = conn.broken or e
                    tally.failure(f"connection {conn.index} from {conn.local}", e)

        tally.attempted = len(self.conns)
        await asyncio.gather(*(one(c) for c in self.conns))
        return tally.summary(self.open_now())

    def close(self):
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()


def merge(answers):
    """One answer of the workers' answers to the same command."""
    out = dict(answers[0])
    for key in ("attempted", "ok", "failed", "moved", "open_now"):
        out[key] = sum(a.get(key, 0) for a in answers)
    out["errors"] = [e for a in answers for e in a.get("errors", [])][:MAX_ERRORS]
    out["by_endpoint"] = {}
    for a in answers:
        for k, v in a.get("by_endpoint", {}).items():
            out["by_endpoint"][k] = out["by_endpoint"].get(k, 0) + v
    out["elapsed"] = max(a.get("elapsed", 0) for a in answers)
    out["rate"] = round(out["ok"] / out["elapsed"], 1) if out["elapsed"] else None
    if "gave_up" in out:
        out["gave_up"] = any(a.get("gave_up") for a in answers)
    out["processes"] = len(answers)
    return out


def run_workers(args, processes):
    """The parent of `processes` workers: every command to each, one merged answer back."""
    argv = [sys.executable, sys.argv[0], "--host", args.host, "--port", str(args.port),
            "--count", str(args.count), "--sources", args.sources,
            "--first-port", str(args.first_port),
            "--concurrency", str(max(1, args.concurrency // processes)),
            "--timeout", str(args.timeout), "--give-up", str(args.give_up),
            "--shards", str(processes)]
    workers = [subprocess.Popen(argv + ["--shard", str(k)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for k in range(processes)]
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            for w in workers:
                w.stdin.write(line)
                w.stdin.flush()
            if cmd[0] == "quit":
                break
            answers = []
            for k, w in enumerate(workers):
                got = w.stdout.readline()
                if not got:
                    raise SystemExit(f"worker {k} ended (exit {w.wait()})")
                answers.append(json.loads(got))
            print(json.dumps(merge(answers)), flush=True)
    finally:
        for w in workers:
            try:
                w.stdin.close()
            except OSError:
                pass
        for w in workers:
            w.wait()
    return 0


async def main_async(args):
    crowd = Crowd(args)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not line or cmd[:1] == ["quit"]:
                break
            if not cmd:
                continue
            if cmd[0] == "open":
                out = await crowd.open()
            elif cmd[0] == "round":
                out = await crowd.round()
            else:
                out = {"error": f"unknown command {cmd[0]}"}
            print(json.dumps(out), flush=True)
    finally:
        crowd.close()
        await asyncio.sleep(0.1)  # let the closes go out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--sources", default="", help="comma-separated local addresses")
    ap.add_argument("--first-port", type=int, default=1024)
    ap.add_argument("--concurrency", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per connect and per request (a lost SYN is sent again at 1 s, 3 s, 7 s)")
    ap.add_argument("--give-up", type=int, default=0,
                    help="failures after which open stops (0: 1%% of --count, at least 50)")
    ap.add_argument("--processes", type=int, default=0,
                    help="worker processes (0: as many as the descriptor limit needs)")
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    nofile = raise_nofile()
    if args.shards == 1:
        processes = args.processes or processes_for(args.count, nofile)
        if processes > 1:
            return run_workers(args, processes)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
