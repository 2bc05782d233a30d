// lqer — truncated SVD solvers: the top-k singular triplets of a matrix M [m, n].
//
// Solvers are types (the factorization is a template on one of them) and work
// on a *linear operator*: anything that can multiply thin matrices by M and Mᵀ
// (and, for the exact solver, produce M densely). The factorization's M is
// S·Eqᵀ or F·Eqᵀ; as an operator it never has to be formed or transposed in
// memory, and the whitening factor F is applied to thin matrices only.
//
//   exact_svd       Eigen's BDCSVD of the dense M, in double — the reference.
//                   O(m n min(m, n)): minutes at 4096 × 11008.
//   randomized_svd  Halko, Martinsson & Tropp, "Finding structure with
//                   randomness" (SIAM Review 2011), Algorithms 4.4 + 5.1:
//                     Ω [n, k+p] Gaussian (deterministic seed)
//                     Q = orth(M Ω)
//                     q times:  Q' = orth(Mᵀ Q),  Q = orth(M Q')
//                     Bᵀ = Mᵀ Q [n, k+p],  SVD of the small Bᵀ = V̂ Σ Ûᵀ (double)
//                     U = Q Û, V = V̂ (first k columns)
//                   2q + 2 passes over M of O(m n (k+p)) each.
//
// Float vs double: the passes over M (the only large work) are float GEMMs:
// M itself is float data, and the result is stored in 8 bits, so float's 2^-24
// is far below anything that survives. The small SVD and everything O(k²·n)
// run in double, where they cost nothing.
#pragma once

#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "lqer/config.hpp"
#include "lqer/error.hpp"

namespace lqer {

/// The top-k singular triplets: M ≈ u · diag(s) · vᵀ, s descending.
struct svd_triplets {
  Eigen::MatrixXf u;  ///< [m, k], orthonormal columns
  Eigen::VectorXf s;  ///< [k], s(0) ≥ s(1) ≥ … ≥ 0
  Eigen::MatrixXf v;  ///< [n, k], orthonormal columns
};

/// A matrix M [rows, cols] given by its products with thin matrices.
template <class Op>
concept linear_operator = requires(const Op& op, const Eigen::MatrixXf& x) {
  { op.rows() } -> std::convertible_to<index_t>;
  { op.cols() } -> std::convertible_to<index_t>;
  { op.multiply(x) } -> std::convertible_to<Eigen::MatrixXf>;            ///< M X, X [cols, c]
  { op.multiply_transpose(x) } -> std::convertible_to<Eigen::MatrixXf>;  ///< Mᵀ X, X [rows, c]
  { op.dense() } -> std::convertible_to<Eigen::MatrixXf>;                ///< M itself
};

/// A dense column-major float matrix as a linear_operator (it refers to the
/// matrix; keep that alive while the operator is used).
class dense_operator {
 public:
  explicit dense_operator(const Eigen::Ref<const Eigen::MatrixXf>& m) : m_(m) {}
  index_t rows() const noexcept { return m_.rows(); }
  index_t cols() const noexcept { return m_.cols(); }
  Eigen::MatrixXf multiply(const Eigen::MatrixXf& x) const { return m_ * x; }
  Eigen::MatrixXf multiply_transpose(const Eigen::MatrixXf& x) const { return m_.transpose() * x; }
  Eigen::MatrixXf dense() const { return m_; }

 private:
  Eigen::Ref<const Eigen::MatrixXf> m_;
};

namespace detail {
inline void check_rank(index_t rows, index_t cols, index_t k, std::string_view solver) {
  if (k < 1 || k > std::min(rows, cols))
    throw value_error(std::string(solver) + ": rank " + std::to_string(k) + " is outside [1, min(" +
                      std::to_string(rows) + ", " + std::to_string(cols) + ")]");
}

/// An orthonormal basis of the columns of y (thin Q of a Householder QR), in place.
template <class Matrix>
void orthonormalize(Matrix& y) {
  const Eigen::HouseholderQR<Matrix> qr(y);
  y = qr.householderQ() * Eigen::MatrixXf::Identity(y.rows(), y.cols());
}
/// A product with the matrix that overflowed float (entries near FLT_MAX, or
/// a scale policy multiplying them up) would otherwise surface as "the SVD did
/// not converge" — or as NaN factors — far from the cause.
template <class Matrix>
void require_finite_product(const Matrix& p, std::string_view solver) {
  if (!p.allFinite())
    throw value_error(std::string(solver) +
                      ": a product with the matrix overflows float: its entries (the scaled quantization error of "
                      "W) are too large for float arithmetic");
}

}  // namespace detail

// ---------------------------------------------------------------------------

/// The reference solver: BDCSVD of the dense matrix, in double.
struct exact_svd {
  static constexpr std::string_view kName = "exact";

