#!/usr/bin/env bash
# pipegate benchmark: throughput (one stream and 16 concurrent ones), round-trip latency,
# connection setup rate, idle memory (per process, per idle stream and per idle connection) and
# redis-benchmark / pgbench through the tunnel, pipegate against no tunnel, socat with TLS,
# stunnel and ssh -L, all on this machine over loopback. See bench/README.md for what each row
# measures.
#
# Usage: bench/run.sh [--quick] [--size N[K|M|G]] [--reps N] [--round-trips N]
#                     [--only LIST | --skip LIST] [--streams N] [--idle-streams N]
#                     [--idle-conns N] [--rate-secs S] [--redis-requests N] [--pg-secs S]
#                     [--bin-dir DIR] [--no-install] [--out FILE] [--keep]
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/run.sh [OPTIONS]

  --size N         bytes per throughput transfer; K/M/G (binary) suffixes; default 1G
  --quick          smoke run: --size 64M, 1 repetition, 500 round trips, 2 s rate runs,
                   2000 idle streams, 20 idle connections, 20000 redis requests, 3 s pgbench
  --reps N         repetitions of each throughput measurement (median reported); default 3
  --round-trips N  64-byte round trips per latency run (after 200 warm-up); default 2000
  --only LIST      run only these parts (comma-separated, from the list below)
  --skip LIST      run all parts but these
                   parts: mem (idle memory per process), lat (64-byte round trips), tp (one
                   bulk stream), multi (concurrent bulk streams), conn (new connections through
                   a running tunnel), spawn (a new client process per session), idle (RSS per
                   idle stream and per idle connection), redis (redis-benchmark), pg (pgbench -S)
  --streams N      concurrent bulk streams in the multi part; default 16 (--size is split
                   among them)
  --idle-streams N idle streams through one mount in the idle part; default 10000
  --ssh-idle-streams N  idle channels through one ssh -L in the idle part; default 2000 (ssh
                   opens channels one at a time: 10000 take it many minutes)
  --idle-conns N   idle connections (one client process each) in the idle part; default 100
  --rate-secs S    seconds per connection-rate run (conn, spawn); default 5
  --redis-requests N  requests per redis-benchmark test (GET, SET; 50 clients); default 100000
  --pg-secs S      seconds per pgbench -S run (16 clients); default 10
  --bin-dir DIR    where pipegated and pipegate are; default build/ (else build-bench/, built
                   if missing)
  --no-install     do not apt-get install missing socat, stunnel4, openssh-server, redis-server,
                   redis-tools or postgresql
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
ALL_PARTS="mem lat tp multi conn spawn idle redis pg"
ONLY=""
SKIP_PARTS=""
STREAMS=16
IDLE_STREAMS=10000
SSH_IDLE_STREAMS=2000
IDLE_CONNS=100
RATE_SECS=5
REDIS_N=100000
PG_SECS=10
PG_SCALE=10

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
    --quick)
      SIZE_ARG=64M; REPS=1; RTT=500; LAT_RUNS=1; RATE_SECS=2; IDLE_STREAMS=2000; IDLE_CONNS=20
      REDIS_N=20000; PG_SECS=3; PG_SCALE=1; shift ;;
    --only) ONLY=${2:?--only needs a list}; shift 2 ;;
    --only=*) ONLY=${1#*=}; shift ;;
    --skip) SKIP_PARTS=${2:?--skip needs a list}; shift 2 ;;
    --skip=*) SKIP_PARTS=${1#*=}; shift ;;
    --streams) STREAMS=${2:?}; shift 2 ;;
    --idle-streams) IDLE_STREAMS=${2:?}; shift 2 ;;
    --ssh-idle-streams) SSH_IDLE_STREAMS=${2:?}; shift 2 ;;
    --idle-conns) IDLE_CONNS=${2:?}; shift 2 ;;
    --rate-secs) RATE_SECS=${2:?}; shift 2 ;;
    --redis-requests) REDIS_N=${2:?}; shift 2 ;;
    --pg-secs) PG_SECS=${2:?}; shift 2 ;;
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
[[ $STREAMS =~ ^[1-9][0-9]*$ && $STREAMS -le 256 ]] || die "--streams must be 1..256"
[[ $IDLE_STREAMS =~ ^[1-9][0-9]*$ && $IDLE_STREAMS -le 100000 ]] || die "--idle-streams must be 1..100000"
[[ $SSH_IDLE_STREAMS =~ ^[1-9][0-9]*$ && $SSH_IDLE_STREAMS -le 100000 ]] || die "--ssh-idle-streams must be 1..100000"
[[ $IDLE_CONNS =~ ^[1-9][0-9]*$ && $IDLE_CONNS -le 1000 ]] || die "--idle-conns must be 1..1000"
[[ $RATE_SECS =~ ^[1-9][0-9]*$ && $RATE_SECS -le 300 ]] || die "--rate-secs must be 1..300"
[[ $REDIS_N =~ ^[1-9][0-9]*$ && $REDIS_N -le 10000000 ]] || die "--redis-requests must be 1..10000000"
[[ $PG_SECS =~ ^[1-9][0-9]*$ && $PG_SECS -le 600 ]] || die "--pg-secs must be 1..600"
[[ -z $ONLY || -z $SKIP_PARTS ]] || die "give --only or --skip, not both"
for p in ${ONLY//,/ } ${SKIP_PARTS//,/ }; do
  [[ " $ALL_PARTS " == *" $p "* ]] || die "unknown part '$p' (parts: $ALL_PARTS)"
done
PARTS=""
for p in $ALL_PARTS; do
  if [[ -n $ONLY ]]; then
    [[ ",$ONLY," == *",$p,"* ]] && PARTS+=" $p"
  elif [[ ",$SKIP_PARTS," != *",$p,"* ]]; then
    PARTS+=" $p"
  fi
done
[[ -n $PARTS ]] || die "no part left to run"
export STREAMS IDLE_STREAMS IDLE_CONNS RATE_SECS REDIS_N PG_SECS
want() { [[ " $PARTS " == *" $1 "* ]]; }
# Any one transfer must finish at >= 4 MiB/s (plus a minute of slack) or it is killed.
TMO=$((60 + SIZE / (4 * 1024 * 1024)))
# Long-lived helpers (gateway, servers) are killed by `timeout` after this, whatever happens.
LIFE=$((900 + TMO * REPS * 10))

# ---------------------------------------------------------------------------------------------
# Processes and clean-up. Every background job is `timeout ... bash -c CMD`; timeout makes itself
# a process-group leader, so a job is stopped with `kill -- -PID` (its whole pipeline, nothing
# else). PIDS lists the jobs not yet reaped.
W=""
PGW=""
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
  if [[ -n $PGW ]]; then
    if ((KEEP)); then log "kept $PGW"; else rm -rf "$PGW"; fi
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
# cpu_busy: jiffies the whole machine has spent running anything (user, nice, system, irq,
# softirq; not idle, iowait or steal) since boot.
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }
CLK_TCK=$(getconf CLK_TCK)
# cpu_per COUNT JIFFIES: µs of machine CPU per unit of work.
cpu_per() { awk -v n="$1" -v j="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", j * 1e6 / hz / n }'; }

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
SKIP_REDIS="" SKIP_PG="" PG_BIN=""
if want redis; then
  if ! have redis-server || ! have redis-benchmark; then apt_install redis-server redis-tools || true; fi
  have redis-server && have redis-benchmark ||
    SKIP_REDIS="redis-server/redis-tools are not installed and could not be installed"
fi
if want pg; then
  pg_bin() { # the newest PostgreSQL server binaries
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
      [[ -x $d/postgres && -x $d/initdb ]] && { echo "$d"; return 0; }
    done
    return 1
  }
  PG_BIN=$(pg_bin) && have pgbench || { apt_install postgresql postgresql-contrib || true; }
  PG_BIN=$(pg_bin) || PG_BIN=""
  if [[ -z $PG_BIN ]] || ! have pgbench; then
    SKIP_PG="postgresql (server and pgbench) is not installed and could not be installed"
  elif [[ $(id -u) != 0 ]] || ! id postgres >/dev/null 2>&1 || ! have setpriv; then
    SKIP_PG="a throwaway PostgreSQL needs root, the postgres account and setpriv"
  fi
