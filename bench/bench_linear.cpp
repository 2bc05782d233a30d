// Benchmarks of lqer::linear (the fused W4A8 + rank-k kernels) against the
// machine's own measured peaks and, in the same binary, oneDNN's u8s8f32
// int8 matmul on the same shapes.
//
//   BM_peak_int8_vnni/threads      vpdpbusd zmm throughput (GOPS, 2 ops per MAC)
//   BM_peak_dram_read/threads      streaming read bandwidth of a 1 GiB buffer (GB/s)
//   BM_lqer_<fmt>/M/K/N/rank/threads/cold
//       <fmt> = w4a8_b16 (the paper's MXINT4/MXINT8 block 16, LQER rule, 4.5 bits/weight)
//               w4a8_b32 (OCP MXINT4/MXINT8 block 32, 4.25 bits/weight)
//               q4_0     (llama.cpp's Q4_0 weights, Q8_0 activations and Q8_0 factors:
//                         real fp16 scales, scale_mode::real; 4.5 bits/weight, ggml's bytes)
//               int4_g128 (INT4 group 128 with fp16 scales, GPTQ's symmetric layout,
//                         INT8 group-128 activations with fp32 scales; 4.125 bits/weight)
//               int4_g128_asym (the same with a zero point per group, GPTQ/AWQ's
//                         asymmetric layout; 4.1875 bits/weight)
//               q4_0_mxlr (Q4_0 weights and Q8_0 activations with an MXINT8 block-32
//                         correction: 8.25-bit A/B with power-of-two scales instead of
//                         Q8_0's 8.5 bits with fp16 ones)
//               q4_1     (llama.cpp's Q4_1 weights — fp16 scale and block minimum, 5 bits/
//                         weight — with Q8_0 activations and factors)
//       cold = 1 rotates over copies of the packed layer totalling ≥ 256 MiB, so
//       every call streams its weights from DRAM; cold = 0 reuses one copy.
//   BM_onednn_u8s8f32/M/K/N/threads/cold   (LQER_BENCH_ONEDNN) int8 weights
//       prepacked by oneDNN, per-output-channel scales; excludes quantizing x.
//   BM_ggml_q4_0/M/K/N/threads/cold/repack  (LQER_BENCH_GGML) ggml's Q4_0 (block
//       32, fp16 scales, 4.5 bits/weight; x quantized to Q8_0 inside the op and
//       timed, like lqer's prologue); repack = 1 stores the weights in the CPU
//       backend's repack buffer type (its interleaved AVX-512 layout), ggml's
//       fastest 4-bit path. ggml is not a Debian package: build it from its
//       public source and point CMake at it (bench/CMakeLists.txt).
//   BM_ggml_q4_1/…/repack:0  ggml's Q4_1 (5 bits/weight; x quantized to Q8_1
//       inside the op), its plain layout: the repack buffer has no Q4_1.
//
// Counters: GOPS = 2·M·N·K / s (the correction's extra work is not counted: it
// is overhead), wGB/s = bytes of weights streamed per call / s (lqer: the
// packed stream incl. A, B, scales and bias), frac_int8 = GOPS / measured int8
// peak of `threads` cores, frac_bw = wGB/s / measured DRAM bandwidth with
// `threads` threads. Measure on a quiet machine and compare only within one run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/layer/layer.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(LQER_BENCH_GGML)
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include <cstdio>
#include <initializer_list>
#include <string>
#endif
#if defined(LQER_BENCH_ONEDNN)
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using lqer::index_t;
using clk = std::chrono::steady_clock;

constexpr std::size_t kColdBytes = std::size_t{256} << 20;

