// lqer — LQER checkpoints: quantized layers in one safetensors file, loaded
// without re-quantizing or re-factorizing anything.
//
// The schema ("lqer.checkpoint", version 1; docs/checkpoint.md is the full
// description, with a numpy decoder). Each layer `<name>` is stored as its
// quantized_matrix parts, exactly as the container holds them in memory:
//
//   <name>.wq.codes    U8  [lanes, lane_code_bytes]   Wq [out, in], blocks along in (lane = row)
//   <name>.wq.scales   the format's scale dtype [lanes, blocks_per_lane]
//   <name>.wq.zeros    I8  [lanes, blocks_per_lane]   only for formats with a zero point
//   <name>.wq.mins     the scale dtype [lanes, blocks_per_lane]  only for formats with a block minimum (Q4_1)
//   <name>.a.*         A [in, k], blocks down its columns (lane = column): absent at rank 0
//   <name>.b.*         B [k, out], likewise
//   <name>.bias        F32 [out]                      absent without a bias
//
// The scale dtype is the format's own (format/format.hpp, storable_format):
// F8_E8M0 for mxint, F32 or F16 for intq (q4_0, q8_0 included), and I8 zero
// points for the asymmetric scheme. Codes are the packed bytes: two's
// complement, two per byte (element 2j in the low nibble) for formats of at
// most 4 bits, else one per byte; padding codes (a depth that is not a whole
// number of blocks) are stored and must be 0. `__metadata__` carries, besides
// what every lqer file has (io/lqer_file.hpp: schema, version, lqer version,
// lqer.sha256.<tensor>), per layer under `lqer.layer.<name>.`:
//
//   weight_format, lowrank_format   Format::name(): "mxint4_b16_lqer", "int4_g128_asym_f16"
//   out_features, in_features, rank decimal integers
//   bias                            "true" or "false"
//   weight_axis, lowrank_axis       "cols" and "rows" (the blocking of lqer_layer)
//   policy, solver                  optional: what the writer passed in layer_info
//
// Keys outside "lqer." are the application's (checkpoint_writer::set_metadata)
// and tensors that belong to no layer are the application's too
// (checkpoint_writer::add_tensor: embeddings, norms), checksummed like the rest.
//
// Reading is strict, as for every file lqer reads: checkpoint_file::open
// checks the schema, every lqer metadata key (an unknown one is an error: a
// file two readers could read differently is not one to load), every layer's
// tensors (present when the metadata says so, absent otherwise, 2-D with one
// lane per row/column) and that every tensor has a checksum. load<W, Lr>()
// then checks the layer's formats against W and Lr (value_error naming both),
// every tensor's dtype and exact shape, its SHA-256 (unless turned off), and
// the codes, scales and zero points themselves (quantized_matrix::from_codes:
// what an encoder could not have produced is refused). Errors name the file,
// the layer and the tensor.
//
// Bit-exactness: the codes and scale records are copied, not re-encoded, so a
// loaded layer is the saved one bit for bit and pack() of it is the same
// packed layer (tests/io/test_checkpoint.cpp runs linear() on both).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/format.hpp"
#include "lqer/io/lqer_file.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer::io {

/// The checkpoint schema's name (`lqer.schema`) and the version this lqer writes and reads.
inline constexpr std::string_view kCheckpointSchema = "lqer.checkpoint";
inline constexpr std::uint64_t kCheckpointSchemaVersion = 1;
/// Prefix of the per-layer metadata keys: `lqer.layer.<name>.<field>`.
inline constexpr std::string_view kLayerPrefix = "lqer.layer.";

/// What a writer may record about how a layer was made (optional; empty = not recorded).
struct layer_info {
  std::string policy;  ///< the scale policy, e.g. "whiten"
  std::string solver;  ///< the SVD solver, e.g. "randomized"
};

/// One layer of a checkpoint as its metadata and tensors describe it, without
/// knowing its format types (what `lqer inspect` prints).
struct checkpoint_layer {
  std::string name;
  std::string weight_format;   ///< Format::name() of Wq
  std::string lowrank_format;  ///< Format::name() of A and B
  index_t out_features = 0;
  index_t in_features = 0;
  index_t rank = 0;
  bool has_bias = false;
  std::string policy, solver;        ///< "" when the writer recorded none
  std::vector<std::string> tensors;  ///< the layer's tensors in the file
  std::uint64_t weight_bytes = 0;    ///< bytes of Wq's codes, scales and zero points
  std::uint64_t lowrank_bytes = 0;   ///< bytes of A's and B's
  std::uint64_t bias_bytes = 0;

