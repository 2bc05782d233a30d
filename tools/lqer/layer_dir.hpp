// lqer CLI — what `lqer factorize` writes into a layer directory and
// `lqer forward` reads back, and the format types those two commands accept.
//
// A layer directory holds (all float32 .npy, nn.Linear layout):
//   Wq.npy       [out, in]  the dequantized 4-bit weight
//   A.npy        [in, k]    the dequantized low-rank factors (absent when rank = 0)
//   B.npy        [k, out]
//   scale.npy    [in]       the diagonal scale s of the policy (absent for whiten)
//   bias.npy     [out]      when factorize was given --bias
//   report.json             what was done (formats, policy, solver, residuals, times)
//
// Formats. Each combination of formats is a separate instantiation of the
// factorization (and of the reference forward), so these commands accept a
// deliberately small, closed set — the MX integer formats the paper and the
// fused kernels use — rather than format_select.hpp's full list:
//   W        mxint2, mxint3, mxint4, mxint8
//   A / B    mxint8
//   x        mxint4, mxint8        (lqer forward)
// each with --*-rule ocp|lqer, and one block length shared by all of them,
// 16 or 32: products are computed block by block, so the weight's, the
// factors' and the activations' blocks must have the same length (the
// reference forward and the kernels require it).
//
// Reading a directory back re-quantizes the dequantized values in their
// format. For the LQER rule that is not the identity on every block: a block
// whose largest value decodes to exactly 2^p was encoded with exponent p + 1
// (its code 2^(Bits−2)), but re-quantizing picks ceil(log2 2^p) = p and
// saturates that code. preimage_for_requantize() nudges such elements one ulp
// away from zero, which makes quantize() pick p + 1 again and reproduce every
// code; read_quantized() then checks that the round trip is exact.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <lqer/format/mxint.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>
#include <lqer/tensor/quantized_matrix.hpp>

#include "commands.hpp"

namespace lqer::cli {

/// One MX format as the command line names it.
struct mx_spec {
  std::string format = "mxint4";  ///< mxint2 / mxint3 / mxint4 / mxint8
  int block = 16;
  mx_rule rule = mx_rule::lqer;

  int bits() const {
    if (format.size() == 6 && format.starts_with("mxint") && format[5] >= '2' && format[5] <= '8')
      return format[5] - '0';
    return 0;
  }
};

inline mx_rule parse_rule(const std::string& r) { return r == "ocp" ? mx_rule::ocp : mx_rule::lqer; }

inline nlohmann::json to_json(const mx_spec& s, const std::string& full_name) {
  return {{"name", full_name}, {"format", s.format}, {"block", s.block}, {"rule", to_string(s.rule)}};
}

inline mx_spec mx_spec_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    mx_spec s;
    s.format = j.at("format").get<std::string>();
    s.block = j.at("block").get<int>();
    const std::string rule = j.at("rule").get<std::string>();
    if (rule != "ocp" && rule != "lqer") throw value_error(where + ": unknown rule '" + rule + "'");
    s.rule = parse_rule(rule);
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw parse_error(where + ": " + e.what());
  }
}

/// The mx_spec of a format name as Format::name() writes it ("mxint4_b16_lqer"),
/// as checkpoints record it; value_error naming `where` for any other name.
inline mx_spec mx_spec_from_name(const std::string& name, const std::string& where) {
  const auto bad = [&] {
    return value_error(where + ": format '" + name +
                       "' is not an MX integer format (mxint<bits>_b<block>_<ocp|lqer>), which lqer forward runs");
  };
  // "mxint" <bits> "_b" <block> "_" <rule>
  const std::size_t b = name.find("_b"), r = name.rfind('_');
  if (!name.starts_with("mxint") || b != 6 || r == std::string::npos || r <= b + 2) throw bad();
  mx_spec s;
  s.format = name.substr(0, 6);
  const std::string block = name.substr(b + 2, r - b - 2), rule = name.substr(r + 1);
  if (block.empty() || block.size() > 4 || block.find_first_not_of("0123456789") != std::string::npos) throw bad();
  if (rule != "ocp" && rule != "lqer") throw bad();
  s.block = std::stoi(block);
  s.rule = parse_rule(rule);
  if (s.bits() == 0) throw bad();
  return s;
}

