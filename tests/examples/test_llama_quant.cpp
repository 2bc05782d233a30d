// The llama engine's calibration and quantization hooks (examples/llama/
// quantize.hpp) on SmolLM2-135M-Instruct's GGUF, end to end on the fixture's
// token sequences: statistics per input, every one of the 210 linears replaced
// by an lqer layer, the bits per weight the formats imply, and the quantized
// model's logits identical on 1 and 2 threads. Skipped with a message when the
// model is absent (see test_llama_model.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model.hpp"
#include "quantize.hpp"
#include "support/models.hpp"

namespace fs = std::filesystem;

namespace {

fs::path model_path() { return lqer_test::smollm2_gguf(); }

std::vector<std::vector<std::int32_t>> sequences() {
  std::ifstream in(fs::path(LQER_LLAMA_FIXTURE_DIR) / "llama_logits_fixture.json");
  REQUIRE(in);
  const nlohmann::json j = nlohmann::json::parse(in);  // alive through the loop (C++20 does not extend it)
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& s : j["sequences"]) out.push_back(s["ids"].get<std::vector<std::int32_t>>());
  return out;
}

/// True (with a message) when the model file is absent: the test is skipped.
bool skipped_without(const fs::path& path) {
  if (fs::exists(path)) return false;
  MESSAGE("skipped: " << path.string()
                      << " is not there (bash scripts/fetch_smollm2.sh fetches it, or set LQER_SMOLLM2_GGUF)");
  return true;
}

}  // namespace

TEST_CASE("llama quantize: calibrate, factorize all 210 linears, run W4A8 on 1 and 2 threads alike") {
  const fs::path path = model_path();
  if (skipped_without(path)) return;
  engine::thread_pool pool(2), one(1);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::load(path, pool));
  llama::model m(w);
  const auto seqs = sequences();
  const auto& calib_ids = seqs.back();  // the long sequence calibrates
  const auto& eval_ids = seqs.front();  // another one is evaluated

  const llama::index_t ctx = 32;
  const auto calib = llama::calibrate(m, calib_ids, ctx, pool, lqer::gram_mode::off);
  CHECK(calib.stats.size() == static_cast<std::size_t>(llama::kInputsPerBlock * m.cfg().n_layers));
  CHECK(calib.tokens == calib_ids.size() / ctx * ctx);
  for (int i = 0; i < m.num_linears(); ++i) {
    CHECK(calib.of(i).tokens() == static_cast<std::int64_t>(calib.tokens));
    CHECK(calib.of(i).in_features() == m.linear(i).in_features());
  }

  const double float_nll = m.evaluate(eval_ids, static_cast<llama::index_t>(eval_ids.size()), pool, 0).nll_sum;
  llama::quant_config cfg;
  cfg.policy = llama::scale_policy_kind::mean_abs;  // L²QER
  cfg.set_rank(8, m.num_linears());
  auto q = llama::quantize_linears(*w, calib, cfg);
  // MXINT4 block 16: 4 bits + an 8-bit exponent per 16 = 4.5 bits per weight;
  // A [in, 8] in MXINT8 blocks of 16 along `in`: 8.5 · 8 · in bits; B [8, out]
  // in blocks of 16 along k = 8, one zero-padded block per column: out · (16·8 + 8).
  double expected_bits = 0;
  for (const auto& d : w->linears)
    expected_bits += 4.5 * double(d.in * d.out) + 8.5 * 8 * double(d.in) + (16 * 8 + 8) * double(d.out);
  CHECK(q.bits_per_weight() == doctest::Approx(expected_bits / double(q.weights)).epsilon(1e-12));
  llama::install(m, q);
  for (int i = 0; i < m.num_linears(); ++i) CHECK(m.linear(i).describe() != "fp32");

  const auto l2 = m.logits(eval_ids, pool);
  CHECK(l2 == m.logits(eval_ids, one));
  const double quant_nll = m.evaluate(eval_ids, static_cast<llama::index_t>(eval_ids.size()), pool, 0).nll_sum;
  const double n = double(eval_ids.size() - 1);
  MESSAGE("float perplexity " << std::exp(float_nll / n) << ", L2QER W4A8 rank 8 " << std::exp(quant_nll / n) << " ("
                              << q.bits_per_weight() << " bits/weight; " << eval_ids.size() << " tokens)");
  // A sanity bound, not a quality claim (the demo measures that on real
  // text): a layer wired to the wrong input or transposed gives perplexities
  // in the thousands, W4A8 moves this short sequence's by well under 2×.
  CHECK(std::isfinite(quant_nll));
  CHECK(quant_nll - float_nll < n * std::log(2.0));
}