  /// Bits per weight of Wq + A + B (codes and block scales; the bias is not a
  /// weight), over out · in weights — as the engines' tables count them.
  double bits_per_weight() const noexcept {
    return 8.0 * double(weight_bytes + lowrank_bytes) / (double(in_features) * double(out_features));
  }
};

namespace detail {

// The metadata fields of a layer (`lqer.layer.<name>.<field>`).
inline constexpr std::string_view kLayerFields[] = {"weight_format", "lowrank_format", "out_features", "in_features",
                                                    "rank",          "bias",           "weight_axis",  "lowrank_axis",
                                                    "policy",        "solver"};
inline constexpr std::string_view kLayerRequiredFields[] = {
    "weight_format", "lowrank_format", "out_features", "in_features", "rank", "bias", "weight_axis", "lowrank_axis"};
// The matrices of a layer, in the tensor names: `<name>.<part>.<codes|scales|zeros|mins>`.
inline constexpr std::string_view kMatrixParts[] = {"wq", "a", "b"};
inline constexpr std::string_view kMatrixTensors[] = {"codes", "scales", "zeros", "mins"};
/// The planes only some formats have (zero points, block minima).
inline bool optional_plane(std::string_view what) noexcept { return what == "zeros" || what == "mins"; }

inline std::string layer_key(std::string_view layer, std::string_view field) {
  std::string k(kLayerPrefix);
  k += layer;
  k += '.';
  k += field;
  return k;
}
inline std::string layer_tensor(std::string_view layer, std::string_view part, std::string_view what) {
  std::string t(layer);
  t += '.';
  t += part;
  if (!what.empty()) {
    t += '.';
    t += what;
  }
  return t;
}
inline std::string layer_context(std::string_view layer) { return "layer " + quoted_for_message(layer); }

inline const char* axis_name(block_axis a) noexcept { return a == block_axis::cols ? "cols" : "rows"; }

/// Tensor names of matrix `part` of a layer in format F (zero points and minima when F has them).
template <class F>
std::vector<std::string> matrix_tensor_names(std::string_view layer, std::string_view part) {
  std::vector<std::string> v{layer_tensor(layer, part, "codes"), layer_tensor(layer, part, "scales")};
  if (F::kHasZeroPoint) v.push_back(layer_tensor(layer, part, "zeros"));
  if (F::kHasMin) v.push_back(layer_tensor(layer, part, "mins"));
  return v;
}

/// The bytes a checkpoint stores for one quantized matrix: the codes as they
/// are, the scale records split by the format into scale and zero-point planes.
template <storable_format F>
struct stored_matrix {
  std::vector<typename F::stored_scale> scales;
  std::vector<std::int8_t> zeros;              ///< F::kHasZeroPoint only
  std::vector<typename F::stored_scale> mins;  ///< F::kHasMin only

