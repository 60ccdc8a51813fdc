#!/usr/bin/env bash
# The sh -c scripts take their values as positional parameters, in single quotes on purpose.
# shellcheck disable=SC2016
# container_to_host: a bridge client in a "container" uses the pipes of its host through the
# gateway, with nothing shared but a veth link.
#
# The container is a network namespace behind a veth pair (host end 10.231.X.Y+1/30, container
# end Y+2), plus a mount namespace of its own with a private tmpfs that the host cannot see, and
# every process in it runs as uid/gid 65534 with no capabilities (empty bounding set,
# no_new_privs). The host runs pipegated on the host end of the veth, exporting a FIFO to read, a
# FIFO to write and an unmodified Unix socket server (socat echo). Steps, each checked with
# sha256 end to end:
#   a  host -> container: the host writes 16 MiB into the read export's FIFO, `pipegate cat` in
#      the container stores it in its tmpfs;
#   b  container -> host: `pipegate write` of 16 MiB from the container's tmpfs, read from the
#      write export's FIFO on the host; write exits 0;
#   c  `pipegate mount` of the socket export inside the container's tmpfs (absent from the host's
#      view of the same path), 1 MiB through it with an unmodified client (socat); SIGTERM ends
#      the mount with 143 (SPEC §7) and removes its socket;
#   d  the gateway's audit log names the container certificate's CN and the container's address
#      for the stream of each export;
#   e  SIGTERM stops the gateway with status 0.
#
# Usage: container_to_host_test.sh PIPEGATED PIPEGATE CERTS_SCRIPT
# Exit: 0 pass, 1 fail, 77 skip (one line `container_to_host  SKIP (reason)`: not root, or
# `ip netns add` / `unshare --mount` refused; nothing else skips).
# Environment:
#   PIPEGATE_TEST_TIME_SCALE        multiplies every time bound (sanitizer builds), default 1.
#   PIPEGATE_TEST_DROPPED_GCOV_DIR  coverage build: where the processes that run as nobody write
#                                   their gcov counts (GCOV_PREFIX; scripts/coverage.sh merges).
#   C2H_FAULT=client-ca             self-check: the gateway trusts another CA, so step a must fail
#                                   (proves the test can fail, and how it reports).
#
# The gateway drops to `nobody` after binding (user = "nobody"), as a deployed gateway should not
# keep root; that also checks that a dropped gateway reaches the FIFOs it made and a socket
# owned by its account. Cleanup (trap on EXIT, INT, TERM, HUP) stops every process, deletes the
# veth pair and the namespace and removes the temp dir. A SIGKILL cannot be trapped: a watchdog
# (this script with --reap, in a session of its own and outside the test's process tree) notices
# that the test's process is gone and does the same cleanup. Every name carries this run's PID, and setup first removes a namespace or
# link of the same name left by an earlier run that had this PID, so setup is idempotent.

set -uo pipefail

readonly TEST=container_to_host
readonly CN=c2h-container
readonly CTR_UID=65534
readonly BIG=$((16 * 1024 * 1024))
readonly SMALL=$((1024 * 1024))

# --- cleanup, shared by the trap and the watchdog ----------------------------------------------

# Kills every process of this run (inside the namespace NS, or whose argument list names the temp
# dir TMP, which is unique to the run: the binaries run from copies in it; the watchdog too) but
# the caller, deletes the veth pair and the namespace and removes TMP. Safe to run twice and on a
# half-made setup.
sweep() {
  local tmp=$1 ns=$2 veth=$3 p arg
  local -a args
  if [[ -n $ns && -e /run/netns/$ns ]]; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  fi
  if [[ -n $tmp && $tmp == /tmp/c2h.* ]]; then
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      [[ $p == "$$" || $p == "${BASHPID:-}" ]] && continue
      mapfile -d '' args 2>/dev/null <"/proc/$p/cmdline" || continue
      for arg in "${args[@]}"; do
        if [[ $arg == *"$tmp"* ]]; then kill -KILL "$p" 2>/dev/null; break; fi
      done
    done
  fi
  [[ -n $veth ]] && ip link del "$veth" 2>/dev/null
  [[ -n $ns && -e /run/netns/$ns ]] && ip netns del "$ns" 2>/dev/null
  [[ -n $tmp && $tmp == /tmp/c2h.* ]] && rm -rf "$tmp"
  return 0
}

