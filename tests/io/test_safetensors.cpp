// safetensors reading and writing: round trips of every dtype (0-d and empty
// tensors included) and of metadata, the zero-copy views (they point into the
// file's mapping), the committed files written by Hugging Face's `safetensors`
// package read value by value, lqer's writer reproducing that package's bytes,
// the other direction through the package itself when LQER_PYTHON names a
// Python that has it, every class of malformed file — each refused with the
// right error type, a message naming the file and the byte offset — and atomic
// writes that fail without touching the target or leaving a temporary file.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "lqer/io/safetensors.hpp"
#include "lqer/io/sha256.hpp"
#include "support/allocation_tracking.hpp"

#if __has_include(<unistd.h>) && __has_include(<sys/resource.h>) && __has_include(<sys/stat.h>)
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
using lqer::test::largest_allocation;
using lqer::test::reset_largest_allocation;

using lqer::test::contains;
using lqer::test::temp_dir;
using lqer::test::thrown_message;

namespace {

const fs::path kData = fs::path(LQER_TEST_DATA_DIR) / "safetensors";
const fs::path kCorpus = fs::path(LQER_TEST_DATA_DIR) / ".." / "fuzz" / "corpus" / "safetensors";

// Largest allocation a rejected input may cause: messages and the header's
// few entries, never anything the header declares.
constexpr std::size_t kSmallAllocation = 64 * 1024;

// ---------------------------------------------------------------------------
// Helpers

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> b(s.size());
  if (!b.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

template <class T>
std::vector<std::byte> raw_bytes(const std::vector<T>& v) {
  std::vector<std::byte> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<std::byte> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes_of(s);
}

void write_file(const fs::path& p, const std::vector<std::byte>& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

std::string hex_of(std::span<const std::byte> b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (const std::byte x : b) {
    s += kHex[std::to_integer<unsigned>(x) >> 4];
    s += kHex[std::to_integer<unsigned>(x) & 15];
  }
  return s;
}

std::vector<std::byte> from_hex(const std::string& h) {
  std::vector<std::byte> b(h.size() / 2);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(std::stoul(h.substr(2 * i, 2), nullptr, 16));
  return b;
}

/// A safetensors file built by hand, without lqer::io: the 8-byte length
/// (`declared`, or the header's size), the header verbatim, then `data`.
std::vector<std::byte> st_file(std::string_view header, std::string_view data = {},
                               std::uint64_t declared = std::numeric_limits<std::uint64_t>::max() - 1) {
  const std::uint64_t n = declared == std::numeric_limits<std::uint64_t>::max() - 1 ? header.size() : declared;
  std::vector<std::byte> f(8);
  for (int i = 0; i < 8; ++i) f[static_cast<std::size_t>(i)] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  const auto h = bytes_of(header), d = bytes_of(data);
  f.insert(f.end(), h.begin(), h.end());
  f.insert(f.end(), d.begin(), d.end());
  return f;
}

/// One tensor entry of a header: "name":{"dtype":…,"shape":[…],"data_offsets":[b,e]}.
std::string entry(std::string_view name, std::string_view dtype, std::string_view shape, std::uint64_t b,
                  std::uint64_t e) {
  return "\"" + std::string(name) + "\":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":[" + std::string(shape) +
         "],\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}

/// `s` as one shell word (single-quoted, each ' written as '\'').
std::string shell_quoted(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  q += '\'';
  return q;
}

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
  } else if constexpr (std::is_same_v<T, e8m0>) {
    for (std::uint8_t b : {0, 1, 127, 200, 254, 255}) base.push_back(e8m0{b});
  } else if constexpr (std::is_same_v<T, bool>) {
    base = {true, false, false, true, true};
  } else {
    base = {0, std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), 1, static_cast<T>(42)};
  }
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = base[i % base.size()];
  return v;
}

index_t count_of(const std::vector<index_t>& shape) {
  index_t n = 1;
  for (const index_t d : shape) n *= d;
  return n;
}

#if defined(__linux__)
/// The file mapped at address `p` according to /proc/self/maps, or "" when `p`
/// is in no file mapping (a heap copy, say).
std::string mapped_file_at(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(maps, line)) {
    unsigned long lo = 0, hi = 0;  // NOLINT(google-runtime-int): what %lx reads
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2 || a < lo || a >= hi) continue;
    const std::size_t slash = line.find('/');
    return slash == std::string::npos ? std::string() : line.substr(slash);
  }
  return {};
}
#endif

}  // namespace

// ---------------------------------------------------------------------------
// Dtypes

TEST_CASE("safetensors dtypes: names, bit sizes and lookup by name, in Hugging Face's enum order") {
  const std::vector<std::pair<const char*, std::size_t>> expected = {
      {"BOOL", 8},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},     {"U8", 8},          {"I8", 8},
      {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
      {"U16", 16},    {"F16", 16},    {"BF16", 16},   {"I32", 32},        {"U32", 32},        {"F32", 32},
      {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64},
  };
  REQUIRE(expected.size() == kSafetensorsDtypeCount);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto t = static_cast<safetensors_dtype>(i);
    CHECK(std::string(to_string(t)) == expected[i].first);
    CHECK(bit_size(t) == expected[i].second);
    CHECK(safetensors_dtype_from_name(expected[i].first) == t);
  }
  CHECK(!safetensors_dtype_from_name("f32"));
  CHECK(!safetensors_dtype_from_name("float32"));
  CHECK(!safetensors_dtype_from_name(""));
  CHECK(!safetensors_dtype_from_name("F32 "));
  static_assert(safetensors_dtype_of<float>::value == safetensors_dtype::f32);
  static_assert(safetensors_dtype_of<half_bits>::value == safetensors_dtype::f16);
  static_assert(safetensors_dtype_of<e8m0>::value == safetensors_dtype::f8_e8m0);
  static_assert(safetensors_dtype_of<bool>::value == safetensors_dtype::boolean);
  static_assert(!safetensors_element<long double>);
}

// ---------------------------------------------------------------------------
// Round trips

TEST_CASE_TEMPLATE("safetensors round trip of every C++ element type and shape: 0-d, empty, 1- to 3-D", T, float,
                   double, half_bits, e8m0, std::int8_t, std::uint8_t, std::int16_t, std::uint16_t, std::int32_t,
                   std::uint32_t, std::int64_t, std::uint64_t, bool) {
  temp_dir dir("safetensors");
  const fs::path p = dir.path / "t.safetensors";
  const std::vector<std::vector<index_t>> shapes = {{}, {0}, {1}, {7}, {3, 5}, {0, 3}, {4, 0}, {2, 3, 4}};
  // Arrays rather than std::vector: std::vector<bool> holds no bools to view.
  std::vector<std::unique_ptr<T[]>> store;
  std::vector<std::span<const T>> values;
  safetensors_writer w;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto n = static_cast<std::size_t>(count_of(shapes[i]));
    const auto v = samples<T>(n);
    store.push_back(std::make_unique<T[]>(n));
    std::copy(v.begin(), v.end(), store.back().get());
    values.emplace_back(store.back().get(), n);
    w.add("t" + std::to_string(i), std::span<const index_t>(shapes[i]), values.back());
  }
  w.write(p);
  CHECK(dir.entries() == std::vector<std::string>{"t.safetensors"});  // no temporary file left behind

  const safetensors_file f = safetensors_file::open(p);
  REQUIRE(f.tensors().size() == shapes.size());
  CHECK(f.metadata().empty());
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    CAPTURE(i);
    const safetensors_tensor& t = f.tensor("t" + std::to_string(i));
    CHECK(t.dtype == safetensors_dtype_of<T>::value);
    CHECK(t.shape == shapes[i]);
    CHECK(t.rank() == static_cast<index_t>(shapes[i].size()));
    CHECK(t.n_elements == count_of(shapes[i]));
    CHECK(hex_of(t.data) == hex_of(std::as_bytes(values[i])));  // bytes: NaN payloads and -0 count too
    const std::vector<T> back = t.to_vector<T>();
    if constexpr (std::is_same_v<T, bool>)
      CHECK(back == std::vector<T>(values[i].begin(), values[i].end()));
    else
      CHECK(hex_of(std::as_bytes(std::span(back))) == hex_of(std::as_bytes(values[i])));  // NaN != NaN
    if constexpr (!std::is_same_v<T, bool>) {
      const std::span<const T> s = t.as_span<T>();
      REQUIRE(s.size() == values[i].size());
      if (!s.empty()) CHECK(static_cast<const void*>(s.data()) == static_cast<const void*>(t.data.data()));
      CHECK(hex_of(std::as_bytes(s)) == hex_of(std::as_bytes(values[i])));
    }
  }
  // The in-memory encoder writes the same bytes, and from_bytes reads them the same.
  CHECK(w.encode() == read_file(p));
  const safetensors_file m = safetensors_file::from_bytes(w.encode(), "memory");
  CHECK(m.names() == f.names());
}