// ---------------------------------------------------------------------------
// Machine peaks (measured once per thread count, cached).

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512vnni"), noinline)) std::int64_t vnni_loop(std::int64_t iters) {
  // 16 independent vpdpbusd chains: more than latency × throughput on any core.
  // Distinct starting values: identical chains would be merged by the compiler.
  __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2), a3 = _mm512_set1_epi32(3);
  __m512i a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5), a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7);
  __m512i a8 = _mm512_set1_epi32(8), a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10);
  __m512i a11 = _mm512_set1_epi32(11), a12 = _mm512_set1_epi32(12), a13 = _mm512_set1_epi32(13);
  __m512i a14 = _mm512_set1_epi32(14), a15 = _mm512_set1_epi32(15);
  __m512i w = _mm512_set1_epi8(3), x = _mm512_set1_epi8(-2);
  for (std::int64_t i = 0; i < iters; ++i) {
    a0 = _mm512_dpbusd_epi32(a0, w, x);
    a1 = _mm512_dpbusd_epi32(a1, w, x);
    a2 = _mm512_dpbusd_epi32(a2, w, x);
    a3 = _mm512_dpbusd_epi32(a3, w, x);
    a4 = _mm512_dpbusd_epi32(a4, w, x);
    a5 = _mm512_dpbusd_epi32(a5, w, x);
    a6 = _mm512_dpbusd_epi32(a6, w, x);
    a7 = _mm512_dpbusd_epi32(a7, w, x);
    a8 = _mm512_dpbusd_epi32(a8, w, x);
    a9 = _mm512_dpbusd_epi32(a9, w, x);
    a10 = _mm512_dpbusd_epi32(a10, w, x);
    a11 = _mm512_dpbusd_epi32(a11, w, x);
    a12 = _mm512_dpbusd_epi32(a12, w, x);
    a13 = _mm512_dpbusd_epi32(a13, w, x);
    a14 = _mm512_dpbusd_epi32(a14, w, x);
    a15 = _mm512_dpbusd_epi32(a15, w, x);
    __asm__ volatile("" : "+v"(w), "+v"(x));
  }
  __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                               _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
  s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)),
                                           _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15))));
  return _mm512_reduce_add_epi32(s);
}
#endif

/// Runs f(thread_index) on `threads` threads at once; returns the wall time.
template <class F>
double timed_on_threads(int threads, F&& f) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; ++t)
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      f(t);
    });
  while (ready.load() != threads - 1) {
  }
  const auto t0 = clk::now();
  go.store(true);
  f(0);
  for (auto& t : ts) t.join();
  return std::chrono::duration<double>(clk::now() - t0).count();
}

double vnni_peak_gops(int threads) {
  static std::map<int, double> cache;
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  double best = 0;
#if defined(__x86_64__)
  if (lqer::is_usable(lqer::kernel_path::avx512_vnni)) {
    const std::int64_t iters = 20'000'000;
    std::atomic<std::int64_t> sink{0};
    for (int rep = 0; rep < 3; ++rep) {
      const double s = timed_on_threads(threads, [&](int) { sink += vnni_loop(iters); });
      best = std::max(best, 16.0 * 64 * 2 * double(iters) * threads / s / 1e9);
    }
  }
#endif
  return cache[threads] = best;
}

/// Streaming read of a 1 GiB buffer, split between the threads.
double dram_read_gbs(int threads) {
  static std::map<int, double> cache;
  if (auto it = cache.find(threads); it != cache.end()) return it->second;
  static std::vector<std::uint64_t> buf;
  const std::size_t n = (std::size_t{1} << 30) / sizeof(std::uint64_t);
  if (buf.empty()) {
    buf.resize(n);
    for (std::size_t i = 0; i < n; ++i) buf[i] = i;
  }
  double best = 0;
  std::atomic<std::uint64_t> sink{0};
  for (int rep = 0; rep < 3; ++rep) {
    const double s = timed_on_threads(threads, [&](int t) {
      const std::size_t b = n * t / threads, e = n * (t + 1) / threads;
      std::uint64_t x0 = 0, x1 = 0, x2 = 0, x3 = 0;
      for (std::size_t i = b; i < e; i += 4) {  // vectorized by the compiler; XOR keeps every load
        x0 ^= buf[i];
        x1 ^= buf[i + 1];
        x2 ^= buf[i + 2];
        x3 ^= buf[i + 3];
      }
      sink += x0 ^ x1 ^ x2 ^ x3;
    });
    best = std::max(best, double(n * sizeof(std::uint64_t)) / s / 1e9);
  }
  return cache[threads] = best;
}

