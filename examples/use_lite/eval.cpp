// use_lite — the quality/speed table (see eval.hpp).
#include "eval.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <lqer/kernel/dispatch.hpp>
#include <numeric>
#include <ostream>

#include "metrics.hpp"
#include "text.hpp"
#include "tokenizer.hpp"

namespace use_lite {

namespace {

using clock_type = std::chrono::steady_clock;
using token_ids = std::vector<std::vector<std::int32_t>>;

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// Embeds `ids` on a pool of `threads`; returns the best wall time of `reps`
/// runs (the best, not the mean: the machines here are shared, and the
/// minimum is the run least disturbed by other work).
double timed_embed(const encoder& enc, const token_ids& ids, int threads, int reps, std::vector<float>& out) {
  thread_pool pool(threads);
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    out = enc.embed(ids, pool);
    best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return best;
}

/// The first `rows` token rows each linear layer sees on the fp32 model.
struct layer_inputs {
  std::array<std::vector<float>, kNumLinears> x;  // [rows_i, in_i]
  std::array<index_t, kNumLinears> rows{};
};

layer_inputs capture_inputs(const encoder& fp32, const token_ids& ids, int max_rows, thread_pool& pool) {
  layer_inputs li;
  const linear_observer keep = [&](linear_id id, lqer::matrix_view<const float> x) {
    const int i = static_cast<int>(id);
    const index_t take = std::min<index_t>(x.rows, max_rows - li.rows[i]);
    for (index_t r = 0; r < take; ++r) li.x[i].insert(li.x[i].end(), x.row(r), x.row(r) + x.cols);
    li.rows[i] += take;
  };
  (void)fp32.embed(ids, pool, &keep);
  return li;
}

std::vector<float> apply(const linear_op& op, const layer_inputs& li, int i, thread_pool& pool) {
  std::vector<float> y(static_cast<std::size_t>(li.rows[i] * op.out_features()));
  op.forward(lqer::matrix_view<const float>(li.x[i].data(), li.rows[i], op.in_features()),
             lqer::matrix_view<float>(y.data(), li.rows[i], op.out_features()), pool);
  return y;
}

struct result_row {
  std::string rank, policy;
  double mean_cos = 0, min_cos = 0, spearman = 0, bits = 0, factorize_s = 0;
  std::size_t linear_bytes = 0, model_bytes = 0;
  std::vector<double> sentences_per_s;
  bool deterministic = true;
  std::array<double, kNumLinears> layer_error{};
};

}  // namespace

void run_quality_table(const eval_options& opt, std::ostream& out) {
  const tokenizer tok = tokenizer::load(std::filesystem::path(opt.model_dir) / "vocab.json");
  auto weights = std::make_shared<const model_weights>(model_weights::load(opt.model_dir));
  check_vocabulary_fits(tok.size(), std::filesystem::path(opt.model_dir));
  // Every rank checked before the table's header is printed (one line on
  // stderr and nothing on stdout for a bad one).
  if (opt.layer_ranks) {
    check_ranks(*weights, *opt.layer_ranks, "--layer-ranks");
  } else {
    for (const int r : opt.ranks) {
      std::array<int, kNumLinears> all;
      all.fill(r);
      check_ranks(*weights, all, "--ranks");
    }
  }
  token_ids calib_ids, eval_ids;
  for (const auto& l : read_lines(opt.calib_file)) calib_ids.push_back(tok.encode(l));
  for (const auto& l : read_lines(opt.eval_file)) eval_ids.push_back(tok.encode(l));
  if (calib_ids.empty()) throw lqer::value_error(opt.calib_file + ": no calibration sentences");
  if (eval_ids.size() < 3) throw lqer::value_error(opt.eval_file + ": need at least 3 evaluation sentences");
  if (opt.thread_counts.empty()) throw lqer::value_error("eval: no thread counts to time");
  const int work_threads = *std::max_element(opt.thread_counts.begin(), opt.thread_counts.end());
  thread_pool pool(work_threads);

  const encoder fp32(weights, make_fp32_linears(weights));
  const bool need_gram =
      std::find(opt.policies.begin(), opt.policies.end(), scale_policy_kind::whiten) != opt.policies.end();
  auto t0 = clock_type::now();
  const calibration calib = calibrate(fp32, calib_ids, pool, need_gram ? lqer::gram_mode::on : lqer::gram_mode::off);
  const double calib_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  const layer_inputs li = capture_inputs(fp32, eval_ids, opt.layer_rows, pool);
  std::array<std::vector<float>, kNumLinears> y_fp32;
  for (int i = 0; i < kNumLinears; ++i) y_fp32[i] = apply(fp32.linear(static_cast<linear_id>(i)), li, i, pool);

  std::size_t calib_tokens = 0, eval_tokens = 0;
  for (const auto& v : calib_ids) calib_tokens += std::min<std::size_t>(v.size(), encoder::kMaxTokens);
  for (const auto& v : eval_ids) eval_tokens += std::min<std::size_t>(v.size(), encoder::kMaxTokens);

  // The fp32 reference: embeddings and speed.
  std::vector<float> e_fp32;
  std::vector<double> fp32_rate;
  for (int t : opt.thread_counts)
    fp32_rate.push_back(double(eval_ids.size()) / timed_embed(fp32, eval_ids, t, opt.timing_runs, e_fp32));
  const std::size_t other = weights->other_bytes();

  out << "# USE-lite through lqer: quality and speed against fp32\n\n"
      << "model " << opt.model_dir << "\n"
      << "calibration: " << calib_ids.size() << " sentences (" << calib_tokens << " tokens) from " << opt.calib_file
      << ", statistics in " << fmt("%.2f", calib_s) << " s\n"
      << "evaluation:  " << eval_ids.size() << " held-out sentences (" << eval_tokens << " tokens) from "
      << opt.eval_file << "\n";
  {
    quant_config c = opt.base;
    c.set_rank(0);
    out << "formats: " << c.describe() << " (the policy and rank vary below)\n";
  }
  const bool reference = opt.base.reference_forward || opt.base.mode != lqer::correction_mode::fused;
  out << "quantized linear layers: "
      << (reference ? std::string("lqer::reference_forward (scalar)")
                    : std::string("lqer::linear, kernel path ") + lqer::to_string(lqer::best_path()))
      << "; fp32 layers: Eigen GEMM; exact SVD\n\n";

  std::vector<result_row> rows;
  auto evaluate = [&](const quant_config& cfg, std::string rank_label, std::string policy_label) {
    result_row r;
    r.rank = std::move(rank_label);
    r.policy = std::move(policy_label);
    const auto f0 = clock_type::now();
    quantized_model qm = quantize_model(weights, calib, cfg, &pool);
    r.factorize_s = std::chrono::duration<double>(clock_type::now() - f0).count();
    r.bits = qm.bits_per_weight();
    const encoder q(weights, std::move(qm.linears));
    r.linear_bytes = q.linear_bytes();
    r.model_bytes = r.linear_bytes + other;
    for (int i = 0; i < kNumLinears; ++i)
      r.layer_error[i] = relative_error(apply(q.linear(static_cast<linear_id>(i)), li, i, pool), y_fp32[i]);
    std::vector<float> first, e;
    for (std::size_t k = 0; k < opt.thread_counts.size(); ++k) {
      r.sentences_per_s.push_back(double(eval_ids.size()) /
                                  timed_embed(q, eval_ids, opt.thread_counts[k], opt.timing_runs, e));
      if (k == 0)
        first = e;
      else
        r.deterministic = r.deterministic && e == first;
    }
    const auto cos = row_cosines(first, e_fp32, encoder::kOutDim);
    r.mean_cos = std::accumulate(cos.begin(), cos.end(), 0.0) / double(cos.size());
    r.min_cos = *std::min_element(cos.begin(), cos.end());
    r.spearman = similarity_spearman(first, e_fp32, encoder::kOutDim);
    rows.push_back(std::move(r));
    std::fprintf(stderr, "use_lite eval: %s: mean cosine %.4f (%.1f s)\n", cfg.describe().c_str(), rows.back().mean_cos,
                 rows.back().factorize_s);
  };

  if (opt.layer_ranks) {
    for (const auto p : opt.policies) {
      quant_config c = opt.base;
      c.ranks = *opt.layer_ranks;
      c.policy = p;
      evaluate(c, "per-layer", to_string(p));
    }
  } else {
    for (const int rank : opt.ranks) {
      for (const auto p : opt.policies) {
        quant_config c = opt.base;
        c.set_rank(rank);
        c.policy = p;
        // Rank 0 is plain quantization: the policy only shapes the correction.
        if (rank == 0) {
          c.policy = scale_policy_kind::identity;
          evaluate(c, "0", "(plain W4A8)");
          break;
        }
        evaluate(c, std::to_string(rank), to_string(p));
      }
    }
  }

  // --- the table ---
  out << "| rank | policy | mean cos | min cos | Spearman | bits/weight | linear bytes | model bytes |";
  for (int t : opt.thread_counts) out << " sent/s " << t << "T |";
  out << " same on all T |\n|---|---|---|---|---|---|---|---|";
  for (std::size_t k = 0; k < opt.thread_counts.size(); ++k) out << "---|";
  out << "---|\n";
  std::size_t fp32_linear = 0;
  for (int i = 0; i < kNumLinears; ++i) fp32_linear += fp32.linear(static_cast<linear_id>(i)).storage_bytes();
  out << "| fp32 | — | 1 | 1 | 1 | 32 | " << fp32_linear << " | " << fp32_linear + other << " |";
  for (double v : fp32_rate) out << ' ' << fmt("%.1f", v) << " |";
  out << " — |\n";
  for (const auto& r : rows) {
    out << "| " << r.rank << " | " << r.policy << " | " << fmt("%.4f", r.mean_cos) << " | " << fmt("%.4f", r.min_cos)
        << " | " << fmt("%.4f", r.spearman) << " | " << fmt("%.3f", r.bits) << " | " << r.linear_bytes << " | "
        << r.model_bytes << " |";
    for (double v : r.sentences_per_s) out << ' ' << fmt("%.1f", v) << " |";
    out << (r.deterministic ? " yes |\n" : " NO |\n");
  }

  out << "\nPer-layer relative output error ‖Yq − Y‖/‖Y‖ (each layer on the fp32 model's inputs, first "
      << opt.layer_rows << " token rows):\n\n| rank | policy |";
  for (int i = 0; i < kNumLinears; ++i) out << ' ' << linear_name(i) << " |";
  out << "\n|---|---|";
  for (int i = 0; i < kNumLinears; ++i) out << "---|";
  out << '\n';
  for (const auto& r : rows) {
    out << "| " << r.rank << " | " << r.policy << " |";
    for (double v : r.layer_error) out << ' ' << fmt("%.4f", v) << " |";
    out << '\n';
  }
  out.flush();
}

}  // namespace use_lite
