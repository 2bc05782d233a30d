// llama — the quantized model file (see checkpoint.hpp).
#include "checkpoint.hpp"

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <lqer/format/ggml_types.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/gguf.hpp>
#include <span>
#include <string_view>
#include <vector>

namespace llama {

namespace detail {
// Defined (explicitly instantiated) in quantize_b{16,32}.cpp: layer `name` as
// an lqer linear_op if it is stored in a block-B format the engine builds, else null.
template <int B>
std::unique_ptr<const linear_op> load_linear(const lqer::io::checkpoint_file& ck, const std::string& name,
                                             lqer::correction_mode mode, bool reference);
}  // namespace detail

namespace {

constexpr const char* kFileKind = "lqer.llama.v1";

std::string num(double v) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

/// Strings as a lengths tensor (I32) and their bytes one after another (U8).
struct packed_strings {
  std::vector<std::int32_t> lengths;
  std::vector<std::uint8_t> bytes;
  explicit packed_strings(const std::vector<std::string>& v) {
    for (const auto& s : v) {
      lengths.push_back(static_cast<std::int32_t>(s.size()));
      bytes.insert(bytes.end(), s.begin(), s.end());
    }
  }
};

/// The GGUF tensor's raw blocks, [rows, bytes per row].
struct raw_tensor {
  std::vector<lqer::index_t> shape;
  std::span<const std::uint8_t> data;
};
raw_tensor raw_of(const lqer::io::gguf_tensor& t) {
  const auto rows = static_cast<lqer::index_t>(t.rows());
  return {{rows, static_cast<lqer::index_t>(t.data.size()) / rows},
          {reinterpret_cast<const std::uint8_t*>(t.data.data()), t.data.size()}};
}

}  // namespace

void save_quantized_model(const std::filesystem::path& path, const model& m, const lqer::io::gguf_file& source,
                          const std::string& quant_description) {
  const config& c = m.cfg();
  const model_weights& w = m.weights();
  lqer::io::checkpoint_writer out;
  for (int i = 0; i < m.num_linears(); ++i) m.linear(i).add_to(out, linear_name(i));
  if (m.output().describe() != "fp32") m.output().add_to(out, "output");

  const auto vec = [&](std::string name, const std::vector<float>& v) {
    const std::vector<lqer::index_t> shape{static_cast<lqer::index_t>(v.size())};
    out.add_tensor<float>(std::move(name), shape, v);
  };
  for (index_t b = 0; b < c.n_layers; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    vec(p + "attn_norm", w.blocks[static_cast<std::size_t>(b)].attn_norm);
    vec(p + "ffn_norm", w.blocks[static_cast<std::size_t>(b)].ffn_norm);
  }
  vec("output_norm", w.output_norm);

  const auto& emb = source.tensor("token_embd.weight");
  const raw_tensor emb_raw = raw_of(emb);
  out.add_tensor<std::uint8_t>("token_embd.ggml", emb_raw.shape, emb_raw.data);
  out.set_metadata("llama.token_embd.ggml_type", std::to_string(static_cast<std::uint32_t>(emb.type)));
  std::optional<raw_tensor> out_raw;
  if (!w.tied_output) {
    const auto& o = source.tensor("output.weight");
    out_raw = raw_of(o);
    out.add_tensor<std::uint8_t>("output.ggml", out_raw->shape, out_raw->data);
    out.set_metadata("llama.output.ggml_type", std::to_string(static_cast<std::uint32_t>(o.type)));
  }

  const vocab_spec spec = read_vocab_spec(source);
  const packed_strings tokens(spec.tokens), merges(spec.merges);
  std::vector<std::int32_t> types;
  for (const token_type t : spec.types) types.push_back(static_cast<std::int32_t>(t));
  const auto strings = [&](const std::string& name, const packed_strings& s) {
    const std::vector<lqer::index_t> n{static_cast<lqer::index_t>(s.lengths.size())};
    const std::vector<lqer::index_t> bytes{static_cast<lqer::index_t>(s.bytes.size())};
    out.add_tensor<std::int32_t>(name + ".lengths", n, s.lengths);
    out.add_tensor<std::uint8_t>(name + ".bytes", bytes, s.bytes);
  };
  strings("tokenizer.tokens", tokens);
  strings("tokenizer.merges", merges);
  const std::vector<lqer::index_t> ntypes{static_cast<lqer::index_t>(types.size())};
  out.add_tensor<std::int32_t>("tokenizer.token_type", ntypes, types);
  out.set_metadata("tokenizer.model", spec.model);
  out.set_metadata("tokenizer.pre", spec.pre);
  out.set_metadata("tokenizer.bos_id", std::to_string(spec.bos_id));
  out.set_metadata("tokenizer.eos_id", std::to_string(spec.eos_id));
  out.set_metadata("tokenizer.unk_id", std::to_string(spec.unk_id));
  out.set_metadata("tokenizer.pad_id", std::to_string(spec.pad_id));
  out.set_metadata("tokenizer.add_bos", spec.add_bos ? "true" : "false");
  out.set_metadata("tokenizer.add_eos", spec.add_eos ? "true" : "false");

  out.set_metadata("llama.file", kFileKind);
  out.set_metadata("llama.block_count", std::to_string(c.n_layers));
  out.set_metadata("llama.embedding_length", std::to_string(c.d_model));
  out.set_metadata("llama.feed_forward_length", std::to_string(c.d_ffn));
  out.set_metadata("llama.head_count", std::to_string(c.n_heads));
  out.set_metadata("llama.head_count_kv", std::to_string(c.n_kv_heads));
  out.set_metadata("llama.context_length", std::to_string(c.context_length));
  out.set_metadata("llama.vocab", std::to_string(c.vocab));
  out.set_metadata("llama.rope.freq_base", num(c.rope_base));
  out.set_metadata("llama.layer_norm_rms_epsilon", num(double(c.rms_eps)));
  out.set_metadata("llama.tied_output", w.tied_output ? "true" : "false");
  out.set_metadata("llama.quant", quant_description);
  out.set_metadata("llama.source", std::filesystem::path(source.name()).filename().string());
  out.write(path);
}

bool is_gguf(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

quantized_model_file load_quantized_model(const std::filesystem::path& path, thread_pool& pool, bool verify,
                                          lqer::correction_mode mode, bool reference) {
  lqer::io::load_options lo;
  lo.verify_checksums = verify;
  // Shared: a token table decoded on lookup keeps the mapping alive.
  const auto ck_ptr = std::make_shared<const lqer::io::checkpoint_file>(lqer::io::checkpoint_file::open(path, lo));
  const lqer::io::checkpoint_file& ck = *ck_ptr;
  const std::string& name = ck.name();
  const auto& md = ck.file().metadata();
  const auto key = [&](const std::string& k) -> const std::string& {
    const auto it = md.find(k);
    if (it == md.end()) throw lqer::value_error(name + ": has no metadata key '" + k + "' (not a llama model file?)");
    return it->second;
  };
  const auto integer = [&](const std::string& k, long long lo_, long long hi) {
    const std::string& v = key(k);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < lo_ || x > hi)
      throw lqer::parse_error(name + ": metadata " + k + " = '" + v + "' is not an integer in [" + std::to_string(lo_) +
                              ", " + std::to_string(hi) + "]");
    return x;
  };
  const auto real = [&](const std::string& k) {
    const std::string& v = key(k);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(x))
      throw lqer::parse_error(name + ": metadata " + k + " = '" + v + "' is not a finite number");
    return x;
  };
  const auto flag = [&](const std::string& k) {
    const std::string& v = key(k);
    if (v != "true" && v != "false")
      throw lqer::parse_error(name + ": metadata " + k + " = '" + v + "' is not true or false");
    return v == "true";
  };
  if (const auto it = md.find("llama.file"); it == md.end() || it->second != kFileKind)
    throw lqer::value_error(name + ": is an LQER checkpoint but not a llama model file (llama.file is " +
                            (it == md.end() ? std::string("absent") : "'" + it->second + "'") + ", not " + kFileKind +
                            ")");

