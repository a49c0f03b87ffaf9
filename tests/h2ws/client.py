#!/usr/bin/env python3
"""WebSockets over HTTP/2 (RFC 8441) against wsgate, with python-hyper's `h2`
for the connection and `wsproto` for the frames: peers nobody here wrote.

    client.py ADDR CA SCENARIO [ARGS...]

ADDR is host:port of a TLS listener for `localhost`, CA the PEM file that
signed its certificate; with CA `-`, a plaintext listener with h2c. Each scenario prints one JSON object on stdout; the
Rust tests (tests/websocket_h2.rs) decide what is right. Scenarios:

    settings                  the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
    status PATH [K=V...]      a CONNECT's answer: status and headers, or the
                              RST_STREAM code; K=V adds a header, `:protocol=`
                              with no value leaves the pseudo-header out
    echo PATH                 text and 1 MiB binary echoed, then close 4001
    many PATH N               N sessions on one connection, 20 echoes each
    reset PATH                half a message, then RST_STREAM(CANCEL)
    stall PATH                never acknowledges data (no WINDOW_UPDATE);
                              reports when the server ended the connection
    goaway PATH N             N sessions, then GOAWAY and the socket closed
    hold PATH N               N sessions, then waits for the server to close
                              them; reports their close codes and any GOAWAY
    first-close PATH          sends one message; reports the first close code
    deflate PATH              offers permessage-deflate; echoes 100 KB of
                              text compressed, reports what was negotiated
    idle PATH SECONDS         one echo, then idle, answering pings; reports
                              how many pings came
    statuses PATH N [K=V...]  N CONNECTs at once on one connection, kept
                              open; reports their statuses and headers
    stuck PATH OTHER          floods a session at PATH (whose backend reads
                              nothing) until flow control stops it, then
                              echoes on a session at OTHER on the same
                              connection
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.errors
import h2.settings
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import PerMessageDeflate
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason


class GracefulConnection(h2.connection.H2Connection):
    """python-h2 takes any GOAWAY as the end of the connection and refuses
    every frame after it. RFC 9113 §6.8 lets the streams a graceful GOAWAY
    (NO_ERROR) covers run to their end, which is what the drain scenario
    watches; so after one the connection is put back in the open state."""

    def _receive_goaway_frame(self, frame):
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class Stream:
    """One HTTP/2 stream's events, in order."""

    def __init__(self) -> None:
        self.events: asyncio.Queue = asyncio.Queue()
        self.window = asyncio.Event()


