// lqer — reading GGUF files (llama.cpp / ggml's model container), versions 2 and 3.
//
// The format (ggml's docs/gguf.md and gguf.cpp), all integers little-endian:
//
//   offset 0   magic "GGUF"
//   offset 4   u32 version: 2 or 3 (1 had 32-bit counts and lengths; 3 only added
//              big-endian files, which store the version byte-swapped too)
//   offset 8   u64 tensor_count, u64 kv_count
//   then       kv_count metadata entries: key (string), u32 value type, value
//   then       tensor_count tensor infos: name (string), u32 n_dims (≤ 4),
//              u64 ne[n_dims], u32 ggml type, u64 offset (from the data section)
//   then       padding to a multiple of `general.alignment` (u32, a power of two,
//              default 32): the data section, each tensor at its offset, aligned
//
//   string     u64 length, then that many bytes (UTF-8, no terminator)
//   value      u8 i8 u16 i16 u32 i32 f32 bool(1 byte, 0 or 1) string u64 i64 f64,
//              or array: u32 element type, u64 count, count values of that type
//              (arrays of arrays are allowed by the format, nested to a limit here)
//
// Dimensions are ggml's: ne[0] varies fastest, so a 2-D weight [out, in] of
// PyTorch is ne = {in, out} — rows() rows of row_length() = ne[0] elements.
//
// Reading is defensive, because a model file is input from outside. The file is
// memory-mapped (io/mapped_file.hpp), never copied; every count, length, dimension
// and offset is checked against the bytes that remain before it is used or
// anything is allocated for it, every product is checked for overflow, and the
// tensors must be aligned, inside the file and disjoint. Metadata strings and
// tensor data are views into the mapping, alive as long as the gguf_file.
// Anything malformed is a parse_error; a well-formed file this reader does not
// handle (GGUF v1, big-endian, a ggml type id newer than lqer's table) is an
// unsupported_error. Every message starts with the file's name and the byte
// offset of the problem: "model.gguf: byte 1234: …".
//
// Decoding (dequantize) reproduces ggml's dequantize_row_* bit for bit for the
// types format/ggml_types.hpp decodes; to_quantized_matrix moves Q4_0 / Q4_1 /
// Q8_0 tensors into lqer's q4_0 / q4_1 / q8_0 quantized_matrix without going
// through float.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/ggml_types.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/io/mapped_file.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer::io {

// Tensor data is handed out and decoded as the file stores it: only correct
// where the host's byte order is the file's. Big-endian GGUF files are refused.
static_assert(std::endian::native == std::endian::little,
              "lqer/io/gguf.hpp reads little-endian GGUF data in place and so needs a little-endian host");

// ---------------------------------------------------------------------------
// Metadata values

/// GGUF's metadata value types (enum gguf_type), as stored in the file.
enum class gguf_type : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

/// The type's name as GGUF's docs spell it: "uint32", "string", "array", …
constexpr const char* to_string(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::uint8: return "uint8";
    case gguf_type::int8: return "int8";
    case gguf_type::uint16: return "uint16";
    case gguf_type::int16: return "int16";
    case gguf_type::uint32: return "uint32";
    case gguf_type::int32: return "int32";
    case gguf_type::float32: return "float32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::uint64: return "uint64";
    case gguf_type::int64: return "int64";
    case gguf_type::float64: return "float64";
  }
  return "unknown";
}

namespace detail {
/// Bytes of a fixed-size value type; 0 for string and array.
constexpr std::size_t gguf_type_size(gguf_type t) noexcept {
  switch (t) {
    case gguf_type::uint8:
    case gguf_type::int8:
    case gguf_type::boolean: return 1;
    case gguf_type::uint16:
    case gguf_type::int16: return 2;
    case gguf_type::uint32:
    case gguf_type::int32:
    case gguf_type::float32: return 4;
    case gguf_type::uint64:
    case gguf_type::int64:
    case gguf_type::float64: return 8;
    case gguf_type::string:
    case gguf_type::array: return 0;
  }
  return 0;
}
constexpr bool gguf_is_integer(gguf_type t) noexcept {
  return t == gguf_type::uint8 || t == gguf_type::int8 || t == gguf_type::uint16 || t == gguf_type::int16 ||
         t == gguf_type::uint32 || t == gguf_type::int32 || t == gguf_type::uint64 || t == gguf_type::int64;
}
constexpr bool gguf_is_signed(gguf_type t) noexcept {
  return t == gguf_type::int8 || t == gguf_type::int16 || t == gguf_type::int32 || t == gguf_type::int64;
}

template <class T>
struct gguf_is_vector : std::false_type {};
template <class E>
struct gguf_is_vector<std::vector<E>> : std::true_type {};

template <class T>
inline constexpr bool kGgufString = std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>;
template <class T>
inline constexpr bool kGgufInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;
template <class T>
inline constexpr bool kGgufScalar = kGgufInteger<T> || std::is_same_v<T, bool> || std::is_same_v<T, float> ||
                                    std::is_same_v<T, double> || kGgufString<T>;

class gguf_parser;
}  // namespace detail

