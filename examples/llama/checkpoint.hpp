// llama — a quantized model in one file: `llama quantize` writes it, and
// perplexity, generate and bench run from it with neither the GGUF's float
// weights nor calibration data.
//
// The file is an LQER checkpoint (lqer/io/checkpoint.hpp, docs/checkpoint.md):
// a safetensors file whose tensors all carry a sha256. What it holds:
//
//   layers  blk.<b>.attn_q … blk.<b>.ffn_down    the n_layers · 7 linears, as
//                                                 the checkpoint schema stores them
//           output                                the output projection, when it
//                                                 is quantized (--output-format mxint8)
//   F32     blk.<b>.attn_norm, blk.<b>.ffn_norm, output_norm    [d_model]
//   U8      token_embd.ggml                       [vocab, row bytes]: the GGUF's
//           (output.ggml, for an untied output)   token table in its own encoding
//                                                 (SmolLM2: Q4_1), decoded on load
//                                                 exactly as from the GGUF
//   I32/U8  tokenizer.tokens.lengths/.bytes, tokenizer.merges.lengths/.bytes,
//           tokenizer.token_type                  the vocabulary (tokenizer.hpp's vocab_spec)
//
// and in __metadata__ (the application's keys, outside "lqer."):
//   llama.file               "lqer.llama.v1"
//   llama.block_count, embedding_length, feed_forward_length, head_count,
//   head_count_kv, context_length, vocab, rope.freq_base, layer_norm_rms_epsilon
//                            the configuration (decimal; floats as %.17g)
//   llama.token_embd.ggml_type, llama.output.ggml_type    the ggml type ids
//   llama.tied_output        "true" | "false"
//   llama.quant              the quantization, as quant_config::describe() says it
//   llama.source             the GGUF the model was made from (its file name)
//   tokenizer.model, tokenizer.pre, tokenizer.bos_id, .eos_id, .unk_id,
//   .pad_id, .add_bos, .add_eos
//
// The token table is kept in the file's encoding rather than as float: 18 MB
// instead of 113 MB for SmolLM2, and decoding it is bit-exact, so a model run
// from the file computes exactly what the model quantized in memory computes
// (tests/examples/test_llama_checkpoint.cpp checks the logits bit for bit).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "model.hpp"
#include "quantize.hpp"
#include "tokenizer.hpp"

namespace lqer::io {
class gguf_file;
}

namespace llama {

/// Writes model `m` — whose linears (and output projection, if not float)
/// are lqer layers — with everything else it needs from `source` (the GGUF it
/// was made from: norms, token table, configuration, vocabulary) to `path`,
/// atomically. value_error when a linear is not quantized.
void save_quantized_model(const std::filesystem::path& path, const model& m, const lqer::io::gguf_file& source,
                          const std::string& quant_description);

/// A model read back from its file.
struct quantized_model_file {
  std::shared_ptr<const model_weights> weights;  ///< configuration, norms, token table; no linear weights
  std::unique_ptr<model> net;
  std::optional<tokenizer> tok;
  std::string quant;   ///< llama.quant
  std::string source;  ///< llama.source
};

/// Reads a file save_quantized_model wrote (checksums verified unless
/// `verify` is false), its layers packed for the fused kernels (or run on the
/// reference with `reference`). lqer's typed errors name the file: io_error,
/// parse_error for a damaged file, value_error for a file of another kind or
/// a layer format this engine does not build.
quantized_model_file load_quantized_model(const std::filesystem::path& path, thread_pool& pool, bool verify = true,
                                          lqer::correction_mode mode = lqer::correction_mode::fused,
                                          bool reference = false);

/// Whether `path` starts like a GGUF file ("GGUF"); false for a safetensors
/// checkpoint, or a file that cannot be read (whose opening then reports).
bool is_gguf(const std::filesystem::path& path);

}  // namespace llama
