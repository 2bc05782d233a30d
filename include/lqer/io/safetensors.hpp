// lqer — reading and writing safetensors files (Hugging Face's tensor container).
//
// The format (huggingface/safetensors, safetensors/src/tensor.rs):
//
//   offset 0     u64 N, little-endian: the length of the header
//   offset 8     N bytes of UTF-8 JSON, one object:
//                  {"__metadata__": {"key": "value", …},                 (optional)
//                   "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, …}
//                writers pad it with spaces to a multiple of 8 bytes
//   offset 8 + N the data section: each tensor's bytes, C order, little-endian,
//                at [begin, end) of data_offsets (relative to the section)
//
// Reading is defensive, because a model file is input from outside. The file is
// memory-mapped (io/mapped_file.hpp), never copied: a tensor's data is a view
// into the mapping. The header is parsed by the small JSON parser below, not by
// a library, in two passes: the first checks the JSON itself (RFC 8259 exactly:
// the whole header valid UTF-8 — no overlong forms, no encoded surrogates —,
// strings with control characters escaped and \u surrogates paired, numbers in
// JSON's grammar, no leading zeros, nothing but whitespace after the object,
// nesting at most safetensors_limits::max_json_depth deep, checked without
// recursion); the second reads the schema from the checked text. What is refused
// beyond JSON, each a parse_error naming the file and the byte offset:
//
//  * a file shorter than 8 bytes; a header length above the file's remaining
//    bytes or above safetensors_limits::max_header_bytes (100 MB, the limit of
//    Hugging Face's reader);
//  * a header that is not an object; a duplicate key at any level (tensor
//    names, fields of a tensor, metadata keys); an unknown field in a tensor's
//    entry or a missing one; a dtype name that is not one of safetensors'
//    (see safetensors_dtype);
//  * shape entries and data_offsets that are not non-negative integers
//    (2.0, 1e3 and -0 are refused, as serde does), that do not fit in 64 bits,
//    a rank above max_rank, a dimension or element count above max_elements;
//    data_offsets that are not exactly two numbers;
//  * `__metadata__` that is not an object of strings (null is read as no
//    metadata, as Hugging Face's Option<HashMap> does);
//  * data_offsets with begin > end, an end beyond the data section, a byte
//    length other than prod(shape) · the dtype's size (and a sub-byte dtype
//    whose elements do not fill whole bytes); tensors that overlap; and, as
//    Hugging Face's reader requires, a data section not covered exactly by the
//    tensors in offset order: no hole before, between or after them.
//
// Where this is stricter than Hugging Face's reader, on purpose: that reader
// keeps the last of two tensors or metadata keys of the same name and ignores
// unknown fields of a tensor's entry; here these are errors, because a file
// that two readers may read differently is not one to load. A byte-order mark,
// or any byte after the object but JSON whitespace, is refused by both.
//
// Alignment. The format does not promise that a tensor's bytes are aligned for
// its element type: an F16 tensor of odd length followed by an F32 one leaves
// the F32 data at an odd address. Writers that follow Hugging Face's (this one
// included) place tensors in decreasing element size after a header padded to
// 8 bytes, so every tensor is aligned there. The typed view as_span<T>()
// therefore requires alignment — no copy, ever — and refuses misaligned data
// with unsupported_error; to_vector<T>() copies and works on any file.
//
// Writing (safetensors_writer) produces what Hugging Face's `serialize` does:
// tensors sorted by decreasing dtype (its enum order, i.e. alignment) and then
// by name, `__metadata__` first with keys sorted, compact JSON with the fields
// in the order dtype, shape, data_offsets, the header padded with spaces to a
// multiple of 8. With at most one metadata key the bytes equal Python's
// safetensors.numpy.save_file (several keys: Hugging Face's order is a hash
// map's). The file is written atomically (io/atomic_file.hpp): a temporary file
// renamed over the target once complete; on any failure the target is unchanged
// and no temporary remains.
//
// Layering: the standard library, POSIX (mapped_file, atomic_file), config,
// error, format/fp16 and format/e8m0 (element types), npy (its message quoting).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/io/atomic_file.hpp"
#include "lqer/io/mapped_file.hpp"
#include "lqer/io/npy.hpp"

namespace lqer::io {

// Tensor data is handed out and written as the host stores it: only correct
// where the host's byte order is the format's.
static_assert(std::endian::native == std::endian::little,
              "lqer/io/safetensors.hpp reads and writes little-endian tensor data in place and so needs a "
              "little-endian host");

// ---------------------------------------------------------------------------
// Element types

/// safetensors' dtypes, in the order of its Rust enum `Dtype` — increasing
/// alignment, which is the order its writer (and safetensors_writer) sorts by.
enum class safetensors_dtype : std::uint8_t {
  boolean,      ///< "BOOL", one byte, 0 or 1
  f4,           ///< "F4", OCP MX FP4 (E2M1), two per byte
  f6_e2m3,      ///< "F6_E2M3", OCP MX FP6, 6 bits packed
  f6_e3m2,      ///< "F6_E3M2", OCP MX FP6, 6 bits packed
  u8,           ///< "U8"
  i8,           ///< "I8"
  f8_e5m2,      ///< "F8_E5M2"
  f8_e4m3,      ///< "F8_E4M3" (PyTorch float8_e4m3fn)
  f8_e8m0,      ///< "F8_E8M0", the OCP MX scale (lqer::e8m0)
  f8_e4m3fnuz,  ///< "F8_E4M3FNUZ"
  f8_e5m2fnuz,  ///< "F8_E5M2FNUZ"
  i16,          ///< "I16"
  u16,          ///< "U16"
  f16,          ///< "F16", IEEE binary16 (lqer::half_bits)
  bf16,         ///< "BF16", bfloat16
  i32,          ///< "I32"
  u32,          ///< "U32"
  f32,          ///< "F32"
  c64,          ///< "C64", complex of two F32
  f64,          ///< "F64"
  i64,          ///< "I64"
  u64,          ///< "U64"
};

/// Number of safetensors_dtype values.
inline constexpr std::size_t kSafetensorsDtypeCount = 22;

/// The dtype's name in the header: "F32", "BF16", "BOOL", …
constexpr const char* to_string(safetensors_dtype t) noexcept {
  switch (t) {
    case safetensors_dtype::boolean: return "BOOL";
    case safetensors_dtype::f4: return "F4";
    case safetensors_dtype::f6_e2m3: return "F6_E2M3";
    case safetensors_dtype::f6_e3m2: return "F6_E3M2";
    case safetensors_dtype::u8: return "U8";
    case safetensors_dtype::i8: return "I8";
    case safetensors_dtype::f8_e5m2: return "F8_E5M2";
    case safetensors_dtype::f8_e4m3: return "F8_E4M3";
    case safetensors_dtype::f8_e8m0: return "F8_E8M0";
    case safetensors_dtype::f8_e4m3fnuz: return "F8_E4M3FNUZ";
    case safetensors_dtype::f8_e5m2fnuz: return "F8_E5M2FNUZ";
    case safetensors_dtype::i16: return "I16";
    case safetensors_dtype::u16: return "U16";
    case safetensors_dtype::f16: return "F16";
    case safetensors_dtype::bf16: return "BF16";
    case safetensors_dtype::i32: return "I32";
    case safetensors_dtype::u32: return "U32";
    case safetensors_dtype::f32: return "F32";
    case safetensors_dtype::c64: return "C64";
    case safetensors_dtype::f64: return "F64";
    case safetensors_dtype::i64: return "I64";
    case safetensors_dtype::u64: return "U64";
  }
  return "unknown";
}

/// Bits per element: 4 and 6 for the packed MX floats, else 8 × bytes.
constexpr std::size_t bit_size(safetensors_dtype t) noexcept {
  switch (t) {
    case safetensors_dtype::f4: return 4;
    case safetensors_dtype::f6_e2m3:
    case safetensors_dtype::f6_e3m2: return 6;
    case safetensors_dtype::boolean:
    case safetensors_dtype::u8:
    case safetensors_dtype::i8:
    case safetensors_dtype::f8_e5m2:
    case safetensors_dtype::f8_e4m3:
    case safetensors_dtype::f8_e8m0:
    case safetensors_dtype::f8_e4m3fnuz:
    case safetensors_dtype::f8_e5m2fnuz: return 8;
    case safetensors_dtype::i16:
    case safetensors_dtype::u16:
    case safetensors_dtype::f16:
    case safetensors_dtype::bf16: return 16;
    case safetensors_dtype::i32:
    case safetensors_dtype::u32:
    case safetensors_dtype::f32: return 32;
    case safetensors_dtype::c64:
    case safetensors_dtype::f64:
    case safetensors_dtype::i64:
    case safetensors_dtype::u64: return 64;
  }
  return 0;
}

/// The dtype called `name` in a header ("F32"; case matters), or nullopt.
constexpr std::optional<safetensors_dtype> safetensors_dtype_from_name(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kSafetensorsDtypeCount; ++i) {
    const auto t = static_cast<safetensors_dtype>(i);
    if (name == to_string(t)) return t;
  }
  return std::nullopt;
}