TEST_CASE("safetensors round trip of every dtype through the byte-level writer, sub-byte ones included") {
  temp_dir dir("safetensors");
  safetensors_writer w;
  std::vector<std::vector<std::byte>> keep;
  for (std::size_t i = 0; i < kSafetensorsDtypeCount; ++i) {
    const auto t = static_cast<safetensors_dtype>(i);
    const std::vector<index_t> shape{2, 4};  // 8 elements: whole bytes for F4 (4) and F6 (6) too
    keep.push_back(std::vector<std::byte>(8 * bit_size(t) / 8));
    for (std::size_t k = 0; k < keep.back().size(); ++k) keep.back()[k] = static_cast<std::byte>(17 * k + i);
    w.add(to_string(t), t, shape, keep.back());
  }
  w.write(dir.path / "all.safetensors");
  const safetensors_file f = safetensors_file::open(dir.path / "all.safetensors");
  REQUIRE(f.tensors().size() == kSafetensorsDtypeCount);
  for (std::size_t i = 0; i < kSafetensorsDtypeCount; ++i) {
    const auto d = static_cast<safetensors_dtype>(i);
    CAPTURE(to_string(d));
    const safetensors_tensor& t = f.tensor(to_string(d));
    CHECK(t.dtype == d);
    CHECK(t.shape == std::vector<index_t>{2, 4});
    CHECK(hex_of(t.data) == hex_of(keep[i]));
  }
  // Written in decreasing dtype order: U64 first, BOOL last, each aligned to its element size.
  CHECK(f.tensors().front().dtype == safetensors_dtype::u64);
  CHECK(f.tensors().back().dtype == safetensors_dtype::boolean);
  for (const auto& t : f.tensors()) CHECK(t.offset % std::max<std::size_t>(1, bit_size(t.dtype) / 8) == 0);
}

TEST_CASE("safetensors metadata round trip: escapes, control characters, non-ASCII, empty keys and values") {
  temp_dir dir("safetensors");
  const std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"quote\"back\\slash/", "tab\there\nnew\rline\b\f"},
      {"control", std::string("\x01\x1f\x7f", 3) + std::string(1, '\0') + "end"},
      {"unicode", "é ∑ 😀"},
      {"", "empty key"},
      {"empty value", ""},
      {"lqer.sha256.w", sha256_hex(std::string_view("w"))},
  };
  safetensors_writer w;
  for (const auto& [k, v] : meta) w.set_metadata(k, v);
  w.set_metadata("format", "np");  // replaces
  const std::vector<float> v{1, 2};
  w.add("w", std::vector<index_t>{2}, v);
  w.write(dir.path / "m.safetensors");
  auto expected = meta;
  expected["format"] = "np";
  const safetensors_file f = safetensors_file::open(dir.path / "m.safetensors");
  CHECK(f.metadata() == expected);
  CHECK(w.metadata() == expected);
  // serde_json's escapes: \" \\ \t \n \r \b \f, \u00xx for the other controls, "/" and DEL as is.
  const std::string h = w.header();
  CHECK(contains(h, R"("quote\"back\\slash/":"tab\there\nnew\rline\b\f")"));
  CHECK(contains(h, "\"control\":\"\\u0001\\u001f\x7f\\u0000end\""));
  CHECK(contains(h, "\"unicode\":\"é ∑ 😀\""));
  CHECK(h.rfind("{\"__metadata__\":{\"\":\"empty key\",", 0) == 0);  // first, keys sorted

  // No metadata: no "__metadata__" key at all (as Python's metadata=None).
  safetensors_writer plain;
  plain.add("w", std::vector<index_t>{2}, v);
  CHECK(plain.header().rfind("{\"w\":", 0) == 0);
}

TEST_CASE("safetensors writer layout: 8-byte length, header padded with spaces to 8, data in Hugging Face's order") {
  const std::vector<std::uint8_t> u8v{1, 2, 3};
  const std::vector<half_bits> f16v{half_bits{0x3c00}};
  const std::vector<double> f64v{2.0};
  const std::vector<float> f32a{1}, f32b{2, 3};
  safetensors_writer w;
  w.add("z_u8", std::vector<index_t>{3}, u8v)
      .add("b_f32", std::vector<index_t>{2}, f32b)
      .add("h", std::vector<index_t>{1}, f16v)
      .add("d", std::vector<index_t>{}, f64v)
      .add("a_f32", std::vector<index_t>{1}, f32a);
  CHECK(w.size() == 5);
  const std::string h = w.header();
  CHECK(h.size() % 8 == 0);
  std::string body = "{" + entry("d", "F64", "", 0, 8) + "," + entry("a_f32", "F32", "1", 8, 12) + "," +
                     entry("b_f32", "F32", "2", 12, 20) + "," + entry("h", "F16", "1", 20, 22) + "," +
                     entry("z_u8", "U8", "3", 22, 25) + "}";
  body.append((8 - body.size() % 8) % 8, ' ');
  CHECK(h == body);
  const std::vector<std::byte> file = w.encode();
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  CHECK(n == h.size());
  CHECK(file.size() == 8 + h.size() + 25);
  const safetensors_file f = safetensors_file::from_bytes(file, "layout");
  CHECK(f.header_size() == h.size());
  CHECK(f.data_offset() == 8 + h.size());
  CHECK(f.names() == std::vector<std::string_view>{"d", "a_f32", "b_f32", "h", "z_u8"});
  CHECK(f.tensor("d").as_span<double>()[0] == 2.0);
  CHECK(f.tensor("b_f32").as_span<float>()[1] == 3.0f);
  CHECK(f.tensor("h").offset == 8 + h.size() + 20);
}

// ---------------------------------------------------------------------------
// Views

