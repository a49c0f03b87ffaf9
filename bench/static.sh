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
#   LIMIT_COST       set to also run a second wsgate checking per-client
#                    limits that never trip (what the limits cost); wins
#                    over LOG_COST
#   LOG_COST         set to also run a second wsgate writing its access log
#                    (JSON lines to a file) beside the first, which has the
#                    log off as nginx does: the log's cost per request
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

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO/bench/common.sh"

STOP_GRACE=5 # seconds stop_tree allows between TERM and KILL

# What wait_ready polls for: the server answers GET /1k.bin.
READY_VERB=answer
ready_check() { curl -sf -o /dev/null "http://127.0.0.1:$1/1k.bin"; }

# --- configs -------------------------------------------------------------

pick_ports() {
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 5)
    WSGATE_PORT=${ports[0]}
    ADMIN_PORT=${ports[1]}
    NGINX_PORT=${ports[2]}
    LOGGING_PORT=${ports[3]}
    LOGGING_ADMIN_PORT=${ports[4]}
}

# The gateway under test logs nothing, as nginx here; with LOG_COST a
# second one on LOGGING_PORT writes JSON lines to $TMP/access.log; with
# LIMIT_COST the second one logs nothing but checks per-client limits set
# far above the load (a listener and a route request rate, a per-client
# connection cap) on every connection and request.
write_wsgate_config() {
    wsgate_config "$WSGATE_PORT" "$ADMIN_PORT" '"off"' >"$TMP/wsgate.toml"
    if [[ -n "${LIMIT_COST:-}" ]]; then
        wsgate_config "$LOGGING_PORT" "$LOGGING_ADMIN_PORT" '"off"' limits \
            >"$TMP/wsgate-logging.toml"
    else
        wsgate_config "$LOGGING_PORT" "$LOGGING_ADMIN_PORT" "\"$TMP/access.log\"" \
            >"$TMP/wsgate-logging.toml"
    fi
}

wsgate_config() {
    local listener_limits="" server_limits="" route_limits=""
    if [[ "${4:-}" == limits ]]; then
        listener_limits='request_rate = "100000000/s"'
        server_limits='[server]
max_connections_per_client = 1000000'
        route_limits='request_rate = "100000000/s"'
    fi
    cat <<EOF
$server_limits

[[listeners]]
bind = "127.0.0.1:$1"
$listener_limits

[admin]
bind = "127.0.0.1:$2"

[log]
access = $3

[[routes]]
name = "files"
path = "/"
$route_limits
static = { root = "$TMP/files" }
EOF
}

# nginx's best fair setup for small hot files: sendfile, a cache of open
# file descriptors, keepalive that wrk never runs out of, no access log.
write_nginx_config() {
    nginx_config "$TMP/nginx" "$NGINX_WORKERS" "
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/files;
    }" >"$TMP/nginx.conf"
}

# --- main --------------------------------------------------------------------

main() {
    trap 'cleanup "$HELPER_PID" "$WSGATE_PID" "$NGINX_PID" "${LOGGING_PID:-}"' EXIT
    trap 'exit 130' INT TERM # run the EXIT trap on Ctrl-C as well

    install_missing_tools wrk curl
    build_wsgate
    TMP=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
    log "making test files in $TMP/files"
    make_files
    pick_ports
    write_wsgate_config
    write_nginx_config
    check_nginx_config
    start_wsgate_and_nginx
    local logging=()
    if [[ -n "${LOG_COST:-}${LIMIT_COST:-}" ]]; then
        local name=wsgate-log
        [[ -n "${LIMIT_COST:-}" ]] && name=wsgate-limits
        "$WSGATE_BIN" --config "$TMP/wsgate-logging.toml" >>"$TMP/wsgate-logging.log" 2>&1 &
        LOGGING_PID=$!
        wait_ready "$name" "$LOGGING_PID" "$LOGGING_PORT" "$TMP/wsgate-logging.log"
        logging=(--server "$name:$LOGGING_PORT:$LOGGING_PID")
    fi

    log "$("$NGINX" -v 2>&1), wrk -t$WRK_THREADS -c$WRK_CONNECTIONS," \
        "$(nproc) cores, $ROUNDS rounds of ${DURATION}s"
    helper run \
        --files "$TMP/files" \
        --server "wsgate:$WSGATE_PORT:$WSGATE_PID" \
        --server "nginx:$NGINX_PORT:$NGINX_PID" "${logging[@]}" \
        --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$WRK_THREADS" --connections "$WRK_CONNECTIONS" \
        --rss-rate "$RSS_RATE"
}

main "$@"