fi
# Thousands of idle streams need as many descriptors in the gateway, the mount, the echo server
# and sshd: raise the soft limit to the hard one (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

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
g++ -O2 -std=c++20 -pthread -o "$BT" "$ROOT/bench/benchtool.cc" -lcrypto || die "could not compile bench/benchtool.cc"

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
read -r _ SHA_DIGEST _ < <(timeout "$TMO" "$BT" sha256 <"$DATA")
[[ -n $SHA_DIGEST ]] || die "could not take the SHA-256 of the test data"

export PG PGD BT DATA SIZE DIGEST SHA_DIGEST W SOCAT_BUF SRV_TLS CLI_TLS TMO

mkfifo "$W/a.fifo" "$W/sock.fifo" "$W/sockdef.fifo" "$W/sockw.fifo" "$W/stun.fifo" "$W/ssh.fifo" \
  "$W/idle.fifo"

# ---------------------------------------------------------------------------------------------
# Servers: echo, gateway.
bg ECHO_JOB "$W/logs/echo.out" "$W/logs/echo.err" "$LIFE" 'exec "$BT" echo "$W/echo.sock"'
wait_for 10 "$ECHO_JOB" is_socket "$W/echo.sock" || die "echo server did not start"
# The epoll echo server (thousands of idle connections, connection rates) and the bulk data
# server (multi: each connection gets the first MULTI_BYTES of the test data, then EOF).
bg EECHO_JOB "$W/logs/eecho.out" "$W/logs/eecho.err" "$LIFE" 'exec "$BT" eecho "$W/eecho.sock"'
wait_for 10 "$EECHO_JOB" is_socket "$W/eecho.sock" || die "epoll echo server did not start"
MULTI_BYTES=$((SIZE / STREAMS))
((MULTI_BYTES > 0)) || die "--size is smaller than --streams"
read -r _ MULTI_DIGEST _ < <(head -c "$MULTI_BYTES" "$DATA" | timeout "$TMO" "$BT" check)
export MULTI_BYTES MULTI_DIGEST STREAMS
bg DATA_JOB "$W/logs/serve.out" "$W/logs/serve.err" "$LIFE" 'exec "$BT" serve "$W/data.sock" "$DATA" "$MULTI_BYTES"'
wait_for 10 "$DATA_JOB" is_socket "$W/data.sock" || die "data server did not start"

# Throwaway redis-server and PostgreSQL, Unix sockets only, in the temp dirs.
REDIS_JOB=""
if want redis && [[ -z $SKIP_REDIS ]]; then
  mkdir -p "$W/redis"
  bg REDIS_JOB "$W/logs/redis.out" "$W/logs/redis.err" "$LIFE" \
    'exec redis-server --port 0 --unixsocket "$W/redis.sock" --unixsocketperm 700 --dir "$W/redis" \
       --save "" --appendonly no --daemonize no --maxclients 1000 --logfile ""'
  wait_for 20 "$REDIS_JOB" is_socket "$W/redis.sock" ||
    { SKIP_REDIS="redis-server did not start: $(tail -n 3 "$W/logs/redis.out" | tr '\n' ' ')"; stop "$REDIS_JOB"; REDIS_JOB=""; }
fi
PG_JOB="" PG_SOCK_DIR=""
if want pg && [[ -z $SKIP_PG ]]; then
  # PostgreSQL runs as postgres, which cannot enter $W (0700 root): its own temp dir.
  PGW=$(mktemp -d /tmp/pipegate-bench-pg.XXXXXX)
  chown postgres: "$PGW"
  PG_SOCK_DIR=$PGW/sock
  export PGW PG_BIN PG_SOCK_DIR
  if setpriv --reuid=postgres --regid=postgres --init-groups bash -c \
      'mkdir -m 700 "$PG_SOCK_DIR" && timeout 300 "$PG_BIN/initdb" -D "$PGW/data" -A trust -U postgres --no-sync' \
      >"$W/logs/initdb.log" 2>&1; then
    bg PG_JOB "$W/logs/postgres.out" "$W/logs/postgres.err" "$LIFE" \
      'exec setpriv --reuid=postgres --regid=postgres --init-groups "$PG_BIN/postgres" -D "$PGW/data" \
         -k "$PG_SOCK_DIR" -p 5432 -c listen_addresses= -c fsync=off -c max_connections=100'
    if wait_for 30 "$PG_JOB" is_socket "$PG_SOCK_DIR/.s.PGSQL.5432" &&
      timeout 600 pgbench -i -q -s "$PG_SCALE" -h "$PG_SOCK_DIR" -p 5432 -U postgres postgres >"$W/logs/pgbench-init.log" 2>&1; then
      :
    else
      SKIP_PG="PostgreSQL did not start: $(tail -n 3 "$W/logs/postgres.err" "$W/logs/pgbench-init.log" | tr '\n' ' ')"
      stop "$PG_JOB"
      PG_JOB=""
    fi
  else
    SKIP_PG="initdb failed: $(tail -n 3 "$W/logs/initdb.log" | tr '\n' ' ')"
  fi
fi

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

[[export]]
name = "eecho"
kind = "unix"
path = "$W/eecho.sock"
allow = ["alice"]

[[export]]
name = "data"
kind = "unix"
path = "$W/data.sock"
allow = ["alice"]

# Room for the idle part: thousands of streams on one connection, a hundred connections.
[limits]
max_connections = 4096
max_connections_per_source = 4096
max_streams_per_connection = 32768
max_streams_per_identity = 65536
max_streams = 65536
EOF
if [[ -n $REDIS_JOB ]]; then
  printf '\n[[export]]\nname = "redis"\nkind = "unix"\npath = "%s"\nallow = ["alice"]\n' "$W/redis.sock" >>"$W/pipegated.toml"
fi
if [[ -n $PG_JOB ]]; then
  printf '\n[[export]]\nname = "pg"\nkind = "unix"\npath = "%s"\nallow = ["alice"]\n' "$PG_SOCK_DIR/.s.PGSQL.5432" >>"$W/pipegated.toml"
fi
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
IDLE_CLI=""
want mem && bg IDLE_CLI /dev/null "$W/logs/idle-client.err" "$LIFE" \
  'sleep "$TMO" | exec "$PG" connect "pipe://127.0.0.1:$GW_PORT/echo"'
if ! want mem; then
  :
elif wait_for 10 "$IDLE_CLI" conns_at_least "$GW_PORT" 1 && wait_for 10 "$IDLE_CLI" grants_above "$grants0"; then
  sleep 1
  R[mem_pg_client]=$(tree_rss "$GW_PID")
  cli_pid=""
  if sh_pid=$(child_of "$IDLE_CLI"); then cli_pid=$(pgrep -P "$sh_pid" -x pipegate || true); fi
  if [[ -n $cli_pid ]]; then R[mem_pg_bridge]=$(tree_rss "$cli_pid"); fi
else
  log "idle pipegate client did not connect: $(cat "$W/logs/idle-client.err")"
fi
[[ -z $IDLE_CLI ]] || stop "$IDLE_CLI"

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
    if want mem; then
      bg IDLE_CLI /dev/null "$W/logs/idle-socat.err" "$LIFE" \
        'exec socat -u OPENSSL:127.0.0.1:$SOCAT_LAT_PORT,$CLI_TLS STDOUT'
      if wait_for 10 "$IDLE_CLI" conns_at_least "$SOCAT_LAT_PORT" 1; then
        sleep 1
        R[mem_socat_client]=$(tree_rss "$pid")
        cpid=$(child_of "$IDLE_CLI") && R[mem_socat_bridge]=$(tree_rss "$cpid")
      fi
      stop "$IDLE_CLI"
    fi
  else
    log "socat TLS echo server did not start: $(cat "$W/logs/socat-lat-srv.err")"
    stop "$SOCAT_LAT_SRV"
    SOCAT_LAT_SRV=""
  fi
fi