TEST_CASE("safetensors views are zero-copy: tensor data points into the file's mapping, and survives a move") {
  temp_dir dir("safetensors");
  const fs::path p = dir.path / "z.safetensors";
  const std::vector<float> v = samples<float>(1000);
  safetensors_writer().add("w", std::vector<index_t>{10, 100}, v).write(p);
  safetensors_file f = safetensors_file::open(p);
  const safetensors_tensor& t = f.tensor("w");
  const std::byte* base = f.bytes().data();
  CHECK(t.data.data() == base + t.offset);
  CHECK(t.offset == f.data_offset());
  const std::span<const float> s = t.as_span<float>();
  CHECK(static_cast<const void*>(s.data()) == static_cast<const void*>(base + t.offset));
#if defined(__linux__)
  // The bytes are the kernel's mapping of this very file, not a copy.
  CHECK(mapped_file_at(s.data()) == fs::canonical(p).string());
#endif
  // A move hands over the mapping: the same addresses, names and file name stay valid.
  const safetensors_file g = std::move(f);
  CHECK(g.tensor("w").data.data() == base + t.offset);
  CHECK(g.tensor("w").file == p.string());
  CHECK(std::memcmp(g.tensor("w").as_span<float>().data(), v.data(), 4000) == 0);
  CHECK_THROWS_AS((void)f.tensors(), value_error);  // NOLINT(bugprone-use-after-move): the documented error
  CHECK_THROWS_AS((void)safetensors_file{}.name(), value_error);
}

TEST_CASE("safetensors typed access: dtype mismatches, misaligned data, BOOL bytes, to_float32, missing tensors") {
  // U8 [1] at [0, 1) and F32 [1] at [1, 5): valid, but the F32 data is at an
  // odd address (the header is padded to 8 bytes, so the data section is aligned).
  std::string h = "{" + entry("a", "U8", "1", 0, 1) + "," + entry("b", "F32", "1", 1, 5) + "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  const std::string b_at = std::to_string(8 + h.size() + 1);
  const float one = 1.0f;
  std::string data = "\x07";
  data.append(reinterpret_cast<const char*>(&one), 4);
  const safetensors_file f = safetensors_file::from_bytes(st_file(h, data), "odd.safetensors");
  const safetensors_tensor& b = f.tensor("b");
  CHECK(std::to_string(b.offset) == b_at);
  const std::string msg = thrown_message<unsupported_error>([&] { (void)b.as_span<float>(); });
  CHECK(contains(msg,
                 "odd.safetensors: tensor \"b\" (F32, [1]): its data at byte " + b_at + " is not aligned to 4 bytes"));
  CHECK(b.to_vector<float>() == std::vector<float>{1.0f});  // copies from anywhere
  CHECK(to_float32(b) == std::vector<float>{1.0f});
  CHECK(contains(thrown_message<value_error>([&] { (void)b.as_span<double>(); }),
                 "odd.safetensors: tensor \"b\" (F32, [1]): as_span asked for F64 but the tensor holds F32"));
  CHECK(contains(thrown_message<value_error>([&] { (void)b.to_vector<std::int32_t>(); }), "to_vector asked for I32"));
  CHECK(f.tensor("a").as_span<std::uint8_t>()[0] == 7);
  CHECK(contains(thrown_message<unsupported_error>([&] { (void)to_float32(f.tensor("a")); }),
                 "odd.safetensors: tensor \"a\" (U8, [1]): to_float32 converts F32, F16, BF16 and F64"));
  CHECK(contains(thrown_message<value_error>([&] { (void)f.tensor("c"); }), "odd.safetensors: has no tensor \"c\""));
  CHECK(f.find_tensor("c") == nullptr);
  CHECK(!f.contains("c"));
  CHECK(f.contains("a"));

  // A tensor built by hand whose data does not hold its elements: refused, never read past.
  safetensors_tensor hand;
  hand.name = "hand";
  hand.shape = {4};
  hand.n_elements = 4;
  hand.data = std::as_bytes(std::span(&one, 1));
  CHECK(contains(thrown_message<shape_error>([&] { (void)hand.to_vector<float>(); }),
                 "4 bytes of data do not hold 4 elements of F32"));
  CHECK_THROWS_AS((void)hand.as_span<float>(), shape_error);
  CHECK_THROWS_AS((void)to_float32(hand), shape_error);

  // BOOL: 0 and 1 read as false and true; any other byte is refused.
  std::string hb = "{" + entry("m", "BOOL", "3", 0, 3) + "}";
  const safetensors_file g = safetensors_file::from_bytes(st_file(hb, std::string("\x01\x00\x01", 3)), "m");
  CHECK(g.tensor("m").to_vector<bool>() == std::vector<bool>{true, false, true});
  const safetensors_file bad = safetensors_file::from_bytes(st_file(hb, std::string("\x01\x02\x00", 3)), "bad");
  CHECK(contains(thrown_message<value_error>([&] { (void)bad.tensor("m").to_vector<bool>(); }),
                 "bad: tensor \"m\" (BOOL, [3]): element 1 is byte value 2; BOOL elements are 0 or 1"));

  // to_float32: F16, BF16 and F64 convert as documented.
  const std::vector<half_bits> halves{half_bits{0x3c00}, half_bits{0xfc00}, half_bits{0x0001}};
  const std::vector<std::uint16_t> bf{0x3f80, 0xc000, 0x0001};
  const std::vector<double> dbl{0.1, 1e300, -2.5};
  safetensors_writer w;
  w.add("h", std::vector<index_t>{3}, halves)
      .add("bf", safetensors_dtype::bf16, std::vector<index_t>{3}, std::as_bytes(std::span(bf)))
      .add("d", std::vector<index_t>{3}, dbl);
  const safetensors_file c = safetensors_file::from_bytes(w.encode(), "conv");
  CHECK(to_float32(c.tensor("h")) == std::vector<float>{1.0f, -std::numeric_limits<float>::infinity(), 0x1p-24f});
  CHECK(to_float32(c.tensor("bf")) == std::vector<float>{1.0f, -2.0f, 0x1p-133f});
  CHECK(to_float32(c.tensor("d")) == std::vector<float>{0.1f, std::numeric_limits<float>::infinity(), -2.5f});
}

// ---------------------------------------------------------------------------
// Files written by Hugging Face's safetensors package

