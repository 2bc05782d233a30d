#!/usr/bin/env bash
# The main job, for a newcomer on a fresh machine: set up, fetch real trained
# models (sha256-checked, cached once), quantize every linear layer with lqer
# (W4A8 + low-rank correction, for each rank and scale policy), and print the
# quality tables against the float model:
#
#   1. SmolLM2-135M-Instruct, a Llama-architecture decoder LLM (its GGUF, from
#      PyPI): the LQER paper's held-out perplexity table, per-layer errors and a
#      plot of perplexity against bits per weight (build/demo/llama_eval.svg)
#   2. Google's Universal Sentence Encoder lite (npm): embedding agreement
#
#   bash scripts/demo.sh                  both tables (15–25 minutes on 2 cores, most of it the LLM's: ranks 8 and 32, blocks 16 and 32)
#   bash scripts/demo.sh --quick          the LLM table at block 32 only (about 6 minutes)
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

quick=0
if [[ ${1:-} == --quick ]]; then
  quick=1
  shift
fi

if (($# > 0)); then
  # The format demo: quantize a layer in each of lqer's formats, print each error.
  configure
  cmake --build "$BUILD" -j "$JOBS" --target quantize_demo lqer_cli
  if [[ $1 == --synthetic ]]; then shift; fi
  "$BUILD/examples/quantize_demo" "$@"
  echo "The command-line tool is at $BUILD/tools/lqer/lqer (try: $BUILD/tools/lqer/lqer quantize --help)."
  exit 0
fi

echo "demo: fetching SmolLM2-135M-Instruct, USE-lite and the KJV text into ${LQER_CACHE:-$HOME/.cache/lqer} (once)"
bash scripts/fetch_smollm2.sh >/dev/null
bash scripts/fetch_use_lite.sh >/dev/null
configure
echo "demo: building the llama and use_lite engines (a few minutes on 2 cores)"
cmake --build "$BUILD" -j "$JOBS" --target llama use_lite

table=(--chunks 8 --calib-chunks 8 --ranks 8,32)
((quick)) && table+=(--blocks 32)
# llama.cpp's own numbers on the same file and text, where someone measured them
# (llama eval --help: the JSON --peers takes); printed beside the table and plotted.
peers=${LQER_CACHE:-$HOME/.cache/lqer}/peers/llama_cpp_smollm2.json
[[ -f $peers ]] && table+=(--peers "$peers")
cat <<'EOF'

demo 1/2: SmolLM2-135M-Instruct (30 blocks, 210 linear layers, 135 M weights). Every linear
      layer is quantized to 4-bit MX weights + 8-bit MX activations (W4A8, the LQER paper's
      setup) with a rank-k correction A·B of the quantization error, for each rank and scale
      policy (LQER = plain SVD, L²QER = activation-scaled, rms, whiten = closed-form optimum);
      calibration on Genesis, perplexity on the Gospel of John (held out). Lower perplexity =
      closer to the float model; bits/weight counts the codes, the scales, A and B.
EOF
"$BUILD/examples/llama/llama" eval "${table[@]}" --threads "$JOBS" --json "$BUILD/llama_eval.json"
python3 scripts/plot_llama_eval.py "$BUILD/llama_eval.json" "$BUILD/llama_eval.svg"
echo "Run the model yourself: $BUILD/examples/llama/llama generate --chat --prompt 'What is the capital of France?'"

cat <<'EOF'

demo 2/2: every linear layer of USE-lite (10 layers, 4.9 M weights) is quantized the same way;
      128 held-out Bible verses are embedded and compared with the fp32 model. Higher cosine /
      Spearman = closer to fp32.
EOF
"$BUILD/examples/use_lite/use_lite" eval
echo "Embed your own sentences: $BUILD/examples/use_lite/use_lite embed --help"
