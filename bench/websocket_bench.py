#!/usr/bin/env python3
"""Measurement half of bench/websocket.sh (Python 3.11 stdlib only).

bench/websocket.sh installs nginx, builds wsgate and wsload, writes the
configs and starts the servers; this file picks free ports, drives wsload
(examples/wsload.rs) and reads the servers' CPU time and RSS from /proc:

    websocket_bench.py ports N
        print N free loopback TCP ports, one per line
    websocket_bench.py probe PORT
        exit 0 when 127.0.0.1:PORT accepts a TCP connection
    websocket_bench.py idle --server NAME:PORT:PID ... --round R [options]
        on freshly started gateways: check echoes, then RSS with N idle
        sessions open minus RSS before; appends to --results
    websocket_bench.py run --server NAME:PORT:PID ... [options]
        check echoes through every path, run the interleaved rounds (echo
        64 B and 4 KiB, 1 MiB bulk against the backend directly as well,
        handshakes), print every round and the medians with the issue's
        reference points and targets, plus the idle results from --results

The first --server is the one under test and the second the reference;
ratios are printed as first/second (wsgate/nginx). CPU time is
utime+stime of a server's whole process tree (nginx: master and workers),
read when wsload prints `start` and `done`, so connection setup and the
closing handshakes after the window are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import bench_common
from bench_common import (CLK_TCK, cpu_seconds, cpu_ticks, fmt_ratio, median,
                          print_free_ports, print_head, ratio, round_order, rss_kib, warn)

ECHO_SIZES = [64, 4096]
BULK_SIZE = 1 << 20

# The reference points (nginx 1.22 on this kind of machine) and
# wsgate's targets.
REF_NGINX_CPU_US = {64: 6.5, 4096: 12.0}
REF_NGINX_HS_CPU_US = 50.0
REF_NGINX_IDLE_KIB = 18.0
TARGET_MSG_CPU_RATIO = 0.6
TARGET_HS_CPU_RATIO = 0.7
TARGET_BULK_RATIO = 0.9
TARGET_IDLE_KIB = 2.0


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

class Server(bench_common.Server):
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/bench"


# --------------------------------------------------------------------------
# wsload

@dataclass
class Load:
    """One wsload run: its key=value results and the CPU seconds each
    watched process tree spent between its `start` and `done` markers."""
    values: dict[str, str]
    cpu: dict[str, float]
    wall: float
    # CPU seconds of every process on the machine, and stolen seconds,
    # over the same window: what else competed for the cores.
    machine_busy_s: float = math.nan
    steal_s: float = math.nan

    def num(self, key: str) -> float:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return math.nan


def wsload(args: argparse.Namespace, mode: str, url: str, options: list[str],
           watch: list[Server], on_ready=None, timeout: float = 300) -> Load:
    """Runs wsload, reading CPU ticks of `watch` (and of wsload itself)
    when it prints `start` and `done`; calls on_ready() at `ready`."""
    cmd = [args.wsload, mode, "--url", url, *options]
    if args.wsload_threads:
        cmd += ["--threads", str(args.wsload_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    # A hung run must not hang the benchmark.
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    trees: dict[str, list[int]] = {}
    before: dict[str, dict[int, int]] = {}
    cpu: dict[str, float] = {}
    values: dict[str, str] = {}
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
                trees["wsload"] = [proc.pid]
                before = {k: cpu_ticks(p) for k, p in trees.items()}
                m_before = machine_ticks()
                t_start = time.monotonic()
            elif line == "done":
                t_done = time.monotonic()
                cpu = {k: cpu_seconds(before[k], cpu_ticks(p)) for k, p in trees.items()}
                m_after = machine_ticks()
                machine = ((m_after[0] - m_before[0]) / CLK_TCK,
                           (m_after[1] - m_before[1]) / CLK_TCK)
            elif line == "ready":
                if on_ready:
                    on_ready()
            elif "=" in line:
                key, value = line.split("=", 1)
                values[key] = value
        rc = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {rc}")
    return Load(values, cpu, t_done - t_start, *machine)


def url_of(target: Server, backend: Server) -> str:
    # The backend echoes on any path; the gateways forward the path as is.
    return target.url() if target is not backend else f"ws://127.0.0.1:{backend.port}/bench"


def check_paths(targets: list[Server], backend: Server,
                args: argparse.Namespace) -> None:
    """Refuse to benchmark a path that does not echo, and make sure the
    gateways really relay: their CPU and the backend's must move."""
    for t in targets:
        via_gateway = t is not backend
        watch = [t, backend] if via_gateway else [backend]
        for size in ECHO_SIZES:
            load = wsload(args, "echo", url_of(t, backend),
                          ["--connections", "4", "--size", str(size), "--seconds", "1"],
                          watch)
            n, sent = load.num("messages"), load.num("sent")
            if load.num("errors") != 0 or not n > 0 or n != sent:
                sys.exit(f"echo check failed through {t.name} ({size} B): {load.values}")
            if load.cpu.get(backend.name, 0) <= 0 or (via_gateway and load.cpu.get(t.name, 0) <= 0):
                sys.exit(f"echo check through {t.name}: no CPU time in "
                         f"{'the gateway or ' if via_gateway else ''}the backend; "
                         f"is traffic going where it should? {load.cpu}")
        load = wsload(args, "bulk", url_of(t, backend),
                      ["--count", "8", "--size", str(BULK_SIZE), "--window", "2"], watch)
        if load.num("errors") != 0 or load.num("messages") != 8:
            sys.exit(f"1 MiB echo check failed through {t.name}: {load.values}")
        load = wsload(args, "handshakes", url_of(t, backend),
                      ["--connections", "4", "--seconds", "0.5"], watch)
        if load.num("errors") != 0 or not load.num("handshakes") > 0:
            sys.exit(f"handshake check failed through {t.name}: {load.values}")
    say(f"echo check: 64 B, 4 KiB and 1 MiB messages echoed byte for byte and "
        f"handshakes closed cleanly via {', '.join(t.name for t in targets)}")


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
    """One measured run of one kind, for one target, in one round."""
    kind: str  # echo64 | echo4096 | bulk | handshakes | idle
    target: str
    round: int
    rate: float = math.nan  # msgs/s, MB/s, handshakes/s
    ops: float = math.nan  # messages, MiB, handshakes in the window
    seconds: float = math.nan
    p50_us: float = math.nan
    p99_us: float = math.nan
    gw_cpu_s: float = math.nan
    backend_cpu_s: float = math.nan
    wsload_cpu_s: float = math.nan
    others_cpu_s: float = math.nan  # every other process on the machine
    steal_s: float = math.nan
    # idle only
    rss_before_kib: float = math.nan
    rss_with_kib: float = math.nan
    rss_after_kib: float = math.nan
    sessions: float = math.nan
    backend_sessions: float = math.nan
    open_seconds: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def cpu_us_per_op(self) -> float:
        return self.gw_cpu_s * 1e6 / self.ops if self.ops else math.nan

    def cores(self, cpu_s: float) -> float:
        return cpu_s / self.seconds if self.seconds else math.nan

    @property
    def kib_per_session(self) -> float:
        return (self.rss_with_kib - self.rss_before_kib) / self.sessions \
            if self.sessions else math.nan