/// One metadata value: a scalar, a string or an array. Strings and array
/// payloads are views into the file's mapping (valid while the gguf_file lives).
///
/// Typed access converts only where no information can be lost: an integer
/// type T reads any stored integer type whose value fits in T (a uint32 key read
/// as std::int64_t, or a uint64 holding 30 read as std::uint32_t); float reads
/// float32, double reads float32 and float64; bool reads bool; std::string_view
/// and std::string read string. Anything else is a value_error naming the key,
/// the stored type and the asked one.
class gguf_value {
 public:
  gguf_type type() const noexcept { return type_; }
  bool is_array() const noexcept { return type_ == gguf_type::array; }
  /// For arrays: the type of the elements (array for arrays of arrays).
  gguf_type element_type() const noexcept { return element_type_; }
  /// Number of elements of an array; 1 for a scalar or string.
  std::uint64_t size() const noexcept { return count_; }
  /// Byte offset of the value in the file (just after its type tag).
  std::uint64_t offset() const noexcept { return offset_; }
  /// The encoded bytes: a scalar's value, a string's characters, a fixed-size
  /// array's elements back to back (little-endian); empty for arrays of strings
  /// or arrays (see strings() and elements()).
  std::span<const std::byte> raw() const noexcept { return raw_; }

  /// The value as T (see the class comment for the conversions allowed).
  template <class T>
  T as() const {
    static_assert(detail::kGgufScalar<T>,
                  "gguf_value::as<T>: T must be an integer type, bool, float, double, std::string_view or std::string");
    if (type_ == gguf_type::array) throw mismatch(type_name<T>(), "");
    return element_as<T>(type_, raw_, "");
  }

  /// An array's elements as std::vector<T> (the same conversions as as<T>, per element).
  template <class T>
  std::vector<T> as_vector() const {
    static_assert(detail::kGgufScalar<T>, "gguf_value::as_vector<T>: T must be a type as<T> accepts");
    if (type_ != gguf_type::array) throw mismatch(std::string("array of ") + type_name<T>(), "");
    std::vector<T> out;
    if constexpr (detail::kGgufString<T>) {
      if (element_type_ != gguf_type::string) throw mismatch(std::string("array of ") + type_name<T>(), "");
      out.assign(strings_.begin(), strings_.end());
    } else {
      const std::size_t w = detail::gguf_type_size(element_type_);
      if (w == 0) throw mismatch(std::string("array of ") + type_name<T>(), "");
      out.reserve(static_cast<std::size_t>(count_));
      for (std::size_t i = 0; i < count_; ++i)
        out.push_back(element_as<T>(element_type_, raw_.subspan(i * w, w), " (element " + std::to_string(i) + ")"));
    }
    return out;
  }

  /// An array of strings, without a copy: views into the file.
  std::span<const std::string_view> strings() const {
    if (type_ != gguf_type::array || element_type_ != gguf_type::string) throw mismatch("array of string", "");
    return strings_;
  }

  /// An array of arrays: its elements, each an array value.
  std::span<const gguf_value> elements() const {
    if (type_ != gguf_type::array || element_type_ != gguf_type::array) throw mismatch("array of array", "");
    return children_;
  }

  /// The type as a phrase for messages: "uint32", "array of string", "array of array".
  std::string type_phrase() const {
    return type_ == gguf_type::array ? std::string("array of ") + to_string(element_type_) : to_string(type_);
  }

 private:
  friend class detail::gguf_parser;

  template <class T>
  static const char* type_name() noexcept {
    if constexpr (std::is_same_v<T, bool>)
      return "bool";
    else if constexpr (std::is_same_v<T, float>)
      return "float32";
    else if constexpr (std::is_same_v<T, double>)
      return "float64 (or float32)";
    else if constexpr (detail::kGgufString<T>)
      return "string";
    else if constexpr (std::is_signed_v<T>)
      return "a signed integer";
    else
      return "an unsigned integer";
  }

  value_error mismatch(const std::string& wanted, const std::string& where) const {
    return value_error(where_ + ": is " + type_phrase() + where + ", not " + wanted);
  }

  /// One fixed-size element (or a string) of type `t` held in `b`, as T.
  template <class T>
  T element_as(gguf_type t, std::span<const std::byte> b, const std::string& where) const {
    const auto load = [&](auto v) {
      std::memcpy(&v, b.data(), sizeof(v));
      return v;
    };
    if constexpr (detail::kGgufString<T>) {
      if (t != gguf_type::string) throw mismatch("string", where);
      return T(reinterpret_cast<const char*>(b.data()), b.size());
    } else if constexpr (std::is_same_v<T, bool>) {
      if (t != gguf_type::boolean) throw mismatch("bool", where);
      return b[0] != std::byte{0};
    } else if constexpr (std::is_floating_point_v<T>) {
      if (t == gguf_type::float32) return static_cast<T>(load(float{}));
      if (std::is_same_v<T, double> && t == gguf_type::float64) return static_cast<T>(load(double{}));
      throw mismatch(type_name<T>(), where);
    } else {
      if (!detail::gguf_is_integer(t)) throw mismatch(type_name<T>(), where);
      // Widen to 64 bits with the stored signedness, then check that T holds it.
      bool negative = false;
      std::uint64_t mag = 0;  // |v| for negative v, v otherwise
      const auto take_signed = [&](std::int64_t v) {
        negative = v < 0;
        mag = negative ? std::uint64_t(0) - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
      };
      switch (t) {
        case gguf_type::uint8: mag = load(std::uint8_t{}); break;
        case gguf_type::uint16: mag = load(std::uint16_t{}); break;
        case gguf_type::uint32: mag = load(std::uint32_t{}); break;
        case gguf_type::uint64: mag = load(std::uint64_t{}); break;
        case gguf_type::int8: take_signed(load(std::int8_t{})); break;
        case gguf_type::int16: take_signed(load(std::int16_t{})); break;
        case gguf_type::int32: take_signed(load(std::int32_t{})); break;
        default: take_signed(load(std::int64_t{})); break;
      }
      using U = std::make_unsigned_t<T>;
      if (negative) {
        if constexpr (std::is_signed_v<T>) {
          if (mag - 1 <= static_cast<U>(std::numeric_limits<T>::max()))
            return static_cast<T>(-static_cast<T>(mag - 1) - 1);
        }
      } else if (mag <= static_cast<U>(std::numeric_limits<T>::max())) {
        return static_cast<T>(mag);
      }
      throw value_error(where_ + where + ": value " + (negative ? "-" : "") + std::to_string(mag) + " (" +
                        to_string(t) + ") does not fit in " + type_name<T>() + " of " + std::to_string(sizeof(T)) +
                        " bytes");
    }
  }