  template <linear_operator Op>
  svd_triplets operator()(const Op& op, index_t k) const {
    detail::check_rank(op.rows(), op.cols(), k, kName);
    const Eigen::MatrixXd m = Eigen::MatrixXf(op.dense()).template cast<double>();
    detail::require_finite_product(m, kName);
    const Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    if (svd.info() != Eigen::Success) throw value_error("exact_svd: the SVD did not converge");
    return {svd.matrixU().leftCols(k).cast<float>(), svd.singularValues().head(k).cast<float>(),
            svd.matrixV().leftCols(k).cast<float>()};
  }
  /// The same for a dense float matrix. A template, as every entry point here:
  /// a translation unit that includes this header but never calls a solver
  /// compiles none of Eigen's SVD (issue #18: an inline non-template overload
  /// cost every includer ~15 s and 0.8 GB).
  template <class Derived>
  requires std::same_as<typename Derived::Scalar, float> svd_triplets operator()(const Eigen::MatrixBase<Derived>& m,
                                                                                 index_t k) const {
    return (*this)(dense_operator(m), k);
  }
};

/// Halko–Martinsson–Tropp randomized range finder with power iterations (see
/// the file comment). Deterministic: the test matrix depends only on the seed
/// (not on the standard library), so the result depends only on the seed and
/// the operator's products — which, for factorize()'s operator, do not depend
/// on the number of threads either.
struct randomized_svd {
  static constexpr std::string_view kName = "randomized";

  /// Extra sketch columns p beyond k. HMT's average-case bound (Thm. 10.5)
  /// for the range found without power iterations is
  /// sqrt(1 + k/(p−1)) × the optimal tail: 2.1 at k = 32, p = 10, and
  /// 1.4 at p = 32 for +52% cost per pass. Power iterations shrink the same
  /// gap more cheaply (measured below), so p stays at the customary 10.
  index_t oversampling = 10;
  /// Power iterations q. Each replaces the singular values by σ^(2q+1) in the
  /// sketch, so the tail's contamination of the top-k space falls like
  /// (σ_{k+p}/σ_k)^(2q+1). Quantization errors have flat spectra (they are
  /// noise-like: σ_32/σ_1 ≈ 0.8 on tests/data/layer_mid), where that ratio is
  /// close to 1 and q matters. Measured at k = 32, p = 10, excess residual over
  /// the exact SVD's (layer_mid unscaled / mean_abs-scaled / a 1024×2048 uniform
  /// layer): q = 1: 2.6% / 2.3% / 1.0%; q = 2: 1.3% / 1.2% / 0.6%;
  /// q = 3: 0.73% / 0.67% / 0.38%; q = 4: 0.44% / 0.40% / 0.26%. q = 3 is the
  /// smallest that stays within 1% everywhere, at 2q + 2 = 8 passes.
  int power_iterations = 3;
  /// Seed of the Gaussian test matrix.
  std::uint64_t seed = 0x4c514552u;  // "LQER"

