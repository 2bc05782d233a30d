// use_lite — a quantized model in one file: `use_lite quantize` writes it, and
// `use_lite embed` / `tokenize` run from it with neither the TF.js model
// directory nor calibration data (the same design as the llama engine's
// examples/llama/checkpoint.hpp).
//
// The file is an LQER checkpoint (lqer/io/checkpoint.hpp, docs/checkpoint.md):
// a safetensors file whose tensors all carry a sha256. What it holds:
//
//   layers  l0.qkv l0.attn_out l0.dense l0.ffn1 l0.ffn2     the 10 linears (linear_name),
//           l1.qkv l1.attn_out l1.ffn1 l1.ffn2 tanh          biases included, as the
//                                                             checkpoint schema stores them
//   F32     embeddings [8002, 256], timing_inv [128]
//           l<i>.ln1_g, l<i>.ln1_b [d], l<i>.ln2_g, l<i>.ln2_b [512]   the layer norms
//           l<i>.q_scale [1], l2_epsilon [1]              the graph's two scalar constants
//   I32/U8  tokenizer.pieces.lengths [n], tokenizer.pieces.bytes [Σ lengths]
//   F64     tokenizer.scores [n]                          the vocabulary (tokenizer.hpp's
//                                                         `vocabulary`: vocab.json's pairs)
//
// and in __metadata__ (the application's keys, outside "lqer."):
//   use_lite.file            "lqer.use_lite.v1"
//   use_lite.vocab, embedding_length, hidden_length, feed_forward_length,
//   head_count, timing_length, max_tokens
//                            the configuration (decimal). The engine's shapes are
//                            fixed (model.hpp); a file of other shapes is refused.
//   use_lite.quant           the quantization, as `use_lite quantize` described it
//   use_lite.source          the TF.js model directory it was made from (its name)
//   use_lite.calibration     what it was calibrated on ("none" without calibration)
//
// Everything float is stored as it is in memory, the scores as the doubles
// JSON gave: a model run from the file computes exactly what the model
// quantized in memory computes (tests/examples/test_use_lite_file.cpp checks
// the embeddings bit for bit). USE-lite quantized with the paper's formats at
// rank 32 is 11.7 MB, 8.2 of which are the fp32 embedding table.
#pragma once

#include <filesystem>
#include <lqer/layer/reference_forward.hpp>  // correction_mode
#include <optional>
#include <string>

#include "model.hpp"
#include "tokenizer.hpp"

namespace use_lite {

/// What a model file records besides its tensors.
struct model_file_info {
  std::string quant;        ///< use_lite.quant
  std::string source;       ///< use_lite.source
  std::string calibration;  ///< use_lite.calibration
};

/// Writes the model `q` runs — whose 10 linears are lqer layers — with its
/// other weights and `vocab` to `path`, atomically (io_error when it cannot;
/// the target is then unchanged). value_error when a linear is not quantized.
void save_quantized_model(const std::filesystem::path& path, const encoder& q, const vocabulary& vocab,
                          const model_file_info& info);

/// A model read back from its file.
struct quantized_model_file {
  std::shared_ptr<const model_weights> weights;  ///< embeddings, norms, constants; no linear weights (shapes only)
  linear_set linears;
  std::optional<tokenizer> tok;
  model_file_info info;
  /// The encoder (consumes `linears`).
  encoder make_encoder() { return encoder(weights, std::move(linears)); }
};

/// Reads a file save_quantized_model wrote (checksums verified unless
/// `verify` is false), its layers packed for the fused kernels on `pool` (or
/// run on the reference with `reference`). lqer's typed errors name the file:
/// io_error, parse_error for a damaged file or one of other shapes,
/// value_error for an LQER checkpoint of another kind or a layer format this
/// engine does not build.
quantized_model_file load_quantized_model(const std::filesystem::path& path, thread_pool& pool, bool verify = true,
                                          lqer::correction_mode mode = lqer::correction_mode::fused,
                                          bool reference = false);

/// The tokenizer of a model file alone (no layer is loaded), with the same
/// checks on what it reads.
tokenizer load_model_file_tokenizer(const std::filesystem::path& path);

/// Whether --model names a model file rather than a TF.js model directory:
/// anything that exists and is not a directory, or a path that does not exist
/// ending in ".safetensors" (any other is taken for a directory, whose reader
/// then names the file it misses).
bool is_model_file(const std::filesystem::path& model);

}  // namespace use_lite
