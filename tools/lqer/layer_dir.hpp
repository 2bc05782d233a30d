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
// deliberately small, closed subset of the format table (lqer/format/table.hpp)
// — the MX integer formats the paper and the fused kernels use — named here as
// mx_subsets of the table's MX widths (checked against it at compile time):
//   W        mxint2, mxint3, mxint4, mxint8
//   A / B    mxint8
//   x        mxint4, mxint8        (lqer forward)
// each with --*-rule ocp|lqer, and one block length shared by all of them,
// 16 or 32: products are computed block by block, so the weight's, the
// factors' and the activations' blocks must have the same length (the
// reference forward and the kernels require it). Beside them the format
// table's llama.cpp layers (lqer::for_each_ggml_layer): q4_0 or q4_1 weights
// with q8_0 A/B and q8_0 activations, block 32, no rule.
//
// Reading a directory back re-quantizes the dequantized values in their
// format. For the LQER rule that is not the identity on every block: a block
// whose largest value decodes to exactly 2^p was encoded with exponent p + 1
// (its code 2^(Bits−2)), but re-quantizing picks ceil(log2 2^p) = p and
// saturates that code. preimage_for_requantize() nudges such elements one ulp
// away from zero, which makes quantize() pick p + 1 again and reproduce every
// code; read_quantized() then checks that the round trip is exact. Q4_0 and
// Q8_0 re-encode their own decoding exactly (the block's extreme is its code
// ±8 or 127 times d, so d comes back); Q4_1 does too unless a block lies
// thousands of its own spreads away from zero (hi − lo of the decoded values
// then rounds in float): read_quantized() counts such values, and the
// layer's checkpoint (layer.safetensors) holds the codes exactly anyway.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <lqer/format/mxint.hpp>
#include <lqer/format/table.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>
#include <lqer/tensor/quantized_matrix.hpp>

#include "commands.hpp"

namespace lqer::cli {

/// One MX format as the command line names it.
struct mx_spec {
  std::string format = "mxint4";  ///< mxint2 / mxint3 / mxint4 / mxint8; llama.cpp's q4_0 / q4_1 / q8_0
  int block = 16;
  mx_rule rule = mx_rule::lqer;

  /// The table's MX width of `format`; 0 when it is not an MX name of the table.
  int bits() const { return mx_bits_of(format); }
};

/// "ocp" → ocp, anything else → lqer (CLI11 has checked the value already).
inline mx_rule parse_rule(const std::string& r) { return parse_mx_rule(r).value_or(mx_rule::lqer); }

/// Whether `format` is one of the format table's llama.cpp names (q4_0, q4_1, q8_0).
inline bool is_ggml_name(std::string_view format) {
  const format_entry* f = find_format(format);
  return f != nullptr && f->family == format_family::ggml;
}

inline nlohmann::json to_json(const mx_spec& s, const std::string& full_name) {
  nlohmann::json j = {{"name", full_name}, {"format", s.format}, {"block", s.block}};
  if (!is_ggml_name(s.format)) j["rule"] = to_string(s.rule);  // llama.cpp's formats have no exponent rule
  return j;
}

inline mx_spec mx_spec_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    mx_spec s;
    s.format = j.at("format").get<std::string>();
    s.block = j.at("block").get<int>();
    if (is_ggml_name(s.format)) return s;  // no exponent rule
    const std::string rule = j.at("rule").get<std::string>();
    const std::optional<mx_rule> r = parse_mx_rule(rule);
    if (!r) throw value_error(where + ": unknown rule '" + rule + "'");
    s.rule = *r;
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw parse_error(where + ": " + e.what());
  }
}

/// The mx_spec of a format name as Format::name() writes it ("mxint4_b16_lqer",
/// or llama.cpp's "int4_g32_sext_f16" = q4_0), as checkpoints record it;
/// value_error naming `where` for any other name.
inline mx_spec mx_spec_from_name(const std::string& name, const std::string& where) {
  if (const std::string_view ggml = ggml_name_of_stored(name); !ggml.empty()) {
    mx_spec s;
    s.format = std::string(ggml);
    s.block = kGgmlBlock;
    return s;
  }
  const auto bad = [&] {
    return value_error(where + ": format '" + name +
                       "' is neither an MX integer format (mxint<bits>_b<block>_<ocp|lqer>) nor one of llama.cpp's "
                       "(q4_0, q4_1, q8_0), which lqer forward runs");
  };
  const std::optional<lqer::mx_name> m = parse_mx_name(name);
  if (!m) throw bad();
  mx_spec s;
  s.format = m->format;
  s.block = m->block;
  s.rule = m->rule;
  return s;
}

