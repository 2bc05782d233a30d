// llama — the byte-level BPE tokenizer (see tokenizer.hpp for the rules followed).
#include "tokenizer.hpp"

#include <unicode/uchar.h>

#include <algorithm>
#include <limits>
#include <lqer/error.hpp>
#include <lqer/io/gguf.hpp>
#include <queue>
#include <utility>

namespace llama {

// ---------------------------------------------------------------------------
// UTF-8 and the GPT-2 byte alphabet

namespace {

constexpr char32_t kReplacement = 0xFFFD;

/// Decodes the code point at s[i]; `len` gets the bytes it took. An ill-formed
/// sequence gives U+FFFD and the length of its maximal subpart: the lead byte
/// and as many continuation bytes as could still begin a well-formed sequence
/// (Unicode §3.9 "U+FFFD substitution of maximal subparts"; the second byte's
/// range depends on the lead, which excludes overlongs, surrogates and > U+10FFFF).
char32_t decode_utf8(std::string_view s, std::size_t i, std::size_t& len) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  len = 1;
  if (b0 < 0x80) return b0;
  int more = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    more = 1, cp = b0 & 0x1Fu;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    more = 2, cp = b0 & 0x0Fu;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    more = 3, cp = b0 & 0x07u;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return kReplacement;  // 80–C1 (continuation or overlong lead), F5–FF
  }
  for (int k = 1; k <= more; ++k) {
    if (i + static_cast<std::size_t>(k) >= s.size()) return kReplacement;  // truncated: len bytes so far
    const unsigned char b = byte(i + static_cast<std::size_t>(k));
    const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return kReplacement;
    cp = (cp << 6) | (b & 0x3Fu);
    len = static_cast<std::size_t>(k) + 1;
  }
  return cp;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// GPT-2's bytes_to_unicode: the 188 bytes that are printable in Latin-1
// ('!'…'~', '¡'…'¬', '®'…'ÿ') stand for themselves; the other 68 (controls,
// space, DEL, the C1 block, NBSP, soft hyphen) take U+0100, U+0101, … in byte
// order, so that every byte is one visible, non-space character (space → 'Ġ').
struct byte_alphabet {
  std::array<char32_t, 256> to_unicode{};
  std::array<std::int16_t, 324> to_byte{};  // code point → byte, −1 if none (max code point 0x143)
  byte_alphabet() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_unicode[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_unicode[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
    }
  }
};
const byte_alphabet& alphabet() {
  static const byte_alphabet a;
  return a;
}

// ---------------------------------------------------------------------------
// Pre-tokenizer

enum class cat : std::uint8_t { letter, number, space, other };

/// \p{L}, \p{N}, \s (White_Space) or none of them. ASCII from a table, the rest from ICU.
cat category(char32_t c) noexcept {
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return cat::letter;
    if (c >= '0' && c <= '9') return cat::number;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return cat::space;
    return cat::other;
  }
  const auto uc = static_cast<UChar32>(c);
  const std::uint32_t mask = U_MASK(u_charType(uc));
  if ((mask & U_GC_L_MASK) != 0) return cat::letter;
  if ((mask & U_GC_N_MASK) != 0) return cat::number;
  if (u_isUWhiteSpace(uc)) return cat::space;
  return cat::other;
}

/// The code points of valid UTF-8 `s` with their categories and byte offsets
/// (offset[n] = s.size()).
struct code_points {
  std::vector<char32_t> cp;
  std::vector<cat> c;
  std::vector<std::uint32_t> offset;
  explicit code_points(std::string_view s) {
    cp.reserve(s.size());
    c.reserve(s.size());
    offset.reserve(s.size() + 1);
    for (std::size_t i = 0; i < s.size();) {
      std::size_t len = 0;
      const char32_t x = decode_utf8(s, i, len);
      cp.push_back(x);
      c.push_back(category(x));
      offset.push_back(static_cast<std::uint32_t>(i));
      i += len;
    }
    offset.push_back(static_cast<std::uint32_t>(s.size()));
  }
};

