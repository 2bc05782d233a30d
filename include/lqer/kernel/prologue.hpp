// lqer — the kernels' prologue: quantize float activations (row-major, the
// caller's stride) to the activation format, one block along the row at a
// time, and emit what the micro-kernels consume per (row, block):
//
//   codes  int8, the row zero-padded to whole blocks (the padding multiplies
//          the weights' padding, both zero);
//   meta   per consumer (a weight operand with its code offset `off` and its
//          fraction bits Fw): init = −off·Σcodes, the exponent bits of the fast
//          scale mode and the exact scale 2^(ex − Fx) (params.hpp).
//
// Bit-identity with the format: the codes and exponents equal exactly what
// ActFormat::quantize_block produces (the scalar prologue below calls it; the
// vectorized ones in arch/ are tested against it on random, tie, subnormal and
// huge data). A block whose codes are all zero gets the neutral exponent 0
// instead of its own (its products are exactly 0; pack.hpp explains why).
//
// Non-finite input: a row stops at its first NaN/Inf and reports the column;
// the driver then throws value_error before writing any output.
#pragma once

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/tensor/check.hpp"

namespace lqer::detail {

/// One user of a quantized activation panel: a weight operand whose stored
/// codes carry offset `offset` (0 for signed × signed paths) and whose
/// format has `wfrac` fraction bits. Its records are consumer c's slots of
/// the panel (act_panel_layout), c = its index in the consumer list.
struct act_consumer {
  int offset = 0;
  int wfrac = 0;
  /// The consumer runs scale_mode::real (a layer with a real scale
  /// anywhere): its records are act_block_meta::real.
  bool real = false;
};

/// What quantizing one row found.
struct row_status {
  index_t bad_col = -1;    ///< first non-finite column, or −1
  bool bad_scale = false;  ///< bad_col is instead the first column of a block whose scale overflows its type
  exponent_range ex;       ///< range of the row's block exponents (neutral 0 included)
};

/// The meta record of one block for one consumer (params.hpp). The magic
/// fields are computed modulo 2^32, as the kernels' integer adds wrap.
/// The float 2^n for n in [−149, 127] (subnormal below −126), exactly.
inline float exp2_exact(int n) noexcept {
  if (n >= -126) return std::bit_cast<float>(static_cast<std::uint32_t>(n + 127) << 23);
  return std::bit_cast<float>(std::uint32_t{1} << (n + 149));
}

/// The record of an MX activation block (exponent ex; a real-mode consumer
/// gets its scale 2^(ex − Fx) as a float, which is mxint::scale_value).
inline act_block_meta make_block_meta(int code_sum, int ex, int act_frac, const act_consumer& c) noexcept {
  act_block_meta m;
  const std::uint32_t init = static_cast<std::uint32_t>(-c.offset * code_sum);
  if (c.real) return act_block_meta::real(static_cast<std::int32_t>(init), exp2_exact(ex - act_frac));
  // The exponent field of 2^(23 + ex − Fx − Fw), i.e. of 2^(23+E) without the weight's ew.
  const std::uint32_t hx = static_cast<std::uint32_t>(150 + ex - act_frac - c.wfrac) << 23;
  m.magic_c = static_cast<std::int32_t>(static_cast<std::uint32_t>(kMagicOffset) + hx);
  m.magic_init = static_cast<std::int32_t>(init + static_cast<std::uint32_t>(m.magic_c));
  return m;
}

/// The block exponent ActFormat::shared_scale picks for amax (finite, ≥ 0),
/// from the float's bits: frexp is a library call and this runs per block.
/// Equality with shared_scale is tested exhaustively over exponents.
template <class ActFormat>
inline int block_exponent(float amax) noexcept {
  if (!(amax > 0.0f)) return e8m0::kMinExponent;
  const std::uint32_t b = std::bit_cast<std::uint32_t>(amax);
  const int biased = static_cast<int>(b >> 23);
  int fl, pow2;
  if (biased != 0) {
    fl = biased - 127;
    pow2 = (b & 0x7fffffu) == 0;
  } else {  // subnormal: amax = b · 2^-149
    fl = (31 - std::countl_zero(b)) - 149;
    pow2 = (b & (b - 1)) == 0;
  }
  const int e = ActFormat::kRule == mx_rule::ocp ? fl : fl + (pow2 ? 0 : 1);
  return std::clamp(e, e8m0::kMinExponent, e8m0::kMaxExponent);
}

/// True when ActFormat is intq's symmetric scheme (Q8_0 and its kin) with
/// blocks of whole steps of `Step` floats: a vectorized symmetric prologue's
/// case (other real-scale activations take the scalar prologue).
template <class ActFormat, int Step>
consteval bool is_vector_symmetric() {
  if constexpr (requires { ActFormat::kScheme; })
    return ActFormat::kScheme == int_scheme::symmetric && ActFormat::kBlock % Step == 0;
  else
    return false;
}

/// The vectorized prologues of intq's symmetric scheme (Q8_0 and its kin)
/// take these scalar steps of ActFormat::quantize_block verbatim: d = amax /
/// qmax (one ulp down where qmax·d would overflow), 1/d, and whether the
/// elements are multiplied by 1/d or, where it overflowed (d < 2^-128),
/// divided by d. quantize_rows_symmetric tests them against the format.
struct symmetric_step {
  float d, id;
  bool by_inverse;
};
template <class ActFormat>
inline symmetric_step symmetric_scale(float amax) noexcept {
  constexpr float kQmax = float(ActFormat::kQmax);
  float d = amax / kQmax;
  if (!std::isfinite(kQmax * d)) d = std::nextafter(d, 0.0f);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  return {d, id, std::isfinite(id)};
}

/// Every consumer's record of a real-scale activation block (codes summing to
/// code_sum, block_scale s) — or, when the stored scale is not finite (an fp16
/// scale past 65504), st marks the block refused (bad_scale at its first
/// column, `start`) unless a non-finite element follows in the row, which is
/// reported first, as the scalar prologue reports it. Returns false then.
template <class ActFormat>
inline bool put_real_records(const typename ActFormat::block_scale& s, int code_sum, const float* xr, index_t start,
                             index_t cols, const act_panel_layout& lay, std::uint8_t* panel, index_t r, index_t b,
                             const act_consumer* cons, row_status& st) {
  const float sx = ActFormat::scale_value(s);
  if (is_non_finite(sx)) {
    st.bad_col = start;
    st.bad_scale = true;
    for (index_t i = start; i < cols; ++i)
      if (is_non_finite(xr[i])) {
        st.bad_col = i;
        st.bad_scale = false;
        break;
      }
    return false;
  }
  for (index_t k = 0; k < lay.consumers; ++k)
    *lay.meta(panel, r, b, k) = act_block_meta::real(-cons[k].offset * code_sum, sx);
  return true;
}

/// Scalar prologue for rows [r0, r1) of x (row r at x + r·ldx, `cols` floats)
/// into the panel `lay` at `panel` (lay.consumers records per block, described
/// by cons[0 … lay.consumers)). Calls ActFormat::quantize_block, so it is the
/// format by construction. The prologue of every path for activations with
/// real scales (their consumers are all real: act_block_meta::real with the
/// format's scale_value); the exponent range it reports is then {0, 0}.
template <class ActFormat>
void quantize_rows_scalar(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                          const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                          row_status* status) {
  constexpr int B = ActFormat::kBlock;
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t c = 0; c < cols; ++c)
      if (is_non_finite(xr[c])) {  // a bit test: survives -ffast-math (tensor/check.hpp)
        st.bad_col = c;
        break;
      }
    if (st.bad_col < 0) {
      for (index_t b = 0; b < lay.nblk; ++b) {
        const index_t n = std::min<index_t>(B, cols - b * B);
        std::int8_t* q = lay.codes(panel, r, b);
        const auto s = ActFormat::quantize_block(xr + b * B, n, 1, q);
        std::fill(q + n, q + B, std::int8_t{0});
        int sum = 0;
        bool any = false;
        for (int i = 0; i < B; ++i) {
          sum += q[i];
          any |= q[i] != 0;
        }
        if constexpr (is_mxint<ActFormat>::value) {
          const int ex = any ? s.exponent() : 0;
          st.ex.add(ex);
          for (index_t k = 0; k < lay.consumers; ++k)
            *lay.meta(panel, r, b, k) = make_block_meta(sum, ex, ActFormat::kFractionBits, cons[k]);
        } else if (!put_real_records<ActFormat>(s, sum, xr, b * B, cols, lay, panel, r, b, cons, st)) {
          break;  // finite data whose scale overflows its type: refused, as quantized_matrix::quantize refuses it
        }
      }
    }
    status[r] = st;
  }
}

}  // namespace lqer::detail
