// The llama engine's tokenizer (examples/llama/tokenizer.hpp).
//
// Always: the BPE, the pre-tokenizer, special tokens, UTF-8 repair and the
// errors on tiny hand-made vocabularies and GGUF images built in memory.
// With the real model (SmolLM2-135M-Instruct's GGUF; $LQER_SMOLLM2_GGUF, else
// ${LQER_CACHE:-~/.cache/lqer}/smollm2/, where scripts/fetch_smollm2.sh puts
// it; skipped with a message when absent): every case of the fixture
// data/llama_tokenizer_fixture.json — ids made by Hugging Face tokenizers /
// transformers from the same file (make_llama_tokenizer_fixture.py) — must
// give the identical ids, decode back to its text, and the metadata must be
// what the gguf package read.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <lqer/error.hpp>
#include <lqer/io/gguf.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/models.hpp"
#include "tokenizer.hpp"

namespace fs = std::filesystem;
using llama::token_type;
using llama::tokenizer;
using llama::vocab_spec;
using ids = std::vector<tokenizer::id>;

namespace {

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

/// A vocabulary of the 256 byte tokens (id = byte), then `extra` tokens, with `merges`.
vocab_spec tiny(std::vector<std::string> extra, std::vector<std::string> merges) {
  vocab_spec s;
  s.pre = "smollm";
  for (int b = 0; b < 256; ++b) s.tokens.push_back(utf8(llama::byte_to_unicode(static_cast<std::uint8_t>(b))));
  for (auto& e : extra) s.tokens.push_back(std::move(e));
  s.merges = std::move(merges);
  return s;
}

tokenizer::id at(const tokenizer& t, const std::string& text) {
  const auto id = t.find(text);
  REQUIRE_MESSAGE(id >= 0, text);
  return id;
}

fs::path model_path() { return lqer_test::smollm2_gguf(); }

/// The real model's tokenizer, or nullptr (with a message) when the file is not cached.
const tokenizer* model_tokenizer() {
  static const fs::path path = model_path();
  static const bool present = fs::exists(path);
  if (!present) {
    MESSAGE("skipped: " << path.string()
                        << " is not there (bash scripts/fetch_smollm2.sh fetches it, or set LQER_SMOLLM2_GGUF)");
    return nullptr;
  }
  static const tokenizer t = tokenizer::from_gguf(lqer::io::gguf_file::open(path));
  return &t;
}

nlohmann::json fixture() {
  std::ifstream in(fs::path(LQER_LLAMA_FIXTURE_DIR) / "llama_tokenizer_fixture.json");
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::string from_hex(const std::string& h) {
  std::string s;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) s += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return s;
}

// GGUF images for the error cases, byte by byte (the format: see lqer/io/gguf.hpp).
// Appends go through resize + memcpy: GCC 12 warns falsely (-Wstringop-overflow)
// on push_back growth of a byte vector followed by a write.
struct gguf_image {
  std::vector<std::byte> kv;
  std::uint64_t n_kv = 0;