/// Maps a C++ element type to its dtype, for the typed accessors and the
/// writer. Defined for float (F32), double (F64), lqer::half_bits (F16),
/// lqer::e8m0 (F8_E8M0), the fixed-width integers (I8 … U64) and bool (BOOL).
/// BF16 and the FP8 / FP4 / FP6 / complex dtypes have no C++ type here: read
/// their bytes (or to_float32 for BF16).
template <class T>
struct safetensors_dtype_of {};
template <>
struct safetensors_dtype_of<float> : std::integral_constant<safetensors_dtype, safetensors_dtype::f32> {};
template <>
struct safetensors_dtype_of<double> : std::integral_constant<safetensors_dtype, safetensors_dtype::f64> {};
template <>
struct safetensors_dtype_of<half_bits> : std::integral_constant<safetensors_dtype, safetensors_dtype::f16> {};
template <>
struct safetensors_dtype_of<e8m0> : std::integral_constant<safetensors_dtype, safetensors_dtype::f8_e8m0> {};
template <>
struct safetensors_dtype_of<std::int8_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::i8> {};
template <>
struct safetensors_dtype_of<std::uint8_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::u8> {};
template <>
struct safetensors_dtype_of<std::int16_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::i16> {};
template <>
struct safetensors_dtype_of<std::uint16_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::u16> {};
template <>
struct safetensors_dtype_of<std::int32_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::i32> {};
template <>
struct safetensors_dtype_of<std::uint32_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::u32> {};
template <>
struct safetensors_dtype_of<std::int64_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::i64> {};
template <>
struct safetensors_dtype_of<std::uint64_t> : std::integral_constant<safetensors_dtype, safetensors_dtype::u64> {};
template <>
struct safetensors_dtype_of<bool> : std::integral_constant<safetensors_dtype, safetensors_dtype::boolean> {};

/// A C++ type with a safetensors dtype (see safetensors_dtype_of).
template <class T>
concept safetensors_element = requires {
  safetensors_dtype_of<T>::value;
};

// ---------------------------------------------------------------------------
// Tensors

/// Bounds beyond "everything fits in the file", which is always enforced.
struct safetensors_limits {
  /// Largest header length accepted: Hugging Face's MAX_HEADER_SIZE. Parsed,
  /// a header takes up to about 10 times its size of memory (measured: 4.5×
  /// for a header of empty tensors, 9× for one of short metadata entries, each
  /// an std::map node), so this default admits about 1 GB; lower it for files
  /// from untrusted sources where that matters. Real headers are kilobytes.
  std::uint64_t max_header_bytes = 100'000'000;
  /// Deepest nesting of JSON arrays and objects anywhere in the header (a valid
  /// one needs 3): 128, serde_json's recursion limit (Hugging Face's parser).
  std::size_t max_json_depth = 128;
  /// Most dimensions of a tensor: numpy's NPY_MAXDIMS (64 since numpy 2).
  std::size_t max_rank = 64;
  /// Largest element count of a tensor, and largest single dimension. The
  /// per-dimension bound rejects shape [0, 2^62]: no bytes, but a caller
  /// looping over 2^62 empty rows would never finish (as gguf_limits).
  std::int64_t max_elements = std::int64_t{1} << 40;
};

/// One tensor of a safetensors file: its header entry and a view of its bytes
/// in the file's mapping (valid while the safetensors_file that owns it lives).
struct safetensors_tensor {
  std::string name;
  safetensors_dtype dtype = safetensors_dtype::f32;
  /// {} for a 0-d tensor (one element); C order, the last dimension fastest.
  std::vector<index_t> shape;
  index_t n_elements = 1;          ///< product of the shape
  std::uint64_t begin = 0;         ///< data_offsets[0], relative to the data section
  std::uint64_t end = 0;           ///< data_offsets[1]
  std::uint64_t offset = 0;        ///< absolute byte offset of the data in the file
  std::uint64_t entry_offset = 0;  ///< absolute byte offset of the entry's name in the header
  std::span<const std::byte> data;
  std::string_view file;  ///< the file's name, for messages

  index_t rank() const noexcept { return static_cast<index_t>(shape.size()); }

