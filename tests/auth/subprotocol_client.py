"""A browser-like WebSocket client for tests/auth.rs: Python's `websockets`
offering its JWT as a subprotocol next to the application's own ("chat"),
the way pages do that cannot set an Authorization header.

usage: subprotocol_client.py URL TOKEN   (prints the echo of "hello")
"""

import asyncio
import sys

from websockets.asyncio.client import connect


async def main(url, token):
    async with connect(url, subprotocols=[token, "chat"]) as websocket:
        await websocket.send("hello")
        print(await websocket.recv())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
