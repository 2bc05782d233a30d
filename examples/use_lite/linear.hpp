// use_lite — the 10 linear layers of USE-lite. The interface every one of
// them goes through (linear_op), its fp32 implementation and its lqer one are
// shared with the llama engine: examples/common/linear.hpp and
// examples/common/lqer_linear.hpp.
//
// USE-lite has 10 linear layers (layer 0: qkv, attention output, the `dense`
// residual projection, FFN conv1, conv2; layer 1: qkv, attention output, FFN
// conv1, conv2; the final tanh layer). The engine only ever calls
// linear_op::forward, so swapping fp32 for W4A8 is swapping the 10 objects.
#pragma once

#include <array>
#include <memory>

#include "common/linear.hpp"
#include "common/thread_pool.hpp"

namespace use_lite {

using engine::dense_weights;
using engine::fp32_linear;
using engine::index_t;
using engine::kFp32RowsPerTask;
using engine::kRowsPerTask;
using engine::linear_op;
using engine::thread_pool;
namespace detail {
using engine::detail::check_linear_shapes;
using engine::detail::for_row_chunks;
}  // namespace detail

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

using linear_set = std::array<std::unique_ptr<const linear_op>, kNumLinears>;

}  // namespace use_lite