  auto w = std::make_shared<model_weights>();
  config& c = w->cfg;
  constexpr long long kMaxCount = 1 << 24;
  c.n_layers = integer("llama.block_count", 1, kMaxCount);
  c.d_model = integer("llama.embedding_length", 1, kMaxCount);
  c.d_ffn = integer("llama.feed_forward_length", 1, kMaxCount);
  c.n_heads = integer("llama.head_count", 1, kMaxCount);
  c.n_kv_heads = integer("llama.head_count_kv", 1, kMaxCount);
  c.context_length = integer("llama.context_length", 1, kMaxCount);
  c.vocab = integer("llama.vocab", 1, kMaxCount);
  c.rope_base = real("llama.rope.freq_base");
  c.rms_eps = static_cast<float>(real("llama.layer_norm_rms_epsilon"));
  try {
    c.derive_and_check();
  } catch (const lqer::value_error& e) {
    throw lqer::parse_error(name + ": " + e.what());
  }
  w->tied_output = flag("llama.tied_output");

  // Tensors by name with their exact dtype and shape.
  const auto tensor = [&](const std::string& t, lqer::io::safetensors_dtype dtype,
                          std::vector<lqer::index_t> shape) -> const lqer::io::safetensors_tensor& {
    const auto& x = ck.tensor(t);  // present, checksum verified (unless turned off)
    if (x.dtype != dtype || x.shape != shape)
      throw lqer::parse_error(name + ": tensor '" + t + "' has another dtype or shape than this model needs");
    return x;
  };
  const auto vec = [&](const std::string& t, lqer::index_t n) {
    return tensor(t, lqer::io::safetensors_dtype::f32, {n}).to_vector<float>();
  };
  w->blocks.resize(static_cast<std::size_t>(c.n_layers));
  for (index_t b = 0; b < c.n_layers; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    w->blocks[static_cast<std::size_t>(b)].attn_norm = vec(p + "attn_norm", c.d_model);
    w->blocks[static_cast<std::size_t>(b)].ffn_norm = vec(p + "ffn_norm", c.d_model);
  }
  w->output_norm = vec("output_norm", c.d_model);

