#!/usr/bin/env python3
"""Measurement half of bench/websocket.sh (Python 3.11 stdlib only).

bench/websocket.sh installs nginx, builds wsgate and wsload, writes the
configs and starts the servers; this file picks free ports, drives wsload
(examples/wsload.rs) and reads the servers' CPU time and RSS from /proc:

    websocket_bench.py ports N
        print N free loopback TCP ports, one per line
    websocket_bench.py probe PORT
        exit 0 when 127.0.0.1:PORT accepts a TCP connection
    websocket_bench.py idle --server NAME:PORT:TLSPORT:PID ... --round R [options]
        on freshly started gateways: check echoes, then RSS with N idle
        sessions open minus RSS before; appends to --results
    websocket_bench.py run --server NAME:PORT:TLSPORT:PID ... [options]
        check echoes through every path, run the interleaved rounds (echo
        64 B and 4 KiB, 64 B over wss, 1 MiB bulk against the backend
        directly as well, handshakes over ws and wss), then one counting
        round under `perf stat` (system calls and context switches), and
        print every round and the medians with the issue's targets, plus
        the idle results from --results

The first --server is the one under test; the others are references
(nginx, HAProxy), and every ratio is printed as first/reference. TLSPORT
is where the server terminates TLS (0: none). CPU time is utime and stime
of a server's whole process tree (nginx: master and workers), read when
wsload prints `start` and `done`, so connection setup and the closing
handshakes after the window are not counted. The counting round's CPU is
not used: perf's tracepoint costs a little per system call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import bench_common
from bench_common import (CLK_TCK, cpu_split_seconds, cpu_split_ticks, fmt_ratio, median,
                          print_free_ports, print_head, ratio, round_order, rss_kib, warn)

BULK_SIZE = 1 << 20

# Echo kinds: (kind, message size, over TLS).
ECHOES = [("echo64", 64, False), ("echo4096", 4096, False), ("wss64", 64, True)]
# Handshake kinds: (kind, over TLS, wsload's extra options). `wssresumed`
# is `wsshandshakes` with each loop resuming its last TLS session (a
# returning browser): what session tickets save.
HANDSHAKES = [("handshakes", False, ()), ("wsshandshakes", True, ()),
              ("wssresumed", True, ("--resume", "1"))]
# WebSockets as streams of one HTTP/2 connection (RFC 8441), each against
# its HTTP/1.1-over-TLS twin. Only the server under test runs them: nginx
# has no RFC 8441.
H2_ECHO, H2_HANDSHAKES = "h2ws64", "h2handshakes"
H2_TWINS = {H2_ECHO: "wss64", H2_HANDSHAKES: "wsshandshakes"}
ALL_KINDS = [*(k for k, _, _ in ECHOES), "bulk", *(k for k, _, _ in HANDSHAKES),
             H2_ECHO, H2_HANDSHAKES]

# The targets: CPU per unit of work as a ratio to one reference
# (kind -> (reference name, at most)), bulk throughput against the direct
# path, and RSS per idle session.
TARGET_CPU = {
    "echo64": ("nginx", 0.9),
    "handshakes": ("nginx", 0.9),
    "wss64": ("nginx", 0.9),
    "echo4096": ("haproxy", 0.8),
    # Issue 23: full and resumed TLS + WebSocket handshakes.
    "wsshandshakes": ("nginx", 0.6),
    "wssresumed": ("nginx", 0.5),
}
TARGET_BULK_RATIO = 0.9
# An RFC 8441 session against a new wss:// one: CPU per message and to set up.
TARGET_H2 = {H2_ECHO: 1.2, H2_HANDSHAKES: 0.3}
TARGET_IDLE_KIB = 2.0
# The table, measured on this kind of machine before this round
# (CPU us per message or handshake, KiB per idle session).
REFERENCE = {
    "echo64": {"nginx": 13.7, "haproxy": 15.2, "wsgate": 16.2},
    "handshakes": {"nginx": 114, "haproxy": 114, "wsgate": 170},
    "wss64": {"nginx": 18.6, "haproxy": 23.3, "wsgate": 25.1},
    "echo4096": {"nginx": 28.3, "haproxy": 17.6, "wsgate": 16.5},
    "wsshandshakes": {"nginx": 499, "haproxy": 636, "wsgate": 367},
    "idle": {"nginx": 18.2, "haproxy": 4.7, "wsgate": 4.5},
}
LABELS = {
    "echo64": "64 B echo",
    "echo4096": "4 KiB echo",
    "wss64": "64 B echo over wss",
    "handshakes": "ws handshake",
    "wsshandshakes": "wss handshake (TLS + upgrade)",
    "wssresumed": "wss handshake, TLS resumed",
    H2_ECHO: "64 B echo over h2 streams (RFC 8441)",
    H2_HANDSHAKES: "h2 session (CONNECT on an open connection)",
}


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def say(msg: str = "") -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------
# ports

def probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# /proc readers

def machine_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of all CPUs from /proc/stat: busy is user, nice,
    system, irq and softirq; steal is time the hypervisor gave elsewhere."""
    with open("/proc/stat") as f:
        cols = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = cols[:8]
    return user + nice + system + irq + softirq, steal