class H2:
    """A client HTTP/2 connection driven by a reader task."""

    def __init__(self, addr: str, ca: str, ack: bool = True) -> None:
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.ca = ca
        self.ack = ack
        self.streams: dict[int, Stream] = {}
        self.settings = asyncio.Event()
        self.closed = asyncio.Event()
        self.goaway = None
        self.received = 0

    async def open(self) -> None:
        if self.ca == "-":
            # h2c with prior knowledge: the preface goes first, in plaintext.
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.scheme = "http"
        else:
            context = ssl.create_default_context(cafile=self.ca)
            context.set_alpn_protocols(["h2"])
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=context, server_hostname="localhost"
            )
            alpn = self.writer.get_extra_info("ssl_object").selected_alpn_protocol()
            assert alpn == "h2", alpn
            self.scheme = "https"
        # Off for requests a careful client would not send (a CONNECT
        # without :protocol); the server must cope with them anyway.
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.conn = GracefulConnection(config=config)
        self.conn.initiate_connection()
        self.flush()
        self.task = asyncio.create_task(self.read_loop())
        await asyncio.wait_for(self.settings.wait(), 5)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self.dispatch(event)
                self.flush()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for stream in self.streams.values():
                stream.events.put_nowait(None)
                stream.window.set()

    def dispatch(self, event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
        elif isinstance(event, h2.events.WindowUpdated):
            for stream in self.streams.values():
                stream.window.set()
        elif isinstance(event, h2.events.DataReceived):
            self.received += len(event.data)
            if self.ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        stream_id = getattr(event, "stream_id", None)
        if stream_id in self.streams:
            self.streams[stream_id].events.put_nowait(event)

    @property
    def enable_connect_protocol(self) -> int:
        return self.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)

    def request(self, path: str, extra: list[tuple[str, str]], protocol="websocket") -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT")]
        if protocol is not None:
            headers += [
                (":protocol", protocol),
                (":scheme", self.scheme),
                (":path", path),
            ]
        headers.append((":authority", "localhost"))
        headers += [("sec-websocket-version", "13")]
        names = {name for name, _ in extra}
        headers = [(n, v) for n, v in headers if n not in names] + extra
        self.streams[stream_id] = Stream()
        self.conn.send_headers(stream_id, headers)
        self.flush()
        return stream_id

    async def answer(self, stream_id: int) -> dict:
        """The response head, or how the stream ended without one."""
        while True:
            event = await asyncio.wait_for(self.streams[stream_id].events.get(), 10)
            if event is None:
                return {"closed": True}
            if isinstance(event, h2.events.ResponseReceived):
                return {"status": int(dict(event.headers)[":status"]), "headers": dict(event.headers)}
            if isinstance(event, h2.events.StreamReset):
                return {"reset": h2.errors.ErrorCodes(event.error_code).name}

    async def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Sends `data` as the flow-control windows allow; `end` ends the
        stream with its last frame (END_STREAM)."""
        stream = self.streams[stream_id]
        while data:
            window = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
            )
            if window <= 0:
                stream.window.clear()
                self.flush()
                await asyncio.wait_for(stream.window.wait(), 10)
                if self.closed.is_set():
                    raise ConnectionError("connection closed while sending")
                continue
            self.conn.send_data(stream_id, data[:window], end_stream=end and len(data) <= window)
            data = data[window:]
            self.flush()
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class Session:
    """A WebSocket on one stream of an `H2` connection."""

    def __init__(self, h2c: H2, stream_id: int, extensions=None) -> None:
        self.h2c = h2c
        self.stream_id = stream_id
        self.ws = Connection(ConnectionType.CLIENT, extensions=extensions)
        self.pending: list = []
        self.ended = False
        self.pings = 0

    @classmethod
    async def open(cls, h2c: H2, path: str, extra=None) -> "Session":
        stream_id = h2c.request(path, extra or [])
        answer = await h2c.answer(stream_id)
        if answer.get("status") != 200:
            raise RuntimeError(f"CONNECT {path} answered {answer}")
        return cls(h2c, stream_id)

    async def send(self, event, end: bool = False) -> None:
        await self.h2c.send(self.stream_id, self.ws.send(event), end)

    async def next(self, timeout: float = 10):
        """The next WebSocket event: a whole message, a close, or None at the stream's end."""
        parts: list = []
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, Ping):
                    self.pings += 1
                    await self.send(event.response())
                    continue
                if isinstance(event, Message):
                    parts.append(event.data)
                    if event.message_finished:
                        whole = "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
                        return whole
                    continue
                return event
            if self.ended:
                return None
            event = await asyncio.wait_for(
                self.h2c.streams[self.stream_id].events.get(), timeout
            )
            if event is None or isinstance(event, h2.events.StreamReset):
                self.ended = True
                continue
            if isinstance(event, h2.events.DataReceived):
                self.ws.receive_data(event.data)
                self.pending.extend(self.ws.events())
            if isinstance(event, h2.events.StreamEnded):
                self.ws.receive_data(None)
                self.pending.extend(self.ws.events())
                self.ended = True

    async def close(self, code: int, reason: str = "", end: bool = False) -> int | None:
        """Sends a close (with END_STREAM if `end`, as Chromium does) and
        returns the code of the answer."""
        await self.send(CloseConnection(code=code, reason=reason), end)
        while True:
            event = await self.next()
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                return event.code

    async def server_close(self, timeout: float) -> int | None:
        """Waits for the server's close, answers it, returns its code."""
        while True:
            event = await self.next(timeout)
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                try:
                    await self.send(event.response())
                except Exception:
                    pass
                return event.code


