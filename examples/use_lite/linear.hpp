// use_lite — the one interface every linear layer of the engine goes through,
// and its fp32 implementation. The quantized (lqer) implementation is in
// quantize.hpp.
//
// USE-lite has 10 linear layers (layer 0: qkv, attention output, the `dense`
// residual projection, FFN conv1, conv2; layer 1: qkv, attention output, FFN
// conv1, conv2; the final tanh layer). The engine only ever calls
// linear_op::forward, so swapping fp32 for W4A8 is swapping the 10 objects.
#pragma once

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <lqer/config.hpp>
#include <lqer/error.hpp>
#include <lqer/tensor/view.hpp>
#include <memory>
#include <string>
#include <vector>

#include "thread_pool.hpp"

namespace use_lite {

using lqer::index_t;

/// The 10 linear layers, in the order the forward pass meets them.
enum class linear_id : int {
  l0_qkv,
  l0_attn_out,
  l0_dense,
  l0_ffn1,
  l0_ffn2,
  l1_qkv,
  l1_attn_out,
  l1_ffn1,
  l1_ffn2,
  tanh,
};
inline constexpr int kNumLinears = 10;

inline const char* linear_name(int id) noexcept {
  static constexpr const char* kNames[kNumLinears] = {"l0.qkv", "l0.attn_out", "l0.dense", "l0.ffn1", "l0.ffn2",
                                                      "l1.qkv", "l1.attn_out", "l1.ffn1",  "l1.ffn2", "tanh"};
  return id >= 0 && id < kNumLinears ? kNames[id] : "?";
}

/// Rows per work item when a linear layer is split over threads. A fixed
/// size, not "rows / threads": each row's arithmetic is then the same for any
/// thread count, so results are bit-identical on 1 and 2 threads.
inline constexpr index_t kRowsPerTask = 16;
/// The same for the fp32 layers: Eigen's GEMM packs all of W for every call,
/// O(in·out) copies, so a call needs enough rows (≥ 128) to amortize that.
inline constexpr index_t kFp32RowsPerTask = 128;

/// y [M, out] = x [M, in] · W + b, for some representation of W.
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
};

using linear_set = std::array<std::unique_ptr<const linear_op>, kNumLinears>;

/// A dense layer as TF.js stores it: W [in, out] row-major, so y = x·W + b.
struct dense_weights {
  index_t in = 0, out = 0;
  std::vector<float> w;  ///< [in, out]
  std::vector<float> b;  ///< [out]
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

/// The fp32 reference: Eigen's GEMM on each chunk of rows.
class fp32_linear final : public linear_op {
 public:
  /// Keeps `w` alive through the shared pointer's owner (`keep`).
  fp32_linear(std::shared_ptr<const void> keep, const dense_weights& w) : keep_(std::move(keep)), w_(w) {}

  index_t in_features() const noexcept override { return w_.in; }
  index_t out_features() const noexcept override { return w_.out; }
  std::size_t storage_bytes() const noexcept override { return (w_.w.size() + w_.b.size()) * sizeof(float); }
  std::string describe() const override { return "fp32"; }

  void forward(lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const override {
    detail::check_linear_shapes(*this, x, y);
    using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using stride = Eigen::OuterStride<>;
    const Eigen::Map<const rm> W(w_.w.data(), w_.in, w_.out);
    const Eigen::Map<const Eigen::RowVectorXf> b(w_.b.data(), w_.out);
    detail::for_row_chunks(
        x.rows, pool,
        [&](index_t r0, index_t rows) {
          const Eigen::Map<const rm, 0, stride> X(x.row(r0), rows, x.cols, stride(x.row_stride));
          Eigen::Map<rm, 0, stride> Y(y.row(r0), rows, y.cols, stride(y.row_stride));
          Y.noalias() = X * W;
          Y.rowwise() += b;
        },
        kFp32RowsPerTask);
  }

 private:
  std::shared_ptr<const void> keep_;
  const dense_weights& w_;
};

}  // namespace use_lite