def established(port: int) -> int:
    """ESTABLISHED TCP sockets whose local port is `port`: the sessions a
    server on that port holds (its clients' sockets have it as remote port)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # header
                for line in f:
                    cols = line.split()
                    if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        count += 1
        except OSError:
            pass
    return count


# --------------------------------------------------------------------------
# servers

@dataclass
class Server(bench_common.Server):
    tls_port: int = 0

    @classmethod
    def parse_server(cls, spec: str) -> Server:
        """NAME:PORT:TLSPORT:PID, as given to --server and --backend."""
        name, port, tls_port, pid = spec.split(":")
        return cls(name, int(port), int(pid), int(tls_port))

    def url(self, tls: bool = False) -> str:
        if tls:
            return f"wss://127.0.0.1:{self.tls_port}/bench"
        return f"ws://127.0.0.1:{self.port}/bench"


# --------------------------------------------------------------------------
# wsload

@dataclass
class Load:
    """One wsload run: its key=value results, the (user, system) CPU
    seconds each watched process tree spent between its `start` and `done`
    markers, and, under perf, each tree's system calls and context switches."""
    values: dict[str, str]
    cpu: dict[str, tuple[float, float]]
    wall: float
    # CPU seconds of every process on the machine, and stolen seconds,
    # over the same window: what else competed for the cores.
    machine_busy_s: float = math.nan
    steal_s: float = math.nan
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    def num(self, key: str) -> float:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return math.nan

    def cpu_total(self, name: str) -> float:
        user, system = self.cpu.get(name, (math.nan, math.nan))
        return user + system