  gguf_type type_ = gguf_type::uint8;
  gguf_type element_type_ = gguf_type::uint8;
  std::uint64_t count_ = 1;
  std::uint64_t offset_ = 0;
  std::span<const std::byte> raw_;
  std::vector<std::string_view> strings_;  // arrays of strings
  std::vector<gguf_value> children_;       // arrays of arrays
  std::string where_;                      // "<file>: metadata key '<key>'" (shared by the key's nested values)
};

/// One metadata entry.
struct gguf_kv {
  std::string_view key;
  std::uint64_t offset = 0;  ///< byte offset of the entry (its key's length field)
  gguf_value value;
};

/// The metadata of a GGUF file: entries in file order and lookup by key.
class gguf_metadata {
 public:
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  /// Every entry, in file order.
  std::span<const gguf_kv> entries() const noexcept { return entries_; }

  /// The value of `key`, or nullptr.
  const gguf_value* find(std::string_view key) const noexcept {
    const auto it = std::lower_bound(sorted_.begin(), sorted_.end(), key,
                                     [&](std::size_t i, std::string_view k) { return entries_[i].key < k; });
    return it != sorted_.end() && entries_[*it].key == key ? &entries_[*it].value : nullptr;
  }
  bool contains(std::string_view key) const noexcept { return find(key) != nullptr; }

  /// The value of `key`; value_error naming the file and the key when it is absent.
  const gguf_value& at(std::string_view key) const {
    if (const gguf_value* v = find(key)) return *v;
    throw value_error(file_ + ": has no metadata key '" + std::string(key) + "'");
  }

  /// at(key).as<T>(), or as_vector<E>() for T = std::vector<E>.
  template <class T>
  T get(std::string_view key) const {
    if constexpr (detail::gguf_is_vector<T>::value)
      return at(key).template as_vector<typename T::value_type>();
    else
      return at(key).template as<T>();
  }

  /// get<T>(key) when the key is present (a present key of the wrong type is
  /// still a value_error), `fallback` when it is absent.
  template <class T>
  T get_or(std::string_view key, T fallback) const {
    return contains(key) ? get<T>(key) : std::move(fallback);
  }

 private:
  friend class detail::gguf_parser;
  std::vector<gguf_kv> entries_;
  std::vector<std::size_t> sorted_;  // indices of entries_ by key
  std::string file_;
};

// ---------------------------------------------------------------------------
// Tensors

/// One tensor: its info record and a view of its data in the mapping.
struct gguf_tensor {
  static constexpr std::size_t kMaxDims = 4;  ///< GGML_MAX_DIMS

  std::string_view name;
  ggml_type type = ggml_type::f32;
  std::uint32_t n_dims = 0;
  /// ne[0] varies fastest (a row's length); ne[i] = 1 for i ≥ n_dims.
  std::array<std::int64_t, kMaxDims> ne{1, 1, 1, 1};
  std::uint64_t offset = 0;   ///< absolute byte offset of the data in the file
  std::uint64_t n_bytes = 0;  ///< bytes of data: elements / block · block bytes
  std::int64_t n_elements = 0;
  std::uint64_t info_offset = 0;  ///< byte offset of the tensor's info record
  std::span<const std::byte> data;
  std::string_view file;  ///< the file's name, for messages

  /// The dimensions in GGUF order, n_dims of them (ne[0] first).
  std::span<const std::int64_t> dims() const noexcept { return {ne.data(), n_dims}; }
  /// Elements of one row (ne[0]) and number of rows (ne[1]·ne[2]·ne[3]).
  index_t row_length() const noexcept { return static_cast<index_t>(ne[0]); }
  index_t rows() const noexcept { return static_cast<index_t>(ne[1] * ne[2] * ne[3]); }
  /// "blk.0.attn_q.weight (Q4_1, 576 x 576)" for messages.
  std::string describe() const {
    std::string s(name);
    s += " (";
    s += to_string(type);
    for (std::uint32_t i = 0; i < n_dims; ++i) {
      s += i == 0 ? ", " : " x ";
      s += std::to_string(ne[i]);
    }
    return s + ")";
  }
};

