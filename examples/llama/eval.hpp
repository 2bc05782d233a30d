// llama — the paper's perplexity table on a real decoder LLM, and the speed
// table.
//
// Quality (run_quality_table), per configuration (method × rank × block):
//   held-out perplexity, llama.cpp style (windows of ctx tokens, the second
//     half of each scored; model::evaluate) on the first `chunks` windows;
//   bits per weight of Wq + A + B (codes and block scales) over the 210 linears;
//   per-layer relative output error ‖Yq − Y‖_F / ‖Y‖_F of each linear on the
//     float model's inputs to it (first `layer_rows` tokens of the evaluation
//     text), so each number is that layer's own error, not the accumulated one;
//   and whether the paper's ordering plain > LQER > L²QER holds at each rank.
// Calibration runs once (Gram matrices included when whiten is asked for), on
// the first `calib_chunks` windows of the calibration text.
//
// Speed (run_speed_table): prefill tokens/s of a `prompt_tokens` prompt and
// decode tokens/s of `decode_tokens` greedy tokens after a 128-token prompt,
// for each thread count, float and quantized.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "quantize.hpp"

namespace llama {

struct eval_options {
  quant_config base;  ///< formats and mode; method, rank and block are swept
  std::vector<int> ranks{8, 16, 32, 64};
  std::vector<std::string> methods{"lqer", "l2qer", "rms", "whiten"};
  std::vector<int> blocks{16, 32};
  index_t ctx = 512;
  int chunks = 16, calib_chunks = 16;
  int layer_rows = 128;
  int threads = 2;
  std::string model_file, eval_file, calib_file;
  std::string json_out;  ///< also write every number as JSON here ("" = no)
  std::string
      peers_file;  ///< llama.cpp's numbers as JSON (commit, ctx, chunks, files: [{name, bits_per_weight_linears,
                   ///< bits_per_weight_file, perplexity}]) to print beside ours ("" = none)
};

/// Runs the sweep and prints the table (and a header saying what was run).
void run_quality_table(const eval_options& opt, std::ostream& out);

struct speed_options {
  quant_config base;
  std::vector<int> ranks{0, 8, 32};  ///< 0 = plain W4A8
  std::vector<int> thread_counts{1, 2};
  index_t prompt_tokens = 512, decode_prompt = 128, decode_tokens = 128;
  int runs = 3;  ///< the fastest of `runs` is reported
  std::string model_file, text_file;
  /// llama.cpp's llama-bench (built from its public source beside the
  /// project), run on `peer_models` in the same process run after lqer's rows
  /// with the same prompt/decode lengths, thread counts and runs ("" = none).
  std::string llama_bench;
  std::vector<std::string> peer_models;  ///< GGUF files for llama-bench (empty: model_file)
};

void run_speed_table(const speed_options& opt, std::ostream& out);

/// The whole text of `path` (io_error naming it when it cannot be read).
std::string read_text(const std::string& path);

/// Progress on stderr when it is a terminal ("\r<what> i/n"), nothing otherwise.
void progress_line(const std::string& what, int done, int total);

}  // namespace llama