  /// "blk.0.w (F32, [2, 3])" for messages (the name quoted when not printable ASCII).
  std::string describe() const {
    std::string s = printable_name() + " (" + to_string(dtype) + ", [";
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (i) s += ", ";
      s += std::to_string(shape[i]);
    }
    s += "])";
    return s;
  }

  /// The data as a span of T, without a copy. value_error when T is not the
  /// tensor's dtype; unsupported_error when the data is not aligned for T (see
  /// the file comment: files from Hugging Face's writer or lqer's always are;
  /// to_vector copies from any file).
  template <safetensors_element T>
  std::span<const T> as_span() const {
    static_assert(!std::is_same_v<T, bool>,
                  "safetensors_tensor::as_span<bool>: a BOOL tensor's bytes may hold values other than 0 and 1, "
                  "which are not bool objects; use to_vector<bool>(), which checks them");
    check_dtype<T>("as_span");
    const auto n = static_cast<std::size_t>(n_elements);
    if (n == 0) return {};
    if (reinterpret_cast<std::uintptr_t>(data.data()) % alignof(T) != 0)
      throw unsupported_error(where() + ": its data at byte " + std::to_string(offset) + " is not aligned to " +
                              std::to_string(alignof(T)) + " bytes, which a zero-copy span of " + to_string(dtype) +
                              " needs; to_vector() copies it");
    // The mapping holds no C++ objects, formally; reading an aligned, read-only
    // mapping of trivially copyable values through T* is what every mmap-based
    // loader does (C++23 names it std::start_lifetime_as_array).
    return {reinterpret_cast<const T*>(data.data()), n};
  }

  /// A copy of the data as T (any alignment). value_error when T is not the
  /// tensor's dtype, or for bool when a byte is neither 0 nor 1. (Both
  /// accessors throw shape_error for a tensor built by hand whose data does
  /// not hold n_elements elements.)
  template <safetensors_element T>
  std::vector<T> to_vector() const {
    check_dtype<T>("to_vector");
    const auto n = static_cast<std::size_t>(n_elements);
    std::vector<T> out(n);
    if constexpr (std::is_same_v<T, bool>) {
      for (std::size_t i = 0; i < n; ++i) {
        const auto b = std::to_integer<unsigned>(data[i]);
        if (b > 1)
          throw value_error(where() + ": element " + std::to_string(i) + " is byte value " + std::to_string(b) +
                            "; BOOL elements are 0 or 1");
        out[i] = b != 0;
      }
    } else if (n != 0) {
      std::memcpy(out.data(), data.data(), n * sizeof(T));
    }
    return out;
  }

 private:
  std::string printable_name() const { return detail::quoted_for_message(name); }
  std::string where() const { return std::string(file) + ": tensor " + describe(); }

  template <class T>
  void check_dtype(const char* fn) const {
    constexpr safetensors_dtype want = safetensors_dtype_of<T>::value;
    if (dtype != want)
      throw value_error(where() + ": " + fn + " asked for " + to_string(want) + " but the tensor holds " +
                        to_string(dtype));
    // Always true of what the reader returns; a tensor built by hand may break it.
    if (n_elements < 0 || data.size() != static_cast<std::size_t>(n_elements) * sizeof(T))
      throw shape_error(where() + ": " + std::to_string(data.size()) + " bytes of data do not hold " +
                        std::to_string(n_elements) + " elements of " + to_string(want));
  }
};