namespace detail {

/// The bit widths each role accepts (subsets of the format table's MX
/// widths), and the shared block lengths (a subset of its MX blocks). The
/// low-rank factors are 8-bit only: LQER keeps A and B in 8 bits (they are
/// 2.8% of the bytes at rank 32), and every extra entry here multiplies the
/// factorize instantiations the CLI compiles (blocks × W × A/B × policies).
using weight_bits = mx_subset<2, 3, 4, 8>;
using lowrank_bits = mx_subset<8>;
using activation_bits = mx_subset<4, 8>;
using shared_blocks = int_list<16, 32>;
static_assert(mx_blocks::contains(16) && mx_blocks::contains(32), "the shared blocks must be MX blocks of the table");

template <class Visit, int... Bs>
bool visit_block(int block, Visit& visit, int_list<Bs...>) {
  return ((block == Bs ? (visit(std::integral_constant<int, Bs>{}), true) : false) || ...);
}

}  // namespace detail

/// Calls visit(std::type_identity<mxint<bits, Block, rule>>{}) for a format of
/// the role whose bit widths are `Bits`; usage_error naming the role otherwise.
template <int Block, class Bits, class Visit>
void with_mx(const mx_spec& s, const char* role, Bits bits_list, Visit&& visit) {
  if (!with_mx_format<Block>(s.bits(), s.rule, bits_list, visit))
    throw usage_error(std::string(role) + " format must be " + list_text(bits_list, "mxint") + ", not '" + s.format +
                      "'");
}

/// Calls visit(std::type_identity<WF>{}, std::type_identity<LF>{}) for the
/// weight and A/B formats `w`, `lr` of block Block: the MX subsets above
/// (with_mx), or one of the format table's llama.cpp layers
/// (for_each_ggml_layer: Q4_0 or Q4_1 weights with Q8_0 A/B), whose block is 32.
/// usage_error naming what exists otherwise.
template <int Block, class Visit>
void with_layer_formats(const mx_spec& w, const mx_spec& lr, Visit&& visit) {
  if (is_ggml_name(w.format) || is_ggml_name(lr.format)) {
    bool found = false;
    for_each_ggml_layer([&]<class L>(L) {
      using WF = typename L::weight;
      using LF = typename L::lowrank;
      if (found || short_name<WF>() != w.format || short_name<LF>() != lr.format) return;
      found = true;
      if constexpr (Block == kGgmlBlock)
        visit(std::type_identity<WF>{}, std::type_identity<LF>{});
      else
        throw usage_error(w.format + " has blocks of " + std::to_string(kGgmlBlock) + " only, not " +
                          std::to_string(Block));
    });
    if (!found)
      throw usage_error("llama.cpp's formats are built as " + ggml_layers_text() + " only, not " + w.format +
                        " weights with " + lr.format + " A/B");
    return;
  }
  with_mx<Block>(w, "the weight", detail::weight_bits{}, [&](auto wf) {
    with_mx<Block>(lr, "the low-rank", detail::lowrank_bits{}, [&](auto lf) { visit(wf, lf); });
  });
}

/// The activation format a layer of weight format WF and A/B format LF takes
/// when none is named: the llama.cpp layer's (q8_0), else "mxint8".
template <class WF, class LF>
std::string default_activation_name() {
  std::string name = "mxint8";
  for_each_ggml_layer([&]<class L>(L) {
    if constexpr (std::is_same_v<typename L::weight, WF> && std::is_same_v<typename L::lowrank, LF>)
      name = short_name<typename L::activation>();
  });
  return name;
}

/// Calls visit(std::type_identity<AF>{}) for the activations `act` of a layer
/// in WF and LF: MX (activation_bits, block Block, act.rule) for MX weights;
/// for a llama.cpp layer its own activations only (ggml's pairing, the fused
/// kernel's). usage_error otherwise.
template <int Block, class WF, class LF, class Visit>
void with_activation_format(const mx_spec& act, Visit&& visit) {
  if constexpr (!kGgmlNameOf<WF>.empty()) {
    for_each_ggml_layer([&]<class L>(L) {
      using AF = typename L::activation;
      if constexpr (std::is_same_v<typename L::weight, WF> && std::is_same_v<typename L::lowrank, LF>) {
        if (act.format != short_name<AF>())
          throw usage_error(short_name<WF>() + " layers take activations in " + short_name<AF>() +
                            " (llama.cpp's pairing), not '" + act.format + "'");
        visit(std::type_identity<AF>{});
      }
    });
  } else {
    with_mx<Block>(act, "the activation", detail::activation_bits{}, visit);
  }
}

/// Calls visit(std::integral_constant<int, Block>{}) for the shared block length.
template <class Visit>
void with_block(int block, Visit&& visit) {
  if (!detail::visit_block(block, visit, detail::shared_blocks{}))
    throw usage_error("the block length must be " + list_text(detail::shared_blocks{}) + ", not " +
                      std::to_string(block));
}

// ---------------------------------------------------------------------------
// Reading quantized matrices back

/// The values, nudged where needed so that quantized_matrix<F>::quantize
/// reproduces the encoding they were decoded from (see the file comment).
template <class F>
std::vector<float> preimage_for_requantize(std::vector<float> v, index_t rows, index_t cols, block_axis axis) {
  constexpr bool kLqerRule = [] {
    if constexpr (requires { F::kRule; })
      return F::kRule == mx_rule::lqer;
    else
      return false;  // llama.cpp's formats: see the file comment
  }();
  if constexpr (kLqerRule) {
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
