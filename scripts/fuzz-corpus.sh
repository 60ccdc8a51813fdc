#!/usr/bin/env bash
# Keeps what a fuzz run learned: for each fuzz target, merges the inputs a run grew
# (build-fuzz/fuzz-work/<target>/corpus, left by scripts/test.sh's fuzz stage) into the committed
# corpus tests/fuzz/corpus/<target>/ with libFuzzer's -merge=1, and replaces the committed corpus
# with the result when it covers more features (libFuzzer's ft) than the committed one alone.
#
# Named seeds (every file whose name is not a 40-hex SHA-1, such as regress_* crashers) are
# always kept as they are. The unnamed ones, committed and grown, are minimised together: only
# those that add features on top of the named seeds and of each other are kept, under
# libFuzzer's SHA-1 names. The script prints, per target, cov/ft and the files and bytes before
# and after; review them with `git status tests/fuzz/corpus` and commit what you keep.
#
# Usage: scripts/fuzz-corpus.sh [TARGET...]   (default: every target in PIPEGATE_FUZZ_TARGETS)
# Environment: FUZZ_BUILD_DIR (default build-fuzz, configured as scripts/test.sh does).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=${FUZZ_BUILD_DIR:-build-fuzz}
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  read -r -a targets < <(sed -n 's/^set(PIPEGATE_FUZZ_TARGETS \(.*\))$/\1/p' \
    tests/fuzz/CMakeLists.txt)
fi
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

is_hash_name() { [[ $(basename "$1") =~ ^[0-9a-f]{40}$ ]]; }

# Prints "cov ft" of the corpus in directory $2 as target $1 loads it.
coverage() {
  "$1" -runs=0 "$2" 2>&1 | sed -n 's/.*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | tail -n 1
}

# Prints "files bytes" of directory $1.
size_of() {
  local files bytes
  files=$(find "$1" -maxdepth 1 -type f | wc -l)
  bytes=$(find "$1" -maxdepth 1 -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  echo "$files $bytes"
}

status=0
for target in "${targets[@]}"; do
  bin=$dir/tests/fuzz/${target}_fuzz
  committed=tests/fuzz/corpus/$target
  grown=$dir/fuzz-work/$target/corpus
  if [[ ! -x $bin ]]; then
    echo "$target: $bin not built (run scripts/test.sh, or build ${target}_fuzz in $dir)"
    status=1
    continue
  fi
  mkdir -p "$committed"
  new=$tmp/$target/new
  pool=$tmp/$target/pool
  mkdir -p "$new" "$pool"
  for f in "$committed"/*; do
    [[ -f $f ]] || continue
    if is_hash_name "$f"; then cp "$f" "$pool/"; else cp "$f" "$new/"; fi
  done
  if [[ -d $grown ]]; then
    find "$grown" -maxdepth 1 -type f -exec cp -t "$pool/" {} +
  else
    echo "$target: no grown corpus in $grown; minimising the committed one only"
  fi

  if ! "$bin" -merge=1 "$new" "$pool" >"$tmp/$target/merge.log" 2>&1; then
    tail -n 30 "$tmp/$target/merge.log"
    echo "$target: the merge failed (an input crashes?); corpus left unchanged"
    status=1
    continue
  fi
  read -r cov_before ft_before < <(coverage "$bin" "$committed")
  read -r cov_after ft_after < <(coverage "$bin" "$new")
  read -r files_before bytes_before < <(size_of "$committed")
  read -r files_after bytes_after < <(size_of "$new")
  printf '%s: cov %s -> %s, ft %s -> %s, files %s -> %s, bytes %s -> %s' "$target" \
    "$cov_before" "$cov_after" "$ft_before" "$ft_after" "$files_before" "$files_after" \
    "$bytes_before" "$bytes_after"
  if ((ft_after > ft_before)); then
    find "$committed" -maxdepth 1 -type f -regextype posix-extended \
      -regex '.*/[0-9a-f]{40}' -delete
    cp "$new"/* "$committed/"
    echo ": replaced"
  else
    echo ": no new coverage, unchanged"
  fi
done
exit "$status"