/// Bounds beyond "everything fits in the file", which is always enforced.
struct gguf_limits {
  /// Deepest nesting of arrays: 1 = arrays of scalars or strings only (all ggml
  /// itself reads); the default allows arrays of arrays of arrays of arrays.
  /// Recursion is bounded by this, so a file of nested empty arrays cannot
  /// overflow the stack.
  std::size_t max_array_depth = 4;
  /// Largest element count of a tensor, and largest single dimension. The
  /// per-dimension bound rejects ne = {0, 2^62}: no bytes, but a caller looping
  /// over 2^62 empty rows would never finish. 2^40 is 250× the largest tensor of
  /// a 405B-parameter model.
  std::int64_t max_elements = std::int64_t{1} << 40;
};

// ---------------------------------------------------------------------------
// Parsing (internals)

namespace detail {

inline constexpr std::uint32_t kGgufDefaultAlignment = 32;
/// The smallest encodings: a metadata entry (empty key, u32 type, 1-byte value)
/// and a tensor info (empty name, n_dims = 0, type, offset). Counts beyond
/// remaining / these are refused before anything is reserved for them.
inline constexpr std::size_t kGgufMinKvBytes = 8 + 4 + 1;
inline constexpr std::size_t kGgufMinTensorInfoBytes = 8 + 4 + 4 + 8;

/// Parses a whole GGUF image into the parts gguf_file keeps.
class gguf_parser {
 public:
  gguf_parser(std::span<const std::byte> bytes, const std::string& name, const gguf_limits& limits)
      : b_(bytes), name_(name), limits_(limits) {}

  std::uint32_t version = 0;
  std::uint32_t alignment = kGgufDefaultAlignment;
  std::uint64_t data_offset = 0;
  gguf_metadata metadata;
  std::vector<gguf_tensor> tensors;
  std::vector<std::size_t> tensors_by_name;

  void run() {
    header();
    metadata.file_ = name_;
    for (std::uint64_t i = 0; i < kv_count_; ++i) kv(i);
    index_metadata();
    read_alignment();
    for (std::uint64_t i = 0; i < tensor_count_; ++i) tensor_info(i);
    place_tensors();
  }

