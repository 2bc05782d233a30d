// The llama engine's model file (examples/llama/checkpoint.hpp) on
// SmolLM2-135M-Instruct: quantized in memory, written, read back — the
// logits of the loaded model equal the in-memory model's bit for bit (1 and 2
// threads), with the vocabulary and configuration it was made from; the
// per-layer ranks under a bit budget (--bits-per-weight) match
// lqer::allocate_ranks on the same singular values, stay within the budget
// and keep at least as much of the weighted error's energy as the uniform
// rank of the same bits; damaged and foreign files are refused with errors
// naming the file. Skipped with a message when the model is absent.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <lqer/factorize/rank_allocation.hpp>
#include <lqer/format/mxint.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/gguf.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "checkpoint.hpp"
#include "model.hpp"
#include "quantize.hpp"
#include "support/files.hpp"
#include "support/models.hpp"
#include "tokenizer.hpp"

namespace fs = std::filesystem;
using lqer::test::contains;
using lqer::test::temp_dir;
using lqer::test::thrown_message;

namespace {

std::vector<std::vector<std::int32_t>> sequences() {
  std::ifstream in(fs::path(LQER_LLAMA_FIXTURE_DIR) / "llama_logits_fixture.json");
  REQUIRE(in);
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<std::vector<std::int32_t>> out;
  for (const auto& s : j["sequences"]) out.push_back(s["ids"].get<std::vector<std::int32_t>>());
  return out;
}

bool model_absent(const fs::path& path) {
  if (fs::exists(path)) return false;
  MESSAGE("skipped: " << path.string()
                      << " is not there (bash scripts/fetch_smollm2.sh fetches it, or set LQER_SMOLLM2_GGUF)");
  return true;
}

}  // namespace

TEST_CASE("llama model file: written and read back, the loaded model computes the same logits bit for bit") {
  const fs::path path = lqer_test::smollm2_gguf();
  if (model_absent(path)) return;
  engine::thread_pool pool(2), one(1);
  const auto gguf = lqer::io::gguf_file::open(path);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::from_gguf(gguf, pool));
  llama::model m(w);
  const auto seqs = sequences();
  const auto calib = llama::calibrate(m, seqs.back(), 32, pool, lqer::gram_mode::on);
  llama::quant_config cfg;
  cfg.policy = llama::scale_policy_kind::whiten;
  cfg.output_format = "mxint8";
  cfg.set_rank(8, m.num_linears());
  auto q = llama::quantize_linears(*w, calib, cfg, {}, &pool);
  llama::install(m, q);

  temp_dir dir("llama_ckpt");
  const fs::path file = dir.path / "m.lqer.safetensors";
  llama::save_quantized_model(file, m, gguf, "whiten: " + cfg.describe());
  CHECK(dir.entries() == std::vector<std::string>{"m.lqer.safetensors"});  // no temporary left
  CHECK_FALSE(llama::is_gguf(file));
  CHECK(llama::is_gguf(path));

  for (const bool verify : {true, false}) {
    CAPTURE(verify);
    const auto f = llama::load_quantized_model(file, pool, verify);
    CHECK(f.quant == "whiten: " + cfg.describe());
    CHECK(f.source == path.filename().string());
    const llama::config& a = f.net->cfg();
    const llama::config& b = m.cfg();
    CHECK(a.n_layers == b.n_layers);
    CHECK(a.d_model == b.d_model);
    CHECK(a.d_ffn == b.d_ffn);
    CHECK(a.n_heads == b.n_heads);
    CHECK(a.n_kv_heads == b.n_kv_heads);
    CHECK(a.vocab == b.vocab);
    CHECK(a.rope_base == b.rope_base);
    CHECK(a.rms_eps == b.rms_eps);
    CHECK(f.net->linear_bytes() == m.linear_bytes());
    CHECK(f.net->output().describe() != "fp32");
    // The token table, decoded from its stored GGUF blocks on lookup (the
    // output projection is quantized, so no float table is held), is the GGUF's.
    CHECK(f.weights->output.w.empty());
    std::vector<float> row(static_cast<std::size_t>(b.d_model));
    for (const std::int32_t id : {0, 1, 1000, static_cast<std::int32_t>(b.vocab - 1)}) {
      f.weights->embedding_into(id, row.data());
      CHECK(std::equal(row.begin(), row.end(), w->embedding(id)));
    }
    for (const auto& ids : {seqs.front(), seqs.back()}) {
      const auto expect = m.logits(ids, pool);
      CHECK(f.net->logits(ids, pool) == expect);
      CHECK(f.net->logits(ids, one) == expect);
    }
    // The vocabulary: the same ids for text with specials, digits and non-ASCII.
    const auto tok = llama::tokenizer::from_gguf(gguf);
    const std::string text = "<|im_start|>user\nIn the beginning, 1234 ünïcödé   spaces\n\n<|im_end|>";
    CHECK(f.tok->encode(text) == tok.encode(text));
    CHECK(f.tok->size() == tok.size());
    CHECK(f.tok->eos() == tok.eos());
  }

  // Damaged and foreign files (in this test case: the quantization above is its costly part).
  const std::string bytes = lqer::test::slurp(file);
  // Truncated: the safetensors reader names the file.
  const fs::path cut = dir.path / "cut.safetensors";
  lqer::test::write_bytes(cut, bytes.substr(0, bytes.size() / 2));
  CHECK(contains(thrown_message<lqer::error>([&] { (void)llama::load_quantized_model(cut, pool); }), cut.string()));
  // One flipped byte near the end (the token table or a layer): the checksum catches it.
  std::string flipped = bytes;
  flipped[flipped.size() - 1000] = static_cast<char>(flipped[flipped.size() - 1000] ^ 0x10);
  const fs::path bad = dir.path / "flipped.safetensors";
  lqer::test::write_bytes(bad, flipped);
  const std::string msg = thrown_message<lqer::parse_error>([&] { (void)llama::load_quantized_model(bad, pool); });
  CHECK(contains(msg, bad.string()));
  CHECK_MESSAGE(contains(msg, "checksum mismatch"), msg);
  // An LQER checkpoint that is not a llama model file (one layer, as `lqer factorize` writes).
  lqer::io::checkpoint_writer other;
  m.linear(0).add_to(other, "layer");
  const fs::path foreign = dir.path / "layer.safetensors";
  other.write(foreign);
  const std::string why = thrown_message<lqer::value_error>([&] { (void)llama::load_quantized_model(foreign, pool); });
  CHECK(contains(why, foreign.string()));
  CHECK(contains(why, "not a llama model file"));
  // A float layer has nothing to store.
  llama::model fp(w);
  lqer::io::checkpoint_writer none;
  CHECK(contains(thrown_message<lqer::value_error>([&] { fp.linear(0).add_to(none, "x"); }), "only lqer layers"));
}

