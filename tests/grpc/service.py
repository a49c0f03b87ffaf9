#!/usr/bin/env python3
"""A gRPC service and its client, both grpcio (gRPC's C-core), for testing
wsgate's HTTP/2 proxying to gRPC backends end to end.

    service.py serve [--tls CERT KEY]   serves on 127.0.0.1:0 (h2c, or TLS
                                        with ALPN h2); prints `listening PORT`
    service.py client ADDR CA           calls every method through ADDR (a
                                        TLS listener for `localhost` signed by
                                        CA, or with CA `-` a plaintext one, by
                                        h2c); prints one JSON report

Methods take and return raw bytes (identity serializers), so no protobuf
code is generated. /echo.Echo/...:
    Unary     returns the request, with trailing metadata `x-trailer: yes`;
              `not-found` aborts with NOT_FOUND and details
    Collect   client streaming: the requests joined with `+`
    Chat      bidirectional: `re: ` + each request, as it comes
    Slow      waits up to 5 s or until the call is cancelled
    LastSlow  what the last Slow saw: the deadline it was given and whether
              it was cancelled
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "echo.Echo"
last_slow: dict = {}
slow_done = threading.Event()


def unary(request: bytes, context) -> bytes:
    if request == b"not-found":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-trailer", "yes"),))
    return request


def collect(requests, context) -> bytes:
    return b"+".join(requests)


def chat(requests, context):
    for request in requests:
        yield b"re: " + request


def slow(request: bytes, context) -> bytes:
    slow_done.clear()
    remaining = context.time_remaining()
    started = time.monotonic()
    while context.is_active() and time.monotonic() - started < 5:
        time.sleep(0.02)
    last_slow.update(
        deadline=remaining,
        cancelled=not context.is_active(),
        waited=time.monotonic() - started,
    )
    slow_done.set()
    return b"slept"


def last(request: bytes, context) -> bytes:
    slow_done.wait(10)
    return json.dumps(last_slow).encode()


def serve(args: list[str]) -> None:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "LastSlow": grpc.unary_unary_rpc_method_handler(last),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if args[:1] == ["--tls"]:
        cert, key = (open(path, "rb").read() for path in args[1:3])
        credentials = grpc.ssl_server_credentials(((key, cert),))
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


def client(addr: str, ca: str) -> dict:
    if ca == "-":
        channel = grpc.insecure_channel(addr)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options = (("grpc.ssl_target_name_override", "localhost"),)
        channel = grpc.secure_channel(addr, credentials, options=options)
    report: dict = {}
    with channel:
        method = lambda kind, name: getattr(channel, kind)(f"/{SERVICE}/{name}")
        unary_call = method("unary_unary", "Unary")
        reply, call = unary_call.with_call(b"hello grpc", timeout=10)
        report["unary"] = reply.decode()
        report["trailer"] = dict(call.trailing_metadata()).get("x-trailer")
        report["code"] = call.code().name
        big = bytes(range(256)) * 4096
        report["big"] = unary_call(big, timeout=10) == big
        try:
            unary_call(b"not-found", timeout=10)
            report["not_found"] = "no error"
        except grpc.RpcError as error:
            report["not_found"] = [error.code().name, error.details()]
        collected = method("stream_unary", "Collect")(iter([b"a", b"b", b"c"]), timeout=10)
        report["collect"] = collected.decode()
        # Each answer comes before the next request is made: streaming, not
        # one buffered exchange.
        turns = []
        outgoing: list[bytes] = []
        ready = threading.Condition()

        def requests():
            for i in range(5):
                with ready:
                    outgoing.append(f"m{i}".encode())
                yield f"m{i}".encode()
                with ready:
                    ready.wait_for(lambda: len(turns) > i, timeout=10)

        for answer in method("stream_stream", "Chat")(requests(), timeout=10):
            with ready:
                turns.append(answer.decode())
                ready.notify_all()
        report["chat"] = turns
        started = time.monotonic()
        try:
            method("unary_unary", "Slow")(b"", timeout=0.5)
            report["slow"] = "no error"
        except grpc.RpcError as error:
            report["slow"] = error.code().name
        report["slow_after"] = time.monotonic() - started
        report["slow_seen"] = json.loads(method("unary_unary", "LastSlow")(b"", timeout=10))
        # Many calls at once share the gateway's connection to the backend.
        with futures.ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda i: unary_call(f"c{i}".encode(), timeout=10), range(100)))
        report["concurrent_ok"] = sum(r == f"c{i}".encode() for i, r in enumerate(results))
    return report


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "serve":
        serve(args)
    elif mode == "client":
        print(json.dumps(client(*args)), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
