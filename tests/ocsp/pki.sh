#!/usr/bin/env bash
# A CA and two leaves that name an OCSP responder at http://127.0.0.1:PORT,
# made with the openssl CLI (rcgen writes no Authority Information Access):
#   site.pem, site-key.pem   site.test, chain leaf + CA
#   must.pem, must-key.pem   must.test, Must-Staple (TLS feature status_request)
#   gone.pem, gone-key.pem   gone.test, revoked
#   ca.pem, ca-key.pem, index.txt   for `openssl ocsp -index`
#   delegate.pem, delegate-key.pem   a responder the CA delegated to
#                                    (extendedKeyUsage OCSPSigning)
#   impostor.pem, impostor-key.pem   issued by the CA, but not for OCSP
# Usage: pki.sh DIR PORT. Installs openssl from Debian when it is missing.
set -euo pipefail
dir=$1 port=$2
if ! command -v openssl >/dev/null 2>&1; then
    "$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" openssl
fi
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=wsgate-ocsp-test-ca \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
: >index.txt
leaf() {
    local name=$1 serial=$2 extra=$3 state=${4:-V}
    openssl req "${ec[@]}" -subj "/CN=$name.test" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
    printf 'subjectAltName=DNS:%s.test\nbasicConstraints=CA:FALSE\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:%s\n%s' \
        "$name" "$port" "$extra" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -set_serial "0x$serial" \
        -days 2 -extfile "$name.ext" -out "$name-leaf.pem" 2>/dev/null
    cat "$name-leaf.pem" ca.pem >"$name.pem"
    local expiry
    expiry=$(date -u -d '+2 days' +%y%m%d%H%M%SZ)
    local revoked=""
    [[ $state == R ]] && revoked=$(date -u -d '-1 hour' +%y%m%d%H%M%SZ)
    printf '%s\t%s\t%s\t%s\tunknown\t/CN=%s.test\n' "$state" "$expiry" "$revoked" "$serial" "$name" >>index.txt
}
leaf site 1001 ""
leaf must 1002 "tlsfeature=status_request
"
leaf gone 1003 "" R
signer() {
    local name=$1 extra=$2
    openssl req "${ec[@]}" -subj "/CN=$name responder" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\n%s' "$extra" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -set_serial "0x$3" \
        -days 2 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
}
signer delegate "extendedKeyUsage=OCSPSigning
" 2001
signer impostor "extendedKeyUsage=serverAuth
" 2002