namespace {

nlohmann::json expected_json() {
  std::ifstream in(kData / "expected.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

/// Checks `t`'s values against the fixture's list (numbers, or "nan"/"inf"/"-inf").
template <class T>
void check_values(const safetensors_tensor& t, const nlohmann::json& values) {
  const std::vector<T> got = t.to_vector<T>();
  REQUIRE(got.size() == values.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    const nlohmann::json& e = values[i];
    if constexpr (std::is_floating_point_v<T> || std::is_same_v<T, half_bits>) {
      double x = 0;
      if constexpr (std::is_same_v<T, half_bits>)
        x = half_to_float(got[i]);
      else
        x = got[i];
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        if (s == "nan")
          CHECK(std::isnan(x));
        else
          CHECK(x == (s == "inf" ? 1 : -1) * std::numeric_limits<double>::infinity());
      } else {
        CHECK(x == e.get<double>());  // the fixture holds repr(): exact for float and double
        CHECK(std::signbit(x) == std::signbit(e.get<double>()));
      }
    } else if constexpr (std::is_same_v<T, bool>) {
      CHECK(got[i] == e.get<bool>());
    } else {
      CHECK(got[i] == e.get<T>());
    }
  }
}

void check_fixture_tensor(const safetensors_tensor& t, const nlohmann::json& e) {
  const std::string dtype = e["dtype"];
  CHECK(to_string(t.dtype) == dtype);
  CHECK(t.shape == e["shape"].get<std::vector<index_t>>());
  CHECK(t.begin == e["data_offsets"][0].get<std::uint64_t>());
  CHECK(t.end == e["data_offsets"][1].get<std::uint64_t>());
  CHECK(hex_of(t.data) == e["hex"].get<std::string>());
  CHECK(sha256_hex(t.data) == e["sha256"].get<std::string>());  // against hashlib
  if (!e.contains("values")) return;
  const nlohmann::json& v = e["values"];
  if (dtype == "F64") check_values<double>(t, v);
  if (dtype == "F32") check_values<float>(t, v);
  if (dtype == "F16") check_values<half_bits>(t, v);
  if (dtype == "I64") check_values<std::int64_t>(t, v);
  if (dtype == "U64") check_values<std::uint64_t>(t, v);
  if (dtype == "I32") check_values<std::int32_t>(t, v);
  if (dtype == "U32") check_values<std::uint32_t>(t, v);
  if (dtype == "I16") check_values<std::int16_t>(t, v);
  if (dtype == "U16") check_values<std::uint16_t>(t, v);
  if (dtype == "I8") check_values<std::int8_t>(t, v);
  if (dtype == "U8") check_values<std::uint8_t>(t, v);
  if (dtype == "BOOL") check_values<bool>(t, v);
  if (dtype == "F64" || dtype == "F32" || dtype == "F16") {
    // to_float32 agrees with the typed values (F64 rounded).
    const std::vector<float> f = to_float32(t);
    for (std::size_t i = 0; i < f.size(); ++i)
      if (!v[i].is_string()) CHECK(f[i] == static_cast<float>(v[i].get<double>()));
  }
}

/// A safetensors_writer holding what the fixture lists for `file` (data in `keep`).
safetensors_writer writer_for(const nlohmann::json& file, std::vector<std::vector<std::byte>>& keep) {
  safetensors_writer w;
  for (const auto& [k, v] : file["metadata"].items()) w.set_metadata(k, v.get<std::string>());
  keep.reserve(file["tensors"].size());
  for (const auto& e : file["tensors"]) {
    keep.push_back(from_hex(e["hex"]));
    const auto d = safetensors_dtype_from_name(e["dtype"].get<std::string>());
    REQUIRE(d);
    w.add(e["name"].get<std::string>(), *d, e["shape"].get<std::vector<index_t>>(), keep.back());
  }
  return w;
}

}  // namespace

TEST_CASE("safetensors reads the files Hugging Face's package wrote: every tensor, value, offset and checksum") {
  const nlohmann::json ex = expected_json();
  REQUIRE(ex["files"].size() == 3);
  for (const auto& item : ex["files"].items()) {
    const std::string file = item.key();  // named: clang 14 cannot capture a structured binding
    const nlohmann::json& e = item.value();
    CAPTURE(file);
    const safetensors_file f = safetensors_file::open(kData / file);
    CHECK(f.bytes().size() == e["size"].get<std::size_t>());
    CHECK(f.header_size() == e["header_size"].get<std::uint64_t>());
    CHECK(sha256_hex(f.bytes()) == e["sha256"].get<std::string>());
    CHECK(f.metadata() == e["metadata"].get<std::map<std::string, std::string>>());
    const auto& ts = e["tensors"];
    REQUIRE(f.tensors().size() == ts.size());
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const std::string name = ts[i]["name"];
      CAPTURE(name);
      CHECK(f.names()[i] == name);  // header order
      check_fixture_tensor(f.tensor(name), ts[i]);
      CHECK(&f.tensors()[i] == &f.tensor(name));
    }
  }
  // The dtypes numpy lacks, value by value.
  const safetensors_file raw = safetensors_file::open(kData / "raw_dtypes.safetensors");
  CHECK(to_float32(raw.tensor("bf16")).size() == 6);
  const std::vector<float> bf = to_float32(raw.tensor("bf16"));
  CHECK(bf[0] == 1.0f);
  CHECK(bf[1] == -2.0f);
  CHECK(bf[2] == std::numeric_limits<float>::infinity());
  CHECK(bf[3] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bf[4]));
  CHECK(bf[5] == 0x1p-133f);
  CHECK(raw.tensor("bf16_scalar").shape.empty());
  CHECK(to_float32(raw.tensor("bf16_scalar")) == std::vector<float>{3.140625f});
  const std::vector<e8m0> scales = raw.tensor("e8m0").to_vector<e8m0>();
  REQUIRE(scales.size() == 4);
  CHECK(scales[0].value() == 0x1p-127f);
  CHECK(scales[1].value() == 1.0f);
  CHECK(scales[2].value() == 0x1p127f);
  CHECK(scales[3].is_nan());
  CHECK(raw.tensor("f4").shape == std::vector<index_t>{6});  // 6 FP4 values in 3 bytes
  CHECK(raw.tensor("f4").data.size() == 3);
  CHECK(raw.tensor("c64").n_elements == 2);
  CHECK(raw.metadata().at("unicode") == "é ∑ 😀");
  CHECK(raw.metadata().at("control") == "\x01\x1f\x7f");
  CHECK(raw.metadata().at("quote\"back\\slash") == "tab\there\nnewline");
  CHECK(raw.metadata().at("") == "empty key");
}

TEST_CASE("safetensors writer reproduces Hugging Face's bytes (one metadata key or none), and its layout otherwise") {
  const nlohmann::json ex = expected_json();
  temp_dir dir("safetensors");
  for (const char* file : {"numpy_dtypes.safetensors", "empty.safetensors"}) {
    CAPTURE(file);
    std::vector<std::vector<std::byte>> keep;
    const safetensors_writer w = writer_for(ex["files"][file], keep);
    const std::vector<std::byte> theirs = read_file(kData / file);
    CHECK(w.encode() == theirs);
    w.write(dir.path / file);
    CHECK(read_file(dir.path / file) == theirs);
  }
  // Several metadata keys: Hugging Face orders them as a hash map does, lqer
  // sorts them; the tensors, their offsets and the data are the same.
  std::vector<std::vector<std::byte>> keep;
  const std::vector<std::byte> ours = writer_for(ex["files"]["raw_dtypes.safetensors"], keep).encode();
  const safetensors_file a = safetensors_file::from_bytes(ours, "ours");
  const safetensors_file b = safetensors_file::open(kData / "raw_dtypes.safetensors");
  CHECK(a.header_size() == b.header_size());
  CHECK(a.metadata() == b.metadata());
  CHECK(a.names() == b.names());
  const auto data_a = a.bytes().subspan(a.data_offset()), data_b = b.bytes().subspan(b.data_offset());
  CHECK(hex_of(data_a) == hex_of(data_b));
}

