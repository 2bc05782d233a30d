#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.cpp) with clang and runs each
# one for a bounded time.
#
#   bash scripts/fuzz.sh [seconds-per-target]      (default 30)
#
# Environment:
#   LQER_FUZZ_BUILD    build directory (default /tmp/lqer-fuzz-$UID; reused, so a
#                      second run only rebuilds what changed)
#   LQER_FUZZ_TARGETS  space-separated subset, e.g. "fuzz_npy fuzz_quantize"
#   LQER_JOBS          build parallelism (default 2)
#
# Limits: -malloc_limit_mb=256 (no input of a few KB may make a reader allocate
# more: sizes must be checked against the data before allocating), -rss_limit_mb=2048,
# -timeout=20 per input.
#
# Each target runs single-process (no -jobs/-workers) on a scratch corpus
# ($LQER_FUZZ_BUILD/corpus/<name>, kept between runs so that coverage grows
# across runs) plus the committed seeds tests/fuzz/corpus/<name>, which are only
# read: libFuzzer writes new inputs into its first corpus directory only. A
# dictionary tests/fuzz/<name>.dict is used when it exists. Per target one line:
# seconds run, executions, corpus growth (new inputs this run), coverage
# (libFuzzer's `cov` counter) and the finding, if any.
#
# Exit status: 0 when every target ran its time without a finding; 1 on any
# crash, sanitizer report, leak, timeout or out-of-memory (the reproducer's path
# is printed: `<target> <path>` replays it), or on a build failure.
# Bounded: each run is killed at seconds + 120. Measured on the shared 2-core
# machine (load 4–7 from other builds): the build takes 4.5–6 min from scratch or
# after a change to a widely included header (fuzz_linear_differential and
# cmd_factorize.cpp, compiled at -O0 for fuzz_cli_options, dominate), seconds when
# nothing changed; the default 5 targets x 30 s add 2.6 min: ~7 min in all.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

secs=${1:-30}
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || { echo "usage: scripts/fuzz.sh [seconds-per-target]" >&2; exit 2; }
build=${LQER_FUZZ_BUILD:-/tmp/lqer-fuzz-$(id -u)}
jobs=${LQER_JOBS:-2}
start=$(date +%s)

mapfile -t all_targets < <(cd tests/fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')
read -r -a targets <<<"${LQER_FUZZ_TARGETS:-${all_targets[*]}}"

echo "==> fuzz: configure $build (clang, LQER_BUILD_FUZZERS=ON)"
mkdir -p "$build"
# Only the fuzz targets: no tests, tools, benchmarks or examples. -O1: the
# usual libFuzzer trade-off between speed and compile time.
if ! CXX=${CXX_FUZZ:-clang++} cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE= -DCMAKE_CXX_FLAGS=-O1 \
    -DLQER_BUILD_FUZZERS=ON -DLQER_BUILD_TESTS=OFF -DLQER_BUILD_TOOLS=OFF -DLQER_BUILD_BENCH=OFF \
    -DLQER_BUILD_EXAMPLES=OFF -DLQER_WERROR=ON >"$build/configure.log" 2>&1; then
  cat "$build/configure.log"
  echo "fuzz: FAILED (configure)"
  exit 1
fi
echo "==> fuzz: build ${targets[*]}"
if ! cmake --build "$build" -j "$jobs" --target "${targets[@]}"; then
  echo "fuzz: FAILED (build)"
  exit 1
fi
built=$(($(date +%s) - start))

failed=()
total_execs=0
mkdir -p "$build/crashes"
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  seeds=$root/tests/fuzz/corpus/$name
  scratch=$build/corpus/$name
  mkdir -p "$scratch"
  args=(-max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1
        -artifact_prefix="$build/crashes/$t-")
  [[ -f tests/fuzz/$name.dict ]] && args+=(-dict="$root/tests/fuzz/$name.dict")
  dirs=("$scratch")
  [[ -d $seeds ]] && dirs+=("$seeds")
  log=$build/$t.log
  before=$(ls "$scratch" | wc -l)
  t0=$(date +%s)
  timeout --signal=KILL $((secs + 120)) "$build/tests/fuzz/$t" "${args[@]}" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  ran=$(($(date +%s) - t0))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  cov=$(grep -oE '(DONE|#[0-9]+).*cov: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' | grep -o '[0-9]*')
  added=$(($(ls "$scratch" | wc -l) - before))
  total_execs=$((total_execs + ${execs:-0}))
  if ((rc != 0)); then
    grep -E 'ERROR: libFuzzer|ERROR: AddressSanitizer|runtime error|SUMMARY|==[0-9]+==' "$log" | head -8
    artifact=$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -1)
    printf '%-26s FAIL  %4ss  %10s execs  exit %s  reproducer: %s  (log: %s)\n' "$t" "$ran" "${execs:-?}" "$rc" \
      "${artifact:-none}" "$log"
    failed+=("$t")
  else
    printf '%-26s ok    %4ss  %10s execs  +%s corpus  cov %s\n' "$t" "$ran" "${execs:-?}" "$added" "${cov:-?}"
  fi
done

total=$(($(date +%s) - start))
if ((${#failed[@]})); then
  echo "fuzz: FAILED (${failed[*]}): ${#targets[@]} targets x ${secs}s, build ${built}s, total ${total}s"
  exit 1
fi
echo "fuzz: OK: ${#targets[@]} targets x ${secs}s, $total_execs execs, no findings; build ${built}s, total ${total}s"