TEST_CASE("llama quantize: llama.cpp's Q4_0 and Q4_1 with a Q8_0 correction through the fused kernel (real scales)") {
  const fs::path path = model_path();
  if (skipped_without(path)) return;
  engine::thread_pool pool(2), one(1);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::load(path, pool));
  llama::model m(w);
  const auto eval_ids = sequences().front();
  const double n = double(eval_ids.size() - 1);
  const double float_nll = m.evaluate(eval_ids, static_cast<llama::index_t>(eval_ids.size()), pool, 0).nll_sum;
  // Q4_0: 4 bits + an fp16 scale per 32 = 4.5 bits per weight. Q4_1: + an fp16
  // minimum = 5; SmolLM2's file is Q4_1, so its float weights are decoded Q4_1
  // blocks and encoding them in Q4_1 again gives back (nearly) every code.
  struct variant {
    const char* format;
    double bits;
    int rank;
    const char* stored;
  };
  for (const variant v : {variant{"q4_0", 4.5, 8, "int4_g32_sext_f16"}, variant{"q4_1", 5.0, 4, "int4_g32_min_f16"}}) {
    CAPTURE(v.format);
    llama::quant_config cfg;
    cfg.weight_format = v.format;
    cfg.lowrank_format = "q8_0";
    cfg.block = 32;
    cfg.set_rank(v.rank, m.num_linears());  // LQER (identity scale): no calibration needed
    auto q = llama::quantize_linears(*w, llama::calibration{}, cfg);
    // A [in, k] in Q8_0 blocks of 32 along `in`: 8.5 · k · in bits; B [k, out]
    // in blocks of 32 along k ≤ 32: one zero-padded block per column, out · (32·8 + 16).
    double expected_bits = 0;
    for (const auto& d : w->linears)
      expected_bits += v.bits * double(d.in * d.out) + 8.5 * v.rank * double(d.in) + (32 * 8 + 16) * double(d.out);
    CHECK(q.bits_per_weight() == doctest::Approx(expected_bits / double(q.weights)).epsilon(1e-12));
    llama::model mq(w);
    llama::install(mq, q);
    CHECK(mq.linear(0).describe().find(v.stored) != std::string::npos);
    CHECK(mq.logits(eval_ids, pool) == mq.logits(eval_ids, one));
    const double quant_nll = mq.evaluate(eval_ids, static_cast<llama::index_t>(eval_ids.size()), pool, 0).nll_sum;
    MESSAGE("float perplexity " << std::exp(float_nll / n) << ", " << v.format << " + LQER rank " << v.rank
                                << " (Q8_0) " << std::exp(quant_nll / n));
    CHECK(std::isfinite(quant_nll));
    CHECK(quant_nll - float_nll < n * std::log(2.0));  // the sanity bound of the W4A8 case above
  }
}