 private:
  [[noreturn]] void fail(std::uint64_t at, const std::string& what) const {
    throw parse_error(name_ + ": byte " + std::to_string(at) + ": " + what);
  }
  std::size_t remaining() const noexcept { return b_.size() - pos_; }
  /// Moves past `n` bytes that `what` needs, or fails naming how many are left.
  std::span<const std::byte> take(std::uint64_t n, const std::string& what) {
    if (n > remaining())
      fail(pos_, "truncated GGUF file: " + what + " needs " + std::to_string(n) + " bytes, only " +
                     std::to_string(remaining()) + " remain");
    const auto s = b_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
  template <class T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what).data(), sizeof(T));
    return v;
  }
  std::string_view string(const std::string& what) {
    const std::uint64_t at = pos_;
    const auto len = read<std::uint64_t>("the length of " + what);
    if (len > remaining())
      fail(at, what + " declares " + std::to_string(len) + " bytes but only " + std::to_string(remaining()) +
                   " remain in the file");
    const auto s = take(len, what);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
  /// A count of `unit` of at least `min_bytes` each that must fit in what remains.
  void check_count(std::uint64_t at, std::uint64_t count, std::size_t min_bytes, const std::string& what,
                   const char* unit) const {
    if (count > remaining() / min_bytes)
      fail(at, what + " declares " + std::to_string(count) + " " + unit + " but only " + std::to_string(remaining()) +
                   " bytes remain, and each takes at least " + std::to_string(min_bytes));
  }

  void header() {
    static constexpr std::string_view kMagic = "GGUF";
    const std::string_view head(reinterpret_cast<const char*>(b_.data()), std::min<std::size_t>(b_.size(), 4));
    if (head != kMagic.substr(0, head.size())) fail(0, "not a GGUF file (it does not start with the magic \"GGUF\")");
    if (head.size() < 4)
      fail(0, "truncated GGUF file: " + std::to_string(b_.size()) + " bytes, fewer than the 4-byte magic");
    pos_ = 4;
    version = read<std::uint32_t>("the version");
    if (version == 2 || version == 3) {
      // supported
    } else if (version == 1) {
      throw unsupported_error(name_ + ": byte 4: GGUF version 1 (32-bit counts, 2023) is not supported (2 and 3 are)");
    } else if (const std::uint32_t swapped = ((version & 0xffu) << 24) | ((version & 0xff00u) << 8) |
                                             ((version >> 8) & 0xff00u) | (version >> 24);
               swapped == 2 || swapped == 3) {
      throw unsupported_error(name_ + ": byte 4: a big-endian GGUF file (version " + std::to_string(swapped) +
                              " byte-swapped); only little-endian is read");
    } else {
      throw unsupported_error(name_ + ": byte 4: GGUF version " + std::to_string(version) +
                              " is not supported (2 and 3 are)");
    }
    const std::uint64_t tc_at = pos_;
    tensor_count_ = read<std::uint64_t>("the tensor count");
    const std::uint64_t kc_at = pos_;
    kv_count_ = read<std::uint64_t>("the metadata count");
    check_count(kc_at, kv_count_, kGgufMinKvBytes, "the header", "metadata entries");
    // Every metadata entry takes room too, but a file with few entries may still
    // hold this many tensor infos: the bound is checked against what is left
    // once the metadata is read (tensor_info), the rough one here stops a
    // reserve of 2^64.
    check_count(tc_at, tensor_count_, kGgufMinTensorInfoBytes, "the header", "tensors");
  }

  gguf_type value_type(std::uint64_t at, std::uint32_t raw, const std::string& what) const {
    if (raw > static_cast<std::uint32_t>(gguf_type::float64))
      fail(at, what + " has value type " + std::to_string(raw) + ", which is not a GGUF type (0-12)");
    return static_cast<gguf_type>(raw);
  }

  /// A value of type `t` (its type tag already read) at the current position.
  gguf_value value(gguf_type t, std::size_t depth, const std::string& what, const std::string& where) {
    gguf_value v;
    v.type_ = t;
    v.offset_ = pos_;
    v.where_ = where;
    if (const std::size_t w = gguf_type_size(t); w != 0) {
      v.raw_ = take(w, what);
      if (t == gguf_type::boolean && v.raw_[0] != std::byte{0} && v.raw_[0] != std::byte{1})
        fail(v.offset_, what + " is a bool of byte value " + std::to_string(static_cast<unsigned>(v.raw_[0])) +
                            " (GGUF allows 0 and 1 only)");
      return v;
    }
    if (t == gguf_type::string) {
      const auto s = string(what);
      v.raw_ = std::as_bytes(std::span(s.data(), s.size()));
      return v;
    }
    // An array.
    if (depth >= limits_.max_array_depth)
      fail(v.offset_, what + " nests arrays deeper than " + std::to_string(limits_.max_array_depth) +
                          " levels (gguf_limits::max_array_depth)");
    const std::uint64_t type_at = pos_;
    v.element_type_ = value_type(type_at, read<std::uint32_t>("the element type of " + what), what);
    const std::uint64_t count_at = pos_;
    v.count_ = read<std::uint64_t>("the length of " + what);
    const std::size_t w = gguf_type_size(v.element_type_);
    const std::string elems = what + " (an array of " + std::string(to_string(v.element_type_)) + ")";
    if (w != 0) {
      check_count(count_at, v.count_, w, elems, "elements");
      v.raw_ = take(v.count_ * w, what);  // count ≤ remaining / w: no overflow
      if (v.element_type_ == gguf_type::boolean)
        for (std::size_t i = 0; i < v.raw_.size(); ++i)
          if (v.raw_[i] != std::byte{0} && v.raw_[i] != std::byte{1})
            fail(v.offset_ + 12 + i, "element " + std::to_string(i) + " of " + what + " is a bool of byte value " +
                                         std::to_string(static_cast<unsigned>(v.raw_[i])) +
                                         " (GGUF allows 0 and 1 only)");
    } else if (v.element_type_ == gguf_type::string) {
      check_count(count_at, v.count_, 8, elems, "elements");
      v.strings_.reserve(static_cast<std::size_t>(v.count_));
      for (std::uint64_t i = 0; i < v.count_; ++i)
        v.strings_.push_back(string("element " + std::to_string(i) + " of " + what));
    } else {
      check_count(count_at, v.count_, 12, elems, "elements");  // each: u32 type + u64 count
      v.children_.reserve(static_cast<std::size_t>(v.count_));
      for (std::uint64_t i = 0; i < v.count_; ++i)
        v.children_.push_back(
            value(gguf_type::array, depth + 1, "element " + std::to_string(i) + " of " + what, where));
    }
    return v;
  }

  void kv(std::uint64_t i) {
    gguf_kv e;
    e.offset = pos_;
    e.key = string("the key of metadata entry " + std::to_string(i));
    const std::string what = "metadata '" + std::string(e.key) + "'";
    const std::uint64_t type_at = pos_;
    const gguf_type t = value_type(type_at, read<std::uint32_t>("the value type of " + what), what);
    e.value = value(t, 0, "the value of " + what, name_ + ": metadata key '" + std::string(e.key) + "'");
    metadata.entries_.push_back(std::move(e));
  }

  void index_metadata() {
    auto& s = metadata.sorted_;
    const auto& es = metadata.entries_;
    s.resize(es.size());
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = i;
    std::stable_sort(s.begin(), s.end(), [&](std::size_t a, std::size_t b) { return es[a].key < es[b].key; });
    for (std::size_t i = 1; i < s.size(); ++i)
      if (es[s[i]].key == es[s[i - 1]].key)
        fail(es[s[i]].offset, "duplicate metadata key '" + std::string(es[s[i]].key) + "' (first at byte " +
                                  std::to_string(es[s[i - 1]].offset) + ")");
  }

  void read_alignment() {
    const gguf_value* a = metadata.find("general.alignment");
    if (a == nullptr) return;
    if (a->type() != gguf_type::uint32)
      fail(a->offset(), "general.alignment is " + a->type_phrase() + "; GGUF requires uint32");
    alignment = a->as<std::uint32_t>();
    if (alignment == 0 || !std::has_single_bit(alignment))
      fail(a->offset(), "general.alignment is " + std::to_string(alignment) + ", not a power of two");
  }

  void tensor_info(std::uint64_t i) {
    gguf_tensor t;
    t.info_offset = pos_;
    t.file = name_;
    if (i == 0) check_count(t.info_offset, tensor_count_, kGgufMinTensorInfoBytes, "the header", "tensor infos");
    t.name = string("the name of tensor " + std::to_string(i));
    const std::string what = "tensor '" + std::string(t.name) + "'";
    const std::uint64_t dims_at = pos_;
    t.n_dims = read<std::uint32_t>("the number of dimensions of " + what);
    if (t.n_dims > gguf_tensor::kMaxDims)
      fail(dims_at, what + " has " + std::to_string(t.n_dims) + " dimensions; ggml tensors have at most 4");
    // Two products, each checked before it is formed: of every dimension (the
    // element count) and of the non-zero ones, so that rows() cannot overflow
    // when a zero dimension makes the count 0 (ne = {0, 2^40, 2^40}).
    std::int64_t elements = 1, nonzero = 1;
    for (std::uint32_t d = 0; d < t.n_dims; ++d) {
      const std::uint64_t at = pos_;
      const auto ne = read<std::uint64_t>("dimension " + std::to_string(d) + " of " + what);
      if (ne > static_cast<std::uint64_t>(limits_.max_elements))
        fail(at, what + " has dimension " + std::to_string(d) + " of " + std::to_string(ne) + ", beyond the limit of " +
                     std::to_string(limits_.max_elements) + " (gguf_limits::max_elements)");
      t.ne[d] = static_cast<std::int64_t>(ne);
      if (t.ne[d] == 0) {
        elements = 0;
        continue;
      }
      if (nonzero > limits_.max_elements / t.ne[d])
        fail(at,
             what + " has more than " + std::to_string(limits_.max_elements) + " elements (gguf_limits::max_elements)");
      nonzero *= t.ne[d];
      elements *= t.ne[d];  // ≤ nonzero
    }
    t.n_elements = elements;
    const std::uint64_t type_at = pos_;
    const auto type_id = read<std::uint32_t>("the type of " + what);
    const ggml_type_traits tr = ggml_traits(type_id);
    if (tr.name == nullptr)
      throw unsupported_error(name_ + ": byte " + std::to_string(type_at) + ": " + what + " has ggml type id " +
                              std::to_string(type_id) + ", which lqer does not know");
    t.type = static_cast<ggml_type>(type_id);
    if (t.ne[0] % tr.block_elems != 0)
      fail(type_at, what + " has rows of " + std::to_string(t.ne[0]) + " elements, not a whole number of " + tr.name +
                        " blocks of " + std::to_string(tr.block_elems));
    // elements ≤ 2^40 and block_bytes ≤ 292: the product stays far below 2^64.
    t.n_bytes = static_cast<std::uint64_t>(elements) / tr.block_elems * tr.block_bytes;
    const std::uint64_t off_at = pos_;
    t.offset = read<std::uint64_t>("the data offset of " + what);  // relative until place_tensors
    if (t.offset % alignment != 0)
      fail(off_at, what + " has data offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
                       std::to_string(alignment));
    tensors.push_back(t);
    offset_fields_.push_back(off_at);
  }

  void place_tensors() {
    // The data section starts at the first multiple of the alignment after the
    // infos. alignment ≤ 2^31 and pos_ ≤ file size: no overflow in 64 bits.
    data_offset = (pos_ + alignment - 1) / alignment * alignment;
    if (!tensors.empty() && data_offset > b_.size())
      fail(pos_, "truncated GGUF file: the data section would start at byte " + std::to_string(data_offset) +
                     " (aligned to " + std::to_string(alignment) + ") but the file has " + std::to_string(b_.size()) +
                     " bytes");
    const std::uint64_t data_bytes = b_.size() - std::min<std::uint64_t>(data_offset, b_.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      gguf_tensor& t = tensors[i];
      // Compared as "offset ≤ room and bytes ≤ room − offset": never a sum that could wrap.
      if (t.offset > data_bytes || t.n_bytes > data_bytes - t.offset)
        fail(offset_fields_[i], "tensor " + t.describe() + " needs bytes [" + std::to_string(t.offset) + ", " +
                                    std::to_string(t.offset) + " + " + std::to_string(t.n_bytes) +
                                    ") of the data section, which has " + std::to_string(data_bytes) +
                                    " bytes: it lies past the end of the file");
      t.offset += data_offset;
      t.data = b_.subspan(static_cast<std::size_t>(t.offset), static_cast<std::size_t>(t.n_bytes));
    }
    // Disjoint: sorted by offset, each (non-empty) tensor ends where the next may begin.
    std::vector<std::size_t> by_offset(tensors.size());
    for (std::size_t i = 0; i < by_offset.size(); ++i) by_offset[i] = i;
    std::stable_sort(by_offset.begin(), by_offset.end(),
                     [&](std::size_t a, std::size_t b) { return tensors[a].offset < tensors[b].offset; });
    std::size_t prev = tensors.size();  // the last non-empty tensor seen
    for (const std::size_t i : by_offset) {
      if (tensors[i].n_bytes == 0) continue;
      if (prev != tensors.size() && tensors[prev].offset + tensors[prev].n_bytes > tensors[i].offset)
        fail(offset_fields_[i], "tensor " + tensors[i].describe() + " at byte " + std::to_string(tensors[i].offset) +
                                    " overlaps tensor " + tensors[prev].describe() + " at bytes [" +
                                    std::to_string(tensors[prev].offset) + ", " +
                                    std::to_string(tensors[prev].offset + tensors[prev].n_bytes) + ")");
      prev = i;
    }
    tensors_by_name.resize(tensors.size());
    for (std::size_t i = 0; i < tensors_by_name.size(); ++i) tensors_by_name[i] = i;
    std::stable_sort(tensors_by_name.begin(), tensors_by_name.end(),
                     [&](std::size_t a, std::size_t b) { return tensors[a].name < tensors[b].name; });
    for (std::size_t i = 1; i < tensors_by_name.size(); ++i) {
      const gguf_tensor& a = tensors[tensors_by_name[i - 1]];
      const gguf_tensor& b = tensors[tensors_by_name[i]];
      if (a.name == b.name)
        fail(b.info_offset, "duplicate tensor name '" + std::string(b.name) + "' (first at byte " +
                                std::to_string(a.info_offset) + ")");
    }
  }

  std::span<const std::byte> b_;
  const std::string& name_;
  gguf_limits limits_;
  std::size_t pos_ = 0;
  std::uint64_t tensor_count_ = 0, kv_count_ = 0;
  std::vector<std::uint64_t> offset_fields_;  // where each tensor's offset field is, for messages
};

}  // namespace detail

