#!/usr/bin/python3
"""epserver.py — the lab's endpoint: an HTTP/1.1 server (keep-alive, IPv4 + IPv6) that answers
with its own endpoint name, so a client behind the VIP can tell who answered.

  GET /                           -> 200 "<name>\n", header X-Endpoint: <name>
  GET /stream?chunks=N&interval=S -> 200, chunked, N lines "<name> <i>\n" one every S seconds
  UDP datagram to the same port    -> a datagram "<name>" back

Also a one-shot client for readiness checks: epserver.py --probe ADDR --port P.
"""
import argparse
import http.client
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


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
        body = (self.name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Endpoint", self.name)
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
    args = ap.parse_args()
    if args.probe:
        return probe(args.probe, args.port)
    EndpointHandler.name = args.name
    threading.Thread(target=serve_udp, args=(args.name, args.port), daemon=True).start()
    server = DualStackServer(("::", args.port), EndpointHandler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
