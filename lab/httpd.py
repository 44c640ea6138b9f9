#!/usr/bin/env python3
"""The HTTP server each real server of the vc5 lab runs (python3 standard library only).

Listens dual-stack on [::]:PORT and answers
  GET /          "real=<name> client=<peer address> vip=<local address>\n", which tells a
                 test which real answered, that it saw the client's own address (Direct
                 Server Return keeps it) and on which VIP the request arrived;
  GET /bytes/N   N bytes, written in chunks so that a rate-limited download lasts; the
                 same N bytes from every real (16 KiB chunk k is SHA-256(k) in hex,
                 repeated),
                 so a checksum shows a download arrived whole and in order, whichever
                 real served it; /bytes/N?rate=R sends at most R bytes per second
                 (paced by the server: curl's --limit-rate averages over seconds and lets
                 a fast link deliver megabytes at once);
  GET /health    200 "ok\n", for vc5d's health checks;
  POST /sha256   the SHA-256 of the request body in hex (Content-Length, at most 64 MiB),
                 so a test can send more than one segment towards a real and check
                 that all of it arrived.
Every answer names the real in an X-Real header, so a test can tell where a long
download landed as soon as its headers arrive.
Every request is logged as one line on stdout.

With --udp-port P and --vip ADDR (repeated), it also answers UDP datagrams to ADDR:P with
"real=<name> client=<peer address> vip=ADDR seq=<the datagram's text>\n" (one socket
bound to each VIP, so that answers leave from the VIP, as Direct Server Return needs), and
accepts TCP connections on [::]:P (closing them at once) for vc5d's tcp health checks.
"""

import argparse
import hashlib
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 16 * 1024


def plain(addr):
    """An IPv4 peer of a dual-stack socket appears as ::ffff:a.b.c.d; show a.b.c.d."""
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


def pattern(k):
    """Chunk k of every /bytes/N answer: different for every k, the same on every real,
    and ASCII (hex digits), so that clients reading it as text count it right."""
    return hashlib.sha256(k.to_bytes(8, "big")).hexdigest().encode() * (CHUNK // 64)


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
            path, _, query = self.path.partition("?")
            rate = urllib.parse.parse_qs(query).get("rate", ["0"])[0]
            self.stream(path[len("/bytes/"):], rate)
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        if self.path != "/sha256":
            self.reply(404, "not found\n")
            return
        try:
            n = int(self.headers.get("Content-Length", ""))
            if not 0 <= n <= 64 << 20:
                raise ValueError
        except ValueError:
            self.reply(400, "bad or missing Content-Length\n")
            return
        h = hashlib.sha256()
        while n:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                self.reply(400, "body shorter than Content-Length\n")
                return
            h.update(chunk)
            n -= len(chunk)
        self.reply(200, h.hexdigest() + "\n")

    def reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Real", self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def stream(self, count, rate="0"):
        try:
            n = int(count)
            rate = int(rate)
            if n < 0 or rate < 0:
                raise ValueError
        except ValueError:
            self.reply(400, "bad byte count or rate\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Real", self.server.name)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        start = time.monotonic()
        try:
            k = 0
            while n > 0:
                chunk = pattern(k)
                self.wfile.write(chunk[: min(n, CHUNK)])
                n -= CHUNK
                k += 1
                if rate:
                    # Chunk k+1 may leave once (k+1) chunks' worth of time has passed.
                    ahead = k * CHUNK / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
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


def udp_echo(name, vip, port):
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((vip, port))
    while True:
        data, peer = s.recvfrom(2048)
        text = data.decode(errors="replace").strip()
        s.sendto(f"real={name} client={plain(peer[0])} vip={vip} seq={text}\n".encode(), peer)


def tcp_accept(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the real's name, e.g. real1")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--udp-port", type=int, help="answer UDP datagrams on this port")
    parser.add_argument("--vip", action="append", default=[], help="a VIP (repeat)")
    args = parser.parse_args()
    server = Server(args.name, args.port)
    if args.udp_port:
        for target, extra in [(tcp_accept, ())] + [(udp_echo, (args.name, v)) for v in args.vip]:
            threading.Thread(
                target=target, args=extra + (args.udp_port,), daemon=True
            ).start()
    print(f"{args.name} listening on [::]:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