/// The end of GPT-2's regex match at code point i of the piece [i, e) — its
/// alternatives in order, the first that matches wins:
///   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
/// The last is HF's; llama.cpp's regex lacks it but keeps the unmatched gap as
/// a piece, and a gap is always exactly what \s+ would match here (one white
/// space before a non-space that no other alternative took), so both agree.
std::size_t gpt2_match(const code_points& t, std::size_t i, std::size_t e) {
  const auto& cp = t.cp;
  const auto& c = t.c;
  if (cp[i] == U'\'' && i + 1 < e) {
    const char32_t a = cp[i + 1];
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < e) {
      const char32_t b = cp[i + 2];
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return i + 3;
    }
  }
  // " ?X+" for X = letter, number, other: an optional ' ' (U+0020 only), then a run.
  const std::size_t k = cp[i] == U' ' ? i + 1 : i;
  if (k < e && c[k] != cat::space) {
    const cat x = c[k];
    std::size_t j = k + 1;
    while (j < e && c[j] == x) ++j;
    return j;
  }
  // A ' ' not followed by a letter, number or other is white space like the rest.
  std::size_t r = i;
  while (r < e && c[r] == cat::space) ++r;
  // \s+(?!\S): the whole run at the end of the piece, else the run minus its
  // last character (backtracking off the one before the non-space), if that
  // leaves any; then \s+.
  if (r == e || r - i >= 2) return r == e ? r : r - 1;
  return r;
}

/// Calls emit(begin, end) (code point indices) for every piece of [0, n) under `rules`.
template <class F>
void split_pieces(const code_points& t, pre_rules rules, F&& emit) {
  const std::size_t n = t.cp.size();
  const auto gpt2 = [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e;) {
      const std::size_t j = gpt2_match(t, i, e);
      emit(i, j);
      i = j;
    }
  };
  if (rules == pre_rules::gpt2) {
    gpt2(0, n);
    return;
  }
  // \p{N} isolated: each number on its own, the runs between them as pieces.
  std::size_t b = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (t.c[i] != cat::number) continue;
    if (b < i) gpt2(b, i);
    emit(i, i + 1);
    b = i + 1;
  }
  if (b < n) gpt2(b, n);
}

}  // namespace

char32_t byte_to_unicode(std::uint8_t b) noexcept { return alphabet().to_unicode[b]; }

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 0;
    const char32_t c = decode_utf8(s, i, len);
    if (c == kReplacement)
      out += "\xEF\xBF\xBD";  // also for a well-formed U+FFFD: the same bytes
    else
      out.append(s.substr(i, len));
    i += len;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Construction

namespace {

struct pre_entry {
  const char* name;
  pre_rules rules;
};
// The names llama.cpp's llama-vocab.cpp maps to these two regex sets.
constexpr pre_entry kPreNames[] = {
    {"smollm", pre_rules::digits},    {"starcoder", pre_rules::digits}, {"refact", pre_rules::digits},
    {"command-r", pre_rules::digits}, {"codeshell", pre_rules::digits}, {"exaone", pre_rules::digits},
    {"gpt-2", pre_rules::gpt2},       {"mpt", pre_rules::gpt2},         {"olmo", pre_rules::gpt2},
    {"jais", pre_rules::gpt2},
};

}  // namespace

tokenizer tokenizer::from_gguf(const lqer::io::gguf_file& file) { return from_spec(read_vocab_spec(file), file.name()); }