/// The tensor's values as float32: F32 as is, F16 and BF16 exactly, F64
/// rounded to nearest (beyond ±FLT_MAX to ±Inf). unsupported_error, naming
/// the file and the tensor, for any other dtype (shape_error for a tensor
/// built by hand whose data does not hold its elements).
inline std::vector<float> to_float32(const safetensors_tensor& t) {
  const safetensors_dtype d = t.dtype;
  if (d != safetensors_dtype::f32 && d != safetensors_dtype::f16 && d != safetensors_dtype::bf16 &&
      d != safetensors_dtype::f64)
    throw unsupported_error(std::string(t.file) + ": tensor " + t.describe() +
                            ": to_float32 converts F32, F16, BF16 and F64 tensors only");
  const auto n = static_cast<std::size_t>(t.n_elements);
  const std::size_t width = bit_size(d) / 8;
  if (t.n_elements < 0 || t.data.size() != n * width)  // only for a tensor built by hand
    throw shape_error(std::string(t.file) + ": tensor " + t.describe() + ": " + std::to_string(t.data.size()) +
                      " bytes of data do not hold its elements");
  std::vector<float> out(n);
  const std::byte* p = t.data.data();
  // memcpy element by element: the bytes may be unaligned (see as_span).
  for (std::size_t i = 0; i < n; ++i) {
    const std::byte* e = p + i * width;
    if (d == safetensors_dtype::f32) {
      std::memcpy(&out[i], e, 4);
    } else if (d == safetensors_dtype::f16) {
      half_bits h;
      std::memcpy(&h.bits, e, 2);
      out[i] = half_to_float(h);
    } else if (d == safetensors_dtype::bf16) {
      std::uint16_t b = 0;  // bfloat16 is the top half of a binary32
      std::memcpy(&b, e, 2);
      out[i] = std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
    } else {
      double x = 0;
      std::memcpy(&x, e, 8);
      out[i] = static_cast<float>(x);  // IEEE binary32 includes ±Inf: out of range is defined
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Parsing (internals)

namespace detail {

/// The header length field.
inline constexpr std::size_t kSafetensorsLengthBytes = 8;

/// Position of the first byte of `s` that starts an ill-formed UTF-8 sequence
/// (RFC 3629: no overlong forms, no surrogates U+D800-DFFF, nothing above
/// U+10FFFF), or npos when all of `s` is well-formed.
inline std::size_t invalid_utf8_at(std::string_view s) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned c = byte(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Length of the sequence and the range of its second byte (Unicode Table 3-7).
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // no overlong 3-byte forms
      if (c == 0xed) hi = 0x9f;  // no surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // no overlong 4-byte forms
      if (c == 0xf4) hi = 0x8f;  // nothing above U+10FFFF
    } else {
      return i;  // a continuation byte, 0xc0/0xc1 (overlong) or 0xf5-0xff
    }
    if (s.size() - i < len) return i;
    if (byte(i + 1) < lo || byte(i + 1) > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return i;
    i += len;
  }
  return std::string_view::npos;
}

/// The JSON pass: checks that `text` is one JSON value and nothing else
/// (RFC 8259), iteratively — an explicit stack of open containers, bounded by
/// max_depth — so that no input can exhaust the call stack. `text` must be
/// valid UTF-8 already (invalid_utf8_at). Failures are parse_errors at byte
/// `base` + position.
class json_checker {
 public:
  json_checker(std::string_view text, std::uint64_t base, std::size_t max_depth, const std::string& name)
      : t_(text), base_(base), max_depth_(max_depth), name_(name) {}

  void run() {
    std::vector<char> open;  // '{' or '[' per open container
    bool want_value = true;
    for (;;) {
      skip_ws();
      if (want_value) {
        const char c = peek();
        if (c == '{' || c == '[') {
          if (open.size() >= max_depth_)
            fail(pos_, "arrays and objects nest deeper than " + std::to_string(max_depth_) +
                           " levels (safetensors_limits::max_json_depth)");
          open.push_back(c);
          ++pos_;
          skip_ws();
          if (peek() == (c == '{' ? '}' : ']')) {
            ++pos_;
            open.pop_back();
            want_value = false;
          } else if (c == '{') {
            member_name();
          }
          continue;
        }
        scalar();
        want_value = false;
        continue;
      }
      if (open.empty()) {
        if (pos_ != t_.size()) fail(pos_, "unexpected " + here() + " after the end of the header's JSON value");
        return;
      }
      const char top = open.back();
      if (peek() == ',') {
        ++pos_;
        if (top == '{') {
          skip_ws();
          member_name();
        }
        want_value = true;
      } else if (peek() == (top == '{' ? '}' : ']')) {
        ++pos_;
        open.pop_back();
      } else {
        fail(pos_, std::string("expected ',' or '") + (top == '{' ? '}' : ']') + "', found " + here());
      }
    }
  }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw parse_error(name_ + ": byte " + std::to_string(base_ + at) + ": the header is not valid JSON: " + what);
  }
  bool at_end() const noexcept { return pos_ >= t_.size(); }
  char peek() const noexcept { return at_end() ? '\0' : t_[pos_]; }
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
  static bool is_hex(char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

  /// What is at the current position, for messages: "the end of the header", "'x'", "byte 0xNN".
  std::string here() const {
    if (at_end()) return "the end of the header";
    const auto c = static_cast<unsigned char>(t_[pos_]);
    if (c >= 0x21 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    static constexpr char kHex[] = "0123456789abcdef";
    return std::string("byte 0x") + kHex[c >> 4] + kHex[c & 15];
  }

  void skip_ws() noexcept {
    while (!at_end() && (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) ++pos_;
  }

  /// A member's name and the ':' after it.
  void member_name() {
    if (peek() != '"') fail(pos_, "expected a string (a member's name), found " + here());
    string();
    skip_ws();
    if (peek() != ':') fail(pos_, "expected ':' after a member's name, found " + here());
    ++pos_;
  }

  void scalar() {
    const char c = peek();
    if (c == '"') {
      string();
    } else if (c == '-' || is_digit(c)) {
      number();
    } else if (t_.substr(pos_, 4) == "true" || t_.substr(pos_, 4) == "null") {
      pos_ += 4;
    } else if (t_.substr(pos_, 5) == "false") {
      pos_ += 5;
    } else {
      fail(pos_, "expected a value, found " + here());
    }
  }

  /// 4 hex digits at `at` as a number; fails unless all four are there.
  unsigned hex4(std::size_t at) const {
    if (t_.size() - at < 4) fail(at, "a \\u escape needs 4 hex digits");
    unsigned v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char h = t_[at + k];
      if (!is_hex(h)) fail(at, "a \\u escape needs 4 hex digits");
      v = v * 16 + static_cast<unsigned>(is_digit(h) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
  }

  void string() {
    const std::size_t start = pos_++;
    for (;;) {
      if (at_end()) fail(start, "unterminated string");
      const auto c = static_cast<unsigned char>(t_[pos_]);
      if (c == '"') {
        ++pos_;
        return;
      }
      if (c < 0x20)
        fail(pos_, "control character " + here() + " in a string (JSON requires it escaped, e.g. \\n or \\u0001)");
      if (c != '\\') {
        ++pos_;
        continue;
      }
      const char e = pos_ + 1 < t_.size() ? t_[pos_ + 1] : '\0';
      if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
        pos_ += 2;
        continue;
      }
      if (e != 'u') fail(pos_, "invalid escape in a string (JSON has \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
      const unsigned u = hex4(pos_ + 2);
      // UTF-16 surrogates: a high one must be followed by a low one, which
      // never stands alone; anything else is not a character.
      if (u >= 0xdc00 && u <= 0xdfff) fail(pos_, "unpaired UTF-16 low surrogate \\u escape");
      if (u >= 0xd800 && u <= 0xdbff) {
        if (t_.substr(pos_ + 6, 2) != "\\u") fail(pos_, "UTF-16 high surrogate \\u escape without its low surrogate");
        const unsigned low = hex4(pos_ + 8);
        if (low < 0xdc00 || low > 0xdfff) fail(pos_, "UTF-16 high surrogate \\u escape without its low surrogate");
        pos_ += 12;
      } else {
        pos_ += 6;
      }
    }
  }

  void number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (is_digit(peek())) fail(start, "a number with a leading zero");
    } else if (is_digit(peek())) {
      while (is_digit(peek())) ++pos_;
    } else {
      fail(pos_, "expected a digit, found " + here());
    }
    if (peek() == '.') {
      ++pos_;
      if (!is_digit(peek())) fail(pos_, "expected a digit after the decimal point, found " + here());
      while (is_digit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!is_digit(peek())) fail(pos_, "expected a digit in the exponent, found " + here());
      while (is_digit(peek())) ++pos_;
    }
  }

  std::string_view t_;
  std::uint64_t base_;
  std::size_t max_depth_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

/// The schema pass over a header that json_checker accepted: reads the
/// metadata and the tensor entries, refusing what the format does not allow
/// (see the file comment). Positions are absolute file offsets in messages.
class safetensors_header_reader {
 public:
  safetensors_header_reader(std::string_view text, std::uint64_t base, const safetensors_limits& limits,
                            const std::string& name)
      : t_(text), base_(base), limits_(limits), name_(name) {}

  std::map<std::string, std::string> metadata;
  std::vector<safetensors_tensor> tensors;
  std::vector<std::uint64_t> offsets_at;  ///< absolute byte of each tensor's data_offsets value

  void run() {
    skip_ws();
    if (peek() != '{') fail(pos_, "the header must be a JSON object, not " + kind_here());
    ++pos_;
    skip_ws();
    bool seen_metadata = false;
    while (peek() != '}') {
      const std::size_t key_at = pos_;
      std::string key = string();
      colon();
      if (key == "__metadata__") {
        if (seen_metadata) fail(key_at, "duplicate key \"__metadata__\"");
        seen_metadata = true;
        read_metadata();
      } else {
        read_tensor(std::move(key), key_at);
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      }
    }
  }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& what) const {
    throw parse_error(name_ + ": byte " + std::to_string(base_ + at) + ": " + what);
  }
  char peek() const noexcept { return pos_ < t_.size() ? t_[pos_] : '\0'; }
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
  void skip_ws() noexcept {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\t' || t_[pos_] == '\n' || t_[pos_] == '\r')) ++pos_;
  }
  void colon() {
    skip_ws();
    ++pos_;  // ':' (json_checker saw it)
    skip_ws();
  }

  /// The kind of JSON value at the current position, for messages.
  std::string kind_here() const {
    switch (peek()) {
      case '{': return "an object";
      case '[': return "an array";
      case '"': return "a string";
      case 't':
      case 'f': return "a boolean";
      case 'n': return "null";
      default: return "the number " + number_text();
    }
  }

  /// The JSON number starting at the current position, as written.
  std::string number_text() const {
    std::size_t e = pos_;
    while (e < t_.size() &&
           (is_digit(t_[e]) || t_[e] == '-' || t_[e] == '+' || t_[e] == '.' || t_[e] == 'e' || t_[e] == 'E'))
      ++e;
    return std::string(t_.substr(pos_, e - pos_));
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  unsigned hex4(std::size_t at) const {
    unsigned v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char h = t_[at + k];
      v = v * 16 + static_cast<unsigned>(is_digit(h) ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
  }

  /// The string at the current position (a '"'), escapes decoded to UTF-8.
  std::string string() {
    ++pos_;
    const std::size_t start = pos_;
    // Most strings have no escape: one scan, one copy.
    while (t_[pos_] != '"' && t_[pos_] != '\\') ++pos_;
    std::string out(t_.substr(start, pos_ - start));
    while (t_[pos_] != '"') {
      if (t_[pos_] != '\\') {
        out += t_[pos_++];
        continue;
      }
      const char e = t_[pos_ + 1];
      if (e == 'u') {
        unsigned cp = hex4(pos_ + 2);
        pos_ += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {  // json_checker saw the low surrogate follow
          cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(pos_ + 2) - 0xdc00);
          pos_ += 6;
        }
        append_utf8(out, cp);
        continue;
      }
      switch (e) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        default: out += e; break;  // " \ /
      }
      pos_ += 2;
    }
    ++pos_;
    return out;
  }

  /// A non-negative integer (a shape entry or an offset) at the current position.
  std::uint64_t uint(const std::string& what) {
    const std::size_t at = pos_;
    if (peek() == '-') fail(at, what + " is " + number_text() + "; it must be a non-negative integer");
    if (!is_digit(peek())) fail(at, what + " must be a non-negative integer, not " + kind_here());
    std::uint64_t v = 0;
    bool overflow = false;
    while (is_digit(peek())) {
      const auto d = static_cast<std::uint64_t>(peek() - '0');
      if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) overflow = true;
      v = v * 10 + d;
      ++pos_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') {
      pos_ = at;
      fail(at, what + " is " + number_text() + ", not an integer");
    }
    if (overflow) {
      pos_ = at;
      fail(at, what + " is " + number_text() + ", which does not fit in 64 bits");
    }
    return v;
  }

  void read_metadata() {
    if (t_.substr(pos_, 4) == "null") {  // Hugging Face's reader: Option<HashMap>::None
      pos_ += 4;
      return;
    }
    if (peek() != '{') fail(pos_, "\"__metadata__\" must be an object of strings, not " + kind_here());
    ++pos_;
    skip_ws();
    while (peek() != '}') {
      const std::size_t key_at = pos_;
      std::string key = string();
      colon();
      if (peek() != '"')
        fail(pos_, "\"__metadata__\" value of key " + quoted_for_message(key) + " is " + kind_here() +
                       "; metadata values must be strings");
      std::string value = string();
      if (!metadata.emplace(key, std::move(value)).second)
        fail(key_at, "duplicate \"__metadata__\" key " + quoted_for_message(key));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      }
    }
    ++pos_;
  }

  void read_tensor(std::string name, std::size_t key_at) {
    safetensors_tensor t;
    t.name = std::move(name);
    t.entry_offset = base_ + key_at;
    const std::string what = "tensor " + quoted_for_message(t.name);
    if (peek() != '{')
      fail(pos_, what + ": its entry must be an object {\"dtype\", \"shape\", \"data_offsets\"}, not " + kind_here());
    ++pos_;
    skip_ws();
    bool seen_dtype = false, seen_shape = false, seen_offsets = false;
    std::size_t offsets_pos = 0;
    while (peek() != '}') {
      const std::size_t field_at = pos_;
      const std::string field = string();
      colon();
      const auto once = [&](bool& seen) {
        if (seen) fail(field_at, what + ": duplicate field " + quoted_for_message(field));
        seen = true;
      };
      if (field == "dtype") {
        once(seen_dtype);
        if (peek() != '"') fail(pos_, what + ": \"dtype\" must be a string, not " + kind_here());
        const std::size_t at = pos_;
        const std::string dtype = string();
        const auto d = safetensors_dtype_from_name(dtype);
        if (!d)
          fail(at, what + ": unknown dtype " + quoted_for_message(dtype) +
                       " (safetensors has BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C64, "
                       "F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, F4, F6_E2M3, F6_E3M2)");
        t.dtype = *d;
      } else if (field == "shape") {
        once(seen_shape);
        read_shape(t, what);
      } else if (field == "data_offsets") {
        once(seen_offsets);
        offsets_pos = pos_;
        read_offsets(t, what);
      } else {
        fail(field_at, what + ": unknown field " + quoted_for_message(field) +
                           " (a tensor's entry has \"dtype\", \"shape\" and \"data_offsets\")");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      }
    }
    ++pos_;
    if (!seen_dtype) fail(key_at, what + ": its entry has no \"dtype\"");
    if (!seen_shape) fail(key_at, what + ": its entry has no \"shape\"");
    if (!seen_offsets) fail(key_at, what + ": its entry has no \"data_offsets\"");
    tensors.push_back(std::move(t));
    offsets_at.push_back(base_ + offsets_pos);
  }

  void read_shape(safetensors_tensor& t, const std::string& what) {
    if (peek() != '[') fail(pos_, what + ": \"shape\" must be an array of non-negative integers, not " + kind_here());
    ++pos_;
    skip_ws();
    // Two products, each bounded before it is formed: of every dimension (the
    // element count) and of the non-zero ones (so that [0, 2^40, 2^40] is refused).
    std::int64_t elements = 1, nonzero = 1;
    while (peek() != ']') {
      const std::size_t at = pos_;
      if (t.shape.size() == limits_.max_rank)
        fail(at, what + ": \"shape\" has more than " + std::to_string(limits_.max_rank) +
                     " dimensions (safetensors_limits::max_rank)");
      const std::uint64_t d = uint(what + ": \"shape\" entry " + std::to_string(t.shape.size()));
      if (d > static_cast<std::uint64_t>(limits_.max_elements))
        fail(at, what + ": dimension " + std::to_string(t.shape.size()) + " is " + std::to_string(d) +
                     ", beyond the limit of " + std::to_string(limits_.max_elements) +
                     " (safetensors_limits::max_elements)");
      const auto sd = static_cast<std::int64_t>(d);
      if (sd == 0) {
        elements = 0;
      } else {
        if (nonzero > limits_.max_elements / sd)
          fail(at, what + ": \"shape\" has more than " + std::to_string(limits_.max_elements) +
                       " elements (safetensors_limits::max_elements)");
        nonzero *= sd;
        elements = elements == 0 ? 0 : nonzero;
      }
      t.shape.push_back(static_cast<index_t>(sd));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      }
    }
    ++pos_;
    t.n_elements = static_cast<index_t>(elements);
  }

  void read_offsets(safetensors_tensor& t, const std::string& what) {
    const std::size_t at = pos_;
    const std::string two = what + ": \"data_offsets\" must be two integers [begin, end]";
    if (peek() != '[') fail(at, two + ", not " + kind_here());
    ++pos_;
    skip_ws();
    std::array<std::uint64_t, 2> v{};
    for (std::size_t i = 0; i < 2; ++i) {
      if (peek() == ']') fail(at, two + "; it has " + std::to_string(i) + (i == 1 ? " entry" : " entries"));
      v[i] = uint(what + ": \"data_offsets\" entry " + std::to_string(i));
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      }
    }
    if (peek() != ']') fail(at, two + "; it has more than two entries");
    ++pos_;
    t.begin = v[0];
    t.end = v[1];
  }

  std::string_view t_;
  std::uint64_t base_;
  safetensors_limits limits_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

/// Places the tensors in the data section `data` (the file's bytes from
/// `data_start` on) and checks what the format requires of their offsets,
/// lengths and order (see the file comment). Tensors are in header order.
inline void place_safetensors_data(std::vector<safetensors_tensor>& tensors, const std::vector<std::uint64_t>& at,
                                   std::span<const std::byte> data, std::uint64_t data_start, const std::string& name) {
  const auto fail = [&](std::uint64_t byte, const std::string& what) {
    throw parse_error(name + ": byte " + std::to_string(byte) + ": " + what);
  };
  const std::uint64_t size = data.size();
  const auto range = [](std::uint64_t b, std::uint64_t e) {
    return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
  };
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    safetensors_tensor& t = tensors[i];
    const std::string what = "tensor " + t.describe() + ": data_offsets " + range(t.begin, t.end);
    if (t.begin > t.end) fail(at[i], what + " begin after they end");
    if (t.end > size)
      fail(at[i], what + " end beyond the data section, which has " + std::to_string(size) + " bytes (file bytes " +
                      std::to_string(data_start) + " to " + std::to_string(data_start + size) +
                      "): the file is truncated or the offsets are wrong");
    // n_elements ≤ 2^40 (safetensors_limits caps it far lower than 2^57) and
    // bit_size ≤ 64: the product stays below 2^64.
    const std::uint64_t bits = static_cast<std::uint64_t>(t.n_elements) * bit_size(t.dtype);
    if (bits % 8 != 0)
      fail(at[i], "tensor " + t.describe() + ": " + std::to_string(t.n_elements) + " elements of " +
                      std::to_string(bit_size(t.dtype)) + " bits do not fill whole bytes");
    if (t.end - t.begin != bits / 8)
      fail(at[i], what + " hold " + std::to_string(t.end - t.begin) + " bytes, but " + std::to_string(t.n_elements) +
                      " elements of " + to_string(t.dtype) + " take " + std::to_string(bits / 8));
    t.offset = data_start + t.begin;
    t.data = data.subspan(static_cast<std::size_t>(t.begin), static_cast<std::size_t>(t.end - t.begin));
  }
  // In offset order the tensors must tile [0, size): each begins where the
  // previous one ended. Empty tensors sort before a non-empty one at the same
  // begin, so they may sit at any boundary (Hugging Face's rule exactly).
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const auto& x = tensors[a];
    const auto& y = tensors[b];
    return x.begin != y.begin ? x.begin < y.begin : (x.end != y.end ? x.end < y.end : a < b);
  });
  std::uint64_t covered = 0;
  std::size_t prev = tensors.size();  // the tensor that ends at `covered`
  for (const std::size_t i : order) {
    const safetensors_tensor& t = tensors[i];
    if (t.begin < covered)
      fail(at[i], "tensor " + t.describe() + ": data_offsets " + range(t.begin, t.end) + " overlap tensor " +
                      tensors[prev].describe() + "'s " + range(tensors[prev].begin, tensors[prev].end));
    if (t.begin > covered)
      fail(at[i],
           "bytes [" + std::to_string(covered) + ", " + std::to_string(t.begin) +
               ") of the data section, before tensor " + t.describe() +
               ", belong to no tensor (safetensors requires the tensors to cover the data section without holes)");
    covered = t.end;
    prev = i;
  }
  if (covered != size)
    fail(data_start + covered, std::to_string(size - covered) + " bytes after the last tensor's data (bytes [" +
                                   std::to_string(covered) + ", " + std::to_string(size) +
                                   ") of the data section) belong to no tensor (safetensors requires the tensors to "
                                   "cover the data section without holes)");
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The file

