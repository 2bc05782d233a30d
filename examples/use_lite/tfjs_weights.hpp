// use_lite — reading a TensorFlow.js graph model's weights: model.json plus its
// binary shards.
//
// The layout (tfjs-converter's "weightsManifest"):
//
//   model.json  { "modelTopology": {...}, "weightsManifest": [ group, ... ] }
//   group       { "paths": ["group1-shard1of7", ...], "weights": [ entry, ... ] }
//   entry       { "name": "...", "shape": [d0, d1, ...], "dtype": "float32" | "int32" }
//
// A group's shard files, concatenated in the order of "paths", are one
// little-endian blob in which the group's entries lie back to back, each
// prod(shape) · 4 bytes, in the order they are listed. Groups follow each
// other the same way: this reader keeps one blob, all groups' shards in
// manifest order, and gives each entry its offset in it.
//
// The graph itself ("modelTopology") is not read: the engine implements the
// forward pass by hand and only looks weights up by name.
//
// Reading is defensive, because both files are input from outside:
//  * JSON nested deeper than a small limit (64; USE-lite's model.json is 10
//    deep) is refused while it is parsed, so nothing downstream ever walks a
//    deep tree, and no message prints a JSON value whole (a recursive dump of
//    200,000 nested arrays overflows the stack): it is described by its type
//    and a bounded prefix;
//  * every size in the manifest (rank, dimensions, element count, byte count,
//    running offset) is checked for overflow and against a limit, and the sum
//    is compared with the shard files' sizes *before* anything is allocated;
//    a manifest that claims 2^40 elements is a parse_error, not an allocation;
//  * shard paths must be plain file names, and each must resolve (symlinks
//    followed) to a file inside the model directory: neither "../x" nor a
//    symlink in the directory can make the reader open a file elsewhere.
//    (Checked once before reading; a directory being rewritten while it is
//    read is beyond this reader.);
//  * from_memory checks a caller-built manifest's offsets and sizes against
//    the blob, so that no entry can make floats() read outside it;
//  * anything malformed is an lqer::parse_error, a file that cannot be opened
//    or read an lqer::io_error, a valid manifest this reader does not handle
//    (quantized weights, string or float16 tensors) an lqer::unsupported_error.
//    Every message starts with the path of the file at fault.
// The JSON grammar itself is nlohmann-json's; its exceptions are translated.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <lqer/error.hpp>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace use_lite {

static_assert(std::endian::native == std::endian::little,
              "tfjs_weights copies the little-endian shard bytes as they are and so needs a little-endian host");

/// Element types this reader hands out (both 4 bytes, little-endian).
enum class tfjs_dtype { float32, int32 };

inline const char* to_string(tfjs_dtype t) noexcept { return t == tfjs_dtype::float32 ? "float32" : "int32"; }

/// Bounds on what a manifest may declare. The defaults are far above USE-lite
/// (61 weights, 27.9 MB) and far below what would hurt the machine.
struct tfjs_limits {
  std::uint64_t max_json_bytes = 64ull << 20;  ///< model.json's size
  std::uint64_t max_total_bytes = 4ull << 30;  ///< all weights together
  std::size_t max_rank = 8;                    ///< dimensions per tensor
  std::size_t max_entries = 1u << 16;          ///< weights in the manifest
  std::size_t max_shards = 1u << 12;           ///< shard files in the manifest
  std::size_t max_json_depth = 64;             ///< nested arrays and objects in model.json
};

/// One weight: where it lies in the blob.
struct tfjs_entry {
  std::string name;
  tfjs_dtype dtype = tfjs_dtype::float32;
  std::vector<std::int64_t> shape;  ///< empty for a scalar
  std::uint64_t elements = 0;       ///< prod(shape); 1 for a scalar
  std::uint64_t offset = 0;         ///< byte offset in the blob
  std::uint64_t bytes = 0;          ///< elements · 4
};

/// One weightsManifest group: its shard files and the bytes its entries need.
struct tfjs_group {
  std::vector<std::string> paths;
  std::uint64_t bytes = 0;
};

struct tfjs_manifest {
  std::vector<tfjs_group> groups;
  std::vector<tfjs_entry> entries;
  std::uint64_t total_bytes = 0;  ///< Σ group bytes: the blob's exact size
};