vocab_spec read_vocab_spec(const lqer::io::gguf_file& file) {
  const auto& md = file.metadata();
  vocab_spec spec;
  // at() and get() throw value_error "<file>: has no metadata key '…'" or a type mismatch naming the key.
  spec.model = md.get<std::string>("tokenizer.ggml.model");
  spec.pre = md.get<std::string>("tokenizer.ggml.pre");
  const auto tokens = md.at("tokenizer.ggml.tokens").strings();
  spec.tokens.assign(tokens.begin(), tokens.end());
  if (const auto* types = md.find("tokenizer.ggml.token_type")) {
    const auto raw = types->as_vector<std::int32_t>();
    spec.types.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] < 0 || raw[i] > static_cast<std::int32_t>(token_type::byte))
        throw lqer::parse_error(file.name() + ": tokenizer.ggml.token_type[" + std::to_string(i) +
                                "] = " + std::to_string(raw[i]) + " is not a token type (0…6)");
      spec.types.push_back(static_cast<token_type>(raw[i]));
    }
  }
  if (spec.model == "gpt2") {
    const auto merges = md.at("tokenizer.ggml.merges").strings();
    spec.merges.assign(merges.begin(), merges.end());
  }
  const auto id_of = [&](const char* key) -> std::int32_t {
    const auto v = md.get_or<std::int64_t>(key, -1);
    if (v < -1 || v > std::numeric_limits<std::int32_t>::max())
      throw lqer::parse_error(file.name() + ": " + key + " = " + std::to_string(v) + " is not a token id");
    return static_cast<std::int32_t>(v);
  };
  spec.bos_id = id_of("tokenizer.ggml.bos_token_id");
  spec.eos_id = id_of("tokenizer.ggml.eos_token_id");
  spec.unk_id = id_of("tokenizer.ggml.unknown_token_id");
  spec.pad_id = id_of("tokenizer.ggml.padding_token_id");
  // Absent flags: false, as HF's GPT2Tokenizer (transformers reads only what the file sets).
  spec.add_bos = md.get_or<bool>("tokenizer.ggml.add_bos_token", false);
  spec.add_eos = md.get_or<bool>("tokenizer.ggml.add_eos_token", false);
  return spec;
}

tokenizer tokenizer::from_spec(vocab_spec spec, std::string name) {
  tokenizer t;
  t.name_ = std::move(name);
  const std::string& where = t.name_;
  if (spec.model != "gpt2")
    throw lqer::unsupported_error(where + ": tokenizer.ggml.model is '" + spec.model +
                                  "'; this tokenizer reads byte-level BPE ('gpt2') only");
  const auto it =
      std::find_if(std::begin(kPreNames), std::end(kPreNames), [&](const pre_entry& p) { return spec.pre == p.name; });
  if (it == std::end(kPreNames)) {
    std::string known;
    for (const auto& p : kPreNames) known += std::string(known.empty() ? "" : ", ") + p.name;
    throw lqer::unsupported_error(where + ": tokenizer.ggml.pre '" + spec.pre +
                                  "' names split rules this tokenizer does not have (it knows " + known + ")");
  }
  t.pre_name_ = spec.pre;
  t.rules_ = it->rules;

  const std::size_t n = spec.tokens.size();
  if (n == 0) throw lqer::parse_error(where + ": tokenizer.ggml.tokens is empty");
  if (n > static_cast<std::size_t>(std::numeric_limits<id>::max()))
    throw lqer::parse_error(where + ": " + std::to_string(n) + " tokens is more than 32-bit ids can number");
  if (spec.types.empty()) spec.types.assign(n, token_type::normal);
  if (spec.types.size() != n)
    throw lqer::parse_error(where + ": tokenizer.ggml.token_type has " + std::to_string(spec.types.size()) +
                            " entries for " + std::to_string(n) + " tokens");
  const auto check_id = [&](std::int32_t v, const char* what) {
    if (v < -1 || v >= static_cast<std::int32_t>(n))
      throw lqer::parse_error(where + ": tokenizer.ggml." + what + " = " + std::to_string(v) +
                              " is not a token id (there are " + std::to_string(n) + " tokens)");
    return v;
  };
  t.bos_ = check_id(spec.bos_id, "bos_token_id");
  t.eos_ = check_id(spec.eos_id, "eos_token_id");
  t.unk_ = check_id(spec.unk_id, "unknown_token_id");
  t.pad_ = check_id(spec.pad_id, "padding_token_id");
  if (spec.add_bos && t.bos_ < 0)
    throw lqer::parse_error(where + ": add_bos_token is set but there is no bos_token_id");
  if (spec.add_eos && t.eos_ < 0)
    throw lqer::parse_error(where + ": add_eos_token is set but there is no eos_token_id");
  t.add_bos_ = spec.add_bos;
  t.add_eos_ = spec.add_eos;

  t.tokens_ = std::move(spec.tokens);
  t.types_ = std::move(spec.types);
  // A text listed twice keeps its last id (HF's vocabulary dict and llama.cpp's
  // token_to_id both overwrite).
  t.by_text_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) t.by_text_[t.tokens_[i]] = static_cast<id>(i);

  // Each byte's one-character token, which BPE starts from; −1 where the
  // vocabulary has none (see bpe()).
  const auto& abc = alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, abc.to_unicode[static_cast<std::size_t>(b)]);
    t.byte_token_[static_cast<std::size_t>(b)] = t.find(s);
  }

  // Merges: "left right" (tokens of the byte alphabet hold no U+0020), rank = index.
  // A pair listed twice keeps its first (best) rank, as llama.cpp's bpe_ranks.
  t.merges_.reserve(spec.merges.size());
  for (std::size_t r = 0; r < spec.merges.size(); ++r) {
    const std::string& m = spec.merges[r];
    const auto bad = [&](const std::string& why) {
      return lqer::parse_error(where + ": tokenizer.ggml.merges[" + std::to_string(r) + "] '" + m + "' " + why);
    };
    const std::size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
      throw bad("is not two tokens separated by one space");
    const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
    const id a = t.find(left), b = t.find(right), ab = t.find(left + right);
    if (a < 0) throw bad("names '" + left + "', which is not a token");
    if (b < 0) throw bad("names '" + right + "', which is not a token");
    if (ab < 0) throw bad("makes '" + left + right + "', which is not a token");
    if (r > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) throw bad("has a rank beyond 2^31");
    t.merges_.emplace(pair_key(a, b), merge{static_cast<std::int32_t>(r), ab});
  }

  // Special tokens matched in the text: control and user-defined, longest first.
  for (std::size_t i = 0; i < n; ++i) {
    const token_type ty = t.types_[i];
    if ((ty == token_type::control || ty == token_type::user_defined) && !t.tokens_[i].empty()) {
      t.specials_.push_back(static_cast<id>(i));
      t.special_first_[static_cast<unsigned char>(t.tokens_[i][0])] = true;
    }
  }
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [&](id a, id b) { return t.tokens_[a].size() > t.tokens_[b].size(); });
  return t;
}

