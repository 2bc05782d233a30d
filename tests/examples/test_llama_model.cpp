// The llama engine's float model (examples/llama/model.hpp) on SmolLM2-135M-
// Instruct's GGUF against PyTorch + transformers loading the same file
// (data/llama_logits_fixture.json, made by data/make_llama_logits_fixture.py):
// every decoded weight bit for bit (by checksum; attn_q / attn_k through the
// row map, which pins down the Q/K permutation), the logits
// of four token sequences within a derived bound, prefill against token-by-token
// decode through the KV cache, 1 against 2 threads bit for bit, the
// log-likelihood, greedy generation and the calibration hooks.
//
// The model is never committed: it is read from $LQER_SMOLLM2_GGUF, else
// ${LQER_CACHE:-~/.cache/lqer}/smollm2/ (scripts/fetch_smollm2.sh), and every
// case passes with a "skipped: ..." message when it is absent.
//
// The bound. Both sides compute the same float32 function (the same decoded
// weights, checked bit for bit below) in different summation orders: Eigen's
// GEMM and this engine's attention loops here, oneDNN/MKL and torch's
// softmax there. A length-K float32 dot product carries rounding of the order
// √K·u of Σ|a||b| when the rounding errors are independent (u = 2⁻²⁴; the
// worst case γ_K = K·u is never approached by blocked BLAS sums), and the model
// is a chain of S such stages feeding a residual stream: per block q/k/v, the
// attention scores and weighted sum, o, gate/up, down, the two RMSNorms — 8
// stages of K ≤ K_max = max(d_ffn, d_model, context) — and the output
// projection. To first order the stages' relative errors add, so the logits
// differ by at most about S·√K_max·u relative to their own scale, max |logit|
// of the row (the output projection's Σ|h||e| is of that order). For SmolLM2:
// S = 30·8 + 1 = 241, K_max = 1536: 241·39.2·5.96e-8 = 5.6e-4. The test uses
// that, and prints what it measured (a first-order, independent-rounding
// estimate, not a worst-case proof; it is also the bound for prefill against
// decode, which differ only in summation order too).
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model.hpp"
#include "support/models.hpp"

namespace fs = std::filesystem;
using llama::index_t;

namespace {

fs::path model_path() { return lqer_test::smollm2_gguf(); }

const nlohmann::json& fixture() {
  static const nlohmann::json j = [] {
    std::ifstream in(fs::path(LQER_LLAMA_FIXTURE_DIR) / "llama_logits_fixture.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return j;
}

engine::thread_pool& pool2() {
  static engine::thread_pool p(2);
  return p;
}

/// The float model, or nullptr (with a message) when the file is not cached.
const llama::model* model() {
  static const fs::path path = model_path();
  if (!fs::exists(path)) {
    MESSAGE("skipped: " << path.string()
                        << " is not there (bash scripts/fetch_smollm2.sh fetches it, or set LQER_SMOLLM2_GGUF)");
    return nullptr;
  }
  static const llama::model m(std::make_shared<const llama::model_weights>(llama::model_weights::load(path, pool2())));
  return &m;
}

/// The bound of the file comment, from the model's own numbers.
double relative_bound(const llama::config& c) {
  const double u = std::ldexp(1.0, -24);
  const double stages = double(c.n_layers) * 8 + 1;
  const double k_max = double(std::max({c.d_ffn, c.d_model, index_t{128}}));
  return stages * std::sqrt(k_max) * u;
}

/// make_llama_logits_fixture.py's checksum, Σ bits(x[i]) · (2i + 1) mod 2^64
/// over a [rows, cols] tensor in transformers' row order. head_dim > 0: the
/// tensor is attn_q / attn_k in the file's order, and transformers' row r is
/// its row gguf_row_of_hf(r).
std::uint64_t checksum(const float* x, index_t rows, index_t cols, index_t head_dim = 0) {
  std::uint64_t h = 0, i = 0;
  for (index_t r = 0; r < rows; ++r) {
    const float* row = x + (head_dim > 0 ? llama::gguf_row_of_hf(r, head_dim) : r) * cols;
    for (index_t c = 0; c < cols; ++c, ++i)
      h += static_cast<std::uint64_t>(std::bit_cast<std::uint32_t>(row[c])) * (2 * i + 1);
  }
  return h;
}

std::vector<std::int32_t> ids_of(const nlohmann::json& seq) { return seq["ids"].get<std::vector<std::int32_t>>(); }

}  // namespace

TEST_CASE("llama model: configuration from the llama.* metadata") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const llama::config& c = m->cfg();
  CHECK(c.n_layers == 30);
  CHECK(c.d_model == 576);
  CHECK(c.d_ffn == 1536);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab == 49152);
  CHECK(c.rope_base == 100000.0);
  CHECK(c.rms_eps == 1e-5f);
  CHECK(m->weights().tied_output == fixture()["tied_output"].get<bool>());
  CHECK(m->num_linears() == 210);
  CHECK(llama::linear_name(llama::linear_index(3, llama::linear_kind::up)) == "blk.3.ffn_up");
}