TEST_CASE("safetensors files lqer writes are read back by Hugging Face's package (LQER_PYTHON)") {
  const char* py = std::getenv("LQER_PYTHON");
  if (py == nullptr || *py == '\0') {
    MESSAGE(
        "LQER_PYTHON is not set (a python3 with the safetensors and numpy packages): reading lqer's files "
        "with Hugging Face's package skipped");
    return;
  }
  temp_dir dir("safetensors");
  // One file numpy can load (load_file), one with the dtypes it cannot (deserialize).
  const std::vector<float> f32 = samples<float>(6);
  const std::vector<double> f64 = samples<double>(3);
  const std::vector<half_bits> f16 = samples<half_bits>(5);
  const std::vector<std::int64_t> i64 = samples<std::int64_t>(4);
  const std::vector<std::uint16_t> u16 = samples<std::uint16_t>(3);
  const std::vector<std::int8_t> i8 = samples<std::int8_t>(5);
  const std::array<bool, 3> flags = {true, false, true};
  const std::vector<float> scalar{2.5f}, none;
  safetensors_writer numpy_file;
  numpy_file.add("w.f32", std::vector<index_t>{2, 3}, f32)
      .add("f64", std::vector<index_t>{3}, f64)
      .add("f16", std::vector<index_t>{5}, f16)
      .add("i64", std::vector<index_t>{2, 2}, i64)
      .add("u16", std::vector<index_t>{3}, u16)
      .add("i8", std::vector<index_t>{5, 1}, i8)
      .add("mask", std::vector<index_t>{3}, flags)
      .add("scalar", std::vector<index_t>{}, scalar)
      .add("empty", std::vector<index_t>{0, 4}, none)
      .set_metadata("lqer.version", "0.1.0")
      .set_metadata("quote\"\\\n", "é 😀 \x01");
  const std::vector<std::uint8_t> b3{0x3f, 0x80, 0x40, 0x49, 0x00, 0x01};
  const std::vector<std::uint8_t> f4{0x21, 0x43};
  safetensors_writer raw_file;
  raw_file.add("bf16", safetensors_dtype::bf16, std::vector<index_t>{3}, std::as_bytes(std::span(b3)))
      .add("e8m0", safetensors_dtype::f8_e8m0, std::vector<index_t>{2, 3}, std::as_bytes(std::span(b3)))
      .add("f8", safetensors_dtype::f8_e4m3, std::vector<index_t>{6}, std::as_bytes(std::span(b3)))
      .add("f4", safetensors_dtype::f4, std::vector<index_t>{4}, std::as_bytes(std::span(f4)))
      .set_metadata("k", "v");
  for (const auto& [kind, writer] : {std::pair<const char*, const safetensors_writer*>{"numpy", &numpy_file},
                                     std::pair<const char*, const safetensors_writer*>{"raw", &raw_file}}) {
    const std::string name = kind;  // named: clang 14 cannot capture a structured binding
    const safetensors_writer* w = writer;
    CAPTURE(name);
    const fs::path p = dir.path / (name + ".safetensors"), out = dir.path / (name + ".json");
    w->write(p);
    const std::string cmd = shell_quoted(py) + " " + shell_quoted((kData / "read_with_safetensors.py").string()) + " " +
                            shell_quoted(p.string()) + " " + shell_quoted(out.string());
    const int status = std::system(cmd.c_str());
    REQUIRE_MESSAGE(status == 0, "the safetensors package refused or misread the file: ", cmd);
    std::ifstream in(out);
    const nlohmann::json got = nlohmann::json::parse(in);
    const safetensors_file f = safetensors_file::open(p);
    CHECK(got["metadata"].get<std::map<std::string, std::string>>() == w->metadata());
    CHECK(got["tensors"].size() == f.tensors().size());
    for (const auto& t : f.tensors()) {
      CAPTURE(t.name);
      const auto& g = got["tensors"][t.name];
      CHECK(g["dtype"].get<std::string>() == to_string(t.dtype));
      CHECK(g["shape"].get<std::vector<index_t>>() == t.shape);
      CHECK(g["hex"].get<std::string>() == hex_of(t.data));
      if (name == "numpy") CHECK(g.contains("numpy_dtype"));  // loaded by load_file too
    }
  }
}

// ---------------------------------------------------------------------------
// Malformed files

namespace {

struct bad_file {
  std::string label;
  std::vector<std::byte> bytes;
  std::vector<std::string> needles;  // in the message, after "<file>: byte <n>: "
  safetensors_limits limits = {};
};

/// Each file must be refused with E, from disk and from memory, with a message
/// that starts with the file's name and a byte offset and contains every needle.
template <class E = parse_error>
void check_refused(const std::vector<bad_file>& cases) {
  temp_dir dir("safetensors");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const bad_file& c = cases[i];
    CAPTURE(c.label);
    const fs::path p = dir.path / ("case" + std::to_string(i) + ".safetensors");
    write_file(p, c.bytes);
    reset_largest_allocation();
    const std::string msg = thrown_message<E>([&] { (void)safetensors_file::open(p, c.limits); });
    CHECK(largest_allocation() < kSmallAllocation);
    CAPTURE(msg);
    CHECK(msg.rfind(p.string() + ": byte ", 0) == 0);
    for (const auto& n : c.needles) CHECK_MESSAGE(contains(msg, n), "message should contain: ", n);
    const std::string mem =
        thrown_message<E>([&] { (void)safetensors_file::from_bytes(c.bytes, "memory.safetensors", c.limits); });
    CHECK(mem == "memory.safetensors" + msg.substr(p.string().size()));
  }
}

const std::string kW = entry("w", "F32", "2", 0, 8);  // a valid entry for 8 bytes of data
const std::string kData8(8, '\0');

}  // namespace

TEST_CASE("safetensors refuses short files and absurd header lengths") {
  safetensors_limits small;
  small.max_header_bytes = 16;
  check_refused({
      {"empty file", {}, {"byte 0: truncated safetensors file: 0 bytes, fewer than the 8-byte header length"}},
      {"7 bytes", std::vector<std::byte>(7), {"byte 0: truncated", "7 bytes, fewer than the 8-byte header length"}},
      {"header length beyond the file",
       st_file("{}", "", 1000),
       {"byte 0: truncated safetensors file: the header length is 1000 bytes but only 2 bytes follow"}},
      {"header length above the 100 MB limit",
       st_file("{}", "", 100'000'001),
       {"byte 0: the header length 100000001 is above the limit of 100000000 bytes",
        "safetensors_limits::max_header_bytes"}},
      {"header length 2^64 - 1",
       st_file("{}", "", std::numeric_limits<std::uint64_t>::max()),
       {"header length 18446744073709551615 is above the limit"}},
      {"header above a caller's limit", st_file("{" + kW + "}", kData8), {"above the limit of 16 bytes"}, small},
  });
}

TEST_CASE("safetensors refuses headers that are not UTF-8") {
  check_refused({
      {"byte 0xff in a name", st_file("{\"\xff\":1}"), {"byte 10: the header is not valid UTF-8 (byte value 255"}},
      {"overlong encoding of '/'", st_file("{\"\xc0\xaf\":1}"), {"byte 10: the header is not valid UTF-8"}},
      {"encoded surrogate U+D800", st_file("{\"\xed\xa0\x80\":1}"), {"byte 10: the header is not valid UTF-8"}},
      {"above U+10FFFF", st_file("{\"\xf4\x90\x80\x80\":1}"), {"byte 10: the header is not valid UTF-8"}},
      {"a continuation byte alone", st_file("{\"\x80\":1}"), {"byte 10: the header is not valid UTF-8"}},
      {"a sequence cut by the header's end", st_file("{}\xe2\x82"), {"byte 10: the header is not valid UTF-8"}},
  });
}

