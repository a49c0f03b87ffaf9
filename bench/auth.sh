#!/usr/bin/env bash
# What authentication costs per request: one wsgate serves the same 1 KiB
# file on five routes, without auth, with a JWT (RS256, ES256), and with
# forward auth (each request asked, and decisions cached), and wrk loads
# each route in interleaved rounds; the wsgate process tree's CPU per
# request (user and system) is compared against the route without auth.
# The auth service is nginx answering 204, so it costs little; its own CPU
# is not counted. Not run in CI: it wants a quiet machine.
#
#   bash bench/auth.sh
#
# Environment (defaults in brackets): WSGATE_BIN (unset: cargo build
# --release), ROUNDS [5], DURATION [5], WRK_CONNECTIONS [50], KEEP_TMP.
# Installs nginx-light and wrk from Debian packages when missing (needs
# root), and PyJWT in target/bench-auth-venv to mint the tokens.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
HELPER=$REPO/bench/auth_bench.py
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-50}

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$REPO/bench/common.sh"
STOP_GRACE=5
READY_VERB=answer
ready_check() { curl -sf -o /dev/null "http://127.0.0.1:$1/none/1k.bin"; }

mint_tokens() {
    local venv=$REPO/target/bench-auth-venv
    if ! "$venv/bin/python" -c "import jwt, cryptography" 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet -r "$REPO/tests/auth/requirements.txt"
    fi
    "$venv/bin/python" "$REPO/tests/auth/jwt_tool.py" keys "$TMP"
    RS256=$("$venv/bin/python" "$REPO/tests/auth/jwt_tool.py" mint "$TMP" rs256 '{"exp_in": 86400}')
    ES256=$("$venv/bin/python" "$REPO/tests/auth/jwt_tool.py" mint "$TMP" es256 '{"exp_in": 86400}')
}

write_configs() {
    local jwt="keys = \"$TMP/jwks.json\", algorithms = [\"RS256\", \"ES256\"], issuer = \"https://issuer.test\", audience = \"chat\""
    local verify="http://127.0.0.1:$AUTH_PORT/verify"
    cat >"$TMP/wsgate.toml" <<TOML
[[listeners]]
bind = "127.0.0.1:$WSGATE_PORT"

[admin]
bind = "127.0.0.1:$ADMIN_PORT"

[log]
access = "off"

[[routes]]
name = "none"
path = "/none"
static = { root = "$TMP/files" }

[[routes]]
name = "jwt-rs256"
path = "/rs256"
static = { root = "$TMP/files" }
auth = { jwt = { $jwt } }

[[routes]]
name = "jwt-es256"
path = "/es256"
static = { root = "$TMP/files" }
auth = { jwt = { $jwt } }

[[routes]]
name = "forward"
path = "/forward"
static = { root = "$TMP/files" }
auth = { forward = { backends = ["$verify"] } }

[[routes]]
name = "forward-cached"
path = "/cached"
static = { root = "$TMP/files" }
auth = { forward = { backends = ["$verify"], cache = "60s" } }
TOML
    nginx_config "$TMP/nginx" 1 "
    server {
        listen 127.0.0.1:$AUTH_PORT;
        location /verify { return 204; }
    }" >"$TMP/nginx.conf"
}

main() {
    trap 'cleanup "${HELPER_PID:-}" "${WSGATE_PID:-}" "${NGINX_PID:-}"' EXIT
    trap 'exit 130' INT TERM
    install_missing_tools wrk curl
    build_wsgate
    TMP=$(mktemp -d /tmp/wsgate-auth-bench.XXXXXX)
    mkdir -p "$TMP/files"
    head -c 1024 /dev/urandom >"$TMP/files/1k.bin"
    local ports
    mapfile -t ports < <(python3 "$HELPER" ports 3)
    WSGATE_PORT=${ports[0]} ADMIN_PORT=${ports[1]} AUTH_PORT=${ports[2]} NGINX_PORT=${ports[2]}
    mint_tokens
    write_configs
    check_nginx_config
    # nginx is ready when it answers its /verify.
    ready_check() {
        if [[ $1 == "$AUTH_PORT" ]]; then
            curl -s -o /dev/null "http://127.0.0.1:$1/verify"
        else
            curl -sf -o /dev/null "http://127.0.0.1:$1/none/1k.bin"
        fi
    }
    start_wsgate_and_nginx
    log "wrk -t1 -c$WRK_CONNECTIONS, $(nproc) cores, $ROUNDS rounds of ${DURATION}s"
    helper run --pid "$WSGATE_PID" --port "$WSGATE_PORT" \
        --rounds "$ROUNDS" --duration "$DURATION" --connections "$WRK_CONNECTIONS" \
        --variant "none:/none/1k.bin:" \
        --variant "jwt-rs256:/rs256/1k.bin:Authorization: Bearer $RS256" \
        --variant "jwt-es256:/es256/1k.bin:Authorization: Bearer $ES256" \
        --variant "forward:/forward/1k.bin:Cookie: session=good" \
        --variant "forward-cached:/cached/1k.bin:Cookie: session=good"
}

main "$@"
