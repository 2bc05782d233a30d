// llama — a Llama-architecture decoder (SmolLM2-135M) from its GGUF file: the
// configuration, the weights decoded to float, and the forward pass with a KV
// cache.
//
// The forward pass, for a chunk of T tokens at positions p0 … p0 + T − 1 (the
// cache holds the keys and values of positions < p0):
//
//   x = E[id]                                            E [vocab, d], token_embd
//   per block b:
//     h = RMSNorm(x)·g_attn                               RMSNorm(x) = x / sqrt(mean(x²) + ε)
//     q = h·Wqᵀ [T, H·hd],  k = h·Wkᵀ, v = h·Wvᵀ [T, Hkv·hd]
//     q, k ← RoPE(q, k, position)                          base: llama.rope.freq_base
//     head i (kv head i / (H/Hkv)): a = softmax(q_i·k_jᵀ/√hd, j ≤ position)·v_j
//     x = x + a·Woᵀ
//     h = RMSNorm(x)·g_ffn
//     x = x + (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ                    SwiGLU
//   logits = RMSNorm(x)·g_out·Eᵀ                          tied: output.weight absent
//
// Every number comes from the `llama.*` metadata. The 7 linear layers of each
// block (q, k, v, o, gate, up, down; 210 for SmolLM2) and the output projection
// go through engine::linear_op, so any of them can be swapped for a quantized
// one (set_linear). A chunk's linears see M = T rows: batched prefill (T > 1)
// and token-by-token decode (T = 1) run the same code.
//
// RoPE and the GGUF Q/K permutation. transformers' Llama rotates the pairs
// (j, j + hd/2) of each head (rotate_half) with angle pos·base^(−2j/hd).
// llama.cpp's convert_hf_to_gguf.py permutes the rows of attn_q and attn_k
// within each head so that llama.cpp's "normal" RoPE (rope type 0, llama's)
// rotates adjacent pairs (2j, 2j + 1) instead: GGUF row h·hd + 2j + s holds HF
// row h·hd + s·hd/2 + j (s ∈ {0, 1}), for q with H heads and for k with Hkv.
// This engine keeps the file's order and rotates adjacent pairs, as llama.cpp
// does; q and k come out permuted alike within each head, so every q·k — and
// everything after it — equals transformers' (which un-permutes on load and
// uses rotate_half). hf_row_of_gguf / gguf_row_of_hf state the map; the test
// checks the decoded weights against transformers' through it.
//
// Threads: everything runs on the engine's pool with tasks whose work depends
// on their index only (row chunks, head × query-row tiles, the linears' fixed
// tiles; at decode, whole linears that share an input), so results are
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <lqer/error.hpp>
#include <lqer/tensor/view.hpp>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/linear.hpp"
#include "common/thread_pool.hpp"

namespace lqer::io {
class gguf_file;
}

namespace llama {

using engine::dense_weights;
using engine::index_t;
using engine::linear_op;
using engine::thread_pool;

// ---------------------------------------------------------------------------
// Configuration

/// The architecture's numbers, from the GGUF metadata.
struct config {
  index_t n_layers = 0;        ///< llama.block_count
  index_t d_model = 0;         ///< llama.embedding_length
  index_t d_ffn = 0;           ///< llama.feed_forward_length
  index_t n_heads = 0;         ///< llama.attention.head_count
  index_t n_kv_heads = 0;      ///< llama.attention.head_count_kv (grouped-query attention)
  index_t head_dim = 0;        ///< d_model / n_heads (llama.rope.dimension_count must equal it)
  index_t vocab = 0;           ///< rows of token_embd
  index_t context_length = 0;  ///< llama.context_length (trained context)
  double rope_base = 10000;    ///< llama.rope.freq_base
  float rms_eps = 1e-5f;       ///< llama.attention.layer_norm_rms_epsilon