namespace detail {

template <int... Vs>
struct value_list {};

/// The bit widths each role accepts, and the shared block lengths. The
/// low-rank factors are 8-bit only: LQER keeps A and B in 8 bits (they are
/// 2.8% of the bytes at rank 32), and every extra entry here multiplies the
/// factorize instantiations the CLI compiles (blocks × W × A/B × policies).
using weight_bits = value_list<2, 3, 4, 8>;
using lowrank_bits = value_list<8>;
using activation_bits = value_list<4, 8>;
using shared_blocks = value_list<16, 32>;

template <int... Vs>
std::string list_text(value_list<Vs...>, const char* prefix) {
  std::string s;
  const int v[] = {Vs...};
  for (std::size_t i = 0; i < sizeof...(Vs); ++i) {
    if (i) s += i + 1 == sizeof...(Vs) ? " or " : ", ";
    s += prefix + std::to_string(v[i]);
  }
  return s;
}

template <int Bits, int Block, class Visit>
void visit_rule(mx_rule rule, Visit& visit) {
  if (rule == mx_rule::ocp)
    visit(std::type_identity<mxint<Bits, Block, mx_rule::ocp>>{});
  else
    visit(std::type_identity<mxint<Bits, Block, mx_rule::lqer>>{});
}

template <int Block, class Visit, int... Bits>
bool visit_bits(int bits, mx_rule rule, Visit& visit, value_list<Bits...>) {
  return ((bits == Bits ? (visit_rule<Bits, Block>(rule, visit), true) : false) || ...);
}

}  // namespace detail

/// Calls visit(std::type_identity<mxint<bits, Block, rule>>{}) for a format of
/// the role whose bit widths are `Bits`; usage_error naming the role otherwise.
template <int Block, class Bits, class Visit>
void with_mx(const mx_spec& s, const char* role, Bits bits_list, Visit&& visit) {
  if (!detail::visit_bits<Block>(s.bits(), s.rule, visit, bits_list))
    throw usage_error(std::string(role) + " format must be " + detail::list_text(bits_list, "mxint") + ", not '" +
                      s.format + "'");
}

/// Calls visit(std::integral_constant<int, Block>{}) for the shared block length.
template <class Visit>
void with_block(int block, Visit&& visit) {
  if (block == 16)
    visit(std::integral_constant<int, 16>{});
  else if (block == 32)
    visit(std::integral_constant<int, 32>{});
  else
    throw usage_error("the block length must be " + detail::list_text(detail::shared_blocks{}, "") + ", not " +
                      std::to_string(block));
}

// ---------------------------------------------------------------------------
// Reading quantized matrices back

/// The values, nudged where needed so that quantized_matrix<F>::quantize
/// reproduces the encoding they were decoded from (see the file comment).
template <class F>
std::vector<float> preimage_for_requantize(std::vector<float> v, index_t rows, index_t cols, block_axis axis) {
  if constexpr (F::kRule == mx_rule::lqer) {
    const index_t lanes = axis == block_axis::cols ? rows : cols, depth = axis == block_axis::cols ? cols : rows;
    const auto at = [&](index_t lane, index_t i) -> float& {
      return axis == block_axis::cols ? v[static_cast<std::size_t>(lane * cols + i)]
                                      : v[static_cast<std::size_t>(i * cols + lane)];
    };
    for (index_t lane = 0; lane < lanes; ++lane)
      for (index_t b0 = 0; b0 < depth; b0 += F::kBlock) {
        const index_t b1 = std::min(depth, b0 + F::kBlock);
        float amax = 0;
        for (index_t i = b0; i < b1; ++i) amax = std::max(amax, std::fabs(at(lane, i)));
        int e = 0;
        if (!(amax > 0) || std::frexp(amax, &e) != 0.5f) continue;  // not an exact power of two
        for (index_t i = b0; i < b1; ++i) {
          float& x = at(lane, i);
          if (std::fabs(x) == amax) x = std::nextafter(x, std::copysign(std::numeric_limits<float>::infinity(), x));
        }
      }
  }
  return v;
}

/// Quantizes a dequantized matrix read from `what` back into format F and
/// returns it; `mismatches` counts elements whose value the round trip changed
/// (0 for files written by `lqer factorize`).
template <class F>
quantized_matrix<F> read_quantized(const io::npy_matrix& m, block_axis axis, const std::string& what,
                                   index_t& mismatches) {
  require_finite(m.data, m.cols, what);
  const std::vector<float> pre = preimage_for_requantize<F>(m.data, m.rows, m.cols, axis);
  auto q = quantized_matrix<F>::quantize(matrix_view<const float>(pre.data(), m.rows, m.cols), axis);
  const std::vector<float> back = q.dequantize();
  mismatches = 0;
  for (std::size_t i = 0; i < back.size(); ++i) mismatches += back[i] != m.data[i];
  return q;
}

}  // namespace lqer::cli