/// An open safetensors file: metadata and tensors, the data mapped read-only.
/// Move-only. Every view it hands out (tensor data, names()) points into memory
/// it owns and stays valid until the safetensors_file that owns it (the
/// original or the one it was moved into) is destroyed.
///
///   auto f = lqer::io::safetensors_file::open("layer.safetensors");
///   const auto& w = f.tensor("w");                 // w.dtype, w.shape, w.data (bytes)
///   std::span<const float> v = w.as_span<float>(); // zero-copy, F32 only
///   std::string version = f.metadata().at("lqer.version");
class safetensors_file {
 public:
  safetensors_file() = default;

  /// Maps and parses `path` (see the file comment for what is checked). Throws
  /// io_error when the file cannot be opened or mapped, parse_error for its content.
  static safetensors_file open(const std::filesystem::path& path, const safetensors_limits& limits = {}) {
    auto c = std::make_unique<contents>();
    c->name = path.string();
    c->map = mapped_file::open(path);
    c->bytes = c->map.bytes();
    return safetensors_file(std::move(c), limits);
  }

  /// Parses a safetensors image held in memory (taken over, not copied);
  /// `name` is what messages call it.
  static safetensors_file from_bytes(std::vector<std::byte> bytes, std::string name,
                                     const safetensors_limits& limits = {}) {
    auto c = std::make_unique<contents>();
    c->name = std::move(name);
    c->owned = std::move(bytes);
    c->bytes = c->owned;
    return safetensors_file(std::move(c), limits);
  }