// ---------------------------------------------------------------------------
// The file

/// An open GGUF file: header, metadata and tensors, the data mapped read-only.
/// Move-only. Every view it hands out (metadata strings, tensor names and data)
/// points into the mapping and stays valid until the gguf_file that owns it
/// (the original or the one it was moved into) is destroyed.
///
///   lqer::io::gguf_file f = lqer::io::gguf_file::open("model.gguf");
///   auto blocks = f.metadata().get<std::uint32_t>("llama.block_count");
///   auto tokens = f.metadata().at("tokenizer.ggml.tokens").strings();
///   const auto& t = f.tensor("blk.0.attn_q.weight");      // t.type, t.dims(), t.data
///   std::vector<float> w = lqer::io::dequantize(t);       // t.rows() x t.row_length()
class gguf_file {
 public:
  gguf_file() = default;

  /// Maps and parses `path` (see the file comment for what is checked). Throws
  /// io_error when the file cannot be opened or mapped, parse_error or
  /// unsupported_error for its content.
  static gguf_file open(const std::filesystem::path& path, const gguf_limits& limits = {}) {
    auto c = std::make_unique<contents>();
    c->name = path.string();
    c->map = mapped_file::open(path);
    c->bytes = c->map.bytes();
    return gguf_file(std::move(c), limits);
  }

