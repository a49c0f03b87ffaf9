# A backend app server on Python's stdlib http.server: a second HTTP/1.1
# implementation nobody on the wsgate team wrote, with its own quirks.
# Usage: python3 app.py NAME PORT   (PORT 0: any free port)
# Prints "listening PORT" once ready.
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = sys.argv[1] if len(sys.argv) > 1 else "app"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
CHUNK = 64 * 1024


def pattern(start, length):
    # Same i % 251 pattern as app.js, so tests can share one checker.
    return bytes((start + i) % 251 for i in range(length))


# One period-aligned block, sliced per chunk, so a 50 MB download isn't
# bottlenecked on a per-byte Python loop.
BLOCK = pattern(0, CHUNK + 251)


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so connections are kept alive and reused by the gateway.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass  # the tests read stdout/stderr; per-request lines are noise

    def reply(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, obj):
        self.reply(200, json.dumps(obj).encode(), "application/json")

    def body_pieces(self):
        # http.server does not decode chunked bodies itself, so a gateway that
        # forwards uploads chunked needs this to be seen doing it right.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    piece = self.rfile.read(min(CHUNK, size))
                    if not piece:
                        raise ConnectionError("body cut short")
                    size -= len(piece)
                    yield piece
                self.rfile.readline()  # CRLF after each chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise ConnectionError("body cut short")
                left -= len(piece)
                yield piece

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            return self.reply(200, b"ok")
        if url.path == "/download":
            total = int(parse_qs(url.query).get("bytes", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent = 0
            while sent < total:
                n = min(CHUNK, total - sent)
                off = sent % 251
                self.wfile.write(BLOCK[off:off + n])
                sent += n
            return
        self.whoami()

    def do_POST(self):
        if urlsplit(self.path).path == "/upload":
            h, n = hashlib.sha256(), 0
            for piece in self.body_pieces():
                h.update(piece)
                n += len(piece)
            return self.reply_json({"name": NAME, "bytes": n, "sha256": h.hexdigest()})
        for _ in self.body_pieces():
            pass  # drain, so the kept-alive connection stays in sync
        self.whoami()

    def whoami(self):
        # Lowercase keys, repeats joined with ", ": the shape app.js gives.
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        self.reply_json({"name": NAME, "method": self.command, "url": self.path, "headers": headers})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True  # don't let a kept-alive connection block exit
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
