#!/usr/bin/env python3
"""Measurement half of bench/compression.sh (Python 3.11 stdlib only).

bench/compression.sh installs the tools, builds wsgate, writes the configs
and starts the servers; this file makes the test files, picks free ports
and does the measuring:

    compression_bench.py ports N
        print N free loopback TCP ports, one per line
    compression_bench.py files DIR
        write 1k.txt, 64k.txt (HTML-ish text) and 64k.json (a JSON array)
        to DIR: deterministic, compressible about 2.5x (1 KiB) to 4-5x
    compression_bench.py run --files DIR --variant SPEC ... [options]
        check every variant compresses each case as asked (and decodes to
        the file), then run the interleaved wrk rounds and print the tables

A variant is one server at one coding and level:

    NAME:PORT:PID:CODING:STATIC_PREFIX:PROXY_PREFIX[:REF]

The cases are GET STATIC_PREFIX/1k.txt, STATIC_PREFIX/64k.txt and
PROXY_PREFIX/64k.json on PORT with `Accept-Encoding: CODING`; CPU is that of
PID's process tree (so a proxy's backend is never counted). Ratios are
printed as the variant over REF, the variant named REF.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import bench_common
from bench_common import (cpu_split_seconds, cpu_split_ticks, fmt_ratio, median,
                          print_free_ports, print_head, ratio, round_order, warn)

# Reuse static_bench's wrk parsing and per-run figures: only the request
# (a path per case, an Accept-Encoding header) differs here.
from static_bench import Run, parse_wrk

# (label, which prefix, file)
CASES = [
    ("static 1k", "static", "1k.txt"),
    ("static 64k", "static", "64k.txt"),
    ("proxy 64k", "proxy", "64k.json"),
]

# Targets from the issue: CPU per request at most nginx's at the same level;
# static files (compressed once, then served from cache) at 1.3x its req/s.
CPU_TARGET = 1.0
STATIC_RPS_TARGET = 1.3


# --------------------------------------------------------------------------
# test files

WORDS = ("the of and to in is that for it as with was on be by at this from "
         "have not are or an they which one you had but all were we there can "
         "been has more if will would who so gateway proxy route request "
         "response header server client stream socket buffer cache file static "
         "compress level timeout backend upstream session token listener config "
         "reload metric").split()
# Zipf-like word frequencies, as in prose.
WEIGHTS = [1 / (rank + 1) for rank in range(len(WORDS))]


def html_text(size: int, seed: int) -> bytes:
    """Table rows of words and numbers: compresses like a real page, not
    like one repeated byte."""
    rnd = random.Random(seed)
    lines, n, i = [], 0, 0
    while n < size:
        i += 1
        words = " ".join(rnd.choices(WORDS, weights=WEIGHTS, k=rnd.randint(6, 14)))
        status = rnd.choice(("ok", "ok", "ok", "stale", "failed"))
        line = (f'<tr id="r{i}"><td class="n">{i:05d}</td><td><a href="/items/'
                f'{rnd.randint(1, 99999)}">{words.capitalize()}.</a></td>'
                f'<td class="{status}">{rnd.randint(0, 9999)}</td></tr>\n')
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def json_array(size: int, seed: int) -> bytes:
    """An API-like JSON array of records, padded with spaces (still valid
    JSON) to exactly `size` bytes."""
    rnd = random.Random(seed)
    items: list[dict] = []
    n, i = 2, 0  # the brackets
    while True:
        i += 1
        item = {
            "id": i,
            "name": f"{rnd.choice(WORDS)}-{rnd.choice(WORDS)}",
            "email": f"user{i}@example.com",
            "active": rnd.random() < 0.7,
            "score": round(rnd.uniform(0, 100), 2),
            "tags": rnd.sample(WORDS, 3),
            "created": f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
                       f"T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z",
        }
        add = len(json.dumps(item, separators=(",", ":"))) + (1 if items else 0)
        if n + add > size - 1:  # keep room for the final newline
            break
        items.append(item)
        n += add
    text = json.dumps(items, separators=(",", ":"))
    return (text + " " * (size - 1 - len(text)) + "\n").encode()


def make_files(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in (("1k.txt", html_text(1024, 1)),
                       ("64k.txt", html_text(65536, 2)),
                       ("64k.json", json_array(65536, 3))):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


# --------------------------------------------------------------------------
# variants

@dataclass
class Variant(bench_common.Server):
    coding: str = ""
    static: str = ""
    proxy: str = ""
    ref: str = ""

    @classmethod
    def parse_variant(cls, spec: str) -> Variant:
        parts = spec.split(":")
        if len(parts) not in (6, 7):
            raise argparse.ArgumentTypeError(
                f"{spec!r}: want NAME:PORT:PID:CODING:STATIC_PREFIX:PROXY_PREFIX[:REF]")
        name, port, pid, coding, static, proxy = parts[:6]
        ref = parts[6] if len(parts) == 7 else ""
        return cls(name, int(port), int(pid), coding, static, proxy, ref)

    def url(self, case: tuple[str, str, str]) -> str:
        _, kind, path = case
        prefix = self.static if kind == "static" else self.proxy
        return f"http://127.0.0.1:{self.port}{prefix}/{path}"


@dataclass
class Wire:
    """One response as curl saw it."""
    body: int      # bytes of body on the wire (as encoded, no chunk framing)
    header: int    # bytes of status line and headers
    encoding: str
    vary: str


def curl_check(v: Variant, case: tuple[str, str, str], want: bytes) -> Wire:
    """GET the case once raw, to see its coding and size, and once decoded
    by curl, to see it is the file: fail loudly on anything else."""
    url = v.url(case)
    ae = f"Accept-Encoding: {v.coding}"
    with tempfile.TemporaryDirectory() as tmp:
        headers = os.path.join(tmp, "headers")
        raw = subprocess.run(
            ["curl", "-sS", "-H", ae, "-D", headers, "-o", os.devnull,
             "-w", "%{http_code} %{size_download} %{size_header}", url],
            capture_output=True, text=True)
        if raw.returncode != 0:
            sys.exit(f"{v.name}: curl {url} failed: {raw.stderr.strip()}")
        with open(headers, encoding="latin-1") as f:
            head = f.read()
    status, body, header = raw.stdout.split()
    fields: dict[str, str] = {}
    for line in head.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    encoding = fields.get("content-encoding", "")
    if status != "200" or encoding.lower() != v.coding:
        sys.exit(f"{v.name}: GET {url} with '{ae}' gave status {status}, "
                 f"Content-Encoding {encoding or '(none)'}, {body} bytes; "
                 f"expected 200 and {v.coding}. Headers:\n{head}")
    # curl decodes what its --compressed announced; -H keeps the header ours.
    decoded = subprocess.run(["curl", "-sS", "--compressed", "-H", ae, url],
                             capture_output=True)
    if decoded.returncode != 0 or decoded.stdout != want:
        sys.exit(f"{v.name}: GET {url} ({v.coding}) decoded to "
                 f"{len(decoded.stdout)} bytes that are not the file's "
                 f"{len(want)} (curl exit {decoded.returncode}: "
                 f"{decoded.stderr.decode(errors='replace').strip()})")
    return Wire(int(body), int(header), encoding, fields.get("vary", ""))


def check_all(variants: list[Variant], files_dir: str
              ) -> dict[tuple[str, str], Wire]:
    wires = {}
    for case in CASES:
        with open(os.path.join(files_dir, case[2]), "rb") as f:
            want = f.read()
        for v in variants:
            w = curl_check(v, case, want)
            wires[(case[0], v.name)] = w
            if "accept-encoding" not in w.vary.lower():
                warn(f"{v.name} {case[0]}: no 'Vary: Accept-Encoding' "
                     f"(Vary: {w.vary or '(none)'})")
    print(f"content check: every case came back {'/'.join(sorted({v.coding for v in variants}))}"
          f" as asked, decoding to the file, from {', '.join(v.name for v in variants)}")
    return wires


# --------------------------------------------------------------------------
# wrk

@dataclass
class CRun(Run):
    wire_bytes: float = math.nan  # what wrk read, per response

    @property
    def wire_per_req(self) -> float:
        return self.wire_bytes / self.requests if self.requests else math.nan


SIZES = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def wrk(v: Variant, case: tuple[str, str, str], args: argparse.Namespace,
        duration: int) -> str:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}",
           f"-d{duration}s", "--latency", "-H", f"Accept-Encoding: {v.coding}",
           v.url(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                 f"{proc.stdout}{proc.stderr}")
    return proc.stdout


def measure(v: Variant, case: tuple[str, str, str], rnd: int,
            args: argparse.Namespace) -> CRun:
    run = CRun(v.name, case[0], rnd)
    before = cpu_split_ticks(v.pids())
    out = wrk(v, case, args, args.duration)
    run.user_s, run.sys_s = cpu_split_seconds(before, cpu_split_ticks(v.pids()))
    run.cpu_s = run.user_s + run.sys_s
    parse_wrk(out, run)
    # "123456 requests in 5.00s, 1.23GB read": wrk's count of the bytes it
    # read (status, headers, chunk framing and body), to two decimals.
    m = re.search(r"requests in [\d.]+(?:us|ms|s|m), ([\d.]+)([KMGT]?B) read", out)
    if m:
        run.wire_bytes = float(m[1]) * SIZES[m[2]]
    for p in run.problems:
        warn(f"round {rnd} {v.name} {case[0]}: {p}")
    if not v.alive():
        sys.exit(f"{v.name} (pid {v.pid}) died during the run")
    return run


def bench_rounds(variants: list[Variant], args: argparse.Namespace) -> list[CRun]:
    if args.warmup > 0:
        # Fills wsgate's file and compressed caches, nginx's open_file_cache,
        # both proxies' upstream connections.
        for case in CASES:
            for v in variants:
                wrk(v, case, args, args.warmup)
    runs = []
    for rnd in range(1, args.rounds + 1):
        for case in CASES:
            for v in round_order(variants, rnd):
                run = measure(v, case, rnd, args)
                runs.append(run)
                print(f"  round {rnd} {case[0]:10} {v.name:13} "
                      f"{run.rps:9.0f} req/s  {run.cpu_us_per_req:7.2f} CPU us/req "
                      f"(user {run.user_us_per_req:6.2f} sys {run.sys_us_per_req:6.2f})  "
                      f"{run.cores:4.2f} cores  {run.wire_per_req:7.0f} B/resp  "
                      f"p99 {run.p99_ms:7.3f} ms", flush=True)
    return runs


# --------------------------------------------------------------------------
# report

KEYS = ("rps", "cpu_us_per_req", "user_us_per_req", "sys_us_per_req", "cores",
        "wire_per_req", "p99_ms")


def medians(variants: list[Variant], runs: list[CRun]) -> dict:
    med = {}
    for case in CASES:
        for v in variants:
            rs = [r for r in runs if r.server == v.name and r.path == case[0]]
            med[(case[0], v.name)] = {k: median([getattr(r, k) for r in rs])
                                      for k in KEYS}
    return med


def print_summary(variants: list[Variant], runs: list[CRun],
                  wires: dict[tuple[str, str], Wire], sizes: dict[str, int],
                  args: argparse.Namespace) -> dict:
    med = medians(variants, runs)
    by_name = {v.name: v for v in variants}
    print()
    print(f"Summary: medians over {args.rounds} rounds of wrk -t{args.threads} "
          f"-c{args.connections} -d{args.duration}s; CPU = the server's process "
          "tree (a proxy's backend not counted)")
    print_head(f"{'case':10} {'server':13} {'coding':6} {'req/s':>9} "
               f"{'CPU us/req':>10} {'user':>7} {'sys':>6} {'cores':>5} "
               f"{'body B':>7} {'ratio':>6} {'wire B':>7} {'p99 ms':>7}   "
               f"{'vs':13} {'req/s':>6} {'CPU':>6}")
    for case in CASES:
        label = case[0]
        for v in variants:
            m, w = med[(label, v.name)], wires[(label, v.name)]
            vs = rps_r = cpu_r = ""
            if v.ref and v.ref in by_name:
                r = med[(label, v.ref)]
                vs = v.ref
                rps_r = fmt_ratio(ratio(m["rps"], r["rps"]))
                cpu_r = fmt_ratio(ratio(m["cpu_us_per_req"], r["cpu_us_per_req"]))
            print(f"{label:10} {v.name:13} {v.coding:6} {m['rps']:9.0f} "
                  f"{m['cpu_us_per_req']:10.2f} {m['user_us_per_req']:7.2f} "
                  f"{m['sys_us_per_req']:6.2f} {m['cores']:5.2f} "
                  f"{w.body:7} {sizes[case[2]] / w.body:5.2f}x "
                  f"{m['wire_per_req']:7.0f} {m['p99_ms']:7.3f}   "
                  f"{vs:13} {rps_r:>6} {cpu_r:>6}")
        print()
    print(f"body B = Content-Encoding'd body from curl (files: "
          f"{', '.join(f'{k} {n} B' for k, n in sizes.items())}); ratio = file / "
          "body; wire B = all wrk read per response (status, headers, chunk "
          "framing, body); req/s > 1x and CPU < 1x favour the variant over 'vs'")
    return med


def print_targets(variants: list[Variant], med: dict) -> None:
    """The issue's targets, where a variant names a reference."""
    print()
    print(f"Targets: CPU/req <= {CPU_TARGET:g}x the reference; static req/s >= "
          f"{STATIC_RPS_TARGET:g}x")
    by_name = {v.name: v for v in variants}
    for case in CASES:
        for v in variants:
            if not v.ref or v.ref not in by_name:
                continue
            m, r = med[(case[0], v.name)], med[(case[0], v.ref)]
            cpu = ratio(m["cpu_us_per_req"], r["cpu_us_per_req"])
            parts = [f"CPU {verdict(cpu, cpu <= CPU_TARGET)}"]
            if case[1] == "static":
                rps = ratio(m["rps"], r["rps"])
                parts.append(f"req/s {verdict(rps, rps >= STATIC_RPS_TARGET)}")
            print(f"  {case[0]:10} {v.name:13} vs {v.ref:13} {', '.join(parts)}")
    print("  (where both servers reach about the same req/s on different CPU "
          "('cores'), wrk is the limit, not them: compare CPU/req there)")


