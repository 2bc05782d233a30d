// Benchmarks of lqer::factorize: the time split of one rank-k factorization
// and how close the randomized solver's residual is to the exact one.
//
// BM_Factorize/out/in/rank/threads/q — policy mean_abs (L²QER), randomized_svd
// with q power iterations (3 is the default) and p = 10, MXINT4 W and MXINT8 A/B
// (block 16, LQER rule). The layer
// is synthetic but shaped like an LLM's: Student-t (ν = 4) weights, activations
// with a few channels 30× larger than the rest (they set the mean_abs scale).
// Counters (seconds per factorization):
//   stats_s quantize_s svd_s lowrank_quantize_s report_s   the steps of factorize()
//   svd_GFLOPS     the solver's passes over Eq: (2q + 2)·2·in·out·(k + p) flops / svd_s
//   residual       ‖S(Eqᵀ − A B)‖_F, the quantity the SVD minimizes (A, B unquantized)
//   exact_residual the exact truncated SVD's: sqrt(‖M‖_F² − Σ_{i≤k} σ_i²), M = S Eqᵀ,
//                  σ_i² the top eigenvalues of the Gram matrix of M (double; computed
//                  once per shape in the setup, not timed: BDCSVD of 4096 × 11008
//                  takes minutes, the Gram route ~30 s and only needs the top k)
//   excess_pct     100·(residual / exact_residual − 1); the goal is < 1
// The goal for 4096 × 11008, rank 32, 2 threads: total < 0.5 s.
#include <benchmark/benchmark.h>

#include <Eigen/Eigenvalues>

#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using lqer::index_t;
using lqer::matrix_rm;

struct synthetic_layer {
  matrix_rm w;                 // [out, in]
  lqer::activation_stats stats;
  double exact_residual = -1;  // filled lazily
};

/// Student-t(ν = 4) weights scaled to std ≈ 0.02, and calibration activations
/// whose first in/256 channels are 30× larger (the outlier channels of real LLMs).
synthetic_layer make_layer(index_t out, index_t in) {
  std::mt19937_64 gen(1234);
  std::student_t_distribution<float> t4(4.0f);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  synthetic_layer l;
  l.w.resize(out, in);
  for (index_t i = 0; i < l.w.size(); ++i) l.w.data()[i] = 0.014f * t4(gen);
  const index_t tokens = 256;
  matrix_rm x(tokens, in);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = n01(gen);
  for (index_t c = 0; c < std::max<index_t>(1, in / 256); ++c) x.col(c * 256 % in) *= 30.0f;
  l.stats = lqer::activation_stats(in);
  l.stats.add_batch(x);
  return l;
}

/// sqrt(‖M‖² − Σ_{i≤k} σ_i²) for M = diag(s)·Eqᵀ, through the eigenvalues of the
/// smaller Gram matrix of M in double (see the file comment).
double exact_scaled_residual(const matrix_rm& w, const std::vector<float>& s, index_t k) {
  const matrix_rm wq = lqer::fake_quantize<lqer::default_weight_format>(w);
  Eigen::MatrixXd m = (w - wq).transpose().cast<double>();  // [in, out]
  for (index_t i = 0; i < m.rows(); ++i) m.row(i) *= static_cast<double>(s[static_cast<std::size_t>(i)]);
  const Eigen::MatrixXd g = m.rows() <= m.cols() ? Eigen::MatrixXd(m * m.transpose())
                                                 : Eigen::MatrixXd(m.transpose() * m);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(g, Eigen::EigenvaluesOnly);
  const Eigen::VectorXd ev = es.eigenvalues();  // ascending
  const double top = ev.tail(k).sum();
  return std::sqrt(std::max(0.0, m.squaredNorm() - top));
}

synthetic_layer& layer_for(index_t out, index_t in) {
  static std::map<std::pair<index_t, index_t>, synthetic_layer> cache;
  auto it = cache.find({out, in});
  if (it == cache.end()) it = cache.emplace(std::pair{out, in}, make_layer(out, in)).first;
  return it->second;
}