  const std::string& name() const { return get().name; }
  /// The whole file.
  std::span<const std::byte> bytes() const { return get().bytes; }
  /// N, the header's length in bytes (padding included).
  std::uint64_t header_size() const { return get().header_size; }
  /// 8 + N: where the data section starts.
  std::uint64_t data_offset() const { return detail::kSafetensorsLengthBytes + get().header_size; }

  /// `__metadata__`: empty when the header has none.
  const std::map<std::string, std::string>& metadata() const { return get().metadata; }

  /// Every tensor, in header order (the order of the keys in the JSON; the
  /// data may be in another order).
  std::span<const safetensors_tensor> tensors() const { return get().tensors; }
  /// The tensors' names, in header order.
  std::vector<std::string_view> names() const {
    std::vector<std::string_view> out;
    out.reserve(get().tensors.size());
    for (const auto& t : get().tensors) out.emplace_back(t.name);
    return out;
  }

  /// The tensor called `name`, or nullptr.
  const safetensors_tensor* find_tensor(std::string_view name) const {
    const contents& c = get();
    const auto it = std::lower_bound(c.by_name.begin(), c.by_name.end(), name,
                                     [&](std::size_t i, std::string_view n) { return c.tensors[i].name < n; });
    return it != c.by_name.end() && c.tensors[*it].name == name ? &c.tensors[*it] : nullptr;
  }
  bool contains(std::string_view name) const { return find_tensor(name) != nullptr; }
  /// The tensor called `name`; value_error naming the file and the tensor when absent.
  const safetensors_tensor& tensor(std::string_view name) const {
    if (const safetensors_tensor* t = find_tensor(name)) return *t;
    throw value_error(get().name + ": has no tensor " + detail::quoted_for_message(name));
  }

