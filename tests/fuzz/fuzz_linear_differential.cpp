// libFuzzer differential target: a random small LQER layer, built from the
// input bytes, run through lqer::linear on every kernel path this CPU can run
// (dispatch's usable_paths(): generic, avx2, avx_vnni, avx512_vnni …), serial
// and on a 2-thread pool, against the scalar oracle reference_forward(...,
// correction_mode::fused).
//
// Property, the one tests/kernel/test_linear.cpp checks: every output is equal
// bit for bit (NaN matching NaN). That is the right bound, not a tolerance:
// each block term float(dot)·2^E is exact and the kernels keep the reference's
// summation order per output (kernel/linear.hpp), so any difference is a bug.
// When the reference rejects the input with an lqer::error (a non-finite
// intermediate), every path must reject it too, and vice versa.
//
// Layer construction (no factorization: W, A, B are quantized directly, like
// tests/kernel/kernel_test_util.hpp's random_layer, so the target stays fast):
//   byte 0  formats: W4A8 MXINT block 16 (LQER rule), OCP block 32, W8A8, W3 + OCP factors;
//           real scales (scale_mode::real): Q4_0 × Q8_0 with a Q8_0 correction, INT4
//           group-16 fp32 weights under MXINT8, MXINT4 under Q8_0, Q8_0 weights
//           with an MXINT8 correction; zero points (INT4 asymmetric weights, and
//           factors); block minima (Q4_1 × Q8_0, and minima on every weight-side operand)
//   byte 1  M = 1..9          byte 2  K = 1..96 (tails of every length)
//   byte 3  N = 1..40         byte 4  rank = 0..20
//   byte 5  bias, strided x/y  bytes 6..8  power-of-two scales of W, A/B, x
//   (bit 7 set: anywhere in 2^-140 .. 2^120, reaching subnormals and overflow)
//   rest    element values (one byte each: int8/16 × scale, 0x80 an outlier ×4096);
//           when the bytes run out, a PRNG seeded from the input continues.
//
// Seeds: tests/fuzz/corpus/linear_differential.
//   ./fuzz_linear_differential -max_total_time=60 corpus_dir tests/fuzz/corpus/linear_differential
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "lqer/error.hpp"
#include "lqer/exec/executor.hpp"
#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace {

using lqer::index_t;

[[noreturn]] void fail() { std::abort(); }

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

// Reads the input byte by byte; past its end, a PRNG seeded from the whole input.
class byte_source {
 public:
  byte_source(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {
    std::uint32_t h = 2166136261u;  // FNV-1a
    for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 16777619u;
    rng_.seed(h);
  }
  std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : static_cast<std::uint8_t>(rng_() >> 24); }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::mt19937 rng_;
};

// 2^e for a scale byte: near 1 normally, anywhere in [2^-140, 2^120] with bit 7.
int scale_exponent(std::uint8_t b) { return (b & 0x80) ? -140 + (b & 0x7f) * 2 : (b & 0x0f) - 8; }

std::vector<float> matrix(byte_source& src, index_t rows, index_t cols, int exponent) {
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) {
    const std::uint8_t b = src.next();
    // 0x80: a single huge outlier in its block (the case that sets the block exponent).
    const float m = b == 0x80 ? 4096.0f * ((src.next() & 1) ? 1.0f : -1.0f) : static_cast<std::int8_t>(b) / 16.0f;
    x = std::ldexp(m, exponent);
  }
  return v;
}

lqer::thread_pool_executor& pool() {
  static lqer::thread_pool_executor p(2);
  return p;
}

