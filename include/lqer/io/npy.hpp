// lqer — reading and writing numpy `.npy` files.
//
// The format (numpy/lib/format.py, NEP 1), all integers little-endian:
//
//   offset 0   magic "\x93NUMPY"
//   offset 6   major, minor version: 1.0, 2.0 or 3.0
//   offset 8   header length: u16 for 1.0, u32 for 2.0 and 3.0
//   then       the header, a Python dict literal in ASCII (latin-1 for 1.0/2.0,
//              utf-8 for 3.0 — the grammar below is pure ASCII, so 3.0 costs nothing):
//                {'descr': '<f4', 'fortran_order': False, 'shape': (96, 256), }
//              padded with spaces and ended by '\n'
//   then       the data: prod(shape) elements, C order unless fortran_order
//
// Reading is defensive, because a .npy file is input from outside: the header
// is parsed by hand against that one dict grammar (keys in any order, either
// quote style, optional trailing commas, the Python 2 `3L` suffix), and every
// size in it — header length, element count, byte count — is checked against
// the size of the file before anything is allocated. A header that declares
// 2^40 elements in a 200-byte file is a parse_error, not a 4 TB allocation.
// Anything malformed is a parse_error; a well-formed file this reader does not
// handle (big-endian or other dtypes, 3-D and higher) is an unsupported_error.
// Every message starts with the file's name.
//
// Writing produces exactly what numpy's np.save writes (format 1.0, header
// padded so that the data starts at a multiple of 64 bytes), and is atomic
// (io/atomic_file.hpp): the bytes go to a temporary file in the target's
// directory that is renamed over the target only once everything was
// written. An existing target keeps its permission bits; a read-only one is
// refused.
//
// Layering: depends on the standard library, POSIX (through
// io/atomic_file.hpp), config, error and format/fp16 only; the finiteness check callers apply to what they read lives
// in tensor/check.hpp so that the library can use it without io.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/io/atomic_file.hpp"

namespace lqer::io {

// The reader hands out the file's bytes as they are and the writer writes the
// caller's bytes as they are: both are only correct where the host order is
// the files' order ('<'). Every target lqer has kernels for is little-endian.
static_assert(std::endian::native == std::endian::little,
              "lqer/io/npy.hpp copies little-endian .npy data as is and so needs a little-endian host");

// ---------------------------------------------------------------------------
// Element types

/// The element types lqer reads and writes (all little-endian in the file).
enum class npy_dtype {
  float32,  ///< '<f4'
  float16,  ///< '<f2' (IEEE binary16; exposed as lqer::half_bits)
  float64,  ///< '<f8'
  int8,     ///< '|i1'
  uint8,    ///< '|u1'
};

/// The numpy name of the type: "float32", "float16", "float64", "int8", "uint8".
constexpr const char* to_string(npy_dtype t) noexcept {
  switch (t) {
    case npy_dtype::float32: return "float32";
    case npy_dtype::float16: return "float16";
    case npy_dtype::float64: return "float64";
    case npy_dtype::int8: return "int8";
    case npy_dtype::uint8: return "uint8";
  }
  return "unknown";
}

/// The 'descr' numpy writes for the type ('|' = byte order irrelevant).
constexpr const char* npy_descr(npy_dtype t) noexcept {
  switch (t) {
    case npy_dtype::float32: return "<f4";
    case npy_dtype::float16: return "<f2";
    case npy_dtype::float64: return "<f8";
    case npy_dtype::int8: return "|i1";
    case npy_dtype::uint8: return "|u1";
  }
  return "";
}

/// Bytes per element.
constexpr std::size_t element_size(npy_dtype t) noexcept {
  switch (t) {
    case npy_dtype::float32: return 4;
    case npy_dtype::float16: return 2;
    case npy_dtype::float64: return 8;
    case npy_dtype::int8:
    case npy_dtype::uint8: return 1;
  }
  return 0;
}

/// Maps a C++ element type to its npy_dtype; defined only for the five
/// supported types (float16 is lqer::half_bits, not uint16_t, so that a
/// uint16 array cannot be mistaken for halves).
template <class T>
struct npy_dtype_of {};
template <>
struct npy_dtype_of<float> : std::integral_constant<npy_dtype, npy_dtype::float32> {};
template <>
struct npy_dtype_of<half_bits> : std::integral_constant<npy_dtype, npy_dtype::float16> {};
template <>
struct npy_dtype_of<double> : std::integral_constant<npy_dtype, npy_dtype::float64> {};
template <>
struct npy_dtype_of<std::int8_t> : std::integral_constant<npy_dtype, npy_dtype::int8> {};
template <>
struct npy_dtype_of<std::uint8_t> : std::integral_constant<npy_dtype, npy_dtype::uint8> {};

/// A C++ type that is stored in a .npy file as one of the npy_dtype values.
template <class T>
concept npy_element = requires {
  npy_dtype_of<T>::value;
};

// ---------------------------------------------------------------------------
// Arrays

/// Bounds on what the reader accepts beyond "the data fits in the file",
/// which is always enforced and is what prevents huge allocations.
struct npy_limits {
  /// Largest element count, and largest single dimension, accepted. The
  /// per-dimension bound rejects shapes like (0, 2^62): no bytes to read, but
  /// a caller looping over 2^62 empty rows would never finish.
  index_t max_elements = index_t{1} << 32;
};

/// One array read from (or to be written to) a .npy file.
struct npy_array {
  npy_dtype dtype = npy_dtype::float32;
  /// {} for a 0-D scalar, {n} for a vector, {rows, cols} for a matrix.
  std::vector<index_t> shape;
  /// size() · element_size(dtype) bytes in C (row-major) order, little-endian.
  /// Fortran-order files are transposed into C order on read.
  std::vector<std::byte> bytes;

