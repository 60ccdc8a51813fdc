#!/usr/bin/env bash
# pipegate benchmark: throughput, round-trip latency and idle memory of pipegate against no
# tunnel, socat with TLS, stunnel and ssh -L, all on this machine over loopback. See
# bench/README.md for what each row measures.
#
# Usage: bench/run.sh [--quick] [--size N[K|M|G]] [--reps N] [--round-trips N]
#                     [--bin-dir DIR] [--no-install] [--out FILE] [--keep]
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/run.sh [OPTIONS]

  --size N         bytes per throughput transfer; K/M/G (binary) suffixes; default 1G
  --quick          smoke run: --size 64M, 1 repetition, 500 round trips
  --reps N         repetitions of each throughput measurement (median reported); default 3
  --round-trips N  64-byte round trips per latency run (after 200 warm-up); default 2000
  --bin-dir DIR    where pipegated and pipegate are; default build/ (else build-bench/, built
                   if missing)
  --no-install     do not apt-get install missing socat, stunnel4 or openssh-server
  --out FILE       also write the result tables (markdown) to FILE
  --keep           keep the temporary directory (logs) instead of removing it
  -h, --help       this text

Loopback only. Every process it starts runs under `timeout` and is stopped on exit.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORIG_ARGS="$*"
SIZE_ARG=1G
REPS=3
RTT=2000
WARMUP=200
LAT_RUNS=3
BIN_DIR=""
INSTALL=1
OUT=""
KEEP=0
# socat's default 8 KiB transfer buffer cripples it (see README); the main socat rows use this.
SOCAT_BUF=131072

die() {
  echo "bench/run.sh: $*" >&2
  exit 1
}
log() { printf '%s\n' "$*" >&2; }

parse_size() {
  local s=${1^^}
  s=${s%IB}
  s=${s%B}
  case $s in
    *[!0-9KMG]* | '' | [KMG]*) return 1 ;;
    *K) echo $((${s%K} * 1024)) ;;
    *M) echo $((${s%M} * 1024 * 1024)) ;;
    *G) echo $((${s%G} * 1024 * 1024 * 1024)) ;;
    *) echo "$s" ;;
  esac
}

while (($#)); do
  case $1 in
    --size) SIZE_ARG=${2:?--size needs a value}; shift 2 ;;
    --size=*) SIZE_ARG=${1#*=}; shift ;;
    --quick) SIZE_ARG=64M; REPS=1; RTT=500; LAT_RUNS=1; shift ;;
    --reps) REPS=${2:?}; shift 2 ;;
    --round-trips) RTT=${2:?}; shift 2 ;;
    --bin-dir) BIN_DIR=${2:?}; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 1 ;;
  esac
done
SIZE=$(parse_size "$SIZE_ARG") || die "bad --size '$SIZE_ARG'"
((SIZE > 0)) || die "--size must be positive"
[[ $REPS =~ ^[1-9][0-9]*$ && $REPS -le 20 ]] || die "--reps must be 1..20"
[[ $RTT =~ ^[1-9][0-9]*$ && $RTT -le 1000000 ]] || die "--round-trips must be 1..1000000"
# Any one transfer must finish at >= 4 MiB/s (plus a minute of slack) or it is killed.
TMO=$((60 + SIZE / (4 * 1024 * 1024)))
# Long-lived helpers (gateway, servers) are killed by `timeout` after this, whatever happens.
LIFE=$((900 + TMO * REPS * 10))

# ---------------------------------------------------------------------------------------------
# Processes and clean-up. Every background job is `timeout ... bash -c CMD`; timeout makes itself
# a process-group leader, so a job is stopped with `kill -- -PID` (its whole pipeline, nothing
# else). PIDS lists the jobs not yet reaped.
W=""
PIDS=()
MADE_RUN_SSHD=0