void BM_peak_int8_vnni(benchmark::State& state) {
  const int threads = int(state.range(0));
  if (vnni_peak_gops(1) == 0) {
    state.SkipWithError("this CPU lacks AVX-512 VNNI");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(vnni_peak_gops(threads));
  state.counters["GOPS"] = vnni_peak_gops(threads);
}
BENCHMARK(BM_peak_int8_vnni)->ArgNames({"threads"})->Arg(1)->Arg(2)->Iterations(1);

void BM_peak_dram_read(benchmark::State& state) {
  const int threads = int(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(dram_read_gbs(threads));
  state.counters["GB/s"] = dram_read_gbs(threads);
}
BENCHMARK(BM_peak_dram_read)->ArgNames({"threads"})->Arg(1)->Arg(2)->Iterations(1);

lqer::thread_pool_executor& pool(int threads) {
  static std::map<int, std::unique_ptr<lqer::thread_pool_executor>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<lqer::thread_pool_executor>(threads);
  return *p;
}

std::vector<float> random_vec(std::size_t n, float sigma, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& f : v) f = nd(rng);
  return v;
}

void set_counters(benchmark::State& state, double seconds, index_t M, index_t K, index_t N, double weight_bytes,
                  int threads) {
  const double iters = double(state.iterations());
  const double gops = 2.0 * double(M) * double(N) * double(K) * iters / seconds / 1e9;
  const double gbs = weight_bytes * iters / seconds / 1e9;
  state.counters["GOPS"] = gops;
  state.counters["wGB/s"] = gbs;
  if (const double p = vnni_peak_gops(threads); p > 0) state.counters["frac_int8"] = gops / p;
  state.counters["frac_bw"] = gbs / dram_read_gbs(threads);
}

// ---------------------------------------------------------------------------
// lqer

template <class W, class Lr, class Act>
struct lqer_case {
  using packed = lqer::packed_layer<W, Lr, Act>;
  std::vector<packed> copies;  // copies[0] hot; all of them cold
};

template <class W, class Lr, class Act>
lqer_case<W, Lr, Act>& get_case(index_t K, index_t N, index_t rank, bool cold) {
  static std::map<std::tuple<index_t, index_t, index_t>, lqer_case<W, Lr, Act>> cache;
  auto& c = cache[{K, N, rank}];
  if (c.copies.empty()) {
    using lqer::block_axis;
    using lqer::matrix_view;
    lqer::lqer_layer<W, Lr> layer;
    {
      const auto w = random_vec(std::size_t(N * K), 0.02f, 1);
      layer.wq = lqer::quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
    }
    if (rank > 0) {
      const auto a = random_vec(std::size_t(K * rank), 1.0f / std::sqrt(float(K)), 2);
      const auto b = random_vec(std::size_t(rank * N), 0.01f, 3);
      layer.a = lqer::quantized_matrix<Lr>::quantize(matrix_view<const float>(a.data(), K, rank), block_axis::rows);
      layer.b = lqer::quantized_matrix<Lr>::quantize(matrix_view<const float>(b.data(), rank, N), block_axis::rows);
    }
    layer.bias = random_vec(std::size_t(N), 0.1f, 4);
    c.copies.push_back(lqer::pack<Act>(layer));
  }
  if (cold) {
    const std::size_t need = kColdBytes / c.copies[0].stream_bytes() + 2;
    while (c.copies.size() < need) c.copies.push_back(c.copies[0]);
  }
  return c;
}

template <class W, class Lr, class Act>
void BM_lqer(benchmark::State& state) {
  const index_t M = state.range(0), K = state.range(1), N = state.range(2), rank = state.range(3);
  const int threads = int(state.range(4));
  const bool cold = state.range(5) != 0;
  auto& c = get_case<W, Lr, Act>(K, N, rank, cold);
  const auto x = random_vec(std::size_t(M * K), 1.0f, 5);
  std::vector<float> y(std::size_t(M * N));
  lqer::linear_workspace ws;
  auto& exec = pool(threads);
  const std::size_t ncopies = cold ? c.copies.size() : 1;
  std::size_t i = 0;
  // One untimed call to size the workspace and wake the pool.
  lqer::linear(c.copies[0], lqer::matrix_view<const float>(x.data(), M, K), lqer::matrix_view<float>(y.data(), M, N),
               ws, exec);
  const auto t0 = clk::now();
  for (auto _ : state) {
    lqer::linear(c.copies[i], lqer::matrix_view<const float>(x.data(), M, K), lqer::matrix_view<float>(y.data(), M, N),
                 ws, exec);
    if (++i == ncopies) i = 0;
  }
  const double s = std::chrono::duration<double>(clk::now() - t0).count();
  benchmark::DoNotOptimize(y.data());
  set_counters(state, s, M, K, N, double(c.copies[0].stream_bytes()), threads);
  state.SetLabel(lqer::to_string(lqer::best_path()));
}

/// The grid: (K, N) × M × threads × hot/cold (cold only for M ≤ 8, where
/// the weights' bandwidth matters), each case passed to add(M, K, N, threads, cold).
template <class Add>
void for_each_case(Add add) {
  for (auto [K, N] : {std::pair<int, int>{4096, 4096}, {4096, 11008}, {11008, 4096}})
    for (int M : {1, 8, 32, 128, 512})
      for (int threads : {1, 2})
        for (int cold : {0, 1})
          if (!cold || M <= 8) add(M, K, N, threads, cold);
}

void lqer_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "rank", "threads", "cold"});
  for (int rank : {0, 32})
    for_each_case([&](int M, int K, int N, int threads, int cold) { b->Args({M, K, N, rank, threads, cold}); });
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