TEST_CASE("safetensors refuses headers that are not JSON") {
  std::string deep = "{\"a\":";
  deep += std::string(200, '[') + std::string(200, ']') + "}";
  safetensors_limits shallow;
  shallow.max_json_depth = 3;
  check_refused({
      {"empty header", st_file(""), {"byte 8: the header is not valid JSON: expected a value, found the end"}},
      {"byte-order mark",
       st_file("\xef\xbb\xbf{}"),
       {"byte 8: the header is not valid JSON: expected a value, found byte 0xef"}},
      {"unterminated object",
       st_file("{"),
       {"byte 9: the header is not valid JSON: expected a string (a member's name)"}},
      {"missing value", st_file("{\"w\":}"), {"byte 13: the header is not valid JSON: expected a value, found '}'"}},
      {"missing colon", st_file("{\"w\" 1}"), {"byte 13: the header is not valid JSON: expected ':'"}},
      {"trailing comma", st_file("{" + kW + ",}", kData8), {"expected a string (a member's name), found '}'"}},
      {"trailing comma in an array",
       st_file("{\"w\":[1,]}"),
       {"byte 16: the header is not valid JSON: expected a value"}},
      {"single quotes", st_file("{'w':1}"), {"byte 9: the header is not valid JSON: expected a string"}},
      {"leading zero", st_file("{\"w\":01}"), {"byte 13: the header is not valid JSON: a number with a leading zero"}},
      {"a number without digits", st_file("{\"w\":-}"), {"byte 14: the header is not valid JSON: expected a digit"}},
      {"a fraction without digits", st_file("{\"w\":1.}"), {"after the decimal point"}},
      {"an exponent without digits", st_file("{\"w\":1e+}"), {"in the exponent"}},
      {"a bad literal", st_file("{\"__metadata__\":nul}"), {"byte 24: the header is not valid JSON: expected a value"}},
      {"a control character in a string",
       st_file("{\"a\x01\":1}"),
       {"byte 11: the header is not valid JSON: control character"}},
      {"a raw newline in a string", st_file("{\"a\nb\":1}"), {"control character"}},
      {"an invalid escape", st_file("{\"a\\q\":1}"), {"byte 11: the header is not valid JSON: invalid escape"}},
      {"a \\u escape with 3 hex digits", st_file("{\"\\u12g4\":1}"), {"a \\u escape needs 4 hex digits"}},
      {"an unpaired high surrogate",
       st_file("{\"\\ud800\":1}"),
       {"byte 10: the header is not valid JSON: UTF-16 high surrogate"}},
      {"a high surrogate before a non-surrogate", st_file("{\"\\ud800\\u0041\":1}"), {"high surrogate"}},
      {"an unpaired low surrogate", st_file("{\"\\udc00\":1}"), {"unpaired UTF-16 low surrogate"}},
      {"an unterminated string", st_file("{\"abc"), {"byte 9: the header is not valid JSON: unterminated string"}},
      {"text after the object",
       st_file("{}x"),
       {"byte 10: the header is not valid JSON: unexpected 'x' after the end"}},
      {"NUL padding instead of spaces", st_file(std::string("{}\0\0\0\0\0\0", 8)), {"byte 10", "unexpected byte 0x00"}},
      {"two objects", st_file("{}{}"), {"unexpected '{' after the end"}},
      {"nesting 201 deep",
       st_file(deep),
       {"byte 140", "nest deeper than 128 levels (safetensors_limits::max_json_depth)"}},
      {"nesting beyond a caller's limit of 3", st_file("{\"a\":{\"b\":[[1]]}}"), {"byte 19", "deeper than 3"}, shallow},
  });
}

TEST_CASE("safetensors refuses headers whose JSON does not have safetensors' schema") {
  check_refused({
      {"an array", st_file("[]"), {"byte 8: the header must be a JSON object, not an array"}},
      {"a string", st_file("\"x\""), {"the header must be a JSON object, not a string"}},
      {"a number", st_file(" 12 "), {"byte 9: the header must be a JSON object, not the number 12"}},
      {"null", st_file("null"), {"the header must be a JSON object, not null"}},
      {"an entry that is not an object",
       st_file("{\"w\":[1]}"),
       {"byte 13: tensor \"w\": its entry must be an object {\"dtype\", \"shape\", \"data_offsets\"}, not an array"}},
      {"an unknown field",
       st_file("{\"w\":{\"dtype\":\"F32\",\"layout\":\"C\",\"shape\":[2],\"data_offsets\":[0,8]}}", kData8),
       {"byte 28: tensor \"w\": unknown field \"layout\""}},
      {"no dtype",
       st_file("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", kData8),
       {"byte 9: tensor \"w\": its entry has no \"dtype\""}},
      {"no shape", st_file("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", kData8), {"has no \"shape\""}},
      {"no data_offsets", st_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", kData8), {"has no \"data_offsets\""}},
      {"a duplicate field",
       st_file("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", kData8),
       {"byte 28: tensor \"w\": duplicate field \"dtype\""}},
      {"a duplicate tensor name",
       st_file("{" + kW + "," + entry("w", "F32", "2", 8, 16) + "}", kData8 + kData8),
       {"duplicate tensor name \"w\" (first at byte 9)"}},
      {"an unknown dtype",
       st_file("{" + entry("w", "F33", "2", 0, 8) + "}", kData8),
       {"byte 22: tensor \"w\": unknown dtype \"F33\" (safetensors has BOOL"}},
      {"a dtype in lower case", st_file("{" + entry("w", "f32", "2", 0, 8) + "}", kData8), {"unknown dtype \"f32\""}},
      {"a numpy dtype name",
       st_file("{" + entry("w", "float32", "2", 0, 8) + "}", kData8),
       {"unknown dtype \"float32\""}},
      {"a dtype that is not a string",
       st_file("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", kData8),
       {"byte 22: tensor \"w\": \"dtype\" must be a string, not the number 32"}},
      {"a tensor name with escapes, quoted in messages",
       st_file("{\"a\\n\\u00e9\":{\"dtype\":\"X\"}}"),
       {"tensor \"a\\x0a\\xc3\\xa9\": unknown dtype \"X\""}},
  });
}

TEST_CASE("safetensors refuses bad shapes") {
  const auto shape = [](const std::string& s) {
    return st_file("{\"w\":{\"dtype\":\"U8\",\"shape\":" + s + ",\"data_offsets\":[0,0]}}");
  };
  std::string rank65 = "[";
  for (int i = 0; i < 65; ++i) rank65 += i ? ",1" : "1";
  check_refused({
      {"a negative dimension",
       shape("[2,-3]"),
       {"byte 38: tensor \"w\": \"shape\" entry 1 is -3; it must be a non-negative integer"}},
      {"negative zero", shape("[-0]"), {"\"shape\" entry 0 is -0; it must be a non-negative integer"}},
      {"a fraction", shape("[2.0]"), {"byte 36: tensor \"w\": \"shape\" entry 0 is 2.0, not an integer"}},
      {"an exponent", shape("[1e3]"), {"\"shape\" entry 0 is 1e3, not an integer"}},
      {"a capital exponent", shape("[2E0]"), {"is 2E0, not an integer"}},
      {"a string", shape("[\"2\"]"), {"\"shape\" entry 0 must be a non-negative integer, not a string"}},
      {"null", shape("[null]"), {"must be a non-negative integer, not null"}},
      {"not an array",
       shape("2"),
       {"byte 35: tensor \"w\": \"shape\" must be an array of non-negative integers, not the number 2"}},
      {"an object", shape("{}"), {"\"shape\" must be an array of non-negative integers, not an object"}},
      {"2^64",
       shape("[18446744073709551616]"),
       {"\"shape\" entry 0 is 18446744073709551616, which does not fit in 64 bits"}},
      {"a dimension above max_elements",
       shape("[2199023255552]"),
       {"dimension 0 is 2199023255552, beyond the limit of 1099511627776 (safetensors_limits::max_elements)"}},
      {"2^42 elements", shape("[2097152,2097152]"), {"\"shape\" has more than 1099511627776 elements"}},
      {"2^80 non-zero elements beside a zero",
       shape("[0,1099511627776,1099511627776]"),
       {"has more than 1099511627776 elements"}},
      {"65 dimensions", shape(rank65 + "]"), {"\"shape\" has more than 64 dimensions (safetensors_limits::max_rank)"}},
  });
}

