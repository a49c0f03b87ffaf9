#!/usr/bin/env bash
# Static file serving benchmark: wsgate against nginx, side by side in one run.
#
#   bash bench/static.sh
#
# Serves the same directory (1k.bin, 1m.bin, 100m.bin) from both servers on
# loopback, runs wrk against each in interleaved rounds, and prints requests/s
# and server CPU time per request (medians, plus every round's figures), then
# the RSS of each server while one client streams the 100 MB file.
# Not run in CI: it wants a quiet machine and takes a few minutes.
#
# Environment (defaults in brackets):
#   WSGATE_BIN       wsgate binary to use; unset = `cargo build --release`
#                    and target/release/wsgate
#   ROUNDS [5]       interleaved rounds per file size and server
#   DURATION [5]     seconds per wrk run
#   WARMUP [1]       seconds of unmeasured wrk per file and server; 0 = none
#   WRK_THREADS [1]  wrk threads: 1 leaves the other core to the server
#   WRK_CONNECTIONS [50]
#   NGINX_WORKERS [2]
#   RSS_RATE [50M]   curl --limit-rate for the 100 MB stream (~2 s)
#   KEEP_TMP         set to keep the temp dir (configs, server logs)
#
# Installs nginx-light and wrk from Debian packages when missing (needs root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
HELPER=$REPO/bench/static_bench.py

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-50}
NGINX_WORKERS=${NGINX_WORKERS:-2}
RSS_RATE=${RSS_RATE:-50M}

TMP=""
WSGATE_PID=""
NGINX_PID=""
HELPER_PID=""

die() { echo "static.sh: $*" >&2; exit 1; }
log() { echo "==> $*"; }

# --- tools -----------------------------------------------------------------

install_missing_tools() {
    local missing=()
    # nginx lives in /usr/sbin, which a non-login PATH may lack.
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

build_wsgate() {
    if [[ -n "${WSGATE_BIN:-}" ]]; then
        [[ -x "$WSGATE_BIN" ]] || die "WSGATE_BIN=$WSGATE_BIN is not an executable"
        log "using WSGATE_BIN=$WSGATE_BIN"
    else
        log "cargo build --release"
        cargo build --release
        WSGATE_BIN=$REPO/target/release/wsgate
    fi
}

# --- test data and configs -------------------------------------------------

make_files() {
    mkdir -p "$TMP/files"
    # Random bytes, so no layer along the way can gain from compression.
    head -c 1024 /dev/urandom >"$TMP/files/1k.bin"
    head -c $((1024 * 1024)) /dev/urandom >"$TMP/files/1m.bin"
    head -c $((100 * 1000 * 1000)) /dev/urandom >"$TMP/files/100m.bin"
}

pick_ports() {
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 3)
    WSGATE_PORT=${ports[0]}
    ADMIN_PORT=${ports[1]}
    NGINX_PORT=${ports[2]}
}

write_wsgate_config() {
    cat >"$TMP/wsgate.toml" <<EOF
[[listeners]]
bind = "127.0.0.1:$WSGATE_PORT"

[admin]
bind = "127.0.0.1:$ADMIN_PORT"

[[routes]]
name = "files"
path = "/"
static = { root = "$TMP/files" }
EOF
}

# nginx's best fair setup for small hot files: sendfile, a cache of open
# file descriptors, keepalive that wrk never runs out of, no access log.
write_nginx_config() {
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx.conf" <<EOF
# Workers must read the mode-0700 temp dir, and we run as root.
user root;
worker_processes $NGINX_WORKERS;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;

events {
    worker_connections 4096;
}

http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    open_file_cache max=1000 inactive=60s;

    # Keep every path nginx may write inside the temp dir.
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/files;
    }
}
EOF
}

# --- servers ---------------------------------------------------------------

start_servers() {
    "$WSGATE_BIN" --config "$TMP/wsgate.toml" >"$TMP/wsgate.log" 2>&1 &
    WSGATE_PID=$!
    # -e: the error log before the config is read, else /var/log/nginx.
    "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" \
        >"$TMP/nginx.out" 2>&1 &
    NGINX_PID=$!
    wait_ready wsgate "$WSGATE_PID" "$WSGATE_PORT" "$TMP/wsgate.log"
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" "$TMP/nginx/error.log"
}

# Poll until the server answers GET /1k.bin, failing fast if it exits.
wait_ready() {
    local name=$1 pid=$2 port=$3 logfile=$4 i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "$name exited during startup (log above)"
        fi
        if curl -sf -o /dev/null "http://127.0.0.1:$port/1k.bin"; then
            log "$name ready on 127.0.0.1:$port (pid $pid)"
            return
        fi
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$name did not answer on port $port within 20 s"
}

# TERM the process, then KILL it and any children left behind: a KILLed
# nginx master leaves its workers running.
stop_tree() {
    local pid=$1 children i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086  # word splitting of the pid list is wanted
    kill -KILL "$pid" $children 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    stop_tree "$HELPER_PID" # and its wrk or curl
    stop_tree "$WSGATE_PID"
    stop_tree "$NGINX_PID"
    if [[ -n "$TMP" ]]; then
        if [[ -n "${KEEP_TMP:-}" ]]; then
            echo "kept $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# --- main --------------------------------------------------------------------

main() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM # run the EXIT trap on Ctrl-C as well

    install_missing_tools
    build_wsgate
    TMP=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
    log "making test files in $TMP/files"
    make_files
    pick_ports
    write_wsgate_config
    write_nginx_config
    "$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" ||
        die "nginx rejected $TMP/nginx.conf"
    start_servers

    log "$("$NGINX" -v 2>&1), wrk -t$WRK_THREADS -c$WRK_CONNECTIONS," \
        "$(nproc) cores, $ROUNDS rounds of ${DURATION}s"
    python3 "$HELPER" run \
        --files "$TMP/files" \
        --server "wsgate:$WSGATE_PORT:$WSGATE_PID" \
        --server "nginx:$NGINX_PORT:$NGINX_PID" \
        --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$WRK_THREADS" --connections "$WRK_CONNECTIONS" \
        --rss-rate "$RSS_RATE" &
    # In the background with `wait`, because bash defers a trapped signal
    # until a foreground child exits: a kill would wait out the whole run.
    HELPER_PID=$!
    wait "$HELPER_PID"
}

main "$@"
