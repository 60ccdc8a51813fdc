#!/usr/bin/env bash
# A/B of two builds of pipegate on the same machine in the same minutes: CPU seconds (gateway
# plus bridge) and wall time of one FIFO transfer, `pipegate cat` and `pipegate write`, in
# alternating pairs. CPU time per transfer varies much less than throughput on a shared
# 2-core machine, which is why this complements bench/run.sh for "did a change slow us down".
# Loopback (127.0.0.1) only; the PKI is made with certs/pipegate-certs in a temporary directory.
#
# Usage: bench/ab_cpu.sh BASE_BIN_DIR AFTER_BIN_DIR [PAIRS (default 4)] [MIB (default 512)]
# Each BIN_DIR holds pipegated and pipegate. Prints one line per transfer, then the medians.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${1:?usage: bench/ab_cpu.sh BASE_BIN_DIR AFTER_BIN_DIR [PAIRS] [MIB]}
AFTER=${2:?usage: bench/ab_cpu.sh BASE_BIN_DIR AFTER_BIN_DIR [PAIRS] [MIB]}
PAIRS=${3:-4}
SIZE=$(( ${4:-512} * 1024 * 1024 ))
TMO=120  # Seconds any one transfer may take.
for d in "$BASE" "$AFTER"; do
  [[ -x $d/pipegated && -x $d/pipegate ]] || { echo "ab_cpu: no pipegated/pipegate in $d" >&2; exit 2; }
done
command -v /usr/bin/time >/dev/null || { echo "ab_cpu: needs GNU time (apt-get install time)" >&2; exit 2; }

W=$(mktemp -d /tmp/pipegate-ab.XXXXXX)
GW_PID=""
cleanup() {
  [[ -n $GW_PID ]] && kill "$GW_PID" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
CERTS=$ROOT/certs/pipegate-certs
{
  bash "$CERTS" ca --dir "$W/pki" --cn "pipegate ab CA"
  bash "$CERTS" gateway --dir "$W/pki" --cn pipegate-gateway --dns localhost --ip 127.0.0.1
  bash "$CERTS" client --dir "$W/pki" --id alice
} >"$W/pki.log" 2>&1
export PIPEGATE_CERT=$W/pki/alice.crt PIPEGATE_KEY=$W/pki/alice.key PIPEGATE_CA=$W/pki/ca.crt
head -c "$SIZE" /dev/urandom >"$W/data"
TICK=$(getconf CLK_TCK)
cat >"$W/gw.toml" <<EOF
[gateway]
listen = ["127.0.0.1:0"]
cert = "$W/pki/gateway.crt"
key = "$W/pki/gateway.key"
client_ca = "$W/pki/ca.crt"

[[export]]
name = "src"
kind = "fifo"
access = "read"
path = "$W/src.fifo"
create = true
allow = ["alice"]

[[export]]
name = "dst"
kind = "fifo"
access = "write"
path = "$W/dst.fifo"
create = true
allow = ["alice"]
EOF

cpu_of() { awk -v t="$TICK" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }

# transfer NAME BIN_DIR cat|write: one transfer through a fresh gateway; prints a result line.
transfer() {
  local name=$1 dir=$2 how=$3 port="" i g0 g1 t0 t1 bridge
  "$dir/pipegated" --config "$W/gw.toml" 2>"$W/gw.log" &
  GW_PID=$!
  for ((i = 0; i < 200; i++)); do
    port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$W/gw.log" | head -n 1)
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { echo "ab_cpu: $name gateway did not start: $(cat "$W/gw.log")" >&2; exit 1; }
  g0=$(cpu_of "$GW_PID")
  t0=$(date +%s.%N)
  if [[ $how == cat ]]; then
    timeout "$TMO" cat "$W/data" >"$W/src.fifo" &
    bridge=$( { timeout "$TMO" /usr/bin/time -f "%U %S" "$dir/pipegate" --wait 10 \
      cat "pipe://127.0.0.1:$port/src" >"$W/out"; } 2>&1 | tail -n 1)
  else
    timeout "$TMO" cat "$W/dst.fifo" >"$W/out" &
    bridge=$( { timeout "$TMO" /usr/bin/time -f "%U %S" "$dir/pipegate" --wait 10 \
      write "pipe://127.0.0.1:$port/dst" <"$W/data"; } 2>&1 | tail -n 1)
  fi
  wait $!
  t1=$(date +%s.%N)
  g1=$(cpu_of "$GW_PID")
  kill "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=""
  cmp -s "$W/data" "$W/out" || { echo "ab_cpu: $name $how: the bytes differ" >&2; exit 1; }
  awk -v n="$name" -v h="$how" -v g0="$g0" -v g1="$g1" -v b="$bridge" -v t0="$t0" -v t1="$t1" \
    -v s="$SIZE" 'BEGIN { split(b, u, " "); g = g1 - g0; c = u[1] + u[2]; w = t1 - t0;
      printf "%s %s gateway_cpu=%.2f bridge_cpu=%.2f total_cpu=%.2f wall=%.2f MiB/s=%.0f\n",
             n, h, g, c, g + c, w, s / 1048576 / w }'
}

for ((p = 1; p <= PAIRS; p++)); do
  for how in cat write; do
    transfer base "$BASE" "$how"
    transfer after "$AFTER" "$how"
  done
done | tee "$W/results"
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", (v[int((NR + 1) / 2)] + v[int(NR / 2) + 1]) / 2 }'; }
echo "medians over $PAIRS pairs of $((SIZE / 1048576)) MiB:"
for how in cat write; do
  for name in base after; do
    cpu=$(awk -v n="$name" -v h="$how" '$1 == n && $2 == h { split($5, c, "="); print c[2] }' \
      "$W/results" | median)
    mib=$(awk -v n="$name" -v h="$how" '$1 == n && $2 == h { split($7, m, "="); print m[2] }' \
      "$W/results" | median)
    printf '  %-5s %-5s total_cpu=%s s  MiB/s=%s\n' "$name" "$how" "$cpu" "$mib"
  done
done