  /// Parses a GGUF image held in memory (taken over, not copied); `name` is
  /// what messages call it.
  static gguf_file from_bytes(std::vector<std::byte> bytes, std::string name, const gguf_limits& limits = {}) {
    auto c = std::make_unique<contents>();
    c->name = std::move(name);
    c->owned = std::move(bytes);
    c->bytes = c->owned;
    return gguf_file(std::move(c), limits);
  }

  const std::string& name() const { return get().name; }
  std::uint32_t version() const { return get().version; }
  /// general.alignment, or 32 when the file does not set it.
  std::uint32_t alignment() const { return get().alignment; }
  /// Byte offset of the data section (tensor offsets are absolute: already added).
  std::uint64_t data_offset() const { return get().data_offset; }
  /// The whole file.
  std::span<const std::byte> bytes() const { return get().bytes; }

  const gguf_metadata& metadata() const { return get().metadata; }
  /// Every tensor, in file order.
  std::span<const gguf_tensor> tensors() const { return get().tensors; }

  /// The tensor called `name`, or nullptr.
  const gguf_tensor* find_tensor(std::string_view name) const {
    const contents& c = get();
    const auto it = std::lower_bound(c.by_name.begin(), c.by_name.end(), name,
                                     [&](std::size_t i, std::string_view n) { return c.tensors[i].name < n; });
    return it != c.by_name.end() && c.tensors[*it].name == name ? &c.tensors[*it] : nullptr;
  }
  /// The tensor called `name`; value_error naming the file and the tensor when absent.
  const gguf_tensor& tensor(std::string_view name) const {
    if (const gguf_tensor* t = find_tensor(name)) return *t;
    throw value_error(get().name + ": has no tensor '" + std::string(name) + "'");
  }

 private:
  // Heap-held, so that the views into it (a tensor's `file`, every value's name)
  // survive moving the gguf_file.
  struct contents {
    std::string name;
    mapped_file map;
    std::vector<std::byte> owned;
    std::span<const std::byte> bytes;
    std::uint32_t version = 0, alignment = 0;
    std::uint64_t data_offset = 0;
    gguf_metadata metadata;
    std::vector<gguf_tensor> tensors;
    std::vector<std::size_t> by_name;
  };

  gguf_file(std::unique_ptr<contents> c, const gguf_limits& limits) {
    detail::gguf_parser p(c->bytes, c->name, limits);
    p.run();
    c->version = p.version;
    c->alignment = p.alignment;
    c->data_offset = p.data_offset;
    c->metadata = std::move(p.metadata);
    c->tensors = std::move(p.tensors);
    c->by_name = std::move(p.tensors_by_name);
    c_ = std::move(c);
  }

  const contents& get() const {
    if (!c_) throw value_error("gguf_file: used after being moved from (or default-constructed)");
    return *c_;
  }

  std::unique_ptr<const contents> c_;
};

