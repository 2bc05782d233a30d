// engine — the names of what the example engines quantize with: scale policies
// and the closed list of formats (their types: lqer_linear.hpp). Light, so
// that option parsing and configuration headers need not include the kernels.
#pragma once

#include <lqer/error.hpp>
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

/// The names the closed list accepts, for --help and error messages.
inline std::string supported_formats() {
  return "weights mxint4 | mxint3; A/B mxint8 | mxint4; block 16 | 32 | 64; exponent rule lqer (every combination) | "
         "ocp (mxint4 with mxint8)";
}

}  // namespace engine
