#!/usr/bin/env python3
"""Autobahn TestSuite conformance run through wsgate, compared with a direct run.

Starts Node's `ws` echo server (tests/interop/echo-server.js), starts wsgate in
front of it, and runs the selected Autobahn cases with kosoku (a Python 3 runner
of Autobahn's own case files) twice: once straight at the echo server and once
through the gateway. Every case's verdict is compared; the script prints the
verdict counts of both runs and every case whose verdict differs.

Exit status: 0 when every case got the same verdict both ways, 1 when any
differs, 2 when nothing ran or the setup failed, 130 on Ctrl-C.

Everything listens on 127.0.0.1 with OS-assigned ports. Needs Python 3.10+,
node (with tests/interop/node_modules installed) and kosoku (see
requirements.txt); `--venv DIR` re-runs this script with DIR's Python.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ECHO_SERVER = REPO / "tests" / "interop" / "echo-server.js"
DEFAULT_CASES = "1,2,3,4,5,6,7,10"
# Autobahn's behavior verdicts, in the order the table lists them.
VERDICTS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
CLOSE_VERDICTS = ["OK", "INFORMATIONAL", "UNCLEAN", "WRONG CODE", "FAILED BY CLIENT", "FAILED"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run Autobahn cases (kosoku) against the ws echo server directly "
        "and through wsgate, and compare the verdicts.",
    )
    parser.add_argument(
        "--wsgate",
        default=os.environ.get("WSGATE", str(REPO / "target" / "debug" / "wsgate")),
        help="wsgate binary (default: $WSGATE or target/debug/wsgate)",
    )
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help="comma-separated selection: sections (9), ranges of sections (1-7), "
        "prefixes (6.4), case ids (6.4.1) or globs (9.7.*) (default: %(default)s)",
    )
    parser.add_argument(
        "--exclude", default="", help="comma-separated cases to leave out, same syntax"
    )
    parser.add_argument(
        "--venv", help="virtualenv with kosoku; the script re-runs itself with its python"
    )
    parser.add_argument("--node", default="node", help="node executable (default: node)")
    parser.add_argument(
        "--deflate",
        choices=["auto", "on", "off"],
        default="auto",
        help="start the echo server with permessage-deflate: auto = only when a "
        "12.* or 13.* case is selected (default: auto)",
    )
    parser.add_argument(
        "--parallelism", type=int, default=1, help="cases kosoku runs at once (default: 1)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds each of the two runs may take before the script gives up (default: 1800)",
    )
    parser.add_argument(
        "--rust-log", default="debug", help="RUST_LOG for wsgate (default: debug)"
    )
    parser.add_argument(
        "--tls-dir",
        help="run the gateway with TLS: DIR holds site.pem and site-key.pem (for "
        "localhost) and ca.pem; kosoku, which speaks only ws://, reaches the "
        "wss:// listener through a local relay that verifies against ca.pem",
    )
    parser.add_argument(
        "--log-dir",
        help="where the backend/gateway logs and per-case JSON go "
        "(default: a new directory under the system temp dir)",
    )
    return parser.parse_args(argv)


def reexec_in_venv(venv: str) -> None:
    """Run this script again with the venv's python, unless already in it."""
    venv_path = Path(venv).resolve()
    if Path(sys.prefix).resolve() == venv_path:
        return
    python = venv_path / "bin" / "python"
    if not python.exists():
        sys.exit(f"--venv {venv}: no {python}")
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --- case selection ---------------------------------------------------------


def case_sort_key(case_id: str) -> list[int]:
    return [int(part) for part in case_id.split(".")]


def expand(spec: str, all_ids: list[str]) -> list[str]:
    """Case ids matching a comma-separated selection, in suite order."""
    chosen: set[str] = set()
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            continue
        if re.fullmatch(r"\d+-\d+", token):
            low, high = (int(x) for x in token.split("-"))
            matched = {c for c in all_ids if low <= int(c.split(".")[0]) <= high}
        elif any(ch in token for ch in "*?["):
            matched = {c for c in all_ids if fnmatch.fnmatchcase(c, token)}
        else:
            matched = {c for c in all_ids if c == token or c.startswith(token + ".")}
        if not matched:
            raise ValueError(f"--cases/--exclude: {token!r} matches no kosoku case")
        chosen |= matched
    return sorted(chosen, key=case_sort_key)


# --- child processes --------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGTERM if this script dies without cleaning up (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


class Children:
    """Child processes, each in its own session, stopped on exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path, env: dict | None = None):
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                # Ctrl-C reaches only this script, which then stops the children.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for _, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def wait_for_line(proc: subprocess.Popen, log: Path, pattern: str, what: str, timeout=15.0):
    """Wait until `log` has a line matching `pattern`; return the match."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = regex.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s; see {log}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_backend(children: Children, args, deflate: bool, log_dir: Path) -> int:
    if not (ECHO_SERVER.parent / "node_modules" / "ws").is_dir():
        print("installing the echo server's node modules (npm ci)", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ECHO_SERVER.parent, check=True)
    log = log_dir / "backend.log"
    argv = [args.node, str(ECHO_SERVER), "0"] + (["--deflate"] if deflate else [])
    proc = children.start("backend", argv, log)
    return int(wait_for_line(proc, log, r"^listening (\d+)$", "echo server").group(1))


