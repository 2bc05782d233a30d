// Synthetic data for the factorization tests: layers and activations shaped like
// an LLM's, matrices with a prescribed spectrum, and the rounding constant γ_n
// the tolerances are derived from.
#pragma once

#include <Eigen/Dense>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "lqer/io/npy.hpp"
#include "lqer/tensor/eigen.hpp"

namespace lqer::test {

/// γ_n = n·u / (1 − n·u), the bound on the relative rounding error of an n-term
/// sum or dot product (Higham, Accuracy and Stability, §3.1), u the unit roundoff.
inline double gamma_n(double n, double u) { return n * u / (1.0 - n * u); }
inline constexpr double kUnitFloat = 0x1.0p-24;
inline constexpr double kUnitDouble = 0x1.0p-53;

/// Student-t(ν) weights [out, in] with scale `scale`: heavy-tailed like trained
/// LLM weights (a few large entries per row dominate the 4-bit block exponents).
inline matrix_rm heavy_tailed_weight(index_t out, index_t in, std::uint64_t seed, float nu = 4.0f, float scale = 0.02f) {
  std::mt19937_64 gen(seed);
  std::student_t_distribution<float> t(nu);
  matrix_rm w(out, in);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = scale * t(gen);
  return w;
}

/// Activations [tokens, in]: unit Gaussians with per-channel base scales in
/// [0.5, 1.5], and `outliers` channels (every in/outliers-th) 20–50× larger, as
/// real LLM activations have (LLM.int8(), SmoothQuant).
inline matrix_rm llm_like_activations(index_t tokens, index_t in, index_t outliers, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::mt19937_64 chan(42);  // the channel scales are a property of the layer, not of the batch
  std::uniform_real_distribution<float> base(0.5f, 1.5f), big(20.0f, 50.0f);
  std::vector<float> s(static_cast<std::size_t>(in));
  for (auto& v : s) v = base(chan);
  for (index_t o = 0; o < outliers; ++o) s[static_cast<std::size_t>(o * (in / outliers) + 3)] *= big(chan);
  matrix_rm x(tokens, in);
  for (index_t t = 0; t < tokens; ++t)
    for (index_t c = 0; c < in; ++c) x(t, c) = s[static_cast<std::size_t>(c)] * n01(gen);
  return x;
}

/// A random m × n matrix with orthonormal columns (n ≤ m), from the QR of a Gaussian.
inline Eigen::MatrixXd random_orthonormal(index_t m, index_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> n01;
  Eigen::MatrixXd g(m, n);
  for (index_t i = 0; i < g.size(); ++i) g.data()[i] = n01(gen);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(m, n);
}

/// U diag(sigma) Vᵀ with random orthonormal U [m, r], V [n, r], r = sigma.size().
inline Eigen::MatrixXd with_spectrum(index_t m, index_t n, const Eigen::VectorXd& sigma, std::uint64_t seed) {
  const index_t r = sigma.size();
  return random_orthonormal(m, r, seed) * sigma.asDiagonal() * random_orthonormal(n, r, seed + 1).transpose();
}

inline std::string data_path(const std::string& name) { return std::string(LQER_TEST_DATA_DIR) + "/" + name + ".npy"; }

inline matrix_rm load_matrix(const std::string& name) {
  const io::npy_matrix m = io::read_npy_matrix(data_path(name));
  return Eigen::Map<const matrix_rm>(m.data.data(), m.rows, m.cols);
}

/// ‖a − b‖_F / ‖b‖_F in double.
inline double rel_error(const matrix_rm& a, const matrix_rm& b) {
  return (a.cast<double>() - b.cast<double>()).norm() / b.cast<double>().norm();
}

}  // namespace lqer::test