namespace detail {

inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// A name from the file, cut short and with control characters escaped, so that
/// an error message stays one readable line whatever the file holds.
inline std::string printable(std::string_view s, std::size_t max_len = 120) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

/// A shard path must name a file directly inside the model directory.
inline bool is_plain_file_name(std::string_view p) {
  if (p.empty() || p == "." || p == "..") return false;
  return p.find_first_of(std::string_view("/\\\0", 3)) == std::string_view::npos;
}

/// A JSON value from the file in a few words, for error messages: a scalar
/// as it is written (cut short), a container as its type and the start of
/// its text along first elements ("array starting [[1"). Never json::dump()
/// of a container: that recurses once per nesting level and is as long as
/// the value.
inline std::string describe(const nlohmann::json& v, std::size_t max_len = 40) {
  if (!v.is_array() && !v.is_object()) return printable(v.dump(), max_len);
  if (v.is_array() && std::none_of(v.begin(), v.end(), [](const nlohmann::json& x) { return x.is_structured(); })) {
    std::string flat = "[";  // a flat list (the usual shape): its elements, as many as fit
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (flat.size() >= max_len) return printable(flat, 2 * max_len) + ", ...]";
      flat += (i ? ", " : "") + v[i].dump();
    }
    return printable(flat + "]", 2 * max_len);
  }
  std::string text;
  for (const nlohmann::json* cur = &v; text.size() < max_len;) {  // iterative: bounded however deep
    if (!cur->is_array() && !cur->is_object()) {
      text += cur->dump();
      break;
    }
    text += cur->is_array() ? '[' : '{';
    if (cur->empty()) break;
    if (cur->is_object()) text += "\"" + cur->begin().key() + "\": ";
    cur = &*cur->begin();
  }
  return std::string(v.type_name()) + " starting " + printable(text, max_len);
}

inline const nlohmann::json& member(const nlohmann::json& obj, const char* key, const std::string& where,
                                    const std::string& file) {
  const auto it = obj.find(key);
  if (it == obj.end()) throw lqer::parse_error(file + ": " + where + " has no \"" + key + "\"");
  return *it;
}

}  // namespace detail