def start_tls_relay(gateway_port: int, ca_file: Path) -> int:
    """A plain TCP port whose connections are carried over verified TLS to the
    gateway, in a thread of its own; returns the port."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    ready: "queue.Queue[int]" = queue.Queue()

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            # TLS has no half-close: the first side to finish ends both.
            writer.close()

    async def relay(client_reader, client_writer):
        try:
            gateway_reader, gateway_writer = await asyncio.open_connection(
                "127.0.0.1", gateway_port, ssl=context, server_hostname="localhost"
            )
        except (ConnectionError, ssl.SSLError) as error:
            print(f"TLS relay cannot reach the gateway: {error}", file=sys.stderr, flush=True)
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, gateway_writer), pipe(gateway_reader, client_writer)
        )

    async def serve():
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    return ready.get(timeout=10)


def start_gateway(children: Children, args, backend_port: int, log_dir: Path) -> int:
    env = dict(os.environ, RUST_LOG=args.rust_log, NO_COLOR="1")
    last_error: Exception | None = None
    # A port picked here could be taken before wsgate binds it; try again then.
    for attempt in range(3):
        port, admin_port = free_port(), free_port()
        config = log_dir / "wsgate.toml"
        tls = ""
        if args.tls_dir:
            tls_dir = Path(args.tls_dir).resolve()
            tls = f'tls = {{ cert = "{tls_dir / "site.pem"}", key = "{tls_dir / "site-key.pem"}" }}'
        config.write_text(
            f"""[[listeners]]
bind = "127.0.0.1:{port}"
{tls}

[admin]
bind = "127.0.0.1:{admin_port}"

[server]
shutdown_timeout = "1s"

