// .npy reading and writing: round trips of every dtype and rank, byte identity
// with np.save on the committed reference files, hand-built headers (format
// 2.0/3.0, Fortran order, float16 bit patterns, the dict grammar's variants),
// every kind of bad input — each checked to fail with the right error type and
// sentence and without a large allocation — and atomic writes that fail
// without touching the target or leaving a temporary file behind.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "lqer/io/npy.hpp"
#include "lqer/tensor/check.hpp"
#include "support/allocation_tracking.hpp"

#if __has_include(<unistd.h>) && __has_include(<sys/resource.h>) && __has_include(<sys/stat.h>)
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>

#include "support/files.hpp"
#define LQER_TEST_HAVE_POSIX 1
#else
#define LQER_TEST_HAVE_POSIX 0
#endif

namespace fs = std::filesystem;
using namespace lqer;
using namespace lqer::io;

// ---------------------------------------------------------------------------
// Allocation tracking (tests/support/allocation_tracking.hpp): a test asserts
// that rejecting a file which declares 2^60 entries allocated nothing large.
using lqer::test::largest_allocation;
using lqer::test::reset_largest_allocation;

using lqer::test::contains;
using lqer::test::temp_dir;
using lqer::test::thrown_message;

namespace {

// Largest allocation a rejected input may cause: the error message and the
// header text, never the data. Far below the sizes the bad headers declare.
constexpr std::size_t kSmallAllocation = 64 * 1024;

// ---------------------------------------------------------------------------
// Helpers

template <class T>
std::vector<std::byte> raw_bytes(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> b(s.size());
  if (!b.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

/// A .npy file built by hand: magic, version `major`.`minor`, the header
/// length in the width of that version, `header` verbatim (no padding added),
/// then `data`.
std::vector<std::byte> npy_file(unsigned major, std::string_view header, const std::vector<std::byte>& data = {},
                                unsigned minor = 0) {
  std::vector<std::byte> f = bytes_of("\x93NUMPY");
  f.push_back(std::byte(major));
  f.push_back(std::byte(minor));
  const std::size_t len = header.size();
  const int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) f.push_back(std::byte((len >> (8 * i)) & 0xff));
  const auto h = bytes_of(header);
  f.insert(f.end(), h.begin(), h.end());
  f.insert(f.end(), data.begin(), data.end());
  return f;
}

std::string dict(std::string_view descr, std::string_view shape, std::string_view fortran = "False") {
  return "{'descr': '" + std::string(descr) + "', 'fortran_order': " + std::string(fortran) +
         ", 'shape': " + std::string(shape) + ", }\n";
}

std::vector<std::byte> zeros(std::size_t n) { return std::vector<std::byte>(n); }

std::vector<std::byte> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!b.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

void write_file(const fs::path& p, const std::vector<std::byte>& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }

/// Extreme and ordinary values of each element type, cycled to length n.
template <class T>
std::vector<T> samples(std::size_t n) {
  std::vector<T> base;
  if constexpr (std::is_same_v<T, float>) {
    base = {0.0f,
            -0.0f,
            1.5f,
            -3.25e-38f,
            std::numeric_limits<float>::max(),
            std::numeric_limits<float>::denorm_min(),
            std::numeric_limits<float>::infinity(),
            -std::numeric_limits<float>::quiet_NaN(),
            0.1f};
  } else if constexpr (std::is_same_v<T, double>) {
    base = {0.0,
            -0.0,
            0.1,
            -1e300,
            std::numeric_limits<double>::denorm_min(),
            -std::numeric_limits<double>::infinity(),
            std::numeric_limits<double>::quiet_NaN()};
  } else if constexpr (std::is_same_v<T, half_bits>) {
    for (std::uint16_t b : {0x0000, 0x8000, 0x3c00, 0x0001, 0x7bff, 0xfc00, 0x7e01, 0x3555})
      base.push_back(half_bits{b});
  } else if constexpr (std::is_same_v<T, std::int8_t>) {
    base = {0, -128, 127, -1, 1, 42};
  } else {
    base = {0, 255, 1, 128, 127, 42};
  }
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = base[i % base.size()];
  return v;
}

/// Offset of the data in a .npy file written by format 1.0 (u16 header length).
std::size_t v1_data_offset(const std::vector<std::byte>& f) {
  REQUIRE(f.size() >= 10);
  return 10 + (std::to_integer<std::size_t>(f[8]) | (std::to_integer<std::size_t>(f[9]) << 8));
}

}  // namespace

// ---------------------------------------------------------------------------
// Names

TEST_CASE("npy dtypes: names, descrs and sizes") {
  CHECK(std::string(to_string(npy_dtype::float32)) == "float32");
  CHECK(std::string(to_string(npy_dtype::float16)) == "float16");
  CHECK(std::string(to_string(npy_dtype::float64)) == "float64");
  CHECK(std::string(to_string(npy_dtype::int8)) == "int8");
  CHECK(std::string(to_string(npy_dtype::uint8)) == "uint8");
  CHECK(std::string(npy_descr(npy_dtype::float32)) == "<f4");
  CHECK(std::string(npy_descr(npy_dtype::float16)) == "<f2");
  CHECK(std::string(npy_descr(npy_dtype::float64)) == "<f8");
  CHECK(std::string(npy_descr(npy_dtype::int8)) == "|i1");
  CHECK(std::string(npy_descr(npy_dtype::uint8)) == "|u1");
  CHECK(element_size(npy_dtype::float32) == 4);
  CHECK(element_size(npy_dtype::float16) == 2);
  CHECK(element_size(npy_dtype::float64) == 8);
  CHECK(element_size(npy_dtype::int8) == 1);
  CHECK(element_size(npy_dtype::uint8) == 1);
}

// ---------------------------------------------------------------------------
// Round trips

TEST_CASE_TEMPLATE("npy round trip: write_npy then read_npy returns the same bytes, every dtype and rank", T, float,
                   half_bits, double, std::int8_t, std::uint8_t) {
  temp_dir dir("npy");
  const std::vector<std::vector<index_t>> shapes = {{}, {0}, {1}, {7}, {3, 5}, {1, 4}, {4, 1}, {0, 3}, {9, 11}};
  for (const auto& shape : shapes) {
    const std::string label = io::detail::format_shape(shape);
    CAPTURE(label);
    index_t n = 1;
    for (const index_t d : shape) n *= d;
    const std::vector<T> values = samples<T>(static_cast<std::size_t>(n));
    const fs::path p = dir.path / "a.npy";
    write_npy(p, values, shape);

    const npy_array a = read_npy(p);
    CHECK(a.dtype == npy_dtype_of<T>::value);
    CHECK(a.shape == shape);
    CHECK(a.size() == n);
    CHECK(a.bytes == raw_bytes(values));  // bytes, so NaN payloads and -0 count too
    const std::vector<T> back = a.elements<T>();
    CHECK(raw_bytes(back) == raw_bytes(values));

    // Layout as np.save writes it: format 1.0, the header ends with '\n' and
    // the data starts at a multiple of 64 bytes — at 128 for every 0-2-D array.
    const std::vector<std::byte> file = read_file(p);
    const std::size_t offset = v1_data_offset(file);
    CHECK(file[6] == std::byte{1});
    CHECK(file[7] == std::byte{0});
    CHECK(offset == 128);
    CHECK(file[offset - 1] == std::byte{'\n'});
    CHECK(file.size() == offset + values.size() * sizeof(T));
    CHECK(encode_npy(a) == file);

    // The in-memory reader agrees with the file reader.
    const npy_array m = parse_npy(file, "memory");
    CHECK(m.dtype == a.dtype);
    CHECK(m.shape == a.shape);
    CHECK(m.bytes == a.bytes);
  }
  CHECK(dir.entries() == std::vector<std::string>{"a.npy"});  // no temporary file left behind
}

TEST_CASE("npy round trip: the pointer, matrix and vector writers") {
  temp_dir dir("npy");
  const std::vector<float> m = samples<float>(6);
  const std::array<index_t, 2> shape{2, 3};
  write_npy(dir.path / "p.npy", m.data(), shape);
  write_npy_matrix(dir.path / "m.npy", m.data(), 2, 3);
  write_npy_vector(dir.path / "v.npy", m);
  CHECK(read_file(dir.path / "p.npy") == read_file(dir.path / "m.npy"));
  const npy_array v = read_npy(dir.path / "v.npy");
  CHECK(v.shape == std::vector<index_t>{6});
  CHECK(v.bytes == raw_bytes(m));
  const npy_matrix back = read_npy_matrix(dir.path / "m.npy");
  CHECK(back.rows == 2);
  CHECK(back.cols == 3);
  CHECK(raw_bytes(back.data) == raw_bytes(m));
}

TEST_CASE("npy writer output is byte-identical to numpy's for the committed reference files") {
  temp_dir dir("npy");
  for (const char* file : {"/layer_small_W.npy", "/layer_small_scale.npy", "/lqer_w4_rows_b16_tail_in.npy"}) {
    CAPTURE(file);
    const fs::path ref = std::string(LQER_TEST_DATA_DIR) + file;
    const npy_array a = read_npy(ref);
    write_npy(dir.path / "copy.npy", a);
    CHECK(read_file(dir.path / "copy.npy") == read_file(ref));
  }
}

// ---------------------------------------------------------------------------
// Reference files

TEST_CASE("npy reads the committed reference layer: shape and values known from the raw bytes") {
  const std::string path = LQER_TEST_DATA_DIR "/layer_small_W.npy";
  const npy_array a = read_npy(path);
  CHECK(a.dtype == npy_dtype::float32);
  CHECK(a.shape == std::vector<index_t>{96, 256});

  const npy_matrix w = read_npy_matrix(path);
  REQUIRE(w.rows == 96);
  REQUIRE(w.cols == 256);
  REQUIRE(w.data.size() == 96u * 256u);
  // Expected bits read independently with Python's struct module at
  // offset 128 + 4·(r·256 + c) of the file.
  CHECK(bits_of(w.data[0]) == 0xbcacdd66u);               // (0, 0)   ≈ -0.0211017
  CHECK(bits_of(w.data[17 * 256 + 42]) == 0x3cda2050u);   // (17, 42) ≈ 0.0266267
  CHECK(bits_of(w.data[95 * 256 + 255]) == 0x3d00bd1bu);  // (95, 255) ≈ 0.0314303
  CHECK_NOTHROW(require_finite(w.data, w.cols, path));

  const std::vector<float> s = read_npy_vector(LQER_TEST_DATA_DIR "/layer_small_scale.npy");
  REQUIRE(s.size() == 256);
  CHECK(bits_of(s[0]) == 0x3e41c8a9u);    // ≈ 0.189242
  CHECK(bits_of(s[255]) == 0x3e48889du);  // ≈ 0.195834
  CHECK_NOTHROW(require_finite(s, "scale"));
}

TEST_CASE("npy reads every committed reference file as a 1-D or 2-D float32 array") {
  int count = 0;
  for (const auto& e : fs::directory_iterator(LQER_TEST_DATA_DIR)) {
    if (e.path().extension() != ".npy") continue;
    CAPTURE(e.path().string());
    const npy_array a = read_npy(e.path());
    CHECK(a.dtype == npy_dtype::float32);
    CHECK((a.rank() == 1 || a.rank() == 2));
    CHECK(a.size() > 0);
    ++count;
  }
  CHECK(count >= 20);
}

TEST_CASE("npy seed corpus of the fuzzer: every file parses") {
  const fs::path corpus = fs::path(LQER_TEST_DATA_DIR) / ".." / "fuzz" / "corpus" / "npy";
  int count = 0;
  for (const auto& e : fs::directory_iterator(corpus)) {
    CAPTURE(e.path().string());
    CHECK(fs::file_size(e.path()) < 1024);
    CHECK_NOTHROW(read_npy(e.path()));
    ++count;
  }
  CHECK(count >= 5);
}

// ---------------------------------------------------------------------------
// Float32 convenience readers

TEST_CASE("read_npy_matrix and read_npy_vector check rank and dtype") {
  temp_dir dir("npy");
  SUBCASE("a vector is not a matrix, a matrix is not a vector") {
    const std::string msg1 =
        thrown_message<shape_error>([] { (void)read_npy_matrix(LQER_TEST_DATA_DIR "/layer_small_scale.npy"); });
    CHECK(contains(msg1, "layer_small_scale.npy: expected a 2-D array, found shape (256,)"));
    const std::string msg2 =
        thrown_message<shape_error>([] { (void)read_npy_vector(LQER_TEST_DATA_DIR "/layer_small_W.npy"); });
    CHECK(contains(msg2, "layer_small_W.npy: expected a 1-D array, found shape (96, 256)"));
    // One row is still 2-D; a scalar is neither.
    const std::array<index_t, 2> row{1, 3};
    write_npy(dir.path / "row.npy", samples<float>(3), row);
    CHECK_THROWS_AS((void)read_npy_vector(dir.path / "row.npy"), shape_error);
    write_npy(dir.path / "scalar.npy", samples<float>(1), std::span<const index_t>{});
    CHECK_THROWS_AS((void)read_npy_vector(dir.path / "scalar.npy"), shape_error);
    CHECK_THROWS_AS((void)read_npy_matrix(dir.path / "scalar.npy"), shape_error);
  }
  SUBCASE("another dtype is refused unless conversion is asked for") {
    const std::array<index_t, 2> shape{2, 2};
    const std::vector<half_bits> h = {float_to_half(1.0f), float_to_half(-2.5f), float_to_half(65504.0f),
                                      half_bits{0x0001}};
    write_npy(dir.path / "h.npy", h, shape);
    const std::string msg = thrown_message<value_error>([&] { (void)read_npy_matrix(dir.path / "h.npy"); });
    CHECK(contains(msg, "h.npy: expected float32 data ('<f4'), found float16 ('<f2')"));
    const npy_matrix m = read_npy_matrix(dir.path / "h.npy", npy_convert::any_to_float32);
    CHECK(m.data == std::vector<float>{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24)});
  }
  SUBCASE("conversions: integers exactly, float64 rounded to nearest, out of range to Inf") {
    const std::array<index_t, 1> shape{4};
    write_npy(dir.path / "i8.npy", std::vector<std::int8_t>{-128, -1, 0, 127}, shape);
    write_npy(dir.path / "u8.npy", std::vector<std::uint8_t>{0, 1, 128, 255}, shape);
    write_npy(dir.path / "f8.npy", std::vector<double>{0.1, -1e300, 1e300, 1.0 + 1e-12}, shape);
    CHECK(read_npy_vector(dir.path / "i8.npy", npy_convert::any_to_float32) ==
          std::vector<float>{-128.0f, -1.0f, 0.0f, 127.0f});
    CHECK(read_npy_vector(dir.path / "u8.npy", npy_convert::any_to_float32) ==
          std::vector<float>{0.0f, 1.0f, 128.0f, 255.0f});
    const std::vector<float> f = read_npy_vector(dir.path / "f8.npy", npy_convert::any_to_float32);
    CHECK(bits_of(f[0]) == bits_of(0.1f));  // 0.1 as a double rounds to the float nearest 0.1
    CHECK(f[1] == -std::numeric_limits<float>::infinity());
    CHECK(f[2] == std::numeric_limits<float>::infinity());
    CHECK(f[3] == 1.0f);
    CHECK_THROWS_AS((void)read_npy_vector(dir.path / "i8.npy"), value_error);
  }
  SUBCASE("the reader returns non-finite values; require_finite is the caller's check") {
    const std::vector<float> v = {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f};
    write_npy_vector(dir.path / "nan.npy", v);
    const std::vector<float> back = read_npy_vector(dir.path / "nan.npy");
    CHECK(std::isnan(back[1]));
    CHECK(thrown_message<value_error>([&] { require_finite(back, "nan.npy"); }) == "nan.npy: element 1 is NaN");
  }
}