forget() {
  local p keep=()
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do
    [[ $p == "$1" ]] || keep+=("$p")
  done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# stop PID...: TERM the job's process group, KILL it after 5 s, reap it.
stop() {
  local pid i
  for pid in "$@"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((${#PIDS[@]})); then
    stop "${PIDS[@]}"
  fi
  if ((MADE_RUN_SSHD)); then
    rmdir /run/sshd 2>/dev/null || true
  fi
  if [[ -n $W ]]; then
    if ((KEEP)); then
      log "kept $W"
    else
      rm -rf "$W"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bg VAR OUT ERR SECONDS CMD: runs `bash -c CMD` in the background under timeout; VAR = its pid.
# CMD sees the exported variables below.
bg() {
  local var=$1 out=$2 err=$3 tmo=$4 cmd=$5
  timeout -k 5 "$tmo" bash -c "$cmd" >"$out" 2>"$err" </dev/null &
  PIDS+=("$!")
  printf -v "$var" %s "$!"
}

# await PID...: waits for all; on the first failure stops the rest and returns its status.
await() {
  local left=("$@") done_pid rc p keep
  while ((${#left[@]})); do
    rc=0
    done_pid=""
    wait -n -p done_pid "${left[@]}" || rc=$?
    [[ -n $done_pid ]] || { stop "${left[@]}"; return 127; }
    forget "$done_pid"
    keep=()
    for p in "${left[@]}"; do [[ $p == "$done_pid" ]] || keep+=("$p"); done
    left=("${keep[@]+"${keep[@]}"}")
    if ((rc != 0)); then
      ((${#left[@]} == 0)) || stop "${left[@]}"
      return "$rc"
    fi
  done
}

# The pid a `timeout` job runs (its only child: `bash -c 'exec X'` became X).
child_of() {
  local c="" i
  for ((i = 0; i < 50; i++)); do
    read -r c _ <"/proc/$1/task/$1/children" 2>/dev/null || true
    [[ -n $c ]] && break
    sleep 0.1
  done
  [[ -n $c ]] || return 1
  echo "$c"
}

# True while something listens on 127.0.0.1:PORT (read from /proc, so nothing connects to it).
port_listening() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp
}
# Number of established TCP connections whose local port is PORT.
established() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -c "^ *[0-9]*: [0-9A-F]*:$hex [0-9A-F]*:[0-9A-F]* 01" /proc/net/tcp || true
}
# wait_for SECONDS PID CMD...: polls CMD until true; fails early if PID (a job) died.
wait_for() {
  local secs=$1 pid=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    "$@" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.05
  done
  return 1
}
is_socket() { [[ -S $1 ]]; }
conns_at_least() { (($(established "$1") >= $2)); }

# VmRSS in KiB of PID plus all its descendants.
tree_rss() {
  local pid=$1 kb c sum=0
  kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  sum=${kb:-0}
  for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null || true); do
    sum=$((sum + $(tree_rss "$c")))
  done
  echo "$sum"
}
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

freeport() { "$BT" freeport; }

# ---------------------------------------------------------------------------------------------
# Tools.
have() { command -v "$1" >/dev/null 2>&1; }
APT_UPDATED=0
apt_install() {
  ((INSTALL)) || return 1
  [[ $(id -u) == 0 ]] && have apt-get || return 1
  log "installing Debian package(s): $*"
  if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@" >"$W/apt.log" 2>&1; then
    if ((APT_UPDATED == 0)); then
      APT_UPDATED=1
      timeout 600 apt-get update -qq >>"$W/apt.log" 2>&1 || true
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@" >>"$W/apt.log" 2>&1 ||
        return 1
    else
      return 1
    fi
  fi
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
W=$(mktemp -d /tmp/pipegate-bench.XXXXXX)
chmod 700 "$W"
mkdir -p "$W/bin" "$W/logs"

for t in g++ timeout openssl awk; do have "$t" || die "needs $t"; done

SKIP_SOCAT="" SKIP_STUNNEL="" SKIP_SSH=""
if ! have socat; then apt_install socat || true; fi
have socat || SKIP_SOCAT="socat is not installed and could not be installed"
STUNNEL=""
if ! have stunnel4 && ! have stunnel; then apt_install stunnel4 || true; fi
if have stunnel4; then STUNNEL=$(command -v stunnel4); elif have stunnel; then STUNNEL=$(command -v stunnel); fi
[[ -n $STUNNEL ]] || SKIP_STUNNEL="stunnel4 is not installed and could not be installed"
[[ -z $SKIP_SOCAT || -n $SKIP_STUNNEL ]] || SKIP_STUNNEL="needs socat for the plain TCP relay"
if [[ $(id -u) != 0 ]]; then
  SKIP_SSH="a throwaway sshd that logs in as root needs root"
else
  if [[ ! -x /usr/sbin/sshd ]] || ! have ssh || ! have ssh-keygen; then
    apt_install openssh-server openssh-client || true
  fi
  if [[ ! -x /usr/sbin/sshd ]] || ! have ssh || ! have ssh-keygen; then
    SKIP_SSH="openssh-server/openssh-client are not installed and could not be installed"
  fi
fi
[[ -z $SKIP_SOCAT || -n $SKIP_SSH ]] || SKIP_SSH="needs socat for the plain TCP relay"

# pipegate binaries: copied into the temp dir so a concurrent rebuild cannot swap them mid-run.
if [[ -z $BIN_DIR ]]; then
  if [[ -x $ROOT/build/pipegated && -x $ROOT/build/pipegate ]]; then
    BIN_DIR=$ROOT/build
  else
    BIN_DIR=$ROOT/build-bench
    if [[ ! -x $BIN_DIR/pipegated || ! -x $BIN_DIR/pipegate ]]; then
      log "building Release pipegate and pipegated into $BIN_DIR"
      timeout 3600 cmake -S "$ROOT" -B "$BIN_DIR" -DCMAKE_BUILD_TYPE=Release \
        -DPIPEGATE_BUILD_TESTS=OFF >"$W/logs/cmake.log" 2>&1 || die "cmake failed: $W/logs/cmake.log"
      timeout 3600 cmake --build "$BIN_DIR" -j2 --target pipegate pipegated >>"$W/logs/cmake.log" 2>&1 ||
        die "build failed (see $W/logs/cmake.log)"
    fi
  fi
fi
[[ -x $BIN_DIR/pipegated && -x $BIN_DIR/pipegate ]] || die "no pipegated/pipegate in $BIN_DIR"
cp "$BIN_DIR/pipegated" "$BIN_DIR/pipegate" "$W/bin/"
PGD=$W/bin/pipegated
PG=$W/bin/pipegate
BT=$W/bin/benchtool
g++ -O2 -std=c++20 -pthread -o "$BT" "$ROOT/bench/benchtool.cc" || die "could not compile bench/benchtool.cc"

# ---------------------------------------------------------------------------------------------
# PKI (same script the tests use) and data.
PKI=$W/pki
CERTS_SH=$ROOT/certs/pipegate-certs
{
  bash "$CERTS_SH" ca --dir "$PKI" --cn "pipegate bench CA"
  bash "$CERTS_SH" gateway --dir "$PKI" --cn pipegate-gateway --dns localhost --ip 127.0.0.1
  bash "$CERTS_SH" client --dir "$PKI" --id alice
} >"$W/logs/pki.log" 2>&1 || die "could not make the PKI (see $W/logs/pki.log)"
export PIPEGATE_CERT=$PKI/alice.crt PIPEGATE_KEY=$PKI/alice.key PIPEGATE_CA=$PKI/ca.crt
SRV_TLS="cert=$PKI/gateway.crt,key=$PKI/gateway.key,cafile=$PKI/ca.crt,verify=1"
CLI_TLS="cert=$PKI/alice.crt,key=$PKI/alice.key,cafile=$PKI/ca.crt,verify=1"

DATA=$W/data
log "generating $SIZE bytes of test data"
timeout "$TMO" "$BT" gen "$SIZE" 42 >"$DATA"
read -r _ DIGEST _ < <(timeout "$TMO" "$BT" check <"$DATA")
[[ -n $DIGEST ]] || die "could not digest the test data"

export PG PGD BT DATA SIZE DIGEST W SOCAT_BUF SRV_TLS CLI_TLS TMO

mkfifo "$W/a.fifo" "$W/sock.fifo" "$W/sockdef.fifo" "$W/sockw.fifo" "$W/stun.fifo" "$W/ssh.fifo" \
  "$W/idle.fifo"

# ---------------------------------------------------------------------------------------------
# Servers: echo, gateway.
bg ECHO_JOB "$W/logs/echo.out" "$W/logs/echo.err" "$LIFE" 'exec "$BT" echo "$W/echo.sock"'
wait_for 10 "$ECHO_JOB" is_socket "$W/echo.sock" || die "echo server did not start"

cat >"$W/pipegated.toml" <<EOF
[gateway]
listen = ["127.0.0.1:0"]
cert = "$PKI/gateway.crt"
key = "$PKI/gateway.key"
client_ca = "$PKI/ca.crt"

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

[[export]]
name = "echo"
kind = "unix"
path = "$W/echo.sock"
allow = ["alice"]
EOF
"$PGD" --check-config "$W/pipegated.toml" >"$W/logs/check-config.log" 2>&1 ||
  die "bad gateway config: $(cat "$W/logs/check-config.log")"
bg GW_JOB /dev/null "$W/logs/pipegated.log" "$LIFE" 'exec "$PGD" --config "$W/pipegated.toml"'
GW_PORT=""
for ((i = 0; i < 200; i++)); do
  GW_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$W/logs/pipegated.log" | head -n 1)
  [[ -n $GW_PORT ]] && break
  kill -0 "$GW_JOB" 2>/dev/null || break
  sleep 0.05
done
[[ -n $GW_PORT ]] || die "pipegated did not log 'listening on': $(cat "$W/logs/pipegated.log")"
GW_PID=$(child_of "$GW_JOB") || die "cannot find the pipegated pid"
export GW_PORT

# Results: key -> value, written as the run goes.
declare -A R

# ---------------------------------------------------------------------------------------------
# 3. Idle memory, first: a fresh gateway, before any transfer.
log "== idle memory"
sleep 1
R[mem_pg_idle]=$(tree_rss "$GW_PID")
R[mem_pg_threads]=$(awk '/^Threads:/ {print $2}' "/proc/$GW_PID/status")
# The gateway logs an audit line when it grants a stream; wait for it, then let things settle.
echo_grants() { grep -c 'decision=granted.*export="echo"' "$W/logs/pipegated.log" || true; }
grants_above() { (($(echo_grants) > $1)); }
grants0=$(echo_grants)
bg IDLE_CLI /dev/null "$W/logs/idle-client.err" "$LIFE" \
  'sleep "$TMO" | exec "$PG" connect "pipe://127.0.0.1:$GW_PORT/echo"'
if wait_for 10 "$IDLE_CLI" conns_at_least "$GW_PORT" 1 && wait_for 10 "$IDLE_CLI" grants_above "$grants0"; then
  sleep 1
  R[mem_pg_client]=$(tree_rss "$GW_PID")
  cli_pid=""
  if sh_pid=$(child_of "$IDLE_CLI"); then cli_pid=$(pgrep -P "$sh_pid" -x pipegate || true); fi
  if [[ -n $cli_pid ]]; then R[mem_pg_bridge]=$(tree_rss "$cli_pid"); fi
else
  log "idle pipegate client did not connect: $(cat "$W/logs/idle-client.err")"
fi
stop "$IDLE_CLI"

SOCAT_LAT_PORT="" SOCAT_LAT_SRV=""
if [[ -z $SKIP_SOCAT ]]; then
  SOCAT_LAT_PORT=$(freeport)
  export SOCAT_LAT_PORT
  bg SOCAT_LAT_SRV /dev/null "$W/logs/socat-lat-srv.err" "$LIFE" \
    'exec socat OPENSSL-LISTEN:$SOCAT_LAT_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay,$SRV_TLS UNIX-CONNECT:$W/echo.sock'
  if wait_for 10 "$SOCAT_LAT_SRV" port_listening "$SOCAT_LAT_PORT"; then
    pid=$(child_of "$SOCAT_LAT_SRV")
    sleep 0.5
    R[mem_socat_idle]=$(tree_rss "$pid")
    bg IDLE_CLI /dev/null "$W/logs/idle-socat.err" "$LIFE" \
      'exec socat -u OPENSSL:127.0.0.1:$SOCAT_LAT_PORT,$CLI_TLS STDOUT'
    if wait_for 10 "$IDLE_CLI" conns_at_least "$SOCAT_LAT_PORT" 1; then
      sleep 1
      R[mem_socat_client]=$(tree_rss "$pid")
      cpid=$(child_of "$IDLE_CLI") && R[mem_socat_bridge]=$(tree_rss "$cpid")
    fi
    stop "$IDLE_CLI"
  else
    log "socat TLS echo server did not start: $(cat "$W/logs/socat-lat-srv.err")"
    stop "$SOCAT_LAT_SRV"
    SOCAT_LAT_SRV=""
  fi
fi

# stunnel: server for the throughput relay ([fifo]) and the latency echo ([echo]).
STUN_JOB="" STUN_FIFO_PORT="" STUN_RELAY_PORT="" STUN_ECHO_PORT=""
if [[ -z $SKIP_STUNNEL ]]; then
  STUN_FIFO_PORT=$(freeport)
  STUN_RELAY_PORT=$(freeport)
  STUN_ECHO_PORT=$(freeport)
  cat >"$W/stunnel.conf" <<EOF
foreground = yes
pid =
output = $W/logs/stunnel.log
debug = 4
cert = $PKI/gateway.crt
key = $PKI/gateway.key
CAfile = $PKI/ca.crt
verifyChain = yes
requireCert = yes
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1

[fifo]
accept = 127.0.0.1:$STUN_FIFO_PORT
connect = 127.0.0.1:$STUN_RELAY_PORT

[echo]
accept = 127.0.0.1:$STUN_ECHO_PORT
connect = $W/echo.sock
EOF
  export STUNNEL STUN_FIFO_PORT STUN_RELAY_PORT STUN_ECHO_PORT
  bg STUN_JOB /dev/null "$W/logs/stunnel.err" "$LIFE" 'exec "$STUNNEL" "$W/stunnel.conf"'
  if wait_for 10 "$STUN_JOB" port_listening "$STUN_ECHO_PORT" &&
    wait_for 10 "$STUN_JOB" port_listening "$STUN_FIFO_PORT"; then
    pid=$(child_of "$STUN_JOB")
    sleep 0.5
    R[mem_stunnel_idle]=$(tree_rss "$pid")
    bg IDLE_CLI /dev/null "$W/logs/idle-stunnel.err" "$LIFE" \
      'exec socat -u OPENSSL:127.0.0.1:$STUN_ECHO_PORT,$CLI_TLS STDOUT'
    if wait_for 10 "$IDLE_CLI" conns_at_least "$STUN_ECHO_PORT" 1; then
      sleep 1
      R[mem_stunnel_client]=$(tree_rss "$pid")
    fi
    stop "$IDLE_CLI"
  else
    SKIP_STUNNEL="stunnel did not start: $(tail -n 3 "$W/logs/stunnel.err" "$W/logs/stunnel.log" 2>/dev/null | tr '\n' ' ')"
    stop "$STUN_JOB"
    STUN_JOB=""
  fi
fi

# sshd: a throwaway root-only instance on a loopback port, generated host key, key auth only.
SSHD_JOB="" SSH_JOB="" SSH_FWD_PORT="" SSH_RELAY_PORT=""
if [[ -z $SKIP_SSH ]]; then
  mkdir -p "$W/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/client_key"
  cp "$W/ssh/client_key.pub" "$W/ssh/authorized_keys"
  SSHD_PORT=$(freeport)
  SSH_FWD_PORT=$(freeport)
  SSH_RELAY_PORT=$(freeport)
  cat >"$W/ssh/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $W/ssh/host_key
PidFile none
AuthorizedKeysFile $W/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PermitTTY no
PrintMotd no
LogLevel ERROR
EOF
  echo "[127.0.0.1]:$SSHD_PORT $(cat "$W/ssh/host_key.pub")" >"$W/ssh/known_hosts"
  if [[ ! -d /run/sshd ]]; then
    mkdir -m 0755 /run/sshd && MADE_RUN_SSHD=1
  fi
  export SSHD_PORT SSH_FWD_PORT SSH_RELAY_PORT
  if ! /usr/sbin/sshd -t -f "$W/ssh/sshd_config" >"$W/logs/sshd-t.log" 2>&1; then
    SKIP_SSH="sshd rejected its config: $(head -n 2 "$W/logs/sshd-t.log" | tr '\n' ' ')"
  else
    bg SSHD_JOB /dev/null "$W/logs/sshd.err" "$LIFE" 'exec /usr/sbin/sshd -D -e -f "$W/ssh/sshd_config"'
    if wait_for 10 "$SSHD_JOB" port_listening "$SSHD_PORT"; then
      sshd_pid=$(child_of "$SSHD_JOB")
      sleep 0.5
      R[mem_sshd_idle]=$(tree_rss "$sshd_pid")
      bg SSH_JOB /dev/null "$W/logs/ssh.err" "$LIFE" \
        'exec ssh -F /dev/null -N -p "$SSHD_PORT" -i "$W/ssh/client_key" -o IdentitiesOnly=yes \
           -o BatchMode=yes -o UserKnownHostsFile="$W/ssh/known_hosts" -o GlobalKnownHostsFile=/dev/null \
           -o StrictHostKeyChecking=yes -o ExitOnForwardFailure=yes -o ServerAliveInterval=0 \
           -L "127.0.0.1:$SSH_FWD_PORT:127.0.0.1:$SSH_RELAY_PORT" -L "$W/ssh.sock:$W/echo.sock" \
           root@127.0.0.1'
      if wait_for 20 "$SSH_JOB" port_listening "$SSH_FWD_PORT" && wait_for 10 "$SSH_JOB" is_socket "$W/ssh.sock"; then
        sleep 1
        R[mem_sshd_client]=$(tree_rss "$sshd_pid")
      else
        SKIP_SSH="ssh -L did not come up: $(tail -n 3 "$W/logs/ssh.err" | tr '\n' ' ')"
      fi
    else
      SKIP_SSH="sshd did not start: $(tail -n 3 "$W/logs/sshd.err" | tr '\n' ' ')"
    fi
  fi
  if [[ -n $SKIP_SSH ]]; then
    [[ -z $SSH_JOB ]] || stop "$SSH_JOB"
    [[ -z $SSHD_JOB ]] || stop "$SSHD_JOB"
    SSH_JOB="" SSHD_JOB=""
  fi
fi
[[ -z $SKIP_STUNNEL ]] || log "skipping stunnel: $SKIP_STUNNEL"
[[ -z $SKIP_SSH ]] || log "skipping ssh: $SKIP_SSH"
[[ -z $SKIP_SOCAT ]] || log "skipping socat: $SKIP_SOCAT"

# ---------------------------------------------------------------------------------------------
# 2. Latency: 64-byte round trips through a Unix socket that leads to the echo server.
log "== latency ($LAT_RUNS x $RTT round trips of 64 bytes, $WARMUP warm-up)"
latency() { # latency KEY SOCKET
  local key=$1 sock=$2 r p50s=() p99s=() line job a b
  export PSOCK=$sock RTT WARMUP
  for ((r = 1; r <= LAT_RUNS; r++)); do
    bg job "$W/logs/ping-$key.out" "$W/logs/ping-$key.err" 300 'exec "$BT" pingpong "$PSOCK" 64 "$WARMUP" "$RTT"'
    line=""
    if ! await "$job" || ! read -r line <"$W/logs/ping-$key.out" || [[ -z $line ]]; then
      log "  $key: FAILED: $(cat "$W/logs/ping-$key.err")"
      R[lat_${key}_fail]=1
      return 0
    fi
    read -r a b _ <<<"$line"
    p50s+=("$a")
    p99s+=("$b")
    log "  $key run $r: p50 ${a} us, p99 ${b} us"
  done
  R[lat_${key}_p50]=$(median "${p50s[@]}")
  R[lat_${key}_p99]=$(median "${p99s[@]}")
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

latency none "$W/echo.sock"

bg MOUNT_JOB /dev/null "$W/logs/mount.err" "$LIFE" 'exec "$PG" mount "pipe://127.0.0.1:$GW_PORT/echo" "$W/m.sock"'
if wait_for 10 "$MOUNT_JOB" is_socket "$W/m.sock"; then
  latency pipegate "$W/m.sock"
else
  log "  pipegate mount did not come up: $(cat "$W/logs/mount.err")"
  R[lat_pipegate_fail]=1
fi
stop "$MOUNT_JOB"

if [[ -n $SOCAT_LAT_SRV ]]; then
  bg SOCAT_LAT_CLI /dev/null "$W/logs/socat-lat-cli.err" "$LIFE" \
    'exec socat UNIX-LISTEN:$W/s.sock,fork OPENSSL:127.0.0.1:$SOCAT_LAT_PORT,nodelay,$CLI_TLS'
  if wait_for 10 "$SOCAT_LAT_CLI" is_socket "$W/s.sock"; then
    latency socat "$W/s.sock"
  fi
  stop "$SOCAT_LAT_CLI" "$SOCAT_LAT_SRV"
fi
if [[ -n $STUN_JOB ]]; then
  bg STUN_LAT_CLI /dev/null "$W/logs/stunnel-lat-cli.err" "$LIFE" \
    'exec socat UNIX-LISTEN:$W/st.sock,fork OPENSSL:127.0.0.1:$STUN_ECHO_PORT,nodelay,$CLI_TLS'
  if wait_for 10 "$STUN_LAT_CLI" is_socket "$W/st.sock"; then
    latency stunnel "$W/st.sock"
  fi
  stop "$STUN_LAT_CLI"
fi
if [[ -n $SSH_JOB ]]; then
  latency ssh "$W/ssh.sock"
fi

# ---------------------------------------------------------------------------------------------
# 1. Throughput. Each rep_* function moves $DATA once and sets REP_SECS to the checker's seconds
# (first byte to EOF). Methods are interleaved rep by rep so that drifting machine load hits all alike.
fail_rep() { # fail_rep NAME LOGS...
  local f
  log "  $1: FAILED"
  for f in "${@:2}"; do [[ -s $f ]] && sed 's/^/    | /' "$f" >&2; done
  return 1
}
REP_SECS=""
result_secs() { # result_secs FILE: validates "BYTES DIGEST SECONDS", sets REP_SECS
  local b d s
  REP_SECS=""
  read -r b d s <"$1" || return 1
  [[ $b == "$SIZE" && $d == "$DIGEST" && -n $s ]] || return 1
  REP_SECS=$s
}

rep_none() {
  local o=$W/logs/none rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" 'exec "$BT" check "$SIZE" "$DIGEST" <"$W/a.fifo"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$W/a.fifo"'
  await "$rd" "$wr" && result_secs "$o.out" || fail_rep none "$o.rerr" "$o.werr"
}

rep_pg_cat() {
  local o=$W/logs/pg-cat rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" \
    'set -o pipefail; "$PG" --wait 10 cat "pipe://127.0.0.1:$GW_PORT/src" | "$BT" check "$SIZE" "$DIGEST"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$W/src.fifo"'
  await "$rd" "$wr" && result_secs "$o.out" || fail_rep "pipegate cat" "$o.rerr" "$o.werr"
}

rep_pg_write() {
  local o=$W/logs/pg-write rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" 'exec "$BT" check "$SIZE" "$DIGEST" <"$W/dst.fifo"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec "$PG" --wait 10 write "pipe://127.0.0.1:$GW_PORT/dst" <"$DATA"'
  await "$rd" "$wr" && result_secs "$o.out" || fail_rep "pipegate write" "$o.rerr" "$o.werr"
}

# socat -u PIPE:fifo OPENSSL-LISTEN (server) and socat -u OPENSSL STDOUT | check (client).
rep_socat_buf() { # rep_socat_buf NAME BUF FIFO
  local o=$W/logs/$1 srv wr rd
  export SBUF=$2 SFIFO=$3 SPORT
  SPORT=$(freeport)
  bg srv /dev/null "$o.serr" "$TMO" \
    'exec socat -b "$SBUF" -u PIPE:"$SFIFO" OPENSSL-LISTEN:$SPORT,bind=127.0.0.1,reuseaddr,$SRV_TLS'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$SFIFO"'
  if ! wait_for 30 "$srv" port_listening "$SPORT"; then
    stop "$srv" "$wr"
    fail_rep "$1" "$o.serr" "$o.werr"
    return 1
  fi
  bg rd "$o.out" "$o.rerr" "$TMO" \
    'set -o pipefail; socat -b "$SBUF" -u OPENSSL:127.0.0.1:$SPORT,$CLI_TLS STDOUT | "$BT" check "$SIZE" "$DIGEST"'
  await "$srv" "$wr" "$rd" && result_secs "$o.out" || fail_rep "$1" "$o.serr" "$o.werr" "$o.rerr"
}
rep_socat() { rep_socat_buf socat "$SOCAT_BUF" "$W/sock.fifo"; }
rep_socat_default() { rep_socat_buf socat-default 8192 "$W/sockdef.fifo"; }

# Write direction: socat -u STDIN OPENSSL <data (client), socat -u OPENSSL-LISTEN PIPE:fifo
# (server), check <fifo (local reader).
rep_socat_write() {
  local o=$W/logs/socat-write srv wr rd
  export SPORT
  SPORT=$(freeport)
  bg rd "$o.out" "$o.rerr" "$TMO" 'exec "$BT" check "$SIZE" "$DIGEST" <"$W/sockw.fifo"'
  bg srv /dev/null "$o.serr" "$TMO" \
    'exec socat -b "$SOCAT_BUF" -u OPENSSL-LISTEN:$SPORT,bind=127.0.0.1,reuseaddr,$SRV_TLS PIPE:"$W/sockw.fifo"'
  if ! wait_for 30 "$srv" port_listening "$SPORT"; then
    stop "$srv" "$rd"
    fail_rep socat-write "$o.serr" "$o.rerr"
    return 1
  fi
  bg wr /dev/null "$o.werr" "$TMO" \
    'exec socat -b "$SOCAT_BUF" -u STDIN OPENSSL:127.0.0.1:$SPORT,$CLI_TLS <"$DATA"'
  await "$srv" "$wr" "$rd" && result_secs "$o.out" || fail_rep socat-write "$o.serr" "$o.werr" "$o.rerr"
}

# A plain socat TCP relay of a FIFO on RELAY_PORT, and a client that reads CLIENT_ADDR.
rep_relay() { # rep_relay NAME FIFO RELAY_PORT CLIENT_ADDR
  local o=$W/logs/$1 srv wr rd
  export RFIFO=$2 RPORT=$3 RCLIENT=$4
  bg srv /dev/null "$o.serr" "$TMO" \
    'exec socat -b "$SOCAT_BUF" -u PIPE:"$RFIFO" TCP-LISTEN:$RPORT,bind=127.0.0.1,reuseaddr'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$RFIFO"'
  if ! wait_for 30 "$srv" port_listening "$RPORT"; then
    stop "$srv" "$wr"
    fail_rep "$1" "$o.serr" "$o.werr"
    return 1
  fi
  bg rd "$o.out" "$o.rerr" "$TMO" \
    'set -o pipefail; socat -b "$SOCAT_BUF" -u "$RCLIENT" STDOUT | "$BT" check "$SIZE" "$DIGEST"'
  await "$srv" "$wr" "$rd" && result_secs "$o.out" || fail_rep "$1" "$o.serr" "$o.werr" "$o.rerr"
}
rep_stunnel() {
  rep_relay stunnel "$W/stun.fifo" "$STUN_RELAY_PORT" "OPENSSL:127.0.0.1:$STUN_FIFO_PORT,$CLI_TLS"
}
rep_ssh() { rep_relay ssh "$W/ssh.fifo" "$SSH_RELAY_PORT" "TCP:127.0.0.1:$SSH_FWD_PORT"; }

METHODS=(none pg_cat pg_write)
[[ -n $SKIP_SOCAT ]] || METHODS+=(socat socat_default socat_write)
[[ -n $STUN_JOB ]] && METHODS+=(stunnel)
[[ -n $SSH_JOB ]] && METHODS+=(ssh)
declare -A SECS
log "== throughput ($SIZE bytes, $REPS repetition(s), methods: ${METHODS[*]})"
for ((rep = 1; rep <= REPS; rep++)); do
  for m in "${METHODS[@]}"; do
    [[ -z ${R[tp_${m}_fail]:-} ]] || continue
    if "rep_$m" && [[ -n $REP_SECS ]]; then
      s=$REP_SECS
      SECS[$m]+="$s "
      log "  $m rep $rep/$REPS: $(awk -v b="$SIZE" -v s="$s" 'BEGIN { printf "%.1f MiB/s (%.3f s)", b / 1048576 / s, s }')"
    else
      R[tp_${m}_fail]=1
    fi
  done
done
for m in "${METHODS[@]}"; do
  [[ -z ${R[tp_${m}_fail]:-} && -n ${SECS[$m]:-} ]] || continue
  # shellcheck disable=SC2046,SC2086
  R[tp_${m}]=$(median $(for s in ${SECS[$m]}; do awk -v b="$SIZE" -v s="$s" 'BEGIN { printf "%.1f\n", b / 1048576 / s }'; done))
  R[tp_${m}_runs]=$(for s in ${SECS[$m]}; do awk -v b="$SIZE" -v s="$s" 'BEGIN { printf "%.0f ", b / 1048576 / s }'; done)
done

# The gateway again, idle after all of the above.
sleep 1
R[mem_pg_after]=$(tree_rss "$GW_PID")
R[mem_pg_hwm]=$(awk '/^VmHWM:/ {print $2}' "/proc/$GW_PID/status")

# ---------------------------------------------------------------------------------------------
# Report.
ratio() { # ratio A B -> "A/B x" or "–"
  [[ -n ${1:-} && -n ${2:-} ]] || { echo "–"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "–"; else printf "%.2f×\n", a / b }'
}
val() { [[ -n ${1:-} ]] && echo "$1" || echo "${2:-–}"; }

tp_row() { # tp_row KEY LABEL
  local v=${R[tp_$1]:-} runs=${R[tp_$1_runs]:-}
  if [[ -n ${R[tp_$1_fail]:-} ]]; then
    echo "| $2 | FAILED | | | |"
  else
    echo "| $2 | $(val "$v") | ${runs% } | $(ratio "$v" "${R[tp_none]:-}") | $(ratio "$v" "${R[tp_socat]:-}") |"
  fi
}
lat_row() { # lat_row KEY LABEL
  local a=${R[lat_$1_p50]:-} b=${R[lat_$1_p99]:-}
  if [[ -n ${R[lat_$1_fail]:-} ]]; then
    echo "| $2 | FAILED | | | |"
  else
    echo "| $2 | $(val "$a") | $(val "$b") | $(ratio "$a" "${R[lat_none_p50]:-}") | $(ratio "$a" "${R[lat_socat_p50]:-}") |"
  fi
}
mem_row() { # mem_row KEY LABEL [SOCAT_KEY]
  local v=${R[$1]:-}
  local m="–"
  [[ -z $v ]] || m=$(kib_to_mib "$v")
  local s=""
  [[ -z ${3:-} ]] || s=${R[$3]:-}
  echo "| $2 | $m | $(ratio "$v" "$s") |"
}

report() {
  local skipped=0
  echo "### Throughput: $SIZE bytes ($(kib_to_mib $((SIZE / 1024))) MiB) FIFO to FIFO, median of $REPS"
  echo
  echo "| path | MiB/s (median) | runs, MiB/s | vs no tunnel | vs socat-TLS |"
  echo "|---|---:|---|---:|---:|"
  tp_row none "no tunnel: \`cat FILE > fifo\`, checker reads the fifo"
  tp_row pg_cat "**pipegate cat** (read export → \`pipegate cat\` → checker)"
  if [[ -z $SKIP_SOCAT ]]; then
    tp_row socat "socat-TLS, \`-b $SOCAT_BUF\` (PIPE → OPENSSL-LISTEN → OPENSSL → STDOUT)"
    tp_row socat_default "socat-TLS, socat's default \`-b 8192\`"
  else
    echo "| socat-TLS | skipped: $SKIP_SOCAT | | | |"
  fi
  if [[ -n $STUN_JOB ]]; then
    tp_row stunnel "stunnel (server) → socat TCP relay; socat OPENSSL client"
  else
    echo "| stunnel | skipped: $SKIP_STUNNEL | | | |"
  fi
  if [[ -n $SSH_JOB ]]; then
    tp_row ssh "ssh -L → socat TCP relay; socat TCP client"
  else
    echo "| ssh -L | skipped: $SKIP_SSH | | | |"
  fi
  tp_row pg_write "**pipegate write** (stdin → write export → local checker)"
  [[ -n $SKIP_SOCAT ]] || tp_row socat_write "socat-TLS write direction (STDIN → OPENSSL → PIPE), \`-b $SOCAT_BUF\`"
  echo
  echo "### Latency: 64-byte round trip through a Unix socket to an echo server, $RTT round trips after $WARMUP warm-up (median of $LAT_RUNS runs)"
  echo
  echo "| path | p50 µs | p99 µs | p50 vs no tunnel | p50 vs socat-TLS |"
  echo "|---|---:|---:|---:|---:|"
  lat_row none "no tunnel (echo socket directly)"
  lat_row pipegate "**pipegate mount** (unix export)"
  [[ -n $SKIP_SOCAT ]] || lat_row socat "socat-TLS (UNIX-LISTEN → OPENSSL → OPENSSL-LISTEN → UNIX-CONNECT)"
  if [[ -n $STUN_JOB ]]; then lat_row stunnel "stunnel (server; socat UNIX-LISTEN → OPENSSL client)"; fi
  if [[ -n $SSH_JOB ]]; then lat_row ssh "ssh -L local.sock:echo.sock"; fi
  echo
  echo "### Idle memory (VmRSS, whole process tree)"
  echo
  echo "| process | RSS MiB | vs socat-TLS server |"
  echo "|---|---:|---:|"
  mem_row mem_pg_idle "**pipegated**, fresh, no client (${R[mem_pg_threads]:-?} threads)" mem_socat_idle
  mem_row mem_pg_client "**pipegated**, 1 idle client (1 open stream to the unix export)" mem_socat_client
  mem_row mem_pg_after "**pipegated**, idle again after every benchmark above" mem_socat_idle
  mem_row mem_pg_hwm "**pipegated**, peak (VmHWM) over the whole run"
  [[ -n $SKIP_SOCAT ]] || {
    mem_row mem_socat_idle "socat OPENSSL-LISTEN,fork, no client" mem_socat_idle
    mem_row mem_socat_client "socat OPENSSL-LISTEN,fork, 1 idle client (parent + child)" mem_socat_client
  }
  if [[ -n ${R[mem_stunnel_idle]:-} ]]; then
    mem_row mem_stunnel_idle "stunnel, no client" mem_socat_idle
    mem_row mem_stunnel_client "stunnel, 1 idle client" mem_socat_client
  fi
  if [[ -n ${R[mem_sshd_idle]:-} ]]; then
    mem_row mem_sshd_idle "sshd, no client" mem_socat_idle
    mem_row mem_sshd_client "sshd, 1 idle ssh -N client (all sshd processes)" mem_socat_client
  fi
  mem_row mem_pg_bridge "client side: \`pipegate connect\`, idle" mem_socat_bridge
  [[ -n $SKIP_SOCAT ]] || mem_row mem_socat_bridge "client side: socat OPENSSL client, idle" mem_socat_bridge
  echo
  echo "Ratios: throughput and memory are A/B (throughput > 1× is faster); latency is A/B (> 1× is slower)."
  for s in "socat:$SKIP_SOCAT" "stunnel:$SKIP_STUNNEL" "ssh -L:$SKIP_SSH"; do
    if [[ -n ${s#*:} ]]; then
      ((skipped++)) || true
      echo "Skipped ${s%%:*}: ${s#*:}."
    fi
  done
}

{
  echo
  echo "## pipegate bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- command: \`bench/run.sh${ORIG_ARGS:+ $ORIG_ARGS}\`"
  echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- pipegate: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), binaries from $BIN_DIR; gateway with default settings (one worker per core)"
  echo "- $(openssl version | cut -d' ' -f1-2); $(socat -V 2>/dev/null | awk '/socat version/ { print "socat " $3; exit }')${STUNNEL:+; $("$STUNNEL" -version 2>&1 | awk '/^stunnel/ { print "stunnel " $2; exit }')}; $(ssh -V 2>&1 | cut -d, -f1)"
  echo
  report
} >"$W/report.md"
cat "$W/report.md"
[[ -z $OUT ]] || cp "$W/report.md" "$OUT"

# Fail if a pipegate measurement failed.
[[ -z ${R[tp_pg_cat_fail]:-}${R[tp_pg_write_fail]:-}${R[lat_pipegate_fail]:-} ]]