using b16_w = lqer::mxint<4, 16, lqer::mx_rule::lqer>;
using b16_lr = lqer::mxint<8, 16, lqer::mx_rule::lqer>;
using b32_w = lqer::mxint<4, 32, lqer::mx_rule::ocp>;
using b32_lr = lqer::mxint<8, 32, lqer::mx_rule::ocp>;
void BM_lqer_w4a8_b16(benchmark::State& s) { BM_lqer<b16_w, b16_lr, b16_lr>(s); }
void BM_lqer_w4a8_b32(benchmark::State& s) { BM_lqer<b32_w, b32_lr, b32_lr>(s); }
BENCHMARK(BM_lqer_w4a8_b16)->Apply(lqer_args);
BENCHMARK(BM_lqer_w4a8_b32)->Apply(lqer_args);
using g128_w = lqer::intq<4, 128, lqer::int_scheme::symmetric, lqer::scale_dtype::f16>;
using g128_act = lqer::intq<8, 128, lqer::int_scheme::symmetric, lqer::scale_dtype::f32>;
void BM_lqer_q4_0(benchmark::State& s) { BM_lqer<lqer::q4_0, lqer::q8_0, lqer::q8_0>(s); }
void BM_lqer_int4_g128(benchmark::State& s) { BM_lqer<g128_w, g128_act, g128_act>(s); }
void BM_lqer_int4_g128_asym(benchmark::State& s) { BM_lqer<lqer::int4_g128_asym, g128_act, g128_act>(s); }
void BM_lqer_q4_0_mxlr(benchmark::State& s) { BM_lqer<lqer::q4_0, b32_lr, lqer::q8_0>(s); }
void BM_lqer_q4_1(benchmark::State& s) { BM_lqer<lqer::q4_1, lqer::q8_0, lqer::q8_0>(s); }
BENCHMARK(BM_lqer_q4_0)->Apply(lqer_args);
BENCHMARK(BM_lqer_int4_g128)->Apply(lqer_args);
BENCHMARK(BM_lqer_int4_g128_asym)->Apply(lqer_args);
BENCHMARK(BM_lqer_q4_0_mxlr)->Apply(lqer_args);
BENCHMARK(BM_lqer_q4_1)->Apply(lqer_args);

// ---------------------------------------------------------------------------
// oneDNN u8s8f32 matmul: y[M, N] = scale[n] · Σ_k x_u8[m, k] · w_s8[k, n]

#if defined(LQER_BENCH_ONEDNN)
struct onednn_case {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::matmul prim;
  std::vector<dnnl::memory> weights;  // prepacked copies
  dnnl::memory src, dst;
  double weight_bytes = 0;
};

