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
// Each float input is exact in double, and so are |x|, x² and x_i·x_j (48-bit
// products).
//
// Merged statistics equal single-pass statistics. Calibration may run as N
// jobs whose accumulators are saved (save(), load()) and merged: the result
// must be what one accumulator fed every batch would hold, bit for bit. Each
// batch is first summed on its own, in double, in a fixed order — the vectors
// token by token, the Gram matrix by one single-threaded Eigen GEMM per panel
// of 64 rows (detail::batch_gram_panel) — so a batch's partial sums p_b are
// the same numbers whichever job adds it. The running totals then add those
// partials in double-double: a pair (hi, lo) whose exact sum is the total,
// grown with error-free TwoSum steps (Knuth), with hi = round(hi + lo) kept
// after every step. Adding the partials in another grouping (merge) changes
// only the ~106-bit value hi + lo, by at most about (adds + merges)·2^-104 ·
// Σ_b |p_b|; the statistics read hi, the double nearest that value. Two
// accumulators over the same batches therefore report the same bits unless
// the exact total of the partials lies within that distance of a point
// halfway between two doubles: for N batches, a chance of about N·2^-50 per
// entry (Σ|x| and Σx², whose terms are ≥ 0), N·2^-50·Σ|p_b|/|Σ p_b| for an
// off-diagonal Gram entry. The per-batch maxima and the counts are exact
// anyway. Two provisos: the same partials need the same code and CPU (Eigen's
// GEMM blocks by the CPU's cache sizes and SIMD width, which can change the
// order of a batch's Gram sums; the thread count does not); and a translation
// unit compiled with -ffast-math may optimize TwoSum's correction away, which
// leaves plain double sums (equal to within γ_n·Σ|terms|, n = the adds).
//
// Files (save / load; docs/checkpoint.md, "Calibration statistics"): the
// totals as hi and lo planes, the per-batch maxima and the counts, so that
// merging files is as exact as merging accumulators.
//
// Cost per batch: O(tokens·in) for the vectors, O(tokens·in²/2) for the Gram
// (opt-in) plus O(in²) to fold it into the totals. Memory: O(in) for the
// vectors; the Gram's lower triangle as hi and lo, in² doubles in all (as
// much as a full in × in matrix), plus a 64 × in scratch panel per batch.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/io/lqer_file.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/tensor/check.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

/// Whether an activation_stats accumulates the in × in Gram matrix.
enum class gram_mode {
  off,  ///< vectors only: O(in) memory, O(tokens·in) per batch
  on,   ///< also R = Σ x xᵀ: O(in²) memory, O(tokens·in²) per batch (needed by the `whiten` policy)
};

namespace detail {

// ---------------------------------------------------------------------------
// Double-double sums (see the file comment)

/// a + b = s + e exactly, for any doubles without overflow (Knuth's TwoSum,
/// round to nearest; six operations, no branch, no magnitude condition).
inline void two_sum(double a, double b, double& s, double& e) noexcept {
  s = a + b;
  const double bv = s - a;
  e = (a - (s - bv)) + (b - bv);
}

/// (hi, lo) += p, leaving hi = round(hi + lo).
inline void dd_add(double& hi, double& lo, double p) noexcept {
  double s = 0, e = 0;
  two_sum(hi, p, s, e);
  e += lo;
  two_sum(s, e, hi, lo);
}

/// (hi, lo) += (hi2, lo2), leaving hi = round(hi + lo).
inline void dd_add(double& hi, double& lo, double hi2, double lo2) noexcept {
  double s = 0, e = 0;
  two_sum(hi, hi2, s, e);
  e += lo + lo2;
  two_sum(s, e, hi, lo);
}

/// Rows per Gram panel: the scratch is kGramPanel × in doubles.
inline constexpr index_t kGramPanel = 64;

/// out[j + r1·i'] = Σ_t x[t, j] · x[t, r0 + i'] for j < r1 = r0 + p, i' < p:
/// rows r0 … r0+p−1 of xᵀx up to column r1 (the lower triangle's panel and the
/// upper half of its diagonal block), with x [T, in] column-major (`xd`,
/// leading dimension T). Eigen's single-threaded GEMM kernel: the parallel
/// product picks another depth blocking for more than one thread, which would
/// change the rounding of the sums with the thread count (Eigen 3.4,
/// evaluateProductBlockingSizesHeuristic). `out` (r1 × p, column-major) is
/// overwritten.
inline void batch_gram_panel(const double* xd, index_t tokens, index_t r0, index_t p, double* out) {
  const index_t r1 = r0 + p;
  std::fill(out, out + r1 * p, 0.0);
  using gemm = Eigen::internal::general_matrix_matrix_product<Eigen::Index, double, Eigen::RowMajor, false, double,
                                                              Eigen::ColMajor, false, Eigen::ColMajor, 1>;
  Eigen::internal::gemm_blocking_space<Eigen::ColMajor, double, double, Eigen::Dynamic, Eigen::Dynamic, Eigen::Dynamic>
      blocking(r1, p, tokens, 1, true);
  // lhs(j, t) = x[t, j]: row-major with stride T; rhs(t, i') = x[t, r0 + i']: column-major with stride T.
  gemm::run(r1, p, tokens, xd, tokens, xd + r0 * tokens, tokens, out, 1, r1, 1.0, blocking, nullptr);
}

}  // namespace detail