  /// Reads and checks the `llama.*` keys (value_error naming the file and the
  /// key: another architecture, a missing key, inconsistent numbers).
  static config from_gguf(const lqer::io::gguf_file& f);
  /// Sets head_dim and checks the numbers against each other (value_error
  /// without a file name: the caller prefixes it).
  void derive_and_check();
  index_t q_dim() const noexcept { return n_heads * head_dim; }
  index_t kv_dim() const noexcept { return n_kv_heads * head_dim; }
};

/// The 7 linear layers of a block, in the order the forward pass meets them.
enum class linear_kind : int { q, k, v, o, gate, up, down };
inline constexpr int kLinearsPerBlock = 7;
/// "attn_q", "attn_k", … — the GGUF tensor names' middle part.
const char* gguf_name(linear_kind k) noexcept;
/// Index of a block's linear layer among all of them: block · 7 + kind.
constexpr int linear_index(index_t block, linear_kind k) noexcept {
  return static_cast<int>(block) * kLinearsPerBlock + static_cast<int>(k);
}
/// "blk.3.attn_q" for linear_index(3, q).
std::string linear_name(int index);

/// The row map between GGUF's and transformers' order of attn_q / attn_k
/// (see the file comment): `heads` = H for q, Hkv for k.
constexpr index_t hf_row_of_gguf(index_t gguf_row, index_t head_dim) noexcept {
  const index_t h = gguf_row / head_dim, r = gguf_row % head_dim;
  return h * head_dim + (r % 2) * (head_dim / 2) + r / 2;
}
constexpr index_t gguf_row_of_hf(index_t hf_row, index_t head_dim) noexcept {
  const index_t h = hf_row / head_dim, r = hf_row % head_dim, half = head_dim / 2;
  return h * head_dim + 2 * (r % half) + r / half;
}

// ---------------------------------------------------------------------------
// Weights

/// Every weight, decoded to float. "fp32" is this: the file's quantized
/// tensors (Q4_1, Q8_0, …) decoded exactly as ggml decodes them, run in float.
struct model_weights {
  config cfg;
  struct block {
    std::vector<float> attn_norm, ffn_norm;  ///< [d_model]
  };
  std::vector<block> blocks;
  /// The n_layers · 7 linear layers, [out, in] (GGUF's ne = {in, out}), no
  /// bias; attn_q / attn_k rows in the file's (permuted) order.
  std::vector<dense_weights> linears;
  std::vector<float> output_norm;  ///< [d_model]
  /// The output projection [vocab, d_model]; its weights are token_embd's
  /// when the file has no output.weight (tied), read by embedding() too.
  dense_weights output;
  bool tied_output = false;
  std::vector<float> token_embd;  ///< [vocab, d_model] when not tied; empty when tied

  /// Opens and decodes `path` (the pool decodes tensors side by side).
  static model_weights load(const std::filesystem::path& path, thread_pool& pool);
  static model_weights from_gguf(const lqer::io::gguf_file& f, thread_pool& pool);

  /// When set, the token table is not held as float: row `id` is decoded
  /// into `row` (d_model floats) on lookup. A model file whose output
  /// projection is quantized never needs the float table whole, and decoding
  /// 49,152 rows it would never read was most of its load time.
  std::function<void(std::int32_t id, float* row)> decode_embedding;

  /// Row `id` of the token embedding (the float table; see embedding_into).
  const float* embedding(std::int32_t id) const noexcept {
    return (tied_output ? output.w.data() : token_embd.data()) + static_cast<std::size_t>(id) * cfg.d_model;
  }
  /// Row `id` of the token embedding into `row` (d_model floats), either way.
  void embedding_into(std::int32_t id, float* row) const {
    if (decode_embedding)
      decode_embedding(id, row);
    else
      std::copy_n(embedding(id), cfg.d_model, row);
  }
};

// ---------------------------------------------------------------------------
// The model

/// Called with the input x [M, in] of every linear layer (index as
/// linear_index; the output projection is not observed) during a forward pass:
/// calibration statistics, per-layer errors. q, k and v see the same x, as do
/// gate and up: each is called with it once.
using linear_observer = std::function<void(int linear, lqer::matrix_view<const float> x)>;

/// The keys and values of the positions seen so far, per layer, as RoPE left
/// them. Fixed capacity: a forward past it is a value_error. Head-major: a
/// KV head's keys (and values) are one contiguous run of capacity × head_dim
/// floats, so attention reads each head's cache as one sequential stream (the
/// hardware prefetcher's case; position-major rows interleave the heads and
/// every head would read one 256-byte piece of each 768-byte row).
class kv_cache {
 public:
  kv_cache(const config& cfg, index_t capacity);
  index_t size() const noexcept { return size_; }
  index_t capacity() const noexcept { return capacity_; }
  void clear() noexcept { size_ = 0; }

