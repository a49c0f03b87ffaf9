#!/usr/bin/env bash
# WebSocket gateway benchmark: wsgate against nginx and HAProxy, side by
# side in one run.
#
#   bash bench/websocket.sh
#
# One echo backend (`wsgate echo-server`) sits behind wsgate, nginx and
# HAProxy (`mode http`, `timeout tunnel`); each also terminates TLS on a
# second port with the same ECDSA P-256 certificate, made for the run;
# the load generator is our own `examples/wsload.rs` (raw sockets, frames
# encoded once, so it costs less CPU than the servers it measures). In
# interleaved rounds it measures, for each gateway:
#   - 100 connections echoing 64 B and 4 KiB messages, and 64 B over wss, in
#     a closed loop: messages/s, p50/p99 round trip, gateway CPU
#     microseconds per message, user and system apart;
#   - 1 MiB messages on one connection, a few in flight: MB/s relative to
#     the same run against the backend directly;
#   - handshakes/s (connect, upgrade, close), plain and over TLS (full
#     handshakes; and resumed ones, each loop resuming its last session
#     with a TLS 1.3 ticket), and gateway CPU per handshake;
#   - for wsgate alone (nginx has no RFC 8441): the 64 B echo and the
#     open/close loop again as streams of one HTTP/2 connection (extended
#     CONNECT), next to their HTTP/1.1-over-TLS twins: CPU per message and
#     per session set up;
#   - in one more round under `perf stat`, system calls and context
#     switches per message and per handshake (that round's CPU is not used);
# and, on freshly started gateways, the RSS each idle session costs
# (RSS with IDLE_CONNECTIONS sessions open minus RSS before, per session).
# Prints medians, every round's figures, and the issue's reference points
# and targets next to them. Not run in CI: it wants a quiet machine and
# takes about ten minutes.
#
# Environment (defaults in brackets):
#   WSGATE_BIN       wsgate binary to use; unset = `cargo build --release`
#                    and target/release/wsgate
#   WSLOAD_BIN       load generator; unset = `cargo build --release
#                    --example wsload` and target/release/examples/wsload
#   ROUNDS [3]       interleaved rounds of every measurement
#   DURATION [5]     seconds per echo and handshake run
#   ECHO_CONNECTIONS [100]
#   BULK_COUNT [1000]  1 MiB messages per bulk run
#   BULK_WINDOW [4]    1 MiB messages in flight
#   HS_CONNECTIONS [50]  concurrent handshake loops
#   IDLE_CONNECTIONS [5000]; 0 skips the idle rounds
#   KINDS            the timed runs to make, space-separated (default: all:
#                    echo64 echo4096 wss64 bulk handshakes wsshandshakes
#                    wssresumed h2ws64 h2handshakes; the h2 pair is reported against
#                    wss64 and wsshandshakes, so keep those with them)
#   WSLOAD_THREADS   wsload runtime threads (default: all cores)
#   NGINX_WORKERS [2], HAPROXY_THREADS [2]
#   KEEP_TMP         set to keep the temp dir (configs, server logs)
#   REFERENCE [nginx]  the references: `nginx` (nginx and HAProxy),
#                    `log-on` for a second wsgate that writes its access
#                    log (JSON lines to a file): what the log costs; or
#                    `metrics-off` for a second wsgate with `[admin]
#                    metrics = false`, which measures what the metrics cost
#                    (the issue's targets printed then do not apply); or
#                    `limits-on` for a second wsgate with every per-client
#                    and per-session limit set far above the load (checked
#                    on every connection, request and read, never tripped):
#                    what the limits cost; or `binary` for a second
#                    wsgate, same config, run from REFERENCE_BIN: what a
#                    change costs or saves, A/B in one run
#   REFERENCE_BIN    the reference wsgate binary for REFERENCE=binary
#
# Installs nginx-light, haproxy, openssl and perf (linux-perf) from Debian
# packages when missing (needs root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
HELPER=$REPO/bench/websocket_bench.py

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
ECHO_CONNECTIONS=${ECHO_CONNECTIONS:-100}
BULK_COUNT=${BULK_COUNT:-1000}
BULK_WINDOW=${BULK_WINDOW:-4}
HS_CONNECTIONS=${HS_CONNECTIONS:-50}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-5000}
NGINX_WORKERS=${NGINX_WORKERS:-2}
HAPROXY_THREADS=${HAPROXY_THREADS:-2}
REFERENCE=${REFERENCE:-nginx}

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO/bench/common.sh"

