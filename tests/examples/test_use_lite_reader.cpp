// The USE-lite engine's input parsers on small hand-made inputs (no model
// needed): the TF.js weight reader (valid, malformed and hostile model.json and
// shards) and the tokenizer's rules, one quirk per case.
#include <doctest/doctest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <lqer/error.hpp>
#include <random>
#include <string>
#include <vector>

#include "tfjs_weights.hpp"
#include "tokenizer.hpp"

namespace fs = std::filesystem;
using use_lite::tfjs_weights;
using use_lite::tokenizer;

namespace {

/// A fresh directory under the system temp dir, removed at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    static std::atomic<int> counter{0};
    path = fs::temp_directory_path() /
           ("lqer_use_lite_" + std::to_string(std::random_device{}()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream out(path / name, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
};

std::string slurp_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string le_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

// weights: "w" float32 [2, 3] then "n" int32 [] — 28 bytes, cut across two shards.
const char* kManifest = R"({"modelTopology": {}, "weightsManifest": [{"paths": ["s1", "s2"], "weights": [
  {"name": "w", "shape": [2, 3], "dtype": "float32"}, {"name": "n", "shape": [], "dtype": "int32"}]}]})";

void write_valid_model(const temp_dir& d) {
  const std::string blob = le_bytes({1, 2, 3, 4, 5, 6}) + std::string("\x07\x00\x00\x00", 4);
  d.write("model.json", kManifest);
  d.write("s1", blob.substr(0, 10));  // a shard boundary inside a float: the reader must not care
  d.write("s2", blob.substr(10));
}

/// The message of the lqer::error `f` throws (fails the test if it throws nothing).
template <class E, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return {};
}

}  // namespace

TEST_CASE("tfjs_weights reads float32 weights across shard boundaries") {
  temp_dir d;
  write_valid_model(d);
  const auto w = tfjs_weights::load(d.path);
  CHECK(w.manifest().total_bytes == 28);
  CHECK(w.floats("w", {2, 3}) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(w.entry("n").shape.empty());
  CHECK(w.entry("n").elements == 1);
  // Wrong shape, wrong dtype, unknown name: parse_error naming model.json and the weight.
  const auto shape_msg = message_of<lqer::parse_error>([&] { (void)w.floats("w", {3, 2}); });
  CHECK(shape_msg.find("model.json") != std::string::npos);
  CHECK(shape_msg.find("[2, 3]") != std::string::npos);
  CHECK_THROWS_AS((void)w.floats("n", {}), lqer::parse_error);
  CHECK(message_of<lqer::parse_error>([&] { (void)w.floats("nope", {1}); }).find("\"nope\"") != std::string::npos);
}

TEST_CASE("tfjs_weights: truncated, missing and oversized shards are named before any allocation") {
  temp_dir d;
  write_valid_model(d);
  d.write("s2", std::string(17, '\0'));  // one byte short
  const auto msg = message_of<lqer::parse_error>([&] { (void)tfjs_weights::load(d.path); });
  CHECK(msg.find("s1, s2") != std::string::npos);
  CHECK(msg.find("truncated") != std::string::npos);

  d.write("s2", std::string(19, '\0'));  // one byte too many: also refused (not silently ignored)
  CHECK_THROWS_AS((void)tfjs_weights::load(d.path), lqer::parse_error);

  fs::remove(d.path / "s2");
  CHECK(message_of<lqer::io_error>([&] { (void)tfjs_weights::load(d.path); }).find("s2") != std::string::npos);

  temp_dir empty;
  CHECK(message_of<lqer::io_error>([&] { (void)tfjs_weights::load(empty.path); }).find("model.json") !=
        std::string::npos);
}

TEST_CASE("tfjs_weights: malformed and hostile manifests are parse errors") {
  const auto bad = [](const std::string& json) {
    return message_of<lqer::parse_error>([&] { (void)use_lite::parse_tfjs_manifest(json, "m.json"); });
  };
  CHECK(bad("{").find("m.json: not valid JSON") == 0);
  CHECK(bad("[]").find("not a JSON object") != std::string::npos);
  CHECK(bad("{}").find("weightsManifest") != std::string::npos);
  CHECK(bad(R"({"weightsManifest": {}})").find("not an array") != std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": ["../etc/passwd"], "weights": []}]})").find("plain file name") !=
        std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": ["/abs"], "weights": []}]})").find("plain file name") !=
        std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [-1], "dtype": "float32"}]}]})")
            .find("non-negative") != std::string::npos);
  CHECK(
      bad(R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [2.5], "dtype": "float32"}]}]})")
          .find("non-negative") != std::string::npos);
  // 2^40 · 2^40 elements: refused from the numbers alone (no overflow, no allocation).
  CHECK(
      bad(R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [1099511627776, 1099511627776], "dtype": "float32"}]}]})")
          .find("holds more than") != std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [1], "dtype": "qint9"}]}]})")
            .find("unknown dtype") != std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": [], "weights": [{"name": "x", "shape": [1], "dtype": "float32"}]}]})")
            .find("no shard paths") != std::string::npos);
  CHECK(bad(R"({"weightsManifest": [{"paths": ["a"], "weights": [{"shape": [1], "dtype": "float32"}]}]})")
            .find("\"name\"") != std::string::npos);

  // Valid TF.js this reader does not handle: unsupported_error, not a misread.
  CHECK_THROWS_AS(
      (void)use_lite::parse_tfjs_manifest(
          R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [1], "dtype": "float16"}]}]})",
          "m.json"),
      lqer::unsupported_error);
  CHECK_THROWS_AS(
      (void)use_lite::parse_tfjs_manifest(
          R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [1], "dtype": "float32",
                          "quantization": {"dtype": "uint8", "scale": 1, "min": 0}}]}]})",
          "m.json"),
      lqer::unsupported_error);

  // Duplicate names are caught when the weights are bound to their blob.
  auto m = use_lite::parse_tfjs_manifest(
      R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": [1], "dtype": "float32"},
          {"name": "x", "shape": [1], "dtype": "float32"}]}]})",
      "m.json");
  CHECK_THROWS_AS((void)tfjs_weights::from_memory(m, std::vector<std::byte>(8), "m.json"), lqer::parse_error);
}

