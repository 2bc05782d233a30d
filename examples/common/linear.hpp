// engine — the one interface every linear layer of the example engines goes
// through, and its fp32 implementation. Shared by use_lite (USE-lite, 10
// layers, TF.js's [in, out] kernels with a bias) and llama (Llama, 7 layers per
// block, GGUF's / nn.Linear's [out, in] weights, no bias): both engines only
// ever call linear_op::forward, so swapping fp32 for W4A8 is swapping objects.
// The lqer implementation is in lqer_linear.hpp.
//
// What is shared and what is not: the interface, the fp32 GEMM, the shape
// check and the fixed chunking that makes results independent of the thread
// count live here; which layers a model has (use_lite::linear_id, the llama
// block's seven) stays with each engine.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <lqer/config.hpp>
#include <lqer/error.hpp>
#include <lqer/tensor/view.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "thread_pool.hpp"

namespace lqer::io {
class checkpoint_writer;
}

namespace engine {

using lqer::index_t;

/// Rows per work item when a linear layer is split over threads. A fixed
/// size, not "rows / threads": each row's arithmetic is then the same for any
/// thread count, so results are bit-identical on 1 and 2 threads.
inline constexpr index_t kRowsPerTask = 16;
/// The same for the fp32 layers: Eigen's GEMM packs all of W for every call,
/// O(in·out) copies, so a call needs enough rows (≥ 128) to amortize that.
inline constexpr index_t kFp32RowsPerTask = 128;
/// Below kFp32RowsPerTask rows (a decoder's token-by-token step has M = 1) a
/// row split leaves one task: the fp32 layer then splits the outputs into
/// column blocks of this width instead (each block of W is packed once per
/// call either way). The split depends on M and the shape only.
inline constexpr index_t kFp32ColsPerTask = 128;

/// y [M, out] = x [M, in] · Wᵀ + b, for some representation of W.
class linear_op {
 public:
  virtual ~linear_op() = default;
  virtual index_t in_features() const noexcept = 0;
  virtual index_t out_features() const noexcept = 0;
  /// Rows of x are independent; the caller's pool runs the work.
  virtual void forward(lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const = 0;
  /// Bytes of the parameters as this implementation stores them.
  virtual std::size_t storage_bytes() const noexcept = 0;
  /// One line: the representation ("fp32", "mxint4_b16_lqer rank 32 whiten", …).
  virtual std::string describe() const = 0;
  /// Adds the layer to an LQER checkpoint as `name` (lqer/io/checkpoint.hpp).
  /// Only quantized layers are stored: a float one is a value_error.
  virtual void add_to(lqer::io::checkpoint_writer& /*w*/, std::string name) const {
    throw lqer::value_error("layer " + name + " is " + describe() + ": only lqer layers go into a checkpoint");
  }
};

/// How a float weight is laid out in memory.
enum class weight_layout {
  in_out,  ///< W [in, out] row-major (TF.js's kernels): y = x·W
  out_in,  ///< W [out, in] row-major (nn.Linear, GGUF's ne = {in, out}): y = x·Wᵀ
};

/// A dense float layer.
struct dense_weights {
  index_t in = 0, out = 0;
  std::vector<float> w;  ///< in·out values in `layout`
  std::vector<float> b;  ///< [out], or empty for no bias
  weight_layout layout = weight_layout::in_out;

