// lqer — scale policies: how the quantization error is weighted before its SVD.
//
// LQER approximates the weight's quantization error Eq = W − Wq [out, in] by a
// rank-k product A B, A [in, k], B [k, out], so that the layer computes
// x (Wqᵀ + A B) ≈ x Wᵀ. What matters is the *output* error x (Eqᵀ − A B), so
// the SVD is taken of the error weighted by the activations:
//
//   diagonal policies:  S Eqᵀ ≈ U_k Σ_k V_kᵀ,  A = S⁻¹ U_k,  B = Σ_k V_kᵀ,
//                       S = diag(s), s [in] > 0
//   whiten:             F Eqᵀ ≈ U_k Σ_k V_kᵀ,  A = F⁻¹ U_k,  B = Σ_k V_kᵀ,
//                       FᵀF = R + λI,  R = E[x xᵀ]
//
// By Eckart–Young the truncated SVD minimizes ‖S (Eqᵀ − A B)‖_F, resp.
// tr((Eqᵀ − A B)ᵀ (R + λI) (Eqᵀ − A B)) = E‖x (Eqᵀ − A B)‖² + λ‖Eqᵀ − A B‖_F²,
// over every rank-k A B. So `whiten` is the closed-form optimum of the expected
// output error on the calibration distribution (QERA / SVD-LLM), and a
// diagonal policy is that optimum exactly when R is diagonal with R_ii ∝ s_i²
// (uncorrelated channels) — otherwise a cheaper heuristic.
//
// A diagonal scale is invariant to a common factor c: S → cS gives U, V
// unchanged, Σ → cΣ, so A → A/c, B → cB and A B is the same. The normalization
// s /= sqrt(min s · max s) (the reference's) only keeps A and B well scaled
// (the geometric middle of s at 1).
//
// The policies (types; the factorization is a template on one of them):
//   policy::identity  LQER:   s ≡ 1 (the plain SVD of the error)
//   policy::mean_abs  L²QER:  s = max over batches of mean_t |x_t[i]| (the
//                     reference's statistic), s = max(s, 1e-4), s /= sqrt(min s · max s)
//   policy::rms       s = sqrt(E x[i]²), then the same clamp and normalization
//   policy::whiten    from the Gram matrix R with damping λ (see `whiten`)
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <concepts>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "lqer/calib/activation_stats.hpp"
#include "lqer/config.hpp"
#include "lqer/error.hpp"

namespace lqer {

// ---------------------------------------------------------------------------
// The whitening factor F (FᵀF = R + λI) and what the factorization asks of it.

/// How `whiten` factors R + λI. Any F with FᵀF = R + λI gives the same A B
/// (the optimum is unique when σ_k > σ_{k+1}; F only rotates the space the SVD
/// works in), so the choice is cost: Eigen's LLT is blocked and took 0.1 s at
/// n = 2048 on 2 cores, its symmetric eigensolver (unblocked tridiagonalization
/// plus eigenvector accumulation) 7 s — about a minute at n = 4096 per layer.
enum class whiten_factorization {
  cholesky,  ///< R + λI = C Cᵀ, F = Cᵀ (upper triangular) — the default
  eigen,     ///< R = Q Λ Qᵀ, F = Q (max(Λ, 0) + λ)^{1/2} Qᵀ, the symmetric square root R^{1/2}
};

inline const char* to_string(whiten_factorization f) noexcept {
  return f == whiten_factorization::cholesky ? "cholesky" : "eigen";
}

/// A whitening factor F of R + λI (FᵀF = R + λI), applied to thin matrices
/// only: the factorization never forms F·Eqᵀ unless asked for the dense matrix
/// (exact solver), so F costs O(in²·k) per use, not O(in²·out).
///
/// A class template (used as `whitening`, Real = double) so that its Cholesky
/// and eigensolver code is compiled only by a translation unit that factors:
/// the bodies of a non-template class are compiled by every includer (issue
/// #18).
template <class Real = double>
class basic_whitening {
 public:
  using matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>;
  using vector = Eigen::Matrix<Real, Eigen::Dynamic, 1>;

  basic_whitening() = default;

