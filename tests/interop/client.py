"""Drives a WebSocket echo service with Python's `websockets` library.

Usage: client.py URL [--expect-deflate] [--ca CA.pem]

With --ca, a wss:// URL is verified against that CA (and nothing else).

Exits 0 when every check passes; prints what failed otherwise.
"""

import asyncio
import ssl
import sys

from websockets.asyncio.client import connect

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]

# The TLS context for wss:// URLs; set from --ca.
TLS = None


def open_ws(url, **options):
    if TLS is not None:
        options["ssl"] = TLS
    return connect(url, **options)


async def echo_sizes(url):
    async with open_ws(url, max_size=None) as ws:
        for size in SIZES:
            text = "é" * (size // 2)
            await ws.send(text)
            assert await ws.recv() == text, f"text of {size} bytes"
            data = bytes(i % 256 for i in range(size))
            await ws.send(data)
            assert await ws.recv() == data, f"binary of {size} bytes"


async def fragments_ping_and_close(url):
    async with open_ws(url, max_size=None) as ws:
        # "é" is split between the two fragments' UTF-8 bytes by sending str
        # fragments; websockets encodes each fragment separately, so split a
        # multi-byte character across binary fragments instead.
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented", "fragmented text"
        encoded = "aé".encode()
        await ws.send([encoded[:2], encoded[2:]])
        assert await ws.recv() == encoded, "binary fragments splitting a UTF-8 character"
        pong = await ws.ping(b"hello")
        await asyncio.wait_for(pong, 5)
        await ws.close(code=4000, reason="client bye")
        # Node's ws answers a close with the same code: it went both ways.
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4000, f"close reply {ws.protocol.close_rcvd}"
    async with open_ws(url) as ws:
        await ws.close(code=1000)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000, f"close reply {ws.protocol.close_rcvd}"


async def deflate(url):
    async with open_ws(url, compression="deflate", max_size=None) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions, f"negotiated extensions: {extensions!r}"
        text = "compressible " * 10000
        await ws.send(text)
        assert await ws.recv() == text, "compressed text"


async def concurrent(url, sessions=16):
    async def one(n):
        async with open_ws(url) as ws:
            for i in range(20):
                message = f"session {n} message {i}"
                await ws.send(message)
                assert await ws.recv() == message
    await asyncio.gather(*(one(n) for n in range(sessions)))


async def main():
    global TLS
    url = sys.argv[1]
    if "--ca" in sys.argv:
        TLS = ssl.create_default_context(cafile=sys.argv[sys.argv.index("--ca") + 1])
    checks = [echo_sizes, fragments_ping_and_close, concurrent]
    if "--expect-deflate" in sys.argv:
        checks.append(deflate)
    for check in checks:
        try:
            await asyncio.wait_for(check(url), 60)
        except Exception as error:  # report which check failed, then fail
            print(f"FAILED {check.__name__}: {error!r}")
            sys.exit(1)
        print(f"ok {check.__name__}")


asyncio.run(main())