  explicit stored_matrix(const quantized_matrix<F>& m) {
    const auto s = m.scales();
    scales.reserve(s.size());
    for (const auto& r : s) scales.push_back(F::store_scale(r));
    if constexpr (F::kHasZeroPoint) {
      zeros.reserve(s.size());
      for (const auto& r : s) zeros.push_back(F::store_zero(r));
    }
    if constexpr (F::kHasMin) {
      mins.reserve(s.size());
      for (const auto& r : s) mins.push_back(F::store_min(r));
    }
  }
};

/// Adds matrix `m` as `<layer>.<part>.*` to `w`; `keep` holds the scale
/// planes until the file is written.
template <storable_format F>
void add_matrix(lqer_file_writer& w, std::list<std::shared_ptr<const void>>& keep, const std::string& layer,
                std::string_view part, const quantized_matrix<F>& m) {
  auto planes = std::make_shared<const stored_matrix<F>>(m);
  const std::vector<index_t> code_shape{m.lanes(), m.lane_code_bytes()}, scale_shape{m.lanes(), m.blocks_per_lane()};
  w.add(layer_tensor(layer, part, "codes"), code_shape, m.codes());
  w.add(layer_tensor(layer, part, "scales"), scale_shape, std::span<const typename F::stored_scale>(planes->scales));
  if constexpr (F::kHasZeroPoint)
    w.add(layer_tensor(layer, part, "zeros"), scale_shape, std::span<const std::int8_t>(planes->zeros));
  if constexpr (F::kHasMin)
    w.add(layer_tensor(layer, part, "mins"), scale_shape, std::span<const typename F::stored_scale>(planes->mins));
  keep.push_back(std::move(planes));
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Writing

/// Collects layers (and, optionally, other tensors and metadata of the
/// application's) and writes them as one checkpoint file.
///
///   lqer::io::checkpoint_writer w;
///   for (std::size_t i = 0; i < layers.size(); ++i)
///     w.add("blk." + std::to_string(i) + ".attn_q", layers[i], {"whiten", "randomized"});
///   w.add_tensor("token_embd", shape, std::span<const float>(embeddings));
///   w.set_metadata("llama.context_length", "2048");
///   w.write("model.lqer.safetensors");                  // atomic, checksummed
///
/// A layer passed as an lvalue is viewed, not copied: it must stay alive and
/// unchanged until write() or encode() has returned (an rvalue is taken
/// over); add_tensor's data likewise. Everything about a layer is checked in
/// add(): value_error for an empty, non-UTF-8 or repeated name or one whose
/// tensor names are taken, shape_error for a layer whose parts do not fit
/// (lqer_layer::validate). write() then fails only for the file system.
class checkpoint_writer {
 public:
  template <storable_format W, storable_format Lr>
  checkpoint_writer& add(std::string name, const lqer_layer<W, Lr>& layer, layer_info info = {}) {
    return add_viewed(std::move(name), std::shared_ptr<const lqer_layer<W, Lr>>(std::shared_ptr<void>(), &layer),
                      std::move(info));
  }
  /// add() of a layer the writer keeps (moved in).
  template <storable_format W, storable_format Lr>
  checkpoint_writer& add(std::string name, lqer_layer<W, Lr>&& layer, layer_info info = {}) {
    return add_viewed(std::move(name), std::make_shared<const lqer_layer<W, Lr>>(std::move(layer)), std::move(info));
  }

  /// A tensor that is not part of a layer (an engine's embeddings or norms),
  /// stored and checksummed like the layers' and read back with
  /// checkpoint_file::tensor(). Viewed until write().
  checkpoint_writer& add_tensor(std::string name, safetensors_dtype dtype, std::span<const index_t> shape,
                                std::span<const std::byte> data) {
    // Checked now (name, shape against data), written later.
    safetensors_writer probe;
    probe.add(name, dtype, shape, data);
    claim(name, "checkpoint_writer::add_tensor");
    extra_.push_back(extra{std::move(name), dtype, std::vector<index_t>(shape.begin(), shape.end()), data});
    return *this;
  }
  template <safetensors_element T>
  checkpoint_writer& add_tensor(std::string name, std::span<const index_t> shape, std::span<const T> data) {
    return add_tensor(std::move(name), safetensors_dtype_of<T>::value, shape, std::as_bytes(data));
  }

  /// Sets one `__metadata__` entry of the application's. Keys beginning with
  /// "lqer." are the schema's: value_error.
  checkpoint_writer& set_metadata(std::string key, std::string value) {
    if (key.starts_with("lqer."))
      throw value_error("checkpoint_writer::set_metadata: the key " + detail::quoted_for_message(key) +
                        " is in the \"lqer.\" namespace, which the checkpoint schema owns");
    safetensors_writer probe;  // UTF-8 checks, now rather than at write()
    probe.set_metadata(key, value);
    metadata_[std::move(key)] = std::move(value);
    return *this;
  }

  /// Number of layers added.
  std::size_t size() const noexcept { return layers_.size(); }

  /// The whole file in memory.
  std::vector<std::byte> encode() const {
    std::list<std::shared_ptr<const void>> keep;
    return build(keep).writer().encode();
  }
  /// Writes the file atomically (io/atomic_file.hpp): on failure the target is
  /// unchanged and no temporary file remains.
  void write(const std::filesystem::path& path) const {
    std::list<std::shared_ptr<const void>> keep;
    build(keep).writer().write(path);
  }

 private:
  struct layer_entry {
    std::string name;
    std::shared_ptr<const void> owned;  // the layer when it was moved in
    std::function<void(detail::lqer_file_writer&, std::list<std::shared_ptr<const void>>&)> emit;
  };
  struct extra {
    std::string name;
    safetensors_dtype dtype;
    std::vector<index_t> shape;
    std::span<const std::byte> data;
  };

  template <storable_format W, storable_format Lr>
  checkpoint_writer& add_viewed(std::string name, std::shared_ptr<const lqer_layer<W, Lr>> layer, layer_info info) {
    const std::string what = "checkpoint_writer::add: layer " + detail::quoted_for_message(name);
    if (name.empty()) throw value_error("checkpoint_writer::add: a layer name must not be empty");
    if (detail::invalid_utf8_at(name) != std::string_view::npos) throw value_error(what + ": the name is not UTF-8");
    for (const auto& l : layers_)
      if (l.name == name) throw value_error(what + ": a layer of that name was already added");
    try {
      layer->validate();
    } catch (const shape_error& e) {
      throw shape_error(what + ": " + e.what());
    }
    for (const std::string& s : {info.policy, info.solver})
      if (detail::invalid_utf8_at(s) != std::string_view::npos)
        throw value_error(what + ": its layer_info holds a string that is not UTF-8");
    std::vector<std::string> names = detail::matrix_tensor_names<W>(name, "wq");
    if (layer->rank() > 0)
      for (const std::string_view part : {"a", "b"})
        for (auto& n : detail::matrix_tensor_names<Lr>(name, part)) names.push_back(std::move(n));
    if (layer->has_bias()) names.push_back(detail::layer_tensor(name, "bias", ""));
    for (const auto& n : names)
      if (names_.count(n)) throw value_error(what + ": its tensor " + detail::quoted_for_message(n) + " is taken");
    names_.insert(names.begin(), names.end());

    const lqer_layer<W, Lr>* l = layer.get();
    layer_entry e;
    e.name = name;
    e.owned = layer;
    e.emit = [l, name, info = std::move(info)](detail::lqer_file_writer& w,
                                               std::list<std::shared_ptr<const void>>& keep) {
      w.set_metadata(detail::layer_key(name, "weight_format"), W::name());
      w.set_metadata(detail::layer_key(name, "lowrank_format"), Lr::name());
      w.set_metadata(detail::layer_key(name, "out_features"), std::to_string(l->out_features()));
      w.set_metadata(detail::layer_key(name, "in_features"), std::to_string(l->in_features()));
      w.set_metadata(detail::layer_key(name, "rank"), std::to_string(l->rank()));
      w.set_metadata(detail::layer_key(name, "bias"), l->has_bias() ? "true" : "false");
      w.set_metadata(detail::layer_key(name, "weight_axis"), detail::axis_name(block_axis::cols));
      w.set_metadata(detail::layer_key(name, "lowrank_axis"), detail::axis_name(block_axis::rows));
      if (!info.policy.empty()) w.set_metadata(detail::layer_key(name, "policy"), info.policy);
      if (!info.solver.empty()) w.set_metadata(detail::layer_key(name, "solver"), info.solver);
      detail::add_matrix(w, keep, name, "wq", l->wq);
      if (l->rank() > 0) {
        detail::add_matrix(w, keep, name, "a", l->a);
        detail::add_matrix(w, keep, name, "b", l->b);
      }
      if (l->has_bias()) {
        const std::vector<index_t> shape{l->out_features()};
        w.add(detail::layer_tensor(name, "bias", ""), shape, std::span<const float>(l->bias));
      }
    };
    layers_.push_back(std::move(e));
    return *this;
  }

  void claim(const std::string& name, const char* fn) {
    if (names_.count(name))
      throw value_error(std::string(fn) + ": tensor " + detail::quoted_for_message(name) + " was already added");
    names_.insert(name);
  }

  detail::lqer_file_writer build(std::list<std::shared_ptr<const void>>& keep) const {
    detail::lqer_file_writer w(kCheckpointSchema, static_cast<int>(kCheckpointSchemaVersion));
    for (const auto& [k, v] : metadata_) w.set_metadata(k, v);
    for (const auto& l : layers_) l.emit(w, keep);
    for (const auto& e : extra_) w.add(e.name, e.dtype, e.shape, e.data);
    return w;
  }

  std::vector<layer_entry> layers_;
  std::vector<extra> extra_;
  std::set<std::string> names_;  // every tensor name taken
  std::map<std::string, std::string> metadata_;
};

// ---------------------------------------------------------------------------
// Reading

/// An open checkpoint: the file mapped and validated (see the file comment),
/// its layers listed without knowing their types, each loaded on request.
/// Move-only; thread-safe for concurrent const use (load() of different
/// layers on different threads).
///
///   auto ck = lqer::io::checkpoint_file::open("model.lqer.safetensors");
///   for (const auto& l : ck.layers())                       // sorted by name
///     std::printf("%s %s %.3f bits/weight\n", l.name.c_str(), l.weight_format.c_str(), l.bits_per_weight());
///   auto layer = ck.load<lqer::default_weight_format, lqer::default_lowrank_format>("blk.0.attn_q");
///   auto packed = lqer::pack(layer);                         // from the stored codes
class checkpoint_file {
 public:
  checkpoint_file() = default;

  /// Maps and checks `path`. io_error when it cannot be read, parse_error for
  /// malformed content, unsupported_error for a schema version this lqer does
  /// not read.
  static checkpoint_file open(const std::filesystem::path& path, const load_options& options = {}) {
    return checkpoint_file(safetensors_file::open(path, options.limits), options);
  }
  /// The same for a file image in memory (taken over); `name` is what messages call it.
  static checkpoint_file from_bytes(std::vector<std::byte> bytes, std::string name, const load_options& options = {}) {
    return checkpoint_file(safetensors_file::from_bytes(std::move(bytes), std::move(name), options.limits), options);
  }
  /// Checks an already open safetensors file as a checkpoint (taken over).
  checkpoint_file(safetensors_file file, const load_options& options) : file_(std::move(file)), options_(options) {
    parse();
  }

  const std::string& name() const { return file_.name(); }
  const safetensors_file& file() const noexcept { return file_; }
  const load_options& options() const noexcept { return options_; }
  /// `lqer.version` of the writer.
  const std::string& writer_version() const { return file_.metadata().at(std::string(kWriterVersionKey)); }

  /// Every layer, sorted by name.
  std::span<const checkpoint_layer> layers() const noexcept { return layers_; }
  /// The layer called `name`, or nullptr.
  const checkpoint_layer* find_layer(std::string_view name) const {
    const auto it = std::lower_bound(layers_.begin(), layers_.end(), name,
                                     [](const checkpoint_layer& l, std::string_view n) { return l.name < n; });
    return it != layers_.end() && it->name == name ? &*it : nullptr;
  }
  /// The layer called `name`; value_error naming the file and listing some of its layers when absent.
  const checkpoint_layer& layer(std::string_view name) const {
    if (const checkpoint_layer* l = find_layer(name)) return *l;
    std::string known;
    for (std::size_t i = 0; i < layers_.size() && i < 8; ++i) known += (i ? ", " : "") + quoted(layers_[i].name);
    if (layers_.size() > 8) known += ", ...";
    throw value_error(file_.name() + ": has no layer " + quoted(name) + " (it holds " + std::to_string(layers_.size()) +
                      (layers_.size() == 1 ? " layer" : " layers") + (layers_.empty() ? "" : ": " + known) + ")");
  }

  /// Loads layer `name` as lqer_layer<W, Lr>, from its stored codes and scales
  /// (see the file comment for every check). value_error when the layer is
  /// absent or stored in other formats than W / Lr (naming both); parse_error
  /// naming the file, the layer and the tensor for anything wrong in the file.
  template <storable_format W, storable_format Lr>
  lqer_layer<W, Lr> load(std::string_view name) const {
    const checkpoint_layer& info = layer(name);
    const std::string ctx = detail::layer_context(info.name);
    const auto mismatch = [&](const char* role, const std::string& stored, const std::string& wanted) {
      return value_error(file_.name() + ": " + ctx + ": format mismatch: its " + role + " format is " + stored +
                         ", but it was asked for as " + wanted + " (load<" + W::name() + ", " + Lr::name() + ">)");
    };
    if (info.weight_format != W::name()) throw mismatch("weight", info.weight_format, W::name());
    if (info.lowrank_format != Lr::name()) throw mismatch("low-rank", info.lowrank_format, Lr::name());
    lqer_layer<W, Lr> l;
    l.wq = read_matrix<W>(info, "wq", info.out_features, info.in_features, block_axis::cols);
    if (info.rank > 0) {
      l.a = read_matrix<Lr>(info, "a", info.in_features, info.rank, block_axis::rows);
      l.b = read_matrix<Lr>(info, "b", info.rank, info.out_features, block_axis::rows);
    }
    if (info.has_bias) {
      const safetensors_tensor& t = detail::required_tensor(file_, detail::layer_tensor(info.name, "bias", ""), ctx);
      const std::vector<index_t> shape{info.out_features};
      detail::require_layout(file_, t, safetensors_dtype::f32, shape, ctx);
      if (options_.verify_checksums) detail::verify_checksum(file_, t, ctx);
      l.bias = t.to_vector<float>();
      for (std::size_t i = 0; i < l.bias.size(); ++i)
        if (!std::isfinite(l.bias[i]))
          throw parse_error(file_.name() + ": " + ctx + ": tensor " + quoted(t.name) + ": element " +
                            std::to_string(i) + " is not finite");
    }
    l.validate();  // guaranteed by the checks above; cheap
    return l;
  }

  /// One matrix of layer `name` alone — `part` "wq" (format W of the layer)
  /// or "a" / "b" (its low-rank format) — with load()'s checks. For readers
  /// that take a layer apart, or check a file without both format types at
  /// hand (`lqer inspect`). value_error for an unknown part, a matrix a rank-0
  /// layer does not have, or a format that is not the file's.
  template <storable_format F>
  quantized_matrix<F> load_matrix(std::string_view name, std::string_view part) const {
    const checkpoint_layer& info = layer(name);
    const std::string ctx = detail::layer_context(info.name);
    if (part != "wq" && part != "a" && part != "b")
      throw value_error(file_.name() + ": " + ctx + ": no matrix " + quoted(part) + " (a layer has wq, a and b)");
    if (part != "wq" && info.rank == 0)
      throw value_error(file_.name() + ": " + ctx + ": has rank 0 and so no matrix " + quoted(part));
    const std::string& stored = part == "wq" ? info.weight_format : info.lowrank_format;
    if (stored != F::name())
      throw value_error(file_.name() + ": " + ctx + ": format mismatch: matrix " + quoted(part) + " is stored as " +
                        stored + ", but it was asked for as " + F::name());
    if (part == "wq") return read_matrix<F>(info, part, info.out_features, info.in_features, block_axis::cols);
    if (part == "a") return read_matrix<F>(info, part, info.in_features, info.rank, block_axis::rows);
    return read_matrix<F>(info, part, info.rank, info.out_features, block_axis::rows);
  }

  /// A tensor of the file by name (a layer's or the application's), its
  /// checksum verified unless the options turned that off. parse_error when
  /// absent or damaged.
  const safetensors_tensor& tensor(std::string_view name) const {
    const safetensors_tensor& t = detail::required_tensor(file_, name, "");
    if (options_.verify_checksums) detail::verify_checksum(file_, t, "");
    return t;
  }

  /// One tensor's checksum check, for a report of the whole file.
  struct checksum_status {
    std::string tensor;
    std::string expected;  ///< from the metadata
    std::string actual;    ///< of the bytes
    bool ok() const noexcept { return expected == actual; }
  };
  /// Hashes every tensor (whatever the options say) and reports each, in header order.
  std::vector<checksum_status> checksums() const {
    std::vector<checksum_status> out;
    for (const auto& t : file_.tensors()) {
      detail::checksum_check c = detail::checksum_of(file_, t);
      out.push_back(checksum_status{t.name, std::move(c.expected), std::move(c.actual)});
    }
    return out;
  }
  /// Hashes every tensor; parse_error naming the first whose checksum does not match.
  void verify_all() const {
    for (const auto& t : file_.tensors()) detail::verify_checksum(file_, t, "");
  }

 private:
  static std::string quoted(std::string_view s) { return detail::quoted_for_message(s); }

  [[noreturn]] void fail(const std::string& context, const std::string& what) const {
    throw parse_error(detail::file_context(file_, context) + ": " + what);
  }

  void parse() {
    detail::check_schema(file_, kCheckpointSchema, kCheckpointSchemaVersion, "an lqer checkpoint");
    const auto& md = file_.metadata();

    // `lqer.layer.<name>.<field>`: the field is what follows the last dot (no
    // field has one), the layer's name what precedes it (it may have dots).
    const auto split = [](std::string_view key) {
      const std::string_view rest = key.substr(kLayerPrefix.size());
      const std::size_t dot = rest.rfind('.');
      return dot == std::string_view::npos ? std::pair<std::string_view, std::string_view>{{}, rest}
                                           : std::pair{rest.substr(0, dot), rest.substr(dot + 1)};
    };
    // Layers: the names of the `lqer.layer.<name>.weight_format` keys.
    for (auto it = md.lower_bound(std::string(kLayerPrefix)); it != md.end() && it->first.starts_with(kLayerPrefix);
         ++it) {
      const auto [name, f] = split(it->first);
      if (f != "weight_format") continue;
      if (name.empty()) fail("", "the metadata key " + quoted(it->first) + " names a layer without a name");
      checkpoint_layer l;
      l.name = std::string(name);
      layers_.push_back(std::move(l));
    }
    std::sort(layers_.begin(), layers_.end(),
              [](const checkpoint_layer& a, const checkpoint_layer& b) { return a.name < b.name; });
    // Every other lqer.* key must be one the schema defines.
    for (const auto& [key, value] : md) {
      if (!key.starts_with("lqer.")) continue;
      if (key == kSchemaKey || key == kSchemaVersionKey || key == kWriterVersionKey || key.starts_with(kChecksumPrefix))
        continue;
      bool known = false;
      if (key.starts_with(kLayerPrefix)) {
        const auto [name, f] = split(key);
        known = std::find(std::begin(detail::kLayerFields), std::end(detail::kLayerFields), f) !=
                    std::end(detail::kLayerFields) &&
                find_layer(name) != nullptr;
      }
      if (!known)
        fail("", "unknown metadata key " + quoted(key) + " (not in schema version " +
                     std::to_string(kCheckpointSchemaVersion) + " of lqer.checkpoint, docs/checkpoint.md)");
    }
    for (checkpoint_layer& l : layers_) parse_layer(l);
    // After the layers, so that a layer's missing tensor is reported naming the layer.
    detail::check_checksum_keys(file_);
  }

  std::string field(const checkpoint_layer& l, std::string_view f, bool required = true) const {
    const auto it = file_.metadata().find(detail::layer_key(l.name, f));
    if (it == file_.metadata().end()) {
      if (required) fail(detail::layer_context(l.name), "missing metadata key " + quoted(detail::layer_key(l.name, f)));
      return {};
    }
    return it->second;
  }

  index_t dimension(const checkpoint_layer& l, std::string_view f, std::uint64_t min) const {
    const std::string v = field(l, f);
    const auto n = detail::parse_decimal(v, static_cast<std::uint64_t>(std::int64_t{1} << 40));
    if (!n || *n < min)
      fail(detail::layer_context(l.name),
           std::string(f) + " is " + quoted(v) + ", not an integer in [" + std::to_string(min) + ", 2^40]");
    return static_cast<index_t>(*n);
  }

  void parse_layer(checkpoint_layer& l) {
    const std::string ctx = detail::layer_context(l.name);
    for (const std::string_view f : detail::kLayerRequiredFields) (void)field(l, f);
    l.weight_format = field(l, "weight_format");
    l.lowrank_format = field(l, "lowrank_format");
    l.out_features = dimension(l, "out_features", 1);
    l.in_features = dimension(l, "in_features", 1);
    l.rank = dimension(l, "rank", 0);
    if (l.rank > std::min(l.in_features, l.out_features))
      fail(ctx, "rank " + std::to_string(l.rank) + " exceeds min(out_features, in_features) = " +
                    std::to_string(std::min(l.in_features, l.out_features)));
    const std::string bias = field(l, "bias");
    if (bias != "true" && bias != "false") fail(ctx, "bias is " + quoted(bias) + ", not \"true\" or \"false\"");
    l.has_bias = bias == "true";
    if (const std::string a = field(l, "weight_axis"); a != "cols")
      fail(ctx, "weight_axis is " + quoted(a) + "; schema version 1 stores Wq blocked along its columns (\"cols\")");
    if (const std::string a = field(l, "lowrank_axis"); a != "rows")
      fail(ctx,
           "lowrank_axis is " + quoted(a) + "; schema version 1 stores A and B blocked down their rows (\"rows\")");
    l.policy = field(l, "policy", false);
    l.solver = field(l, "solver", false);

    // The tensors: present exactly when the metadata says so, 2-D, one lane per row/column.
    const auto matrix = [&](std::string_view part, bool present, index_t lanes, std::uint64_t& bytes) {
      for (const std::string_view what : detail::kMatrixTensors) {
        const std::string name = detail::layer_tensor(l.name, part, what);
        const safetensors_tensor* t = file_.find_tensor(name);
        if (!present) {
          if (t) fail(ctx, "tensor " + quoted(name) + " is present but the layer has rank 0");
          continue;
        }
        if (!t) {
          // Only formats with a zero point (a block minimum) have zeros (mins):
          // load() checks which; but one whose checksum is recorded was written
          // and has gone missing.
          if (detail::optional_plane(what) && !file_.metadata().count(std::string(kChecksumPrefix) + name)) continue;
          fail(ctx, "missing tensor " + quoted(name));
        }
        const bool ok = t->rank() == 2 && t->shape[0] == lanes &&
                        (what == "codes"   ? t->dtype == safetensors_dtype::u8
                         : what == "zeros" ? t->dtype == safetensors_dtype::i8
                                           : true);
        if (!ok)
          fail(ctx, "tensor " + t->describe() + " is not a 2-D " +
                        (what == "codes"   ? "U8 "
                         : what == "zeros" ? "I8 "
                                           : "") +
                        "tensor of " + std::to_string(lanes) + " lanes, as the metadata needs");
        l.tensors.push_back(name);
        bytes += t->data.size();
      }
    };
    matrix("wq", true, l.out_features, l.weight_bytes);
    std::uint64_t a_bytes = 0, b_bytes = 0;
    matrix("a", l.rank > 0, l.rank, a_bytes);
    matrix("b", l.rank > 0, l.out_features, b_bytes);
    l.lowrank_bytes = a_bytes + b_bytes;
    const std::string bias_name = detail::layer_tensor(l.name, "bias", "");
    const safetensors_tensor* b = file_.find_tensor(bias_name);
    if (l.has_bias && !b) fail(ctx, "missing tensor " + quoted(bias_name));
    if (!l.has_bias && b) fail(ctx, "tensor " + quoted(bias_name) + " is present but the metadata says bias \"false\"");
    if (b) {
      const std::vector<index_t> shape{l.out_features};
      detail::require_layout(file_, *b, safetensors_dtype::f32, shape, ctx);
      l.tensors.push_back(bias_name);
      l.bias_bytes = b->data.size();
    }
  }

  template <storable_format F>
  quantized_matrix<F> read_matrix(const checkpoint_layer& info, std::string_view part, index_t rows, index_t cols,
                                  block_axis axis) const {
    const std::string ctx = detail::layer_context(info.name);
    const auto g = quantized_matrix<F>::geometry_of(rows, cols, axis);
    const std::vector<index_t> code_shape{g.lanes, g.lane_code_bytes}, scale_shape{g.lanes, g.blocks_per_lane};
    const auto& codes = detail::required_tensor(file_, detail::layer_tensor(info.name, part, "codes"), ctx);
    const auto& scales = detail::required_tensor(file_, detail::layer_tensor(info.name, part, "scales"), ctx);
    detail::require_layout(file_, codes, safetensors_dtype::u8, code_shape, ctx);
    detail::require_layout(file_, scales, safetensors_dtype_of<typename F::stored_scale>::value, scale_shape, ctx);
    const std::string zeros_name = detail::layer_tensor(info.name, part, "zeros");
    const safetensors_tensor* zeros = file_.find_tensor(zeros_name);
    if constexpr (F::kHasZeroPoint) {
      if (!zeros) fail(ctx, "missing tensor " + quoted(zeros_name) + " (" + F::name() + " has zero points)");
      detail::require_layout(file_, *zeros, safetensors_dtype::i8, scale_shape, ctx);
    } else {
      if (zeros) fail(ctx, "tensor " + quoted(zeros_name) + " is present but " + F::name() + " has no zero point");
    }
    const std::string mins_name = detail::layer_tensor(info.name, part, "mins");
    const safetensors_tensor* mins = file_.find_tensor(mins_name);
    if constexpr (F::kHasMin) {
      if (!mins) fail(ctx, "missing tensor " + quoted(mins_name) + " (" + F::name() + " has block minima)");
      detail::require_layout(file_, *mins, safetensors_dtype_of<typename F::stored_scale>::value, scale_shape, ctx);
    } else {
      if (mins) fail(ctx, "tensor " + quoted(mins_name) + " is present but " + F::name() + " has no block minimum");
    }
    if (options_.verify_checksums) {
      detail::verify_checksum(file_, codes, ctx);
      detail::verify_checksum(file_, scales, ctx);
      if (zeros) detail::verify_checksum(file_, *zeros, ctx);
      if (mins) detail::verify_checksum(file_, *mins, ctx);
    }
    const auto* c = reinterpret_cast<const std::uint8_t*>(codes.data.data());
    std::vector<std::uint8_t> code_bytes(c, c + codes.data.size());
    const std::vector<typename F::stored_scale> d = scales.to_vector<typename F::stored_scale>();
    std::vector<std::int8_t> z;
    if (zeros) z = zeros->to_vector<std::int8_t>();
    std::vector<typename F::block_scale> records;
    records.reserve(d.size());
    if constexpr (F::kHasMin) {
      const std::vector<typename F::stored_scale> mv = mins->to_vector<typename F::stored_scale>();
      for (std::size_t i = 0; i < d.size(); ++i) records.push_back(F::load_scale(d[i], 0, mv[i]));
    } else {
      for (std::size_t i = 0; i < d.size(); ++i) records.push_back(F::load_scale(d[i], z.empty() ? 0 : z[i]));
    }
    try {
      return quantized_matrix<F>::from_codes(rows, cols, axis, std::move(code_bytes), std::move(records));
    } catch (const error& e) {
      fail(ctx, "matrix " + quoted(detail::layer_tensor(info.name, part, "")) + ": " + e.what());
    }
  }

  safetensors_file file_;
  load_options options_;
  std::vector<checkpoint_layer> layers_;  // sorted by name (the metadata map's order)
};

}  // namespace lqer::io

namespace lqer {

using io::checkpoint_file;
using io::checkpoint_layer;
using io::checkpoint_writer;
using io::layer_info;

/// Writes one layer as a checkpoint file of its own, called `name` inside it
/// (atomically; see checkpoint_writer for the errors).
template <storable_format W, storable_format Lr>
void save(const lqer_layer<W, Lr>& layer, const std::filesystem::path& path, std::string name = "layer",
          io::layer_info info = {}) {
  io::checkpoint_writer w;
  w.add(std::move(name), layer, std::move(info));
  w.write(path);
}

/// Loads layer `name` of an open checkpoint (checkpoint_file::load).
template <storable_format W, storable_format Lr>
lqer_layer<W, Lr> load(const io::checkpoint_file& file, std::string_view name) {
  return file.load<W, Lr>(name);
}

/// Opens the checkpoint at `path` and loads layer `name`. To load many layers
/// of one file, open it once (checkpoint_file::open) and load from that: this
/// parses the header on every call.
template <storable_format W, storable_format Lr>
lqer_layer<W, Lr> load(const std::filesystem::path& path, std::string_view name, const io::load_options& options = {}) {
  return io::checkpoint_file::open(path, options).load<W, Lr>(name);
}

}  // namespace lqer