TEST_CASE("llama model: the Q/K row maps are inverse permutations within each head") {
  for (const index_t hd : {index_t{2}, index_t{8}, index_t{64}})
    for (index_t r = 0; r < 3 * hd; ++r) {
      CHECK(llama::gguf_row_of_hf(llama::hf_row_of_gguf(r, hd), hd) == r);
      CHECK(llama::hf_row_of_gguf(r, hd) / hd == r / hd);
    }
  // Adjacent GGUF rows 2j, 2j + 1 are transformers' rotate_half pair j, j + hd/2.
  CHECK(llama::hf_row_of_gguf(2 * 5, 64) == 5);
  CHECK(llama::hf_row_of_gguf(2 * 5 + 1, 64) == 5 + 32);
}

TEST_CASE("llama model: decoded weights equal transformers', attn_q/attn_k through the row map") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const llama::model_weights& w = m->weights();
  const index_t hd = w.cfg.head_dim, d = w.cfg.d_model;
  int checked = 0;
  for (const auto& t : fixture()["weights"]) {
    const std::string name = t["gguf"];
    INFO(name);
    const auto ref = t["checksum"].get<std::uint64_t>();
    if (name == "token_embd.weight") {
      CHECK(checksum(w.embedding(0), w.cfg.vocab, d) == ref);
    } else if (name == "output_norm.weight") {
      CHECK(checksum(w.output_norm.data(), 1, d) == ref);
    } else {
      const auto dot = name.find('.', 4);
      const index_t b = std::stoi(name.substr(4, dot - 4));
      const std::string part = name.substr(dot + 1, name.size() - dot - 1 - 7);  // minus ".weight"
      const auto& blk = w.blocks[static_cast<std::size_t>(b)];
      if (part == "attn_norm") {
        CHECK(checksum(blk.attn_norm.data(), 1, d) == ref);
      } else if (part == "ffn_norm") {
        CHECK(checksum(blk.ffn_norm.data(), 1, d) == ref);
      } else {
        int kind = 0;
        while (kind < llama::kLinearsPerBlock && part != llama::gguf_name(static_cast<llama::linear_kind>(kind)))
          ++kind;
        REQUIRE(kind < llama::kLinearsPerBlock);
        const auto k = static_cast<llama::linear_kind>(kind);
        const auto& lin = w.linears[static_cast<std::size_t>(llama::linear_index(b, k))];
        if (k == llama::linear_kind::q || k == llama::linear_kind::k) {
          CHECK(checksum(lin.w.data(), lin.out, lin.in, hd) == ref);
          // The file's own order is not transformers': the map is needed.
          CHECK(checksum(lin.w.data(), lin.out, lin.in) != ref);
        } else {
          CHECK(checksum(lin.w.data(), lin.out, lin.in) == ref);
        }
      }
    }
    ++checked;
  }
  // 9 per block, the embedding and the final norm.
  CHECK(checked == 9 * w.cfg.n_layers + 2);
}

