"""Connects to wsgate over TLS several times, each time offering the
session of the connection before, and prints whether each one resumed, as
a JSON list. Python's ssl module is OpenSSL's client: tickets in TLS 1.3,
tickets or session IDs in TLS 1.2. For tests/tls.rs.

Usage: python3 resume.py CA_FILE VERSION TARGET...
VERSION is 1.2 or 1.3; a TARGET is HOST:PORT, or `wait`: print "waiting"
and go on when a line comes on stdin (the test reloads wsgate meanwhile).
"""

import json
import socket
import ssl
import sys


def main():
    ca, version, *targets = sys.argv[1:]
    context = ssl.create_default_context(cafile=ca)
    pinned = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.minimum_version = context.maximum_version = pinned
    session = None
    resumed = []
    for target in targets:
        if target == "wait":
            print("waiting", flush=True)
            sys.stdin.readline()
            continue
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                tls.sendall(request)
                # TLS 1.3 tickets come after the handshake: read to the end.
                while tls.recv(65536):
                    pass
                resumed.append(tls.session_reused)
                session = tls.session
    print(json.dumps(resumed), flush=True)


main()