def verdict(r: float, met: bool) -> str:
    if math.isnan(r):
        return "n/a"
    return f"{fmt_ratio(r)} {'met' if met else 'MISSED'}"


# --------------------------------------------------------------------------

def main() -> None:
    p, sub = bench_common.arg_parser(__doc__)
    files = sub.add_parser("files", help="write the test files")
    files.add_argument("dir")
    run = sub.add_parser("run", help="run the benchmark")
    run.add_argument("--files", required=True, help="dir holding the test files")
    run.add_argument("--variant", action="append", type=Variant.parse_variant,
                     required=True,
                     help="NAME:PORT:PID:CODING:STATIC_PREFIX:PROXY_PREFIX[:REF]")
    run.add_argument("--rounds", type=int, default=3)
    run.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    run.add_argument("--warmup", type=int, default=1, help="seconds, 0 = none")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--connections", type=int, default=50)
    args = p.parse_args()

    if args.cmd == "ports":
        print_free_ports(args.n)
        return
    if args.cmd == "files":
        make_files(args.dir)
        return
    names = [v.name for v in args.variant]
    for v in args.variant:
        if v.ref and v.ref not in names:
            p.error(f"{v.name}: reference {v.ref!r} is no --variant")
    sizes = {c[2]: os.path.getsize(os.path.join(args.files, c[2])) for c in CASES}
    wires = check_all(args.variant, args.files)
    print(f"Rounds (each wrk run {args.duration}s; "
          "CPU = utime+stime of the server's whole process tree):")
    runs = bench_rounds(args.variant, args)
    med = print_summary(args.variant, runs, wires, sizes, args)
    print_targets(args.variant, med)


if __name__ == "__main__":
    main()