TEST_CASE("npy_array::elements and to_float32 refuse mismatched dtypes and sizes") {
  npy_array a;
  a.dtype = npy_dtype::float16;
  a.shape = {2};
  a.bytes = zeros(4);
  CHECK(a.elements<half_bits>().size() == 2);
  CHECK_THROWS_AS((void)a.elements<float>(), value_error);
  a.bytes = zeros(3);
  CHECK_THROWS_AS((void)a.elements<half_bits>(), shape_error);
  CHECK_THROWS_AS((void)to_float32(a), shape_error);
  CHECK_THROWS_AS((void)encode_npy(a), shape_error);
}

// ---------------------------------------------------------------------------
// Hand-built headers

TEST_CASE("npy format versions 2.0 and 3.0: u32 header length") {
  const std::vector<float> v = {1.0f, -2.0f};
  for (const unsigned major : {2u, 3u}) {
    CAPTURE(major);
    const npy_array a = parse_npy(npy_file(major, dict("<f4", "(2,)"), raw_bytes(v)), "v2.npy");
    CHECK(a.dtype == npy_dtype::float32);
    CHECK(a.shape == std::vector<index_t>{2});
    CHECK(a.elements<float>() == v);
  }
}

TEST_CASE("npy header grammar: the variants a Python dict literal allows") {
  struct variant {
    const char* header;
    std::vector<index_t> shape;
  };
  const variant variants[] = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", {2, 3}},
      {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", {2, 3}},  // any key order, no trailing comma
      {"{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3,)}", {2, 3}},  // double quotes, (2,3,)
      {"  {  'descr' :'<f4' ,\n'fortran_order':False,\t'shape':( 2 , 3 ) , }  \r\n", {2, 3}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", {2, 3}},  // written under Python 2
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", {6}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': ( 6 , ), }", {6}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {}},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 6), }", {0, 6}},
  };
  for (const auto& v : variants) {
    CAPTURE(v.header);
    index_t n = 1;
    for (const index_t d : v.shape) n *= d;
    const npy_array a = parse_npy(npy_file(1, v.header, zeros(4 * static_cast<std::size_t>(n))), "grammar.npy");
    CHECK(a.shape == v.shape);
    CHECK(a.size() == n);
  }
}

