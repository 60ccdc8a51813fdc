#!/usr/bin/env bash
# Builds pipegate and runs every test, the way CI does (.ci/run):
#   1. build-ci/    RelWithDebInfo, warnings are errors (-DPIPEGATE_WERROR=ON), full tests;
#   2. build-asan/  Debug with AddressSanitizer + UndefinedBehaviorSanitizer, tests with smaller
#                   data (PIPEGATE_TEST_QUICK=1) and timeouts scaled by 3.
# Missing Debian packages are installed first (scripts/deps.sh). Both stages run even if the
# first one fails, so one run shows everything; the exit status is non-zero if anything failed.
#
# Usage: scripts/test.sh
# Environment: JOBS (parallel compile jobs, default: number of cores).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${JOBS:-$(nproc)}
failed=()

log() { printf '\n==> %s\n' "$*"; }

./scripts/deps.sh

# Runs one stage: configure, build, ctest. Arguments: NAME BUILD_DIR -- CMAKE_ARGS... -- ENV...
stage() {
  local name=$1 dir=$2
  shift 2
  local -a cmake_args=() env_args=()
  [[ $1 == -- ]] && shift
  while [[ $# -gt 0 && $1 != -- ]]; do
    cmake_args+=("$1")
    shift
  done
  [[ $# -gt 0 ]] && shift
  env_args=("$@")

  log "[$name] configure $dir"
  if ! cmake -S . -B "$dir" "${cmake_args[@]}"; then
    failed+=("$name: configure")
    return
  fi
  log "[$name] build ($JOBS jobs)"
  if ! cmake --build "$dir" -j "$JOBS"; then
    failed+=("$name: build")
    return
  fi
  log "[$name] ctest ${env_args[*]}"
  if ! (cd "$dir" && env "${env_args[@]}" ctest --output-on-failure -j2); then
    failed+=("$name: tests")
  fi
}

# Every option that matters is passed explicitly, so a build directory configured differently
# before (by hand or by a preset) cannot silently drop tests or sanitizers.
stage ci build-ci -- \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPIPEGATE_WERROR=ON -DPIPEGATE_SANITIZE= \
  -DPIPEGATE_BUILD_TESTS=ON --

# The quarantine holds freed memory back to catch use-after-free; at its default 256 MiB it
# counts as resident memory, and the tests that bound the gateway's RSS would measure it
# (OpenSSL frees and reallocates its 16 KiB record buffers: SSL_MODE_RELEASE_BUFFERS).
stage asan build-asan -- \
  -DCMAKE_BUILD_TYPE=Debug -DPIPEGATE_WERROR=OFF -DPIPEGATE_SANITIZE=address,undefined \
  -DPIPEGATE_BUILD_TESTS=ON -- \
  PIPEGATE_TEST_QUICK=1 PIPEGATE_TEST_TIMEOUT_MULTIPLIER=3 \
  ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=16 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "test.sh: all stages passed (build-ci, build-asan)"
