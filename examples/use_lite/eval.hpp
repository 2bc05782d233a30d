// use_lite — the quality/speed table: how far each quantized configuration's
// embeddings are from fp32's, what it costs in bytes, how fast it runs.
//
// Per configuration (rank × scale policy on one format), on held-out sentences:
//   mean / min cosine to the fp32 embedding of the same sentence;
//   Spearman correlation of the pairwise-similarity matrix with fp32's;
//   per-layer relative output error ‖Yq − Y‖_F / ‖Y‖_F of each linear layer on
//     the same inputs (the fp32 model's inputs to that layer, first
//     `layer_rows` token rows), so each number is that layer's own error, not
//     the accumulated error of the layers before it;
//   bits per weight of Wq + A + B (codes and block scales) over the 10 layers,
//     the linear layers' bytes (with their fp32 biases) and the whole model's
//     (the embedding table and layer norms stay fp32);
//   sentences/s for each thread count, and whether the embeddings are
//     bit-identical across the thread counts.
#pragma once

#include <array>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "quantize.hpp"

namespace use_lite {

struct eval_options {
  quant_config base;  ///< formats and mode; rank and policy are swept
  std::vector<int> ranks{0, 8, 16, 32};
  std::vector<scale_policy_kind> policies{scale_policy_kind::identity, scale_policy_kind::mean_abs,
                                          scale_policy_kind::rms, scale_policy_kind::whiten};
  std::optional<std::array<int, kNumLinears>> layer_ranks;  ///< replaces `ranks` with one per-layer assignment
  std::vector<int> thread_counts{1, 2};
  int layer_rows = 1024;
  int timing_runs = 5;  ///< embed the evaluation set this many times per thread count; report the fastest
  std::string model_dir, calib_file, eval_file;
};

/// Runs the sweep and prints the table (and a header saying what was run).
void run_quality_table(const eval_options& opt, std::ostream& out);

}  // namespace use_lite