# The process start time (field 22 of /proc/PID/stat), so that a reused PID is not taken for
# the test.
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  local -a fields
  read -ra fields <<<"${stat##*) }"
  echo "${fields[19]}"
}

# Watchdog mode: --reap PARENT_PID PARENT_START TMP NS VETH LIMIT_SECONDS. Waits (bounded) while
# the test runs; if the test's process disappears while TMP still exists, sweeps.
if [[ ${1:-} == --reap ]]; then
  parent=$2 parent_start=$3 tmp=$4 ns=$5 veth=$6 limit=$7
  for ((i = 0; i < limit * 5; i++)); do
    [[ -d $tmp ]] || exit 0
    [[ $(start_time "$parent") == "$parent_start" ]] || break
    sleep 0.2
  done
  [[ -d $tmp ]] && sweep "$tmp" "$ns" "$veth"
  exit 0
fi

# --- helpers -----------------------------------------------------------------------------------

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
T0=$(now_ms)
elapsed() { local d=$(($(now_ms) - ${1:-$T0})); printf '%d.%01d s' $((d / 1000)) $((d % 1000 / 100)); }
say() { echo "$TEST: $*"; }
skip() { echo "$TEST  SKIP ($*)"; exit 77; }

SCALE=${PIPEGATE_TEST_TIME_SCALE:-1}
[[ $SCALE =~ ^[1-9][0-9]?$ ]] || SCALE=1
STEP_LIMIT=$((20 * SCALE))   # seconds any one process of a step may take

TMP='' NS='' VETH_H='' VETH_C='' GW_T='' HOLDER=''
declare -a DIAG_FILES=()

# Prints the reason, the files that explain it and the end of the gateway log, then exits 1.
fail() {
  local f
  echo "$TEST  FAIL: $*" >&2
  for f in "${DIAG_FILES[@]}"; do
    if [[ -s $f ]]; then
      echo "--- ${f#"$TMP"/} (last 20 lines)" >&2
      tail -n 20 "$f" >&2
    fi
  done
  if [[ -n $TMP && -s $TMP/gateway.log ]]; then
    echo "--- gateway.log (last 30 lines)" >&2
    tail -n 30 "$TMP/gateway.log" >&2
  fi
  exit 1
}

# True while PID runs (a zombie counts as ended).
alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# await PID SECONDS WHAT: waits for a child to end (bounded poll, so that traps stay responsive)
# and sets RC to its exit status; fails the test at the deadline.
await() {
  local pid=$1 what=$3 end=$(($(now_ms) + $2 * 1000))
  while alive "$pid"; do
    (($(now_ms) < end)) || fail "$what: still running after $2 s"
    sleep 0.05
  done
  wait "$pid"
  RC=$?
}

