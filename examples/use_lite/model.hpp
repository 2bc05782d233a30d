// use_lite — the USE-lite model: its weights and the forward pass.
//
// The forward pass, exactly as USE_LITE.md writes it (checked there against
// TF.js to 4.5e-7; here against the fixture in tests/examples/data):
//
//   x0[t]  = E[id_t]                      E [8002, 256]
//   timing = [sin(t·inv), cos(t·inv)]     inv [128] as the graph stores it
//   x      = 2·x0 + timing                (the graph adds emb and emb + timing)
//   per layer l (l = 0: d = 256, head dim 64; l = 1: d = 512, head dim 128; 4 heads):
//     h   = LN1(x);  qkv = h·Wqkv + b     columns q | k | v, head i = [i·dh, (i+1)·dh)
//     a   = softmax((q·scale)·kᵀ) over the sentence's own tokens (no causal mask)
//     o   = concat_i a_i·v_i
//     res = l == 0 ? x·Wd + bd : x        (layer 0's `dense` maps 256 → 512)
//     x   = res + (o·Wo + bo)
//     x   = x + relu(LN2(x)·W1 + b1)·W2 + b2
//   p   = mean of x over the sentence's tokens (0 for an empty sentence)
//   out = l2-normalize(tanh(p·Wt + bt))
//
// Batches are "ragged": the tokens of all sentences of a batch are stacked
// into one [T, d] matrix, so every linear layer runs once per batch with M = T
// rows and no padding rows; attention and pooling work sentence by sentence.
// (TF.js pads to the longest sentence and masks padding keys with −1e9; rows
// are independent everywhere else, so the two agree.)
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <lqer/error.hpp>
#include <lqer/tensor/view.hpp>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "linear.hpp"
#include "tfjs_weights.hpp"
#include "common/thread_pool.hpp"

namespace use_lite {

/// Every weight the forward pass reads, in TF.js's layout.
struct model_weights {
  static constexpr index_t kVocab = 8002;     ///< embedding rows (vocab.json lists 8000)
  static constexpr index_t kEmbedDim = 256;   ///< layer 0's width
  static constexpr index_t kHiddenDim = 512;  ///< layer 1's width and the output's
  static constexpr index_t kFfnDim = 1536;
  static constexpr index_t kHeads = 4;
  static constexpr index_t kTimingDim = 128;  ///< sin and cos halves of the timing signal

  struct layer {
    index_t d = 0;                    ///< width of the attention (256, then 512)
    index_t head_dim = 0;             ///< d / kHeads
    float q_scale = 0;                ///< the graph's MultiheadAttention/mul/y: 1/√head_dim
    std::vector<float> ln1_g, ln1_b;  ///< [d]
    std::vector<float> ln2_g, ln2_b;  ///< [512]
  };

  std::vector<float> embeddings;  ///< [kVocab, kEmbedDim]
  std::vector<float> timing_inv;  ///< [kTimingDim]
  std::array<layer, 2> layers;
  std::array<dense_weights, kNumLinears> linears;  ///< indexed by linear_id
  float l2_epsilon = 1e-12f;                       ///< l2_normalize's floor on Σx²

  /// {in, out} of linear layer `id`: what from_tfjs reads and a model file must hold.
  static constexpr std::array<index_t, 2> linear_shape(linear_id id) noexcept {
    switch (id) {
      case linear_id::l0_qkv: return {kEmbedDim, 3 * kEmbedDim};
      case linear_id::l0_attn_out: return {kEmbedDim, kHiddenDim};
      case linear_id::l0_dense: return {kEmbedDim, kHiddenDim};
      case linear_id::l1_qkv: return {kHiddenDim, 3 * kHiddenDim};
      case linear_id::l0_ffn1:
      case linear_id::l1_ffn1: return {kHiddenDim, kFfnDim};
      case linear_id::l0_ffn2:
      case linear_id::l1_ffn2: return {kFfnDim, kHiddenDim};
      case linear_id::l1_attn_out:
      case linear_id::tanh: return {kHiddenDim, kHiddenDim};
    }
    return {0, 0};
  }

  /// Reads every weight by name from a loaded TF.js model (parse_error naming
  /// model.json for a missing weight or a wrong shape).
  static model_weights from_tfjs(const tfjs_weights& w);
  /// Reads `dir`/model.json and its shards.
  static model_weights load(const std::filesystem::path& dir) { return from_tfjs(tfjs_weights::load(dir)); }

  /// Bytes of the parameters outside the 10 linear layers (embeddings, layer
  /// norms, timing): they stay fp32 in every configuration.
  std::size_t other_bytes() const noexcept;
};

/// A vocabulary (DIR/vocab.json) with more entries than the model's embedding
/// table has rows would hand the encoder ids it cannot look up, and the
/// encoder's own check names no file: refuse the pair up front, naming both
/// files (value_error).
inline void check_vocabulary_fits(std::size_t vocab_size, const std::filesystem::path& model_dir) {
  if (vocab_size > static_cast<std::size_t>(model_weights::kVocab))
    throw lqer::value_error((model_dir / "vocab.json").string() + ": " + std::to_string(vocab_size) +
                            " entries, more than the " + std::to_string(model_weights::kVocab) +
                            " rows of the embedding table in " + (model_dir / "model.json").string());
}

/// Called with the input of every linear layer as the forward pass meets it
/// (for calibration statistics and per-layer error measurements).
using linear_observer = std::function<void(linear_id, lqer::matrix_view<const float> x)>;

/// The linear layers of the fp32 model, sharing `w`.
linear_set make_fp32_linears(std::shared_ptr<const model_weights> w);

/// The encoder: weights plus one implementation of each linear layer.
class encoder {
 public:
  static constexpr index_t kMaxTokens = 128;  ///< positions ≥ 128 are dropped (the graph's ClipToMaxLength)
  static constexpr index_t kOutDim = model_weights::kHiddenDim;
  /// Sentences per batch in embed(): bounds the working memory (≤ 128·64 token rows).
  static constexpr std::size_t kBatch = 64;

  encoder(std::shared_ptr<const model_weights> w, linear_set linears);

  /// Embeds sentences given as token ids (each id < kVocab; value_error
  /// otherwise) into out [n, 512], one unit-norm row per sentence.
  void embed(std::span<const std::vector<std::int32_t>> ids, lqer::matrix_view<float> out, thread_pool& pool,
             const linear_observer* observer = nullptr) const;
  std::vector<float> embed(std::span<const std::vector<std::int32_t>> ids, thread_pool& pool,
                           const linear_observer* observer = nullptr) const;

  const model_weights& weights() const noexcept { return *w_; }
  const linear_op& linear(linear_id id) const noexcept { return *linears_[static_cast<int>(id)]; }
  /// Bytes of the 10 linear layers as their implementations store them.
  std::size_t linear_bytes() const noexcept;

 private:
  void embed_batch(std::span<const std::vector<std::int32_t>> ids, lqer::matrix_view<float> out, thread_pool& pool,
                   const linear_observer* observer) const;

  std::shared_ptr<const model_weights> w_;
  linear_set linears_;
};

}  // namespace use_lite