  template <class T>
  static void put(std::vector<std::byte>& out, T v) {
    const std::size_t n = out.size();
    out.resize(n + sizeof(T));
    std::memcpy(out.data() + n, &v, sizeof(T));
  }
  static void put_string(std::vector<std::byte>& out, std::string_view s) {
    put<std::uint64_t>(out, s.size());
    const std::size_t n = out.size();
    out.resize(n + s.size());
    if (!s.empty()) std::memcpy(out.data() + n, s.data(), s.size());
  }
  gguf_image& raw(std::string_view key, std::uint32_t type, const std::vector<std::byte>& value) {
    put_string(kv, key);
    put<std::uint32_t>(kv, type);
    kv.insert(kv.end(), value.begin(), value.end());
    ++n_kv;
    return *this;
  }
  gguf_image& string(std::string_view key, std::string_view v) {
    std::vector<std::byte> b;
    put_string(b, v);
    return raw(key, 8, b);
  }
  gguf_image& u32(std::string_view key, std::uint32_t v) {
    std::vector<std::byte> b;
    put<std::uint32_t>(b, v);
    return raw(key, 4, b);
  }
  gguf_image& strings(std::string_view key, const std::vector<std::string>& v) {
    std::vector<std::byte> b;
    put<std::uint32_t>(b, 8);  // element type: string
    put<std::uint64_t>(b, v.size());
    for (const auto& s : v) put_string(b, s);
    return raw(key, 9, b);
  }
  gguf_image& i32s(std::string_view key, const std::vector<std::int32_t>& v) {
    std::vector<std::byte> b;
    put<std::uint32_t>(b, 5);  // element type: int32
    put<std::uint64_t>(b, v.size());
    for (const auto x : v) put<std::int32_t>(b, x);
    return raw(key, 9, b);
  }
  /// Version 3, no tensors.
  lqer::io::gguf_file open(const std::string& name) const {
    std::vector<std::byte> out;
    out.resize(4);
    std::memcpy(out.data(), "GGUF", 4);
    put<std::uint32_t>(out, 3);
    put<std::uint64_t>(out, 0);
    put<std::uint64_t>(out, n_kv);
    out.insert(out.end(), kv.begin(), kv.end());
    return lqer::io::gguf_file::from_bytes(std::move(out), name);
  }
};

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("no exception of the expected type");
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------
// Without the model

TEST_CASE("GPT-2 byte alphabet: printable bytes stand for themselves, the other 68 take U+0100 on in order") {
  CHECK(llama::byte_to_unicode('A') == U'A');
  CHECK(llama::byte_to_unicode('!') == U'!');
  CHECK(llama::byte_to_unicode(0xA1) == U'\u00A1');
  CHECK(llama::byte_to_unicode(0x00) == U'\u0100');
  CHECK(llama::byte_to_unicode('\n') == U'\u010A');  // 'Ċ'
  CHECK(llama::byte_to_unicode(' ') == U'\u0120');   // 'Ġ'
  CHECK(llama::byte_to_unicode(0x7F) == U'\u0121');
  CHECK(llama::byte_to_unicode(0xA0) == U'\u0142');
  CHECK(llama::byte_to_unicode(0xAD) == U'\u0143');
  std::vector<bool> seen(0x144, false);
  for (int b = 0; b < 256; ++b) {
    const char32_t c = llama::byte_to_unicode(static_cast<std::uint8_t>(b));
    REQUIRE(c < 0x144);
    CHECK_FALSE(seen[c]);
    seen[c] = true;
  }
}

TEST_CASE("UTF-8 repair: one U+FFFD per maximal ill-formed subpart, as Python's errors='replace'") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(llama::sanitize_utf8("caf\xC3\xA9 \xF0\x9F\x98\x80") == "caf\xC3\xA9 \xF0\x9F\x98\x80");
  CHECK(llama::sanitize_utf8("a\x80"
                             "b") == "a" + r + "b");
  CHECK(llama::sanitize_utf8("a\xE2\x82 b") == "a" + r + " b");  // truncated: one U+FFFD for both bytes
  CHECK(llama::sanitize_utf8("\xC0\xAF"
                             "x") == r + r + "x");                          // overlong lead C0: each byte
  CHECK(llama::sanitize_utf8("\xED\xA0\x80y") == r + r + r + "y");          // surrogate: ED's second byte ≤ 9F
  CHECK(llama::sanitize_utf8("\xF4\x90\x80\x80z") == r + r + r + r + "z");  // > U+10FFFF
  CHECK(llama::sanitize_utf8("end\xF0\x9F\x98") == "end" + r);
  CHECK(llama::sanitize_utf8("\xFF\xFE") == r + r);
  CHECK(llama::sanitize_utf8(r) == r);
}

TEST_CASE("BPE on a tiny vocabulary: lowest rank first, leftmost on a tie, merges only between neighbours") {
  // Ranks: "b c" (0) before "a b" (1): "abc" → a + bc, although "ab" and "abc" exist.
  {
    const auto t = tokenizer::from_spec(tiny({"ab", "bc", "abc"}, {"b c", "a b", "ab c"}), "test");
    CHECK(t.encode("abc") == ids{'a', at(t, "bc")});
    CHECK(t.encode("ab") == ids{at(t, "ab")});
    CHECK(t.encode("xabz") == ids{'x', at(t, "ab"), 'z'});
  }
  {
    const auto t = tokenizer::from_spec(tiny({"ab", "bc", "abc"}, {"a b", "b c", "ab c"}), "test");
    CHECK(t.encode("abc") == ids{at(t, "abc")});
  }
  // A tie: "a a" in "aaa" merges the leftmost pair; then "aa a" is no merge.
  {
    const auto t = tokenizer::from_spec(tiny({"aa", "aaaa"}, {"a a", "aa aa"}), "test");
    CHECK(t.encode("aaa") == ids{at(t, "aa"), 'a'});
    CHECK(t.encode("aaaa") == ids{at(t, "aaaa")});
    CHECK(t.encode("aaaaa") == ids{at(t, "aaaa"), 'a'});
  }
  // A leading space is the byte 'Ġ' and merges like any other.
  {
    const auto t = tokenizer::from_spec(tiny({"\u0120a", "\u0120ab"}, {"\u0120 a", "\u0120a b"}), "test");
    CHECK(t.encode("x ab") == ids{'x', at(t, "\u0120ab")});
    CHECK(t.decode(t.encode("x ab")) == "x ab");
  }
}

