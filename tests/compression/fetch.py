"""Fetches URLs from wsgate and decodes each body with the reference
decoders (Google's brotli, python-zstandard, zlib's gzip), for
tests/compression.rs.

Usage: python fetch.py METHOD URL ACCEPT_ENCODING [RANGE]
Prints one JSON line: status, lower-cased headers, the bytes on the wire,
and the decoded body's length and SHA-256 (or the decoder's error), and
`progress`: after how many seconds how many bytes were decoded piece by
piece, had come over the wire, and decode from the wire at once.
"""

import gzip
import hashlib
import http.client
import json
import sys
import time
import urllib.parse

import brotli
import zstandard


def decode(coding, data):
    if coding in (None, "", "identity"):
        return data
    if coding == "br":
        return brotli.decompress(data)
    if coding == "zstd":
        # Streamed output has no content size in its frame header.
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == "gzip":
        return gzip.decompress(data)
    raise ValueError(f"unknown coding {coding}")


def incremental(coding):
    """A decoder fed piece by piece, for timing when output first appears."""
    if coding == "br":
        return brotli.Decompressor().process
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    if coding == "gzip":
        return __import__("zlib").decompressobj(31).decompress
    return lambda data: data


def main():
    method, url, accept = sys.argv[1:4]
    byte_range = sys.argv[4] if len(sys.argv) > 4 else None
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Accept-Encoding": accept} if accept else {}
    if byte_range:
        headers["Range"] = byte_range
    target = parts.path + ("?" + parts.query if parts.query else "")
    # skip_accept_encoding: http.client would add "identity" itself.
    connection.putrequest(method, target, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    started = time.monotonic()
    connection.endheaders()
    response = connection.getresponse()
    step = incremental(response.getheader("Content-Encoding"))
    wire = b""
    progress = []
    decoded = 0
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        wire += piece
        decoded += len(step(piece))
        # Also all of the wire so far through a fresh decoder at once: a
        # decoder fed piece by piece may hold back the end of a block.
        at_once = len(incremental(response.getheader("Content-Encoding"))(wire))
        progress.append([time.monotonic() - started, decoded, len(wire), at_once])
    report = {
        "status": response.status,
        "headers": {name.lower(): value for name, value in response.getheaders()},
        "wire": len(wire),
        "progress": progress,
    }
    try:
        body = decode(response.getheader("Content-Encoding"), wire)
        report["length"] = len(body)
        report["sha256"] = hashlib.sha256(body).hexdigest()
    except Exception as error:  # the test prints what the decoder said
        report["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(report))


main()