# stunnel: server for the throughput relay ([fifo]) and the latency echo ([echo]).
STUN_JOB="" STUN_PID="" STUN_FIFO_PORT="" STUN_RELAY_PORT="" STUN_ECHO_PORT=""
STUN_EECHO_PORT="" STUN_DATA_PORT="" STUN_REDIS_PORT="" STUN_PG_PORT=""
if [[ -z $SKIP_STUNNEL ]]; then
  STUN_FIFO_PORT=$(freeport)
  STUN_RELAY_PORT=$(freeport)
  STUN_ECHO_PORT=$(freeport)
  STUN_EECHO_PORT=$(freeport)
  STUN_DATA_PORT=$(freeport)
  STUN_REDIS_PORT=$(freeport)
  STUN_PG_PORT=$(freeport)
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

[eecho]
accept = 127.0.0.1:$STUN_EECHO_PORT
connect = $W/eecho.sock

[data]
accept = 127.0.0.1:$STUN_DATA_PORT
connect = $W/data.sock
EOF
  [[ -z $REDIS_JOB ]] || printf '\n[redis]\naccept = 127.0.0.1:%s\nconnect = %s\n' "$STUN_REDIS_PORT" "$W/redis.sock" >>"$W/stunnel.conf"
  [[ -z $PG_JOB ]] || printf '\n[pg]\naccept = 127.0.0.1:%s\nconnect = %s\n' "$STUN_PG_PORT" "$PG_SOCK_DIR/.s.PGSQL.5432" >>"$W/stunnel.conf"
  export STUNNEL STUN_FIFO_PORT STUN_RELAY_PORT STUN_ECHO_PORT STUN_EECHO_PORT STUN_DATA_PORT STUN_REDIS_PORT STUN_PG_PORT
  bg STUN_JOB /dev/null "$W/logs/stunnel.err" "$LIFE" 'exec "$STUNNEL" "$W/stunnel.conf"'
  if wait_for 10 "$STUN_JOB" port_listening "$STUN_ECHO_PORT" &&
    wait_for 10 "$STUN_JOB" port_listening "$STUN_FIFO_PORT"; then
    pid=$(child_of "$STUN_JOB")
    STUN_PID=$pid
    sleep 0.5
    R[mem_stunnel_idle]=$(tree_rss "$pid")
    want mem || pid=""
    [[ -z $pid ]] || bg IDLE_CLI /dev/null "$W/logs/idle-stunnel.err" "$LIFE" \
      'exec socat -u OPENSSL:127.0.0.1:$STUN_ECHO_PORT,$CLI_TLS STDOUT'
    if [[ -n $pid ]] && wait_for 10 "$IDLE_CLI" conns_at_least "$STUN_ECHO_PORT" 1; then
      sleep 1
      R[mem_stunnel_client]=$(tree_rss "$pid")
    fi
    [[ -z $pid ]] || stop "$IDLE_CLI"
  else
    SKIP_STUNNEL="stunnel did not start: $(tail -n 3 "$W/logs/stunnel.err" "$W/logs/stunnel.log" 2>/dev/null | tr '\n' ' ')"
    stop "$STUN_JOB"
    STUN_JOB=""
  fi
fi

# sshd: a throwaway root-only instance on a loopback port, generated host key, key auth only.
SSHD_JOB="" SSH_JOB="" SSH_FWD_PORT="" SSH_RELAY_PORT="" SSHD_PID=""
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
MaxStartups 1000
PermitTTY no
PrintMotd no
LogLevel ERROR
EOF
  echo "[127.0.0.1]:$SSHD_PORT $(cat "$W/ssh/host_key.pub")" >"$W/ssh/known_hosts"
  if [[ ! -d /run/sshd ]]; then
    mkdir -m 0755 /run/sshd && MADE_RUN_SSHD=1
  fi
  mkdir -p "$W/sshpg"
  export SSHD_PORT SSH_FWD_PORT SSH_RELAY_PORT PG_SOCK_DIR
  if ! /usr/sbin/sshd -t -f "$W/ssh/sshd_config" >"$W/logs/sshd-t.log" 2>&1; then
    SKIP_SSH="sshd rejected its config: $(head -n 2 "$W/logs/sshd-t.log" | tr '\n' ' ')"
  else
    bg SSHD_JOB /dev/null "$W/logs/sshd.err" "$LIFE" 'exec /usr/sbin/sshd -D -e -f "$W/ssh/sshd_config"'
    if wait_for 10 "$SSHD_JOB" port_listening "$SSHD_PORT"; then
      sshd_pid=$(child_of "$SSHD_JOB")
      SSHD_PID=$sshd_pid
      sleep 0.5
      R[mem_sshd_idle]=$(tree_rss "$sshd_pid")
      bg SSH_JOB /dev/null "$W/logs/ssh.err" "$LIFE" \
        'exec ssh -F /dev/null -N -p "$SSHD_PORT" -i "$W/ssh/client_key" -o IdentitiesOnly=yes \
           -o BatchMode=yes -o UserKnownHostsFile="$W/ssh/known_hosts" -o GlobalKnownHostsFile=/dev/null \
           -o StrictHostKeyChecking=yes -o ExitOnForwardFailure=yes -o ServerAliveInterval=0 \
           -L "127.0.0.1:$SSH_FWD_PORT:127.0.0.1:$SSH_RELAY_PORT" -L "$W/ssh.sock:$W/echo.sock" \
           -L "$W/ssh-eecho.sock:$W/eecho.sock" -L "$W/ssh-data.sock:$W/data.sock" \
           -L "$W/ssh-redis.sock:$W/redis.sock" -L "$W/sshpg/.s.PGSQL.5432:$PG_SOCK_DIR/.s.PGSQL.5432" \
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
want lat && log "== latency ($LAT_RUNS x $RTT round trips of 64 bytes, $WARMUP warm-up)"
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

if want lat; then
latency none "$W/echo.sock"

# The floor of every tunnel measured here: two relay processes (the bridge and the gateway in
# pipegate; two socat, socat and stunnel, or ssh and sshd in the peers) that only move bytes.
export RELAY_PORT
RELAY_PORT=$(freeport)
bg RELAY_B /dev/null "$W/logs/relay-b.err" "$LIFE" 'exec "$BT" relay "tcp:$RELAY_PORT" "unix:$W/echo.sock"'
if wait_for 10 "$RELAY_B" port_listening "$RELAY_PORT"; then
  bg RELAY_A /dev/null "$W/logs/relay-a.err" "$LIFE" 'exec "$BT" relay "unix:$W/r.sock" "tcp:$RELAY_PORT"'
  if wait_for 10 "$RELAY_A" is_socket "$W/r.sock"; then latency relay "$W/r.sock"; fi
  stop "$RELAY_A"
fi
stop "$RELAY_B"

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
  stop "$SOCAT_LAT_CLI"
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
fi
[[ -z $SOCAT_LAT_SRV ]] || stop "$SOCAT_LAT_SRV"

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
result_secs() { # result_secs FILE [DIGEST]: validates "BYTES DIGEST SECONDS", sets REP_SECS
  local b d s
  REP_SECS=""
  read -r b d s <"$1" || return 1
  [[ $b == "$SIZE" && $d == "${2:-$DIGEST}" && -n $s ]] || return 1
  REP_SECS=$s
}

# The reader of rep_none, rep_pg_cat and rep_pg_write: `benchtool check` (RCHK=check, the cheap
# hash) or `benchtool sha256` (RCHK=sha256, OpenSSL's SHA-256: what a user who checks a transfer
# runs; about 0.75 s of CPU per GiB of its own, on the same two cores). RDIGEST is its digest of
# the data.
reader() {
  export RCHK=$1 RDIGEST=$DIGEST
  [[ $1 == check ]] || RDIGEST=$SHA_DIGEST
}
reader check

rep_none() {
  local o=$W/logs/none-$RCHK rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" 'exec "$BT" "$RCHK" "$SIZE" "$RDIGEST" <"$W/a.fifo"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$W/a.fifo"'
  await "$rd" "$wr" && result_secs "$o.out" "$RDIGEST" || fail_rep "none ($RCHK)" "$o.rerr" "$o.werr"
}

