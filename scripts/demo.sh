#!/usr/bin/env bash
# A two-minute tour of pipegate on one machine, from a fresh checkout:
#   - installs missing Debian packages (scripts/deps.sh) and builds Release into build/;
#   - makes a throwaway CA, gateway and client certificates (certs/pipegate-certs);
#   - starts pipegated on 127.0.0.1 (a free port) exporting two FIFOs it creates itself;
#   - reads lines a local program writes into one FIFO with `pipegate cat`;
#   - sends a line into the other FIFO with `pipegate write`, for a local reader.
# Everything it makes lives in one temporary directory, removed on exit whatever happens.
#
# Usage: scripts/demo.sh
# Environment: PIPEGATE_BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BUILD=${PIPEGATE_BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}

if [[ -t 1 ]]; then
  step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
  step() { printf '\n==> %s\n' "$*"; }
fi
show() { printf '    $ %s\n' "$*"; }
die() {
  echo "demo.sh: $*" >&2
  exit 1
}

# ---- Clean-up: every process we start and the temporary directory. ----
WORK=""
GATEWAY_PID=""
BG_PIDS=()
cleanup() {
  local pid
  for pid in "${BG_PIDS[@]+"${BG_PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  if [[ -n $GATEWAY_PID ]] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    wait_for_exit "$GATEWAY_PID" 15 || kill -KILL "$GATEWAY_PID" 2>/dev/null || true
  fi
  if [[ -n $WORK ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to SECONDS for PID (a child of this shell) to exit; returns 1 on timeout.
wait_for_exit() {
  local pid=$1 seconds=$2 i
  for ((i = 0; i < seconds * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# Waits for background job PID with a timeout and returns its exit status (124 on timeout).
wait_status() {
  local pid=$1 seconds=$2 rc=0
  if ! wait_for_exit "$pid" "$seconds"; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 124
  fi
  wait "$pid" || rc=$?
  return "$rc"
}

# ---- 1. Dependencies and build. ----
step "Checking Debian packages"
./scripts/deps.sh

step "Building Release into $BUILD/"
# Warnings are not errors here (a newer compiler must not break a demo); CI uses -Werror.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPIPEGATE_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target pipegated pipegate
PIPEGATED=$ROOT/$BUILD/pipegated
PIPEGATE=$ROOT/$BUILD/pipegate
[[ -x $PIPEGATED && -x $PIPEGATE ]] || die "build did not produce $PIPEGATED and $PIPEGATE"

WORK=$(mktemp -d /tmp/pipegate-demo.XXXXXX)

# ---- 2. A throwaway PKI. ----
step "Making a development CA, a gateway certificate and a client certificate"
PKI=$WORK/pki
CERTS=$ROOT/certs/pipegate-certs
show "certs/pipegate-certs ca --dir $PKI"
"$CERTS" ca --dir "$PKI"
show "certs/pipegate-certs gateway --dir $PKI        # localhost, 127.0.0.1, ::1"
"$CERTS" gateway --dir "$PKI"
show "certs/pipegate-certs client --dir $PKI --id demo-client"
"$CERTS" client --dir "$PKI" --id demo-client

# ---- 3. Gateway configuration and start. ----
step "Writing $WORK/pipegated.toml"
CONFIG=$WORK/pipegated.toml
cat >"$CONFIG" <<EOF
[gateway]
listen = ["127.0.0.1:0"]          # port 0: any free port (the log says which)
cert = "$PKI/gateway.crt"
key = "$PKI/gateway.key"
client_ca = "$PKI/ca.crt"
workers = 1

# A service's log FIFO: remote clients read what local programs write.
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "$WORK/logs.fifo"
create = true
mode = "0600"
allow = ["demo-client"]

# A command FIFO: remote clients write, a local program reads.
[[export]]
name = "inbox"
kind = "fifo"
access = "write"
path = "$WORK/inbox.fifo"
create = true
mode = "0600"
allow = ["demo-client"]
EOF
sed 's/^/    /' "$CONFIG"
show "pipegated --check-config $CONFIG"
"$PIPEGATED" --check-config "$CONFIG"

step "Starting pipegated"
LOG=$WORK/pipegated.log
show "pipegated --config $CONFIG 2>$LOG &"
"$PIPEGATED" --config "$CONFIG" 2>"$LOG" &
GATEWAY_PID=$!
PORT=""
for ((i = 0; i < 100; i++)); do
  PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$LOG" | head -n 1)
  [[ -n $PORT ]] && break
  kill -0 "$GATEWAY_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $PORT ]]; then
  cat "$LOG" >&2
  die "pipegated did not log 'listening on 127.0.0.1:PORT'"
fi
sed 's/^/    | /' "$LOG"
[[ -p $WORK/logs.fifo && -p $WORK/inbox.fifo ]] || die "pipegated did not create the FIFOs"
GW=pipe://127.0.0.1:$PORT
echo "    pipegated (pid $GATEWAY_PID) listens on port $PORT and created logs.fifo and inbox.fifo"

# The client finds its certificate, key and CA here (or in --cert/--key/--ca, or in
# ~/.config/pipegate/config.toml).
export PIPEGATE_CERT=$PKI/demo-client.crt
export PIPEGATE_KEY=$PKI/demo-client.key
export PIPEGATE_CA=$PKI/ca.crt

# ---- 4. ls ----
step "Listing the exports this identity may use"
show "pipegate ls $GW"
"$PIPEGATE" ls "$GW"

# ---- 5. cat: a local writer, a remote reader. ----
step "Reading a FIFO remotely: local writer -> logs.fifo -> pipegated -> TLS -> pipegate cat"
show "pipegate cat $GW/logs > cat.out &"
"$PIPEGATE" cat "$GW/logs" >"$WORK/cat.out" &
CAT_PID=$!
BG_PIDS+=("$CAT_PID")
# Opening a FIFO for writing blocks until it has a reader: here, until pipegated opens it for
# the remote reader. The timeout only guards against a demo that went wrong.
show "for i in 1 2 3 4 5; do echo \"log line \$i at \$(date +%T.%3N)\"; sleep 0.2; done > $WORK/logs.fifo"
# shellcheck disable=SC2016  # Expanded by the inner shell.
timeout 20 bash -c '
  for i in 1 2 3 4 5; do
    echo "log line $i at $(date +%T.%3N)"
    sleep 0.2
  done >"$1"' _ "$WORK/logs.fifo" || die "the local writer could not write into logs.fifo"
# The writer closed the FIFO: EOF travels to the remote reader, which exits 0.
rc=0
wait_status "$CAT_PID" 20 || rc=$?
echo "    pipegate cat exited with status $rc after the local writer closed the FIFO; it printed:"
sed 's/^/    | /' "$WORK/cat.out"
[[ $rc -eq 0 ]] || die "pipegate cat failed (status $rc)"
[[ $(wc -l <"$WORK/cat.out") -eq 5 ]] || die "pipegate cat did not print the 5 lines"

# ---- 6. write: a remote writer, a local reader. ----
step "Writing into a FIFO remotely: pipegate write -> TLS -> pipegated -> inbox.fifo -> local reader"
show "cat $WORK/inbox.fifo > inbox.out &      # the local program that reads the FIFO"
cat "$WORK/inbox.fifo" >"$WORK/inbox.out" &
READER_PID=$!
BG_PIDS+=("$READER_PID")
# --wait: the local reader may not have opened the FIFO yet ("no reader" otherwise).
show "printf 'restart worker 7\\nreload config\\n' | pipegate write --lines --wait 5 $GW/inbox"
rc=0
printf 'restart worker 7\nreload config\n' | "$PIPEGATE" write --lines --wait 5 "$GW/inbox" || rc=$?
echo "    pipegate write exited with status $rc: the gateway confirmed every byte is in the FIFO"
[[ $rc -eq 0 ]] || die "pipegate write failed (status $rc)"
# The remote writer closed, so the gateway closed its write end: the local reader sees EOF.
rc=0
wait_status "$READER_PID" 10 || rc=$?
echo "    the local reader got EOF (status $rc) after reading:"
sed 's/^/    | /' "$WORK/inbox.out"
[[ $(cat "$WORK/inbox.out") == $'restart worker 7\nreload config' ]] ||
  die "the local reader did not get the two lines"

# ---- 7. An error, as a user sees it. ----
step "Errors name the address and the cause, and the exit status says which (see README)"
show "pipegate cat $GW/nope"
rc=0
"$PIPEGATE" cat "$GW/nope" || rc=$?
echo "    exit status $rc (4 = no such pipe)"

# ---- 8. Stop. ----
step "Stopping pipegated (SIGTERM): it removes the FIFOs it created"
kill -TERM "$GATEWAY_PID"
rc=0
wait_status "$GATEWAY_PID" 15 || rc=$?
GATEWAY_PID=""
sed -n '/received SIGTERM/,$p' "$LOG" | sed 's/^/    | /'
echo "    pipegated exited with status $rc"
if [[ -e $WORK/logs.fifo || -e $WORK/inbox.fifo ]]; then
  die "pipegated left its FIFOs behind"
fi

step "Done. Next: README.md has a five-minute walkthrough across two hosts."
