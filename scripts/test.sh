#!/usr/bin/env bash
# test.sh - the one command that builds and tests everything:   sudo ./scripts/test.sh
#
# Stages (each prints one summary line at the end; the script fails if any stage fails):
#   deps   scripts/install-deps.sh (Debian packages; root only if something is missing)
#   build  build/       CMAKE_BUILD_TYPE=RelWithDebInfo, Ninja
#   test   ctest --test-dir build: every label (unit, integration, mirror, faults, vm = real
#          kernel in qemu) but `long`
#   asan   build-asan/  CMAKE_BUILD_TYPE=Asan (ASan+UBSan), ctest -L unit
#   fuzz   build-fuzz/  CMAKE_BUILD_TYPE=Fuzz with clang; each build-fuzz/fuzz-* for
#          FUZZ_SECONDS with its seed corpus tests/fuzz/corpus/<name>/; any crash fails
#
# The default run leaves out the tests labelled `long` (variants and races of the kernel
# flows, which each keep one test in the default run); `--long` runs them too:
#   sudo ./scripts/test.sh --long
#
# Environment: SKIP_ASAN=1, SKIP_FUZZ=1, FUZZ_SECONDS (default 30), FUZZ_JOBS (targets
# run at once, default nproc), CTEST_ARGS (extra arguments for the main ctest run, e.g.
# CTEST_ARGS="-L mirror"; one with its own -LE replaces the default's `-LE long`), JOBS
# (ninja -j).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
LONG=0
for arg in "$@"; do
  case "$arg" in
    --long) LONG=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$arg' (known: --long)" >&2; exit 2 ;;
  esac
done
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
read -r -a CTEST_EXTRA <<<"${CTEST_ARGS:-}"
# ctest ANDs repeated -LE, so ours is added only when the caller gave none.
if [ "$LONG" = 0 ] && [[ " ${CTEST_ARGS:-} " != *" -LE "* ]]; then
  CTEST_EXTRA=(-LE '^long$' "${CTEST_EXTRA[@]}")
fi
SUITE=default
[ "$LONG" = 0 ] || SUITE=long
NINJA_ARGS=()
[ -z "${JOBS:-}" ] || NINJA_ARGS=(-j "$JOBS")

SUMMARY=()
n_pass=0 n_fail=0 n_skip=0
banner() { printf '\n==== %s ====\n' "$*"; }
record() {  # record STAGE STATUS(PASS|FAIL|SKIP) SECONDS DETAIL
  SUMMARY+=("$(printf '%-6s %-4s %5ss  %s' "$1" "$2" "$3" "$4")")
  case "$2" in PASS) n_pass=$((n_pass + 1));; FAIL) n_fail=$((n_fail + 1));; *) n_skip=$((n_skip + 1));; esac
}
print_summary() {
  banner "summary"
  local l
  for l in "${SUMMARY[@]}"; do echo "$l"; done
  echo "stages: $n_pass ok, $n_fail failed, $n_skip skipped"
  # The closing line counts tests (every ctest run), not stages.
  echo "tests: $tests_passed passed, $tests_failed failed"
}
t0=0
start() { banner "$1"; t0=$SECONDS; }
took() { echo $((SECONDS - t0)); }

configure_and_build() {  # DIR BUILD_TYPE TARGET [cmake args...]
  local dir=$1 type=$2 target=$3; shift 3
  cmake -S "$ROOT" -B "$ROOT/$dir" -G Ninja -DCMAKE_BUILD_TYPE="$type" "$@" &&
    ninja -C "$ROOT/$dir" "${NINJA_ARGS[@]}" $target
}

# Test counts of every ctest run, for the closing line.
tests_passed=0 tests_failed=0
run_ctest() {  # ctest arguments...; adds its counts to the totals
  local log
  log=$(mktemp)
  ctest "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    local failed total
    failed=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
    total=$(echo "$line" | sed -E 's/.* failed out of ([0-9]+).*/\1/')
    tests_failed=$((tests_failed + failed))
    tests_passed=$((tests_passed + total - failed))
  fi
  rm -f "$log"
  return "$rc"
}

# ---------------------------------------------------------------------------- deps ----
start "deps: scripts/install-deps.sh"
if ! "$ROOT/scripts/install-deps.sh"; then
  record deps FAIL "$(took)" "scripts/install-deps.sh failed"
  print_summary
  exit 1
fi
record deps PASS "$(took)" "Debian packages present"