  /// Number of elements: the product of the shape (1 for a scalar). Not
  /// overflow-checked: the reader and the writer check shapes; this is for
  /// arrays that passed one of them.
  index_t size() const noexcept {
    index_t n = 1;
    for (const index_t d : shape) n *= d;
    return n;
  }

  /// Number of dimensions: 0, 1 or 2 for arrays the reader returns.
  index_t rank() const noexcept { return static_cast<index_t>(shape.size()); }

  /// A copy of the elements as `T`. Throws value_error when `T` is not the
  /// array's dtype (no conversion happens here: see to_float32), shape_error
  /// when `bytes` does not hold size() elements.
  template <npy_element T>
  std::vector<T> elements() const {
    if (npy_dtype_of<T>::value != dtype)
      throw value_error(std::string("npy_array::elements: asked for ") + to_string(npy_dtype_of<T>::value) +
                        " but the array holds " + to_string(dtype));
    if (bytes.size() != static_cast<std::size_t>(size()) * sizeof(T))
      throw shape_error("npy_array::elements: " + std::to_string(bytes.size()) + " bytes do not hold " +
                        std::to_string(size()) + " elements of " + to_string(dtype));
    std::vector<T> out(static_cast<std::size_t>(size()));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
};

/// The elements of any supported array as float32: float16 and the integer
/// types exactly, float64 rounded to nearest (beyond ±FLT_MAX to ±Inf).
/// Throws shape_error when `a.bytes` does not hold a.size() elements.
inline std::vector<float> to_float32(const npy_array& a) {
  const std::size_t n = static_cast<std::size_t>(a.size());
  if (a.bytes.size() != n * element_size(a.dtype))
    throw shape_error("to_float32: " + std::to_string(a.bytes.size()) + " bytes do not hold " + std::to_string(n) +
                      " elements of " + to_string(a.dtype));
  std::vector<float> out(n);
  if (n == 0) return out;
  // memcpy, element by element where a conversion is needed: `bytes` holds no
  // objects of the element type, so reading it through a double* (say) would
  // break the aliasing rules.
  const std::byte* p = a.bytes.data();
  switch (a.dtype) {
    case npy_dtype::float32: std::memcpy(out.data(), p, 4 * n); break;
    case npy_dtype::float16:
      for (std::size_t i = 0; i < n; ++i) {
        half_bits h;
        std::memcpy(&h.bits, p + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case npy_dtype::float64:
      for (std::size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = static_cast<float>(d);  // IEEE binary32 includes ±Inf: out of range is defined
      }
      break;
    case npy_dtype::int8:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::int8_t>(p[i]));
      break;
    case npy_dtype::uint8:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::uint8_t>(p[i]));
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Header parsing (internals)

namespace detail {

inline constexpr std::array<unsigned char, 6> kNpyMagic{0x93, 'N', 'U', 'M', 'P', 'Y'};
/// Magic and version, then the u16 (1.0) or u32 (2.0, 3.0) header length.
inline constexpr std::size_t kNpyPreambleV1 = 10;
inline constexpr std::size_t kNpyPreambleV2 = 12;
/// numpy's own bound (NPY_MAXDIMS is 32 in numpy 1, 64 in numpy 2); stops a
/// header of a million "1," from building a million-entry shape.
inline constexpr std::size_t kNpyMaxParsedDims = 64;

/// `s` quoted for an error message, non-printable bytes as \xNN and cut at
/// `max_len` characters: file content is shown, never trusted.
inline std::string quoted_for_message(std::string_view s, std::size_t max_len = 96) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '"') {
      out += static_cast<char>(ch);
    } else {
      out += "\\x";
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  if (s.size() > max_len) out += "...";
  out += '"';
  return out;
}

/// A shape as Python writes a tuple: "()", "(256,)", "(96, 256)".
inline std::string format_shape(std::span<const index_t> shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ',';
  s += ')';
  return s;
}

/// Where the header is and how long it is.
struct npy_preamble {
  unsigned major = 0;
  std::size_t header_offset = 0;  ///< 10 (1.0) or 12 (2.0, 3.0)
  std::size_t header_len = 0;     ///< checked: header_offset + header_len <= file size
};

/// Reads the magic, version and header length. `head` holds the file's first
/// min(12, file_size) bytes.
inline npy_preamble parse_npy_preamble(std::span<const std::byte> head, std::uint64_t file_size,
                                       const std::string& name) {
  const std::size_t magic_seen = std::min(head.size(), kNpyMagic.size());
  for (std::size_t i = 0; i < magic_seen; ++i)
    if (static_cast<unsigned char>(head[i]) != kNpyMagic[i])
      throw parse_error(name + ": not a .npy file (it does not start with the magic \"\\x93NUMPY\")");
  if (file_size < kNpyPreambleV1)
    throw parse_error(name + ": truncated .npy file: " + std::to_string(file_size) +
                      " bytes, fewer than the 10-byte preamble");
  npy_preamble p;
  p.major = static_cast<unsigned char>(head[6]);
  const unsigned minor = static_cast<unsigned char>(head[7]);
  if ((p.major != 1 && p.major != 2 && p.major != 3) || minor != 0)
    throw unsupported_error(name + ": .npy format version " + std::to_string(p.major) + "." + std::to_string(minor) +
                            " is not supported (1.0, 2.0 and 3.0 are)");
  const auto byte = [&](std::size_t i) { return static_cast<std::size_t>(static_cast<unsigned char>(head[i])); };
  if (p.major == 1) {
    p.header_offset = kNpyPreambleV1;
    p.header_len = byte(8) | (byte(9) << 8);
  } else {
    if (file_size < kNpyPreambleV2)
      throw parse_error(name + ": truncated .npy file: " + std::to_string(file_size) +
                        " bytes, fewer than the 12-byte preamble of format " + std::to_string(p.major) + ".0");
    p.header_offset = kNpyPreambleV2;
    p.header_len = byte(8) | (byte(9) << 8) | (byte(10) << 16) | (byte(11) << 24);
  }
  if (p.header_len > file_size - p.header_offset)
    throw parse_error(name + ": truncated .npy header: the preamble declares a " + std::to_string(p.header_len) +
                      "-byte header but only " + std::to_string(file_size - p.header_offset) +
                      " bytes follow the preamble");
  return p;
}

/// The three things a .npy header says, and the data size they imply.
struct npy_header {
  npy_dtype dtype = npy_dtype::float32;
  bool fortran_order = false;
  std::vector<index_t> shape;
  std::size_t data_bytes = 0;  ///< set by parse_npy_header once checked against the file
};

/// Maps a 'descr' string to a supported dtype; unsupported_error otherwise.
inline npy_dtype npy_dtype_from_descr(std::string_view descr, const std::string& name) {
  if (descr == "<f4") return npy_dtype::float32;
  if (descr == "<f2") return npy_dtype::float16;
  if (descr == "<f8") return npy_dtype::float64;
  // One-byte types have no byte order: numpy writes '|', but '<', '>' and '='
  // describe the same bytes.
  if (descr.size() == 3 && (descr[0] == '|' || descr[0] == '<' || descr[0] == '>' || descr[0] == '=')) {
    if (descr.substr(1) == "i1") return npy_dtype::int8;
    if (descr.substr(1) == "u1") return npy_dtype::uint8;
  }
  if (descr == ">f4" || descr == ">f2" || descr == ">f8")
    throw unsupported_error(name + ": dtype '" + std::string(descr) +
                            "' is big-endian; only little-endian data is supported (convert it in numpy with "
                            "a.astype(a.dtype.newbyteorder('<')))");
  throw unsupported_error(name + ": dtype " + quoted_for_message(descr) +
                          " is not supported (supported: '<f4' float32, '<f2' float16, '<f8' float64, "
                          "'|i1' int8, '|u1' uint8)");
}

/// Hand-written parser for the one dict literal a .npy header holds:
///
///   header := ws '{' ws [ entry ( ws ',' ws entry )* ws [','] ] ws '}' ws
///   entry  := string ws ':' ws value          (each of the three keys exactly once)
///   string := "'" printable-ascii* "'" | '"' printable-ascii* '"'   (no escapes)
///   descr  := string      fortran_order := 'True' | 'False'
///   shape  := '(' ws ')' | '(' ws dim ws ',' ws ')' | '(' dim (ws ',' ws dim)+ ws [','] ws ')'
///   dim    := '0' | [1-9][0-9]* ['L']        (the L of Python 2 longs)
///   ws     := (' ' | '\t' | '\n' | '\r')*
///
/// Everything else is a parse_error that names the character position.
class npy_header_parser {
 public:
  npy_header_parser(std::string_view text, const std::string& name) : text_(text), name_(name) {}

  npy_header parse() {
    npy_header h;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    skip_space();
    expect('{', "the header must be a dict starting with '{'");
    skip_space();
    while (peek() != '}') {
      const std::string_view key = parse_string("a quoted key");
      skip_space();
      expect(':', "expected ':' after a key");
      skip_space();
      if (key == "descr") {
        mark_seen(seen_descr, key);
        h.dtype = parse_descr();
      } else if (key == "fortran_order") {
        mark_seen(seen_fortran, key);
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        mark_seen(seen_shape, key);
        h.shape = parse_shape();
      } else {
        fail("unknown key " + quoted_for_message(key) + " (a .npy header has 'descr', 'fortran_order' and 'shape')");
      }
      skip_space();
      if (!consume(',')) break;  // without a comma the dict must close here
      skip_space();
    }
    expect('}', "expected ',' or '}' after a value");
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!seen_descr) fail("the key 'descr' is missing");
    if (!seen_fortran) fail("the key 'fortran_order' is missing");
    if (!seen_shape) fail("the key 'shape' is missing");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw parse_error(name_ + ": malformed .npy header at character " + std::to_string(pos_) + ": " + what +
                      "; header: " + quoted_for_message(text_));
  }

  // '\0' at the end: never valid where a token is expected, so every caller
  // fails there with its own message.
  char peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  bool consume(char c) noexcept {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void expect(char c, const char* what) {
    if (!consume(c)) fail(what);
  }

  void skip_space() noexcept {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  void mark_seen(bool& seen, std::string_view key) {
    if (seen) fail("the key " + quoted_for_message(key) + " appears twice");
    seen = true;
  }

  std::string_view parse_string(const char* what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') fail(std::string("expected ") + what);
    const std::size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      const auto ch = static_cast<unsigned char>(text_[pos_]);
      // Escapes and non-ASCII never occur in a valid header; refusing them
      // keeps the grammar exact and the error messages printable.
      if (ch < 0x20 || ch >= 0x7f || ch == '\\') fail("unexpected character in a string");
      ++pos_;
    }
    if (pos_ == text_.size()) fail("unterminated string");
    const std::string_view s = text_.substr(start, pos_ - start);
    ++pos_;  // closing quote
    return s;
  }

  npy_dtype parse_descr() {
    if (peek() == '[')
      throw unsupported_error(name_ +
                              ": structured dtypes (a list as 'descr') are not supported; "
                              "lqer reads arrays of one numeric type");
    return npy_dtype_from_descr(parse_string("a quoted dtype string as 'descr'"), name_);
  }

  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("expected True or False as 'fortran_order'");
  }

  std::vector<index_t> parse_shape() {
    expect('(', "expected a tuple such as (3,) or (2, 5) as 'shape'");
    skip_space();
    std::vector<index_t> dims;
    bool trailing_comma = false;
    while (!consume(')')) {
      if (dims.size() == kNpyMaxParsedDims) fail("the shape has more than 64 dimensions");
      dims.push_back(parse_dimension());
      skip_space();
      trailing_comma = consume(',');
      skip_space();
      if (!trailing_comma && peek() != ')') fail("expected ',' or ')' in the shape");
    }
    // In Python (3) is the number 3, not a tuple; numpy would refuse it too.
    if (dims.size() == 1 && !trailing_comma) fail("the shape (n) is a number, not a tuple: write (n,)");
    return dims;
  }

  index_t parse_dimension() {
    const bool negative = consume('-');
    if (negative) skip_space();  // Python reads "- 3" as -3
    const std::size_t start = pos_;
    const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
    if (!is_digit(peek())) fail("expected a dimension (a non-negative integer) in the shape");
    if (peek() == '0' && pos_ + 1 < text_.size() && is_digit(text_[pos_ + 1])) fail("a dimension has a leading zero");
    index_t value = 0;
    while (is_digit(peek())) {
      const index_t digit = peek() - '0';
      if (value > (std::numeric_limits<index_t>::max() - digit) / 10)
        fail("a dimension does not fit in a 64-bit signed integer");
      value = value * 10 + digit;
      ++pos_;
    }
    if (negative) fail("negative dimension -" + std::string(text_.substr(start, pos_ - start)) + " in the shape");
    consume('L');  // Python 2 long literal, as numpy wrote shapes under Python 2
    return value;
  }

  std::string_view text_;
  const std::string& name_;
  std::size_t pos_ = 0;
};

/// Checks the shape against the reader's rank, the limits and the bytes that
/// follow the header; returns the data's byte count (== available).
inline std::size_t npy_data_bytes(const npy_header& h, std::uint64_t available, const std::string& name,
                                  const npy_limits& limits) {
  if (h.shape.size() > 2)
    throw unsupported_error(name + ": a " + std::to_string(h.shape.size()) + "-D array of shape " +
                            format_shape(h.shape) + " is not supported; lqer reads 0-D, 1-D and 2-D arrays");
  // Bound every dimension and the running product by max_elements, dividing
  // instead of multiplying so that nothing can overflow on the way.
  std::uint64_t count = 1;
  const auto max_elements = static_cast<std::uint64_t>(std::max<index_t>(limits.max_elements, 0));
  for (const index_t d : h.shape) {
    const auto ud = static_cast<std::uint64_t>(d);  // d >= 0: the parser refuses negatives
    if (ud > max_elements || (ud != 0 && count > max_elements / ud))
      throw parse_error(name + ": the shape " + format_shape(h.shape) + " has more than " +
                        std::to_string(max_elements) + " elements (npy_limits::max_elements)");
    count *= ud;
  }
  const std::uint64_t esize = element_size(h.dtype);
  if (count > std::numeric_limits<std::uint64_t>::max() / esize)
    throw parse_error(name + ": the byte size of shape " + format_shape(h.shape) + " overflows");
  const std::uint64_t bytes = count * esize;
  if (bytes > available)
    throw parse_error(name + ": truncated .npy data: shape " + format_shape(h.shape) + " of " + to_string(h.dtype) +
                      " needs " + std::to_string(bytes) + " bytes but " + std::to_string(available) +
                      " follow the header");
  if (bytes < available)
    throw parse_error(name + ": " + std::to_string(available - bytes) + " unexpected bytes after the data (shape " +
                      format_shape(h.shape) + " of " + to_string(h.dtype) + " needs " + std::to_string(bytes) + ")");
  if (bytes > std::numeric_limits<std::size_t>::max())
    throw parse_error(name + ": " + std::to_string(bytes) + " bytes of data do not fit in memory");
  return static_cast<std::size_t>(bytes);
}

/// Rewrites a 2-D Fortran-order (column-major) array into C order in place:
/// element (r, c) sits at c·rows + r in the file and goes to r·cols + c.
inline void fortran_to_c_order(npy_array& a) {
  if (a.shape.size() != 2) return;  // 0-D and 1-D are the same in both orders
  const auto rows = static_cast<std::size_t>(a.shape[0]);
  const auto cols = static_cast<std::size_t>(a.shape[1]);
  if (rows <= 1 || cols <= 1) return;  // a single row or column: same bytes
  const std::size_t esize = element_size(a.dtype);
  std::vector<std::byte> c_order(a.bytes.size());
  for (std::size_t c = 0; c < cols; ++c)
    for (std::size_t r = 0; r < rows; ++r)
      std::memcpy(&c_order[(r * cols + c) * esize], &a.bytes[(c * rows + r) * esize], esize);
  a.bytes = std::move(c_order);
}

/// Everything after the preamble: parses the header text and checks the data
/// size against the `data_available` bytes that follow the header. The reader
/// for memory and the reader for files share this, so fuzzing one tests both.
inline npy_header parse_npy_header(std::string_view text, std::uint64_t data_available, const std::string& name,
                                   const npy_limits& limits) {
  npy_header h = npy_header_parser(text, name).parse();
  h.data_bytes = npy_data_bytes(h, data_available, name, limits);
  return h;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Reading

/// Parses a whole .npy file held in memory. `name` is used in error messages.
/// Returns the array in C order (2-D Fortran-order data is transposed).
/// Throws parse_error (malformed or truncated, sizes that do not match the
/// buffer, limits exceeded) or unsupported_error (a valid file of a version,
/// dtype or rank lqer does not read). Never allocates more than the buffer's
/// size plus the shape.
inline npy_array parse_npy(std::span<const std::byte> file, const std::string& name, const npy_limits& limits = {}) {
  const detail::npy_preamble pre =
      detail::parse_npy_preamble(file.first(std::min(file.size(), detail::kNpyPreambleV2)), file.size(), name);
  const std::string_view text(reinterpret_cast<const char*>(file.data()) + pre.header_offset, pre.header_len);
  const std::size_t data_offset = pre.header_offset + pre.header_len;
  detail::npy_header h = detail::parse_npy_header(text, file.size() - data_offset, name, limits);
  npy_array a;
  a.dtype = h.dtype;
  a.shape = std::move(h.shape);
  const auto data = file.subspan(data_offset, h.data_bytes);
  a.bytes.assign(data.begin(), data.end());
  if (h.fortran_order) detail::fortran_to_c_order(a);
  return a;
}

/// Reads a .npy file (see parse_npy for what is accepted and thrown). The data
/// is read straight into the array: peak memory is the array, plus a second
/// copy only while a 2-D Fortran-order array is transposed. Throws io_error
/// when the file cannot be opened or read.
inline npy_array read_npy(const std::filesystem::path& path, const npy_limits& limits = {}) {
  const std::string name = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw io_error(name + ": is a directory, not a .npy file");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw io_error(name + (std::filesystem::exists(path, ec) ? ": cannot be opened for reading" : ": no such file"));
  // The size of the file we opened, not of whatever the path names by now.
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  in.seekg(0, std::ios::beg);
  if (!in || end < 0) throw io_error(name + ": cannot determine the file's size");
  const auto file_size = static_cast<std::uint64_t>(end);

  std::array<std::byte, detail::kNpyPreambleV2> head{};
  const auto head_len = static_cast<std::size_t>(std::min<std::uint64_t>(file_size, head.size()));
  if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head_len)))
    throw io_error(name + ": reading the preamble failed");
  const detail::npy_preamble pre = detail::parse_npy_preamble(std::span(head).first(head_len), file_size, name);