void BM_onednn_u8s8f32(benchmark::State& state) {
  using namespace dnnl;
  const index_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int threads = int(state.range(3));
  const bool cold = state.range(4) != 0;
  omp_set_num_threads(threads);  // before creating the primitive: it plans for this many threads
  onednn_case c;
  memory::desc src_md({M, K}, memory::data_type::u8, memory::format_tag::ab);
  memory::desc w_any({K, N}, memory::data_type::s8, memory::format_tag::any);
  memory::desc w_plain({K, N}, memory::data_type::s8, memory::format_tag::ab);
  memory::desc dst_md({M, N}, memory::data_type::f32, memory::format_tag::ab);
  primitive_attr attr;
  std::vector<float> scales(static_cast<std::size_t>(N));
  for (index_t n = 0; n < N; ++n) scales[std::size_t(n)] = 0.001f * float(1 + n % 7);
  attr.set_output_scales(1 << 1, scales);
  matmul::primitive_desc pd(matmul::desc(src_md, w_any, dst_md), attr, c.eng);
  c.prim = matmul(pd);
  stream s(c.eng);
  memory plain(w_plain, c.eng);
  {
    std::mt19937 rng(7);
    auto* p = static_cast<std::int8_t*>(plain.get_data_handle());
    for (index_t i = 0; i < K * N; ++i) p[i] = static_cast<std::int8_t>(int(rng() % 255) - 127);
  }
  c.weight_bytes = double(pd.weights_desc().get_size());
  const std::size_t copies = cold ? kColdBytes / std::size_t(c.weight_bytes) + 2 : 1;
  for (std::size_t i = 0; i < copies; ++i) {
    memory w(pd.weights_desc(), c.eng);
    reorder(plain, w).execute(s, plain, w);
    c.weights.push_back(w);
  }
  c.src = memory(src_md, c.eng);
  c.dst = memory(dst_md, c.eng);
  {
    std::mt19937 rng(8);
    auto* p = static_cast<std::uint8_t*>(c.src.get_data_handle());
    for (index_t i = 0; i < M * K; ++i) p[i] = static_cast<std::uint8_t>(rng());
  }
  s.wait();
  std::size_t i = 0;
  c.prim.execute(s, {{DNNL_ARG_SRC, c.src}, {DNNL_ARG_WEIGHTS, c.weights[0]}, {DNNL_ARG_DST, c.dst}});
  s.wait();
  const auto t0 = clk::now();
  for (auto _ : state) {
    c.prim.execute(s, {{DNNL_ARG_SRC, c.src}, {DNNL_ARG_WEIGHTS, c.weights[i]}, {DNNL_ARG_DST, c.dst}});
    s.wait();
    if (++i == c.weights.size()) i = 0;
  }
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  set_counters(state, secs, M, K, N, c.weight_bytes, threads);
  state.SetLabel(pd.impl_info_str());
}

void onednn_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads", "cold"});
  for_each_case([&](int M, int K, int N, int threads, int cold) { b->Args({M, K, N, threads, cold}); });
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK(BM_onednn_u8s8f32)->Apply(onednn_args);
#endif

// ---------------------------------------------------------------------------
// ggml Q4_0: y[M, N] = x[M, K] · W[N, K]ᵀ through ggml_mul_mat on the CPU backend

#if defined(LQER_BENCH_GGML)
/// Owns what one benchmark case allocated from ggml (released in reverse order).
struct ggml_case {
  ggml_backend_t backend = nullptr;
  ggml_context* weight_ctx = nullptr;
  ggml_context* ctx = nullptr;
  ggml_backend_buffer_t weight_buf = nullptr;
  ggml_backend_buffer_t buf = nullptr;
  std::vector<ggml_cgraph*> graphs;  // one per weight copy
  ggml_case() = default;
  ggml_case(const ggml_case&) = delete;
  ggml_case& operator=(const ggml_case&) = delete;
  ~ggml_case() {
    if (buf) ggml_backend_buffer_free(buf);
    if (weight_buf) ggml_backend_buffer_free(weight_buf);
    if (ctx) ggml_free(ctx);
    if (weight_ctx) ggml_free(weight_ctx);
    if (backend) ggml_backend_free(backend);
  }
};

/// The CPU backend's repack buffer type ("CPU_REPACK"), or null when this ggml build has none.
ggml_backend_buffer_type_t ggml_repack_buffer_type(ggml_backend_t backend) {
  ggml_backend_dev_t dev = ggml_backend_get_device(backend);
  ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
  auto get = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
      ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
  if (!get) return nullptr;
  for (ggml_backend_buffer_type_t* b = get(dev); b && *b; ++b)
    if (std::string(ggml_backend_buft_name(*b)) == "CPU_REPACK") return *b;
  return nullptr;
}

