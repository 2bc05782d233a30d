// engine — the relative output error both engines tabulate per layer.
#pragma once

#include <cmath>
#include <lqer/error.hpp>
#include <span>

namespace engine {

/// ‖approx − exact‖_F / ‖exact‖_F in double (‖approx − exact‖ when exact is 0).
inline double relative_error(std::span<const float> approx, std::span<const float> exact) {
  if (approx.size() != exact.size()) throw lqer::shape_error("relative_error: sizes differ");
  double num = 0, den = 0;
  for (std::size_t i = 0; i < exact.size(); ++i) {
    const double d = double(approx[i]) - exact[i];
    num += d * d;
    den += double(exact[i]) * exact[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace engine
