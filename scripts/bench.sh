#!/usr/bin/env bash
# Builds the benchmarks and runs them, then prints the README's tables.
#
#   bash scripts/bench.sh              bench_linear (lqer vs oneDNN, measured peaks) + bench_factorize
#   bash scripts/bench.sh linear       only bench_linear
#   bash scripts/bench.sh factorize    only bench_factorize
#
# JSON goes to build/bench/<suite>.json. Run on a quiet machine: numbers from a
# loaded one compare nothing (the measured peaks in the same run show it).
# Extra Google Benchmark flags: LQER_BENCH_FLAGS, e.g. --benchmark_filter=M:1/.
# ggml side by side (optional, not a Debian package): LQER_GGML_SOURCE_DIR=<ggml
# checkout> LQER_GGML_BUILD_DIR=<its build dir> (bench/CMakeLists.txt says how to build it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${LQER_JOBS:-2}
BUILD=build/bench
suites=("$@")
((${#suites[@]} > 0)) || suites=(linear factorize)

bash scripts/setup.sh
mkdir -p build
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLQER_BUILD_TESTS=OFF -DLQER_BUILD_TOOLS=OFF \
  -DLQER_BUILD_EXAMPLES=OFF -DLQER_BUILD_BENCH=ON -DLQER_GGML_SOURCE_DIR="${LQER_GGML_SOURCE_DIR:-}" \
  -DLQER_GGML_BUILD_DIR="${LQER_GGML_BUILD_DIR:-}" >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep 'bench_linear:' "$BUILD.configure.log" || true  # with or without oneDNN, and why
cmake --build "$BUILD" -j "$JOBS" --target "${suites[@]/#/bench_}"
# Which kernel paths this CPU runs (bench_linear times the best one).
g++ -std=c++20 -O1 -Iinclude scripts/kernel_paths.cpp -o "$BUILD/kernel_paths" && "$BUILD/kernel_paths"

for s in "${suites[@]}"; do
  echo "==> bench_$s"
  # Three repetitions: the tables take the median of each.
  # shellcheck disable=SC2086
  "$BUILD/bench/bench_$s" --benchmark_repetitions=3 --benchmark_min_time=0.2 \
    --benchmark_out="$BUILD/$s.json" --benchmark_out_format=json ${LQER_BENCH_FLAGS:-}
done
if [[ " ${suites[*]} " == *" linear "* ]]; then python3 scripts/bench_table.py "$BUILD/linear.json"; fi