  // header_len <= file_size was checked: this allocation is bounded by the file.
  std::string text(pre.header_len, '\0');
  in.seekg(static_cast<std::streamoff>(pre.header_offset));
  if (!in.read(text.data(), static_cast<std::streamsize>(text.size())))
    throw parse_error(name + ": truncated .npy header (the file shrank while being read)");
  const std::uint64_t data_offset = pre.header_offset + pre.header_len;
  detail::npy_header h = detail::parse_npy_header(text, file_size - data_offset, name, limits);

  npy_array a;
  a.dtype = h.dtype;
  a.shape = std::move(h.shape);
  a.bytes.resize(h.data_bytes);  // == the bytes left in the file, checked above
  if (h.data_bytes != 0 &&
      !in.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(h.data_bytes)))
    throw parse_error(name + ": truncated .npy data (the file shrank while being read)");
  if (h.fortran_order) detail::fortran_to_c_order(a);
  return a;
}

/// How the float32 readers treat a file of another dtype.
enum class npy_convert {
  require_float32,  ///< any other dtype is a value_error naming expected and found
  any_to_float32,   ///< float16 and the integers convert exactly, float64 rounds (to_float32)
};

/// A row-major float32 matrix: element (r, c) is data[r · cols + c].
struct npy_matrix {
  std::vector<float> data;
  index_t rows = 0;
  index_t cols = 0;
};