template <class W, class Lr, class Act>
void run(byte_source& src, index_t M, index_t K, index_t N, index_t rank, std::uint8_t flags) {
  using namespace lqer;
  const int ew = scale_exponent(src.next()), elr = scale_exponent(src.next()), ex = scale_exponent(src.next());
  lqer_layer<W, Lr> layer;
  try {
    const auto w = matrix(src, N, K, ew);
    layer.wq = quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
    if (rank > 0) {
      const auto a = matrix(src, K, rank, elr);
      const auto b = matrix(src, rank, N, elr);
      layer.a = quantized_matrix<Lr>::quantize(matrix_view<const float>(a.data(), K, rank), block_axis::rows);
      layer.b = quantized_matrix<Lr>::quantize(matrix_view<const float>(b.data(), rank, N), block_axis::rows);
    }
  } catch (const lqer::error&) {
    return;  // a value the format cannot hold (finite input never is; ldexp may overflow to Inf)
  }
  if (flags & 1) layer.bias = matrix(src, 1, N, ew + ex);
  // Strided views: x and y rows padded by a few elements (bit 1).
  const index_t xs = K + ((flags & 2) ? 3 : 0), ys = N + ((flags & 2) ? 5 : 0);
  std::vector<float> x = matrix(src, M, xs, ex);
  const matrix_view<const float> xv(x.data(), M, K, xs);

  std::vector<float> want(static_cast<std::size_t>(M * ys), -7.0f);
  bool ref_ok = true;
  try {
    reference_forward<Act>(layer, xv, matrix_view<float>(want.data(), M, N, ys), correction_mode::fused);
  } catch (const lqer::error&) {
    ref_ok = false;
  }
  const auto packed = pack<Act>(layer);
  for (kernel_path path : usable_paths()) {
    for (int threads : {1, 2}) {
      std::vector<float> got(want.size(), -7.0f);
      bool ok = true;
      try {
        if (threads == 1)
          linear(packed, xv, matrix_view<float>(got.data(), M, N, ys), serial_executor{}, path);
        else
          linear(packed, xv, matrix_view<float>(got.data(), M, N, ys), pool(), path);
      } catch (const lqer::error&) {
        ok = false;
      }
      if (ok != ref_ok) fail();  // one side rejected what the other accepted
      if (!ok) continue;
      // Every element, including the padding between rows (never written).
      for (std::size_t i = 0; i < got.size(); ++i)
        if (!same_float(got[i], want[i])) fail();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lqer;
  if (size < 6) return 0;
  byte_source src(data, size);
  const int kind = src.next() % 13;
  const index_t M = 1 + src.next() % 9;
  const index_t K = 1 + src.next() % 96;
  const index_t N = 1 + src.next() % 40;
  const index_t rank = src.next() % 21;
  const std::uint8_t flags = src.next();
  switch (kind) {
    case 0:
      run<mxint<4, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>>(src, M, K, N, rank,
                                                                                                 flags);
      break;
    case 1: run<mxint4_ocp<32>, mxint8_ocp<32>, mxint8_ocp<32>>(src, M, K, N, rank, flags); break;
    case 2:
      run<mxint<8, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>>(src, M, K, N, rank,
                                                                                                 flags);
      break;
    case 3:
      run<mxint<3, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::ocp>, mxint<8, 16, mx_rule::ocp>>(src, M, K, N, rank,
                                                                                               flags);
      break;
    case 4: run<q4_0, q8_0, q8_0>(src, M, K, N, rank, flags); break;
    case 5:
      run<intq<4, 16, int_scheme::symmetric, scale_dtype::f32>, intq<8, 16, int_scheme::symmetric, scale_dtype::f32>,
          mxint<8, 16, mx_rule::lqer>>(src, M, K, N, rank, flags);
      break;
    case 6: run<mxint4_ocp<32>, mxint8_ocp<32>, q8_0>(src, M, K, N, rank, flags); break;
    case 7: run<q8_0, mxint8_ocp<32>, q8_0>(src, M, K, N, rank, flags); break;
    case 8:  // GPTQ/AWQ-style weights: zero points
      run<intq<4, 32, int_scheme::asymmetric, scale_dtype::f16>, q8_0, q8_0>(src, M, K, N, rank, flags);
      break;
    case 9:  // zero points on every weight-side operand, 4-bit factors widened to bytes
      run<intq<4, 16, int_scheme::asymmetric, scale_dtype::f32>, intq<4, 16, int_scheme::asymmetric, scale_dtype::f16>,
          mxint<8, 16, mx_rule::lqer>>(src, M, K, N, rank, flags);
      break;
    case 10: run<q4_1, q8_0, q8_0>(src, M, K, N, rank, flags); break;  // llama.cpp's Q4_1: block minima
    case 11:  // block minima on every weight-side operand (fp32 weights', fp16 factors' widened to bytes)
      run<intq<4, 16, int_scheme::with_min, scale_dtype::f32>, intq<4, 16, int_scheme::with_min, scale_dtype::f16>,
          mxint<8, 16, mx_rule::lqer>>(src, M, K, N, rank, flags);
      break;
    default:  // 8-bit zero points (codes down to -128) on the weights and on A and B
      run<intq<8, 16, int_scheme::asymmetric, scale_dtype::f16>, intq<8, 16, int_scheme::asymmetric, scale_dtype::f32>,
          intq<8, 16, int_scheme::symmetric, scale_dtype::f16>>(src, M, K, N, rank, flags);
      break;
  }
  return 0;
}