  template <linear_operator Op>
  svd_triplets operator()(const Op& op, index_t k) const {
    const index_t m = op.rows(), n = op.cols();
    detail::check_rank(m, n, k, kName);
    if (oversampling < 0 || power_iterations < 0)
      throw value_error("randomized_svd: oversampling and power_iterations must be >= 0");
    const index_t l = std::min(k + oversampling, std::min(m, n));

    Eigen::MatrixXf q = op.multiply(gaussian(n, l));  // [m, l]
    detail::require_finite_product(q, kName);
    detail::orthonormalize(q);
    for (int it = 0; it < power_iterations; ++it) {
      // Re-orthonormalize after every product: in float, σ^(2q+1) would
      // otherwise drive every column toward the top singular vector and lose
      // the rest of the subspace to rounding (HMT Algorithm 4.4).
      Eigen::MatrixXf z = op.multiply_transpose(q);  // [n, l]
      detail::require_finite_product(z, kName);
      detail::orthonormalize(z);
      q = op.multiply(z);
      detail::require_finite_product(q, kName);
      detail::orthonormalize(q);
    }
    // Bᵀ = Mᵀ Q [n, l]; M ≈ Q B = Q Û Σ V̂ᵀ.
    const Eigen::MatrixXd bt = op.multiply_transpose(q).template cast<double>();
    detail::require_finite_product(bt, kName);
    // The thin SVD of bt through its QR: bt = Q_b R (Householder), and the
    // l × l triangle R = U_r Σ V_rᵀ by one-sided Jacobi, so bt = (Q_b U_r) Σ V_rᵀ.
    // Jacobi is accurate to the last bits of every σ on a matrix this small
    // (l ≤ k + p), and compiles to a fraction of Eigen's BDCSVD (+3.5 s
    // against +19 s per translation unit that factorizes: issue #18), which
    // only the exact solver needs.
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(bt);
    const Eigen::MatrixXd tri = qr.matrixQR().topRows(l).template triangularView<Eigen::Upper>();
    const Eigen::JacobiSVD<Eigen::MatrixXd, Eigen::NoQRPreconditioner> small(tri,
                                                                             Eigen::ComputeFullU | Eigen::ComputeFullV);
    if (small.info() != Eigen::Success) throw value_error("randomized_svd: the small SVD did not converge");
    Eigen::MatrixXd left = Eigen::MatrixXd::Zero(n, k);  // bt's top-k left vectors: Q_b [U_r; 0]
    left.topRows(l) = small.matrixU().leftCols(k);
    left.applyOnTheLeft(qr.householderQ());
    // bt = V̂ Σ Ûᵀ: its left vectors are M's right ones, its right vectors rotate Q.
    svd_triplets r;
    r.u = q * small.matrixV().leftCols(k).cast<float>();
    r.s = small.singularValues().head(k).cast<float>();
    r.v = left.cast<float>();
    return r;
  }
  /// The same for a dense float matrix. A template, as every entry point here:
  /// a translation unit that includes this header but never calls a solver
  /// compiles none of Eigen's SVD (issue #18: an inline non-template overload
  /// cost every includer ~15 s and 0.8 GB).
  template <class Derived>
  requires std::same_as<typename Derived::Scalar, float> svd_triplets operator()(const Eigen::MatrixBase<Derived>& m,
                                                                                 index_t k) const {
    return (*this)(dense_operator(m), k);
  }

  /// The n × l standard Gaussian test matrix: mt19937_64 (its output is fixed
  /// by the C++ standard) through Box–Muller written out here, because
  /// std::normal_distribution differs between standard libraries.
  Eigen::MatrixXf gaussian(index_t n, index_t l) const {
    std::mt19937_64 gen(seed);
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    const auto uniform = [&gen] {  // (0, 1]: 53 random bits, never 0 (log below)
      return (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53;
    };
    Eigen::MatrixXf g(n, l);
    float* p = g.data();
    const index_t count = n * l;
    for (index_t i = 0; i < count; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform()));
      const double t = kTwoPi * uniform();
      p[i] = static_cast<float>(r * std::cos(t));
      if (i + 1 < count) p[i + 1] = static_cast<float>(r * std::sin(t));
    }
    return g;
  }
};

/// A solver factorize() accepts: returns the top-k triplets of a linear operator.
template <class S>
concept svd_solver = requires(const S& s, const dense_operator& op, index_t k) {
  { S::kName } -> std::convertible_to<std::string_view>;
  { s(op, k) } -> std::same_as<svd_triplets>;
};

}  // namespace lqer
