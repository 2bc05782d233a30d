// use_lite — the quantized model file (see checkpoint.hpp).
#include "checkpoint.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <lqer/io/checkpoint.hpp>
#include <span>
#include <vector>

#include "common/quant_names.hpp"

namespace use_lite {

namespace detail {
// Defined (explicitly instantiated) in quantize_b{16,32,64}.cpp: layer `name`
// as an lqer linear_op if it is stored in a block-B format the engine builds,
// else null.
template <int B>
std::unique_ptr<const linear_op> load_linear(const lqer::io::checkpoint_file& ck, const std::string& name,
                                             lqer::correction_mode mode, bool reference);
}  // namespace detail

namespace {

constexpr const char* kFileKind = "lqer.use_lite.v1";
using lqer::io::safetensors_dtype;
using shape = std::vector<lqer::index_t>;

/// The configuration keys and the engine's value of each: the shapes are
/// fixed, so they are written for a reader's information and checked on load.
struct config_key {
  const char* key;
  index_t value;
};
constexpr config_key kConfig[] = {
    {"use_lite.vocab", model_weights::kVocab},
    {"use_lite.embedding_length", model_weights::kEmbedDim},
    {"use_lite.hidden_length", model_weights::kHiddenDim},
    {"use_lite.feed_forward_length", model_weights::kFfnDim},
    {"use_lite.head_count", model_weights::kHeads},
    {"use_lite.timing_length", model_weights::kTimingDim},
    {"use_lite.max_tokens", encoder::kMaxTokens},
};

std::string layer_prefix(std::size_t l) { return "l" + std::to_string(l) + "."; }

/// The metadata, tensors and checks every reader of a model file shares.
class reader {
 public:
  explicit reader(const lqer::io::checkpoint_file& ck) : ck_(ck), name_(ck.name()) {
    const auto& md = ck.file().metadata();
    const auto it = md.find("use_lite.file");
    if (it != md.end() && it->second == kFileKind) return;
    // Another engine's model file says what it is the same way ("llama.file").
    std::string other;
    for (const auto& [k, v] : md)
      if (k != "use_lite.file" && !k.starts_with("lqer.") && k.ends_with(".file")) other = "; " + k + " is '" + v + "'";
    throw lqer::value_error(name_ + ": is an LQER checkpoint but not a use_lite model file (use_lite.file is " +
                            (it == md.end() ? std::string("absent") : "'" + it->second + "'") + ", not " + kFileKind +
                            other + ")");
  }

  const std::string& name() const noexcept { return name_; }

  const std::string& key(const std::string& k) const {
    const auto& md = ck_.file().metadata();
    const auto it = md.find(k);
    if (it == md.end()) throw lqer::parse_error(name_ + ": has no metadata key '" + k + "'");
    return it->second;
  }

  void check_config() const {
    for (const config_key& c : kConfig) {
      const std::string& v = key(c.key);
      char* end = nullptr;
      errno = 0;
      const long long x = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0)
        throw lqer::parse_error(name_ + ": metadata " + c.key + " = '" + v + "' is not an integer");
      if (x != c.value)
        throw lqer::parse_error(name_ + ": metadata " + c.key + " = " + v + ", but this engine runs USE-lite's " +
                                std::to_string(c.value));
    }
  }

  /// Tensor `t` with exactly this dtype and shape, checksum verified (unless turned off).
  const lqer::io::safetensors_tensor& tensor(const std::string& t, safetensors_dtype dtype, const shape& s) const {
    const auto& x = ck_.tensor(t);
    if (x.dtype != dtype || x.shape != s)
      throw lqer::parse_error(name_ + ": tensor '" + t + "' has another dtype or shape than USE-lite's");
    return x;
  }

  /// An F32 tensor of shape `s`, every value finite.
  std::vector<float> floats(const std::string& t, const shape& s) const {
    std::vector<float> v = tensor(t, safetensors_dtype::f32, s).to_vector<float>();
    for (std::size_t i = 0; i < v.size(); ++i)
      if (!std::isfinite(v[i]))
        throw lqer::parse_error(name_ + ": tensor '" + t + "': element " + std::to_string(i) + " is not finite");
    return v;
  }
  float scalar(const std::string& t) const { return floats(t, {1}).front(); }