def fill_cpu(row: Row, load: Load, target: Server, backend: Server) -> None:
    # The window as wsload timed it; CPU as read at its markers.
    row.gw_cpu_s = load.cpu.get(target.name, math.nan) if target is not backend else math.nan
    row.backend_cpu_s = load.cpu.get(backend.name, math.nan)
    row.wsload_cpu_s = load.cpu.get("wsload", math.nan)
    ours = sum(load.cpu.values())
    row.others_cpu_s = max(0.0, load.machine_busy_s - ours)
    row.steal_s = load.steal_s


def measure_echo(target: Server, backend: Server, size: int, rnd: int,
                 args: argparse.Namespace) -> Row:
    load = wsload(args, "echo", url_of(target, backend),
                  ["--connections", str(args.echo_connections), "--size", str(size),
                   "--seconds", str(args.duration)], [target, backend])
    row = Row(f"echo{size}", target.name, rnd, rate=load.num("msgs_per_sec"),
              ops=load.num("messages"), seconds=load.num("seconds"),
              p50_us=load.num("p50_us"), p99_us=load.num("p99_us"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} echo {size} B via {target.name}",
                          args.echo_connections)
    return row


def measure_bulk(target: Server, backend: Server, rnd: int,
                 args: argparse.Namespace) -> Row:
    load = wsload(args, "bulk", url_of(target, backend),
                  ["--size", str(BULK_SIZE), "--count", str(args.bulk_count),
                   "--window", str(args.bulk_window)], [target, backend] if target is not backend else [backend])
    row = Row("bulk", target.name, rnd, rate=load.num("mb_per_sec"),
              ops=load.num("bytes") / BULK_SIZE, seconds=load.num("seconds"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} bulk via {target.name}", 1)
    if load.num("messages") != args.bulk_count:
        row.problems.append("short")
        warn(f"round {rnd} bulk via {target.name}: {load.values.get('messages')} "
             f"of {args.bulk_count} echoes")
    return row


def measure_handshakes(target: Server, backend: Server, rnd: int,
                       args: argparse.Namespace) -> Row:
    load = wsload(args, "handshakes", url_of(target, backend),
                  ["--connections", str(args.hs_connections), "--seconds", str(args.duration)],
                  [target, backend])
    row = Row("handshakes", target.name, rnd, rate=load.num("handshakes_per_sec"),
              ops=load.num("handshakes"), seconds=load.num("seconds"),
              p50_us=load.num("p50_us"), p99_us=load.num("p99_us"))
    fill_cpu(row, load, target, backend)
    row.problems = sanity(load, f"round {rnd} handshakes via {target.name}")
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


def med(rows: list[Row], kind: str, target: str, attr: str) -> float:
    return median([getattr(r, attr) for r in rows if r.kind == kind and r.target == target])


def med_fn(rows: list[Row], kind: str, target: str, fn) -> float:
    return median([fn(r) for r in rows if r.kind == kind and r.target == target])


def cores_part(r: Row) -> str:
    """Who kept the 2 cores busy during the window (CPU s per wall s)."""
    c = r.cores
    return (f"cores: gw {f(c(r.gw_cpu_s), 4, 2)} backend {f(c(r.backend_cpu_s), 4, 2)} "
            f"wsload {f(c(r.wsload_cpu_s), 4, 2)} others {f(c(r.others_cpu_s), 4, 2)} "
            f"steal {f(c(r.steal_s), 4, 2)}")


def round_line(r: Row) -> str:
    if r.kind.startswith("echo"):
        return (f"  round {r.round} echo {size_label(int(r.kind[4:])):>6} {r.target:7} "
                f"{f(r.rate, 8)} msg/s  {f(r.cpu_us_per_op, 6, 2)} CPU us/msg  "
                f"p50 {f(r.p50_us, 6)} us  p99 {f(r.p99_us, 6)} us  {cores_part(r)}")
    if r.kind == "bulk":
        return (f"  round {r.round} bulk 1 MiB  {r.target:7} {f(r.rate, 8, 1)} MB/s   "
                f"{f(r.cpu_us_per_op, 6, 0)} CPU us/MiB  {f(r.seconds, 5, 2)} s  "
                f"{'':14}{cores_part(r)}")
    if r.kind == "handshakes":
        return (f"  round {r.round} handshakes  {r.target:7} {f(r.rate, 8)} hs/s   "
                f"{f(r.cpu_us_per_op, 6, 1)} CPU us/hs   "
                f"p50 {f(r.p50_us, 6)} us  p99 {f(r.p99_us, 6)} us  {cores_part(r)}")
    return (f"  round {r.round} idle {int(r.sessions)} {r.target:7} RSS "
            f"{r.rss_before_kib / 1024:7.1f} -> {r.rss_with_kib / 1024:7.1f} MiB "
            f"({f(r.kib_per_session, 5, 2)} KiB/session, after close "
            f"{r.rss_after_kib / 1024:.1f} MiB)  backend sessions {r.backend_sessions:.0f}  "
            f"opened in {r.open_seconds:.2f} s")


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
    test, ref = servers[0].name, servers[1].name
    names = [s.name for s in servers]
    targets_met: list[str] = []
    cores = lambda attr: (lambda r: r.cores(getattr(r, attr)))  # noqa: E731
    cpu_op = lambda r: r.cpu_us_per_op  # noqa: E731

    say()
    say(f"Echo: {args.echo_connections} connections, one message in flight each "
        f"(closed loop); medians over {args.rounds} rounds of {args.duration} s")
    head = (f"{'size':7} {'server':13} {'msgs/s':>8} {'p50 us':>8} {'p99 us':>8} "
            f"{'CPU us/msg':>10}   {'cores: gw':>9} {'backend':>7} {'wsload':>6}")
    print_head(head)
    for size in ECHO_SIZES:
        kind = f"echo{size}"
        m = {}
        for n in names:
            m[n] = {"rate": med(rows, kind, n, "rate"), "p50": med(rows, kind, n, "p50_us"),
                    "p99": med(rows, kind, n, "p99_us"), "cpu": med_fn(rows, kind, n, cpu_op)}
            say(f"{size_label(size):7} {n:13} {f(m[n]['rate'], 8)} {f(m[n]['p50'], 8)} "
                f"{f(m[n]['p99'], 8)} {f(m[n]['cpu'], 10, 2)}   "
                f"{f(med_fn(rows, kind, n, cores('gw_cpu_s')), 9, 2)} "
                f"{f(med_fn(rows, kind, n, cores('backend_cpu_s')), 7, 2)} "
                f"{f(med_fn(rows, kind, n, cores('wsload_cpu_s')), 6, 2)}")
        a, b = m[test], m[ref]
        cpu_ratio = ratio(a["cpu"], b["cpu"])
        say(f"{size_label(size):7} {test + '/' + ref:13} {fmt_ratio(ratio(a['rate'], b['rate'])):>8} "
            f"{fmt_ratio(ratio(a['p50'], b['p50'])):>8} {fmt_ratio(ratio(a['p99'], b['p99'])):>8} "
            f"{fmt_ratio(cpu_ratio):>10}   target <= {TARGET_MSG_CPU_RATIO:.1f}x: "
            f"{verdict(cpu_ratio, TARGET_MSG_CPU_RATIO, True)}")
        say(f"{'':7} reference: nginx 1.22 ~{REF_NGINX_CPU_US[size]} us CPU per "
            f"{size_label(size)} message (here: {f(b['cpu'], 0, 2).strip()})")
        targets_met.append(f"CPU per {size_label(size)} message  {test}/{ref} {fmt_ratio(cpu_ratio):>6}  "
                           f"(target <= {TARGET_MSG_CPU_RATIO:.1f}x)  "
                           f"{verdict(cpu_ratio, TARGET_MSG_CPU_RATIO, True)}")

    say()
    say(f"1 MiB messages: 1 connection, {args.bulk_window} in flight, "
        f"{args.bulk_count} messages; medians over {args.rounds} rounds "
        "('vs direct': median of each round's ratio to that round's direct run)")
    head = (f"{'path':13} {'MB/s':>8} {'vs direct':>9} {'gw CPU us/MiB':>13}   "
            f"{'cores: gw':>9} {'backend':>7} {'wsload':>6}")
    print_head(head)
    # Each round's rate over the same round's direct rate, then the median:
    # the three runs of a round are seconds apart, so they share the
    # machine's mood, which rounds minutes apart need not.
    direct = {r.round: r.rate for r in rows if r.kind == "bulk" and r.target == backend.name}
    for n in [backend.name, *names]:
        rate = med(rows, "bulk", n, "rate")
        rel = median([ratio(r.rate, direct.get(r.round, math.nan))
                      for r in rows if r.kind == "bulk" and r.target == n])
        label = "direct" if n == backend.name else n
        note = ""
        if n == test:
            note = f"   target >= {TARGET_BULK_RATIO:.1f}x: {verdict(rel, TARGET_BULK_RATIO, False)}"
            targets_met.append(f"1 MiB throughput  {test}/direct {fmt_ratio(rel):>6}  "
                               f"(target >= {TARGET_BULK_RATIO:.1f}x)  "
                               f"{verdict(rel, TARGET_BULK_RATIO, False)}")
        say(f"{label:13} {f(rate, 8, 1)} {fmt_ratio(rel):>9} "
            f"{f(med_fn(rows, 'bulk', n, cpu_op), 13, 0)}   "
            f"{f(med_fn(rows, 'bulk', n, cores('gw_cpu_s')), 9, 2)} "
            f"{f(med_fn(rows, 'bulk', n, cores('backend_cpu_s')), 7, 2)} "
            f"{f(med_fn(rows, 'bulk', n, cores('wsload_cpu_s')), 6, 2)}{note}")

    say()
    say(f"Handshakes (connect, upgrade, close frame, wait for close and EOF): "
        f"{args.hs_connections} loops; medians over {args.rounds} rounds of {args.duration} s")
    head = (f"{'server':13} {'hs/s':>8} {'p50 us':>8} {'p99 us':>8} {'CPU us/hs':>10}   "
            f"{'cores: gw':>9} {'backend':>7} {'wsload':>6}")
    print_head(head)
    m = {}
    for n in names:
        m[n] = {"rate": med(rows, "handshakes", n, "rate"),
                "p50": med(rows, "handshakes", n, "p50_us"),
                "p99": med(rows, "handshakes", n, "p99_us"),
                "cpu": med_fn(rows, "handshakes", n, cpu_op)}
        say(f"{n:13} {f(m[n]['rate'], 8)} {f(m[n]['p50'], 8)} {f(m[n]['p99'], 8)} "
            f"{f(m[n]['cpu'], 10, 1)}   "
            f"{f(med_fn(rows, 'handshakes', n, cores('gw_cpu_s')), 9, 2)} "
            f"{f(med_fn(rows, 'handshakes', n, cores('backend_cpu_s')), 7, 2)} "
            f"{f(med_fn(rows, 'handshakes', n, cores('wsload_cpu_s')), 6, 2)}")
    a, b = m[test], m[ref]
    hs_ratio = ratio(a["cpu"], b["cpu"])
    say(f"{test + '/' + ref:13} {fmt_ratio(ratio(a['rate'], b['rate'])):>8} "
        f"{fmt_ratio(ratio(a['p50'], b['p50'])):>8} {fmt_ratio(ratio(a['p99'], b['p99'])):>8} "
        f"{fmt_ratio(hs_ratio):>10}   target <= {TARGET_HS_CPU_RATIO:.1f}x: "
        f"{verdict(hs_ratio, TARGET_HS_CPU_RATIO, True)}")
    say(f"{'':13} reference: nginx 1.22 ~{REF_NGINX_HS_CPU_US:.0f} us CPU per handshake "
        f"(here: {f(b['cpu'], 0, 1).strip()})")
    targets_met.append(f"CPU per handshake  {test}/{ref} {fmt_ratio(hs_ratio):>6}  "
                       f"(target <= {TARGET_HS_CPU_RATIO:.1f}x)  "
                       f"{verdict(hs_ratio, TARGET_HS_CPU_RATIO, True)}")

    say()
    idle_rounds = len({r.round for r in rows if r.kind == "idle"})
    say(f"Idle sessions: {args.idle_connections} per gateway on freshly started processes "
        f"(nginx: master + workers); medians over {idle_rounds} rounds")
    head = (f"{'server':13} {'RSS before MiB':>14} {'with MiB':>9} {'KiB/session':>11} "
            f"{'backend sessions':>16}")
    print_head(head)
    kib = {}
    for n in names:
        kib[n] = med_fn(rows, "idle", n, lambda r: r.kib_per_session)
        say(f"{n:13} {f(med(rows, 'idle', n, 'rss_before_kib') / 1024, 14, 1)} "
            f"{f(med(rows, 'idle', n, 'rss_with_kib') / 1024, 9, 1)} {f(kib[n], 11, 2)} "
            f"{f(med(rows, 'idle', n, 'backend_sessions'), 16)}")
    say(f"{test + '/' + ref:13} {'':14} {'':9} {fmt_ratio(ratio(kib[test], kib[ref])):>11}"
        f"   target <= {TARGET_IDLE_KIB:.0f} KiB: {verdict(kib[test], TARGET_IDLE_KIB, True)}")
    say(f"{'':13} reference: nginx 1.22 ~{REF_NGINX_IDLE_KIB:.0f} KiB per idle WebSocket "
        f"(here: {f(kib[ref], 0, 1).strip()})")
    targets_met.append(f"RSS per idle session  {f(kib[test], 0, 2).strip()} KiB  "
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
    say(f"Rounds (echo and handshake runs {args.duration} s each; "
        "CPU = utime+stime of the server's whole process tree):")
    rows: list[Row] = []

    def keep(row: Row) -> None:
        rows.append(row)
        say(round_line(row))
        for s in servers + [backend]:
            if not s.alive():
                sys.exit(f"{s.name} (pid {s.pid}) died during the run")

    for rnd in range(1, args.rounds + 1):
        order = round_order(servers, rnd)
        for size in ECHO_SIZES:
            for s in order:
                keep(measure_echo(s, backend, size, rnd, args))
        bulk_order = [backend, *order]
        bulk_order = bulk_order[rnd % 3:] + bulk_order[:rnd % 3]
        for t in bulk_order:
            keep(measure_bulk(t, backend, rnd, args))
        for s in order:
            keep(measure_handshakes(s, backend, rnd, args))
    save(args.results, rows)
    print_summary(load_rows(args.results), servers, backend, args)


def main() -> None:
    p, sub = bench_common.arg_parser(__doc__)
    pr = sub.add_parser("probe", help="exit 0 when the port accepts")
    pr.add_argument("port", type=int)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--wsload", required=True, help="the wsload binary")
        sp.add_argument("--wsload-threads", type=int, default=0)
        sp.add_argument("--server", action="append", type=Server.parse_server, required=True,
                        help="NAME:PORT:PID (give two: under test, reference)")
        sp.add_argument("--backend", type=Server.parse_server, required=True, help="NAME:PORT:PID")
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
    args = p.parse_args()

    if args.cmd == "ports":
        print_free_ports(args.n)
        return
    if args.cmd == "probe":
        sys.exit(0 if probe(args.port) else 1)
    if len(args.server) != 2:
        p.error("give exactly two --server (under test first, reference second)")
    if args.cmd == "idle":
        cmd_idle(args)
    else:
        cmd_run(args)


if __name__ == "__main__":
    main()