TEST_CASE("BPE: a byte without a token is dropped before merging (HF's BPE without unk or byte fallback)") {
  auto s = tiny({"--"}, {"- -"});
  s.tokens['+'] = "unused";  // byte '+' now has no token
  const auto t = tokenizer::from_spec(std::move(s), "test");
  CHECK(t.byte_token('+') == -1);
  CHECK(t.byte_token('-') == '-');
  CHECK(t.encode("-+-") == ids{at(t, "--")});  // one piece ("other" run): its neighbours merge
  CHECK(t.encode("a+") == ids{'a'});
  CHECK(t.decode(t.encode("x+y")) == "xy");
}

TEST_CASE("pre-tokenizer 'smollm': every digit alone, then GPT-2's regex") {
  const auto t = tokenizer::from_spec(tiny({}, {}), "test");
  using v = std::vector<std::string>;
  CHECK(t.pre_tokenize("Hello world") == v{"Hello", " world"});
  CHECK(t.pre_tokenize("a  b") == v{"a", " ", " b"});  // \s+(?!\S) leaves the last space to " b"
  CHECK(t.pre_tokenize("a   ") == v{"a", "   "});      // trailing white space: one piece
  CHECK(t.pre_tokenize("a\tb") == v{"a", "\t", "b"});  // a tab takes no letter
  CHECK(t.pre_tokenize("a \n b") == v{"a", " \n", " b"});
  CHECK(t.pre_tokenize("x 1611, y") == v{"x", " ", "1", "6", "1", "1", ",", " y"});
  CHECK(t.pre_tokenize("  5 And") == v{"  ", "5", " And"});  // the piece before a digit ends: its spaces stay whole
  CHECK(t.pre_tokenize("it's I'M we'll") == v{"it", "'s", " I", "'", "M", " we", "'ll"});
  CHECK(t.pre_tokenize("?! ...") == v{"?!", " ..."});
  CHECK(t.pre_tokenize("caf\xC3\xA9 na\xC3\xAFve") == v{"caf\xC3\xA9", " na\xC3\xAFve"});
  CHECK(t.pre_tokenize("e\xCC\x81") == v{"e", "\xCC\x81"});  // a combining mark is not \p{L}
  CHECK(t.pre_tokenize("\xE5\xA4\xAA\xE5\x88\x9D\xEF\xBC\x8C") == v{"\xE5\xA4\xAA\xE5\x88\x9D", "\xEF\xBC\x8C"});
  CHECK(t.pre_tokenize("a\xC2\xA0"
                       "b") == v{"a", "\xC2\xA0", "b"});  // NBSP is \s, not ' '
  CHECK(t.pre_tokenize("").empty());

  auto g = tiny({}, {});
  g.pre = "gpt-2";
  const auto t2 = tokenizer::from_spec(std::move(g), "test");
  CHECK(t2.pre_tokenize("x 1611, y") == v{"x", " 1611", ",", " y"});
}

TEST_CASE("special tokens: control and user-defined tokens in the text, leftmost-longest — BOS/EOS as asked") {
  auto s = tiny({"<|a|>", "<|a|>b", "<u>", "<|n|>"}, {});
  s.types.assign(s.tokens.size(), token_type::normal);
  s.types[256] = token_type::control;
  s.types[257] = token_type::control;
  s.types[258] = token_type::user_defined;  // <|n|> stays normal: plain text
  s.bos_id = 256;
  s.eos_id = 258;
  s.add_bos = true;
  const auto t = tokenizer::from_spec(s, "test");
  CHECK(t.encode("x<|a|>by", false) == ids{'x', 257, 'y'});
  CHECK(t.encode("<|a|><|a|>c", false) == ids{256, 256, 'c'});
  CHECK(t.encode("<u><|n|>", false) == ids{258, '<', '|', 'n', '|', '>'});
  CHECK(t.encode("x", true) == ids{256, 'x'});
  CHECK(t.encode("<u>", false, false) == ids{'<', 'u', '>'});
  CHECK(t.decode(ids{257, 'x', 258}) == "<|a|>bx<u>");
  s.add_eos = true;
  const auto te = tokenizer::from_spec(s, "test");
  CHECK(te.encode("x") == ids{256, 'x', 258});
  CHECK_THROWS_AS(t.decode(ids{9999}), lqer::value_error);
}