TEST_CASE("llama quantize: the output projection W8A8 is within the MXINT8 rounding bound of float") {
  const fs::path path = model_path();
  if (skipped_without(path)) return;
  engine::thread_pool pool(2), one(1);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::load(path, pool));
  llama::model m(w);
  llama::quant_config cfg;
  cfg.output_format = "mxint8";
  cfg.block = 32;
  cfg.set_rank(0, m.num_linears());
  auto q = llama::quantize_linears(*w, {}, cfg);
  REQUIRE(q.output);
  CHECK(q.output->describe() == "output mxint8_b32_lqer W8A8");
  CHECK(q.output->in_features() == m.cfg().d_model);
  CHECK(q.output->out_features() == m.cfg().vocab);
  // MXINT8 bytes: one code per weight and one E8M0 exponent per 32.
  CHECK(q.output->storage_bytes() == static_cast<std::size_t>(m.cfg().vocab * m.cfg().d_model / 32 * 33));

  // Inputs of the head's magnitude: rows of the token table itself (RMS-normed
  // hidden states are of that scale after the output norm's gain).
  const llama::index_t d = m.cfg().d_model, V = m.cfg().vocab, M = 3;
  std::vector<float> x(static_cast<std::size_t>(M * d));
  for (llama::index_t r = 0; r < M; ++r)
    std::copy_n(w->embedding(static_cast<std::int32_t>(1000 + 7919 * r)), d, x.begin() + r * d);
  std::vector<float> yq(static_cast<std::size_t>(M * V)), yq1(yq.size()), yf(yq.size());
  const lqer::matrix_view<const float> xv(x.data(), M, d);
  q.output->forward(xv, lqer::matrix_view<float>(yq.data(), M, V), pool);
  q.output->forward(xv, lqer::matrix_view<float>(yq1.data(), M, V), one);
  CHECK(yq == yq1);
  m.output().forward(xv, lqer::matrix_view<float>(yf.data(), M, V), pool);

  // The bound, per logit. An MXINT8 element (LQER rule: e = ⌈log2 amax⌉ of its
  // block of 32, value m·2^(e−7), m ≤ 127) is off by at most amax/128: half a
  // step, 2^(e−8) < amax/128 since 2^(e−1) < amax; or, clamped at 127, at most
  // amax − 127·2^(e−7) ≤ amax/128 since amax ≤ 2^e. So
  // |x̂·ŵ − x·w| ≤ Σ |x||δw| + |δx||w| + |δx||δw|, plus each side's float
  // summation error γ_n Σ|·||·| (n = d), both within 2nu Σ(|x|+δx)(|w|+δw).
  const auto deltas = [](const float* v, llama::index_t n) {
    std::vector<double> dl(static_cast<std::size_t>(n));
    for (llama::index_t b = 0; b < n; b += 32) {
      double amax = 0;
      for (llama::index_t i = b; i < std::min(n, b + 32); ++i) amax = std::max(amax, std::fabs(double(v[i])));
      for (llama::index_t i = b; i < std::min(n, b + 32); ++i) dl[static_cast<std::size_t>(i)] = amax / 128.0;
    }
    return dl;
  };
  const double u = std::ldexp(1.0, -24);
  double worst = 0;
  for (llama::index_t r = 0; r < M; ++r) {
    const float* xr = x.data() + r * d;
    const auto dx = deltas(xr, d);
    for (llama::index_t o = 0; o < V; o += 97) {  // every 97th logit: 507 per row
      const float* wr = w->output.w.data() + o * d;
      const auto dw = deltas(wr, d);
      double bound = 0, mag = 0;
      for (llama::index_t i = 0; i < d; ++i) {
        const double ax = std::fabs(double(xr[i])), aw = std::fabs(double(wr[i]));
        const double ex = dx[static_cast<std::size_t>(i)], ew = dw[static_cast<std::size_t>(i)];
        bound += ax * ew + ex * aw + ex * ew;
        mag += (ax + ex) * (aw + ew);
      }
      bound += 2.0 * double(d) * u * mag;
      const double diff = std::fabs(double(yq[r * V + o]) - double(yf[r * V + o]));
      CHECK(diff <= bound);
      worst = std::max(worst, diff / bound);
    }
  }
  MESSAGE("output projection W8A8: worst |diff| / bound " << worst);

  // Installed: the model runs it, and a short sequence's perplexity moves little.
  const auto seqs = sequences();
  const auto& ids = seqs.front();
  const double n = double(ids.size() - 1);
  const double float_nll = m.evaluate(ids, static_cast<llama::index_t>(ids.size()), pool, 0).nll_sum;
  llama::model mh(w);
  mh.set_output(std::move(q.output));
  CHECK(mh.output().describe() == "output mxint8_b32_lqer W8A8");
  const double head_nll = mh.evaluate(ids, static_cast<llama::index_t>(ids.size()), pool, 0).nll_sum;
  MESSAGE("float perplexity " << std::exp(float_nll / n) << ", with the W8A8 output projection "
                              << std::exp(head_nll / n));
  CHECK(std::isfinite(head_nll));
  // Sanity, not a quality claim: 8-bit weights and activations on the head
  // alone move this sequence's perplexity by far less than 10%.
  CHECK(std::fabs(head_nll - float_nll) < n * std::log(1.1));
  CHECK_THROWS_AS(mh.set_output(nullptr), lqer::shape_error);
}
