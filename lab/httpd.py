#!/usr/bin/env python3
"""The HTTP server each real server of the vc5 lab runs (python3 standard library only).

Listens dual-stack on [::]:PORT and answers
  GET /          "real=<name> client=<peer address> vip=<local address>\n", which tells a
                 test which real answered, that it saw the client's own address (Direct
                 Server Return keeps it) and on which VIP the request arrived;
  GET /bytes/N   N bytes, written in chunks so that a rate-limited download lasts;
  GET /health    200 "ok\n", for vc5d's health checks.
Every answer names the real in an X-Real header, so a test can tell where a long
download landed as soon as its headers arrive.
Every request is logged as one line on stdout.
"""

import argparse
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 16 * 1024


def plain(addr):
    """An IPv4 peer of a dual-stack socket appears as ::ffff:a.b.c.d; show a.b.c.d."""
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    # Tests open many connections at once; the default backlog of 5 would drop SYNs.
    request_queue_size = 256

    def __init__(self, name, port):
        self.name = name
        super().__init__(("::", port), Handler)

    def server_bind(self):
        # One socket for both families, whatever net.ipv6.bindv6only says.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Handler(BaseHTTPRequestHandler):
    server_version = "vc5-lab-httpd/1"
    # HTTP/1.0: one request per connection, so every request is a new flow for the
    # load balancer to place.
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        client = plain(self.client_address[0])
        vip = plain(self.connection.getsockname()[0])
        if self.path == "/":
            self.reply(200, f"real={self.server.name} client={client} vip={vip}\n")
        elif self.path == "/health":
            self.reply(200, "ok\n")
        elif self.path.startswith("/bytes/"):
            self.stream(self.path[len("/bytes/"):])
        else:
            self.reply(404, "not found\n")

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Real", self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, count):
        try:
            n = int(count)
            if n < 0:
                raise ValueError
        except ValueError:
            self.reply(400, "bad byte count\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Real", self.server.name)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        chunk = b"x" * CHUNK
        try:
            while n > 0:
                self.wfile.write(chunk[: min(n, CHUNK)])
                n -= CHUNK
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a test killed it); nothing to answer.
            pass

    def log_request(self, code="-", size="-"):
        stamp = time.strftime("%H:%M:%S")
        client = plain(self.client_address[0])
        vip = plain(self.connection.getsockname()[0])
        print(
            f"{stamp} {self.server.name} {client} -> {vip} "
            f'"{self.requestline}" {code}',
            flush=True,
        )

    def log_error(self, format, *args):
        # send_error also calls log_request: one line per request is enough.
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the real's name, e.g. real1")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args()
    server = Server(args.name, args.port)
    print(f"{args.name} listening on [::]:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