// ---------------------------------------------------------------------------
// Encoding

void tokenizer::bpe(std::string_view piece, std::vector<id>& out) const {
  // One symbol per byte, a doubly linked list over them; a min-heap of candidate
  // merges by (rank, left position). An entry is stale when either side has
  // changed since it was pushed; it is then skipped. Each step thus merges the
  // best-ranked pair present, the leftmost one on a tie — HF's BPE::merge_word
  // and llama.cpp's llm_tokenizer_bpe_session, in O(n log n).
  struct symbol {
    id tok;
    std::int32_t prev, next;  // −1: none
  };
  struct candidate {
    std::int32_t rank, left, right;
    id left_tok, right_tok;
    bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  //
  // A byte the vocabulary has no token for is left out before merging, so its
  // neighbours become adjacent: HF's BPE with no unknown token and no byte
  // fallback (SmolLM2's vocabulary lacks 21 bytes: 04 06 13 14 16 1D C0 C1 F1
  // F2 F5–FF). llama.cpp drops such a byte too, but only after merging.
  std::vector<symbol> sym;
  sym.reserve(piece.size());
  for (const char ch : piece) {
    const id tok = byte_token_[static_cast<unsigned char>(ch)];
    if (tok >= 0) sym.push_back({tok, static_cast<std::int32_t>(sym.size()) - 1, -1});
  }
  const auto n = static_cast<std::int32_t>(sym.size());
  for (std::int32_t i = 0; i + 1 < n; ++i) sym[static_cast<std::size_t>(i)].next = i + 1;
  std::priority_queue<candidate, std::vector<candidate>, std::greater<>> heap;
  const auto consider = [&](std::int32_t l, std::int32_t r) {
    if (l < 0 || r < 0) return;
    const id a = sym[static_cast<std::size_t>(l)].tok, b = sym[static_cast<std::size_t>(r)].tok;
    const auto m = merges_.find(pair_key(a, b));
    if (m != merges_.end()) heap.push({m->second.rank, l, r, a, b});
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
  while (!heap.empty()) {
    const candidate c = heap.top();
    heap.pop();
    symbol& l = sym[static_cast<std::size_t>(c.left)];
    symbol& r = sym[static_cast<std::size_t>(c.right)];
    if (l.tok != c.left_tok || r.tok != c.right_tok || l.next != c.right) continue;  // stale
    l.tok = merges_.find(pair_key(c.left_tok, c.right_tok))->second.result;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = c.left;
    r.tok = -1;  // dead: no entry can match it again
    r.next = r.prev = -1;
    consider(l.prev, c.left);
    consider(c.left, l.next);
  }
  for (std::int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[static_cast<std::size_t>(i)].next)
    out.push_back(sym[static_cast<std::size_t>(i)].tok);
}

void tokenizer::encode_plain(std::string_view utf8, std::vector<id>& out,
                             std::unordered_map<std::string, std::vector<id>>& cache) const {
  const code_points t(utf8);
  split_pieces(t, rules_, [&](std::size_t b, std::size_t e) {
    const std::string_view piece = utf8.substr(t.offset[b], t.offset[e] - t.offset[b]);
    auto [it, inserted] = cache.try_emplace(std::string(piece));
    if (inserted) bpe(piece, it->second);
    out.insert(out.end(), it->second.begin(), it->second.end());
  });
}

std::vector<tokenizer::id> tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const std::string s = sanitize_utf8(text);
  std::vector<id> out;
  out.reserve(s.size() / 3 + 2);
  if (add_special && add_bos_) out.push_back(bos_);
  std::unordered_map<std::string, std::vector<id>> cache;  // per call: no locking, and bounded by the text
  std::size_t plain = 0;                                   // start of the text not yet tokenized
  if (parse_special && !specials_.empty()) {
    for (std::size_t i = 0; i < s.size();) {
      id hit = -1;
      if (special_first_[static_cast<unsigned char>(s[i])]) {
        for (const id sp : specials_) {  // longest first: the first hit at i is the longest
          const std::string& tx = tokens_[static_cast<std::size_t>(sp)];
          if (s.compare(i, tx.size(), tx) == 0) {
            hit = sp;
            break;
          }
        }
      }
      if (hit < 0) {
        ++i;
        continue;
      }
      if (plain < i) encode_plain(std::string_view(s).substr(plain, i - plain), out, cache);
      out.push_back(hit);
      i += tokens_[static_cast<std::size_t>(hit)].size();
      plain = i;
    }
  }
  if (plain < s.size()) encode_plain(std::string_view(s).substr(plain), out, cache);
  if (add_special && add_eos_) out.push_back(eos_);
  return out;
}

std::vector<std::string> tokenizer::pre_tokenize(std::string_view text) const {
  const std::string s = sanitize_utf8(text);
  const code_points t(s);
  std::vector<std::string> pieces;
  split_pieces(t, rules_, [&](std::size_t b, std::size_t e) {
    pieces.emplace_back(s.substr(t.offset[b], t.offset[e] - t.offset[b]));
  });
  return pieces;
}

// ---------------------------------------------------------------------------
// Decoding and lookups

std::string tokenizer::token_bytes(id token) const {
  const std::string& text = token_text(token);
  const token_type ty = types_[static_cast<std::size_t>(token)];
  if (ty == token_type::control || ty == token_type::user_defined) return text;
  // Every character back through the byte table; one outside it (a token not
  // in the byte alphabet) stands for its own UTF-8 bytes, as HF's ByteLevel decoder.
  const auto& abc = alphabet();
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 0;
    const char32_t c = decode_utf8(text, i, len);
    if (c < abc.to_byte.size() && abc.to_byte[c] >= 0)
      out += static_cast<char>(abc.to_byte[c]);
    else
      out.append(text, i, len);
    i += len;
  }
  return out;
}

std::string tokenizer::decode(std::span<const id> ids) const {
  std::string out;
  for (const id t : ids) out += token_bytes(t);
  return out;
}

const std::string& tokenizer::token_text(id token) const {
  if (token < 0 || static_cast<std::size_t>(token) >= tokens_.size())
    throw lqer::value_error(name_ + ": token id " + std::to_string(token) + " is out of range (there are " +
                            std::to_string(tokens_.size()) + " tokens)");
  return tokens_[static_cast<std::size_t>(token)];
}

token_type tokenizer::type(id token) const {
  (void)token_text(token);  // range check
  return types_[static_cast<std::size_t>(token)];
}

tokenizer::id tokenizer::find(std::string_view text) const {
  const auto it = by_text_.find(std::string(text));
  return it == by_text_.end() ? -1 : it->second;
}

}  // namespace llama