# poll SECONDS WHAT COMMAND...: runs COMMAND every 50 ms until it succeeds; fails the test at the
# deadline.
poll() {
  local limit=$1 what=$2 end=$(($(now_ms) + $1 * 1000))
  shift 2
  until "$@"; do
    (($(now_ms) < end)) || fail "$what: not true after $limit s"
    sleep 0.05
  done
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# The only child of PID (the program a `timeout` runs).
child_of() { local c; c=$(cat "/proc/$1/task/$1/children" 2>/dev/null) || return 1; echo "${c%% *}"; }

cleanup() {
  local rc=$?
  # A second signal must not cut the cleanup short (it is bounded, and SIGKILL leaves it to the
  # watchdog).
  trap - EXIT
  trap '' INT TERM HUP
  # Whatever was to be said has been said; bash would now report each job the sweep kills.
  exec 2>/dev/null
  # Ask the gateway first, so that it removes the FIFOs it made; then sweep the rest.
  if [[ -n $GW_T ]] && alive "$GW_T"; then
    kill -TERM "$GW_T" 2>/dev/null
    for ((i = 0; i < 60; i++)); do
      alive "$GW_T" || break
      sleep 0.05
    done
  fi
  sweep "$TMP" "$NS" "$VETH_H"
  exit "$rc"
}

# --- arguments and preconditions ---------------------------------------------------------------

if [[ $# -ne 3 ]]; then
  echo "usage: $0 PIPEGATED PIPEGATE CERTS_SCRIPT" >&2
  exit 1
fi
PIPEGATED_SRC=$1 PIPEGATE_SRC=$2 CERTS=$3
for f in "$PIPEGATED_SRC" "$PIPEGATE_SRC" "$CERTS"; do
  [[ -x $f ]] || { echo "$TEST  FAIL: not an executable: $f" >&2; exit 1; }
done

[[ $(id -u) -eq 0 ]] || skip "needs root for ip netns, veth and setpriv; running as uid $(id -u)"
for tool in ip unshare nsenter setpriv socat sha256sum timeout setsid openssl; do
  command -v "$tool" >/dev/null || { echo "$TEST  FAIL: $tool is not installed" >&2; exit 1; }
done
if ! err=$(unshare --mount --propagation private true 2>&1); then
  skip "unshare --mount refused: ${err//$'\n'/ }"
fi

NS=pgc2h-$$ VETH_H=pgc2h$$h VETH_C=pgc2h$$c
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
TMP=$(mktemp -d /tmp/c2h.XXXXXX) || { echo "$TEST  FAIL: mktemp" >&2; exit 1; }
chmod 0755 "$TMP"   # uid 65534 traverses it to the binaries, its key and the mount point

# The watchdog is no descendant of this script (setsid --fork: its parent exits at once), so
# that a runner which kills the test's whole process tree (ctest at its TIMEOUT) leaves it
# standing; its stdio is not the runner's pipe, which the runner waits to see closed.
setsid --fork bash "$(readlink -f "${BASH_SOURCE[0]}")" --reap $$ "$(start_time $$)" "$TMP" \
  "$NS" "$VETH_H" $((120 * SCALE)) </dev/null >/dev/null 2>&1

# A namespace or link of this name can only be left by an earlier run with this PID.
sweep "" "$NS" "$VETH_H"

# A /30 derived from the PID, 10.231.X.Y/30 (16384 of them), skipping one already in use here.
idx=$(($$ % 16384))
for ((try = 0; try < 64; try++)); do
  X=$((idx / 64)) Y=$((idx % 64 * 4))
  NET=10.231.$X.$Y
  [[ -z $(ip -4 route show "$NET/30" 2>/dev/null) ]] &&
    ! ip -4 -o addr show | grep -qE " 10\.231\.$X\.($((Y + 1))|$((Y + 2)))/" && break
  idx=$(((idx + 1) % 16384))
done
HOST_IP=10.231.$X.$((Y + 1)) CTR_IP=10.231.$X.$((Y + 2))

# --- 1. setup: files, PKI, namespace and veth --------------------------------------------------

if ! err=$(ip netns add "$NS" 2>&1); then
  skip "ip netns add refused: ${err//$'\n'/ }"
fi

mkdir -p "$TMP/bin" "$TMP/gw" "$TMP/client" "$TMP/host" "$TMP/ctr" "$TMP/pki"
cp "$PIPEGATED_SRC" "$TMP/bin/pipegated" || fail "cannot copy $PIPEGATED_SRC"
cp "$PIPEGATE_SRC" "$TMP/bin/pipegate" || fail "cannot copy $PIPEGATE_SRC"
chmod 0755 "$TMP/bin/pipegated" "$TMP/bin/pipegate" "$TMP/gw" "$TMP/client" "$TMP/ctr"
chmod 0700 "$TMP/pki"
# The gateway, once it runs as nobody, removes the FIFOs it made from here at exit.
chown "$CTR_UID:$CTR_UID" "$TMP/host" && chmod 0755 "$TMP/host"

DIAG_FILES+=("$TMP/pki.log")
{
  "$CERTS" ca --dir "$TMP/pki" &&
    "$CERTS" gateway --dir "$TMP/pki" --ip "$HOST_IP" &&
    "$CERTS" client --dir "$TMP/pki" --id "$CN"
} >"$TMP/pki.log" 2>&1 || fail "certs/pipegate-certs failed"
cp "$TMP/pki/gateway.crt" "$TMP/pki/gateway.key" "$TMP/gw/" || fail "cannot copy the gateway PKI"
cp "$TMP/pki/ca.crt" "$TMP/gw/client-ca.crt" || fail "cannot copy the CA"
cp "$TMP/pki/ca.crt" "$TMP/pki/$CN.crt" "$TMP/pki/$CN.key" "$TMP/client/" ||
  fail "cannot copy the client PKI"
if [[ ${C2H_FAULT:-} == client-ca ]]; then
  # Self-check: the gateway trusts a CA that did not sign the container's certificate.
  "$CERTS" ca --dir "$TMP/pki-other" --cn "some other CA" >>"$TMP/pki.log" 2>&1 || fail "other CA"
  cp "$TMP/pki-other/ca.crt" "$TMP/gw/client-ca.crt"
  say "C2H_FAULT=client-ca: the gateway trusts another CA; this run must FAIL"
fi
chmod 0644 "$TMP/gw/gateway.crt" "$TMP/gw/client-ca.crt" "$TMP/client/ca.crt" "$TMP/client/$CN.crt"
chmod 0600 "$TMP/gw/gateway.key"
if ! { chown "$CTR_UID:$CTR_UID" "$TMP/client/$CN.key" && chmod 0400 "$TMP/client/$CN.key"; }; then
  fail "cannot hand the client key to uid $CTR_UID"
fi

DIAG_FILES+=("$TMP/net.log")
{
  ip link add "$VETH_H" type veth peer name "$VETH_C" netns "$NS" &&
    ip addr add "$HOST_IP/30" dev "$VETH_H" &&
    ip link set "$VETH_H" up &&
    ip -n "$NS" addr add "$CTR_IP/30" dev "$VETH_C" &&
    ip -n "$NS" link set "$VETH_C" up &&
    ip -n "$NS" link set lo up
} >"$TMP/net.log" 2>&1 || fail "cannot set up the veth pair $VETH_H <-> $NS/$VETH_C"
say "netns $NS; veth $VETH_H $HOST_IP/30 (host) <-> $VETH_C $CTR_IP/30 (container)"

# --- 2. the host: echo server and gateway ------------------------------------------------------

# The coverage build's counters of processes that run as nobody go where nobody may write.
declare -a GCOV_ENV=()
if [[ -n ${PIPEGATE_TEST_DROPPED_GCOV_DIR:-} ]]; then
  mkdir -p "$PIPEGATE_TEST_DROPPED_GCOV_DIR" && chmod 01777 "$PIPEGATE_TEST_DROPPED_GCOV_DIR"
  GCOV_ENV=("GCOV_PREFIX=$PIPEGATE_TEST_DROPPED_GCOV_DIR")
fi

# An unmodified server: a socket owned by the gateway's account, 0600, so only it connects.
ECHO_SOCK=$TMP/host/echo.sock
DIAG_FILES+=("$TMP/echo.log")
timeout -k 2 $((60 * SCALE)) socat -t 30 \
  "UNIX-LISTEN:$ECHO_SOCK,fork,user=$CTR_UID,group=$CTR_UID,mode=0600" EXEC:cat \
  </dev/null >"$TMP/echo.log" 2>&1 &
ECHO_T=$!
poll 5 "echo server socket $ECHO_SOCK" test -S "$ECHO_SOCK"

READ_FIFO=$TMP/host/to-container.fifo
WRITE_FIFO=$TMP/host/from-container.fifo
cat >"$TMP/gw/pipegated.toml" <<EOF
[gateway]
listen = ["$HOST_IP:0"]
cert = "$TMP/gw/gateway.crt"
key = "$TMP/gw/gateway.key"
client_ca = "$TMP/gw/client-ca.crt"
user = "nobody"

[[export]]
name = "to-container"
kind = "fifo"
access = "read"
path = "$READ_FIFO"
create = true
mode = "0600"
allow = ["$CN"]

[[export]]
name = "from-container"
kind = "fifo"
access = "write"
path = "$WRITE_FIFO"
create = true
mode = "0600"
allow = ["$CN"]

[[export]]
name = "echo"
kind = "unix"
path = "$ECHO_SOCK"
allow = ["$CN"]
EOF
DIAG_FILES+=("$TMP/gw/pipegated.toml" "$TMP/check-config.log")
"$TMP/bin/pipegated" --check-config "$TMP/gw/pipegated.toml" >"$TMP/check-config.log" 2>&1 ||
  fail "pipegated --check-config refused the configuration"

env "${GCOV_ENV[@]}" timeout -k 2 $((60 * SCALE)) "$TMP/bin/pipegated" \
  --config "$TMP/gw/pipegated.toml" </dev/null >"$TMP/gateway.log" 2>&1 &
GW_T=$!
gateway_listens() {
  alive "$GW_T" || fail "pipegated exited before listening"
  grep -qE "listening on ${HOST_IP//./\\.}:[0-9]+" "$TMP/gateway.log"
}
poll $((10 * SCALE)) "pipegated 'listening on $HOST_IP:PORT'" gateway_listens
PORT=$(grep -oE "listening on ${HOST_IP//./\\.}:[0-9]+" "$TMP/gateway.log" | head -n1)
PORT=${PORT##*:}
[[ $PORT =~ ^[0-9]+$ && $PORT -gt 0 && $PORT -lt 65536 ]] || fail "bad port in the gateway log: $PORT"
poll 5 "the gateway's FIFOs" test -p "$READ_FIFO" -a -p "$WRITE_FIFO"
poll 5 "'dropped privileges' in the gateway log" grep -q "dropped privileges" "$TMP/gateway.log"
GW_PID=$(child_of "$GW_T") || fail "cannot find the pipegated process"
GW_UID=$(awk '/^Uid:/ {print $2 "/" $3 "/" $4 "/" $5}' "/proc/$GW_PID/status")
[[ $GW_UID == "$CTR_UID/$CTR_UID/$CTR_UID/$CTR_UID" ]] || fail "pipegated uids are $GW_UID"
say "gateway pid $GW_PID (uid $CTR_UID) listening on $HOST_IP:$PORT; exports to-container" \
  "(fifo read), from-container (fifo write), echo (unix -> socat echo server)"
BASE=pipe://$HOST_IP:$PORT

# --- 3. the container --------------------------------------------------------------------------

# HOLDER (a root `sleep` that does nothing else) keeps the container's namespaces and its tmpfs
# alive; each step enters them with nsenter, as a container runtime's `exec` does.
CTR_DIR=$TMP/ctr
DIAG_FILES+=("$TMP/holder.log")
ip netns exec "$NS" unshare --mount --propagation private -- sh -c \
  'mount -t tmpfs -o size=48m,mode=0700,uid=$2,gid=$2 c2h-private "$1" && exec sleep "$3"' \
  sh "$CTR_DIR" "$CTR_UID" $((60 * SCALE)) </dev/null >"$TMP/holder.log" 2>&1 &
HOLDER=$!
holder_mounted() {
  alive "$HOLDER" || fail "the container's holder process exited"
  [[ $(nsenter --target "$HOLDER" --mount -- findmnt -rn -o FSTYPE,SOURCE "$CTR_DIR" 2>/dev/null) \
    == "tmpfs c2h-private" ]]
}
poll 5 "the container's private tmpfs at $CTR_DIR" holder_mounted
[[ -z $(findmnt -n "$CTR_DIR") && -z $(ls -A "$CTR_DIR") ]] ||
  fail "the container's tmpfs at $CTR_DIR is visible on the host"

declare -a CTR_ENV=(PATH=/usr/bin:/bin "HOME=$CTR_DIR" LC_ALL=C "${GCOV_ENV[@]}")
for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
  [[ -n ${!v:-} ]] && CTR_ENV+=("$v=${!v}")
done
# in_ctr SECONDS COMMAND...: runs COMMAND in the container (its network and mount namespaces,
# cwd its tmpfs) as uid/gid 65534 with no capabilities, under a timeout. The cd happens inside:
# nsenter --wd would resolve the directory in the host's mount namespace.
in_ctr() {
  local limit=$1
  shift
  timeout -k 2 "$limit" nsenter --target "$HOLDER" --mount --net -- \
    setpriv --reuid="$CTR_UID" --regid="$CTR_UID" --clear-groups --inh-caps=-all \
    --bounding-set=-all --no-new-privs -- env -i "${CTR_ENV[@]}" \
    sh -c 'cd "$1" || exit 125; shift; exec "$@"' sh "$CTR_DIR" "$@"
}
PG=("$TMP/bin/pipegate" --cert "$TMP/client/$CN.crt" --key "$TMP/client/$CN.key"
  --ca "$TMP/client/ca.crt")

who=$(in_ctr 5 sh -c 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)" \
  "$(grep CapEff /proc/self/status | tr -d "\t")" \
  "$(grep CapBnd /proc/self/status | tr -d "\t")" \
  "addr=$(ip -4 -o addr show scope global | awk "{print \$2, \$4}")" \
  "cwd=$(stat -f -c %T .)"') ||
  fail "cannot run a process in the container"
[[ $who == "uid=$CTR_UID gid=$CTR_UID groups=$CTR_UID CapEff:0000000000000000 CapBnd:0000000000000000 addr=$VETH_C $CTR_IP/30 cwd=tmpfs" ]] ||
  fail "the container is not what it should be: $who"
say "container: $who, private tmpfs at $CTR_DIR (a plain empty directory on the host);" \
  "setup took $(elapsed)"

# --- a. host -> container ----------------------------------------------------------------------

t=$(now_ms)
head -c "$BIG" /dev/urandom >"$TMP/host/a.src"
A_SHA=$(sha "$TMP/host/a.src")
DIAG_FILES+=("$TMP/a.ctr" "$TMP/a.err" "$TMP/a.writer")
in_ctr "$STEP_LIMIT" sh -c '"$@" > a.out; rc=$?
  echo "rc=$rc bytes=$(stat -c %s a.out) sha=$(sha256sum < a.out | cut -d" " -f1)"' \
  sh "${PG[@]}" cat "$BASE/to-container" </dev/null >"$TMP/a.ctr" 2>"$TMP/a.err" &
A_CAT=$!
# The host's writer blocks in open() until the gateway opens the FIFO for the remote reader.
timeout -k 2 "$STEP_LIMIT" sh -c 'exec cat "$1" > "$2"' sh "$TMP/host/a.src" "$READ_FIFO" \
  </dev/null 2>"$TMP/a.writer" &
A_W=$!
await "$A_CAT" "$STEP_LIMIT" "[a] pipegate cat in the container"
[[ $RC -eq 0 ]] || fail "[a] the container's pipegate cat step ended with status $RC"
read -r a_rc a_bytes a_sha <"$TMP/a.ctr"
[[ $a_rc == rc=0 ]] || fail "[a] pipegate cat in the container: exit status ${a_rc#rc=} (want 0)"
await "$A_W" 5 "[a] the host's writer into $READ_FIFO"
[[ $RC -eq 0 ]] || fail "[a] the host's writer into $READ_FIFO: status $RC"
[[ $a_bytes == "bytes=$BIG" && $a_sha == "sha=$A_SHA" ]] ||
  fail "[a] the container read $a_bytes $a_sha, the host wrote bytes=$BIG sha=$A_SHA"
[[ ! -e $CTR_DIR/a.out ]] || fail "[a] the container's a.out is visible on the host"
say "[a] host -> container: host wrote $BIG bytes sha256 $A_SHA into $READ_FIFO;" \
  "pipegate cat (uid $CTR_UID, in $NS) stored $BIG bytes sha256 ${a_sha#sha=}, exit 0 ($(elapsed "$t"))"

# --- b. container -> host ----------------------------------------------------------------------

t=$(now_ms)
DIAG_FILES+=("$TMP/b.ctr" "$TMP/b.err" "$TMP/b.reader")
# The host's reader blocks in open() until the gateway opens the FIFO for the remote writer;
# --wait covers the moment before the reader reaches open().
timeout -k 2 "$STEP_LIMIT" sh -c 'exec cat "$1" > "$2"' sh "$WRITE_FIFO" "$TMP/host/b.out" \
  </dev/null 2>"$TMP/b.reader" &
B_R=$!
in_ctr "$STEP_LIMIT" sh -c 'head -c "$1" /dev/urandom > b.in || exit 100
  echo "sha=$(sha256sum < b.in | cut -d" " -f1)"; shift; "$@" < b.in; echo "rc=$?"' \
  sh "$BIG" "${PG[@]}" --wait 10 write "$BASE/from-container" </dev/null >"$TMP/b.ctr" \
  2>"$TMP/b.err" &
B_W=$!
await "$B_W" "$STEP_LIMIT" "[b] pipegate write in the container"
[[ $RC -eq 0 ]] || fail "[b] the container's pipegate write step ended with status $RC"
{ read -r b_sha; read -r b_rc; } <"$TMP/b.ctr"
[[ $b_rc == rc=0 ]] || fail "[b] pipegate write in the container: exit status ${b_rc#rc=} (want 0)"
await "$B_R" 5 "[b] the host's reader of $WRITE_FIFO"
[[ $RC -eq 0 ]] || fail "[b] the host's reader of $WRITE_FIFO: status $RC"
B_BYTES=$(size "$TMP/host/b.out") B_SHA=$(sha "$TMP/host/b.out")
[[ $B_BYTES -eq $BIG && sha=$B_SHA == "$b_sha" ]] ||
  fail "[b] the host read $B_BYTES bytes sha256 $B_SHA, the container sent $BIG bytes ${b_sha}"
say "[b] container -> host: pipegate write sent $BIG bytes sha256 ${b_sha#sha=}, exit 0;" \
  "host read $B_BYTES bytes sha256 $B_SHA from $WRITE_FIFO ($(elapsed "$t"))"

# --- c. a mounted socket, used by an unmodified client -----------------------------------------

t=$(now_ms)
APP_SOCK=$CTR_DIR/app.sock
DIAG_FILES+=("$TMP/c.mount" "$TMP/c.ctr" "$TMP/c.err")
in_ctr "$STEP_LIMIT" "${PG[@]}" mount "$BASE/echo" "$APP_SOCK" --as unix \
  </dev/null >"$TMP/c.mount" 2>&1 &
C_T=$!
alive "$ECHO_T" || fail "[c] the host's echo server is gone"
mount_ready() {
  alive "$C_T" || fail "[c] pipegate mount exited before its socket appeared"
  nsenter --target "$HOLDER" --mount -- test -S "$APP_SOCK"
}
poll $((10 * SCALE)) "[c] the mounted socket $APP_SOCK in the container" mount_ready
C_PID=$(child_of "$C_T") || fail "[c] cannot find the pipegate mount process"
[[ ! -e $APP_SOCK ]] || fail "[c] the container's $APP_SOCK is visible on the host"
in_ctr "$STEP_LIMIT" sh -c 'head -c "$1" /dev/urandom > c.in || exit 100
  echo "sha=$(sha256sum < c.in | cut -d" " -f1)"
  socat -t 30 - "UNIX-CONNECT:$2" < c.in > c.out; echo "rc=$?"
  echo "bytes=$(stat -c %s c.out) sha=$(sha256sum < c.out | cut -d" " -f1)"' \
  sh "$SMALL" "$APP_SOCK" </dev/null >"$TMP/c.ctr" 2>"$TMP/c.err" &
C_C=$!
await "$C_C" "$STEP_LIMIT" "[c] socat through the mounted socket"
[[ $RC -eq 0 ]] || fail "[c] the container's client step ended with status $RC"
{ read -r c_sha; read -r c_rc; read -r c_bytes c_back; } <"$TMP/c.ctr"
[[ $c_rc == rc=0 ]] || fail "[c] socat in the container: exit status ${c_rc#rc=} (want 0)"
[[ $c_bytes == "bytes=$SMALL" && $c_back == "$c_sha" ]] ||
  fail "[c] sent bytes=$SMALL $c_sha through the echo, got back $c_bytes $c_back"
kill -TERM "$C_PID"
await "$C_T" 5 "[c] pipegate mount after SIGTERM"
C_RC=$RC
[[ $C_RC -eq 143 ]] || fail "[c] pipegate mount after SIGTERM: exit status $C_RC (SPEC §7: 143)"
nsenter --target "$HOLDER" --mount -- test -e "$APP_SOCK" &&
  fail "[c] pipegate mount left $APP_SOCK behind"
say "[c] mounted socket: $APP_SOCK exists in the container only; socat (unmodified) sent" \
  "$SMALL bytes sha256 ${c_sha#sha=} through it to the host's echo server and got back" \
  "${c_bytes#bytes=} bytes sha256 ${c_back#sha=}; SIGTERM -> mount exit $C_RC, socket removed ($(elapsed "$t"))"

# --- d. the gateway's audit trail names the container ------------------------------------------

for e in to-container:read from-container:write echo:duplex; do
  line=$(grep -E "audit: decision=granted identity=\"$CN\" .*export=\"${e%%:*}\" access=${e#*:} from=${CTR_IP//./\\.}:[0-9]+ " \
    "$TMP/gateway.log" | head -n1)
  [[ -n $line ]] || fail "[d] no audit line granting export ${e%%:*} (${e#*:}) to '$CN' from $CTR_IP"
  say "[d] gateway log: ${line#*audit: }"
done

# --- e. the gateway stops cleanly --------------------------------------------------------------

kill -TERM "$GW_PID"
await "$GW_T" $((15 * SCALE)) "[e] pipegated after SIGTERM"
[[ $RC -eq 0 ]] || fail "[e] pipegated after SIGTERM: exit status $RC (want 0)"
GW_T=
say "[e] gateway: SIGTERM -> exit 0"

echo "$TEST  PASS ($(elapsed))"