/// Streaming, mergeable statistics of a layer's input activations (see the file comment).
/// A default-constructed accumulator has no input width and no data; `identity`
/// scaling needs nothing more.
class activation_stats {
 public:
  /// The statistics file schema's name (`lqer.schema`) and version.
  static constexpr std::string_view kSchema = "lqer.activation_stats";
  static constexpr std::uint64_t kSchemaVersion = 1;

  activation_stats() = default;

  /// An empty accumulator for activations with `in_features` channels.
  /// Throws value_error when in_features < 1.
  explicit activation_stats(index_t in_features, gram_mode gram = gram_mode::off)
      : in_(in_features), gram_on_(gram == gram_mode::on) {
    if (in_features < 1)
      throw value_error("activation_stats: in_features must be at least 1, got " + std::to_string(in_features));
    const auto n = static_cast<std::size_t>(in_);
    for (auto* v : {&sum_abs_hi_, &sum_abs_lo_, &sum_sq_hi_, &sum_sq_lo_, &batch_mean_abs_max_}) v->assign(n, 0.0);
    if (gram_on_) {
      gram_hi_.assign(triangle_size(in_), 0.0);
      gram_lo_.assign(triangle_size(in_), 0.0);
    }
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

    // This batch's own sums, token by token, then folded into the totals (see
    // the file comment). The batch mean is computed from this batch's own sum
    // so that it does not depend on what was accumulated before.
    std::vector<double> b_abs(static_cast<std::size_t>(in_), 0.0), b_sq(static_cast<std::size_t>(in_), 0.0);
    for (index_t t = 0; t < x.rows; ++t) {
      const float* row = x.row(t);
      for (index_t i = 0; i < in_; ++i) {
        const double v = row[i];
        b_abs[static_cast<std::size_t>(i)] += std::fabs(v);
        b_sq[static_cast<std::size_t>(i)] += v * v;  // exact product: an FMA gives the same sum
      }
    }
    // A division, as mean_abs() divides: with a single batch the two statistics are the same bits.
    const double t = static_cast<double>(x.rows);
    for (std::size_t u = 0; u < static_cast<std::size_t>(in_); ++u) {
      detail::dd_add(sum_abs_hi_[u], sum_abs_lo_[u], b_abs[u]);
      detail::dd_add(sum_sq_hi_[u], sum_sq_lo_[u], b_sq[u]);
      batch_mean_abs_max_[u] = std::max(batch_mean_abs_max_[u], b_abs[u] / t);
    }
    if (gram_on_) add_batch_gram(x);
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
  /// this one's batches and then other's would hold — the same bits, in practice
  /// (see the file comment for the exact statement). A default-constructed
  /// accumulator on either side takes the other's shape. Throws shape_error
  /// when the input widths differ or only one of the two accumulates the Gram
  /// matrix, value_error when the token count would overflow; then nothing
  /// changes.
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
      throw shape_error(std::string("activation_stats::merge: one accumulator keeps the Gram matrix and the other ") +
                        "does not (gram_mode " + (gram_on_ ? "on" : "off") + " vs " + (other.gram_on_ ? "on" : "off") +
                        ")");
    // Only counts read from files come anywhere near this.
    if (other.tokens_ > std::numeric_limits<std::int64_t>::max() - tokens_)
      throw value_error("activation_stats::merge: the token count " + std::to_string(tokens_) + " + " +
                        std::to_string(other.tokens_) + " overflows 64 bits");
    for (std::size_t u = 0; u < sum_abs_hi_.size(); ++u) {
      detail::dd_add(sum_abs_hi_[u], sum_abs_lo_[u], other.sum_abs_hi_[u], other.sum_abs_lo_[u]);
      detail::dd_add(sum_sq_hi_[u], sum_sq_lo_[u], other.sum_sq_hi_[u], other.sum_sq_lo_[u]);
      batch_mean_abs_max_[u] = std::max(batch_mean_abs_max_[u], other.batch_mean_abs_max_[u]);
    }
    for (std::size_t e = 0; e < gram_hi_.size(); ++e)
      detail::dd_add(gram_hi_[e], gram_lo_[e], other.gram_hi_[e], other.gram_lo_[e]);
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
  std::vector<double> mean_abs() const { return divided(sum_abs_hi_); }
  /// E[x[i]²] over every token (the diagonal of E[x xᵀ]).
  std::vector<double> mean_square() const { return divided(sum_sq_hi_); }
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
    const double n = static_cast<double>(tokens_);
    Eigen::MatrixXd r(in_, in_);
    for (index_t i = 0; i < in_; ++i)
      for (index_t j = 0; j <= i; ++j) r(i, j) = r(j, i) = gram_hi_[static_cast<std::size_t>(tri(i, j))] / n;
    return r;
  }