TEST_CASE("llama model: logits within the derived bound of transformers', prefill and decode") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const double rel = relative_bound(m->cfg());
  const index_t V = m->cfg().vocab;
  const auto subset = fixture()["vocab_subset"].get<std::vector<std::int32_t>>();
  double worst_abs = 0, worst_rel = 0, worst_nll = 0;
  for (const auto& seq : fixture()["sequences"]) {
    const auto ids = ids_of(seq);
    const index_t T = static_cast<index_t>(ids.size());
    INFO("sequence of " << T << " tokens");
    const std::vector<float> prefill = m->logits(ids, pool2());
    REQUIRE(prefill.size() == static_cast<std::size_t>(T * V));
    for (index_t t = 0; t < T; ++t) {
      const float* row = prefill.data() + t * V;
      const double scale = seq["max_abs_logit"][static_cast<std::size_t>(t)].get<double>();
      const double tol = rel * scale;
      const auto check = [&](std::int32_t id, double ref) {
        const double diff = std::abs(double(row[id]) - ref);
        worst_abs = std::max(worst_abs, diff);
        worst_rel = std::max(worst_rel, diff / scale);
        CHECK(diff <= tol);
      };
      const auto& sub = seq["subset_logits"][static_cast<std::size_t>(t)];
      for (std::size_t i = 0; i < subset.size(); ++i) check(subset[i], sub[i].get<double>());
      const auto& top_ids = seq["top_ids"][static_cast<std::size_t>(t)];
      const auto& top = seq["top_logits"][static_cast<std::size_t>(t)];
      for (std::size_t i = 0; i < top.size(); ++i) check(top_ids[i].get<std::int32_t>(), top[i].get<double>());
      // The argmax agrees unless transformers' top two are within 2 tol.
      if (top[0].get<double>() - top[1].get<double>() > 2 * tol) {
        const auto best = std::max_element(row, row + V) - row;
        CHECK(best == top_ids[0].get<std::int32_t>());
      }
    }
    // The log-likelihood over every position: each term is a log-sum-exp
    // minus a logit, so it moves by at most 2 · tol of its row.
    const auto ll = m->evaluate(ids, T, pool2(), 0);
    CHECK(ll.predicted == static_cast<std::size_t>(T - 1));
    double nll_tol = 0;
    for (index_t t = 0; t + 1 < T; ++t)
      nll_tol += 2 * rel * seq["max_abs_logit"][static_cast<std::size_t>(t)].get<double>();
    const double nll_diff = std::abs(ll.nll_sum - seq["nll_sum"].get<double>());
    worst_nll = std::max(worst_nll, nll_diff / double(T - 1));
    CHECK(nll_diff <= nll_tol);
  }
  MESSAGE("logits against transformers: max |diff| " << worst_abs << ", max |diff| / max|logit| " << worst_rel
                                                     << " (bound " << rel << "); log-likelihood per token "
                                                     << worst_nll);
}

TEST_CASE("llama model: token-by-token decode through the KV cache agrees with prefill") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const auto& seqs = fixture()["sequences"];
  const auto& seq = seqs[seqs.size() - 1];  // the long one
  const auto ids = ids_of(seq);
  const index_t T = static_cast<index_t>(ids.size()), V = m->cfg().vocab;
  REQUIRE(T >= 64);
  const double rel = relative_bound(m->cfg());
  const std::vector<float> prefill = m->logits(ids, pool2());
  const std::vector<float> decode = m->logits(ids, pool2(), 1);
  const std::vector<float> chunks = m->logits(ids, pool2(), 7);  // chunks that end mid-way
  double worst = 0;
  for (index_t t = 0; t < T; ++t) {
    const double tol = rel * seq["max_abs_logit"][static_cast<std::size_t>(t)].get<double>();
    for (index_t v = 0; v < V; ++v) {
      const double d1 = std::abs(double(prefill[t * V + v]) - decode[t * V + v]);
      const double d2 = std::abs(double(prefill[t * V + v]) - chunks[t * V + v]);
      worst = std::max({worst, d1, d2});
      if (d1 > tol || d2 > tol) {
        CHECK(d1 <= tol);
        CHECK(d2 <= tol);
      }
    }
  }
  MESSAGE("prefill against decode (" << T << " tokens): max |diff| " << worst);
}