/// Parses model.json's text into a manifest (no shard is touched). `file`
/// names the file in error messages.
inline tfjs_manifest parse_tfjs_manifest(std::string_view json_text, const std::string& file,
                                         const tfjs_limits& limits = {}) {
  using nlohmann::json;
  if (json_text.size() > limits.max_json_bytes)
    throw lqer::parse_error(file + ": " + std::to_string(json_text.size()) + " bytes is more than the limit of " +
                            std::to_string(limits.max_json_bytes) + " for a model.json");
  json doc;
  // Depth is limited while parsing: nlohmann's parser itself is iterative,
  // but a deep document would still reach code that recurses (dump, the
  // comparison operators), and no TF.js manifest needs more than a few levels.
  // `depth` is the number of containers enclosing the one that starts.
  const std::size_t max_depth = limits.max_json_depth;
  const json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::array_start || event == json::parse_event_t::object_start) &&
        static_cast<std::size_t>(depth) >= max_depth)
      throw lqer::parse_error(file + ": JSON nested deeper than " + std::to_string(max_depth) +
                              " levels (arrays and objects); a TF.js model.json needs far fewer");
    return true;
  };
  try {
    doc = json::parse(json_text.begin(), json_text.end(), limit_depth);
  } catch (const json::exception& e) {
    throw lqer::parse_error(file + ": not valid JSON: " + e.what());
  }
  if (!doc.is_object()) throw lqer::parse_error(file + ": the top level is not a JSON object");
  const json& groups = detail::member(doc, "weightsManifest", "the top-level object", file);
  if (!groups.is_array()) throw lqer::parse_error(file + ": \"weightsManifest\" is not an array");

  tfjs_manifest m;
  std::size_t shards = 0;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const json& group = groups[g];
    const std::string where = "weightsManifest[" + std::to_string(g) + "]";
    if (!group.is_object()) throw lqer::parse_error(file + ": " + where + " is not an object");
    const json& paths = detail::member(group, "paths", where, file);
    const json& weights = detail::member(group, "weights", where, file);
    if (!paths.is_array()) throw lqer::parse_error(file + ": " + where + ".paths is not an array");
    if (!weights.is_array()) throw lqer::parse_error(file + ": " + where + ".weights is not an array");

    tfjs_group tg;
    for (std::size_t p = 0; p < paths.size(); ++p) {
      if (!paths[p].is_string())
        throw lqer::parse_error(file + ": " + where + ".paths[" + std::to_string(p) + "] is not a string");
      const auto& path = paths[p].get_ref<const std::string&>();
      if (!detail::is_plain_file_name(path))
        throw lqer::parse_error(file + ": shard path \"" + detail::printable(path) +
                                "\" is not a plain file name in the model's directory");
      if (++shards > limits.max_shards)
        throw lqer::parse_error(file + ": more than " + std::to_string(limits.max_shards) + " shard files");
      tg.paths.push_back(path);
    }

    for (std::size_t w = 0; w < weights.size(); ++w) {
      const json& wj = weights[w];
      const std::string wwhere = where + ".weights[" + std::to_string(w) + "]";
      if (!wj.is_object()) throw lqer::parse_error(file + ": " + wwhere + " is not an object");
      if (m.entries.size() >= limits.max_entries)
        throw lqer::parse_error(file + ": more than " + std::to_string(limits.max_entries) + " weights");
      const json& name = detail::member(wj, "name", wwhere, file);
      const json& shape = detail::member(wj, "shape", wwhere, file);
      const json& dtype = detail::member(wj, "dtype", wwhere, file);
      if (!name.is_string()) throw lqer::parse_error(file + ": " + wwhere + ".name is not a string");
      tfjs_entry e;
      e.name = name.get<std::string>();
      const std::string what = file + ": weight \"" + detail::printable(e.name) + "\"";

      if (!dtype.is_string()) throw lqer::parse_error(what + ": dtype is not a string");
      const auto& dt = dtype.get_ref<const std::string&>();
      if (dt == "float32") {
        e.dtype = tfjs_dtype::float32;
      } else if (dt == "int32") {
        e.dtype = tfjs_dtype::int32;
      } else if (dt == "float16" || dt == "bool" || dt == "string" || dt == "complex64" || dt == "uint8" ||
                 dt == "int16" || dt == "uint16") {
        throw lqer::unsupported_error(what + ": dtype \"" + dt +
                                      "\" is valid TF.js but not read here (float32, int32)");
      } else {
        throw lqer::parse_error(what + ": unknown dtype \"" + detail::printable(dt) + "\"");
      }
      // Quantized TF.js weights store uint8/uint16/float16 codes with a
      // different byte count: refuse them rather than misread the blob.
      if (wj.contains("quantization"))
        throw lqer::unsupported_error(what + ": quantized TF.js weights are not read here");

      if (!shape.is_array()) throw lqer::parse_error(what + ": shape is not an array");
      if (shape.size() > limits.max_rank)
        throw lqer::parse_error(what + ": rank " + std::to_string(shape.size()) + " exceeds the limit of " +
                                std::to_string(limits.max_rank));
      // Element and byte counts in 64 bits, every product and sum checked:
      // a shape may claim anything, the limit decides before any allocation.
      std::uint64_t elements = 1;
      for (const json& d : shape) {
        if (!d.is_number_integer() || (!d.is_number_unsigned() && d.get<std::int64_t>() < 0))
          throw lqer::parse_error(what + ": shape " + detail::describe(shape) +
                                  " is not a list of non-negative integers");
        const auto dim = d.get<std::uint64_t>();
        if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
            __builtin_mul_overflow(elements, dim, &elements) || elements > limits.max_total_bytes / 4)
          throw lqer::parse_error(what + ": shape " + detail::describe(shape) + " holds more than " +
                                  std::to_string(limits.max_total_bytes / 4) + " elements");
        e.shape.push_back(static_cast<std::int64_t>(dim));
      }
      e.elements = elements;
      e.bytes = elements * 4;  // ≤ max_total_bytes: checked above
      if (e.bytes > limits.max_total_bytes - m.total_bytes)
        throw lqer::parse_error(what + ": the weights add up to more than the limit of " +
                                std::to_string(limits.max_total_bytes) + " bytes");
      e.offset = m.total_bytes;
      m.total_bytes += e.bytes;
      tg.bytes += e.bytes;
      m.entries.push_back(std::move(e));
    }
    if (tg.bytes > 0 && tg.paths.empty())
      throw lqer::parse_error(file + ": " + where + " has weights but no shard paths");
    m.groups.push_back(std::move(tg));
  }
  return m;
}

/// The weights of a TF.js model: a manifest and the blob it describes.
class tfjs_weights {
 public:
  tfjs_weights() = default;