[[routes]]
name = "autobahn"
path = "/"
websocket = {{ backends = ["ws://127.0.0.1:{backend_port}"], max_message_size = "64MiB", ping_interval = "0s" }}
"""
        )
        log = log_dir / "wsgate.log"
        proc = children.start("wsgate", [args.wsgate, "--config", str(config)], log, env)
        try:
            wait_for_line(proc, log, rf"listening addr=127\.0\.0\.1:{port}\b", "wsgate")
            return port
        except RuntimeError as error:
            last_error = error
            if proc.poll() is None:
                raise
    raise RuntimeError(f"wsgate did not start: {last_error}")


# --- running and comparing --------------------------------------------------


async def run_cases(url: str, case_ids: list[str], parallelism: int, timeout: float):
    from kosoku import FailureError, run_fuzzingclient

    try:
        return await asyncio.wait_for(
            run_fuzzingclient(url, case_ids, None, concurrency=parallelism), timeout
        )
    except FailureError as failure:
        # Raised when any case did not pass; it carries every case's result.
        return failure.results


def verdicts(results) -> dict[str, tuple[str, str]]:
    return {r.case_id: (r.behavior.value, r.behavior_close.value) for r in results}


def strip_html(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text or "")).strip()


def case_json(result) -> dict:
    return {
        "case": result.case_id,
        "behavior": result.behavior.value,
        "behaviorClose": result.behavior_close.value,
        "result": result.result,
        "resultClose": result.result_close,
        "description": strip_html(result.description),
        "expectation": strip_html(result.expectation),
        "received": repr(result.received),
        "expected": repr(result.expected),
        "remoteCloseCode": result.remote_close_code,
        "remoteCloseReason": result.remote_close_reason,
        "localCloseCode": result.local_close_code,
        "wasClean": result.was_clean,
        "wasNotCleanReason": result.was_not_clean_reason,
        "durationMs": result.duration,
    }


def print_counts(title: str, order: list[str], direct: Counter, gateway: Counter) -> None:
    labels = order + sorted((set(direct) | set(gateway)) - set(order))
    width = max(len(title), *(len(label) for label in labels))
    print(f"{title:<{width}}  {'direct':>7}  {'gateway':>7}")
    for label in labels:
        if direct[label] or gateway[label]:
            print(f"{label:<{width}}  {direct[label]:>7}  {gateway[label]:>7}")
    print(f"{'total':<{width}}  {sum(direct.values()):>7}  {sum(gateway.values()):>7}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.venv:
        reexec_in_venv(args.venv)
    try:
        from kosoku.cases import CASES
    except ImportError:
        print("kosoku is not importable: pip install -r tests/autobahn/requirements.txt, "
              "or pass --venv", file=sys.stderr)
        return 2
    if not Path(args.wsgate).is_file() and not shutil.which(args.wsgate):
        print(f"no wsgate binary at {args.wsgate} (build it, or pass --wsgate)", file=sys.stderr)
        return 2

    all_ids = sorted(CASES, key=case_sort_key)
    try:
        excluded = set(expand(args.exclude, all_ids)) if args.exclude else set()
        case_ids = [c for c in expand(args.cases, all_ids) if c not in excluded]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if not case_ids:
        print("no case selected", file=sys.stderr)
        return 2
    deflate = args.deflate == "on" or (
        args.deflate == "auto" and any(c.split(".")[0] in ("12", "13") for c in case_ids)
    )
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="wsgate-autobahn-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    children = Children()
    started = time.monotonic()
    try:
        backend_port = start_backend(children, args, deflate, log_dir)
        gateway_port = start_gateway(children, args, backend_port, log_dir)
        gateway_url = f"ws://127.0.0.1:{gateway_port}/"
        if args.tls_dir:
            relay_port = start_tls_relay(gateway_port, Path(args.tls_dir) / "ca.pem")
            gateway_url = f"ws://127.0.0.1:{relay_port}/"
        print(
            f"{len(case_ids)} cases; echo server 127.0.0.1:{backend_port}"
            f"{' (permessage-deflate)' if deflate else ''}, wsgate 127.0.0.1:{gateway_port}"
            f"{' over TLS' if args.tls_dir else ''}; logs in {log_dir}",
            flush=True,
        )
        runs = {}
        for name, url in (
            ("direct", f"ws://127.0.0.1:{backend_port}"),
            ("gateway", gateway_url),
        ):
            run_started = time.monotonic()
            try:
                results = asyncio.run(
                    run_cases(url, case_ids, args.parallelism, args.timeout)
                )
            except asyncio.TimeoutError:
                print(f"{name} run did not finish within {args.timeout:.0f}s", file=sys.stderr)
                return 2
            runs[name] = results
            print(f"{name}: {len(results)} cases in {time.monotonic() - run_started:.1f}s", flush=True)
            (log_dir / f"results-{name}.json").write_text(
                json.dumps([case_json(r) for r in results], indent=1)
            )
            for proc_name, proc in children.procs:
                if proc.poll() is not None:
                    print(f"{proc_name} exited (status {proc.returncode}) during the {name} run",
                          file=sys.stderr)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 2
    finally:
        children.stop_all()

    direct, gateway = verdicts(runs["direct"]), verdicts(runs["gateway"])
    missing = ("MISSING", "MISSING")
    print()
    print_counts(
        "verdict",
        VERDICTS,
        Counter(direct.get(c, missing)[0] for c in case_ids),
        Counter(gateway.get(c, missing)[0] for c in case_ids),
    )
    print()
    print_counts(
        "close verdict",
        CLOSE_VERDICTS,
        Counter(direct.get(c, missing)[1] for c in case_ids),
        Counter(gateway.get(c, missing)[1] for c in case_ids),
    )

    by_id = {name: {r.case_id: r for r in results} for name, results in runs.items()}
    # A case missing from either run counts as differing.
    differing = [
        c
        for c in case_ids
        if c not in direct or c not in gateway or direct[c] != gateway[c]
    ]
    print()
    if differing:
        print(f"{len(differing)} case(s) differ (verdict / close verdict):")
        for case in differing:
            d, g = direct.get(case, missing), gateway.get(case, missing)
            print(f"  {case:<8} direct {d[0]} / {d[1]}  ->  gateway {g[0]} / {g[1]}")
            result = by_id["gateway"].get(case) or by_id["direct"].get(case)
            if result is not None:
                print(f"           {strip_html(result.description)[:160]}")
            gw = by_id["gateway"].get(case)
            if gw is not None:
                print(f"           gateway: {gw.result} {gw.result_close} "
                      f"(close code {gw.remote_close_code}, reason {gw.remote_close_reason!r})")
    else:
        print("every case got the same verdict directly and through the gateway")
    bad_baseline = [c for c in case_ids if direct.get(c, missing)[0] in ("FAILED", "ERROR", "MISSING")]
    if bad_baseline:
        print(f"note: {len(bad_baseline)} case(s) did not pass even directly: "
              f"{', '.join(bad_baseline[:20])}{' ...' if len(bad_baseline) > 20 else ''}")
    print(f"\ntook {time.monotonic() - started:.1f}s; logs and per-case JSON in {log_dir}")

    ran = len(runs["direct"]) and len(runs["gateway"])
    if not ran:
        print("no case ran", file=sys.stderr)
        return 2
    return 1 if differing else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop the children, then exit."""


def _terminate(signum, frame):
    raise Terminated


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    # Also when started from a shell that ignores SIGINT (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        status = main(sys.argv[1:])
    except KeyboardInterrupt as interrupt:
        print("interrupted", file=sys.stderr)
        status = 143 if isinstance(interrupt, Terminated) else 130
    except BrokenPipeError:  # stdout went away (e.g. piped into head)
        status = 2
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    # kosoku 0.1.0's native runtime sometimes aborts (SIGABRT) while the
    # interpreter shuts down; leave without finalizing so the status stands.
    os._exit(status)
