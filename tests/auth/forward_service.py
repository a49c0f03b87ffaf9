"""An auth service for tests/auth.rs's forward-auth tests: it decides on
the `session` cookie, as a login service in front of an app would.

  session=good      200, X-User: alice (until /revoke)
  session=redirect  302 to https://login.test/
  session=slow      200 after 5 s (slower than the gateway waits)
  anything else     401 with a challenge and a body

GET /count answers how many decisions each session value asked for, and
GET /last the headers of the last decision request; POST /revoke makes
`good` a 403 from then on. Prints `listening PORT` once ready.
"""

import http.server
import json
import sys
import threading
import time

counts = {}
last = {}
revoked = threading.Event()
lock = threading.Lock()


def session_of(cookie):
    for pair in (cookie or "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == "session":
            return value
    return ""


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, headers=(), body=b""):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def control(self):
        if self.path == "/count":
            with lock:
                body = json.dumps(counts).encode()
            self.reply(200, [("Content-Type", "application/json")], body)
            return True
        if self.path == "/last":
            with lock:
                body = json.dumps(last).encode()
            self.reply(200, [("Content-Type", "application/json")], body)
            return True
        if self.path == "/revoke":
            revoked.set()
            self.reply(204)
            return True
        return False

    def decide(self):
        if self.control():
            return
        session = session_of(self.headers.get("Cookie"))
        with lock:
            counts[session] = counts.get(session, 0) + 1
            last.clear()
            last.update({k.lower(): v for k, v in self.headers.items()})
            last["method"] = self.command
            last["path"] = self.path
        if session == "good" and not revoked.is_set():
            self.reply(200, [("X-User", "alice"), ("X-Ignored", "1")])
        elif session == "good":
            self.reply(403, [("Content-Type", "text/plain")], b"revoked\n")
        elif session == "redirect":
            self.reply(302, [("Location", "https://login.test/")])
        elif session == "slow":
            time.sleep(5)
            self.reply(200)
        else:
            self.reply(401, [("WWW-Authenticate", 'Cookie realm="app"'), ("Content-Type", "text/plain")], b"log in first\n")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = decide


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