  /// Reads `dir`/model.json and every shard it lists from `dir`.
  static tfjs_weights load(const std::filesystem::path& dir, const tfjs_limits& limits = {}) {
    const std::filesystem::path json_path = dir / "model.json";
    const std::string json_name = json_path.string();
    const std::vector<std::byte> json_bytes = read_file(json_path, limits.max_json_bytes);
    const std::string_view text(reinterpret_cast<const char*>(json_bytes.data()), json_bytes.size());
    tfjs_manifest m = parse_tfjs_manifest(text, json_name, limits);

    // Each shard's real place, checked to be inside the model directory
    // before any size is looked at.
    std::vector<std::vector<std::filesystem::path>> shard_paths;
    for (const auto& g : m.groups) {
      shard_paths.emplace_back();
      for (const auto& p : g.paths) shard_paths.back().push_back(resolve_shard(dir, p));
    }

    // Every shard's size first, against what its group needs: a missing or
    // truncated shard is reported by name before any weight memory exists.
    for (std::size_t g = 0; g < m.groups.size(); ++g) {
      std::uint64_t have = 0;
      for (const auto& p : shard_paths[g]) have += file_size(p);
      if (have != m.groups[g].bytes)
        throw lqer::parse_error(json_name + ": the shards of weightsManifest[" + std::to_string(g) + "] (" +
                                join(m.groups[g].paths) + ") hold " + std::to_string(have) +
                                " bytes but its weights need " + std::to_string(m.groups[g].bytes) +
                                (have < m.groups[g].bytes ? " (truncated?)" : ""));
    }
    std::vector<std::byte> blob;
    blob.reserve(static_cast<std::size_t>(m.total_bytes));
    for (const auto& g : shard_paths)
      for (const auto& p : g) {
        const std::vector<std::byte> part = read_file(p, m.total_bytes - blob.size());
        blob.insert(blob.end(), part.begin(), part.end());
      }
    if (blob.size() != m.total_bytes)  // a shard changed size while being read
      throw lqer::io_error(json_name + ": the shards changed while they were read");
    return from_memory(std::move(m), std::move(blob), json_name);
  }

  /// From a manifest and the blob (all groups' shards, concatenated in
  /// manifest order). `file` names the model in error messages. The manifest
  /// may come from the caller rather than parse_tfjs_manifest, so each entry
  /// is checked to be consistent (shape, element and byte counts) and to lie
  /// inside the blob: parse_error otherwise.
  static tfjs_weights from_memory(tfjs_manifest m, std::vector<std::byte> blob, std::string file) {
    if (blob.size() != m.total_bytes)
      throw lqer::parse_error(file + ": the shards hold " + std::to_string(blob.size()) +
                              " bytes but the manifest's weights need " + std::to_string(m.total_bytes));
    for (const tfjs_entry& e : m.entries) check_entry(e, blob.size(), file);
    tfjs_weights w;
    for (std::size_t i = 0; i < m.entries.size(); ++i)
      if (!w.index_.emplace(m.entries[i].name, i).second)
        throw lqer::parse_error(file + ": weight \"" + detail::printable(m.entries[i].name) + "\" is listed twice");
    w.manifest_ = std::move(m);
    w.blob_ = std::move(blob);
    w.file_ = std::move(file);
    return w;
  }