rep_pg_cat() {
  local o=$W/logs/pg-cat-$RCHK rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" \
    'set -o pipefail; "$PG" --wait 10 cat "pipe://127.0.0.1:$GW_PORT/src" | "$BT" "$RCHK" "$SIZE" "$RDIGEST"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec cat "$DATA" >"$W/src.fifo"'
  await "$rd" "$wr" && result_secs "$o.out" "$RDIGEST" || fail_rep "pipegate cat ($RCHK)" "$o.rerr" "$o.werr"
}

rep_pg_write() {
  local o=$W/logs/pg-write-$RCHK rd wr
  bg rd "$o.out" "$o.rerr" "$TMO" 'exec "$BT" "$RCHK" "$SIZE" "$RDIGEST" <"$W/dst.fifo"'
  bg wr /dev/null "$o.werr" "$TMO" 'exec "$PG" --wait 10 write "pipe://127.0.0.1:$GW_PORT/dst" <"$DATA"'
  await "$rd" "$wr" && result_secs "$o.out" "$RDIGEST" || fail_rep "pipegate write ($RCHK)" "$o.rerr" "$o.werr"
}

# The same three with the SHA-256 reader.
with_sha() { # with_sha FUNCTION
  local rc=0
  reader sha256
  "$1" || rc=$?
  reader check
  return "$rc"
}
rep_none_sha() { with_sha rep_none; }
rep_pg_cat_sha() { with_sha rep_pg_cat; }
rep_pg_write_sha() { with_sha rep_pg_write; }

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

METHODS=(none pg_cat pg_write none_sha pg_cat_sha pg_write_sha)
[[ -n $SKIP_SOCAT ]] || METHODS+=(socat socat_default socat_write)
[[ -n $STUN_JOB ]] && METHODS+=(stunnel)
[[ -n $SSH_JOB ]] && METHODS+=(ssh)
declare -A SECS TPCPU
want tp || REPS_TP=0
want tp && log "== throughput ($SIZE bytes, $REPS repetition(s), methods: ${METHODS[*]})"
for ((rep = 1; rep <= ${REPS_TP:-$REPS}; rep++)); do
  for m in "${METHODS[@]}"; do
    [[ -z ${R[tp_${m}_fail]:-} ]] || continue
    c0=$(cpu_busy)
    if "rep_$m" && [[ -n $REP_SECS ]]; then
      c1=$(cpu_busy)
      s=$REP_SECS
      SECS[$m]+="$s "
      TPCPU[$m]+="$(awk -v j=$((c1 - c0)) -v hz="$CLK_TCK" -v b="$SIZE" 'BEGIN { printf "%.2f", j / hz / (b / 1073741824) }') "
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
  # shellcheck disable=SC2086
  R[tpcpu_${m}]=$(median ${TPCPU[$m]})
  R[tp_${m}_runs]=$(for s in ${SECS[$m]}; do awk -v b="$SIZE" -v s="$s" 'BEGIN { printf "%.0f ", b / 1048576 / s }'; done)
done