TEST_CASE("npy one-byte dtypes: any byte order character is accepted") {
  for (const char* descr : {"|i1", "<i1", ">i1", "=i1"}) {
    CAPTURE(descr);
    CHECK(parse_npy(npy_file(1, dict(descr, "(1,)"), zeros(1)), "x").dtype == npy_dtype::int8);
  }
  for (const char* descr : {"|u1", "<u1", ">u1", "=u1"}) {
    CAPTURE(descr);
    CHECK(parse_npy(npy_file(1, dict(descr, "(1,)"), zeros(1)), "x").dtype == npy_dtype::uint8);
  }
}

TEST_CASE("npy Fortran order: 2-D arrays are transposed into C order, 1-D and 0-D are unchanged") {
  SUBCASE("float32 2 x 3") {
    // Column-major storage of v(r, c) = 10·r + c: columns (0, 10), (1, 11), (2, 12).
    const std::vector<float> column_major = {0, 10, 1, 11, 2, 12};
    const npy_array a = parse_npy(npy_file(1, dict("<f4", "(2, 3)", "True"), raw_bytes(column_major)), "f.npy");
    CHECK(a.shape == std::vector<index_t>{2, 3});
    CHECK(a.elements<float>() == std::vector<float>{0, 1, 2, 10, 11, 12});
  }
  SUBCASE("int8 3 x 2 and float64 2 x 2: the element size is respected") {
    const std::vector<std::int8_t> cm8 = {0, 10, 20, 1, 11, 21};
    const npy_array a = parse_npy(npy_file(1, dict("|i1", "(3, 2)", "True"), raw_bytes(cm8)), "f.npy");
    CHECK(a.elements<std::int8_t>() == std::vector<std::int8_t>{0, 1, 10, 11, 20, 21});
    const std::vector<double> cm64 = {0.5, 10.5, 1.5, 11.5};
    const npy_array b = parse_npy(npy_file(1, dict("<f8", "(2, 2)", "True"), raw_bytes(cm64)), "f.npy");
    CHECK(b.elements<double>() == std::vector<double>{0.5, 1.5, 10.5, 11.5});
  }
  SUBCASE("1-D and 0-D") {
    const std::vector<float> v = {1, 2, 3};
    CHECK(parse_npy(npy_file(1, dict("<f4", "(3,)", "True"), raw_bytes(v)), "f").elements<float>() == v);
    const std::vector<float> s = {7};
    CHECK(parse_npy(npy_file(1, dict("<f4", "()", "True"), raw_bytes(s)), "f").elements<float>() == s);
  }
  SUBCASE("the file reader transposes too") {
    temp_dir dir("npy");
    const std::vector<float> column_major = {0, 10, 1, 11, 2, 12};
    write_file(dir.path / "f.npy", npy_file(1, dict("<f4", "(2, 3)", "True"), raw_bytes(column_major)));
    const npy_matrix m = read_npy_matrix(dir.path / "f.npy");
    CHECK(m.data == std::vector<float>{0, 1, 2, 10, 11, 12});
  }
}