namespace detail {
inline std::vector<float> float32_elements(const npy_array& a, const std::string& name, npy_convert convert) {
  if (a.dtype != npy_dtype::float32 && convert == npy_convert::require_float32)
    throw value_error(name + ": expected float32 data ('<f4'), found " + to_string(a.dtype) + " ('" +
                      npy_descr(a.dtype) + "')");
  return to_float32(a);
}
}  // namespace detail

/// Reads a 2-D .npy file as a float32 matrix. A 1-D (or 0-D) array is a
/// shape_error rather than a 1 × n matrix: a vector where a matrix is expected
/// (a scale file passed as a weight) is a mistake to report, not to reshape.
/// Non-finite values are returned as they are (see lqer::require_finite).
inline npy_matrix read_npy_matrix(const std::filesystem::path& path, npy_convert convert = npy_convert::require_float32,
                                  const npy_limits& limits = {}) {
  const std::string name = path.string();
  const npy_array a = read_npy(path, limits);
  if (a.rank() != 2) throw shape_error(name + ": expected a 2-D array, found shape " + detail::format_shape(a.shape));
  return npy_matrix{detail::float32_elements(a, name, convert), a.shape[0], a.shape[1]};
}

/// Reads a 1-D .npy file as float32 values. A 2-D array is a shape_error,
/// even with one row or column. Non-finite values are returned as they are.
inline std::vector<float> read_npy_vector(const std::filesystem::path& path,
                                          npy_convert convert = npy_convert::require_float32,
                                          const npy_limits& limits = {}) {
  const std::string name = path.string();
  const npy_array a = read_npy(path, limits);
  if (a.rank() != 1) throw shape_error(name + ": expected a 1-D array, found shape " + detail::format_shape(a.shape));
  return detail::float32_elements(a, name, convert);
}

