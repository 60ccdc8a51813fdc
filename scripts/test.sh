#!/usr/bin/env bash
# Builds pipegate and runs every test, the way CI does (.ci/run):
#   1. build-ci/    RelWithDebInfo, warnings are errors (-DPIPEGATE_WERROR=ON), full tests;
#   2. build-asan/  Debug with AddressSanitizer + UndefinedBehaviorSanitizer and gcov counters,
#                   tests with smaller data (PIPEGATE_TEST_QUICK=1), then line and branch
#                   coverage (scripts/coverage.sh), which fails the stage below its floor;
#   3. build-tsan/  Debug -O1 with ThreadSanitizer: the unit tests and the integration tests that
#                   cross gateway workers (label multiworker), each gateway on 2 workers; any
#                   TSan report, also from the processes the tests start, fails it (see below);
#   4. build-fuzz/  clang + libFuzzer + ASan/UBSan: each fuzz target for 30 s, two at a time.
# Missing Debian packages are installed first (scripts/deps.sh). Every stage runs even if an
# earlier one fails, so one run shows everything; the exit status is non-zero if anything failed.
#
# Usage: scripts/test.sh
# Environment: JOBS (parallel compile jobs, default: number of cores); FUZZ_SECONDS (per fuzz
# target, default 30); FUZZ_SEED (libFuzzer's -seed, default 1; 0 = random); STAGES (the stages
# to run, default "ci asan tsan fuzz"; CI runs them all).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${JOBS:-$(nproc)}
STAGES=${STAGES:-ci asan tsan fuzz}
failed=()
ran=()

# True if the stage NAME is in STAGES (and then it is recorded as run).
wanted() {
  [[ " $STAGES " == *" $1 "* ]] && ran+=("build-$1")
}

log() { printf '\n==> %s\n' "$*"; }

./scripts/deps.sh

