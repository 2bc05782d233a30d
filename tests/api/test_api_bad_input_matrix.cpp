// The bad-input matrix of the library API (issue 7): one table per public
// entry point that takes untrusted data, each row a bad input and the lqer::
// error type it must throw, with the words its message must contain. Where the
// entry point writes into a caller's buffer, the buffer is filled with a
// sentinel first and must be untouched afterwards; where it writes a file, the
// directory must be as it was (no file created or replaced, no temporary left).
//
// The command-line program's matrix (tests/tools/test_bad_input_matrix.cpp)
// runs the same kinds of bad files through the CLI; the detailed tests of each
// entry point stay in their own files (tests/io/test_npy.cpp,
// tests/kernel/test_linear.cpp, …) — this file makes the coverage one glance.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <typeinfo>
#include <vector>

#include "io/gguf_builder.hpp"
#include "kernel/kernel_test_util.hpp"
#include "lqer/calib/activation_stats.hpp"
#include "lqer/factorize/factorize.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/io/gguf.hpp"
#include "lqer/io/npy.hpp"
#include "lqer/io/safetensors.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "support/files.hpp"

namespace fs = std::filesystem;
using namespace lqer;

namespace {

using lqer::test::slurp;
using lqer::test::snapshot;
using lqer::test::write_bytes;
using lqer::test::npy_bytes;

using W4 = mxint<4, 16, mx_rule::lqer>;
using Lr8 = mxint<8, 16, mx_rule::lqer>;
using Act8 = mxint<8, 16, mx_rule::lqer>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kSentinel = -7777.0f;

/// The error an entry point must throw, as a checker of the caught lqer::error.
enum class kind { shape, value, io, parse, unsupported };

const char* kind_name(kind k) {
  switch (k) {
    case kind::shape: return "shape_error";
    case kind::value: return "value_error";
    case kind::io: return "io_error";
    case kind::parse: return "parse_error";
    case kind::unsupported: return "unsupported_error";
  }
  return "?";
}

bool is_kind(const lqer::error& e, kind k) {
  switch (k) {
    case kind::shape: return dynamic_cast<const shape_error*>(&e) != nullptr;
    case kind::value: return dynamic_cast<const value_error*>(&e) != nullptr;
    case kind::io: return dynamic_cast<const io_error*>(&e) != nullptr;
    case kind::parse: return dynamic_cast<const parse_error*>(&e) != nullptr;
    case kind::unsupported: return dynamic_cast<const unsupported_error*>(&e) != nullptr;
  }
  return false;
}

/// One row: a call that must throw `expected` with every needle in its message.
struct row {
  std::string name;
  kind expected;
  std::vector<std::string> needles;
  std::function<void()> call;
};

void run_table(const std::vector<row>& table, const std::function<bool()>& output_untouched) {
  for (const row& r : table) {
    const std::string name = r.name, expected = kind_name(r.expected);
    CAPTURE(name);
    CAPTURE(expected);
    try {
      r.call();
      FAIL_CHECK("no exception");
    } catch (const lqer::error& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(is_kind(e, r.expected));
      for (const auto& n : r.needles) CHECK_MESSAGE(what.find(n) != std::string::npos, "message should contain: ", n);
    } catch (const std::exception& e) {
      FAIL_CHECK("not an lqer::error: " << e.what());
    }
    CHECK(output_untouched());
  }
}

bool all_sentinel(const std::vector<float>& v) {
  for (float f : v)
    if (std::memcmp(&f, &kSentinel, sizeof f) != 0) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Files

struct scratch {
  fs::path dir;
  explicit scratch(const std::string& name) {
    dir = fs::temp_directory_path() / ("lqer_api_matrix_" + name + "." + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    fs::permissions(dir / "ro", fs::perms::owner_all, ec);
    fs::remove_all(dir, ec);
  }
};

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("API matrix: read_npy_matrix / read_npy_vector on bad files") {
  scratch s("read");
  const std::string f4_2x16(2 * 16 * 4, '\0'), f4_32(32 * 4, '\0');
  const std::string good = npy_bytes("<f4", "(2, 16)", f4_2x16);
  struct file_case {
    const char* name;
    const char* file;
    std::string bytes;  // written unless `missing`
    bool missing;
    kind matrix_error;
    const char* matrix_needle;
    bool vector_accepts;  // read_npy_vector reads it fine (a 1-D file)
    kind vector_error;
    const char* vector_needle;
  };
  const std::vector<file_case> cases = {
      {"missing file", "missing.npy", "", true, kind::io, "no such file", false, kind::io, "no such file"},
      {"empty file", "empty.npy", "", false, kind::parse, "truncated", false, kind::parse, "truncated"},
      {"truncated header", "th.npy", good.substr(0, 40), false, kind::parse, "truncated", false, kind::parse,
       "truncated"},
      {"truncated data", "td.npy", good.substr(0, good.size() - 5), false, kind::parse, "truncated", false,
       kind::parse, "truncated"},
      {"int32 dtype", "i4.npy", npy_bytes("<i4", "(2, 16)", f4_2x16), false, kind::unsupported, "dtype", false,
       kind::unsupported, "dtype"},
      // The vector reader checks the rank before the dtype.
      {"float64 where float32 is required", "f8.npy", npy_bytes("<f8", "(2, 8)", f4_2x16), false, kind::value,
       "expected float32", false, kind::shape, "expected a 1-D array"},
      {"3-D", "cube.npy", npy_bytes("<f4", "(2, 2, 8)", f4_2x16), false, kind::unsupported, "3-D", false,
       kind::unsupported, "3-D"},
      {"1-D where 2-D is expected", "vec.npy", npy_bytes("<f4", "(32,)", f4_32), false, kind::shape,
       "expected a 2-D array", true, kind::shape, ""},
      {"2-D where 1-D is expected", "mat.npy", good, false, kind::shape, "", false, kind::shape,
       "expected a 1-D array"},
      {"2^40 elements declared", "huge.npy", npy_bytes("<f4", "(1048576, 1048576)", f4_2x16), false, kind::parse,
       "elements", false, kind::parse, "elements"},
      {"a directory", "adir", "", false, kind::io, "directory", false, kind::io, "directory"},
  };
  for (const file_case& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const fs::path p = s.dir / c.file;
    if (std::string(c.file) == "adir")
      fs::create_directory(p);
    else if (!c.missing)
      write_bytes(p, c.bytes);
    const auto check = [&](const std::function<void()>& call, bool accepts, kind k, const std::string& needle,
                           const std::string& reader) {
      CAPTURE(reader);
      try {
        call();
        CHECK_MESSAGE(accepts, "no exception");
      } catch (const lqer::error& e) {
        const std::string what = e.what();
        CAPTURE(what);
        CHECK_FALSE(accepts);
        CHECK_MESSAGE(is_kind(e, k), "expected ", kind_name(k));
        CHECK(what.find(c.file) != std::string::npos);
        CHECK(what.find(needle) != std::string::npos);
      }
    };
    // mat.npy is a good matrix: only the vector reader must refuse it.
    if (std::string(c.file) != "mat.npy")
      check([&] { (void)io::read_npy_matrix(p); }, false, c.matrix_error, c.matrix_needle, "matrix");
    check([&] { (void)io::read_npy_vector(p); }, c.vector_accepts, c.vector_error, c.vector_needle, "vector");
  }
  // float64 converts on request (npy_convert::any_to_float32): not an error.
  CHECK(io::read_npy_matrix(s.dir / "f8.npy", io::npy_convert::any_to_float32).cols == 8);
}

TEST_CASE("API matrix: write_npy to bad paths creates and replaces nothing") {
  scratch s("write");
  write_bytes(s.dir / "old.npy", "old content");
  fs::create_directory(s.dir / "adir");
  fs::create_directory(s.dir / "ro");
  fs::permissions(s.dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  const bool ro_works = ::access((s.dir / "ro").c_str(), W_OK) != 0;
  const std::vector<float> data(6, 1.0f);
  const std::array<index_t, 2> good{2, 3};
  const std::array<index_t, 2> negative{-2, 3};
  const auto before = snapshot(s.dir);
  std::vector<row> table = {
      {"missing directory", kind::io, {"no_such_dir"}, [&] { io::write_npy(s.dir / "no_such_dir" / "x.npy", data.data(), std::span<const index_t>(good)); }},
      {"target is a directory", kind::io, {"adir", "directory"}, [&] { io::write_npy(s.dir / "adir", data.data(), std::span<const index_t>(good)); }},
      {"negative dimension", kind::shape, {"old.npy", "negative"}, [&] { io::write_npy(s.dir / "old.npy", data.data(), std::span<const index_t>(negative)); }},
  };
  // Root (or CAP_DAC_OVERRIDE) writes into a 0500 directory regardless: then
  // say so and use /proc, where nobody can create a file.
  fs::path ro = s.dir / "ro";
  if (!ro_works) {
    MESSAGE("mode 0500 does not stop this user: the read-only directory row writes into /proc instead");
    ro = "/proc";
  }
  table.push_back({"read-only directory", kind::io, {(ro / "lqer_x.npy").string(), "temporary"},
                   [&] { io::write_npy(ro / "lqer_x.npy", data.data(), std::span<const index_t>(good)); }});
  run_table(table, [&] { return snapshot(s.dir) == before; });
}

TEST_CASE("API matrix: gguf_file::open, its getters, dequantize and to_quantized_matrix on bad files") {
  scratch s("gguf");
  using lqer::test::gguf_builder;
  const auto bytes_of = [](const std::vector<std::byte>& b) {
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  };
  const auto file = [&](const std::string& name, const std::vector<std::byte>& b) {
    write_bytes(s.dir / name, bytes_of(b));
    return s.dir / name;
  };
  const auto good = gguf_builder().kv_u32("n", 3).tensor("w", 0, {4}, lqer::test::f32_bytes({1, 2, 3, 4})).build();
  auto bad_version = good;
  bad_version[4] = std::byte{1};
  std::vector<std::byte> deep;
  for (int i = 0; i < 8; ++i) {
    gguf_builder::put<std::uint32_t>(deep, 9);
    gguf_builder::put<std::uint64_t>(deep, 1);
  }
  gguf_builder::put<std::uint32_t>(deep, 0);
  gguf_builder::put<std::uint64_t>(deep, 0);
  gguf_builder huge_count;
  huge_count.kv_u32("n", 1);
  huge_count.kv_count_override = std::int64_t{1} << 60;
  auto huge_string = gguf_builder().kv_string("k", "v").build();
  std::memcpy(huge_string.data() + 24, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
  // Inf scale in a Q4_0 block; an IQ2_XXS tensor (opens, does not decode); a Q8_0 tensor.
  std::vector<std::byte> q4(18);
  q4[1] = std::byte{0x7c};
  std::vector<std::byte> q41(20);  // a Q4_1 block whose minimum is -Inf (scale 0)
  q41[3] = std::byte{0xfc};
  const auto odd = gguf_builder()
                       .tensor("inf", 2, {32}, q4)
                       .tensor("minf", 3, {32}, q41)
                       .tensor("grid", 16, {256}, std::vector<std::byte>(66))
                       .tensor("q8", 8, {32}, std::vector<std::byte>(34))
                       .build();
  const fs::path odd_path = file("odd.gguf", odd);
  fs::create_directory(s.dir / "adir");
  const io::gguf_file f = io::gguf_file::open(odd_path);
  std::vector<float> dst(3, kSentinel);
  const auto open = [](const fs::path& p) { return [p] { (void)io::gguf_file::open(p); }; };
  const std::vector<row> table = {
      {"missing file", kind::io, {"missing.gguf", "no such file"}, open(s.dir / "missing.gguf")},
      {"a directory", kind::io, {"adir", "directory"}, open(s.dir / "adir")},
      {"empty file", kind::parse, {"empty.gguf: byte 0", "truncated"}, open(file("empty.gguf", {}))},
      {"wrong magic",
       kind::parse,
       {"magic.gguf: byte 0", "not a GGUF file"},
       open(file("magic.gguf", lqer::test::as_bytes("GGML and more bytes")))},
      {"version 1", kind::unsupported, {"v1.gguf: byte 4", "version 1"}, open(file("v1.gguf", bad_version))},
      {"truncated tensor data",
       kind::parse,
       {"cut.gguf: byte ", "past the end"},
       open(file("cut.gguf", std::vector<std::byte>(good.begin(), good.end() - 1)))},
      {"2^60 metadata entries declared",
       kind::parse,
       {"count.gguf: byte 16", "metadata entries"},
       open(file("count.gguf", huge_count.build()))},
      {"a 2^64-byte key",
       kind::parse,
       {"str.gguf: byte 24", "declares 18446744073709551615 bytes"},
       open(file("str.gguf", huge_string))},
      {"arrays nested 9 deep",
       kind::parse,
       {"deep.gguf: byte ", "deeper than 4"},
       open(file("deep.gguf", gguf_builder().kv_raw("d", 9, deep).build()))},
      {"unknown ggml type",
       kind::unsupported,
       {"type.gguf: byte ", "ggml type id 99"},
       open(file("type.gguf", gguf_builder().tensor("w", 99, {1}, std::vector<std::byte>(4)).build()))},
      {"misaligned tensor",
       kind::parse,
       {"align.gguf: byte ", "not a multiple of the alignment 32"},
       open(file("align.gguf", gguf_builder().tensor_info("w", 0, {1}, 8).data_bytes(64).build()))},
      {"overlapping tensors",
       kind::parse,
       {"overlap.gguf: byte ", "overlaps"},
       open(file("overlap.gguf",
                 gguf_builder().tensor_info("a", 0, {16}, 0).tensor_info("b", 0, {8}, 32).data_bytes(64).build()))},
      {"duplicate key",
       kind::parse,
       {"dupkey.gguf: byte ", "duplicate metadata key 'n'"},
       open(file("dupkey.gguf", gguf_builder().kv_u32("n", 1).kv_u32("n", 2).build()))},
      {"duplicate tensor",
       kind::parse,
       {"dupt.gguf: byte ", "duplicate tensor name 'w'"},
       open(file("dupt.gguf", gguf_builder()
                                  .tensor("w", 0, {1}, lqer::test::f32_bytes({1}))
                                  .tensor("w", 0, {1}, lqer::test::f32_bytes({2}))
                                  .build()))},
      {"missing key",
       kind::value,
       {"odd.gguf", "no metadata key 'x'"},
       [&] { (void)f.metadata().get<std::uint32_t>("x"); }},
      {"missing tensor", kind::value, {"odd.gguf", "no tensor 'x'"}, [&] { (void)f.tensor("x"); }},
      {"dequantize: a type lqer does not decode",
       kind::unsupported,
       {"odd.gguf", "IQ2_XXS", "not implemented"},
       [&] { (void)io::dequantize(f.tensor("grid"), dst); }},
      {"dequantize: destination of another size",
       kind::shape,
       {"odd.gguf", "destination"},
       [&] { io::dequantize(f.tensor("inf"), dst); }},
      {"to_quantized_matrix: another type",
       kind::value,
       {"odd.gguf", "q8 (Q8_0, 32) is not Q4_0"},
       [&] { (void)io::to_quantized_matrix<q4_0>(f.tensor("q8")); }},
      {"to_quantized_matrix: an Inf scale",
       kind::value,
       {"odd.gguf", "non-finite scale"},
       [&] { (void)io::to_quantized_matrix<q4_0>(f.tensor("inf")); }},
      {"to_quantized_matrix: an Inf block minimum",
       kind::value,
       {"odd.gguf", "minf (Q4_1, 32)", "non-finite minimum"},
       [&] { (void)io::to_quantized_matrix<q4_1>(f.tensor("minf")); }},
  };
  run_table(table, [&] { return all_sentinel(dst); });
}

TEST_CASE("API matrix: safetensors_file::open and its accessors on bad files") {
  scratch s("safetensors");
  // A safetensors file by hand: the 8-byte little-endian header length, the header, the data.
  const auto st = [](const std::string& header, const std::string& data = "") {
    std::string f(8, '\0');
    for (int i = 0; i < 8; ++i) f[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return f + header + data;
  };
  const auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, int b, int e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  const auto file = [&](const std::string& name, const std::string& bytes) {
    write_bytes(s.dir / name, bytes);
    return s.dir / name;
  };
  const std::string w8 = entry("w", "F32", "2", 0, 8), d8(8, '\0');
  std::string long_len = st("{}");
  long_len[0] = '\x40';  // declares 64 header bytes; 2 follow
  // "u" U8 [1] then "f" F32 [1] at data byte 1 (odd), "m" BOOL [1] holding 2, "i" I32 [1].
  std::string odd_header = "{" + entry("u", "U8", "1", 0, 1) + "," + entry("f", "F32", "1", 1, 5) + "," +
                           entry("m", "BOOL", "1", 5, 6) + "," + entry("i", "I32", "1", 6, 10) + "}";
  odd_header.append((8 - odd_header.size() % 8) % 8, ' ');
  const fs::path odd_path = file("odd.safetensors", st(odd_header, std::string("\x01\x00\x00\x80\x3f\x02", 6) + d8.substr(0, 4)));
  fs::create_directory(s.dir / "adir");
  const io::safetensors_file f = io::safetensors_file::open(odd_path);
  const auto open = [](const fs::path& p) { return [p] { (void)io::safetensors_file::open(p); }; };
  const std::vector<row> table = {
      {"missing file", kind::io, {"missing.safetensors", "no such file"}, open(s.dir / "missing.safetensors")},
      {"a directory", kind::io, {"adir", "directory"}, open(s.dir / "adir")},
      {"empty file", kind::parse, {"empty.safetensors: byte 0", "fewer than the 8-byte header length"}, open(file("empty.safetensors", ""))},
      {"header length beyond the file", kind::parse, {"len.safetensors: byte 0", "header length is 64 bytes"}, open(file("len.safetensors", long_len))},
      {"header not JSON", kind::parse, {"json.safetensors: byte 9", "not valid JSON"}, open(file("json.safetensors", st("{'w':1}")))},
      {"header not UTF-8", kind::parse, {"utf8.safetensors: byte 10", "not valid UTF-8"}, open(file("utf8.safetensors", st("{\"\xff\":1}")))},
      {"nesting 300 deep", kind::parse, {"deep.safetensors: byte ", "deeper than 128"}, open(file("deep.safetensors", st("{\"a\":" + std::string(300, '[') + std::string(300, ']') + "}")))},
      {"unknown dtype", kind::parse, {"dtype.safetensors: byte 22", "unknown dtype \"F33\""}, open(file("dtype.safetensors", st("{" + entry("w", "F33", "2", 0, 8) + "}", d8)))},
      {"negative dimension", kind::parse, {"neg.safetensors: byte ", "entry 0 is -2"}, open(file("neg.safetensors", st("{" + entry("w", "F32", "-2", 0, 8) + "}", d8)))},
      {"length other than the shape's", kind::parse, {"size.safetensors: byte ", "hold 8 bytes, but 3 elements of F32 take 12"}, open(file("size.safetensors", st("{" + entry("w", "F32", "3", 0, 8) + "}", d8)))},
      {"truncated data", kind::parse, {"cut.safetensors: byte ", "end beyond the data section"}, open(file("cut.safetensors", st("{" + w8 + "}", d8.substr(0, 5))))},
      {"overlapping tensors", kind::parse, {"overlap.safetensors: byte ", "overlap tensor \"a\""}, open(file("overlap.safetensors", st("{" + entry("a", "U8", "8", 0, 8) + "," + entry("b", "U8", "4", 4, 8) + "}", d8)))},
      {"a hole in the data section", kind::parse, {"hole.safetensors: byte ", "belong to no tensor"}, open(file("hole.safetensors", st("{" + entry("a", "U8", "4", 4, 8) + "}", d8)))},
      {"duplicate tensor", kind::parse, {"dup.safetensors: byte ", "duplicate tensor name \"w\""}, open(file("dup.safetensors", st("{" + w8 + "," + entry("w", "F32", "2", 8, 16) + "}", d8 + d8)))},
      {"metadata value not a string", kind::parse, {"meta.safetensors: byte 29", "metadata values must be strings"}, open(file("meta.safetensors", st("{\"__metadata__\":{\"k\":1}}")))},
      {"missing tensor", kind::value, {"odd.safetensors", "has no tensor \"x\""}, [&] { (void)f.tensor("x"); }},
      {"as_span of another dtype", kind::value, {"odd.safetensors", "tensor \"i\" (I32, [1])", "asked for F32"}, [&] { (void)f.tensor("i").as_span<float>(); }},
      {"as_span of misaligned data", kind::unsupported, {"odd.safetensors", "tensor \"f\"", "not aligned to 4 bytes"}, [&] { (void)f.tensor("f").as_span<float>(); }},
      {"a BOOL byte of 2", kind::value, {"odd.safetensors", "tensor \"m\"", "byte value 2"}, [&] { (void)f.tensor("m").to_vector<bool>(); }},
      {"to_float32 of I32", kind::unsupported, {"odd.safetensors", "tensor \"i\"", "to_float32 converts"}, [&] { (void)io::to_float32(f.tensor("i")); }},
  };
  run_table(table, [] { return true; });  // readers return their results: no caller buffer
}

TEST_CASE("API matrix: safetensors_writer on bad tensors and bad paths creates and replaces nothing") {
  scratch s("safetensors_write");
  write_bytes(s.dir / "old.safetensors", "old content");
  fs::create_directory(s.dir / "adir");
  fs::create_directory(s.dir / "ro");
  fs::permissions(s.dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  const bool ro_works = ::access((s.dir / "ro").c_str(), W_OK) != 0;
  const std::vector<float> data(6, 1.0f);
  const std::vector<index_t> good{2, 3}, negative{-2, -3}, wrong{2, 4};
  io::safetensors_writer w;
  w.add("w", good, data);
  const auto before = snapshot(s.dir);
  std::vector<row> table = {
      {"empty name", kind::value, {"must not be empty"}, [&] { io::safetensors_writer(w).add("", good, data).write(s.dir / "old.safetensors"); }},
      {"duplicate name", kind::value, {"tensor \"w\"", "already added"}, [&] { io::safetensors_writer(w).add("w", good, data).write(s.dir / "old.safetensors"); }},
      {"reserved name", kind::value, {"__metadata__", "reserved"}, [&] { io::safetensors_writer(w).add("__metadata__", good, data); }},
      {"name not UTF-8", kind::value, {"not valid UTF-8"}, [&] { io::safetensors_writer(w).add("\xff", good, data); }},
      {"metadata not UTF-8", kind::value, {"key \"k\"", "not valid UTF-8"}, [&] { io::safetensors_writer(w).set_metadata("k", "\xc0\xaf"); }},
      {"negative dimension", kind::shape, {"tensor \"n\"", "negative dimension"}, [&] { io::safetensors_writer(w).add("n", negative, data); }},
      {"data of another size", kind::shape, {"tensor \"s\"", "needs 32 bytes, the data has 24"}, [&] { io::safetensors_writer(w).add("s", wrong, data); }},
      {"missing directory", kind::io, {"no_such_dir"}, [&] { w.write(s.dir / "no_such_dir" / "x.safetensors"); }},
      {"target is a directory", kind::io, {"adir", "directory"}, [&] { w.write(s.dir / "adir"); }},
  };
  fs::path ro = s.dir / "ro";
  if (!ro_works) {
    MESSAGE("mode 0500 does not stop this user: the read-only directory row writes into /proc instead");
    ro = "/proc";
  }
  table.push_back({"read-only directory", kind::io, {(ro / "lqer_x.safetensors").string(), "temporary"},
                   [&] { w.write(ro / "lqer_x.safetensors"); }});
  run_table(table, [&] { return snapshot(s.dir) == before; });
}

TEST_CASE("API matrix: quantized_matrix::quantize, dequantize and fake_quantize") {
  const index_t R = 3, C = 40;
  auto src = lqer_test::random_matrix(R, C, 1.0f, 900);
  std::vector<float> dst(static_cast<std::size_t>(R * C), kSentinel);
  const auto with = [&](index_t at, float v) {
    auto m = src;
    m[static_cast<std::size_t>(at)] = v;
    return m;
  };
  const auto nan = with(1 * C + 7, kNaN), pinf = with(2 * C + 39, kInf), ninf = with(0, -kInf);
  const auto q = quantized_matrix<W4>::quantize(matrix_view<const float>(src.data(), R, C));
  const std::vector<row> table = {
      {"NaN", kind::value, {"(1, 7)", "NaN"}, [&] { fake_quantize<W4>(matrix_view<const float>(nan.data(), R, C), matrix_view<float>(dst.data(), R, C)); }},
      {"+Inf", kind::value, {"(2, 39)", "+Inf"}, [&] { fake_quantize<W4>(matrix_view<const float>(pinf.data(), R, C), matrix_view<float>(dst.data(), R, C)); }},
      {"-Inf", kind::value, {"(0, 0)", "-Inf"}, [&] { fake_quantize<W4>(matrix_view<const float>(ninf.data(), R, C), matrix_view<float>(dst.data(), R, C)); }},
      {"NaN, blocks down the columns", kind::value, {"(1, 7)", "NaN"}, [&] { fake_quantize<W4>(matrix_view<const float>(nan.data(), R, C), matrix_view<float>(dst.data(), R, C), block_axis::rows); }},
      {"empty source", kind::shape, {"empty"}, [&] { (void)quantized_matrix<W4>::quantize(matrix_view<const float>(src.data(), 0, C)); }},
      {"negative columns", kind::shape, {"negative"}, [&] { (void)quantized_matrix<W4>::quantize(matrix_view<const float>(src.data(), R, -1)); }},
      {"row stride < cols", kind::shape, {"stride"}, [&] { (void)quantized_matrix<W4>::quantize(matrix_view<const float>(src.data(), R, C, C - 1)); }},
      {"null data", kind::shape, {"null"}, [&] { (void)quantized_matrix<W4>::quantize(matrix_view<const float>(nullptr, R, C)); }},
      {"fake_quantize: destination of another shape", kind::shape, {"destination"}, [&] { fake_quantize<W4>(matrix_view<const float>(src.data(), R, C), matrix_view<float>(dst.data(), R, C - 1)); }},
      {"dequantize: destination of another shape", kind::shape, {"destination"}, [&] { q.dequantize(matrix_view<float>(dst.data(), R - 1, C)); }},
      {"dequantize: destination stride < cols", kind::shape, {"stride"}, [&] { q.dequantize(matrix_view<float>(dst.data(), R, C, C - 2)); }},
      {"make_matrix_view: buffer too small", kind::shape, {"cannot hold"}, [&] { (void)make_matrix_view(dst.data(), dst.size() - 1, R, C, C); }},
  };
  run_table(table, [&] { return all_sentinel(dst); });
}

TEST_CASE("API matrix: factorize") {
  const index_t out = 24, in = 32;
  const auto w = lqer_test::random_matrix(out, in, 0.05f, 910);
  const auto x = lqer_test::random_matrix(8, in, 1.0f, 911);
  activation_stats stats(in), wrong_stats(in + 16);
  stats.add_batch(matrix_view<const float>(x.data(), 8, in));
  const auto xw = lqer_test::random_matrix(8, in + 16, 1.0f, 912);
  wrong_stats.add_batch(matrix_view<const float>(xw.data(), 8, in + 16));
  auto wnan = w;
  wnan[static_cast<std::size_t>(5 * in + 3)] = kNaN;
  auto winf = w;
  winf[static_cast<std::size_t>(in + 1)] = -kInf;
  const auto fz = [&](const std::vector<float>& wm, const activation_stats& st, index_t rank) {
    (void)factorize<policy::mean_abs, exact_svd, W4, Lr8>(matrix_view<const float>(wm.data(), out, in), st, rank);
  };
  const std::vector<row> table = {
      {"statistics of another width", kind::shape, {"calibration statistics", "48"}, [&] { fz(w, wrong_stats, 4); }},
      {"no statistics for a policy that needs them", kind::value, {"no tokens"}, [&] { fz(w, activation_stats(in), 4); }},
      {"rank > min(in, out)", kind::value, {"rank 25", "[0, 24]"}, [&] { fz(w, stats, 25); }},
      {"negative rank", kind::value, {"rank -1"}, [&] { fz(w, stats, -1); }},
      {"NaN in W", kind::value, {"W", "(5, 3)", "NaN"}, [&] { fz(wnan, stats, 4); }},
      {"-Inf in W", kind::value, {"W", "(1, 1)", "-Inf"}, [&] { fz(winf, stats, 4); }},
      {"empty W", kind::shape, {"W", "empty"}, [&] { (void)factorize<policy::mean_abs, exact_svd, W4, Lr8>(matrix_view<const float>(w.data(), 0, in), stats, 0); }},
  };
  run_table(table, [] { return true; });  // factorize returns its result: no caller buffer
}

TEST_CASE("API matrix: activation_stats::add_batch leaves the accumulator unchanged") {
  const index_t in = 32, T = 5;
  activation_stats st(in);
  const auto x = lqer_test::random_matrix(T, in, 1.0f, 930);
  st.add_batch(matrix_view<const float>(x.data(), T, in));
  const std::vector<double> mean_before = st.mean_abs();
  auto xnan = x;
  xnan[static_cast<std::size_t>(3 * in + 4)] = kNaN;
  auto xinf = x;
  xinf[static_cast<std::size_t>(in - 1)] = -kInf;
  const auto xw = lqer_test::random_matrix(T, in + 1, 1.0f, 931);
  const auto add = [&](const std::vector<float>& m, index_t r, index_t c) {
    st.add_batch(matrix_view<const float>(m.data(), r, c));
  };
  const std::vector<row> table = {
      {"NaN", kind::value, {"batch 1", "(3, 4)", "NaN"}, [&] { add(xnan, T, in); }},
      {"-Inf", kind::value, {"batch 1", "(0, 31)", "-Inf"}, [&] { add(xinf, T, in); }},
      {"another width", kind::shape, {"33 columns", "expected 32"}, [&] { add(xw, T, in + 1); }},
      {"no tokens", kind::shape, {"empty"}, [&] { add(x, 0, in); }},
      {"default-constructed accumulator", kind::shape, {"no input width"},
       [&] { activation_stats{}.add_batch(matrix_view<const float>(x.data(), T, in)); }},
  };
  run_table(table, [&] { return st.batches() == 1 && st.mean_abs() == mean_before; });
}

TEST_CASE("API matrix: pack, linear and reference_forward") {
  const index_t N = 32, K = 64, M = 3, R = 16;
  const auto layer = lqer_test::random_layer<W4, Lr8>(N, K, R, true, 920);
  const auto packed = pack<Act8>(layer);
  const auto x = lqer_test::random_matrix(M, K, 1.0f, 921);
  auto xnan = x;
  xnan[static_cast<std::size_t>(2 * K + 9)] = kNaN;
  auto xinf = x;
  xinf[static_cast<std::size_t>(K + 63)] = kInf;
  std::vector<float> y(static_cast<std::size_t>(M * (N + 1)), kSentinel);
  // Layers with one inconsistency each (pack and the reference validate them).
  auto bad_bias = layer;
  bad_bias.bias.pop_back();
  auto no_b = layer;
  no_b.b = {};
  auto a_wrong_in = layer;
  const auto a48 = lqer_test::random_matrix(K + 16, R, 0.1f, 922);
  a_wrong_in.a = quantized_matrix<Lr8>::quantize(matrix_view<const float>(a48.data(), K + 16, R), block_axis::rows);
  // Finite x whose correction overflows: A ~2^100 against x ~2^60 makes
  // Q(x)·A infinite; with a normal A, t ~2^60 against B ~2^120 makes the paper
  // mode's Q(Q(x)·A)·B infinite (the fused mode just accumulates it into y).
  const auto big_a = lqer_test::random_layer<W4, Lr8>(N, K, R, true, 923, 0.05f, std::ldexp(1.0f, 100));
  const auto big_b = lqer_test::random_layer<W4, Lr8>(N, K, R, true, 924, 0.05f, -1.0f, std::ldexp(1.0f, 120));
  const auto packed_big_a = pack<Act8>(big_a);
  const auto x60 = lqer_test::random_matrix(M, K, std::ldexp(1.0f, 60), 925);
  const auto lin = [&](const std::vector<float>& xm, index_t xr, index_t xc, index_t yr, index_t yc) {
    linear(packed, matrix_view<const float>(xm.data(), xr, xc), matrix_view<float>(y.data(), yr, yc));
  };
  const auto ref = [&](const lqer_layer<W4, Lr8>& l, const std::vector<float>& xm, index_t xc, index_t yc) {
    reference_forward<Act8>(l, matrix_view<const float>(xm.data(), M, xc), matrix_view<float>(y.data(), M, yc));
  };
  const std::vector<row> table = {
      {"pack: bias of the wrong length", kind::shape, {"bias"}, [&] { (void)pack<Act8>(bad_bias); }},
      {"pack: A without B", kind::shape, {"A and B"}, [&] { (void)pack<Act8>(no_b); }},
      {"pack: A with the wrong number of rows", kind::shape, {"A has 80 rows"}, [&] { (void)pack<Act8>(a_wrong_in); }},
      {"linear: x with the wrong number of columns", kind::shape, {"x has 63 columns"}, [&] { lin(x, M, K - 1, M, N); }},
      {"linear: y with the wrong number of rows", kind::shape, {"y is 2x32"}, [&] { lin(x, M, K, M - 1, N); }},
      {"linear: y with the wrong number of columns", kind::shape, {"y is 3x33"}, [&] { lin(x, M, K, M, N + 1); }},
      {"linear: NaN in x", kind::value, {"(2, 9)", "NaN"}, [&] { lin(xnan, M, K, M, N); }},
      {"linear: +Inf in x", kind::value, {"(1, 63)", "+Inf"}, [&] { lin(xinf, M, K, M, N); }},
      {"linear: an empty packed layer", kind::shape, {"empty"}, [&] { linear(packed_layer<W4, Lr8, Act8>{}, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N)); }},
      {"reference_forward: x with the wrong number of columns", kind::shape, {"x has 63 columns"}, [&] { ref(layer, x, K - 1, N); }},
      {"reference_forward: y with the wrong number of columns", kind::shape, {"y is 3x33"}, [&] { ref(layer, x, K, N + 1); }},
      {"reference_forward: NaN in x", kind::value, {"x", "(2, 9)", "NaN"}, [&] { ref(layer, xnan, K, N); }},
      {"reference_forward: Q(x)·A overflows", kind::value, {"intermediate Q(x)·A", "element ("}, [&] { ref(big_a, x60, K, N); }},
      {"reference_forward (paper): Q(Q(x)·A)·B overflows", kind::value, {"Q(Q(x)·A)·B", "Inf"},
       [&] {
         reference_forward<Act8>(big_b, matrix_view<const float>(x60.data(), M, K), matrix_view<float>(y.data(), M, N),
                                 correction_mode::paper);
       }},
      {"linear: Q(x)·A overflows", kind::value, {"Q(x)·A", "non-finite"},
       [&] { linear(packed_big_a, matrix_view<const float>(x60.data(), M, K), matrix_view<float>(y.data(), M, N)); }},
      {"reference_forward: an inconsistent layer", kind::shape, {"bias"}, [&] { ref(bad_bias, x, K, N); }},
  };
  run_table(table, [&] { return all_sentinel(y); });
}