  /// W [out, in] row-major (what lqer::factorize takes), whatever `layout` is.
  std::vector<float> out_in() const {
    if (layout == weight_layout::out_in) return w;
    std::vector<float> t(w.size());
    for (index_t i = 0; i < in; ++i)
      for (index_t o = 0; o < out; ++o) t[o * in + i] = w[i * out + o];
    return t;
  }
};

namespace detail {
inline void check_linear_shapes(const linear_op& op, lqer::matrix_view<const float> x, lqer::matrix_view<float> y) {
  x.validate("linear: x");
  y.validate("linear: y");
  if (x.cols != op.in_features() || y.cols != op.out_features() || y.rows != x.rows)
    throw lqer::shape_error("linear (" + op.describe() + "): x is " + std::to_string(x.rows) + "x" +
                            std::to_string(x.cols) + " and y " + std::to_string(y.rows) + "x" + std::to_string(y.cols) +
                            " for a " + std::to_string(op.in_features()) + " -> " + std::to_string(op.out_features()) +
                            " layer");
}

/// Runs body(row0, rows) over [0, M) in chunks of `chunk` rows on the pool.
template <class Body>
void for_row_chunks(index_t M, thread_pool& pool, const Body& body, index_t chunk = kRowsPerTask) {
  const index_t tasks = (M + chunk - 1) / chunk;
  pool.parallel_for(tasks, [&](index_t t0, index_t t1) {
    for (index_t t = t0; t < t1; ++t) {
      const index_t r0 = t * chunk;
      body(r0, std::min(chunk, M - r0));
    }
  });
}
}  // namespace detail

/// The fp32 reference: Eigen's GEMM on each tile of rows × output columns.
class fp32_linear final : public linear_op {
 public:
  /// Keeps `w` alive through the shared pointer's owner (`keep`).
  fp32_linear(std::shared_ptr<const void> keep, const dense_weights& w) : keep_(std::move(keep)), w_(w) {
    if (w.in <= 0 || w.out <= 0 || w.w.size() != static_cast<std::size_t>(w.in * w.out) ||
        (!w.b.empty() && w.b.size() != static_cast<std::size_t>(w.out)))
      throw lqer::shape_error("fp32_linear: " + std::to_string(w.w.size()) + " weights and " +
                              std::to_string(w.b.size()) + " biases for a " + std::to_string(w.in) + " -> " +
                              std::to_string(w.out) + " layer");
  }

  index_t in_features() const noexcept override { return w_.in; }
  index_t out_features() const noexcept override { return w_.out; }
  std::size_t storage_bytes() const noexcept override { return (w_.w.size() + w_.b.size()) * sizeof(float); }
  std::string describe() const override { return "fp32"; }

  void forward(lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const override {
    detail::check_linear_shapes(*this, x, y);
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using cm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    // Both layouts are the same [in, out] matrix to Eigen: [out, in] row-major
    // is [in, out] column-major.
    if (w_.layout == weight_layout::in_out)
      run(Eigen::Map<const rm>(w_.w.data(), w_.in, w_.out), x, y, pool);
    else
      run(Eigen::Map<const cm>(w_.w.data(), w_.in, w_.out), x, y, pool);
  }

 private:
  template <class WMap>
  void run(const WMap& W, lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const {
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using stride = Eigen::OuterStride<>;
    const index_t M = x.rows, N = w_.out;
    const index_t col_chunk = M >= kFp32RowsPerTask ? N : std::min(N, kFp32ColsPerTask);
    const index_t row_tasks = (M + kFp32RowsPerTask - 1) / kFp32RowsPerTask;
    const index_t col_tasks = (N + col_chunk - 1) / col_chunk;
    pool.parallel_for(row_tasks * col_tasks, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const index_t r0 = (t / col_tasks) * kFp32RowsPerTask, c0 = (t % col_tasks) * col_chunk;
        const index_t rows = std::min(kFp32RowsPerTask, M - r0), cols = std::min(col_chunk, N - c0);
        const Eigen::Map<const rm, 0, stride> X(x.row(r0), rows, x.cols, stride(x.row_stride));
        Eigen::Map<rm, 0, stride> Y(y.row(r0) + c0, rows, cols, stride(y.row_stride));
        Y.noalias() = X * W.middleCols(c0, cols);
        if (!w_.b.empty()) Y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(w_.b.data() + c0, cols);
      }
    });
  }

  std::shared_ptr<const void> keep_;
  const dense_weights& w_;
};

}  // namespace engine