# Runs one stage: configure, build, ctest. Arguments: NAME BUILD_DIR -- CMAKE_ARGS... -- ENV...
# Two optional variables, set for one call (`STAGE_TARGETS=... stage ...`), narrow a stage:
# STAGE_TARGETS (space-separated build targets; default: all) and STAGE_CTEST_ARGS (extra ctest
# arguments such as -L or -E; split on spaces, never globbed). Build and test times are printed.
stage() {
  local name=$1 dir=$2
  shift 2
  local -a cmake_args=() env_args=() targets=() ctest_args=()
  [[ $1 == -- ]] && shift
  while [[ $# -gt 0 && $1 != -- ]]; do
    cmake_args+=("$1")
    shift
  done
  [[ $# -gt 0 ]] && shift
  env_args=("$@")
  read -ra targets <<<"${STAGE_TARGETS:-}"
  read -ra ctest_args <<<"${STAGE_CTEST_ARGS:-}"

  log "[$name] configure $dir"
  if ! cmake -S . -B "$dir" "${cmake_args[@]}"; then
    failed+=("$name: configure")
    return
  fi
  log "[$name] build ($JOBS jobs${targets[*]:+, targets: ${targets[*]}})"
  local start=$SECONDS
  if ! cmake --build "$dir" -j "$JOBS" ${targets[@]:+--target "${targets[@]}"}; then
    failed+=("$name: build")
    return
  fi
  log "[$name] built in $((SECONDS - start)) s"
  log "[$name] ctest ${ctest_args[*]} ${env_args[*]}"
  start=$SECONDS
  # Coverage counters (a -DPIPEGATE_COVERAGE=ON build) count this run only.
  find "$dir" -name '*.gcda' -delete
  rm -rf "$dir/gcov-dropped"
  if ! (cd "$dir" && env "${env_args[@]}" ctest --output-on-failure -j2 "${ctest_args[@]}"); then
    failed+=("$name: tests")
  fi
  log "[$name] tests ran in $((SECONDS - start)) s"
  report_skips "$name" "$dir"
}

# Prints every test that the last ctest run in DIR skipped, with its reason (GTEST_SKIP's message,
# or the conformance runner's `SKIP (reason)` line), since ctest itself shows skips only in its
# log. Run as root in CI (CI set), nothing may be skipped: a skip there fails the stage.
report_skips() {
  local name=$1 log=$2/Testing/Temporary/LastTest.log skips
  [[ -f $log ]] || return 0
  skips=$(python3 - "$log" <<'EOF'
import re
import sys

text = open(sys.argv[1], errors="replace").read()
for m in re.finditer(r"^\S+:\d+: Skipped\n(.*?)^\[  SKIPPED \] (\S+)", text, re.M | re.S):
    print("%s: %s" % (m.group(2), " ".join(m.group(1).split()) or "(no reason given)"))
for m in re.finditer(r"^(\S+) +SKIP \((.*)\)$", text, re.M):
    print("conformance %s: %s" % (m.group(1), m.group(2)))
EOF
  )
  if [[ -z $skips ]]; then
    log "[$name] no test skipped"
    return 0
  fi
  log "[$name] skipped tests:"
  sed 's/^/    /' <<<"$skips"
  if [[ -n ${CI:-} && $EUID -eq 0 ]]; then
    failed+=("$name: tests skipped in CI as root")
  fi
}

# Every option that matters is passed explicitly, so a build directory configured differently
# before (by hand or by a preset) cannot silently drop tests or sanitizers.
wanted ci && stage ci build-ci -- \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPEGATE_WERROR=ON -DPIPEGATE_SANITIZE= \
  -DPIPEGATE_BUILD_TESTS=ON --

# The quarantine holds freed memory back to catch use-after-free; at its default 256 MiB it
# counts as resident memory, and the tests that bound the gateway's RSS would measure it
# (OpenSSL frees and reallocates its 16 KiB record buffers: SSL_MODE_RELEASE_BUFFERS).
# Time bounds in sanitizer builds are scaled by the build's factor (PIPEGATE_TEST_TIME_SCALE in
# tests/CMakeLists.txt). The same build counts coverage: the whole suite runs here, and gcov's
# counters cost little next to ASan (scripts/coverage.sh; floors in tests/coverage-floors.txt).
asan_stage() {
  local before=${#failed[@]}
  stage asan build-asan -- \
    -DCMAKE_BUILD_TYPE=Debug -DPIPEGATE_WERROR=OFF -DPIPEGATE_SANITIZE=address,undefined \
    -DPIPEGATE_COVERAGE=ON -DPIPEGATE_BUILD_TESTS=ON -- \
    PIPEGATE_TEST_QUICK=1 PIPEGATE_TEST_DROPPED_GCOV_DIR="$PWD/build-asan/gcov-dropped" \
    ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=16 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # Coverage of a failed build or run would be a figure about something else.
  [[ ${#failed[@]} -eq $before ]] || return 0
  log "[asan] coverage (scripts/coverage.sh --check)"
  local start=$SECONDS
  if ! ./scripts/coverage.sh build-asan --check; then
    failed+=("asan: coverage below its floor (tests/coverage-floors.txt)")
  fi
  log "[asan] coverage took $((SECONDS - start)) s"
}
if wanted asan; then asan_stage; fi

# 3. build-tsan/  GCC with ThreadSanitizer (Debug at -O1: the checks stay on, the tests run about
#    twice as fast as at -O0). Only what it runs is built: the unit tests and the integration
#    tests labelled `multiworker` (tests/CMakeLists.txt), with every gateway on 2 workers
#    (PIPEGATE_TEST_WORKERS) so that cross-worker paths run whatever the core count. TSan writes
#    its reports, also those of the pipegated and pipegate processes the tests start, to
#    build-tsan/tsan-reports/; the stage fails if any is there, and prints them. A suppression
#    goes in tests/tsan.supp only with a comment that proves the race benign.
#    The fuzz replay tests (also labelled `unit`) are left out: they run one thread, and their
#    binaries are not built here.
tsan_stage() {
  local dir=build-tsan reports
  reports=$PWD/$dir/tsan-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  STAGE_TARGETS="pipegate_unit_tests pipegate_integration_tests pipegated pipegate" \
    STAGE_CTEST_ARGS="-L unit|multiworker -E _fuzz_replay$" \
    stage tsan "$dir" -- \
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-g -O1" -DPIPEGATE_WERROR=OFF \
    -DPIPEGATE_SANITIZE=thread -DPIPEGATE_BUILD_TESTS=ON -- \
    PIPEGATE_TEST_QUICK=1 PIPEGATE_TEST_WORKERS=2 \
    "TSAN_OPTIONS=log_path=$reports/tsan:halt_on_error=0:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
  local -a found=("$reports"/tsan*)
  if [[ -e ${found[0]} ]]; then
    log "[tsan] ${#found[@]} report file(s) in $reports"
    cat "${found[@]}"
    failed+=("tsan: ${#found[@]} report file(s) in $reports")
  else
    log "[tsan] no ThreadSanitizer reports"
  fi
}
if wanted tsan; then tsan_stage; fi

# 4. build-fuzz/  clang with libFuzzer, ASan and UBSan: every fuzz target (PIPEGATE_FUZZ_TARGETS in
#    tests/fuzz/CMakeLists.txt) runs for FUZZ_SECONDS (default 30) from the committed seed corpus.
#    New inputs go to build-fuzz/fuzz-work/<target>/corpus (the committed corpus is only read;
#    scripts/fuzz-corpus.sh merges them into it). A crash fails the stage and leaves its input in
#    fuzz-crashes/<target>/ at the top of the source tree, which no run deletes, and the stage
#    prints that path. Once fixed, the input moves to tests/fuzz/corpus/<target>/regress_<what>,
#    so that the replay test keeps it fixed.
#    The mutation seed is fixed (FUZZ_SEED, default 1), so CI repeats the same inputs and a
#    red run is a regression, not luck; FUZZ_SEED=0 explores with a random seed.
fuzz_stage() {
  local dir=build-fuzz seconds=${FUZZ_SECONDS:-30} start=$SECONDS
  local -a targets
  read -r -a targets < <(sed -n 's/^set(PIPEGATE_FUZZ_TARGETS \(.*\))$/\1/p' \
    tests/fuzz/CMakeLists.txt)
  log "[fuzz] configure $dir (clang, libFuzzer, address,undefined)"
  if ! command -v clang++ >/dev/null; then
    failed+=("fuzz: clang++ not found")
    return
  fi
  if ! CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPIPEGATE_WERROR=OFF \
    -DPIPEGATE_SANITIZE=address,undefined -DPIPEGATE_BUILD_TESTS=ON \
    -DPIPEGATE_BUILD_FUZZERS=ON; then
    failed+=("fuzz: configure")
    return
  fi
  log "[fuzz] build ${targets[*]} ($JOBS jobs)"
  if ! cmake --build "$dir" -j "$JOBS" --target "${targets[@]/%/_fuzz}"; then
    failed+=("fuzz: build")
    return
  fi
  # JOBS targets at a time: libFuzzer runs on one core, so on two cores each target still gets
  # its FUZZ_SECONDS of executions, in half the wall time. The results are read in order after.
  local target work crashes
  local -a running=()
  for target in "${targets[@]}"; do
    work=$dir/fuzz-work/$target
    crashes=fuzz-crashes/$target
    rm -rf "$work"
    mkdir -p "$work/corpus" "$crashes"
    log "[fuzz] $target: ${seconds} s from tests/fuzz/corpus/$target"
    (
      rc=0
      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 \
        "$dir/tests/fuzz/${target}_fuzz" -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" \
        -print_final_stats=1 \
        -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$crashes/" \
        "$work/corpus" "tests/fuzz/corpus/$target" >"$work/log" 2>&1 || rc=$?
      echo "$rc" >"$work/rc"
    ) &
    running+=($!)
    if [[ ${#running[@]} -ge $JOBS ]]; then
      wait "${running[0]}" || true
      running=("${running[@]:1}")
    fi
  done
  wait || true
  for target in "${targets[@]}"; do
    work=$dir/fuzz-work/$target
    crashes=fuzz-crashes/$target
    if [[ $(cat "$work/rc" 2>/dev/null) != 0 ]]; then
      tail -n 60 "$work/log"
      echo "[fuzz] $target: the failing input is in $PWD/$crashes/:"
      ls -l "$crashes"
      failed+=("fuzz: $target (input in $crashes/)")
      continue
    fi
    rmdir "$crashes" 2>/dev/null || echo "[fuzz] $target: earlier crash inputs in $PWD/$crashes/"
    # The summary: executions, coverage (cov: edges, ft: features) and corpus size.
    echo "[fuzz] $target:"
    grep -E '^#[0-9]+.*DONE|^stat::number_of_executed_units|^stat::peak_rss_mb' "$work/log" || \
      tail -n 5 "$work/log"
  done
  rmdir fuzz-crashes 2>/dev/null || true
  log "[fuzz] ${#targets[@]} targets in $((SECONDS - start)) s"
}
if wanted fuzz; then fuzz_stage; fi

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "test.sh: all stages passed (${ran[*]})"