TEST_CASE("llama model: 1 and 2 threads give bit-identical logits") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const auto ids = ids_of(fixture()["sequences"][0]);
  engine::thread_pool one(1);
  CHECK(m->logits(ids, one) == m->logits(ids, pool2()));
  const std::span<const std::int32_t> head(ids.data(), 6);
  CHECK(m->logits(head, one, 1) == m->logits(head, pool2(), 1));
}

TEST_CASE("llama model: greedy generation continues with transformers' argmax") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const auto& seq = fixture()["sequences"][0];
  const auto ids = ids_of(seq);
  const std::vector<std::int32_t> prompt(ids.begin(), ids.end() - 1);
  engine::thread_pool one(1);
  const auto out = m->generate(prompt, 4, one);
  REQUIRE(out.size() == 4);
  // The first generated token is the argmax at the prompt's last position.
  CHECK(out[0] == seq["top_ids"][prompt.size() - 1][0].get<std::int32_t>());
  // Generation is prefill + decode: the same as re-running the whole sequence.
  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), out.begin(), out.end() - 1);
  const auto l = m->logits(all, one);
  const index_t V = m->cfg().vocab;
  for (std::size_t i = 1; i < out.size(); ++i) {
    const float* row = l.data() + static_cast<index_t>(prompt.size() + i - 1) * V;
    CHECK(out[i] == std::max_element(row, row + V) - row);
  }
  CHECK(m->generate(prompt, 4, one, out[1]).size() == 2);  // stops after the stop token
}

TEST_CASE("llama model: the observer sees every linear's input — set_linear swaps one") {
  const llama::model* m = model();
  if (m == nullptr) return;
  const auto ids = ids_of(fixture()["sequences"][0]);
  std::vector<int> seen(static_cast<std::size_t>(m->num_linears()), 0);
  const llama::linear_observer obs = [&](int i, lqer::matrix_view<const float> x) {
    CHECK(x.rows == static_cast<index_t>(ids.size()));
    CHECK(x.cols == m->linear(i).in_features());
    ++seen[static_cast<std::size_t>(i)];
  };
  const auto observed = m->logits(ids, pool2(), llama::model::kDefaultBatch, &obs);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
  CHECK(observed == m->logits(ids, pool2()));

  // A model of its own with one linear replaced by a zero layer: its logits change.
  llama::model copy(std::shared_ptr<const llama::model_weights>(std::shared_ptr<const void>(), &m->weights()));
  auto zero = std::make_shared<engine::dense_weights>();
  const auto& down = m->linear(llama::linear_index(0, llama::linear_kind::down));
  zero->in = down.in_features();
  zero->out = down.out_features();
  zero->layout = engine::weight_layout::out_in;
  zero->w.assign(static_cast<std::size_t>(zero->in * zero->out), 0.0f);
  copy.set_linear(llama::linear_index(0, llama::linear_kind::down), std::make_unique<engine::fp32_linear>(zero, *zero));
  CHECK(copy.logits(ids, pool2()) != observed);
  CHECK_THROWS_AS(copy.set_linear(0, std::make_unique<engine::fp32_linear>(zero, *zero)), lqer::shape_error);
  const std::vector<std::int32_t> bad{static_cast<std::int32_t>(m->cfg().vocab)};
  CHECK_THROWS_AS(m->logits(bad, pool2()), lqer::value_error);
}