def first_close_code(raw: bytes) -> int | None:
    """The code of the first close frame in unmasked server frames."""
    while len(raw) >= 2:
        opcode, length = raw[0] & 0x0F, raw[1] & 0x7F
        start = 2
        if length == 126:
            length, start = int.from_bytes(raw[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(raw[2:10], "big"), 10
        if opcode == 0x8:
            return int.from_bytes(raw[start : start + 2], "big") if length >= 2 else 1005
        raw = raw[start + length :]
    return None


async def echo_round(session: Session, message) -> bool:
    await session.send(Message(data=message))
    return await session.next() == message


async def scenario(addr: str, ca: str, name: str, args: list[str]) -> dict:
    h2c = H2(addr, ca, ack=name != "stall")
    await h2c.open()
    if name == "settings":
        return {"enable_connect_protocol": h2c.enable_connect_protocol}
    path = args[0]
    if name == "status":
        extra = []
        protocol = "websocket"
        for item in args[1:]:
            key, value = item.split("=", 1)
            if key == ":protocol":
                protocol = value or None
            else:
                extra.append((key, value))
        stream_id = h2c.request(path, extra, protocol)
        return await h2c.answer(stream_id)
    if name == "echo":
        session = await Session.open(h2c, path)
        text = await echo_round(session, "hello over h2")
        payload = os.urandom(1 << 20)
        binary = await echo_round(session, payload)
        code = await session.close(4001, "done", end=True)
        return {"text": text, "binary": binary, "close_code": code}
    if name == "many":
        count = int(args[1])
        sessions = await asyncio.gather(*(Session.open(h2c, path) for _ in range(count)))

        async def chat(index: int, session: Session) -> bool:
            for turn in range(20):
                if not await echo_round(session, f"stream {index} turn {turn}"):
                    return False
            return await session.close(1000) == 1000

        results = await asyncio.gather(*(chat(i, s) for i, s in enumerate(sessions)))
        streams = sorted(s.stream_id for s in sessions)
        return {"ok": sum(results), "distinct_streams": len(set(streams))}
    if name == "reset":
        session = await Session.open(h2c, path)
        assert await echo_round(session, "before")
        # A masked binary frame that announces 1000 bytes and carries 10,
        # left to reach the backend before the reset.
        await h2c.send(session.stream_id, bytes([0x82, 0x80 | 126, 0x03, 0xE8, 1, 2, 3, 4]) + b"x" * 10)
        await asyncio.sleep(0.5)
        h2c.conn.reset_stream(session.stream_id, h2.errors.ErrorCodes.CANCEL)
        h2c.flush()
        await asyncio.sleep(0.5)
        # The connection goes on: a new session on it works, and is reset
        # between messages.
        other = await Session.open(h2c, path)
        after = await echo_round(other, "after")
        h2c.conn.reset_stream(other.stream_id, h2.errors.ErrorCodes.CANCEL)
        h2c.flush()
        await asyncio.sleep(0.5)
        return {"after_reset": after}
    if name == "stall":
        session = await Session.open(h2c, path)
        await session.send(Message(data="flood me"))
        started = time.monotonic()
        await asyncio.wait_for(h2c.closed.wait(), 60)
        return {"closed_after": time.monotonic() - started, "received": h2c.received}
    if name == "goaway":
        count = int(args[1])
        sessions = [await Session.open(h2c, path) for _ in range(count)]
        results = [await echo_round(s, "hi") for s in sessions]
        h2c.conn.close_connection()
        h2c.flush()
        await h2c.writer.drain()
        h2c.close()
        return {"echoed": sum(results)}
    if name == "hold":
        count = int(args[1])
        sessions = [await Session.open(h2c, path) for _ in range(count)]
        results = [await echo_round(s, "hi") for s in sessions]
        print(json.dumps({"ready": sum(results)}), flush=True)
        codes = await asyncio.gather(*(s.server_close(60) for s in sessions))
        await asyncio.wait_for(h2c.closed.wait(), 30)
        return {"codes": codes, "goaway": h2c.goaway}
    if name == "statuses":
        extra = [tuple(item.split("=", 1)) for item in args[2:]]
        stream_ids = [h2c.request(path, extra) for _ in range(int(args[1]))]
        answers = [await h2c.answer(stream_id) for stream_id in stream_ids]
        return {"answers": answers}
    if name == "stuck":
        stuck = await Session.open(h2c, path)
        other = await Session.open(h2c, args[1])
        frame = stuck.ws.send(Message(data=b"x" * 65536))
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for _ in range(1024):
                await h2c.send(stuck.stream_id, frame)
                sent += len(frame)

        flooding = asyncio.create_task(flood())
        # Until the flood has stopped moving: the windows are used up.
        last = -1
        while sent != last:
            last = sent
            await asyncio.sleep(1)
        held = sent
        echoes = [await echo_round(other, f"still here {i}") for i in range(10)]
        flooding.cancel()
        return {"flood_held_at": held, "flood_total": 1024 * len(frame), "echoes": sum(echoes)}
    if name == "deflate":
        deflate = PerMessageDeflate()
        # offer() gives the parameters; the handshake names the extension.
        offer = f"{deflate.name}; {deflate.offer()}"
        stream_id = h2c.request(path, [("sec-websocket-extensions", offer)])
        answer = await h2c.answer(stream_id)
        if answer.get("status") != 200:
            return {"status": answer.get("status"), "answer": answer}
        negotiated = answer.get("headers", {}).get("sec-websocket-extensions")
        if negotiated:
            deflate.finalize(negotiated)
        session = Session(h2c, stream_id, [deflate] if negotiated else None)
        text = "wsgate relays compressed frames unchanged. " * 2400
        echoed = await echo_round(session, text)
        code = await session.close(1000)
        return {"status": answer.get("status"), "extensions": negotiated, "echoed": echoed,
                "received": h2c.received, "text_len": len(text), "close_code": code}
    if name == "idle":
        session = await Session.open(h2c, path)
        assert await echo_round(session, "then quiet")
        started = time.monotonic()
        while time.monotonic() - started < float(args[1]):
            try:
                event = await session.next(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            if event is None:
                break
        code = await session.close(1000)
        return {"pings": session.pings, "close_code": code}
    if name == "first-close":
        # Read raw: wsproto 1.2 takes 1014 (RFC 6455's registry, added
        # after its list was made) for a protocol error.
        session = await Session.open(h2c, path)
        await session.send(Message(data="hi"))
        raw = b""
        events = h2c.streams[session.stream_id].events
        while True:
            event = await asyncio.wait_for(events.get(), 30)
            if isinstance(event, h2.events.DataReceived):
                raw += event.data
            if event is None or isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                break
        return {"code": first_close_code(raw), "stream_ended": isinstance(event, h2.events.StreamEnded)}
    raise SystemExit(f"unknown scenario {name}")


def main() -> None:
    addr, ca, name, *args = sys.argv[1:]
    result = asyncio.run(scenario(addr, ca, name, args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