BACKEND_PID=""
HAPROXY_PID=""
STOP_GRACE=10 # seconds stop_tree allows between TERM and KILL

# What wait_ready polls for: the port accepts connections. (The echo checks
# in the helper then prove that WebSocket traffic flows.)
READY_VERB=accept
ready_check() { python3 "$HELPER" probe "$1"; }

# --- tools -----------------------------------------------------------------

build() {
    build_wsgate
    take_or_build WSLOAD_BIN target/release/examples/wsload --release --example wsload
}

# Every idle session holds two fds in a gateway, one in the client and one
# in the backend; all of them inherit this shell's limit.
raise_fd_limit() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    FD_LIMIT=$(ulimit -n)
    local need=$((2 * IDLE_CONNECTIONS + 1024))
    ((need <= FD_LIMIT)) ||
        die "IDLE_CONNECTIONS=$IDLE_CONNECTIONS needs $need fds in a gateway; the limit is $FD_LIMIT"
}

# --- configs ---------------------------------------------------------------

pick_ports() {
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 9)
    BACKEND_PORT=${ports[0]}
    WSGATE_PORT=${ports[1]}
    WSGATE_TLS_PORT=${ports[2]}
    ADMIN_PORT=${ports[3]}
    # nginx listens here, or the reference wsgate in its place.
    NGINX_PORT=${ports[4]}
    NGINX_TLS_PORT=${ports[5]}
    REF_ADMIN_PORT=${ports[6]}
    HAPROXY_PORT=${ports[7]}
    HAPROXY_TLS_PORT=${ports[8]}
}

# A CA and a server certificate for 127.0.0.1 signed by it, ECDSA P-256 for
# every server alike: $TMP/ca.pem, $TMP/cert.pem, $TMP/key.pem, and
# $TMP/haproxy.pem (certificate and key in one file, as HAProxy wants).
make_certificates() {
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj /CN=wsgate-bench-ca \
        -keyout "$TMP/ca-key.pem" -out "$TMP/ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj /CN=127.0.0.1 -keyout "$TMP/key.pem" \
        -out "$TMP/cert.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$TMP/cert.ext"
    openssl x509 -req -in "$TMP/cert.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca-key.pem" \
        -CAcreateserial -days 2 -extfile "$TMP/cert.ext" -out "$TMP/cert.pem" 2>/dev/null
    cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/haproxy.pem"
}

# wsgate.toml for the gateway under test; wsgate-reference.toml for the
# metrics-off or log-on reference on the reference port.
write_wsgate_config() {
    wsgate_config "$WSGATE_PORT" "$WSGATE_TLS_PORT" "$ADMIN_PORT" true '"off"' >"$TMP/wsgate.toml"
    if [[ "$REFERENCE" == log-on ]]; then
        wsgate_config "$NGINX_PORT" "$NGINX_TLS_PORT" "$REF_ADMIN_PORT" true "\"$TMP/access.log\"" \
            >"$TMP/wsgate-reference.toml"
    elif [[ "$REFERENCE" == limits-on ]]; then
        wsgate_config "$NGINX_PORT" "$NGINX_TLS_PORT" "$REF_ADMIN_PORT" true '"off"' limits \
            >"$TMP/wsgate-reference.toml"
    elif [[ "$REFERENCE" == binary ]]; then
        wsgate_config "$NGINX_PORT" "$NGINX_TLS_PORT" "$REF_ADMIN_PORT" true '"off"' \
            >"$TMP/wsgate-reference.toml"
    else
        wsgate_config "$NGINX_PORT" "$NGINX_TLS_PORT" "$REF_ADMIN_PORT" false '"off"' \
            >"$TMP/wsgate-reference.toml"
    fi
}

