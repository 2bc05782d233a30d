#!/usr/bin/env bash
# Sets up a machine, builds the demo and runs it: quantize an LLM-like layer in
# each of lqer's formats and print the error each one makes.
#
#   bash scripts/demo.sh              the synthetic 512x1024 layer
#   bash scripts/demo.sh W.npy        a real [out, in] float32 weight
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${LQER_JOBS:-2}
BUILD=build/demo

setup() { bash scripts/setup.sh; }

build() {
  # Only what the demo needs: no tests or benchmarks to compile.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLQER_BUILD_TESTS=OFF -DLQER_BUILD_BENCH=OFF -DLQER_BUILD_TOOLS=ON -DLQER_BUILD_EXAMPLES=ON >/dev/null
  cmake --build "$BUILD" -j "$JOBS" --target quantize_demo lqer_cli
}

run() { "$BUILD/examples/quantize_demo" "$@"; }

setup
build
run "$@"
echo "The command-line tool is at $BUILD/tools/lqer/lqer (try: $BUILD/tools/lqer/lqer quantize --help)."
