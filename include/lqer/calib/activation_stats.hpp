// lqer — calibration statistics of a linear layer's input activations,
// accumulated batch by batch without keeping the activations.
//
// A batch is x [tokens, in] (one row per token, as the layer sees it). Per input
// channel i the accumulator keeps
//
//     Σ_t |x_t[i]|, Σ_t x_t[i]²           over every token seen      (double)
//     max over batches of mean_t |x_t[i]|  the per-batch mean, then a running max
//     R = Σ_t x_t x_tᵀ                     optional (in × in)          (double)
//
// and the token and batch counts. From these: mean |x| over all tokens, RMS,
// E[x xᵀ] = R / tokens, and the statistic the LQER reference uses for L²QER —
// its forward hook takes `x.abs().mean(0)` of each batch it sees and keeps the
// element-wise maximum over batches (statistic_profiler/scale.py). That one is
// *not* a function of the token set alone: it depends on how the tokens were cut
// into batches, which is why it is accumulated per batch and why merge() takes
// the max of the two maxima (exactly what one accumulator fed both batch streams
// would hold — the per-batch means are the same numbers either way).
//
// Why double: a layer sees millions of calibration tokens; float sums of that
// many terms lose ~log2(n) bits, and the Gram matrix is later inverted (square
// root) for the `whiten` policy, where lost bits in small eigenvalues matter.
// Each float input is exact in double, so a sum of n terms is off by at most
// γ_n·Σ|terms| with γ_n = n·2^-53/(1 − n·2^-53): negligible for any n a
// calibration run has. Merging adds partial sums in another order, so merged
// and single accumulators agree to that bound, not bit for bit (the per-batch
// maxima and the counts do agree bit for bit).
//
// Cost per batch: O(tokens·in) for the vectors, O(tokens·in²) for the Gram
// (a symmetric rank update through Eigen, which is why it is opt-in).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/tensor/check.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

/// Whether an activation_stats accumulates the in × in Gram matrix.
enum class gram_mode {
  off,  ///< vectors only: O(in) memory, O(tokens·in) per batch
  on,   ///< also R = Σ x xᵀ: O(in²) memory, O(tokens·in²) per batch (needed by the `whiten` policy)
};

/// Streaming, mergeable statistics of a layer's input activations (see the file comment).
/// A default-constructed accumulator has no input width and no data; `identity`
/// scaling needs nothing more.
class activation_stats {
 public:
  activation_stats() = default;

  /// An empty accumulator for activations with `in_features` channels.
  /// Throws value_error when in_features < 1.
  explicit activation_stats(index_t in_features, gram_mode gram = gram_mode::off)
      : in_(in_features), gram_on_(gram == gram_mode::on) {
    if (in_features < 1)
      throw value_error("activation_stats: in_features must be at least 1, got " + std::to_string(in_features));
    sum_abs_.assign(static_cast<std::size_t>(in_), 0.0);
    sum_sq_.assign(static_cast<std::size_t>(in_), 0.0);
    batch_mean_abs_max_.assign(static_cast<std::size_t>(in_), 0.0);
    if (gram_on_) gram_sum_ = Eigen::MatrixXd::Zero(in_, in_);
  }

  /// Adds one batch x [tokens, in]. The whole batch is checked before anything
  /// is accumulated: a shape_error when it is empty or its width is not
  /// in_features(), a value_error naming the batch, row and column of the first
  /// NaN or ±Inf. On error the accumulator is unchanged.
  void add_batch(matrix_view<const float> x) {
    const std::string what = "activation_stats: batch " + std::to_string(batches_);
    if (in_ == 0) throw shape_error(what + ": the accumulator was default-constructed and has no input width");
    x.validate(what.c_str());
    if (x.cols != in_)
      throw shape_error(what + " has " + std::to_string(x.cols) + " columns, expected " + std::to_string(in_) +
                        " (the layer's input features)");
    require_finite(x, what);

    // Per-batch sums in double, then fold into the totals. The batch mean is
    // computed from this batch's own sum so that it does not depend on what
    // was accumulated before (merge relies on that).
    std::vector<double> b_abs(static_cast<std::size_t>(in_), 0.0);
    for (index_t t = 0; t < x.rows; ++t) {
      const float* row = x.row(t);
      for (index_t i = 0; i < in_; ++i) {
        const double v = row[i];
        b_abs[static_cast<std::size_t>(i)] += std::fabs(v);
        sum_sq_[static_cast<std::size_t>(i)] += v * v;
      }
    }
    // A division, as mean_abs() divides: with a single batch the two statistics are the same bits.
    const double t = static_cast<double>(x.rows);
    for (index_t i = 0; i < in_; ++i) {
      const auto u = static_cast<std::size_t>(i);
      sum_abs_[u] += b_abs[u];
      batch_mean_abs_max_[u] = std::max(batch_mean_abs_max_[u], b_abs[u] / t);
    }
    if (gram_on_) {
      // R += xᵀx, lower triangle only (Eigen's symmetric rank update); the upper
      // triangle is filled in when gram() is read.
      using rm_map = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                                Eigen::OuterStride<>>;
      const rm_map xm(x.data, x.rows, x.cols, Eigen::OuterStride<>(x.row_stride));
      const Eigen::MatrixXd xd = xm.cast<double>();
      gram_sum_.selfadjointView<Eigen::Lower>().rankUpdate(xd.transpose());
    }
    tokens_ += x.rows;
    ++batches_;
  }

