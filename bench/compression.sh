#!/usr/bin/env bash
# Compression benchmark: wsgate's `compress` against nginx's `gzip on`,
# side by side in one run.
#
#   bash bench/compression.sh
#
# Three cases: static 1k.txt and 64k.txt (HTML-ish text), and a 64 KiB JSON
# response proxied from a backend (a one-worker nginx, gzip off, serving
# 64k.json from memory; its CPU is not counted). Six variants of each:
# nginx at gzip_comp_level 1 and 6 (two server blocks of one nginx), and
# wsgate at gzip level 1, 2 and 6 and br level BR_LEVEL (routes of one
# wsgate: /g1, /g2, /g6, /br static, /api-g1, … proxied). wsgate's gzip
# (zlib-rs) at level 1 uses the quick strategy of zlib-ng and compresses
# less than zlib's level 1; its level 2 compresses at least as well, so
# gzip 2 is the one compared with nginx's gzip 1 at the same ratio. wrk
# sends `Accept-Encoding: <the variant's coding>`; curl first checks every
# response comes back in that coding and decodes to the file. Printed, per
# case and variant: requests/s, the server's CPU time per request (user and
# system), the body's size on the wire and the compression ratio, and the
# ratios against nginx at the same level (br against nginx gzip 6); medians
# plus every round's figures, then the issue's targets (CPU/req <= nginx's,
# static req/s >= 1.3x nginx's). wsgate compresses a static file that fits
# its file cache (64 KiB by default) once per coding; nginx (without
# gzip_static) compresses every response.
# Not run in CI: it wants a quiet machine and takes a few minutes.
#
# Environment (defaults in brackets):
#   WSGATE_BIN       wsgate binary to use; unset = `cargo build --release`
#                    and target/release/wsgate
#   ROUNDS [3]       interleaved rounds per case and variant
#   DURATION [5]     seconds per wrk run
#   WARMUP [1]       seconds of unmeasured wrk per case and variant; 0 = none
#   WRK_THREADS [1]  wrk threads: 1 leaves the other core to the server
#   WRK_CONNECTIONS [50]
#   NGINX_WORKERS [2] workers of the nginx under test (the backend has one)
#   BR_LEVEL [4]     wsgate's brotli level (its default)
#   KEEP_TMP         set to keep the temp dir (configs, server logs)
#
# Installs nginx-light and wrk from Debian packages when missing (needs root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
HELPER=$REPO/bench/compression_bench.py

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-50}
NGINX_WORKERS=${NGINX_WORKERS:-2}
BR_LEVEL=${BR_LEVEL:-4}

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO/bench/common.sh"

STOP_GRACE=5 # seconds stop_tree allows between TERM and KILL
BACKEND_PID=""

# What wait_ready polls for: the server answers GET /1k.txt (wsgate from its
# plain route, without compression).
READY_VERB=answer
ready_check() { curl -sf -o /dev/null "http://127.0.0.1:$1/1k.txt"; }

# --- configs -------------------------------------------------------------

pick_ports() {
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 5)
    WSGATE_PORT=${ports[0]}
    ADMIN_PORT=${ports[1]}
    NGINX_PORT=${ports[2]}  # gzip_comp_level 1
    NGINX6_PORT=${ports[3]} # gzip_comp_level 6
    BACKEND_PORT=${ports[4]}
}

# compress_key ALGORITHM LEVEL: a route's compress, with the thresholds
# nginx gets (512 bytes; text and JSON).
compress_key() {
    echo "compress = { algorithms = [\"$1\"], min_size = \"512B\", types = [\"text/*\", \"application/json\"], levels = { $1 = $2 } }"
}

# wsgate_routes NAME PATH ALGORITHM LEVEL: a static route and a proxied one
# (PATH and /api-NAME) compressing with ALGORITHM at LEVEL.
wsgate_routes() {
    local name=$1 path=$2 algorithm=$3 level=$4
    cat <<EOF

[[routes]]
name = "static-$name"
path = "$path"
static = { root = "$TMP/files" }
$(compress_key "$algorithm" "$level")

[[routes]]
name = "proxy-$name"
path = "/api-$name"
proxy = { backends = ["http://127.0.0.1:$BACKEND_PORT"], strip_prefix = true }
$(compress_key "$algorithm" "$level")
EOF
}