class Counter:
    """`perf stat` counting system calls and context switches of one
    process tree, from start() to stop(). Counts are scaled to the whole
    window from perf's own running time, since attaching takes a moment."""
    EVENTS = "raw_syscalls:sys_enter,context-switches"

    def __init__(self, pids: list[int]):
        self.out = tempfile.NamedTemporaryFile("r", suffix=".perf", delete=False)
        self.proc = subprocess.Popen(
            ["perf", "stat", "-x", ",", "-e", self.EVENTS, "-o", self.out.name,
             "-p", ",".join(map(str, pids))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, window_s: float) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        counts = {}
        with open(self.out.name) as f:
            for line in f:
                cols = line.strip().split(",")
                if len(cols) < 4 or not cols[0].replace(".", "").isdigit():
                    continue
                value, event, running_ns = float(cols[0]), cols[2], float(cols[3] or 0)
                scale = window_s / (running_ns / 1e9) if running_ns else math.nan
                key = "syscalls" if event.startswith("raw_syscalls") else "context_switches"
                counts[key] = value * scale
        os.unlink(self.out.name)
        return counts


def wsload(args: argparse.Namespace, mode: str, url: str, options: list[str],
           watch: list[Server], on_ready=None, timeout: float = 300,
           count: bool = False) -> Load:
    """Runs wsload, reading CPU ticks of `watch` (and of wsload itself)
    when it prints `start` and `done`; calls on_ready() at `ready`. With
    `count`, perf stat counts the watched trees' system calls meanwhile."""
    cmd = [args.wsload, mode, "--url", url, *options]
    if url.startswith("wss:"):
        cmd += ["--ca", args.ca]
    if args.wsload_threads:
        cmd += ["--threads", str(args.wsload_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    # A hung run must not hang the benchmark.
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    trees: dict[str, list[int]] = {}
    before: dict[str, dict[int, tuple[int, int]]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    values: dict[str, str] = {}
    counters: dict[str, Counter] = {}
    counts: dict[str, dict[str, float]] = {}
    t_start = t_done = math.nan
    machine = (math.nan, math.nan)
    m_before = (0, 0)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line == "start":
                # The trees are read once, before the window: nginx forks no
                # workers mid-run, and a walk of /proc would cost time inside it.
                trees = {s.name: s.pids() for s in watch}
                if count:
                    counters = {s.name: Counter(trees[s.name]) for s in watch}
                trees["wsload"] = [proc.pid]
                before = {k: cpu_split_ticks(p) for k, p in trees.items()}
                m_before = machine_ticks()
                t_start = time.monotonic()
            elif line == "done":
                t_done = time.monotonic()
                cpu = {k: cpu_split_seconds(before[k], cpu_split_ticks(p))
                       for k, p in trees.items()}
                m_after = machine_ticks()
                machine = ((m_after[0] - m_before[0]) / CLK_TCK,
                           (m_after[1] - m_before[1]) / CLK_TCK)
                counts = {k: c.stop(t_done - t_start) for k, c in counters.items()}
                counters = {}
            elif line == "ready":
                if on_ready:
                    on_ready()
            elif "=" in line:
                key, value = line.split("=", 1)
                values[key] = value
        rc = proc.wait()
    finally:
        killer.cancel()
        for c in counters.values():
            c.stop(1.0)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {rc}")
    return Load(values, cpu, t_done - t_start, *machine, counts=counts)


def url_of(target: Server, backend: Server, tls: bool = False) -> str:
    # The backend echoes on any path; the gateways forward the path as is.
    return target.url(tls) if target is not backend else f"ws://127.0.0.1:{backend.port}/bench"


def check_paths(targets: list[Server], backend: Server,
                args: argparse.Namespace) -> None:
    """Refuse to benchmark a path that does not echo, and make sure the
    gateways really relay: their CPU and the backend's must move."""
    for t in targets:
        via_gateway = t is not backend
        watch = [t, backend] if via_gateway else [backend]
        for kind, size, tls in ECHOES:
            if tls and not via_gateway:
                continue
            load = wsload(args, "echo", url_of(t, backend, tls),
                          ["--connections", "4", "--size", str(size), "--seconds", "1"],
                          watch)
            n, sent = load.num("messages"), load.num("sent")
            if load.num("errors") != 0 or not n > 0 or n != sent:
                sys.exit(f"echo check failed through {t.name} ({kind}): {load.values}")
            if load.cpu_total(backend.name) <= 0 or (via_gateway and load.cpu_total(t.name) <= 0):
                sys.exit(f"echo check through {t.name}: no CPU time in "
                         f"{'the gateway or ' if via_gateway else ''}the backend; "
                         f"is traffic going where it should? {load.cpu}")
        load = wsload(args, "bulk", url_of(t, backend),
                      ["--count", "8", "--size", str(BULK_SIZE), "--window", "2"], watch)
        if load.num("errors") != 0 or load.num("messages") != 8:
            sys.exit(f"1 MiB echo check failed through {t.name}: {load.values}")
        for kind, tls, extra in HANDSHAKES:
            if tls and not via_gateway:
                continue
            load = wsload(args, "handshakes", url_of(t, backend, tls),
                          ["--connections", "4", "--seconds", "0.5", *extra], watch)
            if load.num("errors") != 0 or not load.num("handshakes") > 0:
                sys.exit(f"{kind} check failed through {t.name}: {load.values}")
            if extra and not load.num("resumed") > 0:
                sys.exit(f"{kind} check through {t.name}: no TLS session resumed: {load.values}")
    say(f"echo check: 64 B, 4 KiB, 64 B over wss and 1 MiB messages echoed byte for byte "
        f"and handshakes (ws, wss, wss resumed) closed cleanly via {', '.join(t.name for t in targets)}")


def sanity(load: Load, what: str, expect_connections: int | None = None) -> list[str]:
    """Problems that make a run's figures suspect."""
    problems = []
    if load.num("errors") != 0:
        problems.append(f"{load.values.get('errors')} errors")
    if "sent" in load.values and load.num("sent") != load.num("messages"):
        problems.append(f"sent {load.values['sent']} but {load.values['messages']} echoes came back")
    if expect_connections is not None and load.num("connections_open") != expect_connections:
        problems.append(f"only {load.values.get('connections_open')} of "
                        f"{expect_connections} connections opened")
    for p in problems:
        warn(f"{what}: {p}")
    return problems


# --------------------------------------------------------------------------
# measurements

@dataclass
class Row:
    """One measured run of one kind, for one target, in one round (round 0:
    the counting round under perf)."""
    kind: str  # echo64 | echo4096 | wss64 | bulk | handshakes | wsshandshakes | idle
    target: str
    round: int
    rate: float = math.nan  # msgs/s, MB/s, handshakes/s
    ops: float = math.nan  # messages, MiB, handshakes in the window
    seconds: float = math.nan
    p50_us: float = math.nan
    p99_us: float = math.nan
    gw_user_s: float = math.nan
    gw_sys_s: float = math.nan
    backend_cpu_s: float = math.nan
    wsload_cpu_s: float = math.nan
    others_cpu_s: float = math.nan  # every other process on the machine
    steal_s: float = math.nan
    syscalls: float = math.nan  # counting round only
    context_switches: float = math.nan
    # idle only
    rss_before_kib: float = math.nan
    rss_with_kib: float = math.nan
    rss_after_kib: float = math.nan
    sessions: float = math.nan
    backend_sessions: float = math.nan
    open_seconds: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def gw_cpu_s(self) -> float:
        return self.gw_user_s + self.gw_sys_s

    def per_op(self, value: float, scale: float = 1e6) -> float:
        return value * scale / self.ops if self.ops else math.nan

    @property
    def cpu_us_per_op(self) -> float:
        return self.per_op(self.gw_cpu_s)

    def cores(self, cpu_s: float) -> float:
        return cpu_s / self.seconds if self.seconds else math.nan

    @property
    def kib_per_session(self) -> float:
        return (self.rss_with_kib - self.rss_before_kib) / self.sessions \
            if self.sessions else math.nan


def fill_cpu(row: Row, load: Load, target: Server, backend: Server) -> None:
    # The window as wsload timed it; CPU as read at its markers.
    if target is not backend:
        row.gw_user_s, row.gw_sys_s = load.cpu.get(target.name, (math.nan, math.nan))
    row.backend_cpu_s = load.cpu_total(backend.name)
    row.wsload_cpu_s = load.cpu_total("wsload")
    ours = sum(u + s for u, s in load.cpu.values())
    row.others_cpu_s = max(0.0, load.machine_busy_s - ours)
    row.steal_s = load.steal_s
    counted = load.counts.get(target.name, {})
    row.syscalls = counted.get("syscalls", math.nan)
    row.context_switches = counted.get("context_switches", math.nan)


def measure_echo(target: Server, backend: Server, kind: str, size: int, tls: bool,
                 rnd: int, args: argparse.Namespace, extra: tuple[str, ...] = ()) -> Row:
    load = wsload(args, "echo", url_of(target, backend, tls),
                  ["--connections", str(args.echo_connections), "--size", str(size),
                   "--seconds", str(args.duration), *extra], [target, backend], count=rnd == 0)
    row = Row(kind, target.name, rnd, rate=load.num("msgs_per_sec"),
              ops=load.num("messages"), seconds=load.num("seconds"),
              p50_us=load.num("p50_us"), p99_us=load.num("p99_us"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} {kind} via {target.name}",
                          args.echo_connections)
    return row


def measure_bulk(target: Server, backend: Server, rnd: int,
                 args: argparse.Namespace) -> Row:
    load = wsload(args, "bulk", url_of(target, backend),
                  ["--size", str(BULK_SIZE), "--count", str(args.bulk_count),
                   "--window", str(args.bulk_window)],
                  [target, backend] if target is not backend else [backend])
    row = Row("bulk", target.name, rnd, rate=load.num("mb_per_sec"),
              ops=load.num("bytes") / BULK_SIZE, seconds=load.num("seconds"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} bulk via {target.name}", 1)
    if load.num("messages") != args.bulk_count:
        row.problems.append("short")
        warn(f"round {rnd} bulk via {target.name}: {load.values.get('messages')} "
             f"of {args.bulk_count} echoes")
    return row


def measure_handshakes(target: Server, backend: Server, kind: str, tls: bool, rnd: int,
                       args: argparse.Namespace, extra: tuple[str, ...] = ()) -> Row:
    load = wsload(args, "handshakes", url_of(target, backend, tls),
                  ["--connections", str(args.hs_connections), "--seconds", str(args.duration),
                   *extra], [target, backend], count=rnd == 0)
    row = Row(kind, target.name, rnd, rate=load.num("handshakes_per_sec"),
              ops=load.num("handshakes"), seconds=load.num("seconds"),
              p50_us=load.num("p50_us"), p99_us=load.num("p99_us"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} {kind} via {target.name}")
    if "--resume" in extra:
        # A loop's first connection is full; nearly all others must resume,
        # or the row measures full handshakes under another name.
        share = ratio(load.num("resumed"), row.ops)
        if not share >= 0.95:
            row.problems.append("few resumed")
            warn(f"round {rnd} {kind} via {target.name}: only {fmt_ratio(share)} of the "
                 "TLS handshakes resumed")
    return row


def measure_idle(target: Server, backend: Server, rnd: int,
                 args: argparse.Namespace) -> Row:
    row = Row("idle", target.name, rnd, sessions=args.connections)
    # Let connections from the check finish closing, then read the baseline.
    time.sleep(1.0)
    row.rss_before_kib = rss_kib(target.pids())

    def on_ready() -> None:
        time.sleep(args.settle)  # let the last handshakes' buffers go
        row.rss_with_kib = rss_kib(target.pids())
        row.backend_sessions = established(backend.port)

    load = wsload(args, "idle", target.url(),
                  ["--connections", str(args.connections),
                   "--hold-seconds", str(args.settle + 2)],
                  [target], on_ready=on_ready)
    time.sleep(0.5)
    row.rss_after_kib = rss_kib(target.pids())
    row.open_seconds = load.num("open_seconds")
    row.problems = sanity(load, f"round {rnd} idle via {target.name}", args.connections)
    if load.num("still_open") != args.connections:
        row.problems.append("sessions lost")
        warn(f"round {rnd} idle via {target.name}: {load.values.get('still_open')} "
             f"of {args.connections} sessions still open at the end")
    # The proof that the gateway relays rather than answers: every session
    # has its own connection to the backend.
    if not row.backend_sessions >= args.connections:
        row.problems.append("backend sessions missing")
        warn(f"round {rnd} idle via {target.name}: the backend held only "
             f"{row.backend_sessions:.0f} sessions for {args.connections} clients")
    if not target.alive():
        sys.exit(f"{target.name} (pid {target.pid}) died during the idle test")
    return row


# --------------------------------------------------------------------------
# formatting

def verdict(value: float, limit: float, at_most: bool) -> str:
    if math.isnan(value):
        return "n/a"
    return "met" if (value <= limit if at_most else value >= limit) else "MISSED"


def f(v: float, width: int, digits: int = 0) -> str:
    return f"{'n/a':>{width}}" if math.isnan(v) else f"{v:{width}.{digits}f}"


def rows_of(rows: list[Row], kind: str, target: str, counting: bool = False) -> list[Row]:
    return [r for r in rows if r.kind == kind and r.target == target
            and (r.round == 0) == counting]


def med(rows: list[Row], kind: str, target: str, fn, counting: bool = False) -> float:
    return median([fn(r) for r in rows_of(rows, kind, target, counting)])


def cores_part(r: Row) -> str:
    """Who kept the 2 cores busy during the window (CPU s per wall s)."""
    c = r.cores
    return (f"cores: gw {f(c(r.gw_cpu_s), 4, 2)} backend {f(c(r.backend_cpu_s), 4, 2)} "
            f"wsload {f(c(r.wsload_cpu_s), 4, 2)} others {f(c(r.others_cpu_s), 4, 2)} "
            f"steal {f(c(r.steal_s), 4, 2)}")


def round_line(r: Row) -> str:
    label = "count" if r.round == 0 else f"round {r.round}"
    if r.kind == "bulk":
        return (f"  {label} bulk 1 MiB  {r.target:8} {f(r.rate, 8, 1)} MB/s   "
                f"{f(r.cpu_us_per_op, 6, 0)} CPU us/MiB  {f(r.seconds, 5, 2)} s  "
                f"{'':14}{cores_part(r)}")
    if r.kind == "idle":
        return (f"  {label} idle {int(r.sessions)} {r.target:8} RSS "
                f"{r.rss_before_kib / 1024:7.1f} -> {r.rss_with_kib / 1024:7.1f} MiB "
                f"({f(r.kib_per_session, 5, 2)} KiB/session, after close "
                f"{r.rss_after_kib / 1024:.1f} MiB)  backend sessions {r.backend_sessions:.0f}  "
                f"opened in {r.open_seconds:.2f} s")
    unit = "msg" if r.kind in {k for k, _, _ in ECHOES} else "hs"
    counted = ""
    if r.round == 0:
        counted = (f"  syscalls/{unit} {f(r.per_op(r.syscalls, 1), 5, 2)}"
                   f"  ctxsw/{unit} {f(r.per_op(r.context_switches, 1), 5, 2)}")
    return (f"  {label} {r.kind:13} {r.target:8} {f(r.rate, 8)} {unit}/s  "
            f"{f(r.cpu_us_per_op, 6, 2)} CPU us/{unit} (user {f(r.per_op(r.gw_user_s), 5, 2)}"
            f" sys {f(r.per_op(r.gw_sys_s), 5, 2)})  p50 {f(r.p50_us, 6)} us  "
            f"p99 {f(r.p99_us, 6)} us  {cores_part(r)}{counted}")


def save(path: str, rows: list[Row]) -> None:
    with open(path, "a") as out:
        for r in rows:
            out.write(json.dumps(asdict(r)) + "\n")


def load_rows(path: str) -> list[Row]:
    rows = []
    try:
        with open(path) as f_in:
            for line in f_in:
                rows.append(Row(**json.loads(line)))
    except FileNotFoundError:
        pass
    return rows


# --------------------------------------------------------------------------
# summary

def print_summary(rows: list[Row], servers: list[Server], backend: Server,
                  args: argparse.Namespace) -> None:
    test, refs = servers[0].name, [s.name for s in servers[1:]]
    names = [s.name for s in servers]
    targets_met: list[str] = []
    cpu_op = lambda r: r.cpu_us_per_op  # noqa: E731
    timed_rounds = len({r.round for r in rows if r.round > 0 and r.kind != "idle"})

    def table(kind: str, unit: str, what: str) -> None:
        if not any(r.kind == kind for r in rows):
            return
        say()
        say(f"{LABELS[kind]}: {what}; medians over {timed_rounds} rounds of "
            f"{args.duration} s (syscalls and context switches: the counting round)")
        head = (f"{'server':13} {unit + '/s':>8} {'p50 us':>8} {'p99 us':>8} "
                f"{'CPU us/' + unit:>10} {'user':>6} {'sys':>6} {'syscalls':>8} "
                f"{'ctxsw':>6}   {'cores: gw':>9} {'backend':>7} {'wsload':>6}   issue's table")
        print_head(head)
        cpu = {}
        for n in names:
            cpu[n] = med(rows, kind, n, cpu_op)
            before = REFERENCE.get(kind, {}).get(n)
            say(f"{n:13} {f(med(rows, kind, n, lambda r: r.rate), 8)} "
                f"{f(med(rows, kind, n, lambda r: r.p50_us), 8)} "
                f"{f(med(rows, kind, n, lambda r: r.p99_us), 8)} {f(cpu[n], 10, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.per_op(r.gw_user_s)), 6, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.per_op(r.gw_sys_s)), 6, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.per_op(r.syscalls, 1), True), 8, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.per_op(r.context_switches, 1), True), 6, 2)}   "
                f"{f(med(rows, kind, n, lambda r: r.cores(r.gw_cpu_s)), 9, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.cores(r.backend_cpu_s)), 7, 2)} "
                f"{f(med(rows, kind, n, lambda r: r.cores(r.wsload_cpu_s)), 6, 2)}   "
                f"{'' if before is None else before}")
        for ref in refs:
            rel = ratio(cpu[test], cpu[ref])
            line = f"{test + '/' + ref:13} CPU per {unit} {fmt_ratio(rel)}"
            target = TARGET_CPU.get(kind)
            if target and target[0] == ref:
                line += f"   target <= {target[1]:.1f}x: {verdict(rel, target[1], True)}"
                targets_met.append(f"{LABELS[kind]:30} CPU {test}/{ref} {fmt_ratio(rel):>6}  "
                                   f"(target <= {target[1]:.1f}x)  "
                                   f"{verdict(rel, target[1], True)}")
            say(line)

    for kind, size, tls in ECHOES:
        table(kind, "msg", f"{args.echo_connections} connections, one message in flight "
              "each (closed loop)")

    if any(r.kind == "bulk" for r in rows):
        say()
        say(f"1 MiB messages: 1 connection, {args.bulk_window} in flight, "
            f"{args.bulk_count} messages; medians over {timed_rounds} rounds "
            "('vs direct': median of each round's ratio to that round's direct run)")
        head = (f"{'path':13} {'MB/s':>8} {'vs direct':>9} {'gw CPU us/MiB':>13}   "
                f"{'cores: gw':>9} {'backend':>7} {'wsload':>6}")
        print_head(head)
        # Each round's rate over the same round's direct rate, then the median:
        # the runs of a round are seconds apart, so they share the machine's
        # mood, which rounds minutes apart need not.
        direct = {r.round: r.rate for r in rows if r.kind == "bulk" and r.target == backend.name}
        for n in [backend.name, *names]:
            rel = median([ratio(r.rate, direct.get(r.round, math.nan))
                          for r in rows_of(rows, "bulk", n)])
            label = "direct" if n == backend.name else n
            note = ""
            if n == test:
                note = f"   target >= {TARGET_BULK_RATIO:.1f}x: {verdict(rel, TARGET_BULK_RATIO, False)}"
                targets_met.append(f"{'1 MiB messages':30} MB/s {test}/direct {fmt_ratio(rel):>6}  "
                                   f"(target >= {TARGET_BULK_RATIO:.1f}x)  "
                                   f"{verdict(rel, TARGET_BULK_RATIO, False)}")
            say(f"{label:13} {f(med(rows, 'bulk', n, lambda r: r.rate), 8, 1)} {fmt_ratio(rel):>9} "
                f"{f(med(rows, 'bulk', n, cpu_op), 13, 0)}   "
                f"{f(med(rows, 'bulk', n, lambda r: r.cores(r.gw_cpu_s)), 9, 2)} "
                f"{f(med(rows, 'bulk', n, lambda r: r.cores(r.backend_cpu_s)), 7, 2)} "
                f"{f(med(rows, 'bulk', n, lambda r: r.cores(r.wsload_cpu_s)), 6, 2)}{note}")

    for kind, tls, extra in HANDSHAKES:
        resumed = "resumed TLS handshake (the loop's last session), " if extra else ""
        full = "TLS handshake, " if tls and not extra else ""
        table(kind, "hs", f"{args.hs_connections} loops of connect, {full}{resumed}"
              "upgrade, close frame, wait for close and EOF")

    if any(r.kind in H2_TWINS for r in rows):
        say()
        say(f"WebSockets over HTTP/2 (RFC 8441), {test} only: {args.echo_connections} echo "
            f"sessions or {args.hs_connections} open/close loops as streams of ONE TLS "
            "connection, against the same over HTTP/1.1 and TLS (one connection each); "
            f"medians over {timed_rounds} rounds")
        head = (f"{'run':44} {'op/s':>8} {'p50 us':>8} {'p99 us':>8} {'CPU us/op':>10} "
                f"{'user':>6} {'sys':>6} {'syscalls':>8} {'ctxsw':>6}")
        print_head(head)
        for h2_kind, twin in H2_TWINS.items():
            for kind in (twin, h2_kind):
                say(f"{LABELS[kind]:44} {f(med(rows, kind, test, lambda r: r.rate), 8)} "
                    f"{f(med(rows, kind, test, lambda r: r.p50_us), 8)} "
                    f"{f(med(rows, kind, test, lambda r: r.p99_us), 8)} "
                    f"{f(med(rows, kind, test, cpu_op), 10, 2)} "
                    f"{f(med(rows, kind, test, lambda r: r.per_op(r.gw_user_s)), 6, 2)} "
                    f"{f(med(rows, kind, test, lambda r: r.per_op(r.gw_sys_s)), 6, 2)} "
                    f"{f(med(rows, kind, test, lambda r: r.per_op(r.syscalls, 1), True), 8, 2)} "
                    f"{f(med(rows, kind, test, lambda r: r.per_op(r.context_switches, 1), True), 6, 2)}")
            rel = ratio(med(rows, h2_kind, test, cpu_op), med(rows, twin, test, cpu_op))
            limit = TARGET_H2[h2_kind]
            say(f"{'h2/h1 CPU per op':44} {fmt_ratio(rel)}   target <= {limit:.1f}x: "
                f"{verdict(rel, limit, True)}")
            targets_met.append(f"{LABELS[h2_kind][:30]:30} CPU h2/h1 {fmt_ratio(rel):>6}  "
                               f"(target <= {limit:.1f}x)  {verdict(rel, limit, True)}")

    if any(r.kind == "idle" for r in rows):
        say()
        idle_rounds = len({r.round for r in rows if r.kind == "idle"})
        say(f"Idle sessions: {args.idle_connections} per gateway on freshly started processes "
            f"(nginx: master + workers); medians over {idle_rounds} rounds")
        head = (f"{'server':13} {'RSS before MiB':>14} {'with MiB':>9} {'KiB/session':>11} "
                f"{'backend sessions':>16}   issue's table")
        print_head(head)
        kib = {}
        for n in names:
            kib[n] = med(rows, "idle", n, lambda r: r.kib_per_session)
            before = REFERENCE["idle"].get(n)
            say(f"{n:13} {f(med(rows, 'idle', n, lambda r: r.rss_before_kib) / 1024, 14, 1)} "
                f"{f(med(rows, 'idle', n, lambda r: r.rss_with_kib) / 1024, 9, 1)} {f(kib[n], 11, 2)} "
                f"{f(med(rows, 'idle', n, lambda r: r.backend_sessions), 16)}   "
                f"{'' if before is None else before}")
        say(f"{test:13} {'':14} {'':9} target <= {TARGET_IDLE_KIB:.0f} KiB: "
            f"{verdict(kib[test], TARGET_IDLE_KIB, True)}")
        targets_met.append(f"{'RSS per idle session':30} {f(kib[test], 0, 2).strip()} KiB  "
                           f"(target <= {TARGET_IDLE_KIB:.0f} KiB)  "
                           f"{verdict(kib[test], TARGET_IDLE_KIB, True)}")

    say()
    say(f"Targets for {test} (medians):")
    for line in targets_met:
        say(f"  {line}")
    problems = [r for r in rows if r.problems]
    if problems:
        say(f"{len(problems)} runs had problems (see the warnings above); "
            "their figures are suspect")
    timed = [r for r in rows if r.kind != "idle"]
    say(f"(cores = CPU seconds per wall second of the measured window, for the gateway, "
        f"the echo backend, wsload itself, all other processes, and time the hypervisor "
        f"stole; the machine has {os.cpu_count()} cores in all. Over all windows: others "
        f"median {f(median([r.cores(r.others_cpu_s) for r in timed]), 0, 2).strip()}, "
        f"max {f(max([r.cores(r.others_cpu_s) for r in timed], default=math.nan), 0, 2).strip()}; "
        f"steal median {f(median([r.cores(r.steal_s) for r in timed]), 0, 2).strip()} cores)")


# --------------------------------------------------------------------------
# subcommands

def cmd_idle(args: argparse.Namespace) -> None:
    servers, backend = args.server, args.backend
    say(f"Idle round {args.round}: RSS with {args.connections} open sessions "
        "(CPU and RSS of whole process trees)")
    order = round_order(servers, args.round)
    check_paths(order, backend, args)
    rows = []
    for s in order:
        row = measure_idle(s, backend, args.round, args)
        rows.append(row)
        say(round_line(row))
    save(args.results, rows)


def cmd_run(args: argparse.Namespace) -> None:
    servers, backend = args.server, args.backend
    check_paths([backend, *servers], backend, args)
    if args.kinds & set(H2_TWINS):
        load = wsload(args, "echo", url_of(servers[0], backend, True),
                      ["--connections", "4", "--seconds", "1", "--h2", "1"], [servers[0], backend])
        if load.num("errors") != 0 or not load.num("messages") > 0:
            sys.exit(f"h2 echo check failed through {servers[0].name}: {load.values}")
    say(f"Rounds (echo and handshake runs {args.duration} s each; "
        "CPU = utime+stime of the server's whole process tree):")
    rows: list[Row] = []

    def keep(row: Row) -> None:
        rows.append(row)
        say(round_line(row))
        for s in servers + [backend]:
            if not s.alive():
                sys.exit(f"{s.name} (pid {s.pid}) died during the run")

    counting = shutil.which("perf") is not None
    if not counting:
        warn("perf is not installed: no system call or context switch counts")
    # Round 0, last: the counting round, under perf.
    for rnd in [*range(1, args.rounds + 1), *([0] if counting else [])]:
        order = round_order(servers, max(rnd, 1))
        for kind, size, tls in ECHOES:
            if kind not in args.kinds:
                continue
            for s in order:
                keep(measure_echo(s, backend, kind, size, tls, rnd, args))
        if rnd > 0 and "bulk" in args.kinds:
            bulk_order = [backend, *order]
            k = rnd % len(bulk_order)
            for t in bulk_order[k:] + bulk_order[:k]:
                keep(measure_bulk(t, backend, rnd, args))
        for kind, tls, extra in HANDSHAKES:
            if kind not in args.kinds:
                continue
            for s in order:
                keep(measure_handshakes(s, backend, kind, tls, rnd, args, extra))
        # After their HTTP/1.1 twins, on the server under test only.
        h2 = ("--h2", "1")
        if H2_ECHO in args.kinds:
            keep(measure_echo(servers[0], backend, H2_ECHO, 64, True, rnd, args, h2))
        if H2_HANDSHAKES in args.kinds:
            keep(measure_handshakes(servers[0], backend, H2_HANDSHAKES, True, rnd, args, h2))
    save(args.results, rows)
    print_summary(load_rows(args.results), servers, backend, args)


def main() -> None:
    p, sub = bench_common.arg_parser(__doc__)
    pr = sub.add_parser("probe", help="exit 0 when the port accepts")
    pr.add_argument("port", type=int)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--wsload", required=True, help="the wsload binary")
        sp.add_argument("--wsload-threads", type=int, default=0)
        sp.add_argument("--ca", required=True, help="PEM file the servers' certificate is in")
        sp.add_argument("--server", action="append", type=Server.parse_server, required=True,
                        help="NAME:PORT:TLSPORT:PID (the one under test first)")
        sp.add_argument("--backend", type=Server.parse_server, required=True,
                        help="NAME:PORT:0:PID")
        sp.add_argument("--results", required=True, help="JSON lines file, appended to")

    idle = sub.add_parser("idle", help="RSS per idle session, one round")
    common(idle)
    idle.add_argument("--round", type=int, default=1)
    idle.add_argument("--connections", type=int, default=5000)
    idle.add_argument("--settle", type=float, default=1.0,
                      help="seconds between `ready` and reading RSS")

    run = sub.add_parser("run", help="the interleaved throughput rounds and the summary")
    common(run)
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--duration", type=float, default=5)
    run.add_argument("--echo-connections", type=int, default=100)
    run.add_argument("--bulk-count", type=int, default=1000)
    run.add_argument("--bulk-window", type=int, default=4)
    run.add_argument("--hs-connections", type=int, default=50)
    run.add_argument("--idle-connections", type=int, default=5000,
                     help="only for the summary's heading")
    run.add_argument("--kinds", type=lambda v: set(v.split()), default=set(ALL_KINDS),
                     help=f"which runs, space-separated (default: all of {' '.join(ALL_KINDS)})")
    args = p.parse_args()

    if args.cmd == "ports":
        print_free_ports(args.n)
        return
    if args.cmd == "probe":
        sys.exit(0 if probe(args.port) else 1)
    if len(args.server) < 2:
        p.error("give at least two --server (under test first, then references)")
    if args.cmd == "idle":
        cmd_idle(args)
    else:
        cmd_run(args)


if __name__ == "__main__":
    main()
