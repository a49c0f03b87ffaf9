"""The measuring half of bench/auth.sh: wrk against each route in
interleaved rounds, the wsgate process tree's CPU per request, medians."""

import subprocess
import sys

import bench_common


def parse_variant(text):
    name, path, header = text.split(":", 2)
    return name, path, header


def run_wrk(port, path, header, duration, connections):
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    if header:
        command += ["-H", header]
    command.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    requests = 0
    non_2xx = 0
    for line in out.splitlines():
        words = line.split()
        if "requests in" in line:
            requests = int(words[0])
        if line.strip().startswith("Non-2xx"):
            non_2xx = int(words[-1])
    if non_2xx:
        sys.exit(f"{path}: {non_2xx} answers were not 2xx; the route refuses the bench's credentials")
    return requests


def main():
    parser, sub = bench_common.arg_parser(__doc__)
    run = sub.add_parser("run", help="load each route and print CPU per request")
    run.add_argument("--pid", type=int, required=True)
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--rounds", type=int, default=5)
    run.add_argument("--duration", type=int, default=5)
    run.add_argument("--connections", type=int, default=50)
    run.add_argument("--variant", action="append", type=parse_variant, default=[])
    args = parser.parse_args()
    if args.cmd == "ports":
        bench_common.print_free_ports(args.n)
        return
    results = {name: [] for name, _, _ in args.variant}
    for rnd in range(args.rounds):
        order = args.variant[rnd % len(args.variant):] + args.variant[:rnd % len(args.variant)]
        for name, path, header in order:
            pids = bench_common.process_tree(args.pid)
            before = bench_common.cpu_split_ticks(pids)
            requests = run_wrk(args.port, path, header, args.duration, args.connections)
            after = bench_common.cpu_split_ticks(pids)
            user, system = bench_common.cpu_split_seconds(before, after)
            per = 1e6 / max(requests, 1)
            results[name].append((requests / args.duration, user * per, system * per))
            print(f"  round {rnd + 1} {name:15} {requests / args.duration:9.0f} req/s "
                  f"{(user + system) * per:8.2f} CPU us/req (user {user * per:.2f} sys {system * per:.2f})",
                  flush=True)
    print()
    print(f"medians over {args.rounds} rounds of {args.duration} s (wsgate's process tree; the auth service not counted)")
    print(f"{'route':15} {'req/s':>9} {'CPU us/req':>11} {'user':>7} {'sys':>7} {'vs none':>8}")
    base = None
    for name, _, _ in args.variant:
        rate = bench_common.median([r for r, _, _ in results[name]])
        user = bench_common.median([u for _, u, _ in results[name]])
        system = bench_common.median([s for _, _, s in results[name]])
        total = bench_common.median([u + s for _, u, s in results[name]])
        base = base or total
        print(f"{name:15} {rate:9.0f} {total:11.2f} {user:7.2f} {system:7.2f} {total / base:7.2f}x")


if __name__ == "__main__":
    main()
