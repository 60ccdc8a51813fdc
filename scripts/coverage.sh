#!/usr/bin/env bash
# Line and branch coverage of the product code (src/, gateway/, bridge-client/) from a build
# configured with -DPIPEGATE_COVERAGE=ON whose tests have run. The counts include the pipegated
# and pipegate processes that the integration and conformance tests start: each writes its .gcda
# files when it exits (gcov merges concurrent writers under a file lock); a process killed with
# SIGKILL writes nothing, which only undercounts.
#
# The asan stage of scripts/test.sh is such a build: it runs the whole suite, then this script
# with --check. Alone:
#   cmake -S . -B build-cov -DCMAKE_BUILD_TYPE=Debug -DPIPEGATE_COVERAGE=ON && \
#     cmake --build build-cov -j2 && (cd build-cov && ctest -j2) && scripts/coverage.sh build-cov
#
# Branches are counted as gcovr's --exclude-throw-branches --exclude-unreachable-branches do:
# the compiler's exception-unwinding edges and branches on lines marked unreachable are left out.
#
# Usage: scripts/coverage.sh [BUILD_DIR] [--check]
#   Prints a table per area and per file (Markdown), and writes BUILD_DIR/coverage/summary.json
#   (gcovr's per-file summary). With --check, exits 1 if an area is below its floor in
#   tests/coverage-floors.txt ("AREA LINE% BRANCH%" per line), naming the area and the figure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

dir=build-asan
check=0
for arg in "$@"; do
  case $arg in
    --check) check=1 ;;
    -*)
      echo "coverage.sh: unknown option $arg" >&2
      exit 2
      ;;
    *) dir=$arg ;;
  esac
done

if ! command -v gcovr >/dev/null; then
  echo "coverage.sh: gcovr not found (scripts/deps.sh installs it)" >&2
  exit 2
fi
if ! find "$dir" -name '*.gcda' -print -quit 2>/dev/null | grep -q .; then
  echo "coverage.sh: no .gcda files under $dir: configure it with -DPIPEGATE_COVERAGE=ON and" \
    "run its tests first" >&2
  exit 2
fi

# A gateway that drops privileges to nobody (LocalPolicy.DropsPrivilegesAfterBinding) cannot write
# into the root-owned build tree; the test sends its counts to BUILD_DIR/gcov-dropped instead
# (GCOV_PREFIX, which keeps the absolute object paths), and they are merged in here.
abs_dir=$(cd "$dir" && pwd)
if [[ -d $dir/gcov-dropped$abs_dir ]]; then
  rm -rf "$dir/gcov-merged"
  gcov-tool merge "$dir/gcov-dropped$abs_dir" "$dir" -o "$dir/gcov-merged"
  cp -r "$dir/gcov-merged/." "$dir/"
  rm -rf "$dir/gcov-merged" "$dir/gcov-dropped"
  echo "coverage: merged the counts of processes that ran as another user"
fi

mkdir -p "$dir/coverage"
summary=$dir/coverage/summary.json
# gcov runs on every object; -j2 halves the wall time on two cores.
gcovr --root . --object-directory "$dir" -j 2 \
  --filter 'src/' --filter 'gateway/' --filter 'bridge-client/' \
  --exclude-throw-branches --exclude-unreachable-branches \
  --gcov-ignore-parse-errors \
  --json-summary-pretty --output "$summary"

python3 - "$summary" tests/coverage-floors.txt "$check" <<'EOF'
import json
import sys

summary_path, floors_path, check = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
files = json.load(open(summary_path))["files"]

def pct(covered, total):
    return 100.0 * covered / total if total else 100.0

areas = {}
for f in files:
    area = f["filename"].split("/")[0]
    a = areas.setdefault(area, [0, 0, 0, 0])
    a[0] += f["line_covered"]; a[1] += f["line_total"]
    a[2] += f["branch_covered"]; a[3] += f["branch_total"]

print("| area | lines | branches |")
print("|---|---|---|")
for area in sorted(areas):
    lc, lt, bc, bt = areas[area]
    print(f"| {area}/ | {pct(lc, lt):.1f} % ({lc}/{lt}) | {pct(bc, bt):.1f} % ({bc}/{bt}) |")
print()
print("| file | lines | branches |")
print("|---|---|---|")
for f in sorted(files, key=lambda f: f["filename"]):
    print(f"| {f['filename']} | {pct(f['line_covered'], f['line_total']):.1f} % "
          f"| {pct(f['branch_covered'], f['branch_total']):.1f} % "
          f"({f['branch_covered']}/{f['branch_total']}) |")

if not check:
    sys.exit(0)
failed = False
for raw in open(floors_path):
    line = raw.split("#")[0].split()
    if not line:
        continue
    area, line_floor, branch_floor = line[0].rstrip("/"), float(line[1]), float(line[2])
    if area not in areas:
        print(f"coverage: {area}/: no coverage data (floor {line_floor} % / {branch_floor} %)")
        failed = True
        continue
    lc, lt, bc, bt = areas[area]
    for what, got, floor in (("line", pct(lc, lt), line_floor),
                             ("branch", pct(bc, bt), branch_floor)):
        if got + 1e-9 < floor:
            print(f"coverage: {area}/: {what} coverage {got:.1f} % is below its floor "
                  f"{floor:.1f} % ({floors_path})")
            failed = True
print("coverage: " + ("BELOW THE FLOOR" if failed else "every area at or above its floor"))
sys.exit(1 if failed else 0)
EOF
