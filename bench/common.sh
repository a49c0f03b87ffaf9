# shellcheck shell=bash
# What the bench/*.sh scripts share: sourced, not run.
#
# The sourcing script sets, before calling into here:
#   REPO, HELPER         the repo root and its Python helper
#   STOP_GRACE           seconds stop_tree waits between TERM and KILL
#   ready_check PORT     a function: is the server on PORT ready?
#   READY_VERB           what ready_check waits for, for the timeout
#                        message ("did not $READY_VERB on port ...")
#   TMP, WSGATE_PORT, ADMIN_PORT, NGINX_PORT, with wsgate.toml and
#                        nginx.conf written to $TMP, before starting servers

TMP=""
WSGATE_PID=""
NGINX_PID=""
HELPER_PID=""

die() { echo "${0##*/}: $*" >&2; exit 1; }
log() { echo "==> $*"; }

# --- test data ---------------------------------------------------------------

# The files static.sh serves and proxy.sh's backend serves: 1k.bin, 1m.bin
# and 100m.bin in $TMP/files.
make_files() {
    mkdir -p "$TMP/files"
    # Random bytes, so no layer along the way can gain from compression.
    head -c 1024 /dev/urandom >"$TMP/files/1k.bin"
    head -c $((1024 * 1024)) /dev/urandom >"$TMP/files/1m.bin"
    head -c $((100 * 1000 * 1000)) /dev/urandom >"$TMP/files/100m.bin"
}

# --- nginx ------------------------------------------------------------------

# nginx_config DIR WORKERS HTTP_BLOCK: the frame of the static and proxy
# benchmarks' nginx configs, printed to stdout (no access log, every temp
# path inside DIR); HTTP_BLOCK goes inside http { }.
nginx_config() {
    local dir=$1 workers=$2 server=$3
    mkdir -p "$dir"
    cat <<EOF
# Workers must read the mode-0700 temp dir, and we run as root.
user root;
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    default_type application/octet-stream;
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$server
}
EOF
}

# --- tools -----------------------------------------------------------------

# Installs nginx, procps and python3, and each named command (whose Debian
# package has the same name), when missing; sets NGINX.
install_missing_tools() {
    local missing=() cmd
    # nginx lives in /usr/sbin, which a non-login PATH may lack.
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    command -v pgrep >/dev/null || missing+=(procps)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# take_or_build VAR BUILT CARGO_ARGS...: a binary given in $VAR is used as
# is (so a run need not wait for, or disturb, a build); else cargo builds
# it and VAR becomes $REPO/BUILT.
take_or_build() {
    local var=$1 built=$2
    shift 2
    if [[ -n "${!var:-}" ]]; then
        [[ -x "${!var}" ]] || die "$var=${!var} is not an executable"
        log "using $var=${!var}"
    else
        log "cargo build $*"
        cargo build "$@"
        printf -v "$var" '%s' "$REPO/$built"
    fi
}

build_wsgate() { take_or_build WSGATE_BIN target/release/wsgate --release; }

# --- servers ---------------------------------------------------------------

# -e (here and in start_wsgate_and_nginx): the error log before the config is
# read, else /var/log/nginx.
# The backend of the proxy benchmarks: the nginx of $TMP/backend.conf on
# BACKEND_PORT; sets BACKEND_PID.
start_backend() {
    "$NGINX" -t -q -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend.conf" ||
        die "nginx rejected $TMP/backend.conf"
    "$NGINX" -p "$TMP/backend" -e "$TMP/backend/error.log" -c "$TMP/backend.conf" \
        >>"$TMP/backend.out" 2>&1 &
    BACKEND_PID=$!
    wait_ready backend "$BACKEND_PID" "$BACKEND_PORT" "$TMP/backend/error.log"
}

check_nginx_config() {
    "$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" ||
        die "nginx rejected $TMP/nginx.conf"
}

# Appends to the logs: websocket.sh starts fresh gateways every idle round.
start_wsgate_and_nginx() {
    # shellcheck disable=SC2153  # set by the environment or build_wsgate
    "$WSGATE_BIN" --config "$TMP/wsgate.toml" >>"$TMP/wsgate.log" 2>&1 &
    WSGATE_PID=$!
    "$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" \
        >>"$TMP/nginx.out" 2>&1 &
    NGINX_PID=$!
    wait_ready wsgate "$WSGATE_PID" "$WSGATE_PORT" "$TMP/wsgate.log"
    wait_ready nginx "$NGINX_PID" "$NGINX_PORT" "$TMP/nginx/error.log"
}

# Poll until ready_check passes, failing fast if the server exits.
wait_ready() {
    local name=$1 pid=$2 port=$3 logfile=$4 i
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "$name exited during startup (log above)"
        fi
        if ready_check "$port"; then
            log "$name ready on 127.0.0.1:$port (pid $pid)"
            return
        fi
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$name did not $READY_VERB on port $port within 20 s"
}

# TERM the process, then KILL it and any children left behind: a KILLed
# nginx master leaves its workers running.
stop_tree() {
    local pid=$1 children i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    children=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    # shellcheck disable=SC2086  # word splitting of the pid list is wanted
    kill -KILL "$pid" $children 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The EXIT trap: stop_tree every PID given, in order (the helper first, so
# its wrk, curl or wsload goes with it), drop TMP unless KEEP_TMP is set,
# and keep the exit code.
cleanup() {
    local rc=$? pid
    for pid in "$@"; do
        stop_tree "$pid"
    done
    if [[ -n "$TMP" ]]; then
        if [[ -n "${KEEP_TMP:-}" ]]; then
            echo "kept $TMP" >&2
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# Runs the helper in the background and waits, because bash defers a
# trapped signal until a foreground child exits: Ctrl-C would wait out the run.
helper() {
    python3 "$HELPER" "$@" &
    HELPER_PID=$!
    wait "$HELPER_PID"
    HELPER_PID=""
}