 private:
  // Heap-held, so that the views into it (each tensor's `file`) survive moving
  // the safetensors_file.
  struct contents {
    std::string name;
    mapped_file map;
    std::vector<std::byte> owned;
    std::span<const std::byte> bytes;
    std::uint64_t header_size = 0;
    std::map<std::string, std::string> metadata;
    std::vector<safetensors_tensor> tensors;
    std::vector<std::size_t> by_name;
  };

  safetensors_file(std::unique_ptr<contents> c, const safetensors_limits& limits) {
    parse(*c, limits);
    c_ = std::move(c);
  }

  static void parse(contents& c, const safetensors_limits& limits) {
    const std::string& name = c.name;
    const auto fail = [&](std::uint64_t byte, const std::string& what) {
      throw parse_error(name + ": byte " + std::to_string(byte) + ": " + what);
    };
    const std::span<const std::byte> b = c.bytes;
    constexpr std::size_t kLen = detail::kSafetensorsLengthBytes;
    if (b.size() < kLen)
      fail(0,
           "truncated safetensors file: " + std::to_string(b.size()) + " bytes, fewer than the 8-byte header length");
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), kLen);  // little-endian (static_assert above)
    if (n > limits.max_header_bytes)
      fail(0, "the header length " + std::to_string(n) + " is above the limit of " +
                  std::to_string(limits.max_header_bytes) +
                  " bytes (safetensors_limits::max_header_bytes, Hugging Face's MAX_HEADER_SIZE)");
    if (n > b.size() - kLen)
      fail(0, "truncated safetensors file: the header length is " + std::to_string(n) + " bytes but only " +
                  std::to_string(b.size() - kLen) + " bytes follow the length");
    c.header_size = n;
    const std::string_view text(reinterpret_cast<const char*>(b.data()) + kLen, static_cast<std::size_t>(n));
    if (const std::size_t bad = detail::invalid_utf8_at(text); bad != std::string_view::npos)
      fail(kLen + bad, "the header is not valid UTF-8 (byte value " +
                           std::to_string(static_cast<unsigned char>(text[bad])) + " starts no UTF-8 character)");
    detail::json_checker(text, kLen, limits.max_json_depth, name).run();
    detail::safetensors_header_reader r(text, kLen, limits, name);
    r.run();
    c.metadata = std::move(r.metadata);
    c.tensors = std::move(r.tensors);
    for (auto& t : c.tensors) t.file = c.name;

    // Names are unique (Hugging Face's reader would keep the last of two).
    c.by_name.resize(c.tensors.size());
    for (std::size_t i = 0; i < c.by_name.size(); ++i) c.by_name[i] = i;
    std::stable_sort(c.by_name.begin(), c.by_name.end(),
                     [&](std::size_t x, std::size_t y) { return c.tensors[x].name < c.tensors[y].name; });
    for (std::size_t i = 1; i < c.by_name.size(); ++i) {
      const safetensors_tensor& first = c.tensors[c.by_name[i - 1]];
      const safetensors_tensor& again = c.tensors[c.by_name[i]];
      if (first.name == again.name)
        fail(again.entry_offset, "duplicate tensor name " + detail::quoted_for_message(again.name) +
                                     " (first at byte " + std::to_string(first.entry_offset) + ")");
    }
    const std::uint64_t data_start = kLen + n;
    detail::place_safetensors_data(c.tensors, r.offsets_at, b.subspan(static_cast<std::size_t>(data_start)), data_start,
                                   name);
  }

  const contents& get() const {
    if (!c_) throw value_error("safetensors_file: used after being moved from (or default-constructed)");
    return *c_;
  }

  std::unique_ptr<const contents> c_;
};

// ---------------------------------------------------------------------------
// Writing

namespace detail {

/// `s` as a JSON string, escaped as serde_json (Hugging Face's writer) escapes:
/// " and \ with a backslash, \b \f \n \r \t, other control characters as
/// \u00xx, everything else (UTF-8 included) as is.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace detail

/// Collects named tensors and metadata, then writes them as one safetensors
/// file (see the file comment for the layout). Tensor data is viewed, not
/// copied: each span given to add() must stay valid and unchanged until
/// write() or encode() has returned.
///
///   lqer::io::safetensors_writer w;
///   w.add("w", shape, std::span<const float>(values));       // dtype F32 from the type
///   w.add("codes", lqer::io::safetensors_dtype::u8, shape, bytes);
///   w.set_metadata("lqer.version", "0.1.0");
///   w.write("layer.safetensors");                            // atomic
///
/// Everything is checked when it is added, so that write() fails only for the
/// file system: value_error for an empty, reserved ("__metadata__"), repeated
/// or non-UTF-8 name, or a metadata key or value that is not UTF-8; shape_error
/// for a negative dimension, an element count that overflows, a byte count
/// other than the shape's, or a sub-byte dtype whose elements do not fill
/// whole bytes.
class safetensors_writer {
 public:
  /// Adds a tensor of `dtype` and `shape` whose bytes are `data` (C order, little-endian).
  safetensors_writer& add(std::string name, safetensors_dtype dtype, std::span<const index_t> shape,
                          std::span<const std::byte> data) {
    const std::string what = "safetensors_writer::add: tensor " + detail::quoted_for_message(name);
    if (name.empty()) throw value_error("safetensors_writer::add: a tensor name must not be empty");
    if (name == "__metadata__") throw value_error(what + ": the name \"__metadata__\" is reserved for the metadata");
    check_utf8(name, what + ": the name");
    if (std::any_of(entries_.begin(), entries_.end(), [&](const entry& e) { return e.name == name; }))
      throw value_error(what + ": a tensor of that name was already added");
    std::uint64_t count = 1;
    for (const index_t d : shape) {
      if (d < 0) throw shape_error(what + ": shape " + detail::format_shape(shape) + " has a negative dimension");
      const auto ud = static_cast<std::uint64_t>(d);
      if (ud != 0 && count > std::numeric_limits<std::uint64_t>::max() / 64 / ud)
        throw shape_error(what + ": shape " + detail::format_shape(shape) + ": its byte size overflows");
      count *= ud;
    }
    const std::uint64_t bits = count * bit_size(dtype);  // count < 2^64 / 64: no overflow
    if (bits % 8 != 0)
      throw shape_error(what + ": " + std::to_string(count) + " elements of " + to_string(dtype) + " (" +
                        std::to_string(bit_size(dtype)) + " bits) do not fill whole bytes");
    if (data.size() != bits / 8)
      throw shape_error(what + ": shape " + detail::format_shape(shape) + " of " + to_string(dtype) + " needs " +
                        std::to_string(bits / 8) + " bytes, the data has " + std::to_string(data.size()));
    entries_.push_back(entry{std::move(name), dtype, std::vector<index_t>(shape.begin(), shape.end()), data});
    return *this;
  }

