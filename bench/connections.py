"""Memory and file descriptors per idle client connection, by kind: an
HTTP/1.1 keep-alive connection after one request, an HTTP/2 connection
(TLS, ALPN h2) that sent its preface and nothing else, and a WebSocket
session relayed to an echo backend. The figures behind the sizing in
docs/operations.md.

  python3 bench/connections.py --wsgate target/release/wsgate [--count 1000] [--rounds 3]

Python 3.11 stdlib plus the `openssl` command (for a throwaway certificate).
For each kind and round it starts a fresh gateway (so one kind's freed
memory cannot hide the next kind's), opens COUNT connections, waits for it
to settle, and reads its RSS and open descriptors from /proc; the table
shows the medians of the per-connection differences. The echo backend is a
separate process, not counted.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import free_ports, rss_kib  # noqa: E402

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("connection closed during a head")
        head += chunk
    return head


def open_h1(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head[:40]
    return sock


def open_h2(port: int, context: ssl.SSLContext) -> socket.socket:
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                               server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2"
    sock.sendall(H2_PREFACE + EMPTY_SETTINGS)
    sock.recv(4096)  # the server's SETTINGS
    return sock


def open_ws(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return sock


def measure(pid: int, opener, count: int) -> tuple[float, float]:
    time.sleep(1.0)
    rss0, fd0 = rss_kib([pid]), fds(pid)
    socks = [opener() for _ in range(count)]
    time.sleep(2.0)
    rss1, fd1 = rss_kib([pid]), fds(pid)
    for sock in socks:
        sock.close()
    time.sleep(2.0)
    return (rss1 - rss0) * 1024 / count, (fd1 - fd0) / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wsgate", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                       check=True, capture_output=True)
        (d / "public").mkdir()
        (d / "public" / "index.html").write_text("hello\n")
        plain, tls, admin, echo = free_ports(4)
        (d / "wsgate.toml").write_text(f"""
[[listeners]]
bind = "127.0.0.1:{plain}"
[[listeners]]
bind = "127.0.0.1:{tls}"
tls = {{ cert = "cert.pem", key = "key.pem" }}
[admin]
bind = "127.0.0.1:{admin}"
[server]
header_read_timeout = "10m"
keepalive_timeout = "10m"
[[routes]]
name = "site"
path = "/"
static = {{ root = "public" }}
[[routes]]
name = "echo"
path = "/echo"
websocket = {{ backends = ["ws://127.0.0.1:{echo}"], ping_interval = "0s" }}
""")
        echo_proc = subprocess.Popen([args.wsgate, "echo-server", "--listen", f"127.0.0.1:{echo}"],
                                     stderr=subprocess.DEVNULL)
        context = ssl.create_default_context(cafile=str(d / "cert.pem"))
        context.set_alpn_protocols(["h2"])
        kinds = [
            ("HTTP/1.1 keep-alive, after one request", lambda: open_h1(plain)),
            ("HTTP/2 over TLS, idle", lambda: open_h2(tls, context)),
            ("WebSocket session (plus its backend socket)", lambda: open_ws(plain)),
        ]
        try:
            wait_for_port(echo)
            print(f"{args.count} connections of each kind, {args.rounds} rounds "
                  "(a fresh gateway each), medians")
            print(f"{'connection':<46} {'RSS per conn':>14} {'fds per conn':>13}")
            for name, opener in kinds:
                rounds = []
                for _ in range(args.rounds):
                    gateway = subprocess.Popen([args.wsgate, "--config", str(d / "wsgate.toml")],
                                               stderr=subprocess.DEVNULL)
                    try:
                        for port in (plain, tls, admin):
                            wait_for_port(port)
                        rounds.append(measure(gateway.pid, opener, args.count))
                    finally:
                        gateway.terminate()
                        gateway.wait(timeout=40)
                rss = statistics.median(r[0] for r in rounds)
                fd = statistics.median(r[1] for r in rounds)
                print(f"{name:<46} {rss / 1024:>10.2f} KiB {fd:>13.2f}")
        finally:
            echo_proc.terminate()
            echo_proc.wait(timeout=5)

if __name__ == "__main__":
    main()