  /// The vocabulary: pieces as lengths (I32) and bytes (U8), scores (F64).
  vocabulary vocab() const {
    const auto& lens = ck_.tensor("tokenizer.pieces.lengths");
    const auto& bytes = ck_.tensor("tokenizer.pieces.bytes");
    const auto& scores = ck_.tensor("tokenizer.scores");
    if (lens.dtype != safetensors_dtype::i32 || lens.shape.size() != 1 || bytes.dtype != safetensors_dtype::u8 ||
        bytes.shape.size() != 1 || scores.dtype != safetensors_dtype::f64 || scores.shape != lens.shape)
      throw lqer::parse_error(name_ +
                              ": tensors 'tokenizer.pieces.lengths' / '.bytes' / 'tokenizer.scores' are not I32 / U8 "
                              "/ F64 vectors of matching lengths");
    const auto l = lens.to_vector<std::int32_t>();
    const auto b = bytes.to_vector<std::uint8_t>();
    vocabulary v;
    v.scores = scores.to_vector<double>();
    std::size_t at = 0;
    for (const std::int32_t len : l) {
      if (len < 0 || static_cast<std::size_t>(len) > b.size() - at)
        throw lqer::parse_error(name_ + ": tensor 'tokenizer.pieces.lengths' runs past its bytes");
      v.pieces.emplace_back(reinterpret_cast<const char*>(b.data()) + at, static_cast<std::size_t>(len));
      at += static_cast<std::size_t>(len);
    }
    if (at != b.size()) throw lqer::parse_error(name_ + ": tensor 'tokenizer.pieces.bytes' has bytes no piece uses");
    return v;
  }

  tokenizer make_tokenizer() const {
    tokenizer t = tokenizer::from_vocabulary(vocab(), name_);
    if (t.size() > static_cast<std::size_t>(model_weights::kVocab))
      throw lqer::parse_error(name_ + ": the vocabulary has " + std::to_string(t.size()) + " entries, more than the " +
                              std::to_string(model_weights::kVocab) + " rows of its embedding table");
    return t;
  }

 private:
  const lqer::io::checkpoint_file& ck_;
  std::string name_;
};

}  // namespace

void save_quantized_model(const std::filesystem::path& path, const encoder& q, const vocabulary& vocab,
                          const model_file_info& info) {
  const model_weights& w = q.weights();
  lqer::io::checkpoint_writer out;
  for (int i = 0; i < kNumLinears; ++i) q.linear(static_cast<linear_id>(i)).add_to(out, linear_name(i));

  // The writer views what it is given until write(): everything below lives
  // in `w`, `vocab` or this frame.
  const auto f32 = [&](std::string name, const std::vector<float>& v, shape s) {
    out.add_tensor<float>(std::move(name), s, v);
  };
  f32("embeddings", w.embeddings, {model_weights::kVocab, model_weights::kEmbedDim});
  f32("timing_inv", w.timing_inv, {model_weights::kTimingDim});
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    const model_weights::layer& L = w.layers[l];
    const std::string p = layer_prefix(l);
    f32(p + "ln1_g", L.ln1_g, {L.d});
    f32(p + "ln1_b", L.ln1_b, {L.d});
    f32(p + "ln2_g", L.ln2_g, {model_weights::kHiddenDim});
    f32(p + "ln2_b", L.ln2_b, {model_weights::kHiddenDim});
    out.add_tensor<float>(p + "q_scale", shape{1}, std::span<const float>(&L.q_scale, 1));
  }
  out.add_tensor<float>("l2_epsilon", shape{1}, std::span<const float>(&w.l2_epsilon, 1));

  if (vocab.pieces.size() != vocab.scores.size())
    throw lqer::value_error("save_quantized_model: " + std::to_string(vocab.pieces.size()) + " pieces but " +
                            std::to_string(vocab.scores.size()) + " scores");
  std::vector<std::int32_t> lengths;
  std::vector<std::uint8_t> bytes;
  for (const std::string& p : vocab.pieces) {
    lengths.push_back(static_cast<std::int32_t>(p.size()));
    bytes.insert(bytes.end(), p.begin(), p.end());
  }
  const shape n{static_cast<lqer::index_t>(lengths.size())}, nbytes{static_cast<lqer::index_t>(bytes.size())};
  out.add_tensor<std::int32_t>("tokenizer.pieces.lengths", n, lengths);
  out.add_tensor<std::uint8_t>("tokenizer.pieces.bytes", nbytes, bytes);
  out.add_tensor<double>("tokenizer.scores", n, vocab.scores);

  out.set_metadata("use_lite.file", kFileKind);
  for (const config_key& c : kConfig) out.set_metadata(c.key, std::to_string(c.value));
  out.set_metadata("use_lite.quant", info.quant);
  out.set_metadata("use_lite.source", info.source);
  out.set_metadata("use_lite.calibration", info.calibration.empty() ? "none" : info.calibration);
  out.write(path);
}