TEST_CASE("tfjs_weights refuses non-finite weights") {
  temp_dir d;
  d.write("model.json",
          R"({"weightsManifest": [{"paths": ["s"], "weights": [{"name": "w", "shape": [2], "dtype": "float32"}]}]})");
  d.write("s", le_bytes({1.0f, std::numeric_limits<float>::quiet_NaN()}));
  const auto w = tfjs_weights::load(d.path);
  CHECK(message_of<lqer::parse_error>([&] { (void)w.floats("w", {2}); }).find("element 1") != std::string::npos);
}

TEST_CASE("tfjs_weights: JSON nested deeper than the limit is refused while it is parsed") {
  const auto bad = [](const std::string& json) {
    return message_of<lqer::parse_error>([&] { (void)use_lite::parse_tfjs_manifest(json, "m.json"); });
  };
  const auto nested = [](std::size_t depth, const std::string& inner) {
    return std::string(depth, '[') + inner + std::string(depth, ']');
  };
  const auto with_shape = [](const std::string& shape) {
    return R"({"weightsManifest": [{"paths": ["a"], "weights": [{"name": "x", "shape": )" + shape +
           R"(, "dtype": "float32"}]}]})";
  };
  // A shape of rank 1 whose one "dimension" is 200,000 arrays deep passed the
  // rank check, and its error message then printed it with json::dump(),
  // which recursed once per level until the stack ran out (SIGSEGV).
  const std::string deep = bad(with_shape(nested(200000, "1")));
  CHECK(deep.find("m.json: ") == 0);
  CHECK(deep.find("nested deeper than 64") != std::string::npos);
  CHECK(deep.size() < 200);
  // Depth anywhere counts, also in the part this reader ignores.
  CHECK(bad(R"({"modelTopology": )" + nested(100, "") + R"(, "weightsManifest": []})").find("nested deeper") !=
        std::string::npos);
  // A nesting within the limit is a plain shape error, described shortly
  // (its type and a bounded prefix), never dumped whole.
  const std::string shallow = bad(with_shape(nested(40, "1")));
  CHECK(shallow.find("not a list of non-negative integers") != std::string::npos);
  CHECK(shallow.size() < 300);
  std::string wide = "[[";
  for (int i = 0; i < 10000; ++i) wide += "1234567, ";
  wide += "1]]";
  CHECK(bad(with_shape(wide)).size() < 300);
  // The limit is the caller's: a deeper one accepts what the default refuses.
  use_lite::tfjs_limits deeper;
  deeper.max_json_depth = 200;
  CHECK_NOTHROW((void)use_lite::parse_tfjs_manifest(
      R"({"modelTopology": )" + nested(100, "") + R"(, "weightsManifest": []})", "m.json", deeper));
}

