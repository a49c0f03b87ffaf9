#!/usr/bin/env bash
# HTTP reverse proxy benchmark: wsgate against nginx, side by side in one run.
#
#   bash bench/proxy.sh
#
# A third server, a one-worker nginx serving 1k.bin and 1m.bin from memory
# (open_file_cache, sendfile), is the small fast backend. wsgate (a `proxy`
# route) and nginx (`proxy_pass` to an upstream with `keepalive`) both proxy
# to it on loopback; wrk runs against each in interleaved rounds. Printed:
# requests/s, p50/p99 and the proxy's CPU time per request (its own process
# tree only, not the backend's), medians plus every round's figures, then
# each proxy's RSS while one client streams a 100 MB file through it.
# The measuring is bench/static_bench.py's: only the servers differ.
# Not run in CI: it wants a quiet machine and takes a few minutes.
#
# Environment (defaults in brackets):
#   WSGATE_BIN       wsgate binary to use; unset = `cargo build --release`
#   ROUNDS [5]       interleaved rounds per file size and proxy
#   DURATION [5]     seconds per wrk run
#   WARMUP [1]       seconds of unmeasured wrk per file and proxy; 0 = none
#   WRK_THREADS [1]  wrk threads
#   WRK_CONNECTIONS [50]
#   NGINX_WORKERS [2] workers of the nginx proxy (the backend has one)
#   RSS_RATE [50M]   curl --limit-rate for the 100 MB stream
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

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO/bench/common.sh"

STOP_GRACE=5
BACKEND_PID=""

READY_VERB=answer
ready_check() { curl -sf -o /dev/null "http://127.0.0.1:$1/1k.bin"; }

pick_ports() {
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 4)
    WSGATE_PORT=${ports[0]}
    ADMIN_PORT=${ports[1]}
    NGINX_PORT=${ports[2]}
    BACKEND_PORT=${ports[3]}
}

write_wsgate_config() {
    cat >"$TMP/wsgate.toml" <<EOF
[[listeners]]
bind = "127.0.0.1:$WSGATE_PORT"

[admin]
bind = "127.0.0.1:$ADMIN_PORT"

# nginx logs nothing here either.
[log]
access = "off"

[[routes]]
name = "app"
path = "/"
proxy = { backends = ["http://127.0.0.1:$BACKEND_PORT"] }
EOF
}

# The proxy under comparison: nginx's recommended keep-alive upstream setup
# (HTTP/1.1, Connection cleared, a keepalive pool as large as wsgate's).
write_nginx_config() {
    nginx_config "$TMP/nginx" "$NGINX_WORKERS" "
    upstream app {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }" >"$TMP/nginx.conf"
    nginx_config "$TMP/backend" 1 "
    sendfile on;
    open_file_cache max=1000 inactive=60s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        root $TMP/files;
    }" >"$TMP/backend.conf"
}

main() {
    trap 'cleanup "$HELPER_PID" "$WSGATE_PID" "$NGINX_PID" "$BACKEND_PID"' EXIT
    trap 'exit 130' INT TERM

    install_missing_tools wrk curl
    build_wsgate
    TMP=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
    log "making test files in $TMP/files"
    make_files
    pick_ports
    write_wsgate_config
    write_nginx_config
    check_nginx_config
    start_backend
    start_wsgate_and_nginx

    log "$("$NGINX" -v 2>&1) as proxy and backend, wrk -t$WRK_THREADS" \
        "-c$WRK_CONNECTIONS, $(nproc) cores, $ROUNDS rounds of ${DURATION}s"
    helper run \
        --files "$TMP/files" \
        --server "wsgate:$WSGATE_PORT:$WSGATE_PID" \
        --server "nginx:$NGINX_PORT:$NGINX_PID" \
        --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$WRK_THREADS" --connections "$WRK_CONNECTIONS" \
        --rss-rate "$RSS_RATE"
}

main "$@"
