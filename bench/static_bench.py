#!/usr/bin/env python3
"""Measurement half of bench/static.sh (Python 3.11 stdlib only).

bench/static.sh installs the tools, builds wsgate, writes the configs and
starts the servers; this file picks free ports and does the measuring:

    static_bench.py ports N
        print N free loopback TCP ports, one per line
    static_bench.py run --files DIR --server NAME:PORT:PID ... [options]
        check content, run the interleaved wrk rounds, print the tables,
        then measure RSS while one client streams 100m.bin

The first --server is the one under test and the second the reference;
ratios are printed as first/second (wsgate/nginx).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import bench_common
from bench_common import (cpu_split_seconds, cpu_split_ticks, fmt_ratio, median,
                          print_free_ports, print_head, ratio, round_order,
                          rss_kib, warn)

BENCH_FILES = ["1k.bin", "1m.bin"]
BIG_FILE = "100m.bin"
BIG_FILE_SIZE = 100 * 1000 * 1000


# --------------------------------------------------------------------------
# servers

class Server(bench_common.Server):
    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def serving_pids(self) -> list[int]:
        # nginx's master never touches a request: its RSS only adds a constant,
        # so RSS is taken over the workers alone when there are any.
        tree = self.pids()
        return tree[1:] if self.name == "nginx" and len(tree) > 1 else tree


def check_content(servers: list[Server], files_dir: str) -> None:
    """Refuse to benchmark a server that serves the wrong bytes."""
    for path in BENCH_FILES:
        with open(os.path.join(files_dir, path), "rb") as f:
            want = f.read()
        for s in servers:
            with urllib.request.urlopen(s.url(path), timeout=10) as resp:
                got = resp.read()
                status = resp.status
            if status != 200 or got != want:
                sys.exit(f"{s.name}: GET /{path} gave status {status}, "
                         f"{len(got)} bytes; expected 200 and the file's "
                         f"{len(want)} bytes")
    print(f"content check: {', '.join(BENCH_FILES)} identical from "
          f"{' and '.join(s.name for s in servers)}")


# --------------------------------------------------------------------------
# wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}  # to milliseconds


@dataclass
class Run:
    server: str
    path: str
    round: int
    requests: int = 0
    seconds: float = math.nan
    rps: float = math.nan
    cpu_s: float = math.nan
    user_s: float = math.nan
    sys_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def cpu_us_per_req(self) -> float:
        return self.cpu_s * 1e6 / self.requests if self.requests else math.nan

    @property
    def user_us_per_req(self) -> float:
        return self.user_s * 1e6 / self.requests if self.requests else math.nan

    @property
    def sys_us_per_req(self) -> float:
        return self.sys_s * 1e6 / self.requests if self.requests else math.nan

    @property
    def cores(self) -> float:
        """Average number of cores the server kept busy during the run."""
        return self.cpu_s / self.seconds if self.seconds else math.nan


def parse_wrk(out: str, run: Run) -> None:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", out)
    if m:
        run.requests = int(m[1])
        run.seconds = float(m[2]) * UNITS[m[3]] / 1e3
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        run.rps = float(m[1])
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m:
            setattr(run, attr, float(m[1]) * UNITS[m[2]])
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        run.problems.append(f"{m[1]} non-2xx/3xx responses")
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        run.problems.append(f"socket errors: {m[1].strip()}")
    if not run.requests or math.isnan(run.rps):
        run.problems.append("could not parse wrk output:\n" + out)


def wrk(server: Server, path: str, args: argparse.Namespace,
        duration: int) -> str:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}",
           f"-d{duration}s", "--latency", server.url(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                 f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def measure(server: Server, path: str, rnd: int,
            args: argparse.Namespace) -> Run:
    run = Run(server.name, path, rnd)
    before = cpu_split_ticks(server.pids())
    out = wrk(server, path, args, args.duration)
    run.user_s, run.sys_s = cpu_split_seconds(before, cpu_split_ticks(server.pids()))
    run.cpu_s = run.user_s + run.sys_s
    parse_wrk(out, run)
    for p in run.problems:
        warn(f"round {rnd} {server.name} /{path}: {p}")
    if not server.alive():
        sys.exit(f"{server.name} (pid {server.pid}) died during the run")
    return run


def bench_rounds(servers: list[Server], args: argparse.Namespace) -> list[Run]:
    if args.warmup > 0:
        # Fill the page cache, nginx's open_file_cache and any lazy state in
        # wsgate, so round 1 is not the odd one out.
        for path in BENCH_FILES:
            for s in servers:
                wrk(s, path, args, args.warmup)
    runs = []
    for rnd in range(1, args.rounds + 1):
        for path in BENCH_FILES:
            for s in round_order(servers, rnd):
                run = measure(s, path, rnd, args)
                runs.append(run)
                print(f"  round {rnd} {path:7} {s.name:7} "
                      f"{run.rps:10.0f} req/s  {run.cpu_us_per_req:7.2f} "
                      f"CPU us/req (user {run.user_us_per_req:6.2f} "
                      f"sys {run.sys_us_per_req:6.2f})  {run.cores:4.2f} cores  "
                      f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms",
                      flush=True)
    return runs


# --------------------------------------------------------------------------
# report

def print_summary(servers: list[Server], runs: list[Run],
                  args: argparse.Namespace) -> None:
    print()
    print(f"Summary: medians over {args.rounds} rounds of "
          f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s")
    print_head(f"{'file':8} {'server':13} {'req/s':>10} {'CPU us/req':>11} "
               f"{'user':>7} {'sys':>7} "
               f"{'cores':>6} {'p50 ms':>8} {'p99 ms':>8}")
    test, ref = servers[0].name, servers[1].name
    for path in BENCH_FILES:
        med = {}
        for s in servers:
            rs = [r for r in runs if r.server == s.name and r.path == path]
            med[s.name] = {k: median([getattr(r, k) for r in rs])
                           for k in ("rps", "cpu_us_per_req", "user_us_per_req",
                                     "sys_us_per_req", "cores", "p50_ms", "p99_ms")}
            m = med[s.name]
            print(f"{path:8} {s.name:13} {m['rps']:10.0f} "
                  f"{m['cpu_us_per_req']:11.2f} {m['user_us_per_req']:7.2f} "
                  f"{m['sys_us_per_req']:7.2f} {m['cores']:6.2f} "
                  f"{m['p50_ms']:8.3f} {m['p99_ms']:8.3f}")
        pairs = [(test, ref)] + [(s.name, test) for s in servers[2:]]
        for a, b in pairs:
            print_ratio(path, a, b, med)
    print("(req/s ratio > 1 and CPU us/req ratio < 1 favour "
          f"{test}; 'cores' = server CPU seconds per wall second)")


def print_ratio(path: str, a: str, b: str, med: dict) -> None:
    """One row of a/b ratios of the medians."""
    r = {k: fmt_ratio(ratio(med[a][k], med[b][k])) for k in med[a]}
    print(f"{path:8} {a + '/' + b:13} {r['rps']:>10} "
          f"{r['cpu_us_per_req']:>11} {r['user_us_per_req']:>7} "
          f"{r['sys_us_per_req']:>7} {r['cores']:>6} "
          f"{r['p50_ms']:>8} {r['p99_ms']:>8}")


# --------------------------------------------------------------------------
# RSS while streaming a big file

def rss_while_streaming(server: Server, rate: str) -> None:
    base = rss_kib(server.serving_pids())
    # --limit-rate keeps the transfer going ~2 s, long enough for the 50 ms
    # sampler to catch a server that buffers the whole file in memory.
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
           "--limit-rate", rate, server.url(BIG_FILE)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak, samples = base, 0
    while proc.poll() is None:
        peak = max(peak, rss_kib(server.serving_pids()))
        samples += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    out = proc.communicate()[0].split()
    if proc.returncode != 0 or out != ["200", str(BIG_FILE_SIZE)]:
        warn(f"{server.name}: streaming /{BIG_FILE} gave curl exit "
             f"{proc.returncode}, status/size {out}")
    after = rss_kib(server.serving_pids())
    mib = lambda kib: kib / 1024  # noqa: E731
    print(f"{server.name:8} {mib(base):9.1f} {mib(peak):9.1f} "
          f"{mib(peak - base):+9.1f} {mib(after):9.1f} "
          f"{elapsed:6.1f}s {samples:8}")


def print_rss(servers: list[Server], rate: str) -> None:
    print()
    print(f"RSS while one client streams {BIG_FILE} "
          f"({BIG_FILE_SIZE} bytes, curl --limit-rate {rate}); "
          "nginx = sum over its workers")
    print_head(f"{'server':8} {'base MiB':>9} {'peak MiB':>9} {'increase':>9} "
               f"{'after MiB':>9} {'time':>7} {'samples':>8}")
    for s in servers:
        rss_while_streaming(s, rate)


# --------------------------------------------------------------------------

def main() -> None:
    p, sub = bench_common.arg_parser(__doc__)
    run = sub.add_parser("run", help="run the benchmark")
    run.add_argument("--files", required=True, help="dir holding the test files")
    run.add_argument("--server", action="append", type=Server.parse_server,
                     required=True, help="NAME:PORT:PID (give two)")
    run.add_argument("--rounds", type=int, default=5)
    run.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    run.add_argument("--warmup", type=int, default=1, help="seconds, 0 = none")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--connections", type=int, default=50)
    run.add_argument("--rss-rate", default="50M")
    args = p.parse_args()

    if args.cmd == "ports":
        print_free_ports(args.n)
        return
    if len(args.server) not in (2, 3):
        p.error("give two --server (under test first, reference second), and "
                "optionally a variant of the first to compare with it")
    check_content(args.server, args.files)
    print(f"Rounds (each wrk run {args.duration}s; "
          "CPU = utime+stime of the server's whole process tree):")
    runs = bench_rounds(args.server, args)
    print_summary(args.server, runs, args)
    print_rss(args.server, args.rss_rate)


if __name__ == "__main__":
    main()