wsgate_config() {
    local port=$1 tls_port=$2 admin=$3 metrics=$4 access=$5 limits=${6:-}
    local server="" route_limits="" session_limits=""
    if [[ "$limits" == limits ]]; then
        server='[server]
max_connections_per_client = 1000000'
        route_limits='request_rate = "100000000/s"'
        session_limits=', handshake_rate = "100000000/s", max_sessions_per_client = 1000000, client_message_rate = "1000000000/s", client_byte_rate = "1000GiB/s"'
    fi
    # ping_interval 0s: the gateway must not inject pings into the
    # measurements (nginx sends none either).
    cat <<EOF
[[listeners]]
bind = "127.0.0.1:$port"

[[listeners]]
bind = "127.0.0.1:$tls_port"
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }

[admin]
bind = "127.0.0.1:$admin"
metrics = $metrics

# nginx and HAProxy log nothing here either (but the log-on reference).
[log]
access = $access

$server

[[routes]]
name = "ws"
path = "/"
$route_limits
websocket = { backends = ["ws://127.0.0.1:$BACKEND_PORT"], max_message_size = "16MiB", ping_interval = "0s"$session_limits }
EOF
}

# The usual nginx WebSocket proxy setup. worker_connections counts client
# and upstream connections alike, and accept() may favour one worker, so
# each worker gets room for every idle session twice over.
write_nginx_config() {
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx.conf" <<EOF
# Workers must read the mode-0700 temp dir, and we run as root.
user root;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $FD_LIMIT;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;

events {
    worker_connections $((2 * IDLE_CONNECTIONS + 1024));
}

http {
    access_log off;

    # Keep every path nginx may write inside the temp dir.
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;

    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        # Resumption as nginx's docs set it up (tickets are on by default).
        ssl_session_tickets on;
        ssl_session_cache shared:SSL:10m;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
        }
    }
}
EOF
}

# HAProxy as its documentation sets up WebSockets: `mode http` (it
# recognises the upgrade and switches to tunnelling), `timeout tunnel` for
# the sessions, TLS on the second bind.
write_haproxy_config() {
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $HAPROXY_THREADS
    # Counts client connections; HAProxy reserves two fds for each.
    maxconn $((IDLE_CONNECTIONS + 512))
    log stderr local0 warning

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h

frontend ws
    bind 127.0.0.1:$HAPROXY_PORT
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $TMP/haproxy.pem
    default_backend echo

backend echo
    server echo 127.0.0.1:$BACKEND_PORT
EOF
    haproxy -c -q -f "$TMP/haproxy.cfg" || die "haproxy rejected $TMP/haproxy.cfg"
}

# --- servers ---------------------------------------------------------------

start_backend() {
    "$WSGATE_BIN" echo-server --listen "127.0.0.1:$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
    BACKEND_PID=$!
    wait_ready backend "$BACKEND_PID" "$BACKEND_PORT" "$TMP/backend.log"
}

# Starts wsgate and the references; sets SERVERS, the helper's --server
# arguments (wsgate first).
start_gateways() {
    if [[ "$REFERENCE" == nginx ]]; then
        start_wsgate_and_nginx
        haproxy -db -f "$TMP/haproxy.cfg" >>"$TMP/haproxy.log" 2>&1 &
        HAPROXY_PID=$!
        wait_ready haproxy "$HAPROXY_PID" "$HAPROXY_PORT" "$TMP/haproxy.log"
        SERVERS=(--server "wsgate:$WSGATE_PORT:$WSGATE_TLS_PORT:$WSGATE_PID"
            --server "nginx:$NGINX_PORT:$NGINX_TLS_PORT:$NGINX_PID"
            --server "haproxy:$HAPROXY_PORT:$HAPROXY_TLS_PORT:$HAPROXY_PID")
        return
    fi
    "$WSGATE_BIN" --config "$TMP/wsgate.toml" >>"$TMP/wsgate.log" 2>&1 &
    WSGATE_PID=$!
    local reference_bin=$WSGATE_BIN
    [[ "$REFERENCE" == binary ]] && reference_bin=$REFERENCE_BIN
    "$reference_bin" --config "$TMP/wsgate-reference.toml" >>"$TMP/wsgate-reference.log" 2>&1 &
    # Stopped and cleaned up through the same variable as nginx.
    NGINX_PID=$!
    wait_ready wsgate "$WSGATE_PID" "$WSGATE_PORT" "$TMP/wsgate.log"
    wait_ready "$REFERENCE" "$NGINX_PID" "$NGINX_PORT" "$TMP/wsgate-reference.log"
    SERVERS=(--server "wsgate:$WSGATE_PORT:$WSGATE_TLS_PORT:$WSGATE_PID"
        --server "$REFERENCE:$NGINX_PORT:$NGINX_TLS_PORT:$NGINX_PID")
}

