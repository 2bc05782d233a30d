// libFuzzer target: quantize -> dequantize over arbitrary finite inputs, for a
// spread of formats and both block axes. Properties (each a bug if broken):
//  * no NaN or Inf comes out of finite input;
//  * every code lies in [kQmin, kQmax];
//  * MX formats: an element is within half a step of its block unless it
//    saturates, and then it decodes to ±kQmax·step (the rule's own bound);
//  * MX formats: the block's scale is the rule's, not merely a safe one: the
//    block's largest magnitude amax is at least step·2^(Bits−2) (OCP: e =
//    floor(log2 amax), LQER: e = ceil(log2 amax); both put amax in the top
//    binade of the codes), except where E8M0's smallest exponent clamps;
//  * scaled integers: within one step plus the fp16 scale's rounding (and,
//    with a block minimum, the fp16 minimum's);
//  * non-finite input is rejected with lqer::value_error, never encoded.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_quantize: property violated: %s\n", what);
  std::abort();
}

template <class F>
void check_matrix(const std::vector<float>& x, lqer::index_t rows, lqer::index_t cols, lqer::block_axis axis,
                  bool finite) {
  using namespace lqer;
  quantized_matrix<F> q;
  try {
    q = quantized_matrix<F>::quantize(matrix_view<const float>(x.data(), rows, cols), axis);
  } catch (const value_error&) {
    if (finite) fail("finite input rejected");
    return;
  }
  if (!finite) fail("non-finite input accepted");
  if constexpr (requires { F::kRule; }) {
    // Block maxima, blocks along `axis` (cols: [r, c / kBlock]; rows: [r / kBlock, c]).
    const bool along_cols = axis == block_axis::cols;
    const index_t nb = ((along_cols ? cols : rows) + F::kBlock - 1) / F::kBlock;
    const index_t lanes = along_cols ? rows : cols;
    std::vector<float> amax(static_cast<std::size_t>(lanes * nb), 0.0f);
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        const index_t lane = along_cols ? r : c, blk = (along_cols ? c : r) / F::kBlock;
        float& m = amax[static_cast<std::size_t>(lane * nb + blk)];
        m = std::fmax(m, std::fabs(x[static_cast<std::size_t>(r * cols + c)]));
      }
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        const index_t lane = along_cols ? r : c, blk = (along_cols ? c : r) / F::kBlock;
        const float m = amax[static_cast<std::size_t>(lane * nb + blk)];
        const float step = std::fabs(F::scale_value(q.scale(r, c)));
        // 2^-100: far above the E8M0 floor (2^-127) for every Bits, so the clamp never applies.
        if (m >= std::ldexp(1.0f, -100) && m < std::ldexp(step, F::kBits - 2)) fail("MX scale larger than the rule's");
      }
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      const int code = q.code(r, c);
      if (code < F::kQmin || code > F::kQmax) fail("code out of range");
      const float y = q.value(r, c), v = x[r * cols + c];
      if (!std::isfinite(y)) fail("non-finite output");
      const float step = std::fabs(F::scale_value(q.scale(r, c)));
      if constexpr (requires { F::kRule; }) {
        if (std::fabs(v) <= F::kQmax * step) {
          if (std::fabs(y - v) > step / 2) fail("MX element beyond half a step");
        } else if (y != std::copysign(F::kQmax * step, v)) {
          fail("MX saturation is not the extreme code");
        }
      } else {
        // One step (signed-extreme and asymmetric grids may clamp by one), the fp16
        // scale's rounding (half an ulp, at least 2^-25) times the largest code
        // magnitude 2^Bits, float arithmetic slack relative to |v| and the step,
        // and the subnormal floor (fuzz finding c83bcd01: per-row int8 of subnormals).
        const float half_ulp = std::fmax(std::ldexp(step, -11), std::ldexp(1.0f, -25));
        const float bound = step * (1 + std::ldexp(1.0f, F::kBits - 22)) +
                            (F::kScaleDtype == scale_dtype::f16 ? half_ulp * float(1 << F::kBits) : 0.0f) +
                            std::fabs(v) * std::ldexp(1.0f, -21) +
                            // Subnormal data: d = amax/qmax and code·d round to the subnormal grid
                            // (absolute half-ulp 2^-150 each, times up to 2^Bits codes), and d may
                            // underflow to 0 altogether (then |v| < qmax·2^-149 is lost).
                            std::ldexp(float(1 << F::kBits), -148);
        // A block minimum (Q4_1: value u·d + m) is stored rounded too: the
        // codes were chosen against the unrounded minimum, so every element
        // moves by m's rounding, half an ulp of |m| (fp16: at least 2^-25).
        float min_bound = 0.0f;
        if constexpr (F::kHasMin) {
          const float m = std::fabs(F::min_value(q.scale(r, c)));
          min_bound = F::kScaleDtype == scale_dtype::f16 ? std::fmax(std::ldexp(m, -11), std::ldexp(1.0f, -25))
                                                         : std::ldexp(m, -24);
        }
        if (std::fabs(y - v) > bound + min_bound) fail("scaled-integer element beyond its bound");
      }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace lqer;
  if (size < 3) return 0;
  const int selector = data[0] % 11;
  const auto axis = (data[1] & 1) ? block_axis::rows : block_axis::cols;
  const index_t cols = 1 + data[2] % 70;
  data += 3;
  size -= 3;
  const std::size_t n = size / 4;
  if (n == 0) return 0;
  const index_t rows = std::max<index_t>(1, static_cast<index_t>(n) / cols);
  std::vector<float> x(static_cast<std::size_t>(rows * cols), 0.0f);
  bool finite = true;
  for (std::size_t i = 0; i < x.size() && i < n; ++i) {
    std::memcpy(&x[i], data + 4 * i, 4);
    finite = finite && std::isfinite(x[i]);
  }
  // The fp16-scale formats cannot store a scale above 65504: data beyond
  // ~65504·qmax is rejected with value_error by design, so keep those inputs in range.
  auto clamp_for_f16 = [&] {
    for (auto& v : x)
      if (std::isfinite(v)) v = std::fmod(v, 60000.0f);
  };
  switch (selector) {
    case 0: check_matrix<mxint<4, 16, mx_rule::lqer>>(x, rows, cols, axis, finite); break;
    case 1: check_matrix<mxint<8, 32, mx_rule::ocp>>(x, rows, cols, axis, finite); break;
    case 2: check_matrix<mxint<2, 8, mx_rule::ocp>>(x, rows, cols, axis, finite); break;
    case 3: check_matrix<mxint<3, 64, mx_rule::lqer>>(x, rows, cols, axis, finite); break;
    case 4:
      clamp_for_f16();
      check_matrix<q4_0>(x, rows, cols, axis, finite);
      break;
    case 5:
      clamp_for_f16();
      check_matrix<q8_0>(x, rows, cols, axis, finite);
      break;
    case 6: check_matrix<intq<8, kPerRow>>(x, rows, cols, axis, finite); break;
    case 7:
      clamp_for_f16();
      check_matrix<int4_g128_asym>(x, rows, cols, axis, finite);
      break;
    // f32 scales take the whole float range (fuzz finding 8289ddf9: near FLT_MAX).
    case 8: check_matrix<intq<8, 32, int_scheme::asymmetric, scale_dtype::f32>>(x, rows, cols, axis, finite); break;
    case 9: check_matrix<intq<4, 16, int_scheme::signed_extreme, scale_dtype::f32>>(x, rows, cols, axis, finite); break;
    // llama.cpp's Q4_1 (block minimum, fp16 d and m). The f32 variant is left
    // out: a block spanning about ±FLT_MAX clamps its top codes by more than a
    // step, by design (test_intq states that case).
    default:
      clamp_for_f16();
      check_matrix<q4_1>(x, rows, cols, axis, finite);
      break;
  }
  return 0;
}