TEST_CASE("bad vocabularies: a typed error naming the file and the problem") {
  const auto msg_parse = [](vocab_spec s) {
    return error_of<lqer::parse_error>([&] { (void)tokenizer::from_spec(std::move(s), "bad.gguf"); });
  };
  CHECK(msg_parse(tiny({"ab"}, {"a q"})).find("bad.gguf") == 0);
  CHECK(msg_parse(tiny({"ab"}, {"a zz"})).find("merges[0] 'a zz' names 'zz', which is not a token") !=
        std::string::npos);
  CHECK(msg_parse(tiny({}, {"a b"})).find("makes 'ab', which is not a token") != std::string::npos);
  CHECK(msg_parse(tiny({"ab"}, {"ab"})).find("not two tokens") != std::string::npos);
  {
    auto s = tiny({}, {});
    s.bos_id = 300;
    CHECK(msg_parse(s).find("bos_token_id = 300") != std::string::npos);
  }
  {
    auto s = tiny({}, {});
    s.types.assign(3, token_type::normal);
    CHECK(msg_parse(s).find("token_type has 3 entries for 256 tokens") != std::string::npos);
  }
  {
    auto s = tiny({}, {});
    s.pre = "llama3";
    CHECK(error_of<lqer::unsupported_error>([&] { (void)tokenizer::from_spec(s, "bad.gguf"); }).find("'llama3'") !=
          std::string::npos);
    s.pre = "smollm";
    s.model = "llama";
    CHECK(error_of<lqer::unsupported_error>([&] { (void)tokenizer::from_spec(s, "bad.gguf"); }).find("'llama'") !=
          std::string::npos);
  }
}

TEST_CASE("from_gguf: a file without tokenizer keys, or with broken ones, is a typed error naming the file") {
  gguf_image none;
  none.string("general.architecture", "llama");
  CHECK(error_of<lqer::value_error>([&] { (void)tokenizer::from_gguf(none.open("none.gguf")); }) ==
        "none.gguf: has no metadata key 'tokenizer.ggml.model'");

  const auto s = tiny({"ab"}, {"a b"});
  const auto build = [&](const std::vector<std::string>& merges, std::int32_t bad_type) {
    std::vector<std::int32_t> types(s.tokens.size(), 1);
    types[256] = 3;  // "ab" is a control token
    types[1] = bad_type;
    gguf_image g;
    g.string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", "smollm");
    g.strings("tokenizer.ggml.tokens", s.tokens).strings("tokenizer.ggml.merges", merges);
    g.i32s("tokenizer.ggml.token_type", types).u32("tokenizer.ggml.eos_token_id", 256);
    return g;
  };
  const auto good = tokenizer::from_gguf(build({"a b"}, 1).open("good.gguf"));
  CHECK(good.encode("ab") == ids{256});               // matched in the text as a control token
  CHECK(good.encode("ab", true, false) == ids{256});  // or made by the merge
  CHECK(good.eos() == 256);
  CHECK(good.bos() == -1);
  CHECK_FALSE(good.add_bos());
  CHECK(error_of<lqer::parse_error>([&] {
          (void)tokenizer::from_gguf(build({"a \xC4\xA0x"}, 1).open("m.gguf"));
        }).find("m.gguf: tokenizer.ggml.merges[0] 'a \xC4\xA0x' names '\xC4\xA0x', which is not a token") == 0);
  CHECK(error_of<lqer::parse_error>([&] { (void)tokenizer::from_gguf(build({"a b"}, 9).open("t.gguf")); }) ==
        "t.gguf: tokenizer.ggml.token_type[1] = 9 is not a token type (0…6)");

  gguf_image no_merges;
  no_merges.string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", "smollm");
  no_merges.strings("tokenizer.ggml.tokens", s.tokens);
  CHECK(error_of<lqer::value_error>([&] { (void)tokenizer::from_gguf(no_merges.open("nm.gguf")); }) ==
        "nm.gguf: has no metadata key 'tokenizer.ggml.merges'");
  gguf_image wrong_type;
  wrong_type.u32("tokenizer.ggml.model", 2);
  CHECK(error_of<lqer::value_error>([&] { (void)tokenizer::from_gguf(wrong_type.open("wt.gguf")); }).find("wt.gguf") ==
        0);
}