stop_gateways() {
    stop_tree "$WSGATE_PID"
    stop_tree "$NGINX_PID"
    stop_tree "$HAPROXY_PID"
    WSGATE_PID=""
    NGINX_PID=""
    HAPROXY_PID=""
}

# perf comes as linux-perf; without it the counting round is skipped.
install_perf() {
    command -v perf >/dev/null && return
    log "installing linux-perf"
    DEBIAN_FRONTEND=noninteractive apt-get install -y linux-perf ||
        log "no perf: system calls and context switches will not be counted"
}

# --- main --------------------------------------------------------------------

main() {
    trap 'cleanup "$HELPER_PID" "$WSGATE_PID" "$NGINX_PID" "$HAPROXY_PID" "$BACKEND_PID"' EXIT
    trap 'exit 130' INT TERM # run the EXIT trap on Ctrl-C as well

    case "$REFERENCE" in
    nginx | metrics-off | log-on | limits-on) ;;
    binary) [[ -x "${REFERENCE_BIN:-}" ]] || die "REFERENCE=binary needs REFERENCE_BIN, an executable wsgate" ;;
    *) die "REFERENCE must be nginx, log-on, limits-on, metrics-off or binary, not $REFERENCE" ;;
    esac
    install_missing_tools haproxy openssl
    install_perf
    build
    raise_fd_limit
    TMP=$(mktemp -d /tmp/wsgate-wsbench.XXXXXX)
    pick_ports
    make_certificates
    write_wsgate_config
    write_nginx_config
    check_nginx_config
    write_haproxy_config
    start_backend

    local common=(--wsload "$WSLOAD_BIN" --backend "backend:$BACKEND_PORT:0:$BACKEND_PID"
        --results "$TMP/results.json" --ca "$TMP/ca.pem")
    [[ -n "${WSLOAD_THREADS:-}" ]] && common+=(--wsload-threads "$WSLOAD_THREADS")

    log "$("$NGINX" -v 2>&1), $(haproxy -v | head -n 1), $(nproc) cores, $ROUNDS rounds, open-file limit $FD_LIMIT"
    log "machine load before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"

    # RSS per idle session is measured on freshly started gateways: memory
    # that earlier tests (or earlier rounds) left in the allocator would be
    # reused by the new sessions and hide their cost.
    local round
    for ((round = 1; IDLE_CONNECTIONS > 0 && round <= ROUNDS; round++)); do
        log "idle sessions, round $round/$ROUNDS: fresh gateways"
        start_gateways
        helper idle "${common[@]}" --round "$round" "${SERVERS[@]}" \
            --connections "$IDLE_CONNECTIONS"
        stop_gateways
    done

    log "throughput rounds"
    start_gateways
    helper run "${common[@]}" "${SERVERS[@]}" \
        --rounds "$ROUNDS" --duration "$DURATION" \
        --echo-connections "$ECHO_CONNECTIONS" \
        --bulk-count "$BULK_COUNT" --bulk-window "$BULK_WINDOW" \
        --hs-connections "$HS_CONNECTIONS" --idle-connections "$IDLE_CONNECTIONS" \
        ${KINDS:+--kinds "$KINDS"}
    log "machine load after measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
}

main "$@"