# ---------------------------------------------------------------------------------------------
# Tunnels to a local Unix socket, one per path, each presented as a local Unix socket:
#   none      the target socket itself (the limit)
#   pipegate  `pipegate mount` of the gateway's unix export of the target (all local connections
#             share one TLS connection)
#   socat     socat UNIX-LISTEN,fork → OPENSSL → socat OPENSSL-LISTEN,fork → UNIX-CONNECT
#             (one TLS connection and two processes per local connection)
#   stunnel   socat UNIX-LISTEN,fork → OPENSSL → stunnel service → target (one TLS connection
#             per local connection)
#   ssh       the running `ssh -L local.sock:target` session (one ssh channel per local
#             connection, all on one ssh connection)
#   relay     with T_RELAY set: `benchtool relay unix:L tcp:P` → `benchtool relay tcp:P
#             unix:target`, two processes that only move bytes (one TCP connection per local
#             connection): the floor of a two-process tunnel
# tunnels_up NAME EXPORT TARGET STUNNEL_PORT SSH_SOCKET LEAF sets TS[path] = local socket and
# TM = the paths that came up; tunnels_down stops the jobs.
declare -A TS
TM=()
TJOBS=()
tunnels_up() {
  local name=$1 leaf=$6 job d
  TS=()
  TM=(none)
  TJOBS=()
  TS[none]=$3
  export T_EXPORT=$2 T_TARGET=$3 T_STUN=$4 T_PORT T_SOCK
  d=$W/t-$name-pipegate
  mkdir -p "$d"
  T_SOCK=$d/$leaf
  bg job /dev/null "$W/logs/t-$name-mount.err" "$LIFE" \
    'exec "$PG" mount "pipe://127.0.0.1:$GW_PORT/$T_EXPORT" "$T_SOCK"'
  TJOBS+=("$job")
  if wait_for 20 "$job" is_socket "$T_SOCK"; then
    TS[pipegate]=$T_SOCK
    TM+=(pipegate)
  else
    log "  pipegate mount of $T_EXPORT did not come up: $(tail -n 3 "$W/logs/t-$name-mount.err")"
  fi
  if [[ -z $SKIP_SOCAT ]]; then
    T_PORT=$(freeport)
    d=$W/t-$name-socat
    mkdir -p "$d"
    T_SOCK=$d/$leaf
    bg job /dev/null "$W/logs/t-$name-socat-srv.err" "$LIFE" \
      'exec socat -b "$SOCAT_BUF" OPENSSL-LISTEN:$T_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay,$SRV_TLS UNIX-CONNECT:"$T_TARGET"'
    TJOBS+=("$job")
    if wait_for 10 "$job" port_listening "$T_PORT"; then
      bg job /dev/null "$W/logs/t-$name-socat-cli.err" "$LIFE" \
        'exec socat -b "$SOCAT_BUF" UNIX-LISTEN:"$T_SOCK",fork,backlog=128 OPENSSL:127.0.0.1:$T_PORT,nodelay,$CLI_TLS'
      TJOBS+=("$job")
      if wait_for 10 "$job" is_socket "$T_SOCK"; then
        TS[socat]=$T_SOCK
        TM+=(socat)
      fi
    fi
  fi
  if [[ -n $STUN_JOB ]]; then
    d=$W/t-$name-stunnel
    mkdir -p "$d"
    T_SOCK=$d/$leaf
    bg job /dev/null "$W/logs/t-$name-stunnel-cli.err" "$LIFE" \
      'exec socat -b "$SOCAT_BUF" UNIX-LISTEN:"$T_SOCK",fork,backlog=128 OPENSSL:127.0.0.1:$T_STUN,nodelay,$CLI_TLS'
    TJOBS+=("$job")
    if wait_for 10 "$job" is_socket "$T_SOCK"; then
      TS[stunnel]=$T_SOCK
      TM+=(stunnel)
    fi
  fi
  if [[ -n $SSH_JOB && -S $5 ]]; then
    TS[ssh]=$5
    TM+=(ssh)
  fi
  if [[ -n ${T_RELAY:-} ]]; then
    # Two bare relays, the floor of a two-process tunnel for this workload (no TLS, no framing;
    # one connection through the tunnel per local connection, as socat and stunnel make).
    T_PORT=$(freeport)
    d=$W/t-$name-relay
    mkdir -p "$d"
    T_SOCK=$d/$leaf
    bg job /dev/null "$W/logs/t-$name-relay-b.err" "$LIFE" 'exec "$BT" relay "tcp:$T_PORT" "unix:$T_TARGET"'
    TJOBS+=("$job")
    if wait_for 10 "$job" port_listening "$T_PORT"; then
      bg job /dev/null "$W/logs/t-$name-relay-a.err" "$LIFE" 'exec "$BT" relay "unix:$T_SOCK" "tcp:$T_PORT"'
      TJOBS+=("$job")
      if wait_for 10 "$job" is_socket "$T_SOCK"; then
        TS[relay]=$T_SOCK
        TM+=(relay)
      fi
    fi
  fi
}
tunnels_down() {
  ((${#TJOBS[@]} == 0)) || stop "${TJOBS[@]}"
  TJOBS=()
}

# run_job KEY SECONDS CMD: runs CMD (bash -c, exported variables) in the foreground under
# timeout; its stdout is in $W/logs/KEY.out. Fails (and logs stderr) on a non-zero exit.
run_job() {
  local job
  bg job "$W/logs/$1.out" "$W/logs/$1.err" "$2" "$3"
  if ! await "$job"; then
    log "  $1: FAILED: $(tail -n 5 "$W/logs/$1.err" | tr '\n' ' ')"
    return 1
  fi
}
# put_median KEY VALUES...: R[KEY] = median, R[KEY_runs] = the values.
put_median() {
  local key=$1
  shift
  (($#)) || return 0
  R[$key]=$(median "$@")
  R[${key}_runs]="$*"
}
PATH_NAMES=(none pipegate socat stunnel ssh relay)

# ---------------------------------------------------------------------------------------------
# 4. Concurrent bulk streams: STREAMS local connections at once to the data server through each
# path; each gets MULTI_BYTES and is checked; aggregate MiB/s from the first byte to the last EOF.
if want multi; then
  log "== $STREAMS concurrent bulk streams of $MULTI_BYTES bytes each ($REPS repetition(s))"
  tunnels_up data data "$W/data.sock" "$STUN_DATA_PORT" "$W/ssh-data.sock" s.sock
  declare -A MV=()
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in "${TM[@]}"; do
      [[ -z ${R[multi_${m}_fail]:-} ]] || continue
      export M_SOCK=${TS[$m]}
      if run_job "multi-$m" "$TMO" 'exec "$BT" multi "$M_SOCK" "$STREAMS" "$MULTI_BYTES" "$MULTI_DIGEST"' &&
        read -r b secs <"$W/logs/multi-$m.out" && [[ -n ${secs:-} ]]; then
        v=$(awk -v b="$b" -v s="$secs" 'BEGIN { printf "%.1f", b / 1048576 / s }')
        MV[$m]+="$v "
        log "  $m rep $rep/$REPS: $v MiB/s aggregate"
      else
        R[multi_${m}_fail]=1
      fi
    done
  done
  for m in "${TM[@]}"; do
    # shellcheck disable=SC2086
    [[ -n ${R[multi_${m}_fail]:-} ]] || put_median "multi_$m" ${MV[$m]:-}
  done
  tunnels_down
fi

# ---------------------------------------------------------------------------------------------
# 5. Connection setup through a running tunnel: new local connection, 1 byte each way, close.
if want conn; then
  log "== new connections through a running tunnel ($RATE_SECS s per run, $REPS repetition(s))"
  tunnels_up eecho eecho "$W/eecho.sock" "$STUN_EECHO_PORT" "$W/ssh-eecho.sock" s.sock
  declare -A CV=()
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in "${TM[@]}"; do
      [[ -z ${R[conn_${m}_fail]:-} ]] || continue
      export M_SOCK=${TS[$m]}
      if run_job "conn-$m" $((RATE_SECS + 60)) 'exec "$BT" connrate "$M_SOCK" 10000000 "$RATE_SECS"' &&
        read -r n secs v <"$W/logs/conn-$m.out" && [[ -n ${v:-} ]]; then
        CV[$m]+="$v "
        log "  $m rep $rep/$REPS: $v connections/s ($n in $secs s)"
      else
        R[conn_${m}_fail]=1
      fi
    done
  done
  for m in "${TM[@]}"; do
    # shellcheck disable=SC2086
    [[ -n ${R[conn_${m}_fail]:-} ]] || put_median "conn_$m" ${CV[$m]:-}
  done
  tunnels_down
fi

# ---------------------------------------------------------------------------------------------
# 6. A new client process per session: the process connects, sends 1 byte, half-closes, prints
# the echo and exits.
if want spawn; then
  log "== a new client process per session ($RATE_SECS s per run, $REPS repetition(s))"
  SP_M=(none pipegate)
  SP_SRV=""
  if [[ -z $SKIP_SOCAT ]]; then
    export SP_PORT
    SP_PORT=$(freeport)
    bg SP_SRV /dev/null "$W/logs/spawn-socat-srv.err" "$LIFE" \
      'exec socat OPENSSL-LISTEN:$SP_PORT,bind=127.0.0.1,reuseaddr,fork,nodelay,$SRV_TLS UNIX-CONNECT:"$W/eecho.sock"'
    if wait_for 10 "$SP_SRV" port_listening "$SP_PORT"; then SP_M+=(socat); fi
  fi
  [[ -z $STUN_JOB || -n $SKIP_SOCAT ]] || SP_M+=(stunnel)
  declare -A SPC=(
    [none]='exec "$BT" spawnrate 10000000 "$RATE_SECS" socat - UNIX-CONNECT:"$W/eecho.sock"'
    [pipegate]='exec "$BT" spawnrate 10000000 "$RATE_SECS" "$PG" connect "pipe://127.0.0.1:$GW_PORT/eecho"'
    [socat]='exec "$BT" spawnrate 10000000 "$RATE_SECS" socat - "OPENSSL:127.0.0.1:$SP_PORT,nodelay,$CLI_TLS"'
    [stunnel]='exec "$BT" spawnrate 10000000 "$RATE_SECS" socat - "OPENSSL:127.0.0.1:$STUN_EECHO_PORT,nodelay,$CLI_TLS"'
  )
  if [[ -n $SKIP_SOCAT ]]; then
    SPC[none]='exec "$BT" spawnrate 10000000 "$RATE_SECS" "$BT" connrate "$W/eecho.sock" 1 60'
  fi
  declare -A SV=()
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in "${SP_M[@]}"; do
      [[ -z ${R[spawn_${m}_fail]:-} ]] || continue
      if run_job "spawn-$m" $((RATE_SECS + 60)) "${SPC[$m]}" &&
        read -r n secs v <"$W/logs/spawn-$m.out" && [[ -n ${v:-} ]]; then
        SV[$m]+="$v "
        log "  $m rep $rep/$REPS: $v sessions/s ($n in $secs s)"
      else
        R[spawn_${m}_fail]=1
      fi
    done
  done
  for m in "${SP_M[@]}"; do
    # shellcheck disable=SC2086
    [[ -n ${R[spawn_${m}_fail]:-} ]] || put_median "spawn_$m" ${SV[$m]:-}
  done
  [[ -z $SP_SRV ]] || stop "$SP_SRV"
fi

# ---------------------------------------------------------------------------------------------
# 7. Idle streams and idle connections: RSS growth of the serving side divided by their number.
per_kib() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) / n }'; }
# idle_streams KEY SERVER_PID CLIENT_PID SOCKET COUNT: COUNT connections to SOCKET (an echo
# through the tunnel), one round trip each, held open.
idle_streams() {
  local key=$1 spid=$2 cpid=$3 job s0 s1 c0=0 c1=0 st n i line=""
  export M_SOCK=$4
  sleep 1
  s0=$(tree_rss "$spid")
  [[ -z $cpid ]] || c0=$(tree_rss "$cpid")
  export M_COUNT=$5
  bg job "$W/logs/idle-$key.out" "$W/logs/idle-$key.err" "$LIFE" 'exec "$BT" idle "$M_SOCK" "$M_COUNT"'
  for ((i = 0; i < 20 * (60 + M_COUNT / 20); i++)); do
    read -r line 2>/dev/null <"$W/logs/idle-$key.out" || true
    [[ -z $line ]] || break
    kill -0 "$job" 2>/dev/null || break
    sleep 0.05
  done
  read -r st n _ <<<"$line"
  if [[ ($st == ready || $st == failed) && ${n:-0} -gt 0 ]]; then
    sleep 1
    s1=$(tree_rss "$spid")
    [[ -z $cpid ]] || c1=$(tree_rss "$cpid")
    R[idle_${key}_n]=$n
    R[idle_${key}]=$(per_kib "$s0" "$s1" "$n")
    [[ -z $cpid ]] || R[idle_${key}_client]=$(per_kib "$c0" "$c1" "$n")
    log "  $key: $n idle streams: server +$(kib_to_mib $((s1 - s0))) MiB (${R[idle_${key}]} KiB each)${cpid:+, client +$(kib_to_mib $((c1 - c0))) MiB}"
  fi
  if [[ $st != ready || ${n:-0} -le 0 ]]; then
    R[idle_${key}_fail]="${line:-no answer} $(tail -n 2 "$W/logs/idle-$key.err" | tr '\n' ' ')"
    log "  $key: FAILED: ${R[idle_${key}_fail]}"
  fi
  stop "$job"
}
# idle_conns KEY SERVER_PID PORT CMD: IDLE_CONNS client processes (CMD, which sees $IC_SOCK, a
# path of its own) that each hold one connection to PORT; ready when IDLE_CONNS connections are
# established and, if CMD makes $IC_SOCK, when every IC_SOCK exists (the session is set up).
idle_conns() {
  local key=$1 spid=$2 port=$3 cmd=$4 i job jobs=() base r0 r1 ok=0 have_socks
  base=$(established "$port")
  sleep 1
  r0=$(tree_rss "$spid")
  mkdir -p "$W/ic-$key"
  for ((i = 0; i < IDLE_CONNS; i++)); do
    export IC_SOCK=$W/ic-$key/$i.sock
    bg job /dev/null "$W/logs/ic-$key-$i.err" "$LIFE" "$cmd"
    jobs+=("$job")
  done
  socks_ready() { (($(find "$W/ic-$key" -name '*.sock' -type s | wc -l) >= IDLE_CONNS)); }
  have_socks=0
  [[ $cmd != *IC_SOCK* ]] || have_socks=1
  if wait_for $((30 + IDLE_CONNS)) "" conns_at_least "$port" $((base + IDLE_CONNS)) &&
    { ((have_socks == 0)) || wait_for $((30 + IDLE_CONNS)) "" socks_ready; }; then
    sleep 2
    r1=$(tree_rss "$spid")
    R[ic_$key]=$(per_kib "$r0" "$r1" "$IDLE_CONNS")
    ok=1
    log "  $key: $IDLE_CONNS idle connections: server +$(kib_to_mib $((r1 - r0))) MiB (${R[ic_$key]} KiB each)"
  fi
  if ((ok == 0)); then
    R[ic_${key}_fail]="only $(($(established "$port") - base)) of $IDLE_CONNS connected"
    log "  $key: FAILED: ${R[ic_${key}_fail]}; $(cat "$W/logs/ic-$key-0.err" | head -n 2 | tr '\n' ' ')"
  fi
  stop "${jobs[@]}"
}
if want idle; then
  log "== idle: $IDLE_STREAMS streams on one connection, $IDLE_CONNS connections (open-file limit $NOFILE)"
  if ((NOFILE < IDLE_STREAMS + 200)); then
    log "  the open-file limit ($NOFILE) is below $IDLE_STREAMS + 200: the stream count may stop there"
  fi
  export IM_SOCK=$W/idle-m.sock
  bg IM_JOB /dev/null "$W/logs/idle-mount.err" "$LIFE" 'exec "$PG" mount "pipe://127.0.0.1:$GW_PORT/eecho" "$IM_SOCK"'
  if wait_for 20 "$IM_JOB" is_socket "$IM_SOCK"; then
    idle_streams pipegate "$GW_PID" "$(child_of "$IM_JOB")" "$IM_SOCK" "$IDLE_STREAMS"
  else
    R[idle_pipegate_fail]="mount did not come up: $(tail -n 2 "$W/logs/idle-mount.err" | tr '\n' ' ')"
  fi
  stop "$IM_JOB"
  if [[ -n $SSH_JOB && -n $SSHD_PID ]]; then
    idle_streams ssh "$SSHD_PID" "$(child_of "$SSH_JOB")" "$W/ssh-eecho.sock" "$SSH_IDLE_STREAMS"
  fi
  idle_conns pipegate "$GW_PID" "$GW_PORT" 'exec "$PG" mount "pipe://127.0.0.1:$GW_PORT/eecho" "$IC_SOCK"'
  if [[ -n $SSHD_PID ]]; then
    idle_conns ssh "$SSHD_PID" "$SSHD_PORT" \
      'exec ssh -F /dev/null -N -p "$SSHD_PORT" -i "$W/ssh/client_key" -o IdentitiesOnly=yes \
         -o BatchMode=yes -o UserKnownHostsFile="$W/ssh/known_hosts" -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o ServerAliveInterval=0 -L "$IC_SOCK:$W/eecho.sock" root@127.0.0.1'
  fi
  if [[ -n $STUN_PID && -z $SKIP_SOCAT ]]; then
    idle_conns stunnel "$STUN_PID" "$STUN_EECHO_PORT" 'exec socat -u OPENSSL:127.0.0.1:$STUN_EECHO_PORT,$CLI_TLS STDOUT'
  fi
fi

# ---------------------------------------------------------------------------------------------
# 8. redis-benchmark (SET and GET, 50 clients) and pgbench -S (16 clients) through each path.
if want redis && [[ -n $REDIS_JOB ]]; then
  log "== redis-benchmark -c 50 -n $REDIS_N -t set,get ($REPS repetition(s))"
  T_RELAY=1 tunnels_up redis redis "$W/redis.sock" "$STUN_REDIS_PORT" "$W/ssh-redis.sock" s.sock
  declare -A RS=() RG=() RC=()
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in "${TM[@]}"; do
      [[ -z ${R[redis_set_sum_${m}_fail]:-} ]] || continue
      export M_SOCK=${TS[$m]}
      c0=$(cpu_busy)
      if run_job "redis-$m" 600 'exec redis-benchmark -s "$M_SOCK" -c 50 -n "$REDIS_N" -t set,get --csv'; then
        c1=$(cpu_busy)
        set_v=$(awk -F'"' '$2 == "SET" { print $4 }' "$W/logs/redis-$m.out")
        get_v=$(awk -F'"' '$2 == "GET" { print $4 }' "$W/logs/redis-$m.out")
        if [[ -n $set_v && -n $get_v ]]; then
          RS[$m]+="$set_v "
          RG[$m]+="$get_v "
          RC[$m]+="$(cpu_per $((2 * REDIS_N)) $((c1 - c0))) "
          log "  $m rep $rep/$REPS: SET $set_v/s, GET $get_v/s"
          continue
        fi
      fi
      R[redis_set_sum_${m}_fail]=1
      R[redis_get_sum_${m}_fail]=1
    done
  done
  for m in "${TM[@]}"; do
    [[ -z ${R[redis_set_sum_${m}_fail]:-} ]] || continue
    # shellcheck disable=SC2086
    put_median "redis_set_sum_${m}" ${RS[$m]:-}
    # shellcheck disable=SC2086
    put_median "redis_get_sum_${m}" ${RG[$m]:-}
    # shellcheck disable=SC2086
    put_median "redis_cpu_${m}" ${RC[$m]:-}
  done
  tunnels_down
fi
if want pg && [[ -n $PG_JOB ]]; then
  log "== pgbench -S -c 16 -j 2 -T $PG_SECS (scale $PG_SCALE, $REPS repetition(s))"
  T_RELAY=1 tunnels_up pg pg "$PG_SOCK_DIR/.s.PGSQL.5432" "$STUN_PG_PORT" "$W/sshpg/.s.PGSQL.5432" .s.PGSQL.5432
  declare -A PV=() PC=()
  for ((rep = 1; rep <= REPS; rep++)); do
    for m in "${TM[@]}"; do
      [[ -z ${R[pg_${m}_fail]:-} ]] || continue
      export M_DIR
      M_DIR=$(dirname "${TS[$m]}")
      c0=$(cpu_busy)
      if run_job "pg-$m" $((PG_SECS + 120)) \
        'exec pgbench -n -S -c 16 -j 2 -T "$PG_SECS" -h "$M_DIR" -p 5432 -U postgres postgres'; then
        c1=$(cpu_busy)
        v=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$W/logs/pg-$m.out")
        n=$(awk '/^number of transactions actually processed: / { print $6; exit }' "$W/logs/pg-$m.out")
        if [[ -n $v ]]; then
          PV[$m]+="$v "
          PC[$m]+="$(cpu_per "${n:-0}" $((c1 - c0))) "
          log "  $m rep $rep/$REPS: $v tps"
          continue
        fi
      fi
      R[pg_${m}_fail]=1
    done
  done
  for m in "${TM[@]}"; do
    # shellcheck disable=SC2086
    [[ -n ${R[pg_${m}_fail]:-} ]] || put_median "pg_$m" ${PV[$m]:-}
    # shellcheck disable=SC2086
    [[ -n ${R[pg_${m}_fail]:-} ]] || put_median "pgcpu_$m" ${PC[$m]:-}
  done
  tunnels_down
fi

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

tp_row() { # tp_row KEY LABEL [LIMIT_KEY]: LIMIT_KEY (default none) is the "no tunnel" row
  local v=${R[tp_$1]:-} runs=${R[tp_$1_runs]:-}
  if [[ -n ${R[tp_$1_fail]:-} ]]; then
    echo "| $2 | FAILED | | | | |"
  else
    local vs_socat
    vs_socat=$(ratio "$v" "${R[tp_socat]:-}")
    [[ -z ${3:-} ]] || vs_socat="–"  # socat's row has the other reader.
    echo "| $2 | $(val "$v") | ${runs% } | $(ratio "$v" "${R[tp_${3:-none}]:-}") | $vs_socat | $(val "${R[tpcpu_$1]:-}") |"
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

# path_rows PREFIX UNIT LIMIT_LABEL: one row per path for R[PREFIX_<path>] (higher is better),
# with pipegate/path and path/limit ratios.
# shellcheck disable=SC2034 # read through ${!label}
PATH_LABEL_none="direct (no tunnel)"
# shellcheck disable=SC2034
PATH_LABEL_pipegate="**pipegate mount** (one TLS connection)"
# shellcheck disable=SC2034
PATH_LABEL_socat="socat-TLS (UNIX-LISTEN,fork → OPENSSL → OPENSSL-LISTEN,fork)"
# shellcheck disable=SC2034
PATH_LABEL_stunnel="stunnel (socat UNIX-LISTEN,fork → OPENSSL client)"
# shellcheck disable=SC2034
PATH_LABEL_ssh="ssh -L local.sock:remote.sock (channels on one connection)"
# shellcheck disable=SC2034
PATH_LABEL_relay="two bare relays, no TLS, no framing (\`benchtool relay\`: unix → TCP → unix): the floor of a two-process tunnel"
path_rows() {
  local prefix=$1 m label v pg=${R[${1}_pipegate]:-} lim=${R[${1}_none]:-}
  for m in "${PATH_NAMES[@]}"; do
    label=PATH_LABEL_$m
    label=${!label}
    [[ -n ${4:-} && $m == pipegate ]] && label=$4
    if [[ -n ${R[${prefix}_${m}_fail]:-} ]]; then
      echo "| $label | FAILED | | | |"
      continue
    fi
    v=${R[${prefix}_${m}]:-}
    [[ -n $v ]] || continue
    echo "| $label | $v | ${R[${prefix}_${m}_runs]:-} | $(ratio "$v" "$lim") | $(ratio "$pg" "$v") |"
  done
}
# cpu_rows PREFIX UNIT: machine CPU per unit of work for each path (R[PREFIX_<path>]), and what
# that CPU allows on this machine's cores if the work is CPU-bound, against the direct path.
cpu_rows() {
  local m label v lim=${R[${1}_none]:-} cores
  cores=$(nproc)
  echo "Machine CPU (every process, user + system) per $2, µs, median; the bound is what $cores cores"
  echo "allow at that cost, as a fraction of the direct path's bound (= direct µs / path µs):"
  echo
  echo "| path | CPU µs per $2 | runs | bound vs direct |"
  echo "|---|---:|---|---:|"
  for m in "${PATH_NAMES[@]}"; do
    v=${R[${1}_${m}]:-}
    [[ -n $v ]] || continue
    label=PATH_LABEL_$m
    echo "| ${!label} | $v | ${R[${1}_${m}_runs]:-} | $(ratio "$lim" "$v") |"
  done
}
# sum_row LABEL PREFIX [lower]: one summary line: pipegate, each peer with pipegate/peer, the limit
# with pipegate/limit.
sum_row() {
  local pg=${R[${2}_pipegate]:-} m v peers=""
  for m in socat stunnel ssh; do
    v=${R[${2}_${m}]:-}
    [[ -n $v ]] || continue
    peers+="${peers:+; }$m $v (**$(ratio "$pg" "$v")**)"
  done
  [[ -n $pg || -n $peers ]] || return 0
  echo "| $1 | $(val "$pg" FAILED) | ${peers:-–} | $(val "${R[${2}_none]:-}") | $(ratio "$pg" "${R[${2}_none]:-}") |"
}

report() {
  local skipped=0
  if want tp || want lat || want multi || want conn || want spawn || want redis || want pg || want idle; then
    echo "### Summary: pipegate / peer and pipegate / limit"
    echo
    echo "Higher is better for every row but latency and memory, where lower is better."
    echo
    echo "| workload | pipegate | peers (pipegate/peer) | limit | pipegate/limit |"
    echo "|---|---:|---|---:|---:|"
    if want tp; then
      local t
      for t in socat stunnel ssh; do R[tpsum_$t]=${R[tp_$t]:-}; done
      R[tpsum_pipegate]=${R[tp_pg_cat]:-}
      R[tpsum_none]=${R[tp_none]:-}
      sum_row "bulk, one stream, FIFO ends (pipegate cat), MiB/s" tpsum
      R[tpwsum_pipegate]=${R[tp_pg_write]:-}
      R[tpwsum_socat]=${R[tp_socat_write]:-}
      R[tpwsum_none]=${R[tp_none]:-}
      sum_row "bulk, one stream, write direction (pipegate write), MiB/s" tpwsum
      R[tpssum_pipegate]=${R[tp_pg_cat_sha]:-}
      R[tpssum_none]=${R[tp_none_sha]:-}
      sum_row "bulk, FIFO ends (pipegate cat), SHA-256 reader, MiB/s" tpssum
      R[tpwssum_pipegate]=${R[tp_pg_write_sha]:-}
      R[tpwssum_none]=${R[tp_none_sha]:-}
      sum_row "bulk, write direction (pipegate write), SHA-256 reader, MiB/s" tpwssum
    fi
    if want multi; then sum_row "bulk, $STREAMS concurrent streams (aggregate MiB/s)" multi; fi
    if want lat; then
      for t in none pipegate socat stunnel ssh; do
        R[l50_$t]=${R[lat_${t}_p50]:-}
        R[l99_$t]=${R[lat_${t}_p99]:-}
      done
      sum_row "64-byte round trip p50, µs (lower is better)" l50
      sum_row "64-byte round trip p99, µs (lower is better)" l99
      for t in 50 99; do
        R[lf${t}_pipegate]=${R[lat_pipegate_p$t]:-}
        R[lf${t}_none]=${R[lat_relay_p$t]:-}
      done
      sum_row "64-byte round trip p50 against two bare relays (limit column), µs" lf50
      sum_row "64-byte round trip p99 against two bare relays (limit column), µs" lf99
    fi
    if want conn; then sum_row "new local connection through a running tunnel, 1 byte each way, per s" conn; fi
    if want spawn; then sum_row "new client process per session (connect, 1 byte each way), per s" spawn; fi
    if want idle; then
      for t in pipegate ssh; do R[isum_$t]=${R[idle_$t]:-}; R[icsum_$t]=${R[ic_$t]:-}; done
      R[icsum_stunnel]=${R[ic_stunnel]:-}
      sum_row "server RSS per idle stream, KiB (lower is better; ssh: per channel)" isum
      sum_row "server RSS per idle connection, KiB (lower is better; stunnel: connection + stream)" icsum
    fi
    if want redis; then
      sum_row "redis-benchmark SET, 50 clients, requests/s" redis_set_sum
      sum_row "redis-benchmark GET, 50 clients, requests/s" redis_get_sum
      for t in set get; do
        R[rf${t}_pipegate]=${R[redis_${t}_sum_pipegate]:-}
        R[rf${t}_none]=${R[redis_${t}_sum_relay]:-}
      done
      sum_row "redis-benchmark SET against two bare relays (limit column), requests/s" rfset
      sum_row "redis-benchmark GET against two bare relays (limit column), requests/s" rfget
    fi
    if want pg; then
      sum_row "pgbench -S, 16 clients, tps" pg
      R[pgf_pipegate]=${R[pg_pipegate]:-}
      R[pgf_none]=${R[pg_relay]:-}
      sum_row "pgbench -S against two bare relays (limit column), tps" pgf
    fi
    echo
  fi
  if want multi; then
    echo "### $STREAMS concurrent bulk streams: $MULTI_BYTES bytes each from a Unix-socket data server, aggregate MiB/s (median of $REPS)"
    echo
    echo "| path | MiB/s | runs | vs direct | pipegate / this |"
    echo "|---|---:|---|---:|---:|"
    path_rows multi "" "" "**pipegate mount**: $STREAMS local connections = $STREAMS streams on one TLS connection"
    echo
  fi
  if want conn; then
    echo "### New local connections through a running tunnel: connect, 1 byte each way, close; per second, one client, $RATE_SECS s runs (median of $REPS)"
    echo
    echo "| path | connections/s | runs | vs direct | pipegate / this |"
    echo "|---|---:|---|---:|---:|"
    path_rows conn
    echo
  fi
  if want spawn; then
    echo "### A new client process per session: 1 byte in, echo out, exit; sessions per second, $RATE_SECS s runs (median of $REPS)"
    echo
    echo "| client process | sessions/s | runs | vs direct | pipegate / this |"
    echo "|---|---:|---|---:|---:|"
    PATH_LABEL_none="direct: \`socat - UNIX-CONNECT:echo.sock\`" PATH_LABEL_socat="\`socat - OPENSSL:...\` to socat OPENSSL-LISTEN,fork" \
      PATH_LABEL_stunnel="\`socat - OPENSSL:...\` to stunnel" \
      path_rows spawn "" "" "**\`pipegate connect pipe://.../eecho\`**"
    echo
  fi
  if want idle; then
    echo "### Idle streams and idle connections: RSS growth of the serving process tree, KiB each"
    echo
    echo "| what | held | server KiB each | client KiB each |"
    echo "|---|---:|---:|---:|"
    if [[ -n ${R[idle_pipegate]:-} || -n ${R[idle_pipegate_fail]:-} ]]; then
      echo "| **pipegated**: idle streams on one mount's connection | ${R[idle_pipegate_n]:-0} of $IDLE_STREAMS | $(val "${R[idle_pipegate]:-}") | $(val "${R[idle_pipegate_client]:-}") (the mount) |"
    fi
    if [[ -n ${R[idle_ssh]:-} || -n ${R[idle_ssh_fail]:-} ]]; then
      echo "| sshd: idle channels of one ssh -L | ${R[idle_ssh_n]:-0} of $SSH_IDLE_STREAMS | $(val "${R[idle_ssh]:-}") | $(val "${R[idle_ssh_client]:-}") (ssh) |"
    fi
    [[ -z ${R[ic_pipegate]:-}${R[ic_pipegate_fail]:-} ]] ||
      echo "| **pipegated**: idle connections (one \`pipegate mount\` each, no stream) | $IDLE_CONNS | $(val "${R[ic_pipegate]:-}" FAILED) | |"
    [[ -z ${R[ic_ssh]:-}${R[ic_ssh_fail]:-} ]] ||
      echo "| sshd: idle connections (one \`ssh -N -L\` each, no channel) | $IDLE_CONNS | $(val "${R[ic_ssh]:-}" FAILED) | |"
    [[ -z ${R[ic_stunnel]:-}${R[ic_stunnel_fail]:-} ]] ||
      echo "| stunnel: idle connections (each also one stream to the echo socket) | $IDLE_CONNS | $(val "${R[ic_stunnel]:-}" FAILED) | |"
    local f
    for f in idle_pipegate_fail idle_ssh_fail ic_pipegate_fail ic_ssh_fail ic_stunnel_fail; do
      [[ -z ${R[$f]:-} ]] || echo "
${f%_fail}: ${R[$f]}"
    done
    echo
    echo "Open-file limit (soft = hard) for every process: $NOFILE."
    echo
  fi
  if want redis; then
    echo "### redis-benchmark -c 50 -n $REDIS_N -t set,get through the redis-server's Unix socket (requests/s, median of $REPS)"
    echo
    if [[ -n $SKIP_REDIS ]]; then
      echo "Skipped: $SKIP_REDIS."
    else
      echo "| path | SET/s | runs | vs direct | pipegate / this |"
      echo "|---|---:|---|---:|---:|"
      path_rows redis_set_sum
      echo
      echo "| path | GET/s | runs | vs direct | pipegate / this |"
      echo "|---|---:|---|---:|---:|"
      path_rows redis_get_sum
      echo
      cpu_rows redis_cpu "request (SET and GET)"
    fi
    echo
  fi
  if want pg; then
    echo "### pgbench -S -c 16 -j 2 -T $PG_SECS (scale $PG_SCALE) through PostgreSQL's Unix socket (tps, median of $REPS)"
    echo
    if [[ -n $SKIP_PG ]]; then
      echo "Skipped: $SKIP_PG."
    else
      echo "| path | tps | runs | vs direct | pipegate / this |"
      echo "|---|---:|---|---:|---:|"
      path_rows pg
      echo
      cpu_rows pgcpu transaction
    fi
    echo
  fi
  if want tp; then
  echo "### Throughput: $SIZE bytes ($(kib_to_mib $((SIZE / 1024))) MiB) FIFO to FIFO, median of $REPS"
  echo
  echo "| path | MiB/s (median) | runs, MiB/s | vs no tunnel | vs socat-TLS | machine CPU s per GiB |"
  echo "|---|---:|---|---:|---:|---:|"
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
  tp_row none_sha "no tunnel, SHA-256 reader: \`cat FILE > fifo\`, \`benchtool sha256\` reads the fifo" none_sha
  tp_row pg_cat_sha "**pipegate cat**, SHA-256 reader (vs the SHA-256 ceiling)" none_sha
  tp_row pg_write_sha "**pipegate write**, SHA-256 reader (vs the SHA-256 ceiling)" none_sha
  echo
  fi
  if want lat; then
  echo "### Latency: 64-byte round trip through a Unix socket to an echo server, $RTT round trips after $WARMUP warm-up (median of $LAT_RUNS runs)"
  echo
  echo "| path | p50 µs | p99 µs | p50 vs no tunnel | p50 vs socat-TLS |"
  echo "|---|---:|---:|---:|---:|"
  lat_row none "no tunnel (echo socket directly)"
  lat_row relay "two bare relays, no TLS, no framing (\`benchtool relay\`: unix → TCP → unix): the floor of a two-process tunnel"
  lat_row pipegate "**pipegate mount** (unix export)"
  [[ -n $SKIP_SOCAT ]] || lat_row socat "socat-TLS (UNIX-LISTEN → OPENSSL → OPENSSL-LISTEN → UNIX-CONNECT)"
  if [[ -n $STUN_JOB ]]; then lat_row stunnel "stunnel (server; socat UNIX-LISTEN → OPENSSL client)"; fi
  if [[ -n $SSH_JOB ]]; then lat_row ssh "ssh -L local.sock:echo.sock"; fi
  echo
  fi
  if want mem; then
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
  fi
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
  echo "- machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- pipegate: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), binaries from $BIN_DIR; gateway with default settings (one worker per core) except raised [limits] (see bench/README.md)"
  echo "- parts: $PARTS; the command line of every row is in bench/README.md"
  echo "- $(openssl version | cut -d' ' -f1-2); $(socat -V 2>/dev/null | awk '/socat version/ { print "socat " $3; exit }')${STUNNEL:+; $("$STUNNEL" -version 2>&1 | awk '/^stunnel/ { print "stunnel " $2; exit }')}; $(ssh -V 2>&1 | cut -d, -f1)"
  echo
  report
} >"$W/report.md"
cat "$W/report.md"
[[ -z $OUT ]] || cp "$W/report.md" "$OUT"

# Fail if a pipegate measurement failed.
[[ -z ${R[tp_pg_cat_fail]:-}${R[tp_pg_write_fail]:-}${R[lat_pipegate_fail]:-} ]]