 private:
  friend class model;
  index_t capacity_ = 0, size_ = 0, kv_dim_ = 0;
  std::vector<std::vector<float>> k_, v_;  ///< per layer [n_kv_heads, capacity, head_dim]
};

/// Log-likelihood of a text: Σ −log p(next token) over the scored positions.
struct log_likelihood {
  double nll_sum = 0;
  std::size_t predicted = 0;  ///< tokens scored
  double perplexity() const noexcept;
};

class model {
 public:
  /// Tokens per forward chunk in logits() and evaluate(): the linears' M.
  static constexpr index_t kDefaultBatch = 256;

  /// The float model: every linear an engine::fp32_linear over `w`.
  explicit model(std::shared_ptr<const model_weights> w);
  /// A model with the given linears (n_layers · 7, linear_index order) and
  /// output projection (null: fp32 over w's table): a quantized model loaded
  /// from its file, whose `w` holds no linear weights. shape_error for a
  /// missing layer or a shape that is not the configuration's.
  model(std::shared_ptr<const model_weights> w, std::vector<std::unique_ptr<const linear_op>> linears,
        std::unique_ptr<const linear_op> output);

  const config& cfg() const noexcept { return w_->cfg; }
  const model_weights& weights() const noexcept { return *w_; }
  int num_linears() const noexcept { return static_cast<int>(linears_.size()); }
  const linear_op& linear(int index) const { return *linears_.at(static_cast<std::size_t>(index)); }
  /// Replaces linear layer `index` (shape_error when its shape differs).
  void set_linear(int index, std::unique_ptr<const linear_op> op);
  /// Bytes of the 210 linears as their implementations store them.
  std::size_t linear_bytes() const noexcept;
  /// The output projection [d_model → vocab] (fp32 over the weights' table
  /// until set_output replaces it; embedding lookups keep reading the float
  /// table either way).
  const linear_op& output() const noexcept { return *output_; }
  /// Replaces the output projection (shape_error when its shape differs).
  void set_output(std::unique_ptr<const linear_op> op);

  /// Runs `tokens` at positions cache.size() … and appends their keys and
  /// values to the cache. Returns the logits [T, vocab] row-major, or only the
  /// last token's [vocab] when `last_only`. Ids outside [0, vocab) are a
  /// value_error (nothing is changed then).
  std::vector<float> forward(std::span<const std::int32_t> tokens, kv_cache& cache, thread_pool& pool,
                             bool last_only = false, const linear_observer* observer = nullptr) const;

  /// The logits [T, vocab] of a whole sequence from an empty cache, in chunks
  /// of `batch` tokens (batch = 1: token by token, the decode path).
  std::vector<float> logits(std::span<const std::int32_t> tokens, thread_pool& pool, index_t batch = kDefaultBatch,
                            const linear_observer* observer = nullptr) const;

  /// Perplexity evaluation as llama.cpp's llama-perplexity does it: the text
  /// is cut into windows of `ctx` tokens (a shorter tail is dropped), each
  /// window runs from an empty cache, and in each window the tokens after
  /// position `first` (default ctx / 2: every scored token has at least that
  /// much context) are scored: −log p(t[j + 1] | t[0..j]) for j ∈ [first, ctx − 1).
  /// first = 0 scores every token but the window's first.
  log_likelihood evaluate(std::span<const std::int32_t> tokens, index_t ctx, thread_pool& pool,
                          std::optional<index_t> first = std::nullopt, index_t batch = kDefaultBatch,
                          const linear_observer* observer = nullptr) const;

  /// Greedy decoding: the prompt in one prefill, then `n` tokens one at a
  /// time (argmax, lowest id on ties), stopping after `stop` if given.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, index_t n, thread_pool& pool,
                                     std::optional<std::int32_t> stop = std::nullopt) const;

 private:
  std::shared_ptr<const model_weights> w_;
  std::vector<std::unique_ptr<const linear_op>> linears_;
  std::unique_ptr<const linear_op> output_;
  void init_rope();
  std::vector<double> rope_inv_freq_;  ///< [head_dim / 2]: base^(−2j/hd); angles and their cos/sin in double
};

/// −log softmax(logits)[target] = log Σ exp(l) − l[target], in double.
double negative_log_prob(std::span<const float> logits, std::int32_t target);

}  // namespace llama