TEST_CASE("llama quantize under a bit budget: the allocation, its bits, and its kept error energy") {
  const fs::path path = lqer_test::smollm2_gguf();
  if (model_absent(path)) return;
  engine::thread_pool pool(2);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::load(path, pool));
  llama::model m(w);
  const auto seqs = sequences();
  const auto calib = llama::calibrate(m, seqs.back(), 32, pool, lqer::gram_mode::off);
  constexpr int kMax = 32, kUniform = 16, kStep = 16;

  // Every layer at the largest rank: the singular values the allocation reads.
  llama::quant_config full;
  full.policy = llama::scale_policy_kind::mean_abs;
  full.set_rank(kMax, m.num_linears());
  const auto qf = llama::quantize_linears(*w, calib, full, {}, &pool);
  using lr = lqer::mxint<8, 16, lqer::mx_rule::lqer>;
  std::vector<lqer::rank_candidates> cand;
  double wq_bits = 0, uniform_gain = 0, uniform_bits = 0, weights = 0;
  for (int i = 0; i < m.num_linears(); ++i) {
    const auto& d = w->linears[static_cast<std::size_t>(i)];
    const auto& s = qf.reports[static_cast<std::size_t>(i)].singular_values;
    REQUIRE(s.size() == static_cast<std::size_t>(kMax));
    cand.push_back(lqer::rank_candidates::from_singular_values(s, kStep, lqer::lowrank_bits<lr>(d.in, d.out, kStep)));
    for (int r = 0; r < kUniform; ++r)
      uniform_gain += double(s[static_cast<std::size_t>(r)]) * s[static_cast<std::size_t>(r)];
    uniform_bits += lqer::lowrank_bits<lr>(d.in, d.out, kUniform);
    wq_bits += 4.5 * double(d.in * d.out);  // MXINT4 block 16
    weights += double(d.in * d.out);
  }
  const double budget = (wq_bits + uniform_bits) / weights;  // uniform rank 16's bits per weight
  const auto alloc = lqer::allocate_ranks(cand, uniform_bits);
  MESSAGE("budget " << budget << " bits/weight: allocated error energy " << alloc.gain << " vs uniform rank "
                    << kUniform << " " << uniform_gain);
  CHECK(alloc.cost <= uniform_bits);
  CHECK(alloc.gain >= uniform_gain * (1 - 1e-12));

  llama::quant_config cfg = full;
  cfg.budget.bits_per_weight = budget;
  cfg.budget.max_rank = kMax;
  cfg.budget.relative = false;  // the σ² above as they are
  const auto qb = llama::quantize_linears(*w, calib, cfg, {}, &pool);
  CHECK(qb.bits_per_weight() <= budget * (1 + 1e-12));
  int differ = 0;
  for (int i = 0; i < m.num_linears(); ++i) {
    const auto r = qb.reports[static_cast<std::size_t>(i)].rank;
    CHECK(r == alloc.ranks[static_cast<std::size_t>(i)]);
    CHECK(r % kStep == 0);
    differ += r != kUniform;
  }
  MESSAGE(differ << " of " << m.num_linears() << " layers got another rank than " << kUniform);
  // The default weighs each layer's σ² by its own error: other ranks, the same bounds.
  cfg.budget.relative = true;
  const auto qr = llama::quantize_linears(*w, calib, cfg, {}, &pool);
  CHECK(qr.bits_per_weight() <= budget * (1 + 1e-12));
  int moved = 0;
  for (int i = 0; i < m.num_linears(); ++i) {
    const auto r = qr.reports[static_cast<std::size_t>(i)].rank;
    CHECK(r % kStep == 0);
    CHECK(r <= kMax);
    moved += r != qb.reports[static_cast<std::size_t>(i)].rank;
  }
  MESSAGE(moved << " layers differ between the relative and the absolute allocation");
  // A budget below the weights' own bits is refused, naming what they take.
  cfg.budget.bits_per_weight = 4.0;
  CHECK(contains(thrown_message<lqer::value_error>([&] { (void)llama::quantize_linears(*w, calib, cfg); }),
                 "less than the weights alone take"));
}