void BM_Factorize(benchmark::State& state) {
  const index_t out = state.range(0), in = state.range(1), rank = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const int power_iterations = static_cast<int>(state.range(4));
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#else
  if (threads != 1) {
    state.SkipWithError("built without OpenMP: only threads = 1 is meaningful");
    return;
  }
#endif
  synthetic_layer& l = layer_for(out, in);
  const std::vector<float> scale = lqer::policy::mean_abs{}.scale(l.stats, in);
  if (l.exact_residual < 0) l.exact_residual = exact_scaled_residual(l.w, scale, rank);

  lqer::factorize_options<lqer::policy::mean_abs, lqer::randomized_svd> opt;
  opt.solver.power_iterations = power_iterations;
  lqer::factorize_timings sum;
  double residual = 0;
  for (auto _ : state) {
    auto r = lqer::factorize<lqer::policy::mean_abs, lqer::randomized_svd>(l.w, l.stats, rank, opt);
    benchmark::DoNotOptimize(r.layer.a.lane_codes(0).data());
    state.PauseTiming();
    const auto& t = r.report.seconds;
    sum.stats += t.stats, sum.quantize += t.quantize, sum.svd += t.svd;
    sum.lowrank_quantize += t.lowrank_quantize, sum.report += t.report, sum.total += t.total;
    // ‖S(Eqᵀ − A B)‖_F with the unquantized factors.
    const matrix_rm wq = lqer::dequantize(r.layer.wq);
    Eigen::MatrixXf d = (l.w - wq).transpose();
    d -= r.a_unquantized * r.b_unquantized;
    for (index_t i = 0; i < in; ++i) d.row(i) *= scale[static_cast<std::size_t>(i)];
    residual = d.cast<double>().norm();
    state.ResumeTiming();
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["stats_s"] = sum.stats / n;
  state.counters["quantize_s"] = sum.quantize / n;
  state.counters["svd_s"] = sum.svd / n;
  state.counters["lowrank_quantize_s"] = sum.lowrank_quantize / n;
  state.counters["report_s"] = sum.report / n;
  state.counters["total_s"] = sum.total / n;
  const lqer::randomized_svd& solver = opt.solver;
  const double l_cols = static_cast<double>(std::min(rank + solver.oversampling, std::min(in, out)));
  const double flops = (2.0 * solver.power_iterations + 2.0) * 2.0 * double(in) * double(out) * l_cols;
  state.counters["svd_GFLOPS"] = flops / (sum.svd / n) * 1e-9;
  state.counters["residual"] = residual;
  state.counters["exact_residual"] = l.exact_residual;
  state.counters["excess_pct"] = 100.0 * (residual / l.exact_residual - 1.0);
}

BENCHMARK(BM_Factorize)
    ->ArgNames({"out", "in", "rank", "threads", "q"})
    ->Args({1024, 2816, 32, 2, 3})
    ->Args({4096, 11008, 32, 1, 3})
    ->Args({4096, 11008, 32, 2, 3})
    ->Args({4096, 11008, 32, 2, 2})
    ->Args({11008, 4096, 32, 2, 3})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);

/// The weight quantization inside factorize(): quantized_matrix::quantize is
/// serial (one lane after another); the rest of the step, Eq = W − deq(Wq), is
/// parallel. This separates the two. GB/s counts the float32 weight read.
void BM_QuantizeWeight(benchmark::State& state) {
  const index_t out = state.range(0), in = state.range(1);
  synthetic_layer& l = layer_for(out, in);
  for (auto _ : state) {
    auto q = lqer::quantized_matrix<lqer::default_weight_format>::quantize(lqer::view_of(l.w));
    benchmark::DoNotOptimize(q.lane_codes(0).data());
  }
  state.counters["GB/s"] = benchmark::Counter(double(out) * double(in) * 4.0 * double(state.iterations()) * 1e-9,
                                              benchmark::Counter::kIsRate);
}

BENCHMARK(BM_QuantizeWeight)->ArgNames({"out", "in"})->Args({4096, 11008})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