  /// F X.
  matrix apply(const matrix& x) const {
    if (kind_ == whiten_factorization::cholesky) return llt_.matrixU() * x;
    return q_ * (sqrt_ev_.asDiagonal() * (q_.transpose() * x));
  }
  /// Fᵀ X.
  matrix apply_transpose(const matrix& x) const {
    if (kind_ == whiten_factorization::cholesky) return llt_.matrixL() * x;
    return apply(x);  // symmetric
  }
  /// F⁻¹ X.
  matrix solve(const matrix& x) const {
    if (kind_ == whiten_factorization::cholesky) return llt_.matrixU().solve(x);
    return q_ * (sqrt_ev_.cwiseInverse().asDiagonal() * (q_.transpose() * x));
  }
  /// The damping λ added to R (absolute, in the units of x²).
  double lambda() const noexcept { return lambda_; }
  whiten_factorization kind() const noexcept { return kind_; }
  index_t size() const noexcept { return n_; }

  /// Factors R + λI. Throws value_error when the result is not positive
  /// definite to working precision (only possible with λ = 0 and a singular R).
  static basic_whitening factor(const matrix& r, double lambda, whiten_factorization kind) {
    basic_whitening w;
    w.kind_ = kind;
    w.lambda_ = lambda;
    w.n_ = r.rows();
    const Real max_diag = r.diagonal().maxCoeff();
    // A pivot (eigenvalue) below n·ε·max R_ii is rounding noise: R was
    // accumulated in double, so its entries carry absolute errors of that order.
    const Real floor = static_cast<Real>(w.n_) * std::numeric_limits<Real>::epsilon() * max_diag;
    if (kind == whiten_factorization::cholesky) {
      matrix rl = r;
      rl.diagonal().array() += static_cast<Real>(lambda);
      w.llt_.compute(rl);
      if (w.llt_.info() != Eigen::Success || w.llt_.matrixLLT().diagonal().array().square().minCoeff() <= floor)
        throw value_error(singular_message(lambda));
    } else {
      Eigen::SelfAdjointEigenSolver<matrix> es(r);
      if (es.info() != Eigen::Success) throw value_error("whiten: the eigendecomposition of R did not converge");
      // Rounding can leave eigenvalues of a PSD R slightly negative: clamp to 0.
      const vector ev = es.eigenvalues().cwiseMax(Real(0)).array() + static_cast<Real>(lambda);
      if (ev.minCoeff() <= floor) throw value_error(singular_message(lambda));
      w.q_ = es.eigenvectors();
      w.sqrt_ev_ = ev.cwiseSqrt();
    }
    return w;
  }

 private:
  static std::string singular_message(double lambda) {
    return lambda == 0.0 ? "whiten: the calibration Gram matrix R is singular (fewer tokens than channels, or "
                           "dead or dependent channels); use a damping > 0"
                         : "whiten: R + λI is not positive definite to working precision; increase the damping";
  }

