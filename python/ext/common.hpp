// lqer Python package — what the extension's sources share: arrays in and
// out, the thread pool, and the type-erased layer and linear objects.
//
// Formats are C++ types; Python names them at run time. A factorized or loaded
// layer is a layer_impl<W, Lr> behind the layer_base interface, and a fused
// kernel a linear_impl<W, Lr, Act> behind linear_base. Which combinations exist
// is the lqer program's closed list (tools/lqer/layer_dir.hpp: W mxint2/3/4/8,
// A/B mxint8, each OCP or LQER rule, block 16 or 32), so the two front ends
// accept the same formats. Each block length's instantiations live in their own
// source file (layers_b16.cpp, linear_b32.cpp, …).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/exec/thread_pool.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/io/checkpoint.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "layer_dir.hpp"

namespace lqer::py {

namespace nb = nanobind;

// ---------------------------------------------------------------------------
// Arrays

/// Any float32 CPU array (numpy, or torch and others through DLPack): the
/// Python layer reshapes to 2-D before calling in.
using f32_in = nb::ndarray<const float, nb::device::cpu>;
template <class T>
using numpy_out = nb::ndarray<nb::numpy, T>;

/// `a` [d0, …, dn-2, cols] as the matrix [d0·…·dn-2, cols] (a 1-D array is
/// one row): viewed without a copy when its rows are evenly spaced with
/// contiguous elements (e.g. a C-contiguous array, or a column slice of one),
/// copied into `storage` otherwise. `lead` receives d0 … dn-2 (the shape of
/// a result with one row per input row). `what` names the argument in errors.
inline matrix_view<const float> as_rows(const f32_in& a, std::vector<float>& storage, const char* what,
                                        std::vector<std::size_t>* lead = nullptr) {
  const std::size_t nd = a.ndim();
  if (nd == 0) throw shape_error(std::string(what) + ": expected an array with at least one dimension, got a scalar");
  const auto cols = static_cast<index_t>(a.shape(nd - 1));
  index_t rows = 1;
  for (std::size_t i = 0; i + 1 < nd; ++i) rows *= static_cast<index_t>(a.shape(i));
  if (lead) lead->assign(a.shape_ptr(), a.shape_ptr() + nd - 1);
  // Even spacing: walking the leading dims in C order, each step adds the
  // same stride (dims of extent 1 do not move).
  bool even = cols <= 1 || a.stride(nd - 1) == 1;
  std::int64_t row_stride = cols, expect = -1;
  for (std::size_t i = nd - 1; even && i-- > 0;) {
    if (a.shape(i) == 1) continue;
    if (expect < 0) {
      row_stride = a.stride(i);
      expect = a.stride(i) * static_cast<std::int64_t>(a.shape(i));
    } else if (a.stride(i) != expect) {
      even = false;
    } else {
      expect *= static_cast<std::int64_t>(a.shape(i));
    }
  }
  if (even && (rows <= 1 || row_stride >= cols))
    return matrix_view<const float>(a.data(), rows, cols, rows <= 1 ? cols : static_cast<index_t>(row_stride));
  // A copy, element by element in C order (an odometer over the dims).
  storage.resize(static_cast<std::size_t>(rows * cols));
  std::vector<std::size_t> idx(nd, 0);
  for (std::size_t k = 0; k < storage.size(); ++k) {
    std::int64_t off = 0;
    for (std::size_t i = 0; i < nd; ++i) off += static_cast<std::int64_t>(idx[i]) * a.stride(i);
    storage[k] = a.data()[off];
    for (std::size_t i = nd; i-- > 0;) {
      if (++idx[i] < a.shape(i)) break;
      idx[i] = 0;
    }
  }
  return matrix_view<const float>(storage.data(), rows, cols);
}

/// as_rows for an argument that must be 2-D (a weight matrix).
inline matrix_view<const float> as_matrix(const f32_in& a, std::vector<float>& storage, const char* what) {
  if (a.ndim() != 2)
    throw shape_error(std::string(what) + ": expected a 2-D array, got " + std::to_string(a.ndim()) + " dimensions");
  return as_rows(a, storage, what);
}

/// A numpy array that owns `v` (moved to the heap; freed with the array).
template <class T>
numpy_out<T> to_numpy(std::vector<T> v, const std::vector<std::size_t>& shape) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return numpy_out<T>(heap->data(), shape.size(), shape.data(), owner);
}

// ---------------------------------------------------------------------------
// Threads

/// The pool the fused kernels run on (created on first use with the
/// hardware's concurrency; set_num_threads replaces it). Safe for several
/// Python threads at once: thread_pool_executor serializes its callers.
thread_pool_executor& pool();
void set_num_threads(int n);
int num_threads();

// ---------------------------------------------------------------------------
// Layers