quantized_model_file load_quantized_model(const std::filesystem::path& path, thread_pool& pool, bool verify,
                                          lqer::correction_mode mode, bool reference) {
  lqer::io::load_options lo;
  lo.verify_checksums = verify;
  const auto ck = lqer::io::checkpoint_file::open(path, lo);
  const reader r(ck);
  const std::string& name = r.name();
  r.check_config();

  // The layers: exactly the 10, each of USE-lite's shape.
  if (ck.layers().size() != static_cast<std::size_t>(kNumLinears))
    throw lqer::parse_error(name + ": holds " + std::to_string(ck.layers().size()) + " layers, USE-lite has " +
                            std::to_string(kNumLinears));
  auto w = std::make_shared<model_weights>();
  for (int i = 0; i < kNumLinears; ++i) {
    const auto [in, out] = model_weights::linear_shape(static_cast<linear_id>(i));
    const lqer::io::checkpoint_layer& info = ck.layer(linear_name(i));
    if (info.in_features != in || info.out_features != out)
      throw lqer::parse_error(name + ": layer '" + linear_name(i) + "' is " + std::to_string(info.in_features) +
                              " -> " + std::to_string(info.out_features) + ", USE-lite's is " + std::to_string(in) +
                              " -> " + std::to_string(out));
    w->linears[i].in = in;
    w->linears[i].out = out;
  }

  const auto load_layer = [&](int i) {
    const std::string layer = linear_name(i);
    std::unique_ptr<const linear_op> op = detail::load_linear<16>(ck, layer, mode, reference);
    if (!op) op = detail::load_linear<32>(ck, layer, mode, reference);
    if (!op) op = detail::load_linear<64>(ck, layer, mode, reference);
    if (!op) {
      const auto& info = ck.layer(layer);
      throw lqer::value_error(name + ": layer '" + layer + "' is stored as " + info.weight_format + " with A/B " +
                              info.lowrank_format + ", which this engine does not build (" +
                              engine::supported_formats() + ")");
    }
    return op;
  };

  // Unpacking and packing on the pool: the 10 layers, then the embedding
  // table (the largest tensor: its checksum is most of the load time).
  quantized_model_file f;
  pool.parallel_for(kNumLinears + 1, [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) {
      if (i < kNumLinears)
        f.linears[static_cast<std::size_t>(i)] = load_layer(static_cast<int>(i));
      else
        w->embeddings = r.floats("embeddings", {model_weights::kVocab, model_weights::kEmbedDim});
    }
  });
  w->timing_inv = r.floats("timing_inv", {model_weights::kTimingDim});
  for (std::size_t l = 0; l < w->layers.size(); ++l) {
    model_weights::layer& L = w->layers[l];
    const std::string p = layer_prefix(l);
    L.d = l == 0 ? model_weights::kEmbedDim : model_weights::kHiddenDim;
    L.head_dim = L.d / model_weights::kHeads;
    L.ln1_g = r.floats(p + "ln1_g", {L.d});
    L.ln1_b = r.floats(p + "ln1_b", {L.d});
    L.ln2_g = r.floats(p + "ln2_g", {model_weights::kHiddenDim});
    L.ln2_b = r.floats(p + "ln2_b", {model_weights::kHiddenDim});
    L.q_scale = r.scalar(p + "q_scale");
  }
  w->l2_epsilon = r.scalar("l2_epsilon");

  f.tok.emplace(r.make_tokenizer());
  f.info.quant = r.key("use_lite.quant");
  f.info.source = r.key("use_lite.source");
  f.info.calibration = r.key("use_lite.calibration");
  f.weights = std::move(w);
  return f;
}

tokenizer load_model_file_tokenizer(const std::filesystem::path& path) {
  const auto ck = lqer::io::checkpoint_file::open(path);
  const reader r(ck);
  r.check_config();
  return r.make_tokenizer();
}

bool is_model_file(const std::filesystem::path& model) {
  std::error_code ec;
  const auto st = std::filesystem::status(model, ec);
  if (std::filesystem::exists(st)) return !std::filesystem::is_directory(st);
  return model.extension() == ".safetensors";
}

}  // namespace use_lite