TEST_CASE("tfjs_weights: a shard that resolves outside the model directory is refused") {
  temp_dir d, outside;
  write_valid_model(d);
  outside.write("s1", slurp_bytes(d.path / "s1"));  // the right bytes: only the place is wrong
  const auto refused = [&] {
    const std::string msg = message_of<lqer::io_error>([&] { (void)tfjs_weights::load(d.path); });
    CHECK(msg.find((d.path / "s1").string() + ": ") == 0);
    CHECK(msg.find("outside the model directory") != std::string::npos);
    return msg;
  };
  SUBCASE("an absolute symlink") {
    fs::remove(d.path / "s1");
    fs::create_symlink(outside.path / "s1", d.path / "s1");
    CHECK(refused().find((outside.path / "s1").string()) != std::string::npos);
  }
  SUBCASE("a relative symlink through ..") {
    fs::remove(d.path / "s1");
    fs::create_symlink(fs::path("..") / outside.path.filename() / "s1", d.path / "s1");
    (void)refused();
  }
  SUBCASE("a symlink to a symlink inside that leads outside") {
    fs::remove(d.path / "s1");
    fs::create_symlink(outside.path / "s1", d.path / "hop");
    fs::create_symlink("hop", d.path / "s1");
    (void)refused();
  }
  SUBCASE("a symlink to the model directory itself") {
    fs::remove(d.path / "s1");
    fs::create_symlink(".", d.path / "s1");
    const std::string msg = message_of<lqer::io_error>([&] { (void)tfjs_weights::load(d.path); });
    CHECK(msg.find("outside the model directory") != std::string::npos);
  }
  SUBCASE("symlinks that stay inside are followed") {
    fs::create_directory(d.path / "blobs");
    fs::rename(d.path / "s1", d.path / "blobs" / "s1");
    fs::create_symlink(fs::path("blobs") / "s1", d.path / "s1");
    CHECK(tfjs_weights::load(d.path).floats("w", {2, 3}) == std::vector<float>{1, 2, 3, 4, 5, 6});
  }
  SUBCASE("the model directory may itself be reached through a symlink") {
    fs::create_symlink(d.path, outside.path / "model");
    CHECK(tfjs_weights::load(outside.path / "model").floats("w", {2, 3}) == std::vector<float>{1, 2, 3, 4, 5, 6});
  }
}

TEST_CASE("tfjs_weights::from_memory refuses a manifest whose entries do not lie in the blob") {
  // from_memory takes a manifest the caller may have built or edited: it must
  // not trust its offsets and sizes (floats() copies e.bytes from e.offset).
  const use_lite::tfjs_manifest good = use_lite::parse_tfjs_manifest(kManifest, "m.json");
  REQUIRE(good.total_bytes == 28);
  CHECK_NOTHROW((void)tfjs_weights::from_memory(good, std::vector<std::byte>(28), "m.json"));
  const auto refused = [&](const std::function<void(use_lite::tfjs_entry&)>& edit, const char* needle) {
    use_lite::tfjs_manifest m = good;
    edit(m.entries[0]);
    const std::string msg =
        message_of<lqer::parse_error>([&] { (void)tfjs_weights::from_memory(m, std::vector<std::byte>(28), "m.json"); });
    CHECK(msg.find("m.json: weight \"w\"") == 0);
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
  };
  refused([](auto& e) { e.offset = 8; }, "outside the 28-byte blob");  // 8 + 24 > 28
  refused([](auto& e) { e.offset = std::numeric_limits<std::uint64_t>::max() - 8; }, "outside the 28-byte blob");
  refused([](auto& e) { e.bytes = 4; }, "24");                                     // 6 elements need 24 bytes
  refused([](auto& e) { e.elements = std::uint64_t{1} << 62; }, "elements");       // elements · 4 overflows
  refused([](auto& e) { e.elements = 7; e.bytes = 28; }, "shape [2, 3]");          // 7 ≠ 2 · 3
  refused([](auto& e) { e.shape = {-2, -3}; }, "negative");
  refused([](auto& e) { e.shape = {std::int64_t{1} << 40, std::int64_t{1} << 40}; }, "shape");  // the product overflows
}

// ---------------------------------------------------------------------------
// Tokenizer rules on a vocabulary small enough to work each case out by hand.