  /// Adds one batch given as any Eigen float expression [tokens, in].
  template <class Derived>
  void add_batch(const Eigen::MatrixBase<Derived>& x) {
    const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rm = x.template cast<float>();
    add_batch(matrix_view<const float>(rm.data(), static_cast<index_t>(rm.rows()), static_cast<index_t>(rm.cols())));
  }

  /// Folds `other` into this accumulator: the result is what one accumulator fed
  /// this one's batches and then other's would hold (counts and per-batch maxima
  /// exactly, sums to the rounding bound in the file comment). A default-constructed
  /// accumulator on either side takes the other's shape. Throws shape_error when
  /// the input widths differ or only one of the two accumulates the Gram matrix.
  void merge(const activation_stats& other) {
    if (other.in_ == 0) return;
    if (in_ == 0) {
      *this = other;
      return;
    }
    if (other.in_ != in_)
      throw shape_error("activation_stats::merge: input widths differ (" + std::to_string(in_) + " vs " +
                        std::to_string(other.in_) + ")");
    if (other.gram_on_ != gram_on_)
      throw shape_error("activation_stats::merge: one accumulator keeps the Gram matrix and the other does not");
    for (std::size_t u = 0; u < sum_abs_.size(); ++u) {
      sum_abs_[u] += other.sum_abs_[u];
      sum_sq_[u] += other.sum_sq_[u];
      batch_mean_abs_max_[u] = std::max(batch_mean_abs_max_[u], other.batch_mean_abs_max_[u]);
    }
    if (gram_on_) gram_sum_.triangularView<Eigen::Lower>() += other.gram_sum_;
    tokens_ += other.tokens_;
    batches_ += other.batches_;
  }

  /// Input channels (0 for a default-constructed accumulator).
  index_t in_features() const noexcept { return in_; }
  /// Tokens (rows) added so far.
  std::int64_t tokens() const noexcept { return tokens_; }
  /// Batches added so far (merged ones included).
  std::int64_t batches() const noexcept { return batches_; }
  bool has_gram() const noexcept { return gram_on_; }
  bool empty() const noexcept { return tokens_ == 0; }

  /// max over batches of the per-batch mean |x[i]|: the LQER reference's L²QER statistic.
  std::vector<double> batch_mean_abs_max() const { return batch_mean_abs_max_; }
  /// mean |x[i]| over every token.
  std::vector<double> mean_abs() const { return divided(sum_abs_); }
  /// E[x[i]²] over every token (the diagonal of E[x xᵀ]).
  std::vector<double> mean_square() const { return divided(sum_sq_); }
  /// sqrt(E[x[i]²]).
  std::vector<double> rms() const {
    std::vector<double> v = mean_square();
    for (double& e : v) e = std::sqrt(e);
    return v;
  }
  /// E[x xᵀ] = Σ x xᵀ / tokens, symmetric, [in, in]. Throws value_error when the
  /// Gram matrix was not enabled or no token was added.
  Eigen::MatrixXd gram() const {
    if (!gram_on_)
      throw value_error("activation_stats: the Gram matrix was not accumulated (construct with gram_mode::on)");
    require_tokens("gram");
    Eigen::MatrixXd r = gram_sum_.selfadjointView<Eigen::Lower>();
    r /= static_cast<double>(tokens_);
    return r;
  }

 private:
  void require_tokens(const char* what) const {
    if (tokens_ == 0) throw value_error(std::string("activation_stats: ") + what + " of no tokens (add a batch first)");
  }
  std::vector<double> divided(const std::vector<double>& sums) const {
    require_tokens("a mean");
    std::vector<double> v(sums);
    for (double& e : v) e /= static_cast<double>(tokens_);
    return v;
  }

  index_t in_ = 0;
  bool gram_on_ = false;
  std::int64_t tokens_ = 0;
  std::int64_t batches_ = 0;
  std::vector<double> sum_abs_;
  std::vector<double> sum_sq_;
  std::vector<double> batch_mean_abs_max_;
  Eigen::MatrixXd gram_sum_;  ///< lower triangle of Σ x xᵀ when gram_on_
};

}  // namespace lqer
