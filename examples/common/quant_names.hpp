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

/// The names the closed list accepts, for --help and error messages.
inline std::string supported_formats() {
  return "weights mxint4 | mxint3; A/B mxint8 | mxint4; block 16 | 32 | 64; exponent rule lqer (every combination) | "
         "ocp (mxint4 with mxint8)";
}

}  // namespace engine