# ------------------------------------------------------------------ build and test ----
start "build: build/ (RelWithDebInfo)"
if configure_and_build build RelWithDebInfo all; then
  record build PASS "$(took)" "build/"
  start "test: ctest --test-dir build ${CTEST_EXTRA[*]}"
  if run_ctest --test-dir build --output-on-failure -j2 --timeout 600 --no-tests=error "${CTEST_EXTRA[@]}"; then
    record test PASS "$(took)" "ctest build/ ($SUITE suite) ${CTEST_EXTRA[*]}"
  else
    record test FAIL "$(took)" "ctest build/: see the failures above"
  fi
else
  record build FAIL "$(took)" "cmake/ninja failed in build/"
  record test SKIP 0 "not run: build failed"
fi

# ---------------------------------------------------------------------------- asan ----
if [ "${SKIP_ASAN:-0}" = 1 ]; then
  record asan SKIP 0 "SKIP_ASAN=1"
else
  start "asan: build-asan/ (ASan+UBSan), ctest -L unit"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  if ! configure_and_build build-asan Asan unit-tests; then
    record asan FAIL "$(took)" "cmake/ninja failed in build-asan/"
  elif run_ctest --test-dir build-asan -L unit --output-on-failure -j2 --timeout 600 --no-tests=error; then
    record asan PASS "$(took)" "ctest -L unit under ASan+UBSan"
  else
    record asan FAIL "$(took)" "ctest -L unit under ASan+UBSan: see the failures above"
  fi
fi

# ---------------------------------------------------------------------------- fuzz ----
run_fuzzers() {  # runs every build-fuzz/fuzz-*, FUZZ_JOBS (nproc) at a time; non-zero if any crashed
  local bin name seeds work art log rc=0 ran=0 jobs=${FUZZ_JOBS:-$(nproc)}
  local -a names=()
  for bin in "$ROOT"/build-fuzz/fuzz-*; do
    if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then continue; fi
    name=$(basename "$bin"); name=${name#fuzz-}
    seeds=$ROOT/tests/fuzz/corpus/$name
    work=$ROOT/build-fuzz/corpus/$name          # new inputs land here, not in the repo
    art=$ROOT/build-fuzz/artifacts/$name
    log=$ROOT/build-fuzz/logs/$name.log
    mkdir -p "$work" "$art" "$ROOT/build-fuzz/logs"
    rm -f "$log.rc"
    local dirs=("$work")
    [ -d "$seeds" ] && dirs+=("$seeds")
    echo "fuzz-$name: ${FUZZ_SECONDS}s, corpus ${dirs[*]}"
    # Each target is single-threaded: run one per CPU. Its exit status goes to a file, read
    # below once all have finished.
    ( rc_=0
      "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=25 -print_final_stats=1 \
        -artifact_prefix="$art/" "${dirs[@]}" >"$log" 2>&1 || rc_=$?
      echo "$rc_" >"$log.rc" ) &
    names+=("$name")
    ran=$((ran + 1))
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  done
  wait
  for name in "${names[@]}"; do
    art=$ROOT/build-fuzz/artifacts/$name
    log=$ROOT/build-fuzz/logs/$name.log
    if [ "$(cat "$log.rc" 2>/dev/null)" = 0 ]; then
      echo "fuzz-$name: OK ($(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?') runs)"
    else
      rc=1
      echo "fuzz-$name: FAILED (exit $(cat "$log.rc" 2>/dev/null || echo '?')); crashing input in $art/ ; last lines of $log:"
      tail -n 40 "$log"
    fi
  done
  FUZZ_RAN=$ran
  return $rc
}
FUZZ_RAN=0
if [ "${SKIP_FUZZ:-0}" = 1 ]; then
  record fuzz SKIP 0 "SKIP_FUZZ=1"
else
  start "fuzz: build-fuzz/ (clang, libFuzzer), ${FUZZ_SECONDS}s per target"
  if ! CC=clang CXX=clang++ configure_and_build build-fuzz Fuzz fuzz-targets; then
    record fuzz FAIL "$(took)" "cmake/ninja failed in build-fuzz/"
  elif run_fuzzers; then
    if [ "$FUZZ_RAN" = 0 ]; then
      record fuzz SKIP "$(took)" "no build-fuzz/fuzz-* targets"
    else
      record fuzz PASS "$(took)" "$FUZZ_RAN target(s), ${FUZZ_SECONDS}s each, no crash"
    fi
  else
    record fuzz FAIL "$(took)" "a fuzz target crashed: see above"
  fi
fi

print_summary
[ "$n_fail" = 0 ]