  // The token table (and an untied output) in the GGUF's encoding, decoded as
  // from the GGUF: whole, or (lazy) a row per lookup.
  const auto decode_table = [&](const std::string& t, const std::string& type_key, std::vector<float>* dst) {
    const auto type = static_cast<lqer::ggml_type>(integer(type_key, 0, 1 << 20));
    const auto traits = lqer::ggml_traits(type);
    if (!traits.decodable || traits.block_elems == 0)
      throw lqer::parse_error(name + ": " + type_key + " names a ggml type lqer does not decode");
    if (c.d_model % traits.block_elems != 0)
      throw lqer::parse_error(name + ": " + type_key + ": rows of " + std::to_string(c.d_model) +
                              " are no whole number of its blocks");
    const auto row_bytes = static_cast<lqer::index_t>(c.d_model / traits.block_elems * traits.block_bytes);
    const auto& x = tensor(t, lqer::io::safetensors_dtype::u8, {c.vocab, row_bytes});
    const auto bytes = std::as_bytes(x.as_span<std::uint8_t>());
    if (dst) {
      dst->resize(static_cast<std::size_t>(c.vocab * c.d_model));
      lqer::ggml_dequantize(type, bytes, *dst);
      return;
    }
    w->decode_embedding = [ck_ptr, type, bytes, row_bytes, d = c.d_model](std::int32_t id, float* row) {
      lqer::ggml_dequantize(type,
                            bytes.subspan(static_cast<std::size_t>(id) * static_cast<std::size_t>(row_bytes),
                                          static_cast<std::size_t>(row_bytes)),
                            std::span<float>(row, static_cast<std::size_t>(d)));
    };
  };
  w->output.in = c.d_model;
  w->output.out = c.vocab;
  w->output.layout = engine::weight_layout::out_in;
  // The linears' shapes only: their weights are the stored layers.
  w->linears.resize(static_cast<std::size_t>(c.n_layers * kLinearsPerBlock));