/// ggml_mul_mat of `type` weights (ggml quantizes the activations to its
/// vec_dot type itself: Q8_0 for Q4_0, Q8_1 for Q4_1).
void run_ggml(benchmark::State& state, ggml_type type, const char* label) {
  const index_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int threads = int(state.range(3));
  const bool cold = state.range(4) != 0, repack = state.range(5) != 0;
  // ggml logs every repacked tensor at INFO; keep warnings and errors only.
  ggml_log_set(
      [](ggml_log_level level, const char* text, void*) {
        if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
      },
      nullptr);
  ggml_case c;
  c.backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(c.backend, threads);
  ggml_backend_buffer_type_t wbuft = repack ? ggml_repack_buffer_type(c.backend) : ggml_backend_cpu_buffer_type();
  if (!wbuft) {
    state.SkipWithError("this ggml build has no CPU_REPACK buffer type");
    return;
  }
  const std::size_t wbytes = ggml_row_size(type, K) * std::size_t(N);
  const std::size_t copies = cold ? kColdBytes / wbytes + 2 : 1;

  const ggml_init_params wparams{ggml_tensor_overhead() * copies, nullptr, true};
  c.weight_ctx = ggml_init(wparams);
  std::vector<ggml_tensor*> w(copies);
  for (auto& t : w) t = ggml_new_tensor_2d(c.weight_ctx, type, K, N);  // ne0 = K: rows of W
  c.weight_buf = ggml_backend_alloc_ctx_tensors_from_buft(c.weight_ctx, wbuft);
  {
    const auto wf = random_vec(std::size_t(N * K), 0.02f, 7);
    std::vector<std::uint8_t> q(wbytes);
    ggml_quantize_chunk(type, wf.data(), q.data(), 0, N, K, nullptr);
    for (auto* t : w) ggml_backend_tensor_set(t, q.data(), 0, wbytes);  // the repack buffer repacks here
  }
  const ggml_init_params params{ggml_tensor_overhead() * (copies + 1) + ggml_graph_overhead() * copies, nullptr, true};
  c.ctx = ggml_init(params);
  ggml_tensor* x = ggml_new_tensor_2d(c.ctx, GGML_TYPE_F32, K, M);
  for (auto* t : w) {
    ggml_cgraph* g = ggml_new_graph(c.ctx);
    ggml_build_forward_expand(g, ggml_mul_mat(c.ctx, t, x));
    c.graphs.push_back(g);
  }
  c.buf = ggml_backend_alloc_ctx_tensors(c.ctx, c.backend);  // x and every y
  const auto xs = random_vec(std::size_t(M * K), 1.0f, 5);
  ggml_backend_tensor_set(x, xs.data(), 0, xs.size() * sizeof(float));
  if (ggml_backend_graph_compute(c.backend, c.graphs[0]) != GGML_STATUS_SUCCESS) {
    state.SkipWithError("ggml_backend_graph_compute failed");
    return;
  }
  std::size_t i = 0;
  const auto t0 = clk::now();
  for (auto _ : state) {
    ggml_backend_graph_compute(c.backend, c.graphs[i]);
    if (++i == c.graphs.size()) i = 0;
  }
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  set_counters(state, secs, M, K, N, double(wbytes), threads);
  state.SetLabel(std::string(label) + (repack ? " repack" : ""));
}
void BM_ggml_q4_0(benchmark::State& state) { run_ggml(state, GGML_TYPE_Q4_0, "q4_0"); }
/// Q4_1: the plain layout (ggml's repack buffer takes no Q4_1).
void BM_ggml_q4_1(benchmark::State& state) { run_ggml(state, GGML_TYPE_Q4_1, "q4_1"); }

void ggml_args(benchmark::internal::Benchmark* b, std::initializer_list<int> repacks) {
  b->ArgNames({"M", "K", "N", "threads", "cold", "repack"});
  for (int repack : repacks)
    for_each_case([&](int M, int K, int N, int threads, int cold) { b->Args({M, K, N, threads, cold, repack}); });
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK(BM_ggml_q4_0)->Apply([](benchmark::internal::Benchmark* b) { ggml_args(b, {0, 1}); });
BENCHMARK(BM_ggml_q4_1)->Apply([](benchmark::internal::Benchmark* b) { ggml_args(b, {0}); });
#endif

}  // namespace

BENCHMARK_MAIN();