TEST_CASE("npy float16: known bit patterns read and convert exactly") {
  const std::vector<std::uint16_t> bits = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x3555, 0x8000};
  const npy_array a = parse_npy(npy_file(1, dict("<f2", "(7,)"), raw_bytes(bits)), "h.npy");
  CHECK(a.dtype == npy_dtype::float16);
  const std::vector<half_bits> h = a.elements<half_bits>();
  for (std::size_t i = 0; i < bits.size(); ++i) CHECK(h[i].bits == bits[i]);
  const std::vector<float> f = to_float32(a);
  CHECK(f[0] == 1.0f);
  CHECK(f[1] == -2.0f);
  CHECK(f[2] == 65504.0f);               // largest finite half
  CHECK(f[3] == std::ldexp(1.0f, -24));  // smallest subnormal half
  CHECK(f[4] == std::numeric_limits<float>::infinity());
  CHECK(f[5] == 0.333251953125f);       // 1365 / 4096: the half nearest 1/3
  CHECK(bits_of(f[6]) == 0x80000000u);  // -0 keeps its sign
}

// ---------------------------------------------------------------------------
// Bad input: every case must throw the named error type with a sentence that
// names the file and the problem, and must not allocate anything large.

namespace {
struct bad_input {
  const char* label;
  std::vector<std::byte> file;
  const char* expected;  ///< a part of the message
  npy_limits limits = {};
};

npy_limits no_element_limit() { return npy_limits{std::numeric_limits<index_t>::max()}; }

template <class E>
void check_rejected(const std::vector<bad_input>& cases) {
  for (const auto& c : cases) {
    CAPTURE(c.label);
    reset_largest_allocation();
    const std::string msg = thrown_message<E>([&] { (void)parse_npy(c.file, "bad.npy", c.limits); });
    const std::size_t allocated = largest_allocation();
    CAPTURE(msg);
    CHECK(msg.rfind("bad.npy: ", 0) == 0);
    CHECK(contains(msg, c.expected));
    CHECK(allocated < kSmallAllocation);
  }
}
}  // namespace