// ---------------------------------------------------------------------------
// With the model

TEST_CASE("SmolLM2 tokenizer metadata as the gguf package read it") {
  const tokenizer* t = model_tokenizer();
  if (t == nullptr) return;
  const auto m = fixture()["gguf"];
  CHECK(m["model"] == "gpt2");
  CHECK(t->pre_name() == m["pre"].get<std::string>());
  CHECK(t->rules() == llama::pre_rules::digits);
  CHECK(t->size() == m["tokens"].get<std::size_t>());
  CHECK(t->merge_count() == m["merges"].get<std::size_t>());
  CHECK(t->bos() == m["bos_token_id"].get<int>());
  CHECK(t->eos() == m["eos_token_id"].get<int>());
  CHECK(t->unk() == m["unknown_token_id"].get<int>());
  CHECK(t->pad() == m["padding_token_id"].get<int>());
  CHECK(t->add_bos() == m["add_bos_token"].get<bool>());
  CHECK(t->add_eos() == (m["add_eos_token"].is_null() ? false : m["add_eos_token"].get<bool>()));
  std::size_t control = 0;
  for (tokenizer::id i = 0; i < static_cast<tokenizer::id>(t->size()); ++i)
    control += t->type(i) == token_type::control;
  CHECK(control == m["control_tokens"].size());
  for (const auto& [id, text] : m["control_tokens"].items()) {
    CHECK(t->type(std::stoi(id)) == token_type::control);
    CHECK(t->token_text(std::stoi(id)) == text.get<std::string>());
  }
}

TEST_CASE("SmolLM2 tokenizer: ids identical to Hugging Face's on every fixture case, and decode(encode(s)) == s") {
  const tokenizer* t = model_tokenizer();
  if (t == nullptr) return;
  const auto cases = fixture()["cases"];
  REQUIRE(cases.size() >= 100);
  std::size_t same = 0, kjv = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    const bool valid = c.contains("text");
    const std::string text = valid ? c["text"].get<std::string>() : from_hex(c["text_hex"].get<std::string>());
    const ids want = c["ids"].get<ids>();
    const ids got = t->encode(text);
    CHECK_MESSAGE(got == want, name);
    same += got == want;
    kjv += name.rfind("kjv", 0) == 0;
    CHECK_MESSAGE((got.size() == t->encode(text, false).size() + 1) == c["bos"].get<bool>(), name);
    // Decoding gives the text back: for invalid UTF-8 the text as repaired (what
    // HF saw), less the bytes the vocabulary has no token for (dropped).
    std::string back;
    for (const char ch : valid ? text : llama::sanitize_utf8(text))
      if (t->byte_token(static_cast<std::uint8_t>(ch)) >= 0) back += ch;
    CHECK_MESSAGE(t->decode(got) == back, name);
    CHECK_MESSAGE((back == (valid ? text : llama::sanitize_utf8(text))) == c["decodes_to_text"].get<bool>(), name);
    if (c.contains("ids_split_special"))
      CHECK_MESSAGE(t->encode(text, true, false) == c["ids_split_special"].get<ids>(), name);
  }
  CHECK(kjv >= 50);
  MESSAGE(same << " of " << cases.size() << " fixture cases identical (" << kjv << " KJV)");
}

TEST_CASE("SmolLM2 tokenizer: 100 KB of text and back") {
  // A long input (many distinct pieces for encode's piece cache), round trip
  // exact. Its speed is a benchmark's business, not a test's.
  const tokenizer* t = model_tokenizer();
  if (t == nullptr) return;
  const nlohmann::json f = fixture();
  std::string text;
  for (const auto& c : f["cases"])
    if (c.contains("text") && c["decodes_to_text"].get<bool>()) text += c["text"].get<std::string>() + "\n";
  const std::string base = text;
  // Repeat with a counter so that the words are not all cached after one round.
  for (int i = 0; text.size() < 100'000; ++i) text += std::to_string(i) + " " + base;
  const ids got = t->encode(text);
  MESSAGE(text.size() << " bytes → " << got.size() << " tokens");
  CHECK(t->decode(got) == text);
}