  const tfjs_manifest& manifest() const noexcept { return manifest_; }
  const std::string& file() const noexcept { return file_; }
  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }

  /// The entry called `name`; parse_error if the model has none.
  const tfjs_entry& entry(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    if (it == index_.end()) throw lqer::parse_error(file_ + ": the model has no weight \"" + std::string(name) + "\"");
    return manifest_.entries[it->second];
  }

  /// The float32 weight `name`, which must have exactly `shape` and only finite
  /// elements (a NaN in a weight would silently poison every embedding).
  std::vector<float> floats(std::string_view name, std::initializer_list<std::int64_t> shape) const {
    return floats(name, std::span<const std::int64_t>(shape.begin(), shape.size()));
  }
  std::vector<float> floats(std::string_view name, std::span<const std::int64_t> shape) const {
    const tfjs_entry& e = checked(name, tfjs_dtype::float32, shape);
    std::vector<float> out(static_cast<std::size_t>(e.elements));
    if (e.bytes > 0) std::memcpy(out.data(), blob_.data() + e.offset, static_cast<std::size_t>(e.bytes));
    for (std::size_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out[i]))
        throw lqer::parse_error(file_ + ": weight \"" + e.name + "\" element " + std::to_string(i) + " is not finite");
    return out;
  }

 private:
  /// One entry of a manifest from the caller: prod(shape) = elements,
  /// elements · 4 = bytes, offset + bytes ≤ the blob's size, every product
  /// and sum checked for overflow.
  static void check_entry(const tfjs_entry& e, std::size_t blob_bytes, const std::string& file) {
    const std::string what = file + ": weight \"" + detail::printable(e.name) + "\"";
    std::uint64_t elements = 1;
    for (const std::int64_t d : e.shape) {
      if (d < 0) throw lqer::parse_error(what + ": shape " + detail::shape_string(e.shape) + " has a negative dimension");
      if (__builtin_mul_overflow(elements, static_cast<std::uint64_t>(d), &elements))
        throw lqer::parse_error(what + ": shape " + detail::shape_string(e.shape) + " holds more than 2^64 elements");
    }
    if (elements != e.elements)
      throw lqer::parse_error(what + ": " + std::to_string(e.elements) + " elements, but shape " +
                              detail::shape_string(e.shape) + " holds " + std::to_string(elements));
    std::uint64_t bytes = 0, end = 0;
    if (__builtin_mul_overflow(e.elements, std::uint64_t{4}, &bytes))
      throw lqer::parse_error(what + ": " + std::to_string(e.elements) + " elements of 4 bytes overflow 64 bits");
    if (bytes != e.bytes)
      throw lqer::parse_error(what + ": " + std::to_string(e.bytes) + " bytes, but its " +
                              std::to_string(e.elements) + " elements need " + std::to_string(bytes));
    if (__builtin_add_overflow(e.offset, e.bytes, &end) || end > blob_bytes)
      throw lqer::parse_error(what + ": bytes [" + std::to_string(e.offset) + ", +" + std::to_string(e.bytes) +
                              ") lie outside the " + std::to_string(blob_bytes) + "-byte blob");
  }

  /// `dir`/`name` with every symlink resolved, refused (io_error) unless it
  /// lies strictly inside `dir` (itself resolved: a model directory reached
  /// through a symlink is fine). `name` is a plain file name already, so only
  /// symlinks can lead elsewhere; weakly_canonical resolves them all, chains
  /// included, and leaves a missing file to be reported when it is read.
  static std::filesystem::path resolve_shard(const std::filesystem::path& dir, const std::string& name) {
    namespace fs = std::filesystem;
    const fs::path given = dir / name;
    std::error_code ec;
    const fs::path base = fs::weakly_canonical(dir, ec);
    fs::path real;
    if (!ec) real = fs::weakly_canonical(given, ec);
    if (ec) throw lqer::io_error(given.string() + ": cannot resolve the shard's path: " + ec.message());
    // Inside: base is a proper prefix of real, element by element (a string
    // prefix would take "/m/model2/x" for inside "/m/model").
    const auto [b, r] = std::mismatch(base.begin(), base.end(), real.begin(), real.end());
    if (b != base.end() || r == real.end())
      throw lqer::io_error(given.string() + ": refused: the shard resolves to " + detail::printable(real.string()) +
                           ", outside the model directory " + base.string() + " (a symlink out of it?)");
    return real;
  }

  const tfjs_entry& checked(std::string_view name, tfjs_dtype dtype, std::span<const std::int64_t> shape) const {
    const tfjs_entry& e = entry(name);
    if (e.dtype != dtype)
      throw lqer::parse_error(file_ + ": weight \"" + e.name + "\" is " + to_string(e.dtype) + ", expected " +
                              to_string(dtype));
    if (!std::equal(e.shape.begin(), e.shape.end(), shape.begin(), shape.end()))
      throw lqer::parse_error(file_ + ": weight \"" + e.name + "\" has shape " + detail::shape_string(e.shape) +
                              ", expected " + detail::shape_string(shape));
    return e;
  }

  static std::uint64_t file_size(const std::filesystem::path& p) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (ec) throw lqer::io_error(p.string() + ": cannot read: " + ec.message());
    return n;
  }

  /// The whole file, refusing (before allocating) one larger than `max_bytes`.
  static std::vector<std::byte> read_file(const std::filesystem::path& p, std::uint64_t max_bytes) {
    const std::uint64_t n = file_size(p);
    if (n > max_bytes)
      throw lqer::parse_error(p.string() + ": " + std::to_string(n) + " bytes is more than the " +
                              std::to_string(max_bytes) + " expected");
    std::ifstream in(p, std::ios::binary);
    if (!in) throw lqer::io_error(p.string() + ": cannot open for reading");
    std::vector<std::byte> data(static_cast<std::size_t>(n));
    in.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(n));
    if (static_cast<std::uint64_t>(in.gcount()) != n)
      throw lqer::io_error(p.string() + ": read " + std::to_string(in.gcount()) + " of " + std::to_string(n) +
                           " bytes");
    return data;
  }

  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + detail::printable(v[i], 60);
    return s;
  }

  tfjs_manifest manifest_;
  std::vector<std::byte> blob_;
  std::string file_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace use_lite
