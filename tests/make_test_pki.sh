#!/usr/bin/env bash
# Makes the test PKI that unit, loop and integration tests use (a CTest FIXTURES_SETUP step).
# Usage: make_test_pki.sh PATH/TO/pipegate-certs OUTDIR
#
# OUTDIR is replaced as a whole: the PKI is built in a sibling temp directory and renamed into
# place, so a test never sees a half-made PKI.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PATH/TO/pipegate-certs OUTDIR" >&2
  exit 1
fi
script=$1
out=${2%/}

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

certs() {
  bash "$script" "$@" >/dev/null
}

# The test CA and the certificates it signs.
certs ca --dir "$tmp" --cn "pipegate test CA"
certs gateway --dir "$tmp" --cn pipegate-gateway --dns localhost --ip 127.0.0.1 --ip ::1
certs client --dir "$tmp" --id alice --dns alice.example --uri spiffe://example.org/ci/alice
certs client --dir "$tmp" --id bob
certs client --dir "$tmp" --id alice --out expired --expired
certs client --dir "$tmp" --id alice --out notyet --not-yet-valid
certs client --dir "$tmp" --id alice --out wrongeku --eku serverAuth
certs gateway --dir "$tmp" --out gateway-wrongname --dns wrong.example
certs gateway --dir "$tmp" --out gateway-expired --dns localhost --ip 127.0.0.1 --ip ::1 --expired
# RSA keys work as well as ECDSA ones, on both sides.
certs gateway --dir "$tmp" --out gateway-rsa --key-type rsa
certs client --dir "$tmp" --id carol --key-type rsa
# A second gateway certificate with a new key, for rotation under live streams.
certs gateway --dir "$tmp" --out gateway-rotated --cn pipegate-gateway-rotated
# mallory is revoked in crl.pem; crl-empty.pem revokes nobody.
certs client --dir "$tmp" --id mallory
certs crl --dir "$tmp" --out "$tmp/crl-empty.pem"
certs crl --dir "$tmp" --revoke "$tmp/mallory.crt"

# alice's key under another name (CN eve), signed by the test CA: a session made with alice's
# certificate must not be resumed with this one, although the key is the same.
openssl req -new -key "$tmp/alice.key" -subj "/CN=eve" -out "$tmp/alice-as-eve.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$tmp/alice-as-eve.ext"
openssl x509 -req -in "$tmp/alice-as-eve.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
  -CAcreateserial -days 30 -sha256 -extfile "$tmp/alice-as-eve.ext" \
  -out "$tmp/alice-as-eve.crt" 2>/dev/null
cp "$tmp/alice.key" "$tmp/alice-as-eve.key"
rm -f "$tmp/alice-as-eve.csr" "$tmp/alice-as-eve.ext"

# A second, foreign CA: its certificates look right but must be refused.
certs ca --dir "$tmp/other" --cn "pipegate foreign CA"
certs client --dir "$tmp/other" --id alice
certs gateway --dir "$tmp/other" --dns localhost --ip 127.0.0.1 --ip ::1

# Sanity checks, so that a broken script fails here rather than as a puzzling TLS test.
check() {
  local expect=$1 purpose=$2 ca=$3 cert=$4
  if openssl verify -purpose "$purpose" -CAfile "$ca" "$cert" >/dev/null 2>&1; then
    [[ $expect == ok ]] || { echo "$0: $cert unexpectedly verifies" >&2; exit 1; }
  else
    [[ $expect == fail ]] || { echo "$0: $cert does not verify" >&2; exit 1; }
  fi
}
check ok sslserver "$tmp/ca.crt" "$tmp/gateway.crt"
check ok sslclient "$tmp/ca.crt" "$tmp/alice.crt"
check ok sslclient "$tmp/ca.crt" "$tmp/bob.crt"
check ok sslclient "$tmp/ca.crt" "$tmp/alice-as-eve.crt"
check fail sslclient "$tmp/ca.crt" "$tmp/expired.crt"
check fail sslclient "$tmp/ca.crt" "$tmp/notyet.crt"
check fail sslclient "$tmp/ca.crt" "$tmp/wrongeku.crt"
check fail sslserver "$tmp/ca.crt" "$tmp/gateway-expired.crt"
check fail sslclient "$tmp/ca.crt" "$tmp/other/alice.crt"
check fail sslserver "$tmp/ca.crt" "$tmp/other/gateway.crt"
check ok sslserver "$tmp/other/ca.crt" "$tmp/other/gateway.crt"
check ok sslserver "$tmp/ca.crt" "$tmp/gateway-rsa.crt"
check ok sslclient "$tmp/ca.crt" "$tmp/carol.crt"
check ok sslserver "$tmp/ca.crt" "$tmp/gateway-rotated.crt"
if openssl verify -crl_check -CRLfile "$tmp/crl.pem" -CAfile "$tmp/ca.crt" "$tmp/mallory.crt" \
  >/dev/null 2>&1; then
  echo "$0: mallory.crt is not revoked by crl.pem" >&2
  exit 1
fi
openssl verify -crl_check -CRLfile "$tmp/crl.pem" -CAfile "$tmp/ca.crt" "$tmp/alice.crt" >/dev/null
openssl verify -crl_check -CRLfile "$tmp/crl-empty.pem" -CAfile "$tmp/ca.crt" "$tmp/mallory.crt" \
  >/dev/null

chmod 755 "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "test PKI in $out"
