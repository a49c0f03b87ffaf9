"""What bench/static_bench.py and bench/websocket_bench.py share (Python 3.11
stdlib only): free ports, the servers under test as process trees, their
CPU time and RSS from /proc, and the arithmetic and layout of the tables.
Imported, not run: each helper's own directory is on sys.path.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import sys
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def warn(msg: str) -> None:
    print(f"WARNING: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# ports

def free_ports(n: int) -> list[int]:
    # Keep all sockets bound until every port is known, so the N are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def print_free_ports(n: int) -> None:
    """The `ports N` subcommand: one port a line, for the shell's mapfile."""
    print("\n".join(map(str, free_ports(n))))


def arg_parser(doc: str) -> tuple[argparse.ArgumentParser,
                                  argparse._SubParsersAction]:
    """A helper's parser, its usage being its module docstring, with the
    `ports N` subcommand; returns it and its subparsers for the rest."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ports = sub.add_parser("ports", help="print N free loopback ports")
    ports.add_argument("n", type=int)
    return p, sub


# --------------------------------------------------------------------------
# /proc readers

def stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (index 0 is field 3, 'state').

    Field 2 (comm) is in parentheses and may itself hold spaces or ')',
    so split after the last ')'.
    """
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """root and all its descendants, found through the ppid in /proc/*/stat.

    nginx is a master plus workers; a wsgate stand-in may be a wrapper; so
    every server is measured as the whole tree it grew from.
    """
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(stat_fields(int(name))[1])  # field 4
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime+stime (fields 14, 15) per pid; for a tgid this covers all threads."""
    ticks = {}
    for pid in pids:
        try:
            f = stat_fields(pid)
            ticks[pid] = int(f[11]) + int(f[12])
        except OSError:
            pass
    return ticks


def cpu_split_ticks(pids: list[int]) -> dict[int, tuple[int, int]]:
    """(utime, stime) per pid: user and kernel time apart."""
    ticks = {}
    for pid in pids:
        try:
            f = stat_fields(pid)
            ticks[pid] = (int(f[11]), int(f[12]))
        except OSError:
            pass
    return ticks


def cpu_split_seconds(before: dict[int, tuple[int, int]],
                      after: dict[int, tuple[int, int]]) -> tuple[float, float]:
    """(user, system) seconds between two cpu_split_ticks readings."""
    user = sum(u - before.get(pid, (0, 0))[0] for pid, (u, _) in after.items())
    system = sum(s - before.get(pid, (0, 0))[1] for pid, (_, s) in after.items())
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    # Per-pid deltas: a process born mid-run counts from zero. One that
    # died mid-run is lost, but no server here forks per request or session.
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------
# servers

@dataclass
class Server:
    """A server as the shell started it; each helper adds its url()."""
    name: str
    port: int
    pid: int

    @classmethod
    def parse_server(cls, spec: str) -> Server:
        """NAME:PORT:PID, as given to --server (argparse errors name it)."""
        name, port, pid = spec.split(":")
        return cls(name, int(port), int(pid))

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")


def round_order(servers: list[Server], rnd: int) -> list[Server]:
    """The servers in the order round `rnd` runs them. Interleaved within
    each round, and which goes first changes every round, so drift
    (thermal, noisy neighbours) hits all alike: two servers swap, more
    rotate."""
    if len(servers) <= 2:
        return servers if rnd % 2 else servers[::-1]
    k = (rnd - 1) % len(servers)
    return servers[k:] + servers[:k]


# --------------------------------------------------------------------------
# figures and tables

def median(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def fmt_ratio(r: float) -> str:
    if math.isnan(r):
        return "n/a"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"  # no bare "0.00x"


def print_head(head: str) -> None:
    """A table's column heads, underlined to their full width."""
    print(head, flush=True)
    print("-" * len(head), flush=True)