  // Layers: each stored format picks its types (a block length at a time).
  std::vector<std::unique_ptr<const linear_op>> linears(w->linears.size());
  std::unique_ptr<const linear_op> output;
  const auto load_layer = [&](const std::string& layer) {
    std::unique_ptr<const linear_op> op = detail::load_linear<16>(ck, layer, mode, reference);
    if (!op) op = detail::load_linear<32>(ck, layer, mode, reference);
    if (!op) {
      const auto& info = ck.layer(layer);
      throw lqer::value_error(name + ": layer '" + layer + "' is stored as " + info.weight_format + " with A/B " +
                              info.lowrank_format + ", which this engine does not build (" +
                              engine::supported_formats() + ", block 16 | 32)");
    }
    return op;
  };
  // The tokenizer (its merge table is a hash map of 49k entries).
  quantized_model_file f;
  const auto build_tokenizer = [&] {
    vocab_spec spec;
    spec.model = key("tokenizer.model");
    spec.pre = key("tokenizer.pre");
    const auto strings = [&](const std::string& t) {
      const auto* lens = &ck.tensor(t + ".lengths");
      const auto* bytes = &ck.tensor(t + ".bytes");
      if (lens->dtype != lqer::io::safetensors_dtype::i32 || lens->shape.size() != 1 ||
          bytes->dtype != lqer::io::safetensors_dtype::u8 || bytes->shape.size() != 1)
        throw lqer::parse_error(name + ": tensors '" + t + ".lengths' / '.bytes' are not I32 / U8 vectors");
      const auto l = lens->to_vector<std::int32_t>();
      const auto b = bytes->to_vector<std::uint8_t>();
      std::vector<std::string> v;
      std::size_t at = 0;
      for (const std::int32_t len : l) {
        if (len < 0 || static_cast<std::size_t>(len) > b.size() - at)
          throw lqer::parse_error(name + ": tensor '" + t + ".lengths' runs past its bytes");
        v.emplace_back(reinterpret_cast<const char*>(b.data()) + at, static_cast<std::size_t>(len));
        at += static_cast<std::size_t>(len);
      }
      if (at != b.size()) throw lqer::parse_error(name + ": tensor '" + t + ".bytes' has bytes no string uses");
      return v;
    };
    spec.tokens = strings("tokenizer.tokens");
    spec.merges = strings("tokenizer.merges");
    const auto& types = ck.tensor("tokenizer.token_type");
    if (types.dtype != lqer::io::safetensors_dtype::i32 || types.shape.size() != 1)
      throw lqer::parse_error(name + ": tensor 'tokenizer.token_type' is not an I32 vector");
    for (const std::int32_t t : types.to_vector<std::int32_t>()) {
      if (t < 0 || t > static_cast<std::int32_t>(token_type::byte))
        throw lqer::parse_error(name + ": tokenizer.token_type holds " + std::to_string(t) + ", not a token type (0…6)");
      spec.types.push_back(static_cast<token_type>(t));
    }
    constexpr long long kMaxId = 0x7fffffff;
    spec.bos_id = static_cast<std::int32_t>(integer("tokenizer.bos_id", -1, kMaxId));
    spec.eos_id = static_cast<std::int32_t>(integer("tokenizer.eos_id", -1, kMaxId));
    spec.unk_id = static_cast<std::int32_t>(integer("tokenizer.unk_id", -1, kMaxId));
    spec.pad_id = static_cast<std::int32_t>(integer("tokenizer.pad_id", -1, kMaxId));
    spec.add_bos = flag("tokenizer.add_bos");
    spec.add_eos = flag("tokenizer.add_eos");
    f.tok.emplace(tokenizer::from_spec(std::move(spec), name));
  };
  const bool quantized_output = ck.find_layer("output") != nullptr;
  // Decoding and packing on the pool, a table, a layer or the tokenizer per task.
  const auto n = static_cast<index_t>(linears.size());
  pool.parallel_for(n + 3, [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) {
      if (i == n + 2) {
        build_tokenizer();
      } else if (i < n) {
        linears[static_cast<std::size_t>(i)] = load_layer(linear_name(static_cast<int>(i)));
      } else if (i == n) {
        // A float output projection reads the whole table (tied) — otherwise
        // only the lookups do.
        decode_table("token_embd.ggml", "llama.token_embd.ggml_type",
                     w->tied_output && !quantized_output ? &w->output.w : nullptr);
      } else if (!w->tied_output && !quantized_output) {
        decode_table("output.ggml", "llama.output.ggml_type", &w->output.w);
      } else if (quantized_output) {
        output = load_layer("output");
      }
    }
  });

  if (static_cast<index_t>(f.tok->size()) > c.vocab)
    throw lqer::parse_error(name + ": the vocabulary has " + std::to_string(f.tok->size()) + " tokens, the table " +
                            std::to_string(c.vocab) + " rows");
  f.quant = key("llama.quant");
  f.source = key("llama.source");
  f.weights = w;
  f.net = std::make_unique<model>(w, std::move(linears), std::move(output));
  return f;
}

}  // namespace llama