TEST_CASE("npy rejects malformed files with parse_error") {
  const std::vector<std::byte> f4x4 = zeros(16);
  std::string sixty_five_dims = "(";
  for (int i = 0; i < 65; ++i) sixty_five_dims += "1, ";
  sixty_five_dims += ")";
  std::vector<bad_input> cases = {
      {"empty file", {}, "fewer than the 10-byte preamble"},
      {"not npy at all", bytes_of("hello, this is not a .npy file"), "not a .npy file"},
      {"magic in lower case", bytes_of("\x93numpy\x01"), "not a .npy file"},
      {"magic only", bytes_of("\x93NUMPY"), "fewer than the 10-byte preamble"},
      {"first bytes of the magic", bytes_of("\x93NU"), "fewer than the 10-byte preamble"},
      {"format 2.0 without its u32 length", bytes_of(std::string_view("\x93NUMPY\x02\x00\x10\x00", 10)),
       "fewer than the 12-byte preamble"},
      {"header length past EOF (1.0)", bytes_of(std::string_view("\x93NUMPY\x01\x00\xc8\x00{'descr'", 18)),
       "declares a 200-byte header but only 8 bytes follow"},
      {"header length past EOF (2.0, 4 GB)", bytes_of(std::string_view("\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14)),
       "declares a 4294967295-byte header"},
      {"truncated data", npy_file(1, dict("<f4", "(4,)"), zeros(8)),
       "truncated .npy data: shape (4,) of float32 needs 16 bytes but 8 follow"},
      {"no data at all", npy_file(1, dict("<f8", "(2, 2)")), "needs 32 bytes but 0 follow"},
      {"trailing bytes", npy_file(1, dict("<f4", "(1,)"), zeros(8)), "4 unexpected bytes after the data"},
      {"2^40 elements, default limit", npy_file(1, dict("<f4", "(1099511627776,)"), f4x4),
       "has more than 4294967296 elements"},
      {"2^40 elements without a limit: the file size stops it", npy_file(1, dict("<f4", "(1048576, 1048576)"), f4x4),
       "needs 4398046511104 bytes but 16 follow", no_element_limit()},
      {"element count overflows 64 bits", npy_file(1, dict("<f4", "(4611686018427387904, 4611686018427387904)")),
       "elements (npy_limits::max_elements)", no_element_limit()},
      {"byte count overflows 64 bits", npy_file(1, dict("<f8", "(2305843009213693952,)")), "overflows",
       no_element_limit()},
      {"huge dimension times zero", npy_file(1, dict("<f4", "(0, 4611686018427387904)")), "has more than"},
      {"negative dimension", npy_file(1, dict("<f4", "(-3,)"), f4x4), "negative dimension -3"},
      {"negative dimension with a space", npy_file(1, dict("<f4", "(2, - 3)"), f4x4), "negative dimension -3"},
      {"garbage dimension", npy_file(1, dict("<f4", "(a,)")), "expected a dimension"},
      {"float dimension", npy_file(1, dict("<f4", "(2.5,)")), "expected ',' or ')' in the shape"},
      {"dimension too large", npy_file(1, dict("<f4", "(99999999999999999999,)")), "does not fit"},
      {"leading zero", npy_file(1, dict("<f4", "(04,)"), f4x4), "leading zero"},
      {"(n) is not a tuple", npy_file(1, dict("<f4", "(4)"), f4x4), "not a tuple"},
      {"list shape", npy_file(1, dict("<f4", "[4]"), f4x4), "expected a tuple"},
      {"unclosed shape", npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,"), "expected a dimension"},
      {"more than 64 dimensions", npy_file(1, dict("<f4", sixty_five_dims)), "more than 64 dimensions"},
      {"missing key", npy_file(1, "{'descr': '<f4', 'fortran_order': False}", f4x4), "the key 'shape' is missing"},
      {"duplicate key", npy_file(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", f4x4),
       "appears twice"},
      {"unknown key", npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}", f4x4),
       "unknown key"},
      {"fortran_order not a bool", npy_file(1, dict("<f4", "(4,)", "0"), f4x4), "expected True or False"},
      {"fortran_order lower case", npy_file(1, dict("<f4", "(4,)", "true"), f4x4), "expected True or False"},
      {"unterminated string", npy_file(1, "{'descr': '<f4"), "unterminated string"},
      {"escape in a string", npy_file(1, "{'descr': '<f\\x34'}"), "unexpected character in a string"},
      {"non-ASCII in a string", npy_file(1, "{'descr': '<f4\xc3\xa9'}"), "unexpected character in a string"},
      {"unquoted key", npy_file(1, "{descr: '<f4'}"), "expected a quoted key"},
      {"descr not a string", npy_file(1, "{'descr': 4}"), "expected a quoted dtype string"},
      {"missing colon", npy_file(1, "{'descr' '<f4'}"), "expected ':' after a key"},
      {"missing comma", npy_file(1, "{'descr': '<f4' 'fortran_order': False}"), "expected ',' or '}'"},
      {"double comma", npy_file(1, "{'descr': '<f4',, 'fortran_order': False}"), "expected a quoted key"},
      {"not a dict", npy_file(1, "['descr', '<f4']"), "must be a dict"},
      {"empty header", npy_file(1, ""), "must be a dict"},
      {"empty dict", npy_file(1, "{}"), "the key 'descr' is missing"},
      {"text after the dict", npy_file(1, dict("<f4", "(4,)") + "x", f4x4), "unexpected text after the closing '}'"},
      {"NUL padding", npy_file(1, dict("<f4", "(4,)") + std::string(3, '\0'), f4x4), "unexpected text after"},
  };
  check_rejected<parse_error>(cases);
}

TEST_CASE("npy rejects valid files it does not read with unsupported_error") {
  std::vector<bad_input> cases = {
      {"big-endian float32", npy_file(1, dict(">f4", "(1,)"), zeros(4)), "dtype '>f4' is big-endian"},
      {"big-endian float64", npy_file(1, dict(">f8", "(1,)"), zeros(8)), "dtype '>f8' is big-endian"},
      {"int32", npy_file(1, dict("<i4", "(1,)"), zeros(4)), "dtype \"<i4\" is not supported"},
      {"no byte order", npy_file(1, dict("f4", "(1,)"), zeros(4)), "dtype \"f4\" is not supported"},
      {"complex", npy_file(1, dict("<c8", "(1,)"), zeros(8)), "not supported"},
      {"structured", npy_file(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", zeros(4)),
       "structured dtypes"},
      {"3-D", npy_file(1, dict("<f4", "(2, 2, 2)"), zeros(32)), "a 3-D array of shape (2, 2, 2) is not supported"},
      {"format 4.0", npy_file(4, dict("<f4", "(1,)"), zeros(4)), "format version 4.0 is not supported"},
      {"format 1.1", npy_file(1, dict("<f4", "(1,)"), zeros(4), 1), "format version 1.1"},
  };
  check_rejected<unsupported_error>(cases);
}

TEST_CASE("npy file reader: missing files, directories and bad files") {
  temp_dir dir("npy");
  CHECK(contains(thrown_message<io_error>([&] { (void)read_npy(dir.path / "missing.npy"); }), "no such file"));
  CHECK(contains(thrown_message<io_error>([&] { (void)read_npy(dir.path); }), "is a directory"));

  // A header declaring 2^40 elements must fail before allocating, from a file as from memory.
  write_file(dir.path / "huge.npy", npy_file(1, dict("<f4", "(1048576, 1048576)"), zeros(16)));
  reset_largest_allocation();
  const std::string msg =
      thrown_message<parse_error>([&] { (void)read_npy(dir.path / "huge.npy", no_element_limit()); });
  CHECK(largest_allocation() < kSmallAllocation);
  CHECK(contains(msg, "huge.npy: truncated .npy data"));
  CHECK_THROWS_AS((void)read_npy(dir.path / "huge.npy"), parse_error);

  write_file(dir.path / "short.npy", npy_file(2, dict("<f4", "(3,)"), zeros(11)));
  CHECK(contains(thrown_message<parse_error>([&] { (void)read_npy(dir.path / "short.npy"); }),
                 "needs 12 bytes but 11 follow"));
  write_file(dir.path / "hdr.npy", bytes_of(std::string_view("\x93NUMPY\x01\x00\xff\xff{", 11)));
  CHECK(contains(thrown_message<parse_error>([&] { (void)read_npy(dir.path / "hdr.npy"); }),
                 "declares a 65535-byte header"));
  write_file(dir.path / "tiny.npy", bytes_of("\x93NUM"));
  CHECK_THROWS_AS((void)read_npy(dir.path / "tiny.npy"), parse_error);
  write_file(dir.path / "empty.npy", {});
  CHECK_THROWS_AS((void)read_npy(dir.path / "empty.npy"), parse_error);
}

// ---------------------------------------------------------------------------
// Writing: shape checks and atomicity

TEST_CASE("npy writer refuses bad shapes before touching the file system") {
  temp_dir dir("npy");
  const fs::path p = dir.path / "w.npy";
  const std::vector<float> v = samples<float>(6);
  const std::array<index_t, 2> wrong{2, 4};
  CHECK(contains(thrown_message<shape_error>([&] { write_npy(p, v, wrong); }),
                 "cannot write shape (2, 4) of float32 from 24 bytes (it needs 32)"));
  const std::array<index_t, 3> three{1, 2, 3};
  CHECK(contains(thrown_message<shape_error>([&] { write_npy(p, v, three); }), "cannot write a 3-D array"));
  const std::array<index_t, 2> negative{-2, -3};
  CHECK(contains(thrown_message<shape_error>([&] { write_npy(p, v, negative); }), "negative dimension"));
  CHECK_THROWS_AS(write_npy_matrix(p, v.data(), -1, 6), shape_error);
  const std::array<index_t, 2> overflow{index_t{1} << 62, 8};
  CHECK_THROWS_AS(write_npy(p, v.data(), overflow), shape_error);
  CHECK(dir.entries().empty());
}

TEST_CASE("npy writer fails with io_error and creates nothing when the target cannot be written") {
  temp_dir dir("npy");
  const std::vector<float> v = samples<float>(4);
  SUBCASE("missing directory") {
    const fs::path p = dir.path / "missing" / "w.npy";
    CHECK(contains(thrown_message<io_error>([&] { write_npy_vector(p, v); }), "is not an existing directory"));
    CHECK(dir.entries().empty());
  }
  SUBCASE("the target is a directory") {
    fs::create_directory(dir.path / "d.npy");
    const std::string msg = thrown_message<io_error>([&] { write_npy_vector(dir.path / "d.npy", v); });
    CHECK(contains(msg, "d.npy: cannot write: it is a directory"));
    CHECK(fs::is_directory(dir.path / "d.npy"));
    CHECK(fs::is_empty(dir.path / "d.npy"));
    CHECK(dir.entries() == std::vector<std::string>{"d.npy"});
  }
  SUBCASE("the path ends with a separator") {
    CHECK(contains(thrown_message<io_error>([&] { write_npy_vector(dir.path / "", v); }), "names a directory"));
    CHECK(dir.entries().empty());
  }
  SUBCASE("the parent is a file") {
    write_file(dir.path / "file", bytes_of("x"));
    CHECK_THROWS_AS(write_npy_vector(dir.path / "file" / "w.npy", v), io_error);
    CHECK(dir.entries() == std::vector<std::string>{"file"});
  }
  SUBCASE("read-only directory") {
#if LQER_TEST_HAVE_POSIX
    if (::geteuid() == 0) {
      MESSAGE("running as root, which may write into a read-only directory: read-only case skipped");
      return;
    }
#endif
    write_file(dir.path / "w.npy", bytes_of("old"));
    fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
    CHECK(contains(thrown_message<io_error>([&] { write_npy_vector(dir.path / "w.npy", v); }),
                   "creating the temporary file"));
    fs::permissions(dir.path, fs::perms::owner_all, fs::perm_options::replace);
    CHECK(read_file(dir.path / "w.npy") == bytes_of("old"));
    CHECK(dir.entries() == std::vector<std::string>{"w.npy"});
  }
}

TEST_CASE("npy writer replaces an existing target atomically") {
  temp_dir dir("npy");
  const fs::path p = dir.path / "w.npy";
  write_file(p, bytes_of("old content"));
  const std::vector<float> v = samples<float>(4);
  write_npy_vector(p, v);
  CHECK(read_npy_vector(p) == v);
  CHECK(dir.entries() == std::vector<std::string>{"w.npy"});

#if LQER_TEST_HAVE_POSIX
  SUBCASE("a write that fails half-way leaves the old file and no temporary file") {
    // A file size limit (RLIMIT_FSIZE binds root too) makes the data write
    // fail after the temporary file was created and partly written: the
    // failure the atomic write exists for (a full disk, a quota).
    write_file(p, bytes_of("old content"));
    const std::vector<float> big(256 * 1024, 1.0f);  // 1 MiB
    rlimit old_limit{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    rlimit small = old_limit;
    small.rlim_cur = 4096;
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string msg;
    try {
      write_npy_vector(p, big);
    } catch (const io_error& e) {
      msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CAPTURE(msg);
    CHECK(contains(msg, "w.npy: cannot write: writing "));
    CHECK(read_file(p) == bytes_of("old content"));
    CHECK(dir.entries() == std::vector<std::string>{"w.npy"});
  }
#endif
}

#if LQER_TEST_HAVE_POSIX
namespace {
/// The permission bits of `p` (rwx for user, group, others).
unsigned mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return static_cast<unsigned>(st.st_mode) & 0777u;
}

void set_mode(const fs::path& p, unsigned mode) { REQUIRE(::chmod(p.c_str(), static_cast<::mode_t>(mode)) == 0); }

/// Sets the umask for the scope (it is process-wide: the tests run one at a time).
struct scoped_umask {
  ::mode_t old;
  explicit scoped_umask(::mode_t m) : old(::umask(m)) {}
  scoped_umask(const scoped_umask&) = delete;
  scoped_umask& operator=(const scoped_umask&) = delete;
  ~scoped_umask() { ::umask(old); }
};
}  // namespace

TEST_CASE("npy writer keeps an existing target's permission bits — a new file gets 0666 & ~umask") {
  temp_dir dir("npy");
  const fs::path p = dir.path / "w.npy";
  const std::vector<float> v = samples<float>(4);
  const scoped_umask umask(022);
  write_npy_vector(p, v);
  CHECK(mode_of(p) == 0644u);
  for (const unsigned mode : {0600u, 0640u, 0664u, 0200u, 0755u}) {
    CAPTURE(mode);
    set_mode(p, mode);
    write_npy_vector(p, v);  // the umask (022) would make 0644 of a new file
    CHECK(mode_of(p) == mode);
    set_mode(p, 0600);
    CHECK(read_npy_vector(p) == v);
  }
  {
    const scoped_umask strict(077);
    write_npy_vector(dir.path / "new.npy", v);
    CHECK(mode_of(dir.path / "new.npy") == 0600u);
  }
  CHECK(dir.entries() == std::vector<std::string>{"new.npy", "w.npy"});
}

TEST_CASE("npy writer refuses a read-only target and leaves it unchanged") {
  // rename(2) only needs the directory to be writable, and root (these tests'
  // user here) passes every permission check: the refusal must come from the
  // target's mode bits.
  temp_dir dir("npy");
  const fs::path p = dir.path / "w.npy";
  const std::vector<float> v = samples<float>(4);
  for (const unsigned mode : {0444u, 0400u, 0555u, 0000u}) {
    CAPTURE(mode);
    write_file(p, bytes_of("old content"));
    set_mode(p, mode);
    const std::string msg = thrown_message<io_error>([&] { write_npy_vector(p, v); });
    CHECK(msg.find(p.string() + ": cannot write: it is read-only") == 0);
    CHECK(mode_of(p) == mode);
    set_mode(p, 0600);
    CHECK(read_file(p) == bytes_of("old content"));
    CHECK(dir.entries() == std::vector<std::string>{"w.npy"});  // no temporary left
  }
}

TEST_CASE("npy writer takes any legal file name, up to NAME_MAX (255 bytes)") {
  // The temporary's name once was "<name>.tmp.<16 hex>": past 233 bytes it
  // was itself too long, and a legal target could not be written.
  temp_dir dir("npy");
  const std::vector<float> v = samples<float>(4);
  for (const std::size_t len : {233u, 244u, 255u}) {
    CAPTURE(len);
    const fs::path p = dir.path / (std::string(len - 4, 'a') + ".npy");
    write_npy_vector(p, v);  // new
    CHECK(read_npy_vector(p) == v);
    write_npy_vector(p, samples<float>(5));  // replaced
    CHECK(read_npy_vector(p).size() == 5);
    CHECK(dir.entries() == std::vector<std::string>{p.filename().string()});
    fs::remove(p);
  }
  // One byte more is the file system's refusal, an io_error naming the file.
  const fs::path too_long = dir.path / (std::string(252, 'a') + ".npy");
  CHECK_THROWS_AS(write_npy_vector(too_long, v), io_error);
  CHECK(dir.entries().empty());
}

TEST_CASE("npy writer replaces a symlink target by a file and leaves what it pointed to alone") {
  temp_dir dir("npy");
  write_file(dir.path / "victim", bytes_of("old content"));
  set_mode(dir.path / "victim", 0600);
  fs::create_symlink("victim", dir.path / "w.npy");
  const scoped_umask umask(022);
  write_npy_vector(dir.path / "w.npy", samples<float>(4));
  CHECK(!fs::is_symlink(dir.path / "w.npy"));
  CHECK(mode_of(dir.path / "w.npy") == 0644u);  // a new file: the link's pointee's mode is not copied
  CHECK(read_file(dir.path / "victim") == bytes_of("old content"));
  CHECK(dir.entries() == std::vector<std::string>{"victim", "w.npy"});
}
#endif

// ---------------------------------------------------------------------------
// require_finite (tensor/check.hpp)

TEST_CASE("require_finite names the first non-finite element by row and column") {
  std::vector<float> m(4 * 20, 0.5f);
  CHECK_NOTHROW(require_finite(m, 20, "W.npy"));
  m[3 * 20 + 17] = std::numeric_limits<float>::quiet_NaN();
  m[3 * 20 + 18] = std::numeric_limits<float>::infinity();  // later: not the one reported
  CHECK(thrown_message<value_error>([&] { require_finite(m, 20, "W.npy"); }) == "W.npy: element (3, 17) is NaN");
  m[1 * 20 + 0] = std::numeric_limits<float>::infinity();
  CHECK(thrown_message<value_error>([&] { require_finite(m, 20, "W.npy"); }) == "W.npy: element (1, 0) is +Inf");
  m[0 * 20 + 19] = -std::numeric_limits<float>::infinity();
  CHECK(thrown_message<value_error>([&] { require_finite(m, 20, "W.npy"); }) == "W.npy: element (0, 19) is -Inf");
  CHECK(thrown_message<value_error>([&] { require_finite(m, "v"); }) == "v: element 19 is -Inf");
  CHECK(thrown_message<value_error>([&] { require_finite(matrix_view<const float>(m.data(), 4, 20), "view"); }) ==
        "view: element (0, 19) is -Inf");
  // Near the edges of finite: the largest float and a subnormal pass.
  const std::vector<float> edge = {std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                   std::numeric_limits<float>::denorm_min()};
  CHECK_NOTHROW(require_finite(edge, 3, "edge"));
  CHECK_THROWS_AS(require_finite(m, 0, "W"), shape_error);
  CHECK_THROWS_AS(require_finite(m, 7, "W"), shape_error);
}