  // -------------------------------------------------------------------------
  // Files

  /// The statistics as a safetensors file image (docs/checkpoint.md,
  /// "Calibration statistics"): the double-double totals, the per-batch
  /// maxima, the counts, a SHA-256 per tensor. value_error for a
  /// default-constructed accumulator (it has no width).
  std::vector<std::byte> encode() const { return writer().writer().encode(); }
  /// Writes encode()'s bytes to `path` atomically (io/atomic_file.hpp).
  void save(const std::filesystem::path& path) const { writer().writer().write(path); }

  /// Reads a file save() wrote: io_error when it cannot be read, parse_error
  /// naming the file (and the tensor) for malformed content or a checksum
  /// mismatch, unsupported_error for a schema version this lqer does not read.
  static activation_stats load(const std::filesystem::path& path, const io::load_options& options = {}) {
    return load(io::safetensors_file::open(path, options.limits), options);
  }
  /// load() of a file already open (or held in memory).
  static activation_stats load(const io::safetensors_file& f, const io::load_options& options = {}) {
    io::detail::check_schema(f, kSchema, kSchemaVersion, "an lqer statistics file");
    io::detail::check_checksum_keys(f);
    const auto fail = [&](const std::string& what) -> parse_error { return parse_error(f.name() + ": " + what); };
    const auto num = [](double v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      return std::string(buf);
    };
    const auto& md = f.metadata();
    const auto meta = [&](const char* key) -> const std::string& {
      const auto it = md.find(key);
      if (it == md.end()) throw fail(std::string("missing metadata key \"") + key + "\"");
      return it->second;
    };
    for (const auto& [key, value] : md)
      if (key.starts_with("lqer.") && key != io::kSchemaKey && key != io::kSchemaVersionKey &&
          key != io::kWriterVersionKey && !key.starts_with(io::kChecksumPrefix) && key != kInKey && key != kTokensKey &&
          key != kBatchesKey && key != kGramKey)
        throw fail("unknown metadata key " + io::detail::quoted_for_message(key) +
                   " (not in schema version 1 of lqer.activation_stats, docs/checkpoint.md)");
    const auto number = [&](const char* key, std::uint64_t min) {
      const std::string& v = meta(key);
      const auto n = io::detail::parse_decimal(v);
      if (!n || *n < min)
        throw fail(std::string(key) + " is " + io::detail::quoted_for_message(v) +
                   ", not an integer >= " + std::to_string(min));
      return *n;
    };
    const std::uint64_t in = number(kInKey, 1), tokens = number(kTokensKey, 0), batches = number(kBatchesKey, 0);
    const std::string& gram = meta(kGramKey);
    if (gram != "true" && gram != "false")
      throw fail(std::string(kGramKey) + " is " + io::detail::quoted_for_message(gram) + ", not \"true\" or \"false\"");
    if (batches > tokens || (tokens > 0) != (batches > 0))
      throw fail(std::to_string(tokens) + " tokens in " + std::to_string(batches) +
                 " batches: every batch has at least one token");

    // The vectors first: their [in] shapes bound `in` by the file's size
    // before the Gram's in·(in+1)/2 is computed.
    const auto plane = [&](std::string_view name, std::uint64_t n) {
      const io::safetensors_tensor& t = io::detail::required_tensor(f, name, "");
      const std::vector<index_t> shape{static_cast<index_t>(n)};
      io::detail::require_layout(f, t, io::safetensors_dtype::f64, shape, "");
      if (options.verify_checksums) io::detail::verify_checksum(f, t, "");
      std::vector<double> v = t.to_vector<double>();
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!(std::fabs(v[i]) <= kMaxMagnitude))
          throw fail("tensor " + io::detail::quoted_for_message(name) + ": element " + std::to_string(i) + " is " +
                     num(v[i]) + ", not a finite sum of calibration data (|value| <= 2^512)");
      return v;
    };
    activation_stats s;
    s.sum_abs_hi_ = plane("sum_abs.hi", in);
    s.in_ = static_cast<index_t>(in);
    s.gram_on_ = gram == "true";
    s.tokens_ = static_cast<std::int64_t>(tokens);
    s.batches_ = static_cast<std::int64_t>(batches);
    s.sum_abs_lo_ = plane("sum_abs.lo", in);
    s.sum_sq_hi_ = plane("sum_sq.hi", in);
    s.sum_sq_lo_ = plane("sum_sq.lo", in);
    s.batch_mean_abs_max_ = plane("batch_mean_abs_max", in);
    if (s.gram_on_) {
      if (in > (std::uint64_t{1} << 21))
        throw fail(std::string(kInKey) + " " + std::to_string(in) + " is too wide for a stored Gram matrix");
      s.gram_hi_ = plane("gram.hi", triangle_size(s.in_));
      s.gram_lo_ = plane("gram.lo", triangle_size(s.in_));
    } else {
      for (const char* name : {"gram.hi", "gram.lo"})
        if (f.contains(name))
          throw fail(std::string("tensor \"") + name + "\" is present but " + kGramKey + " is \"false\"");
    }
    // What add_batch and merge keep true: totals as normalized pairs, sums and
    // maxima of magnitudes non-negative, nothing accumulated without tokens.
    const auto check_pairs = [&](const std::vector<double>& hi, const std::vector<double>& lo, const char* name,
                                 bool non_negative) {
      for (std::size_t i = 0; i < hi.size(); ++i)
        if (hi[i] + lo[i] != hi[i] || (non_negative && hi[i] < 0) || (tokens == 0 && hi[i] != 0))
          throw fail(std::string("tensors \"") + name + ".hi\" and \"" + name + ".lo\": element " + std::to_string(i) +
                     " (" + num(hi[i]) + ", " + num(lo[i]) +
                     ") is not a total an accumulator can hold (a normalized double-double pair, >= 0 where it "
                     "sums squares or magnitudes, 0 without tokens)");
    };
    check_pairs(s.sum_abs_hi_, s.sum_abs_lo_, "sum_abs", true);
    check_pairs(s.sum_sq_hi_, s.sum_sq_lo_, "sum_sq", true);
    check_pairs(s.gram_hi_, s.gram_lo_, "gram", false);
    if (s.gram_on_)
      for (index_t i = 0; i < s.in_; ++i)
        if (s.gram_hi_[static_cast<std::size_t>(tri(i, i))] < 0)
          throw fail("tensor \"gram.hi\": diagonal entry " + std::to_string(i) + " is negative (a sum of squares)");
    for (std::size_t i = 0; i < s.batch_mean_abs_max_.size(); ++i)
      if (s.batch_mean_abs_max_[i] < 0 || (tokens == 0 && s.batch_mean_abs_max_[i] != 0))
        throw fail("tensor \"batch_mean_abs_max\": element " + std::to_string(i) + " is " +
                   num(s.batch_mean_abs_max_[i]) + ", not a mean of magnitudes");
    return s;
  }

 private:
  static constexpr const char* kInKey = "lqer.stats.in_features";
  static constexpr const char* kTokensKey = "lqer.stats.tokens";
  static constexpr const char* kBatchesKey = "lqer.stats.batches";
  static constexpr const char* kGramKey = "lqer.stats.gram";
  /// Largest magnitude a loaded value may have: far above any real sum (float²
  /// · 2^63 tokens < 2^319), far enough below DBL_MAX that merges cannot overflow.
  static constexpr double kMaxMagnitude = 0x1p512;

  /// Entries of the packed lower triangle of an n × n matrix.
  static std::size_t triangle_size(index_t n) noexcept {
    return static_cast<std::size_t>(n) * static_cast<std::size_t>(n + 1) / 2;
  }
  /// Position of (i, j), j ≤ i, in the packed lower triangle (row after row).
  static index_t tri(index_t i, index_t j) noexcept { return i * (i + 1) / 2 + j; }
  void add_batch_gram(matrix_view<const float> x) {
    using rm_map = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                              Eigen::OuterStride<>>;
    const rm_map xm(x.data, x.rows, x.cols, Eigen::OuterStride<>(x.row_stride));
    const Eigen::MatrixXd xd = xm.cast<double>();  // [T, in], column-major
    std::vector<double> panel(static_cast<std::size_t>(std::min(detail::kGramPanel, in_) * in_));
    for (index_t r0 = 0; r0 < in_; r0 += detail::kGramPanel) {
      const index_t p = std::min(detail::kGramPanel, in_ - r0), r1 = r0 + p;
      detail::batch_gram_panel(xd.data(), x.rows, r0, p, panel.data());
      for (index_t ii = 0; ii < p; ++ii) {
        const index_t i = r0 + ii;
        const double* col = panel.data() + ii * r1;  // entries (i, j) for j < r1
        const auto base = static_cast<std::size_t>(tri(i, 0));
        for (index_t j = 0; j <= i; ++j)
          detail::dd_add(gram_hi_[base + static_cast<std::size_t>(j)], gram_lo_[base + static_cast<std::size_t>(j)],
                         col[j]);
      }
    }
  }

  io::detail::lqer_file_writer writer() const {
    if (in_ == 0)
      throw value_error("activation_stats: a default-constructed accumulator has no input width and cannot be saved");
    io::detail::lqer_file_writer w(kSchema, static_cast<int>(kSchemaVersion));
    w.set_metadata(kInKey, std::to_string(in_));
    w.set_metadata(kTokensKey, std::to_string(tokens_));
    w.set_metadata(kBatchesKey, std::to_string(batches_));
    w.set_metadata(kGramKey, gram_on_ ? "true" : "false");
    const std::vector<index_t> vec{in_}, tri_shape{static_cast<index_t>(gram_hi_.size())};
    w.add<double>("sum_abs.hi", vec, sum_abs_hi_);
    w.add<double>("sum_abs.lo", vec, sum_abs_lo_);
    w.add<double>("sum_sq.hi", vec, sum_sq_hi_);
    w.add<double>("sum_sq.lo", vec, sum_sq_lo_);
    w.add<double>("batch_mean_abs_max", vec, batch_mean_abs_max_);
    if (gram_on_) {
      w.add<double>("gram.hi", tri_shape, gram_hi_);
      w.add<double>("gram.lo", tri_shape, gram_lo_);
    }
    return w;
  }

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
  // Totals as double-double pairs (hi, lo): see the file comment.
  std::vector<double> sum_abs_hi_, sum_abs_lo_;
  std::vector<double> sum_sq_hi_, sum_sq_lo_;
  std::vector<double> batch_mean_abs_max_;
  std::vector<double> gram_hi_, gram_lo_;  ///< packed lower triangle of Σ x xᵀ, row after row, when gram_on_
};

}  // namespace lqer