TEST_CASE("safetensors refuses bad data_offsets") {
  const auto offsets = [](const std::string& s, const std::string& data = kData8) {
    return st_file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":" + s + "}}", data);
  };
  check_refused({
      {"one entry",
       offsets("[8]"),
       {"byte 55: tensor \"w\": \"data_offsets\" must be two integers [begin, end]; it has 1 entry"}},
      {"no entries", offsets("[]"), {"must be two integers [begin, end]; it has 0 entries"}},
      {"three entries", offsets("[0,8,8]"), {"must be two integers [begin, end]; it has more than two entries"}},
      {"not an array", offsets("\"0-8\""), {"must be two integers [begin, end], not a string"}},
      {"a negative offset", offsets("[-8,0]"), {"\"data_offsets\" entry 0 is -8; it must be a non-negative integer"}},
      {"a fraction", offsets("[0,8.0]"), {"\"data_offsets\" entry 1 is 8.0, not an integer"}},
      {"2^64", offsets("[0,18446744073709551616]"), {"entry 1 is 18446744073709551616, which does not fit in 64 bits"}},
      {"begin after end",
       offsets("[8,0]"),
       {"byte 55: tensor \"w\" (F32, [2]): data_offsets [8, 0] begin after they end"}},
      {"end beyond the data section",
       offsets("[0,8]", std::string(4, '\0')),
       {"data_offsets [0, 8] end beyond the data section, which has 4 bytes", "the file is truncated"}},
      {"end beyond 2^64 - 9", offsets("[0,18446744073709551615]"), {"end beyond the data section"}},
      {"a length other than the shape's",
       offsets("[0,4]", std::string(4, '\0')),
       {"data_offsets [0, 4] hold 4 bytes, but 2 elements of F32 take 8"}},
      {"F4 elements that do not fill a byte",
       st_file("{" + entry("w", "F4", "3", 0, 2) + "}", "xy"),
       {"tensor \"w\" (F4, [3]): 3 elements of 4 bits do not fill whole bytes"}},
  });
}

TEST_CASE("safetensors refuses overlapping tensors and data sections with holes") {
  const std::string d12(12, '\0');
  check_refused({
      {"overlap",
       st_file("{" + entry("a", "U8", "8", 0, 8) + "," + entry("b", "U8", "8", 4, 12) + "}", d12),
       {"tensor \"b\" (U8, [8]): data_offsets [4, 12] overlap tensor \"a\" (U8, [8])'s [0, 8]"}},
      {"the same bytes twice",
       st_file("{" + entry("a", "U8", "8", 0, 8) + "," + entry("b", "U8", "8", 0, 8) + "}", kData8),
       {"overlap tensor"}},
      {"an empty tensor inside another",
       st_file("{" + entry("a", "U8", "8", 0, 8) + "," + entry("z", "U8", "0", 4, 4) + "}", kData8),
       {"tensor \"z\" (U8, [0]): data_offsets [4, 4] overlap tensor \"a\""}},
      {"a hole at the start",
       st_file("{" + entry("a", "U8", "8", 4, 12) + "}", d12),
       {"bytes [0, 4) of the data section, before tensor \"a\" (U8, [8]), belong to no tensor"}},
      {"a hole between tensors",
       st_file("{" + entry("a", "U8", "4", 0, 4) + "," + entry("b", "U8", "4", 8, 12) + "}", d12),
       {"bytes [4, 8) of the data section, before tensor \"b\""}},
      {"bytes after the last tensor",
       st_file("{" + entry("a", "U8", "8", 0, 8) + "}", d12),
       {"4 bytes after the last tensor's data (bytes [8, 12) of the data section) belong to no tensor"}},
      {"data but no tensors", st_file("{}", "x"), {"byte 10: 1 bytes after the last tensor's data"}},
  });
}

TEST_CASE("safetensors refuses bad __metadata__") {
  check_refused({
      {"an array",
       st_file("{\"__metadata__\":[\"a\"]}"),
       {"byte 24: \"__metadata__\" must be an object of strings, not an array"}},
      {"a string", st_file("{\"__metadata__\":\"a\"}"), {"must be an object of strings, not a string"}},
      {"a number value",
       st_file("{\"__metadata__\":{\"k\":1}}"),
       {"byte 29: \"__metadata__\" value of key \"k\" is the number 1; metadata values must be strings"}},
      {"a null value", st_file("{\"__metadata__\":{\"k\":null}}"), {"value of key \"k\" is null"}},
      {"an object value", st_file("{\"__metadata__\":{\"k\":{}}}"), {"value of key \"k\" is an object"}},
      {"a duplicate key",
       st_file("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"),
       {"byte 33: duplicate \"__metadata__\" key \"k\""}},
      {"two __metadata__",
       st_file("{\"__metadata__\":{},\"__metadata__\":{}}"),
       {"byte 27: duplicate key \"__metadata__\""}},
  });
  // null is no metadata, as in Hugging Face's reader.
  const safetensors_file f = safetensors_file::from_bytes(st_file("{\"__metadata__\":null," + kW + "}", kData8), "n");
  CHECK(f.metadata().empty());
  CHECK(f.tensors().size() == 1);
}

TEST_CASE("safetensors accepts what the format allows: whitespace, escapes, any order, empty tensors, an empty name") {
  const std::string h =
      " \t\r\n{ \"b\" : {\"data_offsets\" : [ 8 , 12 ] , \"shape\":[ ] ,\"dtype\" : \"F32\"}, "
      "\"\\u0061\\/\\ud83d\\ude00\" :{\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]},"
      "\"z\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[12,12]},"
      "\"\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[0,0]},"
      "\"__metadata__\":{\"\\\"q\\\"\":\"\\u00e9\\t\"}}   ";
  const safetensors_file f = safetensors_file::from_bytes(st_file(h, std::string(12, '\x01')), "ok");
  CHECK(f.names() == std::vector<std::string_view>{"b", "a/😀", "z", ""});
  CHECK(f.tensor("b").shape.empty());
  CHECK(f.tensor("b").n_elements == 1);
  CHECK(f.tensor("a/😀").begin == 0);
  CHECK(f.tensor("z").n_elements == 0);
  CHECK(f.tensor("z").data.empty());
  CHECK(f.tensor("").dtype == safetensors_dtype::boolean);
  CHECK(f.tensor("").to_vector<bool>().empty());
  CHECK(f.metadata() == std::map<std::string, std::string>{{"\"q\"", "é\t"}});
  // No tensors at all, and an empty header object.
  CHECK(safetensors_file::from_bytes(st_file("{}"), "e").tensors().empty());
  CHECK(safetensors_file::from_bytes(st_file("{}      "), "e").header_size() == 8);
}

