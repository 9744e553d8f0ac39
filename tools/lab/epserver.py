#!/usr/bin/python3
"""epserver.py — the lab's endpoint: an HTTP/1.1 server (keep-alive, IPv4 + IPv6) that answers
with its own endpoint name, so a client behind the VIP can tell who answered.

  GET /                           -> 200 "<name>\n", headers X-Endpoint: <name>,
                                     X-Client: <the peer's address:port as the endpoint sees it>
  GET /stream?chunks=N&interval=S -> 200, chunked, N lines "<name> <i>\n" one every S seconds
  UDP datagram to the same port    -> a datagram "<name>" back

One thread per connection by default. --async serves the same answers (/stream excepted: 501)
from one asyncio loop instead, for tens of thousands of keep-alive connections at once (the
scale tests): no thread per connection, a listen backlog of --backlog (the kernel caps it at
net.core.somaxconn), and RLIMIT_NOFILE raised as far as the kernel allows.

Also a one-shot client for readiness checks: epserver.py --probe ADDR --port P.
"""
import argparse
import asyncio
import http.client
import random
import resource
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


_BLOBS = {}


def blob(size, seed):
    """/blob's body: `size` pseudo-random bytes from `seed` (random.Random, so a test computes
    the same bytes and their digest itself). Kept after the first request."""
    key = (size, seed)
    if key not in _BLOBS:
        _BLOBS.clear()
        _BLOBS[key] = random.Random(seed).randbytes(size)
    return _BLOBS[key]


class EndpointHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says close
    server_version = "meshpath-lab-epserver"
    name = "ep"

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle holds the body until
        # the client's delayed ACK (40 ms per request on a keep-alive connection).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/stream":
            self._stream(parse_qs(url.query))
            return
        if url.path.startswith("/health"):
            self._health(url.path)
            return
        if url.path == "/blob":
            self._blob(parse_qs(url.query))
            return
        body = (self.name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Endpoint", self.name)
        # Who the endpoint sees: the client itself (dnat) or the balancer's SNAT source (nat).
        self.send_header("X-Client", f"{self.client_address[0]}:{self.client_address[1]}")
        self.end_headers()
        self.wfile.write(body)

    # /health answers 200, or 503 after /health/fail until /health/ok: a health check can fail
    # while the server goes on serving its open connections.
    sick = False

    def _health(self, path):
        if path == "/health/fail":
            EndpointHandler.sick = True
        elif path == "/health/ok":
            EndpointHandler.sick = False
        status = 503 if EndpointHandler.sick and path == "/health" else 200
        body = b"sick\n" if status == 503 else b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _blob(self, query):
        data = blob(int(query.get("size", ["1048576"])[0]), int(query.get("seed", ["1"])[0]))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Endpoint", self.name)
        self.end_headers()
        view = memoryview(data)
        for off in range(0, len(data), 1 << 20):
            self.wfile.write(view[off:off + (1 << 20)])

    def _stream(self, query):
        chunks = int(query.get("chunks", ["10"])[0])
        interval = float(query.get("interval", ["0.1"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Endpoint", self.name)
        self.end_headers()
        for i in range(chunks):
            line = f"{self.name} {i}\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()
            time.sleep(interval)
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format, *args):  # noqa: A002 — quiet: tests send thousands of requests
        pass


class DualStackServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 1024  # bursts of new connections from the tests

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve_udp(name, port):
    """Answers every datagram on [::]:port with the endpoint's name (IPv4 and IPv6)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(name.encode(), peer)


class AsyncEndpoint(asyncio.Protocol):
    """One keep-alive connection of the --async server: requests in, answers out, in order.
    Only what the lab's clients send is understood: GET with headers and no body."""

    name = "ep"
    sick = False

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:  # not a request this server will ever understand
                    self.transport.close()
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            lines = head.split("\r\n")
            parts = lines[0].split()
            close = any(h.lower().replace(" ", "") == "connection:close" for h in lines[1:])
            if len(parts) != 3:
                self._answer(400, b"bad request\n", close=True)
                return
            self._answer(*self._route(parts[0], urlparse(parts[1]).path), close=close)
            if close:
                return

    def _route(self, method, path):
        cls = AsyncEndpoint
        if method != "GET":
            return 405, b"GET only\n"
        if path.startswith("/health"):
            if path == "/health/fail":
                cls.sick = True
            elif path == "/health/ok":
                cls.sick = False
            return (503, b"sick\n") if cls.sick and path == "/health" else (200, b"ok\n")
        if path == "/stream":
            return 501, b"no /stream in --async mode\n"
        return 200, (self.name + "\n").encode()

    def _answer(self, status, body, close=False):
        reason = http.client.responses.get(status, "")
        head = (f"HTTP/1.1 {status} {reason}\r\nServer: meshpath-lab-epserver-async\r\n"
                f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                f"X-Endpoint: {self.name}\r\nX-Client: {self.peer}\r\n")
        if close:
            head += "Connection: close\r\n"
        self.transport.write(head.encode() + b"\r\n" + body)
        if close:
            self.transport.close()


class AsyncUdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(AsyncEndpoint.name.encode(), addr)


def raise_nofile():
    """As many descriptors as the kernel allows a process (fs.nr_open), as root can."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = int(f.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve_async(name, port, backlog):
    AsyncEndpoint.name = name
    loop = asyncio.get_running_loop()
    lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("::", port))
    server = await loop.create_server(AsyncEndpoint, sock=lsock, backlog=backlog)
    usock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    usock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    usock.bind(("::", port))
    await loop.create_datagram_endpoint(AsyncUdpEcho, sock=usock)
    async with server:
        await server.serve_forever()


def probe(address, port):
    conn = http.client.HTTPConnection(address, port, timeout=2)
    conn.request("GET", "/")
    resp = conn.getresponse()
    body = resp.read().decode().strip()
    print(body)
    return 0 if resp.status == 200 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default=socket.gethostname())
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--probe", metavar="ADDR", help="send one GET / to ADDR and print the answer")
    ap.add_argument("--async", dest="use_async", action="store_true",
                    help="one asyncio loop for every connection (tens of thousands at once)")
    ap.add_argument("--backlog", type=int, default=65535, help="--async: listen backlog")
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe, args.port)
    if args.use_async:
        raise_nofile()
        asyncio.run(serve_async(args.name, args.port, args.backlog))
        return 0
    EndpointHandler.name = args.name
    threading.Thread(target=serve_udp, args=(args.name, args.port), daemon=True).start()
    server = DualStackServer(("::", args.port), EndpointHandler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