  /// Adds a tensor of a C++ element type (its dtype from safetensors_dtype_of).
  template <safetensors_element T>
  safetensors_writer& add(std::string name, std::span<const index_t> shape, std::span<const T> data) {
    return add(std::move(name), safetensors_dtype_of<T>::value, shape, std::as_bytes(data));
  }

  /// Adds a tensor from a contiguous range (std::vector, std::array, …) of a
  /// C++ element type. The range is viewed, so a temporary container (which
  /// would be gone by write()) does not compile; views such as std::span may be.
  template <std::ranges::contiguous_range R>
  requires std::ranges::sized_range<R> && safetensors_element<std::remove_cv_t<std::ranges::range_value_t<R>>>
      safetensors_writer& add(std::string name, std::span<const index_t> shape, R&& data) {
    static_assert(std::is_lvalue_reference_v<R> || std::ranges::borrowed_range<R>,
                  "safetensors_writer::add views the data until write(): pass a container that outlives the call, "
                  "not a temporary");
    using T = std::remove_cv_t<std::ranges::range_value_t<R>>;
    return add(std::move(name), shape, std::span<const T>(std::ranges::data(data), std::ranges::size(data)));
  }

  /// Sets (or replaces) one `__metadata__` entry.
  safetensors_writer& set_metadata(std::string key, std::string value) {
    check_utf8(key, "safetensors_writer::set_metadata: the key " + detail::quoted_for_message(key));
    check_utf8(value, "safetensors_writer::set_metadata: the value of key " + detail::quoted_for_message(key));
    metadata_[std::move(key)] = std::move(value);
    return *this;
  }

  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// Number of tensors added.
  std::size_t size() const noexcept { return entries_.size(); }

  /// The header as written: JSON padded with spaces to a multiple of 8 bytes
  /// (without the 8-byte length before it). value_error when it exceeds
  /// safetensors_limits{}.max_header_bytes, which readers refuse.
  std::string header() const {
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata_) {
        if (!first) h += ',';
        first = false;
        detail::append_json_string(h, k);
        h += ':';
        detail::append_json_string(h, v);
      }
      h += '}';
    }
    std::uint64_t offset = 0;
    for (const std::size_t i : order()) {
      const entry& e = entries_[i];
      if (h.size() > 1) h += ',';
      detail::append_json_string(h, e.name);
      h += ":{\"dtype\":\"";
      h += to_string(e.dtype);
      h += "\",\"shape\":[";
      for (std::size_t d = 0; d < e.shape.size(); ++d) {
        if (d) h += ',';
        h += std::to_string(e.shape[d]);
      }
      h += "],\"data_offsets\":[";
      h += std::to_string(offset);
      h += ',';
      offset += e.data.size();
      h += std::to_string(offset);
      h += "]}";
    }
    h += '}';
    // Hugging Face pads to 8 bytes so that the data section, and with the
    // tensors sorted by decreasing element size every tensor, is aligned.
    h.append((8 - h.size() % 8) % 8, ' ');
    if (h.size() > safetensors_limits{}.max_header_bytes)
      throw value_error("safetensors_writer: the header would be " + std::to_string(h.size()) + " bytes, above the " +
                        std::to_string(safetensors_limits{}.max_header_bytes) + " bytes safetensors readers accept");
    return h;
  }

  /// The whole file in memory.
  std::vector<std::byte> encode() const {
    const std::string h = header();
    std::size_t total = detail::kSafetensorsLengthBytes + h.size();
    for (const entry& e : entries_) total += e.data.size();
    std::vector<std::byte> out(total);
    const std::uint64_t n = h.size();
    std::memcpy(out.data(), &n, detail::kSafetensorsLengthBytes);
    std::memcpy(out.data() + detail::kSafetensorsLengthBytes, h.data(), h.size());
    std::size_t at = detail::kSafetensorsLengthBytes + h.size();
    for (const std::size_t i : order()) {
      const auto d = entries_[i].data;
      if (!d.empty()) std::memcpy(out.data() + at, d.data(), d.size());
      at += d.size();
    }
    return out;
  }

  /// Writes the file atomically (io/atomic_file.hpp): the target is replaced
  /// only once every byte is written; on failure (io_error naming the file, or
  /// value_error for a header too large) it is unchanged and no temporary file
  /// remains. An existing target's permission bits are kept; a read-only one
  /// is refused. The data is streamed from the spans given to add(), not copied.
  void write(const std::filesystem::path& path) const {
    const std::string h = header();
    std::array<std::byte, detail::kSafetensorsLengthBytes> len{};
    const std::uint64_t n = h.size();
    std::memcpy(len.data(), &n, len.size());
    std::vector<std::span<const std::byte>> parts;
    parts.reserve(2 + entries_.size());
    parts.emplace_back(len);
    parts.push_back(std::as_bytes(std::span(h.data(), h.size())));
    for (const std::size_t i : order()) parts.push_back(entries_[i].data);
    detail::write_file_atomically(path, parts);
  }

 private:
  struct entry {
    std::string name;
    safetensors_dtype dtype;
    std::vector<index_t> shape;
    std::span<const std::byte> data;
  };

  static void check_utf8(std::string_view s, const std::string& what) {
    if (const std::size_t bad = detail::invalid_utf8_at(s); bad != std::string_view::npos)
      throw value_error(what + " is not valid UTF-8 (at byte " + std::to_string(bad) +
                        "); a safetensors header is UTF-8 JSON");
  }

  /// The order tensors are written in: Hugging Face's, decreasing dtype (its
  /// enum order, i.e. alignment) and then increasing name.
  std::vector<std::size_t> order() const {
    std::vector<std::size_t> o(entries_.size());
    for (std::size_t i = 0; i < o.size(); ++i) o[i] = i;
    std::sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) {
      const entry& x = entries_[a];
      const entry& y = entries_[b];
      return x.dtype != y.dtype ? x.dtype > y.dtype : x.name < y.name;
    });
    return o;
  }

  std::vector<entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lqer::io