TEST_CASE("safetensors refuses every truncation of a valid file, and survives every one-byte corruption") {
  std::vector<std::byte> good;
  {
    const std::vector<float> v = samples<float>(12);
    const std::vector<std::int8_t> c = samples<std::int8_t>(5);
    safetensors_writer w;
    w.add("w", std::vector<index_t>{3, 4}, v).add("c", std::vector<index_t>{5}, c).set_metadata("k", "v");
    good = w.encode();
  }
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK_THROWS_AS((void)safetensors_file::from_bytes(std::vector<std::byte>(good.begin(), good.begin() + n), "cut"),
                    parse_error);
  }
  // Every value of every header byte: parsed or refused with an lqer::error, never anything else.
  const std::uint64_t header_end = 8 + safetensors_file::from_bytes(good, "g").header_size();
  int parsed = 0, refused = 0;
  for (std::size_t i = 0; i < header_end; ++i) {
    for (int v = 0; v < 256; v += 5) {
      auto bad = good;
      bad[i] = static_cast<std::byte>(v);
      try {
        (void)safetensors_file::from_bytes(std::move(bad), "flip");
        ++parsed;
      } catch (const lqer::error&) {
        ++refused;
      }
    }
  }
  CHECK(refused > parsed);
  CHECK(parsed > 0);  // e.g. a changed metadata value or padding byte that stays a space
}

TEST_CASE("safetensors file reader: missing files and directories are io_errors naming the file") {
  temp_dir dir("safetensors");
  CHECK(contains(thrown_message<io_error>([&] { (void)safetensors_file::open(dir.path / "missing.safetensors"); }),
                 "missing.safetensors: no such file"));
  CHECK(contains(thrown_message<io_error>([&] { (void)safetensors_file::open(dir.path); }), "is a directory"));
}

TEST_CASE("safetensors seed corpus of the fuzzer: valid seeds parse, broken ones are refused") {
  REQUIRE(fs::is_directory(kCorpus));
  int valid = 0, broken = 0;
  for (const auto& e : fs::directory_iterator(kCorpus)) {
    const std::string name = e.path().filename().string();
    CAPTURE(name);
    if (name.rfind("valid_", 0) == 0) {
      const safetensors_file f = safetensors_file::open(e.path());
      for (const auto& t : f.tensors()) CHECK(t.data.size() == t.end - t.begin);
      ++valid;
    } else if (name.rfind("bad_", 0) == 0) {
      CHECK_THROWS_AS(safetensors_file::open(e.path()), parse_error);
      ++broken;
    }
  }
  CHECK(valid >= 3);
  CHECK(broken >= 3);
}

// ---------------------------------------------------------------------------
// Writing: refusals and atomicity

TEST_CASE("safetensors writer refuses bad names, shapes and sizes before touching the file system") {
  temp_dir dir("safetensors");
  const std::vector<float> v(6, 1.0f);
  const std::vector<index_t> s23{2, 3};
  safetensors_writer w;
  w.add("w", s23, v);
  CHECK(contains(thrown_message<value_error>([&] { w.add("", s23, v); }), "a tensor name must not be empty"));
  CHECK(contains(thrown_message<value_error>([&] { w.add("w", s23, v); }),
                 "safetensors_writer::add: tensor \"w\": a tensor of that name was already added"));
  CHECK(contains(thrown_message<value_error>([&] { w.add("__metadata__", s23, v); }), "reserved"));
  CHECK(contains(thrown_message<value_error>([&] { w.add("bad\xff", s23, v); }), "is not valid UTF-8"));
  CHECK(contains(thrown_message<value_error>([&] { w.set_metadata("k", "\xc0\xaf"); }),
                 "the value of key \"k\" is not valid UTF-8"));
  CHECK(contains(thrown_message<value_error>([&] { w.set_metadata("\xed\xa0\x80", "v"); }), "is not valid UTF-8"));
  CHECK(contains(thrown_message<shape_error>([&] {
                   w.add("n", std::vector<index_t>{-2, -3}, v);
                 }),
                 "tensor \"n\": shape (-2, -3) has a negative dimension"));
  CHECK(contains(thrown_message<shape_error>([&] {
                   w.add("s", std::vector<index_t>{2, 4}, v);
                 }),
                 "tensor \"s\": shape (2, 4) of F32 needs 32 bytes, the data has 24"));
  CHECK(contains(thrown_message<shape_error>([&] {
                   w.add("o", std::vector<index_t>{index_t{1} << 62, 8}, v);
                 }),
                 "its byte size overflows"));
  const std::vector<std::byte> two(2);
  CHECK(contains(thrown_message<shape_error>([&] {
                   w.add("f4", safetensors_dtype::f4, std::vector<index_t>{3}, std::span<const std::byte>(two));
                 }),
                 "3 elements of F4 (4 bits) do not fill whole bytes"));
  CHECK(w.size() == 1);  // nothing refused was added
  CHECK(dir.entries().empty());
  w.write(dir.path / "w.safetensors");
  CHECK(safetensors_file::open(dir.path / "w.safetensors").names() == std::vector<std::string_view>{"w"});
}

TEST_CASE("safetensors writer fails with io_error and creates or replaces nothing when the target cannot be written") {
  temp_dir dir("safetensors");
  const std::vector<float> v(4, 1.0f);
  safetensors_writer w;
  w.add("w", std::vector<index_t>{4}, v);
  SUBCASE("missing directory") {
    CHECK(contains(thrown_message<io_error>([&] { w.write(dir.path / "missing" / "w.safetensors"); }),
                   "is not an existing directory"));
    CHECK(dir.entries().empty());
  }
  SUBCASE("the target is a directory") {
    fs::create_directory(dir.path / "d.safetensors");
    CHECK(contains(thrown_message<io_error>([&] { w.write(dir.path / "d.safetensors"); }),
                   "d.safetensors: cannot write: it is a directory"));
    CHECK(dir.entries() == std::vector<std::string>{"d.safetensors"});
    CHECK(fs::is_empty(dir.path / "d.safetensors"));
  }
#if LQER_TEST_HAVE_POSIX
  SUBCASE("a read-only target is refused and unchanged") {
    const fs::path p = dir.path / "w.safetensors";
    write_file(p, bytes_of("old content"));
    REQUIRE(::chmod(p.c_str(), 0444) == 0);
    CHECK(contains(thrown_message<io_error>([&] { w.write(p); }), p.string() + ": cannot write: it is read-only"));
    REQUIRE(::chmod(p.c_str(), 0644) == 0);
    CHECK(read_file(p) == bytes_of("old content"));
    CHECK(dir.entries() == std::vector<std::string>{"w.safetensors"});
  }
  SUBCASE("a write that fails half-way leaves the old file and no temporary file") {
    // A file size limit (RLIMIT_FSIZE binds root too) makes a data write fail
    // after the temporary file was created and partly written: the failure the
    // atomic write exists for (a full disk, a quota).
    const fs::path p = dir.path / "w.safetensors";
    write_file(p, bytes_of("old content"));
    const std::vector<float> big(256 * 1024, 1.0f);  // 1 MiB
    safetensors_writer wb;
    wb.add("small", std::vector<index_t>{4}, v).add("big", std::vector<index_t>{256, 1024}, big);
    rlimit old_limit{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    rlimit small = old_limit;
    small.rlim_cur = 4096;
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string msg;
    try {
      wb.write(p);
    } catch (const io_error& e) {
      msg = e.what();
    }
    ::setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CAPTURE(msg);
    CHECK(contains(msg, "w.safetensors: cannot write: writing "));
    CHECK(read_file(p) == bytes_of("old content"));
    CHECK(dir.entries() == std::vector<std::string>{"w.safetensors"});
  }
  SUBCASE("an existing target is replaced and keeps its permission bits") {
    const fs::path p = dir.path / "w.safetensors";
    write_file(p, bytes_of("old content"));
    REQUIRE(::chmod(p.c_str(), 0640) == 0);
    w.write(p);
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    CHECK(safetensors_file::open(p).tensor("w").to_vector<float>() == v);
    CHECK(dir.entries() == std::vector<std::string>{"w.safetensors"});
  }
#endif
}