  whiten_factorization kind_ = whiten_factorization::cholesky;
  double lambda_ = 0.0;
  index_t n_ = 0;
  Eigen::LLT<matrix> llt_;  // cholesky: R + λI = L Lᵀ, F = Lᵀ
  matrix q_;                // eigen: eigenvectors
  vector sqrt_ev_;          // eigen: sqrt(max(λ_i, 0) + λ)
};

/// The whitening factor factorize() uses: in double.
using whitening = basic_whitening<>;

namespace detail {
inline void require_stats(const activation_stats& stats, index_t in, const char* policy) {
  if (stats.empty())
    throw value_error(std::string(policy) + " needs calibration statistics, and the ones given hold no tokens");
  if (stats.in_features() != in)
    throw shape_error(std::string(policy) + ": the calibration statistics have " + std::to_string(stats.in_features()) +
                      " channels but the weight has " + std::to_string(in) + " inputs");
}

/// s = max(s, clamp_min); s /= sqrt(min s · max s); in double, returned as float.
inline std::vector<float> clamp_and_normalize(std::vector<double> s, double clamp_min) {
  for (double& v : s) v = std::max(v, clamp_min);
  const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
  const double norm = std::sqrt(*lo * *hi);
  std::vector<float> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<float>(s[i] / norm);
  return out;
}
}  // namespace detail

// ---------------------------------------------------------------------------
// The policies

namespace policy {

/// LQER: s ≡ 1, the plain truncated SVD of the quantization error. Reads no statistics.
struct identity {
  static constexpr std::string_view kName = "identity";
  std::vector<float> scale(const activation_stats& /*stats*/, index_t in) const {
    return std::vector<float>(static_cast<std::size_t>(in), 1.0f);
  }
};

/// L²QER: s[i] = max over calibration batches of mean_t |x_t[i]|, then
/// s = max(s, clamp_min) and s /= sqrt(min s · max s). The clamp (absolute,
/// 1e-4 in the reference) keeps dead channels from making S⁻¹ huge.
struct mean_abs {
  static constexpr std::string_view kName = "mean_abs";
  double clamp_min = 1e-4;
  std::vector<float> scale(const activation_stats& stats, index_t in) const {
    detail::require_stats(stats, in, "mean_abs");
    return detail::clamp_and_normalize(stats.batch_mean_abs_max(), clamp_min);
  }
};

/// s[i] = sqrt(E x[i]²) over all calibration tokens, then the same clamp and
/// normalization as mean_abs. The diagonal of whiten's R: equal to whiten when
/// the channels are uncorrelated.
struct rms {
  static constexpr std::string_view kName = "rms";
  double clamp_min = 1e-4;
  std::vector<float> scale(const activation_stats& stats, index_t in) const {
    detail::require_stats(stats, in, "rms");
    return detail::clamp_and_normalize(stats.rms(), clamp_min);
  }
};

/// The closed-form optimum of E‖x (Eqᵀ − A B)‖² from the full Gram matrix
/// R = E[x xᵀ] (needs statistics accumulated with gram_mode::on), with damping
/// λ = damping · mean(diag R) = damping · tr(R)/n, the mean eigenvalue of R.
///
/// Why damping, and why 1e-4 by default:
///  * R is singular whenever there are fewer calibration tokens than channels
///    or dead / dependent channels; R + λI is positive definite with condition
///    number ≤ 1 + n/damping (λ_max ≤ tr R = n·mean eigenvalue).
///  * The products with Eq run in float. A = F⁻¹U_k amplifies float rounding in
///    the directions where R is small by up to sqrt(1 + n/damping): 1.3e4 for
///    n = 16384 at 1e-4, times float's 6e-8 gives 8e-4, below the half step
///    (2^-8 = 3.9e-3 relative to the block maximum) of the 8-bit format A is
///    stored in. At 1e-6 it would be ~10× larger than that step.
///  * The price: whiten then minimizes E‖x D‖² + λ‖D‖_F² (D = Eqᵀ − A B), so
///    its calibration objective exceeds the undamped optimum by at most
///    λ‖D‖_F² — about `damping` relative when the activation energy is spread
///    over the channels (E‖x D‖² ≈ mean(diag R)·‖D‖_F²).
///  * In directions the calibration never visited (the null space of R) the
///    undamped optimum is arbitrary; the λ‖D‖² term chooses the smallest weight
///    error there, as LQER would. A larger damping trades calibration fit for
///    that robustness (damping → ∞ is `identity`).
/// damping = 0 is allowed for a positive definite R (a value_error otherwise).
struct whiten {
  static constexpr std::string_view kName = "whiten";
  double damping = 1e-4;
  whiten_factorization factorization = whiten_factorization::cholesky;

  /// A template (Stats = activation_stats) for the reason basic_whitening is one.
  template <class Stats = activation_stats>
  whitening factor(const Stats& stats, index_t in) const {
    detail::require_stats(stats, in, "whiten");
    if (!stats.has_gram())
      throw value_error("whiten: the calibration statistics hold no Gram matrix (accumulate with gram_mode::on)");
    if (!(damping >= 0.0) || !std::isfinite(damping))
      throw value_error("whiten: the damping must be finite and >= 0, got " + std::to_string(damping));
    const Eigen::MatrixXd r = stats.gram();
    const double mean_diag = r.diagonal().mean();
    if (!(mean_diag > 0.0)) throw value_error("whiten: every calibration activation is zero");
    return whitening::factor(r, damping * mean_diag, factorization);
  }
};

}  // namespace policy

/// A policy with a per-channel scale s [in] (identity, mean_abs, rms).
template <class P>
concept diagonal_scale_policy = requires(const P& p, const activation_stats& s, index_t in) {
  { P::kName } -> std::convertible_to<std::string_view>;
  { p.scale(s, in) } -> std::same_as<std::vector<float>>;
};

/// A policy with a full whitening factor (whiten).
template <class P>
concept whitening_scale_policy = requires(const P& p, const activation_stats& s, index_t in) {
  { P::kName } -> std::convertible_to<std::string_view>;
  { p.factor(s, in) } -> std::same_as<whitening>;
};

/// Any scale policy factorize() accepts.
template <class P>
concept scale_policy = diagonal_scale_policy<P> || whitening_scale_policy<P>;

}  // namespace lqer