// ---------------------------------------------------------------------------
// Writing

namespace detail {

/// numpy aligns the data to 64 bytes (format.ARRAY_ALIGN) so that it can be
/// memory-mapped and read with aligned loads.
inline constexpr std::size_t kNpyDataAlign = 64;

/// Number of elements of a shape the writer accepts; shape_error for rank > 2,
/// negative dimensions or a byte size that overflows.
inline std::size_t checked_write_count(npy_dtype dtype, std::span<const index_t> shape, const std::string& name) {
  if (shape.size() > 2)
    throw shape_error(name + ": cannot write a " + std::to_string(shape.size()) + "-D array of shape " +
                      format_shape(shape) + "; lqer writes 0-D, 1-D and 2-D arrays");
  std::size_t count = 1;
  const std::size_t max_count = std::numeric_limits<std::size_t>::max() / element_size(dtype);
  for (const index_t d : shape) {
    if (d < 0) throw shape_error(name + ": cannot write shape " + format_shape(shape) + ": negative dimension");
    const auto ud = static_cast<std::size_t>(d);
    if (ud != 0 && count > max_count / ud)
      throw shape_error(name + ": cannot write shape " + format_shape(shape) + ": its byte size overflows");
    count *= ud;
  }
  return count;
}

/// The preamble and header numpy's np.save writes (format 1.0): the dict with
/// keys sorted, then spaces and '\n' up to a multiple of 64 bytes. Recent
/// numpy also reserves 21 − digits(shape[0]) spaces so that a growing array
/// can rewrite its header in place; for 0-2-D headers both rules give the same
/// 128 bytes (the dict stays under 100 characters either way, and 117 fit), so
/// it is not repeated here.
inline std::string npy_header_v1(npy_dtype dtype, std::span<const index_t> shape) {
  std::string dict = std::string("{'descr': '") + npy_descr(dtype) +
                     "', 'fortran_order': False, 'shape': " + format_shape(shape) + ", }";
  const std::size_t unpadded = kNpyPreambleV1 + dict.size() + 1;  // + '\n'
  dict.append(kNpyDataAlign - unpadded % kNpyDataAlign, ' ');
  dict += '\n';
  // A 0-2-D header is under 200 bytes: the u16 length of format 1.0 always fits.
  std::string out(kNpyMagic.begin(), kNpyMagic.end());
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

}  // namespace detail

/// The bytes np.save would write for `a` (format 1.0, data at a multiple of
/// 64 bytes). Throws shape_error when the shape is not 0-2-D and non-negative
/// or `a.bytes` does not hold its elements.
inline std::vector<std::byte> encode_npy(const npy_array& a) {
  const std::size_t count = detail::checked_write_count(a.dtype, a.shape, "encode_npy");
  if (a.bytes.size() != count * element_size(a.dtype))
    throw shape_error("encode_npy: " + std::to_string(a.bytes.size()) + " bytes do not hold shape " +
                      detail::format_shape(a.shape) + " of " + to_string(a.dtype));
  const std::string header = detail::npy_header_v1(a.dtype, a.shape);
  std::vector<std::byte> out(header.size() + a.bytes.size());
  std::memcpy(out.data(), header.data(), header.size());
  if (!a.bytes.empty()) std::memcpy(out.data() + header.size(), a.bytes.data(), a.bytes.size());
  return out;
}

/// Writes `data` (C order, little-endian) as a .npy file of the given dtype
/// and shape, atomically (see the file comment). Throws shape_error for a
/// shape that is not 0-2-D and non-negative or data of the wrong byte size,
/// before touching the file system; io_error when the target is a directory
/// or read-only, its directory is missing or not writable, or writing fails —
/// and then the target is unchanged and no temporary file remains. An
/// existing target's permission bits are kept (detail::write_file_atomically).
inline void write_npy(const std::filesystem::path& path, npy_dtype dtype, std::span<const index_t> shape,
                      std::span<const std::byte> data) {
  const std::string name = path.string();
  const std::size_t count = detail::checked_write_count(dtype, shape, name);
  if (data.size() != count * element_size(dtype))
    throw shape_error(name + ": cannot write shape " + detail::format_shape(shape) + " of " + to_string(dtype) +
                      " from " + std::to_string(data.size()) + " bytes (it needs " +
                      std::to_string(count * element_size(dtype)) + ")");
  const std::string header = detail::npy_header_v1(dtype, shape);
  detail::write_file_atomically(path, {std::as_bytes(std::span(header)), data});
}

/// Writes an npy_array (see the byte-level overload).
inline void write_npy(const std::filesystem::path& path, const npy_array& a) {
  write_npy(path, a.dtype, a.shape, a.bytes);
}

/// Writes prod(shape) elements starting at `data`, in C order. The caller
/// guarantees that many elements are there; prefer the range overload, which
/// checks.
template <npy_element T>
void write_npy(const std::filesystem::path& path, const T* data, std::span<const index_t> shape) {
  const std::size_t count = detail::checked_write_count(npy_dtype_of<T>::value, shape, path.string());
  write_npy(path, npy_dtype_of<T>::value, shape, std::as_bytes(std::span(data, count)));
}

/// Writes a contiguous range (std::vector, std::span, std::array) of a
/// supported element type with the given shape; shape_error when the range
/// does not hold prod(shape) elements.
template <std::ranges::contiguous_range R>
requires std::ranges::sized_range<R> && npy_element<std::remove_cv_t<std::ranges::range_value_t<R>>>
void write_npy(const std::filesystem::path& path, const R& data, std::span<const index_t> shape) {
  using T = std::remove_cv_t<std::ranges::range_value_t<R>>;
  const std::span<const T> elements(std::ranges::data(data), std::ranges::size(data));
  write_npy(path, npy_dtype_of<T>::value, shape, std::as_bytes(elements));
}

/// Writes a row-major float32 matrix (rows × cols, row stride = cols).
inline void write_npy_matrix(const std::filesystem::path& path, const float* data, index_t rows, index_t cols) {
  const std::array<index_t, 2> shape{rows, cols};
  write_npy(path, data, std::span<const index_t>(shape));
}

/// Writes a float32 vector as a 1-D array.
inline void write_npy_vector(const std::filesystem::path& path, std::span<const float> data) {
  const std::array<index_t, 1> shape{static_cast<index_t>(data.size())};
  write_npy(path, data, std::span<const index_t>(shape));
}

}  // namespace lqer::io
