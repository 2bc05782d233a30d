// lqer — what every safetensors file lqer writes has in common: the schema
// keys, the version of lqer that wrote it, and a SHA-256 per tensor.
//
// Two schemas use this (docs/checkpoint.md describes both): LQER checkpoints
// (io/checkpoint.hpp: quantized layers) and calibration statistics
// (calib/activation_stats.hpp). Each file's `__metadata__` holds
//
//   lqer.schema           the schema's name: "lqer.checkpoint", "lqer.activation_stats"
//   lqer.schema_version   a decimal integer; a reader refuses versions it does not know
//   lqer.version          the lqer that wrote the file ("0.1.0")
//   lqer.sha256.<tensor>  for every tensor: the SHA-256 of its data bytes, 64 lowercase
//                         hex digits (what `sha256sum` prints for those bytes)
//
// and the schema's own keys, all under "lqer.". Keys outside "lqer." belong to
// the application that wrote the file and are kept as they are.
//
// Errors, each naming the file: a file that is not of the expected schema, or
// whose lqer metadata is malformed, is a parse_error; a schema version this
// lqer does not read is an unsupported_error; a checksum that does not match
// the tensor's bytes is a parse_error naming the tensor and both digests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/io/npy.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/io/sha256.hpp"

namespace lqer::io {

/// How a reader of lqer's files treats them.
struct load_options {
  /// Check every tensor that is read against its `lqer.sha256.<tensor>` key
  /// (about 0.35 s per 100 MB on one core, io/sha256.hpp). Off: the data is
  /// taken as it is (its structure is still checked).
  bool verify_checksums = true;
  /// Bounds of the safetensors header (io/safetensors.hpp).
  safetensors_limits limits{};
};

/// `lqer.schema`
inline constexpr std::string_view kSchemaKey = "lqer.schema";
/// `lqer.schema_version`
inline constexpr std::string_view kSchemaVersionKey = "lqer.schema_version";
/// `lqer.version`
inline constexpr std::string_view kWriterVersionKey = "lqer.version";
/// Prefix of the per-tensor checksum keys: `lqer.sha256.<tensor name>`.
inline constexpr std::string_view kChecksumPrefix = "lqer.sha256.";

namespace detail {

/// A decimal integer as lqer writes it: digits only, no sign, no leading zero
/// (but "0"), at most `max`. nullopt for anything else.
inline std::optional<std::uint64_t> parse_decimal(std::string_view s,
                                                  std::uint64_t max = std::numeric_limits<std::int64_t>::max()) {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');  // 19 digits < 2^64: no overflow
  }
  if (v > max) return std::nullopt;
  return v;
}

inline bool is_sha256_hex(std::string_view s) {
  if (s.size() != 2 * sha256::kDigestBytes) return false;
  for (const char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

/// A safetensors_writer that stamps the schema keys and records the SHA-256 of
/// every tensor added (hashed when added: the data must already hold its final
/// bytes). Data is viewed, as by safetensors_writer.
class lqer_file_writer {
 public:
  lqer_file_writer(std::string_view schema, int version) {
    w_.set_metadata(std::string(kSchemaKey), std::string(schema));
    w_.set_metadata(std::string(kSchemaVersionKey), std::to_string(version));
    w_.set_metadata(std::string(kWriterVersionKey), kVersionString);
  }

  void add(const std::string& name, safetensors_dtype dtype, std::span<const index_t> shape,
           std::span<const std::byte> data) {
    w_.add(name, dtype, shape, data);
    w_.set_metadata(std::string(kChecksumPrefix) + name, sha256_hex(data));
  }
  template <safetensors_element T>
  void add(const std::string& name, std::span<const index_t> shape, std::span<const T> data) {
    add(name, safetensors_dtype_of<T>::value, shape, std::as_bytes(data));
  }
  void set_metadata(std::string key, std::string value) { w_.set_metadata(std::move(key), std::move(value)); }

  const safetensors_writer& writer() const noexcept { return w_; }

 private:
  safetensors_writer w_;
};

/// `file: ` + `context` (", layer \"x\"") for messages.
inline std::string file_context(const safetensors_file& f, const std::string& context) {
  return context.empty() ? f.name() : f.name() + ": " + context;
}

/// Checks `lqer.schema` and `lqer.schema_version` (see the file comment);
/// `what` names the kind of file ("an lqer checkpoint") for the messages.
inline void check_schema(const safetensors_file& f, std::string_view schema, std::uint64_t version,
                         std::string_view what) {
  const auto& md = f.metadata();
  const auto s = md.find(std::string(kSchemaKey));
  if (s == md.end())
    throw parse_error(f.name() + ": not " + std::string(what) + ": its metadata has no " + std::string(kSchemaKey) +
                      " key (expected \"" + std::string(schema) + "\")");
  if (s->second != schema)
    throw parse_error(f.name() + ": not " + std::string(what) + ": " + std::string(kSchemaKey) + " is " +
                      quoted_for_message(s->second) + ", expected \"" + std::string(schema) + "\"");
  const auto v = md.find(std::string(kSchemaVersionKey));
  if (v == md.end())
    throw parse_error(f.name() + ": " + std::string(what) + " without a " + std::string(kSchemaVersionKey) + " key");
  const auto n = parse_decimal(v->second);
  if (!n)
    throw parse_error(f.name() + ": " + std::string(kSchemaVersionKey) + " " + quoted_for_message(v->second) +
                      " is not a decimal integer");
  if (*n != version)
    throw unsupported_error(f.name() + ": " + std::string(what) + " of schema version " + v->second +
                            ", which this lqer (" + kVersionString + ") does not read: it reads version " +
                            std::to_string(version));
  const auto w = md.find(std::string(kWriterVersionKey));
  if (w == md.end() || w->second.empty())
    throw parse_error(f.name() + ": " + std::string(what) + " without a " + std::string(kWriterVersionKey) + " key");
}

/// Checks that every tensor has a well-formed `lqer.sha256.<tensor>` key and
/// every such key names a tensor. Nothing is hashed here.
inline void check_checksum_keys(const safetensors_file& f) {
  for (const auto& t : f.tensors()) {
    const auto it = f.metadata().find(std::string(kChecksumPrefix) + t.name);
    if (it == f.metadata().end())
      throw parse_error(f.name() + ": tensor " + quoted_for_message(t.name) + " has no checksum (metadata key " +
                        quoted_for_message(std::string(kChecksumPrefix) + t.name) + ")");
    if (!is_sha256_hex(it->second))
      throw parse_error(f.name() + ": the checksum of tensor " + quoted_for_message(t.name) + " is " +
                        quoted_for_message(it->second) + ", not 64 lowercase hex digits");
  }
  const auto& md = f.metadata();
  for (auto it = md.lower_bound(std::string(kChecksumPrefix)); it != md.end() && it->first.starts_with(kChecksumPrefix);
       ++it) {
    const std::string_view tensor = std::string_view(it->first).substr(kChecksumPrefix.size());
    if (!f.contains(tensor))
      throw parse_error(f.name() + ": missing tensor " + quoted_for_message(tensor) +
                        " (the metadata has its checksum " + quoted_for_message(it->first) + ")");
  }
}

/// The SHA-256 the metadata records for `t`, and the one its bytes have.
struct checksum_check {
  std::string expected, actual;
  bool ok() const noexcept { return expected == actual; }
};

inline checksum_check checksum_of(const safetensors_file& f, const safetensors_tensor& t) {
  const auto it = f.metadata().find(std::string(kChecksumPrefix) + t.name);
  return checksum_check{it == f.metadata().end() ? std::string() : it->second, sha256_hex(t.data)};
}

/// Hashes `t` and throws parse_error naming the file, `context` and the tensor
/// when its SHA-256 is not the one the metadata records.
inline void verify_checksum(const safetensors_file& f, const safetensors_tensor& t, const std::string& context) {
  const checksum_check c = checksum_of(f, t);
  if (!c.ok())
    throw parse_error(file_context(f, context) + ": checksum mismatch in tensor " + quoted_for_message(t.name) +
                      ": its bytes hash to " + c.actual + ", the metadata says " +
                      (c.expected.empty() ? std::string("nothing") : c.expected) +
                      " (the file is damaged or was edited; load with verify_checksums = false to read it anyway)");
}

/// The tensor `name`, which the schema requires: parse_error naming the file,
/// `context` and the tensor when the file lacks it.
inline const safetensors_tensor& required_tensor(const safetensors_file& f, std::string_view name,
                                                 const std::string& context) {
  if (const safetensors_tensor* t = f.find_tensor(name)) return *t;
  throw parse_error(file_context(f, context) + ": missing tensor " + quoted_for_message(name));
}

inline std::string shape_text(std::span<const index_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += ']';
  return s;
}

/// Checks a tensor's dtype and shape against what the schema and metadata
/// say; parse_error naming the file, `context`, the tensor and both layouts.
inline void require_layout(const safetensors_file& f, const safetensors_tensor& t, safetensors_dtype dtype,
                           std::span<const index_t> shape, const std::string& context) {
  if (t.dtype != dtype || !std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end()))
    throw parse_error(file_context(f, context) + ": tensor " + t.describe() +
                      " disagrees with the metadata, which needs " + to_string(dtype) + " " + shape_text(shape));
}

}  // namespace detail
}  // namespace lqer::io