/// A factorized or loaded layer, its format types erased.
struct layer_base {
  virtual ~layer_base() = default;
  virtual std::string weight_format() const = 0;   ///< Format::name(), e.g. "mxint4_b16_lqer"
  virtual std::string lowrank_format() const = 0;  ///< of A and B
  virtual int block() const = 0;
  /// The activation format name Linear uses when none is given ("mxint8"; "q8_0" for llama.cpp's layers).
  virtual std::string default_activation() const = 0;
  virtual index_t in_features() const = 0;
  virtual index_t out_features() const = 0;
  virtual index_t rank() const = 0;
  virtual std::vector<float> wq() const = 0;  ///< deq(Wq) [out, in]
  virtual std::vector<float> a() const = 0;   ///< deq(A) [in, k]
  virtual std::vector<float> b() const = 0;   ///< deq(B) [k, out]
  virtual const std::vector<float>& bias() const = 0;
  virtual std::size_t storage_bytes() const = 0;
  virtual void add_to(io::checkpoint_writer& w, const std::string& name) const = 0;

  /// What factorize() reported; empty for a layer read from a file.
  std::optional<factorize_report> report;
  std::vector<float> scale;  ///< the diagonal policy's s [in]; empty for whiten or a loaded layer
  io::layer_info info;       ///< policy and solver names (stored with the layer)
};

template <class W, class Lr>
struct layer_impl final : layer_base {
  lqer_layer<W, Lr> layer;

  explicit layer_impl(lqer_layer<W, Lr> l) : layer(std::move(l)) {}
  std::string weight_format() const override { return W::name(); }
  std::string lowrank_format() const override { return Lr::name(); }
  int block() const override { return W::kBlock; }
  std::string default_activation() const override { return cli::default_activation_name<W, Lr>(); }
  index_t in_features() const override { return layer.in_features(); }
  index_t out_features() const override { return layer.out_features(); }
  index_t rank() const override { return layer.rank(); }
  std::vector<float> wq() const override { return layer.wq.dequantize(); }
  std::vector<float> a() const override { return layer.rank() ? layer.a.dequantize() : std::vector<float>{}; }
  std::vector<float> b() const override { return layer.rank() ? layer.b.dequantize() : std::vector<float>{}; }
  const std::vector<float>& bias() const override { return layer.bias; }
  std::size_t storage_bytes() const override { return layer.storage_bytes(); }
  void add_to(io::checkpoint_writer& w, const std::string& name) const override { w.add(name, layer, info); }
};

/// What factorize() takes from Python besides W and the statistics.
struct factorize_args {
  index_t rank = 32;
  std::string policy = "mean_abs", solver = "randomized";
  cli::mx_spec w, lr;  ///< formats (the block is w.block; lr.block must equal it)
  double damping = 1e-4;
  std::string whiten_factorization = "cholesky";
  index_t oversampling = randomized_svd{}.oversampling;  // the library's defaults
  int power_iterations = randomized_svd{}.power_iterations;
  std::vector<float> bias;
};

/// The package's closed list of layer formats is the `lqer` CLI's
/// (tools/lqer/layer_dir.hpp): its MX subsets, and the format table's
/// llama.cpp layers (Q4_0 or Q4_1 weights with Q8_0 A/B and activations).
using cli::with_activation_format;
using cli::with_layer_formats;

/// The format spec of a stored layer's format name (Format::name(): "mxint4_b16_lqer", "int4_g32_sext_f16").
inline cli::mx_spec spec_from_stored_name(const std::string& name, const std::string& where) {
  return cli::mx_spec_from_name(name, where);
}

// One per block length (layers_b16.cpp, layers_b32.cpp).
template <int Block>
std::shared_ptr<layer_base> factorize_block(matrix_view<const float> w, const activation_stats& stats,
                                            const factorize_args& args);
/// nullptr when the stored formats are not in the list for this block.
template <int Block>
std::shared_ptr<layer_base> load_block(const io::checkpoint_file& f, const io::checkpoint_layer& info);

// ---------------------------------------------------------------------------
// Linear

/// A layer packed for the fused kernel (or run by the scalar reference).
struct linear_base {
  virtual ~linear_base() = default;
  virtual index_t in_features() const = 0;
  virtual index_t out_features() const = 0;
  virtual std::string activation_format() const = 0;
  /// y [M, out] = the layer on x [M, in]; the caller has released the GIL.
  virtual void forward(matrix_view<const float> x, matrix_view<float> y) const = 0;
};

/// How a Linear computes: the fused kernel, or reference_forward with the
/// fused semantics (bit for bit what the kernel computes) or the paper's.
enum class linear_mode { kernel, reference_fused, reference_paper };

/// The Linear for `layer` with activations `act_format` — mxint8 or mxint4 of
/// the weight's block and rule for MX weights, the activations of the format
/// table's llama.cpp layer (q8_0) for q4_0 and q4_1 weights;
/// nullptr when layer is not of this block (linear_b16.cpp, …).
template <int Block>
std::shared_ptr<linear_base> make_linear_block(const std::shared_ptr<const layer_base>& layer,
                                               const std::string& act_format, linear_mode mode);

}  // namespace lqer::py