namespace {
// id: 0-5 reserved, 6 "▁", 7 "▁a", 8 "b", 9 "ab", 10 "a", 11 "▁ab", 12 "c" (null score),
// 13 "d", 14 "d" (duplicate: the last one wins), 15 "▁z" (score exactly 0), 16 "z".
// Id 0's piece is U+FFFD, as in USE-lite: the backtrack steps back by its
// length (1) over an unknown character.
const char* kVocab = R"([["\ufffd", 0], ["<s>", 0], ["</s>", 0], ["x1", 0], ["x2", 0], ["x3", 0],
  ["\u2581", -2], ["\u2581a", -1], ["b", -3], ["ab", -1.5], ["a", -2], ["\u2581ab", -4], ["c", null],
  ["d", -1], ["d", -5], ["\u2581z", 0], ["z", -1]])";

std::vector<std::int32_t> ids(std::initializer_list<std::int32_t> v) { return v; }
}  // namespace

TEST_CASE("tokenizer: the Viterbi rules, worked by hand") {
  const tokenizer t = tokenizer::from_json(kVocab, "vocab.json");
  CHECK(t.size() == 17);
  CHECK(t.encode("") == ids({}));  // no '▁' is prefixed to an empty string
  // "▁a": "▁a" (−1) beats "▁"+"a" (−2 − 2).
  CHECK(t.encode("a") == ids({7}));
  // "▁ab": "▁ab" (−4), then "▁"+"ab" (−2 − 1.5 = −3.5 ≥ −4: taken), then "▁a"+"b" (−1 − 3 = −4 < −3.5).
  CHECK(t.encode("ab") == ids({6, 9}));
  // No piece starts at 'x': one unknown (id 0) per character; runs merge.
  CHECK(t.encode("x y") == ids({6, 0, 6, 0}));
  CHECK(t.encode("xy") == ids({6, 0}));
  CHECK(t.encode("a\xE2\x9C\x93\xE2\x9C\x93") == ids({7, 0}));  // "a✓✓"
  // NFKC first: full-width 'ａ' is 'a'; no lowercasing ('A' is unknown here).
  CHECK(t.encode("\xEF\xBD\x81") == ids({7}));
  CHECK(t.encode("A") == ids({6, 0}));
  // A duplicated piece keeps its last id and score (−5): "▁"+"d" = −7.
  CHECK(t.encode("d") == ids({6, 14}));
  // A null score counts as 0.
  CHECK(t.encode("c") == ids({6, 12}));
  // 0 doubles as "unset": "▁z" scores exactly 0, so the later candidate "▁"+"z"
  // (−3, worse) still replaces it.
  CHECK(t.encode("z") == ids({6, 16}));
  // Spaces are kept verbatim: each becomes '▁'.
  CHECK(t.encode(" a") == ids({6, 7}));
}

TEST_CASE("tokenizer: NFKC through ICU") {
  CHECK(tokenizer::nfkc("\xEF\xAC\x81") == U"fi");         // U+FB01 ligature
  CHECK(tokenizer::nfkc("cafe\xCC\x81") == U"caf\u00e9");  // e + combining acute composes
  CHECK(tokenizer::nfkc("a\xC2\xA0" "b") == U"a b");          // no-break space becomes U+0020 (then '▁')
  CHECK(tokenizer::nfkc("\xE2\x85\xA8") == U"IX");         // roman numeral nine
  CHECK(tokenizer::nfkc("ab\xFF") == U"ab\ufffd");         // invalid UTF-8: one U+FFFD
}

TEST_CASE("tokenizer: malformed vocabularies are parse errors naming the file") {
  CHECK_THROWS_WITH_AS((void)tokenizer::from_json("{", "v.json"), doctest::Contains("v.json"), lqer::parse_error);
  CHECK_THROWS_AS((void)tokenizer::from_json(R"({"a": 1})", "v.json"), lqer::parse_error);
  CHECK_THROWS_AS(
      (void)tokenizer::from_json(R"([["a", 0], ["b", 0], ["c", 0], ["d", 0], ["e", 0], ["f", 0], ["g"]])", "v.json"),
      lqer::parse_error);
  CHECK_THROWS_AS(
      (void)tokenizer::from_json(R"([["a", 0], ["b", 0], ["c", 0], ["d", 0], ["e", 0], ["f", 0], ["", 0]])", "v.json"),
      lqer::parse_error);
  CHECK_THROWS_AS((void)tokenizer::from_json(
                      R"([["a", 0], ["b", 0], ["c", 0], ["d", 0], ["e", 0], ["f", 0], ["g", "x"]])", "v.json"),
                  lqer::parse_error);
  CHECK_THROWS_AS((void)tokenizer::load("/nonexistent/vocab.json"), lqer::io_error);
}