# Logs nothing, as nginx here. "/" serves the files uncompressed, for
# wait_ready and for comparing by hand.
write_wsgate_config() {
    {
        cat <<EOF
[[listeners]]
bind = "127.0.0.1:$WSGATE_PORT"

[admin]
bind = "127.0.0.1:$ADMIN_PORT"

[log]
access = "off"

[[routes]]
name = "plain"
path = "/"
static = { root = "$TMP/files" }
EOF
        wsgate_routes g1 /g1 gzip 1
        wsgate_routes g2 /g2 gzip 2
        wsgate_routes g6 /g6 gzip 6
        wsgate_routes br /br br "$BR_LEVEL"
    } >"$TMP/wsgate.toml"
}

# nginx_server PORT LEVEL: the files at /, the backend at /api/ (prefix
# stripped, as wsgate's strip_prefix), gzip at LEVEL. reuseport spreads
# wrk's connections over the workers: without it one worker can accept all
# 50 at once and, where gzip is CPU-bound, nginx runs on one core.
nginx_server() {
    cat <<EOF
    server {
        listen 127.0.0.1:$1 reuseport;
        gzip_comp_level $2;
        root $TMP/files;
        location /api/ {
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
EOF
}

# The nginx under test: static.sh's setup for small hot files and proxy.sh's
# keep-alive upstream, with gzip on for text and JSON of 512 bytes and up,
# proxied responses included. proxy_buffers hold a whole 64 KiB response,
# so nginx never spills it to a temp file. The backend: gzip off (nginx's
# default), one worker.
write_nginx_config() {
    local types="
    types {
        text/html html;
        text/plain txt;
        application/json json;
    }"
    nginx_config "$TMP/nginx" "$NGINX_WORKERS" "$types
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    gzip on;
    gzip_types text/plain application/json;
    gzip_min_length 512;
    gzip_vary on;
    gzip_proxied any;
    proxy_buffers 16 8k;
    upstream app {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
$(nginx_server "$NGINX_PORT" 1)
$(nginx_server "$NGINX6_PORT" 6)" >"$TMP/nginx.conf"
    nginx_config "$TMP/backend" 1 "$types
    sendfile on;
    open_file_cache max=1000 inactive=60s;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        root $TMP/files;
    }" >"$TMP/backend.conf"
}

# --- main --------------------------------------------------------------------

main() {
    trap 'cleanup "$HELPER_PID" "$WSGATE_PID" "$NGINX_PID" "$BACKEND_PID"' EXIT
    trap 'exit 130' INT TERM # run the EXIT trap on Ctrl-C as well

    install_missing_tools wrk curl
    build_wsgate
    TMP=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
    log "making test files in $TMP/files"
    python3 "$HELPER" files "$TMP/files"
    pick_ports
    write_wsgate_config
    write_nginx_config
    check_nginx_config
    start_backend
    start_wsgate_and_nginx

    local br="wsgate-br$BR_LEVEL"
    log "$("$WSGATE_BIN" --version), $("$NGINX" -v 2>&1) (under test and" \
        "backend), wrk -t$WRK_THREADS -c$WRK_CONNECTIONS, $(nproc) cores," \
        "$ROUNDS rounds of ${DURATION}s"
    helper run \
        --files "$TMP/files" \
        --variant "nginx-gzip1:$NGINX_PORT:$NGINX_PID:gzip::/api" \
        --variant "nginx-gzip6:$NGINX6_PORT:$NGINX_PID:gzip::/api" \
        --variant "wsgate-gzip1:$WSGATE_PORT:$WSGATE_PID:gzip:/g1:/api-g1:nginx-gzip1" \
        --variant "wsgate-gzip2:$WSGATE_PORT:$WSGATE_PID:gzip:/g2:/api-g2:nginx-gzip1" \
        --variant "wsgate-gzip6:$WSGATE_PORT:$WSGATE_PID:gzip:/g6:/api-g6:nginx-gzip6" \
        --variant "$br:$WSGATE_PORT:$WSGATE_PID:br:/br:/api-br:nginx-gzip6" \
        --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
        --threads "$WRK_THREADS" --connections "$WRK_CONNECTIONS"
}

main "$@"