// ---------------------------------------------------------------------------
// Decoding

/// Decodes a tensor to float into `out` (t.n_elements floats, row-major:
/// rows() rows of row_length()), as ggml's dequantization does, bit for bit.
/// shape_error when `out` has another size; unsupported_error, naming the file
/// and the tensor, for a type lqer does not decode.
inline void dequantize(const gguf_tensor& t, std::span<float> out) {
  // The type first: a tensor lqer cannot decode is the problem to report whatever the buffer.
  if (!ggml_traits(t.type).decodable)
    throw unsupported_error(std::string(t.file) + ": tensor " + t.describe() + ": decoding " + to_string(t.type) +
                            " to float is not implemented");
  if (out.size() != static_cast<std::uint64_t>(t.n_elements))
    throw shape_error(std::string(t.file) + ": tensor " + t.describe() + " has " + std::to_string(t.n_elements) +
                      " elements; the destination holds " + std::to_string(out.size()));
  ggml_dequantize(t.type, t.data, out);
}

/// The tensor decoded to float (see the overload above).
inline std::vector<float> dequantize(const gguf_tensor& t) {
  if (!ggml_traits(t.type).decodable)
    throw unsupported_error(std::string(t.file) + ": tensor " + t.describe() + ": decoding " + to_string(t.type) +
                            " to float is not implemented");
  std::vector<float> out(static_cast<std::size_t>(t.n_elements));
  dequantize(t, out);
  return out;
}

/// A Q4_0 (Format = lqer::q4_0), Q4_1 (lqer::q4_1) or Q8_0 (lqer::q8_0) tensor
/// as an lqer quantized_matrix of rows() × row_length(), blocks along the rows —
/// the codes and fp16 scales (and Q4_1's fp16 minima) moved, never decoded: its
/// dequantize() equals dequantize(t) bit for bit. value_error when the tensor is
/// of another type or holds what lqer's format cannot (a Q8_0 code −128, which
/// ggml's quantizer never writes; a non-finite scale or minimum); shape_error
/// for a tensor without elements.
template <class Format>
quantized_matrix<Format> to_quantized_matrix(const gguf_tensor& t) {
  static_assert(std::is_same_v<Format, q4_0> || std::is_same_v<Format, q4_1> || std::is_same_v<Format, q8_0>,
                "to_quantized_matrix: GGUF tensors convert without decoding to lqer::q4_0, lqer::q4_1 and "
                "lqer::q8_0 only");
  constexpr bool kQ41 = std::is_same_v<Format, q4_1>;
  constexpr bool kQ4 = std::is_same_v<Format, q4_0> || kQ41;
  constexpr ggml_type kType = kQ41 ? ggml_type::q4_1 : kQ4 ? ggml_type::q4_0 : ggml_type::q8_0;
  const std::string where = std::string(t.file) + ": tensor " + t.describe();
  if (t.type != kType) throw value_error(where + " is not " + to_string(kType));
  if (t.n_elements == 0) throw shape_error(where + " has no elements");
  const index_t rows = t.rows(), cols = t.row_length();
  const std::size_t blocks = static_cast<std::size_t>(t.n_elements) / 32;
  constexpr std::size_t kBlockBytes = kQ41 ? kGgmlQ4_1BlockBytes : kQ4 ? kGgmlQ4_0BlockBytes : kGgmlQ8_0BlockBytes;
  constexpr std::size_t kRecordBytes = kQ41 ? 4 : 2;  // fp16 d (and Q4_1's fp16 m) before the codes
  constexpr std::size_t kCodeBytes = kQ4 ? 16 : 32;   // per block, in both layouts
  std::vector<std::uint8_t> codes(blocks * kCodeBytes);
  std::vector<typename Format::block_scale> scales(blocks);
  // Blocks run along each row in both layouts and a row is whole blocks, so
  // block b of the tensor is block b of lqer's lane-major storage.
  const auto* p = reinterpret_cast<const std::uint8_t*>(t.data.data());
  for (std::size_t b = 0; b < blocks; ++b, p += kBlockBytes) {
    if constexpr (kQ41)
      scales[b] = Format::load_scale(lqer::detail::get_half(p), 0, lqer::detail::get_half(p + 2));
    else
      scales[b] = Format::load_scale(lqer::detail::get_half(p), 0);
    std::uint8_t* out = codes.data() + b * kCodeBytes;
    if constexpr (kQ4) {
      // ggml: byte j = element j (low nibble) and j + 16 (high), unsigned u (Q4_0: u = q + 8; Q4_1: the
      // code itself, held by lqer as q = u − 8 too). lqer: byte k = element 2k (low) and 2k + 1 (high),
      // two's complement q.
      const std::uint8_t* qs = p + kRecordBytes;
      const auto code = [&](int i) {
        const int u = i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
        return static_cast<std::uint8_t>((u - 8) & 0x0f);
      };
      for (int k = 0; k < 16; ++k) out[k] = static_cast<std::uint8_t>(code(2 * k) | (code(2 * k + 1) << 4));
    } else {
      std::memcpy(out, p + 2, 32);
    }
  }
  try {
    return quantized_matrix<Format>::from_codes(rows, cols, block_axis::cols, std::move(codes), std::move(scales));
  } catch (const value_error& e) {
    throw value_error(where + ": " + e.what());
  }
}

}  // namespace lqer::io
