// engine — the names of what the example engines quantize with: scale policies
// and the closed list of formats (their types: lqer_linear.hpp). Light, so
// that option parsing and configuration headers need not include the kernels.
#pragma once

#include <lqer/error.hpp>
#include <lqer/format/table.hpp>
#include <string>
#include <string_view>

namespace engine {

/// The scale policies of lqer/factorize/scale_policy.hpp, by name.
enum class scale_policy_kind { identity, mean_abs, rms, whiten };

inline const char* to_string(scale_policy_kind p) noexcept {
  switch (p) {
    case scale_policy_kind::identity: return "identity";
    case scale_policy_kind::mean_abs: return "mean_abs";
    case scale_policy_kind::rms: return "rms";
    case scale_policy_kind::whiten: return "whiten";
  }
  return "?";
}

/// "identity" | "mean_abs" | "rms" | "whiten"; value_error otherwise.
inline scale_policy_kind parse_scale_policy(std::string_view name) {
  for (const auto p :
       {scale_policy_kind::identity, scale_policy_kind::mean_abs, scale_policy_kind::rms, scale_policy_kind::whiten})
    if (name == to_string(p)) return p;
  throw lqer::value_error("unknown scale policy '" + std::string(name) + "' (identity, mean_abs, rms or whiten)");
}

/// Per-layer ranks under a bit budget (lqer/factorize/rank_allocation.hpp):
/// every layer is factorized once at min(max_rank, min(in, out)) (whole A/B
/// blocks), then the ranks are allocated so that Wq + A + B of all the
/// layers take at most `bits_per_weight` bits per weight, and each layer is
/// truncated to its rank. Off when bits_per_weight is 0.
///
///
/// What a rank step is worth: `relative` (the default) counts its σ² as a
/// fraction of the layer's weighted output energy ‖L·Wᵀ‖² — the relative
/// output error it removes, so a layer is weighed by how large its error is
/// next to what it computes. Absolute σ² (relative = false) is the calibrated
/// output error itself for whiten, but it pours the bits into the layers
/// with the largest activations (the down projections), and on SmolLM2 and
/// USE-lite that lost against uniform ranks (examples/llama/README.md).
struct rank_budget {
  double bits_per_weight = 0;
  int max_rank = 128;
  bool relative = true;
  bool enabled() const noexcept { return bits_per_weight > 0; }
};

// ---------------------------------------------------------------------------
// The closed list of formats, as subsets of lqer's format table
// (lqer/format/table.hpp): no names of its own. Each combination instantiates
// factorize, pack and every CPU path's kernels, so the list holds what the
// quality tables and the exploration use (lqer_linear.hpp says why).

/// The weights' and the low-rank factors' MX widths, in the order they are
/// tried; the activations are MXINT8 of the weights' exponent rule.
using closed_weight_bits = lqer::mx_subset<4, 3>;
using closed_lowrank_bits = lqer::mx_subset<8, 4>;
inline constexpr int kClosedActivationBits = 8;
static_assert(lqer::mx_bits::contains(kClosedActivationBits));
/// The block lengths the engines build (one translation unit each).
using closed_blocks = lqer::int_list<16, 32, 64>;
static_assert(lqer::mx_blocks::contains(16) && lqer::mx_blocks::contains(32) && lqer::mx_blocks::contains(64));
/// The one combination built with the OCP rule too: the paper's.
inline constexpr int kOcpWeightBits = 4, kOcpLowrankBits = 8;

/// llama.cpp's layers are the format table's (lqer::for_each_ggml_layer: Q4_0
/// or Q4_1 weights with Q8_0 A/B and activations — fp16 scales, the fused
/// kernel's real-scale mode), built at block 32 (its block) beside the MX
/// list. The exponent rule does not apply to them.

/// Whether the closed list has weights of `w` bits with A/B of `lr` bits under `rule`.
constexpr bool in_closed_list(int w, int lr, lqer::mx_rule rule) noexcept {
  return closed_weight_bits::contains(w) && closed_lowrank_bits::contains(lr) &&
         (rule == lqer::mx_rule::lqer || (w == kOcpWeightBits && lr == kOcpLowrankBits));
}

namespace detail {
/// "mxint4 | mxint3" (prefix "mxint"), "16 | 32 | 64".
template <int... Vs>
std::string alternatives(lqer::int_list<Vs...>, std::string_view prefix = {}) {
  std::string s;
  for (const int v : {Vs...}) {
    if (!s.empty()) s += " | ";
    s += prefix;
    s += std::to_string(v);
  }
  return s;
}
}  // namespace detail

/// The names the closed list accepts, for --help and error messages.
inline std::string supported_formats() {
  return "weights " + detail::alternatives(closed_weight_bits{}, "mxint") + "; A/B " +
         detail::alternatives(closed_lowrank_bits{}, "mxint") + "; block " + detail::alternatives(closed_blocks{}) +
         "; exponent rule lqer (every combination) | ocp (mxint" + std::to_string(kOcpWeightBits) + " with mxint" +
         std::to_string(kOcpLowrankBits) + "); and llama.cpp's " + lqer::ggml_layers_text();
}

}  // namespace engine
